//! `fabric build`: turns a guest project into a task component, whatever its language —
//! Rust (cargo, wasm32-wasip2), Python (componentize-py) or JavaScript (componentize-js) —
//! and checks that the component exports every function its world declares.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use fabric_runtime::Limits;

use crate::run::RuntimeArgs;

/// Fabric's guest contract, put beside a Python or JavaScript project's world as its
/// dependency.
const TASK_WIT: &str = include_str!("../../../wit/fabric-task.wit");

/// `fabric build`.
#[derive(Args)]
pub struct BuildArgs {
    /// The guest project: a Cargo crate (Rust), or a directory with one Python module
    /// (`app.py`, or the only `.py` file) or one JavaScript module (`app.js`, or the only
    /// `.js`/`.mjs` file) beside a `wit/` folder whose world includes
    /// `fabric:task/task@0.1.0`.
    dir: PathBuf,
    /// Where to write the component [default: DIR/WORLD.wasm for Python and JavaScript,
    /// cargo's output for Rust].
    #[arg(long, short = 'o', value_name = "FILE")]
    out: Option<PathBuf>,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

/// A guest project's language.
#[derive(Debug, PartialEq)]
enum Language {
    Rust,
    /// The module to build (a file stem).
    Python(String),
    /// The module to build (a file name).
    JavaScript(String),
}

impl std::fmt::Display for Language {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Language::Rust => f.write_str("Rust"),
            Language::Python(module) => write!(f, "Python module {module}"),
            Language::JavaScript(module) => write!(f, "JavaScript module {module}"),
        }
    }
}

/// Which language a project is written in, from its files.
fn detect(dir: &Path) -> Result<Language> {
    if dir.join("Cargo.toml").is_file() {
        return Ok(Language::Rust);
    }
    let mut python = Vec::new();
    let mut js = Vec::new();
    for entry in std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .flatten()
    {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if name.starts_with(['_', '.']) || !entry.path().is_file() {
            continue;
        }
        if let Some(stem) = name.strip_suffix(".py") {
            python.push(stem.to_string());
        } else if name.ends_with(".js") || name.ends_with(".mjs") {
            js.push(name);
        }
    }
    python.sort();
    js.sort();
    match (python.as_slice(), js.as_slice()) {
        ([], []) => bail!(
            "cannot tell the language of {}: expected a Cargo.toml (Rust), or a Python or \
            JavaScript module beside a wit/ folder",
            dir.display()
        ),
        ([_, ..], [_, ..]) => bail!(
            "{} has both Python ({}) and JavaScript ({}) modules: keep one language per project",
            dir.display(),
            python.join(", "),
            js.join(", ")
        ),
        (modules, []) => pick(dir, modules, "app", "app.py", "Python").map(Language::Python),
        ([], modules) => {
            pick(dir, modules, "app.js", "app.js", "JavaScript").map(Language::JavaScript)
        }
    }
}

/// The module to build among a project's `modules`: the only one, or `main` (the module of
/// file `main_file`).
fn pick(
    dir: &Path,
    modules: &[String],
    main: &str,
    main_file: &str,
    language: &str,
) -> Result<String> {
    match modules {
        [one] => Ok(one.clone()),
        many if many.iter().any(|m| m == main) => Ok(main.to_string()),
        many => bail!(
            "{} has several {language} modules ({}): name the one with the task's exports \
            {main_file}",
            dir.display(),
            many.join(", "),
        ),
    }
}

/// The world a project's `wit/` folder defines, and the functions it exports.
struct World {
    name: String,
    exports: Vec<String>,
}

