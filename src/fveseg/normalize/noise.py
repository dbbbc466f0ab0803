"""How noisy a volume is: the pixel noise as a fraction of the signal range, from a few slices.

`fveseg.inference.AutoSegmenter` uses it to pick the bundled model: the default one for clean data,
the noise-robust one when the noise is a sizeable part of the signal (docs/model-card.md, "Choosing
the model from the measured noise").

The noise is estimated as in Immerkær (1996), "Fast noise variance estimation": the image is filtered
with the 3×3 kernel ``outer([1, -2, 1], [1, -2, 1])``, which cancels intensities that vary linearly
(flat regions, ramps, uneven illumination) and multiplies white noise of standard deviation σ by 6. The
median absolute response (robust to the edges and texture that remain) divided by 0.6745 × 6 estimates σ.
The signal range is the 99th percentile minus the median, as `training.check_noise` adds its noise.
"""

from __future__ import annotations

import numpy as np

#: Noise (fraction of the signal range) from which a volume counts as noisy. Clean data measure far
#: below it: the 53 DSB 2018 validation images 0.004–0.093 (median 0.008), cells3d 0.050, the DSB 2D
#: image 0.054, the held-out procedural volumes 0.056–0.066. Gaussian noise of 0.2 × the signal range
#: measures 0.19–0.21.
NOISY_LEVEL = 0.15
#: Slices measured (evenly spaced along the first axis) and the largest side of the centred crop of each.
MEASURED_SLICES = 8
MEASURED_SIDE = 1024
# |filter response| of white noise: standard deviation 6 sigma; its median is 0.6745 of that
_MEDIAN_TO_SIGMA = 1.0 / (0.6745 * 6.0)


def noise_level(volume, slices: int = MEASURED_SLICES) -> float:
    """Standard deviation of the pixel noise divided by the signal range (99th percentile − median).

    Parameters
    ----------
    volume : array (D, H, W) or (H, W), numeric (numpy, zarr or dask: only the measured slices are read)
        Intensities as acquired (any linear rescaling gives the same value).
    slices : int
        At most this many slices, evenly spaced along the first axis, are measured; of each, a centred
        crop of at most `MEASURED_SIDE` pixels a side.

    Returns
    -------
    float
        0.1 means the noise is a tenth of the signal range (signal-to-noise ratio about 10). 0.0 when
        there is nothing to measure: slices under 3 × 3 pixels, no finite value, or no signal range.
    """
    shape = tuple(int(s) for s in volume.shape)
    if len(shape) not in (2, 3):
        raise ValueError(f"volume must be (D, H, W) or (H, W), got shape {shape}")
    if len(shape) == 2:
        volume, shape = volume[None], (1, *shape)
    depth, height, width = shape
    if height < 3 or width < 3 or depth == 0:
        return 0.0
    crop = tuple(slice(max(0, (n - MEASURED_SIDE) // 2), max(0, (n - MEASURED_SIDE) // 2) + MEASURED_SIDE)
                 for n in (height, width))  # fmt: skip
    picks = np.unique(np.linspace(0, depth - 1, min(depth, max(1, slices))).round().astype(int))
    sample = np.stack([np.asarray(volume[int(z)][crop], dtype=np.float32) for z in picks])
    finite = np.isfinite(sample)
    if not finite.any():
        return 0.0
    if not finite.all():  # fill gaps with a typical value: a few flat patches do not move the median
        sample = np.where(finite, sample, np.float32(np.median(sample[finite])))
    signal = float(np.percentile(sample, 99) - np.median(sample))
    if not signal > 0:
        return 0.0
    rows = sample[:, :-2] - 2 * sample[:, 1:-1] + sample[:, 2:]  # the kernel is separable
    response = rows[:, :, :-2] - 2 * rows[:, :, 1:-1] + rows[:, :, 2:]
    return float(np.median(np.abs(response)) * _MEDIAN_TO_SIGMA / signal)
