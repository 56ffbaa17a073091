"""The int8 file three ways: transformers' attention as traced, quantize's lean attention, and its shapes settled.

    .venv/bin/python -m benchmarks.speed.bench_export --model models/student --rounds 5
    pip install -e ".[bench]" first to add onnxruntime-genai's loop and llama.cpp

Exports the model folder twice through optimum (ratchet.models.export.export_fp32 with
lean=False and lean=True) and makes three int8 files with params.yaml's quantize
section: traced, lean, and lean with its shape arithmetic settled
(quantize_weights' static=True, what the stage ships). All load in one process.
Per file: graph nodes, nodes ONNX Runtime runs for one decoded token (its
profiler), prefill of a 256-token prompt (batch 1), scoring of 4 rows of 256
tokens (the gates' path, one row left-padded), and decode tokens/s through
optimum's generate() (64 greedy tokens; the rate is 63 tokens over the time of
64 minus the time of 1), with onnxruntime-genai's loop too when it is
installed, and llama.cpp on a Q8_0 GGUF of the same weights (what a user could
run instead; benchmarks.common.write_q8_gguf) when llama-cpp-python is. And
the file's MatMulNBits nodes alone, in a graph of their own on one token: the
time its weights take, the floor under a decoded token whatever the rest of
the graph does. Rounds alternate A B C A B C; medians, and each file's times
as a share of the traced one's. Also compares the files' logits and greedy
tokens: int8 activations are quantized per row, so a different attention graph
rounds differently; settling the shapes changes no number.
"""
from __future__ import annotations

import json
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch

from benchmarks import common
from benchmarks.common import ROOT, Genai, LlamaCpp, Optimum, timed, write_q8_gguf
from ratchet.core import params
from ratchet.models import modeling
from ratchet.models.export import export_fp32, quantize_weights