/// Reads the world of `wit_dir` (its `.wit` files, not `deps/`): exactly one.
fn world(wit_dir: &Path) -> Result<World> {
    let mut worlds = Vec::new();
    let entries = std::fs::read_dir(wit_dir).with_context(|| {
        format!(
            "cannot read {} (a task needs its world in a wit/ folder)",
            wit_dir.display()
        )
    })?;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "wit") {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let mut current: Option<World> = None;
        for line in text.lines().map(str::trim) {
            if let Some(rest) = line.strip_prefix("world ") {
                let name = rest.trim_end_matches('{').trim().to_string();
                if let Some(done) = current.replace(World {
                    name,
                    exports: Vec::new(),
                }) {
                    worlds.push(done);
                }
            } else if let (Some(w), Some(rest)) = (current.as_mut(), line.strip_prefix("export "))
                && let Some((name, _)) = rest.split_once(':')
                && rest.contains("func(")
            {
                w.exports.push(name.trim().to_string());
            }
        }
        worlds.extend(current);
    }
    match worlds.len() {
        1 => Ok(worlds.pop().expect("one")),
        0 => bail!("no world in {}", wit_dir.display()),
        n => bail!(
            "{n} worlds in {}: keep the task's world alone there",
            wit_dir.display()
        ),
    }
}

/// A componentizer: the tool that turns a project in another language into a component.
struct Tool {
    /// Its executable's name.
    name: &'static str,
    /// The variable that names its executable.
    env: &'static str,
    /// Where in a project it may be installed (besides the PATH).
    local: Option<&'static str>,
    /// How to install it.
    install: &'static str,
    /// Its arguments for a build.
    args: fn(&Job) -> Vec<OsString>,
}

/// What a componentizer is asked to build.
struct Job<'a> {
    /// The project (the tool runs there).
    dir: &'a Path,
    /// The module with the exports.
    module: &'a str,
    /// The world's folder, Fabric's contract beside it.
    wit: &'a Path,
    /// The world's name.
    world: &'a str,
    /// The component to write.
    out: &'a Path,
}

/// Arguments from a list of strings and paths.
fn os_args<const N: usize>(args: [&OsStr; N]) -> Vec<OsString> {
    args.into_iter().map(OsStr::to_os_string).collect()
}

const COMPONENTIZE_PY: Tool = Tool {
    name: "componentize-py",
    env: "FABRIC_COMPONENTIZE_PY",
    local: None,
    install: "install it with `pip install componentize-py` (0.25 or later)",
    args: |j| {
        os_args([
            "-d".as_ref(),
            j.wit.as_os_str(),
            "-w".as_ref(),
            j.world.as_ref(),
            "componentize".as_ref(),
            j.module.as_ref(),
            "-p".as_ref(),
            j.dir.as_os_str(),
            "-o".as_ref(),
            j.out.as_os_str(),
        ])
    },
};

const COMPONENTIZE_JS: Tool = Tool {
    name: "componentize-js",
    env: "FABRIC_COMPONENTIZE_JS",
    local: Some("node_modules/.bin/componentize-js"),
    install: "install it in the project with `npm install --save-dev \
             @bytecodealliance/componentize-js@0.23` (Node.js 20 or later)",
    // The tool runs in the project, so stack traces name its files as the author knows
    // them; without the HTTP features (tasks serve no HTTP) the component imports no
    // wasi:http, which Fabric does not offer.
    args: |j| {
        os_args([
            j.module.as_ref(),
            "--wit".as_ref(),
            j.wit.as_os_str(),
            "--world-name".as_ref(),
            j.world.as_ref(),
            "--disable".as_ref(),
            "http".as_ref(),
            "fetch-event".as_ref(),
            "-o".as_ref(),
            j.out.as_os_str(),
        ])
    },
};

