"""The towers' pooled pass (the last block computes the pooled token only; the text batch is cut after its
last end-of-text token) gives the features and gradients of the full pass over every token."""

from __future__ import annotations

import pytest
import torch

import clipmodule
from clipmodule.models.clip import CLIP

CAPTIONS = ["a cat", "a photo of a very big dog on the green grass at noon", "x", "two red circles"]
TEXT_CASES = {  # name: text-config overrides
    "causal-eot": {},
    "bidirectional-eot": {"causal": False},
    "bidirectional-last": {"causal": False, "pool": "last"},
}


def full_image(model: CLIP, images: torch.Tensor) -> torch.Tensor:
    """The class token read after every token went through every block."""
    return model.visual.forward_features(images)[:, 0] @ model.visual.proj


def full_text(model: CLIP, text: torch.Tensor) -> torch.Tensor:
    """The pooled token read after every position (padding included) went through every block."""
    x = model.token_embedding(text) + model.positional_embedding[: text.shape[1]]
    x = model.ln_final(model.transformer(x, causal=model.config.text.causal))
    pooled = torch.full((len(x),), x.shape[1] - 1) if model.config.text.pool == "last" else text.argmax(-1)
    return x[torch.arange(len(x)), pooled] @ model.text_projection


def tiny_model(text_overrides: dict, checkpointing: bool) -> CLIP:
    torch.manual_seed(0)
    overrides = {"vision": {"layers": 3}, "text": {"layers": 3, **text_overrides}}
    model = clipmodule.create_model("tiny-vit", **overrides).train()
    model.set_grad_checkpointing(checkpointing)
    return model


def gradients(model: CLIP, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad()
    loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def assert_close(ours: dict[str, torch.Tensor], full: dict[str, torch.Tensor]) -> None:
    assert ours.keys() == full.keys()
    for name, value in full.items():
        scale = max(value.abs().max().item(), 1.0)
        assert (ours[name] - value).abs().max().item() <= 1e-5 * scale, name


@pytest.mark.parametrize("checkpointing", [False, True])
@pytest.mark.parametrize("case", sorted(TEXT_CASES))
def test_pooled_pass_equals_the_full_pass(one_thread, case, checkpointing):
    model = tiny_model(TEXT_CASES[case], checkpointing)
    images, text = torch.randn(len(CAPTIONS), 3, 32, 32), clipmodule.tokenize(CAPTIONS)
    image_ours, text_ours = model.encode_image(images), model.encode_text(text)
    image_full, text_full = full_image(model, images), full_text(model, text)
    assert torch.allclose(image_ours, image_full, atol=1e-5) and torch.allclose(text_ours, text_full, atol=1e-5)
    weights = torch.randn_like(text_full)  # a loss that weighs every feature differently
    assert_close(gradients(model, image_ours.square().sum() + (weights * text_ours).sum()),
                 gradients(model, image_full.square().sum() + (weights * text_full).sum()))


def test_causal_text_is_cut_after_the_batch_last_end_of_text(one_thread):
    model = tiny_model({}, checkpointing=False).eval()
    lengths: list[int] = []
    model.transformer.register_forward_pre_hook(lambda module, args: lengths.append(args[0].shape[1]))
    text = clipmodule.tokenize(CAPTIONS)
    with torch.no_grad():
        features = model.encode_text(text)
    assert lengths == [int(text.argmax(-1).max()) + 1] and lengths[0] < text.shape[1]
    with torch.no_grad():
        assert torch.allclose(features, full_text(model, text), atol=1e-6)
    # no cut for a bidirectional tower: padding is attended to there
    model = tiny_model({"causal": False}, checkpointing=False).eval()
    model.transformer.register_forward_pre_hook(lambda module, args: lengths.append(args[0].shape[1]))
    with torch.no_grad():
        model.encode_text(text)
    assert lengths[-1] == text.shape[1]


def test_a_traced_model_reads_captions_longer_than_the_traced_ones(one_thread):
    model = tiny_model({}, checkpointing=False).eval()
    short, long = clipmodule.tokenize(["a cat"] * 2), clipmodule.tokenize([CAPTIONS[1]] * 2)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        traced = torch.jit.trace(model, (images, short), check_trace=False)
        assert torch.allclose(traced(images, long)[0], model(images, long)[0], atol=1e-5)
