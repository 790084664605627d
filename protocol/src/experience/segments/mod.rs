//! Segments: rules a marketer writes over a profile and its recent activity, such as
//! `viewed(category = "coffee") >= 2 within 7d and orders within 30d = 0`.
//!
//! ```text
//! rule      := or
//! or        := and ("or" and)*
//! and       := unary ("and" unary)*
//! unary     := "not" unary | "(" or ")" | condition
//! condition := fact [ "(" argument ")" ] [ "within" duration ] [ cmp whole-number ]
//!            | "lifetime_value" "(" currency ")" cmp amount
//! fact      := viewed | added_to_basket | ordered | orders | searched | visited_store
//!            | channel_used
//! argument  := "text" | field "=" "text"
//! duration  := whole-number ("h" | "d")            at most 90d
//! cmp       := "=" | "!=" | "<" | "<=" | ">" | ">="
//! ```
//!
//! A fact counts events (a condition without a comparison means `>= 1`); without `within` it
//! counts every event ever folded, with `within N` those of the last N hours by whole hours: an
//! event counts for at least N hours and less than N + 1. Keywords are case-insensitive.
//!
//! The counts come from the profile's [`Activity`]: hourly counters kept for
//! [`MAX_WINDOW_HOURS`] and totals, folded from events order-independently. [`reconcile`]
//! evaluates every live segment for one profile at a given time and says which memberships
//! began or ended and when time alone could next change one ([`Reconciled::due`]), so the hub
//! re-evaluates a profile when an event changes it or when its due time passes — never by
//! rereading the log.

mod activity;
pub mod parser;

#[cfg(test)]
mod tests;

pub use activity::{fact_key, Activity};
pub use parser::{parse, ParseError};

use super::Profile;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use time::OffsetDateTime;

/// The longest `within` window, and how long hourly activity is kept.
pub const MAX_WINDOW_HOURS: u32 = 90 * 24;
/// The channels `channel_used` accepts.
pub const CHANNELS: [&str; 6] = ["web", "mobile", "pos", "board", "voice", "chat"];

/// A parsed rule (its serde form is what is stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Rule {
    And { all: Vec<Rule> },
    Or { any: Vec<Rule> },
    Not { rule: Box<Rule> },
    Count(Count),
    LifetimeValue(Value),
}

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Cmp {
    fn holds<T: Ord>(self, left: T, right: T) -> bool {
        match self {
            Cmp::Eq => left == right,
            Cmp::Ne => left != right,
            Cmp::Lt => left < right,
            Cmp::Le => left <= right,
            Cmp::Gt => left > right,
            Cmp::Ge => left >= right,
        }
    }

    fn symbol(self) -> &'static str {
        match self {
            Cmp::Eq => "=",
            Cmp::Ne => "!=",
            Cmp::Lt => "<",
            Cmp::Le => "<=",
            Cmp::Gt => ">",
            Cmp::Ge => ">=",
        }
    }
}

/// What a count condition counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fact {
    /// `product_view` events.
    Viewed,
    /// `basket_line_added` events.
    AddedToBasket,
    /// `order_placed` events (`orders` is another name for it).
    Ordered,
    /// `search` events.
    Searched,
    /// Events at a store (channel `pos` or `board`, or a payload `store` other than `online`).
    VisitedStore,
    /// Events on any channel, or on the one named.
    ChannelUsed,
}

impl Fact {
    const ALL: [Fact; 6] = [
        Fact::Viewed,
        Fact::AddedToBasket,
        Fact::Ordered,
        Fact::Searched,
        Fact::VisitedStore,
        Fact::ChannelUsed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fact::Viewed => "viewed",
            Fact::AddedToBasket => "added_to_basket",
            Fact::Ordered => "ordered",
            Fact::Searched => "searched",
            Fact::VisitedStore => "visited_store",
            Fact::ChannelUsed => "channel_used",
        }
    }

    fn from_name(name: &str) -> Option<Fact> {
        if name == "orders" {
            return Some(Fact::Ordered);
        }
        Fact::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The fields an argument may name; the first is the one a bare `"text"` means.
    pub fn fields(self) -> &'static [&'static str] {
        match self {
            Fact::Viewed => &["product", "category"],
            Fact::AddedToBasket => &["product"],
            Fact::Ordered => &[],
            Fact::Searched => &["query"],
            Fact::VisitedStore => &["store"],
            Fact::ChannelUsed => &["channel"],
        }
    }
}

