"""The scheduler killed (SIGKILL) while deadlines are due: none is lost, none fires twice.

Customers talk in chats alice joined and never reads (``unread_3s`` falls due three
seconds after each join) and in chats where the customer leaves after alice's reply
(``email_offline_2s``). While those deadlines fall due, the scheduler is killed and
started again, five times (ten with CHATFLOW_FULL_FAULTS=1). A deadline the killed
scheduler had claimed but not handed out waits for its lease (60 s) and is claimed
again; the engine's episode memory keeps any from firing twice.
"""
from __future__ import annotations

import random
import time

from scaled_service import FULL
from scaled_service import wait_until
from workload import run_under_fault

KILLS, RATE = (10, 30.0) if FULL else (5, 30.0)
MESSAGES = int((KILLS * 2.5 + 10) * RATE) // 10 * 10


def test_a_scheduler_killed_while_deadlines_are_due_loses_none_and_fires_none_twice(service, smtp):
    due_at_kill = []
    rnd = random.Random(6)

    def kills(load):
        time.sleep(4)  # the first deadlines fall due
        for _ in range(KILLS):
            time.sleep(rnd.uniform(0.3, 1.0))
            # the moment a deadline is due and not yet fired (claimed or not); the joins come
            # early in the traffic, so later kills may find none due and kill anyway
            try:
                due = wait_until(lambda: service.scalar("SELECT count(*) FROM timers WHERE due <= :now",
                                                        now=time.time()), 3, "a deadline to fall due", poll=0.005)
            except AssertionError:
                due = 0
            service.kill("scheduler")
            due_at_kill.append(due)
            time.sleep(rnd.uniform(0.0, 0.5))
            service.scheduler()

    load, found, figures = run_under_fault(service, smtp, MESSAGES, RATE, kills, settle_seconds=150)
    fired = service.scalar("SELECT count(*) FROM notifications WHERE template = 'unread_3s'")
    print(f"{KILLS} scheduler kills; deadlines due at each kill: {due_at_kill}; unread_3s fired {fired}; "
          f"emails {smtp.total()}; {figures}")
    assert any(due_at_kill)  # at least one kill found deadlines due (the joins cluster early)
    assert load.errors == []
    assert not found, "\n".join(found)
    assert figures["dead processes"] == []
