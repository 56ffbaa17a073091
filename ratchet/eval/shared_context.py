"""Log-likelihoods with each shared context computed once, for lm-eval's HF and ONNX models.

lm-eval scores a multiple-choice item with one forward pass per choice over
the whole context and that choice, and computes the vocabulary's log-softmax
at every position of it. The gates' items share long contexts among few or
many short choices (a BBQ story and three names; a canary's prefix and 51
candidate secrets), so most of that work is the same context over again.
Here requests are grouped by their context: the context runs once, its KV
cache is repeated for the group's continuations, and logits are taken only
where a continuation token is predicted. Truncation is lm-eval's HF rule (the
last max_length + 1 tokens of context and continuation, the last one never
fed), so results equal lm-eval's own path up to floating-point reassociation
(tests/eval/test_gates.py compares the two).

`register_hf()` registers `ratchet-hf`, lm-eval's HFLM with this scoring (and
a LoRA adapter merged into its base, as the champion's teacher is);
ratchet/eval/onnx_lm.py gives the ONNX file the same.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

HF_NAME = "ratchet-hf"
# at most this many input tokens in one forward pass over continuations: the log-softmax over the
# vocabulary (49,152 for SmolLM2) of a 512-token window is 100 MB in float32
ROW_TOKENS = 2048
_registered = False

Request = tuple  # ((context, continuation) | None, context tokens, continuation tokens)


def plan(requests: list[Request], max_length: int) -> dict[tuple[int, ...], list[tuple[int, list[int], list[int]]]]:
    """{prefix: [(request index, input tokens, target tokens)]}: the tokens of a request's truncated
    context but its last form the prefix, run once per group; the input is that last context token and
    the continuation but its last, and each input position predicts the target at the same place."""
    groups: dict[tuple[int, ...], list[tuple[int, list[int], list[int]]]] = {}
    for i, (_, context, continuation) in enumerate(requests):
        if not continuation:
            raise ValueError(f"request {i} has an empty continuation: nothing to score")
        window = (list(context) + list(continuation))[-(max_length + 1):]
        n = min(len(continuation), len(window) - 1)
        if n < 1 or len(window) - n < 1:
            raise ValueError(f"request {i} has no context token before its continuation")
        prefix, last = window[:len(window) - n - 1], window[len(window) - n - 1]
        groups.setdefault(tuple(prefix), []).append((i, [last, *window[len(window) - n:-1]], window[-n:]))
    return groups


def score(requests: list[Request], max_length: int, batch_size: int,
          prefix_fn: Callable[[np.ndarray, np.ndarray, np.ndarray], object],
          rows_fn: Callable[..., tuple[np.ndarray, np.ndarray]]) -> list[tuple[float, bool]]:
    """(sum of the continuation's log-probabilities, whether greedy decoding gives it) per request, in order.

    Groups run `batch_size` prefixes at a time, left-padded: `prefix_fn(ids, mask, positions)` returns their
    cache. Their continuations run `batch_size` rows at a time, right-padded, each on its own group's cache:
    `rows_fn(cache, which, ids, mask, positions, targets)` (`which`: each row's group in the prefix batch;
    cache None for the empty prefix) returns the log-probability of each target and whether it is the argmax,
    both [rows, width]. At most ROW_TOKENS input tokens go into one forward pass."""
    out: list[tuple[float, bool] | None] = [None] * len(requests)
    groups = sorted(plan(requests, max_length).items(), key=lambda g: len(g[0]))
    at = 0
    while at < len(groups):
        if not groups[at][0]:  # the empty prefix: no cache
            batch, at = groups[at:at + 1], at + 1
        else:
            take = 1
            while (at + take < len(groups) and take < batch_size
                   and (take + 1) * len(groups[at + take][0]) <= ROW_TOKENS):
                take += 1
            batch, at = groups[at:at + take], at + take
        prefixes = [list(p) for p, _ in batch]
        width = max(map(len, prefixes))
        p_mask = np.array([[0] * (width - len(p)) + [1] * len(p) for p in prefixes], dtype=np.int64).reshape(len(batch), width)
        cache = None
        if width:
            ids = np.array([[0] * (width - len(p)) + p for p in prefixes], dtype=np.int64)
            cache = prefix_fn(ids, p_mask, np.maximum(p_mask.cumsum(1) - 1, 0))
        rows = sorted(((g, *m) for g, (_, members) in enumerate(batch) for m in members), key=lambda r: -len(r[2]))
        start = 0
        while start < len(rows):
            chunk = rows[start:start + max(1, min(batch_size, ROW_TOKENS // len(rows[start][2])))]
            start += len(chunk)
            which = np.array([g for g, _, _, _ in chunk])
            w = len(chunk[0][2])
            ids = np.zeros((len(chunk), w), dtype=np.int64)
            targets = np.zeros((len(chunk), w), dtype=np.int64)
            r_mask = np.zeros((len(chunk), w), dtype=np.int64)
            for r, (_, _, inp, tgt) in enumerate(chunk):
                ids[r, :len(inp)], targets[r, :len(tgt)], r_mask[r, :len(inp)] = inp, tgt, 1
            positions = p_mask.sum(1)[which][:, None] + np.arange(w)[None]
            picked, greedy = rows_fn(cache, which, ids, np.concatenate([p_mask[which], r_mask], 1), positions, targets)
            for r, (_, i, inp, _) in enumerate(chunk):
                out[i] = (float(picked[r, :len(inp)].sum(dtype=np.float64)), bool(greedy[r, :len(inp)].all()))
    return out  # type: ignore[return-value]


def torch_fns(model):
    """prefix_fn and rows_fn for a transformers (or peft) causal LM."""
    import torch
    from transformers import DynamicCache

    def prefix_fn(ids: np.ndarray, mask: np.ndarray, positions: np.ndarray):
        with torch.no_grad():
            cache = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                          position_ids=torch.from_numpy(positions), use_cache=True, logits_to_keep=1).past_key_values
        return cache.to_legacy_cache()

    def rows_fn(cache, which, ids, mask, positions, targets) -> tuple[np.ndarray, np.ndarray]:
        if cache is not None:
            index = torch.from_numpy(which)
            cache = DynamicCache.from_legacy_cache(tuple((k[index], v[index]) for k, v in cache))
        with torch.no_grad():
            logits = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                           position_ids=torch.from_numpy(positions), past_key_values=cache,
                           use_cache=cache is not None).logits.float()
            tgt = torch.from_numpy(targets)
            picked = logits.gather(-1, tgt[..., None])[..., 0] - torch.logsumexp(logits, -1)
            return picked.numpy(), (logits.argmax(-1) == tgt).numpy()

    return prefix_fn, rows_fn


def register_hf() -> str:
    """Register `ratchet-hf` with lm-eval (once) and return its name."""
    global _registered
    if not _registered:
        from lm_eval.api.registry import register_model
        from lm_eval.models.huggingface import HFLM

        from ratchet.models import modeling

        def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs: int | None = None):
            results = score(requests, self.max_length, int(override_bs or self.batch_size), *torch_fns(self.model))
            for (key, _, _), result in zip(requests, results):
                if key is not None:
                    self.cache_hook.add_partial("loglikelihood", key, result)
            return results

        def __init__(self, *args, answer_batch: int | None = None, **kwargs):
            HFLM.__init__(self, *args, **kwargs)
            self.answer_batch = int(answer_batch or self.batch_size)
            if hasattr(self._model, "merge_and_unload"):  # a LoRA adapter: scored merged, as it ships
                self._model = self._model.merge_and_unload()

        def generate_until(self, requests, disable_tqdm: bool = False):
            """Answers `answer_batch` at a time, each row leaving the batch when it is done
            (generation.answer_requests): a decoding step reads every weight once whatever the batch."""
            from ratchet.models.generation import answer_requests, torch_decoder

            with modeling.grouped_decoding(self.model) as model:
                return answer_requests(self, requests, *torch_decoder(model), self.answer_batch)

        register_model(HF_NAME)(type("SharedContextHFLM", (HFLM,), {
            "__init__": __init__, "_loglikelihood_tokens": _loglikelihood_tokens, "generate_until": generate_until}))
        _registered = True
    return HF_NAME
