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
reason, which stops `dvc repro` before any downstream stage. Two references are only scored, on the same evaluation set
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

from .core import audit_log, params
from .core.io import one_line, read_json, sha256_text, write_json, write_text
from .core.runtime import log, seed_everything
from .data.pii import Scanner
from .models import evaluate, modeling, scores
from .models.gates import decide, load_rules
from .models.champion import shipped_or_base, teacher_or_base
from .models.lineage import artifact_hash

REFERENCES = ("champion", "shipped", "base")  # scored for the others to compare with; no rules of their own
SIDE_BY_SIDE = 3  # held-out questions whose answers a verdict shows next to its references'


def pii_values(cfg: params.PiiConfig):
    """text -> the values presidio finds in it, with the data gate's recognizers, every entity of the policy."""
    scanner = Scanner(cfg.model_copy(update={"scan_allowed": True}))

    def scan(text: str) -> list[str]:
        return [text[f.start:f.end] for f in scanner.scan([text])[0]]
    return scan


def tasks_read(model: str, cfg) -> set[str] | None:
    """The evaluation tasks a candidate's gate needs: those its own rules read and those of any later rule that
    takes it as `ref`; None (every task) for a reference model, which any gate may read, and for the shipped
    file (onnx), whose model card reports every metric."""
    if model in REFERENCES or model == "onnx":
        return None
    return {scores.METRICS[r.metric].task for m in cfg.models() for r in cfg.rules(m) if m == model or r.ref == model}


def side_by_side(model: str, docs: dict, refs: dict[str, dict], tasks: dict) -> list[dict]:
    """The first held-out questions with the reference answer, this model's answer and each reference model's."""
    mine = {r["id"]: r for r in docs.get(evaluate.ANSWER_TASK, [])}
    out = []
    for q in tasks.get(evaluate.ANSWER_TASK, [])[:SIDE_BY_SIDE]:
        if q["id"] not in mine:
            continue
        answers = {model: mine[q["id"]]["answer"]}
        for name, ref in refs.items():
            row = next((r for r in ref.get(evaluate.ANSWER_TASK, []) if r["id"] == q["id"]), None)
            if row is not None:
                answers[name] = row["answer"]
        out.append({"id": q["id"], "question": q["messages"][-1]["content"], "reference": q["reference"],
                    "answers": answers})
    return out


def reusable(files: list[str], model: tuple, eval_sha256: str, task_sha256: dict[str, str]) -> dict[str, str]:
    """{task: the first verdict file that scored this model (artifact hash, evaluation settings, adapter base)
    on the same documents of that task}: its per-document scores stand for a new scoring."""
    out: dict[str, str] = {}
    for file in files:
        if not Path(file).is_file():
            continue
        v = read_json(file)
        if (v.get("artifact_sha256"), v.get("eval_params"), v.get("adapter_of")) != model:
            continue
        same = v.get("task_sha256") or (task_sha256 if v.get("eval_sha256") == eval_sha256 else {})
        for task, sha in task_sha256.items():
            if task not in out and same.get(task) == sha and task in v.get("scores", {}) and task in v.get(
                    "lm_eval", {}):
                out[task] = file
    return out


