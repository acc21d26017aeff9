//! Chunked n-dimensional arrays of `f64` in the style of `dask.array`: every operation is
//! lazy and adds calls of the built-in `builtin:array` kernels, one per chunk, to a graph;
//! [`Array::compute`] runs that graph on a cluster and returns the whole array.
//!
//! ```no_run
//! # async fn example() -> Result<(), fabric_client::ClientError> {
//! use fabric_client::{Array, Client};
//!
//! let client = Client::connect("http://127.0.0.1:7878").await?;
//! let x = Array::random(&[20_000, 20_000], &[2_000, 2_000], 42);
//! let total = (&x + &x.t()).sum(None).compute(&client).await?;
//! println!("{}", total.data[0]);
//! # Ok(())
//! # }
//! ```

use std::sync::Arc;

use fabric_core::{Bulk, Value};
use serde_json::{Value as Json, json};

use crate::graph::{Arg, Node, document, failure, rename_ref, tree, tree_with, walk};
use crate::{Client, ClientError, Submission};

/// A call of the `builtin:array` export `export`.
fn node(export: &'static str, args: Vec<Arg>) -> Arc<Node> {
    Node::new("builtin:array", export, args)
}

/// A chunked array: its shape, how it is cut into chunks, and the task computing each chunk
/// (row-major over the grid of chunks). Cheap to clone; operations return new arrays.
#[derive(Clone, Debug)]
pub struct Array {
    shape: Vec<usize>,
    /// The chunk lengths along each axis (they add up to the shape).
    chunks: Vec<Vec<usize>>,
    blocks: Vec<Arc<Node>>,
}

/// A computed array: its shape and its numbers in row-major order.
#[derive(Clone, Debug, PartialEq)]
pub struct Dense {
    /// Length along each axis (empty for a single number).
    pub shape: Vec<usize>,
    /// The numbers, last axis fastest.
    pub data: Vec<f64>,
}

impl Dense {
    /// Reads a chunk record (`{shape, data}`) as the kernels return it.
    pub fn from_value(value: &Value) -> Option<Dense> {
        let shape = match value.field("shape")? {
            Value::Bulk(b) => match &**b {
                Bulk::U64(v) => v.iter().map(|&n| n as usize).collect(),
                _ => return None,
            },
            Value::List(l) if l.is_empty() => Vec::new(),
            _ => return None,
        };
        let data = match value.field("data")? {
            Value::Bulk(b) => match &**b {
                Bulk::F64(v) => v.clone(),
                _ => return None,
            },
            _ => return None,
        };
        Some(Dense { shape, data })
    }
}

/// Splits `len` into chunks of `chunk` (the last one shorter).
fn split(len: usize, chunk: usize) -> Vec<usize> {
    let chunk = chunk.max(1);
    let mut out = vec![chunk; len / chunk];
    if !len.is_multiple_of(chunk) || len == 0 {
        out.push(len % chunk);
    }
    out
}

impl Array {
    fn creation(
        shape: &[usize],
        chunk: &[usize],
        mut make: impl FnMut(&[usize], usize) -> Arc<Node>,
    ) -> Array {
        assert_eq!(
            shape.len(),
            chunk.len(),
            "the chunk shape {chunk:?} must have one length per axis of {shape:?}"
        );
        let chunks: Vec<Vec<usize>> = shape
            .iter()
            .zip(chunk)
            .map(|(&n, &c)| split(n, c))
            .collect();
        let grid = grid_of(&chunks);
        let blocks = (0..grid.iter().product())
            .map(|b| {
                let index = unravel(b, &grid);
                let block: Vec<usize> = index.iter().zip(&chunks).map(|(&i, c)| c[i]).collect();
                make(&block, b)
            })
            .collect();
        Array {
            shape: shape.to_vec(),
            chunks,
            blocks,
        }
    }

    /// Uniform random numbers in [0, 1) of `shape`, cut into chunks of `chunk`; the same
    /// `seed` gives the same array.
    pub fn random(shape: &[usize], chunk: &[usize], seed: u64) -> Array {
        Array::creation(shape, chunk, |block, b| {
            // A distinct, well-mixed seed per chunk.
            let chunk_seed = seed
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add(b as u64)
                .wrapping_mul(0xBF58_476D_1CE4_E5B9);
            node(
                "random",
                vec![Arg::Json(json!(block)), Arg::Json(json!(chunk_seed))],
            )
        })
    }

