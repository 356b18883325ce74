"""lora_helpers.quantization on bitsandbytes' NF4 (CPU): what the course relies on bitsandbytes for, and the
requantization measurement that bitsandbytes does not make."""

import pytest
import torch

bnb_f = pytest.importorskip("bitsandbytes.functional")

from lora_helpers import CourseError  # noqa: E402
from lora_helpers.quantization import BLOCK, _nf4, requantization_loss  # noqa: E402

LEVELS = bnb_f.get_4bit_type("nf4", device="cpu").float()


def test_bitsandbytes_nf4_levels_are_the_sixteen_of_qlora():
    assert LEVELS.numel() == 16 and LEVELS[0] == -1.0 and LEVELS[7] == 0.0 and LEVELS[-1] == 1.0
    assert torch.equal(LEVELS, LEVELS.sort().values)
    assert LEVELS[8].item() == pytest.approx(0.0796, abs=1e-4) and LEVELS[1].item() == pytest.approx(-0.6962, abs=1e-4)


def test_roundtrip_keeps_levels_exactly_and_rounds_to_the_nearest():
    block = (LEVELS * 3.0).repeat(BLOCK // 16)           # one block whose absmax is 3, every value on a level
    assert torch.equal(_nf4(block, BLOCK, double_quant=False), block)
    x = torch.zeros(BLOCK)
    x[:4] = torch.tensor([3.0, 0.1, -0.2, 1.0])          # absmax 3: 0.1/3 = 0.033 -> level 0.0 (nearest)
    out = _nf4(x, BLOCK, double_quant=False)
    assert out[0] == 3.0 and out[1] == 0.0
    nearest = (LEVELS[(x[:4, None] / 3.0 - LEVELS).abs().argmin(-1)] * 3.0)
    assert torch.allclose(out[:4], nearest)


@pytest.mark.parametrize("double_quant", [False, True])
def test_roundtrip_error_is_at_most_half_the_widest_gap_of_each_block(double_quant):
    torch.manual_seed(0)
    x = torch.randn(96, 64)
    out = _nf4(x, BLOCK, double_quant)
    assert out.shape == x.shape and out.dtype == torch.float32
    half_gap = (LEVELS[1:] - LEVELS[:-1]).max().item() / 2
    absmax = x.view(-1, BLOCK).abs().amax(1, keepdim=True)
    slack = 1.02 if double_quant else 1.0 + 1e-6   # double quantization rounds each block's scale in 8 bits
    assert ((out - x).view(-1, BLOCK).abs() <= absmax * half_gap * slack).all()
    assert 0.02 < ((out - x).norm() / x.norm()).item() < 0.2   # 4 bits: a few percent, not nothing, not noise


def test_a_tiny_update_is_erased_and_a_large_one_survives():
    torch.manual_seed(0)
    w = torch.randn(64, 64)
    tiny = requantization_loss(w, 1e-4 * torch.randn(64, 64))       # far finer than the 4-bit grid: lost
    assert tiny["erased"] > 0.5 and tiny["relative_error"] > 0.9 and tiny["delta_to_step"] < 0.01
    large = requantization_loss(w, 2.0 * torch.randn(64, 64))
    assert large["erased"] < 0.2 and large["relative_error"] < 0.5
    assert tiny["n"] == large["n"] == 64 * 64


def test_an_update_already_on_the_grid_survives_exactly():
    base = torch.zeros(1, BLOCK)
    base[0, 0] = 4.0                                      # absmax 4: levels 1.0 and 0.0 of a scale-4 block
    delta = torch.zeros(1, BLOCK)
    delta[0, 1] = 4.0 * LEVELS[9].item()                  # moves one value exactly onto a level
    loss = requantization_loss(base, delta, double_quant=False)
    assert loss["relative_error"] < 1e-6 and loss["erased"] == 0.0


@pytest.mark.parametrize("bad", [torch.arange(4), "W"])
def test_bad_input_is_explained(bad):
    with pytest.raises(CourseError, match="tensor"):
        requantization_loss(bad, torch.zeros(4))


def test_shape_mismatch_and_block_are_explained():
    with pytest.raises(CourseError, match="cùng kích thước"):
        requantization_loss(torch.zeros(4, 4), torch.zeros(4, 3))
    with pytest.raises(CourseError, match="khối 64"):
        requantization_loss(torch.zeros(4, 4), torch.zeros(4, 4), block=4)
