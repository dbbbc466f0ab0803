"""napari plugin shell: manifest, sample data, reader and writers through the viewer."""

from __future__ import annotations

import numpy as np
import pytest

from napari_fveseg._reader import get_reader

pytest.importorskip("napari")
PLUGIN = "napari-fveseg"


def _labels_with_metadata():
    """(4, 6, 5) labels with two ids, explicit colours and class names."""
    from napari.utils.colormaps import DirectLabelColormap

    labels = np.zeros((4, 6, 5), dtype=np.uint32)
    labels[1:3, 1:4, 1:3] = 3
    labels[0, 4:, 3:] = 7
    colors = {3: (1.0, 0.0, 0.0, 1.0), 7: (0.0, 0.5019608, 1.0, 1.0)}
    colormap = DirectLabelColormap(color_dict={None: (0, 0, 0, 0), 0: (0, 0, 0, 0), **colors})
    metadata = {"class_names": {3: "nuclei", 7: "spots"}}
    return labels, colormap, metadata, colors


def _only_labels(layers):
    found = [layer for layer in layers if layer._type_string == "labels"]
    assert len(found) == 1
    return found[0]


def test_manifest_validates_with_imports():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_distribution(PLUGIN)
    manifest.validate_imports()  # raises if a python_name does not import
    assert {w.display_name for w in manifest.contributions.writers} == {
        "OME-Zarr labels (fveseg)",
        "OME-TIFF labels (fveseg)",
    }
    assert manifest.contributions.readers[0].accepts_directories


def test_sample_opens_with_ground_truth_and_is_deterministic(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "nuclei")
    image, labels = viewer.layers
    assert image._type_string == "image" and labels._type_string == "labels"
    assert image.data.shape == labels.data.shape == (32, 128, 128)
    assert labels.data.dtype == np.uint32 and labels.data.max() > 10  # many nuclei
    assert tuple(image.scale) == tuple(labels.scale) == (1.0, 0.5, 0.5)
    viewer.open_sample(PLUGIN, "nuclei")
    np.testing.assert_array_equal(viewer.layers[2].data, image.data)
    np.testing.assert_array_equal(viewer.layers[3].data, labels.data)


@pytest.mark.parametrize("suffix", [".zarr", ".ome.tif"])
def test_labels_round_trip_keeps_ids_colours_names_scale(make_napari_viewer, tmp_path, suffix):
    labels, colormap, metadata, colors = _labels_with_metadata()
    viewer = make_napari_viewer()
    layer = viewer.add_labels(
        labels, name="cells", scale=(2.0, 0.5, 0.25), colormap=colormap, metadata=metadata
    )
    path = tmp_path / f"cells{suffix}"
    viewer.layers.selection = {layer}
    written = viewer.layers.save(str(path), selected=True, plugin=PLUGIN)
    assert written == [str(path)]

    reopened = _only_labels(viewer.open(str(path), plugin=PLUGIN))
    np.testing.assert_array_equal(np.asarray(reopened.data), labels)
    assert tuple(reopened.scale) == (2.0, 0.5, 0.25)
    mapped = reopened.colormap.map(np.array([3, 7]))
    np.testing.assert_allclose(mapped, [colors[3], colors[7]], atol=1 / 255)
    assert reopened.metadata["class_names"] == {3: "nuclei", 7: "spots"}
    assert dict(zip(reopened.features["index"], reopened.features["class_name"])) == {3: "nuclei", 7: "spots"}


def test_save_never_replaces_an_existing_output_silently(make_napari_viewer, tmp_path):
    from fveseg.errors import OutputExistsError

    labels, colormap, metadata, _ = _labels_with_metadata()
    viewer = make_napari_viewer()
    layer = viewer.add_labels(labels, name="cells")
    viewer.layers.selection = {layer}
    path = tmp_path / "cells.ome.tif"
    viewer.layers.save(str(path), selected=True, plugin=PLUGIN)
    before = path.read_bytes()
    layer.data = labels * 2
    with pytest.raises(OutputExistsError, match="already exists"):
        viewer.layers.save(str(path), selected=True, plugin=PLUGIN)
    assert path.read_bytes() == before


