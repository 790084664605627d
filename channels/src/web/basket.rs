//! The basket page and its forms. Every form answers 303 to a page that shows what happened
//! (a flash message), so reloading never repeats a change.

use super::format::{safe_next, sentence};
use super::page::{Level, PageError, Visitor, BASKET_DAYS};
use crate::backend::{BackendError, BasketCommand, BasketView};
use crate::context::{ChannelState, RequestContext, BASKET_COOKIE};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use minijinja::context;
use protocol::{EventKind, Sku, MAX_LINE_QUANTITY};
use serde::Deserialize;

/// A basket form: every field optional, so a bad one is a message, not a 400.
#[derive(Debug, Default, Deserialize)]
pub struct LineForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    sku: String,
    #[serde(default)]
    quantity: String,
    #[serde(default)]
    next: String,
}

/// `GET /basket`.
pub async fn show(
    req: HttpRequest,
    state: web::Data<ChannelState>,
    ctx: RequestContext,
) -> Result<HttpResponse, PageError> {
    let mut visitor = Visitor::new(&req, state, ctx)?;
    let basket = visitor.basket().await?;
    visitor.record(EventKind::PageView, &[("path", req.path())]);
    visitor
        .render(StatusCode::OK, "basket.html", context! { basket })
        .await
}

/// Why a form was not applied, as the page says it.
fn explain(e: &BackendError) -> String {
    match e {
        BackendError::NotFound(_) => {
            "That item or basket no longer exists. Please try again.".to_string()
        }
        BackendError::Unprocessable { message, .. } => sentence(message),
        BackendError::Unauthenticated => "Please sign in again.".to_string(),
        BackendError::Unavailable(detail) => {
            tracing::error!(%detail, "basket change failed: backend unavailable");
            "We could not update your basket just now. Please try again in a moment.".to_string()
        }
        other => sentence(&other.to_string()),
    }
}

/// A quantity typed into a form, within `min..=999`.
fn parse_quantity(text: &str, min: i64) -> Result<i64, String> {
    match text.trim().parse::<i64>() {
        Ok(n) if (min..=i64::from(MAX_LINE_QUANTITY)).contains(&n) => Ok(n),
        _ => Err(format!(
            "Please choose a quantity from {min} to {MAX_LINE_QUANTITY}."
        )),
    }
}

/// Applies `command` to the shopper's basket, creating the basket first when `create` is set
/// and they have none (an anonymous basket's token then goes into a cookie).
async fn change(
    visitor: &mut Visitor,
    command: BasketCommand,
    create: bool,
) -> Result<BasketView, BackendError> {
    let backend = visitor.state.backend.clone();
    let id = match visitor.basket().await? {
        Some(basket) => basket.id,
        None if create => {
            let new = backend.create_basket(&visitor.ctx.shopper).await?;
            if let Some(token) = new.token {
                visitor.ctx.shopper.basket_token = Some(token.clone());
                visitor.set_cookie(visitor.state.cookie(BASKET_COOKIE, token, BASKET_DAYS));
            }
            new.basket.id
        }
        None => return Err(BackendError::NotFound("basket")),
    };
    let view = backend
        .change_basket(&visitor.ctx.shopper, id, command, visitor.ctx.channel)
        .await?;
    visitor.set_basket(view.clone());
    Ok(view)
}

/// Runs a basket form: CSRF check, then `build` turns the form into a command (or a message
/// for the shopper), then the change, a flash message and a 303 to `back`.
async fn run(
    req: HttpRequest,
    state: web::Data<ChannelState>,
    ctx: RequestContext,
    form: LineForm,
    back: &str,
    create: bool,
    build: impl FnOnce(&LineForm) -> Result<(BasketCommand, String), String>,
) -> Result<HttpResponse, PageError> {
    let mut visitor = Visitor::new(&req, state, ctx)?;
    visitor.check_form(&req, &form.csrf)?;
    match build(&form) {
        Err(message) => visitor.flash(Level::Error, message),
        Ok((command, done)) => match change(&mut visitor, command, create).await {
            Ok(_) => visitor.flash(Level::Success, done),
            Err(BackendError::NotFound("basket")) if !create => {
                visitor.flash(Level::Info, "Your basket is empty.")
            }
            Err(e) => visitor.flash(Level::Error, explain(&e)),
        },
    }
    Ok(visitor.redirect(back))
}

