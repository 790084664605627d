//! Slot resolution and validation as tables; the co-occurrence fold against a full
//! recomputation over random streams and batchings.

use super::recommend::{fold, rank, Neighbours, ORDER_ITEMS, SESSION_GAP, SESSION_ITEMS, TOP};
use super::*;
use crate::board::BoardItem;
use crate::codec::{decode, encode};
use crate::event::{Event, EventKind, Subject};
use crate::ids::{AnonymousId, CustomerId, Sku};
use crate::Channel;
use proptest::prelude::*;
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use time::macros::datetime;
use time::OffsetDateTime;

fn block(title: &str) -> Content {
    Content::EmailBlock(EmailBlock {
        title: title.into(),
        text: String::new(),
        link: None,
    })
}

fn variant(id: &str, segments: &[&str], channels: &[SlotChannel]) -> Variant {
    Variant {
        id: id.into(),
        targeting: Targeting {
            segments: segments.iter().map(|s| s.to_string()).collect(),
            channels: channels.to_vec(),
            from: None,
            until: None,
            experiment: None,
        },
        content: block(id),
    }
}

fn spec() -> SlotSpec {
    let mut summer = variant("summer", &["coffee-lovers"], &[]);
    summer.targeting.from = Some(datetime!(2026-06-01 00:00 UTC));
    summer.targeting.until = Some(datetime!(2026-09-01 00:00 UTC));
    SlotSpec {
        variants: vec![
            summer,
            variant("tea", &["tea-fans", "green"], &[SlotChannel::Web]),
            variant("coffee", &["coffee-lovers"], &[]),
            variant("app", &[], &[SlotChannel::Mobile]),
        ],
        default: block("default"),
    }
}

#[test]
fn the_first_matching_variant_wins_and_says_why() {
    let spec = spec();
    let july = datetime!(2026-07-01 12:00 UTC);
    let october = datetime!(2026-10-01 12:00 UTC);
    let may = datetime!(2026-05-01 12:00 UTC);
    let s = |keys: &[&str]| keys.iter().map(|k| k.to_string()).collect::<Vec<_>>();
    // (segments, channel, now, variant, code, reason)
    type Case = (
        Vec<String>,
        SlotChannel,
        OffsetDateTime,
        &'static str,
        &'static str,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            s(&["coffee-lovers"]),
            SlotChannel::Web,
            july,
            "summer",
            "segment_matched",
            "segment coffee-lovers matched (variant 1, summer)",
        ),
        (
            s(&["coffee-lovers"]),
            SlotChannel::Web,
            october,
            "coffee",
            "segment_matched",
            "segment coffee-lovers matched (variant 3, coffee)",
        ),
        (
            s(&["green", "coffee-lovers"]),
            SlotChannel::Web,
            october,
            "tea",
            "segment_matched",
            "segment green matched (variant 2, tea)",
        ),
        (
            s(&["green"]),
            SlotChannel::Email,
            october,
            "default",
            "no_variant_matched",
            "default: no variant matched",
        ),
        (
            s(&[]),
            SlotChannel::Mobile,
            july,
            "app",
            "everyone",
            "variant 4 (app) targets everyone on mobile",
        ),
        (
            s(&[]),
            SlotChannel::Board,
            july,
            "default",
            "no_variant_matched",
            "default: no variant matched",
        ),
    ];
    for (segments, channel, now, id, code, reason) in cases {
        let req = SlotRequest {
            channel,
            segments: &segments,
            now,
        };
        let r = resolve(&spec, &req);
        assert_eq!(
            (r.variant_id(), r.code, r.reason.as_str()),
            (id, code, reason),
            "{segments:?} on {channel:?} at {now}"
        );
    }
    // Only the schedule keeps a variant out: the default says so.
    let only_summer = SlotSpec {
        variants: vec![spec.variants[0].clone()],
        default: block("default"),
    };
    let lovers = s(&["coffee-lovers"]);
    let at = |now| SlotRequest {
        channel: SlotChannel::Web,
        segments: &lovers,
        now,
    };
    let ended = resolve(&only_summer, &at(october));
    assert_eq!(ended.code, "schedule_ended");
    assert_eq!(
        ended.reason,
        "default: variant 1 (summer) matched but its schedule ended at 2026-09-01T00:00:00Z"
    );
    assert_eq!(ended.content, &block("default"));
    assert_eq!(resolve(&only_summer, &at(may)).code, "schedule_not_started");
    // The window is [from, until).
    assert_eq!(
        resolve(&only_summer, &at(datetime!(2026-06-01 00:00 UTC))).variant_id(),
        "summer"
    );
    assert_eq!(
        resolve(&only_summer, &at(datetime!(2026-09-01 00:00 UTC))).variant_id(),
        "default"
    );
}

