//! Store returns on the hub (`docs/pos.md`, "Returns and exchanges"): the nodes' return
//! records, merged once each (by id) in the edge tree with the sync batch that carried them;
//! the card refunds they ask for, made through the payment provider exactly once; and the
//! receipt lookup a node uses for a sale it did not make (`GET /api/v1/edge/receipts/{receipt}`,
//! authenticated with the node's credential like the sync WebSocket).
//!
//! Keys in the `edge` tree: `return/{id}` ([`StoredReturn`]), `returnsale/{sale}\0{return}`
//! (empty), `salenum/{number}` (the sale id, 16 bytes; sales merged before it are found by a
//! scan), `refunddue/{return}` (empty: card refunds still to make), `refunded/{return}`
//! ([`RefundOutcome`]).
//!
//! Exactly once: a return is stored once by id, and its `refunddue` row lands in the same
//! transaction, so a batch sent again asks for nothing more. The worker makes each card refund
//! with the idempotency key `pos-return-{return id}-{refund index}` and only then removes the
//! row: a crash in between repeats the call with the same key, which the provider answers with
//! the first refund instead of paying twice.

use crate::app::HubHandle;
use crate::payments::client::{backoff, PaymentClient, ProviderError};
use crate::storage::sled::SledStorage;
use crate::storage::StorageError;
use actix_web::{web, HttpRequest, HttpResponse};
use channels::error::ApiError;
use protocol::replication::{ReturnRecord, SaleRecord};
use protocol::{codec, Stored};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use ulid::Ulid;

/// How often the refund worker looks for refunds to make when nothing woke it.
const POLL: Duration = Duration::from_millis(500);

/// A store's return as the hub keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StoredReturn(pub ReturnRecord);

impl Stored for StoredReturn {
    const KIND: &'static str = "edge_return";
    const VERSION: u16 = 1;
}

/// What the provider answered for a return's card refunds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundOutcome {
    /// Per card refund of the return: the payment reference and the provider's refund id, or
    /// the provider's refusal (a person must look).
    pub refunds: Vec<RefundResult>,
    pub at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundResult {
    pub reference: String,
    pub amount_minor: i64,
    #[serde(default)]
    pub refund: Option<String>,
    #[serde(default)]
    pub refused: Option<String>,
}

impl Stored for RefundOutcome {
    const KIND: &'static str = "edge_refund_outcome";
    const VERSION: u16 = 1;
}

fn key(prefix: &str, parts: &[&[u8]]) -> Vec<u8> {
    let mut k = prefix.as_bytes().to_vec();
    k.push(b'/');
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            k.push(0);
        }
        k.extend_from_slice(part);
    }
    k
}

pub(super) fn return_key(id: Ulid) -> Vec<u8> {
    key("return", &[&id.0.to_be_bytes()])
}

fn of_sale_prefix(sale: Ulid) -> Vec<u8> {
    let mut k = key("returnsale", &[&sale.0.to_be_bytes()]);
    k.push(0);
    k
}

fn due_key(id: Ulid) -> Vec<u8> {
    key("refunddue", &[&id.0.to_be_bytes()])
}

pub(super) fn sale_number_key(number: &str) -> Vec<u8> {
    key("salenum", &[number.as_bytes()])
}

/// Whether a return asks the hub for card refunds.
fn has_card_refunds(r: &ReturnRecord) -> bool {
    r.refunds
        .iter()
        .any(|p| p.method == "card" && p.reference.is_some())
}

/// Adds a new return (not stored yet: the caller checked) to an edge-tree batch: the record,
/// its index by sale, and its due card refunds.
pub(super) fn stage(batch: &mut sled::Batch, r: &ReturnRecord) -> Result<(), StorageError> {
    batch.insert(return_key(r.id), codec::encode(&StoredReturn(r.clone()))?);
    let mut link = of_sale_prefix(r.sale);
    link.extend_from_slice(&r.id.0.to_be_bytes());
    batch.insert(link, Vec::new());
    if has_card_refunds(r) {
        batch.insert(due_key(r.id), Vec::new());
    }
    Ok(())
}

