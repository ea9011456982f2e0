"""Tower locking (LiT): open_clip's group counting, locked parameters out of the optimiser and bit-identical after
training, a tower locked whole in eval mode and no-grad (also after validation), BatchNorm statistics kept on
request, and Hugging Face text towers."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import open_clip
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from transformers import BertConfig

from clipmodule.checkpoints.open_clip import config_to_open_clip
from clipmodule.data.synthetic import CLASSNAMES
from clipmodule.errors import ClipModuleError
from clipmodule.models import create_model
from clipmodule.train.lock import LockConfig
from clipmodule.train.module import ClipLitModule, build_network
from clipmodule.train.optim import OptimConfig
from tests.clipmodule.fixtures import SyntheticDataModule

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _trainable(model: torch.nn.Module) -> set[str]:
    return {name for name, parameter in model.named_parameters() if parameter.requires_grad}


def _open_clip_twin(name: str) -> torch.nn.Module:
    config = config_to_open_clip(create_model(name).config)
    return open_clip.CLIP(config["embed_dim"], config["vision_cfg"], config["text_cfg"],
                          quick_gelu=config.get("quick_gelu", False))


@pytest.mark.parametrize("groups", [0, 2, 4])
def test_vit_groups_and_text_layers_count_as_open_clips_lock(groups):
    """Our parameter names are open_clip's, so its `lock_image_tower` / `lock_text_tower` are the reference."""
    module = ClipLitModule(build_network("tiny-vit"), lock=LockConfig(lock_image=True, image_unlocked_groups=groups,
                                                                      lock_text=True, text_unlocked_layers=groups))
    theirs = _open_clip_twin("tiny-vit")
    theirs.lock_image_tower(unlocked_groups=groups)
    theirs.lock_text_tower(unlocked_layers=groups)
    assert _trainable(module.model) == _trainable(theirs)
    assert "logit_scale" in _trainable(module.model)


def _trainer(tmp_path: Path, callbacks: list[Callback], steps: int = 6) -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                     num_sanity_val_steps=0, default_root_dir=tmp_path, max_steps=steps, val_check_interval=3,
                     enable_checkpointing=False, callbacks=callbacks, limit_val_batches=1)


class ModeProbe(Callback):
    """Records, at every training step, the image tower's mode and whether its blocks ran with grad enabled."""

    def __init__(self):
        self.visual_training, self.text_training, self.grad_in_visual = [], [], []

    def on_fit_start(self, trainer, module):
        module.model.visual.transformer.resblocks[0].register_forward_hook(
            lambda *_: self.grad_in_visual.append(torch.is_grad_enabled()))

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.visual_training.append(module.model.visual.training)
        self.text_training.append(module.model.transformer.training)


def test_lit_locked_image_tower_is_unchanged_out_of_the_optimiser_in_eval_and_no_grad(tmp_path):
    torch.manual_seed(0)
    module = ClipLitModule(build_network("tiny-vit", patch_dropout=0.5), lock=LockConfig(lock_image=True),
                           optim=OptimConfig(lr=1e-3, warmup_steps=1, weight_decay=0.1), zeroshot_classnames=CLASSNAMES)
    before = {key: value.clone() for key, value in module.model.state_dict().items()}
    probe = ModeProbe()
    trainer = _trainer(tmp_path, [probe])
    trainer.fit(module, SyntheticDataModule(num_samples=32, batch_size=8, image_size=32))
    after = module.model.state_dict()
    assert all(torch.equal(after[key], before[key]) for key in before if key.startswith("visual."))
    assert not torch.equal(after["token_embedding.weight"], before["token_embedding.weight"])
    optimised = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert not optimised & {id(p) for p in module.model.visual.parameters()}
    assert {id(p) for p in module.model.transformer.parameters()} <= optimised
    # six steps with validation after the third: the tower stays in eval mode and never records a graph
    assert probe.visual_training == [False] * 6 and probe.text_training == [True] * 6
    assert probe.grad_in_visual and not any(probe.grad_in_visual)
    module.train()  # Lightning's (or a user's) train() call leaves the locked tower in eval mode
    assert not module.model.visual.training and module.model.transformer.training


