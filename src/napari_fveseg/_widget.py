"""Segmentation dock widget: text prompts in, Labels layers out, the viewer responsive throughout.

The network runs in a napari ``thread_worker`` generator that yields (slices done, total) so the progress
bar moves; **Cancel** sets a flag the :class:`fveseg.inference.Segmenter` checks before every batch, so a
run stops within one batch and leaves the viewer unchanged. The :class:`SegmentationResult` is kept:
changing a threshold, instance splitting or the output style recomputes the layers from it (in a worker
too) without running the network again. Every failure is a napari notification naming the fix, never a
traceback dialog. Settings are remembered between sessions (:mod:`napari_fveseg._settings`).
"""

from __future__ import annotations

import threading
from collections.abc import Generator
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import QTimer, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from fveseg.errors import CheckpointError
from fveseg.normalize.noise import NOISY_LEVEL
from napari_fveseg._existence_plot import ExistencePlot
from napari_fveseg._results import (
    DEFAULTS,
    Placement,
    Thresholds,
    existence_summary,
    in_widget_words,
    result_layers,
    result_notes,
)
from napari_fveseg._runtime import (
    available_devices,
    checkpoint_exists,
    get_segmenter,
    guard_against_llvm_clash,
    import_core,
    is_loaded,
)
from napari_fveseg._settings import WidgetSettings, load_settings, save_settings

if TYPE_CHECKING:
    import napari

AXES = {"auto": "auto", "z (axial)": 0, "y": 1, "x": 2}
OUTPUTS = ("per prompt", "semantic")


