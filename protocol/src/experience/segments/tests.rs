//! Segment rules: the parser against tables of valid and invalid texts, and incremental
//! evaluation (events in random batches, late events, time passing, due-time sweeps) against
//! a full recomputation.

use super::*;
use crate::codec::{decode, encode};
use crate::event::{Event, EventKind, Subject};
use crate::ids::{CustomerId, EventId};
use crate::Channel;
use proptest::prelude::*;
use std::collections::HashMap;

#[test]
fn valid_rules_parse_to_their_canonical_form() {
    let table = [
        (
            r#"viewed(category = "coffee") >= 2 within 7d and orders within 30d = 0"#,
            r#"viewed(category = "coffee") within 7d >= 2 and ordered within 30d = 0"#,
        ),
        (
            r#"lifetime_value("EUR") > 500"#,
            r#"lifetime_value("EUR") > 500.00"#,
        ),
        (
            r#"lifetime_value("jpy") >= 1000"#,
            r#"lifetime_value("JPY") >= 1000"#,
        ),
        ("visited_store", "visited_store >= 1"),
        (
            r#"visited_store("berlin")"#,
            r#"visited_store(store = "berlin") >= 1"#,
        ),
        (
            r#"channel_used("POS")"#,
            r#"channel_used(channel = "pos") >= 1"#,
        ),
        (
            r#"searched(" Oat  Milk") within 14d"#,
            r#"searched(query = "oat milk") within 14d >= 1"#,
        ),
        (
            "added_to_basket within 1d and not ordered within 1d",
            "added_to_basket within 1d >= 1 and not ordered within 1d >= 1",
        ),
        (
            "(viewed or searched) and not (ordered)",
            "(viewed >= 1 or searched >= 1) and not ordered >= 1",
        ),
        (
            "viewed or searched and ordered",
            "viewed >= 1 or (searched >= 1 and ordered >= 1)",
        ),
        (
            "VIEWED within 12h > 3 AND Orders = 0",
            "viewed within 12h > 3 and ordered = 0",
        ),
        (
            "viewed(product = \"house-beans\")\n  within 36h != 2",
            "viewed(product = \"house-beans\") within 36h != 2",
        ),
        (
            r#"added_to_basket("a \"quoted\" slug") < 4"#,
            r#"added_to_basket(product = "a \"quoted\" slug") < 4"#,
        ),
        ("viewed within 90d <= 5", "viewed within 90d <= 5"),
    ];
    for (text, canonical) in table {
        let rule = parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert_eq!(rule.to_string(), canonical, "{text:?}");
        assert_eq!(
            parse(canonical),
            Ok(rule.clone()),
            "{canonical:?} parses back"
        );
        assert_eq!(
            decode::<StoredRule>(&encode(&StoredRule(rule.clone())).expect("encodes")),
            Ok(StoredRule(rule.clone())),
            "{text:?} round-trips through the codec"
        );
        let json = serde_json::to_string(&rule).expect("json");
        assert_eq!(serde_json::from_str::<Rule>(&json).ok(), Some(rule));
    }
}

/// A rule as stored inside a record.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct StoredRule(Rule);

impl crate::codec::Stored for StoredRule {
    const KIND: &'static str = "test_rule";
    const VERSION: u16 = 1;
}

