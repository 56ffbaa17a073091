"""Instruction pairs built from the domain documents a cycle trains on: a question about a document's topic,
answered by an explanation taken from that document's own text.

Instruction data made of one-line docstring summaries teaches a model to answer in one line; these pairs teach it
to answer a question about a topic of the user's documents with what the documents say about it. Deterministic:

- a document with a heading (ratchet.core.text.title, loose: an underlined title, or an API name and signature
  over its text) gives one pair; one without gives none;
- the question is one of QUESTIONS about the heading, picked by the sha256 of the document's id;
- the answer is the document's prose paragraphs (ratchet.core.text.prose) from the first, whole sentences up to
  `max_chars` characters (at least one sentence), so every word of it is the document's;
- only the train split of the newest source is read (the replay stage adds the pairs to the cycle's new sft
  records), so no held-out document is ever an answer; an earlier drop's documents are rehearsed as text
  (the domain replay buffer), not as pairs.
"""
from __future__ import annotations

import re

from ratchet.core.io import sha256_text
from ratchet.core.text import prose, title

QUESTIONS = ("What does the documentation say about {}?", "Explain {}.", "Can you describe {}?",
             "What should I know about {}?")
MIN_CHARS = 80  # an answer shorter than this explains nothing: no pair


def answer(text: str, max_chars: int) -> str:
    """The document's first prose sentences, whole, up to max_chars characters (at least one sentence)."""
    out = ""
    for para in prose(text):
        for sentence in re.split(r"(?<=[.!?])\s+(?=[A-Z\"(`*])", " ".join(para.split())):
            if out and len(out) + 1 + len(sentence) > max_chars:
                return out
            out = f"{out} {sentence}".strip()
        if len(out) >= max_chars:
            break
    return out


def pairs(records: list[dict], max_chars: int) -> list[dict]:
    """One instruction pair per titled document of `records` (domain train records): {id, source, messages,
    from_doc}, ids derived from the document's."""
    out = []
    for r in sorted(records, key=lambda r: r["id"]):
        head = title(r["text"], loose=True)
        reply = answer(r["text"], max_chars) if head else ""
        if len(reply) < MIN_CHARS:
            continue
        topic = "the" + head[3:] if head.startswith("The ") else head  # "What is the "while" statement?"
        ask = QUESTIONS[int(sha256_text(r["id"])[:8], 16) % len(QUESTIONS)].format(topic)
        out.append({"id": f"{r['id']}-ask", "source": r.get("source", ""), "from_doc": r["id"],
                    "messages": [{"role": "user", "content": ask}, {"role": "assistant", "content": reply}]})
    return out
