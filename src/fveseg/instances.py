"""Instance labels from a foreground mask and an edge (boundary) probability map.

Two methods:

``"reference"``
    The public BiomedParse v2 recipe, exactly: ``mask > 0.5``; zero where ``edge >= 0.5``; 3D connected
    components (6-connectivity); expand labels by 2 voxels; multiply by the mask. Kept so results can be
    compared; it loses objects the edge map covers and mask voxels farther than 2 voxels from a seed.

``"watershed"`` (default)
    Seeds are the 6-connected components of ``mask & (edge < edge_threshold)``, split at narrow
    necks of their anisotropic distance transform. Seeds are grown over the **whole** mask by a seeded
    flood in physical (``spacing``-weighted) geodesic distance, so every mask voxel gets a label; a mask
    component that lost all its seeds becomes an instance of its own. Then thin fragments (few z slices
    or a small volume, sharing a large part of their surface with a bigger object) are merged into that
    object, and objects under ``min_size`` are merged into their main neighbour (or dropped when they
    touch none). Ids are sequential ``uint32``.
"""

from __future__ import annotations

import cc3d
import fastremap
import numpy as np
from scipy import ndimage as ndi

from fveseg.errors import InputError

__all__ = ["split_instances", "reference_split", "contact_areas"]

_UNREACHED = np.int32(2**30)


def split_instances(
    mask: np.ndarray,
    edges: np.ndarray | None = None,
    spacing: tuple[float, ...] | None = None,
    method: str = "watershed",
    min_size: float = 0.0,
    edge_threshold: float = 0.5,
    *,
    fragment_slices: int = 2,
    fragment_fraction: float = 0.1,
    fragment_contact: float = 0.2,
    merge_z_splits: bool = True,
    split_necks: float | None = 0.5,
) -> np.ndarray:
    """Split a foreground mask into instances using a predicted edge map.

    Parameters
    ----------
    mask : ndarray, (D, H, W) or (H, W), bool or float
        Foreground; a float array is a probability thresholded at 0.5.
    edges : ndarray or None, same shape as ``mask``, float in [0, 1]
        Edge (object boundary) probability. ``None``: no edges (components of the mask).
    spacing : tuple of float or None
        Physical voxel size per axis (z, y, x) or (y, x), e.g. µm. ``None``: isotropic unit voxels.
    method : {"watershed", "reference"}
        See the module docstring.
    min_size : float
        Smallest object kept, in physical units (µm³ for 3D, µm² for 2D when ``spacing`` is in µm;
        voxels when ``spacing`` is None). Smaller objects merge into the neighbour they share most
        surface with, or are dropped (their voxels become background) when they touch no object big
        enough. Applies to both methods (after the recipe for ``"reference"``).
    edge_threshold : float
        Voxels with ``edge >= edge_threshold`` are removed when forming seeds.
    fragment_slices : int
        ``"watershed"`` only. An object spanning at most this many z slices that touches an object
        spanning more slices is a fragment of it (slice-wise predictions fragment at the poles of
        nuclei). 0 turns the rule off.
    fragment_fraction : float
        ``"watershed"`` only. An object smaller than this fraction of a touching object's volume is a
        fragment of it. 0 turns the rule off.
    fragment_contact : float
        ``"watershed"`` only. A fragment merges only when the shared face area is at least this
        fraction of its surface area (physical), so a small object merely touching a big one survives.
    merge_z_splits : bool
        ``"watershed"`` only. Merge two touching objects whose shared faces are mostly normal to z
        (and cover at least ``fragment_contact`` of the smaller one's surface): edge maps predicted
        slice by slice mark in-plane boundaries only, so such a pair is one object cut along z.
    split_necks : float in (0, 1) or None
        ``"watershed"`` only. Split each seed at necks: keep the cores where the anisotropic distance
        to the seed's border is at least ``split_necks`` times the seed's largest distance (cores under
        a fifth of the seed's largest core are dropped as bumps), then regrow. Splits touching objects
        that the edge map left joined. ``None`` keeps seeds as the edge map cuts them.

    Returns
    -------
    labels : ndarray of uint32, same shape as ``mask``
        0 background, 1..N instances (sequential).

    Examples
    --------
    >>> import numpy as np
    >>> mask = np.zeros((1, 5, 9), bool); mask[0, 1:4, 1:8] = True
    >>> edges = np.zeros(mask.shape); edges[0, :, 4] = 1.0
    >>> int(split_instances(mask, edges).max())
    2
    """
    fg, edge_map, spacing3, squeeze = _check_inputs(mask, edges, spacing)
    if method == "reference":
        labels = reference_split(fg, edge_map, edge_threshold)
    elif method == "watershed":
        interior = fg if edge_map is None else fg & (edge_map < edge_threshold)
        seeds = cc3d.connected_components(interior, connectivity=6, out_dtype=np.uint32)
        if split_necks is not None:
            seeds = _split_at_necks(seeds, spacing3, float(split_necks))
        labels = grow_in_mask(seeds, fg, spacing3)
        if fragment_slices > 0 or fragment_fraction > 0 or merge_z_splits:
            labels = _merge_fragments(
                labels, spacing3, fragment_slices, fragment_fraction, fragment_contact, merge_z_splits
            )
    else:
        raise InputError(f"Unknown instance method {method!r}: use 'watershed' or 'reference'.")
    if min_size > 0:
        labels = _remove_small(labels, spacing3, float(min_size))
    labels, _ = fastremap.renumber(labels, in_place=True)
    labels = labels.astype(np.uint32, copy=False)
    return labels[0] if squeeze else labels


