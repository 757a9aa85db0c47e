"""The measures of `sdlab.toymodel.edit_quality` that need no model."""

from sdlab.toymodel.edit_quality import capture_ceiling


def test_a_map_that_is_exactly_its_object_reaches_the_capture_bar():
    # issue 11's capture bar (mean IoU >= 0.6) is reachable at the toy model's 8x8 capture resolution
    for two in (False, True):
        m = capture_ceiling(32, two=two)
        assert len(m.rows) == 32 and all(len(r["ious"]) == (2 if two else 1) for r in m.rows)
        assert m["map_iou"] >= 0.6, (two, m)


def test_the_capture_ceiling_rises_with_the_map_resolution():
    ious = [capture_ceiling(16, two=True, res=r)["map_iou"] for r in (4, 8, 16, 64)]
    assert ious == sorted(ious) and ious[0] < ious[-1], ious
    assert ious[-1] > 0.9  # at the picture's own resolution the silhouette is (nearly) the evaluator's mask
