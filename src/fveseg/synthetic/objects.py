"""Place and draw the objects: nuclei (irregular ellipsoids), cells, membranes and puncta.

Each object is drawn inside its own bounding box with array operations; only the objects are looped
over. Nuclei that overlap share the overlap by their normalised radius (the smaller wins), which leaves
a flat contact face like two nuclei pressed against each other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from fveseg.synthetic.options import SyntheticOptions

_N_HARMONICS = 6  # cosine waves on the sphere that make the radial noise (low frequency)


@dataclass
class NucleusPlan:
    """Where and how each nucleus is drawn (one row per nucleus, lengths in µm)."""

    centers: np.ndarray  # (N, 3) float, z y x
    semi_axes: np.ndarray  # (N, 3) float
    rotations: np.ndarray  # (N, 3, 3) float, columns = body axes in (z, y, x)
    brightness: np.ndarray  # (N,) float
    pair_of: np.ndarray  # (N,) int, index of the dividing partner or -1


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3×3 rotation matrix."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.diag(r))


def _semi_axes(rng: np.random.Generator, radius: float, elongation: float) -> np.ndarray:
    # Volume-preserving stretch so `radius` stays the mean size.
    ratios = np.exp(rng.uniform(0, np.log(elongation), size=3))
    return radius * ratios / np.cbrt(ratios.prod())


def plan_nuclei(rng: np.random.Generator, extent_um: np.ndarray, options: SyntheticOptions) -> NucleusPlan:
    """Choose centres, shapes and brightness by random sequential addition (loops over nuclei only).

    ``extent_um`` (3,) is the volume size in µm. Centres may lie up to half a mean radius outside the
    volume, so nuclei are cut by its borders as in a real field of view (and a one-slice volume still
    cuts through many nuclei). Isolated nuclei keep a gap from all others; clustered ones are put at
    75–92 % of the contact distance of an existing nucleus; a dividing pair is two small, bright,
    elongated nuclei side by side.
    """
    low, high = options.radius_um
    margin = 0.25 * (low + high)
    origin, size = -margin, extent_um + 2 * margin
    if options.n_nuclei is None:
        mean_volume = 4 / 3 * np.pi * ((low + high) / 2) ** 3
        n_slots = int(round(options.density * float(np.prod(size)) / mean_volume))
    else:
        n_slots = options.n_nuclei
    centers: list[np.ndarray] = []
    radii: list[float] = []
    axes: list[np.ndarray] = []
    rotations: list[np.ndarray] = []
    bright: list[float] = []
    partner: list[int] = []

    def fits(center: np.ndarray, radius: float, ignore: tuple[int, ...] = ()) -> bool:
        if np.any(center < origin) or np.any(center > origin + size):
            return False
        if not centers:
            return True
        distance = np.linalg.norm(np.asarray(centers) - center, axis=1)
        allowed = (np.asarray(radii) + radius) * 1.05
        allowed[list(ignore)] = 0
        return bool(np.all(distance >= allowed))

    def brightness() -> float:
        if rng.random() < options.dim_fraction:
            return float(rng.uniform(*options.dim_brightness))
        return float(np.exp(rng.normal(0, options.brightness_spread)))

    for _ in range(n_slots):
        for _attempt in range(30):
            radius = float(rng.uniform(low, high))
            if rng.random() < options.dividing_fraction:
                # Two daughter nuclei: smaller, elongated along the division axis, condensed (brighter).
                small = radius * 0.62
                axis = random_rotation(rng)
                offset = axis[:, 0] * small * rng.uniform(1.0, 1.25)
                center = origin + rng.uniform(0, 1, 3) * size
                pair = (center - offset, center + offset)
                if not (fits(pair[0], small) and fits(pair[1], small)):
                    continue
                shared = brightness() * 1.4
                for k, daughter in enumerate(pair):
                    partner.append(len(centers) + 1 - 2 * k)
                    centers.append(daughter)
                    radii.append(small)
                    axes.append(small * np.array([1.2, 0.9, 0.9]))
                    rotations.append(axis)
                    bright.append(shared)
                break
            if centers and rng.random() < options.cluster_fraction:
                anchor = int(rng.integers(len(centers)))
                direction = rng.normal(size=3)
                direction /= np.linalg.norm(direction)
                contact = (radii[anchor] + radius) * rng.uniform(0.75, 0.92)
                center = centers[anchor] + direction * contact
                ok = fits(center, radius, ignore=(anchor,))
            else:
                center = origin + rng.uniform(0, 1, 3) * size
                ok = fits(center, radius)
            if ok:
                centers.append(center)
                radii.append(radius)
                axes.append(_semi_axes(rng, radius, options.elongation))
                rotations.append(random_rotation(rng))
                bright.append(brightness())
                partner.append(-1)
                break
    n = len(centers)
    return NucleusPlan(
        centers=np.asarray(centers, dtype=float).reshape(n, 3),
        semi_axes=np.asarray(axes, dtype=float).reshape(n, 3),
        rotations=np.asarray(rotations, dtype=float).reshape(n, 3, 3),
        brightness=np.asarray(bright, dtype=float),
        pair_of=np.asarray(partner, dtype=int),
    )


def _box(center: np.ndarray, reach: np.ndarray, spacing: np.ndarray, shape: tuple[int, ...]):
    """Slices of the voxels within ``reach`` µm of ``center`` and their offsets from it in µm."""
    low = np.maximum(np.floor((center - reach) / spacing).astype(int), 0)
    high = np.minimum(np.ceil((center + reach) / spacing).astype(int) + 1, shape)
    if np.any(high <= low):
        return None, None
    box = tuple(slice(a, b) for a, b in zip(low, high))
    offsets = [
        (np.arange(a, b) * s - c).reshape([-1 if i == axis else 1 for i in range(3)])
        for axis, (a, b, s, c) in enumerate(zip(low, high, spacing, center))
    ]
    return box, offsets


def draw_nuclei(
    rng: np.random.Generator,
    plan: NucleusPlan,
    shape: tuple[int, int, int],
    spacing: np.ndarray,
    irregularity: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Rasterise the planned nuclei.

    Returns
    -------
    labels : (z, y, x) uint32
        Nucleus ``i`` of the plan gets id ``i + 1`` (not yet sequential: some may be cut away).
    depth : (z, y, x) float32
        Normalised radius inside each nucleus (0 at the centre, 1 at the outline), for intensity profiles.
    """
    labels = np.zeros(shape, np.uint32)
    depth = np.full(shape, np.inf, np.float32)
    for index in range(len(plan.centers)):
        axes = plan.semi_axes[index]
        directions = rng.normal(size=(_N_HARMONICS, 3))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        frequencies = rng.uniform(0.4, 1.3, _N_HARMONICS) * np.pi
        phases = rng.uniform(0, 2 * np.pi, _N_HARMONICS)
        reach = axes.max() * (1 + 3 * irregularity) + 1e-6
        box, (dz, dy, dx) = _box(plan.centers[index], reach, spacing, shape)
        if box is None:
            continue
        rot = plan.rotations[index]
        # Body-frame coordinates q = Rᵀ d, broadcast over the box.
        body = [rot[0, k] * dz + rot[1, k] * dy + rot[2, k] * dx for k in range(3)]
        rho = np.sqrt(sum((q / a) ** 2 for q, a in zip(body, axes)))
        norm = np.sqrt(sum(q**2 for q in body)) + 1e-9
        noise = sum(
            np.cos(f * (d[0] * body[0] + d[1] * body[1] + d[2] * body[2]) / norm + p)
            for d, f, p in zip(directions, frequencies, phases)
        ) / np.sqrt(_N_HARMONICS / 2)
        scaled = (rho / (1 + irregularity * noise)).astype(np.float32)
        win = (scaled <= 1) & (scaled < depth[box])
        labels[box][win] = index + 1
        depth[box][win] = scaled[win]
    return labels, depth


