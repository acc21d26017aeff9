//! Dataframe queries in the pandas / Dask method-chain syntax, as [`DataFrame`] calls.

use std::fmt;

use fabric_frame::groupby::How;
use serde_json::Value as Json;

use crate::{ClientError, DataFrame, GroupBy, Rolling};

/// Why a query cannot be parsed or turned into [`DataFrame`] calls.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The text is not a method chain. Displays as the message, the position, then the query
    /// with a caret under the place:
    ///
    /// ```text
    /// expected `)` at character 30 of the query
    ///   read_csv('a.csv').groupby('k'
    ///                                ^
    /// ```
    #[error("{}", syntax(message, query, *offset))]
    Syntax {
        /// What was expected or found there (``expected `)` ``, `unterminated string`).
        message: String,
        /// The whole query.
        query: String,
        /// Where: a byte offset into `query`, at a character boundary.
        offset: usize,
    },
    /// The chain is well formed but asks for something no frame does: an unknown method or
    /// aggregate, an argument missing or of the wrong kind, an aggregation missing at the end.
    #[error("{0}")]
    Invalid(String),
    /// A [`DataFrame`] call refused its arguments: an unknown column, an expression that
    /// does not parse, files that cannot be listed or read.
    #[error(transparent)]
    Frame(#[from] ClientError),
}

impl QueryError {
    /// The character (counted from 1) of the query a syntax error is at.
    pub fn column(&self) -> Option<usize> {
        match self {
            QueryError::Syntax { query, offset, .. } => Some(column(query, *offset)),
            _ => None,
        }
    }
}

fn column(query: &str, offset: usize) -> usize {
    query[..offset].chars().count() + 1
}

/// A syntax error as it displays.
fn syntax(message: &str, query: &str, offset: usize) -> String {
    let col = column(query, offset);
    format!(
        "{message} at character {col} of the query\n  {query}\n  {}^",
        " ".repeat(col - 1)
    )
}

/// A [`QueryError::Invalid`] from format arguments.
macro_rules! invalid {
    ($($arg:tt)*) => {
        QueryError::Invalid(format!($($arg)*))
    };
}

/// A query parsed by [`parse_query`]: a method chain, not yet turned into [`DataFrame`]
/// calls (no file has been listed).
#[derive(Clone, Debug, PartialEq)]
pub struct Query {
    chain: Vec<Link>,
}

/// Parses `text`, a pandas / Dask method chain starting with `read_csv('PATTERN')` or
/// `read_parquet('PATTERN')`:
///
/// ```text
/// read_csv('data/*.csv').query('x > 5').groupby('key').agg({'x': ['mean', 'max']})
/// read_parquet('s3://bucket/events/').merge(read_csv('keys.csv'), on='key').head(10)
/// read_csv('ticks/*.csv').set_index('ts').rolling('1h').price.mean()
/// ```
///
/// Only the syntax is checked here; [`Query::eval`] checks the methods and their arguments.
///
/// ```
/// let query = fabric_client::parse_query("read_csv('data/*.csv').groupby('key').x.sum()");
/// assert!(query.is_ok());
/// let e = fabric_client::parse_query("read_csv('data/*.csv'").unwrap_err();
/// assert_eq!(e.column(), Some(22));
/// ```
pub fn parse_query(text: &str) -> Result<Query, QueryError> {
    parse(text).map(|chain| Query { chain })
}

/// What a query does at its end, with the frame it computes.
#[derive(Clone, Debug)]
pub enum QueryAction {
    /// Computes the frame (with [`DataFrame::compute`] or the graph of
    /// [`DataFrame::to_graph`]) and shows it, only its first `head` rows if given.
    Show {
        /// The frame.
        frame: DataFrame,
        /// From a final `.head(N)`: the rows to keep.
        head: Option<usize>,
    },
    /// Writes the frame as Parquet files under `dir` (`.to_parquet('DIR')`, with
    /// [`DataFrame::to_parquet`] or the graph of [`DataFrame::to_parquet_graph`]).
    ToParquet {
        /// The frame.
        frame: DataFrame,
        /// The directory or object-store prefix.
        dir: String,
    },
}

impl QueryAction {
    /// The graph document doing it, as `fabric run` and `fabric submit` take it: output
    /// `result` for [`QueryAction::Show`] (all the rows: `head` is not applied), one output
    /// per file written (its number of rows) for [`QueryAction::ToParquet`].
    pub fn to_graph(&self) -> Json {
        match self {
            QueryAction::Show { frame, .. } => frame.to_graph(),
            QueryAction::ToParquet { frame, dir } => frame.to_parquet_graph(dir),
        }
    }
}

impl Query {
    /// Makes the [`DataFrame`] calls the query names: lists the files of each `read_csv` /
    /// `read_parquet` and reads the first one's schema (here, in this process), and checks
    /// every method, column and expression. Nothing is computed.
    pub fn eval(&self) -> Result<QueryAction, QueryError> {
        eval(&self.chain)
    }
}

