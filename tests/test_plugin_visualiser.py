"""FVE visualiser: the encoded current slice follows the slider, options add layers, reads are lazy."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")

from fveseg.fve.encoding import allocation_map, decode, encode  # noqa: E402
from napari_fveseg._visualiser import FVEVisualiser, context_montage  # noqa: E402


def _display(encoded: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return (np.clip((encoded.astype(np.float32) - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)


def test_encoding_follows_the_slider_and_options_add_layers(make_napari_viewer):
    volume = (np.arange(9 * 16 * 20) % 251).astype(np.uint8).reshape(9, 16, 20)
    viewer = make_napari_viewer()
    image = viewer.add_image(volume, name="stack", scale=(2.0, 0.5, 0.5), contrast_limits=(0, 250))
    widget = FVEVisualiser(viewer)
    widget.order_box.setValue(2)
    viewer.dims.set_current_step(0, 3)
    fve_layer = viewer.layers["FVE k=2"]
    assert fve_layer.rgb and tuple(fve_layer.scale) == (0.5, 0.5)
    np.testing.assert_array_equal(fve_layer.data, _display(encode(volume, 3, order=2), 0, 250))

    viewer.dims.set_current_step(0, 7)  # the slider moves: the layer follows
    np.testing.assert_array_equal(fve_layer.data, _display(encode(volume, 7, order=2), 0, 250))
    updates = widget.n_updates
    viewer.dims.set_current_step(0, 7)  # same slice: nothing recomputed
    assert widget.n_updates == updates

    widget.channels_check.setChecked(True)
    widget.allocation_check.setChecked(True)
    widget.context_check.setChecked(True)
    encoded = encode(volume, 7, order=2)
    channels = viewer.layers["FVE channels"].data
    np.testing.assert_array_equal(channels[:, :20], encoded[..., 0])
    np.testing.assert_array_equal(channels[:, 24:44], encoded[..., 1])
    distances, shares = allocation_map(2, (16, 20))
    np.testing.assert_array_equal(viewer.layers["FVE allocation"].data, distances)
    assert "distance 4: 25.0%" in widget.legend.text()  # order 2: four slices at half resolution
    decoded = decode(encoded, 2)
    np.testing.assert_array_equal(
        viewer.layers["FVE context"].data, context_montage(decoded.before, decoded.after)
    )
    # with every option on, no tile covers another, and each has a title above it
    tiles = [viewer.layers[n] for n in ("FVE k=2", "FVE channels", "FVE allocation", "FVE context")]
    boxes = [
        (*layer.translate, *(layer.translate + np.asarray(layer.data.shape[:2]) * layer.scale))
        for layer in tiles
    ]
    for i, (top, left, bottom, right) in enumerate(boxes):
        for other in boxes[i + 1 :]:
            assert bottom <= other[0] or other[2] <= top or right <= other[1] or other[3] <= left
    titles = viewer.layers["FVE titles"]
    assert len(titles.data) == 6 and "after" in list(titles.features["title"])
    assert viewer.layers[-1] is titles  # above the tiles
    corners = {tuple(np.round(layer.translate, 6)) for layer in tiles}
    title_corners = {tuple(np.round(titles.translate + p * titles.scale, 6)) for p in titles.data}
    assert corners <= title_corners  # every tile's corner carries a title
    widget.allocation_check.setChecked(False)
    assert "FVE allocation" not in viewer.layers
    assert len(viewer.layers["FVE titles"].data) == 5
    assert image in viewer.layers and widget.layer_box.currentText() == "stack"


def test_context_montage_keeps_stored_resolutions():
    before = [np.full((4, 6), 1), np.full((2, 3), 2)]
    after = [np.full((4, 6), 3), np.full((2, 3), 4)]
    montage = context_montage(before, after)
    assert montage.shape == (2 * 4 + 4, 6 + 4 + 3 + 4)
    assert (montage[:4, :6] == 1).all() and (montage[:2, 10:13] == 2).all()
    assert (montage[8:12, :6] == 3).all() and (montage[8:10, 10:13] == 4).all()
    assert montage[2:4, 10:13].sum() == 0  # below a smaller tile stays empty


def test_only_the_slices_needed_are_read_from_a_lazy_volume(make_napari_viewer):
    da = pytest.importorskip("dask.array")
    import dask

    depth, read = 30, []

    def load(z: int) -> np.ndarray:
        read.append(z)
        return np.full((8, 8), z, dtype=np.uint16)

    lazy = da.stack([da.from_delayed(dask.delayed(load)(z), (8, 8), np.uint16) for z in range(depth)])
    viewer = make_napari_viewer()
    viewer.add_image(lazy, name="lazy", contrast_limits=(0, depth))
    viewer.dims.set_current_step(0, 10)
    widget = FVEVisualiser(viewer)
    widget.order_box.setValue(1)
    read.clear()
    viewer.dims.set_current_step(0, 15)
    assert set(read) == {14, 15, 16}  # focal ± 1 for order 1 (napari itself reads slice 15)
