"""Thread counts of the processes promptdiff starts, and the CPU they run on.

Torch (and OpenMP under it) uses every core by default; several processes doing so on the same
cores run many times slower than one (15x to 100x measured on 2 cores). Every process promptdiff
spawns therefore gets an explicit count: a benchmark cell its share (`OMP_NUM_THREADS` in its
environment, see `promptdiff.benchmark`), and the workers that only step environments or act with a
small network (collection workers, asynchronous vector-env workers, the expert's SubprocVecEnv
workers) one thread each, by calling `limit_threads` first thing in the worker.

Results record the CPU (`cpu_model`) beside the thread count: torch picks its float32 kernels by the
CPU's instruction set (AVX512, AVX2, ...), and their last-bit differences grow, over a locomotion
episode, into other returns, so a run is bit-identical on one machine, not across machines.
"""

from __future__ import annotations

import os
import sys


def limit_threads(n: int = 1) -> None:
    """This process (and what it starts) uses `n` torch/OpenMP threads."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    if "torch" in sys.modules:  # already imported: its pool size is set; else it reads the variables above
        sys.modules["torch"].set_num_threads(n)


def in_worker(make, *args, **kwargs):
    """`make(*args, **kwargs)` in a worker process, after `limit_threads(1)` (for env factories run in workers)."""
    limit_threads(1)
    return make(*args, **kwargs)


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what `platform` says, else "unknown"."""
    import platform

    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"
