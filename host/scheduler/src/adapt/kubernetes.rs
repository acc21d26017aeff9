//! Worker pods on Kubernetes: the Pod manifest [`pod`] (what `fabric deploy pod` prints), merged with an RFC 7386 patch, created, followed and deleted with `kubectl`.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value as Json, json};

use super::jobscript::shape_args;
use super::status::JobState;

/// The label naming the scheduler (its instance id) that created a worker pod.
pub const INSTANCE_LABEL: &str = "fabric.dev/instance";

/// Memory of each task instance when the worker's `--memory` does not say (its default).
pub const DEFAULT_TASK_MEMORY: u64 = 512 << 20;

/// The worker's `--retire-timeout` when its arguments do not say (its default).
pub const DEFAULT_RETIRE_TIMEOUT: Duration = Duration::from_secs(120);

/// How much longer than the worker's retire timeout Kubernetes waits after SIGTERM before
/// it kills the container.
const GRACE_MARGIN: Duration = Duration::from_secs(30);

/// How long a `kubectl` call may wait for the API server.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The least memory for values a pod's worker may be left with.
const MIN_VALUES_MEMORY: u64 = 256 << 20;

/// Container states in which a pod waits for someone to step in (an image that does not
/// exist or cannot be pulled, a Secret or ConfigMap missing): as good as failed.
const STUCK_REASONS: [&str; 4] = [
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CreateContainerConfigError",
];

/// What `kubectl get pods -o jsonpath` prints of each pod: its name, its phase and why its
/// container waits or ended (a missing field prints as nothing), tab-separated.
pub const POD_LINE: &str = "{.metadata.name}{\"\\t\"}{.status.phase}{\"\\t\"}\
    {.status.containerStatuses[0].state.waiting.reason}\
    {.status.containerStatuses[0].state.terminated.reason}{\"\\n\"}";

/// What each worker pod is and runs.
#[derive(Clone, Debug)]
pub struct PodConfig {
    /// The container image; its entrypoint is `fabric`.
    pub image: String,
    /// The namespace [default: kubectl's].
    pub namespace: Option<String>,
    /// The scheduler's URL as the pods dial it (its Service); empty: the scheduler's own,
    /// filled in when the first pod is created.
    pub scheduler: String,
    /// CPUs of the pod (requested, and its limit).
    pub cores: u32,
    /// Memory of the pod, bytes (requested, and its limit). The worker's `--memory-limit`
    /// is what a task instance per thread leaves of it: the container is killed beyond it.
    pub memory: u64,
    /// Threads of the worker [default: `cores`].
    pub nthreads: Option<u32>,
    /// Memory of each task instance (the worker's `--memory`).
    pub task_memory: u64,
    /// The worker's `--retire-timeout`: the pod's grace period is longer.
    pub retire_timeout: Duration,
    /// The worker's `--death-timeout`.
    pub death_timeout: Duration,
    /// The worker's `--lifetime`, if any.
    pub lifetime: Option<Duration>,
    /// The worker's `--lifetime-stagger`, if any.
    pub lifetime_stagger: Option<Duration>,
    /// More arguments of the worker.
    pub worker_extra_args: Vec<String>,
    /// The Secret whose key `token` is the worker token.
    pub token_secret: String,
    /// A JSON merge patch (RFC 7386) applied to the Pod generated: node selectors,
    /// tolerations, other volumes...
    pub pod_override: Option<Json>,
}

/// A short random lowercase hex id for a scheduler's run, so that the names of the pods of
/// two runs never clash.
pub fn instance_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    h.write_u128(now.map_or(0, |d| d.as_nanos()));
    format!("{:06x}", h.finish() & 0xff_ffff)
}

/// The name of pod `n` of instance `instance`.
pub fn pod_name(instance: &str, n: u32) -> String {
    format!("fabric-worker-{instance}-{n}")
}

/// A memory quantity as Kubernetes reads it: whole GiB as `Gi`, else MiB (rounded up).
fn quantity(bytes: u64) -> String {
    if bytes > 0 && bytes.is_multiple_of(1 << 30) {
        format!("{}Gi", bytes >> 30)
    } else {
        format!("{}Mi", bytes.div_ceil(1 << 20))
    }
}