def nodes_per_token(folder: Path, ids: torch.Tensor, threads: int) -> tuple[int, int]:
    """(nodes in the file, kernels ONNX Runtime runs for one token decoded after `ids`)."""
    import onnx
    import onnxruntime as ort

    graph_nodes = len(onnx.load(str(folder / "model.onnx"), load_external_data=False).graph.node)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.enable_profiling = threads, True
    opts.profile_file_prefix = str(folder / "profile")
    s = ort.InferenceSession(str(folder / "model.onnx"), opts, providers=["CPUExecutionProvider"])
    names = [i.name for i in s.get_inputs()]
    kv = next(i for i in s.get_inputs() if i.name.startswith("past_key_values"))
    heads, dim = kv.shape[1], kv.shape[3]
    past = len(ids)
    feeds = {"input_ids": np.array([[42]], np.int64), "attention_mask": np.ones((1, past + 1), np.int64)}
    if "position_ids" in names:
        feeds["position_ids"] = np.array([[past]], np.int64)
    for n in names:
        if n.startswith("past_key_values"):
            feeds[n] = np.zeros((1, heads, past, dim), np.float32)
    s.run(None, feeds)
    events = json.loads(Path(s.end_profiling()).read_text())
    return graph_nodes, sum(1 for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"))


def matmuls_alone(folder: Path, threads: int):
    """A run of every MatMulNBits node of the file on one token and nothing else: the weights' floor per token."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    m = onnx.load(str(folder / "model.onnx"))
    inits = {i.name: i for i in m.graph.initializer}
    inputs, nodes, outputs, used = {}, [], [], {}
    for n in (n for n in m.graph.node if n.op_type == "MatMulNBits"):
        k, width = ({a.name: a.i for a in n.attribute}[x] for x in ("K", "N"))
        inputs.setdefault(k, helper.make_tensor_value_info(f"x{k}", TensorProto.FLOAT, [1, 1, k]))
        node = helper.make_node(n.op_type, [f"x{k}", *n.input[1:]], [n.name + "_out"], name=n.name, domain=n.domain)
        node.attribute.extend(n.attribute)
        nodes.append(node)
        outputs.append(helper.make_tensor_value_info(n.name + "_out", TensorProto.FLOAT, [1, 1, width]))
        used.update((i, inits[i]) for i in n.input[1:] if i in inits)
    graph = helper.make_graph(nodes, "matmuls", list(inputs.values()), outputs, list(used.values()))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    s = ort.InferenceSession(helper.make_model(graph, opset_imports=m.opset_import).SerializeToString(), opts,
                             providers=["CPUExecutionProvider"])
    feeds = {f"x{k}": np.random.default_rng(0).standard_normal((1, 1, k), np.float32) for k in inputs}
    s.run(None, feeds)
    return lambda: s.run(None, feeds)


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--model", default="models/student", help="a model folder the pipeline wrote")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    qcfg = params.load(args.params, "quantize")[0]
    model = Path(args.model)
    tok = modeling.load_tokenizer(model)
    text = (ROOT / "README.md").read_text()
    prompt = tok(text, return_tensors="pt", add_special_tokens=False).input_ids[0, :256]
    batch = torch.stack([tok(text[i * 4000:], return_tensors="pt").input_ids[0, :256] for i in range(4)])
    mask = torch.ones_like(batch)
    mask[0, :100] = 0  # one left-padded row, as the gates' batches have

    with tempfile.TemporaryDirectory(prefix="bench-export-") as scratch:
        rows = {}
        variants = (("traced", False, False), ("lean", True, False), ("lean, shapes settled", True, True))
        for name, lean, static in variants:
            fp32, int8 = Path(scratch) / f"{'lean' if lean else 'traced'}-fp32", Path(scratch) / name
            if not fp32.exists():
                export_fp32(model, fp32, lean=lean)
            int8.mkdir()
            quantize_weights(fp32, int8, qcfg, static=static)
            runners = {"optimum": Optimum(int8, args.threads, 0)}
            try:
                (Path(scratch) / f"genai-{name}").mkdir()
                runners["genai"] = Genai(int8, args.threads, 0, Path(scratch) / f"genai-{name}")
            except ImportError:
                pass
            rows[name] = (int8, runners, nodes_per_token(int8, prompt, args.threads))
            runners["matmuls"] = matmuls_alone(int8, args.threads)

        cpp = None
        try:
            gguf_file = write_q8_gguf(modeling.load_model(model), modeling.smollm2_folder() / modeling.SMOLLM2_GGUF,
                                      Path(scratch) / "q8_0.gguf")
            cpp = LlamaCpp(gguf_file, args.threads, 0)
        except ImportError:
            pass
        names = list(rows)
        compared = []
        for x, y in zip(names, names[1:]):
            a, b = rows[x][1]["optimum"], rows[y][1]["optimum"]
            la, lb = a.logits(prompt), b.logits(prompt)
            same_tokens = a.generate(prompt, args.new_tokens) == b.generate(prompt, args.new_tokens)
            diff, agree = float(np.abs(la - lb).max()), float((la.argmax(-1) == lb.argmax(-1)).mean())
            compared.append({"files": [x, y], "max_abs_diff": diff, "top1_agreement": agree,
                             "same_greedy_tokens": same_tokens})
            print(f"logits, {x} against {y}, on the prompt: max |diff| {diff:.4f}, top-1 agreement "
                  f"{agree:.4f}; same {args.new_tokens} greedy tokens: {same_tokens}")

        times = {(n, m): [] for n in rows for m in ("prefill", "score", *rows[n][1])}
        for _ in range(args.rounds):
            for name, (_, runners, _) in rows.items():
                opt = runners["optimum"]
                times[name, "prefill"].append(timed(lambda: opt.logits(prompt)))
                times[name, "score"].append(timed(lambda: opt.model(input_ids=batch, attention_mask=mask)))
                run_matmuls = runners["matmuls"]
                times[name, "matmuls"].append(timed(lambda: [run_matmuls() for _ in range(20)]) / 20)
                for kind, r in runners.items():
                    if kind == "matmuls":
                        continue
                    one = timed(lambda: r.generate(prompt, 1))
                    full = timed(lambda: r.generate(prompt, args.new_tokens))
                    times[name, kind].append((args.new_tokens - 1) / (full - one))
            if cpp is not None:
                times.setdefault(("llama.cpp", "prefill"), []).append(timed(lambda: cpp.logits(prompt)))
                one, full = timed(lambda: cpp.generate(prompt, 1)), timed(lambda: cpp.generate(prompt, args.new_tokens))
                times.setdefault(("llama.cpp", "decode"), []).append((args.new_tokens - 1) / (full - one))

        med = {k: statistics.median(v) for k, v in times.items()}
        kinds = [k for k in rows["traced"][1] if k != "matmuls"]
        head = ["file", "graph nodes", "kernels per decoded token", "prefill 256 ms", "score 4x256 s",
                *[f"decode tok/s ({k}{'; llama.cpp for the GGUF' if k == 'genai' and cpp else ''})" for k in kinds],
                "MatMulNBits alone, ms per token", "tok/s if nothing else ran"]
        cells = [[name, graph_nodes, kernels, med[name, "prefill"] * 1000, med[name, "score"],
                  *[med[name, k] for k in kinds], med[name, "matmuls"] * 1000, 1 / med[name, "matmuls"]]
                 for name, (_, _, (graph_nodes, kernels)) in rows.items()]
        ratios = [f"{n}: prefill {med[n, 'prefill'] / med['traced', 'prefill']:.2f}x the time, "
                  f"scoring {med[n, 'score'] / med['traced', 'score']:.2f}x, " + ", ".join(
                      f"decode ({k}) {med[n, k] / med['traced', k]:.2f}x the rate" for k in kinds) for n in names[1:]]
        if cpp is not None:
            cells.append([f"llama.cpp Q8_0 ({gguf_file.stat().st_size / 1e6:.1f} MB)", "", "",
                          med["llama.cpp", "prefill"] * 1000, "",
                          *[med["llama.cpp", "decode"] if k == "genai" else "" for k in kinds], "", ""])
            ratios += [f"decode ({k}) against llama.cpp: " + ", ".join(
                f"{n} {med[n, k] / med['llama.cpp', 'decode']:.2f}x" for n in names) for k in kinds]
        main_table = common.table(head, cells, [None, ",d", ",d", ".0f", ".2f", *[".1f"] * len(kinds), ".2f", ".0f"],
                                  align="l" + "r" * (len(head) - 1))
        print(common.markdown(main_table))
        print("against traced: " + "; ".join(ratios))
        print("rounds: " + "; ".join(f"{n} {m}: " + ", ".join(f"{x:.3g}" for x in v) for (n, m), v in times.items()))
    common.record(__file__, {"settings": {"model": str(model), "threads": args.threads, "rounds": args.rounds,
                                          "new_tokens": args.new_tokens, "prompt_tokens": len(prompt)},
                             "logits": compared, "medians": {f"{n}, {m}": v for (n, m), v in med.items()},
                             "rounds": {f"{n}, {m}": v for (n, m), v in times.items()}, "ratios": ratios,
                             "tables": {"main": main_table}})


if __name__ == "__main__":
    main()
