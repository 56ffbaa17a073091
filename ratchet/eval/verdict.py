"""The check every downstream stage makes on its gate: a model moves forward only on a passing verdict."""
from __future__ import annotations

from pathlib import Path

from ratchet.core.io import read_json


def require_pass(verdict: str | Path) -> dict:
    """Stop unless the gate verdict at `verdict` says the model may move forward."""
    path = Path(verdict)
    if not path.is_file():
        raise SystemExit(f"{path}: no gate verdict; run the gate stage first (dvc repro)")
    v = read_json(path)
    if v.get("verdict") != "pass":
        raise SystemExit(f"{path}: gate verdict is {v.get('verdict')!r}, not 'pass': {v.get('reason')}")
    return v
