"""Metrics against hand-computed answers and a brute-force restatement of the scoring tool."""

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from fveseg import metrics
from fveseg.errors import InputError
from fveseg.metrics import dice, instance_scores, semantic_dice, surface_dice


def brute_force_scores(gt, pred, thr=0.5):
    """The scoring tool's definition, written out with loops (small arrays only)."""
    g_ids = [g for g in np.unique(gt) if g > 0]
    p_ids = [p for p in np.unique(pred) if p > 0]
    if not g_ids and not p_ids:
        return dict(f1=1.0, dsc_tp=1.0, tp=0, fp=0, fn=0)
    iou = np.zeros((len(g_ids), len(p_ids)))
    dsc = np.zeros_like(iou)
    for i, g in enumerate(g_ids):
        for j, p in enumerate(p_ids):
            inter = np.sum((gt == g) & (pred == p))
            iou[i, j] = inter / np.sum((gt == g) | (pred == p))
            dsc[i, j] = 2 * inter / (np.sum(gt == g) + np.sum(pred == p))
    r, c = linear_sum_assignment(-iou) if iou.size else ([], [])
    pairs = [(a, b) for a, b in zip(r, c) if iou[a, b] >= thr]
    tp = len(pairs)
    fp, fn = len(p_ids) - tp, len(g_ids) - tp
    return dict(
        f1=2 * tp / max(2 * tp + fp + fn, 1),
        tp=tp,
        fp=fp,
        fn=fn,
        dsc_tp=float(np.mean([dsc[a, b] for a, b in pairs])) if tp else 0.0,
    )


def test_dice_hand_case():
    gt = np.zeros((1, 4, 4), int)
    pred = np.zeros_like(gt)
    gt[0, 0, :] = 3  # 4 voxels; ids do not matter, only foreground
    pred[0, 0, :2] = 1
    pred[0, 3, :2] = 7
    assert dice(gt, pred) == pytest.approx(2 * 2 / 8)
    assert dice(np.zeros(5), np.zeros(5)) == 1.0
    assert dice(gt, np.zeros_like(gt)) == 0.0


def test_instance_scores_hand_case():
    gt = np.zeros((1, 6, 12), int)
    pred = np.zeros_like(gt)
    gt[0, 0:2, 0:2] = 1  # A: 4 voxels
    gt[0, 0:2, 4:6] = 2  # B: 4 voxels
    pred[0, 0:2, 0:2] = 5  # exact A: IoU 1
    pred[0, 1, 4:8] = 6  # 2 voxels of B + 2 outside: IoU 2/6 < 0.5
    pred[0, 5, 10:12] = 9  # nothing there: false positive
    r = instance_scores(gt, pred)
    assert (r["tp"], r["fp"], r["fn"]) == (1, 2, 1)
    assert r["f1"] == pytest.approx(2 / 5)
    assert r["precision"] == pytest.approx(1 / 3)
    assert r["recall"] == pytest.approx(1 / 2)
    assert r["dsc_tp"] == pytest.approx(1.0)


def test_instance_scores_partial_overlap_and_threshold():
    gt = np.zeros((1, 2, 8), int)
    gt[0, 0, 0:4] = 1
    pred = np.zeros_like(gt)
    pred[0, 0, 0:3] = 2  # IoU 3/4, Dice 6/7
    r = instance_scores(gt, pred)
    assert (r["tp"], r["fp"], r["fn"]) == (1, 0, 0)
    assert r["dsc_tp"] == pytest.approx(6 / 7)
    pred[0, 0, 2:3] = 0
    pred[0, 1, 0:2] = 2  # 2 of 4 shared, union 4 + 4 - 2 = 6: IoU 1/3
    assert instance_scores(gt, pred)["tp"] == 0
    exact_half = np.zeros_like(gt)
    exact_half[0, 0, 0:2] = 4  # IoU exactly 0.5 counts (>=)
    assert instance_scores(gt, exact_half)["tp"] == 1
    assert instance_scores(gt, exact_half, iou_threshold=0.6)["tp"] == 0


def test_one_to_one_matching():
    gt = np.zeros((1, 1, 10), int)
    gt[0, 0, 0:5] = 1
    gt[0, 0, 5:10] = 2
    pred = np.ones_like(gt)  # one object covering both: IoU 0.5 with each, matched once
    r = instance_scores(gt, pred)
    assert (r["tp"], r["fp"], r["fn"]) == (1, 0, 1)