// ---------------------------------------------------------------------------------------
// Parsing.

/// A parsed value of the chain.
#[derive(Clone, Debug, PartialEq)]
enum Term {
    Str(String),
    Num(f64),
    /// `True` or `False`.
    Bool(bool),
    List(Vec<Term>),
    Dict(Vec<(String, Term)>),
    /// A method chain starting with a function call: `read_csv('x').groupby('k')`.
    Chain(Vec<Link>),
}

/// One link of a chain.
#[derive(Clone, Debug, PartialEq)]
enum Link {
    /// `name(args, key=value)`.
    Call(String, Vec<Term>, Vec<(String, Term)>),
    /// `.name` without parentheses: a column.
    Attr(String),
    /// `[...]`: a column or a list of columns.
    Index(Term),
}

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Term::Str(s) => write!(f, "'{s}'"),
            Term::Num(n) => write!(f, "{n}"),
            Term::Bool(b) => f.write_str(if *b { "True" } else { "False" }),
            Term::List(_) => f.write_str("a list"),
            Term::Dict(_) => f.write_str("a dict"),
            Term::Chain(_) => f.write_str("a frame"),
        }
    }
}

struct Parser<'t> {
    text: &'t str,
    at: usize,
    /// Nesting of lists, dicts and frames in arguments, bounded.
    depth: usize,
}

type Parsed<T> = Result<T, QueryError>;

impl Parser<'_> {
    fn error(&self, what: &str) -> QueryError {
        QueryError::Syntax {
            message: what.to_string(),
            query: self.text.to_string(),
            offset: self.at,
        }
    }

    fn skip_space(&mut self) {
        while let Some(c) = self.text[self.at..]
            .chars()
            .next()
            .filter(|c| c.is_whitespace())
        {
            self.at += c.len_utf8();
        }
    }

    fn peek(&mut self) -> Option<char> {
        self.skip_space();
        self.text[self.at..].chars().next()
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.at += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: char) -> Parsed<()> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(self.error(&format!("expected `{c}`")))
        }
    }

    fn ident(&mut self) -> Parsed<String> {
        self.skip_space();
        let rest = &self.text[self.at..];
        let len = rest
            .char_indices()
            .find(|&(_, c)| !(c.is_alphanumeric() || c == '_'))
            .map_or(rest.len(), |(i, _)| i);
        if len == 0 || rest.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(self.error("expected a name"));
        }
        self.at += len;
        Ok(rest[..len].to_string())
    }

    fn string(&mut self) -> Parsed<String> {
        let quote = self.peek().filter(|c| *c == '\'' || *c == '"');
        let Some(quote) = quote else {
            return Err(self.error("expected a quoted string"));
        };
        let start = self.at;
        self.at += 1;
        let mut out = String::new();
        let mut chars = self.text[self.at..].chars();
        loop {
            match chars.next() {
                None => {
                    self.at = start;
                    return Err(self.error("unterminated string"));
                }
                Some('\\') => {
                    self.at += 1;
                    if let Some(c) = chars.next() {
                        out.push(c);
                        self.at += c.len_utf8();
                    }
                }
                Some(c) if c == quote => {
                    self.at += 1;
                    return Ok(out);
                }
                Some(c) => {
                    out.push(c);
                    self.at += c.len_utf8();
                }
            }
        }
    }

    fn term(&mut self) -> Parsed<Term> {
        if self.depth >= 64 {
            return Err(self.error("the query nests too deeply"));
        }
        self.depth += 1;
        let term = self.term_inner();
        self.depth -= 1;
        term
    }

    fn term_inner(&mut self) -> Parsed<Term> {
        match self.peek() {
            Some('\'' | '"') => Ok(Term::Str(self.string()?)),
            // A tuple, as in `suffixes=('_l', '_r')`, is taken as a list.
            Some(open @ ('[' | '(')) => {
                let close = if open == '[' { ']' } else { ')' };
                self.at += 1;
                let mut items = Vec::new();
                while !self.eat(close) {
                    items.push(self.term()?);
                    if !self.eat(',') {
                        self.expect(close)?;
                        break;
                    }
                }
                Ok(Term::List(items))
            }
            Some('{') => {
                self.at += 1;
                let mut items = Vec::new();
                while !self.eat('}') {
                    let key = self.string()?;
                    self.expect(':')?;
                    items.push((key, self.term()?));
                    if !self.eat(',') {
                        self.expect('}')?;
                        break;
                    }
                }
                Ok(Term::Dict(items))
            }
            Some(c) if c.is_ascii_digit() || c == '-' => {
                let rest = &self.text[self.at..];
                let len = rest
                    .char_indices()
                    .skip(1)
                    .find(|&(_, c)| !(c.is_ascii_digit() || c == '.' || c == 'e' || c == '_'))
                    .map_or(rest.len(), |(i, _)| i);
                let n = rest[..len]
                    .replace('_', "")
                    .parse()
                    .map_err(|_| self.error("expected a number"))?;
                self.at += len;
                Ok(Term::Num(n))
            }
            Some(_) => {
                let rest = &self.text[self.at..];
                for (word, value) in [("True", true), ("False", false)] {
                    let after = rest.strip_prefix(word).map(|r| r.chars().next());
                    if let Some(next) = after
                        && !next.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '(')
                    {
                        self.at += word.len();
                        return Ok(Term::Bool(value));
                    }
                }
                self.chain().map(Term::Chain)
            }
            None => Err(self.error("the query ends early")),
        }
    }

    /// `name(args)` then `.name(args)`, `.name`, `[...]`.
    fn chain(&mut self) -> Parsed<Vec<Link>> {
        let mut links = vec![self.call_or_attr(true)?];
        loop {
            if self.eat('.') {
                links.push(self.call_or_attr(false)?);
            } else if self.peek() == Some('[') {
                self.at += 1;
                let index = self.term()?;
                self.expect(']')?;
                links.push(Link::Index(index));
            } else {
                return Ok(links);
            }
        }
    }

    fn call_or_attr(&mut self, first: bool) -> Parsed<Link> {
        let name = self.ident()?;
        if !self.eat('(') {
            if first {
                return Err(self.error(&format!("expected `(` after `{name}`")));
            }
            return Ok(Link::Attr(name));
        }
        let (mut args, mut kwargs) = (Vec::new(), Vec::new());
        while !self.eat(')') {
            let save = self.at;
            let keyword = self.ident().ok().filter(|_| {
                self.skip_space();
                self.text[self.at..].starts_with('=') && !self.text[self.at..].starts_with("==")
            });
            match keyword {
                Some(k) => {
                    self.expect('=')?;
                    kwargs.push((k, self.term()?));
                }
                None => {
                    self.at = save;
                    args.push(self.term()?);
                }
            }
            if !self.eat(',') {
                self.expect(')')?;
                break;
            }
        }
        Ok(Link::Call(name, args, kwargs))
    }
}

