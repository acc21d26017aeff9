//! `builtin:array`: n-dimensional chunk kernels (creation, elementwise arithmetic and
//! comparisons, transpose, slicing and concatenation, reductions along an axis or over all,
//! partial moments for mean/std, blocked matmul) and the component that publishes them.
//! Chunked arrays (fabric-client's collections) are graphs of these calls, one per chunk.

use std::sync::Arc;

use fabric_core::Value;
use fabric_runtime::{Component, Limits, Native, NativeCall, TaskError, TaskErrorKind};

use crate::chunk::{self, Chunk, ChunkRef, elements};

/// A binary elementwise operation; comparisons give 1.0 for true and 0.0 for false.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    Maximum,
    Minimum,
    Less,
    LessEqual,
    Greater,
    GreaterEqual,
    Equal,
    NotEqual,
}

impl BinaryOp {
    /// Every operation by its WIT name (the case of the `binary-op` enum, and the export of
    /// the same name that applies it to two chunks).
    pub const ALL: [(&'static str, BinaryOp); 13] = [
        ("add", BinaryOp::Add),
        ("sub", BinaryOp::Sub),
        ("mul", BinaryOp::Mul),
        ("div", BinaryOp::Div),
        ("pow", BinaryOp::Pow),
        ("maximum", BinaryOp::Maximum),
        ("minimum", BinaryOp::Minimum),
        ("less", BinaryOp::Less),
        ("less-equal", BinaryOp::LessEqual),
        ("greater", BinaryOp::Greater),
        ("greater-equal", BinaryOp::GreaterEqual),
        ("equal", BinaryOp::Equal),
        ("not-equal", BinaryOp::NotEqual),
    ];

    /// The operation named `name`.
    pub fn named(name: &str) -> Option<BinaryOp> {
        Self::ALL
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(_, op)| op)
    }

    /// Applies the operation to one pair.
    #[inline]
    pub fn apply(self, a: f64, b: f64) -> f64 {
        let truth = |t: bool| if t { 1.0 } else { 0.0 };
        match self {
            BinaryOp::Add => a + b,
            BinaryOp::Sub => a - b,
            BinaryOp::Mul => a * b,
            BinaryOp::Div => a / b,
            BinaryOp::Pow => a.powf(b),
            BinaryOp::Maximum => a.max(b),
            BinaryOp::Minimum => a.min(b),
            BinaryOp::Less => truth(a < b),
            BinaryOp::LessEqual => truth(a <= b),
            BinaryOp::Greater => truth(a > b),
            BinaryOp::GreaterEqual => truth(a >= b),
            BinaryOp::Equal => truth(a == b),
            BinaryOp::NotEqual => truth(a != b),
        }
    }
}

/// The entry of `table` (a WIT enum's cases, or exports) named `name`.
fn named<T: Copy>(table: &[(&str, T)], name: &str) -> Option<T> {
    table.iter().find(|(n, _)| *n == name).map(|&(_, x)| x)
}

/// Runs `$body` with `$f` bound to a closure computing `$op`, so that each operation gets
/// its own compiled (and vectorized) loop instead of a `match` per element.
macro_rules! with_op {
    ($op:expr, $f:ident => $body:expr) => {
        match $op {
            BinaryOp::Add => {
                let $f = |a: f64, b: f64| a + b;
                $body
            }
            BinaryOp::Sub => {
                let $f = |a: f64, b: f64| a - b;
                $body
            }
            BinaryOp::Mul => {
                let $f = |a: f64, b: f64| a * b;
                $body
            }
            BinaryOp::Div => {
                let $f = |a: f64, b: f64| a / b;
                $body
            }
            op => {
                let $f = |a: f64, b: f64| op.apply(a, b);
                $body
            }
        }
    };
}

/// Like [`with_op!`], for the step of a reduction.
macro_rules! with_reduction {
    ($r:expr, $g:ident => $body:expr) => {
        match $r {
            Reduction::Sum => {
                let $g = |a: f64, b: f64| a + b;
                $body
            }
            Reduction::Prod => {
                let $g = |a: f64, b: f64| a * b;
                $body
            }
            Reduction::Min => {
                let $g = |a: f64, b: f64| a.min(b);
                $body
            }
            Reduction::Max => {
                let $g = |a: f64, b: f64| a.max(b);
                $body
            }
        }
    };
}

/// A unary elementwise operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnaryOp {
    Neg,
    Abs,
    Sqrt,
    Exp,
    Log,
    Floor,
    Ceil,
}

impl UnaryOp {
    /// Every operation by its WIT name (the cases of the `unary-op` enum).
    pub const ALL: [(&'static str, UnaryOp); 7] = [
        ("neg", UnaryOp::Neg),
        ("abs", UnaryOp::Abs),
        ("sqrt", UnaryOp::Sqrt),
        ("exp", UnaryOp::Exp),
        ("log", UnaryOp::Log),
        ("floor", UnaryOp::Floor),
        ("ceil", UnaryOp::Ceil),
    ];

    #[inline]
    fn apply(self, x: f64) -> f64 {
        match self {
            UnaryOp::Neg => -x,
            UnaryOp::Abs => x.abs(),
            UnaryOp::Sqrt => x.sqrt(),
            UnaryOp::Exp => x.exp(),
            UnaryOp::Log => x.ln(),
            UnaryOp::Floor => x.floor(),
            UnaryOp::Ceil => x.ceil(),
        }
    }
}

/// A reduction of many numbers into one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduction {
    Sum,
    Prod,
    Min,
    Max,
}

