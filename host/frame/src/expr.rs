//! Expressions on a partition's columns in pandas' `query`/`eval` syntax: `x > 500 and key
//! == 'k0001'`, `x * 2 + y`, `ts >= '2024-03-01'`, `ts.dt.year == 2024`, `x.where(x > 0,
//! 0)`, evaluated with Arrow's compute kernels.

use std::fmt;
use std::sync::Arc;

use arrow_array::{
    Array, ArrayRef, BooleanArray, Datum, Float64Array, Int64Array, RecordBatch, Scalar,
    StringArray,
};
use arrow_schema::DataType;

use crate::{FrameError, Result, column, invalid};

/// A parsed expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    /// A column, by name.
    Column(String),
    /// A number written as an integer.
    Int(i64),
    /// A number with a fraction or an exponent.
    Float(f64),
    /// A quoted string (also used for dates and times, compared with a time column).
    Str(String),
    /// `true` or `false`.
    Bool(bool),
    /// `-e`.
    Neg(Box<Expr>),
    /// `not e` or `~e`.
    Not(Box<Expr>),
    /// `a op b`.
    Binary(Box<Expr>, Op, Box<Expr>),
    /// `e in [a, b, ...]` (also `e.isin([...])`); `e not in [...]` is its `Not`.
    In(Box<Expr>, Vec<Expr>),
    /// `e.between(low, high)`: `low <= e <= high`, as pandas' (both ends included).
    Between(Box<Expr>, Box<Expr>, Box<Expr>),
    /// `e.str.startswith('p')`, `.str.endswith`, `.str.contains` (a regular expression,
    /// as pandas' default; the text as written with `regex=False`).
    Text(Box<Expr>, TextTest, String),
    /// `e.dt.year` (`month`, `day`, `hour`, `minute`, `second`, `dayofweek`) of a date or
    /// time: Int32, as pandas (2 and later) makes it; null stays null.
    Part(Box<Expr>, TimePart),
    /// `e.str.slice(start, stop)`: the characters from `start` up to `stop` (to the end
    /// without it; negative counts from the end), as Python's `s[start:stop]`.
    Slice(Box<Expr>, i64, Option<i64>),
    /// `e.astype('int64')`: the values as another type (`int64`, `int32`, `float64`,
    /// `float32`, `bool`, `str`; `int`, `float` as pandas reads them); floats become
    /// integers by truncation, null stays null.
    AsType(Box<Expr>, DataType),
    /// `e.where(cond, other)`: `e` where `cond` holds, `other` elsewhere (null without
    /// `other`); with `mask` (`e.mask(cond, other)`), the other way round. A null `cond`
    /// counts as false.
    Where {
        /// The values kept.
        value: Box<Expr>,
        /// The condition.
        cond: Box<Expr>,
        /// The values put in their place (`None`: null).
        other: Option<Box<Expr>>,
        /// `mask` rather than `where`: `other` where `cond` holds.
        mask: bool,
    },
}

/// A part of a date or time (`e.dt.year`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimePart {
    Year,
    Month,
    Day,
    Hour,
    Minute,
    Second,
    /// Monday 0 to Sunday 6, as pandas' `dt.dayofweek`.
    DayOfWeek,
}

impl TimePart {
    /// Every part with its name.
    pub const ALL: [(&'static str, TimePart); 7] = [
        ("year", TimePart::Year),
        ("month", TimePart::Month),
        ("day", TimePart::Day),
        ("hour", TimePart::Hour),
        ("minute", TimePart::Minute),
        ("second", TimePart::Second),
        ("dayofweek", TimePart::DayOfWeek),
    ];

    fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, p)| *p == self)
            .map_or("?", |(n, _)| n)
    }

    fn arrow(self) -> arrow_arith::temporal::DatePart {
        use arrow_arith::temporal::DatePart as D;
        match self {
            TimePart::Year => D::Year,
            TimePart::Month => D::Month,
            TimePart::Day => D::Day,
            TimePart::Hour => D::Hour,
            TimePart::Minute => D::Minute,
            TimePart::Second => D::Second,
            TimePart::DayOfWeek => D::DayOfWeekMonday0,
        }
    }
}

/// A test of a string column against a text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextTest {
    /// `str.startswith`.
    StartsWith,
    /// `str.endswith`.
    EndsWith,
    /// `str.contains(text, regex=False)`.
    Contains,
    /// `str.contains(pattern)`: a match of the regular expression anywhere in the value
    /// (Python's `re.search`).
    Matches,
}

impl TextTest {
    fn name(self) -> &'static str {
        match self {
            TextTest::StartsWith => "startswith",
            TextTest::EndsWith => "endswith",
            TextTest::Contains | TextTest::Matches => "contains",
        }
    }

    fn holds(self, value: &str, text: &str, pattern: Option<&regex::Regex>) -> bool {
        match self {
            TextTest::Matches => pattern.is_some_and(|p| p.is_match(value)),
            TextTest::StartsWith => value.starts_with(text),
            TextTest::EndsWith => value.ends_with(text),
            TextTest::Contains => value.contains(text),
        }
    }
}

/// A binary operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    And,
    Or,
}

impl Op {
    fn symbol(self) -> &'static str {
        match self {
            Op::Add => "+",
            Op::Sub => "-",
            Op::Mul => "*",
            Op::Div => "/",
            Op::Rem => "%",
            Op::Eq => "==",
            Op::Ne => "!=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::And => "and",
            Op::Or => "or",
        }
    }

    /// How tightly the operator binds (higher binds tighter).
    fn precedence(self) -> u8 {
        match self {
            Op::Or => 1,
            Op::And => 2,
            Op::Eq | Op::Ne | Op::Lt | Op::Le | Op::Gt | Op::Ge => 3,
            Op::Add | Op::Sub => 4,
            Op::Mul | Op::Div | Op::Rem => 5,
        }
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Column(c) if is_identifier(c) => f.write_str(c),
            Expr::Column(c) => write!(f, "`{c}`"),
            Expr::Int(i) => write!(f, "{i}"),
            Expr::Float(x) => write!(f, "{x:?}"),
            Expr::Str(s) => write!(f, "'{}'", s.replace('\'', "\\'")),
            Expr::Bool(b) => write!(f, "{}", if *b { "True" } else { "False" }),
            Expr::Neg(e) => write!(f, "-({e})"),
            Expr::Not(e) => write!(f, "not ({e})"),
            Expr::Binary(a, op, b) => write!(f, "({a} {} {b})", op.symbol()),
            Expr::In(e, items) => {
                write!(f, "({e} in [")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("])")
            }
            Expr::Between(e, low, high) => write!(f, "({e}).between({low}, {high})"),
            Expr::Text(e, test, text) => {
                let literal = match test {
                    TextTest::Contains => ", regex=False",
                    _ => "",
                };
                let text = Expr::Str(text.clone());
                write!(f, "({e}).str.{}({text}{literal})", test.name())
            }
            Expr::Part(e, part) => write!(f, "({e}).dt.{}", part.name()),
            Expr::Slice(e, start, Some(stop)) => write!(f, "({e}).str.slice({start}, {stop})"),
            Expr::Slice(e, start, None) => write!(f, "({e}).str.slice({start})"),
            Expr::AsType(e, t) => write!(f, "({e}).astype('{}')", dtype_name(t)),
            Expr::Where {
                value,
                cond,
                other,
                mask,
            } => {
                let method = if *mask { "mask" } else { "where" };
                match other {
                    Some(o) => write!(f, "({value}).{method}({cond}, {o})"),
                    None => write!(f, "({value}).{method}({cond})"),
                }
            }
        }
    }
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || c == '_')
        && !matches!(
            s,
            "and" | "or" | "not" | "True" | "False" | "true" | "false"
        )
}

