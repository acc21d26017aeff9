//! Measures the sizes TPC-H Q3's shuffles make and the join estimates, counted as Fabric
//! counts them now and as it counted them before (recomputed here: partitions encoded as
//! they are, dictionaries and all, and a join's row width taken from Arrow's
//! `get_array_memory_size`). Ignored by default: run it with
//! `cargo test --release -p fabric-frame --test q3_sizes -- --ignored --nocapture`
//! (`Q3_SCALE=4` for 4 times the rows); bench/RESULTS.md has its numbers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fabric_frame::DataAccess;
use fabric_frame::arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use fabric_frame::arrow_schema::{Field, Schema};
use fabric_frame::expr::Expr;
use fabric_frame::join::{self, JoinHow};
use fabric_frame::read::{Format, Source, Step};

/// Partitions encoded the old way (as they are) or the new one ([`fabric_frame::encode`]).
#[derive(Clone, Copy, PartialEq)]
enum Counting {
    Old,
    New,
}

fn encode(b: &RecordBatch, counting: Counting) -> Vec<u8> {
    match counting {
        Counting::New => fabric_frame::encode(b).unwrap(),
        Counting::Old => {
            let mut out = Vec::new();
            let mut w = arrow_ipc::writer::StreamWriter::try_new(&mut out, &b.schema()).unwrap();
            w.write(b).unwrap();
            w.finish().unwrap();
            drop(w);
            out
        }
    }
}

/// As the next task sees a partition: decoded from the bytes its task made.
fn hand_on(b: &RecordBatch, counting: Counting) -> RecordBatch {
    fabric_frame::decode(&encode(b, counting)).unwrap()
}

fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

const WORDS: [&str; 20] = [
    "furiously",
    "quickly",
    "final",
    "pending",
    "ironic",
    "deposits",
    "accounts",
    "regular",
    "express",
    "packages",
    "slyly",
    "blithely",
    "carefully",
    "bold",
    "even",
    "special",
    "unusual",
    "requests",
    "theodolites",
    "instructions",
];

fn text(state: &mut u64, lo: u64, hi: u64) -> String {
    let n = lo + next(state) % (hi - lo + 1);
    let words: Vec<&str> = (0..n).map(|_| WORDS[(next(state) % 20) as usize]).collect();
    words.join(" ")
}

fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
    let fields: Vec<Field> = columns
        .iter()
        .map(|(n, c)| Field::new(*n, c.data_type().clone(), false))
        .collect();
    RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns.into_iter().map(|(_, c)| c).collect(),
    )
    .unwrap()
}

/// Writes customer (1 file), orders (4 files) and lineitem (1 file) under `dir`.
fn write_tables(dir: &std::path::Path, scale: u64) {
    let mut s = 11u64;
    let (customers, orders) = (1500 * scale, 15_000 * scale);
    let segments = [
        "BUILDING",
        "AUTOMOBILE",
        "MACHINERY",
        "HOUSEHOLD",
        "FURNITURE",
    ];
    let seg: Vec<&str> = (0..customers)
        .map(|_| segments[(next(&mut s) % 5) as usize])
        .collect();
    let write = |name: &str, b: &RecordBatch| {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let url = path.to_string_lossy().into_owned();
        fabric_frame::read::write_parquet(b, &url, &DataAccess::anywhere(), "").unwrap();
    };
    write(
        "customer/0.parquet",
        &batch(vec![
            (
                "custkey",
                Arc::new(Int64Array::from_iter_values(0..customers as i64)),
            ),
            (
                "c_name",
                Arc::new(StringArray::from_iter_values(
                    (0..customers).map(|c| format!("Customer#{c:09}")),
                )),
            ),
            ("c_mktsegment", Arc::new(StringArray::from(seg))),
        ]),
    );
    let (mut o_cols, mut l_cols) = (
        (vec![], vec![], vec![], vec![], vec![]),
        (vec![], vec![], vec![], vec![], vec![], vec![]),
    );
    for o in 0..orders as i64 {
        let (cust, date, prio) = (
            (next(&mut s) % customers) as i64,
            (next(&mut s) % 2400) as i64,
            (next(&mut s) % 2) as i64,
        );
        o_cols.0.push(o);
        o_cols.1.push(cust);
        o_cols.2.push(date);
        o_cols.3.push(prio);
        o_cols.4.push(text(&mut s, 4, 12));
        for _ in 0..1 + next(&mut s) % 7 {
            l_cols.0.push(o);
            l_cols
                .1
                .push((90_000 + next(&mut s) % 9_910_000) as f64 / 100.0);
            l_cols.2.push((next(&mut s) % 11) as f64 / 100.0);
            l_cols.3.push(date + 1 + (next(&mut s) % 120) as i64);
            l_cols.4.push(
                [
                    "DELIVER IN PERSON",
                    "COLLECT COD",
                    "NONE",
                    "TAKE BACK RETURN",
                ][(next(&mut s) % 4) as usize],
            );
            l_cols.5.push(text(&mut s, 6, 16));
        }
    }
    let all_orders = batch(vec![
        ("orderkey", Arc::new(Int64Array::from(o_cols.0))),
        ("custkey", Arc::new(Int64Array::from(o_cols.1))),
        ("o_orderdate", Arc::new(Int64Array::from(o_cols.2))),
        ("o_shippriority", Arc::new(Int64Array::from(o_cols.3))),
        ("o_comment", Arc::new(StringArray::from(o_cols.4))),
    ]);
    let quarter = all_orders.num_rows() / 4;
    for i in 0..4 {
        let rows = if i == 3 {
            all_orders.num_rows() - 3 * quarter
        } else {
            quarter
        };
        write(
            &format!("orders/{i}.parquet"),
            &all_orders.slice(i * quarter, rows),
        );
    }
    write(
        "lineitem/0.parquet",
        &batch(vec![
            ("orderkey", Arc::new(Int64Array::from(l_cols.0))),
            ("l_extendedprice", Arc::new(Float64Array::from(l_cols.1))),
            ("l_discount", Arc::new(Float64Array::from(l_cols.2))),
            ("l_shipdate", Arc::new(Int64Array::from(l_cols.3))),
            ("l_shipinstruct", Arc::new(StringArray::from(l_cols.4))),
            ("l_comment", Arc::new(StringArray::from(l_cols.5))),
        ]),
    );
}

