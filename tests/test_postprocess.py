"""Existence post-processing: the hysteresis gate, relabelling after it, and the doubtful-slice count behind
the CLI's --exist-low advice."""

from __future__ import annotations

import numpy as np
import pytest

from fveseg.inference.gate import SegmentationResult, doubtful_slices, presence, regate, semantic_labels


def test_doubtful_slices_counts_weak_slices_chained_to_present_ones():
    existence = np.array(
        [
            [0.9, 0.3, 0.2, 0.6, 0.05, 0.3, 0.0],  # 0.3, 0.2 between found slices; last 0.3 cut off
            [0.3, 0.3, 0.2, 0.2, 0.2, 0.3, 0.4],  # never found: nothing to continue
            [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],  # absent
            [0.2, 0.2, 0.8, 0.8, 0.8, 0.15, 0.05],  # chained at both ends; 0.05 is below `low`
        ]
    )
    assert doubtful_slices(existence).tolist() == [2, 0, 0, 3]
    # a gate of 0.25 keeps the 0.3s, which then anchor the 0.2s next to them
    assert doubtful_slices(existence, exist_threshold=0.25).tolist() == [1, 3, 0, 3]
    assert doubtful_slices(existence, exist_threshold=0.5, low=0.5).tolist() == [0, 0, 0, 0]
    assert doubtful_slices(np.zeros((2, 0))).tolist() == [0, 0]


def test_doubtful_slices_rejects_a_flat_profile():
    with pytest.raises(ValueError, match="existence must be"):
        doubtful_slices(np.zeros(5))


PROFILE = np.array(
    [
        [0.9, 0.3, 0.2, 0.6, 0.05, 0.3, 0.0],
        [0.3, 0.3, 0.2, 0.2, 0.2, 0.3, 0.4],
        [0.2, 0.2, 0.8, 0.8, 0.8, 0.15, 0.05],
    ],
    np.float32,
)


def test_presence_keeps_weak_slices_chained_to_strong_ones():
    expected = [
        [1, 1, 1, 1, 0, 0, 0],  # 0.05 breaks the run: the last 0.3 is not chained
        [0, 0, 0, 0, 0, 0, 0],  # nothing above the threshold to continue
        [1, 1, 1, 1, 1, 1, 0],  # chained on both sides; 0.05 is below exist_low
    ]
    assert presence(PROFILE).astype(int).tolist() == expected
    plain = (PROFILE > 0.5).tolist()
    assert presence(PROFILE, 0.5, None).tolist() == plain
    assert presence(PROFILE, 0.5, 0.5).tolist() == plain  # exist_low at the threshold: no hysteresis
    assert presence(PROFILE, 0.25, 0.1)[1].astype(int).tolist() == [1, 1, 1, 1, 1, 1, 1]
    assert presence(np.zeros((0, 3))).shape == (0, 3)


def test_doubtful_slices_compare_two_gates():
    assert doubtful_slices(PROFILE, 0.5, 0.1, exist_low=0.1).tolist() == [0, 0, 0]  # same gate
    assert doubtful_slices(PROFILE, 0.5, 0.1, exist_low=0.25).tolist() == [1, 0, 3]  # the 0.2s and 0.15


def test_semantic_labels_follow_a_given_gate():
    probs = np.full((2, 1, 2, 2), 0.9, np.float32)
    probs[1, 0, 0, 0] = 0.95  # prompt 2 wins one pixel where both are kept
    existence = np.array([[0.3], [0.9]], np.float32)
    assert semantic_labels(probs, existence, iou_threshold=1.0).tolist() == [[[2, 2], [2, 2]]]
    present = np.array([[True], [False]])
    assert semantic_labels(probs, existence, present=present).tolist() == [[[1, 1], [1, 1]]]


@pytest.mark.parametrize("axis", [0, 2])
def test_regate_relabels_exactly_the_slices_the_hysteresis_changes(axis):
    rng = np.random.default_rng(0)
    shape = [4, 5, 6]
    shape[axis] = PROFILE.shape[1]
    probabilities = rng.random((3, *shape)).astype(np.float16)
    result = SegmentationResult(probabilities, probabilities, PROFILE, None, ["a", "b", "c"], axis)
    semantic = result.rethreshold(exist_low=None)  # the plain gate, as the Segmenter's batches label
    assert regate(probabilities, semantic, PROFILE, axis) == 4  # slices 1, 2, 4, 5 change
    assert np.array_equal(semantic, result.rethreshold())  # = the hysteresis gate over the whole volume
    assert not np.array_equal(semantic, result.rethreshold(exist_low=None))
    assert regate(probabilities, semantic, PROFILE, axis, exist_low=None) == 0
