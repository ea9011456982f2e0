"""A tiny WordNet 3.0 database in the real file layout (`wndb(5)`): what the hard-negative tests read."""

from __future__ import annotations

from pathlib import Path

LICENCE = "  1 This software and database is being provided to you, the LICENSEE, by Princeton University\n"
# offset: (lemmas, hypernym offsets)
NOUNS = {
    "00000001": (["entity"], []),
    "00000002": (["canine"], ["00000001"]),
    "00000003": (["dog", "domestic_dog"], ["00000002"]),
    "00000004": (["wolf"], ["00000002"]),
    "00000005": (["fox"], ["00000002"]),
    "00000006": (["seat"], ["00000001"]),
    "00000007": (["sofa", "couch"], ["00000006"]),
    "00000008": (["chair"], ["00000006"]),
    "00000009": (["shape"], ["00000001"]),
    "00000010": (["cube"], ["00000009"]),
    "00000011": (["ball", "sphere"], ["00000009"]),
    "00000012": (["red", "redness"], ["00000001"]),
    "00000013": (["circle"], ["00000009"]),
    "00000014": (["square"], ["00000009"]),
    "00000015": (["triangle"], ["00000009"]),
}
ADJECTIVES = ["red", "blue", "small", "big"]


def write_wordnet(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for offset, (lemmas, parents) in NOUNS.items():
        words = " ".join(f"{lemma} 0" for lemma in lemmas)
        pointers = " ".join(f"@ {parent} n 0000" for parent in parents)
        lines.append(f"{offset} 05 n {len(lemmas):02x} {words} {len(parents):03d} {pointers} | a gloss  ")
    (folder / "data.noun").write_text(LICENCE + "\n".join(lines) + "\n")
    index = {}
    for offset, (lemmas, _) in NOUNS.items():
        for lemma in lemmas:
            index.setdefault(lemma.lower(), []).append(offset)
    (folder / "index.noun").write_text(LICENCE + "".join(
        f"{lemma} n {len(offsets)} 1 @ {len(offsets)} 0 {' '.join(offsets)}  \n" for lemma, offsets in index.items()))
    (folder / "index.adj").write_text(LICENCE + "".join(f"{word} a 1 0 1 0 0{index:07d}  \n"
                                                        for index, word in enumerate(ADJECTIVES)))
    return folder
