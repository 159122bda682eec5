"""What the scaled tests share besides fixtures: the moment their clock starts at, the
clock, and running queued jobs in this process.

Test modules import these by name (pytest loads only ``conftest.py`` by itself); the
fixtures built on them (``clock``, ``start_scaled``) are in conftest.py.
"""
from __future__ import annotations

from server import jobs

T0 = 1767603600.0  # 2026-01-05T09:00:00Z


class Clock:
    """The service's one notion of now (config ``CLOCK``); a test moves it by setting ``now``."""

    def __init__(self):
        self.now = T0

    def __call__(self):
        return self.now


def work(*queues) -> None:
    """Run the jobs queued on ``queues`` in this process, as `chatflow worker --burst` does."""
    from rq import SimpleWorker

    jobs.flush_dispatchers()  # the web side's batched enqueues, done before the worker looks
    SimpleWorker(list(queues), connection=queues[0].connection, serializer=queues[0].serializer).work(burst=True)
