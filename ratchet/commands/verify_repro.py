"""`ratchet verify-repro STAGE`: rerun one stage from its recorded inputs in a scratch copy, compare its outputs.

The stage must be up to date (`dvc status` clean for it), so the workspace holds exactly the inputs and
outputs dvc.lock records. The scratch copy gets the repository's tracked files (code, params.yaml,
dvc.yaml) and the stage's data and model deps (hard links: stages never write their inputs); the stage's own
command runs there, and every output file is compared with the recorded one:

- identical: the same bytes;
- same up to clock readings: JSON whose only differences are wall times and time stamps (keys like
  wall_time_s, time_utc), Markdown whose only differences are time stamps and durations in seconds;
- differs: named, with where (JSON key paths; for safetensors the largest weight difference).

Exit 0 when nothing differs beyond clock readings, 1 otherwise, 2 when the stage cannot be checked.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ratchet.core import pipeline, vcs
from ratchet.core.io import sha256_file

# readings of a clock in text (a Markdown report): time stamps and durations in seconds
CLOCK_TEXT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ|\b\d+(?:\.\d+)? ?s\b")
# keys whose values are readings of a clock, not results: they differ between any two runs
CLOCK_KEYS = {"wall_time_s", "finished_utc", "time_utc", "started_utc", "seconds", "elapsed_s", "tok_per_s",
              "tokens_per_s"}


def files_of(path: Path) -> dict[str, Path]:
    if path.is_file():
        return {"": path}
    return {p.relative_to(path).as_posix(): p for p in sorted(path.rglob("*")) if p.is_file()}


def json_diff(a, b, where: str = "") -> list[str]:
    """Key paths where two JSON values differ, clock readings left out."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            if k in CLOCK_KEYS or str(k).endswith(("_seconds", "_utc")):
                continue
            out += json_diff(a.get(k), b.get(k), f"{where}.{k}" if where else str(k))
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in json_diff(x, y, f"{where}[{i}]")]
    return [] if a == b else [where or "(the whole value)"]


def read_json_lines(path: Path):
    text = path.read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return [json.loads(line) for line in text.splitlines() if line.strip()]


def weight_gap(a: Path, b: Path) -> str:
    """The largest absolute difference between two safetensors files' tensors, and how many tensors differ."""
    import torch
    from safetensors.torch import load_file

    x, y = load_file(a), load_file(b)
    if set(x) != set(y):
        return f"different tensors ({len(set(x) ^ set(y))} names differ)"
    gaps = {k: (x[k].float() - y[k].float()).abs().max().item() for k in x if not torch.equal(x[k], y[k])}
    if not gaps:
        return "same tensors, different file bytes"
    worst = max(gaps, key=gaps.get)
    return f"{len(gaps)} of {len(x)} tensors differ, the largest by {gaps[worst]:.3g} ({worst})"


def compare(recorded: Path, rerun: Path) -> tuple[str, str]:
    """(identical | clock | differs, detail) for one output file."""
    if sha256_file(recorded) == sha256_file(rerun):
        return "identical", ""
    if rerun.suffix in (".json", ".jsonl"):
        try:
            diff = json_diff(read_json_lines(recorded), read_json_lines(rerun))
        except (json.JSONDecodeError, UnicodeDecodeError):
            diff = ["(not JSON)"]
        if not diff:
            return "clock", ""
        return "differs", ", ".join(diff[:6]) + (f" and {len(diff) - 6} more" if len(diff) > 6 else "")
    if rerun.suffix in (".md", ".txt"):
        a, b = (CLOCK_TEXT.sub("<clock>", p.read_text(encoding="utf-8")) for p in (recorded, rerun))
        if a == b:
            return "clock", ""
        line = next(i for i, (x, y) in enumerate(zip(a.splitlines() + [""], b.splitlines() + [""])) if x != y)
        return "differs", f"from line {line + 1}"
    if rerun.suffix == ".safetensors":
        return "differs", weight_gap(recorded, rerun)
    return "differs", f"{recorded.stat().st_size} bytes recorded, {rerun.stat().st_size} rerun"


