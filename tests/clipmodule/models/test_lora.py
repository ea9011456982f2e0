"""model.lora: adapters on both towers start as the base model, are all that trains, and fold into plain weights
that give the adapted model's outputs, the packed q/k/v projection included."""

from __future__ import annotations

import pytest
import torch

from clipmodule.errors import ClipModuleError
from clipmodule.models import create_model
from clipmodule.models.lora import LoRAConfig, apply_lora, has_adapters, merge_lora_state_dict, merged_model
from clipmodule.train.lock import LockConfig
from clipmodule.train.module import ClipLitModule

pytestmark = pytest.mark.usefixtures("one_thread")


def _inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(3, 3, 32, 32, generator=generator)
    text = torch.randint(1, 49000, (3, 77), generator=generator)
    text[:, 9] = 49407  # end of text
    return images, text


def _features(model, images, text):
    with torch.no_grad():
        return model.encode_image(images), model.encode_text(text)


def _randomise_b(model, seed: int = 1) -> None:
    """B starts at zero (the adapted model starts as the base): random B makes every adapter matter."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("lora.b"):
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)


def test_adapters_start_as_the_base_model_and_only_they_train():
    torch.manual_seed(0)
    model = create_model("tiny-vit").eval()
    images, text = _inputs()
    before = _features(model, images, text)
    adapted = apply_lora(model, LoRAConfig(rank=4))
    assert adapted == 16  # 2 towers x 2 blocks x (packed q/k/v, out, fc1, fc2)
    after = _features(model, images, text)
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    assert trainable and all(name.endswith(("lora.a", "lora.b")) for name in trainable)
    assert "logit_scale" not in trainable and "visual.transformer.resblocks.0.attn.in_proj_lora.a" in trainable
    assert "transformer.resblocks.1.mlp.c_proj.lora.b" in trainable  # the text tower's too


@pytest.mark.parametrize("targets", [("q", "k", "v", "out", "fc1", "fc2"), ("q", "v"), ("k", "fc2")])
def test_the_merged_model_gives_the_adapted_outputs(targets):
    torch.manual_seed(0)
    base = create_model("tiny-vit").eval()
    base_state = {key: value.clone() for key, value in base.state_dict().items()}
    apply_lora(base, LoRAConfig(rank=4, alpha=8, targets=targets))
    _randomise_b(base)
    images, text = _inputs()
    adapted = _features(base, images, text)
    merged = merged_model(base).eval()
    assert not has_adapters(merged.state_dict())
    plain = _features(merged, images, text)
    for a, b in zip(adapted, plain):
        assert (a - b).abs().max() <= 1e-5
    original = create_model("tiny-vit").eval()
    original.load_state_dict(base_state)
    assert (_features(original, images, text)[0] - adapted[0]).abs().max() > 1e-3  # the adapters changed it
    packed = merged.state_dict()["visual.transformer.resblocks.0.attn.in_proj_weight"]
    before = base_state["visual.transformer.resblocks.0.attn.in_proj_weight"]
    for index, part in enumerate("qkv"):  # only the chosen thirds of the packed rows moved
        rows = slice(index * 128, (index + 1) * 128)
        assert torch.equal(packed[rows], before[rows]) == (part not in targets), part


def test_the_pooled_pass_of_an_adapted_tower_is_the_full_pass():
    """The text tower computes only the end-of-text token in its last block (`Transformer(pooled=...)`): the
    packed adapter's query and key/value thirds are added there separately."""
    torch.manual_seed(0)
    model = create_model("tiny-vit").eval()
    apply_lora(model, LoRAConfig(rank=2, targets=("q", "v")))
    _randomise_b(model)
    _, text = _inputs()
    with torch.no_grad():
        x = model.token_embedding(text) + model.positional_embedding
        full = model.transformer(x, causal=True)[torch.arange(3), text.argmax(-1)]
        pooled = model.transformer(x, causal=True, pooled=text.argmax(-1))
    assert (full - pooled).abs().max() <= 1e-5


