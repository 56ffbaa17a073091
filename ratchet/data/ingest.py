"""Weekly data drops: check the files, copy them into data/drops, track them with DVC, log them.

    ratchet ingest PATH [--week 2026-W48] [--role domain|sft|general]

PATH is a file or a folder. A folder either holds files directly (their role
comes from --role or, for instruction data, from the records) or is laid out
by role as domain/ sft/ general/. Files are .jsonl with {"text"} (domain,
general), {"prompt", "response"} or {"messages": [...]} (sft), or .txt (domain,
general). The drop says where it comes from in SOURCE.yaml, in the folder PATH
names or beside the file it names (ratchet/data/sources.py has its fields).
Every file and the SOURCE.yaml are checked before anything is copied; one bad
file, or a missing or vague SOURCE.yaml, stops the whole ingest. Files whose
bytes are already somewhere under data/drops are skipped, so re-ingesting a
drop changes nothing. The new files land in data/drops/<week>/<role>/ and the
SOURCE.yaml in data/drops/<week>/, `dvc add data/drops/<week>` tracks the week,
and a "data_drop" event with the provenance goes into the audit log. A week
holds one provenance: a later ingest into the same week must bring the same
SOURCE.yaml fields.
"""
from __future__ import annotations

import datetime
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from ratchet.core import audit_log, pipeline, vcs
from ratchet.core.io import clear_leftovers, locked, read_json, sha256_file, write_json
from ratchet.core.params import ROLES
from ratchet.data import sources

# ingest reads files with prepare's own reader, so a file it accepts is one prepare reads the same way
from ratchet.data.records import TEXT_ROLES, RecordFileError, read_records

DROPS = Path("data/drops")
WEEK = re.compile(r"^(\d{4})-W(\d{2})$")


class IngestError(ValueError):
    """An input ratchet ingest refuses; the message names the file, the line and the fix."""


class TrackError(RuntimeError):
    """The files were copied but `dvc add` failed: the drop is in the workspace, not yet tracked."""


@dataclass(frozen=True)
class DropFile:
    source: Path
    role: str
    sha256: str
    records: int


@dataclass(frozen=True)
class Drop:
    """A drop that passed every check: what `apply` copies, tracks and logs."""

    source: Path  # the file or folder it came from
    week: str
    files: tuple[DropFile, ...]
    provenance: Path  # its SOURCE.yaml
    declared: dict  # the checked fields of its SOURCE.yaml

    @property
    def key(self) -> dict:
        """What identifies a drop in the audit log: its week and the sha256 of every file it holds."""
        return {"week": self.week, "files": sorted(f.sha256 for f in self.files)}


def current_week(today: datetime.date | None = None) -> str:
    year, week, _ = (today or datetime.date.today()).isocalendar()
    return f"{year}-W{week:02d}"


def check_week(week: str) -> str:
    """`week` if it is an ISO week that exists (2026-W53 does, 2025-W53 does not), else IngestError."""
    m = WEEK.match(week)
    try:
        if m:
            datetime.date.fromisocalendar(int(m.group(1)), int(m.group(2)), 1)
            return week
    except ValueError:
        pass
    raise IngestError(f"--week {week!r}: not an ISO week; write it as YYYY-Www, e.g. {current_week()}")


# --------------------------------------------------------------------------- #
# Which files, with which role
# --------------------------------------------------------------------------- #


