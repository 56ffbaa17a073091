"""Closed-book questions about what the training documents say: does a model know its drop?

Every other domain measure is on held-out documents, which a model cannot know better for having read other
ones. These questions are about facts stated in the documents it trained on, one source (the seed, each drop)
at a time, so a gate can ask for a gain on the newest drop and bound the loss on the earlier ones.

The method (deterministic: the same train split gives the same questions), a cloze probe in the manner of
Petroni et al. 2019 ("Language Models as Knowledge Bases?"):

1. Prose only: each document's paragraphs (ratchet.core.text.prose: blank-line separated, no line indented or
   holding a grammar rule `::=` or a prompt `>>>`), their lines joined, cut into sentences of SENTENCE_WORDS words that end
   in a full stop.
2. Key terms: in a sentence, the quoted or back-quoted terms ("__debug__", `os.sep`) and the identifier-like
   words (an underscore, a dot or a digit inside, or a capital after the first letter: AssertionError), of
   TERM_CHARS characters, that occur once in the sentence. A term found in more than RARE of the source's
   documents is common knowledge of the domain, not a fact of this document, and is left out.
3. Facts: in each document, its sentences holding a key term, up to `per_doc` of them spread evenly over the
   document; of a sentence's terms the rarest (fewest documents), then the first.
4. The question: the sentence with the term blanked, cut to the WINDOW words around the blank, asked as
   "Fill in the blank ..." with the document's title when it has one. It is a user's turn in the model's own
   chat template; no question appears in the training text as it is asked (a test checks the train splits).
5. Two scores, each checkable by hand per question:
   - multiple choice: the term against CHOICES - 1 terms that look alike (shape(): quoted or not, spaced,
     dunder, upper case, dotted, punctuated, numeric; of the same kind when too few look alike) from other
     documents of the same source that never occur in this document, in the order of their sha256 with the question's
     id; the choice the model finds likeliest per byte after "Answer:" is its pick;
   - key fact: the model's greedy answer contains the term, compared as `key()` normalises both (case, quotes,
     back-quotes and spacing ignored; word boundaries kept, so "len" is not found in "length").
"""
from __future__ import annotations

import re
from collections import Counter

from ratchet.core.io import sha256_text
from ratchet.core.text import prose, title

SENTENCE_WORDS = (8, 60)
TERM_CHARS = (3, 40)
RARE = 0.05          # share of the source's documents a key term may occur in
WINDOW = 24          # words of the sentence shown around the blank, at most
CHOICES = 4
BLANK = "____"
QUOTED = re.compile(r'"([^"\n]{%d,%d})"|`([^`\n]{%d,%d})`' % (*TERM_CHARS, *TERM_CHARS))
WORD = re.compile(r"(?<![\w.\"`])([A-Za-z_][\w.]*[\w])(?![\w\"`])")


def _identifier_like(word: str) -> bool:
    return (TERM_CHARS[0] <= len(word) <= TERM_CHARS[1] and not re.fullmatch(r"(\w\.)+\w?", word)  # not "i.e"
            and ("_" in word or "." in word.strip(".") or any(c.isdigit() for c in word)
                 or any(c.isupper() for c in word[1:])))


def sentences(text: str) -> list[str]:
    """The prose sentences of a document (step 1)."""
    out = []
    for para in prose(text):
        for s in re.split(r"(?<=[.!?])\s+(?=[A-Z\"(`])", para):
            if s.endswith(".") and SENTENCE_WORDS[0] <= len(s.split()) <= SENTENCE_WORDS[1]:
                out.append(s)
    return out


def terms(sentence: str) -> list[tuple[str, str]]:
    """(term, kind) of a sentence, in order (step 2 before the rarity cut): kind is "quoted" for a quoted or
    back-quoted term, "word" for an identifier-like word; each occurs once in the sentence."""
    found = [(a or b, "quoted") for a, b in QUOTED.findall(sentence)]
    bare = QUOTED.sub(" ", sentence)
    found += [(w, "word") for w in WORD.findall(bare) if _identifier_like(w)]
    return [(t, k) for t, k in dict.fromkeys(found) if sentence.count(t) == 1 and t.strip() == t]


def shape(term: str, kind: str) -> tuple:
    """What a term looks like, for distractors that look alike: its kind, and whether it holds a space, is a
    dunder name, is upper case, is dotted, holds other punctuation, is a number."""
    return (kind, " " in term, term.startswith("__") and term.endswith("__"), term.isupper(), "." in term,
            bool(re.search(r"[^\w. ]", term)), bool(re.fullmatch(r"[\d.]+", term)))


