"""Trimming instances' out-of-focus cross-sections (`fveseg.focus`): hand-computed profiles, blocks."""

import numpy as np
import pytest

from fveseg.focus import (
    FOCUS_FRACTION,
    apply_trim,
    background_level,
    dropped_sections,
    focus_profile,
    trim_out_of_focus,
)


def two_objects(background=0.0):
    """Object 1 (z 0-4) with cross-section brightness 10, 100, 100, 100, 20 above background; object 2
    (z 1-3), dim everywhere (peak 12): its profile is relative to its own peak, so it stays whole."""
    labels = np.zeros((5, 12, 12), np.uint32)
    image = np.full(labels.shape, background, np.float32)
    labels[:, 1:6, 1:6] = 1
    image[:, 1:6, 1:6] += np.array([10, 100, 100, 100, 20], np.float32)[:, None, None]
    labels[1:4, 7:11, 7:11] = 2
    image[1:4, 7:11, 7:11] += np.array([8, 12, 8], np.float32)[:, None, None]
    return labels, image


@pytest.mark.parametrize("background", [0.0, 50.0])
def test_dim_cross_sections_go_and_dim_objects_stay(background):
    labels, image = two_objects(background)
    trimmed = trim_out_of_focus(labels, image, fraction=0.3)  # 10 and 20 are under 0.3 * 100
    expected = labels.copy()
    expected[0][expected[0] == 1] = 0
    expected[4][expected[4] == 1] = 0
    np.testing.assert_array_equal(trimmed, expected)
    # 0.15: only the 10 goes (20 >= 15)
    kept = trim_out_of_focus(labels, image, fraction=0.15)
    assert not (kept[0] == 1).any() and (kept[4] == 1).any()
    np.testing.assert_array_equal(labels, two_objects()[0])  # the input is not changed


def test_nothing_changes_without_a_focus_axis_or_with_fraction_zero():
    labels, image = two_objects()
    np.testing.assert_array_equal(trim_out_of_focus(labels, image, fraction=0), labels)
    np.testing.assert_array_equal(trim_out_of_focus(labels[:1], image[:1]), labels[:1])
    assert FOCUS_FRACTION == 0.3
    with pytest.raises(ValueError, match="must be equal"):
        trim_out_of_focus(labels, image[:4])


def test_other_axis_equals_the_transposed_volume():
    labels, image = two_objects(5.0)
    along_y = trim_out_of_focus(labels.transpose(1, 0, 2), image.transpose(1, 0, 2), axis=1)
    np.testing.assert_array_equal(along_y, trim_out_of_focus(labels, image).transpose(1, 0, 2))


def test_profiles_of_blocks_give_the_whole_volume_result():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 6, (9, 16, 16)).astype(np.uint32)
    image = rng.random(labels.shape).astype(np.float32) * 100 + labels * 10
    image[:2] *= 0.2  # dim slices: some cross-sections go
    whole = trim_out_of_focus(labels, image, fraction=0.6)
    assert 0 < (whole != labels).sum() < labels.size
    parts = [focus_profile(labels[a:b], image[a:b], a) for a, b in ((0, 4), (4, 9))]
    columns = [np.concatenate([p[i] for p in parts]) for i in range(4)]
    keys, stride = dropped_sections(*columns, background_level([p[4] for p in parts]), 0.6)
    blocks = np.concatenate([apply_trim(labels[a:b], keys, stride, a) for a, b in ((0, 4), (4, 9))])
    np.testing.assert_array_equal(blocks, whole)


def test_on_a_dask_cluster_equals_the_whole_volume():
    da = pytest.importorskip("dask.array")
    distributed = pytest.importorskip("distributed")
    from fveseg.focus import trim_out_of_focus_in_blocks

    labels, image = two_objects(3.0)
    with distributed.Client(
        processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None
    ) as client:
        lazy = trim_out_of_focus_in_blocks(client, da.from_array(labels, chunks=(2, -1, -1)), image)
        np.testing.assert_array_equal(lazy.compute(), trim_out_of_focus(labels, image))


def test_instances_from_prediction_is_split_plus_specks_plus_trim():
    from fveseg.instances import SPECK_FRACTION, instances_from_prediction, split_instances

    labels, image = two_objects(2.0)
    mask = labels > 0
    edges = np.zeros(mask.shape, np.float32)
    split = split_instances(mask, edges, spacing=(2.0, 1.0, 1.0), min_relative_size=SPECK_FRACTION)
    np.testing.assert_array_equal(instances_from_prediction(mask, edges, None, (2.0, 1.0, 1.0)), split)
    trimmed = instances_from_prediction(mask, edges, image, (2.0, 1.0, 1.0))
    np.testing.assert_array_equal(trimmed, trim_out_of_focus(split, image))
    assert (trimmed > 0).sum() < (split > 0).sum()  # object 1's dim first and last slices went
    kept = instances_from_prediction(mask, edges, image, (2.0, 1.0, 1.0), focus_fraction=0)
    np.testing.assert_array_equal(kept, split)
