"""fveseg: text-prompted 3D segmentation with Fractal Volumetric Encoding (BiomedParse-V), headless core.

The public face, in two lines::

    from fveseg import read_volume, segment
    labels = segment(read_volume("stack.tif")).instances("nuclei")  # what `fveseg segment` writes

`segment` returns a `Segmentation` (``instances(prompt)``, ``mask(prompt)``, ``layers()``; a new prompt
is answered with the same plan); `segment_file` does what ``fveseg segment`` does for one file;
`write_labels` writes labels to OME-Zarr or OME-TIFF (by the path's suffix); `SegmentParams` holds every
option and its default; `load_segmenter` loads a model once per process.
"""

__version__ = "0.1.0"

# Resolved on first use (PEP 562): the model stack imports torch, which takes seconds, and `fveseg
# --help`, the napari plugin's start and `fveseg.io` users need none of it.
_PUBLIC = {
    "SegmentParams": "fveseg.params",
    "SegmentJob": "fveseg.pipeline",
    "segment": "fveseg.pipeline",
    "Segmentation": "fveseg.pipeline",
    "segment_file": "fveseg.pipeline",
    "segment_volume": "fveseg.pipeline",
    "load_segmenter": "fveseg.inference.model_choice",
    "read_volume": "fveseg.io",
    "write_labels": "fveseg.io",
}
__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    if name in _PUBLIC:
        import importlib

        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'fveseg' has no attribute {name!r}")
