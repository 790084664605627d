//! Coupons at the stores' tills: the hub's side of the coupon escrow (`docs/edge-sync.md`,
//! "Coupons at the till"; `../shared/REPLICATION.md`, point 9).
//!
//! - Every public code of a live promotion travels to each connected node as an
//!   `Item::Coupon` (its terms), again whenever they change. Private single-use codes never do:
//!   they stay with the hub.
//! - A code with a total limit is a bounded counter (`Scarce::Coupon`) whose only creator is
//!   the hub: it makes available `limit − online uses` (`Rights::align_own`, so an online use
//!   consumes from the hub's own rights and a cancelled order's use is created again), and
//!   tops each connected node up to `coupon_grant_per_node` rights, never more per grant than
//!   `coupon_grant_percent` of what it holds. A node redeems only from what it holds.
//! - Before a grant is committed the back office hears how many uses are then away at the
//!   stores (`Offers::set_store_share`), and refuses a share the limit does not leave: the
//!   online check counts the stores' uses and grants, so online plus store uses never exceed
//!   the limit whatever the partitions.
//! - A code no longer live (ended, expired, its promotion ended) gets a `Command(EndCoupon)` to
//!   every node the hub sees holding rights of it: the holder hands them back, and the share
//!   away drops as the rows merge.

use super::merge::{Env, Working};
use super::unix_ms;
use crate::storage::{Result, StorageError};
use protocol::promotion::{Promotion, PromotionId, PromotionSet};
use protocol::replication::sync::{Item, Scarce};
use protocol::replication::{Command, CommandKind, CouponTerms, HybridClock, ReplicaId};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use time::OffsetDateTime;
use ulid::Ulid;

/// Whether a promotion is limited in total or per customer: its uses are counted by orders on
/// the hub, which a node cannot see, so nodes do not apply it (`docs/promotions.md`), and its
/// codes are not shared with the stores.
pub(crate) fn limited(p: &Promotion) -> bool {
    p.spec.limits.total.is_some() || p.spec.limits.per_customer.is_some()
}

/// The promotions the nodes price with: the live set without the limited ones (the same `Arc`
/// when none is). A coupon whose promotion is limited is then refused at the till as not
/// applicable; it may still be used online.
pub fn node_promotions(live: &Arc<PromotionSet>) -> Arc<PromotionSet> {
    if !live.promotions().iter().any(limited) {
        return live.clone();
    }
    let kept: Vec<Promotion> = live
        .promotions()
        .iter()
        .filter(|p| !limited(p))
        .cloned()
        .collect();
    Arc::new(PromotionSet::new(kept))
}

/// A public coupon code as the stores see it (from the back office).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreCoupon {
    /// Upper case.
    pub code: String,
    pub promotion: PromotionId,
    pub max_uses: Option<u64>,
    pub max_uses_per_customer: Option<u64>,
    pub expires_at: Option<OffsetDateTime>,
    /// Uses by online orders.
    pub online: u64,
    /// Uses away at the stores, as the back office last heard.
    pub away: u64,
}

/// How the hub shares a limited coupon's redemptions with the nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CouponPolicy {
    /// Rights each connected node is topped up to.
    pub per_node: u64,
    /// The most of what the hub holds one grant may take (percent).
    pub percent: u8,
}

/// What the replica remembers between passes (in memory: after a restart every node is sent
/// the terms again, which is harmless).
#[derive(Debug, Default)]
pub struct Known {
    /// Per node, the terms last queued (their stamp left out).
    sent: BTreeMap<ReplicaId, BTreeMap<String, CouponTerms>>,
    /// `(node, code)` asked to hand a code's rights back.
    ended: BTreeSet<(ReplicaId, String)>,
    /// Codes no longer live whose share away the back office has heard.
    ended_share: BTreeMap<String, u64>,
}

impl Known {
    /// A node connected again: it is sent every term and end again.
    pub fn forget(&mut self, node: &ReplicaId) {
        self.sent.remove(node);
        self.ended.retain(|(n, _)| n != node);
    }

