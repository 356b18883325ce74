import pytest
import torch

from lora_helpers import CourseError
from lora_helpers.quantization import NF4_LEVELS, nf4_roundtrip, requantization_loss


def test_levels_are_the_sixteen_nf4_values():
    assert len(NF4_LEVELS) == 16 and NF4_LEVELS[0] == -1.0 and NF4_LEVELS[7] == 0.0 and NF4_LEVELS[-1] == 1.0
    assert list(NF4_LEVELS) == sorted(NF4_LEVELS)


def test_roundtrip_keeps_levels_exactly_and_rounds_to_the_nearest():
    levels = torch.tensor(NF4_LEVELS) * 3.0            # one block whose absmax is 3
    assert torch.equal(nf4_roundtrip(levels, block=16), levels)
    x = torch.tensor([3.0, 0.1, -0.2, 1.0])            # absmax 3: 0.1/3 = 0.033 -> level 0.0 (nearest)
    out = nf4_roundtrip(x, block=4)
    assert out[0] == 3.0 and out[1] == 0.0
    assert (out - x).abs().max() <= 3.0 * 0.17          # never more than half the widest gap


def test_roundtrip_pads_the_last_block_and_keeps_shape():
    x = torch.randn(5, 7)
    out = nf4_roundtrip(x, block=64)
    assert out.shape == x.shape and out.dtype == torch.float32


def test_a_tiny_update_is_erased_and_a_large_one_survives():
    torch.manual_seed(0)
    w = torch.randn(64, 64)
    tiny = requantization_loss(w, 1e-4 * torch.randn(64, 64))       # far finer than the 4-bit grid: lost
    assert tiny["erased"] > 0.5 and tiny["relative_error"] > 0.9 and tiny["delta_to_step"] < 0.01
    large = requantization_loss(w, 2.0 * torch.randn(64, 64))
    assert large["erased"] < 0.2 and large["relative_error"] < 0.5


@pytest.mark.parametrize("bad", [torch.arange(4), "W"])
def test_bad_input_is_explained(bad):
    with pytest.raises(CourseError, match="tensor số thực"):
        nf4_roundtrip(bad)


def test_an_update_already_on_the_grid_survives_exactly():
    base = nf4_roundtrip(torch.tensor([[4.0, 0.0, 0.0, 0.0]]), block=4)   # levels 1.0 and 0.0 of a scale-4 block
    delta = torch.tensor([[0.0, 4.0 * NF4_LEVELS[9], 0.0, 0.0]])            # moves one value exactly onto a level
    loss = requantization_loss(base, delta, block=4)
    assert loss["relative_error"] < 1e-6 and loss["erased"] == 0.0


def test_shape_mismatch_is_explained():
    with pytest.raises(CourseError, match="cùng kích thước"):
        requantization_loss(torch.zeros(4, 4), torch.zeros(4, 3))
