"""Fractal Volumetric Encoding: exact answers, a literal Algorithm 1 reference, round trips, Theorem 1."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fveseg.errors import InputError
from fveseg.fve import encoding as fve
from fveseg.fve.encoding import (
    allocation_map,
    context_indices,
    decode,
    encode,
    encode_volume,
    select_view,
    slices_per_side,
)

FAST = settings(max_examples=40, deadline=None)
DTYPES = (np.uint8, np.uint16, np.float32)


# ---- literal reference (paper Algorithm 1, one slice at a time) --------------------------------------


def ref_halve(img, mode):
    """Halve one 2D slice; an odd height or width is first edge-padded by one pixel."""
    img = np.pad(img, ((0, img.shape[0] % 2), (0, img.shape[1] % 2)), mode="edge")
    if mode == "stride":
        return img[::2, ::2]
    a, b, c, d = img[0::2, 0::2], img[0::2, 1::2], img[1::2, 0::2], img[1::2, 1::2]
    if img.dtype.kind == "f":
        return ((a + b) + (c + d)) * img.dtype.type(0.25)
    mean = (a.astype(np.float64) + b + c + d) / 4
    return np.round(mean).astype(img.dtype)  # np.round: half to even


def pixel_mix(m1, m2, m3, m4):
    out = np.empty((2 * m1.shape[0], 2 * m1.shape[1]), m1.dtype)
    out[0::2, 0::2], out[0::2, 1::2], out[1::2, 0::2], out[1::2, 1::2] = m1, m2, m3, m4
    return out


def fractal_encode(imgs, k, mode):
    """Algorithm 1; the mixed image is cropped to the input size (odd sizes)."""
    if k > 1:
        low = [ref_halve(img, mode) for img in imgs]
        mixed = pixel_mix(low[0], low[1], low[2], fractal_encode(low[3:], k - 1, mode))
        return mixed[: imgs[0].shape[0], : imgs[0].shape[1]]
    return imgs[0]


def ref_index(i, depth, pad):
    if pad == "edge":
        return min(max(i, 0), depth - 1)
    while not 0 <= i < depth:  # mirror without repeating the end slice
        i = -i if i < 0 else 2 * (depth - 1) - i
        if depth == 1:
            return 0
    return i


def ref_encode(volume, index, k, pad, mode):
    depth, height, width = volume.shape
    if k == 0:
        return np.stack([volume[index]] * 3, -1)
    n = 3 * k - 2
    sides = [[volume[ref_index(index + sign * j, depth, pad)] for j in range(1, n + 1)] for sign in (-1, 1)]
    return np.stack([volume[index]] + [fractal_encode(side, k, mode) for side in sides], -1)


def random_volume(rng, shape, dtype):
    if np.dtype(dtype).kind == "f":
        return rng.uniform(-1000, 1000, shape).astype(dtype)
    return rng.integers(0, np.iinfo(dtype).max, shape, endpoint=True).astype(dtype)


volumes = st.tuples(
    st.integers(1, 6),
    st.integers(1, 19),
    st.integers(1, 19),
    st.sampled_from(DTYPES),
    st.integers(0, 2**32 - 1),
)


# ---- exact answers -----------------------------------------------------------------------------------


def test_slice_counts():
    for k in range(0, 7):
        n = slices_per_side(k)
        assert n == (0 if k == 0 else 3 * k - 2)
        before, after = context_indices(50, 100, k)
        assert before.tolist() == list(range(49, 49 - n, -1)) and after.tolist() == list(range(51, 51 + n))
        if k:
            assert 1 + 2 * n == 6 * k - 3
            distances = np.unique(allocation_map(k, (2 ** (k - 1), 2 ** (k - 1)))[0])
            assert distances.tolist() == list(range(1, n + 1))


def test_padding_rules_by_hand():
    assert [a.tolist() for a in context_indices(0, 5, 2, "edge")] == [[0, 0, 0, 0], [1, 2, 3, 4]]
    assert [a.tolist() for a in context_indices(0, 5, 2, "reflect")] == [[1, 2, 3, 4], [1, 2, 3, 4]]
    assert [a.tolist() for a in context_indices(4, 5, 2, "reflect")] == [[3, 2, 1, 0], [3, 2, 1, 0]]
    assert [a.tolist() for a in context_indices(1, 3, 3, "reflect")][1] == [2, 1, 0, 1, 2, 1, 0]
    assert [a.tolist() for a in context_indices(0, 1, 2, "reflect")] == [[0] * 4, [0] * 4]


@pytest.mark.parametrize("pad", ["edge", "reflect"])
def test_slices_used_are_the_padded_neighbours(pad):
    # slice z is constant z + 10: every stored context pixel names the slice it came from
    depth, k = 5, 2
    volume = np.broadcast_to((np.arange(depth, dtype=np.uint16) + 10)[:, None, None], (depth, 4, 6))
    for index in range(depth):
        decoded = decode(encode(volume, index, order=k, pad=pad), k)
        before, after = context_indices(index, depth, k, pad)
        assert [int(s[0, 0]) - 10 for s in decoded.before] == before.tolist()
        assert [int(s[0, 0]) - 10 for s in decoded.after] == after.tolist()
        assert np.all(decoded.focal == index + 10)


@pytest.mark.parametrize("depth", [1, 2, 3, 7])
def test_order1_reflect_equals_reference_implementation(depth):
    rng = np.random.default_rng(depth)
    v = rng.integers(0, 256, (depth, 5, 6), dtype=np.uint8)
    for z in range(depth):
        prev = (z - 1 if z > 0 else 1) if depth > 1 else 0
        nxt = (z + 1 if z < depth - 1 else depth - 2) if depth > 1 else 0
        expected = np.stack([v[z], v[prev], v[nxt]], -1)
        assert np.array_equal(encode(v, z, order=1, pad="reflect"), expected)


def test_order0_repeats_focal():
    v = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4)
    assert np.array_equal(encode(v, 1, order=0), np.stack([v[1]] * 3, -1))
    assert decode(encode(v, 1, order=0), 0).before == []


def test_mean_rounds_half_to_even_and_floats_stay_float():
    # one 2x2 block per context slice; order 2: distances 1..4 are each one pixel of the 2x2 channel
    blocks = [[[1, 2], [2, 2]], [[0, 1], [0, 1]], [[1, 2], [1, 2]], [[255, 254], [255, 254]]]
    v = np.array([[[0, 0], [0, 0]]] + blocks, dtype=np.uint8)[::-1].copy()  # focal last, distance 1 first
    enc = encode(v, 4, order=2)
    assert enc[..., 1].tolist() == [[2, 0], [2, 254]]  # 1.75->2, 0.5->0, 1.5->2, 254.5->254
    assert enc.dtype == np.uint8
    vf = v.astype(np.float32)
    assert encode(vf, 4, order=2)[..., 1].tolist() == [[1.75, 0.5], [1.5, 254.5]]


def test_allocation_shares():
    assert allocation_map(1, (4, 4))[1].tolist() == [1.0]
    assert allocation_map(2, (4, 6))[1].tolist() == [0.25] * 4
    assert allocation_map(3, (8, 8))[1].tolist() == [0.25] * 3 + [1 / 16] * 4
    dist, shares = allocation_map(4, (16, 16))
    assert shares.tolist() == [1 / 4] * 3 + [1 / 16] * 3 + [1 / 64] * 4 and dist.shape == (16, 16)
    assert allocation_map(2, (2, 2))[0].tolist() == [[1, 2], [3, 4]]


def test_select_view():
    assert select_view((40, 512, 512)) == 0
    assert select_view((512, 60, 512)) == 1  # axis 0 plane 60x512 too elongated; axis 1 plane 512x512
    assert select_view((300, 512, 400)) == 0  # 2*112/912 = 0.246 < 0.5
    assert select_view((100, 100, 20)) == 2  # plane of axis 2 is square
    assert select_view((100, 100, 20), spacing=(1.0, 1.0, 5.0)) == 0
    assert select_view((40, 100, 300)) == 2  # ratios 1.0, 1.53, 0.857
    assert select_view((40, 100, 300), spacing=(5.0, 1.0, 1.0)) == 1  # extents 200, 100, 300: 1.0, 0.4, 0.67
    with pytest.raises(InputError):
        select_view((10, 10))


def test_bad_inputs_raise_input_error():
    v = np.zeros((3, 4, 4), np.uint8)
    for kwargs in ({"order": -1}, {"order": 1.5}, {"pad": "wrap"}, {"downsample": "max"}, {"axis": 3}):
        with pytest.raises(InputError):
            encode(v, 0, **kwargs)
    for index in (-1, 3):
        with pytest.raises(InputError):
            encode(v, index)
    with pytest.raises(InputError):
        encode(v.astype(bool), 0)
    with pytest.raises(InputError):
        encode(np.zeros((4, 4)), 0)
    with pytest.raises(InputError):
        next(encode_volume(v, start=2, stop=1))
    with pytest.raises(InputError):
        decode(np.zeros((4, 4)), 1)


# ---- properties --------------------------------------------------------------------------------------


@FAST
@given(volumes, st.integers(0, 4), st.sampled_from(["edge", "reflect"]), st.sampled_from(["mean", "stride"]))
def test_encode_matches_literal_algorithm(spec, k, pad, mode):
    depth, h, w, dtype, seed = spec
    rng = np.random.default_rng(seed)
    v = random_volume(rng, (depth, h, w), dtype)
    index = int(rng.integers(depth))
    got = encode(v, index, order=k, pad=pad, downsample=mode)
    assert got.dtype == v.dtype and got.shape == (h, w, 3)
    assert np.array_equal(got, ref_encode(v, index, k, pad, mode))


@FAST
@given(volumes, st.integers(1, 4), st.sampled_from(["mean", "stride"]))
def test_decode_is_exact_and_reencode_identical(spec, k, mode):
    depth, h, w, dtype, seed = spec
    rng = np.random.default_rng(seed)
    v = random_volume(rng, (depth, h, w), dtype)
    index = int(rng.integers(depth))
    enc = encode(v, index, order=k, downsample=mode)
    dec = decode(enc, k)
    before, after = context_indices(index, depth, k)
    assert np.array_equal(dec.focal, v[index])
    for j, (rows, cols) in enumerate(dec.stored_shapes):
        level = 0 if k == 1 else min(j // 3 + 1, k - 1)
        for side, idx in ((dec.before, before), (dec.after, after)):
            expected = v[idx[j]]
            for _ in range(level):
                expected = ref_halve(expected, mode)
            assert side[j].shape == expected.shape
            assert np.array_equal(side[j][:rows, :cols], expected[:rows, :cols])
    # re-encode the decoded slices (upsampled into a volume) -> the identical image
    up = decode(enc, k, upsample=True)
    n = slices_per_side(k)
    rebuilt = np.stack(up.before[::-1] + [up.focal] + up.after)
    assert np.array_equal(encode(rebuilt, n, order=k, downsample=mode), enc)


class RecordingArray:
    """A lazy-array stand-in that records which slices are read."""

    def __init__(self, array, axis):
        self.array, self.axis, self.reads = array, axis, []
        self.shape, self.dtype = array.shape, array.dtype

    def __getitem__(self, key):
        self.reads.append(key[self.axis])
        return self.array[key]


@FAST
@given(volumes, st.integers(0, 3), st.sampled_from(["edge", "reflect"]), st.integers(0, 2), st.data())
def test_encode_volume_equals_per_slice_encode(spec, k, pad, axis, data):
    depth, h, w, dtype, seed = spec
    v = random_volume(np.random.default_rng(seed), (h, depth, w), dtype)
    v = np.moveaxis(v, 1, axis)
    size = v.shape[axis]
    start = data.draw(st.integers(0, size))
    stop = data.draw(st.integers(start, size))
    batch = data.draw(st.integers(1, 5))
    lazy = RecordingArray(v, axis)
    got = list(encode_volume(lazy, order=k, axis=axis, pad=pad, start=start, stop=stop, batch_size=batch))
    assert [first for first, _ in got] == list(range(start, stop, batch))
    stacked = np.concatenate([b for _, b in got]) if got else np.empty((0,))
    expected = [encode(v, i, order=k, axis=axis, pad=pad) for i in range(start, stop)]
    assert np.array_equal(stacked, np.stack(expected)) if expected else stacked.size == 0
    n = slices_per_side(k)
    for (first, b), read in zip(got, lazy.reads):
        assert max(0, first - n) <= read.start and read.stop <= min(size, first + len(b) + n)


def test_encode_volume_channels_first_is_a_transpose():
    v = np.random.default_rng(2).integers(0, 256, (6, 9, 7), dtype=np.uint8)
    for k in (0, 1, 3):
        hwc = np.concatenate([b for _, b in encode_volume(v, order=k, batch_size=4)])
        chw = np.concatenate([b for _, b in encode_volume(v, order=k, batch_size=4, channels_first=True)])
        assert chw.shape == (6, 3, 9, 7) and np.array_equal(chw, hwc.transpose(0, 3, 1, 2))
        assert hwc.flags.c_contiguous


def test_encode_volume_on_dask():
    da = pytest.importorskip("dask.array")
    v = np.random.default_rng(1).integers(0, 4000, (9, 12, 10), dtype=np.uint16)
    lazy = da.from_array(v, chunks=(2, 12, 10))
    got = np.concatenate([b for _, b in encode_volume(lazy, order=2, batch_size=4)])
    assert np.array_equal(got, np.stack([encode(v, i, order=2) for i in range(9)]))


def test_64bit_integer_mean_does_not_overflow():
    top = np.iinfo(np.int64).max
    v = np.array([[[top, top - 1], [top - 2, top - 3]]] * 5, dtype=np.int64)
    assert encode(v, 0, order=2)[1, 1, 2] == top - 1  # mean 2**63 - 2.5 rounds half to even
    u = np.array([[[1, 2], [2, 2]]] * 5, dtype=np.uint64)
    assert encode(u, 0, order=2)[0, 0, 2] == 2


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 4), st.integers(1, 3), st.integers(1, 3), st.integers(1, 6), st.integers(0, 2**32 - 1))
def test_theorem1_patch_embedding_is_adaptive_3d_convolution(k, patches_y, patches_x, depth, seed):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(seed)
    p = 2 ** (k - 1)
    v = rng.normal(size=(depth, p * patches_y, p * patches_x))
    index = int(rng.integers(depth))
    weights = rng.normal(size=(5, 3, p, p))  # patch embedding: 5 output features
    enc = encode(v, index, order=k)
    image = torch.from_numpy(np.ascontiguousarray(enc.transpose(2, 0, 1)))[None]
    embedded = torch.nn.functional.conv2d(image, torch.from_numpy(weights), stride=p)[0].numpy()

    # equivalent 3D kernel over the p x p x (2N+1) neighbourhood, built from the allocation rule
    n = slices_per_side(k)
    kernel = np.zeros((5, 2 * n + 1, p, p))
    kernel[:, n] = weights[:, 0]
    distance = allocation_map(k, (p, p))[0]
    for u in range(p):
        for w in range(p):
            d = distance[u, w]
            level = 0 if k == 1 else min((d - 1) // 3 + 1, k - 1)
            b = 2**level
            block = (slice(u // b * b, u // b * b + b), slice(w // b * b, w // b * b + b))
            for channel, sign in ((1, -1), (2, 1)):
                kernel[(slice(None), n + sign * d, *block)] += weights[:, channel, u, w][:, None, None] / b**2
    neighbours = v[np.clip(np.arange(index - n, index + n + 1), 0, depth - 1)]
    patches = neighbours.reshape(2 * n + 1, patches_y, p, patches_x, p)
    convolved = np.einsum("mzuv,zIuJv->mIJ", kernel, patches)
    np.testing.assert_allclose(embedded, convolved, rtol=1e-9, atol=1e-9)


# ---- fast paths: cache blocks and chunked uint8 halving must not change a bit -----------------------


@pytest.mark.parametrize("block_bytes", [1, 100, 2000])
@pytest.mark.parametrize("channels_first", [False, True])
def test_blocked_writes_match_literal_algorithm(monkeypatch, block_bytes, channels_first):
    # tiny blocks force row bands inside one slice (and one slice per block); sizes are odd on purpose
    monkeypatch.setattr(fve, "_BLOCK_BYTES", block_bytes)
    v = random_volume(np.random.default_rng(block_bytes), (7, 21, 13), np.uint8)
    for k in (1, 2, 3, 4):
        for pad in ("edge", "reflect"):
            batches = encode_volume(v, order=k, pad=pad, batch_size=3, channels_first=channels_first)
            got = np.concatenate([b for _, b in batches])
            if channels_first:
                got = got.transpose(0, 2, 3, 1)
            expected = np.stack([ref_encode(v, i, k, pad, "mean") for i in range(7)])
            assert np.array_equal(got, expected), (k, pad)


@pytest.mark.parametrize("chunk_pixels", [1, 50, 1 << 18])
def test_uint8_halving_in_chunks_is_exact(monkeypatch, chunk_pixels):
    monkeypatch.setattr(fve, "_CHUNK_PIXELS", chunk_pixels)
    rng = np.random.default_rng(chunk_pixels)
    # every 2x2 sum 0 .. 1020 (all rounding cases, the 255 extreme included), plus random blocks
    sums = np.arange(1021)
    quarters = np.stack([np.minimum(sums - 255 * j, 255).clip(0) for j in range(4)], -1)
    blocks = np.concatenate([quarters, rng.integers(0, 256, (1027, 4))]).astype(np.uint8)  # 2048 blocks
    stack = blocks.reshape(4, 16, 32, 2, 2).transpose(0, 1, 3, 2, 4).reshape(4, 32, 64)
    expected = np.round(blocks.astype(np.float64).mean(-1)).astype(np.uint8).reshape(4, 16, 32)
    assert np.array_equal(fve._halve(stack, "mean"), expected)
    odd = stack[:, :31, :63]  # odd sizes: edge-padded, then the same fast path
    assert np.array_equal(fve._halve(odd, "mean"), np.stack([ref_halve(s, "mean") for s in odd]))


@FAST
@given(
    st.integers(1, 4),
    st.sampled_from([np.uint8, np.uint16, np.int32, np.float32]),
    st.integers(1, 6),
    st.integers(1, 3),
    st.integers(1, 3),
    st.sampled_from(["edge", "reflect"]),
    st.integers(0, 2**32 - 1),
)
def test_pair_word_path_matches_literal_algorithm(k, dtype, depth, rows, cols, pad, seed):
    # sizes that are multiples of 2**(k-1) take the word-pair fast path for (B, 3, H, W) output
    unit = 2 ** (k - 1)
    v = random_volume(np.random.default_rng(seed), (depth, 2 * unit * rows, 2 * unit * cols), dtype)
    got = np.concatenate(
        [b for _, b in encode_volume(v, order=k, pad=pad, batch_size=2, channels_first=True)]
    )
    expected = np.stack([ref_encode(v, i, k, pad, "mean") for i in range(depth)])
    assert got.dtype == v.dtype and np.array_equal(got.transpose(0, 2, 3, 1), expected)


@pytest.mark.parametrize("block_bytes", [1, 1 << 20])
def test_pair_word_path_in_blocks_is_exact(monkeypatch, block_bytes):
    from fveseg.fve import _pixel_pairs

    monkeypatch.setattr(_pixel_pairs, "_BLOCK_BYTES", block_bytes)
    v = random_volume(np.random.default_rng(7), (9, 16, 24), np.uint8)
    assert _pixel_pairs.pairs_apply(v.dtype, 16, 24, 4) and not _pixel_pairs.pairs_apply(v.dtype, 16, 24, 1)
    for k in (1, 2, 3, 4):
        got = np.concatenate([b for _, b in encode_volume(v, order=k, batch_size=4, channels_first=True)])
        expected = np.stack([ref_encode(v, i, k, "edge", "mean") for i in range(9)])
        assert np.array_equal(got.transpose(0, 2, 3, 1), expected), k
