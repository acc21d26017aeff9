"""Fixtures of the Python package's tests: a client of the cluster the Rust test started
(``FABRIC_SCHEDULER``, ``FABRIC_TOKEN``), the guest components (``FABRIC_GUESTS``), the
``fabric`` binary (``FABRIC_BIN``) and a directory the workers may read (``FABRIC_DATA_DIR``).
tests/all/python.rs sets them all; to run these tests by hand, start a scheduler and a worker
(``--data-dir``) and set them yourself.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, Tuple, TypeVar

import pytest

import fabric

T = TypeVar("T")


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(
            f"{name} is not set: these tests run from tests/all/python.rs "
            "(cargo test -p fabric-tests --test all python), which sets it"
        )
    return value


@pytest.fixture(scope="session")
def guests() -> Path:
    """The directory of the guest example components (math.wasm, faulty.wasm...)."""
    return Path(_env("FABRIC_GUESTS"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """A directory the cluster's workers may read and write (``fabric worker --data-dir``),
    for the files of the dataframe and array tests."""
    return Path(_env("FABRIC_DATA_DIR"))


@pytest.fixture(scope="session")
def client() -> Iterator[fabric.Client]:
    """A client of the test's cluster, found through FABRIC_SCHEDULER and FABRIC_TOKEN."""
    _env("FABRIC_SCHEDULER")
    _env("FABRIC_TOKEN")
    with fabric.Client() as c:
        yield c


@pytest.fixture(scope="session")
def math(client: fabric.Client, guests: Path) -> fabric.Component:
    return client.component(guests / "math.wasm")


@pytest.fixture(scope="session")
def faulty(client: fabric.Client, guests: Path) -> fabric.Component:
    return client.component(guests / "faulty.wasm")


def wait_until(what: str, check: Callable[[], Optional[T]], limit: float = 60.0) -> T:
    """Polls ``check`` until it returns something truthy; fails after ``limit`` seconds."""
    start = time.monotonic()
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() - start > limit:
            raise AssertionError(f"timed out after {limit}s waiting for {what}")
        time.sleep(0.02)


def dashboard_job(dashboard: str, job: int) -> Dict[str, Any]:
    """The dashboard's JSON of one job."""
    request = urllib.request.Request(
        f"{dashboard.rstrip('/')}/api/v1/jobs/{job}",
        headers={"Authorization": f"Bearer {os.environ['FABRIC_TOKEN']}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        seen: Dict[str, Any] = json.load(response)
        return seen


def interrupt_when_running(
    client: fabric.Client, script: Path
) -> Tuple[subprocess.Popen[str], Dict[str, Any], float, str, str]:
    """Runs ``script`` in a child interpreter, sends it SIGINT once the job it submitted
    runs, and waits for it to end: the child, its job (as ``client.status()`` listed it),
    when the signal was sent, and what the child printed on stdout and stderr."""
    before = {j["id"] for j in client.status()["jobs"]}
    child = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        job = wait_until(
            "the child's job to run",
            lambda: next(
                (j for j in client.status()["jobs"] if j["id"] not in before and j["state"] == "running"),
                None,
            ),
        )
        sent = time.monotonic()
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    return child, job, sent, out, err
