"""Datasheets for the prepared datasets, one per role, after Gebru et al., "Datasheets for Datasets".

Built from what the pipeline knows: prepare's manifest (per-file hashes and
counts, the count each filter took out, the params used), the PII report, the
provenance and license of each input file (its drop's SOURCE.yaml, else
data/sources.yaml) and the prepared files themselves. What is specific to a
corpus (what it is, its license, its known risks) comes from those files, never
from this module. Questions
the pipeline cannot answer are said to be so.
"""
from __future__ import annotations

import statistics
from collections import Counter
from pathlib import Path

from ratchet.core.io import read_jsonl
from ratchet.data import sources as source_list
from ratchet.data.records import record_text
from ratchet.reporting.render import render

TEMPLATE = "datasheet.md.j2"

PURPOSE = {
    "domain": "raw domain text for continued (domain-adaptive) pretraining of the model (DAPT), and held-out "
              "text to measure domain perplexity in the gates",
    "sft": "instruction / response pairs (chat messages) for LoRA supervised fine-tuning, and held-out pairs",
    # How much of each batch replays it, if any, is a training knob: each model's lineage.json records it.
    "general": "general text (languages: {languages}) the model must not forget: the replay buffer the training "
               "stages may rehearse, and held-out text to measure general perplexity in the gates",
}
FIELDS = {
    "domain": {"text": "str, normalised", "id": "first 16 hex of sha256 of the normalised text",
               "source": "drop the record came from (seed = drop zero, else ISO week)"},
    "sft": {"messages": "list of {role: system|user|assistant, content: str}, last role assistant",
            "id": "first 16 hex of sha256 of the normalised conversation",
            "source": "drop the record came from (seed = drop zero, else ISO week)"},
}
FIELDS["general"] = FIELDS["domain"]


def funnel(acc: dict) -> list[dict]:
    """Records before and after each step, in the order prepare applies them."""
    steps, n = [], acc["in"]
    for rule in ("parse", "schema", "normalise", "length", "language", "exact_dup", "near_dup", "pii"):
        out = 0 if rule == "normalise" else acc["rules"][rule]
        step = {"step": rule, "before": n, "after": n - out, "removed": out}
        if rule == "normalise":
            step["changed"] = acc["normalised"]
        if rule == "pii":
            step["redacted"] = acc["redacted"]
        steps.append(step)
        n -= out
    return steps


UNDECLARED = "UNDECLARED: add a SOURCE.yaml to the drop, or an entry to data/sources.yaml"