    /// A code is live (again): a node asked to end it is no longer taken as ended, and is sent
    /// its terms again (a node stores terms as not ended), so it redeems it again; asked to
    /// end it should it end once more.
    fn live_again(&mut self, code: &str) {
        let sent = &mut self.sent;
        self.ended.retain(|(node, c)| {
            if c != code {
                return true;
            }
            if let Some(terms) = sent.get_mut(node) {
                terms.remove(code);
            }
            false
        });
        self.ended_share.remove(code);
    }
}

fn terms_of(c: &StoreCoupon, clock: &mut HybridClock, now: OffsetDateTime) -> CouponTerms {
    CouponTerms {
        code: c.code.clone(),
        promotion: c.promotion.clone(),
        expires_at_ms: c.expires_at.map(unix_ms),
        per_customer: c.max_uses_per_customer,
        limited: c.max_uses.is_some(),
        at: clock.now(unix_ms(now)),
    }
}

fn same_terms(a: &CouponTerms, b: &CouponTerms) -> bool {
    (
        &a.code,
        &a.promotion,
        a.expires_at_ms,
        a.per_customer,
        a.limited,
    ) == (
        &b.code,
        &b.promotion,
        b.expires_at_ms,
        b.per_customer,
        b.limited,
    )
}

fn offers_error(e: String) -> StorageError {
    StorageError::Io(format!("coupon escrow: {e}"))
}

/// One pass over the coupons: terms to the connected nodes, grants topped up, ended codes
/// called back. Touches only rows that change. Answers whether it settled everything it
/// could: `false` when the back office refused a share (a pending checkout or an online order
/// holds what the grant would take), so a later pass with the same inputs tries again.
pub async fn pass(
    w: &mut Working<'_>,
    env: &Env<'_>,
    clock: &mut HybridClock,
    coupons: &[StoreCoupon],
    connected: &[ReplicaId],
    known: &mut Known,
    policy: CouponPolicy,
) -> Result<bool> {
    let hub = ReplicaId::hub();
    let offers = env.offers;
    let mut settled = true;
    for c in coupons {
        known.live_again(&c.code);
        let terms = terms_of(c, clock, env.now);
        let key = Scarce::Coupon {
            code: c.code.clone(),
        };
        let mut row_to: BTreeSet<ReplicaId> = BTreeSet::new();
        for node in connected {
            let sent = known.sent.entry(node.clone()).or_default();
            if sent.get(&c.code).is_none_or(|t| !same_terms(t, &terms)) {
                w.queue(node, Item::Coupon(terms.clone()));
                sent.insert(c.code.clone(), terms.clone());
                row_to.insert(node.clone());
            }
        }
        let Some(limit) = c.max_uses else {
            continue;
        };
        let before = w.rights_view(&key).await?;
        let mut planned = before.clone();
        let available = limit.saturating_sub(c.online);
        let short = planned.align_own(&hub, available);
        if short > 0 {
            tracing::warn!(code = %c.code, short, "online uses beyond what the hub held of a coupon (its limit was lowered?)");
        }
        let aligned = planned.clone();
        let mut granted: Vec<ReplicaId> = Vec::new();
        for node in connected {
            let has = planned.held(node);
            let cap = planned
                .held(&hub)
                .saturating_mul(u64::from(policy.percent.min(100)))
                / 100;
            let give = policy.per_node.saturating_sub(has).min(cap);
            if give > 0 && planned.transfer(&hub, node, give).is_ok() {
                granted.push(node.clone());
            }
        }
        let away = planned.given_away(&hub);
        if away != c.away {
            let agreed = offers
                .set_store_share(&c.code, away)
                .await
                .map_err(offers_error)?;
            if agreed.is_none() {
                // The limit does not leave that much (online uses came in meanwhile): no grant
                // this time; the share is set to what is away without it.
                settled = false;
                planned = aligned;
                granted.clear();
                let away = planned.given_away(&hub);
                if away != c.away {
                    offers
                        .set_store_share(&c.code, away)
                        .await
                        .map_err(offers_error)?;
                }
            }
        }
        if !granted.is_empty() {
            tracing::info!(code = %c.code, nodes = ?granted, away = planned.given_away(&hub),
                "coupon redemptions granted to the stores");
        }
        row_to.extend(granted);
        if planned != before {
            *w.rights_mut(&key).await? = planned.clone();
        }
        let row = planned.row(&hub);
        for node in row_to {
            w.queue(
                &node,
                Item::Rights {
                    key: key.clone(),
                    state: row.clone(),
                },
            );
        }
    }
    end_coupons(w, env, clock, coupons, connected, known).await?;
    Ok(settled)
}

