"""validate: the data gate. great_expectations suites on every prepared split.

    python -m stages.validate --params params.yaml --data data/prepared \
        --out reports/data/validation.json --audit-log reports/audit/log.jsonl

Per role and split: schema (the fields a role needs), no nulls, length bounds,
unique ids, minimum row counts; and per role a ceiling on the share of input
records that prepare quarantined. A failed expectation fails the stage, which
stops every training stage downstream.
"""
from __future__ import annotations

import argparse
import logging
import time

import pandas as pd

from .common import audit_log, params
from .common.io import read_json, read_jsonl, write_json
from .common.params import ROLES
from .common.runtime import log


def expectations(role: str, split: str, cfg: params.ValidateConfig, prep: params.PrepareConfig) -> list:
    import great_expectations.expectations as gxe

    field = "messages" if role == "sft" else "text"
    out = [
        gxe.ExpectColumnToExist(column=field),
        gxe.ExpectColumnValuesToNotBeNull(column=field),
        gxe.ExpectColumnValuesToBeUnique(column="id"),
        gxe.ExpectTableRowCountToBeBetween(min_value=cfg.min_rows[role] if split == "train" else 1),
    ]
    if role != "sft":
        out.append(gxe.ExpectColumnValueLengthsToBeBetween(column="text", min_value=prep.min_chars,
                                                           max_value=prep.max_chars))
    return out


def validate_frame(context, name: str, df: pd.DataFrame, suite_items: list) -> dict:
    import great_expectations as gx

    source = context.data_sources.add_pandas(name=f"src_{name}")
    batch_def = source.add_dataframe_asset(name=name).add_batch_definition_whole_dataframe(f"batch_{name}")
    suite = context.suites.add(gx.ExpectationSuite(name=f"suite_{name}", expectations=suite_items))
    vd = context.validation_definitions.add(gx.ValidationDefinition(name=f"vd_{name}", data=batch_def, suite=suite))
    result = vd.run(batch_parameters={"dataframe": df})
    failed = [{"expectation": r.expectation_config.type, "kwargs": {k: v for k, v in r.expectation_config.kwargs.items()
                                                                    if k != "batch_id"},
               "observed": r.result.get("observed_value", r.result.get("unexpected_count"))}
              for r in result.results if not r.success]
    return {"success": bool(result.success), "rows": len(df), "statistics": dict(result.statistics), "failed": failed}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--audit-log", required=True)
    args = ap.parse_args(argv)
    cfg, prep = params.load(args.params, "validate", "prepare")
    started = time.time()

    import great_expectations as gx

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    context = gx.get_context(mode="ephemeral")
    manifest = read_json(f"{args.data}/manifest.json")
    report, problems = {"roles": {}}, []
    for role in ROLES:
        report["roles"][role] = {}
        for split in ("train", "heldout"):
            df = pd.DataFrame(list(read_jsonl(f"{args.data}/{role}/{split}.jsonl")))
            if df.empty:
                df = pd.DataFrame({"id": [], "messages" if role == "sft" else "text": []})
            res = validate_frame(context, f"{role}_{split}", df, expectations(role, split, cfg, prep))
            report["roles"][role][split] = res
            problems += [f"{role}/{split}: {f['expectation']} {f['kwargs']} observed {f['observed']}"
                         for f in res["failed"]]
        files = [f for f in manifest["files"].values() if f["role"] == role]
        n_in, n_q = sum(f.get("in", 0) for f in files), sum(f.get("quarantined", 0) for f in files)
        share = n_q / n_in if n_in else 0.0
        report["roles"][role]["quarantine"] = {"in": n_in, "quarantined": n_q, "share": round(share, 4)}
        if share > cfg.max_quarantine_fraction:
            problems.append(f"{role}: {share:.1%} of records quarantined > validate.max_quarantine_fraction "
                            f"{cfg.max_quarantine_fraction:.0%}; see {args.data}/quarantine.jsonl")
    report.update(verdict="fail" if problems else "pass", reason="; ".join(problems) or "every expectation met",
                  wall_time_s=round(time.time() - started, 2))
    write_json(args.out, report)
    audit_log.append(args.audit_log, "data_gate", verdict=report["verdict"], reason=report["reason"],
                     manifest=manifest["roles"])
    if problems:
        raise SystemExit("validate: data gate FAILED:\n  - " + "\n  - ".join(problems))
    log("validate", f"data gate passed ({len(ROLES) * 2} splits) "
                    f"in {report['wall_time_s']:.1f}s -> {args.out}")


if __name__ == "__main__":
    main()
