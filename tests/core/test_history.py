"""Training histories are DVCLive folders: what a training stage writes under `dvc repro` is what `dvc plots show`,
`dvc metrics show` and `dvc exp show` read, and what the run report reads back."""
from __future__ import annotations

import json

from ratchet.core.history import read_history, write_history
from ratchet.core.io import sha256_tree

from ..conftest import run

ROWS = [{"step": s, "loss": round(3.0 - 0.25 * s, 5), "lr": 1e-3 * s / 3, "grad_norm": 1.5 + s, "ewc": 0.125 * s}
        for s in (1, 2, 3)]


def test_a_history_reads_back_as_written_and_writes_the_same_bytes_again(tmp_path):
    write_history(tmp_path / "a", ROWS)
    write_history(tmp_path / "b", ROWS)
    assert read_history(tmp_path / "a") == ROWS and list(read_history(tmp_path / "a")[0]) == list(ROWS[0])
    assert sha256_tree(tmp_path / "a") == sha256_tree(tmp_path / "b"), "no clock in the files"
    assert {p.relative_to(tmp_path / "a").as_posix() for p in (tmp_path / "a").rglob("*") if p.is_file()} == {
        "metrics.json", *(f"plots/metrics/{k}.tsv" for k in ("loss", "lr", "grad_norm", "ewc"))}
    assert read_history(tmp_path / "missing") == []


def test_dvc_reads_the_history_a_stage_writes_under_dvc_repro(tmp_path):
    """A stage declared as the training stages are (metrics.json as `metrics:`, plots/metrics as `plots:`):
    DVCLive writes no dvc.yaml and commits nothing inside `dvc repro`, and DVC's readers get every step."""
    (tmp_path / "train.py").write_text("from ratchet.core.history import write_history\n"
                                       f"write_history('reports/train/dapt', {ROWS!r})\n")
    (tmp_path / "dvc.yaml").write_text("""stages:
  train:
    cmd: python train.py
    deps: [train.py]
    metrics:
      - reports/train/dapt/metrics.json: {cache: false}
    plots:
      - reports/train/dapt/plots/metrics: {cache: false, x: step}
""")
    run("git init -q && git config user.name t && git config user.email t@t.invalid && python -m dvc init -q "
        "&& git add -A && git commit -qm init", tmp_path)
    run(["python", "-m", "dvc", "repro"], tmp_path)
    assert run(["git", "rev-list", "--count", "HEAD"], tmp_path).stdout.strip() == "1", "no commit of DVCLive's"
    assert not list((tmp_path / "reports").rglob("dvc.yaml")), "no dvc.yaml of DVCLive's"

    plots = json.loads(run(["python", "-m", "dvc", "plots", "show", "--json"], tmp_path).stdout)["data"]
    for key in ("loss", "lr", "grad_norm", "ewc"):
        values = plots[f"reports/train/dapt/plots/metrics/{key}.tsv"][0]["content"]["data"]["values"]
        assert [(int(v["step"]), float(v[key])) for v in values] == [(r["step"], r[key]) for r in ROWS]
    metrics = json.loads(run(["python", "-m", "dvc", "metrics", "show", "--json"], tmp_path).stdout)
    assert metrics[""]["data"]["reports/train/dapt/metrics.json"]["data"] == ROWS[-1]
    table = json.loads(run(["python", "-m", "dvc", "exp", "show", "--json"], tmp_path).stdout)
    assert table[0]["data"]["metrics"]["reports/train/dapt/metrics.json"]["data"]["loss"] == ROWS[-1]["loss"]
    assert read_history(tmp_path / "reports/train/dapt") == ROWS


def test_the_loss_trend_compares_the_means_of_the_first_and_last_tenth_not_two_batches():
    from ratchet.core.history import loss_trend

    # falling on average, with a last batch harder than the first (a replay batch of other text)
    losses = [3.0, 2.0, 2.9, 2.1, 2.6, 1.9, 2.4, 1.8, 2.2, 1.7, 2.0, 1.6, 1.9, 1.5, 1.8, 1.4, 1.7, 1.3, 1.2, 3.2]
    rows = [{"step": i + 1, "loss": x} for i, x in enumerate(losses)]
    assert rows[-1]["loss"] > rows[0]["loss"]
    text = loss_trend(rows)
    assert text == "loss 2.500 (mean of the first 2 steps) -> 2.200 (the last 2)", text
    assert loss_trend(rows[:3]) == "loss 3.000 (mean of the first 1 step) -> 2.900 (the last 1)"
    assert loss_trend([]) == "no loss recorded"
