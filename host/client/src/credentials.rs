//! How a client proves who it is, and who the scheduler says it is.

use std::path::{Path, PathBuf};

use fabric_auth::Role;
use fabric_auth::local::{Found, Holder, find_token};

use crate::ClientError;

/// The token a client presents on every call.
///
/// [`Credentials::from_env`] looks where `fabric` does: `FABRIC_TOKEN` (the token itself),
/// `FABRIC_TOKEN_FILE` (a file holding it), then `$FABRIC_HOME/token` (`FABRIC_HOME`
/// defaults to `~/.fabric`; a scheduler started by the same user writes that file).
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    found: Option<Found>,
    /// The cluster CA's certificate, to verify an `https://` scheduler.
    ca: Option<PathBuf>,
}

impl Credentials {
    /// No token (every call is refused, with a message saying how to get one).
    pub fn none() -> Credentials {
        Credentials::default()
    }

    /// This token.
    pub fn token(token: impl Into<String>) -> Credentials {
        Credentials {
            found: Some(Found {
                token: token.into().trim().to_string(),
                source: "the program".into(),
            }),
            ca: None,
        }
    }

    /// The token in this file.
    pub fn file(path: &Path) -> Result<Credentials, ClientError> {
        let found = fabric_auth::local::read_token(path).map_err(ClientError::Invalid)?;
        Ok(Credentials {
            found: Some(found),
            ca: None,
        })
    }

    /// The token found in the environment or under `FABRIC_HOME` (none if nowhere), and
    /// the CA `FABRIC_CA` names.
    pub fn from_env() -> Result<Credentials, ClientError> {
        let found = find_token(Holder::Client, None).map_err(ClientError::Invalid)?;
        let ca = std::env::var_os("FABRIC_CA")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from);
        Ok(Credentials { found, ca })
    }

    /// Verifies an `https://` scheduler against the CA certificate in this file.
    pub fn with_ca(mut self, ca: &Path) -> Credentials {
        self.ca = Some(ca.to_path_buf());
        self
    }

    /// The CA certificate's file.
    pub(crate) fn ca(&self) -> Option<&Path> {
        self.ca.as_deref()
    }

    /// The token's text (what `fabric dashboard` puts in the link it prints).
    pub fn text(&self) -> Option<&str> {
        self.found.as_ref().map(|f| f.token.as_str())
    }

    /// Where the token came from, for messages.
    pub(crate) fn source(&self) -> Option<&str> {
        self.found.as_ref().map(|f| f.source.as_str())
    }
}

/// Who the scheduler says the client is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The tenant its jobs run for and its datasets belong to.
    pub tenant: String,
    /// Its principal's name.
    pub principal: String,
    /// What it may do.
    pub role: Role,
}
