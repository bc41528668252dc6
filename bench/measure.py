"""Timing and peak memory of a callable, for the benchmarks: round-robin medians, and peak CUDA memory
or peak RSS of one call on CPU.

Beside the benchmarks that use it; they run as scripts (``python bench/step_time.py``), which puts bench/
on the import path.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

MiB = 2**20


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_times(variants: dict, args) -> dict[str, float]:
    """Median seconds per call of each variant, timed round-robin."""
    for _ in range(args.warmup):
        for fn in variants.values():
            fn()
    times = {name: [] for name in variants}
    for _ in range(args.iters):
        for name, fn in variants.items():
            sync(args.device)
            t0 = time.perf_counter()
            fn()
            sync(args.device)
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def _rss_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _libc():
    try:
        import ctypes
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def return_freed_memory_to_the_os() -> bool:
    """CPU only: make glibc serve every allocation of 64 KiB or more with its own mmap and unmap it on
    free. By default glibc raises that threshold after the first frees and keeps freed tensors in its
    heap, so a step that reuses the previous step's memory shows no RSS growth at all; with a fixed
    threshold (and the heap trimmed) RSS follows the live tensors and a step's peak RSS is what it needs."""
    libc = _libc()
    if libc is None or not hasattr(libc, "mallopt"):
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    ok = libc.mallopt(M_MMAP_THRESHOLD, 64 * 1024) and libc.mallopt(M_TRIM_THRESHOLD, 128 * 1024)
    return bool(ok)


def trim_heap() -> None:
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def peak_memory(fn, device: torch.device) -> tuple[float, float | None, str]:
    """(peak MiB, peak MiB above the level before ``fn`` or None, what was measured)."""
    if device.type == "cuda":
        sync(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        sync(device)
        peak = torch.cuda.max_memory_allocated(device)
        return peak / MiB, (peak - before) / MiB, "CUDA max_memory_allocated"
    trim_heap()
    try:  # Linux: writing 5 resets the peak-RSS high-water mark (VmHWM) to the current RSS
        Path("/proc/self/clear_refs").write_text("5")
        resettable = _rss_kib("VmHWM") is not None
    except OSError:
        resettable = False
    before = _rss_kib("VmRSS")
    fn()
    if resettable and before is not None:
        peak = _rss_kib("VmHWM")
        return peak / 1024, (peak - before) / 1024, "CPU peak RSS (VmHWM, reset per step)"
    import resource  # not resettable: the process's lifetime peak, an upper bound
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, None, "CPU lifetime peak RSS (ru_maxrss)"
