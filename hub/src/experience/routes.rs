//! HTTP routes of the experience layer:
//!
//! - admin (bearer admin token): `GET /api/v1/admin/analytics/{funnel,revenue,products,
//!   searches,abandonment}[.csv]`, `GET /api/v1/admin/customers/{id}/profile`,
//!   `GET /api/v1/admin/events/export`;
//! - shopper (session): `GET /api/v1/customers/me/data`, `POST /api/v1/customers/me/erasure`;
//! - channels: `POST /api/v1/events`, a batch of interaction events from an app.
//!
//! Registered before the admin and channel scopes (their catch-all 404s would hide these).

use super::reports::{self, ProductSort, Range, CHANNELS, MAX_DAYS};
use crate::app::HubHandle;
use crate::backoffice::access::{policy, Staff};
use crate::storage::StorageError;
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpResponse};
use channels::error::ApiError;
use channels::{BackendError, RequestContext};
use protocol::{CustomerId, Event, EventKind, Subject};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use time::{Date, Duration};

/// Timeline events shown with a profile.
const PROFILE_TIMELINE: usize = 50;
/// Events in one export page: default and most.
const EXPORT_DEFAULT: usize = 1_000;
const EXPORT_MAX: usize = 10_000;
/// Events in one intake batch, payload entries per event and the longest value.
const INTAKE_MAX: usize = 100;
const INTAKE_KEYS: usize = 16;
const INTAKE_VALUE: usize = 512;
/// Rows a ranked report returns by default and at most.
const RANKED_DEFAULT: usize = 20;
const RANKED_MAX: usize = 1_000;
/// The event export's line schema version (`docs/events-schema.md`).
pub const EXPORT_SCHEMA: u16 = 1;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/api/v1/admin/analytics")
            .app_data(channels::error::query_config())
            .route("/{report}", web::get().to(report))
            .default_service(web::to(channels::error::api_not_found)),
    )
    .route(
        "/api/v1/admin/customers/{id}/profile",
        web::get().to(profile),
    )
    .route("/api/v1/admin/events/export", web::get().to(export))
    .service(web::resource("/api/v1/customers/me/data").route(web::get().to(download)))
    .service(
        web::resource("/api/v1/customers/me/erasure")
            .app_data(channels::error::json_config())
            .route(web::post().to(erasure)),
    )
    .service(
        web::resource("/api/v1/events")
            .app_data(channels::error::json_config())
            .route(web::post().to(intake)),
    );
}

fn unavailable(e: StorageError) -> ApiError {
    tracing::error!(error = %e, "experience storage failed");
    ApiError::from(BackendError::Unavailable(e.to_string()))
}

fn invalid(parameter: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::unprocessable(
        "invalid_parameter",
        format!("{parameter}: {}", message.into()),
    )
    .with_details(json!({ "parameter": parameter }))
}

/// A report request's parameters, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportQuery {
    pub range: Range,
    pub csv: bool,
    pub limit: usize,
    pub sort: ProductSort,
}

fn parse_date(parameter: &'static str, text: &str) -> Result<Date, ApiError> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    Date::parse(text.trim(), &format)
        .map_err(|_| invalid(parameter, format!("{text:?} is not a date YYYY-MM-DD")))
}

/// Checks a report's query: `from`/`to` (UTC days, inclusive; default the 30 days to
/// `today`), `channel`, `format` (`json` or `csv`), and for ranked reports `limit` and `sort`.
pub fn parse_report_query(
    query: &HashMap<String, String>,
    today: Date,
    csv_suffix: bool,
) -> Result<ReportQuery, ApiError> {
    const KNOWN: [&str; 6] = ["from", "to", "channel", "format", "limit", "sort"];
    if let Some(unknown) = query.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(ApiError::unprocessable(
            "invalid_parameter",
            format!("unknown parameter {unknown:?}: use from, to, channel, format, limit, sort"),
        )
        .with_details(json!({ "parameter": unknown })));
    }
    let to = match query.get("to") {
        Some(t) => parse_date("to", t)?,
        None => today,
    };
    let from = match query.get("from") {
        Some(f) => parse_date("from", f)?,
        None => to.checked_sub(Duration::days(29)).ok_or_else(|| {
            invalid(
                "to",
                format!("{to} is too early for a 30-day range: give from"),
            )
        })?,
    };
    if from > to {
        return Err(invalid("from", format!("{from} is after to ({to})")));
    }
    let days = (to - from).whole_days() + 1;
    if days > MAX_DAYS {
        return Err(invalid(
            "to",
            format!("the range covers {days} days; at most {MAX_DAYS}"),
        ));
    }
    let channel = match query.get("channel") {
        Some(c) if CHANNELS.contains(&c.as_str()) => Some(c.clone()),
        Some(c) => {
            return Err(invalid(
                "channel",
                format!("unknown channel {c:?}: one of {}", CHANNELS.join(", ")),
            ))
        }
        None => None,
    };
    let csv = match query.get("format").map(String::as_str) {
        None => csv_suffix,
        Some("csv") => true,
        Some("json") if !csv_suffix => false,
        Some(other) => return Err(invalid("format", format!("{other:?}: json or csv"))),
    };
    let limit = match query.get("limit") {
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=RANKED_MAX).contains(l))
            .ok_or_else(|| invalid("limit", format!("1 to {RANKED_MAX}")))?,
        None => RANKED_DEFAULT,
    };
    let sort = match query.get("sort").map(String::as_str) {
        None | Some("views") => ProductSort::Views,
        Some("adds") => ProductSort::Adds,
        Some("units") => ProductSort::Units,
        Some(other) => return Err(invalid("sort", format!("{other:?}: views, adds or units"))),
    };
    Ok(ReportQuery {
        range: Range { from, to, channel },
        csv,
        limit,
        sort,
    })
}

