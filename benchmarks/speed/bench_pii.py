"""The PII scan on the seed, side by side in one process: the default pattern pass against a full scan.

    .venv/bin/python -m benchmarks.speed.bench_pii

Both scanners read the same texts (every seed record, as prepare scans them):
the default (`pii.scan_allowed: false`: PERSON, allowed, is not scanned; only
records a pattern could match go through presidio, spaCy without NER) and
`scan_allowed: true` (every entity, spaCy with NER on every record). Prints a
Markdown table.
"""
from __future__ import annotations

import json
import time

from benchmarks import common
from benchmarks.common import ROOT
from ratchet.core import params, runtime


def main() -> None:
    common.parser(__doc__).parse_args()
    runtime.start()
    from ratchet.data import pii

    records = [json.loads(line) for f in sorted((ROOT / "data/seed").rglob("*.jsonl"))
               for line in f.read_text().splitlines() if line.strip()]
    # prepare scans a normalised record; a raw seed record of another shape is scanned as its values joined
    texts = [pii.pii_text(r) if "text" in r or "messages" in r else "\n\n".join(map(str, r.values()))
             for r in records]
    mb = sum(len(t.encode()) for t in texts) / 1e6
    cfg = params.load(ROOT / "params.yaml", "pii")[0]
    columns = ["scan", "records", "sent to presidio", "time", "throughput", "findings"]
    formats = [None, ",d", ",d", "{:.1f} s", "{:.2f} MB/s", ",d"]
    out = common.table(columns, [], formats, align="lrrrrr")
    print(common.header(out), flush=True)
    for name, c in (("patterns only (default)", cfg),
                    ("every entity, NER on every record", cfg.model_copy(update={"scan_allowed": True}))):
        scanner = pii.Scanner(c)
        scanner.scan(texts[:50])  # warm: spaCy's first batch loads its tables
        started = time.time()
        found = scanner.scan(texts)
        seconds = time.time() - started
        sent = sum(1 for t in texts if pii.CANDIDATE.search(t)) if scanner.patterns_only else len(texts)
        out["rows"].append([name, len(texts), sent, seconds, mb / seconds, sum(map(len, found))])
        print(common.row(out, out["rows"][-1]), flush=True)
    common.record(__file__, {"settings": {"records": len(texts), "mb": mb}, "tables": {"main": out}})


if __name__ == "__main__":
    main()
