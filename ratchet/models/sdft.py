"""Self-distilled SFT targets (Yang et al. 2024, "Self-Distillation Bridges Distribution Gap in Language
Model Fine-Tuning").

Instruction pairs written by people (here: a docstring's first lines as the
answer to "What does X do?") are far from how the model being tuned answers.
Trained on them as written, it learns their style and forgets its own way of
answering. Self-distillation asks the model itself, before tuning, to rewrite
each reference reply in its own words with the reference in view, and trains
on the rewrite. A rewrite that strays from its reference (chrF below a floor),
loops (repeated 4-grams) or does not finish within the token budget is not
used: that example keeps its reference reply, and the reason is recorded.
"""
from __future__ import annotations

import sacrebleu

from ratchet.core.text import repetition
from ratchet.models import generation

PROMPT = ("Question: {question}\nReference answer: {reference}\n\n"
          "Rewrite the reference answer as a clear, correct reply to the question. "
          "Keep every fact; add nothing that is not in it.")
TARGETS_FILE = "self_distilled.jsonl"  # in the adapter's folder: every reference, its rewrite and which was used
MAX_REPETITION = 0.1  # a rewrite repeating over 10% of its 4-grams is looping, not answering


def rewrite_prompt(tok, messages: list[dict], max_reference_tokens: int) -> str:
    """The chat prompt asking for a rewrite of the conversation's last reply (cut to a token budget)."""
    question = messages[-2]["content"]
    ids = tok(messages[-1]["content"], add_special_tokens=False).input_ids[:max_reference_tokens]
    return tok.apply_chat_template(
        [*messages[:-2], {"role": "user", "content": PROMPT.format(question=question, reference=tok.decode(ids))}],
        add_generation_prompt=True, tokenize=False)


def choose(reference: str, rewrite: str, finished: bool, min_chrf: float) -> tuple[str, str, float]:
    """(the reply to train on, why, chrF of the rewrite against the reference)."""
    chrf = sacrebleu.sentence_chrf(rewrite, [reference]).score
    if not finished:
        return reference, "unfinished", chrf
    if not rewrite:
        return reference, "empty", chrf
    if repetition(rewrite) > MAX_REPETITION:
        return reference, "repetitive", chrf
    if chrf < min_chrf:
        return reference, "strays", chrf
    return rewrite, "rewrite", chrf


def self_distill(model, tok, conversations: list[list[dict]], indices: list[int], *, min_chrf: float,
                 max_new_tokens: int, max_reference_tokens: int, batch: int, bf16: bool) -> list[dict]:
    """One record per index: the conversation's id in the list, its reference and rewrite, the reply chosen
    and why. The model is the one about to be tuned, without its adapter."""
    prompts = [rewrite_prompt(tok, conversations[i], max_reference_tokens) for i in indices]
    rows = []
    for i, (rewrite, finished) in zip(indices, generation.greedy(model, tok, prompts, max_new_tokens, batch, bf16)):
        reference = conversations[i][-1]["content"]
        reply, why, chrf = choose(reference, rewrite, finished, min_chrf)
        rows.append({"index": i, "question": conversations[i][-2]["content"], "reference": reference,
                     "rewrite": rewrite, "chrf": round(chrf, 2), "used": why, "reply": reply})
    return rows
