//! The 22 TPC-H queries written with [`fabric_client::DataFrame`] as a pandas user writes
//! them (merges, `query` filters, `assign`, `groupby().agg`, `sort_values`, `head`), with
//! the specification's validation parameters, and their reference SQL texts
//! ([`reference_sql`]) for checking the answers with another engine.
//!
//! ```no_run
//! # fn example() -> Result<(), fabric_client::ClientError> {
//! let tables = fabric_tpch::Tables::read_parquet("/data/tpch-sf1")?;
//! let q3 = fabric_tpch::query(3, &tables)?; // a lazy frame: compute it on a cluster
//! # Ok(())
//! # }
//! ```

use fabric_client::{ClientError, DataFrame};

/// The numbers of the queries, 1 to 22.
pub const QUERIES: std::ops::RangeInclusive<u8> = 1..=22;

/// The eight TPC-H tables, as frames.
#[derive(Clone, Debug)]
pub struct Tables {
    /// The lines of orders (6 million rows per unit of scale).
    pub lineitem: DataFrame,
    /// The orders (1.5 million).
    pub orders: DataFrame,
    /// The customers (150,000).
    pub customer: DataFrame,
    /// The parts (200,000).
    pub part: DataFrame,
    /// Which supplier supplies which part, at what cost (800,000).
    pub partsupp: DataFrame,
    /// The suppliers (10,000).
    pub supplier: DataFrame,
    /// The 25 nations.
    pub nation: DataFrame,
    /// The 5 regions.
    pub region: DataFrame,
}

/// The tables' names, as `tpchgen-cli` names their files and directories.
pub const TABLE_NAMES: [&str; 8] = [
    "lineitem", "orders", "customer", "part", "partsupp", "supplier", "nation", "region",
];

impl Tables {
    /// The tables as `tpchgen-cli parquet` writes them under `dir`: each table a directory
    /// of parts (`lineitem/lineitem.1.parquet`, ... with `--parts`) or one file
    /// (`lineitem.parquet`). `dir` may be a local directory or an object-store prefix
    /// (`s3://bucket/tpch`, whose tables are then directories).
    pub fn read_parquet(dir: &str) -> Result<Tables, ClientError> {
        let dir = dir.trim_end_matches('/');
        let read = |table: &str| {
            let local = !dir.contains("://");
            let single = format!("{dir}/{table}.parquet");
            if local && std::path::Path::new(&single).is_file() {
                DataFrame::read_parquet(&single)
            } else {
                DataFrame::read_parquet(&format!("{dir}/{table}/*.parquet"))
            }
        };
        Ok(Tables {
            lineitem: read("lineitem")?,
            orders: read("orders")?,
            customer: read("customer")?,
            part: read("part")?,
            partsupp: read("partsupp")?,
            supplier: read("supplier")?,
            nation: read("nation")?,
            region: read("region")?,
        })
    }
}

/// Query `n` (1 to 22) on `tables`: a lazy frame whose columns are the SQL text's, in its
/// order and with its names (Q18's unnamed `sum(l_quantity)` is `l_quantity`), and whose
/// rows are in its `ORDER BY` order.
pub fn query(n: u8, tables: &Tables) -> Result<DataFrame, ClientError> {
    let t = tables;
    match n {
        1 => q1(t),
        2 => q2(t),
        3 => q3(t),
        4 => q4(t),
        5 => q5(t),
        6 => q6(t),
        7 => q7(t),
        8 => q8(t),
        9 => q9(t),
        10 => q10(t),
        11 => q11(t),
        12 => q12(t),
        13 => q13(t),
        14 => q14(t),
        15 => q15(t),
        16 => q16(t),
        17 => q17(t),
        18 => q18(t),
        19 => q19(t),
        20 => q20(t),
        21 => q21(t),
        22 => q22(t),
        other => Err(ClientError::Invalid(format!(
            "TPC-H has queries 1 to 22, not {other}"
        ))),
    }
}

/// The reference SQL of query `n` (the specification's text with its validation
/// parameters, as DuckDB runs it over views named after the tables), or `None` for a
/// number that is not a query.
pub fn reference_sql(n: u8) -> Option<&'static str> {
    SQL.get(usize::from(n).checked_sub(1)?).copied()
}

