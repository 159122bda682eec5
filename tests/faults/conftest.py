"""Fault-test fixtures: a Redis of the tests' own (started here on a free loopback port,
so a test may stop it without touching the shared one), an SMTP server that counts, and
the scaled service on a scratch PostgreSQL database (dropped after the test).

PostgreSQL is the shared server (.ci/run starts it); when it is not reachable the
fixture fails with the reason instead of skipping. CHATFLOW_FULL_FAULTS=1 runs the
full sizes (5,000 messages, ten kills); the default sizes keep CI short.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from scaled_service import OwnRedis, Service, SmtpCounter



@pytest.fixture(scope="session")
def own_redis():
    r = OwnRedis()
    try:
        r.start()
        yield r
    finally:
        r.close()


@pytest.fixture
def smtp():
    s = SmtpCounter()
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def service(own_redis, smtp, request):
    if not own_redis.ping():  # a test that stopped it failed before starting it again
        own_redis.stop()
        own_redis.start()
    s = Service(own_redis.url, smtp.url)
    try:
        s.prepare()
        yield s
    finally:
        rep = getattr(request.node, "rep_call", None)
        if rep is not None and rep.failed:  # what the processes said, kept to explain the failure
            kept = tempfile.mkdtemp(prefix="chatflow-fault-logs-")
            for log in Path(s.data_dir).glob("*.log"):
                shutil.copy(log, kept)
            print(f"the processes' logs are kept in {kept}")
        s.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call":
        item.rep_call = rep
