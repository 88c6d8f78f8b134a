//! Vault cryptography: envelope encryption of card PANs and bank account numbers, keyed
//! fingerprints for duplicate detection, random tokens, key loading and rotation.
//!
//! Scheme: every record gets a fresh 256-bit data key (DEK); the plaintext is sealed under
//! the DEK with AES-256-GCM and caller-supplied AAD (token id + record kind); the DEK is
//! wrapped with AES-256-GCM under a versioned key-encryption key (KEK). The row stores the
//! KEK version, so `cashloop keys rotate` only re-wraps 48-byte DEKs and never touches data.
//!
//! Threat model, in short:
//! - Protects against theft of the database, its backups and replicas: KEKs and the
//!   fingerprint key come from a file or the environment, never from the database, so
//!   stolen rows are ciphertext plus HMACs that cannot be brute-forced (PCI DSS 3.5.1.1).
//! - Detects tampering by anyone with write access to the database: a flipped bit, a
//!   ciphertext moved to another row or kind (AAD), or an altered key version fails to open.
//! - Does not protect against code execution in the gateway process or read access to the
//!   key files/environment (they hold the KEK), nor against rollback of a row to an older
//!   valid value for the same token id and kind. Zeroizing memory is best-effort: callers'
//!   buffers, swap and core dumps are outside this module's reach (disable core dumps).

use std::fmt;
use std::io::Read;
use std::path::Path;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Nonce, Tag};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Length in bytes of every symmetric key here (AES-256 and the HMAC-SHA256 key).
pub const KEY_LEN: usize = 32;
/// Length in bytes of an AES-GCM nonce (96 bits, the size GCM is specified for).
pub const NONCE_LEN: usize = 12;
/// Length in bytes of an AES-GCM authentication tag.
pub const TAG_LEN: usize = 16;
/// Length in bytes of a wrapped DEK: the encrypted key followed by its tag.
pub const WRAPPED_DEK_LEN: usize = KEY_LEN + TAG_LEN;
/// Domain-separation prefix of the AAD used when wrapping a DEK.
pub const DEK_AAD_PREFIX: &[u8] = b"cashloop-dek-v1";
/// Number of random characters in a token from [`new_token`].
pub const TOKEN_RANDOM_CHARS: usize = 32;

/// ModHex (the YubiKey OTP alphabet): 16 letters, so each character carries 4 bits and a
/// token never contains a digit, let alone digits of a PAN. That also keeps tokens out of
/// the way of PAN scanners (DLP) that look for runs of digits in logs and databases.
const TOKEN_ALPHABET: &[u8; 16] = b"cbdefghijklnrtuv";

/// A key file is 64 hex characters plus whitespace; anything much larger is not a key file,
/// and refusing it early avoids reading an arbitrary file into memory.
const MAX_KEY_FILE_LEN: usize = 1024;

/// Errors of the vault's cryptography. No variant carries key bytes or plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// Key material could not be loaded; names where it came from, never what it was.
    #[error("bad key material from {source_name}: {reason}")]
    BadKeyMaterial {
        source_name: String,
        reason: &'static str,
    },
    #[error("no key with version {0} in the key ring")]
    UnknownKeyVersion(u32),
    #[error("key version {0} appears more than once in the key ring")]
    DuplicateKeyVersion(u32),
    /// Deliberately says nothing about which part failed (key, nonce, tag, AAD).
    #[error("decryption failed")]
    Decrypt,
    #[error("encryption failed")]
    Encrypt,
    #[error("the operating system's random number generator failed")]
    Random,
}

/// 32 secret bytes on the heap: a `Box` keeps one copy at a fixed address however often the
/// owning key is moved (into a `KeyRing`, a `Vec` that grows), and it is wiped on drop.
struct KeyBytes(Box<[u8; KEY_LEN]>);

impl Drop for KeyBytes {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl ZeroizeOnDrop for KeyBytes {}

impl KeyBytes {
    /// Parses 64 hex characters surrounded by optional ASCII whitespace.
    fn parse_hex(text: &[u8], source_name: impl FnOnce() -> String) -> Result<Self, CryptoError> {
        let bad = |reason| CryptoError::BadKeyMaterial {
            source_name: source_name(),
            reason,
        };
        let text = text.trim_ascii();
        if text.len() != 2 * KEY_LEN {
            return Err(bad("expected 64 hex characters (32 bytes)"));
        }
        if !text.iter().all(u8::is_ascii_hexdigit) {
            return Err(bad("key contains characters other than hex digits"));
        }
        let mut key = Box::new([0u8; KEY_LEN]);
        // Decode straight into the heap buffer so no stack copy of the key is left behind.
        if hex::decode_to_slice(text, &mut key[..]).is_err() {
            key.zeroize();
            return Err(bad("key is not valid hex"));
        }
        let key = Self(key);
        // An all-zero key is a placeholder left in a config, not a key.
        if key.0.iter().all(|&b| b == 0) {
            return Err(bad("key is all zeros"));
        }
        Ok(key)
    }

