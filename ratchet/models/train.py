"""The training loop shared by dapt, sft and distill, and its resumable checkpoints.

The loop goes through accelerate, so the same stage runs on one CPU process
here and as several DDP processes under `accelerate launch --multi_gpu` or
`torchrun` (over gloo on CPUs): every process builds the same batches from the
same seed, trains on its own share of each batch's rows, and the gradients are
averaged, so a step sees the whole batch as one process would. Only the main
process writes checkpoints and outputs, so FSDP and ZeRO-3, which leave each
process a shard of the weights, are refused.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable

import torch

from ratchet.core.io import sha256_file, sha256_tree
from ratchet.core.runtime import Refused
from ratchet.models.lineage import artifact_hash
from ratchet.models.losses import lr_at


def distributed():
    """accelerate's view of this process (rank, world size), the one train_loop's Accelerator shares: on a machine
    without CUDA the processes `torchrun` starts train on the CPU over gloo."""
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def is_main_process() -> bool:
    """Whether this process writes the stage's outputs: always with one process, rank 0 of several."""
    return distributed().is_main_process


def fingerprint(cfg, *inputs: str | Path) -> str:
    """What a checkpoint must match to be resumed: the stage's params and its inputs' content (a model folder's
    hash as its lineage records it, once lineage.require found it true; a data folder's files)."""
    h = hashlib.sha256(json.dumps(cfg.model_dump(), sort_keys=True).encode())
    for path in inputs:
        h.update((artifact_hash(path) if (Path(path) / "lineage.json").is_file() else sha256_tree(path)).encode())
    return h.hexdigest()


def checkpoint_dir(out: str | Path) -> Path:
    """Where a stage writing `out` keeps its resumable training state: a hidden sibling."""
    out = Path(out)
    return out.with_name(f".{out.name}.ckpt")


def discard_checkpoint(out: str | Path) -> None:
    """Called once `out` is written: its checkpoint has served, and so has anything kept beside it
    (a half-written checkpoint, sft's self-distilled targets)."""
    ckpt = checkpoint_dir(out)
    for p in ckpt.parent.glob(glob.escape(ckpt.name) + "*"):
        shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)


CHECKPOINT_FILES = ("trainable.safetensors", "optimizer.pt", "rng.pt")


def rng_state() -> dict:
    """Every random generator a training step may draw from (dropout, sampling): torch's (and CUDA's), numpy's
    and python's, as plain JSON and tensors."""
    import random

    import numpy as np

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            **({"cuda": torch.stack(torch.cuda.get_rng_state_all())} if torch.cuda.is_available() else {}),
            "numpy": [kind, keys.tolist(), pos, has_gauss, gauss], "python": random.getstate()}


def set_rng_state(state: dict) -> None:
    import random

    import numpy as np

    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


def save_checkpoint(path: Path, model, opt, step: int, history: list[dict], fingerprint: str) -> None:
    """Trainable weights (safetensors), optimizer state, every RNG's state, step and history; written aside,
    then renamed."""
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({n: p.detach().contiguous() for n, p in model.named_parameters() if p.requires_grad},
              tmp / "trainable.safetensors")
    torch.save(opt.state_dict(), tmp / "optimizer.pt")
    rng = rng_state()
    torch.save({k: rng.pop(k) for k in ("torch", "cuda") if k in rng}, tmp / "rng.pt")
    files = {f: sha256_file(tmp / f) for f in CHECKPOINT_FILES}
    (tmp / "state.json").write_text(json.dumps({"step": step, "fingerprint": fingerprint, "history": history,
                                                "rng": rng, "files": files}))
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)


def load_checkpoint(path: Path, model, opt, fingerprint: str) -> tuple[int, list[dict], dict | None]:
    """Restore a checkpoint made with the same inputs and params: (step, history, the RNG states to set once
    the data order is replayed); (0, [], None) when there is none to resume. A checkpoint whose files do not
    hash to what its state.json recorded (truncated, bit-flipped, half-copied) is named and ignored before
    anything is loaded from it."""
    from safetensors.torch import load_file

    state_file = path / "state.json"
    if not state_file.is_file():
        return 0, [], None
    try:
        state = json.loads(state_file.read_text())
        recorded = state["files"]
    except (ValueError, KeyError, TypeError) as e:
        print(f"[train] ignoring {path}: {state_file} is damaged ({e}); training starts from step 0", flush=True)
        return 0, [], None
    if state.get("fingerprint") != fingerprint:
        print(f"[train] ignoring {path}: made with other inputs or params", flush=True)
        return 0, [], None
    for f in CHECKPOINT_FILES:
        if not (path / f).is_file() or sha256_file(path / f) != recorded.get(f):
            print(f"[train] ignoring {path}: {path / f} is missing or damaged (its sha256 is not the one recorded "
                  "when it was written); training starts from step 0", flush=True)
            return 0, [], None
    weights = load_file(path / "trainable.safetensors")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, w in weights.items():
            params[name].copy_(w)
    # weights_only: tensors and plain containers, no arbitrary objects are unpickled.
    opt.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    return state["step"], state["history"], {**state["rng"], **torch.load(path / "rng.pt", weights_only=True)}


