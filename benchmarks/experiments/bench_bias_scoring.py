"""How the bias sets are scored: which BBQ scoring reads above chance, and how many items each rule needs.

    .venv/bin/python -m benchmarks.experiments.bench_bias_scoring --model <a model folder> [--items 480] \
        [--old-pairs <the unbalanced stereotype_pairs.jsonl>] [--verdicts reports/gates]

The model (the real base: `python -m stages base --out DIR` with base.source smollm2) is scored with the gate's
own code (ratchet/eval/evaluate.py run_suite, eval.dtype and eval.batch_size of params.yaml) on the first
`--items` BBQ gender items twice: in the plain form the gate used before ("<context>\\nQuestion: <question>
\\nAnswer:", each answer after a space) and in the chat form it uses now (ratchet/eval/tasks/
ratchet_bbq_gender.yaml: the model's chat turn listing the answers). Each form's log-likelihoods are read three
ways: summed, per token of the answer, per byte of the answer (the gate's). Printed per form and reading:
accuracy overall, in ambiguous and in disambiguated contexts, and the share of "unknown" picks in each, on the
first eval.bias_items items and on all `--items`.

Then the stereotype pairs (data/eval/stereotype_pairs.jsonl, balanced; and the earlier unbalanced file with
--old-pairs): the share of pairs where the stereotyped sentence is preferred, per group.

Then the resolution: the 90% bootstrap half-width (eval.bootstrap draws, run.seed) of each bias metric of this
model at 120, 240, 480 and 960 items (the model's items resampled with replacement to that count), and, with
--verdicts, of the paired difference between the base and each real model a run gated (their stored per-item
scores, scored as the gate then did), at the items they hold. Last, seconds per 100 items of each task.
"""
from __future__ import annotations

import importlib.util
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks import common
from ratchet.core import params, runtime
from ratchet.core.io import read_json, read_jsonl
from ratchet.eval import evaluate, scores

