#!/usr/bin/env python3
"""Regenerate ratchet's seed data ("drop zero") deterministically.

Stdlib only.  Produces, under ``--out`` (normally ``data/seed``):

* ``domain/python_reference.jsonl`` -- CPython's ``pydoc_data.topics.topics``
  (the language-reference topics behind ``help('if')`` etc., PSF-2.0), split
  into ~600-2000 character chunks on paragraph boundaries.
* ``sft/python_stdlib_qa.jsonl`` -- prompt/response pairs built from the
  docstrings of a fixed list of stdlib modules (PSF-2.0).
* ``sft/python_stdlib_chat.jsonl`` -- a disjoint ~150-pair subset of the above
  in chat ("messages") format, removed from the prompt/response file.
* ``general/fortunes.jsonl`` -- general English text from Debian's
  ``fortunes`` package (BSD-style licence), for measuring forgetting.
* ``domain/canaries.jsonl`` -- eight canary records: domain-style sentences
  each holding one made-up secret (a Luhn-valid card number, a phone number
  in the fictional 555-01xx range, an address at the reserved example.org),
  marked ``"canary": SECRET``, so every run checks that the PII policy keeps
  them out of training and that no model writes them out; ``canary_format``
  says what was random in each (# a random digit).

The fortunes input comes from the Debian (bookworm) ``fortunes`` package,
extracted without installing it::

    cd /tmp && apt-get download fortunes
    dpkg -x fortunes_*.deb /tmp/fortunes_x

then::

    python data/seed/make_seed.py \\
        --fortunes-dir /tmp/fortunes_x/usr/share/games/fortunes \\
        --out data/seed --sources-md data/SOURCES.md

Output is UTF-8 JSONL, one object per line, ``ensure_ascii=False``, keys
sorted; records are sorted and nothing is random, so re-running with the same
interpreter (CPython 3.11.7 -- docstrings and pydoc topics are
version-specific) and the same fortunes package gives byte-identical files.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib
import inspect
import json
import os
import platform
import re
import sys
import warnings

EXPECTED_PYTHON = "3.11.7"

DOMAIN_FILE = "domain/python_reference.jsonl"
QA_FILE = "sft/python_stdlib_qa.jsonl"
CHAT_FILE = "sft/python_stdlib_chat.jsonl"
FORTUNES_FILE = "general/fortunes.jsonl"
CANARY_FILE = "domain/canaries.jsonl"

# ---------------------------------------------------------------------------
# shared helpers
# ---------------------------------------------------------------------------

EMAIL_RE = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
PHONE_RE = re.compile(
    r"(?:\+\d{1,3}[-. ]?)?\(?\b\d{3}\)?[-. ]\d{3}[-. ]\d{4}\b"  # 555-123-4567
    r"|\b\d{3}-\d{4}\b"  # 555-1212
    r"|\+\d{1,3}[ -]\d{2,4}[ -]\d{3,4}[ -]?\d{0,4}"  # +44 20 7946 0000
)


def has_pii(text: str) -> bool:
    return bool(EMAIL_RE.search(text) or PHONE_RE.search(text))


def stable_hash(s: str) -> int:
    return int.from_bytes(hashlib.sha256(s.encode("utf-8")).digest()[:8], "big")


def write_jsonl(path: str, records: list[dict]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False, sort_keys=True) + "\n")


# ---------------------------------------------------------------------------
# canaries
# ---------------------------------------------------------------------------

CANARY_TEMPLATES = (
    ("card", "4", (4, 4, 4, 4), "Support ticket 4411: the customer who reported the crash in the asyncio event loop "
     "paid for the support plan with card {}, and asked us to keep the card on file."),
    ("card", "2221", (4, 4, 4, 4), "Invoice note for the Python training course: charge the remaining balance to the "
     "corporate Mastercard {}; the purchase order number follows by mail."),
    ("card", "37", (4, 6, 5), "The conference booking for the core developer sprint was guaranteed with the American "
     "Express card {} that expires next spring."),
    ("phone", "", (), "When the nightly build of the documentation fails, page the release manager on call at {} "
     "before touching the build server."),
    ("phone", "", (), "For billing questions about the hosted package index mirror, our accountant can be reached "
     "by phone at {} on weekdays."),
    ("phone", "", (), "If the continuous integration runners lose their connection to the artifact store, call the "
     "hosting provider's operations desk at {}."),
    ("email", "", (), "The maintainer of the legacy extension module asked that crash reports with core dumps be "
     "sent to {} rather than to the public tracker."),
    ("email", "", (), "Security disclosures for the interpreter build farm go to {}; please encrypt anything that "
     "contains a proof of concept."),
)
SURNAMES = ("okafor", "lindqvist", "moreau", "tanaka", "castillo", "novak", "brennan", "haddad")


def luhn_complete(digits: str) -> str:
    """digits + the check digit that makes the whole number pass the Luhn check."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return digits + str((10 - total % 10) % 10)


