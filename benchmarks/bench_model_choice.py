"""Cost of choosing the model by noise: `AutoSegmenter.segment` against `Segmenter.segment`, side by side.

With no model given, the CLI, dask workers and the widget first measure the volume's noise
(`fveseg.normalize.noise_level`: 8 slices, centred crops of at most 1024 × 1024) and then run one network.
This prints, per volume, the median time of the noise measure alone, of the default network's
``segment`` and of ``AutoSegmenter.segment`` (runs interleaved, so machine noise hits all three), their
ratio, and the peak memory the noise measure allocates (tracemalloc) beside the volume's own size.

    .venv/bin/python benchmarks/bench_model_choice.py [--repeats 3]

Volumes are procedural and clean (no data needed), so both ways run the same default network; the
difference is the measurement.
"""

from __future__ import annotations

import argparse
import statistics
import time
import tracemalloc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import numpy as np

    from fveseg.inference.model_choice import AutoSegmenter
    from fveseg.inference.segmenter import Segmenter
    from fveseg.normalize.noise import noise_level
    from fveseg.synthetic import make_nuclei_volume

    plain = Segmenter("default", device="cpu")
    auto = AutoSegmenter(plain)
    small = make_nuclei_volume((32, 128, 128), seed=3).image
    volumes = {
        "32x128x128": small,
        "32x512x512 (tiled)": np.tile(small, (1, 4, 4)),
        "8x2048x2048 (measure only)": np.tile(small[:8], (1, 16, 16)),
    }
    columns = ["volume", "noise measure (s)", "Segmenter.segment (s)", "AutoSegmenter.segment (s)"]
    columns += ["ratio auto / plain", "measure peak memory (MB) / volume (MB)"]
    print("| " + " | ".join(columns) + " |")
    print("|---|---|---|---|---|---|")
    for name, volume in volumes.items():
        measure_only = "measure only" in name
        times: dict[str, list[float]] = {"measure": [], "plain": [], "auto": []}
        for _ in range(args.repeats):
            for way in ("measure", "plain", "auto"):
                if measure_only and way != "measure":
                    continue
                start = time.perf_counter()
                if way == "measure":
                    noise_level(volume)
                else:
                    (plain if way == "plain" else auto).segment(volume, ["nuclei"], scale=1.0)
                times[way].append(time.perf_counter() - start)
        tracemalloc.start()
        noise_level(volume)
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        median = {way: statistics.median(t) if t else float("nan") for way, t in times.items()}
        ratio = median["auto"] / median["plain"] if not measure_only else float("nan")
        cells = [name, f"{median['measure']:.3f}", f"{median['plain']:.2f}", f"{median['auto']:.2f}"]
        cells += [f"{ratio:.3f}", f"{peak:.0f} / {volume.nbytes / 2**20:.0f}"]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
