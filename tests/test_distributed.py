"""Scale-out on dask.distributed gives the single-process result: many volumes and z-blocks."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")
zarr = pytest.importorskip("zarr")

from fveseg.distributed import merge_block_labels, plan_blocks, split_instances_in_blocks  # noqa: E402


def same_up_to_renumbering(a: np.ndarray, b: np.ndarray) -> bool:
    """True when a and b have the same background and a one-to-one map between their ids."""
    if not np.array_equal(a > 0, b > 0):
        return False
    pairs = np.unique(np.stack([a.ravel(), b.ravel()], 1), axis=0)
    return len(pairs) == len(np.unique(pairs[:, 0])) == len(np.unique(pairs[:, 1]))


@pytest.fixture(scope="module")
def client():
    from fveseg.distributed import connect

    with connect(workers=2, memory_limit="3GiB") as client:
        yield client


def test_plan_blocks_cover_every_slice_once_with_clipped_halo():
    blocks = plan_blocks(10, 4, 2)
    assert [(b.start, b.stop, b.read_start, b.read_stop) for b in blocks] == [
        (0, 4, 0, 6),
        (4, 8, 2, 10),
        (8, 10, 6, 10),
    ]


def test_merge_block_labels_joins_pairs_and_numbers_sequentially():
    # block 0 has ids 1, 2; block 1 has 1, 2, 3; block 2 has 1. 0:2 ~ 1:1, 1:1 ~ 2:1, 1:3 alone.
    # Pairs naming ids absent from a core (0:5, seen only in a margin) are ignored.
    present = [np.array([1, 2]), np.array([1, 2, 3]), np.array([1])]
    tables = merge_block_labels(present, [np.array([[2, 1], [5, 3]]), np.array([[1, 1]])])
    assert [t.tolist() for t in tables] == [[0, 1, 2], [0, 2, 3, 4], [0, 2]]
    # An id missing from a core gets no global id, so the global ids stay sequential.
    tables = merge_block_labels([np.array([2]), np.array([1])], [np.zeros((0, 2), int)])
    assert [t.tolist() for t in tables] == [[0, 0, 1], [0, 2]]


def test_merge_block_labels_without_objects():
    empty = [np.zeros(0, int), np.zeros(0, int)]
    assert [t.tolist() for t in merge_block_labels(empty, [np.zeros((0, 2), int)])] == [[0], [0]]


def instance_source(tmp_path):
    """A pass-1 scratch group of a small procedural volume (true mask, per-slice true edges) and the
    single-process split of it."""
    from scipy import ndimage as ndi

    from fveseg.instances.split import split_instances
    from fveseg.synthetic import make_nuclei_volume

    sample = make_nuclei_volume((24, 48, 48), seed=3)
    truth = sample.labels
    edges = (ndi.grey_dilation(truth, size=3) != ndi.grey_erosion(truth, size=3)) & (truth > 0)
    source = zarr.open_group(str(tmp_path / "pass1.zarr"), mode="w")
    source.create_array("semantic", data=(truth > 0).astype(np.uint8), chunks=(5, 48, 48))
    source.create_array("edges", data=edges[None].astype(np.float32), chunks=(1, 5, 48, 48))
    expected = split_instances(truth > 0, edges.astype(np.float32), spacing=sample.spacing)
    return str(tmp_path / "pass1.zarr"), expected, sample.spacing


def test_blockwise_instances_equal_global_split(client, tmp_path):
    source, expected, spacing = instance_source(tmp_path)
    assert expected.max() > 3  # several objects, some cut by the block boundaries at 5, 10, 15, 20
    crossing = [z for z in (5, 10, 15, 20) if np.intersect1d(expected[z - 1], expected[z]).size > 1]
    assert crossing
    labels, count, margin, cut = split_instances_in_blocks(
        client, source, 0, tmp_path / "scratch.zarr", block_slices=5, margin=12, spacing=spacing
    )
    result = labels.compute()
    assert result.dtype == np.uint32 and count == expected.max()
    assert (margin, cut) == (12, 0)  # every object fits in a block plus 12 slices on each side
    assert same_up_to_renumbering(result, expected)
    assert np.array_equal(np.unique(result), np.arange(result.max() + 1))  # sequential ids


def test_the_margin_grows_until_no_object_is_cut(client, tmp_path):
    source, expected, spacing = instance_source(tmp_path)
    tall = max(np.ptp(np.nonzero((expected == i).any((1, 2)))[0]) + 1 for i in range(1, expected.max() + 1))
    assert tall > 2
    fixed = split_instances_in_blocks(
        client, source, 0, tmp_path / "fixed.zarr", block_slices=5, margin=2, spacing=spacing
    )
    assert fixed.margin == 2 and fixed.cut > 0  # objects span more than a block plus 2 slices each side
    grown = split_instances_in_blocks(
        client, source, 0, tmp_path / "grown.zarr", block_slices=5, margin=2, spacing=spacing, max_margin=32
    )
    assert grown.cut == 0 and grown.margin in (4, 8, 16, 32) and grown.margin < 2 * tall
    assert same_up_to_renumbering(grown.labels.compute(), expected)
    capped = split_instances_in_blocks(
        client, source, 0, tmp_path / "capped.zarr", block_slices=5, margin=1, spacing=spacing, max_margin=2
    )
    assert capped.margin == 2 and capped.cut > 0  # stops at the cap and says so


def test_margin_notes():
    from fveseg.distributed import margin_notes

    assert margin_notes("a.zarr", "nuclei", 16, 16, 0) == []
    assert "raised to 32" in margin_notes("a.zarr", "nuclei", 16, 32, 0)[0]
    (note,) = margin_notes("a.zarr", "nuclei", 16, 64, 3)
    assert "3 'nuclei' objects" in note and "--instance-margin 128" in note


# -- the whole pipeline on workers equals one process ------------------------------------------------------


@pytest.fixture
def one_thread():
    """Single-process references use one torch thread like each worker: CPU float reductions depend on
    the thread count (probabilities then differ by about one float16 ulp, which can flip a voxel at the
    threshold)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from tests.test_cli import micro_checkpoint

    return micro_checkpoint(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def zarr_volume(tmp_path_factory):
    from fveseg.io import write_labels_zarr
    from fveseg.synthetic import make_nuclei_volume

    sample = make_nuclei_volume((16, 32, 32), seed=5)
    path = tmp_path_factory.mktemp("vol") / "big.ome.zarr"
    write_labels_zarr(path, sample.labels, "truth", image=sample.image, spacing=sample.spacing)
    return path


def test_segment_slices_equals_the_segmenter(checkpoint, zarr_volume, whole, one_thread):
    """Block pieces (``Segmenter.run(plan, start=, stop=)`` with the whole volume's plan, pickled as the
    dask path ships it) give the single-process labels and edges, also for a range off the batch grid
    (6..15 with batch size 4)."""
    import pickle

    from fveseg.distributed import segment_slices
    from fveseg.inference import load_segmenter
    from fveseg.io import read_volume
    from fveseg.pipeline import SegmentParams, plan_array

    data = read_volume(zarr_volume).data
    whole, threshold = whole
    segmenter = load_segmenter(str(checkpoint), "cpu", 4)
    # the whole-volume run chose its scale at mask threshold 0.5: fix it (the automatic scale's agreement
    # between block and single runs is test_z_blocks_equal_single_process's)
    options = SegmentParams(
        prompts=("nuclei", "cells"), batch_size=4, mask_threshold=threshold, exist_threshold=0.0,
        resize=whole.scale,
    )  # fmt: skip
    options = replace(options, axis=0)
    plan = pickle.loads(pickle.dumps(plan_array(segmenter, data, options, None)))
    assert (plan.axis, plan.scale) == (0, whole.scale)
    pieces = list(segment_slices(segmenter, data, options, 6, 15, plan))
    assert [(p.start, p.existence.shape[1]) for p in pieces] == [(6, 2), (8, 4), (12, 3)]  # on the grid
    semantic = np.concatenate([p.semantic for p in pieces])
    edges = np.concatenate([p.edges for p in pieces], axis=1)
    assert np.array_equal(semantic, np.asarray(whole.semantic)[6:15])
    assert np.array_equal(edges, np.asarray(whole.edges)[:, 6:15])
    assert 0 < semantic.mean() and not semantic.all()  # labels that could differ


@pytest.fixture(scope="module")
def whole(checkpoint, zarr_volume):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _whole(checkpoint, zarr_volume)
    finally:
        torch.set_num_threads(before)


def _whole(checkpoint, zarr_volume):
    """(single-process result of two prompts, a mask threshold making the random model's mask non-trivial)."""
    from fveseg.inference import load_segmenter
    from fveseg.io import read_volume

    segmenter = load_segmenter(str(checkpoint), "cpu", 4)
    data = read_volume(zarr_volume).data
    result = segmenter.segment(data, ["nuclei", "cells"], axis=0, exist_threshold=0.0)
    threshold = float(np.median(np.asarray(result.probabilities, np.float32)))
    result.semantic = result.rethreshold(threshold, 0.0)
    return result, threshold


def test_z_blocks_equal_single_process(client, checkpoint, zarr_volume, whole, tmp_path, one_thread):
    from fveseg.distributed import segment_zarr_in_blocks
    from fveseg.io import read_labels
    from fveseg.pipeline import SegmentJob, SegmentParams, segment_file

    options = SegmentParams(  # the block mode's exactness holds for the edge-based watershed
        prompts=("nuclei", "cells"),
        instance_method="watershed",
        instances=True,
        checkpoint=str(checkpoint),
        device="cpu",
        batch_size=4,
        axis=0,
        exist_threshold=0.0,
        mask_threshold=whole[1],
    )
    single = segment_file(SegmentJob(zarr_volume, tmp_path / "one.zarr", "zarr"), options)
    blocks_job = SegmentJob(zarr_volume, tmp_path / "blocks.zarr", "zarr")
    blocks = segment_zarr_in_blocks(
        client, blocks_job, options, block_slices=6, instance_margin=16
    )  # rounded up to 8: two blocks
    semantic_one = np.asarray(read_labels(tmp_path / "one.zarr", "semantic")[0])
    semantic_blocks = np.asarray(read_labels(tmp_path / "blocks.zarr", "semantic")[0])
    assert 0.1 < np.mean(semantic_one > 0) < 0.9  # a non-trivial mask
    assert np.array_equal(semantic_blocks, semantic_one)
    for name in ("nuclei", "cells"):
        one = np.asarray(read_labels(tmp_path / "one.zarr", name)[0])
        assert same_up_to_renumbering(np.asarray(read_labels(tmp_path / "blocks.zarr", name)[0]), one)
    assert blocks.objects == single.objects > 0
    assert blocks.resize == single.resize  # the automatic scale: one probe, the same answer
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # scratch removed


def test_z_blocks_apply_the_existence_hysteresis_over_the_whole_volume(
    client, checkpoint, zarr_volume, whole, tmp_path, one_thread
):
    """Slices the hysteresis keeps (their own existence below the threshold) are relabelled across
    blocks exactly as in a single-process run (`regate_blocks`)."""
    from fveseg.distributed import segment_zarr_in_blocks
    from fveseg.io import read_labels
    from fveseg.pipeline import SegmentJob, SegmentParams, segment_file

    result, mask_threshold = whole
    threshold = float(np.median(result.existence))
    options = SegmentParams(
        prompts=("nuclei", "cells"),
        instances=False,
        checkpoint=str(checkpoint),
        device="cpu",
        batch_size=4,
        axis=0,
        resize=result.scale,
        exist_threshold=threshold,
        exist_low=0.0,  # every slice continues a run: all kept where any slice is above the threshold
        mask_threshold=mask_threshold,
    )
    segment_file(SegmentJob(zarr_volume, tmp_path / "one.zarr", "zarr"), options)
    segment_zarr_in_blocks(client, SegmentJob(zarr_volume, tmp_path / "blocks.zarr", "zarr"), options, 4)
    semantic_one = np.asarray(read_labels(tmp_path / "one.zarr", "semantic")[0])
    semantic_blocks = np.asarray(read_labels(tmp_path / "blocks.zarr", "semantic")[0])
    expected = result.rethreshold(mask_threshold, threshold, exist_low=0.0)
    assert np.array_equal(semantic_one, expected)
    assert not np.array_equal(expected, result.rethreshold(mask_threshold, threshold, exist_low=None))
    assert np.array_equal(semantic_blocks, semantic_one)


def test_many_volumes_on_workers_equal_single_process(client, checkpoint, tmp_path, capsys, one_thread):
    import tifffile

    from fveseg.cli import main
    from fveseg.io import read_labels
    from fveseg.synthetic import make_nuclei_volume

    inputs = tmp_path / "in"
    inputs.mkdir()
    for seed in (1, 2, 3):
        tifffile.imwrite(
            inputs / f"v{seed}.tif",
            make_nuclei_volume((8, 32, 32), seed=seed).image,
            metadata={"axes": "ZYX"},
        )
    common = [
        str(inputs),
        "--model",
        str(checkpoint),
        "--instances",
        "--batch-size",
        "4",
        "--exist-threshold",
        "0",
        "--mask-threshold",
        "0.5",
        "--quiet",
    ]
    assert main(["segment", *common, "-o", str(tmp_path / "one")]) == 0
    address = client.scheduler.address
    assert main(["segment", *common, "-o", str(tmp_path / "many"), "--scheduler", address]) == 0
    table = capsys.readouterr().out
    rows = [line.split()[0] for line in table.splitlines() if line.startswith("v") and " nuclei " in line]
    assert rows == ["v1", "v2", "v3"] * 2  # one summary table per run, in input order
    for seed in (1, 2, 3):
        one = np.asarray(read_labels(tmp_path / "one" / f"v{seed}.ome.zarr", "nuclei")[0])
        many = np.asarray(read_labels(tmp_path / "many" / f"v{seed}.ome.zarr", "nuclei")[0])
        assert np.array_equal(one, many)


def test_z_blocks_without_a_model_run_the_network_the_driver_chose_by_noise(client, tmp_path, one_thread):
    from fveseg.distributed import segment_zarr_in_blocks
    from fveseg.io import read_labels, write_labels_zarr
    from fveseg.pipeline import SegmentJob, SegmentParams, segment_file
    from fveseg.synthetic import make_nuclei_volume

    sample = make_nuclei_volume((16, 32, 32), seed=6)
    image = sample.image.astype(np.float32)
    signal = float(np.percentile(image, 99) - np.median(image))
    image += np.random.default_rng(0).normal(0, 0.4 * signal, image.shape).astype(np.float32)
    path = tmp_path / "noisy.ome.zarr"
    write_labels_zarr(path, sample.labels, "truth", image=image, spacing=sample.spacing)
    options = SegmentParams(
        prompts=("nuclei",),
        checkpoint="auto",
        device="cpu",
        batch_size=4,
        axis=0,
        exist_threshold=0.0,
        instance_method="watershed",
    )
    blocks = segment_zarr_in_blocks(
        client,
        SegmentJob(path, tmp_path / "blocks.zarr", "zarr"),
        options,
        block_slices=8,
        instance_margin=16,
    )  # the bundled models: none given
    assert any("the noise-robust model segmented it" in note for note in blocks.notes)
    forced = replace(options, checkpoint="noise-robust")
    segment_file(SegmentJob(path, tmp_path / "forced.zarr", "zarr"), forced)
    semantic = [np.asarray(read_labels(tmp_path / f"{n}.zarr", "nuclei")[0]) for n in ("blocks", "forced")]
    assert np.array_equal(*semantic)


def test_block_mode_says_when_it_splits_with_the_watershed(
    client, checkpoint, zarr_volume, tmp_path, one_thread
):
    from fveseg.distributed import segment_zarr_in_blocks
    from fveseg.pipeline import SegmentJob, SegmentParams

    options = SegmentParams(checkpoint=str(checkpoint), device="cpu", batch_size=4, axis=0)  # method "auto"
    summary = segment_zarr_in_blocks(client, SegmentJob(zarr_volume, tmp_path / "b.zarr", "zarr"), options, 8)
    assert any("block mode splits instances with the edge-based watershed" in note for note in summary.notes)
