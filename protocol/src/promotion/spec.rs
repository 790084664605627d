//! A promotion's definition ([`PromotionSpec`]): its conditions, its benefit, how it combines and
//! its limits. The JSON of a spec is the `definition` of an ERP promotion row
//! ([`crate::feed::PromotionRow`]); unknown fields are refused so a typo is an error, not a
//! promotion that silently ignores half of its definition.

use super::engine::PromoLine;
use crate::catalog::CategoryId;
use crate::channel::Channel;
use crate::ids::{LocationId, Sku};
use crate::money::Money;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use time::OffsetDateTime;

/// What is wrong with a proposed promotion id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid promotion id '{0}': use 1 to 64 characters from A-Z, a-z, 0-9, '-', '_' and '.'")]
pub struct PromotionIdError(pub String);

/// A promotion's code in the ERP or the back office: 1–64 characters of `[A-Za-z0-9._-]`.
/// On the wire it is a plain string, checked when read.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PromotionId(pub String);

impl PromotionId {
    pub fn parse(text: &str) -> Result<PromotionId, PromotionIdError> {
        let ok = (1..=64).contains(&text.len())
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if ok {
            Ok(PromotionId(text.to_string()))
        } else {
            Err(PromotionIdError(text.chars().take(80).collect()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PromotionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for PromotionId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for PromotionId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        PromotionId::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A promotion's definition: when it applies, what it gives, how it combines with others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromotionSpec {
    /// All must hold (none: always).
    #[serde(default)]
    pub conditions: Vec<Condition>,
    pub benefit: Benefit,
    #[serde(default)]
    pub combination: Combination,
    /// Higher applies first and wins ties.
    #[serde(default)]
    pub priority: i32,
    #[serde(default)]
    pub limits: Limits,
}

impl PromotionSpec {
    /// Reads a spec from its JSON (an ERP row's `definition`); use it for any text from
    /// outside, then [`super::validate`]. Besides serde's checks it refuses fields on the
    /// variants that take none (`first_order`, `coupon`, `free_shipping`, `exclusive`), which
    /// serde's internally tagged enums would silently ignore.
    pub fn from_json(text: &str) -> Result<PromotionSpec, serde_json::Error> {
        let value: serde_json::Value = serde_json::from_str(text)?;
        if let Some(conditions) = value.get("conditions").and_then(|c| c.as_array()) {
            for condition in conditions {
                no_fields(condition, &["first_order", "coupon"], "condition")?;
            }
        }
        if let Some(benefit) = value.get("benefit") {
            no_fields(benefit, &["free_shipping"], "benefit")?;
        }
        if let Some(combination) = value.get("combination") {
            no_fields(combination, &["exclusive"], "combination")?;
        }
        serde_json::from_value(value)
    }

    /// Every amount of money in the spec (conditions, tiers, benefit), for the currency checks.
    pub fn amounts(&self) -> Vec<Money> {
        let mut out = Vec::new();
        for c in &self.conditions {
            if let Condition::MinSubtotal { amount } = c {
                out.push(*amount);
            }
        }
        match &self.benefit {
            Benefit::AmountOff { amount, .. }
            | Benefit::AmountOffEach { amount, .. }
            | Benefit::AmountOffBasket { amount } => out.push(*amount),
            Benefit::FixedPrice { price, .. } => out.push(*price),
            Benefit::Tiered { tiers, .. } => {
                out.extend(tiers.iter().filter_map(|t| t.min_subtotal))
            }
            Benefit::PercentOff { .. }
            | Benefit::PercentOffBasket { .. }
            | Benefit::BuyXGetY { .. }
            | Benefit::FreeShipping
            | Benefit::FreeGift { .. } => {}
        }
        out
    }
}

/// Refuses an object whose `type` is one of `units` (variants without fields) if it has fields.
fn no_fields(
    object: &serde_json::Value,
    units: &[&str],
    what: &str,
) -> Result<(), serde_json::Error> {
    let Some(map) = object.as_object() else {
        return Ok(());
    };
    let Some(kind) = map.get("type").and_then(|t| t.as_str()) else {
        return Ok(());
    };
    match map.keys().find(|k| *k != "type") {
        Some(extra) if units.contains(&kind) => Err(serde::de::Error::custom(format!(
            "unknown field `{extra}`: a {what} of type `{kind}` takes no fields"
        ))),
        _ => Ok(()),
    }
}

/// A promotion as the engine sees it: its id, display name and definition, and its age.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Promotion {
    pub id: PromotionId,
    pub name: String,
    pub spec: PromotionSpec,
    /// When it was created, as a sequence: lower is older; the older wins a tie.
    pub created_seq: u64,
}

/// One condition of a promotion. Thresholds compare shelf prices, before any promotion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Condition {
    /// The basket's subtotal is at least `amount`.
    MinSubtotal { amount: Money },
    /// At least `quantity` units of the `target` lines.
    MinQuantity {
        quantity: u32,
        #[serde(default)]
        target: Target,
    },
    /// One of these SKUs is in the basket.
    Skus { skus: Vec<Sku> },
    /// A product of one of these categories is in the basket.
    Categories { categories: Vec<CategoryId> },
    /// A product of one of these brands (exact spelling) is in the basket.
    Brands { brands: Vec<String> },
    /// The customer belongs to one of these segments.
    Segment { any_of: Vec<String> },
    /// The basket is priced on one of these channels.
    Channel { any_of: Vec<Channel> },
    /// The basket is priced in one of these stores.
    Store { any_of: Vec<LocationId> },
    /// The time (UTC) is within `[from, until)`, on one of `weekdays` (empty: every day), and
    /// within the daily minutes `[from_minute, until_minute)` (a range with `from_minute` after
    /// `until_minute` runs over midnight).
    Window {
        #[serde(default, with = "time::serde::rfc3339::option")]
        from: Option<OffsetDateTime>,
        #[serde(default, with = "time::serde::rfc3339::option")]
        until: Option<OffsetDateTime>,
        #[serde(default, with = "weekdays")]
        weekdays: Vec<time::Weekday>,
        #[serde(default)]
        from_minute: Option<u16>,
        #[serde(default)]
        until_minute: Option<u16>,
    },
    /// The customer has never ordered before.
    FirstOrder,
    /// A valid coupon for this promotion was presented.
    Coupon,
    /// The shopper is assigned one of `variants` of the running A/B test `experiment` (see
    /// [`PromotionContext::experiments`](super::PromotionContext::experiments)).
    Experiment {
        experiment: String,
        variants: Vec<String>,
    },
}

/// Which basket lines a condition or benefit is about.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Target {
    #[default]
    All,
    Skus {
        skus: Vec<Sku>,
    },
    Categories {
        categories: Vec<CategoryId>,
    },
    Brands {
        brands: Vec<String>,
    },
}

impl Target {
    /// Whether `line` is one of the target lines.
    pub fn matches(&self, line: &PromoLine) -> bool {
        match self {
            Target::All => true,
            Target::Skus { skus } => skus.contains(&line.sku),
            Target::Categories { categories } => categories.contains(&line.category),
            Target::Brands { brands } => brands.contains(&line.brand),
        }
    }
}

/// What a promotion gives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Benefit {
    /// `percent_bp` basis points (10000 = 100 %) off the target lines.
    PercentOff {
        target: Target,
        percent_bp: u32,
    },
    /// `amount` off the target lines' total.
    AmountOff {
        target: Target,
        amount: Money,
    },
    /// `amount` off each unit of the target lines.
    AmountOffEach {
        target: Target,
        amount: Money,
    },
    /// `percent_bp` off the whole basket.
    PercentOffBasket {
        percent_bp: u32,
    },
    /// `amount` off the whole basket.
    AmountOffBasket {
        amount: Money,
    },
    /// Each unit of the target lines costs `price` (where it cost more).
    FixedPrice {
        target: Target,
        price: Money,
    },
    /// For every `buy_quantity` units of `buy` bought, `get_quantity` units of `get` get
    /// `percent_bp` off (10000 = free): the cheapest eligible units; repeats up to
    /// `limits.per_order` times.
    BuyXGetY {
        buy: Target,
        buy_quantity: u32,
        get: Target,
        get_quantity: u32,
        percent_bp: u32,
    },
    /// A percentage off the target lines by tier: the best tier reached applies.
    Tiered {
        target: Target,
        tiers: Vec<Tier>,
    },
    FreeShipping,
    /// `quantity` units of `sku` added for free.
    FreeGift {
        sku: Sku,
        quantity: u32,
    },
}

