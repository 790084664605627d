//! The basket page and its forms. Every form answers 303 to a page that shows what happened
//! (a flash message), so reloading never repeats a change.

use super::format::{safe_next, sentence, time_left};
use super::page::{Level, PageError, Visitor, BASKET_DAYS};
use crate::backend::{BackendError, BasketCommand, BasketView, CheckoutSummary};
use crate::context::{ChannelState, RequestContext, BASKET_COOKIE};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use minijinja::{context, Value};
use protocol::{EventKind, Sku, MAX_LINE_QUANTITY};
use serde::Deserialize;
use time::OffsetDateTime;

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
    #[serde(default)]
    code: String,
}

/// `GET /basket`: the lines, or the payment in progress that locks them.
pub async fn show(
    req: HttpRequest,
    state: web::Data<ChannelState>,
    ctx: RequestContext,
) -> Result<HttpResponse, PageError> {
    let mut visitor = Visitor::new(&req, state, ctx)?;
    let basket = visitor.basket().await?;
    let payment = basket
        .as_ref()
        .and_then(|b| b.checkout.as_ref())
        .map(payment_panel);
    visitor.record(EventKind::PageView, &[("path", req.path())]);
    visitor
        .render(StatusCode::OK, "basket.html", context! { basket, payment })
        .await
}

/// The "Payment in progress" panel of a locked basket.
fn payment_panel(checkout: &CheckoutSummary) -> Value {
    let seconds = (checkout.hold_expires_at - OffsetDateTime::now_utc()).whole_seconds();
    let payment_url = checkout
        .payment_url
        .as_deref()
        .filter(|u| u.starts_with("https://") || u.starts_with("http://"));
    context! {
        id => checkout.id.to_string(),
        total => checkout.total,
        time_left => time_left(seconds),
        expired => seconds <= 0,
        payment_url,
        message => checkout.message.as_deref(),
    }
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

/// What the page says after a change went through, from the basket it left.
type Reply = Box<dyn FnOnce(&BasketView) -> (Level, String)>;

/// The same success message whatever the basket.
fn said(message: String) -> Reply {
    Box::new(move |_| (Level::Success, message))
}

/// Runs a basket form: CSRF check, then `build` turns the form into a command and its reply
/// (or a message for the shopper), then the change, a flash message and a 303 to `back`.
async fn run(
    req: HttpRequest,
    state: web::Data<ChannelState>,
    ctx: RequestContext,
    form: LineForm,
    back: &str,
    create: bool,
    build: impl FnOnce(&LineForm) -> Result<(BasketCommand, Reply), String>,
) -> Result<HttpResponse, PageError> {
    let mut visitor = Visitor::new(&req, state, ctx)?;
    visitor.check_form(&req, &form.csrf)?;
    match build(&form) {
        Err(message) => visitor.flash(Level::Error, message),
        Ok((command, reply)) => match change(&mut visitor, command, create).await {
            Ok(view) => {
                let (level, message) = reply(&view);
                visitor.flash(level, message)
            }
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
        Ok((BasketCommand::Add { sku, quantity }, said(done)))
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
                said(format!("Removed {name} from your basket.")),
            ),
            quantity => (
                BasketCommand::SetQuantity { sku, quantity },
                said(format!("Updated {name} to {quantity}.")),
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
        Ok((BasketCommand::Remove { sku }, said(done)))
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
            said("Your basket is now empty.".to_string()),
        ))
    })
    .await
}

/// What the page says of a coupon code the basket took: applied, or kept and why it does not
/// apply yet.
fn coupon_reply(view: &BasketView, code: &str) -> (Level, String) {
    match view.coupons.iter().find(|c| c.code == code) {
        Some(c) if c.applied => (Level::Success, format!("Coupon {code} applied.")),
        Some(c) => (
            Level::Info,
            format!(
                "Coupon {code} is saved but does not apply yet: {}.",
                c.message
                    .as_deref()
                    .unwrap_or("its conditions are not met")
                    .trim_end_matches('.')
            ),
        ),
        None => (Level::Success, format!("Coupon {code} added.")),
    }
}

/// `POST /basket/coupon` (code).
pub async fn apply_coupon(
    req: HttpRequest,
    state: web::Data<ChannelState>,
    ctx: RequestContext,
    form: web::Form<LineForm>,
) -> Result<HttpResponse, PageError> {
    let client = ctx.client.to_string();
    run(req, state, ctx, form.into_inner(), "/basket", false, |f| {
        let code = f.code.trim().to_string();
        if code.is_empty() {
            return Err("Please type a coupon code.".to_string());
        }
        let shown = code.to_ascii_uppercase();
        let reply: Reply = Box::new(move |view| coupon_reply(view, &shown));
        Ok((BasketCommand::ApplyCoupon { code, client }, reply))
    })
    .await
}

/// `POST /basket/coupon/remove` (code).
pub async fn remove_coupon(
    req: HttpRequest,
    state: web::Data<ChannelState>,
    ctx: RequestContext,
    form: web::Form<LineForm>,
) -> Result<HttpResponse, PageError> {
    run(req, state, ctx, form.into_inner(), "/basket", false, |f| {
        let code = f.code.trim().to_string();
        let done = format!("Coupon {} removed.", code.to_ascii_uppercase());
        Ok((BasketCommand::RemoveCoupon { code }, said(done)))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::CouponStatus;
    use protocol::pricing::PricedBasket;
    use protocol::{BasketId, Currency, Money};

    fn with_coupons(coupons: Vec<CouponStatus>) -> BasketView {
        let zero = Money::zero(Currency::EUR);
        BasketView {
            id: BasketId::new(),
            version: 1,
            owner: "anonymous",
            priced: PricedBasket {
                currency: Currency::EUR,
                lines: Vec::new(),
                unavailable: Vec::new(),
                item_count: 0,
                subtotal: zero,
                discount: zero,
                total: zero,
                taxes: Vec::new(),
                promotions: Default::default(),
            },
            coupons,
            checkout: None,
        }
    }

    #[test]
    fn a_coupon_reply_says_whether_the_code_applies_and_why_not() {
        let view = with_coupons(vec![
            CouponStatus {
                code: "WELCOME10".into(),
                applied: true,
                message: None,
            },
            CouponStatus {
                code: "BIG-SPENDER".into(),
                applied: false,
                message: Some("needs a basket of at least EUR 100.00".into()),
            },
        ]);
        assert_eq!(
            coupon_reply(&view, "WELCOME10"),
            (Level::Success, "Coupon WELCOME10 applied.".to_string())
        );
        assert_eq!(
            coupon_reply(&view, "BIG-SPENDER"),
            (
                Level::Info,
                "Coupon BIG-SPENDER is saved but does not apply yet: needs a basket of at least EUR 100.00."
                    .to_string()
            )
        );
    }

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
