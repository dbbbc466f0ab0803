"""Blocks along the slicing axis, and instance labels split block by block (`fveseg.distributed`).

Pass 2 of a block run: each worker splits instances on its block plus ``margin`` slices on each side
(`split_instances` on that slab), writes the core's local ids and the labels its margin gives to the next
block's first slice; label pairs that overlap there are joined by a union-find into one global numbering
(`merge_block_labels`), applied while the labels are written. This equals the single-process split (up to
renumbering) when every object is seen whole by the block that labels it. A block counts the objects of
its core that reach an open end of its slab (taller than the margin); with ``max_margin`` the pass is
redone with twice the margin until none is cut or the cap is reached (the CLI allows 4 times the
``--instance-margin`` and says when it raised it or when objects are still cut: `margin_notes`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

#: The instance margin grows (doubling) up to this many times the one asked for when objects are taller.
MARGIN_GROWTH = 4


@dataclass(frozen=True)
class Block:
    """Slices ``[start, stop)`` are this block's result; ``[read_start, read_stop)`` are read for it."""

    index: int
    start: int
    stop: int
    read_start: int
    read_stop: int


def plan_blocks(depth: int, block_slices: int, halo: int) -> list[Block]:
    """Cut ``depth`` slices into blocks of ``block_slices`` with ``halo`` context slices on each side."""
    starts = range(0, depth, block_slices)
    return [
        Block(i, s, min(s + block_slices, depth), max(0, s - halo), min(depth, s + block_slices + halo))
        for i, s in enumerate(starts)
    ]


def margin_notes(name: str, prompt: str, asked: int, used: int, cut: int) -> list[str]:
    """What the CLI tells the user when the instance margin had to grow, or was still too small."""
    if cut:
        return [
            f"{name}: {cut} {prompt!r} objects are taller than the instance margin ({used} slices), so "
            "their instances can differ from a single-process run at block boundaries; rerun with "
            f"--instance-margin {2 * used}"
        ]
    if used > asked:
        return [f"{name}: {prompt!r} objects are taller than {asked} slices; the margin was raised to {used}"]
    return []


