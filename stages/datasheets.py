"""datasheets: one datasheet per prepared dataset ("Datasheets for Datasets", Gebru et al.).

    python -m stages datasheets --data data/prepared --drops data/drops --sources data/sources.yaml \
        --pii reports/data/pii.json --out reports/data/datasheets

For each role (domain, sft, general), <role>.md for people and <role>.json with
every field: purpose, composition per split and per drop, provenance and license
of every input file (its drop's SOURCE.yaml, else data/sources.yaml), counts before and after each filter,
dedup and PII statistics, input and output hashes. A stage of its own, so that
rewording a datasheet reruns nothing but this.
"""
from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from ratchet.core.io import atomic_dir, read_json, sha256_file, write_json, write_text
from ratchet.core.params import ROLES
from ratchet.core.runtime import log
from ratchet.data import sources as source_list
from ratchet.reporting import datasheet
from ratchet.reporting.datasheet import split_stats


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="prepared data folder (splits and manifest.json)")
    ap.add_argument("--drops", required=True, help="folder of weekly drops, each with its SOURCE.yaml")
    ap.add_argument("--sources", required=True, help="data/sources.yaml: provenance and license of the other files")
    ap.add_argument("--pii", required=True, help="prepare's PII report (JSON)")
    ap.add_argument("--out", required=True, help="folder for <role>.md and <role>.json")
    args = ap.parse_args(argv)

    data = Path(args.data)
    manifest, pii = read_json(data / "manifest.json"), read_json(args.pii)
    sources = source_list.load(args.sources)
    drop_sources, problems = source_list.drop_records(args.drops)
    if problems:
        raise SystemExit("datasheets: a drop's provenance cannot be read:\n" + "\n".join(problems))
    with atomic_dir(args.out) as tmp:
        for role in ROLES:
            stats, per_drop = {}, Counter()
            for split in ("train", "heldout"):
                stats[split], drops = split_stats(data / role / f"{split}.jsonl")
                per_drop.update(drops)
            stats["per_drop"] = dict(sorted(per_drop.items()))
            outputs = {f"{role}/{s}.jsonl": sha256_file(data / role / f"{s}.jsonl") for s in ("train", "heldout")}
            sheet = datasheet.build(role, manifest, pii, sources, outputs, stats, drop_sources)
            write_json(tmp / f"{role}.json", sheet)
            write_text(tmp / f"{role}.md", datasheet.to_markdown(sheet))
    log("datasheets", f"{len(ROLES)} datasheets -> {args.out}/")