def test_empty_cases():
    empty = np.zeros((2, 3, 3), int)
    assert instance_scores(empty, empty)["f1"] == 1.0
    gt = empty.copy()
    gt[0, 0, 0] = 1
    gt[1, 2, 2] = 2
    r = instance_scores(gt, empty)
    assert (r["tp"], r["fp"], r["fn"], r["f1"], r["dsc_tp"]) == (0, 0, 2, 0.0, 0.0)
    r = instance_scores(empty, gt)
    assert (r["tp"], r["fp"], r["fn"]) == (0, 2, 0)


@pytest.mark.parametrize("dense_limit", [metrics._DENSE_LIMIT, 0])
def test_matches_scoring_definition_on_random_labels(monkeypatch, dense_limit):
    from scipy import ndimage as ndi

    monkeypatch.setattr(metrics, "_DENSE_LIMIT", dense_limit)  # 0: per-group sparse matching
    rng = np.random.default_rng(3)
    for _ in range(25):
        shape = (int(rng.integers(1, 4)), int(rng.integers(3, 9)), int(rng.integers(3, 9)))
        gt = ndi.label(rng.random(shape) < rng.uniform(0.2, 0.7))[0] * 3  # sparse ids
        pred = ndi.label(rng.random(shape) < rng.uniform(0.2, 0.7))[0]
        pred = np.where(rng.random(shape) < 0.5, gt, pred)
        expected = brute_force_scores(gt, pred)
        got = instance_scores(gt, pred)
        for key, value in expected.items():
            assert got[key] == pytest.approx(value, abs=1e-12), key


def test_surface_dice_hand_case():
    gt = np.zeros((8, 9), bool)
    gt[2:6, 2:6] = True  # 4×4 square: 12 surface pixels
    pred = np.zeros_like(gt)
    pred[2:6, 3:7] = True  # shifted one column
    assert surface_dice(gt, pred, tolerance=1.0) == pytest.approx(1.0)
    # tolerance 0: the 6 shared top/bottom border pixels on each side
    assert surface_dice(gt, pred, tolerance=0.0) == pytest.approx(12 / 24)
    # x pixels 2 units wide: the 1-column shift is 2 apart; only row neighbours (1 apart) help
    assert surface_dice(gt, pred, tolerance=1.5, spacing=(1.0, 2.0)) == pytest.approx(16 / 24)
    assert surface_dice(gt, gt, tolerance=0.0) == 1.0
    assert surface_dice(gt, np.zeros_like(gt), tolerance=5.0) == 0.0
    assert surface_dice(np.zeros_like(gt), np.zeros_like(gt), tolerance=1.0) == 1.0


def test_surface_dice_3d_spacing():
    gt = np.zeros((6, 10, 10), bool)
    gt[1:5, 2:8, 2:8] = True
    pred = np.zeros_like(gt)
    pred[2:6, 2:8, 2:8] = True  # shifted one slice in z
    assert surface_dice(gt, pred, 1.0, spacing=(1.0, 1.0, 1.0)) == pytest.approx(1.0)
    assert surface_dice(gt, pred, 1.0, spacing=(3.0, 1.0, 1.0)) < 1.0


def test_semantic_dice_per_class():
    gt = np.array([[0, 1, 1, 2, 2, 2]])
    pred = np.array([[1, 1, 0, 2, 2, 3]])
    scores = semantic_dice(gt, pred)
    assert scores == pytest.approx({1: 2 * 1 / 4, 2: 2 * 2 / 5, 3: 0.0})
    assert semantic_dice(gt, pred, classes=[2, 9]) == pytest.approx({2: 0.8, 9: 1.0})


def test_input_errors():
    with pytest.raises(InputError, match="shape"):
        dice(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(InputError, match="integer"):
        instance_scores(np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(InputError, match="negative"):
        instance_scores(-np.ones((2, 2), int), np.zeros((2, 2), int))
    with pytest.raises(InputError, match="spacing"):
        surface_dice(np.ones((2, 2)), np.ones((2, 2)), 1.0, spacing=(1.0,))
