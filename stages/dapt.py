"""dapt: domain-adaptive continued pretraining, from the champion, with replay and EWC.

    python -m stages dapt --params params.yaml --base models/base --champion models/champion \
        --replay data/replay --fisher models/fisher --data-gate reports/data/validation.json \
        --out models/dapt --live reports/train/dapt

Full-parameter causal LM training on the cycle's new domain text (the newest
drop; the seed before any drop), packed into seq_len blocks (Gururangan et al.,
2020, on DAPT). Against forgetting, each batch holds a replay share of rows and
the loss may add EWC:

- dapt.replay_source buffer: the rows come from the replay buffer (general text
  and the earlier sources' domain text, data/replay), trained on like the new
  text (experience replay).
- dapt.replay_source champion: the champion writes dapt.rehearsal_blocks blocks
  of its own text before training, and the rows pull the model toward the
  champion's own next-token distribution on them (KL to its cached top-k):
  self-synthesized rehearsal (Huang et al., 2024), for when the text the
  champion learned from is not at hand. Model-generated, marked so in lineage,
  never kept as data.
- dapt.ewc_lambda > 0: lambda * T/2 * sum_i F_i (theta_i - theta_champion_i)^2
  over the weight matrices the fisher stage covers (losses.ewc_weight: lambda
  weighs the predicted rise of the loss on the champion's text against the new
  text's loss).

The learning rate warms up and decays again every cycle. benchmarks/
experiments/bench_forgetting.py compares the ways over real cycles (BENCHMARKS.md#forgetting).
"""
from __future__ import annotations

import argparse
import time

from ratchet.core import params
from ratchet.core.history import loss_trend, write_history
from ratchet.core.io import atomic_dir
from ratchet.core.runtime import log, seed_everything
from ratchet.eval.verdict import require_pass
from ratchet.models import modeling
from ratchet.models.champion import made_by, teacher_or_base
from ratchet.models.dapt import train
from ratchet.models.lineage import rehearsal_words, require, write_lineage
from ratchet.models.train import checkpoint_dir, discard_checkpoint, is_main_process


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--base", required=True)
    ap.add_argument("--champion", required=True)
    ap.add_argument("--replay", required=True, help="the replay stage's folder: new/ and buffer/")
    ap.add_argument("--fisher", help="the fisher stage's folder (needed when dapt.ewc_lambda > 0)")
    ap.add_argument("--data-gate", required=True, help="validate's verdict; must pass")
    ap.add_argument("--out", required=True)
    ap.add_argument("--live", required=True, help="the per-step training history, a DVCLive folder (dvc plots, "
                                               "dvc exp show)")
    args = ap.parse_args(argv)

    run, cfg = params.load(args.params, "run", "dapt")
    require_pass(args.data_gate)
    started = time.time()
    seed_everything(run.seed, run.threads)

    start = teacher_or_base(args.champion, args.base)
    require(start, made_by(start, args.champion))
    if args.fisher and cfg.ewc_lambda > 0:
        require(args.fisher, "fisher")
    log("dapt", f"starting from {start} (champion={args.champion})")
    model, tok, history, record = train(cfg, run, start, args.replay, args.fisher, checkpoint_dir(args.out))
    if not is_main_process():
        return  # one of several training processes: rank 0 writes the outputs

    data = {"domain": f"{args.replay}/new/domain.jsonl"}
    if not record["rehearsal"]["model_generated"]:
        data["replay"] = f"{args.replay}/buffer"
    with atomic_dir(args.out) as tmp:
        modeling.save_model(model, tok, tmp)
        write_lineage(tmp, name=args.out, card="Domain-adapted causal LM: full-parameter continued pretraining from the champion on the "
                           f"newest drop's domain text, {rehearsal_words(cfg)}.",
                      stage="dapt", params={"dapt": params.as_dict(cfg)},
                      parents={"start": start, **({"fisher": args.fisher} if "ewc" in record else {})}, data=data,
                      seed=run.seed, threads=run.threads, started=started,
                      real=modeling.is_real(start), extra={"final_loss": history[-1]["loss"], **record})
    write_history(args.live, history)  # before the checkpoint goes: a kill before this line reruns from it
    discard_checkpoint(args.out)
    log("dapt", f"wrote {args.out} in {time.time() - started:.0f}s; {loss_trend(history)}")
