"""NestedHashHead: prefix property, gradient routing, and length validation."""

from __future__ import annotations

import pytest
import torch

from nhl.models.head import NestedHashHead, check_lengths


def test_each_output_is_the_prefix_of_a_direct_linear_map():
    torch.manual_seed(0)
    head = NestedHashHead(12, [8, 16, 32])
    x = torch.randn(5, 12)
    # independent reference: x W^T + b computed by hand on the full weight
    full = x @ head.linear.weight.detach().T + head.linear.bias.detach()
    outputs = head(x)
    assert [o.shape for o in outputs] == [(5, 8), (5, 16), (5, 32)]
    for out, k in zip(outputs, [8, 16, 32], strict=True):
        torch.testing.assert_close(out, full[:, :k])
        torch.testing.assert_close(out, outputs[-1][:, :k])


def test_gradient_of_a_length_reaches_only_the_rows_it_uses():
    torch.manual_seed(0)
    head = NestedHashHead(6, [4, 8, 16])
    outputs = head(torch.randn(3, 6))
    outputs[1].pow(2).sum().backward()
    grad_w, grad_b = head.linear.weight.grad, head.linear.bias.grad
    assert grad_w[:8].abs().sum() > 0 and grad_b[:8].abs().sum() > 0
    assert torch.count_nonzero(grad_w[8:]) == 0 and torch.count_nonzero(grad_b[8:]) == 0


def test_initialisation_follows_the_spec():
    torch.manual_seed(0)
    head = NestedHashHead(512, [64, 128])
    assert torch.count_nonzero(head.linear.bias) == 0
    assert abs(head.linear.weight.std().item() - 0.01) < 0.001


def test_single_length_is_a_plain_hash_layer():
    head = NestedHashHead(10, [32])
    (out,) = head(torch.randn(2, 10))
    assert out.shape == (2, 32) and head.max_bits == 32


@pytest.mark.parametrize("bad", [[], [16, 8], [8, 8], [0, 8], [-4], [8.0, 16], [True]])
def test_invalid_lengths_are_rejected_with_a_named_error(bad):
    with pytest.raises(ValueError, match="lengths"):
        NestedHashHead(4, bad)


def test_lengths_above_the_head_size_are_rejected():
    with pytest.raises(ValueError, match="exceeds the head size 64"):
        check_lengths([32, 128], max_bits=64)
