"""The toy world's grammar and renderer: determinism, captions, and clear errors for bad scenes."""

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from sdlab.toyworld import (
    BACKGROUNDS,
    COLORS,
    OBJECTS,
    PATTERNS,
    STYLES,
    Scene,
    object_mask,
    render,
    sample_scenes,
    vocabulary,
)
from sdlab.toyworld.scene import PLACES


def test_contract_sizes():
    assert len(OBJECTS) >= 8 and len(COLORS) >= 8 and len(BACKGROUNDS) >= 5
    assert "road" in BACKGROUNDS
    assert {"striped", "dotted"} <= set(PATTERNS) and {"watercolor", "creature"} <= set(STYLES)
    for word in list(OBJECTS) + list(COLORS) + list(BACKGROUNDS):
        assert word.isalpha() and " " not in word


def test_sample_scenes_is_deterministic_and_seed_dependent():
    assert sample_scenes(20, seed=3) == sample_scenes(20, seed=3)
    assert sample_scenes(20, seed=3) != sample_scenes(20, seed=4)
    assert sample_scenes(5, seed=3) == sample_scenes(20, seed=3)[:5]


def test_render_is_deterministic_64x64_rgb():
    for scene in sample_scenes(6, seed=11) + sample_scenes(2, seed=11, style="creature", watercolor=0):
        a, b = render(scene), render(scene)
        assert a.size == (64, 64) and a.mode == "RGB"
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_creature_style_turns_pastel_on_the_dark_grounds_only():
    """The creature style adds eyes and an outline; only on a road or at night, where a black outline would not
    stand out, is the whole picture mixed with white. Elsewhere the background is the plain render's, pixel for
    pixel, away from the outline."""
    from sdlab.toyworld.render import PASTEL, PASTEL_GROUNDS, object_mask

    for background in ("grass", "sky", "sand", "snow", "road", "night"):
        plain = Scene("cat", "red", background, size=30, x=32, y=34, texture_seed=5)
        creature = dataclasses.replace(plain, style="creature")
        a, b = (np.asarray(render(s), dtype=np.float32) for s in (plain, creature))
        away = ~ndimage.binary_dilation(object_mask(plain) > 0, iterations=6)
        if background in PASTEL_GROUNDS:
            expected = (1 - PASTEL) * a[away] + PASTEL * 255
            assert np.abs(b[away] - expected).max() <= 1.5, background  # both rounded to bytes
        else:
            assert np.array_equal(a[away], b[away]), background
        ring = ndimage.binary_dilation(object_mask(plain) > 0.5, iterations=2) & ~(object_mask(plain) > 0)
        assert b[ring].max(axis=1).mean() < b[away].mean() - 80, f"the outline stands out on {background}"


def test_render_depends_on_every_visible_field():
    base = Scene("cat", "red", "sky", size=34, x=30, y=32)
    changes = dict(object="dog", color="blue", background="sand", pattern="striped", style="watercolor", x=34.0)
    for field, value in changes.items():
        other = dataclasses.replace(base, **{field: value})
        assert not np.array_equal(np.asarray(render(base)), np.asarray(render(other))), field


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10**6), field=st.sampled_from(["object", "color"]), pick=st.integers(0, 7))
def test_replacing_one_word_changes_exactly_that_word(seed, field, pick):
    scene = sample_scenes(1, seed)[0]
    value = (OBJECTS if field == "object" else list(COLORS))[pick]
    if value == getattr(scene, field):
        return
    old, new = scene.caption.split(), dataclasses.replace(scene, **{field: value}).caption.split()
    assert len(old) == len(new)
    diff = [(a, b) for a, b in zip(old, new) if a != b]
    # "a"/"an" may follow the first word after it ("an orange cat" vs "a red cat")
    diff = [(a, b) for a, b in diff if {a, b} != {"a", "an"}]
    assert diff == [(getattr(scene, field), value)]


def test_caption_names_what_is_drawn():
    for scene in sample_scenes(200, seed=5, watercolor=0.3):
        words = scene.caption.split()
        assert scene.color in words and scene.object in words
        assert PLACES[scene.background].split()[-1] in words
        assert ("watercolor" in words) == (scene.style == "watercolor")
        assert ("bumpy" in words) == scene.bumpy
        if scene.pattern != "plain":
            assert scene.pattern in words
        assert set(words) <= set(vocabulary())


