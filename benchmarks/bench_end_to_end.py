"""What a user waits for: `fveseg segment` end to end beside the classical baseline, with a stage breakdown.

For each stack (the bundled sample, cells3d from ``--data-root``, and with ``--large`` a procedural
64×512×512 stack) one fresh process runs what ``fveseg segment STACK -p nuclei --instances`` runs
(`fveseg.pipeline.segment_file`, imports included, in a process set up as the installed program sets up
its own: `fveseg.cli._memory`), and the same process times the classical
Voronoi-Otsu baseline (Gaussian blur, Otsu mask, seeded watershed, one sigma, scikit-image) on the same
array. Printed per stack: wall seconds of both, their ratio, the stage shares (imports, read, model
load, probe = the automatic resize's network passes and the view choice, network = the run over every
slice, instances, write) and the process's peak memory. The two timings come from one process, side by
side, so a loaded machine moves both; ``--repeats`` runs each stack that many times (one row each).

    PYTHONPATH=src:. .venv/bin/python benchmarks/bench_end_to_end.py [--data-root ../shared/data] [--large]
        [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
start = time.perf_counter()


def peak_mib():
    # this process's own peak: Linux keeps ru_maxrss across exec, so it would report the parent's
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


from pathlib import Path
from fveseg.cli._memory import keep_freed_memory
keep_freed_memory()  # what the installed `fveseg` program does first (`fveseg.cli.console`)
import fveseg.pipeline as pipeline
from fveseg.params import SegmentParams
imports = time.perf_counter() - start
source, out, spacing = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3])
params = SegmentParams(spacing=tuple(spacing) if spacing else None)
summary = pipeline.segment_file(pipeline.SegmentJob(source, out, "tiff"), params)
total = time.perf_counter() - start

import numpy as np
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu
from skimage.feature import peak_local_max
from skimage.segmentation import watershed
from fveseg.io import read_volume
volume = read_volume(source)
image = np.asarray(volume.data, np.float32)
sp = np.asarray(params.spacing or volume.spacing or (1.0, 1.0, 1.0), float)
mark = time.perf_counter()
sigma = 2.0 / (sp / sp.min())
blurred = ndi.gaussian_filter(image, sigma)
mask = blurred > threshold_otsu(blurred)
peaks = peak_local_max(blurred, labels=mask.astype(int), exclude_border=False, min_distance=1)
markers = np.zeros(image.shape, np.int32)
markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
watershed(-blurred, markers, mask=mask)
baseline = time.perf_counter() - mark
print(json.dumps({"total": total, "imports": imports, "stages": summary.stages, "objects": summary.objects,
                  "resize": summary.resize, "baseline": baseline, "voxels": int(image.size),
                  "peak_mib": peak_mib()}))
"""


def stacks(data_root: str | None, large: bool, work: Path) -> list[tuple[str, Path, list | None]]:
    import numpy as np
    import tifffile

    from fveseg.synthetic import make_nuclei_volume, make_sample_volume

    out = []
    sample = make_sample_volume()
    tifffile.imwrite(work / "sample.tif", sample.image, metadata={"axes": "ZYX"})
    out.append(("sample 32×128×128", work / "sample.tif", list(sample.spacing)))
    if data_root:
        cells3d = np.load(Path(data_root) / "nuclei3d" / "cells3d_nuclei.npz")
        tifffile.imwrite(work / "cells3d.tif", cells3d["image"], metadata={"axes": "ZYX"})
        out.append(("cells3d 60×256×256", work / "cells3d.tif", [float(s) for s in cells3d["spacing_zyx"]]))
    if large:
        volume = make_nuclei_volume((64, 512, 512), seed=5)
        tifffile.imwrite(work / "large.tif", volume.image, metadata={"axes": "ZYX"})
        out.append(("procedural 64×512×512", work / "large.tif", list(volume.spacing)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", help="the folder holding nuclei3d/cells3d_nuclei.npz")
    parser.add_argument("--large", action="store_true", help="also a procedural 64×512×512 stack")
    parser.add_argument("--repeats", type=int, default=1, help="fresh processes per stack (one row each)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fveseg-e2e-"))
    print("| stack | fveseg segment (s) | baseline (s) | ratio | imports | read | model | probe | network | "
          "instances | write | resize | objects | peak MiB |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    runs = [stack for stack in stacks(args.data_root, args.large, work) for _ in range(args.repeats)]
    for number, (name, path, spacing) in enumerate(runs):
        out = work / f"{path.stem}-out{number}.tif"  # a new file each run: segment never overwrites
        run = subprocess.run(
            [sys.executable, "-c", CHILD, str(path), str(out), json.dumps(spacing)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        r = json.loads(run.stdout.strip().splitlines()[-1])
        stages = r["stages"]
        share = {key: f"{value / r['total']:.0%}" for key, value in stages.items()}
        keys = ("read", "load model", "probe", "network", "instances", "write")
        cells = [share.get(key, "-") for key in keys]
        print(
            f"| {name} | {r['total']:.1f} | {r['baseline']:.2f} | {r['total'] / r['baseline']:.0f}× | "
            f"{r['imports'] / r['total']:.0%} | {' | '.join(cells)} | "
            f"{r['resize']:g} | {r['objects']} | {r['peak_mib']:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