    /// The array stored in the NumPy `.npy` file at `url` (a local path the workers may
    /// read, or `s3://...`), cut into chunks of `chunk`: each chunk's task reads only its
    /// own bytes. The header is read here, now (shape and element type; integers and
    /// float32 become f64).
    pub fn from_npy(url: &str, chunk: &[usize]) -> Result<Array, ClientError> {
        let location = fabric_frame::store::Location::resolve(
            url,
            &fabric_frame::DataAccess::anywhere(),
            "",
            false,
        )?;
        let header = fabric_frame::npy::header(&location, url)?;
        if chunk.len() != header.shape.len() {
            return Err(ClientError::Invalid(format!(
                "{url} has {} dimensions (shape {:?}), the chunks {}",
                header.shape.len(),
                header.shape,
                chunk.len()
            )));
        }
        let shape = header.shape;
        let grid: Vec<usize> = shape
            .iter()
            .zip(chunk)
            .map(|(&n, &c)| split(n, c).len())
            .collect();
        Ok(Array::creation(&shape, chunk, |block, b| {
            let start: Vec<usize> = unravel(b, &grid)
                .iter()
                .zip(chunk)
                .map(|(i, c)| i * (*c).max(1))
                .collect();
            let stop: Vec<usize> = start.iter().zip(block).map(|(s, n)| s + n).collect();
            node(
                "read-npy",
                vec![
                    Arg::Json(json!(url)),
                    Arg::Json(json!(start)),
                    Arg::Json(json!(stop)),
                ],
            )
        }))
    }

    /// `value` everywhere.
    pub fn full(shape: &[usize], chunk: &[usize], value: f64) -> Array {
        Array::creation(shape, chunk, |block, _| {
            node(
                "full",
                vec![Arg::Json(json!(block)), Arg::Json(json!(value))],
            )
        })
    }

    /// Zeros.
    pub fn zeros(shape: &[usize], chunk: &[usize]) -> Array {
        Array::full(shape, chunk, 0.0)
    }

    /// Ones.
    pub fn ones(shape: &[usize], chunk: &[usize]) -> Array {
        Array::full(shape, chunk, 1.0)
    }

    /// `0, 1, ..., n - 1` in chunks of `chunk`.
    pub fn arange(n: usize, chunk: usize) -> Array {
        let chunks = split(n, chunk);
        let mut start = 0;
        let blocks = chunks
            .iter()
            .map(|&len| {
                let node = node(
                    "arange",
                    vec![
                        Arg::Json(json!(start as f64)),
                        Arg::Json(json!(1.0)),
                        Arg::Json(json!(len)),
                    ],
                );
                start += len;
                node
            })
            .collect();
        Array {
            shape: vec![n],
            chunks: vec![chunks],
            blocks,
        }
    }

    /// The array's shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The chunk lengths along each axis.
    pub fn chunks(&self) -> &[Vec<usize>] {
        &self.chunks
    }

    /// The number of tasks the array's graph has.
    pub fn tasks(&self) -> usize {
        walk(&self.blocks).len()
    }

    fn grid(&self) -> Vec<usize> {
        grid_of(&self.chunks)
    }

    /// The transpose (axes reversed).
    pub fn t(&self) -> Array {
        let grid = self.grid();
        let out_grid: Vec<usize> = grid.iter().rev().copied().collect();
        let blocks = (0..self.blocks.len())
            .map(|b| {
                let mut index = unravel(b, &out_grid);
                index.reverse();
                let source = &self.blocks[ravel(&index, &grid)];
                node("transpose", vec![Arg::Node(source.clone())])
            })
            .collect();
        Array {
            shape: self.shape.iter().rev().copied().collect(),
            chunks: self.chunks.iter().rev().cloned().collect(),
            blocks,
        }
    }

