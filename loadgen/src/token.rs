//! HS256 JWTs for simulated users: one distinct numeric `sub` per client.
//!
//! Client id `n` gets `sub = sub_base + n`; the target echoes the `sub` back
//! as `senderId` / `userId`, which is how notices are attributed to clients.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

#[derive(Serialize)]
#[serde(untagged)]
enum Sub {
    Number(u64),
    Text(String),
}

#[derive(Serialize)]
struct Claims<'a> {
    sub: Sub,
    name: &'a str,
    iat: u64,
    nbf: u64,
    exp: u64,
}

/// A token wrong on purpose, for clients the server must refuse (or must at
/// least survive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flaw<'a> {
    /// Expired an hour ago, far past any leeway.
    Expired,
    /// Valid, but carrying this `jti`, which the server is told to revoke.
    Revoked(&'a str),
    /// Signed with a key the server does not know.
    Forged,
    /// Validly signed, with `exp` = `1e19` (written as a float, as some
    /// issuers do): beyond any integer type a server may hold it in.
    AbsurdExpiry,
}

/// Mints tokens for client ids.
#[derive(Clone)]
pub struct TokenMinter {
    key: EncodingKey,
    header: Header,
    sub_base: u64,
    ttl: Duration,
    string_sub: bool,
}

impl std::fmt::Debug for TokenMinter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenMinter").field("sub_base", &self.sub_base).field("ttl", &self.ttl).finish()
    }
}

impl TokenMinter {
    /// A minter signing with `secret`; tokens live `ttl`.
    pub fn new(secret: &str, sub_base: u64, ttl: Duration) -> Self {
        Self {
            key: EncodingKey::from_secret(secret.as_bytes()),
            header: Header::new(Algorithm::HS256),
            sub_base,
            ttl,
            string_sub: false,
        }
    }

    /// Writes `sub` as a JSON string of digits instead of a number, for
    /// targets that insist on string subjects.
    pub fn with_string_sub(mut self, string_sub: bool) -> Self {
        self.string_sub = string_sub;
        self
    }

    /// The `sub` of client `id`.
    pub fn sub_of(&self, id: u32) -> u64 {
        self.sub_base + u64::from(id)
    }

    /// The client id of a `sub`, if it is one of ours.
    pub fn id_of(&self, sub: u64) -> Option<u32> {
        sub.checked_sub(self.sub_base).and_then(|id| u32::try_from(id).ok())
    }

    /// A signed token for client `id`.
    ///
    /// # Errors
    /// Fails only if signing fails, which HS256 with a byte key does not.
    pub fn mint(&self, id: u32) -> anyhow::Result<String> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let name = format!("loadgen-{id}");
        let sub = if self.string_sub {
            Sub::Text(self.sub_of(id).to_string())
        } else {
            Sub::Number(self.sub_of(id))
        };
        let claims =
            Claims { sub, name: &name, iat: now, nbf: now.saturating_sub(60), exp: now + self.ttl.as_secs() };
        Ok(jsonwebtoken::encode(&self.header, &claims, &self.key)?)
    }

    /// A token for client `id` with `flaw`.
    ///
    /// # Errors
    /// Fails only if signing fails, which HS256 with a byte key does not.
    pub fn mint_flawed(&self, id: u32, flaw: Flaw<'_>) -> anyhow::Result<String> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let mut claims = serde_json::json!({
            "sub": self.sub_of(id),
            "name": format!("loadgen-{id}"),
            "iat": now,
            "exp": now + self.ttl.as_secs(),
        });
        let mut key = &self.key;
        let forged_key;
        match flaw {
            Flaw::Expired => {
                claims["iat"] = (now.saturating_sub(7200)).into();
                claims["exp"] = (now.saturating_sub(3600)).into();
            }
            Flaw::Revoked(jti) => claims["jti"] = jti.into(),
            Flaw::Forged => {
                forged_key = EncodingKey::from_secret(b"loadgen-forged-key-not-the-servers");
                key = &forged_key;
            }
            Flaw::AbsurdExpiry => claims["exp"] = 1e19.into(),
        }
        Ok(jsonwebtoken::encode(&self.header, &claims, key)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation, decode};

    #[derive(serde::Deserialize)]
    struct Decoded {
        sub: u64,
        name: String,
    }

    #[test]
    fn tokens_verify_with_the_secret_and_carry_distinct_subs() {
        let minter = TokenMinter::new("s3cret", 1000, Duration::from_secs(3600));
        let key = DecodingKey::from_secret(b"s3cret");
        let validation = Validation::new(Algorithm::HS256);
        let a = decode::<Decoded>(&minter.mint(1).expect("mint"), &key, &validation).expect("valid");
        let b = decode::<Decoded>(&minter.mint(2).expect("mint"), &key, &validation).expect("valid");
        assert_eq!((a.claims.sub, b.claims.sub), (1001, 1002));
        assert_eq!(a.claims.name, "loadgen-1");
        assert_eq!(minter.id_of(1002), Some(2));
        assert_eq!(minter.id_of(999), None);
        let wrong = DecodingKey::from_secret(b"other");
        assert!(decode::<Decoded>(&minter.mint(1).expect("mint"), &wrong, &validation).is_err());
    }

    #[test]
    fn flawed_tokens_have_their_flaw_and_nothing_else() {
        #[derive(serde::Deserialize)]
        struct WithJti {
            sub: u64,
            jti: String,
        }
        let minter = TokenMinter::new("s3cret", 1000, Duration::from_secs(3600));
        let key = DecodingKey::from_secret(b"s3cret");
        let validation = Validation::new(Algorithm::HS256);
        let revoked = minter.mint_flawed(3, Flaw::Revoked("gone-1")).expect("mint");
        let claims = decode::<WithJti>(&revoked, &key, &validation).expect("valid").claims;
        assert_eq!((claims.sub, claims.jti.as_str()), (1003, "gone-1"));
        let expired = minter.mint_flawed(3, Flaw::Expired).expect("mint");
        assert!(decode::<Decoded>(&expired, &key, &validation).is_err());
        let forged = minter.mint_flawed(3, Flaw::Forged).expect("mint");
        assert!(decode::<Decoded>(&forged, &key, &validation).is_err());
        let mut lenient = Validation::new(Algorithm::HS256);
        lenient.validate_exp = false;
        assert!(decode::<Decoded>(&expired, &key, &lenient).is_ok(), "only the expiry is wrong");
        let absurd = minter.mint_flawed(3, Flaw::AbsurdExpiry).expect("mint");
        let payload = absurd.split('.').nth(1).expect("three parts");
        assert!(!payload.is_empty());
    }
}