fn csv_body<T: Serialize>(rows: &[T]) -> Result<Vec<u8>, ApiError> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    for r in rows {
        writer
            .serialize(r)
            .map_err(|e| unavailable(StorageError::Io(e.to_string())))?;
    }
    writer
        .into_inner()
        .map_err(|e| unavailable(StorageError::Io(e.to_string())))
}

fn csv_response(name: &str, q: &ReportQuery, body: Vec<u8>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!(
                "attachment; filename=\"{name}-{}-{}.csv\"",
                q.range.from, q.range.to
            ),
        ))
        .body(body)
}

async fn report(
    _: Staff<policy::Analytics>,
    handle: web::Data<HubHandle>,
    path: web::Path<String>,
    query: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse, ApiError> {
    let requested = path.into_inner();
    let (name, suffix) = match requested.strip_suffix(".csv") {
        Some(name) => (name.to_string(), true),
        None => (requested, false),
    };
    const REPORTS: [&str; 5] = ["funnel", "revenue", "products", "searches", "abandonment"];
    if !REPORTS.contains(&name.as_str()) {
        return Err(ApiError::not_found(&format!(
            "report {name:?} (one of {})",
            REPORTS.join(", ")
        )));
    }
    let today = handle.backend.deps.clock.now().date();
    let q = parse_report_query(&query, today, suffix)?;
    let meta = json!({
        "from": q.range.from.to_string(),
        "to": q.range.to.to_string(),
        "channel": q.range.channel,
    });
    let experience = &handle.experience;
    let range = q.range.clone();
    let (limit, sort) = (q.limit, q.sort);
    let response = match name.as_str() {
        "funnel" => {
            let r = experience
                .read(move |a| reports::funnel(a, &range))
                .await
                .map_err(unavailable)?;
            if q.csv {
                let mut rows = r.rows.clone();
                rows.push(r.total.clone());
                csv_response(&name, &q, csv_body(&rows)?)
            } else {
                HttpResponse::Ok().json(json!({
                    "range": meta, "stages": reports::STAGES, "rows": r.rows,
                    "total": r.total, "estimated": r.estimated, "conversion": r.conversion,
                }))
            }
        }
        "revenue" => {
            let r = experience
                .read(move |a| reports::revenue(a, &range))
                .await
                .map_err(unavailable)?;
            if q.csv {
                csv_response(&name, &q, csv_body(&r.rows)?)
            } else {
                HttpResponse::Ok().json(json!({"range": meta, "rows": r.rows, "totals": r.totals}))
            }
        }
        "products" => {
            let rows = experience
                .read(move |a| reports::products(a, &range, sort, limit))
                .await
                .map_err(unavailable)?;
            if q.csv {
                csv_response(&name, &q, csv_body(&rows)?)
            } else {
                HttpResponse::Ok().json(json!({"range": meta, "rows": rows}))
            }
        }
        "searches" => {
            let r = experience
                .read(move |a| reports::searches(a, &range, limit))
                .await
                .map_err(unavailable)?;
            if q.csv {
                csv_response(&name, &q, csv_body(&r.top)?)
            } else {
                HttpResponse::Ok().json(json!({
                    "range": meta, "top": r.top, "no_results": r.no_results,
                }))
            }
        }
        _ => {
            let r = experience
                .read(move |a| reports::abandonment(a, &range))
                .await
                .map_err(unavailable)?;
            if q.csv {
                let mut rows = r.rows.clone();
                rows.push(r.total.clone());
                csv_response(&name, &q, csv_body(&rows)?)
            } else {
                HttpResponse::Ok().json(json!({"range": meta, "rows": r.rows, "total": r.total}))
            }
        }
    };
    Ok(response)
}

/// The customer as the profile shows them: identity and consents (the state of each channel
/// and purpose, and every change with its time and source) from the record.
fn identity(c: &protocol::CustomerRecord) -> serde_json::Value {
    json!({
        "id": c.id,
        "email": c.email,
        "name": c.name,
        "phone": c.phone,
        "loyalty_number": c.loyalty_number,
        "created_at": c.created_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        "basket": c.basket,
        "consents": c.consents.states(),
        "consent_history": c.consents.history,
    })
}

async fn profile(
    _: Staff<policy::CustomerProfiles>,
    handle: web::Data<HubHandle>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id: CustomerId = path.parse().map_err(|_| ApiError::not_found("customer"))?;
    let record = handle
        .storage
        .customer(id)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| ApiError::not_found("customer"))?;
    let profile = handle
        .experience
        .profile(Subject::Customer(id))
        .await
        .map_err(unavailable)?
        .unwrap_or_else(|| protocol::experience::Profile::new(Subject::Customer(id)));
    let timeline = handle
        .storage
        .timeline(id, PROFILE_TIMELINE)
        .await
        .map_err(unavailable)?;
    let definitions = super::segments::definitions(&handle.backoffice).map_err(unavailable)?;
    let segments: Vec<_> = profile
        .memberships
        .iter()
        .map(|(segment, m)| {
            let name = definitions
                .iter()
                .find(|d| d.id.to_string() == *segment)
                .map(|d| d.name.clone());
            json!({
                "id": segment,
                "key": m.key,
                "name": name,
                "entered_at": super::segments::rfc3339(m.entered_at),
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "customer": identity(&record),
        "profile": profile,
        "segments": segments,
        "timeline": timeline,
    })))
}

