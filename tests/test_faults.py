"""Kill -9 at random moments: a writer, the audit log, ingest and the stages leave nothing half-written, and a
rerun ends as an undisturbed run does. The long version on the real model: benchmarks/experiments/bench_faults.py."""
from __future__ import annotations

import json
import os
import random
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ratchet.core import audit_log
from ratchet.core.io import atomic_dir

from . import faults
from .conftest import ROOT, at_work, copy_repo, env, stage_cmd, write_drop_source

FILES = 400


def py(code: str) -> str:
    return f"{shlex.quote(sys.executable)} -c {shlex.quote(code)}"


WRITER = """
import itertools, os, sys
from pathlib import Path
from ratchet.core.io import atomic_dir
versions = [sorted(Path(v).iterdir()) for v in sys.argv[2:]]
for v in itertools.count():
    with atomic_dir(sys.argv[1]) as tmp:
        for f in versions[v % len(versions)]:
            os.link(f, tmp / f.name)  # as quick as deleting: a kill lands in the swap as often as in the write
"""


def test_a_folder_writer_killed_at_any_moment_leaves_the_old_folder_or_the_new_one(tmp_path):
    """A process rewrites a folder over and over (atomic_dir), in turn as two versions of 400 files, and is
    killed at 30 random moments: the folder is always missing or one whole version, never a mix or a part;
    the next write clears what the killed ones left."""
    out, rng = tmp_path / "model", random.Random(0)
    for v in "ab":
        (tmp_path / v).mkdir()
        for i in range(FILES):
            (tmp_path / v / f"part-{i:03d}").write_text(v)
    cmd = py(WRITER) + f" {out} {tmp_path / 'a'} {tmp_path / 'b'}"
    seen = {"whole": 0, "missing": 0}
    for _ in range(30):
        assert faults.run_killed(cmd, ROOT, rng.uniform(0.2, 0.6), env()) is not None
        if out.exists():
            parts = sorted(p.name for p in out.iterdir())
            assert parts == [f"part-{i:03d}" for i in range(FILES)], f"a partial folder looks whole: {len(parts)}"
            assert len({p.read_text() for p in out.iterdir()}) == 1, "a mix of versions"
            seen["whole"] += 1
        else:
            seen["missing"] += 1
    with atomic_dir(out) as tmp:
        (tmp / "done").write_text("ok")
    assert [p.name for p in out.iterdir()] == ["done"]
    assert faults.leftovers([out]) == [], "the next write removes what killed writers left"
    assert seen["whole"] > 0


APPENDER = """
import itertools, sys
from ratchet.core import audit_log
for n in itertools.count():
    audit_log.append(sys.argv[1], "tick", run=int(sys.argv[2]), n=n, pad="x" * 2000)
    print(n, flush=True)
"""


def test_audit_appends_killed_at_any_moment_lose_no_acknowledged_entry_and_the_chain_verifies(tmp_path):
    """Appenders killed at 10 random moments: every entry an append returned for is there, once, in order;
    whatever the kill cut short is gone by the next append, and the chain verifies."""
    log, rng, acknowledged = tmp_path / "log.jsonl", random.Random(1), []
    for r in range(10):
        proc = subprocess.Popen(py(APPENDER) + f" {log} {r}", shell=True, cwd=ROOT, env=env(), text=True,
                                stdout=subprocess.PIPE, start_new_session=True)
        time.sleep(rng.uniform(0.3, 1.0))
        os.killpg(proc.pid, signal.SIGKILL)
        acknowledged.append(len(proc.communicate()[0].split()))
        assert audit_log.verify(log) in ([], [f"{log}: the last line is unfinished: an append cut short by a crash "
                                              "(the next append removes it) or the file was cut"])
    audit_log.append(log, "after")
    assert audit_log.verify(log) == []
    ticks = [(e["run"], e["n"]) for e in audit_log.entries(log) if e["event"] == "tick"]
    assert [r for r, _ in ticks] == sorted(r for r, _ in ticks), "appenders' entries interleaved"
    for r, acked in enumerate(acknowledged):
        ns = [n for run, n in ticks if run == r]
        # entries 0..k, each once; all acknowledged ones, plus at most the one written as the kill came
        assert ns == list(range(len(ns))) and acked <= len(ns) <= acked + 1, (r, acked, ns[-3:])
    assert sum(acknowledged) > 0


# --------------------------------------------------------------------------- #
# Stages and ingest, killed and rerun (tiny model)
# --------------------------------------------------------------------------- #


def stage(name: str, root, params, at: dict) -> str:
    """dvc.yaml's command of stage `name` as a shell command, laid out under `root` (conftest.stage_cmd)."""
    return " ".join(shlex.quote(str(a)) for a in stage_cmd(name, root, params, at))


