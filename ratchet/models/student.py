"""The distilled student: which of the teacher's layers it keeps, built from the teacher's weights, and
trained on the teacher's distribution (`train`).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch

from ratchet.core import params
from ratchet.core.runtime import log
from ratchet.models import generation, modeling
from ratchet.models.batches import Sampler, cycle_conversations, cycle_records, pack, texts
from ratchet.models.losses import kd_loss, replay_rows, topk_kd_loss
from ratchet.models.rehearsal import teacher_topk
from ratchet.models.train import fingerprint, train_loop


@torch.inference_mode()
def layer_similarity(model, blocks: torch.Tensor, batch_size: int = 4) -> dict[str, torch.Tensor]:
    """Mean cosine and angular distance arccos(cos)/pi between the residual states h_i and h_j, 0 <= i, j <= L.

    h_0 enters layer 0 (the embeddings), h_{i+1} leaves layer i, before the final norm (forward
    hooks; the model's own hidden_states apply the norm to the last one). Averaged over every
    token but the first, whose state is an attention-sink outlier.
    """
    layers = model.model.layers
    n = len(layers)
    states: list = [None] * (n + 1)

    def grab(i):
        def hook(_module, _inputs, out):
            states[i] = (out[0] if isinstance(out, tuple) else out).float()
        return hook

    handles = [model.model.embed_tokens.register_forward_hook(grab(0))]
    handles += [layer.register_forward_hook(grab(i + 1)) for i, layer in enumerate(layers)]
    cos, angle, count = torch.zeros(n + 1, n + 1, dtype=torch.float64), torch.zeros(n + 1, n + 1, dtype=torch.float64), 0
    try:
        for b in range(0, len(blocks), batch_size):
            model(input_ids=blocks[b:b + batch_size])
            h = torch.stack([torch.nn.functional.normalize(x[:, 1:], dim=-1) for x in states]).flatten(1, 2)
            for i in range(n + 1):
                c = (h[i:i + 1] * h).sum(-1).clamp(-1, 1)
                cos[i] += c.sum(-1).double()
                angle[i] += (torch.arccos(c) / torch.pi).sum(-1).double()
            count += h.shape[1]
    finally:
        for handle in handles:
            handle.remove()
    return {"cos": cos / count, "angle": angle / count}


def layers_to_keep(n_teacher: int, cfg: params.DistillConfig, sim: dict | None = None) -> tuple[list[int], dict]:
    """The teacher layers the student keeps, and the scores behind the choice.

    keep_layers: exactly those. Otherwise student_layers of them, by layer_choice:
      first_last       the first and last layers around a dropped middle block
      angular          drop the contiguous block whose input and output states are closest in
                       angular distance (Gromov et al., 2024); the last layer always stays
      block_influence  drop the layers that change their input least, 1 - cos(h_i, h_i+1)
                       (ShortGPT, Men et al., 2024)
    """
    if cfg.keep_layers:
        keep = sorted(set(cfg.keep_layers))
        if keep[-1] >= n_teacher:
            raise SystemExit(f"distill.keep_layers: teacher has layers 0..{n_teacher - 1}, got {keep[-1]}")
        return keep, {"choice": "keep_layers"}
    n = cfg.student_layers
    if not 2 <= n < n_teacher:
        raise SystemExit(f"distill.student_layers: must be in [2, {n_teacher - 1}] for a "
                         f"{n_teacher}-layer teacher, got {n}")
    drop = n_teacher - n
    if cfg.layer_choice == "first_last":
        head = (n + 1) // 2
        return list(range(head)) + list(range(n_teacher - (n - head), n_teacher)), {"choice": "first_last"}
    if cfg.layer_choice == "angular":
        distance = [float(sim["angle"][s, s + drop]) for s in range(n_teacher - drop)]  # block s..s+drop-1
        start = min(range(len(distance)), key=distance.__getitem__)
        return ([i for i in range(n_teacher) if not start <= i < start + drop],
                {"choice": "angular", "block_start": start, "angular_distance": [round(d, 5) for d in distance]})
    influence = [float(1 - sim["cos"][i, i + 1]) for i in range(n_teacher)]
    dropped = sorted(range(n_teacher), key=influence.__getitem__)[:drop]
    return ([i for i in range(n_teacher) if i not in dropped],
            {"choice": "block_influence", "block_influence": [round(x, 5) for x in influence]})


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


def train(cfg: params.DistillConfig, run: params.RunConfig, dapt: str | Path, sft: str | Path, replay: str | Path,
          checkpoint: Path | None = None, on_step: Callable[[int, object], None] | None = None):
    """distill's training: the teacher (dapt + the sft adapter, merged), the student cut from its layers, trained
    on the teacher's distribution over the cycle's data with rehearsal of general text. Returns (student, tok,
    history, what lineage records: the layers kept and why, the teacher cache, the rehearsal, parameter counts).
    `on_step(step, student)` runs before each step's batch (a benchmark measures the student there)."""
    tok = modeling.load_tokenizer(sft)
    teacher = modeling.load_sft_merged(sft, dapt).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)

    # Every batch of the run, fixed up front: row indices into task blocks, then replay blocks.
    chats = [tok.apply_chat_template(c, tokenize=False) for c in cycle_conversations(replay)]
    domain = [r["text"] for r in cycle_records(replay, "domain")]
    task = pack(tok, domain + chats, cfg.seq_len)
    rehearsal = {}
    n_replay = replay_rows(cfg.batch_size, cfg.replay_fraction)
    if cfg.replay_source == "teacher":
        t = time.time()
        # No more blocks than the run's batches draw (steps x replay rows): a block no batch reads is never written.
        wanted = max(1, min(cfg.teacher_samples, cfg.steps * n_replay))
        # Its top-k log-probs on them come with the sampling: the cache below runs the teacher on task blocks only.
        general, general_topk = generation.sample_blocks(teacher, tok, wanted, cfg.seq_len, batch=32, seed=run.seed,
                                                         temperature=cfg.sample_temperature, bf16=cfg.bf16,
                                                         topk=cfg.teacher_topk, kd_temperature=cfg.temperature)
        rehearsal = {"source": "teacher", "model_generated": True, "blocks": len(general),
                     "temperature": cfg.sample_temperature,
                     "tokens": general.numel(), "seconds": round(time.time() - t, 1),
                     "preview": tok.decode(general[0, 1:65])}
        log("distill", f"the teacher wrote {len(general)} rehearsal blocks of {cfg.seq_len} tokens in "
                       f"{rehearsal['seconds']}s (model-generated; used here only)")
    else:
        general, general_topk = pack(tok, texts(f"{replay}/buffer/general.jsonl"), cfg.seq_len), None
        rehearsal = {"source": f"{replay}/buffer/general.jsonl", "model_generated": False,
                     "blocks": len(general)}
    blocks = torch.cat([task, general])
    draw_task, draw_general = Sampler(len(task), run.seed), Sampler(len(general), run.seed + 1)
    schedule = [draw_task.take(cfg.batch_size - n_replay) + [len(task) + j for j in draw_general.take(n_replay)]
                for _ in range(cfg.steps)]
    used = sorted({r for rows in schedule for r in rows})

    n_teacher = teacher.config.num_hidden_layers
    sim = None
    if not cfg.keep_layers and cfg.layer_choice != "first_last":
        t = time.time()
        sim = layer_similarity(teacher, blocks[used[:: max(1, len(used) // cfg.importance_blocks)][:cfg.importance_blocks]])
        log("distill", f"layer similarity of the teacher on {cfg.importance_blocks} training blocks in {time.time() - t:.0f}s")
    keep, scores = layers_to_keep(n_teacher, cfg, sim)
    student = student_from(teacher, keep)
    student.config.use_cache = False
    n_t, n_s = (sum(p.numel() for p in m.parameters()) for m in (teacher, student))
    log("distill", f"student keeps teacher layers {keep} ({scores['choice']}): {n_s / 1e6:.1f}M of {n_t / 1e6:.1f}M "
                   f"parameters")

    cache = {}
    if cfg.teacher_topk:
        t = time.time()
        run_on = [r for r in used if general_topk is None or r < len(task)]
        idx, logp = teacher_topk(teacher, blocks[run_on], cfg.teacher_topk, cfg.temperature, cfg.bf16)
        if general_topk is not None:  # the rehearsal blocks' top-k, recorded while the teacher wrote them
            sampled = [r - len(task) for r in used if r >= len(task)]
            idx, logp = torch.cat([idx, general_topk[0][sampled]]), torch.cat([logp, general_topk[1][sampled]])
            del general_topk
        slot = {r: i for i, r in enumerate(used)}  # used is sorted: the task rows, then the rehearsal rows
        tail = float((1 - logp.float().exp().sum(-1)).clamp(min=0).mean())
        cache = {"rows": len(used), "rows_run": len(run_on), "k": cfg.teacher_topk,
                 "seconds": round(time.time() - t, 1), "mean_tail_mass": round(tail, 5)}
        log("distill", f"teacher top-{cfg.teacher_topk} log-probs of {len(used)} blocks cached in {cache['seconds']}s "
                       f"({len(used) - len(run_on)} recorded as it wrote them; mean probability outside the top k: "
                       f"{tail:.4f}); the teacher is not run again")
        del teacher

    def next_batch(step):
        if on_step is not None:
            on_step(step, student)
        rows = schedule[step]
        ids = blocks[rows]
        batch = {"input_ids": ids, "labels": ids.clone(), "attention_mask": torch.ones_like(ids)}
        if cache:
            at = torch.tensor([slot[r] for r in rows])
            batch.update(t_idx=idx[at].long(), t_logp=logp[at])
        return batch

    def compute_loss(model, batch):
        s_logits = model(input_ids=batch["input_ids"]).logits
        if cache:
            return topk_kd_loss(s_logits, batch["t_idx"], batch["t_logp"], batch["labels"], cfg.temperature,
                                cfg.kd_weight)
        with torch.no_grad():
            t_logits = teacher(input_ids=batch["input_ids"]).logits
        return kd_loss(s_logits, t_logits, batch["labels"], cfg.temperature, cfg.kd_weight)

    history = train_loop("distill", student, cfg, next_batch, compute_loss, checkpoint=checkpoint,
                         fingerprint=fingerprint(cfg, dapt, sft, replay))
    return student, tok, history, {"teacher_layers": n_teacher, "teacher_layers_kept": keep, "layer_scores": scores,
                                   "teacher_cache": cache, "rehearsal": rehearsal,
                                   "parameters": {"teacher": n_t, "student": n_s}}
