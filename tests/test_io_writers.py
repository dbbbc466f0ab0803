"""fveseg.io writers: OME-Zarr / OME-TIFF label round trips, other readers, atomicity, bounded memory."""

import os

import numpy as np
import pytest

from fveseg.errors import InputError, OutputExistsError
from fveseg.io import atomic_path, read_labels, read_volume, write_labels_tiff, write_labels_zarr
from fveseg.io.zarr_io import plan_levels

SPACING = (2.0, 0.5, 0.5)


@pytest.fixture
def labels():
    ids = np.zeros((3, 140, 130), np.uint16)
    ids[0:2, 5:60, 10:50] = 3
    ids[:, 70:, 60:] = 7
    ids[2, 0:4, 0:4] = 12
    return ids


def _entries(folder):
    return sorted(p for p in os.listdir(folder))


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_zarr_round_trip_ids_names_colors_spacing(tmp_path, labels, version):
    out = write_labels_zarr(
        tmp_path / "seg.ome.zarr",
        labels,
        "nuclei",
        spacing=SPACING,
        class_names={3: "nuclei", 7: "cells"},
        colors={3: (255, 0, 0, 255)},
        ngff_version=version,
    )
    read, meta = read_labels(out)
    assert read.dtype == np.uint32
    np.testing.assert_array_equal(np.asarray(read), labels)
    assert meta["class_names"] == {3: "nuclei", 7: "cells"}
    assert meta["colors"][3] == (255, 0, 0, 255) and set(meta["colors"]) == {3, 7, 12}
    assert meta["spacing"] == SPACING and meta["unit"] == "micrometer"
    assert meta["version"] == version and meta["levels"] == 2  # 140 -> 70 ≥ 64, then 35 < 64 stops
    assert _entries(tmp_path) == ["seg.ome.zarr"]  # no temporary left beside it


def test_pyramid_is_strided_nearest_and_keeps_z_for_anisotropic(tmp_path, labels):
    import zarr

    write_labels_zarr(tmp_path / "seg.ome.zarr", labels, "ids", spacing=SPACING)
    group = zarr.open_group(str(tmp_path / "seg.ome.zarr/labels/ids"), mode="r")
    np.testing.assert_array_equal(group["1"][:], labels[:, ::2, ::2])
    scales = [d["coordinateTransformations"][0]["scale"] for d in group.attrs["multiscales"][0]["datasets"]]
    assert scales == [[2.0, 0.5, 0.5], [2.0, 1.0, 1.0]]


def test_plan_levels_by_hand():
    assert plan_levels((5, 300, 260), (2.0, 0.5, 0.5), None) == [(1, 1, 1), (1, 2, 2), (1, 4, 4)]
    # isotropic: z halves with y, x; z 1.0 ≤ 0.5*2 after the first level in the anisotropic-ish case
    assert plan_levels((64, 512, 512), (1.0, 1.0, 1.0), None)[:3] == [(1, 1, 1), (2, 2, 2), (4, 4, 4)]
    assert plan_levels((64, 512, 512), (1.0, 0.5, 0.5), None)[:3] == [(1, 1, 1), (1, 2, 2), (2, 4, 4)]
    assert plan_levels((64, 512, 512), None, 2) == [(1, 1, 1), (1, 2, 2)]
    assert plan_levels((4, 100, 100), None, None) == [(1, 1, 1)]


def test_ome_zarr_reader_finds_the_label_node(tmp_path, labels):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    out = write_labels_zarr(
        tmp_path / "seg.ome.zarr", labels, "nuclei", spacing=SPACING, class_names={3: "nuclei"}
    )
    nodes = list(Reader(parse_url(str(out)))())
    label_nodes = [n for n in nodes if n.metadata.get("name") == "nuclei"]
    assert len(label_nodes) == 1
    node = label_nodes[0]
    np.testing.assert_array_equal(node.data[0].compute(), labels)
    assert node.metadata["properties"] == {3: {"class": "nuclei"}}
    assert set(node.metadata["color"]) == {3, 7, 12}
    assert node.metadata["coordinateTransformations"][0][0]["scale"] == list(SPACING)


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_napari_ome_zarr_opens_labels_only_container(tmp_path, labels, version):
    reader_module = pytest.importorskip("napari_ome_zarr._reader")
    out = write_labels_zarr(
        tmp_path / "seg.ome.zarr",
        labels,
        "nuclei",
        spacing=SPACING,
        class_names={7: "cells"},
        ngff_version=version,
    )
    layers = reader_module.napari_get_reader(str(out))()
    kinds = {kind: (data, meta) for data, meta, kind in layers}
    data, meta = kinds["labels"]
    np.testing.assert_array_equal(np.asarray(data[0]), labels)
    assert meta["scale"] == list(SPACING)
    assert meta["properties"] == {"class": ["cells"], "index": [7]}
    assert set(meta["colormap"]) == {3, 7, 12}
    assert np.asarray(kinds["image"][0][0]).max() == 0  # the chunk-less placeholder image
    assert not os.path.exists(tmp_path / "zarr.json")  # reading created nothing beside it


