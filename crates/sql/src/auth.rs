//! Who is asking: users and roles, Basic credentials checked against Argon2id hashes, and the
//! bearer tokens the handshake hands out.
//!
//! Users come from config for now ([`ConfigUsers`]); the endpoint only sees the
//! [`IdentityProvider`] trait, which an OIDC provider can implement later. No secret is kept
//! in clear: passwords are Argon2id PHC strings, and tokens (issued or configured) are kept as
//! SHA-256 digests, compared in constant time by looking the digest up.
//!
//! A sign-in costs the same whether the user exists or not (an unknown user's password is
//! verified against a dummy hash of the same parameters), so its time tells nothing about
//! which users exist. The endpoint runs sign-ins on the blocking pool, a few at a time (see
//! `crate::service`), so a flood of them cannot stall queries.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use tessera_core::ConfigError;

use crate::error::SqlError;
use crate::identity::{AS_ROLE, AS_SITE, AS_USER};
pub use crate::identity::{Identity, Role};

/// A user of the `[sql]` config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// Login name.
    pub name: String,
    /// Argon2id PHC string (`tessera sql hash-password` makes one).
    pub password_hash: String,
    /// The user's role.
    pub role: Role,
    /// The user's site; required for site operators.
    #[serde(default)]
    pub site: Option<String>,
}

/// A long-lived bearer token of the `[sql]` config (for dashboards and services).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Hex SHA-256 of the token (`tessera sql hash-token` makes one).
    pub sha256: String,
    /// The user the token acts as.
    pub user: String,
}

/// Where identities come from: config now, OIDC later.
pub trait IdentityProvider: Send + Sync {
    /// Checks a user name and password.
    fn password(&self, user: &str, password: &str) -> Result<Identity, SqlError>;
    /// The identity behind a long-lived bearer token, if it is one.
    fn token(&self, token: &str) -> Option<Identity>;
}

/// Users and tokens from config.
pub struct ConfigUsers {
    users: HashMap<String, (UserConfig, PasswordHash<'static>)>,
    tokens: HashMap<[u8; 32], String>,
    /// Password verifications done, unknown users' included (the tests count them).
    verifications: std::sync::atomic::AtomicU64,
}

/// What an unknown user's password is verified against: the hash of a random secret nobody
/// knows, with Argon2's default parameters (those `tessera hash-secret` uses).
const UNKNOWN_USER_PHC: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$F9Tti1goJzdJnderVcYghg$N5hgRjE0StqQRYufEqgqeeiSoDd9Pk7inBaEp4/69cw";

impl ConfigUsers {
    /// Checks the config: every hash parses, site operators name their site, tokens name a
    /// known user. Errors name the entry's field relative to the `[sql]` section
    /// (`users[2].password_hash`).
    pub fn new(users: &[UserConfig], tokens: &[TokenConfig]) -> Result<Self, ConfigError> {
        let mut by_name = HashMap::new();
        for (i, u) in users.iter().enumerate() {
            let field = |name: &str, problem: &str| {
                ConfigError::new(format!("users[{i}].{name}"), format!("user {:?}: {problem}", u.name))
            };
            if u.name.is_empty() {
                return Err(field("name", "must not be empty"));
            }
            // Leaked once per configured user, at start: PasswordHash borrows its string.
            let phc: &'static str = Box::leak(u.password_hash.clone().into_boxed_str());
            let hash =
                PasswordHash::new(phc).map_err(|e| field("password_hash", &format!("is not a PHC string: {e}")))?;
            if u.role == Role::SiteOperator && u.site.as_deref().is_none_or(str::is_empty) {
                return Err(field("site", "a site-operator needs a site"));
            }
            if by_name.insert(u.name.clone(), (u.clone(), hash)).is_some() {
                return Err(field("name", "listed twice"));
            }
        }
        let mut by_digest = HashMap::new();
        for (i, t) in tokens.iter().enumerate() {
            let field = |name: &str, problem: String| ConfigError::new(format!("tokens[{i}].{name}"), problem);
            let digest = decode_digest(&t.sha256).ok_or_else(|| field("sha256", "must be 64 hex digits".into()))?;
            if !by_name.contains_key(&t.user) {
                return Err(field("user", format!("{} is not one of the users", t.user)));
            }
            by_digest.insert(digest, t.user.clone());
        }
        Ok(Self { users: by_name, tokens: by_digest, verifications: Default::default() })
    }

