"""The record format, and the one reader of input files that ingest, prepare and the benchmarks share.

Files are `.jsonl` (one JSON object per line) or `.txt` (one record per blank-line
separated block). A record is raw text, {"text": ...}, for the domain and
general roles, or an instruction record for sft: {"prompt": ..., "response": ...}
or {"messages": [{"role": system|user|assistant, "content": ...}, ...]} ending
with the assistant. Files as real exports write them are read: a UTF-8 byte
order mark and CRLF line ends are fine.

`read_records` streams a file and yields one Item per record with what was
wrong with it, if anything; each caller decides what a bad line means (ingest
refuses the file, prepare quarantines the line). A file that is not text at all
raises RecordFileError, whose message names the file and the fix.
"""
from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path
from typing import Iterator, NamedTuple

SUFFIXES = (".jsonl", ".txt")
TEXT_ROLES = ("domain", "general")
BOM = b"\xef\xbb\xbf"
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
SNIFF_BYTES = 8192
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
RECORD_SHAPES = '{"text": ...}, {"prompt": ..., "response": ...} or {"messages": [...]}'


class RecordFileError(ValueError):
    """A file that cannot be read as records at all; the message names the file and the fix."""


class Item(NamedTuple):
    line: int  # first line of the record in its file, from 1
    record: dict | None  # the record in canonical form ({"text"} or {"messages"}), not yet normalised
    raw: object  # the parsed JSON value, or the line (text block) as a string when it does not parse
    kind: str | None  # "text" or "sft"; None when the line is not a record
    rule: str | None  # "parse" or "schema" when the record is unusable
    reason: str | None  # what is wrong, for a person


def record_kind(raw) -> str | None:
    """'sft' for instruction records, 'text' for raw text, None for neither."""
    if isinstance(raw, dict) and ("messages" in raw or "prompt" in raw or "response" in raw):
        return "sft"
    if isinstance(raw, dict) and "text" in raw:
        return "text"
    return None


def to_record(role: str, raw) -> tuple[dict | None, str | None]:
    """A raw JSON value as a record of its role (not yet normalised), or (None, reason)."""
    if not isinstance(raw, dict):
        return None, "not a JSON object"
    if role in TEXT_ROLES:
        if not isinstance(raw.get("text"), str):
            return None, 'missing string field "text"'
        return {"text": raw["text"]}, None
    if "messages" in raw:
        msgs = raw["messages"]
        if not (isinstance(msgs, list) and msgs and all(
                isinstance(m, dict) and m.get("role") in ("system", "user", "assistant")
                and isinstance(m.get("content"), str) for m in msgs)):
            return None, 'field "messages" must be a list of {"role": system|user|assistant, "content": str}'
        if msgs[-1]["role"] != "assistant":
            return None, 'the last message must have role "assistant"'
        return {"messages": [{"role": m["role"], "content": m["content"]} for m in msgs]}, None
    if isinstance(raw.get("prompt"), str) and isinstance(raw.get("response"), str):
        return {"messages": [{"role": "user", "content": raw["prompt"]},
                             {"role": "assistant", "content": raw["response"]}]}, None
    return None, 'needs string fields "prompt" and "response", or "messages"'


def normalise(text: str) -> str:
    """NFC, no control characters, no trailing spaces, at most one blank line in a row."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = CONTROL.sub("", text)
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def map_text(rec: dict, fn) -> dict:
    """The record with fn applied to its text, or to every message's content."""
    if "text" in rec:
        return {"text": fn(rec["text"])}
    return {"messages": [{"role": m["role"], "content": fn(m["content"])} for m in rec["messages"]]}


def record_text(rec: dict) -> str:
    """One string per record: its text, or its messages as `role: content` lines (hashing, lengths, dedup)."""
    if "text" in rec:
        return rec["text"]
    return "\n".join(f"{m['role']}: {m['content']}" for m in rec["messages"])


# --------------------------------------------------------------------------- #
# Reading files
# --------------------------------------------------------------------------- #