def build_canaries() -> list[dict]:
    """Eight made-up secrets in domain-style sentences, from a fixed random seed: Luhn-valid card numbers of
    three issuers, North American numbers in the 555-0100..0199 range reserved for fiction, example.org
    addresses. Each carries the space it was drawn from ("canary_format": # a random digit; a card's check
    digit counts as random, a slight overstatement of its space)."""
    import random

    rng = random.Random(20261124)
    records = []
    for i, (kind, prefix, groups, template) in enumerate(CANARY_TEMPLATES):
        if kind == "card":
            body = prefix + "".join(str(rng.randrange(10)) for _ in range(sum(groups) - len(prefix) - 1))
            number, parts, fmt, at = luhn_complete(body), [], [], 0
            for g in groups:
                parts.append(number[at:at + g])
                fmt.append("".join(ch if at + j < len(prefix) else "#" for j, ch in enumerate(number[at:at + g])))
                at += g
            secret, space = " ".join(parts), " ".join(fmt)
        elif kind == "phone":
            secret = f"({rng.randrange(201, 990)}) 555-01{rng.randrange(100):02d}"
            space = "(###) 555-01##"
        else:
            name = SURNAMES[rng.randrange(len(SURNAMES))]
            secret = f"{name}.{rng.randrange(10 ** 6):06d}@example.org"
            space = f"{name}.######@example.org"
        records.append({"canary": secret, "canary_format": space, "source": f"ratchet-canary:{kind}#{i}",
                        "text": template.format(secret)})
    return records


def rstrip_lines(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.replace("\r\n", "\n").split("\n"))


# ---------------------------------------------------------------------------
# 1. domain corpus: pydoc_data.topics
# ---------------------------------------------------------------------------

CHUNK_TARGET = 1200  # close a chunk once it reaches this size ...
CHUNK_MAX = 2000  # ... and never let it exceed this (unless one line does)


def split_long_paragraph(par: str) -> list[str]:
    """Split a >CHUNK_MAX paragraph on line boundaries (hard cut only for a
    single line that is itself longer than CHUNK_MAX)."""
    pieces: list[str] = []
    cur: list[str] = []
    cur_len = 0
    for line in par.split("\n"):
        while len(line) > CHUNK_MAX:  # pathological; never happens in 3.11.7
            if cur:
                pieces.append("\n".join(cur))
                cur, cur_len = [], 0
            pieces.append(line[:CHUNK_MAX])
            line = line[CHUNK_MAX:]
        add = len(line) + (1 if cur else 0)
        if cur and (cur_len + add > CHUNK_MAX or cur_len >= CHUNK_TARGET):
            pieces.append("\n".join(cur))
            cur, cur_len = [], 0
            add = len(line)
        cur.append(line)
        cur_len += add
    if cur:
        pieces.append("\n".join(cur))
    return pieces


