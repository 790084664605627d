//! Content slots: a place on a channel (the storefront's home hero, a product page's
//! recommendations, an item on an in-store board, a block in marketing emails) with ordered
//! variants and a default. A variant targets audience segments (any of them; none: everyone),
//! channels (none: every channel) and a time window; the first variant that matches a request
//! wins, else the default.
//!
//! A variant may also be bound to a variant of an A/B test (`targeting.experiment`): it then
//! shows only to shoppers assigned that experiment variant (`docs/experiments.md`).
//!
//! [`SlotSpec::parse`] checks a slot as a marketer sends it (JSON) and reports **every**
//! problem with its JSON path (`variants[2].targeting.channels[0]`) and what to fix;
//! [`resolve`] picks the variant and says why ([`resolve_with`] with the shopper's experiment
//! variants).

use crate::board::{is_plain_id, BoardItem, BoardPlaylist};
use crate::channel::Channel;
use crate::checkout::FieldError;
use crate::codec::Stored;
use crate::ids::Sku;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Variants in one slot at most.
pub const MAX_VARIANTS: usize = 20;
/// Segments or channels one variant targets at most.
pub const MAX_TARGETS: usize = 20;
/// Products a recommendation shows at most, and SKUs a `skus` list holds at most.
pub const MAX_COUNT: u32 = 20;
/// The longest title.
pub const MAX_TITLE: usize = 120;
/// The longest text.
pub const MAX_TEXT: usize = 500;
/// The longest link or image URL.
pub const MAX_URL: usize = 500;

/// The slots there are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlotName {
    /// The storefront home page's hero.
    HomeHero,
    /// The products a product page recommends.
    ProductRecommendations,
    /// An item added to an in-store board's playlist for a consenting shopper.
    BoardItem,
    /// A block in marketing emails (abandoned basket, back in stock, win-back).
    EmailBlock,
}

impl SlotName {
    pub const ALL: [SlotName; 4] = [
        SlotName::HomeHero,
        SlotName::ProductRecommendations,
        SlotName::BoardItem,
        SlotName::EmailBlock,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SlotName::HomeHero => "home_hero",
            SlotName::ProductRecommendations => "product_recommendations",
            SlotName::BoardItem => "board_item",
            SlotName::EmailBlock => "email_block",
        }
    }

    pub fn parse(text: &str) -> Option<SlotName> {
        SlotName::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Every slot name, for messages.
    pub fn names() -> String {
        SlotName::ALL.map(SlotName::as_str).join(", ")
    }
}

/// A channel a variant may target: the interaction channels plus email.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlotChannel {
    Web,
    Mobile,
    Pos,
    Board,
    Voice,
    Chat,
    Email,
}

impl SlotChannel {
    pub const ALL: [SlotChannel; 7] = [
        SlotChannel::Web,
        SlotChannel::Mobile,
        SlotChannel::Pos,
        SlotChannel::Board,
        SlotChannel::Voice,
        SlotChannel::Chat,
        SlotChannel::Email,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SlotChannel::Web => "web",
            SlotChannel::Mobile => "mobile",
            SlotChannel::Pos => "pos",
            SlotChannel::Board => "board",
            SlotChannel::Voice => "voice",
            SlotChannel::Chat => "chat",
            SlotChannel::Email => "email",
        }
    }

    pub fn parse(text: &str) -> Option<SlotChannel> {
        SlotChannel::ALL.into_iter().find(|c| c.as_str() == text)
    }

    /// Every channel name, for messages.
    pub fn names() -> String {
        SlotChannel::ALL.map(SlotChannel::as_str).join(", ")
    }

    /// The slot channel of an interaction channel (`None` for one newer than this code).
    pub fn of(channel: Channel) -> Option<SlotChannel> {
        Some(match channel {
            Channel::Web => SlotChannel::Web,
            Channel::Mobile => SlotChannel::Mobile,
            Channel::Pos => SlotChannel::Pos,
            Channel::Board => SlotChannel::Board,
            Channel::Voice => SlotChannel::Voice,
            Channel::Chat => SlotChannel::Chat,
            Channel::Unknown => return None,
        })
    }
}

