"""Failed tasks raise TaskError with the guest's message; Ctrl-C cancels the job."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest

import fabric
from conftest import dashboard_job, interrupt_when_running, wait_until


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
    child, job, sent, out, err = interrupt_when_running(client, script)
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
        lambda: (lambda j: j if j["state"] == "cancelled" else None)(dashboard_job(dashboard, job["id"])),
    )
    assert time.monotonic() - sent < 10, f"cancelled {time.monotonic() - sent:.1f}s after the interrupt"
    assert seen["done"] == 0, seen
    assert all(j["id"] != job["id"] for j in client.status()["jobs"]), "a cancelled job is dropped"
