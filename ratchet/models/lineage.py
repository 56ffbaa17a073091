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


def _fix(path: Path, stage: str | None) -> str:
    if stage == "promote":  # the champion's own folders: only `ratchet promote` writes them, DVC keeps them
        return (f"restore the champion (`dvc checkout {path.parent}.dvc`, or `dvc pull` on a new clone), "
                "or promote again")
    return f"rerun the stage that makes it (dvc repro {stage or '<the stage that writes it in dvc.yaml>'})"


def _signature(path: Path) -> tuple:
    return tuple(sorted((f.relative_to(path).as_posix(), st.st_size, st.st_mtime_ns, st.st_ino)
                        for f in path.rglob("*") if f.is_file() for st in [f.stat()]))


# folder -> (its files' sizes and times, its lineage record) when it was last found intact: a stage reads its
# parents several times (the check, the loader, the lineage it writes), and hashes each once per process
_checked: dict[Path, tuple[tuple, dict]] = {}


def require(path: str | Path, stage: str | None = None) -> dict:
    """The lineage record of the model folder `path`, refused unless the folder is what it records.

    Every reader of a model folder calls this: a folder without a readable lineage.json was not written by a
    ratchet stage (or was altered), and one whose files no longer hash to the recorded sha256 was changed since
    its stage wrote it; both exit naming the folder and the fix (`stage`: the dvc.yaml stage that writes it,
    `promote` for the champion's folders). The hash is recomputed, as DVC does for its outs (about 0.6 s for a
    540 MB folder on a 2-core CPU with the files in the page cache), once per folder and process while its
    files keep their sizes and times.
    """
    path = Path(path)
    file = path / "lineage.json"
    if not file.is_file():
        raise SystemExit(f"{path} has no lineage.json: it was not written by a ratchet stage or was altered; "
                         f"{_fix(path, stage)}")
    signature = _signature(path)
    known = _checked.get(path.resolve())
    if known and known[0] == signature:
        return known[1]
    try:
        record = read_json(file)
        recorded = record["artifact"]["sha256"]
    except (ValueError, KeyError, TypeError) as e:
        raise SystemExit(f"{file} cannot be read as a lineage record ({type(e).__name__}: {e}): it was not "
                         f"written by a ratchet stage or was altered; {_fix(path, stage)}") from None
    if sha256_tree(path) != recorded:
        raise SystemExit(f"{path}: its files do not match its lineage.json: a file was changed, truncated or "
                         f"replaced after it was written. Restore it (`dvc checkout {path}`) or "
                         + _fix(path, stage).replace("dvc repro ", "dvc repro --force "))
    _checked[path.resolve()] = (signature, record)
    return record


def artifact_hash(path: str | Path, stage: str | None = None) -> str:
    """The content hash of a model folder, as its lineage.json records it, once `require` found it true."""
    return require(path, stage)["artifact"]["sha256"]


def intact(path: str | Path) -> bool:
    """Whether a folder has a lineage.json and its files still hash to what it recorded."""
    path = Path(path)
    if not (path / "lineage.json").is_file():
        return False
    try:
        return sha256_tree(path) == read_json(path / "lineage.json")["artifact"]["sha256"]
    except (ValueError, KeyError, TypeError):
        return False


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
    """(lineage record, problems) of a model folder for the audit: the folder must be what its lineage.json
    records, and every parent it names must still be there, with its own lineage.json and the content it had
    when this folder was made."""
    path = folder / "lineage.json"
    if not path.is_file():
        return {}, [f"{folder}: no lineage.json: it was not written by a ratchet stage or was altered"]
    try:
        lin = read_json(path)
        recorded, parents = lin["artifact"]["sha256"], dict(lin["parents"])
    except (ValueError, KeyError, TypeError) as e:
        return {}, [f"{path}: not a lineage record ({type(e).__name__}: {e})"]
    problems = [] if sha256_tree(folder) == recorded else [
        f"{folder}: content differs from the hash in its lineage.json"]
    for role, parent in parents.items():
        where = Path(parent["path"])
        if not where.exists():
            problems.append(f"{folder}: parent {role} ({where}) is missing")
        elif where.is_dir() and not (where / "lineage.json").is_file():
            problems.append(f"{folder}: parent {role} ({where}) has no lineage.json")
        # the parent's content, not the hash its own lineage.json claims: a rebuilt or edited parent shows either way
        elif sha256_tree(where) != parent["sha256"]:
            problems.append(f"{folder}: parent {role} ({where}) changed since this artifact was made")
    return lin, problems
