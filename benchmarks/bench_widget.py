"""Segmentation widget overhead and UI responsiveness, measured side by side in one process.

For the plugin's sample volume (32 x 128 x 128) this times, alternately and ``--repeats`` times:

- headless: ``Segmenter.segment`` + ``split_instances`` (what ``fveseg segment`` does), and
- GUI: clicking **Run** in the dock widget until its Labels layers are in the viewer,
- CLI: ``fveseg segment --instances`` on the same volume saved as TIFF, in a new process (the run a
  user would otherwise make: start-up, model load, segmentation, instances, OME-Zarr write),

with the same loaded Segmenter (the first, warm-up run of each loads the model and the text encoder and
is not counted). The GUI side waits in a Qt event loop until the widget's ``finished`` signal (its
results are in the viewer by then). During GUI runs a 10 ms QTimer records its ticks; the longest gap
between ticks is the longest event-loop stall; the full garbage collections during GUI runs are timed
too (``gc.callbacks``), because they stall the event loop from any thread. Prints a markdown table
(ratios widget / headless and widget / CLI; goal: the widget adds <= 10 %).

    xvfb-run -a python benchmarks/bench_widget.py [--checkpoint PATH] [--repeats 3]
"""

from __future__ import annotations

import argparse
import gc
import resource
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def _checkpoint(folder: Path, given: str | None) -> tuple[str, str]:
    from fveseg.model.checkpoint import checkpoint_paths, default_checkpoint_path

    if given:
        return given, given
    if checkpoint_paths(default_checkpoint_path())[0].is_file():
        return str(default_checkpoint_path()), "default model"
    import torch

    from fveseg.model import build_model
    from fveseg.model.checkpoint import save_checkpoint

    torch.manual_seed(0)
    save_checkpoint(build_model("tiny"), folder / "tiny", {})
    return str(folder / "tiny"), "random 'tiny' config (no default model installed)"


