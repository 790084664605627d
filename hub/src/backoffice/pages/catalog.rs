//! The catalog as the hub sells it: products, prices and stock per location (merchandisers,
//! admins). Products and prices come from the ERP's feeds, which own them, so they are read
//! only here; what the hub owns is the online stock count, which can be corrected here (the
//! same change as `PUT /api/v1/admin/stock/{sku}`, audited). Store stock belongs to each store's
//! edge node.

use super::{BackOfficeSession, Flash, PageFailure, Pages};
use crate::app::HubHandle;
use crate::backoffice::access::{policy, Policy};
use crate::backoffice::audit::Change;
use crate::backoffice::Backoffice;
use actix_web::{web, HttpRequest, HttpResponse};
use channels::Backend;
use minijinja::context;
use protocol::{LocationId, Sku, StockLevel};
use serde::Deserialize;

const PAGE: usize = 50;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(super::page("/backoffice/catalog").route(web::get().to(list)))
        .service(super::page("/backoffice/catalog/stock").route(web::post().to(count)));
}

#[derive(Deserialize)]
pub struct CatalogQuery {
    q: Option<String>,
    page: Option<usize>,
}

/// The store locations (from the configured edge nodes), then `online`.
fn locations(handle: &HubHandle) -> Vec<LocationId> {
    let mut out = vec![LocationId::online()];
    for node in handle.edge.nodes().iter() {
        if !out.contains(&node.location) {
            out.push(node.location.clone());
        }
    }
    out
}

async fn list(
    req: HttpRequest,
    pages: web::Data<Pages>,
    handle: web::Data<HubHandle>,
    session: BackOfficeSession,
    query: web::Query<CatalogQuery>,
) -> Result<HttpResponse, PageFailure> {
    session.require(policy::Stock::ROLES)?;
    let catalog = handle.backend.catalog();
    let q = query
        .q
        .as_deref()
        .map(str::trim)
        .unwrap_or("")
        .to_lowercase();
    let page = query.page.unwrap_or(0);
    let locations = locations(&handle);
    let matching: Vec<&protocol::Product> = catalog
        .products()
        .iter()
        .filter(|p| {
            q.is_empty()
                || p.name.to_lowercase().contains(&q)
                || p.variants
                    .iter()
                    .any(|v| v.sku.as_str().to_lowercase().contains(&q))
        })
        .collect();
    let total = matching.len();
    let rows: Vec<minijinja::Value> = matching
        .into_iter()
        .skip(page * PAGE)
        .take(PAGE)
        .flat_map(|p| {
            let category = catalog.category(&p.category).map(|c| c.name.clone());
            p.variants
                .iter()
                .map(|v| {
                    let stock: Vec<minijinja::Value> = locations
                        .iter()
                        .map(|l| {
                            let level = handle.inventory.level(l, &v.sku);
                            context! {
                                on_hand => level.as_ref().map_or(0, |s| s.on_hand),
                                held => level.as_ref().map_or(0, |s| s.held),
                                available => level.as_ref().map_or(0, StockLevel::available_to_promise),
                            }
                        })
                        .collect();
                    context! {
                        name => p.name.clone(),
                        slug => p.slug.clone(),
                        category => category.clone(),
                        sku => v.sku.as_str(),
                        variant => v.title.clone(),
                        price => v.price,
                        compare_at => v.compare_at,
                        stock => stock,
                    }
                })
                .collect::<Vec<_>>()
        })
        .collect();
    pages.render(
        &req,
        &session,
        "catalog.html",
        context! {
            q => query.q.as_deref().unwrap_or(""),
            rows => rows,
            locations => locations.iter().map(|l| l.0.clone()).collect::<Vec<_>>(),
            page => page,
            previous => page.checked_sub(1),
            next => ((page + 1) * PAGE < total).then_some(page + 1),
            total => total,
        },
    )
}

#[derive(Deserialize)]
pub struct CountForm {
    csrf: String,
    sku: String,
    on_hand: i64,
}

/// `POST /backoffice/catalog/stock`: a stock count for the online warehouse.
async fn count(
    req: HttpRequest,
    pages: web::Data<Pages>,
    handle: web::Data<HubHandle>,
    bo: web::Data<Backoffice>,
    session: BackOfficeSession,
    form: web::Form<CountForm>,
) -> Result<HttpResponse, PageFailure> {
    session.require(policy::Stock::ROLES)?;
    session.check_form(&req, &form.csrf)?;
    let back = format!(
        "/backoffice/catalog?q={}",
        super::encode_component(&form.sku)
    );
    let Ok(sku) = Sku::parse(&form.sku) else {
        return Ok(pages.redirect(&back, Flash::error("That is not a SKU.")));
    };
    if handle.backend.catalog().product_by_sku(&sku).is_none() {
        return Ok(pages.redirect(&back, Flash::error(format!("No product has SKU {sku}."))));
    }
    if !(0..=1_000_000_000).contains(&form.on_hand) {
        return Ok(pages.redirect(
            &back,
            Flash::error("On hand is a count of units: 0 to 1,000,000,000."),
        ));
    }
    let online = LocationId::online();
    let level_json = |l: &StockLevel| serde_json::json!({"sku": l.sku, "location": l.location.0, "on_hand": l.on_hand, "held": l.held});
    let before = handle
        .inventory
        .level(&online, &sku)
        .map(|l| level_json(&l));
    handle
        .inventory
        .set(vec![StockLevel {
            sku: sku.clone(),
            location: online.clone(),
            on_hand: form.on_hand,
            held: 0,
        }])
        .await?;
    let after = handle
        .inventory
        .level(&online, &sku)
        .map(|l| level_json(&l));
    let actor = session.actor();
    let change = Change {
        actor: &actor,
        action: "stock.count",
        subject: format!("stock/{sku}"),
        before: before.as_ref(),
        after: after.as_ref(),
    };
    if let Err(e) = bo.record(change).await {
        tracing::error!(error = %e, %sku, "audit entry not written");
    }
    Ok(pages.redirect(
        &back,
        Flash::success(format!("{sku}: {} on hand online.", form.on_hand)),
    ))
}
