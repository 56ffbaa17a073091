"""LoRA supervised fine-tuning (the sft stage): loss on responses only, replay of earlier conversations, EWC
to the champion, optional 8-bit base, self-distilled targets.
"""
from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import torch
from safetensors import safe_open

from ratchet.core import params
from ratchet.core.io import write_json
from ratchet.core.runtime import log
from ratchet.models import modeling, sdft
from ratchet.models.batches import Sampler, chat_example, collate, cycle_conversations, pack, replay_texts
from ratchet.models.fisher import load_fisher
from ratchet.models.lineage import require
from ratchet.models.losses import ewc_penalty, ewc_weight, masked_lm_loss, replay_rows
from ratchet.models.train import fingerprint, in_epochs, is_main_process, train_loop


def weights_of(folder, names) -> dict[str, torch.Tensor]:
    """Named weights straight from a model folder's safetensors, fp32."""
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(f, framework="pt") as st:
            for name in set(st.keys()) & set(names):
                out[name] = st.get_tensor(name).float()
    missing = set(names) - set(out)
    if missing:
        raise SystemExit(f"{folder}: weights {sorted(missing)[:3]}... not found; is it the same architecture?")
    return out


def lora_modules(model) -> dict[str, torch.nn.Module]:
    """peft LoRA layers by the plain model's weight name (model.layers.0.self_attn.q_proj.weight)."""
    from peft.tuners.lora import LoraLayer

    return {name.removeprefix("base_model.model.") + ".weight": mod
            for name, mod in model.named_modules() if isinstance(mod, LoraLayer)}


def base_quantization(bits: int, cuda: bool):
    """The bitsandbytes config for the frozen base, or None for fp32; 4-bit only on a GPU.

    bitsandbytes 0.50 on CPU: 8-bit loads and trains LoRA; 4-bit NF4 fails on layers whose
    output size is not a multiple of 32 and, once run for inference before training, stops
    learning without an error. So a CPU run is refused up front instead of failing or
    learning nothing later.
    """
    from transformers import BitsAndBytesConfig

    if bits == 32:
        return None
    if bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    if not cuda:
        raise SystemExit("sft.base_bits: 4 (NF4, QLoRA) needs a CUDA GPU; bitsandbytes' CPU 4-bit kernels fail on "
                         "layers whose width is not a multiple of 32 and can silently stop LoRA from learning. "
                         "Use base_bits: 8 (or 32) on this machine")
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)