fn known(sku: &Sku) -> bool {
    sku.as_str().starts_with("COF-") || sku.as_str().starts_with("TEA-")
}

fn fields(slot: SlotName, body: serde_json::Value) -> Vec<(String, String)> {
    match SlotSpec::parse(slot, &body, &known) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.into_iter().map(|e| (e.field, e.message)).collect(),
    }
}

#[test]
fn every_problem_is_reported_with_its_json_path() {
    let hero = json!({"title": "Hi", "image": "/images/a.svg", "link": "/"});
    let cases: Vec<(SlotName, serde_json::Value, Vec<&str>)> = vec![
        (
            SlotName::HomeHero,
            json!({"variants": [], "default": hero}),
            vec![],
        ),
        (SlotName::HomeHero, json!([]), vec![""]),
        (SlotName::HomeHero, json!({"variants": []}), vec!["default"]),
        (
            SlotName::HomeHero,
            json!({"variants": [], "default": hero, "colour": "red"}),
            vec!["colour"],
        ),
        (
            SlotName::HomeHero,
            json!({"variants": [
                {"id": "a", "content": hero},
                {"id": "b", "content": hero},
                {"id": "c", "targeting": {"channels": ["fax", "web"], "segments": ["ok", "no way"]},
                 "content": hero}
            ], "default": hero}),
            vec![
                "variants[2].targeting.segments[1]",
                "variants[2].targeting.channels[0]",
            ],
        ),
        (
            SlotName::HomeHero,
            json!({"variants": [
                {"id": "a", "content": hero},
                {"id": "a", "content": hero},
                {"id": "default", "content": hero},
                {"id": "bad id", "content": hero}
            ], "default": hero}),
            vec!["variants[1].id", "variants[2].id", "variants[3].id"],
        ),
        (
            SlotName::HomeHero,
            json!({"variants": [{"id": "x", "targeting": {
                "from": "2026-09-01T00:00:00Z", "until": "2026-06-01T00:00:00Z"},
                "content": hero}], "default": hero}),
            vec!["variants[0].targeting.until"],
        ),
        (
            SlotName::HomeHero,
            json!({"variants": [{"id": "x", "targeting": {"from": "tomorrow"}, "content": hero}],
                   "default": hero}),
            vec!["variants[0].targeting.from"],
        ),
        (
            SlotName::HomeHero,
            json!({"variants": [], "default": {"title": "", "link": "javascript:alert(1)"}}),
            vec!["default.title", "default.link", "default.image"],
        ),
        (
            SlotName::HomeHero,
            json!({"variants": [{"id": "x", "content": {"title": "Beans", "sku": "NOPE-1"}}],
                   "default": {"title": "Beans", "sku": "COF-1"}}),
            vec!["variants[0].content.sku"],
        ),
        (
            SlotName::ProductRecommendations,
            json!({"variants": [], "default": {"strategy": "bought_together", "count": 4}}),
            vec![],
        ),
        (
            SlotName::ProductRecommendations,
            json!({"variants": [
                {"id": "x", "content": {"strategy": "skus", "skus": ["COF-1", "XYZ-9", "COF-1"]}},
                {"id": "y", "content": {"strategy": "magic", "count": 0}},
                {"id": "z", "content": {"strategy": "skus"}}
            ], "default": {"strategy": "top_products", "skus": ["COF-1"]}}),
            vec![
                "variants[0].content.skus[1]",
                "variants[0].content.skus[2]",
                "variants[1].content.strategy",
                "variants[1].content.count",
                "variants[2].content.skus",
                "default.skus",
            ],
        ),
        (
            SlotName::BoardItem,
            json!({"variants": [{"id": "x", "content": {"id": "beans", "offer_quantity": 3}}],
                   "default": {"id": "hello", "title": "Welcome", "seconds": 9999}}),
            vec![
                "variants[0].content.title",
                "variants[0].content.offer_quantity",
                "default.seconds",
            ],
        ),
        (
            SlotName::EmailBlock,
            json!({"variants": [{"id": "x", "content": {"title": 5}}],
                   "default": {"title": "Our coffee", "link": "/c/coffee"}}),
            vec!["variants[0].content.title"],
        ),
    ];
    for (slot, body, expected) in cases {
        let got = fields(slot, body.clone());
        let paths: Vec<&str> = got.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(paths, expected, "{slot:?} {body}: {got:?}");
    }
    let unknown = fields(
        SlotName::HomeHero,
        json!({"variants": [], "default": {"title": "x", "sku": "XYZ-9"}}),
    );
    assert!(
        unknown[0].1.contains("unknown SKU 'XYZ-9'"),
        "the message names the SKU: {unknown:?}"
    );
}

