"""Existence post-processing: the doubtful-slice count behind the CLI's --exist-threshold advice."""

from __future__ import annotations

import numpy as np
import pytest

from fveseg.postprocess import doubtful_slices


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
