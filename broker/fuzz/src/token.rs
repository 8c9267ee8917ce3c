//! Structured tokens and the three places a client puts one: JWTs whose
//! header and claims are any JSON text (huge or odd `exp`/`nbf`, `sub` of
//! every type, a revoked `jti`, keys twice), signed with the broker's secret,
//! another key, or not at all — carried in the handshake query, an
//! `Authorization` header and the CONNECT payload.

use arbitrary::Arbitrary;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey};

use crate::feed::{REVOKED_JTI, TOKEN_SECRET};
use crate::head::percent_encode;
use crate::json::{Json, JsonString, Number};

/// Where the client puts tokens, and which.
#[derive(Arbitrary, Debug)]
pub struct TokenCase {
    query: Option<Token>,
    /// Another query pair before the token (`token` twice, say).
    query_extra: Option<(String, String)>,
    header: Option<HeaderForm>,
    connect: Option<ConnectForm>,
}

#[derive(Arbitrary, Debug)]
enum HeaderForm {
    Bearer(Token),
    /// `bearer`, tabs, several spaces.
    OddBearer(u8, Token),
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum ConnectForm {
    Token(Token),
    /// `{"token":<any JSON>}`.
    Json(Json),
    /// Any JSON at all.
    Any(Json),
}

/// A token.
#[derive(Arbitrary, Debug)]
pub enum Token {
    /// A JWT made of parts.
    Jwt {
        /// The header's JSON text.
        header: JwtHeader,
        /// The claims' JSON text.
        claims: ClaimsText,
        /// How it is signed.
        signature: Signature,
        /// How its parts are base64-encoded.
        encoding: Encoding,
    },
    /// Any text.
    Raw(String),
}

/// A JWT header.
#[derive(Arbitrary, Debug)]
pub enum JwtHeader {
    /// `{"alg":"HS256","typ":"JWT"}`.
    Hs256,
    /// `{"alg":"none"}`.
    None,
    /// `{"alg":"RS256"}` (algorithm confusion).
    Rs256,
    /// `{"alg":"HS512"}`.
    Hs512,
    /// Any JSON.
    Json(Json),
}

/// The claims of a JWT.
#[derive(Arbitrary, Debug)]
pub struct ClaimsText {
    sub: Option<Claim>,
    exp: Option<Time>,
    nbf: Option<Time>,
    jti: Option<Jti>,
    name: Option<Json>,
    extra: Vec<(JsonString, Json)>,
    /// A second `sub` or `exp`, after the first.
    duplicate: Option<(bool, Json)>,
    /// Claims that are not an object at all.
    not_an_object: Option<Json>,
}

#[derive(Arbitrary, Debug)]
enum Claim {
    String(JsonString),
    Number(Number),
    Json(Json),
}

/// A time claim.
#[derive(Arbitrary, Debug)]
enum Time {
    /// Seconds from the time the case was rendered.
    FromNow(i32),
    /// Any number.
    Number(Number),
    /// Any JSON.
    Json(Json),
}

#[derive(Arbitrary, Debug)]
enum Jti {
    Revoked,
    Json(Json),
}

/// How a JWT is signed.
#[derive(Arbitrary, Debug)]
pub enum Signature {
    /// HS256 with the broker's secret: only this may be accepted.
    Valid,
    /// HS256 with another secret.
    OtherKey(String),
    /// A valid signature with its last `n` characters cut.
    Truncated(u8),
    /// No signature part at all (two parts).
    Missing,
    /// An empty signature.
    Empty,
    /// Any text.
    Raw(String),
}

/// How the parts are base64-encoded.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Encoding {
    /// URL-safe without padding, as JWTs are.
    Jwt,
    /// URL-safe with padding.
    Padded,
    /// The standard alphabet.
    Standard,
}