impl Expr {
    /// Parses `text`; the error points at the offending character.
    pub fn parse(text: &str) -> Result<Expr> {
        let tokens = lex(text)?;
        // Evaluating and dropping recurse along the tree: its size is bounded too.
        if tokens.len() > MAX_TOKENS {
            return Err(invalid(format!(
                "the expression has {} parts, more than {MAX_TOKENS}",
                tokens.len()
            )));
        }
        let mut p = Parser {
            text,
            tokens: &tokens,
            at: 0,
            depth: 0,
        };
        let e = p.expr(0)?;
        match p.tokens.get(p.at) {
            None => Ok(e),
            Some((pos, t)) => Err(p.error(*pos, &format!("unexpected {t}"))),
        }
    }

    /// The columns the expression reads, each once, in order of appearance.
    pub fn columns(&self) -> Vec<String> {
        fn walk(e: &Expr, out: &mut Vec<String>) {
            match e {
                Expr::Column(c) if !out.contains(c) => out.push(c.clone()),
                Expr::Neg(e)
                | Expr::Not(e)
                | Expr::Text(e, ..)
                | Expr::Part(e, _)
                | Expr::Slice(e, ..)
                | Expr::AsType(e, _) => walk(e, out),
                Expr::Where {
                    value, cond, other, ..
                } => {
                    walk(value, out);
                    walk(cond, out);
                    if let Some(o) = other {
                        walk(o, out);
                    }
                }
                Expr::Binary(a, _, b) => {
                    walk(a, out);
                    walk(b, out);
                }
                Expr::In(e, items) => {
                    walk(e, out);
                    items.iter().for_each(|i| walk(i, out));
                }
                Expr::Between(e, low, high) => {
                    walk(e, out);
                    walk(low, out);
                    walk(high, out);
                }
                _ => {}
            }
        }
        let mut out = Vec::new();
        walk(self, &mut out);
        out
    }

    /// Evaluates the expression on every row of `batch`: a column as long as the batch.
    pub fn eval(&self, batch: &RecordBatch) -> Result<ArrayRef> {
        let v = self.value(batch)?;
        Ok(match v {
            Val::Array(a) => a,
            Val::Scalar(s) => {
                // A constant expression: repeat it.
                let indices = arrow_array::UInt32Array::from(vec![0u32; batch.num_rows()]);
                arrow_select::take::take(s.as_ref(), &indices, None)?
            }
        })
    }

    /// Evaluates a predicate: which rows of `batch` it keeps (null counts as false).
    pub fn mask(&self, batch: &RecordBatch) -> Result<BooleanArray> {
        let a = self.eval(batch)?;
        let Some(mask) = a.as_any().downcast_ref::<BooleanArray>() else {
            return Err(invalid(format!(
                "the filter `{self}` gives {} values, not true/false",
                a.data_type()
            )));
        };
        Ok(match mask.null_count() {
            0 => mask.clone(),
            _ => arrow_select::filter::prep_null_mask_filter(mask),
        })
    }

    /// The rows of `batch` the predicate keeps.
    pub fn filter(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let mask = self.mask(batch)?;
        if mask.true_count() == batch.num_rows() {
            return Ok(batch.clone());
        }
        Ok(arrow_select::filter::filter_record_batch(batch, &mask)?)
    }

    fn value(&self, batch: &RecordBatch) -> Result<Val> {
        Ok(match self {
            Expr::Column(c) => Val::Array(column(batch, c)?.clone()),
            Expr::Int(i) => Val::Scalar(Arc::new(Int64Array::from(vec![*i]))),
            Expr::Float(x) => Val::Scalar(Arc::new(Float64Array::from(vec![*x]))),
            Expr::Str(s) => Val::Scalar(Arc::new(StringArray::from(vec![s.as_str()]))),
            Expr::Bool(b) => Val::Scalar(Arc::new(BooleanArray::from(vec![*b]))),
            Expr::Neg(e) => e.value(batch)?.map(|a| {
                arrow_arith::numeric::neg(a.as_ref())
                    .map_err(|err| invalid(format!("cannot negate `{e}`: {err}")))
            })?,
            Expr::Not(e) => e.value(batch)?.map(|a| {
                let b = boolean(&a, e)?;
                Ok(Arc::new(arrow_arith::boolean::not(b)?) as ArrayRef)
            })?,
            Expr::Binary(a, op, b) => {
                let (l, r) = (a.value(batch)?, b.value(batch)?);
                binary(l, *op, r).map_err(|e| self.within(e))?
            }
            Expr::In(e, items) => {
                let v = e.value(batch)?;
                let mut any: Option<Val> = None;
                for item in items {
                    let eq = binary(v.clone(), Op::Eq, item.value(batch)?)
                        .map_err(|e| self.within(e))?;
                    any = Some(match any {
                        None => eq,
                        Some(so_far) => binary(so_far, Op::Or, eq)?,
                    });
                }
                match any {
                    // A null is in no list (pandas' `isin`): false, not null.
                    Some(any) => any.map(|a| {
                        let b = boolean(&a, self)?;
                        let out: BooleanArray = b.iter().map(|v| Some(v == Some(true))).collect();
                        Ok(Arc::new(out) as ArrayRef)
                    })?,
                    // `in []`: nothing is in it.
                    None => v.map(|a| {
                        Ok(Arc::new(BooleanArray::from(vec![false; a.len()])) as ArrayRef)
                    })?,
                }
            }
            Expr::Between(e, low, high) => {
                let v = e.value(batch)?;
                let above = binary(v.clone(), Op::Ge, low.value(batch)?);
                let below = binary(v, Op::Le, high.value(batch)?);
                binary(
                    above.map_err(|e| self.within(e))?,
                    Op::And,
                    below.map_err(|e| self.within(e))?,
                )?
            }
            Expr::Text(e, test, text) => e.value(batch)?.map(|a| {
                // The type first: a column that is not text is refused, never converted.
                if !is_text(a.data_type()) {
                    return Err(invalid(format!(
                        "`{self}`: `{e}` is {}, not text",
                        a.data_type()
                    )));
                }
                let pattern = match test {
                    TextTest::Matches => Some(pattern(text)?),
                    _ => None,
                };
                let strings = arrow_cast::cast(&a, &DataType::Utf8)?;
                let strings = arrow_array::cast::AsArray::as_string::<i32>(&strings);
                let out: BooleanArray = strings
                    .iter()
                    .map(|v| v.map(|v| test.holds(v, text, pattern.as_ref())))
                    .collect();
                Ok(Arc::new(out) as ArrayRef)
            })?,
            Expr::Slice(e, start, stop) => e.value(batch)?.map(|a| {
                if !is_text(a.data_type()) {
                    return Err(invalid(format!(
                        "`{self}`: `{e}` is {}, not text",
                        a.data_type()
                    )));
                }
                let strings = arrow_cast::cast(&a, &DataType::Utf8)?;
                let strings = arrow_array::cast::AsArray::as_string::<i32>(&strings);
                let out: StringArray = strings
                    .iter()
                    .map(|v| v.map(|v| slice_chars(v, *start, *stop)))
                    .collect();
                Ok(Arc::new(out) as ArrayRef)
            })?,
            Expr::AsType(e, to) => e.value(batch)?.map(|a| {
                let options = arrow_cast::CastOptions {
                    safe: false,
                    ..Default::default()
                };
                arrow_cast::cast_with_options(&a, to, &options).map_err(|err| {
                    invalid(format!(
                        "`{self}`: cannot make {} values {}: {err}",
                        a.data_type(),
                        dtype_name(to)
                    ))
                })
            })?,
            Expr::Part(e, part) => e.value(batch)?.map(|a| {
                let time = match a.data_type() {
                    DataType::Date32 | DataType::Date64 | DataType::Timestamp(..) => true,
                    DataType::Dictionary(_, v) => v.is_temporal(),
                    _ => false,
                };
                if !time {
                    return Err(invalid(format!(
                        "`{self}`: `{e}` is {}, not a date or time",
                        a.data_type()
                    )));
                }
                let a = match a.data_type() {
                    DataType::Dictionary(_, v) => arrow_cast::cast(&a, v)?,
                    _ => a,
                };
                Ok(arrow_arith::temporal::date_part(&a, part.arrow())?)
            })?,
            Expr::Where {
                value,
                cond,
                other,
                mask,
            } => {
                let v = value.value(batch)?;
                let c = cond.value(batch)?;
                let o = match other {
                    Some(o) => o.value(batch)?,
                    None => Val::Scalar(arrow_array::new_null_array(v.array().data_type(), 1)),
                };
                let (vt, ot) = (v.array().data_type(), o.array().data_type());
                let to = match o.array().data_type() {
                    DataType::Null => Some(vt.clone()),
                    _ => common_type(vt, ot, Op::Eq),
                }
                .ok_or_else(|| {
                    invalid(format!("`{self}`: cannot put {ot} values among {vt} ones"))
                })?;
                let (v, o) = (cast(&v, &to)?, cast(&o, &to)?);
                let scalar = v.is_scalar() && c.is_scalar() && o.is_scalar();
                let n = [&v, &c, &o]
                    .iter()
                    .find(|x| !x.is_scalar())
                    .map_or(1, |x| x.array().len());
                let holds = boolean(c.array(), cond)?;
                // Null counts as false; a constant condition is repeated.
                let holds: BooleanArray = (0..n)
                    .map(|i| {
                        let i = if c.is_scalar() { 0 } else { i };
                        Some(holds.is_valid(i) && holds.value(i))
                    })
                    .collect();
                let keep = if *mask {
                    arrow_arith::boolean::not(&holds)?
                } else {
                    holds
                };
                let out = arrow_select::zip::zip(&keep, v.datum().as_ref(), o.datum().as_ref())?;
                if scalar {
                    Val::Scalar(out)
                } else {
                    Val::Array(out)
                }
            }
        })
    }

