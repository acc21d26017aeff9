//! `fabric ca init` and `fabric cert issue`: the cluster's certificate authority, and the
//! certificates of its schedulers, workers and clients (the role is the certificate's
//! organizational unit: `fabric-worker`, `fabric-scheduler`, `fabric-client`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// `fabric ca`.
#[derive(Args)]
pub struct CaArgs {
    #[command(subcommand)]
    command: CaCommand,
}

#[derive(Subcommand)]
enum CaCommand {
    /// Create the cluster's certificate authority: ca.pem (give it to everyone) and ca.key
    /// (keep it; 0600) in DIR.
    Init {
        /// Where to keep it [default: $FABRIC_HOME/ca].
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Replace an existing CA (every certificate it issued stops being trusted).
        #[arg(long)]
        force: bool,
    },
}

/// Which certificate.
#[derive(Clone, Copy, ValueEnum)]
pub enum CertRole {
    /// A scheduler's: serves TLS.
    Scheduler,
    /// A worker's: registers with the scheduler (mutual TLS) and serves its data port.
    Worker,
    /// A client's: gives no rights by itself (clients present tokens).
    Client,
}

impl CertRole {
    fn name(self) -> &'static str {
        match self {
            CertRole::Scheduler => "scheduler",
            CertRole::Worker => "worker",
            CertRole::Client => "client",
        }
    }
}

/// `fabric cert`.
#[derive(Args)]
pub struct CertArgs {
    #[command(subcommand)]
    command: CertCommand,
}

#[derive(Subcommand)]
enum CertCommand {
    /// Issue a certificate signed by the cluster's CA: NAME.pem and NAME.key (0600).
    Issue {
        /// What it is for.
        #[arg(long)]
        role: CertRole,
        /// Its name: the worker's or scheduler's name (and, for servers, a host name it
        /// answers to).
        #[arg(long)]
        name: String,
        /// Host names and addresses a server answers to (repeat); localhost and 127.0.0.1
        /// are always included for schedulers and workers.
        #[arg(long = "host", value_name = "HOST")]
        hosts: Vec<String>,
        /// The CA's directory [default: $FABRIC_HOME/ca].
        #[arg(long, value_name = "DIR")]
        ca_dir: Option<PathBuf>,
        /// Where to write NAME.pem and NAME.key [default: $FABRIC_HOME/certs].
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
        /// How long it is valid, in days.
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
}

fn under_home(dir: Option<PathBuf>, name: &str) -> Result<PathBuf> {
    match dir {
        Some(dir) => Ok(dir),
        None => fabric_auth::local::home()
            .map(|h| h.join(name))
            .context("no home directory: set FABRIC_HOME or name the directory"),
    }
}

fn validity(params: &mut CertificateParams, days: u32) {
    let now = time::OffsetDateTime::now_utc();
    // An hour of slack for clocks a little behind.
    params.not_before = now - Duration::from_secs(3600);
    params.not_after = now + Duration::from_secs(u64::from(days) * 86_400);
}

/// `fabric ca ...`.
pub fn ca(a: CaArgs) -> Result<ExitCode> {
    let CaCommand::Init { dir, force } = a.command;
    let dir = under_home(dir, "ca")?;
    let (cert_path, key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
    anyhow::ensure!(
        force || !key_path.exists(),
        "{} exists: a CA is there already (--force replaces it, and every certificate it \
         issued stops being trusted)",
        key_path.display()
    );
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "Fabric cluster CA");
    params
        .distinguished_name
        .push(DnType::OrganizationalUnitName, "fabric-ca");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut params, 3650);
    let key = KeyPair::generate().context("cannot generate a key")?;
    let cert = params.self_signed(&key).context("cannot sign the CA")?;
    fabric_auth::write_private(&key_path, key.serialize_pem().as_bytes())
        .with_context(|| format!("cannot write {}", key_path.display()))?;
    std::fs::write(&cert_path, cert.pem())
        .with_context(|| format!("cannot write {}", cert_path.display()))?;
    eprintln!(
        "CA created: {} (give it to every scheduler, worker and client: FABRIC_CA) and {} \
         (keep it private)",
        cert_path.display(),
        key_path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `fabric cert ...`.
pub fn cert(a: CertArgs) -> Result<ExitCode> {
    let CertCommand::Issue {
        role,
        name,
        hosts,
        ca_dir,
        out_dir,
        days,
    } = a.command;
    let ca_dir = under_home(ca_dir, "ca")?;
    let out_dir = under_home(out_dir, "certs")?;
    let read = |p: &Path| {
        std::fs::read_to_string(p).with_context(|| {
            format!(
                "cannot read {} (create the CA with `fabric ca init`)",
                p.display()
            )
        })
    };
    let ca_key = KeyPair::from_pem(&read(&ca_dir.join("ca.key"))?)
        .context("the CA's key is not a PEM private key")?;
    let issuer = Issuer::from_ca_cert_pem(&read(&ca_dir.join("ca.pem"))?, ca_key)
        .context("the CA's certificate cannot be read")?;

    let mut names = hosts;
    if !matches!(role, CertRole::Client) {
        names.extend(["localhost".to_string(), "127.0.0.1".to_string()]);
    }
    names.dedup();
    let mut params = CertificateParams::new(names).context("a host is not a valid name")?;
    params.distinguished_name.push(DnType::CommonName, &name);
    let unit = format!("fabric-{}", role.name());
    params
        .distinguished_name
        .push(DnType::OrganizationalUnitName, unit.as_str());
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = match role {
        CertRole::Scheduler => vec![ExtendedKeyUsagePurpose::ServerAuth],
        CertRole::Worker => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        CertRole::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
    };
    validity(&mut params, days);
    let key = KeyPair::generate().context("cannot generate a key")?;
    let cert = params
        .signed_by(&key, &issuer)
        .context("cannot sign the certificate")?;
    let (cert_path, key_path) = (
        out_dir.join(format!("{name}.pem")),
        out_dir.join(format!("{name}.key")),
    );
    fabric_auth::write_private(&key_path, key.serialize_pem().as_bytes())
        .with_context(|| format!("cannot write {}", key_path.display()))?;
    std::fs::write(&cert_path, cert.pem())
        .with_context(|| format!("cannot write {}", cert_path.display()))?;
    eprintln!(
        "{} certificate for `{name}`: {} and {} (valid {days} days)",
        role.name(),
        cert_path.display(),
        key_path.display()
    );
    Ok(ExitCode::SUCCESS)
}
