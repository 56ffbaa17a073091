"""lineage.json: where an artifact came from, enough to reproduce it."""
from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import time
from pathlib import Path

from .io import read_json, sha256_tree, write_json

PACKAGES = ("torch", "transformers", "tokenizers", "peft", "accelerate", "optimum", "optimum-onnx",
            "onnx", "onnxruntime", "lm_eval", "great_expectations", "dvc", "datasets", "numpy")
CODE_PATHS = ("stages", "pyproject.toml", "dvc.yaml")


def code_revision() -> dict:
    """The git commit of the code, and whether the code (not data or outputs) was dirty."""
    def git(*args):
        r = subprocess.run(["git", *args], capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else None
    rev = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--", *CODE_PATHS)
    return {"commit": rev, "dirty": bool(status) if status is not None else None}


def package_versions() -> dict:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def hardware(threads: int) -> dict:
    return {"machine": platform.machine(), "processor": platform.processor() or None,
            "cpus": os.cpu_count(), "threads": threads, "python": platform.python_version(),
            "system": platform.system()}


def artifact_hash(path: str | Path) -> str:
    """The content hash recorded in a folder's lineage.json, or computed."""
    path = Path(path)
    lineage = path / "lineage.json"
    if lineage.is_file():
        return read_json(lineage)["artifact"]["sha256"]
    return sha256_tree(path)


def write_lineage(out: str | Path, *, name: str, stage: str, params: dict, parents: dict, data: dict,
                  seed: int, threads: int, started: float, real: bool, extra: dict | None = None) -> dict:
    """Write out/lineage.json for the artifact that will live at `name`.

    `out` may be the scratch folder of an atomic write; parents and data map a
    role to a path, and both are recorded with their content hashes.
    """
    out = Path(out)
    record = {
        "stage": stage,
        "artifact": {"path": str(name), "sha256": sha256_tree(out)},
        "parents": {k: {"path": str(p), "sha256": artifact_hash(p)} for k, p in parents.items()},
        "data": {k: {"path": str(p), "sha256": sha256_tree(p)} for k, p in data.items()},
        "params": params,
        "code": code_revision(),
        "packages": package_versions(),
        "seed": seed,
        "hardware": hardware(threads),
        "wall_time_s": round(time.time() - started, 2),
        "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        # A tiny test model's numbers are never reported as real results.
        "real": real,
    }
    if extra:
        record.update(extra)
    write_json(out / "lineage.json", record)
    return record
