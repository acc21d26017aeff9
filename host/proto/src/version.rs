//! The protocol version every peer states, and the check that refuses a different one.

/// The version of the protocol this crate speaks. Clients state it in `Handshake`,
/// workers in `Register`; the scheduler refuses any other with a [`VersionMismatch`].
///
/// Bump it with any change of meaning of the protocol. Fields added compatibly (old peers
/// ignore them, new peers cope with their absence) do not need a bump.
pub const PROTOCOL_VERSION: u32 = 2;

/// A peer speaks another version of the protocol than this process.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "Fabric protocol mismatch: this {local_role} speaks version {local}, the {peer_role} {}; run the same Fabric release on every process of a cluster",
    peer_said(*peer)
)]
pub struct VersionMismatch {
    /// What this process is: `scheduler`.
    pub local_role: &'static str,
    /// The version this process speaks ([`PROTOCOL_VERSION`]).
    pub local: u32,
    /// What the peer is: `worker`, `client`.
    pub peer_role: &'static str,
    /// The version the peer stated (0: it stated none).
    pub peer: u32,
}

fn peer_said(peer: u32) -> String {
    if peer == 0 {
        "stated no version (is it a Fabric process?)".into()
    } else {
        format!("speaks version {peer}")
    }
}

/// Checks the version a peer stated against [`PROTOCOL_VERSION`].
pub fn check_version(
    local_role: &'static str,
    peer_role: &'static str,
    peer: u32,
) -> Result<(), VersionMismatch> {
    if peer == PROTOCOL_VERSION {
        Ok(())
    } else {
        Err(VersionMismatch {
            local_role,
            local: PROTOCOL_VERSION,
            peer_role,
            peer,
        })
    }
}

/// What a server answers a peer of another version: `FAILED_PRECONDITION` with the message.
impl From<VersionMismatch> for tonic::Status {
    fn from(e: VersionMismatch) -> tonic::Status {
        tonic::Status::failed_precondition(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mismatches_are_explained() {
        assert_eq!(
            check_version("scheduler", "worker", PROTOCOL_VERSION),
            Ok(())
        );
        let e = check_version("scheduler", "worker", PROTOCOL_VERSION + 1).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Fabric protocol mismatch: this scheduler speaks version 2, the worker speaks version 3; run the same Fabric release on every process of a cluster"
        );
        let e = check_version("scheduler", "client", 0).unwrap_err();
        assert!(
            e.to_string()
                .contains("the client stated no version (is it a Fabric process?)"),
            "{e}"
        );
        let status = tonic::Status::from(e);
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    }
}
