//! Email over SMTP: the messages the shop sends (order confirmation, payment failed, shipped,
//! delivered, refund, and the marketing mails back in stock and abandoned basket), built as
//! outbox messages and delivered through any standards-compliant SMTP server with `lettre`.
//!
//! A builder ([`order_confirmation`], [`shipped`], …) turns a domain record into an
//! [`OutboxMessage`] for the [`DESTINATION`] `email`, with a stable key, so it is queued once
//! per key in the unit of work that caused it, and a JSON payload that holds everything the
//! templates need: delivery never reads storage. [`EmailDeliverer`] renders the payload with the
//! templates of its locale (HTML and plain text, `en` and `de`, `en` as the fallback) and sends a
//! well-formed multipart message.
//!
//! SMTP delivers at least once: when the connection is lost after the final `.` the outbox sends
//! the message again. Its `Message-ID` is derived from the key alone, so every copy (a retry, or
//! the same key queued again) carries the same id and the receiver can drop the duplicate.

use crate::outbox::{Deliverer, DeliveryError};
use async_trait::async_trait;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::AsyncSmtpTransportBuilder;
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use minijinja::{Environment, ErrorKind, Value};
use protocol::ids::{CheckoutId, CustomerId, Sku};
use protocol::order::OrderRecord;
use protocol::{Money, OutboxMessage, PricedLine};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// The outbox destination of email.
pub const DESTINATION: &str = "email";

/// The locales that have templates; any other falls back to the first.
pub const LOCALES: [&str; 2] = ["en", "de"];

/// How the connection to the SMTP server is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain SMTP (a local relay or the mail sink).
    #[default]
    None,
    /// Plain connection upgraded with STARTTLS, which must succeed (usually port 587).
    Starttls,
    /// TLS from the first byte, "implicit TLS" (usually port 465).
    Tls,
}

/// The SMTP server the hub sends mail through (`[email]`, `OMNIHUB_HUB_EMAIL__*`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmailSettings {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    /// AUTH is used when both the user name and the password are set.
    pub username: Option<SecretString>,
    pub password: Option<SecretString>,
    /// The sender, e.g. `Omnihub Market <shop@omnihub.local>`.
    pub from: String,
    /// The right-hand side of the `Message-ID`s.
    pub message_id_domain: String,
    /// How long one SMTP command (and connecting) may take, e.g. `30s`.
    #[serde(deserialize_with = "human")]
    pub timeout: Duration,
    /// The language of the templates and of the amounts (`en`, `de`).
    pub locale: String,
}

impl Default for EmailSettings {
    fn default() -> Self {
        EmailSettings {
            host: "127.0.0.1".into(),
            port: 2525,
            tls: SmtpTls::None,
            username: None,
            password: None,
            from: "Omnihub Market <shop@omnihub.local>".into(),
            message_id_domain: "omnihub.local".into(),
            timeout: Duration::from_secs(30),
            locale: "en".into(),
        }
    }
}

fn human<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map_err(|e| {
        serde::de::Error::custom(format!(
            "'{text}' is not a duration such as 10m or 30s: {e}"
        ))
    })
}

/// Why the email deliverer could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum EmailError {
    #[error("email.from '{from}' is not a mailbox such as 'Shop <shop@example.com>': {reason}")]
    From { from: String, reason: String },
    #[error("email.message_id_domain '{0}' is not a domain name")]
    MessageIdDomain(String),
    #[error("email.username and email.password go together: set both, or neither for no AUTH")]
    HalfCredentials,
    #[error("cannot set up TLS for '{host}': {source}")]
    Tls {
        host: String,
        #[source]
        source: lettre::transport::smtp::Error,
    },
    #[error("an email template does not compile: {0}")]
    Template(#[from] minijinja::Error),
}

/// What an email is about: its outbox `kind` and its templates' name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmailKind {
    OrderConfirmation,
    PaymentFailed,
    Shipped,
    Delivered,
    Refund,
    BackInStock,
    AbandonedBasket,
    /// The receipt of a store sale with a customer attached (transactional).
    StoreReceipt,
    /// A click-and-collect order is ready at its store (transactional).
    ReadyForPickup,
    /// A link to check out the basket, asked for by voice or chat (transactional).
    CheckoutLink,
    /// A customer who has not ordered for a long time (marketing).
    WinBack,
}