def test_into_existing_image_group_updates_labels_list(tmp_path, labels):
    import zarr
    from ome_zarr.writer import write_image

    root = zarr.open_group(str(tmp_path / "img.ome.zarr"), mode="w")
    write_image(
        labels.astype(np.uint8),
        root,
        axes="zyx",
        scale={"z": 2.0, "y": 0.5, "x": 0.5},
        axes_units={"z": "micrometer", "y": "micrometer", "x": "micrometer"},
    )
    write_labels_zarr(tmp_path / "img.ome.zarr", labels, "first")
    write_labels_zarr(tmp_path / "img.ome.zarr", labels > 5, "second")
    volume = read_volume(tmp_path / "img.ome.zarr")
    assert list(volume.labels) == ["first", "second"]
    _, meta = read_labels(tmp_path / "img.ome.zarr", "first")
    assert meta["spacing"] == SPACING and meta["version"] == "0.5"  # spacing and format from the image
    with pytest.raises(OutputExistsError, match="overwrite=True"):
        write_labels_zarr(tmp_path / "img.ome.zarr", labels, "first")
    write_labels_zarr(tmp_path / "img.ome.zarr", labels * 0 + 9, "first", overwrite=True)
    assert int(np.asarray(read_labels(tmp_path / "img.ome.zarr", "first")[0]).max()) == 9
    assert read_volume(tmp_path / "img.ome.zarr").labels.keys() == {"first", "second"}
    assert [e for e in _entries(tmp_path / "img.ome.zarr/labels") if e.startswith(".") and "tmp" in e] == []
    with pytest.raises(InputError, match="several label images"):
        read_labels(tmp_path / "img.ome.zarr")


def test_image_written_as_parent(tmp_path, labels):
    image = (labels * 10).astype(np.uint16)
    out = write_labels_zarr(tmp_path / "both.ome.zarr", labels, "seg", spacing=SPACING, image=image)
    volume = read_volume(out)
    np.testing.assert_array_equal(volume.data.compute(), image)
    np.testing.assert_array_equal(volume.labels["seg"].compute(), labels)


class _FailingSource:
    """Array-like that raises after a number of block reads (a crash mid-write)."""

    def __init__(self, array, fail_after):
        self.array, self.fail_after, self.reads = array, fail_after, 0
        self.shape, self.dtype, self.ndim = array.shape, array.dtype, array.ndim

    def __getitem__(self, region):
        self.reads += 1
        if self.reads > self.fail_after:
            raise RuntimeError("disk on fire")
        return self.array[region]


def test_failure_mid_write_leaves_nothing(tmp_path, labels):
    source = _FailingSource(labels, fail_after=1)
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_labels_zarr(tmp_path / "seg.ome.zarr", source, chunks=(1, 64, 64), block_bytes=4096)
    assert source.reads == 2 and _entries(tmp_path) == []


def test_failure_during_overwrite_keeps_old_output(tmp_path, labels):
    out = write_labels_zarr(tmp_path / "seg.ome.zarr", labels, "ids")
    with pytest.raises(OutputExistsError, match="overwrite=True"):
        write_labels_zarr(out, labels * 0, "ids")
    with pytest.raises(RuntimeError):
        write_labels_zarr(
            out, _FailingSource(labels * 0, 1), "ids", overwrite=True, block_bytes=4096, chunks=(1, 64, 64)
        )
    np.testing.assert_array_equal(np.asarray(read_labels(out)[0]), labels)
    assert _entries(tmp_path) == ["seg.ome.zarr"]