@pytest.mark.parametrize(
    "field, value, allowed",
    [("object", "unicorn", "cat"), ("color", "teal", "red"), ("background", "moon", "grass"),
     ("pattern", "plaid", "striped"), ("style", "oil", "watercolor")],
)
def test_unknown_field_values_are_named_with_the_alternatives(field, value, allowed):
    kwargs = dict(object="cat", color="red", background="sky")
    kwargs[field] = value
    with pytest.raises(ValueError, match=field) as err:
        Scene(**kwargs)
    assert value in str(err.value) and allowed in str(err.value)


def test_out_of_range_numbers_are_refused():
    for kwargs in (dict(size=100), dict(x=-20.0), dict(bumpiness=1.5), dict(phrasing=9)):
        with pytest.raises(ValueError):
            Scene("cat", "red", "road", **kwargs)


@pytest.mark.parametrize("n", [0, -3, 2.5, None])
def test_sample_scenes_needs_a_positive_count(n):
    with pytest.raises(ValueError, match="n must be a positive integer"):
        sample_scenes(n, seed=0)


def test_sample_scenes_style_options():
    assert {s.style for s in sample_scenes(30, 1, style="creature")} == {"creature"}
    assert {s.style for s in sample_scenes(30, 1, watercolor=1.0)} == {"watercolor"}
    with pytest.raises(ValueError, match="style"):
        sample_scenes(3, 1, style="oil")


def _off_prior(scenes):
    """Share of one-object scenes whose object's height or side lies outside its own `LAYOUT` ranges."""
    from sdlab.toyworld import LAYOUT

    ones = [s for s in scenes if s.second is None]
    out = [not (LAYOUT[s.object][0][0] <= s.y <= LAYOUT[s.object][0][1]
                and LAYOUT[s.object][1][0] <= s.size <= LAYOUT[s.object][1][1]) for s in ones]
    return sum(out) / len(out)


def test_layout_spread_lends_objects_other_objects_layouts():
    assert _off_prior(sample_scenes(300, seed=8)) == 0.0
    spread = sample_scenes(300, seed=8, layout_spread=0.5)
    assert 0.2 < _off_prior(spread) < 0.5  # half lent a random prior, some of which is their own or overlaps it
    assert _off_prior(sample_scenes(300, seed=8, layout_spread=1.0)) > _off_prior(spread)
    far = [s for s in spread if s.second is None and s.object == "bird" and s.y > 38]
    assert far  # a bird where cats stand
    for s in spread[:20]:  # still valid, laid-out scenes
        render(s)


@pytest.mark.parametrize("name", ["layout_spread", "pairs", "watercolor"])
@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_sample_scenes_refuses_probabilities_outside_0_1(name, value):
    with pytest.raises(ValueError, match=f"{name} is a probability and must lie in \\[0, 1\\], got {value}"):
        sample_scenes(3, 0, **{name: value})


def test_object_mask_is_the_drawn_silhouette():
    scene = Scene("house", "blue", "snow", size=36, x=32, y=32)
    mask = object_mask(scene) > 0.5
    pixels = np.asarray(render(scene), dtype=np.float32)
    blue = np.linalg.norm(pixels - np.array(COLORS["blue"]), axis=2) < 40
    assert (mask == blue).mean() > 0.97


def test_bumpiness_is_drawn_only_on_roads_and_graded():
    smooth = Scene("cat", "red", "road", bumpiness=0.0, texture_seed=1)
    bumpy = dataclasses.replace(smooth, bumpiness=1.0)
    assert not np.array_equal(np.asarray(render(smooth)), np.asarray(render(bumpy)))
    on_sand = dataclasses.replace(smooth, background="sand")
    assert np.array_equal(np.asarray(render(on_sand)), np.asarray(render(dataclasses.replace(on_sand, bumpiness=1.0))))


def test_creature_outline_dilation_matches_pils_max_filter_pixel_for_pixel():
    """render's fast dilation (the creature outline) is PIL's MaxFilter, edges and all, for every object and size."""
    from PIL import ImageFilter

    from sdlab.toyworld.render import _S, _dilate, _silhouette

    scenes = sample_scenes(12, seed=3, style="creature", world=2) + sample_scenes(8, seed=4, style="creature", world=1)
    things = [t for s in scenes for t in s.things]
    assert {t.object for t in things} >= {"cat", "dog", "fish", "bird"}
    for thing in things:
        silhouette = _silhouette(thing)
        for size in (3, 2 * 2 * _S + 1):
            assert np.array_equal(_dilate(silhouette, size), np.asarray(silhouette.filter(ImageFilter.MaxFilter(size))))
