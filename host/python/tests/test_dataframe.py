"""fabric.dataframe against pandas on the same files: CSV and Parquet written by pandas into a
directory the cluster's workers may read, the same query computed by both, the results
compared value for value; results come through the Arrow C stream interface."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Dict

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import fabric
import fabric.dataframe as fd

FILES = 3
ROWS = 200


@pytest.fixture(scope="module")
def data(data_dir: Path) -> Dict[str, object]:
    """Events in 3 CSV files and the same in 3 Parquet files, ordered by a strictly
    increasing time across files; a table of keys (one key with no events, some events with
    no key)."""
    root = Path(tempfile.mkdtemp(prefix="frames-", dir=data_dir))
    rng = np.random.default_rng(7)
    n = FILES * ROWS
    events = pd.DataFrame(
        {
            "id": np.arange(n, dtype=np.int64),
            "key": [f"k{k}" for k in rng.integers(0, 7, n)],
            # Distinct values, so that sorting has one answer.
            "x": (rng.permutation(n) - n // 2) / 4.0,
            "y": rng.integers(0, 1000, n),
            "ts": pd.Timestamp("2024-01-01")
            + pd.to_timedelta(np.cumsum(rng.integers(1, 600, n)), unit="s"),
        }
    )
    (root / "csv").mkdir()
    (root / "parquet").mkdir()
    for i in range(FILES):
        part = events.iloc[i * ROWS : (i + 1) * ROWS]
        part.to_csv(root / "csv" / f"part-{i}.csv", index=False)
        part.to_parquet(root / "parquet" / f"part-{i}.parquet", index=False)
    keys = pd.DataFrame({"code": [f"k{k}" for k in (0, 2, 3, 5, 9)], "weight": [0, 20, 30, 50, 90]})
    keys.to_csv(root / "keys.csv", index=False)
    return {
        "root": root,
        "events": events,
        "keys": keys,
        "csv": str(root / "csv" / "*.csv"),
        "parquet": str(root / "parquet" / "*.parquet"),
    }


def plain(frame: pd.DataFrame) -> pd.DataFrame:
    """Categorical columns (dictionary-encoded strings, as Parquet reads give them) as
    plain strings."""
    kinds = {c: object for c in frame.columns if isinstance(frame[c].dtype, pd.CategoricalDtype)}
    return frame.astype(kinds) if kinds else frame


def same(got: pd.DataFrame, want: pd.DataFrame, by: list) -> None:
    """Equal up to row order (both sorted by ``by``) and integer/float widths."""
    got = plain(got).sort_values(by).reset_index(drop=True)
    for c in got.columns:  # a missing string is None from Arrow, NaN from pandas' merge
        if got[c].dtype == object:
            got[c] = got[c].where(got[c].notna(), np.nan)
    want = want.sort_values(by).reset_index(drop=True)
    assert list(got.columns) == list(want.columns)
    pd.testing.assert_frame_equal(got, want, check_dtype=False, check_exact=False, rtol=1e-9)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_query_groupby_agg_equals_pandas(client: fabric.Client, data: dict, fmt: str) -> None:
    df = fd.read_csv(data["csv"]) if fmt == "csv" else fd.read_parquet(data["parquet"])
    assert df.npartitions == FILES
    assert df.columns == ["id", "key", "x", "y", "ts"]
    got = (
        df.query("x > -20 and y < 800")
        .groupby("key")
        .agg({"x": ["sum", "mean"], "y": "max", "id": "count"})
        .compute(client=client)
    )
    assert isinstance(got, pa.Table)
    events: pd.DataFrame = data["events"]  # type: ignore[assignment]
    want = (
        events.query("x > -20 and y < 800")
        .groupby("key", as_index=False)
        .agg(x_sum=("x", "sum"), x_mean=("x", "mean"), y=("y", "max"), id=("id", "count"))
    )
    same(got.to_pandas(), want, ["key"])


def test_groupby_column_style_and_named_aggregation(client: fabric.Client, data: dict) -> None:
    df = fd.read_csv(data["csv"])
    events: pd.DataFrame = data["events"]  # type: ignore[assignment]
    got = df.groupby("key").y.sum().to_pandas(client=client)
    same(got, events.groupby("key", as_index=False).y.sum(), ["key"])
    got = df.groupby("key").agg(top=("x", "max"), n=("y", "nunique")).to_pandas(client=client)
    want = events.groupby("key", as_index=False).agg(top=("x", "max"), n=("y", "nunique"))
    same(got, want, ["key"])


@pytest.mark.parametrize("how", ["inner", "left"])
def test_merge_equals_pandas(client: fabric.Client, data: dict, how: str) -> None:
    events: pd.DataFrame = data["events"]  # type: ignore[assignment]
    keys: pd.DataFrame = data["keys"]  # type: ignore[assignment]
    df = fd.read_csv(data["csv"])[["id", "key", "x"]]
    right = fd.read_csv(str(data["root"] / "keys.csv"))  # type: ignore[operator]
    got = df.merge(right, left_on="key", right_on="code", how=how).to_pandas(client=client)
    want = events[["id", "key", "x"]].merge(keys, left_on="key", right_on="code", how=how)
    same(got, want, ["id"])
    # on= with the same name on both sides, and suffixes for a column both have.
    renamed = right.rename(columns={"code": "key"}).assign(x="weight * 1.0")
    got = df.merge(renamed, on="key", suffixes=("_ev", "_key")).to_pandas(client=client)
    want = events[["id", "key", "x"]].merge(
        keys.rename(columns={"code": "key"}).assign(x=lambda k: k.weight * 1.0),
        on="key",
        suffixes=("_ev", "_key"),
    )
    same(got, want, ["id"])


def test_sort_values_head_and_nlargest_equal_pandas(client: fabric.Client, data: dict) -> None:
    events: pd.DataFrame = data["events"]  # type: ignore[assignment]
    df = fd.read_parquet(data["parquet"])
    got = plain(df.sort_values("x", ascending=False).head(10).to_pandas(client=client))
    want = events.sort_values("x", ascending=False).head(10).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want, check_dtype=False)
    got = plain(df.nsmallest(5, "x").to_pandas(client=client))
    want = events.nsmallest(5, "x").reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want, check_dtype=False)


def test_assign_and_a_global_agg_equal_pandas(client: fabric.Client, data: dict) -> None:
    events: pd.DataFrame = data["events"]  # type: ignore[assignment]
    df = fd.read_csv(data["csv"]).assign(z="x * 2 + y")
    assert df.columns[-1] == "z"
    got = df.agg({"z": "sum", "x": ["mean", "min"], "y": "max"}).to_pandas(client=client)
    z = events.x * 2 + events.y
    assert got.shape == (1, 4)
    assert got["z"][0] == pytest.approx(z.sum(), rel=1e-12)
    assert got["x_mean"][0] == pytest.approx(events.x.mean(), rel=1e-12)
    assert got["x_min"][0] == events.x.min()
    assert got["y"][0] == events.y.max()
    # A column's aggregate is a lazy scalar.
    assert df.z.sum().compute(client=client) == pytest.approx(z.sum(), rel=1e-12)
    assert df["y"].count().compute(client=client) == len(events)


def test_rolling_equals_pandas(client: fabric.Client, data: dict) -> None:
    events: pd.DataFrame = data["events"]  # type: ignore[assignment]
    df = fd.read_csv(data["csv"]).set_index("ts")
    assert df.sorted_by == "ts"
    got = df.rolling("30min").agg({"x": "sum", "y": "max"}).to_pandas(client=client)
    assert list(got.columns) == ["id", "key", "x", "y", "ts", "x_sum", "y_max"]
    windows = events.set_index("ts").rolling("30min")
    np.testing.assert_allclose(got["x_sum"], windows.x.sum().to_numpy(), rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(got["y_max"], windows.y.max().to_numpy())
    np.testing.assert_array_equal(got["id"], events["id"])
    # The column style gives the same column.
    alone = df.rolling("30min").x.sum().to_pandas(client=client)
    np.testing.assert_allclose(alone["x_sum"], got["x_sum"])


def test_results_come_through_the_arrow_c_stream(client: fabric.Client, data: dict) -> None:
    df = fd.read_csv(data["csv"]).query("key == 'k1'")[["id", "x"]]
    stream = df.compute_arrow(client=client)
    capsule = stream.__arrow_c_stream__()
    assert type(capsule).__name__ == "PyCapsule"
    del capsule  # an unconsumed stream is released with its capsule
    table = pa.table(stream)
    reader = pa.RecordBatchReader.from_stream(stream)  # the same buffers, exported again
    assert reader.read_all().equals(table)
    events: pd.DataFrame = data["events"]  # type: ignore[assignment]
    want = events.query("key == 'k1'")[["id", "x"]]
    assert table.num_rows == len(want) == stream.num_rows
    assert sorted(table.column("id").to_pylist()) == sorted(want.id.tolist())


def test_to_parquet_then_read_parquet(client: fabric.Client, data: dict) -> None:
    out = data["root"] / "written"  # type: ignore[operator]
    df = fd.read_csv(data["csv"]).query("y >= 500")
    rows = df.to_parquet(str(out), client=client)
    events: pd.DataFrame = data["events"]  # type: ignore[assignment]
    assert rows == int((events.y >= 500).sum())
    assert sorted(p.name for p in out.iterdir()) == [f"part-{i:05}.parquet" for i in range(FILES)]
    back = fd.read_parquet(str(out)).to_pandas(client=client)
    same(back[["id", "x"]], events[events.y >= 500][["id", "x"]], ["id"])


def test_persist_keeps_the_partitions(client: fabric.Client, data: dict) -> None:
    df = fd.read_csv(data["csv"]).query("x > 0")
    kept = df.persist(client=client)
    assert kept.npartitions == FILES
    events: pd.DataFrame = data["events"]  # type: ignore[assignment]
    got = kept.agg({"x": "sum"}).to_pandas(client=client)
    assert got["x"][0] == pytest.approx(events[events.x > 0].x.sum(), rel=1e-12)


def test_the_most_recent_client_is_the_default(data: dict) -> None:
    df = fd.read_csv(data["csv"]).agg({"id": "count"})
    with fabric.Client() as latest:
        assert df.compute()["id"][0].as_py() == FILES * ROWS
        assert latest.closed is False


def test_mistakes_are_value_errors_naming_them(data: dict) -> None:
    df = fd.read_csv(data["csv"])
    with pytest.raises(ValueError, match="nope"):
        df.query("nope > 1")
    with pytest.raises(ValueError) as e:
        df.query("x > > 1")
    assert str(e.value)
    with pytest.raises(ValueError, match="unknown aggregate `median`"):
        df.groupby("key").agg({"x": "median"})
    with pytest.raises(ValueError, match="no column `nope`"):
        df.sort_values("nope")
    with pytest.raises(ValueError, match="set_index"):
        df.rolling("1h", on="ts")
    with pytest.raises(KeyError, match="no column `nope`"):
        df.groupby("nope")
    with pytest.raises(AttributeError, match="no attribute or column `nope`"):
        df.nope
    with pytest.raises(ValueError):
        fd.read_csv(str(data["root"] / "missing" / "*.csv"))  # type: ignore[operator]


def test_a_failed_read_is_a_task_error(client: fabric.Client, data: dict) -> None:
    gone = data["root"] / "gone.csv"  # type: ignore[operator]
    gone.write_text("a,b\n1,2\n")
    df = fd.read_csv(str(gone))
    gone.unlink()
    with pytest.raises(fabric.TaskError) as e:
        df.compute(client=client)
    assert "gone.csv" in str(e.value)


def test_the_lazy_frame_shows_its_structure(data: dict) -> None:
    df = fd.read_csv(data["csv"])[["key", "x"]]
    assert df.dtypes == {"key": "Utf8", "x": "Float64"}
    text = repr(df)
    assert "npartitions=3" in text and "Float64" in text and "key" in text
    assert "<table>" in df._repr_html_() and "Utf8" in df._repr_html_()
    assert df.to_graph()["outputs"] == ["result"]


def test_without_pyarrow_compute_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, data: dict
) -> None:
    df = fd.read_csv(data["csv"])
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # `import pyarrow` fails
    with pytest.raises(ImportError, match="pip install pyarrow"):
        df.compute()
