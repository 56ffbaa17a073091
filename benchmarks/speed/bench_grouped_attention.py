"""Decoding a padded batch with grouped key/value heads read in place (modeling.grouped_decoding) against
transformers' own sdpa, which copies each key/value head per query head whenever there is a mask.

    .venv/bin/python -m benchmarks.speed.bench_grouped_attention --run . --model models/base \
        --tasks ratchet_answers --rounds 2

`--run` is a repository whose data stages have run (data/prepared, data/eval). Scores the tasks with the
gate's code, alternately with and without grouped decoding, `--rounds` times; prints each task's seconds
and whether both ways scored every document the same. Settings are the repository's params.yaml.
"""
from __future__ import annotations

import contextlib
import statistics
from pathlib import Path

from benchmarks import common
from ratchet.core import params, runtime


def main() -> None:
    ap = common.run_parser(__doc__)
    ap.add_argument("--tasks", nargs="+", default=["ratchet_answers"])
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    from ratchet.eval import evaluate
    from ratchet.models import modeling

    run_dir = Path(args.run).resolve()
    cfg, = params.load(run_dir / "params.yaml", "eval")
    runtime.seed_everything(0, 2)
    data, model = str(run_dir / "data/prepared"), str(run_dir / args.model)
    tasks = evaluate.task_data(data, str(run_dir / "data/eval"), cfg)
    tasks = {t: tasks[t] for t in args.tasks}
    grouped = modeling.grouped_decoding
    ways = {"transformers' sdpa": lambda m: contextlib.nullcontext(m), "grouped decoding": grouped}
    seconds = {w: {t: [] for t in tasks} for w in ways}
    scores = {}
    for _ in range(args.rounds):
        for way, ctx in ways.items():
            modeling.grouped_decoding = ctx
            out = evaluate.run_suite("hf", model, data, cfg, eval_sets=str(run_dir / "data/eval"), tasks=tasks)
            for t in tasks:
                seconds[way][t].append(out["seconds"][t])
            scores.setdefault(way, out["scores"])
    modeling.grouped_decoding = grouped
    a, b = ways
    print(f"{args.model}, {args.rounds} alternating rounds, seconds per task (median; every run)")
    rows = []
    for t in tasks:
        x, y = statistics.median(seconds[a][t]), statistics.median(seconds[b][t])
        rows.append([t, f"{x:.1f} ({', '.join(f'{s:.1f}' for s in seconds[a][t])})",
                     f"{y:.1f} ({', '.join(f'{s:.1f}' for s in seconds[b][t])})", y / x,
                     "yes" if scores[a][t] == scores[b][t] else "NO"])
    main_table = common.table(["task", a, b, "ratio", "same scores"], rows, [None, None, None, ".2f", None],
                              align="lrrrl")
    print(common.markdown(main_table))
    common.record(__file__, {"settings": {"model": args.model, "rounds": args.rounds},
                             "seconds": seconds, "same_scores": {t: scores[a][t] == scores[b][t] for t in tasks},
                             "tables": {"main": main_table}})


if __name__ == "__main__":
    runtime.start()
    main()
