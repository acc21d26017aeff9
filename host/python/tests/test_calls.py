"""Calls checked against WIT signatures, lazy chains computed exactly, values mapped to Python."""

from __future__ import annotations

import array
import os
import signal
import threading
import time
from pathlib import Path

import pytest

import fabric


def test_delayed_chain_gives_exact_results(math: fabric.Component) -> None:
    a = math.inc(1)
    b = math.add(a, 2)
    c = math.sum([a, b, 10])
    assert (a.type, b.type, c.type) == ("s64", "s64", "s64")
    assert fabric.compute(c) == (16,)
    assert fabric.compute(a, b, c) == (2, 4, 16)
    assert c.compute() == 16
    # A long chain, each step depending on the one before.
    x = math.inc(0)
    for _ in range(199):
        x = math.inc(x)
    assert x.compute() == 200
    # Tasks inside lists, tuples and dicts come back in the same places; other values stay.
    assert fabric.compute({"a": [a, (b, "kept")], "n": 7}) == ({"a": [2, (4, "kept")], "n": 7},)
    # Wrapping arithmetic of s64, as the guest does it.
    assert math.inc(2**63 - 1).compute() == -(2**63)


def test_client_compute_and_keyword_arguments(client: fabric.Client, math: fabric.Component) -> None:
    t = math.clamp(x=15, range=(0, 10))
    assert client.compute(t, math.clamp(-3, [0, 10])) == (10, 0)
    # WIT names with `-` are attributes with `_`, or items by their own name.
    assert math.dag_step([1, 2], 5).compute() == 4
    assert math["dag-step"]([1, 2], 0).compute() == 4
    assert math.call("slow-inc", 1, 0).compute() == 2
    assert "dag_step" in dir(math)
    assert math.exports["add"] == "func(a: s64, b: s64) -> s64"
    assert math.add.signature == "func(a: s64, b: s64) -> s64"


def test_wrong_types_are_type_errors_at_the_call(math: fabric.Component) -> None:
    a = math.inc(1)
    with pytest.raises(TypeError) as e:
        math.add(a, "x")
    assert str(e.value) == 'math/add: parameter `b` expects s64, got string "x"'
    with pytest.raises(TypeError) as e:
        math.seq(-1)
    assert str(e.value) == "math/seq: parameter `n` expects u32, got integer -1 (out of range)"
    with pytest.raises(TypeError) as e:
        math.sum([a, math.seq(3)])
    assert str(e.value) == (
        "math/sum: parameter `xs` at [1] expects s64, got task `seq-0` (math/seq) "
        "returning list<f64>"
    )
    with pytest.raises(TypeError) as e:
        math.add(1)
    assert str(e.value) == "math/add: takes 2 arguments (func(a: s64, b: s64) -> s64), got 1"
    with pytest.raises(TypeError) as e:
        math.round(1.5, "up")
    assert "parameter `mode` expects enum { floor, ceil, nearest }, got unknown case `up`" in str(e.value)
    with pytest.raises(TypeError) as e:
        math.add(1, {2})
    assert str(e.value) == "math/add: parameter `b` expects s64, got list of 1"
    with pytest.raises(TypeError) as e:
        math.add(1, object())
    assert str(e.value) == "math/add: parameter `b` expects s64, got object of type `object`"
    with pytest.raises(TypeError) as e:
        math.add(1, c=2)
    assert str(e.value) == "math/add: no parameter `c` (func(a: s64, b: s64) -> s64)"
    with pytest.raises(TypeError) as e:
        math.norm({"shape": [2]})
    assert str(e.value) == "math/norm: parameter `c` at .data expects list<f64>, got nothing (missing field)"
    with pytest.raises(AttributeError) as e:
        math.inx(1)
    assert str(e.value).startswith("component `math` has no export `inx` (it exports: add, clamp,")
    with pytest.raises(TypeError):
        bool(a)


