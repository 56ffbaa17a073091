"""The math of training, free of I/O: losses, penalties, schedules, batch mixes.

Every function here is pure and tested on random tensors.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ratchet.models.batches import IGNORE


def masked_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy, averaged per sequence, then over sequences.

    Averaging per sequence first keeps a long replay text from drowning a short
    instruction response in the same batch. Sequences without a labelled token
    are skipped.
    """
    logits, labels = logits[:, :-1].float(), labels[:, 1:]
    nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1),
                          ignore_index=IGNORE, reduction="none").view(labels.shape)
    counts = (labels != IGNORE).sum(1)
    per_seq = nll.sum(1) / counts.clamp(min=1)
    has = counts > 0
    return per_seq[has].mean() if has.any() else logits.sum() * 0.0


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
            temperature: float, kd_weight: float) -> tuple[torch.Tensor, dict]:
    """kd_weight * T^2 * KL(teacher_T || student_T) + (1 - kd_weight) * CE(student, labels).

    The KL is over the positions that carry a label, at temperature T (Hinton et
    al., 2015); T^2 keeps its gradient scale independent of T.
    """
    mask = labels[:, 1:] != IGNORE
    s = student_logits[:, :-1][mask].float() / temperature
    t = teacher_logits[:, :-1][mask].float() / temperature
    kl = F.kl_div(F.log_softmax(s, -1), F.log_softmax(t, -1), log_target=True, reduction="batchmean")
    kl = kl * temperature**2
    ce = masked_lm_loss(student_logits, labels)
    return kd_weight * kl + (1.0 - kd_weight) * ce, {"kl": kl.item(), "ce": ce.item()}


def ewc_penalty(deltas: dict[str, torch.Tensor], offsets: dict[str, torch.Tensor] | None,
                fisher: dict[str, torch.Tensor]) -> torch.Tensor:
    """sum_i F_i (theta_i - theta*_i)^2 over the named weights (Kirkpatrick et al., 2017).

    theta - theta* = offset + delta: `offset` is the fixed distance of the frozen
    weights from the reference (champion), `delta` the trainable change (LoRA's
    B @ A * scale); without offsets, delta is the whole distance (full-parameter
    training). Multiply by ewc_weight(...) at the call site.
    """
    total = None
    for name, d in deltas.items():
        term = (fisher[name] * (d if offsets is None else offsets[name] + d).pow(2)).sum()
        total = term if total is None else total + term
    return total if total is not None else torch.zeros(())


def ewc_weight(ewc_lambda: float, tokens_per_sample: int) -> float:
    """The factor on ewc_penalty that makes lambda scale-free: the weight of the champion's text against the new.

    The fisher stage averages squared gradients of each sample's mean per-token loss. Were the tokens drawn
    from the model, gradients at different positions would be uncorrelated (each has mean zero given what
    came before) and that Fisher would be the per-token Fisher divided by the tokens per sample, T; on
    the text's own tokens (the empirical Fisher, what the stage computes) this holds near a model that
    fits the text. Near the champion the rise of
    the per-token loss on its text is, to second order and on the diagonal, (T / 2) * sum_i F_i d_i^2.
    Weighted by lambda, the objective is new-text loss + lambda * that rise: lambda = 1 counts the old
    text as much as the new, whatever the Fisher's sample count or sequence length. The diagonal ignores
    how weights act together, so it underestimates the rise; lambda > 1 makes up for that.
    """
    return ewc_lambda * tokens_per_sample / 2


def lr_at(step: int, steps: int, warmup: int, peak: float, floor: float) -> float:
    """Linear warm-up to `peak`, then cosine decay to floor * peak at the last step."""
    if warmup and step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup - 1)
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def replay_rows(batch_size: int, replay_fraction: float) -> int:
    """How many rows of a batch come from the replay buffer; at least one when replay is on."""
    if replay_fraction <= 0:
        return 0
    return min(batch_size - 1, max(1, round(batch_size * replay_fraction))) if batch_size > 1 else 0


def topk_kd_loss(student_logits: torch.Tensor, t_idx: torch.Tensor, t_logp: torch.Tensor, labels: torch.Tensor,
                 temperature: float, kd_weight: float) -> tuple[torch.Tensor, dict]:
    """kd_loss against a cached sparse teacher: its top-k log-probs at temperature T, plus one tail bucket.

    t_idx, t_logp: [rows, seq_len - 1, k], the teacher's k most likely next tokens at every position
    and their log-probabilities over the whole vocabulary (at T). Both distributions are coarsened
    to those k tokens and "everything else", and the KL of the coarsened pair is taken: exact when
    k covers the vocabulary, a lower bound of the full KL otherwise, and it still pulls the student's
    mass off tokens the teacher ruled out (the tail bucket). Same scaling and CE mix as kd_loss.
    """
    mask = labels[:, 1:] != IGNORE
    s_logp = (student_logits[:, :-1].float() / temperature).log_softmax(-1)
    s_top = s_logp.gather(-1, t_idx)
    t_logp = t_logp.float()
    kl = (t_logp.exp() * (t_logp - s_top)).sum(-1)
    if t_idx.shape[-1] < s_logp.shape[-1]:
        p_tail = (1 - t_logp.exp().sum(-1)).clamp(min=0)  # round-off can push the top-k sum past 1
        s_tail = s_logp.scatter(-1, t_idx, float("-inf")).logsumexp(-1)
        kl = kl + torch.where(p_tail > 1e-6, p_tail * (p_tail.clamp(min=1e-6).log() - s_tail),
                              torch.zeros_like(p_tail))
    kl = kl[mask].mean() * temperature**2
    ce = masked_lm_loss(student_logits, labels)
    return kd_weight * kl + (1.0 - kd_weight) * ce, {"kl": kl.item(), "ce": ce.item()}