fn io(e: impl std::fmt::Display) -> StorageError {
    StorageError::Io(e.to_string())
}

/// The returns side of the hub's edge tree: lookups, and the card refund worker.
pub struct Returns {
    db: sled::Db,
    tree: sled::Tree,
}

impl Returns {
    /// Opens the `edge` tree of the hub's database.
    pub fn open(storage: &SledStorage) -> Result<Arc<Returns>, StorageError> {
        let (db, tree, _) = storage.module_trees("edge")?;
        Ok(Arc::new(Returns { db, tree }))
    }

    fn get<T: Stored>(&self, k: &[u8]) -> Result<Option<T>, StorageError> {
        match self.tree.get(k).map_err(io)? {
            Some(v) => Ok(Some(codec::decode(&v)?)),
            None => Ok(None),
        }
    }

    /// A store sale by id or receipt number (as typed, or in upper or lower case).
    pub fn sale(&self, receipt: &str) -> Result<Option<SaleRecord>, StorageError> {
        let typed = receipt.trim();
        let by_id = |id: Ulid| -> Result<Option<SaleRecord>, StorageError> {
            Ok(self
                .get::<super::store::StoredSale>(&key("sale", &[&id.0.to_be_bytes()]))?
                .map(|s| s.0))
        };
        if let Ok(id) = Ulid::from_string(typed) {
            if let Some(s) = by_id(id)? {
                return Ok(Some(s));
            }
        }
        let candidates = [
            typed.to_string(),
            typed.to_ascii_uppercase(),
            typed.to_ascii_lowercase(),
        ];
        for c in &candidates {
            if let Some(v) = self.tree.get(sale_number_key(c)).map_err(io)? {
                if let Ok(bytes) = <[u8; 16]>::try_from(v.as_ref()) {
                    if let Some(s) = by_id(Ulid(u128::from_be_bytes(bytes)))? {
                        return Ok(Some(s));
                    }
                }
            }
        }
        // Sales merged before the number index was kept.
        for kv in self.tree.scan_prefix(key("sale", &[])) {
            let (_, v) = kv.map_err(io)?;
            let super::store::StoredSale(sale) = codec::decode(&v)?;
            if candidates.contains(&sale.number) {
                return Ok(Some(sale));
            }
        }
        Ok(None)
    }

