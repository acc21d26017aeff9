//! Principals, roles and the access rules between them and what tenants own.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// What a principal may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Submits jobs for its tenant and sees its own jobs and its tenant's datasets.
    Member,
    /// A member who also sees, cancels and releases every job of the tenant, forgets its
    /// datasets, and issues and revokes its members' tokens.
    TenantAdmin,
    /// Sees and manages everything: every tenant's jobs and datasets, tenants and tokens.
    Operator,
    /// A worker process: registers, runs units, fetches components. Nothing else, and no
    /// client may do this.
    Worker,
}

impl Role {
    /// Every role, in the order `--help` lists them.
    pub const ALL: [Role; 4] = [
        Role::Member,
        Role::TenantAdmin,
        Role::Operator,
        Role::Worker,
    ];

    /// The role's name: `member`, `tenant-admin`, `operator`, `worker`.
    pub fn name(self) -> &'static str {
        match self {
            Role::Member => "member",
            Role::TenantAdmin => "tenant-admin",
            Role::Operator => "operator",
            Role::Worker => "worker",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.name() == s)
            .ok_or_else(|| format!("no role `{s}` (member, tenant-admin, operator or worker)"))
    }
}

/// Who owns a job or a dataset: the tenant and the name of the principal that made it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Owner {
    /// The tenant.
    pub tenant: Arc<str>,
    /// The principal's name within it.
    pub name: Arc<str>,
}

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The tenant it acts for.
    pub tenant: Arc<str>,
    /// Its name within the tenant (several tokens may share one: a person's laptop and CI).
    pub name: Arc<str>,
    /// What it may do.
    pub role: Role,
    /// The id of the token it presented (for the audit log).
    pub token: Arc<str>,
}

impl Principal {
    /// A principal (`token`: the id of what it authenticated with).
    pub fn new(tenant: &str, name: &str, role: Role, token: &str) -> Principal {
        Principal {
            tenant: tenant.into(),
            name: name.into(),
            role,
            token: token.into(),
        }
    }

    /// What it makes is owned by it.
    pub fn owner(&self) -> Owner {
        Owner {
            tenant: self.tenant.clone(),
            name: self.name.clone(),
        }
    }

    /// Whether it may see (watch, gather, cancel, release) what `owner` made: its own, its
    /// tenant's as a tenant-admin, anything as an operator.
    pub fn may_see(&self, owner: &Owner) -> bool {
        match self.role {
            Role::Operator => true,
            Role::TenantAdmin => owner.tenant == self.tenant,
            Role::Member => owner.tenant == self.tenant && owner.name == self.name,
            Role::Worker => false,
        }
    }

    /// Whether it may list and use the datasets of `tenant` (those not shared with it).
    pub fn may_read_tenant(&self, tenant: &str) -> bool {
        match self.role {
            Role::Operator => true,
            Role::TenantAdmin | Role::Member => &*self.tenant == tenant,
            Role::Worker => false,
        }
    }

    /// Whether it may issue or revoke a token of `role` for `tenant`: an operator any, a
    /// tenant-admin its own tenant's members'.
    pub fn may_manage_token(&self, tenant: &str, role: Role) -> bool {
        match self.role {
            Role::Operator => true,
            Role::TenantAdmin => &*self.tenant == tenant && role == Role::Member,
            Role::Member | Role::Worker => false,
        }
    }

    /// Whether it is a client (anything but a worker).
    pub fn is_client(&self) -> bool {
        self.role != Role::Worker
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} ({})", self.tenant, self.name, self.role)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(tenant: &str, name: &str, role: Role) -> Principal {
        Principal::new(tenant, name, role, "0")
    }

    #[test]
    fn roles_see_their_own_their_tenants_or_everything() {
        let alice = Owner {
            tenant: "a".into(),
            name: "alice".into(),
        };
        let amy = Owner {
            tenant: "a".into(),
            name: "amy".into(),
        };
        let bob = Owner {
            tenant: "b".into(),
            name: "bob".into(),
        };
        let cases = [
            (who("a", "alice", Role::Member), [true, false, false]),
            (who("a", "anna", Role::TenantAdmin), [true, true, false]),
            (who("ops", "olga", Role::Operator), [true, true, true]),
            (who("a", "alice", Role::Worker), [false, false, false]),
        ];
        for (p, expected) in cases {
            let seen = [&alice, &amy, &bob].map(|o| p.may_see(o));
            assert_eq!(seen, expected, "{p}");
        }
        assert!(who("a", "x", Role::Member).may_read_tenant("a"));
        assert!(!who("a", "x", Role::Member).may_read_tenant("b"));
        assert!(who("a", "x", Role::TenantAdmin).may_manage_token("a", Role::Member));
        assert!(!who("a", "x", Role::TenantAdmin).may_manage_token("a", Role::TenantAdmin));
        assert!(!who("a", "x", Role::TenantAdmin).may_manage_token("b", Role::Member));
        assert!(!who("a", "x", Role::Member).may_manage_token("a", Role::Member));
        assert!(who("a", "x", Role::Operator).may_manage_token("b", Role::Worker));
    }

    #[test]
    fn role_names_read_back() {
        for r in Role::ALL {
            assert_eq!(r.name().parse::<Role>(), Ok(r));
        }
        assert!(
            "admin"
                .parse::<Role>()
                .unwrap_err()
                .contains("tenant-admin")
        );
    }
}
