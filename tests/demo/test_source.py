"""The embedded web's shape scenes: what training sees, and that the shapes eval stays held out."""

import numpy as np

from demo.source import COLOURS, EVAL_SHAPE_COLOURS, SHAPES, DemoSourceConfig, _training_items, shape_scene


def _drawn_colours(image) -> set[str]:
    pixels = {tuple(int(v) for v in pixel) for pixel in np.asarray(image).reshape(-1, 3)}
    return {name for name, rgb in COLOURS.items() if rgb in pixels}


def test_shape_captions_name_shapes_and_never_the_shape_colour():
    rng = np.random.default_rng(0)
    for _ in range(200):
        pairs = [("red", str(rng.choice(SHAPES))), ("blue", str(rng.choice(SHAPES)))][: int(rng.integers(1, 3))]
        _, caption = shape_scene(rng, pairs, 96)
        assert all(shape in caption for _, shape in pairs), caption
        assert not any(colour in caption for colour, _ in pairs), caption


def test_training_never_draws_an_eval_colour_in_a_shape_scene():
    config = DemoSourceConfig(emoji_classes=1, emoji_per_class=0, emoji_pairs=0, popular_emoji=0,
                              digits_per_class=0, shapes=60, canvas=32)
    items = _training_items(config, np.random.default_rng(0))
    assert items and all(family == "shape" for _, _, family in items)
    for image, caption, _ in items:
        drawn = _drawn_colours(image)
        assert drawn and not drawn & set(EVAL_SHAPE_COLOURS), (caption, drawn)


def test_eval_shapes_are_drawn_in_eval_colours_on_training_backgrounds():
    rng = np.random.default_rng(1)
    for colour in EVAL_SHAPE_COLOURS:
        image, _ = shape_scene(rng, [(colour, "circle")], 96)
        drawn = _drawn_colours(image)
        assert colour in drawn and len(drawn - set(EVAL_SHAPE_COLOURS)) == 1