impl EmailKind {
    pub const ALL: [EmailKind; 11] = [
        EmailKind::OrderConfirmation,
        EmailKind::PaymentFailed,
        EmailKind::Shipped,
        EmailKind::Delivered,
        EmailKind::Refund,
        EmailKind::BackInStock,
        EmailKind::AbandonedBasket,
        EmailKind::ReadyForPickup,
        EmailKind::CheckoutLink,
        EmailKind::StoreReceipt,
        EmailKind::WinBack,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EmailKind::OrderConfirmation => "order_confirmation",
            EmailKind::PaymentFailed => "payment_failed",
            EmailKind::Shipped => "shipped",
            EmailKind::Delivered => "delivered",
            EmailKind::Refund => "refund",
            EmailKind::BackInStock => "back_in_stock",
            EmailKind::AbandonedBasket => "abandoned_basket",
            EmailKind::StoreReceipt => "store_receipt",
            EmailKind::ReadyForPickup => "ready_for_pickup",
            EmailKind::CheckoutLink => "checkout_link",
            EmailKind::WinBack => "win_back",
        }
    }

    pub fn parse(kind: &str) -> Option<EmailKind> {
        EmailKind::ALL.into_iter().find(|k| k.as_str() == kind)
    }

    /// Marketing mail carries `List-Unsubscribe` and an unsubscribe link.
    pub fn is_marketing(self) -> bool {
        matches!(
            self,
            EmailKind::BackInStock | EmailKind::AbandonedBasket | EmailKind::WinBack
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Builders: pure functions from records to outbox messages.
// ---------------------------------------------------------------------------------------------

fn email(
    kind: EmailKind,
    key: String,
    payload: serde_json::Value,
    now: OffsetDateTime,
) -> OutboxMessage {
    OutboxMessage::new(DESTINATION, kind.as_str(), key, payload.to_string(), now)
}

/// The absolute order-lookup link: `{public_url}/orders/{number}?key={lookup_key}`.
fn order_url(order: &OrderRecord, public_url: &str) -> String {
    let encode = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    format!(
        "{}/orders/{}?key={}",
        public_url.trim_end_matches('/'),
        encode(&order.number),
        encode(&order.lookup_key)
    )
}

fn line_json(line: &PricedLine) -> serde_json::Value {
    json!({
        "sku": line.sku,
        "name": line.name,
        "variant": line.variant,
        "quantity": line.quantity,
        "unit_price": line.unit_price,
        "line_total": line.line_total,
    })
}

/// What every order mail starts with.
fn order_payload(
    order: &OrderRecord,
    public_url: &str,
) -> serde_json::Map<String, serde_json::Value> {
    let mut payload = serde_json::Map::new();
    payload.insert("to".into(), json!(order.email));
    payload.insert("name".into(), json!(order.address.name));
    payload.insert("order_id".into(), json!(order.id));
    payload.insert("number".into(), json!(order.number));
    payload.insert("order_url".into(), json!(order_url(order, public_url)));
    payload
}

/// The order confirmation, queued once per order with the order.
pub fn order_confirmation(
    order: &OrderRecord,
    public_url: &str,
    now: OffsetDateTime,
) -> OutboxMessage {
    let b = &order.breakdown;
    let mut payload = order_payload(order, public_url);
    let created_at = order.created_at.format(&Rfc3339).unwrap_or_default();
    payload.insert("created_at".into(), json!(created_at));
    payload.insert("lines".into(), b.lines.iter().map(line_json).collect());
    payload.insert("subtotal".into(), json!(b.subtotal));
    payload.insert("discount".into(), json!(b.discount));
    payload.insert(
        "shipping".into(),
        json!({"name": b.shipping.name, "price": b.shipping.price, "delivery": b.shipping.delivery}),
    );
    payload.insert(
        "taxes".into(),
        b.taxes
            .iter()
            .map(|t| json!({"rate_bp": t.rate_bp, "tax": t.tax}))
            .collect(),
    );
    payload.insert("tax_total".into(), json!(b.tax_total));
    payload.insert("prices_include_tax".into(), json!(b.prices_include_tax));
    payload.insert("total".into(), json!(b.total));
    payload.insert("address".into(), json!(order.address));
    email(
        EmailKind::OrderConfirmation,
        format!("email:order_confirmation:{}", order.id),
        payload.into(),
        now,
    )
}

/// A declined or failed payment attempt of a checkout: once per attempt.
pub fn payment_failed(
    checkout_id: CheckoutId,
    attempt: u32,
    to: &str,
    message: &str,
    basket_url: &str,
    now: OffsetDateTime,
) -> OutboxMessage {
    let payload = json!({
        "to": to,
        "checkout_id": checkout_id,
        "attempt": attempt,
        "message": message,
        "basket_url": basket_url,
    });
    email(
        EmailKind::PaymentFailed,
        format!("email:payment_failed:{checkout_id}:{attempt}"),
        payload,
        now,
    )
}

/// A shipment of an order left the warehouse: once per shipment.
pub fn shipped(
    order: &OrderRecord,
    shipment_id: &str,
    carrier: &str,
    tracking_number: &str,
    tracking_url: &str,
    public_url: &str,
    now: OffsetDateTime,
) -> OutboxMessage {
    let mut payload = order_payload(order, public_url);
    payload.insert("shipment_id".into(), json!(shipment_id));
    payload.insert("carrier".into(), json!(carrier));
    payload.insert("tracking_number".into(), json!(tracking_number));
    payload.insert("tracking_url".into(), json!(tracking_url));
    email(
        EmailKind::Shipped,
        format!("email:shipped:{}:{shipment_id}", order.id),
        payload.into(),
        now,
    )
}

/// A shipment of an order was delivered: once per shipment.
pub fn delivered(
    order: &OrderRecord,
    shipment_id: &str,
    public_url: &str,
    now: OffsetDateTime,
) -> OutboxMessage {
    let mut payload = order_payload(order, public_url);
    payload.insert("shipment_id".into(), json!(shipment_id));
    email(
        EmailKind::Delivered,
        format!("email:delivered:{}:{shipment_id}", order.id),
        payload.into(),
        now,
    )
}

/// A refund of (part of) an order went through: once per refund at the provider.
pub fn refund(
    order: &OrderRecord,
    refund_id: &str,
    amount: Money,
    public_url: &str,
    now: OffsetDateTime,
) -> OutboxMessage {
    let mut payload = order_payload(order, public_url);
    payload.insert("refund_id".into(), json!(refund_id));
    payload.insert("amount".into(), json!(amount));
    email(
        EmailKind::Refund,
        format!("email:refund:{}:{refund_id}", order.id),
        payload.into(),
        now,
    )
}

/// The receipt of a store sale, for the customer attached at the till: queued once per sale
/// (its key is the sale's id, so the sale sent again by the node, or merged again, queues
/// nothing more, and every copy SMTP sends again has the same `Message-ID`).
pub fn store_receipt(
    sale: &protocol::replication::SaleRecord,
    to: &str,
    name: &str,
    store: &str,
    now: OffsetDateTime,
) -> OutboxMessage {
    let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(sale.at.ms) * 1_000_000)
        .unwrap_or(now)
        .format(&Rfc3339)
        .unwrap_or_default();
    let payload = json!({
        "to": to,
        "name": name,
        "store": store,
        "sale_id": sale.id.to_string(),
        "number": sale.number,
        "created_at": at,
        "lines": sale.lines.iter().map(|l| json!({
            "sku": l.sku,
            "name": l.name,
            "variant": null,
            "quantity": l.quantity,
            "unit_price": l.unit_price,
            "line_total": l.total,
        })).collect::<Vec<_>>(),
        "total": sale.total,
        "taxes": sale.taxes.iter().map(|t| json!({"rate_bp": t.rate_bp, "tax": t.tax})).collect::<Vec<_>>(),
        "payments": sale.payments.iter().map(|p| json!({"method": p.method, "amount": p.amount})).collect::<Vec<_>>(),
    });
    email(
        EmailKind::StoreReceipt,
        format!("email:store_receipt:{}", sale.id),
        payload,
        now,
    )
}

/// A click-and-collect order was picked and waits at its store: once per order, however often
/// the store's report reaches the hub.
pub fn ready_for_pickup(
    order: &OrderRecord,
    store: &str,
    public_url: &str,
    now: OffsetDateTime,
) -> OutboxMessage {
    let mut payload = order_payload(order, public_url);
    payload.insert("store".into(), json!(store));
    payload.insert(
        "lines".into(),
        order.breakdown.lines.iter().map(line_json).collect(),
    );
    email(
        EmailKind::ReadyForPickup,
        format!("email:ready_for_pickup:{}", order.id),
        payload.into(),
        now,
    )
}

/// What the checkout-link mail says.
#[derive(Debug, Clone, Copy)]
pub struct CheckoutLink<'a> {
    pub to: &'a str,
    pub name: &'a str,
    pub lines: &'a [PricedLine],
    pub total: Money,
    pub checkout_url: &'a str,
    /// Where the shopper asked for it (`voice`, `chat`).
    pub channel: &'a str,
    /// What makes this request a new one (the basket and its version): the same basket is
    /// mailed once.
    pub occurrence: &'a str,
}

/// A link to check out the basket, sent when the shopper asks the assistant to check out
/// (which it never completes itself).
pub fn checkout_link(link: &CheckoutLink<'_>, now: OffsetDateTime) -> OutboxMessage {
    let payload = json!({
        "to": link.to,
        "name": link.name,
        "lines": link.lines.iter().map(line_json).collect::<Vec<_>>(),
        "total": link.total,
        "checkout_url": link.checkout_url,
        "channel": link.channel,
    });
    email(
        EmailKind::CheckoutLink,
        format!("email:checkout_link:{}:{}", link.to, link.occurrence),
        payload,
        now,
    )
}

/// Who a marketing mail goes to, and which occurrence of its trigger it answers.
#[derive(Debug, Clone, Copy)]
pub struct MarketingRecipient<'a> {
    pub customer: CustomerId,
    pub to: &'a str,
    /// What makes this trigger a new one (e.g. the restock's or the reminder's sequence number):
    /// the same occurrence is mailed once.
    pub occurrence: &'a str,
    /// A working link that unsubscribes the customer from this kind of mail (also sent as
    /// `List-Unsubscribe`, with one-click POST).
    pub unsubscribe_url: &'a str,
}

/// A product the customer asked about is back in stock.
pub fn back_in_stock(
    recipient: &MarketingRecipient<'_>,
    sku: &Sku,
    product_name: &str,
    product_url: &str,
    now: OffsetDateTime,
) -> OutboxMessage {
    let payload = json!({
        "to": recipient.to,
        "customer_id": recipient.customer,
        "sku": sku,
        "product_name": product_name,
        "product_url": product_url,
        "unsubscribe_url": recipient.unsubscribe_url,
    });
    email(
        EmailKind::BackInStock,
        format!(
            "email:back_in_stock:{}:{sku}:{}",
            recipient.customer, recipient.occurrence
        ),
        payload,
        now,
    )
}

