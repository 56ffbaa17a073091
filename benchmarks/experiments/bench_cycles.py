"""Weekly cycles end to end: the seed champion, then three real drops through `ratchet update`, in a scratch clone.

    .venv/bin/python -m benchmarks.experiments.bench_cycles --work /tmp/cycles   # the real model: ~20 min a cycle
    .venv/bin/python -m benchmarks.experiments.bench_cycles --work /tmp/cycles-tiny --tiny   # the mechanics only

Clones the committed HEAD of this repository into <work>/repo (the drops never
touch this checkout), declares the drops of tools/make_drops.py in
data/sources.yaml, and then runs, one after another:

  cycle 0   dvc repro on the seed, then `ratchet promote` (the seed champion)
  cycle 1-3 `ratchet update --drop <drop> --week <week>` for numpy, pallets, stdlib

After each cycle it scores the champion's shipped int8 model with the gates'
lm-eval suite on each source's domain held-out text so far (backward transfer
shows as a rising perplexity on an earlier source) and on the general held-out
text, and prints one table: outcome and why, wall time, perplexities. The rows
also go to <work>/cycles.json; each cycle's full log to <work>/cycle-N.log.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import common
from ratchet.core import params, runtime
from ratchet.core.io import write_json
from tools import make_drops

PY = sys.executable


def sh(cmd: list[str], cwd: Path, log: Path) -> tuple[int, float, str]:
    """Run a command, appending its output to `log`; (exit code, seconds, output)."""
    started = time.time()
    r = subprocess.run(cmd, cwd=cwd, env=common.tool_env(), capture_output=True, text=True)
    with open(log, "a") as f:
        f.write(f"$ {' '.join(cmd)}\n{r.stdout}{r.stderr}\n[exit {r.returncode}]\n")
    return r.returncode, time.time() - started, r.stdout + r.stderr


def per_source(repo: Path) -> dict[str, float]:
    """The champion's shipped model: domain word perplexity per source's held-out text, and general."""
    from ratchet.eval.evaluate import run_suite

    shipped = repo / "models/champion/onnx"
    if not shipped.is_dir():
        return {}
    cfg = params.load(repo / "params.yaml", "eval")[0]
    scored = run_suite("onnx", str(shipped), str(repo / "data/prepared"), cfg)
    return {**scored["by_source"]["domain_ppl"], "general": scored["metrics"]["general_ppl"]}


def why(output: str) -> str:
    """The outcome line a scheduler's log shows, and the first reason under it."""
    lines = [l.strip() for l in output.splitlines()]
    head = next((l for l in lines if l.startswith(("PROMOTED", "REFUSED"))), None)
    if head is None:
        return next((l for l in reversed(lines) if l), "no output")
    reasons = [l for l in lines[lines.index(head) + 1:] if l.startswith("- ")]
    return head + (f" {reasons[0]}" if reasons else "")


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--work", required=True, help="scratch folder (replaced)")
    ap.add_argument("--tiny", action="store_true", help="the tiny test profile: checks the mechanics in minutes")
    ap.add_argument("--resume", action="store_true",
                    help="keep <work> and the rows of its cycles.json; run only the cycles it lacks")
    args = ap.parse_args()
    runtime.start()
    work = Path(args.work).resolve()
    repo, drops = work / "repo", work / "drops"
    rows = json.loads((work / "cycles.json").read_text()) if args.resume else []
    if not rows:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        make_drops.main(["--out", str(drops)])
        common.scratch_clone(repo, args.tiny)
        log = work / "cycle-0.log"
        rc, t_repro, out = sh([PY, "-m", "dvc", "repro"], repo, log)
        if rc == 0:
            rc, t_promote, out = sh([PY, "-m", "ratchet.cli", "promote"], repo, log)
            t_repro += t_promote
        rows.append({"cycle": 0, "drop": "seed", "week": None, "exit": rc, "outcome": why(out),
                     "wall_s": round(t_repro), "ppl": per_source(repo)})
        print(json.dumps(rows[-1]), flush=True)
        write_json(work / "cycles.json", rows)  # after every cycle: a long run's finished rows survive an interruption
    for n, (name, spec) in enumerate(make_drops.DROPS.items(), 1):
        if n < len(rows):
            continue
        log = work / f"cycle-{n}.log"
        rc, seconds, out = sh([PY, "-m", "ratchet.cli", "update", "--drop", str(drops / name), "--week", spec["week"]],
                              repo, log)
        rows.append({"cycle": n, "drop": name, "week": spec["week"], "exit": rc, "outcome": why(out),
                     "wall_s": round(seconds), "ppl": per_source(repo)})
        print(json.dumps(rows[-1]), flush=True)
        write_json(work / "cycles.json", rows)

    sources = {"seed": "seed", **{spec["week"]: name for name, spec in make_drops.DROPS.items()}}
    print(f"\n{'cycle':>5} {'drop':8} {'exit':>4} {'wall s':>7} " + " ".join(f"{s:>9}" for s in sources.values())
          + f" {'general':>9}  outcome")
    for r in rows:
        cells = " ".join(f"{r['ppl'][s]:9.1f}" if s in r["ppl"] else f"{'-':>9}" for s in sources)
        general = f"{r['ppl']['general']:9.1f}" if "general" in r["ppl"] else f"{'-':>9}"
        print(f"{r['cycle']:>5} {r['drop']:8} {r['exit']:>4} {r['wall_s']:>7} {cells} {general}  {r['outcome']}")
    if args.tiny:
        print("\ntiny test profile: random weights, the mechanics only; no number here is a real result")
    print("\nperplexities: word perplexity of the champion's shipped int8 model after the cycle, on each source's "
          "domain held-out text (seed and drops so far) and on the general held-out text")
    names = list(sources.values())
    table = common.table(["cycle", "drop", "exit", "wall s", *names, "general", "outcome"],
                         [[r["cycle"], r["drop"], r["exit"], r["wall_s"], *(r["ppl"].get(s) for s in sources),
                           r["ppl"].get("general"), r["outcome"]] for r in rows],
                         [None, None, None, None, *[".1f"] * len(names), ".1f", None],
                         align="rlrr" + "r" * len(names) + "rl")
    common.record(__file__, {"settings": {"tiny": args.tiny, "work": str(work)}, "cycles": rows,
                             "tables": {"main": table}})


if __name__ == "__main__":
    main()
