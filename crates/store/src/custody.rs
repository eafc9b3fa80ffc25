//! Moving a site's segments to another site, and who holds the key to read them there.
//!
//! **Export** ([`export`]) decrypts the chosen segments with the source site's keys and writes
//! them into a *bundle*: a segment store of its own, under fresh data keys sealed by a fresh
//! *export key*. The bundle can travel by any means; without the export key it is ciphertext.
//!
//! **Custody**: the export key is split k-of-n with Shamir secret sharing ([`split_key`]), one
//! share per custodian site, so no single site (the source included, once it has handed the
//! shares out and forgotten the key) can open the bundle alone. A share is 33 bytes; `k - 1`
//! shares say nothing about the key.
//!
//! **Import** ([`import`]) takes at least k shares ([`combine_shares`]; the result is checked
//! against the key's digest, so a wrong or corrupted share is an error, not a wrong key), opens
//! the bundle and re-encrypts every segment under the *target* site's own keys. The server
//! decides who may hand out shares (approvals through the control plane) and audits each step.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use blahaj::{Share, Sharks};
use ring::digest::{SHA256, digest};
use serde::{Deserialize, Serialize};

use crate::error::{Result, StoreError, io};
use crate::keys::{Kek, SecretKey, from_hex, replace_file, to_hex};
use crate::manifest::SegmentMeta;
use crate::segment::SegmentStore;

/// One custodian's share of an export key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyShare {
    /// The share's x coordinate (1..=255), unique per share.
    pub index: u8,
    /// The share, hex (x and y bytes).
    pub share: String,
}

impl std::fmt::Debug for KeyShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyShare({}, ..)", self.index)
    }
}

/// A digest identifying a key without revealing it (SHA-256 over a domain tag and the key).
pub fn key_digest(key: &SecretKey) -> String {
    let mut input = b"tessera-export-key:".to_vec();
    input.extend_from_slice(key.bytes());
    let d = to_hex(digest(&SHA256, &input).as_ref());
    input.iter_mut().for_each(|b| *b = 0);
    d
}

/// Splits `key` into `n` shares, any `k` of which rebuild it (2 ≤ k ≤ n ≤ 255).
pub fn split_key(key: &SecretKey, k: u8, n: u8) -> Result<Vec<KeyShare>> {
    if k < 2 {
        // One share would be the key itself.
        return Err(StoreError::Custody(format!("threshold k must be at least 2 (got {k})")));
    }
    if n < k {
        return Err(StoreError::Custody(format!("n ({n}) must be at least k ({k})")));
    }
    Ok(Sharks(k)
        .dealer(key.bytes())
        .take(n as usize)
        .map(|share| {
            let bytes = Vec::from(&share);
            KeyShare { index: bytes[0], share: to_hex(&bytes) }
        })
        .collect())
}

/// Rebuilds a key from at least `k` distinct shares and checks it against `digest`.
pub fn combine_shares(shares: &[KeyShare], k: u8, digest: &str) -> Result<SecretKey> {
    let mut distinct: BTreeMap<u8, Share> = BTreeMap::new();
    for s in shares {
        let bytes = from_hex(&s.share).ok_or_else(|| StoreError::Custody(format!("share {} is not hex", s.index)))?;
        let share =
            Share::try_from(bytes.as_slice()).map_err(|e| StoreError::Custody(format!("share {}: {e}", s.index)))?;
        if bytes.first() != Some(&s.index) {
            return Err(StoreError::Custody(format!("share {} carries another index", s.index)));
        }
        // A repeated share adds nothing (and would make the interpolation wrong).
        distinct.entry(s.index).or_insert(share);
    }
    if distinct.len() < k as usize {
        return Err(StoreError::Custody(format!("{} distinct share(s) given, {k} needed", distinct.len())));
    }
    let bytes = Sharks(k).recover(distinct.values()).map_err(|e| StoreError::Custody(e.to_string()))?;
    let key = SecretKey::from_slice(&bytes)
        .ok_or_else(|| StoreError::Custody("the shares rebuild a key of the wrong length".into()))?;
    if key_digest(&key) != digest {
        return Err(StoreError::Custody(
            "the shares do not rebuild the export key (a wrong, stale or corrupted share)".into(),
        ));
    }
    Ok(key)
}

