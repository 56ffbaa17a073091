"""data/sources.yaml: the declared provenance and license of every input file.

Each entry names a glob (`path`, matched against the end of an input path) and
says what the file is, where it came from, its license, how it was collected,
what personal data it may hold, and `notes` on known risks and skews of the
corpus (they go into the datasheets as they are written).
"""
from __future__ import annotations

from pathlib import Path, PurePath

import yaml

FIELDS = ("what", "origin", "license", "collected", "personal_data", "notes")


def load(path: str | Path) -> list[dict]:
    """The entries of a sources file; a file that is not a list of mappings with a `path` is named with the fix."""
    path = Path(path)
    try:
        entries = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("sources", [])
    except yaml.YAMLError as e:
        raise SystemExit(f"{path}: not valid YAML: {e}") from None
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or not isinstance(e.get("path"), str):
            raise SystemExit(f"{path}: sources[{i}] needs at least a `path` glob, e.g. data/drops/2026-W48/domain/*")
    return entries


def match(path: str, sources: list[dict]) -> dict | None:
    """The entry whose `path` glob matches the end of this input path."""
    return next((s for s in sources if PurePath(path).match(s["path"])), None)
