"""fveseg: text-prompted 3D segmentation with Fractal Volumetric Encoding (BiomedParse-V), headless core."""

__version__ = "0.1.0"
