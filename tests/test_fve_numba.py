"""The compiled (numba) FVE path equals the numpy path bit for bit, and FVESEG_NO_NUMBA turns it off."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("numba")

from fveseg.fve import _numba as _fve_numba  # noqa: E402
from fveseg.fve import encoding as fve  # noqa: E402

pytestmark = pytest.mark.skipif(not _fve_numba.AVAILABLE, reason="numba is installed but does not import")
DTYPES = ["uint8", "uint16", "int32", "float32"]


def random_volume(rng: np.random.Generator, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        volume = rng.normal(scale=1e3, size=shape).astype(dtype)
        volume.flat[:: max(1, volume.size // 3)] = -0.0  # signed zeros must survive the mean
        return volume
    info = np.iinfo(dtype)
    values = rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype.newbyteorder("="))
    return values.astype(dtype)  # full range, extremes included: sums must not overflow


def encode_both(monkeypatch, volume: np.ndarray, **options) -> tuple[list, list]:
    """All batches of `encode_volume` with the numpy path, then with the compiled path."""
    monkeypatch.setenv("FVESEG_NO_NUMBA", "1")
    assert fve._compiled() is None
    expected = list(fve.encode_volume(volume, **options))
    monkeypatch.setenv("FVESEG_NO_NUMBA", "0")
    assert fve._compiled() is _fve_numba
    return expected, list(fve.encode_volume(volume, **options))


def assert_identical(expected: list, actual: list) -> None:
    assert len(expected) == len(actual) > 0
    for (first, want), (start, got) in zip(expected, actual, strict=True):
        assert first == start and want.dtype == got.dtype and want.shape == got.shape
        assert want.tobytes() == got.tobytes()  # bit for bit (NaN and -0.0 included)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("order", [1, 2, 3, 4])
@pytest.mark.parametrize("channels_first", [True, False])
def test_encode_volume_matches_numpy(monkeypatch, dtype, order, channels_first):
    rng = np.random.default_rng(order)
    for shape in [(7, 16, 24), (9, 13, 11), (3, 1, 5)]:  # multiples of 2**(k-1), odd, one row
        volume = random_volume(rng, shape, dtype)
        for pad in fve.PAD_MODES:
            for downsample in fve.DOWNSAMPLE_MODES:
                options = dict(order=order, pad=pad, downsample=downsample, channels_first=channels_first)
                assert_identical(*encode_both(monkeypatch, volume, batch_size=3, **options))


@settings(max_examples=25, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 6), st.integers(1, 19), st.integers(1, 19)),
    order=st.integers(1, 5),
    dtype=st.sampled_from([*DTYPES, "int8", "int16", "uint32", "float64", "int64", "float16", ">u2"]),
    axis=st.integers(0, 2),
    batch_size=st.integers(1, 4),
    channels_first=st.booleans(),
    pad=st.sampled_from(fve.PAD_MODES),
    downsample=st.sampled_from(fve.DOWNSAMPLE_MODES),
    seed=st.integers(0, 2**16),
)
def test_random_volumes_match_numpy(
    shape, order, dtype, axis, batch_size, channels_first, pad, downsample, seed
):
    volume = random_volume(np.random.default_rng(seed), shape, dtype)
    options = dict(order=order, axis=axis, pad=pad, downsample=downsample, channels_first=channels_first)
    with pytest.MonkeyPatch.context() as patch:  # a fresh one per example (not the fixture)
        assert_identical(*encode_both(patch, volume, batch_size=batch_size, **options))


@pytest.mark.parametrize("dtype", [*DTYPES, "int8", "int16", "uint32", "float64"])
@pytest.mark.parametrize("shape", [(2, 8, 6), (3, 5, 7), (1, 1, 1), (2, 4, 1)])
def test_halve_matches_numpy(monkeypatch, dtype, shape):
    stack = random_volume(np.random.default_rng(len(shape) + shape[1]), shape, dtype)
    monkeypatch.setenv("FVESEG_NO_NUMBA", "1")
    expected = fve._halve(stack, "mean")
    monkeypatch.delenv("FVESEG_NO_NUMBA")
    assert _fve_numba.halve_applies(stack.dtype)
    actual = _fve_numba.halve(stack)
    assert actual.dtype == expected.dtype and actual.tobytes() == expected.tobytes()


def test_halve_known_answers():
    # sums 2, 6, 10, 3 -> means 0.5, 1.5, 2.5, 0.75: half to even gives 0, 2, 2, and 1
    stack = np.array([[[0, 1, 1, 2, 2, 3, 0, 1], [0, 1, 1, 2, 2, 3, 1, 1]]], dtype=np.uint8)
    assert _fve_numba.halve(stack).tolist() == [[[0, 2, 2, 1]]]
    odd = np.array([[[10, 20, 7]]], dtype=np.int16)  # 1 x 3: one row and the last column count twice
    assert _fve_numba.halve(odd).tolist() == [[[15, 7]]]
    floats = np.array([[[-0.0, -0.0], [-0.0, -0.0]]], dtype=np.float32)
    assert np.signbit(_fve_numba.halve(floats)).all()


def test_encode_known_answer_order_2():
    volume = np.arange(5 * 4 * 4, dtype=np.uint8).reshape(5, 4, 4)
    image = fve.encode(volume, 2, order=2, downsample="stride")
    corner = volume[:, 0, 0].tolist()  # what every slice stores at (0, 0) of level 1 with "stride"
    # distances 1, 2, 3 at (0,0), (0,1), (1,0), distance 4 at (1,1): slices 1, 0, 0, 0 and 3, 4, 4, 4
    assert image[:2, :2, 1].tolist() == [[corner[1], corner[0]], [corner[0], corner[0]]]
    assert image[:2, :2, 2].tolist() == [[corner[3], corner[4]], [corner[4], corner[4]]]
    assert image[..., 0].tolist() == volume[2].tolist()


def test_no_numba_env_forces_numpy_path(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("compiled kernel called")

    monkeypatch.setattr(_fve_numba, "fill", refuse)
    monkeypatch.setattr(_fve_numba, "halve", refuse)
    volume = np.arange(4 * 6 * 6, dtype=np.uint8).reshape(4, 6, 6)
    monkeypatch.setenv("FVESEG_NO_NUMBA", "1")
    assert not _fve_numba.enabled()
    assert fve.encode(volume, 1, order=3).shape == (6, 6, 3)
    monkeypatch.setenv("FVESEG_NO_NUMBA", "0")
    assert _fve_numba.enabled()
    with pytest.raises(AssertionError, match="compiled kernel called"):
        fve.encode(volume, 1, order=3)


def test_use_compiled_false_keeps_to_numpy_with_the_same_result(monkeypatch):
    monkeypatch.setenv("FVESEG_NO_NUMBA", "0")
    volume = np.random.default_rng(3).integers(0, 60000, (7, 10, 9), dtype=np.uint16)
    options = dict(order=3, batch_size=3, channels_first=True)
    compiled = np.concatenate([b for _, b in fve.encode_volume(volume, **options)])

    def refuse(*args, **kwargs):
        raise AssertionError("compiled kernel called")

    monkeypatch.setattr(_fve_numba, "fill", refuse)
    monkeypatch.setattr(_fve_numba, "halve", refuse)
    numpy_path = np.concatenate([b for _, b in fve.encode_volume(volume, **options, use_compiled=False)])
    assert np.array_equal(numpy_path, compiled)


def test_unavailable_numba_falls_back(monkeypatch):
    monkeypatch.delenv("FVESEG_NO_NUMBA", raising=False)
    monkeypatch.setattr(_fve_numba, "AVAILABLE", False)
    assert fve._compiled() is None
    assert not _fve_numba.fill_applies(np.uint8, 2) and not _fve_numba.halve_applies(np.uint8)
    volume = np.arange(3 * 4 * 4, dtype=np.uint8).reshape(3, 4, 4)
    assert fve.encode(volume, 0, order=1, pad="reflect")[..., 2].tolist() == volume[1].tolist()


def test_dispatch_limits():
    assert _fve_numba.fill_applies(np.float16, 1) and _fve_numba.fill_applies(np.int64, _fve_numba.MAX_ORDER)
    too_deep = _fve_numba.MAX_ORDER + 1
    assert not _fve_numba.fill_applies(np.uint8, 0) and not _fve_numba.fill_applies(np.uint8, too_deep)
    assert not _fve_numba.halve_applies(np.float16) and not _fve_numba.halve_applies(np.int64)
    assert not _fve_numba.halve_applies(np.dtype(">u2"))
