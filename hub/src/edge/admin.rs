//! The operator's view of the edge nodes, under the admin API (`/api/v1/admin/edge/*`, behind the
//! admin token): each node's connection, backlog each way, `have` vectors, clock skew, rights
//! per scarce SKU, deficits with their settlements, conflicts and retirement; retiring a
//! replica; and the store sales the hub has merged.

use super::replica::{NodeLive, Retire};
use super::store::{DeficitView, OnHandRow, RightsRow};
use super::{from_unix_ms, unix_ms, EdgeError, EdgeHandle};
use crate::app::HubHandle;
use crate::backoffice::access::{policy, Staff};
use actix_web::{web, HttpResponse};
use channels::error::ApiError;
use protocol::replication::sync::Scarce;
use protocol::replication::ReplicaId;
use protocol::LocationId;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Rights at or below this value are "scarce" in the node list.
pub const SCARCE_AT: i128 = 5;

/// How many deficits and conflicts a node's view lists.
const RECORDS: usize = 100;

/// Registers the routes inside the admin scope.
pub fn routes(scope: actix_web::Scope) -> actix_web::Scope {
    super::boards::routes(scope)
        .route("/edge/nodes", web::get().to(list))
        .route("/edge/nodes/{replica}", web::get().to(show))
        .route("/edge/nodes/{replica}/retire", web::post().to(retire))
        .route("/edge/sales", web::get().to(sales))
        .route("/edge/coupons", web::get().to(coupons))
        .route("/edge/refunds", web::get().to(super::returns::list_refunds))
        .route(
            "/edge/refunds/{return}/retry",
            web::post().to(super::returns::retry_refund),
        )
}

/// The API error of an edge error.
pub fn api_error(e: EdgeError) -> ApiError {
    match e {
        EdgeError::UnknownNode(r) => ApiError::not_found(&format!("edge node '{r}'")),
        EdgeError::NotAStore(l) => ApiError::unprocessable(
            "unknown_location",
            format!("location '{l}' is not owned by any edge node"),
        ),
        EdgeError::NoActiveNode(l) => ApiError::new(
            actix_web::http::StatusCode::CONFLICT,
            "no_active_node",
            format!("every node of location '{l}' is retired: configure the rebuilt node first"),
        ),
        other => ApiError::from(channels::BackendError::Unavailable(other.to_string())),
    }
}

fn time_json(ms: Option<u64>) -> Value {
    ms.map(from_unix_ms)
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .map_or(Value::Null, Value::String)
}

fn rights_json(
    key: &Scarce,
    rights: &protocol::replication::Rights,
    node: &ReplicaId,
    on_hand: Option<i64>,
) -> Value {
    let (sku, location) = match key {
        Scarce::Stock { sku, location } => (json!(sku), json!(location.0)),
        Scarce::Coupon { code } => (Value::Null, json!(format!("coupon:{code}"))),
    };
    json!({
        "sku": sku,
        "location": location,
        "value": i64::try_from(rights.value()).unwrap_or(i64::MAX),
        "on_hand": on_hand,
        "hub_holds": rights.held_signed(&ReplicaId::hub()).max(0),
        "node_holds": rights.held_signed(node).max(0),
        "created": rights.created(),
        "consumed": rights.consumed(),
        "written_off": rights.w.values().sum::<u64>(),
    })
}

fn deficit_json(d: &DeficitView) -> Value {
    json!({
        "id": d.deficit.id,
        "sku": d.deficit.sku,
        "units": d.deficit.units,
        "reason": d.deficit.reason,
        "sale": d.deficit.sale,
        "clerk": d.deficit.clerk,
        "replica": d.deficit.replica,
        "at": time_json(Some(d.deficit.at.ms)),
        "settlement": d.settlement.as_ref().map(|s| json!({
            "settled": s.settled,
            "short": s.short,
            "flagged": s.flagged,
            "at": time_json(Some(s.at.ms)),
        })),
    })
}

