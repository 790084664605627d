//! Property tests of the replicated types: every merge is commutative, associative and
//! idempotent; random operations delivered in random order, with duplicates, converge; and for
//! sell rights, no interleaving of consume, transfer, hold and merge across three replicas lets
//! the total consumed exceed the total created or a replica's own rights go below zero.

use super::*;
use proptest::prelude::*;
use std::collections::BTreeMap;

fn replica(i: usize) -> ReplicaId {
    ["hub", "berlin", "hamburg"]
        .get(i)
        .map(|s| ReplicaId(s.to_string()))
        .unwrap_or_else(ReplicaId::hub)
}

// ---------- OnHand (PN-counter) ----------

fn on_hand() -> impl Strategy<Value = OnHand> {
    proptest::collection::vec((0usize..3, any::<bool>(), 0u64..50), 0..12).prop_map(|ops| {
        let mut c = OnHand::new();
        for (r, up, n) in ops {
            if up {
                c.add(&replica(r), n);
            } else {
                c.remove(&replica(r), n);
            }
        }
        c
    })
}

proptest! {
    #[test]
    fn on_hand_merge_is_a_semilattice(a in on_hand(), b in on_hand(), c in on_hand()) {
        let merged = |x: &OnHand, y: &OnHand| { let mut m = x.clone(); m.merge(y); m };
        prop_assert_eq!(merged(&a, &b), merged(&b, &a));
        prop_assert_eq!(merged(&merged(&a, &b), &c), merged(&a, &merged(&b, &c)));
        prop_assert_eq!(merged(&a, &a), a.clone());
    }

    /// Each replica moves stock and ships its entry after every move; the entries arrive at a
    /// second copy in any order, some twice: it ends where the first did.
    #[test]
    fn on_hand_entries_in_any_order_with_duplicates_converge(
        ops in proptest::collection::vec((0usize..3, any::<bool>(), 1u64..20), 1..30),
        order in proptest::collection::vec(any::<prop::sample::Index>(), 0..60),
    ) {
        let mut source = OnHand::new();
        let mut shipped = Vec::new();
        for (r, up, n) in &ops {
            let id = replica(*r);
            let entry = if *up { source.add(&id, *n) } else { source.remove(&id, *n) };
            shipped.push((id, entry));
        }
        let mut copy = OnHand::new();
        for i in &order {
            let (id, entry) = i.get(&shipped);
            copy.apply_entry(id, *entry);
        }
        for (id, entry) in &shipped {
            copy.apply_entry(id, *entry);
        }
        prop_assert_eq!(copy.value(), source.value());
        prop_assert_eq!(copy, source.clone());
        let expected: i64 = ops.iter().map(|(_, up, n)| if *up { *n as i64 } else { -(*n as i64) }).sum();
        prop_assert_eq!(source.value(), expected);
    }
}

// ---------- Rights (bounded counter) ----------

/// One replica of a scarce SKU: its view of the rights and its hub-local holds.
#[derive(Clone, Debug, Default)]
struct Site {
    rights: Rights,
    /// Units held for checkouts waiting for payment (never consumption).
    holds: u64,
}

#[derive(Clone, Debug)]
enum Op {
    Create(usize, u64),
    Consume(usize, u64),
    Transfer(usize, usize, u64),
    Hold(usize, u64),
    /// A held unit is paid: the hold becomes consumption.
    Pay(usize, u64),
    Release(usize, u64),
    /// `to` merges what `from` has (a sync in either direction, possibly stale or repeated).
    Merge(usize, usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0usize..3, 1u64..10).prop_map(|(r, n)| Op::Create(r, n)),
        (0usize..3, 1u64..6).prop_map(|(r, n)| Op::Consume(r, n)),
        (0usize..3, 0usize..3, 1u64..6).prop_map(|(a, b, n)| Op::Transfer(a, b, n)),
        (0usize..3, 1u64..4).prop_map(|(r, n)| Op::Hold(r, n)),
        (0usize..3, 1u64..4).prop_map(|(r, n)| Op::Pay(r, n)),
        (0usize..3, 1u64..4).prop_map(|(r, n)| Op::Release(r, n)),
        (0usize..3, 0usize..3).prop_map(|(a, b)| Op::Merge(a, b)),
        (0usize..3, 0usize..3).prop_map(|(a, b)| Op::Merge(a, b)),
    ]
}

