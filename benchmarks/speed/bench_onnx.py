"""Latency and size of the shipped int8 ONNX model against the PyTorch student it came from.

    .venv/bin/python -m benchmarks.speed.bench_onnx --student models/student --onnx models/onnx [--rounds 5] \
        [--accuracy-levels 0 4] [--block-sizes 32 64 128 --data data/prepared]

Runs after `dvc repro`. Compares, side by side in one process and interleaved
round by round (this machine is noisy: ratios mean more than absolute times):
PyTorch fp32, ONNX fp32 (exported here with optimum, as quantize does), and the
int8 ONNX model from models/onnx. Measures prefill of a 128-token prompt and
greedy decoding of 32 new tokens with the KV cache, batch 1, and prints
medians plus ratios to PyTorch fp32. With --block-sizes, the export is also
quantized at each block size (weights per scale; the accuracy level of
params.yaml), and each int8 file gets quantize's own parity check against the
student on the held-out text of --data (top-1 agreement where the student's
choice is clear, NLL increase).
"""
from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

import torch

from benchmarks import common
from benchmarks.common import PROMPT, timed
from ratchet.core import params, runtime
from ratchet.core.io import dir_size
from ratchet.eval.parity import parity, parity_docs
from ratchet.models import modeling
from ratchet.models.export import export_fp32, quantize_weights


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--student", default="models/student")
    ap.add_argument("--onnx", default="models/onnx")
    ap.add_argument("--params", default="params.yaml", help="quantize settings for --accuracy-levels")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--accuracy-levels", type=int, nargs="*", default=[],
                    help="also quantize the export here with these MatMulNBits accuracy levels (e.g. 0 4)")
    ap.add_argument("--block-sizes", type=int, nargs="*", default=[],
                    help="also quantize the export here with these block sizes (e.g. 32 64 128), with parity")
    ap.add_argument("--data", default="data/prepared", help="held-out text for the parity of --block-sizes")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from optimum.onnxruntime import ORTModelForCausalLM

    tok = modeling.load_tokenizer(args.student)
    ids = tok(" ".join([PROMPT] * 3), return_tensors="pt").input_ids[:, :128]
    mask = torch.ones_like(ids)
    with tempfile.TemporaryDirectory() as scratch:
        fp32_dir = Path(scratch) / "fp32"
        export_fp32(Path(args.student), fp32_dir)
        models = {
            "pytorch fp32": (modeling.load_model(args.student).eval(), dir_size(args.student)),
            "onnx fp32": (ORTModelForCausalLM.from_pretrained(fp32_dir), dir_size(fp32_dir)),
            "onnx int8 (models/onnx)": (ORTModelForCausalLM.from_pretrained(args.onnx), dir_size(args.onnx)),
        }
        for level in args.accuracy_levels:
            out = Path(scratch) / f"int8-acc{level}"
            out.mkdir()
            cfg = params.load(args.params, "quantize")[0].model_copy(update={"accuracy_level": level})
            quantize_weights(fp32_dir, out, cfg)
            models[f"onnx int8, accuracy_level {level}"] = (ORTModelForCausalLM.from_pretrained(out), dir_size(out))
        qcfg = params.load(args.params, "quantize")[0]
        checks = {}
        for block in args.block_sizes:
            out = Path(scratch) / f"int8-block{block}"
            out.mkdir()
            cfg = qcfg.model_copy(update={"block_size": block})
            quantize_weights(fp32_dir, out, cfg)
            name = f"onnx int8, block {block}"
            models[name] = (ORTModelForCausalLM.from_pretrained(out), dir_size(out))
            checks[name] = parity(Path(args.student), out, parity_docs(args.data, tok, cfg), cfg)
        times = {name: {"prefill": [], "decode": []} for name in models}
        for _ in range(args.rounds):
            for name, (model, _) in models.items():
                with torch.inference_mode():
                    times[name]["prefill"].append(timed(lambda: model(input_ids=ids, attention_mask=mask)))
                    times[name]["decode"].append(timed(lambda: model.generate(
                        ids, attention_mask=mask, max_new_tokens=32, min_new_tokens=32, do_sample=False)))

    base = {k: statistics.median(v) for k, v in times["pytorch fp32"].items()}
    print(f"batch 1, prompt {ids.shape[1]} tokens, 32 new tokens, {args.threads} threads, "
          f"median of {args.rounds} interleaved rounds")
    rows, medians = [], {}
    for name, (_, size) in models.items():
        p, d = statistics.median(times[name]["prefill"]), statistics.median(times[name]["decode"])
        c = checks.get(name) or {}
        medians[name] = {"size_bytes": size, "prefill_s": p, "decode_s": d, "parity": c or None}
        rows.append([name, size / 1e6, p * 1e3, p / base["prefill"], d * 1e3, d / base["decode"],
                     c.get("top1_agreement"), c.get("nll_increase")])
    main_table = common.table(
        ["model", "size (MB)", "prefill (ms)", "x fp32", "prefill+32 tokens (ms)", "x fp32", "top-1 agreement",
         "NLL increase"], rows, [None, ".1f", ".0f", ".2f", ".0f", ".2f", ".4f", "+.4f"])
    print(common.markdown(main_table))
    common.record(__file__, {"settings": {"threads": args.threads, "rounds": args.rounds,
                                          "prompt_tokens": ids.shape[1], "new_tokens": 32},
                             "models": medians, "tables": {"main": main_table}})


if __name__ == "__main__":
    runtime.start()
    main()
