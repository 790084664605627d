//! `GET /backoffice`: today at a glance (orders, revenue, promotions waiting for approval, dead
//! letters), each linked to its page when the user's roles reach it.

use super::{BackOfficeSession, PageFailure, Pages};
use crate::app::HubHandle;
use crate::backoffice::promotions::Status;
use crate::backoffice::Backoffice;
use crate::experience::reports;
use actix_web::{web, HttpRequest, HttpResponse};
use minijinja::context;

pub async fn show(
    req: HttpRequest,
    pages: web::Data<Pages>,
    bo: web::Data<Backoffice>,
    handle: web::Data<HubHandle>,
    session: BackOfficeSession,
) -> Result<HttpResponse, PageFailure> {
    let today = handle.backend.deps.clock.now().date();
    let range = reports::Range {
        from: today,
        to: today,
        channel: None,
    };
    let revenue = handle
        .experience
        .read(move |a| reports::revenue(a, &range))
        .await?;
    let orders_today: u64 = revenue.totals.iter().map(|t| t.orders).sum();
    let waiting = bo.promotions(Some(Status::Draft))?.len();
    let dead_letters: u64 = handle
        .storage_backlog()
        .await?
        .values()
        .map(|b| b.dead)
        .sum();
    let can = |href: &str| {
        super::NAV
            .iter()
            .any(|(h, _, roles)| *h == href && roles.iter().any(|r| session.user().has(*r)))
    };
    pages.render(
        &req,
        &session,
        "dashboard.html",
        context! {
            today => today.to_string(),
            orders_today => orders_today,
            revenue => revenue.totals,
            waiting => waiting,
            dead_letters => dead_letters,
            links => context! {
                orders => can("/backoffice/orders"),
                promotions => can("/backoffice/promotions"),
                analytics => can("/backoffice/analytics"),
                ops => can("/ops"),
            },
        },
    )
}