def reference_scores(model: str, rules: list[params.GateRule], specs: list[str]) -> dict[str, dict]:
    """{name: per-document scores} of every --ref NAME=VERDICT.json; stops when a rule's ref is not among them."""
    refs = {}
    for spec in specs:
        name, sep, file = spec.partition("=")
        if not sep or not name or not file:
            raise SystemExit(f"--ref {spec!r}: write it as NAME=path/to/verdict.json")
        if not Path(file).is_file():
            raise SystemExit(f"--ref {name}={file}: no such verdict; run that gate first (dvc repro)")
        ref = read_json(file)
        if "scores" not in ref:
            raise SystemExit(f"--ref {name}={file}: the verdict has no per-document scores (written by an older "
                             "ratchet): rerun its gate (dvc repro --force gate_" + name + ")")
        refs[name] = ref["scores"]
    missing = sorted({r.ref for r in rules if r.ref is not None} - set(refs))
    if missing:
        raise SystemExit(f"gates.{model} compares with {', '.join(missing)} but the gate_{model} stage passes no "
                         f"--ref for it: add `--ref {missing[0]}=reports/gates/{missing[0]}.json` to its cmd and "
                         "that file to its deps in dvc.yaml")
    return refs


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

    run, ecfg, pii_cfg = params.load(args.params, "run", "eval", "pii")
    rules = [] if args.model in REFERENCES else load_rules(args.params).rules(args.model)
    refs = reference_scores(args.model, rules, args.ref)  # before the evaluation: a wiring error costs nothing
    started = time.time()
    seed_everything(run.seed, run.threads)
    path = Path(args.path)
    if args.model == "champion":
        path = teacher_or_base(path, args.base)
    elif args.model == "shipped":
        path = shipped_or_base(path, args.base)
    real = modeling.is_real(args.adapter_of or path)
    kind = "onnx" if (path / "model.onnx").is_file() else "hf"
    digest = artifact_hash(path)
    tasks = evaluate.task_data(args.data, args.eval_sets, ecfg)
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

    verdict = {"model": args.model, "path": str(path), "artifact_sha256": digest, "adapter_of": args.adapter_of,
               "eval_sha256": eval_sha256, "task_sha256": task_sha256,
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
                          seed=run.seed)
        failed = [f["reason"] for f in findings if not f["passed"]]
        unresolved = [f["rule"] for f in findings if not f["resolved"]]
        verdict.update(verdict="fail" if failed else "pass", findings=findings, unresolved=unresolved,
                       reason="; ".join(failed) if failed else "every rule passed" + (
                           f" ({len(unresolved)} inside the noise: see unresolved)" if unresolved else ""))
        audit_log.append(args.audit_log, "gate", model=args.model, artifact_sha256=verdict["artifact_sha256"],
                         verdict=verdict["verdict"], reason=verdict["reason"], metrics=metrics, intervals=cis,
                         real=real)
    verdict["answers"] = side_by_side(args.model, scored["scores"], refs, tasks)
    verdict["scores"] = scored["scores"]  # last: the per-document rows are long
    write_json(args.verdict, verdict)
    write_text(Path(args.verdict).with_suffix(".md"), render(verdict))
    write_json(args.metrics, {**{k: round(v, 4) for k, v in metrics.items()},
                              "domain_ppl_by_source": {k: round(v, 4) for k, v in scored["by_source"]["domain_ppl"].items()},
                              "passed": int(verdict["verdict"] in ("pass", "reference"))})
    if verdict["verdict"] == "fail":
        raise SystemExit(f"gate {args.model}: FAILED: {verdict['reason']} (see {args.verdict})")
    log("gate", f"{args.model}: {verdict['verdict']} ({verdict['reason']}) in {verdict['wall_time_s']:.0f}s")



def render(v: dict) -> str:
    """The verdict for a person: what was measured, every rule with its interval, and the decision."""
    lines = [f"# Gate: {v['model']}", "", f"`{v['path']}` (sha256 {v['artifact_sha256'][:16]}), scored "
             f"{v['time_utc']} in {v['wall_time_s']:.0f} s on "
             + ", ".join(f"{n} documents of {task}" for task, n in v["eval_docs"].items()) + "."
             + (f" Not scored, as no rule of this gate reads them: {', '.join(v['not_scored'])}."
                if v.get("not_scored") else ""), ""]
    if v.get("seconds"):
        lines += ["Time: " + ", ".join(f"{'loading the model' if k == 'load' else k} in {s:.0f} s"
                                   for k, s in v["seconds"].items())
                  + (f"; reused: {', '.join(v['reused_from'])}" if v.get("reused_from") else "") + ".", ""]
    if not v["real"]:
        lines += ["**Tiny test model: these numbers are not real results.**", ""]
    ci = v.get("intervals", {})
    lines += [f"**Verdict: {v['verdict']}** ({v['reason']})", "",
              f"| metric | better | value | {v['eval_params']['confidence']:.0%} interval |", "|---|---|---:|---|"]
    lines += [f"| {m} | {v['directions'][m]} | {x:.4g} | "
              + (f"{ci[m][0]:.4g} .. {ci[m][1]:.4g} |" if m in ci else "- |") for m, x in v["metrics"].items()]
    lines += [f"| domain_ppl[{src}] | lower | {x:.4g} | - |" for src, x in v["by_source"]["domain_ppl"].items()]
    if v["findings"]:
        lines += ["", "Each rule is decided on a paired bootstrap interval of how much worse the model is than its "
                  "reference (larger is worse).", "",
                  "| rule | value | reference | estimate | interval | limit | resolved | result |",
                  "|---|---:|---:|---:|---|---:|---|---|"]
        for f in v["findings"]:
            ci = f"{f['ci'][0]:.4g} .. {f['ci'][1]:.4g}" if "ci" in f else "-"
            est = f"{f['estimate']:.4g}" if "estimate" in f else "-"
            ref = f"{f['ref_value']:.4g}" if "ref_value" in f else "-"
            value = f"{f['value']:.4g}" if f["value"] == f["value"] else "-"
            limit = -f["limit"] if f["kind"] == "value" and f["higher_is_better"] else f["limit"]  # a `min` bound
            lines.append(f"| {f['rule']} | {value} | {ref} | {est} | {ci} | {limit:g} | "
                         f"{'yes' if f['resolved'] else '**no**'} | {'pass' if f['passed'] else '**FAIL**'} |")
    for a in v.get("answers", []):
        lines += ["", f"**Held-out question** {a['id']}: {a['question']}", "",
                  f"- reference answer: {one_line(a['reference'])}"]
        lines += [f"- {name}: {one_line(text)}" for name, text in a["answers"].items()]
    return "\n".join(lines) + "\n"