fn bound(id: &str, experiment: &str, variant: &str) -> Variant {
    let mut v = self::variant(id, &[], &[]);
    v.targeting.experiment = Some(ExperimentBinding {
        id: experiment.into(),
        variant: variant.into(),
    });
    v
}

#[test]
fn a_variant_bound_to_an_experiment_shows_to_its_variant_only() {
    let mut vip = bound("vip-b", "hero-test", "B");
    vip.targeting.segments = vec!["vip".into()];
    let spec = SlotSpec {
        variants: vec![
            vip,
            bound("hero-control", "hero-test", "control"),
            bound("hero-b", "hero-test", "B"),
        ],
        default: block("default"),
    };
    let now = datetime!(2026-07-01 12:00 UTC);
    let none: Vec<String> = Vec::new();
    let vips = vec!["vip".to_string()];
    let req = |segments| SlotRequest {
        channel: SlotChannel::Web,
        segments,
        now,
    };
    // (segments, the shopper's variant, slot variant, code, reason, asked)
    type Case<'a> = (
        &'a [String],
        Option<&'a str>,
        &'a str,
        &'a str,
        &'a str,
        usize,
    );
    let cases: Vec<Case<'_>> = vec![
        (
            &none,
            Some("B"),
            "hero-b",
            "experiment",
            "experiment hero-test variant B (variant 3, hero-b)",
            2,
        ),
        (
            &none,
            Some("control"),
            "hero-control",
            "experiment",
            "experiment hero-test variant control (variant 2, hero-control)",
            1,
        ),
        (
            &vips,
            Some("B"),
            "vip-b",
            "experiment",
            "experiment hero-test variant B, segment vip matched (variant 1, vip-b)",
            1,
        ),
        (
            &none,
            Some("C"),
            "default",
            "experiment",
            "default: experiment hero-test variant C",
            2,
        ),
        (
            &none,
            None,
            "default",
            "no_variant_matched",
            "default: no variant matched",
            2,
        ),
    ];
    for (segments, assigned, id, code, reason, asked) in cases {
        let mut calls = 0;
        let r = resolve_with(&spec, &req(segments), &mut |e| {
            assert_eq!(e, "hero-test");
            calls += 1;
            assigned.map(str::to_string)
        });
        assert_eq!(
            (r.variant_id(), r.code, r.reason.as_str()),
            (id, code, reason),
            "{segments:?} {assigned:?}"
        );
        // Asked only for variants whose segments, channel and schedule match.
        assert_eq!(calls, asked, "{segments:?} {assigned:?}");
        assert_eq!(
            r.experiment,
            assigned.map(|a| ("hero-test".to_string(), a.to_string()))
        );
    }
    // Without experiments (a preview), bound variants never match.
    assert_eq!(resolve(&spec, &req(&vips)).variant_id(), "default");
}