def _visible_files(folder: Path) -> list[Path]:
    # prepare skips dot-files too, so .DS_Store and editor leftovers are never data
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def candidates(path: Path, role: str | None) -> list[tuple[Path, str | None, bool]]:
    """(file, role, whether that role names this very file) for every file PATH names.

    A role folder or --role on a single file names the file's role; --role on a
    flat folder is the role of its raw text, and its instruction files are sft.
    """
    if path.is_file():
        return [(path, role, role is not None)]
    if not path.is_dir():
        raise IngestError(f"{path}: no such file or folder")
    entries = [p for p in _visible_files(path) if p.name != sources.DROP_FILE]
    if not any(p.is_dir() and p.name in ROLES for p in entries):
        for p in entries:
            if p.is_dir():
                raise IngestError(f"{p}: a subfolder that is not a role; name it one of {', '.join(ROLES)}, "
                                  "or ingest its files separately")
        return [(p, role, False) for p in entries]
    if role is not None:
        raise IngestError(f"{path}: laid out by role folders, which already give each file's role; drop --role")
    out = []
    for folder in entries:
        if not (folder.is_dir() and folder.name in ROLES):
            raise IngestError(f"{folder}: next to role folders, everything must be one of "
                              f"{', '.join(r + '/' for r in ROLES)}; move it into one of them")
        for p in _visible_files(folder):
            if p.name == sources.DROP_FILE:
                raise IngestError(f"{p}: a drop's {sources.DROP_FILE} goes in {path}, next to the role folders; "
                                  "move it up")
            if p.is_dir():
                raise IngestError(f"{p}: role folders hold files only; move its files up into {folder}")
            out.append((p, folder.name, True))
    return out


# --------------------------------------------------------------------------- #
# Checking one file
# --------------------------------------------------------------------------- #


def check_file(path: Path) -> tuple[str, int]:
    """("sft" or "text", record count) of a file, or IngestError saying what is wrong and how to fix it.

    Stricter than prepare, which quarantines a bad line: ingest refuses the file.
    """
    kind, records = None, 0
    try:
        for item in read_records(path, None):
            if item.rule == "parse" and item.reason.startswith("not valid UTF-8"):
                raise IngestError(f"{path}: line {item.line}: {item.reason}; re-encode the file as UTF-8, "
                                  "e.g. iconv -f latin1 -t utf-8")
            if item.rule == "parse":
                raise IngestError(f"{path}: line {item.line}: not valid JSON: {item.reason}; fix or delete the "
                                  "line (one JSON object per line)")
            if item.rule is not None:
                raise IngestError(f"{path}: line {item.line}: {item.reason}")
            if kind is not None and item.kind != kind:
                raise IngestError(f"{path}: line {item.line}: a {item.kind} record in a file of {kind} records; "
                                  "put raw text and instruction records in separate files")
            kind = item.kind
            records += 1
    except RecordFileError as e:
        raise IngestError(str(e)) from None
    return kind, records


def role_of(path: Path, kind: str, role: str | None, names_file: bool) -> str:
    """The role a checked file lands in: instruction records are sft, raw text takes the given role."""
    if kind == "sft":
        if names_file and role != "sft":
            raise IngestError(f"{path}: holds instruction records (sft) but its role is {role}; "
                              "drop --role, or move it to an sft/ folder")
        return "sft"
    if role is None:
        raise IngestError(f"{path}: raw text, and its role cannot be told from the records; "
                          "pass --role domain (text to learn) or --role general (text not to forget)")
    if role not in TEXT_ROLES:
        raise IngestError(f"{path}: raw text cannot be sft data; use --role domain or --role general, "
                          'or write records as {"prompt", "response"} or {"messages"}')
    return role


def check_all(files: list[tuple[Path, str | None, bool]]) -> list[DropFile]:
    """Every file checked; all problems are reported together so one run shows everything to fix."""
    checked, problems = [], []
    for path, role, names_file in files:
        try:
            kind, records = check_file(path)
            checked.append(DropFile(path, role_of(path, kind, role, names_file), sha256_file(path), records))
        except IngestError as e:
            problems.append(str(e))
    if not files:
        problems.append("no files to ingest (the folder is empty); point PATH at .jsonl or .txt files")
    if problems:
        raise IngestError("\n".join(problems))
    return checked


def provenance_file(path: Path) -> Path:
    """Where a drop's SOURCE.yaml is: in the folder PATH names, or beside the file it names."""
    return (path if path.is_dir() else path.parent) / sources.DROP_FILE


