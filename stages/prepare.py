"""prepare: read the seed and every weekly drop, normalise, filter, deduplicate, scan for PII, split.

    python -m stages prepare --params params.yaml --seed data/seed --drops data/drops \
        --out data/prepared --pii-report reports/data/pii.json

Inputs are folders laid out as <source>/<role>/<file> where role is one of
domain (raw text), sft (instruction pairs or chat messages) or general (text the
model must not forget); a drop is data/drops/<ISO week>/<role>/<file>.
Accepted files: .jsonl with {"text"} (domain, general), {"prompt", "response"}
or {"messages": [{"role", "content"}, ...]} (sft); .txt (domain, general: one
record per blank-line separated block).

Each record goes through, in order: parse, schema, normalise (NFC, control
characters, whitespace), length bounds, language (py3langid), exact duplicate
(sha256), near duplicate (MinHash LSH, datasketch), PII (presidio, policy in
params.yaml `pii`). It ends in exactly one place: a role's train split, its
held-out split (chosen by the hash of its normalised content, so a record never
moves between splits when later drops arrive), or quarantine.jsonl with the
original record (or the raw line), where it came from, the rule and the reason.
A redacted record is kept with <ENTITY> placeholders and counted as redacted.

A text record may carry a canary: {"text": ..., "canary": SECRET}, a made-up
secret (a card number, a phone number, ...) planted in its text to measure
whether a model trained on the data memorises personal data, and optionally
"canary_format", the space it was drawn from (# a random digit, ? a random
letter, any other character fixed; by default every digit is random). Its fate is
written to canaries.jsonl: the text before the secret (the prefix a gate
prompts with), the secret, and whether the secret reached a training split
verbatim or was redacted, dropped or held out on the way.
manifest.json holds, per input file, per drop and per role:
in = kept + redacted + quarantined, and the count each rule took out.

Input is streamed line by line and outputs are written as records are decided:
memory does not grow with the corpus, only the dedup indexes grow with the
number of records kept (a sha256 per kept record, a MinHash signature per kept
record). A file prepare cannot read as text (binary, not UTF-8 at all, empty, no
valid JSON line) stops the stage with the file named and the fix; a bad line
among good ones is quarantined.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from ratchet.core import params
from ratchet.core.runtime import log
from ratchet.data.prepare import input_files, run
from ratchet.data.records import RecordFileError, sniff


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--seed", required=True, help="seed data folder (drop zero)")
    ap.add_argument("--drops", required=True, help="folder of weekly drops")
    ap.add_argument("--out", required=True)
    ap.add_argument("--pii-report", help="where to write PII counts per entity, role and drop (JSON)")
    args = ap.parse_args(argv)
    cfg, pii_cfg = params.load(args.params, "prepare", "pii")
    started = time.time()

    files = input_files(Path(args.seed), Path(args.drops))
    try:
        for _, _, path in files:  # before loading any model: a file that is not text stops the stage at once
            sniff(path)
        manifest, prep = run(files, cfg, pii_cfg, args.out, args.pii_report)
    except RecordFileError as e:
        raise SystemExit(str(e)) from None
    for d, a in manifest["drops"].items():
        if a["in"] and a["rules"]["exact_dup"] + a["rules"]["near_dup"] == a["in"]:
            log("prepare", f"WARNING: drop {d}: every record is a duplicate of one already kept")
    for role, a in manifest["roles"].items():
        log("prepare", f"{role}: in={a['in']} kept={a['kept']} redacted={a['redacted']} "
                       f"quarantined={a['quarantined']} train={a['splits']['train']} heldout={a['splits']['heldout']}")
    log("prepare", f"quarantined={manifest['quarantined']} -> {args.out}/quarantine.jsonl; "
                   f"PII scan {prep.pii_seconds:.1f}s of {time.time() - started:.1f}s")

