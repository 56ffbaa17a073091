"""lineage.json: where an artifact came from, enough to reproduce it."""
from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import time
from pathlib import Path

from ratchet.core.io import read_json, sha256_tree, write_json

PACKAGES = ("torch", "transformers", "tokenizers", "peft", "accelerate", "optimum", "optimum-onnx",
            "onnx", "onnxruntime", "lm_eval", "great_expectations", "dvc", "datasets", "numpy")
CODE_PATHS = ("ratchet", "stages", "pyproject.toml", "dvc.yaml")


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
    """The machine a stage ran on, and its device: `cuda` with the GPU's name where torch sees one (training goes
    to the GPU whenever there is one: train.distributed), `cpu` otherwise."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"machine": platform.machine(), "processor": platform.processor() or None,
            "cpus": os.cpu_count(), "threads": threads, "python": platform.python_version(),
            "system": platform.system(), "device": "cuda" if gpu else "cpu", **({"gpu": gpu} if gpu else {})}


def artifact_hash(path: str | Path) -> str:
    """The content hash recorded in a folder's lineage.json, or computed."""
    path = Path(path)
    lineage = path / "lineage.json"
    if lineage.is_file():
        return read_json(lineage)["artifact"]["sha256"]
    return sha256_tree(path)


def intact(path: str | Path) -> bool:
    """Whether a folder's files still hash to what its lineage.json recorded (True without a lineage.json)."""
    path = Path(path)
    return not (path / "lineage.json").is_file() or sha256_tree(path) == artifact_hash(path)


def verify_artifact(path: str | Path) -> None:
    """Refuse a model folder whose files no longer hash to what its lineage.json recorded when it was written
    (a file edited, truncated or swapped since): SystemExit naming the folder and the fix. A folder without
    lineage.json (the pretrained source) is not checked."""
    path = Path(path)
    if not intact(path):
        raise SystemExit(f"{path}: its files do not match its lineage.json: a file was changed, truncated or "
                         "replaced after it was written. "
                         f"Restore it (`dvc checkout {path}`) or rebuild it (`dvc repro --force` of the stage "
                         "that writes it).")


def rehearsal_words(cfg) -> str:
    """How a training config keeps what the model knew, in words for its card: replay (its share of each batch and
    its source) and EWC, each as the config sets it."""
    source = {"buffer": "earlier and general text from the replay buffer",
              "champion": "text the champion wrote itself"}.get(getattr(cfg, "replay_source", "buffer"))
    replay = (f"replay of {source} in {cfg.replay_fraction:.0%} of each batch" if cfg.replay_fraction > 0
              else "no replay")
    ewc = (f"an EWC penalty towards the champion (lambda {cfg.ewc_lambda:g})" if cfg.ewc_lambda > 0 else "no EWC")
    return f"with {replay} and {ewc}"


def write_card(out: Path, *, name: str, stage: str, card: str, params: dict, parents: dict, data: dict,
               real: bool, library: str) -> None:
    """README.md model card: what the artifact is, how it was made, where its evidence lives."""
    import yaml

    parent = next(iter(parents.values()), None)
    meta = {"library_name": library, "pipeline_tag": "text-generation", "tags": ["ratchet", stage],
            **({"base_model": str(parent)} if parent else {})}
    lines = ["---", yaml.safe_dump(meta, sort_keys=False).strip(), "---", "", f"# {name}", ""]
    if not real:
        lines += ["> **Tiny test model.** Random weights: nothing it produces is a real result.", ""]
    lines += [card, "", "## How it was made", "",
              f"Stage `{stage}` of the ratchet pipeline (`dvc.yaml`). Parents: "
              + (", ".join(f"{k} `{v}`" for k, v in parents.items()) or "none") + ". Data: "
              + (", ".join(f"{k} `{v}`" for k, v in data.items()) or "none") + ".", "",
              "Parameters:", "", "```yaml", yaml.safe_dump(params, sort_keys=False).strip(), "```", "",
              "## Evidence", "",
              "- `lineage.json` beside this card: content hashes of this folder, its parents and its data, "
              "code revision, package versions, seed, hardware, wall time.",
              f"- Gate verdict: `reports/gates/{Path(name).name}.json` (metrics, thresholds, outcome); "
              "run summary: `reports/summary.md`; audit trail: `reports/audit/log.jsonl`.", "",
              "## Limitations", "",
              "A language model makes factual errors. What this one was measured on, and how it compares with the "
              "models it came from, is in its gate verdict: read it before use.", ""]
    (out / "README.md").write_text("\n".join(lines), encoding="utf-8")


def write_lineage(out: str | Path, *, name: str, stage: str, params: dict, parents: dict, data: dict,
                  seed: int, threads: int, started: float, real: bool, extra: dict | None = None,
                  card: str | None = None, library: str = "transformers") -> dict:
    """Write out/lineage.json for the artifact that will live at `name`.

    `out` may be the scratch folder of an atomic write; parents and data map a
    role to a path, and both are recorded with their content hashes. With
    `card`, a README.md model card is written first (and so is hashed too).
    """
    out = Path(out)
    if card is not None:
        write_card(out, name=name, stage=stage, card=card, params=params, parents=parents, data=data,
                   real=real, library=library)
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


def check_lineage(folder: Path) -> tuple[dict, list[str]]:
    problems = []
    path = folder / "lineage.json"
    if not path.is_file():
        return {}, [f"{folder}: no lineage.json"]
    lin = read_json(path)
    if not intact(folder):
        problems.append(f"{folder}: content differs from the hash in its lineage.json")
    for role, parent in lin["parents"].items():
        # the parent's content, not the hash its own lineage.json claims: a rebuilt or edited parent shows either way
        if Path(parent["path"]).exists() and sha256_tree(parent["path"]) != parent["sha256"]:
            problems.append(f"{folder}: parent {role} ({parent['path']}) changed since this artifact was made")
    return lin, problems