/// A reminder of a basket left behind, with its lines.
pub fn abandoned_basket(
    recipient: &MarketingRecipient<'_>,
    lines: &[PricedLine],
    basket_url: &str,
    now: OffsetDateTime,
) -> OutboxMessage {
    let subtotal = lines
        .first()
        .and_then(|l| Money::sum(l.line_total.currency, lines.iter().map(|l| l.line_total)).ok());
    let payload = json!({
        "to": recipient.to,
        "customer_id": recipient.customer,
        "lines": lines.iter().map(line_json).collect::<Vec<_>>(),
        "subtotal": subtotal,
        "basket_url": basket_url,
        "unsubscribe_url": recipient.unsubscribe_url,
    });
    email(
        EmailKind::AbandonedBasket,
        format!(
            "email:abandoned_basket:{}:{}",
            recipient.customer, recipient.occurrence
        ),
        payload,
        now,
    )
}

/// An invitation back to the shop for a customer who has not ordered for a long time.
pub fn win_back(
    recipient: &MarketingRecipient<'_>,
    name: &str,
    shop_url: &str,
    now: OffsetDateTime,
) -> OutboxMessage {
    let payload = json!({
        "to": recipient.to,
        "customer_id": recipient.customer,
        "name": name,
        "shop_url": shop_url,
        "unsubscribe_url": recipient.unsubscribe_url,
    });
    email(
        EmailKind::WinBack,
        format!(
            "email:win_back:{}:{}",
            recipient.customer, recipient.occurrence
        ),
        payload,
        now,
    )
}

/// Adds the personalised block (the `email_block` slot, `docs/personalization.md`) to a
/// marketing mail; a link on this site becomes absolute.
pub fn with_block(
    mut message: OutboxMessage,
    block: &protocol::personalization::EmailBlock,
    public_url: &str,
) -> OutboxMessage {
    let link = block.link.as_ref().map(|l| {
        if l.starts_with('/') {
            format!("{}{l}", public_url.trim_end_matches('/'))
        } else {
            l.clone()
        }
    });
    if let Ok(serde_json::Value::Object(mut payload)) =
        serde_json::from_str::<serde_json::Value>(&message.payload)
    {
        payload.insert(
            "block".into(),
            json!({ "title": block.title, "text": block.text, "link": link }),
        );
        message.payload = serde_json::Value::Object(payload).to_string();
    }
    message
}

/// The `Message-ID` of the mail for an outbox key: `<{32 hex digits of sha256(key)}@{domain}>`,
/// the same for every copy, however often it is sent or queued.
pub fn message_id(key: &str, domain: &str) -> String {
    let digest = hex::encode(Sha256::digest(key.as_bytes()));
    format!("<{}@{domain}>", &digest[..32])
}

// ---------------------------------------------------------------------------------------------
// Formatting for the templates.
// ---------------------------------------------------------------------------------------------

fn decimal_comma(locale: &str) -> bool {
    locale == "de" || locale.starts_with("de-")
}

fn currency_symbol(code: &str) -> Option<&'static str> {
    match code {
        "EUR" => Some("€"),
        "USD" => Some("$"),
        "GBP" => Some("£"),
        "JPY" => Some("¥"),
        _ => None,
    }
}

/// An amount as people of `locale` write it: `€1,234.50` in English, `1.234,50 €` in German;
/// currencies without a well-known symbol keep their code (`CHF 12.00`).
pub fn format_money(money: Money, locale: &str) -> String {
    let comma = decimal_comma(locale);
    let (group, point) = if comma { ('.', ',') } else { (',', '.') };
    let exponent = u32::from(money.currency.exponent());
    let scale = 10u64.pow(exponent);
    let abs = money.minor.unsigned_abs();
    let digits = (abs / scale).to_string();
    let mut number = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            number.push(group);
        }
        number.push(c);
    }
    if exponent > 0 {
        let width = exponent as usize;
        number.push(point);
        number.push_str(&format!("{:0width$}", abs % scale));
    }
    let sign = if money.minor < 0 { "-" } else { "" };
    let code = money.currency.code();
    match (currency_symbol(code), comma) {
        (Some(symbol), false) => format!("{sign}{symbol}{number}"),
        (Some(symbol), true) => format!("{sign}{number} {symbol}"),
        (None, false) => format!("{sign}{code} {number}"),
        (None, true) => format!("{sign}{number} {code}"),
    }
}

/// A tax rate in basis points as a percentage: `19%`, `5.5%`; `19 %`, `5,5 %` in German.
fn format_rate(bp: u32, locale: &str) -> String {
    let mut number = format!("{}.{:02}", bp / 100, bp % 100)
        .trim_end_matches('0')
        .trim_end_matches('.')
        .to_string();
    if decimal_comma(locale) {
        number = number.replace('.', ",");
        format!("{number} %")
    } else {
        format!("{number}%")
    }
}

const MONTHS_EN: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const MONTHS_DE: [&str; 12] = [
    "Januar",
    "Februar",
    "März",
    "April",
    "Mai",
    "Juni",
    "Juli",
    "August",
    "September",
    "Oktober",
    "November",
    "Dezember",
];

/// A date as people of `locale` write it: `5 January 2026`, `5. Januar 2026`.
fn format_date(at: OffsetDateTime, locale: &str) -> String {
    let month = usize::from(u8::from(at.month())) - 1;
    if decimal_comma(locale) {
        format!("{}. {} {}", at.day(), MONTHS_DE[month], at.year())
    } else {
        format!("{} {} {}", at.day(), MONTHS_EN[month], at.year())
    }
}

/// A link for an `href` attribute: only http(s) (anything else becomes `#`), escaped for an
/// attribute without the `&#x2f;` that autoescaping writes for every `/`.
fn href(url: &str) -> Value {
    let url = if url.starts_with("https://") || url.starts_with("http://") {
        url
    } else {
        "#"
    };
    let mut out = String::with_capacity(url.len());
    for c in url.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    Value::from_safe_string(out)
}

fn template_error(message: String) -> minijinja::Error {
    minijinja::Error::new(ErrorKind::InvalidOperation, message)
}

/// A `Money` from its JSON form `{"minor": …, "currency": "EUR"}` in a template.
fn money_of(value: &Value) -> Result<Money, minijinja::Error> {
    let minor = i64::try_from(value.get_attr("minor")?)
        .map_err(|_| template_error(format!("not an amount of money: {value}")))?;
    let code = value.get_attr("currency")?;
    let currency = protocol::Currency::parse(code.as_str().unwrap_or_default())
        .map_err(|e| template_error(e.to_string()))?;
    Ok(Money::new(minor, currency))
}

// ---------------------------------------------------------------------------------------------
// Templates.
// ---------------------------------------------------------------------------------------------

macro_rules! templates {
    ($($name:literal),* $(,)?) => {
        [$(($name, include_str!(concat!("../../templates/email/", $name)))),*]
    };
}

/// Every template, embedded. `.html` ones are autoescaped, `.txt` ones are not.
const TEMPLATES: [(&str, &str); 48] = templates!(
    "base.html",
    "macros.html",
    "en/subject.txt",
    "en/order_confirmation.html",
    "en/order_confirmation.txt",
    "en/payment_failed.html",
    "en/payment_failed.txt",
    "en/shipped.html",
    "en/shipped.txt",
    "en/delivered.html",
    "en/delivered.txt",
    "en/refund.html",
    "en/refund.txt",
    "en/back_in_stock.html",
    "en/back_in_stock.txt",
    "en/abandoned_basket.html",
    "en/abandoned_basket.txt",
    "en/store_receipt.html",
    "en/store_receipt.txt",
    "en/ready_for_pickup.html",
    "en/ready_for_pickup.txt",
    "en/checkout_link.html",
    "en/checkout_link.txt",
    "en/win_back.html",
    "en/win_back.txt",
    "de/subject.txt",
    "de/order_confirmation.html",
    "de/order_confirmation.txt",
    "de/payment_failed.html",
    "de/payment_failed.txt",
    "de/shipped.html",
    "de/shipped.txt",
    "de/delivered.html",
    "de/delivered.txt",
    "de/refund.html",
    "de/refund.txt",
    "de/back_in_stock.html",
    "de/back_in_stock.txt",
    "de/abandoned_basket.html",
    "de/abandoned_basket.txt",
    "de/store_receipt.html",
    "de/store_receipt.txt",
    "de/ready_for_pickup.html",
    "de/ready_for_pickup.txt",
    "de/checkout_link.html",
    "de/checkout_link.txt",
    "de/win_back.html",
    "de/win_back.txt",
);