def grow_cells(nuclei: np.ndarray, spacing: np.ndarray, margin_um: float) -> tuple[np.ndarray, np.ndarray]:
    """Whole cells: each voxel within ``margin_um`` of a nucleus joins the nearest one (Voronoi-like).

    Cell ids equal their nucleus ids. Membranes are the cell voxels with a 6-neighbour of another label
    (another cell or the outside), a shell about one voxel thick on each side of a border.
    """
    cells = np.zeros_like(nuclei)
    nearest = np.full(nuclei.shape, np.inf, np.float32)
    pad = np.ceil(margin_um / spacing).astype(int)
    # One small distance transform per nucleus, inside its box grown by the margin: cheaper than a
    # whole-volume transform with indices, and the margin bounds how far a cell reaches anyway.
    for nucleus, found in enumerate(ndimage.find_objects(nuclei), start=1):
        if found is None:
            continue
        box = tuple(
            slice(max(s.start - p, 0), min(s.stop + p, n)) for s, p, n in zip(found, pad, nuclei.shape)
        )
        distance = ndimage.distance_transform_edt(nuclei[box] != nucleus, sampling=spacing)
        closer = (distance <= margin_um) & (distance < nearest[box])
        cells[box][closer] = nucleus
        nearest[box][closer] = distance[closer]
    border = np.zeros(cells.shape, bool)
    for axis in range(3):
        low = [slice(None)] * 3
        high = [slice(None)] * 3
        low[axis], high[axis] = slice(None, -1), slice(1, None)
        differs = cells[tuple(low)] != cells[tuple(high)]
        border[tuple(low)] |= differs
        border[tuple(high)] |= differs
    membranes = (border & (cells > 0)).astype(np.uint8)
    return cells, membranes


