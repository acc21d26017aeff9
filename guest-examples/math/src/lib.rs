//! `math`: arithmetic tasks for Fabric.
//!
//! Integer tasks use wrapping arithmetic, so no input makes them trap. `slow-inc` shows the
//! SDK's `context` and logging imports at work.

use std::thread;
use std::time::Duration;

use fabric_sdk::context;

fabric_sdk::component!("fabric:math/math");

/// The component: implements the world's exports.
struct Math;

impl Guest for Math {
    fn inc(x: i64) -> i64 {
        x.wrapping_add(1)
    }

    fn add(a: i64, b: i64) -> i64 {
        a.wrapping_add(b)
    }

    fn mul(a: i64, b: i64) -> i64 {
        a.wrapping_mul(b)
    }

    fn sum(xs: Vec<i64>) -> i64 {
        xs.into_iter().fold(0, i64::wrapping_add)
    }

    fn dag_step(xs: Vec<i64>, m: i64) -> i64 {
        let s = xs.into_iter().fold(1, i64::wrapping_add);
        if m > 0 { s.rem_euclid(m) } else { s }
    }

    fn fsum(xs: Vec<f64>) -> f64 {
        total(xs)
    }

    fn seq(n: u32) -> Vec<f64> {
        (0..n).map(f64::from).collect()
    }

    fn slow_inc(x: i64, ms: u32) -> i64 {
        fabric_sdk::debug!(
            "slow-inc({x}) sleeping {ms} ms (task {}, attempt {})",
            context::task_id(),
            context::attempt(),
        );
        thread::sleep(Duration::from_millis(ms.into()));
        x.wrapping_add(1)
    }

    fn scale(xs: Vec<f64>, k: f64) -> Vec<f64> {
        xs.into_iter().map(|x| x * k).collect()
    }

    fn dot(a: Vec<f64>, b: Vec<f64>) -> Result<f64, String> {
        if a.len() != b.len() {
            return Err(format!("dot: lengths differ ({} and {})", a.len(), b.len()));
        }
        Ok(total(a.iter().zip(&b).map(|(x, y)| x * y)))
    }

    fn mean(xs: Vec<f64>) -> Option<f64> {
        (!xs.is_empty()).then(|| total(xs.iter().copied()) / xs.len() as f64)
    }

    fn stats(xs: Vec<f64>) -> Summary {
        let Some(&first) = xs.first() else {
            return Summary {
                count: 0,
                min: 0.0,
                max: 0.0,
                mean: 0.0,
            };
        };
        // `f64::min` and `f64::max` return the other operand when one is NaN.
        let (min, max, total) = xs
            .iter()
            .fold((first, first, 0.0), |(min, max, total), &x| {
                (f64::min(min, x), f64::max(max, x), total + x)
            });
        Summary {
            count: xs.len() as u64,
            min,
            max,
            mean: total / xs.len() as f64,
        }
    }

    fn clamp(x: i64, (a, b): (i64, i64)) -> i64 {
        x.clamp(a.min(b), a.max(b))
    }

    fn round(x: f64, mode: Rounding) -> i64 {
        let rounded = match mode {
            Rounding::Floor => x.floor(),
            Rounding::Ceil => x.ceil(),
            Rounding::Nearest => round_half_away_from_zero(x),
        };
        // `as` saturates at the bounds of i64 and maps NaN to 0.
        rounded as i64
    }

    fn norm(c: Chunk) -> f64 {
        c.data.iter().map(|x| x * x).sum::<f64>().sqrt()
    }

    fn clip(c: Chunk, lo: f64, hi: f64) -> Chunk {
        Chunk {
            data: c.data.into_iter().map(|x| x.clamp(lo, hi)).collect(),
            shape: c.shape,
        }
    }
}

/// The sum of `xs`, starting from `+0.0`.
///
/// `Iterator::sum` for floats starts from `-0.0` (the identity of addition), so it would return
/// `-0.0` for an empty list; the tasks promise a plain 0.
fn total(xs: impl IntoIterator<Item = f64>) -> f64 {
    xs.into_iter().fold(0.0, |total, x| total + x)
}

/// `x` rounded to the nearest integer, halves away from zero: what `f64::round` computes.
///
/// `f64::round` is not used because it compiles to a call to the C library's `round`, and a
/// world-level export keeps its WIT name as its core symbol: this component's own `round`
/// export takes the place of the C function at link time, so the call would land in the export
/// (and the linked module would not even validate). `trunc`, `abs` and `signum` are wasm
/// instructions.
fn round_half_away_from_zero(x: f64) -> f64 {
    let whole = x.trunc();
    if (x - whole).abs() >= 0.5 {
        whole + x.signum()
    } else {
        whole
    }
}

export!(Math);
