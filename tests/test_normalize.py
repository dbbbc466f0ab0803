"""Intensity preprocessing: hand-computed answers for every rule."""

import numpy as np
import pytest

from fveseg.errors import InputError
from fveseg.normalize.intensity import SUBSAMPLE_VOXELS, apply_range, intensity_range, normalize


@pytest.mark.parametrize(
    ("window", "hu", "expected"),
    [
        ("soft_tissue", [-1000, -160, 0, 40, 240, 3000], [0, 0, 102, 128, 255, 255]),  # lo -160, hi 240
        ("lung", [-1000, -910, -160, 0, 590], [0, 0, 128, 155, 255]),  # lo -910, hi 590: 0 -> 154.7
        ("brain", [-5, 0, 20, 40, 80], [0, 0, 64, 128, 255]),  # lo 0, hi 80: 20 -> 63.75
        ("bone", [-500, 400, 1300], [0, 128, 255]),  # lo -500, hi 1300
        ((100, 50), [0, 10, 30, 50, 100], [0, 26, 76, 128, 255]),  # 25.5 -> 26, 76.5 -> 76 (half to even)
    ],
)
def test_ct_windows(window, hu, expected):
    volume = np.array(hu, dtype=np.int16)
    assert normalize(volume, modality="ct", window=window).tolist() == expected


def test_ct_default_window_is_soft_tissue():
    volume = np.array([-1000.0, 0.0, 40.0, 1000.0], dtype=np.float32)
    assert normalize(volume, modality="ct").tolist() == [0, 102, 128, 255]
    assert intensity_range(volume, modality="ct") == (-160.0, 240.0)


def test_percentile_rescale():
    volume = np.arange(201) * 10.0  # 0.5th percentile 10, 99.5th 1990
    assert intensity_range(volume) == pytest.approx((10.0, 1990.0))
    out = normalize(volume.reshape(3, 67, 1), modality="mri")
    assert out.dtype == np.uint8 and out.shape == (3, 67, 1)
    flat = out.ravel()
    assert flat[[0, 1, 20, 100, 199, 200]].tolist() == [0, 0, 24, 128, 255, 255]  # 1000 -> 127.5


def test_data_in_uint8_range_pass_unchanged():
    u8 = np.array([[0, 7, 255]], dtype=np.uint8)
    assert normalize(u8) is u8
    assert normalize(u8, modality="ct") is u8
    assert normalize(np.array([0, 3, 255], dtype=np.int32)).tolist() == [0, 3, 255]
    assert normalize(np.array([0.0, 3.0, 255.0])).tolist() == [0, 3, 255]
    assert normalize(np.array([100, 100], dtype=np.uint16)).tolist() == [100, 100]
    # fractional values in [0, 1] are not "already 0-255": they are rescaled
    assert normalize(np.linspace(0, 1, 201))[[0, 50, 200]].tolist() == [0, 63, 255]  # (.25-.005)*255/.99


def test_constant_nan_and_inf():
    assert normalize(np.full((2, 3), 7.5)).tolist() == [[0, 0, 0]] * 2
    assert normalize(np.full(4, 300, dtype=np.int16)).tolist() == [0, 0, 0, 0]
    assert normalize(np.full(3, np.nan)).tolist() == [0, 0, 0]
    # finite values 0 and 1000: percentiles 5 and 995
    volume = np.array([np.nan, -np.inf, np.inf, 0.0, 1000.0, 500.0])
    assert intensity_range(volume) == pytest.approx((5.0, 995.0))
    assert normalize(volume).tolist() == [0, 0, 255, 0, 255, 128]


def test_sparse_spots_fall_back_to_min_max():
    volume = np.zeros(10_000, dtype=np.int16)
    volume[:3] = [4000, 2000, 1000]
    assert intensity_range(volume) == (0.0, 4000.0)
    assert normalize(volume)[:4].tolist() == [255, 128, 64, 0]  # 2000 -> 127.5, 1000 -> 63.75


def test_apply_range_edges():
    assert apply_range(np.array([1.0, 2.0]), 5.0, 5.0).tolist() == [0, 0]
    assert apply_range(np.array([-1, 0, 10, 20], dtype=np.int64), 0, 20).tolist() == [0, 0, 128, 255]


def test_bad_inputs():
    for bad in (np.array([True, False]), np.array([1 + 2j]), np.array(["a"])):
        with pytest.raises(InputError):
            normalize(bad)
    with pytest.raises(InputError):
        normalize(np.zeros(3), modality="xray")
    with pytest.raises(InputError):
        normalize(np.zeros(3), window="liver")
    with pytest.raises(InputError):
        normalize(np.zeros(3), window=(0, 40))


class CountingArray:
    """A lazy-array stand-in that counts the voxels it hands out."""

    def __init__(self, array):
        self.array, self.shape, self.dtype, self.voxels = array, array.shape, array.dtype, 0

    def __getitem__(self, key):
        part = self.array[key]
        self.voxels += part.size
        return part


def test_large_arrays_are_subsampled_deterministically_and_streamed():
    rng = np.random.default_rng(0)
    full = rng.normal(1000, 100, (80, 200, 200)).astype(np.float32)  # 3.2M voxels > budget
    lazy = CountingArray(full)
    lo, hi = intensity_range(lazy)
    assert lazy.voxels <= SUBSAMPLE_VOXELS
    assert (lo, hi) == intensity_range(CountingArray(full))
    exact_lo, exact_hi = np.percentile(full, [0.5, 99.5])
    assert abs(lo - exact_lo) < 5 and abs(hi - exact_hi) < 5  # percentiles of ~1.3M Gaussian samples
    batches = np.concatenate([apply_range(lazy[z : z + 16], lo, hi) for z in range(0, 80, 16)])
    assert np.array_equal(batches, apply_range(full, lo, hi))


def test_dask_input():
    da = pytest.importorskip("dask.array")
    volume = np.arange(201) * 10.0
    assert normalize(da.from_array(volume, chunks=50)).tolist() == normalize(volume).tolist()
