"""FVE visualiser: the Fractal Volumetric Encoding of the current slice, as layers that follow the slider.

For the chosen image layer and order k the widget shows, next to the image (same pixel size):

- ``FVE k=<k>``: the encoded RGB image (red = focal slice, green = preceding side, blue = following side)
  that the network sees for the slice under the dims slider, displayed with the image's contrast limits;
- optionally ``FVE channels``: the three channels side by side in grey (focal | before | after);
- optionally ``FVE allocation``: for every pixel of a context channel, the distance in slices of the
  voxel stored there (the paper's Figure 17), with a colour legend and each distance's share of pixels;
- optionally ``FVE context``: the context slices decoded back at their stored resolutions (top row the
  preceding side, bottom row the following side, nearest first).

All encoding and decoding is :mod:`fveseg.fve.encoding`; only the 6k - 3 slices the current slice needs are
read,
so it works on lazy zarr / dask / multiscale layers (level 0). Slicing is along the layer's first axis
that the viewer does not display (z for the usual axial view).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtWidgets import QCheckBox, QComboBox, QFormLayout, QLabel, QSpinBox, QVBoxLayout, QWidget

if TYPE_CHECKING:
    import napari

GAP = 4  # pixels between the tiles placed beside the image


class FVEVisualiser(QWidget):
    """Dock widget: shows the FVE of the current slice of an image layer (see the module docstring)."""

    def __init__(self, viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self._last_key: tuple | None = None
        self.n_updates = 0  # how many times an encoding was computed (tests, benchmarks)

        self.layer_box = QComboBox()
        self.order_box = QSpinBox()
        self.order_box.setRange(0, 5)
        self.order_box.setValue(2)
        self.order_box.setToolTip("Fractal order k: each side packs 3k - 2 slices (k = 1: CT, k = 2: MRI).")
        self.pad_box = QComboBox()
        self.pad_box.addItems(["edge", "reflect"])
        self.channels_check = QCheckBox("channels side by side")
        self.allocation_check = QCheckBox("allocation map (distance per pixel)")
        self.context_check = QCheckBox("decoded context slices")
        self.legend = QLabel()
        self.legend.setWordWrap(True)
        self.status = QLabel()

        form = QFormLayout()
        form.addRow("image layer", self.layer_box)
        form.addRow("order k", self.order_box)
        form.addRow("end padding", self.pad_box)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        for box in (self.channels_check, self.allocation_check, self.context_check):
            layout.addWidget(box)
        layout.addWidget(self.legend)
        layout.addWidget(self.status)
        layout.addStretch(1)

        self._refresh_layers()
        viewer.layers.events.inserted.connect(self._refresh_layers)
        viewer.layers.events.removed.connect(self._refresh_layers)
        viewer.dims.events.current_step.connect(self.update_layers)
        self.layer_box.currentTextChanged.connect(self.update_layers)
        self.order_box.valueChanged.connect(self.update_layers)
        self.pad_box.currentTextChanged.connect(self.update_layers)
        for box in (self.channels_check, self.allocation_check, self.context_check):
            box.toggled.connect(self.update_layers)
        self.update_layers()

    # ------------------------------------------------------------------ layer choice
    def _candidate_layers(self) -> list[Any]:
        from napari.layers import Image

        return [
            layer
            for layer in self.viewer.layers
            if isinstance(layer, Image)
            and not layer.rgb
            and layer.ndim in (2, 3)
            and not layer.metadata.get("fve_visualiser")
        ]

    def _own_layers(self) -> list[Any]:
        return [layer for layer in self.viewer.layers if layer.metadata.get("fve_visualiser")]

    def _refresh_layers(self, event: Any = None) -> None:
        current = self.layer_box.currentText()
        names = [layer.name for layer in self._candidate_layers()]
        self.layer_box.blockSignals(True)
        self.layer_box.clear()
        self.layer_box.addItems(names)
        if current in names:
            self.layer_box.setCurrentText(current)
        self.layer_box.blockSignals(False)
        if current not in names:
            self._last_key = None
            self.update_layers()

    def source_layer(self) -> Any | None:
        name = self.layer_box.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None

    # ------------------------------------------------------------------ current slice
    def current_slice(self, layer: Any) -> tuple[Any, int, int]:
        """(3D data, slicing axis, focal index) of `layer` at the viewer's current dims position."""
        data = layer.data[0] if layer.multiscale else layer.data
        if layer.ndim == 2:
            return data[None], 0, 0
        offset = self.viewer.dims.ndim - layer.ndim
        hidden = [axis - offset for axis in self.viewer.dims.not_displayed if axis >= offset]
        axis = hidden[0] if hidden else 0
        position = layer.world_to_data(self.viewer.dims.point)[axis]
        index = int(np.clip(np.round(position), 0, data.shape[axis] - 1))
        return data, axis, index

    # ------------------------------------------------------------------ update
    def update_layers(self, event: Any = None) -> None:
        """Recompute the FVE layers when the slice, the layer or an option changed."""
        layer = self.source_layer()
        if layer is None:
            self.status.setText("Open or choose an image layer.")
            return
        from fveseg.fve.encoding import allocation_map, decode, encode

        data, axis, index = self.current_slice(layer)
        order, pad = self.order_box.value(), self.pad_box.currentText()
        options = (
            self.channels_check.isChecked(),
            self.allocation_check.isChecked(),
            self.context_check.isChecked(),
        )
        key = (id(layer), axis, index, order, pad, options)
        if key == self._last_key and all(self._find(n) is not None for n in self._wanted_names(options)):
            return
        self._last_key = key
        encoded = encode(data, index, order=order, axis=axis, pad=pad)
        self.n_updates += 1
        lo, hi = (float(c) for c in layer.contrast_limits)
        rgb = np.clip((encoded.astype(np.float32) - lo) / max(hi - lo, 1e-12), 0, 1)
        rgb = (rgb * 255).astype(np.uint8)
        height, width = encoded.shape[:2]
        kept_axes = [a for a in range(3) if a != axis] if layer.ndim == 3 else [0, 1]
        scale = np.asarray(layer.scale)[kept_axes]
        origin = np.asarray(layer.translate)[kept_axes]
        # tiles in pixels from the image's corner: row 0 image | FVE | allocation; row 1 the three
        # channels; the decoded context below whatever is above it, so no tile covers another
        right, below = (0, width + GAP), (height + GAP, 0)
        context_at = (2 * (height + GAP), 0) if options[0] else below
        self._show("FVE", rgb, scale, origin + np.multiply(right, scale), rgb=True)
        self.status.setText(
            f"{layer.name}: slice {index} along axis {axis}, order {order}; FVE colours: red the focal "
            "slice, green the slices before it, blue those after it"
        )
        if options[0]:
            tiles = np.concatenate([_pad_right(encoded[..., c], GAP) for c in range(3)], axis=1)
            at = origin + np.multiply(below, scale)
            self._show("FVE channels", tiles, scale, at, contrast_limits=(lo, hi))
        else:
            self._hide("FVE channels")
        if options[1] and order > 0:
            distances, shares = allocation_map(order, (height, width))
            colormap = "turbo"
            self._show(
                "FVE allocation",
                distances.astype(np.float32),
                scale,
                origin + np.multiply((0, 2 * (width + GAP)), scale),
                colormap=colormap,
                contrast_limits=(0.5, len(shares) + 0.5),
            )
            self.legend.setText(allocation_legend(shares, colormap))
        else:
            self._hide("FVE allocation")
            self.legend.setText("")
        if options[2] and order > 0:
            decoded = decode(encoded, order)
            montage = context_montage(decoded.before, decoded.after)
            self._show(
                "FVE context",
                montage,
                scale,
                origin + np.multiply(context_at, scale),
                contrast_limits=(lo, hi),
            )
        else:
            self._hide("FVE context")
        titles = tile_titles(order, options, (height, width), context_at)
        self._show_titles(titles, scale, origin)

    def _show_titles(self, titles: list[tuple[tuple[float, float], str]], scale: Any, origin: Any) -> None:
        """A title in each tile's top-left corner (a Points layer of invisible points), kept above the
        tiles and updated in place."""
        positions = np.array([position for position, _ in titles], dtype=float).reshape(-1, 2)
        features = {"title": [title for _, title in titles]}
        layer = self._find("FVE titles")
        if layer is not None:
            layer.data, layer.features = positions, features
            layer.scale, layer.translate = scale, origin
        else:
            text = {"string": "{title}", "anchor": "upper_left", "color": "yellow", "size": 9}
            layer = self.viewer.add_points(
                positions, name="FVE titles", features=features, text=text, size=0, scale=scale,
                translate=origin, face_color="transparent", border_color="transparent",
                metadata={"fve_visualiser": "FVE titles"},
            )  # fmt: skip
        index = self.viewer.layers.index(layer)
        if index != len(self.viewer.layers) - 1:  # tiles added later would hide the text
            self.viewer.layers.move(index, len(self.viewer.layers))

    def _wanted_names(self, options: tuple[bool, bool, bool]) -> list[str]:
        names = ["FVE", "FVE titles"]
        names += [n for n, on in zip(("FVE channels", "FVE allocation", "FVE context"), options) if on]
        return names

    def _find(self, role: str) -> Any | None:
        for layer in self._own_layers():
            if layer.metadata.get("fve_visualiser") == role:
                return layer
        return None

    def _show(self, role: str, data: np.ndarray, scale: Any, translate: Any, **kwargs: Any) -> None:
        """Update the layer playing `role` in place (or add it), so the layer list does not churn."""
        name = f"{role} k={self.order_box.value()}" if role == "FVE" else role
        layer = self._find(role)
        if layer is not None and layer.data.shape == data.shape and layer.rgb == kwargs.get("rgb", False):
            layer.data = data
            layer.translate = translate
            layer.name = name
            if "contrast_limits" in kwargs:
                layer.contrast_limits = kwargs["contrast_limits"]
            return
        if layer is not None:
            self.viewer.layers.remove(layer)
        self.viewer.add_image(
            data, name=name, scale=scale, translate=translate, metadata={"fve_visualiser": role}, **kwargs
        )

    def _hide(self, role: str) -> None:
        layer = self._find(role)
        if layer is not None:
            self.viewer.layers.remove(layer)