    /// `self op other`, elementwise (`op` a `binary-op` case); `other` is rechunked like
    /// `self` if it is chunked differently.
    ///
    /// # Panics
    /// When the shapes differ.
    pub fn zip(&self, other: &Array, op: &'static str) -> Array {
        assert_eq!(
            self.shape, other.shape,
            "cannot {op} arrays of shapes {:?} and {:?}",
            self.shape, other.shape
        );
        let other = &other.rechunk_to(self.chunks.clone());
        let matrices = self.shape.len() == 2;
        let blocks = self
            .blocks
            .iter()
            .zip(&other.blocks)
            .map(|(a, b)| {
                match (
                    transposed(a).filter(|_| matrices),
                    transposed(b).filter(|_| matrices),
                ) {
                    // `a op b.T` in one kernel, the transpose never made (the `x + x.T` case).
                    (_, Some(source)) => node(
                        "binary-transposed",
                        vec![
                            Arg::Node(a.clone()),
                            Arg::Node(source),
                            Arg::Json(json!(op)),
                        ],
                    ),
                    (Some(source), None) if COMMUTATIVE.contains(&op) => node(
                        "binary-transposed",
                        vec![
                            Arg::Node(b.clone()),
                            Arg::Node(source),
                            Arg::Json(json!(op)),
                        ],
                    ),
                    _ => node(op, vec![Arg::Node(a.clone()), Arg::Node(b.clone())]),
                }
            })
            .collect();
        Array {
            blocks,
            ..self.clone()
        }
    }

    /// `self op k` for every element (`op` a `binary-op` case: `add`, `mul`, `less`...).
    pub fn scalar(&self, op: &'static str, k: f64) -> Array {
        self.map_blocks(|block| {
            node(
                "scalar",
                vec![
                    Arg::Node(block.clone()),
                    Arg::Json(json!(op)),
                    Arg::Json(json!(k)),
                ],
            )
        })
    }

    /// `op(self)` for every element (`neg`, `abs`, `sqrt`, `exp`, `log`, `floor`, `ceil`).
    pub fn unary(&self, op: &'static str) -> Array {
        self.map_blocks(|block| {
            node(
                "unary",
                vec![Arg::Node(block.clone()), Arg::Json(json!(op))],
            )
        })
    }

    fn map_blocks(&self, f: impl FnMut(&Arc<Node>) -> Arc<Node>) -> Array {
        Array {
            blocks: self.blocks.iter().map(f).collect(),
            ..self.clone()
        }
    }

    /// A reduction (`sum`, `prod`, `min`, `max`) along `axis`, or of everything; partial
    /// results per chunk, combined in a tree with `fold` (by `combine`, a `binary-op`).
    fn reduce(&self, export: &'static str, combine: &'static str, axis: Option<usize>) -> Array {
        self.check_axis(axis);
        let grid = self.grid();
        let mut partials: Vec<(usize, Arc<Node>)> = Vec::with_capacity(self.blocks.len());
        for (i, block) in self.blocks.iter().enumerate() {
            let (partial, transposed) = match elementwise(block) {
                // Reduce `a op b` (or `a op b.T`) in one pass, without making it.
                Some((a, b, op, transpose_b)) => (
                    node(
                        "reduce-binary",
                        vec![
                            Arg::Node(a),
                            Arg::Node(b),
                            Arg::Json(op),
                            Arg::Json(json!(transpose_b)),
                            Arg::Json(json!(export)),
                            Arg::Json(json!(axis)),
                        ],
                    ),
                    transpose_b,
                ),
                None => (
                    node(
                        export,
                        vec![Arg::Node(block.clone()), Arg::Json(json!(axis))],
                    ),
                    false,
                ),
            };
            // Reducing everything, the order is free: the partials of chunks (i, j) and
            // (j, i) of `x op x.T` read the same two chunks, so they go side by side and
            // the graph's depth-first order makes each pair of chunks once, then drops it.
            let pair = if axis.is_none() && transposed {
                let mut index = unravel(i, &grid);
                index.reverse();
                i.min(ravel(&index, &grid))
            } else {
                i
            };
            partials.push((pair, partial));
        }
        partials.sort_by_key(|&(pair, _)| pair);
        let partials: Vec<Arc<Node>> = partials.into_iter().map(|(_, p)| p).collect();
        let fold = |parts: Vec<Arc<Node>>| {
            tree(parts, |group| {
                node("fold", vec![Arg::Nodes(group), Arg::Json(json!(combine))])
            })
        };
        self.group_along(axis, partials, fold)
    }

