"""The PII scan on the seed, side by side in one process: the default pattern pass against a full scan.

    .venv/bin/python benchmarks/bench_pii.py

Both scanners read the same texts (every seed record, as prepare scans them):
the default (`pii.scan_allowed: false`: PERSON, allowed, is not scanned; only
records a pattern could match go through presidio, spaCy without NER) and
`scan_allowed: true` (every entity, spaCy with NER on every record). Prints a
Markdown table.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from stages.core import params, runtime  # noqa: E402


def main() -> None:
    runtime.start()
    from stages.data import pii

    records = [json.loads(line) for f in sorted((ROOT / "data/seed").rglob("*.jsonl"))
               for line in f.read_text().splitlines() if line.strip()]
    # prepare scans a normalised record; a raw seed record of another shape is scanned as its values joined
    texts = [pii.pii_text(r) if "text" in r or "messages" in r else "\n\n".join(map(str, r.values()))
             for r in records]
    mb = sum(len(t.encode()) for t in texts) / 1e6
    cfg = params.load(ROOT / "params.yaml", "pii")[0]
    print("| scan | records | sent to presidio | time | throughput | findings |\n|---|---:|---:|---:|---:|---:|")
    for name, c in (("patterns only (default)", cfg),
                    ("every entity, NER on every record", cfg.model_copy(update={"scan_allowed": True}))):
        scanner = pii.Scanner(c)
        scanner.scan(texts[:50])  # warm: spaCy's first batch loads its tables
        started = time.time()
        found = scanner.scan(texts)
        seconds = time.time() - started
        sent = sum(1 for t in texts if pii.CANDIDATE.search(t)) if scanner.patterns_only else len(texts)
        print(f"| {name} | {len(texts):,} | {sent:,} | {seconds:.1f} s | {mb / seconds:.2f} MB/s | "
              f"{sum(map(len, found)):,} |", flush=True)


if __name__ == "__main__":
    main()