class SegmentationWidget(QWidget):
    """Dock widget running :class:`fveseg.inference.Segmenter` on an image layer (module docstring)."""

    #: Emitted when a run or a re-thresholding has ended (its layers shown, or its error reported) and
    #: Run is enabled again.
    finished = Signal()

    def __init__(self, viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self._cancel = threading.Event()
        self.worker: Any = None
        self.result: Any = None  # the last SegmentationResult, for re-thresholding
        self._run_context: dict | None = None
        self._layers: dict[str, Any] = {}  # result layers this widget added, by name
        self._build_ui()
        self.apply_settings(load_settings())
        self._retune_timer = QTimer(self, singleShot=True, interval=150)
        self._retune_timer.timeout.connect(self.rethreshold)
        # result layers are shown one per turn of the event loop (`_show_layers`)
        self._layer_steps: list = []
        self._finish_when_shown = False
        self._layer_timer = QTimer(self, singleShot=True, interval=0)
        self._layer_timer.timeout.connect(self._next_layer_step)
        for signal in (
            self.mask_box.valueChanged,
            self.exist_box.valueChanged,
            self.split_check.toggled,
            self.min_size_box.valueChanged,
            self.output_box.currentTextChanged,
        ):
            signal.connect(self._schedule_rethreshold)
        viewer.layers.events.inserted.connect(self._refresh_layers)
        viewer.layers.events.removed.connect(self._refresh_layers)
        viewer.dims.events.current_step.connect(self._follow_slider)
        self._refresh_layers()

    # ------------------------------------------------------------------ UI
    def _build_ui(self) -> None:
        self.layer_box = QComboBox()
        self.prompts_edit = QPlainTextEdit()
        self.prompts_edit.setPlaceholderText("one prompt per line, e.g.\nnuclei\ncell membranes")
        self.prompts_edit.setMaximumHeight(70)
        self.checkpoint_edit = QLineEdit()
        self.checkpoint_edit.setPlaceholderText("the bundled default model")
        self.checkpoint_edit.setToolTip(
            "Empty: the bundled default model. Or a bundled model's name ('noise-robust'; 'auto' chooses "
            f"'noise-robust' for a stack whose noise measures {NOISY_LEVEL:g} of its signal range or more), "
            "an fveseg checkpoint (.json / .safetensors) or the BiomedParse v2 .ckpt you downloaded "
            "(see docs/reference-v2.md)."
        )
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse_checkpoint)
        model_row = QHBoxLayout()
        model_row.addWidget(self.checkpoint_edit)
        model_row.addWidget(browse)
        self.device_box = QComboBox()
        self.device_box.addItems(available_devices())
        self.mask_box = _probability_box("Voxels with a mask probability above this are foreground.")
        self.exist_box = _probability_box(
            "Slices whose existence probability is above this keep their mask (0: every slice keeps it)."
        )
        self.split_check = QCheckBox("split into instances")
        self.min_size_box = QDoubleSpinBox()
        self.min_size_box.setRange(0.0, 1e9)
        self.min_size_box.setDecimals(1)
        self.min_size_box.setToolTip("Smallest instance kept, in physical units (µm³ with µm spacing).")
        self.axis_box = QComboBox()
        self.axis_box.addItems(list(AXES))
        self.resize_box = QDoubleSpinBox()
        self.resize_box.setRange(0.0, 4.0)
        self.resize_box.setSingleStep(0.1)
        self.resize_box.setDecimals(2)
        self.resize_box.setSpecialValueText("auto")  # shown at the minimum, 0
        self.resize_box.setValue(0.0)
        self.resize_box.setToolTip(
            "Resample each slice by this factor before the network (results come back at full size). "
            "auto: segment a few slices first, measure the objects and shrink the slices when they are "
            "much larger than the model was trained on (nuclei about 10-40 px across), or enlarge them "
            "1.25x when they measure under 16 px."
        )
        self.output_box = QComboBox()
        self.output_box.addItems(list(OUTPUTS))
        self.output_box.setToolTip("One Labels layer per prompt, or one layer with a class per prompt.")

        form = QFormLayout()
        form.addRow("image", self.layer_box)
        form.addRow("prompts", self.prompts_edit)
        form.addRow("model", model_row)
        form.addRow("device", self.device_box)
        form.addRow("mask threshold", self.mask_box)
        form.addRow("existence threshold", self.exist_box)
        form.addRow(self.split_check)
        form.addRow("min instance size", self.min_size_box)
        form.addRow("view axis", self.axis_box)
        form.addRow("resize", self.resize_box)
        form.addRow("output", self.output_box)

        self.run_button = QPushButton("Run")
        self.run_button.clicked.connect(self.run)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        self.progress = QProgressBar()
        self.progress.setFormat("%v / %m slices")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.existence_plot = ExistencePlot()

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(QLabel("existence probability per slice"))
        layout.addWidget(self.existence_plot)
        layout.addStretch(1)

    def _browse_checkpoint(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Model checkpoint", "", "Model checkpoint (*.json *.safetensors *.ckpt)"
        )
        if path:
            self.checkpoint_edit.setText(path)

    def _refresh_layers(self, event: Any = None) -> None:
        from napari.layers import Image

        current = self.layer_box.currentText()
        names = [
            layer.name
            for layer in self.viewer.layers
            if isinstance(layer, Image)
            and not layer.rgb
            and layer.ndim in (2, 3)
            and not layer.metadata.get("fve_visualiser")
        ]
        self.layer_box.blockSignals(True)
        self.layer_box.clear()
        self.layer_box.addItems(names)
        if current in names:
            self.layer_box.setCurrentText(current)
        self.layer_box.blockSignals(False)
        self._layers = {name: layer for name, layer in self._layers.items() if layer in self.viewer.layers}

    def _no_layer_message(self) -> str:
        """Why no layer can be segmented: none open, or the open ones are RGB or not 2D/3D."""
        from napari.layers import Image

        images = [layer for layer in self.viewer.layers if isinstance(layer, Image)]
        if any(layer.rgb for layer in images):
            return (
                "The open image is RGB: fveseg segments one channel at a time. Split it into channels "
                "(right-click the layer › Split RGB) and choose one in the 'image' box."
            )
        if images:
            return (
                "No 2D or 3D image layer: fveseg segments one (z, y, x) stack or one 2D image at a time. "
                "Split the layer into channels (right-click › Split Stack) or open a single channel."
            )
        return (
            "No image layer to segment: open an image (File › Open, or File › Open Sample › fveseg) and "
            "choose it in the 'image' box."
        )

    # ------------------------------------------------------------------ settings
    def settings(self) -> WidgetSettings:
        """The widget's current choices."""
        return WidgetSettings(
            prompts=self.prompts_edit.toPlainText(),
            checkpoint=self.checkpoint_edit.text().strip(),
            device=self.device_box.currentText(),
            mask_threshold=self.mask_box.value(),
            existence_threshold=self.exist_box.value(),
            split_instances=self.split_check.isChecked(),
            min_size=self.min_size_box.value(),
            output=self.output_box.currentText(),
            axis=self.axis_box.currentText(),
            resize=self.resize_box.value(),
        )

    def apply_settings(self, settings: WidgetSettings) -> None:
        self.prompts_edit.setPlainText(settings.prompts)
        self.checkpoint_edit.setText(settings.checkpoint)
        if settings.device in available_devices():
            self.device_box.setCurrentText(settings.device)
        self.mask_box.setValue(settings.mask_threshold)
        self.exist_box.setValue(settings.existence_threshold)
        self.split_check.setChecked(settings.split_instances)
        self.min_size_box.setValue(settings.min_size)
        if settings.output in OUTPUTS:
            self.output_box.setCurrentText(settings.output)
        if settings.axis in AXES:
            self.axis_box.setCurrentText(settings.axis)
        self.resize_box.setValue(settings.resize)

    def thresholds(self) -> Thresholds:
        return Thresholds(
            self.mask_box.value(),
            self.exist_box.value(),
            self.split_check.isChecked(),
            self.min_size_box.value(),
            self.output_box.currentText(),
        )

    def prompts(self) -> list[str]:
        return [line.strip() for line in self.prompts_edit.toPlainText().splitlines() if line.strip()]

    # ------------------------------------------------------------------ run
    def run(self) -> None:
        """Check the inputs, then segment in a worker thread (the Run button)."""
        from napari.utils.notifications import show_error

        if self.worker is not None:
            return
        name = self.layer_box.currentText()
        if name not in self.viewer.layers:
            show_error(self._no_layer_message())
            return
        prompts = self.prompts()
        if not prompts:
            show_error("No prompt given: type what to segment, one prompt per line (e.g. 'nuclei').")
            return
        checkpoint = self.checkpoint_edit.text().strip() or DEFAULTS.checkpoint
        # torch is imported and the model checked in the worker (`_segment_steps`), after this guard:
        # the click returns at once and the Mesa/triton clash cannot happen
        guard_against_llvm_clash()
        save_settings(self.settings())
        layer = self.viewer.layers[name]
        data = layer.data[0] if layer.multiscale else layer.data
        spacing = tuple(float(s) for s in layer.scale[-3:]) if layer.ndim == 3 else None
        self._run_context = {
            "prompts": prompts,
            "image": data,  # instances are trimmed by its intensity profile (fveseg.instances.haze)
            "place": Placement(tuple(layer.scale), tuple(layer.translate), spacing, squeeze=layer.ndim == 2),
        }
        self._cancel.clear()
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setRange(0, 0)  # busy until the first batch reports
        self.status.setText(
            "Segmenting…" if is_loaded(checkpoint, self.device_box.currentText()) else "Loading the model…"
        )
        self._layers = {}  # a new run adds its own layers; earlier runs' layers stay as they are
        self._start(
            self._segment_steps,
            data,
            prompts,
            spacing,
            AXES[self.axis_box.currentText()],
            checkpoint,
            self.device_box.currentText(),
            self.resize_box.value() or "auto",  # 0 is shown as "auto"
            self.thresholds(),
            self._run_context["place"],
        )

    def cancel(self) -> None:
        """Stop the run within one batch; the viewer keeps its layers as they were."""
        self._cancel.set()
        self.cancel_button.setEnabled(False)
        self.status.setText("Cancelling after the current batch…")

    def _start(self, function: Any, *args: Any) -> None:
        from napari.qt.threading import create_worker

        self.worker = create_worker(function, *args, _start_thread=False)
        if hasattr(self.worker, "yielded"):
            self.worker.yielded.connect(self._on_progress)
        self.worker.returned.connect(self._on_done)
        self.worker.finished.connect(self._on_finished)
        self.worker.start()

    def _segment_steps(
        self, data, prompts, spacing, axis, checkpoint, device, resize, thresholds, place
    ) -> Generator[tuple[str, int, int], None, dict]:
        """Worker (napari runs this generator off the GUI thread): yields ``(stage, done, total)`` as the
        core's `fveseg.pipeline.iter_segment_array` reports it (``"load"`` while the model loads), and
        returns {"result", "layers", ...} or {"error"}."""
        outcome: dict = {}
        try:
            yield "load", 0, 0
            import_core()
            if checkpoint is not None and not checkpoint_exists(checkpoint):
                raise CheckpointError(
                    f"Checkpoint {checkpoint} not found: choose the .json or .safetensors file of an "
                    "fveseg checkpoint (or the BiomedParse v2 .ckpt you downloaded) with Browse…, type "
                    "a bundled model's name (noise-robust), or clear the box to use the default model."
                )
            segmenter = get_segmenter(checkpoint, device)
            from fveseg.pipeline import (  # imported by import_core above
                flatten_notes,
                iter_segment_array,
                noisy_stack_notes,
                prepare,
            )

            # what the network and the instance step see (background flattened where it dominates)
            params = replace(thresholds.params(prompts), axis=axis, resize=resize)
            image, prepared = prepare(data, params, spacing)
            steps = iter_segment_array(segmenter, image, prepared, spacing, cancel=self._cancel.is_set)
            result = yield from steps
            outcome["layers"] = result_layers(
                result, prompts, thresholds, place, result.semantic, image=image
            )
            outcome["image"] = image  # re-thresholding splits instances with the same image
            outcome["result"] = result
            outcome["notes"] = in_widget_words(
                flatten_notes(params, image is not data, "the image")
                + noisy_stack_notes(result, data, "the image")
            )
            outcome["notes"] += result_notes(outcome["layers"], prompts, thresholds, place, result.scale)
        except GeneratorExit:  # the worker was quit: let the generator close
            raise
        except BaseException as error:  # reported in the GUI thread as a notification
            outcome["error"] = error
        return outcome

    def _on_progress(self, update: tuple[str, int, int]) -> None:
        stage, done, total = update
        if self._cancel.is_set():
            return
        if stage == "load":
            self.progress.setRange(0, 0)  # busy: no slice count until the first batch
            return
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(done)
        what = "Measuring the objects' size" if stage == "probe" else "Segmenting"
        self.status.setText(f"{what}… {done} / {total} slices")

    def _on_done(self, outcome: dict) -> None:
        error = outcome.get("error")
        if error is not None:
            self._report(error)
            return
        if "result" in outcome:
            self.result = outcome["result"]
            self._run_context["image"] = outcome.get("image", self._run_context["image"])
        self.cancel_button.setEnabled(False)  # the network is done: nothing left to cancel while layers show
        self._show_layers(outcome["layers"])
        scale = getattr(self.result, "scale", 1.0)
        resized = f" (slices resized by {scale:g})" if scale != 1.0 else ""
        from fveseg.inference.model_choice import NOISY_MODEL

        if getattr(self.result, "model", None) == NOISY_MODEL:
            noise = self.result.noise
            resized += f"; a noisy stack (noise {noise:.2f} of the signal range): the {NOISY_MODEL} model ran"
        notes = outcome.get("notes") or []
        found = f"Done: {', '.join(self._run_context['prompts'])}{resized}."
        existence = outcome["layers"][0][1]["metadata"]["existence"] if outcome["layers"] else {}
        found += " " + existence_summary(existence, self.exist_box.value())
        self.status.setText(
            " ".join([found, *notes]) if notes
            else f"{found} Change a threshold to update the layers without running the network again."
        )  # fmt: skip
        if notes:
            from napari.utils.notifications import show_warning

            show_warning(" ".join(notes))

    def _on_finished(self) -> None:
        if self._layer_steps:  # layers still being shown: the run ends after the last one
            self._finish_when_shown = True
            return
        self.worker = None
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        if self.progress.maximum() == 0:
            self.progress.setRange(0, 1)
        self.finished.emit()

    def _report(self, error: BaseException) -> None:
        from napari.utils.notifications import show_error, show_info

        from fveseg.errors import Cancelled, FvesegError

        if isinstance(error, Cancelled):
            self.status.setText("Cancelled; the viewer is unchanged.")
            show_info("Segmentation cancelled; no layers were changed.")
            return
        if isinstance(error, MemoryError) or "out of memory" in str(error).lower():
            message = (
                "Out of memory while segmenting. Choose device 'cpu' (more memory than most GPUs), "
                "close other programs, or crop the image to a smaller region and run again."
            )
        elif isinstance(error, FvesegError):
            message = str(error)
        else:
            message = (
                f"Segmentation failed ({type(error).__name__}: {error}). Check the image and the "
                "checkpoint; run `fveseg segment` on the command line for the full report."
            )
        self.status.setText(message)
        show_error(message)

    # ------------------------------------------------------------------ results
    def _show_layers(self, layers: list) -> None:
        """Add result layers, or update the ones this widget added before (same name) in place: one layer
        per turn of the event loop, because napari takes about 150 ms of the GUI thread to add a Labels
        layer, and two in one turn held the window for 300 ms (docs/benchmarks.md). The run counts as
        finished (`_on_finished`) once the last one is shown."""
        from napari.layers import Labels

        # `_layers` holds this run's layers only (reset by `run`): re-thresholding updates or removes them
        # as the settings ask, and the layers of earlier runs and the user's own layers are never touched
        wanted = {kwargs["name"] for _, kwargs, _ in layers}
        for name in [n for n in self._layers if n not in wanted]:
            if self._layers[name] in self.viewer.layers:
                self.viewer.layers.remove(self._layers.pop(name))

        def show(data, kwargs) -> None:
            existing = self._layers.get(kwargs["name"])
            if isinstance(existing, Labels) and existing in self.viewer.layers:
                existing.data = data
                existing.metadata = kwargs["metadata"]
                existing.scale, existing.translate = kwargs["scale"], kwargs["translate"]
                if "features" in kwargs:
                    existing.features = kwargs["features"]
            else:
                self._layers[kwargs["name"]] = self.viewer.add_labels(data, **kwargs)

        existence = layers[0][1]["metadata"]["existence"] if layers else {}
        self._layer_steps = [partial(show, data, kwargs) for data, kwargs, _ in layers]
        self._layer_steps.append(
            lambda: self.existence_plot.set_data(existence, self.exist_box.value(), self._current_slice())
        )
        self._next_layer_step()

    def _next_layer_step(self) -> None:
        if self._layer_steps:
            self._layer_steps.pop(0)()
        if self._layer_steps:
            self._layer_timer.start()
        elif self._finish_when_shown:
            self._finish_when_shown = False
            self._on_finished()

    def _schedule_rethreshold(self, *args: Any) -> None:
        if self.result is not None:
            self._retune_timer.start()

    def rethreshold(self) -> None:
        """Recompute the layers from the cached result with the current thresholds (no network)."""
        if self.result is None or self._run_context is None:
            return
        if self.worker is not None:  # a run or another update is going: try again when it ends
            self._retune_timer.start()
            return
        self.status.setText("Updating the layers…")
        self._start(
            _derive_layers,
            self.result,
            self._run_context["prompts"],
            self.thresholds(),
            self._run_context["place"],
            self._run_context["image"],
        )

    def _current_slice(self) -> int | None:
        if self.result is None:
            return None
        step = self.viewer.dims.current_step
        world_axis = len(step) - 3 + int(self.result.axis)
        return int(step[world_axis]) if 0 <= world_axis < len(step) else None

    def _follow_slider(self, event: Any = None) -> None:
        self.existence_plot.set_current(self._current_slice())


def _derive_layers(
    result: Any, prompts: list[str], thresholds: Thresholds, place: Placement, image: Any
) -> dict:
    """Worker for re-thresholding: {"layers"} or {"error"}."""
    try:
        return {"layers": result_layers(result, prompts, thresholds, place, image=image)}
    except Exception as error:  # reported in the GUI thread
        return {"error": error}


def _probability_box(tooltip: str) -> QDoubleSpinBox:
    box = QDoubleSpinBox()
    box.setRange(0.0, 1.0)
    box.setSingleStep(0.05)
    box.setDecimals(2)
    box.setToolTip(tooltip)
    return box


__all__ = ["SegmentationWidget"]
