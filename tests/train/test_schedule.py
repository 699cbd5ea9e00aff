import math

import pytest
import torch

from normlab.train import build_scheduler, lr_factor
from normlab.train.config import ScheduleConfig


def _factors(schedule, total=100, per_epoch=10):
    return [lr_factor(s, schedule, total, per_epoch) for s in range(total)]


def test_constant():
    assert set(_factors(ScheduleConfig())) == {1.0}


def test_cosine_matches_torch_cosine_annealing():
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=0.5)
    ref = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=100, eta_min=0.5 * 0.1)
    expected = []
    for _ in range(100):
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        ref.step()
    ours = [0.5 * f for f in _factors(ScheduleConfig(name="cosine", final_lr_fraction=0.1))]
    assert ours == pytest.approx(expected, rel=1e-9)


def test_warmup_linear():
    f = _factors(ScheduleConfig(name="warmup_linear", warmup_steps=10, final_lr_fraction=0.0))
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert f[10] == pytest.approx(1.0) and f[55] == pytest.approx(0.5)
    assert all(a >= b for a, b in zip(f[10:], f[11:]))


def test_onecycle_rises_from_a_25th_then_anneals():
    f = _factors(ScheduleConfig(name="onecycle", final_lr_fraction=0.01))
    assert f[0] == pytest.approx(1 / 25 + (1 - 1 / 25) / 30)
    assert max(f) == pytest.approx(1.0) and f[29] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(f[:29], f[1:30]))  # rising for 30% of the steps
    assert f[-1] == pytest.approx(0.01, abs=1e-3)


def test_exponential_multiplies_by_gamma_per_epoch():
    f = _factors(ScheduleConfig(name="exponential", gamma_per_epoch=10.0))
    assert f[0] == 1.0 and f[10] == pytest.approx(10.0) and f[25] == pytest.approx(10**2.5)


def test_scheduler_steps_optimizer_lr():
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    sched = build_scheduler(opt, ScheduleConfig(name="cosine"), 4, 2)
    lrs = []
    for _ in range(4):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.5 * (1 + math.cos(math.pi * s / 4)) for s in range(4)])