/// Pod `n` of instance `instance`: a bare Pod (restartPolicy Never: a worker that retires
/// exits 0 and its pod completes) running `fabric worker` with the resources, security
/// context and volumes of `deploy/kubernetes/base/worker-deployment.yaml`, then
/// `c.pod_override` merged in. Its name and instance label stay Fabric's.
pub fn pod(c: &PodConfig, instance: &str, n: u32) -> Result<Json, String> {
    if c.image.is_empty() {
        return Err("a worker pod needs an image (--worker-image)".into());
    }
    if c.cores == 0 {
        return Err("--cores must be at least 1".into());
    }
    let nthreads = c.nthreads.unwrap_or(c.cores);
    if nthreads == 0 {
        return Err("--nthreads must be at least 1".into());
    }
    let tasks = u64::from(nthreads) * c.task_memory;
    let values = c.memory.saturating_sub(tasks);
    if values < MIN_VALUES_MEMORY {
        return Err(format!(
            "--memory {} leaves the worker {} for values once each of its {nthreads} thread(s) \
             has room for a task instance ({}, the worker's --memory); it needs {} at least: \
             give the pod more --memory, or fewer --nthreads",
            quantity(c.memory),
            quantity(values),
            quantity(c.task_memory),
            quantity(MIN_VALUES_MEMORY),
        ));
    }
    let name = pod_name(instance, n);
    let mut args: Vec<String> = ["worker", "--scheduler", &c.scheduler, "--name", &name]
        .map(String::from)
        .into();
    args.extend(shape_args(
        nthreads,
        values,
        c.death_timeout,
        c.lifetime,
        c.lifetime_stagger,
    ));
    args.extend(["--spill-dir".into(), "/var/spill".into()]);
    args.extend(c.worker_extra_args.iter().cloned());
    let resources = json!({ "cpu": c.cores.to_string(), "memory": quantity(c.memory) });
    let grace = (c.retire_timeout + GRACE_MARGIN).as_secs_f64().ceil() as u64;
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": {
                "app.kubernetes.io/name": "fabric-worker",
                "app.kubernetes.io/component": "worker",
                "app.kubernetes.io/part-of": "fabric",
                "app.kubernetes.io/managed-by": "fabric-scheduler",
                INSTANCE_LABEL: instance,
            },
        },
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": false,
            // On SIGTERM the worker hands its values over, for up to its retire timeout.
            "terminationGracePeriodSeconds": grace,
            "securityContext": {
                "runAsNonRoot": true,
                "runAsUser": 10001,
                "runAsGroup": 10001,
                "fsGroup": 10001,
                "seccompProfile": { "type": "RuntimeDefault" },
            },
            "containers": [{
                "name": "worker",
                "image": c.image,
                "args": args,
                "env": [
                    {
                        "name": "FABRIC_WORKER_TOKEN",
                        "valueFrom": { "secretKeyRef": { "name": c.token_secret, "key": "token" } },
                    },
                    { "name": "FABRIC_CACHE_DIR", "value": "/var/cache/fabric" },
                ],
                "resources": { "requests": resources, "limits": resources },
                "securityContext": {
                    "allowPrivilegeEscalation": false,
                    "readOnlyRootFilesystem": true,
                    "capabilities": { "drop": ["ALL"] },
                },
                "volumeMounts": [
                    { "name": "spill", "mountPath": "/var/spill" },
                    { "name": "cache", "mountPath": "/var/cache/fabric" },
                    { "name": "tmp", "mountPath": "/tmp" },
                ],
            }],
            "volumes": [
                { "name": "spill", "emptyDir": { "sizeLimit": "20Gi" } },
                { "name": "cache", "emptyDir": {} },
                { "name": "tmp", "emptyDir": {} },
            ],
        },
    });
    if let Some(namespace) = &c.namespace {
        pod["metadata"]["namespace"] = json!(namespace);
    }
    if let Some(patch) = &c.pod_override {
        merge_patch(&mut pod, patch);
        // The scheduler finds its pods by these.
        if !pod["metadata"].is_object() {
            pod["metadata"] = json!({});
        }
        pod["metadata"]["name"] = json!(name);
        if !pod["metadata"]["labels"].is_object() {
            pod["metadata"]["labels"] = json!({});
        }
        pod["metadata"]["labels"][INSTANCE_LABEL] = json!(instance);
    }
    Ok(pod)
}

