import pytest
import torch
import torch.nn.functional as F

from normlab.data import crop_flip, draw_crop_flip


def _reference(x, params, padding):
    # One sample at a time, with slicing and torch.flip: independent of the gather in crop_flip.
    out = []
    height, width = x.shape[-2:]
    for sample, (dy, dx, flip) in zip(x, params.tolist()):
        padded = F.pad(sample, (padding,) * 4)
        crop = padded[:, dy : dy + height, dx : dx + width]
        out.append(torch.flip(crop, dims=[-1]) if flip else crop)
    return torch.stack(out)


@pytest.mark.parametrize("padding", [0, 1, 4])
def test_crop_flip_matches_per_sample_reference(padding):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(9, 3, 6, 5, generator=gen)
    params = draw_crop_flip(9, padding, gen)
    assert torch.equal(crop_flip(x, params, padding), _reference(x, params, padding))


def test_draw_ranges_and_every_case_occurs():
    params = draw_crop_flip(2000, 4, torch.Generator().manual_seed(1))
    assert params.shape == (2000, 3) and params.dtype == torch.int64
    assert set(params[:, 0].tolist()) == set(range(9)) == set(params[:, 1].tolist())
    assert set(params[:, 2].tolist()) == {0, 1}


def test_identity_parameters_leave_the_image_alone():
    x = torch.randn(2, 3, 4, 4)
    params = torch.tensor([[2, 2, 0], [2, 2, 0]])  # centre crop of a 2-padded image, no flip
    assert torch.equal(crop_flip(x, params, 2), x)
    flipped = crop_flip(x, torch.tensor([[2, 2, 1], [2, 2, 1]]), 2)
    assert torch.equal(flipped, x.flip(-1))


def test_crop_flip_needs_images():
    with pytest.raises(ValueError, match=r"expects image batches \(B, C, H, W\), got 3D"):
        crop_flip(torch.zeros(2, 3, 4), torch.zeros(2, 3, dtype=torch.long), 1)
