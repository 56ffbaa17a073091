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
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .core import params
from .core.io import atomic_dir
from .core.runtime import log, seed_everything
from .models import modeling
from .models.champion import teacher_or_base
from .models.batches import pack, replay_texts, Sampler
from .models.lineage import write_lineage


def target_weights(model, target_modules: list[str]) -> dict[str, torch.nn.Parameter]:
    """Weights of the Linear layers whose last name part is in target_modules."""
    return {f"{name}.weight": mod.weight for name, mod in model.named_modules()
            if isinstance(mod, torch.nn.Linear) and name.split(".")[-1] in target_modules}


def fisher_diagonal(model, blocks: torch.Tensor, weights: dict[str, torch.nn.Parameter]) -> dict[str, torch.Tensor]:
    """Mean squared gradient of the LM loss per weight, one sequence at a time."""
    for p in model.parameters():
        p.requires_grad_(False)
    for p in weights.values():
        p.requires_grad_(True)
    fisher = {name: torch.zeros_like(p, dtype=torch.float32) for name, p in weights.items()}
    for row in blocks:
        ids = row.unsqueeze(0)
        model(input_ids=ids, labels=ids).loss.backward()
        for name, p in weights.items():
            fisher[name] += p.grad.float().pow(2)
            p.grad = None
    return {name: f / len(blocks) for name, f in fisher.items()}


def load_fisher(fisher_dir: str | Path) -> tuple[dict[str, torch.Tensor], int]:
    """The fisher stage's output: F per weight matrix, and the tokens per sample it was averaged over (the T of
    losses.ewc_weight)."""
    path = Path(fisher_dir) / "fisher.safetensors"
    with safe_open(path, framework="pt") as st:
        tokens = (st.metadata() or {}).get("tokens_per_sample")
        if not tokens:
            raise SystemExit(f"{path} does not say how many tokens each sample had (written by an older fisher "
                             "stage): rerun the fisher stage (dvc repro does)")
        return {k: st.get_tensor(k) for k in st.keys()}, int(tokens)


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