def check_provenance(path: Path) -> dict:
    """The checked fields of the drop's SOURCE.yaml, or IngestError with the file to write and its keys."""
    where = provenance_file(path)
    if not where.is_file():
        raise IngestError(f"{where}: missing. A drop says where it comes from (the data gate and the datasheets "
                          f"need it); write it:\n{sources.template(where.parent)}\n"
                          "see data/drops/README.md, then ingest again")
    try:
        return sources.read_drop_source(where)
    except sources.ProvenanceError as e:
        raise IngestError(str(e)) from None


def week_conflict(week_dir: Path, declared: dict) -> str | None:
    """Why new files with this provenance cannot join week_dir, or None. A week keeps one SOURCE.yaml, which
    the data gate and the datasheets apply to every file of the week, so files from elsewhere must not join it
    silently."""
    held = week_dir / sources.DROP_FILE
    fix = (f"if the files do come from the same place, give the drop the same {sources.DROP_FILE}; if not, "
           f"describe both sources in {held} (then `dvc add {week_dir}`) and bring that {sources.DROP_FILE}")
    if held.is_file():
        try:
            there = sources.read_drop_source(held)
        except sources.ProvenanceError as e:
            return f"{e}\n{held} was changed by hand since its ingest; fix it, `dvc add {week_dir}`, and ingest again"
        differ = [k for k in sources.FIELDS if there.get(k) != declared.get(k)]
        if differ:
            return (f"week {week_dir.name} already holds files declared by {held}, and this drop's "
                    f"{sources.DROP_FILE} differs in {', '.join(differ)}; a week has one provenance: {fix}")
    elif week_dir.is_dir() and any(p.is_file() for p in week_dir.glob("*/*")):
        return (f"week {week_dir.name} holds files ingested without a {sources.DROP_FILE}; this drop's would "
                f"declare them too: write {held} for the files already there (then `dvc add {week_dir}`), and "
                f"bring the same {sources.DROP_FILE}")
    return None


# --------------------------------------------------------------------------- #
# Duplicates, copying, tracking
# --------------------------------------------------------------------------- #


