//! Data-plane capabilities: what a worker's data port asks before it sends a value. The
//! scheduler signs, for each fetch it lets happen, {value key, tenant, requester, expiry,
//! nonce} with a key it shares with its workers (given at registration); a worker serves
//! the value only against a capability that verifies, names that key, has not expired and
//! was not presented before.

use std::collections::HashMap;
use std::sync::Mutex;

const VERSION: u8 = 1;
const MAC_LEN: usize = 32;
const NONCE_LEN: usize = 16;

/// The key capabilities are signed with (blake3 in keyed mode: a MAC).
#[derive(Clone)]
pub struct CapabilityKey([u8; 32]);

impl std::fmt::Debug for CapabilityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CapabilityKey(..)")
    }
}

/// What a capability grants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capability {
    /// The value's key: job and unit.
    pub key: (u64, u32),
    /// The tenant whose job may read it.
    pub tenant: String,
    /// Who may present it: `worker NAME` (see [`Capability::worker`]) or `client <token
    /// id>` (see [`Capability::client`]).
    pub requester: String,
    /// When it stops being valid, in milliseconds since the Unix epoch.
    pub expires_ms: u64,
}

/// Why a capability was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CapabilityError {
    /// None was presented.
    #[error("no capability")]
    Missing,
    /// Malformed, or its signature does not verify.
    #[error("the capability is forged or damaged")]
    Forged,
    /// It is for another value.
    #[error("the capability is for another value")]
    WrongValue,
    /// It expired.
    #[error("the capability expired")]
    Expired,
    /// It was presented before.
    #[error("the capability was used already")]
    Replayed,
    /// It names a worker, and the connection presenting it is not that worker's.
    #[error("the capability is for {requester}, and this connection is {peer}")]
    WrongPeer {
        /// Whom it names.
        requester: String,
        /// Who presented it.
        peer: String,
    },
}

impl Capability {
    /// The requester a worker's fetches are signed for: the worker's authenticated name
    /// (its certificate's common name, or its token's name).
    pub fn worker(name: &str) -> String {
        format!("worker {name}")
    }

    /// The requester a client's fetches are signed for: its token.
    pub fn client(token: &str) -> String {
        format!("client {token}")
    }

    /// Whether a connection may present this capability. `peer_worker` is the worker
    /// name its verified certificate carries; `verified` says whether the connection could
    /// show one (TLS). A capability for a worker needs that worker's certificate on a TLS
    /// connection; on plain text nobody can be told apart, and a client's capability is a
    /// bearer's (it travels only to its client, over TLS where the cluster has it).
    pub fn admits(&self, verified: bool, peer_worker: Option<&str>) -> Result<(), CapabilityError> {
        match self.requester.strip_prefix("worker ") {
            Some(name) if verified && peer_worker != Some(name) => {
                Err(CapabilityError::WrongPeer {
                    requester: self.requester.clone(),
                    peer: peer_worker.map_or_else(
                        || "without a worker's certificate".to_string(),
                        |w| format!("worker {w}'s"),
                    ),
                })
            }
            _ => Ok(()),
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl CapabilityKey {
    /// A new random key.
    pub fn generate() -> Result<CapabilityKey, crate::TokenError> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| crate::TokenError::Random(e.to_string()))?;
        Ok(CapabilityKey(key))
    }

    /// The key of these 32 bytes (`None` for another length).
    pub fn from_bytes(bytes: &[u8]) -> Option<CapabilityKey> {
        Some(CapabilityKey(bytes.try_into().ok()?))
    }

    /// Its bytes, for the workers.
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Signs `cap`: the bytes a fetch presents.
    pub fn sign(&self, cap: &Capability) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        // Without randomness a nonce is still unique enough for replay detection if it
        // never repeats; fall back to the clock.
        if getrandom::fill(&mut nonce).is_err() {
            nonce[..8].copy_from_slice(&now_ms().to_le_bytes());
        }
        let mut out = Vec::with_capacity(64 + cap.tenant.len() + cap.requester.len());
        out.push(VERSION);
        out.extend_from_slice(&cap.key.0.to_le_bytes());
        out.extend_from_slice(&cap.key.1.to_le_bytes());
        out.extend_from_slice(&cap.expires_ms.to_le_bytes());
        out.extend_from_slice(&nonce);
        for text in [&cap.tenant, &cap.requester] {
            let len = text.len().min(u16::MAX as usize);
            out.extend_from_slice(&(len as u16).to_le_bytes());
            out.extend_from_slice(&text.as_bytes()[..len]);
        }
        let mac = blake3::keyed_hash(&self.0, &out);
        out.extend_from_slice(mac.as_bytes());
        out
    }