/// Everything the hub knows of one node; `all_rights` lists every key (the detail view), else
/// only the scarce ones.
async fn node_json(
    edge: &EdgeHandle,
    live: &NodeLive,
    all_rights: bool,
) -> Result<Value, ApiError> {
    let store = edge.store();
    let map = |e| api_error(EdgeError::from(e));
    let on_hand: BTreeMap<String, i64> = store
        .location_on_hand(&live.location)
        .await
        .map_err(map)?
        .into_iter()
        .map(|r: OnHandRow| (r.sku.as_str().to_string(), r.state.value()))
        .collect();
    let rows: Vec<RightsRow> = store.location_rights(&live.location).await.map_err(map)?;
    let rights: Vec<Value> = rows
        .iter()
        .filter(|r| all_rights || r.state.value() <= SCARCE_AT)
        .map(|r| {
            let sku = match &r.key {
                Scarce::Stock { sku, .. } => Some(sku.as_str()),
                Scarce::Coupon { .. } => None,
            };
            rights_json(
                &r.key,
                &r.state,
                &live.replica,
                sku.and_then(|s| on_hand.get(s).copied()),
            )
        })
        .collect();
    let deficits = store.deficits(&live.location, RECORDS).await.map_err(map)?;
    let open: Vec<Value> = deficits
        .iter()
        .filter(|d| d.settlement.as_ref().is_none_or(|s| s.short > 0))
        .map(deficit_json)
        .collect();
    let conflicts = store.conflicts(&live.replica, RECORDS).await.map_err(map)?;
    let now_ms = unix_ms(time::OffsetDateTime::now_utc());
    let meta = &live.meta;
    let mut out = json!({
        "replica": live.replica,
        "name": live.name,
        "location": live.location.0,
        "connected": live.connected,
        "connected_since": if live.connected { time_json(meta.connected_ms) } else { Value::Null },
        "offline_since": if live.connected { Value::Null } else { time_json(meta.disconnected_ms) },
        "never_connected": meta.connected_ms.is_none(),
        "last_sync": time_json(meta.last_sync_ms),
        "last_sync_age_seconds": meta.last_sync_ms.map(|ms| now_ms.saturating_sub(ms) / 1000),
        "unacknowledged": {
            "hub_to_node": live.unacked_to_node(),
            "node_to_hub": meta.node_pending,
        },
        "have": {
            "hub": { live.replica.as_str(): live.have },
            "node": meta.node_have,
        },
        "clock_skew_ms": meta.skew_ms,
        "skew_exceeds_limit": live.skew_exceeds_limit,
        "catalog_version": { "hub": live.catalog_version, "node": meta.node_catalog_version },
        "retired": live.retired.is_some(),
        "retired_at": time_json(live.retired.as_ref().map(|r| r.at_ms)),
        "unsettled_deficits": open,
        "conflicts": conflicts.iter().map(|c| json!({
            "id": c.id, "kind": c.kind, "detail": c.detail, "replica": c.replica,
            "at": time_json(Some(c.at.ms)),
        })).collect::<Vec<_>>(),
    });
    if all_rights {
        out["rights"] = Value::Array(rights);
        out["deficits"] = Value::Array(deficits.iter().map(deficit_json).collect());
        out["written_off"] = live.retired.as_ref().map_or(Value::Null, |r| {
            Value::Array(
                r.written_off
                    .iter()
                    .map(|(k, n)| json!({"key": k, "units": n}))
                    .collect(),
            )
        });
    } else {
        out["scarce"] = Value::Array(rights);
    }
    Ok(out)
}

fn find(all: Vec<NodeLive>, replica: &str) -> Result<NodeLive, ApiError> {
    all.into_iter()
        .find(|n| n.replica.as_str() == replica)
        .ok_or_else(|| ApiError::not_found(&format!("edge node '{replica}'")))
}

/// `GET /api/v1/admin/edge/nodes`.
async fn list(
    _: Staff<policy::Edge>,
    handle: web::Data<HubHandle>,
) -> Result<HttpResponse, ApiError> {
    let edge = &handle.edge;
    let mut nodes = Vec::new();
    for live in edge.live().await.map_err(api_error)? {
        nodes.push(node_json(edge, &live, false).await?);
    }
    Ok(HttpResponse::Ok().json(json!({ "nodes": nodes })))
}

