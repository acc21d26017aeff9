"""Futures: client.submit and client.map against a real cluster, futures as arguments of
later calls, gather, as_completed (iterated and with ``async for``), failures and cancel."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import fabric
from conftest import dashboard_job, wait_until


def test_submit_returns_a_future_with_its_value(client: fabric.Client, math: fabric.Component) -> None:
    f = client.submit(math.inc, 41)
    assert isinstance(f, fabric.Future)
    assert f.type == "s64"
    assert f.key.startswith("inc-")
    assert f.result() == 42
    assert f.done()
    assert f.status == "finished"
    assert f.exception() is None
    assert repr(f) == f"<fabric.Future: finished, type: s64, key: {f.key}, job: {f.job}>"
    html = f._repr_html_()
    assert "Fabric future" in html and f.key in html and "finished" in html


def test_submit_by_parameter_name_and_with_a_key(client: fabric.Client, math: fabric.Component) -> None:
    f = client.submit(math.add, 2, b=5, key="futures-add-by-name")
    assert f.key == "futures-add-by-name"
    assert f.result() == 7
    # A lazy task is submitted as it is.
    assert client.submit(math.mul(6, 7)).result() == 42


def test_a_chain_of_futures_as_arguments(client: fabric.Client, math: fabric.Component) -> None:
    a = client.submit(math.inc, 1)
    b = client.submit(math.add, a, 10)
    c = client.submit(math.mul, b, a)
    d = client.submit(math.sum, [a, b, c, 100])
    assert (a.result(), b.result(), c.result(), d.result()) == (2, 12, 24, 138)
    # Futures in lazy calls, computed as a job of their own.
    e = math.add(d, math.inc(c))
    assert e.compute() == 163
    assert fabric.compute([math.inc(a), {"x": math.add(b, 1)}]) == ([3, {"x": 13}],)


def test_a_future_still_running_when_passed(client: fabric.Client, math: fabric.Component) -> None:
    slow = client.submit(math.slow_inc, 5, 800)
    # Sent at once: the scheduler runs `add` once `slow` is computed.
    later = client.submit(math.add, slow, 100)
    assert not slow.done(), "the slow task finished before the next submit returned"
    assert later.result() == 106
    assert slow.result() == 6
    # As an argument of a lazy call too.
    slow = client.submit(math.slow_inc, 7, 500)
    assert not slow.done()
    assert math.inc(slow).compute() == 9


def test_map_of_ten_thousand_calls_is_one_job(client: fabric.Client, math: fabric.Component) -> None:
    futures = client.map(math.inc, range(10_000))
    assert len(futures) == 10_000
    assert len({f.job for f in futures}) == 1
    assert client.gather(futures) == list(range(1, 10_001))
    assert fabric.gather({"first": futures[0], "rest": (futures[1], [futures[9_999]])}) == {
        "first": 1,
        "rest": (2, [10_000]),
    }


def test_map_zips_its_iterables(client: fabric.Client, math: fabric.Component) -> None:
    futures = client.map(math.add, [1, 2, 3], range(10, 100, 10))
    assert client.gather(futures) == [11, 22, 33]
    futures = client.map(math.slow_inc, range(3), ms=1)
    assert client.gather(futures) == [1, 2, 3]


def test_as_completed_follows_completion(client: fabric.Client, math: fabric.Component) -> None:
    # The fast calls go first, so that they do not queue behind the slow one on a busy
    # cluster; the slow one comes first in the list.
    fast = [client.submit(math.inc, i) for i in range(5)]
    slow = client.submit(math.slow_inc, 0, 1500)
    order = list(fabric.as_completed([slow, *fast]))
    assert order[-1] is slow
    assert sorted(f.key for f in order[:-1]) == sorted(f.key for f in fast)
    assert all(f.done() for f in order)
    # with_results: (future, value) pairs, in completion order too.
    fast = client.map(math.inc, range(3))
    slow = client.submit(math.slow_inc, 10, 1000)
    pairs = list(fabric.as_completed([slow, *fast], with_results=True))
    assert pairs[-1] == (slow, 11)
    assert sorted(v for _, v in pairs[:-1]) == [1, 2, 3]


def test_as_completed_takes_futures_added_while_iterating(client: fabric.Client, math: fabric.Component) -> None:
    ac = fabric.as_completed([client.submit(math.inc, 0)])
    seen = []
    for f in ac:
        seen.append(f.result())
        if f.result() < 3:
            ac.add(client.submit(math.inc, f))
    assert seen == [1, 2, 3]
    assert ac.is_empty() and ac.count() == 0


def test_as_completed_with_async_for(client: fabric.Client, math: fabric.Component) -> None:
    async def main() -> list:
        fast = client.map(math.inc, range(4))
        slow = client.submit(math.slow_inc, 1, 1000)
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        beat = asyncio.ensure_future(ticker())
        order = []
        async for f in fabric.as_completed([slow, *fast]):
            order.append(f)
        beat.cancel()
        # The loop ran on while the slow task did: it was never blocked.
        assert ticks >= 20, ticks
        assert order[-1] is slow
        assert await slow == 2
        return [f.result() for f in order]

    values = asyncio.run(main())
    assert sorted(values) == [1, 2, 2, 3, 4]


def test_a_wrong_argument_is_a_type_error_before_submitting(client: fabric.Client, math: fabric.Component) -> None:
    with pytest.raises(TypeError, match=r"math/add: parameter `b` expects s64, got string \"x\""):
        client.submit(math.add, 1, "x")
    f = client.submit(math.seq, 3)  # list<f64>
    with pytest.raises(TypeError, match=r"math/inc: parameter `x` expects s64, got future `seq-\d+`"):
        client.submit(math.inc, f)
    with pytest.raises(TypeError, match=r"math/inc: takes 1 argument \(func\(x: s64\) -> s64\), got 2"):
        client.map(math.inc, range(3), range(3))
    with pytest.raises(TypeError, match=r"submit: expects an export of a component \(such as `math.inc`\) or a task, got int"):
        client.submit(42)
    # No job was sent after seq's.
    assert all(j["id"] <= f.job for j in client.status()["jobs"])


def test_a_guest_panic_is_a_task_error(client: fabric.Client, faulty: fabric.Component, math: fabric.Component) -> None:
    boom = client.submit(faulty.boom, "kaboom")
    with pytest.raises(fabric.TaskError) as e:
        boom.result()
    err = e.value
    assert str(err) == f"task `{boom.key}` (faulty/boom) failed: panicked: kaboom"
    assert (err.task, err.call, err.message, err.job) == (boom.key, "faulty/boom", "kaboom", boom.job)
    assert boom.status == "error"
    assert isinstance(boom.exception(), fabric.TaskError)
    assert boom.exception().message == "kaboom"
    # A call that needs it fails with the guest's message too, before it is submitted.
    with pytest.raises(fabric.TaskError, match="kaboom"):
        client.submit(math.inc, boom)
    with pytest.raises(fabric.TaskError, match="kaboom"):
        client.gather([client.submit(math.inc, 1), boom])
    with pytest.raises(fabric.TaskError, match="kaboom"):
        list(fabric.as_completed([boom], with_results=True))


def test_result_times_out(client: fabric.Client, math: fabric.Component) -> None:
    slow = client.submit(math.slow_inc, 1, 2000)
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="did not finish within 0.2s"):
        slow.result(timeout=0.2)
    assert time.monotonic() - start < 1.5
    assert slow.result() == 2


def test_cancel_shows_on_the_scheduler(client: fabric.Client, math: fabric.Component) -> None:
    f = client.submit(math.slow_inc, 1, 60_000)
    wait_until(
        "the job to run",
        lambda: any(j["id"] == f.job and j["state"] == "running" for j in client.status()["jobs"]),
    )
    f.cancel()
    assert f.cancelled() and f.status == "cancelled"
    with pytest.raises(fabric.CancelledError, match=f"the future of `{f.key}` was cancelled"):
        f.result()
    # The scheduler records the job cancelled (not finished), and drops it from its jobs.
    dashboard = client.status()["dashboard"]
    assert dashboard, "the test's scheduler serves a dashboard"
    seen = wait_until("the job to be cancelled", lambda: dashboard_job(dashboard, f.job)["state"] == "cancelled")
    assert seen
    assert dashboard_job(dashboard, f.job)["done"] == 0
    assert all(j["id"] != f.job for j in client.status()["jobs"]), "a cancelled job is dropped"


def test_release_lets_go_of_the_value(client: fabric.Client, math: fabric.Component) -> None:
    f = client.submit(math.inc, 1)
    assert f.result() == 2
    f.release()
    assert f.status == "released"
    with pytest.raises(fabric.CancelledError, match="released"):
        f.result()


def test_ctrl_c_while_waiting_raises_at_once(client: fabric.Client, guests: Path, tmp_path: Path) -> None:
    script = tmp_path / "wait.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import fabric

            client = fabric.Client()
            math = client.component({str(guests / "math.wasm")!r})
            slow = client.submit(math.slow_inc, 1, 120_000)
            print("submitted", slow.job, flush=True)
            try:
                for f in fabric.as_completed([slow]):
                    pass
            except KeyboardInterrupt:
                print("interrupted", slow.status, flush=True)
                slow.cancel()
                raise
            """
        )
    )
    child = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.startswith("submitted"), (line, child.stderr.read() if child.stderr else "")
        time.sleep(0.3)
        sent = time.monotonic()
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert time.monotonic() - sent < 5, "the interrupt ends the wait at once"
    assert "interrupted pending" in out, (out, err)
    assert err.rstrip().endswith("KeyboardInterrupt"), err
