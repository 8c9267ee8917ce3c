//! JWT authentication: a token in, [`Claims`] or an [`AuthError`] out, and
//! the [`RevocationList`] of tokens refused even when their signature holds.
//!
//! Knows nothing of sockets: the gateway decides where the token comes from
//! and what a refusal looks like on the wire.

use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::config::{Config, JwtAlgorithm};

/// A user id exactly as the token's `sub` holds it, kept as JSON text:
/// `42` stays a number, `"alice"` a string, when it is written back out.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct UserId(Box<RawValue>);

impl UserId {
    /// The id as JSON text.
    #[must_use]
    pub fn as_json(&self) -> &str {
        self.0.get()
    }

    /// The id as raw JSON, owned.
    #[must_use]
    pub fn to_raw(&self) -> Box<RawValue> {
        self.0.clone()
    }

    /// The id a token's `sub` claim holds.
    ///
    /// # Errors
    /// [`AuthError::BadSubject`] unless `sub` is a string or a number.
    pub fn from_sub(sub: &serde_json::Value) -> Result<Self, AuthError> {
        match sub {
            serde_json::Value::String(_) | serde_json::Value::Number(_) => {
                Ok(Self(RawValue::from_string(sub.to_string())?))
            }
            _ => Err(AuthError::BadSubject),
        }
    }
}

/// What an accepted token says about its holder.
#[derive(Debug, Clone)]
pub struct Claims {
    /// The `sub` claim.
    pub user_id: UserId,
    /// The optional `name` claim.
    pub name: Option<String>,
    /// The optional `jti` claim, the key for revocation.
    pub jti: Option<String>,
    /// When the token expires (`exp`), if it does.
    pub expires_at: Option<SystemTime>,
    /// The token's digest: all a connected socket keeps of the token, to
    /// check it against a revocation list that changed since.
    pub token_digest: TokenDigest,
}

/// A keyed 128-bit digest of a token or a `jti`, standing in for the text
/// where only equality matters: a revocation entry and a token match when
/// their digests do. The keys are random per process, so digests are never
/// stored or sent anywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenDigest(u128);

