"""`ratchet update`: the weekly cycle, run by a scheduler.

    ratchet update --drop PATH [--week 2026-W48] [--role domain|sft|general] [--params params.yaml]

1. takes a lock: a second update while one runs exits 4 and says who holds it;
2. finishes whatever a killed update left (a champion swapped in but not committed);
3. checks the drop (bad input exits 2 with nothing copied) and ingests it;
4. `dvc repro`: retrains from the current champion, every gate on the way;
5. promotes the candidate or refuses it (`ratchet promote`);
6. commits the drop, dvc.lock, the reports, the audit log and the champion, and
   tags the commit: a promotion as GTO version champion@v<n>.0.0 in stage prod
   (ratchet.eval.promote), a refusal as <tag_prefix>-refused-<n>;
7. `dvc push` when a default remote is configured.

The same drop again does no new work and ends as it ended the first time. A
refusal is final for its drop: a gate's `fail`, or a stage's check that the
same drop would fail again (the PII policy or its cap, int8 parity, a loss that
is not finite) is logged and committed as a refusal with its reason. A hold (a
gate whose evaluation set could not decide a rule, nothing failing) is final
for the drop too, on the same evaluation sets: it is logged and committed with
each undecided rule and about how many more documents would resolve it. Only
a crash or a kill is retried by the next run.
Exit codes: 0 promoted, 3 refused, 5 held, 2 bad input, 4 another update is
running, 1 any other failure (the next run finishes the job).
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ratchet.core import params, runtime, vcs
from ratchet.core.io import read_json
from ratchet.data import ingest
from ratchet.eval import promote
from ratchet.reporting import report
from ratchet.reporting.card import model_card

PROMOTED, FAILURE, BAD_INPUT, REFUSED, BUSY, HELD = 0, 1, 2, 3, 4, 5
LOCK = ".dvc/tmp/ratchet-update.lock"
REFUSALS = ".dvc/tmp/ratchet-refusals.jsonl"


class Busy(RuntimeError):
    pass


@contextmanager
def update_lock(root: Path) -> Iterator[None]:
    """An exclusive flock, released by the kernel however the process ends (kill -9 included)."""
    path = root / LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            raise Busy(f"another ratchet update is running ({f.read().strip() or 'holder unknown'}); "
                       f"this one did nothing. Wait for it to finish, then run again") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} since {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}")
        f.flush()
        yield


def previous_outcome(log: Path, drop: dict) -> dict | None:
    return next((e for e in reversed(promote.outcomes(log)) if e.get("drop") == drop), None)


def finish_killed_promotion(root: Path, lay: promote.Layout, cfg: params.PromoteConfig) -> list[str]:
    """A champion a killed run swapped in but did not log, commit or tag: finish that promotion now.

    The swap happens only after every check passed, so the job is finished as it
    was decided: without checking again, and without retraining on the same drop.
    """
    notes = promote.recover(lay.champion)
    record = promote.champ.record(lay.champion)
    if record is None:
        return notes
    entry = promote.log_promotion(lay.audit_log, lay.champion, record)
    outcome = promote.Outcome(PROMOTED, [], entry, promote.tag_name(cfg, lay, entry))
    message = f"Weekly update {record['week']}: promoted {outcome.tag} (finished after an interrupted run)"
    if vcs.git(root, "tag", "--list", outcome.tag):
        promote.tag(root, outcome, message)  # committed and registered: at most the stage assignment was cut off
        return notes
    promote.track(root, lay.champion)
    promote.commit(root, outcome, message, promote.COMMITTED)
    return notes + [f"finished an interrupted promotion: champion {record['cycle']}, tagged {outcome.tag}"]


def say_now(message: str) -> None:
    print(message, flush=True)  # before dvc's own lines, which go straight to the same log


def update(drop_path: Path, week: str, role: str | None, params_path: str, root: Path, say=say_now) -> int:
    cfg = params.load(root / params_path, "promote")[0]
    lay = promote.layout(root)
    for note in finish_killed_promotion(root, lay, cfg):
        say(note)
    try:
        checked = ingest.check(drop_path, week, role)
    except ingest.IngestError as e:
        say(f"ratchet update: bad input, nothing was ingested.\n{e}")
        return BAD_INPUT
    drop = checked.key
    new, _ = ingest.plan(list(checked.files), ingest.existing_hashes(root / ingest.DROPS))
    before = previous_outcome(lay.audit_log, drop)
    if before is not None and not new:
        code = promote.EVENTS[before["event"]]
        say(f"this drop was processed before: {before['event']} at audit entry {before['seq']} "
            f"({before['time_utc']}); nothing to do")
        for reason in before.get("reasons", []):
            say(f"  - {reason}")
        return code

    try:
        for line in ingest.apply(checked, root):
            say(line)
    except ingest.IngestError as e:  # what only the drops folder can tell: the week's provenance, under its lock
        say(f"ratchet update: bad input, nothing was ingested.\n{e}")
        return BAD_INPUT
    say("dvc repro: retraining from the current champion")
    started = time.time()
    rc, refusals = repro(root)
    if rc != 0 and not refusals and not gate_failed_since(lay, started):
        say(f"ratchet update: dvc repro failed ({rc}) outside any gate; see the log above. Nothing was committed "
            "or promoted; fix the cause and run the same update again to finish it")
        return FAILURE
    outcome = promote.decide(root, cfg, model_card, week=week, drop=drop, refusals=refusals)
    for line in outcome.lines:
        say(line)
    say(f"run report: {report.write_run_report(root)}")
    what = ("promoted " + outcome.tag if outcome.code == PROMOTED else
            f"{'held' if outcome.code == HELD else 'refused'}: " + "; ".join(outcome.entry["reasons"]))
    sha = promote.commit(root, outcome, f"Weekly update {week}: {what}", promote.COMMITTED)
    say(f"committed {sha[:12]}, tagged {outcome.tag}" + (f" (stage {promote.STAGE})" if outcome.code == PROMOTED else ""))
    remote = vcs.default_remote(root)
    if remote:
        try:
            vcs.dvc(root, "push")
            say(f"dvc push to remote {remote!r}: done")
        except vcs.VcsError as e:
            say(f"ratchet update: the outcome is committed, but dvc push failed; run `dvc push`:\n{e}")
            return FAILURE
    return outcome.code


def repro(root: Path) -> tuple[int, list[str]]:
    """`dvc repro`, and the failures its stages said would repeat on the same drop (runtime.Refused: the PII
    policy, int8 parity, a loss that is not finite), each as `stage: reason`."""
    path = root / REFUSALS
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    os.environ[runtime.REFUSALS_ENV] = str(path)
    try:
        rc = vcs.dvc(root, "repro", check=False, stream=True).returncode
    finally:
        del os.environ[runtime.REFUSALS_ENV]
    said = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.is_file() else []
    return rc, list(dict.fromkeys(f"stage {r['stage']}: {r['reason']}" for r in said))


def gate_failed_since(lay: promote.Layout, started: float) -> bool:
    """Whether the data gate or a model gate wrote a `fail` or `hold` verdict during this repro."""
    for path in [lay.data_gate, *lay.verdicts.values()]:
        if path.is_file() and path.stat().st_mtime >= started - 1 and read_json(path).get("verdict") in (
                "fail", "hold"):
            return True
    return False


def run(drop: str, week: str | None, role: str | None, params_path: str, cwd: Path, say=say_now) -> int:
    """The command: the lock around `update`, and every error turned into its exit code."""
    try:
        root = vcs.repo_root(cwd)
        week = week or ingest.current_week()
        with update_lock(root):
            return update(Path(drop).resolve(), week, role, params_path, root, say)
    except Busy as e:
        say(f"ratchet update: {e}")
        return BUSY
    except (vcs.VcsError, ingest.TrackError, params.ParamsError) as e:
        say(f"ratchet update: {e}")
        return FAILURE


HELP = "the weekly cycle: ingest, dvc repro, promote or refuse, commit, push"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--drop", required=True, help="the new data drop: a file or folder, as for ratchet ingest")
    p.add_argument("--week", help="ISO week of the drop, YYYY-Www (default: this week)")
    p.add_argument("--role", choices=params.ROLES, help="role of raw-text files, as for ratchet ingest")
    p.add_argument("--params", default="params.yaml")


def execute(args: argparse.Namespace) -> int:
    return run(args.drop, args.week, args.role, args.params, Path.cwd())