def existing_hashes(drops: Path) -> dict[str, Path]:
    """sha256 -> file for everything already in data/drops/<week>/<role>/."""
    return {sha256_file(p): p for p in sorted(drops.glob("*/*/*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(drops).parts)}


def untracked_weeks(drops: Path) -> list[str]:
    """Weeks DVC tracks whose files are not in the workspace: their content cannot be compared."""
    return [p.name[:-4] for p in sorted(drops.glob("*.dvc")) if not (drops / p.name[:-4]).is_dir()]


def plan(checked: list[DropFile], known: dict[str, Path]) -> tuple[list[DropFile], list[tuple[DropFile, Path]]]:
    """(files to copy, [(skipped file, where its content already is)])."""
    new, skipped, seen = [], [], dict(known)
    for f in checked:
        if f.sha256 in seen:
            skipped.append((f, seen[f.sha256]))
        else:
            seen[f.sha256] = f.source
            new.append(f)
    return new, skipped


def destinations(week_dir: Path, files: list[DropFile]) -> list[Path]:
    """data/drops/<week>/<role>/<name> per file; a name already taken gets a hash suffix, so nothing is overwritten."""
    out = []
    for f in files:
        dst = week_dir / f.role / f.source.name
        if dst.exists() or dst in out:
            dst = dst.with_name(f"{dst.stem}-{f.sha256[:8]}{dst.suffix}")
        out.append(dst)
    return out


def copy_aside(pairs: list[tuple[Path, Path]]) -> list[tuple[Path, Path]]:
    """Copy every file next to its destination under a hidden scratch name: [(scratch, destination)]. A copy
    that fails (a full disk) removes them all; one killed outright leaves scratch files the next ingest removes
    (clear_staged), none that looks ingested."""
    staged = []
    try:
        for src, dst in pairs:
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
            staged.append((tmp, dst))  # before the copy: a copy cut short (a full disk) is removed too
            shutil.copyfile(src, tmp)
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    return staged


def clear_staged(drops: Path) -> list[str]:
    """Scratch copies under data/drops that a killed ingest left (the caller holds the drops lock)."""
    notes = []
    for week in sorted(p for p in drops.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for p in sorted([*week.glob(".*.tmp-*"), *week.glob("*/.*.tmp-*")]):
            notes.extend(clear_leftovers(p.with_name(p.name[1:p.name.rindex(".tmp-")])))
    return notes


# An ingest past its copy writes down what it is doing before it renames, tracks and logs: a run killed
# between those steps is finished by the next ingest, so no drop is ever in data/drops untracked or unlogged.
PENDING = ".ingest-pending.json"


def _log_drop(root: Path, pending: dict) -> dict:
    """The drop's audit entry: the one already in the log if a killed run got that far, else a new one."""
    log = pipeline.audit_log_path(root)
    for e in reversed(audit_log.entries(log)):
        if e["event"] == "data_drop" and e.get("week") == pending["week"] and e.get("files") == pending["files"]:
            return e
    # a note left by an ingest before drops carried their provenance has none to log
    said = {"provenance": pending["provenance"]} if "provenance" in pending else {}
    return audit_log.append(log, "data_drop", week=pending["week"], source=pending["source"],
                            files=pending["files"], skipped=pending["skipped"], **said)


def _complete(root: Path, pending: dict) -> dict:
    """Rename the staged files in, `dvc add` the week, log it, then drop the note: every step may be redone."""
    for f in pending["files"] + ([pending["provenance"]] if "provenance" in pending else []):
        dst = root / f["path"]
        if "staged" in f and (root / f["staged"]).is_file():  # a week's SOURCE.yaml already there is not staged
            os.replace(root / f["staged"], dst)
        if not dst.is_file() or sha256_file(dst) != f["sha256"]:
            raise TrackError(f"{DROPS / PENDING}: {f['path']} is missing or changed since it was copied; restore "
                             f"it, or remove {DROPS / PENDING} and the week's files and ingest the drop again")
    dvc_add(root, DROPS / pending["week"])
    unstaged = {"files": [{k: v for k, v in f.items() if k != "staged"} for f in pending["files"]]}
    if "provenance" in pending:
        unstaged["provenance"] = {k: v for k, v in pending["provenance"].items() if k != "staged"}
    entry = _log_drop(root, {**pending, **unstaged})
    (root / DROPS / PENDING).unlink()
    return entry


def finish_pending(root: Path) -> list[str]:
    """Finish an ingest a kill or crash cut short after its copy (the caller holds the drops lock)."""
    note = root / DROPS / PENDING
    if not note.is_file():
        return []
    pending = read_json(note)
    entry = _complete(root, pending)
    return [f"finished the ingest of week {pending['week']} ({pending['source']}) that a crash had cut short: "
            f"{len(pending['files'])} file(s) tracked, audit entry {entry['seq']}"]


def dvc_add(root: Path, target: Path) -> None:
    try:
        vcs.dvc(root, "add", target.as_posix())
    except vcs.VcsError as e:
        raise TrackError(f"dvc add {target} failed; the files are copied but not tracked. Fix the cause and "
                         f"run `dvc add {target}` yourself:\n{e}") from None


# --------------------------------------------------------------------------- #
# The command
# --------------------------------------------------------------------------- #


def _shown(path: Path, root: Path) -> Path:
    return path.relative_to(root) if path.is_absolute() and path.is_relative_to(root) else path


def check(path: Path, week: str, role: str | None) -> Drop:
    """The drop at `path` as week `week`, every file read and hashed once, and its SOURCE.yaml; copies nothing.

    Raises IngestError naming every bad file, line, key and fix together.
    """
    check_week(week)
    files, problems = candidates(path, role), []
    try:
        declared = check_provenance(path)
    except IngestError as e:
        problems.append(str(e))
    try:
        checked = check_all(files)
    except IngestError as e:
        problems.append(str(e))
    if problems:
        raise IngestError("\n".join(problems))
    return Drop(path, week, tuple(checked), provenance_file(path), declared)


def apply(drop: Drop, cwd: Path) -> list[str]:
    """Copy, `dvc add` and log a checked drop; returns the lines to print. Raises TrackError if `dvc add` fails
    after the copy."""
    try:
        root = vcs.repo_root(cwd)
    except vcs.VcsError as e:
        raise IngestError(str(e)) from None
    path, week, log = drop.source, drop.week, pipeline.audit_log_path(root).relative_to(root)
    drops = root / DROPS
    with locked(drops):  # two ingests at once take turns: neither copies, tracks or logs over the other
        out = [f"ingest {path} as week {week}"]
        out += [f"  {line}" for line in finish_pending(root) + clear_staged(drops)]
        new, skipped = plan(list(drop.files), existing_hashes(drops))
        out += [f"  skipped {f.source}: same content as {_shown(where, root)}" for f, where in skipped]
        out += [f"  note: {DROPS}/{w} is tracked but not in the workspace (dvc pull it); its files were not "
                "compared for duplicates" for w in untracked_weeks(drops)]
        if not new:
            return out + ["every file is already in data/drops: nothing to do"]

        conflict = week_conflict(drops / week, drop.declared)
        if conflict:
            raise IngestError(conflict)
        held = drops / week / sources.DROP_FILE
        # the week's SOURCE.yaml is copied once; a later ingest into the week brought the same fields
        bring = not held.is_file()
        provenance = {"path": held.relative_to(root).as_posix(),
                      "sha256": sha256_file(drop.provenance if bring else held), **drop.declared}
        targets = destinations(drops / week, new)
        staged = copy_aside([(f.source, dst) for f, dst in zip(new, targets)]
                            + ([(drop.provenance, held)] if bring else []))
        if bring:
            provenance["staged"] = staged.pop()[0].relative_to(root).as_posix()
        pending = {"week": week, "source": str(path),
                   "files": [{"path": dst.relative_to(root).as_posix(), "role": f.role, "sha256": f.sha256,
                              "records": f.records, "staged": tmp.relative_to(root).as_posix()}
                             for f, (tmp, dst) in zip(new, staged)],
                   "skipped": [{"source": str(f.source), "sha256": f.sha256} for f, _ in skipped],
                   "provenance": provenance}
        try:
            write_json(drops / PENDING, pending)
        except BaseException:
            for tmp in [t for t, _ in staged] + ([root / provenance["staged"]] if bring else []):
                tmp.unlink(missing_ok=True)
            raise
        entry = _complete(root, pending)
        files = entry["files"]

    out += [f"  added {e['path']}  role={e['role']}  records={e['records']}" for e in files]
    said = entry.get("provenance", {})
    if said:
        out.append(f"  provenance {said['path']}: license={said['license']}  origin={said['origin']}")
    roles = sorted({e["role"] for e in files})
    out += [f"week {week}: {len(files)} file(s), {sum(e['records'] for e in files)} records, "
            f"roles {', '.join(roles)}; tracked with `dvc add {DROPS / week}`",
            f"audit: {log} entry {entry['seq']} (data_drop)",
            "commit it:",
            f"  git add {DROPS / week}.dvc {DROPS}/.gitignore {log}",
            f'  git commit -m "Data drop {week}"',
            "  dvc push"]
    return out


def ingest(path: Path, week: str, role: str | None, cwd: Path) -> list[str]:
    """`ratchet ingest`: check the drop (IngestError before anything is copied), then apply it."""
    return apply(check(path, week, role), cwd)
