"""What one gate evaluation costs: each task of the suite on its own, and answers at two batch widths.

    python benchmarks/bench_gates.py --run . --model models/base --kind hf --answer-batch 16 32 --repeat 4

`--run` is a repository whose data stages have run (data/prepared, data/eval).
Prints, for the model given, the wall time of every task of the gate suite
scored alone (each includes loading the model, about 1.5 s for SmolLM2-135M)
and of the whole suite in one call; then the answers task alternately at each
`--answer-batch` width, `--repeat` times, with its chrF (bfloat16 results
depend slightly on the batch shape). Settings are the repository's params.yaml.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from stages.core import params  # noqa: E402


def run_parser(doc: str) -> argparse.ArgumentParser:
    """The arguments of a benchmark on one model of a run: `--run` and `--model`."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True)
    ap.add_argument("--model", default="models/base", help="model folder, relative to --run")
    return ap


def main() -> None:
    ap = run_parser(__doc__)
    ap.add_argument("--kind", choices=("hf", "onnx"), default="hf")
    ap.add_argument("--answer-batch", type=int, nargs="*", default=[16, 32])
    ap.add_argument("--repeat", type=int, default=4)
    args = ap.parse_args()
    from stages.models.evaluate import ANSWER_TASK, run_suite, task_data

    run_dir = Path(args.run).resolve()
    cfg, = params.load(ROOT / "params.yaml", "eval")
    data, model = str(run_dir / "data/prepared"), str(run_dir / args.model)
    tasks = task_data(data, str(run_dir / "data/eval"), cfg)

    def timed(subset: dict, c=cfg) -> tuple[float, dict]:
        t = time.perf_counter()
        metrics = run_suite(args.kind, model, data, c, tasks=subset)["metrics"]
        return time.perf_counter() - t, metrics

    print(f"| task ({args.kind}, {args.model}) | seconds |\n|---|---:|")
    for task, rows in tasks.items():
        print(f"| {task} | {timed({task: rows})[0]:.1f} |", flush=True)
    print(f"| all in one call | {timed(tasks)[0]:.1f} |", flush=True)

    if args.kind == "hf" and args.answer_batch:
        print("\n| answer_batch | seconds | answer chrF |\n|---:|---:|---:|")
        for _ in range(args.repeat):
            for width in args.answer_batch:
                seconds, m = timed({ANSWER_TASK: tasks[ANSWER_TASK]}, cfg.model_copy(update={"answer_batch": width}))
                print(f"| {width} | {seconds:.1f} | {m['answer_chrf']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
