"""Face detection for blurring at download: OpenCV's frontal-face Haar cascade (it ships with opencv-python-headless,
so nothing is downloaded). Boxes are relative [x0, y0, x1, y1], the form img2dataset's `bbox_col` blurrer takes.

Limits: a Haar cascade finds frontal, upright faces of at least `min_size` pixels; profiles, small or occluded faces
and drawings are missed (measured on scikit-image's LFW subset in tests/curation/test_faces.py: recall 0.95,
precision 1.0 there, on tight, frontal crops). DataComp blurred with a far stronger detector (SCRFD).
"""

from __future__ import annotations

import numpy as np

CASCADE = "haarcascade_frontalface_default.xml"


class FaceDetector:
    """Build once per worker (loads the cascade), then `boxes` for many images."""

    def __init__(self, scale_factor: float = 1.1, min_neighbors: int = 5, min_size: int = 24):
        import cv2

        self._cascade = cv2.CascadeClassifier(cv2.data.haarcascades + CASCADE)
        if self._cascade.empty():
            raise RuntimeError(f"OpenCV's {CASCADE} could not be loaded from {cv2.data.haarcascades}")
        self.scale_factor, self.min_neighbors, self.min_size = scale_factor, min_neighbors, min_size

    def boxes(self, image: np.ndarray) -> list[list[float]]:
        """Relative boxes of the faces in an image (BGR or grey, uint8)."""
        import cv2

        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
        height, width = grey.shape[:2]
        found = self._cascade.detectMultiScale(grey, self.scale_factor, self.min_neighbors,
                                               minSize=(self.min_size, self.min_size))
        return [[x / width, y / height, (x + w) / width, (y + h) / height]
                for x, y, w, h in np.asarray(found).reshape(-1, 4).tolist()]

    def boxes_in(self, encoded: bytes) -> list[list[float]]:
        """`boxes` of an encoded image (none when OpenCV cannot decode it: the resizer then reports why)."""
        import cv2

        image = cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_GRAYSCALE)
        return [] if image is None else self.boxes(image)