/// A rendered email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// The templates of one locale, with the filters that format for it.
struct Templates {
    env: Environment<'static>,
    locale: String,
}

impl Templates {
    fn new(locale: &str) -> Result<Templates, minijinja::Error> {
        let locale = locale.trim().to_ascii_lowercase();
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(true);
        for (name, source) in TEMPLATES {
            env.add_template(name, source)?;
        }
        let l = locale.clone();
        env.add_filter("money", move |v: Value| {
            money_of(&v).map(|m| format_money(m, &l))
        });
        env.add_filter("href", href);
        let l = locale.clone();
        env.add_filter("rate", move |bp: u32| format_rate(bp, &l));
        let l = locale.clone();
        env.add_filter("date", move |text: &str| {
            OffsetDateTime::parse(text, &Rfc3339)
                .map(|at| format_date(at, &l))
                .map_err(|e| template_error(format!("not an RFC 3339 time '{text}': {e}")))
        });
        // Every template must compile now, not at the first mail of its kind.
        for (name, _) in TEMPLATES {
            env.get_template(name)?;
        }
        Ok(Templates { env, locale })
    }

    /// The template `file` of the locale, or of English where the locale has none.
    fn template(&self, file: &str) -> Result<minijinja::Template<'_, '_>, minijinja::Error> {
        self.env
            .get_template(&format!("{}/{file}", self.locale))
            .or_else(|_| self.env.get_template(&format!("{}/{file}", LOCALES[0])))
    }

