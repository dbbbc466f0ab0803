"""Instances from the network's masks and edges: the edge-based split (`split`), cuts at thin necks
(`necks`), the out-of-focus haze trim (`haze`) and the same split over blocks of a huge volume
(`blocks`)."""

from fveseg.instances.haze import FOCUS_FRACTION, trim_out_of_focus
from fveseg.instances.split import (
    EDGE_THRESHOLD,
    NECK_MERGE,
    SPECK_FRACTION,
    instances_from_prediction,
    reference_split,
    split_instances,
)

__all__ = [
    "EDGE_THRESHOLD",
    "FOCUS_FRACTION",
    "NECK_MERGE",
    "SPECK_FRACTION",
    "instances_from_prediction",
    "reference_split",
    "split_instances",
    "trim_out_of_focus",
]
