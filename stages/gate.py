"""gate: evaluate one model and decide whether it may move forward.

    python -m stages gate --params params.yaml --model dapt --path models/dapt \
        --data data/prepared --ref champion=reports/gates/champion.json \
        --verdict reports/gates/dapt.json --metrics reports/metrics/dapt.json \
        --audit-log reports/audit/log.jsonl

Runs the evaluation suite (lm-eval on local tasks: held-out domain and general
perplexity, kept per document) and checks the rules of gates.<model> in
params.yaml: absolute bounds and paired comparisons with a reference model
scored on the same documents (the champion, or the model this one was made
from), each decided on a bootstrap confidence interval. The verdict is written
as JSON (for `dvc metrics` and the audit) and Markdown (for a person, next to
it), appended to the audit log, and a failed gate exits non-zero with the
reason, which stops `dvc repro` before any downstream stage. A rule whose
interval spans its limit decides nothing: the verdict is then `hold` (when no
rule failed), which stops the run the same way and names, per undecided rule,
about how many more documents would resolve it. Two references are only scored, on the same evaluation set
as every candidate: `--model champion`, the champion's tuned teacher (ref
`champion`), and `--model shipped`, the champion's shipped int8 model (ref
`shipped`); before the first promotion the base model stands in for both. A
candidate is scored only on the tasks its rules, or later rules that take it as
reference, read (dapt, which answers no question, generates no answers); the
verdict names the tasks it left out.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ratchet.core import audit_log, params
from ratchet.core.io import read_json, sha256_text, write_json, write_text
from ratchet.core.runtime import log, seed_everything
from ratchet.data.replay import sources_in_order
from ratchet.eval import evaluate, scores
from ratchet.eval.gate import (REFERENCES, WRITTEN_BY, per_question, pii_values, reference_scores, reusable,
                               side_by_side, tasks_read)
from ratchet.eval.rules import decide, load_rules, outcome
from ratchet.models import modeling
from ratchet.models.champion import made_by, shipped_or_base, teacher_or_base
from ratchet.models.lineage import require
from ratchet.reporting.verdict import render


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--model", required=True, choices=REFERENCES + params.GatesConfig.models())
    ap.add_argument("--path", required=True, help="model folder (LoRA adapter for sft, ONNX folder for onnx)")
    ap.add_argument("--adapter-of", help="base model folder when --path is a LoRA adapter")
    ap.add_argument("--base", help="with --model champion or shipped: the stand-in before any promotion")
    ap.add_argument("--data", required=True, help="prepared data folder (held-out splits)")
    ap.add_argument("--eval-sets", help="folder of the fixed evaluation sets (data/eval): the bias checks")
    ap.add_argument("--ref", action="append", default=[], metavar="NAME=VERDICT.json",
                    help="a reference model's verdict, for ratio rules")
    ap.add_argument("--verdict", required=True)
    ap.add_argument("--metrics", required=True, help="flat metrics JSON for `dvc metrics show`")
    ap.add_argument("--audit-log", required=True)
    ap.add_argument("--same-as", metavar="VERDICT.json", action="append", default=[],
                    help="reuse, task by task, the scores of this verdict where it scored the same model with the same "
                         "settings on the same documents of a task (before any promotion the base model stands in "
                         "as champion and as shipped; a champion's verdicts hold its shipped and base models' "
                         "scores of the cycle that promoted it); repeatable, first match wins; a missing file is "
                         "skipped")
    args = ap.parse_args(argv)

    run, ecfg, pii_cfg, dapt_cfg = params.load(args.params, "run", "eval", "pii", "dapt")
    rules = [] if args.model in REFERENCES else load_rules(args.params).rules(args.model)
    refs = reference_scores(args.model, rules, args.ref)  # before the evaluation: a wiring error costs nothing
    started = time.time()
    seed_everything(run.seed, run.threads)
    path = Path(args.path)
    if args.model == "champion":
        path = teacher_or_base(path, args.base)
    elif args.model == "shipped":
        path = shipped_or_base(path, args.base)
    digest = require(path, made_by(path, args.path) if args.model in ("champion", "shipped")
                     else WRITTEN_BY.get(args.model))["artifact"]["sha256"]
    if args.adapter_of:
        require(args.adapter_of, "dapt")
    real = modeling.is_real(args.adapter_of or path)
    kind = "onnx" if (path / "model.onnx").is_file() else "hf"
    tasks = evaluate.task_data(args.data, args.eval_sets, ecfg, evaluate.audit_canaries(
        dapt_cfg.canaries, run.seed, args.data, None if args.model in REFERENCES else path))
    read = tasks_read(args.model, load_rules(args.params))
    skipped = sorted(t for t in tasks if read is not None and t not in read)
    tasks = {t: rows for t, rows in tasks.items() if t not in skipped}
    eval_sha256 = sha256_text(json.dumps(tasks, sort_keys=True))
    task_sha256 = {t: sha256_text(json.dumps(rows, sort_keys=True)) for t, rows in tasks.items()}
    reused = reusable(args.same_as, (digest, params.as_dict(ecfg), args.adapter_of), eval_sha256, task_sha256)
    for file in dict.fromkeys(reused.values()):
        log("gate", f"{args.model} is the model {file} scored ({path}): its scores are reused for "
                    f"{', '.join(t for t, f in reused.items() if f == file)} (same documents, same settings)")
    to_score = {t: rows for t, rows in tasks.items() if t not in reused}
    scored = {"scores": {}, "lm_eval": {}, "seconds": {}}
    if to_score:
        log("gate", f"evaluating {args.model} ({path}) on {', '.join(to_score)}")
        scored = evaluate.run_suite(kind, str(path), args.data, ecfg, adapter_of=args.adapter_of,
                                    eval_sets=args.eval_sets, tasks=to_score,
                                    scan=pii_values(pii_cfg) if "ratchet_canary_leak" in to_score else None)
    for file in dict.fromkeys(reused.values()):
        v = read_json(file)
        for task in (t for t, f in reused.items() if f == file):
            scored["scores"][task], scored["lm_eval"][task] = v["scores"][task], v["lm_eval"][task]
    scored["scores"] = {t: scored["scores"][t] for t in tasks}  # the suite's order, whatever came from where
    scored.update(evaluate.summarize(scored["scores"]), docs={t: len(rows) for t, rows in tasks.items()})
    metrics = scored["metrics"]
    log("gate", "  ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
    # each metric's own interval: for the report and the log, so a metric can be followed across cycles
    cis = scores.intervals(scored["scores"], metrics, draws=ecfg.bootstrap, confidence=ecfg.confidence, seed=run.seed)

    newest = sources_in_order(Path(args.data))[-1]  # the cycle's drop: rules with `source` need it
    verdict = {"model": args.model, "path": str(path), "artifact_sha256": digest, "adapter_of": args.adapter_of,
               "eval_sha256": eval_sha256, "task_sha256": task_sha256, "newest_source": newest,
               **({"reused_from": reused} if reused else {}),
               **({"not_scored": skipped} if skipped else {}),
               "metrics": metrics, "intervals": cis, "by_source": scored["by_source"], "eval_docs": scored["docs"],
               "directions": {m: "higher" if scores.METRICS[m].higher_is_better else "lower" for m in metrics},
               "lm_eval": scored["lm_eval"],
               "seconds": scored["seconds"],  # loading the model and scoring each task; reused tasks cost none
               "eval_params": params.as_dict(ecfg), "real": real,
               "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "wall_time_s": round(time.time() - started, 1)}
    if not real:
        verdict["note"] = "tiny test model: these numbers are not real results"
    if args.model in REFERENCES:
        verdict.update(verdict="reference", reason="scored as the reference for this cycle's gates", findings=[])
    else:
        findings = decide(scored["scores"], rules, refs, draws=ecfg.bootstrap, confidence=ecfg.confidence,
                          seed=run.seed, newest=newest)
        result = outcome(findings)
        said = [f["reason"] for f in findings if f["outcome"] == result] if result != "pass" else []
        held = [f["rule"] for f in findings if f["outcome"] == "hold"]
        resolved = sum(f["resolved"] for f in findings)
        verdict.update(verdict=result, findings=findings, unresolved=held,
                       resolved=f"{resolved}/{len(findings)}",
                       reason="; ".join(said) if said else "every rule passed, each on its whole interval")
        audit_log.append(args.audit_log, "gate", model=args.model, artifact_sha256=verdict["artifact_sha256"],
                         verdict=verdict["verdict"], reason=verdict["reason"], metrics=metrics, intervals=cis,
                         real=real, **({"held": [{"rule": f["rule"], "more_docs": f.get("more_docs")}
                                                 for f in findings if f["outcome"] == "hold"]} if held else {}))
    verdict["answers"] = side_by_side(args.model, scored["scores"], refs, tasks, newest)
    verdict["per_question"] = per_question(scored["scores"], refs, tasks)
    verdict["scores"] = scored["scores"]  # last: the per-document rows are long
    write_json(args.verdict, verdict)
    write_text(Path(args.verdict).with_suffix(".md"), render(verdict))
    write_json(args.metrics, {**{k: round(v, 4) for k, v in metrics.items()},
                              "domain_ppl_by_source": {k: round(v, 4) for k, v in scored["by_source"]["domain_ppl"].items()},
                              "passed": int(verdict["verdict"] in ("pass", "reference"))})
    if verdict["verdict"] == "fail":
        raise SystemExit(f"gate {args.model}: FAILED: {verdict['reason']} (see {args.verdict})")
    if verdict["verdict"] == "hold":  # nothing downstream may build on an undecided model
        raise SystemExit(f"gate {args.model}: HELD: the evaluation set cannot decide {len(held)} rule(s): "
                         f"{verdict['reason']} (see {args.verdict})")
    log("gate", f"{args.model}: {verdict['verdict']} ({verdict['reason']}) in {verdict['wall_time_s']:.0f}s")


