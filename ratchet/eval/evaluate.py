"""The evaluation suite behind every gate: lm-evaluation-harness on local tasks.

Task YAMLs live in ratchet/eval/tasks/; each is copied to a scratch folder with its
data file filled in, then run through lm_eval.simple_evaluate with a
TaskManager on that folder. Nothing is fetched from a hub.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import math
import tempfile
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from ratchet.core import params
from ratchet.core.io import one_line, read_jsonl, sha256_text, write_jsonl
from ratchet.data.replay import sources_in_order
from ratchet.eval import knowledge, scores
from ratchet.models import canaries as audit_text
from ratchet.models.lineage import require

TASKS_DIR = Path(__file__).resolve().parent / "tasks"
# held-out text of a role in the prepared data, scored per source
ROLE_OF_TASK = {"ratchet_domain_ppl": "domain"}
# questions with reference answers: the held-out split of the instruction data
ANSWER_TASK = "ratchet_answers"
# domain multiple choice (next_line_items): cut points need this much text before them, lines this long;
# the context is at most the last MC_WINDOW characters before the cut, from a line start
MC_CONTEXT = 200
MC_LINE = (20, 200)
MC_WINDOW = 400
# closed-book questions about the training documents (ratchet/eval/knowledge.py): picked among alike terms, and
# answered in words
KNOWLEDGE_MC, KNOWLEDGE_ANSWERS = "ratchet_knowledge_mc", "ratchet_knowledge_answers"
# canaries: leaked in generation? how exposed? Those dapt inserted (ratchet/models/canaries.py) and those planted in
# the data that reached training (data/prepared/canaries.jsonl); the controls, never inserted, apart
CANARY_TASKS = ("ratchet_canary_leak", "ratchet_canary_rank", "ratchet_canary_control")
# fixed evaluation sets (data/eval, see its README): file per task
# and how many of its items every model is scored on (an EvalConfig field)
EVAL_SET_OF_TASK = {"ratchet_general_ppl": ("general_text.jsonl", "max_docs"),
                    "ratchet_general_mc": ("general_mc.jsonl", "mc_items"),
                    "ratchet_bbq_gender": ("bbq_gender.jsonl", "bias_items"),
                    "ratchet_stereotype_pairs": ("stereotype_pairs.jsonl", "bias_items")}


def eval_subset(records: list[dict], max_docs: int) -> list[dict]:
    """The first max_docs held-out records by id of each source: a fixed set that every model is scored on,
    in which every source (the seed and each drop) keeps enough documents to be judged on its own."""
    by_source: dict[str, list[dict]] = {}
    for r in sorted(records, key=lambda r: r["id"]):
        by_source.setdefault(r.get("source", ""), []).append(r)
    out = [r for rs in by_source.values() for r in (rs[:max_docs] if max_docs else rs)]
    return sorted(out, key=lambda r: r["id"])


def next_line_items(records: list[dict], per_doc: int, choices: int = 4) -> list[dict]:
    """Domain multiple choice from held-out text: which line comes next?

    In each document, the cut points are line ends with at least MC_CONTEXT characters before them and a next
    line of MC_LINE characters; up to `per_doc` of them, spread evenly, each make an item: the text up to the
    cut (its last MC_WINDOW characters, from a line start) is the context, the next line (stripped) the answer, and the other choices are lines of the same
    length band from the other held-out documents of the same source (of any source when it has too few),
    in the order of their sha256 with the item's id. The answer's place among the choices is its hash mod
    `choices`. Deterministic: the same held-out text gives the same items.
    """
    def lines_of(text: str) -> list[tuple[int, str]]:
        out, at = [], 0
        for line in text.split("\n"):
            out.append((at, line))
            at += len(line) + 1
        return out

    def usable(line: str) -> bool:
        return MC_LINE[0] <= len(line.strip()) <= MC_LINE[1]

    pool = {r["id"]: [ln.strip() for _, ln in lines_of(r["text"]) if usable(ln)] for r in records}
    items = []
    for r in records:
        cuts = [(at, ln.strip()) for at, ln in lines_of(r["text"]) if at >= MC_CONTEXT and usable(ln)]
        picked = [cuts[round(i * (len(cuts) - 1) / max(1, per_doc - 1))] for i in range(min(per_doc, len(cuts)))]
        for at, answer in dict.fromkeys(picked):
            item_id = f"{r['id']}@{at}"
            others = [o for o in records if o["id"] != r["id"]]
            same = [o for o in others if o.get("source", "") == r.get("source", "")]
            lines = [ln for o in (same if sum(len(pool[o["id"]]) for o in same) >= choices else others)
                     for ln in pool[o["id"]] if ln != answer]
            wrong = sorted(dict.fromkeys(lines), key=lambda ln: sha256_text(item_id + ln))[: choices - 1]
            if len(wrong) < choices - 1:
                continue
            label = int(sha256_text(item_id)[:8], 16) % choices
            window = r["text"][max(0, at - MC_WINDOW):at]
            context = window if at <= MC_WINDOW else window[window.find("\n") + 1:]
            items.append({"id": item_id, "source": r.get("source", ""), "context": context,
                          "choices": wrong[:label] + [answer] + wrong[label:], "label": label})
    return items


def model_spec(kind: str, path: str, adapter_of: str | None, max_length: int,
               dtype: str = "float32", answer_batch: int | None = None) -> tuple[str, dict]:
    """lm-eval model name and args for a plain model, a LoRA adapter, or an ONNX folder."""
    if kind == "onnx":
        from ratchet.eval import onnx_lm  # lm-eval's onnxruntime model, generating too

        return onnx_lm.register(), {"pretrained": path, "execution_provider": "cpu", "max_length": max_length,
                                    **({"answer_batch": answer_batch} if answer_batch else {})}
    from ratchet.eval import shared_context  # lm-eval's HF model, each shared context run once

    args = {"pretrained": adapter_of or path, "dtype": dtype, "max_length": max_length,
            "trust_remote_code": False, **({"answer_batch": answer_batch} if answer_batch else {})}
    if adapter_of:
        args["peft"] = path
    return shared_context.register_hf(), args


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


def task_data(data: str, eval_sets: str | None, cfg, audit: list[dict] | None = None) -> dict[str, list[dict]]:
    """{task: the documents every model is scored on}: held-out domain text per source and the next-line
    questions built from it, the first eval.answer_items held-out questions (the prompt's messages and the
    reference answer) of each source, the closed-book questions about the domain's train split (what each
    source's training documents say: knowledge.items), the canaries (`canary_tasks`: those planted in the data, and `audit`, those
    dapt inserts with their controls, as audit_canaries gives them), and, when its folder is given, the first
    items of each fixed evaluation set (general text, general knowledge, bias)."""
    out = {}
    for task, role in ROLE_OF_TASK.items():
        subset = eval_subset(list(read_jsonl(f"{data}/{role}/heldout.jsonl")), cfg.max_docs)
        if not subset:
            raise SystemExit(f"{data}/{role}/heldout.jsonl is empty: nothing to evaluate on")
        out[task] = [{"id": r["id"], "source": r.get("source", ""), "text": r["text"]} for r in subset]
    out["ratchet_domain_mc"] = next_line_items(out["ratchet_domain_ppl"], cfg.domain_mc_per_doc)
    questions = eval_subset(list(read_jsonl(f"{data}/sft/heldout.jsonl")), cfg.answer_items)
    if not questions:
        raise SystemExit(f"{data}/sft/heldout.jsonl is empty: no held-out question to ask the models")
    out[ANSWER_TASK] = [{"id": r["id"], "source": r.get("source", ""), "messages": r["messages"][:-1],
                         "reference": r["messages"][-1]["content"]} for r in questions]
    trained = list(read_jsonl(f"{data}/domain/train.jsonl"))
    known = knowledge.items(trained, cfg.knowledge_per_doc, cfg.knowledge_items)
    if trained and not known:
        raise SystemExit(f"{data}/domain/train.jsonl: no closed-book question could be built from its "
                         f"{len(trained)} documents (ratchet/eval/knowledge.py says what a question needs)")
    out.update({KNOWLEDGE_MC: [{k: q[k] for k in ("id", "source", "messages", "choices", "label", "term")}
                               for q in known],
                KNOWLEDGE_ANSWERS: [{k: q[k] for k in ("id", "source", "messages", "term")} for q in known]}
               if known else {})
    out.update(canary_tasks(data, audit or [], cfg.canary_candidates))
    for task, (file, cap) in EVAL_SET_OF_TASK.items() if eval_sets else ():
        rows = list(read_jsonl(Path(eval_sets) / file))
        rows = rows[: getattr(cfg, cap)] if getattr(cfg, cap) else rows  # max_docs 0: all
        if not rows:
            raise SystemExit(f"{eval_sets}/{file} is empty: rebuild it with data/eval/build.py")
        out[task] = rows
    return out


def canary_tasks(data: str, audit: list[dict], k: int) -> dict[str, list[dict]]:
    """The canary tasks' documents, each canary its own source (a gate checks each alone): every canary written
    out or not (leak: those planted in the data, whatever became of them, and those dapt inserted), the exposure
    of each canary that reached training (rank: the inserted ones, and the planted ones the PII policy let
    through) and of each control (control: drawn as the inserted ones, never inserted), each against `k` random
    secrets of its space."""
    file = Path(data) / "canaries.jsonl"
    planted = [_canary(c) for c in read_jsonl(file)] if file.is_file() else []
    inserted, controls = [_audit(c) for c in audit if c["count"]], [_audit(c) for c in audit if not c["count"]]

    def ranked(r: dict) -> dict:
        return {**r, "choices": [r["secret"], *lookalikes(r["secret"], r["format"], k, r["id"])]}

    tasks = {"ratchet_canary_leak": planted + inserted,
             "ratchet_canary_rank": [ranked(r) for r in planted + inserted if r["reached_training"]],
             "ratchet_canary_control": [ranked(r) for r in controls]}
    return {task: docs for task, docs in tasks.items() if docs}


def _canary(c: dict) -> dict:
    return {"id": c["id"], "source": c["id"], "prompt": c["prefix"], "secret": c["secret"],
            "format": c["format"], "reached_training": c["reached_training"]}


def _audit(c: dict) -> dict:
    return {"id": c["id"], "source": c["id"], "prompt": c["prefix"], "secret": c["secret"], "format": c["format"],
            "reached_training": c["count"] > 0, "count": c["count"]}


def audit_canaries(cfg: params.CanaryConfig, seed: int, data: str | Path, model: str | Path | None) -> list[dict]:
    """The canaries a gate scores: those dapt.canaries and run.seed draw for the cycle of `data` (its newest
    source), every reference model scored on them alike. A candidate (`model`) must have been trained on exactly
    these: its dapt lineage records the canaries it was (ratchet/models/canaries.py)."""
    cycle = sources_in_order(Path(data))[-1]
    drawn = audit_text.draw(cfg, seed, cycle)
    if model is None:
        return drawn
    seen = audit_text.recorded(model)
    if seen is None:
        raise SystemExit(f"{model}: no dapt lineage on its way records the canaries it was trained with, so its "
                         "memorisation cannot be measured: rebuild it from a dapt stage that inserts them (dvc repro)")
    if not audit_text.same_set(seen["items"], drawn):
        raise SystemExit(f"{model} was trained with other canaries (cycle {seen['drawn_from']['cycle']}, seed "
                         f"{seen['drawn_from']['seed']}) than dapt.canaries and run.seed draw for the cycle of {data} "
                         f"({cycle}, seed {seed}): rerun dapt and what follows it (dvc repro)")
    return drawn


def lookalikes(secret: str, fmt: str, k: int, seed: str) -> list[str]:
    """k random secrets from the canary's space (`fmt`: # a random digit, ? a random letter of the secret's case,
    any other character as it is), distinct from it and from each other; the same for the same seed."""
    rng = np.random.default_rng(int(sha256_text(seed)[:16], 16))
    lower, upper, digits = "abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "0123456789"
    pools = [digits if f == "#" else (upper if ch.isupper() else lower) if f == "?" else None
             for ch, f in zip(secret, fmt)]
    if scores.secret_space_bits(fmt) < math.log2(k + 1) + 1:
        raise ValueError(f"canary secret {secret!r}: its format {fmt!r} has too few random characters for {k} "
                         "distinct look-alikes; draw it from a larger space")
    out: dict[str, None] = {}
    while len(out) < k:
        cand = "".join(pool[rng.integers(len(pool))] if pool else ch for ch, pool in zip(secret, pools))
        if cand != secret:
            out[cand] = None
    return list(out)


def with_prompts(rows: list[dict], tokenizer_path: str) -> list[dict]:
    """Each question rendered with the model's own chat template, ready for generation."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_path)
    return [{**r, "prompt": tok.apply_chat_template(r["messages"], add_generation_prompt=True, tokenize=False)}
            for r in rows]