/// One tier of [`Benefit::Tiered`]: reached when every threshold given is met by the target
/// lines (units, and subtotal at shelf prices).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    #[serde(default)]
    pub min_quantity: Option<u32>,
    #[serde(default)]
    pub min_subtotal: Option<Money>,
    pub percent_bp: u32,
}

/// How a promotion combines with others (see the module docs for the rule).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Combination {
    /// Applies alone or not at all.
    Exclusive,
    /// Stacks with promotions of other groups; within a group only the first applies.
    Stackable {
        #[serde(default = "default_group")]
        group: String,
    },
}

fn default_group() -> String {
    "default".to_string()
}

impl Default for Combination {
    fn default() -> Self {
        Combination::Stackable {
            group: default_group(),
        }
    }
}

/// How often a promotion may apply.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Applications in one order (the repeats of a buy-X-get-Y).
    pub per_order: Option<u32>,
    /// Orders per customer.
    pub per_customer: Option<u32>,
    /// Orders in total.
    pub total: Option<u64>,
}

/// Weekdays as lower-case English names (`"monday"`); read also as three-letter names in any
/// case, or as numbers from 1 (Monday) to 7 (Sunday).
mod weekdays {
    use serde::de::{self, SeqAccess, Visitor};
    use serde::ser::SerializeSeq;
    use serde::{Deserializer, Serializer};
    use std::fmt;
    use time::Weekday;

