//! The `fabric` command: run type-checked graphs of WebAssembly tasks.

mod admin;
mod args;
mod build;
mod ca;
mod cluster;
mod deploy;
mod df;
mod load;
mod run;
mod scheduler_file;
mod telemetry;
mod top;
mod usage;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Many small, short-lived allocations (values, messages): mimalloc is markedly faster than
/// the system allocator here (see bench/RESULTS.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Fabric runs graphs of WebAssembly tasks: every task is a call of a component's export,
/// type-checked against its WIT signature before anything runs, sandboxed while it runs.
#[derive(Parser)]
#[command(name = "fabric", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate, optimize and run a graph on this machine; print its outputs as JSON.
    Run(run::RunArgs),
    /// Validate a graph and show what would run, without running it.
    Check(run::CheckArgs),
    /// List the exports of a component with their WIT signatures (read from its bytes; nothing
    /// is compiled).
    Exports(run::ExportsArgs),
    /// Run a dataframe query written as in pandas, here or on a cluster:
    /// fabric df "read_csv('data/*.csv').groupby('key').x.sum()"
    Df(df::DfArgs),
    /// Build a guest project (Rust, Python or JavaScript) into a task component and check its exports.
    Build(build::BuildArgs),
    /// Run a scheduler: serves clients (`fabric submit`) and workers (`fabric worker`).
    Scheduler(Box<cluster::SchedulerArgs>),
    /// Run a worker: registers with a scheduler, runs tasks, serves their results to peers.
    Worker(Box<cluster::WorkerArgs>),
    /// Validate a graph here, then run it on a cluster; print its outputs as JSON.
    Submit(cluster::SubmitArgs),
    /// Wait for a job submitted with `--detach` and print its outputs.
    Result(cluster::ResultArgs),
    /// Cancel a job: tasks not started never run, its values are dropped.
    Cancel(cluster::CancelArgs),
    /// Show the cluster's workers and jobs.
    Status(cluster::StatusArgs),
    /// Retire workers gracefully (operators): they take no new tasks, finish what they run,
    /// hand the values only they hold to other workers, then exit; nothing is recomputed.
    Retire(cluster::RetireArgs),
    /// Ask for at least N workers for a while, for your tenant (a scheduler with --adapt
    /// starts them; granted within your quota).
    Scale(cluster::ScaleArgs),
    /// Show adaptive scaling: bounds, target, workers coming, floors, allocations.
    Pool(cluster::PoolArgs),
    /// Print the link that opens the scheduler's dashboard in a browser, signed in as you.
    Dashboard(cluster::DashboardArgs),
    /// Print what a task printed and logged (kept by the scheduler, also after its worker
    /// is gone), and its failed attempts: fabric logs JOB TASK.
    Logs(cluster::TaskArgs),
    /// Say where a task is and why it does not run (inputs not computed, resources no
    /// worker offers, paused workers, a quota, busy threads): fabric explain JOB TASK.
    Explain(cluster::TaskArgs),
    /// Write a job's report, one HTML file that opens offline (task stream, durations by
    /// call and worker, failures): fabric report JOB -o report.html [--journal DIR].
    Report(cluster::ReportArgs),
    /// Show the cluster in the terminal, refreshed every second (workers, units per second,
    /// jobs' progress, tenants): the dashboard for a cluster without a browser.
    Top(top::TopArgs),
    /// List the persisted datasets (`fabric submit --persist NAME`).
    Datasets(cluster::StatusArgs),
    /// Show what jobs used: thread-hours, gpu-hours, stored GB-hours, bytes moved, per
    /// tenant or per job (your own as a member, your tenant's as its admin, all as operator).
    Usage(usage::UsageArgs),
    /// Drop a persisted dataset from the workers' memory.
    Forget(cluster::ForgetArgs),
    /// Let another tenant read one of your datasets (or stop, with --revoke).
    Share(cluster::ShareArgs),
    /// Manage tenants and tokens (operators; tenant-admins for their members' tokens).
    Admin(admin::AdminArgs),
    /// Show who the scheduler takes you for: tenant, name and role.
    Whoami(admin::WhoamiArgs),
    /// The cluster's certificate authority (for TLS): fabric ca init.
    Ca(ca::CaArgs),
    /// Certificates for schedulers, workers and clients, signed by the cluster's CA.
    Cert(ca::CertArgs),
    /// Deploy workers: `fabric deploy script slurm|pbs|sge|lsf` prints the batch job
    /// script that starts them, `fabric deploy pod` the worker Pod (docs/deploy.md).
    Deploy(deploy::DeployArgs),
}

fn main() -> ExitCode {
    let command = std::env::args().nth(1);
    let telemetry = telemetry::init(command.as_deref());
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(a) => run::run(a),
        Command::Check(a) => run::check(a),
        Command::Exports(a) => run::exports(a),
        Command::Df(a) => df::df(a),
        Command::Build(a) => build::build(a),
        Command::Scheduler(a) => cluster::scheduler(*a),
        Command::Worker(a) => cluster::worker(*a),
        Command::Submit(a) => cluster::submit(a),
        Command::Result(a) => cluster::result(a),
        Command::Cancel(a) => cluster::cancel(a),
        Command::Status(a) => cluster::status(a),
        Command::Retire(a) => cluster::retire(a),
        Command::Scale(a) => cluster::scale(a),
        Command::Pool(a) => cluster::pool(a),
        Command::Dashboard(a) => cluster::dashboard(a),
        Command::Logs(a) => cluster::logs(a),
        Command::Explain(a) => cluster::explain(a),
        Command::Report(a) => cluster::report(a),
        Command::Top(a) => top::top(a),
        Command::Datasets(a) => cluster::datasets(a),
        Command::Usage(a) => usage::usage(a),
        Command::Forget(a) => cluster::forget(a),
        Command::Share(a) => cluster::share(a),
        Command::Admin(a) => admin::admin(a),
        Command::Whoami(a) => admin::whoami(a),
        Command::Ca(a) => ca::ca(a),
        Command::Cert(a) => ca::cert(a),
        Command::Deploy(a) => deploy::deploy(a),
    };
    // Export the last spans before the process ends.
    drop(telemetry);
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
