"""dvc.yaml, params.yaml, the configs and the code agree with each other."""
from __future__ import annotations

import ast
import copy
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ratchet.core import params, pipeline

from .conftest import ROOT

STAGES = pipeline.stages(ROOT)
DVC = {name: stage.raw for name, stage in STAGES.items()}
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
INPUT_FLAGS = {"--base", "--champion", "--data", "--data-gate", "--gate", "--dapt", "--sft", "--fisher",
               "--student", "--replay", "--path", "--adapter-of", "--seed", "--drops", "--ref", "--verdicts", "--models",
               "--quantize", "--sources", "--pii", "--eval-sets", "--same-as", "--datasheets", "--governance",
               "--curves"}
OUTPUT_FLAGS = {"--out", "--verdict", "--metrics", "--report", "--markdown", "--pii-report", "--annex"}
LIVE_FLAGS = {"--live"}  # a DVCLive folder: its metrics.json and plots/metrics are declared one by one
NOT_DVC = {"--audit-log"}  # the append-only audit trail lives outside the DAG, like the champion
NOT_PATHS = {"--model"}
PACKAGES = ("ratchet", "stages")  # the library (and its commands), and the recipes dvc.yaml runs
WINGS = ("core", "data", "models", "eval", "reporting")  # the library, ground floor first
# The wings each wing may import besides itself: data and models stand side by side on core; eval (every part of
# a gate) reads both; reporting (every document a person reads) reads all of them.
MAY_IMPORT = {"core": set(), "data": {"core"}, "models": {"core"}, "eval": {"core", "data", "models"},
              "reporting": {"core", "data", "models", "eval"}}
# Non-code folders in the library a stage reads at run time; templates are found from the modules that name
# them (templates_rendered), so a wording change reruns only the stages that render it.
DATA_DEPS = {"gate": {"ratchet/eval/tasks"}}
TEMPLATES = "ratchet/reporting/templates"


# --------------------------------------------------------------------------- #
# The import graph
# --------------------------------------------------------------------------- #


def module_file(module: str) -> Path | None:
    path = ROOT / Path(*module.split("."))
    for f in (path.with_suffix(".py"), path / "__init__.py"):
        if f.is_file():
            return f
    return None


def direct_imports(module: str, path: Path | None = None) -> set[str]:
    """The ratchet.* and stages.* modules `module` imports (relative imports resolved, `from pkg import mod`
    counted as mod)."""
    path = path or module_file(module)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(parts + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] not in PACKAGES:
                continue
            out.add(target)
            out |= {f"{target}.{a.name}" for a in node.names if module_file(f"{target}.{a.name}")}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] in PACKAGES}
    return out


def code_closure(module: str) -> set[str]:
    """Repository paths of `module` and every module it imports, directly or not; empty __init__s left out."""
    seen, todo = set(), [module]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(direct_imports(m))
    files = {module_file(m) for m in seen}
    return {f.relative_to(ROOT).as_posix() for f in files if f.name != "__init__.py" or f.read_text().strip()}


def templates_rendered(files: set[str]) -> set[str]:
    """Repository paths of the templates the modules in `files` name (a string literal ending in .j2), and of the
    templates those import, include or extend."""
    todo = [n for f in files for n in re.findall(r"[\"'](\w[\w.-]*\.j2)[\"']", (ROOT / f).read_text())]
    found = set()
    while todo:
        name = todo.pop()
        if name not in found:
            found.add(name)
            todo += re.findall(r"{%-?\s*(?:import|include|extends|from)\s+[\"']([\w.-]+)[\"']",
                               (ROOT / TEMPLATES / name).read_text())
    return {f"{TEMPLATES}/{name}" for name in found}


def modules_under(folder: str) -> list[str]:
    return [".".join(p.relative_to(ROOT).with_suffix("").parts) for p in sorted((ROOT / folder).glob("*.py"))
            if p.name != "__init__.py"]


def shared_modules() -> list[str]:
    """The library: every module of every wing."""
    return [m for w in WINGS for m in modules_under(f"ratchet/{w}")]


def recipes() -> list[str]:
    return [m for m in modules_under("stages") if m != "stages.__main__"]


def commands() -> list[str]:
    return modules_under("ratchet/commands")


# --------------------------------------------------------------------------- #
# dvc.yaml
# --------------------------------------------------------------------------- #


