"""Captions/s of clipmodule's tokenizer vs open_clip's SimpleTokenizer vs HF's CLIPTokenizer.

    .venv/bin/python bench/tokenizer.py [--n 10000] [--repeats 5] [--parallel]

All three must give the same [N, 77] id tensor (asserted) before any timing is printed. HF's
CLIPTokenizer lacks OpenAI's clean-up (ftfy, HTML unescaping, Python's lower-casing), so it is timed
twice: on captions already cleaned (clean-up not counted: HF's best case) and with open_clip's
clean-up in front (what a user needs for OpenAI's ids). Each timing is the best of --repeats rounds,
the tokenizers taking turns within a round, so load from other processes hits them alike.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time

# Single-threaded Rust, as in a DataLoader worker; importing open_clip sets the same anyway.
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import open_clip  # noqa: E402
import torch  # noqa: E402
import wordfreq  # noqa: E402
from open_clip.tokenizer import SimpleTokenizer, basic_clean, whitespace_clean  # noqa: E402
from transformers import CLIPTokenizer  # noqa: E402

from clipmodule.tokenizer import ClipTokenizer, write_hf_vocab_files  # noqa: E402

# Captions shaped like web alt-text: mostly plain ASCII, some with entities, accents, other scripts,
# emoji and mojibake; words drawn by frequency rank, so common words repeat as they do on the web.
PLACES = ["at the beach", "in the kitchen", "on a white background", "in New York City", "at night"]
TEMPLATES = [
    "{A} photo of {w} {w} {place}",
    "{W} {W} {W} - {n}x{m} Canvas Print",
    "Men's {W} {W} Shoes Size {n} - {W}",
    "DSC_{code}.JPG",
    "{w} {w} {w} {w}, {w} {w} and {w} {w}.",
    "Close-up of a {w} {w}'s {w} on {w} {w} ({n} years old)",
    "{W} {W} | {W} & {W} | {n}",
    "Vintage {n}s {W} {W} poster, {w} {w} {w}",
]
UNICODE_PIECES = ["Crème brûlée", "café au lait", "Straße", "niño", "Ελληνική σαλάτα", "ΟΔΟΣ", "İstanbul",
                  "Москва ночью", "東京タワー", "北京烤鸭", "서울", "😀", "👍🏽", "❤️", "“quoted”", "it’s", "—",
                  "naïve", "Ｆｕｌｌｗｉｄｔｈ", "½ price", "50 €", "ß", "Ǆ"]
ENTITY_PIECES = ["&amp;", "&quot;", "&#39;", "&lt;3", "&amp;amp;", "&nbsp;", "&eacute;", "R&D", "AT&T"]


def make_captions(n: int, seed: int = 0) -> list[str]:
    """`n` captions: ~77% plain ASCII, 15% with non-ASCII pieces, 3% entities, 2% mojibake, 3% long."""
    rng = random.Random(seed)
    words = wordfreq.top_n_list("en", 20_000)
    weights = [1.0 / (rank + 20) for rank in range(len(words))]

    def fill(template: str) -> str:
        out = template.replace("{place}", rng.choice(PLACES)).replace("{A}", rng.choice(["A", "The"]))
        out = out.replace("{code}", f"{rng.randrange(10_000):04d}")
        while "{" in out:
            out = out.replace("{w}", rng.choices(words, weights)[0], 1)
            out = out.replace("{W}", rng.choices(words, weights)[0].title(), 1)
            out = out.replace("{n}", str(rng.randrange(1, 100)), 1).replace("{m}", str(rng.randrange(1, 100)), 1)
        return out

    captions = []
    for _ in range(n):
        caption = fill(rng.choice(TEMPLATES))
        kind = rng.random()
        if kind < 0.15:
            caption = f"{caption} {rng.choice(UNICODE_PIECES)} {rng.choice(UNICODE_PIECES)}"
        elif kind < 0.18:
            caption = caption.replace(" ", f" {rng.choice(ENTITY_PIECES)} ", 1)
        elif kind < 0.20:  # UTF-8 read as Latin-1, which ftfy repairs
            caption = f"{caption} {rng.choice(UNICODE_PIECES)}".encode().decode("latin-1")
        elif kind < 0.23:  # longer than 77 tokens: exercises truncation
            caption = " ".join(fill(rng.choice(TEMPLATES)) for _ in range(6))
        captions.append(caption)
    return captions


def build_hf_tokenizer(directory: str) -> CLIPTokenizer:
    vocab_path, merges_path = write_hf_vocab_files(directory)
    # Positional on purpose: transformers 5 ignores the old keyword names (2-token vocabulary).
    hf = CLIPTokenizer(str(vocab_path), str(merges_path))
    assert len(hf) == 49408 and hf.convert_tokens_to_ids("<|endoftext|>") == 49407, "HF vocabulary is wrong"
    return hf


def hf_ids(hf: CLIPTokenizer, texts: list[str]) -> torch.Tensor:
    batch = hf(texts, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    # HF pads with <|endoftext|>; OpenAI and open_clip pad with 0.
    return batch["input_ids"].masked_fill(batch["attention_mask"] == 0, 0)


def openai_clean(text: str) -> str:
    return whitespace_clean(basic_clean(text)).lower()


def best_times(contenders: dict, repeats: int) -> dict[str, tuple[float, float]]:
    """Best wall and best CPU seconds of each contender; they take turns within each round."""
    best = {name: (float("inf"), float("inf")) for name in contenders}
    for _ in range(repeats):
        for name, run in contenders.items():
            wall, cpu = time.perf_counter(), time.process_time()
            run()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    return best


def print_table(title: str, n: int, times: dict[str, tuple[float, float]]) -> None:
    ours_wall, ours_cpu = next(iter(times.values()))
    print(f"{title:44} {'captions/s':>10} {'ours x':>7}   {'CPU captions/s':>14} {'ours x':>7}")
    for name, (wall, cpu) in times.items():
        print(f"  {name:42} {n / wall:10,.0f} {wall / ours_wall:7.2f}   {n / cpu:14,.0f} {cpu / ours_cpu:7.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="number of captions")
    parser.add_argument("--repeats", type=int, default=5, help="rounds; the best of them counts")
    parser.add_argument("--parallel", action="store_true", help="let the Rust tokenizers use all cores")
    args = parser.parse_args()
    if args.parallel:
        os.environ["TOKENIZERS_PARALLELISM"] = "true"
    captions = make_captions(args.n)
    with tempfile.TemporaryDirectory() as directory:
        # First calls on fresh tokenizers: word caches empty, every word goes through BPE.
        fresh_ours, fresh_open_clip, fresh_hf = ClipTokenizer(), SimpleTokenizer(), build_hf_tokenizer(directory)
        hf = build_hf_tokenizer(directory)
    cold = {
        "clipmodule ClipTokenizer": lambda: fresh_ours(captions),
        "open_clip SimpleTokenizer": lambda: fresh_open_clip(captions),
        "HF CLIPTokenizer + OpenAI clean-up": lambda: hf_ids(fresh_hf, [openai_clean(c) for c in captions]),
    }
    cold_times = best_times(cold, repeats=1)
    ours, cleaned = ClipTokenizer(), [openai_clean(c) for c in captions]
    contenders = {
        "clipmodule ClipTokenizer": lambda: ours(captions),
        "open_clip.tokenize (SimpleTokenizer)": lambda: open_clip.tokenize(captions),
        "HF CLIPTokenizer, pre-cleaned input": lambda: hf_ids(hf, cleaned),
        "HF CLIPTokenizer + OpenAI clean-up": lambda: hf_ids(hf, [openai_clean(c) for c in captions]),
    }
    reference = open_clip.tokenize(captions)
    for name, run in {**contenders, **{f"fresh {k}": v for k, v in cold.items()}}.items():
        assert torch.equal(run(), reference), f"{name} gives different ids from open_clip"
    raw_rows_differing = int((hf_ids(hf, captions) != reference).any(dim=1).sum())
    times = best_times(contenders, args.repeats)

    threads = "all cores" if args.parallel else "1 thread"
    print(f"{args.n} captions; all give the same [N, 77] id tensor; Rust tokenizers on {threads}")
    print_table(f"best of {args.repeats} rounds", args.n, times)
    print_table("first call on a fresh tokenizer (cold caches)", args.n, cold_times)
    print(f"HF CLIPTokenizer on raw captions (its own normalizer) gives other ids for "
          f"{raw_rows_differing} of {args.n} captions")


if __name__ == "__main__":
    main()
