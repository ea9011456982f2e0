"""Face detection for blurring at download: OpenCV's frontal-face Haar cascade (it ships with opencv-python-headless,
so nothing is downloaded). Boxes are relative [x0, y0, x1, y1], the form img2dataset's `bbox_col` blurrer takes.

Limits: a Haar cascade finds frontal, upright faces of at least `min_size` pixels; profiles, small or occluded faces
and drawings are missed (measured on scikit-image's LFW subset in tests/curation/test_faces.py: recall 0.95,
precision 1.0 there, on tight, frontal crops). DataComp blurred with a far stronger detector (SCRFD).
"""

from __future__ import annotations

import threading

import numpy as np

CASCADE = "haarcascade_frontalface_default.xml"
FACES_FOLDER = "_faces"
"""Inside the download's folder: one file per worker process, a line `<image sha256> <faces>` per image with faces."""


class FaceDetector:
    """`boxes` for many images; the cascade loads on first use in each thread (img2dataset pickles its resizer, and
    with it this detector, into every worker, whose download threads share it; OpenCV's classifier neither pickles
    nor promises to be thread-safe)."""

    def __init__(self, scale_factor: float = 1.1, min_neighbors: int = 5, min_size: int = 24):
        self.scale_factor, self.min_neighbors, self.min_size = scale_factor, min_neighbors, min_size
        self._local = threading.local()

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_local"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._local = threading.local()

    def _loaded(self):
        if getattr(self._local, "cascade", None) is None:
            import cv2

            cascade = cv2.CascadeClassifier(cv2.data.haarcascades + CASCADE)
            if cascade.empty():
                raise RuntimeError(f"OpenCV's {CASCADE} could not be loaded from {cv2.data.haarcascades}")
            self._local.cascade = cascade
        return self._local.cascade

    def boxes(self, image: np.ndarray) -> list[list[float]]:
        """Relative boxes of the faces in an image (BGR or grey, uint8)."""
        import cv2

        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
        height, width = grey.shape[:2]
        found = self._loaded().detectMultiScale(grey, self.scale_factor, self.min_neighbors,
                                               minSize=(self.min_size, self.min_size))
        return [[x / width, y / height, (x + w) / width, (y + h) / height]
                for x, y, w, h in np.asarray(found).reshape(-1, 4).tolist()]

    def note(self, folder: str | None, encoded: bytes, faces: int) -> None:
        """Record an image with faces (by content hash, so an image fetched again after a resume counts once)."""
        if folder is None or not faces:
            return
        import hashlib
        import os

        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, f"{os.getpid()}.txt"), "a", encoding="ascii") as handle:
            handle.write(f"{hashlib.sha256(encoded).hexdigest()} {faces}\n")

    def boxes_in(self, encoded: bytes) -> list[list[float]]:
        """`boxes` of an encoded image (none when OpenCV cannot decode it: the resizer then reports why)."""
        import cv2

        image = cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_GRAYSCALE)
        return [] if image is None else self.boxes(image)


def faces_blurred(folder: str) -> dict[str, int]:
    """Distinct images with faces and their faces, from the workers' notes (`FaceDetector.note`)."""
    from pathlib import Path

    seen: dict[str, int] = {}
    for path in sorted(Path(folder).glob("*.txt")):
        for line in path.read_text(encoding="ascii").splitlines():
            digest, _, count = line.partition(" ")
            if count.isdigit():
                seen[digest] = int(count)
    return {"images_with_faces": len(seen), "faces": sum(seen.values())}