impl Reduction {
    /// Every reduction by the name of its export.
    pub const ALL: [(&'static str, Reduction); 4] = [
        ("sum", Reduction::Sum),
        ("prod", Reduction::Prod),
        ("min", Reduction::Min),
        ("max", Reduction::Max),
    ];

    fn identity(self) -> f64 {
        match self {
            Reduction::Sum => 0.0,
            Reduction::Prod => 1.0,
            Reduction::Min => f64::INFINITY,
            Reduction::Max => f64::NEG_INFINITY,
        }
    }

    #[inline]
    fn step(self, acc: f64, x: f64) -> f64 {
        match self {
            Reduction::Sum => acc + x,
            Reduction::Prod => acc * x,
            Reduction::Min => acc.min(x),
            Reduction::Max => acc.max(x),
        }
    }

    /// Reduces a slice, in eight interleaved lanes (which the compiler vectorizes, and
    /// which keep a long sum's rounding error small).
    fn all(self, xs: &[f64]) -> f64 {
        with_reduction!(self, g => lanes(xs.iter().copied(), self.identity(), g))
    }
}

/// Folds `xs` with `g` in eight interleaved lanes (which the compiler vectorizes, and which
/// keep a long sum's rounding error small).
#[inline]
fn lanes(xs: impl Iterator<Item = f64>, identity: f64, g: impl Fn(f64, f64) -> f64) -> f64 {
    let mut acc = [identity; 8];
    for (i, x) in xs.enumerate() {
        acc[i & 7] = g(acc[i & 7], x);
    }
    acc.iter().fold(identity, |a, &x| g(a, x))
}

/// Uniform numbers in [0, 1) from `seed` (the same seed gives the same chunk everywhere):
/// the top 53 bits of wyrand outputs, which cost one multiplication each.
pub fn random(shape: &[usize], seed: u64) -> Result<Chunk, String> {
    let n = elements(shape)?;
    let mut rng = fastrand::Rng::with_seed(seed);
    const SCALE: f64 = 1.0 / (1u64 << 53) as f64;
    let data = (0..n).map(|_| (rng.u64(..) >> 11) as f64 * SCALE).collect();
    Ok(Chunk::new(shape.to_vec(), data))
}

/// `value` everywhere.
pub fn full(shape: &[usize], value: f64) -> Result<Chunk, String> {
    Ok(Chunk::new(shape.to_vec(), vec![value; elements(shape)?]))
}

/// `start, start + step, ...`: `n` numbers in one dimension.
pub fn arange(start: f64, step: f64, n: usize) -> Result<Chunk, String> {
    elements(&[n])?;
    Ok(Chunk::new(
        vec![n],
        (0..n).map(|i| start + step * i as f64).collect(),
    ))
}

/// `a op b` elementwise; `b` may also be a single number (shape `[]` or one element),
/// applied to every element of `a`.
pub fn binary(a: &ChunkRef, b: &ChunkRef, op: BinaryOp) -> Result<Chunk, String> {
    if b.shape.is_empty() && !a.shape.is_empty() {
        return Ok(scalar(a, op, b.data[0]));
    }
    if a.shape != b.shape {
        return Err(format!(
            "cannot {} chunks of shapes {:?} and {:?}",
            BinaryOp::ALL
                .iter()
                .find(|(_, o)| *o == op)
                .map_or("combine", |(n, _)| n),
            a.shape,
            b.shape
        ));
    }
    let data =
        with_op!(op, f => a.data.iter().zip(b.data.iter()).map(|(&x, &y)| f(x, y)).collect());
    Ok(Chunk::new(a.shape.clone(), data))
}

/// `a op transpose(b)` for two matrices, without making the transpose: the kernel behind
/// `x + x.T`. Reads `b` in cache-sized tiles.
pub fn binary_transposed(a: &ChunkRef, b: &ChunkRef, op: BinaryOp) -> Result<Chunk, String> {
    let (rows, cols) = transposed_shapes(a, b)?;
    let mut out = a.data.to_vec();
    with_op!(op, f => for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            let c1 = (c0 + TILE).min(cols);
            for r in r0..(r0 + TILE).min(rows) {
                let tile = &mut out[r * cols + c0..r * cols + c1];
                for (c, x) in (c0..c1).zip(tile) {
                    *x = f(*x, b.data[c * rows + r]);
                }
            }
        }
    });
    Ok(Chunk::new(a.shape.clone(), out))
}

/// `r(a op b)` — or `r(a op transpose(b))` — along `axis` or over everything, in one
/// pass that never makes the elementwise result when reducing everything: the kernel
/// behind `(x + x.T).sum()`.
pub fn reduce_binary(
    a: &ChunkRef,
    b: &ChunkRef,
    op: BinaryOp,
    transpose_b: bool,
    r: Reduction,
    axis: Option<usize>,
) -> Result<Chunk, String> {
    if axis.is_some() || (!transpose_b && a.shape != b.shape) {
        let combined = if transpose_b {
            binary_transposed(a, b, op)?
        } else {
            binary(a, b, op)?
        };
        return reduce(&combined.view(), axis, r);
    }
    if !transpose_b {
        let pairs = a.data.iter().zip(b.data.iter());
        let total = with_op!(op, f => with_reduction!(r, g =>
            lanes(pairs.map(|(&x, &y)| f(x, y)), r.identity(), g)));
        return Ok(Chunk::scalar(total));
    }
    let (rows, cols) = transposed_shapes(a, b)?;
    let total = with_op!(op, f => with_reduction!(r, g => {
        let mut acc = [r.identity(); 8];
        for r0 in (0..rows).step_by(TILE) {
            for c0 in (0..cols).step_by(TILE) {
                for row in r0..(r0 + TILE).min(rows) {
                    let left = &a.data[row * cols..(row + 1) * cols];
                    for c in c0..(c0 + TILE).min(cols) {
                        acc[c & 7] = g(acc[c & 7], f(left[c], b.data[c * rows + row]));
                    }
                }
            }
        }
        acc.iter().fold(r.identity(), |x, &y| g(x, y))
    }));
    Ok(Chunk::scalar(total))
}

