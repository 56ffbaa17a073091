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