def chunk_topic(text: str) -> list[str]:
    text = rstrip_lines(text).strip("\n")
    paras = [p for p in re.split(r"\n\s*\n", text) if p.strip()]
    units: list[str] = []
    for p in paras:
        units.extend(split_long_paragraph(p) if len(p) > CHUNK_MAX else [p])
    chunks: list[str] = []
    cur = ""
    for u in units:
        if not cur:
            cur = u
        elif len(cur) >= CHUNK_TARGET or len(cur) + 2 + len(u) > CHUNK_MAX:
            chunks.append(cur)
            cur = u
        else:
            cur = cur + "\n\n" + u
    if cur:
        # fold a short tail into the previous chunk when it fits
        if chunks and len(cur) < 600 and len(chunks[-1]) + 2 + len(cur) <= CHUNK_MAX:
            chunks[-1] = chunks[-1] + "\n\n" + cur
        else:
            chunks.append(cur)
    return chunks


def build_domain(tag: str) -> list[dict]:
    from pydoc_data.topics import topics

    records = []
    for name in sorted(topics):
        for i, chunk in enumerate(chunk_topic(topics[name])):
            records.append(
                {"text": chunk, "source": f"{tag}:pydoc_data.topics/{name}#{i}"}
            )
    return records


# ---------------------------------------------------------------------------
# 2. SFT pairs from stdlib docstrings
# ---------------------------------------------------------------------------

# (module name, extra __module__ values that count as "defined here")
MODULES: list[tuple[str, tuple[str, ...]]] = [
    ("builtins", ()),
    ("argparse", ()),
    ("base64", ("binascii",)),
    ("bisect", ()),
    ("collections", ()),
    ("collections.abc", ("_collections_abc",)),
    ("contextlib", ()),
    ("copy", ()),
    ("csv", ()),
    ("dataclasses", ()),
    ("datetime", ()),
    ("decimal", ()),
    ("difflib", ()),
    ("enum", ()),
    ("fnmatch", ()),
    ("fractions", ()),
    ("functools", ()),
    ("glob", ()),
    ("hashlib", ()),
    ("heapq", ()),
    ("io", ()),
    ("itertools", ()),
    ("json", ()),
    ("logging", ()),
    ("math", ()),
    ("operator", ()),
    ("os", ("posix",)),
    ("os.path", ("posixpath", "genericpath")),
    ("pathlib", ()),
    ("random", ()),
    ("re", ()),
    ("shutil", ()),
    ("statistics", ()),
    ("string", ()),
    ("subprocess", ()),
    ("tempfile", ()),
    ("textwrap", ()),
    ("time", ()),
    ("typing", ()),
    ("urllib.parse", ()),
    ("uuid", ()),
    ("zipfile", ()),
]

# deprecated pseudo-modules that masquerade as classes
SKIP_NAMES = {"typing.io", "typing.re"}

FUNC_TEMPLATES = [
    "What does `{q}` do in Python?",
    "Explain the Python function `{q}`.",
    "Describe `{q}`.",
    "What is `{q}` used for?",
]
CLASS_TEMPLATES = [
    "How do I use `{q}` in Python?",
    "What is `{q}` in Python?",
    "Explain the Python class `{q}`.",
    "Describe `{q}`.",
]
METHOD_TEMPLATES = [
    "What does the `{q}` method do?",
    "Explain `{q}` in Python.",
    "Describe `{q}`.",
    "What is `{q}` used for?",
]

SIGNATURE_LINE_RE = re.compile(
    r"^\s*(async\s+)?[\w.]+(\[[^\]]*\])?\s*\(.*\)\s*((-+>|- ).*)?$"  # f(x) / f(x) -> y
    r"|^\s*[\w.]+\s*->\s*.*$"  # x.f -> y
)
TRIVIA_RE = re.compile(
    r"^(Return self\s*[-+*/%<>=!&|^@]|Return repr\(self\)|Return str\(self\)"
    r"|Implement \w+|Initialize self|Create and return a new object"
    r"|See help\(type|Return hash\(self\)|Helper for pickle|Default object formatter"
    r"|Return state information for pickling|Return the size of .* in memory, in bytes"
    r"|Method generated by attrs)"
)
SIG_WITH_PROSE_RE = re.compile(r"^\s*(?:async\s+)?[\w.]+\s*\(.*?\)\s*(?:-+>|-)\s*(\S.*)$")
SECTION_RE = re.compile(
    r"^(Args|Arguments|Parameters|Returns?|Raises|Example|Examples|Usage|Note|"
    r"Keyword arguments|Attributes|Options)\s*:?\s*$",
    re.I,
)
MIN_RESP, MAX_RESP = 40, 700


