"""Text the model being trained writes itself: greedy replies to prompts (sft's self-distilled targets) and
seeded samples of free text (distill's rehearsal blocks). Both run on a bf16 copy of the model, batched."""
from __future__ import annotations

import contextlib
import copy

import torch


@contextlib.contextmanager
def inference_copy(model):
    """A bf16 copy of `model` for generation (a bitsandbytes-quantized one as it is), with the KV cache on."""
    quantized = getattr(model, "hf_quantizer", None) is not None
    gen = model if quantized else copy.deepcopy(model).to(torch.bfloat16)
    yield gen.eval()


@torch.no_grad()
def greedy(model, tok, prompts: list[str], max_new_tokens: int, batch: int) -> list[tuple[str, bool]]:
    """Greedy replies to `prompts`, `batch` at a time, left padded: [(text, finished)]."""
    side, tok.padding_side = tok.padding_side, "left"
    out = []
    try:
        with inference_copy(model) as gen:
            for i in range(0, len(prompts), batch):
                enc = tok(prompts[i:i + batch], return_tensors="pt", padding=True, add_special_tokens=False)
                ids = gen.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, use_cache=True,
                                   pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
                for row in ids[:, enc.input_ids.shape[1]:]:
                    finished = bool((row == tok.eos_token_id).any())
                    out.append((tok.decode(row, skip_special_tokens=True).strip(), finished))
    finally:
        tok.padding_side = side
    return out


@torch.no_grad()
def sample_blocks(model, tok, n: int, length: int, batch: int, seed: int, temperature: float = 1.0) -> torch.Tensor:
    """[n, length] token ids the model writes from an end-of-text token on, sampled at `temperature` (no top-k
    or top-p), never stopping early; the same for the same seed."""
    generator_state = torch.get_rng_state()
    torch.manual_seed(seed)
    rows = []
    try:
        with inference_copy(model) as gen:
            for i in range(0, n, batch):
                start = torch.full((min(batch, n - i), 1), tok.eos_token_id, dtype=torch.long)
                rows.append(gen.generate(input_ids=start, attention_mask=torch.ones_like(start), do_sample=True,
                                         temperature=temperature, top_k=0, top_p=1.0, max_new_tokens=length - 1,
                                         min_new_tokens=length - 1, pad_token_id=tok.pad_token_id, use_cache=True))
    finally:
        torch.set_rng_state(generator_state)
    return torch.cat(rows)
