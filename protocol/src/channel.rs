//! The channels a shopper reaches the retailer through.

use serde::{Deserialize, Serialize};

/// A sales or interaction channel. New channels may appear in newer versions: an unknown one
/// reads as [`Channel::Unknown`] instead of failing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Web,
    Mobile,
    Pos,
    Board,
    Voice,
    Chat,
    #[serde(other)]
    Unknown,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Web => "web",
            Channel::Mobile => "mobile",
            Channel::Pos => "pos",
            Channel::Board => "board",
            Channel::Voice => "voice",
            Channel::Chat => "chat",
            Channel::Unknown => "unknown",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_channels_read_as_unknown() {
        assert_eq!(
            serde_json::from_str::<Channel>("\"pos\"").ok(),
            Some(Channel::Pos)
        );
        assert_eq!(
            serde_json::from_str::<Channel>("\"hologram\"").ok(),
            Some(Channel::Unknown)
        );
        assert_eq!(
            serde_json::to_string(&Channel::Mobile).ok().as_deref(),
            Some("\"mobile\"")
        );
    }
}
