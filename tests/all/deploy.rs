//! Deployment: the Kubernetes manifests under deploy/kubernetes (rendered with `kubectl
//! kustomize`, validated against the Kubernetes API's schemas, their flags accepted by the
//! real `fabric`), the batch job scripts of `fabric deploy script` (run with bash as the
//! batch system would: the workers they start attach to a real scheduler), and
//! `--scheduler-file` (a worker started before its scheduler waits for the file, and
//! follows it to a scheduler started again elsewhere).

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use fabric_tests::{
    Cluster, GraphDir, fabric, fabric_bin, fabric_command, http_get, python_tool, skip,
    spawn_announcing, workspace_root,
};
use serde_json::{Value as Json, json};

/// The Kubernetes version the manifests are validated against (one kubernetes-validate
/// bundles; the kubectl here is 1.32).
const KUBERNETES: &str = "1.32.0";

/// Waits up to `limit` for `done`, polling.
fn wait_until(what: &str, limit: Duration, done: impl FnMut() -> bool) {
    fabric_tests::wait_until(what, limit, String::new, done);
}

/// Waits up to a minute for `child` to exit.
fn wait_exit(child: &mut Child, what: &str) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("cannot wait for a process") {
            return status;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("{what} did not exit within a minute");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The workers `fabric status` lists, by name.
fn worker<'a>(status: &'a Json, name: &str) -> Option<&'a Json> {
    status["workers"]
        .as_array()?
        .iter()
        .find(|w| w["name"] == name)
}

