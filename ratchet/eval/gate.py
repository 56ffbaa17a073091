"""The gate stage's parts: the references a verdict compares with, what a model's rules read, the answers shown
side by side, the scores a verdict may reuse, and the PII values a gate looks for in what a model writes."""
from __future__ import annotations

from pathlib import Path

from ratchet.core import params
from ratchet.core.io import read_json
from ratchet.data.pii import Scanner
from ratchet.eval import evaluate, scores

REFERENCES = ("champion", "shipped", "base")  # scored for the others to compare with; no rules of their own
# the dvc.yaml stage that writes the model each gate scores: the fix a refused folder names (lineage.require)
WRITTEN_BY = {"base": "base", "dapt": "dapt", "sft": "sft", "student": "distill", "onnx": "quantize"}


# the questions a verdict shows answered next to its references' answers: held-out questions of the instruction
# data, then closed-book questions about the newest drop's training documents (ten in all)
SIDE_BY_SIDE = {evaluate.ANSWER_TASK: 7, evaluate.KNOWLEDGE_ANSWERS: 3}
CHRF_TIE = 1.0  # chrF points: a smaller change of one answer's chrF counts as a tie
FLIPS = 10  # questions a verdict lists whose key fact one model states and its reference does not, per reference


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


def side_by_side(model: str, docs: dict, refs: dict[str, dict], tasks: dict, newest: str | None = None) -> list[dict]:
    """Fixed questions (SIDE_BY_SIDE: the first of each task; the knowledge questions of the newest source) with
    the reference answer (for a knowledge question, its missing term), this model's answer and each reference
    model's."""
    out = []
    for task, n in SIDE_BY_SIDE.items():
        mine = {r["id"]: r for r in docs.get(task, [])}
        asked = [q for q in tasks.get(task, []) if q["id"] in mine and (task == evaluate.ANSWER_TASK
                                                                       or newest is None or q["source"] == newest)]
        for q in asked[:n]:
            answers = {model: mine[q["id"]]["answer"]}
            for name, ref in refs.items():
                row = next((r for r in ref.get(task, []) if r["id"] == q["id"]), None)
                if row is not None:
                    answers[name] = row["answer"]
            out.append({"id": q["id"], "kind": "held-out" if task == evaluate.ANSWER_TASK else "knowledge",
                        "source": q["source"], "question": q["messages"][-1]["content"],
                        "reference": q.get("reference", q.get("term")), "answers": answers})
    return out


def per_question(docs: dict, refs: dict[str, dict], tasks: dict) -> dict[str, dict]:
    """Against each reference, question by question: held-out answers better, worse or tied by chrF (a change
    under CHRF_TIE points ties) and the mean change; closed-book questions whose key fact this model states and
    the reference does not (gained), the reverse (lost), or alike, per source; multiple-choice picks gained and
    lost; and the first FLIPS key-fact flips, with both answers."""
    out = {}
    asked = {q["id"]: q for q in tasks.get(evaluate.KNOWLEDGE_ANSWERS, [])}
    for name, ref in refs.items():
        row: dict = {}
        mine, theirs = _by_id(docs, evaluate.ANSWER_TASK), _by_id(ref, evaluate.ANSWER_TASK)
        both = [i for i in mine if i in theirs]
        if both:
            d = [mine[i]["chrf"] - theirs[i]["chrf"] for i in both]
            row["answers"] = {"better": sum(x >= CHRF_TIE for x in d), "worse": sum(x <= -CHRF_TIE for x in d),
                              "tie": sum(abs(x) < CHRF_TIE for x in d), "mean_chrf_change": round(sum(d) / len(d), 2)}
        mine, theirs = _by_id(docs, evaluate.KNOWLEDGE_ANSWERS), _by_id(ref, evaluate.KNOWLEDGE_ANSWERS)
        both = [i for i in mine if i in theirs]
        if both:
            by_source: dict[str, dict] = {}
            flips = []
            for i in both:
                change = mine[i]["keyfact"] - theirs[i]["keyfact"]
                count = by_source.setdefault(mine[i]["source"], {"gained": 0, "lost": 0, "alike": 0})
                count["gained" if change > 0 else "lost" if change < 0 else "alike"] += 1
                if change and len(flips) < FLIPS:
                    flips.append({"id": i, "source": mine[i]["source"], "gained": change > 0,
                                  "question": asked[i]["messages"][-1]["content"] if i in asked else None,
                                  "term": asked[i]["term"] if i in asked else None,
                                  "answer": mine[i]["answer"], "reference_answer": theirs[i]["answer"]})
            row["key_facts"], row["flips"] = by_source, flips
        mine, theirs = _by_id(docs, evaluate.KNOWLEDGE_MC), _by_id(ref, evaluate.KNOWLEDGE_MC)
        both = [i for i in mine if i in theirs]
        if both:
            row["choices"] = {"gained": sum(mine[i]["correct"] > theirs[i]["correct"] for i in both),
                              "lost": sum(mine[i]["correct"] < theirs[i]["correct"] for i in both), "of": len(both)}
        if row:
            out[name] = row
    return out


def _by_id(docs: dict, task: str) -> dict[str, dict]:
    return {r["id"]: r for r in docs.get(task, [])}


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
                    "lm_eval", {}) and has_columns(task, v["scores"][task]):
                out[task] = file
    return out


def has_columns(task: str, rows: list[dict]) -> bool:
    """Whether stored per-document rows hold every column today's metrics of the task read (a verdict written
    before a metric was added is scored again, not reused)."""
    need = {c for m in scores.METRICS.values() if m.task == task for c in m.columns}
    return all(need <= set(r) for r in rows)


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
