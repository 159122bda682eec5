"""SPEC §5: "a killed worker … loses no event and repeats no effect".

Customers send messages through gunicorn at a steady rate while two ``chatflow worker``
processes run the rules; again and again, one worker is killed with SIGKILL at a moment
it is in the middle of a batch (RQ names its current job) and a fresh one is started.
Afterwards every acknowledged message is stored once, every event is processed, every
due deadline fired once, every email reached the SMTP server once, and neither of two
agent event streams received a notification twice. (That each stream receives every
notification is test_stream_gaps.py's: it does not, see there.)

Default: 1,000 messages and 3 kills; CHATFLOW_FULL_FAULTS=1: 5,000 messages, 10 kills.
"""
from __future__ import annotations

import time

from scaled_service import FULL
from scaled_service import AgentStream, wait_until
from workload import (Workload, problems, settled, stream_misses, stream_state,
                      streams_caught_up)

MESSAGES, KILLS, RATE = (5000, 10, 50.0) if FULL else (1000, 3, 50.0)


def test_workers_killed_in_the_middle_of_a_batch_lose_nothing_and_repeat_nothing(service, smtp):
    port = service.web()
    service.worker("worker0")
    service.worker("worker1")
    service.scheduler()
    load = Workload(port, MESSAGES, rate=RATE)
    streams = [AgentStream(port, load.alice, "sse-1"), AgentStream(port, load.alice, "sse-2")]
    killed = []
    try:
        traffic = load.start(seconds=MESSAGES / RATE * 3 + 60)
        spawned = 2
        for k in range(KILLS):
            wait_until(lambda: load.sent >= load.total * (k + 1) / (KILLS + 1), MESSAGES / RATE * 3,
                       f"kill {k + 1}: the traffic to reach its point")
            name, job, chats = wait_until(service.busy_worker, 30, "a worker in the middle of a batch", poll=0.002)
            service.kill(name)  # SIGKILL to its process group
            killed.append((name, job, chats))
            service.worker(f"worker{spawned}")
            spawned += 1
        traffic.join(MESSAGES / RATE * 3 + 90)
        assert not traffic.is_alive(), "the traffic did not end"
        t0 = time.monotonic()
        wait_until(lambda: settled(service, load, smtp), 120, "the service to settle after the kills", poll=0.5)
        print(f"settled {time.monotonic() - t0:.1f} s after the traffic ended")
        try:
            wait_until(lambda: streams_caught_up(service, streams), 40, "the event streams to catch up", poll=0.5)
        except AssertionError as e:
            raise AssertionError(f"{e}: {stream_state(service, streams)}") from None
    finally:
        for s in streams:
            s.close()
    print(f"killed {len(killed)} workers mid-batch: {killed}")
    assert len(killed) == KILLS
    assert load.errors == []
    assert sum(len(ch.acked) for ch in load.chats) == load.total
    print(f"stream misses (test_stream_gaps.py): {stream_misses(service, streams)}")
    found = problems(service, load, smtp, streams, streams_complete=False)
    assert not found, "\n".join(found)
