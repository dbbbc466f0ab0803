"""Instance labels from a foreground mask and an edge (boundary) probability map.

Methods (``"auto"``, the pipeline's default, takes ``"distance"`` for volumes and ``"watershed"`` for
one-slice images):

``"distance"``
    Objects formed in 3D from the mask's shape, in physical units: the mask smoothed in 3D, seeds at
    the maxima of its distance map that are the largest within a ball of one typical nucleus radius
    (`distance_split`). Needs no edges, so slice-wise masks that flicker along z or edges missing under
    noise do not merge nuclei.

``"reference"``
    The public BiomedParse v2 recipe, exactly: ``mask > 0.5``; zero where ``edge >= 0.5``; 3D connected
    components (6-connectivity); expand labels by 2 voxels; multiply by the mask. Kept so results can be
    compared; it loses objects the edge map covers and mask voxels farther than 2 voxels from a seed.

``"watershed"``
    Seeds are the 6-connected components of ``mask & (edge < edge_threshold)``, split at narrow
    necks of their anisotropic distance transform. Seeds are grown over the **whole** mask by a seeded
    flood in physical (``spacing``-weighted) geodesic distance, so every mask voxel gets a label; a mask
    component that lost all its seeds becomes an instance of its own. Then thin fragments (few z slices
    or a small volume, sharing a large part of their surface with a bigger object) are merged into that
    object, and objects under ``min_size`` are merged into their main neighbour (or dropped when they
    touch none). Ids are sequential ``uint32``.
"""

from __future__ import annotations

import os

import cc3d
import edt
import fastremap
import numpy as np
from scipy import ndimage as ndi
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from skimage.segmentation import watershed

from fveseg.errors import InputError
from fveseg.instances.grow import grow_in_mask
from fveseg.instances.necks import split_at_necks

__all__ = [
    "split_instances",
    "reference_split",
    "contact_areas",
    "speck_mask",
    "SPECK_FRACTION",
    "NECK_MERGE",
    "EDGE_THRESHOLD",
    "instances_from_prediction",
    "merge_thick_necks",
]


#: The speck filter (``min_relative_size``) used by the CLI, the napari widget and the evaluation.
SPECK_FRACTION = 0.1
#: The neck merge of 3D instances (``merge_necks``) used by the CLI, the napari widget and the evaluation:
#: above the neck of any two whole touching balls (at most 0.87 of the radius, `merge_thick_necks`), so
#: only lobes of one body merge; it lifted every re-imaged cells3d row of the evaluation protocol
#: (docs/experiments/2026-12-06-neck-merge.md).
NECK_MERGE = 0.9
#: Edge probability above which a voxel is a boundary when seeding the watershed. The edge head is
#: under-confident on thin boundaries: on the 53 real validation images instance F1 is 0.749 at 0.5 and
#: 0.761-0.768 anywhere from 0.1 to 0.3 (docs/instances.md); 0.2 is the middle of that plateau.
EDGE_THRESHOLD = 0.2
#: Threads for the 3D distance transform: the cores this process may run on.
_CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
#: The ways `split_instances` forms instances (``method``).
INSTANCE_METHODS = ("auto", "watershed", "distance", "reference")