/// What a bundle says about itself (`bundle.json`, in the clear: no data, no key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleInfo {
    /// The export's id.
    pub export_id: String,
    /// The site the segments come from.
    pub source_site: String,
    /// The site they are for.
    pub target_site: String,
    /// The export key's digest ([`key_digest`]).
    pub key_digest: String,
    /// The exported segments as they were at the source.
    pub segments: Vec<SegmentMeta>,
    /// When (ms since the Unix epoch).
    pub exported_at_ms: i64,
}

const BUNDLE_INFO: &str = "bundle.json";

/// Exports segments `ids` of `source` (site `source_site`) for `target_site` into a new bundle
/// directory `bundle`. Returns the bundle's description and the export key (to be split and
/// handed to custodians, then dropped). Shredded columns are not exported: they cannot be read.
pub fn export(
    source: &SegmentStore,
    source_site: &str,
    ids: &[String],
    target_site: &str,
    export_id: &str,
    bundle: &Path,
    now_ms: i64,
) -> Result<(BundleInfo, SecretKey)> {
    if bundle.exists() && fs::read_dir(bundle).map_err(io("read", bundle))?.next().is_some() {
        return Err(StoreError::BundleNotEmpty(bundle.to_path_buf()));
    }
    let export_key = Kek::generate(1)?;
    let mut out = SegmentStore::open(bundle, export_key.clone())?;
    let mut segments = Vec::new();
    for id in ids {
        let meta = source.segment(id)?.clone();
        if meta.destroyed() {
            continue;
        }
        let (schema, batches) = source.read_live(id)?;
        out.write_imported(&meta, source_site, &schema, &batches, now_ms)?;
        segments.push(meta);
    }
    let key = export_key.secret().clone();
    let info = BundleInfo {
        export_id: export_id.to_string(),
        source_site: source_site.to_string(),
        target_site: target_site.to_string(),
        key_digest: key_digest(&key),
        segments,
        exported_at_ms: now_ms,
    };
    replace_file(&bundle.join(BUNDLE_INFO), &serde_json::to_vec_pretty(&info).expect("bundle info serialises"))?;
    Ok((info, key))
}

/// Reads a bundle's description.
pub fn bundle_info(bundle: &Path) -> Result<BundleInfo> {
    let path = bundle.join(BUNDLE_INFO);
    let bytes = fs::read(&path).map_err(io("read", &path))?;
    serde_json::from_slice(&bytes).map_err(|cause| StoreError::Corrupt { what: "bundle description", path, cause })
}

