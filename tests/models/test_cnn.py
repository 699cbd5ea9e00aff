import pytest
import torch
from torch import nn

from normlab.models import CNN


class PaperConvBase(nn.Module):
    """MNIST-1D's `ConvBase` (Greydanus & Kobak), copied as the reference."""

    def __init__(self, output_size=10, channels=25, linear_in=125):
        super().__init__()
        self.conv1 = nn.Conv1d(1, channels, 5, stride=2, padding=1)
        self.conv2 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        self.conv3 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        self.linear = nn.Linear(linear_in, output_size)

    def forward(self, x):
        x = x.view(-1, 1, x.shape[-1])
        h = self.conv3(self.conv2(self.conv1(x).relu()).relu()).relu()
        return self.linear(h.view(h.shape[0], -1))


def test_matches_the_mnist1d_paper_cnn_without_norm():
    torch.manual_seed(0)
    ours, ref = CNN((1, 40), 10, norm="none"), PaperConvBase()
    for p, q in zip(ours.parameters(), ref.parameters(), strict=True):
        q.data.copy_(p.data)
    x = torch.randn(6, 1, 40)
    torch.testing.assert_close(ours(x), ref(x))
    assert ours.head.in_features == 125


def test_norm_replaces_conv_bias_and_2d_variant():
    model = CNN((3, 32, 32), 10, norm="batch")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 3 and all(c.bias is None for c in convs)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    after = CNN((1, 40), 10, norm="batch", norm_position="after_act")
    assert all(m.bias is not None for m in after.modules() if isinstance(m, nn.Conv1d))


def test_too_small_input_is_a_clear_error():
    with pytest.raises(ValueError, match="at least 3 per dimension, got input_shape"):
        CNN((1, 2), 10)
    assert CNN((1, 3), 10)(torch.randn(2, 1, 3)).shape == (2, 10)  # the smallest that fits