/// The rows and columns of `a`, which must be a matrix shaped like the transpose of `b`.
fn transposed_shapes(a: &ChunkRef, b: &ChunkRef) -> Result<(usize, usize), String> {
    match (a.shape.as_slice(), b.shape.as_slice()) {
        (&[rows, cols], &[brows, bcols]) if (rows, cols) == (bcols, brows) => Ok((rows, cols)),
        (&[_, _], &[_, _]) => Err(format!(
            "cannot combine a chunk of shape {:?} with the transpose of one of shape {:?}",
            a.shape, b.shape
        )),
        _ => Err(format!(
            "a transposed operand needs two matrices, got shapes {:?} and {:?}",
            a.shape, b.shape
        )),
    }
}

/// The side of the square tiles that transposing kernels walk (32 x 32 doubles: 8 KiB).
const TILE: usize = 32;

/// `a op k` for every element of `a`.
pub fn scalar(a: &ChunkRef, op: BinaryOp, k: f64) -> Chunk {
    Chunk::new(
        a.shape.clone(),
        a.data.iter().map(|&x| op.apply(x, k)).collect(),
    )
}

/// `k op a` for every element of `a`.
pub fn rscalar(k: f64, op: BinaryOp, a: &ChunkRef) -> Chunk {
    Chunk::new(
        a.shape.clone(),
        a.data.iter().map(|&x| op.apply(k, x)).collect(),
    )
}

/// `op(a)` elementwise.
pub fn unary(a: &ChunkRef, op: UnaryOp) -> Chunk {
    Chunk::new(
        a.shape.clone(),
        a.data.iter().map(|&x| op.apply(x)).collect(),
    )
}

/// The axes reversed (rows and columns swapped for a matrix), in cache-sized tiles.
pub fn transpose(a: &ChunkRef) -> Chunk {
    match a.shape.as_slice() {
        [rows, cols] => {
            let (rows, cols) = (*rows, *cols);
            let mut out = vec![0.0; rows * cols];
            for r0 in (0..rows).step_by(TILE) {
                for c0 in (0..cols).step_by(TILE) {
                    for r in r0..(r0 + TILE).min(rows) {
                        let row = &a.data[r * cols..(r + 1) * cols];
                        for c in c0..(c0 + TILE).min(cols) {
                            out[c * rows + r] = row[c];
                        }
                    }
                }
            }
            Chunk::new(vec![cols, rows], out)
        }
        [] | [_] => Chunk::new(a.shape.clone(), a.data.to_vec()),
        shape => {
            // General n-d: walk the output in order, reading through reversed strides.
            let out_shape: Vec<usize> = shape.iter().rev().copied().collect();
            let strides = strides(shape);
            let in_strides: Vec<usize> = strides.iter().rev().copied().collect();
            let mut index = vec![0usize; out_shape.len()];
            let mut out = Vec::with_capacity(a.len());
            for _ in 0..a.len() {
                let at: usize = index.iter().zip(&in_strides).map(|(i, s)| i * s).sum();
                out.push(a.data[at]);
                for d in (0..index.len()).rev() {
                    index[d] += 1;
                    if index[d] < out_shape[d] {
                        break;
                    }
                    index[d] = 0;
                }
            }
            Chunk::new(out_shape, out)
        }
    }
}

/// Row-major strides (in elements) of `shape`.
fn strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        strides[d] = strides[d + 1] * shape[d + 1];
    }
    strides
}

/// Checks `axis` against a chunk of `ndim` dimensions; returns the sizes before, along and
/// after it.
fn split_at_axis(shape: &[usize], axis: usize) -> Result<(usize, usize, usize), String> {
    if axis >= shape.len() {
        return Err(format!(
            "axis {axis} is out of range for a chunk of shape {shape:?}"
        ));
    }
    let outer = elements(&shape[..axis])?;
    let inner = elements(&shape[axis + 1..])?;
    Ok((outer, shape[axis], inner))
}

/// `shape` without `axis`.
fn drop_axis(shape: &[usize], axis: usize) -> Vec<usize> {
    let mut out = shape.to_vec();
    out.remove(axis);
    out
}

/// Reduces `a` along `axis` (dropping that axis), or over everything (a single number).
pub fn reduce(a: &ChunkRef, axis: Option<usize>, r: Reduction) -> Result<Chunk, String> {
    let Some(axis) = axis else {
        return Ok(Chunk::scalar(r.all(&a.data)));
    };
    let (outer, n, inner) = split_at_axis(&a.shape, axis)?;
    let mut out = vec![r.identity(); outer * inner];
    if inner == 1 {
        for (o, acc) in out.iter_mut().enumerate() {
            *acc = r.all(&a.data[o * n..(o + 1) * n]);
        }
    } else {
        for o in 0..outer {
            let acc = &mut out[o * inner..(o + 1) * inner];
            for k in 0..n {
                let row = &a.data[(o * n + k) * inner..(o * n + k + 1) * inner];
                for (x, &y) in acc.iter_mut().zip(row) {
                    *x = r.step(*x, y);
                }
            }
        }
    }
    Ok(Chunk::new(drop_axis(&a.shape, axis), out))
}