/// Calls back the rights of codes no longer live, and lets the back office hear the share
/// still away as they come back.
async fn end_coupons(
    w: &mut Working<'_>,
    env: &Env<'_>,
    clock: &mut HybridClock,
    coupons: &[StoreCoupon],
    connected: &[ReplicaId],
    known: &mut Known,
) -> Result<()> {
    let hub = ReplicaId::hub();
    let offers = env.offers;
    let live: BTreeSet<&str> = coupons.iter().map(|c| c.code.as_str()).collect();
    for row in w.coupon_rows().await? {
        let Scarce::Coupon { code } = &row.key else {
            continue;
        };
        if live.contains(code.as_str()) {
            continue;
        }
        for node in connected {
            if row.state.held(node) > 0 && known.ended.insert((node.clone(), code.clone())) {
                w.queue(
                    node,
                    Item::Command(Command {
                        id: Ulid::new(),
                        kind: CommandKind::EndCoupon { code: code.clone() },
                        at: clock.now(unix_ms(env.now)),
                    }),
                );
                tracing::info!(%node, %code, "coupon ended: the node is asked for its rights back");
            }
        }
        let away = row.state.given_away(&hub);
        if known.ended_share.get(code) != Some(&away) {
            offers
                .set_store_share(code, away)
                .await
                .map_err(offers_error)?;
            known.ended_share.insert(code.clone(), away);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::promotion::PromotionSpec;

    fn promotion(id: &str, limits: &str) -> Promotion {
        Promotion {
            id: PromotionId::parse(id).expect("id"),
            name: id.into(),
            spec: PromotionSpec::from_json(&format!(
                r#"{{"benefit": {{"type": "percent_off_basket", "percent_bp": 1000}}, "limits": {limits}}}"#
            ))
            .expect("spec"),
            created_seq: 1,
        }
    }

    /// Holds nothing for checkouts.
    struct NoHolds;

    #[async_trait::async_trait]
    impl super::super::merge::Holds for NoHolds {
        fn held(&self, _: &protocol::LocationId, _: &protocol::Sku) -> u64 {
            0
        }
        async fn holders(&self, _: &protocol::LocationId, _: &protocol::Sku) -> Vec<String> {
            Vec::new()
        }
    }

    /// A back office that agrees to every share away at the stores.
    struct Agreeing;

    #[async_trait::async_trait]
    impl crate::actors::offers::Offers for Agreeing {
        fn guard(&self, _: &str) -> std::result::Result<(), u64> {
            Ok(())
        }
        fn record_invalid(&self, _: &str) {}
        async fn check_coupon(
            &self,
            _: &str,
            _: Option<protocol::CustomerId>,
            _: OffsetDateTime,
        ) -> std::result::Result<String, String> {
            Err("unknown".into())
        }
        async fn set_store_share(
            &self,
            _: &str,
            _: u64,
        ) -> std::result::Result<Option<u64>, String> {
            Ok(Some(0))
        }
    }

    /// What one pass queues for `node`.
    async fn one_pass(
        store: &dyn crate::edge::store::EdgeStore,
        env: &Env<'_>,
        clock: &mut HybridClock,
        coupons: &[StoreCoupon],
        known: &mut Known,
        node: &ReplicaId,
    ) -> Vec<Item> {
        let mut w = Working::new(store);
        let policy = CouponPolicy {
            per_node: 2,
            percent: 50,
        };
        pass(
            &mut w,
            env,
            clock,
            coupons,
            std::slice::from_ref(node),
            known,
            policy,
        )
        .await
        .expect("a pass");
        let planned = w.finish();
        let queued = planned
            .write
            .outbox
            .iter()
            .filter(|(n, _)| n == node)
            .flat_map(|(_, items)| items.clone())
            .collect();
        store.commit(planned.write).await.expect("committed");
        queued
    }

    #[actix_web::test]
    async fn a_code_live_again_is_sent_its_terms_again_and_ended_again_later() {
        let dir = tempfile::tempdir().expect("dir");
        let storage = crate::storage::sled::SledStorage::open(dir.path(), 8).expect("opens");
        let store = crate::edge::sled_store::SledEdgeStore::open(&storage).expect("tree");
        let settings = crate::config::EdgeSettings {
            nodes: vec![crate::config::EdgeNodeSettings {
                replica: "berlin".into(),
                location: "store-berlin".into(),
                name: "Berlin".into(),
                credential_sha256: hex::encode(crate::auth::token_hash("berlin-credential")),
            }],
            ..crate::config::EdgeSettings::default()
        };
        let nodes = crate::edge::Nodes::from_settings(&settings).expect("nodes");
        let env = Env {
            nodes: &nodes,
            holds: &NoHolds,
            offers: &Agreeing,
            now: OffsetDateTime::now_utc(),
        };
        let berlin = ReplicaId("berlin".into());
        let code = StoreCoupon {
            code: "LATER4".into(),
            promotion: PromotionId::parse("SPRING").expect("id"),
            max_uses: Some(4),
            max_uses_per_customer: None,
            expires_at: None,
            online: 0,
            away: 0,
        };
        let mut clock = HybridClock::new(ReplicaId::hub());
        let mut known = Known::default();
        let terms = |items: &[Item]| {
            items
                .iter()
                .any(|i| matches!(i, Item::Coupon(t) if t.code == "LATER4"))
        };
        let ends = |items: &[Item]| {
            items.iter().any(|i| {
                matches!(i, Item::Command(Command { kind: CommandKind::EndCoupon { code }, .. }) if code == "LATER4")
            })
        };
        let live = std::slice::from_ref(&code);

        let first = one_pass(store.as_ref(), &env, &mut clock, live, &mut known, &berlin).await;
        assert!(terms(&first), "{first:?}");
        // The code ends: the node, which holds rights of it, is asked for them back.
        let ended = one_pass(store.as_ref(), &env, &mut clock, &[], &mut known, &berlin).await;
        assert!(ends(&ended), "{ended:?}");
        // Live again: its terms go out again (the node stores them as not ended).
        let again = one_pass(store.as_ref(), &env, &mut clock, live, &mut known, &berlin).await;
        assert!(terms(&again), "{again:?}");
        let quiet = one_pass(store.as_ref(), &env, &mut clock, live, &mut known, &berlin).await;
        assert!(!terms(&quiet), "sent once: {quiet:?}");
        // And ending once more asks again.
        let ended = one_pass(store.as_ref(), &env, &mut clock, &[], &mut known, &berlin).await;
        assert!(ends(&ended), "{ended:?}");
    }

    #[test]
    fn nodes_do_not_get_promotions_whose_uses_only_the_hub_counts() {
        let open = promotion("OPEN", r#"{"per_order": 2}"#);
        let live = Arc::new(PromotionSet::new(vec![
            open.clone(),
            promotion("TOTAL", r#"{"total": 100}"#),
            promotion("EACH", r#"{"per_customer": 1}"#),
        ]));
        let sent = node_promotions(&live);
        assert_eq!(sent.promotions(), std::slice::from_ref(&open));
        // Nothing limited: the very same set.
        let plain = Arc::new(PromotionSet::new(vec![open]));
        assert!(Arc::ptr_eq(&node_promotions(&plain), &plain));
    }
}