#[test]
fn a_slot_bound_to_an_unknown_experiment_or_variant_is_refused_with_the_path() {
    let experiments = |id: &str| -> Result<Vec<String>, String> {
        match id {
            "hero-test" => Ok(vec!["control".into(), "B".into()]),
            "free-shipping" => Err("experiment free-shipping is for promotions".into()),
            other => Err(format!("unknown experiment '{other}'")),
        }
    };
    let hero = json!({"title": "Hi", "image": "/images/a.svg", "link": "/"});
    let check = |experiment: serde_json::Value| -> Vec<(String, String)> {
        let body = json!({"variants": [
            {"id": "ok", "targeting": {"experiment": {"id": "hero-test", "variant": "B"}}, "content": hero},
            {"id": "b", "targeting": {"experiment": experiment}, "content": hero}
        ], "default": hero});
        match SlotSpec::parse_with(SlotName::HomeHero, &body, &known, &experiments) {
            Ok(spec) => {
                assert_eq!(
                    spec.variants[0].targeting.experiment,
                    Some(ExperimentBinding {
                        id: "hero-test".into(),
                        variant: "B".into()
                    })
                );
                Vec::new()
            }
            Err(errors) => errors.into_iter().map(|e| (e.field, e.message)).collect(),
        }
    };
    assert!(check(json!({"id": "hero-test", "variant": "control"})).is_empty());
    let path = "variants[1].targeting.experiment";
    let cases = [
        (
            json!({"id": "nope", "variant": "B"}),
            format!("{path}.id"),
            "unknown experiment 'nope'",
        ),
        (
            json!({"id": "hero-test", "variant": "Z"}),
            format!("{path}.variant"),
            "experiment hero-test has no variant 'Z': one of control, B",
        ),
        (
            json!({"id": "free-shipping", "variant": "B"}),
            format!("{path}.id"),
            "experiment free-shipping is for promotions",
        ),
        (
            json!({"id": "hero-test"}),
            format!("{path}.variant"),
            "required",
        ),
        (
            json!({"id": "hero-test", "variant": "B", "weight": 1}),
            format!("{path}.weight"),
            "unknown field: use id, variant",
        ),
        (
            json!("hero-test"),
            path.to_string(),
            "expected an object, found a string",
        ),
    ];
    for (binding, field, message) in cases {
        assert_eq!(
            check(binding.clone()),
            vec![(field, message.to_string())],
            "{binding}"
        );
    }
    // Without the experiments (plain parse), any binding is refused.
    let body = json!({"variants": [
        {"id": "ok", "targeting": {"experiment": {"id": "hero-test", "variant": "B"}}, "content": hero}
    ], "default": hero});
    assert_eq!(
        fields(SlotName::HomeHero, body)[0].0,
        "variants[0].targeting.experiment.id"
    );
}

#[test]
fn a_parsed_slot_round_trips_through_the_codec() {
    let body = json!({
        "variants": [{"id": "coffee", "targeting": {"segments": ["coffee-lovers"], "channels": ["web"],
            "until": "2026-09-01T00:00:00Z"}, "content": {"id": "beans", "title": "Fresh", "sku": "COF-1"}}],
        "default": {"id": "hello", "title": "Welcome"}
    });
    let spec = SlotSpec::parse(SlotName::BoardItem, &body, &known).expect("valid");
    let record = SlotRecord {
        slot: SlotName::BoardItem,
        spec: spec.clone(),
        version: 1,
        updated_at: datetime!(2026-05-01 00:00 UTC),
        updated_by: "admin-token".into(),
    };
    assert_eq!(
        decode::<SlotRecord>(&encode(&record).expect("encodes")),
        Ok(record)
    );
    assert_eq!(
        spec.default,
        Content::BoardItem(BoardItem {
            id: "hello".into(),
            title: "Welcome".into(),
            body: String::new(),
            sku: None,
            offer_quantity: None,
            seconds: None,
        })
    );
}

#[test]
fn observations_come_from_orders_and_product_views() {
    let at = datetime!(2026-05-01 10:00 UTC);
    let who = Subject::Customer(CustomerId::new());
    let order =
        Event::new(at, who, Channel::Web, EventKind::OrderPlaced).with("skus", "COF-1:2,TEA-2:1");
    assert_eq!(
        Observation::of(&order, |_| None),
        Some(Observation::Order(vec!["COF-1".into(), "TEA-2".into()]))
    );
    let view = Event::new(at, who, Channel::Web, EventKind::ProductView).with("slug", "tea");
    assert_eq!(
        Observation::of(&view, |slug| (slug == "tea").then(|| "TEA-2".to_string())),
        Some(Observation::View {
            subject: who,
            at,
            sku: "TEA-2".into()
        })
    );
    let search = Event::new(at, who, Channel::Web, EventKind::Search).with("query", "tea");
    assert_eq!(Observation::of(&search, |_| None), None);
}

// ---------------------------------------------------------------------------------------------
// The fold against a full recomputation.
// ---------------------------------------------------------------------------------------------

type Counts = BTreeMap<(Relation, String, String), u64>;

