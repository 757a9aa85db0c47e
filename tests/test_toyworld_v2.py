"""World 2 of the toy world: layout by object, one or two objects, a horizon and unnamed detail."""

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from sdlab.toyworld import GROUNDS, LAYOUT, OBJECTS, Scene, Thing, object_mask, object_masks, render, sample_scenes
from sdlab.toyworld.scene import MIN_GAP, vocabulary


@pytest.fixture(scope="module")
def world2():
    return sample_scenes(1500, 7, world=2, watercolor=0.2)


def test_world_1_is_unchanged_by_the_new_options():
    scenes = sample_scenes(200, 3, watercolor=0.3, world=1)
    assert all(s.second is None and s.horizon == 0 and s.details == 0 and s.facing == 1 for s in scenes)
    assert sample_scenes(200, 3, watercolor=0.3) == sample_scenes(200, 3, watercolor=0.3, world=2)  # the default
    with pytest.raises(ValueError, match="world must be 1 or 2"):
        sample_scenes(3, 0, world=3)


def test_world_2_is_deterministic_and_differs_from_world_1():
    assert sample_scenes(30, 4, world=2) == sample_scenes(30, 4, world=2)
    assert sample_scenes(30, 4, world=2) != sample_scenes(30, 5, world=2)
    assert sample_scenes(30, 4, world=2) != sample_scenes(30, 4, world=1)


def test_layout_depends_on_the_object(world2):
    def mean(name, field):
        return np.mean([getattr(t, field) for s in world2 if s.second is None for t in s.things if t.object == name])

    for name, ((y0, y1), (s0, s1)) in LAYOUT.items():
        assert y0 - 1 <= mean(name, "y") <= y1 + 1 and s0 <= mean(name, "size") <= s1, name
    assert mean("bird", "y") + 10 < mean("fish", "y") < mean("cat", "y") - 5
    assert mean("house", "size") > mean("bird", "size") + 10


def test_pairs_horizons_details_and_facing_are_drawn(world2):
    pairs = [s for s in world2 if s.second is not None]
    assert 0.3 < len(pairs) / len(world2) < 0.5
    assert all(s.second.object != s.object for s in pairs)
    left_first = np.mean([s.x < s.second.x for s in pairs])
    assert 0.35 < left_first < 0.65  # which object stands left is random, not captioned
    grounds = [s for s in world2 if s.background in GROUNDS]
    assert 0.6 < np.mean([s.horizon > 0 for s in grounds]) < 0.8
    assert all(s.horizon == 0 for s in world2 if s.background not in GROUNDS)
    assert {s.details for s in world2} == {1, 2, 3, 4, 5}
    assert {s.facing for s in world2 if s.object == "fish"} == {1, -1}


def test_two_objects_are_captioned_in_order(world2):
    for s in [s for s in world2 if s.second is not None][:50]:
        words = s.caption.split()
        assert "and" in words and set(words) <= set(vocabulary())
        first, second = " ".join(words[: words.index("and")]), " ".join(words[words.index("and") :])
        assert s.object in first.split() and s.color in first.split()
        assert s.second.object in second.split() and s.second.color in second.split()


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10**6), pick=st.integers(0, 7))
def test_replacing_the_second_object_changes_one_word(seed, pick):
    scene = next(s for s in sample_scenes(20, seed, world=2) if s.second is not None)
    new = OBJECTS[pick]
    if new in (scene.object, scene.second.object):
        return
    other = dataclasses.replace(scene, second=dataclasses.replace(scene.second, object=new))
    diff = [(a, b) for a, b in zip(scene.caption.split(), other.caption.split()) if a != b]
    assert diff == [(scene.second.object, new)]


def test_render_depends_on_the_new_fields():
    base = Scene("fish", "red", "grass", size=30, x=20, y=40, texture_seed=3)
    changes = dict(horizon=20.0, details=3, facing=-1, second=Thing("dog", "blue", size=24, x=54, y=44))
    pixels = np.asarray(render(base))
    for field, value in changes.items():
        assert not np.array_equal(pixels, np.asarray(render(dataclasses.replace(base, **{field: value})))), field
    both = dataclasses.replace(base, second=changes["second"])
    masks = object_masks(both)
    assert len(masks) == 2 and np.array_equal(object_mask(both), np.maximum(*masks))
    assert (np.asarray(render(both))[masks[1] > 0.99] == (35, 75, 225)).all(axis=1).mean() > 0.9


def test_detail_keeps_away_from_the_objects(world2):
    for scene in [s for s in world2 if s.background != "road"][:40]:
        bare = dataclasses.replace(scene, details=0)
        changed = np.abs(np.asarray(render(scene), float) - np.asarray(render(bare), float)).sum(axis=2) > 0
        near = ndimage.binary_dilation(object_mask(scene) > 0, iterations=2)
        assert changed.any() and not (changed & near).any(), scene


def test_bad_world_2_scenes_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="overlap"):
        Scene("cat", "red", "grass", size=24, x=20, y=40, second=Thing("dog", "blue", size=24, x=40, y=40))
    Scene("cat", "red", "grass", size=24, x=20, y=40, second=Thing("dog", "blue", size=24, x=44 + MIN_GAP, y=40))
    with pytest.raises(ValueError, match="horizon"):
        Scene("cat", "red", "sky", horizon=20.0)
    with pytest.raises(ValueError, match="details"):
        Scene("cat", "red", "grass", details=9)
    with pytest.raises(ValueError, match="facing"):
        Scene("fish", "red", "grass", facing=0)
    with pytest.raises(TypeError, match="Thing"):
        Scene("cat", "red", "grass", second=("dog", "blue"))
    with pytest.raises(ValueError, match="color 'teal'"):
        Thing("dog", "teal")
    with pytest.raises(ValueError, match="does not fit"):
        Thing("dog", "blue", size=30, x=70)