    /// An error of a part, said within this expression.
    fn within(&self, e: FrameError) -> FrameError {
        match e {
            FrameError::Invalid(why) => invalid(format!("in `{self}`: {why}")),
            other => other,
        }
    }
}

/// Whether values of type `t` are text (strings, or a dictionary of strings).
fn is_text(t: &DataType) -> bool {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Dictionary(_, v) => v.is_string(),
        _ => false,
    }
}

/// The types `astype` converts to, by pandas' names.
const DTYPES: [(&str, DataType); 8] = [
    ("int64", DataType::Int64),
    ("int", DataType::Int64),
    ("int32", DataType::Int32),
    ("float64", DataType::Float64),
    ("float", DataType::Float64),
    ("float32", DataType::Float32),
    ("bool", DataType::Boolean),
    ("str", DataType::Utf8),
];

/// pandas' name of `t`, one of [`DTYPES`].
fn dtype_name(t: &DataType) -> &'static str {
    DTYPES.iter().find(|(_, d)| d == t).map_or("?", |(n, _)| n)
}

/// Python's `value[start:stop]` on characters (not bytes).
fn slice_chars(value: &str, start: i64, stop: Option<i64>) -> String {
    let n = value.chars().count() as i64;
    let at = |i: i64| if i < 0 { (n + i).max(0) } else { i.min(n) };
    let (from, to) = (at(start), stop.map_or(n, at));
    if from >= to {
        return String::new();
    }
    value
        .chars()
        .skip(from as usize)
        .take((to - from) as usize)
        .collect()
}

/// The regular expression of `str.contains(pattern)`.
fn pattern(text: &str) -> Result<regex::Regex> {
    regex::Regex::new(text)
        .map_err(|e| invalid(format!("`{text}` is not a regular expression: {e}")))
}

/// An intermediate result: a column, or a constant.
#[derive(Clone)]
enum Val {
    Array(ArrayRef),
    Scalar(ArrayRef),
}

impl Val {
    fn array(&self) -> &ArrayRef {
        match self {
            Val::Array(a) | Val::Scalar(a) => a,
        }
    }

    fn is_scalar(&self) -> bool {
        matches!(self, Val::Scalar(_))
    }

    fn map(self, f: impl FnOnce(ArrayRef) -> Result<ArrayRef>) -> Result<Val> {
        Ok(match self {
            Val::Array(a) => Val::Array(f(a)?),
            Val::Scalar(a) => Val::Scalar(f(a)?),
        })
    }

    fn datum(&self) -> Box<dyn Datum + '_> {
        match self {
            Val::Array(a) => Box::new(a),
            Val::Scalar(a) => Box::new(Scalar::new(a)),
        }
    }
}

fn boolean<'a>(a: &'a ArrayRef, e: &Expr) -> Result<&'a BooleanArray> {
    a.as_any()
        .downcast_ref::<BooleanArray>()
        .ok_or_else(|| invalid(format!("`{e}` is {}, not true/false", a.data_type())))
}

/// The type both sides are brought to before an arithmetic or comparison kernel runs.
fn common_type(l: &DataType, r: &DataType, op: Op) -> Option<DataType> {
    use DataType::*;
    let value_type = |t: &DataType| match t {
        Dictionary(_, v) => (**v).clone(),
        other => other.clone(),
    };
    let (l, r) = (value_type(l), value_type(r));
    if l == r {
        return Some(match (&l, op) {
            // Pandas divides integers into floats.
            (Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | UInt64, Op::Div) => Float64,
            // Decimals (as Parquet files hold money) compute as floats, as pandas does.
            (
                Decimal32(..) | Decimal64(..) | Decimal128(..) | Decimal256(..),
                Op::Add | Op::Sub | Op::Mul | Op::Div | Op::Rem,
            ) => Float64,
            _ => l,
        });
    }
    let int = |t: &DataType| t.is_integer();
    let stringy = |t: &DataType| matches!(t, Utf8 | LargeUtf8 | Utf8View);
    Some(match (&l, &r) {
        (a, b) if int(a) && int(b) && op != Op::Div => Int64,
        (a, b) if a.is_numeric() && b.is_numeric() => Float64,
        (a, b) if stringy(a) && stringy(b) => Utf8,
        // A quoted date or time against a time column: the string becomes a time.
        (t @ (Timestamp(..) | Date32 | Date64), s) | (s, t @ (Timestamp(..) | Date32 | Date64))
            if stringy(s) =>
        {
            t.clone()
        }
        _ => return None,
    })
}

fn cast(v: &Val, to: &DataType) -> Result<Val> {
    let a = v.array();
    if a.data_type() == to {
        return Ok(match v {
            Val::Array(a) => Val::Array(a.clone()),
            Val::Scalar(a) => Val::Scalar(a.clone()),
        });
    }
    let options = arrow_cast::CastOptions {
        safe: false,
        ..Default::default()
    };
    let c = arrow_cast::cast_with_options(a, to, &options)
        .map_err(|e| invalid(format!("cannot make {} a {to}: {e}", a.data_type())))?;
    Ok(match v {
        Val::Array(_) => Val::Array(c),
        Val::Scalar(_) => Val::Scalar(c),
    })
}