const SQL: [&str; 22] = [
    include_str!("../queries/q01.sql"),
    include_str!("../queries/q02.sql"),
    include_str!("../queries/q03.sql"),
    include_str!("../queries/q04.sql"),
    include_str!("../queries/q05.sql"),
    include_str!("../queries/q06.sql"),
    include_str!("../queries/q07.sql"),
    include_str!("../queries/q08.sql"),
    include_str!("../queries/q09.sql"),
    include_str!("../queries/q10.sql"),
    include_str!("../queries/q11.sql"),
    include_str!("../queries/q12.sql"),
    include_str!("../queries/q13.sql"),
    include_str!("../queries/q14.sql"),
    include_str!("../queries/q15.sql"),
    include_str!("../queries/q16.sql"),
    include_str!("../queries/q17.sql"),
    include_str!("../queries/q18.sql"),
    include_str!("../queries/q19.sql"),
    include_str!("../queries/q20.sql"),
    include_str!("../queries/q21.sql"),
    include_str!("../queries/q22.sql"),
];

/// `l_extendedprice * (1 - l_discount)`: a line's revenue after its discount.
const REVENUE: &str = "l_extendedprice * (1 - l_discount)";

/// Q1, pricing summary report: quantities, prices and discounts of the lines shipped up
/// to 90 days before 1998-12-01, per return flag and line status.
fn q1(t: &Tables) -> Result<DataFrame, ClientError> {
    t.lineitem
        .filter("l_shipdate <= '1998-09-02'")?
        .assign("disc_price", REVENUE)?
        .assign("charge", "l_extendedprice * (1 - l_discount) * (1 + l_tax)")?
        .groupby(&["l_returnflag", "l_linestatus"])
        .agg(&[
            ("l_quantity", "sum"),
            ("l_extendedprice", "sum"),
            ("disc_price", "sum"),
            ("charge", "sum"),
            ("l_quantity", "mean"),
            ("l_extendedprice", "mean"),
            ("l_discount", "mean"),
            ("l_orderkey", "count"),
        ])?
        .rename(&[
            ("l_quantity_sum", "sum_qty"),
            ("l_extendedprice_sum", "sum_base_price"),
            ("disc_price", "sum_disc_price"),
            ("charge", "sum_charge"),
            ("l_quantity_mean", "avg_qty"),
            ("l_extendedprice_mean", "avg_price"),
            ("l_discount", "avg_disc"),
            ("l_orderkey", "count_order"),
        ])?
        .sort_values_by(&["l_returnflag", "l_linestatus"], &[true])
}

/// Q2, minimum cost supplier: for each size-15 brass part, the European suppliers that
/// sell it at the lowest European cost, the 100 richest first.
fn q2(t: &Tables) -> Result<DataFrame, ClientError> {
    let europe = t
        .region
        .filter("r_name == 'EUROPE'")?
        .merge(&t.nation, &["r_regionkey"], &["n_regionkey"], "inner")?
        .merge(&t.supplier, &["n_nationkey"], &["s_nationkey"], "inner")?
        .merge(&t.partsupp, &["s_suppkey"], &["ps_suppkey"], "inner")?;
    let brass = t
        .part
        .filter("p_size == 15 and p_type.str.endswith('BRASS')")?
        .merge(&europe, &["p_partkey"], &["ps_partkey"], "inner")?;
    let cheapest = brass
        .groupby(&["p_partkey"])
        .agg(&[("ps_supplycost", "min")])?
        .rename(&[("ps_supplycost", "min_cost")])?;
    brass
        .join(&cheapest, &["p_partkey"], "inner")?
        .filter("ps_supplycost == min_cost")?
        .sort_values_by(
            &["s_acctbal", "n_name", "s_name", "p_partkey"],
            &[false, true, true, true],
        )?
        .head(100)?
        .select(&[
            "s_acctbal",
            "s_name",
            "n_name",
            "p_partkey",
            "p_mfgr",
            "s_address",
            "s_phone",
            "s_comment",
        ])
}

