//! The Kubernetes provider of `--adapt` against a fake `kubectl` whose pods are real `fabric worker` processes: pods created and deleted as the work comes and goes, stuck ones deleted as failures, all deleted when the scheduler stops; and `fabric deploy pod`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use fabric_tests::{Cluster, GraphDir, fabric, python_tool, skip};
use serde_json::{Value as Json, json};

use crate::retire::{pool, stop_scheduler};

/// The fake `kubectl`: a Python script keeping its pods in directories next to it. `create
/// -f - -o name` reads a Pod or a List of them (JSON) and starts each one's its container as a `fabric worker` process
/// (the image's entrypoint), in a session of its own, with the manifest's arguments and
/// environment (the Secret's value read from `secrets/NAME/KEY`; the mount paths of its
/// volumes mapped to directories of the pod), unless the image is listed in
/// `stuck-images` (then it stays Pending in ImagePullBackOff), the Secret is missing
/// (Pending in CreateContainerConfigError, until it appears), or `hold` holds a number of
/// pods already created (it stays Pending). `get pods -l fabric.dev/instance=ID` prints
/// each pod as the provider's jsonpath does: name, phase (Running while its process
/// lives, Succeeded or Failed by its exit status) and its container's reason. `delete pod
/// NAMES` sends SIGTERM to their processes; a pod deleted is listed until its process
/// exits. Each call is recorded in `calls` (JSON lines), each pod created in `created`,
/// each one deleted in `deleted`.
const FAKE_KUBECTL: &str = r#"
import fcntl, json, os, signal, subprocess, sys, time

STATE = os.path.dirname(os.path.abspath(__file__))
PODS = os.path.join(STATE, "pods")

def path(*parts):
    return os.path.join(STATE, *parts)

def read(p, default=None):
    try:
        with open(p) as f:
            return f.read()
    except FileNotFoundError:
        return default

def append(name, line):
    with open(path(name), "a") as f:
        f.write(line + "\n")

def lines(name):
    return [l for l in read(path(name), "").splitlines() if l]

def manifest(name):
    return json.loads(read(os.path.join(PODS, name, "pod.json")))

def secret(ref):
    return read(path("secrets", ref["name"], ref["key"]))

def waiting(name):
    """Why the pod's container has not started (None: it may)."""
    m = manifest(name)
    c = m["spec"]["containers"][0]
    if c["image"] in lines("stuck-images"):
        return "ImagePullBackOff"
    for e in c.get("env", []):
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        if ref and secret(ref) is None:
            return "CreateContainerConfigError"
    if os.path.exists(os.path.join(PODS, name, "held")):
        return "ContainerCreating"
    return None

