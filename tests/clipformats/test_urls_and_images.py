"""One URL policy and one pixel limit, as `match`, `download` and `decontaminate` apply them."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from clipformats.images import MAX_IMAGE_PIXELS, ImageTooLarge, open_image
from clipformats.urls import allowed_schemes, url_problem
from tests.conftest import png_header


@pytest.mark.parametrize(("url", "problem"), [
    ("http:///a.jpg", "no host"),
    ("http://[::1", "malformed URL"),
    ("http://[::1/a.jpg", "malformed URL"),
    ("https://user:pass@example.com/a.jpg", "credentials"),
    ("http://@example.com/a.jpg", "credentials"),
    ("http://example.com:99999/a.jpg", "malformed URL"),
    ("file:///etc/passwd", "scheme 'file' not allowed"),
    ("ftp://example.com/a.jpg", "scheme 'ftp' not allowed"),
    ("http://exa mple.com/a.jpg", "whitespace"),
    ("", "empty URL"),
])
def test_hostile_urls_are_refused_with_a_countable_reason(url, problem):
    assert problem in url_problem(url)


def test_good_urls_pass_and_other_schemes_only_by_name():
    for url in ("http://example.com/a.jpg", "HTTPS://Example.com:8443/a b".replace(" ", "%20"), "http://[::1]:80/x"):
        assert url_problem(url) is None, url
    assert url_problem("file:///data/a.jpg", allowed_schemes(["file"])) is None
    assert "no path" in url_problem("file://", allowed_schemes(["file"]))


def test_the_pixel_limit_is_read_from_the_header_before_decoding():
    assert MAX_IMAGE_PIXELS == Image.MAX_IMAGE_PIXELS or MAX_IMAGE_PIXELS == 89_478_485
    with pytest.raises(ImageTooLarge, match="over the pixel limit"):
        open_image(png_header(30000, 30000))  # 900 Mpx: would be 2.7 GB decoded
    with pytest.raises(ImageTooLarge):
        open_image(png_header(200, 200), limit=39_999)
    buffer = io.BytesIO()
    Image.new("RGB", (200, 200)).save(buffer, "PNG")
    assert open_image(buffer.getvalue(), limit=40_000).size == (200, 200)
