"""Kill -9 on the real model: each stage killed at random moments and rerun, compared with an undisturbed run.

    .venv/bin/python -m benchmarks.experiments.bench_faults --run . --stage dapt quantize gate_dapt --kills 2 --seed 0

`--run` is a repository whose `dvc repro` has run (its outputs are overwritten).
For each stage: one undisturbed run of its dvc.yaml command (timed; its
outputs are the reference), then `--kills` times: start the command, SIGKILL
its process group at a moment drawn uniformly from 5-95% of the undisturbed
time, check that no output looks whole but is not, rerun to the end (a
training stage resumes from its last checkpoint), and compare the outputs with
the reference (model folders by content hash, reports without their clock
fields; tests/faults.py). Prints one row per kill and the audit log's check.
The same harness runs in tests/test_faults.py on the tiny model.
"""
from __future__ import annotations

import random
from pathlib import Path

from benchmarks import common
from tests import faults


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--run", required=True)
    ap.add_argument("--stage", nargs="+", default=["dapt", "quantize", "gate_dapt"])
    ap.add_argument("--kills", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    from ratchet.core import audit_log

    run_dir, rng = Path(args.run).resolve(), random.Random(args.seed)
    env = common.tool_env()
    kills = common.table(["stage", "undisturbed s", "killed at s", "half-written after the kill", "rerun s",
                          "start to finished s", "equal to undisturbed", "leftovers"], [],
                         [None, ".0f", ".0f", None, ".0f", ".0f", None, None], align="lrrlrrll")
    print(common.header(kills), flush=True)
    for stage in args.stage:
        cmd, outs = faults.stage_cmd(run_dir, stage), faults.stage_outs(run_dir, stage)
        seconds = faults.run(cmd, run_dir, env)
        reference = faults.outcome(outs)
        for _ in range(args.kills):
            at = faults.run_killed(cmd, run_dir, rng.uniform(0.05, 0.95) * seconds, env)
            half = faults.half_written(outs)
            rerun = faults.run(cmd, run_dir, env)
            same = faults.outcome(outs) == reference
            kills["rows"].append([stage, seconds, "ended first" if at is None else at, "; ".join(half) or "none",
                                  rerun, (at or 0) + rerun, "yes" if same else "NO",
                                  ", ".join(faults.leftovers(outs)) or "none"])
            print(common.row(kills, kills["rows"][-1]), flush=True)
    log = run_dir / "reports/audit/log.jsonl"
    problems = audit_log.verify(log)
    entries = len(audit_log.entries(log))
    print(f"\naudit log {log}: {entries} entries, {'; '.join(problems) or 'chain verifies'}")
    common.record(__file__, {"settings": {"stages": args.stage, "kills": args.kills, "seed": args.seed},
                             "audit_log": {"entries": entries, "problems": problems}, "tables": {"main": kills}})


if __name__ == "__main__":
    main()