def _split_block(
    block: Block, source: str, index: int, scratch: str, spacing, method: str, min_size: float, depth: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Pass 2 on a worker: split instances on the block plus margin; store core ids and the upper margin.

    Returns the ids present in the core, their voxel counts there (for global object sizes) and how many
    of them reach an end of the slab that is not an end of the volume (cut by the margin)."""
    import zarr

    from fveseg.instances.split import split_instances

    read = slice(block.read_start, block.read_stop)
    inputs = zarr.open_group(source, mode="r")
    mask = np.asarray(inputs["semantic"][read]) == index + 1
    labels = split_instances(
        mask, np.asarray(inputs["edges"][index, read]), spacing=spacing, method=method, min_size=min_size
    )
    group = zarr.open_group(scratch, mode="r+")
    core = labels[block.start - block.read_start : block.stop - block.read_start]
    group["local"][block.start : block.stop] = core
    if block.stop < block.read_stop:  # what this block calls the next block's first slice
        group["ahead"][block.index] = labels[block.stop - block.read_start]
    ids, counts = np.unique(core, return_counts=True)
    ids, counts = ids[ids > 0], counts[ids > 0]  # only ids present in the core get a global id
    ends = [labels[0]] if block.read_start > 0 else []
    ends += [labels[-1]] if block.read_stop < depth else []
    cut = np.intersect1d(ids, np.concatenate([e.ravel() for e in ends])).size if ends else 0
    return ids, counts, int(cut)


def _boundary_pairs(block: Block, next_block: Block, scratch: str) -> np.ndarray:
    """(id in block, id in next block) pairs that label the same voxel in the next block's first slice."""
    import zarr

    group = zarr.open_group(scratch, mode="r")
    # Only the first slice after the boundary: every object crossing it has voxels there, and it is where
    # this block's view has the most context (fragments cut at the far end of its margin are not seen).
    depth = min(1, block.read_stop - block.stop)
    mine = np.asarray(group["ahead"][block.index]).ravel() if depth else np.zeros(0, np.uint32)
    theirs = np.asarray(group["local"][next_block.start : next_block.start + depth]).ravel()
    both = (mine > 0) & (theirs > 0)
    pairs = np.stack([mine[both], theirs[both]], axis=1).astype(np.int64)
    return np.unique(pairs, axis=0) if len(pairs) else pairs.reshape(0, 2)


def merge_block_labels(present: list[np.ndarray], pairs: list[np.ndarray]) -> list[np.ndarray]:
    """Global relabelling of per-block ids joined across boundaries (union-find via connected components).

    Parameters
    ----------
    present : list of 1D int arrays
        The sorted non-zero local ids found in each block's core.
    pairs : list of (N_i, 2) int arrays
        ``pairs[i]`` joins local id ``a`` of block i with local id ``b`` of block i + 1; pairs naming an id
        absent from a core (seen only in a margin) are ignored.

    Returns
    -------
    list of uint32 lookup tables, one per block: ``table[local_id] → global id`` (0 → 0). Global ids are
    1..K, numbered in the order of each object's first block and local id.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    present = [np.asarray(ids, np.int64) for ids in present]
    offsets = np.concatenate([[0], np.cumsum([len(ids) for ids in present])]).astype(np.int64)
    total = int(offsets[-1])
    links = []
    for i, block_pairs in enumerate(pairs):
        if len(block_pairs) == 0:
            continue
        here = _node_index(present[i], block_pairs[:, 0])
        there = _node_index(present[i + 1], block_pairs[:, 1])
        keep = (here >= 0) & (there >= 0)
        links.append(np.stack([here[keep] + offsets[i], there[keep] + offsets[i + 1]], axis=1))
    joined = np.concatenate(links) if links else np.zeros((0, 2), np.int64)
    graph = coo_matrix((np.ones(len(joined)), (joined[:, 0], joined[:, 1])), shape=(total, total))
    _, component = connected_components(graph, directed=False)
    # Renumber components by first appearance so ids are sequential 1..K.
    _, first = np.unique(component, return_index=True)
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(first)] = np.arange(len(first))
    global_ids = (rank[component] + 1).astype(np.uint32)
    tables = []
    for i, ids in enumerate(present):
        table = np.zeros(int(ids.max(initial=0)) + 1, np.uint32)
        table[ids] = global_ids[offsets[i] : offsets[i + 1]]
        tables.append(table)
    return tables


def _drop_specks(tables, present, counts, fraction):
    """Apply the speck filter on global object sizes; renumber the survivors 1..K in the same order."""
    from fveseg.instances.split import speck_mask

    n_global = max((int(table.max(initial=0)) for table in tables), default=0)
    sizes = np.zeros(n_global + 1, np.int64)
    for table, ids, block_counts in zip(tables, present, counts):
        np.add.at(sizes, table[ids], block_counts)
    keep = ~speck_mask(sizes, fraction)
    keep[0] = False
    remap = np.zeros(n_global + 1, np.uint32)
    remap[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.uint32)
    return [remap[table] for table in tables]


def _node_index(ids: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Position of each ``wanted`` id in the sorted ``ids``, or -1 where it is absent."""
    where = np.searchsorted(ids, wanted)
    found = (where < len(ids)) & (ids[np.minimum(where, len(ids) - 1)] == wanted) if len(ids) else where < 0
    return np.where(found, where, -1)


class BlockInstances(NamedTuple):
    """What `split_instances_in_blocks` returns."""

    labels: Any  # dask array (D, H, W) uint32, chunked by block; computing it applies the global ids 1..K
    count: int  # K
    margin: int  # the margin used (grown from the one asked for when objects were taller)
    cut: int  # objects, counted per block, still reaching the end of their block's margin


def split_instances_in_blocks(
    client,
    source: str,
    index: int,
    scratch: Path,
    block_slices: int,
    margin: int,
    *,
    spacing=None,
    method: str = "watershed",
    min_size: float = 0.0,
    min_relative_size: float = 0.0,
    max_margin: int | None = None,
) -> BlockInstances:
    """Instance labels of one class of a (D, H, W) semantic zarr in z-blocks, merged into one numbering.

    Parameters
    ----------
    client : distributed.Client
    source : str
        A zarr group with ``semantic`` (D, H, W) class ids and ``edges`` (P, D, H, W) float32 edge
        probabilities; the mask is ``semantic == index + 1``. Workers read only their slab.
    index : int
        Prompt index (class ``index + 1``).
    scratch : Path
        A new zarr group for the local ids (deleted by the caller).
    block_slices, margin : int
        Core slices per block and context slices on each side (see the module docstring).

    min_relative_size : float
        The speck filter of `fveseg.instances.split.split_instances`, applied to the merged objects' global
        sizes (so it equals the single-process result).
    max_margin : int, optional
        When some object in a block's core reaches the end of its margin (it is taller than the margin,
        so the block saw only part of it), the pass is redone with twice the margin, up to this many
        slices. None: no retry.

    Returns
    -------
    BlockInstances
        ``labels`` (dask array (D, H, W) uint32, chunked by block; computing it applies the global ids
        1..K), ``count`` K, the ``margin`` used and the objects still ``cut`` by it (0: every object was
        seen whole by the block that labels it).
    """
    import dask.array as da
    import zarr

    if margin < 1:
        from fveseg.errors import InputError

        raise InputError(f"instance margin must be at least 1 slice, got {margin} (fix: use 8 or more)")
    shape = tuple(int(s) for s in zarr.open_group(source, mode="r")["semantic"].shape)
    depth, *plane = shape
    while True:
        tables, cut = _split_pass(
            client, source, shape, index, scratch, block_slices, margin, spacing, method, min_size,
            min_relative_size,
        )  # fmt: skip
        if not cut or max_margin is None or margin >= min(max_margin, depth):
            break
        margin = min(2 * margin, max_margin)
    local = da.from_zarr(str(scratch), component="local").rechunk((block_slices, *plane))

    def relabel(chunk: np.ndarray, block_info=None) -> np.ndarray:
        table = tables[block_info[0]["chunk-location"][0]]
        return table[chunk]

    count = max((int(table.max(initial=0)) for table in tables), default=0)
    return BlockInstances(local.map_blocks(relabel, dtype=np.uint32), count, margin, cut)


def _split_pass(
    client, source, shape, index, scratch, block_slices, margin, spacing, method, min_size, fraction
):
    """One pass 2 with this margin: local ids into a new ``scratch`` group. Returns the global lookup
    tables and the count of objects cut by the margin."""
    import zarr

    depth, *plane = shape
    blocks = plan_blocks(depth, block_slices, margin)
    group = zarr.open_group(str(scratch), mode="w")
    group.create_array(
        "local", shape=(depth, *plane), chunks=(block_slices, *plane), dtype=np.uint32, fill_value=0
    )
    group.create_array(
        "ahead", shape=(len(blocks), *plane), chunks=(1, *plane), dtype=np.uint32, fill_value=0
    )
    futures = client.map(
        _split_block,
        blocks,
        source=source,
        index=index,
        scratch=str(scratch),
        spacing=spacing,
        method=method,
        min_size=min_size,
        depth=depth,
        pure=False,
    )
    present, counts, cut = zip(*client.gather(futures)) if blocks else ((), (), ())
    pair_futures = [
        client.submit(_boundary_pairs, a, b, str(scratch), pure=False)
        for a, b in zip(blocks[:-1], blocks[1:])
    ]
    tables = merge_block_labels(list(present), client.gather(pair_futures))
    if method == "watershed" and fraction > 0:
        tables = _drop_specks(tables, present, counts, fraction)
    return tables, int(sum(cut))