fn binary(l: Val, op: Op, r: Val) -> Result<Val> {
    let scalar = l.is_scalar() && r.is_scalar();
    let wrap = |a: ArrayRef| {
        if scalar {
            Val::Scalar(a)
        } else {
            Val::Array(a)
        }
    };
    if matches!(op, Op::And | Op::Or) {
        let (la, ra) = (l.array(), r.array());
        let lb = la.as_any().downcast_ref::<BooleanArray>();
        let rb = ra.as_any().downcast_ref::<BooleanArray>();
        let (Some(lb), Some(rb)) = (lb, rb) else {
            return Err(invalid(format!(
                "`{}` joins true/false values, not {} and {}",
                op.symbol(),
                la.data_type(),
                ra.data_type()
            )));
        };
        // A scalar side is broadcast by repeating it to the other side's length.
        let n = match (l.is_scalar(), r.is_scalar()) {
            (true, false) => ra.len(),
            (false, _) => la.len(),
            (true, true) => 1,
        };
        let repeat = |b: &BooleanArray| -> BooleanArray {
            if b.len() == n {
                b.clone()
            } else {
                BooleanArray::from(vec![b.value(0); n])
            }
        };
        let (lb, rb) = (repeat(lb), repeat(rb));
        let out = match op {
            Op::And => arrow_arith::boolean::and_kleene(&lb, &rb)?,
            _ => arrow_arith::boolean::or_kleene(&lb, &rb)?,
        };
        return Ok(wrap(Arc::new(out)));
    }
    let (lt, rt) = (l.array().data_type().clone(), r.array().data_type().clone());
    let to = common_type(&lt, &rt, op)
        .ok_or_else(|| invalid(format!("cannot apply `{}` to {lt} and {rt}", op.symbol())))?;
    let (l, r) = (cast(&l, &to)?, cast(&r, &to)?);
    let (ld, rd) = (l.datum(), r.datum());
    let (ld, rd) = (ld.as_ref(), rd.as_ref());
    use arrow_arith::numeric as num;
    use arrow_ord::cmp;
    let out: ArrayRef = match op {
        Op::Add => num::add(ld, rd)?,
        Op::Sub => num::sub(ld, rd)?,
        Op::Mul => num::mul(ld, rd)?,
        Op::Div => num::div(ld, rd)?,
        Op::Rem => num::rem(ld, rd)?,
        Op::Eq => Arc::new(cmp::eq(ld, rd)?),
        Op::Ne => Arc::new(cmp::neq(ld, rd)?),
        Op::Lt => Arc::new(cmp::lt(ld, rd)?),
        Op::Le => Arc::new(cmp::lt_eq(ld, rd)?),
        Op::Gt => Arc::new(cmp::gt(ld, rd)?),
        Op::Ge => Arc::new(cmp::gt_eq(ld, rd)?),
        Op::And | Op::Or => unreachable!("handled above"),
    };
    Ok(wrap(out))
}

// ---------------------------------------------------------------------------------------
// Lexing and parsing.

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Ident(String),
    Quoted(String),
    Int(i64),
    Float(f64),
    Op(Op),
    Minus,
    Not,
    In,
    Open,
    Close,
    OpenList,
    CloseList,
    Comma,
    Dot,
    /// A lone `=` (only in `regex=False`).
    Assign,
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Ident(s) => write!(f, "`{s}`"),
            Token::Quoted(s) => write!(f, "'{s}'"),
            Token::Int(i) => write!(f, "{i}"),
            Token::Float(x) => write!(f, "{x}"),
            Token::Op(op) => write!(f, "`{}`", op.symbol()),
            Token::Minus => f.write_str("`-`"),
            Token::Not => f.write_str("`not`"),
            Token::In => f.write_str("`in`"),
            Token::Open => f.write_str("`(`"),
            Token::Close => f.write_str("`)`"),
            Token::OpenList => f.write_str("`[`"),
            Token::CloseList => f.write_str("`]`"),
            Token::Comma => f.write_str("`,`"),
            Token::Dot => f.write_str("`.`"),
            Token::Assign => f.write_str("`=` where `==` was meant"),
        }
    }
}

fn lex(text: &str) -> Result<Vec<(usize, Token)>> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |at: usize, what: &str| -> FrameError {
        invalid(format!(
            "{what} at character {} of `{text}`",
            text[..at].chars().count() + 1
        ))
    };
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        let two = |s: &str| text[i..].starts_with(s);
        let token = match c {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'(' => Token::Open,
            b')' => Token::Close,
            b'[' => Token::OpenList,
            b']' => Token::CloseList,
            b',' => Token::Comma,
            // A method (`x.between(...)`); `.5` is a number.
            b'.' if !bytes.get(i + 1).is_some_and(u8::is_ascii_digit) => Token::Dot,
            b'+' => Token::Op(Op::Add),
            b'-' => Token::Minus,
            b'*' => Token::Op(Op::Mul),
            b'/' => Token::Op(Op::Div),
            b'%' => Token::Op(Op::Rem),
            b'&' => Token::Op(Op::And),
            b'|' => Token::Op(Op::Or),
            b'~' => Token::Not,
            b'=' if two("==") => Token::Op(Op::Eq),
            b'!' if two("!=") => Token::Op(Op::Ne),
            b'<' if two("<=") => Token::Op(Op::Le),
            b'>' if two(">=") => Token::Op(Op::Ge),
            b'<' => Token::Op(Op::Lt),
            b'>' => Token::Op(Op::Gt),
            b'=' => Token::Assign,
            b'\'' | b'"' | b'`' => {
                let mut s = String::new();
                let mut chars = text[i + 1..].char_indices();
                let end = loop {
                    match chars.next() {
                        None => return Err(err(start, "an unterminated quote")),
                        Some((_, '\\')) => {
                            if let Some((_, next)) = chars.next() {
                                s.push(next);
                            }
                        }
                        Some((k, ch)) if ch as u32 == c as u32 => break i + 1 + k + 1,
                        Some((_, ch)) => s.push(ch),
                    }
                };
                out.push((
                    start,
                    if c == b'`' {
                        Token::Ident(s)
                    } else {
                        Token::Quoted(s)
                    },
                ));
                i = end;
                continue;
            }
            b'0'..=b'9' | b'.' => {
                let mut j = i;
                let mut float = false;
                while j < bytes.len() {
                    match bytes[j] {
                        b'0'..=b'9' | b'_' => {}
                        b'.' => float = true,
                        b'e' | b'E' => {
                            float = true;
                            if j + 1 < bytes.len() && matches!(bytes[j + 1], b'+' | b'-') {
                                j += 1;
                            }
                        }
                        _ => break,
                    }
                    j += 1;
                }
                let lit = text[i..j].replace('_', "");
                let token = match (float, lit.parse::<i64>()) {
                    (false, Ok(n)) => Token::Int(n),
                    _ => Token::Float(
                        lit.parse()
                            .map_err(|_| err(start, &format!("`{lit}` is not a number")))?,
                    ),
                };
                out.push((start, token));
                i = j;
                continue;
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 => {
                let rest = &text[i..];
                let len = rest
                    .char_indices()
                    .find(|&(_, ch)| !(ch.is_alphanumeric() || ch == '_'))
                    .map_or(rest.len(), |(k, _)| k);
                if len == 0 {
                    let ch = rest.chars().next().unwrap_or('?');
                    return Err(err(i, &format!("unexpected `{ch}`")));
                }
                let word = &rest[..len];
                let token = match word {
                    "and" => Token::Op(Op::And),
                    "or" => Token::Op(Op::Or),
                    "not" => Token::Not,
                    "in" => Token::In,
                    _ => Token::Ident(word.to_string()),
                };
                out.push((start, token));
                i += len;
                continue;
            }
            _ => {
                let ch = text[i..].chars().next().unwrap_or('?');
                return Err(err(i, &format!("unexpected `{ch}`")));
            }
        };
        let len = match &token {
            Token::Op(Op::Eq | Op::Ne | Op::Le | Op::Ge) => 2,
            _ => 1,
        };
        out.push((start, token));
        i += len;
    }
    Ok(out)
}

struct Parser<'t> {
    text: &'t str,
    tokens: &'t [(usize, Token)],
    at: usize,
    /// Nesting so far: deeper expressions are refused, not a stack overflow.
    depth: usize,
}

/// How deeply parentheses, `not` and `-` may nest.
const MAX_DEPTH: usize = 200;
/// How many tokens an expression may have.
const MAX_TOKENS: usize = 2000;

