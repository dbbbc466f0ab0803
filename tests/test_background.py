"""Background flattening (`fveseg.normalize.background`): known answers on hand-built planes."""

import numpy as np
import pytest

from fveseg.normalize.background import (
    BACKGROUND_WINDOW_PX,
    background_window,
    flatten_background,
)
from fveseg.params import SegmentParams
from fveseg.pipeline import prepared_image


def _plane_with_nucleus(background: np.ndarray, contrast: float = 50.0) -> tuple[np.ndarray, np.ndarray]:
    """One (1, 96, 96) plane: ``background`` plus a 12 × 12 bright square in the middle."""
    nucleus = np.zeros((1, 96, 96), dtype=bool)
    nucleus[0, 42:54, 42:54] = True
    return (background + contrast * nucleus).astype(np.float32), nucleus


def test_window_follows_the_pixel_size():
    assert background_window((2.0, 0.5, 0.5)) == 80  # 40 µm over 0.5 µm pixels
    assert background_window((1.0, 0.4, 0.25)) == 160  # the finer in-plane axis
    assert background_window(None) == BACKGROUND_WINDOW_PX
    assert background_window((1.0, float("nan"), 1.0)) == BACKGROUND_WINDOW_PX
    assert background_window((1.0, 100.0, 100.0)) == 3  # never shorter than 3 px


@pytest.mark.parametrize("direction", ["rows", "columns"])
def test_stripes_are_removed_and_the_nucleus_kept(direction):
    stripes = 1000.0 + 30.0 * np.sin(np.arange(96) / 3.0)  # a 60-unit swing, more than the contrast
    background = stripes[None, :, None] if direction == "rows" else stripes[None, None, :]
    image, nucleus = _plane_with_nucleus(np.broadcast_to(background, (1, 96, 96)))
    flat = flatten_background(image, window=40)
    assert flat.dtype == np.float32 and flat.shape == image.shape
    assert flat.min() >= 0
    # the background's 60-unit swing is gone up to the 1 px smoothing's residue
    outside = flat[~nucleus]
    assert np.percentile(outside, 99) < 8.0
    # the nucleus keeps its 50 units above the background at its centre
    assert flat[0, 48, 48] == pytest.approx(50.0, abs=8.0)


def test_smooth_illumination_is_removed():
    y, x = np.mgrid[0:96, 0:96]
    illumination = 500.0 + 2.0 * x + 1.5 * y  # 330 units across the field, 7 times the contrast
    image, nucleus = _plane_with_nucleus(illumination[None])
    flat = flatten_background(image, window=40)
    assert np.percentile(flat[~nucleus], 99) < 40.0  # a linear ramp leaves at most the line's slope
    assert flat[nucleus].mean() > 3 * flat[~nucleus].mean()


def test_each_plane_is_flattened_on_its_own():
    planes = np.stack([np.full((64, 64), 100.0), np.full((64, 64), 900.0)]).astype(np.float32)
    flat = flatten_background(planes, window=20)
    np.testing.assert_allclose(flat, 0.0, atol=1e-3)


def test_non_finite_values_take_the_smallest_finite_value():
    image = np.full((1, 32, 32), 10.0, dtype=np.float32)
    image[0, 5, 5] = np.nan
    assert np.all(np.isfinite(flatten_background(image, window=8)))
    everything_nan = np.full((1, 8, 8), np.nan, dtype=np.float32)
    assert np.isnan(flatten_background(everything_nan, window=4)).all()  # left for the segmenter to refuse


def test_the_pipeline_flattens_only_when_asked():
    image = np.random.default_rng(0).random((2, 32, 32)).astype(np.float32) + 5
    assert prepared_image(image, SegmentParams(), None) is image
    np.testing.assert_array_equal(
        prepared_image(image, SegmentParams(flatten=True), None), flatten_background(image)
    )


def test_a_2d_image_is_one_plane():
    image = _nuclei_field(np.full((96, 96), 10.0), contrast=200.0)[0]
    np.testing.assert_array_equal(
        flatten_background(image, window=40), flatten_background(image[None], window=40)[0]
    )
    assert flatten_background(image, window=40, only_if_dominant=True) is image


def test_a_volume_or_plane_is_required():
    with pytest.raises(ValueError, match=r"\(D, H, W\)"):
        flatten_background(np.zeros((2, 2, 8, 8)))


def _nuclei_field(background: np.ndarray, contrast: float) -> np.ndarray:
    """(2, 96, 96): ``background`` plus 16 squares of 10 px, ``contrast`` above it, on a 4 × 4 grid."""
    image = np.array(np.broadcast_to(background, (2, 96, 96)), dtype=np.float32)
    for y in range(4):
        for x in range(4):
            image[:, 8 + 24 * y : 18 + 24 * y, 8 + 24 * x : 18 + 24 * x] += contrast
    return image