def test_a_broken_adapter_and_bad_options_are_one_line():
    model = create_model("tiny-vit")
    apply_lora(model, LoRAConfig(rank=2))
    state = model.state_dict()
    del state["visual.transformer.resblocks.0.mlp.c_fc.lora.scale"]
    with pytest.raises(ClipModuleError, match=r"adapter of visual.transformer.resblocks.0.mlp.c_fc.weight lacks scale"):
        merge_lora_state_dict(state, "x.ckpt")
    with pytest.raises(ClipModuleError, match="already has LoRA adapters"):
        apply_lora(model, LoRAConfig())
    with pytest.raises(ClipModuleError, match=r"model.lora.targets \['qkv'\]: choose from q, k, v"):
        apply_lora(create_model("tiny-vit"), LoRAConfig(targets=("qkv",)))
    with pytest.raises(ClipModuleError, match=r"the image tower has none of \['fc1', 'fc2'\] to adapt; choose other"):
        apply_lora(create_model("tiny-rn"), LoRAConfig(targets=("fc1", "fc2"), pools=True))  # the pool has no MLP
    with pytest.raises(ClipModuleError, match="no transformer blocks to adapt; leave 'image' out .* model.lora.pools"):
        apply_lora(create_model("tiny-rn"), LoRAConfig())  # the pool only with model.lora.pools
    apply_lora(create_model("tiny-rn"), LoRAConfig(towers=("text",)))  # the ResNet's text tower is a transformer
    with pytest.raises(ClipModuleError, match="model.lock locks the image tower that model.lora adapts"):
        ClipLitModule(create_model("tiny-vit"), lora=LoRAConfig(), lock=LockConfig(lock_image=True))


def test_the_module_trains_the_adapters_only():
    torch.manual_seed(0)
    module = ClipLitModule(create_model("tiny-vit"), lora=LoRAConfig(rank=2, dropout=0.1))
    frozen = {name: value.clone() for name, value in module.model.state_dict().items() if "lora" not in name}
    optimizer = module.configure_optimizers()["optimizer"]
    held = {id(parameter) for group in optimizer.param_groups for parameter in group["params"]}
    assert held == {id(parameter) for name, parameter in module.model.named_parameters() if "lora" in name}
    images, text = _inputs()
    for _ in range(2):
        module.contrastive_loss(images, text).backward()
        optimizer.step()
        optimizer.zero_grad()
    assert all(torch.equal(value, module.model.state_dict()[name]) for name, value in frozen.items())
    assert module.model.transformer.resblocks[0].attn.in_proj_lora.b.abs().sum() > 0
    assert module.hparams["lora"]["rank"] == 2


def test_a_timm_vit_tower_gets_adapters_on_its_packed_qkv_and_merges():
    torch.manual_seed(0)
    model = create_model("tiny-vit", vision={"timm_model_name": "vit_tiny_patch16_224", "timm_pool": "token",
                                             "image_size": 224}).eval()
    apply_lora(model, LoRAConfig(rank=2, towers=("image",), targets=("k", "fc2")))
    adapter = model.visual.trunk.blocks[0].attn.qkv.lora
    assert adapter.chunks.tolist() == [1] and adapter.total_chunks == 3
    _randomise_b(model)
    images = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        adapted = model.encode_image(images)
        merged = merged_model(model).eval().encode_image(images)
    assert (adapted - merged).abs().max() <= 1e-5