    /// Groups per-chunk partial results that reduce into the same output chunk (all of
    /// them, or those differing only along `axis`), and combines each group.
    fn group_along(
        &self,
        axis: Option<usize>,
        partials: Vec<Arc<Node>>,
        combine: impl Fn(Vec<Arc<Node>>) -> Arc<Node>,
    ) -> Array {
        let Some(axis) = axis else {
            return Array {
                shape: Vec::new(),
                chunks: Vec::new(),
                blocks: vec![combine(partials)],
            };
        };
        let grid = self.grid();
        let mut out_grid = grid.clone();
        out_grid.remove(axis);
        let mut groups: Vec<Vec<Arc<Node>>> = vec![Vec::new(); out_grid.iter().product()];
        for (b, partial) in partials.into_iter().enumerate() {
            let mut index = unravel(b, &grid);
            index.remove(axis);
            groups[ravel(&index, &out_grid)].push(partial);
        }
        let mut shape = self.shape.clone();
        shape.remove(axis);
        let mut chunks = self.chunks.clone();
        chunks.remove(axis);
        Array {
            shape,
            chunks,
            blocks: groups.into_iter().map(combine).collect(),
        }
    }

    /// The sum along `axis`, or of every element (a single number).
    pub fn sum(&self, axis: Option<usize>) -> Array {
        self.reduce("sum", "add", axis)
    }

    /// The product along `axis`, or of every element.
    pub fn prod(&self, axis: Option<usize>) -> Array {
        self.reduce("prod", "mul", axis)
    }

    /// The minimum along `axis`, or of every element.
    pub fn min(&self, axis: Option<usize>) -> Array {
        self.reduce("min", "minimum", axis)
    }

    /// The maximum along `axis`, or of every element.
    pub fn max(&self, axis: Option<usize>) -> Array {
        self.reduce("max", "maximum", axis)
    }

    /// # Panics
    /// When `axis` is not one of the array's.
    fn check_axis(&self, axis: Option<usize>) {
        if let Some(axis) = axis {
            assert!(
                axis < self.shape.len(),
                "axis {axis} is out of range for an array of shape {:?}",
                self.shape
            );
        }
    }

    /// The number of elements a reduction along `axis` (or of everything) takes into each
    /// result.
    fn count(&self, axis: Option<usize>) -> usize {
        match axis {
            Some(axis) => self.shape[axis],
            None => self.shape.iter().product(),
        }
    }

    /// The mean along `axis`, or of every element.
    pub fn mean(&self, axis: Option<usize>) -> Array {
        self.check_axis(axis);
        let n = self.count(axis) as f64;
        self.sum(axis).scalar("div", n)
    }

    /// The standard deviation along `axis` (or of every element) with `ddof` degrees of
    /// freedom (0: population, 1: sample), from partial moments combined pairwise, which is
    /// numerically stable.
    pub fn std(&self, axis: Option<usize>, ddof: f64) -> Array {
        self.check_axis(axis);
        let partials = self
            .blocks
            .iter()
            .map(|b| {
                node(
                    "moments",
                    vec![Arg::Node(b.clone()), Arg::Json(json!(axis))],
                )
            })
            .collect();
        let combined = self.group_along(axis, partials, |parts| {
            tree_with(parts, 2, |pair| {
                let mut pair = pair.into_iter();
                let (a, b) = (pair.next().expect("two"), pair.next().expect("two"));
                node("combine-moments", vec![Arg::Node(a), Arg::Node(b)])
            })
        });
        combined.map_blocks(|m| {
            node(
                "std-of-moments",
                vec![Arg::Node(m.clone()), Arg::Json(json!(ddof))],
            )
        })
    }