def test_labels_saved_into_the_image_zarr_open_with_it(make_napari_viewer, tmp_path):
    from fveseg.io import write_labels_zarr

    image = np.arange(4 * 6 * 5, dtype=np.uint16).reshape(4, 6, 5)
    labels, colormap, metadata, colors = _labels_with_metadata()
    container = write_labels_zarr(
        tmp_path / "img.ome.zarr", labels, name="first", image=image, spacing=(2.0, 0.5, 0.5)
    )
    viewer = make_napari_viewer()
    layers = viewer.open(str(container), plugin=PLUGIN)
    assert [layer._type_string for layer in layers] == ["image", "labels"]
    np.testing.assert_array_equal(np.asarray(layers[0].data), image)
    assert tuple(layers[0].scale) == tuple(layers[1].scale) == (2.0, 0.5, 0.5)

    added = viewer.add_labels(
        labels, name="second", scale=(2.0, 0.5, 0.5), colormap=colormap, metadata=metadata
    )
    viewer.layers.selection = {added}
    viewer.layers.save(str(container), selected=True, plugin=PLUGIN)
    viewer.layers.clear()
    reopened = viewer.open(str(container), plugin=PLUGIN)
    assert [layer.name for layer in reopened] == ["img", "first", "second"]
    np.testing.assert_allclose(reopened[2].colormap.map(np.array([3])), [colors[3]], atol=1 / 255)


def test_npz_opens_with_prompts_as_class_names(tmp_path):
    image = np.random.default_rng(0).integers(0, 255, (3, 8, 8), dtype=np.uint8)
    gts = np.zeros((3, 8, 8), dtype=np.uint8)
    gts[1, 2:5, 2:5] = 1
    gts[2, 5:, 5:] = 2
    path = tmp_path / "case.npz"
    prompts = {"1": "liver", "2": "kidney", "instance_label": 0}
    np.savez(path, imgs=image, gts=gts, spacing=np.array([0.8, 0.8, 2.5]), text_prompts=np.array(prompts))
    (image_data, image_kwargs, image_type), (labels_data, labels_kwargs, labels_type) = get_reader(str(path))(
        str(path)
    )
    assert (image_type, labels_type) == ("image", "labels")
    np.testing.assert_array_equal(labels_data, gts)
    assert labels_kwargs["metadata"]["class_names"] == {1: "liver", 2: "kidney"}
    assert labels_kwargs["features"] == {"index": [1, 2], "class_name": ["liver", "kidney"]}
    assert image_kwargs["scale"] == labels_kwargs["scale"] == (2.5, 0.8, 0.8)


def test_nifti_and_plain_tiff_open_as_images(tmp_path):
    import nibabel
    import tifffile

    volume = np.arange(5 * 6 * 7, dtype=np.int16).reshape(5, 6, 7)
    tifffile.imwrite(tmp_path / "plain.tif", volume)
    nibabel.save(nibabel.Nifti1Image(volume, np.diag([1.0, 1.0, 2.0, 1.0])), tmp_path / "ct.nii.gz")
    ((tiff_data, _, tiff_type),) = get_reader(str(tmp_path / "plain.tif"))(str(tmp_path / "plain.tif"))
    assert tiff_type == "image"
    np.testing.assert_array_equal(tiff_data, volume)
    nifti = str(tmp_path / "ct.nii.gz")
    ((nifti_data, nifti_kwargs, nifti_type),) = get_reader(nifti)(nifti)
    assert nifti_type == "image" and np.asarray(nifti_data).size == volume.size
    assert sorted(nifti_kwargs["scale"]) == [1000.0, 1000.0, 2000.0]  # NIfTI mm shown in µm


def test_reader_declines_other_files(tmp_path):
    assert get_reader(str(tmp_path / "photo.png")) is None
    assert get_reader(str(tmp_path)) is None  # a plain folder, not a zarr store
    assert get_reader([str(tmp_path / "a.tif"), str(tmp_path / "b.png")]) is None
    assert get_reader(str(tmp_path / "a.nii.gz")) is not None


def test_a_save_confirmed_in_napari_dialog_replaces_the_file(tmp_path):
    from fveseg.io import read_labels
    from napari_fveseg._writer import write_labels_tiff

    path = str(tmp_path / "cells.ome.tif")
    first = np.ones((2, 4, 4), dtype=np.uint32)
    write_labels_tiff(path, first, {"name": "cells", "scale": (1.0, 1.0, 1.0)})

    def _save_layers_dialog():  # the name of napari's Save Layers dialog method, which asks first
        return write_labels_tiff(path, first * 5, {"name": "cells", "scale": (1.0, 1.0, 1.0)})

    assert _save_layers_dialog() == [path]
    np.testing.assert_array_equal(read_labels(path)[0], first * 5)