def test_a_dark_clean_background_is_left_as_it_is():
    image = _nuclei_field(np.full((96, 96), 10.0), contrast=200.0)
    assert flatten_background(image, window=40, only_if_dominant=True) is image
    assert not np.array_equal(flatten_background(image, window=40), image)


def test_a_background_swinging_more_than_the_nuclei_stand_out_is_flattened():
    y, x = np.mgrid[0:96, 0:96]
    illumination = 1000.0 + 3.0 * x + 40.0 * np.sin(y / 2.0)  # a 285-unit ramp and 80-unit stripes
    image = _nuclei_field(illumination, contrast=60.0)
    flat = flatten_background(image, window=40, only_if_dominant=True)
    np.testing.assert_array_equal(flat, flatten_background(image, window=40))


def test_auto_in_the_pipeline_leaves_a_clean_stack_untouched():
    image = _nuclei_field(np.full((96, 96), 10.0), contrast=200.0)
    assert prepared_image(image, SegmentParams(flatten="auto"), (1.0, 1.0, 1.0)) is image


def test_the_cli_words_map_to_the_params_values():
    import argparse

    from fveseg.cli.segment import add_arguments, options_from_args
    from fveseg.params import flatten_name

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    for word, value in (("auto", "auto"), ("on", True), ("off", False)):
        params = options_from_args(parser.parse_args(["x.tif", "--flatten", word]))
        assert params.flatten == value and flatten_name(params.flatten) == word
    assert options_from_args(parser.parse_args(["x.tif"])).flatten == SegmentParams().flatten


def test_a_bad_flatten_value_is_refused_before_any_work():
    from fveseg.errors import InputError
    from fveseg.io.preflight import check_params

    check_params(SegmentParams(flatten="auto"))
    with pytest.raises(InputError, match="--flatten auto"):
        check_params(SegmentParams(flatten="yes"))


def test_a_sample_of_planes_judges_a_lazy_volume(tmp_path):
    import zarr

    from fveseg.normalize.background import background_dominates_in

    y, x = np.mgrid[0:96, 0:96]
    striped = _nuclei_field(1000.0 + 3.0 * x + 40.0 * np.sin(y / 2.0), contrast=60.0)
    clean = _nuclei_field(np.full((96, 96), 10.0), contrast=200.0)
    for image, expected in ((striped, True), (clean, False)):
        array = zarr.create_array(str(tmp_path / f"{expected}.zarr"), shape=image.shape, dtype=image.dtype)
        array[:] = image
        assert background_dominates_in(array, (1.0, 0.5, 0.5)) is expected


def test_block_mode_refuses_to_skip_a_needed_flattening(tmp_path):
    from fveseg.distributed import segment_zarr_in_blocks
    from fveseg.errors import InputError
    from fveseg.io import write_labels_zarr
    from fveseg.pipeline import SegmentJob

    y, x = np.mgrid[0:96, 0:96]
    image = _nuclei_field(1000.0 + 3.0 * x + 40.0 * np.sin(y / 2.0), contrast=60.0)
    path = tmp_path / "striped.ome.zarr"
    write_labels_zarr(path, np.zeros(image.shape, np.uint32), "truth", image=image, spacing=(1.0, 0.5, 0.5))
    job = SegmentJob(path, tmp_path / "out.zarr", "zarr")
    with pytest.raises(InputError, match="--flatten off"):
        segment_zarr_in_blocks(None, job, SegmentParams(flatten="auto", axis=0), block_slices=8)
    assert not (tmp_path / "out.zarr").exists()


def test_the_note_says_when_auto_flattened():
    from fveseg.pipeline import flatten_notes

    assert flatten_notes(SegmentParams(flatten="auto"), True, "a.tif")[0].startswith("a.tif: its background")
    assert "--flatten off" in flatten_notes(SegmentParams(flatten="auto"), True, "a.tif")[0]
    assert flatten_notes(SegmentParams(flatten="auto"), False, "a.tif") == []
    assert flatten_notes(SegmentParams(flatten=True), True, "a.tif") == []  # asked for: nothing to say


def test_blocks_of_planes_give_the_whole_volume_answer():
    from fveseg.normalize.background import PLANES_PER_BLOCK, _flatten_planes

    rng = np.random.default_rng(1)
    depth = 2 * PLANES_PER_BLOCK + 3  # a last, shorter block too
    y, x = np.mgrid[0:64, 0:64]
    volume = (500.0 + 2.0 * x + 30.0 * np.sin(y / 2.0) + rng.normal(0, 5.0, (depth, 64, 64))).astype(
        np.float32
    )
    whole, _ = _flatten_planes(volume, 24)
    np.testing.assert_array_equal(flatten_background(volume, window=24), whole)
