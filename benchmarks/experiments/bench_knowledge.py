"""What dapt's budget buys: knowledge of the training documents against tokens trained, and what it costs.

    .venv/bin/python -m benchmarks.experiments.bench_knowledge --run . --budget 0.25:3e-5,1:3e-5,1:1e-4,1:5e-5

`--run` is a repository whose pipeline has run up to replay (models/base, data/prepared, data/replay, data/eval).
Each budget is the dapt stage's own training (ratchet.models.dapt.train: its batches, replay share, canaries and
loop) from the base model, with dapt's params' `epochs` replaced (and `steps`, the cap, lifted), and its peak
learning rate where a budget names one (`epochs:lr`). Each model
is then scored as the gates score it: the closed-book questions about the newest drop's training documents
(knowledge_mc_acc, knowledge_answer_acc; ratchet/eval/knowledge.py), held-out domain and general perplexity, and
BBQ's disambiguated accuracy (what the gates found a stronger budget costs). The
base model is the row of zero tokens. Every difference to the base is paired over the same questions or
documents, with the gates' bootstrap interval. Prints one table; the models stay under --out for a look.
"""
from __future__ import annotations

import time
from pathlib import Path

from benchmarks import common
from ratchet.core import params, runtime
from ratchet.core.io import atomic_dir, read_json, write_json
from ratchet.eval import scores
from ratchet.eval.evaluate import run_suite, task_data
from ratchet.models import dapt, modeling

TASKS = ("ratchet_knowledge_mc", "ratchet_knowledge_answers", "ratchet_domain_ppl", "ratchet_general_ppl",
         "ratchet_bbq_gender")


def trained(out: Path, cfg, run, start: Path, replay: Path) -> dict:
    """dapt from start, saved to out with a done.json; reused when done.json is there."""
    if (out / "done.json").is_file():
        return read_json(out / "done.json")
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)  # lm-eval's model set it up without mixed precision
    t = time.time()
    model, tok, history, record = dapt.train(cfg, run, start, replay)
    done = {"seconds": round(time.time() - t, 1), "steps": record["steps"], "new_blocks": record["new_blocks"],
            "tokens": record["steps"] * cfg.batch_size * cfg.seq_len, "config": params.as_dict(cfg)}
    with atomic_dir(out) as tmp:
        modeling.save_model(model, tok, tmp)
        write_json(tmp / "done.json", done)
        common.with_lineage(tmp, "dapt", start=start)
    return done


def scored(model: Path, repo: Path, cfg, tasks: dict, cache: Path) -> dict:
    """The model's per-document scores on `tasks`, kept in `cache`; a task the cache lacks is scored and added."""
    have = read_json(cache) if cache.is_file() else {}
    missing = {t: rows for t, rows in tasks.items() if t not in have}
    if missing:
        have.update(run_suite("hf", str(model), str(repo / "data/prepared"), cfg, tasks=missing)["scores"])
        write_json(cache, have)
    return have


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--run", default=".")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--budget", default="0.25,1", help="dapt budgets, comma-separated: passes over the newest "
                    "drop, each optionally with its peak learning rate (epochs:lr; dapt.lr otherwise)")
    ap.add_argument("--out", default="/tmp/ratchet-bench-knowledge", help="where the trained models stay")
    args = ap.parse_args()
    runtime.start()
    repo, out = Path(args.run).resolve(), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    run, cfg, ecfg = params.load(repo / args.params, "run", "dapt", "eval")
    runtime.seed_everything(run.seed, run.threads)
    tasks = {t: rows for t, rows in task_data(str(repo / "data/prepared"), str(repo / "data/eval"), ecfg).items()
             if t in TASKS}
    newest = read_json(repo / "data/replay/manifest.json")["newest"]
    base = repo / "models/base"
    rows_of = {"base": (0.0, {"seconds": 0, "steps": 0, "tokens": 0}, scored(base, repo, ecfg, tasks, out / "base.json"))}
    for budget in [b for b in args.budget.split(",") if b]:
        e, _, lr = budget.partition(":")
        e, lr = float(e), float(lr) if lr else cfg.lr
        name = f"dapt-{e:g}-lr{lr:g}"
        ecfg_run = cfg.model_copy(update={"epochs": e, "lr": lr, "steps": 100_000, "checkpoint_every": 0})
        runtime.seed_everything(run.seed, run.threads)
        done = trained(out / name, ecfg_run, run, base, repo / "data/replay")
        rows_of[f"{e:g} epochs, lr {lr:g}"] = (e, done, scored(out / name, repo, ecfg, tasks, out / f"{name}.json"))

    def est(name, cand, kind, source=None):
        return scores.worse_by(name, cand, rows_of["base"][2], kind, source=source, draws=ecfg.bootstrap,
                               confidence=ecfg.confidence, seed=run.seed)

    rows = []
    for name, (e, done, s) in rows_of.items():
        gain = [est(m, s, "diff", newest) for m in ("knowledge_mc_acc", "knowledge_answer_acc")]
        ratio = [est(m, s, "ratio") for m in ("domain_ppl", "general_ppl")]
        bbq = est("bbq_accuracy_disambig", s, "diff")
        rows.append([name, done["steps"], done["tokens"], round(done["seconds"]),
                     scores.value("knowledge_mc_acc", s, newest),
                     f"{-gain[0].point:+.3f} [{-gain[0].high:+.3f}, {-gain[0].low:+.3f}]",
                     scores.value("knowledge_answer_acc", s, newest),
                     f"{-gain[1].point:+.3f} [{-gain[1].high:+.3f}, {-gain[1].low:+.3f}]",
                     f"{ratio[0].point:.3f} [{ratio[0].low:.3f}, {ratio[0].high:.3f}]",
                     f"{ratio[1].point:.3f} [{ratio[1].low:.3f}, {ratio[1].high:.3f}]",
                     f"{-bbq.point:+.3f} [{-bbq.high:+.3f}, {-bbq.low:+.3f}]"])
    n = len([r for r in tasks["ratchet_knowledge_mc"] if r["source"] == newest])
    t = common.table(["dapt budget", "steps", "tokens", "train s", f"knowledge MC ({n} q, {newest})",
                      "gain on base [90% CI]", "key fact", "gain on base [90% CI]", "domain ppl / base",
                      "general ppl / base", "BBQ disambiguated accuracy - base"], rows,
                     [None, "d", "d", "d", ".3f", None, ".3f", None, None, None, None], align="lrrrrrrrrrr")
    print("\n" + common.markdown(t))
    common.record(__file__, {"settings": {"budget": args.budget, "newest": newest, "questions": n,
                                          "dapt": params.as_dict(cfg)},
                             "models": {k: {"epochs": e, **d} for k, (e, d, _) in rows_of.items()},
                             "tables": {"main": t}})


if __name__ == "__main__":
    main()