/// Who and when a variant is for.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Targeting {
    /// Segment keys, any of which matches; empty: everyone. Keys are free: a segment that does
    /// not exist (yet) matches no one.
    #[serde(default)]
    pub segments: Vec<String>,
    /// Empty: every channel.
    #[serde(default)]
    pub channels: Vec<SlotChannel>,
    /// From this time on (inclusive).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub from: Option<OffsetDateTime>,
    /// Until this time (exclusive).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub until: Option<OffsetDateTime>,
    /// Only for shoppers assigned this variant of this experiment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<ExperimentBinding>,
}

/// A slot variant bound to a variant of an A/B test.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExperimentBinding {
    /// The experiment's key.
    pub id: String,
    /// The key of one of its variants.
    pub variant: String,
}

/// The home page's hero: a title, a text, a picture (an image, or the product's) and a link
/// (given, or the product's page).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hero {
    pub title: String,
    #[serde(default)]
    pub text: String,
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub sku: Option<Sku>,
    #[serde(default)]
    pub link: Option<String>,
}

/// How a recommendation picks products.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Products ordered together with this one.
    BoughtTogether,
    /// Products viewed by the same shopper in the same session as this one.
    ViewedTogether,
    /// The best sellers.
    TopProducts,
    /// A fixed list.
    Skus,
}

impl Strategy {
    pub const ALL: [Strategy; 4] = [
        Strategy::BoughtTogether,
        Strategy::ViewedTogether,
        Strategy::TopProducts,
        Strategy::Skus,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::BoughtTogether => "bought_together",
            Strategy::ViewedTogether => "viewed_together",
            Strategy::TopProducts => "top_products",
            Strategy::Skus => "skus",
        }
    }

    fn parse(text: &str) -> Option<Strategy> {
        Strategy::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// The heading a page shows when the slot gives none.
    pub fn default_title(self) -> &'static str {
        match self {
            Strategy::BoughtTogether => "Customers also bought",
            Strategy::ViewedTogether | Strategy::TopProducts | Strategy::Skus => {
                "You may also like"
            }
        }
    }
}

/// Products a product page recommends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recommendations {
    pub strategy: Strategy,
    /// How many products at most (1 to [`MAX_COUNT`]).
    pub count: u32,
    /// The list, for strategy `skus`.
    #[serde(default)]
    pub skus: Vec<Sku>,
    /// The heading (default: [`Strategy::default_title`]).
    #[serde(default)]
    pub title: Option<String>,
}

/// A block in marketing emails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailBlock {
    pub title: String,
    #[serde(default)]
    pub text: String,
    #[serde(default)]
    pub link: Option<String>,
}

/// What a variant shows; its kind is the slot's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Content {
    Hero(Hero),
    Recommendations(Recommendations),
    BoardItem(BoardItem),
    EmailBlock(EmailBlock),
}

impl Content {
    /// Every SKU the content names.
    pub fn skus(&self) -> Vec<&Sku> {
        match self {
            Content::Hero(h) => h.sku.iter().collect(),
            Content::Recommendations(r) => r.skus.iter().collect(),
            Content::BoardItem(b) => b.sku.iter().collect(),
            Content::EmailBlock(_) => Vec::new(),
        }
    }
}

/// One variant of a slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Variant {
    /// Unique in the slot (letters, digits, `-`, `_`): reports and impressions name it.
    pub id: String,
    #[serde(default)]
    pub targeting: Targeting,
    pub content: Content,
}

/// A slot's variants, in order, and its default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotSpec {
    pub variants: Vec<Variant>,
    pub default: Content,
}

/// A slot as stored: its spec and who changed it when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotRecord {
    pub slot: SlotName,
    pub spec: SlotSpec,
    /// 1 for the first version, one more at every change.
    pub version: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// A back-office user id or `admin-token`.
    pub updated_by: String,
}

impl Stored for SlotRecord {
    const KIND: &'static str = "slot";
    const VERSION: u16 = 1;
}

/// What a slot is asked for.
#[derive(Debug, Clone, Copy)]
pub struct SlotRequest<'a> {
    pub channel: SlotChannel,
    /// The shopper's segment keys (none for an anonymous shopper outside every segment).
    pub segments: &'a [String],
    pub now: OffsetDateTime,
}

/// The variant picked for a request and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution<'a> {
    /// The variant (`None`: the default).
    pub variant: Option<&'a Variant>,
    /// Its position in the slot, from 1.
    pub position: Option<usize>,
    pub content: &'a Content,
    /// A stable code: `segment_matched`, `everyone`, `experiment`, `schedule_ended`,
    /// `schedule_not_started` or `no_variant_matched`.
    pub code: &'static str,
    /// A sentence for people, e.g. "segment coffee-lovers matched (variant 2, coffee)".
    pub reason: String,
    /// The experiment and variant the shopper was found in while resolving (the first one
    /// asked), whether or not a slot variant bound to it was picked.
    pub experiment: Option<(String, String)>,
}

