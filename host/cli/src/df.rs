//! `fabric df`: dataframe queries for people who do not write Rust, in the pandas / Dask
//! method-chain syntax they already know:
//!
//! ```text
//! fabric df "read_csv('data/*.csv').groupby('key').x.sum()"
//! fabric df "read_parquet('s3://bucket/events/').query('x > 10').groupby('key').agg({'x': 'mean', 'y': 'max'})"
//! fabric df "read_csv('events/*.csv').merge(read_csv('keys.csv'), on='key').groupby('region').x.count()"
//! fabric df "read_csv('ticks/*.csv').set_index('ts').rolling('1h').price.mean()"
//! ```
//!
//! The chain is parsed here into fabric-client `DataFrame` calls; the graph they build runs
//! in this process (the default) or on a cluster (`--scheduler`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Args;
use fabric_client::{Client, DataFrame, GroupBy, RecordBatch, Rolling};
use fabric_core::{Datasets, GraphSpec, PlanConfig};
use fabric_frame::groupby::How;
use fabric_local::LocalConfig;
use fabric_runtime::{Limits, Runtime, RuntimeConfig};
use serde_json::Value as Json;

use crate::load::{LoadError, load_spec};
use crate::run::{INVALID_GRAPH, RuntimeArgs, TASKS_FAILED};

/// `fabric df`.
#[derive(Args)]
pub struct DfArgs {
    /// The query: `read_csv('PATTERN')` or `read_parquet('PATTERN')` followed by methods:
    /// .query('EXPR') .assign(NAME='EXPR') [['COL', ...]] .groupby('KEY' | ['K1', 'K2'])
    /// then .COL or [['COL', ...]] and .sum() .mean() .min() .max() .count() .std() .var()
    /// or .agg({'COL': 'HOW' | ['HOW', ...]}); .merge(OTHER, on='KEY', how='inner'|'left');
    /// .sort_values('COL'); .set_index('COL'); .rolling('1h' [, on='COL']).COL.mean();
    /// .head(N); .to_parquet('DIR').
    query: String,
    /// Run on this cluster instead of in this process.
    #[arg(long, env = "FABRIC_SCHEDULER", value_name = "URL")]
    scheduler: Option<String>,
    /// Print the result as CSV instead of a table.
    #[arg(long)]
    csv: bool,
    /// Rows of the result to print as a table (all of them with --csv).
    #[arg(long, value_name = "N", default_value_t = 20)]
    rows: usize,
    /// Print the graph (JSON, for `fabric run`/`fabric submit`) instead of running it.
    #[arg(long)]
    graph: bool,
    /// The tenant the job runs for.
    #[arg(long, default_value = "default")]
    tenant: String,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

// ---------------------------------------------------------------------------------------
// Parsing.

/// A parsed value of the chain.
#[derive(Clone, Debug, PartialEq)]
enum Term {
    Str(String),
    Num(f64),
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

impl Parser<'_> {
    fn error(&self, what: &str) -> anyhow::Error {
        let col = self.text[..self.at].chars().count() + 1;
        anyhow::anyhow!(
            "{what} at character {col} of the query\n  {}\n  {}^",
            self.text,
            " ".repeat(col - 1)
        )
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

    fn expect(&mut self, c: char) -> Result<()> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(self.error(&format!("expected `{c}`")))
        }
    }

