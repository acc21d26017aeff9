//! Fair admission to the costly calls (submissions and component uploads): a few run at
//! once, and while more wait, tenants take turns one request each, so one tenant flooding
//! the scheduler with requests cannot slow another's (fair queuing, as Kubernetes' API
//! priority and fairness does it). A tenant with too many requests waiting is told to slow
//! down instead of queuing more.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;
use tonic::Status;

/// The gate.
pub(crate) struct FairGate {
    state: Mutex<State>,
    /// Calls let through at once.
    capacity: usize,
    /// Calls one tenant may have waiting.
    max_waiting: usize,
}

#[derive(Default)]
struct State {
    /// Calls let through and not yet done.
    running: usize,
    /// Each waiting tenant's calls, oldest first.
    waiting: HashMap<Arc<str>, VecDeque<oneshot::Sender<()>>>,
    /// Tenants with calls waiting, in the order they are served.
    turns: VecDeque<Arc<str>>,
}

/// A call let through; the next waiting one goes when it is dropped.
pub(crate) struct Pass<'g>(&'g FairGate);

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        self.0.leave();
    }
}

/// A call waiting at the gate. Dropped before its turn came (its client went away), it
/// leaves the queue; dropped just after its turn came, it passes the turn on.
struct Waiting<'g> {
    gate: &'g FairGate,
    turn: Option<oneshot::Receiver<()>>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Some(mut turn) = self.turn.take() {
            turn.close();
            if turn.try_recv().is_ok() {
                self.gate.leave();
            }
        }
    }
}

impl FairGate {
    /// A gate letting `capacity` calls through at once and `max_waiting` wait per tenant.
    pub(crate) fn new(capacity: usize, max_waiting: usize) -> FairGate {
        FairGate {
            state: Mutex::default(),
            capacity: capacity.max(1),
            max_waiting,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for `tenant`'s turn; RESOURCE_EXHAUSTED when it has too many calls waiting.
    pub(crate) async fn enter(&self, tenant: &Arc<str>) -> Result<Pass<'_>, Status> {
        let turn = {
            let mut s = self.lock();
            if s.running < self.capacity && s.turns.is_empty() {
                s.running += 1;
                return Ok(Pass(self));
            }
            let queue = s.waiting.entry(tenant.clone()).or_default();
            if queue.len() >= self.max_waiting {
                return Err(Status::resource_exhausted(format!(
                    "tenant `{tenant}` has {} requests waiting at the scheduler already: \
                     wait for them before sending more",
                    self.max_waiting
                )));
            }
            let (tx, rx) = oneshot::channel();
            queue.push_back(tx);
            if queue.len() == 1 {
                s.turns.push_back(tenant.clone());
            }
            rx
        };
        let mut waiting = Waiting {
            gate: self,
            turn: Some(turn),
        };
        let turn = waiting.turn.as_mut().expect("set above");
        turn.await
            .map_err(|_| Status::unavailable("the scheduler is shutting down"))?;
        waiting.turn = None;
        Ok(Pass(self))
    }

    /// A call is done: its place goes to the next tenant's oldest call, or is free.
    fn leave(&self) {
        let mut s = self.lock();
        while let Some(tenant) = s.turns.pop_front() {
            let queue = s.waiting.get_mut(&tenant).expect("a tenant in turn waits");
            let next = queue.pop_front().expect("a tenant in turn waits");
            if queue.is_empty() {
                s.waiting.remove(&tenant);
            } else {
                s.turns.push_back(tenant);
            }
            if next.send(()).is_ok() {
                return; // handed over: still running
            }
        }
        s.running -= 1;
    }

    /// Calls waiting now, for tests.
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.lock().waiting.values().map(VecDeque::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn waiting_tenants_take_turns_whatever_their_numbers() {
        rt().block_on(async {
            let gate = Arc::new(FairGate::new(1, 100));
            let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
            let first = gate.enter(&a).await.unwrap();
            let order = Arc::new(Mutex::new(Vec::new()));
            let mut tasks = Vec::new();
            // A queues ten calls, then B one: B goes second, not eleventh.
            for (i, t) in (0..10).map(|i| (i, &a)).chain([(10, &b)]) {
                let (gate, order, t) = (gate.clone(), order.clone(), t.clone());
                tasks.push(tokio::spawn(async move {
                    let _pass = gate.enter(&t).await.unwrap();
                    order.lock().unwrap().push(i);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }));
                tokio::task::yield_now().await;
            }
            assert_eq!(gate.waiting(), 11);
            drop(first);
            for t in tasks {
                t.await.unwrap();
            }
            let order = order.lock().unwrap().clone();
            assert_eq!(order[..2], [0, 10], "{order:?}");
            assert_eq!(gate.lock().running, 0);
        });
    }

    #[test]
    fn a_tenant_with_too_many_waiting_is_told_to_slow_down_and_others_are_not() {
        rt().block_on(async {
            let gate = Arc::new(FairGate::new(1, 2));
            let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
            let _first = gate.enter(&a).await.unwrap();
            let mut held = Vec::new();
            for _ in 0..2 {
                let (gate, a) = (gate.clone(), a.clone());
                held.push(tokio::spawn(async move {
                    let _ = gate.enter(&a).await;
                }));
                tokio::task::yield_now().await;
            }
            let err = gate.enter(&a).await.err().unwrap();
            assert_eq!(err.code(), tonic::Code::ResourceExhausted);
            assert!(err.message().contains("tenant `a` has 2 requests waiting"));
            let gate2 = gate.clone();
            let b_waits = tokio::spawn(async move { gate2.enter(&b).await.map(|_| ()) });
            tokio::task::yield_now().await;
            assert_eq!(gate.waiting(), 3);
            for h in held {
                h.abort();
            }
            b_waits.abort();
        });
    }

    #[test]
    fn a_call_abandoned_while_waiting_gives_its_place_up() {
        rt().block_on(async {
            let gate = FairGate::new(1, 10);
            let a: Arc<str> = "a".into();
            let first = gate.enter(&a).await.unwrap();
            // Waits, then is dropped (its client went away).
            let abandoned = tokio::time::timeout(Duration::from_millis(10), gate.enter(&a)).await;
            assert!(abandoned.is_err());
            drop(first);
            assert_eq!(
                gate.lock().running,
                0,
                "the place was not handed to the dropped call"
            );
            let _again = gate.enter(&a).await.unwrap();
            assert_eq!(gate.lock().running, 1);
        });
    }
}
