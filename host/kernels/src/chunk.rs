//! The chunk: an n-dimensional block of `f64` in row-major order, the WIT record
//! `record chunk { shape: list<u64>, data: list<f64> }` that array kernels take and return.
//! Its data travels packed (a [`Bulk`] list), so it crosses workers and reaches guests
//! without per-element conversion; a kernel borrows it in place.

use std::borrow::Cow;
use std::sync::Arc;

use fabric_core::{Bulk, Value};

/// A chunk owned by a kernel: what it returns.
#[derive(Clone, Debug, PartialEq)]
pub struct Chunk {
    /// Length along each axis (empty for a single number).
    pub shape: Vec<usize>,
    /// `shape.iter().product()` numbers, last axis fastest.
    pub data: Vec<f64>,
}

impl Chunk {
    /// A chunk of `shape` holding `data`, which must have as many numbers as the shape.
    pub fn new(shape: Vec<usize>, data: Vec<f64>) -> Chunk {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Chunk { shape, data }
    }

    /// A single number (shape `[]`).
    pub fn scalar(x: f64) -> Chunk {
        Chunk::new(Vec::new(), vec![x])
    }

    /// The chunk as a value (its data moves, it is not copied).
    pub fn into_value(self) -> Value {
        let shape = self.shape.iter().map(|&n| n as u64).collect();
        Value::Record(Arc::from([
            (Arc::from("shape"), Value::Bulk(Arc::new(Bulk::U64(shape)))),
            (
                Arc::from("data"),
                Value::Bulk(Arc::new(Bulk::F64(self.data))),
            ),
        ]))
    }

    /// Borrows the chunk.
    pub fn view(&self) -> ChunkRef<'_> {
        ChunkRef {
            shape: self.shape.clone(),
            data: Cow::Borrowed(&self.data),
        }
    }
}

/// A chunk read from a value, its numbers borrowed when they are packed (as they are
/// whenever they come from a kernel, a guest or another worker).
#[derive(Clone, Debug)]
pub struct ChunkRef<'a> {
    /// Length along each axis.
    pub shape: Vec<usize>,
    /// The numbers, row-major.
    pub data: Cow<'a, [f64]>,
}

impl<'a> ChunkRef<'a> {
    /// Reads a chunk record; an error says what is wrong with it.
    pub fn from_value(value: &'a Value) -> Result<ChunkRef<'a>, String> {
        if !matches!(value, Value::Record(_)) {
            return Err("expected a chunk record { shape, data }".into());
        }
        let field = |name: &str| {
            value
                .field(name)
                .ok_or_else(|| format!("the chunk has no `{name}` field"))
        };
        let shape = sizes(field("shape")?).map_err(|e| format!("a chunk's shape: {e}"))?;
        let data = numbers(field("data")?).map_err(|e| format!("a chunk's data: {e}"))?;
        ChunkRef::new(shape, data)
    }

    /// A chunk of `shape` holding `data`, or why the two do not fit.
    pub fn new(shape: Vec<usize>, data: Cow<'a, [f64]>) -> Result<ChunkRef<'a>, String> {
        let expected = elements(&shape)?;
        if expected != data.len() {
            return Err(format!(
                "a chunk of shape {shape:?} holds {expected} numbers, this one has {}",
                data.len()
            ));
        }
        Ok(ChunkRef { shape, data })
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }
}

/// A `list<u64>` value as sizes.
pub fn sizes(value: &Value) -> Result<Vec<usize>, String> {
    match value {
        Value::Bulk(b) => match &**b {
            Bulk::U64(v) => Ok(v.iter().map(|&n| n as usize).collect()),
            _ => Err("expected a list<u64>".into()),
        },
        Value::List(items) => items
            .iter()
            .map(|v| match v {
                Value::U64(n) => Ok(*n as usize),
                _ => Err("expected a list<u64>".to_string()),
            })
            .collect(),
        _ => Err("expected a list<u64>".into()),
    }
}

/// A `list<f64>` value's numbers, borrowed when they are packed.
pub fn numbers(value: &Value) -> Result<Cow<'_, [f64]>, String> {
    match value {
        Value::Bulk(b) => match &**b {
            Bulk::F64(v) => Ok(Cow::Borrowed(v.as_slice())),
            _ => Err("expected a list<f64>".into()),
        },
        Value::List(items) => items
            .iter()
            .map(|v| match v {
                Value::F64(x) => Ok(*x),
                _ => Err("expected a list<f64>".to_string()),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Cow::Owned),
        _ => Err("expected a list<f64>".into()),
    }
}

/// The number of elements of `shape`, or why there cannot be that many.
pub fn elements(shape: &[usize]) -> Result<usize, String> {
    shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .filter(|&n| n <= isize::MAX as usize / 8)
        .ok_or_else(|| format!("a chunk of shape {shape:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_a_value_without_copying() {
        let chunk = Chunk::new(vec![2, 3], (0..6).map(f64::from).collect());
        let value = chunk.clone().into_value();
        let view = ChunkRef::from_value(&value).unwrap();
        assert!(matches!(view.data, Cow::Borrowed(_)));
        assert_eq!(view.shape, [2, 3]);
        assert_eq!(&*view.data, &chunk.data[..]);
    }

    #[test]
    fn rejects_malformed_chunks() {
        let bad = Value::Record(Arc::from([
            (
                Arc::from("shape"),
                Value::Bulk(Arc::new(Bulk::U64(vec![2, 2]))),
            ),
            (
                Arc::from("data"),
                Value::Bulk(Arc::new(Bulk::F64(vec![1.0; 3]))),
            ),
        ]));
        let e = ChunkRef::from_value(&bad).unwrap_err();
        assert_eq!(e, "a chunk of shape [2, 2] holds 4 numbers, this one has 3");
        assert!(elements(&[usize::MAX, 2]).is_err());
        assert!(ChunkRef::from_value(&Value::F64(1.0)).is_err());
    }
}
