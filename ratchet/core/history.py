"""A training stage's per-step history as a DVCLive folder, which `dvc plots show` and `dvc exp show` read.

    <folder>/metrics.json              the last step's values (dvc.yaml `metrics:`)
    <folder>/plots/metrics/<key>.tsv   step and value of `key` at every optimizer step (dvc.yaml `plots:`)

While a stage trains, its history lives in the training checkpoint (ratchet.models.train), so a resumed run
ends with the history of a run never stopped. The folder is written once, from that history, after the
stage's model: aside and then renamed, so a killed stage leaves the previous folder or none, never a part
of one that looks whole.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

from ratchet.core.io import atomic_dir

METRICS = "metrics.json"
PLOTS = Path("plots") / "metrics"


def write_history(folder: str | Path, rows: list[dict]) -> None:
    """`rows` ({"step": n, key: value, ...} per optimizer step) as DVCLive's files in `folder`."""
    from dvclive import Live

    with atomic_dir(folder) as tmp:
        # Inside `dvc repro` DVC owns dvc.yaml, git and experiments: DVCLive writes its files and nothing else
        # (no dvc.yaml of its own, no experiment commit, no report); DVC_STUDIO_OFFLINE (runtime.start) keeps it
        # from posting to Studio.
        live = Live(str(tmp), report=None, save_dvc_exp=False, dvcyaml=None, monitor_system=False)
        for row in rows:
            live.step = row["step"]
            for key, value in row.items():
                if key != "step":
                    live.log_metric(key, value)
        live.end()


def loss_trend(rows: list[dict], key: str = "loss") -> str:
    """The mean loss of the first and of the last tenth of training (at least one step each): single batches
    differ by their text (a replay batch of general English against one of code), so the first and last alone
    can read as a rise while the model improves."""
    values = [r[key] for r in rows if key in r]
    if not values:
        return f"no {key} recorded"
    tenth = max(1, len(values) // 10)
    first, last = values[:tenth], values[-tenth:]
    return (f"{key} {sum(first) / len(first):.3f} (mean of the first {tenth} step{'s' if tenth > 1 else ''}) -> "
            f"{sum(last) / len(last):.3f} (the last {tenth})")


def read_history(folder: str | Path) -> list[dict]:
    """The rows write_history wrote, their keys in the order they were logged ([] when there is no folder)."""
    folder = Path(folder)
    if not (folder / METRICS).is_file():
        return []
    keys = [k for k in json.loads((folder / METRICS).read_text()) if k != "step"]
    rows: dict[int, dict] = {}
    for key in keys:
        with open(folder / PLOTS / f"{key}.tsv", newline="", encoding="utf-8") as f:
            for r in csv.DictReader(f, delimiter="\t"):
                step = int(r["step"])
                rows.setdefault(step, {"step": step})[key] = float(r[key])
    return [rows[s] for s in sorted(rows)]
