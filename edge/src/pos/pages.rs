//! The POS pages at `/pos` (`docs/pos.md`, "The POS pages"): server-rendered HTML with one
//! small embedded script, served by the store's node, so they work with the internet down.
//!
//! - Sign-in: pick your name, type the PIN (on-screen keypad or keyboard). The session token
//!   goes into an `HttpOnly`, `SameSite=Strict` cookie scoped to `/pos`: cookie auth exists for
//!   these pages only; `/api/v1` still wants `Authorization: Bearer`.
//! - Forms are guarded twice: every form of a signed-in page carries a CSRF token derived from
//!   the session (SHA-256 of the session's stored hash, checked in constant time), and every
//!   POST (sign-in included) is refused when its `Origin`/`Referer` names another host.
//! - The sale being rung up lives in the page, not on the node: `cart` (`SKU:qty,…`) and
//!   `coupons` travel in hidden fields and in the `/pos/till?cart=…` address (Post/Redirect/Get),
//!   so nothing is stored until the sale is paid. Every change is priced by the node
//!   ([`crate::store::Store::quote`], the code a sale is priced with) and refused, unchanged,
//!   when the node cannot price it. Paying records the sale with an idempotency key made when
//!   the sale starts and carried with it like `cart`, so a double tap, or Back and pay again,
//!   rings it up once.

#[path = "pages_customer.rs"]
mod customer;

use super::staff::TOKEN_PREFIX;
use super::till::{TillSession, TillTotals, ZReport};
use super::{PosError, SignedIn, TillSale};
use crate::api::{blocking, rfc3339, ApiError, ApiState};
use crate::config::StaffRole;
use crate::ops::{
    ApprovalRequest, Approved, ManualAdjustmentRequest, ManualAdjustments, ManualDiscountRequest,
    PaymentMethod, PaymentRequest, SaleLineRequest, SaleQuote, SaleRequest,
};
use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use minijinja::{AutoEscape, Environment, Value};
use protocol::replication::SaleLine;
use protocol::{Money, Sku};
use serde::Deserialize;
use serde_json::json;
use std::sync::OnceLock;

#[path = "pages_card.rs"]
mod pages_card;

/// The staff session token (HttpOnly, SameSite=Strict, Path=/pos).
const SESSION_COOKIE: &str = "pos_session";
/// The till this browser rings up at.
const TILL_COOKIE: &str = "pos_till";

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../../templates/pos/base.html")),
    (
        "signin.html",
        include_str!("../../templates/pos/signin.html"),
    ),
    ("till.html", include_str!("../../templates/pos/till.html")),
    (
        "receipt.html",
        include_str!("../../templates/pos/receipt.html"),
    ),
    (
        "zreport.html",
        include_str!("../../templates/pos/zreport.html"),
    ),
    ("error.html", include_str!("../../templates/pos/error.html")),
    (
        "collect.html",
        include_str!("../../templates/pos/collect.html"),
    ),
    (
        "returns.html",
        include_str!("../../templates/pos/returns.html"),
    ),
];

/// The "Click & collect" screen (`pages_collect.rs`).
#[path = "pages_collect.rs"]
mod collect;

const POS_CSS: &str = include_str!("../../static/pos.css");
const POS_JS: &str = include_str!("../../static/pos.js");

/// Changes with the stylesheet or script, so their URLs may be cached for long.
fn asset_version() -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in POS_CSS.bytes().chain(POS_JS.bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn templates() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_auto_escape_callback(|_| AutoEscape::Html);
        env.set_formatter(|out, state, value| match value.as_str() {
            // Like minijinja's HTML escaping, but leaves `/` alone (links stay readable).
            Some(text) if matches!(state.auto_escape(), AutoEscape::Html) && !value.is_safe() => {
                out.write_str(&escape_html(text)).map_err(|_| {
                    minijinja::Error::new(
                        minijinja::ErrorKind::WriteFailure,
                        "could not write the page",
                    )
                })
            }
            _ => minijinja::escape_formatter(out, state, value),
        });
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        for (name, source) in TEMPLATES {
            if let Err(e) = env.add_template(name, source) {
                // The page tests catch this; the page then answers 500.
                tracing::error!(template = name, error = %e, "POS template does not compile");
            }
        }
        env
    })
}

fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            c => out.push(c),
        }
    }
    out
}

/// Registers the pages, their stylesheet and script.
pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    let forms = web::FormConfig::default()
        .limit(crate::api::MAX_BODY_BYTES)
        .error_handler(|err, _| {
            let page = render(
                StatusCode::BAD_REQUEST,
                "error.html",
                json!({"chrome": {"store": "POS", "asset": asset_version()},
                       "error": format!("The form could not be read ({err}): go back and try again.")}),
            );
            actix_web::error::InternalError::from_response(err, page).into()
        });
    cfg.service(
        web::scope("/pos")
            .app_data(forms)
            .app_data(web::QueryConfig::default().error_handler(|err, _| {
                let page = render(
                    StatusCode::BAD_REQUEST,
                    "error.html",
                    json!({"chrome": {"store": "POS", "asset": asset_version()},
                           "error": "The address has a malformed query: start again from /pos/till."}),
                );
                actix_web::error::InternalError::from_response(err, page).into()
            }))
            .route("", web::get().to(sign_in_page))
            .route("/", web::get().to(sign_in_page))
            .route("/sign-in", web::post().to(sign_in))
            .route("/sign-out", web::post().to(sign_out))
            .route("/staff/{id}/unlock", web::post().to(unlock))
            .route("/till", web::get().to(till_page))
            .route("/till/select", web::post().to(select_till))
            .route("/till/open", web::post().to(open_till))
            .route("/till/close", web::post().to(close_till))
            .route("/sale", web::post().to(sale_action))
            .route("/customer", web::post().to(customer::customer_action))
            .route("/receipts/{number}", web::get().to(receipt_page))
            .route("/reports/{till}/{number}", web::get().to(report_page))
            .configure(super::pages_returns::configure)
            .route("/status", web::get().to(status))
            .route("/collect", web::get().to(collect::page))
            .route("/collect/{order}", web::post().to(collect::act))
            .route("/static/pos.css", web::get().to(stylesheet))
            .route("/static/pos.js", web::get().to(script)),
    );
}

// ---- rendering ----------------------------------------------------------------------------

pub(super) fn render(status: StatusCode, name: &str, ctx: serde_json::Value) -> HttpResponse {
    let html = templates()
        .get_template(name)
        .and_then(|t| t.render(Value::from_serialize(&ctx)));
    match html {
        Ok(html) => HttpResponse::build(status)
            .content_type("text/html; charset=utf-8")
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .body(html),
        Err(e) => {
            tracing::error!(template = name, error = %e, "a POS page failed to render");
            HttpResponse::InternalServerError()
                .content_type("text/plain; charset=utf-8")
                .body("The page failed to render: tell the operator.")
        }
    }
}

fn see_other(to: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, to))
        .finish()
}

