"""Students straight after pruning, before any training: fewer layers against narrower MLPs.

    .venv/bin/python -m benchmarks.experiments.bench_pruning --run . --layers 28 26 24 20 --channels 1331 1126 \
        [--collapse]

`--run` is a repository whose pipeline has run up to sft (models/dapt, models/sft,
data/prepared, data/replay). The tuned teacher (dapt + sft merged) is scored
against itself pruned two ways, on the gate suite's domain and general
perplexity tasks (word perplexity, lower is better):

- depth: each layer choice of the distill stage (angular distance, block
  influence) keeping `--layers` of the teacher's layers, scored on 16 blocks of
  256 tokens (8 domain, 8 general), as the stage does;
- width: every layer keeps the `--channels` MLP channels with the largest mean
  |activation| (the input of down_proj) on the same blocks.

Prints one table with each student's parameters; the students are written to a
scratch folder (`--keep` to choose it).
"""
from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path

import torch

from benchmarks import common
from benchmarks.common import ROOT
from ratchet.core import params
from ratchet.models import modeling
from ratchet.models import student as distill
from ratchet.models.batches import pack, texts


def mlp_importance(model, blocks: torch.Tensor) -> list[torch.Tensor]:
    """Mean |activation| of each MLP channel (down_proj's input) per layer over the blocks."""
    sums = [0] * len(model.model.layers)

    def hook(i):
        def record(_module, inputs, _output):
            sums[i] = sums[i] + inputs[0].abs().float().sum((0, 1))
        return record

    handles = [layer.mlp.down_proj.register_forward_hook(hook(i)) for i, layer in enumerate(model.model.layers)]
    with torch.no_grad():
        for batch in blocks.split(4):
            model(input_ids=batch)
    for h in handles:
        h.remove()
    return sums


def narrower(teacher, importance: list[torch.Tensor], channels: int):
    """The teacher with each MLP cut to its `channels` most active channels."""
    student = copy.deepcopy(teacher)
    for layer, imp in zip(student.model.layers, importance):
        keep = imp.argsort(descending=True)[:channels].sort().values
        mlp = layer.mlp
        for name in ("gate_proj", "up_proj"):
            old = getattr(mlp, name)
            new = torch.nn.Linear(old.in_features, channels, bias=False)
            new.weight.data = old.weight.data[keep].clone()
            setattr(mlp, name, new)
        new = torch.nn.Linear(channels, mlp.down_proj.out_features, bias=False)
        new.weight.data = mlp.down_proj.weight.data[:, keep].clone()
        mlp.down_proj = new
    student.config.intermediate_size = channels
    return student


def collapsed(teacher, keep: list[int]):
    """The student that keeps `keep`, with each dropped block folded into the kept layer before it (LaCo's
    reserving-differences merge, Yang et al., 2024): theta = theta_l + sum_k (theta_k - theta_l)."""
    student = distill.student_from(teacher, keep)
    layers, dropped = teacher.model.layers, [i for i in range(len(teacher.model.layers)) if i not in keep]
    with torch.no_grad():
        for i in dropped:
            into = max((k for k in keep if k < i), default=min(keep))
            target = dict(student.model.layers[keep.index(into)].named_parameters())
            base = dict(layers[into].named_parameters())
            for name, w in layers[i].named_parameters():
                target[name].add_(w - base[name])
    return student


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--run", required=True, help="repository whose pipeline ran up to sft")
    ap.add_argument("--layers", type=int, nargs="*", default=[28, 26, 24])
    ap.add_argument("--channels", type=int, nargs="*", default=[1331, 1126])
    ap.add_argument("--collapse", action="store_true", help="also each depth choice with the dropped layers merged "
                    "into the kept layer before them (LaCo)")
    ap.add_argument("--keep", help="folder to keep the students in (default: a scratch folder)")
    args = ap.parse_args()
    from ratchet.eval.evaluate import run_suite, task_data

    run_dir = Path(args.run).resolve()
    ecfg, dcfg = params.load(ROOT / "params.yaml", "eval", "distill")
    data = str(run_dir / "data/prepared")
    tasks = {k: v for k, v in task_data(data, str(run_dir / "data/eval"), ecfg).items()
             if k in ("ratchet_domain_ppl", "ratchet_general_ppl")}
    tok = modeling.load_tokenizer(run_dir / "models/sft")
    teacher = modeling.load_sft_merged(run_dir / "models/sft", run_dir / "models/dapt").eval()
    domain = [json.loads(line)["text"] for line in open(run_dir / "data/prepared/domain/train.jsonl")][:200]
    general = texts(run_dir / "data/replay/buffer/general.jsonl")[:400]
    blocks = torch.cat([pack(tok, domain, 256)[:8], pack(tok, general, 256)[:8]])
    scratch = Path(args.keep or tempfile.mkdtemp(prefix="bench-pruning-"))

    students = [("teacher", "-", teacher)]
    sim = distill.layer_similarity(teacher, blocks)
    n = teacher.config.num_hidden_layers
    for layers in args.layers:
        for choice in ("angular", "block_influence"):
            keep, _ = distill.layers_to_keep(n, dcfg.model_copy(update={"student_layers": layers,
                                                                         "layer_choice": choice}), sim)
            students.append((f"{layers} layers, {choice}", str(keep), distill.student_from(teacher, keep)))
            if args.collapse:
                students.append((f"{layers} layers, {choice}, dropped layers merged in", str(keep),
                                 collapsed(teacher, keep)))
    importance = mlp_importance(teacher, blocks)
    for channels in args.channels:
        students.append((f"{channels} MLP channels", "all layers", narrower(teacher, importance, channels)))

    out = common.table(["student", "kept", "parameters", "domain ppl", "general ppl"], [],
                       [None, None, "{:.1f}M", ".1f", ".1f"], align="llrrr")
    print(common.header(out))
    for i, (name, kept, model) in enumerate(students):
        folder = scratch / f"student-{i}"
        modeling.save_model(model, tok, folder)
        common.with_lineage(folder, "pruned student", dapt=run_dir / "models/dapt", sft=run_dir / "models/sft")
        m = run_suite("hf", str(folder), data, ecfg, tasks=tasks)["metrics"]
        out["rows"].append([name, kept, sum(p.numel() for p in model.parameters()) / 1e6, m["domain_ppl"],
                            m["general_ppl"]])
        print(common.row(out, out["rows"][-1]), flush=True)
    print(f"\nstudents in {scratch}")
    common.record(__file__, {"settings": {"layers": args.layers, "channels": args.channels, "collapse": args.collapse,
                                          "students": str(scratch)}, "tables": {"main": out}})


if __name__ == "__main__":
    main()
