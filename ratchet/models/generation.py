"""Text models write: greedy replies to prompts (sft's self-distilled targets), seeded samples of free text
(distill's rehearsal blocks), both on a bf16 copy of the model being trained where the stage trains in bf16,
and the gates' answers to held-out questions (lm-eval's generate_until, for the HF and the ONNX model alike)."""
from __future__ import annotations

import contextlib
import copy
import json
from typing import Callable

import numpy as np
import torch

from ratchet.models.modeling import grouped_decoding

# run(ids, mask, positions, past or None) -> (logits at each row's last position [rows, vocab], past)
Run = Callable[[np.ndarray, np.ndarray, np.ndarray, object], tuple[np.ndarray, object]]
# select(past, rows) -> the past of those rows only
Select = Callable[[object, np.ndarray], object]


@contextlib.contextmanager
def inference_copy(model, bf16: bool):
    """The model to generate with, in eval mode: with `bf16`, a bf16 copy of `model`; without, `model` itself
    (its training mode restored after); a bitsandbytes-quantized model as it is."""
    if bf16 and getattr(model, "hf_quantizer", None) is None:
        yield copy.deepcopy(model).to(torch.bfloat16).eval()
        return
    training = model.training
    try:
        yield model.eval()
    finally:
        model.train(training)


def greedy(model, tok, prompts: list[str], max_new_tokens: int, batch: int, bf16: bool) -> list[tuple[str, bool]]:
    """Greedy replies to `prompts`, `batch` at a time (longest first, so a batch pads little), each ended at
    end-of-text or after max_new_tokens: [(text, finished)], in the prompts' order. A reply that is done leaves
    its batch (greedy_tokens). With `bf16`, on a bf16 copy of the model."""
    ids = [tok(p, add_special_tokens=False).input_ids for p in prompts]
    with inference_copy(model, bf16) as gen, grouped_decoding(gen):
        answers = greedy_batches(ids, max_new_tokens, {tok.eos_token_id}, *torch_decoder(gen), batch)
    return [(tok.decode(t, skip_special_tokens=True).strip(), len(t) < max_new_tokens) for t in answers]


