"""great_expectations suites for prepared data, one per role and split (the data gate).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ratchet.core import params
from ratchet.core.io import read_jsonl
from ratchet.data.records import record_text


def expectations(role: str, split: str, cfg: params.ValidateConfig, prep: params.PrepareConfig) -> list:
    import great_expectations.expectations as gxe

    field = "messages" if role == "sft" else "text"
    min_rows = cfg.min_rows[role] if split == "train" else cfg.min_heldout_rows
    out = [
        *[gxe.ExpectColumnToExist(column=c) for c in (field, "id", "source")],
        *[gxe.ExpectColumnValuesToNotBeNull(column=c) for c in (field, "id", "source")],
        gxe.ExpectColumnValuesToBeUnique(column="id"),
        gxe.ExpectColumnValuesToBeUnique(column="content", mostly=cfg.min_unique_text_fraction),
        gxe.ExpectTableRowCountToBeBetween(min_value=min_rows),
        gxe.ExpectColumnValuesToBeBetween(column="chars", min_value=prep.min_chars, max_value=prep.max_chars),
    ]
    if role == "sft":
        out.append(gxe.ExpectColumnValuesToBeInSet(column="last_role", value_set=["assistant"]))
    return out


def frame(path: Path, role: str) -> pd.DataFrame:
    """A prepared split with the derived columns the suites check: content, chars (and last_role for sft)."""
    rows = list(read_jsonl(path))
    field = "messages" if role == "sft" else "text"
    df = pd.DataFrame(rows, columns=[field, "id", "source"])
    content = [record_text(r) for r in rows]
    df["content"] = pd.Series(content, dtype=object)
    df["chars"] = pd.Series([len(c) for c in content], dtype="int64")
    if role == "sft":
        df["last_role"] = pd.Series([r["messages"][-1]["role"] for r in rows], dtype=object)
    return df


def validate_frame(context, name: str, df: pd.DataFrame, suite_items: list) -> dict:
    import great_expectations as gx

    source = context.data_sources.add_pandas(name=f"src_{name}")
    batch_def = source.add_dataframe_asset(name=name).add_batch_definition_whole_dataframe(f"batch_{name}")
    suite = context.suites.add(gx.ExpectationSuite(name=f"suite_{name}", expectations=suite_items))
    vd = context.validation_definitions.add(gx.ValidationDefinition(name=f"vd_{name}", data=batch_def, suite=suite))
    result = vd.run(batch_parameters={"dataframe": df})
    checks = [{"expectation": r.expectation_config.type, "success": bool(r.success),
               "kwargs": {k: v for k, v in r.expectation_config.kwargs.items() if k != "batch_id"},
               "observed": r.result.get("observed_value", r.result.get("unexpected_count"))}
              for r in result.results]
    return {"success": bool(result.success), "rows": len(df), "statistics": dict(result.statistics),
            "failed": [c for c in checks if not c["success"]], "checks": checks}