    /// The matrix product of two matrices (chunks of `self`'s columns must match chunks of
    /// `other`'s rows).
    ///
    /// # Panics
    /// When the arrays are not matrices or their inner chunks differ.
    pub fn matmul(&self, other: &Array) -> Array {
        assert!(
            self.shape.len() == 2 && other.shape.len() == 2,
            "matmul takes two matrices, got shapes {:?} and {:?}",
            self.shape,
            other.shape
        );
        assert_eq!(
            self.chunks[1], other.chunks[0],
            "the column chunks of the left matrix must match the row chunks of the right one"
        );
        let (m, k, n) = (
            self.chunks[0].len(),
            self.chunks[1].len(),
            other.chunks[1].len(),
        );
        let mut blocks = Vec::with_capacity(m * n);
        for i in 0..m {
            for j in 0..n {
                let products = (0..k)
                    .map(|p| {
                        node(
                            "matmul",
                            vec![
                                Arg::Node(self.blocks[i * k + p].clone()),
                                Arg::Node(other.blocks[p * n + j].clone()),
                            ],
                        )
                    })
                    .collect();
                blocks.push(tree(products, |group| {
                    node("fold", vec![Arg::Nodes(group), Arg::Json(json!("add"))])
                }));
            }
        }
        Array {
            shape: vec![self.shape[0], other.shape[1]],
            chunks: vec![self.chunks[0].clone(), other.chunks[1].clone()],
            blocks,
        }
    }

    /// The whole array in one chunk.
    fn assembled(&self) -> Arc<Node> {
        join(self.blocks.clone(), self.grid())
    }

    /// The elements `ranges[d]` along each axis `d`, chunked as they were (the chunks at the
    /// edges cut short).
    ///
    /// # Panics
    /// When a range does not fit its axis or the number of ranges differs from the axes.
    pub fn slice(&self, ranges: &[std::ops::Range<usize>]) -> Array {
        assert_eq!(
            ranges.len(),
            self.shape.len(),
            "one range per axis of {:?}",
            self.shape
        );
        for (d, r) in ranges.iter().enumerate() {
            assert!(
                r.start <= r.end && r.end <= self.shape[d],
                "range {r:?} does not fit axis {d} of length {}",
                self.shape[d]
            );
        }
        // Per axis: the input chunks overlapping the range, with the part of each taken.
        let pieces: Vec<Vec<Piece>> = ranges
            .iter()
            .zip(&self.chunks)
            .map(|(r, chunks)| overlaps(chunks, r.clone()))
            .collect();
        let grid = self.grid();
        let out_grid: Vec<usize> = pieces.iter().map(Vec::len).collect();
        let blocks = (0..out_grid.iter().product())
            .map(|b| {
                let index = unravel(b, &out_grid);
                let parts: Vec<&Piece> = index.iter().zip(&pieces).map(|(&i, p)| &p[i]).collect();
                self.cut(&parts, &grid)
            })
            .collect();
        Array {
            shape: ranges.iter().map(|r| r.end - r.start).collect(),
            chunks: pieces
                .iter()
                .map(|p| p.iter().map(|x| x.stop - x.start).collect())
                .collect(),
            blocks,
        }
    }

    /// The same array cut into chunks of `chunk` (Dask's `rechunk`): each new chunk is made
    /// of slices of the old chunks it overlaps, concatenated.
    ///
    /// # Panics
    /// When `chunk` does not have one length per axis.
    pub fn rechunk(&self, chunk: &[usize]) -> Array {
        assert_eq!(
            chunk.len(),
            self.shape.len(),
            "the chunk shape {chunk:?} must have one length per axis of {:?}",
            self.shape
        );
        let chunks: Vec<Vec<usize>> = self
            .shape
            .iter()
            .zip(chunk)
            .map(|(&n, &c)| split(n, c))
            .collect();
        self.rechunk_to(chunks)
    }

