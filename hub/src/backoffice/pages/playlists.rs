//! Content and board playlists (merchandisers, marketers, admins; the same policy as
//! `/api/v1/admin/boards`): what the hub publishes to the stores' boards, per scope (`all`, or
//! a store location with its own playlist): the default items in order, the items per audience
//! segment, and the dwell time. An item names a product by SKU; the product's name, price and
//! stock are the ERP's and the store's, shown read-only. Publishing checks the playlist with
//! the protocol's own rules (every problem with its field, nothing published), refuses a stale
//! edit (someone published since the page was opened), and is audited with before and after.

use super::{BackOfficeSession, Flash, PageFailure, Pages};
use crate::app::HubHandle;
use crate::backoffice::access::{policy, Policy};
use crate::backoffice::audit::Change;
use crate::backoffice::Backoffice;
use crate::edge::boards::{PublishError, ALL};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use channels::Backend;
use minijinja::context;
use protocol::board::{BoardItem, BoardPlaylist};
use protocol::LocationId;
use serde::{Deserialize, Serialize};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(super::page("/backoffice/playlists").route(web::get().to(list)))
        .service(
            super::page("/backoffice/playlists/{scope}")
                .route(web::get().to(show))
                .route(web::post().to(publish)),
        );
}

/// `all`, then the stores of the configured edge nodes.
pub(super) fn scopes(handle: &HubHandle) -> Vec<String> {
    let mut out = vec![ALL.to_string()];
    for node in handle.edge.nodes().iter() {
        if !out.contains(&node.location.0) {
            out.push(node.location.0.clone());
        }
    }
    out
}

fn known_scope(handle: &HubHandle, scope: &str) -> bool {
    scope == ALL || handle.edge.nodes().is_store(&LocationId(scope.to_string()))
}

async fn list(
    req: HttpRequest,
    pages: web::Data<Pages>,
    handle: web::Data<HubHandle>,
    session: BackOfficeSession,
) -> Result<HttpResponse, PageFailure> {
    session.require(policy::Boards::ROLES)?;
    let (version, published) = handle.boards.list();
    let rows: Vec<minijinja::Value> = scopes(&handle)
        .into_iter()
        .map(|scope| {
            let p = published.get(&scope);
            context! {
                scope,
                published => p.is_some(),
                version => p.map(|p| p.version),
                items => p.map_or(0, |p| p.playlist.items.len()),
                segments => p.map(|p| p.playlist.segments.keys().cloned().collect::<Vec<_>>()).unwrap_or_default(),
            }
        })
        .collect();
    pages.render(
        &req,
        &session,
        "playlists.html",
        context! { version, scopes => rows },
    )
}

/// An item as the page lists it: the playlist's fields and, read-only, the ERP's product.
#[derive(Serialize)]
pub(super) struct ItemRow {
    item: BoardItem,
    product: Option<String>,
    price: Option<protocol::Money>,
    /// The SKU is not in the catalog (the board skips the item).
    unknown_sku: bool,
}