/// The mean along `axis` (or of everything).
pub fn mean(a: &ChunkRef, axis: Option<usize>) -> Result<Chunk, String> {
    let count = match axis {
        Some(axis) => split_at_axis(&a.shape, axis)?.1,
        None => a.len(),
    };
    let mut sum = reduce(a, axis, Reduction::Sum)?;
    sum.data.iter_mut().for_each(|x| *x /= count as f64);
    Ok(sum)
}

/// Partial moments of `a` along `axis` (or of everything), for a mean or standard deviation
/// combined across chunks: a chunk of shape `[3, ...reduced]` holding the count, the mean
/// and the sum of squared deviations from the mean.
pub fn moments(a: &ChunkRef, axis: Option<usize>) -> Result<Chunk, String> {
    let (outer, n, inner) = match axis {
        Some(axis) => split_at_axis(&a.shape, axis)?,
        None => (1, a.len(), 1),
    };
    let reduced = match axis {
        Some(axis) => drop_axis(&a.shape, axis),
        None => Vec::new(),
    };
    let m = outer * inner;
    let mean = mean(a, axis)?.data;
    let mut m2 = vec![0.0; m];
    for o in 0..outer {
        for k in 0..n {
            let row = &a.data[(o * n + k) * inner..(o * n + k + 1) * inner];
            let mu = &mean[o * inner..(o + 1) * inner];
            for ((acc, &x), &mu) in m2[o * inner..(o + 1) * inner].iter_mut().zip(row).zip(mu) {
                *acc += (x - mu) * (x - mu);
            }
        }
    }
    let mut data = vec![n as f64; m];
    data.extend(mean);
    data.extend(m2);
    let mut shape = vec![3];
    shape.extend(reduced);
    Ok(Chunk::new(shape, data))
}

/// The three parts of a moments chunk.
struct Moments<'c> {
    count: &'c [f64],
    mean: &'c [f64],
    /// Sums of squared deviations from the mean.
    m2: &'c [f64],
}

/// Splits a moments chunk into its parts.
fn moment_parts<'c>(m: &'c ChunkRef) -> Result<Moments<'c>, String> {
    if m.shape.first() != Some(&3) {
        return Err(format!(
            "expected moments (a chunk of shape [3, ...]), got shape {:?}",
            m.shape
        ));
    }
    let k = m.len() / 3;
    Ok(Moments {
        count: &m.data[..k],
        mean: &m.data[k..2 * k],
        m2: &m.data[2 * k..],
    })
}

/// Moments of the union of two sets of numbers from the moments of each (Chan et al.).
pub fn combine_moments(a: &ChunkRef, b: &ChunkRef) -> Result<Chunk, String> {
    if a.shape != b.shape {
        return Err(format!(
            "cannot combine moments of shapes {:?} and {:?}",
            a.shape, b.shape
        ));
    }
    let Moments {
        count: na,
        mean: ma,
        m2: qa,
    } = moment_parts(a)?;
    let Moments {
        count: nb,
        mean: mb,
        m2: qb,
    } = moment_parts(b)?;
    let k = na.len();
    let mut data = vec![0.0; 3 * k];
    for i in 0..k {
        let n = na[i] + nb[i];
        let delta = mb[i] - ma[i];
        // An empty side (whose mean is NaN) contributes nothing.
        let (mean, q) = if nb[i] == 0.0 {
            (ma[i], qa[i])
        } else if na[i] == 0.0 {
            (mb[i], qb[i])
        } else {
            (
                ma[i] + delta * nb[i] / n,
                qa[i] + qb[i] + delta * delta * na[i] * nb[i] / n,
            )
        };
        data[i] = n;
        data[k + i] = mean;
        data[2 * k + i] = q;
    }
    Ok(Chunk::new(a.shape.clone(), data))
}

/// The standard deviation from moments, with `ddof` degrees of freedom taken off the count
/// (0 for the population, 1 for the sample standard deviation).
pub fn std_of_moments(m: &ChunkRef, ddof: f64) -> Result<Chunk, String> {
    let parts = moment_parts(m)?;
    let data = parts
        .count
        .iter()
        .zip(parts.m2)
        .map(|(&n, &q)| (q / (n - ddof)).sqrt())
        .collect();
    Ok(Chunk::new(m.shape[1..].to_vec(), data))
}

/// Elementwise `op` over many chunks of one shape: the combining step of a tree reduction.
pub fn fold(parts: &[ChunkRef], op: BinaryOp) -> Result<Chunk, String> {
    let Some((first, rest)) = parts.split_first() else {
        return Err("nothing to fold: the list of chunks is empty".into());
    };
    let mut acc = first.data.to_vec();
    for part in rest {
        if part.shape != first.shape {
            return Err(format!(
                "cannot fold chunks of shapes {:?} and {:?}",
                first.shape, part.shape
            ));
        }
        for (x, &y) in acc.iter_mut().zip(part.data.iter()) {
            *x = op.apply(*x, y);
        }
    }
    Ok(Chunk::new(first.shape.clone(), acc))
}

