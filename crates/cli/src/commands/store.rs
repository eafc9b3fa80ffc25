//! `tessera store …`: the site store's keys and segments: a new key-encryption key, listing,
//! shredding, key rotation, and export/import between sites (see [`crate::migration`]).
//! Commands other than `new-kek` work on a stopped node's store (they read its config for the
//! directory and KEK).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use tessera_core::{DataGrade, now_ms};
use tessera_node::config::NodeConfig;
use tessera_node::store::{StoreConfig, new_kek, segments_batch, segments_schema};
use tessera_store::{Kek, SegmentStore};

/// `tessera store ...`: key and segment maintenance. Commands other than `new-kek` work on a
/// stopped node's store (they read its config for the directory and KEK).
#[derive(Debug, clap::Subcommand)]
pub enum StoreCommand {
    /// Write a new random key-encryption key file (never overwrites one).
    NewKek {
        /// The file to write.
        #[arg(long)]
        out: PathBuf,
        /// Its version (raise it at each rotation).
        #[arg(long, default_value_t = 1)]
        version: u32,
    },
    /// List the segments and each grade's key state.
    List {
        /// The node's config file.
        #[arg(long)]
        config: PathBuf,
        /// The list's format.
        #[command(flatten)]
        output: crate::output::OutputArgs,
    },
    /// Crypto-shred the given grades of the segments wholly inside a time range (audited).
    Shred {
        /// The node's config file.
        #[arg(long)]
        config: PathBuf,
        /// Start of the range (RFC 3339).
        #[arg(long)]
        from: String,
        /// End of the range (RFC 3339).
        #[arg(long)]
        to: String,
        /// Grades to destroy (`general` takes the whole segment).
        #[arg(long = "grade", required = true)]
        grades: Vec<DataGrade>,
        /// Why (kept in the manifest and the audit log).
        #[arg(long)]
        reason: String,
    },
    /// Re-seal every data key under a new KEK file (then retire the old one).
    RotateKek {
        /// The node's config file (its `store.kek_file` is the current KEK).
        #[arg(long)]
        config: PathBuf,
        /// The new KEK file (`new-kek --version` above the current one).
        #[arg(long)]
        new: PathBuf,
    },
    /// Export segments for another site: a bundle under a fresh key, split k-of-n into one
    /// share file per custodian site (see `crate::migration`).
    Export {
        /// The node's config file (its site is the source).
        #[arg(long)]
        config: PathBuf,
        /// The export's id (the release is asked for under it).
        #[arg(long)]
        id: String,
        /// The site that will import it.
        #[arg(long)]
        to_site: String,
        /// A segment id to export (repeat); none: every readable segment.
        #[arg(long = "segment")]
        segments: Vec<String>,
        /// A site that gets a share of the key (repeat).
        #[arg(long = "custodian", required = true)]
        custodians: Vec<String>,
        /// Shares needed to rebuild the key (at least 2).
        #[arg(long)]
        k: u8,
        /// A new directory for the bundle and the share files.
        #[arg(long)]
        out: PathBuf,
    },
    /// Import a bundle once the control plane has released it to this site, with the share
    /// files of approving custodians.
    Import {
        /// The node's config file (its site is the target).
        #[arg(long)]
        config: PathBuf,
        /// The bundle directory.
        #[arg(long)]
        bundle: PathBuf,
        /// A custodian's share file (repeat; k of approving custodians are needed).
        #[arg(long = "share", required = true)]
        shares: Vec<PathBuf>,
        /// The control plane (its release record decides).
        #[command(flatten)]
        admin: crate::args::AdminArgs,
    },
}

/// Runs a `tessera store` command.
pub fn run(command: StoreCommand) -> Result<()> {
    let open = |config: &Path| -> Result<(StoreConfig, SegmentStore)> {
        let config = NodeConfig::load(Some(config))?.store;
        let store = config.open()?.context("store.dir is not set in this config")?;
        Ok((config, store))
    };
    let time = |s: &str, field: &str| -> Result<i64> {
        Ok(chrono::DateTime::parse_from_rfc3339(s)
            .with_context(|| format!("--{field}: expected RFC 3339, e.g. 2026-12-01T00:00:00Z"))?
            .timestamp_millis())
    };
    match command {
        StoreCommand::NewKek { out, version } => {
            new_kek(&out, version)?;
            println!("wrote key-encryption key v{version} to {}", out.display());
        }
        StoreCommand::List { config, output } => {
            let (_, store) = open(&config)?;
            let schema = segments_schema();
            let batch = segments_batch(&schema, store.segments())?;
            println!("{}", crate::output::format_batches(output.output, &[batch])?.trim_end());
        }
        StoreCommand::Shred { config, from, to, grades, reason } => {
            let (_, mut store) = open(&config)?;
            let events = store.shred(time(&from, "from")?, time(&to, "to")?, &grades, &reason, now_ms())?;
            for e in &events {
                tracing::info!(target: "tessera::audit", actor = "cli", action = "shred", segment = %e.segment, grade = %e.grade, key = %e.key_id, reason = %e.reason, "data key destroyed");
                println!(
                    "shredded {} of {} ({}..{} ms){}",
                    e.grade,
                    e.segment,
                    e.min_ts_ms,
                    e.max_ts_ms,
                    if e.file_deleted { ", file deleted" } else { "" }
                );
            }
            println!("{} key(s) destroyed", events.len());
        }
        StoreCommand::RotateKek { config, new } => {
            let (_, mut store) = open(&config)?;
            let kek = Kek::read(&new).context("--new")?;
            let version = kek.version;
            let count = store.rotate_kek(kek)?;
            tracing::info!(target: "tessera::audit", actor = "cli", action = "rotate-kek", version, keys = count, "key ring re-sealed");
            println!(
                "re-sealed {count} data key(s) under KEK v{version}; point store.kek_file at {} and destroy the old KEK",
                new.display()
            );
        }
        StoreCommand::Export { config, id, to_site, segments, custodians, k, out } => {
            let site = NodeConfig::load(Some(&config))?.site_id;
            let (_, store) = open(&config)?;
            let segments = if segments.is_empty() {
                store.segments().iter().filter(|m| !m.destroyed()).map(|m| m.id.clone()).collect()
            } else {
                segments
            };
            let exported =
                crate::migration::export(&store, &site, &segments, &to_site, &id, &custodians, k, &out, now_ms())?;
            println!(
                "exported {} segment(s) of {site} for {to_site} into {}",
                exported.info.segments.len(),
                exported.bundle.display()
            );
            for share in &exported.shares {
                println!("share: {} (move it to its custodian over a protected channel)", share.display());
            }
            println!(
                "next: tessera cluster request-release {id} --source {site} --target {to_site} --k {k} {}",
                custodians.iter().map(|c| format!("--custodian {c}")).collect::<Vec<_>>().join(" ")
            );
        }
        StoreCommand::Import { config, bundle, shares, admin } => {
            let site = NodeConfig::load(Some(&config))?.site_id;
            let (_, mut store) = open(&config)?;
            let info = tessera_store::custody::bundle_info(&bundle)?;
            let tls = admin.tls.client()?;
            let release = crate::runtime()?.block_on(crate::migration::release_of(
                &admin.at,
                &tls,
                admin.timeout,
                &info.export_id,
            ))?;
            let imported = crate::migration::import(
                &mut store,
                &site,
                &bundle,
                &crate::migration::read_shares(&shares)?,
                &release,
                now_ms(),
            )?;
            println!(
                "imported {} segment(s) of bundle {} from {} under {site}'s keys",
                imported.len(),
                info.export_id,
                info.source_site
            );
        }
    }
    Ok(())
}