/// `GET /api/v1/admin/edge/nodes/{replica}`.
async fn show(
    _: Staff<policy::Edge>,
    handle: web::Data<HubHandle>,
    replica: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let edge = &handle.edge;
    let live = find(edge.live().await.map_err(api_error)?, &replica)?;
    Ok(HttpResponse::Ok().json(node_json(edge, &live, true).await?))
}

/// `POST /api/v1/admin/edge/nodes/{replica}/retire`: retires the replica id for good.
async fn retire(
    staff: Staff<policy::Edge>,
    handle: web::Data<HubHandle>,
    replica: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = ReplicaId::node(&replica)
        .map_err(|_| ApiError::not_found(&format!("edge node '{replica}'")))?;
    let record = handle
        .edge
        .replica
        .send(Retire(id))
        .await
        .map_err(|_| api_error(EdgeError::Closed))?
        .map_err(api_error)?;
    let retired = json!({
        "replica": record.replica,
        "location": record.location.0,
        "retired_at": time_json(Some(record.at_ms)),
        "written_off": record.written_off.iter().map(|(k, n)| json!({"key": k, "units": n})).collect::<Vec<_>>(),
    });
    staff
        .audit(
            &handle.backoffice,
            "edge.node.retire",
            format!("edge-node/{replica}"),
            None::<&()>,
            Some(&retired),
        )
        .await;
    Ok(HttpResponse::Ok().json(retired))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SalesQuery {
    location: Option<String>,
    limit: Option<usize>,
}

/// `GET /api/v1/admin/edge/sales?location=&limit=`: store sales, newest first, each with
/// `merged_at_ms` (when the hub first stored it, Unix ms; null for sales stored before that was
/// kept).
async fn sales(
    _: Staff<policy::Edge>,
    handle: web::Data<HubHandle>,
    query: web::Query<SalesQuery>,
) -> Result<HttpResponse, ApiError> {
    let location = query.location.clone().map(LocationId);
    let limit = query.limit.unwrap_or(100).clamp(1, 10_000);
    let sales = handle
        .edge
        .sales(location.as_ref(), limit)
        .await
        .map_err(api_error)?;
    Ok(HttpResponse::Ok().json(json!({ "count": sales.len(), "sales": sales })))
}

/// `GET /api/v1/admin/edge/coupons`: each limited coupon's redemption rights as the hub has
/// merged them: what the hub created (`hub_created`: the limit, plus a use given back by each
/// cancelled online order) and consumed (`hub_consumed`: online uses), what it still holds,
/// and per store replica what it `used` and still `holds` (`store_uses` in total).
async fn coupons(
    _: Staff<policy::Edge>,
    handle: web::Data<HubHandle>,
) -> Result<HttpResponse, ApiError> {
    let hub = ReplicaId::hub();
    let rows = handle
        .edge
        .store
        .coupon_rights()
        .await
        .map_err(|e| api_error(EdgeError::Storage(e)))?;
    let coupons: Vec<Value> = rows
        .iter()
        .filter_map(|row| {
            let Scarce::Coupon { code } = &row.key else {
                return None;
            };
            let r = &row.state;
            let stores: BTreeMap<String, Value> =
                r.r.keys()
                    .chain(r.u.keys())
                    .filter(|i| !i.is_hub())
                    .map(|i| {
                        (
                            i.to_string(),
                            json!({
                                "used": r.u.get(i).copied().unwrap_or(0),
                                "holds": r.held_signed(i).max(0),
                            }),
                        )
                    })
                    .collect();
            Some(json!({
                "code": code,
                "hub_created": r.r.get(&hub).and_then(|row| row.get(&hub)).copied().unwrap_or(0),
                "hub_consumed": r.u.get(&hub).copied().unwrap_or(0),
                "hub_holds": r.held_signed(&hub).max(0),
                "store_uses": r.u.iter().filter(|(i, _)| !i.is_hub()).map(|(_, n)| *n).sum::<u64>(),
                "stores": stores,
            }))
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "coupons": coupons })))
}