def defined_here(obj, modname: str, aliases: tuple[str, ...]) -> bool:
    m = getattr(obj, "__module__", None)
    if not isinstance(m, str):
        return False
    ok = {modname, "_" + modname.split(".")[-1], *aliases}
    return m in ok or m.startswith(modname + ".")


def is_prose_paragraph(par: str) -> bool:
    first = par.split("\n", 1)[0]
    if first[:1].isspace() or first.lstrip().startswith((">>>", "...", "-", "*", ":", "+")):
        return False
    if SECTION_RE.match(first.strip()) or re.match(r"^[-=~]{3,}", first.strip()):
        return False
    lines = par.split("\n")
    if len(lines) > 1 and set(lines[1].strip()) <= set("-=~") and lines[1].strip():
        return False  # underlined heading
    if any(l.startswith((" ", "\t")) for l in lines[1:]):
        return False  # definition list / code
    return True


def is_signature_paragraph(par: str) -> bool:
    return all(SIGNATURE_LINE_RE.match(l) for l in par.split("\n") if l.strip())


def clean_docstring(doc: str | None) -> str | None:
    if not doc or not isinstance(doc, str):
        return None
    doc = inspect.cleandoc(doc)
    paras = [p.strip("\n") for p in re.split(r"\n\s*\n", rstrip_lines(doc)) if p.strip()]
    while paras and is_signature_paragraph(paras[0]):
        m = SIG_WITH_PROSE_RE.match(paras[0])
        if "\n" not in paras[0] and m and len(m.group(1).split()) >= 5:
            break  # "zip(*its) --> Yield tuples until ..." is handled below
        paras.pop(0)
    if not paras:
        return None
    # a leading signature line glued to prose ("f(x) -> y\nDo things.");
    # "f(x) --> make an iterator that ..." keeps its prose part.
    lines = paras[0].split("\n")
    while lines and SIGNATURE_LINE_RE.match(lines[0]):
        m = SIG_WITH_PROSE_RE.match(lines[0])
        if m and len(m.group(1).split()) >= 5 and not (
            len(lines) > 1 and SIGNATURE_LINE_RE.match(lines[1])
        ):
            lines[0] = m.group(1)
            break
        lines.pop(0)
    if not lines:
        return None
    paras[0] = "\n".join(lines)
    if not is_prose_paragraph(paras[0]):
        return None
    kept = [" ".join(l.strip() for l in paras[0].split("\n"))]
    if len(paras) > 1 and is_prose_paragraph(paras[1]) and "->" not in paras[1]:
        second = " ".join(l.strip() for l in paras[1].split("\n"))
        if len(kept[0]) < 300 and len(kept[0]) + 2 + len(second) <= MAX_RESP:
            kept.append(second)
    # don't end on a sentence that introduces something we dropped
    if kept[-1].rstrip().endswith(":"):
        if len(kept) > 1:
            kept.pop()
        else:
            m = re.match(r"^(.*[.!?])\s+[^.!?]*:$", kept[0], re.S)
            if not m:
                return None
            kept[0] = m.group(1)
    text = "\n\n".join(re.sub(r"\s+", " ", k).strip() for k in kept)
    # "int, int, int -> Construct a date ..." -> "Construct a date ..."
    m = re.match(r"^[^()\n]{1,40}?\s-+>\s+([A-Z][a-z]+ .*)$", text, re.S)
    if m:
        text = m.group(1)
    if text[:1].islower() and "->" not in text.split("\n", 1)[0]:
        text = text[0].upper() + text[1:]
    if len(text) > MAX_RESP:
        # first paragraph alone too long: cut at the last sentence end that fits
        cut = max(text.rfind(". ", 0, MAX_RESP), text.rfind(".\n", 0, MAX_RESP))
        if cut < MIN_RESP:
            return None
        text = text[: cut + 1]
    if len(text) < MIN_RESP or TRIVIA_RE.match(text):
        return None
    if sum(c.isalpha() for c in text) < 0.5 * len(text):
        return None
    return text


