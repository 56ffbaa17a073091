"""What int8 does to the bias sets: the student against its int8 files, pair by pair.

    .venv/bin/python -m benchmarks.experiments.bench_int8_bias --run <repo> [--student <repo>/models/student] \
        [--rounds 5] [--variant NAME ACCURACY_LEVEL [NODE_PATTERN ...]] ...

`--run` is a repository whose pipeline has run up to distill (models/student,
data/prepared, data/eval). The student is exported to ONNX fp32 as quantize
does, then quantized here once per variant: int8 weights (MatMulNBits, the
stage's own code and block size) at the variant's accuracy level, with the
MatMulNBits nodes whose names contain a NODE_PATTERN run at accuracy level 0
(int8 weights, fp32 arithmetic). Without --variant: the shipped setting
(level 4), level 0 everywhere, and level 4 with every attention output
projection at level 0.

Each model is scored on the stereotype pairs and BBQ gender sets with the
gate's own code (ratchet/eval/evaluate.py run_suite). Printed: stereotype
preference and BBQ bias scores, the median size of a pair's margin, pairs
whose preference differs from the PyTorch student's, the mean margin shift (nats, stereotyped minus anti
sentence, the group word taken out), and each ONNX file's prefill of a
128-token prompt and greedy decoding of 32 new tokens (optimum, batch 1),
medians of interleaved rounds as ratios to the first variant's.
"""
from __future__ import annotations

import shutil
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch

from benchmarks import common
from benchmarks.common import PROMPT, timed
from ratchet.core import params, runtime
from ratchet.eval import evaluate
from ratchet.models import modeling
from ratchet.models.export import export_fp32, quantize_weights

BIAS_TASKS = ("ratchet_stereotype_pairs", "ratchet_bbq_gender")
DEFAULT_VARIANTS = [("int8, level 4 (shipped)", "4"), ("int8, level 0", "0"),
                    ("int8, level 4, o_proj at 0", "4", "self_attn/o_proj")]


def fp32_compute(folder: Path, patterns: list[str]) -> int:
    """Set accuracy_level 0 on the MatMulNBits nodes whose names contain a pattern (in place); how many."""
    import onnx

    model = onnx.load(str(folder / "model.onnx"))
    changed = 0
    for node in model.graph.node:
        if node.op_type == "MatMulNBits" and any(p in node.name for p in patterns):
            for a in node.attribute:
                if a.name == "accuracy_level":
                    a.i, changed = 0, changed + 1
    onnx.save(model, str(folder / "model.onnx"))
    return changed


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--run", required=True)
    ap.add_argument("--student", help="the student folder (default: the run's models/student)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variant", nargs="+", action="append", metavar="NAME LEVEL [PATTERN]",
                    help="a name, an accuracy level, and node-name patterns run at level 0")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    run = Path(args.run).resolve()
    student = Path(args.student).resolve() if args.student else run / "models/student"
    ecfg, qcfg = params.load(run / "params.yaml", "eval", "quantize")
    tasks = evaluate.task_data(str(run / "data/prepared"), str(run / "data/eval"), ecfg)
    tasks = {t: tasks[t] for t in BIAS_TASKS}
    variants = args.variant or DEFAULT_VARIANTS

    from optimum.onnxruntime import ORTModelForCausalLM

    scored, folders = {}, {}
    with tempfile.TemporaryDirectory(prefix="bench-int8-bias-") as scratch:
        scratch = Path(scratch)
        export_fp32(student, scratch / "fp32")
        common.with_lineage(scratch / "fp32", "export", student=student)
        scored["student, PyTorch fp32"] = evaluate.run_suite("hf", str(student), str(run / "data/prepared"), ecfg,
                                                            tasks=tasks)
        folders["onnx fp32"] = scratch / "fp32"
        for name, level, *patterns in variants:
            out = scratch / f"v{len(folders)}"
            out.mkdir()
            quantize_weights(scratch / "fp32", out, qcfg.model_copy(update={"accuracy_level": int(level)}))
            common.with_lineage(out, "quantize", student=student)
            if patterns:
                print(f"{name}: {fp32_compute(out, patterns)} MatMulNBits nodes at accuracy level 0", flush=True)
            folders[name] = out
        for name, folder in folders.items():
            scored[name] = evaluate.run_suite("onnx", str(folder), str(run / "data/prepared"), ecfg, tasks=tasks)

        tok = modeling.load_tokenizer(str(student))
        ids = tok(" ".join([PROMPT] * 3), return_tensors="pt").input_ids[:, :128]
        mask = torch.ones_like(ids)
        timed_models = {n: ORTModelForCausalLM.from_pretrained(f) for n, f in folders.items()}
        times = {n: {"prefill": [], "decode": []} for n in timed_models}
        for _ in range(args.rounds):
            for name, model in timed_models.items():
                with torch.inference_mode():
                    times[name]["prefill"].append(timed(lambda: model(input_ids=ids, attention_mask=mask)))
                    times[name]["decode"].append(timed(lambda: model.generate(
                        ids, attention_mask=mask, max_new_tokens=32, min_new_tokens=32, do_sample=False)))
        shutil.rmtree(scratch / "fp32", ignore_errors=True)

    ref = {r["id"]: r for r in scored["student, PyTorch fp32"]["scores"]["ratchet_stereotype_pairs"]}
    shipped = variants[0][0]  # the first variant is the yardstick of the timings
    base = {k: statistics.median(v) for k, v in times[shipped].items()}
    n = len(ref)
    print(f"\n{n} stereotype pairs, {len(tasks['ratchet_bbq_gender'])} BBQ items; timing: batch 1, prompt "
          f"{ids.shape[1]} tokens, 32 new tokens, {args.threads} threads, median of {args.rounds} interleaved "
          f"rounds, ratios to '{shipped}'")
    rows, by_model = [], {}
    for name, s in scored.items():
        pairs = s["scores"]["ratchet_stereotype_pairs"]
        flips = sum(r["stereotyped"] != ref[r["id"]]["stereotyped"] for r in pairs)
        shift = float(np.mean([r["margin"] - ref[r["id"]]["margin"] for r in pairs]))
        m = s["metrics"]
        prefill = statistics.median(times[name]["prefill"]) / base["prefill"] if name in times else None
        decode = statistics.median(times[name]["decode"]) / base["decode"] if name in times else None
        spread = float(np.median([abs(r["margin"]) for r in pairs]))
        by_model[name] = {"metrics": m, "flips": flips, "mean_margin_shift": shift, "median_abs_margin": spread,
                          "prefill_x": prefill, "decode_x": decode}
        rows.append([name, m["stereotype_pref"], spread, flips, shift,
                     f"{m['bbq_bias_ambig']:.3f} / {m['bbq_bias_disambig']:.3f}", prefill, decode])
    main_table = common.table(
        ["model", "stereotype pref", "median abs margin (nats)", "pairs flipped vs student", "mean margin shift (nats)",
         "BBQ bias ambig / disambig", "prefill x", "prefill+32 tokens x"], rows,
        [None, ".3f", ".2f", "d", "+.3f", None, ".2f", ".2f"], align="lrrrrrrr")
    print(common.markdown(main_table))
    common.record(__file__, {"settings": {"student": str(student), "rounds": args.rounds, "threads": args.threads,
                                          "variants": [list(v) for v in variants]},
                             "models": by_model, "tables": {"main": main_table}})


if __name__ == "__main__":
    runtime.start()
    main()