impl TokenDigest {
    /// The digest of `text`.
    #[must_use]
    pub fn of(text: &str) -> Self {
        static KEYS: OnceLock<(RandomState, RandomState)> = OnceLock::new();
        let (high, low) = KEYS.get_or_init(|| (RandomState::new(), RandomState::new()));
        Self((u128::from(high.hash_one(text)) << 64) | u128::from(low.hash_one(text)))
    }
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No token was presented.
    #[error("no token")]
    Missing,
    /// Bad signature, malformed, expired, not yet valid, wrong issuer or audience.
    #[error("invalid token: {0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
    /// The claims are not JSON this broker can carry.
    #[error("malformed claims: {0}")]
    Claims(#[from] serde_json::Error),
    /// `sub` is missing or neither a string nor a number.
    #[error("sub claim must be a string or a number")]
    BadSubject,
    /// The token or its `jti` is on the revocation list.
    #[error("token revoked")]
    Revoked,
}

/// Errors of setting up authentication from a [`Config`].
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The public key file could not be read.
    #[error("reading public key {path}: {source}")]
    ReadKey {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The public key is not a PEM key of the configured kind.
    #[error("parsing public key: {0}")]
    BadKey(jsonwebtoken::errors::Error),
    /// The revocation file could not be read.
    #[error("reading revocation file {path}: {source}")]
    ReadRevocations {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

#[derive(Deserialize)]
struct RawClaims {
    sub: Option<serde_json::Value>,
    name: Option<serde_json::Value>,
    jti: Option<String>,
    exp: Option<f64>,
}

/// Verifies tokens against the configured key, claims and revocation list.
pub struct Authenticator {
    key: DecodingKey,
    validation: Validation,
    revoked: RevocationList,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Builds the verifier from `config`, reading the key and revocation files.
    ///
    /// # Errors
    /// [`SetupError`] when a file cannot be read or the key does not parse.
    pub fn from_config(config: &Config) -> Result<Self, SetupError> {
        let (algorithm, key) = match config.jwt_algorithm {
            JwtAlgorithm::HS256 => {
                (Algorithm::HS256, DecodingKey::from_secret(config.effective_secret().as_bytes()))
            }
            kind @ (JwtAlgorithm::RS256 | JwtAlgorithm::ES256) => {
                let path = config.jwt_public_key_file.as_deref().unwrap_or(Path::new(""));
                let pem = std::fs::read(path)
                    .map_err(|source| SetupError::ReadKey { path: path.display().to_string(), source })?;
                if kind == JwtAlgorithm::RS256 {
                    (Algorithm::RS256, DecodingKey::from_rsa_pem(&pem).map_err(SetupError::BadKey)?)
                } else {
                    (Algorithm::ES256, DecodingKey::from_ec_pem(&pem).map_err(SetupError::BadKey)?)
                }
            }
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = config.jwt_leeway.as_secs();
        validation.validate_nbf = true;
        // Only what is configured is required: `exp` is checked when present.
        let mut required = Vec::new();
        if let Some(issuer) = &config.jwt_issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        match &config.jwt_audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        let revoked = RevocationList::default();
        if let Some(path) = &config.revocation_file {
            let entries = RevocationList::read(path)
                .map_err(|source| SetupError::ReadRevocations { path: path.display().to_string(), source })?;
            revoked.replace(entries);
        }
        Ok(Self { key, validation, revoked })
    }

    /// Verifies `token` and returns its claims.
    ///
    /// # Errors
    /// [`AuthError`] naming why the token is refused.
    pub fn authenticate(&self, token: &str) -> Result<Claims, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        let data = jsonwebtoken::decode::<RawClaims>(token, &self.key, &self.validation)?;
        let raw = data.claims;
        let user_id = UserId::from_sub(raw.sub.as_ref().ok_or(AuthError::BadSubject)?)?;
        let digest = TokenDigest::of(token);
        if self.revoked.is_revoked(digest, raw.jti.as_deref()) {
            return Err(AuthError::Revoked);
        }
        // Checked: `exp` is whatever number the token holds (1e19 included),
        // and an instant the clock cannot hold is treated as no expiry.
        let expires_at = raw
            .exp
            .and_then(|exp| Duration::try_from_secs_f64(exp).ok())
            .and_then(|exp| exp.checked_add(Duration::from_secs(self.validation.leeway)))
            .and_then(|exp| UNIX_EPOCH.checked_add(exp));
        let name = match raw.name {
            Some(serde_json::Value::String(name)) => Some(name),
            _ => None,
        };
        Ok(Claims { user_id, name, jti: raw.jti, expires_at, token_digest: digest })
    }

    /// The revocation list in force.
    #[must_use]
    pub fn revocations(&self) -> &RevocationList {
        &self.revoked
    }
}

/// Revoked token ids (`jti`) and whole tokens. An in-memory set, loaded from
/// a file at start and replaced whole when the file changes. Entries are
/// kept as [`TokenDigest`]s, so that a connected socket needs to keep only
/// its token's digest to be checked again.
#[derive(Debug, Default)]
pub struct RevocationList {
    entries: RwLock<HashSet<TokenDigest>>,
}

impl RevocationList {
    /// Reads a revocation file: one `jti` or token per line; blank lines and
    /// lines starting with `#` are skipped.
    ///
    /// # Errors
    /// The I/O error of reading the file.
    pub fn read(path: &Path) -> std::io::Result<HashSet<Box<str>>> {
        let text = std::fs::read_to_string(path)?;
        Ok(text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(Box::from)
            .collect())
    }

    /// Replaces every entry.
    pub fn replace(&self, entries: HashSet<Box<str>>) {
        let digests = entries.iter().map(|entry| TokenDigest::of(entry)).collect();
        *self.entries.write() = digests;
    }

    /// Revokes one `jti` or token.
    pub fn revoke(&self, entry: &str) {
        self.entries.write().insert(TokenDigest::of(entry));
    }

    /// Whether the token with digest `token`, or its `jti`, is revoked.
    #[must_use]
    pub fn is_revoked(&self, token: TokenDigest, jti: Option<&str>) -> bool {
        let entries = self.entries.read();
        if entries.is_empty() {
            return false;
        }
        entries.contains(&token) || jti.is_some_and(|jti| entries.contains(&TokenDigest::of(jti)))
    }

    /// The number of entries.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.read().len()
    }

    /// Whether nothing is revoked.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Signs an HS256 token for `sub` (a JSON string or number) valid for `ttl`.
///
/// # Errors
/// The signing error (none is expected for HS256).
pub fn mint_hs256(
    secret: &str,
    sub: serde_json::Value,
    name: Option<&str>,
    ttl: Duration,
) -> Result<String, jsonwebtoken::errors::Error> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let mut claims = serde_json::json!({ "sub": sub, "iat": now, "exp": now.saturating_add(ttl.as_secs()) });
    if let (Some(name), Some(claims)) = (name, claims.as_object_mut()) {
        claims.insert("name".to_owned(), serde_json::Value::from(name));
    }
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authenticator(config: Config) -> Authenticator {
        Authenticator::from_config(&config).expect("valid config")
    }

    fn sign(claims: &serde_json::Value, secret: &str) -> String {
        jsonwebtoken::encode(&Header::default(), claims, &EncodingKey::from_secret(secret.as_bytes()))
            .expect("sign")
    }

    fn in_an_hour() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs() + 3600
    }

    #[test]
    fn numeric_and_string_subjects_keep_their_json_type() {
        let auth = authenticator(Config { jwt_secret: Some("s".into()), ..Config::default() });
        let claims = auth.authenticate(&sign(&serde_json::json!({"sub": 42, "exp": in_an_hour()}), "s"));
        assert_eq!(claims.expect("valid").user_id.as_json(), "42");
        let claims = auth.authenticate(&sign(&serde_json::json!({"sub": "alice", "name": "Alice"}), "s"));
        let claims = claims.expect("valid");
        assert_eq!(claims.user_id.as_json(), "\"alice\"");
        assert_eq!(claims.name.as_deref(), Some("Alice"));
    }

    #[test]
    fn refuses_bad_signatures_expiry_and_missing_subject() {
        let auth = authenticator(Config {
            jwt_secret: Some("s".into()),
            jwt_leeway: Duration::ZERO,
            ..Config::default()
        });
        let wrong_key = sign(&serde_json::json!({"sub": 1}), "other");
        assert!(matches!(auth.authenticate(&wrong_key), Err(AuthError::Invalid(_))));
        let expired = sign(&serde_json::json!({"sub": 1, "exp": 1000}), "s");
        assert!(matches!(auth.authenticate(&expired), Err(AuthError::Invalid(_))));
        let not_yet = sign(&serde_json::json!({"sub": 1, "nbf": in_an_hour()}), "s");
        assert!(matches!(auth.authenticate(&not_yet), Err(AuthError::Invalid(_))));
        let no_sub = sign(&serde_json::json!({"name": "x"}), "s");
        assert!(matches!(auth.authenticate(&no_sub), Err(AuthError::BadSubject)));
        assert!(matches!(auth.authenticate(""), Err(AuthError::Missing)));
        assert!(matches!(auth.authenticate("garbage"), Err(AuthError::Invalid(_))));
    }

    #[test]
    fn checks_issuer_and_audience_when_configured() {
        let auth = authenticator(Config {
            jwt_secret: Some("s".into()),
            jwt_issuer: Some("me".into()),
            jwt_audience: Some("chat".into()),
            ..Config::default()
        });
        let good = sign(&serde_json::json!({"sub": 1, "iss": "me", "aud": "chat"}), "s");
        assert!(auth.authenticate(&good).is_ok());
        let bad = sign(&serde_json::json!({"sub": 1, "iss": "you", "aud": "chat"}), "s");
        assert!(auth.authenticate(&bad).is_err());
        let bad = sign(&serde_json::json!({"sub": 1, "iss": "me"}), "s");
        assert!(auth.authenticate(&bad).is_err());
    }

    #[test]
    fn revoked_jti_or_token_is_refused() {
        let auth = authenticator(Config { jwt_secret: Some("s".into()), ..Config::default() });
        let by_jti = sign(&serde_json::json!({"sub": 1, "jti": "t-1"}), "s");
        let whole = sign(&serde_json::json!({"sub": 2}), "s");
        auth.revocations().revoke("t-1");
        auth.revocations().revoke(&whole);
        assert!(matches!(auth.authenticate(&by_jti), Err(AuthError::Revoked)));
        assert!(matches!(auth.authenticate(&whole), Err(AuthError::Revoked)));
    }

    #[test]
    fn revocation_file_skips_comments_and_blanks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("revoked.txt");
        std::fs::write(&path, "# revoked\n\n jti-1 \ntoken.a.b\n").expect("write");
        let entries = RevocationList::read(&path).expect("read");
        assert_eq!(entries.len(), 2);
        assert!(entries.contains("jti-1"));
    }

    #[test]
    fn absurd_expiry_is_no_expiry_not_a_panic() {
        let auth = authenticator(Config { jwt_secret: Some("s".into()), ..Config::default() });
        for exp in [serde_json::json!(1e19), serde_json::json!(u64::MAX), serde_json::json!(1.7e308)] {
            let token = sign(&serde_json::json!({"sub": 1, "exp": exp}), "s");
            if let Ok(claims) = auth.authenticate(&token) {
                assert!(claims.expires_at.is_none(), "exp {exp}");
            }
        }
    }

    #[test]
    fn minted_tokens_verify() {
        let auth = authenticator(Config::default());
        let token =
            mint_hs256(crate::config::DEV_JWT_SECRET, 42.into(), Some("alice"), Duration::from_secs(60))
                .expect("sign");
        let claims = auth.authenticate(&token).expect("valid");
        assert_eq!(claims.user_id.as_json(), "42");
        assert!(claims.expires_at.is_some());
    }
}
