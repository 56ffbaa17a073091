"""lm-eval's ONNX Runtime model with greedy generation, so the shipped file answers questions in a gate too.

lm-eval's `onnxruntime` backend scores log-likelihoods of an ONNX decoder but
generates one prompt at a time. This subclass decodes `answer_batch` prompts
together on the same session (ratchet/models/generation.py): the left-padded
prompts in one pass with an empty KV cache, then one token per row still
decoding per pass, feeding each pass's `present.*` outputs back as
`past_key_values.*`. Log-likelihoods go through
ratchet/eval/shared_context.py: each shared context once, its cache repeated
for the continuations in batches. Registered as `ratchet-onnx`.
"""
from __future__ import annotations

import numpy as np

NAME = "ratchet-onnx"
# prompts run through the session together before decoding: its logits at every position of 32 prompts of
# 100 tokens are 630 MB for SmolLM2's vocabulary
PREFILL_ROWS = 32
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


def _generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
    """lm-eval's generate_until, `answer_batch` prompts decoded together (generation.answer_requests)."""
    from ratchet.models.generation import answer_requests

    run, past_of = _runner(self)

    def last_logits(ids, mask, positions, past):
        # the export returns logits at every position: a wide prompt batch runs PREFILL_ROWS rows at a time
        step = len(ids) if past is not None else PREFILL_ROWS
        parts = [run(ids[i:i + step], mask[i:i + step], positions[i:i + step], past) for i in range(0, len(ids), step)]
        return (np.concatenate([np.asarray(r[self._logits_name][:, -1], dtype=np.float32) for r in parts]),
                {past_of[n]: np.concatenate([r[n] for r in parts]) for n in past_of})

    return answer_requests(self, requests, last_logits, lambda past, rows: {k: v[rows] for k, v in past.items()},
                           self.answer_batch)


def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs: int | None = None):
    """lm-eval's log-likelihood requests, scored with each shared context run once (shared_context.score)."""
    from ratchet.eval.shared_context import score

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
