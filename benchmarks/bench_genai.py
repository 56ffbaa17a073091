"""The shipped int8 file decoded two ways: optimum's generate() and ONNX Runtime's own generation loop.

    pip install -e ".[bench]"        # onnxruntime-genai
    python benchmarks/bench_genai.py --onnx models/onnx --rounds 3 --new-tokens 64

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

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path


def genai_config(onnx_dir: Path, threads: int) -> dict:
    """onnxruntime-genai's description of an optimum decoder export (its input and output names, shapes)."""
    c = json.loads((onnx_dir / "config.json").read_text())
    heads = c["num_attention_heads"]
    return {
        "model": {
            "type": c["model_type"], "bos_token_id": c["bos_token_id"], "eos_token_id": c["eos_token_id"],
            "pad_token_id": c.get("pad_token_id") or c["eos_token_id"], "vocab_size": c["vocab_size"],
            "context_length": c["max_position_embeddings"],
            "decoder": {
                "filename": "model.onnx", "head_size": c.get("head_dim") or c["hidden_size"] // heads,
                "hidden_size": c["hidden_size"], "num_attention_heads": heads,
                "num_key_value_heads": c["num_key_value_heads"], "num_hidden_layers": c["num_hidden_layers"],
                "session_options": {"intra_op_num_threads": threads, "provider_options": []},
                "inputs": {"input_ids": "input_ids", "attention_mask": "attention_mask",
                           "position_ids": "position_ids", "past_key_names": "past_key_values.%d.key",
                           "past_value_names": "past_key_values.%d.value"},
                "outputs": {"logits": "logits", "present_key_names": "present.%d.key",
                            "present_value_names": "present.%d.value"},
            },
        },
        "search": {"do_sample": False, "num_beams": 1, "num_return_sequences": 1, "max_length": 1024,
                   "min_length": 0, "past_present_share_buffer": False, "repetition_penalty": 1.0,
                   "temperature": 1.0, "top_k": 1, "top_p": 1.0, "early_stopping": True, "length_penalty": 1.0,
                   "no_repeat_ngram_size": 0, "diversity_penalty": 0.0},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--onnx", default="models/onnx", help="the quantize stage's folder")
    ap.add_argument("--prompt", default="What does `os.path.join` do?")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import onnxruntime_genai as og
    import torch
    from optimum.onnxruntime import ORTModelForCausalLM
    from onnxruntime import SessionOptions
    from transformers import AutoTokenizer

    onnx_dir = Path(args.onnx).resolve()
    scratch = Path(tempfile.mkdtemp(prefix="bench-genai-"))
    for f in onnx_dir.iterdir():
        (scratch / f.name).symlink_to(f)
    (scratch / "genai_config.json").write_text(json.dumps(genai_config(onnx_dir, args.threads), indent=2))

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
    print("| decoding loop | tokens/s per round | median | vs optimum |\n|---|---|---:|---:|")
    base = statistics.median(runs["optimum generate()"])
    for name, rates in runs.items():
        med = statistics.median(rates)
        print(f"| {name} | {', '.join(f'{r:.1f}' for r in rates)} | {med:.1f} | {med / base:.2f}x |")
    same = outs["optimum generate()"] == outs["onnxruntime-genai"]
    print(f"\nsame {n} tokens from both: {same}")
    print("answer:", repr(tok.decode(outs["onnxruntime-genai"], skip_special_tokens=True)))


if __name__ == "__main__":
    main()
