import torch
import torch.nn.functional as F

from ovt.model.config import VIFormerParams
from ovt.model.viformer import VIFormer


def _vif(**kw):
    torch.manual_seed(0)
    return VIFormer(16, VIFormerParams(heads=4, ffn=32, dropout=0.0, **kw)).eval()


def test_code_mix_formula():
    v = _vif(mix="code", alpha=0.1, normalize_input=False)
    z = torch.randn(5, 16)
    expect = F.normalize(z + 0.1 * v.residual(z), dim=-1)
    torch.testing.assert_close(v(z), expect)


def test_paper_mix_formula_and_equivalence_to_code():
    z = torch.randn(5, 16)
    paper = _vif(mix="paper", alpha=0.1, normalize_input=False)
    torch.testing.assert_close(paper(z), F.normalize(0.1 * paper.residual(z) + 0.9 * z, dim=-1))
    # after normalisation, the paper form with alpha equals the code form with alpha / (1 - alpha)
    code = _vif(mix="code", alpha=0.1 / 0.9, normalize_input=False)
    torch.testing.assert_close(paper(z), code(z))


def test_normalised_input_and_length_one_sequence():
    v = _vif(alpha=0.1, normalize_input=True)
    z = torch.randn(5, 16) * 7
    zn = F.normalize(z, dim=-1)
    torch.testing.assert_close(v(z), F.normalize(zn + 0.1 * v.residual(zn), dim=-1))
    # a length-1 sequence: each sample's output is independent of the rest of the batch
    torch.testing.assert_close(v(z)[:2], v(z[:2]))


def test_parameter_count_formula():
    d, ffn = 512, 2048
    v = VIFormer(d, VIFormerParams())
    assert sum(p.numel() for p in v.parameters()) == 2 * (4 * d * d + (2 * ffn + 9) * d + ffn) == 6_304_768


def test_scale_zero_is_identity_after_norm():
    v = _vif()
    v.scale = 0.0
    z = torch.randn(3, 16)
    torch.testing.assert_close(v(z), F.normalize(z, dim=-1))
