//! A customer's consents: explicit, per channel and purpose, with their history. Nothing is
//! consented to by default: a channel and purpose without a record is "not granted".
//!
//! The hub sends marketing by email and personalises in-store boards, so the pairs that mean
//! something today are `email`/`marketing` and `board`/`personalization`; every change is kept
//! with its time and where it was made (registration form, account page, unsubscribe link,
//! till, API), newest last.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Where the hub reaches the customer with what they agree to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentChannel {
    Email,
    Board,
}

/// What the customer agrees to on a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentPurpose {
    /// Offers, reminders, back-in-stock notes, win-back mail.
    Marketing,
    /// Content chosen for the customer (their segments), e.g. on a board they identify at.
    Personalization,
}

/// Where a consent was given or withdrawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentSource {
    /// The checkboxes of the registration form or the registration API.
    Registration,
    /// The account page.
    Account,
    /// An unsubscribe link in a mail (it withdraws email marketing).
    Unsubscribe,
    /// A clerk at the till, on the shopper's word.
    Till,
    /// The customer's own API call (`PUT /api/v1/customers/me/consents`).
    Api,
    /// A back-office user recording what the shopper said (the board audience admin API).
    BackOffice,
    /// The demo's set-up (the demo shopper).
    Demo,
    /// Carried over from a record written before consents were explicit (an opt-out).
    Migration,
    /// Erasure of the customer's data withdrew everything.
    Erasure,
    #[serde(other)]
    Unknown,
}

impl ConsentChannel {
    pub const ALL: [ConsentChannel; 2] = [ConsentChannel::Email, ConsentChannel::Board];

    pub fn as_str(self) -> &'static str {
        match self {
            ConsentChannel::Email => "email",
            ConsentChannel::Board => "board",
        }
    }

    pub fn parse(text: &str) -> Option<ConsentChannel> {
        ConsentChannel::ALL.into_iter().find(|c| c.as_str() == text)
    }
}

impl ConsentPurpose {
    pub const ALL: [ConsentPurpose; 2] =
        [ConsentPurpose::Marketing, ConsentPurpose::Personalization];

    pub fn as_str(self) -> &'static str {
        match self {
            ConsentPurpose::Marketing => "marketing",
            ConsentPurpose::Personalization => "personalization",
        }
    }

    pub fn parse(text: &str) -> Option<ConsentPurpose> {
        ConsentPurpose::ALL.into_iter().find(|p| p.as_str() == text)
    }
}

impl ConsentSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ConsentSource::Registration => "registration",
            ConsentSource::Account => "account",
            ConsentSource::Unsubscribe => "unsubscribe",
            ConsentSource::Till => "till",
            ConsentSource::Api => "api",
            ConsentSource::BackOffice => "back_office",
            ConsentSource::Demo => "demo",
            ConsentSource::Migration => "migration",
            ConsentSource::Erasure => "erasure",
            ConsentSource::Unknown => "unknown",
        }
    }
}

/// One choice: grant or withdraw one channel and purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentChoice {
    pub channel: ConsentChannel,
    pub purpose: ConsentPurpose,
    pub granted: bool,
}

/// One recorded change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentRecord {
    pub channel: ConsentChannel,
    pub purpose: ConsentPurpose,
    pub granted: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub source: ConsentSource,
}

/// The most history kept per customer: older changes are dropped first (the current state
/// is always the newest record of each pair, which stays).
pub const MAX_HISTORY: usize = 100;

/// A customer's consents: every change, oldest first. The state of a pair is its newest
/// record; no record is no consent.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Consents {
    #[serde(default)]
    pub history: Vec<ConsentRecord>,
}

impl Consents {
    /// Whether the customer consents to `purpose` on `channel` now.
    pub fn granted(&self, channel: ConsentChannel, purpose: ConsentPurpose) -> bool {
        self.current(channel, purpose).is_some_and(|r| r.granted)
    }

    /// The newest record of a pair, if any.
    pub fn current(
        &self,
        channel: ConsentChannel,
        purpose: ConsentPurpose,
    ) -> Option<&ConsentRecord> {
        self.history
            .iter()
            .rev()
            .find(|r| r.channel == channel && r.purpose == purpose)
    }

    /// Applies choices; answers the records of those that changed the state (a choice equal
    /// to the current state is not recorded again, so a repeated unsubscribe is one record).
    /// A withdrawal of a pair with no record yet is recorded: the history then says "no", when
    /// and where (an unticked box at registration, an unsubscribe without an earlier grant).
    pub fn apply(
        &mut self,
        choices: &[ConsentChoice],
        at: OffsetDateTime,
        source: ConsentSource,
    ) -> Vec<ConsentRecord> {
        let mut changed = Vec::new();
        for choice in choices {
            let current = self.current(choice.channel, choice.purpose);
            if current.is_some_and(|r| r.granted == choice.granted) {
                continue;
            }
            let record = ConsentRecord {
                channel: choice.channel,
                purpose: choice.purpose,
                granted: choice.granted,
                at,
                source,
            };
            self.history.push(record.clone());
            changed.push(record);
        }
        self.trim();
        changed
    }

