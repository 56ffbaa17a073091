"""dapt: domain-adaptive continued pretraining, from the champion, with replay and EWC.

    python -m stages dapt --params params.yaml --base models/base --champion models/champion \
        --replay data/replay --fisher models/fisher --data-gate reports/data/validation.json \
        --out models/dapt --history reports/train/dapt.json

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
bench_forgetting.py compares the ways over real cycles (BENCHMARKS.md).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from .core import params
from .core.io import atomic_dir, write_json
from .core.runtime import log, seed_everything
from .fisher import load_fisher
from .models import modeling
from .models.champion import teacher_or_base
from .models.batches import pack, replay_texts, Sampler, texts
from .models.verdict import require_pass
from .models.lineage import write_lineage
from .models.losses import ewc_penalty, ewc_weight, masked_lm_loss, replay_rows, topk_kd_loss
from .models.rehearsal import self_samples
from .models.train import checkpoint_dir, discard_checkpoint, fingerprint, is_main_process, train_loop


def train(cfg: params.DaptConfig, run: params.RunConfig, start: str | Path, replay: str | Path,
          fisher_dir: str | Path | None = None, checkpoint: Path | None = None):
    """dapt's training from `start` on `replay`/new with the replay share and EWC of cfg: (model, tok, history,
    what the run rehearsed and penalised, for lineage)."""
    tok, model = modeling.load_tokenizer(start), modeling.load_model(start)
    model.config.use_cache = False
    domain = pack(tok, texts(f"{replay}/new/domain.jsonl"), cfg.seq_len)
    n_replay = replay_rows(cfg.batch_size, cfg.replay_fraction)
    record: dict = {"replay_fraction": cfg.replay_fraction, "replay_rows": n_replay}
    topk = None
    if n_replay and cfg.replay_source == "champion":
        rehearse, idx, logp, rec = self_samples(model, tok, cfg.rehearsal_blocks, cfg.seq_len, run.seed,
                                                cfg.sample_temperature, cfg.rehearsal_topk, cfg.bf16)
        topk = (idx, logp)
        record["rehearsal"] = {"source": f"{start} (its own samples)", **rec}
        log("dapt", f"the champion wrote {len(rehearse)} rehearsal blocks and its top-{cfg.rehearsal_topk} "
                    f"log-probs on them in {rec['seconds']}s (model-generated; used here only)")
    else:
        rehearse = pack(tok, replay_texts(replay), cfg.seq_len)
        record["rehearsal"] = {"source": f"{replay}/buffer", "model_generated": False, "blocks": len(rehearse)}

    fisher, anchor, scale = {}, {}, 0.0
    if cfg.ewc_lambda > 0:
        if fisher_dir is None:
            raise SystemExit("dapt.ewc_lambda > 0 needs the fisher stage's output: pass --fisher models/fisher")
        fisher, tokens = load_fisher(fisher_dir)
        weights = dict(model.named_parameters())
        missing = sorted(set(fisher) - set(weights))
        if missing:
            raise SystemExit(f"{fisher_dir} holds Fisher information for weights {start} lacks ({missing[0]}, ...): "
                             "rerun the fisher stage on this champion (dvc repro does)")
        anchor = {k: weights[k].detach().clone() for k in fisher}
        scale = ewc_weight(cfg.ewc_lambda, tokens)
        record["ewc"] = {"lambda": cfg.ewc_lambda, "tokens_per_sample": tokens, "matrices": len(fisher),
                         "weights": sum(f.numel() for f in fisher.values())}
    log("dapt", f"{len(domain)} new domain blocks, {len(rehearse)} rehearsal blocks of {cfg.seq_len} tokens "
                f"({record['rehearsal']['source']}); {cfg.batch_size - n_replay}+{n_replay} (domain+rehearsal) rows "
                f"per batch, {cfg.steps} steps; EWC lambda={cfg.ewc_lambda}")
    draw_domain, draw_rehearse = Sampler(len(domain), run.seed), Sampler(len(rehearse), run.seed + 1)
    n_domain = cfg.batch_size - n_replay

    def next_batch(step):
        old = draw_rehearse.take(n_replay)
        ids = torch.cat([domain[draw_domain.take(n_domain)], rehearse[old]])
        batch = {"input_ids": ids, "labels": ids.clone(), "attention_mask": torch.ones_like(ids),
                 "rehearse": torch.arange(len(ids)) >= n_domain}
        if topk is not None:  # the champion's distribution on its rows; the domain rows carry none
            shape = (len(ids), *topk[0].shape[1:])
            batch["t_idx"] = torch.cat([torch.zeros(n_domain, *shape[1:], dtype=torch.long), topk[0][old].long()])
            batch["t_logp"] = torch.cat([torch.zeros(n_domain, *shape[1:], dtype=topk[1].dtype), topk[1][old]])
        return batch

    params_of = dict(model.named_parameters())

    def compute_loss(model, batch):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        logs = {}
        if topk is None:
            loss = masked_lm_loss(logits, batch["labels"])
        else:  # each row weighs the same: the domain rows' CE, the rehearsal rows' KL to the champion
            r = batch["rehearse"]
            parts = []
            if (~r).any():
                ce = masked_lm_loss(logits[~r], batch["labels"][~r])
                parts.append(ce * int((~r).sum()))
                logs["ce"] = ce.item()
            if r.any():
                kl, _ = topk_kd_loss(logits[r], batch["t_idx"][r], batch["t_logp"][r], batch["labels"][r], 1.0, 1.0)
                parts.append(kl * int(r.sum()))
                logs["kl"] = kl.item()
            loss = sum(parts) / len(r)
        if fisher:
            ewc = ewc_penalty({k: params_of[k] - anchor[k] for k in fisher}, None, fisher)
            loss = loss + scale * ewc
            logs["ewc"] = ewc.item()
        return loss, logs

    history = train_loop("dapt", model, cfg, next_batch, compute_loss, checkpoint=checkpoint,
                         fingerprint=fingerprint(cfg, start, replay, *([fisher_dir] if fisher else [])))
    model.config.use_cache = True
    return model, tok, history, record


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--base", required=True)
    ap.add_argument("--champion", required=True)
    ap.add_argument("--replay", required=True, help="the replay stage's folder: new/ and buffer/")
    ap.add_argument("--fisher", help="the fisher stage's folder (needed when dapt.ewc_lambda > 0)")
    ap.add_argument("--data-gate", required=True, help="validate's verdict; must pass")
    ap.add_argument("--out", required=True)
    ap.add_argument("--history", required=True, help="per-step training log (JSON) for dvc plots")
    args = ap.parse_args(argv)

    run, cfg = params.load(args.params, "run", "dapt")
    require_pass(args.data_gate)
    started = time.time()
    seed_everything(run.seed, run.threads)

    start = teacher_or_base(args.champion, args.base)
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
                           "newest drop's domain text, with rehearsal of what it knew (replay, EWC).",
                      stage="dapt", params={"dapt": params.as_dict(cfg)},
                      parents={"start": start, **({"fisher": args.fisher} if "ewc" in record else {})}, data=data,
                      seed=run.seed, threads=run.threads, started=started,
                      real=modeling.is_real(start), extra={"final_loss": history[-1]["loss"], **record})
    discard_checkpoint(args.out)
    write_json(args.history, history)
    log("dapt", f"wrote {args.out} in {time.time() - started:.0f}s; loss {history[0]['loss']:.3f} -> "
                f"{history[-1]['loss']:.3f}")