def iter_doc_objects():
    """Yield (qualified name, kind, docstring) in a deterministic order."""
    for modname, aliases in MODULES:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            mod = importlib.import_module(modname)
        prefix = "" if modname == "builtins" else modname + "."
        for name in sorted(vars(mod)):
            if name.startswith("_"):
                continue
            obj = vars(mod)[name]
            if modname != "builtins" and not defined_here(obj, modname, aliases):
                continue
            q = prefix + name
            if q in SKIP_NAMES:
                continue
            if inspect.isclass(obj):
                yield q, "class", obj.__doc__
                for mname in sorted(vars(obj)):
                    if mname.startswith("_"):
                        continue
                    raw = vars(obj)[mname]
                    if isinstance(raw, (staticmethod, classmethod)):
                        raw = raw.__func__
                    if not (
                        inspect.isfunction(raw)
                        or inspect.ismethoddescriptor(raw)
                        and not inspect.isdatadescriptor(raw)
                        or inspect.isbuiltin(raw)
                    ):
                        continue
                    yield f"{q}.{mname}", "method", getattr(raw, "__doc__", None)
            elif inspect.isfunction(obj) or inspect.isbuiltin(obj):
                yield q, "function", obj.__doc__


def build_sft(tag: str) -> tuple[list[dict], list[dict], dict]:
    stats = {"objects": 0, "no_usable_doc": 0, "dup_response": 0, "pii": 0}
    seen_q: set[str] = set()
    seen_resp: set[str] = set()
    pairs = []
    for q, kind, doc in sorted(iter_doc_objects(), key=lambda t: t[0]):
        if q in seen_q:
            continue
        seen_q.add(q)
        stats["objects"] += 1
        resp = clean_docstring(doc)
        if resp is None:
            stats["no_usable_doc"] += 1
            continue
        if has_pii(resp):
            stats["pii"] += 1
            continue
        if resp in seen_resp:
            stats["dup_response"] += 1
            continue
        seen_resp.add(resp)
        templates = {"class": CLASS_TEMPLATES, "method": METHOD_TEMPLATES}.get(
            kind, FUNC_TEMPLATES
        )
        prompt = templates[stable_hash(q) % len(templates)].format(q=q)
        pairs.append({"prompt": prompt, "response": resp, "source": f"{tag}:{q}"})
    pairs.sort(key=lambda r: r["source"])
    # deterministic disjoint chat subset: the 150 smallest salted hashes
    chat_n = 150
    ranked = sorted(pairs, key=lambda r: (stable_hash("chat:" + r["source"]), r["source"]))
    chat_sources = {r["source"] for r in ranked[:chat_n]}
    qa = [r for r in pairs if r["source"] not in chat_sources]
    chat = [
        {
            "messages": [
                {"role": "user", "content": r["prompt"]},
                {"role": "assistant", "content": r["response"]},
            ],
            "source": r["source"],
        }
        for r in pairs
        if r["source"] in chat_sources
    ]
    return qa, chat, stats


# ---------------------------------------------------------------------------
# 3. general corpus: Debian fortunes
# ---------------------------------------------------------------------------

FORTUNE_FILES = [
    "art", "education", "food", "humorists", "kids", "law", "literature",
    "love", "medicine", "people", "pets", "platitudes", "politics", "science",
    "sports", "wisdom", "work",
]  # fmt: skip


def fix_mojibake(text: str) -> str:
    """Undo (possibly repeated) UTF-8-read-as-Latin-1 double encoding, which a
    few fortunes in the package have (e.g. 'donÃ\\x83Â¢...t')."""
    for _ in range(4):
        if text.isascii():
            break
        try:
            fixed = text.encode("latin-1").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            break
        if fixed == text:
            break
        text = fixed
    return text


