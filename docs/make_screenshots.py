"""Regenerate the screenshots in docs/screenshots/ by driving napari headlessly.

Run from the repository root (a virtual X display gives napari an OpenGL canvas; Qt's "offscreen"
platform has none and renders black)::

    xvfb-run -a python docs/make_screenshots.py

It opens the plugin's sample, runs the segmentation widget and the FVE visualiser exactly as a user
would, and saves window screenshots plus the visualiser's layers as plain images. Without an installed
default model it segments with a small randomly initialised checkpoint, so the masks in
``segment.png`` show the workflow, not accuracy (the caption in the guide says so).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "screenshots"
# The widget's default settings, not the ones this machine's user saved last.
os.environ.setdefault("FVESEG_CONFIG_DIR", tempfile.mkdtemp(prefix="fveseg-screenshots-"))


def _wait(app, condition, timeout: float = 600.0) -> None:
    start = time.perf_counter()
    while not condition():
        app.processEvents()
        time.sleep(0.01)
        if time.perf_counter() - start > timeout:
            raise TimeoutError("napari did not finish in time")
    for _ in range(20):  # let the canvas draw the last change
        app.processEvents()
        time.sleep(0.01)


def _shoot(viewer, app, name: str) -> None:
    """Window screenshot without notification toasts (napari's private widget class; docs only)."""
    try:
        from napari._qt.dialogs.qt_notification import NapariQtNotification

        for toast in viewer.window._qt_window.findChildren(NapariQtNotification):
            toast.close()
    except ImportError:  # another napari version: the toast may show, nothing else changes
        pass
    _wait(app, lambda: True)
    viewer.screenshot(str(OUT / name), canvas_only=False, flash=False)


def _save_rgb(array: np.ndarray, path: Path, scale: int = 3) -> None:
    from PIL import Image

    big = np.repeat(np.repeat(array, scale, axis=0), scale, axis=1)
    Image.fromarray(big).save(path)


def _colourised(distances: np.ndarray, top: int) -> np.ndarray:
    from napari.utils.colormaps import ensure_colormap

    rgba = ensure_colormap("turbo").map(((distances - 0.5) / top).ravel())
    return (rgba[:, :3].reshape(*distances.shape, 3) * 255).astype(np.uint8)


def _checkpoint(folder: Path) -> str:
    """The installed default model, else a small random one saved in `folder` (workflow only)."""
    from fveseg.model.checkpoint import checkpoint_paths, default_checkpoint_path

    if checkpoint_paths(default_checkpoint_path())[0].is_file():
        return ""
    import torch

    from fveseg.model import build_model
    from fveseg.model.checkpoint import save_checkpoint

    torch.manual_seed(0)
    path = folder / "random-tiny"
    save_checkpoint(build_model("tiny"), path, {"note": "random weights, screenshots only"})
    return str(path)


def main() -> int:
    import warnings

    warnings.filterwarnings("ignore", message=".*PyQt5 backend is deprecated.*")  # keep toasts out of shots
    import napari

    import fveseg.inference.segmenter  # noqa: F401 - torch stack before the OpenGL canvas (see _widget)
    from napari_fveseg._visualiser import FVEVisualiser
    from napari_fveseg._widget import SegmentationWidget

    OUT.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(show=True, title="napari-fveseg")
    viewer.window.resize(1400, 860)
    app = napari.qt.get_qapp()
    viewer.open_sample("napari-fveseg", "nuclei")
    viewer.dims.set_current_step(0, 16)
    viewer.layers["nuclei (ground truth)"].opacity = 0.45
    _shoot(viewer, app, "sample.png")

    with tempfile.TemporaryDirectory() as tmp:
        widget = SegmentationWidget(viewer)
        viewer.window.add_dock_widget(widget, name="Segment with text prompts")
        widget.layer_box.setCurrentText("synthetic nuclei")
        widget.prompts_edit.setPlainText("nuclei")
        widget.checkpoint_edit.setText(_checkpoint(Path(tmp)))
        widget.device_box.setCurrentText("auto")
        widget.split_check.setChecked(True)
        viewer.layers["nuclei (ground truth)"].visible = False
        widget.run_button.click()
        _wait(app, lambda: widget.worker is None)
        _shoot(viewer, app, "segment.png")

    for layer in list(viewer.layers):
        layer.visible = layer.name == "synthetic nuclei"
    visualiser = FVEVisualiser(viewer)
    viewer.window.add_dock_widget(visualiser, name="FVE visualiser")
    visualiser.layer_box.setCurrentText("synthetic nuclei")
    visualiser.order_box.setValue(2)
    visualiser.allocation_check.setChecked(True)
    visualiser.context_check.setChecked(True)
    viewer.reset_view()
    _wait(app, lambda: "FVE context" in viewer.layers)
    _shoot(viewer, app, "fve-visualiser.png")

    # The visualiser's own layers as images for docs/user-guide.md's FVE section.
    for order in (1, 2, 3):
        visualiser.order_box.setValue(order)
        _wait(app, lambda o=order: f"FVE k={o}" in viewer.layers)
        _save_rgb(viewer.layers[f"FVE k={order}"].data, OUT / f"fve-k{order}.png")
        distances = viewer.layers["FVE allocation"].data.astype(int)
        _save_rgb(_colourised(distances, int(distances.max())), OUT / f"allocation-k{order}.png")
    lo, hi = viewer.layers["synthetic nuclei"].contrast_limits
    grey = (np.clip((viewer.layers["FVE context"].data - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)
    _save_rgb(np.repeat(grey[..., None], 3, axis=2), OUT / "context-k3.png")
    viewer.close()
    print(f"wrote {len(list(OUT.glob('*.png')))} images to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