fn read(dir: &std::path::Path, counting: Counting, filter: &str) -> Vec<RecordBatch> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| {
            let source = Source {
                format: Format::Parquet,
                url: p.to_string_lossy().into_owned(),
                schema: None,
            };
            let steps = [Step::Filter(Expr::parse(filter).unwrap())];
            let b =
                fabric_frame::read::read(&source, &steps, &DataAccess::anywhere(), "", &|| false)
                    .unwrap();
            hand_on(&b, counting)
        })
        .collect()
}

/// The largest sizes one merge makes.
#[derive(Debug, Default)]
struct Merge {
    /// The largest `split-hash` output (all its parts), and the largest part.
    split_total: u64,
    split_part: u64,
    /// The largest join estimate and the largest result (encoded).
    estimate: u64,
    estimate_per_row: u64,
    result: u64,
    /// Time spent splitting and encoding the parts.
    split_time: Duration,
}

fn merge(
    l: &[RecordBatch],
    r: &[RecordBatch],
    on: &str,
    counting: Counting,
) -> (Vec<RecordBatch>, Merge) {
    let on = vec![on.to_string()];
    let n = l.len().max(r.len());
    let mut m = Merge::default();
    let mut split = |side: &[RecordBatch]| -> Vec<Vec<RecordBatch>> {
        side.iter()
            .map(|p| {
                let t = Instant::now();
                let parts = join::split_hash(p, &on, n).unwrap();
                let bytes: Vec<Vec<u8>> = parts.iter().map(|q| encode(q, counting)).collect();
                m.split_time += t.elapsed();
                let sizes: Vec<u64> = bytes.iter().map(|b| b.len() as u64).collect();
                m.split_total = m.split_total.max(sizes.iter().sum());
                m.split_part = m.split_part.max(*sizes.iter().max().unwrap());
                bytes
                    .iter()
                    .map(|b| fabric_frame::decode(b).unwrap())
                    .collect()
            })
            .collect()
    };
    let (ls, rs) = (split(l), split(r));
    let mut out = Vec::new();
    for i in 0..n {
        let bucket = |s: &[Vec<RecordBatch>]| {
            join::concat_parts(&s.iter().map(|p| p[i].clone()).collect::<Vec<_>>()).unwrap()
        };
        let (lb, rb) = (bucket(&ls), bucket(&rs));
        let size = join::estimate(&lb, &rb, &on, JoinHow::Inner).unwrap();
        let estimate = match counting {
            Counting::New => size.bytes,
            Counting::Old => {
                let width =
                    |b: &RecordBatch| b.get_array_memory_size() as u64 / b.num_rows().max(1) as u64;
                size.rows * (width(&lb) + width(&rb) + 8)
            }
        };
        let joined = join::join(&lb, &rb, &on, JoinHow::Inner, u64::MAX).unwrap();
        let bytes = encode(&joined, counting);
        if estimate > m.estimate {
            m.estimate = estimate;
            m.estimate_per_row = estimate / size.rows.max(1);
        }
        m.result = m.result.max(bytes.len() as u64);
        out.push(fabric_frame::decode(&bytes).unwrap());
    }
    (out, m)
}

#[test]
#[ignore]
fn q3_sizes() {
    let scale: u64 = std::env::var("Q3_SCALE").map_or(1, |s| s.parse().unwrap());
    let dir = tempfile::tempdir().unwrap();
    write_tables(dir.path(), scale);
    let file = std::fs::metadata(dir.path().join("lineitem/0.parquet"))
        .unwrap()
        .len();
    println!("scale {scale}: lineitem.parquet {file} bytes");
    for counting in [Counting::Old, Counting::New] {
        let c = read(
            &dir.path().join("customer"),
            counting,
            "c_mktsegment == 'BUILDING'",
        );
        let o = read(&dir.path().join("orders"), counting, "o_orderdate < 1200");
        let l = read(&dir.path().join("lineitem"), counting, "l_shipdate > 1200");
        let lineitem = encode(&l[0], counting).len();
        let arrow = l[0].get_array_memory_size();
        let owned = fabric_frame::size::owned_bytes(&l[..1]);
        let (co, m1) = merge(&c, &o, "custkey", counting);
        let (_, m2) = merge(&co, &l, "orderkey", counting);
        let name = if counting == Counting::Old {
            "old"
        } else {
            "new"
        };
        println!(
            "{name}: lineitem partition {lineitem} bytes encoded ({} rows; Arrow's memory size \
             {arrow}, owned {owned})",
            l[0].num_rows()
        );
        for (i, m) in [m1, m2].iter().enumerate() {
            println!(
                "{name}: merge {}: largest split-hash output {} (largest part {}, split and \
                 encoded in {:?}); largest join estimate {} ({} B/row), largest result {}",
                i + 1,
                m.split_total,
                m.split_part,
                m.split_time,
                m.estimate,
                m.estimate_per_row,
                m.result
            );
        }
    }
}