    fn from_file(path: &Path) -> Result<Self, CryptoError> {
        let name = || path.display().to_string();
        let bad = |reason| CryptoError::BadKeyMaterial {
            source_name: name(),
            reason,
        };
        let io_reason = |e: std::io::Error| match e.kind() {
            std::io::ErrorKind::NotFound => bad("key file not found"),
            std::io::ErrorKind::PermissionDenied => {
                bad("key file not readable (permission denied)")
            }
            _ => bad("key file could not be read"),
        };
        let file = std::fs::File::open(path).map_err(io_reason)?;
        let len = file.metadata().map_err(io_reason)?.len();
        if len > MAX_KEY_FILE_LEN as u64 {
            return Err(bad("key file is far larger than 64 hex characters"));
        }
        // Capacity fixed up front so the buffer holding the key never reallocates (a
        // reallocation would leave an unwiped copy in freed memory).
        let mut buf = Zeroizing::new(Vec::with_capacity(MAX_KEY_FILE_LEN + 1));
        file.take(MAX_KEY_FILE_LEN as u64)
            .read_to_end(&mut buf)
            .map_err(io_reason)?;
        Self::parse_hex(&buf, name)
    }

    fn from_env(var_name: &str) -> Result<Self, CryptoError> {
        let name = || format!("environment variable {var_name}");
        let Some(value) = std::env::var_os(var_name) else {
            return Err(CryptoError::BadKeyMaterial {
                source_name: name(),
                reason: "environment variable is not set",
            });
        };
        // Raw bytes rather than `env::var`, whose error would carry the value itself.
        let value = Zeroizing::new(value.into_encoded_bytes());
        Self::parse_hex(&value, name)
    }

    /// A fresh random key, generated in place on the heap (no stack copy).
    fn random() -> Result<Self, CryptoError> {
        let mut key = Self(Box::new([0u8; KEY_LEN]));
        getrandom::fill(&mut key.0[..]).map_err(|_| CryptoError::Random)?;
        Ok(key)
    }

    fn cipher(&self) -> Aes256Gcm {
        // From the array (not a slice): the length is checked by the type.
        Aes256Gcm::new(&Key::<Aes256Gcm>::from(*self.0))
    }
}

/// A key-encryption key: wraps the per-record data keys. Loaded from a file or the
/// environment at startup, never from the database (a stolen database must not contain the
/// means to decrypt itself). Debug shows only the version.
#[derive(ZeroizeOnDrop)]
pub struct Kek {
    key: KeyBytes,
    #[zeroize(skip)]
    version: u32,
}

impl Kek {
    /// From 64 hex characters (surrounding whitespace ignored).
    pub fn from_hex(version: u32, hex_str: &str) -> Result<Self, CryptoError> {
        let key = KeyBytes::parse_hex(hex_str.as_bytes(), || "hex string".to_owned())?;
        Ok(Self { key, version })
    }

    /// From a file holding 64 hex characters (surrounding whitespace ignored). Errors name
    /// the path, never the content.
    pub fn from_file(version: u32, path: impl AsRef<Path>) -> Result<Self, CryptoError> {
        let key = KeyBytes::from_file(path.as_ref())?;
        Ok(Self { key, version })
    }

    /// From an environment variable holding 64 hex characters. A file with tight permissions
    /// is preferable: a process's environment is readable by its user via /proc.
    pub fn from_env(version: u32, var_name: &str) -> Result<Self, CryptoError> {
        let key = KeyBytes::from_env(var_name)?;
        Ok(Self { key, version })
    }

    pub fn version(&self) -> u32 {
        self.version
    }
}

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kek")
            .field("version", &self.version)
            .finish()
    }
}

/// The KEKs a process holds: the current one (used to seal and rewrap) and previous ones
/// (used only to open rows not yet rewrapped). Rows are opened by the version they record.
///
/// Rotation without downtime across several processes: (1) deploy the new key as a
/// *previous* key everywhere, so every reader can open what it will seal; (2) make it
/// current everywhere; (3) run `cashloop keys rotate` (calls [`rewrap`] per row); (4) once
/// no row has the old version, drop the old key from the configuration.
#[derive(Debug)]
pub struct KeyRing {
    current: Kek,
    previous: Vec<Kek>,
}

impl KeyRing {
    pub fn new(current: Kek) -> Self {
        Self {
            current,
            previous: Vec::new(),
        }
    }

    /// Adds a key that can still open rows but is no longer used to seal.
    pub fn with_previous(mut self, kek: Kek) -> Result<Self, CryptoError> {
        // Two keys with one version would make "which key opens this row" ambiguous.
        if self.get(kek.version).is_some() {
            return Err(CryptoError::DuplicateKeyVersion(kek.version));
        }
        self.previous.push(kek);
        Ok(self)
    }

    pub fn current_version(&self) -> u32 {
        self.current.version
    }

