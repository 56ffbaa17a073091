"""What distill's rehearsal blocks cost before training starts: the teacher writing them, and its top-k cache.

    .venv/bin/python -m benchmarks.speed.bench_rehearsal --run <repo> [--blocks 32] [--batches 32 64] [--rounds 3]

`--run` is a repository whose pipeline has run up to sft. Builds the teacher as distill does (dapt + sft
merged) and, in one process, one after the other on the same seed:

- the teacher writes `--blocks` blocks of distill.seq_len tokens at each `--batches` size (rows sampled
  together), with its top-k log-probs recorded from the logits it sampled from (distill.teacher_topk at
  distill.temperature), and once without recording at the first batch size;
- teacher_topk, the separate pass distill ran over those blocks before recording: the teacher's forward
  over every block.

Every step runs once per round, the rounds interleaved (this machine is noisy); prints the median
seconds per block, each as a ratio to sampling without recording, and how the recorded cache
compares with the separate pass's: the share of positions with the same top-1 and the same top-k set, and
the largest difference of a cached log-prob. The blocks must be the same token for token at one batch
size with or without recording (another batch size writes other blocks: the random numbers are drawn
in another order).
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

from benchmarks import common
from ratchet.core import params, runtime
from ratchet.models import generation, modeling
from ratchet.models.rehearsal import teacher_topk


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--run", default=".")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--blocks", type=int, default=32)
    ap.add_argument("--batches", type=int, nargs="+", default=[32])
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are printed")
    args = ap.parse_args()
    runtime.start()
    run_dir = Path(args.run)
    run, cfg = params.load(run_dir / args.params, "run", "distill")
    torch.set_num_threads(run.threads)
    tok = modeling.load_tokenizer(run_dir / "models/sft")
    teacher = modeling.load_sft_merged(run_dir / "models/sft", run_dir / "models/dapt").eval()
    k, T = cfg.teacher_topk, cfg.temperature
    print(f"teacher: {run_dir}/models/sft on models/dapt; {args.blocks} blocks of {cfg.seq_len} tokens, top-{k} at "
          f"T={T}, bf16={cfg.bf16}, {run.threads} threads", flush=True)

    def sample(batch: int, topk: int):
        t = time.perf_counter()
        ids, top = generation.sample_blocks(teacher, tok, args.blocks, cfg.seq_len, batch=batch, seed=run.seed,
                                            temperature=cfg.sample_temperature, bf16=cfg.bf16, topk=topk,
                                            kd_temperature=T)
        return time.perf_counter() - t, ids, top

    runs = [(f"sample, batch {args.batches[0]}, no record", args.batches[0], 0)]
    runs += [(f"sample, batch {b}, top-{k} recorded", b, k) for b in args.batches]
    runs.append(("teacher_topk pass over the blocks", 0, 0))
    seconds: dict[str, list[float]] = {name: [] for name, _, _ in runs}
    ids, recorded = None, None
    for _ in range(args.rounds):
        for name, batch, topk in runs:
            if not batch:
                t = time.perf_counter()
                idx, logp = teacher_topk(teacher, ids, k, T, cfg.bf16)
                seconds[name].append(time.perf_counter() - t)
                continue
            s, blocks, top = sample(batch, topk)
            seconds[name].append(s)
            if batch == args.batches[0]:  # another batch size draws its random numbers in another order
                assert ids is None or torch.equal(blocks, ids), "recording changed the blocks"
                ids, recorded = blocks, top or recorded
            print(name, f"{s:.1f}s", flush=True)
    rows = [(name, statistics.median(v)) for name, v in seconds.items()]
    base_s = rows[0][1]

    main_table = common.table(["step", "s", "s per block", "x sampling"],
                              [[name, s, s / args.blocks, s / base_s] for name, s in rows],
                              [None, ".1f", ".2f", ".2f"])
    print("\n" + common.markdown(main_table))
    r_idx, r_logp = recorded
    top1 = float((r_idx[..., 0] == idx[..., 0]).float().mean())
    same_set = float((r_idx.sort(-1).values == idx.sort(-1).values).all(-1).float().mean())
    gap = float((r_logp.float() - logp.float()).abs().max())
    positions = idx.shape[0] * idx.shape[1]
    print(f"\nrecorded against the separate pass, {positions} positions: top-1 the same at "
          f"{top1:.4f}, the same top-{k} set at {same_set:.4f}, largest log-prob difference {gap:.4f}")
    common.record(__file__, {"settings": {"blocks": args.blocks, "batches": args.batches, "rounds": args.rounds,
                                          "seq_len": cfg.seq_len, "topk": k, "temperature": T, "bf16": cfg.bf16,
                                          "threads": run.threads},
                             "seconds": seconds, "recorded_vs_pass": {"positions": positions, "same_top1": top1,
                                                                      "same_topk_set": same_set,
                                                                      "max_logprob_diff": gap},
                             "tables": {"main": main_table}})


if __name__ == "__main__":
    main()
