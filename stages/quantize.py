"""quantize: export the student to ONNX with KV cache, then int8 weights, then check parity.

    python -m stages quantize --params params.yaml --student models/student --data data/prepared \
        --gate reports/gates/student.json --out models/onnx --report reports/quantize.json

Export goes through optimum (task text-generation-with-past), so the folder
loads with optimum's ORTModelForCausalLM and lm-eval's onnxruntime backend;
the attention it traces is `lean_attention`'s: grouped key/value heads read
in place and rotary embeddings as one matrix product, the same numbers in a
third fewer nodes per decoded token; and `static_shapes` settles the shape
arithmetic the tracer wrote as nodes, halving the graph again, bit for bit.
Weights become int8 with ONNX Runtime's weight-only MatMulNBits quantizer
(symmetric, per block; quantize.accuracy_level 4 lets the kernel multiply
in int8, about 3.5x faster on this CPU than dequantizing to fp32;
BENCHMARKS.md#int8): default dynamic QInt8, which also quantizes activations, costs
SmolLM2 far more perplexity. The tied embedding and output head, 28M of the
model's parameters, become one int8 matrix: the head is a MatMulNBits like the
others, and the embedding lookup reads the same bytes (GatherBlockQuantized).
Parity against the PyTorch student on at least quantize.parity_tokens held-out
tokens (top-1 agreement where the student's choice is clear, NLL increase)
must hold, or the stage fails and writes no model.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from ratchet.core import params
from ratchet.core.io import atomic_dir, dir_size, write_json
from ratchet.core.runtime import Refused, log, seed_everything
from ratchet.eval.parity import parity, parity_docs
from ratchet.eval.verdict import require_pass
from ratchet.models import modeling
from ratchet.models.export import export_fp32, quantize_weights
from ratchet.models.lineage import require, write_lineage


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
    require(student, "distill")
    docs = parity_docs(args.data, modeling.load_tokenizer(student), cfg)

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
        if not check["top1_agreement"] >= cfg.min_top1_agreement:  # NaN: no position had a clear choice
            problems.append(f"top-1 agreement {check['top1_agreement']:.3f} < {cfg.min_top1_agreement} (over "
                            f"{check['decided_positions']} positions with a margin of {cfg.flip_margin})")
        if check["nll_increase"] > cfg.max_nll_increase:
            problems.append(f"NLL increase {check['nll_increase']:.4f} > {cfg.max_nll_increase} nats/token")
        check["passed"], check["reason"] = not problems, "; ".join(problems) or "ok"
        write_json(args.report, check)
        log("quantize", f"parity: top-1 agreement {check['top1_agreement']:.3f}, NLL {check['nll_torch']:.3f} -> "
                        f"{check['nll_onnx']:.3f}; sample: {check['sample'][:80]!r}")
        if problems:
            raise Refused(f"quantize: int8 model fails parity with {student}: {check['reason']} "
                          f"(see {args.report}); try quantize.weight_bits: 8 or a smaller block_size")
        write_lineage(tmp, name=args.out, card=f"The student as ONNX with KV cache, int{cfg.weight_bits} weight-only quantized (MatMulNBits; the "
                           f"tied embedding and output head share one int{cfg.weight_bits} matrix). Load with "
                           "optimum's ORTModelForCausalLM.from_pretrained(folder).",
                      library="onnx", stage="quantize", params={"quantize": params.as_dict(cfg)},
                      parents={"student": student}, data={"parity_domain": f"{args.data}/domain/heldout.jsonl",
                            "parity_general": f"{args.data}/general/heldout.jsonl"},
                      seed=run.seed, threads=run.threads, started=started, real=modeling.is_real(student),
                      extra={"parity": {k: v for k, v in check.items() if k != "sample"}})
    log("quantize", f"wrote {args.out} in {time.time() - started:.0f}s")

