"""Provenance of every input file: a drop's own SOURCE.yaml, or an entry of data/sources.yaml.

A weekly drop carries its provenance in SOURCE.yaml, in the folder handed to
`ratchet ingest` (or beside the single file handed to it): what the files are,
where they came from, their license, what personal data they may hold, and
optionally when they were collected and `notes` on known risks and skews.
Ingest refuses a drop without a valid one and stores it as
data/drops/<week>/SOURCE.yaml, tracked by DVC with the data, where the data
gate and the datasheets read it.

data/sources.yaml declares everything else (the seed, files put into
data/drops by hand): each entry names a glob (`path`, matched against the end
of an input path) with the same fields. A drop file matched by both takes its
drop's SOURCE.yaml: it travels with the bytes and was checked when they came
in, while a sources.yaml glob may have been written for other weeks; the data
gate lists such files as `shadowed` so a stale entry can be removed.
"""
from __future__ import annotations

import datetime
from pathlib import Path, PurePath

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ratchet.core.io import sha256_file

FIELDS = ("what", "origin", "license", "collected", "personal_data", "notes")
DROP_FILE = "SOURCE.yaml"

# Words that fill a field without saying anything: a datasheet or an auditor cannot use them.
PLACEHOLDERS = {"", "?", "-", "todo", "tbd", "tbc", "unknown", "n/a", "na", "xxx", "fixme", "later"}


class ProvenanceError(ValueError):
    """A SOURCE.yaml that is missing or says too little; the message names the file, the key and the fix."""


class DropSource(BaseModel):
    """The fields of a drop's SOURCE.yaml."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    what: str = Field(description="what the files hold, e.g. `support answers for product X, English, 2026`")
    origin: str = Field(description="where they come from: a URL, or the system or team that exported them")
    license: str = Field(description="the terms you may train under: an SPDX id (CC-BY-4.0, MIT) or "
                                     "`proprietary (<who allowed it>)`")
    personal_data: str = Field(description="`none`, `pseudonymised (<how>)`, or `contains <kinds>` "
                                           "(names, e-mail addresses, ...)")
    collected: str | None = Field(None, description="when and how the files were collected, e.g. `2026-11-23, "
                                                    "nightly export`")
    notes: str | None = Field(None, description="known risks and skews, quoted in the datasheets")

    @field_validator("collected", mode="before")
    @classmethod
    def _date_as_text(cls, v):
        # YAML reads a bare 2026-11-23 as a date; it is meant as text
        return v.isoformat() if isinstance(v, datetime.date) else v

    @field_validator("what", "origin", "license", "personal_data", "collected", "notes")
    @classmethod
    def _says_something(cls, v, info):
        if v is not None and v.strip().lower() in PLACEHOLDERS:
            raise ValueError(f"{v!r} says nothing; write {cls.model_fields[info.field_name].description}")
        if info.field_name == "license" and v.strip().lower() in ("none", "no license", "unlicensed"):
            raise ValueError(f"{v!r}: without a license there is no permission to train on the files; get one, "
                             "or write the terms you do have (`proprietary (<who allowed it>)`)")
        return v.strip()


def template(folder: str | Path) -> str:
    """A SOURCE.yaml to fill in, for the message that refuses a drop without one."""
    return "\n".join([f"    # {Path(folder) / DROP_FILE}"] + [
        f"    {name}: <{f.description}>" + ("   # optional" if not f.is_required() else "")
        for name, f in DropSource.model_fields.items()])


def _problem(path: Path, err: dict) -> str:
    key = ".".join(map(str, err["loc"])) or "(top level)"
    kind, value = err["type"], err.get("input")
    field = DropSource.model_fields.get(str(err["loc"][0])) if err["loc"] else None
    if kind == "extra_forbidden":
        return f"{path}: `{key}`: unknown key; the keys are {', '.join(DropSource.model_fields)}"
    if kind == "missing":
        return f"{path}: `{key}` missing; add `{key}: <{field.description}>`"
    if kind == "string_type":
        hint = " (YAML reads yes/no/on/off as true/false: quote it)" if isinstance(value, bool) else ""
        return f"{path}: `{key}`: expected text, got {type(value).__name__} {value!r}{hint}; write {field.description}"
    if kind == "value_error":
        return f"{path}: `{key}`: {err['ctx']['error']}"
    return f"{path}: `{key}`: {err['msg']}"


def read_drop_source(path: str | Path) -> dict:
    """The checked fields of a SOURCE.yaml (absent optional ones left out), or ProvenanceError with every problem."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ProvenanceError(f"{path}: not found") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ProvenanceError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ProvenanceError(f"{path}: must be a mapping of key: value, like\n{template(path.parent)}")
    try:
        return DropSource(**raw).model_dump(exclude_none=True)
    except ValidationError as e:
        raise ProvenanceError("\n".join(_problem(path, err) for err in e.errors())) from None


def drop_record(folder: Path) -> dict | None:
    """A drop folder's SOURCE.yaml as the manifest keeps it (its path, sha256 and fields), or None without one."""
    path = folder / DROP_FILE
    if not path.is_file():
        return None
    return {"path": path.as_posix(), "sha256": sha256_file(path), **read_drop_source(path)}


def load(path: str | Path) -> list[dict]:
    """The entries of a sources file; a file that is not a list of mappings with a `path` is named with the fix."""
    path = Path(path)
    try:
        entries = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("sources", [])
    except yaml.YAMLError as e:
        raise SystemExit(f"{path}: not valid YAML: {e}") from None
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or not isinstance(e.get("path"), str):
            raise SystemExit(f"{path}: sources[{i}] needs at least a `path` glob, e.g. data/seed/domain/*.jsonl")
    return entries


def match(path: str, sources: list[dict]) -> dict | None:
    """The entry whose `path` glob matches the end of this input path."""
    return next((s for s in sources if PurePath(path).match(s["path"])), None)


def drop_records(drops: str | Path) -> tuple[dict[str, dict], list[str]]:
    """({drop: its SOURCE.yaml as drop_record reads it} for every drop under `drops` that has one, [problems]):
    a SOURCE.yaml edited by hand since its ingest may no longer pass; each such one is a problem with the fix."""
    records, problems = {}, []
    for folder in sorted(p for p in Path(drops).iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            record = drop_record(folder)
        except ProvenanceError as e:
            problems.append(f"{e}\n  fix it, then `dvc add {folder}`")
            continue
        if record is not None:
            records[folder.name] = record
    return records, problems


def of_input(path: str, drop: str, drops: dict[str, dict], sources: list[dict]) -> tuple[dict | None, str | None]:
    """(provenance, the SOURCE.yaml it came from or None for a sources.yaml entry) of one input file, from its
    drop's record in `drops` (drop_records) if it has one, else from `sources`; (None, None) when neither has it."""
    record = drops.get(drop)
    if record is not None:
        return {k: v for k, v in record.items() if k not in ("path", "sha256")}, record["path"]
    return match(path, sources), None