fn parse(text: &str) -> Parsed<Vec<Link>> {
    let mut p = Parser {
        text,
        at: 0,
        depth: 0,
    };
    let chain = p.chain()?;
    if p.peek().is_some() {
        return Err(p.error("unexpected text after the query"));
    }
    Ok(chain)
}

// ---------------------------------------------------------------------------------------
// Evaluation: the chain as DataFrame calls.

/// What a prefix of the chain is.
enum State {
    Frame(DataFrame),
    /// A groupby, with the columns picked for aggregation (all numeric ones if none).
    Grouped(GroupBy, Vec<String>, DataFrame),
    /// A rolling window, with the columns picked.
    Rolling(Rolling, Vec<String>, DataFrame),
}

fn text(t: &Term, what: &str) -> Parsed<String> {
    match t {
        Term::Str(s) => Ok(s.clone()),
        other => Err(invalid!("{what} must be a quoted string, not {other}")),
    }
}

fn texts(t: &Term, what: &str) -> Parsed<Vec<String>> {
    match t {
        Term::Str(s) => Ok(vec![s.clone()]),
        Term::List(items) => items.iter().map(|i| text(i, what)).collect(),
        other => Err(invalid!(
            "{what} must be a string or a list of strings, not {other}"
        )),
    }
}

fn one_arg<'a>(
    name: &str,
    args: &'a [Term],
    kwargs: &'a [(String, Term)],
    key: &str,
) -> Parsed<&'a Term> {
    if let Some((_, v)) = kwargs.iter().find(|(k, _)| k == key) {
        return Ok(v);
    }
    args.first()
        .ok_or_else(|| invalid!("{name}() needs its {key}"))
}

fn kwarg<'a>(kwargs: &'a [(String, Term)], key: &str) -> Option<&'a Term> {
    kwargs.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// The numeric columns of `frame` that are not `keys`.
fn numeric_columns(frame: &DataFrame, keys: &[String]) -> Vec<String> {
    frame
        .schema()
        .fields()
        .iter()
        .filter(|f| f.data_type().is_numeric() && !keys.contains(f.name()))
        .map(|f| f.name().clone())
        .collect()
}

