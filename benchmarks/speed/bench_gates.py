"""What one gate evaluation costs: each task of the suite on its own, and answers at two batch widths.

    .venv/bin/python -m benchmarks.speed.bench_gates --run . --model models/base --kind hf \
        --answer-batch 16 32 --repeat 4

`--run` is a repository whose data stages have run (data/prepared, data/eval).
Prints, for the model given, the wall time of every task of the gate suite
scored alone (each includes loading the model, about 1.5 s for SmolLM2-135M)
and of the whole suite in one call; then the answers task alternately at each
`--answer-batch` width, `--repeat` times, with its chrF (bfloat16 results
depend slightly on the batch shape). Settings are the repository's params.yaml.
"""
from __future__ import annotations

import time
from pathlib import Path

from benchmarks import common
from benchmarks.common import ROOT
from ratchet.core import params


def main() -> None:
    ap = common.run_parser(__doc__)
    ap.add_argument("--kind", choices=("hf", "onnx"), default="hf")
    ap.add_argument("--answer-batch", type=int, nargs="*", default=[16, 32])
    ap.add_argument("--repeat", type=int, default=4)
    args = ap.parse_args()
    from ratchet.eval.evaluate import ANSWER_TASK, run_suite, task_data

    run_dir = Path(args.run).resolve()
    cfg, = params.load(ROOT / "params.yaml", "eval")
    data, model = str(run_dir / "data/prepared"), str(run_dir / args.model)
    tasks = task_data(data, str(run_dir / "data/eval"), cfg)

    def timed(subset: dict, c=cfg) -> tuple[float, dict]:
        t = time.perf_counter()
        metrics = run_suite(args.kind, model, data, c, tasks=subset)["metrics"]
        return time.perf_counter() - t, metrics

    by_task = common.table([f"task ({args.kind}, {args.model})", "seconds"], [], [None, ".1f"], align="lr")
    print(common.header(by_task))
    for task, rows in tasks.items():
        by_task["rows"].append([task, timed({task: rows})[0]])
        print(common.row(by_task, by_task["rows"][-1]), flush=True)
    by_task["rows"].append(["all in one call", timed(tasks)[0]])
    print(common.row(by_task, by_task["rows"][-1]), flush=True)
    out = {"tasks": by_task}

    if args.kind == "hf" and args.answer_batch:
        widths = common.table(["answer_batch", "seconds", "answer chrF"], [], ["d", ".1f", ".2f"], align="rrr")
        print("\n" + common.header(widths))
        for _ in range(args.repeat):
            for width in args.answer_batch:
                seconds, m = timed({ANSWER_TASK: tasks[ANSWER_TASK]}, cfg.model_copy(update={"answer_batch": width}))
                widths["rows"].append([width, seconds, m["answer_chrf"]])
                print(common.row(widths, widths["rows"][-1]), flush=True)
        out["answer_batch"] = widths
    common.record(__file__, {"settings": {"kind": args.kind, "model": args.model, "repeat": args.repeat},
                             "tables": out})


if __name__ == "__main__":
    main()
