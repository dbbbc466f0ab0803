"""Segmentation dock widget, end to end with a tiny randomly initialised checkpoint (until a model ships)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

pytest.importorskip("napari")
torch = pytest.importorskip("torch")

from napari_fveseg._settings import load_settings  # noqa: E402
from napari_fveseg._widget import SegmentationWidget  # noqa: E402

RUN_TIMEOUT_MS = 120_000


@pytest.fixture(scope="session")
def micro_checkpoint(tmp_path_factory):
    """A ~0.1M-parameter BiomedParse-V with 128-pixel input (no tiling on the 128×128 sample)."""
    from fveseg.model import ModelConfig, build_model
    from fveseg.model.checkpoint import save_checkpoint

    torch.manual_seed(0)
    config = ModelConfig(
        name="micro",
        embed_dim=8,
        depths=(1, 1, 1, 1),
        drop_path_rate=0.0,
        conv_dim=16,
        mask_dim=16,
        encoder_ffn_dim=32,
        hidden_dim=16,
        decoder_layers=3,
        nheads=2,
        ffn_dim=32,
        num_seg_queries=2,
        num_edge_queries=1,
        input_size=128,
    )
    path = tmp_path_factory.mktemp("model") / "micro"
    save_checkpoint(build_model(config), path, {})
    return str(path)


@pytest.fixture
def widget_on_sample(make_napari_viewer, micro_checkpoint):
    viewer = make_napari_viewer(show=True)  # a hidden canvas renders black screenshots
    viewer.open_sample("napari-fveseg", "nuclei")
    widget = SegmentationWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.layer_box.setCurrentText("synthetic nuclei")
    widget.prompts_edit.setPlainText("nuclei")
    widget.checkpoint_edit.setText(micro_checkpoint)
    widget.device_box.setCurrentText("cpu")
    widget.split_check.setChecked(True)
    widget.exist_box.setValue(0.0)  # a random model is unsure everywhere: keep every slice
    return viewer, widget


def _notifications():
    """Messages napari shows as notifications during the test."""
    from napari.utils.notifications import notification_manager

    seen: list[str] = []
    notification_manager.notification_ready.connect(lambda n: seen.append(str(n.message)))
    return seen


def _wait_idle(qtbot, widget):
    qtbot.waitUntil(lambda: widget.worker is None, timeout=RUN_TIMEOUT_MS)


def test_result_layers_are_added_one_per_event_loop_turn_and_the_run_ends_after_the_last(
    widget_on_sample, qtbot, monkeypatch
):
    """napari needs about 150 ms of the GUI thread per new Labels layer: two in one turn stalled the window
    300 ms. Between the two additions the event loop runs (a zero timer fires), and the run is not over
    (Run disabled, worker set) until both layers are in the viewer."""
    from qtpy.QtCore import QTimer

    viewer, widget = widget_on_sample
    turns, seen = [], []
    original = type(viewer).add_labels  # the viewer is a pydantic model: patch its class

    def add_labels(self, data, **kwargs):
        seen.append((kwargs["name"], len(turns), widget.worker is not None, widget.run_button.isEnabled()))
        assert not widget.cancel_button.isEnabled()  # the network is done: nothing to cancel any more
        QTimer.singleShot(0, lambda: turns.append(kwargs["name"]))  # fires at the next turn of the loop
        return original(self, data, **kwargs)

    monkeypatch.setattr(type(viewer), "add_labels", add_labels)
    at_the_end = []
    widget.finished.connect(lambda: at_the_end.append("nuclei instances" in viewer.layers))
    with qtbot.waitSignal(widget.finished, timeout=RUN_TIMEOUT_MS):
        widget.run_button.click()
    assert at_the_end == [True]  # the widget's `finished` comes once, with every layer shown
    assert [name for name, *_ in seen] == ["nuclei", "nuclei instances"]
    assert seen[1][1] >= 1  # the loop turned (the first layer's timer fired) before the second was added
    assert all(running and not enabled for _, _, running, enabled in seen)  # the run was still going
    assert widget.run_button.isEnabled() and "nuclei instances" in viewer.layers


def test_run_adds_layers_keeps_ui_responsive_and_rethresholds_without_network(
    widget_on_sample, qtbot, monkeypatch
):
    from qtpy.QtCore import QTimer

    from fveseg.inference.segmenter import Segmenter

    viewer, widget = widget_on_sample
    calls = []
    original = Segmenter.segment
    monkeypatch.setattr(
        Segmenter, "segment", lambda self, *a, **k: calls.append(1) or original(self, *a, **k)
    )
    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(1))
    timer.start(10)
    widget.run_button.click()
    assert widget.worker is not None  # the run is in a worker thread: click returned at once
    _wait_idle(qtbot, widget)
    timer.stop()

    assert len(ticks) > 20  # the Qt event loop kept running timers during the run
    image = viewer.layers["synthetic nuclei"]
    semantic, instances = viewer.layers["nuclei"], viewer.layers["nuclei instances"]
    for layer in (semantic, instances):
        assert layer.data.shape == (32, 128, 128)
        assert tuple(layer.scale) == tuple(image.scale) == (1.0, 0.5, 0.5)
        assert tuple(layer.translate) == tuple(image.translate)
    assert set(np.unique(semantic.data)) <= {0, 1}
    assert len(semantic.metadata["existence"]["nuclei"]) == 32
    assert widget.existence_plot.existence == semantic.metadata["existence"]
    assert widget.progress.value() == widget.progress.maximum() == 32
    # the instances lie inside the semantic foreground and cover all of it but the dropped specks
    # (objects under a tenth of the typical object size, fveseg.instances.split.SPECK_FRACTION)
    assert not np.any((instances.data > 0) & (semantic.data == 0))
    from fveseg.params import SegmentParams
    from fveseg.pipeline import instance_labels

    # what `fveseg segment` writes for this result: the pipeline's instance step, speck filter, focus trim
    expected = instance_labels(widget.result, 0, SegmentParams(), (1.0, 0.5, 0.5), image.data, semantic.data)
    np.testing.assert_array_equal(instances.data, expected)
    assert instances.metadata["class_name"] == "nuclei"
    assert load_settings().checkpoint == widget.checkpoint_edit.text()  # remembered for next time

    # Re-thresholding: layers follow the cached probabilities, the network is not run again.
    result, runs = widget.result, len(calls)  # one run (plus the automatic scale's probe windows)
    assert result.scale >= 1.0  # the sample's nuclei are not larger than trained: no shrinking
    widget.split_check.setChecked(False)
    qtbot.waitUntil(lambda: "nuclei instances" not in viewer.layers, timeout=30_000)
    widget.mask_box.setValue(0.3)
    expected = result.rethreshold(mask_threshold=0.3, exist_threshold=0.0) == 1
    qtbot.waitUntil(lambda: np.array_equal(viewer.layers["nuclei"].data, expected), timeout=30_000)
    widget.exist_box.setValue(1.0)  # no slice can exceed probability 1: everything goes
    qtbot.waitUntil(lambda: viewer.layers["nuclei"].data.max() == 0, timeout=30_000)
    widget.output_box.setCurrentText("semantic")
    qtbot.waitUntil(
        lambda: "fveseg classes" in viewer.layers and "nuclei" not in viewer.layers, timeout=30_000
    )
    assert viewer.layers["fveseg classes"].metadata["class_names"] == {1: "nuclei"}
    assert len(calls) == runs

    # the canvas shows something (not a blank frame)
    shot = viewer.screenshot(canvas_only=True, flash=False)
    assert shot.reshape(-1, shot.shape[-1]).std(axis=0).max() > 0


def test_cancel_stops_within_one_batch_and_leaves_viewer_unchanged(widget_on_sample, qtbot, monkeypatch):
    from fveseg.inference.engines import NetworkEngine

    viewer, widget = widget_on_sample
    release = threading.Event()
    batches = []
    original = NetworkEngine.predict

    def held_batch(self, *args, **kwargs):
        batches.append(1)
        release.wait(timeout=60)  # hold the first batch until the test has pressed Cancel
        return original(self, *args, **kwargs)

    monkeypatch.setattr(NetworkEngine, "predict", held_batch)
    before = [(layer.name, layer.data) for layer in viewer.layers]
    seen = _notifications()
    widget.run_button.click()
    qtbot.waitUntil(lambda: len(batches) == 1, timeout=RUN_TIMEOUT_MS)
    widget.cancel_button.click()
    release.set()
    _wait_idle(qtbot, widget)

    assert len(batches) == 1  # stopped before the second batch
    assert [(layer.name, layer.data) for layer in viewer.layers] == before
    assert widget.result is None
    assert "Cancelled" in widget.status.text()
    assert any("cancelled" in message for message in seen)
    assert widget.run_button.isEnabled()


def test_errors_are_notifications_with_the_fix(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    widget = SegmentationWidget(viewer)
    seen = _notifications()
    widget.run()
    assert "No image layer" in seen[-1] and "File › Open" in seen[-1]
    rgb = viewer.add_image(np.zeros((8, 8, 3), dtype=np.uint8), name="photo", rgb=True)
    widget.run()
    assert "RGB" in seen[-1] and "Split RGB" in seen[-1]
    viewer.layers.remove(rgb)

    viewer.add_image(np.zeros((2, 8, 8), dtype=np.uint8), name="img")
    widget.layer_box.setCurrentText("img")
    widget.prompts_edit.setPlainText("  \n ")
    widget.run()
    assert "No prompt" in seen[-1]

    widget.prompts_edit.setPlainText("nuclei")
    widget.checkpoint_edit.setText(str(tmp_path / "missing.json"))
    widget.run()
    _wait_idle(qtbot, widget)  # the model is checked in the worker, off the GUI thread
    assert "not found" in seen[-1] and "Browse" in seen[-1]

    broken = tmp_path / "broken"
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "broken.safetensors").write_bytes(b"\0" * 8)
    widget.checkpoint_edit.setText(str(broken))
    widget.run()
    _wait_idle(qtbot, widget)
    assert widget.result is None and len(viewer.layers) == 1
    assert "broken.json" in seen[-1]


def test_settings_are_remembered_between_sessions(make_napari_viewer):
    viewer = make_napari_viewer()
    first = SegmentationWidget(viewer)
    first.prompts_edit.setPlainText("nuclei\ncell membranes")
    first.mask_box.setValue(0.3)
    first.split_check.setChecked(False)
    first.output_box.setCurrentText("semantic")
    first.resize_box.setValue(0.5)
    from napari_fveseg._settings import save_settings

    save_settings(first.settings())
    second = SegmentationWidget(viewer)
    assert second.prompts() == ["nuclei", "cell membranes"]
    assert second.mask_box.value() == pytest.approx(0.3)
    assert not second.split_check.isChecked()
    assert second.output_box.currentText() == "semantic"
    assert second.resize_box.value() == pytest.approx(0.5)


def test_resize_reaches_the_segmenter_and_results_keep_the_image_shape(widget_on_sample, qtbot, monkeypatch):
    from _spies import record_scales

    viewer, widget = widget_on_sample
    seen, runs = record_scales(monkeypatch)  # the scale asked for; each batch loop's (probe windows, run)
    assert widget.resize_box.text() == "auto" and widget.settings().resize == 0.0  # the default
    widget.run()
    _wait_idle(qtbot, widget)
    # the probe runs at native size first (then its half-scale check)
    assert seen == ["auto"] and runs[0] == 1.0 and all(0 < s <= 1.25 for s in runs)
    seen.clear()
    widget.resize_box.setValue(0.5)
    widget.run()
    _wait_idle(qtbot, widget)
    assert seen == [0.5]
    assert "resized by 0.5" in widget.status.text()
    shape = viewer.layers["synthetic nuclei"].data.shape
    assert viewer.layers["nuclei"].data.shape == viewer.layers["nuclei instances"].data.shape == shape


def test_bundled_model_names_pass_the_widget_check(tmp_path):
    from napari_fveseg._runtime import checkpoint_exists

    assert checkpoint_exists("noise-robust") and checkpoint_exists("default")
    assert not checkpoint_exists("no-such-model")
    assert not checkpoint_exists(str(tmp_path / "noise-robust"))  # a path is a path, not a name


def test_model_auto_runs_the_noise_robust_model_on_a_noisy_layer_and_says_so(
    widget_on_sample, qtbot, monkeypatch, micro_checkpoint
):
    import napari_fveseg._widget as widget_module
    from fveseg.inference.model_choice import AutoSegmenter
    from fveseg.inference.segmenter import Segmenter

    viewer, widget = widget_on_sample
    asked = []

    def bundled_stand_ins(checkpoint, device):  # the micro model stands in for both bundled ones
        asked.append(checkpoint)
        return AutoSegmenter(Segmenter(micro_checkpoint, device), Segmenter(micro_checkpoint, device))

    monkeypatch.setattr(widget_module, "get_segmenter", bundled_stand_ins)
    widget.checkpoint_edit.setText("auto")  # the choice by noise (the default is the default model)
    widget.run()
    _wait_idle(qtbot, widget)
    assert asked == ["auto"] and "noise-robust" not in widget.status.text()  # the sample is clean
    layer = viewer.layers["synthetic nuclei"]
    data = np.asarray(layer.data, dtype=np.float32)
    signal = float(np.percentile(data, 99) - np.median(data))
    layer.data = data + np.random.default_rng(0).normal(0, 0.3 * signal, data.shape).astype(np.float32)
    widget.run()
    _wait_idle(qtbot, widget)
    assert "the noise-robust model ran" in widget.status.text()


def test_the_run_click_returns_without_importing_torch_or_loading_a_model(
    make_napari_viewer, qtbot, monkeypatch
):
    """The Run click only checks the form and starts the worker: the torch stack's import, the model
    check and the model load happen in other threads (`_runtime.import_core`, `get_segmenter`)."""
    import threading

    import napari_fveseg._widget as widget_module

    gui = threading.current_thread()
    threads = []
    monkeypatch.setattr(widget_module, "import_core", lambda: threads.append(threading.current_thread()))

    def no_model(checkpoint, device):
        threads.append(threading.current_thread())
        raise RuntimeError("stop here")

    monkeypatch.setattr(widget_module, "get_segmenter", no_model)
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((2, 8, 8), dtype=np.uint8), name="img")
    widget = SegmentationWidget(viewer)
    widget.layer_box.setCurrentText("img")
    widget.checkpoint_edit.setText("")
    widget.run()  # the worker may start at once: what matters is which thread ran these
    _wait_idle(qtbot, widget)
    assert len(threads) == 2 and all(thread is not gui for thread in threads)


def test_the_existence_summary_says_where_the_threshold_acts():
    from napari_fveseg._results import existence_summary

    existence = {"nuclei": [0.2, 0.95, 0.99, 0.6], "liver": [0.0, 0.1, 0.0, 0.0]}
    assert existence_summary(existence, 0.5) == (
        'Existence above 0.5: "nuclei" kept on 3 of 4 slices, "liver" kept on 0 of 4 slices.'
    )
    assert existence_summary(existence, 0.9).startswith('Existence above 0.9: "nuclei" kept on 2 of 4')
    assert existence_summary({}, 0.5) == ""


def test_a_second_run_keeps_the_first_runs_layers(widget_on_sample, qtbot):
    viewer, widget = widget_on_sample
    widget.run_button.click()
    _wait_idle(qtbot, widget)
    first = viewer.layers["nuclei"], viewer.layers["nuclei instances"]
    kept = [np.array(layer.data) for layer in first]
    widget.prompts_edit.setPlainText("mitochondria")
    widget.run_button.click()
    _wait_idle(qtbot, widget)
    assert "mitochondria" in viewer.layers and "mitochondria instances" in viewer.layers
    for layer, data in zip(first, kept):  # the earlier result is still there, unchanged
        assert layer in viewer.layers
        np.testing.assert_array_equal(layer.data, data)
    newest = np.array(viewer.layers["mitochondria"].data)
    widget.mask_box.setValue(0.05)  # re-thresholding touches only the newest run's layers
    widget.rethreshold()
    _wait_idle(qtbot, widget)
    assert not np.array_equal(viewer.layers["mitochondria"].data, newest)  # it did re-threshold
    for layer, data in zip(first, kept):
        np.testing.assert_array_equal(layer.data, data)


def test_a_striped_background_is_flattened_and_the_status_says_so(
    make_napari_viewer, micro_checkpoint, qtbot
):
    viewer = make_napari_viewer()
    y, x = np.mgrid[0:64, 0:64]
    image = np.broadcast_to(1000.0 + 3.0 * x + 40.0 * np.sin(y / 2.0), (8, 64, 64)).astype(np.float32).copy()
    image[:, 24:36, 24:36] += 60.0
    viewer.add_image(image, name="striped", scale=(1.0, 0.5, 0.5))
    widget = SegmentationWidget(viewer)
    widget.layer_box.setCurrentText("striped")
    widget.prompts_edit.setPlainText("nuclei")
    widget.checkpoint_edit.setText(micro_checkpoint)
    widget.device_box.setCurrentText("cpu")
    widget.run_button.click()
    _wait_idle(qtbot, widget)
    assert "flattened before segmenting" in widget.status.text()
    assert "fveseg segment --flatten off" in widget.status.text()
    flattened = widget._run_context["image"]  # re-thresholding splits the same image the network saw
    assert flattened is not image and float(np.asarray(flattened).min()) >= 0.0
    assert viewer.layers["striped"].data is image  # the user's layer is untouched


def test_progress_names_the_stage_from_the_first_update(widget_on_sample, qtbot, monkeypatch):
    """The worker relays the core's generator (no thread of its own): "load" first, then the automatic
    scale's probe slices, then the run's slices, and the status says which."""
    viewer, widget = widget_on_sample
    updates, statuses = [], []
    original = type(widget)._on_progress

    def recording(self, update):
        updates.append(update)
        original(self, update)
        statuses.append(self.status.text())

    monkeypatch.setattr(type(widget), "_on_progress", recording)
    widget.resize_box.setValue(0)  # "auto": the probe runs
    widget.run()
    _wait_idle(qtbot, widget)
    stages = [stage for stage, _, _ in updates]
    assert stages[0] == "load" and stages[-1] == "segment" and "probe" in stages
    assert stages.index("probe") < stages.index("segment")
    assert any(text.startswith("Measuring the objects' size…") for text in statuses)
    assert statuses[-1].startswith("Segmenting…") and statuses[-1].endswith("slices")
    assert not [t for t in threading.enumerate() if t.name == "fveseg-segment"]
