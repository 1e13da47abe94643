"""Run one piece of work from several threads released at the same instant (races in tests)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from django.db import connection

T = TypeVar("T")


def at_once(work: Callable[[], T], *, times: int, timeout: float = 60) -> list[T]:
    """Call `work` from `times` threads that start together; return their results.

    Each thread closes its own database connection when done (the test database must be
    droppable afterwards); an exception in any thread is raised here, not lost.
    """
    start = threading.Barrier(times)
    results: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            start.wait(timeout=timeout)
            results.append(work())
        except BaseException as exc:  # surfaced to the test below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(times)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout * 2)
    if errors:
        raise errors[0]
    assert len(results) == times, f"{times - len(results)} thread(s) did not finish"
    return results