def key(text: str) -> str:
    """Text as the key-fact match compares it: lower case, quotes and back-quotes gone, spaces single."""
    return " ".join(re.sub(r"[\"`'\u2018\u2019\u201c\u201d]", " ", text.lower()).split())


def states(answer: str, term: str) -> bool:
    """Does the answer state the term (as key() normalises both, on word boundaries)?"""
    return re.search(r"(?<![\w.])" + re.escape(key(term)) + r"(?![\w])", key(answer)) is not None


def cloze(sentence: str, term: str) -> str:
    """The sentence with the term blanked (its quotes kept), cut to WINDOW words around the blank."""
    blanked = sentence.replace(term, BLANK, 1)
    words = blanked.split()
    at = next(i for i, w in enumerate(words) if BLANK in w)
    lo = max(0, min(at - WINDOW // 2, len(words) - WINDOW))
    shown = words[lo:lo + WINDOW]
    return ("... " if lo else "") + " ".join(shown) + (" ..." if lo + WINDOW < len(words) else "")


def question(doc_title: str | None, text: str) -> str:
    where = f' in the documentation of {doc_title}' if doc_title else " in the documentation"
    return (f"Fill in the blank{where} with the missing term. Reply with the term only.\n\n{text}")


def items(records: list[dict], per_doc: int, max_items: int = 0) -> list[dict]:
    """The questions of every source of `records` (the train split of the domain role): {id, source, doc,
    messages, term, kind, sentence, choices, label}. `max_items` per source at most (0: all), chosen in the
    order of their ids' sha256, so a larger cap keeps the smaller one's questions."""
    by_source: dict[str, list[dict]] = {}
    for r in sorted(records, key=lambda r: r["id"]):
        by_source.setdefault(r.get("source", ""), []).append(r)
    out = []
    for source, docs in by_source.items():
        facts = _facts(docs, per_doc)
        text_of = {d["id"]: d["text"] for d in docs}
        made = []
        for f in facts:
            others = [(t, k) for t, k, d in ((g["term"], g["kind"], g["doc"]) for g in facts)
                      if d != f["doc"] and t not in text_of[f["doc"]] and key(t) != key(f["term"])]
            alike = [t for t, k in others if shape(t, k) == shape(f["term"], f["kind"])]
            same_kind = [t for t, k in others if k == f["kind"]]
            pool = alike if len(set(alike)) >= CHOICES - 1 else same_kind
            wrong = sorted(dict.fromkeys(pool), key=lambda t: sha256_text(f["id"] + t))[: CHOICES - 1]
            if len(wrong) < CHOICES - 1:
                continue
            label = int(sha256_text(f["id"])[:8], 16) % CHOICES
            made.append({**f, "choices": wrong[:label] + [f["term"]] + wrong[label:], "label": label})
        if max_items:
            made = sorted(sorted(made, key=lambda f: sha256_text(f["id"]))[:max_items], key=lambda f: f["id"])
        out += made
    return out


def _facts(docs: list[dict], per_doc: int) -> list[dict]:
    """Steps 2-4 over one source's documents."""
    found = {d["id"]: [(s, terms(s)) for s in sentences(d["text"])] for d in docs}
    candidates = {t for fs in found.values() for _, ts in fs for t, _ in ts}
    df = Counter(t for d in docs for t in candidates if t in d["text"])  # documents that hold each term
    cap = max(1, int(RARE * len(docs)))
    facts = []
    for d in docs:
        heading = title(d["text"])
        usable = []
        for s, ts in found[d["id"]]:
            ts = [(t, k) for t, k in ts if df[t] <= cap and not (heading and t in heading)]
            if ts:
                usable.append((s, min(ts, key=lambda tk: df[tk[0]])))
        picked = [usable[round(i * (len(usable) - 1) / max(1, per_doc - 1))] for i in range(min(per_doc, len(usable)))]
        for n, (s, (t, k)) in enumerate(dict.fromkeys(picked)):
            facts.append({"id": f"{d['id']}#k{n}", "source": d.get("source", ""), "doc": d["id"], "term": t,
                          "kind": k, "sentence": s,
                          "messages": [{"role": "user", "content": question(heading, cloze(s, t))}]})
    return facts
