"""Keep the operator's resident memory (RSS, MB) near its live heap, on glibc.

Every cycle builds and drops tens of MB of short-lived objects (Prometheus answers, API
bodies, statuses). CPython hands objects above 512 bytes to the C allocator; glibc keeps what
they free in up to 8 arenas per core (one per thread that allocated: the API worker threads,
the informer's watch threads) and trims an arena only from its top, so freed memory stays
resident and RSS grows well past the live heap. Measured at 2,500 budgets on one operator
(BENCHMARKS.md, issue 15): peak RSS 357 MB with glibc's defaults, 318 MB with two arenas,
allocations of 128 KiB and more mapped on their own, and free memory above 128 KiB at an
arena's top returned at once.

:func:`tune_allocator` sets those three options (``mallopt``) at the start of `tokenscale
run`, before threads are started; :func:`release_free_memory` (``malloc_trim``) returns the
free pages inside the arenas after each cycle. Both are no-ops where the C library lacks them
(musl, macOS): the operator then runs on that allocator's defaults.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging

log = logging.getLogger(__name__)

# glibc's mallopt parameter numbers (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

#: Arenas the operator's threads share (glibc's default: 8 per core).
ARENA_MAX = 2
#: Allocations of at least this size (bytes) are mapped on their own and unmapped on free.
MMAP_THRESHOLD_BYTES = 128 * 1024
#: Free memory (bytes) at an arena's top above which glibc returns it at once.
TRIM_THRESHOLD_BYTES = 128 * 1024


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (it has ``mallopt`` and ``malloc_trim``), else None.

    The process's own symbols first (the interpreter links the C library; no ``ldconfig``
    needed, which slim and distroless images lack), then the library by name."""
    libc: ctypes.CDLL | None = None
    for name in (None, ctypes.util.find_library("c")):
        try:
            candidate = ctypes.CDLL(name)
        except OSError:
            continue
        if hasattr(candidate, "mallopt") and hasattr(candidate, "malloc_trim"):
            libc = candidate
            break
    if libc is None:
        return None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    libc.malloc_trim.argtypes = [ctypes.c_size_t]
    libc.malloc_trim.restype = ctypes.c_int
    return libc


def tune_allocator(
    arena_max: int = ARENA_MAX,
    mmap_threshold_bytes: int = MMAP_THRESHOLD_BYTES,
    trim_threshold_bytes: int = TRIM_THRESHOLD_BYTES,
) -> bool:
    """Set glibc's arena count and thresholds for this process; True when all three took.

    Call it before the process starts threads: arenas already created stay.
    """
    for name, value in (("arena_max", arena_max), ("mmap_threshold_bytes",
                        mmap_threshold_bytes), ("trim_threshold_bytes", trim_threshold_bytes)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    libc = _glibc()
    if libc is None:
        log.debug("C library is not glibc: allocator left at its defaults")
        return False
    results = [
        libc.mallopt(M_ARENA_MAX, arena_max),
        libc.mallopt(M_MMAP_THRESHOLD, mmap_threshold_bytes),
        libc.mallopt(M_TRIM_THRESHOLD, trim_threshold_bytes),
    ]
    return all(result == 1 for result in results)


def release_free_memory() -> bool:
    """Return the free pages inside glibc's arenas to the kernel; True when some were."""
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.malloc_trim(0))
