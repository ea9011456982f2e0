"""A SigLIP-style tokenizer for tests: a sentencepiece unigram vocabulary trained on a small corpus, saved as the
`tokenizer.json` folder transformers' `save_pretrained` writes (what a hub repo holds)."""

from __future__ import annotations

from pathlib import Path


def make_spm_tokenizer(root: Path, corpus: list[str], vocab_size: int = 60) -> Path:
    """The folder with tokenizer.json (+ tokenizer_config.json); pad 0, </s> 1, <unk> 2, as SigLIP's."""
    import sentencepiece as spm
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    root.mkdir(parents=True, exist_ok=True)
    (root / "corpus.txt").write_text("\n".join(corpus * 40))
    spm.SentencePieceTrainer.train(input=str(root / "corpus.txt"), model_prefix=str(root / "m"),
                                   vocab_size=vocab_size, hard_vocab_limit=False, model_type="unigram", pad_id=0,
                                   eos_id=1, unk_id=2, bos_id=-1, minloglevel=2)
    processor = spm.SentencePieceProcessor(model_file=str(root / "m.model"))
    vocab = [(processor.id_to_piece(i), processor.get_score(i)) for i in range(processor.get_piece_size())]
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))  # T5/SigLIP's kind of tokenizer
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>",
                            unk_token="<unk>").save_pretrained(root / "tok")
    return root / "tok"
