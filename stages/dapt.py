"""dapt: domain-adaptive continued pretraining, from the champion, with replay.

    python -m stages dapt --params params.yaml --base models/base --champion models/champion \
        --replay data/replay --data-gate reports/data/validation.json \
        --out models/dapt --history reports/train/dapt.json

Full-parameter causal LM training on the cycle's new domain text (the newest
drop; the seed before any drop), packed into seq_len blocks. A replay share of
each batch comes from the replay buffer (general text and the earlier sources'
domain text, data/replay), so the model keeps what it knew (Gururangan et al.,
2020, on DAPT; replay as in experience-replay continual learning). The
learning rate warms up and decays again every cycle.
"""
from __future__ import annotations

import argparse
import time

import torch

from .core import params
from .core.io import atomic_dir, write_json
from .core.runtime import log, seed_everything
from .models import modeling
from .models.champion import teacher_or_base
from .models.batches import pack, replay_texts, Sampler, texts
from .models.verdict import require_pass
from .models.lineage import write_lineage
from .models.losses import masked_lm_loss, replay_rows
from .models.train import checkpoint_dir, discard_checkpoint, fingerprint, is_main_process, train_loop


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--base", required=True)
    ap.add_argument("--champion", required=True)
    ap.add_argument("--replay", required=True, help="the replay stage's folder: new/ and buffer/")
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
    tok, model = modeling.load_tokenizer(start), modeling.load_model(start)
    model.config.use_cache = False

    domain = pack(tok, texts(f"{args.replay}/new/domain.jsonl"), cfg.seq_len)
    general = pack(tok, replay_texts(args.replay), cfg.seq_len)
    n_replay = replay_rows(cfg.batch_size, cfg.replay_fraction)
    log("dapt", f"{len(domain)} new domain blocks, {len(general)} replay blocks of {cfg.seq_len} tokens; "
                f"{cfg.batch_size - n_replay}+{n_replay} (domain+replay) rows per batch, {cfg.steps} steps")
    draw_domain, draw_general = Sampler(len(domain), run.seed), Sampler(len(general), run.seed + 1)

    def next_batch(step):
        ids = torch.cat([domain[draw_domain.take(cfg.batch_size - n_replay)], general[draw_general.take(n_replay)]])
        return {"input_ids": ids, "labels": ids.clone(), "attention_mask": torch.ones_like(ids)}

    def compute_loss(model, batch):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return masked_lm_loss(logits, batch["labels"]), {}

    history = train_loop("dapt", model, cfg, next_batch, compute_loss, checkpoint=checkpoint_dir(args.out),
                         fingerprint=fingerprint(cfg, start, args.replay))
    if not is_main_process():
        return  # one of several training processes: rank 0 writes the outputs

    model.config.use_cache = True
    with atomic_dir(args.out) as tmp:
        modeling.save_model(model, tok, tmp)
        write_lineage(tmp, name=args.out, card="Domain-adapted causal LM: full-parameter continued pretraining from the champion on the "
                           "newest drop's domain text, with replay of general and earlier domain text.",
                      stage="dapt", params={"dapt": params.as_dict(cfg)},
                      parents={"start": start}, data={"domain": f"{args.replay}/new/domain.jsonl",
                                                     "replay": f"{args.replay}/buffer"},
                      seed=run.seed, threads=run.threads, started=started,
                      real=modeling.is_real(start), extra={"final_loss": history[-1]["loss"]})
    discard_checkpoint(args.out)
    write_json(args.history, history)
    log("dapt", f"wrote {args.out} in {time.time() - started:.0f}s; loss {history[0]['loss']:.3f} -> "
                f"{history[-1]['loss']:.3f}")

