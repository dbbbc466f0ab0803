"""`fveseg.normalize.noise_level` against noise of known size, and `fveseg.inference.model_choice`'s choice
by it."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from fveseg.normalize.noise import NOISY_LEVEL, noise_level


def _cells(shape=(6, 96, 96)) -> np.ndarray:
    """Bright disks (100) on a dark background (0), blurred as by a microscope, with a gentle ramp: no
    noise at all."""
    from scipy import ndimage as ndi

    _, y, x = np.mgrid[: shape[0], : shape[1], : shape[2]]
    disks = ((y % 32 - 16) ** 2 + (x % 32 - 16) ** 2 < 100).astype(np.float32) * 100
    return ndi.gaussian_filter(disks, (0, 1.5, 1.5)) + 0.05 * x


def _expected(image: np.ndarray, sigma: float) -> float:
    return sigma / float(np.percentile(image, 99) - np.median(image))


@pytest.mark.parametrize("sigma", [2.0, 10.0, 30.0])
def test_known_gaussian_noise_is_measured_within_five_percent(sigma):
    noisy = _cells() + np.random.default_rng(0).normal(0, sigma, _cells().shape).astype(np.float32)
    assert noise_level(noisy) == pytest.approx(_expected(noisy, sigma), rel=0.05)


def test_a_clean_image_measures_almost_no_noise_and_is_not_noisy():
    assert noise_level(_cells()) < 0.01 < NOISY_LEVEL


def test_linear_rescaling_and_a_2d_slice_give_the_same_level():
    noisy = _cells() + np.random.default_rng(1).normal(0, 10, _cells().shape).astype(np.float32)
    level = noise_level(noisy)
    assert noise_level(3.0 * noisy + 500.0) == pytest.approx(level, rel=1e-3)
    assert noise_level(noisy[:1]) == pytest.approx(noise_level(noisy[0]))
    assert noise_level(np.clip(noisy + 100, 0, 65535).astype(np.uint16)) == pytest.approx(level, rel=0.05)


def test_only_a_few_slices_are_read_from_a_lazy_volume():
    reads = []

    class Lazy:
        shape, dtype = (40, 64, 64), np.dtype(np.float32)

        def __getitem__(self, index):
            reads.append(index)
            return _cells((1, 64, 64))[0]

    assert noise_level(Lazy()) < 0.01
    assert len(reads) == 8 and reads[0] == 0 and reads[-1] == 39


def test_nothing_to_measure_gives_zero_and_gaps_do_not_matter():
    assert noise_level(np.zeros((3, 32, 32))) == 0.0  # no signal range
    assert noise_level(np.ones((2, 2, 50))) == 0.0  # slices under 3 x 3
    assert noise_level(np.full((2, 8, 8), np.nan)) == 0.0
    noisy = _cells() + np.random.default_rng(2).normal(0, 10, _cells().shape).astype(np.float32)
    holed = noisy.copy()
    holed[:, :8, :8] = np.nan
    assert noise_level(holed) == pytest.approx(noise_level(noisy), rel=0.05)
    with pytest.raises(ValueError, match="shape"):
        noise_level(np.zeros(5))


class _Stand_in:
    """Records the volumes it segments; its result carries model/noise attributes like the real one."""

    def __init__(self):
        self.calls = []

    def segment(self, volume, prompts, **kwargs):
        from fveseg.inference.gate import SegmentationResult

        self.calls.append(("segment", volume.shape, kwargs))
        empty = np.zeros((1, *volume.shape), np.float16)
        return SegmentationResult(empty, empty, np.zeros((1, volume.shape[0])), empty[0], list(prompts), 0)

    def auto_scale(self, volume, prompts, **kwargs):
        self.calls.append(("auto_scale", volume.shape, kwargs))
        return 0.5

    def plan(self, volume, *args, **kwargs):
        from fveseg.inference.plan import SegmentPlan

        self.calls.append(("plan", volume.shape, kwargs))
        return SegmentPlan(tuple(volume.shape), 0, 1, (0.0, 1.0))

    def run(self, volume, plan, prompts, **kwargs):
        self.calls.append(("run", plan.model))
        return self.segment(volume, prompts)


def test_auto_segmenter_runs_the_noise_robust_network_on_noisy_volumes_only():
    from fveseg.inference.model_choice import CLEAN_MODEL, NOISY_MODEL, AutoSegmenter

    clean_net, noisy_net = _Stand_in(), _Stand_in()
    auto = AutoSegmenter(clean_net, noisy_net)
    clean = _cells()
    noisy = clean + np.random.default_rng(3).normal(0, 30, clean.shape).astype(np.float32)
    result = auto.segment(clean, ["nuclei"], scale=1.0)
    assert (result.model, len(clean_net.calls), len(noisy_net.calls)) == (CLEAN_MODEL, 1, 0)
    assert result.noise < 0.01 and clean_net.calls[0][2] == {"scale": 1.0}
    result = auto.segment(noisy, ["nuclei"])
    assert (result.model, len(noisy_net.calls)) == (NOISY_MODEL, 1) and result.noise > NOISY_LEVEL
    assert auto.auto_scale(noisy, ["nuclei"]) == 0.5 and noisy_net.calls[-1][0] == "auto_scale"
    assert auto.segment(noisy[0], ["nuclei"]).model == NOISY_MODEL  # a 2D image is measured too


def test_a_plan_records_the_chosen_network_and_its_run_uses_it():
    import pickle

    from fveseg.errors import InputError
    from fveseg.inference.model_choice import CLEAN_MODEL, NOISY_MODEL, AutoSegmenter

    clean_net, noisy_net = _Stand_in(), _Stand_in()
    auto = AutoSegmenter(clean_net, noisy_net)
    noisy = _cells() + np.random.default_rng(3).normal(0, 30, _cells().shape).astype(np.float32)
    plan = pickle.loads(pickle.dumps(auto.plan(noisy, prompts=["nuclei"])))  # as the dask path ships it
    assert plan.model == NOISY_MODEL and plan.noise > NOISY_LEVEL
    result = auto.run(_cells(), plan, ["nuclei"])  # the plan decides, not this (clean) volume
    assert (result.model, noisy_net.calls[-2], clean_net.calls) == (NOISY_MODEL, ("run", NOISY_MODEL), [])
    assert auto.plan(_cells(), prompts=["nuclei"]).model == CLEAN_MODEL
    with pytest.raises(InputError, match="names the model 'elsewhere'"):
        auto.run(_cells(), replace(plan, model="elsewhere"), ["nuclei"])


def test_the_noisy_network_is_loaded_only_when_a_noisy_volume_needs_it(tmp_path):
    from fveseg.errors import CheckpointError
    from fveseg.inference.model_choice import AutoSegmenter

    auto = AutoSegmenter(_Stand_in(), tmp_path / "absent")
    auto.segment(_cells(), ["nuclei"])  # clean: the missing noisy checkpoint is never opened
    noisy = _cells() + np.random.default_rng(4).normal(0, 30, _cells().shape).astype(np.float32)
    with pytest.raises(CheckpointError, match="absent"):
        auto.segment(noisy, ["nuclei"])


def test_no_model_means_the_bundled_pair_and_a_name_means_that_network():
    from fveseg.inference.model_choice import AutoSegmenter, segmenter_for
    from fveseg.inference.segmenter import Segmenter

    auto = segmenter_for(None, device="cpu")
    assert isinstance(auto, AutoSegmenter) and auto.names == ("default", "noise-robust")
    assert auto.metadata is auto.clean.metadata  # the rest is the default network's Segmenter
    assert type(segmenter_for("noise-robust", device="cpu")) is Segmenter