#[derive(Deserialize)]
struct ExportQuery {
    cursor: Option<String>,
    limit: Option<String>,
}

/// One export line (`docs/events-schema.md`).
#[derive(Serialize)]
pub struct ExportLine<'a> {
    pub schema: u16,
    pub seq: u64,
    #[serde(flatten)]
    pub event: &'a Event,
}

async fn export(
    _: Staff<policy::EventExport>,
    handle: web::Data<HubHandle>,
    query: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse, ApiError> {
    if let Some(unknown) = query.keys().find(|k| *k != "cursor" && *k != "limit") {
        return Err(ApiError::bad_request(
            "invalid_parameter",
            format!("unknown parameter {unknown:?}: use cursor and limit"),
        ));
    }
    let q = ExportQuery {
        cursor: query.get("cursor").cloned(),
        limit: query.get("limit").cloned(),
    };
    let cursor = match q.cursor.as_deref() {
        None | Some("") => 0,
        Some(c) => c.parse::<u64>().map_err(|_| {
            ApiError::bad_request(
                "bad_cursor",
                "cursor: the Next-Cursor of a previous page (a number), or leave it out",
            )
        })?,
    };
    let limit = match q.limit.as_deref() {
        None => EXPORT_DEFAULT,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=EXPORT_MAX).contains(l))
            .ok_or_else(|| {
                ApiError::bad_request("bad_limit", format!("limit: 1 to {EXPORT_MAX}"))
            })?,
    };
    let page = handle
        .storage
        .read_sequenced(cursor, limit)
        .await
        .map_err(unavailable)?;
    let next = page.last().map_or(cursor, |s| s.seq);
    let mut body = Vec::with_capacity(page.len() * 256);
    for s in &page {
        let line = ExportLine {
            schema: EXPORT_SCHEMA,
            seq: s.seq,
            event: &s.event,
        };
        serde_json::to_writer(&mut body, &line)
            .map_err(|e| unavailable(StorageError::Io(e.to_string())))?;
        body.push(b'\n');
    }
    Ok(HttpResponse::Ok()
        .content_type("application/x-ndjson")
        .insert_header(("Next-Cursor", next.to_string()))
        .body(body))
}

async fn download(
    handle: web::Data<HubHandle>,
    ctx: RequestContext,
) -> Result<HttpResponse, ApiError> {
    let id = ctx.customer()?;
    let record = handle
        .storage
        .customer(id)
        .await
        .map_err(unavailable)?
        .ok_or_else(ApiError::unauthorized)?;
    let profile = handle
        .experience
        .profile(Subject::Customer(id))
        .await
        .map_err(unavailable)?;
    let orders = handle
        .storage
        .orders_of(id, usize::MAX)
        .await
        .map_err(unavailable)?;
    let events = handle
        .storage
        .timeline(id, usize::MAX)
        .await
        .map_err(unavailable)?;
    let body = json!({
        "customer": identity(&record),
        "profile": profile,
        "orders": orders,
        "events": events,
    });
    Ok(HttpResponse::Ok()
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"omnihub-my-data-{id}.json\""),
        ))
        .json(body))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ErasureBody {
    password: String,
}