/// Applies the JSON merge patch `patch` to `target` (RFC 7386): an object's members are
/// merged one by one, `null` removes one, anything else (arrays too) replaces.
pub fn merge_patch(target: &mut Json, patch: &Json) {
    let Json::Object(members) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let Json::Object(target) = target else {
        return;
    };
    for (key, value) in members {
        if value.is_null() {
            target.remove(key);
        } else {
            merge_patch(target.entry(key.clone()).or_insert(Json::Null), value);
        }
    }
}

/// Worker pods, created, followed and deleted with `kubectl`: each allocation is one pod,
/// named after the scheduler's instance id and labelled with it.
pub(crate) struct Pods {
    config: PodConfig,
    kubectl: PathBuf,
    /// This scheduler's run, in the pods' names and labels.
    instance: String,
    /// Pods created so far (their names count up).
    created: u32,
}

impl Pods {
    pub(crate) fn new(config: PodConfig, kubectl: PathBuf) -> Pods {
        let instance = instance_id();
        tracing::info!(
            "adapt: worker pods of this scheduler are labelled {INSTANCE_LABEL}={instance}"
        );
        Pods {
            config,
            kubectl,
            instance,
            created: 0,
        }
    }

    /// `kubectl`, in the namespace asked for; a call answers within [`REQUEST_TIMEOUT`].
    fn kubectl(&self) -> Command {
        let mut cmd = Command::new(&self.kubectl);
        cmd.arg(format!("--request-timeout={}s", REQUEST_TIMEOUT.as_secs()));
        if let Some(namespace) = &self.config.namespace {
            cmd.args(["--namespace", namespace]);
        }
        cmd
    }

    /// What the pod's phase and its container's reason (waiting or terminated) say.
    fn state(&self, phase: &str, reason: &str) -> JobState {
        let said = if reason.is_empty() {
            phase.to_string()
        } else {
            format!("{phase} ({reason})")
        };
        match phase {
            "Succeeded" => JobState::Over(phase.to_string()),
            "Failed" => JobState::Over(said),
            "Pending" if reason == "CreateContainerConfigError" => JobState::Stuck(format!(
                "{said}: is there a Secret {} with a key `token`?",
                self.config.token_secret
            )),
            "Pending" if STUCK_REASONS.contains(&reason) => JobState::Stuck(said),
            _ => JobState::Active(said),
        }
    }
}

