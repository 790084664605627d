//! `[boards]` of the edge settings: the store's boards and their credentials, and the timing of
//! presence, heartbeats and the audience cache.

use secrecy::SecretString;
use serde::{Deserialize, Deserializer};
use std::time::Duration;

/// The store's advertising boards.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BoardSettings {
    /// How long a board shows a consenting shopper's segment content after they identify,
    /// e.g. `60s`.
    #[serde(deserialize_with = "human")]
    pub presence_for: Duration,
    /// How long a shopper's audience answer from the hub is used when the hub cannot be asked,
    /// e.g. `24h`.
    #[serde(deserialize_with = "human")]
    pub audience_cache_for: Duration,
    /// Boards send a heartbeat this often, e.g. `10s`.
    #[serde(deserialize_with = "human")]
    pub heartbeat_every: Duration,
    /// A board not heard from for this long is dark (and its connection is closed), e.g. `30s`.
    #[serde(deserialize_with = "human")]
    pub dark_after: Duration,
    /// At or below this many units on hand a board says "only N left".
    pub low_stock: i64,
    /// How long a board says "back in stock" after a SKU came back, e.g. `30m`.
    #[serde(deserialize_with = "human")]
    pub back_in_stock_for: Duration,
    /// Seconds per item when the playlist does not say.
    pub dwell_secs: u32,
    /// The boards, each with its own credential.
    pub list: Vec<BoardConfig>,
}

/// One board.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoardConfig {
    /// Its id in URLs and events (letters, digits, `-`, `_`; at most 64), e.g. `entrance`.
    pub id: String,
    #[serde(default)]
    pub name: String,
    /// A kiosk has a scanner for loyalty QR codes.
    #[serde(default)]
    pub kiosk: bool,
    /// The hex SHA-256 of the board's token (`omnihub edge --hash-board-token` prints it; the
    /// token itself is a long random string only the board knows).
    pub token_sha256: SecretString,
}

impl Default for BoardSettings {
    fn default() -> Self {
        BoardSettings {
            presence_for: Duration::from_secs(60),
            audience_cache_for: Duration::from_secs(24 * 3600),
            heartbeat_every: Duration::from_secs(10),
            dark_after: Duration::from_secs(30),
            low_stock: 5,
            back_in_stock_for: Duration::from_secs(30 * 60),
            dwell_secs: 8,
            list: Vec::new(),
        }
    }
}

impl BoardSettings {
    /// Refuses settings that cannot work, naming the key.
    pub fn check(&self) -> Result<(), String> {
        let mut ids = std::collections::BTreeSet::new();
        for (i, b) in self.list.iter().enumerate() {
            if !protocol::board::is_plain_id(&b.id) {
                return Err(format!("list[{i}].id: 1 to 64 letters, digits, '-' or '_'"));
            }
            if !ids.insert(b.id.as_str()) {
                return Err(format!("list[{i}].id: '{}' is used twice", b.id));
            }
            if token_hash_of(&b.token_sha256).is_none() {
                return Err(format!(
                    "list[{i}].token_sha256: 64 hex digits (the SHA-256 of the board's token)"
                ));
            }
        }
        if self.heartbeat_every.is_zero() || self.dark_after <= self.heartbeat_every {
            return Err("dark_after must be longer than heartbeat_every (both above 0)".into());
        }
        if self.presence_for.is_zero() {
            return Err("presence_for must be above 0".into());
        }
        if !(1..=3600).contains(&self.dwell_secs) {
            return Err("dwell_secs: 1 to 3600".into());
        }
        Ok(())
    }
}

/// The 32 bytes of a configured hex hash.
pub(crate) fn token_hash_of(hex_text: &SecretString) -> Option<[u8; 32]> {
    use secrecy::ExposeSecret;
    let text = hex_text.expose_secret().trim();
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The hex SHA-256 of a board token, as `token_sha256` wants it.
pub fn hash_board_token(token: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn human<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn board(id: &str, hash: &str) -> BoardConfig {
        BoardConfig {
            id: id.into(),
            name: String::new(),
            kiosk: false,
            token_sha256: SecretString::from(hash.to_string()),
        }
    }

    #[test]
    fn bad_boards_are_refused_with_the_key() {
        let good = hash_board_token("a-long-board-token");
        assert_eq!(good.len(), 64);
        let ok = BoardSettings {
            list: vec![board("entrance", &good)],
            ..BoardSettings::default()
        };
        assert!(ok.check().is_ok());
        for (list, key) in [
            (vec![board("bad id", &good)], "list[0].id"),
            (vec![board("a", &good), board("a", &good)], "list[1].id"),
            (vec![board("a", "abc")], "list[0].token_sha256"),
        ] {
            let s = BoardSettings {
                list,
                ..BoardSettings::default()
            };
            let err = s.check().expect_err(key);
            assert!(err.starts_with(key), "{err}");
        }
    }
}