    pub fn get(&self, version: u32) -> Option<&Kek> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.version == version)
    }

    /// All versions held, current first.
    pub fn versions(&self) -> impl Iterator<Item = u32> + '_ {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .map(|k| k.version)
    }
}

/// Key of the keyed fingerprint (HMAC-SHA256) used to detect the same card or bank account
/// without storing an unkeyed hash (a 16-digit PAN space is brute-forceable; PCI DSS 3.5.1.1).
/// It must be a different key from any KEK, and like them never comes from the database.
///
/// It carries a version because PCI DSS 3.6/3.7 key management (crypto-periods, retiring a
/// suspected key) applies to it as well: rows record the fingerprint key version, a rotation
/// re-computes fingerprints from the decrypted values, and while it runs a lookup computes
/// the fingerprint under both versions. Debug shows only the version.
#[derive(ZeroizeOnDrop)]
pub struct FingerprintKey {
    key: KeyBytes,
    #[zeroize(skip)]
    version: u32,
}

impl FingerprintKey {
    pub fn from_hex(version: u32, hex_str: &str) -> Result<Self, CryptoError> {
        let key = KeyBytes::parse_hex(hex_str.as_bytes(), || "hex string".to_owned())?;
        Ok(Self { key, version })
    }

    pub fn from_file(version: u32, path: impl AsRef<Path>) -> Result<Self, CryptoError> {
        let key = KeyBytes::from_file(path.as_ref())?;
        Ok(Self { key, version })
    }

    pub fn from_env(version: u32, var_name: &str) -> Result<Self, CryptoError> {
        let key = KeyBytes::from_env(var_name)?;
        Ok(Self { key, version })
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    /// HMAC-SHA256 of the caller's normalized value (e.g. the PAN's digits only). The caller
    /// should put the kind in the input (b"card:…", b"ach:…") so that kinds never collide.
    pub fn fingerprint(&self, normalized: &[u8]) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key.0[..])
            .expect("HMAC accepts keys of any length");
        mac.update(normalized);
        mac.finalize().into_bytes().into()
    }

    /// [`Self::fingerprint`] as 64 lowercase hex characters.
    pub fn fingerprint_hex(&self, normalized: &[u8]) -> String {
        hex::encode(self.fingerprint(normalized))
    }
}

impl fmt::Debug for FingerprintKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FingerprintKey")
            .field("version", &self.version)
            .finish()
    }
}

/// An encrypted record as stored: everything secret in it is encrypted, so it is plain data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// Version of the KEK that wrapped the DEK.
    pub kek_version: u32,
    /// The DEK encrypted under the KEK, followed by its tag ([`WRAPPED_DEK_LEN`] bytes).
    pub wrapped_dek: Vec<u8>,
    pub dek_nonce: [u8; NONCE_LEN],
    pub nonce: [u8; NONCE_LEN],
    /// The data encrypted under the DEK, followed by its tag.
    pub ciphertext: Vec<u8>,
}

/// AAD of the DEK wrap: `b"cashloop-dek-v1"` followed by the KEK version as 4 bytes
/// big-endian (19 bytes in all). Binding the version means a row whose version was altered
/// does not open even if two versions were (wrongly) configured with the same key.
fn dek_aad(kek_version: u32) -> [u8; DEK_AAD_PREFIX.len() + 4] {
    let mut aad = [0u8; DEK_AAD_PREFIX.len() + 4];
    let (prefix, version) = aad.split_at_mut(DEK_AAD_PREFIX.len());
    prefix.copy_from_slice(DEK_AAD_PREFIX);
    version.copy_from_slice(&kek_version.to_be_bytes());
    aad
}

fn random_bytes<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).map_err(|_| CryptoError::Random)?;
    Ok(out)
}

/// Wraps `dek` under `kek` with a fresh random nonce. Random 96-bit nonces keep the GCM
/// collision risk negligible up to about 2^32 wraps per KEK (NIST SP 800-38D); rotate KEKs
/// long before that.
fn wrap_dek(kek: &Kek, dek: &KeyBytes) -> Result<(Vec<u8>, [u8; NONCE_LEN]), CryptoError> {
    let dek_nonce = random_bytes::<NONCE_LEN>()?;
    let mut wrapped = Vec::with_capacity(WRAPPED_DEK_LEN);
    wrapped.extend_from_slice(&dek.0[..]);
    // On the (length-only) error path `wrapped` still holds the DEK: wipe it.
    let tag = match kek.key.cipher().encrypt_in_place_detached(
        &Nonce::from(dek_nonce),
        &dek_aad(kek.version),
        &mut wrapped,
    ) {
        Ok(tag) => tag,
        Err(_) => {
            wrapped.zeroize();
            return Err(CryptoError::Encrypt);
        }
    };
    wrapped.extend_from_slice(&tag);
    Ok((wrapped, dek_nonce))
}

