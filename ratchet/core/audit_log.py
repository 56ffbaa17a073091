"""The audit trail: an append-only JSONL log where each entry hashes the one before.

Changing, removing or reordering any entry breaks the chain, and
`ratchet audit verify` says where. It records data drops, gate verdicts (pass
and fail), promotions and refusals.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
from pathlib import Path

from ratchet.core.io import locked

GENESIS = "0" * 64
# what a promotion's (or refusal's) git tag message records of the log: its head when the tag was made
ANCHOR = re.compile(r"audit entry (\d+): ([0-9a-f]{64})")


def _digest(entry: dict) -> str:
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _lines(path: Path) -> tuple[list[str], int | None]:
    """The log's complete lines, and the byte offset of an unfinished last line (no newline: an append cut
    short by a kill or a crash before it was acknowledged), or None."""
    if not path.is_file():
        return [], None
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    lines = [line for line in data[:end].decode("utf-8").split("\n") if line.strip()]
    return lines, (end if end < len(data) else None)


def _read(path: Path) -> tuple[list[dict], int | None]:
    lines, torn = _lines(path)
    return [json.loads(line) for line in lines], torn


def entries(path: str | Path) -> list[dict]:
    """The log's entries; an unfinished last line is not one (verify reports it, the next append removes it)."""
    return _read(Path(path))[0]


def append(path: str | Path, event: str, **fields) -> dict:
    """Append one event; the file is flushed and fsynced before returning, or left as it was if the write
    fails (a full disk). Appends from several processes take turns (a lock on the log file), so each entry
    chains onto the one really before it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    with locked(path):
        prior, torn = _read(path)
        if torn is not None:  # never acknowledged, so never part of the chain: cut it off before appending
            os.truncate(path, torn)
            print(f"audit log {path}: removed an unfinished last line (an append cut short by a crash)",
                  file=sys.stderr)
        entry = {"seq": len(prior), "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                 "event": event, **fields, "prev": prior[-1]["hash"] if prior else GENESIS}
        entry["hash"] = _digest(entry)
        with open(path, "a", encoding="utf-8") as f:
            size = f.tell()
            try:
                f.write(json.dumps(entry, sort_keys=True, ensure_ascii=False) + "\n")
                f.flush()
                os.fsync(f.fileno())
            except BaseException:  # a full disk or a kill: no half line is left to break the chain
                f.truncate(size)
                raise
    return entry


def verify(path: str | Path) -> list[str]:
    """Problems found in the chain; an empty list means the log is intact."""
    problems, prev = [], GENESIS
    try:
        log, torn = _read(Path(path))
    except json.JSONDecodeError as e:
        return [f"{path}: line {e.lineno if hasattr(e, 'lineno') else '?'} is not valid JSON"]
    if torn is not None:
        problems.append(f"{path}: the last line is unfinished: an append cut short by a crash (the next append "
                        "removes it) or the file was cut")
    for i, entry in enumerate(log):
        if entry.get("seq") != i:
            problems.append(f"entry {i}: sequence number {entry.get('seq')} (entries removed or reordered)")
        if entry.get("prev") != prev:
            problems.append(f"entry {i}: does not chain to entry {i - 1} (an earlier entry was changed or removed)")
        if entry.get("hash") != _digest(entry):
            problems.append(f"entry {i}: content does not match its hash (entry was altered)")
        prev = entry.get("hash")
    return problems


def anchored(path: str | Path, messages: dict[str, str]) -> list[str]:
    """Problems between the log and the heads recorded outside it: `messages` maps a name (a git tag) to
    its text, which may hold `audit entry N: HASH`. A chain stays intact when its tail is cut off or the whole
    log is rebuilt; an entry a tag recorded that the log no longer holds shows either."""
    log = entries(path)
    problems = []
    for name, text in sorted(messages.items()):
        m = ANCHOR.search(text)
        if not m:
            continue
        seq, digest = int(m.group(1)), m.group(2)
        if seq >= len(log):
            problems.append(f"{name} records entry {seq} ({digest[:12]}) but the log ends at entry {len(log) - 1}: "
                            "its tail was cut off")
        elif log[seq].get("hash") != digest:
            problems.append(f"{name} records entry {seq} as {digest[:12]} but the log holds "
                            f"{str(log[seq].get('hash'))[:12]}: the log was rewritten")
    return problems
