"""Splitting instance seeds at narrow necks, vectorised over all seeds.

A seed that the edge map left joined (two touching nuclei) has a narrow neck in its anisotropic distance
transform. Each seed's cores (voxels at least ``ratio`` times the seed's largest distance from its
border) become new seeds. Used by `fveseg.instances.split.split_instances`; equal to handling each seed alone
on its bounding box, without a Python loop over seeds.
"""

from __future__ import annotations

import cc3d
import numpy as np

from fveseg.instances.grow import grow_in_mask


def split_at_necks(seeds, spacing, ratio, min_core=0.2, min_voxels=64) -> np.ndarray:
    """Split seeds at narrow necks: cores where the distance to the seed border is at least ``ratio``
    times the seed's largest distance, regrown over the seed. A core under ``min_core`` of the volume
    of its seed's largest core is a bump, not a second object, and is not kept as a seed. Seeds under
    ``min_voxels`` voxels are left whole.

    Equal to handling each seed alone on its bounding box, but without a loop over seeds: the boxes
    are packed side by side into a few small arrays (`_pack_boxes`) and each array is split in one
    pass (`_split_cores`). New ids follow the seed order, then each core's first voxel in raster order.
    """
    n_seeds = int(seeds.max()) + 1
    where = np.flatnonzero(seeds)  # ascending flat indices of seed voxels
    seed_of = seeds.ravel()[where]
    large = np.bincount(seed_of, minlength=n_seeds) >= min_voxels
    where, seed_of = where[large[seed_of]], seed_of[large[seed_of]]
    written, values, new_seeds = [], [], []
    for voxels, packed, flat, voxel_seed in _pack_boxes(where, seed_of, seeds.shape, n_seeds):
        next_id = n_seeds + sum(map(len, new_seeds))
        grown, core_seeds = _split_cores(packed, flat, voxel_seed, spacing, ratio, min_core, next_id)
        if grown is None:
            continue
        grown = grown.ravel()[flat]
        renamed = grown >= n_seeds  # the voxels of split seeds
        written.append(voxels[renamed])
        values.append(grown[renamed])
        new_seeds.append(core_seeds)
    if not written:
        return seeds
    # ids were handed out group by group: renumber them by seed (stable keeps each seed's core order)
    order = np.argsort(np.concatenate(new_seeds), kind="stable")
    final_id = np.empty(order.size, np.uint32)
    final_id[order] = np.arange(n_seeds, n_seeds + order.size, dtype=np.uint32)
    split = seeds.copy()
    split.ravel()[np.concatenate(written)] = final_id[np.concatenate(values) - n_seeds]
    return split