/// The matrix product of two matrices.
pub fn matmul(a: &ChunkRef, b: &ChunkRef) -> Result<Chunk, String> {
    let (&[m, k], &[k2, n]) = (a.shape.as_slice(), b.shape.as_slice()) else {
        return Err(format!(
            "matmul takes two matrices, got shapes {:?} and {:?}",
            a.shape, b.shape
        ));
    };
    if k != k2 {
        return Err(format!(
            "cannot multiply a {m}x{k} matrix by a {k2}x{n} one"
        ));
    }
    let mut out = vec![0.0; m * n];
    // i-k-j order: the inner loop runs along rows of b and of the output, contiguously.
    for i in 0..m {
        let row = &mut out[i * n..(i + 1) * n];
        for (p, &x) in a.data[i * k..(i + 1) * k].iter().enumerate() {
            if x != 0.0 {
                for (o, &y) in row.iter_mut().zip(&b.data[p * n..(p + 1) * n]) {
                    *o += x * y;
                }
            }
        }
    }
    Ok(Chunk::new(vec![m, n], out))
}

/// The block `start..stop` (per axis, `stop` exclusive) of `a`.
pub fn slice(a: &ChunkRef, start: &[usize], stop: &[usize]) -> Result<Chunk, String> {
    let nd = a.shape.len();
    if start.len() != nd || stop.len() != nd {
        return Err(format!(
            "a slice of a chunk of shape {:?} needs {nd} starts and stops, got {} and {}",
            a.shape,
            start.len(),
            stop.len()
        ));
    }
    for d in 0..nd {
        if start[d] > stop[d] || stop[d] > a.shape[d] {
            return Err(format!(
                "slice {}..{} is out of range for axis {d} of length {}",
                start[d], stop[d], a.shape[d]
            ));
        }
    }
    let shape: Vec<usize> = start.iter().zip(stop).map(|(s, e)| e - s).collect();
    let mut out = Vec::with_capacity(elements(&shape)?);
    if nd == 0 {
        out.extend_from_slice(&a.data);
    } else if out.capacity() > 0 {
        // Copy contiguous runs along the last axis, walking the other axes in order.
        let strides = strides(&a.shape);
        let mut index = start[..nd - 1].to_vec();
        loop {
            let base: usize = index.iter().zip(&strides).map(|(i, s)| i * s).sum();
            out.extend_from_slice(&a.data[base + start[nd - 1]..base + stop[nd - 1]]);
            let mut d = nd - 1;
            loop {
                if d == 0 {
                    return Ok(Chunk::new(shape, out));
                }
                d -= 1;
                index[d] += 1;
                if index[d] < stop[d] {
                    break;
                }
                index[d] = start[d];
            }
        }
    }
    Ok(Chunk::new(shape, out))
}

/// Chunks joined along `axis`; their other axes must agree.
pub fn concat(parts: &[ChunkRef], axis: usize) -> Result<Chunk, String> {
    let Some(first) = parts.first() else {
        return Err("nothing to concatenate: the list of chunks is empty".into());
    };
    let (outer, _, inner) = split_at_axis(&first.shape, axis)?;
    let mut shape = first.shape.clone();
    shape[axis] = 0;
    for part in parts {
        let same_elsewhere = part.shape.len() == first.shape.len()
            && (0..first.shape.len()).all(|d| d == axis || part.shape[d] == first.shape[d]);
        if !same_elsewhere {
            return Err(format!(
                "cannot concatenate chunks of shapes {:?} and {:?} along axis {axis}",
                first.shape, part.shape
            ));
        }
        shape[axis] += part.shape[axis];
    }
    let mut out = Vec::with_capacity(elements(&shape)?);
    for o in 0..outer {
        for part in parts {
            let run = part.shape[axis] * inner;
            out.extend_from_slice(&part.data[o * run..(o + 1) * run]);
        }
    }
    Ok(Chunk::new(shape, out))
}

// ---------------------------------------------------------------------------------------
// The component.

/// `builtin:array`: every kernel above as an export, under the signatures fabric-builtins
/// publishes.
/// With `grants`, `read-npy` reads only what is granted to the task's tenant.
pub fn component(grants: Option<Arc<fabric_frame::Grants>>) -> Component {
    Component::native(
        fabric_builtins::ARRAY,
        fabric_builtins::array(),
        Arc::new(ArrayKernels { grants }),
    )
}

/// The code of `builtin:array`.
struct ArrayKernels {
    grants: Option<Arc<fabric_frame::Grants>>,
}

impl Native for ArrayKernels {
    fn call(&self, export: &str, args: &[Value], call: &NativeCall) -> Result<Value, TaskError> {
        match export {
            "read-npy" => read_npy(args, call, self.grants.as_deref()),
            _ => dispatch(export, args, call.limits),
        }
    }
}

/// `read-npy(url, start, stop)`: one block of a `.npy` file, read where the task runs
/// (local paths only under the worker's data directories).
fn read_npy(
    args: &[Value],
    call: &NativeCall,
    grants: Option<&fabric_frame::Grants>,
) -> Result<Value, TaskError> {
    let Value::String(url) = &args[0] else {
        return Err(error("the url must be a string".into()));
    };
    let (start, stop) = (
        chunk::sizes(&args[1]).map_err(error)?,
        chunk::sizes(&args[2]).map_err(error)?,
    );
    let shape: Vec<usize> = start
        .iter()
        .zip(&stop)
        .map(|(a, b)| b.saturating_sub(*a))
        .collect();
    let bytes = elements(&shape).map_err(error)? as u64 * 8;
    if bytes > call.limits.memory_bytes {
        return Err(TaskError::new(
            TaskErrorKind::OutOfMemory,
            format!(
                "a block of shape {shape:?} takes {bytes} bytes, more than the task's memory \
                 limit of {} bytes",
                call.limits.memory_bytes
            ),
        ));
    }
    let access = crate::dataframe::data_access(call, grants);
    let frame_error = |e: fabric_frame::FrameError| error(e.to_string());
    let location = fabric_frame::store::Location::resolve(url, &access, call.tenant, false)
        .map_err(frame_error)?;
    let data = fabric_frame::npy::read_block(&location, url, &start, &stop).map_err(frame_error)?;
    Ok(Chunk::new(shape, data).into_value())
}

