"""sft: LoRA supervised fine-tuning on instruction data, with replay and EWC.

    python -m stages sft --params params.yaml --dapt models/dapt --base models/base \
        --champion models/champion --fisher models/fisher --replay data/replay \
        --gate reports/gates/dapt.json --out models/sft --live reports/train/sft

The adapted model is dapt + LoRA (peft), trained on the newest drop's
instruction pairs and the replay buffer's earlier ones. Loss is on the
assistant's final reply only; the prompt and chat scaffolding carry none.
Against forgetting, each batch mixes in replay-buffer text and the loss adds EWC:
    lambda * T/2 * sum_i F_i (theta_i - theta_champion_i)^2
over the LoRA-adapted weights, with F from the fisher stage over samples of T
tokens: lambda weighs the predicted rise of the loss on the champion's text
against the loss on the new pairs (losses.ewc_weight). With
sft.base_bits 8 the frozen base is held in 8 bits (bitsandbytes LLM.int8); 4-bit
NF4 (QLoRA) needs a GPU: on CPU it is refused before any work (see base_quantization).
"""
from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path

from ratchet.core import params
from ratchet.core.history import loss_trend, write_history
from ratchet.core.io import atomic_dir, write_jsonl
from ratchet.core.runtime import log, seed_everything
from ratchet.eval.verdict import require_pass
from ratchet.models import modeling, sdft
from ratchet.models.champion import made_by, teacher_or_base
from ratchet.models.lineage import rehearsal_words, require, write_lineage
from ratchet.models.sft import train
from ratchet.models.train import checkpoint_dir, discard_checkpoint, is_main_process


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    for name in ("dapt", "base", "champion", "fisher", "replay", "gate", "out", "live"):
        ap.add_argument(f"--{name}", required=True)
    args = ap.parse_args(argv)

    run, cfg = params.load(args.params, "run", "sft")
    require_pass(args.gate)
    started = time.time()
    seed_everything(run.seed, run.threads)
    dapt, champion = Path(args.dapt), teacher_or_base(args.champion, args.base)
    require(dapt, "dapt")
    require(champion, made_by(champion, args.champion))
    require(args.fisher, "fisher")
    model, tok, history, targets = train(cfg, run, dapt, champion, Path(args.fisher), args.replay,
                                         checkpoint_dir(args.out))
    if not is_main_process():
        return  # one of several training processes: rank 0 writes the outputs

    with atomic_dir(args.out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        modeling.point_adapter_at(tmp, dapt)
        if targets:
            write_jsonl(tmp / sdft.TARGETS_FILE, targets)
        used = dict(Counter(r["used"] for r in targets))
        write_lineage(tmp, name=args.out, card="LoRA adapter (peft) for the dapt model, fine-tuned on instruction data with loss on the "
                           f"reply only, {rehearsal_words(cfg)}."
                           + (f" {used.get('rewrite', 0)} of the {len(targets)} replies it trained on were rewritten "
                              f"by the dapt model from the reference (model-generated, self-distillation: "
                              f"{sdft.TARGETS_FILE})." if targets else ""),
                      library="peft", stage="sft", params={"sft": params.as_dict(cfg)},
                      parents={"dapt": dapt, "champion": champion, "fisher": args.fisher},
                      data={"sft": f"{args.replay}/new/sft.jsonl", "replay": f"{args.replay}/buffer"},
                      seed=run.seed, threads=run.threads, started=started, real=modeling.is_real(dapt),
                      extra={"final_loss": history[-1]["loss"], "adapter_of": str(dapt),
                             **({"self_distilled": {"file": sdft.TARGETS_FILE, "generated_by": str(dapt),
                                                    "model_generated": True, "replies": len(targets), **used}}
                                if targets else {})})
    write_history(args.live, history)  # before the checkpoint goes: a kill before this line reruns from it
    discard_checkpoint(args.out)
    log("sft", f"wrote adapter {args.out} in {time.time() - started:.0f}s; {loss_trend(history)}")

