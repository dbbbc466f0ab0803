"""fveseg.io readers: every format to (z, y, x) with spacing, and every kind of bad input."""

import json
import pickle

import numpy as np
import pytest
import tifffile

from fveseg.errors import InputError
from fveseg.io import SUPPORTED_EXTENSIONS, read_labels, read_volume


@pytest.fixture
def volume():
    return np.arange(4 * 6 * 5, dtype=np.uint16).reshape(4, 6, 5)


# ---- TIFF -------------------------------------------------------------------------------------------


def test_plain_tiff_stack_and_2d_image(tmp_path, volume):
    tifffile.imwrite(tmp_path / "stack.tif", volume, photometric="minisblack")
    tifffile.imwrite(tmp_path / "plane.tiff", volume[0])
    stack = read_volume(tmp_path / "stack.tif")
    plane = read_volume(tmp_path / "plane.tiff")
    np.testing.assert_array_equal(stack.data, volume)
    assert stack.spacing is None and stack.name == "stack"
    assert plane.data.shape == (1, 6, 5)
    np.testing.assert_array_equal(plane.data[0], volume[0])


def test_ome_tiff_channels_axes_and_physical_size(tmp_path, volume):
    two_channels = np.stack([volume, volume + 1000], axis=1)  # (z, c, y, x)
    tifffile.imwrite(
        tmp_path / "cells.ome.tif",
        two_channels,
        ome=True,
        metadata={
            "axes": "ZCYX",
            "PhysicalSizeX": 250.0,
            "PhysicalSizeXUnit": "nm",
            "PhysicalSizeY": 0.25,
            "PhysicalSizeZ": 2.0,
            "Channel": {"Name": ["dapi", "gfp"]},
        },
    )
    with pytest.raises(InputError, match=r"2 channels: 0 \(dapi\), 1 \(gfp\).*channel="):
        read_volume(tmp_path / "cells.ome.tif")
    gfp = read_volume(tmp_path / "cells.ome.tif", channel="gfp")
    np.testing.assert_array_equal(gfp.data, volume + 1000)
    assert gfp.spacing == (2.0, 0.25, 0.25)  # 250 nm converted to µm
    assert gfp.channel_names == ["dapi", "gfp"] and gfp.name == "cells"
    np.testing.assert_array_equal(read_volume(tmp_path / "cells.ome.tif", channel=0).data, volume)
    with pytest.raises(InputError, match="channel 5 does not exist"):
        read_volume(tmp_path / "cells.ome.tif", channel=5)


def test_imagej_hyperstack_spacing(tmp_path, volume):
    tifffile.imwrite(
        tmp_path / "ij.tif",
        volume[:, None],
        imagej=True,
        resolution=(1 / 0.4, 1 / 0.4),
        metadata={"spacing": 1.5, "unit": "um", "axes": "ZCYX"},
    )
    read = read_volume(tmp_path / "ij.tif")
    np.testing.assert_array_equal(read.data, volume)
    assert read.spacing == pytest.approx((1.5, 0.4, 0.4))


def test_rgb_tiff_needs_a_channel(tmp_path):
    rgb = np.zeros((6, 5, 3), np.uint8)
    rgb[..., 1] = 7
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    with pytest.raises(InputError, match="3 channels.*Choose one"):
        read_volume(tmp_path / "rgb.tif")
    green = read_volume(tmp_path / "rgb.tif", channel=1)
    assert green.data.shape == (1, 6, 5) and np.all(green.data == 7)


def test_time_series_is_refused(tmp_path, volume):
    tifffile.imwrite(
        tmp_path / "movie.ome.tif", np.stack([volume, volume]), ome=True, metadata={"axes": "TZYX"}
    )
    with pytest.raises(InputError, match="time points"):
        read_volume(tmp_path / "movie.ome.tif")


# ---- Zarr / OME-Zarr --------------------------------------------------------------------------------


