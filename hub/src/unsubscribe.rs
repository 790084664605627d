//! Unsubscribe links for marketing email: `{public_url}/unsubscribe?customer=…&token=…`, signed
//! with this deployment's link secret (HMAC-SHA256), so nobody can unsubscribe someone else.
//! `GET` asks, `POST` withdraws the customer's consent to email marketing through their actor
//! (source `unsubscribe`, a `consent_changed` event); a mail client's one-click `POST`
//! (RFC 8058, `List-Unsubscribe=One-Click`) does the same.

use crate::app::HubHandle;
use actix_web::{web, HttpResponse};
use hmac::{Hmac, Mac};
use protocol::CustomerId;
use serde::Deserialize;
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The token for a customer's unsubscribe link.
pub fn token(secret: &[u8; 32], customer: CustomerId) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts any key length"),
    };
    mac.update(b"unsubscribe:");
    mac.update(&customer.to_bytes());
    hex::encode(&mac.finalize().into_bytes()[..16])
}

/// The full unsubscribe link for a customer.
pub fn url(public_url: &str, secret: &[u8; 32], customer: CustomerId) -> String {
    format!(
        "{}/unsubscribe?customer={customer}&token={}",
        public_url.trim_end_matches('/'),
        token(secret, customer)
    )
}

#[derive(Deserialize)]
pub struct Link {
    customer: String,
    token: String,
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/unsubscribe")
            .route(web::get().to(ask))
            .route(web::post().to(confirm)),
    );
}

fn page(status: actix_web::http::StatusCode, title: &str, body: &str) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header(("Cache-Control", "no-store"))
        .insert_header(("Referrer-Policy", "no-referrer"))
        .body(format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{title} · Omnihub Market</title><link rel=\"stylesheet\" href=\"/static/site.css\"></head><body><main class=\"container\" style=\"max-width:40rem;margin:3rem auto\"><h1>{title}</h1>{body}<p><a class=\"btn\" href=\"/\">Go to the shop</a></p></main></body></html>"
        ))
}

async fn check(handle: &HubHandle, link: &Link) -> Option<CustomerId> {
    let customer: CustomerId = link.customer.parse().ok()?;
    let secret = crate::storage::CustomerStore::link_secret(handle.storage.as_ref())
        .await
        .ok()?;
    let expected = token(&secret, customer);
    bool::from(expected.as_bytes().ct_eq(link.token.as_bytes())).then_some(customer)
}

fn unknown() -> HttpResponse {
    page(
        actix_web::http::StatusCode::NOT_FOUND,
        "This link does not work",
        "<p>The unsubscribe link is incomplete or was changed. Use the link in the email itself, or change your email settings after signing in.</p>",
    )
}

async fn ask(handle: web::Data<HubHandle>, link: web::Query<Link>) -> HttpResponse {
    if check(&handle, &link).await.is_none() {
        return unknown();
    }
    let action = format!(
        "/unsubscribe?customer={}&token={}",
        html_escape(&link.customer),
        html_escape(&link.token)
    );
    page(
        actix_web::http::StatusCode::OK,
        "Unsubscribe from our emails?",
        &format!("<p>You will no longer get offers, back-in-stock notes or basket reminders. Order and delivery emails still reach you.</p><form method=\"post\" action=\"{action}\"><button class=\"btn btn-primary\" type=\"submit\">Unsubscribe</button></form>"),
    )
}

async fn confirm(handle: web::Data<HubHandle>, link: web::Query<Link>) -> HttpResponse {
    let Some(customer) = check(&handle, &link).await else {
        return unknown();
    };
    let withdraw = protocol::ConsentChoice {
        channel: protocol::ConsentChannel::Email,
        purpose: protocol::ConsentPurpose::Marketing,
        granted: false,
    };
    let recorded = handle
        .backend
        .record_consents(
            customer,
            vec![withdraw],
            protocol::ConsentSource::Unsubscribe,
            protocol::Channel::Web,
        )
        .await;
    match recorded {
        Ok(_) => page(
            actix_web::http::StatusCode::OK,
            "You are unsubscribed",
            "<p>We will send no more marketing email to this address. Order and delivery emails still reach you.</p>",
        ),
        Err(channels::BackendError::NotFound(_)) => unknown(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot record an unsubscribe");
            page(
                actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
                "Please try again",
                "<p>We could not record your choice just now. Please try the link again in a minute.</p>",
            )
        }
    }
}

fn html_escape(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '&' => "&amp;".to_string(),
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '"' => "&quot;".to_string(),
            '\'' => "&#39;".to_string(),
            c => c.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_per_customer_and_per_secret() {
        let a = CustomerId::new();
        let b = CustomerId::new();
        let s1 = [1u8; 32];
        let s2 = [2u8; 32];
        assert_eq!(token(&s1, a), token(&s1, a));
        assert_ne!(token(&s1, a), token(&s1, b));
        assert_ne!(token(&s1, a), token(&s2, a));
        assert_eq!(token(&s1, a).len(), 32);
        assert!(url("http://x/", &s1, a).starts_with("http://x/unsubscribe?customer="));
    }
}