/// Unwraps the DEK of `sealed`; any failure, including an unexpected length, is `Decrypt`.
fn unwrap_dek(ring: &KeyRing, sealed: &Sealed) -> Result<KeyBytes, CryptoError> {
    let kek = ring
        .get(sealed.kek_version)
        .ok_or(CryptoError::UnknownKeyVersion(sealed.kek_version))?;
    if sealed.wrapped_dek.len() != WRAPPED_DEK_LEN {
        return Err(CryptoError::Decrypt);
    }
    let (encrypted, tag) = sealed.wrapped_dek.split_at(KEY_LEN);
    let mut dek = KeyBytes(Box::new([0u8; KEY_LEN]));
    dek.0.copy_from_slice(encrypted);
    kek.key
        .cipher()
        .decrypt_in_place_detached(
            &Nonce::from(sealed.dek_nonce),
            &dek_aad(kek.version),
            &mut dek.0[..],
            &Tag::from(<[u8; TAG_LEN]>::try_from(tag).map_err(|_| CryptoError::Decrypt)?),
        )
        .map_err(|_| CryptoError::Decrypt)?;
    Ok(dek)
}

/// Encrypts `plaintext` under a fresh DEK wrapped by the ring's current KEK. `aad` must bind
/// the record's identity (token id and kind) so a ciphertext cannot be moved to another row;
/// the same `aad` is needed to open it.
pub fn seal(ring: &KeyRing, plaintext: &[u8], aad: &[u8]) -> Result<Sealed, CryptoError> {
    let dek = KeyBytes::random()?;
    // Each DEK encrypts exactly one message, so the data nonce can never repeat under a key.
    let nonce = random_bytes::<NONCE_LEN>()?;
    // Sized for the tag up front: no reallocation, so no stray plaintext copy on the heap.
    let mut buf = Zeroizing::new(Vec::with_capacity(plaintext.len() + TAG_LEN));
    buf.extend_from_slice(plaintext);
    dek.cipher()
        .encrypt_in_place(&Nonce::from(nonce), aad, &mut *buf)
        .map_err(|_| CryptoError::Encrypt)?;
    let ciphertext = std::mem::take(&mut *buf);
    let (wrapped_dek, dek_nonce) = wrap_dek(&ring.current, &dek)?;
    Ok(Sealed {
        kek_version: ring.current.version,
        wrapped_dek,
        dek_nonce,
        nonce,
        ciphertext,
    })
}

/// Decrypts a record sealed by [`seal`] (or re-wrapped by [`rewrap`]) with the same `aad`.
/// Any tampering yields [`CryptoError::Decrypt`], without saying which part failed.
pub fn open(
    ring: &KeyRing,
    sealed: &Sealed,
    aad: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let dek = unwrap_dek(ring, sealed)?;
    let mut buf = Zeroizing::new(sealed.ciphertext.clone());
    // aes-gcm checks the tag before decrypting, so a failure leaves no plaintext behind.
    dek.cipher()
        .decrypt_in_place(&Nonce::from(sealed.nonce), aad, &mut *buf)
        .map_err(|_| CryptoError::Decrypt)?;
    Ok(buf)
}

/// Re-wraps the record's DEK under the ring's current KEK, leaving `nonce` and `ciphertext`
/// byte-identical: rotation rewrites 48 bytes per row, needs no AAD, and a row stays readable
/// throughout by any process holding the version it records. Already-current records are
/// returned unchanged.
pub fn rewrap(ring: &KeyRing, sealed: &Sealed) -> Result<Sealed, CryptoError> {
    if sealed.kek_version == ring.current.version {
        return Ok(sealed.clone());
    }
    let dek = unwrap_dek(ring, sealed)?;
    let (wrapped_dek, dek_nonce) = wrap_dek(&ring.current, &dek)?;
    Ok(Sealed {
        kek_version: ring.current.version,
        wrapped_dek,
        dek_nonce,
        nonce: sealed.nonce,
        ciphertext: sealed.ciphertext.clone(),
    })
}

/// A new opaque token: `prefix` (used verbatim, e.g. `"pm_"`) followed by
/// [`TOKEN_RANDOM_CHARS`] ModHex letters (`cbdefghijklnrtuv`), i.e. 128 bits from the OS
/// random generator. It is not derived from the value it stands for and contains no digits
/// (unless `prefix` has some), so it carries no card or account digits.
pub fn new_token(prefix: &str) -> Result<String, CryptoError> {
    let random = random_bytes::<{ TOKEN_RANDOM_CHARS / 2 }>()?;
    let mut token = String::with_capacity(prefix.len() + TOKEN_RANDOM_CHARS);
    token.push_str(prefix);
    for byte in random {
        token.push(char::from(TOKEN_ALPHABET[usize::from(byte >> 4)]));
        token.push(char::from(TOKEN_ALPHABET[usize::from(byte & 0x0f)]));
    }
    Ok(token)
}

