"""Training options that must not change the numbers: gradient checkpointing equals the eager step (loss,
gradients and BatchNorm buffers), patch dropout 0 is the plain model, bf16 autocast stays close to fp32."""

from __future__ import annotations

import copy

import pytest
import torch

from clipmodule.loss import clip_loss
from clipmodule.train.module import build_network

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _batch(image_size: int, n: int = 4):
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(n, 3, image_size, image_size, generator=generator)
    tokens = torch.randint(1, 400, (n, 77), generator=generator)
    tokens[:, 12:] = 0
    tokens[:, 11] = 49407
    return images, tokens


def _step(model, images, tokens) -> torch.Tensor:
    model.train()
    loss = clip_loss(model.encode_image(images, normalize=True), model.encode_text(tokens, normalize=True),
                     model.logit_scale.exp())
    loss.backward()
    return loss.detach()


@pytest.mark.parametrize("name", ["tiny-rn", "tiny-vit"])
def test_gradient_checkpointing_gives_the_eager_loss_gradients_and_buffers(name):
    torch.manual_seed(0)
    eager = build_network(name)
    checkpointed = copy.deepcopy(eager)
    checkpointed.set_grad_checkpointing(True)
    images, tokens = _batch(eager.config.vision.image_size)
    for _ in range(2):  # two steps: the buffers after each must agree
        assert torch.allclose(_step(eager, images, tokens), _step(checkpointed, images, tokens), atol=1e-6)
    for (key, a), b in zip(eager.named_parameters(), checkpointed.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-6, rtol=1e-5), key
    buffers = dict(checkpointed.named_buffers())
    for key, value in eager.named_buffers():
        assert torch.allclose(value.float(), buffers[key].float(), atol=1e-6), key
    if name == "tiny-rn":  # BatchNorm counted each batch once, not again in the backward recomputation
        assert int(buffers["visual.layer1.0.bn1.num_batches_tracked"]) == 2


def test_patch_dropout_zero_is_the_plain_model_and_dropout_keeps_the_token_count():
    torch.manual_seed(0)
    plain = build_network("tiny-vit")
    dropped = copy.deepcopy(plain)
    dropped.visual.patch_dropout = 0.5
    images, _ = _batch(32)
    plain.train()
    dropped.train()
    with torch.no_grad():
        assert torch.equal(plain.encode_image(images), plain.eval().encode_image(images))  # 0 drops nothing
        plain.train()
        assert not torch.allclose(plain.encode_image(images), dropped.encode_image(images), atol=1e-3)
        dropped.eval()
        assert torch.equal(plain.eval().encode_image(images), dropped.encode_image(images))  # eval: no dropout
    dropped.train()
    tokens = torch.randn(4, 1 + 16, 128)  # class token + a 4x4 grid of patches
    kept = dropped.visual.drop_patches(tokens)
    assert kept.shape == (4, 1 + 8, 128) and torch.equal(kept[:, 0], tokens[:, 0])
    rows = [{tuple(t.tolist()) for t in tokens[i, 1:]} for i in range(4)]
    assert all({tuple(t.tolist()) for t in kept[i, 1:]} <= rows[i] for i in range(4))  # real patches, no repeats
    assert all(len({tuple(t.tolist()) for t in kept[i, 1:]}) == 8 for i in range(4))


def test_bf16_autocast_loss_is_within_2_percent_of_fp32():
    torch.manual_seed(0)
    model = build_network("tiny-vit").train()
    images, tokens = _batch(32, n=8)
    with torch.no_grad():
        full = clip_loss(model.encode_image(images, normalize=True), model.encode_text(tokens, normalize=True),
                         model.logit_scale.exp())
        with torch.autocast("cpu", dtype=torch.bfloat16):
            image_features = model.encode_image(images, normalize=True)
            text_features = model.encode_text(tokens, normalize=True)
        assert image_features.dtype == torch.bfloat16  # autocast really ran the towers in bf16
        half = clip_loss(image_features.float(), text_features.float(), model.logit_scale.exp())
    assert abs(half.item() - full.item()) <= 0.02 * full.item(), (half.item(), full.item())