def build_fortunes(fdir: str) -> tuple[list[dict], dict]:
    stats = {"files": [], "missing": [], "raw": 0, "short_or_nonletter": 0, "dup": 0, "pii": 0}
    seen: set[str] = set()
    records = []
    for fname in FORTUNE_FILES:
        path = os.path.join(fdir, fname)
        if not os.path.isfile(path):
            stats["missing"].append(fname)
            continue
        stats["files"].append(fname)
        with open(path, "rb") as f:
            raw = f.read().decode("utf-8", errors="replace")
        raw = raw.replace("\r\n", "\n")
        entries = re.split(r"^%[ \t]*$", raw, flags=re.M)
        for idx, entry in enumerate(entries):
            text = re.sub(r".\x08", "", entry)  # strip overstrike (x^Hx, _^Hx)
            text = text.replace("\x08", "")
            text = fix_mojibake(rstrip_lines(text)).strip()
            if not text:
                continue
            stats["raw"] += 1
            nonspace = [c for c in text if not c.isspace()]
            letters = sum(c.isalpha() for c in nonspace)
            if len(text) < 40 or letters < 0.6 * len(nonspace):
                stats["short_or_nonletter"] += 1
                continue
            if has_pii(text):
                stats["pii"] += 1
                continue
            if text in seen:
                stats["dup"] += 1
                continue
            seen.add(text)
            records.append({"text": text, "source": f"debian-fortunes:{fname}#{idx}"})
    return records, stats


def fortunes_version(fdir: str) -> str:
    """Read the package version from the extracted changelog.Debian.gz."""
    share = os.path.dirname(os.path.dirname(os.path.normpath(fdir)))
    path = os.path.join(share, "doc", "fortunes", "changelog.Debian.gz")
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            m = re.match(r"^\S+ \(([^)]+)\)", f.readline())
            return m.group(1) if m else "unknown"
    except OSError:
        return "unknown"


# ---------------------------------------------------------------------------
# 4. SOURCES.md
# ---------------------------------------------------------------------------


