"""ONNX export with KV cache and int8 weight-only quantization of a causal LM (the quantize stage).

Export goes through optimum (text-generation-with-past), tracing `lean_attention`'s attention; `static_shapes`
settles the tracer's shape arithmetic; weights become int8 with ONNX Runtime's MatMulNBits quantizer, the tied
embedding read from the output head's int8 matrix (GatherBlockQuantized).
"""
from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import numpy as np
import torch

from ratchet.core import params
from ratchet.core.runtime import log


def export_fp32(student: Path, out: Path, lean: bool = True) -> None:
    """optimum's export (text-generation-with-past); `lean` traces the attention of `lean_attention` (the same
    numbers in fewer graph nodes and no copied key/value heads); False: transformers' own, as traced."""
    from optimum.exporters.onnx import main_export

    with lean_attention(student) if lean else contextlib.nullcontext():
        main_export(str(student), output=str(out), task="text-generation-with-past", device="cpu",
                    trust_remote_code=False, do_validation=False)


@contextlib.contextmanager
def lean_attention(model_dir: Path):
    """While a model is traced: attention whose graph reads grouped key/value heads in place, and rotary
    embeddings as one matrix product.

    Traced as transformers runs it, every layer's attention copies each key/value head once per query head of
    its group (SmolLM2: the whole cache three times, at every decoded token), guards SDPA's fully masked rows
    with IsNaN and Where, and rotates half of each head with two Slices, a Neg and a Concat, each with the
    shape arithmetic that feeds it: about 150 graph nodes a layer. Here the query heads of a group become
    rows of one matrix product with their key/value head, the padding mask is added once per group, and
    rotate_half(x) is x @ R for a constant signed permutation R (exact: one nonzero term per sum). Same
    numbers, a third fewer nodes executed per decoded token, and faster decoding (benchmarks/speed/bench_export.py).
    Attention the fold does not cover (no mask, a sliding window, soft-capping) is traced as transformers
    wrote it."""
    import importlib

    from transformers import AttentionInterface, AutoConfig

    config = AutoConfig.from_pretrained(model_dir)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    half = head_dim // 2
    rotate = torch.zeros(head_dim, head_dim)
    rotate[torch.arange(half) + half, torch.arange(half)] = -1.0  # rotate_half(x) = cat(-x2, x1) = x @ rotate
    rotate[torch.arange(half), torch.arange(half) + half] = 1.0
    sdpa = AttentionInterface._global_mapping["sdpa"]

    def grouped(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs):
        b, heads, s, d = query.shape
        kv = key.shape[1]
        if (attention_mask is None or attention_mask.shape[1] != 1 or heads % kv or dropout
                or kwargs.get("output_attentions")
                or any(kwargs.get(k) is not None for k in ("sliding_window", "softcap", "s_aux"))):
            return sdpa(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                        is_causal=is_causal, **kwargs)
        group = heads // kv
        q = (query * (scaling if scaling is not None else d ** -0.5)).reshape(b, kv, group * s, d)
        scores = torch.matmul(q, key.transpose(2, 3))  # [b, kv, group * s, t]: query head h reads kv head h // group
        mask = attention_mask[:, :, :, :key.shape[-2]].repeat(1, 1, group, 1)
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + mask
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
        out = torch.matmul(probs, value).reshape(b, heads, s, d)
        return out.transpose(1, 2).contiguous(), None

    module = importlib.import_module(f"transformers.models.{config.model_type}.modeling_{config.model_type}")
    rotate_half = getattr(module, "rotate_half", None)
    AttentionInterface.register("sdpa", grouped)
    if rotate_half is not None and head_dim % 2 == 0:
        module.rotate_half = lambda x: torch.matmul(x, rotate.to(x.dtype))
    try:
        yield
    finally:
        AttentionInterface.register("sdpa", sdpa)
        if rotate_half is not None:
            module.rotate_half = rotate_half