class TextGradProbe(Callback):
    """Records, at every training step, whether the text blocks ran with autograd recording, and whether the text
    features the step used carry a graph."""

    def __init__(self):
        self.grad_in_text, self.features_have_graph = [], []

    def on_fit_start(self, trainer, module):
        module.model.transformer.resblocks[0].register_forward_hook(
            lambda *_: self.grad_in_text.append(torch.is_grad_enabled()))
        encode_text = module.model.encode_text

        def recording(*args, **kwargs):
            features = encode_text(*args, **kwargs)
            self.features_have_graph.append(features.grad_fn is not None)
            return features

        module.model.encode_text = recording


def test_text_tower_locked_whole_runs_without_a_graph_in_training_steps(tmp_path):
    torch.manual_seed(0)
    module = ClipLitModule(build_network("tiny-vit"), lock=LockConfig(lock_text=True),
                           optim=OptimConfig(lr=1e-3, warmup_steps=1))
    probe = TextGradProbe()
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path, max_steps=3, limit_val_batches=0,
                        enable_checkpointing=False, callbacks=[probe])
    trainer.fit(module, SyntheticDataModule(num_samples=24, batch_size=8, image_size=32))
    assert probe.grad_in_text == [False] * 3 and probe.features_have_graph == [False] * 3
    assert torch.is_grad_enabled()  # the mode is put back after the tower