/// Q3, shipping priority: the 10 unshipped orders of the BUILDING segment with the most
/// revenue on 1995-03-15.
fn q3(t: &Tables) -> Result<DataFrame, ClientError> {
    let customers = t.customer.filter("c_mktsegment == 'BUILDING'")?;
    let orders = t.orders.filter("o_orderdate < '1995-03-15'")?;
    let lines = t.lineitem.filter("l_shipdate > '1995-03-15'")?;
    customers
        .merge(&orders, &["c_custkey"], &["o_custkey"], "inner")?
        .merge(&lines, &["o_orderkey"], &["l_orderkey"], "inner")?
        .assign("revenue", REVENUE)?
        .groupby(&["l_orderkey", "o_orderdate", "o_shippriority"])
        .agg(&[("revenue", "sum")])?
        .sort_values_by(&["revenue", "o_orderdate"], &[false, true])?
        .head(10)?
        .select(&["l_orderkey", "revenue", "o_orderdate", "o_shippriority"])
}

/// Q4, order priority checking: how many orders of 1993's third quarter had a line
/// received after its commit date, per priority.
fn q4(t: &Tables) -> Result<DataFrame, ClientError> {
    let late = t.lineitem.filter("l_commitdate < l_receiptdate")?;
    t.orders
        .filter("o_orderdate >= '1993-07-01' and o_orderdate < '1993-10-01'")?
        .merge(&late, &["o_orderkey"], &["l_orderkey"], "semi")?
        .groupby(&["o_orderpriority"])
        .agg(&[("o_orderkey", "count")])?
        .rename(&[("o_orderkey", "order_count")])?
        .sort_values("o_orderpriority")
}

/// Q5, local supplier volume: 1994's revenue of Asian nations from lines whose customer
/// and supplier are of the same nation, largest first.
fn q5(t: &Tables) -> Result<DataFrame, ClientError> {
    let asia = t
        .region
        .filter("r_name == 'ASIA'")?
        .merge(&t.nation, &["r_regionkey"], &["n_regionkey"], "inner")?
        .merge(&t.supplier, &["n_nationkey"], &["s_nationkey"], "inner")?;
    let orders = t
        .orders
        .filter("o_orderdate >= '1994-01-01' and o_orderdate < '1995-01-01'")?;
    t.customer
        .merge(&orders, &["c_custkey"], &["o_custkey"], "inner")?
        .merge(&t.lineitem, &["o_orderkey"], &["l_orderkey"], "inner")?
        .merge(
            &asia,
            &["l_suppkey", "c_nationkey"],
            &["s_suppkey", "s_nationkey"],
            "inner",
        )?
        .assign("revenue", REVENUE)?
        .groupby(&["n_name"])
        .agg(&[("revenue", "sum")])?
        .sort_values_by(&["revenue"], &[false])
}

/// Q6, forecasting revenue change: the revenue 1994's small-quantity lines would have
/// added without their 5 to 7% discounts.
fn q6(t: &Tables) -> Result<DataFrame, ClientError> {
    t.lineitem
        .filter(
            "l_shipdate >= '1994-01-01' and l_shipdate < '1995-01-01' \
             and l_discount.between(0.05, 0.07) and l_quantity < 24",
        )?
        .assign("revenue", "l_extendedprice * l_discount")?
        .agg(&[("revenue", "sum")])
}

/// The nations as `(key, name)` columns called `{role}_nationkey` and `{role}_nation`.
fn nations_as(t: &Tables, role: &str) -> Result<DataFrame, ClientError> {
    let key = format!("{role}_nationkey");
    let name = format!("{role}_nation");
    t.nation
        .rename(&[("n_nationkey", key.as_str()), ("n_name", name.as_str())])?
        .select(&[key.as_str(), name.as_str()])
}

/// Q7, volume shipping: the revenue of goods shipped between France and Germany in 1995
/// and 1996, per supplier nation, customer nation and year.
fn q7(t: &Tables) -> Result<DataFrame, ClientError> {
    let shipped = t
        .lineitem
        .filter("l_shipdate >= '1995-01-01' and l_shipdate <= '1996-12-31'")?;
    t.supplier
        .merge(
            &nations_as(t, "supp")?,
            &["s_nationkey"],
            &["supp_nationkey"],
            "inner",
        )?
        .merge(&shipped, &["s_suppkey"], &["l_suppkey"], "inner")?
        .merge(&t.orders, &["l_orderkey"], &["o_orderkey"], "inner")?
        .merge(&t.customer, &["o_custkey"], &["c_custkey"], "inner")?
        .merge(
            &nations_as(t, "cust")?,
            &["c_nationkey"],
            &["cust_nationkey"],
            "inner",
        )?
        .filter(
            "(supp_nation == 'FRANCE' and cust_nation == 'GERMANY') \
             or (supp_nation == 'GERMANY' and cust_nation == 'FRANCE')",
        )?
        .assign("l_year", "l_shipdate.dt.year")?
        .assign("revenue", REVENUE)?
        .groupby(&["supp_nation", "cust_nation", "l_year"])
        .agg(&[("revenue", "sum")])?
        .sort_values_by(&["supp_nation", "cust_nation", "l_year"], &[true])
}