    /// The same array cut into the chunks `chunks` (lengths per axis, adding up to the
    /// shape).
    fn rechunk_to(&self, chunks: Vec<Vec<usize>>) -> Array {
        if chunks == self.chunks {
            return self.clone();
        }
        let grid = self.grid();
        let out_grid = grid_of(&chunks);
        let blocks = (0..out_grid.iter().product())
            .map(|b| {
                let index = unravel(b, &out_grid);
                // Per axis: the old chunks the new one overlaps.
                let pieces: Vec<Vec<Piece>> = index
                    .iter()
                    .enumerate()
                    .map(|(d, &i)| {
                        let start: usize = chunks[d][..i].iter().sum();
                        overlaps(&self.chunks[d], start..start + chunks[d][i])
                    })
                    .collect();
                let piece_grid: Vec<usize> = pieces.iter().map(Vec::len).collect();
                let parts = (0..piece_grid.iter().product())
                    .map(|p| {
                        let at = unravel(p, &piece_grid);
                        let parts: Vec<&Piece> =
                            at.iter().zip(&pieces).map(|(&i, p)| &p[i]).collect();
                        self.cut(&parts, &grid)
                    })
                    .collect();
                join(parts, piece_grid)
            })
            .collect();
        Array {
            shape: self.shape.clone(),
            chunks,
            blocks,
        }
    }

    /// The part `parts` (one per axis) of one of the array's chunks: the chunk itself when
    /// the parts cover it, else a `slice` of it.
    fn cut(&self, parts: &[&Piece], grid: &[usize]) -> Arc<Node> {
        let index: Vec<usize> = parts.iter().map(|p| p.block).collect();
        let block = &self.blocks[ravel(&index, grid)];
        let whole = parts
            .iter()
            .enumerate()
            .all(|(d, p)| p.start == 0 && p.stop == self.chunks[d][p.block]);
        if whole {
            return block.clone();
        }
        let start: Vec<usize> = parts.iter().map(|p| p.start).collect();
        let stop: Vec<usize> = parts.iter().map(|p| p.stop).collect();
        node(
            "slice",
            vec![
                Arg::Node(block.clone()),
                Arg::Json(json!(start)),
                Arg::Json(json!(stop)),
            ],
        )
    }

    /// The graph document computing the whole array (output `result`, one chunk record),
    /// as `fabric run` and `fabric submit` take it.
    pub fn to_graph(&self) -> Json {
        let mut whole = self.assembled();
        if whole.dataset.is_some() {
            // A persisted chunk is no task: copy it into one.
            whole = node(
                "fold",
                vec![Arg::Nodes(vec![whole]), Arg::Json(json!("add"))],
            );
        }
        let mut tasks = document(std::slice::from_ref(&whole));
        let result = tasks.remove(&whole.key).expect("the root is a task");
        tasks.insert("result".into(), result);
        for task in tasks.values_mut() {
            rename_ref(task, &whole.key, "result");
        }
        json!({"components": {}, "tasks": tasks, "outputs": ["result"]})
    }

    /// Computes the array's chunks on a cluster and keeps them in the workers' memory as the
    /// dataset `name` (Dask's `persist`); returns the same array made of those chunks, which
    /// later computations use without computing them again.
    pub async fn persist(&self, client: &Client, name: &str) -> Result<Array, ClientError> {
        let outputs: Vec<&str> = self
            .blocks
            .iter()
            .filter(|b| b.dataset.is_none())
            .map(|b| b.key.as_str())
            .collect();
        if !outputs.is_empty() {
            let graph = json!({
                "components": {},
                "tasks": document(&self.blocks),
                "outputs": outputs,
            });
            let submission = Submission::new(graph.to_string(), Vec::new());
            let outcome = client.persist(&submission, name, |_| {}).await?;
            if !outcome.succeeded() {
                return Err(ClientError::Failed(failure(&outcome)));
            }
        }
        let blocks = self
            .blocks
            .iter()
            .map(|b| match b.dataset {
                Some(_) => b.clone(),
                None => Node::persisted(name, &b.key),
            })
            .collect();
        Ok(Array {
            blocks,
            ..self.clone()
        })
    }

    /// Computes the array on a cluster and returns it whole.
    pub async fn compute(&self, client: &Client) -> Result<Dense, ClientError> {
        let submission = Submission::new(self.to_graph().to_string(), Vec::new());
        let outcome = client.compute(&submission, |_| {}).await?;
        if !outcome.succeeded() {
            return Err(ClientError::Failed(failure(&outcome)));
        }
        outcome
            .outputs
            .iter()
            .find(|(id, _)| id == "result")
            .and_then(|(_, v)| Dense::from_value(v))
            .ok_or_else(|| ClientError::Failed("the job returned no array".into()))
    }
}

