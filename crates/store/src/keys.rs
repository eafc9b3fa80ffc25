//! Envelope encryption: data keys wrapped by the site's key-encryption key.
//!
//! Every segment has one 256-bit *data key* per grade it holds. Data keys are never written in
//! the clear: the [`Keyring`] file keeps each one sealed with AES-256-GCM under the site's
//! *key-encryption key* ([`Kek`]), with the key's id and the KEK's version as associated data
//! (so a sealed key cannot be moved to another id). The KEK itself is not kept with the data:
//! it is read from a file the platform mounts (a Kubernetes Secret, say), so a stolen data disk
//! holds only ciphertext. Rotating the KEK re-seals every data key under the new one.
//! Destroying a data key (crypto-shredding) rewrites the key ring without it; after that no
//! store holds the key, so the data it protected is gone even where its bytes remain.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use crate::error::{Result, StoreError, io};

/// Length of every key, in bytes.
pub const KEY_LEN: usize = 32;

/// A 256-bit key whose bytes are wiped when it is dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey([u8; KEY_LEN]);

impl SecretKey {
    /// A fresh random key.
    pub fn generate() -> Result<Self> {
        let mut bytes = [0u8; KEY_LEN];
        SystemRandom::new().fill(&mut bytes).map_err(|_| StoreError::Kek("the system random source failed".into()))?;
        Ok(Self(bytes))
    }

    /// The key's bytes.
    pub fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// A key from bytes (exactly [`KEY_LEN`] of them).
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        Some(Self(bytes.try_into().ok()?))
    }
}

impl Drop for SecretKey {
    fn drop(&mut self) {
        // Volatile-free best effort: the bytes are overwritten before the memory is freed.
        self.0.iter_mut().for_each(|b| *b = 0);
        std::hint::black_box(&self.0);
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

/// A site's key-encryption key and its version.
#[derive(Debug, Clone)]
pub struct Kek {
    /// Its version: raised at each rotation.
    pub version: u32,
    key: SecretKey,
}

impl Kek {
    /// A fresh random KEK of `version`.
    pub fn generate(version: u32) -> Result<Self> {
        Ok(Self { version, key: SecretKey::generate()? })
    }

    /// A KEK of `version` from a key made elsewhere (an export key rebuilt from shares).
    pub fn from_secret(version: u32, key: SecretKey) -> Self {
        Self { version, key }
    }

    /// The key itself.
    pub fn secret(&self) -> &SecretKey {
        &self.key
    }

    /// Reads a KEK file: one line `v<version>:<64 hex digits>`.
    pub fn read(path: &Path) -> Result<Self> {
        let text = fs::read_to_string(path).map_err(|cause| StoreError::KekFile { path: path.to_path_buf(), cause })?;
        Self::parse(text.trim()).map_err(|e| StoreError::Kek(format!("{}: {e}", path.display())))
    }

    fn parse(text: &str) -> Result<Self, String> {
        let (version, hex) = text.split_once(':').ok_or("expected `v<version>:<64 hex digits>`")?;
        let version =
            version.strip_prefix('v').and_then(|v| v.parse().ok()).ok_or("the version must be `v` and a number")?;
        let bytes = from_hex(hex).filter(|b| b.len() == KEY_LEN).ok_or("the key must be 64 hex digits")?;
        Ok(Self { version, key: SecretKey::from_slice(&bytes).expect("checked length") })
    }

    /// Writes the KEK file (readable by its owner only).
    pub fn write(&self, path: &Path) -> Result<()> {
        let text = format!("v{}:{}\n", self.version, to_hex(self.key.bytes()));
        write_private(path, text.as_bytes())
    }

    fn cipher(&self) -> LessSafeKey {
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, self.key.bytes()).expect("32-byte key"))
    }

    /// Seals `key` under this KEK, bound to `id`.
    pub fn wrap(&self, id: &str, key: &SecretKey) -> Result<SealedKey> {
        let mut nonce = [0u8; 12];
        SystemRandom::new().fill(&mut nonce).map_err(|_| StoreError::Kek("the system random source failed".into()))?;
        let mut sealed = key.bytes().to_vec();
        self.cipher()
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(self.aad(id)), &mut sealed)
            .map_err(|_| StoreError::Key { id: id.into(), reason: "sealing failed".into() })?;
        Ok(SealedKey { nonce: to_hex(&nonce), sealed: to_hex(&sealed) })
    }

    /// Opens a key sealed by [`Kek::wrap`] under this KEK for `id`.
    pub fn unwrap(&self, id: &str, sealed: &SealedKey) -> Result<SecretKey> {
        let bad = |reason: &str| StoreError::Key { id: id.into(), reason: reason.into() };
        let nonce: [u8; 12] =
            from_hex(&sealed.nonce).and_then(|n| n.try_into().ok()).ok_or_else(|| bad("malformed nonce"))?;
        let mut bytes = from_hex(&sealed.sealed).ok_or_else(|| bad("malformed sealed key"))?;
        let plain = self
            .cipher()
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(self.aad(id)), &mut bytes)
            .map_err(|_| {
                bad(&format!(
                    "does not open under key-encryption key v{} (wrong key, or the key ring was altered)",
                    self.version
                ))
            })?;
        let key = SecretKey::from_slice(plain).ok_or_else(|| bad("wrong length"));
        bytes.iter_mut().for_each(|b| *b = 0);
        key
    }

    fn aad(&self, id: &str) -> Vec<u8> {
        format!("tessera-key:{id}:kek-v{}", self.version).into_bytes()
    }
}

/// A data key sealed under a KEK (hex, as the key ring stores it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedKey {
    /// The AES-GCM nonce.
    pub nonce: String,
    /// The sealed key and its tag.
    pub sealed: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct KeyringFile {
    kek_version: u32,
    keys: BTreeMap<String, SealedKey>,
}

