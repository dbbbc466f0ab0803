"""Measure a checkpoint against the quality bars of issue 4 §3 and print a markdown table.

    PYTHONPATH=src:. python -m training.evaluate --checkpoint runs/tiny-cpu/best \
        [--data-root /work/shared/data] [--save-predictions DIR] [--device cpu|cuda] [--n-synthetic 4]

Everything runs through `fveseg.inference.Segmenter` (what users get) and `fveseg.instances.split` for
instances; each prompt is segmented on its own, so prompts never compete. With ``--save-predictions``
the instance labels of the real volumes are written as ``.tif`` to cross-check with
``/work/shared/tools/score.py PRED.tif GT.npz``.
"""

from __future__ import annotations

import argparse
import glob
import json
import time
from pathlib import Path

import numpy as np

from training.prompts import HELDOUT_NEGATIVES, HELDOUT_PARAPHRASES
from training.validation import heldout_synthetic, instances_from, predict


def _score(segmenter, image, labels, spacing, prompt="nuclei", axis="auto"):
    from fveseg.fve.encoding import select_view
    from fveseg.metrics import dice, instance_scores

    masks, edges, exist = predict(segmenter, image, [prompt], spacing, axis)
    view = select_view(image.shape, spacing) if axis == "auto" else axis
    pred = instances_from(masks[0], edges[0], spacing, image=image, axis=view)  # what the CLI writes
    plain = instances_from(masks[0], np.zeros_like(edges[0]), spacing, image=image, axis=view)
    return {
        "dice": dice(labels, pred > 0),  # of the labels written, as /work/shared/tools/score.py scores
        "f1": instance_scores(labels, pred)["f1"],
        "f1_components": instance_scores(labels, plain)["f1"],
        "pred": pred,
    }


def _empty_fraction(segmenter, image, spacing, prompt) -> float:
    masks, _, _ = predict(segmenter, image, [prompt], spacing, "auto")
    per_slice = (masks[0] > 0.5).reshape(masks.shape[1], -1).any(1)
    return float(1.0 - per_slice.mean())


