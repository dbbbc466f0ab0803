"""Score predicted label volumes against ground truth: Dice, NSD, instance F1 at IoU 0.5, Dice on TPs.

Pairs are matched in order: ``--pred a b --gt A B`` scores a against A and b against B (folders and globs
are expanded and sorted first, so matching names line up). Dice and the normalised surface distance (NSD,
at ``--tolerance`` physical units, using the ground truth's voxel size or ``--scale``) compare foreground
(label > 0); F1 and DSC-TP compare instances with one-to-one matching at IoU ≥ 0.5, as the CVPR 2025
BiomedSegFM challenge defines them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from fveseg.cli.common import (
    expand_inputs,
    format_table,
    load_label_volume,
    parse_spacing,
    write_csv,
    write_json,
)
from fveseg.errors import InputError

NAME = "evaluate"
HELP = "score predictions against ground truth (Dice, NSD, F1, DSC-TP)"
COLUMNS = ("prediction", "ground truth", "dice", "nsd", "f1", "dice_tp", "tp", "fp", "fn")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pred", nargs="+", required=True, metavar="PATH", help="predicted label volumes")
    parser.add_argument("--gt", nargs="+", required=True, metavar="PATH", help="ground-truth label volumes")
    parser.add_argument("--pred-label", metavar="NAME", help="labels/<NAME> inside an OME-Zarr prediction")
    parser.add_argument("--gt-label", metavar="NAME", help="labels/<NAME> inside an OME-Zarr ground truth")
    parser.add_argument(
        "--tolerance", type=_tolerance, default=1.0, help="NSD tolerance in physical units (µm), 0 or more"
    )
    parser.add_argument(
        "--iou", type=_iou, default=0.5, help="IoU for an instance match, above 0 and at most 1"
    )
    parser.add_argument(
        "--scale",
        type=float,
        nargs=3,
        metavar=("Z", "Y", "X"),
        help="voxel size when the files do not carry one",
    )
    parser.add_argument("--csv", type=Path, help="also write the table as CSV")
    parser.add_argument("--json", type=Path, help="also write the table and the mean as JSON")
    parser.add_argument("--overwrite", action="store_true", help="replace existing --csv / --json files")


def _tolerance(text: str) -> float:
    value = float(text)
    if not (np.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value:g}")
    return value


def _iou(text: str) -> float:
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be above 0 and at most 1, got {value:g}")
    return value


def score_pair(gt: np.ndarray, pred: np.ndarray, spacing, tolerance: float, iou: float) -> dict:
    """All metrics for one (ground truth, prediction) pair of (D, H, W) label volumes."""
    from fveseg import metrics

    if gt.shape != pred.shape:
        raise InputError(
            f"prediction shape {pred.shape} differs from ground truth {gt.shape} "
            "(fix: compare volumes of the same size)"
        )
    gt_fg, pred_fg = gt > 0, pred > 0
    scores = metrics.instance_scores(gt, pred, iou_threshold=iou)
    row = {
        "dice": float(metrics.dice(gt_fg, pred_fg)),
        "nsd": float(metrics.surface_dice(gt_fg, pred_fg, tolerance=tolerance, spacing=spacing)),
        "f1": float(_get(scores, "f1")),
        "dice_tp": float(_get(scores, "dsc_tp")),
    }
    for key in ("tp", "fp", "fn"):
        row[key] = int(_get(scores, key))
    return row


def _get(scores, key: str):
    return scores[key] if isinstance(scores, dict) else getattr(scores, key)


def run(args: argparse.Namespace) -> int:
    preds, gts = expand_inputs(args.pred, unique=False), expand_inputs(args.gt, unique=False)
    if len(preds) != len(gts):
        raise InputError(
            f"{len(preds)} predictions but {len(gts)} ground truths "
            "(fix: give one ground truth per prediction, in the same order)"
        )
    spacing_override = parse_spacing(args.scale)
    rows = []
    for pred_path, gt_path in zip(preds, gts):
        gt, gt_spacing = load_label_volume(gt_path, args.gt_label)
        pred, pred_spacing = load_label_volume(pred_path, args.pred_label)
        spacing = spacing_override or gt_spacing or pred_spacing or (1.0,) * gt.ndim
        row = {"prediction": pred_path.name, "ground truth": gt_path.name}
        row.update(score_pair(gt, pred, spacing, args.tolerance, args.iou))
        rows.append(row)
    mean = {key: float(np.mean([r[key] for r in rows])) for key in ("dice", "nsd", "f1", "dice_tp")}
    table = rows + ([{"prediction": "mean", "ground truth": "", **mean}] if len(rows) > 1 else [])
    print(format_table(table, COLUMNS), file=sys.stdout)
    if args.csv:
        write_csv(args.csv, rows, args.overwrite)
    if args.json:
        write_json(
            args.json,
            {"tolerance": args.tolerance, "iou": args.iou, "volumes": rows, "mean": mean},
            args.overwrite,
        )
    return 0
