"""Re-gate a past candidate with today's rules: score it and its reference on the same held-out data, decide.

    .venv/bin/python -m tools.regate --candidate C/onnx --reference R/onnx --data D/data/prepared \
        [--model onnx --ref shipped]

For instance, a cycle of benchmarks/experiments/bench_cycles.py against the champion it replaced:
check out champion-3 and champion-2 of its scratch repo (`git checkout
champion-3 && dvc checkout models/champion.dvc prepare`, copy
models/champion/onnx, then the same for champion-2's models/champion.dvc) and
pass cycle 2's data/prepared. Prints both models' metrics (per source too)
and every finding of the rules of gates.<model> whose ref is <ref>.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ratchet.core import params, runtime

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--candidate", required=True)
    ap.add_argument("--reference", required=True)
    ap.add_argument("--data", required=True, help="the prepared data the cycle was gated on")
    ap.add_argument("--model", default="onnx", help="whose rules: gates.<model> of params.yaml")
    ap.add_argument("--ref", default="shipped", help="the rules' ref the reference stands for")
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    args = ap.parse_args()
    runtime.start()
    from ratchet.eval.evaluate import run_suite
    from ratchet.data.replay import sources_in_order
    from ratchet.eval.rules import decide, load_rules

    cfg, run = params.load(args.params, "eval", "run")
    scored = {}
    for name, path in (("reference", args.reference), ("candidate", args.candidate)):
        kind = "onnx" if (Path(path) / "model.onnx").is_file() else "hf"
        scored[name] = run_suite(kind, path, args.data, cfg, eval_sets=str(ROOT / "data/eval"))
        m = scored[name]
        print(f"{name:9}", "  ".join(f"{k} {v:.4g}" for k, v in m["metrics"].items()), " per source:",
              "  ".join(f"{k} {v:.4g}" for k, v in m["by_source"]["domain_ppl"].items()), flush=True)
    rules = [r for r in load_rules(args.params).rules(args.model) if r.ref == args.ref]
    for f in decide(scored["candidate"]["scores"], rules, {args.ref: scored["reference"]["scores"]},
                    draws=cfg.bootstrap, confidence=cfg.confidence, seed=run.seed,
                    newest=sources_in_order(Path(args.data))[-1]):
        est = f"{f['estimate']:.4g} [{f['ci'][0]:.4g}, {f['ci'][1]:.4g}]" if "ci" in f else "-"
        print(f"{f['outcome']:4} {f['rule']:55} {est}")


if __name__ == "__main__":
    main()