/// Imports `bundle` into `target` (site `target_site`), re-encrypting each segment under the
/// target's own keys. `export_key` comes from [`combine_shares`].
pub fn import(
    target: &mut SegmentStore,
    target_site: &str,
    bundle: &Path,
    export_key: &SecretKey,
    now_ms: i64,
) -> Result<Vec<SegmentMeta>> {
    let info = bundle_info(bundle)?;
    if info.target_site != target_site {
        return Err(StoreError::Custody(format!(
            "bundle {} is for site {}, not {target_site}",
            info.export_id, info.target_site
        )));
    }
    if key_digest(export_key) != info.key_digest {
        return Err(StoreError::Custody(format!("the key given does not open bundle {}", info.export_id)));
    }
    let source = SegmentStore::open(bundle, Kek::from_secret(1, export_key.clone()))?;
    let mut imported = Vec::new();
    for bundled in source.segments().to_vec() {
        let (schema, batches) = source.read_live(&bundled.id)?;
        let original = info
            .segments
            .iter()
            .find(|s| Some(format!("{}/{}", info.source_site, s.id)) == bundled.imported_from)
            .unwrap_or(&bundled);
        imported.push(target.write_imported(original, &info.source_site, &schema, &batches, now_ms)?);
    }
    Ok(imported)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Float64Array, RecordBatch, StringArray, TimestampMillisecondArray};
    use arrow_schema::{DataType, Field, Schema, TimeUnit};
    use std::sync::Arc;
    use tessera_core::GradeMap;

    fn rows() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("motor_id", DataType::Utf8, false),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), false),
            Field::new("vibration_x_rms", DataType::Float64, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec!["m-1", "m-2"])),
                Arc::new(TimestampMillisecondArray::from(vec![10, 20]).with_timezone("UTC")),
                Arc::new(Float64Array::from(vec![0.5, 0.75])),
            ],
        )
        .unwrap()
    }

    #[test]
    fn any_two_of_three_shares_rebuild_the_key_and_one_does_not() {
        let key = SecretKey::generate().unwrap();
        let digest = key_digest(&key);
        let shares = split_key(&key, 2, 3).unwrap();
        assert_eq!(shares.len(), 3);
        for pair in [[0, 1], [0, 2], [1, 2]] {
            let given = [shares[pair[0]].clone(), shares[pair[1]].clone()];
            assert_eq!(combine_shares(&given, 2, &digest).unwrap(), key);
        }
        assert!(
            combine_shares(&shares[..1], 2, &digest)
                .unwrap_err()
                .to_string()
                .contains("1 distinct share(s) given, 2 needed")
        );
        let twice = [shares[0].clone(), shares[0].clone()];
        assert!(combine_shares(&twice, 2, &digest).is_err(), "a repeated share counts once");
        let mut bad = shares[1].clone();
        bad.share.replace_range(4..6, if &bad.share[4..6] == "00" { "01" } else { "00" });
        assert!(
            combine_shares(&[shares[0].clone(), bad], 2, &digest).unwrap_err().to_string().contains("do not rebuild")
        );
        assert!(split_key(&key, 1, 3).is_err(), "k = 1 would hand out the key itself");
    }

    #[test]
    fn a_bundle_moves_segments_reencrypted_under_the_target_keys() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = SegmentStore::open(dir.path().join("a"), Kek::generate(1).unwrap()).unwrap();
        let mut b = SegmentStore::open(dir.path().join("b"), Kek::generate(1).unwrap()).unwrap();
        let seg = a.write("telemetry", &[rows()], &GradeMap::builtin(), 1).unwrap().unwrap();
        let bundle = dir.path().join("bundle");
        let (info, key) = export(&a, "site-a", std::slice::from_ref(&seg.id), "site-b", "exp-1", &bundle, 2).unwrap();
        assert_eq!(info.segments.len(), 1);

        let shares = split_key(&key, 2, 3).unwrap();
        drop(key);
        // The wrong site, or too few shares, cannot import.
        assert!(
            import(&mut b, "site-c", &bundle, &combine_shares(&shares[..2], 2, &info.key_digest).unwrap(), 3).is_err()
        );
        let key = combine_shares(&shares[1..], 2, &info.key_digest).unwrap();
        let imported = import(&mut b, "site-b", &bundle, &key, 3).unwrap();
        assert_eq!(imported[0].imported_from.as_deref(), Some(format!("site-a/{}", seg.id).as_str()));
        assert_eq!((imported[0].min_ts_ms, imported[0].max_ts_ms), (10, 20));
        let back = b.read(&imported[0].id, None).unwrap();
        assert_eq!(back[0].column(2).as_any().downcast_ref::<Float64Array>().unwrap().values(), &[0.5, 0.75]);
        // The bundle itself opens only with the export key.
        let stranger = SegmentStore::open(&bundle, Kek::generate(1).unwrap()).unwrap();
        assert!(matches!(stranger.read(&stranger.segments()[0].id, None), Err(StoreError::Key { .. })));
    }
}
