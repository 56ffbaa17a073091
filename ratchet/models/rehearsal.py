"""Rehearsal text a model writes itself, and its next-token distributions cached once.

Used where the text the model learned from is not at hand: dapt rehearses the
champion's own samples with a KL term toward the champion (self-synthesized
rehearsal, Huang et al., 2024), distill the teacher's. The samples are
model-generated: they live in memory for one training run, are marked so in
lineage, and never become data.
"""
from __future__ import annotations

import time

import torch

from ratchet.models import generation


def teacher_topk(teacher, blocks: torch.Tensor, k: int, temperature: float, bf16: bool,
                 batch_size: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's top-k next-token log-probs at temperature T for every position of every block, once.

    idx int32 and logp fp16, [blocks, seq_len - 1, k]: position s predicts token s + 1, as logits[:, :-1].
    """
    n, width = blocks.shape
    idx = torch.empty(n, width - 1, k, dtype=torch.int32)
    logp = torch.empty(n, width - 1, k, dtype=torch.float16)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for b in range(0, n, batch_size):
            logits = teacher(input_ids=blocks[b:b + batch_size]).logits[:, :-1]
            idx[b:b + batch_size], logp[b:b + batch_size] = generation.topk_logprobs(logits, k, temperature)
    return idx, logp


def self_samples(model, tok, blocks: int, seq_len: int, seed: int, temperature: float, topk: int,
                 bf16: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
    """`blocks` blocks of seq_len tokens the model writes at `temperature`, with its own top-k log-probs on them
    (at temperature 1, the distribution a KL term pulls toward): (ids, idx, logp, a lineage record)."""
    t = time.time()
    ids, (idx, logp) = generation.sample_blocks(model, tok, blocks, seq_len, batch=32, seed=seed,
                                                temperature=temperature, bf16=bf16, topk=topk, kd_temperature=1.0)
    record = {"model_generated": True, "blocks": len(ids), "tokens": ids.numel(), "temperature": temperature,
              "topk": topk, "seconds": round(time.time() - t, 1), "preview": tok.decode(ids[0, 1:65])}
    return ids, idx, logp, record
