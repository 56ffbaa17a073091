"""The shipped int8 file decoded two ways: optimum's generate() and ONNX Runtime's own generation loop.

    pip install -e ".[bench]"        # onnxruntime-genai
    .venv/bin/python -m benchmarks.speed.bench_genai --onnx models/onnx --rounds 3 --new-tokens 64

onnxruntime-genai runs the decoding loop (KV cache, greedy search) in C++
around the same ONNX file. It needs a `genai_config.json` beside the model,
which this script writes from the folder's config.json into a scratch folder
of links to the model's files (the model folder itself is left as the
pipeline wrote it). Both paths decode the same chat prompt greedily for
exactly --new-tokens tokens, alternating A B A B in one process with the same
thread count; tokens per second include the prompt's prefill. Prints each
round, the medians, their ratio, and whether both wrote the same tokens.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from benchmarks import common


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--onnx", default="models/onnx", help="the quantize stage's folder")
    ap.add_argument("--prompt", default="What does `os.path.join` do?")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import onnxruntime_genai as og
    import torch
    from onnxruntime import SessionOptions
    from optimum.onnxruntime import ORTModelForCausalLM
    from transformers import AutoTokenizer

    onnx_dir = Path(args.onnx).resolve()
    scratch = common.genai_folder(onnx_dir, Path(tempfile.mkdtemp(prefix="bench-genai-")), args.threads)

    tok = AutoTokenizer.from_pretrained(onnx_dir)
    ids = tok.apply_chat_template([{"role": "user", "content": args.prompt}], add_generation_prompt=True)
    n = args.new_tokens
    torch.set_num_threads(args.threads)
    opts = SessionOptions()
    opts.intra_op_num_threads = args.threads
    gm = og.Model(str(scratch))
    om = ORTModelForCausalLM.from_pretrained(onnx_dir, session_options=opts)

    def with_genai():
        p = og.GeneratorParams(gm)
        p.set_search_options(max_length=len(ids) + n, min_length=len(ids) + n, do_sample=False)
        t = time.perf_counter()
        g = og.Generator(gm, p)
        g.append_tokens(ids)
        out = []
        while not g.is_done():
            g.generate_next_token()
            out.append(int(g.get_next_tokens()[0]))
        return out, time.perf_counter() - t

    def with_optimum():
        x = torch.tensor([ids])
        t = time.perf_counter()
        y = om.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n, min_new_tokens=n, do_sample=False)
        return y[0, len(ids):].tolist(), time.perf_counter() - t

    runs, outs = {"optimum generate()": [], "onnxruntime-genai": []}, {}
    for _ in range(args.rounds):
        for name, f in (("optimum generate()", with_optimum), ("onnxruntime-genai", with_genai)):
            out, seconds = f()
            runs[name].append(len(out) / seconds)
            outs[name] = out
    print(f"{onnx_dir}: prompt {len(ids)} tokens, {n} greedy new tokens, batch 1, {args.threads} threads, "
          f"{args.rounds} rounds alternating; tokens/s include the prefill\n")
    base = statistics.median(runs["optimum generate()"])
    rows = [[name, ", ".join(f"{r:.1f}" for r in rates), statistics.median(rates), statistics.median(rates) / base]
            for name, rates in runs.items()]
    main_table = common.table(["decoding loop", "tokens/s per round", "median", "vs optimum"], rows,
                              [None, None, ".1f", "{:.2f}x"], align="llrr")
    print(common.markdown(main_table))
    same = outs["optimum generate()"] == outs["onnxruntime-genai"]
    answer = tok.decode(outs["onnxruntime-genai"], skip_special_tokens=True)
    print(f"\nsame {n} tokens from both: {same}")
    print("answer:", repr(answer))
    common.record(__file__, {"settings": {"onnx": str(onnx_dir), "prompt_tokens": len(ids), "new_tokens": n,
                                          "threads": args.threads, "rounds": args.rounds},
                             "tokens_per_s": runs, "ratio": statistics.median(runs["onnxruntime-genai"]) / base,
                             "same_tokens": same, "answer": answer, "tables": {"main": main_table}})


if __name__ == "__main__":
    main()