impl Parser<'_> {
    fn error(&self, pos: usize, what: &str) -> FrameError {
        invalid(format!(
            "{what} at character {} of `{}`",
            self.text[..pos].chars().count() + 1,
            self.text
        ))
    }

    fn next(&mut self) -> Option<&(usize, Token)> {
        let t = self.tokens.get(self.at);
        self.at += 1;
        t
    }

    /// Precedence climbing: operators binding tighter than `min` are taken here.
    fn expr(&mut self, min: u8) -> Result<Expr> {
        let mut left = self.unary()?;
        loop {
            // `in` and `not in` bind as comparisons do.
            let negated = match (self.tokens.get(self.at), self.tokens.get(self.at + 1)) {
                (Some((_, Token::In)), _) => Some(false),
                (Some((_, Token::Not)), Some((_, Token::In))) => Some(true),
                _ => None,
            };
            if let Some(negated) = negated {
                if Op::Eq.precedence() <= min {
                    break;
                }
                self.at += if negated { 2 } else { 1 };
                let items = self.list()?;
                let is_in = Expr::In(Box::new(left), items);
                left = if negated {
                    Expr::Not(Box::new(is_in))
                } else {
                    is_in
                };
                continue;
            }
            let op = match self.tokens.get(self.at) {
                Some((_, Token::Op(op))) => *op,
                Some((_, Token::Minus)) => Op::Sub,
                _ => break,
            };
            let p = op.precedence();
            if p <= min {
                break;
            }
            self.at += 1;
            let right = self.expr(p)?;
            left = Expr::Binary(Box::new(left), op, Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr> {
        self.depth += 1;
        let out = self.unary_inner();
        self.depth -= 1;
        out
    }

    fn unary_inner(&mut self) -> Result<Expr> {
        let end = self.text.len();
        if self.depth > MAX_DEPTH {
            let pos = self.tokens.get(self.at).map_or(end, |(p, _)| *p);
            return Err(self.error(
                pos,
                &format!("the expression nests deeper than {MAX_DEPTH}"),
            ));
        }
        let Some((pos, token)) = self.next().cloned() else {
            return Err(self.error(end, "the expression ends early"));
        };
        Ok(match token {
            Token::Minus => match self.unary()? {
                Expr::Int(i) => Expr::Int(-i),
                Expr::Float(x) => Expr::Float(-x),
                e => Expr::Neg(Box::new(e)),
            },
            // `not` binds looser than comparisons: `not x > 1` is `not (x > 1)`.
            Token::Not => Expr::Not(Box::new(self.expr(Op::And.precedence())?)),
            Token::Open => {
                let e = self.expr(0)?;
                match self.next() {
                    Some((_, Token::Close)) => self.methods(e)?,
                    _ => return Err(self.error(pos, "a `(` without its `)`")),
                }
            }
            Token::Ident(name) => match name.as_str() {
                "True" | "true" => Expr::Bool(true),
                "False" | "false" => Expr::Bool(false),
                _ => self.methods(Expr::Column(name))?,
            },
            Token::Quoted(s) => Expr::Str(s),
            Token::Int(i) => Expr::Int(i),
            Token::Float(x) => Expr::Float(x),
            other => return Err(self.error(pos, &format!("unexpected {other}"))),
        })
    }

    /// Takes `token` next, or says that `what` was expected there.
    fn expect(&mut self, token: Token, what: &str) -> Result<()> {
        match self.next() {
            Some((_, t)) if *t == token => Ok(()),
            Some((pos, t)) => {
                let (pos, t) = (*pos, t.clone());
                Err(self.error(pos, &format!("expected {what}, found {t}")))
            }
            None => Err(self.error(self.text.len(), &format!("expected {what}"))),
        }
    }

    /// `[a, b, ...]` (possibly empty).
    fn list(&mut self) -> Result<Vec<Expr>> {
        self.expect(Token::OpenList, "a list `[...]`")?;
        let mut items = Vec::new();
        if matches!(self.tokens.get(self.at), Some((_, Token::CloseList))) {
            self.at += 1;
            return Ok(items);
        }
        loop {
            items.push(self.expr(0)?);
            match self.next() {
                Some((_, Token::Comma)) => {}
                Some((_, Token::CloseList)) => return Ok(items),
                _ => {
                    let pos = self
                        .tokens
                        .get(self.at - 1)
                        .map_or(self.text.len(), |t| t.0);
                    return Err(self.error(pos, "a `[` without its `]`"));
                }
            }
        }
    }

    /// The methods called on `e`: `.isin([...])`, `.between(a, b)`,
    /// `.str.startswith('p')`, `.str.endswith('s')`, `.str.contains('t')`, `.dt.year` (and
    /// the other [`TimePart`]s), `.where(cond[, other])`, `.mask(cond[, other])`.
    /// The arguments of `.str.slice(start[, stop])` after its name: whole numbers.
    fn slice(&mut self, e: Expr) -> Result<Expr> {
        self.expect(Token::Open, "`(`")?;
        let mut bounds = Vec::new();
        loop {
            let at = self.tokens.get(self.at).map_or(self.text.len(), |t| t.0);
            let negative = matches!(self.tokens.get(self.at), Some((_, Token::Minus)));
            if negative {
                self.at += 1;
            }
            match self.next().cloned() {
                Some((_, Token::Int(i))) => bounds.push(if negative { -i } else { i }),
                _ => return Err(self.error(at, "a whole number (as in `.str.slice(0, 2)`)")),
            }
            match self.next().cloned() {
                Some((_, Token::Comma)) if bounds.len() < 2 => {}
                Some((_, Token::Close)) => break,
                other => {
                    let pos = other.map_or(self.text.len(), |t| t.0);
                    return Err(self.error(pos, "`)` after at most two numbers"));
                }
            }
        }
        Ok(Expr::Slice(Box::new(e), bounds[0], bounds.get(1).copied()))
    }

    fn methods(&mut self, mut e: Expr) -> Result<Expr> {
        while let Some((_, Token::Dot)) = self.tokens.get(self.at) {
            self.at += 1;
            let Some((pos, Token::Ident(name))) = self.next().cloned() else {
                let pos = self
                    .tokens
                    .get(self.at - 1)
                    .map_or(self.text.len(), |t| t.0);
                return Err(self.error(pos, "a method name after `.`"));
            };
            e = match name.as_str() {
                "isin" => {
                    self.expect(Token::Open, "`(`")?;
                    let items = self.list()?;
                    self.expect(Token::Close, "`)`")?;
                    Expr::In(Box::new(e), items)
                }
                "between" => {
                    self.expect(Token::Open, "`(`")?;
                    let low = self.expr(0)?;
                    self.expect(Token::Comma, "`,`")?;
                    let high = self.expr(0)?;
                    self.expect(Token::Close, "`)`")?;
                    Expr::Between(Box::new(e), Box::new(low), Box::new(high))
                }
                "str" => {
                    self.expect(Token::Dot, "`.` (as in `.str.startswith('p')`)")?;
                    if let Some((_, Token::Ident(m))) = self.tokens.get(self.at)
                        && m == "slice"
                    {
                        self.at += 1;
                        e = self.slice(e)?;
                        continue;
                    }
                    let test = match self.next().cloned() {
                        Some((_, Token::Ident(t))) if t == "startswith" => TextTest::StartsWith,
                        Some((_, Token::Ident(t))) if t == "endswith" => TextTest::EndsWith,
                        Some((_, Token::Ident(t))) if t == "contains" => TextTest::Matches,
                        other => {
                            let pos = other.map_or(self.text.len(), |t| t.0);
                            return Err(self.error(
                                pos,
                                "a text method (startswith, endswith, contains, slice)",
                            ));
                        }
                    };
                    self.expect(Token::Open, "`(`")?;
                    let text = match self.next().cloned() {
                        Some((_, Token::Quoted(text))) => text,
                        other => {
                            let pos = other.map_or(self.text.len(), |t| t.0);
                            return Err(self.error(pos, "a quoted text"));
                        }
                    };
                    let mut test = test;
                    if test == TextTest::Matches {
                        if let Some((_, Token::Comma)) = self.tokens.get(self.at) {
                            self.at += 1;
                            let at = self.tokens.get(self.at).map_or(self.text.len(), |t| t.0);
                            let flag = match (
                                self.next().cloned(),
                                self.next().cloned(),
                                self.next().cloned(),
                            ) {
                                (
                                    Some((_, Token::Ident(r))),
                                    Some((_, Token::Assign)),
                                    Some((_, Token::Ident(b))),
                                ) if r == "regex" && (b == "True" || b == "False") => b == "True",
                                _ => {
                                    return Err(
                                        self.error(at, "expected regex=True or regex=False")
                                    );
                                }
                            };
                            if !flag {
                                test = TextTest::Contains;
                            }
                        }
                        if test == TextTest::Matches {
                            pattern(&text).map_err(|e| self.error(pos, &e.to_string()))?;
                        }
                    }
                    self.expect(Token::Close, "`)`")?;
                    Expr::Text(Box::new(e), test, text)
                }
                "dt" => {
                    self.expect(Token::Dot, "`.` (as in `.dt.year`)")?;
                    let part = match self.next().cloned() {
                        Some((_, Token::Ident(p))) => {
                            TimePart::ALL.iter().find(|(n, _)| *n == p).map(|&(_, p)| p)
                        }
                        _ => None,
                    };
                    let Some(part) = part else {
                        let pos = self
                            .tokens
                            .get(self.at - 1)
                            .map_or(self.text.len(), |t| t.0);
                        let names: Vec<&str> = TimePart::ALL.iter().map(|(n, _)| *n).collect();
                        return Err(self.error(
                            pos,
                            &format!("a part of a date or time ({})", names.join(", ")),
                        ));
                    };
                    Expr::Part(Box::new(e), part)
                }
                "astype" => {
                    self.expect(Token::Open, "`(`")?;
                    let at = self.tokens.get(self.at).map_or(self.text.len(), |t| t.0);
                    let name = match self.next().cloned() {
                        Some((_, Token::Quoted(n) | Token::Ident(n))) => n,
                        _ => String::new(),
                    };
                    let Some((_, to)) = DTYPES.iter().find(|(n, _)| *n == name) else {
                        let names: Vec<&str> = DTYPES.iter().map(|(n, _)| *n).collect();
                        return Err(self.error(at, &format!("a type ({})", names.join(", "))));
                    };
                    self.expect(Token::Close, "`)`")?;
                    Expr::AsType(Box::new(e), to.clone())
                }
                method @ ("where" | "mask") => {
                    self.expect(Token::Open, "`(`")?;
                    let cond = self.expr(0)?;
                    let other = match self.next() {
                        Some((_, Token::Comma)) => {
                            let o = self.expr(0)?;
                            self.expect(Token::Close, "`)`")?;
                            Some(Box::new(o))
                        }
                        Some((_, Token::Close)) => None,
                        _ => {
                            let pos = self
                                .tokens
                                .get(self.at - 1)
                                .map_or(self.text.len(), |t| t.0);
                            return Err(self.error(pos, "expected `,` or `)`"));
                        }
                    };
                    Expr::Where {
                        value: Box::new(e),
                        cond: Box::new(cond),
                        other,
                        mask: method == "mask",
                    }
                }
                _ => {
                    return Err(self.error(
                        pos,
                        &format!(
                            "unknown method `.{name}` (known: isin, between, \
                             str.startswith, str.endswith, str.contains, str.slice, dt.year, \
                             dt.month, dt.day, where, mask, astype)"
                        ),
                    ));
                }
            };
        }
        Ok(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float64Type, Int64Type};
    use arrow_schema::{Field, Schema};

    fn batch() -> RecordBatch {
        let schema = Schema::new(vec![
            Field::new("key", DataType::Utf8, false),
            Field::new("x", DataType::Float64, false),
            Field::new("n", DataType::Int64, false),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(StringArray::from(vec!["a", "b", "a", "c"])),
                Arc::new(Float64Array::from(vec![1.0, 2.5, -3.0, 10.0])),
                Arc::new(Int64Array::from(vec![1, 2, 3, 4])),
            ],
        )
        .unwrap()
    }

    #[test]
    fn precedence_follows_python() {
        let e = Expr::parse("x + 2 * n > 3 and not key == 'a' or n == 1").unwrap();
        assert_eq!(
            e.to_string(),
            "((((x + (2 * n)) > 3) and not ((key == 'a'))) or (n == 1))"
        );
        assert_eq!(Expr::parse("-x - -2").unwrap().to_string(), "(-(x) - -2)");
        assert_eq!(
            Expr::parse("`odd name` + 1").unwrap().columns(),
            ["odd name"]
        );
    }

    #[test]
    fn filters_and_computes() {
        let b = batch();
        let kept = Expr::parse("x > 0 & key != 'c'")
            .unwrap()
            .filter(&b)
            .unwrap();
        assert_eq!(kept.num_rows(), 2);
        let z = Expr::parse("x * n + 1").unwrap().eval(&b).unwrap();
        assert_eq!(
            z.as_primitive::<Float64Type>().values().to_vec(),
            vec![2.0, 6.0, -8.0, 41.0]
        );
        let m = Expr::parse("n % 2 + 10").unwrap().eval(&b).unwrap();
        assert_eq!(
            m.as_primitive::<Int64Type>().values().to_vec(),
            vec![11, 10, 11, 10]
        );
        let half = Expr::parse("n / 2").unwrap().eval(&b).unwrap();
        assert_eq!(half.as_primitive::<Float64Type>().value(0), 0.5);
        let all = Expr::parse("True").unwrap().filter(&b).unwrap();
        assert_eq!(all.num_rows(), 4);
    }

    #[test]
    fn errors_say_where() {
        let e = Expr::parse("x >> 1").unwrap_err().to_string();
        assert!(e.contains("character 4"), "{e}");
        let e = Expr::parse("x = 1").unwrap_err().to_string();
        assert!(e.contains("`==`"), "{e}");
        let e = Expr::parse("(x + 1").unwrap_err().to_string();
        assert!(e.contains("without its `)`"), "{e}");
        let e = Expr::parse("z > 1").unwrap().filter(&batch()).unwrap_err();
        assert!(e.to_string().contains("no column `z`"), "{e}");
        let e = Expr::parse("key + 1").unwrap().eval(&batch()).unwrap_err();
        assert!(
            e.to_string().contains("cannot apply `+` to Utf8 and Int64"),
            "{e}"
        );
        let e = Expr::parse("x + 1").unwrap().filter(&batch()).unwrap_err();
        assert!(e.to_string().contains("not true/false"), "{e}");
        // Not a loop, not a stack overflow.
        let e = Expr::parse("key == \u{2019}a\u{2019}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unexpected `\u{2019}`"), "{e}");
        let deep = format!("{}x{}", "(".repeat(300), ")".repeat(300));
        let e = Expr::parse(&deep).unwrap_err().to_string();
        assert!(e.contains("nests deeper than 200"), "{e}");
        let e = Expr::parse(&format!("{}x", "- ".repeat(150))).unwrap();
        assert_eq!(e.columns(), ["x"]);
        let e = Expr::parse(&format!("{}x", "not ".repeat(300)))
            .unwrap_err()
            .to_string();
        assert!(e.contains("nests deeper"), "{e}");
        let e = Expr::parse(&"x + ".repeat(100_000))
            .unwrap_err()
            .to_string();
        assert!(e.contains("more than 2000"), "{e}");
        // A constant side of `and` on an empty partition.
        let empty = batch().slice(0, 0);
        let kept = Expr::parse("x > 1 and True")
            .unwrap()
            .filter(&empty)
            .unwrap();
        assert_eq!(kept.num_rows(), 0);
        let kept = Expr::parse("True and x > 1")
            .unwrap()
            .filter(&batch())
            .unwrap();
        assert_eq!(kept.num_rows(), 2);
    }

    #[test]
    fn membership_ranges_and_text_tests() {
        // key: a b a c; x: 1.0 2.5 -3.0 10.0; n: 1 2 3 4
        let b = batch();
        let rows = |q: &str| Expr::parse(q).unwrap().filter(&b).unwrap().num_rows();
        assert_eq!(rows("key in ['a', 'c']"), 3);
        assert_eq!(rows("key.isin(['b'])"), 1);
        assert_eq!(rows("key not in ['a', 'c']"), 1);
        assert_eq!(rows("n in [2, 4] and x > 0"), 2);
        assert_eq!(rows("n in [2.0]"), 1);
        assert_eq!(rows("n in []"), 0);
        assert_eq!(rows("x.between(1, 2.5)"), 2);
        assert_eq!(rows("n.between(2, 3)"), 2);
        assert_eq!(rows("(n * 2).between(n + 2, 6)"), 2);
        assert_eq!(rows("key.str.startswith('a')"), 2);
        assert_eq!(rows("~key.str.contains('b')"), 3);
        assert_eq!(rows("key.str.endswith('')"), 4);
        assert_eq!(rows(".5 < x"), 3, "a number still starts with a dot");
        // str.contains takes a regular expression, as pandas' does, or text with
        // regex=False.
        assert_eq!(rows("key.str.contains('^[ab]$')"), 3);
        assert_eq!(rows("key.str.contains('a|c', regex=False)"), 0);
        assert_eq!(rows("key.str.contains('a|c', regex=True)"), 3);
        assert_eq!(rows("key.str.contains('.')"), 4);
        assert_eq!(rows("key.str.contains('.', regex=False)"), 0);
        // What is printed parses back to the same expression.
        for q in [
            "key in ['a', 'c']",
            "key not in ['a']",
            "x.between(1, n) and n in []",
            "key.str.startswith('a\\'b')",
            "key.str.contains('a.*b')",
            "key.str.contains('a.*b', regex=False)",
            "(x + 1).between(0, 2) or key.isin(['x', 'y']).between(False, True)",
        ] {
            let e = Expr::parse(q).unwrap();
            assert_eq!(Expr::parse(&e.to_string()).unwrap(), e, "{q} -> {e}");
        }
        let e = Expr::parse("key.isin(['a']) and n.between(1, x)").unwrap();
        assert_eq!(e.columns(), ["key", "n", "x"]);
        for (q, says) in [
            ("key.lower()", "unknown method `.lower`"),
            ("key in 'a'", "expected a list `[...]`"),
            ("key.isin(['a'", "without its `]`"),
            ("key.str.startswith(1)", "a quoted text"),
            ("key.str.upper('a')", "a text method"),
            ("key.str.contains('(')", "not a regular expression"),
            (
                "key.str.contains('a', regex=1)",
                "expected regex=True or regex=False",
            ),
            (
                "key.str.contains('a', case=False)",
                "expected regex=True or regex=False",
            ),
            ("x.between(1)", "expected `,`"),
            ("key.", "a method name"),
        ] {
            let e = Expr::parse(q).unwrap_err().to_string();
            assert!(e.contains(says), "{q}: {e}");
        }
        let e = Expr::parse("x.str.startswith('1')")
            .unwrap()
            .eval(&b)
            .unwrap_err();
        assert!(e.to_string().contains("is Float64, not text"), "{e}");
        let e = Expr::parse("key in [1]").unwrap().eval(&b).unwrap_err();
        assert!(
            e.to_string()
                .contains("cannot apply `==` to Utf8 and Int64"),
            "{e}"
        );
    }

    #[test]
    fn nulls_are_in_no_list() {
        let schema = Schema::new(vec![Field::new("k", DataType::Utf8, true)]);
        let b = RecordBatch::try_new(
            Arc::new(schema),
            vec![Arc::new(StringArray::from(vec![
                Some("a"),
                None,
                Some("b"),
            ]))],
        )
        .unwrap();
        let isin = Expr::parse("k.isin(['a'])").unwrap().eval(&b).unwrap();
        let isin = isin.as_boolean();
        assert_eq!(isin.null_count(), 0);
        assert_eq!(
            isin.iter().collect::<Vec<_>>(),
            [Some(true), Some(false), Some(false)]
        );
        let out = Expr::parse("k not in ['a']").unwrap().eval(&b).unwrap();
        let out = out.as_boolean();
        assert_eq!(
            out.iter().collect::<Vec<_>>(),
            [Some(false), Some(true), Some(true)]
        );
        // Text tests keep nulls null (as pandas' string dtypes do).
        let t = Expr::parse("k.str.startswith('a')")
            .unwrap()
            .eval(&b)
            .unwrap();
        assert_eq!(t.null_count(), 1);
    }

    #[test]
    fn parts_of_dates_and_times_are_int32() {
        use arrow_array::types::Int32Type;
        use arrow_array::{Date32Array, TimestampSecondArray};
        // 2024-02-29 13:45:10 (a Thursday), null, 1999-12-31 00:00:00 (a Friday).
        let ts = TimestampSecondArray::from(vec![Some(1_709_214_310), None, Some(946_598_400)]);
        let days = Date32Array::from(vec![Some(19_782), Some(0), None]);
        let schema = Schema::new(vec![
            Field::new("ts", ts.data_type().clone(), true),
            Field::new("d", DataType::Date32, true),
        ]);
        let b = RecordBatch::try_new(Arc::new(schema), vec![Arc::new(ts), Arc::new(days)]).unwrap();
        let part = |q: &str| {
            let a = Expr::parse(q).unwrap().eval(&b).unwrap();
            assert_eq!(a.data_type(), &DataType::Int32, "{q}");
            a.as_primitive::<Int32Type>().iter().collect::<Vec<_>>()
        };
        assert_eq!(part("ts.dt.year"), [Some(2024), None, Some(1999)]);
        assert_eq!(part("ts.dt.month"), [Some(2), None, Some(12)]);
        assert_eq!(part("ts.dt.day"), [Some(29), None, Some(31)]);
        assert_eq!(part("ts.dt.hour"), [Some(13), None, Some(0)]);
        assert_eq!(part("ts.dt.minute"), [Some(45), None, Some(0)]);
        assert_eq!(part("ts.dt.second"), [Some(10), None, Some(0)]);
        assert_eq!(part("ts.dt.dayofweek"), [Some(3), None, Some(4)]);
        assert_eq!(part("d.dt.year"), [Some(2024), Some(1970), None]);
        let kept = Expr::parse("ts.dt.year == 2024 or d.dt.month == 1")
            .unwrap()
            .filter(&b)
            .unwrap();
        assert_eq!(kept.num_rows(), 2);
        let e = Expr::parse("ts.dt.year").unwrap();
        assert_eq!(Expr::parse(&e.to_string()).unwrap(), e);
        let e = Expr::parse("ts.dt.week").unwrap_err().to_string();
        assert!(e.contains("a part of a date or time"), "{e}");
        let e = Expr::parse("key.dt.year")
            .unwrap()
            .eval(&batch())
            .unwrap_err();
        assert!(e.to_string().contains("is Utf8, not a date or time"), "{e}");
    }

    #[test]
    fn where_and_mask_choose_values() {
        // key: a b a c; x: 1.0 2.5 -3.0 10.0; n: 1 2 3 4
        let b = batch();
        let floats = |q: &str| {
            let a = Expr::parse(q).unwrap().eval(&b).unwrap();
            a.as_primitive::<Float64Type>().iter().collect::<Vec<_>>()
        };
        assert_eq!(
            floats("x.where(x > 0, 0)"),
            [Some(1.0), Some(2.5), Some(0.0), Some(10.0)]
        );
        assert_eq!(
            floats("x.mask(key == 'a', n * 10)"),
            [Some(10.0), Some(2.5), Some(30.0), Some(10.0)]
        );
        assert_eq!(
            floats("x.where(n > 2)"),
            [None, None, Some(-3.0), Some(10.0)]
        );
        // Integers stay integers; a constant condition applies to every row.
        let a = Expr::parse("n.where(n % 2 == 0, -n)")
            .unwrap()
            .eval(&b)
            .unwrap();
        assert_eq!(
            a.as_primitive::<Int64Type>().values().to_vec(),
            [-1, 2, -3, 4]
        );
        let a = Expr::parse("n.where(False, 7)").unwrap().eval(&b).unwrap();
        assert_eq!(a.as_primitive::<Int64Type>().values().to_vec(), [7; 4]);
        let a = Expr::parse("key.where(key != 'a', 'z')")
            .unwrap()
            .eval(&b)
            .unwrap();
        let got: Vec<_> = a.as_string::<i32>().iter().flatten().collect();
        assert_eq!(got, ["z", "b", "z", "c"]);
        // A case expression: CASE WHEN key == 'a' THEN x ELSE 0 END, summed by assign.
        let e = Expr::parse("x.where(key == 'a', 0) + 1").unwrap();
        assert_eq!(e.columns(), ["x", "key"]);
        for q in [
            "x.where(x > 0, 0)",
            "x.mask(n in [1, 2])",
            "(x + 1).where(True, n)",
        ] {
            let e = Expr::parse(q).unwrap();
            assert_eq!(Expr::parse(&e.to_string()).unwrap(), e, "{q} -> {e}");
        }
        // A null condition counts as false.
        let schema = Schema::new(vec![Field::new("c", DataType::Boolean, true)]);
        let nb = RecordBatch::try_new(
            Arc::new(schema),
            vec![Arc::new(BooleanArray::from(vec![Some(true), None]))],
        )
        .unwrap();
        let a = Expr::parse("c.where(c, False)").unwrap().eval(&nb).unwrap();
        assert_eq!(
            a.as_boolean().iter().collect::<Vec<_>>(),
            [Some(true), Some(false)]
        );
        let a = Expr::parse("(1).mask(c, 2)").unwrap().eval(&nb).unwrap();
        assert_eq!(a.as_primitive::<Int64Type>().values().to_vec(), [2, 1]);
        let e = Expr::parse("x.where(key, 0)")
            .unwrap()
            .eval(&b)
            .unwrap_err();
        assert!(e.to_string().contains("not true/false"), "{e}");
        let e = Expr::parse("x.where(x > 0, 'a')")
            .unwrap()
            .eval(&b)
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("cannot put Utf8 values among Float64"),
            "{e}"
        );
        let e = Expr::parse("x.where(x > 0 0)").unwrap_err().to_string();
        assert!(e.contains("expected `,` or `)`"), "{e}");
    }

    #[test]
    fn str_slice_takes_characters_as_python_does() {
        let schema = Schema::new(vec![Field::new("s", DataType::Utf8, true)]);
        let s = StringArray::from(vec![Some("13-555"), Some("é7x"), None, Some("")]);
        let b = RecordBatch::try_new(Arc::new(schema), vec![Arc::new(s)]).unwrap();
        let texts = |q: &str| {
            let a = Expr::parse(q).unwrap().eval(&b).unwrap();
            a.as_string::<i32>()
                .iter()
                .map(|v| v.map(String::from))
                .collect::<Vec<_>>()
        };
        let some = |v: &[&str]| v.iter().map(|s| Some(s.to_string())).collect::<Vec<_>>();
        let with_null = |mut v: Vec<Option<String>>| {
            v[2] = None;
            v
        };
        assert_eq!(
            texts("s.str.slice(0, 2)"),
            with_null(some(&["13", "é7", "", ""]))
        );
        assert_eq!(
            texts("s.str.slice(3)"),
            with_null(some(&["555", "", "", ""]))
        );
        assert_eq!(
            texts("s.str.slice(-2)"),
            with_null(some(&["55", "7x", "", ""]))
        );
        assert_eq!(
            texts("s.str.slice(1, -1)"),
            with_null(some(&["3-55", "7", "", ""]))
        );
        let kept = Expr::parse("s.str.slice(0, 2) in ['13', '99']")
            .unwrap()
            .filter(&b)
            .unwrap();
        assert_eq!(kept.num_rows(), 1);
        let e = Expr::parse("s.str.slice(0, 2)").unwrap();
        assert_eq!(Expr::parse(&e.to_string()).unwrap(), e);
        let e = Expr::parse("s.str.slice('a')").unwrap_err().to_string();
        assert!(e.contains("a whole number"), "{e}");
        let e = Expr::parse("s.str.slice(1, 2, 3)").unwrap_err().to_string();
        assert!(e.contains("at most two numbers"), "{e}");
        let e = Expr::parse("x.str.slice(0, 1)")
            .unwrap()
            .eval(&batch())
            .unwrap_err();
        assert!(e.to_string().contains("is Float64, not text"), "{e}");
    }

    #[test]
    fn astype_converts_as_pandas_names_types() {
        let b = batch();
        let a = Expr::parse("(x * 2).astype('int64')")
            .unwrap()
            .eval(&b)
            .unwrap();
        assert_eq!(
            a.as_primitive::<Int64Type>().values().to_vec(),
            [2, 5, -6, 20]
        );
        let a = Expr::parse("n.astype(float)").unwrap().eval(&b).unwrap();
        assert_eq!(
            a.as_primitive::<Float64Type>().values().to_vec(),
            [1.0, 2.0, 3.0, 4.0]
        );
        let a = Expr::parse("(key == 'a').astype('int')")
            .unwrap()
            .eval(&b)
            .unwrap();
        assert_eq!(
            a.as_primitive::<Int64Type>().values().to_vec(),
            [1, 0, 1, 0]
        );
        let a = Expr::parse("n.astype('str')").unwrap().eval(&b).unwrap();
        assert_eq!(a.as_string::<i32>().value(3), "4");
        let e = Expr::parse("n.astype('int64')").unwrap();
        assert_eq!(Expr::parse(&e.to_string()).unwrap(), e);
        let e = Expr::parse("n.astype('decimal')").unwrap_err().to_string();
        assert!(e.contains("a type (int64, int,"), "{e}");
        let e = Expr::parse("key.astype('int64')")
            .unwrap()
            .eval(&b)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot make Utf8 values int64"), "{e}");
    }

    #[test]
    fn decimals_compute_as_floats() {
        let d = arrow_array::Decimal128Array::from(vec![Some(1050), Some(7), None])
            .with_precision_and_scale(15, 2)
            .unwrap();
        let schema = Schema::new(vec![Field::new("d", d.data_type().clone(), true)]);
        let b = RecordBatch::try_new(Arc::new(schema), vec![Arc::new(d)]).unwrap();
        let floats = |q: &str| {
            let a = Expr::parse(q).unwrap().eval(&b).unwrap();
            assert_eq!(a.data_type(), &DataType::Float64, "{q}");
            a.as_primitive::<Float64Type>().iter().collect::<Vec<_>>()
        };
        assert_eq!(
            floats("d * (1 - d)"),
            [Some(10.5 * -9.5), Some(0.07 * 0.93), None]
        );
        assert_eq!(
            floats("d * d"),
            [Some(10.5 * 10.5), Some(0.07 * 0.07), None]
        );
        let kept = Expr::parse("d.between(0.07, 10.5) and d < 24")
            .unwrap()
            .filter(&b)
            .unwrap();
        assert_eq!(kept.num_rows(), 2);
    }
}