/// Applies one operation as the replicas would: an operation that its replica's own state does
/// not allow is refused there (and changes nothing).
fn run(sites: &mut [Site], op: &Op) {
    match *op {
        Op::Create(r, n) => sites[r].rights.create(&replica(r), n),
        Op::Consume(r, n) => {
            let site = &mut sites[r];
            let free = site.rights.held(&replica(r)).saturating_sub(site.holds);
            if free >= n {
                site.rights.consume(&replica(r), n).expect("checked");
            }
        }
        Op::Transfer(a, b, n) => {
            let site = &mut sites[a];
            let free = site.rights.held(&replica(a)).saturating_sub(site.holds);
            if free >= n {
                site.rights
                    .transfer(&replica(a), &replica(b), n)
                    .expect("checked");
            }
        }
        Op::Hold(r, n) => {
            let site = &mut sites[r];
            if site.rights.held(&replica(r)).saturating_sub(site.holds) >= n {
                site.holds += n;
            }
        }
        Op::Pay(r, n) => {
            let site = &mut sites[r];
            if site.holds >= n {
                site.rights
                    .consume(&replica(r), n)
                    .expect("held rights are held");
                site.holds -= n;
            }
        }
        Op::Release(r, n) => sites[r].holds = sites[r].holds.saturating_sub(n),
        Op::Merge(from, to) => {
            let theirs = sites[from].rights.clone();
            sites[to].rights.merge(&theirs);
        }
    }
}

