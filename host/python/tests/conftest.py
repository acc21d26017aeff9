"""Fixtures of the Python package's tests: a client of the cluster the Rust test started
(``FABRIC_SCHEDULER``, ``FABRIC_TOKEN``), the guest components (``FABRIC_GUESTS``), the
``fabric`` binary (``FABRIC_BIN``) and a directory the workers may read (``FABRIC_DATA_DIR``).
tests/all/python.rs sets them all; to run these tests by hand, start a scheduler and a worker
(``--data-dir``) and set them yourself.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, Iterator, Optional, TypeVar

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