/// An argument of a count: `category = "coffee"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    pub field: String,
    pub value: String,
}

/// A `within` window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub hours: u32,
}

/// `fact(filter) within window cmp value`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Count {
    pub fact: Fact,
    #[serde(default)]
    pub filter: Option<Filter>,
    #[serde(default)]
    pub within: Option<Window>,
    pub cmp: Cmp,
    pub value: u64,
}

/// `lifetime_value("EUR") cmp amount`, the amount in minor units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Value {
    pub currency: String,
    pub cmp: Cmp,
    pub minor: i64,
}

/// The whole hour (since the Unix epoch) of a time; times before 1970 count as hour 0.
pub fn hour_of(at: OffsetDateTime) -> u32 {
    u32::try_from(at.unix_timestamp().div_euclid(3600).max(0)).unwrap_or(u32::MAX)
}

impl Rule {
    /// Whether a profile matches at `now`.
    pub fn matches(&self, profile: &Profile, now: OffsetDateTime) -> bool {
        match self {
            Rule::And { all } => all.iter().all(|r| r.matches(profile, now)),
            Rule::Or { any } => any.iter().any(|r| r.matches(profile, now)),
            Rule::Not { rule } => !rule.matches(profile, now),
            Rule::Count(c) => c.cmp.holds(c.count(&profile.activity, now), c.value),
            Rule::LifetimeValue(v) => {
                let have = profile.lifetime_value.get(&v.currency).copied();
                v.cmp.holds(have.unwrap_or(0), v.minor)
            }
        }
    }

    /// Adds the rule's `within` windows (in hours) to `out`.
    pub fn windows(&self, out: &mut BTreeSet<u32>) {
        match self {
            Rule::And { all: rules } | Rule::Or { any: rules } => {
                rules.iter().for_each(|r| r.windows(out));
            }
            Rule::Not { rule } => rule.windows(out),
            Rule::Count(c) => out.extend(c.within.map(|w| w.hours)),
            Rule::LifetimeValue(_) => {}
        }
    }

    fn write(&self, f: &mut fmt::Formatter<'_>, nested: bool) -> fmt::Result {
        let list = |f: &mut fmt::Formatter<'_>, rules: &[Rule], word: &str| -> fmt::Result {
            if nested {
                f.write_str("(")?;
            }
            for (i, r) in rules.iter().enumerate() {
                if i > 0 {
                    write!(f, " {word} ")?;
                }
                r.write(f, true)?;
            }
            if nested {
                f.write_str(")")?;
            }
            Ok(())
        };
        match self {
            Rule::And { all } => list(f, all, "and"),
            Rule::Or { any } => list(f, any, "or"),
            Rule::Not { rule } => {
                f.write_str("not ")?;
                rule.write(f, true)
            }
            Rule::Count(c) => {
                f.write_str(c.fact.name())?;
                if let Some(filter) = &c.filter {
                    write!(f, "({} = {})", filter.field, quoted(&filter.value))?;
                }
                if let Some(w) = c.within {
                    if w.hours % 24 == 0 {
                        write!(f, " within {}d", w.hours / 24)?;
                    } else {
                        write!(f, " within {}h", w.hours)?;
                    }
                }
                write!(f, " {} {}", c.cmp.symbol(), c.value)
            }
            Rule::LifetimeValue(v) => {
                let amount = crate::money::Currency::parse(&v.currency)
                    .map(|c| crate::money::Money::new(v.minor, c).to_decimal_string())
                    .unwrap_or_else(|_| v.minor.to_string());
                write!(
                    f,
                    "lifetime_value({}) {} {amount}",
                    quoted(&v.currency),
                    v.cmp.symbol()
                )
            }
        }
    }
}

