"""The losses on one process: the paper's formula, open_clip's numbers, and what training needs from them."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from clipmodule.loss import clip_loss, siglip_loss


def _features(n: int = 6, dim: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images = F.normalize(torch.randn(n, dim, generator=generator), dim=-1)
    texts = F.normalize(torch.randn(n, dim, generator=generator), dim=-1)
    return images, texts


def test_clip_loss_is_the_symmetric_cross_entropy_of_the_paper():
    images, texts = _features()
    scale = torch.tensor(1 / 0.07)
    logits = scale * images @ texts.t()
    expected = 0.0
    for i in range(6):  # row i's correct column is i, in both directions
        expected += -torch.log_softmax(logits[i], 0)[i] / 12 - torch.log_softmax(logits[:, i], 0)[i] / 12
    assert torch.allclose(clip_loss(images, texts, scale), expected, atol=1e-6)


def test_clip_loss_is_low_for_matching_pairs_and_high_for_shuffled_ones():
    images, _ = _features()
    scale = torch.tensor(100.0)
    assert clip_loss(images, images, scale) < 1e-3
    assert clip_loss(images, images.roll(1, dims=0), scale) > 10


def test_clip_loss_equals_open_clip():
    open_clip_loss = pytest.importorskip("open_clip.loss")
    images, texts = _features()
    scale = torch.tensor(14.3)
    expected = open_clip_loss.ClipLoss()(images, texts, scale)
    assert torch.allclose(clip_loss(images, texts, scale), expected, atol=1e-6)
    assert torch.allclose(clip_loss(images, texts, scale, local_loss=True), expected, atol=1e-6)


def test_siglip_loss_equals_open_clip_and_the_formula():
    open_clip_loss = pytest.importorskip("open_clip.loss")
    images, texts = _features()
    scale, bias = torch.tensor(10.0), torch.tensor(-10.0)
    expected = open_clip_loss.SigLipLoss()(images, texts, scale, bias)
    ours = siglip_loss(images, texts, scale, bias)
    assert torch.allclose(ours, expected, atol=1e-5)
    signs = 2 * torch.eye(6) - 1
    by_hand = -F.logsigmoid(signs * (scale * images @ texts.t() + bias)).sum() / 6
    assert torch.allclose(ours, by_hand, atol=1e-6)


def test_losses_give_gradients_to_scale_bias_and_features():
    images, texts = _features()
    images.requires_grad_(True)
    log_scale = torch.tensor(math.log(1 / 0.07), requires_grad=True)
    bias = torch.tensor(-10.0, requires_grad=True)
    (clip_loss(images, texts, log_scale.exp()) + siglip_loss(images, texts, log_scale.exp(), bias)).backward()
    assert log_scale.grad != 0 and bias.grad != 0 and images.grad.abs().sum() > 0
