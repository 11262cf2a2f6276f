"""One thread per call, all at once: the tests' thread-safety checks and benchmarks.serve's closed loop.

Standard library only, no pytest: the benchmarks import it too (benchmarks/common.py puts tests/ on
the import path), and the tests import nothing from the benchmarks.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


def in_threads(work: Callable[[int], Any], count: int) -> list:
    """work(i) for i in range(count), each on its own thread, all at once: their results in order.
    An exception in any thread fails the caller (re-raised here), not just that thread."""
    results, errors = [None] * count, []

    def run(i: int) -> None:
        try:
            results[i] = work(i)
        except Exception as e:  # noqa: BLE001 - re-raised in the caller's thread below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results