impl Tool {
    /// The executable to run: the variable's, else the project's own, else the PATH's.
    fn find(&self, project: &Path) -> Result<PathBuf> {
        if let Some(path) = std::env::var_os(self.env) {
            let path = PathBuf::from(path);
            if path.is_file() {
                return Ok(path);
            }
            bail!("{} is {}, which does not exist", self.env, path.display());
        }
        let local = self.local.map(|l| project.join(l)).filter(|p| p.is_file());
        let on_path = || {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|p| p.join(self.name))
                    .find(|p| p.is_file())
            })
        };
        local.or_else(on_path).ok_or_else(|| {
            anyhow::anyhow!(
                "{} was not found: {}, or set {} to its path",
                self.name,
                self.install,
                self.env
            )
        })
    }

    /// Runs the tool in `dir` with `args`; its output is the error if it fails.
    fn run(&self, path: &Path, dir: &Path, args: &[OsString]) -> Result<()> {
        let output = Command::new(path)
            .current_dir(dir)
            .args(args)
            .output()
            .with_context(|| {
                format!(
                    "cannot run {} ({}){}",
                    path.display(),
                    self.name,
                    if self.local.is_some() {
                        "; is Node.js installed?"
                    } else {
                        ""
                    }
                )
            })?;
        if !output.status.success() {
            bail!(
                "{} failed ({}):\n{}{}",
                self.name,
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }
}

/// A copy of a project's world (`DIR/wit/*.wit`) with Fabric's contract as its dependency,
/// as componentizers want it.
fn world_with_contract(dir: &Path) -> Result<tempfile::TempDir> {
    let wit = tempfile::tempdir().context("cannot create a temporary directory")?;
    for entry in std::fs::read_dir(dir.join("wit"))?.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "wit") {
            std::fs::copy(&path, wit.path().join(entry.file_name()))?;
        }
    }
    let deps = wit.path().join("deps").join("fabric-task");
    std::fs::create_dir_all(&deps)?;
    std::fs::write(deps.join("fabric-task.wit"), TASK_WIT)?;
    Ok(wit)
}

/// Builds a Python or JavaScript project's `module` with its componentizer; returns the
/// component's path.
fn componentize(
    tool: &Tool,
    dir: &Path,
    module: &str,
    out: Option<PathBuf>,
) -> Result<(PathBuf, World)> {
    let world = world(&dir.join("wit"))?;
    let path = tool.find(dir)?;
    let wit = world_with_contract(dir)?;
    let out = out.unwrap_or_else(|| dir.join(format!("{}.wasm", world.name)));
    let args = (tool.args)(&Job {
        dir,
        module,
        wit: wit.path(),
        world: &world.name,
        out: &out,
    });
    tool.run(&path, dir, &args)
        .map_err(|e| explain_symbol_clash(e, &world))?;
    Ok((out, world))
}

/// Functions of the C library (and its math library) that a guest language's runtime links,
/// separated by spaces: a world-level export of the same name clashes with them when the
/// componentizer links the component.
const C_LIBRARY_FUNCTIONS: &str = "\
    abort abs access acos alarm asin atan atan2 atexit atof atoi atol bind bsearch calloc \
    cbrt ceil chdir chmod chown clock close closedir connect copysign cos cosh ctime \
    difftime div dup dup2 erf erfc execv exit exp exp2 expm1 fabs fclose fdim fflush fgets \
    floor fma fmax fmin fmod fopen fork fprintf fputs fread free frexp fscanf fseek fstat \
    fsync ftell fwrite getc getchar getcwd getenv getpid gets gmtime hypot ilogb index \
    isalnum isalpha isatty isdigit islower isspace isupper kill labs ldexp lgamma link \
    listen llabs llround localtime log log10 log1p log2 logb longjmp lround lseek lstat \
    malloc memchr memcmp memcpy memmove memset mkdir mktime modf nan nearbyint nextafter \
    open opendir pause perror pipe poll pow printf putc putchar puts qsort raise rand read \
    readdir readlink realloc realpath recv remainder remove rename rewind rint rmdir round \
    scalbn scanf select send setenv setjmp shutdown signal sin sinh sleep snprintf socket \
    sprintf sqrt srand sscanf stat strcat strchr strcmp strcpy strdup strerror strlen \
    strncmp strncpy strstr strtod strtol symlink sync system tan tanh tgamma time times \
    tmpfile tolower toupper trunc truncate umask uname ungetc unlink unsetenv usleep utime \
    wait waitpid write";