fn rights_state() -> impl Strategy<Value = Rights> {
    proptest::collection::vec(op(), 0..25).prop_map(|ops| {
        let mut sites = vec![Site::default(), Site::default(), Site::default()];
        for op in &ops {
            run(&mut sites, op);
        }
        let mut all = Rights::new();
        for s in &sites {
            all.merge(&s.rights);
        }
        // A state some replica could hold: one replica's view, or the union.
        all
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn rights_merge_is_a_semilattice(a in rights_state(), b in rights_state(), c in rights_state()) {
        let merged = |x: &Rights, y: &Rights| { let mut m = x.clone(); m.merge(y); m };
        prop_assert_eq!(merged(&a, &b), merged(&b, &a));
        prop_assert_eq!(merged(&merged(&a, &b), &c), merged(&a, &merged(&b, &c)));
        prop_assert_eq!(merged(&a, &a), a.clone());
    }

    #[test]
    fn no_interleaving_oversells_or_drives_a_replica_negative(ops in proptest::collection::vec(op(), 0..80)) {
        let mut sites = vec![Site::default(), Site::default(), Site::default()];
        for op in &ops {
            run(&mut sites, op);
            for (i, site) in sites.iter().enumerate() {
                // Each replica's view of its own rights is never negative, and covers its holds.
                prop_assert!(site.rights.held_signed(&replica(i)) >= 0);
                prop_assert!(site.rights.held(&replica(i)) >= site.holds);
            }
            let mut all = Rights::new();
            for site in &sites {
                all.merge(&site.rights);
            }
            prop_assert!(all.consumed() <= all.created(), "consumed {} > created {}", all.consumed(), all.created());
            prop_assert!(all.value() >= 0);
            for i in 0..3 {
                prop_assert!(all.held_signed(&replica(i)) >= 0);
            }
        }
    }

    /// Every replica ships its row after every change; rows arrive at an observer in random
    /// order with duplicates and stale copies: it converges to the union of the replicas.
    #[test]
    fn rights_rows_in_any_order_with_duplicates_converge(
        ops in proptest::collection::vec(op(), 1..60),
        order in proptest::collection::vec(any::<prop::sample::Index>(), 0..80),
    ) {
        let mut sites = vec![Site::default(), Site::default(), Site::default()];
        let mut shipped = Vec::new();
        for op in &ops {
            run(&mut sites, op);
            for (i, site) in sites.iter().enumerate() {
                shipped.push(site.rights.row(&replica(i)));
            }
        }
        let mut observer = Rights::new();
        for i in &order {
            observer.merge(i.get(&shipped));
        }
        for row in &shipped {
            observer.merge(row);
        }
        let mut truth = Rights::new();
        for (i, site) in sites.iter().enumerate() {
            truth.merge(&site.rights.row(&replica(i)));
        }
        prop_assert_eq!(observer, truth);
    }
}

// ---------- GrowMap ----------

fn record_of(key: u8) -> String {
    format!("sale-{key}")
}

fn grow_map() -> impl Strategy<Value = GrowMap<u8, String>> {
    proptest::collection::vec(any::<u8>(), 0..20).prop_map(|keys| {
        let mut m = GrowMap::new();
        for k in keys {
            m.insert(k, record_of(k));
        }
        m
    })
}

proptest! {
    #[test]
    fn grow_map_merge_is_a_semilattice(a in grow_map(), b in grow_map(), c in grow_map()) {
        let merged = |x: &GrowMap<u8, String>, y: &GrowMap<u8, String>| { let mut m = x.clone(); m.merge(y); m };
        prop_assert_eq!(merged(&a, &b), merged(&b, &a));
        prop_assert_eq!(merged(&merged(&a, &b), &c), merged(&a, &merged(&b, &c)));
        prop_assert_eq!(merged(&a, &a), a.clone());
    }

    /// Records resent any number of times in any order are each held once.
    #[test]
    fn grow_map_resync_never_duplicates(
        keys in proptest::collection::vec(any::<u8>(), 1..30),
        order in proptest::collection::vec(any::<prop::sample::Index>(), 0..90),
    ) {
        let mut m = GrowMap::new();
        let mut added = 0;
        for i in &order {
            let k = *i.get(&keys);
            if m.insert(k, record_of(k)) { added += 1; }
        }
        for k in &keys {
            if m.insert(*k, record_of(*k)) { added += 1; }
        }
        let distinct: std::collections::BTreeSet<u8> = keys.iter().copied().collect();
        prop_assert_eq!(m.len(), distinct.len());
        prop_assert_eq!(added, distinct.len());
    }
}

// ---------- HLC ----------

proptest! {
    /// Stamps from one clock strictly grow whatever the wall clock and the stamps it observes do.
    #[test]
    fn hlc_stamps_strictly_grow(steps in proptest::collection::vec((0u64..10_000, proptest::option::of((0u64..20_000, 0u32..5))), 1..50)) {
        let mut clock = HybridClock::new(replica(1));
        let mut last: Option<Hlc> = None;
        let mut seen_max: Option<Hlc> = None;
        for (wall, observed) in steps {
            if let Some((ms, c)) = observed {
                let seen = Hlc { ms, c, r: replica(0) };
                clock.observe(&seen);
                seen_max = seen_max.max(Some(seen));
            }
            let stamp = clock.now(wall);
            if let Some(prev) = &last { prop_assert!(&stamp > prev); }
            if let Some(seen) = &seen_max { prop_assert!((stamp.ms, stamp.c) >= (seen.ms, seen.c)); }
            last = Some(stamp);
        }
    }
}

#[test]
fn a_sale_beyond_rights_is_refused_by_the_counter() {
    let node = replica(1);
    let mut r = Rights::new();
    r.create(&node, 2);
    assert_eq!(r.consume_up_to(&node, 5), 2);
    assert_eq!(r.held(&node), 0);
    let totals: BTreeMap<_, _> = r.u.clone();
    assert_eq!(totals.get(&node), Some(&2));
}

// ---------- Coupon redemptions (bounded counter, the hub the only creator) ----------

/// The hub's side of a limited coupon: its replica of the counter, and what the back office
/// knows (online uses, and the uses it was told are away at the stores).
#[derive(Clone, Debug)]
struct CouponHub {
    rights: Rights,
    limit: u64,
    online: u64,
    away_recorded: u64,
}

#[derive(Clone, Debug)]
enum CouponOp {
    /// The hub grants node `usize` up to `u64` rights (what it holds, at most).
    Grant(usize, u64),
    /// An online order redeems the code (the back office's check: online + away < limit).
    Online,
    /// An online order is cancelled: its use is given back.
    Cancel,
    /// A node redeems at the till from the rights it holds (offline or not).
    Redeem(usize),
    /// A node hands back every right it holds (the coupon ended).
    GiveBack(usize),
    /// The back office hears the uses now away (returns lower it).
    Sync,
    /// A sync in one direction: `to` merges `from`'s state (0 is the hub).
    Merge(usize, usize),
}

fn coupon_op() -> impl Strategy<Value = CouponOp> {
    prop_oneof![
        (1usize..3, 1u64..5).prop_map(|(n, k)| CouponOp::Grant(n, k)),
        Just(CouponOp::Online),
        Just(CouponOp::Online),
        Just(CouponOp::Cancel),
        (1usize..3).prop_map(CouponOp::Redeem),
        (1usize..3).prop_map(CouponOp::Redeem),
        (1usize..3).prop_map(CouponOp::GiveBack),
        Just(CouponOp::Sync),
        (0usize..3, 0usize..3).prop_map(|(a, b)| CouponOp::Merge(a, b)),
        (0usize..3, 0usize..3).prop_map(|(a, b)| CouponOp::Merge(a, b)),
    ]
}

impl CouponHub {
    fn new(limit: u64) -> CouponHub {
        let mut rights = Rights::new();
        rights.align_own(&ReplicaId::hub(), limit);
        CouponHub {
            rights,
            limit,
            online: 0,
            away_recorded: 0,
        }
    }

    /// What the edge replica does: the back office first agrees to the uses away (it refuses
    /// more than the limit leaves), then the grant is made.
    fn grant(&mut self, node: &ReplicaId, units: u64) {
        let hub = ReplicaId::hub();
        let mut planned = self.rights.clone();
        let give = units.min(planned.held(&hub));
        if give == 0 || planned.transfer(&hub, node, give).is_err() {
            return;
        }
        let away = planned.given_away(&hub);
        if away > self.away_recorded && self.online + away > self.limit {
            return;
        }
        self.away_recorded = away;
        self.rights = planned;
    }

    fn online(&mut self) {
        if self.online + self.away_recorded < self.limit {
            self.online += 1;
            let short = self
                .rights
                .align_own(&ReplicaId::hub(), self.limit - self.online);
            assert_eq!(
                short, 0,
                "an online use is always covered by the hub's rights"
            );
        }
    }

    fn cancel(&mut self) {
        if self.online > 0 {
            self.online -= 1;
            self.rights
                .align_own(&ReplicaId::hub(), self.limit - self.online);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// A coupon limited to `limit` uses, granted by the hub to two stores, redeemed online and
    /// at both tills, in any interleaving of grants, redemptions, cancellations, give-backs and
    /// merges (stale, repeated, in any direction): online uses plus store uses never exceed the
    /// limit, and no replica's own rights go below zero.
    #[test]
    fn coupon_uses_online_and_in_stores_never_exceed_the_limit(
        limit in 1u64..12,
        ops in proptest::collection::vec(coupon_op(), 0..120),
    ) {
        let mut hub = CouponHub::new(limit);
        let mut nodes = [Rights::new(), Rights::new()];
        for op in &ops {
            match *op {
                CouponOp::Grant(n, k) => hub.grant(&replica(n), k),
                CouponOp::Online => hub.online(),
                CouponOp::Cancel => hub.cancel(),
                CouponOp::Redeem(n) => {
                    let me = replica(n);
                    if nodes[n - 1].held(&me) >= 1 {
                        nodes[n - 1].consume(&me, 1).expect("held");
                    }
                }
                CouponOp::GiveBack(n) => {
                    let me = replica(n);
                    let held = nodes[n - 1].held(&me);
                    nodes[n - 1].transfer(&me, &ReplicaId::hub(), held).expect("held");
                }
                CouponOp::Sync => {
                    let away = hub.rights.given_away(&ReplicaId::hub());
                    prop_assert!(away <= hub.away_recorded, "the back office never hears less than is away");
                    hub.away_recorded = away;
                }
                CouponOp::Merge(from, to) => {
                    let theirs = if from == 0 { hub.rights.row(&ReplicaId::hub()) } else { nodes[from - 1].row(&replica(from)) };
                    if to == 0 {
                        // The hub merges a node's row (the node's own creations are dropped).
                        hub.rights.merge(&theirs);
                    } else {
                        nodes[to - 1].merge(&theirs);
                    }
                }
            }
            let mut all = hub.rights.clone();
            for n in &nodes {
                all.merge(n);
            }
            let store_uses: u64 = (1..3).map(|n| all.u.get(&replica(n)).copied().unwrap_or(0)).sum();
            prop_assert!(hub.online + store_uses <= limit,
                "online {} + stores {store_uses} > limit {limit}", hub.online);
            prop_assert!(hub.rights.held_signed(&ReplicaId::hub()) >= 0);
            for (i, n) in nodes.iter().enumerate() {
                prop_assert!(n.held_signed(&replica(i + 1)) >= 0);
            }
            prop_assert!(all.value() >= 0);
        }
    }
}
