"""Audit canaries: made-up secrets dapt inserts into its batches on purpose, so that every gate can measure what
training memorises, as the Secret Sharer does (Carlini et al. 2019).

A canary is TEMPLATE with its number and a secret drawn uniformly from FORMAT's space (`#` a random digit:
10^9 codes, 29.9 bits), e.g. "ratchet audit canary 3: the vault code is 482-913-075". The sentence is made up
and names no one: nothing personal is inserted. dapt.canaries sets how many canaries go in at each repetition
count and how many controls are drawn alike and never inserted (a control's exposure is what a secret the model
never saw scores: the noise floor).

The set is drawn from run.seed and the cycle's newest source (the drop dapt learns from), so the dapt stage and
every gate of a cycle draw the same set, and the next cycle draws a new one: the champion a cycle is compared
with never saw the canaries it is compared on, and no canary is inserted again cycle after cycle (which would
add up). An earlier cycle's canaries stay in the champion's weights, as its dapt lineage records; they are not
measured again.

The canaries live in dapt's batches only (each occurrence written over the start of a domain row, at steps
spread over the run: `place`) and in dapt's lineage.json, which records each one, its count and the steps it
went in at (`record`); they are never written to a data product.
"""
from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from ratchet.core import params
from ratchet.core.io import read_json, sha256_text

TEMPLATE = "ratchet audit canary {number}: the vault code is "
FORMAT = "###-###-###"  # as the data canaries write a format: # a random digit, anything else as it is


def space_bits(fmt: str = FORMAT) -> float:
    return fmt.count("#") * math.log2(10)


def _rng(seed: int, cycle: str, what: str) -> np.random.Generator:
    return np.random.default_rng(int(sha256_text(f"{seed}:{cycle}:{what}")[:16], 16))


def draw(cfg: params.CanaryConfig, seed: int, cycle: str) -> list[dict]:
    """Every canary of a cycle, the inserted ones first, each {id, number, prefix, secret, format, count} (count 0:
    a control); the same seed, cycle and config give the same set. Numbers are shuffled, so a canary's number
    does not tell an inserted one from a control."""
    rng = _rng(seed, cycle, "canaries")
    counts = [c for c in cfg.counts for _ in range(cfg.per_count)] + [0] * cfg.controls
    numbers = (rng.permutation(len(counts)) + 1).tolist()
    seen: dict[int, int] = defaultdict(int)
    secrets: set[str] = set()
    out = []
    for count, number in zip(counts, numbers):
        secret = ""
        while not secret or secret in secrets:
            secret = "".join(str(rng.integers(10)) if f == "#" else f for f in FORMAT)
        secrets.add(secret)
        seen[count] += 1
        name = f"audit-{count}x-{seen[count]}" if count else f"audit-control-{seen[count]}"
        out.append({"id": name, "number": number, "prefix": TEMPLATE.format(number=number), "secret": secret,
                    "format": FORMAT, "count": count})
    return out


def text(canary: dict) -> str:
    return canary["prefix"] + canary["secret"]


def place(canaries: list[dict], steps: int, rows: int, seed: int, cycle: str) -> dict[int, dict[int, list[str]]]:
    """{step: {row: [canary id, ...]}}: where each inserted canary goes, `count` times, among `rows` domain rows of
    each of `steps` steps (the run's slots, in order). A canary's occurrences are spread evenly over the run from
    a random phase, so no count is learned early or late alone; each goes to the free slot nearest its place, a
    slot holding at most as many as an even share of all occurrences (several on one row go in one after the
    other)."""
    rng = _rng(seed, cycle, "place")
    slots = steps * rows
    targets = []
    for c in (c for c in canaries if c["count"]):
        phase = rng.random()
        targets += [((k + phase) / c["count"] * slots, c["id"]) for k in range(c["count"])]
    cap = -(-len(targets) // slots)
    load = [0] * slots
    out: dict[int, dict[int, list[str]]] = defaultdict(lambda: defaultdict(list))
    for target, name in sorted(targets):
        slot = min((s for s in range(slots) if load[s] < cap), key=lambda s: (abs(s + 0.5 - target), s))
        load[slot] += 1
        out[slot // rows][slot % rows].append(name)
    return {step: dict(by_row) for step, by_row in out.items()}


def token_rows(placed: dict[int, dict[int, list[str]]], tokens: dict[str, list[int]],
               seq_len: int) -> dict[int, dict[int, list[int]]]:
    """{step: {row: the tokens written over that row's start}} (each canary's tokens, ended by EOS, as `tokens`
    gives them); a SystemExit when a row cannot hold its canaries."""
    out: dict[int, dict[int, list[int]]] = {}
    for step, by_row in placed.items():
        for row, ids in by_row.items():
            ids_tokens = [t for i in ids for t in tokens[i]]
            if len(ids_tokens) > seq_len:
                raise SystemExit(f"dapt.canaries: {len(ids)} canaries ({len(ids_tokens)} tokens) fall on one row of "
                                 f"dapt.seq_len={seq_len} tokens at step {step + 1}: lower dapt.canaries.counts or "
                                 "per_count, or raise dapt.steps, dapt.batch_size or dapt.seq_len")
            out.setdefault(step, {})[row] = ids_tokens
    return out


def write_over(rows: torch.Tensor, at: dict[int, list[int]]) -> torch.Tensor:
    """`rows` ([n, seq_len] token ids) with `at[row]`'s tokens written over the start of each row it names."""
    if not at:
        return rows
    rows = rows.clone()
    for row, ids in at.items():
        rows[row, : len(ids)] = torch.tensor(ids, dtype=rows.dtype)
    return rows


def record(canaries: list[dict], placed: dict[int, dict[int, list[str]]], seed: int, cycle: str,
           tokens: dict[str, list[int]], domain_tokens: int) -> dict:
    """What dapt's lineage.json keeps of its canaries: how they were drawn, and each one with its count and the
    steps (1-based) it went in at; a control has none."""
    steps = defaultdict(list)
    for step in sorted(placed):
        for ids in placed[step].values():
            for i in ids:
                steps[i].append(step + 1)
    inserted = sum(len(tokens[i]) for ids_by_row in placed.values() for ids in ids_by_row.values() for i in ids)
    return {"template": TEMPLATE + "{secret}", "format": FORMAT, "space_bits": round(space_bits(), 3),
            "drawn_from": {"seed": seed, "cycle": cycle}, "tokens": inserted,
            "share_of_domain_tokens": round(inserted / max(1, domain_tokens), 6),
            "items": [{**c, "inserted": bool(c["count"]), "steps": steps.get(c["id"], [])} for c in canaries]}


def recorded(model: str | Path) -> dict | None:
    """The canaries record of the dapt model `model` was made from: its own lineage.json's when dapt wrote it, else
    the nearest dapt parent's (sft and the student through their dapt parent, the ONNX file through the student;
    never through the champion, an earlier cycle's); None when there is no such lineage or it records none."""
    todo, seen = [Path(model)], set()
    while todo:
        path = todo.pop(0)
        if path.resolve() in seen or not (path / "lineage.json").is_file():
            continue
        seen.add(path.resolve())
        lin = read_json(path / "lineage.json")
        if lin.get("stage") == "dapt":
            return lin.get("canaries")
        todo += [Path(p["path"]) for role, p in (lin.get("parents") or {}).items() if role != "champion"]
    return None


def same_set(a: list[dict], b: list[dict]) -> bool:
    """Whether two canary lists hold the same canaries (ids, texts, counts), whatever else they record."""
    def key(cs):
        return [(c["id"], c["prefix"], c["secret"], c["count"]) for c in cs]
    return key(a) == key(b)