def in_epochs(stage: str, cfg, units: int, per_step: int):
    """cfg with its steps set by the data: `epochs` passes over the cycle's `units` (blocks or conversations of
    the newest drop) at `per_step` new units a step (the replay rows ride on top), never more than cfg.steps;
    cfg as it is when epochs is 0. The warm-up is cut to the steps when they are fewer."""
    import math

    if not cfg.epochs:
        return cfg
    steps = max(1, min(cfg.steps, math.ceil(cfg.epochs * units / per_step)))
    capped = " (capped by steps)" if steps == cfg.steps and cfg.epochs * units / per_step > cfg.steps else ""
    print(f"[{stage}] {cfg.epochs:g} epochs of {units} new units at {per_step} a step: {steps} steps{capped}",
          flush=True)
    return cfg.model_copy(update={"steps": steps, "warmup_steps": min(cfg.warmup_steps, steps)})


def train_loop(stage: str, model, cfg, next_batch: Callable[[int], dict],
               compute_loss: Callable[[object, dict], tuple], checkpoint: Path | None = None,
               fingerprint: str = "") -> list[dict]:
    """AdamW with warm-up + cosine, grad clipping, bf16 autocast; returns per-step history.

    Trains the parameters that require grad. With `checkpoint`, state is saved
    every cfg.checkpoint_every steps and a rerun with the same `fingerprint`
    resumes where the last one stopped (the data order is replayed and every
    RNG restored, so the result equals an uninterrupted run bit for bit); the
    checkpoint is removed at the end.
    """
    from accelerate import Accelerator, DistributedType

    acc = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision="bf16" if cfg.bf16 else "no")
    rank, world = acc.process_index, acc.num_processes
    sharded = acc.distributed_type == DistributedType.FSDP or (
        acc.distributed_type == DistributedType.DEEPSPEED and acc.state.deepspeed_plugin.zero_stage == 3)
    if sharded:
        raise SystemExit(f"{stage}: {acc.distributed_type.value} shards the weights across processes, and the stage "
                         "writes the model from rank 0's memory, which would hold only its shard. Launch with DDP "
                         "(accelerate launch --multi_gpu, or torchrun): a model of this size fits on one device")
    if cfg.batch_size % world:
        raise SystemExit(f"{stage}.batch_size {cfg.batch_size} does not split over {world} processes: make it a "
                         f"multiple of {world}, or launch a number of processes that divides it")
    share = cfg.batch_size // world
    if world > 1 and acc.is_main_process:
        print(f"[{stage}] {world} processes ({acc.distributed_type.value.lower()}, {acc.device.type}): "
              f"{share} of each batch's {cfg.batch_size} rows per process", flush=True)
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    model, opt = acc.prepare(model, opt)
    start, history, rng = (load_checkpoint(checkpoint, acc.unwrap_model(model), opt, fingerprint) if checkpoint
                           else (0, [], None))
    if start:
        print(f"[{stage}] resuming from {checkpoint} at step {start}/{cfg.steps}", flush=True)
    for step in range(start):
        next_batch(step)  # replay the samplers so step `start` sees the batch it would have
    if rng:
        set_rng_state(rng)  # and the generators (dropout, sampling) draw what they would have
    model.train()
    t0, tokens = time.time(), 0
    for step in range(start, cfg.steps):
        lr = lr_at(step, cfg.steps, cfg.warmup_steps, cfg.lr, cfg.lr_floor)
        for group in opt.param_groups:
            group["lr"] = lr
        # every process draws the whole batch (the samplers stay in step) and trains on its own rows of it
        batch = {k: v[rank * share:(rank + 1) * share].to(acc.device) for k, v in next_batch(step).items()}
        with acc.autocast():
            loss, logs = compute_loss(model, batch)
        if not torch.isfinite(loss):
            raise Refused(f"[{stage}] loss is {loss.item()} at step {step}; lower {stage}.lr")
        acc.backward(loss)
        grad_norm = acc.clip_grad_norm_(trainable, cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        tokens += int(batch["attention_mask"].sum()) * world
        logged = torch.tensor([loss.item(), *logs.values()], dtype=torch.float64)
        if world > 1:  # the history holds the whole batch's loss: the mean of the processes' equal shares
            logged = acc.reduce(logged.to(acc.device), "mean").cpu()
        loss_value, logs = float(logged[0]), dict(zip(logs, logged[1:].tolist()))
        row = {"step": step + 1, "loss": round(loss_value, 5), "lr": lr,
               "grad_norm": round(float(grad_norm), 4), **{k: float(f"{v:.6g}") for k, v in logs.items()}}
        history.append(row)
        if acc.is_main_process and ((step + 1) % cfg.log_every == 0 or step == start or step + 1 == cfg.steps):
            elapsed = time.time() - t0
            extra = " ".join(f"{k} {v:.4g}" for k, v in logs.items())
            print(f"[{stage}] step {step + 1:>4}/{cfg.steps} loss {loss_value:.4f} {extra} lr {lr:.2e} "
                  f"gnorm {float(grad_norm):.2f} tok/s {tokens / elapsed:.0f} elapsed {elapsed:.0f}s", flush=True)
        if (checkpoint and cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.steps
                and acc.is_main_process):
            save_checkpoint(checkpoint, acc.unwrap_model(model), opt, step + 1, history, fingerprint)
    model.eval()
    return history
