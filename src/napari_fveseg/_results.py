"""Turn a cached :class:`fveseg.inference.SegmentationResult` into napari Labels layer data.

Used by the segmentation widget for the first display and for every re-threshold, so changing the mask
or existence threshold, instance splitting or the output style never runs the network again: the
semantic labels come from ``result.rethreshold`` (existence gating, per-slice NMS and argmax in the
core) and instances from :func:`fveseg.instances.split.split_instances`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fveseg.params import SegmentParams

DEFAULTS = SegmentParams()
LayerData = tuple[Any, dict, str]
SEMANTIC_LAYER = "fveseg classes"


@dataclass(frozen=True)
class Thresholds:
    """Post-processing choices that can change without rerunning the network (defaults: `SegmentParams`)."""

    mask_threshold: float = DEFAULTS.mask_threshold
    existence_threshold: float = DEFAULTS.exist_threshold
    split_instances: bool = DEFAULTS.instances
    min_size: float = DEFAULTS.min_size
    output: str = "per prompt"  # or "semantic"
    min_relative_size: float = DEFAULTS.min_relative_size
    focus_fraction: float = DEFAULTS.focus_fraction

    def params(self, prompts: list[str]) -> SegmentParams:
        """The pipeline's parameters for these choices."""
        return SegmentParams(
            prompts=tuple(prompts),
            instances=self.split_instances,
            min_size=self.min_size,
            min_relative_size=self.min_relative_size,
            focus_fraction=self.focus_fraction,
            mask_threshold=self.mask_threshold,
            exist_threshold=self.existence_threshold,
        )


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
        The segmented intensities: instances lose their out-of-focus cross-sections (`fveseg.instances.haze`).

    Returns
    -------
    list of (data, kwargs, "labels")
        ``thresholds.output == "per prompt"``: one uint8 0/1 layer named after each prompt;
        ``"semantic"``: one layer ``"fveseg classes"`` with id i + 1 for ``prompts[i]``.
        With splitting on, one uint32 ``"<prompt> instances"`` layer per prompt follows.
        Every layer's metadata holds ``existence`` ({prompt: per-slice probabilities}) and ``axis``.
    """
    from fveseg.pipeline import instance_labels  # imports torch: only once a result exists

    if semantic is None:
        semantic = result.rethreshold(
            mask_threshold=thresholds.mask_threshold,
            exist_threshold=thresholds.existence_threshold,
            exist_low=thresholds.params(prompts).exist_low,
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
        params = thresholds.params(prompts)
        for i, prompt in enumerate(prompts):
            instances = instance_labels(result, i, params, place.spacing, image, semantic)
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


def existence_summary(existence: dict[str, list[float]], threshold: float) -> str:
    """Where the existence threshold acts, in words: per prompt, the slices whose existence probability
    is above ``threshold`` (they keep their mask), e.g. ``'"nuclei" kept on 58 of 60 slices'``."""
    parts = []
    for prompt, values in existence.items():
        kept = int(np.count_nonzero(np.asarray(values, dtype=float) > threshold))
        parts.append(f'"{prompt}" kept on {kept} of {len(values)} slices')
    if not parts:
        return ""
    return f"Existence above {threshold:g}: " + ", ".join(parts) + "."


def result_notes(
    layers: list[LayerData], prompts: list[str], thresholds: Thresholds, place: Placement, scale: float = 1.0
) -> list[str]:
    """The pipeline's warnings for these instance layers (`fveseg.pipeline.trust_notes`): no object,
    thousands of objects, objects at the stack's ends, objects of a size the model was not trained at
    (``scale``: the resize the network ran at), an unknown or very coarse voxel size."""
    from fveseg.params import slug
    from fveseg.pipeline import trust_notes

    instances = {kwargs.get("metadata", {}).get("class_name"): data for data, kwargs, _ in layers
                 if kwargs["name"].endswith(" instances")}  # fmt: skip
    if not instances:
        return []
    named = {slug(prompt): (np.asarray(data)[None] if place.squeeze else np.asarray(data), {})
             for prompt, data in instances.items()}  # fmt: skip
    return in_widget_words(trust_notes(named, thresholds.params(prompts), place.spacing, "the image", scale))


#: The CLI's words in the pipeline's notes, and the widget's fields (or the command) to say instead.
WIDGET_WORDS = {
    "the image: ": "",
    "--scale Z Y X": "the layer's scale",
    "--scale": "the layer's scale",
    "--resize": "resize",
    "--model": "model",
    "--isotropic": "fveseg segment --isotropic",
    "--flatten": "fveseg segment --flatten",
}


def in_widget_words(notes: list[str]) -> list[str]:
    """Pipeline notes about "the image" reworded for the widget (`WIDGET_WORDS`)."""
    for cli, field in WIDGET_WORDS.items():
        notes = [note.replace(cli, field) for note in notes]
    return notes
