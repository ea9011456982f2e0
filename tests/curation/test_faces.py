"""Face detection and blurring at download: precision/recall on a shipped set, and img2dataset's own resizer
blurring what the detector finds (the code path `download.blur_faces` installs in img2dataset's workers)."""

from __future__ import annotations

import io
from importlib.metadata import distribution

import cv2
import numpy as np
import pytest

from curation.stages.download.faces import FaceDetector
from curation.stages.download.fetch import FetchPolicy, LimitedResizer, resizer_with_faces


def shipped(package: str, path: str):
    try:
        return distribution(package).locate_file(path)
    except Exception:  # noqa: BLE001 - the data set's package is not installed
        pytest.skip(f"{package} (which ships {path}) is not installed")


def test_precision_and_recall_on_scikit_image_s_lfw_subset():
    """scikit-image ships 200 grey 25 x 25 crops: 100 LFW faces, then 100 non-face patches of the same photos."""
    crops = np.load(shipped("scikit-image", "skimage/data/lfw_subset.npy"))
    detector = FaceDetector()
    found = []
    for crop in crops:
        image = cv2.resize((crop * 255).astype(np.uint8), (64, 64), interpolation=cv2.INTER_CUBIC)
        found.append(bool(detector.boxes(cv2.copyMakeBorder(image, 16, 16, 16, 16, cv2.BORDER_REPLICATE))))
    found = np.array(found)
    true_positives, false_positives = int(found[:100].sum()), int(found[100:].sum())
    recall, precision = true_positives / 100, true_positives / max(1, true_positives + false_positives)
    assert recall >= 0.9 and precision >= 0.95, (recall, precision)  # measured: recall 0.95, precision 1.0


def face_photo() -> bytes:
    return shipped("matplotlib", "matplotlib/mpl-data/sample_data/grace_hopper.jpg").read_bytes()


def test_a_portrait_s_face_is_found_where_it_is():
    boxes = FaceDetector().boxes_in(face_photo())  # a 512 x 600 portrait, the face in the upper middle
    assert len(boxes) == 1
    x0, y0, x1, y1 = boxes[0]
    assert 0.2 < x0 < x1 < 0.8 and 0.1 < y0 < y1 < 0.6
    assert FaceDetector().boxes_in(b"not an image") == []


def test_img2dataset_s_resizer_blurs_the_faces_found_and_nothing_else():
    import importlib

    main = importlib.import_module("img2dataset.main")
    options = {"image_size": 256, "resize_mode": "no", "resize_only_if_bigger": False,
               "upscale_interpolation": "lanczos", "downscale_interpolation": "area", "encode_quality": 1,
               "encode_format": "png", "skip_reencode": False, "disable_all_reencoding": False, "min_image_size": 0,
               "max_image_area": float("inf"), "max_aspect_ratio": float("inf")}
    policy = FetchPolicy(frozenset(), 10**8, blur_faces=True)
    blurring = LimitedResizer(*resizer_with_faces(main.Resizer, options, policy), 10**8, FaceDetector())
    plain = LimitedResizer(main.Resizer(**options), 10**8)
    images = [cv2.imdecode(np.frombuffer(r(io.BytesIO(face_photo()))[0], np.uint8), cv2.IMREAD_COLOR)
              for r in (blurring, plain)]
    difference = np.abs(images[0].astype(int) - images[1].astype(int)).sum(axis=2)
    x0, y0, x1, y1 = (np.array(FaceDetector().boxes_in(face_photo())[0]) * [512, 600, 512, 600]).astype(int)
    face = difference[y0:y1, x0:x1]
    outside = difference.copy()
    margin = (x1 - x0) // 2  # img2dataset widens the box by a tenth of its diagonal and feathers the mask
    outside[max(0, y0 - margin):y1 + margin, max(0, x0 - margin):x1 + margin] = 0
    assert face.mean() > 10 and outside.max() == 0  # blurred inside the face box (plus its margin) only


@pytest.mark.slow
def test_blur_faces_blurs_at_download_and_counts_the_faces(tmp_path, clean_env):
    import http.server
    import json
    import tarfile

    from tests.conftest import LoopbackServer, render
    from tests.curation.test_download import cli_download, write_balanced

    photos = {"/face.jpg": face_photo(), "/circle.jpg": render("red", "circle", size=256)}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            body = photos[self.path]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    with LoopbackServer(Handler) as server:
        write_balanced(tmp_path / "balanced", [server.base + "/face.jpg", server.base + "/circle.jpg"])
        done = cli_download(tmp_path, "--blur_faces", "--image_size", "600", "--resize_mode", "no",
                            "--encode_format", "png", "--encode_quality", "1", env=clean_env)
    assert done.returncode == 0, done.stderr
    stats = json.loads((tmp_path / "shards.stats.json").read_text())
    assert stats["successes"] == 2 and stats["faces_blurred"] == {"images_with_faces": 1, "faces": 1}
    with tarfile.open(tmp_path / "shards" / "00000.tar") as tar:
        stored = {json.loads(tar.extractfile(m.name[:-4] + ".json").read())["url"].rsplit("/")[-1]:
                  tar.extractfile(m).read() for m in tar.getmembers() if m.name.endswith(".png")}
    original = cv2.imdecode(np.frombuffer(face_photo(), np.uint8), cv2.IMREAD_COLOR).astype(int)
    blurred = cv2.imdecode(np.frombuffer(stored["face.jpg"], np.uint8), cv2.IMREAD_COLOR).astype(int)
    x0, y0, x1, y1 = (np.array(FaceDetector().boxes_in(face_photo())[0]) * [512, 600, 512, 600]).astype(int)
    assert np.abs(blurred - original)[y0:y1, x0:x1].mean() > 10  # the face is blurred in the shard
    assert np.abs(blurred - original)[-60:].mean() < 3  # the bottom of the portrait is not
