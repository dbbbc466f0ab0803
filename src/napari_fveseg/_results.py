"""Turn a cached :class:`fveseg.inference.SegmentationResult` into napari Labels layer data.

Used by the segmentation widget for the first display and for every re-threshold, so changing the mask
or existence threshold, instance splitting or the output style never runs the network again: the
semantic labels come from ``result.rethreshold`` (existence gating, per-slice NMS and argmax in the
core) and instances from :func:`fveseg.instances.split_instances`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

LayerData = tuple[Any, dict, str]
SEMANTIC_LAYER = "fveseg classes"


@dataclass(frozen=True)
class Thresholds:
    """Post-processing choices that can change without rerunning the network."""

    mask_threshold: float = 0.5
    existence_threshold: float = 0.5
    split_instances: bool = True
    min_size: float = 0.0
    output: str = "per prompt"  # or "semantic"
    min_relative_size: float = 0.1  # fveseg.instances.SPECK_FRACTION: drop specks of the slice-wise masks
    focus_fraction: float | None = None  # None: fveseg.focus.FOCUS_FRACTION (out-of-focus cross-sections)


@dataclass(frozen=True)
class Placement:
    """Where results go in the viewer: the image layer's world transform (z, y, x) and dimensionality."""

    scale: tuple[float, ...]
    translate: tuple[float, ...]
    spacing: tuple[float, float, float] | None
    squeeze: bool = False  # the image was 2D: drop the one-slice z axis again


def result_layers(
    result: Any,
    prompts: list[str],
    thresholds: Thresholds,
    place: Placement,
    semantic: Any = None,
    image: Any = None,
) -> list[LayerData]:
    """Labels layer data for `result` (see the module docstring).

    Parameters
    ----------
    result : SegmentationResult
        ``probabilities``/``edges`` (P, D, H, W) float16, ``existence`` (P, N) and ``rethreshold``.
    prompts : list of str
        The prompts as the user typed them (layer names); ``result.prompts`` holds their canonical form.
    thresholds, place : Thresholds, Placement
    semantic : (D, H, W) array, optional
        ``result.semantic`` when it was computed with ``thresholds`` (the first display); otherwise
        ``result.rethreshold`` recomputes it from the cached probabilities.
    image : (D, H, W) array, optional
        The segmented intensities: instances lose their out-of-focus cross-sections (`fveseg.focus`).

    Returns
    -------
    list of (data, kwargs, "labels")
        ``thresholds.output == "per prompt"``: one uint8 0/1 layer named after each prompt;
        ``"semantic"``: one layer ``"fveseg classes"`` with id i + 1 for ``prompts[i]``.
        With splitting on, one uint32 ``"<prompt> instances"`` layer per prompt follows.
        Every layer's metadata holds ``existence`` ({prompt: per-slice probabilities}) and ``axis``.
    """
    from fveseg.instances import instances_from_prediction

    if semantic is None:
        semantic = result.rethreshold(
            mask_threshold=thresholds.mask_threshold, exist_threshold=thresholds.existence_threshold
        )
    semantic = np.asarray(semantic)
    existence = {prompt: np.asarray(result.existence[i]).tolist() for i, prompt in enumerate(prompts)}
    common = {"scale": place.scale, "translate": place.translate}
    base_meta = {"existence": existence, "axis": int(result.axis), "fveseg_result": True}
    layers: list[LayerData] = []
    if thresholds.output == "semantic":
        names = {i + 1: prompt for i, prompt in enumerate(prompts)}
        layers.append(
            (
                _fit(semantic, place),
                {
                    "name": SEMANTIC_LAYER,
                    **common,
                    "metadata": {**base_meta, "class_names": names},
                    "features": {"index": list(names), "class_name": list(names.values())},
                },
                "labels",
            )
        )
    else:
        for i, prompt in enumerate(prompts):
            layers.append(
                (
                    _fit((semantic == i + 1).astype(np.uint8), place),
                    {
                        "name": prompt,
                        **common,
                        "metadata": {**base_meta, "class_names": {1: prompt}},
                        "features": {"index": [1], "class_name": [prompt]},
                    },
                    "labels",
                )
            )
    if thresholds.split_instances:
        for i, prompt in enumerate(prompts):
            edges = np.asarray(result.edges[i], dtype=np.float32)
            instances = instances_from_prediction(
                semantic == i + 1,
                edges,
                image,
                place.spacing,
                int(result.axis),
                min_size=thresholds.min_size,
                min_relative_size=thresholds.min_relative_size,
                focus_fraction=thresholds.focus_fraction,
            )
            layers.append(
                (
                    _fit(instances, place),
                    {
                        "name": f"{prompt} instances",
                        **common,
                        "metadata": {**base_meta, "class_name": prompt},
                    },
                    "labels",
                )
            )
    return layers


def _fit(labels: np.ndarray, place: Placement) -> np.ndarray:
    return labels[0] if place.squeeze else labels