fn eval(chain: &[Link]) -> Parsed<QueryAction> {
    let Some(Link::Call(source, args, kwargs)) = chain.first() else {
        return Err(invalid!(
            "a query starts with read_csv('...') or read_parquet('...')"
        ));
    };
    let pattern = text(one_arg(source, args, kwargs, "path")?, "the path")?;
    let frame = match source.as_str() {
        "read_csv" => DataFrame::read_csv(&pattern)?,
        "read_parquet" => DataFrame::read_parquet(&pattern)?,
        other => {
            return Err(invalid!(
                "unknown source `{other}` (read_csv or read_parquet)"
            ));
        }
    };
    let mut state = State::Frame(frame);
    let mut head = None;
    for (at, link) in chain.iter().enumerate().skip(1) {
        let last = at + 1 == chain.len();
        state = match (state, link) {
            (State::Frame(f), Link::Call(name, args, kwargs)) => match name.as_str() {
                "query" | "filter" => State::Frame(f.filter(&text(
                    one_arg(name, args, kwargs, "expression")?,
                    "the expression",
                )?)?),
                "assign" => {
                    if kwargs.is_empty() {
                        return Err(invalid!("assign() takes NAME='EXPRESSION' arguments"));
                    }
                    let mut f = f;
                    for (column, e) in kwargs {
                        f = f.assign(column, &text(e, "an assigned expression")?)?;
                    }
                    State::Frame(f)
                }
                "groupby" => {
                    let keys = texts(one_arg(name, args, kwargs, "by")?, "groupby's keys")?;
                    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
                    State::Grouped(f.groupby(&refs), Vec::new(), f)
                }
                "merge" | "join" => {
                    let Some(Term::Chain(other)) = args.first() else {
                        return Err(invalid!(
                            "{name}() takes another frame first: {name}(read_csv('...'), on='key')"
                        ));
                    };
                    let other = match eval(other)? {
                        QueryAction::Show { frame, head: None } => frame,
                        _ => {
                            return Err(invalid!(
                                "the frame given to {name}() cannot end with head() or to_parquet()"
                            ));
                        }
                    };
                    let how = kwarg(kwargs, "how").map(|h| text(h, "how")).transpose()?;
                    let how = how.as_deref().unwrap_or("inner");
                    let (lon, ron) = match (
                        kwarg(kwargs, "on"),
                        kwarg(kwargs, "left_on"),
                        kwarg(kwargs, "right_on"),
                    ) {
                        (Some(on), None, None) => (texts(on, "on")?, texts(on, "on")?),
                        (None, None, None) if how == "cross" => (Vec::new(), Vec::new()),
                        (None, Some(l), Some(r)) => (texts(l, "left_on")?, texts(r, "right_on")?),
                        _ => {
                            return Err(invalid!(
                                "{name}() needs on='KEY', or left_on='KEY' and right_on='KEY'"
                            ));
                        }
                    };
                    let lon: Vec<&str> = lon.iter().map(String::as_str).collect();
                    let ron: Vec<&str> = ron.iter().map(String::as_str).collect();
                    match kwarg(kwargs, "suffixes") {
                        None => State::Frame(f.merge(&other, &lon, &ron, how)?),
                        Some(Term::List(pair)) if pair.len() == 2 => {
                            let (l, r) = (text(&pair[0], "a suffix")?, text(&pair[1], "a suffix")?);
                            State::Frame(f.merge_with_suffixes(
                                &other,
                                &lon,
                                &ron,
                                how,
                                (&l, &r),
                            )?)
                        }
                        Some(other) => {
                            return Err(invalid!(
                                "suffixes= takes two strings, as ('_l', '_r'), not {other}"
                            ));
                        }
                    }
                }
                "sort_values" => {
                    let by = texts(one_arg(name, args, kwargs, "by")?, "the columns")?;
                    let ascending = match kwarg(kwargs, "ascending").or(args.get(1)) {
                        None => vec![true],
                        Some(Term::Bool(b)) => vec![*b],
                        Some(Term::List(items)) => items
                            .iter()
                            .map(|i| match i {
                                Term::Bool(b) => Ok(*b),
                                other => Err(invalid!(
                                    "sort_values(ascending=...) takes True/False or a list of them, not {other}"
                                )),
                            })
                            .collect::<Parsed<Vec<bool>>>()?,
                        Some(other) => {
                            return Err(invalid!(
                                "sort_values(ascending=...) takes True/False or a list of them, not {other}"
                            ));
                        }
                    };
                    let by: Vec<&str> = by.iter().map(String::as_str).collect();
                    State::Frame(f.sort_values_by(&by, &ascending)?)
                }
                "rename" => {
                    let Some(Term::Dict(items)) = kwarg(kwargs, "columns") else {
                        return Err(invalid!("rename() takes columns={{'OLD': 'NEW', ...}}"));
                    };
                    let pairs = items
                        .iter()
                        .map(|(old, new)| Ok((old.clone(), text(new, "a new column name")?)))
                        .collect::<Parsed<Vec<(String, String)>>>()?;
                    let refs: Vec<(&str, &str)> = pairs
                        .iter()
                        .map(|(o, n)| (o.as_str(), n.as_str()))
                        .collect();
                    State::Frame(f.rename(&refs)?)
                }
                "drop_duplicates" => {
                    let subset = match kwarg(kwargs, "subset").or(args.first()) {
                        None => Vec::new(),
                        Some(t) => texts(t, "subset")?,
                    };
                    let keep = match kwarg(kwargs, "keep") {
                        None => "first",
                        Some(Term::Str(k)) if k == "first" || k == "last" => k.as_str(),
                        Some(Term::Bool(false)) => "none",
                        Some(other) => {
                            return Err(invalid!(
                                "drop_duplicates() keeps the first of equal rows \
                                 (keep='first'), the last (keep='last') or none \
                                 (keep=False), not {other}"
                            ));
                        }
                    };
                    let refs: Vec<&str> = subset.iter().map(String::as_str).collect();
                    State::Frame(f.drop_duplicates_keep(&refs, keep)?)
                }
                "nlargest" | "nsmallest" => {
                    let n = match one_arg(name, args, kwargs, "n")? {
                        Term::Num(n) if *n >= 0.0 && n.fract() == 0.0 => *n as usize,
                        other => {
                            return Err(invalid!("{name}() takes a number of rows, not {other}"));
                        }
                    };
                    let columns = kwarg(kwargs, "columns")
                        .or(args.get(1))
                        .ok_or_else(|| invalid!("{name}() needs its columns: {name}(5, 'x')"))?;
                    let columns = texts(columns, "the columns")?;
                    let refs: Vec<&str> = columns.iter().map(String::as_str).collect();
                    State::Frame(if name == "nlargest" {
                        f.nlargest(n, &refs)?
                    } else {
                        f.nsmallest(n, &refs)?
                    })
                }
                "set_index" => State::Frame(
                    f.set_index(&text(one_arg(name, args, kwargs, "keys")?, "the column")?)?,
                ),
                "rolling" => {
                    let window = text(one_arg(name, args, kwargs, "window")?, "the window")?;
                    let on = match kwarg(kwargs, "on") {
                        Some(on) => text(on, "on")?,
                        None => f.sorted_by().map(String::from).ok_or_else(|| {
                            invalid!(
                                "rolling() needs the frame ordered by time: set_index('COL') first, or rolling('1h', on='COL') after it"
                            )
                        })?,
                    };
                    State::Rolling(f.rolling(&window, &on)?, Vec::new(), f)
                }
                "head" => {
                    let n = match one_arg(name, args, kwargs, "n")? {
                        Term::Num(n) if *n >= 0.0 => *n as usize,
                        other => {
                            return Err(invalid!("head() takes a number of rows, not {other}"));
                        }
                    };
                    // Last: the shown rows; within the chain: a step of the frame.
                    if last {
                        head = Some(n);
                        State::Frame(f)
                    } else {
                        State::Frame(f.head(n)?)
                    }
                }
                "to_parquet" => {
                    let dir = text(one_arg(name, args, kwargs, "path")?, "the directory")?;
                    return Ok(QueryAction::ToParquet { frame: f, dir });
                }
                // `df.sum()`, `df.agg({...})`: aggregates of the whole frame.
                agg if agg == "agg" || agg == "aggregate" || is_aggregate(agg) => {
                    let specs =
                        aggregation(name, args, kwargs, Vec::new(), || numeric_columns(&f, &[]))?;
                    let refs: Vec<(&str, &str)> = specs
                        .iter()
                        .map(|(c, h)| (c.as_str(), h.as_str()))
                        .collect();
                    State::Frame(f.agg(&refs)?)
                }
                other => return Err(invalid!("unknown method `{other}` of a frame")),
            },
            (State::Frame(f), Link::Index(cols)) => {
                let cols = texts(cols, "the columns")?;
                let refs: Vec<&str> = cols.iter().map(String::as_str).collect();
                State::Frame(f.select(&refs)?)
            }
            // `df.x.sum()`: a column of the whole frame, waiting for its aggregate.
            (State::Frame(f), Link::Attr(a)) => State::Grouped(f.groupby(&[]), vec![a.clone()], f),
            (State::Grouped(g, _, f), Link::Attr(c)) => State::Grouped(g, vec![c.clone()], f),
            (State::Grouped(g, _, f), Link::Index(cols)) => {
                State::Grouped(g, texts(cols, "the columns")?, f)
            }
            (State::Rolling(r, _, f), Link::Attr(c)) => State::Rolling(r, vec![c.clone()], f),
            (State::Rolling(r, _, f), Link::Index(cols)) => {
                State::Rolling(r, texts(cols, "the columns")?, f)
            }
            // `df.x.nlargest(5)`: a column's largest values (pandas' Series.nlargest).
            (State::Grouped(g, cols, f), Link::Call(name, args, _))
                if g.keys().is_empty()
                    && cols.len() == 1
                    && (name == "nlargest" || name == "nsmallest") =>
            {
                let n = match args.first() {
                    Some(Term::Num(n)) if *n >= 0.0 && n.fract() == 0.0 => *n as usize,
                    Some(other) => {
                        return Err(invalid!("{name}() takes a number of rows, not {other}"));
                    }
                    None => 5,
                };
                let col = [cols[0].as_str()];
                let picked = f.select(&col)?;
                State::Frame(if name == "nlargest" {
                    picked.nlargest(n, &col)?
                } else {
                    picked.nsmallest(n, &col)?
                })
            }
            (State::Grouped(g, cols, f), Link::Call(name, args, kwargs)) => {
                let keys = g.keys().to_vec();
                let specs = aggregation(name, args, kwargs, cols, || numeric_columns(&f, &keys))?;
                let refs: Vec<(&str, &str)> = specs
                    .iter()
                    .map(|(c, h)| (c.as_str(), h.as_str()))
                    .collect();
                State::Frame(g.agg(&refs)?)
            }
            (State::Rolling(r, cols, f), Link::Call(name, args, kwargs)) => {
                let on = r.on().to_string();
                let specs = aggregation(name, args, kwargs, cols, || {
                    numeric_columns(&f, std::slice::from_ref(&on))
                })?;
                let refs: Vec<(&str, &str)> = specs
                    .iter()
                    .map(|(c, h)| (c.as_str(), h.as_str()))
                    .collect();
                State::Frame(r.agg(&refs)?)
            }
        };
    }
    match state {
        State::Frame(frame) => Ok(QueryAction::Show { frame, head }),
        State::Grouped(g, cols, _) if g.keys().is_empty() => Err(invalid!(
            "the query ends with a column ({}): aggregate it, e.g. .{}.sum(), or select columns with [[...]]",
            cols.join(", "),
            cols.first().map_or("x", String::as_str)
        )),
        State::Grouped(..) => Err(invalid!(
            "the query ends with a groupby: aggregate it, e.g. .x.sum() or .agg({{'x': 'mean'}})"
        )),
        State::Rolling(..) => Err(invalid!(
            "the query ends with a rolling window: aggregate it, e.g. .x.mean()"
        )),
    }
}