impl Resolution<'_> {
    /// The variant's id, or `default`.
    pub fn variant_id(&self) -> &str {
        self.variant.map_or("default", |v| v.id.as_str())
    }
}

/// Why a variant does not apply to a request (`None`: it applies).
enum Miss {
    Segment,
    Channel,
    NotStarted(OffsetDateTime),
    Ended(OffsetDateTime),
    /// Bound to an experiment variant the shopper is not assigned.
    Experiment,
}

/// What matched a variant: the segment (`None`: it targets everyone) and the experiment
/// variant it is bound to.
type Matched = (Option<String>, Option<(String, String)>);

/// Checks a variant; the experiment (the shopper's variant of it, `None`: not in it) is asked
/// last, only when everything else matches, so asking is showing.
fn check(
    v: &Variant,
    req: &SlotRequest<'_>,
    experiment: &mut dyn FnMut(&str) -> Option<String>,
    seen: &mut Option<(String, String)>,
) -> Result<Matched, Miss> {
    let t = &v.targeting;
    let segment = if t.segments.is_empty() {
        None
    } else {
        match t.segments.iter().find(|s| req.segments.contains(s)) {
            Some(s) => Some(s.clone()),
            None => return Err(Miss::Segment),
        }
    };
    if !t.channels.is_empty() && !t.channels.contains(&req.channel) {
        return Err(Miss::Channel);
    }
    if let Some(from) = t.from.filter(|f| req.now < *f) {
        return Err(Miss::NotStarted(from));
    }
    if let Some(until) = t.until.filter(|u| req.now >= *u) {
        return Err(Miss::Ended(until));
    }
    let Some(binding) = &t.experiment else {
        return Ok((segment, None));
    };
    let Some(assigned) = experiment(&binding.id) else {
        return Err(Miss::Experiment);
    };
    if seen.is_none() {
        *seen = Some((binding.id.clone(), assigned.clone()));
    }
    if assigned != binding.variant {
        return Err(Miss::Experiment);
    }
    Ok((segment, Some((binding.id.clone(), assigned))))
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

/// The first variant that matches the request, else the default, with the reason. A variant
/// matches when the shopper is in one of its segments (or it names none), the channel is one of
/// its channels (or it names none) and the time is in its window.
/// Variants bound to an experiment never match here: see [`resolve_with`].
pub fn resolve<'a>(spec: &'a SlotSpec, req: &SlotRequest<'_>) -> Resolution<'a> {
    resolve_with(spec, req, &mut |_| None)
}

/// [`resolve`] for a shopper in experiments: `experiment` answers the shopper's variant of an
/// experiment (`None`: not in it, e.g. not running or outside its audience). It is asked only
/// for a slot variant whose segments, channel and schedule match, in order, so an answer means
/// the shopper sees that experiment's content (its variant, or what its control gets): the
/// caller records the exposure there.
pub fn resolve_with<'a>(
    spec: &'a SlotSpec,
    req: &SlotRequest<'_>,
    experiment: &mut dyn FnMut(&str) -> Option<String>,
) -> Resolution<'a> {
    // The first variant missed only by its schedule explains the default best.
    let mut scheduled_out: Option<(usize, &Variant, Miss)> = None;
    let mut seen: Option<(String, String)> = None;
    for (i, v) in spec.variants.iter().enumerate() {
        let position = i + 1;
        match check(v, req, experiment, &mut seen) {
            Ok((segment, bound)) => {
                let (code, reason) = match (segment, &bound) {
                    (Some(s), Some((e, ev))) => (
                        "experiment",
                        format!(
                            "experiment {e} variant {ev}, segment {s} matched (variant {position}, {})",
                            v.id
                        ),
                    ),
                    (None, Some((e, ev))) => (
                        "experiment",
                        format!("experiment {e} variant {ev} (variant {position}, {})", v.id),
                    ),
                    (Some(s), None) => (
                        "segment_matched",
                        format!("segment {s} matched (variant {position}, {})", v.id),
                    ),
                    (None, None) => (
                        "everyone",
                        format!(
                            "variant {position} ({}) targets everyone on {}",
                            v.id,
                            req.channel.as_str()
                        ),
                    ),
                };
                return Resolution {
                    variant: Some(v),
                    position: Some(position),
                    content: &v.content,
                    code,
                    reason,
                    experiment: bound.or(seen),
                };
            }
            Err(m @ (Miss::NotStarted(_) | Miss::Ended(_))) if scheduled_out.is_none() => {
                scheduled_out = Some((position, v, m));
            }
            Err(_) => {}
        }
    }
    let (code, reason) = match scheduled_out {
        Some((position, v, Miss::Ended(until))) => (
            "schedule_ended",
            format!(
                "default: variant {position} ({}) matched but its schedule ended at {}",
                v.id,
                rfc3339(until)
            ),
        ),
        Some((position, v, Miss::NotStarted(from))) => (
            "schedule_not_started",
            format!(
                "default: variant {position} ({}) matched but its schedule starts at {}",
                v.id,
                rfc3339(from)
            ),
        ),
        _ => match &seen {
            Some((e, ev)) => (
                "experiment",
                format!("default: experiment {e} variant {ev}"),
            ),
            None => (
                "no_variant_matched",
                "default: no variant matched".to_string(),
            ),
        },
    };
    Resolution {
        variant: None,
        position: None,
        content: &spec.default,
        code,
        reason,
        experiment: seen,
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing and validation.
// ---------------------------------------------------------------------------------------------

/// Collects problems with their JSON paths.
struct Checker<'k> {
    errors: Vec<FieldError>,
    known_sku: &'k dyn Fn(&Sku) -> bool,
    experiments: &'k dyn Fn(&str) -> Result<Vec<String>, String>,
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

impl Checker<'_> {
    fn error(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push(FieldError::new(path, message));
    }

    fn reported(&self, path: &str) -> bool {
        self.errors.iter().any(|e| e.field == path)
    }

    /// The object at `path`, with unknown keys reported.
    fn object<'v>(
        &mut self,
        path: &str,
        value: &'v Value,
        keys: &[&str],
    ) -> Option<&'v Map<String, Value>> {
        let Value::Object(map) = value else {
            self.error(
                path,
                format!("expected an object, found {}", kind_of(value)),
            );
            return None;
        };
        for key in map.keys().filter(|k| !keys.contains(&k.as_str())) {
            self.error(
                &join(path, key),
                format!("unknown field: use {}", keys.join(", ")),
            );
        }
        Some(map)
    }

    /// A string field; `None` when absent (reported if `required`) or wrong.
    fn text(
        &mut self,
        map: &Map<String, Value>,
        path: &str,
        key: &str,
        required: bool,
        max: usize,
    ) -> Option<String> {
        let p = join(path, key);
        match map.get(key) {
            None | Some(Value::Null) => {
                if required {
                    self.error(&p, "required");
                }
                None
            }
            Some(Value::String(s)) => {
                let s = s.trim();
                if required && s.is_empty() {
                    self.error(&p, "must not be empty");
                    None
                } else if s.chars().count() > max {
                    self.error(&p, format!("at most {max} characters"));
                    None
                } else {
                    Some(s.to_string())
                }
            }
            Some(other) => {
                self.error(&p, format!("expected a string, found {}", kind_of(other)));
                None
            }
        }
    }

    /// A link or image: a path on this site (`/…`) or an `http(s)://` URL.
    fn url(&mut self, map: &Map<String, Value>, path: &str, key: &str) -> Option<String> {
        let url = self.text(map, path, key, false, MAX_URL)?;
        let scheme = (url.starts_with('/') && !url.starts_with("//"))
            || url.starts_with("https://")
            || url.starts_with("http://");
        if url.is_empty() {
            None
        } else if !scheme || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            self.error(
                &join(path, key),
                "a path on this site such as /c/coffee, or an http(s):// URL, without spaces",
            );
            None
        } else {
            Some(url)
        }
    }

    /// A SKU of the catalog.
    fn sku(&mut self, path: &str, value: &Value) -> Option<Sku> {
        let Value::String(text) = value else {
            self.error(
                path,
                format!("expected a SKU (a string), found {}", kind_of(value)),
            );
            return None;
        };
        match Sku::parse(text) {
            Ok(sku) if (self.known_sku)(&sku) => Some(sku),
            Ok(sku) => {
                self.error(
                    path,
                    format!("unknown SKU '{sku}': use a SKU of the catalog"),
                );
                None
            }
            Err(e) => {
                self.error(path, e.to_string());
                None
            }
        }
    }

    fn optional_sku(&mut self, map: &Map<String, Value>, path: &str, key: &str) -> Option<Sku> {
        match map.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => self.sku(&join(path, key), v),
        }
    }

    /// A whole number in `range`.
    fn number(
        &mut self,
        map: &Map<String, Value>,
        path: &str,
        key: &str,
        range: std::ops::RangeInclusive<u32>,
    ) -> Option<u32> {
        let p = join(path, key);
        let value = map.get(key).filter(|v| !v.is_null())?;
        match value.as_u64().and_then(|n| u32::try_from(n).ok()) {
            Some(n) if range.contains(&n) => Some(n),
            _ => {
                self.error(
                    &p,
                    format!("a whole number from {} to {}", range.start(), range.end()),
                );
                None
            }
        }
    }

    fn list<'v>(
        &mut self,
        map: &'v Map<String, Value>,
        path: &str,
        key: &str,
        max: usize,
    ) -> &'v [Value] {
        let p = join(path, key);
        match map.get(key) {
            None | Some(Value::Null) => &[],
            Some(Value::Array(items)) => {
                if items.len() > max {
                    self.error(&p, format!("at most {max} entries"));
                }
                items
            }
            Some(other) => {
                self.error(&p, format!("expected a list, found {}", kind_of(other)));
                &[]
            }
        }
    }

    fn time(&mut self, map: &Map<String, Value>, path: &str, key: &str) -> Option<OffsetDateTime> {
        let p = join(path, key);
        match map.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => match OffsetDateTime::parse(s, &Rfc3339) {
                Ok(t) => Some(t),
                Err(_) => {
                    self.error(&p, "a time such as 2026-05-01T00:00:00Z (RFC 3339)");
                    None
                }
            },
            Some(other) => {
                self.error(
                    &p,
                    format!(
                        "expected a time (RFC 3339 string), found {}",
                        kind_of(other)
                    ),
                );
                None
            }
        }
    }

    fn targeting(&mut self, path: &str, value: Option<&Value>) -> Targeting {
        let Some(value) = value.filter(|v| !v.is_null()) else {
            return Targeting::default();
        };
        let Some(map) = self.object(
            path,
            value,
            &["segments", "channels", "from", "until", "experiment"],
        ) else {
            return Targeting::default();
        };
        let mut t = Targeting::default();
        for (i, s) in self
            .list(map, path, "segments", MAX_TARGETS)
            .iter()
            .enumerate()
        {
            let p = format!("{}[{i}]", join(path, "segments"));
            match s.as_str() {
                Some(key) if is_plain_id(key) => {
                    if !t.segments.iter().any(|k| k == key) {
                        t.segments.push(key.to_string());
                    }
                }
                _ => self.error(&p, "a segment key is 1 to 64 letters, digits, '-' or '_'"),
            }
        }
        for (i, c) in self
            .list(map, path, "channels", MAX_TARGETS)
            .iter()
            .enumerate()
        {
            let p = format!("{}[{i}]", join(path, "channels"));
            match c.as_str().and_then(SlotChannel::parse) {
                Some(channel) => {
                    if !t.channels.contains(&channel) {
                        t.channels.push(channel);
                    }
                }
                None => self.error(&p, format!("a channel: one of {}", SlotChannel::names())),
            }
        }
        t.from = self.time(map, path, "from");
        t.until = self.time(map, path, "until");
        if let (Some(from), Some(until)) = (t.from, t.until) {
            if until <= from {
                self.error(&join(path, "until"), "must be after from");
            }
        }
        if let Some(value) = map.get("experiment").filter(|v| !v.is_null()) {
            t.experiment = self.experiment(&join(path, "experiment"), value);
        }
        t
    }

    /// `{"id": "<experiment>", "variant": "<its variant>"}`: both must exist.
    fn experiment(&mut self, path: &str, value: &Value) -> Option<ExperimentBinding> {
        let map = self.object(path, value, &["id", "variant"])?;
        let before = self.errors.len();
        let id = self.text(map, path, "id", true, 64);
        let variant = self.text(map, path, "variant", true, 64);
        if self.errors.len() > before {
            return None;
        }
        let (id, variant) = (id?, variant?);
        match (self.experiments)(&id) {
            Err(message) => {
                self.error(&join(path, "id"), message);
                None
            }
            Ok(variants) if !variants.contains(&variant) => {
                self.error(
                    &join(path, "variant"),
                    format!(
                        "experiment {id} has no variant '{variant}': one of {}",
                        variants.join(", ")
                    ),
                );
                None
            }
            Ok(_) => Some(ExperimentBinding { id, variant }),
        }
    }

    fn content(&mut self, slot: SlotName, path: &str, value: &Value) -> Option<Content> {
        match slot {
            SlotName::HomeHero => self.hero(path, value).map(Content::Hero),
            SlotName::ProductRecommendations => self
                .recommendations(path, value)
                .map(Content::Recommendations),
            SlotName::BoardItem => self.board_item(path, value).map(Content::BoardItem),
            SlotName::EmailBlock => self.email_block(path, value).map(Content::EmailBlock),
        }
    }

    fn hero(&mut self, path: &str, value: &Value) -> Option<Hero> {
        let map = self.object(path, value, &["title", "text", "image", "sku", "link"])?;
        let before = self.errors.len();
        let title = self.text(map, path, "title", true, MAX_TITLE);
        let text = self.text(map, path, "text", false, MAX_TEXT);
        let image = self.url(map, path, "image");
        let sku = self.optional_sku(map, path, "sku");
        let link = self.url(map, path, "link");
        let named_sku = map.get("sku").is_some_and(|v| !v.is_null());
        let image_path = join(path, "image");
        if image.is_none() && !named_sku && !self.reported(&image_path) {
            self.error(&image_path, "a hero needs an image URL or a product sku");
        }
        let link_path = join(path, "link");
        if link.is_none() && !named_sku && !self.reported(&link_path) {
            self.error(&link_path, "required when the hero names no product sku");
        }
        if self.errors.len() > before {
            return None;
        }
        Some(Hero {
            title: title?,
            text: text.unwrap_or_default(),
            image,
            sku,
            link,
        })
    }

    fn recommendations(&mut self, path: &str, value: &Value) -> Option<Recommendations> {
        let map = self.object(path, value, &["strategy", "count", "skus", "title"])?;
        let before = self.errors.len();
        let strategy = match map.get("strategy") {
            None | Some(Value::Null) => {
                self.error(&join(path, "strategy"), "required");
                None
            }
            Some(v) => {
                let s = v.as_str().and_then(Strategy::parse);
                if s.is_none() {
                    self.error(
                        &join(path, "strategy"),
                        format!("one of {}", Strategy::ALL.map(Strategy::as_str).join(", ")),
                    );
                }
                s
            }
        };
        let count = match map.get("count") {
            None | Some(Value::Null) => Some(4),
            Some(_) => self.number(map, path, "count", 1..=MAX_COUNT),
        };
        let mut skus = Vec::new();
        let list = self.list(map, path, "skus", MAX_COUNT as usize);
        for (i, v) in list.iter().enumerate() {
            let p = format!("{}[{i}]", join(path, "skus"));
            if let Some(sku) = self.sku(&p, v) {
                if skus.contains(&sku) {
                    self.error(&p, format!("'{sku}' is listed twice"));
                } else {
                    skus.push(sku);
                }
            }
        }
        match strategy {
            Some(Strategy::Skus) if list.is_empty() => self.error(
                &join(path, "skus"),
                "strategy skus needs the list of SKUs to show",
            ),
            Some(s) if s != Strategy::Skus && !list.is_empty() => self.error(
                &join(path, "skus"),
                "only strategy skus takes a list: leave it out or use strategy skus",
            ),
            _ => {}
        }
        let title = self.text(map, path, "title", false, MAX_TITLE);
        if self.errors.len() > before {
            return None;
        }
        Some(Recommendations {
            strategy: strategy?,
            count: count?,
            skus,
            title: title.filter(|t| !t.is_empty()),
        })
    }

    fn board_item(&mut self, path: &str, value: &Value) -> Option<BoardItem> {
        let map = self.object(
            path,
            value,
            &["id", "title", "body", "sku", "offer_quantity", "seconds"],
        )?;
        let before = self.errors.len();
        let id = self.text(map, path, "id", true, 64);
        let title = self.text(map, path, "title", false, crate::board::MAX_TEXT);
        let body = self.text(map, path, "body", false, crate::board::MAX_TEXT);
        let sku = self.optional_sku(map, path, "sku");
        let offer_quantity = self.number(map, path, "offer_quantity", 0..=u32::MAX);
        let seconds = self.number(map, path, "seconds", 0..=u32::MAX);
        if self.errors.len() > before {
            return None;
        }
        let item = BoardItem {
            id: id?,
            title: title.unwrap_or_default(),
            body: body.unwrap_or_default(),
            sku,
            offer_quantity,
            seconds,
        };
        // The boards' own rules, so the item plays on any board.
        let playlist = BoardPlaylist {
            items: vec![item.clone()],
            ..BoardPlaylist::default()
        };
        let problems = playlist.problems();
        for (field, message) in &problems {
            let rest = field.strip_prefix("items[0]").unwrap_or(field);
            let rest = rest.strip_prefix('.').unwrap_or(rest);
            self.error(&join(path, rest), message.clone());
        }
        problems.is_empty().then_some(item)
    }

    fn email_block(&mut self, path: &str, value: &Value) -> Option<EmailBlock> {
        let map = self.object(path, value, &["title", "text", "link"])?;
        let before = self.errors.len();
        let title = self.text(map, path, "title", true, MAX_TITLE);
        let text = self.text(map, path, "text", false, MAX_TEXT);
        let link = self.url(map, path, "link");
        if self.errors.len() > before {
            return None;
        }
        Some(EmailBlock {
            title: title?,
            text: text.unwrap_or_default(),
            link,
        })
    }

    fn variant(&mut self, slot: SlotName, path: &str, value: &Value) -> Option<Variant> {
        let map = self.object(path, value, &["id", "targeting", "content"])?;
        let before = self.errors.len();
        let id = self.text(map, path, "id", true, 64);
        if let Some(id) = id.as_deref().filter(|id| !is_plain_id(id)) {
            self.error(
                &join(path, "id"),
                format!("'{id}': a variant id is 1 to 64 letters, digits, '-' or '_'"),
            );
        }
        let targeting = self.targeting(&join(path, "targeting"), map.get("targeting"));
        let content = match map.get("content") {
            Some(c) => self.content(slot, &join(path, "content"), c),
            None => {
                self.error(&join(path, "content"), "required");
                None
            }
        };
        if self.errors.len() > before {
            return None;
        }
        Some(Variant {
            id: id?,
            targeting,
            content: content?,
        })
    }
}

