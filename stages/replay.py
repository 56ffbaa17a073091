"""replay: split a cycle's training data into what is new and a capped, versioned replay buffer.

    python -m stages replay --params params.yaml --data data/prepared --out data/replay

A cycle learns from its newest drop (the seed, before any drop arrives) and
rehearses what came before from the replay buffer. The buffer is a uniform
sample without replacement, per role, of
  - domain and sft: the train records of every earlier source (seed and older drops),
  - general: the general train records of every source (text the model must keep),
capped at replay.max_records per role. Each record's place in the sample is
fixed by a key, sha256(seed:role:record id); the buffer is the max_records
records with the smallest keys (bottom-k sampling). That makes it a reservoir:
adding a drop only adds candidates, a record once evicted never returns, and the
buffer after cycle n equals the buffer after cycle n-1 updated with the records
cycle n added to the past. It depends on nothing but the prepared data, the seed
and the cap, so `dvc repro` at any commit rebuilds that cycle's buffer exactly,
and dvc.lock records its hash.

Out:
  new/<role>.jsonl      domain and sft train records of the newest source; when the
                        newest source has none of a role, that role's buffer stands in
                        (recorded in the manifest), so a drop of only sft pairs still trains
  buffer/<role>.jsonl   the replay sample of each role, in key order
  manifest.json         newest source, earlier sources, population and kept count per
                        role, cap, seed, and the sha256 of every file
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ratchet.core import params
from ratchet.core.io import atomic_dir, sha256_file, write_json, write_jsonl
from ratchet.core.params import ROLES
from ratchet.core.runtime import log
from ratchet.data.replay import NEW_ROLES, build


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", required=True, help="prepared data folder")
    ap.add_argument("--out", required=True, help="folder for new/, buffer/ and manifest.json")
    args = ap.parse_args(argv)

    run, cfg = params.load(args.params, "run", "replay")
    new, buffer, manifest = build(Path(args.data), cfg, run.seed)
    with atomic_dir(args.out) as tmp:
        for role, rows in new.items():
            write_jsonl(tmp / "new" / f"{role}.jsonl", rows)
        for role, rows in buffer.items():
            write_jsonl(tmp / "buffer" / f"{role}.jsonl", rows)
        manifest["sha256"] = {p.relative_to(tmp).as_posix(): sha256_file(p) for p in sorted(tmp.rglob("*.jsonl"))}
        write_json(tmp / "manifest.json", manifest)
    roles = manifest["roles"]
    log("replay", f"newest source {manifest['newest']}; new: "
                  + ", ".join(f"{r} {roles[r]['new']} (from {roles[r]['new_from']})" for r in NEW_ROLES)
                  + "; buffer: " + ", ".join(f"{r} {roles[r]['buffer']} of {roles[r]['buffer_population']}"
                                              for r in ROLES) + f" -> {args.out}/")
