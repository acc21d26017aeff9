//! Futures (fabric-client's `Session::submit`): tasks submitted to a real cluster, each
//! future resolving as soon as its task finishes, passed to later submissions, yielded in
//! completion order, failing with the guest's message, cancelled and released.

use std::time::{Duration, Instant};

use fabric_client::typed::Value;
use fabric_client::{
    Arg, Client, ClientError, Component, Credentials, Future, FutureStatus, Session, as_completed,
    gather,
};
use fabric_tests::{Cluster, block_on, guest};
use serde_json::json;

/// A session with the math and faulty guests.
fn session() -> (Session, Component, Component) {
    let session = Session::new();
    let math = session.component(guest("math")).unwrap();
    let faulty = session.component(guest("faulty")).unwrap();
    (session, math, faulty)
}

/// The jobs the cluster holds now.
async fn held_jobs(client: &Client) -> Vec<u64> {
    let status = client.status().await.unwrap();
    status.jobs.iter().map(|j| j.id).collect()
}

/// Waits (up to 20 s) until the cluster no longer holds `job`.
async fn until_gone(client: &Client, job: u64) {
    let start = Instant::now();
    loop {
        let held = held_jobs(client).await;
        if !held.contains(&job) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "job {job} is still held: {held:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn futures_resolve_as_their_tasks_finish_and_feed_later_submissions() {
    let cluster = Cluster::start(2, &["--nthreads", "2"]);
    let (session, math, faulty) = session();
    block_on(async {
        let client = cluster.client().await;

        // A chain in one submission: one job, a future per task asked for.
        let a = math.call("inc", (1,)).unwrap();
        let b = math.call("add", (&a, 2)).unwrap();
        let c = math
            .call("sum", (vec![Arg::from(&a), Arg::from(&b), Arg::from(10)],))
            .unwrap();
        let futures = session.submit(&client, [&a, &b, &c]).await.unwrap();
        assert_eq!(futures.len(), 3);
        assert!(futures.iter().all(|f| f.job() == futures[0].job()));
        assert_eq!(futures[2].key(), c.id());
        assert_eq!(futures[2].ty().to_string(), "s64");
        assert_eq!(futures[2].result().await.unwrap(), Value::S64(16));
        assert_eq!(gather(&futures).await.unwrap(), [2, 4, 16].map(Value::S64));
        assert!(futures.iter().all(|f| f.status() == FutureStatus::Finished));

        // A future resolves when its task finishes, not when its job ends: the fast
        // task's value comes while the slow one still runs, and `as_completed` yields
        // in completion order.
        let slow = math.call("slow-inc", (100, 3000)).unwrap();
        let fast = math.call("inc", (5,)).unwrap();
        let both = session.submit(&client, [&slow, &fast]).await.unwrap();
        assert_eq!(both[1].result().await.unwrap(), Value::S64(6));
        assert_eq!(
            both[0].status(),
            FutureStatus::Pending,
            "the slow task runs on"
        );
        let mut order: Vec<Future> = Vec::new();
        let mut completed = as_completed(both.clone());
        while let Some(f) = completed.next().await {
            order.push(f);
        }
        assert_eq!(order, [both[1].clone(), both[0].clone()]);
        assert_eq!(both[0].result().await.unwrap(), Value::S64(101));

        // A future passed to a later call while its task still runs: the call is checked
        // against its type, the graph refers to the output on the cluster, and the later
        // job is submitted at once (the scheduler runs the call once the output is in).
        let pending = session
            .submit(&client, [math.call("slow-inc", (10, 1500)).unwrap()])
            .await
            .unwrap()
            .remove(0);
        assert_eq!(pending.status(), FutureStatus::Pending);
        let e = math.call("fsum", (&pending,)).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "math/fsum: parameter `xs` expects list<f64>, got future `{}` of job {} of type s64",
                pending.key(),
                pending.job()
            )
        );
        let d = math.call("add", (&pending, 5)).unwrap();
        let graph = serde_json::to_value(session.to_graph([&d]).unwrap()).unwrap();
        assert_eq!(
            graph["tasks"][d.id()]["args"],
            json!([{"job": pending.job(), "key": pending.key()}, 5])
        );
        let later = session.submit(&client, [&d]).await.unwrap();
        assert_ne!(later[0].job(), pending.job());
        assert_eq!(
            pending.status(),
            FutureStatus::Pending,
            "submitted while the task it uses still runs"
        );
        let held = held_jobs(&client).await;
        assert!(held.contains(&later[0].job()), "{held:?}");
        assert_eq!(later[0].status(), FutureStatus::Pending);
        assert_eq!(later[0].result().await.unwrap(), Value::S64(16));
        // Futures of finished jobs feed further calls, as a chain of jobs.
        let e2 = math.call("mul", (&later[0], &futures[1])).unwrap();
        let again = session.submit(&client, [&e2]).await.unwrap();
        assert_eq!(again[0].result().await.unwrap(), Value::S64(64));
        assert_eq!(
            session.compute(&client, [&e2]).await.unwrap(),
            [Value::S64(64)]
        );
        // A future is no task to ask for.
        let e = session.submit(&client, [pending.task()]).await.unwrap_err();
        assert!(e.to_string().contains("not a task"), "{e}");

        // A guest that panics: its future's error carries the message, and a task that
        // needed it says which input failed.
        let boom = faulty.call("boom", ("kaboom",)).unwrap();
        let after = math.call("inc", (&boom,)).unwrap();
        let failed = session.submit(&client, [&boom, &after]).await.unwrap();
        match failed[0].result().await {
            Err(ClientError::TaskFailed { task, failure }) => {
                assert_eq!(task, boom.id());
                assert_eq!(failure.task, boom.id());
                assert_eq!(failure.call, "faulty/boom");
                assert!(failure.message.contains("kaboom"), "{failure:?}");
            }
            other => panic!("expected the task's failure, got {other:?}"),
        }
        let e = failed[1].result().await.unwrap_err();
        assert!(
            e.to_string().starts_with(&format!(
                "task `{}` did not run: its input `{}` (faulty/boom) failed",
                after.id(),
                boom.id()
            )) && e.to_string().contains("kaboom"),
            "{e}"
        );
        assert_eq!(failed[1].status(), FutureStatus::Failed);
        // A failed future makes a submission that uses it fail before anything is sent.
        let using = math.call("inc", (&failed[0],)).unwrap();
        let e = session.submit(&client, [&using]).await.unwrap_err();
        assert!(e.to_string().contains("kaboom"), "{e}");
        // An error returned by the guest (`result<_, string>`'s `err`).
        let refused = faulty.call("fail", ("no luck",)).unwrap();
        let e = session.submit(&client, [&refused]).await.unwrap()[0]
            .result()
            .await
            .unwrap_err();
        assert!(e.to_string().contains("no luck"), "{e}");
    });
}

