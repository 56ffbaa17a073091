"""lm-eval's ONNX Runtime model with greedy generation, so the shipped file answers questions in a gate too.

lm-eval's `onnxruntime` backend scores log-likelihoods of an ONNX decoder but
generates one prompt at a time. This subclass decodes `answer_batch` prompts
together on the same session: the left-padded prompts in one pass with an
empty KV cache, then one token per row per pass, feeding each pass's
`present.*` outputs back as `past_key_values.*`. Log-likelihoods go through
stages/models/shared_context.py: each shared context once, its cache repeated
for the continuations in batches. Registered as `ratchet-onnx`.
"""
from __future__ import annotations

import json

import numpy as np

NAME = "ratchet-onnx"
_registered = False


def register() -> str:
    """Register the model with lm-eval (once; lm-eval is imported here, not when this module is) and
    return its name."""
    global _registered
    if not _registered:
        from lm_eval.api.registry import register_model
        from lm_eval.models.onnxruntime_ort import ONNXRuntimeLM

        register_model(NAME)(type("GeneratingONNXLM", (ONNXRuntimeLM,), {
            "__init__": _init, "generate_until": _generate_until, "_loglikelihood_tokens": _loglikelihood_tokens}))
        _registered = True
    return NAME


def _init(self, *args, batch_size: int | str = 1, answer_batch: int | str | None = None, **kwargs):
    """lm-eval's ONNX model runs one sequence at a time; here the continuations of a shared context run
    `batch_size` at a time and answers are generated `answer_batch` at a time (default: `batch_size`)."""
    from lm_eval.models.onnxruntime_ort import ONNXRuntimeLM

    ONNXRuntimeLM.__init__(self, *args, batch_size=1, **kwargs)
    self.rows_per_batch = int(batch_size)
    self.answer_batch = int(answer_batch or batch_size)


def _runner(self):
    """(run(ids, mask, positions, past) -> {output: array}, the present-to-past name map): one session pass
    over a batch; without `past`, an empty KV cache of the batch's size."""
    outputs = [o.name for o in self.session.get_outputs()]
    past_of = {n: n.replace("present", "past_key_values", 1) for n in outputs if n.startswith("present")}

    def run(ids: np.ndarray, mask: np.ndarray, positions: np.ndarray, past: dict | None) -> dict:
        feeds: dict[str, np.ndarray] = {}
        for name, dtype, shape in self._input_specs:
            if name == "input_ids":
                feeds[name] = ids.astype(dtype)
            elif name == "attention_mask":
                feeds[name] = mask.astype(dtype)
            elif name == "position_ids":
                feeds[name] = positions.astype(dtype)
            elif past is not None and name in past:
                feeds[name] = past[name]
            else:
                dims = [self._resolve_dim(d, ids.shape[1]) for d in shape]
                feeds[name] = np.zeros([len(ids), *dims[1:]], dtype=dtype)
        return dict(zip(outputs, self.session.run(outputs, feeds)))

    return run, past_of


def greedy(self, prompts: list[list[int]], new: int) -> list[list[int]]:
    """Greedy continuations of `prompts` (token ids) decoded together: left-padded, each row's positions
    counted from its first real token, the KV cache fed back every step; each row stops at end-of-text or
    after `new` tokens. Returns the new tokens of each row, without the prompt."""
    run, past_of = _runner(self)
    width = max(map(len, prompts))
    ids = np.full((len(prompts), width), self.eot_token_id, dtype=np.int64)
    mask = np.zeros((len(prompts), width), dtype=np.int64)
    for row, tokens in enumerate(prompts):
        ids[row, width - len(tokens):], mask[row, width - len(tokens):] = tokens, 1
    positions = np.clip(mask.cumsum(1) - 1, 0, None)
    result = run(ids, mask, positions, None)
    out: list[list[int]] = [[] for _ in prompts]
    done = np.zeros(len(prompts), dtype=bool)
    for step in range(new):
        tokens = np.asarray(result[self._logits_name][:, -1]).argmax(-1)
        for row, token in enumerate(tokens.tolist()):
            if not done[row]:
                done[row] = token == self.eot_token_id
                out[row] += [] if done[row] else [token]
        if done.all() or step + 1 == new:
            break
        mask = np.concatenate([mask, np.ones((len(prompts), 1), dtype=mask.dtype)], axis=1)
        positions = positions[:, -1:] + 1
        result = run(tokens[:, None], mask, positions, {past_of[n]: result[n] for n in past_of})
    return out


def _generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
    """lm-eval's generate_until, `answer_batch` prompts at a time (longest first, so a batch pads little):
    greedy, cut at the request's `until` strings."""
    results: list[str | None] = [None] * len(requests)
    groups: dict[str, list[int]] = {}
    for i, request in enumerate(requests):
        groups.setdefault(json.dumps(request.args[1], sort_keys=True, default=str), []).append(i)
    for members in groups.values():
        kwargs = dict(requests[members[0]].args[1])
        if kwargs.get("do_sample"):
            raise ValueError("ratchet-onnx generates greedily only: set do_sample: false in the task")
        until = kwargs.pop("until", None) or []
        until = [until] if isinstance(until, str) else until
        new = int(kwargs.get("max_gen_toks", self.max_gen_toks))
        prompts = {i: self.tok_encode(requests[i].args[0])[-max(1, self.max_length - new):] for i in members}
        order = sorted(members, key=lambda i: -len(prompts[i]))
        for start in range(0, len(order), self.answer_batch):
            rows = order[start:start + self.answer_batch]
            for i, tokens in zip(rows, greedy(self, [prompts[i] for i in rows], new)):
                text = self.tok_decode(tokens)
                for stop in until:
                    text = text[:text.index(stop)] if stop and stop in text else text
                results[i] = text
                self.cache_hook.add_partial("generate_until", requests[i].args, text)
    return results


def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs: int | None = None):
    """lm-eval's log-likelihood requests, scored with each shared context run once (shared_context.score)."""
    from .shared_context import score

    run, past_of = _runner(self)

    def prefix_fn(ids: np.ndarray, mask: np.ndarray, positions: np.ndarray) -> dict:
        result = run(ids, mask, positions, None)
        return {past_of[n]: result[n] for n in past_of}

    def rows_fn(cache, which, ids, mask, positions, targets) -> tuple[np.ndarray, np.ndarray]:
        past = None if cache is None else {k: v[which] for k, v in cache.items()}
        logits = np.asarray(run(ids, mask, positions, past)[self._logits_name], dtype=np.float32)
        top = logits.max(-1)
        picked = np.take_along_axis(logits, targets[..., None], -1)[..., 0]
        lse = top + np.log(np.exp(logits - top[..., None]).sum(-1))
        return picked - lse, picked >= top

    results = score(requests, self.max_length, int(override_bs or self.rows_per_batch), prefix_fn, rows_fn)
    for (key, _, _), result in zip(requests, results):
        if key is not None:
            self.cache_hook.add_partial("loglikelihood", key, result)
    return results