fn quoted(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The rule in canonical form: it parses back to the same rule.
impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f, false)
    }
}

impl Count {
    /// The events this condition counts in `activity` at `now`.
    pub fn count(&self, activity: &Activity, now: OffsetDateTime) -> u64 {
        let key = fact_key(
            self.fact,
            self.filter
                .as_ref()
                .map(|f| (f.field.as_str(), f.value.as_str())),
        );
        match self.within {
            None => activity.totals.get(&key).copied().unwrap_or(0),
            Some(w) => {
                let from = hour_of(now).saturating_sub(w.hours);
                activity
                    .hours
                    .range(from..)
                    .filter_map(|(_, facts)| facts.get(&key))
                    .map(|n| u64::from(*n))
                    .sum()
            }
        }
    }
}

/// A live segment as evaluation sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveSegment {
    /// The segment's id (stable across rule changes; a new segment with a deleted one's key
    /// gets a new id).
    pub id: String,
    pub key: String,
    pub rule: Rule,
}

/// A profile's membership of one segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    pub key: String,
    #[serde(with = "time::serde::rfc3339")]
    pub entered_at: OffsetDateTime,
}

/// What [`reconcile`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Segment ids entered.
    pub entered: Vec<String>,
    /// Segment ids left (including segments no longer live).
    pub left: Vec<String>,
    /// The earliest time at which time passing alone could change a membership (now also in
    /// `profile.segments_due`).
    pub due: Option<OffsetDateTime>,
    /// `profile.segments_due` before.
    pub previous_due: Option<OffsetDateTime>,
}

impl Reconciled {
    /// Whether the profile changed.
    pub fn changed(&self) -> bool {
        !self.entered.is_empty() || !self.left.is_empty() || self.due != self.previous_due
    }
}

/// Evaluates every live segment for `profile` at `now`: updates `profile.memberships` (with
/// `entered_at` kept for continuing ones), `profile.segments` (the keys, sorted) and
/// `profile.segments_due`.
pub fn reconcile(profile: &mut Profile, live: &[LiveSegment], now: OffsetDateTime) -> Reconciled {
    let mut out = Reconciled::default();
    let mut next: BTreeMap<String, Membership> = BTreeMap::new();
    let mut windows = BTreeSet::new();
    for s in live {
        s.rule.windows(&mut windows);
        if !s.rule.matches(profile, now) {
            continue;
        }
        let membership = match profile.memberships.get(&s.id) {
            Some(m) => Membership {
                key: s.key.clone(),
                entered_at: m.entered_at,
            },
            None => {
                out.entered.push(s.id.clone());
                Membership {
                    key: s.key.clone(),
                    entered_at: now,
                }
            }
        };
        next.insert(s.id.clone(), membership);
    }
    out.left = profile
        .memberships
        .keys()
        .filter(|id| !next.contains_key(*id))
        .cloned()
        .collect();
    let mut keys: Vec<String> = next.values().map(|m| m.key.clone()).collect();
    keys.sort();
    keys.dedup();
    profile.memberships = next;
    profile.segments = keys;
    out.due = due(&profile.activity, &windows, now);
    out.previous_due = std::mem::replace(&mut profile.segments_due, out.due);
    out
}

/// When the next hourly bucket inside one of `windows` leaves it: the earliest moment a
/// windowed count can drop without a new event.
fn due(
    activity: &Activity,
    windows: &BTreeSet<u32>,
    now: OffsetDateTime,
) -> Option<OffsetDateTime> {
    let now_hour = hour_of(now);
    windows
        .iter()
        .filter_map(|w| {
            let (oldest, _) = activity.hours.range(now_hour.saturating_sub(*w)..).next()?;
            // Bucket `oldest` stops counting once the current hour passes `oldest + w`.
            let leaves = (i64::from(*oldest) + i64::from(*w) + 1) * 3600;
            OffsetDateTime::from_unix_timestamp(leaves).ok()
        })
        .min()
}