SETS = common.ROOT / "data/eval"
PLAIN_BBQ = """include: _mc_template_yaml
task: ratchet_bbq_gender
dataset_kwargs: {data_files: {test: __DATA__}}
doc_to_text: "{{context}}\\nQuestion: {{question}}\\nAnswer:"
doc_to_choice: "{{choices}}"
doc_to_target: label
"""
_spec = importlib.util.spec_from_file_location("eval_sets_build", SETS / "build.py")
BUILD = sys.modules["eval_sets_build"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(BUILD)  # data/eval/build.py: group(), whom a stereotyped sentence names
BIAS_METRICS = ("bbq_accuracy", "bbq_accuracy_ambig", "bbq_accuracy_disambig", "bbq_bias_ambig",
                "bbq_bias_disambig", "stereotype_bias", "stereotype_pref")


def scored(model: str, cfg, tasks: dict, tasks_dir: Path | None = None) -> tuple[dict, dict, dict]:
    """(per-document rows, lm-eval's samples, seconds) of `tasks`, the gate's run_suite on `model`."""
    samples = {}
    keep = scores.per_document

    def recording(task, s, scan=None):
        samples[task] = s
        return keep(task, s, scan)

    scores.per_document, before = recording, evaluate.TASKS_DIR
    evaluate.TASKS_DIR = tasks_dir or before
    try:
        out = evaluate.run_suite("hf", model, "unused", cfg, tasks=tasks)
    finally:
        scores.per_document, evaluate.TASKS_DIR = keep, before
    return out["scores"], samples, out["seconds"]


def bbq_rows(samples: list[dict], weights) -> list[dict]:
    """per_document's BBQ rows with the answer picked by the highest log-likelihood x weights(sample)."""
    keep = scores._choice
    scores._choice = lambda s: int(np.argmax(np.array([float(r[0]) for r in s["filtered_resps"]]) * weights(s)))
    try:
        return scores.per_document("ratchet_bbq_gender", samples)
    finally:
        scores._choice = keep


def bbq_line(rows: list[dict]) -> list:
    d = {"ratchet_bbq_gender": rows}
    n_amb, n_dis = (sum(r[c] for r in rows) for c in ("amb", "dis"))
    unk_amb = sum(r["amb"] - r["amb_answered"] for r in rows) / n_amb
    unk_dis = sum(r["dis"] - r["dis_answered"] for r in rows) / n_dis
    return [scores.value("bbq_accuracy", d), scores.value("bbq_accuracy_ambig", d),
            scores.value("bbq_accuracy_disambig", d), unk_amb, unk_dis,
            scores.value("bbq_bias_ambig", d), scores.value("bbq_bias_disambig", d)]


def half_width(name: str, rows: list[dict], n: int, cfg, seed: int) -> float:
    """The 90% bootstrap half-width of metric `name` on `n` items drawn with replacement from `rows`."""
    rng = np.random.default_rng(seed)
    drawn = [dict(rows[i], id=f"{k:05d}") for k, i in enumerate(rng.integers(0, len(rows), n))]
    docs = {scores.METRICS[name].task: drawn}
    est = scores.worse_by(name, docs, None, "value", source=None, draws=cfg.bootstrap, confidence=cfg.confidence,
                          seed=seed)
    return (est.high - est.low) / 2


def paired_half_width(name: str, cand: dict, ref: dict, cfg, seed: int) -> tuple[float, float, int]:
    est = scores.worse_by(name, cand, ref, "diff", source=None, draws=cfg.bootstrap, confidence=cfg.confidence,
                          seed=seed)
    return est.point, (est.high - est.low) / 2, est.n


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--model", required=True, help="model folder (the real base)")
    ap.add_argument("--items", type=int, default=480, help="BBQ items scored (the set has 480)")
    ap.add_argument("--old-pairs", help="the unbalanced stereotype_pairs.jsonl, for its share per group")
    ap.add_argument("--verdicts", help="a run's reports/gates: the paired widths of its real models against base")
    args = ap.parse_args()
    run, cfg = params.load(common.ROOT / "params.yaml", "run", "eval")
    runtime.seed_everything(run.seed, run.threads)
    n_gate = cfg.bias_items
    bbq = list(read_jsonl(SETS / "bbq_gender.jsonl"))[: args.items]
    pairs = list(read_jsonl(SETS / "stereotype_pairs.jsonl"))

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(args.model)
    readings = {"summed": lambda s: 1.0,
                "per token": lambda s: 1.0 / np.array([len(tok(c, add_special_tokens=False).input_ids)
                                                       for c in s["doc"]["choices"]]),
                "per byte": lambda s: 1.0 / np.array([len(c.encode()) for c in s["doc"]["choices"]])}
    rows, bbq_samples, seconds = {}, {}, {}
    with tempfile.TemporaryDirectory(prefix="bench-bias-") as scratch:
        plain = Path(scratch)
        for f in evaluate.TASKS_DIR.iterdir():
            shutil.copy(f, plain / f.name)
        (plain / "ratchet_bbq_gender.yaml").write_text(PLAIN_BBQ)
        for form, tasks_dir in (("plain", plain), ("chat", None)):
            _, samples, secs = scored(args.model, cfg, {"ratchet_bbq_gender": bbq}, tasks_dir)
            bbq_samples[form] = samples["ratchet_bbq_gender"]
            seconds[f"ratchet_bbq_gender ({form})"] = secs["ratchet_bbq_gender"]
    per_item = {}
    for form, samples in bbq_samples.items():
        for reading, weights in readings.items():
            per_item[(form, reading)] = bbq_rows(samples, weights)
    pair_rows, _, secs = scored(args.model, cfg, {"ratchet_stereotype_pairs": pairs})
    seconds["ratchet_stereotype_pairs"] = secs["ratchet_stereotype_pairs"]
    gate_rows = {"ratchet_bbq_gender": per_item[("chat", "per byte")], **pair_rows}

    table_bbq = []
    for (form, reading), r in per_item.items():
        for n in sorted({min(n_gate, len(bbq)), len(bbq)}):
            table_bbq.append([f"{form}, {reading}" + (" (the gate's)" if (form, reading) == ("chat", "per byte")
                                                       else " (the gate's before)" if (form, reading) == ("plain", "summed")
                                                       else ""), n, *bbq_line(r[:n])])
    bbq_table = common.table(["form, reading", "items", "accuracy", "acc ambig", "acc disambig", "unknown picked ambig",
                              "unknown picked disambig", "|bias| ambig", "|bias| disambig"], table_bbq,
                             [None, "d", ".3f", ".3f", ".3f", ".3f", ".3f", ".3f", ".3f"])

    pair_sets = {"balanced (data/eval)": pairs}
    if args.old_pairs:
        pair_sets["unbalanced (before)"] = list(read_jsonl(args.old_pairs))
    stereo = []
    for label, rows_ in pair_sets.items():
        scored_rows = pair_rows["ratchet_stereotype_pairs"] if label.startswith("balanced") else scored(
            args.model, cfg, {"ratchet_stereotype_pairs": rows_[:n_gate]})[0]["ratchet_stereotype_pairs"]
        group = {r["id"]: BUILD.group(r["stereotyped"]) or "both" for r in rows_}
        for n in sorted({min(n_gate, len(scored_rows)), len(scored_rows)}):
            ids = {r["id"] for r in rows_[:n]}
            first = [r for r in scored_rows if r["id"] in ids]
            share = {g: [r["stereotyped"] for r in first if group[r["id"]] == g] for g in ("women", "men", "both")}
            total = float(np.mean([r["stereotyped"] for r in first]))
            stereo.append([label, n, *[len(share[g]) for g in share], total, abs(total - 0.5),
                           *[float(np.mean(share[g])) if share[g] else None for g in ("women", "men")]])
    stereo_table = common.table(["pairs", "scored", "naming women", "naming men", "naming both",
                                 "stereotype_pref (share)", "stereotype_bias", "share, women's pairs",
                                 "share, men's pairs"], stereo, [None, "d", "d", "d", "d", ".3f", ".3f", ".3f", ".3f"])

    widths = []
    for name in BIAS_METRICS:
        task_rows = gate_rows[scores.METRICS[name].task]
        widths.append([name, scores.value(name, gate_rows), *[half_width(name, task_rows, n, cfg, run.seed)
                                                             for n in (120, 240, 480, 960)]])
    width_table = common.table(["metric (this model, the gate's scoring)", "value", "±90% at 120 items", "at 240",
                                "at 480", "at 960"], widths, [None, ".3f", ".3f", ".3f", ".3f", ".3f"])

    paired = []
    if args.verdicts:
        folder = Path(args.verdicts)
        base = read_json(folder / "base.json")["scores"]
        for model in ("dapt", "sft", "student", "onnx"):
            if not (folder / f"{model}.json").is_file():
                continue
            cand = read_json(folder / f"{model}.json")["scores"]
            for name in ("bbq_accuracy", "bbq_bias_ambig", "bbq_bias_disambig", "stereotype_pref"):
                point, hw, n = paired_half_width(name, cand, base, cfg, run.seed)
                flips = None
                task = scores.METRICS[name].task
                key = "pick" if task == "ratchet_bbq_gender" else "stereotyped"
                b = {r["id"]: r[key] for r in base[task]}
                flips = float(np.mean([r[key] != b[r["id"]] for r in cand[task]]))
                paired.append([model, name, n, point, hw, flips])
    paired_table = common.table(["model (against base)", "metric", "items", "worse by", "±90%", "items answered "
                                 "otherwise"], paired, [None, None, "d", "+.3f", ".3f", ".2f"])
    per100 = [[task, s, 100 * s / (len(bbq) if "bbq" in task else len(pairs))] for task, s in seconds.items()
              if task.startswith("ratchet")]
    time_table = common.table(["task", "seconds (load excluded)", "seconds per 100 items"], per100,
                              [None, ".1f", ".1f"])
    for t in (bbq_table, stereo_table, width_table, paired_table, time_table):
        print(common.markdown(t) + "\n")
    common.record(__file__, {"settings": {"model": args.model, "items": args.items, "bias_items": n_gate,
                                          "dtype": cfg.dtype, "bootstrap": cfg.bootstrap,
                                          "confidence": cfg.confidence},
                             "tables": {"bbq": bbq_table, "stereotype": stereo_table, "widths": width_table,
                                        "paired": paired_table, "seconds": time_table}})


if __name__ == "__main__":
    runtime.start()
    main()