/// Why a kernel call failed: the caller's mistake (shapes, axes), or too much memory.
fn error(message: String) -> TaskError {
    TaskError::new(TaskErrorKind::GuestError, message)
}

fn dispatch(export: &str, args: &[Value], limits: &Limits) -> Result<Value, TaskError> {
    let chunk = |i: usize| ChunkRef::from_value(&args[i]).map_err(error);
    // Outputs not bounded by the inputs' size are checked before they are allocated.
    let room = |shape: &[usize]| -> Result<(), TaskError> {
        let bytes = elements(shape).map_err(error)? as u64 * 8;
        if bytes > limits.memory_bytes {
            return Err(TaskError::new(
                TaskErrorKind::OutOfMemory,
                format!(
                    "a chunk of shape {shape:?} takes {bytes} bytes, more than the task's \
                     memory limit of {} bytes",
                    limits.memory_bytes
                ),
            ));
        }
        Ok(())
    };
    let reduced = |a: &ChunkRef, axis: Option<usize>| -> Result<(), TaskError> {
        match axis {
            Some(axis) if axis < a.shape.len() => room(&drop_axis(&a.shape, axis)),
            _ => Ok(()),
        }
    };
    let sizes = |i: usize| chunk::sizes(&args[i]).map_err(error);
    let shape = |i: usize| -> Result<Vec<usize>, TaskError> {
        let shape = sizes(i)?;
        room(&shape)?;
        Ok(shape)
    };
    let f64_arg = |i: usize| match args[i] {
        Value::F64(x) => Ok(x),
        _ => Err(error(format!("argument {i} must be an f64"))),
    };
    let u64_arg = |i: usize| match args[i] {
        Value::U64(x) => Ok(x),
        _ => Err(error(format!("argument {i} must be a u64"))),
    };
    // The case of an enum argument, from the enum's table.
    fn case<T: Copy>(table: &[(&str, T)], arg: &Value, what: &str) -> Result<T, TaskError> {
        match arg {
            Value::Enum(name) => {
                named(table, name).ok_or_else(|| error(format!("no {what} `{name}`")))
            }
            _ => Err(error(format!("expected a {what}"))),
        }
    }
    let binary_op = |i: usize| case(&BinaryOp::ALL, &args[i], "binary-op");
    let axis = |i: usize| match &args[i] {
        Value::Option(None) => Ok(None),
        Value::Option(Some(v)) => match **v {
            Value::U32(a) => Ok(Some(a as usize)),
            _ => Err(error("the axis must be a u32".into())),
        },
        _ => Err(error("the axis must be an option<u32>".into())),
    };
    let chunks = |i: usize| -> Result<Vec<ChunkRef<'_>>, TaskError> {
        match &args[i] {
            Value::List(items) => items
                .iter()
                .map(|v| ChunkRef::from_value(v).map_err(error))
                .collect(),
            _ => Err(error(format!("argument {i} must be a list of chunks"))),
        }
    };
    let out: Chunk = if let Some(op) = BinaryOp::named(export) {
        binary(&chunk(0)?, &chunk(1)?, op).map_err(error)?
    } else if let Some(r) = named(&Reduction::ALL, export) {
        let (a, axis) = (chunk(0)?, axis(1)?);
        reduced(&a, axis)?;
        reduce(&a, axis, r).map_err(error)?
    } else {
        match export {
            "random" => random(&shape(0)?, u64_arg(1)?).map_err(error)?,
            "zeros" => full(&shape(0)?, 0.0).map_err(error)?,
            "ones" => full(&shape(0)?, 1.0).map_err(error)?,
            "full" => full(&shape(0)?, f64_arg(1)?).map_err(error)?,
            "arange" => {
                let n = u64_arg(2)? as usize;
                room(&[n])?;
                arange(f64_arg(0)?, f64_arg(1)?, n).map_err(error)?
            }
            "from-list" => {
                let data = chunk::numbers(&args[1]).map_err(error)?;
                let c = ChunkRef::new(sizes(0)?, data).map_err(error)?;
                Chunk::new(c.shape, c.data.into_owned())
            }
            "binary-transposed" => {
                binary_transposed(&chunk(0)?, &chunk(1)?, binary_op(2)?).map_err(error)?
            }
            "reduce-binary" => {
                let transpose_b = matches!(args[3], Value::Bool(true));
                let r = case(&Reduction::ALL, &args[4], "reduction")?;
                let (a, b, axis) = (chunk(0)?, chunk(1)?, axis(5)?);
                reduced(&a, axis)?;
                reduce_binary(&a, &b, binary_op(2)?, transpose_b, r, axis).map_err(error)?
            }
            "scalar" => scalar(&chunk(0)?, binary_op(1)?, f64_arg(2)?),
            "rscalar" => rscalar(f64_arg(0)?, binary_op(1)?, &chunk(2)?),
            "unary" => unary(&chunk(0)?, case(&UnaryOp::ALL, &args[1], "unary-op")?),
            "transpose" => transpose(&chunk(0)?),
            "mean" => {
                let (a, axis) = (chunk(0)?, axis(1)?);
                reduced(&a, axis)?;
                mean(&a, axis).map_err(error)?
            }
            "moments" => {
                let (a, axis) = (chunk(0)?, axis(1)?);
                reduced(&a, axis)?;
                room(&[3, elements(&a.shape).map_err(error)?])?;
                moments(&a, axis).map_err(error)?
            }
            "combine-moments" => combine_moments(&chunk(0)?, &chunk(1)?).map_err(error)?,
            "std-of-moments" => std_of_moments(&chunk(0)?, f64_arg(1)?).map_err(error)?,
            "fold" => fold(&chunks(0)?, binary_op(1)?).map_err(error)?,
            "matmul" => {
                let (a, b) = (chunk(0)?, chunk(1)?);
                if let (Some(m), Some(n)) = (a.shape.first(), b.shape.last()) {
                    room(&[*m, *n])?;
                }
                matmul(&a, &b).map_err(error)?
            }
            "slice" => slice(&chunk(0)?, &sizes(1)?, &sizes(2)?).map_err(error)?,
            "concat" => {
                let axis = match args[1] {
                    Value::U32(a) => a as usize,
                    _ => return Err(error("the axis must be a u32".into())),
                };
                let parts = chunks(0)?;
                if let Some(first) = parts.first()
                    && axis < first.shape.len()
                {
                    let mut shape = first.shape.clone();
                    shape[axis] = parts
                        .iter()
                        .try_fold(0usize, |n, p| n.checked_add(*p.shape.get(axis)?))
                        .ok_or_else(|| error("the chunks do not fit together".into()))?;
                    room(&shape)?;
                }
                concat(&parts, axis).map_err(error)?
            }
            "item" => {
                let a = chunk(0)?;
                return match a.data.as_ref() {
                    [x] => Ok(Value::F64(*x)),
                    _ => Err(error(format!(
                        "item takes a chunk of one number, this one has shape {:?}",
                        a.shape
                    ))),
                };
            }
            other => return Err(error(format!("builtin:array has no export `{other}`"))),
        }
    };
    Ok(out.into_value())
}

