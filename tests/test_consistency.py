"""dvc.yaml, params.yaml, the configs and the stage modules agree with each other."""
import importlib
import re
import shlex

import yaml

from stages.common import params

from .conftest import ROOT

DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
INPUT_FLAGS = {"--base", "--champion", "--data", "--data-gate", "--gate", "--dapt", "--sft", "--fisher",
               "--student", "--path", "--adapter-of", "--seed", "--drops", "--ref", "--verdicts", "--models",
               "--quantize", "--sources", "--pii"}
OUTPUT_FLAGS = {"--out", "--history", "--verdict", "--metrics", "--report", "--markdown", "--pii-report",
                "--datasheets"}
NOT_DVC = {"--audit-log"}
NOT_PATHS = {"--model"}  # the append-only audit trail lives outside the DAG, like the champion


def _paths(entries):
    out = set()
    for e in entries or []:
        out |= set(e) if isinstance(e, dict) else {e}
    return out


def _cmd_args(cmd):
    """{flag: [values]} of a stage command."""
    tokens, args, flag = shlex.split(cmd), {}, None
    for t in tokens[3:]:
        if t.startswith("--"):
            flag = t
            args.setdefault(flag, [])
        elif flag:
            args[flag].append(t.split("=", 1)[-1])
    return tokens[2], args


def test_every_stage_module_exists_and_its_paths_are_declared():
    for name, stage in DVC.items():
        module, args = _cmd_args(stage["cmd"])
        mod = importlib.import_module(module)
        assert callable(mod.main), f"{module} has no main()"
        assert (ROOT / module.replace(".", "/")).with_suffix(".py").as_posix() in {
            (ROOT / d).as_posix() for d in stage["deps"]}, f"{name}: its own module is not a dep"
        deps, outs = set(stage["deps"]), _paths(stage.get("outs")) | _paths(stage.get("metrics")) | _paths(
            stage.get("plots"))
        for flag, values in args.items():
            assert flag in INPUT_FLAGS | OUTPUT_FLAGS | NOT_DVC | NOT_PATHS, f"{name}: flag {flag} is not classified"
            for v in values:
                if flag in INPUT_FLAGS:
                    assert v in deps, f"{name}: reads {v} ({flag}) but does not declare it in deps"
                elif flag in OUTPUT_FLAGS:
                    assert v in outs, f"{name}: writes {v} ({flag}) but does not declare it in outs"


def test_params_declared_in_dvc_yaml_exist_and_cover_what_each_stage_loads():
    loaded = re.compile(r'params\.load\(args\.params, ([^)]*)\)')
    for name, stage in DVC.items():
        declared = stage.get("params", [])
        for key in declared:
            node = PARAMS
            for part in key.split("."):
                assert part in node, f"{name}: params key {key} is not in params.yaml"
                node = node[part]
        module, _ = _cmd_args(stage["cmd"])
        source = (ROOT / module.replace(".", "/")).with_suffix(".py").read_text()
        sections = {s for m in loaded.finditer(source) for s in re.findall(r'"(\w+)"', m.group(1))}
        if name == "gate_champion":
            sections.discard("gates")  # the champion is only scored; no rule applies to it
        for section in sections:
            assert section in params.SECTIONS
            covered = section in declared or any(k.startswith(section + ".") for k in declared)
            assert covered, f"{name}: loads params section `{section}` that dvc.yaml does not declare"


def test_every_params_section_is_used_by_some_stage():
    used = {k.split(".")[0] for s in DVC.values() for k in s.get("params", [])}
    assert set(PARAMS) <= used
