"""lm-eval's ONNX Runtime model with greedy generation, so the shipped file answers questions in a gate too.

lm-eval's `onnxruntime` backend scores log-likelihoods of an ONNX decoder but
has no generation loop. This subclass adds one on the same session: the
prompt in one pass with an empty KV cache, then one token per pass, feeding
each pass's `present.*` outputs back as `past_key_values.*`. Log-likelihoods go through
stages/models/shared_context.py: each shared context once, its cache repeated
for the continuations in batches. Registered as `ratchet-onnx`.
"""
from __future__ import annotations

from typing import Any

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
            "__init__": _init, "_generate": _generate, "_loglikelihood_tokens": _loglikelihood_tokens}))
        _registered = True
    return NAME


def _init(self, *args, batch_size: int | str = 1, **kwargs):
    """lm-eval's ONNX model runs one sequence at a time; the continuations of a shared context still run
    `batch_size` at a time."""
    from lm_eval.models.onnxruntime_ort import ONNXRuntimeLM

    ONNXRuntimeLM.__init__(self, *args, batch_size=1, **kwargs)
    self.rows_per_batch = int(batch_size)


def _generate(self, tokens: list[int], gen_kwargs: dict[str, Any]) -> list[int]:
    """Greedy generation on the model's session with its KV cache: the new tokens, without the prompt."""
    if gen_kwargs.get("do_sample"):
        raise ValueError("ratchet-onnx generates greedily only: set do_sample: false in the task")
    new = int(gen_kwargs.get("max_gen_toks", self.max_gen_toks))
    ids = tokens[-max(1, self.max_length - new):]
    outputs = [o.name for o in self.session.get_outputs()]
    presents = [n for n in outputs if n.startswith("present")]
    past_of = {n: n.replace("present", "past_key_values", 1) for n in presents}
    feeds: dict[str, np.ndarray] = {}
    for name, dtype, shape in self._input_specs:
        if name == "input_ids":
            feeds[name] = np.asarray([ids], dtype=dtype)
        elif name == "attention_mask":
            feeds[name] = np.ones((1, len(ids)), dtype=dtype)
        elif name == "position_ids":
            feeds[name] = np.arange(len(ids), dtype=dtype)[None]
        else:
            feeds[name] = np.zeros([self._resolve_dim(d, len(ids)) for d in shape], dtype=dtype)
    dtypes = {name: dtype for name, dtype, _ in self._input_specs}
    out: list[int] = []
    seen = len(ids)
    for _ in range(new):
        result = dict(zip(outputs, self.session.run(outputs, feeds)))
        token = int(np.argmax(result[self._logits_name][0, -1]))
        if token == self.eot_token_id:
            break
        out.append(token)
        seen += 1
        feeds = {past_of[n]: result[n] for n in presents}
        feeds["input_ids"] = np.asarray([[token]], dtype=dtypes["input_ids"])
        if "attention_mask" in dtypes:
            feeds["attention_mask"] = np.ones((1, seen), dtype=dtypes["attention_mask"])
        if "position_ids" in dtypes:
            feeds["position_ids"] = np.asarray([[seen - 1]], dtype=dtypes["position_ids"])
    return out


def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs: int | None = None):
    """lm-eval's log-likelihood requests, scored with each shared context run once (shared_context.score)."""
    from .shared_context import score

    outputs = [o.name for o in self.session.get_outputs()]
    presents = [n for n in outputs if n.startswith("present")]
    past_of = {n: n.replace("present", "past_key_values", 1) for n in presents}

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
            else:  # an empty cache of the batch's size
                dims = [self._resolve_dim(d, ids.shape[1]) for d in shape]
                feeds[name] = np.zeros([len(ids), *dims[1:]], dtype=dtype)
        return dict(zip(outputs, self.session.run(outputs, feeds)))

    def prefix_fn(ids: np.ndarray, mask: np.ndarray, positions: np.ndarray) -> dict:
        result = run(ids, mask, positions, None)
        return {past_of[n]: result[n] for n in presents}

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
