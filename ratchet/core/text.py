"""Measures and parts of plain text that the data, training and scoring share."""
from __future__ import annotations

import re

RULE = re.compile(r"^[*=\-~^#]{3,}\s*$")  # a heading's underline (reStructuredText, pydoc)


def repetition(text: str, n: int = 4) -> float:
    """Share of the word n-grams of `text` that repeat an earlier one: 0 for varied text, near 1 for a loop."""
    words = text.split()
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def title(text: str, loose: bool = False) -> str | None:
    """A document's heading: its first line when the second underlines it (reStructuredText, pydoc); `loose`:
    also a first line of at most 100 characters that ends in no full stop or colon and is followed by a blank
    line (an API name and signature over its docstring; a list item's term too)."""
    lines = text.split("\n")
    first = lines[0].strip()
    if not first or len(lines) < 2:
        return None
    if RULE.match(lines[1]) or (loose and len(first) <= 100 and not first.endswith((".", ":"))
                                and not lines[1].strip()):
        return first
    return None


def prose(text: str) -> list[str]:
    """A document's prose paragraphs (blank-line separated; none whose lines are indented or hold a grammar rule
    `::=`, a prompt `>>>` or a heading's underline), each one line, its title left out."""
    head = title(text)
    out = []
    for para in re.split(r"\n\s*\n", text):
        lines = para.split("\n")
        if any(ln[:1].isspace() or "::=" in ln or ">>>" in ln or RULE.match(ln) for ln in lines):
            continue
        joined = " ".join(ln.strip() for ln in lines)
        if joined and joined != head:
            out.append(joined)
    return out
