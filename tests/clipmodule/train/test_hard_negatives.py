"""model.hard_negatives: rule-based negative captions, the same for a sample wherever it is read, scored as extra
text candidates of its image; no negatives (or only absent ones) is the plain loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from clipformats.wordnet import read_lexicon
from clipmodule.errors import ClipModuleError
from clipmodule.loss import clip_loss, siglip_loss
from clipmodule.models import create_model
from clipmodule.train.accumulate import accumulate_gradients, split_batch
from clipmodule.train.hard_negatives import (
    HardNegativesConfig,
    caption_words,
    hard_negatives,
    replaced_nouns,
    sample_rng,
    swapped_attributes,
    swapped_relations,
)
from clipmodule.train.module import ClipLitModule
from tests.clipmodule.train.wordnet_files import write_wordnet

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def wordnet(tmp_path_factory):
    return write_wordnet(tmp_path_factory.mktemp("wordnet"))


def test_the_lexicon_reads_nouns_adjectives_and_co_hyponyms(wordnet):
    lexicon = read_lexicon(wordnet)
    assert {"dog", "sofa", "couch", "cube"} <= lexicon.nouns and "blue" in lexicon.adjectives
    assert lexicon.co_hyponyms("dog") == ["fox", "wolf"]  # not its own synonym "domestic dog" (two words)
    assert lexicon.co_hyponyms("couch") == ["chair"]
    with pytest.raises(ValueError, match="data.noun: WordNet file not found"):
        read_lexicon(wordnet / "missing")


def test_each_rule_changes_what_the_caption_says_and_keeps_its_words(wordnet):
    lexicon = read_lexicon(wordnet)
    rng = sample_rng("k", 0)

    def apply(rule, caption):
        return rule(caption, caption_words(caption), lexicon, rng)

    assert apply(swapped_attributes, "a red cube and a blue ball") == ["a blue cube and a red ball"]
    assert apply(swapped_attributes, "a red cube and a red ball") == []  # the same word: nothing changes
    assert apply(swapped_relations, "A small dog on the blue sofa.") == ["A blue sofa on the small dog."]
    assert apply(swapped_relations, "a dog next to a chair") == ["a chair next to a dog"]
    assert set(apply(replaced_nouns, "a dog")) == {"a wolf", "a fox"}


def test_negatives_are_a_function_of_caption_key_and_seed(wordnet):
    lexicon = read_lexicon(wordnet)
    config = HardNegativesConfig(count=3, wordnet_dir=str(wordnet))
    caption = "a red dog on a blue sofa"
    first = hard_negatives(caption, "shard0/000001", config, lexicon)
    assert len(first) == 3 and caption not in first and len(set(first)) == 3
    assert hard_negatives(caption, "shard0/000001", config, lexicon) == first
    drawn = {tuple(hard_negatives(caption, f"shard0/{index:06d}", config, lexicon)) for index in range(20)}
    assert len(drawn) > 1  # the key seeds the choice
    assert hard_negatives("a photo", "k", config, lexicon) == []  # no rule applies: nothing made up
    only_attributes = HardNegativesConfig(count=5, rules=("attributes",), wordnet_dir=str(wordnet))
    assert hard_negatives(caption, "k", only_attributes, lexicon) == ["a blue dog on a red sofa"]


def _features(rows: int, count: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    images = F.normalize(torch.randn(rows, 16, generator=generator, dtype=torch.float64), dim=-1)
    texts = F.normalize(torch.randn(rows, 16, generator=generator, dtype=torch.float64), dim=-1)
    negatives = F.normalize(torch.randn(rows, count, 16, generator=generator, dtype=torch.float64), dim=-1)
    return images, texts, negatives


@pytest.mark.parametrize("local_loss", [False, True])
def test_clip_loss_with_no_or_absent_negatives_is_the_plain_loss_and_with_them_negclip(local_loss):
    images, texts, negatives = _features(6, 2)
    scale = torch.tensor(10.0, dtype=torch.float64)
    plain = clip_loss(images, texts, scale, local_loss=local_loss)
    assert torch.equal(clip_loss(images, texts, scale, local_loss=local_loss, hard_negatives=negatives[:, :0]), plain)
    assert torch.allclose(clip_loss(images, texts, scale, local_loss=local_loss,
                                   hard_negatives=torch.zeros_like(negatives)), plain, rtol=0, atol=1e-12)
    negatives[1, 1] = 0  # one absent negative
    present = [negatives[row, column] for row in range(6) for column in range(2) if (row, column) != (1, 1)]
    # NegCLIP: the image->text softmax runs over every caption and every (present) negative; text->image is plain
    logits_per_image = scale * images @ torch.cat([texts, torch.stack(present)]).t()
    labels = torch.arange(6)
    expected = (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(scale * texts @ images.t(), labels)) / 2
    got = clip_loss(images, texts, scale, local_loss=local_loss, hard_negatives=negatives)
    assert torch.allclose(got, expected, rtol=0, atol=1e-12) and got > plain


def test_siglip_loss_scores_the_negatives_as_negative_pairs():
    images, texts, negatives = _features(5, 3)
    scale, bias = torch.tensor(10.0, dtype=torch.float64), torch.tensor(-5.0, dtype=torch.float64)
    plain = siglip_loss(images, texts, scale, bias)
    assert torch.equal(siglip_loss(images, texts, scale, bias, hard_negatives=negatives[:, :0]), plain)
    assert torch.allclose(siglip_loss(images, texts, scale, bias, hard_negatives=torch.zeros_like(negatives)), plain)
    extra = -F.logsigmoid(-(scale * images @ negatives.flatten(0, 1).t() + bias)).sum() / 5
    assert torch.allclose(siglip_loss(images, texts, scale, bias, hard_negatives=negatives), plain + extra)


def _batch(count_words: int = 8):
    generator = torch.Generator().manual_seed(0)
    captions = ["a red dog on a blue sofa", "a small cube next to a big ball", "a dog", "a photo"] * 2
    text = torch.randint(1, 400, (8, 77), generator=generator)
    text[:, 12:] = 0
    text[:, 11] = 49407
    return {"image": torch.randn(8, 3, 32, 32, generator=generator), "text": text, "caption": captions,
            "key": [f"s{index}" for index in range(8)]}


def test_the_module_adds_the_negatives_and_accumulation_keeps_them(wordnet):
    torch.manual_seed(0)
    config = HardNegativesConfig(count=2, wordnet_dir=str(wordnet))
    module = ClipLitModule(create_model("tiny-vit"), hard_negatives=config)
    batch = module.add_hard_negatives(_batch())
    assert batch["negatives"].shape == (8, 2, 77)
    assert batch["negatives_present"][:, 0].tolist() == [True, True, True, False] * 2  # "a photo" has none
    assert module.hparams["hard_negatives"]["count"] == 2
    loss = module.loss_of_features(*module.encode_pair(batch))
    plain = module.loss_of_features(*module.encode_pair(_batch()))
    assert loss > plain
    module.negative_captions.config = HardNegativesConfig(count=0, wordnet_dir=str(wordnet))
    assert torch.equal(module.loss_of_features(*module.encode_pair(module.add_hard_negatives(_batch()))), plain)
    module.negative_captions.config = config
    loss.backward()
    whole = {name: parameter.grad.clone() for name, parameter in module.model.named_parameters()}
    module.model.zero_grad()
    accumulated = accumulate_gradients(module.model, split_batch(batch, 2), module.encode_pair,
                                       module.loss_of_features, lambda value, index: value.backward(),
                                       torch.device("cpu"))
    assert torch.allclose(accumulated, loss.detach(), atol=1e-6)
    for name, parameter in module.model.named_parameters():
        assert torch.allclose(parameter.grad, whole[name], atol=1e-6), name


def test_a_training_step_scores_the_negatives(wordnet, monkeypatch):
    """The step Lightning runs (accum_freq 1) takes the negatives: its loss is the loss with them, not the plain."""
    torch.manual_seed(0)
    module = ClipLitModule(create_model("tiny-vit"), hard_negatives=HardNegativesConfig(count=2,
                                                                                       wordnet_dir=str(wordnet)))
    monkeypatch.setattr(module, "log_step", lambda loss, batch: None)  # no trainer to log to, or to stop
    monkeypatch.setattr(module, "check_finite", lambda loss: None)
    step = module.training_step(_batch(), 0)
    with_negatives = module.loss_of_features(*module.encode_pair(module.add_hard_negatives(_batch())))
    assert torch.equal(step, with_negatives)
    assert step > module.loss_of_features(*module.encode_pair(_batch()))


def test_bad_options_and_batches_without_captions_are_one_line(tmp_path, wordnet):
    with pytest.raises(ClipModuleError, match=r"rules \['colours'\]"):
        ClipLitModule(create_model("tiny-vit"), hard_negatives=HardNegativesConfig(rules=("colours",)))
    module = ClipLitModule(create_model("tiny-vit"),
                           hard_negatives=HardNegativesConfig(wordnet_dir=str(tmp_path / "none")))
    with pytest.raises(ClipModuleError, match=r"model.hard_negatives.wordnet_dir: .*data.noun: WordNet file not found"):
        module.add_hard_negatives(_batch())
    module = ClipLitModule(create_model("tiny-vit"), hard_negatives=HardNegativesConfig(wordnet_dir=str(wordnet)))
    batch = _batch()
    del batch["caption"]
    with pytest.raises(ClipModuleError, match="needs each training sample's caption and key"):
        module.add_hard_negatives(batch)
