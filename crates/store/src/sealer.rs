//! Sealing other site-local files under the site's KEK: the detection stage's checkpoints
//! (they hold open windows' raw readings), so nothing important or core is on disk in the
//! clear.
//!
//! The sealing key is derived from the KEK with HKDF-SHA256 (label `tessera checkpoints`), so
//! every node of a site, sharing the KEK, opens every checkpoint of the site. Each file is
//! AES-256-GCM with a random nonce, prefixed to the ciphertext. Rotating the KEK changes the
//! key: checkpoints sealed before a rotation open only with the previous KEK, which
//! [`KekSealer::with_previous`] accepts while the site moves over.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hkdf::{HKDF_SHA256, Salt};
use ring::rand::{SecureRandom, SystemRandom};

use crate::keys::Kek;

const LABEL: &[u8] = b"tessera checkpoints";

/// Seals files under a key derived from the site's KEK.
pub struct KekSealer {
    current: LessSafeKey,
    previous: Option<LessSafeKey>,
}

impl std::fmt::Debug for KekSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KekSealer(..)")
    }
}

fn derive(kek: &Kek) -> LessSafeKey {
    let prk = Salt::new(HKDF_SHA256, b"tessera").extract(kek.secret().bytes());
    let info = [LABEL];
    let okm = prk.expand(&info, &AES_256_GCM).expect("one AES-256 key is within HKDF's limit");
    LessSafeKey::new(UnboundKey::from(okm))
}

impl KekSealer {
    /// A sealer under `kek`.
    pub fn new(kek: &Kek) -> Self {
        Self { current: derive(kek), previous: None }
    }

    /// Also opens files sealed under `previous` (the KEK before a rotation).
    pub fn with_previous(mut self, previous: &Kek) -> Self {
        self.previous = Some(derive(previous));
        self
    }

    /// The sealed form of `plain`: nonce, then ciphertext and tag.
    pub fn seal(&self, plain: &[u8]) -> Result<Vec<u8>, String> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).map_err(|_| "the system random source failed".to_string())?;
        let mut out = plain.to_vec();
        self.current
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(LABEL), &mut out)
            .map_err(|_| "sealing failed".to_string())?;
        Ok([nonce.as_slice(), &out].concat())
    }

    /// The plain form of a sealed file.
    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, String> {
        if sealed.len() < NONCE_LEN {
            return Err("too short to be sealed".into());
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        for key in std::iter::once(&self.current).chain(self.previous.as_ref()) {
            let mut buf = body.to_vec();
            let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| "bad nonce".to_string())?;
            if let Ok(plain) = key.open_in_place(nonce, Aad::from(LABEL), &mut buf) {
                return Ok(plain.to_vec());
            }
        }
        Err("not sealed under this site's key-encryption key (or altered)".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_bytes_open_under_the_same_kek_or_as_previous_after_rotation() {
        let (old, new) = (Kek::generate(1).unwrap(), Kek::generate(2).unwrap());
        let sealed = KekSealer::new(&old).seal(b"open windows").unwrap();
        assert!(!sealed.windows(12).any(|w| w == b"open windows"));
        assert_eq!(KekSealer::new(&old).open(&sealed).unwrap(), b"open windows");
        assert!(KekSealer::new(&new).open(&sealed).is_err());
        assert_eq!(KekSealer::new(&new).with_previous(&old).open(&sealed).unwrap(), b"open windows");
        let mut altered = sealed.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert!(KekSealer::new(&old).open(&altered).is_err());
    }
}