def test_ome_zarr_image_is_lazy_with_spacing_and_labels(tmp_path, volume):
    import dask.array as da
    import zarr
    from ome_zarr.writer import write_image, write_labels

    root = zarr.open_group(str(tmp_path / "img.ome.zarr"), mode="w")
    write_image(volume, root, axes="zyx", scale_factors=(2,), scale={"z": 3.0, "y": 0.5, "x": 0.5})
    labels = (volume % 3).astype(np.uint32)
    write_labels(
        labels,
        root,
        name="seg",
        axes="zyx",
        scale_factors=(),
        label_metadata={"properties": [{"label-value": 2, "class": "nuclei"}]},
    )
    read = read_volume(tmp_path / "img.ome.zarr")
    assert isinstance(read.data, da.Array)  # opened lazily, not loaded
    np.testing.assert_array_equal(read.data.compute(), volume)
    assert read.spacing == (3.0, 0.5, 0.5)
    assert isinstance(read.labels["seg"], da.Array)
    np.testing.assert_array_equal(read.labels["seg"].compute(), labels)
    assert read.prompts == {2: "nuclei"}


def test_plain_zarr_array(tmp_path, volume):
    import zarr

    zarr.save_array(str(tmp_path / "raw.zarr"), volume)
    read = read_volume(tmp_path / "raw.zarr")
    np.testing.assert_array_equal(np.asarray(read.data), volume)
    assert read.spacing is None


def test_zarr_group_without_image_names_its_entries(tmp_path):
    import zarr

    group = zarr.open_group(str(tmp_path / "plain.zarr"), mode="w")
    group.create_array("volume_a", shape=(2, 2), dtype="u1")
    with pytest.raises(InputError, match="without OME 'multiscales'.*volume_a"):
        read_volume(tmp_path / "plain.zarr")


# ---- npz --------------------------------------------------------------------------------------------


def test_challenge_npz_prompts_and_spacing_order(tmp_path, volume):
    gts = (volume % 4).astype(np.uint8)
    prompts = {"1": "liver", "2": "left kidney", "instance_label": 0}
    np.savez_compressed(
        tmp_path / "ct.npz",
        imgs=volume.astype(np.uint8),
        gts=gts,
        spacing=np.array([0.8, 0.8, 5.0]),
        text_prompts=prompts,
    )
    read = read_volume(tmp_path / "ct.npz")
    np.testing.assert_array_equal(read.data, volume.astype(np.uint8))
    np.testing.assert_array_equal(read.labels["labels"], gts)
    assert read.prompts == {1: "liver", 2: "left kidney"} and not read.instance_label
    assert read.spacing == (5.0, 0.8, 0.8)  # SimpleITK (x, y, z) -> (z, y, x)
    labels, meta = read_labels(tmp_path / "ct.npz")
    assert meta["class_names"] == {1: "liver", 2: "left kidney"}


def test_dev_data_npz(tmp_path, volume):
    np.savez_compressed(
        tmp_path / "nuclei.npz",
        image=volume,
        labels=volume % 2,
        spacing_zyx=np.array([0.29, 0.26, 0.26]),
        class_names=np.array(json.dumps({"instances": "nuclei"})),
    )
    np.savez_compressed(
        tmp_path / "flat.npz",
        image=volume[0],
        spacing_zyx=np.array([np.nan, np.nan]),
        class_names=np.array(json.dumps({"1": "spleen", "5": "liver"})),
    )
    nuclei = read_volume(tmp_path / "nuclei.npz")
    assert nuclei.spacing == (0.29, 0.26, 0.26) and nuclei.instance_label
    assert nuclei.prompts == {1: "nuclei"}
    flat = read_volume(tmp_path / "flat.npz")
    assert flat.data.shape == (1, 6, 5) and flat.spacing is None
    assert flat.prompts == {1: "spleen", 5: "liver"}


class _Exploit:
    def __reduce__(self):
        return (print, ("pickle code ran",))


def test_npz_pickle_cannot_run_code(tmp_path, volume, capsys):
    np.savez(tmp_path / "evil.npz", imgs=volume, text_prompts=np.array([_Exploit()], dtype=object))
    with pytest.raises(InputError, match="text_prompts"):
        read_volume(tmp_path / "evil.npz")
    assert "pickle code ran" not in capsys.readouterr().out