#[cfg(test)]
mod tests {
    use fabric_core::Bulk;

    use super::*;

    fn c(shape: &[usize], data: &[f64]) -> Chunk {
        Chunk::new(shape.to_vec(), data.to_vec())
    }

    #[test]
    fn elementwise_and_broadcast_scalars() {
        let a = c(&[2, 2], &[1.0, 2.0, 3.0, 4.0]);
        let b = c(&[2, 2], &[4.0, 3.0, 2.0, 1.0]);
        assert_eq!(
            binary(&a.view(), &b.view(), BinaryOp::Add).unwrap().data,
            [5.0; 4]
        );
        assert_eq!(
            binary(&a.view(), &b.view(), BinaryOp::Greater)
                .unwrap()
                .data,
            [0.0, 0.0, 1.0, 1.0]
        );
        let k = Chunk::scalar(10.0);
        assert_eq!(
            binary(&a.view(), &k.view(), BinaryOp::Mul).unwrap().data,
            [10.0, 20.0, 30.0, 40.0]
        );
        assert_eq!(
            rscalar(1.0, BinaryOp::Sub, &a.view()).data,
            [0.0, -1.0, -2.0, -3.0]
        );
        let e = binary(&a.view(), &c(&[4], &[0.0; 4]).view(), BinaryOp::Sub).unwrap_err();
        assert_eq!(e, "cannot sub chunks of shapes [2, 2] and [4]");
    }

