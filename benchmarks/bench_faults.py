"""Kill -9 on the real model: each stage killed at random moments and rerun, compared with an undisturbed run.

    python benchmarks/bench_faults.py --run . --stage dapt quantize gate_dapt --kills 2 --seed 0

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

import argparse
import os
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests import faults  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True)
    ap.add_argument("--stage", nargs="+", default=["dapt", "quantize", "gate_dapt"])
    ap.add_argument("--kills", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    from stages.core import audit_log

    run_dir, rng = Path(args.run).resolve(), random.Random(args.seed)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    print("| stage | undisturbed s | killed at s | half-written after the kill | rerun s | start to finished s | "
          "equal to undisturbed | leftovers |\n|---|---:|---:|---|---:|---:|---|---|", flush=True)
    for stage in args.stage:
        cmd, outs = faults.stage_cmd(run_dir, stage), faults.stage_outs(run_dir, stage)
        seconds = faults.run(cmd, run_dir, env)
        reference = faults.outcome(outs)
        for _ in range(args.kills):
            at = faults.run_killed(cmd, run_dir, rng.uniform(0.05, 0.95) * seconds, env)
            half = faults.half_written(outs)
            rerun = faults.run(cmd, run_dir, env)
            same = faults.outcome(outs) == reference
            print(f"| {stage} | {seconds:.0f} | {'ended first' if at is None else f'{at:.0f}'} | "
                  f"{'; '.join(half) or 'none'} | {rerun:.0f} | {(at or 0) + rerun:.0f} | {'yes' if same else 'NO'} | "
                  f"{', '.join(faults.leftovers(outs)) or 'none'} |", flush=True)
    log = run_dir / "reports/audit/log.jsonl"
    print(f"\naudit log {log}: {len(audit_log.entries(log))} entries, "
          f"{'; '.join(audit_log.verify(log)) or 'chain verifies'}")


if __name__ == "__main__":
    main()