class _RecordingSource(_FailingSource):
    def __init__(self, array):
        super().__init__(array, fail_after=10**9)
        self.largest = 0

    def __getitem__(self, region):
        block = super().__getitem__(region)
        self.largest = max(self.largest, block.nbytes)
        return block


def test_large_lazy_labels_are_written_in_bounded_blocks(tmp_path):
    import dask.array as da

    rng = np.random.default_rng(0)
    full = rng.integers(0, 50, size=(12, 256, 256), dtype=np.uint32)  # 3 MiB
    budget = 256 * 1024
    recorded = _RecordingSource(full)
    write_labels_zarr(tmp_path / "big.ome.zarr", recorded, "ids", chunks=(2, 64, 64), block_bytes=budget)
    assert recorded.largest <= budget and recorded.reads == full.nbytes // budget
    np.testing.assert_array_equal(np.asarray(read_labels(tmp_path / "big.ome.zarr")[0]), full)
    lazy = da.from_array(full, chunks=(4, 128, 128))
    write_labels_zarr(tmp_path / "dask.ome.zarr", lazy, "ids", chunks=(2, 64, 64), block_bytes=budget)
    read, meta = read_labels(tmp_path / "dask.ome.zarr")
    np.testing.assert_array_equal(np.asarray(read), full)
    assert meta["levels"] == 3 and set(meta["colors"]) == set(range(1, 50))


def test_tiff_round_trip_and_lazy_source(tmp_path, labels):
    import dask.array as da

    out = write_labels_tiff(tmp_path / "seg.ome.tif", labels, spacing=SPACING, class_names={7: "cells"})
    read, meta = read_labels(out)
    assert read.dtype == np.uint32
    np.testing.assert_array_equal(read, labels)
    assert meta["spacing"] == SPACING and meta["class_names"] == {7: "cells"}
    assert set(meta["colors"]) == {3, 7, 12}
    write_labels_tiff(tmp_path / "lazy.ome.tif", da.from_array(labels, chunks=(1, 70, 65)))
    np.testing.assert_array_equal(read_labels(tmp_path / "lazy.ome.tif")[0], labels)
    with pytest.raises(OutputExistsError):
        write_labels_tiff(out, labels)
    write_labels_tiff(out, labels[:1], overwrite=True)
    assert read_labels(out)[0].shape == (1, 140, 130)
    assert _entries(tmp_path) == ["lazy.ome.tif", "seg.ome.tif"]


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.ones((2, 3, 3), np.float32), "integer ids"),
        (np.full((2, 3, 3), -1, np.int16), "negative"),
        (np.ones((2, 2, 3, 3), np.uint8), r"\(z, y, x\)"),
        (np.ones((0, 3, 3), np.uint8), "empty"),
    ],
)
def test_bad_labels_are_refused(tmp_path, bad, message):
    with pytest.raises(InputError, match=message):
        write_labels_zarr(tmp_path / "bad.ome.zarr", bad)
    assert _entries(tmp_path) == []


def test_bad_options_are_refused(tmp_path, labels):
    with pytest.raises(InputError, match="plain name"):
        write_labels_zarr(tmp_path / "a.ome.zarr", labels, "../up")
    with pytest.raises(InputError, match="label ids"):
        write_labels_zarr(tmp_path / "a.ome.zarr", labels, class_names={"cells": 3})
    with pytest.raises(InputError, match="0–255"):
        write_labels_zarr(tmp_path / "a.ome.zarr", labels, colors={3: (300, 0, 0)})
    with pytest.raises(InputError, match="does not exist"):
        write_labels_tiff(tmp_path / "missing" / "a.ome.tif", labels)


def test_atomic_path_context_manager(tmp_path):
    target = tmp_path / "out.ome.tif"
    with pytest.raises(ValueError), atomic_path(target) as temporary:
        assert temporary.parent == tmp_path and temporary.name.endswith(".ome.tif")
        temporary.write_text("partial")
        raise ValueError("crash")
    assert _entries(tmp_path) == []
    with atomic_path(target) as temporary:
        temporary.write_text("v1")
    with pytest.raises(OutputExistsError):
        with atomic_path(target):
            pass
    with atomic_path(target, overwrite=True) as temporary:
        temporary.write_text("v2")
    assert target.read_text() == "v2" and _entries(tmp_path) == ["out.ome.tif"]
