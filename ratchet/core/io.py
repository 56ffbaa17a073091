"""Atomic writes, JSONL and content hashes.

Every artifact is written aside and renamed into place, so a crash mid-stage
never leaves a half-written folder or file that looks whole.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Iterable, Iterator


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _remove(path: Path) -> None:
    shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink(missing_ok=True)


def clear_leftovers(out: str | Path) -> list[str]:
    """Put right what a writer of `out` killed mid-write (SIGKILL, power loss) left beside it: its scratch
    copy `.<name>.tmp-<pid>` is removed; a previous `out` it had moved aside (`.<name>.old-<pid>`) to rename
    the new one in is put back if `out` is missing, removed otherwise. Only leftovers of processes that are no
    longer running are touched. Returns what was done, one line each."""
    out = Path(out)
    notes = []
    if not out.parent.is_dir():
        return notes
    for p in sorted(out.parent.glob(f".{out.name}.*-*"), key=lambda p: ".old-" not in p.name):  # olds first
        kind, _, pid = p.name[len(out.name) + 2:].rpartition("-")
        if kind not in ("tmp", "old") or not pid.isdigit() or _alive(int(pid)):
            continue
        if kind == "old" and not out.exists() and not out.is_symlink():
            os.replace(p, out)
            notes.append(f"{out}: restored the previous version a killed writer had moved aside")
        else:
            _remove(p)
            notes.append(f"{out}: removed {p.name}, left by a killed writer")
    return notes


@contextlib.contextmanager
def atomic_dir(out: str | Path) -> Iterator[Path]:
    """Yield a scratch folder next to `out`; on success it replaces `out`.

    The swap is two renames (the previous `out` aside, the new one in), then the previous one is deleted: a
    kill at any moment leaves `out` either the previous version, the new one, or missing, never half-deleted.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    clear_leftovers(out)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists() or out.is_symlink():
        os.replace(out, old)
    os.replace(tmp, out)
    if old.exists() or old.is_symlink():
        _remove(old)


@contextlib.contextmanager
def locked(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (a file, or a folder: a missing one is made) while the block runs, so
    writers in other processes take turns. The lock is the kernel's (flock): it ends with the process, so a
    writer killed mid-block never leaves a stale lock behind."""
    import fcntl

    path = Path(path)
    if not path.exists():
        path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clear_leftovers(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_json(path: str | Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def read_json(path: str | Path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def read_jsonl(path: str | Path) -> Iterator[dict]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> int:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clear_leftovers(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    n = 0
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
            n += 1
    os.replace(tmp, path)
    return n


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_tree(path: str | Path, exclude: tuple[str, ...] = ("lineage.json",)) -> str:
    """Content hash of a file, or of a folder: relative paths and file hashes, sorted."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = f.relative_to(path).as_posix()
        if rel in exclude or any(part.startswith(".") for part in f.relative_to(path).parts):
            continue
        h.update(f"{rel}\0{sha256_file(f)}\n".encode())
    return h.hexdigest()


def dir_size(path: str | Path) -> int:
    path = Path(path)
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def one_line(text: str, limit: int = 300) -> str:
    """`text` on one line, whitespace collapsed, cut at `limit` characters: a model's answer in a table."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + " ..."
