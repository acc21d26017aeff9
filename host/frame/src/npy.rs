//! NumPy `.npy` files as chunked arrays: the header (shape, element type), and the numbers
//! of one block read with one ranged read per contiguous run, so a chunk reads only its own
//! bytes from a local file or an object store.

use std::ops::Range;

use crate::store::Location;
use crate::{FrameError, Result};

/// What a `.npy` header says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Length along each axis.
    pub shape: Vec<usize>,
    /// The element type.
    pub dtype: Dtype,
    /// Where the numbers start.
    pub offset: u64,
}

/// The element types Fabric reads (converted to f64).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dtype {
    kind: u8,
    size: usize,
    big_endian: bool,
}

impl Dtype {
    fn parse(descr: &str) -> Option<Dtype> {
        if !descr.is_ascii() || descr.len() < 3 {
            return None;
        }
        let (order, rest) = descr.split_at(1);
        let big_endian = match order {
            "<" | "|" | "=" => false,
            ">" => true,
            _ => return None,
        };
        let kind = *rest.as_bytes().first()?;
        let size: usize = rest[1..].parse().ok()?;
        let ok = matches!((kind, size), (b'f', 4 | 8) | (b'i' | b'u', 1 | 2 | 4 | 8));
        ok.then_some(Dtype {
            kind,
            size,
            big_endian,
        })
    }

    fn value(self, b: &[u8]) -> f64 {
        let mut raw = [0u8; 8];
        raw[..self.size].copy_from_slice(b);
        if self.big_endian {
            raw[..self.size].reverse();
        }
        let bits = u64::from_le_bytes(raw);
        let signed = |bits: u64| {
            let shift = 64 - 8 * self.size as u32;
            ((bits << shift) as i64 >> shift) as f64
        };
        match (self.kind, self.size) {
            (b'f', 8) => f64::from_bits(bits),
            (b'f', _) => f32::from_bits(bits as u32) as f64,
            (b'i', _) => signed(bits),
            _ => bits as f64,
        }
    }
}

fn bad(url: &str, why: &str) -> FrameError {
    FrameError::Io(format!("{url}: not a .npy file Fabric reads: {why}"))
}

/// Reads and parses the header of the `.npy` file at `location`.
pub fn header(location: &Location, url: &str) -> Result<Header> {
    let start = location.range(0..10)?;
    if start.len() < 10 || &start[..6] != b"\x93NUMPY" {
        return Err(bad(url, "it does not start with \\x93NUMPY"));
    }
    let (len, at) = match start[6] {
        1 => (u16::from_le_bytes([start[8], start[9]]) as u64, 10),
        2 | 3 => {
            let b = location.range(8..12)?;
            let b: [u8; 4] = b[..]
                .try_into()
                .map_err(|_| bad(url, "the header is cut short"))?;
            (u32::from_le_bytes(b) as u64, 12)
        }
        v => return Err(bad(url, &format!("unknown format version {v}"))),
    };
    let text = location.range(at..at + len)?;
    let text = std::str::from_utf8(&text).map_err(|_| bad(url, "the header is not text"))?;
    // {'descr': '<f8', 'fortran_order': False, 'shape': (3, 4), }
    let field = |name: &str| -> Option<&str> {
        let i = text.find(&format!("'{name}'"))? + name.len() + 2;
        Some(text[i..].trim_start().strip_prefix(':')?.trim_start())
    };
    let descr = field("descr")
        .and_then(|d| d.strip_prefix('\'')?.split('\'').next())
        .ok_or_else(|| bad(url, "no 'descr'"))?;
    let dtype = Dtype::parse(descr).ok_or_else(|| {
        bad(
            url,
            &format!("element type `{descr}` (Fabric reads floats and integers)"),
        )
    })?;
    if field("fortran_order").is_some_and(|f| f.starts_with("True")) {
        return Err(bad(
            url,
            "it is in Fortran order (save np.ascontiguousarray(x))",
        ));
    }
    let shape = field("shape")
        .and_then(|s| s.strip_prefix('(')?.split(')').next())
        .ok_or_else(|| bad(url, "no 'shape'"))?;
    let shape = shape
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| d.parse::<usize>())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|_| bad(url, &format!("shape ({shape})")))?;
    Ok(Header {
        shape,
        dtype,
        offset: at + len,
    })
}