def static_shapes(model) -> tuple[int, int]:
    """Shape arithmetic the tracer wrote as graph nodes, settled once: (nodes folded, Reshapes made static).

    The exported graph computes every Reshape's target from Shape, Gather, Unsqueeze and Concat nodes on
    the running tensors, although most of those numbers never change (heads, head size, the group) and
    the rest are a dimension of the Reshape's own input. ONNX Runtime's symbolic shape inference works the
    dimensions out once: an integer tensor whose value it knows becomes an initializer, and a Reshape
    whose output dimensions are constants or its input's gets a constant target (0 copies an input
    dimension, -1 takes the rest), so the nodes that fed it go. The same numbers, bit for bit, for any
    batch, prompt and cache length (tests/eval/test_shared_context.py); about half the graph's nodes."""
    from onnx import TensorProto, numpy_helper
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    infer = SymbolicShapeInference(int_max=2**31 - 1, auto_merge=False, guess_output_rank=False, verbose=0)
    infer._preprocess(model)
    while infer.run_:
        infer._infer_impl()
    inferred = infer.out_mp_.graph
    shapes = {v.name: [d.dim_value if d.HasField("dim_value") else d.dim_param or None
                       for d in v.type.tensor_type.shape.dim]
              for v in [*inferred.value_info, *inferred.input, *inferred.output]
              if v.type.tensor_type.HasField("shape")}
    types = {v.name: v.type.tensor_type.elem_type for v in inferred.value_info}
    ints = {TensorProto.INT64: np.int64, TensorProto.INT32: np.int32}
    g, outputs = model.graph, {o.name for o in model.graph.output}
    kept, folded, reshaped = [], 0, 0
    for node in g.node:
        out = node.output[0] if len(node.output) == 1 else None
        value, dims = infer.sympy_data_.get(out), shapes.get(out)
        values = value if isinstance(value, list) else [value]
        if (node.op_type != "Constant" and value is not None and out not in outputs and types.get(out) in ints
                and dims is not None and len(dims) <= 1 and all(getattr(v, "is_Integer", False) or
                                                               isinstance(v, (int, np.integer)) for v in values)
                and (not dims or dims[0] == len(values))):
            array = np.array([int(v) for v in values], ints[types[out]]).reshape([len(values)] if dims else [])
            g.initializer.append(numpy_helper.from_array(array, out))
            folded += 1
            continue
        if node.op_type == "Reshape" and shapes.get(node.input[0]) is not None and shapes.get(out) is not None:
            source = shapes[node.input[0]]
            target = [d if isinstance(d, int) and d > 0 else 0 if j < len(source) and d and source[j] == d else -1
                      for j, d in enumerate(shapes[out])]
            if target.count(-1) <= 1 and all(d is not None for d in shapes[out]):
                g.initializer.append(numpy_helper.from_array(np.array(target, np.int64), out + "_static_shape"))
                node.input[1] = out + "_static_shape"
                reshaped += 1
        kept.append(node)
    while True:  # drop the nodes nothing reads any more
        read = {i for n in kept for i in n.input} | outputs
        live = [n for n in kept if any(o in read for o in n.output)]
        if len(live) == len(kept):
            break
        kept = live
    del g.node[:]
    g.node.extend(kept)
    read = {i for n in kept for i in n.input}
    unread = [i for i in g.initializer if i.name not in read]
    for i in unread:
        g.initializer.remove(i)
    return folded, reshaped


