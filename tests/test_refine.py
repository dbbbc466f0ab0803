"""The 3D refiner: identity when untrained, saved and loaded without change, applied only to its prompts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fveseg.errors import CheckpointError, OutputExistsError
from fveseg.inference.gate import SegmentationResult, semantic_labels
from fveseg.inference.refine import refine_result, refined_probability
from fveseg.model.refiner import Refiner3D, load_refiner, save_refiner


def _result(axis: int = 0) -> SegmentationResult:
    rng = np.random.default_rng(0)
    shape = (2, 9, 30, 26)
    probabilities = rng.random(shape).astype(np.float16)
    edges = rng.random(shape).astype(np.float16)
    existence = np.full((2, shape[axis + 1]), 0.9, np.float32)
    moved = np.moveaxis(probabilities, axis + 1, 1)
    semantic = np.moveaxis(semantic_labels(moved, existence, 0.5, 0.5), 0, axis)
    return SegmentationResult(probabilities, edges, existence, semantic, ["nuclei", "cells"], axis)


@pytest.mark.parametrize("axis", [0, 1])
def test_an_untrained_refiner_returns_the_networks_probability_and_labels(axis):
    refiner = Refiner3D(8).eval()
    refiner.metadata = {"prompts": ["nuclei"]}
    result = _result(axis)
    image = np.random.default_rng(1).random((9, 30, 26)).astype(np.float32)
    refined = refine_result(result, image, refiner)
    np.testing.assert_allclose(refined.probabilities[0], result.probabilities[0], atol=2e-3)
    np.testing.assert_array_equal(refined.probabilities[1], result.probabilities[1])  # not its prompt
    agree = np.mean(refined.semantic == result.semantic)
    assert agree > 0.995  # only probabilities within float16 rounding of 0.5 may flip


def test_a_volume_larger_than_one_block_is_refined_everywhere():
    """Several slabs and tiles (30 slices, 300 x 270 pixels, not multiples of 4): every voxel gets a
    probability."""
    refiner = Refiner3D(8).eval()
    torch.nn.init.normal_(refiner.head.weight, std=0.5)
    probability = np.random.default_rng(2).random((30, 300, 270)).astype(np.float32)
    image = np.zeros_like(probability)
    out = refined_probability(refiner, image, probability)
    assert out.shape == probability.shape and np.isfinite(out).all()
    assert 0 <= out.min() and out.max() <= 1


def test_save_and_load_round_trip(tmp_path):
    refiner = Refiner3D(8)
    torch.nn.init.normal_(refiner.head.weight, std=0.1)
    path = save_refiner(refiner, tmp_path / "refiner", {"prompts": ["nuclei"]})
    again = load_refiner(tmp_path / "refiner")
    assert path.suffix == ".json" and again.metadata["prompts"] == ["nuclei"]
    inputs = torch.rand(1, 2, 4, 16, 16)
    with torch.inference_mode():
        assert torch.equal(refiner.eval()(inputs), again(inputs))
    with pytest.raises(OutputExistsError):
        save_refiner(refiner, tmp_path / "refiner")
    (tmp_path / "refiner.safetensors").write_bytes(b"not weights")
    with pytest.raises(CheckpointError, match="cannot read the refiner"):
        load_refiner(tmp_path / "refiner")