impl SlotSpec {
    /// Checks a slot as sent (`{"variants": [...], "default": {...}}`); `known_sku` says
    /// whether a SKU is in the catalog. `Err` holds every problem with its JSON path.
    pub fn parse(
        slot: SlotName,
        body: &Value,
        known_sku: &dyn Fn(&Sku) -> bool,
    ) -> Result<SlotSpec, Vec<FieldError>> {
        let none =
            |id: &str| -> Result<Vec<String>, String> { Err(format!("unknown experiment '{id}'")) };
        SlotSpec::parse_with(slot, body, known_sku, &none)
    }

    /// [`SlotSpec::parse`] with the experiments content may be bound to: `experiments`
    /// answers an experiment's variant keys, or why content cannot be bound to it (unknown,
    /// or not a content experiment).
    pub fn parse_with(
        slot: SlotName,
        body: &Value,
        known_sku: &dyn Fn(&Sku) -> bool,
        experiments: &dyn Fn(&str) -> Result<Vec<String>, String>,
    ) -> Result<SlotSpec, Vec<FieldError>> {
        let mut c = Checker {
            errors: Vec::new(),
            known_sku,
            experiments,
        };
        let Some(map) = c.object("", body, &["variants", "default"]) else {
            return Err(c.errors);
        };
        let mut variants = Vec::new();
        let mut ids = BTreeSet::new();
        for (i, v) in c.list(map, "", "variants", MAX_VARIANTS).iter().enumerate() {
            let path = format!("variants[{i}]");
            if let Some(variant) = c.variant(slot, &path, v) {
                if variant.id == "default" || !ids.insert(variant.id.clone()) {
                    c.error(
                        &format!("{path}.id"),
                        format!(
                            "'{}' is taken (by another variant or the default)",
                            variant.id
                        ),
                    );
                }
                variants.push(variant);
            }
        }
        let default = match map.get("default") {
            Some(d) => c.content(slot, "default", d),
            None => {
                c.error(
                    "default",
                    "required: the content shown when no variant matches",
                );
                None
            }
        };
        match default {
            Some(default) if c.errors.is_empty() => Ok(SlotSpec { variants, default }),
            _ => Err(c.errors),
        }
    }
}