def draw_spots(
    rng: np.random.Generator,
    cells: np.ndarray,
    spacing: np.ndarray,
    per_cell: float,
    radius_um: tuple[float, float],
    psf_sigma_um: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray]:
    """Puncta at random voxels inside cells.

    Puncta are about as small as the point-spread function, so what a microscope (and an annotator)
    sees is their blurred footprint: each label is an ellipsoid with semi-axes
    sqrt(radius² + (1.2·sigma_psf)²) per axis, at least half a voxel, clipped to the cells.

    Returns
    -------
    spots : (z, y, x) uint32
        Sequential instance labels.
    centres : (K, 3) int
        Voxel index of each punctum's centre (row ``k`` belongs to id ``k + 1``).
    """
    spots = np.zeros(cells.shape, np.uint32)
    inside = np.flatnonzero(cells)
    n_cells = int(np.count_nonzero(np.unique(cells)))
    count = int(rng.poisson(per_cell * n_cells)) if inside.size else 0
    if count == 0:
        return spots, np.zeros((0, 3), int)
    picks = rng.choice(inside, size=count, replace=False) if count < inside.size else inside
    voxels = np.stack(np.unravel_index(picks, cells.shape), axis=1)
    centers = (voxels + rng.uniform(-0.25, 0.25, voxels.shape)) * spacing
    blur = 1.2 * np.array([psf_sigma_um[0], psf_sigma_um[1], psf_sigma_um[1]])
    kept = []
    for voxel, center in zip(voxels, centers):
        if spots[tuple(voxel)]:
            continue
        axes = np.maximum(np.sqrt(rng.uniform(*radius_um) ** 2 + blur**2), 0.55 * spacing)
        box, (dz, dy, dx) = _box(center, axes, spacing, cells.shape)
        inside_spot = (dz / axes[0]) ** 2 + (dy / axes[1]) ** 2 + (dx / axes[2]) ** 2 <= 1
        spots[box][inside_spot & (spots[box] == 0) & (cells[box] > 0)] = len(kept) + 1
        kept.append(voxel)
    return spots, np.asarray(kept, dtype=int).reshape(-1, 3)
