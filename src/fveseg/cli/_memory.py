"""Keep the memory a one-shot ``fveseg`` process frees, for its next arrays.

With glibc's defaults every large array is a mapping of its own, returned to the system when freed, and
the heap gives back its free top above 128 KiB, so each new full-volume array (mask, distance map,
labels, a batch of network outputs) is paged in afresh. Pages cost 0.1-3.6 ms per MiB on the project
machine (a fresh 100 MiB array 15-360 ms, a reused one 10 ms), and a cells3d job allocates some hundreds
of MiB that way: `keep_freed_memory` took `fveseg segment` on cells3d from 5.6-6.4 s to 4.8-5.2 s with
the same peak memory (851-865 MiB; docs/benchmarks.md). Only for the command line's own process, which
ends with its job: long-lived processes (napari, dask workers) should hand freed memory back.
"""

from __future__ import annotations

import ctypes
import sys

#: glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: Arrays up to this size come from the heap (glibc's own ceiling for its moving threshold, 64-bit).
MMAP_THRESHOLD = 32 * 2**20
#: Free heap memory kept rather than given back (a job's arrays are freed and allocated again and again).
TRIM_THRESHOLD = 2**30


def keep_freed_memory() -> bool:
    """Tell glibc's allocator to keep freed memory for reuse; True when it took both settings.

    A no-op returning False where the C library is not glibc (macOS, Windows, musl's stub `mallopt`).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # Both or none: the trim setting alone also freezes glibc's moving mmap threshold at 128 KiB, so
    # every array would be mapped afresh (cells3d 5.6-5.8 s -> 7.8-8.1 s, measured)
    if not mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD):
        return False
    return bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