    /// Drops the oldest records beyond [`MAX_HISTORY`], keeping each pair's newest.
    fn trim(&mut self) {
        while self.history.len() > MAX_HISTORY {
            let newest_of = |i: usize, h: &[ConsentRecord]| {
                !h[i + 1..]
                    .iter()
                    .any(|r| r.channel == h[i].channel && r.purpose == h[i].purpose)
            };
            match (0..self.history.len()).find(|&i| !newest_of(i, &self.history)) {
                Some(i) => {
                    self.history.remove(i);
                }
                None => break,
            }
        }
    }

    /// The state of every pair the hub knows (granted or not, with when and where it was
    /// last set), for the profile, the account page and the API.
    pub fn states(&self) -> Vec<ConsentState> {
        let mut out = Vec::new();
        for channel in ConsentChannel::ALL {
            for purpose in ConsentPurpose::ALL {
                let current = self.current(channel, purpose);
                out.push(ConsentState {
                    channel,
                    purpose,
                    granted: current.is_some_and(|r| r.granted),
                    at: current.map(|r| r.at),
                    source: current.map(|r| r.source),
                });
            }
        }
        out
    }
}

/// A pair's state now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsentState {
    pub channel: ConsentChannel,
    pub purpose: ConsentPurpose,
    pub granted: bool,
    #[serde(with = "time::serde::rfc3339::option")]
    pub at: Option<OffsetDateTime>,
    pub source: Option<ConsentSource>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use ConsentChannel::*;
    use ConsentPurpose::*;

    fn at(s: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_700_000_000 + s).expect("valid time")
    }

    fn choice(channel: ConsentChannel, purpose: ConsentPurpose, granted: bool) -> ConsentChoice {
        ConsentChoice {
            channel,
            purpose,
            granted,
        }
    }

    #[test]
    fn nothing_is_granted_by_default() {
        let c = Consents::default();
        for channel in ConsentChannel::ALL {
            for purpose in ConsentPurpose::ALL {
                assert!(!c.granted(channel, purpose));
            }
        }
        assert!(c.states().iter().all(|s| !s.granted && s.at.is_none()));
    }

    #[test]
    fn the_newest_choice_of_a_pair_decides_and_repeats_are_not_recorded() {
        let mut c = Consents::default();
        let changed = c.apply(
            &[
                choice(Email, Marketing, true),
                choice(Board, Personalization, false),
            ],
            at(0),
            ConsentSource::Registration,
        );
        // The withdrawal of a pair never granted is recorded: the history says "no".
        assert_eq!(changed.len(), 2);
        assert!(c.granted(Email, Marketing));
        assert!(!c.granted(Email, Personalization));
        assert!(!c.granted(Board, Personalization));
        assert!(c
            .apply(&[choice(Email, Marketing, true)], at(1), ConsentSource::Api)
            .is_empty());
        let changed = c.apply(
            &[choice(Email, Marketing, false)],
            at(2),
            ConsentSource::Unsubscribe,
        );
        assert_eq!(changed.len(), 1);
        assert!(!c.granted(Email, Marketing));
        assert_eq!(
            c.current(Email, Marketing).map(|r| (r.at, r.source)),
            Some((at(2), ConsentSource::Unsubscribe))
        );
        assert_eq!(c.history.len(), 3);
    }

    #[test]
    fn history_is_bounded_and_keeps_each_pairs_newest() {
        let mut c = Consents::default();
        c.apply(
            &[choice(Board, Personalization, true)],
            at(0),
            ConsentSource::Account,
        );
        for i in 0..(MAX_HISTORY as i64 + 20) {
            c.apply(
                &[choice(Email, Marketing, i % 2 == 0)],
                at(i + 1),
                ConsentSource::Account,
            );
        }
        assert_eq!(c.history.len(), MAX_HISTORY);
        assert!(c.granted(Board, Personalization));
        assert_eq!(
            c.current(Email, Marketing).map(|r| r.at),
            Some(at(MAX_HISTORY as i64 + 20))
        );
    }

    #[test]
    fn names_round_trip() {
        for channel in ConsentChannel::ALL {
            assert_eq!(ConsentChannel::parse(channel.as_str()), Some(channel));
        }
        for purpose in ConsentPurpose::ALL {
            assert_eq!(ConsentPurpose::parse(purpose.as_str()), Some(purpose));
        }
        assert_eq!(ConsentChannel::parse("sms"), None);
        assert_eq!(
            serde_json::to_string(&ConsentSource::BackOffice)
                .ok()
                .as_deref(),
            Some("\"back_office\"")
        );
    }
}