def train(cfg: params.SftConfig, run: params.RunConfig, dapt: Path, champion: Path, fisher_dir: Path,
          replay: str, checkpoint: Path | None = None) -> tuple[object, object, list[dict], list[dict]]:
    """dapt + a LoRA adapter trained on the instruction data: (peft model, tokenizer, history, the
    self-distilled targets as sdft.self_distill records them; empty when sft.self_distill is off)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    quant = base_quantization(cfg.base_bits, torch.cuda.is_available())
    tok = modeling.load_tokenizer(dapt)
    require(dapt, "dapt")
    base = AutoModelForCausalLM.from_pretrained(dapt, dtype=torch.float32, quantization_config=quant,
                                                trust_remote_code=False, use_safetensors=True)
    base.config.use_cache = False
    conversations = cycle_conversations(replay)
    n_replay = replay_rows(cfg.batch_size, cfg.replay_fraction)
    cfg = in_epochs("sft", cfg, len(conversations), cfg.batch_size - n_replay)
    fp = fingerprint(cfg, dapt, champion, fisher_dir, replay)
    targets = []
    if cfg.self_distill:
        drawn = sorted(set(Sampler(len(conversations), run.seed).take((cfg.batch_size - n_replay) * cfg.steps)))
        targets = self_distilled_targets(cfg, base, tok, conversations, drawn, checkpoint, fp)
        for row in targets:
            conversations[row["index"]] = [*conversations[row["index"]][:-1],
                                           {"role": "assistant", "content": row["reply"]}]
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(cfg.target_modules), task_type="CAUSAL_LM")
    model = get_peft_model(base, lora)
    trainable = [p for p in model.parameters() if p.requires_grad]
    log("sft", f"LoRA r={cfg.lora_r} on {cfg.target_modules}: {sum(p.numel() for p in trainable) / 1e6:.2f}M "
               f"trainable parameters; base in {cfg.base_bits} bits from {dapt}")

    # EWC: the fixed distance of dapt's weights from the champion's, and F.
    fisher, fisher_tokens = load_fisher(fisher_dir)
    layers = {k: m for k, m in lora_modules(model).items() if k in fisher}
    if cfg.ewc_lambda > 0 and len(layers) != len(lora_modules(model)):
        raise SystemExit(f"{fisher_dir} lacks Fisher information for some LoRA targets; rerun the fisher "
                         "stage with the same sft.target_modules (dvc repro does)")
    ref, now = weights_of(champion, layers), weights_of(dapt, layers)
    offsets = {k: now[k] - ref[k] for k in layers}
    del ref, now

    examples = [chat_example(tok, conv, cfg.seq_len) for conv in conversations]
    general = pack(tok, replay_texts(replay), cfg.seq_len)
    draw_sft, draw_general = Sampler(len(examples), run.seed), Sampler(len(general), run.seed + 1)
    log("sft", f"{len(examples)} instruction examples, {len(general)} replay blocks; "
               f"{cfg.batch_size - n_replay}+{n_replay} rows per batch; EWC lambda={cfg.ewc_lambda}")

    def next_batch(step):
        rows = [examples[i] for i in draw_sft.take(cfg.batch_size - n_replay)]
        rows += [(general[i], general[i].clone()) for i in draw_general.take(n_replay)]
        return collate(rows, tok.pad_token_id)

    def compute_loss(model, batch):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        lm = masked_lm_loss(logits, batch["labels"])
        if cfg.ewc_lambda == 0:
            return lm, {"lm": lm.item()}
        deltas = {k: m.get_delta_weight("default").float() for k, m in layers.items()}
        ewc = ewc_penalty(deltas, offsets, fisher)
        return lm + ewc_weight(cfg.ewc_lambda, fisher_tokens) * ewc, {"lm": lm.item(), "ewc": ewc.item()}

    history = train_loop("sft", model, cfg, next_batch, compute_loss, checkpoint=checkpoint, fingerprint=fp)
    return model, tok, history, targets


def self_distilled_targets(cfg: params.SftConfig, model, tok, conversations: list[list[dict]], drawn: list[int],
                           checkpoint: Path | None, fp: str) -> list[dict]:
    """The model's own rewrites of the replies training will draw (sdft.self_distill), kept beside the
    checkpoint so a resumed run trains on the same targets without generating them again."""
    saved = checkpoint.with_name(checkpoint.name + ".targets.json") if checkpoint else None
    if saved and saved.is_file():
        state = json.loads(saved.read_text())
        if state.get("fingerprint") == fp:
            return state["rows"]
    started = time.time()
    rows = sdft.self_distill(model, tok, conversations, drawn, min_chrf=cfg.self_distill_min_chrf,
                             max_new_tokens=cfg.self_distill_tokens, max_reference_tokens=cfg.seq_len,
                             batch=cfg.self_distill_batch, bf16=cfg.bf16)
    why = Counter(r["used"] for r in rows)
    log("sft", f"self-distilled targets: {why['rewrite']} of {len(rows)} replies rewritten by the model "
               f"({', '.join(f'{n} {k}' for k, n in sorted(why.items()) if k != 'rewrite') or 'none kept'} "
               f"kept as written) in {time.time() - started:.0f}s")
    if saved and is_main_process():
        write_json(saved, {"fingerprint": fp, "rows": rows})
    return rows
