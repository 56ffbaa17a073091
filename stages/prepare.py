"""prepare: read the seed and every weekly drop, normalise, deduplicate, split.

    python -m stages.prepare --params params.yaml --seed data/seed --drops data/drops \
        --out data/prepared

Inputs are folders laid out as <source>/<role>/<file> where role is one of
domain (raw text), sft (instruction pairs or chat messages) or general (text the
model must not forget); a drop is data/drops/<ISO week>/<role>/<file>.
Accepted files: .jsonl with {"text"} (domain, general), {"prompt", "response"}
or {"messages": [{"role", "content"}, ...]} (sft); .txt (domain, general: one
record per blank-line separated block).

Every input record ends in exactly one place: a role's train split, its
held-out split (chosen by content hash, so a record never moves between splits
when later drops arrive), or quarantine.jsonl with the reason. manifest.json
holds the counts per input file.
"""
from __future__ import annotations

import argparse
import json
import re
import unicodedata
from collections import Counter
from pathlib import Path

from .common import params
from .common.io import atomic_dir, sha256_text, write_json, write_jsonl
from .common.params import ROLES
from .common.runtime import log

CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def normalise(text: str) -> str:
    """NFC, no control characters, no trailing spaces, at most one blank line in a row."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = CONTROL.sub("", text)
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def to_record(role: str, raw) -> tuple[dict | None, str | None]:
    """A raw JSON value as a normalised record of its role, or (None, reason)."""
    if not isinstance(raw, dict):
        return None, "not a JSON object"
    if role in ("domain", "general"):
        if not isinstance(raw.get("text"), str):
            return None, 'missing string field "text"'
        return {"text": normalise(raw["text"])}, None
    if "messages" in raw:
        msgs = raw["messages"]
        if not (isinstance(msgs, list) and msgs and all(
                isinstance(m, dict) and m.get("role") in ("system", "user", "assistant")
                and isinstance(m.get("content"), str) for m in msgs)):
            return None, 'field "messages" must be a list of {"role": system|user|assistant, "content": str}'
        if msgs[-1]["role"] != "assistant":
            return None, 'the last message must have role "assistant"'
        return {"messages": [{"role": m["role"], "content": normalise(m["content"])} for m in msgs]}, None
    if isinstance(raw.get("prompt"), str) and isinstance(raw.get("response"), str):
        return {"messages": [{"role": "user", "content": normalise(raw["prompt"])},
                             {"role": "assistant", "content": normalise(raw["response"])}]}, None
    return None, 'needs string fields "prompt" and "response", or "messages"'


def record_text(rec: dict) -> str:
    if "text" in rec:
        return rec["text"]
    return "\n".join(f"{m['role']}: {m['content']}" for m in rec["messages"])


def read_file(path: Path, role: str):
    """Yield (line number, record or None, reason or None) for every record in a file."""
    if path.suffix == ".jsonl":
        with open(path, "rb") as f:
            for i, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    raw = json.loads(line.decode("utf-8"))
                except UnicodeDecodeError:
                    yield i, None, "not valid UTF-8"
                    continue
                except json.JSONDecodeError as e:
                    yield i, None, f"malformed JSON ({e.msg})"
                    continue
                yield (i, *to_record(role, raw))
    elif path.suffix == ".txt":
        if role == "sft":
            raise SystemExit(f"{path}: .txt cannot hold instruction pairs; use .jsonl with prompt/response")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise SystemExit(f"{path}: not valid UTF-8 at byte {e.start}; re-encode the file as UTF-8")
        line = 1
        for block in re.split(r"\n\s*\n", text):
            if block.strip():
                yield line, {"text": normalise(block)}, None
            line += block.count("\n") + 2
    else:
        raise SystemExit(f"{path}: unsupported file type {path.suffix!r}; use .jsonl or .txt")


def input_files(seed: Path, drops: Path) -> list[tuple[str, str, Path]]:
    """(source, role, file) for the seed (drop zero) and each weekly drop, in a fixed order."""
    sources = [("seed", seed)] + [(d.name, d) for d in sorted(drops.iterdir()) if d.is_dir()]
    out = []
    for name, folder in sources:
        for role_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
            if role_dir.name not in ROLES:
                raise SystemExit(f"{role_dir}: unknown role folder; use one of {', '.join(ROLES)}")
            for f in sorted(p for p in role_dir.iterdir() if p.is_file() and not p.name.startswith(".")):
                out.append((name, role_dir.name, f))
    return out


def is_heldout(digest: str, fraction: float) -> bool:
    return int(digest[:8], 16) / 0x100000000 < fraction


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--seed", required=True, help="seed data folder (drop zero)")
    ap.add_argument("--drops", required=True, help="folder of weekly drops")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    (cfg,) = params.load(args.params, "prepare")

    splits = {(role, split): [] for role in ROLES for split in ("train", "heldout")}
    quarantine, seen, per_file = [], {}, {}
    for source, role, path in input_files(Path(args.seed), Path(args.drops)):
        counts = Counter()
        for line, rec, reason in read_file(path, role):
            counts["in"] += 1
            where = {"file": path.as_posix(), "line": line, "source": source, "role": role}
            if rec is not None:
                text = record_text(rec)
                digest = sha256_text(text)
                if not cfg.min_chars <= len(text) <= cfg.max_chars:
                    reason = f"length {len(text)} outside [{cfg.min_chars}, {cfg.max_chars}] chars"
                elif digest in seen:
                    reason = f"exact duplicate of {seen[digest]}"
            if reason is not None:
                quarantine.append({**where, "reason": reason})
                counts["quarantined"] += 1
                continue
            seen[digest] = f"{path.as_posix()}:{line}"
            split = "heldout" if is_heldout(digest, cfg.heldout_fraction) else "train"
            splits[(role, split)].append({**rec, "id": digest[:16], "source": source})
            counts["kept"] += 1
        per_file[path.as_posix()] = {"source": source, "role": role, **counts}

    with atomic_dir(args.out) as tmp:
        for (role, split), rows in splits.items():
            write_jsonl(tmp / role / f"{split}.jsonl", rows)
        write_jsonl(tmp / "quarantine.jsonl", quarantine)
        write_json(tmp / "manifest.json", {
            "files": per_file,
            "roles": {role: {split: len(splits[(role, split)]) for split in ("train", "heldout")} for role in ROLES},
            "quarantined": len(quarantine),
        })
    for role in ROLES:
        log("prepare", f"{role}: train={len(splits[(role, 'train')])} heldout={len(splits[(role, 'heldout')])}")
    log("prepare", f"quarantined={len(quarantine)} -> {args.out}/quarantine.jsonl")


if __name__ == "__main__":
    main()
