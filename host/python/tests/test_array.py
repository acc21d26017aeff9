"""fabric.array against NumPy: the same operations on the same numbers, computed on the
cluster, equal to NumPy's; mistakes in shapes and axes are ValueErrors when made."""

from __future__ import annotations

import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import fabric
import fabric.array as fa
from conftest import dashboard_job, interrupt_when_running, wait_until


@pytest.fixture(scope="module")
def x_and_values(client: fabric.Client) -> tuple:
    """A random 6x8 array in 3x4 chunks, and its numbers as computed once."""
    x = fa.random((6, 8), chunks=(3, 4), seed=11)
    values = x.compute(client=client)
    return x, values


def test_constructors_equal_numpy(client: fabric.Client) -> None:
    ones = fa.ones((5, 4), chunks=2)
    assert ones.shape == (5, 4) and ones.chunks == ((2, 2, 1), (2, 2)) and ones.dtype == "float64"
    np.testing.assert_array_equal(ones.compute(client=client), np.ones((5, 4)))
    np.testing.assert_array_equal(fa.zeros(7, chunks=3).compute(client=client), np.zeros(7))
    np.testing.assert_array_equal(fa.full((2, 3), 2.5).compute(client=client), np.full((2, 3), 2.5))
    np.testing.assert_array_equal(fa.arange(10, chunks=4).compute(client=client), np.arange(10.0))


def test_random_numbers_are_reproducible_and_in_range(client: fabric.Client, x_and_values: tuple) -> None:
    x, values = x_and_values
    assert values.shape == (6, 8) and values.dtype == np.float64
    assert ((values >= 0) & (values < 1)).all()
    assert len(np.unique(values)) == values.size
    again = fa.random((6, 8), chunks=(3, 4), seed=11).compute(client=client)
    np.testing.assert_array_equal(again, values)
    again[0, 0] = -1.0  # each result is a writable array of its own
    assert x.compute(client=client)[0, 0] == values[0, 0]


def test_arithmetic_equals_numpy(client: fabric.Client, x_and_values: tuple) -> None:
    x, v = x_and_values
    cases = [
        ((x * 2 - 1) / 3 + x**2, (v * 2 - 1) / 3 + v**2),
        (2 - x, 2 - v),
        (1 / (x + 1), 1 / (v + 1)),
        (-abs(x - 0.5), -np.abs(v - 0.5)),
        (fa.sqrt(x) + fa.exp(x) - fa.log(x + 1), np.sqrt(v) + np.exp(v) - np.log(v + 1)),
        (fa.maximum(x, 0.5) + fa.minimum(x, x.T.T * 0.5), np.maximum(v, 0.5) + np.minimum(v, v * 0.5)),
        ((x > 0.5) + (x <= 0.25), (v > 0.5) * 1.0 + (v <= 0.25) * 1.0),
        (x + x.rechunk((2, 3)), v + v),
    ]
    for lazy, want in cases:
        np.testing.assert_allclose(lazy.compute(client=client), want, rtol=1e-12)


def test_reductions_along_axes_equal_numpy(client: fabric.Client, x_and_values: tuple) -> None:
    x, v = x_and_values
    total = x.sum().compute(client=client)
    assert isinstance(total, np.float64)
    assert total == pytest.approx(v.sum(), rel=1e-12)
    for axis in (0, 1, -1):
        np.testing.assert_allclose(x.sum(axis=axis).compute(client=client), v.sum(axis=axis), rtol=1e-12)
        np.testing.assert_allclose(x.mean(axis=axis).compute(client=client), v.mean(axis=axis), rtol=1e-12)
        np.testing.assert_allclose(
            x.std(axis=axis, ddof=1).compute(client=client), v.std(axis=axis, ddof=1), rtol=1e-9
        )
    np.testing.assert_array_equal(x.max(axis=0).compute(client=client), v.max(axis=0))
    assert x.min().compute(client=client) == v.min()
    np.testing.assert_allclose((x + x.T.T).prod(axis=1).compute(client=client), (2 * v).prod(axis=1))