/// Q8, national market share: Brazil's share of America's revenue from economy anodized
/// steel, in 1995 and 1996.
fn q8(t: &Tables) -> Result<DataFrame, ClientError> {
    let america = t.region.filter("r_name == 'AMERICA'")?.merge(
        &t.nation,
        &["r_regionkey"],
        &["n_regionkey"],
        "inner",
    )?;
    let orders = t
        .orders
        .filter("o_orderdate >= '1995-01-01' and o_orderdate <= '1996-12-31'")?;
    t.part
        .filter("p_type == 'ECONOMY ANODIZED STEEL'")?
        .merge(&t.lineitem, &["p_partkey"], &["l_partkey"], "inner")?
        .merge(&orders, &["l_orderkey"], &["o_orderkey"], "inner")?
        .merge(&t.customer, &["o_custkey"], &["c_custkey"], "inner")?
        .merge(&america, &["c_nationkey"], &["n_nationkey"], "inner")?
        .merge(&t.supplier, &["l_suppkey"], &["s_suppkey"], "inner")?
        .merge(
            &nations_as(t, "supp")?,
            &["s_nationkey"],
            &["supp_nationkey"],
            "inner",
        )?
        .assign("o_year", "o_orderdate.dt.year")?
        .assign("volume", REVENUE)?
        .assign("brazil", "volume.where(supp_nation == 'BRAZIL', 0)")?
        .groupby(&["o_year"])
        .agg(&[("brazil", "sum"), ("volume", "sum")])?
        .assign("mkt_share", "brazil / volume")?
        .select(&["o_year", "mkt_share"])?
        .sort_values("o_year")
}

/// Q9, product type profit: the profit on parts whose name says green, per supplier
/// nation and year, the latest year first.
fn q9(t: &Tables) -> Result<DataFrame, ClientError> {
    t.part
        .filter("p_name.str.contains('green', regex=False)")?
        .merge(&t.lineitem, &["p_partkey"], &["l_partkey"], "inner")?
        .merge(
            &t.partsupp,
            &["l_suppkey", "l_partkey"],
            &["ps_suppkey", "ps_partkey"],
            "inner",
        )?
        .merge(&t.supplier, &["l_suppkey"], &["s_suppkey"], "inner")?
        .merge(&t.orders, &["l_orderkey"], &["o_orderkey"], "inner")?
        .merge(&t.nation, &["s_nationkey"], &["n_nationkey"], "inner")?
        .rename(&[("n_name", "nation")])?
        .assign("o_year", "o_orderdate.dt.year")?
        .assign(
            "sum_profit",
            "l_extendedprice * (1 - l_discount) - ps_supplycost * l_quantity",
        )?
        .groupby(&["nation", "o_year"])
        .agg(&[("sum_profit", "sum")])?
        .sort_values_by(&["nation", "o_year"], &[true, false])
}

/// Q10, returned item reporting: the 20 customers whose returns of 1993's fourth quarter
/// lost the most revenue.
fn q10(t: &Tables) -> Result<DataFrame, ClientError> {
    let orders = t
        .orders
        .filter("o_orderdate >= '1993-10-01' and o_orderdate < '1994-01-01'")?;
    let returned = t.lineitem.filter("l_returnflag == 'R'")?;
    t.customer
        .merge(&orders, &["c_custkey"], &["o_custkey"], "inner")?
        .merge(&returned, &["o_orderkey"], &["l_orderkey"], "inner")?
        .merge(&t.nation, &["c_nationkey"], &["n_nationkey"], "inner")?
        .assign("revenue", REVENUE)?
        .groupby(&[
            "c_custkey",
            "c_name",
            "c_acctbal",
            "c_phone",
            "n_name",
            "c_address",
            "c_comment",
        ])
        .agg(&[("revenue", "sum")])?
        .sort_values_by(&["revenue"], &[false])?
        .head(20)?
        .select(&[
            "c_custkey",
            "c_name",
            "revenue",
            "c_acctbal",
            "n_name",
            "c_address",
            "c_phone",
            "c_comment",
        ])
}

