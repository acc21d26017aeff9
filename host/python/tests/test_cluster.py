"""LocalCluster (real scheduler and worker processes, started and stopped), scale, HTML reprs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import fabric
from conftest import wait_until


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_local_cluster_starts_and_stops(guests: Path) -> None:
    with fabric.LocalCluster(n_workers=2, threads_per_worker=1) as cluster:
        assert cluster.n_workers == 2
        assert cluster.scheduler_address.startswith("http://127.0.0.1:")
        pids = cluster.pids
        assert len(pids) == 3 and all(_alive(p) for p in pids)
        with fabric.Client(cluster) as client:
            assert client.cluster is cluster
            assert len(client.status()["workers"]) == 2
            math = client.component(guests / "math.wasm")
            assert fabric.compute(math.add(math.inc(1), 2)) == (4,)
            html = cluster._repr_html_()
            assert "Fabric local cluster" in html and cluster.scheduler_address in html
        assert client.closed
        with pytest.raises(fabric.FabricError) as e:
            math.inc(1).compute()
        assert "is closed" in str(e.value)
    assert cluster.closed and cluster.pids == []
    assert not any(_alive(p) for p in pids)
    with pytest.raises(fabric.FabricError):
        fabric.Client(cluster)


def test_the_fabric_binary_is_found_or_explained(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert str(fabric.find_fabric()) == os.environ["FABRIC_BIN"]
    monkeypatch.setenv("FABRIC_BIN", str(tmp_path / "missing"))
    with pytest.raises(fabric.FabricError) as e:
        fabric.LocalCluster(n_workers=1)
    assert str(e.value) == f"FABRIC_BIN names `{tmp_path / 'missing'}`, which is not a file"
    monkeypatch.delenv("FABRIC_BIN")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(fabric.FabricError) as e:
        fabric.find_fabric()
    assert "cannot find the `fabric` binary" in str(e.value)
    assert "set FABRIC_BIN" in str(e.value)


def test_html_reprs(client: fabric.Client, math: fabric.Component) -> None:
    html = client._repr_html_()
    status = client.status()
    assert "Fabric client" in html
    assert client.address in html
    assert "<th style=\"text-align: left\">Workers</th><td style=\"text-align: left\">2</td>" in html
    for worker in status["workers"]:
        assert worker["name"] in html
    assert "Jobs" in html
    t = math.add(math.inc(1), 2)
    html = t._repr_html_()
    assert "Fabric task" in html
    assert f"<td style=\"text-align: left\">{t.key}</td>" in html
    assert "math/add" in html and "s64" in html and "2 tasks" in html
    assert repr(t) == f"<fabric.Task task `{t.key}` (math/add) returning s64>"


def test_scale_asks_an_adaptive_scheduler_for_workers(client: fabric.Client) -> None:
    # The main cluster's scheduler has a fixed set of workers, and says so.
    with pytest.raises(fabric.FabricError) as e:
        client.scale(2)
    assert "start it with --adapt" in str(e.value)
    with pytest.raises(ValueError):
        client.scale(2, duration=-1)
    address, token = os.environ["FABRIC_ADAPTIVE_SCHEDULER"], os.environ["FABRIC_ADAPTIVE_TOKEN"]
    with fabric.Client(address, token=token) as adaptive:
        assert adaptive.status()["workers"] == []
        # Three are asked for; the tenant's quota of two slots keeps two.
        with pytest.warns(RuntimeWarning, match="scale\\(3\\): 2 workers granted: .*quota"):
            assert adaptive.scale(3, duration=5) == 2
        wait_until("two workers", lambda: len(adaptive.status()["workers"]) == 2)