def test_matmul_transpose_and_slices_equal_numpy(client: fabric.Client, x_and_values: tuple) -> None:
    x, v = x_and_values
    np.testing.assert_allclose((x @ x.T).compute(client=client), v @ v.T, rtol=1e-12)
    # Inner chunks that differ (4 columns against 3 rows per chunk) are rechunked to fit.
    y = fa.ones((8, 5), chunks=(3, 5))
    np.testing.assert_allclose(x.dot(y).compute(client=client), v @ np.ones((8, 5)), rtol=1e-12)
    np.testing.assert_array_equal(x[1:4, 2:].compute(client=client), v[1:4, 2:])
    np.testing.assert_array_equal(x[-1].compute(client=client), v[-1:])
    np.testing.assert_array_equal(x.T.compute(client=client), v.T)


def test_from_npy_and_persist(client: fabric.Client, data_dir: Path) -> None:
    path = Path(tempfile.mkdtemp(prefix="arrays-", dir=data_dir)) / "m.npy"
    want = np.arange(30, dtype=np.int32).reshape(5, 6)
    np.save(path, want)
    m = fa.from_npy(path, chunks=2)
    assert m.shape == (5, 6) and m.numblocks == (3, 3)
    np.testing.assert_array_equal(m.compute(client=client), want.astype(np.float64))
    assert fa.from_npy(path).numblocks == (1, 1)
    kept = (m * 2).persist(client=client)
    assert kept.sum(axis=1).compute(client=client).tolist() == (want * 2).sum(axis=1).tolist()


def test_mistakes_are_value_errors_when_made() -> None:
    x = fa.ones((4, 4), chunks=2)
    with pytest.raises(ValueError, match=r"the shapes \[4, 4\] and \[3\] differ"):
        x + fa.ones(3)
    with pytest.raises(ValueError, match="axis 2 is out of range"):
        x.sum(axis=2)
    with pytest.raises(ValueError, match="do not fit"):
        x @ fa.ones((3, 2))
    with pytest.raises(ValueError, match="at least 1"):
        fa.zeros((4,), chunks=0)
    with pytest.raises(ValueError, match="one length per axis"):
        fa.zeros((4, 4), chunks=(2,))
    with pytest.raises(TypeError):
        x + "one"
    with pytest.raises(TypeError, match="not known until it is computed"):
        bool(x > 1)
    assert "shape=(4, 4)" in repr(x) and "<table>" in x._repr_html_()


def test_without_numpy_compute_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "numpy", None)  # `import numpy` fails
    with pytest.raises(ImportError, match="pip install numpy"):
        fa.ones(3).compute()


def test_ctrl_c_during_an_array_compute_cancels_the_job(client: fabric.Client, tmp_path: Path) -> None:
    script = tmp_path / "big.py"
    script.write_text(
        textwrap.dedent(
            """
            import fabric
            import fabric.array as fa

            client = fabric.Client()
            try:
                fa.random((40_000, 40_000), chunks=4_000, seed=1).sum().compute()
            except KeyboardInterrupt:
                print("interrupted", flush=True)
                raise
            """
        )
    )
    child, job, sent, out, err = interrupt_when_running(client, script)
    assert child.returncode != 0 and "interrupted" in out, (out, err)
    assert err.rstrip().endswith("KeyboardInterrupt"), err
    seen = wait_until(
        "the job to be cancelled",
        lambda: (lambda j: j if j["state"] == "cancelled" else None)(
            dashboard_job(client.status()["dashboard"], job["id"])
        ),
    )
    assert time.monotonic() - sent < 10, f"cancelled {time.monotonic() - sent:.1f}s after the interrupt"
    assert seen["state"] == "cancelled"
    assert all(j["id"] != job["id"] for j in client.status()["jobs"]), "a cancelled job is dropped"
