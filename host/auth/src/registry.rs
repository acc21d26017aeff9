//! The registry of tenants and tokens, kept in one private JSON file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::principal::{Principal, Role};
use crate::token::Token;

/// A token as listed: everything but its secret.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TokenInfo {
    /// Its public id (16 hex digits).
    pub id: String,
    /// The tenant it acts for.
    pub tenant: String,
    /// The principal's name.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// When it was issued, in seconds since the Unix epoch.
    pub created: u64,
    /// Revoked tokens stay listed (and refused) so that their ids keep their meaning in
    /// the audit log.
    #[serde(default)]
    pub revoked: bool,
}

/// Why a token was refused, or a change could not be made.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The request carried no token.
    #[error("no token: set FABRIC_TOKEN (or FABRIC_TOKEN_FILE) to a token from your operator")]
    Missing,
    /// The request's token is not a token, unknown, or its secret does not match.
    #[error("the token is not valid")]
    Invalid,
    /// The token was revoked.
    #[error("the token {id} was revoked")]
    Revoked {
        /// The token's id.
        id: String,
    },
    /// A tenant or principal name that cannot be used.
    #[error("`{name}` cannot name a {what}: {why}")]
    BadName {
        /// The name.
        name: String,
        /// Tenant or principal.
        what: &'static str,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The tenant is not in the registry.
    #[error("no tenant `{0}` (fabric admin tenant add {0})")]
    NoTenant(String),
    /// No token has this id.
    #[error("no token {0}")]
    NoToken(String),
    /// The registry could not be read or saved.
    #[error("{}: {error}", path.display())]
    Io {
        /// The registry's file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The registry's file is not a registry.
    #[error("{} is not a Fabric token registry: {error}", path.display())]
    Corrupt {
        /// The registry's file.
        path: PathBuf,
        /// Why.
        error: serde_json::Error,
    },
    /// No random bytes for a new token.
    #[error(transparent)]
    Token(#[from] crate::TokenError),
}

/// The registry's file.
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Saved {
    tenants: BTreeSet<String>,
    tokens: Vec<SavedToken>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct SavedToken {
    #[serde(flatten)]
    info: TokenInfo,
    /// blake3 of the secret.
    hash: String,
}

struct Entry {
    info: TokenInfo,
    hash: String,
    /// Who presents it (built once: authentication clones a few `Arc`s).
    principal: Principal,
}

/// Tenants and tokens. Changes are saved at once when the registry has a file.
pub struct Registry {
    path: Option<PathBuf>,
    tenants: BTreeSet<String>,
    tokens: BTreeMap<String, Entry>,
}

impl Registry {
    /// A registry kept in memory only.
    pub fn in_memory() -> Registry {
        Registry {
            path: None,
            tenants: BTreeSet::new(),
            tokens: BTreeMap::new(),
        }
    }

    /// The registry kept in `path`: read when the file exists, empty otherwise (created
    /// with the first change).
    pub fn open(path: impl Into<PathBuf>) -> Result<Registry, AuthError> {
        let path = path.into();
        let saved = match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice::<Saved>(&bytes).map_err(|error| AuthError::Corrupt {
                    path: path.clone(),
                    error,
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Saved::default(),
            Err(error) => return Err(AuthError::Io { path, error }),
        };
        let mut registry = Registry {
            path: Some(path),
            tenants: saved.tenants,
            tokens: BTreeMap::new(),
        };
        for t in saved.tokens {
            registry.insert(t.info, t.hash);
        }
        Ok(registry)
    }

    /// Where the registry is saved.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    fn insert(&mut self, info: TokenInfo, hash: String) {
        let principal = Principal {
            tenant: info.tenant.as_str().into(),
            name: info.name.as_str().into(),
            role: info.role,
            token: info.id.as_str().into(),
        };
        self.tokens.insert(
            info.id.clone(),
            Entry {
                info,
                hash,
                principal,
            },
        );
    }

    /// Who presents `token` (the text of a request's bearer token).
    pub fn authenticate(&self, token: &str) -> Result<Principal, AuthError> {
        let token = Token::parse(token).map_err(|_| AuthError::Invalid)?;
        let entry = self.tokens.get(&token.id()).ok_or(AuthError::Invalid)?;
        if !token.matches(&entry.hash) {
            return Err(AuthError::Invalid);
        }
        if entry.info.revoked {
            return Err(AuthError::Revoked {
                id: entry.info.id.clone(),
            });
        }
        Ok(entry.principal.clone())
    }

    /// Adds a tenant; `false` when it existed already.
    pub fn add_tenant(&mut self, name: &str) -> Result<bool, AuthError> {
        check_name(name, "tenant")?;
        if !self.tenants.insert(name.to_string()) {
            return Ok(false);
        }
        self.save()?;
        Ok(true)
    }

    /// The tenants, sorted.
    pub fn tenants(&self) -> impl Iterator<Item = &str> {
        self.tenants.iter().map(String::as_str)
    }

    /// Whether `tenant` exists.
    pub fn has_tenant(&self, tenant: &str) -> bool {
        self.tenants.contains(tenant)
    }

    /// Issues a token for `name` of `tenant` (which must exist) with `role`. The token's
    /// text is in the answer only: the registry keeps its hash.
    pub fn issue(
        &mut self,
        tenant: &str,
        name: &str,
        role: Role,
    ) -> Result<(Token, TokenInfo), AuthError> {
        if !self.tenants.contains(tenant) {
            return Err(AuthError::NoTenant(tenant.to_string()));
        }
        check_name(name, "principal")?;
        let token = loop {
            let token = Token::generate()?;
            if !self.tokens.contains_key(&token.id()) {
                break token;
            }
        };
        let info = TokenInfo {
            id: token.id(),
            tenant: tenant.to_string(),
            name: name.to_string(),
            role,
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            revoked: false,
        };
        self.insert(info.clone(), token.hash());
        if let Err(e) = self.save() {
            self.tokens.remove(&info.id);
            return Err(e);
        }
        Ok((token, info))
    }

    /// Revokes the token of this id: it is refused from now on.
    pub fn revoke(&mut self, id: &str) -> Result<TokenInfo, AuthError> {
        let entry = self
            .tokens
            .get_mut(id)
            .ok_or_else(|| AuthError::NoToken(id.to_string()))?;
        let was = entry.info.revoked;
        entry.info.revoked = true;
        let info = entry.info.clone();
        if !was && let Err(e) = self.save() {
            if let Some(entry) = self.tokens.get_mut(id) {
                entry.info.revoked = false;
            }
            return Err(e);
        }
        Ok(info)
    }

    /// The token of this id.
    pub fn token(&self, id: &str) -> Option<&TokenInfo> {
        self.tokens.get(id).map(|e| &e.info)
    }

    /// Every token, by id.
    pub fn tokens(&self) -> impl Iterator<Item = &TokenInfo> {
        self.tokens.values().map(|e| &e.info)
    }

    fn save(&self) -> Result<(), AuthError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let saved = Saved {
            tenants: self.tenants.clone(),
            tokens: self
                .tokens
                .values()
                .map(|e| SavedToken {
                    info: e.info.clone(),
                    hash: e.hash.clone(),
                })
                .collect(),
        };
        let json = serde_json::to_vec_pretty(&saved).expect("the registry serializes");
        crate::write_private(path, &json).map_err(|error| AuthError::Io {
            path: path.clone(),
            error,
        })
    }
}

/// Tenant names are directory names (`--data-dir /data/{tenant}`) and appear in dataset
/// references (`TENANT/NAME`): lowercase letters, digits, `-`, `_` and `.`, starting with a
/// letter or digit, at most 64. Principal names are the same but may also hold `@`.
fn check_name(name: &str, what: &'static str) -> Result<(), AuthError> {
    let bad = |why| AuthError::BadName {
        name: name.to_string(),
        what,
        why,
    };
    if name.is_empty() || name.len() > 64 {
        return Err(bad("1 to 64 characters"));
    }
    if !name.as_bytes()[0].is_ascii_alphanumeric() {
        return Err(bad("it must start with a letter or a digit"));
    }
    let allowed = |c: char| {
        c.is_ascii_lowercase()
            || c.is_ascii_digit()
            || matches!(c, '-' | '_' | '.')
            || (c == '@' && what == "principal")
    };
    if !name.chars().all(allowed) {
        return Err(bad(if what == "tenant" {
            "lowercase letters, digits, `-`, `_` and `.` only"
        } else {
            "lowercase letters, digits, `-`, `_`, `.` and `@` only"
        }));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_authenticate_until_revoked_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.json");
        let mut r = Registry::open(&path).unwrap();
        assert!(matches!(
            r.issue("a", "alice", Role::Member),
            Err(AuthError::NoTenant(_))
        ));
        assert!(r.add_tenant("a").unwrap());
        assert!(!r.add_tenant("a").unwrap());
        let (token, info) = r.issue("a", "alice", Role::Member).unwrap();
        let p = r.authenticate(&token.to_string()).unwrap();
        assert_eq!((&*p.tenant, &*p.name, p.role), ("a", "alice", Role::Member));
        assert_eq!(&*p.token, info.id);

        // The file holds the hash, never the secret.
        let saved = std::fs::read_to_string(&path).unwrap();
        assert!(saved.contains(&token.hash()));
        assert!(!saved.contains(&token.to_string()[24..]));

        let r2 = Registry::open(&path).unwrap();
        assert_eq!(r2.authenticate(&token.to_string()).unwrap(), p);
        r.revoke(&info.id).unwrap();
        assert!(matches!(
            r.authenticate(&token.to_string()),
            Err(AuthError::Revoked { .. })
        ));
        let r3 = Registry::open(&path).unwrap();
        assert!(matches!(
            r3.authenticate(&token.to_string()),
            Err(AuthError::Revoked { .. })
        ));
        assert!(matches!(r.revoke("0000"), Err(AuthError::NoToken(_))));
    }

    #[test]
    fn a_right_id_with_a_wrong_secret_is_invalid() {
        let mut r = Registry::in_memory();
        r.add_tenant("a").unwrap();
        let (token, _) = r.issue("a", "alice", Role::Member).unwrap();
        let text = token.to_string();
        let last = if text.ends_with('0') { "1" } else { "0" };
        let forged = format!("{}{last}", &text[..text.len() - 1]);
        assert!(matches!(r.authenticate(&forged), Err(AuthError::Invalid)));
        assert!(matches!(r.authenticate(""), Err(AuthError::Invalid)));
    }

    #[test]
    fn names_are_checked() {
        let mut r = Registry::in_memory();
        for bad in ["", "A", "-a", "a/b", "..", "a b", &"x".repeat(65)] {
            assert!(
                matches!(r.add_tenant(bad), Err(AuthError::BadName { .. })),
                "{bad}"
            );
        }
        r.add_tenant("lab-1.physics").unwrap();
        r.issue("lab-1.physics", "alice@uni.edu", Role::Member)
            .unwrap();
        assert!(r.issue("lab-1.physics", "Alice", Role::Member).is_err());
    }

    #[test]
    fn a_corrupt_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.json");
        std::fs::write(&path, "{ nope").unwrap();
        let e = Registry::open(&path).err().unwrap().to_string();
        assert!(
            e.contains("auth.json is not a Fabric token registry"),
            "{e}"
        );
    }
}
