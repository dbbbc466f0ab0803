"""Write the Fractal Volumetric Encoding (FVE) images of a volume, for inspection or training.

Each focal slice becomes one RGB image: channel 0 the slice, 1 the preceding context, 2 the following
context, packed at order k (3k − 2 slices per side). The output is a (D, H, W, 3) stack: a TIFF (opens in
Fiji / napari as an RGB stack) or a zarr array (``.zarr``), written batch by batch so the whole encoded
volume is never in memory.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from fveseg.cli.common import ProgressBar, output_format
from fveseg.errors import InputError

NAME = "encode"
HELP = "write the FVE images of a volume (TIFF stack or zarr)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, help="volume file (TIFF, OME-Zarr, npz, NIfTI)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output .tif or .zarr")
    parser.add_argument("--format", choices=("zarr", "tiff"), help="output format (default: from -o)")
    parser.add_argument("--channel", help="channel index or name of multi-channel inputs")
    parser.add_argument("--order", type=int, default=1, help="FVE order k (0: focal slice only)")
    parser.add_argument(
        "--axis",
        choices=("auto", "0", "1", "2"),
        default="0",
        help="axis to slice along (auto: the paper's view rule)",
    )
    parser.add_argument("--pad", choices=("edge", "reflect"), default="edge", help="padding at the ends")
    parser.add_argument("--downsample", choices=("mean", "stride"), default="mean", help="2x2 downsampling")
    parser.add_argument("--start", type=int, default=0, help="first focal slice")
    parser.add_argument("--stop", type=int, help="one past the last focal slice (default: all)")
    parser.add_argument(
        "--raw",
        action="store_true",
        help="encode raw intensities (default: normalised to uint8 as the model sees them)",
    )
    parser.add_argument("--batch-size", type=int, default=16, help="slices encoded per batch")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from fveseg import fve, io

    if args.order < 0:
        raise InputError(f"--order must be >= 0, got {args.order} (fix: use 1, 2, 3, ...)")
    from fveseg.cli.segment import _channel

    volume = io.read_volume(args.input, channel=_channel(args.channel))
    data = volume.data
    axis = fve.select_view(data.shape, volume.spacing) if args.axis == "auto" else int(args.axis)
    if not args.raw:
        from fveseg.normalize.intensity import apply_range, intensity_range

        low, high = intensity_range(data)
        data = _LazyNormalised(data, low, high, apply_range)
    depth = data.shape[axis]
    stop = depth if args.stop is None else args.stop
    fmt = output_format(args.output, args.format, default="")
    if fmt not in ("zarr", "tiff"):
        raise InputError(
            f"cannot tell the format of {args.output} (fix: end it in .tif or .zarr, or pass --format)"
        )
    count = max(0, stop - args.start)
    plane = [s for i, s in enumerate(data.shape) if i != axis]
    shape = (count, *plane, 3)
    batches = fve.encode_volume(
        data,
        order=args.order,
        axis=axis,
        pad=args.pad,
        downsample=args.downsample,
        start=args.start,
        stop=stop,
        batch_size=args.batch_size,
    )
    bar = ProgressBar(f"encode {args.input.name}", enabled=not args.quiet)
    with io.atomic_path(args.output, overwrite=args.overwrite) as tmp:
        try:
            if fmt == "tiff":
                _write_tiff(tmp, batches, shape, bar)
            else:
                _write_zarr(tmp, batches, shape, data.dtype, args, bar, start=args.start)
        finally:
            bar.close()
    print(
        f"wrote {args.output}: {count} FVE images of shape {tuple(plane) + (3,)}, order {args.order}, "
        f"axis {axis}, dtype {np.dtype(data.dtype).name}",
        file=sys.stdout,
    )
    return 0


class _LazyNormalised:
    """A (D, H, W) view that normalises only the slices read, so big volumes stream."""

    def __init__(self, data, low, high, apply):
        self._data, self._low, self._high, self._apply = data, low, high, apply
        self.shape, self.ndim, self.dtype = tuple(data.shape), 3, np.dtype(np.uint8)

    def __getitem__(self, key):
        return self._apply(np.asarray(self._data[key]), self._low, self._high)

    def __array__(self, dtype=None, copy=None):
        array = self[...]
        return array if dtype is None else array.astype(dtype)


def _write_tiff(path: Path, batches, shape, bar) -> None:
    import tifffile

    with tifffile.TiffWriter(path, bigtiff=int(np.prod(shape)) > 2**31) as writer:
        for first, batch in batches:
            for image in batch:  # one RGB page per focal slice, streamed
                writer.write(np.ascontiguousarray(image), photometric="rgb", contiguous=True)
            bar(first + len(batch), shape[0])


def _write_zarr(path: Path, batches, shape, dtype, args, bar, start: int) -> None:
    import zarr

    array = zarr.create_array(
        store=str(path),
        shape=shape,
        dtype=dtype,
        chunks=(min(args.batch_size, max(shape[0], 1)), *shape[1:]),
        attributes={
            "fve": {
                "order": args.order,
                "pad": args.pad,
                "downsample": args.downsample,
                "first_slice": start,
                "channels": ["focal", "preceding", "following"],
            }
        },
    )
    for first, batch in batches:
        array[first - start : first - start + len(batch)] = batch
        bar(first - start + len(batch), shape[0])