pub(super) fn item_rows(handle: &HubHandle, items: &[BoardItem]) -> Vec<ItemRow> {
    let catalog = handle.backend.catalog();
    items
        .iter()
        .map(|item| {
            let found = item.sku.as_ref().and_then(|s| {
                catalog
                    .product_by_sku(s)
                    .map(|p| (p.name.clone(), p.variant(s).map(|v| v.price)))
            });
            ItemRow {
                item: item.clone(),
                unknown_sku: item.sku.is_some() && found.is_none(),
                product: found.as_ref().map(|f| f.0.clone()),
                price: found.and_then(|f| f.1),
            }
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn render(
    pages: &Pages,
    req: &HttpRequest,
    handle: &HubHandle,
    session: &BackOfficeSession,
    status: StatusCode,
    scope: &str,
    text: String,
    base_version: u64,
    errors: &[String],
) -> Result<HttpResponse, PageFailure> {
    let (version, published) = handle.boards.list();
    let own = published.get(scope);
    let playlist = own.map(|p| p.playlist.clone()).unwrap_or_default();
    let segments: Vec<minijinja::Value> = playlist
        .segments
        .iter()
        .map(|(name, items)| context! { name, items => item_rows(handle, items) })
        .collect();
    pages.render_status(
        req,
        Some(session),
        status,
        "playlist.html",
        context! {
            scope,
            version,
            published => own.map(|p| p.version),
            inherits => own.is_none() && scope != ALL,
            items => item_rows(handle, &playlist.items),
            segments,
            dwell_secs => playlist.dwell_secs,
            text,
            base_version,
            errors,
        },
        Vec::new(),
    )
}

async fn show(
    req: HttpRequest,
    pages: web::Data<Pages>,
    handle: web::Data<HubHandle>,
    session: BackOfficeSession,
    scope: web::Path<String>,
) -> Result<HttpResponse, PageFailure> {
    session.require(policy::Boards::ROLES)?;
    if !known_scope(&handle, &scope) {
        return Err(PageFailure::not_found("playlist scope"));
    }
    let (version, published) = handle.boards.list();
    let playlist = published
        .get(scope.as_str())
        .map(|p| p.playlist.clone())
        .unwrap_or_default();
    let text = serde_json::to_string_pretty(&playlist).unwrap_or_default();
    render(
        &pages,
        &req,
        &handle,
        &session,
        StatusCode::OK,
        &scope,
        text,
        version,
        &[],
    )
}

#[derive(Debug, Deserialize)]
pub struct PlaylistForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    playlist: String,
    /// The version the page was opened at: publishing on top of a newer one is refused.
    base_version: u64,
}

async fn publish(
    req: HttpRequest,
    pages: web::Data<Pages>,
    handle: web::Data<HubHandle>,
    bo: web::Data<Backoffice>,
    session: BackOfficeSession,
    scope: web::Path<String>,
    form: web::Form<PlaylistForm>,
) -> Result<HttpResponse, PageFailure> {
    session.require(policy::Boards::ROLES)?;
    session.check_form(&req, &form.csrf)?;
    if !known_scope(&handle, &scope) {
        return Err(PageFailure::not_found("playlist scope"));
    }
    let refuse = |errors: Vec<String>, status: StatusCode| {
        render(
            &pages,
            &req,
            &handle,
            &session,
            status,
            &scope,
            form.playlist.clone(),
            form.base_version,
            &errors,
        )
    };
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    let playlist: BoardPlaylist = match serde_json::from_str(&form.playlist) {
        Ok(p) => p,
        Err(e) => {
            return refuse(
                vec![format!(
                    "(the whole text): line {}, column {}: {e}",
                    e.line(),
                    e.column()
                )],
                unprocessable,
            )
        }
    };
    let problems = playlist.problems();
    if !problems.is_empty() {
        return refuse(
            problems.iter().map(|(f, m)| format!("{f}: {m}")).collect(),
            unprocessable,
        );
    }
    let before = handle.boards.list().1.get(scope.as_str()).cloned();
    match handle
        .boards
        .publish(&scope, Some(form.base_version), playlist.clone())
        .await
    {
        Ok(version) => {
            let actor = session.actor();
            let after = serde_json::json!({ "version": version, "playlist": &playlist });
            let change = Change {
                actor: &actor,
                action: "board.playlist.publish",
                subject: format!("playlist/{scope}"),
                before: before.as_ref(),
                after: Some(&after),
            };
            if let Err(e) = bo.record(change).await {
                tracing::error!(error = %e, scope = %scope, "audit entry not written");
            }
            Ok(pages.redirect(
                &format!("/backoffice/playlists/{scope}"),
                Flash::success(format!(
                    "Published version {version} for {scope}: the stores' boards take it at their next sync."
                )),
            ))
        }
        Err(e @ PublishError::Stale { .. }) => refuse(
            vec![format!(
                "{e}. Your text is kept below; reload the page to see the newer playlist."
            )],
            StatusCode::CONFLICT,
        ),
        Err(PublishError::Storage(e)) => Err(e.into()),
    }
}
