"""fisher: the champion's diagonal Fisher information on what it should keep, for EWC.

    python -m stages fisher --params params.yaml --base models/base --champion models/champion \
        --replay data/replay --out models/fisher

F_i = E[(d log p(x) / d theta_i)^2], estimated from single-sequence gradients
of the champion on the replay buffer (general text and the earlier sources'
domain text: what the champion knew before this cycle), for the weights sft adapts with LoRA
(sft.target_modules). The EWC penalties of dapt (the weights themselves) and
sft (dapt's offset plus the LoRA delta) keep those weights near the champion
where F says they matter for that text. It reruns only when the champion,
the replay buffer or these params change.
"""
from __future__ import annotations

import argparse
import time

import torch
from safetensors.torch import save_file

from ratchet.core import params
from ratchet.core.io import atomic_dir
from ratchet.core.runtime import log, seed_everything
from ratchet.models import modeling
from ratchet.models.batches import Sampler, pack, replay_texts
from ratchet.models.champion import made_by, teacher_or_base
from ratchet.models.fisher import fisher_diagonal, target_weights
from ratchet.models.lineage import require, write_lineage


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--base", required=True)
    ap.add_argument("--champion", required=True)
    ap.add_argument("--replay", required=True, help="the replay stage's folder")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    run, cfg, sft = params.load(args.params, "run", "fisher", "sft")
    started = time.time()
    seed_everything(run.seed, run.threads)
    champion = teacher_or_base(args.champion, args.base)
    require(champion, made_by(champion, args.champion))
    tok, model = modeling.load_tokenizer(champion), modeling.load_model(champion)
    general = pack(tok, replay_texts(args.replay), cfg.seq_len)
    blocks = general[Sampler(len(general), run.seed).take(min(cfg.samples, len(general)))]
    weights = target_weights(model, sft.target_modules)
    if not weights:
        raise SystemExit(f"sft.target_modules {sft.target_modules} match no Linear layer of {champion}")
    log("fisher", f"{champion}: {len(weights)} weight matrices, {len(blocks)} sequences of {cfg.seq_len} tokens")

    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
        fisher = fisher_diagonal(model, blocks, weights)
    total = sum(f.sum().item() for f in fisher.values())
    with atomic_dir(args.out) as tmp:
        save_file({k: v.contiguous() for k, v in fisher.items()}, tmp / "fisher.safetensors",
                  metadata={"champion": str(champion), "samples": str(len(blocks)),
                            "tokens_per_sample": str(blocks.shape[1])})
        write_lineage(tmp, name=args.out, stage="fisher",
                      params={"fisher": params.as_dict(cfg), "sft.target_modules": sft.target_modules},
                      parents={"champion": champion}, data={"replay": f"{args.replay}/buffer"},
                      seed=run.seed, threads=run.threads, started=started, real=modeling.is_real(champion),
                      extra={"fisher_sum": total})
    log("fisher", f"wrote {args.out} in {time.time() - started:.0f}s (sum of F = {total:.3e})")

