"""Failed tasks raise TaskError with the guest's message; Ctrl-C cancels the job."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path
from typing import Any, Dict

import pytest

import fabric
from conftest import wait_until


def test_a_guest_panic_is_a_task_error(faulty: fabric.Component, math: fabric.Component) -> None:
    boom = faulty.boom("kaboom")
    downstream = math.inc(boom)
    with pytest.raises(fabric.TaskError) as e:
        fabric.compute(downstream)
    err = e.value
    assert str(err) == f"task `{boom.key}` (faulty/boom) panicked: kaboom"
    assert (err.task, err.call, err.message) == (boom.key, "faulty/boom", "kaboom")
    assert err.error == "panicked: kaboom"
    assert err.attempts == 1
    assert [f.task for f in err.failures] == [boom.key]
    assert isinstance(err, fabric.FabricError)


def test_an_error_result_is_a_task_error(faulty: fabric.Component) -> None:
    with pytest.raises(fabric.TaskError) as e:
        faulty.fail("nope").compute()
    assert e.value.message == "nope"
    assert e.value.error == "returned an error: nope"


def test_an_unreachable_scheduler_is_a_fabric_error() -> None:
    with pytest.raises(fabric.FabricError) as e:
        fabric.Client("127.0.0.1:1", token="x")
    assert "cannot connect to the scheduler at http://127.0.0.1:1" in str(e.value)


def _job(dashboard: str, job: int) -> Dict[str, Any]:
    """The dashboard's JSON of one job."""
    request = urllib.request.Request(
        f"{dashboard.rstrip('/')}/api/v1/jobs/{job}",
        headers={"Authorization": f"Bearer {os.environ['FABRIC_TOKEN']}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        seen: Dict[str, Any] = json.load(response)
        return seen


def test_ctrl_c_during_compute_cancels_the_job(client: fabric.Client, guests: Path, tmp_path: Path) -> None:
    script = tmp_path / "slow.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import fabric

            client = fabric.Client()
            math = client.component({str(guests / "math.wasm")!r})
            try:
                math.slow_inc(1, 120_000).compute()
            except KeyboardInterrupt:
                print("interrupted", flush=True)
                raise
            """
        )
    )
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
    assert time.monotonic() - sent < 10, "the interrupt ends the wait at once"
    assert child.returncode != 0, (out, err)
    assert "interrupted" in out, (out, err)
    assert err.rstrip().endswith("KeyboardInterrupt"), err
    # The scheduler shows the job cancelled, at once: the client cancelled it, rather than
    # the scheduler after its client went away (30 s later, by default).
    dashboard = client.status()["dashboard"]
    assert dashboard, "the test's scheduler serves a dashboard"
    seen = wait_until(
        "the job to be cancelled",
        lambda: (lambda j: j if j["state"] == "cancelled" else None)(_job(dashboard, job["id"])),
    )
    assert time.monotonic() - sent < 10, f"cancelled {time.monotonic() - sent:.1f}s after the interrupt"
    assert seen["done"] == 0, seen
    assert all(j["id"] != job["id"] for j in client.status()["jobs"]), "a cancelled job is dropped"
