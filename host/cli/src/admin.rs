//! `fabric admin` (tenants, tokens, policy), `fabric whoami`, and the scheduler's start-up
//! credentials.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use fabric_auth::local::{Holder, home, read_token};
use fabric_auth::{Audit, Registry, Role};
use fabric_client::TokenInfo;

use crate::cluster::SchedulerUrl;

/// The scheduler's registry and audit log, and the start-up tokens of the user running it:
/// an operator token in `$FABRIC_HOME/token` and a worker token in
/// `$FABRIC_HOME/worker.token`, each issued (and written, 0600) unless the file holds a
/// token this registry accepts.
pub fn authority(
    auth_dir: Option<&Path>,
    audit_log: Option<&Path>,
) -> Result<fabric_scheduler::Authority> {
    let home = home();
    let dir = match (auth_dir, &home) {
        (Some(dir), _) => dir.to_path_buf(),
        (None, Some(home)) => home.join("scheduler"),
        (None, None) => {
            anyhow::bail!("no home directory to keep tokens in: set FABRIC_HOME or pass --auth-dir")
        }
    };
    let mut registry = Registry::open(dir.join("tokens.json"))?;
    registry.add_tenant("default")?;
    if let Some(home) = &home {
        for (holder, role, name) in [
            (Holder::Client, Role::Operator, "operator"),
            (Holder::Worker, Role::Worker, "workers"),
        ] {
            let path = holder.default_file().unwrap_or_else(|| home.join("token"));
            let valid = read_token(&path)
                .ok()
                .and_then(|f| registry.authenticate(&f.token).ok())
                .is_some_and(|p| p.role == role);
            if !valid {
                let (token, info) = registry.issue("default", name, role)?;
                fabric_auth::write_private(&path, format!("{token}\n").as_bytes())
                    .with_context(|| format!("cannot write {}", path.display()))?;
                tracing::info!("issued {role} token {} into {}", info.id, path.display());
            }
        }
    }
    let audit_path = audit_log.map_or_else(|| dir.join("audit.jsonl"), Path::to_path_buf);
    let audit = Audit::open(&audit_path)
        .with_context(|| format!("cannot open the audit log {}", audit_path.display()))?;
    Ok(fabric_scheduler::Authority::new(registry, audit))
}

/// `fabric admin`.
#[derive(Args)]
pub struct AdminArgs {
    #[command(subcommand)]
    command: AdminCommand,
    #[command(flatten)]
    scheduler: SchedulerUrl,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Tenants: the namespaces jobs and datasets belong to.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Tokens: who may use the cluster, as whom.
    #[command(subcommand)]
    Token(TokenCommand),
    /// The scheduler's policy: tenants' weights, tiers and quotas (docs/fair-share.md).
    #[command(subcommand)]
    Policy(PolicyCommand),
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Make the scheduler read its policy file (`fabric scheduler --policy`) again and
    /// print the policy now in force; an invalid file changes nothing. SIGHUP to the
    /// scheduler does the same.
    Reload,
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Add a tenant (lowercase letters, digits, `-`, `_`, `.`).
    Add {
        /// Its name.
        name: String,
    },
    /// List the tenants.
    List,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Issue a token and print it (once: the scheduler keeps only its hash).
    Issue {
        /// The tenant it acts for.
        #[arg(long)]
        tenant: String,
        /// Who holds it (a person or a service); tokens of one name are one member.
        #[arg(long)]
        name: String,
        /// What it may do: member (its own jobs), tenant-admin (the tenant's jobs and
        /// member tokens), operator (everything), worker (run tasks).
        #[arg(long, default_value = "member")]
        role: Role,
        /// Write the token into FILE (mode 0600) instead of printing it.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Revoke a token by id: refused from the next request on.
    Revoke {
        /// Its id (the 16 hex digits after `fabric_`, as `token list` shows).
        id: String,
    },
    /// List the tokens you may manage (never their secrets).
    List {
        /// Only this tenant's.
        #[arg(long)]
        tenant: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn print_token(t: &TokenInfo) {
    println!(
        "{}  {:<16} {:<20} {:<12} {}",
        t.id,
        t.tenant,
        t.name,
        t.role,
        if t.revoked { "revoked" } else { "active" }
    );
}

/// `fabric admin ...`.
pub fn admin(a: AdminArgs) -> Result<ExitCode> {
    crate::cluster::tokio()?.block_on(async {
        let client = a.scheduler.connect().await?;
        match a.command {
            AdminCommand::Tenant(TenantCommand::Add { name }) => {
                if client.add_tenant(&name).await? {
                    eprintln!("tenant `{name}` added");
                } else {
                    eprintln!("tenant `{name}` exists already");
                }
            }
            AdminCommand::Tenant(TenantCommand::List) => {
                for name in client.tenants().await? {
                    println!("{name}");
                }
            }
            AdminCommand::Token(TokenCommand::Issue {
                tenant,
                name,
                role,
                out,
            }) => {
                let (token, info) = client.issue_token(&tenant, &name, role).await?;
                match out {
                    Some(path) => {
                        fabric_auth::write_private(&path, format!("{token}\n").as_bytes())
                            .with_context(|| format!("cannot write {}", path.display()))?;
                        eprintln!(
                            "{role} token {} for {tenant}/{name} written to {}",
                            info.id,
                            path.display()
                        );
                    }
                    None => {
                        println!("{token}");
                        eprintln!(
                            "{role} token {} for {tenant}/{name}: give it to its holder \
                             (FABRIC_TOKEN); it is not shown again",
                            info.id
                        );
                    }
                }
            }
            AdminCommand::Policy(PolicyCommand::Reload) => {
                println!("{}", client.reload_policy().await?);
            }
            AdminCommand::Token(TokenCommand::Revoke { id }) => {
                let info = client.revoke_token(&id).await?;
                eprintln!("token {} ({}/{}) revoked", info.id, info.tenant, info.name);
            }
            AdminCommand::Token(TokenCommand::List { tenant, json }) => {
                let tokens = client.tokens(tenant.as_deref()).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&tokens)?);
                } else {
                    tokens.iter().for_each(print_token);
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `fabric whoami`.
#[derive(Args)]
pub struct WhoamiArgs {
    #[command(flatten)]
    scheduler: SchedulerUrl,
}

/// Prints who the scheduler says the caller is.
pub fn whoami(a: WhoamiArgs) -> Result<ExitCode> {
    crate::cluster::tokio()?.block_on(async {
        let client = a.scheduler.connect().await?;
        let me = client.identity();
        println!("{}/{} ({})", me.tenant, me.principal, me.role);
        Ok(ExitCode::SUCCESS)
    })
}