def killed_then_rerun(cmd: str, outs: list[Path], moments: list[float], cwd: Path) -> list[str]:
    """Kill `cmd` at each moment (seconds from its start), checking after each kill that no output is
    half-written; then run it to the end. Returns what the kills hit (killed at, or 'ended first')."""
    hits = []
    for moment in moments:
        at = faults.run_killed(cmd, cwd, moment, env())
        hits.append("ended first" if at is None else f"killed at {at:.1f}s")
        assert faults.half_written(outs) == [], f"after a kill at {moment:.1f}s"
    faults.run(cmd, cwd, env())
    assert faults.half_written(outs) == [] and faults.leftovers(outs) == []
    return hits


@pytest.mark.integration
def test_training_export_and_gate_killed_at_random_moments_end_as_an_undisturbed_run(
        work, tiny_base, dapt_model, student, prepared, tmp_path):
    """dapt, quantize (export + int8 + parity) and a gate (the champion's, scoring the base in its stead), each
    SIGKILLed at random moments of an undisturbed run's duration and rerun: weights, ONNX file and verdict
    equal those of the undisturbed run."""
    from ratchet.models.train import checkpoint_dir

    p, rng = work / "params.yaml", random.Random(2)
    at = {**at_work(work, base=tiny_base, student=student), "data/prepared": prepared, "data/eval": ROOT / "data/eval",
          "models/dapt": tmp_path / "dapt", "reports/train/dapt": tmp_path / "dapt-history",
          "models/onnx": tmp_path / "onnx", "reports/quantize.json": tmp_path / "quantize.json",
          "reports/gates/champion.json": tmp_path / "gate.json", "reports/metrics/champion.json": tmp_path / "metrics.json",
          "reports/audit/log.jsonl": tmp_path / "log.jsonl"}
    runs = {
        "dapt": (stage("dapt", tmp_path, p, at), [tmp_path / "dapt", tmp_path / "dapt-history"]),
        "quantize": (stage("quantize", tmp_path, p, at), [tmp_path / "onnx", tmp_path / "quantize.json"]),
        "gate": (stage("gate_champion", tmp_path, p, at),
                 [tmp_path / "gate.json", tmp_path / "gate.md", tmp_path / "metrics.json"]),
    }
    for name, (cmd, outs) in runs.items():
        seconds = faults.run(cmd, ROOT, env())
        undisturbed = faults.outcome(outs)
        for o in outs:
            faults.remove(o)
        hits = killed_then_rerun(cmd, outs, [rng.uniform(0.3, 0.95) * seconds for _ in range(3)], ROOT)
        assert faults.outcome(outs) == undisturbed, f"{name} after kills ({hits})"
    assert not checkpoint_dir(tmp_path / "dapt").exists()
    assert audit_log.verify(tmp_path / "log.jsonl") == []


@pytest.mark.integration
def test_ingests_killed_at_random_moments_leave_the_drop_tracked_and_logged_once(tmp_path):
    """`ratchet ingest` killed at 6 random moments (checking, copying, dvc add, logging), then rerun: the week's
    files, its .dvc file and one audit entry, as an undisturbed ingest leaves them; no scratch copy."""
    drop = tmp_path / "drop"
    drop.mkdir()
    for i in range(4):
        (drop / f"notes-{i}.jsonl").write_text("".join(
            json.dumps({"text": f"Domain note {i}.{j}: a record long enough to keep " + "z" * 200}) + "\n"
            for j in range(5000)))
    write_drop_source(drop)
    cmd = f"{shlex.quote(sys.executable)} -m ratchet.cli ingest {drop} --role domain --week 2026-W48"
    reference = copy_repo(tmp_path / "reference")
    seconds = faults.run(cmd, reference, env())
    rng, pending = random.Random(3), 0
    for k in range(6):
        repo = copy_repo(tmp_path / f"repo{k}")
        at = faults.run_killed(cmd, repo, rng.uniform(0.1, 1.0) * seconds, env())
        pending += (repo / "data/drops/.ingest-pending.json").exists()  # killed past the copy
        faults.run(cmd, repo, env())
        for name in ("data/drops/2026-W48.dvc", "data/drops/2026-W48"):
            assert faults.outcome([repo / name]) == faults.outcome([reference / name]), f"{name}, kill at {at}"
        log = audit_log.entries(repo / "reports/audit/log.jsonl")
        assert [e["event"] for e in log] == ["data_drop"] and audit_log.verify(repo / "reports/audit/log.jsonl") == []
        assert not list((repo / "data/drops").rglob(".*.tmp-*")) and not (repo / "data/drops/.ingest-pending.json").exists()
    print(f"ingest: {seconds:.1f}s undisturbed; {pending} of 6 kills came after the copy")