def link_tree(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_file():
        os.link(src, dst)
    else:
        shutil.copytree(src, dst, copy_function=os.link)


def run(root: Path, stage: str, keep: bool = False) -> int:
    lock = pipeline.lock(root)
    if stage not in lock:
        print(f"ratchet verify-repro: no stage {stage!r} in dvc.lock (stages: {', '.join(lock)}); "
              "run `dvc repro` first", file=sys.stderr)
        return 2
    stale = vcs.stale_stages(root)
    if stage in stale:
        print(f"ratchet verify-repro: stage {stage} is out of date with dvc.lock ({stale[stage]}): the workspace "
              f"does not hold what it recorded. `dvc checkout` or `dvc repro {stage}` first.", file=sys.stderr)
        return 2
    entry = lock[stage]
    outs = list(entry.outs)
    log = pipeline.audit_log_path(root).relative_to(root)
    scratch = Path(tempfile.mkdtemp(prefix=f"ratchet-repro-{stage}-")) / "repo"
    try:
        # a worktree at HEAD: the same commit in the lineage it writes; files edited or added since, as they are
        vcs.git(root, "worktree", "add", "-q", "--detach", str(scratch), "HEAD")
        edited = vcs.git(root, "diff", "--name-only", "HEAD").split("\n") + vcs.git(
            root, "ls-files", "-o", "--exclude-standard").split("\n")
        for rel in filter(None, edited):
            if (root / rel).is_file():
                (scratch / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(root / rel, scratch / rel)
        for dep in entry.deps:
            src, dst = root / dep, scratch / dep
            if src.exists() and not dst.exists():
                link_tree(src, dst)
        if (root / log).is_file():  # a gate appends its verdict: to a copy, never to the record
            (scratch / log).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / log, scratch / log)
        env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
        print(f"rerunning {stage} in {scratch}: {entry.raw['cmd']}", flush=True)
        started = time.time()
        r = subprocess.run(entry.raw["cmd"], shell=True, cwd=scratch, env=env, capture_output=True, text=True)
        if r.returncode != 0:
            print(f"ratchet verify-repro: {stage} failed in the scratch copy ({r.returncode}):\n"
                  f"{(r.stdout + r.stderr)[-3000:]}", file=sys.stderr)
            return 1
        rows = []
        for out in outs:
            recorded, rerun = files_of(root / out), files_of(scratch / out)
            for name in sorted(set(recorded) | set(rerun)):
                shown = f"{out}/{name}" if name else out
                if name not in rerun:
                    rows.append((shown, "differs", "not written by the rerun"))
                elif name not in recorded:
                    rows.append((shown, "differs", "written only by the rerun"))
                else:
                    rows.append((shown, *compare(recorded[name], rerun[name])))
        counts = {k: sum(r[1] == k for r in rows) for k in ("identical", "clock", "differs")}
        for shown, how, detail in rows:
            print(f"  {how:9s} {shown}" + (f": {detail}" if detail else ""))
        print(f"{stage}: {len(rows)} output files, rerun in {time.time() - started:.0f} s: {counts['identical']} "
              f"identical, {counts['clock']} the same up to clock readings, {counts['differs']} differ"
              + (": reproduced" if not counts["differs"] else ""))
        return 1 if counts["differs"] else 0
    finally:
        if keep:
            print(f"scratch copy kept: {scratch} (`git worktree remove --force {scratch}` when done)")
        else:
            vcs.git(root, "worktree", "remove", "--force", str(scratch), check=False)
            shutil.rmtree(scratch.parent, ignore_errors=True)


HELP = "rerun a stage in a scratch copy and compare its outputs"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("stage", help="a stage of dvc.yaml, up to date with dvc.lock")
    p.add_argument("--keep", action="store_true", help="keep the scratch worktree to inspect it")


def execute(args: argparse.Namespace) -> int:
    return run(vcs.repo_root(Path.cwd()), args.stage, args.keep)
