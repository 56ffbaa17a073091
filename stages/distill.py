"""distill: a smaller student from the teacher's own layers, trained on its logits.

    python -m stages distill --params params.yaml --dapt models/dapt --sft models/sft \
        --replay data/replay --gate reports/gates/sft.json --out models/student \
        --live reports/train/distill

Teacher: dapt + the sft LoRA adapter, merged. Student: the teacher with some
layers removed, same tokenizer, initialised from the teacher's weights. Which
layers go is measured on the teacher (distill.layer_choice, see layers_to_keep):
by default the contiguous block whose removal changes the residual stream
least, in angular distance. Training minimises
    kd_weight * T^2 * KL(teacher_T || student_T) + (1 - kd_weight) * CE
on the cycle's domain text and instruction conversations (new and replayed),
with rehearsal of general text: by default blocks the teacher samples from its
own distribution before training (distill.replay_source: teacher; model-
generated, recorded in the lineage, kept nowhere else), or the replay buffer's
general text (buffer). Every batch is fixed up front, so with
distill.teacher_topk the teacher runs once over the blocks the run will use and
keeps only its top-k log-probs (plus the tail mass); on the blocks it wrote
itself they are read off the logits it sampled from, so it runs over the task
blocks only. Training then runs the student alone.
"""
from __future__ import annotations

import argparse
import time

from ratchet.core import params
from ratchet.core.history import loss_trend, write_history
from ratchet.core.io import atomic_dir
from ratchet.core.runtime import log, seed_everything
from ratchet.eval.verdict import require_pass
from ratchet.models import modeling
from ratchet.models.lineage import require, write_lineage
from ratchet.models.student import train
from ratchet.models.train import checkpoint_dir, discard_checkpoint, is_main_process


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    for name in ("dapt", "sft", "replay", "gate", "out", "live"):
        ap.add_argument(f"--{name}", required=True)
    args = ap.parse_args(argv)

    run, cfg = params.load(args.params, "run", "distill")
    require_pass(args.gate)
    started = time.time()
    seed_everything(run.seed, run.threads)

    require(args.dapt, "dapt")
    require(args.sft, "sft")
    student, tok, history, record = train(cfg, run, args.dapt, args.sft, args.replay, checkpoint_dir(args.out))
    if not is_main_process():
        return  # one of several training processes: rank 0 writes the outputs
    keep, n_teacher, choice = record["teacher_layers_kept"], record["teacher_layers"], record["layer_scores"]["choice"]
    n_s = record["parameters"]["student"]

    student.config.use_cache = True
    with atomic_dir(args.out) as tmp:
        modeling.save_model(student, tok, tmp)
        write_lineage(tmp, name=args.out, card=f"Distilled student: {len(keep)} of the teacher's {n_teacher} layers "
                           f"({choice}; {n_s / 1e6:.1f}M parameters), trained on the teacher's logits.",
                      stage="distill", params={"distill": params.as_dict(cfg)},
                      parents={"dapt": args.dapt, "sft": args.sft},
                      data={"new": f"{args.replay}/new", "replay": f"{args.replay}/buffer"},
                      seed=run.seed, threads=run.threads, started=started, real=modeling.is_real(args.dapt),
                      extra={**{k: v for k, v in record.items() if k != "teacher_layers"},
                             "final_loss": history[-1]["loss"]})
    write_history(args.live, history)  # before the checkpoint goes: a kill before this line reruns from it
    discard_checkpoint(args.out)
    log("distill", f"wrote {args.out} in {time.time() - started:.0f}s; {loss_trend(history)}")