impl TokenCase {
    /// The case as the token target's saved form: `(query, authorization,
    /// connect)`.
    #[must_use]
    pub fn render(&self) -> (String, Option<String>, Option<String>) {
        let mut query = b"EIO=4&transport=websocket".to_vec();
        if let Some((key, value)) = &self.query_extra {
            query.push(b'&');
            percent_encode(key.as_bytes(), &mut query);
            query.push(b'=');
            percent_encode(value.as_bytes(), &mut query);
        }
        if let Some(token) = &self.query {
            query.extend_from_slice(b"&token=");
            percent_encode(token.render().as_bytes(), &mut query);
        }
        let query = String::from_utf8(query).expect("percent-encoded text is ASCII");
        let header = self.header.as_ref().map(|header| match header {
            HeaderForm::Bearer(token) => format!("Bearer {}", token.render()),
            HeaderForm::OddBearer(form, token) => {
                let scheme = ["bearer", "BEARER", "Bearer\t", "Bearer  ", " Bearer", "Basic"];
                format!("{} {}", scheme[usize::from(*form) % scheme.len()], token.render())
            }
            HeaderForm::Raw(text) => text.clone(),
        });
        let connect = self.connect.as_ref().map(|connect| match connect {
            ConnectForm::Token(token) => serde_json::json!({ "token": token.render() }).to_string(),
            ConnectForm::Json(value) => format!(r#"{{"token":{}}}"#, value.render()),
            ConnectForm::Any(value) => value.render(),
        });
        (query, header, connect)
    }
}

impl Token {
    /// The token's text.
    #[must_use]
    pub fn render(&self) -> String {
        match self {
            Self::Raw(text) => text.clone(),
            Self::Jwt { header, claims, signature, encoding } => {
                let header = match header {
                    JwtHeader::Hs256 => r#"{"alg":"HS256","typ":"JWT"}"#.to_owned(),
                    JwtHeader::None => r#"{"alg":"none"}"#.to_owned(),
                    JwtHeader::Rs256 => r#"{"alg":"RS256","typ":"JWT"}"#.to_owned(),
                    JwtHeader::Hs512 => r#"{"alg":"HS512"}"#.to_owned(),
                    JwtHeader::Json(value) => value.render(),
                };
                let message = format!("{}.{}", encode(*encoding, &header), encode(*encoding, &claims.render()));
                let sign = |secret: &str| {
                    jsonwebtoken::crypto::sign(
                        message.as_bytes(),
                        &EncodingKey::from_secret(secret.as_bytes()),
                        Algorithm::HS256,
                    )
                    .unwrap_or_default()
                };
                match signature {
                    Signature::Valid => format!("{message}.{}", sign(TOKEN_SECRET)),
                    Signature::OtherKey(secret) => format!("{message}.{}", sign(secret)),
                    Signature::Truncated(cut) => {
                        let mut signature = sign(TOKEN_SECRET);
                        signature.truncate(signature.len().saturating_sub(usize::from(*cut % 8) + 1));
                        format!("{message}.{signature}")
                    }
                    Signature::Missing => message,
                    Signature::Empty => format!("{message}."),
                    Signature::Raw(text) => format!("{message}.{text}"),
                }
            }
        }
    }
}

fn encode(encoding: Encoding, text: &str) -> String {
    match encoding {
        Encoding::Jwt => URL_SAFE_NO_PAD.encode(text),
        Encoding::Padded => URL_SAFE.encode(text),
        Encoding::Standard => STANDARD.encode(text),
    }
}

impl ClaimsText {
    fn render(&self) -> String {
        if let Some(value) = &self.not_an_object {
            return value.render();
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs());
        let mut members: Vec<(String, String)> = Vec::new();
        if let Some(sub) = &self.sub {
            members.push(("\"sub\"".to_owned(), sub.render()));
        }
        for (name, time) in [("\"exp\"", &self.exp), ("\"nbf\"", &self.nbf)] {
            if let Some(time) = time {
                let value = match time {
                    Time::FromNow(offset) => now.saturating_add_signed(i64::from(*offset)).to_string(),
                    Time::Number(number) => {
                        let mut text = String::new();
                        number.write(&mut text);
                        text
                    }
                    Time::Json(value) => value.render(),
                };
                members.push((name.to_owned(), value));
            }
        }
        if let Some(jti) = &self.jti {
            let value = match jti {
                Jti::Revoked => format!("\"{REVOKED_JTI}\""),
                Jti::Json(value) => value.render(),
            };
            members.push(("\"jti\"".to_owned(), value));
        }
        if let Some(name) = &self.name {
            members.push(("\"name\"".to_owned(), name.render()));
        }
        for (key, value) in &self.extra {
            members.push((key.render(), value.render()));
        }
        if let Some((exp, value)) = &self.duplicate {
            members.push((if *exp { "\"exp\"" } else { "\"sub\"" }.to_owned(), value.render()));
        }
        let body: Vec<String> = members.into_iter().map(|(key, value)| format!("{key}:{value}")).collect();
        format!("{{{}}}", body.join(","))
    }
}

impl Claim {
    fn render(&self) -> String {
        match self {
            Self::String(text) => text.render(),
            Self::Number(number) => {
                let mut text = String::new();
                number.write(&mut text);
                text
            }
            Self::Json(value) => value.render(),
        }
    }
}