/// The operands, operation and whether the second is transposed, if `node` combines two
/// chunks elementwise.
fn elementwise(node: &Node) -> Option<(Arc<Node>, Arc<Node>, Json, bool)> {
    match (node.export, node.args.as_slice()) {
        ("binary-transposed", [Arg::Node(a), Arg::Node(b), Arg::Json(op)]) => {
            Some((a.clone(), b.clone(), op.clone(), true))
        }
        (op, [Arg::Node(a), Arg::Node(b)]) if fabric_builtins::BINARY_OPS.contains(&op) => {
            Some((a.clone(), b.clone(), json!(op), false))
        }
        _ => None,
    }
}

/// Operations whose operands may swap.
const COMMUTATIVE: [&str; 6] = ["add", "mul", "maximum", "minimum", "equal", "not-equal"];

/// The chunk a `transpose` of a matrix chunk reads, if `node` is one.
fn transposed(node: &Node) -> Option<Arc<Node>> {
    match (node.export, node.args.as_slice()) {
        ("transpose", [Arg::Node(source)]) => Some(source.clone()),
        _ => None,
    }
}

/// The part of one chunk along one axis: chunk `block`, elements `start..stop` of it.
#[derive(Debug, PartialEq)]
struct Piece {
    block: usize,
    start: usize,
    stop: usize,
}

/// The chunks of lengths `chunks` that `range` overlaps, with the part of each it takes.
fn overlaps(chunks: &[usize], range: std::ops::Range<usize>) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut offset = 0;
    for (block, &len) in chunks.iter().enumerate() {
        let (lo, hi) = (range.start.max(offset), range.end.min(offset + len));
        if lo < hi || (range.is_empty() && out.is_empty() && range.start <= offset + len) {
            out.push(Piece {
                block,
                start: lo.min(hi) - offset,
                stop: hi.max(lo) - offset,
            });
        }
        offset += len;
    }
    out
}

/// One chunk from a grid of chunks (row-major, `grid` chunks per axis): joined along the
/// last axis first, then the others.
fn join(mut level: Vec<Arc<Node>>, mut grid: Vec<usize>) -> Arc<Node> {
    while let Some(&len) = grid.last() {
        let axis = grid.len() - 1;
        level = level
            .chunks(len)
            .map(|row| match row {
                [one] => one.clone(),
                many => node(
                    "concat",
                    vec![Arg::Nodes(many.to_vec()), Arg::Json(json!(axis))],
                ),
            })
            .collect();
        grid.pop();
    }
    level.pop().expect("an array has at least one chunk")
}

/// The number of chunks along each axis.
fn grid_of(chunks: &[Vec<usize>]) -> Vec<usize> {
    chunks.iter().map(Vec::len).collect()
}

/// The grid index of the `b`-th chunk (row-major).
fn unravel(mut b: usize, grid: &[usize]) -> Vec<usize> {
    let mut index = vec![0; grid.len()];
    for d in (0..grid.len()).rev() {
        index[d] = b % grid[d];
        b /= grid[d];
    }
    index
}

/// The position of a grid index (row-major).
fn ravel(index: &[usize], grid: &[usize]) -> usize {
    index.iter().zip(grid).fold(0, |acc, (&i, &n)| acc * n + i)
}

macro_rules! binary_ops {
    ($($trait:ident $method:ident $op:literal),*) => {$(
        impl std::ops::$trait<&Array> for &Array {
            type Output = Array;
            fn $method(self, other: &Array) -> Array {
                self.zip(other, $op)
            }
        }
        impl std::ops::$trait<f64> for &Array {
            type Output = Array;
            fn $method(self, k: f64) -> Array {
                self.scalar($op, k)
            }
        }
    )*};
}