/// A price as shown at the till: `€12.34`.
pub(super) fn show(m: Money) -> String {
    let text = m.to_decimal_string();
    let (sign, digits) = match text.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", text.as_str()),
    };
    match m.currency.code() {
        "EUR" => format!("{sign}€{digits}"),
        "USD" => format!("{sign}${digits}"),
        "GBP" => format!("{sign}£{digits}"),
        code => format!("{sign}{code} {digits}"),
    }
}

/// `2026-11-27 04:43 UTC` from milliseconds.
fn when(ms: u64) -> String {
    let t = rfc3339(ms);
    match (t.get(..10), t.get(11..16)) {
        (Some(d), Some(h)) => format!("{d} {h} UTC"),
        _ => t,
    }
}

/// What every page's header bar shows: the store, sync state, the clerk and their till.
pub(super) async fn chrome(
    state: &web::Data<ApiState>,
    who: Option<&SignedIn>,
    till: Option<&str>,
) -> serde_json::Value {
    let store = state.store.clone();
    let pending = blocking(move || Ok(store.cursors()?.pending_entries()))
        .await
        .unwrap_or(0);
    let sync = state.store.sync_state();
    let locked = match who {
        Some(w) if w.role == StaffRole::Manager => locked_staff(state).await,
        _ => Vec::new(),
    };
    json!({
        "locked": locked,
        "store": state.store.identity().store_name,
        "asset": asset_version(),
        "online": sync.connected,
        "pending": pending,
        "clerk": who.map(|w| json!({"id": w.id, "name": w.name, "role": w.role})),
        "csrf": who.map(csrf_token),
        "till": till,
        "tills": state.pos.tills(),
    })
}

/// The staff members locked after too many wrong PINs (shown to a manager, to unlock).
async fn locked_staff(state: &web::Data<ApiState>) -> Vec<serde_json::Value> {
    let pos = state.pos.clone();
    blocking(move || {
        let mut out = Vec::new();
        for m in pos.staff_list() {
            if pos.pin_failures(&m.id)?.locked() {
                out.push(json!({"id": m.id, "name": m.name}));
            }
        }
        Ok(out)
    })
    .await
    .unwrap_or_default()
}

async fn error_page(
    state: &web::Data<ApiState>,
    who: Option<&SignedIn>,
    status: StatusCode,
    message: String,
) -> HttpResponse {
    let chrome = chrome(state, who, None).await;
    render(
        status,
        "error.html",
        json!({"chrome": chrome, "error": message}),
    )
}

// ---- sessions, CSRF, same origin ----------------------------------------------------------

/// The signed-in staff member behind the session cookie, if any (an ended or expired session
/// is no one: the sign-in page follows).
async fn signed_in(
    state: &web::Data<ApiState>,
    req: &HttpRequest,
) -> Result<Option<SignedIn>, ApiError> {
    session_of(state, req, true).await
}

