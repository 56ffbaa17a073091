"""validate: the data gate. great_expectations suites on every prepared split.

    python -m stages validate --params params.yaml --data data/prepared --drops data/drops \
        --sources data/sources.yaml --out reports/data/validation.json --markdown reports/data/validation.md \
        --audit-log reports/audit/log.jsonl

Per role and split: schema (the fields a role needs), no nulls, length bounds,
unique ids, nearly unique texts, minimum row counts (and for sft, a conversation
ends with the assistant); per role a ceiling on the share of input records that
prepare quarantined; and every input file must have its provenance and license
declared: a drop's file by its drop's SOURCE.yaml (data/drops/<week>/SOURCE.yaml,
which ingest checked), anything else by an entry of data/sources.yaml. Where
both declare a drop file, the drop's SOURCE.yaml wins and the report lists the
file as shadowed. A failed check fails the stage, which stops every training
stage downstream. The report is written either way.
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from ratchet.core import audit_log, params
from ratchet.core.io import read_json, write_json, write_text
from ratchet.core.params import ROLES
from ratchet.core.runtime import log
from ratchet.data import sources as source_list
from ratchet.data.validation import expectations, frame, validate_frame
from ratchet.reporting.validation import markdown


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", required=True)
    ap.add_argument("--drops", required=True, help="folder of weekly drops, each with its SOURCE.yaml")
    ap.add_argument("--sources", required=True, help="data/sources.yaml: provenance and license of the other files")
    ap.add_argument("--out", required=True)
    ap.add_argument("--markdown", required=True, help="a readable summary of the gate")
    ap.add_argument("--audit-log", required=True)
    args = ap.parse_args(argv)
    cfg, prep = params.load(args.params, "validate", "prepare")
    started = time.time()

    import great_expectations as gx

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    # one log line per stage event: no "Calculating Metrics" bar per expectation suite
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    manifest = read_json(f"{args.data}/manifest.json")
    sources = source_list.load(args.sources)
    drops, bad_sources = source_list.drop_records(args.drops)
    report, problems = {"roles": {}}, list(bad_sources) if cfg.require_provenance else []
    for role in ROLES:
        report["roles"][role] = {}
        for split in ("train", "heldout"):
            df = frame(Path(args.data) / role / f"{split}.jsonl", role)
            res = validate_frame(context, f"{role}_{split}", df, expectations(role, split, cfg, prep))
            report["roles"][role][split] = res
            problems += [f"{role}/{split}: {f['expectation']} {f['kwargs']} observed {f['observed']}"
                         for f in res["failed"]]
        acc = manifest["roles"][role]
        share = acc["quarantined"] / acc["in"] if acc["in"] else 0.0
        report["roles"][role]["quarantine"] = {"in": acc["in"], "quarantined": acc["quarantined"],
                                               "share": round(share, 4), "max": cfg.max_quarantine_fraction,
                                               "rules": acc["rules"]}
        if share > cfg.max_quarantine_fraction:
            problems.append(f"{role}: {share:.1%} of records quarantined > validate.max_quarantine_fraction "
                            f"{cfg.max_quarantine_fraction:.0%}; see {args.data}/quarantine.jsonl")
    declared_in = {f: source_list.of_input(f, i["source"], drops, sources) for f, i in manifest["inputs"].items()}
    undeclared = [f for f, (entry, _) in declared_in.items() if entry is None]
    report["provenance"] = {
        "declared": [f for f in manifest["inputs"] if f not in undeclared],
        "undeclared": undeclared,
        "declared_in": {f: where or args.sources for f, (entry, where) in declared_in.items() if entry},
        "drops": {d: {"path": r["path"], "sha256": r["sha256"], "license": r["license"]} for d, r in drops.items()},
        # a sources.yaml entry that a drop's own SOURCE.yaml overrides: stale, or written before drops carried one
        "shadowed": [f for f, (_, where) in declared_in.items() if where and source_list.match(f, sources)],
    }
    if undeclared and cfg.require_provenance:
        problems.append(f"no provenance for {', '.join(undeclared)}: add an entry (path, what, origin, license) "
                        f"to {args.sources}, or, for a weekly drop, a SOURCE.yaml to its week's folder "
                        f"({args.drops}/<week>/, see {args.drops}/README.md)")
    # No wall time in the report: it is a dependency of dapt, and a rerun with the same verdict must not retrain.
    report.update(verdict="fail" if problems else "pass", reason="; ".join(problems) or "every expectation met")
    write_json(args.out, report)
    write_text(args.markdown, markdown(report, args.data))
    audit_log.append(args.audit_log, "data_gate", verdict=report["verdict"], reason=report["reason"],
                     manifest={r: {k: a[k] for k in ("in", "kept", "redacted", "quarantined", "splits")}
                               for r, a in manifest["roles"].items()})
    if problems:
        raise SystemExit("validate: data gate FAILED:\n  - " + "\n  - ".join(problems))
    log("validate", f"data gate passed ({len(ROLES) * 2} splits) "
                    f"in {time.time() - started:.1f}s -> {args.out}, {args.markdown}")