def _batch_norm_state(model: torch.nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    return {key: value.clone() for key, value in model.state_dict().items()
            if key.startswith(prefix) and ("running_" in key or "num_batches" in key)}


@pytest.mark.parametrize("freeze", [True, False])
def test_resnet_last_stages_train_and_locked_batchnorm_statistics_stay_on_request(tmp_path, freeze):
    torch.manual_seed(0)
    lock = LockConfig(lock_image=True, image_unlocked_groups=2, image_freeze_bn_stats=freeze)  # layer4 + attnpool
    module = ClipLitModule(build_network("tiny-rn"), lock=lock, optim=OptimConfig(lr=1e-3, warmup_steps=1),
                           zeroshot_classnames=CLASSNAMES)
    model = module.model
    assert {name.split(".")[1] for name in _trainable(model) if name.startswith("visual.")} == {"layer4", "attnpool"}
    locked_before = {key: value.clone() for key, value in model.state_dict().items()
                     if key.startswith(("visual.layer1.", "visual.conv1", "visual.bn1")) and "running" not in key
                     and "num_batches" not in key}
    stats_before = _batch_norm_state(model, "visual.layer1.")
    trained_before = _batch_norm_state(model, "visual.layer4.")
    _trainer(tmp_path, [], steps=3).fit(module, SyntheticDataModule(num_samples=24, batch_size=8, image_size=64))
    after = model.state_dict()
    assert all(torch.equal(after[key], value) for key, value in locked_before.items())
    kept = all(torch.equal(after[key], value) for key, value in stats_before.items())
    assert kept is freeze  # without the option BatchNorm keeps updating its statistics, as open_clip's does
    assert not all(torch.equal(after[key], value) for key, value in trained_before.items())  # unlocked stages learn


@pytest.fixture
def bert_folder(tmp_path):
    config = BertConfig(vocab_size=600, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=40, hidden_dropout_prob=0.5)
    config.save_pretrained(tmp_path / "bert")
    return tmp_path / "bert"


def _hf_network(folder: Path) -> torch.nn.Module:
    return create_model("tiny-vit", text={"hf_model_name": str(folder), "context_length": 16})


@pytest.mark.parametrize("kind", ["roberta", "xlm-roberta"])  # open_clip's partial lock lacks BERT's layer names
def test_hf_text_lock_trains_what_open_clips_lock_trains(tmp_path, kind):
    """open_clip's `HFTextEncoder.lock(N, freeze_layer_norm)`: groups [embeddings, each layer], the projection
    always trainable; the parameter names are the same in both (`text.transformer.*`, `text.proj.*`)."""
    from open_clip.model import CustomTextCLIP
    from transformers import RobertaConfig, XLMRobertaConfig

    config_class = RobertaConfig if kind == "roberta" else XLMRobertaConfig
    config_class(vocab_size=600, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                 max_position_embeddings=40, pad_token_id=1).save_pretrained(tmp_path / kind)
    text_cfg = {"hf_model_name": str(tmp_path / kind), "hf_tokenizer_name": str(tmp_path / kind),
                "hf_model_pretrained": False, "context_length": 16}
    vision_cfg = {"layers": 1, "width": 64, "patch_size": 8, "image_size": 16}
    for unlocked in (0, 1, 2, 3):
        for freeze_layer_norm in (True, False):
            ours = ClipLitModule(_hf_network(tmp_path / kind), lock=LockConfig(
                lock_text=True, text_unlocked_layers=unlocked, freeze_layer_norm=freeze_layer_norm)).model
            theirs = CustomTextCLIP(64, vision_cfg, text_cfg)
            theirs.lock_text_tower(unlocked_layers=unlocked, freeze_layer_norm=freeze_layer_norm)
            text = {name for name in _trainable(ours) if name.startswith("text.")}
            assert text == {name for name in _trainable(theirs) if name.startswith("text.")}, (unlocked,
                                                                                              freeze_layer_norm)
            assert any(name.startswith("text.proj.") for name in text)
    with pytest.raises(ClipModuleError, match=r"text_unlocked_layers=4: the text tower has embeddings and 2 layers"):
        ClipLitModule(_hf_network(tmp_path / kind), lock=LockConfig(lock_text=True, text_unlocked_layers=4))


def test_hf_text_tower_locked_whole_runs_in_eval_and_no_grad_its_projection_trains(bert_folder):
    whole = ClipLitModule(_hf_network(bert_folder), lock=LockConfig(lock_text=True))
    assert {name for name in _trainable(whole.model) if name.startswith("text.")} == \
        {name for name, _ in whole.model.named_parameters() if name.startswith("text.proj.")}
    whole.train()
    transformer = whole.model.text.transformer
    assert not transformer.training  # dropout off: a locked tower's features do not change from step to step
    seen = []
    transformer.encoder.register_forward_hook(lambda *args: seen.append(torch.is_grad_enabled()))
    tokens = torch.randint(5, 600, (4, 16))
    features = whole.model.encode_text(tokens)
    assert seen == [False] and torch.is_grad_enabled()  # the transformer ran without a graph; the mode is back
    assert features.requires_grad and torch.equal(features, whole.model.encode_text(tokens))  # the projection learns

    last = ClipLitModule(_hf_network(bert_folder), lock=LockConfig(lock_text=True, text_unlocked_layers=1))
    trainable = {name for name in _trainable(last.model) if name.startswith("text.")}
    assert trainable and all(name.startswith(("text.transformer.encoder.layer.1.", "text.proj"))
                             for name in trainable)
    assert last.model.text.training and last.model.encode_text(tokens).requires_grad


def test_image_tower_layer_norms_lock_with_their_groups_as_open_clips():
    """freeze_layer_norm is open_clip's text-tower option: its lock_image_tower locks the image norms regardless."""
    lock = LockConfig(lock_image=True, image_unlocked_groups=2, freeze_layer_norm=False)
    ours = ClipLitModule(build_network("tiny-vit"), lock=lock).model
    theirs = _open_clip_twin("tiny-vit")
    theirs.lock_image_tower(unlocked_groups=2)
    assert {n for n in _trainable(ours) if n.startswith("visual.")} == \
        {n for n in _trainable(theirs) if n.startswith("visual.")}


def test_layer_norms_of_locked_groups_train_when_asked():
    module = ClipLitModule(build_network("tiny-vit"), lock=LockConfig(lock_text=True, freeze_layer_norm=False))
    text = {name for name in _trainable(module.model) if not name.startswith("visual.") and "logit" not in name}
    assert text and all(".ln_" in name or name.startswith("ln_final.") for name in text)


def test_bad_lock_settings_are_one_line():
    with pytest.raises(ClipModuleError, match=r"lock.image_unlocked_groups=9: the image tower has 4 groups"):
        ClipLitModule(build_network("tiny-vit"), lock=LockConfig(lock_image=True, image_unlocked_groups=9))
    with pytest.raises(ClipModuleError, match="need lock.lock_image: true"):
        ClipLitModule(build_network("tiny-vit"), lock=LockConfig(image_unlocked_groups=1))


def test_our_text_tower_is_locked_whole_only_when_its_projection_is_locked_too():
    projection_only = ClipLitModule(build_network("tiny-vit"), lock=LockConfig(lock_text=True, text_unlocked_layers=1))
    projection_only.train()
    assert {name for name in _trainable(projection_only.model) if not name.startswith("visual.")} == \
        {"text_projection", "logit_scale"}
    assert projection_only.model.transformer.training  # a partly locked tower keeps Lightning's mode
    whole = ClipLitModule(build_network("tiny-vit"), lock=LockConfig(lock_text=True))
    whole.train()
    assert not whole.model.transformer.training and not whole.model.encode_text(torch.zeros(2, 77).long()).requires_grad
