//! The audit log: append-only JSON lines, one per security event, never a secret.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Mutex;

use crate::principal::Principal;

/// One security event (an `auth`, `submit`, `cancel`, a denial, a token or tenant change).
#[derive(Debug)]
pub struct AuditEvent<'a> {
    /// What was attempted: `auth`, `submit`, `cancel`, `release`, `watch`, `forget`,
    /// `token.issue`, `token.revoke`, `tenant.add`, `register`...
    pub operation: &'a str,
    /// `ok`, `denied` (refused, or answered "not found" because it belongs to someone
    /// else) or `failed`.
    pub result: &'a str,
    /// Who, when authenticated.
    pub principal: Option<&'a Principal>,
    /// From where.
    pub peer: Option<SocketAddr>,
    /// What it concerns: `job 7`, `dataset a/x`, `token 0123...`.
    pub target: &'a str,
    /// Why, for refusals.
    pub detail: &'a str,
}

/// Where audit records go: a file opened for appending (mode 0600), or nowhere.
#[derive(Default)]
pub struct Audit {
    file: Option<Mutex<std::fs::File>>,
}

impl Audit {
    /// Appends to `path`, creating it (and its directory) if needed.
    pub fn open(path: &Path) -> std::io::Result<Audit> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut options = std::fs::OpenOptions::new();
        options.append(true).create(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        Ok(Audit {
            file: Some(Mutex::new(options.open(path)?)),
        })
    }

    /// An audit log that keeps nothing.
    pub fn none() -> Audit {
        Audit::default()
    }

    /// Writes one record: a JSON object on one line, written with one `write` so that
    /// records of concurrent writers never interleave.
    pub fn record(&self, event: AuditEvent<'_>) {
        let Some(file) = &self.file else { return };
        let time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let mut record = serde_json::json!({
            "time": (time * 1000.0).round() / 1000.0,
            "operation": event.operation,
            "result": event.result,
        });
        let fields = record.as_object_mut().expect("an object");
        if let Some(p) = event.principal {
            fields.insert("tenant".into(), (*p.tenant).into());
            fields.insert("principal".into(), (*p.name).into());
            fields.insert("role".into(), p.role.name().into());
            fields.insert("token".into(), (*p.token).into());
        }
        if let Some(peer) = event.peer {
            fields.insert("peer".into(), peer.to_string().into());
        }
        if !event.target.is_empty() {
            fields.insert("target".into(), event.target.into());
        }
        if !event.detail.is_empty() {
            fields.insert("detail".into(), event.detail.into());
        }
        let mut line = record.to_string();
        line.push('\n');
        let mut file = file.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = file.write_all(line.as_bytes()) {
            tracing::error!("cannot write the audit log: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Role;

    #[test]
    fn records_are_json_lines_appended() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let alice = Principal {
            tenant: "a".into(),
            name: "alice".into(),
            role: Role::Member,
            token: "00ff".into(),
        };
        for round in 0..2 {
            let audit = Audit::open(&path).unwrap();
            audit.record(AuditEvent {
                operation: "cancel",
                result: "denied",
                principal: Some(&alice),
                peer: Some("127.0.0.1:9".parse().unwrap()),
                target: "job 7",
                detail: &format!("round {round}"),
            });
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["operation"], "cancel");
        assert_eq!(lines[1]["tenant"], "a");
        assert_eq!(lines[1]["token"], "00ff");
        assert_eq!(lines[1]["peer"], "127.0.0.1:9");
        assert_eq!(lines[1]["detail"], "round 1");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }
}
