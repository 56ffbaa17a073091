"""distill: a smaller student from the teacher's own layers, trained on its logits.

    python -m stages distill --params params.yaml --dapt models/dapt --sft models/sft \
        --replay data/replay --gate reports/gates/sft.json --out models/student \
        --history reports/train/distill.json

Teacher: dapt + the sft LoRA adapter, merged. Student: the teacher with a
contiguous block of middle layers removed (the first and last layers of a
decoder matter most; dropping a middle block loses far less than dropping every
k-th layer), same tokenizer, initialised from the teacher's weights. Training
minimises kd_weight * T^2 * KL(teacher_T || student_T) + (1 - kd_weight) * CE
on the cycle's domain text and instruction conversations (new and replayed),
with replay of general text.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from .core import params
from .core.io import atomic_dir, write_json
from .core.runtime import log, seed_everything
from .models import modeling
from .models.batches import cycle_conversations, cycle_records, pack, Sampler, texts
from .models.gates import require_pass
from .models.lineage import write_lineage
from .models.losses import kd_loss, replay_rows
from .models.train import checkpoint_dir, discard_checkpoint, fingerprint, train_loop


def layers_to_keep(n_teacher: int, cfg: params.DistillConfig) -> list[int]:
    """Explicit distill.keep_layers, or the first and last layers around a dropped middle block."""
    if cfg.keep_layers:
        keep = sorted(set(cfg.keep_layers))
        if keep[-1] >= n_teacher:
            raise SystemExit(f"distill.keep_layers: teacher has layers 0..{n_teacher - 1}, got {keep[-1]}")
    else:
        n = cfg.student_layers
        if not 2 <= n < n_teacher:
            raise SystemExit(f"distill.student_layers: must be in [2, {n_teacher - 1}] for a "
                             f"{n_teacher}-layer teacher, got {n}")
        head = (n + 1) // 2
        keep = list(range(head)) + list(range(n_teacher - (n - head), n_teacher))
    if len(keep) >= n_teacher:
        raise SystemExit("distill: the student must have fewer layers than the teacher")
    return keep


def student_from(teacher, keep: list[int]):
    """A new model of the teacher's class with only the `keep` decoder layers, weights copied."""
    config = teacher.config.__class__.from_dict(teacher.config.to_dict())
    config.num_hidden_layers = len(keep)
    if getattr(config, "layer_types", None):
        config.layer_types = [config.layer_types[i] for i in keep]
    student = teacher.__class__(config)
    renamed = {}
    for name, w in teacher.state_dict().items():
        parts = name.split(".")
        if "layers" in parts:
            at = parts.index("layers") + 1
            i = int(parts[at])
            if i not in keep:
                continue
            parts[at] = str(keep.index(i))
        renamed[".".join(parts)] = w.clone()
    student.load_state_dict(renamed, strict=True)
    student.tie_weights()
    return student


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    for name in ("dapt", "sft", "replay", "gate", "out", "history"):
        ap.add_argument(f"--{name}", required=True)
    args = ap.parse_args(argv)

    run, cfg = params.load(args.params, "run", "distill")
    require_pass(args.gate)
    started = time.time()
    seed_everything(run.seed, run.threads)

    tok = modeling.load_tokenizer(args.sft)
    teacher = modeling.load_sft_merged(args.sft, args.dapt).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    keep = layers_to_keep(teacher.config.num_hidden_layers, cfg)
    student = student_from(teacher, keep)
    student.config.use_cache = False
    n_t, n_s = (sum(p.numel() for p in m.parameters()) for m in (teacher, student))
    log("distill", f"student keeps teacher layers {keep}: {n_s / 1e6:.1f}M of {n_t / 1e6:.1f}M parameters")

    chats = [tok.apply_chat_template(c, tokenize=False) for c in cycle_conversations(args.replay)]
    domain = [r["text"] for r in cycle_records(args.replay, "domain")]
    task = pack(tok, domain + chats, cfg.seq_len)
    general = pack(tok, texts(f"{args.replay}/buffer/general.jsonl"), cfg.seq_len)
    n_replay = replay_rows(cfg.batch_size, cfg.replay_fraction)
    draw_task, draw_general = Sampler(len(task), run.seed), Sampler(len(general), run.seed + 1)

    def next_batch(step):
        ids = torch.cat([task[draw_task.take(cfg.batch_size - n_replay)], general[draw_general.take(n_replay)]])
        return {"input_ids": ids, "labels": ids.clone(), "attention_mask": torch.ones_like(ids)}

    def compute_loss(model, batch):
        with torch.no_grad():
            t_logits = teacher(input_ids=batch["input_ids"]).logits
        s_logits = model(input_ids=batch["input_ids"]).logits
        return kd_loss(s_logits, t_logits, batch["labels"], cfg.temperature, cfg.kd_weight)

    history = train_loop("distill", student, cfg, next_batch, compute_loss, checkpoint=checkpoint_dir(args.out),
                         fingerprint=fingerprint(cfg, args.dapt, args.sft, args.replay))

    student.config.use_cache = True
    with atomic_dir(args.out) as tmp:
        modeling.save_model(student, tok, tmp)
        write_lineage(tmp, name=args.out, card=f"Distilled student: {len(keep)} of the teacher's {teacher.config.num_hidden_layers} layers "
                           f"({n_s / 1e6:.1f}M parameters), trained on the teacher's logits.",
                      stage="distill", params={"distill": params.as_dict(cfg)},
                      parents={"dapt": args.dapt, "sft": args.sft},
                      data={"new": f"{args.replay}/new", "replay": f"{args.replay}/buffer"},
                      seed=run.seed, threads=run.threads, started=started, real=modeling.is_real(args.dapt),
                      extra={"teacher_layers_kept": keep, "parameters": {"teacher": n_t, "student": n_s},
                             "final_loss": history[-1]["loss"]})
    discard_checkpoint(args.out)
    write_json(args.history, history)
    log("distill", f"wrote {args.out} in {time.time() - started:.0f}s; loss {history[0]['loss']:.3f} -> "
                   f"{history[-1]['loss']:.3f}")

