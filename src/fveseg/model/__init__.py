"""BiomedParse-V network: FocalNet backbone, FPN pixel decoder, BoltzFormer decoder with ISD, text encoders.

Imports without ``transformers`` or the MiniLM weights (loaded lazily by `MiniLMTextEncoder`).
See `fveseg.model.biomedparse` for the forward API and how to train with per-image prompt sets.
"""

from fveseg.model.biomedparse import BiomedParseV
from fveseg.model.build import CONFIGS, ModelConfig, build_model
from fveseg.model.pixel_decoder import PixelFeatures
from fveseg.model.text_encoder import (
    MiniLMTextEncoder,
    PrecomputedTextEncoder,
    TextEncoder,
    TextTokens,
    normalize_prompt,
    save_text_table,
)

__all__ = [
    "BiomedParseV",
    "CONFIGS",
    "ModelConfig",
    "build_model",
    "PixelFeatures",
    "TextEncoder",
    "TextTokens",
    "MiniLMTextEncoder",
    "PrecomputedTextEncoder",
    "normalize_prompt",
    "save_text_table",
]