binary_ops!(Add add "add", Sub sub "sub", Mul mul "mul", Div div "div");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_into_chunks() {
        assert_eq!(split(10, 4), [4, 4, 2]);
        assert_eq!(split(8, 4), [4, 4]);
        assert_eq!(split(3, 5), [3]);
    }

    #[test]
    fn ravels_and_unravels() {
        let grid = [3, 4, 5];
        for b in 0..60 {
            assert_eq!(ravel(&unravel(b, &grid), &grid), b);
        }
    }

    #[test]
    fn builds_the_graph_of_a_sum_of_x_and_its_transpose() {
        let x = Array::random(&[8, 8], &[4, 4], 1);
        let s = (&x + &x.t()).sum(None);
        // 4 random, 4 one-pass sums of a block plus the transpose of another, 1 fold.
        assert_eq!(s.tasks(), 9);
        let g = s.to_graph();
        let tasks = g["tasks"].as_object().unwrap();
        assert_eq!(tasks.len(), 9);
        assert!(
            tasks
                .values()
                .all(|t| t["call"] != "builtin:array/transpose"),
            "{g}"
        );
        assert_eq!(tasks["result"]["call"], "builtin:array/fold");
        // Every reference names a task of the graph.
        fn refs(v: &Json, out: &mut Vec<String>) {
            match v {
                Json::Object(m) => {
                    if let Some(r) = m.get("ref").and_then(Json::as_str) {
                        out.push(r.to_string());
                    }
                    m.values().for_each(|v| refs(v, out));
                }
                Json::Array(items) => items.iter().for_each(|v| refs(v, out)),
                _ => {}
            }
        }
        let mut all = Vec::new();
        refs(&g, &mut all);
        assert!(all.iter().all(|r| tasks.contains_key(r)), "{all:?}");
    }

    #[test]
    fn finds_the_chunks_a_range_overlaps() {
        let p = |block, start, stop| Piece { block, start, stop };
        assert_eq!(
            overlaps(&[4, 4, 2], 3..9),
            [p(0, 3, 4), p(1, 0, 4), p(2, 0, 1)]
        );
        assert_eq!(overlaps(&[4, 4, 2], 4..8), [p(1, 0, 4)]);
        assert_eq!(overlaps(&[4, 4, 2], 0..10).len(), 3);
    }

    #[test]
    fn slices_and_rechunks_keep_shapes() {
        let x = Array::random(&[10, 7], &[4, 3], 1);
        let s = x.slice(&[2..9, 1..7]);
        assert_eq!(s.shape(), [7, 6]);
        assert_eq!(s.chunks(), [vec![2, 4, 1], vec![2, 3, 1]]);
        let r = x.rechunk(&[5, 7]);
        assert_eq!(r.chunks(), [vec![5, 5], vec![7]]);
        // Each new chunk joins slices of the old ones: 2 x 3 old chunks per new chunk here.
        assert!(r.tasks() > x.tasks());
        assert_eq!(x.rechunk(&[4, 3]).tasks(), x.tasks());
    }

    #[test]
    fn a_persisted_array_and_its_source_mix() {
        let x = Array::random(&[4, 4], &[2, 2], 1);
        let kept = Array {
            blocks: x
                .blocks
                .iter()
                .map(|b| Node::persisted("x", &b.key))
                .collect(),
            ..x.clone()
        };
        let g = (&kept + &x).sum(None).to_graph();
        let text = g.to_string();
        // The source's chunks are computed, the persisted ones referenced.
        assert_eq!(text.matches("builtin:array/random").count(), 4, "{text}");
        assert_eq!(text.matches(r#""dataset":"x""#).count(), 4, "{text}");
    }

    #[test]
    #[should_panic(expected = "axis 2 is out of range for an array of shape [4, 4]")]
    fn reductions_check_their_axis() {
        Array::ones(&[4, 4], &[2, 2]).std(Some(2), 1.0);
    }

    #[test]
    fn reductions_along_an_axis_keep_the_other_chunks() {
        let x = Array::ones(&[10, 6], &[4, 3]);
        let m = x.mean(Some(0));
        assert_eq!(m.shape(), [6]);
        assert_eq!(m.chunks(), [vec![3, 3]]);
        let t = x.t();
        assert_eq!(t.shape(), [6, 10]);
        assert_eq!(t.chunks(), [vec![3, 3], vec![4, 4, 2]]);
    }
}