fn parse_sku(text: &str) -> Result<Sku, String> {
    Sku::parse(text.trim()).map_err(|_| "Please choose a product option first.".to_string())
}

/// The product name of a SKU, for messages.
fn name_of(state: &ChannelState, sku: &Sku) -> String {
    state
        .backend
        .catalog()
        .product_by_sku(sku)
        .map_or_else(|| sku.to_string(), |p| p.name.clone())
}

/// `POST /basket/add` (sku, quantity, next): back to `next` (the product page) or the basket.
pub async fn add(
    req: HttpRequest,
    state: web::Data<ChannelState>,
    ctx: RequestContext,
    form: web::Form<LineForm>,
) -> Result<HttpResponse, PageError> {
    let form = form.into_inner();
    let back = safe_next(&form.next).unwrap_or("/basket").to_string();
    let names = state.clone();
    run(req, state, ctx, form, &back, true, |f| {
        let sku = parse_sku(&f.sku)?;
        let quantity = parse_quantity(&f.quantity, 1)?;
        let done = match quantity {
            1 => format!("Added {} to your basket.", name_of(&names, &sku)),
            n => format!("Added {n} × {} to your basket.", name_of(&names, &sku)),
        };
        Ok((BasketCommand::Add { sku, quantity }, done))
    })
    .await
}

/// `POST /basket/update` (sku, quantity): a quantity of 0 removes the line.
pub async fn update(
    req: HttpRequest,
    state: web::Data<ChannelState>,
    ctx: RequestContext,
    form: web::Form<LineForm>,
) -> Result<HttpResponse, PageError> {
    let names = state.clone();
    run(req, state, ctx, form.into_inner(), "/basket", false, |f| {
        let sku = parse_sku(&f.sku)?;
        let name = name_of(&names, &sku);
        Ok(match parse_quantity(&f.quantity, 0)? {
            0 => (
                BasketCommand::Remove { sku },
                format!("Removed {name} from your basket."),
            ),
            quantity => (
                BasketCommand::SetQuantity { sku, quantity },
                format!("Updated {name} to {quantity}."),
            ),
        })
    })
    .await
}

/// `POST /basket/remove` (sku).
pub async fn remove(
    req: HttpRequest,
    state: web::Data<ChannelState>,
    ctx: RequestContext,
    form: web::Form<LineForm>,
) -> Result<HttpResponse, PageError> {
    let names = state.clone();
    run(req, state, ctx, form.into_inner(), "/basket", false, |f| {
        let sku = parse_sku(&f.sku)?;
        let done = format!("Removed {} from your basket.", name_of(&names, &sku));
        Ok((BasketCommand::Remove { sku }, done))
    })
    .await
}

/// `POST /basket/clear`.
pub async fn clear(
    req: HttpRequest,
    state: web::Data<ChannelState>,
    ctx: RequestContext,
    form: web::Form<LineForm>,
) -> Result<HttpResponse, PageError> {
    run(req, state, ctx, form.into_inner(), "/basket", false, |_| {
        Ok((
            BasketCommand::Clear,
            "Your basket is now empty.".to_string(),
        ))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_must_be_in_range() {
        assert_eq!(parse_quantity(" 3 ", 1), Ok(3));
        assert_eq!(parse_quantity("999", 1), Ok(999));
        assert_eq!(parse_quantity("0", 0), Ok(0));
        for bad in ["0", "1000", "-1", "two", "", "1.5"] {
            assert!(parse_quantity(bad, 1).is_err(), "{bad}");
        }
    }
}
