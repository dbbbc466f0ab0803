"""Tests of the procedural microscopy generator (fveseg.synthetic)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from fveseg.errors import InputError
from fveseg.synthetic import (
    CHANNELS,
    SyntheticOptions,
    make_nuclei_volume,
    make_sample_volume,
)
from fveseg.synthetic.optics import microscope
from fveseg.synthetic.options import resolve_options

SMALL = (16, 64, 64)


def touching_pairs(labels: np.ndarray) -> set[tuple[int, int]]:
    """Pairs of different non-zero ids that are 6-neighbours somewhere."""
    pairs = set()
    for axis in range(3):
        a = np.moveaxis(labels, axis, 0)[:-1].ravel()
        b = np.moveaxis(labels, axis, 0)[1:].ravel()
        hit = (a != b) & (a > 0) & (b > 0)
        pairs |= {(min(x, y), max(x, y)) for x, y in zip(a[hit].tolist(), b[hit].tolist())}
    return pairs


def gradient_energy_per_um(image: np.ndarray, spacing) -> np.ndarray:
    return np.array([np.mean(np.diff(image, axis=a) ** 2) / spacing[a] ** 2 for a in range(3)])


@pytest.fixture(scope="module")
def volume():
    return make_nuclei_volume(SMALL, seed=3, n_nuclei=10, cluster_fraction=0.5)


def test_dtype_shape_and_class_contracts(volume):
    assert volume.image.shape == SMALL and volume.image.dtype == np.uint16
    assert volume.labels.shape == SMALL and volume.labels.dtype == np.uint32
    assert set(volume.classes) == set(CHANNELS)
    assert volume.classes["nuclei"] is volume.labels
    assert volume.classes["cells"].dtype == np.uint32
    assert volume.classes["spots"].dtype == np.uint32
    assert volume.classes["cell membranes"].dtype == np.uint8
    assert set(np.unique(volume.classes["cell membranes"])) <= {0, 1}
    assert all(v.shape == SMALL for v in volume.classes.values())
    assert volume.clean.dtype == np.float32 and volume.clean.shape == SMALL
    assert volume.spacing == (1.0, 0.5, 0.5) and volume.channel == "nuclei"
    assert isinstance(volume.options, SyntheticOptions)


def test_same_seed_same_arrays_different_seed_differs():
    a = make_nuclei_volume(SMALL, seed=5, n_nuclei=6)
    b = make_nuclei_volume(SMALL, seed=5, n_nuclei=6)
    c = make_nuclei_volume(SMALL, seed=6, n_nuclei=6)
    np.testing.assert_array_equal(a.image, b.image)
    for name in CHANNELS:
        np.testing.assert_array_equal(a.classes[name], b.classes[name])
    assert not np.array_equal(a.image, c.image)
    assert not np.array_equal(a.labels, c.labels)


def test_labels_are_sequential(volume):
    for name in ("nuclei", "spots"):
        ids = np.unique(volume.classes[name])
        np.testing.assert_array_equal(ids, np.arange(ids.size))
    assert volume.labels.max() >= 5


def test_labels_lie_where_the_noiseless_image_is_bright():
    vol = make_nuclei_volume(SMALL, seed=11, preset="isotropic", n_nuclei=8, dim_fraction=0.5)
    labels, clean = vol.labels, vol.clean
    far = ~ndimage.binary_dilation(labels > 0, iterations=3)
    background = float(clean[far].mean())
    for nucleus in range(1, int(labels.max()) + 1):
        values = clean[labels == nucleus]
        # Every nucleus, dim ones included, stands far above the background ...
        assert values.mean() > 10 * background + 0.05
        # ... and nearly all its voxels are bright relative to its own level (labels = true extent).
        assert np.mean(values > 0.3 * np.percentile(values, 95)) > 0.9
    # Conversely, bright voxels are inside (or right next to) a nucleus.
    bright = clean > 0.5 * np.percentile(clean[labels > 0], 50)
    near = ndimage.binary_dilation(labels > 0, iterations=1)
    assert np.mean(near[bright]) > 0.99


def test_touching_clusters_and_dividing_pairs_when_requested():
    common = dict(n_nuclei=14, elongation=1.0, irregularity=0.0)
    clustered = make_nuclei_volume(SMALL, seed=2, cluster_fraction=1.0, dividing_fraction=0.0, **common)
    separate = make_nuclei_volume(SMALL, seed=2, cluster_fraction=0.0, dividing_fraction=0.0, **common)
    assert len(touching_pairs(clustered.labels)) >= 3
    assert len(touching_pairs(clustered.labels)) > 2 * len(touching_pairs(separate.labels))

    dividing = make_nuclei_volume((24, 96, 96), seed=4, n_nuclei=6, dividing_fraction=1.0)
    assert len(dividing.dividing_pairs) >= 2
    centroids = ndimage.center_of_mass(
        np.ones_like(dividing.labels), dividing.labels, np.arange(1, dividing.labels.max() + 1)
    )
    sizes = np.bincount(dividing.labels.ravel())
    for a, b in dividing.dividing_pairs:
        distance = np.linalg.norm((np.subtract(centroids[a - 1], centroids[b - 1])) * dividing.spacing)
        # Daughters of radius ≤ 0.62 × 6 µm: their centres are a few µm apart.
        assert distance < 10
        assert sizes[a] > 0 and sizes[b] > 0


def test_crowded_preset_packs_nuclei_about_three_times_as_densely():
    shape, spacing = (16, 96, 96), (1.5, 0.4, 0.4)
    plain = make_nuclei_volume(shape, seed=3, spacing=spacing, preset="anisotropic").labels
    crowded = make_nuclei_volume(shape, seed=3, spacing=spacing, preset="crowded").labels
    assert (plain > 0).mean() < 0.15 < 0.25 < (crowded > 0).mean()  # measured: about 0.07 and 0.34
    assert max((s > 0).mean() for s in crowded) > 0.35  # dense slices, as in packed tissue


def test_anisotropic_preset_is_blurrier_along_z():
    spacing = (1.5, 0.5, 0.5)
    aniso = make_nuclei_volume((24, 64, 64), seed=1, spacing=spacing, preset="anisotropic", n_nuclei=8)
    energy = gradient_energy_per_um(aniso.clean, spacing)
    assert energy[0] < 0.5 * energy[1:].mean()
    # The same objects seen through an isotropic PSF keep clearly more z detail (coarse z sampling alone
    # lowers the ratio to about 0.7, hence the comparison on the same volume).
    sharp = make_nuclei_volume(
        (24, 64, 64), seed=1, spacing=spacing, preset="anisotropic", n_nuclei=8, psf_sigma_um=(0.3, 0.3)
    )
    sharp_energy = gradient_energy_per_um(sharp.clean, spacing)
    assert energy[0] / energy[1:].mean() < 0.75 * sharp_energy[0] / sharp_energy[1:].mean()
    # Control: isotropic blur on isotropic voxels gives about the same energy along every axis.
    iso_spacing = (0.5, 0.5, 0.5)
    iso = make_nuclei_volume(
        (48, 64, 64), seed=1, spacing=iso_spacing, preset="isotropic", n_nuclei=6, psf_sigma_um=(0.4, 0.4)
    )
    energy = gradient_energy_per_um(iso.clean, iso_spacing)
    assert 0.6 < energy[0] / energy[1:].mean() < 1.6


def test_class_volumes_are_consistent(volume):
    nuclei, cells = volume.labels, volume.classes["cells"]
    membranes, spots = volume.classes["cell membranes"].astype(bool), volume.classes["spots"]
    # Every nucleus lies inside the cell of the same id; every cell has its nucleus.
    np.testing.assert_array_equal(cells[nuclei > 0], nuclei[nuclei > 0])
    np.testing.assert_array_equal(np.unique(cells), np.unique(nuclei))
    # Membranes are exactly the cell voxels with a 6-neighbour of another label.
    border = np.zeros_like(membranes)
    padded = np.pad(cells, 1, mode="edge")
    for axis in range(3):
        for shift in (-1, 1):
            border |= np.roll(padded, shift, axis=axis)[1:-1, 1:-1, 1:-1] != cells
    np.testing.assert_array_equal(membranes, border & (cells > 0))
    assert membranes.any() and membranes.mean() < 0.5
    # Puncta lie inside cells.
    assert spots.max() > 0 and np.all(cells[spots > 0] > 0)


@pytest.mark.parametrize("channel", ["cells", "cell membranes", "spots"])
def test_channel_option_images_the_chosen_structure(channel):
    vol = make_nuclei_volume(SMALL, seed=8, n_nuclei=8, channel=channel, snr=1000)
    target = vol.classes[channel] > 0
    other = ~ndimage.binary_dilation(target, iterations=2)
    assert vol.channel == channel
    assert vol.clean[target].mean() > 3 * vol.clean[other].mean()
    # The nuclei class is still the nuclei, whatever the channel.
    nuclei_image = make_nuclei_volume(SMALL, seed=8, n_nuclei=8, snr=1000)
    np.testing.assert_array_equal(vol.labels, nuclei_image.labels)


def test_noise_matches_requested_snr():
    options = resolve_options(None, dict(snr=8.0, psf_sigma_um=(0.0, 0.0), uneven_illumination=0.0, haze=0.0))
    dye = np.ones((8, 64, 64), np.float32)
    image, _ = microscope(np.random.default_rng(0), dye, np.ones(3), options)
    counts = image.astype(float) - options.camera_offset
    # Signal of brightness 1 (above the autofluorescence) over the total noise at that signal.
    photons = counts.mean() / options.gain / (1 + options.background)
    measured = photons / (counts.std() / options.gain)
    assert measured == pytest.approx(8.0, rel=0.1)


def test_empty_and_one_slice_volumes_and_errors():
    empty = make_nuclei_volume((4, 16, 16), n_nuclei=0)
    assert empty.labels.max() == 0 and empty.classes["cells"].max() == 0
    # A one-slice volume (a 2D image) still cuts through nuclei: centres may lie outside the volume.
    single = make_nuclei_volume((1, 96, 96), seed=0)
    assert single.labels.max() >= 3 and single.image.shape == (1, 96, 96)
    with pytest.raises(InputError, match="n_nucleus"):
        make_nuclei_volume(SMALL, n_nucleus=3)
    with pytest.raises(InputError, match="preset"):
        make_nuclei_volume(SMALL, preset="easy")
    with pytest.raises(InputError, match="channel"):
        make_nuclei_volume(SMALL, channel="mitochondria")
    with pytest.raises(InputError, match="shape"):
        make_nuclei_volume((64, 64))
    with pytest.raises(InputError, match="spacing"):
        make_nuclei_volume(SMALL, spacing=(1.0, 0.0, 0.5))


def test_sample_volume_is_deterministic_and_has_the_advertised_content():
    first, second = make_sample_volume(), make_sample_volume()
    np.testing.assert_array_equal(first.image, second.image)
    np.testing.assert_array_equal(first.labels, second.labels)
    assert first.image.shape == (32, 128, 128) and first.image.dtype == np.uint16
    assert len(touching_pairs(first.labels)) >= 5
    assert first.dividing_pairs
    ids = np.arange(1, first.labels.max() + 1)
    level = np.asarray(ndimage.mean(first.clean, first.labels, ids))
    assert level.max() > 3 * level.min()  # dim and bright nuclei


def test_new_options_at_zero_leave_the_volume_unchanged():
    # training presets keep their arrays: the options draw no random numbers when off
    plain = make_nuclei_volume(SMALL, seed=5, n_nuclei=6)
    off = make_nuclei_volume(
        SMALL, seed=5, n_nuclei=6, stripes=0.0, depth_attenuation=0.0, beyond_stack_um=0.0
    )
    np.testing.assert_array_equal(plain.image, off.image)
    np.testing.assert_array_equal(plain.labels, off.labels)


def test_depth_attenuation_dims_the_last_slices_by_the_requested_fraction():
    options = resolve_options(None, dict(snr=100.0, uneven_illumination=0.0, haze=0.0, depth_attenuation=0.4))
    dye = np.ones((11, 32, 32), np.float32)
    image, _ = microscope(np.random.default_rng(0), dye, np.ones(3), options)
    signal = image.astype(float).mean(axis=(1, 2)) - options.camera_offset
    # the first slice gets all the light, the last 60 % of it, linearly in between
    assert signal[-1] / signal[0] == pytest.approx(0.6, rel=0.02)
    assert signal[5] / signal[0] == pytest.approx(0.8, rel=0.02)


def test_stripes_run_along_x_and_change_slowly_along_z():
    options = resolve_options(None, dict(snr=1e3, gain=0.01, uneven_illumination=0.0, haze=0.0, stripes=0.2))
    dye = np.ones((40, 64, 64), np.float32)
    image, _ = microscope(np.random.default_rng(1), dye, np.full(3, 0.25), options)
    signal = image.astype(float) - options.camera_offset
    relative = signal / signal.mean()
    # about ±20 % across y; far smaller changes between neighbouring pixels along x than along y
    assert 0.1 < relative.std() < 0.3
    along_x = np.abs(np.diff(relative, axis=2)).mean()
    across_y = np.abs(np.diff(relative, axis=1)).mean()
    assert along_x < across_y / 3
    # neighbouring slices (0.25 µm apart) share the pattern, slices 8 µm apart do not
    assert np.abs(relative[0] - relative[1]).mean() < np.abs(relative[0] - relative[32]).mean() / 3
    assert np.abs(relative[0] - relative[32]).mean() > 0.05


def test_nuclei_beyond_the_stack_light_its_ends_but_stay_unlabelled():
    kwargs = dict(n_nuclei=40, radius_um=(2.0, 3.0), psf_sigma_um=(1.0, 0.3), snr=1e3, haze=0.0)
    spacing = (0.5, 0.5, 0.5)
    for beyond_um in (0.0, 5.0):
        vol = make_nuclei_volume((8, 48, 48), seed=0, spacing=spacing, beyond_stack_um=beyond_um, **kwargs)
        assert vol.image.shape == vol.labels.shape == vol.clean.shape == (8, 48, 48)
        ids = np.unique(vol.labels)
        np.testing.assert_array_equal(ids, np.arange(ids.size))  # still sequential
        np.testing.assert_array_equal(vol.classes["cells"][vol.labels > 0], vol.labels[vol.labels > 0])
        spot_ids = np.unique(vol.classes["spots"])
        np.testing.assert_array_equal(spot_ids, np.arange(spot_ids.size))
        # bright light more than 3 µm from every labelled nucleus: only from nuclei beyond the stack
        far = ndimage.distance_transform_edt(vol.labels == 0, sampling=spacing) > 3
        unlabelled_light = int(np.count_nonzero((vol.clean > 0.2) & far))
        assert (unlabelled_light > 0) == (beyond_um > 0)


@pytest.mark.parametrize("name", ["embryo", "lightsheet"])
def test_held_out_presets_look_like_the_stacks_they_stand_for(name):
    vol = make_nuclei_volume((12, 96, 96), seed=0, spacing=(1.0, 0.35, 0.35), preset=name)
    nuclei, image = vol.labels > 0, vol.image.astype(float) - vol.options.camera_offset
    contrast = image[nuclei].mean() / image[~ndimage.binary_dilation(nuclei, iterations=3)].mean() - 1
    if name == "lightsheet":
        assert 0.03 < contrast < 0.15  # nuclei 5-10 % above the background
    else:
        assert contrast > 1
        sizes = np.bincount(vol.labels.ravel())[1:]
        assert np.median(sizes) * 0.35**2 > 4 / 3 * np.pi * 3.0**3  # large nuclei, radius above 3 µm


def test_new_option_errors_name_the_range():
    with pytest.raises(InputError, match="stripes"):
        make_nuclei_volume(SMALL, stripes=1.5)
    with pytest.raises(InputError, match="depth_attenuation"):
        make_nuclei_volume(SMALL, depth_attenuation=-0.1)
    with pytest.raises(InputError, match="beyond_stack_um"):
        make_nuclei_volume(SMALL, beyond_stack_um=-1.0)