    fn render(
        &self,
        kind: EmailKind,
        payload: &serde_json::Value,
        shop: &str,
    ) -> Result<Rendered, minijinja::Error> {
        let mut context = payload.as_object().cloned().unwrap_or_default();
        context.insert("kind".into(), json!(kind.as_str()));
        context.insert("shop".into(), json!(shop));
        context.insert("lang".into(), json!(self.locale));
        let subject = self.template("subject.txt")?.render(&context)?;
        // One line, whatever the template or the data put in it (no header injection).
        let subject = subject.split_whitespace().collect::<Vec<_>>().join(" ");
        context.insert("subject".into(), json!(subject));
        let text = self
            .template(&format!("{}.txt", kind.as_str()))?
            .render(&context)?;
        let html = self
            .template(&format!("{}.html", kind.as_str()))?
            .render(&context)?;
        Ok(Rendered {
            subject,
            text,
            html,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The deliverer.
// ---------------------------------------------------------------------------------------------

/// Sends the `email` outbox over SMTP. The transport (with its connection pool) is built at
/// the first delivery, inside the runtime that delivers, and reused after.
pub struct EmailDeliverer {
    smtp: AsyncSmtpTransportBuilder,
    transport: OnceLock<AsyncSmtpTransport<Tokio1Executor>>,
    from: Mailbox,
    message_id_domain: String,
    templates: Templates,
}

const LIST_UNSUBSCRIBE: &str = "List-Unsubscribe";
const LIST_UNSUBSCRIBE_POST: &str = "List-Unsubscribe-Post";

/// Permanent replies that are about the hub's own setup (authentication, an extension the server
/// lacks), not about the message: worth retrying once the operator fixes it.
const SETUP_REPLIES: [u16; 6] = [502, 504, 530, 534, 535, 538];

impl EmailDeliverer {
    pub fn new(settings: &EmailSettings) -> Result<EmailDeliverer, EmailError> {
        let from: Mailbox = settings
            .from
            .parse()
            .map_err(|e: lettre::address::AddressError| EmailError::From {
                from: settings.from.clone(),
                reason: e.to_string(),
            })?;
        let domain = &settings.message_id_domain;
        let bad_domain = domain.is_empty()
            || !domain
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
        if bad_domain {
            return Err(EmailError::MessageIdDomain(domain.clone()));
        }
        let tls = |host: &str| {
            TlsParameters::new(host.to_string()).map_err(|source| EmailError::Tls {
                host: host.to_string(),
                source,
            })
        };
        let mut smtp =
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(settings.host.as_str())
                .port(settings.port)
                .timeout(Some(settings.timeout))
                .tls(match settings.tls {
                    SmtpTls::None => Tls::None,
                    SmtpTls::Starttls => Tls::Required(tls(&settings.host)?),
                    SmtpTls::Tls => Tls::Wrapper(tls(&settings.host)?),
                });
        match (&settings.username, &settings.password) {
            (Some(user), Some(password)) => {
                smtp = smtp.credentials(Credentials::new(
                    user.expose_secret().to_string(),
                    password.expose_secret().to_string(),
                ));
            }
            (None, None) => {}
            _ => return Err(EmailError::HalfCredentials),
        }
        Ok(EmailDeliverer {
            smtp,
            transport: OnceLock::new(),
            from,
            message_id_domain: domain.clone(),
            templates: Templates::new(&settings.locale)?,
        })
    }

    fn transport(&self) -> &AsyncSmtpTransport<Tokio1Executor> {
        self.transport.get_or_init(|| self.smtp.clone().build())
    }

    /// The shop's name as the mails show it: the sender's display name, else its domain.
    fn shop(&self) -> String {
        self.from
            .name
            .clone()
            .unwrap_or_else(|| self.from.email.domain().to_string())
    }

    /// Subject, text and HTML of an outbox message.
    pub fn render(&self, message: &OutboxMessage) -> Result<Rendered, DeliveryError> {
        let (kind, payload) = parse(message)?;
        self.templates
            .render(kind, &payload, &self.shop())
            .map_err(|e| {
                DeliveryError::Reject(format!("cannot render the {} email: {e:#}", kind.as_str()))
            })
    }

    /// The whole message as it goes over SMTP.
    pub fn compose(&self, message: &OutboxMessage) -> Result<Message, DeliveryError> {
        let (kind, payload) = parse(message)?;
        let reject = DeliveryError::Reject;
        let to_text = payload["to"].as_str().unwrap_or_default();
        let to: Address = to_text
            .parse()
            .map_err(|e| reject(format!("invalid recipient address '{to_text}': {e}")))?;
        let name = payload["name"].as_str().filter(|n| !n.trim().is_empty());
        let rendered = self
            .templates
            .render(kind, &payload, &self.shop())
            .map_err(|e| reject(format!("cannot render the {} email: {e:#}", kind.as_str())))?;
        let key = if message.key.is_empty() {
            message.id.to_string()
        } else {
            message.key.clone()
        };
        let mut builder = Message::builder()
            .from(self.from.clone())
            .to(Mailbox::new(name.map(str::to_string), to))
            .subject(rendered.subject)
            .date(SystemTime::from(message.created_at))
            .message_id(Some(message_id(&key, &self.message_id_domain)));
        if kind.is_marketing() {
            let url = payload["unsubscribe_url"].as_str().unwrap_or_default();
            let usable = url.starts_with("https://") || url.starts_with("http://");
            if !usable || url.contains(|c: char| c.is_whitespace() || c == '<' || c == '>') {
                return Err(reject(format!(
                    "a marketing email needs an http(s) unsubscribe_url, not '{url}'"
                )));
            }
            builder = builder
                .raw_header(HeaderValue::new(
                    HeaderName::new_from_ascii_str(LIST_UNSUBSCRIBE),
                    format!("<{url}>"),
                ))
                .raw_header(HeaderValue::new(
                    HeaderName::new_from_ascii_str(LIST_UNSUBSCRIBE_POST),
                    "List-Unsubscribe=One-Click".to_string(),
                ));
        }
        builder
            .multipart(MultiPart::alternative_plain_html(
                rendered.text,
                rendered.html,
            ))
            .map_err(|e| reject(format!("cannot build the email: {e}")))
    }
}

fn parse(message: &OutboxMessage) -> Result<(EmailKind, serde_json::Value), DeliveryError> {
    let kind = EmailKind::parse(&message.kind)
        .ok_or_else(|| DeliveryError::Reject(format!("no email of kind '{}'", message.kind)))?;
    let payload: serde_json::Value = serde_json::from_str(&message.payload)
        .map_err(|e| DeliveryError::Reject(format!("unreadable payload: {e}")))?;
    if !payload.is_object() {
        return Err(DeliveryError::Reject(
            "the payload is not a JSON object".into(),
        ));
    }
    Ok((kind, payload))
}

/// Transient failures (4xx, no connection, a timeout, TLS trouble) are retried; a permanent 5xx
/// about the message or its recipient is final.
fn classify(e: &lettre::transport::smtp::Error) -> DeliveryError {
    let reason = format!("SMTP: {e}");
    match e.status().map(u16::from) {
        Some(code) if e.is_permanent() && !SETUP_REPLIES.contains(&code) => {
            DeliveryError::Reject(reason)
        }
        _ => DeliveryError::Retry(reason),
    }
}

#[async_trait]
impl Deliverer for EmailDeliverer {
    fn destination(&self) -> &'static str {
        DESTINATION
    }

    #[tracing::instrument(name = "email_deliver", skip_all, fields(id = %message.id, kind = %message.kind))]
    async fn deliver(&self, message: &OutboxMessage) -> Result<(), DeliveryError> {
        let mail = self.compose(message)?;
        match self.transport().send(mail).await {
            Ok(_) => Ok(()),
            Err(e) => {
                let outcome = classify(&e);
                tracing::warn!(error = %e, retry = matches!(outcome, DeliveryError::Retry(_)), "email not sent");
                Err(outcome)
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use base64::Engine;
    use protocol::checkout::{Address, Breakdown, ShippingOption};
    use protocol::ids::{BasketId, OrderId, ProductId};
    use protocol::order::{PaymentRecord, Progress};
    use protocol::{Channel, Currency, Subject, TaxLine};
    use simulators::mail::{MailArgs, MailSink, StoredMessage};
    use std::net::SocketAddr;

    const PUBLIC_URL: &str = "https://shop.example.test/";

    fn eur(minor: i64) -> Money {
        Money::new(minor, Currency::EUR)
    }

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_767_607_200).unwrap() // 2026-01-05 10:00 UTC
    }

    fn line(sku: &str, name: &str, variant: &str, quantity: u32, unit: i64) -> PricedLine {
        PricedLine {
            sku: Sku::parse(sku).unwrap(),
            product_id: ProductId::new(),
            product_slug: sku.to_lowercase(),
            name: name.into(),
            variant: variant.into(),
            image: String::new(),
            quantity,
            unit_price: eur(unit),
            line_total: eur(unit * i64::from(quantity)),
            discount: eur(0),
            tax_rate_bp: 1900,
        }
    }

    /// An order of two lines with a discount, shipping and two tax rates, as checkout makes one.
    /// Read from JSON so that fields with defaults (added as orders grow) need no mention here.
    fn order(product_name: &str) -> OrderRecord {
        let lines = vec![
            line("TEE-BLK-M", product_name, "Black / M", 2, 1299),
            line("MUG-01", "Stoneware mug", "", 1, 900),
        ];
        let customer = CustomerId::new();
        let address = Address {
            name: "Ann Example".into(),
            line1: "Hauptstraße 1".into(),
            line2: String::new(),
            city: "Berlin".into(),
            region: String::new(),
            postcode: "10115".into(),
            country: "DE".into(),
            phone: String::new(),
        };
        let breakdown = Breakdown {
            currency: Currency::EUR,
            country: "DE".into(),
            prices_include_tax: true,
            item_count: 3,
            lines,
            subtotal: eur(3498),
            discount: eur(500),
            shipping: ShippingOption {
                id: "standard".into(),
                name: "Standard".into(),
                price: eur(490),
                delivery: "2–3 working days".into(),
            },
            taxes: vec![
                TaxLine {
                    rate_bp: 700,
                    gross: eur(900),
                    tax: eur(59),
                },
                TaxLine {
                    rate_bp: 1900,
                    gross: eur(2588),
                    tax: eur(413),
                },
            ],
            tax_total: eur(472),
            total: eur(3488),
            weight_grams: 900,
        };
        let payment = PaymentRecord {
            provider: "sim".into(),
            session_id: "cs_1".into(),
            payment_intent: Some("pi_1".into()),
            amount: eur(3488),
            refunds: Vec::new(),
        };
        serde_json::from_value(json!({
            "id": OrderId::new(),
            "number": "W-000042",
            "checkout": CheckoutId::new(),
            "basket": BasketId::new(),
            "customer": customer,
            "subject": Subject::Customer(customer),
            "email": "ann@x.test",
            "channel": Channel::Web,
            "address": address,
            "breakdown": breakdown,
            "payment": payment,
            "progress": Progress::Paid,
            "lookup_key": "k3y-Secret_1",
            "created_at": "2026-01-05T10:00:00Z",
            "stock_committed": true,
        }))
        .unwrap()
    }

    fn recipient(customer: CustomerId) -> MarketingRecipient<'static> {
        MarketingRecipient {
            customer,
            to: "ann@x.test",
            occurrence: "1",
            unsubscribe_url: "https://shop.example.test/unsubscribe?token=abc",
        }
    }

    /// One message of every kind, in `EmailKind::ALL` order.
    fn one_of_each() -> Vec<OutboxMessage> {
        one_of_each_for(&order("Organic tee"))
    }

    fn one_of_each_for(o: &OrderRecord) -> Vec<OutboxMessage> {
        let r = recipient(o.customer.unwrap());
        let sku = Sku::parse("TEE-BLK-M").unwrap();
        vec![
            order_confirmation(o, PUBLIC_URL, now()),
            payment_failed(
                o.checkout,
                2,
                "ann@x.test",
                "Your card was declined.",
                "https://shop.example.test/basket",
                now(),
            ),
            shipped(
                o,
                "SHP-1",
                "DHL",
                "00340434161094042557",
                "https://carrier.example.test/track/00340434161094042557",
                PUBLIC_URL,
                now(),
            ),
            delivered(o, "SHP-1", PUBLIC_URL, now()),
            refund(o, "re_1", eur(1299), PUBLIC_URL, now()),
            back_in_stock(
                &r,
                &sku,
                "Organic tee",
                "https://shop.example.test/p/tee",
                now(),
            ),
            abandoned_basket(
                &r,
                &o.breakdown.lines,
                "https://shop.example.test/basket",
                now(),
            ),
            ready_for_pickup(o, "Berlin Mitte", PUBLIC_URL, now()),
            checkout_link(
                &CheckoutLink {
                    to: "ann@x.test",
                    name: "Ann",
                    lines: &o.breakdown.lines,
                    total: o.breakdown.total,
                    checkout_url: "https://shop.example.test/checkout",
                    channel: "voice",
                    occurrence: "b1:3",
                },
                now(),
            ),
        ]
    }

    fn deliverer_for(locale: &str) -> EmailDeliverer {
        EmailDeliverer::new(&EmailSettings {
            locale: locale.into(),
            ..EmailSettings::default()
        })
        .unwrap()
    }

    #[test]
    fn the_message_id_depends_on_the_key_alone() {
        let key = "email:order_confirmation:01ARZ3NDEKTSV4RRFFQ69G5FAV";
        let id = message_id(key, "omnihub.local");
        assert_eq!(id, message_id(key, "omnihub.local"));
        let local = id
            .strip_prefix('<')
            .unwrap()
            .strip_suffix("@omnihub.local>")
            .unwrap();
        assert_eq!(local.len(), 32);
        assert!(local.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(local, &hex::encode(Sha256::digest(key.as_bytes()))[..32]);
        assert_ne!(
            id,
            message_id("email:order_confirmation:other", "omnihub.local")
        );
    }

    #[test]
    fn builders_make_email_messages_with_stable_keys() {
        let o = order("Organic tee");
        let customer = o.customer.unwrap();
        let (id, checkout) = (o.id, o.checkout);
        let expected = [
            (
                "order_confirmation",
                format!("email:order_confirmation:{id}"),
            ),
            (
                "payment_failed",
                format!("email:payment_failed:{checkout}:2"),
            ),
            ("shipped", format!("email:shipped:{id}:SHP-1")),
            ("delivered", format!("email:delivered:{id}:SHP-1")),
            ("refund", format!("email:refund:{id}:re_1")),
            (
                "back_in_stock",
                format!("email:back_in_stock:{customer}:TEE-BLK-M:1"),
            ),
            (
                "abandoned_basket",
                format!("email:abandoned_basket:{customer}:1"),
            ),
            ("ready_for_pickup", format!("email:ready_for_pickup:{id}")),
            (
                "checkout_link",
                "email:checkout_link:ann@x.test:b1:3".to_string(),
            ),
        ];
        let built = one_of_each_for(&o);
        assert_eq!(built.len(), expected.len());
        for ((message, (kind, key)), k) in built.iter().zip(expected).zip(EmailKind::ALL) {
            assert_eq!(message.destination, DESTINATION);
            assert_eq!(
                (message.kind.as_str(), message.key.as_str()),
                (kind, key.as_str())
            );
            assert_eq!(EmailKind::parse(kind), Some(k));
            assert_eq!(
                k.is_marketing(),
                kind == "back_in_stock" || kind == "abandoned_basket"
            );
        }
        // The same record gives the same key, whenever it is built.
        let later = now() + Duration::from_secs(3600);
        assert_eq!(
            order_confirmation(&o, PUBLIC_URL, now()).key,
            order_confirmation(&o, PUBLIC_URL, later).key
        );
        assert_ne!(
            shipped(
                &o,
                "SHP-1",
                "DHL",
                "1",
                "https://t.test/1",
                PUBLIC_URL,
                now()
            )
            .key,
            shipped(
                &o,
                "SHP-2",
                "DHL",
                "2",
                "https://t.test/2",
                PUBLIC_URL,
                now()
            )
            .key
        );
    }

    #[test]
    fn the_order_confirmation_payload_holds_what_the_templates_need() {
        let o = order("Organic tee");
        let m = order_confirmation(&o, PUBLIC_URL, now());
        let p: serde_json::Value = serde_json::from_str(&m.payload).unwrap();
        assert_eq!(p["to"], "ann@x.test");
        assert_eq!(p["number"], "W-000042");
        assert_eq!(
            p["order_url"],
            "https://shop.example.test/orders/W-000042?key=k3y-Secret_1"
        );
        assert_eq!(p["lines"][0]["quantity"], 2);
        assert_eq!(p["lines"][0]["line_total"]["minor"], 2598);
        assert_eq!(p["total"], json!({"minor": 3488, "currency": "EUR"}));
        assert_eq!(p["shipping"]["name"], "Standard");
        assert_eq!(p["taxes"][1]["rate_bp"], 1900);
        assert_eq!(p["address"]["city"], "Berlin");
        assert_eq!(p["created_at"], "2026-01-05T10:00:00Z");
    }

    #[test]
    fn amounts_rates_and_dates_are_formatted_per_locale() {
        let cases = [
            (eur(3538), "en", "€35.38"),
            (eur(3538), "de", "35,38 €"),
            (eur(123_456_789), "en", "€1,234,567.89"),
            (eur(123_456_789), "de", "1.234.567,89 €"),
            (eur(-100), "en", "-€1.00"),
            (eur(5), "de", "0,05 €"),
            (Money::new(1200, Currency::JPY), "en", "¥1,200"),
            (
                Money::new(1250, Currency::parse("CHF").unwrap()),
                "en",
                "CHF 12.50",
            ),
            (
                Money::new(1250, Currency::parse("CHF").unwrap()),
                "de",
                "12,50 CHF",
            ),
        ];
        for (money, locale, expected) in cases {
            assert_eq!(
                format_money(money, locale),
                expected,
                "{money:?} in {locale}"
            );
        }
        assert_eq!(format_rate(1900, "en"), "19%");
        assert_eq!(format_rate(550, "en"), "5.5%");
        assert_eq!(format_rate(550, "de"), "5,5 %");
        assert_eq!(format_rate(0, "en"), "0%");
        assert_eq!(format_date(now(), "en"), "5 January 2026");
        assert_eq!(format_date(now(), "de"), "5. Januar 2026");
    }

    #[test]
    fn the_win_back_mail_is_marketing_and_renders_in_every_locale() {
        let customer = CustomerId::new();
        let message = win_back(
            &recipient(customer),
            "Ann",
            "https://shop.example.test/",
            now(),
        );
        assert_eq!(message.key, format!("email:win_back:{customer}:1"));
        assert!(EmailKind::WinBack.is_marketing());
        for locale in LOCALES {
            let deliverer = deliverer_for(locale);
            let r = deliverer.render(&message).unwrap();
            assert!(r.text.contains("Ann") && r.text.contains("https://shop.example.test/"));
            assert!(r.html.contains("unsubscribe?token=abc"), "{}", r.html);
            let mail = String::from_utf8(deliverer.compose(&message).unwrap().formatted()).unwrap();
            assert!(mail
                .contains("List-Unsubscribe: <https://shop.example.test/unsubscribe?token=abc>"));
        }
    }

    #[test]
    fn a_personalised_block_renders_in_every_marketing_mail_and_locale() {
        let customer = CustomerId::new();
        let block = protocol::personalization::EmailBlock {
            title: "New beans in the roastery".into(),
            text: "Three new single origins.".into(),
            link: Some("/c/coffee".into()),
        };
        let mails = [
            win_back(
                &recipient(customer),
                "Ann",
                "https://shop.example.test/",
                now(),
            ),
            back_in_stock(
                &recipient(customer),
                &Sku::parse("BEANS").unwrap(),
                "Beans",
                "https://shop.example.test/p/beans",
                now(),
            ),
            abandoned_basket(
                &recipient(customer),
                &[],
                "https://shop.example.test/b",
                now(),
            ),
        ];
        for message in mails {
            let key = message.key.clone();
            let message = with_block(message, &block, "https://shop.example.test/");
            assert_eq!(message.key, key, "the same mail: queued once");
            for locale in LOCALES {
                let r = deliverer_for(locale).render(&message).unwrap();
                for body in [&r.text, &r.html] {
                    assert!(body.contains("New beans in the roastery"), "{body}");
                    assert!(
                        body.contains("https://shop.example.test/c/coffee"),
                        "{body}"
                    );
                }
            }
            let plain = deliverer_for("en").render(&message).unwrap();
            assert!(plain.text.contains("Three new single origins."));
        }
    }

    #[test]
    fn every_kind_renders_in_every_locale() {
        for locale in LOCALES {
            let deliverer = deliverer_for(locale);
            for message in one_of_each() {
                let r = deliverer.render(&message).unwrap();
                assert!(!r.subject.is_empty() && !r.subject.contains('\n'), "{r:?}");
                assert!(r.html.starts_with("<!DOCTYPE html>"), "{}", r.html);
                assert!(r.html.contains(&format!("<html lang=\"{locale}\">")));
                assert!(r.text.contains("Omnihub Market"), "{}", r.text);
                assert!(!r.text.contains("{{") && !r.html.contains("{{"));
                deliverer.compose(&message).unwrap();
            }
        }
        let de = deliverer_for("de").render(&one_of_each()[0]).unwrap();
        assert_eq!(de.subject, "Ihre Bestellung W-000042 ist bestätigt");
        for part in [&de.text, &de.html] {
            assert!(part.contains("34,88 €"), "{part}");
            assert!(part.contains("5. Januar 2026"), "{part}");
            assert!(part.contains("inkl. 19 % MwSt."), "{part}");
        }
        // A locale without templates falls back to English, and formats as English.
        let fr = deliverer_for("fr").render(&one_of_each()[0]).unwrap();
        assert_eq!(fr.subject, "Your order W-000042 is confirmed");
    }

    #[test]
    fn the_html_part_escapes_what_shoppers_wrote_and_the_text_part_keeps_it() {
        let o = order("<script>alert('x')</script> & Co");
        let r = deliverer_for("en")
            .render(&order_confirmation(&o, PUBLIC_URL, now()))
            .unwrap();
        assert!(!r.html.contains("<script>"), "{}", r.html);
        assert!(r.html.contains("&lt;script&gt;"), "{}", r.html);
        assert!(r.html.contains("&amp; Co"), "{}", r.html);
        assert!(
            r.text.contains("<script>alert('x')</script> & Co"),
            "{}",
            r.text
        );
        // Links are http(s) only, escaped for the attribute.
        let r = recipient(o.customer.unwrap());
        let sku = Sku::parse("TEE-BLK-M").unwrap();
        let evil = back_in_stock(&r, &sku, "Tee", "javascript:alert(1)", now());
        let html = deliverer_for("en").render(&evil).unwrap().html;
        assert!(html.contains("href=\"#\""), "{html}");
        assert!(!html.contains("javascript:"), "{html}");
        let amp = back_in_stock(&r, &sku, "Tee", "https://s.test/p?a=1&b=\"2\"", now());
        let html = deliverer_for("en").render(&amp).unwrap().html;
        assert!(
            html.contains("href=\"https://s.test/p?a=1&amp;b=&quot;2&quot;\""),
            "{html}"
        );
    }

    #[test]
    fn the_plain_text_reads_well() {
        let r = deliverer_for("en").render(&one_of_each()[0]).unwrap();
        let expected = "\
Hello Ann Example,

thank you for your order W-000042 of 5 January 2026. We have received it and are getting it ready.

2 × Organic tee (Black / M): €25.98
1 × Stoneware mug: €9.00

Subtotal: €34.98
Discount: −€5.00
Shipping (Standard): €4.90
incl. 7% VAT: €0.59
incl. 19% VAT: €4.13
Total: €34.88

Delivery address:
Ann Example
Hauptstraße 1
10115 Berlin
DE

View your order at any time:
https://shop.example.test/orders/W-000042?key=k3y-Secret_1

Omnihub Market
";
        assert_eq!(r.text, expected);
    }

    #[test]
    fn settings_read_their_keys_and_refuse_unknown_ones() {
        let s: EmailSettings = serde_json::from_value(json!({
            "host": "smtp.example.test",
            "port": 587,
            "tls": "starttls",
            "username": "shop",
            "password": "hunter2",
            "timeout": "10s",
            "locale": "de",
        }))
        .unwrap();
        assert_eq!(
            (s.host.as_str(), s.port, s.tls),
            ("smtp.example.test", 587, SmtpTls::Starttls)
        );
        assert_eq!(s.timeout, Duration::from_secs(10));
        assert_eq!(s.from, "Omnihub Market <shop@omnihub.local>");
        assert!(!format!("{s:?}").contains("hunter2"));
        EmailDeliverer::new(&s).unwrap();
        let d = EmailSettings::default();
        assert_eq!(
            (d.host.as_str(), d.port, d.tls),
            ("127.0.0.1", 2525, SmtpTls::None)
        );
        assert_eq!(d.timeout, Duration::from_secs(30));
        assert!(serde_json::from_value::<EmailSettings>(json!({"hots": "x"})).is_err());
        assert!(serde_json::from_value::<EmailSettings>(json!({"tls": "ssl"})).is_err());
        assert!(serde_json::from_value::<EmailSettings>(json!({"timeout": "soon"})).is_err());

        let bad = [
            EmailSettings {
                from: "not a mailbox".into(),
                ..EmailSettings::default()
            },
            EmailSettings {
                message_id_domain: "a b".into(),
                ..EmailSettings::default()
            },
            EmailSettings {
                username: Some("shop".into()),
                ..EmailSettings::default()
            },
        ];
        for settings in bad {
            assert!(EmailDeliverer::new(&settings).is_err(), "{settings:?}");
        }
    }

    #[test]
    fn unusable_messages_are_rejected_before_any_smtp() {
        let deliverer = deliverer_for("en");
        let good = one_of_each().remove(0);
        let mut payload: serde_json::Value = serde_json::from_str(&good.payload).unwrap();
        payload["to"] = json!("not an address");
        let cases = [
            OutboxMessage {
                kind: "newsletter".into(),
                ..good.clone()
            },
            OutboxMessage {
                payload: "{".into(),
                ..good.clone()
            },
            OutboxMessage {
                payload: payload.to_string(),
                ..good.clone()
            },
        ];
        for message in cases {
            assert!(
                matches!(deliverer.compose(&message), Err(DeliveryError::Reject(_))),
                "{message:?}"
            );
        }
        let mut marketing = one_of_each().remove(5);
        let mut payload: serde_json::Value = serde_json::from_str(&marketing.payload).unwrap();
        payload["unsubscribe_url"] = json!("");
        marketing.payload = payload.to_string();
        assert!(matches!(
            deliverer.compose(&marketing),
            Err(DeliveryError::Reject(_))
        ));
    }

    // --- Over SMTP, against the mail sink ----------------------------------------------------

    fn local(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    async fn start_sink(smtp: SocketAddr) -> MailSink {
        MailSink::start(&MailArgs {
            smtp,
            http: local(0),
            ..MailArgs::default()
        })
        .await
        .unwrap()
    }

    fn deliverer_to(smtp: SocketAddr) -> EmailDeliverer {
        EmailDeliverer::new(&EmailSettings {
            host: smtp.ip().to_string(),
            port: smtp.port(),
            timeout: Duration::from_secs(5),
            ..EmailSettings::default()
        })
        .unwrap()
    }

    fn header(message: &StoredMessage, name: &str) -> Option<String> {
        message
            .header_fields()
            .into_iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// The decoded parts of a multipart message: (content type, text).
    fn parts(message: &StoredMessage) -> Vec<(String, String)> {
        let content_type = header(message, "Content-Type").unwrap();
        assert!(
            content_type.starts_with("multipart/alternative"),
            "{content_type}"
        );
        let boundary = content_type
            .split("boundary=")
            .nth(1)
            .unwrap()
            .trim_matches('"');
        let body = message.body();
        let sections: Vec<&str> = body.split(&format!("--{boundary}")).collect();
        // Preamble, the parts, then the closing `--`.
        sections[1..sections.len() - 1]
            .iter()
            .map(|section| {
                let (head, text) = section
                    .trim_start_matches("\r\n")
                    .split_once("\r\n\r\n")
                    .unwrap();
                let field = |name: &str| {
                    head.lines()
                        .find_map(|l| {
                            l.split_once(':')
                                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                        })
                        .map(|(_, v)| v.trim().to_ascii_lowercase())
                        .unwrap_or_default()
                };
                let decoded = match field("Content-Transfer-Encoding").as_str() {
                    "quoted-printable" => quoted_printable(text),
                    "base64" => {
                        let compact: String = text.split_whitespace().collect();
                        let bytes = base64::engine::general_purpose::STANDARD
                            .decode(compact)
                            .unwrap();
                        String::from_utf8(bytes).unwrap()
                    }
                    _ => text.to_string(),
                };
                (field("Content-Type"), decoded)
            })
            .collect()
    }

    fn quoted_printable(text: &str) -> String {
        let joined = text.replace("=\r\n", "");
        let bytes = joined.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let hex = joined
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match (bytes[i], hex) {
                (b'=', Some(byte)) => {
                    out.push(byte);
                    i += 3;
                }
                (byte, _) => {
                    out.push(byte);
                    i += 1;
                }
            }
        }
        String::from_utf8(out).unwrap()
    }

    #[tokio::test]
    async fn an_order_confirmation_arrives_well_formed() {
        let sink = start_sink(local(0)).await;
        let deliverer = deliverer_to(sink.smtp_addr());
        let message = order_confirmation(&order("Organic tee"), PUBLIC_URL, now());
        deliverer.deliver(&message).await.unwrap();

        let stored = sink.messages();
        assert_eq!(stored.len(), 1);
        let mail = &stored[0];
        assert_eq!(mail.envelope.from, "shop@omnihub.local");
        assert_eq!(mail.envelope.to, ["ann@x.test"]);
        let subject = mail.headers.subject.clone().unwrap();
        assert!(subject.contains("W-000042"), "{subject}");
        assert_eq!(
            mail.headers.from.as_deref(),
            Some("\"Omnihub Market\" <shop@omnihub.local>")
        );
        assert!(mail.headers.to.as_deref().unwrap().contains("<ann@x.test>"));
        let date = mail.headers.date.clone().unwrap();
        assert!(
            date.contains("5 Jan 2026") || date.contains("05 Jan 2026"),
            "{date}"
        );
        assert_eq!(
            mail.headers.message_id.as_deref(),
            Some(message_id(&message.key, "omnihub.local").as_str())
        );
        assert!(header(mail, "MIME-Version").is_some());
        assert!(
            header(mail, LIST_UNSUBSCRIBE).is_none(),
            "transactional mail has none"
        );

        let parts = parts(mail);
        assert_eq!(parts.len(), 2, "{parts:?}");
        assert!(
            parts[0].0.starts_with("text/plain; charset=utf-8"),
            "{parts:?}"
        );
        assert!(
            parts[1].0.starts_with("text/html; charset=utf-8"),
            "{parts:?}"
        );
        let link = "https://shop.example.test/orders/W-000042?key=k3y-Secret_1";
        for (content_type, text) in &parts {
            // Autoescaping writes `/` as `&#x2f;` in HTML text, which reads as `/`.
            let text = text.replace("&#x2f;", "/");
            for needle in [
                "Organic tee",
                "Black / M",
                "Stoneware mug",
                "€25.98",
                "€34.88",
                "W-000042",
            ] {
                assert!(
                    text.contains(needle),
                    "{content_type} lacks {needle}: {text}"
                );
            }
        }
        assert!(parts[0].1.contains(link), "{}", parts[0].1);
        assert!(
            parts[1]
                .1
                .contains(&format!("href=\"{}\"", link.replace('&', "&amp;"))),
            "{}",
            parts[1].1
        );
        sink.stop().await;
    }

    #[tokio::test]
    async fn every_copy_of_a_key_carries_the_same_message_id() {
        let sink = start_sink(local(0)).await;
        let deliverer = deliverer_to(sink.smtp_addr());
        let o = order("Organic tee");
        let message = order_confirmation(&o, PUBLIC_URL, now());
        // A retry of the same outbox message, then the same key queued again later.
        deliverer.deliver(&message).await.unwrap();
        deliverer.deliver(&message).await.unwrap();
        let again = order_confirmation(&o, PUBLIC_URL, now() + Duration::from_secs(60));
        assert_ne!(again.id, message.id);
        deliverer.deliver(&again).await.unwrap();
        // Another order: another key, another id.
        let other = order_confirmation(&order("Organic tee"), PUBLIC_URL, now());
        deliverer.deliver(&other).await.unwrap();

        let stored = sink.messages();
        assert_eq!(stored.len(), 4);
        let ids: Vec<_> = stored
            .iter()
            .map(|m| m.headers.message_id.clone().unwrap())
            .collect();
        assert_eq!(ids[0], ids[1]);
        assert_eq!(ids[0], ids[2]);
        assert_ne!(ids[0], ids[3]);
        assert_eq!(stored[0].duplicate_of, None);
        assert_eq!(stored[1].duplicate_of, Some(stored[0].id));
        assert_eq!(stored[2].duplicate_of, Some(stored[0].id));
        assert_eq!(stored[3].duplicate_of, None);
        sink.stop().await;
    }

    #[tokio::test]
    async fn marketing_mail_can_be_unsubscribed_from() {
        let sink = start_sink(local(0)).await;
        let deliverer = deliverer_to(sink.smtp_addr());
        let all = one_of_each();
        for message in &all[5..7] {
            deliverer.deliver(message).await.unwrap();
        }
        let stored = sink.messages();
        assert_eq!(stored.len(), 2);
        let url = "https://shop.example.test/unsubscribe?token=abc";
        for mail in &stored {
            assert_eq!(
                header(mail, LIST_UNSUBSCRIBE).as_deref(),
                Some(format!("<{url}>").as_str())
            );
            assert_eq!(
                header(mail, LIST_UNSUBSCRIBE_POST).as_deref(),
                Some("List-Unsubscribe=One-Click")
            );
            let parts = parts(mail);
            assert!(parts[0].1.contains(url), "{}", parts[0].1);
            assert!(
                parts[1].1.contains(&format!("href=\"{url}\"")),
                "{}",
                parts[1].1
            );
        }
        assert_eq!(
            stored[0].headers.subject.as_deref(),
            Some("Organic tee is back in stock")
        );
        sink.stop().await;
    }

    #[tokio::test]
    async fn mail_waits_while_smtp_is_down_and_goes_out_when_it_returns() {
        let sink = start_sink(local(0)).await;
        let addr = sink.smtp_addr();
        let deliverer = deliverer_to(addr);
        let all = one_of_each();
        // A pooled connection exists, then the server goes away.
        deliverer.deliver(&all[0]).await.unwrap();
        sink.stop().await;
        let outcome = deliverer.deliver(&all[3]).await;
        assert!(
            matches!(outcome, Err(DeliveryError::Retry(_))),
            "{outcome:?}"
        );

        let sink = start_sink(addr).await;
        deliverer.deliver(&all[3]).await.unwrap();
        let stored = sink.messages();
        assert_eq!(stored.len(), 1);
        assert_eq!(
            stored[0].headers.message_id.as_deref(),
            Some(message_id(&all[3].key, "omnihub.local").as_str())
        );
        sink.stop().await;
    }

    #[tokio::test]
    async fn an_address_the_server_refuses_is_rejected_for_good() {
        let sink = start_sink(local(0)).await;
        let deliverer = deliverer_to(sink.smtp_addr());
        let mut message = one_of_each().remove(1);
        let mut payload: serde_json::Value = serde_json::from_str(&message.payload).unwrap();
        // lettre takes it; the sink answers `501 5.5.4` to `RCPT TO`.
        payload["to"] = json!("ann@x_y.test");
        message.payload = payload.to_string();
        let outcome = deliverer.deliver(&message).await;
        assert!(
            matches!(&outcome, Err(DeliveryError::Reject(e)) if e.contains("501")),
            "{outcome:?}"
        );
        // The connection is still good for the next message.
        deliverer.deliver(&one_of_each().remove(1)).await.unwrap();
        assert_eq!(sink.messages().len(), 1);
        sink.stop().await;
    }
}
