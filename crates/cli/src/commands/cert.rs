//! `tessera cert ca|node|operator`: the cluster CA and the certificates it issues for mTLS
//! (see `tessera_tls::pki` for what a certificate says).
//!
//! Each command writes `<name>.crt` and `<name>.key` into `--out`; keys are created readable
//! by their owner only, and nothing is overwritten.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::{Args, Subcommand};
use tessera_tls::pki::{self, Issued, Subject};

/// The certificate subcommands.
#[derive(Subcommand, Debug)]
#[allow(missing_docs)] // variant fields are documented by their flags' help
pub enum CertCommand {
    /// Create the cluster CA (`ca.crt`, `ca.key`). Keep `ca.key` off the nodes.
    Ca {
        /// The CA's name.
        #[arg(long, default_value = "Tessera cluster CA")]
        name: String,
        /// How long it is valid.
        #[arg(long, default_value = "3650days", value_parser = humantime::parse_duration)]
        valid_for: Duration,
        /// Directory to write into.
        #[arg(long)]
        out: PathBuf,
    },
    /// Issue a node's certificate (`node-<id>.crt`, `.key`), naming its Raft id and site.
    Node {
        #[command(flatten)]
        ca: CaArgs,
        /// The node's Raft id; unset: `--id-base` plus the pod ordinal, as a node with
        /// `[raft] id_base` and no `node_id` works it out (for a StatefulSet's init container).
        #[arg(long)]
        id: Option<u64>,
        /// See `--id`.
        #[arg(long, default_value_t = 0)]
        id_base: u64,
        /// Base name of the files written (default: `node-<id>`).
        #[arg(long)]
        file_name: Option<String>,
        /// The node's site.
        #[arg(long)]
        site: String,
        /// A host name or IP address clients reach the node at (repeat).
        #[arg(long = "host", default_values = ["localhost", "127.0.0.1"])]
        hosts: Vec<String>,
    },
    /// Issue an operator's client certificate (`operator-<name>.crt`, `.key`) for the CLI.
    Operator {
        #[command(flatten)]
        ca: CaArgs,
        /// The operator's name (recorded as the actor of their admin commands).
        #[arg(long)]
        name: String,
        /// What the certificate lets its holder do on the control plane: `viewer` reads only;
        /// `admin` changes membership, the registry, grades, policies and queries.
        #[arg(long, default_value = "viewer")]
        role: tessera_tls::OperatorRole,
    },
}

/// The CA that signs, and where the result goes.
#[derive(Args, Debug)]
pub struct CaArgs {
    /// The CA certificate.
    #[arg(long)]
    pub ca_cert: PathBuf,
    /// The CA key.
    #[arg(long)]
    pub ca_key: PathBuf,
    /// How long the certificate is valid.
    #[arg(long, default_value = "365days", value_parser = humantime::parse_duration)]
    pub valid_for: Duration,
    /// Directory to write into.
    #[arg(long)]
    pub out: PathBuf,
}

impl CaArgs {
    fn ca(&self) -> Result<Issued> {
        let read = |p: &Path| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
        Ok(Issued { cert_pem: read(&self.ca_cert)?, key_pem: read(&self.ca_key)? })
    }
}

fn write_pair(out: &Path, name: &str, issued: &Issued) -> Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let (cert, key) = (out.join(format!("{name}.crt")), out.join(format!("{name}.key")));
    if key.exists() {
        bail!("{} exists; not overwriting it", key.display());
    }
    crate::files::create_new(&cert, issued.cert_pem.as_bytes(), false)?;
    crate::files::create_new(&key, issued.key_pem.as_bytes(), true)?;
    Ok((cert, key))
}

/// Runs a certificate subcommand; returns the files written.
pub fn run(command: CertCommand) -> Result<(PathBuf, PathBuf)> {
    match command {
        CertCommand::Ca { name, valid_for, out } => write_pair(&out, "ca", &pki::new_ca(&name, valid_for)?),
        CertCommand::Node { ca, id, id_base, file_name, site, hosts } => {
            let id = tessera_node::control::member::RaftConfig { node_id: id, id_base, ..Default::default() }
                .resolved_node_id()?;
            let issued = pki::issue(&ca.ca()?, &Subject::Node { id, site, hosts }, ca.valid_for)?;
            write_pair(&ca.out, &file_name.unwrap_or_else(|| format!("node-{id}")), &issued)
        }
        CertCommand::Operator { ca, name, role } => {
            let issued = pki::issue(&ca.ca()?, &Subject::Operator { name: name.clone(), role }, ca.valid_for)?;
            let file = pki::encode_component(&name);
            write_pair(&ca.out, &format!("operator-{file}"), &issued)
        }
    }
}

/// Runs a `tessera cert` command and says what it wrote.
pub fn run_command(command: CertCommand) -> Result<()> {
    let (cert, key) = run(command)?;
    println!("wrote {} and {} (keep the key private)", cert.display(), key.display());
    Ok(())
}
