"""Trimming instances' out-of-focus cross-sections (`fveseg.instances.haze`): hand-computed profiles,
blocks."""

import numpy as np
import pytest

from fveseg.instances.haze import (
    FOCUS_FRACTION,
    apply_trim,
    background_level,
    focus_decision,
    focus_profile,
    haze_relabel,
    haze_tables,
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


def blockwise(labels, image, fraction, bounds):
    """The block recipe of `trim_out_of_focus_in_blocks`, without dask."""
    parts = [focus_profile(labels[a:b], image[a:b], a) for a, b in bounds]
    columns = [np.concatenate([p[i] for p in parts]) for i in range(4)]
    decision = focus_decision(*columns, background_level([p[4] for p in parts]), fraction)
    trimmed = np.concatenate([apply_trim(labels[a:b], decision.keys, decision.stride, a) for a, b in bounds])
    near = total = 0
    for a, b in bounds:  # each block with its halo of `reach` slices
        lo, hi = max(0, a - decision.reach), min(len(labels), b + decision.reach)
        counts = haze_tables(trimmed[lo:hi], decision.peak, decision.reach, fraction, slice(a - lo, b - lo))
        near, total = near + counts[0], total + counts[1]
    lut = haze_relabel(near, total)
    keys, stride = decision.keys, decision.stride
    return np.concatenate([apply_trim(labels[a:b], keys, stride, a, lut) for a, b in bounds])


def test_profiles_of_blocks_give_the_whole_volume_result():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 6, (9, 16, 16)).astype(np.uint32)
    image = rng.random(labels.shape).astype(np.float32) * 100 + labels * 10
    image[:2] *= 0.2  # dim slices: some cross-sections go
    whole = trim_out_of_focus(labels, image, fraction=0.6)
    assert 0 < (whole != labels).sum() < labels.size
    np.testing.assert_array_equal(blockwise(labels, image, 0.6, ((0, 4), (4, 9))), whole)


def haze_stack(dim: float, gap: int = 0, columns: slice = slice(2, 8)):
    """A bright nucleus (cross-sections 100, z 10-14, columns 2:8) and a dim object of peak ``dim``, 3
    slices deep, with ``gap`` empty slices between it and the nucleus, in ``columns``; background 10."""
    labels = np.zeros((18, 10, 24), np.uint32)
    image = np.full(labels.shape, 10.0, np.float32)
    labels[10:15, 2:8, 2:8] = 2
    image[10:15, 2:8, 2:8] += 100
    top = 10 - gap
    labels[top - 3 : top, 2:8, columns] = 1
    image[top - 3 : top, 2:8, columns] += dim
    return labels, image


def test_a_dim_object_under_a_bright_one_is_its_haze():
    labels, image = haze_stack(dim=20)  # 20 < 0.3 * 100: the haze of object 2, gone
    out = trim_out_of_focus(labels, image)
    np.testing.assert_array_equal(out, np.where(labels == 2, 1, 0))  # object 2 renumbered to 1
    assert trim_out_of_focus(labels.astype(np.uint16), image).dtype == np.uint16  # the input's dtype
    kept = trim_out_of_focus(*haze_stack(dim=40))  # 40 >= 30: a dim nucleus of its own
    np.testing.assert_array_equal(kept, haze_stack(dim=40)[0])


def test_haze_needs_the_same_columns_and_a_nearby_depth():
    # typical depth: median extent of (3, 5) slices = 4 = the reach; with 2 empty slices between them,
    # 2 of the 3 dim slices (z 6, 7) are within 4 slices of the nucleus (z 10): share 2/3, haze
    near = haze_stack(dim=20, gap=2)
    np.testing.assert_array_equal(trim_out_of_focus(*near), np.where(near[0] == 2, 1, 0))
    far = haze_stack(dim=20, gap=3)  # only z 6 of z 4-6: share 1/3, a dim object of its own
    np.testing.assert_array_equal(trim_out_of_focus(*far), far[0])
    beside = haze_stack(dim=20, columns=slice(12, 18))
    np.testing.assert_array_equal(trim_out_of_focus(*beside), beside[0])
    half = haze_stack(dim=20, columns=slice(5, 11))  # 3 of 6 columns under the nucleus: share 0.5
    assert trim_out_of_focus(*half).max() == 1
    third = haze_stack(dim=20, columns=slice(6, 12))  # 2 of 6
    np.testing.assert_array_equal(trim_out_of_focus(*third), third[0])


def test_haze_removal_in_blocks_equals_the_whole_volume():
    labels, image = haze_stack(dim=20, gap=2)
    whole = trim_out_of_focus(labels, image)
    assert whole.max() == 1
    for bounds in (((0, 5), (5, 18)), ((0, 2), (2, 4), (4, 9), (9, 11), (11, 18))):
        np.testing.assert_array_equal(blockwise(labels, image, FOCUS_FRACTION, bounds), whole)


def test_on_a_dask_cluster_equals_the_whole_volume():
    da = pytest.importorskip("dask.array")
    distributed = pytest.importorskip("distributed")
    from fveseg.instances.haze import trim_out_of_focus_in_blocks

    with distributed.Client(
        processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None
    ) as client:
        for (labels, image), left in ((two_objects(3.0), 2), (haze_stack(dim=20, gap=1), 1)):
            chunked = da.from_array(labels, chunks=(3, -1, -1))
            lazy, count = trim_out_of_focus_in_blocks(client, chunked, image)
            np.testing.assert_array_equal(lazy.compute(), trim_out_of_focus(labels, image))
            assert count == left


def test_instances_from_prediction_is_split_plus_specks_plus_trim():
    from fveseg.instances.split import SPECK_FRACTION, instances_from_prediction, split_instances

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
