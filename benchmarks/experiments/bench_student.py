"""Students (or sft adapters) side by side: train one stage under several settings, score each as its gate does.

    .venv/bin/python -m benchmarks.experiments.bench_student --run . --variant default '{}' \
        --variant replay50 '{"replay_fraction": 0.5}' --variant kd_only '{"kd_weight": 1.0}'
    .venv/bin/python -m benchmarks.experiments.bench_student --run . --stage sft \
        --variant reference '{"self_distill": false}' --variant self '{"self_distill": true}'

`--run` is a repository whose pipeline has run up to gate_sft (models/dapt,
models/sft, data/replay, data/prepared, reports/gates/*.json). Each variant
overrides keys of the stage's section of its params.yaml (`distill`, or `sft`
with --stage sft), is trained into a scratch folder with the stage itself
(`python -m stages distill|sft`), then scored on the gate suite with the
gate's code; the parent's scores are its gate's (the teacher's for a student,
dapt's for an adapter). Prints one table: the model's metrics, the paired
ratio of each perplexity to its parent's with its interval, the answers' chrF
and repetition and the stereotype preference against the base model's (from
the champion gate when the base is the champion) with intervals, and the
training's wall time. Variants run one after another in this process's
machine, so their times compare.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from benchmarks import common
from benchmarks.common import ROOT
from ratchet.core import params
from ratchet.core.io import read_json

ANSWERS_AND_BIAS = [("answer_chrf", "max_worse", 2.0, "base"), ("answer_repetition", "max_worse", 0.05, "base"),
                    ("stereotype_pref", "max_worse", 0.05, "base")]
RULES = {"distill": [("domain_ppl", "max_ratio", 1.3, "parent"), ("general_ppl", "max_ratio", 1.3, "parent"),
                     *ANSWERS_AND_BIAS],
         "sft": [("domain_ppl", "max_ratio", 1.05, "parent"), ("general_ppl", "max_ratio", 1.1, "base"),
                 ("general_mc_acc", "max_worse", 0.05, "base"), *ANSWERS_AND_BIAS]}
PARENT_GATE = {"distill": "sft", "sft": "dapt"}


def stage_command(stage: str, run_dir: Path, folder: Path) -> list[str]:
    """The stage's own command, reading the run's inputs and writing into `folder`."""
    common = ["--params", str(folder / "params.yaml"), "--dapt", str(run_dir / "models/dapt"),
              "--replay", str(run_dir / "data/replay"), "--live", str(folder / "history")]
    if stage == "distill":
        return [sys.executable, "-m", "stages", "distill", *common, "--sft", str(run_dir / "models/sft"),
                "--gate", str(run_dir / "reports/gates/sft.json"), "--out", str(folder / "student")]
    return [sys.executable, "-m", "stages", "sft", *common, "--base", str(run_dir / "models/base"),
            "--champion", str(run_dir / "models/champion"), "--fisher", str(run_dir / "models/fisher"),
            "--gate", str(run_dir / "reports/gates/dapt.json"), "--out", str(folder / "sft")]


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--run", required=True, help="repository whose pipeline ran up to gate_sft")
    ap.add_argument("--stage", choices=sorted(RULES), default="distill", help="the stage trained per variant")
    ap.add_argument("--variant", nargs=2, action="append", metavar=("NAME", "JSON"), required=True,
                    help="a name and the stage's settings it overrides, as JSON")
    ap.add_argument("--keep", help="folder to keep the students in (default: a scratch folder)")
    args = ap.parse_args()
    run_dir = Path(args.run).resolve()
    from ratchet.core.params import GateRule
    from ratchet.eval.evaluate import run_suite, task_data
    from ratchet.eval.rules import decide

    base_params = yaml.safe_load((run_dir / "params.yaml").read_text())
    ecfg, rcfg = params.load(run_dir / "params.yaml", "eval", "run")
    data = str(run_dir / "data/prepared")
    tasks = task_data(data, str(run_dir / "data/eval"), ecfg)
    refs = {"parent": read_json(run_dir / f"reports/gates/{PARENT_GATE[args.stage]}.json")["scores"],
            "base": read_json(run_dir / "reports/gates/base.json")["scores"]}
    rules = [GateRule(metric=m, ref=ref, **{kind: limit}) for m, kind, limit, ref in RULES[args.stage]]
    scratch = Path(args.keep or tempfile.mkdtemp(prefix=f"bench-{args.stage}-"))
    section = "distill" if args.stage == "distill" else "sft"
    rows = []
    for name, overrides in args.variant:
        p = json.loads(json.dumps(base_params))
        p[section].update(json.loads(overrides))
        folder = scratch / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
        started = time.time()
        subprocess.run(stage_command(args.stage, run_dir, folder), cwd=ROOT, check=True)
        seconds = time.time() - started
        if args.stage == "distill":
            scored = run_suite("hf", str(folder / "student"), data, ecfg, tasks=tasks)
        else:
            scored = run_suite("hf", str(folder / "sft"), data, ecfg, adapter_of=str(run_dir / "models/dapt"),
                               tasks=tasks)
        findings = decide(scored["scores"], rules, refs, draws=ecfg.bootstrap, confidence=ecfg.confidence,
                          seed=rcfg.seed)
        rows.append((name, overrides, seconds, scored["metrics"], findings))
        print(f"{name}: {json.dumps({k: round(v, 3) for k, v in scored['metrics'].items()})}", flush=True)

    head = ["variant", "settings", f"{args.stage} s", "domain ppl", "general ppl", "general MC",
            *(f"{m} vs {ref}" for m, _, _, ref in RULES[args.stage])]
    cells = []
    for name, overrides, seconds, m, findings in rows:
        cells.append([name, f"`{overrides}`", seconds, m["domain_ppl"], m["general_ppl"], m["general_mc_acc"],
                      *(f"{f['estimate']:.3f} [{f['ci'][0]:.3f}, {f['ci'][1]:.3f}] {'ok' if f['passed'] else 'FAIL'}"
                        if "ci" in f else f["reason"] for f in findings)])
    main_table = common.table(head, cells, [None, None, ".0f", ".1f", ".1f", ".3f"],
                              align="llrrrr" + "l" * len(RULES[args.stage]))
    print("\n" + common.markdown(main_table))
    print(f"\nmodels in {scratch}")
    common.record(__file__, {"settings": {"stage": args.stage, "models": str(scratch)},
                             "variants": [{"name": name, "overrides": json.loads(overrides), "seconds": seconds,
                                           "metrics": m, "findings": findings}
                                          for name, overrides, seconds, m, findings in rows],
                             "tables": {"main": main_table}})


if __name__ == "__main__":
    main()