def start(name):
    d = os.path.join(PODS, name)
    m = manifest(name)
    c = m["spec"]["containers"][0]
    mounts = {}
    for v in c.get("volumeMounts", []):
        mounts[v["mountPath"]] = os.path.join(d, "volumes", v["name"])
        os.makedirs(mounts[v["mountPath"]], exist_ok=True)
    def local(value):
        for at, there in mounts.items():
            if value == at or value.startswith(at + "/"):
                return there + value[len(at):]
        return value
    env = {"PATH": "/usr/bin:/bin", "HOME": d, "FABRIC_LOG": "info"}
    for e in c.get("env", []):
        if "value" in e:
            env[e["name"]] = local(e["value"])
        else:
            env[e["name"]] = secret(e["valueFrom"]["secretKeyRef"]).strip()
    if CACHE:
        env["FABRIC_CACHE_DIR"] = CACHE
    argv = [FABRIC] + [local(a) for a in c.get("args", [])]
    if os.fork() == 0:
        # The daemon keeps no descriptor of kubectl's: not its lock, not its pipes.
        LOCK.close()
        os.setsid()
        null = os.open(os.devnull, os.O_RDWR)
        log = os.open(os.path.join(d, "log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        proc = subprocess.Popen(argv, env=env, cwd=d)
        with open(os.path.join(d, "pid.tmp"), "w") as f:
            f.write(str(proc.pid))
        os.rename(os.path.join(d, "pid.tmp"), os.path.join(d, "pid"))
        rc = proc.wait()
        with open(os.path.join(d, "rc.tmp"), "w") as f:
            f.write(str(rc if rc >= 0 else 128 - rc))
        os.rename(os.path.join(d, "rc.tmp"), os.path.join(d, "rc"))
        os._exit(0)
    deadline = time.time() + 10
    while not os.path.exists(os.path.join(d, "pid")) and time.time() < deadline:
        time.sleep(0.01)

def reconcile():
    """Starts the containers that may start."""
    for name in lines("created"):
        d = os.path.join(PODS, name)
        started = os.path.exists(os.path.join(d, "started"))
        if not started and not os.path.exists(os.path.join(d, "deleted")) and waiting(name) is None:
            open(os.path.join(d, "started"), "w").close()
            start(name)

def phase(name):
    """(phase, reason) of pod `name`, or None once it is gone."""
    d = os.path.join(PODS, name)
    deleted = os.path.exists(os.path.join(d, "deleted"))
    rc = read(os.path.join(d, "rc"))
    if rc is not None:
        if deleted:
            return None
        return ("Succeeded", "Completed") if rc.strip() == "0" else ("Failed", "Error")
    if os.path.exists(os.path.join(d, "pid")):
        return ("Running", "")
    if deleted:
        return None
    return ("Pending", waiting(name) or "ContainerCreating")

def create(m, namespace):
    """Creates pod `m`; its name."""
    if m.get("kind") != "Pod" or m["spec"].get("restartPolicy") != "Never":
        fail("fake kubectl: not a bare Pod that is never restarted")
    if namespace and m["metadata"].get("namespace", namespace) != namespace:
        fail("error: the namespace from the provided object does not match")
    name = m["metadata"]["name"]
    d = os.path.join(PODS, name)
    if os.path.exists(d):
        fail('Error from server (AlreadyExists): pods "%s" already exists' % name)
    os.makedirs(d)
    with open(os.path.join(d, "pod.json"), "w") as f:
        json.dump(m, f)
    hold = read(path("hold"))
    if hold is not None and len(lines("created")) >= int(hold):
        open(os.path.join(d, "held"), "w").close()
    append("created", name)
    reconcile()
    return name

def fail(message):
    print(message, file=sys.stderr)
    sys.exit(1)

def main():
    args = sys.argv[1:]
    append("calls", json.dumps(args))
    namespace, rest = None, []
    i = 0
    while i < len(args):
        if args[i] in ("--namespace", "-n"):
            namespace = args[i + 1]
            i += 2
            continue
        if args[i].startswith("--request-timeout="):
            i += 1
            continue
        rest.append(args[i])
        i += 1
    os.makedirs(PODS, exist_ok=True)
    global LOCK
    LOCK = open(path("lock"), "w")
    fcntl.flock(LOCK, fcntl.LOCK_EX)
    verb = rest[0] if rest else ""
    if verb == "create":
        if rest[1:] != ["-f", "-", "-o", "name"]:
            fail("fake kubectl: unexpected arguments: %s" % rest)
        given = json.load(sys.stdin)
        for m in given["items"] if given.get("kind") == "List" else [given]:
            print("pod/" + create(m, namespace))
    elif verb == "get" and rest[1:2] == ["pods"]:
        selector = rest[rest.index("-l") + 1]
        key, value = selector.split("=", 1)
        if not any(a.startswith("-o=jsonpath=") for a in rest):
            fail("fake kubectl: get pods without -o=jsonpath")
        reconcile()
        for name in lines("created"):
            if manifest(name)["metadata"]["labels"].get(key) != value:
                continue
            state = phase(name)
            if state:
                print("%s\t%s\t%s" % (name, state[0], state[1]))
    elif verb == "delete" and rest[1:2] == ["pod"]:
        if "--wait=false" not in rest or "--ignore-not-found" not in rest:
            fail("fake kubectl: delete without --wait=false --ignore-not-found")
        for name in [a for a in rest[2:] if not a.startswith("-")]:
            d = os.path.join(PODS, name)
            if not os.path.exists(d):
                continue
            append("deleted", name)
            open(os.path.join(d, "deleted"), "w").close()
            pid = read(os.path.join(d, "pid"))
            if pid and read(os.path.join(d, "rc")) is None:
                try:
                    os.kill(int(pid), signal.SIGTERM)
                except ProcessLookupError:
                    pass
    else:
        fail("fake kubectl: unexpected command %s" % rest)

main()
"#;

/// A fake Kubernetes: the fake `kubectl` in a directory of its own (put it first on the
/// scheduler's PATH), its pods' processes killed when dropped.
struct FakeKubernetes {
    dir: tempfile::TempDir,
}

impl FakeKubernetes {
    fn new() -> FakeKubernetes {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let script = format!(
            "#!/usr/bin/env python3\nFABRIC = {}\nCACHE = {}\n{FAKE_KUBECTL}",
            json!(fabric_tests::fabric_bin()),
            json!(fabric_tests::cache_dir()),
        );
        let path = dir.path().join("kubectl");
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        FakeKubernetes { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// PATH for a scheduler that runs this `kubectl`.
    fn search_path(&self) -> String {
        format!(
            "{}:{}",
            self.path().display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }

    /// The Secret `fabric-worker-token`, holding `cluster`'s worker token.
    fn give_token(&self, cluster: &Cluster) {
        let dir = self.path().join("secrets/fabric-worker-token");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(cluster.home().join("worker.token"), dir.join("token")).unwrap();
    }

    /// The lines of the fake's file `name`.
    fn lines(&self, name: &str) -> Vec<String> {
        std::fs::read_to_string(self.path().join(name))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// What pod `name`'s process exited with, once it did.
    fn exit_code(&self, name: &str) -> Option<i32> {
        let rc = std::fs::read_to_string(self.path().join("pods").join(name).join("rc")).ok()?;
        rc.trim().parse().ok()
    }

    /// Pod `name`'s manifest, as created.
    fn manifest(&self, name: &str) -> Json {
        let text = std::fs::read_to_string(self.path().join("pods").join(name).join("pod.json"));
        serde_json::from_str(&text.unwrap()).unwrap()
    }

    /// The logs of the pods' workers, for failures.
    fn logs(&self) -> String {
        let mut out = String::new();
        for name in self.lines("created") {
            let log = self.path().join("pods").join(&name).join("log");
            let text = std::fs::read_to_string(log).unwrap_or_default();
            out += &format!("--- pod {name}\n{text}\n");
        }
        out
    }
}

impl Drop for FakeKubernetes {
    fn drop(&mut self) {
        for name in self.lines("created") {
            let dir = self.path().join("pods").join(&name);
            let pid = std::fs::read_to_string(dir.join("pid")).ok();
            if let Some(pid) = pid.and_then(|p| p.trim().parse::<libc::pid_t>().ok())
                && !dir.join("rc").exists()
            {
                // SAFETY: kill(2) takes plain integers and touches no memory of ours.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

/// A scheduler with `--adapt ADAPT --provider kubernetes` of one-core, 1 GiB pods of
/// `image` (and `extra` flags), running the fake `kubectl` of `kube`.
fn kubernetes_cluster(kube: &FakeKubernetes, adapt: &str, image: &str, extra: &[&str]) -> Cluster {
    let mut args = vec!["--adapt", adapt, "--provider", "kubernetes"];
    args.extend(["--worker-image", image, "--cores", "1", "--memory", "1GiB"]);
    args.extend(["--namespace", "fabric-test"]);
    args.extend_from_slice(extra);
    let path = kube.search_path();
    let cluster = Cluster::start_with_env(&args, &[("PATH", path.as_str())], 0, &[]);
    kube.give_token(&cluster);
    cluster
}

/// Waits (at most 30 s) until `ready()` holds.
fn wait_until(what: &str, logs: impl Fn() -> String, ready: impl Fn() -> bool) {
    fabric_tests::wait_until(what, Duration::from_secs(30), logs, ready);
}

/// The names of the workers `fabric status` lists, sorted.
fn worker_names(cluster: &Cluster) -> Vec<String> {
    let mut names: Vec<String> = cluster.status()["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

#[test]
fn pods_come_with_the_work_and_go_when_their_workers_retire() {
    let kube = FakeKubernetes::new();
    let cluster = kubernetes_cluster(
        &kube,
        "min=0,max=3,interval=100ms,poll=100ms,target=1s,cooldown=500ms,wait=2",
        "ghcr.io/fabric/fabric:test",
        &[],
    );
    let logs = || format!("{}\n{}", cluster.logs(), kube.logs());
    assert!(kube.lines("created").is_empty(), "no work, no pods");
    let dir = GraphDir::new();
    let out = cluster.submit(
        &dir.write_graph(&crate::cluster::slow_sum(30, 200, json!({}))),
        &["--detach"],
    );
    assert_eq!(out.code, 0, "{out}");
    let job = out.stdout.trim().to_string();
    // 6 s of work on one thread, 1 s wanted: as many pods as the maximum.
    cluster.wait_for("3 workers", |s| s["workers"].as_array().unwrap().len() == 3);
    let created = kube.lines("created");
    assert_eq!(created.len(), 3, "{created:?}\n{}", logs());
    assert_eq!(
        worker_names(&cluster),
        created,
        "each worker is named after its pod"
    );
    let out = cluster.fabric(&["result", &job]);
    assert_eq!(out.success(), json!({ "sum": 30 * 31 / 2 }), "{}", logs());

    // The pods, as created: one instance, labelled; the worker dials the scheduler.
    let instance = created[0]
        .strip_prefix("fabric-worker-")
        .and_then(|rest| rest.strip_suffix("-0"))
        .unwrap()
        .to_string();
    assert_eq!(instance.len(), 6, "{instance}");
    let pod = kube.manifest(&created[1]);
    assert_eq!(pod["metadata"]["namespace"], "fabric-test");
    assert_eq!(
        pod["metadata"]["labels"]["fabric.dev/instance"],
        instance.as_str()
    );
    let args: Vec<&str> = pod["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        args[..5],
        ["worker", "--scheduler", &cluster.url, "--name", &created[1]]
    );

    // Idle, they retire: their pods complete (exit 0) and are deleted, none failed.
    cluster.wait_for("no workers", |s| {
        s["workers"].as_array().unwrap().is_empty()
    });
    wait_until("the completed pods to be deleted", logs, || {
        let mut deleted = kube.lines("deleted");
        deleted.sort();
        deleted == created
    });
    for name in &created {
        assert_eq!(kube.exit_code(name), Some(0), "{name}\n{}", logs());
    }
    let p = pool(&cluster);
    assert_eq!(p["provider"], "kubernetes", "{p}");
    assert_eq!(p["failures"], 0, "{p}");
    assert_eq!(p["allocations"], json!([]), "{p}");
    let log = cluster.scheduler_log();
    assert!(
        log.contains(&format!("labelled fabric.dev/instance={instance}")),
        "{log}"
    );
    assert!(log.contains("adapt: cancelled pods"), "{log}");
    assert!(!log.contains("could not get workers"), "{log}");
    assert!(!log.contains("kubectl failed"), "{log}");

    // The jsonpath the scheduler asked for reads real pods as the fake printed them.
    let calls: Vec<Vec<String>> = kube
        .lines("calls")
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let get = calls
        .iter()
        .find(|c| c.contains(&"get".to_string()))
        .expect("kubectl get was called");
    assert_eq!(
        get[..7],
        [
            "--request-timeout=30s",
            "--namespace",
            "fabric-test",
            "get",
            "pods",
            "-l",
            &format!("fabric.dev/instance={instance}")
        ]
    );
    let template = get[7].strip_prefix("-o=jsonpath=").unwrap();
    jsonpath_reads_pods(template);
}

/// `template` (`{range .items[*]}...{end}`), applied by the real kubectl to pods in three
/// states, prints what the fake prints.
fn jsonpath_reads_pods(template: &str) {
    let kubectl = Command::new("kubectl")
        .args(["version", "--client"])
        .output();
    if !kubectl.is_ok_and(|o| o.status.success()) {
        skip("kubernetes::jsonpath", "kubectl is not installed");
        return;
    }
    let item = template
        .strip_prefix("{range .items[*]}")
        .and_then(|t| t.strip_suffix("{end}"))
        .unwrap_or_else(|| panic!("{template}"));
    let status = |phase: &str, state: Json| {
        json!({
            "phase": phase,
            "containerStatuses": [{
                "name": "worker", "image": "x", "imageID": "", "ready": false,
                "restartCount": 0, "state": state,
            }],
        })
    };
    let pods = [
        ("a", json!({ "phase": "Pending" })),
        (
            "b",
            status(
                "Pending",
                json!({ "waiting": { "reason": "ImagePullBackOff" } }),
            ),
        ),
        ("c", status("Running", json!({ "running": {} }))),
        (
            "d",
            status(
                "Succeeded",
                json!({ "terminated": { "reason": "Completed", "exitCode": 0 } }),
            ),
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut printed = String::new();
    for (name, status) in pods {
        // `kubectl label --local` prints an object through the same printer, offline.
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": { "name": name },
            "spec": { "containers": [{ "name": "worker", "image": "x" }] },
            "status": status,
        });
        let file = dir.path().join(format!("{name}.json"));
        std::fs::write(&file, pod.to_string()).unwrap();
        let out = Command::new("kubectl")
            .args(["label", "--local", "-f"])
            .arg(&file)
            .args(["checked=yes", &format!("-o=jsonpath={item}")])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        printed += &String::from_utf8_lossy(&out.stdout);
    }
    assert_eq!(
        printed,
        "a\tPending\t\nb\tPending\tImagePullBackOff\nc\tRunning\t\nd\tSucceeded\tCompleted\n"
    );
}

#[test]
fn pods_stuck_pulling_their_image_are_deleted_as_failures_and_pause_scaling() {
    let kube = FakeKubernetes::new();
    let image = "registry.invalid/fabric:missing";
    std::fs::write(kube.path().join("stuck-images"), format!("{image}\n")).unwrap();
    let cluster = kubernetes_cluster(
        &kube,
        "min=1,max=1,interval=50ms,poll=50ms,cooldown=50ms",
        image,
        &[],
    );
    let logs = || format!("{}\n{}", cluster.logs(), kube.logs());
    // Ten pods in a row stick (back-offs of 50, 100, 200... 800 ms), each deleted.
    wait_until("scaling up to pause", logs, || {
        cluster
            .scheduler_log()
            .contains("adapt: paused after repeated failures")
    });
    let created = kube.lines("created");
    assert_eq!(created.len(), 10, "{created:?}");
    let p = pool(&cluster);
    assert_eq!(p["paused"], true, "{p}");
    assert_eq!(p["failures"], 10, "{p}");
    assert_eq!(
        p["last_error"],
        format!(
            "pod {} ended before any worker of it attached (last state: Pending \
             (ImagePullBackOff), which it leaves only by hand; cancelled)",
            created[9]
        ),
        "{p}"
    );
    wait_until("the stuck pods to be deleted", logs, || {
        kube.lines("deleted") == created
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(kube.lines("created").len(), 10, "no more once paused");
    assert!(
        created.iter().all(|name| kube.exit_code(name).is_none()),
        "none ran"
    );
}

#[test]
fn pods_are_deleted_when_the_scheduler_stops() {
    let kube = FakeKubernetes::new();
    // The third pod stays Pending (as if no node had room for it).
    std::fs::write(kube.path().join("hold"), "2").unwrap();
    // Named by --kubectl, not found on PATH.
    let kubectl = kube.path().join("my-kubectl");
    std::fs::rename(kube.path().join("kubectl"), &kubectl).unwrap();
    let mut cluster = kubernetes_cluster(
        &kube,
        "min=3,max=3,interval=100ms,poll=100ms",
        "ghcr.io/fabric/fabric:test",
        &["--kubectl", kubectl.to_str().unwrap()],
    );
    cluster.wait_for("2 workers", |s| s["workers"].as_array().unwrap().len() == 2);
    let created = kube.lines("created");
    assert_eq!(created.len(), 3, "{created:?}\n{}", kube.logs());
    let p = pool(&cluster);
    assert_eq!(p["coming"], 1, "{p}");
    assert_eq!(p["allocations"][2]["state"], "queued", "{p}");
    assert!(kube.lines("deleted").is_empty());

    let status = stop_scheduler(&mut cluster);
    let logs = || format!("{}\n{}", cluster.logs(), kube.logs());
    assert!(status.success(), "{status}\n{}", logs());
    let mut deleted = kube.lines("deleted");
    deleted.sort();
    assert_eq!(deleted, created, "{}", logs());
    // SIGTERM: the running pods' workers leave (exit 0: they retired).
    wait_until("the pods' workers to exit", logs, || {
        created[..2]
            .iter()
            .all(|name| kube.exit_code(name).is_some())
    });
    for name in &created[..2] {
        assert_eq!(kube.exit_code(name), Some(0), "{name}\n{}", logs());
    }
}

/// Runs `fabric deploy pod ARGS`.
fn deploy_pod(args: &[&str]) -> fabric_tests::Outcome {
    let mut all = vec!["deploy", "pod"];
    all.extend_from_slice(args);
    fabric(&all)
}

#[test]
fn deploy_pod_prints_the_pod_the_provider_creates() {
    let dir = GraphDir::new();
    let patch = dir.write(
        "override.json",
        json!({
            "metadata": { "labels": { "team": "physics" } },
            "spec": {
                "nodeSelector": { "pool": "workers" },
                "tolerations": [{ "key": "spot", "operator": "Exists", "effect": "NoSchedule" }],
                "priorityClassName": null,
            },
        })
        .to_string(),
    );
    let out = deploy_pod(&[
        "--worker-image",
        "ghcr.io/fabric/fabric:0.1.0",
        "--cores",
        "2",
        "--memory",
        "6GiB",
        "--namespace",
        "fabric",
        "--scheduler",
        "http://fabric-scheduler.fabric:7878",
        "--lifetime",
        "2h",
        "--worker-extra-arg=--resources=gpu=1",
        "--worker-extra-arg=--retire-timeout=3m",
        "--pod-override",
        patch.to_str().unwrap(),
    ]);
    let pod = out.success();
    assert_eq!(pod["kind"], "Pod", "{pod}");
    let name = pod["metadata"]["name"].as_str().unwrap();
    let instance = pod["metadata"]["labels"]["fabric.dev/instance"]
        .as_str()
        .unwrap();
    assert_eq!(name, format!("fabric-worker-{instance}-0"));
    let labels = &pod["metadata"]["labels"];
    assert_eq!(labels["app.kubernetes.io/name"], "fabric-worker");
    assert_eq!(labels["app.kubernetes.io/component"], "worker");
    assert_eq!(labels["app.kubernetes.io/managed-by"], "fabric-scheduler");
    assert_eq!(labels["team"], "physics");
    let spec = &pod["spec"];
    assert_eq!(spec["restartPolicy"], "Never");
    assert_eq!(spec["nodeSelector"]["pool"], "workers");
    assert_eq!(spec["tolerations"][0]["key"], "spot");
    // Above the worker's retire timeout (3m).
    assert_eq!(spec["terminationGracePeriodSeconds"], 210);
    let container = &spec["containers"][0];
    let args: Vec<String> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        args.join(" "),
        format!(
            "worker --scheduler http://fabric-scheduler.fabric:7878 --name {name} --nthreads 2 \
             --memory-limit 5120MiB --death-timeout 1m --lifetime 2h --spill-dir /var/spill \
             --resources=gpu=1 --retire-timeout=3m"
        )
    );
    let resources = json!({ "cpu": "2", "memory": "6Gi" });
    assert_eq!(container["resources"]["limits"], resources);
    assert_eq!(container["resources"]["requests"], resources);
    // The real worker takes these arguments.
    let mut help = args.clone();
    help.push("--help".into());
    let out = fabric(&help);
    assert_eq!(out.code, 0, "`fabric {}`:\n{}", help.join(" "), out.stderr);

    // It validates against the API's schemas, strictly.
    let validate = python_tool(
        "kubernetes-validate",
        "kubernetes-validate",
        "kubernetes-validate",
    );
    let file = dir.write("pod.json", pod.to_string());
    let checked = Command::new(&validate)
        .args(["--kubernetes-version", "1.32.0", "--strict"])
        .arg(&file)
        .output()
        .expect("cannot run kubernetes-validate");
    assert!(
        checked.status.success(),
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    // What cannot make a pod is said, naming what is wrong.
    let out = deploy_pod(&["--cores", "1", "--memory", "1GiB"]);
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stderr.contains("--worker-image"), "{out}");
    let not_object = dir.write("list.json", "[1, 2]");
    let out = deploy_pod(&[
        "--worker-image",
        "x",
        "--cores",
        "1",
        "--memory",
        "1GiB",
        "--pod-override",
        not_object.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 2, "{out}");
    assert!(
        out.stderr.contains(&format!(
            "the --pod-override file {} is not a JSON object",
            not_object.display()
        )),
        "{out}"
    );
    let out = deploy_pod(&["--worker-image", "x", "--cores", "2", "--memory", "1GiB"]);
    assert_eq!(out.code, 2, "{out}");
    assert!(
        out.stderr.contains("leaves the worker 0Mi for values"),
        "{out}"
    );
    // So does the scheduler, before it listens.
    let out = fabric(["scheduler", "--adapt", "max=2", "--provider", "kubernetes"]);
    assert_eq!(out.code, 2, "{out}");
    assert!(
        out.stderr
            .contains("--provider kubernetes: worker pods need --worker-image IMAGE"),
        "{out}"
    );
    assert!(out.stdout.is_empty(), "{out}");
}