def _paths(entries):
    out = set()
    for e in entries or []:
        out |= set(e) if isinstance(e, dict) else {e}
    return out


def _cmd_args(cmd):
    """(recipe module, {flag: [values]}) of a stage command, parsed by the pipeline's one wiring reader."""
    recipe, args = pipeline.parse_cmd(cmd)
    return f"stages.{recipe}", args


def test_every_stage_module_exists_and_its_paths_are_declared():
    for name, stage in DVC.items():
        module, args = _cmd_args(stage["cmd"])
        assert callable(importlib.import_module(module).main), f"{module} has no main()"
        deps, outs = set(stage["deps"]), _paths(stage.get("outs")) | _paths(stage.get("metrics")) | _paths(
            stage.get("plots"))
        for flag, values in args.items():
            assert flag in INPUT_FLAGS | OUTPUT_FLAGS | LIVE_FLAGS | NOT_DVC | NOT_PATHS, (
                f"{name}: flag {flag} is not classified")
            for v in values:
                v = v.split("=", 1)[-1]
                if flag in INPUT_FLAGS:  # the path itself, or a folder holding it (a champion's verdicts)
                    assert v in deps or any(v.startswith(f"{d}/") for d in deps), (
                        f"{name}: reads {v} ({flag}) but does not declare it in deps")
                elif flag in OUTPUT_FLAGS:
                    assert v in outs, f"{name}: writes {v} ({flag}) but does not declare it in outs"
                elif flag in LIVE_FLAGS:
                    assert f"{v}/metrics.json" in _paths(stage.get("metrics")) and f"{v}/plots/metrics" in _paths(
                        stage.get("plots")), f"{name}: writes the DVCLive folder {v} but does not declare its files"


def test_the_launcher_knows_every_stage_and_nothing_else():
    from stages.__main__ import STAGES

    assert set(STAGES) == {_cmd_args(s["cmd"])[0].split(".")[1] for s in DVC.values()}


def test_code_deps_are_exactly_the_modules_each_stage_imports():
    for name, stage in DVC.items():
        module, _ = _cmd_args(stage["cmd"])
        declared = {d for d in stage["deps"] if d.startswith(("stages/", "ratchet/"))}
        code = code_closure("stages.__main__") | code_closure(module)
        expected = code | templates_rendered(code) | DATA_DEPS.get(module.split(".")[-1], set())
        assert declared == expected, (f"{name}: dvc.yaml code deps differ from its imports; missing "
                                      f"{sorted(expected - declared)}, not imported {sorted(declared - expected)}")


def test_an_edit_reruns_only_the_stages_whose_code_it_touches():
    """The closures behind dvc.yaml: ingest and datasheet wording touch no model stage; the loop only training;
    the PII scanner the data gate and the model gates (which scan what models write for leaked canaries)."""
    users = {f: {n for n, s in DVC.items() if f in s["deps"]} for f in
             ("ratchet/data/ingest.py", "ratchet/reporting/datasheet.py", "ratchet/models/train.py",
              "ratchet/data/pii.py", "ratchet/eval/rules.py")}
    assert users["ratchet/data/ingest.py"] == set()
    assert users["ratchet/reporting/datasheet.py"] == {"datasheets"}
    assert users["ratchet/models/train.py"] == {"dapt", "sft", "distill"}
    assert users["ratchet/data/pii.py"] == {"prepare"} | {n for n in DVC if n.startswith("gate_")}
    assert users["ratchet/eval/rules.py"] == {n for n in DVC if n.startswith("gate_")}


def test_each_wing_imports_only_the_wings_below_it():
    for module in shared_modules():
        wing = module.split(".")[1]
        for m in direct_imports(module):
            parts = m.split(".")
            assert parts[0] == "ratchet" and len(parts) > 1 and parts[1] in WINGS, (
                f"{module} imports {m}: the library imports no recipe and no command")
            assert parts[1] == wing or parts[1] in MAY_IMPORT[wing], (
                f"{module} imports {m}: the {wing} wing may import only {sorted(MAY_IMPORT[wing]) or 'itself'}")


