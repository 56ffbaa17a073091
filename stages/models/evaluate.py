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

TASKS_DIR = Path(__file__).resolve().parent.parent / "tasks"
# metric name in ratchet -> (task, lm-eval metric key)
SUITE = {
    "domain_ppl": ("ratchet_domain_ppl", "word_perplexity,none"),
    "domain_bpb": ("ratchet_domain_ppl", "bits_per_byte,none"),
    "general_ppl": ("ratchet_general_ppl", "word_perplexity,none"),
    "general_bpb": ("ratchet_general_ppl", "bits_per_byte,none"),
}
ROLE_OF_TASK = {"ratchet_domain_ppl": "domain", "ratchet_general_ppl": "general"}


def eval_subset(records: list[dict], max_docs: int) -> list[dict]:
    """The first max_docs held-out records by id: a fixed set that every model is scored on."""
    records = sorted(records, key=lambda r: r["id"])
    return records[:max_docs] if max_docs else records


def model_spec(kind: str, path: str, adapter_of: str | None, max_length: int) -> tuple[str, dict]:
    """lm-eval model name and args for a plain model, a LoRA adapter, or an ONNX folder."""
    if kind == "onnx":
        return "onnxruntime", {"pretrained": path, "execution_provider": "cpu", "max_length": max_length}
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


def run_suite(kind: str, path: str, data: str, cfg, adapter_of: str | None = None) -> dict:
    """Score one model on the held-out suite; returns {metrics, lm_eval: raw results, docs}."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="ratchet-eval-") as scratch:
        scratch = Path(scratch)
        docs = {}
        for task, role in ROLE_OF_TASK.items():
            subset = eval_subset(list(read_jsonl(f"{data}/{role}/heldout.jsonl")), cfg.max_docs)
            if not subset:
                raise SystemExit(f"{data}/{role}/heldout.jsonl is empty: nothing to evaluate on")
            docs[role] = len(subset)
            write_jsonl(scratch / f"{role}.jsonl", [{"text": r["text"]} for r in subset])
            template = (TASKS_DIR / f"{task}.yaml").read_text()
            (scratch / f"{task}.yaml").write_text(template.replace("__DATA__", str(scratch / f"{role}.jsonl")))
        name, args = model_spec(kind, path, adapter_of, cfg.max_length)
        lm = quiet(lm_eval.api.registry.get_model(name).create_from_arg_obj(
            args, {"batch_size": 1 if kind == "onnx" else cfg.batch_size, "device": "cpu"}))
        out = lm_eval.simple_evaluate(
            model=lm, tasks=list(ROLE_OF_TASK), log_samples=False,
            task_manager=TaskManager(include_path=str(scratch), include_defaults=False))
    results = out["results"]
    metrics = {m: float(results[task][key]) for m, (task, key) in SUITE.items()}
    return {"metrics": metrics, "docs": docs, "lm_eval": {t: {k: v for k, v in r.items() if k != "alias"}
                                                         for t, r in results.items()}}