def test_a_hugging_face_text_tower_gets_adapters_on_its_separate_projections(tmp_path):
    from transformers import XLMRobertaConfig

    XLMRobertaConfig(vocab_size=300, hidden_size=48, num_hidden_layers=2, num_attention_heads=2, intermediate_size=96,
                     max_position_embeddings=40, pad_token_id=1).save_pretrained(tmp_path / "xlmr")
    torch.manual_seed(0)
    model = create_model("tiny-vit", embed_dim=32, text={"hf_model_name": str(tmp_path / "xlmr"),
                                                         "context_length": 16}).eval()
    assert apply_lora(model, LoRAConfig(rank=2, towers=("text",), targets=("q", "v", "fc2"))) == 2 * 3
    assert model.text.transformer.encoder.layer[1].attention.self.value.lora.total_chunks == 1
    _randomise_b(model)
    text = torch.randint(3, 300, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        adapted = model.encode_text(text)
        assert (merged_model(model).eval().encode_text(text) - adapted).abs().max() <= 1e-5


def test_a_resnet_towers_attention_pool_gets_adapters_and_merges():
    torch.manual_seed(0)
    model = create_model("tiny-rn").eval()
    assert apply_lora(model, LoRAConfig(rank=2, towers=("image",), pools=True)) == 4  # q, k, v, out of the pool
    trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    assert {f"visual.attnpool.{name}.lora.a" for name in ("q_proj", "k_proj", "v_proj", "c_proj")} <= trainable
    _randomise_b(model)
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        adapted = model.encode_image(images)
        merged = merged_model(model).eval().encode_image(images)
    assert (adapted - merged).abs().max() <= 1e-5
    original = create_model("tiny-rn").eval()
    original.load_state_dict(merge_lora_state_dict({k: v for k, v in model.state_dict().items()
                                                    if "lora" not in k}))
    with torch.no_grad():
        assert (original.encode_image(images) - adapted).abs().max() > 1e-4  # the adapters changed it


@pytest.mark.parametrize("targets", [("q", "k", "v", "out", "fc1", "fc2"), ("v", "fc1")])
def test_siglips_map_head_gets_adapters_its_packed_kv_in_halves_and_merges(targets):
    torch.manual_seed(0)
    from tests.clipmodule.models.open_clip_tiny import TINY_SIGLIP  # registers the tiny SigLIP trunk with timm

    model = create_model("tiny-vit", embed_dim=96, vision={"timm_model_name": TINY_SIGLIP, "timm_pool": "map",
                                                           "timm_proj": "none", "image_size": 224}).eval()
    apply_lora(model, LoRAConfig(rank=2, towers=("image",), targets=targets, pools=True))
    head = model.visual.trunk.attn_pool
    assert head.kv.lora.total_chunks == 2 and head.kv.lora.chunks.tolist() == [index for index, name in
                                                                              enumerate("kv") if name in targets]
    assert hasattr(head.mlp.fc1, "lora") and hasattr(head.q, "lora") == ("q" in targets)
    before = head.kv.weight.detach().clone()
    _randomise_b(model)
    images = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        adapted = model.encode_image(images)
        merged = merged_model(model).eval()
        assert (adapted - merged.encode_image(images)).abs().max() <= 1e-5
    packed = merged.visual.trunk.attn_pool.kv.weight
    width = packed.shape[0] // 2
    assert torch.equal(packed[:width], before[:width]) == ("k" not in targets)  # only the chosen half moved
    assert not torch.equal(packed[width:], before[width:])


def test_pools_are_adapted_on_request_only():
    """By default a MAP head stays frozen, without adapters (the state dict of a run from before `pools`)."""
    torch.manual_seed(0)
    from tests.clipmodule.models.open_clip_tiny import TINY_SIGLIP  # registers the tiny SigLIP trunk with timm

    model = create_model("tiny-vit", embed_dim=96, vision={"timm_model_name": TINY_SIGLIP, "timm_pool": "map",
                                                           "timm_proj": "none", "image_size": 224})
    apply_lora(model, LoRAConfig(rank=2, towers=("image",)))
    assert not any("attn_pool" in key and "lora" in key for key in model.state_dict())
    assert not any(parameter.requires_grad for parameter in model.visual.trunk.attn_pool.parameters())