/// The site's data keys, sealed under its KEK, in one file.
#[derive(Debug)]
pub struct Keyring {
    path: PathBuf,
    kek: Kek,
    file: KeyringFile,
}

impl Keyring {
    /// Opens (or creates) the key ring at `path`, sealed under `kek`. A key ring sealed under
    /// another KEK version is refused: rotate it with the old KEK first.
    pub fn open(path: impl Into<PathBuf>, kek: Kek) -> Result<Self> {
        let path = path.into();
        let file = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<KeyringFile>(&bytes).map_err(|cause| StoreError::Corrupt {
                what: "key ring",
                path: path.clone(),
                cause,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                KeyringFile { kek_version: kek.version, keys: BTreeMap::new() }
            }
            Err(e) => return Err(io("read", &path)(e)),
        };
        if file.kek_version != kek.version {
            return Err(StoreError::Kek(format!(
                "the key ring {} is sealed under key-encryption key v{}, but v{} was given (rotate with the old key first)",
                path.display(),
                file.kek_version,
                kek.version
            )));
        }
        Ok(Self { path, kek, file })
    }

    /// The version of the KEK sealing the ring.
    pub fn kek_version(&self) -> u32 {
        self.kek.version
    }

    /// The KEK it is sealed under.
    pub(crate) fn kek(&self) -> &Kek {
        &self.kek
    }

    /// Makes, seals and stores a new data key under `id`.
    pub fn create(&mut self, id: &str) -> Result<SecretKey> {
        let key = SecretKey::generate()?;
        self.file.keys.insert(id.to_string(), self.kek.wrap(id, &key)?);
        self.save()?;
        Ok(key)
    }

    /// The data key `id`, if it exists.
    pub fn get(&self, id: &str) -> Result<Option<SecretKey>> {
        self.file.keys.get(id).map(|sealed| self.kek.unwrap(id, sealed)).transpose()
    }

    /// Whether key `id` exists.
    pub fn contains(&self, id: &str) -> bool {
        self.file.keys.contains_key(id)
    }

    /// The ids of every key.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.file.keys.keys().map(String::as_str)
    }

    /// Destroys the keys `ids` (those that exist); returns how many were destroyed.
    pub fn destroy(&mut self, ids: &[String]) -> Result<usize> {
        let before = self.file.keys.len();
        for id in ids {
            self.file.keys.remove(id);
        }
        let destroyed = before - self.file.keys.len();
        if destroyed > 0 {
            self.save()?;
        }
        Ok(destroyed)
    }

    /// Re-seals every key under `new` (a higher version) and keeps using it.
    pub fn rotate(&mut self, new: Kek) -> Result<usize> {
        if new.version <= self.kek.version {
            return Err(StoreError::Kek(format!(
                "the new key-encryption key must have a version above v{} (got v{})",
                self.kek.version, new.version
            )));
        }
        let mut keys = BTreeMap::new();
        for (id, sealed) in &self.file.keys {
            let key = self.kek.unwrap(id, sealed)?;
            keys.insert(id.clone(), new.wrap(id, &key)?);
        }
        let count = keys.len();
        self.file = KeyringFile { kek_version: new.version, keys };
        self.kek = new;
        self.save()?;
        Ok(count)
    }

    fn save(&self) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(&self.file).expect("key ring serialises");
        replace_file(&self.path, &bytes)
    }
}

/// Writes `bytes` to `path` through a synced temporary file and a rename, so a crash leaves the
/// old or the new content, never a torn one; the file is readable by its owner only.
pub(crate) fn replace_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    write_private(&tmp, bytes)?;
    fs::rename(&tmp, path).map_err(io("rename", path))?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io("sync", dir))?;
    }
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(io("create", path))?;
    file.write_all(bytes).map_err(io("write", path))?;
    file.sync_all().map_err(io("sync", path))
}

/// Lower-case hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes from hex, if it is hex.
pub fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_sealed_bound_to_their_id_and_rotation_reseals_them() {
        let dir = tempfile::tempdir().unwrap();
        let kek = Kek::generate(1).unwrap();
        let mut ring = Keyring::open(dir.path().join("keys.json"), kek.clone()).unwrap();
        let key = ring.create("seg-1/core").unwrap();
        let on_disk = fs::read_to_string(dir.path().join("keys.json")).unwrap();
        assert!(!on_disk.contains(&to_hex(key.bytes())), "a data key is never on disk in the clear");
        assert_eq!(ring.get("seg-1/core").unwrap().unwrap(), key);

        // A sealed key moved to another id does not open.
        let sealed = ring.file.keys["seg-1/core"].clone();
        assert!(kek.unwrap("seg-2/core", &sealed).is_err());

        // Rotation: the old KEK no longer opens the ring; the new one does, with the same key.
        let new = Kek::generate(2).unwrap();
        assert_eq!(ring.rotate(new.clone()).unwrap(), 1);
        assert!(matches!(Keyring::open(dir.path().join("keys.json"), kek), Err(StoreError::Kek(_))));
        let reopened = Keyring::open(dir.path().join("keys.json"), new).unwrap();
        assert_eq!(reopened.get("seg-1/core").unwrap().unwrap(), key);
    }

    #[test]
    fn kek_files_round_trip_and_bad_ones_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("site.kek");
        let kek = Kek::generate(7).unwrap();
        kek.write(&path).unwrap();
        let back = Kek::read(&path).unwrap();
        assert_eq!((back.version, back.key), (7, kek.key));
        fs::write(&path, "v1:abcd").unwrap();
        let err = Kek::read(&path).unwrap_err().to_string();
        assert!(err.contains("64 hex digits"), "{err}");
    }
}