#[test]
fn futures_are_cancelled_and_released_and_jobs_go_with_their_last_future() {
    let cluster = Cluster::start(2, &["--nthreads", "1"]);
    let (session, math, _) = session();
    block_on(async {
        let client = cluster.client().await;

        // Cancelled while it runs: it settles at once, and the job goes from the cluster.
        let slow = math.call("slow-inc", (1, 30_000)).unwrap();
        let f = session.submit(&client, [&slow]).await.unwrap().remove(0);
        assert!(held_jobs(&client).await.contains(&f.job()));
        f.cancel().await.unwrap();
        assert_eq!(f.status(), FutureStatus::Cancelled);
        match f.result().await {
            Err(ClientError::Cancelled { task, .. }) => assert_eq!(task, slow.id()),
            other => panic!("expected a cancelled future, got {other:?}"),
        }
        until_gone(&client, f.job()).await;

        // Its job cancelled on the cluster (`fabric cancel`) while a later job waits for
        // it: the later call fails, saying so. (Cancelling the future alone would not stop
        // the job: the later job holds it.)
        let slow = math.call("slow-inc", (1, 5_000)).unwrap();
        let first = session.submit(&client, [&slow]).await.unwrap().remove(0);
        let waits = math.call("inc", (&first,)).unwrap();
        let waiting = session.submit(&client, [&waits]).await.unwrap().remove(0);
        assert_eq!(first.status(), FutureStatus::Pending);
        assert!(client.cancel(first.job()).await.unwrap());
        let e = waiting.result().await.unwrap_err();
        assert!(
            e.to_string().contains(&format!(
                "its input, job {}'s task `{}`, was not computed: job {} was cancelled",
                first.job(),
                slow.id(),
                first.job()
            )),
            "{e}"
        );
        assert_eq!(waiting.status(), FutureStatus::Failed);
        assert!(matches!(
            first.result().await,
            Err(ClientError::Cancelled { .. })
        ));
        let jobs = (first.job(), waiting.job());
        drop((first, waiting));
        until_gone(&client, jobs.0).await;
        until_gone(&client, jobs.1).await;

        // Released once computed: the job goes; its futures have no value any more.
        let g = session
            .submit(&client, [math.call("inc", (41,)).unwrap()])
            .await
            .unwrap()
            .remove(0);
        assert_eq!(g.result().await.unwrap(), Value::S64(42));
        assert!(held_jobs(&client).await.contains(&g.job()));
        g.release();
        assert_eq!(g.status(), FutureStatus::Released);
        assert!(g.done());
        assert!(matches!(
            g.result().await,
            Err(ClientError::Cancelled { .. })
        ));
        until_gone(&client, g.job()).await;

        // Dropping every future of a job releases it; while a later job uses one of them,
        // the job is kept for it.
        let h = session
            .submit(&client, [math.call("inc", (1,)).unwrap()])
            .await
            .unwrap()
            .remove(0);
        h.wait().await.unwrap();
        let job = h.job();
        let uses = math.call("slow-inc", (&h, 600)).unwrap();
        let later = session.submit(&client, [&uses]).await.unwrap().remove(0);
        drop(uses);
        drop(h);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            held_jobs(&client).await.contains(&job),
            "kept for the later job"
        );
        assert_eq!(later.result().await.unwrap(), Value::S64(3));
        let later_job = later.job();
        drop(later);
        until_gone(&client, job).await;
        until_gone(&client, later_job).await;

        // Cancelling one future of a job leaves the others: the job runs on for them.
        let tasks: Vec<_> = (0..3)
            .map(|i| math.call("slow-inc", (i, 300)).unwrap())
            .collect();
        let three = session.submit(&client, &tasks).await.unwrap();
        three[0].cancel().await.unwrap();
        assert_eq!(three[1].result().await.unwrap(), Value::S64(2));
        assert_eq!(three[2].result().await.unwrap(), Value::S64(3));
        let job = three[1].job();
        drop(three);
        until_gone(&client, job).await;
    });
}

