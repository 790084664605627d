//! Customers: find one by email or id, and their profile with its timeline, from the experience
//! layer (the same sources as `GET /api/v1/admin/customers/{id}/profile`). Support sees; this
//! page offers no export.

use super::{BackOfficeSession, PageFailure, Pages};
use crate::app::HubHandle;
use crate::backoffice::access::{policy, Policy};
use actix_web::{web, HttpRequest, HttpResponse};
use minijinja::context;
use protocol::{CustomerId, Subject};
use serde::Deserialize;

/// Events the profile page lists.
const TIMELINE: usize = 50;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(super::page("/backoffice/customers").route(web::get().to(search)))
        .service(super::page("/backoffice/customers/{id}").route(web::get().to(show)));
}

#[derive(Deserialize)]
pub struct SearchQuery {
    q: Option<String>,
}

async fn search(
    req: HttpRequest,
    pages: web::Data<Pages>,
    handle: web::Data<HubHandle>,
    session: BackOfficeSession,
    query: web::Query<SearchQuery>,
) -> Result<HttpResponse, PageFailure> {
    session.require(policy::CustomerProfiles::ROLES)?;
    let q = query.q.as_deref().map(str::trim).unwrap_or("");
    if !q.is_empty() {
        let found = match q.parse::<CustomerId>() {
            Ok(id) => handle.storage.customer(id).await?,
            Err(_) => {
                handle
                    .storage
                    .customer_by_email(&protocol::customer::normalize_email(q))
                    .await?
            }
        };
        if let Some(c) = found {
            return Ok(pages.redirect(&format!("/backoffice/customers/{}", c.id), None));
        }
    }
    pages.render(
        &req,
        &session,
        "customers.html",
        context! { q => q, searched => !q.is_empty() },
    )
}

async fn show(
    req: HttpRequest,
    pages: web::Data<Pages>,
    handle: web::Data<HubHandle>,
    session: BackOfficeSession,
    id: web::Path<String>,
) -> Result<HttpResponse, PageFailure> {
    session.require(policy::CustomerProfiles::ROLES)?;
    let not_found = || PageFailure::not_found("customer");
    let id: CustomerId = id.parse().map_err(|_| not_found())?;
    let record = handle.storage.customer(id).await?.ok_or_else(not_found)?;
    let profile = handle
        .experience
        .profile(Subject::Customer(id))
        .await?
        .unwrap_or_else(|| protocol::experience::Profile::new(Subject::Customer(id)));
    let timeline = handle.storage.timeline(id, TIMELINE).await?;
    let orders = handle.storage.orders_of(id, 20).await?;
    let consent = |channel, purpose| record.consents.granted(channel, purpose);
    let marketing_email = consent(
        protocol::ConsentChannel::Email,
        protocol::ConsentPurpose::Marketing,
    );
    let board_consent = consent(
        protocol::ConsentChannel::Board,
        protocol::ConsentPurpose::Personalization,
    );
    pages.render(
        &req,
        &session,
        "customer.html",
        context! {
            customer => context! {
                id => record.id,
                name => record.name,
                email => record.email,
                phone => record.phone,
                loyalty_number => record.loyalty_number,
                created_at => record.created_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
                marketing_email => marketing_email,
                in_store_boards => board_consent,
            },
            profile => profile,
            timeline => timeline,
            orders => orders.iter().map(|o| context! {
                number => o.number.clone(),
                status => o.status(),
                total => o.breakdown.total,
                created_at => o.created_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
            }).collect::<Vec<_>>(),
            can_orders => session.user().roles.iter().any(|r| policy::Orders::ROLES.contains(r)),
        },
    )
}
