"""Isotropic z resampling (`fveseg.inference.resample`): hand-computed values, round trips, shapes."""

import numpy as np
import pytest

from fveseg.inference.gate import SegmentationResult
from fveseg.inference.resample import resample_z, result_on_grid, z_factor


def test_factor_is_z_step_over_pixel_size_and_none_when_isotropic_or_unknown():
    assert z_factor((2.0, 0.5, 0.5)) == pytest.approx(4.0)
    assert z_factor((0.29, 0.26, 0.25)) == pytest.approx(0.29 / 0.25)
    assert z_factor((0.5, 0.5, 0.5)) is None
    assert z_factor(None) is None
    assert z_factor((float("nan"), 1.0, 1.0)) is None


def test_linear_ramp_is_reproduced_exactly():
    volume = np.arange(4, dtype=np.float32)[:, None, None] * np.ones((1, 2, 3), np.float32)  # z = 0,1,2,3
    resampled = resample_z(volume, 2.0)
    assert resampled.shape == (7, 2, 3)
    np.testing.assert_allclose(resampled[:, 0, 0], [0, 0.5, 1, 1.5, 2, 2.5, 3])


def test_integer_volumes_keep_their_dtype():
    volume = np.array([0, 10], np.uint16)[:, None, None] * np.ones((1, 1, 1), np.uint16)
    resampled = resample_z(volume, 4.0)
    assert resampled.dtype == np.uint16
    assert resampled[:, 0, 0].tolist() == [0, 2, 5, 8, 10]  # 2.5 and 7.5 round to even


def test_result_comes_back_on_the_original_slices():
    depth, factor = 5, 3.0
    iso_depth = int(round((depth - 1) * factor)) + 1
    probabilities = np.linspace(0, 1, iso_depth, dtype=np.float32)[None, :, None, None] * np.ones(
        (1, 1, 2, 2)
    )
    semantic = (probabilities[0] > 0.5).astype(np.uint8)
    iso = SegmentationResult(
        probabilities.astype(np.float16), probabilities.astype(np.float16),
        np.linspace(0, 1, iso_depth, dtype=np.float32)[None], semantic, ["nuclei"], 0,
    )  # fmt: skip
    back = result_on_grid(iso, depth, factor)
    assert back.probabilities.shape == (1, depth, 2, 2) and back.semantic.shape == (depth, 2, 2)
    np.testing.assert_allclose(back.existence[0], np.linspace(0, 1, iso_depth)[::3], atol=1e-6)
    np.testing.assert_array_equal(back.semantic, semantic[::3])


def test_segmenter_isotropic_run_returns_the_volume_shape(tmp_path):
    from tests.test_cli import micro_checkpoint

    from fveseg.inference import Segmenter
    from fveseg.synthetic import make_nuclei_volume

    segmenter = Segmenter(micro_checkpoint(tmp_path), device="cpu", batch_size=4)
    volume = make_nuclei_volume((6, 32, 32), seed=2).image
    calls = []
    result = segmenter.segment(
        volume, ["nuclei"], spacing=(1.0, 0.5, 0.5), scale=1.0, isotropic=True,
        progress=lambda done, total: calls.append(total),
    )  # fmt: skip
    assert result.semantic.shape == volume.shape
    assert result.probabilities.shape == (1, *volume.shape) and result.existence.shape == (1, 6)
    assert calls[-1] == 11  # the network ran on (6 - 1) * 2 + 1 resampled slices