/// Q11, important stock identification: the parts making more than 0.01% of the value of
/// German suppliers' stock, most valuable first.
fn q11(t: &Tables) -> Result<DataFrame, ClientError> {
    let german = t
        .partsupp
        .merge(&t.supplier, &["ps_suppkey"], &["s_suppkey"], "inner")?
        .merge(
            &t.nation.filter("n_name == 'GERMANY'")?,
            &["s_nationkey"],
            &["n_nationkey"],
            "inner",
        )?
        .assign("value", "ps_supplycost * ps_availqty")?;
    let total = german
        .agg(&[("value", "sum")])?
        .rename(&[("value", "total")])?;
    german
        .groupby(&["ps_partkey"])
        .agg(&[("value", "sum")])?
        .merge(&total, &[], &[], "cross")?
        .filter("value > total * 0.0001")?
        .select(&["ps_partkey", "value"])?
        .sort_values_by(&["value"], &[false])
}

/// Q12, shipping modes and order priority: 1994's lines received late by mail or ship,
/// counted by whether their order was urgent or high priority, per ship mode.
fn q12(t: &Tables) -> Result<DataFrame, ClientError> {
    let lines = t.lineitem.filter(
        "l_shipmode in ['MAIL', 'SHIP'] and l_commitdate < l_receiptdate \
         and l_shipdate < l_commitdate \
         and l_receiptdate >= '1994-01-01' and l_receiptdate < '1995-01-01'",
    )?;
    t.orders
        .merge(&lines, &["o_orderkey"], &["l_orderkey"], "inner")?
        .assign(
            "high_line_count",
            "o_orderpriority.isin(['1-URGENT', '2-HIGH'])",
        )?
        .assign(
            "low_line_count",
            "not o_orderpriority.isin(['1-URGENT', '2-HIGH'])",
        )?
        .groupby(&["l_shipmode"])
        .agg(&[("high_line_count", "sum"), ("low_line_count", "sum")])?
        .sort_values("l_shipmode")
}

/// Q13, customer distribution: how many customers have made each number of orders
/// (comments mentioning special requests aside), none included.
fn q13(t: &Tables) -> Result<DataFrame, ClientError> {
    let orders = t
        .orders
        .filter("not o_comment.str.contains('special.*requests')")?;
    t.customer
        .merge(&orders, &["c_custkey"], &["o_custkey"], "left")?
        .groupby(&["c_custkey"])
        .agg(&[("o_orderkey", "count")])?
        .rename(&[("o_orderkey", "c_count")])?
        .groupby(&["c_count"])
        .agg(&[("c_custkey", "count")])?
        .rename(&[("c_custkey", "custdist")])?
        .sort_values_by(&["custdist", "c_count"], &[false])
}

/// Q14, promotion effect: the percentage of September 1995's revenue from promotional
/// parts.
fn q14(t: &Tables) -> Result<DataFrame, ClientError> {
    t.lineitem
        .filter("l_shipdate >= '1995-09-01' and l_shipdate < '1995-10-01'")?
        .merge(&t.part, &["l_partkey"], &["p_partkey"], "inner")?
        .assign("revenue", REVENUE)?
        .assign("promo", "revenue.where(p_type.str.startswith('PROMO'), 0)")?
        .agg(&[("promo", "sum"), ("revenue", "sum")])?
        .assign("promo_revenue", "100.0 * promo / revenue")?
        .select(&["promo_revenue"])
}

/// Q15, top supplier: the suppliers with the most revenue in 1996's first quarter.
fn q15(t: &Tables) -> Result<DataFrame, ClientError> {
    let revenue = t
        .lineitem
        .filter("l_shipdate >= '1996-01-01' and l_shipdate < '1996-04-01'")?
        .assign("total_revenue", REVENUE)?
        .groupby(&["l_suppkey"])
        .agg(&[("total_revenue", "sum")])?;
    let top = revenue
        .agg(&[("total_revenue", "max")])?
        .rename(&[("total_revenue", "max_revenue")])?;
    t.supplier
        .merge(&revenue, &["s_suppkey"], &["l_suppkey"], "inner")?
        .merge(&top, &[], &[], "cross")?
        .filter("total_revenue == max_revenue")?
        .select(&[
            "s_suppkey",
            "s_name",
            "s_address",
            "s_phone",
            "total_revenue",
        ])?
        .sort_values("s_suppkey")
}