def split_instances(
    mask: np.ndarray,
    edges: np.ndarray | None = None,
    spacing: tuple[float, ...] | None = None,
    method: str = "watershed",
    min_size: float = 0.0,
    edge_threshold: float | None = None,
    *,
    fragment_slices: int = 2,
    fragment_fraction: float = 0.1,
    fragment_contact: float = 0.2,
    merge_z_splits: bool = True,
    split_necks: float | None = 0.5,
    min_relative_size: float = 0.0,
    merge_necks: float = 0.0,
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
    method : {"auto", "watershed", "distance", "reference"}
        See the module docstring; ``"distance"``: `distance_split`; ``"auto"``: ``"distance"`` for a
        volume of several slices, ``"watershed"`` for one slice (a 2D image), because the network's
        in-plane edges separate touching objects within a slice but not along z.
    min_size : float
        Smallest object kept, in physical units (µm³ for 3D, µm² for 2D when ``spacing`` is in µm;
        voxels when ``spacing`` is None). Smaller objects merge into the neighbour they share most
        surface with, or are dropped (their voxels become background) when they touch no object big
        enough. Applies to both methods (after the recipe for ``"reference"``).
    edge_threshold : float, optional
        Voxels with ``edge >= edge_threshold`` are removed when forming seeds. Default: `EDGE_THRESHOLD`
        (0.2) for ``"watershed"``, 0.5 for ``"reference"`` (the public recipe).
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
    min_relative_size : float
        ``"watershed"`` only. Objects smaller than this fraction of the typical object volume (the
        volume of the object that holds the median foreground voxel, so many specks cannot drag it
        down) are specks of a slice-wise prediction and become background. Scale-free, so it needs no
        spacing or nucleus size; 0 (the default) keeps every object and every mask voxel. The CLI and
        the napari widget use 0.1, which raised instance F1 on every real and synthetic set measured
        (docs/instances.md).
    merge_necks : float in [0, 1]
        ``"distance"`` only. Merge two touching objects when the thickest point of their shared boundary
        (the largest distance-map value on it) is at least this fraction of the smaller of their two
        largest distances: two lobes of one nucleus meet at a thick neck, two touching nuclei at a thin
        one (`merge_thick_necks`). 0 (the default) merges nothing.

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
    if method == "auto":  # in-plane edges separate objects within a slice, not along z
        method = "distance" if fg.shape[0] > 1 else "watershed"
    if method == "reference":
        labels = reference_split(fg, edge_map, 0.5 if edge_threshold is None else edge_threshold)
    elif method == "distance":
        labels = distance_split(fg, spacing3, merge_necks=merge_necks)
    elif method == "watershed":
        edge_threshold = EDGE_THRESHOLD if edge_threshold is None else edge_threshold
        interior = fg if edge_map is None else fg & (edge_map < edge_threshold)
        seeds = cc3d.connected_components(interior, connectivity=6, out_dtype=np.uint32)
        if split_necks is not None:
            seeds = split_at_necks(seeds, spacing3, float(split_necks))
        labels = grow_in_mask(seeds, fg, spacing3)
        if fragment_slices > 0 or fragment_fraction > 0 or merge_z_splits:
            labels = _merge_fragments(
                labels, spacing3, fragment_slices, fragment_fraction, fragment_contact, merge_z_splits
            )
    else:
        raise InputError(f"Unknown instance method {method!r}: use one of {', '.join(INSTANCE_METHODS)}.")
    if min_size > 0:
        labels = _remove_small(labels, spacing3, float(min_size))
    if method != "reference" and min_relative_size > 0:
        labels = _remove_specks(labels, float(min_relative_size))
    labels, _ = fastremap.renumber(labels, in_place=True)
    labels = labels.astype(np.uint32, copy=False)
    return labels[0] if squeeze else labels


def instances_from_prediction(
    mask: np.ndarray,
    edges: np.ndarray | None,
    image=None,
    spacing: tuple[float, ...] | None = None,
    axis: int = 0,
    *,
    method: str = "watershed",
    min_size: float = 0.0,
    min_relative_size: float = SPECK_FRACTION,
    focus_fraction: float | None = None,
    merge_necks: float = NECK_MERGE,
) -> np.ndarray:
    """Instance labels exactly as the CLI and the napari widget make them from a prediction.

    `split_instances` with the speck filter, then, when the ``image`` is given, `fveseg.instances.haze`'s
    trimming of each instance's out-of-focus cross-sections along the slicing ``axis`` and removal of
    objects that are a brighter object's haze (ids renumbered 1..N).

    Parameters
    ----------
    mask, edges : ndarray (D, H, W)
        Foreground and edge probability of one prompt (e.g. ``result.semantic == 1``, ``result.edges[0]``).
    image : array (D, H, W), optional
        The intensities segmented; None skips the focus trimming.
    spacing : (dz, dy, dx), optional
    axis : int
        The slicing axis (``result.axis``).
    method, min_size, min_relative_size, merge_necks
        As for `split_instances` (the speck filter and the neck merge are on by default here).
    focus_fraction : float, optional
        `fveseg.instances.haze.FOCUS_FRACTION` by default; 0 keeps every cross-section.

    Returns
    -------
    ndarray of uint32, like ``mask``
    """
    from fveseg.instances.haze import FOCUS_FRACTION, trim_out_of_focus

    labels = split_instances(
        mask,
        edges,
        spacing=spacing,
        method=method,
        min_size=min_size,
        min_relative_size=min_relative_size,
        merge_necks=merge_necks,
    )
    if image is None:
        return labels
    fraction = FOCUS_FRACTION if focus_fraction is None else focus_fraction
    return trim_out_of_focus(labels, image, axis=axis, fraction=fraction)


def distance_split(
    fg: np.ndarray, spacing: tuple[float, float, float], merge_necks: float = 0.0
) -> np.ndarray:
    """Instances of a (D, H, W) boolean mask formed in 3D, in physical units, from the mask's shape alone.

    Slice-wise masks flicker from slice to slice and their in-plane edges do not separate objects
    stacked in z, so one seed per connected piece (``method="watershed"``) merges many nuclei under
    noise. Here the size comes first: the typical radius R is half the area-weighted median in-plane
    diameter of the mask's 2D components (`fveseg.inference.auto_scale.typical_diameter`). The mask is
    smoothed in 3D with a Gaussian of R / 4 (physical units, so anisotropic voxels are handled) and
    thresholded at 0.5; seeds are the maxima of its distance map (physical units) that are the largest
    within a ball of radius R (physical units; `_ball_maxima`), one per plateau; each seed grows over
    the smoothed mask by watershed on the negated distance, and the labels go back onto the mask itself
    (voxels the smoothing dropped join their nearest object, `grow_in_mask`). Two nucleus centres
    closer than a typical radius are one nucleus. With ``merge_necks`` > 0, objects joined by a thick neck
    are then merged (`merge_thick_necks`).

    Returns uint32 labels (not renumbered) covering exactly ``fg``.
    """
    from fveseg.inference.auto_scale import typical_diameter

    radius_px = typical_diameter(fg) / 2.0
    if radius_px <= 0:
        return np.zeros(fg.shape, np.uint32)
    steps = np.asarray(spacing, dtype=np.float64)
    radius = radius_px * float(min(steps[1:]))  # physical units
    smooth = ndi.gaussian_filter(fg.astype(np.float32), sigma=tuple(radius / 4 / steps)) > 0.5
    # the same distances on every core this process may use (0.22 -> 0.16 s on cells3d with 2)
    distance = edt.edt(smooth, anisotropy=tuple(steps), black_border=False, parallel=_CORES)
    peaks = _ball_maxima(smooth, distance, steps, radius)
    markers = cc3d.connected_components(peaks, connectivity=26, out_dtype=np.uint32)
    labels = _watershed_by_component(distance, markers, smooth)
    if merge_necks > 0:
        labels = merge_thick_necks(labels, distance, merge_necks)
    # back onto the mask itself: the instances cover exactly the foreground the semantic map shows
    return grow_in_mask(np.where(fg, labels, 0).astype(np.uint32), fg, spacing)


def _watershed_by_component(distance: np.ndarray, markers: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """``watershed(-distance, markers, mask=inside)`` as uint32, flooding only where it has a choice.

    The flood moves between face neighbours inside the mask, so each 6-connected piece of the mask is
    flooded on its own: a piece with one seed is all that seed's, a piece with none stays 0, and a piece
    with several is flooded within its bounding box (its voxels are visited in the same order as in the
    whole volume, so the result is the same). skimage converts and pads the whole array it is given:
    on cells3d this takes 0.14 s where one call took 0.35 s."""
    pieces, count = cc3d.connected_components(inside, connectivity=6, out_dtype=np.uint32, return_N=True)
    seeded = pieces[markers > 0]
    first_seed = np.zeros(count + 1, np.uint32)
    first_seed[seeded] = markers[markers > 0]
    seeds_per_piece = np.bincount(
        np.unique(np.stack([seeded, markers[markers > 0]]), axis=1)[0], minlength=count + 1
    )
    labels = first_seed[pieces]  # pieces with one seed (and none: 0) are done
    for piece, box in enumerate(ndi.find_objects(pieces), start=1):
        if box is None or seeds_per_piece[piece] < 2:
            continue
        own = pieces[box] == piece
        flooded = watershed(-distance[box], np.where(own, markers[box], 0), mask=own)
        labels[box][own] = flooded[own]
    return labels


def merge_thick_necks(labels: np.ndarray, distance: np.ndarray, ratio: float) -> np.ndarray:
    """Merge touching objects joined by a neck at least ``ratio`` times as thick as the thinner object.

    Parameters
    ----------
    labels : ndarray of uint32, (D, H, W)
        Objects (0 background), e.g. a watershed of ``-distance``.
    distance : ndarray of float, (D, H, W)
        Distance to the mask's border (physical units).
    ratio : float in (0, 1]
        A pair merges when its neck, the largest ``min(distance[a], distance[b])`` over face-adjacent
        voxels ``a``, ``b`` of the two objects, is at least ``ratio`` × the smaller of the two objects'
        largest ``distance``. Two balls of radius ρ with centres d apart meet at a neck of
        ρ·√(1 − (d/2ρ)²): ratio 0.75 merges balls closer than 1.3ρ; lobes of one body have necks
        nearly as thick as the lobes.

    Returns
    -------
    ndarray of uint32, like ``labels``: merged groups take the lowest id of the group, ids not renumbered.
    """
    n = int(labels.max()) + 1
    if n < 3:
        return labels
    pairs, necks = [], []
    for axis in range(labels.ndim):
        lo = np.moveaxis(labels, axis, 0)
        depth = np.moveaxis(distance, axis, 0)
        a, b = lo[:-1], lo[1:]
        touching = (a != b) & (a > 0) & (b > 0)
        first, second = a[touching].astype(np.int64), b[touching].astype(np.int64)
        pairs.append(np.minimum(first, second) * n + np.maximum(first, second))
        necks.append(np.minimum(depth[:-1][touching], depth[1:][touching]))
    pairs, necks = np.concatenate(pairs), np.concatenate(necks)
    if pairs.size == 0:
        return labels
    unique, inverse = np.unique(pairs, return_inverse=True)
    neck = np.zeros(unique.size)
    np.maximum.at(neck, inverse, necks)
    peak = np.zeros(n)
    for index, box in enumerate(ndi.find_objects(labels), start=1):  # per object: ndimage's sort is slower
        if box is not None:
            peak[index] = distance[box][labels[box] == index].max()
    low, high = unique // n, unique % n
    join = neck >= ratio * np.minimum(peak[low], peak[high])
    if not join.any():
        return labels
    graph = coo_matrix((np.ones(int(join.sum())), (low[join], high[join])), shape=(n, n))
    _, group = connected_components(graph, directed=False)
    # each group takes its lowest id, so unmerged objects keep theirs
    lowest = np.full(group.max() + 1, n, dtype=np.int64)
    np.minimum.at(lowest, group, np.arange(n))
    return lowest[group].astype(np.uint32)[labels]


def _ball_maxima(inside: np.ndarray, distance: np.ndarray, steps: np.ndarray, radius: float) -> np.ndarray:
    """Voxels of ``inside`` whose ``distance`` is the largest within a ball of ``radius`` (physical units),
    as a maximum filter with a ball footprint would find them, at the cost of the local maxima only: a
    voxel that is not the largest of its 3×3×3 neighbours cannot be, so each plateau of local maxima is
    checked once against its ball."""
    local = inside & (distance >= ndi.maximum_filter(distance, size=3, mode="nearest"))
    plateaus = cc3d.connected_components(local, connectivity=26, out_dtype=np.uint32)
    half = np.maximum(1, np.round(radius / steps).astype(int))
    grids = np.ogrid[tuple(slice(-h, h + 1) for h in half)]
    ball = sum((g * s / radius) ** 2 for g, s in zip(grids, steps)) <= 1.0
    keep = np.zeros(int(plateaus.max()) + 1, bool)
    for index, box in enumerate(ndi.find_objects(plateaus), start=1):
        voxel = next(zip(*np.nonzero(plateaus[box] == index)))  # one voxel of the plateau
        centre = tuple(b.start + v for b, v in zip(box, voxel))
        # The ball's window, cut at the volume's faces. Edge padding would repeat face voxels that are
        # no farther from the centre along any axis than the voxels they copy, so inside the ball too:
        # the cut window has the same maximum.
        lows = [max(0, c - h) for c, h in zip(centre, half)]
        highs = [min(n, c + h + 1) for c, h, n in zip(centre, half, distance.shape)]
        window = distance[tuple(slice(lo, hi) for lo, hi in zip(lows, highs))]
        inside_ball = ball[
            tuple(slice(lo - c + h, hi - c + h) for lo, hi, c, h in zip(lows, highs, centre, half))
        ]
        keep[index] = distance[centre] >= window[inside_ball].max()
    return keep[plateaus]


def reference_split(fg: np.ndarray, edges: np.ndarray | None, edge_threshold: float = 0.5) -> np.ndarray:
    """The BiomedParse v2 recipe on a boolean (D, H, W) mask; returns uint32 labels (not renumbered)."""
    from skimage.measure import label
    from skimage.segmentation import expand_labels

    interior = fg if edges is None else fg & (edges < edge_threshold)
    seeds = label(interior, connectivity=1)
    return (expand_labels(seeds, distance=2) * fg).astype(np.uint32)


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
    return (
        np.concatenate([low, high]),
        np.concatenate([high, low]),
        np.tile(area, 2),
        np.tile(z_area, 2),
        surface,
    )


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


def speck_mask(sizes: np.ndarray, fraction: float) -> np.ndarray:
    """Which ids are specks: ``sizes[id] < fraction`` × the voxel-weighted median object size.

    ``sizes`` is indexed by id (entry 0, the background, is ignored); the typical size is the size of the
    object holding the median foreground voxel, so many specks cannot drag it down.
    """
    sizes = np.asarray(sizes).copy()
    sizes[0] = 0
    present = np.sort(sizes[sizes > 0])
    if present.size == 0:
        return np.zeros(sizes.shape, bool)
    cumulative = np.cumsum(present)
    typical = present[np.searchsorted(cumulative, cumulative[-1] / 2)]
    speck = sizes < fraction * typical
    speck[0] = False
    return speck


def _remove_specks(labels: np.ndarray, fraction: float) -> np.ndarray:
    speck = speck_mask(np.bincount(labels.ravel()), fraction)
    if not speck.any():
        return labels
    return np.where(speck[labels], 0, labels).astype(np.uint32, copy=False)


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