/// Whether `name` is an aggregate (`sum`, ..., `nunique`).
fn is_aggregate(name: &str) -> bool {
    How::named(name).is_some() || name == crate::dataframe::NUNIQUE
}

/// `(column, how)` pairs of `.sum()` (on `picked`, or every numeric column) or
/// `.agg({'x': 'mean', 'y': ['min', 'max']})` / `.agg('sum')` / `.agg(['sum', 'max'])`.
fn aggregation(
    name: &str,
    args: &[Term],
    kwargs: &[(String, Term)],
    picked: Vec<String>,
    all: impl Fn() -> Vec<String>,
) -> Parsed<Vec<(String, String)>> {
    let columns = if picked.is_empty() { all() } else { picked };
    let each = |hows: &[String]| -> Vec<(String, String)> {
        columns
            .iter()
            .flat_map(|c| hows.iter().map(move |h| (c.clone(), h.clone())))
            .collect()
    };
    if is_aggregate(name) {
        return Ok(each(&[name.to_string()]));
    }
    if name != "agg" && name != "aggregate" {
        let mut names: Vec<&str> = How::ALL.iter().map(|(n, _)| *n).collect();
        names.push(crate::dataframe::NUNIQUE);
        return Err(invalid!(
            "unknown aggregate `{name}` ({}, or agg)",
            names.join(", ")
        ));
    }
    match one_arg(name, args, kwargs, "func")? {
        Term::Dict(items) => {
            let mut out = Vec::new();
            for (column, hows) in items {
                for how in texts(hows, "an aggregate")? {
                    out.push((column.clone(), how));
                }
            }
            Ok(out)
        }
        t => Ok(each(&texts(t, "an aggregate")?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pandas_chains() {
        let chain =
            parse("read_csv('data/*.csv').groupby(['a', \"b\"]).x.agg({'x': ['min', 'max']})")
                .unwrap();
        assert_eq!(chain.len(), 4);
        assert_eq!(chain[2], Link::Attr("x".into()));
        let chain = parse(
            "read_csv('a.csv').merge(read_csv('b.csv'), on='k', how='left')[['k', 'v']].head(5)",
        )
        .unwrap();
        let Link::Call(name, args, kwargs) = &chain[1] else {
            panic!()
        };
        assert_eq!(name, "merge");
        assert!(matches!(args[0], Term::Chain(_)));
        assert_eq!(kwargs.len(), 2);
        assert_eq!(
            chain[3],
            Link::Call("head".into(), vec![Term::Num(5.0)], vec![])
        );
        let chain = parse("read_csv('a.csv').query('x == 1')").unwrap();
        assert_eq!(
            chain[1],
            Link::Call("query".into(), vec![Term::Str("x == 1".into())], vec![])
        );
        // True and False, not frames named so.
        let chain =
            parse("read_csv('a.csv').sort_values(['a', 'b'], ascending=[False, True])").unwrap();
        let Link::Call(_, _, kwargs) = &chain[1] else {
            panic!()
        };
        let ascending = Term::List(vec![Term::Bool(false), Term::Bool(true)]);
        assert_eq!(kwargs[0], ("ascending".to_string(), ascending));
        // Aggregates of the whole frame.
        let chain = parse("read_csv('a.csv').x.sum()").unwrap();
        assert_eq!(chain[1], Link::Attr("x".into()));
        let e = parse("read_csv('a.csv').sort_values('a', ascending=Truly)")
            .unwrap_err()
            .to_string();
        assert!(e.contains("expected `(` after `Truly`"), "{e}");
    }

    #[test]
    fn parse_errors_point_at_the_place() {
        let e = parse("read_csv('a.csv').groupby('k'")
            .unwrap_err()
            .to_string();
        assert!(e.contains("expected `)`"), "{e}");
        let e = parse("read_csv('a.csv') x").unwrap_err().to_string();
        assert!(
            e.contains("unexpected text after the query at character 19"),
            "{e}"
        );
        let e = parse("read_csv('a.csv").unwrap_err().to_string();
        assert!(e.contains("unterminated string"), "{e}");
        let deep = format!(
            "read_csv({}'a'{})",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        let e = parse(&deep).unwrap_err().to_string();
        assert!(e.contains("nests too deeply"), "{e}");
        // Spaces of any width.
        assert_eq!(
            parse("read_csv('a.csv')\u{a0}.head(1)\u{3000}")
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn syntax_errors_render_a_caret_under_the_place() {
        let e = parse_query("read_csv('a.csv').groupby('k'").unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "expected `)` at character 30 of the query\n  read_csv('a.csv').groupby('k'\n  {}^",
                " ".repeat(29)
            )
        );
        assert_eq!(e.column(), Some(30));
        let QueryError::Syntax {
            message, offset, ..
        } = &e
        else {
            panic!("{e:?}")
        };
        assert_eq!((message.as_str(), *offset), ("expected `)`", 29));
        // Counted in characters, not bytes.
        let e = parse_query("read_csv('é') x").unwrap_err();
        assert_eq!(e.column(), Some(15));
        let caret = format!("\n  read_csv('é') x\n  {}^", " ".repeat(14));
        assert!(e.to_string().ends_with(&caret), "{e}");
    }

    #[test]
    fn queries_become_frame_calls() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("a.csv");
        std::fs::write(&csv, "key,x,y\nk1,1.5,2\nk2,2.5,3\n").unwrap();
        let csv = csv.to_str().unwrap();
        let eval = |q: String| parse_query(&q).unwrap().eval();

        let action = eval(format!("read_csv('{csv}').groupby('key').x.sum().head(1)")).unwrap();
        let QueryAction::Show { frame, head } = &action else {
            panic!("{action:?}")
        };
        assert_eq!(*head, Some(1));
        let columns: Vec<&str> = frame
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        assert_eq!(columns, ["key", "x"]);
        assert_eq!(action.to_graph()["outputs"], serde_json::json!(["result"]));

        let action = eval(format!("read_csv('{csv}').to_parquet('out/')")).unwrap();
        let QueryAction::ToParquet { dir, .. } = &action else {
            panic!("{action:?}")
        };
        assert_eq!(dir, "out/");

        let e = eval(format!("read_csv('{csv}').groupby('key')")).unwrap_err();
        assert!(matches!(e, QueryError::Invalid(_)), "{e:?}");
        assert_eq!(e.column(), None);
        let e = eval(format!("read_csv('{csv}')[['z']]")).unwrap_err();
        assert!(matches!(e, QueryError::Frame(_)), "{e:?}");
        assert!(e.to_string().starts_with("no column `z`"), "{e}");
    }

    #[test]
    fn head_within_a_chain_is_a_step_and_at_the_end_the_rows_shown() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("a.csv");
        std::fs::write(&csv, "key,x\nk1,1.5\nk2,2.5\n").unwrap();
        let src = format!("read_csv('{}')", csv.display());
        let action = parse_query(&format!("{src}.sort_values('x').head(1)[['x']]"))
            .unwrap()
            .eval()
            .unwrap();
        let QueryAction::Show { frame, head } = &action else {
            panic!("a frame to show")
        };
        assert_eq!(*head, None);
        assert!(
            frame
                .to_graph()
                .to_string()
                .contains("builtin:dataframe/head")
        );
        let action = parse_query(&format!("{src}.head(1)"))
            .unwrap()
            .eval()
            .unwrap();
        let QueryAction::Show { frame, head } = &action else {
            panic!("a frame to show")
        };
        assert_eq!(*head, Some(1));
        assert!(
            !frame
                .to_graph()
                .to_string()
                .contains("builtin:dataframe/head")
        );
    }

    #[test]
    fn merge_suffixes_name_the_columns_both_sides_have() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.csv");
        std::fs::write(&a, "k,v,w\nk1,1.5,1\n").unwrap();
        let b = dir.path().join("b.csv");
        std::fs::write(&b, "k,v,w\nk1,2.5,k1\n").unwrap();
        let (a, b) = (a.display(), b.display());
        let names = |q: String| -> Result<Vec<String>, String> {
            let action = parse_query(&q)
                .map_err(|e| e.to_string())?
                .eval()
                .map_err(|e| e.to_string())?;
            let QueryAction::Show { frame, .. } = action else {
                panic!("{q}")
            };
            Ok(frame
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect())
        };
        let merge = |kwargs: &str| {
            names(format!(
                "read_csv('{a}').merge(read_csv('{b}'), on='k'{kwargs})"
            ))
        };
        assert_eq!(merge("").unwrap(), ["k", "v_x", "w_x", "v_y", "w_y"]);
        assert_eq!(
            merge(", suffixes=('', '_r')").unwrap(),
            ["k", "v", "w", "v_r", "w_r"]
        );
        assert_eq!(
            names(format!(
                "read_csv('{a}').merge(read_csv('{b}'), left_on='k', right_on='w', suffixes=['_l', '_r'])"
            ))
            .unwrap(),
            ["k_l", "v_l", "w_l", "k_r", "v_r", "w_r"]
        );
        let e = merge(", suffixes=('_a', '_a')").unwrap_err();
        assert!(e.contains("give two columns the name `v_a`"), "{e}");
        let e = merge(", suffixes='_a'").unwrap_err();
        assert!(e.contains("suffixes= takes two strings"), "{e}");
    }

    #[test]
    fn pandas_idioms_become_frame_calls() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("a.csv");
        std::fs::write(&csv, "key,x,ts\nk1,1.5,2024-01-02\nk2,2.5,2024-03-04\n").unwrap();
        let other = dir.path().join("b.csv");
        std::fs::write(&other, "code,w\nk1,1\n").unwrap();
        let (csv, other) = (csv.to_str().unwrap(), other.to_str().unwrap());
        let columns = |q: String| -> Vec<String> {
            let action = parse_query(&q).unwrap().eval().unwrap();
            let QueryAction::Show { frame, .. } = action else {
                panic!("{q}")
            };
            let schema = frame.schema().clone();
            schema
                .fields()
                .iter()
                .map(|f| format!("{}:{}", f.name(), f.data_type()))
                .collect()
        };
        let src = format!("read_csv('{csv}')");
        assert_eq!(
            columns(format!(
                "{src}.assign(y='ts.dt.year', z='x.where(key.isin([\"k1\"]), 0)')[['y', 'z']]"
            )),
            ["y:Int32", "z:Float64"]
        );
        assert_eq!(
            columns(format!("{src}.rename(columns={{'x': 'v'}})[['v']]")),
            ["v:Float64"]
        );
        assert_eq!(
            columns(format!(
                "{src}.drop_duplicates(subset='key').nlargest(1, 'x')[['x']]"
            )),
            ["x:Float64"]
        );
        assert_eq!(
            columns(format!("{src}.groupby('key').x.agg(['nunique', 'sum'])")),
            ["key:Utf8", "x_nunique:Int64", "x_sum:Float64"]
        );
        assert_eq!(columns(format!("{src}.key.nunique()")), ["key:Int64"]);
        assert_eq!(columns(format!("{src}.x.nlargest(1)")), ["x:Float64"]);
        assert_eq!(
            columns(format!(
                "{src}.merge(read_csv('{other}'), left_on='key', right_on='code', how='outer')"
            ))
            .len(),
            5
        );
        for (q, says) in [
            (".rename({'x': 'v'})", "rename() takes columns="),
            (".drop_duplicates(keep='middle')", "or none (keep=False)"),
            (".drop_duplicates(keep=True)", "keeps the first"),
            (".nlargest('x')", "takes a number of rows"),
            (".nlargest(2)", "needs its columns"),
            (".x.nuniq()", "unknown aggregate `nuniq`"),
            (
                &format!(".merge(read_csv('{other}'), left_on='key')"),
                "left_on='KEY' and right_on",
            ),
            (
                &format!(".merge(read_csv('{other}'), on='key', how='cross')"),
                "a cross merge takes no key columns",
            ),
        ] {
            let e = parse_query(&format!("{src}{q}"))
                .unwrap()
                .eval()
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{q}: {e}");
        }
    }
}
