"""Scale-out on dask.distributed: many volumes across workers, or one huge OME-Zarr volume in blocks.

Many volumes (`segment_jobs`)
    ``client.map`` over the input files; each worker process loads the model once (`load_segmenter` is
    cached per process) and writes its own outputs.

One huge volume (`segment_zarr_in_blocks`)
    The volume is cut into blocks of ``block_slices`` slices along the slicing axis. Pass 1 (parallel):
    each worker reads its block plus a halo of ``3k − 2`` slices on each side (the FVE context of order
    k), normalises it with the intensity range computed *once* for the whole volume, segments it
    (`Segmenter.run` with the volume's one `SegmentPlan` and ``start=, stop=``, batch by batch) and
    writes the core slices' semantic labels with the plain per-slice existence gate (and, for instances, edge
    probabilities) and their existence into a scratch zarr. Pass 1b (`regate_blocks`) applies the gate's
    hysteresis over the whole volume's existence and relabels the few slices it changes, segmenting their
    batch again. Each slice's network output depends only on its own FVE image and its batch on the
    Segmenter's fixed batch grid, so the semantic result equals a single-process run exactly. Pass 2
    (parallel, instances only): each worker splits instances on its block plus ``instance_margin`` slices
    on each side, writes the core's local ids, and the labels its margin gives to the next block's first
    slice; label pairs that overlap there are joined by a union-find into one global numbering, applied
    while the labels are written to the OME-Zarr.

    Instances equal the single-process result (up to renumbering) whenever every object is decided by
    the voxels within ``instance_margin`` slices of a block boundary — true for objects shorter than the
    margin along the block axis. When some object reaches the end of a block's margin, pass 2 is redone
    with twice the margin, up to `MARGIN_GROWTH` times the one asked for, and the summary's notes say so
    (`fveseg.instances.blocks`).

Memory per worker: pass 1 holds one batch at a time (``batch_size + 2·(3k − 2)`` image slices, P
probability and edge slices per batch slice); pass 2 holds ``block_slices + 2·margin`` slices of mask,
edges and labels (the grown margin, when it grows). Neither grows with the volume. The scratch zarr sits
beside the output (the workers must share its file system) and is deleted at the end.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np

from fveseg import fve, io
from fveseg.errors import InputError, OutputExistsError
from fveseg.inference.gate import gate_changes, presence, put_slab, regate, take_slab
from fveseg.inference.model_choice import AUTO_MODEL, load_segmenter, model_for_noise
from fveseg.inference.plan import SegmentPlan
from fveseg.instances.blocks import (
    MARGIN_GROWTH,
    Block,
    margin_notes,
    merge_block_labels,
    plan_blocks,
    split_instances_in_blocks,
)
from fveseg.instances.haze import trim_out_of_focus_in_blocks
from fveseg.io import preflight
from fveseg.io.atomic import discard, temporary_sibling
from fveseg.io.volume import spacing_in_micrometer
from fveseg.normalize import noise_level
from fveseg.normalize.background import background_dominates_in
from fveseg.pipeline import (
    JobSummary,
    SegmentParams,
    model_notes,
    plan_array,
    segment_file,
    slug,
    write_layers,
)

__all__ = [
    "connect",
    "segment_jobs",
    "plan_blocks",
    "segment_zarr_in_blocks",
    "split_instances_in_blocks",
    "merge_block_labels",
]


#: Seconds to wait for a ``--scheduler`` to answer before saying it cannot be reached.
CONNECT_TIMEOUT = "20s"


@contextlib.contextmanager
def connect(scheduler: str | None = None, workers: int | None = None, **cluster_options) -> Iterator:
    """A dask `Client`: to ``scheduler`` if given, else to a new local cluster of ``workers`` processes.

    ``cluster_options`` go to `distributed.LocalCluster` (for example ``memory_limit="2GiB"``).
    """
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError, ValueError) as error:  # unreachable, refused, malformed address
            raise InputError(
                f"cannot reach the dask scheduler at {scheduler} ({type(error).__name__}: {error}) (fix: "
                "check the address and that the scheduler runs, or use --workers N for a local cluster)"
            ) from error
        with client:
            yield client
        return
    options = dict(n_workers=workers or 2, threads_per_worker=1, processes=True, dashboard_address=None)
    options.update(cluster_options)
    with LocalCluster(**options) as cluster, Client(cluster) as client:
        yield client


def segment_jobs(client, jobs, params: SegmentParams, on_done=None) -> list:
    """Run `fveseg.pipeline.segment_file` for every job across the workers; summaries in job order.
    ``on_done()`` is called as each volume finishes (a progress bar's update)."""
    from distributed import as_completed

    for job in jobs:  # the checks segment_file makes first, here before any worker starts on a volume
        preflight_job(job, params)
    futures = client.map(segment_file, jobs, params=params, pure=False)
    order = {future.key: i for i, future in enumerate(futures)}
    summaries: list = [None] * len(futures)
    try:
        for future in as_completed(futures):
            summaries[order[future.key]] = future.result()
            if on_done is not None:
                on_done()
    except BaseException:
        client.cancel(futures)
        raise
    return summaries


def preflight_job(job, params: SegmentParams) -> list[str]:
    """The checks that need no volume data or network (`fveseg.io.preflight`); returns the layer names."""
    names = params.layer_names()
    preflight.check_params(params)
    if job.into_source and job.fmt != "zarr":
        raise InputError("--into-source writes into an OME-Zarr image group (fix: drop --format tiff)")
    preflight.check_output(job, names)
    if job.into_source:
        io.check_into_image(job.source, names, job.overwrite)
    return names


def _along(axis: int, start: int, stop: int, leading: tuple = ()) -> tuple:
    return (*leading, *([slice(None)] * axis), slice(start, stop))


def segment_slices(segmenter, volume, options, start: int, stop: int, plan: SegmentPlan) -> Iterator:
    """Segment slices ``[start, stop)`` along the plan's axis of a (lazy) volume, one batch-sized piece at a
    time.

    Each piece is ``Segmenter.run(volume, plan, ..., start=, stop=, exist_low=None)`` with the options'
    prompts and thresholds, so it equals those slices of a single-process run on the whole volume exactly
    before the existence gate's hysteresis (the plan holds the whole volume's intensity range and scale;
    `regate_blocks` applies the hysteresis); pieces end on the batch grid, so no batch is computed twice.
    Only the slabs each piece needs (plus FVE context) are read, and memory holds one piece's outputs at a
    time.

    Yields
    ------
    SegmentationResult
        One per piece, in the volume's orientation: ``semantic`` and ``edges`` (P, ...) hold
        ``existence.shape[1]`` slices along ``axis`` starting at ``.start``.
    """
    step = segmenter.batch_size
    bounds = [start, *range(start - start % step + step, stop, step), stop]
    for first, last in zip(bounds[:-1], bounds[1:]):
        yield run_plan(segmenter, volume, options, plan, start=first, stop=last)


def run_plan(segmenter, volume, options, plan: SegmentPlan, **extra):
    """``segmenter.run`` with the options' prompts and thresholds, the plain per-slice gate."""
    thresholds = {**options.gate_keywords(), "exist_low": None}
    return segmenter.run(volume, plan, list(options.prompts), **thresholds, **extra)


def _plan_task(source: str, options, spacing) -> SegmentPlan:
    """On a worker: the Segmenter's plan for the whole volume (`fveseg.pipeline.plan_array`: view axis,
    intensity range, automatic scale), reading only the slabs it needs (the probe's windows and the
    intensity range's subsample). Every block runs with it."""
    import dask

    segmenter = load_segmenter(options.checkpoint, options.device, options.batch_size)
    with dask.config.set(scheduler="sync"):
        volume = io.read_volume(source, channel=options.channel).data
        return plan_array(segmenter, volume, options, spacing)


def _segment_block(block: Block, source: str, scratch: str, options, plan: SegmentPlan) -> int:
    """Pass 1 on a worker: segment the block's slices (context read from the volume), write them."""
    import dask
    import zarr

    axis = plan.axis
    segmenter = load_segmenter(options.checkpoint, options.device, options.batch_size)
    group = zarr.open_group(scratch, mode="r+")
    with dask.config.set(scheduler="sync"):  # reading slabs inside a task: no nested cluster compute
        volume = io.read_volume(source, channel=options.channel).data
        for piece in segment_slices(segmenter, volume, options, block.start, block.stop, plan):
            where = _along(axis, piece.start, piece.start + piece.existence.shape[1])
            group["semantic"][where] = piece.semantic
            group["existence"][:, piece.start : piece.start + piece.existence.shape[1]] = piece.existence
            if options.instances:
                group["edges"][(slice(None), *where)] = piece.edges
    return block.stop - block.start


def regate_blocks(client, source: str, scratch: str, options, plan: SegmentPlan) -> int:
    """Pass 1b: the existence gate's hysteresis over the whole volume (`fveseg.inference.gate.presence`).

    Pass 1 labelled every slice with the plain per-slice gate and stored the existence profile. The few
    slices the hysteresis decides otherwise are segmented again (their batch only: the network output is
    the same) and relabelled with the whole volume's decision, so the result equals a single-process run.
    One task per scratch block (chunk), so no two workers write into the same chunk. Returns the number of
    slices relabelled.
    """
    import zarr

    group = zarr.open_group(scratch, mode="r")
    existence = np.asarray(group["existence"][:])
    block = group["semantic"].chunks[plan.axis]
    threshold, low = options.exist_threshold, options.exist_low
    present = presence(existence, threshold, low)
    changed = gate_changes(existence, present, threshold)
    if not changed.size:
        return 0
    step, depth = options.batch_size, existence.shape[1]
    spans = [(int(b) * step, min(int(b) * step + step, depth)) for b in np.unique(changed // step)]
    per_block: dict[int, list[tuple[int, int]]] = {}
    for span in spans:
        per_block.setdefault(span[0] // block, []).append(span)
    futures = client.map(
        _regate_block,
        list(per_block.values()),
        [[present[:, first:last] for first, last in group_spans] for group_spans in per_block.values()],
        source=source,
        scratch=scratch,
        options=options,
        plan=plan,
        pure=False,
    )
    client.gather(futures)
    return int(changed.size)


def _regate_block(spans, presents, source: str, scratch: str, options, plan: SegmentPlan) -> int:
    """On a worker: segment each batch of slices ``spans[i]`` again and relabel it with the whole volume's
    gate decision ``presents[i]`` (P, span length); only the slices whose decision changed are written."""
    import dask
    import zarr

    group = zarr.open_group(scratch, mode="r+")
    segmenter = load_segmenter(options.checkpoint, options.device, options.batch_size)
    mask_threshold, threshold, axis = options.mask_threshold, options.exist_threshold, plan.axis
    relabelled = 0
    with dask.config.set(scheduler="sync"):
        volume = io.read_volume(source, channel=options.channel).data
        for (first, last), present in zip(spans, presents):
            piece = run_plan(segmenter, volume, options, plan, start=first, stop=last)
            changed = gate_changes(piece.existence, present, threshold)
            regate(piece.probabilities, piece.semantic, piece.existence, axis, mask_threshold, threshold,
                   present=present)  # fmt: skip
            for index in changed:
                labels = take_slab(piece.semantic, axis, int(index), int(index) + 1, 0)
                put_slab(group["semantic"], axis, first + int(index), labels, 0)
            relabelled += int(changed.size)
    return relabelled


def segment_zarr_in_blocks(client, job, options, block_slices: int, instance_margin: int = 16):
    """Segment one (OME-)Zarr volume block by block on the cluster and write its labels (see module doc).

    Returns a `fveseg.pipeline.JobSummary` with per-pass seconds in ``stages``.
    """
    import zarr

    start = time.perf_counter()
    stages: dict[str, float] = {}
    names = preflight_job(job, options)
    volume = io.read_volume(job.source, channel=options.channel)
    if job.into_source:
        io.check_into_image(job.source, names, job.overwrite, shape=tuple(volume.data.shape))
    data, spacing = volume.data, options.spacing or spacing_in_micrometer(volume.spacing, volume.unit)
    axis = fve.select_view(tuple(data.shape), spacing) if options.axis == "auto" else int(options.axis)
    if axis != 0 and options.instances:
        raise InputError(
            f"block mode with --instances slices along z only, this view is axis {axis} "
            "(fix: pass --axis 0, or --no-instances, or run without --block-slices)"
        )
    if not job.into_source and job.output.exists() and not job.overwrite:
        raise OutputExistsError(f"{job.output} already exists (fix: pass --overwrite or choose another -o)")
    step = options.batch_size  # blocks on the batch grid: no batch is computed by two blocks
    block_slices = -(-block_slices // step) * step
    blocks = plan_blocks(int(data.shape[axis]), block_slices, 0)
    noise = None
    if options.checkpoint in (None, AUTO_MODEL):  # choose the model once here; blocks load it by name
        noise = noise_level(data)
        options = replace(options, checkpoint=model_for_noise(noise))
    if options.flatten and (options.flatten is True or background_dominates_in(data, spacing)):
        raise InputError(
            f"{job.source}: its background varies more than the nuclei stand out above it, and block mode "
            "cannot flatten the background yet (fix: run without --block-slices, or pass --flatten off to "
            "segment it unflattened)"
        )
    options = replace(options, flatten=False, axis=axis)  # decided here, for the whole volume
    # one plan for the volume (intensity range, automatic scale), made on a worker; every block runs it
    plan = client.submit(_plan_task, str(job.source), options, spacing, pure=False).result()
    # blocks are split one by one and joined where they overlap, which the edge-based watershed supports
    # exactly; the distance method ("auto" on volumes) needs the whole volume's distance map
    block_method = "watershed" if options.instance_method in ("auto", "distance") else options.instance_method
    stages["plan"] = time.perf_counter() - start

    scratch = temporary_sibling(job.output if not job.into_source else Path(job.source), "blocks")
    try:
        mark = time.perf_counter()
        chunks = tuple(block_slices if i == axis else s for i, s in enumerate(data.shape))
        group = zarr.open_group(str(scratch), mode="w")
        dtype = np.uint8 if len(options.prompts) < 256 else np.uint16
        group.create_array("semantic", shape=data.shape, chunks=chunks, dtype=dtype, fill_value=0)
        depth = int(data.shape[axis])
        group.create_array(  # chunked like the blocks: workers never write into the same chunk
            "existence",
            shape=(len(options.prompts), depth),
            chunks=(len(options.prompts), block_slices),
            dtype=np.float32,
            fill_value=0,
        )
        if options.instances:
            group.create_array(
                "edges",
                shape=(len(options.prompts), *data.shape),
                chunks=(1, *chunks),
                dtype=np.float16,
                fill_value=0,
            )
        futures = client.map(
            _segment_block,
            blocks,
            source=str(job.source),
            scratch=str(scratch),
            options=options,
            plan=plan,
            pure=False,
        )
        client.gather(futures)
        regate_blocks(client, str(job.source), str(scratch), options, plan)
        stages["segment"] = time.perf_counter() - mark

        import dask.array as da

        mark = time.perf_counter()
        semantic = da.from_zarr(str(scratch), component="semantic")
        layers, objects, notes = {}, 0, []
        if noise is not None:
            notes += model_notes(options.checkpoint, noise, job.source.name)
        if options.instances and block_method != options.instance_method:
            notes.append(
                f"{job.source.name}: block mode splits instances with the edge-based watershed (instance "
                f"method {options.instance_method} needs the whole volume at once); without --block-slices "
                "the whole-volume method runs"
            )
        names = {i + 1: p for i, p in enumerate(options.prompts)}
        if len(options.prompts) > 1:
            layers["semantic"] = (semantic.astype(np.uint32), names)
        for index, prompt in enumerate(options.prompts):
            if options.instances:
                labels, found, margin, cut = split_instances_in_blocks(
                    client,
                    str(scratch),
                    index,
                    scratch / f"instances-{index}",
                    block_slices,
                    instance_margin,
                    spacing=spacing,
                    method=block_method,
                    min_size=options.min_size,
                    min_relative_size=options.min_relative_size,
                    max_margin=MARGIN_GROWTH * instance_margin,
                )
                notes += margin_notes(job.source.name, prompt, instance_margin, margin, cut)
                if axis == 0:  # the slicing axis is the focus axis (block mode with instances: always)
                    labels, left = trim_out_of_focus_in_blocks(client, labels, data, options.focus_fraction)
                    found = found if left is None else left  # haze objects gone, ids renumbered
                layers[slug(prompt)] = (labels, {})
                objects += found
            elif len(options.prompts) == 1:
                layers[slug(prompt)] = ((semantic == 1).astype(np.uint32), {1: prompt})
        stages["instances"] = time.perf_counter() - mark

        mark = time.perf_counter()
        image = data if options.with_image and not job.into_source else None
        written = write_layers(job, layers, spacing, image=image)
        objects = objects if options.instances else -1  # counting components needs the whole volume
        stages["write"] = time.perf_counter() - mark
    finally:
        discard(scratch)
    return JobSummary.of(volume, job, options, objects, start, written, stages, plan.scale, notes)