async fn erasure(
    handle: web::Data<HubHandle>,
    state: web::Data<channels::ChannelState>,
    ctx: RequestContext,
    body: web::Json<ErasureBody>,
) -> Result<HttpResponse, ApiError> {
    let id = ctx.customer()?;
    let record = handle
        .storage
        .customer(id)
        .await
        .map_err(unavailable)?
        .ok_or_else(ApiError::unauthorized)?;
    let password = body.into_inner().password;
    let phc = record.password_hash.clone();
    let matches =
        tokio::task::spawn_blocking(move || crate::auth::verify_password(&password, &phc))
            .await
            .map_err(|e| unavailable(StorageError::Io(e.to_string())))?;
    if !matches {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "password_mismatch",
            "password: enter your current password to confirm the erasure",
        ));
    }
    let pseudonym = super::privacy::erase(&handle, id)
        .await
        .map_err(unavailable)?;
    tracing::info!(customer = %id, "customer data erased");
    Ok(HttpResponse::Ok()
        .cookie(state.removal(channels::context::SESSION_COOKIE))
        .json(json!({ "erased": true, "pseudonym": pseudonym })))
}

/// One event of an intake batch: the kinds an app may report itself.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IntakeEvent {
    kind: String,
    #[serde(default)]
    payload: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IntakeBody {
    events: Vec<IntakeEvent>,
}

/// The kinds a channel client may send: interactions only; what changes state (baskets,
/// orders, sign-in) is recorded by the hub itself.
const CLIENT_KINDS: [(&str, EventKind); 5] = [
    ("page_view", EventKind::PageView),
    ("product_view", EventKind::ProductView),
    ("search", EventKind::Search),
    ("board_impression", EventKind::BoardImpression),
    ("board_interaction", EventKind::BoardInteraction),
];

async fn intake(
    handle: web::Data<HubHandle>,
    ctx: RequestContext,
    body: web::Json<IntakeBody>,
) -> Result<HttpResponse, ApiError> {
    let events = body.into_inner().events;
    if events.is_empty() || events.len() > INTAKE_MAX {
        return Err(ApiError::unprocessable(
            "invalid_field",
            format!("events: 1 to {INTAKE_MAX} events per request"),
        ));
    }
    let now = handle.backend.deps.clock.now();
    let subject = ctx.subject();
    let mut checked = Vec::with_capacity(events.len());
    for (i, e) in events.into_iter().enumerate() {
        let kind = CLIENT_KINDS
            .iter()
            .find(|(name, _)| *name == e.kind)
            .map(|(_, k)| *k)
            .ok_or_else(|| {
                ApiError::unprocessable(
                    "invalid_field",
                    format!(
                        "events[{i}].kind: {:?} is not one an app may send ({})",
                        e.kind,
                        CLIENT_KINDS.map(|(n, _)| n).join(", ")
                    ),
                )
            })?;
        let too_big = e.payload.len() > INTAKE_KEYS
            || e.payload
                .iter()
                .any(|(k, v)| k.len() > 64 || v.len() > INTAKE_VALUE);
        if too_big {
            return Err(ApiError::unprocessable(
                "invalid_field",
                format!(
                    "events[{i}].payload: at most {INTAKE_KEYS} entries, keys up to 64 and values up to {INTAKE_VALUE} characters"
                ),
            ));
        }
        let mut event = Event::new(now, subject, ctx.channel, kind);
        event.payload = e.payload;
        with_category(&handle, &mut event);
        checked.push(event);
    }
    let accepted = checked.len();
    handle
        .recorder
        .do_send(crate::actors::recorder::RecordMany(checked));
    Ok(HttpResponse::Accepted().json(json!({ "accepted": accepted })))
}

/// Adds the product's category to a product view that names a known product but no category
/// (segment rules count views per category).
fn with_category(handle: &HubHandle, event: &mut Event) {
    if event.kind != EventKind::ProductView || event.payload.contains_key("category") {
        return;
    }
    let catalog = channels::Backend::catalog(handle.backend.as_ref());
    let product = event
        .payload
        .get("slug")
        .and_then(|slug| catalog.product_by_slug(slug));
    if let Some(p) = product {
        event
            .payload
            .insert("category".into(), p.category.to_string());
    }
}
