"""Segment volumes with text prompts and write their labels (OME-Zarr or TIFF).

Inputs are files, folders (their volume files) or glob patterns. One input: ``-o`` is the output path
(``.zarr`` / ``.ome.zarr`` → OME-Zarr, ``.tif`` → TIFF, or ``--format``). Several inputs: ``-o`` is a folder
(created if missing) that receives ``<name>.ome.zarr`` or ``<name>.tif`` per input. Without ``-o`` the
output goes beside each input as ``<name>.fveseg.ome.zarr`` (or ``.fveseg.tif``); ``--into-source`` adds
the labels to an OME-Zarr input's own image group instead.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from fveseg.cli.common import (
    ProgressBar,
    expand_inputs,
    format_table,
    output_format,
    overall_bar,
    parse_spacing,
    stem,
)
from fveseg.errors import InputError, OutputExistsError
from fveseg.instances.split import INSTANCE_METHODS
from fveseg.normalize import NOISY_LEVEL
from fveseg.params import FLATTEN_CHOICES, SegmentParams, flatten_name

if TYPE_CHECKING:
    from fveseg.pipeline import SegmentJob

DEFAULTS = SegmentParams()  # the one place defaults are defined

NAME = "segment"
HELP = "segment volumes with text prompts and write label volumes"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="volume files, folders or glob patterns")
    parser.add_argument(
        "-p",
        "--prompt",
        dest="prompts",
        action="append",
        metavar="TEXT",
        help=f"text prompt, repeatable (default: {DEFAULTS.prompts[0]})",
    )
    parser.add_argument("-o", "--output", type=Path, help="output file or folder (see above)")
    parser.add_argument("--format", choices=("zarr", "tiff"), help="default: from -o, else zarr")
    parser.add_argument(
        "--into-source", action="store_true", help="write labels into the input OME-Zarr's own image group"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--channel", help="channel index or name of multi-channel inputs")
    parser.add_argument("--no-image", action="store_true", help="new OME-Zarr groups hold labels only")
    group = parser.add_argument_group("instances")
    group.add_argument(
        "--instances",
        action=argparse.BooleanOptionalAction,
        default=DEFAULTS.instances,
        help="split each prompt's mask into instances (default); --no-instances writes the masks only",
    )
    group.add_argument(
        "--min-size", type=float, default=DEFAULTS.min_size, help="smallest instance, physical units (µm³)"
    )
    group.add_argument(
        "--min-relative-size",
        type=float,
        default=DEFAULTS.min_relative_size,
        help="drop specks smaller than this fraction of the typical object size (0: keep all)",
    )
    group.add_argument(
        "--merge-necks",
        type=_probability,
        default=DEFAULTS.merge_necks,
        metavar="R",
        help="merge two 3D objects when the neck joining them is at least R times as thick as the thinner "
        "one (lobes of one nucleus; 0: never)",
    )
    group.add_argument(
        "--instance-method",
        choices=INSTANCE_METHODS,
        default=DEFAULTS.instance_method,
        help="watershed: every mask voxel labelled; reference: the BiomedParse v2 recipe",
    )
    group.add_argument(
        "--focus-fraction",
        type=_fraction,
        default=DEFAULTS.focus_fraction,
        metavar="F",
        help="drop each instance's cross-sections dimmer than F times its brightest one, above background, "
        "and objects dimmer than F times a brighter object in the same columns (out-of-focus haze along "
        "the slicing axis; 0: keep all)",
    )
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model",
        help=f"checkpoint path, or a bundled model's name: default (the default), noise-robust for very "
        f"noisy stacks, or auto (chosen per volume from its measured noise, noise-robust from "
        f"{NOISY_LEVEL:g} of the signal range)",
    )
    group.add_argument("--device", default=DEFAULTS.device, help="auto, cpu, cuda, cuda:1, mps")
    group.add_argument(
        "--batch-size", type=_positive_int, default=DEFAULTS.batch_size, help="slices per network batch"
    )
    group.add_argument("--order", type=_positive_int, help="FVE order k (default: the model's)")
    group.add_argument(
        "--mask-threshold",
        type=_probability,
        default=DEFAULTS.mask_threshold,
        help="mask probability threshold",
    )
    group.add_argument(
        "--exist-threshold",
        type=_probability,
        default=DEFAULTS.exist_threshold,
        help="slice existence threshold",
    )
    group.add_argument(
        "--exist-low",
        type=_probability,
        default=DEFAULTS.exist_low,
        help="slices with existence above this still keep a prompt when they continue a run of slices "
        "above --exist-threshold (hysteresis; the default, equal to the threshold, is the plain gate)",
    )
    group.add_argument(
        "--axis",
        choices=("auto", "0", "1", "2"),
        default=str(DEFAULTS.axis),
        help="axis to slice along (auto: the paper's view rule)",
    )
    group.add_argument(
        "--resize",
        type=_resize,
        default=DEFAULTS.resize,
        metavar="F",
        help="resample each slice by F before the network and back after it (default auto: segment a "
        "few slices first and shrink the slices when the objects are much larger than the model "
        "was trained on, enlarge them 1.25x when clearly smaller; see docs/model-card.md)",
    )
    group.add_argument(
        "--flatten",
        choices=FLATTEN_CHOICES,
        default=flatten_name(DEFAULTS.flatten),
        help="subtract each z-plane's background (uneven illumination, light-sheet stripes) before the "
        "network (auto: only where the background varies more than the nuclei stand out above it)",
    )
    group.add_argument(
        "--isotropic",
        action=argparse.BooleanOptionalAction,
        default=DEFAULTS.isotropic,
        help="resample z to the in-plane pixel size before the network and back after it (needs the "
        "voxel size: from the file or --scale)",
    )
    group.add_argument(
        "--scale",
        type=float,
        nargs=3,
        metavar=("Z", "Y", "X"),
        help="voxel size in physical units, overriding the file's",
    )
    group = parser.add_argument_group("scale-out (dask.distributed)")
    group.add_argument("--scheduler", metavar="ADDRESS", help="dask scheduler address, e.g. tcp://host:8786")
    group.add_argument("--workers", type=_positive_int, help="start a local cluster with N worker processes")
    group.add_argument(
        "--block-slices",
        type=_positive_int,
        help="process each OME-Zarr input in blocks of N slices across the workers",
    )
    group.add_argument(
        "--instance-margin",
        type=_positive_int,
        default=16,
        help="slices of context on each side of a block when splitting instances in blocks",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _channel(text: str | None) -> int | str | None:
    return int(text) if text is not None and text.lstrip("-").isdigit() else text


def _resize(text: str) -> float | str:
    if text.strip().lower() == "auto":
        return "auto"
    value = float(text)
    if not 0.1 <= value <= 4.0:
        raise argparse.ArgumentTypeError(f"must be between 0.1 and 4, got {value}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be at least 0 and below 1, got {value}")
    return value


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


def options_from_args(args: argparse.Namespace) -> SegmentParams:
    return SegmentParams(
        prompts=tuple(args.prompts or DEFAULTS.prompts),
        instances=args.instances,
        min_size=args.min_size,
        min_relative_size=args.min_relative_size,
        instance_method=args.instance_method,
        merge_necks=args.merge_necks,
        focus_fraction=args.focus_fraction,
        checkpoint=args.model or DEFAULTS.checkpoint,
        device=args.device,
        batch_size=args.batch_size,
        order=args.order,
        mask_threshold=args.mask_threshold,
        exist_threshold=args.exist_threshold,
        exist_low=args.exist_low,
        axis=args.axis if args.axis == "auto" else int(args.axis),
        resize=args.resize,
        flatten=FLATTEN_CHOICES[args.flatten],
        isotropic=args.isotropic,
        spacing=parse_spacing(args.scale),
        with_image=not args.no_image,
        channel=_channel(args.channel),
    )


def plan_jobs(args: argparse.Namespace) -> list[SegmentJob]:
    """Resolve inputs and outputs; refuse existing outputs before any work starts."""
    from fveseg.pipeline import SegmentJob  # with torch: see `run`

    sources = expand_inputs(args.inputs)
    fmt = output_format(args.output, args.format)
    extension = ".ome.zarr" if fmt == "zarr" else ".tif"
    jobs = []
    if len(sources) > 1 and args.output is not None and args.output.exists() and not _is_folder(args.output):
        raise InputError(
            f"-o {args.output} is an existing file or zarr, but {len(sources)} inputs need a folder for "
            "their outputs (fix: give -o a folder, new or existing)"
        )
    for source in sources:
        if args.into_source:
            output = source
        elif args.output is None:
            output = source.with_name(f"{stem(source)}.fveseg{extension}")
        elif len(sources) == 1 and not _is_folder(args.output):
            output = args.output
        else:
            output = args.output / f"{stem(source)}{extension}"
        if not args.into_source and output.exists() and not args.overwrite:
            raise OutputExistsError(f"{output} already exists (fix: pass --overwrite or choose another -o)")
        jobs.append(
            SegmentJob(
                source=source, output=output, fmt=fmt, into_source=args.into_source, overwrite=args.overwrite
            )
        )
    outputs = [job.output for job in jobs if not job.into_source]
    if len(set(outputs)) != len(outputs):
        raise InputError(
            "two inputs share a name, so their outputs would collide "
            "(fix: segment them separately or rename one)"
        )
    if len(sources) > 1 and args.output is not None:
        args.output.mkdir(parents=True, exist_ok=True)
    return jobs


def _is_folder(output: Path) -> bool:
    """An existing plain folder (not a .zarr container) receives one output per input."""
    return output.is_dir() and not output.name.lower().endswith(".zarr")


def run(args: argparse.Namespace) -> int:
    # The pipeline imports torch (1.2 s): here, not at module top, because every `fveseg` command builds
    # this subcommand's parser (`fveseg --help` took 3.3 s with them at the top).
    from fveseg.distributed import connect, segment_jobs, segment_zarr_in_blocks
    from fveseg.pipeline import segment_file

    options = options_from_args(args)
    jobs = plan_jobs(args)
    show = not args.quiet
    if args.scheduler or args.workers:
        with connect(args.scheduler, args.workers) as client:
            if args.block_slices:
                summaries = [
                    segment_zarr_in_blocks(
                        client,
                        job,
                        options,
                        block_slices=args.block_slices,
                        instance_margin=args.instance_margin,
                    )
                    for job in overall_bar(jobs, len(jobs), show)
                ]
            else:
                bar = overall_bar(None, len(jobs), show)
                summaries = segment_jobs(client, jobs, options, on_done=None if bar is None else bar.update)
    else:
        if args.block_slices:
            raise InputError("--block-slices needs workers (fix: add --workers N or --scheduler ADDRESS)")
        summaries = []
        for job in overall_bar(jobs, len(jobs), show and len(jobs) > 1):
            bar = ProgressBar(job.source.name, enabled=show)
            try:
                summaries.append(segment_file(job, options, progress=bar))
            finally:
                bar.close()
    print(format_table([s.row() for s in summaries]), file=sys.stdout)
    for note in (note for summary in summaries for note in summary.notes):
        print(f"note: {note}", file=sys.stderr)
    return 0
