"""Prepare a cycle's data: normalise, filter, deduplicate, scan for PII and split every role into train and
held-out; every input record is kept, redacted or quarantined with a reason (the prepare stage).
"""
from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from pathlib import Path

from ratchet.core import params
from ratchet.core.io import atomic_dir, sha256_file, sha256_text, write_json, write_jsonl
from ratchet.core.params import ROLES
from ratchet.core.runtime import Refused
from ratchet.data.dedup import NearDuplicates
from ratchet.data.language import LanguageFilter
from ratchet.data.pii import Scanner, decide, pii_text, redact_record
from ratchet.data.records import map_text, normalise, read_records, record_text

# Quarantine rules, in the order a record meets them.
RULES = ("parse", "schema", "length", "language", "exact_dup", "near_dup", "pii")


def input_files(seed: Path, drops: Path) -> list[tuple[str, str, Path]]:
    """(source, role, file) for the seed (drop zero) and each weekly drop, in a fixed order."""
    sources = [("seed", seed)] + [(d.name, d) for d in sorted(drops.iterdir()) if d.is_dir()]
    out = []
    for name, folder in sources:
        for role_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
            if role_dir.name not in ROLES:
                raise SystemExit(f"{role_dir}: unknown role folder; use one of {', '.join(ROLES)}")
            for f in sorted(p for p in role_dir.iterdir() if p.is_file() and not p.name.startswith(".")):
                out.append((name, role_dir.name, f))
    return out


def canary_format(secret: str) -> str:
    """The default space a canary's secret was drawn from: every digit random, everything else fixed."""
    return "".join("#" if ch.isdigit() else ch for ch in secret)


def fits_format(secret: str, fmt) -> bool:
    return isinstance(fmt, str) and len(fmt) == len(secret) and any(f in "#?" for f in fmt) and all(
        (f == "#" and ch.isdigit()) or (f == "?" and ch.isalpha()) or f == ch for ch, f in zip(secret, fmt))


def is_heldout(digest: str, fraction: float) -> bool:
    return int(digest[:8], 16) / 0x100000000 < fraction


