"""Instance splitting on hand-built volumes with known answers, and a small anisotropic synthetic."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from fveseg.errors import InputError
from fveseg.instances.split import split_instances
from fveseg.metrics import instance_scores


def ball(shape, centre, radius, spacing=(1.0, 1.0, 1.0)):
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    r2 = sum(((g - c) * s / r) ** 2 for g, c, s, r in zip(grids, centre, spacing, np.broadcast_to(radius, 3)))
    return r2 <= 1.0


def two_touching_spheres():
    shape = (20, 20, 40)
    left, right = ball(shape, (10, 10, 12), 7), ball(shape, (10, 10, 26), 7)
    mask = left | right
    edges = np.zeros(shape, np.float32)
    edges[:, :, 19] = 1.0  # the plane between the centres (x = 12 ... 26)
    return mask, edges


@pytest.mark.parametrize("method", ["watershed", "reference"])
def test_two_touching_spheres_split_into_two(method):
    mask, edges = two_touching_spheres()
    labels = split_instances(mask, edges, method=method)
    assert labels.dtype == np.uint32 and labels.shape == mask.shape
    assert set(np.unique(labels)) == {0, 1, 2}
    left_id, right_id = labels[10, 10, 12], labels[10, 10, 26]
    assert left_id != right_id and 0 not in (left_id, right_id)
    assert np.all(labels[:, :, :19][mask[:, :, :19]] == left_id)
    assert np.all(labels[:, :, 20:][mask[:, :, 20:]] == right_id)
    assert np.array_equal(labels > 0, mask)  # the 1-voxel plane is within the 2-voxel expansion


def test_without_edges_touching_spheres_stay_one():
    mask, _ = two_touching_spheres()
    # no edge map and no neck (the spheres overlap widely): one object
    assert split_instances(mask, None, split_necks=None).max() == 1


def test_small_sphere_covered_by_edges_survives_watershed_only():
    shape = (16, 16, 32)
    big, small = ball(shape, (8, 8, 8), 6), ball(shape, (8, 8, 25), 2)
    mask = big | small
    edges = np.zeros(shape, np.float32)
    edges[small] = 0.9  # the edge map covers the whole small object
    watershed = split_instances(mask, edges)
    reference = split_instances(mask, edges, method="reference")
    assert watershed.max() == 2 and np.array_equal(watershed > 0, mask)
    assert np.unique(watershed[small]).size == 1
    assert reference.max() == 1 and not reference[small].any()


def test_every_mask_voxel_labelled_far_from_seed():
    mask = np.ones((1, 1, 10), bool)
    edges = np.zeros(mask.shape)
    edges[..., 3:] = 1.0  # seed = voxels 0..2
    reference = split_instances(mask, edges, method="reference")
    # the recipe expands 2 voxels (to x = 4) and drops the rest
    assert reference[0, 0].tolist() == [1] * 5 + [0] * 5
    assert split_instances(mask, edges)[0, 0].tolist() == [1] * 10


def test_random_masks_fully_labelled_and_sequential():
    rng = np.random.default_rng(0)
    for _ in range(5):
        probability = ndi.gaussian_filter(rng.random((6, 24, 24)), 1.5)
        probability = (probability - probability.min()) / np.ptp(probability)
        edges = ndi.gaussian_filter(rng.random(probability.shape), 1.0)
        edges = (edges - edges.min()) / np.ptp(edges)
        labels = split_instances(probability, edges, spacing=(2.0, 1.0, 1.0))
        assert np.array_equal(labels > 0, probability > 0.5)
        assert np.array_equal(np.unique(labels), np.arange(labels.max() + 1))


def nucleus_cut_at(cut_slice):
    """An ellipsoid nucleus on a z step 3× the pixel size, cut by an all-edge slice."""
    spacing = (3.0, 1.0, 1.0)
    shape = (12, 24, 24)
    mask = ball(shape, (5.5, 12, 12), (15.0, 9.0, 9.0), spacing)  # z slices 1..10
    edges = np.zeros(shape, np.float32)
    edges[cut_slice][mask[cut_slice]] = 1.0
    return mask, edges, spacing


def test_thin_pole_fragment_merges_into_its_nucleus():
    mask, edges, spacing = nucleus_cut_at(9)  # leaves a 1-slice cap (slice 10)
    off = dict(fragment_slices=0, fragment_fraction=0.0, merge_z_splits=False)
    assert split_instances(mask, edges, spacing, **off).max() == 2
    assert split_instances(mask, edges, spacing, method="reference").max() == 2
    merged = split_instances(mask, edges, spacing, merge_z_splits=False)  # the thin-fragment rule alone
    assert merged.max() == 1 and np.array_equal(merged > 0, mask)


def test_nucleus_split_along_z_is_rejoined():
    mask, edges, spacing = nucleus_cut_at(5)  # two thick halves
    assert split_instances(mask, edges, spacing, merge_z_splits=False).max() == 2
    assert split_instances(mask, edges, spacing).max() == 1


def test_small_neighbour_touching_side_by_side_survives():
    shape = (20, 20, 36)
    big, small = ball(shape, (10, 10, 12), 8), ball(shape, (10, 10, 22.5), 3)
    mask = big | small
    edges = np.zeros(shape, np.float32)
    edges[:, :, 20] = 1.0
    labels = split_instances(mask, edges)
    assert labels.max() == 2  # 12 % of the big one's volume, but it only touches it on one side


def test_min_size_in_physical_units():
    mask = np.zeros((4, 10, 20), bool)
    mask[1:3, 2:7, 2:7] = True  # 50 voxels of 2 µm³ = 100 µm³
    mask[1:2, 2:4, 14:16] = True  # 4 voxels = 8 µm³, isolated
    spacing = (2.0, 1.0, 1.0)
    assert split_instances(mask, None, spacing, min_size=5.0).max() == 2
    kept = split_instances(mask, None, spacing, min_size=10.0)
    assert kept.max() == 1 and kept[1, 2, 14] == 0 and kept[1, 3, 3] == 1
    assert split_instances(mask, None, min_size=5.0).max() == 1  # no spacing: 5 voxels


def test_min_size_merges_small_object_into_touching_neighbour():
    mask = np.zeros((1, 8, 16), bool)
    mask[0, 1:7, 1:9] = True
    mask[0, 3:5, 9:11] = True  # a 4-voxel nub on the right
    edges = np.zeros(mask.shape)
    edges[0, :, 9] = 1.0  # separates the nub's first column
    labels = split_instances(
        mask, edges, split_necks=None, fragment_fraction=0.0, fragment_slices=0, min_size=6
    )
    assert labels.max() == 1 and np.array_equal(labels > 0, mask)


def test_two_dimensional_input():
    yy, xx = np.mgrid[0:20, 0:40]
    mask = ((yy - 10) ** 2 + (xx - 12) ** 2 <= 49) | ((yy - 10) ** 2 + (xx - 26) ** 2 <= 49)
    edges = np.zeros(mask.shape)
    edges[:, 19] = 1.0
    for method in ("watershed", "reference"):
        labels = split_instances(mask, edges, spacing=(0.5, 0.5), method=method)
        assert labels.shape == mask.shape and labels.max() == 2
    probability = mask * 0.8
    assert np.array_equal(split_instances(probability, edges) > 0, mask)


def test_input_errors():
    mask = np.ones((2, 4, 4), bool)
    with pytest.raises(InputError, match="edges shape"):
        split_instances(mask, np.zeros((2, 4, 5)))
    with pytest.raises(InputError, match="method"):
        split_instances(mask, method="magic")
    with pytest.raises(InputError, match="spacing"):
        split_instances(mask, spacing=(1.0, 1.0))
    with pytest.raises(InputError, match="2D"):
        split_instances(np.ones(4, bool))


def touching_ellipsoids(shape, n_objects, radii, spacing, seed):
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.uint32)
    best = np.full(shape, np.inf)
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    for index in range(1, n_objects + 1):
        centre = rng.uniform(0, 1, 3) * np.array(shape)
        radius = np.asarray(radii) * rng.uniform(0.8, 1.2, 3)
        r2 = sum(((g - c) * s / r) ** 2 for g, c, s, r in zip(grids, centre, spacing, radius))
        take = (r2 < 1) & (r2 < best)
        labels[take], best[take] = index, r2[take]
    return labels


def test_anisotropic_synthetic_watershed_beats_reference():
    """Touching nuclei, z step 3× the pixel size; prediction = truth blurred in z, noisy slice edges."""
    rng = np.random.default_rng(1)
    spacing = (0.75, 0.25, 0.25)
    truth = touching_ellipsoids((20, 80, 80), 12, (3.0, 3.5, 3.5), spacing, seed=1)
    probability = ndi.gaussian_filter((truth > 0).astype(np.float32), 1.0)
    probability += 0.1 * rng.normal(size=truth.shape) * (probability > 0.2)
    footprint = np.ones((1, 3, 3), bool)
    gradient = ndi.grey_dilation(truth, footprint=footprint) != ndi.grey_erosion(truth, footprint=footprint)
    edges = np.clip(ndi.gaussian_filter1d(gradient.astype(np.float32), 0.7, axis=0) * 1.5, 0, 1)
    edges[[4, 13]] = np.maximum(edges[[4, 13]], truth[[4, 13]] > 0)  # two slices cut every nucleus
    scores = {
        m: instance_scores(truth, split_instances(probability, edges, spacing, method=m, min_size=1.0))
        for m in ("reference", "watershed")
    }
    # measured: watershed F1 0.78 (9 tp, 2 fp, 3 fn), reference 0.55 (8 tp, 9 fp, 4 fn)
    assert scores["watershed"]["f1"] >= 0.75
    assert scores["watershed"]["f1"] >= scores["reference"]["f1"] + 0.15
    assert scores["watershed"]["dsc_tp"] >= max(0.85, scores["reference"]["dsc_tp"])


@pytest.mark.parametrize("two_d", [True, False])
def test_neck_splits_touching_objects_without_edges(two_d):
    yy, xx = np.mgrid[0:24, 0:44]
    mask = ((yy - 12) ** 2 + (xx - 12) ** 2 <= 81) | ((yy - 12) ** 2 + (xx - 29.5) ** 2 <= 81)  # neck 5 px
    mask = mask if two_d else np.repeat(mask[None], 3, axis=0)  # a 3-slice stack cut by the volume border
    assert split_instances(mask).max() == 2
    assert split_instances(mask, split_necks=None).max() == 1


def necks_one_seed_at_a_time(seeds, spacing, ratio=0.5, min_core=0.2, min_voxels=64):
    """The plain definition of neck splitting: each seed alone on its bounding box (a known answer)."""
    import cc3d
    import edt

    from fveseg.instances.grow import grow_in_mask

    split, next_id = seeds.copy(), int(seeds.max()) + 1
    for index, box in enumerate(ndi.find_objects(seeds), start=1):
        own = seeds[box] == index
        if box is None or own.sum() < min_voxels:
            continue
        margin = [(int(b.start > 0), int(b.stop < n)) for b, n in zip(box, seeds.shape)]
        inner = tuple(slice(lo, lo + n) for (lo, _), n in zip(margin, own.shape))
        distance = edt.edt(np.pad(own, margin), anisotropy=spacing, black_border=False)[inner]
        cores = cc3d.connected_components(distance >= ratio * distance.max(), connectivity=6)
        size = np.bincount(cores.ravel())
        size[0] = 0
        kept = np.flatnonzero(size >= min_core * size.max())
        if kept.size < 2:
            continue
        ids = np.zeros(size.size, np.uint32)
        ids[kept] = np.arange(next_id, next_id + kept.size)
        next_id += kept.size
        split[box][own] = ids[cores[own]]
    return grow_in_mask(split, seeds > 0, spacing)


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.0, 0.5, 0.5)])
def test_neck_splitting_all_seeds_at_once_equals_one_seed_at_a_time(spacing):
    """Packed boxes (borders touched or not, depths binned) give exactly the per-seed answer."""
    import cc3d

    from fveseg.instances.necks import split_at_necks

    rng = np.random.default_rng(3)
    for shape in [(10, 40, 40), (6, 64, 48)]:
        field = ndi.gaussian_filter(rng.random(shape), (1.0, 2.5, 2.5))
        seeds = cc3d.connected_components(
            field > np.quantile(field, 0.55), connectivity=6, out_dtype=np.uint32
        )
        expected = necks_one_seed_at_a_time(seeds, spacing)
        assert expected.max() > seeds.max()  # some seeds do split
        assert np.array_equal(split_at_necks(seeds, spacing, 0.5), expected)
    # two dumbbells, one in the middle and one cut by the volume's borders, plus a seed too small
    seeds = np.zeros((9, 30, 60), np.uint32)
    yy, xx = np.mgrid[0:30, 0:60]
    dumbbell = ((yy - 15) ** 2 + (xx - 12) ** 2 <= 64) | ((yy - 15) ** 2 + (xx - 28) ** 2 <= 64)
    seeds[2:7][:, dumbbell] = 1
    seeds[:, np.roll(dumbbell, 29, axis=1) & ~dumbbell & (xx > 38)] = 2
    seeds[0, 0, 0] = 3
    expected = necks_one_seed_at_a_time(seeds, spacing)
    assert np.array_equal(split_at_necks(seeds, spacing, 0.5), expected)


def test_relative_speck_filter_drops_only_specks():
    """Objects under 10 % of the typical (voxel-weighted median) size are dropped; others are kept."""
    mask = np.zeros((1, 40, 80), bool)
    mask[0, 2:22, 2:22] = True  # 400 px
    mask[0, 2:22, 30:50] = True  # 400 px
    mask[0, 30:36, 60:66] = True  # 36 px: 9 % of 400 -> speck
    mask[0, 30:37, 2:9] = True  # 49 px: 12 % of 400 -> kept
    kept = split_instances(mask, None, min_relative_size=0.1, split_necks=None)
    assert kept.max() == 3
    assert not kept[0, 30:36, 60:66].any() and kept[0, 30:37, 2:9].all()
    assert split_instances(mask, None, split_necks=None).max() == 4  # default keeps everything


def _balls(shape, centres, radius, spacing):
    """Boolean mask of balls of ``radius`` (physical units) at ``centres`` (voxel indices)."""
    grid = np.indices(shape).astype(float)
    mask = np.zeros(shape, bool)
    for centre in centres:
        d2 = sum(((grid[a] - centre[a]) * spacing[a]) ** 2 for a in range(3))
        mask |= d2 <= radius**2
    return mask


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.0, 1.0, 1.0)])
def test_distance_split_separates_touching_balls_in_physical_units(spacing):
    from fveseg.instances.split import split_instances

    shape = (int(40 / spacing[0]), 40, 60)
    z = shape[0] // 2
    mask = _balls(shape, [(z, 20, 18), (z, 20, 35)], 9.0, spacing)  # centres 17 apart: the balls overlap
    labels = split_instances(mask, None, spacing=spacing, method="distance")
    assert labels.max() == 2
    left, right = labels[z, 20, 12], labels[z, 20, 42]
    assert left and right and left != right
    np.testing.assert_array_equal(labels > 0, mask)  # the instances cover exactly the mask


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.0, 1.0, 1.0)])
def test_distance_split_separates_neighbours_on_a_diagonal_more_than_a_radius_apart(spacing):
    from fveseg.instances.split import split_instances

    # two balls of radius 8 whose centres are 1.8 radii apart along the 3D diagonal: each coordinate
    # differs by 1.04 radii, so a box of +-1 radius around one centre would hold the other; the rule
    # "centres closer than a typical radius are one nucleus" keeps both
    radius, offset = 8.0, 8.3
    shape = (int(44 / spacing[0]), 44, 44)
    first = np.array([14.0, 14.0, 14.0])
    second = first + offset
    centres = [first / np.array([spacing[0], 1, 1]), second / np.array([spacing[0], 1, 1])]
    mask = _balls(shape, centres, radius, spacing)
    labels = split_instances(mask, None, spacing=spacing, method="distance")
    assert labels.max() == 2
    at = [tuple(np.round(c).astype(int)) for c in centres]
    assert labels[at[0]] and labels[at[1]] and labels[at[0]] != labels[at[1]]
    np.testing.assert_array_equal(labels > 0, mask)


def test_ball_maxima_equal_a_maximum_filter_with_a_ball_footprint():
    from scipy import ndimage as ndi

    from fveseg.instances.split import _ball_maxima

    rng = np.random.default_rng(0)
    distance = ndi.gaussian_filter(rng.random((12, 40, 40)), 2.0)
    steps, radius = np.array([2.0, 1.0, 1.0]), 5.0
    half = [max(1, int(round(radius / s))) for s in steps]
    grids = np.ogrid[tuple(slice(-h, h + 1) for h in half)]
    ball = sum((g * s / radius) ** 2 for g, s in zip(grids, steps)) <= 1.0
    inside = np.ones(distance.shape, bool)
    expected = distance >= ndi.maximum_filter(distance, footprint=ball, mode="nearest")
    np.testing.assert_array_equal(_ball_maxima(inside, distance, steps, radius), expected)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_watershed_by_component_equals_one_watershed_of_the_whole_volume(seed):
    from scipy import ndimage as ndi
    from skimage.segmentation import watershed

    from fveseg.instances.split import _watershed_by_component

    rng = np.random.default_rng(seed)
    inside = ndi.gaussian_filter(rng.random((10, 48, 48)), 2.0) > 0.5  # many pieces, some touching faces
    distance = ndi.distance_transform_edt(inside).astype(np.float32)
    distance[inside] = np.round(distance[inside])  # plateaus: ties decided by the flood's visiting order
    markers = np.zeros(inside.shape, np.uint32)
    spots = np.flatnonzero(inside)
    chosen = rng.choice(spots, size=25, replace=False)
    markers.flat[chosen] = np.arange(1, 26)
    expected = watershed(-distance, markers, mask=inside).astype(np.uint32)
    got = _watershed_by_component(distance, markers, inside)
    assert got.dtype == np.uint32
    np.testing.assert_array_equal(got, expected)
    pieces, count = ndi.label(inside)
    seeded = np.unique(pieces[markers > 0])
    assert 0 < seeded.size < count  # the case has pieces without a seed (left 0) as well as seeded ones
    assert np.bincount(pieces[markers > 0]).max() >= 2  # and pieces flooded from several seeds


def test_distance_split_keeps_one_ball_whole_and_an_empty_mask_empty():
    from fveseg.instances.split import split_instances

    mask = _balls((30, 30, 30), [(15, 15, 15)], 10.0, (1.0, 1.0, 1.0))
    assert split_instances(mask, None, method="distance").max() == 1
    assert split_instances(np.zeros((5, 8, 8), bool), None, method="distance").max() == 0


def test_auto_method_is_distance_for_volumes_and_watershed_for_one_slice():
    from fveseg.instances.split import split_instances

    spacing = (1.0, 1.0, 1.0)
    volume = _balls((30, 30, 50), [(15, 15, 15), (15, 15, 31)], 8.0, spacing)
    np.testing.assert_array_equal(
        split_instances(volume, None, spacing=spacing, method="auto"),
        split_instances(volume, None, spacing=spacing, method="distance"),
    )
    image = volume[15]
    edges = np.zeros(image.shape)
    edges[:, 23] = 1.0  # the network's edge between the two discs
    watershed = split_instances(image, edges, method="watershed")
    np.testing.assert_array_equal(split_instances(image, edges, method="auto"), watershed)
    assert watershed.max() == 2


def _two_seeded_balls(gap: float, radius: float = 10.0):
    """Two balls whose centres are ``gap`` radii apart plus a lone ball, split by a watershed of the
    negated distance from one seed per centre: labels 1 and 2 touch, 3 stands apart."""
    import edt
    from skimage.segmentation import watershed

    shape = (30, 30, 100)
    centres = [(15, 15, 20), (15, 15, 20 + gap * radius), (15, 15, 80)]
    mask = _balls(shape, centres, radius, (1.0, 1.0, 1.0))
    distance = edt.edt(mask)
    markers = np.zeros(shape, np.uint32)
    for index, centre in enumerate(centres, start=1):
        markers[tuple(int(round(c)) for c in centre)] = index
    return watershed(-distance, markers, mask=mask).astype(np.uint32), distance


@pytest.mark.parametrize(("gap", "ratio", "merged"), [(0.6, 0.9, True), (1.2, 0.9, False), (1.2, 0.75, True)])
def test_merge_thick_necks_follows_the_neck_of_two_balls(gap, ratio, merged):
    """Balls of radius r with centres d apart meet at a neck of r * sqrt(1 - (d / 2r)**2): 0.95 r at
    d = 0.6 r, 0.80 r at d = 1.2 r. The pair merges when the neck is at least ``ratio`` r; the lone ball
    keeps its id, and a merged pair takes the lower one."""
    from fveseg.instances.split import merge_thick_necks

    labels, distance = _two_seeded_balls(gap)
    assert set(np.unique(labels)) == {0, 1, 2, 3}
    out = merge_thick_necks(labels, distance, ratio)
    expected = np.where(labels == 2, 1, labels) if merged else labels
    np.testing.assert_array_equal(out, expected)


def test_distance_split_merges_two_lobes_joined_by_a_thick_neck_only_when_asked():
    from fveseg.instances.split import split_instances

    # a dumbbell: balls of radius 10 at both ends of a cylinder of radius 9.5, 30 voxels between the
    # centres: two distance maxima (10) more than a radius apart, joined by a neck of 9.5 (0.95 of them)
    shape = (30, 30, 70)
    mask = _balls(shape, [(15, 15, 20), (15, 15, 50)], 10.0, (1.0, 1.0, 1.0))
    z, y, x = np.indices(shape)
    mask |= ((z - 15) ** 2 + (y - 15) ** 2 <= 9.5**2) & (x >= 20) & (x <= 50)
    assert split_instances(mask, None, method="distance").max() == 2
    merged = split_instances(mask, None, method="distance", merge_necks=0.9)
    assert merged.max() == 1
    np.testing.assert_array_equal(merged > 0, mask)
    # two whole balls overlapping by a tenth of a diameter stay two at the product's ratio
    touching = _balls((30, 30, 60), [(15, 15, 20), (15, 15, 38)], 10.0, (1.0, 1.0, 1.0))
    assert split_instances(touching, None, method="distance", merge_necks=0.9).max() == 2