    fn ident(&mut self) -> Result<String> {
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

    fn string(&mut self) -> Result<String> {
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

    fn term(&mut self) -> Result<Term> {
        if self.depth >= 64 {
            return Err(self.error("the query nests too deeply"));
        }
        self.depth += 1;
        let term = self.term_inner();
        self.depth -= 1;
        term
    }

    fn term_inner(&mut self) -> Result<Term> {
        match self.peek() {
            Some('\'' | '"') => Ok(Term::Str(self.string()?)),
            Some('[') => {
                self.at += 1;
                let mut items = Vec::new();
                while !self.eat(']') {
                    items.push(self.term()?);
                    if !self.eat(',') {
                        self.expect(']')?;
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
            Some(_) => self.chain().map(Term::Chain),
            None => Err(self.error("the query ends early")),
        }
    }

    /// `name(args)` then `.name(args)`, `.name`, `[...]`.
    fn chain(&mut self) -> Result<Vec<Link>> {
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

    fn call_or_attr(&mut self, first: bool) -> Result<Link> {
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

fn parse(text: &str) -> Result<Vec<Link>> {
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

/// What the query does at the end.
enum Action {
    Show {
        frame: DataFrame,
        head: Option<usize>,
    },
    ToParquet {
        frame: DataFrame,
        dir: String,
    },
}

fn text(t: &Term, what: &str) -> Result<String> {
    match t {
        Term::Str(s) => Ok(s.clone()),
        other => bail!("{what} must be a quoted string, not {other}"),
    }
}

fn texts(t: &Term, what: &str) -> Result<Vec<String>> {
    match t {
        Term::Str(s) => Ok(vec![s.clone()]),
        Term::List(items) => items.iter().map(|i| text(i, what)).collect(),
        other => bail!("{what} must be a string or a list of strings, not {other}"),
    }
}

fn one_arg<'a>(
    name: &str,
    args: &'a [Term],
    kwargs: &'a [(String, Term)],
    key: &str,
) -> Result<&'a Term> {
    if let Some((_, v)) = kwargs.iter().find(|(k, _)| k == key) {
        return Ok(v);
    }
    args.first()
        .with_context(|| format!("{name}() needs its {key}"))
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

fn eval(chain: &[Link]) -> Result<Action> {
    let Some(Link::Call(source, args, kwargs)) = chain.first() else {
        bail!("a query starts with read_csv('...') or read_parquet('...')");
    };
    let pattern = text(one_arg(source, args, kwargs, "path")?, "the path")?;
    let frame = match source.as_str() {
        "read_csv" => DataFrame::read_csv(&pattern)?,
        "read_parquet" => DataFrame::read_parquet(&pattern)?,
        other => bail!("unknown source `{other}` (read_csv or read_parquet)"),
    };
    let mut state = State::Frame(frame);
    let mut head = None;
    for link in &chain[1..] {
        state = match (state, link) {
            (State::Frame(f), Link::Call(name, args, kwargs)) => match name.as_str() {
                "query" | "filter" => State::Frame(f.filter(&text(
                    one_arg(name, args, kwargs, "expression")?,
                    "the expression",
                )?)?),
                "assign" => {
                    if kwargs.is_empty() {
                        bail!("assign() takes NAME='EXPRESSION' arguments");
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
                        bail!(
                            "{name}() takes another frame first: {name}(read_csv('...'), on='key')"
                        );
                    };
                    let other = match eval(other)? {
                        Action::Show { frame, head: None } => frame,
                        _ => bail!(
                            "the frame given to {name}() cannot end with head() or to_parquet()"
                        ),
                    };
                    let on = texts(kwarg(kwargs, "on").context("merge() needs on='KEY'")?, "on")?;
                    let how = kwarg(kwargs, "how").map(|h| text(h, "how")).transpose()?;
                    let refs: Vec<&str> = on.iter().map(String::as_str).collect();
                    State::Frame(f.join(&other, &refs, how.as_deref().unwrap_or("inner"))?)
                }
                "sort_values" => State::Frame(
                    f.sort_values(&text(one_arg(name, args, kwargs, "by")?, "the column")?)?,
                ),
                "set_index" => State::Frame(
                    f.set_index(&text(one_arg(name, args, kwargs, "keys")?, "the column")?)?,
                ),
                "rolling" => {
                    let window = text(one_arg(name, args, kwargs, "window")?, "the window")?;
                    let on = match kwarg(kwargs, "on") {
                        Some(on) => text(on, "on")?,
                        None => f.sorted_by().map(String::from).context(
                            "rolling() needs the frame ordered by time: set_index('COL') first, or rolling('1h', on='COL') after it",
                        )?,
                    };
                    State::Rolling(f.rolling(&window, &on)?, Vec::new(), f)
                }
                "head" => {
                    let n = match one_arg(name, args, kwargs, "n")? {
                        Term::Num(n) if *n >= 0.0 => *n as usize,
                        other => bail!("head() takes a number of rows, not {other}"),
                    };
                    head = Some(n);
                    State::Frame(f)
                }
                "to_parquet" => {
                    let dir = text(one_arg(name, args, kwargs, "path")?, "the directory")?;
                    return Ok(Action::ToParquet { frame: f, dir });
                }
                other => bail!("unknown method `{other}` of a frame"),
            },
            (State::Frame(f), Link::Index(cols)) => {
                let cols = texts(cols, "the columns")?;
                let refs: Vec<&str> = cols.iter().map(String::as_str).collect();
                State::Frame(f.select(&refs)?)
            }
            (State::Frame(_), Link::Attr(a)) => {
                bail!(
                    "`.{a}` picks a column only after groupby() or rolling(); use [['{a}']] to select it"
                )
            }
            (State::Grouped(g, _, f), Link::Attr(c)) => State::Grouped(g, vec![c.clone()], f),
            (State::Grouped(g, _, f), Link::Index(cols)) => {
                State::Grouped(g, texts(cols, "the columns")?, f)
            }
            (State::Rolling(r, _, f), Link::Attr(c)) => State::Rolling(r, vec![c.clone()], f),
            (State::Rolling(r, _, f), Link::Index(cols)) => {
                State::Rolling(r, texts(cols, "the columns")?, f)
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
        State::Frame(frame) => Ok(Action::Show { frame, head }),
        State::Grouped(..) => bail!(
            "the query ends with a groupby: aggregate it, e.g. .x.sum() or .agg({{'x': 'mean'}})"
        ),
        State::Rolling(..) => {
            bail!("the query ends with a rolling window: aggregate it, e.g. .x.mean()")
        }
    }
}

/// `(column, how)` pairs of `.sum()` (on `picked`, or every numeric column) or
/// `.agg({'x': 'mean', 'y': ['min', 'max']})` / `.agg('sum')` / `.agg(['sum', 'max'])`.
fn aggregation(
    name: &str,
    args: &[Term],
    kwargs: &[(String, Term)],
    picked: Vec<String>,
    all: impl Fn() -> Vec<String>,
) -> Result<Vec<(String, String)>> {
    let columns = if picked.is_empty() { all() } else { picked };
    let each = |hows: &[String]| -> Vec<(String, String)> {
        columns
            .iter()
            .flat_map(|c| hows.iter().map(move |h| (c.clone(), h.clone())))
            .collect()
    };
    if How::named(name).is_some() {
        return Ok(each(&[name.to_string()]));
    }
    if name != "agg" && name != "aggregate" {
        let names: Vec<&str> = How::ALL.iter().map(|(n, _)| *n).collect();
        bail!("unknown aggregate `{name}` ({}, or agg)", names.join(", "));
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

// ---------------------------------------------------------------------------------------
// Running.

pub fn df(a: DfArgs) -> Result<ExitCode> {
    let chain = parse(&a.query)?;
    let action = eval(&chain)?;
    let graph = match &action {
        Action::Show { frame, .. } => frame.to_graph(),
        Action::ToParquet { frame, dir } => frame.to_parquet_graph(dir),
    };
    if a.graph {
        println!("{}", serde_json::to_string_pretty(&graph)?);
        return Ok(ExitCode::SUCCESS);
    }
    let outputs = match &a.scheduler {
        Some(url) => remote(url, &graph, &a.tenant)?,
        None => local(&a, &graph)?,
    };
    let outputs = match outputs {
        Ok(outputs) => outputs,
        Err(code) => return Ok(code),
    };
    match action {
        Action::ToParquet { dir, .. } => {
            let rows: u64 = outputs
                .values()
                .filter_map(|v| match v {
                    fabric_core::Value::U64(n) => Some(*n),
                    _ => None,
                })
                .sum();
            println!("wrote {rows} rows in {} files under {dir}", outputs.len());
        }
        Action::Show { head, .. } => {
            let value = outputs.get("result").context("the job returned no frame")?;
            let mut batch = fabric_client::decode_frame(value)?;
            if let Some(n) = head {
                batch = batch.slice(0, n.min(batch.num_rows()));
            }
            print(&batch, a.csv, a.rows)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print(batch: &RecordBatch, csv: bool, rows: usize) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if csv {
        fabric_client::write_csv(&mut out, batch)?;
    } else {
        use std::io::Write;
        out.write_all(fabric_client::pretty(batch, rows).as_bytes())?;
    }
    Ok(())
}

type Outputs = BTreeMap<String, fabric_core::Value>;

/// Runs the graph in this process; its outputs, or the exit code of a failure (reported).
fn local(a: &DfArgs, graph: &Json) -> Result<Result<Outputs, ExitCode>> {
    let limits = Limits::default();
    let runtime = Runtime::new(RuntimeConfig {
        ..a.runtime.config(limits)
    })
    .context("cannot start the runtime")?;
    let spec =
        GraphSpec::from_json(&graph.to_string()).context("the query made an invalid graph")?;
    let loaded = match load_spec(
        &runtime,
        spec,
        Path::new("."),
        &Datasets::new(),
        PlanConfig::default(),
    ) {
        Ok(l) => l,
        Err(LoadError::Invalid(report)) => {
            eprintln!("error: {report}");
            return Ok(Err(ExitCode::from(INVALID_GRAPH)));
        }
        Err(LoadError::Io(e)) => return Err(e),
    };
    let config = LocalConfig {
        limits,
        tenant: a.tenant.clone(),
        ..LocalConfig::default()
    };
    let report = fabric_local::run(&runtime, loaded.plan, loaded.components, &config, |_| {});
    if !report.succeeded() {
        for f in &report.failures {
            eprintln!("error: task `{}` ({}) failed: {}", f.task, f.call, f.error);
        }
        return Ok(Err(ExitCode::from(TASKS_FAILED)));
    }
    Ok(Ok(report.outputs.into_iter().collect()))
}

/// Runs the graph on a cluster.
fn remote(url: &str, graph: &Json, tenant: &str) -> Result<Result<Outputs, ExitCode>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let client = Client::connect(url).await?;
        let mut submission = fabric_client::Submission::new(graph.to_string(), Vec::new());
        submission.tenant = tenant.to_string();
        let outcome = client.compute(&submission, |_| {}).await?;
        if !outcome.succeeded() {
            for f in &outcome.failures {
                let message = f.error.as_ref().map_or("", |e| e.message.as_str());
                eprintln!("error: task `{}` ({}) failed: {message}", f.task_id, f.call);
            }
            return Ok(Err(ExitCode::from(TASKS_FAILED)));
        }
        Ok(Ok(outcome.outputs.into_iter().collect()))
    })
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
}
