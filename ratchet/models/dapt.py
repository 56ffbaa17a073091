"""Domain-adaptive continued pretraining (the dapt stage): full-parameter causal LM training on the cycle's new
domain text, with replay or self-synthesized rehearsal and optional EWC, and the cycle's audit canaries written
into its domain rows (ratchet/models/canaries.py).
"""
from __future__ import annotations

from pathlib import Path

import torch

from ratchet.core import params
from ratchet.core.io import read_json
from ratchet.core.runtime import log
from ratchet.models import canaries, modeling
from ratchet.models.batches import Sampler, pack, replay_texts, texts
from ratchet.models.fisher import load_fisher
from ratchet.models.losses import ewc_penalty, ewc_weight, masked_lm_loss, replay_rows, topk_kd_loss
from ratchet.models.rehearsal import self_samples
from ratchet.models.train import fingerprint, in_epochs, train_loop


def train(cfg: params.DaptConfig, run: params.RunConfig, start: str | Path, replay: str | Path,
          fisher_dir: str | Path | None = None, checkpoint: Path | None = None):
    """dapt's training from `start` on `replay`/new with the replay share and EWC of cfg, and the cycle's canaries
    inserted: (model, tok, history, what the run rehearsed, penalised and inserted, for lineage)."""
    tok, model = modeling.load_tokenizer(start), modeling.load_model(start)
    model.config.use_cache = False
    domain = pack(tok, texts(f"{replay}/new/domain.jsonl"), cfg.seq_len)
    n_replay = replay_rows(cfg.batch_size, cfg.replay_fraction)
    cfg = in_epochs("dapt", cfg, len(domain), cfg.batch_size - n_replay)
    record: dict = {"replay_fraction": cfg.replay_fraction, "replay_rows": n_replay, "steps": cfg.steps,
                    "epochs": cfg.epochs, "new_blocks": len(domain)}
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
    audit, at = audit_canaries(cfg, run, tok, replay, n_domain)
    record["canaries"] = audit

    def next_batch(step):
        old = draw_rehearse.take(n_replay)
        ids = torch.cat([canaries.write_over(domain[draw_domain.take(n_domain)], at.get(step, {})), rehearse[old]])
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


def audit_canaries(cfg: params.DaptConfig, run: params.RunConfig, tok, replay: str | Path,
                   n_domain: int) -> tuple[dict, dict[int, dict[int, list[int]]]]:
    """The cycle's canaries (drawn from run.seed and the replay stage's newest source) placed among the domain
    rows of the run's steps: (their lineage record, {step: {row: tokens written over its start}})."""
    cycle = read_json(Path(replay) / "manifest.json")["newest"]
    drawn = canaries.draw(cfg.canaries, run.seed, cycle)
    placed = canaries.place(drawn, cfg.steps, n_domain, run.seed, cycle)
    tokens = {c["id"]: tok(canaries.text(c), add_special_tokens=False).input_ids + [tok.eos_token_id]
              for c in drawn if c["count"]}
    at = canaries.token_rows(placed, tokens, cfg.seq_len)
    audit = canaries.record(drawn, placed, run.seed, cycle, tokens, cfg.steps * n_domain * cfg.seq_len)
    inserted = [c for c in drawn if c["count"]]
    names = ", ".join(c["id"] for c in inserted)
    log("dapt", f"{len(inserted)} audit canaries inserted ({names}; "
                f"{audit['tokens']} tokens, {audit['share_of_domain_tokens']:.2%} of the domain rows) and "
                f"{len(drawn) - len(inserted)} controls kept out, drawn for cycle {cycle}")
    return audit, at