def sniff(path: Path) -> None:
    """Raise RecordFileError for a file that is not a UTF-8 .jsonl or .txt file at a glance (first 8 KB)."""
    if path.suffix not in SUFFIXES:
        raise RecordFileError(f"{path}: unsupported file type {path.suffix or '(none)'!r}; convert it to .jsonl "
                              "(one JSON object per line) or .txt (blank-line separated text)")
    with open(path, "rb") as f:
        head = f.read(SNIFF_BYTES)
    if head.startswith(UTF16_BOMS):
        raise RecordFileError(f"{path}: UTF-16 encoded (byte order mark {head[:2].hex()}); save it as UTF-8, "
                              "e.g. iconv -f utf-16 -t utf-8")
    if not head.removeprefix(BOM).strip():
        raise RecordFileError(f"{path}: empty file (no records); add records to it or leave it out of the drop")
    _check_no_nul(path, head, 0, 1)


def _check_no_nul(path: Path, chunk: bytes, offset: int, line: int) -> None:
    nul = chunk.find(b"\x00")
    if nul >= 0:
        line += chunk.count(b"\n", 0, nul)
        raise RecordFileError(f"{path}: line {line}: looks binary (NUL byte at offset {offset + nul}); "
                              "records are UTF-8 .jsonl or .txt: export the data as text")


def _chunks(path: Path) -> Iterator[tuple[int, bytes]]:
    """(first line number, bytes) of each record: a non-blank line of .jsonl, a blank-line separated block of .txt.

    A UTF-8 byte order mark is dropped and CRLF line ends are read as LF; a NUL
    byte anywhere raises RecordFileError.
    """
    jsonl = path.suffix == ".jsonl"
    offset, block, start = 0, [], 1
    with open(path, "rb") as f:
        for i, line in enumerate(f, 1):
            if i == 1:
                offset += len(BOM) if line.startswith(BOM) else 0
                line = line.removeprefix(BOM)
            _check_no_nul(path, line, offset, i)
            offset += len(line)
            line = line.rstrip(b"\r\n")
            if jsonl:
                if line.strip():
                    yield i, line
                continue
            if line.strip():
                block.append(line)
                continue
            if block:
                yield start, b"\n".join(block)
            block, start = [], i + 1
        if block:
            yield start, b"\n".join(block)


def read_records(path: str | Path, role: str | None) -> Iterator[Item]:
    """Every record of a file, streamed, as Items; `role` None takes each record's kind from its fields.

    Raises RecordFileError for a file that is not text at all: the wrong suffix,
    empty, UTF-16, binary, no line valid UTF-8, or (.jsonl) no line valid JSON.
    """
    path = Path(path)
    sniff(path)
    if path.suffix == ".txt" and role == "sft":
        raise RecordFileError(f"{path}: .txt cannot hold instruction records; write .jsonl with "
                              '{"prompt", "response"} or {"messages"} records')
    lines = undecodable = unparsed = 0
    for i, chunk in _chunks(path):
        lines += 1
        try:
            text = chunk.decode("utf-8")
        except UnicodeDecodeError as e:
            undecodable += 1
            yield Item(i, None, chunk.decode("utf-8", "backslashreplace"), None, "parse",
                       f"not valid UTF-8 at byte {e.start}")
            continue
        if path.suffix == ".txt":
            yield Item(i, {"text": text}, {"text": text}, "text", None, None)
            continue
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            unparsed += 1
            yield Item(i, None, text, None, "parse", f"malformed JSON ({e.msg} at column {e.colno})")
            continue
        kind = record_kind(raw)
        rec, reason = to_record(role or ("sft" if kind == "sft" else "domain"), raw)
        if rec is None and role is None and kind is None and isinstance(raw, dict):
            reason = f"not a record; write {RECORD_SHAPES}"
        yield Item(i, rec, raw, kind if rec else None, None if rec else "schema", reason)
    if not lines:
        raise RecordFileError(f"{path}: empty file (no records); add records to it or leave it out of the drop")
    if undecodable == lines:
        raise RecordFileError(f"{path}: no line is valid UTF-8; re-encode the file as UTF-8, "
                              "e.g. iconv -f latin1 -t utf-8")
    if undecodable + unparsed == lines:
        raise RecordFileError(f"{path}: no line is a JSON value; is it JSON Lines (one JSON object per line)?")