/// The staff member behind the session cookie; `touch: false` only looks (a background poll
/// is not a use of the till and must not keep the session from going idle).
async fn session_of(
    state: &web::Data<ApiState>,
    req: &HttpRequest,
    touch: bool,
) -> Result<Option<SignedIn>, ApiError> {
    let Some(token) = req.cookie(SESSION_COOKIE).map(|c| c.value().to_string()) else {
        return Ok(None);
    };
    if !token.starts_with(TOKEN_PREFIX) {
        return Ok(None);
    }
    let pos = state.pos.clone();
    let check = move || {
        if touch {
            pos.authenticate(&token)
        } else {
            pos.peek(&token)
        }
    };
    match blocking(move || Ok(check())).await? {
        Ok(who) => Ok(Some(who)),
        Err(PosError::Unauthenticated { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The signed-in staff member, or the response to send instead (to the sign-in page).
pub(super) async fn require(
    state: &web::Data<ApiState>,
    req: &HttpRequest,
) -> Result<SignedIn, HttpResponse> {
    match signed_in(state, req).await {
        Ok(Some(who)) => Ok(who),
        Ok(None) => {
            let mut res = see_other("/pos");
            // A stale cookie goes, so the sign-in page is not a loop of failed lookups.
            if req.cookie(SESSION_COOKIE).is_some() {
                let _ = res.add_removal_cookie(&session_cookie(String::new()));
            }
            Err(res)
        }
        Err(e) => Err(error_page(state, None, e.status_code(), e.explain()).await),
    }
}

fn session_cookie(token: String) -> Cookie<'static> {
    Cookie::build(SESSION_COOKIE, token)
        .path("/pos")
        .http_only(true)
        .same_site(SameSite::Strict)
        .finish()
}

/// The CSRF token of a session's forms: derived from the session's stored hash, so it needs no
/// storage and dies with the session.
fn csrf_token(who: &SignedIn) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"omnihub-pos-csrf\0");
    h.update(who.token_hash);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn csrf_ok(who: &SignedIn, given: &str) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(csrf_token(who).as_bytes().ct_eq(given.as_bytes()))
}

/// False when a browser says the form came from another site (`Origin`, else `Referer`, names
/// another host than `Host`). Without either header (not a browser form) the SameSite cookie
/// and the CSRF token are the guards.
fn same_origin(req: &HttpRequest) -> bool {
    let get = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
    let Some(from) = get(header::ORIGIN).or_else(|| get(header::REFERER)) else {
        return true;
    };
    let host = from
        .split_once("://")
        .and_then(|(_, rest)| rest.split('/').next());
    matches!((host, get(header::HOST)), (Some(a), Some(b)) if a.eq_ignore_ascii_case(b))
}

/// Refuses a POST from another site or without the session's CSRF token.
pub(super) async fn check_form(
    state: &web::Data<ApiState>,
    req: &HttpRequest,
    csrf: &str,
) -> Result<SignedIn, HttpResponse> {
    let who = require(state, req).await?;
    if !same_origin(req) || !csrf_ok(&who, csrf) {
        return Err(error_page(
            state,
            Some(&who),
            StatusCode::FORBIDDEN,
            "This form is out of date or came from another page: reload the till and try again."
                .into(),
        )
        .await);
    }
    Ok(who)
}

/// The till this browser rings up at: its cookie when the store has that till, else the
/// store's only till.
pub(super) fn selected_till(state: &ApiState, req: &HttpRequest) -> Option<String> {
    let tills = state.pos.tills();
    if let Some(c) = req.cookie(TILL_COOKIE) {
        if tills.iter().any(|t| t == c.value()) {
            return Some(c.value().to_string());
        }
    }
    match tills {
        [only] => Some(only.clone()),
        _ => None,
    }
}

// ---- sign-in ------------------------------------------------------------------------------

#[derive(Deserialize)]
struct SignInQuery {
    staff: Option<String>,
}

async fn sign_in_page(
    state: web::Data<ApiState>,
    req: HttpRequest,
    query: web::Query<SignInQuery>,
) -> HttpResponse {
    match signed_in(&state, &req).await {
        Ok(Some(_)) => return see_other("/pos/till"),
        Ok(None) => {}
        Err(e) => return error_page(&state, None, e.status_code(), e.explain()).await,
    }
    sign_in_form(&state, StatusCode::OK, query.staff.as_deref(), None).await
}

async fn sign_in_form(
    state: &web::Data<ApiState>,
    status: StatusCode,
    selected: Option<&str>,
    error: Option<String>,
) -> HttpResponse {
    let staff: Vec<serde_json::Value> = state
        .pos
        .staff_list()
        .map(|m| json!({"id": m.id, "name": m.name, "role": m.role}))
        .collect();
    let chrome = chrome(state, None, None).await;
    render(
        status,
        "signin.html",
        json!({"chrome": chrome, "staff": staff, "selected": selected, "error": error}),
    )
}

#[derive(Deserialize)]
struct SignInForm {
    #[serde(default)]
    staff: String,
    #[serde(default)]
    pin: String,
}

async fn sign_in(
    state: web::Data<ApiState>,
    req: HttpRequest,
    form: web::Form<SignInForm>,
) -> HttpResponse {
    let form = form.into_inner();
    if !same_origin(&req) {
        return error_page(
            &state,
            None,
            StatusCode::FORBIDDEN,
            "This sign-in came from another site: open the POS at /pos and sign in there.".into(),
        )
        .await;
    }
    if form.staff.is_empty() {
        return sign_in_form(
            &state,
            StatusCode::UNPROCESSABLE_ENTITY,
            None,
            Some("Tap your name first, then type your PIN.".into()),
        )
        .await;
    }
    let pos = state.pos.clone();
    let (staff, pin) = (form.staff.clone(), form.pin);
    match blocking(move || Ok(pos.sign_in(&staff, &pin))).await {
        Ok(Ok(session)) => {
            let mut res = see_other("/pos/till");
            if let Err(e) = res.add_cookie(&session_cookie(session.token)) {
                tracing::error!(error = %e, "the session cookie could not be set");
            }
            res
        }
        Ok(Err(e)) => {
            let e = ApiError::from(e);
            sign_in_form(
                &state,
                e.status_code(),
                Some(&form.staff),
                Some(e.explain()),
            )
            .await
        }
        Err(e) => error_page(&state, None, e.status_code(), e.explain()).await,
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn sign_out(
    state: web::Data<ApiState>,
    req: HttpRequest,
    form: web::Form<CsrfForm>,
) -> HttpResponse {
    let who = match check_form(&state, &req, &form.csrf).await {
        Ok(who) => who,
        Err(res) => return res,
    };
    let pos = state.pos.clone();
    if let Err(e) = blocking(move || Ok(pos.sign_out(&who)?)).await {
        return error_page(&state, None, e.status_code(), e.explain()).await;
    }
    let mut res = see_other("/pos");
    let _ = res.add_removal_cookie(&session_cookie(String::new()));
    res
}

/// `POST /pos/staff/{id}/unlock`: a manager lifts a colleague's lock (a clerk is refused).
async fn unlock(
    state: web::Data<ApiState>,
    req: HttpRequest,
    path: web::Path<String>,
    form: web::Form<CsrfForm>,
) -> HttpResponse {
    let who = match check_form(&state, &req, &form.csrf).await {
        Ok(who) => who,
        Err(res) => return res,
    };
    let pos = state.pos.clone();
    let (by, id) = (super::Caller::Staff(who.clone()), path.into_inner());
    match blocking(move || Ok(pos.unlock(&by, &id)?)).await {
        Ok(_) => see_other("/pos/till"),
        Err(e) => error_page(&state, Some(&who), e.status_code(), e.explain()).await,
    }
}

// ---- the till -----------------------------------------------------------------------------

/// The sale being rung up: SKUs with quantities, and coupon codes. It lives in the page (hidden
/// fields and the address), never on the node, until it is paid.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Draft {
    lines: Vec<(Sku, i64)>,
    coupons: Vec<String>,
    /// The sale's idempotency key (a ULID; empty until the first item is added): made when the
    /// sale starts and carried with it, so paying twice (a double tap, or Back and pay again)
    /// records it once. A new one comes only with a new sale (Void sale, Next sale).
    key: String,
    /// Lines whose price a manager changed: the SKU and the id of the manager's approval
    /// (`crate::pos::overrides::ApprovalGrant`, kept on the node; never the PIN).
    adjusted: Vec<(Sku, String)>,
    /// The customer attached to the sale (found on the hub from this node: `customer::attach`),
    /// and whether their web basket was pulled onto it (`cust`, `pulled` in the page).
    customer: Option<protocol::CustomerId>,
    pulled: bool,
}

impl Draft {
    /// The whole sale as the page carries it (address or form): lines and coupons, its key,
    /// manual adjustments and customer.
    fn read(
        cart: &str,
        coupons: &str,
        key: &str,
        adj: &str,
        cust: &str,
        pulled: &str,
    ) -> Result<Draft, String> {
        Draft::parse(cart, coupons)?
            .with_key(key)?
            .with_adjustments(adj)?
            .with_customer(cust, pulled)
    }

    /// Reads `SKU:qty,SKU:qty` and `CODE,CODE`.
    fn parse(cart: &str, coupons: &str) -> Result<Draft, String> {
        let mut d = Draft::default();
        for item in cart.split(',').filter(|s| !s.is_empty()) {
            let (sku, qty) = item.split_once(':').unwrap_or((item, "1"));
            let sku = Sku::parse(sku).map_err(|_| format!("'{sku}' is not a SKU"))?;
            let qty: i64 = qty
                .parse()
                .map_err(|_| format!("'{qty}' is not a quantity"))?;
            d.add(sku, qty)?;
        }
        for code in coupons.split(',').filter(|s| !s.is_empty()) {
            d.add_coupon(code)?;
        }
        Ok(d)
    }

    /// The sale's idempotency key from the page (empty: none yet).
    fn with_key(mut self, key: &str) -> Result<Draft, String> {
        let key = key.trim();
        if !key.is_empty() && ulid::Ulid::from_string(key).is_err() {
            return Err("the sale's key is damaged".into());
        }
        self.key = key.to_string();
        Ok(self)
    }

    /// The manual adjustments from the page: `SKU~grant,…`.
    fn with_adjustments(mut self, adj: &str) -> Result<Draft, String> {
        for item in adj.split(',').filter(|s| !s.is_empty()) {
            let (sku, grant) = item
                .split_once('~')
                .ok_or_else(|| "a price change is damaged".to_string())?;
            let sku = Sku::parse(sku).map_err(|_| format!("'{sku}' is not a SKU"))?;
            if grant.is_empty() || grant.len() > 64 || !grant.bytes().all(|b| b.is_ascii_hexdigit())
            {
                return Err("a price change's approval is damaged".into());
            }
            if self.lines.iter().any(|(s, _)| *s == sku) {
                self.adjusted.retain(|(s, _)| *s != sku);
                self.adjusted.push((sku, grant.to_string()));
            }
        }
        Ok(self)
    }

    fn adjustment_list(&self) -> String {
        self.adjusted
            .iter()
            .map(|(s, g)| format!("{s}~{g}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The attached customer from the page (`cust`, `pulled`).
    fn with_customer(mut self, cust: &str, pulled: &str) -> Result<Draft, String> {
        let cust = cust.trim();
        if !cust.is_empty() {
            self.customer = Some(
                cust.parse()
                    .map_err(|_| "the sale's customer is damaged".to_string())?,
            );
            self.pulled = pulled == "1";
        }
        Ok(self)
    }

    /// Gives a sale with items its key, if it has none yet.
    fn keyed(mut self) -> Draft {
        if self.key.is_empty() && !self.lines.is_empty() {
            self.key = ulid::Ulid::new().to_string();
        }
        self
    }

    fn cart(&self) -> String {
        self.lines
            .iter()
            .map(|(s, q)| format!("{s}:{q}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn coupon_list(&self) -> String {
        self.coupons.join(",")
    }

    /// `qty` more of `sku` (a new line, or added to its line).
    fn add(&mut self, sku: Sku, qty: i64) -> Result<(), String> {
        let max = crate::ops::MAX_LINE_QUANTITY;
        if !(1..=max).contains(&qty) {
            return Err(format!("a quantity is 1 to {max}"));
        }
        let full = self.lines.len() >= crate::ops::MAX_SALE_LINES;
        match self.lines.iter_mut().find(|(s, _)| *s == sku) {
            Some((_, q)) if *q + qty > max => {
                Err(format!("{sku}: at most {max} of one item in a sale"))
            }
            Some((_, q)) => {
                *q += qty;
                Ok(())
            }
            None if full => Err(format!(
                "a sale has at most {} lines: pay this one and start another",
                crate::ops::MAX_SALE_LINES
            )),
            None => {
                self.lines.push((sku, qty));
                Ok(())
            }
        }
    }

    fn add_coupon(&mut self, code: &str) -> Result<(), String> {
        let code = crate::store::normalize_coupon(code);
        if code.is_empty()
            || code.len() > 40
            || !code
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
        {
            return Err("a coupon code is letters, digits, '-' and '_' (at most 40)".into());
        }
        if self.coupons.len() >= crate::ops::MAX_SALE_COUPONS {
            return Err(format!(
                "a sale takes at most {} coupon codes",
                crate::ops::MAX_SALE_COUPONS
            ));
        }
        if !self.coupons.contains(&code) {
            self.coupons.push(code);
        }
        Ok(())
    }

    fn request(&self, payments: Vec<PaymentRequest>) -> SaleRequest {
        SaleRequest {
            lines: self
                .lines
                .iter()
                .map(|(sku, qty)| SaleLineRequest {
                    sku: Some(sku.to_string()),
                    barcode: None,
                    quantity: *qty,
                })
                .collect(),
            payments,
            customer: self.customer,
            clerk: None,
            override_reason: None,
            coupons: self.coupons.clone(),
        }
    }

    /// The till page with this sale on it.
    fn href(&self) -> String {
        let mut to = String::from("/pos/till");
        if !self.lines.is_empty() || !self.coupons.is_empty() {
            to.push_str(&format!(
                "?cart={}&coupons={}",
                encode(&self.cart()),
                encode(&self.coupon_list())
            ));
            if !self.key.is_empty() {
                to.push_str(&format!("&key={}", encode(&self.key)));
            }
            if !self.adjusted.is_empty() {
                to.push_str(&format!("&adj={}", encode(&self.adjustment_list())));
            }
        }
        if let Some(c) = self.customer {
            to.push(if to.contains('?') { '&' } else { '?' });
            to.push_str(&format!(
                "cust={c}{}",
                if self.pulled { "&pulled=1" } else { "" }
            ));
        }
        to
    }
}

/// Percent-encodes a query value (SKUs and codes are ASCII; `,` and `:` are encoded too).
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}

/// Whether `code` is an EAN-13 with a correct check digit; `Err` says what is wrong with it.
pub(crate) fn check_ean13(code: &str) -> Result<(), String> {
    let digits: Vec<u32> = code.chars().filter_map(|c| c.to_digit(10)).collect();
    if digits.len() != code.len() || digits.len() != 13 {
        return Err(format!(
            "'{}' is not an EAN-13 barcode: it has 13 digits, this has {} characters",
            code.chars().take(32).collect::<String>(),
            code.chars().count()
        ));
    }
    let sum: u32 = digits[..12]
        .iter()
        .enumerate()
        .map(|(i, d)| if i % 2 == 0 { *d } else { d * 3 })
        .sum();
    let check = (10 - sum % 10) % 10;
    if digits[12] != check {
        return Err(format!(
            "'{code}' is not a valid EAN-13 barcode: its check digit is {}, it should be {check}. Scan it again or type the SKU",
            digits[12]
        ));
    }
    Ok(())
}

/// The SKU a scanned or typed code names: an EAN-13 (all digits, check digit checked) or a SKU.
fn resolve_code(state: &ApiState, code: &str) -> Result<Sku, String> {
    let code = code.trim();
    if code.is_empty() {
        return Err("Scan a barcode or type one, then press Enter.".into());
    }
    let catalog = state.store.catalog();
    if code.bytes().all(|b| b.is_ascii_digit()) {
        check_ean13(code)?;
        return catalog
            .sku_by_barcode(code)
            .cloned()
            .ok_or_else(|| format!("No product with barcode {code} at this store."));
    }
    Sku::parse(code)
        .ok()
        .filter(|sku| catalog.snapshot.product_by_sku(sku).is_some())
        .ok_or_else(|| {
            format!(
                "No product with SKU or barcode '{}' at this store.",
                code.chars().take(64).collect::<String>()
            )
        })
}

#[derive(Deserialize)]
struct TillQuery {
    #[serde(default)]
    cart: String,
    #[serde(default)]
    coupons: String,
    #[serde(default)]
    key: String,
    #[serde(default)]
    adj: String,
    #[serde(default)]
    cust: String,
    #[serde(default)]
    pulled: String,
    q: Option<String>,
}

async fn till_page(
    state: web::Data<ApiState>,
    req: HttpRequest,
    query: web::Query<TillQuery>,
) -> HttpResponse {
    let who = match require(&state, &req).await {
        Ok(who) => who,
        Err(res) => return res,
    };
    let q = query.into_inner();
    let (draft, error) = match Draft::read(&q.cart, &q.coupons, &q.key, &q.adj, &q.cust, &q.pulled)
    {
        // A sale in the address without its key (a recalled held sale, an old link) gets one
        // now, in the address, so a reload or Back keeps it.
        Ok(d) if d.key.is_empty() && !d.lines.is_empty() => {
            let mut to = d.keyed().href();
            if let Some(text) = q.q.as_deref().filter(|t| !t.is_empty()) {
                to.push_str(&format!("&q={}", encode(text)));
            }
            return see_other(&to);
        }
        Ok(d) => (d, None),
        Err(e) => (
            Draft::default(),
            Some(format!(
                "The sale in the address could not be read ({e}): start it again."
            )),
        ),
    };
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    till_view(&state, &req, &who, &draft, q.q.as_deref(), error, status).await
}

/// The till screen again with `draft` (and no search), saying why the last action was refused.
async fn till_refusal(
    state: &web::Data<ApiState>,
    req: &HttpRequest,
    who: &SignedIn,
    draft: &Draft,
    msg: String,
    status: StatusCode,
) -> HttpResponse {
    till_view(state, req, who, draft, None, Some(msg), status).await
}

/// The till screen with no sale on it, saying why a till action was refused.
async fn till_error(
    state: &web::Data<ApiState>,
    req: &HttpRequest,
    who: &SignedIn,
    e: ApiError,
) -> HttpResponse {
    till_refusal(
        state,
        req,
        who,
        &Draft::default(),
        e.explain(),
        e.status_code(),
    )
    .await
}

/// The till screen: a till picker, the "open till" form, or the sale being rung up.
async fn till_view(
    state: &web::Data<ApiState>,
    req: &HttpRequest,
    who: &SignedIn,
    draft: &Draft,
    search: Option<&str>,
    error: Option<String>,
    status: StatusCode,
) -> HttpResponse {
    let Some(till) = selected_till(state, req) else {
        let chrome = chrome(state, Some(who), None).await;
        return render(
            status,
            "till.html",
            json!({"chrome": chrome, "mode": "pick", "error": error}),
        );
    };
    let pos = state.pos.clone();
    let t = till.clone();
    let till_state = match blocking(move || Ok(pos.till(&t)?)).await {
        Ok(s) => s,
        Err(e) => return error_page(state, Some(who), e.status_code(), e.explain()).await,
    };
    let chrome = chrome(state, Some(who), Some(&till)).await;
    let Some(session) = till_state.open else {
        return render(
            status,
            "till.html",
            json!({"chrome": chrome, "mode": "open", "error": error,
                   "currency": state.pos.currency.code(), "reports": till_state.next_report.saturating_sub(1)}),
        );
    };
    let (quote, quote_error) = match quote(state, who, draft).await {
        Ok(q) => (q, None),
        Err(e) => (None, Some(e.explain())),
    };
    let results = match search.map(str::trim).filter(|s| !s.is_empty()) {
        Some(text) => search_products(state, text).await,
        None => Vec::new(),
    };
    render(
        status,
        "till.html",
        json!({
            "chrome": chrome,
            "mode": "sale",
            "error": error.or(quote_error),
            "cart": draft.cart(),
            "coupons": draft.coupon_list(),
            "coupon_codes": draft.coupons,
            "lines": draft_lines(draft, quote.as_ref()),
            "extra": extra_lines(draft, quote.as_ref()),
            "totals": quote.as_ref().map(|q| totals(&q.lines, q.total, &q.taxes, &q.promotions)),
            "total_plain": quote.as_ref().map(|q| q.total.to_decimal_string()),
            "total_minor": quote.as_ref().map(|q| q.total.minor),
            "exponent": state.pos.currency.exponent(),
            "quick_cash": quote.as_ref().map(|q| quick_cash(q.total)).unwrap_or_default(),
            "key": draft.key,
            "adj": draft.adjustment_list(),
            "managers": state.pos.staff_list().filter(|m| m.role == StaffRole::Manager)
                .map(|m| json!({"id": m.id, "name": m.name})).collect::<Vec<_>>(),
            "q": search.unwrap_or_default(),
            "searched": search.is_some_and(|s| !s.trim().is_empty()),
            "results": results,
            "session": session_view(&session),
            "cust": draft.customer,
            "pulled": draft.pulled,
            "customer": customer::panel(state, draft).await,
        }),
    )
}

async fn quote(
    state: &ApiState,
    who: &SignedIn,
    draft: &Draft,
) -> Result<Option<SaleQuote>, ApiError> {
    if draft.lines.is_empty() {
        return Ok(None);
    }
    let manual = manual_of(state, who, draft, None).await?;
    let store = state.store.clone();
    let req = draft.request(Vec::new());
    blocking(move || Ok(store.quote_with(&req, &manual)?))
        .await
        .map(Some)
}

/// The sale's manual adjustments from the managers' approvals it carries (each checked: for
/// this clerk, this sale and that SKU, not too old), and `extra` — a line's adjustment being
/// asked for, with an approval whose PIN is not checked yet (to check its bounds first).
async fn manual_of(
    state: &ApiState,
    who: &SignedIn,
    draft: &Draft,
    extra: Option<(usize, ManualAdjustmentRequest)>,
) -> Result<ManualAdjustments, ApiError> {
    let pos = state.pos.clone();
    let (who, draft) = (who.clone(), draft.clone());
    blocking(move || {
        let mut manual = ManualAdjustments {
            lines: vec![None; draft.lines.len()],
            ..ManualAdjustments::default()
        };
        for (sku, id) in &draft.adjusted {
            let Some(i) = draft.lines.iter().position(|(s, _)| s == sku) else {
                continue;
            };
            let grant = pos.grant_for(&who, &draft.key, sku, id)?.ok_or_else(|| {
                ApiError::new(
                    StatusCode::FORBIDDEN,
                    "manager_approval_required",
                    format!("the manager's approval of the price of {sku} is no longer valid: remove the price change and ask a manager again"),
                )
            })?;
            manual.lines[i] = Some(grant.adjustment());
            manual.line_approvals.insert(
                i,
                Approved {
                    manager: grant.manager,
                    reason: grant.reason,
                },
            );
        }
        if let Some((i, a)) = extra {
            if let Some(slot) = manual.lines.get_mut(i) {
                *slot = Some(a);
                manual.line_approvals.insert(
                    i,
                    Approved {
                        manager: "(pending)".into(),
                        reason: "(pending)".into(),
                    },
                );
            }
        }
        Ok(manual)
    })
    .await
}

async fn search_products(state: &ApiState, text: &str) -> Vec<serde_json::Value> {
    let store = state.store.clone();
    let text = text.chars().take(100).collect::<String>();
    let found = blocking(move || {
        let mut out = Vec::new();
        for p in store.products(Some(&text), None, 12) {
            for v in &p.variants {
                let on_hand = store.stock_of(&v.sku)?.map_or(0, |s| s.on_hand);
                let name = if v.title.is_empty() || v.title == "Default" {
                    p.name.clone()
                } else {
                    format!("{} – {}", p.name, v.title)
                };
                out.push(
                    json!({"sku": v.sku, "name": name, "price": show(v.price), "on_hand": on_hand}),
                );
            }
        }
        Ok(out)
    })
    .await;
    found.unwrap_or_default()
}

fn shelf(l: &SaleLine) -> Money {
    Money::new(
        i64::from(l.quantity).saturating_mul(l.unit_price.minor),
        l.unit_price.currency,
    )
}

fn line_view(l: &SaleLine) -> serde_json::Value {
    let discount = shelf(l).minor.saturating_sub(l.total.minor);
    json!({
        "sku": l.sku,
        "name": l.name,
        "quantity": l.quantity,
        "unit": show(l.unit_price),
        "discount": (discount != 0).then(|| show(Money::new(discount, l.total.currency))),
        "total": show(l.total),
    })
}

/// The sale's lines as rung up, each with the node's price when the quote has it.
fn draft_lines(draft: &Draft, quote: Option<&SaleQuote>) -> Vec<serde_json::Value> {
    draft
        .lines
        .iter()
        .enumerate()
        .map(|(i, (sku, qty))| {
            let priced = quote.and_then(|q| q.lines.iter().find(|l| l.sku == *sku));
            let mut v =
                priced.map_or_else(|| json!({"sku": sku, "name": sku.to_string()}), line_view);
            v["index"] = json!(i);
            v["quantity"] = json!(qty);
            v["adjusted"] = json!(draft.adjusted.iter().any(|(s, _)| s == sku));
            v
        })
        .collect()
}

/// Lines the node priced beyond the ones rung up (a promotion's free gift).
fn extra_lines(draft: &Draft, quote: Option<&SaleQuote>) -> Vec<serde_json::Value> {
    let Some(q) = quote else {
        return Vec::new();
    };
    let mut seen = std::collections::BTreeSet::new();
    q.lines
        .iter()
        .filter(|l| !(draft.lines.iter().any(|(s, _)| *s == l.sku) && seen.insert(l.sku.clone())))
        .map(line_view)
        .collect()
}

fn totals(
    lines: &[SaleLine],
    total: Money,
    taxes: &[protocol::TaxLine],
    promotions: &protocol::promotion::PromotionSummary,
) -> serde_json::Value {
    let subtotal = lines
        .iter()
        .fold(0i64, |sum, l| sum.saturating_add(shelf(l).minor));
    let items: u32 = lines.iter().map(|l| l.quantity).sum();
    json!({
        "items": items,
        "subtotal": show(Money::new(subtotal, total.currency)),
        "discount": show(Money::new(subtotal.saturating_sub(total.minor), total.currency)),
        "has_discount": subtotal != total.minor,
        "total": show(total),
        "taxes": taxes.iter().map(|t| json!({
            "rate": format!("{}.{:02} %", t.rate_bp / 100, t.rate_bp % 100).replace(".00 %", " %"),
            "gross": show(t.gross),
            "tax": show(t.tax),
        })).collect::<Vec<_>>(),
        "promotions": promotions.applied.iter().map(|a| json!({
            "name": a.name, "amount": show(a.amount), "times": a.times,
        })).collect::<Vec<_>>(),
    })
}

/// Quick cash buttons: the exact amount, then the next round notes above it.
fn quick_cash(total: Money) -> Vec<serde_json::Value> {
    let unit = 10i64.pow(u32::from(total.currency.exponent()));
    let mut out = vec![json!({"amount": total.to_decimal_string(), "label": "Exact"})];
    for note in [5, 10, 20, 50, 100] {
        let minor = note * unit;
        if minor > total.minor && out.len() < 4 {
            let m = Money::new(minor, total.currency);
            out.push(json!({"amount": m.to_decimal_string(), "label": show(m)}));
        }
    }
    out
}

fn session_view(s: &TillSession) -> serde_json::Value {
    json!({
        "opened_by": s.opened_by,
        "opened_at": when(s.opened_at_ms),
        "float": show(s.float),
        "sales": s.totals.sales,
        "net": show(s.totals.net),
    })
}

#[derive(Deserialize)]
struct SelectForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    till: String,
}

async fn select_till(
    state: web::Data<ApiState>,
    req: HttpRequest,
    form: web::Form<SelectForm>,
) -> HttpResponse {
    let who = match check_form(&state, &req, &form.csrf).await {
        Ok(who) => who,
        Err(res) => return res,
    };
    if let Err(e) = state.pos.known_till(&form.till) {
        return till_error(&state, &req, &who, ApiError::from(e)).await;
    }
    let mut res = see_other("/pos/till");
    let cookie = Cookie::build(TILL_COOKIE, form.till.clone())
        .path("/pos")
        .http_only(true)
        .same_site(SameSite::Strict)
        .permanent()
        .finish();
    if let Err(e) = res.add_cookie(&cookie) {
        tracing::error!(error = %e, "the till cookie could not be set");
    }
    res
}

#[derive(Deserialize)]
struct AmountForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    amount: String,
}

async fn open_till(
    state: web::Data<ApiState>,
    req: HttpRequest,
    form: web::Form<AmountForm>,
) -> HttpResponse {
    till_act(state, req, form.into_inner(), true).await
}

async fn close_till(
    state: web::Data<ApiState>,
    req: HttpRequest,
    form: web::Form<AmountForm>,
) -> HttpResponse {
    till_act(state, req, form.into_inner(), false).await
}

/// Opens the selected till with a float, or closes it with the counted cash (to its Z-report).
async fn till_act(
    state: web::Data<ApiState>,
    req: HttpRequest,
    form: AmountForm,
    open: bool,
) -> HttpResponse {
    let who = match check_form(&state, &req, &form.csrf).await {
        Ok(who) => who,
        Err(res) => return res,
    };
    let Some(till) = selected_till(&state, &req) else {
        return see_other("/pos/till");
    };
    let pos = state.pos.clone();
    let by = who.clone();
    let amount = form.amount.trim().to_string();
    let done = blocking(move || {
        Ok(if open {
            pos.open_till(&by, &till, &amount).map(|_| None)
        } else {
            pos.close_till(&by, &till, &amount)
                .map(|r| Some(format!("/pos/reports/{}/{}", r.till, r.number)))
        })
    })
    .await;
    match done {
        Ok(Ok(to)) => see_other(to.as_deref().unwrap_or("/pos/till")),
        Ok(Err(e)) => till_error(&state, &req, &who, ApiError::from(e)).await,
        Err(e) => error_page(&state, Some(&who), e.status_code(), e.explain()).await,
    }
}

#[derive(Deserialize)]
struct SaleForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    cart: String,
    #[serde(default)]
    coupons: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    index: String,
    #[serde(default)]
    amount: String,
    #[serde(default)]
    key: String,
    #[serde(default)]
    adj: String,
    #[serde(default)]
    cust: String,
    #[serde(default)]
    pulled: String,
    /// The cash part of a split tender (action `terminal`).
    #[serde(default)]
    cash: String,
    /// A manual adjustment (action `adjust`): one of a new unit price, an amount or a percent
    /// off the line, with the reason and the approving manager's id and PIN.
    #[serde(default)]
    new_price: String,
    #[serde(default)]
    discount: String,
    #[serde(default)]
    percent: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    manager: String,
    #[serde(default)]
    pin: String,
}

/// `POST /pos/sale`: one change to the sale being rung up (scan, add, +, −, remove, coupon,
/// clear), priced by the node before it is accepted, or the payment that records it.
async fn sale_action(
    state: web::Data<ApiState>,
    req: HttpRequest,
    form: web::Form<SaleForm>,
) -> HttpResponse {
    let form = form.into_inner();
    let who = match check_form(&state, &req, &form.csrf).await {
        Ok(who) => who,
        Err(res) => return res,
    };
    let draft = match Draft::read(
        &form.cart,
        &form.coupons,
        &form.key,
        &form.adj,
        &form.cust,
        &form.pulled,
    ) {
        Ok(d) => d.keyed(),
        Err(e) => {
            let msg = format!("The sale on the page could not be read ({e}): start it again.");
            return till_refusal(
                &state,
                &req,
                &who,
                &Draft::default(),
                msg,
                StatusCode::BAD_REQUEST,
            )
            .await;
        }
    };
    let refuse = |msg: String, status: StatusCode| {
        let (state, req, who, draft) = (state.clone(), req.clone(), who.clone(), draft.clone());
        async move { till_refusal(&state, &req, &who, &draft, msg, status).await }
    };
    let index = form
        .index
        .parse::<usize>()
        .ok()
        .filter(|i| *i < draft.lines.len());
    let mut next = draft.clone();
    let edited = match (form.action.as_str(), index) {
        ("scan", _) => resolve_code(&state, &form.code).and_then(|sku| next.add(sku, 1)),
        ("add", _) => resolve_code(&state, &form.code).and_then(|sku| next.add(sku, 1)),
        ("inc", Some(i)) => {
            let sku = next.lines[i].0.clone();
            next.add(sku, 1)
        }
        ("dec", Some(i)) => {
            next.lines[i].1 -= 1;
            next.lines.retain(|(_, q)| *q > 0);
            Ok(())
        }
        ("remove", Some(i)) => {
            let (sku, _) = next.lines.remove(i);
            next.adjusted.retain(|(s, _)| *s != sku);
            Ok(())
        }
        ("unadjust", Some(i)) => {
            let sku = next.lines[i].0.clone();
            next.adjusted.retain(|(s, _)| *s != sku);
            Ok(())
        }
        ("adjust", Some(i)) => {
            return adjust(&state, &req, &who, &draft, i, &form).await;
        }
        ("coupon", _) => next.add_coupon(&form.code),
        ("uncoupon", _) => {
            let code = crate::store::normalize_coupon(&form.code);
            next.coupons.retain(|c| *c != code);
            Ok(())
        }
        // A sale with the customer's web basket on it gives the basket back first.
        ("clear", _) if draft.pulled => {
            return customer::void_pulled(&state, &req, &who, &draft).await;
        }
        ("clear", _) => {
            next = Draft::default();
            Ok(())
        }
        ("terminal", _) => {
            return pages_card::pay_by_card(&state, &req, &who, &draft, &form).await;
        }
        ("cash" | "card", _) => {
            let method = if form.action == "cash" {
                PaymentMethod::Cash
            } else {
                PaymentMethod::Card
            };
            return pay(&state, &req, &who, &draft, method, &form).await;
        }
        ("inc" | "dec" | "remove" | "unadjust" | "adjust", None) => {
            Err("That line is no longer on the sale.".into())
        }
        _ => Err("Unknown action: reload the till.".into()),
    };
    if let Err(msg) = edited {
        return refuse(msg, StatusCode::UNPROCESSABLE_ENTITY).await;
    }
    let next = next.keyed();
    if let Err(e) = quote(&state, &who, &next).await {
        return refuse(e.explain(), e.status_code()).await;
    }
    see_other(&next.href())
}

/// Records the sale at the selected till with one payment, then shows its receipt.
async fn pay(
    state: &web::Data<ApiState>,
    req: &HttpRequest,
    who: &SignedIn,
    draft: &Draft,
    method: PaymentMethod,
    form: &SaleForm,
) -> HttpResponse {
    let refuse =
        |msg: String, status: StatusCode| till_refusal(state, req, who, draft, msg, status);
    if draft.lines.is_empty() {
        return refuse(
            "Scan an item first.".into(),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    }
    let amount = form.amount.trim().replace(',', ".");
    if amount.is_empty() {
        let what = if method == PaymentMethod::Cash {
            "the cash given"
        } else {
            "the card amount"
        };
        return refuse(
            format!("Type {what}, e.g. 20.00."),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    }
    if let Err(msg) = customer::check_attached(state, draft).await {
        return refuse(msg, StatusCode::UNPROCESSABLE_ENTITY).await;
    }
    let Some(till) = selected_till(state, req) else {
        return see_other("/pos/till");
    };
    let sale = TillSale {
        till,
        staff: who.id.clone(),
    };
    let request = draft.request(vec![PaymentRequest {
        method,
        amount,
        reference: None,
        card: None,
    }]);
    let key = Some(draft.key.clone()).filter(|k| !k.is_empty());
    let manual = match manual_of(state, who, draft, None).await {
        Ok(m) => m,
        Err(e) => return refuse(e.explain(), e.status_code()).await,
    };
    let store = state.store.clone();
    match blocking(move || Ok(store.sell_with(&request, key.as_deref(), Some(&sale), &manual)?))
        .await
    {
        Ok(receipt) => see_other(&format!(
            "/pos/receipts/{}",
            encode(&receipt.entry.sale.number)
        )),
        Err(e) => refuse(e.explain(), e.status_code()).await,
    }
}

/// A manager changes line `i`'s price (action `adjust`): the adjustment's bounds are checked
/// first (no PIN counted for a typo in the price), then the manager's PIN (counted toward
/// their lock); the page then carries the approval's id, never the PIN, and is shown again by
/// a redirect, so the PIN is in neither the address nor the page.
async fn adjust(
    state: &web::Data<ApiState>,
    req: &HttpRequest,
    who: &SignedIn,
    draft: &Draft,
    i: usize,
    form: &SaleForm,
) -> HttpResponse {
    let refuse =
        |msg: String, status: StatusCode| till_refusal(state, req, who, draft, msg, status);
    let text = |t: &str| Some(t.trim().replace(',', ".")).filter(|t| !t.is_empty());
    let percent = match text(&form.percent).map(|p| p.parse::<u32>()) {
        None => None,
        Some(Ok(p)) => Some(p),
        Some(Err(_)) => {
            return refuse(
                "A percent off is a whole number from 1 to 100.".into(),
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
    };
    let adjustment = match (text(&form.new_price), text(&form.discount), percent) {
        (Some(p), None, None) => ManualAdjustmentRequest {
            price_override: Some(p),
            manual_discount: None,
        },
        (None, amount @ Some(_), None) => ManualAdjustmentRequest {
            price_override: None,
            manual_discount: Some(ManualDiscountRequest {
                amount,
                percent: None,
            }),
        },
        (None, None, percent @ Some(_)) => ManualAdjustmentRequest {
            price_override: None,
            manual_discount: Some(ManualDiscountRequest {
                amount: None,
                percent,
            }),
        },
        _ => {
            return refuse(
                "Give one of: a new price, an amount off, or a percent off.".into(),
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
    };
    let mut unadjusted = draft.clone();
    let sku = draft.lines[i].0.clone();
    unadjusted.adjusted.retain(|(s, _)| *s != sku);
    // The bounds (price up to the shelf price, discount within the line), before the PIN.
    let check = match manual_of(state, who, &unadjusted, Some((i, adjustment.clone()))).await {
        Ok(manual) => {
            let store = state.store.clone();
            let req = unadjusted.request(Vec::new());
            blocking(move || Ok(store.quote_with(&req, &manual)?)).await
        }
        Err(e) => Err(e),
    };
    if let Err(e) = check {
        return refuse(e.explain(), e.status_code()).await;
    }
    let approval = ApprovalRequest {
        manager: form.manager.trim().to_string(),
        pin: form.pin.trim().to_string(),
        reason: Some(form.reason.clone()),
    };
    let pos = state.pos.clone();
    let (w, key, s) = (who.clone(), draft.key.clone(), sku.clone());
    let granted = blocking(move || {
        pos.grant(&w, &key, &s, &adjustment, &approval)
            .map_err(crate::api::approval_error)
    })
    .await;
    match granted {
        Ok(id) => {
            let mut next = unadjusted;
            next.adjusted.push((sku, id));
            see_other(&next.href())
        }
        Err(e) => {
            refuse(
                format!("Approval refused: {}", e.explain()),
                e.status_code(),
            )
            .await
        }
    }
}

// ---- receipts and Z-reports ---------------------------------------------------------------

async fn receipt_page(
    state: web::Data<ApiState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> HttpResponse {
    let who = match require(&state, &req).await {
        Ok(who) => who,
        Err(res) => return res,
    };
    let number = path.into_inner();
    let store = state.store.clone();
    let n = number.clone();
    let found = match blocking(move || Ok(store.find_sale(&n)?)).await {
        Ok(found) => found,
        Err(e) => return error_page(&state, Some(&who), e.status_code(), e.explain()).await,
    };
    let Some(r) = found else {
        let msg = format!(
            "No sale {} at this store.",
            number.chars().take(40).collect::<String>()
        );
        return error_page(&state, Some(&who), StatusCode::NOT_FOUND, msg).await;
    };
    let s = &r.entry.sale;
    let till = r.entry.till.as_ref().map(|t| t.till.clone());
    let chrome = chrome(
        &state,
        Some(&who),
        till.as_deref().or(selected_till(&state, &req).as_deref()),
    )
    .await;
    render(
        StatusCode::OK,
        "receipt.html",
        json!({
            "chrome": chrome,
            "number": s.number,
            "at": when(s.at.ms),
            "clerk": s.clerk,
            "till": till,
            "lines": s.lines.iter().map(line_view).collect::<Vec<_>>(),
            "totals": totals(&s.lines, s.total, &s.taxes, &s.promotions),
            "coupons": s.coupons,
            "payments": s.payments.iter().map(|p| json!({"method": p.method, "amount": show(p.amount),
                "card": super::card::receipt_card(&state.store, p)})).collect::<Vec<_>>(),
            "change": show(r.change_due),
            "has_change": r.change_due.minor > 0,
            "qr": super::customers::qr_svg(&s.number),
            "customer": customer::on_receipt(&state, s.customer).await,
        }),
    )
}

async fn report_page(
    state: web::Data<ApiState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> HttpResponse {
    let who = match require(&state, &req).await {
        Ok(who) => who,
        Err(res) => return res,
    };
    let (till, number) = path.into_inner();
    let Ok(number) = number.parse::<u64>() else {
        return error_page(
            &state,
            Some(&who),
            StatusCode::NOT_FOUND,
            "Z-reports are numbered 1, 2, …".into(),
        )
        .await;
    };
    let pos = state.pos.clone();
    let t = till.clone();
    let report = match blocking(move || Ok(pos.z_report(&t, number)?)).await {
        Ok(r) => r,
        Err(e) => return error_page(&state, Some(&who), e.status_code(), e.explain()).await,
    };
    let chrome = chrome(&state, Some(&who), Some(&till)).await;
    render(
        StatusCode::OK,
        "zreport.html",
        json!({"chrome": chrome, "report": report_view(&report)}),
    )
}

fn tenders(t: &TillTotals) -> Vec<serde_json::Value> {
    let cash = t.cash();
    let mut out = vec![json!({"method": "cash", "amount": show(cash)})];
    out.extend(
        t.tenders
            .iter()
            .filter(|(m, _)| m.as_str() != "cash")
            .map(|(m, a)| json!({"method": m, "amount": show(*a)})),
    );
    out
}

fn report_view(r: &ZReport) -> serde_json::Value {
    let t = &r.totals;
    json!({
        "till": r.till,
        "number": r.number,
        "opened_by": r.opened_by,
        "opened_at": when(r.opened_at_ms),
        "closed_by": r.closed_by,
        "closed_at": when(r.closed_at_ms),
        "currency": r.float.currency.code(),
        "float": show(r.float),
        "sales": t.sales,
        "gross": show(t.gross),
        "discounts": show(t.discounts),
        "net": show(t.net),
        "tenders": tenders(t),
        "change_given": show(t.change_given),
        "refunds": t.refunds,
        "refunded": show(t.refunded),
        "cash_refunded": show(t.cash_refunded),
        "expected": show(r.expected_cash),
        "counted": show(r.counted),
        "variance": show(r.variance),
        "short": r.variance.minor < 0,
        "over": r.variance.minor > 0,
    })
}

// ---- status and assets --------------------------------------------------------------------

/// `GET /pos/status`: the node's sync state for the header's online/offline badge. It only
/// looks at the session: a page polling in the background is not someone using the till.
async fn status(state: web::Data<ApiState>, req: HttpRequest) -> HttpResponse {
    match session_of(&state, &req, false).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "sign in at /pos first",
            )
            .error_response()
        }
        Err(e) => return e.error_response(),
    }
    let store = state.store.clone();
    let pending = blocking(move || Ok(store.cursors()?.pending_entries()))
        .await
        .unwrap_or(0);
    let sync = state.store.sync_state();
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({
            "online": sync.connected,
            "since": sync.since_ms.map(rfc3339),
            "pending": pending,
        }))
}

fn asset(body: &'static str, content_type: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CACHE_CONTROL, "public, max-age=31536000, immutable"))
        .body(body)
}

async fn stylesheet() -> HttpResponse {
    asset(POS_CSS, "text/css; charset=utf-8")
}

async fn script() -> HttpResponse {
    asset(POS_JS, "text/javascript; charset=utf-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ean13_check_digits() {
        assert!(check_ean13("4006381333931").is_ok());
        assert!(check_ean13("5901234123457").is_ok());
        let wrong = check_ean13("4006381333932").expect_err("wrong check digit");
        assert!(wrong.contains("should be 1"), "{wrong}");
        assert!(check_ean13("400638133393").is_err());
        assert!(check_ean13("40063813339a1").is_err());
    }

    #[test]
    fn a_draft_reads_back_what_it_writes() {
        let d = Draft::parse("COF-1:2,TEA-1:1", "welcome10").expect("parses");
        assert_eq!(d.cart(), "COF-1:2,TEA-1:1");
        assert_eq!(d.coupon_list(), "WELCOME10");
        assert_eq!(
            d.href(),
            "/pos/till?cart=COF-1%3A2%2CTEA-1%3A1&coupons=WELCOME10"
        );
        assert!(Draft::parse("COF-1:0", "").is_err());
        assert!(Draft::parse("COF-1:1000", "").is_err());
        assert!(Draft::parse("bad sku:1", "").is_err());
        assert!(Draft::parse("", "no spaces").is_err());
    }
}