def test_values_map_to_python(math: fabric.Component) -> None:
    seq = math.seq(4).compute()
    assert isinstance(seq, memoryview)
    assert (seq.format, seq.tolist()) == ("d", [0.0, 1.0, 2.0, 3.0])
    assert math.stats([1.0, 2.0, 6.0]).compute() == {"count": 3, "min": 1.0, "max": 6.0, "mean": 3.0}
    assert math.mean([]).compute() is None
    assert math.mean([2.0, 4.0]).compute() == 3.0
    assert math.round(2.5, "ceil").compute() == 3
    assert math.round(-2.5, fabric.Variant("nearest")).compute() == -3
    assert math.dot([1.0, 2.0], [3.0, 4.0]).compute() == 11.0
    # A chunk record holding a list of floats comes back with a memoryview inside.
    clipped = math.clip({"shape": [3], "data": [-1.0, 0.5, 2.0]}, 0.0, 1.0).compute()
    assert clipped["shape"].tolist() == [3]
    assert clipped["data"].tolist() == [0.0, 0.5, 1.0]


def test_buffers_and_iterables_are_lists(math: fabric.Component) -> None:
    assert math.fsum(array.array("d", [1.5, 2.5])).compute() == 4.0
    assert math.fsum(array.array("i", [1, 2, 3])).compute() == 6.0
    assert math.fsum(memoryview(array.array("f", [0.5, 0.25]))).compute() == 0.75
    assert math.sum(range(5)).compute() == 10
    assert math.sum(x * x for x in range(4)).compute() == 14
    assert math.fsum((1.0, 2.0)).compute() == 3.0
    assert math.scale(math.seq(3), 2.0).compute().tolist() == [0.0, 2.0, 4.0]
    with pytest.raises(TypeError) as e:
        math.sum(array.array("d", [1.5]))
    assert str(e.value) == "math/sum: parameter `xs` at [0] expects s64, got number 1.5"


def test_task_options_and_names(math: fabric.Component) -> None:
    t = math.inc(41).named("answer").with_retries(2).with_timeout(30).with_memory(64)
    assert t.key == "answer"
    graph = t.to_graph()
    assert graph["outputs"] == ["answer"]
    assert graph["tasks"]["answer"] == {
        "call": "math/inc",
        "args": [41],
        "retries": 2,
        "timeout_ms": 30000,
        "memory_mib": 64,
    }
    assert t.compute() == 42
    with pytest.raises(ValueError) as e:
        math.inc(1).named("answer")
    assert str(e.value) == "task name `answer` is taken in this session"
    with pytest.raises(ValueError):
        math.inc(1).with_timeout(-1)


def test_persisted_values_are_reused(client: fabric.Client, math: fabric.Component) -> None:
    a = math.inc(1)
    b = math.add(a, 2)
    kept_a, kept_b = client.persist(a, b, name="py-prep")
    assert (kept_a.dataset, kept_a.key, kept_a.type) == ("py-prep", a.key, "s64")
    assert "py-prep" in client.datasets()
    assert math.mul(kept_a, kept_b).compute() == 8
    (only,) = fabric.persist(math.inc(9))
    assert only.dataset.startswith("python-")
    assert math.add(only, 0).compute() == 10
    with pytest.raises(TypeError):
        kept_a.compute()
    assert client.forget("py-prep")
    assert "py-prep" not in client.datasets()


def test_the_gil_is_released_while_waiting(math: fabric.Component) -> None:
    slow = math.slow_inc(1, 1500)
    result = []
    waiter = threading.Thread(target=lambda: result.append(slow.compute()))
    waiter.start()
    time.sleep(0.2)
    # This thread runs Python while the other waits for its job.
    spins = 0
    end = time.monotonic() + 0.5
    while time.monotonic() < end:
        spins += 1
    assert waiter.is_alive(), "the job lasts 1.5 s"
    waiter.join(60)
    assert result == [2]
    assert spins > 10_000, f"only {spins} iterations ran while another thread waited"


def test_a_forked_child_makes_clients_of_its_own(math: fabric.Component, guests: Path) -> None:
    # The parent's client (and its runtime's threads) are running.
    assert math.inc(1).compute() == 2
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            with fabric.Client() as child:
                code = 0 if child.component(guests / "math.wasm").inc(41).compute() == 42 else 2
        finally:
            os._exit(code)
    deadline = time.monotonic() + 60
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError("the forked child hung")
        time.sleep(0.02)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    assert math.inc(2).compute() == 3
