//! The worker's side of the data plane: its value store, as the source fabric-proto's data
//! server ([`fabric_proto::transport::serve`]) serves to peers and clients, each fetch
//! against a capability the scheduler signed.

use std::sync::{Arc, OnceLock, RwLock};

use fabric_auth::{CapabilityKey, ReplayGuard, now_ms};
use fabric_core::{JobId, UnitIdx, Value};
use fabric_proto::transport::{DataPeer, ValueSource};
use fabric_proto::v1;
use tokio::sync::mpsc;

use crate::store::ValueStore;

/// What the data port asks of a fetch: a capability that verifies with the scheduler's key
/// (set at each registration), for the value asked, not expired, presented by the worker it
/// names (on TLS), not presented before.
#[derive(Default)]
pub struct Gate {
    key: RwLock<Option<CapabilityKey>>,
    seen: ReplayGuard,
    /// Where refusals are reported, for the scheduler's audit log (once the session
    /// exists).
    report: OnceLock<mpsc::UnboundedSender<v1::WorkerEvent>>,
}

impl Gate {
    /// The scheduler's key, from its answer to `Register`; a key that is not 32 bytes
    /// closes the gate.
    pub fn set_key(&self, bytes: &[u8]) {
        let key = CapabilityKey::from_bytes(bytes);
        if key.is_none() {
            tracing::error!("the scheduler sent no capability key: the data port serves nothing");
        }
        *self.key.write().unwrap_or_else(|e| e.into_inner()) = key;
    }

    /// Reports every refusal from now on as a `FetchDenied` event on `events`.
    pub fn report_to(&self, events: mpsc::UnboundedSender<v1::WorkerEvent>) {
        let _ = self.report.set(events);
    }

    fn check(&self, key: (u64, u32), capability: &[u8], peer: &DataPeer) -> Result<(), String> {
        let checked = self.verify(key, capability, peer);
        if let (Err(why), Some(events)) = (&checked, self.report.get()) {
            let denied = v1::FetchDenied {
                key: Some(v1::ValueKey {
                    job: key.0,
                    unit: key.1,
                }),
                reason: why.clone(),
                peer: peer.address.map(|a| a.to_string()).unwrap_or_default(),
                peer_worker: peer.worker.as_deref().unwrap_or_default().to_string(),
            };
            let _ = events.send(v1::WorkerEvent {
                event: Some(v1::worker_event::Event::FetchDenied(denied)),
            });
        }
        checked
    }

    fn verify(&self, key: (u64, u32), capability: &[u8], peer: &DataPeer) -> Result<(), String> {
        let guard = self.key.read().unwrap_or_else(|e| e.into_inner());
        let signing = guard
            .as_ref()
            .ok_or("this worker has no capability key (not registered)")?;
        let now = now_ms();
        let (granted, nonce) = signing
            .verify(capability, key, now)
            .map_err(|e| e.to_string())?;
        // Before the nonce is spent: a thief's attempt does not use up the owner's.
        granted
            .admits(peer.tls, peer.worker.as_deref())
            .map_err(|e| e.to_string())?;
        self.seen
            .first_use(nonce, granted.expires_ms, now)
            .map_err(|e| e.to_string())
    }
}

/// A worker's values, read off the async reactor (a spilled one comes back from disk).
#[derive(Clone)]
pub struct StoreSource {
    /// The values.
    pub store: Arc<ValueStore>,
    /// What a fetch must present.
    pub gate: Arc<Gate>,
}

impl ValueSource for StoreSource {
    fn check(&self, key: (u64, u32), capability: &[u8], peer: &DataPeer) -> Result<(), String> {
        self.gate.check(key, capability, peer)
    }

    async fn get(&self, key: (JobId, UnitIdx)) -> Result<Option<Value>, String> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.get(key))
            .await
            .map_err(|e| format!("reading a value panicked: {e}"))?
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use fabric_auth::Capability;

    use super::*;

    fn peer(tls: bool, worker: Option<&str>) -> DataPeer {
        DataPeer {
            tls,
            worker: worker.map(Into::into),
            address: None,
        }
    }

    #[test]
    fn on_tls_a_workers_capability_opens_only_for_that_workers_certificate() {
        let key = CapabilityKey::generate().unwrap();
        let gate = Gate::default();
        gate.set_key(key.bytes());
        let (events, mut reported) = mpsc::unbounded_channel();
        gate.report_to(events);
        let sign = |requester: String| {
            key.sign(&Capability {
                key: (1, 2),
                tenant: "a".into(),
                requester,
                expires_ms: now_ms() + 60_000,
            })
        };
        let w1 = sign(Capability::worker("w1"));
        // Another worker's certificate, or none: refused, and the nonce is not spent...
        let e = gate
            .check((1, 2), &w1, &peer(true, Some("w2")))
            .unwrap_err();
        assert_eq!(
            e,
            "the capability is for worker w1, and this connection is worker w2's"
        );
        let e = gate.check((1, 2), &w1, &peer(true, None)).unwrap_err();
        assert!(e.ends_with("without a worker's certificate"), "{e}");
        // ...so w1 still fetches with it, once.
        gate.check((1, 2), &w1, &peer(true, Some("w1"))).unwrap();
        let e = gate
            .check((1, 2), &w1, &peer(true, Some("w1")))
            .unwrap_err();
        assert!(e.contains("used already"), "{e}");
        // On plain text nobody can be told apart; a client's capability is a bearer's.
        gate.check((1, 2), &sign(Capability::worker("w1")), &peer(false, None))
            .unwrap();
        gate.check((1, 2), &sign(Capability::client("t1")), &peer(true, None))
            .unwrap();
        // Each refusal was reported, for the scheduler's audit log; nothing else was.
        let mut denials = Vec::new();
        while let Ok(event) = reported.try_recv() {
            match event.event {
                Some(v1::worker_event::Event::FetchDenied(d)) => denials.push(d),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(denials.len(), 3);
        assert_eq!(denials[0].peer_worker, "w2");
        assert!(
            denials[2].reason.contains("used already"),
            "{:?}",
            denials[2]
        );
    }
}
