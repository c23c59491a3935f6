import pytest
import torch
from torch import nn

from ovt.train.config import OptimParams
from ovt.train.optim import build_optimizer, build_scheduler, cosine_with_warmup, param_groups


class _M(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.logit_scale = nn.Parameter(torch.tensor(1.0))
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)


def test_no_decay_on_gains_biases_scale():
    m = _M()
    groups = param_groups(m, OptimParams())
    decay = {id(p) for p in groups[0]["params"]}
    assert decay == {id(m.lin.weight)}
    assert groups[1]["weight_decay"] == 0.0 and len(groups[1]["params"]) == 4  # bias, norm w/b, logit_scale
    official = param_groups(m, OptimParams(wd_on_all=True))
    assert len(official) == 1 and len(official[0]["params"]) == 5  # frozen params never included


def test_cosine_warmup_values():
    assert cosine_with_warmup(0, 100, 10) == pytest.approx(0.1)
    assert cosine_with_warmup(9, 100, 10) == pytest.approx(1.0)
    assert cosine_with_warmup(55, 100, 10) == pytest.approx(0.5)
    assert cosine_with_warmup(100, 100, 10) == pytest.approx(0.0)
    assert cosine_with_warmup(100, 100, 10, min_ratio=0.1) == pytest.approx(0.1)


def test_scheduler_state_roundtrip():
    m = _M()
    cfg = OptimParams(lr=1.0, warmup_steps=2)
    opt = build_optimizer(m, cfg)
    sch = build_scheduler(opt, 10, cfg)
    for _ in range(4):
        opt.step()
        sch.step()
    opt2 = build_optimizer(m, cfg)
    sch2 = build_scheduler(opt2, 10, cfg)
    sch2.load_state_dict(sch.state_dict())
    assert sch2.get_last_lr() == sch.get_last_lr()
    assert opt.param_groups[0]["betas"] == (0.9, 0.98) and opt.param_groups[0]["eps"] == 1e-6


def test_epoch_cosine_is_torch_cosine_annealing_per_epoch():
    from ovt.train.config import OptimParams
    from ovt.train.optim import build_scheduler

    cfg = OptimParams(lr=1.0, warmup_steps=0, schedule="epoch_cosine", t_max_epochs=30)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = build_scheduler(opt, total_steps=100, cfg=cfg, steps_per_epoch=4)
    ref_opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    ref = torch.optim.lr_scheduler.CosineAnnealingLR(ref_opt, T_max=30)
    for epoch in range(25):
        lrs = []
        for _ in range(4):  # constant within an epoch
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        assert lrs == pytest.approx([ref_opt.param_groups[0]["lr"]] * 4), epoch
        ref_opt.step()
        ref.step()
