import math

import pytest
import torch
import torch.nn.functional as F

from stages.models.losses import IGNORE, ewc_penalty, kd_loss, lr_at, masked_lm_loss, replay_rows


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