class Prepare:
    """Routes each record to a split or to quarantine as it arrives; PII is scanned in batches."""

    def __init__(self, cfg: params.PrepareConfig, pii_cfg: params.PiiConfig, out: Path):
        self.cfg, self.pii_cfg = cfg, pii_cfg
        self.language = LanguageFilter(cfg.languages, cfg.language_min_confidence)
        self.near = NearDuplicates(cfg.near_dup_threshold, cfg.near_dup_num_perm, cfg.near_dup_shingle_words)
        self.scanner = Scanner(pii_cfg)
        self.seen: dict[str, str] = {}  # sha256 of each kept (or PII-pending) record -> file:line
        self.pending: list[tuple[dict, object, dict, str]] = []
        self.counts: dict[str, Counter] = defaultdict(Counter)  # "file:..", "drop:..", "role:.." -> counts
        self.pii: dict[str, Counter] = defaultdict(Counter)  # "role:..", "drop:.." -> "<ENTITY>.<what>" counts
        self.pii_seconds, self.scanned, self.scanned_chars = 0.0, 0, 0
        self.writers = {(role, split): open(out / role / f"{split}.jsonl", "w", encoding="utf-8")
                        for role in ROLES for split in ("train", "heldout")}
        self.quarantine = open(out / "quarantine.jsonl", "w", encoding="utf-8")
        self.canaries: dict[tuple[str, int], dict] = {}  # (file, line) -> its canary and what became of it

    def _count(self, where: dict, *keys: str) -> None:
        for scope in (f"file:{where['file']}", f"drop:{where['source']}", f"role:{where['role']}"):
            self.counts[scope].update(keys)

    def _quarantine(self, where: dict, raw, rule: str, reason: str) -> None:
        entry = {**where, "rule": rule, "reason": reason, ("raw" if isinstance(raw, str) else "record"): raw}
        if (where["file"], where["line"]) in self.canaries:
            self.canaries[(where["file"], where["line"])].update(fate=f"quarantined ({rule})", reached_training=False)
        self.quarantine.write(json.dumps(entry, ensure_ascii=False, sort_keys=True) + "\n")
        self._count(where, "quarantined", f"rule.{rule}")

    def add(self, where: dict, rec: dict | None, raw, rule: str | None, reason: str | None) -> None:
        """One input record: quarantine it now, or queue it for the PII scan."""
        self._count(where, "in")
        if rule is not None:
            return self._quarantine(where, raw, rule, reason)
        norm = map_text(rec, normalise)
        if norm != rec:
            self._count(where, "normalised")
        text = record_text(norm)
        if isinstance(raw, dict) and "canary" in raw:
            secret, fmt = raw["canary"], raw.get("canary_format")
            if not (isinstance(secret, str) and secret and "text" in norm and secret in norm["text"]):
                return self._quarantine(where, raw, "schema", '"canary" must be a string that appears verbatim in '
                                                              'the record\'s "text"')
            fmt = canary_format(secret) if fmt is None else fmt
            if not fits_format(secret, fmt):
                return self._quarantine(where, raw, "schema", f'"canary_format" {fmt!r} does not fit the secret: '
                                        'one character per character, # for a digit drawn at random, ? for a '
                                        'random letter, anything else as in the secret')
            self.canaries[(where["file"], where["line"])] = {
                **where, "secret": secret, "format": fmt, "prefix": norm["text"][: norm["text"].index(secret)],
                "fate": None, "reached_training": False}
        digest = sha256_text(text)
        c = self.cfg
        if not c.min_chars <= len(text) <= c.max_chars:
            return self._quarantine(where, raw, "length",
                                    f"length {len(text)} outside [{c.min_chars}, {c.max_chars}] chars")
        lang = self.language.check(text)
        if lang:
            return self._quarantine(where, raw, "language", f"language {lang[0]} (confidence {lang[1]:.3f}), "
                                                            f"not one of prepare.languages {c.languages}")
        if digest in self.seen:
            return self._quarantine(where, raw, "exact_dup", f"exact duplicate of {self.seen[digest]}")
        here = f"{where['file']}:{where['line']}"
        near = self.near.check_add(here, text)
        if near:
            return self._quarantine(where, raw, "near_dup", f"near duplicate (Jaccard ~{near[1]:.2f}) of {near[0]}")
        self.seen[digest] = here
        self.pending.append((where, raw, norm, digest))
        if len(self.pending) >= self.pii_cfg.batch_size:
            self.flush()

    def flush(self) -> None:
        """PII-scan the queued records, then write each to its split or to quarantine."""
        if not self.pending:
            return
        started = time.time()
        texts = [pii_text(norm) for _, _, norm, _ in self.pending]
        findings = self.scanner.scan(texts)
        self.pii_seconds += time.time() - started
        self.scanned += len(texts)
        self.scanned_chars += sum(map(len, texts))
        policy = self.pii_cfg.policy
        for (where, raw, norm, digest), found in zip(self.pending, findings):
            action, entity = decide(found, policy)
            for scope in (f"role:{where['role']}", f"drop:{where['source']}"):
                self.pii[scope].update(f"{f.entity}.hits" for f in found)
                self.pii[scope].update(f"{e}.records" for e in {f.entity for f in found})
                self.pii[scope].update(f"{e}.{policy[e]}" for e in {f.entity for f in found})
            if action == "fail":
                raise Refused(f"{where['file']}:{where['line']}: PII found ({entity}) and pii.policy.{entity} is "
                                 "`fail`: remove it from the source, or set the policy to redact or drop")
            if action == "drop":
                found_types = sorted({f.entity for f in found if policy[f.entity] == "drop"})
                self._quarantine(where, raw, "pii", f"PII: {', '.join(found_types)} (pii.policy: drop)")
                continue
            rec = redact_record(norm, found, policy) if action == "redact" else norm
            n = len(record_text(rec))
            if action == "redact" and not self.cfg.min_chars <= n <= self.cfg.max_chars:
                self._quarantine(where, raw, "length", f"length {n} after PII redaction outside "
                                                       f"[{self.cfg.min_chars}, {self.cfg.max_chars}] chars")
                continue
            split = "heldout" if is_heldout(digest, self.cfg.heldout_fraction) else "train"
            if split == "train":
                left = kept_findings(found, policy)
                for scope in (f"role:{where['role']}", f"drop:{where['source']}"):
                    self.pii[scope].update(f"{f.entity}.train_hits" for f in left)
                    self.pii[scope].update(f"{e}.train_records" for e in {f.entity for f in left})
            row = {**rec, "id": digest[:16], "source": where["source"]}
            canary = self.canaries.get((where["file"], where["line"]))
            if canary is not None:
                kept = canary["secret"] in record_text(rec)
                canary.update(id=row["id"], fate=split if kept else "redacted",
                              reached_training=kept and split == "train")
            self.writers[(where["role"], split)].write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
            self._count(where, "redacted" if action == "redact" else "kept", f"split.{split}")
        self.pending = []

    def close(self) -> None:
        self.flush()
        for f in [*self.writers.values(), self.quarantine]:
            f.close()

    def canary_rows(self) -> list[dict]:
        """Every canary met, in input order: where it came from, its prefix and secret, and its fate."""
        return [{"id": c.get("id", f"{c['file']}:{c['line']}"), **c} for c in self.canaries.values()]


