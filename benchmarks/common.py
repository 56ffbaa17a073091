"""What the benchmarks share: argument parsers, timers, Markdown tables, the runners that decode one model
several ways, the scratch clone of the cycle benchmarks, and the JSON line every run ends with.

Every benchmark runs as a module from the repository root, e.g.

    .venv/bin/python -m benchmarks.speed.bench_onnx --help

and ends by printing one JSON line (`record`): the benchmark, its command line, the UTC time, the commit,
the host's CPU model and core count, and what it measured. The same line is appended to
benchmarks/results/<benchmark>.jsonl, from which benchmarks/tables.py renders BENCHMARKS.md's tables.

Nothing heavy is imported here at module level (torch, onnxruntime, llama.cpp load where they are used): a
benchmark's --help stays quick, and bench_data's peak memory is its own.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"

PROMPT = ("The with statement is used to wrap the execution of a block with methods defined by a context "
          "manager. This allows common try, except, finally usage patterns to be encapsulated for convenient "
          "reuse. The execution of the with statement with one item proceeds as follows: the context "
          "expression is evaluated to obtain a context manager.")


# ---------------------------------------------------------------------------------------------------- arguments

def parser(doc: str) -> argparse.ArgumentParser:
    """A benchmark's argument parser, its module docstring as the help text."""
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def run_parser(doc: str) -> argparse.ArgumentParser:
    """The arguments of a benchmark on one model of a run: `--run` and `--model`."""
    ap = parser(doc)
    ap.add_argument("--run", required=True)
    ap.add_argument("--model", default="models/base", help="model folder, relative to --run")
    return ap


# ---------------------------------------------------------------------------------------------------- timing

def timed(fn) -> float:
    """Seconds `fn()` takes."""
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def timed_call(fn):
    """(what `fn()` returns, the seconds it took)."""
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def tool_env() -> dict:
    """The environment for a child command: this interpreter's bin folder first on PATH (dvc, ratchet)."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


# ---------------------------------------------------------------------------------------------------- tables

def table(columns: list[str], rows: list[list], formats: list[str | None] | None = None,
          align: str | None = None) -> dict:
    """A table as a result stores it: column names, rows of cells (numbers stay numbers), per column an optional
    format (a format spec such as ".2f", or a template such as "{:.2f}x"), and the columns' alignment ("l"/"r"
    each; by default "r" where every cell given is a number)."""
    t = {"columns": list(columns), "rows": [list(r) for r in rows]}
    if formats:
        t["formats"] = list(formats)
    t["align"] = align or alignment(t)
    return t


def alignment(t: dict) -> str:
    """"r" for each column whose cells are all numbers (blanks aside), "l" for the others."""
    def numeric(i: int) -> bool:
        cells = [r[i] for r in t["rows"] if i < len(r) and r[i] not in (None, "")]
        return bool(cells) and all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in cells)

    return "".join("r" if numeric(i) else "l" for i in range(len(t["columns"])))


def cell(value, fmt: str | None = None) -> str:
    """One cell as text: None (or NaN) as "-", numbers in the column's format, anything else as it is."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        if isinstance(value, float) and value.is_integer() and fmt and fmt.rstrip("}").endswith("d"):
            value = int(value)
        try:
            if fmt:
                return fmt.format(value) if "{" in fmt else format(value, fmt)
        except ValueError:
            pass
        return f"{value:,}" if isinstance(value, int) else f"{value:g}"
    return str(value)


def header(t: dict) -> str:
    """The Markdown header of a table(): its names and alignment row."""
    align = t.get("align") or alignment(t)
    return "| " + " | ".join(t["columns"]) + " |\n|" + "".join("---:|" if a == "r" else "---|" for a in align)


def row(t: dict, cells: list) -> str:
    """One row of a table() as a Markdown line, with the table's formats."""
    formats = t.get("formats") or []
    return "| " + " | ".join(cell(v, formats[i] if i < len(formats) else None) for i, v in enumerate(cells)) + " |"


def markdown(t: dict) -> str:
    """A table() in Markdown."""
    return "\n".join([header(t), *(row(t, r) for r in t["rows"])])


# ---------------------------------------------------------------------------------------------------- the result

def host() -> dict:
    """This machine: its CPU model and core count."""
    cpu = None
    try:
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), None)
    except OSError:
        pass
    return {"cpu": cpu or platform.processor() or platform.machine(), "cores": os.cpu_count()}


def commit() -> str | None:
    """The commit checked out in this repository (its working tree may differ)."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    except OSError:
        return None
    return out.stdout.strip() or None


def command() -> str:
    """The command line this process was started with, as `python -m benchmarks.<kind>.<name> ...`."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    head = ["python", "-m", spec.name] if spec is not None else ["python", sys.argv[0]]
    return shlex.join([*head, *sys.argv[1:]])