/// Q16, parts/supplier relationship: how many suppliers without customer complaints can
/// supply parts of given sizes that are not brand 45 nor medium polished, per brand, type
/// and size.
fn q16(t: &Tables) -> Result<DataFrame, ClientError> {
    let complained = t
        .supplier
        .filter("s_comment.str.contains('Customer.*Complaints')")?;
    let parts = t.part.filter(
        "p_brand != 'Brand#45' and not p_type.str.startswith('MEDIUM POLISHED') \
         and p_size in [49, 14, 23, 45, 19, 3, 36, 9]",
    )?;
    t.partsupp
        .merge(&complained, &["ps_suppkey"], &["s_suppkey"], "anti")?
        .merge(&parts, &["ps_partkey"], &["p_partkey"], "inner")?
        .groupby(&["p_brand", "p_type", "p_size"])
        .agg(&[("ps_suppkey", "nunique")])?
        .rename(&[("ps_suppkey", "supplier_cnt")])?
        .sort_values_by(
            &["supplier_cnt", "p_brand", "p_type", "p_size"],
            &[false, true, true, true],
        )
}

/// Q17, small-quantity-order revenue: the yearly revenue lost without the orders of
/// brand 23 medium boxes for less than 20% of their average quantity.
fn q17(t: &Tables) -> Result<DataFrame, ClientError> {
    let parts = t
        .part
        .filter("p_brand == 'Brand#23' and p_container == 'MED BOX'")?;
    let lines = t
        .lineitem
        .merge(&parts, &["l_partkey"], &["p_partkey"], "inner")?;
    let average = lines
        .groupby(&["l_partkey"])
        .agg(&[("l_quantity", "mean")])?
        .rename(&[("l_quantity", "avg_quantity")])?;
    lines
        .join(&average, &["l_partkey"], "inner")?
        .filter("l_quantity < 0.2 * avg_quantity")?
        .agg(&[("l_extendedprice", "sum")])?
        .assign("avg_yearly", "l_extendedprice / 7.0")?
        .select(&["avg_yearly"])
}

/// Q18, large volume customer: the 100 most expensive orders of more than 300 units,
/// with their customer.
fn q18(t: &Tables) -> Result<DataFrame, ClientError> {
    let large = t
        .lineitem
        .groupby(&["l_orderkey"])
        .agg(&[("l_quantity", "sum")])?
        .filter("l_quantity > 300")?;
    t.customer
        .merge(&t.orders, &["c_custkey"], &["o_custkey"], "inner")?
        .merge(&large, &["o_orderkey"], &["l_orderkey"], "semi")?
        .merge(&t.lineitem, &["o_orderkey"], &["l_orderkey"], "inner")?
        .groupby(&[
            "c_name",
            "c_custkey",
            "o_orderkey",
            "o_orderdate",
            "o_totalprice",
        ])
        .agg(&[("l_quantity", "sum")])?
        .sort_values_by(&["o_totalprice", "o_orderdate"], &[false, true])?
        .head(100)
}

/// Q19, discounted revenue: the revenue of air deliveries in person of three kinds of
/// brand, container, quantity and size.
fn q19(t: &Tables) -> Result<DataFrame, ClientError> {
    t.lineitem
        .filter("l_shipmode in ['AIR', 'AIR REG'] and l_shipinstruct == 'DELIVER IN PERSON'")?
        .merge(&t.part, &["l_partkey"], &["p_partkey"], "inner")?
        .filter(
            "(p_brand == 'Brand#12' \
               and p_container in ['SM CASE', 'SM BOX', 'SM PACK', 'SM PKG'] \
               and l_quantity.between(1, 11) and p_size.between(1, 5)) \
             or (p_brand == 'Brand#23' \
               and p_container in ['MED BAG', 'MED BOX', 'MED PKG', 'MED PACK'] \
               and l_quantity.between(10, 20) and p_size.between(1, 10)) \
             or (p_brand == 'Brand#34' \
               and p_container in ['LG CASE', 'LG BOX', 'LG PACK', 'LG PKG'] \
               and l_quantity.between(20, 30) and p_size.between(1, 15))",
        )?
        .assign("revenue", REVENUE)?
        .agg(&[("revenue", "sum")])
}

