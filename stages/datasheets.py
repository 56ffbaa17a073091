"""datasheets: one datasheet per prepared dataset ("Datasheets for Datasets", Gebru et al.).

    python -m stages datasheets --data data/prepared --sources data/sources.yaml \
        --pii reports/data/pii.json --out reports/data/datasheets

For each role (domain, sft, general), <role>.md for people and <role>.json with
every field: purpose, composition per split and per drop, provenance and license
of every input file (data/sources.yaml), counts before and after each filter,
dedup and PII statistics, input and output hashes. A stage of its own, so that
rewording a datasheet reruns nothing but this.
"""
from __future__ import annotations

import argparse
import statistics
from collections import Counter
from pathlib import Path

from .core.io import atomic_dir, read_json, read_jsonl, sha256_file, write_json, write_text
from .core.params import ROLES
from .core.runtime import log
from .data import datasheet
from .data import sources as source_list
from .data.records import record_text


def split_stats(path: Path) -> tuple[dict, Counter]:
    """Rows, characters and characters per record of one prepared split, and its records per drop."""
    chars, per_drop = [], Counter()
    for row in read_jsonl(path):
        chars.append(len(record_text(row)))
        per_drop[row["source"]] += 1
    spread = {"min": min(chars), "median": int(statistics.median(chars)), "max": max(chars)} if chars else \
        {"min": 0, "median": 0, "max": 0}
    return {"rows": len(chars), "chars": sum(chars), "chars_per_record": spread}, per_drop


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="prepared data folder (splits and manifest.json)")
    ap.add_argument("--sources", required=True, help="data/sources.yaml: provenance and license per input file")
    ap.add_argument("--pii", required=True, help="prepare's PII report (JSON)")
    ap.add_argument("--out", required=True, help="folder for <role>.md and <role>.json")
    args = ap.parse_args(argv)

    data = Path(args.data)
    manifest, pii = read_json(data / "manifest.json"), read_json(args.pii)
    sources = source_list.load(args.sources)
    with atomic_dir(args.out) as tmp:
        for role in ROLES:
            stats, per_drop = {}, Counter()
            for split in ("train", "heldout"):
                stats[split], drops = split_stats(data / role / f"{split}.jsonl")
                per_drop.update(drops)
            stats["per_drop"] = dict(sorted(per_drop.items()))
            outputs = {f"{role}/{s}.jsonl": sha256_file(data / role / f"{s}.jsonl") for s in ("train", "heldout")}
            sheet = datasheet.build(role, manifest, pii, sources, outputs, stats)
            write_json(tmp / f"{role}.json", sheet)
            write_text(tmp / f"{role}.md", datasheet.to_markdown(sheet))
    log("datasheets", f"{len(ROLES)} datasheets -> {args.out}/")

