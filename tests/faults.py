"""Kill -9 at a random moment, rerun, compare: the harness of tests/test_faults.py and benchmarks/experiments/bench_faults.py.

A stage is its dvc.yaml command, run in a repository whose pipeline has run.
`run_killed` starts it in a process group of its own and sends SIGKILL to the
group (the stage and anything it started) after a delay. `outcome` is what a
run produced, in a form two runs can be compared in: content hashes of model
folders (lineage.json aside, it records times), and JSON and Markdown reports
with their clock fields removed. `half_written` lists outputs that look whole
and are not.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

from ratchet.core import pipeline

# fields that record when or how long, not what: they differ between any two runs
CLOCK_KEYS = ("time", "seconds", "started", "finished", "duration", "elapsed", "date", "wall")
CLOCK_TEXT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ|\bin \d+(\.\d+)? ?s\b")


def stage_cmd(repo: Path, stage: str) -> str:
    return " ".join(pipeline.stages(repo)[stage].cmd.split())


def stage_outs(repo: Path, stage: str) -> list[Path]:
    """Every path the stage writes: outs, metrics and plots."""
    return [repo / o for o in pipeline.stages(repo)[stage].outs]


def run_killed(cmd: str, cwd: Path, delay: float, env: dict | None = None) -> float | None:
    """Run `cmd` (a shell command) and SIGKILL its process group after `delay` seconds. Returns the moment of the
    kill, in seconds from the start, or None when the command ended first."""
    start = time.monotonic()
    proc = subprocess.Popen(f"exec {cmd}", shell=True, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        proc.wait(timeout=delay)
        return None
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        for _ in range(200):  # until every process of the group is gone
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        return time.monotonic() - start


def run(cmd: str, cwd: Path, env: dict | None = None) -> float:
    """Run `cmd` to the end; its wall time. Raises with its output if it fails."""
    start = time.monotonic()
    r = subprocess.run(cmd, shell=True, cwd=cwd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise AssertionError(f"{cmd} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return time.monotonic() - start


def _unclocked(obj):
    if isinstance(obj, dict):
        return {k: _unclocked(v) for k, v in obj.items() if not any(c in k.lower() for c in CLOCK_KEYS)}
    if isinstance(obj, list):
        return [_unclocked(v) for v in obj]
    return obj


def outcome(paths: list[Path]) -> dict[str, str]:
    """path -> what it holds: a folder's content hash, a JSON file without its clock fields, or absent."""
    from ratchet.core.io import sha256_file, sha256_tree

    out = {}
    for p in paths:
        if p.is_dir():
            out[p.name] = sha256_tree(p)
        elif p.suffix == ".json" and p.is_file():
            out[p.name] = json.dumps(_unclocked(json.loads(p.read_text())), sort_keys=True)
        elif p.suffix == ".md" and p.is_file():  # a report's rendering: "scored <UTC time> in <N> s"
            out[p.name] = CLOCK_TEXT.sub("<clock>", p.read_text())
        elif p.is_file():
            out[p.name] = sha256_file(p)
        else:
            out[p.name] = "absent"
    return out


def half_written(paths: list[Path]) -> list[str]:
    """Outputs that exist and look whole but are not: a model folder whose files do not match its lineage,
    one without its lineage (written last), a training history whose metrics or plots do not read back, a JSON
    report that does not parse."""
    from ratchet.core import history
    from ratchet.models import lineage

    bad = []
    for p in paths:
        if p.is_dir() and (p / history.METRICS).is_file():
            try:
                if not history.read_history(p):
                    bad.append(f"{p}: a training history with no steps")
            except (OSError, ValueError, KeyError) as e:
                bad.append(f"{p}: a training history that does not read back ({e})")
        elif p.is_dir():
            if not (p / "lineage.json").is_file():
                bad.append(f"{p}: a folder without lineage.json")
            elif not lineage.intact(p):
                bad.append(f"{p}: files differ from its lineage.json")
        elif p.suffix == ".json" and p.is_file():
            try:
                json.loads(p.read_text())
            except ValueError:
                bad.append(f"{p}: not valid JSON")
    return bad


def leftovers(paths: list[Path]) -> list[str]:
    """Scratch copies beside the outputs (.<name>.tmp-<pid>, .<name>.old-<pid>)."""
    return sorted(q.name for p in paths for q in p.parent.glob(f".{p.name}.*-*"))


def remove(path: Path) -> None:
    import shutil

    shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
