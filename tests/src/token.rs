//! JWTs for the tests, minted with `jsonwebtoken` like a real issuer would:
//! HS256 with a shared secret, or RS256/ES256 with the test key pairs in
//! `src/keys/` (generated once with `openssl genpkey`; test use only).

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value};
use tempfile::NamedTempFile;

use crate::server::TEST_SECRET;

/// RSA 2048 private key, PKCS#8 PEM.
pub const RSA_PRIVATE_PEM: &str = include_str!("keys/rsa_private.pem");
/// RSA public key, SPKI PEM.
pub const RSA_PUBLIC_PEM: &str = include_str!("keys/rsa_public.pem");
/// ECDSA P-256 private key, PKCS#8 PEM.
pub const EC_PRIVATE_PEM: &str = include_str!("keys/ec_private.pem");
/// ECDSA P-256 public key, SPKI PEM.
pub const EC_PUBLIC_PEM: &str = include_str!("keys/ec_public.pem");

/// Which test key pair signs a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// RS256 with [`RSA_PRIVATE_PEM`].
    Rsa,
    /// ES256 with [`EC_PRIVATE_PEM`].
    Ec,
}

/// Writes the public half of `kind` to a temporary file for `jwt_public_key_file`.
/// Keep the file alive for as long as the broker runs.
#[must_use]
pub fn public_key_file(kind: KeyKind) -> NamedTempFile {
    let pem = match kind {
        KeyKind::Rsa => RSA_PUBLIC_PEM,
        KeyKind::Ec => EC_PUBLIC_PEM,
    };
    let mut file = NamedTempFile::new().expect("creating a temporary key file");
    file.write_all(pem.as_bytes()).expect("writing the public key");
    file.flush().expect("flushing the public key");
    file
}

/// Seconds since the Unix epoch, as JWT `exp`/`nbf`/`iat` use.
#[must_use]
pub fn now_secs() -> i64 {
    let elapsed = SystemTime::now().duration_since(UNIX_EPOCH).expect("the clock is after 1970");
    i64::try_from(elapsed.as_secs()).expect("seconds fit in i64")
}

/// Milliseconds since the Unix epoch, as the chat's `timestamp` uses.
#[must_use]
pub fn now_millis() -> u64 {
    let elapsed = SystemTime::now().duration_since(UNIX_EPOCH).expect("the clock is after 1970");
    u64::try_from(elapsed.as_millis()).expect("milliseconds fit in u64")
}

#[derive(Debug, Clone)]
enum SigningKey {
    Secret(String),
    Pair(KeyKind),
}

/// A JWT under construction: `sub` as given, `iat` now, `exp` an hour ahead,
/// signed HS256 with [`TEST_SECRET`] unless told otherwise.
#[derive(Debug, Clone)]
pub struct TokenBuilder {
    claims: Map<String, Value>,
    key: SigningKey,
}

/// Starts a token for `sub` (a number stays a number).
#[must_use]
pub fn token(sub: impl Into<Value>) -> TokenBuilder {
    TokenBuilder::new(sub)
}

impl TokenBuilder {
    /// See [`token`].
    #[must_use]
    pub fn new(sub: impl Into<Value>) -> Self {
        let mut claims = Map::new();
        claims.insert("sub".to_owned(), sub.into());
        claims.insert("iat".to_owned(), now_secs().into());
        claims.insert("exp".to_owned(), (now_secs() + 3600).into());
        Self { claims, key: SigningKey::Secret(TEST_SECRET.to_owned()) }
    }

    /// Sets any claim; `Value::Null` removes it.
    #[must_use]
    pub fn claim(mut self, name: &str, value: impl Into<Value>) -> Self {
        let value = value.into();
        if value.is_null() {
            self.claims.remove(name);
        } else {
            self.claims.insert(name.to_owned(), value);
        }
        self
    }

    /// The `name` claim.
    #[must_use]
    pub fn name(self, name: &str) -> Self {
        self.claim("name", name)
    }

    /// `exp` this many seconds from now (negative: already expired).
    #[must_use]
    pub fn exp_in(self, seconds: i64) -> Self {
        self.claim("exp", now_secs() + seconds)
    }

    /// `nbf` this many seconds from now.
    #[must_use]
    pub fn nbf_in(self, seconds: i64) -> Self {
        self.claim("nbf", now_secs() + seconds)
    }

    /// The `iss` claim.
    #[must_use]
    pub fn iss(self, issuer: &str) -> Self {
        self.claim("iss", issuer)
    }

    /// The `aud` claim.
    #[must_use]
    pub fn aud(self, audience: &str) -> Self {
        self.claim("aud", audience)
    }

    /// The `jti` claim.
    #[must_use]
    pub fn jti(self, id: &str) -> Self {
        self.claim("jti", id)
    }

    /// Signs HS256 with `secret`.
    #[must_use]
    pub fn secret(mut self, secret: &str) -> Self {
        self.key = SigningKey::Secret(secret.to_owned());
        self
    }

    /// Signs RS256 with the test RSA key.
    #[must_use]
    pub fn rs256(mut self) -> Self {
        self.key = SigningKey::Pair(KeyKind::Rsa);
        self
    }

    /// Signs ES256 with the test P-256 key.
    #[must_use]
    pub fn es256(mut self) -> Self {
        self.key = SigningKey::Pair(KeyKind::Ec);
        self
    }

    /// The compact JWS.
    #[must_use]
    pub fn sign(&self) -> String {
        let (algorithm, key) = match &self.key {
            SigningKey::Secret(secret) => (Algorithm::HS256, EncodingKey::from_secret(secret.as_bytes())),
            SigningKey::Pair(KeyKind::Rsa) => (
                Algorithm::RS256,
                EncodingKey::from_rsa_pem(RSA_PRIVATE_PEM.as_bytes()).expect("the test RSA key parses"),
            ),
            SigningKey::Pair(KeyKind::Ec) => (
                Algorithm::ES256,
                EncodingKey::from_ec_pem(EC_PRIVATE_PEM.as_bytes()).expect("the test EC key parses"),
            ),
        };
        jsonwebtoken::encode(&Header::new(algorithm), &self.claims, &key).expect("signing a test token")
    }
}