def reference_split(fg: np.ndarray, edges: np.ndarray | None, edge_threshold: float = 0.5) -> np.ndarray:
    """The BiomedParse v2 recipe on a boolean (D, H, W) mask; returns uint32 labels (not renumbered)."""
    from skimage.measure import label
    from skimage.segmentation import expand_labels

    interior = fg if edges is None else fg & (edges < edge_threshold)
    seeds = label(interior, connectivity=1)
    return (expand_labels(seeds, distance=2) * fg).astype(np.uint32)


def grow_in_mask(seeds: np.ndarray, fg: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """Grow seed labels over a boolean mask by anisotropic geodesic distance (Dijkstra by levels).

    ``seeds`` (D, H, W) uint32 must be 0 outside ``fg``. Each step along an axis costs
    ``round(spacing[axis] / min(spacing))`` (at least 1), so growth prefers the finely sampled axes;
    paths stay inside ``fg``. Only the advancing front is visited each level. Mask components without
    a seed get new ids above the seeds' maximum. Returns uint32 (D, H, W); every ``fg`` voxel is
    labelled.
    """
    inner = (slice(1, -1),) * 3
    padded = np.zeros(tuple(n + 2 for n in seeds.shape), np.uint32)
    padded[inner] = seeds
    waiting = np.zeros(padded.shape, bool)
    np.logical_and(fg, seeds == 0, out=waiting[inner])
    flat_labels, flat_waiting = padded.ravel(), waiting.ravel()
    todo = np.flatnonzero(flat_waiting)
    if todo.size:
        shape = padded.shape
        strides = (shape[1] * shape[2], shape[2], 1)
        steps = np.maximum(np.rint(np.asarray(spacing) / min(spacing)), 1).astype(np.int32)
        offsets = np.array([sign * strides[axis] for axis in (2, 1, 0) for sign in (1, -1)])
        costs = np.array([steps[axis] for axis in (2, 1, 0) for _ in (0, 1)], dtype=np.int32)
        flat_level = np.full(flat_labels.size, _UNREACHED, np.int32)
        flat_level[flat_labels > 0] = 0
        in_front = np.zeros(flat_labels.size, bool)
        # the front: waiting voxels with a labelled neighbour (only those can be reached next)
        front = todo[(flat_labels[todo[:, None] + offsets] > 0).any(axis=1)]
        in_front[front] = True
        while front.size:
            cost = flat_level[front[:, None] + offsets] + costs
            best = cost.argmin(axis=1)
            best_cost = cost[np.arange(front.size), best]
            reach = best_cost.min()
            now = best_cost == reach
            done = front[now]
            flat_labels[done] = flat_labels[done + offsets[best[now]]]
            flat_level[done] = reach
            flat_waiting[done] = False
            touched = (done[:, None] + offsets).ravel()
            touched = np.unique(touched[flat_waiting[touched] & ~in_front[touched]])
            in_front[touched] = True
            front = np.concatenate([front[~now], touched])
            front = front[flat_waiting[front]]
    labels = padded[inner]
    if waiting.any():
        orphans = cc3d.connected_components(waiting[inner], connectivity=6, out_dtype=np.uint32)
        labels = np.where(orphans > 0, orphans + labels.max(), labels).astype(np.uint32)
    return np.ascontiguousarray(labels)


def contact_areas(labels: np.ndarray, spacing: tuple[float, float, float]):
    """Physical face areas shared by touching objects, and each object's surface area.

    Returns ``(first, second, area, z_area, surface)``: 1-D arrays listing every ordered pair of
    different non-zero labels that share faces (both orders present), the total physical area of those
    faces and the part of it on faces normal to z (axis 0); ``surface[i]`` is the physical area of all
    faces of label ``i`` that touch another label or the background (the array's outer faces excluded).
    """
    sz, sy, sx = spacing
    face = (sy * sx, sz * sx, sz * sy)
    n = int(labels.max()) + 1
    surface = np.zeros(n)
    keys, z_keys, areas = [], [], []
    for axis in range(3):
        lo = np.moveaxis(labels, axis, 0)[:-1]
        hi = np.moveaxis(labels, axis, 0)[1:]
        differ = lo != hi
        a, b = lo[differ], hi[differ]
        surface += face[axis] * (np.bincount(a, minlength=n) + np.bincount(b, minlength=n))
        both = (a > 0) & (b > 0)  # object-object faces are few: only those are sorted
        pair = np.minimum(a[both], b[both]).astype(np.uint64) * np.uint64(n) + np.maximum(a[both], b[both])
        keys.append(pair)
        areas.append(np.full(pair.size, face[axis]))
        z_keys.append(np.full(pair.size, axis == 0))
    keys = np.concatenate(keys)
    uniq, inverse = np.unique(keys, return_inverse=True)
    weights = np.concatenate(areas)
    area = np.bincount(inverse, weights=weights, minlength=uniq.size)
    z_area = np.bincount(inverse, weights=weights * np.concatenate(z_keys), minlength=uniq.size)
    low, high = (uniq // np.uint64(n)).astype(np.int64), (uniq % np.uint64(n)).astype(np.int64)
    surface[0] = 0.0
    return (np.concatenate([low, high]), np.concatenate([high, low]), np.tile(area, 2), np.tile(z_area, 2),
            surface)


def _merge_into_neighbours(labels, candidates, first, second, area, allowed) -> np.ndarray:
    """Relabel each candidate id to its allowed neighbour with the largest contact area."""
    ok = allowed & candidates[first]
    if not ok.any():
        return labels
    f, s, a = first[ok], second[ok], area[ok]
    order = np.lexsort((-a, f))  # per fragment, largest contact first
    f, s = f[order], s[order]
    keep = np.r_[True, f[1:] != f[:-1]]
    target = np.arange(int(labels.max()) + 1)
    target[f[keep]] = s[keep]
    for _ in range(8):  # follow chains fragment -> fragment -> object
        target = target[target]
    return target.astype(np.uint32)[labels]


def _merge_fragments(labels, spacing, max_slices, fraction, min_contact, z_splits) -> np.ndarray:
    if labels.max() < 2:
        return labels
    first, second, area, z_area, surface = contact_areas(labels, spacing)
    sizes = np.bincount(labels.ravel(), minlength=surface.size)
    z_extent = np.zeros(surface.size, dtype=np.int64)
    for index, box in enumerate(ndi.find_objects(labels), start=1):
        if box is not None:
            z_extent[index] = box[0].stop - box[0].start
    # merge only into bigger objects (ties: into the lower id), so chains end and no pair swaps
    bigger = (sizes[second] > sizes[first]) | ((sizes[second] == sizes[first]) & (second < first))
    thin = (z_extent[first] <= max_slices) & (z_extent[second] > z_extent[first])
    small = sizes[first] < fraction * sizes[second]
    # per-slice edge maps never separate objects stacked in z: a mostly-z contact is a z split
    stacked = (z_area >= 0.5 * area) if z_splits else np.zeros(area.shape, bool)
    attached = area >= min_contact * np.maximum(surface[first], 1e-12)
    allowed = bigger & (thin | small | stacked) & attached
    candidates = np.zeros(surface.size, bool)
    candidates[first[allowed]] = True
    return _merge_into_neighbours(labels, candidates, first, second, area, allowed)


def _remove_small(labels, spacing, min_size) -> np.ndarray:
    voxel = float(np.prod(spacing))
    sizes = np.bincount(labels.ravel()) * voxel
    small = sizes < min_size
    small[0] = False
    if not small.any():
        return labels
    first, second, area, _, _ = contact_areas(labels, spacing)
    allowed = ~small[second]  # never into another too-small object
    merged = _merge_into_neighbours(labels, small, first, second, area, allowed)
    sizes = np.bincount(merged.ravel(), minlength=small.size) * voxel
    still_small = sizes < min_size
    still_small[0] = True
    return np.where(still_small[merged], 0, merged).astype(np.uint32)


def _split_at_necks(seeds, spacing, ratio, min_core=0.2, min_voxels=64) -> np.ndarray:
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
            row, shelf = (free[-1], None) if free.size == 1 else [axis for axis in range(3)
                                                                  if axis != depth[members[0]]][::-1]
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


def _check_inputs(mask, edges, spacing):
    mask = np.asarray(mask)
    if mask.ndim not in (2, 3):
        raise InputError(f"mask must be 2D (H, W) or 3D (D, H, W); got shape {mask.shape}.")
    squeeze = mask.ndim == 2
    fg = mask if mask.dtype == bool else mask > 0.5
    fg = np.ascontiguousarray(fg[None] if squeeze else fg)
    edge_map = None
    if edges is not None:
        edges = np.asarray(edges)
        if edges.shape != mask.shape:
            raise InputError(
                f"edges shape {edges.shape} differs from mask shape {mask.shape}: pass the edge map "
                "predicted for the same prompt and volume."
            )
        edge_map = edges[None] if squeeze else edges
    if spacing is None:
        spacing3 = (1.0, 1.0, 1.0)
    else:
        values = tuple(float(s) for s in spacing)
        if len(values) != mask.ndim or not all(np.isfinite(values)) or min(values) <= 0:
            raise InputError(
                f"spacing {spacing!r} must give one positive size per mask axis ({mask.ndim}); "
                "pass None for unit voxels."
            )
        spacing3 = (1.0, *values) if squeeze else values
    return fg, edge_map, spacing3, squeeze