/// 32 random bytes as 64 lowercase hex characters, for `cashloop keys generate`. The result
/// is key material: it is wiped when dropped; print it once, never log it.
pub fn generate_key_hex() -> Result<Zeroizing<String>, CryptoError> {
    let key = KeyBytes::random()?;
    Ok(Zeroizing::new(hex::encode(&key.0[..])))
}

/// Compares two byte strings in time independent of their contents (not of their lengths,
/// which are public for MACs), for webhook signatures and the like.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HEX_A: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const HEX_B: &str = "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f";
    const HEX_C: &str = "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f";
    const AAD: &[u8] = b"tok_example:card";

    fn kek(version: u32, hex_str: &str) -> Kek {
        Kek::from_hex(version, hex_str).unwrap()
    }

    fn ring_a() -> KeyRing {
        KeyRing::new(kek(1, HEX_A))
    }

    /// A file in the temp dir, removed on drop (no tempfile dependency needed here).
    struct TempFile(std::path::PathBuf);

    impl TempFile {
        fn new(content: &[u8]) -> Self {
            let name = format!("gwcrypto-test-{}", new_token("key_").unwrap());
            let path = std::env::temp_dir().join(name);
            std::fs::write(&path, content).unwrap();
            Self(path)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn round_trip_sizes() {
        let ring = ring_a();
        for len in [0usize, 1, 16, 19, 64 * 1024] {
            let plaintext: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let sealed = seal(&ring, &plaintext, AAD).unwrap();
            assert_eq!(sealed.kek_version, 1);
            assert_eq!(sealed.wrapped_dek.len(), WRAPPED_DEK_LEN);
            assert_eq!(sealed.ciphertext.len(), len + TAG_LEN);
            assert_eq!(
                &*open(&ring, &sealed, AAD).unwrap(),
                &plaintext[..],
                "len {len}"
            );
        }
    }

    #[test]
    fn each_seal_uses_fresh_randomness() {
        let ring = ring_a();
        let a = seal(&ring, b"4111111111111111", AAD).unwrap();
        let b = seal(&ring, b"4111111111111111", AAD).unwrap();
        assert_ne!(a.wrapped_dek, b.wrapped_dek);
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
    }

    #[test]
    fn aad_mismatch_fails() {
        let ring = ring_a();
        let sealed = seal(&ring, b"4111111111111111", b"tok_a:card").unwrap();
        for aad in [&b"tok_b:card"[..], b"tok_a:ach", b"", b"tok_a:card\0"] {
            assert_eq!(open(&ring, &sealed, aad), Err(CryptoError::Decrypt));
        }
    }

    #[test]
    fn every_single_bit_flip_fails() {
        let ring = ring_a();
        let sealed = seal(&ring, b"4111111111111111 12/30", AAD).unwrap();
        type Field = fn(&mut Sealed) -> &mut [u8];
        let fields: [(&str, Field); 4] = [
            ("wrapped_dek", |s| &mut s.wrapped_dek[..]),
            ("dek_nonce", |s| &mut s.dek_nonce[..]),
            ("nonce", |s| &mut s.nonce[..]),
            ("ciphertext", |s| &mut s.ciphertext[..]),
        ];
        for (name, field) in fields {
            let bits = field(&mut sealed.clone()).len() * 8;
            for bit in 0..bits {
                let mut tampered = sealed.clone();
                field(&mut tampered)[bit / 8] ^= 1 << (bit % 8);
                assert_eq!(
                    open(&ring, &tampered, AAD),
                    Err(CryptoError::Decrypt),
                    "{name} bit {bit}"
                );
            }
        }
    }

    #[test]
    fn truncated_or_extended_parts_fail() {
        let ring = ring_a();
        let sealed = seal(&ring, b"4111111111111111", AAD).unwrap();
        let mut cases = Vec::new();
        let mut s = sealed.clone();
        s.wrapped_dek.pop();
        cases.push(s);
        let mut s = sealed.clone();
        s.wrapped_dek.push(0);
        cases.push(s);
        let mut s = sealed.clone();
        s.ciphertext.pop();
        cases.push(s);
        let mut s = sealed.clone();
        s.ciphertext.push(0);
        cases.push(s);
        let mut s = sealed.clone();
        s.ciphertext.clear();
        cases.push(s);
        for tampered in cases {
            assert_eq!(open(&ring, &tampered, AAD), Err(CryptoError::Decrypt));
        }
    }

    #[test]
    fn wrong_kek_version_fails() {
        let ring = ring_a().with_previous(kek(2, HEX_B)).unwrap();
        let sealed = seal(&ring, b"secret", AAD).unwrap();
        let mut relabelled = sealed.clone();
        relabelled.kek_version = 2;
        assert_eq!(open(&ring, &relabelled, AAD), Err(CryptoError::Decrypt));
        relabelled.kek_version = 7;
        assert_eq!(
            open(&ring, &relabelled, AAD),
            Err(CryptoError::UnknownKeyVersion(7))
        );
        // Even the same key under another version number does not open it: the version is
        // bound into the wrap's AAD.
        let same_key = KeyRing::new(kek(1, HEX_B))
            .with_previous(kek(9, HEX_A))
            .unwrap();
        let mut relabelled = sealed.clone();
        relabelled.kek_version = 9;
        assert_eq!(open(&same_key, &relabelled, AAD), Err(CryptoError::Decrypt));
    }

    #[test]
    fn rewrap_to_new_current_key() {
        let old_ring = ring_a();
        let sealed = seal(&old_ring, b"4111111111111111", AAD).unwrap();

        let both = KeyRing::new(kek(2, HEX_B))
            .with_previous(kek(1, HEX_A))
            .unwrap();
        let rewrapped = rewrap(&both, &sealed).unwrap();
        assert_eq!(rewrapped.kek_version, 2);
        assert_ne!(rewrapped.wrapped_dek, sealed.wrapped_dek);
        assert_eq!(rewrapped.nonce, sealed.nonce);
        assert_eq!(rewrapped.ciphertext, sealed.ciphertext);

        assert_eq!(
            open(&old_ring, &rewrapped, AAD),
            Err(CryptoError::UnknownKeyVersion(2))
        );
        assert_eq!(&*open(&both, &sealed, AAD).unwrap(), b"4111111111111111");
        assert_eq!(&*open(&both, &rewrapped, AAD).unwrap(), b"4111111111111111");
        // The new key alone is enough once every row is rewrapped.
        let new_only = KeyRing::new(kek(2, HEX_B));
        assert_eq!(
            &*open(&new_only, &rewrapped, AAD).unwrap(),
            b"4111111111111111"
        );

        // Already current: unchanged.
        assert_eq!(rewrap(&both, &rewrapped).unwrap(), rewrapped);
        // A key the ring lacks cannot be rewrapped.
        let other = KeyRing::new(kek(3, HEX_C));
        assert_eq!(
            rewrap(&other, &sealed),
            Err(CryptoError::UnknownKeyVersion(1))
        );
        // A tampered wrap is refused rather than re-wrapped into something valid-looking.
        let mut tampered = sealed.clone();
        tampered.wrapped_dek[0] ^= 1;
        assert_eq!(rewrap(&both, &tampered), Err(CryptoError::Decrypt));
    }

    #[test]
    fn key_ring_versions_are_unique() {
        let ring = KeyRing::new(kek(3, HEX_C))
            .with_previous(kek(2, HEX_B))
            .unwrap();
        assert_eq!(ring.current_version(), 3);
        assert_eq!(ring.versions().collect::<Vec<_>>(), [3, 2]);
        assert_eq!(ring.get(2).map(Kek::version), Some(2));
        assert!(ring.get(1).is_none());
        for dup in [2, 3] {
            let again = KeyRing::new(kek(3, HEX_C))
                .with_previous(kek(2, HEX_B))
                .unwrap()
                .with_previous(kek(dup, HEX_A));
            assert_eq!(again.unwrap_err(), CryptoError::DuplicateKeyVersion(dup));
        }
    }

    #[test]
    fn tokens_are_unique_random_and_digit_free() {
        let pan = "4111111111111111";
        let pan_windows: Vec<&str> = (0..=pan.len() - 4).map(|i| &pan[i..i + 4]).collect();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let token = new_token("tok_").unwrap();
            let body = token.strip_prefix("tok_").expect("prefix");
            assert_eq!(body.len(), TOKEN_RANDOM_CHARS);
            assert!(body.bytes().all(|b| TOKEN_ALPHABET.contains(&b)), "{token}");
            assert!(!token.bytes().any(|b| b.is_ascii_digit()), "{token}");
            assert!(!pan_windows.iter().any(|w| token.contains(w)), "{token}");
            assert!(seen.insert(token));
        }
        // Every one of the 16 symbols is used: no bits are lost in the encoding.
        let all: std::collections::HashSet<u8> =
            seen.iter().flat_map(|t| t.bytes().skip(4)).collect();
        assert_eq!(all.len(), 16);
    }

    #[test]
    fn generated_keys_load_and_differ() {
        let a = generate_key_hex().unwrap();
        let b = generate_key_hex().unwrap();
        assert_eq!(a.len(), 64);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(*a, *b);
        let ring = KeyRing::new(Kek::from_hex(5, &a).unwrap());
        let sealed = seal(&ring, b"x", AAD).unwrap();
        assert_eq!(&*open(&ring, &sealed, AAD).unwrap(), b"x");
    }

    #[test]
    fn fingerprint_is_deterministic_per_key() {
        let k1 = FingerprintKey::from_hex(1, HEX_A).unwrap();
        let k1_again = FingerprintKey::from_hex(1, HEX_A).unwrap();
        let k2 = FingerprintKey::from_hex(2, HEX_B).unwrap();
        let pan = b"card:4111111111111111";
        assert_eq!(k1.fingerprint(pan), k1_again.fingerprint(pan));
        assert_ne!(k1.fingerprint(pan), k2.fingerprint(pan));
        assert_ne!(
            k1.fingerprint(pan),
            k1.fingerprint(b"card:4111111111111112")
        );
        assert_eq!(k1.fingerprint_hex(pan), hex::encode(k1.fingerprint(pan)));
        assert_eq!(k1.fingerprint_hex(pan).len(), 64);
    }

    #[test]
    fn fingerprint_is_hmac_sha256_rfc4231() {
        // RFC 4231 test case 1: key = 20 bytes of 0x0b. HMAC pads keys shorter than the
        // 64-byte block with zeros, so the 32-byte key 0x0b*20 ‖ 0x00*12 gives the same MAC.
        let key = format!("{}{}", "0b".repeat(20), "00".repeat(12));
        let fp = FingerprintKey::from_hex(1, &key).unwrap();
        assert_eq!(
            fp.fingerprint_hex(b"Hi There"),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
    }

    #[test]
    fn aes_256_gcm_known_answers() {
        // From "The Galois/Counter Mode of Operation (GCM)", McGrew & Viega, as submitted to
        // NIST: test cases 13, 14 and 16 (256-bit keys). (key, iv, plaintext, aad, ct, tag)
        let vectors: [[&str; 6]; 3] = [
            [
                "0000000000000000000000000000000000000000000000000000000000000000",
                "000000000000000000000000",
                "",
                "",
                "",
                "530f8afbc74536b9a963b4f1c4cb738b",
            ],
            [
                "0000000000000000000000000000000000000000000000000000000000000000",
                "000000000000000000000000",
                "00000000000000000000000000000000",
                "",
                "cea7403d4d606b6e074ec5d3baf39d18",
                "d0d1c8a799996bf0265b98b5d48ab919",
            ],
            [
                "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
                "cafebabefacedbaddecaf888",
                "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72\
                 1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
                "feedfacedeadbeeffeedfacedeadbeefabaddad2",
                "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa\
                 8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
                "76fc6ece0f4e1768cddf8853bb2d551b",
            ],
        ];
        for [key, iv, pt, aad, ct, tag] in vectors {
            let h = |s: &str| hex::decode(s.replace(char::is_whitespace, "")).unwrap();
            // Through the module's own key type, so its cipher construction is what is tested.
            let key = KeyBytes(Box::new(h(key).try_into().unwrap()));
            let (pt, aad) = (h(pt), h(aad));
            let iv: [u8; NONCE_LEN] = h(iv).try_into().unwrap();
            let mut buf = pt.clone();
            let got_tag = key
                .cipher()
                .encrypt_in_place_detached(&Nonce::from(iv), &aad, &mut buf)
                .unwrap();
            assert_eq!(hex::encode(&buf), ct);
            assert_eq!(hex::encode(got_tag), tag);
            key.cipher()
                .decrypt_in_place_detached(&Nonce::from(iv), &aad, &mut buf, &got_tag)
                .unwrap();
            assert_eq!(buf, pt);
        }
    }

    #[test]
    fn key_hex_parsing() {
        let cases: [(String, Option<&str>); 8] = [
            (HEX_A.to_owned(), None),
            (format!("  \n{HEX_A}\r\n"), None),
            (HEX_A.to_uppercase(), None),
            (HEX_A[..62].to_owned(), Some("expected 64 hex characters")),
            (format!("{HEX_A}00"), Some("expected 64 hex characters")),
            (format!("{}zz", &HEX_A[..62]), Some("other than hex digits")),
            (
                format!("{} {}", &HEX_A[..31], &HEX_A[32..]),
                Some("other than hex digits"),
            ),
            ("0".repeat(64), Some("all zeros")),
        ];
        for (input, expected) in cases {
            match (Kek::from_hex(1, &input), expected) {
                (Ok(_), None) => {}
                (Err(CryptoError::BadKeyMaterial { reason, .. }), Some(want)) => {
                    assert!(reason.contains(want), "{input:?}: {reason}")
                }
                (got, want) => panic!("{input:?}: got {got:?}, want {want:?}"),
            }
        }
        // Upper and lower case are the same key.
        let lower = KeyRing::new(kek(1, HEX_A));
        let upper = KeyRing::new(kek(1, &HEX_A.to_uppercase()));
        let sealed = seal(&lower, b"x", AAD).unwrap();
        assert_eq!(&*open(&upper, &sealed, AAD).unwrap(), b"x");
    }

    #[test]
    fn key_file_loading() {
        let good = TempFile::new(format!("{HEX_A}\n").as_bytes());
        assert_eq!(Kek::from_file(4, &good.0).unwrap().version(), 4);
        assert_eq!(FingerprintKey::from_file(1, &good.0).unwrap().version(), 1);

        let short = &HEX_B[..40];
        let non_hex = format!("{}qq", &HEX_C[..62]);
        let big = "a".repeat(5000);
        for (content, reason) in [
            (short, "expected 64 hex characters"),
            (non_hex.as_str(), "other than hex digits"),
            (big.as_str(), "far larger"),
            ("", "expected 64 hex characters"),
        ] {
            let file = TempFile::new(content.as_bytes());
            let err = Kek::from_file(1, &file.0).unwrap_err();
            let shown = format!("{err} {err:?}");
            assert!(shown.contains(&*file.0.display().to_string()), "{shown}");
            assert!(shown.contains(reason), "{shown}");
            if !content.is_empty() {
                assert!(
                    !shown.contains(&content[..16]),
                    "leaks key material: {shown}"
                );
            }
            let err = FingerprintKey::from_file(1, &file.0).unwrap_err();
            assert!(matches!(err, CryptoError::BadKeyMaterial { .. }));
        }

        let missing = std::env::temp_dir().join("gwcrypto-test-does-not-exist");
        let err = Kek::from_file(1, &missing).unwrap_err();
        assert!(err.to_string().contains("not found"), "{err}");
    }

    #[test]
    fn key_env_loading_never_shows_the_value() {
        // Setting variables needs `unsafe` in edition 2024, so use ones the test runner has.
        let err = Kek::from_env(1, "GWCRYPTO_TEST_SURELY_UNSET_VAR").unwrap_err();
        assert!(
            err.to_string().contains("GWCRYPTO_TEST_SURELY_UNSET_VAR"),
            "{err}"
        );
        assert!(err.to_string().contains("not set"), "{err}");
        if let Some(path) = std::env::var_os("PATH").filter(|p| p.len() >= 8) {
            let err = FingerprintKey::from_env(1, "PATH").unwrap_err();
            let shown = format!("{err} {err:?}");
            let value = path.to_string_lossy();
            assert!(!shown.contains(&*value), "{shown}");
        }
    }

    #[test]
    fn debug_output_is_redacted() {
        let k = kek(7, HEX_A);
        let fp = FingerprintKey::from_hex(3, HEX_B).unwrap();
        let ring = KeyRing::new(kek(8, HEX_C))
            .with_previous(kek(7, HEX_A))
            .unwrap();
        assert_eq!(format!("{k:?}"), "Kek { version: 7 }");
        assert_eq!(format!("{fp:?}"), "FingerprintKey { version: 3 }");
        let shown = format!("{k:?} {k:#?} {fp:?} {ring:?} {ring:#?}");
        for secret in [HEX_A, HEX_B, HEX_C] {
            assert!(
                !shown.contains(secret) && !shown.contains(&secret[..8]),
                "{shown}"
            );
        }
        let sealed = seal(&ring, b"4111111111111111", AAD).unwrap();
        assert!(!format!("{sealed:?}").contains("4111"));
    }

    #[test]
    fn keys_zeroize_on_drop() {
        fn assert_zeroize_on_drop<T: ZeroizeOnDrop>() {}
        assert_zeroize_on_drop::<Kek>();
        assert_zeroize_on_drop::<FingerprintKey>();
    }

    #[test]
    fn constant_time_eq() {
        let cases: [(&[u8], &[u8], bool); 6] = [
            (b"", b"", true),
            (b"abc", b"abc", true),
            (b"abc", b"abd", false),
            (b"abc", b"ab", false),
            (b"", b"a", false),
            (&[0u8; 32], &[0u8; 32], true),
        ];
        for (a, b, want) in cases {
            assert_eq!(ct_eq(a, b), want, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn error_messages() {
        let cases = [
            (
                CryptoError::UnknownKeyVersion(4),
                "no key with version 4 in the key ring",
            ),
            (
                CryptoError::DuplicateKeyVersion(2),
                "key version 2 appears more than once in the key ring",
            ),
            (CryptoError::Decrypt, "decryption failed"),
            (
                CryptoError::BadKeyMaterial {
                    source_name: "/etc/k".into(),
                    reason: "key is all zeros",
                },
                "bad key material from /etc/k: key is all zeros",
            ),
        ];
        for (err, want) in cases {
            assert_eq!(err.to_string(), want);
        }
    }

    #[test]
    fn dek_aad_encoding() {
        assert_eq!(
            &dek_aad(0x0102_0304)[..],
            b"cashloop-dek-v1\x01\x02\x03\x04"
        );
    }

    proptest! {
        #[test]
        fn seal_open_round_trip(
            plaintext in proptest::collection::vec(any::<u8>(), 0..2048),
            aad in proptest::collection::vec(any::<u8>(), 0..128),
        ) {
            let ring = ring_a();
            let sealed = seal(&ring, &plaintext, &aad).unwrap();
            prop_assert_eq!(&*open(&ring, &sealed, &aad).unwrap(), &plaintext[..]);
            let mut other_aad = aad.clone();
            other_aad.push(0);
            prop_assert_eq!(open(&ring, &sealed, &other_aad), Err(CryptoError::Decrypt));
        }
    }
}