def evaluate(
    checkpoint: str,
    data_root: str | None,
    device: str = "auto",
    n_synthetic: int = 4,
    save_predictions: str | None = None,
    max_val: int | None = None,
    noisy_checkpoint: str | None = None,
) -> list[dict]:
    """Rows ``{"check", "metric", "value", "bar"}`` for every measured quality bar."""
    from training.data import load_volume_file
    from training.validation import build_segmenter

    segmenter = build_segmenter(checkpoint, noisy_checkpoint, device)
    order = int(segmenter.metadata.get("fve", {}).get("order", 1))
    rows: list[dict] = []

    def add(check, metric, value, bar=""):
        rows.append({"check": check, "metric": metric, "value": float(value), "bar": bar})

    synthetic = heldout_synthetic(
        n_synthetic, shape=(32, 192, 192), spacing=(1.0, 0.3, 0.3), first_seed=10**12 + 100
    )
    scores = [_score(segmenter, v.image, v.labels, v.spacing) for v in synthetic]
    add("held-out synthetic (hard)", "Dice (written labels)", np.mean([s["dice"] for s in scores]), "≥ 0.90")
    add(
        "held-out synthetic (hard)",
        "instance F1@0.5 (edge split)",
        np.mean([s["f1"] for s in scores]),
        "≥ 0.85",
    )
    add(
        "held-out synthetic (hard)",
        "instance F1@0.5 (plain components)",
        np.mean([s["f1_components"] for s in scores]),
    )
    for k in (0, 1, 2):
        segmenter.metadata["fve"] = {**segmenter.metadata.get("fve", {}), "order": k}
        dice_k = np.mean([_score(segmenter, v.image, v.labels, v.spacing)["dice"] for v in synthetic])
        note = " (trained order)" if k == order else " (not the trained order)"
        add("context ablation", f"Dice at FVE order k={k}{note}", dice_k)
    segmenter.metadata["fve"]["order"] = order

    nuclei_volumes = [(v.image, v.labels, v.spacing, f"synthetic-{i}") for i, v in enumerate(synthetic)]
    if data_root:
        root = Path(data_root)
        cells3d = root / "nuclei3d" / "cells3d_nuclei.npz"
        if cells3d.is_file():
            vol = load_volume_file(cells3d)
            labels = vol.classes["nuclei"]
            s = _score(segmenter, vol.image, labels, vol.spacing)
            add("cells3d_nuclei.npz", "Dice", s["dice"], "≥ 0.90")
            add("cells3d_nuclei.npz", "instance F1@0.5", s["f1"], "≥ 0.70 (baseline 0.51)")
            nuclei_volumes.append((vol.image, labels, vol.spacing, "cells3d"))
            _save(save_predictions, "cells3d_nuclei_pred.tif", s["pred"])
        dsb = root / "nuclei2d" / "dsb2018_nuclei_2d.npz"
        if dsb.is_file():
            vol = load_volume_file(dsb)
            s = _score(segmenter, vol.image, vol.classes["nuclei"], None, axis=0)
            add("dsb2018_nuclei_2d.npz", "instance F1@0.5", s["f1"], "≥ 0.75 (baseline 0.67)")
            _save(save_predictions, "dsb2018_nuclei_2d_pred.tif", s["pred"][0])
        val_files = sorted(glob.glob(str(root / "val" / "dsb2018_stage1test_fluo" / "*.npz")))[:max_val]
        if val_files:
            f1s, dices = [], []
            for path in val_files:
                vol = load_volume_file(path)
                s = _score(segmenter, vol.image, vol.classes["nuclei"], None, axis=0)
                f1s.append(s["f1"])
                dices.append(s["dice"])
            add(f"{len(val_files)} real validation images", "mean instance F1@0.5", np.mean(f1s), "≥ 0.80")
            add(f"{len(val_files)} real validation images", "mean Dice", np.mean(dices))

    for prompt in HELDOUT_NEGATIVES:
        fractions = [_empty_fraction(segmenter, img, sp, prompt) for img, _, sp, _ in nuclei_volumes]
        add("ISD on nuclei volumes", f'empty-slice fraction for "{prompt}"', np.mean(fractions), "≥ 0.95")
    base = {name: _score(segmenter, img, lab, sp)["dice"] for img, lab, sp, name in nuclei_volumes}
    for prompt in HELDOUT_PARAPHRASES["nuclei"]:
        gaps = [
            base[name] - _score(segmenter, img, lab, sp, prompt)["dice"]
            for img, lab, sp, name in nuclei_volumes
        ]
        add("held-out paraphrase", f'Dice gap "nuclei" − "{prompt}"', np.mean(gaps), "≤ 0.05")
    return rows


def _save(folder: str | None, name: str, labels: np.ndarray) -> None:
    if folder is None:
        return
    import tifffile

    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    tmp = path / (name + ".tmp")
    tifffile.imwrite(tmp, labels.astype(np.uint32))
    tmp.replace(path / name)


def markdown(rows: list[dict]) -> str:
    lines = ["| check | metric | value | bar |", "|---|---|---|---|"]
    lines += [f"| {r['check']} | {r['metric']} | {r['value']:.3f} | {r['bar']} |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--checkpoint", required=True, help='a checkpoint, or "auto": the bundled models chosen by noise'
    )
    parser.add_argument(
        "--noisy-checkpoint", default=None, help="choose by noise between --checkpoint and this"
    )
    parser.add_argument("--data-root", default=None, help="e.g. /work/shared/data")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--n-synthetic", type=int, default=4)
    parser.add_argument("--max-val", type=int, default=None, help="use only the first N validation images")
    parser.add_argument("--save-predictions", default=None, help="folder for .tif instance labels")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    start = time.monotonic()
    rows = evaluate(
        args.checkpoint,
        args.data_root,
        args.device,
        args.n_synthetic,
        args.save_predictions,
        args.max_val,
        args.noisy_checkpoint,
    )
    print(markdown(rows))
    print(f"\n(evaluated {args.checkpoint} in {time.monotonic() - start:.0f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
