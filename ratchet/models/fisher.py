"""The diagonal Fisher information of a model's weights on its own text, for EWC (the fisher stage writes it;
dapt and sft read it back).
"""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open


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