/// Counts every pair from the whole stream at once, straight from the definitions.
fn recompute(stream: &[Observation]) -> Counts {
    let mut counts = Counts::new();
    let mut add = |relation, x: &str, y: &str| {
        let (a, b) = if x < y { (x, y) } else { (y, x) };
        *counts
            .entry((relation, a.to_string(), b.to_string()))
            .or_default() += 1;
    };
    let mut sessions: HashMap<Subject, (OffsetDateTime, OffsetDateTime, Vec<String>)> =
        HashMap::new();
    for o in stream {
        match o {
            Observation::Order(skus) => {
                let mut items = skus.clone();
                items.sort();
                items.dedup();
                items.truncate(ORDER_ITEMS);
                for i in 0..items.len() {
                    for j in i + 1..items.len() {
                        add(Relation::BoughtTogether, &items[i], &items[j]);
                    }
                }
            }
            Observation::View { subject, at, sku } => match sessions.get_mut(subject) {
                Some((start, last, items))
                    if *at <= *last + SESSION_GAP && *at >= *start - SESSION_GAP =>
                {
                    *start = (*start).min(*at);
                    *last = (*last).max(*at);
                    if !items.contains(sku) && items.len() < SESSION_ITEMS {
                        for other in items.iter().filter(|o| *o != sku) {
                            add(Relation::ViewedTogether, sku, other);
                        }
                        items.push(sku.clone());
                    }
                }
                Some((start, _, _)) if *at < *start - SESSION_GAP => {}
                _ => {
                    sessions.insert(*subject, (*at, *at, vec![sku.clone()]));
                }
            },
        }
    }
    counts
}

/// The top lists of full counts: every neighbour, sorted, cut at [`TOP`].
fn tops(counts: &Counts) -> BTreeMap<(Relation, String), Vec<Neighbour>> {
    let mut out: BTreeMap<(Relation, String), Vec<Neighbour>> = BTreeMap::new();
    for ((relation, a, b), count) in counts {
        for (of, other) in [(a, b), (b, a)] {
            out.entry((*relation, of.clone()))
                .or_default()
                .push(Neighbour {
                    sku: other.clone(),
                    count: *count,
                });
        }
    }
    for list in out.values_mut() {
        list.sort_by(rank);
        list.truncate(TOP);
    }
    out
}

fn observation(seed: (u8, u8, u16, Vec<u8>)) -> Observation {
    let (kind, who, minute, items) = seed;
    let sku = |i: &u8| format!("SKU-{:02}", i % 30);
    if kind % 3 == 0 {
        Observation::Order(items.iter().map(sku).collect())
    } else {
        let subject = if who % 2 == 0 {
            Subject::Customer(CustomerId(ulid::Ulid(u128::from(who % 6))))
        } else {
            Subject::Anonymous(AnonymousId(ulid::Ulid(u128::from(who % 6))))
        };
        // Minutes over a day, so sessions start, run on, end and see late views.
        let at = OffsetDateTime::from_unix_timestamp(1_780_000_000 + i64::from(minute % 1440) * 60)
            .expect("valid time");
        Observation::View {
            subject,
            at,
            sku: sku(items.first().unwrap_or(&0)),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Folded in random batches, each ending with the state stored and read back, the counts
    /// and top lists equal a recomputation from the whole stream.
    #[test]
    fn incremental_folding_equals_a_full_recomputation(
        seeds in prop::collection::vec(
            (any::<u8>(), any::<u8>(), any::<u16>(), prop::collection::vec(any::<u8>(), 1..8)),
            0..300,
        ),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let stream: Vec<Observation> = seeds.into_iter().map(observation).collect();
        let mut bounds: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
        bounds.push(stream.len());
        bounds.sort_unstable();
        let mut stored = MemoryCoStore::default();
        let mut start = 0;
        for end in bounds {
            let mut batch = stored.clone();
            for o in &stream[start..end] {
                let Ok(()) = fold(&mut batch, o);
            }
            // What a restart reads back: every list and session through the codec.
            for list in batch.neighbours.values_mut() {
                let kept = Neighbours { list: std::mem::take(list) };
                *list = decode::<Neighbours>(&encode(&kept).expect("encodes")).expect("decodes").list;
            }
            for s in batch.sessions.values_mut() {
                *s = decode(&encode(&*s).expect("encodes")).expect("decodes");
            }
            stored = batch;
            start = end;
        }
        let counts = recompute(&stream);
        prop_assert_eq!(&stored.counts, &counts);
        prop_assert_eq!(&stored.neighbours, &tops(&counts));
        for list in stored.neighbours.values() {
            prop_assert!(list.len() <= TOP);
        }
    }
}
