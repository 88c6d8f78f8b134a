//! Console passwords: PBKDF2-HMAC-SHA256 (RFC 8018), written as
//! `$pbkdf2-sha256$i=<iterations>$<salt>$<key>` (salt and key in unpadded standard base64, as
//! in the PHC string format). PBKDF2 is chosen over argon2 to keep the build lean: HMAC and
//! SHA-256 are already in the tree for the vault. The iteration count travels with the hash,
//! so it can be raised later without invalidating old hashes.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Iterations for new hashes: OWASP's 2023 figure for PBKDF2-HMAC-SHA256.
pub const DEFAULT_ITERATIONS: u32 = 600_000;
/// The fewest iterations a configured hash may have (tests use this to log in quickly).
pub const MIN_ITERATIONS: u32 = 10_000;
/// The most: a hash that would take minutes to check is a configuration mistake.
pub const MAX_ITERATIONS: u32 = 10_000_000;
/// Salt bytes for new hashes.
const SALT_LEN: usize = 16;
/// Derived key bytes (one SHA-256 block).
const KEY_LEN: usize = 32;
/// Longest password accepted (longer input only costs CPU).
pub const MAX_PASSWORD_LEN: usize = 1_024;

/// A parsed password hash (holds no password).
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash {
    iterations: u32,
    salt: Vec<u8>,
    key: [u8; KEY_LEN],
}

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PasswordHash(pbkdf2-sha256, i={})", self.iterations)
    }
}

/// PBKDF2-HMAC-SHA256 with a 32-byte output (one block).
pub fn pbkdf2_sha256(password: &[u8], salt: &[u8], iterations: u32) -> [u8; KEY_LEN] {
    // HMAC keys longer than a block are hashed first by the hmac crate; `new_from_slice`
    // accepts any length.
    let keyed = Hmac::<Sha256>::new_from_slice(password).expect("HMAC takes keys of any length");
    let mut first = keyed.clone();
    first.update(salt);
    first.update(&1u32.to_be_bytes());
    let mut u: [u8; KEY_LEN] = first.finalize().into_bytes().into();
    let mut out = u;
    for _ in 1..iterations {
        let mut m = keyed.clone();
        m.update(&u);
        u = m.finalize().into_bytes().into();
        for (o, x) in out.iter_mut().zip(u.iter()) {
            *o ^= x;
        }
    }
    out
}

impl PasswordHash {
    /// Hashes `password` under a fresh random salt.
    pub fn new(password: &str, iterations: u32) -> Result<PasswordHash, String> {
        if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
            return Err(format!(
                "iterations must be {MIN_ITERATIONS} to {MAX_ITERATIONS}"
            ));
        }
        if password.is_empty() || password.len() > MAX_PASSWORD_LEN {
            return Err(format!("a password is 1 to {MAX_PASSWORD_LEN} bytes"));
        }
        let mut salt = vec![0u8; SALT_LEN];
        getrandom::fill(&mut salt).map_err(|e| format!("no randomness: {e}"))?;
        let key = pbkdf2_sha256(password.as_bytes(), &salt, iterations);
        Ok(PasswordHash {
            iterations,
            salt,
            key,
        })
    }

    /// Parses `$pbkdf2-sha256$i=N$salt$key`.
    pub fn parse(s: &str) -> Result<PasswordHash, String> {
        let expected = "must be `$pbkdf2-sha256$i=<iterations>$<salt>$<key>` (see `cashloop console hash-password`)";
        let mut parts = s.trim().split('$');
        let (Some(""), Some("pbkdf2-sha256"), Some(i), Some(salt), Some(key), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(expected.to_owned());
        };
        let iterations: u32 = i
            .strip_prefix("i=")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| expected.to_owned())?;
        if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
            return Err(format!(
                "iterations must be {MIN_ITERATIONS} to {MAX_ITERATIONS}"
            ));
        }
        let salt = B64.decode(salt).map_err(|_| expected.to_owned())?;
        if salt.len() < 8 {
            return Err("the salt must be at least 8 bytes".to_owned());
        }
        let key = B64
            .decode(key)
            .ok()
            .and_then(|k| <[u8; KEY_LEN]>::try_from(k.as_slice()).ok())
            .ok_or_else(|| "the key must be 32 bytes".to_owned())?;
        Ok(PasswordHash {
            iterations,
            salt,
            key,
        })
    }

    /// Whether `password` is the one hashed; constant time in the comparison.
    pub fn verify(&self, password: &str) -> bool {
        if password.len() > MAX_PASSWORD_LEN {
            return false;
        }
        let got = pbkdf2_sha256(password.as_bytes(), &self.salt, self.iterations);
        got.iter()
            .zip(self.key.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }

    pub fn iterations(&self) -> u32 {
        self.iterations
    }
}

impl std::fmt::Display for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "$pbkdf2-sha256$i={}${}${}",
            self.iterations,
            B64.encode(&self.salt),
            B64.encode(self.key)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pbkdf2_matches_the_published_vectors() {
        // RFC 7914 §11 (PBKDF2-HMAC-SHA256, first 32 bytes of the 64-byte output).
        assert_eq!(
            hex::encode(pbkdf2_sha256(b"passwd", b"salt", 1)),
            "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc"
        );
        // The widely used c=4096 vector for "password"/"salt".
        assert_eq!(
            hex::encode(pbkdf2_sha256(b"password", b"salt", 4096)),
            "c5e478d59288c841aa530db6845c4c8d962893a001ce4e11a4963873aa98134a"
        );
    }

    #[test]
    fn hashes_round_trip_and_check_passwords() {
        let h = PasswordHash::new("correct horse", MIN_ITERATIONS).unwrap();
        let text = h.to_string();
        assert!(text.starts_with("$pbkdf2-sha256$i=10000$"), "{text}");
        let back = PasswordHash::parse(&text).unwrap();
        assert_eq!(back, h);
        assert!(back.verify("correct horse"));
        assert!(!back.verify("correct horse "));
        assert!(!back.verify(""));
        assert!(!format!("{back:?}").contains(&text[20..]));
    }

    #[test]
    fn malformed_hashes_are_refused() {
        for bad in [
            "",
            "password",
            "$pbkdf2-sha256$i=10$c2FsdHNhbHQ$AAAA",
            "$pbkdf2-sha512$i=10000$c2FsdHNhbHQ$VazARW7jCJ+/FpHCJUS2BflBhSFt3gRl5oudV8INrLw",
            "$pbkdf2-sha256$i=10000$c2FsdA$VazARW7jCJ+/FpHCJUS2BflBhSFt3gRl5oudV8INrLw",
            "$pbkdf2-sha256$i=10000$c2FsdHNhbHQ$short",
            "$pbkdf2-sha256$10000$c2FsdHNhbHQ$VazARW7jCJ+/FpHCJUS2BflBhSFt3gRl5oudV8INrLw",
        ] {
            assert!(PasswordHash::parse(bad).is_err(), "{bad:?}");
        }
        assert!(
            PasswordHash::parse(
                "$pbkdf2-sha256$i=10000$c2FsdHNhbHQ$VazARW7jCJ+/FpHCJUS2BflBhSFt3gRl5oudV8INrLw"
            )
            .is_ok()
        );
    }
}
