//! A bulk generator of realistic interaction events for the experience layer's benchmark
//! (`omnihub bench events`): shopping sessions spread over a number of days, each a short run
//! of page and product views, searches (some finding nothing), basket adds, checkouts and
//! orders, on the web, the app, the tills and the boards; some anonymous shoppers sign in
//! mid-session. Deterministic for a seed.

use super::rng::Rng;
use protocol::{AnonymousId, BasketId, Channel, CustomerId, Event, EventKind, OrderId, Subject};
use time::{Duration, OffsetDateTime};

/// What to generate.
#[derive(Debug, Clone)]
pub struct EventMix {
    pub seed: u64,
    /// Sessions fall in the `days` days before `end`.
    pub end: OffsetDateTime,
    pub days: u32,
    pub products: usize,
    pub customers: usize,
    pub stores: usize,
}

impl EventMix {
    pub fn new(seed: u64, end: OffsetDateTime, days: u32) -> EventMix {
        EventMix {
            seed,
            end,
            days,
            products: 2_000,
            customers: 50_000,
            stores: 2,
        }
    }
}

const QUERIES: [&str; 12] = [
    "coffee",
    "espresso beans",
    "mug",
    "grinder",
    "tea",
    "kettle",
    "filter papers",
    "decaf",
    "cold brew",
    "milk frother",
    "unicorn latte",
    "xyzzy",
];

/// An endless stream of events, session by session.
pub struct EventStream {
    mix: EventMix,
    rng: Rng,
    pending: std::collections::VecDeque<Event>,
}

impl EventStream {
    pub fn new(mix: EventMix) -> EventStream {
        EventStream {
            rng: Rng::new(mix.seed),
            mix,
            pending: Default::default(),
        }
    }

    fn product(&mut self) -> (String, String) {
        // A few products draw most of the views (a rough power law).
        let n = self.mix.products.max(1);
        let skewed = self.rng.below(n) * self.rng.below(n) / n;
        (format!("product-{skewed:05}"), format!("SKU-{skewed:05}"))
    }

    fn session(&mut self) {
        let r = &mut self.rng;
        let channel = match r.below(100) {
            0..=54 => Channel::Web,
            55..=84 => Channel::Mobile,
            85..=94 => Channel::Pos,
            _ => Channel::Board,
        };
        let customer = CustomerId(ulid::Ulid(1 + r.below(self.mix.customers.max(1)) as u128));
        let anonymous = AnonymousId(ulid::Ulid::from_parts(r.next_u64(), r.next_u64() as u128));
        let known = r.one_in(3);
        let mut subject = if known {
            Subject::Customer(customer)
        } else {
            Subject::Anonymous(anonymous)
        };
        let span = i64::from(self.mix.days.max(1)) * 86_400;
        let offset = r.below(span as usize) as i64;
        let mut at = self.mix.end - Duration::seconds(span - offset);
        let store = format!("store-{}", 1 + r.below(self.mix.stores.max(1)));
        let in_store = matches!(channel, Channel::Pos | Channel::Board);
        let mut out = Vec::new();
        let step = |out: &mut Vec<Event>, rng: &mut Rng, subject, kind, at: &mut OffsetDateTime| {
            *at += Duration::seconds(5 + rng.below(60) as i64);
            let e = Event::new(*at, subject, channel, kind);
            out.push(if in_store { e.with("store", &store) } else { e });
        };
        step(&mut out, r, subject, EventKind::PageView, &mut at);
        if r.below(10) < 4 {
            let query = QUERIES[r.below(QUERIES.len())];
            let results = if query == "xyzzy" || query == "unicorn latte" {
                0
            } else {
                1 + r.below(40)
            };
            step(&mut out, r, subject, EventKind::Search, &mut at);
            if let Some(e) = out.last_mut() {
                e.payload.insert("query".into(), query.into());
                e.payload.insert("results".into(), results.to_string());
            }
        }
        let views = 1 + self.rng.below(6);
        let mut viewed = Vec::new();
        for _ in 0..views {
            let (slug, sku) = self.product();
            step(
                &mut out,
                &mut self.rng,
                subject,
                EventKind::ProductView,
                &mut at,
            );
            if let Some(e) = out.last_mut() {
                e.payload.insert("slug".into(), slug.clone());
                e.payload.insert("sku".into(), sku.clone());
            }
            viewed.push((slug, sku));
        }
        let r = &mut self.rng;
        if !known && r.one_in(5) {
            step(
                &mut out,
                r,
                Subject::Customer(customer),
                EventKind::SignedIn,
                &mut at,
            );
            if let Some(e) = out.last_mut() {
                e.payload
                    .insert("anonymous_id".into(), anonymous.to_string());
            }
            subject = Subject::Customer(customer);
        }
        if r.below(10) < 3 {
            let basket = BasketId::new();
            let mut lines = Vec::new();
            for (slug, sku) in viewed.iter().take(1 + r.below(3)) {
                let quantity = 1 + r.below(3);
                step(&mut out, r, subject, EventKind::BasketLineAdded, &mut at);
                if let Some(e) = out.last_mut() {
                    e.payload.insert("basket".into(), basket.to_string());
                    e.payload.insert("slug".into(), slug.clone());
                    e.payload.insert("sku".into(), sku.clone());
                    e.payload.insert("quantity".into(), quantity.to_string());
                }
                lines.push((slug.clone(), sku.clone(), quantity));
            }
            if r.one_in(2) {
                step(&mut out, r, subject, EventKind::CheckoutStarted, &mut at);
                if let Some(e) = out.last_mut() {
                    e.payload.insert("basket".into(), basket.to_string());
                }
                if r.below(10) < 7 {
                    let cents: usize = lines.iter().map(|l| l.2 * (500 + r.below(5_000))).sum();
                    step(&mut out, r, subject, EventKind::OrderPlaced, &mut at);
                    if let Some(e) = out.last_mut() {
                        let join = |f: &dyn Fn(&(String, String, usize)) -> String| {
                            lines.iter().map(f).collect::<Vec<_>>().join(",")
                        };
                        e.payload.insert("order".into(), OrderId::new().to_string());
                        e.payload.insert("basket".into(), basket.to_string());
                        e.payload.insert(
                            "amount".into(),
                            format!("{}.{:02}", cents / 100, cents % 100),
                        );
                        e.payload.insert("currency".into(), "EUR".into());
                        e.payload
                            .insert("products".into(), join(&|l| format!("{}:{}", l.0, l.2)));
                        e.payload
                            .insert("skus".into(), join(&|l| format!("{}:{}", l.1, l.2)));
                        if !in_store {
                            e.payload.insert("store".into(), "online".into());
                        }
                    }
                }
            }
        }
        self.pending.extend(out);
    }
}

impl Iterator for EventStream {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        while self.pending.is_empty() {
            self.session();
        }
        self.pending.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_make_a_plausible_mix_within_the_days() {
        let end = OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("valid time");
        let events: Vec<Event> = EventStream::new(EventMix::new(7, end, 30))
            .take(20_000)
            .collect();
        let count = |k: EventKind| events.iter().filter(|e| e.kind == k).count();
        assert!(count(EventKind::ProductView) > count(EventKind::BasketLineAdded));
        assert!(count(EventKind::BasketLineAdded) > count(EventKind::OrderPlaced));
        assert!(count(EventKind::OrderPlaced) > 0 && count(EventKind::SignedIn) > 0);
        let start = end - Duration::days(30);
        assert!(events
            .iter()
            .all(|e| e.at >= start && e.at <= end + Duration::hours(2)));
    }
}
