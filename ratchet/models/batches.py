"""Training data as tensors: packed text blocks, chat examples with reply-only labels, seeded sampling.

Shared by every stage that feeds a model text (dapt, fisher, sft, distill,
quantize's parity check); the training loop itself is in train.py.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ratchet.core.io import read_jsonl

IGNORE = -100  # label of a token that carries no loss (prompt, padding)


def texts(path: str | Path) -> list[str]:
    return [r["text"] for r in read_jsonl(path)]


def conversations(path: str | Path) -> list[list[dict]]:
    return [r["messages"] for r in read_jsonl(path)]


def replay_texts(replay: str | Path) -> list[str]:
    """The replay buffer's text (general, then the earlier sources' domain text), from the replay stage's folder."""
    return texts(Path(replay) / "buffer" / "general.jsonl") + texts(Path(replay) / "buffer" / "domain.jsonl")


def cycle_records(replay: str | Path, role: str) -> list[dict]:
    """A role's records of the cycle: the newest source's, then the replayed earlier ones, each once."""
    seen, out = set(), []
    for name in (f"new/{role}.jsonl", f"buffer/{role}.jsonl"):
        for r in read_jsonl(Path(replay) / name):
            if r["id"] not in seen:
                seen.add(r["id"])
                out.append(r)
    return out


def cycle_conversations(replay: str | Path) -> list[list[dict]]:
    """The cycle's instruction conversations, new and replayed."""
    return [r["messages"] for r in cycle_records(replay, "sft")]


def pack(tok, docs: list[str], seq_len: int) -> torch.Tensor:
    """Concatenate documents (each ended by EOS) and cut into [n, seq_len] blocks."""
    ids: list[int] = []
    for doc in docs:
        ids.extend(tok(doc, add_special_tokens=False).input_ids)
        ids.append(tok.eos_token_id)
    n = len(ids) // seq_len
    if n == 0:
        raise ValueError(f"only {len(ids)} tokens of text; need at least seq_len={seq_len}")
    return torch.tensor(ids[: n * seq_len]).view(n, seq_len)


def chat_example(tok, messages: list[dict], seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids of a conversation and labels that carry loss on the final reply only."""
    prompt = tok.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=True)
    full = tok.apply_chat_template(messages, tokenize=True)
    if full[: len(prompt)] != prompt:
        raise ValueError("chat template does not extend the prompt; cannot mask the prompt tokens")
    ids = torch.tensor(full[:seq_len])
    labels = ids.clone()
    labels[: len(prompt)] = IGNORE
    return ids, labels


def collate(rows: list[tuple[torch.Tensor, torch.Tensor]], pad_id: int) -> dict:
    """Right-pad (ids, labels) rows into a batch with an attention mask."""
    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (x, y) in enumerate(rows):
        ids[i, : len(x)], labels[i, : len(y)], mask[i, : len(x)] = x, y, 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


class Sampler:
    """Endless, seeded, epoch-wise shuffled draws of indices from range(n)."""

    def __init__(self, n: int, seed: int):
        if n < 1:
            raise ValueError("cannot sample from an empty set")
        self.n, self.gen, self.order = n, torch.Generator().manual_seed(seed), []

    def take(self, k: int) -> list[int]:
        out = []
        while len(out) < k:
            if not self.order:
                self.order = torch.randperm(self.n, generator=self.gen).tolist()
            out.append(self.order.pop())
        return out