/// A componentizer that panics with "duplicate items" is linking two definitions of one
/// core symbol: a world-level export named like a C library function. Says which export.
fn explain_symbol_clash(error: anyhow::Error, world: &World) -> anyhow::Error {
    if !format!("{error:#}").contains("duplicate items detected") {
        return error;
    }
    let clashing: Vec<&str> = world
        .exports
        .iter()
        .map(String::as_str)
        .filter(|e| C_LIBRARY_FUNCTIONS.split_whitespace().any(|f| f == *e))
        .collect();
    let culprits = if clashing.is_empty() {
        // Not one we know by name: any export without a dash may be it.
        let single: Vec<&str> = world
            .exports
            .iter()
            .map(String::as_str)
            .filter(|e| !e.contains('-'))
            .collect();
        format!("one of the exports {}", quoted(&single))
    } else {
        format!("the export {}", quoted(&clashing))
    };
    anyhow::anyhow!(
        "{culprits} of world `{}` has the name of a C library function that the language's \
        runtime links, and a world-level export keeps its name as its core symbol: rename it \
        in the world and the module (a name with a dash, such as `abs-value`, cannot clash)\n\
         (the componentizer said: duplicate items detected while linking)",
        world.name
    )
}

/// `a`, `b` and `c` as `` `a`, `b`, `c` ``.
fn quoted(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Builds a Rust crate for wasm32-wasip2 with cargo; returns the component's path.
fn build_rust(dir: &Path, out: Option<PathBuf>) -> Result<(PathBuf, World)> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .current_dir(dir)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--message-format=json-render-diagnostics",
        ])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("cannot run cargo")?;
    if !output.status.success() {
        bail!(
            "cargo build failed ({}); is the target installed? \
            (rustup target add wasm32-wasip2)",
            output.status
        );
    }
    // The component is the artifact of the crate in `dir` that ends in `.wasm`.
    let manifest = std::fs::canonicalize(dir.join("Cargo.toml"))?;
    let built = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .filter(|m| {
            m["manifest_path"]
                .as_str()
                .and_then(|p| std::fs::canonicalize(p).ok())
                .is_some_and(|p| p == manifest)
        })
        .flat_map(|m| {
            m["filenames"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|f| f.as_str().map(PathBuf::from))
        })
        .find(|f| f.extension().is_some_and(|e| e == "wasm"))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "cargo built no .wasm for {} (is it a `cdylib` crate?)",
                dir.display()
            )
        })?;
    let world = world(&dir.join("wit")).unwrap_or(World {
        name: String::new(),
        exports: Vec::new(),
    });
    match out {
        Some(out) => {
            std::fs::copy(&built, &out)
                .with_context(|| format!("cannot write {}", out.display()))?;
            Ok((out, world))
        }
        None => Ok((built, world)),
    }
}

