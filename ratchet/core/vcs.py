"""git and DVC, as the ratchet commands drive them: the interpreter's own dvc, errors that name the command."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


class VcsError(RuntimeError):
    """A git or dvc command failed; the message holds the command and what it printed."""


def repo_root(start: Path) -> Path:
    """The nearest folder at or above `start` that holds .dvc/: where ratchet's commands run."""
    start = start.resolve()
    for folder in (start, *start.parents):
        if (folder / ".dvc").is_dir():
            return folder
    raise VcsError(f"{start}: not inside a DVC repository (no .dvc folder here or above); "
                   "run ratchet from your ratchet clone")


def _env() -> dict:
    """This environment with this interpreter's bin first on PATH: the `python` of dvc.yaml's commands is ours,
    even when a scheduler runs .venv/bin/ratchet without activating the virtualenv."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def _run(cmd: list[str], root: Path, check: bool, stream: bool = False) -> subprocess.CompletedProcess:
    if stream:  # a long command (dvc repro): its lines go to our log as they come
        r = subprocess.run(cmd, cwd=root, env=_env(), text=True)
    else:
        r = subprocess.run(cmd, cwd=root, env=_env(), capture_output=True, text=True)
    if check and r.returncode != 0:
        shown = " ".join(cmd[2:] if cmd[:2] == [sys.executable, "-m"] else cmd)
        raise VcsError(f"`{shown}` failed ({r.returncode}) in {root}:\n{(r.stdout or '')}{(r.stderr or '')}".rstrip())
    return r


def git(root: Path, *args: str, check: bool = True) -> str:
    return _run(["git", *args], root, check).stdout.strip()


def dvc(root: Path, *args: str, check: bool = True, stream: bool = False) -> subprocess.CompletedProcess:
    """`dvc ARGS` with the dvc of this interpreter, so the venv's pinned version does the work."""
    return _run([sys.executable, "-m", "dvc", *args], root, check, stream)


def tag_messages(folder: Path) -> dict[str, str]:
    """{tag: its message} of the git repository holding `folder` ({} outside git)."""
    r = _run(["git", "for-each-ref", "refs/tags", "--format=%(refname:short)%09%(contents)%00"], folder, False)
    if r.returncode != 0:
        return {}
    pairs = (item.strip("\n").split("\t", 1) for item in r.stdout.split("\0") if item.strip())
    return {p[0]: p[1] if len(p) > 1 else "" for p in pairs}


def stale_stages(root: Path) -> dict:
    """{stage: what changed} for every pipeline stage `dvc status` finds out of date with dvc.lock."""
    out = dvc(root, "status", "--json").stdout.strip()
    return {k: v for k, v in (json.loads(out) if out else {}).items() if not k.endswith(".dvc")}


def default_remote(root: Path) -> str | None:
    r = dvc(root, "remote", "default", check=False)
    name = r.stdout.strip()
    return name if r.returncode == 0 and name else None


def register(root: Path, artifact: str, version: str, stage: str, message: str) -> list[str]:
    """GTO: HEAD becomes `version` of `artifact` (the annotated tag `artifact@version`, holding `message`), and
    that version is assigned `stage` (the tag `artifact#stage#n`). A step already done is skipped, so a run killed
    between the two is finished by the next one. Returns the tags it created."""
    from gto import api
    from gto.exceptions import GTOException

    made = []
    try:
        if not git(root, "tag", "--list", f"{artifact}@{version}"):
            made.append(api.register(str(root), artifact, "HEAD", version=version, message=message).tag)
        in_stage = api.find_versions_in_stage(str(root), artifact, stage, versions_per_stage=-1) or []
        if version not in {v.version for v in in_stage}:
            made.append(api.assign(str(root), artifact, stage, version=version,
                                   message=f"{artifact} {version} is the {stage} model").tag)
    except GTOException as e:
        raise VcsError(f"gto could not register {artifact} {version} as {stage} in {root}: {e}") from e
    return made
