"""How the student's held-out perplexity moves with distillation steps, per learning rate and layer choice.

    python benchmarks/bench_distill_curve.py --run <repo> --variant 3e-4:40 --variant 1e-4:40 --eval-at 0,10,20,40

`--run` is a repository whose pipeline has run up to sft (models/base, models/dapt, models/sft, data/replay,
data/prepared, data/eval). The distill stage's own pieces build everything once, as the stage does: the
teacher (dapt + sft merged), the task and rehearsal blocks, the batch schedule (for the longest variant),
the layer scores and the teacher's top-k cache. Then every variant (`lr:steps`, optionally
`lr:steps:layers:choice`) trains a fresh student with the stage's loss and loop (distill's params with lr and
steps replaced), and its token perplexity on held-out domain blocks (data/prepared/domain/heldout.jsonl) and
general blocks (data/eval/general_text.jsonl) is measured before the chosen steps and at the end. Step 0 is
the student as cut from the teacher, before any training. The base model and the teacher are scored on the
same blocks. Prints one table: perplexities and their ratios to the teacher and to the base, and seconds of
training per variant.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from stages import distill  # noqa: E402
from stages.core import params, runtime  # noqa: E402
from stages.core.io import read_jsonl  # noqa: E402
from stages.models import generation, modeling  # noqa: E402
from stages.models.batches import Sampler, cycle_conversations, cycle_records, pack  # noqa: E402
from stages.models.losses import replay_rows, topk_kd_loss  # noqa: E402
from stages.models.rehearsal import teacher_topk  # noqa: E402
from stages.models.train import train_loop  # noqa: E402


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
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    steps = max(v["steps"] for v in variants)

    tok = modeling.load_tokenizer(run_dir / "models/sft")
    teacher = modeling.load_sft_merged(run_dir / "models/sft", run_dir / "models/dapt").eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    heldout = {"domain": pack(tok, [r["text"] for r in read_jsonl(run_dir / "data/prepared/domain/heldout.jsonl")],
                              cfg.seq_len)[:args.eval_blocks],
               "general": pack(tok, [r["text"] for r in read_jsonl(run_dir / "data/eval/general_text.jsonl")],
                               cfg.seq_len)[:args.eval_blocks]}
    ppl = {}
    base = modeling.load_model(run_dir / "models/base").eval()
    ppl["base"] = {part: token_ppl(base, b) for part, b in heldout.items()}
    del base
    ppl["teacher"] = {part: token_ppl(teacher, b) for part, b in heldout.items()}
    for name in ("base", "teacher"):
        print(f"{name}: domain {ppl[name]['domain']:.2f} general {ppl[name]['general']:.2f}", flush=True)

    replay = run_dir / "data/replay"
    chats = [tok.apply_chat_template(c, tokenize=False) for c in cycle_conversations(replay)]
    task = pack(tok, [r["text"] for r in cycle_records(replay, "domain")] + chats, cfg.seq_len)
    t = time.time()
    general, _ = generation.sample_blocks(teacher, tok, cfg.teacher_samples, cfg.seq_len, batch=32, seed=run.seed,
                                          temperature=cfg.sample_temperature, bf16=cfg.bf16)
    print(f"teacher wrote {len(general)} rehearsal blocks in {time.time() - t:.0f}s", flush=True)
    blocks = torch.cat([task, general])
    n_replay = replay_rows(cfg.batch_size, cfg.replay_fraction)
    draw_task, draw_general = Sampler(len(task), run.seed), Sampler(len(general), run.seed + 1)
    schedule = [draw_task.take(cfg.batch_size - n_replay) + [len(task) + j for j in draw_general.take(n_replay)]
                for _ in range(steps)]
    used = sorted({r for rows in schedule for r in rows})
    sim = distill.layer_similarity(teacher, blocks[used[:: max(1, len(used) // cfg.importance_blocks)]
                                                  [:cfg.importance_blocks]])
    t = time.time()
    idx, logp = teacher_topk(teacher, blocks[used], cfg.teacher_topk, cfg.temperature, cfg.bf16)
    slot = {r: i for i, r in enumerate(used)}
    print(f"teacher top-{cfg.teacher_topk} of {len(used)} blocks cached in {time.time() - t:.0f}s", flush=True)

    results = []
    for v in variants:
        vcfg = cfg.model_copy(update={"lr": v["lr"], "steps": v["steps"], "student_layers": v["layers"],
                                      "layer_choice": v["choice"], "keep_layers": [], "checkpoint_every": 0})
        keep, _ = distill.layers_to_keep(teacher.config.num_hidden_layers, vcfg, sim)
        runtime.seed_everything(run.seed, run.threads)
        student = distill.student_from(teacher, keep)
        student.config.use_cache = False
        curve = {}

        def next_batch(step, student=student, curve=curve, v=v):
            if step in eval_at and step not in curve:
                curve[step] = {part: token_ppl(student, b) for part, b in heldout.items()}
                print(f"{v['name']} step {step}: domain {curve[step]['domain']:.2f} "
                      f"general {curve[step]['general']:.2f}", flush=True)
            rows = schedule[step]
            ids = blocks[rows]
            at = torch.tensor([slot[r] for r in rows])
            return {"input_ids": ids, "labels": ids.clone(), "attention_mask": torch.ones_like(ids),
                    "t_idx": idx[at].long(), "t_logp": logp[at]}

        def compute_loss(model, batch):
            s_logits = model(input_ids=batch["input_ids"]).logits
            return topk_kd_loss(s_logits, batch["t_idx"], batch["t_logp"], batch["labels"], vcfg.temperature,
                                vcfg.kd_weight)

        t = time.time()
        if v["steps"]:
            train_loop("distill", student, vcfg, next_batch, compute_loss)
        seconds = time.time() - t
        curve[v["steps"]] = {part: token_ppl(student, b) for part, b in heldout.items()}
        results.append((v, keep, curve, seconds))

    print("\n| variant | layers dropped | step | domain ppl | general ppl | domain / teacher | general / teacher "
          "| domain / base | general / base |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in ("base", "teacher"):
        d, g = ppl[name]["domain"], ppl[name]["general"]
        print(f"| {name} | | | {d:.2f} | {g:.2f} | {d / ppl['teacher']['domain']:.3f} | "
              f"{g / ppl['teacher']['general']:.3f} | {d / ppl['base']['domain']:.3f} | {g / ppl['base']['general']:.3f} |")
    for v, keep, curve, seconds in results:
        dropped = [i for i in range(teacher.config.num_hidden_layers) if i not in keep]
        for step in sorted(curve):
            d, g = curve[step]["domain"], curve[step]["general"]
            print(f"| {v['name']} ({seconds:.0f} s) | {dropped} | {step} | {d:.2f} | {g:.2f} | "
                  f"{d / ppl['teacher']['domain']:.3f} | {g / ppl['teacher']['general']:.3f} | "
                  f"{d / ppl['base']['domain']:.3f} | {g / ppl['base']['general']:.3f} |")


if __name__ == "__main__":
    main()