    #[test]
    fn transposes_matrices_and_cubes() {
        let a = c(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let t = transpose(&a.view());
        assert_eq!(t.shape, [3, 2]);
        assert_eq!(t.data, [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
        let cube = c(&[2, 1, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let t = transpose(&cube.view());
        assert_eq!(t.shape, [3, 1, 2]);
        assert_eq!(t.data, [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
        // A matrix larger than a tile.
        let big = random(&[70, 45], 1).unwrap();
        let tt = transpose(&transpose(&big.view()).view());
        assert_eq!(tt, big);
        // a - b.T without making b.T.
        let other = random(&[45, 70], 2).unwrap();
        let fused = binary_transposed(&big.view(), &other.view(), BinaryOp::Sub).unwrap();
        let plain = binary(&big.view(), &transpose(&other.view()).view(), BinaryOp::Sub).unwrap();
        assert_eq!(fused, plain);
        assert!(binary_transposed(&big.view(), &big.view(), BinaryOp::Add).is_err());
        // The same, reduced in one pass.
        for (r, axis) in [
            (Reduction::Sum, None),
            (Reduction::Max, None),
            (Reduction::Sum, Some(1)),
        ] {
            let one_pass =
                reduce_binary(&big.view(), &other.view(), BinaryOp::Sub, true, r, axis).unwrap();
            let two = reduce(&plain.view(), axis, r).unwrap();
            assert_eq!(one_pass.shape, two.shape);
            for (x, y) in one_pass.data.iter().zip(&two.data) {
                assert!((x - y).abs() < 1e-9, "{x} {y}");
            }
        }
        let direct = reduce_binary(
            &big.view(),
            &big.view(),
            BinaryOp::Mul,
            false,
            Reduction::Sum,
            None,
        )
        .unwrap();
        let squares: f64 = big.data.iter().map(|x| x * x).sum();
        assert!((direct.data[0] - squares).abs() < 1e-9);
    }

    #[test]
    fn reduces_along_axes() {
        let a = c(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let sum0 = reduce(&a.view(), Some(0), Reduction::Sum).unwrap();
        assert_eq!(
            (sum0.shape.as_slice(), sum0.data.as_slice()),
            (&[3][..], &[5.0, 7.0, 9.0][..])
        );
        let max1 = reduce(&a.view(), Some(1), Reduction::Max).unwrap();
        assert_eq!(max1.data, [3.0, 6.0]);
        let all = reduce(&a.view(), None, Reduction::Sum).unwrap();
        assert_eq!((all.shape.len(), all.data[0]), (0, 21.0));
        assert_eq!(mean(&a.view(), Some(0)).unwrap().data, [2.5, 3.5, 4.5]);
        assert!(reduce(&a.view(), Some(2), Reduction::Sum).is_err());
    }

    #[test]
    fn moments_combine_to_the_standard_deviation_of_the_whole() {
        let x = random(&[40, 3], 7).unwrap();
        let top = slice(&x.view(), &[0, 0], &[15, 3]).unwrap();
        let bottom = slice(&x.view(), &[15, 0], &[40, 3]).unwrap();
        let m = combine_moments(
            &moments(&top.view(), Some(0)).unwrap().view(),
            &moments(&bottom.view(), Some(0)).unwrap().view(),
        )
        .unwrap();
        let std = std_of_moments(&m.view(), 1.0).unwrap();
        // An empty partial changes nothing.
        let empty = moments(&Chunk::new(vec![0, 3], Vec::new()).view(), Some(0)).unwrap();
        assert_eq!(combine_moments(&m.view(), &empty.view()).unwrap(), m);
        assert_eq!(combine_moments(&empty.view(), &m.view()).unwrap(), m);
        for col in 0..3 {
            let xs: Vec<f64> = (0..40).map(|r| x.data[r * 3 + col]).collect();
            let mu = xs.iter().sum::<f64>() / 40.0;
            let var = xs.iter().map(|v| (v - mu) * (v - mu)).sum::<f64>() / 39.0;
            assert!((std.data[col] - var.sqrt()).abs() < 1e-12);
        }
    }

    #[test]
    fn slices_and_concatenates_back() {
        let x = random(&[5, 7], 3).unwrap();
        let left = slice(&x.view(), &[0, 0], &[5, 4]).unwrap();
        let right = slice(&x.view(), &[0, 4], &[5, 7]).unwrap();
        assert_eq!(concat(&[left.view(), right.view()], 1).unwrap(), x);
        let top = slice(&x.view(), &[0, 0], &[2, 7]).unwrap();
        let bottom = slice(&x.view(), &[2, 0], &[5, 7]).unwrap();
        assert_eq!(concat(&[top.view(), bottom.view()], 0).unwrap(), x);
        assert!(slice(&x.view(), &[0, 0], &[6, 7]).is_err());
        let e = concat(&[left.view(), top.view()], 0).unwrap_err();
        assert!(e.contains("cannot concatenate"), "{e}");
    }

    #[test]
    fn multiplies_matrices() {
        let a = c(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let b = c(&[3, 2], &[7.0, 8.0, 9.0, 10.0, 11.0, 12.0]);
        let p = matmul(&a.view(), &b.view()).unwrap();
        assert_eq!(p.shape, [2, 2]);
        assert_eq!(p.data, [58.0, 64.0, 139.0, 154.0]);
        assert!(matmul(&a.view(), &a.view()).is_err());
    }

    #[test]
    fn random_chunks_are_reproducible_and_uniform() {
        let a = random(&[100, 100], 42).unwrap();
        assert_eq!(a, random(&[100, 100], 42).unwrap());
        assert_ne!(a, random(&[100, 100], 43).unwrap());
        assert!(a.data.iter().all(|&x| (0.0..1.0).contains(&x)));
        let mean = a.data.iter().sum::<f64>() / a.data.len() as f64;
        assert!((mean - 0.5).abs() < 0.01, "{mean}");
    }

    #[test]
    fn the_component_checks_shapes_and_memory() {
        let component = component(None);
        assert!(component.is_native());
        assert!(component.exports().contains_key("add"));
        let limits = Limits {
            memory_bytes: 1 << 20,
            timeout: std::time::Duration::from_secs(1),
        };
        let shape = Value::Bulk(Arc::new(Bulk::U64(vec![1000, 1000])));
        let e = dispatch("zeros", &[shape], &limits).unwrap_err();
        assert_eq!(e.kind, TaskErrorKind::OutOfMemory);
        // Outputs larger than their inputs are checked too: an outer product, a reduction
        // of an empty axis that keeps huge ones.
        let column = Chunk::new(vec![100_000, 1], vec![1.0; 100_000]).into_value();
        let row = Chunk::new(vec![1, 100_000], vec![1.0; 100_000]).into_value();
        let e = dispatch("matmul", &[column, row], &limits).unwrap_err();
        assert_eq!(e.kind, TaskErrorKind::OutOfMemory);
        let hollow = Chunk::new(vec![1 << 20, 0, 1 << 20], Vec::new()).into_value();
        let axis1 = Value::Option(Some(Box::new(Value::U32(1))));
        let e = dispatch("sum", &[hollow, axis1], &limits).unwrap_err();
        assert_eq!(e.kind, TaskErrorKind::OutOfMemory);
        let small = Value::Bulk(Arc::new(Bulk::U64(vec![2])));
        let ones = dispatch("ones", &[small], &limits).unwrap();
        let sum = dispatch("sum", &[ones, Value::Option(None)], &limits).unwrap();
        assert_eq!(dispatch("item", &[sum], &limits).unwrap(), Value::F64(2.0));
    }
}