    /// Checks `bytes` for a fetch of `key` at `now_ms`: its signature, value and expiry
    /// (not replays: see [`ReplayGuard`]). Returns what it grants and its nonce.
    pub fn verify(
        &self,
        bytes: &[u8],
        key: (u64, u32),
        now_ms: u64,
    ) -> Result<(Capability, [u8; NONCE_LEN]), CapabilityError> {
        if bytes.is_empty() {
            return Err(CapabilityError::Missing);
        }
        let body_len = bytes
            .len()
            .checked_sub(MAC_LEN)
            .ok_or(CapabilityError::Forged)?;
        let (body, mac) = bytes.split_at(body_len);
        let mac = blake3::Hash::from_bytes(mac.try_into().map_err(|_| CapabilityError::Forged)?);
        // `blake3::Hash`'s equality is constant-time.
        if blake3::keyed_hash(&self.0, body) != mac {
            return Err(CapabilityError::Forged);
        }
        let cap = decode(body).ok_or(CapabilityError::Forged)?;
        if cap.0.key != key {
            return Err(CapabilityError::WrongValue);
        }
        if cap.0.expires_ms <= now_ms {
            return Err(CapabilityError::Expired);
        }
        Ok(cap)
    }
}

fn decode(body: &[u8]) -> Option<(Capability, [u8; NONCE_LEN])> {
    let mut rest = body;
    let mut take = |n: usize| -> Option<&[u8]> {
        let (head, tail) = rest.split_at_checked(n)?;
        rest = tail;
        Some(head)
    };
    if take(1)? != [VERSION] {
        return None;
    }
    let job = u64::from_le_bytes(take(8)?.try_into().ok()?);
    let unit = u32::from_le_bytes(take(4)?.try_into().ok()?);
    let expires_ms = u64::from_le_bytes(take(8)?.try_into().ok()?);
    let nonce: [u8; NONCE_LEN] = take(NONCE_LEN)?.try_into().ok()?;
    let mut text = || -> Option<String> {
        let len = u16::from_le_bytes(take(2)?.try_into().ok()?);
        String::from_utf8(take(len as usize)?.to_vec()).ok()
    };
    let tenant = text()?;
    let requester = text()?;
    let cap = Capability {
        key: (job, unit),
        tenant,
        requester,
        expires_ms,
    };
    rest.is_empty().then_some((cap, nonce))
}

/// The nonces of capabilities presented to one server, kept until they expire: a
/// capability is good for one fetch.
#[derive(Default)]
pub struct ReplayGuard {
    seen: Mutex<HashMap<[u8; NONCE_LEN], u64>>,
}

impl ReplayGuard {
    /// Records the nonce of a capability valid until `expires_ms`; `Err` if it was seen.
    pub fn first_use(
        &self,
        nonce: [u8; NONCE_LEN],
        expires_ms: u64,
        now_ms: u64,
    ) -> Result<(), CapabilityError> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= 4096 && seen.len().is_power_of_two() {
            seen.retain(|_, &mut until| until > now_ms);
        }
        if seen.insert(nonce, expires_ms).is_some() {
            return Err(CapabilityError::Replayed);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cap(expires_ms: u64) -> Capability {
        Capability {
            key: (7, 3),
            tenant: "a".into(),
            requester: "w1".into(),
            expires_ms,
        }
    }

    #[test]
    fn a_capability_verifies_once_for_its_value_until_it_expires() {
        let key = CapabilityKey::generate().unwrap();
        let guard = ReplayGuard::default();
        let signed = key.sign(&cap(2_000));
        let (granted, nonce) = key.verify(&signed, (7, 3), 1_000).unwrap();
        assert_eq!(granted, cap(2_000));
        guard.first_use(nonce, 2_000, 1_000).unwrap();
        assert_eq!(
            guard.first_use(nonce, 2_000, 1_001),
            Err(CapabilityError::Replayed)
        );
        assert_eq!(
            key.verify(&signed, (7, 4), 1_000).unwrap_err(),
            CapabilityError::WrongValue
        );
        assert_eq!(
            key.verify(&signed, (7, 3), 2_000).unwrap_err(),
            CapabilityError::Expired
        );
        assert_eq!(
            key.verify(&[], (7, 3), 0).unwrap_err(),
            CapabilityError::Missing
        );
        // Another key's signature.
        let other = CapabilityKey::generate().unwrap();
        assert_eq!(
            other.verify(&signed, (7, 3), 1_000).unwrap_err(),
            CapabilityError::Forged
        );
        // Two signings of the same grant differ (their nonces).
        assert_ne!(key.sign(&cap(2_000)), signed);
    }

    proptest! {
        #[test]
        fn any_tampering_is_refused(at in 0usize..200, bit in 0u8..8, cut in 0usize..200) {
            let key = CapabilityKey([9; 32]);
            let signed = key.sign(&cap(u64::MAX));
            let mut flipped = signed.clone();
            let at = at % flipped.len();
            flipped[at] ^= 1 << bit;
            prop_assert!(key.verify(&flipped, (7, 3), 0).is_err());
            let cut = cut % signed.len();
            prop_assert!(key.verify(&signed[..cut], (7, 3), 0).is_err());
        }
    }
}
