"""The evaluation suite behind every gate: lm-evaluation-harness on local tasks.

Task YAMLs live in stages/tasks/; each is copied to a scratch folder with its
data file filled in, then run through lm_eval.simple_evaluate with a
TaskManager on that folder. Nothing is fetched from a hub.
"""
from __future__ import annotations

import functools
import logging
import tempfile
from pathlib import Path

from ..core.io import read_jsonl, write_jsonl

from . import scores

TASKS_DIR = Path(__file__).resolve().parent.parent / "tasks"
# held-out text of a role in the prepared data, scored per source
ROLE_OF_TASK = {"ratchet_domain_ppl": "domain", "ratchet_general_ppl": "general"}
# questions with reference answers: the held-out split of the instruction data
ANSWER_TASK = "ratchet_answers"
# fixed evaluation sets (data/eval, see its README): file per task
EVAL_SET_OF_TASK = {"ratchet_bbq_gender": "bbq_gender.jsonl", "ratchet_stereotype_pairs": "stereotype_pairs.jsonl"}


def eval_subset(records: list[dict], max_docs: int) -> list[dict]:
    """The first max_docs held-out records by id of each source: a fixed set that every model is scored on,
    in which every source (the seed and each drop) keeps enough documents to be judged on its own."""
    by_source: dict[str, list[dict]] = {}
    for r in sorted(records, key=lambda r: r["id"]):
        by_source.setdefault(r.get("source", ""), []).append(r)
    out = [r for rs in by_source.values() for r in (rs[:max_docs] if max_docs else rs)]
    return sorted(out, key=lambda r: r["id"])


def model_spec(kind: str, path: str, adapter_of: str | None, max_length: int) -> tuple[str, dict]:
    """lm-eval model name and args for a plain model, a LoRA adapter, or an ONNX folder."""
    if kind == "onnx":
        from . import onnx_lm  # lm-eval's onnxruntime model, generating too

        return onnx_lm.register(), {"pretrained": path, "execution_provider": "cpu", "max_length": max_length}
    args = {"pretrained": adapter_of or path, "dtype": "float32", "max_length": max_length,
            "trust_remote_code": False}
    if adapter_of:
        args["peft"] = path
    return "hf", args


def quiet(lm):
    """The lm-eval model with its per-request progress bars off: a gate logs one line per event.

    lm-eval's request methods take `disable_tqdm`, but its HF rolling perplexity
    passes False to the inner batches itself, so the flag is forced on each call.
    """
    def forced(method):
        @functools.wraps(method)
        def call(*args, **kwargs):
            return method(*args, **{**kwargs, "disable_tqdm": True})
        return call

    for name in ("loglikelihood", "loglikelihood_rolling", "generate_until", "_loglikelihood_tokens"):
        if hasattr(lm, name):
            setattr(lm, name, forced(getattr(lm, name)))
    return lm


def task_data(data: str, eval_sets: str | None, cfg) -> dict[str, list[dict]]:
    """{task: the documents every model is scored on}: held-out text per source, the first eval.answer_items
    held-out questions (the prompt's messages and the reference answer) of each source, and the first
    eval.bias_items of each fixed evaluation set when its folder is given."""
    out = {}
    for task, role in ROLE_OF_TASK.items():
        subset = eval_subset(list(read_jsonl(f"{data}/{role}/heldout.jsonl")), cfg.max_docs)
        if not subset:
            raise SystemExit(f"{data}/{role}/heldout.jsonl is empty: nothing to evaluate on")
        out[task] = [{"id": r["id"], "source": r.get("source", ""), "text": r["text"]} for r in subset]
    questions = eval_subset(list(read_jsonl(f"{data}/sft/heldout.jsonl")), cfg.answer_items)
    if not questions:
        raise SystemExit(f"{data}/sft/heldout.jsonl is empty: no held-out question to ask the models")
    out[ANSWER_TASK] = [{"id": r["id"], "source": r.get("source", ""), "messages": r["messages"][:-1],
                         "reference": r["messages"][-1]["content"]} for r in questions]
    for task, file in EVAL_SET_OF_TASK.items() if eval_sets else ():
        rows = list(read_jsonl(Path(eval_sets) / file))[: cfg.bias_items]
        if not rows:
            raise SystemExit(f"{eval_sets}/{file} is empty: rebuild it with data/eval/build.py")
        out[task] = rows
    return out


def with_prompts(rows: list[dict], tokenizer_path: str) -> list[dict]:
    """Each question rendered with the model's own chat template, ready for generation."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_path)
    return [{**r, "prompt": tok.apply_chat_template(r["messages"], add_generation_prompt=True, tokenize=False)}
            for r in rows]


def run_suite(kind: str, path: str, data: str, cfg, adapter_of: str | None = None,
              eval_sets: str | None = None, tasks: dict[str, list[dict]] | None = None) -> dict:
    """Score one model on the held-out suite, and on the bias sets in `eval_sets` when given
    (`tasks`: their documents when the caller has read them already, as task_data returns them).

    Returns {metrics: {name: value over every document}, by_source: {name: {source: value}} for the
    domain metrics, scores: {task: per-document rows}, docs: {task: count}, lm_eval: its own results}.
    """
    import lm_eval
    from lm_eval.tasks import TaskManager

    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    tasks = tasks if tasks is not None else task_data(data, eval_sets, cfg)
    with tempfile.TemporaryDirectory(prefix="ratchet-eval-") as scratch:
        scratch = Path(scratch)
        for template in TASKS_DIR.glob("_*_yaml"):
            (scratch / template.name).write_text(template.read_text())
        for task, rows in tasks.items():
            if task == ANSWER_TASK:
                rows = with_prompts(rows, adapter_of or path)
            write_jsonl(scratch / f"{task}.jsonl", rows)
            yaml = (TASKS_DIR / f"{task}.yaml").read_text().replace("__MAX_TOKENS__", str(cfg.answer_tokens))
            (scratch / f"{task}.yaml").write_text(yaml.replace("__DATA__", str(scratch / f"{task}.jsonl")))
        name, args = model_spec(kind, path, adapter_of, cfg.max_length)
        lm = quiet(lm_eval.api.registry.get_model(name).create_from_arg_obj(
            args, {"batch_size": 1 if kind == "onnx" else cfg.batch_size, "device": "cpu"}))
        out = lm_eval.simple_evaluate(
            model=lm, tasks=list(tasks), log_samples=True,
            task_manager=TaskManager(include_path=str(scratch), include_defaults=False))
    per_doc = {task: scores.per_document(task, samples) for task, samples in out["samples"].items()}
    metrics = {name: scores.value(name, per_doc) for name, m in scores.METRICS.items() if m.task in per_doc}
    by_source = {name: {src: scores.value(name, per_doc, src) for src in scores.sources(name, per_doc)}
                 for name in ("domain_ppl",)}
    return {"metrics": metrics, "by_source": by_source, "scores": per_doc,
            "docs": {task: len(rows) for task, rows in tasks.items()},
            "lm_eval": {t: {k: v for k, v in r.items() if k != "alias"} for t, r in out["results"].items()}}