#[test]
fn outputs_of_other_principals_jobs_are_unknown() {
    let cluster = Cluster::start(1, &["--nthreads", "1"]);
    let (session, math, _) = session();
    let token = cluster.issue_token("acme", "ann", "member");
    block_on(async {
        let client = cluster.client().await;
        let mine = session
            .submit(&client, [math.call("inc", (1,)).unwrap()])
            .await
            .unwrap()
            .remove(0);
        mine.wait().await.unwrap();
        // Another tenant's client refers to the job's output by id: no such job for it.
        let other = Client::connect_with(&cluster.url, cluster.with_ca(Credentials::token(token)))
            .await
            .unwrap();
        let graph = json!({
            "tasks": {"t": {"call": "math/inc", "args": [{"job": mine.job(), "key": mine.key()}]}},
            "outputs": ["t"]
        });
        let submission = fabric_client::Submission::new(
            graph.to_string(),
            vec![fabric_client::ComponentSource::new(
                "math",
                std::fs::read(guest("math")).unwrap(),
            )],
        );
        match other.submit(&submission, None).await {
            Err(ClientError::Rejected(problems)) => assert_eq!(
                problems,
                [format!(
                    "task `t`: unknown job {} (released, never submitted, or not yours; a \
                     job's outputs are used on the cluster that computed them) in argument 1 (`x`)",
                    mine.job()
                )]
            ),
            other => panic!("expected a rejection, got {other:?}"),
        }
        // Its owner may, and the output's type is checked like a dataset value's.
        let wrong = json!({
            "tasks": {"t": {"call": "math/fsum", "args": [{"job": mine.job(), "key": mine.key()}]}},
            "outputs": ["t"]
        });
        let submission = fabric_client::Submission::new(wrong.to_string(), submission.components);
        match client.submit(&submission, None).await {
            Err(ClientError::Rejected(problems)) => assert_eq!(
                problems,
                [format!(
                    "task `t`: argument 1 (`xs`) expects list<f64>, but output `{}` of job {} is s64",
                    mine.key(),
                    mine.job()
                )]
            ),
            other => panic!("expected a rejection, got {other:?}"),
        }
    });
}

#[test]
fn ten_thousand_tasks_in_one_submission_all_resolve() {
    let cluster = Cluster::start(2, &["--nthreads", "2"]);
    let (session, math, _) = session();
    block_on(async {
        let client = cluster.client().await;
        let tasks: Vec<_> = (0..10_000i64)
            .map(|i| math.call("inc", (i,)).unwrap())
            .collect();
        let futures = session.submit(&client, &tasks).await.unwrap();
        assert_eq!(futures.len(), 10_000);
        let mut seen = 0;
        let mut stream = as_completed(futures.clone());
        while let Some(f) = stream.next().await {
            assert_eq!(f.status(), FutureStatus::Finished);
            seen += 1;
        }
        assert_eq!(seen, 10_000);
        let values = gather(&futures).await.unwrap();
        let expected: Vec<Value> = (1..=10_000).map(Value::S64).collect();
        assert_eq!(values, expected);
    });
}
