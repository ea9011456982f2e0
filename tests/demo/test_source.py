"""The embedded web's shape scenes: what training sees, and that the shapes eval stays held out."""

import numpy as np

from demo.source import (
    COLOURS,
    EVAL_SHAPE_COLOURS,
    SHAPE_COLOUR_MARGIN,
    SHAPES,
    DemoSourceConfig,
    _training_items,
    shape_scene,
    training_shape_colour,
)


def _pixels(image) -> set[tuple[int, int, int]]:
    return {tuple(int(v) for v in pixel) for pixel in np.asarray(image).reshape(-1, 3)}


def _nearest_eval_colour(pixel: tuple[int, int, int]) -> float:
    return min(float(np.linalg.norm(np.subtract(pixel, COLOURS[name]))) for name in EVAL_SHAPE_COLOURS)


def test_shape_captions_name_shapes_and_at_most_the_background_colour():
    rng = np.random.default_rng(0)
    for _ in range(300):
        pairs = [(training_shape_colour(rng), str(rng.choice(SHAPES))) for _ in range(int(rng.integers(1, 3)))]
        image, caption = shape_scene(rng, pairs, 96)
        assert all(shape in caption for _, shape in pairs), caption
        named = [name for name in COLOURS if f" {name} " in f" {caption} "]
        assert len(named) <= 1 and all(COLOURS[name] in _pixels(image) for name in named), caption
        assert all(COLOURS[name] != rgb for name in named for rgb, _ in pairs), caption


def test_training_never_draws_near_an_eval_colour_in_a_shape_scene():
    config = DemoSourceConfig(emoji_classes=1, emoji_per_class=0, emoji_pairs=0, popular_emoji=0,
                              digits_per_class=0, shapes=80, shape_pair_share=0.5, canvas=32)
    items = _training_items(config, np.random.default_rng(0))
    assert len(items) == 80 and all(family == "shape" for _, _, family in items)
    colours = set()
    for image, caption, _ in items:
        drawn = _pixels(image)
        assert len(drawn) >= 2 and min(map(_nearest_eval_colour, drawn)) >= SHAPE_COLOUR_MARGIN, caption
        colours |= drawn
    assert len(colours) > 60  # shapes come in many colours, not a palette's few


def test_eval_shapes_are_drawn_in_eval_colours_on_training_backgrounds():
    rng = np.random.default_rng(1)
    for colour in EVAL_SHAPE_COLOURS:
        image, _ = shape_scene(rng, [(COLOURS[colour], "circle")], 96)
        drawn = _pixels(image)
        assert COLOURS[colour] in drawn and len(drawn) == 2
        (background,) = drawn - {COLOURS[colour]}
        assert _nearest_eval_colour(background) >= SHAPE_COLOUR_MARGIN