#[test]
fn the_example_rule_has_this_tree() {
    let rule = parse(r#"viewed(category = "coffee") >= 2 within 7d and orders within 30d = 0"#);
    let expected = Rule::And {
        all: vec![
            Rule::Count(Count {
                fact: Fact::Viewed,
                filter: Some(Filter {
                    field: "category".into(),
                    value: "coffee".into(),
                }),
                within: Some(Window { hours: 168 }),
                cmp: Cmp::Ge,
                value: 2,
            }),
            Rule::Count(Count {
                fact: Fact::Ordered,
                filter: None,
                within: Some(Window { hours: 720 }),
                cmp: Cmp::Eq,
                value: 0,
            }),
        ],
    };
    assert_eq!(rule, Ok(expected));
}

#[test]
fn invalid_rules_say_where_and_what_was_expected() {
    // (text, offset, line, column, a part of `expected`)
    let table: [(&str, usize, usize, usize, &str); 21] = [
        ("", 0, 1, 1, "a condition"),
        ("viewed >= ", 10, 1, 11, "whole number"),
        (
            r#"viewed(category = "coffee") >= 2 within 7x"#,
            40,
            1,
            41,
            "duration",
        ),
        ("viewed within 91d", 14, 1, 15, "at most 90d"),
        ("bought > 1", 0, 1, 1, "a condition"),
        (
            "viewed and\n  orders wihtin 30d = 0",
            20,
            2,
            10,
            "`and`, `or` or the end",
        ),
        (
            r#"lifetime_value("EUR") > 12.345"#,
            24,
            1,
            25,
            "at most 2 decimals",
        ),
        (r#"lifetime_value("XXX") > 1"#, 15, 1, 16, "ISO 4217"),
        (r#"viewed(colour = "red")"#, 7, 1, 8, "category"),
        ("(viewed or ordered", 18, 1, 19, "`)`"),
        ("viewed)", 6, 1, 7, "closes nothing"),
        (r#"searched("oat milk) within 14d"#, 9, 1, 10, "closing"),
        (r#"channel_used("fax")"#, 13, 1, 14, "a channel"),
        ("viewed > 1.5", 9, 1, 10, "whole number"),
        (r#"ordered("x")"#, 8, 1, 9, "no arguments"),
        (r#"viewed("a", "b")"#, 10, 1, 11, "one argument"),
        ("viewed within 0h", 14, 1, 15, "at least 1h"),
        ("viewed(\"café\") and\n  ü", 22, 2, 3, "a condition"),
        (
            r#"lifetime_value("EUR") within 7d > 1"#,
            22,
            1,
            23,
            "takes no window",
        ),
        ("viewed within 7d > 1 within 2d", 21, 1, 22, "the end"),
        ("not not", 7, 1, 8, "a condition"),
    ];
    for (text, offset, line, column, expected) in table {
        let e = parse(text).expect_err(text);
        assert_eq!(
            (e.offset, e.line, e.column),
            (offset, line, column),
            "{text:?}: {e}"
        );
        assert!(e.expected.contains(expected), "{text:?}: {e}");
    }
}

#[test]
fn nesting_and_length_are_bounded() {
    let deep = format!("{}viewed{}", "(".repeat(100), ")".repeat(100));
    let e = parse(&deep).expect_err("too deep");
    assert_eq!(e.offset, parser::MAX_DEPTH);
    let long = format!("viewed{}", " or viewed".repeat(500));
    assert!(parse(&long)
        .expect_err("too long")
        .expected
        .contains("bytes"));
}

fn at(hours: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_700_000_000 + hours * 3600).expect("valid time")
}

#[test]
fn windows_count_whole_hours_and_memberships_keep_their_entry_time() {
    let who = Subject::Customer(CustomerId::new());
    let mut p = Profile::new(who);
    for h in [0, 1] {
        p.apply(
            &Event::new(at(h), who, Channel::Web, EventKind::ProductView)
                .with("slug", "house-beans")
                .with("category", "coffee"),
        );
    }
    let live = vec![LiveSegment {
        id: "s1".into(),
        key: "coffee".into(),
        rule: parse(r#"viewed(category = "coffee") >= 2 within 1d"#).expect("parses"),
    }];
    let first = reconcile(&mut p, &live, at(2));
    assert_eq!(first.entered, vec!["s1".to_string()]);
    assert_eq!(p.segments, vec!["coffee".to_string()]);
    let hour0 = hour_of(at(0));
    assert_eq!(
        first.due,
        OffsetDateTime::from_unix_timestamp((i64::from(hour0) + 25) * 3600).ok(),
        "the first view's hour leaves the 24h window 25 hours after it began"
    );
    let again = reconcile(&mut p, &live, at(20));
    assert!(again.entered.is_empty() && again.left.is_empty());
    assert_eq!(p.memberships["s1"].entered_at, at(2));
    let later = reconcile(&mut p, &live, at(26));
    assert_eq!(later.left, vec!["s1".to_string()]);
    assert!(p.segments.is_empty());
    let gone = reconcile(&mut p, &[], at(26));
    assert!(gone.entered.is_empty() && gone.left.is_empty());
    assert_eq!(gone.due, None, "no windows, nothing due");
    assert_eq!(p.segments_due, None);
}

#[test]
fn lifetime_value_compares_minor_units_and_erasure_drops_search_texts() {
    let who = Subject::Customer(CustomerId::new());
    let mut p = Profile::new(who);
    p.apply(
        &Event::new(at(0), who, Channel::Web, EventKind::OrderPlaced)
            .with("amount", "500.01")
            .with("currency", "EUR"),
    );
    p.apply(&Event::new(at(0), who, Channel::Web, EventKind::Search).with("query", "Oat Milk"));
    let high = parse(r#"lifetime_value("EUR") > 500"#).expect("parses");
    assert!(high.matches(&p, at(1)));
    let searched = parse(r#"searched("oat milk")"#).expect("parses");
    assert!(searched.matches(&p, at(1)));
    p.erase(Subject::Customer(CustomerId::new()));
    assert!(!searched.matches(&p, at(1)));
    assert!(parse("searched").expect("parses").matches(&p, at(1)));
}

const RULES: [&str; 7] = [
    r#"viewed(category = "coffee") >= 2 within 7d and orders within 30d = 0"#,
    "added_to_basket within 1d and not ordered within 1d",
    r#"searched("oat milk") within 14d"#,
    "visited_store within 3h",
    r#"lifetime_value("EUR") > 20"#,
    r#"channel_used("pos") within 2d >= 2 or viewed(product = "p1") within 5h"#,
    "orders >= 1 and orders within 20d = 0",
];

fn live() -> Vec<LiveSegment> {
    RULES
        .iter()
        .enumerate()
        .map(|(i, text)| LiveSegment {
            id: format!("s{i}"),
            key: format!("k{i}"),
            rule: parse(text).expect("a valid rule"),
        })
        .collect()
}

fn event(now: OffsetDateTime, seed: (u8, u8, u8, u16)) -> Event {
    let (who, kind, thing, lag_minutes) = seed;
    let subject = Subject::Customer(CustomerId(ulid::Ulid(u128::from(who % 4 + 1))));
    let channel = [Channel::Web, Channel::Pos, Channel::Mobile][usize::from(thing % 3)];
    let kind = [
        EventKind::ProductView,
        EventKind::BasketLineAdded,
        EventKind::OrderPlaced,
        EventKind::Search,
        EventKind::PageView,
    ][usize::from(kind % 5)];
    // Late events: up to about ten days old when they arrive.
    let at = now - time::Duration::minutes(i64::from(lag_minutes % 14_400));
    let mut e = Event::new(at, subject, channel, kind);
    e.id = EventId::new();
    let product = format!("p{}", thing % 3);
    match kind {
        EventKind::ProductView => {
            e = e
                .with("slug", product)
                .with("category", ["coffee", "tea"][usize::from(thing % 2)]);
        }
        EventKind::BasketLineAdded => e = e.with("sku", product).with("basket", "b"),
        EventKind::OrderPlaced => {
            e = e
                .with("amount", format!("{}.50", thing % 16))
                .with("currency", "EUR")
        }
        EventKind::Search => e = e.with("query", ["Oat Milk", "tea"][usize::from(thing % 2)]),
        _ => {}
    }
    e
}

/// The analyst's loop in miniature: at each step time moves on, subjects whose due time has
/// passed are re-evaluated, then a batch is folded and the subjects it touched re-evaluated.
struct Incremental {
    profiles: HashMap<Subject, Profile>,
    due: HashMap<Subject, OffsetDateTime>,
}

impl Incremental {
    fn evaluate(&mut self, who: Subject, live: &[LiveSegment], now: OffsetDateTime) {
        let Some(p) = self.profiles.get_mut(&who) else {
            return;
        };
        match reconcile(p, live, now).due {
            Some(d) => self.due.insert(who, d),
            None => self.due.remove(&who),
        };
    }

    fn sweep(&mut self, live: &[LiveSegment], now: OffsetDateTime) {
        let due: Vec<Subject> = self
            .due
            .iter()
            .filter(|(_, d)| **d <= now)
            .map(|(s, _)| *s)
            .collect();
        for who in due {
            self.evaluate(who, live, now);
        }
    }
}

/// Checks the incremental state against profiles folded from scratch and evaluated at `now`.
fn same_as_recomputed(
    inc: &Incremental,
    all: &[Event],
    live: &[LiveSegment],
    now: OffsetDateTime,
) -> Result<(), TestCaseError> {
    let mut full: HashMap<Subject, Profile> = HashMap::new();
    for e in all {
        full.entry(e.subject)
            .or_insert_with(|| Profile::new(e.subject))
            .apply(e);
    }
    prop_assert_eq!(full.len(), inc.profiles.len());
    for (who, mut p) in full {
        reconcile(&mut p, live, now);
        let mine = &inc.profiles[&who];
        prop_assert_eq!(&mine.activity, &p.activity);
        prop_assert_eq!(&mine.segments, &p.segments, "at {}", now);
        let ids = |p: &Profile| p.memberships.keys().cloned().collect::<Vec<_>>();
        prop_assert_eq!(ids(mine), ids(&p));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn incremental_evaluation_equals_a_full_recomputation(
        steps in prop::collection::vec(
            (0u32..3000, prop::collection::vec(any::<(u8, u8, u8, u16)>(), 0..12)),
            1..25,
        ),
        tail in 0u32..50_000,
    ) {
        let live = live();
        let mut now = at(0);
        let mut all = Vec::new();
        let mut inc = Incremental { profiles: HashMap::new(), due: HashMap::new() };
        for (advance_minutes, seeds) in steps {
            now += time::Duration::minutes(i64::from(advance_minutes));
            inc.sweep(&live, now);
            let batch: Vec<Event> = seeds.into_iter().map(|s| event(now, s)).collect();
            let mut touched = Vec::new();
            for e in &batch {
                inc.profiles
                    .entry(e.subject)
                    .or_insert_with(|| Profile::new(e.subject))
                    .apply(e);
                touched.push(e.subject);
            }
            for who in touched {
                inc.evaluate(who, &live, now);
            }
            all.extend(batch);
            // After every step, not only at the end: a due time late by an hour shows.
            same_as_recomputed(&inc, &all, &live, now)?;
        }
        now += time::Duration::minutes(i64::from(tail));
        inc.sweep(&live, now);
        same_as_recomputed(&inc, &all, &live, now)?;
    }
}
