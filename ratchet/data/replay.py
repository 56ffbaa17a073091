"""Split a cycle's prepared data into what is new (the newest source) and a replay buffer of the past
(a seeded reservoir per role), for the training stages (the replay stage).
"""
from __future__ import annotations

import hashlib
import heapq
from pathlib import Path
from typing import Iterable

from ratchet.core import params
from ratchet.core.io import read_json, read_jsonl
from ratchet.core.params import ROLES
from ratchet.data import doc_questions

NEW_ROLES = ("domain", "sft")  # general text is never "new": it is what the model must not forget


def key(seed: int, role: str, record_id: str) -> int:
    """The record's fixed rank in the reservoir: smaller keys stay."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{role}:{record_id}".encode()).digest()[:8], "big")


def reservoir(records: Iterable[dict], cap: int, seed: int, role: str) -> list[dict]:
    """The `cap` records with the smallest keys, in key order (a bottom-k uniform sample)."""
    return [r for _, _, r in heapq.nsmallest(cap, ((key(seed, role, r["id"]), r["id"], r) for r in records))]


def sources_in_order(data: Path) -> list[str]:
    """seed first, then the drops by name (ISO weeks), as prepare read them; from its manifest, so a
    drop whose every record was quarantined still counts as the newest."""
    found = set(read_json(data / "manifest.json")["drops"])
    return ["seed"] * ("seed" in found) + sorted(found - {"seed"})


def entry_from(manifest: dict, role: str) -> str | None:
    return manifest["roles"].get(role, {}).get("new_from")


def build(data: Path, cfg: params.ReplayConfig, seed: int) -> tuple[dict, dict, dict]:
    """(new records per role, buffer per role, manifest) from the prepared train splits."""
    order = sources_in_order(data)
    if not order:
        raise SystemExit(f"{data}/manifest.json lists no source; run prepare first")
    newest, earlier = order[-1], set(order[:-1])
    new, buffer, manifest = {}, {}, {"newest": newest, "earlier": order[:-1], "seed": seed,
                                      "max_records": dict(cfg.max_records), "roles": {}}
    for role in ROLES:
        path = data / role / "train.jsonl"
        seen = [0]

        def past(rows):
            for r in rows:
                if role == "general" or r["source"] in earlier:
                    seen[0] += 1
                    yield r

        buffer[role] = reservoir(past(read_jsonl(path)), cfg.max_records[role], seed, role)
        entry = {"buffer_population": seen[0], "buffer": len(buffer[role])}
        if role in NEW_ROLES:
            new[role] = [r for r in read_jsonl(path) if r["source"] == newest]
            entry["new_from"] = newest
            if not new[role]:
                new[role], entry["new_from"] = buffer[role], "buffer"
            if role == "sft" and cfg.doc_answer_chars and entry_from(manifest, "domain") == newest:
                asked = doc_questions.pairs(new["domain"], cfg.doc_answer_chars)
                new[role] = new[role] + asked if entry["new_from"] == newest else asked
                entry.update(doc_questions=len(asked), new_from=newest if asked else entry["new_from"])
            entry["new"] = len(new[role])
        manifest["roles"][role] = entry
    return new, buffer, manifest
