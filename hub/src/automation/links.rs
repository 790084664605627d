//! The basket-restore link of a reminder: `{public_url}/basket/restore?customer=…&basket=…&
//! expires=…&sig=…`, signed with the deployment's link secret (HMAC-SHA256 over customer,
//! basket and expiry), so it cannot be made for another basket or kept working longer. It never
//! carries a basket token: a customer basket is reached by signing in as its customer, so the
//! link asks the shopper to sign in (and comes back) unless they are signed in as that customer,
//! then shows the basket.

use super::routes::AutomationData;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use channels::RequestContext;
use hmac::{Hmac, Mac};
use protocol::{BasketId, BasketOwner, CustomerId};
use serde::Deserialize;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

/// The signature of a restore link.
pub fn signature(
    secret: &[u8; 32],
    customer: CustomerId,
    basket: BasketId,
    expires: i64,
) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts any key length"),
    };
    mac.update(b"basket-restore:");
    mac.update(&customer.to_bytes());
    mac.update(&basket.to_bytes());
    mac.update(&expires.to_be_bytes());
    hex::encode(&mac.finalize().into_bytes()[..16])
}

/// The full restore link.
pub fn url(
    public_url: &str,
    secret: &[u8; 32],
    customer: CustomerId,
    basket: BasketId,
    expires: OffsetDateTime,
) -> String {
    let expires = expires.unix_timestamp();
    format!(
        "{}/basket/restore?customer={customer}&basket={basket}&expires={expires}&sig={}",
        public_url.trim_end_matches('/'),
        signature(secret, customer, basket, expires)
    )
}

/// The link's query.
#[derive(Debug, Deserialize)]
pub struct Link {
    #[serde(default)]
    customer: String,
    #[serde(default)]
    basket: String,
    #[serde(default)]
    expires: String,
    #[serde(default)]
    sig: String,
}

/// Why a link does not restore a basket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Incomplete or changed.
    Invalid,
    Expired,
    /// The basket is no longer the customer's.
    Gone,
}

/// Checks the signature, then the expiry; answers the customer and basket.
pub fn verify(
    secret: &[u8; 32],
    link: &Link,
    now: OffsetDateTime,
) -> Result<(CustomerId, BasketId), Refusal> {
    let customer: CustomerId = link.customer.parse().map_err(|_| Refusal::Invalid)?;
    let basket: BasketId = link.basket.parse().map_err(|_| Refusal::Invalid)?;
    let expires: i64 = link.expires.parse().map_err(|_| Refusal::Invalid)?;
    let expected = signature(secret, customer, basket, expires);
    if !bool::from(expected.as_bytes().ct_eq(link.sig.as_bytes())) {
        return Err(Refusal::Invalid);
    }
    if now.unix_timestamp() >= expires {
        return Err(Refusal::Expired);
    }
    Ok((customer, basket))
}

fn page(status: StatusCode, title: &str, body: &str) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header(("Cache-Control", "no-store"))
        .insert_header(("Referrer-Policy", "no-referrer"))
        .body(format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{title} · Omnihub Market</title><link rel=\"stylesheet\" href=\"/static/site.css\"></head><body><main class=\"container\" style=\"max-width:40rem;margin:3rem auto\"><h1>{title}</h1>{body}<p><a class=\"btn\" href=\"/\">Go to the shop</a></p></main></body></html>"
        ))
}

fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header(("Location", location))
        .insert_header(("Cache-Control", "no-store"))
        .finish()
}

fn refused(refusal: Refusal) -> HttpResponse {
    match refusal {
        Refusal::Invalid => page(
            StatusCode::NOT_FOUND,
            "This link does not work",
            "<p>The link is incomplete or was changed. Use the link in the email itself, or sign in to see your basket.</p>",
        ),
        Refusal::Expired => page(
            StatusCode::GONE,
            "This link has expired",
            "<p>Basket links work for a limited time. Sign in to see your basket.</p>",
        ),
        Refusal::Gone => page(
            StatusCode::GONE,
            "This basket is no longer available",
            "<p>The basket from the email has been ordered or replaced. Sign in to see your current basket.</p>",
        ),
    }
}

/// `GET /basket/restore`: the reminder's link.
pub async fn restore(
    req: HttpRequest,
    data: web::Data<AutomationData>,
    ctx: RequestContext,
    link: web::Query<Link>,
) -> HttpResponse {
    let storage = &data.env.deps.storage;
    let secret = match storage.link_secret().await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the link secret");
            return page(StatusCode::SERVICE_UNAVAILABLE, "Please try again", "<p>We could not open your basket just now. Please try the link again in a minute.</p>");
        }
    };
    let (customer, basket) = match verify(&secret, &link, data.env.deps.clock.now()) {
        Ok(v) => v,
        Err(r) => return refused(r),
    };
    let record = storage.customer(customer).await.ok().flatten();
    let current = match record.as_ref().and_then(|r| r.basket) {
        Some(id) if id == basket => storage.basket(id).await.ok().flatten(),
        _ => None,
    };
    let theirs = current
        .is_some_and(|b| b.owner == BasketOwner::Customer(customer) && b.merged_into.is_none());
    if !theirs {
        return refused(Refusal::Gone);
    }
    match ctx.shopper.customer {
        Some(c) if c == customer => see_other("/basket"),
        Some(_) => page(
            StatusCode::FORBIDDEN,
            "This basket belongs to another account",
            "<p>You are signed in with a different account than the one this email was sent to. Sign out, then open the link again and sign in with the account the email was sent to.</p>",
        ),
        None => {
            let here = req.uri().path_and_query().map_or("/basket", |p| p.as_str());
            let next: String = url::form_urlencoded::byte_serialize(here.as_bytes()).collect();
            see_other(&format!("/signin?next={next}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link_of(url: &str) -> Link {
        let query = url.split_once('?').map_or("", |(_, q)| q);
        let pairs: std::collections::HashMap<String, String> =
            url::form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect();
        let get = |k: &str| pairs.get(k).cloned().unwrap_or_default();
        Link {
            customer: get("customer"),
            basket: get("basket"),
            expires: get("expires"),
            sig: get("sig"),
        }
    }

    #[test]
    fn a_link_verifies_until_it_expires_and_not_once_changed() {
        let secret = [7u8; 32];
        let (c, b) = (CustomerId::new(), BasketId::new());
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("time");
        let later = now + time::Duration::days(7);
        let u = url("https://shop.test/", &secret, c, b, later);
        assert!(u.starts_with("https://shop.test/basket/restore?customer="));
        assert_eq!(verify(&secret, &link_of(&u), now), Ok((c, b)));
        assert_eq!(verify(&secret, &link_of(&u), later), Err(Refusal::Expired));
        assert_eq!(verify(&[8u8; 32], &link_of(&u), now), Err(Refusal::Invalid));
        let mut other = link_of(&u);
        other.basket = BasketId::new().to_string();
        assert_eq!(verify(&secret, &other, now), Err(Refusal::Invalid));
        let mut longer = link_of(&u);
        longer.expires = (later.unix_timestamp() + 86_400).to_string();
        assert_eq!(verify(&secret, &longer, now), Err(Refusal::Invalid));
        let mut garbage = link_of(&u);
        garbage.customer = "x".into();
        assert_eq!(verify(&secret, &garbage, now), Err(Refusal::Invalid));
    }
}