def _pack_boxes(where, seed_of, shape, n_seeds):
    """Yield ``(voxels, packed, flat, voxel_seed)``: seeds' bounding boxes laid side by side in small arrays.

    Boxes are grouped by which volume borders they touch (and by depth, see below). In a group, boxes
    sit in shelves on the axes whose borders none of them touches, one background voxel apart (as
    the background margin around each box alone), and flush with the array's ends on the axes where
    they touch the volume's border (which ``black_border=False`` does not treat as a boundary). Each
    seed is then surrounded by the same background as in its own padded box, and anything else is
    farther away, so distances, cores and geodesic growth inside each seed are what they are in the
    volume. ``voxels`` are the group's flat indices in the volume, ``flat`` the same voxels' flat
    indices in ``packed`` (uint32 seed ids), ``voxel_seed`` their seed ids.
    """
    dims = np.asarray(shape)
    coords = np.stack(np.unravel_index(where, shape))  # (3, n) voxel coordinates
    lo = np.broadcast_to(dims[:, None], (3, n_seeds)).copy()
    hi = np.zeros((3, n_seeds), np.int64)
    for axis in range(3):
        np.minimum.at(lo[axis], seed_of, coords[axis])
        np.maximum.at(hi[axis], seed_of, coords[axis])
    extent = hi - lo + 1
    at_low, at_high = lo == 0, hi == dims[:, None] - 1
    signature = (at_low * [[1], [2], [4]]).sum(0) + (at_high * [[8], [16], [32]]).sum(0)
    present = np.zeros(n_seeds, bool)
    present[seed_of] = True
    # a depth axis (z when all are free, else the one not free) stays one box deep per array, so
    # boxes also go in bins of similar depth (ratio 1.25): one tall box does not deepen all the others
    free_count = 3 - (at_low | at_high).sum(0)
    depth = np.where(free_count == 3, 0, np.argmax(at_low | at_high, axis=0))
    depth_extent = np.maximum(extent[depth, np.arange(n_seeds)], 1)
    depth_bin = np.where(free_count >= 2, np.log(depth_extent) // np.log(1.25), 0)
    groups, group_of = np.unique(signature * 1000 + depth_bin.astype(np.int64), return_inverse=True)
    group_of[~present] = groups.size
    # voxels sorted by group once (a radix sort on small ints), so each group is a contiguous run
    by_group = np.argsort(group_of.astype(np.uint16)[seed_of], kind="stable")
    where, seed_of, coords = where[by_group], seed_of[by_group], coords[:, by_group]
    ends = np.cumsum(np.bincount(group_of[seed_of], minlength=groups.size + 1))
    for group in np.flatnonzero(np.diff(np.r_[0, ends])):
        run = slice(ends[group - 1] if group else 0, ends[group])
        members = np.flatnonzero(group_of == group)
        low, high = at_low[:, members[0]], at_high[:, members[0]]
        offset = np.zeros((3, members.size), np.int64)
        size = extent[:, members].max(axis=1) + 2 - low - high
        offset += ~low[:, None]  # a background margin before the box unless it starts at the border
        offset += high[:, None] * (size[:, None] - extent[:, members] - offset)  # flush with the far end
        free = np.flatnonzero(~low & ~high)
        if free.size:  # boxes in shelves on the other axes (a single row when only one is free)
            row, shelf = (
                (free[-1], None)
                if free.size == 1
                else [axis for axis in range(3) if axis != depth[members[0]]][::-1]
            )
            _shelve(extent[:, members], row, shelf, offset, size)
        else:  # boxes spanning the whole volume on every axis: keep them in place
            offset, size = lo[:, members], dims
        voxel_seed = seed_of[run]
        shift = (offset - lo[:, members])[:, np.searchsorted(members, voxel_seed)]
        flat = np.ravel_multi_index(tuple(coords[:, run] + shift), tuple(size))
        packed = np.zeros(tuple(size), np.uint32)
        packed.ravel()[flat] = voxel_seed
        yield where[run], packed, flat, voxel_seed


def _shelve(extent, row, shelf, offset, size):
    """Lay boxes (``extent`` (3, n), voxels) in rows along axis ``row``, one background voxel apart;
    rows fill shelves stacked along axis ``shelf`` (None: one row). Tallest boxes first, so a shelf's
    height wastes little. Writes the boxes' offsets and the array size on those axes in place."""
    span = extent[row] + 1  # the box and the background after it
    height = extent[shelf] + 1 if shelf is not None else np.ones_like(span)
    order = np.argsort(-height, kind="stable")
    start = np.concatenate([[0], np.cumsum(span[order])[:-1]])
    width = max(int(np.sqrt((span * height).sum())), int(span.max())) if shelf is not None else start[-1] + 1
    breaks = np.r_[True, np.diff(start // width) > 0]  # a box starting past a width opens a new shelf
    number = np.cumsum(breaks) - 1
    first = np.flatnonzero(breaks)
    offset[row, order] = 1 + start - start[first][number]
    size[row] = int((offset[row, order] + span[order]).max())
    if shelf is not None:
        tops = height[order][first]  # sorted, so a shelf's first box is its tallest
        offset[shelf, order] = 1 + (np.cumsum(tops) - tops)[number]
        size[shelf] = 1 + int(tops.sum())


def _split_cores(labels, where, seed_of, spacing, ratio, min_core, next_id):
    """Neck splitting of every seed of ``labels`` (6-separated uint32 seeds) at once; ``where`` are
    the flat indices of all seed voxels (any order), ``seed_of`` their ids.

    One multi-label distance transform gives each voxel its distance to its own seed's border; cores
    (``distance >= ratio * largest distance of the seed``) are connected components of one image;
    per-seed maxima and core sizes are scatter-reductions. Returns ``(grown, core_seeds)``: the labels
    with each split seed regrown from its kept cores (new ids from ``next_id``, by seed then core) and
    the seed of each new id; ``(None, None)`` when no seed splits.
    """
    import edt

    n_seeds = int(seed_of.max()) + 1
    distance = edt.edt(labels, anisotropy=spacing, black_border=False).ravel()[where]
    largest = np.zeros(n_seeds, distance.dtype)
    np.maximum.at(largest, seed_of, distance)
    is_core = distance >= ratio * largest[seed_of]
    core_image = np.zeros(labels.shape, np.uint32)
    core_image.ravel()[where[is_core]] = seed_of[is_core]
    # multi-label components: cores of different seeds never join; ids follow the raster scan
    core_of = cc3d.connected_components(core_image, connectivity=6, out_dtype=np.uint32).ravel()[where]
    core_size = np.bincount(core_of)
    core_seed = np.zeros(core_size.size, np.int64)
    core_seed[core_of] = seed_of
    core_size[0] = 0
    largest_core = np.zeros(n_seeds, np.int64)
    np.maximum.at(largest_core, core_seed, core_size)
    kept = core_size >= min_core * largest_core[core_seed]
    kept[0] = False
    splits = np.bincount(core_seed[kept], minlength=n_seeds) >= 2
    kept &= splits[core_seed]
    if not kept.any():
        return None, None
    kept_cores = np.flatnonzero(kept)
    kept_cores = kept_cores[np.argsort(core_seed[kept_cores], kind="stable")]
    new_id = np.zeros(core_size.size, np.uint32)
    new_id[kept_cores] = np.arange(next_id, next_id + kept_cores.size, dtype=np.uint32)
    split = labels.copy()
    in_split = splits[seed_of]
    split.ravel()[where[in_split]] = new_id[core_of[in_split]]  # 0 outside kept cores: regrown below

    return grow_in_mask(split, labels > 0, spacing), core_seed[kept_cores]