def quantize_weights(fp32: Path, out: Path, cfg: params.QuantizeConfig, static: bool = True) -> None:
    """Weight-only int8 (MatMulNBits) of every MatMul, the tied output head included, and the embedding
    reading the head's int8 bytes (GatherBlockQuantized): no fp32 copy of the vocabulary matrix is left.
    `static`: the graph's shape arithmetic settled first (static_shapes)."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    model = onnx.load(str(fp32 / "model.onnx"))
    if static:
        folded, reshaped = static_shapes(model)
        log("quantize", f"shape arithmetic settled: {folded} nodes folded, {reshaped} Reshapes static, "
                        f"{len(model.graph.node)} nodes left")
    tied = untie_lm_head(model)
    algo = DefaultWeightOnlyQuantConfig(block_size=cfg.block_size, is_symmetric=True, bits=cfg.weight_bits,
                                        accuracy_level=cfg.accuracy_level)
    q = MatMulNBitsQuantizer(model, bits=cfg.weight_bits, block_size=cfg.block_size, is_symmetric=True,
                             accuracy_level=cfg.accuracy_level, algo_config=algo)
    q.process()
    if tied:
        gather_from_head(q.model.model, *tied)
        q.model.clean_initializers()  # drops the fp32 embedding
    q.model.save_model_to_file(str(out / "model.onnx"), False)
    for f in fp32.iterdir():  # config, tokenizer, generation config
        if f.suffix != ".onnx" and not f.name.endswith(".onnx_data") and f.is_file():
            shutil.copy2(f, out / f.name)


def untie_lm_head(model) -> tuple[str, str] | None:
    """Replace the head's MatMul(h, Transpose(E)) with MatMul(h, E^T as an initializer), in place.

    Returns (embedding initializer name, head MatMul output name), or None if the graph has no tied head.
    """
    from onnx import helper, numpy_helper

    g = model.graph
    inits = {i.name: i for i in g.initializer}
    for t in list(g.node):
        if t.op_type != "Transpose" or t.input[0] not in inits or len(inits[t.input[0]].dims) != 2:
            continue
        perm = next((list(helper.get_attribute_value(a)) for a in t.attribute if a.name == "perm"), [1, 0])
        users = [n for n in g.node if t.output[0] in n.input]
        gathers = [n for n in g.node if n.op_type == "Gather" and n.input[0] == t.input[0]]
        if (perm != [1, 0] or len(users) != 1 or users[0].op_type != "MatMul"
                or users[0].input[1] != t.output[0] or not gathers):
            continue
        embedding, head_output = t.input[0], users[0].output[0]
        e_t = np.ascontiguousarray(numpy_helper.to_array(inits[embedding]).T)
        g.initializer.append(numpy_helper.from_array(e_t, t.output[0]))  # same name: the MatMul is untouched
        g.node.remove(t)
        return embedding, head_output
    return None


def gather_from_head(model, embedding: str, head_output: str) -> None:
    """Make every Gather on `embedding` read the head's quantized MatMulNBits weight instead (in place)."""
    from onnx import helper, numpy_helper

    g = model.graph
    head = next((n for n in g.node if n.op_type == "MatMulNBits" and n.output[0] == head_output), None)
    if head is None:
        raise RuntimeError(f"quantize: the lm_head MatMul ({head_output}) was not quantized")
    attr = {a.name: helper.get_attribute_value(a) for a in head.attribute}
    k, bits, block = attr["K"], attr["bits"], attr["block_size"]
    if len(head.input) > 3:
        raise RuntimeError("quantize: the tied embedding needs the head quantized symmetric (no zero points)")
    weight, scales = head.input[1], head.input[2]
    s = numpy_helper.to_array(next(i for i in g.initializer if i.name == scales))
    padded = s.shape[1] * block  # the quantizer zero-pads K up to whole blocks
    axis = numpy_helper.from_array(np.array([2], np.int64), scales + "_axis")
    g.initializer.append(axis)  # the head's own scales, [V, K/block] -> [V, K/block, 1]: not stored twice
    nodes = [helper.make_node("Unsqueeze", [scales, axis.name], [scales + "_gather"], name=scales + "_unsqueeze")]
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in list(g.input) + list(g.value_info)
             if v.type.tensor_type.HasField("shape")}
    for node in g.node:
        if node.op_type != "Gather" or node.input[0] != embedding:
            nodes.append(node)
            continue
        if any(a.name == "axis" and a.i != 0 for a in node.attribute) or node.input[1] not in ranks:
            raise RuntimeError(f"quantize: unexpected embedding Gather {node.name}")
        shape = numpy_helper.from_array(np.array([0] * ranks[node.input[1]] + [padded], np.int64),
                                        node.output[0] + "_shape")
        g.initializer.append(shape)  # [..., K/block, block] -> [..., padded K]; 0 copies the index dims
        blocks, flat = node.output[0] + "_blocks", node.output[0] + ("_padded" if padded != k else "")
        nodes += [helper.make_node("GatherBlockQuantized", [weight, node.input[1], scales + "_gather"], [blocks],
                                   name=node.name + f"_Q{bits}", domain="com.microsoft", gather_axis=0,
                                   quantize_axis=2, block_size=block, bits=bits),
                  helper.make_node("Reshape", [blocks, shape.name], [flat], name=node.name + "_reshape")]
        if padded != k:  # hidden % block_size != 0: drop the zero padding
            ends = numpy_helper.from_array(np.array([k], np.int64), node.output[0] + "_k")
            zero, last = (numpy_helper.from_array(np.array([v], np.int64), node.output[0] + n)
                          for v, n in ((0, "_start"), (-1, "_axis")))
            g.initializer.extend([ends, zero, last])
            nodes.append(helper.make_node("Slice", [flat, zero.name, ends.name, last.name], [node.output[0]],
                                          name=node.name + "_unpad"))
    g.ClearField("node")
    g.node.extend(nodes)