def cli_run(image, checkpoint: str, device: str, folder: Path, index: int) -> float:
    """Wall time of ``fveseg segment --instances`` on the image saved as TIFF, in a new process."""
    import subprocess
    import sys

    import tifffile

    source = folder / "volume.tif"
    if not source.exists():
        z, y, x = (float(s) for s in image.scale)
        meta = {"spacing": z, "unit": "um", "axes": "ZYX"}
        data = np.asarray(image.data)
        tifffile.imwrite(source, data, imagej=True, resolution=(1 / x, 1 / y), metadata=meta)
    command = [sys.executable, "-m", "fveseg.cli", "segment", str(source), "-p", "nuclei", "--instances"]
    command += ["-o", str(folder / f"cli{index}.zarr"), "--model", checkpoint, "--device", device, "--quiet"]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--shape", type=int, nargs=3, default=None, help="a synthetic volume (z y x) instead of the sample"
    )
    args = parser.parse_args()

    import napari
    from qtpy.QtCore import QEventLoop, QTimer

    import fveseg.inference.segmenter  # noqa: F401 - torch stack before the OpenGL canvas (see _widget)
    from napari_fveseg import _runtime
    from napari_fveseg._widget import SegmentationWidget

    napari.qt.get_qapp()
    viewer = napari.Viewer(show=True)
    if args.shape is None:
        viewer.open_sample("napari-fveseg", "nuclei")
        image = viewer.layers["synthetic nuclei"]
    else:
        from fveseg.synthetic import make_nuclei_volume

        volume = make_nuclei_volume(tuple(args.shape), seed=1)
        image = viewer.add_image(volume.image, name="synthetic nuclei", scale=volume.spacing)
    widget = SegmentationWidget(viewer)
    viewer.window.add_dock_widget(widget)
    tmp = tempfile.TemporaryDirectory()
    checkpoint, model_note = _checkpoint(Path(tmp.name), args.checkpoint)
    widget.layer_box.setCurrentText(image.name)
    widget.prompts_edit.setPlainText("nuclei")
    widget.checkpoint_edit.setText(checkpoint)
    widget.device_box.setCurrentText(args.device)
    widget.split_check.setChecked(True)
    widget.exist_box.setValue(0.5)
    widget.mask_box.setValue(0.5)

    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))

    updates: list[tuple[float, str]] = []  # (seconds after the click, stage) of each progress update
    relay = widget._on_progress

    def recording(update):
        updates.append((time.perf_counter(), update[0]))
        relay(update)

    widget._on_progress = recording  # the worker connects the instance's attribute at the click

    # full (generation 2) garbage collections hold the GIL for as long as the heap takes to scan, and the
    # GUI thread waits for them wherever they run: record each one's duration during the GUI runs
    collections: list[tuple[float, str]] = []
    collection_start: list[float] = []

    def on_collection(phase: str, info: dict) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            collection_start[:] = [time.perf_counter()]
        elif collection_start and timer.isActive():
            collections.append((time.perf_counter() - collection_start[0], threading.current_thread().name))

    gc.callbacks.append(on_collection)

    def gui_run() -> tuple[float, float]:
        for name in ("nuclei", "nuclei instances"):
            if name in viewer.layers:
                viewer.layers.remove(name)
        widget._layers.clear()
        ticks.clear()
        updates.clear()
        timer.start()
        start = time.perf_counter()
        widget.run_button.click()
        clicked.append(time.perf_counter() - start)
        # wait in a real Qt event loop (idle between events, as napari's own loop), not a busy poll
        # that would compete with the worker for the 2 cores and the GIL
        loop = QEventLoop()
        widget.finished.connect(loop.quit)  # the run's end: its layers are in the viewer
        loop.exec_()
        widget.finished.disconnect(loop.quit)
        elapsed = time.perf_counter() - start
        assert widget.worker is None and viewer.layers["nuclei instances"].data.shape == image.data.shape
        timer.stop()
        gaps = np.diff([start, *ticks, time.perf_counter()])
        first_update.append(updates[0][0] - start)
        first_slices.append(next(t for t, stage in updates if stage != "load") - start)
        return elapsed, float(gaps.max())

    def headless_run(segmenter) -> float:
        from fveseg.instances.split import split_instances

        start = time.perf_counter()
        result = segmenter.segment(image.data, ["nuclei"], spacing=tuple(image.scale))
        for i in range(len(result.prompts)):
            edges = np.asarray(result.edges[i], np.float32)
            split_instances(np.asarray(result.semantic) == i + 1, edges=edges, spacing=tuple(image.scale))
        return time.perf_counter() - start

    def headless_in_thread(segmenter) -> float:
        # torch runs differently in the main thread and in a fresh thread (its intra-op thread pool is
        # per thread), so the widget's worker thread is also compared with the same code in a plain thread
        box: list[float] = []
        thread = threading.Thread(target=lambda: box.append(headless_run(segmenter)))
        thread.start()
        thread.join()
        return box[0]

    clicked, first_update, first_slices = [], [], []  # per GUI run: click handler, first updates (s)
    first_gui, first_stall = gui_run()  # warm-up: imports, model and text encoder load
    segmenter = _runtime.get_segmenter(checkpoint, args.device)  # the one the widget loaded (cached)
    headless_run(segmenter)
    gui, headless, threaded, stalls = [], [], [], []
    for _ in range(args.repeats):
        headless.append(headless_run(segmenter))
        threaded.append(headless_in_thread(segmenter))
        elapsed, stall = gui_run()
        gui.append(elapsed)
        stalls.append(stall)
    gc.callbacks.remove(on_collection)  # before Qt deletes the timer it reads
    cli = [cli_run(image, checkpoint, args.device, Path(tmp.name), i) for i in range(args.repeats)]
    ratio = statistics.median(g / h for g, h in zip(gui, headless))
    ratio_threaded = statistics.median(g / h for g, h in zip(gui, threaded))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"model: {model_note}; device: {args.device}; repeats: {args.repeats}")
    print("| measurement | value |\n|---|---|")
    median = statistics.median
    print(f"| headless Segmenter + instances, main thread (as the CLI), median | {median(headless):.2f} s |")
    print(f"| headless Segmenter + instances, in a plain thread, median | {median(threaded):.2f} s |")
    print(f"| widget: Run click to layers shown, median | {statistics.median(gui):.2f} s |")
    print(f"| ratio widget / headless main thread (median of pairs; goal <= 1.10) | {ratio:.2f} |")
    print(f"| ratio widget / headless plain thread (median of pairs) | {ratio_threaded:.2f} |")
    print(f"| CLI `fveseg segment --instances`, same volume, new process, median | {median(cli):.2f} s |")
    print(f"| ratio widget first run / CLI run (both load the model) | {first_gui / median(cli):.2f} |")
    print(f"| ratio widget warm run / CLI run | {median(gui) / median(cli):.2f} |")
    print(f"| longest event-loop stall during a warm run (10 ms timer) | {max(stalls) * 1000:.0f} ms |")
    print(f"| first run (imports + model load), click to layers | {first_gui:.2f} s |")
    print(f"| longest stall during the first run | {first_stall * 1000:.0f} ms |")
    longest = max(collections, default=(0.0, "-"))
    print(
        f"| full garbage collections during GUI runs: count, longest (thread) | {len(collections)}, "
        f"{longest[0] * 1000:.0f} ms ({longest[1]}) |"
    )
    handler = f"{clicked[0] * 1000:.0f} / {median(clicked[1:]) * 1000:.0f} ms"
    print(f"| click handler, first run / warm median | {handler} |")
    first = f"{first_update[0]:.2f} / {median(first_update[1:]):.2f} s"
    print(f"| click to the first progress update, first run / warm | {first} |")
    print(
        f"| click to the first slice count (probe or run), first run / warm | {first_slices[0]:.2f} / "
        f"{median(first_slices[1:]):.2f} s |"
    )
    print(f"| peak RSS of the process | {peak:.0f} MiB |")
    print(
        "per repeat (headless main, headless thread, widget) s:",
        [(round(h, 2), round(t, 2), round(g, 2)) for h, t, g in zip(headless, threaded, gui)],
    )
    viewer.close()
    tmp.cleanup()


if __name__ == "__main__":
    main()