impl super::Backend for Pods {
    fn name(&self) -> &'static str {
        "kubernetes"
    }

    fn noun(&self) -> &'static str {
        "pod"
    }

    fn workers_per_allocation(&self) -> u32 {
        1
    }

    fn submit(&mut self, n: u32, url: &str, started: &mut Vec<String>) -> Result<(), String> {
        if self.config.scheduler.is_empty() {
            self.config.scheduler = url.to_string();
        }
        // One `kubectl create` for all (a List): one round trip, however many pods.
        let items = (self.created..self.created + n)
            .map(|i| pod(&self.config, &self.instance, i))
            .collect::<Result<Vec<Json>, String>>()?;
        self.created += n;
        let list = json!({ "apiVersion": "v1", "kind": "List", "items": items });
        let mut cmd = self.kubectl();
        cmd.args(["create", "-f", "-", "-o", "name"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let program = self.kubectl.display();
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot run {program}: {e}"))?;
        let input = list.to_string();
        let writer = child.stdin.take().map(|mut stdin| {
            // In a thread: kubectl may answer before it read everything.
            std::thread::spawn(move || {
                let _ = stdin.write_all(input.as_bytes());
            })
        });
        let out = child
            .wait_with_output()
            .map_err(|e| format!("cannot run {program}: {e}"))?;
        if let Some(writer) = writer {
            let _ = writer.join();
        }
        // What was created is followed, also when the rest failed.
        let before = started.len();
        let stdout = String::from_utf8_lossy(&out.stdout);
        for name in stdout.lines().filter_map(|l| l.trim().strip_prefix("pod/")) {
            tracing::info!(pod = %name, "adapt: created a worker pod");
            started.push(name.to_string());
        }
        if !out.status.success() {
            return Err(format!(
                "{program} create failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        if started.len() - before < n as usize {
            return Err(format!(
                "{program} create named {} pod(s) of {n}: {}",
                started.len() - before,
                stdout.trim()
            ));
        }
        Ok(())
    }

    fn worker_names(&self, id: &str) -> Vec<String> {
        vec![id.to_string()]
    }

    fn status_program(&self) -> &'static str {
        "kubectl"
    }

    fn status_command(&self, _ids: &[String]) -> Command {
        let mut cmd = self.kubectl();
        cmd.args(["get", "pods", "-l"])
            .arg(format!("{INSTANCE_LABEL}={}", self.instance))
            .arg(format!("-o=jsonpath={{range .items[*]}}{POD_LINE}{{end}}"));
        cmd
    }

    fn parse_status(
        &self,
        ids: &[String],
        success: bool,
        stdout: &str,
        stderr: &str,
    ) -> Result<HashMap<String, JobState>, String> {
        if !success {
            return Err(Some(stderr.trim())
                .filter(|e| !e.is_empty())
                .unwrap_or("(nothing on stderr)")
                .to_string());
        }
        let mut states = HashMap::new();
        for line in stdout.lines() {
            let mut fields = line.split('\t').map(str::trim);
            let (Some(name), Some(phase)) = (fields.next(), fields.next()) else {
                continue;
            };
            if ids.iter().any(|id| id == name) {
                let state = self.state(phase, fields.next().unwrap_or_default());
                states.insert(name.to_string(), state);
            }
        }
        Ok(states)
    }

    fn cancel_command(&self, ids: &[String]) -> Command {
        let mut cmd = self.kubectl();
        cmd.args(["delete", "pod"])
            .args(ids)
            .args(["--wait=false", "--ignore-not-found"]);
        cmd
    }

    fn follows_leavers(&self) -> bool {
        true
    }

    fn cleaned_up(&self, state: &str) -> bool {
        // A worker that retired exits 0: its pod completed, and is of no more use. Failed
        // ones stay for `kubectl logs`.
        state == "Succeeded"
    }
}

#[cfg(test)]
mod tests {
    use super::super::Backend;
    use super::*;

    fn config() -> PodConfig {
        PodConfig {
            image: "ghcr.io/fabric/fabric:0.1.0".into(),
            namespace: Some("fabric".into()),
            scheduler: "http://fabric-scheduler:7878".into(),
            cores: 2,
            memory: 6 << 30,
            nthreads: None,
            task_memory: DEFAULT_TASK_MEMORY,
            retire_timeout: DEFAULT_RETIRE_TIMEOUT,
            death_timeout: Duration::from_secs(60),
            lifetime: None,
            lifetime_stagger: None,
            worker_extra_args: vec!["--resources=gpu=1".into()],
            token_secret: "fabric-worker-token".into(),
            pod_override: None,
        }
    }

    fn strings(json: &Json) -> Vec<&str> {
        json.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect()
    }

    #[test]
    fn the_pod_runs_a_worker_shaped_by_the_flags() {
        let p = pod(&config(), "a1b2c3", 4).unwrap();
        assert_eq!(p["metadata"]["name"], "fabric-worker-a1b2c3-4");
        assert_eq!(p["metadata"]["namespace"], "fabric");
        let labels = &p["metadata"]["labels"];
        assert_eq!(labels[INSTANCE_LABEL], "a1b2c3");
        assert_eq!(labels["app.kubernetes.io/name"], "fabric-worker");
        assert_eq!(labels["app.kubernetes.io/managed-by"], "fabric-scheduler");
        let spec = &p["spec"];
        assert_eq!(spec["restartPolicy"], "Never");
        assert_eq!(spec["terminationGracePeriodSeconds"], 150);
        let container = &spec["containers"][0];
        assert_eq!(
            strings(&container["args"]),
            [
                "worker",
                "--scheduler",
                "http://fabric-scheduler:7878",
                "--name",
                "fabric-worker-a1b2c3-4",
                "--nthreads",
                "2",
                "--memory-limit",
                "5120MiB",
                "--death-timeout",
                "1m",
                "--spill-dir",
                "/var/spill",
                "--resources=gpu=1",
            ]
        );
        let resources = json!({ "cpu": "2", "memory": "6Gi" });
        assert_eq!(container["resources"]["requests"], resources);
        assert_eq!(container["resources"]["limits"], resources);
        assert_eq!(
            container["env"][0]["valueFrom"]["secretKeyRef"],
            json!({ "name": "fabric-worker-token", "key": "token" })
        );
        assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);

        let mut c = config();
        c.memory = 1536 << 20;
        c.nthreads = Some(1);
        c.lifetime = Some(Duration::from_secs(3600));
        c.lifetime_stagger = Some(Duration::from_secs(300));
        c.retire_timeout = Duration::from_millis(200_500);
        let p = pod(&c, "x", 0).unwrap();
        let args = strings(&p["spec"]["containers"][0]["args"]).join(" ");
        assert!(
            args.contains(
                "--nthreads 1 --memory-limit 1024MiB --death-timeout 1m --lifetime 1h \
                 --lifetime-stagger 5m --spill-dir /var/spill"
            ),
            "{args}"
        );
        assert!(
            args.contains("--lifetime 1h --lifetime-stagger 5m"),
            "{args}"
        );
        assert_eq!(
            p["spec"]["containers"][0]["resources"]["limits"]["memory"],
            "1536Mi"
        );
        assert_eq!(p["spec"]["terminationGracePeriodSeconds"], 231);

        c.memory = 1 << 30;
        c.nthreads = Some(2);
        let err = pod(&c, "x", 0).unwrap_err();
        assert!(
            err.contains("--memory 1Gi leaves the worker 0Mi for values"),
            "{err}"
        );
        c.image.clear();
        assert!(pod(&c, "x", 0).unwrap_err().contains("--worker-image"));
    }

    #[test]
    fn an_override_is_merged_but_keeps_the_name_and_instance() {
        let mut c = config();
        c.pod_override = Some(json!({
            "metadata": { "name": "mine", "labels": { "team": "physics", INSTANCE_LABEL: "x" } },
            "spec": {
                "nodeSelector": { "pool": "workers" },
                "tolerations": [{ "key": "spot", "operator": "Exists" }],
                "automountServiceAccountToken": null,
                "serviceAccountName": "fabric-worker",
            },
        }));
        let p = pod(&c, "abc", 0).unwrap();
        assert_eq!(p["metadata"]["name"], "fabric-worker-abc-0");
        assert_eq!(p["metadata"]["labels"][INSTANCE_LABEL], "abc");
        assert_eq!(p["metadata"]["labels"]["team"], "physics");
        assert_eq!(
            p["metadata"]["labels"]["app.kubernetes.io/component"],
            "worker"
        );
        assert_eq!(p["spec"]["nodeSelector"]["pool"], "workers");
        assert_eq!(p["spec"]["tolerations"][0]["key"], "spot");
        assert!(p["spec"].get("automountServiceAccountToken").is_none());
        assert_eq!(p["spec"]["restartPolicy"], "Never");
    }

    #[test]
    fn merge_patches_follow_rfc_7386() {
        // The examples of RFC 7386's appendix A.
        let cases = [
            (r#"{"a":"b"}"#, r#"{"a":"c"}"#, r#"{"a":"c"}"#),
            (r#"{"a":"b"}"#, r#"{"b":"c"}"#, r#"{"a":"b","b":"c"}"#),
            (r#"{"a":"b"}"#, r#"{"a":null}"#, r#"{}"#),
            (r#"{"a":"b","b":"c"}"#, r#"{"a":null}"#, r#"{"b":"c"}"#),
            (r#"{"a":["b"]}"#, r#"{"a":"c"}"#, r#"{"a":"c"}"#),
            (r#"{"a":"c"}"#, r#"{"a":["b"]}"#, r#"{"a":["b"]}"#),
            (
                r#"{"a":{"b":"c"}}"#,
                r#"{"a":{"b":"d","c":null}}"#,
                r#"{"a":{"b":"d"}}"#,
            ),
            (r#"{"a":[{"b":"c"}]}"#, r#"{"a":[1]}"#, r#"{"a":[1]}"#),
            (r#"["a","b"]"#, r#"["c","d"]"#, r#"["c","d"]"#),
            (r#"{"a":"b"}"#, r#"["c"]"#, r#"["c"]"#),
            (r#"{"a":"foo"}"#, r#"null"#, r#"null"#),
            (r#"{"a":"foo"}"#, r#""bar""#, r#""bar""#),
            (r#"{"e":null}"#, r#"{"a":1}"#, r#"{"e":null,"a":1}"#),
            (r#"[1,2]"#, r#"{"a":"b","c":null}"#, r#"{"a":"b"}"#),
            (
                r#"{}"#,
                r#"{"a":{"bb":{"ccc":null}}}"#,
                r#"{"a":{"bb":{}}}"#,
            ),
        ];
        for (target, patch, result) in cases {
            let mut t: Json = serde_json::from_str(target).unwrap();
            merge_patch(&mut t, &serde_json::from_str(patch).unwrap());
            let want: Json = serde_json::from_str(result).unwrap();
            assert_eq!(t, want, "{target} + {patch}");
        }
    }

    #[test]
    fn pod_states_are_read_from_kubectl() {
        let pods = Pods {
            config: config(),
            kubectl: "kubectl".into(),
            instance: "abc".into(),
            created: 0,
        };
        let ids: Vec<String> = (0..6).map(|n| pod_name("abc", n)).collect();
        let out = "fabric-worker-abc-0\tRunning\t\n\
                   fabric-worker-abc-1\tPending\tImagePullBackOff\n\
                   fabric-worker-abc-2\tSucceeded\tCompleted\n\
                   fabric-worker-abc-3\tFailed\tOOMKilled\n\
                   fabric-worker-abc-4\tPending\tCreateContainerConfigError\n\
                   fabric-worker-zzz-0\tRunning\t\n";
        let states = pods.parse_status(&ids, true, out, "").unwrap();
        assert_eq!(states[&ids[0]], JobState::Active("Running".into()));
        assert_eq!(
            states[&ids[1]],
            JobState::Stuck("Pending (ImagePullBackOff)".into())
        );
        assert_eq!(states[&ids[2]], JobState::Over("Succeeded".into()));
        assert_eq!(states[&ids[3]], JobState::Over("Failed (OOMKilled)".into()));
        let JobState::Stuck(s) = &states[&ids[4]] else {
            panic!("{states:?}")
        };
        assert!(s.contains("Secret fabric-worker-token"), "{s}");
        assert!(!states.contains_key(&ids[5]), "not listed: gone");
        assert_eq!(states.len(), 5);
        let err = pods
            .parse_status(&ids, false, "", "error: You must be logged in\n")
            .unwrap_err();
        assert_eq!(err, "error: You must be logged in");

        let args: Vec<_> = pods
            .status_command(&ids)
            .get_args()
            .map(|a| a.to_owned())
            .collect();
        assert_eq!(
            args[..7],
            [
                "--request-timeout=30s",
                "--namespace",
                "fabric",
                "get",
                "pods",
                "-l",
                "fabric.dev/instance=abc"
            ]
        );
        let args: Vec<_> = pods
            .cancel_command(&ids[..2])
            .get_args()
            .map(|a| a.to_owned())
            .collect();
        assert_eq!(
            args,
            [
                "--request-timeout=30s",
                "--namespace",
                "fabric",
                "delete",
                "pod",
                "fabric-worker-abc-0",
                "fabric-worker-abc-1",
                "--wait=false",
                "--ignore-not-found"
            ]
        );
        assert!(pods.cleaned_up("Succeeded"));
        assert!(!pods.cleaned_up("Failed (Error)"));
    }

    #[test]
    fn instance_ids_are_short_lowercase_hex() {
        let id = instance_id();
        assert_eq!(id.len(), 6);
        assert!(
            id.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(instance_id(), instance_id());
    }
}
