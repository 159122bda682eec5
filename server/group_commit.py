"""Group commit: commands that arrive together share one transaction.

A web process runs several requests at once. Each customer message used to be its own
transaction: BEGIN, read and lock the chat, UPDATE it, INSERT its events, COMMIT — five
round trips and a WAL flush per message. Here the request threads queue their commands;
one of them (the leader) takes every command waiting and runs them in one transaction,
while the others wait for their answers. No thread is added and no command waits for a
timer: a command arriving at an idle process is run at once, alone; commands pile up
only while a transaction is already on its way, which is exactly when sharing the next
one pays (PostgreSQL's own ``commit_delay`` works the same way).

The batch function decides what a failure means for the others (the runtime retries a
failed batch command by command); each caller gets its own result or its own exception.
"""
from __future__ import annotations

import threading


class _Waiting:
    __slots__ = ("item", "done", "result", "error")

    def __init__(self, item):
        self.item, self.done, self.result, self.error = item, False, None, None


class GroupCommit:
    """``submit(item)`` returns ``run_batch(items)[i]`` for its item, where ``run_batch``
    takes up to ``max_batch`` waiting items in arrival order and returns one outcome per
    item: a value, or an exception instance (raised in that caller's thread)."""

    def __init__(self, run_batch, max_batch: int = 64):
        self.run_batch, self.max_batch = run_batch, max_batch
        self._queue: list = []
        self._leading = False
        self._cond = threading.Condition()

    def submit(self, item):
        me = _Waiting(item)
        with self._cond:
            self._queue.append(me)
            while True:
                while not me.done and self._leading:
                    self._cond.wait()
                if me.done:
                    break
                # nobody is running a batch: this thread runs the next one (its own item
                # is in it unless more than max_batch arrived before it)
                self._leading = True
                batch, self._queue = self._queue[:self.max_batch], self._queue[self.max_batch:]
                self._cond.release()
                try:
                    self._run(batch)
                finally:
                    self._cond.acquire()
                    self._leading = False
                    self._cond.notify_all()
        if me.error is not None:
            raise me.error
        return me.result

    def _run(self, batch) -> None:
        try:
            outcomes = self.run_batch([w.item for w in batch])
            if len(outcomes) != len(batch):
                raise RuntimeError(f"a batch of {len(batch)} gave {len(outcomes)} outcomes")
        except BaseException as e:  # the batch function itself broke: every caller hears it
            outcomes = [e] * len(batch)
        for w, out in zip(batch, outcomes):
            if isinstance(out, BaseException):
                w.error = out
            else:
                w.result = out
            w.done = True