/// Q20, potential part promotion: Canadian suppliers holding more than half of what they
/// shipped in 1994 of some forest part.
fn q20(t: &Tables) -> Result<DataFrame, ClientError> {
    let forest = t.part.filter("p_name.str.startswith('forest')")?;
    let shipped = t
        .lineitem
        .filter("l_shipdate >= '1994-01-01' and l_shipdate < '1995-01-01'")?
        .groupby(&["l_partkey", "l_suppkey"])
        .agg(&[("l_quantity", "sum")])?;
    let excess = t
        .partsupp
        .merge(&forest, &["ps_partkey"], &["p_partkey"], "semi")?
        .merge(
            &shipped,
            &["ps_partkey", "ps_suppkey"],
            &["l_partkey", "l_suppkey"],
            "inner",
        )?
        .filter("ps_availqty > 0.5 * l_quantity")?;
    t.supplier
        .merge(
            &t.nation.filter("n_name == 'CANADA'")?,
            &["s_nationkey"],
            &["n_nationkey"],
            "inner",
        )?
        .merge(&excess, &["s_suppkey"], &["ps_suppkey"], "semi")?
        .select(&["s_name", "s_address"])?
        .sort_values("s_name")
}

/// Q21, suppliers who kept orders waiting: Saudi suppliers that alone were late on a
/// finished order with several suppliers, the 100 most often so.
fn q21(t: &Tables) -> Result<DataFrame, ClientError> {
    let late = t.lineitem.filter("l_receiptdate > l_commitdate")?;
    let several = t
        .lineitem
        .groupby(&["l_orderkey"])
        .agg(&[("l_suppkey", "nunique")])?
        .filter("l_suppkey > 1")?;
    let alone_late = late
        .groupby(&["l_orderkey"])
        .agg(&[("l_suppkey", "nunique")])?
        .filter("l_suppkey == 1")?;
    t.supplier
        .merge(
            &t.nation.filter("n_name == 'SAUDI ARABIA'")?,
            &["s_nationkey"],
            &["n_nationkey"],
            "inner",
        )?
        .merge(&late, &["s_suppkey"], &["l_suppkey"], "inner")?
        .merge(
            &t.orders.filter("o_orderstatus == 'F'")?,
            &["l_orderkey"],
            &["o_orderkey"],
            "semi",
        )?
        .join(&several, &["l_orderkey"], "semi")?
        .join(&alone_late, &["l_orderkey"], "semi")?
        .groupby(&["s_name"])
        .agg(&[("l_orderkey", "count")])?
        .rename(&[("l_orderkey", "numwait")])?
        .sort_values_by(&["numwait", "s_name"], &[false, true])?
        .head(100)
}

/// Q22, global sales opportunity: customers of seven country codes with more than the
/// average positive balance and no orders, counted with their balances per code.
fn q22(t: &Tables) -> Result<DataFrame, ClientError> {
    let customers = t
        .customer
        .assign("cntrycode", "c_phone.str.slice(0, 2)")?
        .filter("cntrycode in ['13', '31', '23', '29', '30', '18', '17']")?;
    let average = customers
        .filter("c_acctbal > 0.00")?
        .agg(&[("c_acctbal", "mean")])?
        .rename(&[("c_acctbal", "avg_acctbal")])?;
    customers
        .merge(&average, &[], &[], "cross")?
        .filter("c_acctbal > avg_acctbal")?
        .merge(&t.orders, &["c_custkey"], &["o_custkey"], "anti")?
        .groupby(&["cntrycode"])
        .agg(&[("c_custkey", "count"), ("c_acctbal", "sum")])?
        .rename(&[("c_custkey", "numcust"), ("c_acctbal", "totacctbal")])?
        .sort_values("cntrycode")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_query_has_its_sql() {
        for n in QUERIES {
            let sql = reference_sql(n).unwrap();
            assert!(sql.to_lowercase().contains("select"), "q{n}");
            assert!(sql.contains(&format!("TPC-H Q{n}")), "q{n}: {sql}");
        }
        assert!(reference_sql(0).is_none() && reference_sql(23).is_none());
    }
}