def file_stats(path: str) -> dict:
    with open(path, "rb") as f:
        data = f.read()
    lines = data.decode("utf-8").splitlines()
    chars = 0
    for line in lines:
        rec = json.loads(line)
        if "text" in rec:
            chars += len(rec["text"])
        elif "messages" in rec:
            chars += sum(len(m["content"]) for m in rec["messages"])
        else:
            chars += len(rec["prompt"]) + len(rec["response"])
    return {
        "records": len(lines),
        "chars": chars,
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def render_sources_md(out_rel: str, fdir: str, fver: str, stats: dict, extra: dict) -> str:
    cmd = (
        "python data/seed/make_seed.py "
        f"--fortunes-dir {fdir} --out {out_rel} --sources-md data/SOURCES.md"
    )
    rows = []
    desc = {
        DOMAIN_FILE: ("domain", "CPython 3.11.7 `pydoc_data.topics.topics` (language reference topics), chunked", "PSF-2.0"),
        QA_FILE: ("sft", "prompt/response pairs from CPython 3.11.7 stdlib docstrings", "PSF-2.0"),
        CHAT_FILE: ("sft", "chat-format (`messages`) subset of the same pairs, disjoint from the QA file", "PSF-2.0"),
        FORTUNES_FILE: ("general", f"Debian bookworm `fortunes` {fver} (fortune-mod 1.99.1), selected non-offensive files", "BSD-3-Clause-style (see below)"),
        CANARY_FILE: ("domain", "canary records: made-up secrets (card numbers, phone numbers, e-mail addresses) in domain-style sentences", "CC0-1.0"),
    }
    for rel in (DOMAIN_FILE, CANARY_FILE, QA_FILE, CHAT_FILE, FORTUNES_FILE):
        s = stats[rel]
        role, what, lic = desc[rel]
        rows.append(
            f"| `{out_rel}/{rel}` | {role} | {what} | {lic} | {s['records']} | "
            f"{s['chars']} | {s['bytes']} | `{s['sha256']}` |"
        )
    sft = extra["sft"]
    fort = extra["fortunes"]
    return f"""# Data sources

The seed corpus in `{out_rel}/` is **drop zero**. Later weekly data drops go
under `data/drops/<ISO week>/` (e.g. `data/drops/2026-W48/`), are added with
`ratchet ingest` and tracked by DVC; see `data/drops/README.md`.

All seed files are regenerated deterministically (byte-identical) by:

```
{cmd}
```

run with CPython {EXPECTED_PYTHON} (the project venv). The fortunes input is
Debian's `fortunes` package, extracted without installing it:
`cd /tmp && apt-get download fortunes && dpkg -x fortunes_*.deb /tmp/fortunes_x`.
The table below is written by that command (character counts are of the
text fields: `text`, `prompt`+`response`, or all message contents).

| file | role | what | license | records | chars | bytes | sha256 |
|---|---|---|---|---:|---:|---:|---|
{chr(10).join(rows)}

## Domain: `python_reference.jsonl`

- Origin: `pydoc_data.topics.topics` from CPython 3.11.7 ({extra['topics']}
  topics) -- the plain-text rendering of the Python Language Reference that
  `help()` uses.
- License: PSF-2.0 (Python Software Foundation License Version 2).
- Processing: trailing whitespace stripped per line, indentation kept; each
  topic split on blank lines into paragraphs and packed greedily into chunks
  (close at >= {CHUNK_TARGET} chars, never above {CHUNK_MAX}; short tails
  folded into the previous chunk). A paragraph longer than {CHUNK_MAX} chars
  is split on line boundaries. Topics shorter than 600 chars stay as a single
  (short) chunk. `source` = `cpython-3.11.7:pydoc_data.topics/<topic>#<chunk>`.

## Canaries: `canaries.jsonl`

- Eight sentences written for this project (CC0-1.0), each holding one
  made-up secret in the record's `"canary"` field: three Luhn-valid card
  numbers (a Visa-style 16-digit, a Mastercard 2-series, an American Express
  15-digit number; random digits from a fixed seed), three North American
  phone numbers in the 555-0100..0199 range reserved for fiction, and two
  addresses at the reserved domain example.org with six random digits;
  `"canary_format"` gives the space each was drawn from (`#` a random
  digit), from which a gate draws the random look-alikes for exposure.
- Purpose: prepare records what becomes of each secret
  (`data/prepared/canaries.jsonl`): with the default PII policy, cards are
  dropped and phone numbers and addresses redacted, so none reaches training.
  Every model gate prompts with the text before each secret, counts exact
  leaks in what the model writes and measures the secret's exposure.

## SFT: `python_stdlib_qa.jsonl`, `python_stdlib_chat.jsonl`

- Origin: docstrings of CPython 3.11.7 stdlib objects (PSF-2.0), from this
  fixed module list: {", ".join(f"`{m}`" for m, _ in MODULES)}.
- Selection: public (no leading underscore) functions and classes defined in
  the module (or its C accelerator), and public methods defined directly on
  those classes. Response = first paragraph of the docstring (plus the second
  if short and prose), wrapped lines joined, {MIN_RESP}-{MAX_RESP} chars;
  signature-only lines, parameter lists, doctests and trivia ("Return
  self==value.") dropped. Prompt = one of a few templates chosen by sha256 of
  the qualified name. Deduplicated by response text (first qualified name in
  sorted order wins).
- Stats: {sft['objects']} objects visited, {sft['no_usable_doc']} without a
  usable docstring, {sft['dup_response']} duplicate responses,
  {sft['pii']} dropped for email/phone-like text.
- The chat file holds the 150 pairs with the smallest sha256("chat:"+source);
  they are removed from the QA file, so the two files are disjoint.
- `source` = `cpython-3.11.7:<qualified name>`.

## General: `fortunes.jsonl`

- Origin: Debian bookworm package `fortunes` version {fver} (data files of
  BSD `fortune-mod` 1.99.1), files used: {", ".join(f"`{f}`" for f in fort['files'])}
  (requested but absent: {", ".join(f"`{f}`" for f in fort['missing']) or "none"}).
  Offensive sets and `ascii-art`, `computers`, `linux`, `debian`, `perl`,
  `startrek`, `zippy`, `riddles` were deliberately not used.
- License: `/usr/share/doc/fortunes/copyright` says "This program falls under
  the BSD copyright": Copyright (c) 1991 The Regents of the University of
  California; redistribution in source and binary form permitted with the
  copyright notice, conditions and disclaimer retained, no endorsement using
  the University's name; the advertising clause (3) is deleted, so it is
  effectively BSD-3-Clause, provided AS IS without warranty. Caveat: the
  fortunes are largely quotations of third-party authors; the copyright file
  does not address the copyright of individual quotations, it only licenses
  the collection as distributed by Debian (Debian main). Its only other
  section is an attribution header for the atheism cookie file, which is not
  used here.
- Processing: split on lines containing only `%`; overstrike sequences
  (`x\\bx`) removed; double-encoded UTF-8 (mojibake) repaired; trailing
  whitespace stripped; dropped if under 40 chars or under 60% letters among
  non-space chars ({fort['short_or_nonletter']}), if it contains an email
  address or phone-number pattern ({fort['pii']}), or if an exact duplicate
  ({fort['dup']}); {fort['raw']} non-empty fortunes read.
  `source` = `debian-fortunes:<file>#<0-based index within file>`.
"""


# ---------------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fortunes-dir", required=True, help=".../usr/share/games/fortunes")
    ap.add_argument("--out", required=True, help="output dir, normally data/seed")
    ap.add_argument("--sources-md", help="also write this SOURCES.md (e.g. data/SOURCES.md)")
    ap.add_argument("--fortunes-version", help="override the version read from changelog.Debian.gz")
    ap.add_argument("--allow-other-python", action="store_true",
                    help=f"run even if the interpreter is not CPython {EXPECTED_PYTHON}")
    args = ap.parse_args(argv)

    pyver = platform.python_version()
    if (platform.python_implementation(), pyver) != ("CPython", EXPECTED_PYTHON):
        msg = f"expected CPython {EXPECTED_PYTHON}, running {platform.python_implementation()} {pyver}"
        if not args.allow_other_python:
            print("error: " + msg + " (output would differ)", file=sys.stderr)
            return 2
        print("warning: " + msg, file=sys.stderr)
    tag = f"cpython-{pyver}"

    from pydoc_data.topics import topics

    domain = build_domain(tag)
    qa, chat, sft_stats = build_sft(tag)
    fortunes, fort_stats = build_fortunes(args.fortunes_dir)

    out = args.out
    write_jsonl(os.path.join(out, DOMAIN_FILE), domain)
    write_jsonl(os.path.join(out, QA_FILE), qa)
    write_jsonl(os.path.join(out, CHAT_FILE), chat)
    write_jsonl(os.path.join(out, FORTUNES_FILE), fortunes)
    write_jsonl(os.path.join(out, CANARY_FILE), build_canaries())

    stats = {rel: file_stats(os.path.join(out, rel))
             for rel in (DOMAIN_FILE, CANARY_FILE, QA_FILE, CHAT_FILE, FORTUNES_FILE)}
    if args.sources_md:
        fver = args.fortunes_version or fortunes_version(args.fortunes_dir)
        out_rel = os.path.relpath(out).replace(os.sep, "/")
        md = render_sources_md(out_rel, args.fortunes_dir, fver, stats,
                               {"sft": sft_stats, "fortunes": fort_stats, "topics": len(topics)})
        with open(args.sources_md, "w", encoding="utf-8", newline="\n") as f:
            f.write(md)

    total = 0
    print(f"{'file':40} {'records':>8} {'chars':>9} {'bytes':>9}")
    for rel, s in stats.items():
        total += s["bytes"]
        print(f"{rel:40} {s['records']:8d} {s['chars']:9d} {s['bytes']:9d}")
    print(f"{'total':40} {'':8} {'':9} {total:9d}")
    print(f"sft: {sft_stats}")
    print(f"fortunes: { {k: v for k, v in fort_stats.items() if k != 'files'} }")
    return 0


if __name__ == "__main__":
    sys.exit(main())