def tile_titles(
    order: int, options: tuple[bool, bool, bool], shape: tuple[int, int], context_at: tuple[int, int]
) -> list[tuple[tuple[float, float], str]]:
    """(top-left corner in pixels from the image's corner, title) of every tile shown for these options
    (channels, allocation, context); the tiles are laid out as in `FVEVisualiser.update_layers`."""
    height, width = shape
    titles = [((0, width + GAP), f"FVE k={order}")]
    if options[0]:
        names = ("focal", "before", "after")
        titles += [((height + GAP, c * (width + GAP)), name) for c, name in enumerate(names)]
    if options[1] and order > 0:
        titles.append(((0, 2 * (width + GAP)), "allocation"))
    if options[2] and order > 0:
        titles.append((context_at, "context: before (top), after (bottom)"))
    return titles


def _pad_right(image: np.ndarray, gap: int) -> np.ndarray:
    return np.pad(image, ((0, 0), (0, gap)))


def context_montage(before: list[np.ndarray], after: list[np.ndarray]) -> np.ndarray:
    """Context slices at their stored sizes in two rows (before on top, after below), nearest first.

    Parameters
    ----------
    before, after : lists of (h_j, w_j) arrays
        ``fveseg.fve.encoding.decode(...).before`` / ``.after``; sizes shrink by two per pyramid level.

    Returns
    -------
    ndarray (2 * max h + GAP, sum of widths + GAP per tile), the slices' dtype, zeros between tiles.
    """
    height = max(image.shape[0] for image in before)
    width = sum(image.shape[1] + GAP for image in before)
    montage = np.zeros((2 * height + GAP, width), dtype=before[0].dtype)
    for row, side in enumerate((before, after)):
        column = 0
        for image in side:
            top = row * (height + GAP)
            montage[top : top + image.shape[0], column : column + image.shape[1]] = image
            column += image.shape[1] + GAP
    return montage


def allocation_legend(shares: np.ndarray, colormap: str = "turbo") -> str:
    """HTML legend: one coloured square per distance with its share of a context channel's pixels."""
    from napari.utils.colormaps import ensure_colormap

    n = len(shares)
    positions = (np.arange(1, n + 1) - 0.5) / n  # distance d sits at (d - 0.5) / n of the colour range
    colours = ensure_colormap(colormap).map(positions)
    rows = []
    for distance, (share, rgba) in enumerate(zip(shares, colours), start=1):
        hex_colour = "#" + "".join(f"{int(round(c * 255)):02x}" for c in rgba[:3])
        rows.append(f"<span style='color:{hex_colour}'>&#9632;</span> distance {distance}: {share:.1%}")
    return "<b>Allocation map</b> (slices from the focal slice)<br>" + "<br>".join(rows)
