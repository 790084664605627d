//! Click-and-collect on the hub's edge replica (`docs/click-and-collect.md`):
//!
//! - [`PromisePickup`]: a paid pickup order consumes the **hub's** rights at the store for its
//!   units (`REPLICATION.md`, "holds are not consumption": only a paid order consumes) and puts
//!   the order on the store's pick list with a `Command(Pickup)` — the consumption, the hub's
//!   row of each counter for the node and the command in one durable write, once per order
//!   (the order's id is kept with the node commands seen).
//! - The node's `Item::Pickup` reports (picked, short, collected) are merged once by id and
//!   stored with the merge; once it is durable the [`ReportSink`] wakes the applier
//!   (`crate::collect::apply_reports`), which applies the stored reports to their orders.

use super::EdgeReplica;
use crate::edge::merge::Working;
use crate::edge::EdgeError;
use actix::prelude::*;
use protocol::replication::sync::{Item, Scarce};
use protocol::replication::{Command, CommandKind, PickupOrder, PickupReport, ReplicaId};
use protocol::Sku;
use std::sync::{Arc, OnceLock};
use tokio::sync::mpsc;

/// Wakes the applier of stored pickup reports after a merge brought new ones (set once it
/// listens). Only a wake-up: the stored reports are the truth, and the applier also looks at
/// them at start-up and periodically.
#[derive(Clone, Default)]
pub struct ReportSink(Arc<OnceLock<mpsc::UnboundedSender<Vec<PickupReport>>>>);

impl ReportSink {
    /// Listens for reports (once; a second listener is refused and gets `None`).
    pub fn listen(&self) -> Option<mpsc::UnboundedReceiver<Vec<PickupReport>>> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.0.set(tx).ok().map(|()| rx)
    }

    pub(crate) fn send(&self, reports: Vec<PickupReport>) {
        if reports.is_empty() {
            return;
        }
        match self.0.get() {
            Some(tx) => {
                if tx.send(reports).is_err() {
                    tracing::error!("pickup reports merged but nobody applies them to orders");
                }
            }
            None => tracing::info!(
                reports = reports.len(),
                "pickup reports merged before the applier listens: applied once it does"
            ),
        }
    }
}

/// Units of a pickup order the hub held too few rights for (SKU, units short).
pub type Short = Vec<(Sku, u64)>;

/// Promises a paid pickup order at its store (see the module docs). Answers the units the hub
/// held too few rights for (empty: all promised); a second promise of the same order changes
/// nothing and answers empty.
#[derive(Message)]
#[rtype(result = "Result<Short, EdgeError>")]
pub struct PromisePickup(pub PickupOrder);

impl Handler<PromisePickup> for EdgeReplica {
    type Result = AtomicResponse<Self, Result<Short, EdgeError>>;

    fn handle(&mut self, msg: PromisePickup, _ctx: &mut Context<Self>) -> Self::Result {
        let ready = |r| AtomicResponse::new(Box::pin(actix::fut::ready(r)));
        let order = msg.0;
        if !self.nodes.is_store(&order.location) {
            return ready(Err(EdgeError::NotAStore(order.location)));
        }
        let retired = self.retired_set();
        let Some(owner) = self
            .nodes
            .of_location(&order.location)
            .filter(|n| !retired.contains(&n.replica))
            .last()
            .map(|n| n.replica.clone())
        else {
            return ready(Err(EdgeError::NoActiveNode(order.location)));
        };
        let at = self.hlc.now(self.now_ms());
        let store = self.store.clone();
        AtomicResponse::new(Box::pin(
            async move {
                let marker = order.order.0;
                if store.command_seen(marker).await? {
                    return Ok((Vec::new(), None));
                }
                let hub = ReplicaId::hub();
                let mut w = Working::new(store.as_ref());
                let mut short = Vec::new();
                for line in &order.lines {
                    let key = Scarce::Stock {
                        sku: line.sku.clone(),
                        location: order.location.clone(),
                    };
                    let rights = w.rights_mut(&key).await?;
                    let want = u64::from(line.quantity);
                    let got = rights.consume_up_to(&hub, want);
                    if got < want {
                        short.push((line.sku.clone(), want - got));
                    }
                    let row = rights.row(&hub);
                    w.queue(&owner, Item::Rights { key, state: row });
                }
                w.queue(
                    &owner,
                    Item::Command(Command {
                        id: ulid::Ulid::new(),
                        kind: CommandKind::Pickup(order.clone()),
                        at,
                    }),
                );
                w.write.commands_seen.push(marker);
                let planned = w.finish();
                let last = store.commit(planned.write).await?;
                tracing::info!(order = %order.number, node = %owner, short = short.len(),
                    "pickup promised and queued for the store");
                Ok((short, Some(last)))
            }
            .into_actor(self)
            .map(|res: Result<_, EdgeError>, act, _| {
                let (short, last) = res?;
                if let Some(last) = last {
                    act.outbox_grew(last);
                }
                Ok(short)
            }),
        ))
    }
}
