"""The pipeline's wiring: the one reader of dvc.yaml and dvc.lock.

dvc.yaml is where every path is wired: each stage runs one recipe through the
launcher (`python -m stages RECIPE --flag VALUE ...`) and declares what it reads
(deps) and writes (outs, metrics, plots). dvc.lock records what the last run
read and wrote, with hashes. Promote, `ratchet lineage`, `ratchet verify-repro`,
`ratchet audit verify`, the fault harness and the consistency tests all ask
this module, so a path is changed in dvc.yaml alone.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

import yaml

LAUNCHER = ("python", "-m", "stages")
DEFAULT_AUDIT_LOG = "reports/audit/log.jsonl"  # where an audit log lives when no dvc.yaml wires one


class WiringError(ValueError):
    """dvc.yaml or dvc.lock does not say what ratchet needs: the message names the file, the stage and the fix."""


def parse_cmd(cmd: str, where: str = "dvc.yaml") -> tuple[str, dict[str, list[str]]]:
    """(recipe, {flag: [values]}) of a `python -m stages RECIPE --flag VALUE ...` command."""
    tokens = shlex.split(cmd)
    if tuple(tokens[:3]) != LAUNCHER or len(tokens) < 4:
        raise WiringError(f"{where}: cmd {cmd[:60]!r}... does not run a recipe through the launcher; "
                          f"write it as `{' '.join(LAUNCHER)} RECIPE --flag VALUE ...`")
    args, flag = {}, None
    for t in tokens[4:]:
        if t.startswith("--"):
            flag = t
            args.setdefault(flag, [])
        elif flag:
            args[flag].append(t)
        else:
            raise WiringError(f"{where}: cmd of recipe {tokens[3]} has a value {t!r} before any --flag")
    return tokens[3], args


def _paths(entries) -> list[str]:
    out = []
    for e in entries or []:
        out += list(e) if isinstance(e, dict) else [e]
    return out


@dataclass(frozen=True)
class Stage:
    """One stage of dvc.yaml."""

    name: str
    cmd: str
    recipe: str  # stages/<recipe>.py
    args: dict[str, list[str]]
    deps: tuple[str, ...]
    outs: tuple[str, ...]  # outs, metrics and plots: every path the stage writes
    params: tuple = ()
    raw: dict = field(default_factory=dict, compare=False, repr=False)

    def arg(self, flag: str) -> str | None:
        """The first value of `flag`, or None when the command has no such flag."""
        values = self.args.get(flag)
        return values[0] if values else None

    @property
    def argv(self) -> list[str]:
        """The command as a process's argv: what `dvc repro` runs (tests launch stages with it)."""
        return shlex.split(self.cmd)


def stages(root: Path) -> dict[str, Stage]:
    """The stages of `root`/dvc.yaml, in file order."""
    path = Path(root) / "dvc.yaml"
    if not path.is_file():
        raise WiringError(f"{path}: no dvc.yaml; run ratchet from the root of a ratchet repository")
    out = {}
    for name, s in (yaml.safe_load(path.read_text()) or {}).get("stages", {}).items():
        recipe, args = parse_cmd(s["cmd"], f"{path} stage {name}")
        out[name] = Stage(name, s["cmd"], recipe, args, tuple(_paths(s.get("deps"))),
                          tuple(_paths(s.get("outs")) + _paths(s.get("metrics")) + _paths(s.get("plots"))),
                          tuple(s.get("params") or ()), s)
    return out


def of_recipe(root: Path, recipe: str) -> list[Stage]:
    """Every stage that runs `recipe` (the gate recipe runs once per model)."""
    return [s for s in stages(root).values() if s.recipe == recipe]


def one(root: Path, recipe: str) -> Stage:
    found = of_recipe(root, recipe)
    if len(found) != 1:
        raise WiringError(f"{Path(root) / 'dvc.yaml'}: {len(found)} stages run recipe {recipe}, expected one")
    return found[0]


def audit_log_path(root: Path) -> Path:
    """The audit log the stages append to: the --audit-log every stage that writes one is given (one path)."""
    root = Path(root)
    if not (root / "dvc.yaml").is_file():
        return root / DEFAULT_AUDIT_LOG
    found = {v for s in stages(root).values() for v in s.args.get("--audit-log", [])}
    if len(found) > 1:
        raise WiringError(f"{root / 'dvc.yaml'}: stages write to {len(found)} audit logs ({', '.join(sorted(found))}); "
                          "give every --audit-log the same path")
    return root / (found.pop() if found else DEFAULT_AUDIT_LOG)


def artifact_at(root: Path, path: Path) -> str:
    """The name dvc.yaml's `artifacts:` gives the model at `path` (the champion): its name in the GTO registry."""
    root = Path(root)
    rel = Path(path).relative_to(root).as_posix() if Path(path).is_absolute() else Path(path).as_posix()
    declared = (yaml.safe_load((root / "dvc.yaml").read_text()) or {}).get("artifacts") or {}
    found = [name for name, a in declared.items() if str(a.get("path", "")).rstrip("/") == rel]
    if len(found) != 1:
        raise WiringError(f"{root / 'dvc.yaml'}: {len(found)} entries of `artifacts:` have path {rel}, expected one; "
                          f"declare it as `artifacts: {{champion: {{path: {rel}, type: model}}}}`")
    return found[0]


@dataclass(frozen=True)
class Locked:
    """One stage of dvc.lock: the paths it read and wrote, each with the hash DVC recorded."""

    name: str
    deps: dict[str, str | None]  # path -> md5
    outs: dict[str, str | None]
    raw: dict = field(default_factory=dict, compare=False, repr=False)


def lock(root: Path) -> dict[str, Locked]:
    """dvc.lock's stages (empty before the first run)."""
    path = Path(root) / "dvc.lock"
    if not path.is_file():
        return {}
    out = {}
    for name, s in (yaml.safe_load(path.read_text()) or {}).get("stages", {}).items():
        out[name] = Locked(name, {d["path"]: d.get("md5") for d in s.get("deps", [])},
                           {o["path"]: o.get("md5") for o in s.get("outs", [])}, s)
    return out


def producer(locked: dict[str, Locked], path: str) -> tuple[str | None, str | None]:
    """(stage, out) for the dvc.lock out that is `path` or a folder holding it."""
    for name, s in locked.items():
        for out in s.outs:
            if path == out or path.startswith(out.rstrip("/") + "/"):
                return name, out
    return None, None