def test_nothing_imports_a_recipe_or_a_command():
    """Recipes and commands are leaves: the launcher and the `ratchet` parser load them by name (importlib), and
    nothing else (no sibling, no library module, no benchmark) imports one. Tests may run them."""
    leaves = set(recipes()) | set(commands())
    importers = shared_modules() + recipes() + commands() + ["stages.__main__", "ratchet.cli"]
    files = {m: module_file(m) for m in importers}
    files |= {".".join(p.relative_to(ROOT).with_suffix("").parts): p
              for folder in ("benchmarks", "tools") for p in sorted((ROOT / folder).rglob("*.py"))}
    for module, path in files.items():
        found = {m for m in direct_imports(module, path) if m in leaves or m in ("stages", "ratchet.commands")}
        assert not found, f"{path.relative_to(ROOT)} imports {sorted(found)}: move what it needs into the library"


def test_every_recipe_imports_the_library_only():
    for module in recipes():
        for m in direct_imports(module):
            assert m.split(".")[:2] in [["ratchet", w] for w in WINGS], f"{module} imports {m}"


def test_importing_any_module_sets_nothing_and_loads_no_hub_library():
    """The offline environment is set where a process starts (runtime.start), never as an import side effect."""
    modules = recipes() + commands() + shared_modules() + ["ratchet.cli"]
    code = (f"import os, sys\nbefore = dict(os.environ)\nfor m in {modules!r}:\n"
            "    __import__(m)\n"
            "assert dict(os.environ) == before, set(os.environ.items()) ^ set(before.items())\n"
            "heavy = {'transformers', 'huggingface_hub', 'datasets', 'great_expectations', 'lm_eval', "
            "'presidio_analyzer', 'tldextract'} & set(sys.modules)\n"
            "assert not heavy, heavy\n")
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith(("HF_", "TRANSFORMERS", "TQDM"))}
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_a_started_process_loads_transformers_models_without_scikit_learn_and_keeps_it_importable():
    """runtime.start tells transformers scikit-learn is absent (seconds of every model process, for a feature ratchet
    never uses); anything that imports scikit-learn itself still gets it."""
    code = ("import sys\nfrom ratchet.core import runtime\nruntime.start()\nruntime.start()\n"
            "from transformers import AutoModelForCausalLM, GenerationMixin\n"
            "from transformers.utils import is_sklearn_available\n"
            "assert 'sklearn' not in sys.modules and not is_sklearn_available(), 'transformers loaded scikit-learn'\n"
            "from sklearn.metrics import roc_curve\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


# --------------------------------------------------------------------------- #
# params.yaml
# --------------------------------------------------------------------------- #


def loaded_sections(module: str) -> set[str] | None:
    """Sections a module passes to params.load(...), from its syntax tree; None when it never calls it."""
    calls = [n for n in ast.walk(ast.parse(module_file(module).read_text()))
             if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "load"
             and isinstance(n.func.value, ast.Name) and n.func.value.id == "params"]
    if not calls:
        return None
    out = set()
    for call in calls:
        names = [a.value for a in call.args[1:] if isinstance(a, ast.Constant)]
        assert len(names) == len(call.args) - 1, f"{module}: params.load with non-literal sections"
        out |= set(names)
    return out


def test_params_declared_in_dvc_yaml_exist_and_cover_what_each_stage_loads():
    for name, stage in DVC.items():
        declared = stage.get("params", [])
        for key in declared:
            node = PARAMS
            for part in key.split("."):
                assert part in node, f"{name}: params key {key} is not in params.yaml"
                node = node[part]
        module, _ = _cmd_args(stage["cmd"])
        sections = loaded_sections(module)
        if declared:
            assert sections is not None, f"{name}: declares params {declared} but {module} never calls params.load"
        sections = sections or set()
        if name in ("gate_champion", "gate_shipped", "gate_base"):
            sections.discard("gates")  # the references are only scored; no rule applies to them
        for section in sections:
            assert section in params.SECTIONS, f"{module} loads unknown section {section}"
            covered = section in declared or any(k.startswith(section + ".") for k in declared)
            assert covered, f"{name}: loads params section `{section}` that dvc.yaml does not declare"


COMMAND_SECTIONS = {"promote"}  # read by `ratchet promote` and `ratchet update`, not a stage


def test_every_params_section_is_used_by_some_stage_or_command():
    used = {k.split(".")[0] for s in DVC.values() for k in s.get("params", [])}
    assert set(PARAMS) == used | set(COMMAND_SECTIONS) == set(params.SECTIONS)
    for section in COMMAND_SECTIONS:
        users = [p for p in (ROOT / "ratchet/commands").rglob("*.py") if f'"{section}")' in p.read_text()]
        assert users, f"no command loads params section {section}"


def test_params_yaml_is_the_one_home_of_every_knob():
    """Every field of every section is in params.yaml, and code holds no default that could disagree with it."""
    for section, cls in params.SECTIONS.items():
        for field, info in cls.model_fields.items():
            assert field in PARAMS[section], f"{section}.{field} is not in params.yaml"
            assert info.is_required(), f"{section}.{field} has a default in code; params.yaml is its only home"
    params.load_all(ROOT / "params.yaml")


def test_every_knob_in_params_yaml_has_a_comment():
    section = None
    for line in (ROOT / "params.yaml").read_text().splitlines():
        if re.match(r"^\w+:", line):
            section = line.split(":")[0]
        elif section != "gates" and re.match(r"^  \w+:", line):
            assert "#" in line, f"params.yaml {section}: `{line.strip()}` needs a short comment"


# --------------------------------------------------------------------------- #
# Gate references
# --------------------------------------------------------------------------- #


def gate_wiring_problems(dvc: dict, raw_params: dict) -> list[str]:
    """A rule whose `ref` the gate stage does not receive (as --ref NAME=FILE with FILE in deps) is a problem."""
    gates = params.build("gates", raw_params["gates"])
    problems = []
    for model in params.GatesConfig.models():
        stage = dvc.get(f"gate_{model}")
        if stage is None:
            problems.append(f"gates.{model} has rules but dvc.yaml has no gate_{model} stage")
            continue
        _, args = _cmd_args(stage["cmd"])
        refs = dict(v.split("=", 1) for v in args.get("--ref", []))
        for rule in gates.rules(model):
            if rule.ref is None:
                continue
            if rule.ref not in refs:
                problems.append(f"gates.{model}: ref {rule.ref} but gate_{model} has no --ref {rule.ref}=...")
            elif refs[rule.ref] not in stage["deps"] or refs[rule.ref] != f"reports/gates/{rule.ref}.json":
                problems.append(f"gate_{model}: --ref {rule.ref}={refs[rule.ref]} is not that gate's verdict in deps")
    return problems


def test_every_gate_rule_ref_is_wired_in_dvc_yaml():
    assert gate_wiring_problems(DVC, PARAMS) == []


def test_a_rule_pointed_at_an_unwired_reference_is_caught():
    repointed = copy.deepcopy(PARAMS)
    repointed["gates"]["onnx"][0]["ref"] = "champion"  # gate_onnx gets only the student's verdict
    assert any("gate_onnx has no --ref champion" in p for p in gate_wiring_problems(DVC, repointed))
    unwired = copy.deepcopy(DVC)
    unwired["gate_sft"]["deps"] = [d for d in unwired["gate_sft"]["deps"] if d != "reports/gates/dapt.json"]
    assert any("gate_sft" in p for p in gate_wiring_problems(unwired, PARAMS))


def test_the_gate_stage_refuses_an_unwired_reference_before_evaluating(tmp_path):
    from ratchet.eval import gate

    rules = [params.GateRule(metric="domain_ppl", max_ratio=1.0, ref="champion")]
    with pytest.raises(SystemExit, match="passes no --ref for it: add `--ref champion="):
        gate.reference_scores("onnx", rules, [])
    with pytest.raises(SystemExit, match="no such verdict"):
        gate.reference_scores("onnx", rules, [f"champion={tmp_path / 'missing.json'}"])


def anchors(markdown: str) -> set[str]:
    """The section anchors a Markdown file offers: as GitHub makes them from its headings, and <a id="..."> tags."""
    return {re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
            for line in markdown.splitlines() if line.startswith("#")} | set(re.findall(r'<a id="([^"]+)"', markdown))


def test_every_cited_benchmarks_section_exists():
    """Code, params and docs cite BENCHMARKS.md by section (BENCHMARKS.md#<name>): each name is a heading there."""
    offered = anchors((ROOT / "BENCHMARKS.md").read_text())
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    cited = {(f, m.group(1)) for f in files if f.endswith((".py", ".md", ".yaml", ".j2"))
             for m in re.finditer(r"BENCHMARKS\.md#([\w\-]+)", (ROOT / f).read_text(encoding="utf-8"))}
    assert cited and {c for c in cited if c[1] not in offered} == set()
    assert anchors('# Title\n## Int8 bias, per task (2 runs)\n<a id="pii"></a>') == {"title", "int8-bias-per-task-2-runs",
                                                                                  "pii"}
