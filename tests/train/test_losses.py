import math

import pytest
import torch

from ovt.train.losses import itc_loss, positives_matrix, vc_loss

E = math.e


def test_itc_known_value_identity_logits():
    img = torch.eye(2)
    # logit_scale = 0 -> logits = I; each row's CE = log(1 + e^-1)
    loss = itc_loss(img, img.clone(), torch.tensor(0.0))
    assert loss.item() == pytest.approx(math.log(1 + 1 / E), abs=1e-6)


def test_itc_scale_and_asymmetry():
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    txt = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # both texts identical to image 0
    s = torch.tensor(math.log(2.0))  # scale 2
    # i->t: logits rows [[2,2],[0,0]]: CE = log 2 for both rows. t->i: rows [[2,0],[2,0]]: row0 CE=log(1+e^-2),
    # row1 (target 1) CE = log(1+e^2)
    expected = 0.5 * (math.log(2) + 0.5 * (math.log(1 + E**-2) + math.log(1 + E**2)))
    assert itc_loss(img, txt, s).item() == pytest.approx(expected, abs=1e-6)


def test_itc_multi_positive_uniform_targets():
    img = torch.eye(2)
    pos = positives_matrix(["obj:0", "obj:0"])
    assert pos.all()
    # rows log-softmax [-log(1+e^-1), -1-log(1+e^-1)], uniform target -> 0.5 + log(1+e^-1)
    loss = itc_loss(img, img.clone(), torch.tensor(0.0), pos)
    assert loss.item() == pytest.approx(0.5 + math.log(1 + 1 / E), abs=1e-6)
    # with distinct groups it is the plain loss
    plain = itc_loss(img, img.clone(), torch.tensor(0.0), positives_matrix(["a", "b"]))
    assert plain.item() == pytest.approx(math.log(1 + 1 / E), abs=1e-6)


def test_itc_rejects_bad_shapes():
    with pytest.raises(ValueError, match="must both be"):
        itc_loss(torch.zeros(2, 3), torch.zeros(3, 3), torch.tensor(0.0))


def test_vc_known_values_and_margin():
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    c = torch.tensor([[0.0, 1.0], [0.0, 2.0]])  # d = 1 and d = 0 (centre norm does not matter)
    loss = vc_loss(z, c, margin=0.3)
    assert loss.item() == pytest.approx((1.3 + 0.3) / 2, abs=1e-6)
    loss.backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_vc_empty_batch_is_zero_with_graph():
    z = torch.zeros(0, 4, requires_grad=True)
    loss = vc_loss(z, torch.zeros(0, 4), margin=0.3)
    assert loss.item() == 0.0 and loss.requires_grad


def test_vc_triplet_negative():
    z = torch.tensor([[1.0, 0.0]])
    pos = torch.tensor([[1.0, 1.0]])  # d_pos = 1 - 1/sqrt2
    neg = torch.tensor([[0.0, 1.0]])  # d_neg = 1
    expected = max(0.0, (1 - 1 / math.sqrt(2)) - 1 + 0.3)
    assert vc_loss(z, pos, 0.3, neg).item() == pytest.approx(expected, abs=1e-6)
    # a far negative makes the hinge inactive
    assert vc_loss(z, pos, 0.3, torch.tensor([[-1.0, 0.0]])).item() == 0.0
