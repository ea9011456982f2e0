"""The WordNet 3.0 database files (Debian's `wordnet-base`: /usr/share/wordnet) read as a small lexicon: which
words are nouns and adjectives, each noun's most frequent sense, and the hypernym tree that gives co-hyponyms
(the other kinds of the same thing: dog -> wolf, fox, jackal).

File layout (WordNet's `wndb(5)`): a data line is `offset lex_filenum ss_type w_cnt word lex_id ... p_cnt ptr...
| gloss`, w_cnt in hex, each pointer `symbol offset pos source/target`; an index line is `lemma pos synset_cnt p_cnt
symbol... sense_cnt tagsense_cnt offset...` with the offsets most frequent sense first. Licence text lines start
with spaces. Standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_DIR = "/usr/share/wordnet"
HYPERNYMS = ("@", "@i")


class WordNetError(ValueError):
    """A WordNet folder that is missing, unreadable or not WordNet's format (one line naming the file)."""


@dataclass(frozen=True)
class Lexicon:
    """One-word nouns and adjectives (lower case), and what a noun's co-hyponyms are."""

    nouns: frozenset[str]
    adjectives: frozenset[str]
    first_sense: dict[str, str]
    """noun -> the offset of its most frequent synset"""
    synset_words: dict[str, tuple[str, ...]]
    """offset -> its one-word lemmas (lower case)"""
    hypernyms: dict[str, tuple[str, ...]]
    children: dict[str, tuple[str, ...]]
    _found: dict[str, list[str]] = field(default_factory=dict, compare=False, repr=False)

    def co_hyponyms(self, noun: str) -> list[str]:
        """`_co_hyponyms`, each noun's computed once (a caption's nouns repeat from batch to batch)."""
        if noun not in self._found:
            self._found[noun] = self._co_hyponyms(noun)
        return self._found[noun]

    def _co_hyponyms(self, noun: str) -> list[str]:
        """Other one-word nouns under the first hypernym of `noun`'s most frequent sense, sorted; where that has
        none (cat: feline's other child is "big cat"), the cousins one level up (dog, wolf, ...); [] if none."""
        sense = self.first_sense.get(noun)
        parents = self.hypernyms.get(sense, ()) if sense else ()
        if not parents:
            return []
        own = {*self.synset_words.get(sense, ()), noun}
        siblings = self._words_under([parents[0]], skip=sense) - own
        if not siblings and self.hypernyms.get(parents[0]):
            uncles = [uncle for uncle in self.children.get(self.hypernyms[parents[0]][0], ()) if uncle != parents[0]]
            siblings = self._words_under(uncles, skip=sense) - own
        return sorted(siblings)

    def _words_under(self, parents: list[str], skip: str) -> set[str]:
        return {word for parent in parents for child in self.children.get(parent, ()) if child != skip
                for word in self.synset_words.get(child, ())}


def _lines(path: Path):
    try:
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if line.strip() and not line.startswith(" "):
                    yield number, line.split()
    except FileNotFoundError:
        raise WordNetError(f"{path}: WordNet file not found (install the wordnet-base package or name the folder "
                           "holding data.noun, index.noun and index.adj)") from None
    except (OSError, UnicodeDecodeError) as error:
        raise WordNetError(f"{path}: cannot read WordNet file ({error})") from None


def _one_word(lemma: str) -> str | None:
    word = lemma.split("(", 1)[0].lower()
    return word if word.isalpha() else None


def _read_noun_data(path: Path) -> tuple[dict[str, tuple[str, ...]], dict[str, tuple[str, ...]]]:
    words: dict[str, tuple[str, ...]] = {}
    hypernyms: dict[str, tuple[str, ...]] = {}
    for number, fields in _lines(path):
        try:
            count = int(fields[3], 16)
            lemmas = fields[4:4 + 2 * count:2]
            pointers_at = 4 + 2 * count
            pointers = int(fields[pointers_at])
            symbols = fields[pointers_at + 1:pointers_at + 1 + 4 * pointers]
        except (IndexError, ValueError):
            raise WordNetError(f"{path}: line {number} is not a WordNet data line") from None
        offset = fields[0]
        words[offset] = tuple(word for word in map(_one_word, lemmas) if word)
        hypernyms[offset] = tuple(symbols[i + 1] for i in range(0, len(symbols), 4) if symbols[i] in HYPERNYMS)
    return words, hypernyms


def _read_index(path: Path) -> dict[str, str]:
    """One-word lemma -> its first (most frequent) synset offset."""
    first: dict[str, str] = {}
    for number, fields in _lines(path):
        word = _one_word(fields[0])
        if word is None:
            continue
        try:
            senses = int(fields[2])
            first[word] = fields[-senses]
        except (IndexError, ValueError):
            raise WordNetError(f"{path}: line {number} is not a WordNet index line") from None
    return first


def read_lexicon(wordnet_dir: str | Path = DEFAULT_DIR) -> Lexicon:
    """The lexicon of the WordNet files in `wordnet_dir` (data.noun, index.noun, index.adj)."""
    folder = Path(wordnet_dir)
    words, hypernyms = _read_noun_data(folder / "data.noun")
    first_sense = _read_index(folder / "index.noun")
    adjectives = frozenset(_read_index(folder / "index.adj"))
    children: dict[str, list[str]] = {}
    for offset, parents in hypernyms.items():
        for parent in parents:
            children.setdefault(parent, []).append(offset)
    return Lexicon(nouns=frozenset(first_sense), adjectives=adjectives, first_sense=first_sense,
                   synset_words=words, hypernyms=hypernyms,
                   children={parent: tuple(offsets) for parent, offsets in children.items()})