    const NAMES: [(&str, Weekday); 7] = [
        ("monday", Weekday::Monday),
        ("tuesday", Weekday::Tuesday),
        ("wednesday", Weekday::Wednesday),
        ("thursday", Weekday::Thursday),
        ("friday", Weekday::Friday),
        ("saturday", Weekday::Saturday),
        ("sunday", Weekday::Sunday),
    ];

    pub fn name(day: Weekday) -> &'static str {
        NAMES
            .iter()
            .find(|(_, d)| *d == day)
            .map_or("monday", |(n, _)| n)
    }

    pub fn serialize<S: Serializer>(days: &[Weekday], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(days.len()))?;
        for day in days {
            seq.serialize_element(name(*day))?;
        }
        seq.end()
    }

    struct Day;

    impl<'de> Visitor<'de> for Day {
        type Value = Weekday;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a weekday such as \"monday\" or \"mon\", or a number from 1 (Monday) to 7")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Weekday, E> {
            let lower = v.trim().to_ascii_lowercase();
            NAMES
                .iter()
                .find(|(n, _)| *n == lower || (lower.len() == 3 && n.starts_with(&lower)))
                .map(|(_, d)| *d)
                .ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self))
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Weekday, E> {
            match v {
                1..=7 => Ok(NAMES[(v - 1) as usize].1),
                _ => Err(E::invalid_value(de::Unexpected::Unsigned(v), &self)),
            }
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Weekday, E> {
            match u64::try_from(v) {
                Ok(v) => self.visit_u64(v),
                Err(_) => Err(E::invalid_value(de::Unexpected::Signed(v), &self)),
            }
        }
    }

    struct Days;

    impl<'de> Visitor<'de> for Days {
        type Value = Vec<Weekday>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of weekdays")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Weekday>, A::Error> {
            let mut out = Vec::new();
            while let Some(day) = seq.next_element_seed(DaySeed)? {
                out.push(day);
            }
            Ok(out)
        }
    }

    struct DaySeed;

    impl<'de> de::DeserializeSeed<'de> for DaySeed {
        type Value = Weekday;

        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Weekday, D::Error> {
            d.deserialize_any(Day)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Weekday>, D::Error> {
        d.deserialize_seq(Days)
    }
}

pub(crate) use weekdays::name as weekday_name;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promotion_ids_are_checked() {
        for good in ["P1", "SUMMER-2026", "a.b_c", &"x".repeat(64)] {
            assert!(PromotionId::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "has space", "ünï", &"x".repeat(65)] {
            assert!(PromotionId::parse(bad).is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<PromotionId>("\"no way\"").is_err());
    }

    #[test]
    fn a_spec_reads_with_defaults_and_refuses_unknown_fields() {
        let spec = PromotionSpec::from_json(
            r#"{"benefit": {"type": "percent_off_basket", "percent_bp": 1000}}"#,
        )
        .expect("reads");
        assert_eq!(spec.combination, Combination::default());
        assert_eq!((spec.priority, spec.limits.clone()), (0, Limits::default()));
        assert!(spec.conditions.is_empty());
        for bad in [
            r#"{"benefit": {"type": "free_shipping"}, "prio": 1}"#,
            r#"{"benefit": {"type": "percent_off_basket", "percent_bp": 10, "extra": 1}}"#,
            r#"{"benefit": {"type": "free_shipping"}, "conditions": [{"type": "coupon", "code": "X"}]}"#,
            r#"{"benefit": {"type": "half_price"}}"#,
            r#"{"benefit": {"type": "free_shipping", "min_subtotal": 5000}}"#,
            r#"{"benefit": {"type": "free_shipping"}, "combination": {"type": "exclusive", "group": "a"}}"#,
        ] {
            assert!(PromotionSpec::from_json(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_window_round_trips_with_weekday_names_and_numbers() {
        let json = r#"{"benefit": {"type": "free_shipping"}, "conditions": [
            {"type": "window", "from": "2026-01-01T00:00:00Z", "weekdays": ["Sat", 7, "monday"],
             "from_minute": 540, "until_minute": 720}]}"#;
        let spec = PromotionSpec::from_json(json).expect("reads");
        let Condition::Window { weekdays, from, .. } = &spec.conditions[0] else {
            panic!("a window: {spec:?}");
        };
        assert_eq!(
            weekdays,
            &[
                time::Weekday::Saturday,
                time::Weekday::Sunday,
                time::Weekday::Monday
            ]
        );
        assert!(from.is_some());
        let again = serde_json::to_string(&spec).expect("writes");
        assert!(again.contains(r#""weekdays":["saturday","sunday","monday"]"#));
        assert_eq!(PromotionSpec::from_json(&again).expect("reads back"), spec);
        let bad = json.replace("\"Sat\"", "\"someday\"");
        assert!(PromotionSpec::from_json(&bad).is_err());
    }

    #[test]
    fn a_spec_round_trips_through_the_codec_format() {
        let json = r#"{"benefit": {"type": "buy_x_get_y", "buy": {"type": "all"}, "buy_quantity": 2,
            "get": {"type": "categories", "categories": ["mugs"]}, "get_quantity": 1, "percent_bp": 10000},
            "combination": {"type": "exclusive"}, "priority": 5, "limits": {"per_order": 2}}"#;
        let spec = PromotionSpec::from_json(json).expect("reads");
        let bytes = rmp_serde::to_vec_named(&spec).expect("encodes");
        let back: PromotionSpec = rmp_serde::from_slice(&bytes).expect("decodes");
        assert_eq!(back, spec);
    }
}