    /// Password verifications done so far, unknown users' included.
    pub fn verifications(&self) -> u64 {
        self.verifications.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn identity(&self, user: &str) -> Option<Identity> {
        self.users.get(user).map(|(u, _)| Identity {
            user: u.name.clone(),
            role: u.role,
            site: u.site.clone(),
            via_peer: false,
            fanout: Default::default(),
        })
    }
}

impl IdentityProvider for ConfigUsers {
    fn password(&self, user: &str, password: &str) -> Result<Identity, SqlError> {
        let denied = || SqlError::Unauthenticated("unknown user or wrong password".into());
        let unknown = PasswordHash::new(UNKNOWN_USER_PHC).map_err(|e| SqlError::internal(format!("{e}")))?;
        let (known, hash) = match self.users.get(user) {
            Some((_, hash)) => (true, hash),
            None => (false, &unknown),
        };
        self.verifications.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let verified = Argon2::default().verify_password(password.as_bytes(), hash).is_ok();
        if !(known && verified) {
            return Err(denied());
        }
        self.identity(user).ok_or_else(denied)
    }

    fn token(&self, token: &str) -> Option<Identity> {
        self.tokens.get(&digest(token)).and_then(|user| self.identity(user))
    }
}

/// An Argon2id PHC string for `password`, with a random salt.
pub fn hash_password(password: &str) -> Result<String, SqlError> {
    // password-hash's error is no `std::error::Error` (argon2 is built without `std`): its text is all there is.
    let failed = |e: argon2::password_hash::Error| SqlError::internal(format!("hashing a password: {e}"));
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).map_err(failed)?;
    Ok(Argon2::default().hash_password(password.as_bytes(), &salt).map_err(failed)?.to_string())
}

/// Hex SHA-256 of a token, as `sql.tokens` lists it.
pub fn hash_token(token: &str) -> String {
    digest(token).iter().map(|b| format!("{b:02x}")).collect()
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn decode_digest(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// How long an expired session is still known as expired.
const EXPIRED_KEPT: Duration = Duration::from_secs(3600);

/// Checks callers: Basic credentials at the handshake (which issues a session token), and
/// bearer tokens (issued or configured) on every other call.
pub struct Authenticator {
    provider: Box<dyn IdentityProvider>,
    sessions: Mutex<HashMap<[u8; 32], (Identity, Instant)>>,
    session_ttl: Duration,
    /// SHA-256 of the token the sites' nodes present to each other.
    federation: Option<[u8; 32]>,
}

impl Authenticator {
    /// Sessions issued by the handshake last `session_ttl`.
    pub fn new(provider: Box<dyn IdentityProvider>, session_ttl: Duration) -> Self {
        Self { provider, sessions: Mutex::new(HashMap::new()), session_ttl, federation: None }
    }

    /// Accepts `token` from other sites' nodes, acting for the caller their `x-tessera-as-*`
    /// headers name (see [`crate::identity`]).
    pub fn with_federation_token(mut self, token: &str) -> Self {
        self.federation = Some(digest(token));
        self
    }

    /// The identity behind a call: a bearer token as in [`Self::check`], or a peer node's
    /// federation token with the identity it acts for (`header` reads the call's metadata).
    pub fn check_call(&self, header: &dyn Fn(&str) -> Option<String>) -> Result<Identity, SqlError> {
        let authorization = header("authorization");
        if let (Some(federation), Some(token)) =
            (self.federation, authorization.as_deref().and_then(|h| h.strip_prefix("Bearer ")))
            && digest(token) == federation
        {
            let user = header(AS_USER)
                .ok_or_else(|| SqlError::Unauthenticated("a federated call must name its user".into()))?;
            let role = match header(AS_ROLE).as_deref() {
                Some("site-operator") => Role::SiteOperator,
                Some("fleet-analyst") => Role::FleetAnalyst,
                Some("admin") => Role::Admin,
                other => {
                    return Err(SqlError::Unauthenticated(format!("a federated call names no known role: {other:?}")));
                }
            };
            return Ok(Identity { user, role, site: header(AS_SITE), via_peer: true, fanout: Default::default() });
        }
        self.check(authorization.as_deref())
    }

    /// The handshake: checks `authorization` (`Basic base64(user:password)`, padding optional
    /// as the ADBC driver omits it) and returns a new session token, or accepts a bearer
    /// token as is.
    pub fn handshake(&self, authorization: Option<&str>) -> Result<(String, Identity), SqlError> {
        let header = authorization
            .ok_or_else(|| SqlError::Unauthenticated("no authorization header: send Basic credentials".into()))?;
        if let Some(token) = header.strip_prefix("Bearer ") {
            let identity = self.bearer(token)?;
            return Ok((token.to_string(), identity));
        }
        let (user, password) = parse_basic(header)?;
        let identity = self.provider.password(&user, &password)?;
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
        let mut sessions = self.sessions.lock().map_err(|_| SqlError::internal("session table poisoned"))?;
        let now = Instant::now();
        // Expired sessions are forgotten an hour after they expire, not at once, so that their
        // holders are told their session expired rather than that it is unknown.
        sessions.retain(|_, (_, expires)| *expires + EXPIRED_KEPT > now);
        sessions.insert(digest(&token), (identity.clone(), now + self.session_ttl));
        Ok((token, identity))
    }

    /// Ends the session of `token` (a sign-out); a configured token is not a session and
    /// stays valid. Returns whether a session ended.
    pub fn end_session(&self, token: &str) -> bool {
        self.sessions.lock().map(|mut sessions| sessions.remove(&digest(token)).is_some()).unwrap_or(false)
    }

    /// The identity behind `authorization` (`Bearer <token>`) on a call after the handshake.
    pub fn check(&self, authorization: Option<&str>) -> Result<Identity, SqlError> {
        let header = authorization.ok_or_else(|| {
            SqlError::Unauthenticated("no bearer token: authenticate with the handshake first".into())
        })?;
        let token = header
            .strip_prefix("Bearer ")
            .ok_or_else(|| SqlError::Unauthenticated("the authorization header must be 'Bearer <token>'".into()))?;
        self.bearer(token)
    }

    fn bearer(&self, token: &str) -> Result<Identity, SqlError> {
        let key = digest(token);
        if let Ok(sessions) = self.sessions.lock()
            && let Some((identity, expires)) = sessions.get(&key)
        {
            return match *expires > Instant::now() {
                true => Ok(identity.clone()),
                false => Err(SqlError::Unauthenticated("the session token has expired: authenticate again".into())),
            };
        }
        self.provider.token(token).ok_or_else(|| SqlError::Unauthenticated("unknown bearer token".into()))
    }
}

/// `Basic base64(user:password)`, base64 with or without padding.
pub fn parse_basic(header: &str) -> Result<(String, String), SqlError> {
    let bad = |why: &str| SqlError::Unauthenticated(format!("authorization header: {why}"));
    let encoded = header.strip_prefix("Basic ").ok_or_else(|| bad("expected 'Basic <base64>' or 'Bearer <token>'"))?;
    let encoded = encoded.trim().trim_end_matches('=');
    let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(encoded)
        .map_err(|_| bad("credentials are not base64"))?;
    let text = String::from_utf8(bytes).map_err(|_| bad("credentials are not UTF-8"))?;
    let (user, password) = text.split_once(':').ok_or_else(|| bad("credentials must be user:password"))?;
    Ok((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users() -> Authenticator {
        let hash = hash_password("s3cret").unwrap();
        let users = vec![
            UserConfig { name: "ana".into(), password_hash: hash.clone(), role: Role::FleetAnalyst, site: None },
            UserConfig {
                name: "op".into(),
                password_hash: hash,
                role: Role::SiteOperator,
                site: Some("site-a".into()),
            },
        ];
        let tokens = vec![TokenConfig { sha256: hash_token("grafana-token"), user: "ana".into() }];
        Authenticator::new(Box::new(ConfigUsers::new(&users, &tokens).unwrap()), Duration::from_secs(60))
    }

    fn basic(credentials: &str, pad: bool) -> String {
        let engine = if pad {
            base64::engine::general_purpose::STANDARD
        } else {
            base64::engine::general_purpose::STANDARD_NO_PAD
        };
        format!("Basic {}", engine.encode(credentials))
    }

    #[test]
    fn basic_credentials_with_or_without_padding_give_a_session_token() {
        let auth = users();
        // "op:s3cret" is 9 bytes: base64 with one '=' of padding, which ADBC leaves out.
        for pad in [true, false] {
            let (token, who) = auth.handshake(Some(&basic("op:s3cret", pad))).unwrap();
            assert_eq!((who.user.as_str(), who.role, who.site.as_deref()), ("op", Role::SiteOperator, Some("site-a")));
            assert_eq!(auth.check(Some(&format!("Bearer {token}"))).unwrap(), who);
        }
        let err = auth.handshake(Some(&basic("op:wrong", false))).unwrap_err();
        assert!(matches!(err, SqlError::Unauthenticated(_)), "{err}");
        let err = auth.handshake(Some(&basic("nobody:s3cret", false))).unwrap_err();
        assert_eq!(err.to_string(), "unauthenticated: unknown user or wrong password");
        assert!(auth.handshake(None).is_err());
        assert!(auth.check(None).is_err());
        assert!(auth.check(Some("Bearer made-up")).is_err());
    }

    #[test]
    fn an_unknown_user_costs_a_verification_like_a_known_one() {
        let hash = hash_password("s3cret").unwrap();
        let users = vec![UserConfig { name: "ana".into(), password_hash: hash, role: Role::FleetAnalyst, site: None }];
        let provider = ConfigUsers::new(&users, &[]).unwrap();
        let wrong = provider.password("ana", "wrong").unwrap_err();
        let unknown = provider.password("nobody", "wrong").unwrap_err();
        assert_eq!(wrong.to_string(), unknown.to_string());
        assert_eq!(provider.verifications(), 2, "the unknown user's password was verified too");
        assert!(
            PasswordHash::new(UNKNOWN_USER_PHC).unwrap().params
                == PasswordHash::new(&users[0].password_hash).unwrap().params
        );
        assert_eq!(provider.password("ana", "s3cret").unwrap().user, "ana");
    }

    #[test]
    fn configured_tokens_are_accepted_directly_and_kept_hashed() {
        let auth = users();
        assert_eq!(auth.check(Some("Bearer grafana-token")).unwrap().user, "ana");
        assert_eq!(auth.handshake(Some("Bearer grafana-token")).unwrap().0, "grafana-token");
        assert_eq!(hash_token("grafana-token").len(), 64);
    }

    #[test]
    fn sessions_expire() {
        let hash = hash_password("pw").unwrap();
        let users = vec![UserConfig { name: "a".into(), password_hash: hash, role: Role::Admin, site: None }];
        let auth = Authenticator::new(Box::new(ConfigUsers::new(&users, &[]).unwrap()), Duration::ZERO);
        let (token, _) = auth.handshake(Some(&basic("a:pw", true))).unwrap();
        let err = auth.check(Some(&format!("Bearer {token}"))).unwrap_err();
        assert!(err.to_string().contains("expired"), "{err}");
        // Another sign-in meanwhile does not turn the expired session into an unknown one.
        auth.handshake(Some(&basic("a:pw", true))).unwrap();
        let err = auth.check(Some(&format!("Bearer {token}"))).unwrap_err();
        assert!(err.to_string().contains("expired"), "{err}");
    }

    #[test]
    fn a_signed_out_session_is_refused() {
        let hash = hash_password("pw").unwrap();
        let users = vec![UserConfig { name: "a".into(), password_hash: hash, role: Role::Admin, site: None }];
        let auth = Authenticator::new(Box::new(ConfigUsers::new(&users, &[]).unwrap()), Duration::from_secs(60));
        let (token, _) = auth.handshake(Some(&basic("a:pw", true))).unwrap();
        assert!(auth.check(Some(&format!("Bearer {token}"))).is_ok());
        assert!(auth.end_session(&token));
        let err = auth.check(Some(&format!("Bearer {token}"))).unwrap_err();
        assert!(err.to_string().contains("unknown bearer token"), "{err}");
        assert!(!auth.end_session(&token), "ended once");
    }

    #[test]
    fn config_errors_name_the_entry() {
        let bad = UserConfig { name: "x".into(), password_hash: "plain".into(), role: Role::Admin, site: None };
        let err = ConfigUsers::new(&[bad], &[]).err().unwrap();
        assert_eq!(err.field, "users[0].password_hash");
        let err = err.within("sql").to_string();
        assert!(err.starts_with("sql.users[0].password_hash: user \"x\": is not a PHC string"), "{err}");
        let op = UserConfig {
            name: "o".into(),
            password_hash: hash_password("p").unwrap(),
            role: Role::SiteOperator,
            site: None,
        };
        let err = ConfigUsers::new(&[op], &[]).err().unwrap();
        assert_eq!(err.field, "users[0].site");
        assert!(err.problem.contains("needs a site"), "{err}");
        let err = ConfigUsers::new(&[], &[TokenConfig { sha256: "ab".into(), user: "x".into() }]).err().unwrap();
        assert_eq!(err.field, "tokens[0].sha256");
    }
}
