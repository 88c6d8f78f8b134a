//! OAuth 2.0 credentials for Salesforce: the JWT bearer flow (an RS256 assertion signed with
//! the connected app's private key; no refresh token, a new assertion is minted whenever a
//! token is needed) and the client-credentials flow. Both post a form to
//! `{login_url}/services/oauth2/token`.
//!
//! Secrets (the private key, the client secret, access tokens) live in [`Secret`], whose
//! `Debug` prints `[redacted]`; no error built here contains one.

use std::fmt;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::SystemRandom;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use serde::Serialize;

use super::error::SalesforceError;

/// Lifetime of a JWT assertion; Salesforce accepts at most 3 minutes.
pub const JWT_LIFETIME_S: i64 = 170;

/// The JWT bearer grant type.
pub const JWT_GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// A secret string: never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    /// The secret itself; only for putting it on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// How the client logs in.
#[derive(Clone)]
pub enum Credentials {
    /// OAuth 2.0 JWT bearer: `iss` = consumer key, `sub` = username, `aud` = login URL.
    JwtBearer {
        consumer_key: String,
        username: String,
        key: Arc<RsaKeyPair>,
    },
    /// OAuth 2.0 client credentials (runs as the connected app's "Run As" user).
    ClientCredentials {
        client_id: String,
        client_secret: Secret,
    },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::JwtBearer {
                consumer_key,
                username,
                ..
            } => f
                .debug_struct("JwtBearer")
                .field("consumer_key", consumer_key)
                .field("username", username)
                .field("key", &"[redacted]")
                .finish(),
            Credentials::ClientCredentials { client_id, .. } => f
                .debug_struct("ClientCredentials")
                .field("client_id", client_id)
                .field("client_secret", &"[redacted]")
                .finish(),
        }
    }
}

impl Credentials {
    /// JWT bearer credentials from a PKCS#8 PEM private key (`-----BEGIN PRIVATE KEY-----`).
    /// The error never quotes the key.
    pub fn jwt_bearer(
        consumer_key: impl Into<String>,
        username: impl Into<String>,
        private_key_pem: &str,
    ) -> Result<Credentials, SalesforceError> {
        let der = pem_decode(private_key_pem, "PRIVATE KEY").ok_or_else(|| {
            SalesforceError::Invalid("private key: not a PKCS#8 PEM (BEGIN PRIVATE KEY)".into())
        })?;
        let key = RsaKeyPair::from_pkcs8(&der).map_err(|e| {
            SalesforceError::Invalid(format!("private key: not a usable RSA key ({e})"))
        })?;
        Ok(Credentials::JwtBearer {
            consumer_key: consumer_key.into(),
            username: username.into(),
            key: Arc::new(key),
        })
    }

    pub fn client_credentials(
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
    ) -> Credentials {
        Credentials::ClientCredentials {
            client_id: client_id.into(),
            client_secret: Secret::new(client_secret),
        }
    }

    /// The form body for the token endpoint (`now_s`: Unix seconds).
    pub(crate) fn token_form(
        &self,
        login_url: &str,
        now_s: i64,
    ) -> Result<String, SalesforceError> {
        let mut form = form_urlencoded::Serializer::new(String::new());
        match self {
            Credentials::JwtBearer {
                consumer_key,
                username,
                key,
            } => {
                let assertion = sign_jwt(
                    key,
                    &Claims {
                        iss: consumer_key,
                        sub: username,
                        aud: login_url.trim_end_matches('/'),
                        exp: now_s + JWT_LIFETIME_S,
                    },
                )?;
                form.append_pair("grant_type", JWT_GRANT_TYPE);
                form.append_pair("assertion", &assertion);
            }
            Credentials::ClientCredentials {
                client_id,
                client_secret,
            } => {
                form.append_pair("grant_type", "client_credentials");
                form.append_pair("client_id", client_id);
                form.append_pair("client_secret", client_secret.expose());
            }
        }
        Ok(form.finish())
    }
}

/// The claims Salesforce reads from a JWT bearer assertion.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct Claims<S> {
    pub iss: S,
    pub sub: S,
    pub aud: S,
    pub exp: i64,
}

/// `base64url(header).base64url(claims).base64url(RS256 signature)`.
pub fn sign_jwt(key: &RsaKeyPair, claims: &Claims<&str>) -> Result<String, SalesforceError> {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
    let body = serde_json::to_vec(claims)
        .map_err(|e| SalesforceError::Invalid(format!("jwt claims: {e}")))?;
    let signing_input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(body));
    let mut signature = vec![0u8; key.public().modulus_len()];
    key.sign(
        &RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        signing_input.as_bytes(),
        &mut signature,
    )
    .map_err(|_| SalesforceError::Invalid("jwt: RSA signing failed".into()))?;
    Ok(format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature)
    ))
}

/// The DER bytes of the first PEM block labelled `label` (e.g. `PRIVATE KEY`).
pub fn pem_decode(pem: &str, label: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem.find(&begin)? + begin.len();
    let stop = start + pem[start..].find(&end)?;
    let body: String = pem[start..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    STANDARD.decode(body).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted() {
        let c = Credentials::client_credentials("cid", "s3cr3t-value");
        let d = format!("{c:?}");
        assert!(d.contains("cid") && !d.contains("s3cr3t"), "{d}");
        let e = Credentials::jwt_bearer(
            "k",
            "u",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----",
        )
        .unwrap_err()
        .to_string();
        assert!(!e.contains("AAAA"), "{e}");
    }
}
