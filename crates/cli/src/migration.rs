//! Moving a site's segments to another site, with the key in k-of-n custody and its release
//! decided through the control plane (`tessera store export|import`).
//!
//! 1. **Export** (source site): the chosen segments are re-encrypted into a bundle under a
//!    fresh export key ([`tessera_store::custody::export`]); the key is split k-of-n with
//!    Shamir, one share file per custodian site, and dropped. The source keeps no copy.
//! 2. **Release** (control plane): someone asks for the release (`tessera cluster
//!    request-release`); each custodian site approves (`approve-release`, over mTLS only a node
//!    of that site can). Both are Raft commands, so the audit log holds every step.
//! 3. **Import** (target site): the shares of approving custodians are combined only once the
//!    control plane says the release is approved for this bundle, from its source, to this
//!    site; the segments are re-encrypted under the target's own keys.
//!
//! Share files are key material: move each to its custodian over a protected channel and keep
//! it in the custodian's secret store. Any k of them rebuild the key; fewer reveal nothing.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail, ensure};
use serde::{Deserialize, Serialize};
use tessera_proto::raft as pb;
use tessera_store::custody::{self, BundleInfo, KeyShare};
use tessera_store::{SegmentMeta, SegmentStore};

/// One custodian's share of an export key, as a file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShareFile {
    /// The export's id.
    pub bundle: String,
    /// The site holding this share.
    pub custodian: String,
    /// Shares needed to rebuild the key.
    pub k: u8,
    /// The export key's digest (names the key, reveals nothing).
    pub key_digest: String,
    /// The share.
    pub share: KeyShare,
}

/// Where an export went.
#[derive(Debug)]
pub struct Exported {
    /// The bundle's description.
    pub info: BundleInfo,
    /// The bundle directory.
    pub bundle: PathBuf,
    /// One share file per custodian.
    pub shares: Vec<PathBuf>,
}

/// Exports `segments` of `store` (site `source`) for `target` into `out/bundle`, and writes
/// one share of the export key per custodian into `out/share-<site>.json` (any `k` rebuild it).
#[allow(clippy::too_many_arguments)]
pub fn export(
    store: &SegmentStore,
    source: &str,
    segments: &[String],
    target: &str,
    export_id: &str,
    custodians: &[String],
    k: u8,
    out: &Path,
    now_ms: i64,
) -> Result<Exported> {
    let distinct: std::collections::BTreeSet<&String> = custodians.iter().collect();
    ensure!(distinct.len() == custodians.len(), "--custodian: a site is named twice");
    let n = u8::try_from(custodians.len()).context("--custodian: at most 255 custodians")?;
    ensure!(k >= 2 && k <= n, "--k: needs 2 ≤ k ≤ the number of custodians ({n}); got {k}");
    ensure!(!segments.is_empty(), "no segments to export");
    let bundle = out.join("bundle");
    let (info, key) = custody::export(store, source, segments, target, export_id, &bundle, now_ms)?;
    let shares = custody::split_key(&key, k, n)?;
    drop(key);
    let mut files = Vec::new();
    for (custodian, share) in custodians.iter().zip(shares) {
        let file = ShareFile {
            bundle: export_id.to_string(),
            custodian: custodian.clone(),
            k,
            key_digest: info.key_digest.clone(),
            share,
        };
        let path = out.join(format!("share-{}.json", tessera_tls::pki::encode_component(custodian)));
        crate::files::create_new(&path, &serde_json::to_vec_pretty(&file)?, true)?;
        files.push(path);
    }
    tracing::info!(
        target: "tessera::audit",
        export = export_id,
        source,
        target,
        segments = info.segments.len(),
        k,
        custodians = %custodians.join(","),
        "segments exported; key split among custodians"
    );
    Ok(Exported { info, bundle, shares: files })
}

/// Reads share files.
pub fn read_shares(paths: &[PathBuf]) -> Result<Vec<ShareFile>> {
    paths
        .iter()
        .map(|p| {
            let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
            serde_json::from_slice(&bytes).with_context(|| format!("{}: not a share file", p.display()))
        })
        .collect()
}

/// Imports `bundle` into `store` (site `site`) if `release` (the control plane's record, read
/// linearizably) approves it: same bundle, same source, this site as target, k custodians
/// approved. Only shares of approving custodians are used.
pub fn import(
    store: &mut SegmentStore,
    site: &str,
    bundle: &Path,
    shares: &[ShareFile],
    release: &pb::Release,
    now_ms: i64,
) -> Result<Vec<SegmentMeta>> {
    let info = custody::bundle_info(bundle)?;
    ensure!(
        release.bundle == info.export_id,
        "the release is for bundle {}, the bundle is {}",
        release.bundle,
        info.export_id
    );
    ensure!(
        release.source == info.source_site,
        "the release names source {}, the bundle comes from {}",
        release.source,
        info.source_site
    );
    ensure!(release.target == site, "bundle {} is released to site {}, not {site}", info.export_id, release.target);
    if !release.released {
        bail!(
            "bundle {} is not released: {} of k = {} custodian sites approved ({})",
            info.export_id,
            release.approvals.len(),
            release.k,
            release.approvals.join(", ")
        );
    }
    let k = u8::try_from(release.k).context("release k out of range")?;
    let mut usable = Vec::new();
    for s in shares {
        ensure!(
            s.bundle == info.export_id && s.key_digest == info.key_digest,
            "share of {} is for another bundle or key",
            s.custodian
        );
        if release.approvals.contains(&s.custodian) {
            usable.push(s.share.clone());
        } else {
            tracing::warn!(target: "tessera::audit", bundle = %info.export_id, custodian = %s.custodian, "share of a site that did not approve: not used");
        }
    }
    let key = custody::combine_shares(&usable, k, &info.key_digest).with_context(|| {
        format!("rebuilding the key of bundle {} from approving custodians' shares", info.export_id)
    })?;
    let imported = custody::import(store, site, bundle, &key, now_ms)?;
    tracing::info!(
        target: "tessera::audit",
        bundle = %info.export_id,
        source = %info.source_site,
        site,
        segments = imported.len(),
        approvals = %release.approvals.join(","),
        "bundle imported under this site's keys"
    );
    Ok(imported)
}

/// The control plane's record of `bundle`'s release, read linearizably from `admin`.
pub async fn release_of(
    admin: &str,
    tls: &tessera_tls::ClientTls,
    timeout: std::time::Duration,
    bundle: &str,
) -> Result<pb::Release> {
    let channel = tessera_node::control::grpc_channel(admin, tls, timeout, "control plane").await?;
    let mut client = tessera_proto::raft::cluster_admin_client::ClusterAdminClient::new(channel);
    let releases = client
        .list_releases(pb::ListReleasesRequest {})
        .await
        .map_err(|s| anyhow::anyhow!("control plane at {admin}: {}", s.message()))?;
    releases.into_inner().releases.into_iter().find(|r| r.bundle == bundle).with_context(|| {
        format!("the control plane has no release request for bundle {bundle} (tessera cluster request-release)")
    })
}
