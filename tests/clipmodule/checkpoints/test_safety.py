"""Checkpoints never run code from the file and never load weights that are not what the model needs."""

import pytest
import safetensors.torch
import torch
from torch import nn

import clipmodule
from clipmodule.checkpoints.classifier import read_state_dict
from clipmodule.checkpoints.io import load_checkpoint, save_checkpoint
from clipmodule.checkpoints.torchscript import read_torchscript
from clipmodule.errors import ClipModuleError

SIDE_EFFECT = "planted __setstate__ ran"


class _Planted(nn.Module):
    """A TorchScript module whose __setstate__ prints: torch.jit.load runs it, a weights reader must not."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(3))

    @torch.jit.export
    def __getstate__(self):
        return (self.weight, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[torch.Tensor, bool]):
        print("planted __setstate__ ran")
        self.weight = state[0]
        self.training = state[1]

    def forward(self, x):
        return x * self.weight


@pytest.fixture
def planted_archive(tmp_path, capfd):
    path = tmp_path / "ViT-B-32.pt"
    torch.jit.save(torch.jit.script(_Planted()), path)
    torch.jit.load(str(path))  # proves the plant is real: loading the archive as TorchScript runs it
    assert SIDE_EFFECT in capfd.readouterr().out
    return path


def test_torchscript_setstate_never_runs_on_load(planted_archive, capfd):
    with pytest.raises(ClipModuleError, match="not a CLIP checkpoint"):
        clipmodule.load(planted_archive)
    assert read_state_dict(planted_archive) == {}  # the classifier weights reader: its state is not a module's
    assert SIDE_EFFECT not in capfd.readouterr().out


def test_torchscript_archive_asking_for_other_globals_is_refused(tmp_path):
    import zipfile

    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as archive:  # a data.pkl that would call os.system if unpickled freely
        archive.writestr("evil/data.pkl", b"cos\nsystem\n(S'echo hi'\ntR.")
        archive.writestr("evil/constants.pkl", b"\x80\x02).")
    with pytest.raises(ClipModuleError, match="refusing this TorchScript archive.*os.system") as info:
        read_torchscript(path)
    assert "\n" not in str(info.value)


def test_torchscript_tensors_equal_jit_state_dict(tmp_path):
    torch.manual_seed(0)
    model = clipmodule.create_model("tiny-rn").eval()
    images, text = torch.randn(1, 3, 64, 64), clipmodule.tokenize(["a cat"])
    torch.jit.save(torch.jit.trace(model, (images, text), check_trace=False), tmp_path / "rn.pt")
    ours, reference = read_torchscript(tmp_path / "rn.pt"), torch.jit.load(str(tmp_path / "rn.pt")).state_dict()
    assert set(ours) == set(reference) and all(torch.equal(ours[key], reference[key]) for key in reference)


def _safetensors(tmp_path, change):
    model = clipmodule.create_model("tiny-vit")
    save_checkpoint(model, tmp_path / "m.safetensors")
    state_dict = safetensors.torch.load_file(str(tmp_path / "m.safetensors"))
    change(state_dict)
    metadata = {"clipmodule_config": __import__("json").dumps(model.config.to_dict())}
    safetensors.torch.save_file(state_dict, str(tmp_path / "bad.safetensors"), metadata=metadata)
    return tmp_path / "bad.safetensors"


def test_integer_weights_are_not_cast_to_floats(tmp_path):
    def quantize(state_dict):
        state_dict["visual.proj"] = state_dict["visual.proj"].mul(100).to(torch.int8)

    with pytest.raises(ClipModuleError, match="weight visual.proj is stored as int8, not floating point") as info:
        load_checkpoint(_safetensors(tmp_path, quantize))
    assert "\n" not in str(info.value)


def test_nan_or_inf_weights_are_refused(tmp_path):
    def poison(state_dict):
        state_dict["ln_final.weight"][3] = float("nan")

    with pytest.raises(ClipModuleError, match="weight ln_final.weight holds NaN or infinite values"):
        load_checkpoint(_safetensors(tmp_path, poison))

    def infinite(state_dict):
        state_dict["token_embedding.weight"][0, 0] = float("inf")

    with pytest.raises(ClipModuleError, match="weight token_embedding.weight holds NaN"):
        load_checkpoint(_safetensors(tmp_path, infinite))


def test_half_precision_weights_still_load(tmp_path):
    path = _safetensors(tmp_path, lambda sd: sd.update({key: value.half() for key, value in sd.items()}))
    assert load_checkpoint(path).visual.proj.dtype == torch.float32