/// The documents of `overlay` (under deploy/kubernetes/overlays), rendered with `kubectl
/// kustomize` and validated against the API's schemas, strictly (a misspelt field would
/// otherwise be dropped by the API server without a word), with `more` (files of other
/// documents) beside them; as JSON (PyYAML, from kubernetes-validate's environment).
fn rendered_and_valid(overlay: &str, more: &[&std::path::Path]) -> Vec<Json> {
    let overlay = workspace_root()
        .join("deploy/kubernetes/overlays")
        .join(overlay);
    let rendered = Command::new("kubectl")
        .arg("kustomize")
        .arg(&overlay)
        .output()
        .expect("cannot run kubectl kustomize");
    assert!(
        rendered.status.success(),
        "kubectl kustomize {} failed:\n{}",
        overlay.display(),
        String::from_utf8_lossy(&rendered.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rendered.yaml");
    std::fs::write(&file, &rendered.stdout).unwrap();
    let validate = python_tool(
        "kubernetes-validate",
        "kubernetes-validate",
        "kubernetes-validate",
    );
    let checked = Command::new(&validate)
        .args(["--kubernetes-version", KUBERNETES, "--strict"])
        .arg(&file)
        .args(more)
        .output()
        .expect("cannot run kubernetes-validate");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(
        checked.status.success(),
        "kubernetes-validate failed:\n{report}"
    );
    let python = validate.with_file_name("python");
    let json = Command::new(python)
        .args([
            "-c",
            "import json, sys, yaml; json.dump(list(yaml.safe_load_all(sys.stdin)), sys.stdout)",
        ])
        .stdin(std::fs::File::open(&file).unwrap())
        .output()
        .expect("cannot run python");
    assert!(json.status.success());
    let docs: Vec<Json> = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(
        report.matches("passed for resource").count(),
        docs.len() + more.len(),
        "{report}"
    );
    for d in &docs {
        if d["kind"] != "Namespace" {
            assert_eq!(d["metadata"]["namespace"], "fabric", "{d}");
        }
    }
    docs
}

/// `Kind/"name"` of each document, sorted.
fn kinds(docs: &[Json]) -> Vec<String> {
    let mut kinds: Vec<String> = docs
        .iter()
        .map(|d| format!("{}/{}", d["kind"].as_str().unwrap(), d["metadata"]["name"]))
        .collect();
    kinds.sort();
    kinds
}

/// The document of `kind` named `name`.
fn find<'a>(docs: &'a [Json], kind: &str, name: &str) -> &'a Json {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

#[test]
fn kubernetes_manifests_are_valid() {
    let test = "deploy::kubernetes_manifests_are_valid";
    let kubectl = Command::new("kubectl")
        .args(["version", "--client"])
        .output();
    if !kubectl.is_ok_and(|o| o.status.success()) {
        skip(test, "kubectl is not installed");
        return;
    }
    let docs = rendered_and_valid("static", &[]);
    assert_eq!(
        kinds(&docs),
        [
            "Deployment/\"fabric-scheduler\"",
            "Deployment/\"fabric-worker\"",
            "Namespace/\"fabric\"",
            "PersistentVolumeClaim/\"fabric-scheduler-state\"",
            "PodDisruptionBudget/\"fabric-worker\"",
            "Role/\"fabric-scheduler\"",
            "RoleBinding/\"fabric-scheduler\"",
            "Service/\"fabric-scheduler\"",
            "ServiceAccount/\"fabric-scheduler\"",
        ]
    );
    let find = |kind: &str, name: &str| find(&docs, kind, name);

    let scheduler = find("Deployment", "fabric-scheduler");
    let pod = &scheduler["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "fabric-scheduler");
    let container = &pod["containers"][0];
    assert_eq!(container["image"], "ghcr.io/fabric/fabric:0.1.0");
    let ports: Vec<(String, u64)> = container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().into(),
                p["containerPort"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(ports, [("grpc".into(), 7878), ("dashboard".into(), 8787)]);
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        assert_eq!(container[probe]["httpGet"]["path"], "/healthz", "{probe}");
        assert_eq!(container[probe]["httpGet"]["port"], "dashboard", "{probe}");
    }
    let service = find("Service", "fabric-scheduler");
    let ports: Vec<u64> = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["port"].as_u64().unwrap())
        .collect();
    assert_eq!(ports, [7878, 8787]);
    let args = strings(&container["args"]);
    assert_eq!(args[..2], ["scheduler", "--listen"]);
    assert!(
        args.windows(2)
            .any(|w| w == ["--dashboard", "0.0.0.0:8787"])
    );
    accepted(&args);

    let workers = find("Deployment", "fabric-worker");
    assert_eq!(workers["spec"]["replicas"], 4);
    let pod = &workers["spec"]["template"]["spec"];
    assert!(pod["terminationGracePeriodSeconds"].as_u64().unwrap() >= 150);
    assert_eq!(pod["automountServiceAccountToken"], false);
    let container = &pod["containers"][0];
    assert_eq!(container["image"], "ghcr.io/fabric/fabric:0.1.0");
    let token = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "FABRIC_WORKER_TOKEN")
        .expect("the worker's token comes from the environment");
    assert_eq!(
        token["valueFrom"]["secretKeyRef"]["name"],
        "fabric-worker-token"
    );
    // Kubernetes puts the pod's name for $(POD_NAME).
    let args: Vec<String> = strings(&container["args"])
        .into_iter()
        .map(|a| a.replace("$(POD_NAME)", "fabric-worker-abc"))
        .collect();
    accepted(&args);
    let value = |flag: &str| {
        let at = args.iter().position(|a| a == flag).unwrap();
        args[at + 1].clone()
    };
    // The pod's resources follow the worker's flags: a core a thread, and memory for the
    // values held plus a task instance (512 MiB by default) a thread.
    let nthreads: u64 = value("--nthreads").parse().unwrap();
    let resources = &container["resources"];
    assert_eq!(resources["limits"]["cpu"], nthreads.to_string());
    assert_eq!(resources["requests"]["cpu"], nthreads.to_string());
    let gib = |s: &Json| {
        let s = s.as_str().unwrap();
        s.strip_suffix("Gi")
            .or(s.strip_suffix("GiB"))
            .unwrap()
            .parse::<u64>()
            .unwrap()
            << 30
    };
    let memory_limit = gib(&Json::String(value("--memory-limit")));
    assert!(gib(&resources["limits"]["memory"]) >= memory_limit + nthreads * (512 << 20));
    assert_eq!(
        resources["limits"]["memory"],
        resources["requests"]["memory"]
    );

    let pdb = find("PodDisruptionBudget", "fabric-worker");
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        workers["spec"]["selector"]["matchLabels"]
    );
    let role = find("Role", "fabric-scheduler");
    assert_eq!(role["rules"][0]["resources"][0], "pods");
    assert_eq!(
        strings(&role["rules"][0]["verbs"]),
        ["get", "list", "watch", "create", "delete"]
    );

    autoscaled_overlay_is_valid();
}

