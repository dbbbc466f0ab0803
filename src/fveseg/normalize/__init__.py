"""Intensities in: the background flattened where it dominates (`background`), the range mapped to the
network's 0-255 input (`intensity`) and the noise measure that chooses the bundled model (`noise`)."""

from fveseg.normalize.intensity import MODALITIES, apply_range, intensity_range, normalize
from fveseg.normalize.noise import NOISY_LEVEL, noise_level

__all__ = ["MODALITIES", "NOISY_LEVEL", "apply_range", "intensity_range", "noise_level", "normalize"]