/// The numbers of the block `start..stop` (per axis) of the array, row-major.
pub fn read_block(
    location: &Location,
    url: &str,
    start: &[usize],
    stop: &[usize],
) -> Result<Vec<f64>> {
    let h = header(location, url)?;
    let dims = h.shape.len();
    if start.len() != dims || stop.len() != dims {
        return Err(FrameError::Invalid(format!(
            "the block has {} dimensions, the array {dims}",
            start.len()
        )));
    }
    if let Some(axis) = (0..dims).find(|&a| start[a] > stop[a] || stop[a] > h.shape[a]) {
        return Err(FrameError::Invalid(format!(
            "block {start:?}..{stop:?} is outside the array of shape {:?} along axis {axis}",
            h.shape
        )));
    }
    let size = h.dtype.size;
    // Strides in elements, then one byte range per run along the last axis.
    let too_big = || bad(url, &format!("its shape {:?} is too large", h.shape));
    h.shape
        .iter()
        .try_fold(size, |n, &d| n.checked_mul(d))
        .ok_or_else(too_big)?;
    let mut strides = vec![1usize; dims];
    for a in (0..dims.saturating_sub(1)).rev() {
        strides[a] = strides[a + 1] * h.shape[a + 1];
    }
    let run = if dims == 0 {
        1
    } else {
        stop[dims - 1] - start[dims - 1]
    };
    let outer: Vec<usize> = (0..dims.saturating_sub(1))
        .map(|a| stop[a] - start[a])
        .collect();
    let runs: usize = outer.iter().product();
    if run == 0 || runs == 0 {
        return Ok(Vec::new());
    }
    let mut ranges: Vec<Range<u64>> = Vec::with_capacity(runs);
    let mut index = vec![0usize; outer.len()];
    for _ in 0..runs {
        let mut element = if dims == 0 { 0 } else { start[dims - 1] };
        for (a, i) in index.iter().enumerate() {
            element += (start[a] + i) * strides[a];
        }
        let from = h.offset + (element * size) as u64;
        ranges.push(from..from + (run * size) as u64);
        for a in (0..index.len()).rev() {
            index[a] += 1;
            if index[a] < outer[a] {
                break;
            }
            index[a] = 0;
        }
    }
    let mut out = Vec::with_capacity(runs * run);
    for bytes in location.ranges(&ranges)? {
        if bytes.len() != run * size {
            return Err(bad(url, "it is shorter than its header says"));
        }
        out.extend(bytes.chunks_exact(size).map(|b| h.dtype.value(b)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DataAccess;

    /// A .npy file (version 1) of `shape` holding 0, 1, 2, ... as `descr`.
    fn npy(
        dir: &std::path::Path,
        shape: &[usize],
        descr: &str,
        bytes: impl Fn(usize) -> Vec<u8>,
    ) -> String {
        let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
        let shape_text = match dims.len() {
            1 => format!("({},)", dims[0]),
            _ => format!("({})", dims.join(", ")),
        };
        let mut header =
            format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_text}, }}");
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend((header.len() as u16).to_le_bytes());
        out.extend(header.as_bytes());
        for i in 0..shape.iter().product() {
            out.extend(bytes(i));
        }
        let path = dir.join(format!("a{}.npy", descr.replace(['<', '>', '|'], "")));
        std::fs::write(&path, out).unwrap();
        path.to_string_lossy().into_owned()
    }

    #[test]
    fn reads_blocks_of_every_type() {
        let dir = tempfile::tempdir().unwrap();
        let access = DataAccess::anywhere();
        let f8 = npy(dir.path(), &[4, 5], "<f8", |i| {
            (i as f64).to_le_bytes().to_vec()
        });
        let loc = Location::resolve(&f8, &access, "", false).unwrap();
        let h = header(&loc, &f8).unwrap();
        assert_eq!(h.shape, [4, 5]);
        assert_eq!(
            read_block(&loc, &f8, &[1, 2], &[3, 5]).unwrap(),
            [7.0, 8.0, 9.0, 12.0, 13.0, 14.0]
        );
        for (descr, bytes) in [
            (
                ">i4",
                Box::new(|i: usize| (i as i32 - 3).to_be_bytes().to_vec())
                    as Box<dyn Fn(usize) -> Vec<u8>>,
            ),
            (
                "<f4",
                Box::new(|i: usize| (i as f32 - 3.0).to_le_bytes().to_vec()),
            ),
            (
                "<i2",
                Box::new(|i: usize| (i as i16 - 3).to_le_bytes().to_vec()),
            ),
        ] {
            let f = npy(dir.path(), &[6], descr, bytes);
            let loc = Location::resolve(&f, &access, "", false).unwrap();
            assert_eq!(
                read_block(&loc, &f, &[1], &[5]).unwrap(),
                [-2.0, -1.0, 0.0, 1.0],
                "{descr}"
            );
        }
        let e = read_block(&loc, &f8, &[0, 0], &[5, 1])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("outside the array of shape [4, 5] along axis 0"),
            "{e}"
        );
        std::fs::write(dir.path().join("x.npy"), b"hello").unwrap();
        let x = dir.path().join("x.npy").to_string_lossy().into_owned();
        let loc = Location::resolve(&x, &access, "", false).unwrap();
        assert!(header(&loc, &x).is_err());
    }
}