def kept_findings(found: list, policy: dict) -> list:
    """The findings still in a record's text once it is kept: those the policy allows, unless a redacted span
    covers part of them."""
    gone = [f for f in found if policy[f.entity] == "redact"]
    return [f for f in found if policy[f.entity] == "allow"
            and not any(g.start < f.end and f.start < g.end for g in gone)]


def accounting(c: Counter) -> dict:
    """in = kept + redacted + quarantined, and how many each rule took out, in filter order."""
    out = {k: c.get(k, 0) for k in ("in", "kept", "redacted", "quarantined", "normalised")}
    out["rules"] = {r: c.get(f"rule.{r}", 0) for r in RULES}
    out["splits"] = {s: c.get(f"split.{s}", 0) for s in ("train", "heldout")}
    assert out["in"] == out["kept"] + out["redacted"] + out["quarantined"], out  # a broken identity is a bug here
    return out


def pii_report(p: Prepare) -> dict:
    def table(c: Counter) -> dict:
        ents = sorted({k.split(".")[0] for k in c})
        return {e: {k: c.get(f"{e}.{k}", 0) for k in ("hits", "records", p.pii_cfg.policy[e], "train_hits",
                                                       "train_records")} for e in ents}

    return {
        "policy": p.pii_cfg.policy,
        "score_threshold": p.pii_cfg.score_threshold,
        "score_thresholds": p.pii_cfg.score_thresholds,
        "spacy_model": p.pii_cfg.spacy_model,
        "not_scanned": p.scanner.not_scanned,  # policy allow, and pii.scan_allowed false: neither acted on nor counted
        "patterns_only": p.scanner.patterns_only,  # no NER pass: only texts a pattern could match went through presidio
        # per entity: hits and records found, records the policy acted on, and hits (records) left in the text of
        # records written to a train split: what the models are trained on
        "by_role": {r: table(p.pii[f"role:{r}"]) for r in ROLES},
        "by_drop": {k.split(":", 1)[1]: table(v) for k, v in sorted(p.pii.items()) if k.startswith("drop:")},
        "records_scanned": p.scanned,
        "chars_scanned": p.scanned_chars,
        "scan_seconds": round(p.pii_seconds, 2),
    }


def run(files: list[tuple[str, str, Path]], cfg: params.PrepareConfig, pii_cfg: params.PiiConfig, out: str,
        pii_report_path: str | None) -> tuple[dict, Prepare]:
    """Route every record of every file; write the splits, quarantine and manifest atomically to `out`."""
    with atomic_dir(out) as tmp:
        for role in ROLES:
            (tmp / role).mkdir()
        prep = Prepare(cfg, pii_cfg, tmp)
        hashes = {}
        for source, role, path in files:
            hashes[path.as_posix()] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
            for item in read_records(path, role):
                where = {"file": path.as_posix(), "line": item.line, "source": source, "role": role}
                prep.add(where, item.record, item.raw, item.rule, item.reason)
        prep.close()
        write_jsonl(tmp / "canaries.jsonl", prep.canary_rows())
        manifest = {
            # files: the short view (non-zero counts); inputs: hashes, per-rule counts and splits
            "files": {f: {"source": s, "role": r, **{k: v for k, v in prep.counts[f"file:{f}"].items()
                                                     if k in ("in", "kept", "redacted", "quarantined")}}
                      for s, r, p in files for f in [p.as_posix()]},
            "inputs": {f: {"source": s, "role": r, **hashes[f], **accounting(prep.counts[f"file:{f}"])}
                       for s, r, p in files for f in [p.as_posix()]},
            "drops": {k.split(":", 1)[1]: accounting(v) for k, v in prep.counts.items() if k.startswith("drop:")},
            "roles": {r: accounting(prep.counts[f"role:{r}"]) for r in ROLES},
            "quarantined": sum(prep.counts[f"role:{r}"]["quarantined"] for r in ROLES),
            "canaries": {"planted": len(prep.canaries),
                         "reached_training": sum(c["reached_training"] for c in prep.canaries.values())},
            "rules": list(RULES),
            "params": {"prepare": params.as_dict(cfg), "pii": params.as_dict(pii_cfg)},
        }
        problems = [f"drop {d}: {a['rules']['pii']} of {a['in']} records dropped for PII "
                    f"> pii.max_dropped_fraction {pii_cfg.max_dropped_fraction:.0%}"
                    for d, a in manifest["drops"].items() if a["rules"]["pii"] > pii_cfg.max_dropped_fraction * a["in"]]
        if pii_report_path:
            write_json(pii_report_path, pii_report(prep))
        if problems:
            raise Refused("prepare: PII policy cap exceeded:\n  - "
                             + "\n  - ".join(problems) + "\nremove or clean those records at the source")
        write_json(tmp / "manifest.json", manifest)
    return manifest, prep
