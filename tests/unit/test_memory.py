"""tokenscale.memory: glibc's allocator options and the per-cycle trim, on this process."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tokenscale.memory import release_free_memory, tune_allocator

STATM = Path("/proc/self/statm")


def resident_mb() -> float:
    """This process's resident set (MB), from /proc/self/statm."""
    pages = int(STATM.read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def test_bad_options_are_refused_before_anything_is_set() -> None:
    with pytest.raises(ValueError, match="arena_max must be at least 1"):
        tune_allocator(arena_max=0)
    with pytest.raises(ValueError, match="mmap_threshold_bytes"):
        tune_allocator(mmap_threshold_bytes=-5)


@pytest.mark.skipif(not STATM.exists(), reason="needs /proc (Linux)")
def test_trim_returns_the_free_pages_between_live_objects() -> None:
    if not tune_allocator():
        pytest.skip("the C library is not glibc")
    # 120,000 buffers of 600 bytes (above CPython's small-object limit: glibc's malloc) are
    # freed but one in every `stride`: the freed runs between the survivors span at least two
    # whole pages, which glibc keeps inside its heap until it is trimmed.
    stride = max(20, 3 * os.sysconf("SC_PAGE_SIZE") // 600 + 1)
    buffers = [bytearray(600) for _ in range(120_000)]
    survivors = buffers[::stride]
    del buffers
    before = resident_mb()
    released = release_free_memory()
    after = resident_mb()
    assert released
    assert before - after > 20, (before, after)
    assert len(survivors) == -(-120_000 // stride)