/// deploy/kubernetes/overlays/autoscaled: no Deployment of workers (nor its budget), a
/// scheduler that creates worker pods, whose flags the real `fabric scheduler` takes and
/// whose pods validate too.
fn autoscaled_overlay_is_valid() {
    // The pods its scheduler creates: `fabric deploy pod` with its flags (checked below).
    let flags = |docs: &[Json]| {
        let scheduler = find(docs, "Deployment", "fabric-scheduler");
        strings(&scheduler["spec"]["template"]["spec"]["containers"][0]["args"])
    };
    let args = flags(&rendered_and_valid("autoscaled", &[]));
    let value = |flag: &str| {
        let at = args
            .iter()
            .position(|a| a == flag)
            .unwrap_or_else(|| panic!("no {flag} in {args:?}"));
        args[at + 1].clone()
    };
    let pod = fabric([
        "deploy",
        "pod",
        "--worker-image",
        &value("--worker-image"),
        "--namespace",
        &value("--namespace"),
        "--scheduler",
        &value("--worker-scheduler"),
        "--cores",
        &value("--cores"),
        "--memory",
        &value("--memory"),
    ])
    .success();
    let dir = tempfile::tempdir().unwrap();
    let pod_file = dir.path().join("pod.json");
    std::fs::write(&pod_file, pod.to_string()).unwrap();
    let docs = rendered_and_valid("autoscaled", &[&pod_file]);
    assert_eq!(
        kinds(&docs),
        [
            "Deployment/\"fabric-scheduler\"",
            "Namespace/\"fabric\"",
            "PersistentVolumeClaim/\"fabric-scheduler-state\"",
            "Role/\"fabric-scheduler\"",
            "RoleBinding/\"fabric-scheduler\"",
            "Service/\"fabric-scheduler\"",
            "ServiceAccount/\"fabric-scheduler\"",
        ]
    );
    let scheduler = find(&docs, "Deployment", "fabric-scheduler");
    let spec = &scheduler["spec"]["template"]["spec"];
    // kubectl acts as the ServiceAccount the Role is bound to.
    assert_eq!(spec["serviceAccountName"], "fabric-scheduler");
    assert_ne!(spec["automountServiceAccountToken"], false);
    let binding = find(&docs, "RoleBinding", "fabric-scheduler");
    assert_eq!(binding["subjects"][0]["name"], "fabric-scheduler");
    let container = &spec["containers"][0];
    let image = container["image"].as_str().unwrap();
    assert_eq!(image, "ghcr.io/fabric/fabric:0.1.0");
    // kustomize rewrites neither: the workers run the scheduler's image, in its namespace.
    assert_eq!(value("--worker-image"), image);
    assert_eq!(value("--namespace"), scheduler["metadata"]["namespace"]);
    assert_eq!(value("--provider"), "kubernetes");
    assert_eq!(value("--adapt"), "min=0,max=20");
    let service = find(&docs, "Service", "fabric-scheduler");
    let port = service["spec"]["ports"][0]["port"].as_u64().unwrap();
    assert_eq!(
        value("--worker-scheduler"),
        format!(
            "http://{}:{port}",
            service["metadata"]["name"].as_str().unwrap()
        )
    );
    // kubectl's cache is writable under a read-only root.
    assert!(
        container["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["mountPath"] == "/home/fabric/.kube"),
        "{container}"
    );
    // The pods: workers of the scheduler's image, in its namespace.
    assert_eq!(pod["spec"]["containers"][0]["image"], image);
    assert_eq!(pod["metadata"]["namespace"], "fabric");
    assert_eq!(
        pod["metadata"]["labels"]["app.kubernetes.io/name"],
        "fabric-worker"
    );
    accepted(&args);

    // The real scheduler starts with them (here, on loopback, with a journal of its own;
    // with min=0 it calls no kubectl before work comes).
    let home = tempfile::tempdir().unwrap();
    let journal = home.path().join("journal");
    let local: Vec<String> = args
        .iter()
        .map(|a| match a.as_str() {
            "0.0.0.0:7878" | "0.0.0.0:8787" => "127.0.0.1:0".to_string(),
            "/var/lib/fabric/journal" => journal.to_str().unwrap().to_string(),
            other => other.to_string(),
        })
        .collect();
    let mut cmd = fabric_command(&local);
    cmd.env("FABRIC_HOME", home.path());
    let (mut scheduler, line) = spawn_announcing(cmd, &home.path().join("scheduler.log"));
    assert!(line.contains("listening on http://127.0.0.1:"), "{line}");
    let log = home.path().join("scheduler.log");
    wait_until(
        "the scheduler to say its instance",
        Duration::from_secs(30),
        || std::fs::read_to_string(&log).is_ok_and(|l| l.contains("labelled fabric.dev/instance=")),
    );
    let _ = scheduler.kill();
    let _ = scheduler.wait();
}

fn strings(json: &Json) -> Vec<String> {
    json.as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

/// `fabric ARGS --help` succeeds: each flag of ARGS is one `fabric` knows, with a value it
/// accepts.
fn accepted(args: &[String]) {
    let mut all = args.to_vec();
    all.push("--help".into());
    let out = fabric(&all);
    assert_eq!(
        out.code,
        0,
        "`fabric {}` refused:\n{}",
        all.join(" "),
        out.stderr
    );
}

#[test]
fn job_scripts_start_workers_that_attach() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("shared/scheduler.json");
    let file = file.to_str().unwrap();
    let cluster = Cluster::start_with(&["--scheduler-file", file], 0, &[]);
    // `--lifetime` is the workers' own (given by default, the walltime less a margin).
    let knows_lifetime = fabric(["worker", "--help"]).stdout.contains("--lifetime");
    let fabric_path = fabric_bin().to_str().unwrap();
    let systems: [(&str, &str, &[&str]); 4] = [
        (
            "slurm",
            "SLURM_JOB_ID",
            &[
                "#SBATCH --job-name=fabric-worker",
                "#SBATCH --partition=debug",
                "#SBATCH --account=proj",
                "#SBATCH --cpus-per-task=2",
                "#SBATCH --mem=1024M",
                "#SBATCH --time=01:00:00",
                "#SBATCH --gres=gpu:1",
            ],
        ),
        (
            "pbs",
            "PBS_JOBID",
            &[
                "#PBS -N fabric-worker",
                "#PBS -q debug",
                "#PBS -A proj",
                "#PBS -l select=1:ncpus=2:mem=1024mb",
                "#PBS -l walltime=01:00:00",
                "#PBS -l gpu=1",
            ],
        ),
        (
            "sge",
            "JOB_ID",
            &[
                "#$ -N fabric-worker",
                "#$ -q debug",
                "#$ -P proj",
                "#$ -pe smp 2",
                "#$ -l h_rt=01:00:00",
                "#$ -l gpu=1",
            ],
        ),
        (
            "lsf",
            "LSB_JOBID",
            &[
                "#BSUB -J fabric-worker",
                "#BSUB -q debug",
                "#BSUB -P proj",
                "#BSUB -n 2",
                "#BSUB -M 1024MB",
                "#BSUB -W 1:00",
                "#BSUB -gpu num=1",
            ],
        ),
    ];
    for (i, (system, job_var, directives)) in systems.into_iter().enumerate() {
        let extra = match system {
            "slurm" => "--gres=gpu:1",
            "lsf" => "-gpu num=1",
            _ => "-l gpu=1",
        };
        let mut args = vec![
            "deploy",
            "script",
            system,
            "--cores",
            "2",
            "--memory",
            "1GiB",
            "--walltime",
            "1h",
            "--queue",
            "debug",
            "--account",
            "proj",
            "--scheduler-file",
            file,
            "--fabric",
            fabric_path,
            "--extra-directive",
            extra,
            "--prologue",
            "export FROM_PROLOGUE=yes",
        ];
        if !knows_lifetime {
            args.push("--no-lifetime");
        }
        let script = fabric(&args).success_text().to_string();
        for d in directives {
            assert_eq!(
                script.lines().filter(|l| l == d).count(),
                1,
                "{system}: `{d}` once in\n{script}"
            );
        }
        if knows_lifetime {
            assert!(
                script.contains("--lifetime 57m --lifetime-stagger 3m"),
                "{script}"
            );
        }
        let path = dir.path().join(format!("{system}.sh"));
        std::fs::write(&path, &script).unwrap();
        let syntax = Command::new("bash").arg("-n").arg(&path).status().unwrap();
        assert!(syntax.success(), "bash -n {system}.sh:\n{script}");

        // Run it as the batch system would, with its job id in the environment.
        let job = format!("{}", 100 + i);
        let mut cmd = Command::new("bash");
        cmd.arg(&path)
            .env("FABRIC_HOME", cluster.home())
            .env(job_var, &job)
            .env("FABRIC_CACHE_DIR", fabric_tests::cache_dir());
        let log = dir.path().join(format!("{system}.log"));
        let (mut child, line) = spawn_announcing(cmd, &log);
        assert!(
            line.contains(&format!("attached to {}", cluster.url)),
            "{line}"
        );
        let name = format!("fabric-{job}");
        let status = cluster.wait_for(&name, |s| worker(s, &name).is_some());
        let w = worker(&status, &name).unwrap();
        assert_eq!(w["nthreads"], 2, "{w}");
        assert_eq!(w["memory_limit"], 1u64 << 30, "{w}");
        // `exec`: the shell became the worker, which the batch system's signal reaches.
        fabric_tests::signal_process(child.id(), libc::SIGTERM);
        wait_exit(&mut child, &format!("the {system} job's worker"));
    }

    // Two workers in one job, each with half of it; SIGTERM to the job's shell reaches both.
    let mut args = vec![
        "deploy",
        "script",
        "slurm",
        "--cores",
        "4",
        "--memory",
        "2GiB",
        "--workers-per-job",
        "2",
        "--scheduler-file",
        file,
        "--fabric",
        fabric_path,
        "--worker-extra-arg=--resources",
        "--worker-extra-arg=gpu=1",
    ];
    if !knows_lifetime {
        args.push("--no-lifetime");
    }
    let script = fabric(&args).success_text().to_string();
    let path = dir.path().join("two.sh");
    std::fs::write(&path, &script).unwrap();
    let mut cmd = Command::new("bash");
    cmd.arg(&path)
        .env("FABRIC_HOME", cluster.home())
        .env("SLURM_JOB_ID", "7")
        .env("FABRIC_CACHE_DIR", fabric_tests::cache_dir());
    let (mut child, _) = spawn_announcing(cmd, &dir.path().join("two.log"));
    let status = cluster.wait_for("both workers of job 7", |s| {
        worker(s, "fabric-7-0").is_some() && worker(s, "fabric-7-1").is_some()
    });
    for name in ["fabric-7-0", "fabric-7-1"] {
        let w = worker(&status, name).unwrap();
        assert_eq!(w["nthreads"], 2, "{w}");
        assert_eq!(w["memory_limit"], 1u64 << 30, "{w}");
    }
    fabric_tests::signal_process(child.id(), libc::SIGTERM);
    // The script waits for its workers: once it exited, they have.
    let exit = wait_exit(&mut child, "the job script with two workers");
    assert!(exit.success(), "{exit}");
}

#[test]
fn a_worker_waits_for_the_scheduler_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("scheduler.json");
    let file_arg = file.to_str().unwrap();
    let mut cluster = Cluster::start_with(&["--scheduler-file", file_arg], 0, &[]);

    // The file, once the scheduler listens (it may say so on stdout a moment before): its
    // address and its dashboard's.
    wait_until("the scheduler file", Duration::from_secs(60), || {
        file.exists()
    });
    let announced: Json = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(announced["address"], cluster.url.as_str());
    let dashboard = cluster.dashboard();
    assert_eq!(announced["dashboard"], dashboard.as_str());
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
    }
    // Probes need no token.
    let health = http_get(&format!("{dashboard}healthz"), None);
    assert_eq!((health.status, health.body.as_str()), (200, "ok"));

    // Client commands read it too; it and --scheduler exclude each other.
    let mut status = fabric_command(["status", "--json", "--scheduler-file", file_arg]);
    status.env("FABRIC_HOME", cluster.home());
    let status = fabric_tests::run_command(status);
    assert_eq!(status.code, 0, "{}", status.stderr);
    let both = fabric([
        "status",
        "--scheduler",
        &cluster.url,
        "--scheduler-file",
        file_arg,
    ]);
    assert_ne!(both.code, 0);
    assert!(
        both.stderr.contains("cannot be used with"),
        "{}",
        both.stderr
    );

    // A scheduler killed leaves its file behind; take it away, as before the first start.
    cluster.stop_scheduler();
    std::fs::remove_file(&file).unwrap();

    // A worker started first waits for the file, saying so once.
    let log = dir.path().join("worker.log");
    let mut cmd = fabric_command(["worker", "--scheduler-file", file_arg]);
    cmd.env("FABRIC_HOME", cluster.home());
    let log_path = log.clone();
    let started = std::thread::spawn(move || spawn_announcing(cmd, &log_path));
    let waiting = "waiting for the scheduler file";
    wait_until(
        "the worker to wait for the file",
        Duration::from_secs(60),
        || std::fs::read_to_string(&log).is_ok_and(|l| l.contains(waiting)),
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(!started.is_finished(), "the worker did not wait");

    cluster.restart_scheduler();
    let (mut worker_process, line) = started.join().unwrap();
    assert!(
        line.contains(&format!("attached to {}", cluster.url)),
        "{line}"
    );
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(log_text.matches(waiting).count(), 1, "{log_text}");
    cluster.wait_for("the worker", |s| {
        s["workers"].as_array().unwrap().len() == 1
    });

    // A scheduler stopping cleanly (SIGINT) removes its file. (It stops once no worker's
    // session is open: the worker goes first.)
    let _ = worker_process.kill();
    let _ = worker_process.wait();
    assert!(file.exists());
    cluster.signal_scheduler("INT");
    let start = Instant::now();
    while file.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the scheduler did not remove its file\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // A file that never comes ends the worker after its --death-timeout.
    let mut cmd = fabric_command([
        "worker",
        "--scheduler-file",
        file_arg,
        "--death-timeout",
        "1s",
    ]);
    cmd.env("FABRIC_WORKER_TOKEN", "unused");
    let gave_up = fabric_tests::run_command_within(cmd, Duration::from_secs(30));
    assert_ne!(gave_up.code, 0);
    assert!(
        gave_up
            .stderr
            .contains("did not appear within 1s (--death-timeout)"),
        "{}",
        gave_up.stderr
    );
}