def build(role: str, manifest: dict, pii: dict | None, sources: list[dict], outputs: dict, stats: dict,
          drops: dict[str, dict] | None = None) -> dict:
    """The datasheet of one role as a JSON-able dict; `drops` are the drops' SOURCE.yaml records
    (sources.drop_records), which declare their files ahead of `sources`."""
    acc = manifest["roles"][role]
    inputs = {f: i for f, i in manifest["inputs"].items() if i["role"] == role}
    prov = []
    for f, i in inputs.items():
        entry, where = source_list.of_input(f, i["source"], drops or {}, sources)
        entry = entry or {}
        # a SOURCE.yaml may leave out when it was collected; an empty cell would read as undeclared
        optional = {"notes": "", "collected": "not stated" if where else UNDECLARED}
        prov.append({"file": f, "drop": i["source"], "sha256": i["sha256"], "bytes": i["bytes"],
                     "records_in": i["in"], "kept": i["kept"], "redacted": i["redacted"],
                     "quarantined": i["quarantined"],
                     **{k: entry.get(k, optional.get(k, UNDECLARED)) for k in source_list.FIELDS},
                     "declared_in": where or ("data/sources.yaml" if entry else None)})
    prep, pii_cfg = manifest["params"]["prepare"], manifest["params"]["pii"]
    purpose = PURPOSE[role].format(languages=", ".join(prep.get("languages") or ["not recorded"]))
    findings = (pii or {}).get("by_role", {}).get(role, "no PII report given")
    in_training = reached_training(findings, pii_cfg["policy"], (pii or {}).get("not_scanned", []))
    return {
        "dataset": f"ratchet/{role}",
        "motivation": {
            "purpose": purpose,
            "created_by": "the ratchet pipeline's prepare stage, from the seed corpus and the weekly drops",
            "funding": "not recorded by the pipeline",
        },
        "composition": {
            "instances": "one record per JSON line (or per blank-line separated block of a .txt file)",
            "fields": FIELDS[role],
            "splits": {s: {"records": stats[s]["rows"], "chars": stats[s]["chars"],
                           "chars_per_record": stats[s]["chars_per_record"]} for s in ("train", "heldout")},
            "records_per_drop": stats["per_drop"],
            "split_rule": f"held-out if int(sha256[:8], 16) / 2**32 < {prep['heldout_fraction']}: a function of the "
                          "content only, so a record never moves between splits when drops are added",
            "personal_data": "scanned with presidio (see preprocessing.pii); entities under policy `allow` remain "
                             "in the text; in the train split: " + (", ".join(
                                 f"{e} {v}" if isinstance(v, str) else f"{e} {v['hits']} hits in {v['records']} records"
                                 for e, v in in_training.items()) or "none allowed"),
            "labels": "none beyond the fields above",
        },
        "collection": {
            "sources": prov,
            "process": "files are added under data/drops/<ISO week>/<role>/ by `ratchet ingest` and tracked by DVC; "
                       "the seed (drop zero) is regenerated by data/seed/make_seed.py (see data/SOURCES.md)",
        },
        "preprocessing": {
            "accounting": {k: acc[k] for k in ("in", "kept", "redacted", "quarantined")},
            "identity": "in = kept + redacted + quarantined",
            "filters": funnel(acc),
            "params": prep,
            "dedup": {"exact": {"method": "sha256 of the normalised text, across every role and drop",
                                "removed": acc["rules"]["exact_dup"]},
                      "near": {"method": f"MinHash LSH (datasketch) of word {prep['near_dup_shingle_words']}-grams, "
                                         f"{prep['near_dup_num_perm']} permutations, estimated Jaccard >= "
                                         f"{prep['near_dup_threshold']}; the first record seen is kept",
                               "removed": acc["rules"]["near_dup"]}},
            "pii": {"tool": f"presidio-analyzer with spaCy pipeline {pii_cfg['spacy_model']}",
                    "policy": pii_cfg["policy"], "score_threshold": pii_cfg["score_threshold"],
                    "score_thresholds": pii_cfg["score_thresholds"],
                    "findings": findings,
                    "not_scanned": (pii or {}).get("not_scanned", []),
                    "reached_training": in_training,
                    "dropped": acc["rules"]["pii"], "redacted": acc["redacted"]},
            "quarantine": "quarantine.jsonl (beside the prepared splits) keeps every record left out, unredacted, "
                          "with file, line, drop, rule and reason: restrict access to it like the raw drops",
        },
        "uses": {
            "intended": purpose,
            "not_intended": "evaluation of other models (held-out splits are tuned to this pipeline's gates); any use "
                            "that needs the personal data of named people",
            "risks": "; ".join(dict.fromkeys(p["notes"] for p in prov if p["notes"]))
                     or "none declared: add `notes` to the drops' SOURCE.yaml or the entries of data/sources.yaml",
        },
        "distribution": {
            "licenses": sorted({p["license"] for p in prov}),
            "how": "not distributed by the pipeline; the prepared files are DVC outputs of this repository",
        },
        "maintenance": {
            "updates": "weekly drops; every `dvc repro` regenerates this datasheet when the data or params change",
            "errata": "records can be removed at the source and the pipeline rerun; quarantine.jsonl says why "
                      "each record was left out",
        },
        "hashes": {"inputs": {p["file"]: p["sha256"] for p in prov}, "outputs": outputs},
    }


def reached_training(findings: dict | str, policy: dict, not_scanned: list[str]) -> dict:
    """Per entity the policy allows: the hits (and records) left in the text of the train split, or why the PII
    report cannot say (the entity was not scanned, or the report predates the count)."""
    out = {}
    for e in sorted(e for e, a in policy.items() if a == "allow"):
        row = findings.get(e, {}) if isinstance(findings, dict) else None
        if e in not_scanned:
            out[e] = "not scanned (pii.scan_allowed false): not counted"
        elif row is None:
            out[e] = findings
        elif row and "train_hits" not in row:
            out[e] = "not recorded by this PII report: rerun prepare"
        else:
            out[e] = {"hits": row.get("train_hits", 0), "records": row.get("train_records", 0)}
    return out


def to_markdown(sheet: dict) -> str:
    """templates/datasheet.md.j2 for one datasheet as build() makes it."""
    return render(TEMPLATE, sheet=sheet)


def split_stats(path: Path) -> tuple[dict, Counter]:
    """Rows, characters and characters per record of one prepared split, and its records per drop."""
    chars, per_drop = [], Counter()
    for row in read_jsonl(path):
        chars.append(len(record_text(row)))
        per_drop[row["source"]] += 1
    spread = {"min": min(chars), "median": int(statistics.median(chars)), "max": max(chars)} if chars else \
        {"min": 0, "median": 0, "max": 0}
    return {"rows": len(chars), "chars": sum(chars), "chars_per_record": spread}, per_drop
