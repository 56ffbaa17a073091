"""quantize: export the student to ONNX with KV cache, then int8 weights, then check parity.

    python -m stages quantize --params params.yaml --student models/student --data data/prepared \
        --gate reports/gates/student.json --out models/onnx --report reports/quantize.json

Export goes through optimum (task text-generation-with-past), so the folder
loads with optimum's ORTModelForCausalLM and lm-eval's onnxruntime backend.
Weights become int8 with ONNX Runtime's weight-only MatMulNBits quantizer
(symmetric, per block; quantize.accuracy_level 4 lets the kernel multiply
in int8, about 3.5x faster on this CPU than dequantizing to fp32; BENCHMARKS.md): default dynamic QInt8, which also quantizes
activations, costs SmolLM2 far more perplexity. Parity against the PyTorch
student on held-out text (top-1 agreement, NLL increase) must hold, or the
stage fails and writes no model.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from .core import params
from .core.io import atomic_dir, dir_size, write_json
from .core.runtime import log, seed_everything
from .models import modeling
from .models.batches import texts
from .models.gates import require_pass
from .models.lineage import write_lineage


def export_fp32(student: Path, out: Path) -> None:
    from optimum.exporters.onnx import main_export

    main_export(str(student), output=str(out), task="text-generation-with-past", device="cpu",
                trust_remote_code=False, do_validation=False)


def quantize_weights(fp32: Path, out: Path, cfg: params.QuantizeConfig) -> None:
    from onnxruntime.quantization.matmul_nbits_quantizer import (DefaultWeightOnlyQuantConfig,
                                                                 MatMulNBitsQuantizer)

    algo = DefaultWeightOnlyQuantConfig(block_size=cfg.block_size, is_symmetric=True, bits=cfg.weight_bits,
                                        accuracy_level=cfg.accuracy_level)
    q = MatMulNBitsQuantizer(str(fp32 / "model.onnx"), bits=cfg.weight_bits, block_size=cfg.block_size,
                             is_symmetric=True, accuracy_level=cfg.accuracy_level, algo_config=algo)
    q.process()
    q.model.save_model_to_file(str(out / "model.onnx"), False)
    for f in fp32.iterdir():  # config, tokenizer, generation config
        if f.suffix != ".onnx" and not f.name.endswith(".onnx_data") and f.is_file():
            shutil.copy2(f, out / f.name)


def token_nll(logits: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Per-position next-token negative log-likelihood from [T, V] logits."""
    logits = logits[:-1].astype(np.float64)
    logz = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    return logz - logits[np.arange(len(ids) - 1), ids[1:]]


def parity(student: Path, onnx_dir: Path, docs: list[str], cfg: params.QuantizeConfig) -> dict:
    """Top-1 agreement and mean NLL of the int8 ONNX model vs the PyTorch student."""
    from optimum.onnxruntime import ORTModelForCausalLM

    tok = modeling.load_tokenizer(student)
    torch_model = modeling.load_model(student).eval()
    ort_model = ORTModelForCausalLM.from_pretrained(onnx_dir, use_cache=True, use_io_binding=False)
    agree, n, nll_t, nll_o = 0, 0, 0.0, 0.0
    for doc in docs:
        ids = tok(doc, return_tensors="pt", add_special_tokens=False).input_ids[:, :cfg.parity_seq_len]
        if ids.shape[1] < 2:
            continue
        with torch.no_grad():
            lt = torch_model(input_ids=ids).logits[0].numpy()
        lo = ort_model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0].numpy()
        agree += int((lt.argmax(-1) == lo.argmax(-1)).sum())
        n += ids.shape[1]
        nll_t += token_nll(lt, ids[0].numpy()).sum()
        nll_o += token_nll(lo, ids[0].numpy()).sum()
    scored = n - len(docs)
    prompt = tok.apply_chat_template([{"role": "user", "content": cfg.sample_prompt}],
                                     add_generation_prompt=True, return_tensors="pt")
    sample = ort_model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=cfg.sample_tokens,
                                do_sample=False)
    return {"top1_agreement": agree / n, "nll_torch": nll_t / scored, "nll_onnx": nll_o / scored,
            "nll_increase": (nll_o - nll_t) / scored, "tokens": n,
            "sample": tok.decode(sample[0, prompt.shape[1]:], skip_special_tokens=True)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    for name in ("student", "data", "gate", "out", "report"):
        ap.add_argument(f"--{name}", required=True)
    args = ap.parse_args(argv)

    run, cfg = params.load(args.params, "run", "quantize")
    require_pass(args.gate)
    started = time.time()
    seed_everything(run.seed, run.threads)
    student = Path(args.student)
    docs = texts(f"{args.data}/domain/heldout.jsonl")[: cfg.parity_docs]

    with tempfile.TemporaryDirectory(prefix="ratchet-onnx-") as scratch, atomic_dir(args.out) as tmp:
        fp32 = Path(scratch)
        t = time.time()
        export_fp32(student, fp32)
        log("quantize", f"exported fp32 ONNX with KV cache ({dir_size(fp32) / 1e6:.0f} MB) in {time.time() - t:.0f}s")
        t = time.time()
        quantize_weights(fp32, tmp, cfg)
        log("quantize", f"int{cfg.weight_bits} weights ({dir_size(tmp) / 1e6:.0f} MB) in {time.time() - t:.0f}s")
        check = parity(student, tmp, docs, cfg)
        check.update(fp32_mb=round(dir_size(fp32) / 1e6, 1), int8_mb=round(dir_size(tmp) / 1e6, 1))
        problems = []
        if check["top1_agreement"] < cfg.min_top1_agreement:
            problems.append(f"top-1 agreement {check['top1_agreement']:.3f} < {cfg.min_top1_agreement}")
        if check["nll_increase"] > cfg.max_nll_increase:
            problems.append(f"NLL increase {check['nll_increase']:.4f} > {cfg.max_nll_increase} nats/token")
        check["passed"], check["reason"] = not problems, "; ".join(problems) or "ok"
        write_json(args.report, check)
        log("quantize", f"parity: top-1 agreement {check['top1_agreement']:.3f}, NLL {check['nll_torch']:.3f} -> "
                        f"{check['nll_onnx']:.3f}; sample: {check['sample'][:80]!r}")
        if problems:
            raise SystemExit(f"quantize: int8 model fails parity with {student}: {check['reason']} "
                             f"(see {args.report}); try quantize.weight_bits: 8 or a smaller block_size")
        write_lineage(tmp, name=args.out, card="The student as ONNX with KV cache, int8 weight-only quantized (MatMulNBits). Load with "
                           "optimum's ORTModelForCausalLM.from_pretrained(folder).",
                      library="onnx", stage="quantize", params={"quantize": params.as_dict(cfg)},
                      parents={"student": student}, data={"parity": f"{args.data}/domain/heldout.jsonl"},
                      seed=run.seed, threads=run.threads, started=started, real=modeling.is_real(student),
                      extra={"parity": {k: v for k, v in check.items() if k != "sample"}})
    log("quantize", f"wrote {args.out} in {time.time() - started:.0f}s")