/// The systemd units are ones systemd accepts, without a warning (where `systemd-analyze`
/// is installed; on a host without systemd there is nothing to check them with).
#[test]
fn systemd_units_verify() {
    let verify = Command::new("systemd-analyze").arg("--version").output();
    if !verify.is_ok_and(|o| o.status.success()) {
        skip(
            "deploy::systemd_units_verify",
            "systemd-analyze is not installed",
        );
        return;
    }
    // The units run /usr/local/bin/fabric, which verify wants to exist: this build's
    // instead. The template is verified as an instance of it.
    let units = workspace_root().join("deploy/systemd");
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (unit, name) in [
        ("fabric-scheduler.service", "fabric-scheduler.service"),
        ("fabric-worker@.service", "fabric-worker@1.service"),
    ] {
        let text = std::fs::read_to_string(units.join(unit)).unwrap();
        assert!(text.contains("ExecStart=/usr/local/bin/fabric "), "{unit}");
        let text = text.replace("/usr/local/bin/fabric", fabric_bin().to_str().unwrap());
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        files.push(path);
    }
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&files)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && text.trim().is_empty(),
        "systemd-analyze verify:\n{text}"
    );
}

/// A scheduler killed (its file left behind, naming its old port) and started again on
/// another port: a worker that found it through the file follows the file to the new one.
#[test]
fn a_worker_follows_the_scheduler_file_to_a_scheduler_started_again() {
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("scheduler.json");
    let file_arg = file.to_str().unwrap();
    let start_scheduler = |log: &str| {
        let mut cmd = fabric_command([
            "scheduler",
            "--listen",
            "127.0.0.1:0",
            "--dashboard",
            "127.0.0.1:0",
            "--scheduler-file",
            file_arg,
        ]);
        cmd.env("FABRIC_HOME", home.path());
        let (child, line) = spawn_announcing(cmd, &home.path().join(log));
        let url = line.rsplit(' ').next().unwrap().to_string();
        wait_until("the scheduler file", Duration::from_secs(60), || {
            std::fs::read_to_string(&file).is_ok_and(|text| text.contains(&url))
        });
        (child, url)
    };
    let (mut first, first_url) = start_scheduler("scheduler-1.log");
    let mut cmd = fabric_command(["worker", "--scheduler-file", file_arg, "--name", "follower"]);
    cmd.env("FABRIC_HOME", home.path());
    let (mut worker, line) = spawn_announcing(cmd, &home.path().join("worker.log"));
    assert!(line.contains(&format!("attached to {first_url}")), "{line}");

    first.kill().unwrap();
    first.wait().unwrap();
    let (mut second, second_url) = start_scheduler("scheduler-2.log");
    assert_ne!(first_url, second_url);
    let dir = GraphDir::new();
    let graph = dir.write_graph(&json!({
        "components": { "math": fabric_tests::guest("math") },
        "tasks": { "a": { "call": "math/inc", "args": [41] } },
        "outputs": ["a"]
    }));
    let status = || {
        let mut cmd = fabric_command(["status", "--json", "--scheduler", &second_url]);
        cmd.env("FABRIC_HOME", home.path());
        fabric_tests::run_command(cmd).json()
    };
    wait_until(
        "the worker at the new scheduler",
        Duration::from_secs(60),
        || {
            status()["workers"]
                .as_array()
                .is_some_and(|w| w.len() == 1 && w[0]["name"] == "follower")
        },
    );
    let mut submit = fabric_command([
        "submit",
        graph.to_str().unwrap(),
        "--scheduler-file",
        file_arg,
    ]);
    submit.env("FABRIC_HOME", home.path());
    assert_eq!(
        fabric_tests::run_command(submit).success(),
        json!({ "a": 42 })
    );
    let log = std::fs::read_to_string(home.path().join("worker.log")).unwrap();
    assert!(
        log.contains(&format!("the scheduler is now at {second_url}")),
        "{log}"
    );
    let _ = worker.kill();
    let _ = worker.wait();
    let _ = second.kill();
    let _ = second.wait();
}
