"""How the student's held-out perplexity moves with distillation steps, per learning rate and layer choice.

    .venv/bin/python -m benchmarks.experiments.bench_distill_curve --run <repo> --variant 3e-4:40 \
        --variant 1e-4:40 --eval-at 0,10,20,40

`--run` is a repository whose pipeline has run up to sft (models/base, models/dapt, models/sft, data/replay,
data/prepared, data/eval). Every variant (`lr:steps`, optionally `lr:steps:layers:choice`) is the distill
stage's own training (ratchet.models.student.train: teacher, rehearsal blocks, batch schedule, layer scores,
top-k cache, loss and loop), with distill's params' lr and steps replaced, and its token perplexity on held-out
domain blocks (data/prepared/domain/heldout.jsonl) and general blocks (data/eval/general_text.jsonl) is
measured before the chosen steps and at the end. Step 0 is the student as cut from the teacher, before any
training. The base model and the teacher are scored on the
same blocks. Prints one table: perplexities and their ratios to the teacher and to the base, and seconds of
training per variant.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from benchmarks import common
from ratchet.core import params, runtime
from ratchet.core.io import read_jsonl
from ratchet.models import modeling
from ratchet.models.batches import pack
from ratchet.models.student import train


@torch.inference_mode()
def token_ppl(model, blocks: torch.Tensor, batch: int = 4) -> float:
    """exp of the mean next-token NLL over every position of the blocks (fp32)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for b in range(0, len(blocks), batch):
        ids = blocks[b:b + batch]
        logits = model(input_ids=ids).logits[:, :-1].float()
        nll = torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten(), reduction="sum")
        total, count = total + float(nll), count + ids[:, 1:].numel()
    model.train(was_training)
    return float(torch.tensor(total / count).exp())


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--run", default=".")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--variant", action="append", required=True, help="lr:steps[:student_layers[:layer_choice]]")
    ap.add_argument("--eval-at", default="0", help="steps before which to score, comma-separated (the end always)")
    ap.add_argument("--eval-blocks", type=int, default=16, help="held-out blocks of seq_len tokens per part")
    args = ap.parse_args()
    runtime.start()
    run_dir = Path(args.run).resolve()
    run, cfg = params.load(run_dir / args.params, "run", "distill")
    runtime.seed_everything(run.seed, run.threads)
    variants = []
    for v in args.variant:
        parts = v.split(":")
        variants.append({"name": v, "lr": float(parts[0]), "steps": int(parts[1]),
                         "layers": int(parts[2]) if len(parts) > 2 else cfg.student_layers,
                         "choice": parts[3] if len(parts) > 3 else cfg.layer_choice})
    eval_at = {int(s) for s in args.eval_at.split(",") if s}

    tok = modeling.load_tokenizer(run_dir / "models/sft")
    teacher = modeling.load_sft_merged(run_dir / "models/sft", run_dir / "models/dapt").eval()
    heldout = {"domain": pack(tok, [r["text"] for r in read_jsonl(run_dir / "data/prepared/domain/heldout.jsonl")],
                              cfg.seq_len)[:args.eval_blocks],
               "general": pack(tok, [r["text"] for r in read_jsonl(run_dir / "data/eval/general_text.jsonl")],
                               cfg.seq_len)[:args.eval_blocks]}
    ppl = {}
    base = modeling.load_model(run_dir / "models/base").eval()
    ppl["base"] = {part: token_ppl(base, b) for part, b in heldout.items()}
    del base
    ppl["teacher"] = {part: token_ppl(teacher, b) for part, b in heldout.items()}
    n_teacher = teacher.config.num_hidden_layers
    del teacher
    for name in ("base", "teacher"):
        print(f"{name}: domain {ppl[name]['domain']:.2f} general {ppl[name]['general']:.2f}", flush=True)

    results = []
    for v in variants:  # each variant is the stage's own training, distill's params with these replaced
        vcfg = cfg.model_copy(update={"lr": v["lr"], "steps": v["steps"], "student_layers": v["layers"],
                                      "layer_choice": v["choice"], "keep_layers": [], "checkpoint_every": 0})
        runtime.seed_everything(run.seed, run.threads)
        curve = {}

        def measure(step, student, curve=curve, v=v):
            if step in eval_at and step not in curve:
                curve[step] = {part: token_ppl(student, b) for part, b in heldout.items()}
                print(f"{v['name']} step {step}: domain {curve[step]['domain']:.2f} "
                      f"general {curve[step]['general']:.2f}", flush=True)

        t = time.time()
        student, _, _, record = train(vcfg, run, run_dir / "models/dapt", run_dir / "models/sft",
                                      run_dir / "data/replay", on_step=measure)
        seconds = time.time() - t
        curve[v["steps"]] = {part: token_ppl(student, b) for part, b in heldout.items()}
        results.append((v, record["teacher_layers_kept"], curve, seconds))

    rows = []
    for name in ("base", "teacher"):
        d, g = ppl[name]["domain"], ppl[name]["general"]
        rows.append([name, "", "", d, g, d / ppl["teacher"]["domain"], g / ppl["teacher"]["general"],
                     d / ppl["base"]["domain"], g / ppl["base"]["general"]])
    for v, keep, curve, seconds in results:
        dropped = [i for i in range(n_teacher) if i not in keep]
        for step in sorted(curve):
            d, g = curve[step]["domain"], curve[step]["general"]
            rows.append([f"{v['name']} ({seconds:.0f} s)", str(dropped), step, d, g, d / ppl["teacher"]["domain"],
                         g / ppl["teacher"]["general"], d / ppl["base"]["domain"], g / ppl["base"]["general"]])
    main_table = common.table(
        ["variant", "layers dropped", "step", "domain ppl", "general ppl", "domain / teacher", "general / teacher",
         "domain / base", "general / base"], rows, [None, None, "d", ".2f", ".2f", ".3f", ".3f", ".3f", ".3f"],
        align="llrrrrrrr")
    print("\n" + common.markdown(main_table))
    common.record(__file__, {
        "settings": {"variants": variants, "eval_at": sorted(eval_at), "eval_blocks": args.eval_blocks},
        "ppl": ppl, "variants": [{**v, "teacher_layers_kept": keep, "curve": curve, "train_s": seconds}
                                 for v, keep, curve, seconds in results],
        "tables": {"main": main_table}})


if __name__ == "__main__":
    main()
