//! `[[agents]]`: the on-premise agents (a Sage 100 agent, `cashloop agent`) allowed to poll the
//! command queue. Each has its own key, stored as its SHA-256 (an agent key is random, 32+
//! bytes, so an unkeyed hash is enough); these keys are not API keys and open only
//! `/agent/v1/*`.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{ConfigError, bad};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAgent {
    pub name: String,
    /// Hex SHA-256 of the agent's key (`sha256sum` of the key file's trimmed content).
    pub key_sha256: String,
    /// How long a polled command stays leased to the agent before it is handed out again,
    /// milliseconds (default 60 000).
    pub lease_ms: Option<u64>,
}

/// A validated agent.
#[derive(Clone, Debug)]
pub struct AgentKey {
    pub name: String,
    pub key_sha256: [u8; 32],
    pub lease_ms: i64,
}

impl AgentKey {
    /// Whether `presented` is this agent's key (constant-time over the hashes).
    pub fn matches(&self, presented: &str) -> bool {
        use subtle::ConstantTimeEq;
        let h: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        bool::from(h.ct_eq(&self.key_sha256))
    }
}

pub(super) fn agents(raw: &[RawAgent]) -> Result<Vec<AgentKey>, ConfigError> {
    let mut out: Vec<AgentKey> = Vec::new();
    for (i, a) in raw.iter().enumerate() {
        let key = |f: &str| format!("agents[{i}].{f}");
        if a.name.trim().is_empty() || a.name.len() > 64 {
            return Err(bad(&key("name"), "must be 1 to 64 characters"));
        }
        if out.iter().any(|o| o.name == a.name) {
            return Err(bad(&key("name"), "is used by another agent"));
        }
        let hash = hex::decode(&a.key_sha256)
            .ok()
            .and_then(|h| <[u8; 32]>::try_from(h.as_slice()).ok())
            .ok_or_else(|| bad(&key("key_sha256"), "must be 64 hex digits"))?;
        let lease_ms = a.lease_ms.unwrap_or(60_000);
        if !(100..=86_400_000).contains(&lease_ms) {
            return Err(bad(&key("lease_ms"), "must be between 100 and 86400000"));
        }
        out.push(AgentKey {
            name: a.name.clone(),
            key_sha256: hash,
            lease_ms: lease_ms as i64,
        });
    }
    Ok(out)
}