    /// The returns of a sale the hub has merged, from every store, oldest first.
    pub fn of_sale(&self, sale: Ulid) -> Result<Vec<ReturnRecord>, StorageError> {
        let mut out = Vec::new();
        for kv in self.tree.scan_prefix(of_sale_prefix(sale)) {
            let (k, _) = kv.map_err(io)?;
            let tail = &k[k.len().saturating_sub(16)..];
            let Ok(bytes) = <[u8; 16]>::try_from(tail) else {
                continue;
            };
            if let Some(StoredReturn(r)) =
                self.get(&return_key(Ulid(u128::from_be_bytes(bytes))))?
            {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// What the provider answered for a return's card refunds, once made.
    pub fn outcome(&self, id: Ulid) -> Result<Option<RefundOutcome>, StorageError> {
        self.get(&key("refunded", &[&id.0.to_be_bytes()]))
    }

    /// Runs the card refund worker until the system stops.
    pub fn start_worker(self: &Arc<Self>, payments: PaymentClient) {
        let me = self.clone();
        actix::spawn(async move {
            let mut failures = 0u32;
            loop {
                match me.round(&payments).await {
                    Ok(()) => failures = 0,
                    Err(e) => {
                        tracing::warn!(error = %e, "store card refunds: will retry");
                        tokio::time::sleep(backoff(failures.min(5))).await;
                        failures = failures.saturating_add(1);
                    }
                }
                tokio::time::sleep(POLL).await;
            }
        });
    }

    /// Makes every due card refund. A provider that cannot be reached leaves the rest for the
    /// next round.
    async fn round(&self, payments: &PaymentClient) -> Result<(), String> {
        let due: Vec<Ulid> = self
            .tree
            .scan_prefix(key("refunddue", &[]))
            .keys()
            .filter_map(|k| k.ok())
            .filter_map(|k| <[u8; 16]>::try_from(&k[k.len().saturating_sub(16)..]).ok())
            .map(|b| Ulid(u128::from_be_bytes(b)))
            .collect();
        for id in due {
            let Some(StoredReturn(r)) = self.get(&return_key(id)).map_err(|e| e.to_string())?
            else {
                continue;
            };
            let outcome = self.refund(payments, &r).await?;
            let mut batch = sled::Batch::default();
            batch.remove(due_key(id));
            batch.insert(
                key("refunded", &[&id.0.to_be_bytes()]),
                codec::encode(&outcome).map_err(|e| e.to_string())?,
            );
            self.tree.apply_batch(batch).map_err(|e| e.to_string())?;
            self.db.flush().map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// The card refunds of one return, each with its own idempotency key.
    async fn refund(
        &self,
        payments: &PaymentClient,
        r: &ReturnRecord,
    ) -> Result<RefundOutcome, String> {
        let mut results = Vec::new();
        for (i, p) in r.refunds.iter().enumerate() {
            let (true, Some(reference)) = (p.method == "card", p.reference.as_ref()) else {
                continue;
            };
            let idempotency = format!("pos-return-{}-{i}", r.id);
            let reason = format!("store return {} of {}", r.number, r.sale_number);
            let mut result = RefundResult {
                reference: reference.clone(),
                amount_minor: p.amount.minor,
                refund: None,
                refused: None,
            };
            match payments
                .refund(reference, p.amount.minor, &reason, &idempotency)
                .await
            {
                Ok(refund) => {
                    tracing::info!(r#return = %r.number, refund = %refund.id, amount = p.amount.minor, "store card refund made");
                    result.refund = Some(refund.id);
                }
                Err(e @ ProviderError::Api { .. }) => {
                    tracing::error!(r#return = %r.number, reference = %reference, error = %e, "the provider refused a store card refund: a person must refund it");
                    result.refused = Some(e.to_string());
                }
                Err(e) => return Err(e.to_string()),
            }
            results.push(result);
        }
        Ok(RefundOutcome {
            refunds: results,
            at_ms: super::unix_ms(time::OffsetDateTime::now_utc()),
        })
    }
}

/// `GET /api/v1/edge/receipts/{receipt}`: a store sale and the returns made of it, for a node
/// (its credential as `Authorization: Bearer`) taking back goods sold at another store.
pub async fn receipt(
    req: HttpRequest,
    path: web::Path<String>,
    handle: web::Data<HubHandle>,
    returns: web::Data<Arc<Returns>>,
) -> Result<HttpResponse, ApiError> {
    let presented = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .filter(|c| !c.is_empty());
    let Some(node) = presented
        .and_then(|c| handle.edge.nodes.authenticate(c))
        .cloned()
    else {
        return Err(ApiError::new(
            actix_web::http::StatusCode::UNAUTHORIZED,
            "edge_credential_required",
            "send an edge node's credential as Authorization: Bearer <credential>",
        ));
    };
    let receipt = path.into_inner();
    let book = returns.get_ref().clone();
    let r = receipt.clone();
    let found = web::block(move || -> Result<_, StorageError> {
        match book.sale(&r)? {
            Some(sale) => {
                let returns = book.of_sale(sale.id)?;
                Ok(Some((sale, returns)))
            }
            None => Ok(None),
        }
    })
    .await
    .map_err(|e| ApiError::from(channels::BackendError::Unavailable(e.to_string())))?
    .map_err(|e| ApiError::from(channels::BackendError::Unavailable(e.to_string())))?;
    tracing::info!(node = %node.replica, found = found.is_some(), "receipt lookup");
    match found {
        Some((sale, returns)) => {
            Ok(HttpResponse::Ok().json(serde_json::json!({ "sale": sale, "returns": returns })))
        }
        None => Err(ApiError::new(
            actix_web::http::StatusCode::NOT_FOUND,
            "unknown_receipt",
            format!(
                "no store sale has receipt number '{}'",
                receipt
                    .chars()
                    .filter(|c| !c.is_control())
                    .take(40)
                    .collect::<String>()
            ),
        )),
    }
}