pub fn build(a: BuildArgs) -> Result<ExitCode> {
    let start = Instant::now();
    // Tools run in the project: paths given relative to here must not change meaning.
    let dir = std::path::absolute(&a.dir)
        .with_context(|| format!("cannot resolve {}", a.dir.display()))?;
    let out = a.out.map(std::path::absolute).transpose()?;
    let language = detect(&dir)?;
    let (out, world) = match &language {
        Language::Rust => build_rust(&dir, out)?,
        Language::Python(module) => componentize(&COMPONENTIZE_PY, &dir, module, out)?,
        Language::JavaScript(module) => componentize(&COMPONENTIZE_JS, &dir, module, out)?,
    };
    // The component loads (and is compiled into the cache) and exports its world.
    let runtime = a.runtime.runtime(Limits::default())?;
    let component = runtime
        .load_file(&out)
        .with_context(|| format!("the built component {} does not load", out.display()))?;
    let exports = component.exports();
    let missing: Vec<&str> = world
        .exports
        .iter()
        .map(String::as_str)
        .filter(|name| !exports.contains_key(*name))
        .collect();
    if !missing.is_empty() {
        bail!(
            "{} does not export {} that its world `{}` declares",
            out.display(),
            missing.join(", "),
            world.name
        );
    }
    let names: Vec<&str> = exports.keys().map(String::as_str).collect();
    eprintln!(
        "built {} ({}, {:.1} MB, {:.1} s): {}",
        out.display(),
        language,
        std::fs::metadata(&out).map_or(0.0, |m| m.len() as f64 / 1e6),
        start.elapsed().as_secs_f64(),
        names.join(", ")
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_world_and_its_exports() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("w.wit"),
            "package a:b;\n\nworld things {\n    include fabric:task/task@0.1.0;\n    \
            /// doc\n    export inc: func(x: s64) -> s64;\n    export safe-div: func(a: s64, \
            b: s64) -> result<s64, string>;\n    export an-interface;\n}\n",
        )
        .unwrap();
        let w = world(dir.path()).unwrap();
        assert_eq!(w.name, "things");
        assert_eq!(w.exports, ["inc", "safe-div"]);
    }

    #[test]
    fn names_an_export_that_clashes_with_the_c_library() {
        let world = World {
            name: "tools".into(),
            exports: vec!["inc".into(), "abs".into(), "safe-div".into()],
        };
        let panic = anyhow::anyhow!(
            "componentize-py failed: one or more duplicate items detected when collecting"
        );
        let e = explain_symbol_clash(panic, &world).to_string();
        assert!(e.starts_with("the export `abs` of world `tools`"), "{e}");
        assert!(e.contains("rename it"), "{e}");
        // An unknown clash names every export that could be it.
        let world = World {
            name: "tools".into(),
            exports: vec!["frobnicate".into(), "safe-div".into()],
        };
        let panic = anyhow::anyhow!("duplicate items detected");
        let e = explain_symbol_clash(panic, &world).to_string();
        assert!(e.starts_with("one of the exports `frobnicate` of"), "{e}");
        // Other failures pass unchanged.
        let other = anyhow::anyhow!("componentize-py failed: syntax error");
        assert_eq!(
            explain_symbol_clash(other, &world).to_string(),
            "componentize-py failed: syntax error"
        );
    }

    #[test]
    fn tells_languages_apart() {
        let dir = tempfile::tempdir().unwrap();
        assert!(detect(dir.path()).is_err());
        std::fs::write(dir.path().join("tasks.py"), "").unwrap();
        std::fs::write(dir.path().join("_helpers.py"), "").unwrap();
        assert_eq!(
            detect(dir.path()).unwrap(),
            Language::Python("tasks".into())
        );
        std::fs::write(dir.path().join("other.py"), "").unwrap();
        let e = detect(dir.path()).unwrap_err().to_string();
        assert!(e.contains("several Python modules (other, tasks)"), "{e}");
        std::fs::write(dir.path().join("app.js"), "").unwrap();
        let e = detect(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("both Python (other, tasks) and JavaScript (app.js)"),
            "{e}"
        );
        std::fs::write(dir.path().join("Cargo.toml"), "").unwrap();
        assert_eq!(detect(dir.path()).unwrap(), Language::Rust);

        let js = tempfile::tempdir().unwrap();
        std::fs::write(js.path().join("tasks.mjs"), "").unwrap();
        std::fs::create_dir(js.path().join("lib.js")).unwrap();
        assert_eq!(
            detect(js.path()).unwrap(),
            Language::JavaScript("tasks.mjs".into())
        );
        std::fs::write(js.path().join("util.js"), "").unwrap();
        let e = detect(js.path()).unwrap_err().to_string();
        assert!(
            e.contains("several JavaScript modules (tasks.mjs, util.js)"),
            "{e}"
        );
        std::fs::write(js.path().join("app.js"), "").unwrap();
        assert_eq!(
            detect(js.path()).unwrap(),
            Language::JavaScript("app.js".into())
        );
    }
}