# ---- NIfTI ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_is_transposed_to_zyx(tmp_path, volume, suffix):
    import nibabel

    xyz = volume.transpose(2, 1, 0).astype(np.int16)  # NIfTI order (x, y, z)
    image = nibabel.Nifti1Image(xyz, np.diag([0.7, 0.8, 3.0, 1.0]))
    image.header.set_xyzt_units("mm")
    nibabel.save(image, tmp_path / f"ct{suffix}")
    read = read_volume(tmp_path / f"ct{suffix}")
    np.testing.assert_array_equal(read.data, volume.astype(np.int16))
    assert read.spacing == pytest.approx((3000.0, 800.0, 700.0)) and read.unit == "micrometer"  # mm -> µm
    assert read.name == "ct"


# ---- bad input --------------------------------------------------------------------------------------


def test_unknown_extension_lists_supported(tmp_path):
    (tmp_path / "photo.png").write_bytes(b"\x89PNG")
    listing = ", ".join(SUPPORTED_EXTENSIONS).replace(".", r"\.")
    with pytest.raises(InputError, match="unknown file type.*" + listing):
        read_volume(tmp_path / "photo.png")


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_volume(tmp_path / "absent.tif")


@pytest.mark.parametrize("name", ["cut.tif", "cut.npz", "cut.nii.gz"])
def test_truncated_files(tmp_path, volume, name):
    import nibabel

    full = tmp_path / ("full" + name[3:])
    if name.endswith(".tif"):
        tifffile.imwrite(full, volume, photometric="minisblack")
    elif name.endswith(".npz"):
        np.savez_compressed(full, image=volume)
    else:
        nibabel.save(nibabel.Nifti1Image(volume.astype(np.int16), np.eye(4)), full)
    (tmp_path / name).write_bytes(full.read_bytes()[: len(full.read_bytes()) // 2])
    with pytest.raises(InputError, match="truncated|corrupt"):
        read_volume(tmp_path / name)


def test_corrupt_zarr_metadata(tmp_path):
    folder = tmp_path / "broken.zarr"
    folder.mkdir()
    (folder / "zarr.json").write_text("{not json")
    with pytest.raises(InputError, match="broken.zarr"):
        read_volume(folder)


def test_empty_and_unsupported_dtypes(tmp_path):
    tifffile.imwrite(tmp_path / "empty.tif", np.zeros((0, 4, 4), np.uint8))
    np.savez(tmp_path / "complex.npz", image=np.ones((2, 3, 3), np.complex64))
    np.savez(tmp_path / "text.npz", image=np.array([["a", "b"], ["c", "d"]]))
    np.savez(tmp_path / "mask.npz", image=np.eye(3, dtype=bool))
    with pytest.raises(InputError, match="empty|no image"):
        read_volume(tmp_path / "empty.tif")
    with pytest.raises(InputError, match="complex64.*np.abs"):
        read_volume(tmp_path / "complex.npz")
    with pytest.raises(InputError, match="<U1.*numeric"):
        read_volume(tmp_path / "text.npz")
    mask = read_volume(tmp_path / "mask.npz")  # bool is accepted as a 0/1 uint8 image
    assert mask.data.dtype == np.uint8 and mask.data.sum() == 3


def test_four_dimensional_npz_needs_channel(tmp_path, volume):
    np.savez(tmp_path / "multi.npz", image=np.stack([volume, volume * 2]))
    with pytest.raises(InputError, match="2 channels"):
        read_volume(tmp_path / "multi.npz")
    np.testing.assert_array_equal(read_volume(tmp_path / "multi.npz", channel=1).data, volume * 2)


def test_object_array_npz(tmp_path):
    with open(tmp_path / "objects.npz", "wb") as handle:
        np.savez(handle, image=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(InputError, match="numeric"):
        read_volume(tmp_path / "objects.npz")
    assert pickle  # the stdlib module the exploit test relies on is importable
