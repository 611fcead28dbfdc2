"""No leak over 1000 Session create/destroy cycles (RSS bound)."""

from __future__ import annotations

import os

import kvsteer

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def cycle(model, n):
    for _ in range(n):
        s = kvsteer.Session(model, n_ctx=64, n_batch=64, n_threads=1)
        s.decode([1, 2, 3])
        s.close()
        del s


def test_sessions_do_not_leak(stories):
    cycle(stories, 100)  # allocator and libllama warm-up
    before = rss_bytes()
    cycle(stories, 1000)
    growth = rss_bytes() - before
    print(f"RSS growth over 1000 Session cycles: {growth / 1024:.0f} KiB")
    # A leaked context (its KV cache and compute buffers) is > 100 KiB, so 1000 of them would
    # be > 100 MiB; 4 MiB leaves room for allocator noise.
    assert growth < 4 * 1024 * 1024, growth
