"""Parity of an ONNX model with the PyTorch model it was exported from: top-1 agreement where the reference's
choice is clear, and the increase of token NLL, on held-out text.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ratchet.core import params
from ratchet.models import modeling
from ratchet.models.batches import texts


def token_nll(logits: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Per-position next-token negative log-likelihood from [T, V] logits."""
    logits = logits[:-1].astype(np.float64)
    logz = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    return logz - logits[np.arange(len(ids) - 1), ids[1:]]


def parity_docs(data: str, tok, cfg: params.QuantizeConfig) -> list[torch.Tensor]:
    """Held-out documents (domain first, then general), each cut at parity_seq_len tokens, until
    parity_tokens tokens are in: a fixed sample the student and its int8 file are compared on."""
    out, total = [], 0
    for role in ("domain", "general"):
        for doc in texts(f"{data}/{role}/heldout.jsonl"):
            ids = tok(doc, return_tensors="pt", add_special_tokens=False).input_ids[:, :cfg.parity_seq_len]
            if ids.shape[1] >= 2 and total < cfg.parity_tokens:
                out.append(ids)
                total += ids.shape[1]
    if total < cfg.parity_tokens:
        raise SystemExit(f"quantize: only {total} held-out tokens in {data}; parity needs quantize.parity_tokens="
                         f"{cfg.parity_tokens} (lower it, or add held-out text)")
    return out


def parity(student: Path, onnx_dir: Path, docs: list[torch.Tensor], cfg: params.QuantizeConfig) -> dict:
    """The int8 ONNX model against the PyTorch student on the same tokens.

    Top-1 agreement counts the positions where the student's most likely next token
    leads the runner-up by at least quantize.flip_margin in probability: where the two
    are tied, rounding may pick either and no user could tell. The NLL increase is over
    every position.
    """
    from optimum.onnxruntime import ORTModelForCausalLM

    tok = modeling.load_tokenizer(student)
    torch_model = modeling.load_model(student).eval()
    ort_model = ORTModelForCausalLM.from_pretrained(onnx_dir, use_cache=True, use_io_binding=False)
    agree_all, agree, decided, n, nll_t, nll_o = 0, 0, 0, 0, 0.0, 0.0
    for ids in docs:
        with torch.no_grad():
            lt = torch_model(input_ids=ids).logits[0]
        lo = ort_model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0]
        top2 = lt.float().softmax(-1).topk(2, dim=-1).values
        clear = (top2[:, 0] - top2[:, 1]) >= cfg.flip_margin
        same = lt.argmax(-1) == lo.argmax(-1)
        agree_all += int(same.sum())
        agree += int(same[clear].sum())
        decided += int(clear.sum())
        n += ids.shape[1]
        nll_t += token_nll(lt.numpy(), ids[0].numpy()).sum()
        nll_o += token_nll(lo.numpy(), ids[0].numpy()).sum()
    scored = n - len(docs)
    prompt = tok.apply_chat_template([{"role": "user", "content": cfg.sample_prompt}],
                                     add_generation_prompt=True, return_tensors="pt")
    sample = ort_model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=cfg.sample_tokens,
                                do_sample=False)
    return {"top1_agreement": agree / decided if decided else float("nan"), "top1_agreement_all": agree_all / n,
            "decided_positions": decided, "tokens": n, "docs": len(docs),
            "nll_torch": nll_t / scored, "nll_onnx": nll_o / scored, "nll_increase": (nll_o - nll_t) / scored,
            "sample": tok.decode(sample[0, prompt.shape[1]:], skip_special_tokens=True)}
