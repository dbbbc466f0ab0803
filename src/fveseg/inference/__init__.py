"""The predictor: the Segmenter runs a checkpoint over a volume slice batch by slice batch.

`segmenter` (the Segmenter), `reference_engine` (the released BiomedParse v2 weights with the public
code's own pre- and post-processing), `model_choice` (the bundled model chosen by the volume's noise, and
the one cached loader `load_segmenter`), `auto_scale` (the automatic in-plane resize), `gate` (the
existence gate and the result), `tiling` (slices larger than the network input).
"""

# Resolved on first use (PEP 562): the gate's constants are read by modules that must not import torch
# (the napari widget's defaults, `fveseg.params`), and torch takes seconds to import.
_PUBLIC = {
    "EXIST_LOW": "fveseg.inference.gate",
    "SegmentationResult": "fveseg.inference.gate",
    "AutoSegmenter": "fveseg.inference.model_choice",
    "load_segmenter": "fveseg.inference.model_choice",
    "Segmenter": "fveseg.inference.segmenter",
    "select_device": "fveseg.inference.segmenter",
}
__all__ = list(_PUBLIC)


def __getattr__(name: str):
    if name in _PUBLIC:
        import importlib

        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'fveseg.inference' has no attribute {name!r}")