def jsonable(obj):
    """`obj` with what JSON cannot hold made plain: NaN and infinities as null, paths and others as text."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [jsonable(v) for v in obj]
    if hasattr(obj, "item"):  # numpy and torch scalars
        return jsonable(obj.item())
    return str(obj)


def record(name: str, result: dict) -> dict:
    """End a benchmark: print its result as one JSON line and append the line to benchmarks/results/<name>.jsonl.

    `name` is the benchmark's name or its __file__; `result` what it measured (settings, numbers, ratios, and
    under "tables" the tables it printed, as table() returns them). Call it last: the line is the last output."""
    name = Path(name).stem
    line = {"benchmark": name, "command": command(),
            "utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "commit": commit(), "host": host(),
            **result}
    text = json.dumps(jsonable(line), ensure_ascii=False)
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / f"{name}.jsonl", "a", encoding="utf-8") as f:
        f.write(text + "\n")
    print(text, flush=True)
    return line


# ---------------------------------------------------------------------------------------------------- scratch clone

def scratch_clone(repo: Path, tiny: bool) -> None:
    """Clone this repository's committed HEAD into `repo` (this checkout is never touched), with the tiny test
    profile merged into its params.yaml when `tiny`, and the drops of tools/make_drops.py declared in its
    data/sources.yaml."""
    from tools import make_drops

    subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True)
    if tiny:
        from tests import conftest  # the test profile, merged into params.yaml

        conftest.write_params(repo / "params.yaml", conftest.tiny_params())
    with open(repo / "data/sources.yaml", "a") as f:
        f.write("".join(make_drops.sources_yaml(n, s) for n, s in make_drops.DROPS.items()))
    subprocess.run("git add -A && git commit -qm 'Declare the benchmark drops'", shell=True, cwd=repo, check=True)


# ---------------------------------------------------------------------------------------------------- runners
# One model decoded several ways in one process: logits(ids) -> [positions, vocab] and generate(ids, n) -> n
# greedy token ids, each runner with its parameter count in `params`.

def genai_config(onnx_dir: Path, threads: int) -> dict:
    """onnxruntime-genai's description of an optimum decoder export (its input and output names, shapes)."""
    c = json.loads((Path(onnx_dir) / "config.json").read_text())
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


def genai_folder(onnx_dir: Path, scratch: Path, threads: int) -> Path:
    """`scratch`, made a folder of links to the model's files plus the genai_config.json onnxruntime-genai
    reads (the model folder is left as the pipeline wrote it)."""
    scratch.mkdir(parents=True, exist_ok=True)
    for f in Path(onnx_dir).resolve().iterdir():
        (scratch / f.name).symlink_to(f)
    (scratch / "genai_config.json").write_text(json.dumps(genai_config(Path(onnx_dir), threads), indent=2))
    return scratch


def permute(w, heads: int):
    """HF's rotate-half q/k rows to llama.cpp's interleaved pairs (llama.cpp's convert_hf_to_gguf permute)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_q8_gguf(model, source: Path, out: Path) -> Path:
    """`model`'s weights as a llama.cpp Q8_0 GGUF, with `source`'s metadata (tokenizer, chat template)."""
    import gguf
    import numpy as np

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
    """A PyTorch model."""

    def __init__(self, model, threads):
        self.model, self.threads = model.eval(), threads
        self.params = sum(p.numel() for p in model.parameters())

    def logits(self, ids):
        import torch

        with torch.inference_mode():
            return self.model(input_ids=ids[None]).logits[0].float().numpy()

    def generate(self, ids, n):
        import torch

        with torch.inference_mode():
            x = ids[None]
            out = self.model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n, min_new_tokens=n,
                                      do_sample=False)
        return out[0, len(ids):].tolist()


class Optimum:
    """An ONNX folder through optimum's ORTModelForCausalLM (its generate(): Python between tokens)."""

    def __init__(self, folder, threads, params):
        from onnxruntime import SessionOptions
        from optimum.onnxruntime import ORTModelForCausalLM

        opts = SessionOptions()
        opts.intra_op_num_threads = threads
        self.model, self.params = ORTModelForCausalLM.from_pretrained(folder, session_options=opts), params

    def logits(self, ids):
        import torch

        x = ids[None]
        return self.model(input_ids=x, attention_mask=torch.ones_like(x)).logits[0].float().numpy()

    def generate(self, ids, n):
        import torch

        x = ids[None]
        out = self.model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n, min_new_tokens=n,
                                  do_sample=False)
        return out[0, len(ids):].tolist()


class Genai:
    """An ONNX folder through onnxruntime-genai's C++ decoding loop (ImportError when it is not installed)."""

    def __init__(self, folder, threads, params, scratch):
        import onnxruntime_genai as og

        here = genai_folder(Path(folder), Path(scratch) / "genai", threads)
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
    """A GGUF file through llama-cpp-python (ImportError when it is not installed)."""

    def __init__(self, gguf_file, threads, params):
        from llama_cpp import Llama

        kw = dict(n_ctx=1024, n_batch=512, n_threads=threads, n_threads_batch=threads, verbose=False)
        self.scorer = Llama(str(gguf_file), logits_all=True, **kw)
        self.runner = Llama(str(gguf_file), **kw)
        self.params = params

    def logits(self, ids):
        import numpy as np

        self.scorer.reset()
        self.scorer.eval(ids.tolist())
        return np.array(self.scorer.scores[:len(ids)], dtype=np.float32)

    def generate(self, ids, n):
        import numpy as np

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

    def close(self):
        """Before interpreter exit, where llama-cpp-python's own cleanup fails."""
        for llm in (self.scorer, self.runner):
            llm.close()


def with_lineage(folder: Path, stage: str, **parents: Path) -> Path:
    """`folder`, a model variant an experiment built in process, with a lineage.json naming what it came from: the
    gate's evaluation and the training code refuse a model folder without one (ratchet.models.lineage.require)."""
    from ratchet.models import modeling
    from ratchet.models.lineage import write_lineage

    write_lineage(folder, name=folder, stage=f"benchmark {stage}", params={}, parents=parents, data={}, seed=0,
                  threads=os.cpu_count() or 1, started=time.time(),
                  real=all(modeling.is_real(p) for p in parents.values()))
    return folder
