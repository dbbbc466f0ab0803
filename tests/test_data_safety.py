"""Never lose a user's data (issue 26): --into-source, --overwrite, interrupts, units, exit codes.

Each test reproduces one reported case by hand and checks the fixed behaviour; refused runs are checked
byte for byte (a checksum of every file under the user's folder before and after) and are refused before
the network runs (`load_segmenter` is replaced by a function that fails the test).
"""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import tempfile
from pathlib import Path

import numpy as np
import pytest
import tifffile

import fveseg.io.atomic
import fveseg.pipeline
from fveseg.cli import main
from fveseg.errors import InputError, OutputExistsError
from fveseg.io import add_labels_to_image, read_labels, read_volume, write_labels_zarr
from fveseg.io.atomic import atomic_path
from fveseg.pipeline import SegmentJob, SegmentParams, segment_file, write_layers


def checksums(folder: Path) -> dict[str, str]:
    """Relative path → sha256 of every file under `folder` (and the folder's entries themselves)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(folder.rglob("*"))
    }


@pytest.fixture
def no_network(monkeypatch):
    """Fail the test if the model is loaded: every refusal here must come before the network runs."""

    def forbidden(*args, **kwargs):
        raise AssertionError("the model was loaded before the refusal")

    monkeypatch.setattr(fveseg.pipeline, "load_segmenter", forbidden)


@pytest.fixture(autouse=True)
def _logs_in_tmp(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("FVESEG_LOG_DIR", str(tmp_path_factory.mktemp("logs")))


@pytest.fixture
def image():
    return np.random.default_rng(0).integers(0, 255, size=(4, 32, 32), dtype=np.uint8)


def ome_image(path: Path, image: np.ndarray, label: str = "cells", **kwargs) -> Path:
    """An OME-Zarr image group holding `image` and one label image `labels/<label>`."""
    return write_labels_zarr(path, (image > 128).astype(np.uint32), label, image=image, **kwargs)


def segment(*args: str) -> int:
    return main(["segment", *args, "--quiet"])


# -- 1. --into-source on a plain Zarr array -----------------------------------------------------------


def test_into_source_overwrite_refuses_a_plain_zarr_array_and_keeps_it(tmp_path, image, no_network, capsys):
    import zarr

    plain = tmp_path / "plain.zarr"
    zarr.create_array(str(plain), shape=image.shape, chunks=(2, 16, 16), dtype=image.dtype)[:] = image
    before = checksums(tmp_path)
    assert segment(str(plain), "--into-source", "--overwrite") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "plain Zarr array" in err and "fix:" in err and err.count("\n") == 1
    assert checksums(tmp_path) == before  # the image and its chunks are untouched, nothing added
    np.testing.assert_array_equal(np.asarray(zarr.open_array(str(plain), mode="r")), image)


@pytest.mark.parametrize("attrs", [{"multiscales": []}, {"multiscales": "0"}, {}])
def test_into_source_refuses_groups_that_are_no_ome_image(tmp_path, image, no_network, capsys, attrs):
    import zarr

    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w", zarr_format=2)
    group.create_array("0", data=image, chunks=(2, 16, 16))
    group.attrs.update(attrs)
    before = checksums(tmp_path)
    assert segment(str(tmp_path / "g.zarr"), "--into-source", "--overwrite") == 2
    assert "fix:" in capsys.readouterr().err and checksums(tmp_path) == before


def test_overwrite_replaces_only_the_label_images_this_run_writes(tmp_path, image):
    source = ome_image(tmp_path / "img.ome.zarr", image, "cells")
    write_labels_zarr(source, np.ones(image.shape, np.uint32), "other")
    image_files = {k: v for k, v in checksums(source).items() if not k.startswith("labels")}
    other = checksums(source / "labels" / "other")
    new = np.full(image.shape, 7, np.uint32)
    add_labels_to_image(source, {"cells": (new, None)}, overwrite=True)
    after = {k: v for k, v in checksums(source).items() if not k.startswith("labels")}
    assert after.keys() == image_files.keys()
    assert all(after[k] == image_files[k] for k in image_files if not k.endswith((".zattrs", "zarr.json")))
    assert checksums(source / "labels" / "other") == other
    np.testing.assert_array_equal(np.asarray(read_labels(source, "cells")[0]), new)
    np.testing.assert_array_equal(np.asarray(read_volume(source).data), image)
    assert not [p for p in source.rglob(".*") if ".tmp-" in p.name or ".old-" in p.name]


# -- 2. a failed --into-source leaves the file byte-identical -------------------------------------------


def test_into_source_clash_is_refused_before_any_write(tmp_path, image, no_network, capsys):
    source = ome_image(tmp_path / "img.ome.zarr", image, "cells")
    before = checksums(tmp_path)
    assert segment(str(source), "--into-source", "-p", "nuclei", "-p", "cells") == 2
    err = capsys.readouterr().err
    assert "cells" in err and "--overwrite" in err and "nothing was written" in err
    assert checksums(tmp_path) == before  # no labels/semantic, no labels/nuclei


class _Failing:
    """A lazy label source whose reads fail after `after` blocks (a disk error mid-write)."""

    def __init__(self, array, error: BaseException, after=0):
        self.array, self.after, self.error, self.shape, self.dtype, self.ndim = (
            array,
            after,
            error,
            array.shape,
            array.dtype,
            array.ndim,
        )

    def __getitem__(self, region):
        if self.after <= 0:
            raise self.error
        self.after -= 1
        return self.array[region]


@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()])
def test_failure_while_adding_several_label_images_leaves_the_file_identical(tmp_path, image, error):
    source = ome_image(tmp_path / "img.ome.zarr", image, "cells")
    before = checksums(tmp_path)
    good = np.ones(image.shape, np.uint32)
    layers = {"semantic": (good, None), "nuclei": (_Failing(good, error=error), None)}
    with pytest.raises(type(error)):
        add_labels_to_image(source, layers)
    assert checksums(tmp_path) == before


@pytest.mark.parametrize("failing_call", [1, 2, 3, 4])
def test_interrupt_during_the_label_renames_restores_the_file(tmp_path, image, monkeypatch, failing_call):
    """Renames 1-3: old cells aside, new cells in, new nuclei in; 4: the listing update after them."""
    import fveseg.io.zarr_io

    source = ome_image(tmp_path / "img.ome.zarr", image, "cells")
    before = checksums(tmp_path)
    calls, real = [], fveseg.io.atomic._rename

    def interrupted(a, b):
        calls.append((a, b))
        if len(calls) == failing_call:
            raise KeyboardInterrupt
        real(a, b)

    monkeypatch.setattr(fveseg.io.atomic, "_rename", interrupted)
    real_publish = fveseg.io.zarr_io._reconsolidate

    def interrupted_publish(*args):
        calls.append(args)
        if len(calls) == failing_call:
            raise KeyboardInterrupt
        real_publish(*args)

    monkeypatch.setattr(fveseg.io.zarr_io, "_reconsolidate", interrupted_publish)
    layers = {
        "cells": (np.full(image.shape, 3, np.uint32), None),
        "nuclei": (np.ones(image.shape, np.uint32), None),
    }
    with pytest.raises(KeyboardInterrupt):
        add_labels_to_image(source, layers, overwrite=True)
    monkeypatch.setattr(fveseg.io.atomic, "_rename", real)
    assert checksums(tmp_path) == before


# -- 3. units are converted, not relabelled -------------------------------------------------------------


def test_nifti_millimetres_become_micrometres_and_stay_so_in_ome_zarr(tmp_path, image):
    import nibabel

    nifti = nibabel.Nifti1Image(image.transpose(2, 1, 0), np.diag([0.5, 0.5, 2.0, 1.0]))
    nifti.header.set_xyzt_units("mm")
    nibabel.save(nifti, tmp_path / "ct.nii.gz")
    volume = read_volume(tmp_path / "ct.nii.gz")
    assert volume.spacing == pytest.approx((2000.0, 500.0, 500.0)) and volume.unit == "micrometer"
    out = write_labels_zarr(tmp_path / "ct.ome.zarr", image > 100, "mask", spacing=volume.spacing)
    _, meta = read_labels(out)
    assert meta["spacing"] == pytest.approx((2000.0, 500.0, 500.0)) and meta["unit"] == "micrometer"


@pytest.mark.parametrize("unit, factor", [("millimeter", 1000.0), ("nanometer", 0.001), ("micrometer", 1.0)])
def test_ome_zarr_units_are_read_in_micrometres(tmp_path, image, unit, factor):
    path = ome_image(tmp_path / "img.ome.zarr", image, spacing=(2.0, 0.5, 0.5), unit=unit)
    volume = read_volume(path)
    assert volume.spacing == pytest.approx((2.0 * factor, 0.5 * factor, 0.5 * factor))
    assert volume.unit == "micrometer"


def test_labels_added_to_a_millimetre_image_are_written_in_its_unit(tmp_path, image):
    path = ome_image(tmp_path / "img.ome.zarr", image, spacing=(2.0, 0.5, 0.5), unit="millimeter")
    spacing_um = read_volume(path).spacing  # (2000, 500, 500)
    add_labels_to_image(path, {"mask": (image > 1, None)}, spacing=spacing_um)
    import zarr

    axes = zarr.open_group(str(path / "labels" / "mask")).attrs["multiscales"][0]
    assert [a["unit"] for a in axes["axes"]] == ["millimeter"] * 3
    assert axes["datasets"][0]["coordinateTransformations"][0]["scale"] == pytest.approx([2.0, 0.5, 0.5])
    assert read_labels(path, "mask")[1]["spacing"] == pytest.approx((2000.0, 500.0, 500.0))


@pytest.mark.parametrize("unit, factor", [("mm", 1000.0), ("nm", 0.001), ("µm", 1.0)])
def test_ome_tiff_physical_size_units_are_converted(tmp_path, image, unit, factor):
    metadata = {"axes": "ZYX", "PhysicalSizeZ": 2.0, "PhysicalSizeY": 0.5, "PhysicalSizeX": 0.5}
    metadata.update({f"PhysicalSize{a}Unit": unit for a in "ZYX"})
    tifffile.imwrite(tmp_path / "a.ome.tif", image, ome=True, metadata=metadata)
    volume = read_volume(tmp_path / "a.ome.tif")
    assert volume.spacing == pytest.approx((2.0 * factor, 0.5 * factor, 0.5 * factor))


# -- 4. exit codes, tracebacks, Ctrl-C and SIGTERM ------------------------------------------------------


def test_internal_error_is_one_line_with_a_log_file(monkeypatch, tmp_path, capsys):
    import fveseg.cli.segment

    def broken(args):
        raise RuntimeError("a bug")

    monkeypatch.setenv("FVESEG_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setattr(fveseg.cli.segment, "run", broken)
    assert main(["segment", "x.tif"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("internal error: RuntimeError: a bug") and err.count("\n") == 1
    assert "Traceback" not in err
    (log,) = (tmp_path / "logs").iterdir()
    assert str(log) in err and "Traceback" in log.read_text() and "a bug" in log.read_text()


def test_full_disk_is_a_one_line_user_error(monkeypatch, capsys):
    import fveseg.cli.segment

    def full(args):
        raise OSError(errno.ENOSPC, "No space left on device", "/data/out.zarr")

    monkeypatch.setattr(fveseg.cli.segment, "run", full)
    assert main(["segment", "x.tif"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: No space left on device (/data/out.zarr)") and err.count("\n") == 1


def test_ctrl_c_during_start_up_imports_exits_130_with_one_line(monkeypatch, capsys):
    import fveseg.cli

    def slow_imports():
        raise KeyboardInterrupt

    monkeypatch.setattr(fveseg.cli, "build_parser", slow_imports)
    assert main(["segment", "x.tif"]) == 130
    err = capsys.readouterr().err
    assert err.startswith("interrupted") and err.count("\n") == 1 and "Traceback" not in err


def test_sigterm_is_handled_like_ctrl_c(monkeypatch, tmp_path, capsys):
    import fveseg.cli.segment

    def killed(args):
        with atomic_path(tmp_path / "out.tif") as temporary:
            temporary.write_text("half")
            os.kill(os.getpid(), signal.SIGTERM)
            raise AssertionError("SIGTERM was not handled")

    monkeypatch.setattr(fveseg.cli.segment, "run", killed)
    before = signal.getsignal(signal.SIGTERM)
    assert main(["segment", "x.tif"]) == 143
    err = capsys.readouterr().err
    assert err.startswith("terminated") and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []  # no hidden temporary left
    assert signal.getsignal(signal.SIGTERM) == before  # the handler is only installed while main runs


# -- 5. interrupts during the final rename --------------------------------------------------------------


def _old_output(path: Path) -> None:
    path.mkdir()
    (path / "old").write_text("old")


@pytest.mark.parametrize("failing_call", [1, 2])
@pytest.mark.parametrize("after_rename", [False, True])
def test_ctrl_c_in_the_final_rename_leaves_old_or_new_and_no_hidden_copy(
    tmp_path, monkeypatch, failing_call, after_rename
):
    target = tmp_path / "out.zarr"
    _old_output(target)
    calls, real = [], fveseg.io.atomic._rename

    def interrupted(a, b):
        calls.append(a)
        if len(calls) == failing_call:
            if after_rename:
                real(a, b)
            raise KeyboardInterrupt
        real(a, b)

    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target, overwrite=True) as temporary:
            temporary.mkdir()
            (temporary / "new").write_text("new")
            monkeypatch.setattr(fveseg.io.atomic, "_rename", interrupted)
    monkeypatch.setattr(fveseg.io.atomic, "_rename", real)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.zarr"]  # no .old-*, no .tmp-*
    assert sorted(p.name for p in target.iterdir()) in (["old"], ["new"])  # never both


def test_ctrl_c_while_the_old_output_is_deleted_finishes_deleting_it(tmp_path, monkeypatch):
    import shutil

    target = tmp_path / "out.zarr"
    _old_output(target)
    real, calls = shutil.rmtree, []

    def interrupted(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 1:
            real(Path(path) / "old", *args, **kwargs) if (Path(path) / "old").is_dir() else None
            raise KeyboardInterrupt
        real(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", interrupted)
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target, overwrite=True) as temporary:
            temporary.mkdir()
            (temporary / "new").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.zarr"]
    assert [p.name for p in target.iterdir()] == ["new"]


def test_real_sigint_during_the_commit_is_held_until_it_is_done(tmp_path, monkeypatch):
    target = tmp_path / "out.zarr"
    _old_output(target)
    real = fveseg.io.atomic._rename

    def signalled(a, b):  # a real SIGINT arrives in the middle of the swap
        os.kill(os.getpid(), signal.SIGINT)
        real(a, b)

    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target, overwrite=True) as temporary:
            temporary.mkdir()
            (temporary / "new").write_text("new")
            monkeypatch.setattr(fveseg.io.atomic, "_rename", signalled)
    monkeypatch.setattr(fveseg.io.atomic, "_rename", real)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.zarr"]
    assert [p.name for p in target.iterdir()] == ["new"]


def test_tiff_set_is_all_or_nothing_on_a_full_disk(tmp_path, image, monkeypatch):
    import fveseg.io

    layers = {name: (np.ones(image.shape, np.uint32), {}) for name in ("semantic", "nuclei", "cells")}
    job = SegmentJob(source=tmp_path / "in.tif", output=tmp_path / "out.tif", fmt="tiff", overwrite=True)
    write_layers(job, layers, None)  # the earlier output set
    before = checksums(tmp_path)
    real, calls = fveseg.io.write_labels_tiff, []

    def full(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(fveseg.io, "write_labels_tiff", full)
    with pytest.raises(OSError):
        write_layers(job, {k: (v * 2, n) for k, (v, n) in layers.items()}, None)
    assert checksums(tmp_path) == before  # the old set, whole; no new file, no hidden file


# -- 6. cheap checks before the network -----------------------------------------------------------------


def _tif(tmp_path: Path, image: np.ndarray) -> Path:
    tifffile.imwrite(tmp_path / "vol.tif", image, metadata={"axes": "ZYX"})
    return tmp_path / "vol.tif"


@pytest.mark.parametrize(
    "extra, message",
    [
        (["-o", "out.xyz"], "not a zarr output suffix"),
        (["-o", "missing/out.zarr"], "does not exist"),
        (["--min-size", "-5"], "--min-size must be 0 or more"),
        (["-o", "vol.tif", "--overwrite", "--format", "tiff"], "would replace the input"),
    ],
)
def test_mistakes_are_refused_before_the_network(
    tmp_path, image, no_network, capsys, monkeypatch, extra, message
):
    monkeypatch.chdir(tmp_path)
    source = _tif(tmp_path, image)
    before = checksums(tmp_path)
    assert segment(str(source), *extra) == 2
    err = capsys.readouterr().err
    assert message in err and "fix:" in err and err.count("\n") == 1
    assert checksums(tmp_path) == before


# -- 7. a huge declared volume is not loaded whole -----------------------------------------------------


def test_huge_lazy_volume_is_refused_with_its_size_and_the_block_mode(tmp_path, no_network):
    import zarr

    huge = tmp_path / "huge.zarr"
    zarr.create_array(str(huge), shape=(10000, 10000, 10000), chunks=(64, 1024, 1024), dtype=np.uint8)
    job = SegmentJob(source=huge, output=tmp_path / "out.ome.zarr", fmt="zarr")
    with pytest.raises(InputError, match=r"1,000,000,000,000 voxels.*--workers N --block-slices 64"):
        segment_file(job, SegmentParams())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["huge.zarr"]


# -- 8. a FIFO named like a TIFF ------------------------------------------------------------------------


def test_fifo_named_tif_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "x.tif"
    os.mkfifo(fifo)
    previous = signal.signal(signal.SIGALRM, lambda *a: pytest.fail("reading the FIFO blocked"))
    signal.alarm(20)
    try:
        with pytest.raises(InputError, match="not a regular file"):
            read_volume(fifo)
        assert segment(str(fifo)) == 2
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_existing_label_clash_error_type_for_the_api(tmp_path, image):
    source = ome_image(tmp_path / "img.ome.zarr", image, "cells")
    with pytest.raises(OutputExistsError, match="nothing was written"):
        add_labels_to_image(source, {"cells": (np.ones(image.shape, np.uint32), None)})


@pytest.mark.parametrize("device", ["banana", "cuda:7", "mps"])
def test_unusable_devices_are_user_errors(device):
    import torch

    from fveseg.inference.segmenter import select_device

    if device == "mps" and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    with pytest.raises(InputError, match="fix|GPU"):
        select_device(device)


def test_an_order_too_high_for_the_slices_is_refused_before_the_network():
    from tests.test_cli import micro_checkpoint

    from fveseg.inference import Segmenter

    segmenter = Segmenter(micro_checkpoint(Path(tempfile.mkdtemp())), device="cpu")
    with pytest.raises(InputError, match="--order 1"):
        segmenter.segment(np.zeros((4, 16, 16), np.float32), ["nuclei"], order=50, scale=1.0)


def test_a_one_voxel_tiff_is_read_as_a_stack_not_a_crash(tmp_path):
    # tifffile names this file's axes "XYX"; the reader falls back to (z, y, x)
    path = tmp_path / "one.tif"
    tifffile.imwrite(path, np.full((1, 1, 1), 7, np.uint16))
    volume = read_volume(path)
    assert np.asarray(volume.data).shape == (1, 1, 1) and int(np.asarray(volume.data)[0, 0, 0]) == 7


def test_a_damaged_zarr_chunk_is_a_user_error_and_writes_nothing(tmp_path, capsys):
    import zarr

    source = tmp_path / "stack.zarr"
    array = zarr.open(str(source), mode="w", shape=(8, 32, 32), chunks=(4, 32, 32), dtype="uint16")
    array[:] = 5
    chunk = next(p for p in source.rglob("*") if p.is_file() and p.name == "0" and p.parent.name == "0")
    chunk.write_bytes(b"not a chunk")
    out = tmp_path / "out.ome.zarr"
    assert main(["segment", str(source), "-p", "nuclei", "-o", str(out)]) == 2
    message = capsys.readouterr().err
    assert "could not be read" in message and "damaged" in message and "Traceback" not in message
    assert not out.exists()


def test_an_eight_byte_integer_tiff_is_written_back_with_its_image(tmp_path):
    from fveseg.io import write_labels_zarr

    # tifffile hands 8-byte integers over as numpy.ulonglong, which zarr refuses unless normalised
    path = tmp_path / "u64.tif"
    tifffile.imwrite(path, np.arange(6 * 16 * 16, dtype=np.uint64).reshape(6, 16, 16))
    image = np.asarray(read_volume(path).data)
    out = tmp_path / "out.ome.zarr"
    write_labels_zarr(out, np.zeros(image.shape, np.uint32), "nuclei", image=image)
    np.testing.assert_array_equal(np.asarray(read_volume(out).data), image)


def test_a_four_slice_stack_saved_as_rgba_samples_says_how_to_resave_it(tmp_path):
    import tifffile

    from fveseg.errors import InputError
    from fveseg.io import read_volume

    path = tmp_path / "four.tif"
    tifffile.imwrite(path, np.zeros((4, 16, 16), np.uint8), photometric="rgb", planarconfig="separate")
    with pytest.raises(InputError, match=r"4 channels.*4 z-slices rather than colours.*minisblack"):
        read_volume(path)
    resaved = tmp_path / "resaved.tif"
    tifffile.imwrite(resaved, np.zeros((4, 16, 16), np.uint8), photometric="minisblack")
    assert read_volume(resaved).data.shape == (4, 16, 16)


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["evaluate", "--pred", "a.tif", "--gt", "a.tif", "--tolerance", "-1"],
            "--tolerance: must be 0 or more",
        ),
        (
            ["evaluate", "--pred", "a.tif", "--gt", "a.tif", "--iou", "2"],
            "--iou: must be above 0 and at most 1",
        ),
        (["segment", "a.tif", "b.tif", "-o", "exists.txt"], "2 inputs need a folder"),
    ],
)
def test_option_mistakes_are_user_errors(tmp_path, monkeypatch, capsys, argv, message):
    from fveseg.cli import main

    monkeypatch.chdir(tmp_path)
    for name in ("a.tif", "b.tif"):
        tifffile.imwrite(tmp_path / name, np.zeros((2, 8, 8), np.uint8), metadata={"axes": "ZYX"})
    (tmp_path / "exists.txt").write_text("a user's file")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "fix:" in err and "Traceback" not in err
    assert (tmp_path / "exists.txt").read_text() == "a user's file"


def test_demo_takes_an_existing_checkpoint_file_to_the_loader(tmp_path, capsys):
    from fveseg.cli import main

    fake = tmp_path / "x.ckpt"
    fake.write_bytes(b"not a ckpt")
    assert main(["demo", "--model", str(fake), "--quiet", "-o", str(tmp_path / "demo.zarr")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" not in err and "x.ckpt" in err
    assert not (tmp_path / "demo.zarr").exists()