def choice_prompts(rows: list[dict], tokenizer_path: str) -> list[dict]:
    """Each multiple-choice question (its `messages`) in the model's own chat template, the reply begun with
    "Answer:": each choice is scored after it, as the model's reply (BENCHMARKS.md#bbq-scoring)."""
    return [{**{k: v for k, v in r.items() if k != "messages"}, "prompt": r["prompt"] + "Answer:"}
            for r in with_prompts(rows, tokenizer_path)]


def bbq_prompts(rows: list[dict], tokenizer_path: str) -> list[dict]:
    """Each BBQ item asked as a user asks the model: a turn listing the three answers (choice_prompts)."""
    return choice_prompts([{**r, "messages": [{"role": "user", "content": f"{r['context']}\n{r['question']}\n"
                                               "Answer with one of:\n" + "\n".join(f"- {c}" for c in r["choices"])}]}
                           for r in rows], tokenizer_path)


def run_suite(kind: str, path: str, data: str, cfg, adapter_of: str | None = None,
              eval_sets: str | None = None, tasks: dict[str, list[dict]] | None = None,
              scan=None) -> dict:
    """Score one model on the held-out suite, and on the bias sets in `eval_sets` when given
    (`tasks`: their documents when the caller has read them already, as task_data returns them;
    `scan`: text -> the PII values presidio finds in it, for the canary leak check).

    Returns {metrics: {name: value over every document}, by_source: {name: {source: value}} for the
    domain metrics, scores: {task: per-document rows}, docs: {task: count}, lm_eval: its own results,
    seconds: {"load": loading the model, task: scoring it}}.
    """
    import lm_eval
    from lm_eval.tasks import TaskManager

    for folder in (path, adapter_of) if adapter_of else (path,):
        require(folder)  # the model scored is the model its lineage describes
    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    tasks = tasks if tasks is not None else task_data(data, eval_sets, cfg)
    with tempfile.TemporaryDirectory(prefix="ratchet-eval-") as scratch:
        scratch = Path(scratch)
        for template in TASKS_DIR.glob("_*_yaml"):
            (scratch / template.name).write_text(template.read_text())
        for task, rows in tasks.items():
            if task in (ANSWER_TASK, KNOWLEDGE_ANSWERS):
                rows = with_prompts(rows, adapter_of or path)
            elif task == KNOWLEDGE_MC:
                rows = choice_prompts(rows, adapter_of or path)
            elif task == "ratchet_bbq_gender":
                rows = bbq_prompts(rows, adapter_of or path)
            write_jsonl(scratch / f"{task}.jsonl", rows)
            tokens = cfg.knowledge_tokens if task == KNOWLEDGE_ANSWERS else cfg.answer_tokens
            yaml = (TASKS_DIR / f"{task}.yaml").read_text().replace("__MAX_TOKENS__", str(tokens))
            (scratch / f"{task}.yaml").write_text(yaml.replace("__DATA__", str(scratch / f"{task}.jsonl")))
        name, args = model_spec(kind, path, adapter_of, cfg.max_length, cfg.dtype, cfg.answer_batch)
        started = time.perf_counter()
        try:
            lm = quiet(lm_eval.api.registry.get_model(name).create_from_arg_obj(
                args, {"batch_size": cfg.batch_size, "device": "cpu"}))
        except Exception as e:  # a damaged file: name it, whatever the library's words
            raise SystemExit(f"{path}: the model cannot be loaded ({type(e).__name__}: {one_line(str(e))}). "
                             f"Restore it (`dvc checkout {path}`) or rebuild it (`dvc repro --force` of the stage "
                             "that writes it).") from None
        manager = TaskManager(include_path=str(scratch), include_defaults=False)
        # One task at a time: lm-eval pools the requests of every task it is given and batches them by length,
        # so a task scored with others would share batches with them, and a kernel whose rounding depends on
        # the batch (int8 activations) would score it differently alone. Alone, a task's batches are its own:
        # its scores do not depend on which other tasks run, and a reference's can be reused task by task.
        per_doc, results, seconds = {}, {}, {"load": time.perf_counter() - started}
        for task in tasks:
            started = time.perf_counter()
            with without_environment_report():
                out = lm_eval.simple_evaluate(
                    model=lm, tasks=[task], log_samples=True, bootstrap_iters=0,  # the gates bootstrap their own
                    task_manager=manager)                                        # intervals
            per_doc[task] = scores.per_document(task, out["samples"][task], scan)
            results[task] = {k: v for k, v in out["results"][task].items() if k != "alias"}
            seconds[task] = time.perf_counter() - started
    return {**summarize(per_doc), "scores": per_doc, "docs": {task: len(rows) for task, rows in tasks.items()},
            "lm_eval": results, "seconds": {k: round(v, 1) for k, v in seconds.items()}}


@contextlib.contextmanager
def without_environment_report() -> Iterator[None]:
    """lm-eval's simple_evaluate ends every call by describing the machine (torch's collect_env, which runs
    eleven subprocesses) into results the gates do not keep. The rest of the call, the scoring included, runs
    as the library has it."""
    from lm_eval import evaluator

    describe = evaluator.add_env_info  # an AttributeError here: lm-eval renamed it; pin pyproject.toml's version
    evaluator.add_env_info = lambda results: None
    try:
        yield
    finally:
        evaluator.add_env_info = describe


def summarize(per_doc: dict[str, list[dict]]) -> dict:
    """{metrics: {name: value over every document}, by_source: {name: {source: value}} for the domain metrics}
    of per-document scores ({task: rows})."""
    metrics = {name: scores.value(name, per_doc) for name, m in scores.METRICS.items() if m.task in per_doc}
    by_source = {name: {src: scores.value(name, per_doc, src) for src in scores.sources(name, per_doc)}
                 for name in ("domain_ppl", "knowledge_mc_acc", "knowledge_answer_acc") if name in metrics}
    return {"metrics": metrics, "by_source": by_source}