def topk_logprobs(logits: torch.Tensor, k: int, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest next-token log-probs at `temperature` over the last axis of `logits`: (idx int32,
    logp fp16), log_softmax(x / T) at the top k of x without writing the whole log_softmax."""
    scaled = logits.float() / temperature
    top = scaled.topk(k, dim=-1)
    return top.indices.int(), (top.values - scaled.logsumexp(-1, keepdim=True)).half()


class _SampleAndRecord:  # a transformers logits processor (any callable of input_ids and scores)
    """Sees each step's raw next-token logits: keeps their top-k log-probs at `kd_temperature` (what a
    KL term against this model wants at that position), then rules out end-of-text (a block never stops
    early) and applies the sampling temperature."""

    def __init__(self, eos: int, temperature: float, topk: int, kd_temperature: float):
        self.eos, self.temperature, self.topk, self.kd_temperature = eos, temperature, topk, kd_temperature
        self.idx: list[torch.Tensor] = []
        self.logp: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.topk:
            idx, logp = topk_logprobs(scores, self.topk, self.kd_temperature)
            self.idx.append(idx)
            self.logp.append(logp)
        scores = scores.clone()
        scores[:, self.eos] = float("-inf")
        return scores / self.temperature if self.temperature != 1.0 else scores


@torch.no_grad()
def sample_blocks(model, tok, n: int, length: int, batch: int, seed: int, temperature: float, bf16: bool,
                  topk: int = 0, kd_temperature: float = 1.0
                  ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
    """[n, length] token ids the model writes from an end-of-text token on, sampled at `temperature` (no top-k
    or top-p), never stopping early; the same for the same seed. With `bf16`, on a bf16 copy of the model.

    With `topk`, also the model's top-k next-token log-probs at `kd_temperature` at every position, read
    off the logits it sampled from (idx int32 and logp fp16, [n, length - 1, k], as teacher_topk lays them
    out), so a KL term on these blocks needs no second pass of the model over them; else None."""
    from transformers import LogitsProcessorList  # not at import: importing a stage loads no hub library

    generator_state = torch.get_rng_state()
    torch.manual_seed(seed)
    rows, idx, logp = [], [], []
    try:
        with inference_copy(model, bf16) as gen:
            for i in range(0, n, batch):
                start = torch.full((min(batch, n - i), 1), tok.eos_token_id, dtype=torch.long)
                record = _SampleAndRecord(tok.eos_token_id, temperature, topk, kd_temperature)
                rows.append(gen.generate(input_ids=start, attention_mask=torch.ones_like(start), do_sample=True,
                                         temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=length - 1,
                                         logits_processor=LogitsProcessorList([record]),
                                         pad_token_id=tok.pad_token_id, use_cache=True))
                if topk:
                    idx.append(torch.stack(record.idx, 1))
                    logp.append(torch.stack(record.logp, 1))
    finally:
        torch.set_rng_state(generator_state)
    return torch.cat(rows), ((torch.cat(idx), torch.cat(logp)) if topk else None)


def greedy_tokens(prompts: list[list[int]], new: int, stop: set[int], run: Run, select: Select) -> list[list[int]]:
    """Greedy continuations of `prompts` (token ids) decoded together: left-padded, each row's positions
    counted from its first real token, the KV cache fed back every step. A row is done when it writes a
    `stop` token (not kept) or its `new`-th token, and then leaves the batch: the cache keeps only the rows
    still decoding, so a few long answers do not keep every row of their batch running."""
    width = max(map(len, prompts))
    ids = np.zeros((len(prompts), width), dtype=np.int64)
    mask = np.zeros((len(prompts), width), dtype=np.int64)
    for row, tokens in enumerate(prompts):
        ids[row, width - len(tokens):], mask[row, width - len(tokens):] = tokens, 1
    positions = np.clip(mask.cumsum(1) - 1, 0, None)
    logits, past = run(ids, mask, positions, None)
    out: list[list[int]] = [[] for _ in prompts]
    active = np.arange(len(prompts))
    for _ in range(new):
        tokens = logits.argmax(-1)
        going = []
        for at, (row, token) in enumerate(zip(active.tolist(), tokens.tolist())):
            if token not in stop:
                out[row].append(token)
                if len(out[row]) < new:
                    going.append(at)
        if not going:
            break
        if len(going) < len(active):
            keep = np.array(going)
            past, mask, positions, tokens, active = select(past, keep), mask[keep], positions[keep], tokens[keep], active[keep]
        mask = np.concatenate([mask, np.ones((len(active), 1), dtype=mask.dtype)], axis=1)
        positions = positions[:, -1:] + 1
        logits, past = run(tokens[:, None], mask, positions, past)
    return out


def greedy_batches(prompts: list[list[int]], new: int, stop: set[int], run: Run, select: Select,
                   batch: int) -> list[list[int]]:
    """greedy_tokens over `batch` prompts at a time, longest first (so a batch pads little), in the prompts' order."""
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    out: list[list[int]] = [[] for _ in prompts]
    for start in range(0, len(order), batch):
        rows = order[start:start + batch]
        for i, tokens in zip(rows, greedy_tokens([prompts[i] for i in rows], new, stop, run, select)):
            out[i] = tokens
    return out


def torch_decoder(model) -> tuple[Run, Select]:
    """run and select for greedy_tokens on a transformers causal LM (logits of the last position only)."""
    @torch.no_grad()
    def run(ids, mask, positions, past):
        out = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                    position_ids=torch.from_numpy(positions), past_key_values=past, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1].float().numpy(), out.past_key_values

    def select(past, rows):
        past.batch_select_indices(torch.from_numpy(rows))
        return past

    return run, select


def answer_requests(lm, requests, run: Run, select: Select, batch: int) -> list[str]:
    """lm-eval's generate_until for `lm` (an HF or ONNX lm-eval model), greedy, `batch` prompts decoded
    together (longest first, so a batch pads little): each prompt left-truncated to leave room for the new
    tokens, decoding stopped at end-of-text and at any `until` string that is one token, and the text cut at
    the first `until` string."""
    results: list[str | None] = [None] * len(requests)
    groups: dict[str, list[int]] = {}
    for i, request in enumerate(requests):
        groups.setdefault(json.dumps(request.args[1], sort_keys=True, default=str), []).append(i)
    for members in groups.values():
        kwargs = dict(requests[members[0]].args[1])
        if kwargs.get("do_sample"):
            raise ValueError("the gates generate greedily only: set do_sample: false in the task")
        until = kwargs.pop("until", None) or []
        until = [until] if isinstance(until, str) else list(until)
        stop = {lm.eot_token_id} | {ids[0] for ids in (lm.tokenizer.encode(u, add_special_tokens=False)
                                                       for u in until if u) if len(ids) == 1}
        new = int(kwargs.get("max_gen_toks", lm.max_gen_toks))
        prompts = [lm.tok_encode(requests[i].args[0])[-max(1, lm.max_length - new):] for i in members]
        for i, tokens in zip(members, greedy_batches(prompts, new, stop, run, select, batch)):
            text = lm.tok_decode(tokens)
            for u in until:
                text = text[:text.index(u)] if u and u in text else text
            results[i] = text
            lm.cache_hook.add_partial("generate_until", requests[i].args, text)
    return results  # type: ignore[return-value]
