import math

import pytest
import torch
import torch.nn.functional as F

from ratchet.models.losses import IGNORE, ewc_penalty, kd_loss, lr_at, masked_lm_loss, replay_rows, topk_kd_loss


def test_masked_lm_loss_is_cross_entropy_when_every_token_counts():
    torch.manual_seed(0)
    logits, ids = torch.randn(1, 6, 11), torch.randint(0, 11, (1, 6))
    expected = F.cross_entropy(logits[0, :-1], ids[0, 1:])
    assert torch.allclose(masked_lm_loss(logits, ids.clone()), expected)


def test_masked_lm_loss_ignores_masked_tokens_and_averages_per_sequence():
    torch.manual_seed(0)
    logits, ids = torch.randn(2, 8, 11), torch.randint(0, 11, (2, 8))
    labels = ids.clone()
    labels[0, :6] = IGNORE  # sequence 0: two scored tokens; sequence 1: seven
    per_seq = [F.cross_entropy(logits[0, 5:7], ids[0, 6:8]), F.cross_entropy(logits[1, :-1], ids[1, 1:])]
    assert torch.allclose(masked_lm_loss(logits, labels), (per_seq[0] + per_seq[1]) / 2)
    labels[0, :] = IGNORE  # a sequence without labels is skipped, not averaged in as zero
    assert torch.allclose(masked_lm_loss(logits, labels), per_seq[1])


def test_kd_loss_is_pure_ce_at_weight_zero_and_zero_kl_for_identical_logits():
    torch.manual_seed(0)
    s, ids = torch.randn(2, 5, 7), torch.randint(0, 7, (2, 5))
    loss, parts = kd_loss(s, s.clone(), ids, temperature=2.0, kd_weight=1.0)
    assert abs(parts["kl"]) < 1e-6 and abs(loss.item()) < 1e-6
    loss, _ = kd_loss(s, torch.randn(2, 5, 7), ids, temperature=2.0, kd_weight=0.0)
    assert torch.allclose(loss, masked_lm_loss(s, ids))


def test_kd_loss_pulls_student_towards_teacher():
    torch.manual_seed(0)
    teacher = torch.randn(1, 6, 9)
    student = torch.zeros(1, 6, 9, requires_grad=True)
    labels = torch.randint(0, 9, (1, 6))
    opt = torch.optim.SGD([student], lr=1.0)
    first = None
    for _ in range(200):
        loss, parts = kd_loss(student, teacher, labels, temperature=1.0, kd_weight=1.0)
        first = parts["kl"] if first is None else first
        opt.zero_grad(); loss.backward(); opt.step()
    assert parts["kl"] < 0.1 * first


def cached(teacher_logits: torch.Tensor, k: int, temperature: float):
    top = (teacher_logits[:, :-1] / temperature).log_softmax(-1).topk(k, dim=-1)
    return top.indices, top.values.half()


def test_topk_kd_loss_is_kd_loss_when_k_covers_the_vocabulary_and_a_lower_bound_below_it():
    torch.manual_seed(0)
    s, t, ids = torch.randn(2, 6, 50), 3 * torch.randn(2, 6, 50), torch.randint(0, 50, (2, 6))
    full, full_parts = kd_loss(s, t, ids, temperature=2.0, kd_weight=0.5)
    exact, exact_parts = topk_kd_loss(s, *cached(t, 50, 2.0), ids, temperature=2.0, kd_weight=0.5)
    assert exact_parts["kl"] == pytest.approx(full_parts["kl"], rel=2e-3) and exact_parts["ce"] == full_parts["ce"]
    kls = [topk_kd_loss(s, *cached(t, k, 2.0), ids, 2.0, 1.0)[1]["kl"] for k in (1, 4, 16, 50)]
    assert all(0 <= a <= b + 1e-4 for a, b in zip(kls, kls[1:])), kls  # coarser is never larger (data processing)
    assert topk_kd_loss(t, *cached(t, 8, 2.0), ids, 2.0, 1.0)[1]["kl"] == pytest.approx(0.0, abs=2e-3)


def test_topk_kd_loss_pulls_the_student_off_tokens_outside_the_teacher_top_k():
    torch.manual_seed(0)
    teacher = torch.full((1, 4, 20), -10.0)
    teacher[..., :3] = torch.tensor([4.0, 3.0, 2.0])  # the teacher puts its mass on three tokens
    student = torch.zeros(1, 4, 20, requires_grad=True)
    opt = torch.optim.SGD([student], lr=2.0)
    ids = torch.randint(0, 20, (1, 4))
    for _ in range(300):
        loss, _ = topk_kd_loss(student, *cached(teacher, 3, 1.0), ids, temperature=1.0, kd_weight=1.0)
        opt.zero_grad(); loss.backward(); opt.step()
    mass = student.detach()[:, :-1].softmax(-1)
    assert mass[..., :3].sum(-1).min() > 0.95, "the tail bucket drains the tokens the teacher ruled out"


def test_ewc_penalty_matches_its_formula_and_is_zero_at_the_reference():
    torch.manual_seed(0)
    f, off, d = torch.rand(3, 4), torch.randn(3, 4), torch.randn(3, 4)
    got = ewc_penalty({"w": d}, {"w": off}, {"w": f})
    assert torch.allclose(got, (f * (off + d) ** 2).sum())
    assert ewc_penalty({"w": -off}, {"w": off}, {"w": f}).item() == pytest.approx(0.0)


def test_lr_schedule_warms_up_peaks_and_decays_to_the_floor():
    lrs = [lr_at(s, 20, 4, 1.0, 0.1) for s in range(20)]
    assert lrs[0] == pytest.approx(0.25) and lrs[3] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:]))
    assert lrs[-1] == pytest.approx(0.1)
    assert lr_at(19, 20, 4, 1.0, 0.0) == pytest.approx(0.0)
    assert all(math.isfinite(x) and x > 0 for x in lrs)


@pytest.mark.parametrize("bs,frac,expected", [(4, 0.25, 1), (8, 0.25, 2), (4, 0.0, 0), (1, 0.5, 0), (2, 0.9, 1)])
def test_replay_rows(bs, frac, expected):
    assert replay_rows(bs, frac) == expected
