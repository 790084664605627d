//! The aggregates folded incrementally — random batch boundaries, late events, a restart from
//! the stored buckets between batches — equal a full recomputation over the log.

use super::{Aggregates, BasketTrack, ChannelDay, DayKey};
use crate::codec::{decode, encode};
use crate::event::{Event, EventKind, Subject};
use crate::ids::{AnonymousId, CustomerId, EventId};
use crate::Channel;
use proptest::prelude::*;
use std::collections::BTreeMap;
use time::OffsetDateTime;

const KINDS: [EventKind; 9] = [
    EventKind::PageView,
    EventKind::ProductView,
    EventKind::Search,
    EventKind::BasketLineAdded,
    EventKind::CheckoutStarted,
    EventKind::OrderPlaced,
    EventKind::OrderRefunded,
    EventKind::SignedIn,
    EventKind::BoardImpression,
];

fn event(seed: (u8, u8, u8, u8, u32, u8, u16)) -> Event {
    let (who, channel, kind, thing, minute, flag, amount) = seed;
    let subject = if who % 2 == 0 {
        Subject::Customer(CustomerId(ulid::Ulid(u128::from(who))))
    } else {
        Subject::Anonymous(AnonymousId(ulid::Ulid(u128::from(who))))
    };
    let channel = [Channel::Web, Channel::Mobile, Channel::Pos][usize::from(channel % 3)];
    let kind = KINDS[usize::from(kind) % KINDS.len()];
    // Up to five days, so late events cross day boundaries.
    let at = OffsetDateTime::from_unix_timestamp(1_700_000_000 + i64::from(minute % 7200) * 60)
        .expect("valid time");
    let mut e = Event::new(at, subject, channel, kind);
    e.id = EventId::new();
    let product = format!("p{}", thing % 4);
    let basket = format!("b{}", thing % 5);
    match kind {
        EventKind::ProductView => e = e.with("slug", product),
        EventKind::Search => {
            e = e
                .with(
                    "query",
                    ["Coffee", "coffee ", "tea"][usize::from(thing % 3)],
                )
                .with("results", flag % 2)
        }
        EventKind::BasketLineAdded => e = e.with("basket", basket).with("sku", product),
        EventKind::CheckoutStarted => e = e.with("basket", basket),
        EventKind::OrderPlaced => {
            e = e
                .with("basket", basket)
                .with("amount", format!("{}.{:02}", amount / 100, amount % 100))
                .with("currency", "EUR")
                .with("store", ["online", "store-1"][usize::from(flag % 2)])
                .with("products", format!("{product}:{}", 1 + flag % 3))
        }
        EventKind::OrderRefunded => e = e.with("amount", format!("EUR {}.00", amount % 50)),
        _ => {}
    }
    e
}

/// The stored side: what the writes left, keyed as the hub keys them.
#[derive(Default)]
struct Stored {
    days: BTreeMap<DayKey, Vec<u8>>,
    baskets: BTreeMap<String, Vec<u8>>,
}

impl Stored {
    fn write(&mut self, a: &mut Aggregates) {
        let (days, baskets) = a.take_dirty();
        for d in days {
            self.days
                .insert(d.key.clone(), encode(&d).expect("encodes"));
        }
        for b in baskets {
            self.baskets
                .insert(b.basket.clone(), encode(&b).expect("encodes"));
        }
    }

    fn restore(&self) -> Aggregates {
        Aggregates::restore(
            self.days
                .values()
                .map(|v| decode::<ChannelDay>(v).expect("decodes")),
            self.baskets
                .values()
                .map(|v| decode::<BasketTrack>(v).expect("decodes")),
        )
    }
}

fn recompute(events: &[Event]) -> Aggregates {
    let mut a = Aggregates::default();
    for e in events {
        a.apply(e);
    }
    a
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn incremental_aggregates_equal_a_full_recomputation(
        seeds in prop::collection::vec(any::<(u8, u8, u8, u8, u32, u8, u16)>(), 1..300),
        cuts in prop::collection::vec(1usize..40, 1..20),
        restarts in prop::collection::vec(any::<bool>(), 20),
        shuffle in any::<u64>(),
    ) {
        // The log order is the order of arrival: times are random, so many events are late.
        let log: Vec<Event> = seeds.into_iter().map(event).collect();
        let mut stored = Stored::default();
        let mut live = Aggregates::default();
        let mut at = 0;
        let mut batch = 0;
        while at < log.len() {
            let end = (at + cuts[batch % cuts.len()]).min(log.len());
            for e in &log[at..end] {
                live.apply(e);
            }
            stored.write(&mut live);
            if restarts[batch % restarts.len()] {
                live = stored.restore();
            }
            at = end;
            batch += 1;
        }
        let full = recompute(&log);
        prop_assert_eq!(&stored.restore(), &full);
        prop_assert_eq!(&live, &full);
        // Any other arrival order gives the same state.
        let mut reordered = log.clone();
        let n = reordered.len();
        for i in (1..n).rev() {
            let j = (shuffle.wrapping_mul(i as u64 + 7) >> 3) as usize % (i + 1);
            reordered.swap(i, j);
        }
        prop_assert_eq!(&recompute(&reordered), &full);
    }
}

#[test]
fn abandonment_counts_each_basket_once_on_its_first_add() {
    let at = |m: i64| OffsetDateTime::from_unix_timestamp(1_700_000_000 + m * 3600).expect("time");
    let who = Subject::Customer(CustomerId(ulid::Ulid(9)));
    let add = |m, ch| Event::new(at(m), who, ch, EventKind::BasketLineAdded).with("basket", "b1");
    let order = Event::new(at(50), who, Channel::Web, EventKind::OrderPlaced)
        .with("basket", "b1")
        .with("total", "EUR 10.00");
    // The order arrives first, then an add, then a late, earlier add on another channel.
    let a = recompute(&[order, add(30, Channel::Web), add(1, Channel::Mobile)]);
    let counted: Vec<(String, u64, u64)> = a
        .days
        .values()
        .filter(|d| d.baskets > 0)
        .map(|d| (d.key.channel.clone(), d.baskets, d.baskets_ordered))
        .collect();
    assert_eq!(counted, vec![("mobile".to_string(), 1, 1)]);
}
