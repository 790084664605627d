//! The OpenAPI 3.0.3 document of the JSON API, served at `GET /api/v1/openapi.json`.
//!
//! Written by hand with `serde_json::json!` (the protocol types carry no schema derives) and
//! built once. The tests check that every `$ref` resolves and that every route of the route table
//! in `api/mod.rs` is documented (and nothing else is), so a new route without documentation
//! fails the build.

use actix_web::http::header::ContentType;
use actix_web::HttpResponse;
use serde_json::{json, Map, Value};
use std::sync::OnceLock;

/// `GET /openapi.json`: the document, built on first use.
pub async fn document() -> HttpResponse {
    static TEXT: OnceLock<String> = OnceLock::new();
    let text = TEXT.get_or_init(|| spec().to_string());
    HttpResponse::Ok()
        .content_type(ContentType::json())
        .body(text.as_str())
}

/// The whole document.
pub fn spec() -> Value {
    json!({
        "openapi": "3.0.3",
        "info": info(),
        "servers": [{ "url": "/api/v1", "description": "This hub (paths are relative to /api/v1)" }],
        "tags": tags(),
        "paths": paths(),
        "components": {
            "securitySchemes": security_schemes(),
            "parameters": parameters(),
            "headers": headers(),
            "schemas": schemas(),
            "responses": error_responses(),
        },
    })
}

// ---------------------------------------------------------------------------------------------
// Info, tags, security.

fn info() -> Value {
    json!({
        "title": "Omnihub API",
        "version": env!("CARGO_PKG_VERSION"),
        "description": concat!(
            "The JSON API of the Omnihub commerce hub for web and mobile apps: catalog, baskets, ",
            "checkout and orders, customers and their interaction events.\n\n",
            "**Prices.** The hub prices everything: requests never carry a price. Amounts are ",
            "`Money` objects, integer minor units of an ISO 4217 currency (`{\"minor\": 1250, ",
            "\"currency\": \"EUR\"}` is EUR 12.50), tax included.\n\n",
            "**Authentication.** A signed-in customer sends the session token as ",
            "`Authorization: Bearer <token>` (apps) or the `omnihub_session` cookie (browsers). ",
            "An unknown or expired bearer token is a 401 `invalid_token` on every endpoint that reads ",
            "the caller; an unknown cookie is ignored. An anonymous shopper reaches their basket ",
            "with its token in the `X-Basket-Token` header or the `omnihub_basket` cookie, never in ",
            "the URL.\n\n",
            "**Context headers.** `X-Channel` names the channel, `web` or `mobile` (any other ",
            "value is a 400 `invalid_channel`: till and board prices come from the store's edge node), and ",
            "`X-Anonymous-Id` an app install's anonymous id, for interaction events.\n\n",
            "**Errors.** Every error body is `{\"error\": {\"code\": \"...\", \"message\": \"...\"}}`: ",
            "`code` is stable and machine-readable, `message` says what to fix. A basket or ",
            "customer that exists but is not yours is a 404, the same as one that does not exist. ",
            "An unknown route is a 404 `no_route`. Request bodies are JSON (`Content-Type: ",
            "application/json`), at most 64 KiB, and unknown fields are refused (except in the ",
            "checkout body, which ignores them). Some errors carry machine-readable `details`: ",
            "`fields` (which form field to fix), `items` (stock left per SKU) or `skus`.\n\n",
            "**Checkout.** Quote (`GET /baskets/{id}/quote`), then start the checkout with an email, ",
            "an address and a shipping method (`POST /baskets/{id}/checkout`, never an amount): the ",
            "hub prices the basket, holds its stock, locks it and answers a `payment_url` at the ",
            "payment provider. Send the shopper there. The provider's webhook makes the order; the ",
            "app polls `GET /checkouts/{id}` (or calls `POST /checkouts/{id}/confirm` on return) ",
            "until `state` is `paid` and `order` is set. While the payment is pending, the basket ",
            "is locked: changing its lines answers 409 `basket_locked` until the checkout is paid, ",
            "cancelled (`POST /checkouts/{id}/cancel`) or its hold expires. There is exactly one ",
            "order per paid checkout."
        ),
    })
}

fn tags() -> Value {
    json!([
        { "name": "catalog", "description": "Categories, product listing and search, product detail." },
        { "name": "baskets", "description": "The shopper's basket, priced by the hub, and its live updates." },
        { "name": "checkout", "description": "Quotes, checkouts and their payment at the provider." },
        { "name": "orders", "description": "Orders: the customer's own, and a guest's by the link with its key." },
        { "name": "customers", "description": "Registration, sign-in and sign-out, the customer's own profile." },
        { "name": "events", "description": "The signed-in customer's interaction events." },
        { "name": "chat", "description": "The shopping assistant: a chat over the same baskets and orders." },
        { "name": "personalization", "description": "Content slots (home hero, recommendations, board item, email block) chosen for the caller's segments." },
        { "name": "meta", "description": "This document." },
    ])
}

fn security_schemes() -> Value {
    json!({
        "bearerAuth": {
            "type": "http",
            "scheme": "bearer",
            "description": "The `session_token` of a sign-in or registration, as `Authorization: Bearer <token>` (apps). An unknown or expired token is a 401 `invalid_token`.",
        },
        "sessionCookie": {
            "type": "apiKey",
            "in": "cookie",
            "name": "omnihub_session",
            "description": "The HttpOnly session cookie set by a sign-in or registration (browsers). An unknown or expired cookie is ignored: the request is anonymous.",
        },
        "basketToken": {
            "type": "apiKey",
            "in": "header",
            "name": "X-Basket-Token",
            "description": "The secret token of an anonymous basket, returned once by `POST /baskets` (body `token` and the HttpOnly `omnihub_basket` cookie, which browsers may send instead of the header). At most 128 characters.",
        },
    })
}

/// Public: no credentials read.
fn sec_none() -> Value {
    json!([])
}

/// Anonymous or signed in: a session only attributes the request's events to the customer.
fn sec_optional_customer() -> Value {
    json!([{}, { "bearerAuth": [] }, { "sessionCookie": [] }])
}

/// A signed-in customer.
fn sec_customer() -> Value {
    json!([{ "bearerAuth": [] }, { "sessionCookie": [] }])
}

/// The basket's owner: the signed-in customer or the holder of the anonymous basket's token.
fn sec_basket_owner() -> Value {
    json!([{ "bearerAuth": [] }, { "sessionCookie": [] }, { "basketToken": [] }])
}

/// Anyone; a customer or a basket-token holder gets their own basket.
fn sec_basket_optional() -> Value {
    json!([{}, { "bearerAuth": [] }, { "sessionCookie": [] }, { "basketToken": [] }])
}

/// Anyone; an anonymous basket's token makes its basket merge into the customer's.
fn sec_sign_in() -> Value {
    json!([{}, { "basketToken": [] }])
}

// ---------------------------------------------------------------------------------------------
// Small builders.

fn schema(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn nullable(name: &str) -> Value {
    json!({ "nullable": true, "allOf": [schema(name)] })
}

fn array_of(name: &str) -> Value {
    json!({ "type": "array", "items": schema(name) })
}

fn param(name: &str) -> Value {
    json!({ "$ref": format!("#/components/parameters/{name}") })
}

fn header(name: &str) -> Value {
    json!({ "$ref": format!("#/components/headers/{name}") })
}

fn json_body(schema: Value) -> Value {
    json!({ "application/json": { "schema": schema } })
}

/// A success response with a JSON body.
fn ok(description: &str, body: Value) -> Value {
    json!({ "description": description, "content": json_body(body) })
}

/// The parameters of every endpoint that reads the request context.
fn context_params() -> Vec<Value> {
    vec![param("XChannel"), param("XAnonymousId")]
}

/// An error response of `components/responses`, by status.
#[derive(Clone, Copy)]
enum Error {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    Conflict,
    PayloadTooLarge,
    UnsupportedMediaType,
    Unprocessable,
    TooManyRequests,
    Unavailable,
}

impl Error {
    const ALL: [Error; 10] = [
        Error::BadRequest,
        Error::Unauthorized,
        Error::Forbidden,
        Error::NotFound,
        Error::Conflict,
        Error::PayloadTooLarge,
        Error::UnsupportedMediaType,
        Error::Unprocessable,
        Error::TooManyRequests,
        Error::Unavailable,
    ];

    fn status(self) -> &'static str {
        match self {
            Error::BadRequest => "400",
            Error::Unauthorized => "401",
            Error::Forbidden => "403",
            Error::NotFound => "404",
            Error::Conflict => "409",
            Error::PayloadTooLarge => "413",
            Error::UnsupportedMediaType => "415",
            Error::Unprocessable => "422",
            Error::TooManyRequests => "429",
            Error::Unavailable => "503",
        }
    }

    fn component(self) -> &'static str {
        match self {
            Error::BadRequest => "BadRequest",
            Error::Unauthorized => "Unauthorized",
            Error::Forbidden => "Forbidden",
            Error::NotFound => "NotFound",
            Error::Conflict => "Conflict",
            Error::PayloadTooLarge => "PayloadTooLarge",
            Error::UnsupportedMediaType => "UnsupportedMediaType",
            Error::Unprocessable => "UnprocessableEntity",
            Error::TooManyRequests => "TooManyRequests",
            Error::Unavailable => "ServiceUnavailable",
        }
    }

    /// What the response means and which codes it carries.
    fn description(self) -> &'static str {
        match self {
            Error::BadRequest => "The request is malformed: `malformed_json` or `bad_body` (the body is not JSON), `bad_query` (an unknown or ill-typed query parameter), or a parameter out of range (`bad_limit`, `bad_sort`, `bad_cursor`, `query_too_long`). `not_a_websocket` for a live-basket request that is not a WebSocket upgrade.",
            Error::Unauthorized => "Not signed in: `unauthenticated` (no live session cookie or bearer token where one is needed), `invalid_token` (the bearer token is unknown or expired: sign in again) or `bad_credentials` (sign-in with a wrong email or password).",
            Error::Forbidden => "`origin_not_allowed`: a cookie-authenticated live-basket upgrade (or chat message) from an origin other than this site or the configured allowed origins. `csrf_failed`: a chat message riding on the session or basket cookie without the page's CSRF token in `X-CSRF-Token`.",
            Error::NotFound => "`not_found`: no such resource, or it is not yours (the two are never told apart): a basket, a product, a category, a customer, a checkout, an order, a SKU that is not sold (adding a line) or a line the basket does not have (changing or removing one). An id that is not a ULID is a 404 as well.",
            Error::Conflict => "The request conflicts with the current state. `email_taken` (registration: an account with this email already exists); `basket_locked` (a change to a basket whose payment is in progress: pay, cancel the checkout or wait for its hold to expire); `out_of_stock` (checkout: not enough units to hold; `details.items` lists each short SKU with the units `available`); `items_unavailable` (checkout or quote: the basket holds SKUs no longer sold, listed in `details.skus`: remove them); `coupon_unavailable` (checkout: a coupon code on the basket can no longer be used — its last use taken by another order or by a pending checkout, which reserves its uses; expired; its promotion over — the message names it and why: remove it to check out without it); `promotion_used_up` (checkout: the limited promotions in the price kept running out while it was priced: read the basket and try again); `payment_not_completed` (the provider reports the payment as not completed).",
            Error::PayloadTooLarge => "`payload_too_large`: the body is larger than 64 KiB.",
            Error::UnsupportedMediaType => "`unsupported_media_type`: send the body as JSON with `Content-Type: application/json`.",
            Error::Unprocessable => "The request is well-formed but refused; the message says what to fix. `invalid_field` (a body field is missing, unknown or of the wrong type), `invalid_sku` (a SKU is not 1 to 64 characters of `A-Z a-z 0-9 . _ -`), `quantity_out_of_range` (a line holds 1 to 999 units), `insufficient_stock` (more units than are available), `basket_closed` (the anonymous basket was merged into a customer's basket), at registration `invalid_email`, `invalid_name` or `weak_password`, and at checkout `basket_empty`, `pricing_failed`, and with `details.fields` (one `{field, message}` per field to fix, worded for the shopper) `invalid_address`, `invalid_email`, `country_not_served` or `unknown_shipping_method`.",
            Error::TooManyRequests => "`rate_limited`: too many sign-in or registration attempts for this account or from this address, too many checkout attempts for this basket (10 in 10 minutes by default), or too many chat messages from one shopper (30 a minute by default); retry after `Retry-After` seconds.",
            Error::Unavailable => "`unavailable`: the hub cannot serve the request right now (storage or a worker is down); retry shortly. `payment_provider_unavailable`: the payment provider could not be reached and nothing was charged; retry in a moment.",
        }
    }

    /// Further named examples of responses with several codes worth showing (the first is
    /// [`Error::example`]).
    fn more_examples(self) -> Vec<(&'static str, Value)> {
        let error = |code: &str, message: &str, details: Value| json!({ "error": { "code": code, "message": message, "details": details } });
        match self {
            Error::Conflict => vec![
                ("basket_locked", json!({ "error": { "code": "basket_locked", "message": "a payment for this basket is in progress: cancel the payment to change the basket" } })),
                ("out_of_stock", error(
                    "out_of_stock",
                    "sorry, there is not enough stock for COF-001-500G (1 left): reduce the quantity or remove the item",
                    json!({ "items": [{ "sku": "COF-001-500G", "available": 1 }] }),
                )),
                ("items_unavailable", error(
                    "items_unavailable",
                    "some items are no longer sold: remove TEA-009-100G from the basket",
                    json!({ "skus": ["TEA-009-100G"] }),
                )),
            ],
            Error::Unprocessable => vec![(
                "invalid_address",
                error(
                    "invalid_address",
                    "the shipping address needs attention: postcode: A German postcode has 5 digits, e.g. 10115.",
                    json!({ "fields": [{ "field": "postcode", "message": "A German postcode has 5 digits, e.g. 10115." }] }),
                ),
            )],
            Error::Unavailable => vec![(
                "payment_provider_unavailable",
                json!({ "error": { "code": "payment_provider_unavailable", "message": "the payment service could not be reached and nothing was charged: please try again in a moment" } }),
            )],
            _ => Vec::new(),
        }
    }

    fn example(self) -> Value {
        let (code, message) = match self {
            Error::BadRequest => ("bad_limit", "limit must be between 1 and 100"),
            Error::Unauthorized => ("unauthenticated", "sign in first: send the session cookie or an Authorization: Bearer token"),
            Error::Forbidden => ("origin_not_allowed", "this origin may not open a live basket"),
            Error::NotFound => ("not_found", "basket not found"),
            Error::Conflict => ("email_taken", "an account with this email already exists"),
            Error::PayloadTooLarge => ("payload_too_large", "the body is larger than 64 KiB"),
            Error::UnsupportedMediaType => ("unsupported_media_type", "send the body as JSON with Content-Type: application/json"),
            Error::Unprocessable => ("invalid_sku", "invalid SKU 'has space': use 1 to 64 characters from A-Z, a-z, 0-9, '-', '_' and '.'"),
            Error::TooManyRequests => ("rate_limited", "too many sign-in attempts: try again in 12 s"),
            Error::Unavailable => ("unavailable", "the service is temporarily unavailable: retry shortly"),
        };
        json!({ "error": { "code": code, "message": message } })
    }

    /// The `components/responses` entry.
    fn response(self) -> Value {
        let more = self.more_examples();
        let media = if more.is_empty() {
            json!({ "schema": schema("Error"), "example": self.example() })
        } else {
            let first = self.example();
            let code = first["error"]["code"]
                .as_str()
                .unwrap_or("example")
                .to_string();
            let examples: Map<String, Value> = std::iter::once((code, first))
                .chain(more.into_iter().map(|(name, e)| (name.to_string(), e)))
                .map(|(name, e)| (name, json!({ "value": e })))
                .collect();
            json!({ "schema": schema("Error"), "examples": examples })
        };
        let mut res = json!({
            "description": self.description(),
            "content": { "application/json": media },
        });
        if let (Error::TooManyRequests, Some(obj)) = (self, res.as_object_mut()) {
            obj.insert(
                "headers".into(),
                json!({ "Retry-After": header("RetryAfter") }),
            );
        }
        res
    }
}

/// A `responses` object: the success responses plus the given errors, by reference.
fn responses(success: Value, errors: &[Error]) -> Value {
    let mut map = match success {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    for e in errors {
        map.insert(
            e.status().into(),
            json!({ "$ref": format!("#/components/responses/{}", e.component()) }),
        );
    }
    Value::Object(map)
}

/// Errors of every JSON request body.
const BODY_ERRORS: [Error; 4] = [
    Error::BadRequest,
    Error::PayloadTooLarge,
    Error::UnsupportedMediaType,
    Error::Unprocessable,
];

fn with(errors: &[Error], more: &[Error]) -> Vec<Error> {
    let mut all: Vec<Error> = errors.iter().chain(more).copied().collect();
    all.sort_by_key(|e| e.status());
    all.dedup_by_key(|e| e.status());
    all
}

// ---------------------------------------------------------------------------------------------
// Paths.

fn paths() -> Value {
    let mut all = Map::new();
    for area in [
        meta_paths(),
        catalog_paths(),
        basket_paths(),
        checkout_paths(),
        order_paths(),
        customer_paths(),
        event_paths(),
        in_store_paths(),
        consent_paths(),
        chat_paths(),
        slot_paths(),
    ] {
        if let Value::Object(area) = area {
            for (path, item) in area {
                match (all.get_mut(&path), item) {
                    (Some(Value::Object(existing)), Value::Object(ops)) => existing.extend(ops),
                    (_, item) => {
                        all.insert(path, item);
                    }
                }
            }
        }
    }
    Value::Object(all)
}

fn meta_paths() -> Value {
    json!({
        "/openapi.json": { "get": {
            "operationId": "getOpenApiDocument",
            "summary": "This OpenAPI document",
            "tags": ["meta"],
            "security": sec_none(),
            "responses": responses(json!({ "200": ok("The OpenAPI 3.0.3 document of this API.", json!({ "type": "object" })) }), &[]),
        } },
    })
}

fn catalog_paths() -> Value {
    json!({
        "/categories": { "get": list_categories() },
        "/products": { "get": list_products() },
        "/products/{slug}": { "get": get_product() },
        "/products/{sku}/subscriptions": { "post": subscribe_back_in_stock() },
    })
}

fn subscribe_back_in_stock() -> Value {
    let mut params = vec![param("ProductSku")];
    params.extend(context_params());
    let body = json!({
        "type": "object",
        "required": ["sku", "subscribed"],
        "properties": {
            "sku": schema("Sku"),
            "subscribed": { "type": "boolean", "description": "Always true: the customer waits for the SKU." },
        },
    });
    json!({
        "operationId": "subscribeBackInStock",
        "summary": "Email me when this SKU is back in stock",
        "description": "The signed-in customer asks for one email when the SKU, sold out online, is back in stock; the subscription then ends. Idempotent: 201 when new, 200 when the customer already waits. A SKU in stock is a 409 `in_stock`. The email is marketing: it goes only with the customer's consent, within the frequency cap and outside quiet hours (docs/automation.md).",
        "tags": ["catalog"],
        "security": sec_customer(),
        "parameters": params,
        "responses": responses(
            json!({
                "201": ok("Subscribed.", body.clone()),
                "200": ok("Already subscribed.", body),
            }),
            &[Error::Unauthorized, Error::NotFound, Error::Conflict, Error::Unprocessable, Error::Unavailable],
        ),
    })
}

fn list_categories() -> Value {
    json!({
        "operationId": "listCategories",
        "summary": "List the categories",
        "description": "Every category of the storefront's navigation, in navigation order (`position`, then name).",
        "tags": ["catalog"],
        "security": sec_none(),
        "responses": responses(json!({ "200": ok("The categories.", schema("CategoryList")) }), &[]),
    })
}

fn list_products() -> Value {
    let mut params = vec![
        param("Q"),
        param("Category"),
        param("Sort"),
        param("Cursor"),
        param("ProductLimit"),
    ];
    params.extend(context_params());
    json!({
        "operationId": "listProducts",
        "summary": "List, search and filter products",
        "description": "One page of the products matching the search text and category, in the requested order. Follow `next_cursor` for the next page (keyset pagination, stable across catalog updates). A search (first page with `q`) is recorded as an interaction event.",
        "tags": ["catalog"],
        "security": sec_optional_customer(),
        "parameters": params,
        "responses": responses(
            json!({ "200": ok("One page of products.", schema("ProductPage")) }),
            &[Error::BadRequest, Error::Unauthorized, Error::NotFound],
        ),
    })
}

fn get_product() -> Value {
    let mut params = vec![param("ProductSlug")];
    params.extend(context_params());
    json!({
        "operationId": "getProduct",
        "summary": "Product detail with prices and availability",
        "description": "A product by slug (or by product id), with each variant's price and units available online. Recorded as a product-view event.",
        "tags": ["catalog"],
        "security": sec_optional_customer(),
        "parameters": params,
        "responses": responses(
            json!({ "200": ok("The product.", schema("ProductDetail")) }),
            &[Error::Unauthorized, Error::NotFound, Error::Unavailable],
        ),
    })
}

fn slot_paths() -> Value {
    let mut params = vec![
        json!({
            "name": "slot", "in": "path", "required": true,
            "description": "`home_hero`, `product_recommendations`, `board_item` or `email_block`; another name is a 404.",
            "schema": { "type": "string" },
        }),
        json!({
            "name": "channel", "in": "query", "required": false,
            "description": "`web`, `mobile`, `pos`, `board`, `voice`, `chat` or `email` (default: the request's channel); another value is a 400 `invalid_channel`.",
            "schema": { "type": "string" },
        }),
        json!({
            "name": "product", "in": "query", "required": false,
            "description": "The product page's SKU (for `product_recommendations`); a SKU not in the catalog is a 404.",
            "schema": schema("Sku"),
        }),
    ];
    params.extend(context_params());
    let body = json!({
        "type": "object",
        "required": ["slot", "variant", "content", "reason", "reason_code", "products"],
        "properties": {
            "slot": { "type": "string" },
            "variant": { "type": "string", "description": "The variant's id, or `default`." },
            "position": { "type": "integer", "nullable": true, "description": "The variant's place in the slot, from 1." },
            "content": { "type": "object", "description": "The variant's content; `kind` is `hero`, `recommendations`, `board_item` or `email_block` (docs/personalization.md)." },
            "reason": { "type": "string", "description": "Why this variant, e.g. `segment coffee-lovers matched (variant 2, coffee)`." },
            "reason_code": { "type": "string", "description": "`segment_matched`, `everyone`, `experiment`, `schedule_ended`, `schedule_not_started`, `no_variant_matched` or `not_configured`." },
            "experiment": { "type": "object", "nullable": true, "description": "The A/B test the shopper was assigned through (a slot variant bound to it) and their variant (docs/experiments.md).", "properties": {
                "experiment": { "type": "string" }, "variant": { "type": "string" },
            } },
            "products": { "type": "array", "description": "For recommendations: the products, best first (sellable online, never the product itself).", "items": {
                "type": "object",
                "properties": {
                    "sku": schema("Sku"), "slug": { "type": "string" }, "name": { "type": "string" },
                    "image": { "type": "string" }, "price": schema("Money"),
                },
            } },
        },
    });
    json!({
        "/slots/{slot}": { "get": {
            "operationId": "getSlot",
            "summary": "The content of a slot for the caller",
            "description": "The first variant of the slot whose targeting matches the caller (their segments, the channel, the time), else the slot's default, with the reason. The caller is the signed-in customer, else the anonymous id of the request: never a parameter. A slot nobody configured answers 404 `not_found`, except `product_recommendations`, whose built-in default shows what was bought with the product.",
            "tags": ["personalization"],
            "security": sec_optional_customer(),
            "parameters": params,
            "responses": responses(
                json!({ "200": ok("The slot's variant for the caller.", body) }),
                &[Error::BadRequest, Error::Unauthorized, Error::NotFound, Error::Unavailable],
            ),
        } },
    })
}

fn basket_paths() -> Value {
    json!({
        "/basket": { "get": current_basket() },
        "/baskets": { "post": create_basket() },
        "/baskets/{id}": { "get": get_basket() },
        "/baskets/{id}/lines": { "post": add_line(), "delete": clear_basket() },
        "/baskets/{id}/lines/{sku}": { "patch": set_line_quantity(), "delete": remove_line() },
        "/baskets/{id}/live": { "get": live_basket() },
        "/baskets/{id}/coupons": { "post": apply_coupon() },
        "/baskets/{id}/coupons/{code}": { "delete": remove_coupon() },
    })
}

fn basket_params(sku: bool) -> Vec<Value> {
    let mut params = vec![param("BasketId")];
    if sku {
        params.push(param("LineSku"));
    }
    params.extend(context_params());
    params
}

fn basket_ok(description: &str) -> Value {
    json!({ "200": ok(description, schema("BasketView")) })
}

fn current_basket() -> Value {
    json!({
        "operationId": "getCurrentBasket",
        "summary": "The shopper's current basket",
        "description": "The signed-in customer's basket, or the anonymous basket the basket token reaches; 404 if the shopper has none yet.",
        "tags": ["baskets"],
        "security": sec_basket_owner(),
        "parameters": context_params(),
        "responses": responses(basket_ok("The basket, priced."), &[Error::Unauthorized, Error::NotFound, Error::Unavailable]),
    })
}

fn create_basket() -> Value {
    let created = json!({
        "description": "A new anonymous basket with its `token` (also set as the HttpOnly `omnihub_basket` cookie, 30 days); for a signed-in customer, their one basket (created if they had none), without a token.",
        "headers": { "Set-Cookie": header("SetBasketCookie") },
        "content": json_body(schema("NewBasket")),
    });
    json!({
        "operationId": "createBasket",
        "summary": "Create (or get) the shopper's basket",
        "description": "An optional body `{\"currency\": \"EUR\"}` asks for a currency: an unknown code is a 422 `unknown_currency`, one the shop does not sell in a 422 `currency_not_sold`. A signed-in customer has one basket: it is returned with 201, created if needed. An anonymous shopper whose basket token already reaches a basket gets that basket with 200; otherwise a new anonymous basket and its secret token with 201. Keep the token: it alone reaches the basket (send it as `X-Basket-Token`).",
        "tags": ["baskets"],
        "security": sec_basket_optional(),
        "parameters": context_params(),
        "requestBody": { "required": false, "content": json_body(schema("CreateBasket")) },
        "responses": responses(
            json!({ "200": ok("The basket the anonymous shopper's token already reaches.", schema("BasketView")), "201": created }),
            &[Error::BadRequest, Error::Unauthorized, Error::PayloadTooLarge, Error::Unprocessable, Error::Unavailable],
        ),
    })
}

fn get_basket() -> Value {
    json!({
        "operationId": "getBasket",
        "summary": "A basket by id",
        "tags": ["baskets"],
        "security": sec_basket_owner(),
        "parameters": basket_params(false),
        "responses": responses(basket_ok("The basket, priced."), &[Error::Unauthorized, Error::NotFound, Error::Unavailable]),
    })
}

fn add_line() -> Value {
    json!({
        "operationId": "addBasketLine",
        "summary": "Add units of a SKU",
        "description": "Adds `quantity` units of `sku` to the basket (to its line, if it has one). The line's new quantity must stay within 1 to 999 and within the units in stock; a SKU that is not sold is a 404. There is no price field: the hub prices every line. Answered once the change is durable. While a payment is in progress (the basket has a `checkout`), the basket is locked: 409 `basket_locked`.",
        "tags": ["baskets"],
        "security": sec_basket_owner(),
        "parameters": basket_params(false),
        "requestBody": { "required": true, "content": json_body(schema("AddLine")) },
        "responses": responses(
            basket_ok("The changed basket, priced."),
            &with(&BODY_ERRORS, &[Error::Unauthorized, Error::NotFound, Error::Conflict, Error::Unavailable]),
        ),
    })
}

fn clear_basket() -> Value {
    json!({
        "operationId": "clearBasket",
        "summary": "Remove every line",
        "description": "While a payment is in progress the basket is locked: 409 `basket_locked`.",
        "tags": ["baskets"],
        "security": sec_basket_owner(),
        "parameters": basket_params(false),
        "responses": responses(
            basket_ok("The emptied basket."),
            &[Error::Unauthorized, Error::NotFound, Error::Conflict, Error::Unprocessable, Error::Unavailable],
        ),
    })
}

fn set_line_quantity() -> Value {
    json!({
        "operationId": "setBasketLineQuantity",
        "summary": "Set the quantity of a line",
        "description": "Sets the quantity of an existing line, 1 to 999 and within the units in stock (remove a line with DELETE). No price field: the hub prices every line. While a payment is in progress the basket is locked: 409 `basket_locked`.",
        "tags": ["baskets"],
        "security": sec_basket_owner(),
        "parameters": basket_params(true),
        "requestBody": { "required": true, "content": json_body(schema("SetQuantity")) },
        "responses": responses(
            basket_ok("The changed basket, priced."),
            &with(&BODY_ERRORS, &[Error::Unauthorized, Error::NotFound, Error::Conflict, Error::Unavailable]),
        ),
    })
}

fn remove_line() -> Value {
    json!({
        "operationId": "removeBasketLine",
        "summary": "Remove a line",
        "description": "While a payment is in progress the basket is locked: 409 `basket_locked`.",
        "tags": ["baskets"],
        "security": sec_basket_owner(),
        "parameters": basket_params(true),
        "responses": responses(
            basket_ok("The changed basket, priced."),
            &[Error::Unauthorized, Error::NotFound, Error::Conflict, Error::Unprocessable, Error::Unavailable],
        ),
    })
}

fn apply_coupon() -> Value {
    json!({
        "operationId": "applyCoupon",
        "summary": "Enter a coupon code",
        "description": "Codes are matched without regard to case. A code that is unknown, expired or used up (uses reserved by pending checkouts count), or limited per customer while the shopper is not signed in, is a 422 `invalid_coupon` whose message says why; after repeated invalid codes from one client (an IPv6 client: its /64) a 429 with `Retry-After`. A valid code is kept on the basket and explained in `coupons` (applied, or what is missing, e.g. a minimum basket value) and `promotions`. At most five codes: 422 `too_many_coupons`. Locked while a payment is in progress: 409 `basket_locked`.",
        "tags": ["baskets"],
        "security": sec_basket_owner(),
        "parameters": basket_params(false),
        "requestBody": { "required": true, "content": json_body(schema("ApplyCoupon")) },
        "responses": responses(
            basket_ok("The basket with the coupon, priced."),
            &[Error::BadRequest, Error::Unauthorized, Error::NotFound, Error::Conflict, Error::Unprocessable, Error::TooManyRequests, Error::Unavailable],
        ),
    })
}

fn remove_coupon() -> Value {
    let mut params = basket_params(false);
    params.insert(1, json!({
        "name": "code", "in": "path", "required": true,
        "description": "The coupon code on the basket (any case); one that is not on it is a 404.",
        "schema": { "type": "string", "example": "WELCOME10" },
    }));
    json!({
        "operationId": "removeCoupon",
        "summary": "Remove a coupon code",
        "tags": ["baskets"],
        "security": sec_basket_owner(),
        "parameters": params,
        "responses": responses(
            basket_ok("The basket without the coupon, priced."),
            &[Error::Unauthorized, Error::NotFound, Error::Conflict, Error::Unavailable],
        ),
    })
}

fn live_basket() -> Value {
    let mut params = basket_params(false);
    params.extend([
        param("Upgrade"),
        param("Connection"),
        param("SecWebSocketKey"),
        param("SecWebSocketVersion"),
        param("Origin"),
    ]);
    let switching = json!({
        "description": "Switching to the WebSocket protocol. The server then sends text frames, each one JSON `BasketView` (see `x-frame-schema`): first the basket as it is, then the basket after every change, with `version` strictly increasing (a slow client may skip intermediate versions, never the latest). The server pings every 15 s and closes the socket when a ping is not answered by the next one; client text and binary frames are ignored. The server closes the socket when the hub stops publishing the basket's changes.",
        "headers": {
            "Upgrade": { "description": "`websocket`.", "schema": { "type": "string" } },
            "Connection": { "description": "`Upgrade`.", "schema": { "type": "string" } },
            "Sec-WebSocket-Accept": { "description": "The handshake answer (RFC 6455).", "schema": { "type": "string" } },
        },
        "x-frame-schema": schema("BasketView"),
    });
    json!({
        "operationId": "watchBasket",
        "summary": "Live basket updates (WebSocket)",
        "description": "Upgrades to a WebSocket on which every change of the basket arrives as a JSON text frame. Browsers authenticate with their cookies and must come from this site or an allowed origin; apps send their `Authorization` or `X-Basket-Token` header on the upgrade request.",
        "tags": ["baskets"],
        "security": sec_basket_owner(),
        "parameters": params,
        "responses": responses(
            json!({ "101": switching }),
            &[Error::BadRequest, Error::Unauthorized, Error::Forbidden, Error::NotFound, Error::Unavailable],
        ),
    })
}

fn checkout_paths() -> Value {
    json!({
        "/baskets/{id}/quote": { "get": quote() },
        "/baskets/{id}/checkout": { "post": start_checkout() },
        "/checkouts/{id}": { "get": get_checkout() },
        "/checkouts/{id}/cancel": { "post": cancel_checkout() },
        "/checkouts/{id}/confirm": { "post": confirm_checkout() },
    })
}

fn checkout_params() -> Vec<Value> {
    let mut params = vec![param("CheckoutId")];
    params.extend(context_params());
    params
}

fn checkout_ok(description: &str) -> Value {
    json!({ "200": ok(description, schema("CheckoutView")) })
}

fn quote() -> Value {
    let mut params = vec![param("BasketId"), param("Country"), param("ShippingMethod")];
    params.extend(context_params());
    json!({
        "operationId": "quoteCheckout",
        "summary": "Shipping options and the full price for a destination",
        "description": "The shipping options that can carry this basket to `country`, cheapest first, and the whole price (items for the destination's market, shipping, tax per rate, total) with `shipping_method`, or with the cheapest option when it is left out. Priced with the live promotions and the basket's coupons, for the channel that asks (`X-Channel`), exactly as a checkout from that channel would be: each line carries its discount and each tax rate is taken on the discounted lines. Changes nothing: no stock is held and the basket stays unlocked.",
        "tags": ["checkout"],
        "security": sec_basket_owner(),
        "parameters": params,
        "responses": responses(
            json!({ "200": ok("The options and the price.", schema("QuoteView")) }),
            &[Error::BadRequest, Error::Unauthorized, Error::NotFound, Error::Conflict, Error::Unprocessable, Error::Unavailable],
        ),
    })
}

fn start_checkout() -> Value {
    let created = json!({
        "description": "The checkout, `payment_pending`: the stock is held until `hold_expires_at` and the basket is locked. Send the shopper to `payment_url`.",
        "content": {
            "application/json": {
                "schema": schema("CheckoutView"),
                "example": checkout_example(),
            },
        },
    });
    json!({
        "operationId": "startCheckout",
        "summary": "Start the checkout: hold the stock, open the payment",
        "description": "Validates the address (every problem at once, in `details.fields` of a 422 `invalid_address`), prices the basket for the destination with the chosen shipping method, reserves the uses of the coupons and promotions with usage limits in the price (until the checkout is paid, cancelled or expires; a coupon code on the basket that can no longer be used is a 409 `coupon_unavailable` naming it, and a promotion whose last use another checkout took is left out of the price, as the basket then shows), holds the stock (all or nothing: 409 `out_of_stock` with the units left per SKU), locks the basket and opens a payment at the provider for exactly the total. The body never carries an amount, and unknown fields (a client's idea of the total) are ignored. `email` is required for guests; a signed-in customer's account email is used when it is left out. While a payment is pending, asking again answers the same checkout. At most 10 attempts per basket in 10 minutes (429 `rate_limited`). A provider that cannot be reached is a 503 `payment_provider_unavailable`: nothing was charged and the stock is released.",
        "tags": ["checkout"],
        "security": sec_basket_owner(),
        "parameters": basket_params(false),
        "requestBody": { "required": true, "content": json_body(schema("StartCheckout")) },
        "responses": responses(
            json!({ "201": created }),
            &with(&BODY_ERRORS, &[Error::Unauthorized, Error::NotFound, Error::Conflict, Error::TooManyRequests, Error::Unavailable]),
        ),
    })
}

fn get_checkout() -> Value {
    json!({
        "operationId": "getCheckout",
        "summary": "A checkout by id",
        "description": "Where the checkout stands. After the payment page, poll until `state` is `paid` and `order` is set (the provider's webhook makes the order), or `cancelled` / `expired` (`message` says why). Reachable by the basket's owner only.",
        "tags": ["checkout"],
        "security": sec_basket_owner(),
        "parameters": checkout_params(),
        "responses": responses(
            checkout_ok("The checkout."),
            &[Error::Unauthorized, Error::NotFound, Error::Unavailable],
        ),
    })
}

fn cancel_checkout() -> Value {
    json!({
        "operationId": "cancelCheckout",
        "summary": "Cancel the pending payment",
        "description": "Expires the payment at the provider first (so the old basket can never be paid), then gives the stock back and unlocks the basket with its lines: the checkout is `cancelled`. If the payment went through after all, the answer is the `paid` checkout with its `order`. A checkout that is no longer pending is answered as it is. If the provider cannot be reached, 503 `payment_provider_unavailable` and nothing changes; a session the provider reports as paid but for another checkout is a 409 `payment_not_completed`.",
        "tags": ["checkout"],
        "security": sec_basket_owner(),
        "parameters": checkout_params(),
        "responses": responses(
            checkout_ok("The checkout, `cancelled` (or `paid`, with its order)."),
            &[Error::Unauthorized, Error::NotFound, Error::Conflict, Error::Unavailable],
        ),
    })
}

fn confirm_checkout() -> Value {
    json!({
        "operationId": "confirmCheckout",
        "summary": "Back from the payment page: check the payment now",
        "description": "The shopper came back from the provider's page. The hub never trusts the redirect: it asks the provider and makes the order if the payment went through (the webhook does the same on its own, and only one order is ever made). Answers the checkout as it then stands; if the provider cannot be reached right now, as it was. A session the provider reports as paid but for another checkout is a 409 `payment_not_completed`.",
        "tags": ["checkout"],
        "security": sec_basket_owner(),
        "parameters": checkout_params(),
        "responses": responses(
            checkout_ok("The checkout: `paid` with its `order` once the payment went through."),
            &[Error::Unauthorized, Error::NotFound, Error::Conflict, Error::Unavailable],
        ),
    })
}

fn order_paths() -> Value {
    json!({
        "/orders": { "get": list_orders() },
        "/orders/lookup": { "get": lookup_order() },
        "/orders/{id}": { "get": get_order() },
    })
}

fn list_orders() -> Value {
    json!({
        "operationId": "listMyOrders",
        "summary": "The signed-in customer's orders",
        "description": "The customer's orders, newest first (at most 100).",
        "tags": ["orders"],
        "security": sec_customer(),
        "parameters": context_params(),
        "responses": responses(
            json!({ "200": ok("The orders, newest first.", schema("OrderList")) }),
            &[Error::Unauthorized, Error::Unavailable],
        ),
    })
}

fn get_order() -> Value {
    let mut params = vec![param("OrderId")];
    params.extend(context_params());
    json!({
        "operationId": "getOrder",
        "summary": "An order by id",
        "description": "One of the shopper's orders: a signed-in customer's own, or one placed from the anonymous basket whose token the request carries.",
        "tags": ["orders"],
        "security": sec_basket_owner(),
        "parameters": params,
        "responses": responses(
            json!({ "200": ok("The order.", schema("OrderView")) }),
            &[Error::Unauthorized, Error::NotFound, Error::Unavailable],
        ),
    })
}

fn lookup_order() -> Value {
    json!({
        "operationId": "lookupOrder",
        "summary": "A guest's order by its link",
        "description": "An order by its number and the secret key of its link (the `url` of the order and of the confirmation email). A wrong key is a 404, the same as an unknown number.",
        "tags": ["orders"],
        "security": sec_none(),
        "parameters": [param("OrderNumber"), param("OrderKey")],
        "responses": responses(
            json!({ "200": ok("The order.", schema("OrderView")) }),
            &[Error::BadRequest, Error::NotFound, Error::Unavailable],
        ),
    })
}

fn customer_paths() -> Value {
    json!({
        "/customers": { "post": register() },
        "/customers/me": { "get": me() },
        "/sessions": { "post": sign_in() },
        "/sessions/current": { "delete": sign_out() },
    })
}

/// The answer to a registration or sign-in.
fn session_response(description: &str) -> Value {
    json!({
        "description": description,
        "headers": { "Set-Cookie": header("SetSessionCookie"), "Cache-Control": header("NoStore") },
        "content": json_body(schema("Session")),
    })
}

fn register() -> Value {
    json!({
        "operationId": "registerCustomer",
        "summary": "Register a customer (and sign in)",
        "description": "Creates the account and signs it in: the session token comes in the body (apps) and as the HttpOnly `omnihub_session` cookie (browsers). An anonymous basket the request's basket token reaches is merged into the customer's basket, and the `omnihub_basket` cookie is removed. Rate-limited per account and per client address.",
        "tags": ["customers"],
        "security": sec_sign_in(),
        "parameters": context_params(),
        "requestBody": { "required": true, "content": json_body(schema("Registration")) },
        "responses": responses(
            json!({ "201": session_response("Registered and signed in.") }),
            &with(&BODY_ERRORS, &[Error::Unauthorized, Error::Conflict, Error::TooManyRequests, Error::Unavailable]),
        ),
    })
}

fn sign_in() -> Value {
    json!({
        "operationId": "signIn",
        "summary": "Sign in",
        "description": "Signs in with email and password: the session token comes in the body (apps) and as the HttpOnly `omnihub_session` cookie (browsers). An anonymous basket the request's basket token reaches is merged into the customer's basket, and the `omnihub_basket` cookie is removed. Rate-limited per account and per client address. A wrong email or password is a 401 `bad_credentials`.",
        "tags": ["customers"],
        "security": sec_sign_in(),
        "parameters": context_params(),
        "requestBody": { "required": true, "content": json_body(schema("SignIn")) },
        "responses": responses(
            json!({ "200": session_response("Signed in.") }),
            &with(&BODY_ERRORS, &[Error::Unauthorized, Error::TooManyRequests, Error::Unavailable]),
        ),
    })
}

fn sign_out() -> Value {
    let done = json!({
        "description": "Signed out: the session ends and the `omnihub_session` cookie is removed.",
        "headers": { "Set-Cookie": header("ClearSessionCookie") },
    });
    json!({
        "operationId": "signOut",
        "summary": "Sign out",
        "description": "Ends the session presented (bearer token or cookie).",
        "tags": ["customers"],
        "security": sec_customer(),
        "parameters": context_params(),
        "responses": responses(json!({ "204": done }), &[Error::Unauthorized]),
    })
}

fn me() -> Value {
    json!({
        "operationId": "getMe",
        "summary": "The signed-in customer",
        "tags": ["customers"],
        "security": sec_customer(),
        "parameters": context_params(),
        "responses": responses(
            json!({ "200": ok("The customer.", schema("Customer")) }),
            &[Error::Unauthorized, Error::NotFound, Error::Unavailable],
        ),
    })
}

fn event_paths() -> Value {
    let mut params = vec![param("EventLimit")];
    params.extend(context_params());
    json!({
        "/customers/me/events": { "get": {
            "operationId": "listMyEvents",
            "summary": "The signed-in customer's interaction events",
            "description": "The customer's own events (views, searches, basket changes, sign-ins), newest first.",
            "tags": ["events"],
            "security": sec_customer(),
            "parameters": params,
            "responses": responses(
                json!({ "200": ok("The events, newest first.", schema("EventList")) }),
                &[Error::BadRequest, Error::Unauthorized, Error::Unavailable],
            ),
        } },
    })
}

/// A consent choice, as registration and `PUT /customers/me/consents` take it.
fn consent_choice() -> Value {
    json!({
        "type": "object",
        "required": ["channel", "purpose", "granted"],
        "additionalProperties": false,
        "properties": {
            "channel": { "type": "string", "enum": ["email", "board"] },
            "purpose": { "type": "string", "enum": ["marketing", "personalization"] },
            "granted": { "type": "boolean" },
        },
    })
}

/// The customer's consents per channel and purpose (`docs/experience.md`, "Consents").
fn consent_paths() -> Value {
    let state = json!({
        "type": "object",
        "properties": {
            "consents": { "type": "array", "description": "Every channel and purpose with `granted`, and `at` and `source` of its last change (null: never set, so not granted).", "items": { "type": "object" } },
            "history": { "type": "array", "description": "Every change, oldest first: `channel`, `purpose`, `granted`, `at`, `source` (`registration`, `account`, `unsubscribe`, `till`, `api`, `back_office`, `demo`, `migration`, `erasure`).", "items": { "type": "object" } },
        },
    });
    json!({
        "/customers/me/consents": {
            "get": {
                "operationId": "getMyConsents",
                "summary": "The signed-in customer's consents and their history",
                "description": "Nothing is consented to by default: marketing email goes only with `email`/`marketing` granted, board content chosen for the customer only with `board`/`personalization`.",
                "tags": ["customers"],
                "security": sec_customer(),
                "parameters": context_params(),
                "responses": responses(
                    json!({ "200": ok("The consents now and every change.", state.clone()) }),
                    &[Error::Unauthorized, Error::Unavailable],
                ),
            },
            "put": {
                "operationId": "setMyConsents",
                "summary": "Grants or withdraws consents",
                "description": "Pairs left out stay as they are; a choice equal to the current state is not recorded again. Each change is a `consent_changed` event. An unknown channel or purpose, or a pair sent twice, is a 422 `invalid_consents` naming the entry.",
                "tags": ["customers"],
                "security": sec_customer(),
                "parameters": context_params(),
                "requestBody": { "required": true, "content": json_body(json!({
                    "type": "object",
                    "required": ["consents"],
                    "additionalProperties": false,
                    "properties": { "consents": { "type": "array", "maxItems": 8, "items": consent_choice() } },
                })) },
                "responses": responses(
                    json!({ "200": ok("The consents now and every change.", state) }),
                    &with(&BODY_ERRORS, &[Error::Unauthorized, Error::Unavailable]),
                ),
            },
        },
    })
}

/// The phone number and loyalty number a clerk finds the customer by at a store's till.
fn in_store_paths() -> Value {
    let details = json!({
        "type": "object",
        "properties": {
            "phone": { "type": ["string", "null"], "description": "`+` and 7 to 15 digits" },
            "loyalty_number": { "type": ["string", "null"], "description": "8 to 16 digits" },
        },
    });
    json!({
        "/customers/me/in-store": {
            "get": {
                "operationId": "getMyInStoreDetails",
                "summary": "What finds the signed-in customer at a store's till",
                "tags": ["customers"],
                "security": sec_customer(),
                "parameters": context_params(),
                "responses": responses(
                    json!({ "200": ok("The phone number and loyalty number.", details.clone()) }),
                    &[Error::Unauthorized, Error::NotFound, Error::Unavailable],
                ),
            },
            "put": {
                "operationId": "setMyInStoreDetails",
                "summary": "Sets or removes the phone number and loyalty number",
                "description": "A field left out stays as it is; `null` or an empty string removes it. Each belongs to one customer.",
                "tags": ["customers"],
                "security": sec_customer(),
                "parameters": context_params(),
                "requestBody": { "required": true, "content": json_body(details.clone()) },
                "responses": responses(
                    json!({ "200": ok("The phone number and loyalty number now.", details.clone()) }),
                    &[Error::BadRequest, Error::Unauthorized, Error::Conflict, Error::Unprocessable, Error::Unavailable],
                ),
            },
        },
        "/customers/me/in-store/loyalty-number": {
            "post": {
                "operationId": "issueMyLoyaltyNumber",
                "summary": "Issues the signed-in customer a loyalty number",
                "description": "The shop makes the number (12 digits, unique). A customer who has one gets the same back: calling again changes nothing.",
                "tags": ["customers"],
                "security": sec_customer(),
                "parameters": context_params(),
                "responses": responses(
                    json!({ "200": ok("The phone number and loyalty number, with the loyalty number set.", details) }),
                    &[Error::Unauthorized, Error::NotFound, Error::Unavailable],
                ),
            },
        },
    })
}

// ---------------------------------------------------------------------------------------------
// Parameters and headers.

fn parameters() -> Value {
    let mut all = Map::new();
    for group in [
        context_parameters(),
        catalog_parameters(),
        basket_parameters(),
        checkout_parameters(),
        websocket_parameters(),
    ] {
        if let Value::Object(group) = group {
            all.extend(group);
        }
    }
    Value::Object(all)
}

fn context_parameters() -> Value {
    json!({
        "XChannel": {
            "name": "X-Channel", "in": "header", "required": false,
            "description": "The channel the request comes through, for events and prices: `web` or `mobile` (case-insensitive). Any other value — `pos`, `board` and the rest — is refused with 400 `invalid_channel` and the request does nothing: promotions limited to tills or boards are priced by the store's edge node, which the hub authenticates, never by a header a shopper can set. Default: `mobile` when the request has a bearer token or an `X-Basket-Token`, else `web`. Promotions may be limited to channels: a basket is priced for the channel of its last change, a quote and a checkout for the channel that asks.",
            "schema": { "type": "string", "enum": ["web", "mobile"], "example": "mobile" },
        },
        "XAnonymousId": {
            "name": "X-Anonymous-Id", "in": "header", "required": false,
            "description": "An app install's anonymous id (a ULID it made once), so its events before sign-in belong together. Browsers get the `omnihub_anon` cookie instead. A value that is not a ULID is ignored.",
            "schema": schema("Ulid"),
        },
    })
}

fn catalog_parameters() -> Value {
    json!({
        "Q": {
            "name": "q", "in": "query", "required": false,
            "description": "Search text over name, brand, category and description; every word must match (as a word prefix). At most 200 characters after trimming (else 400 `query_too_long`); blank means no search.",
            "schema": { "type": "string", "maxLength": 200 },
        },
        "Category": {
            "name": "category", "in": "query", "required": false,
            "description": "Only products of this category (its id, e.g. `coffee`); an unknown category is a 404, an empty value means all.",
            "schema": { "type": "string" },
        },
        "Sort": {
            "name": "sort", "in": "query", "required": false,
            "description": "The order: `relevance` (best text match first; by name without `q`), `name_asc`, `price_asc` or `price_desc` (by lowest variant price). Anything else is a 400 `bad_sort`.",
            "schema": { "type": "string", "enum": ["relevance", "name_asc", "price_asc", "price_desc"], "default": "relevance" },
        },
        "Cursor": {
            "name": "cursor", "in": "query", "required": false,
            "description": "The `next_cursor` of the previous page, unchanged (else 400 `bad_cursor`).",
            "schema": { "type": "string" },
        },
        "ProductLimit": {
            "name": "limit", "in": "query", "required": false,
            "description": "Page size (else 400 `bad_limit`).",
            "schema": { "type": "integer", "minimum": 1, "maximum": 100, "default": 24 },
        },
        "ProductSlug": {
            "name": "slug", "in": "path", "required": true,
            "description": "The product's slug (e.g. `ethiopia-yirgacheffe-coffee`) or its id.",
            "schema": { "type": "string" },
        },
        "ProductSku": {
            "name": "sku", "in": "path", "required": true,
            "description": "A variant's SKU; one that is not 1 to 64 characters of `A-Z a-z 0-9 . _ -` is a 422 `invalid_sku`, one not in the catalog a 404.",
            "schema": schema("Sku"),
        },
        "EventLimit": {
            "name": "limit", "in": "query", "required": false,
            "description": "At most this many events (else 400 `bad_limit`).",
            "schema": { "type": "integer", "minimum": 1, "maximum": 500, "default": 100 },
        },
    })
}

fn basket_parameters() -> Value {
    json!({
        "BasketId": {
            "name": "id", "in": "path", "required": true,
            "description": "The basket's id (a ULID). An id that is not a ULID, is unknown, or is not the caller's basket is a 404.",
            "schema": { "type": "string", "example": "01HZX3K6Q8J5W2V7N4M9T0B1CD" },
        },
        "LineSku": {
            "name": "sku", "in": "path", "required": true,
            "description": "The line's SKU; one that is not 1 to 64 characters of `A-Z a-z 0-9 . _ -` is a 422 `invalid_sku`.",
            "schema": schema("Sku"),
        },
    })
}

fn checkout_parameters() -> Value {
    json!({
        "Country": {
            "name": "country", "in": "query", "required": true,
            "description": "ISO 3166-1 alpha-2 code of the destination (any case). One the shop does not ship to is a 422 `country_not_served`; a missing one a 400 `bad_query`.",
            "schema": { "type": "string", "example": "DE" },
        },
        "ShippingMethod": {
            "name": "shipping_method", "in": "query", "required": false,
            "description": "The `id` of a shipping option to price; left out, the cheapest option is priced. One the destination does not offer is a 422 `unknown_shipping_method`.",
            "schema": { "type": "string", "example": "standard" },
        },
        "CheckoutId": {
            "name": "id", "in": "path", "required": true,
            "description": "The checkout's id (a ULID). One that is not a ULID, is unknown or is not the caller's is a 404.",
            "schema": { "type": "string", "example": "01HZX3M2B7C8D9E0F1G2H3J4K5" },
        },
        "OrderId": {
            "name": "id", "in": "path", "required": true,
            "description": "The order's id (a ULID). One that is not a ULID, is unknown or is not the caller's is a 404.",
            "schema": { "type": "string", "example": "01HZX3P5R6S7T8V9W0X1Y2Z3A4" },
        },
        "OrderNumber": {
            "name": "number", "in": "query", "required": true,
            "description": "The order number, e.g. `W-000042`.",
            "schema": { "type": "string", "example": "W-000042" },
        },
        "OrderKey": {
            "name": "key", "in": "query", "required": true,
            "description": "The secret key of the order's link.",
            "schema": { "type": "string" },
        },
    })
}

fn websocket_parameters() -> Value {
    json!({
        "Upgrade": {
            "name": "Upgrade", "in": "header", "required": true,
            "description": "`websocket` (else 400 `not_a_websocket`).",
            "schema": { "type": "string", "enum": ["websocket"] },
        },
        "Connection": {
            "name": "Connection", "in": "header", "required": true,
            "description": "Must include `Upgrade` (else 400 `not_a_websocket`).",
            "schema": { "type": "string", "example": "Upgrade" },
        },
        "SecWebSocketKey": {
            "name": "Sec-WebSocket-Key", "in": "header", "required": true,
            "description": "The WebSocket handshake key (RFC 6455).",
            "schema": { "type": "string" },
        },
        "SecWebSocketVersion": {
            "name": "Sec-WebSocket-Version", "in": "header", "required": true,
            "description": "The WebSocket protocol version.",
            "schema": { "type": "string", "enum": ["13"] },
        },
        "Origin": {
            "name": "Origin", "in": "header", "required": false,
            "description": "Sent by browsers. A cookie-authenticated upgrade must come from this site or an allowed origin (else 403 `origin_not_allowed`); upgrades with a bearer token or `X-Basket-Token` are not checked.",
            "schema": { "type": "string" },
        },
    })
}

fn headers() -> Value {
    json!({
        "RetryAfter": {
            "description": "Seconds to wait before trying again.",
            "schema": { "type": "integer", "minimum": 1 },
        },
        "SetSessionCookie": {
            "description": "`omnihub_session=<token>` (HttpOnly, SameSite=Lax, Path=/, Max-Age of the session lifetime, Secure when served over HTTPS), and a removal of the `omnihub_basket` cookie.",
            "schema": { "type": "string" },
        },
        "ClearSessionCookie": {
            "description": "A removal of the `omnihub_session` cookie.",
            "schema": { "type": "string" },
        },
        "SetBasketCookie": {
            "description": "For a new anonymous basket: `omnihub_basket=<token>` (HttpOnly, SameSite=Lax, Path=/, 30 days, Secure when served over HTTPS).",
            "schema": { "type": "string" },
        },
        "NoStore": {
            "description": "`no-store`: the body holds a session token.",
            "schema": { "type": "string", "enum": ["no-store"] },
        },
    })
}

// ---------------------------------------------------------------------------------------------
// Schemas.

fn schemas() -> Value {
    let mut all = Map::new();
    for group in [
        scalar_schemas(),
        catalog_schemas(),
        basket_schemas(),
        checkout_schemas(),
        order_schemas(),
        customer_schemas(),
        event_schemas(),
        chat_schemas(),
    ] {
        if let Value::Object(group) = group {
            all.extend(group);
        }
    }
    all.insert(
        "Error".into(),
        json!({
            "type": "object",
            "description": "The body of every error response.",
            "required": ["error"],
            "properties": { "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": { "type": "string", "description": "Stable, machine-readable, e.g. `not_found`.", "example": "not_found" },
                    "message": { "type": "string", "description": "For people: what went wrong and what to fix.", "example": "basket not found" },
                    "details": schema("ErrorDetails"),
                },
            } },
        }),
    );
    Value::Object(all)
}

fn scalar_schemas() -> Value {
    json!({
        "Ulid": {
            "type": "string",
            "description": "A ULID: 26 characters of Crockford base 32, time-ordered.",
            "minLength": 26, "maxLength": 26,
            "pattern": "^[0-7][0-9A-HJKMNP-TV-Z]{25}$",
            "example": "01HZX3K6Q8J5W2V7N4M9T0B1CD",
        },
        "Sku": {
            "type": "string",
            "description": "A stock-keeping unit: 1 to 64 characters of `A-Z a-z 0-9 . _ -`.",
            "minLength": 1, "maxLength": 64,
            "pattern": "^[A-Za-z0-9._-]{1,64}$",
            "example": "COF-001-500G",
        },
        "Currency": {
            "type": "string",
            "description": "An ISO 4217 currency code the hub knows.",
            "pattern": "^[A-Z]{3}$",
            "example": "EUR",
        },
        "Money": {
            "type": "object",
            "description": "An amount in integer minor units of the currency (cents for EUR, yen for JPY), tax included. Never a float.",
            "required": ["minor", "currency"],
            "properties": {
                "minor": { "type": "integer", "format": "int64", "example": 1250 },
                "currency": schema("Currency"),
            },
            "example": { "minor": 1250, "currency": "EUR" },
        },
    })
}

fn catalog_schemas() -> Value {
    json!({
        "Category": {
            "type": "object",
            "required": ["id", "name", "description", "position"],
            "properties": {
                "id": { "type": "string", "description": "The category's slug, e.g. `coffee`; use it as `category` in product listings." },
                "name": { "type": "string" },
                "description": { "type": "string" },
                "position": { "type": "integer", "format": "int32", "minimum": 0, "description": "Order in navigation, lowest first." },
            },
        },
        "CategoryList": {
            "type": "object",
            "required": ["items"],
            "properties": { "items": array_of("Category") },
        },
        "ProductSummary": product_summary(),
        "ProductPage": {
            "type": "object",
            "required": ["items", "total", "next_cursor"],
            "properties": {
                "items": array_of("ProductSummary"),
                "total": { "type": "integer", "format": "int64", "minimum": 0, "description": "Matches over all pages." },
                "next_cursor": { "type": "string", "nullable": true, "description": "Pass as `cursor` for the next page; null on the last page." },
            },
        },
        "ProductDetail": product_detail(),
        "ProductVariant": {
            "type": "object",
            "required": ["sku", "title", "price", "compare_at", "available"],
            "properties": {
                "sku": schema("Sku"),
                "title": { "type": "string", "description": "What distinguishes it, e.g. `500 g`." },
                "price": schema("Money"),
                "compare_at": { "nullable": true, "allOf": [schema("Money")], "description": "A former price to show struck through, if any." },
                "available": { "type": "integer", "format": "int64", "description": "Units available online now." },
            },
        },
    })
}

fn product_summary() -> Value {
    json!({
        "type": "object",
        "description": "A product in a listing.",
        "required": ["id", "slug", "name", "brand", "category", "image", "from_price"],
        "properties": {
            "id": schema("Ulid"),
            "slug": { "type": "string" },
            "name": { "type": "string" },
            "brand": { "type": "string" },
            "category": { "type": "string", "description": "The category id." },
            "image": { "type": "string", "description": "Path of the product image, served by the hub." },
            "from_price": { "nullable": true, "allOf": [schema("Money")], "description": "The lowest variant price; null for a product without variants." },
        },
    })
}

fn product_detail() -> Value {
    json!({
        "type": "object",
        "required": ["id", "slug", "name", "brand", "description", "category", "image", "tax_rate_bp", "attributes", "variants"],
        "properties": {
            "id": schema("Ulid"),
            "slug": { "type": "string" },
            "name": { "type": "string" },
            "brand": { "type": "string" },
            "description": { "type": "string" },
            "category": { "type": "string", "description": "The category id." },
            "image": { "type": "string", "description": "Path of the product image, served by the hub." },
            "tax_rate_bp": { "type": "integer", "format": "int32", "minimum": 0, "description": "VAT rate in basis points (1900 = 19 %), included in the prices." },
            "attributes": { "type": "object", "additionalProperties": { "type": "string" }, "example": { "origin": "Ethiopia" } },
            "variants": array_of("ProductVariant"),
        },
    })
}

fn basket_schemas() -> Value {
    json!({
        "BasketView": basket_view(),
        "NewBasket": {
            "description": "A basket as `POST /baskets` creates it: for an anonymous shopper with the basket's secret `token`.",
            "allOf": [schema("BasketView"), {
                "type": "object",
                "properties": { "token": { "type": "string", "description": "Only for a new anonymous basket: the secret that alone reaches it. Send it as `X-Basket-Token`; it is shown once." } },
            }],
        },
        "PricedLine": priced_line(),
        "PromotionSummary": promotion_summary(),
        "AppliedPromotion": {
            "type": "object",
            "description": "A promotion that applied.",
            "required": ["id", "name", "amount", "times"],
            "properties": {
                "id": { "type": "string", "description": "The promotion's code.", "example": "SUMMER10" },
                "name": { "type": "string", "description": "Its name, to show.", "example": "10 % off from 30 euros" },
                "amount": { "allOf": [schema("Money")], "description": "What it took off the lines (its gifts and free shipping are counted apart)." },
                "times": { "type": "integer", "format": "int32", "minimum": 1, "description": "How often it applied (the repeats of a buy-X-get-Y; 1 otherwise)." },
            },
        },
        "NotAppliedPromotion": {
            "type": "object",
            "description": "A promotion about this basket that did not apply, and why.",
            "required": ["id", "name", "reason"],
            "properties": {
                "id": { "type": "string", "example": "SUMMER10" },
                "name": { "type": "string", "example": "10 % off from 30 euros" },
                "reason": { "type": "string", "description": "Why, in words for the shopper.", "example": "needs a basket of at least EUR 30.00" },
            },
        },
        "PromotionGift": {
            "type": "object",
            "description": "A free gift line a promotion adds.",
            "required": ["sku", "quantity", "promotion"],
            "properties": {
                "sku": schema("Sku"),
                "quantity": { "type": "integer", "format": "int32", "minimum": 1 },
                "promotion": { "type": "string", "description": "The id of the promotion that gives it." },
            },
        },
        "CouponStatus": {
            "type": "object",
            "description": "A coupon code on a basket, as the shopper sees it.",
            "required": ["code", "applied"],
            "properties": {
                "code": { "type": "string", "description": "The code, upper case.", "example": "WELCOME10" },
                "applied": { "type": "boolean", "description": "Whether its promotion applies to the basket now." },
                "message": { "type": "string", "description": "Only when not applied: why (a condition not met, expired, used up), in words.", "example": "needs a basket of at least EUR 100.00" },
            },
        },
        "TaxLine": {
            "type": "object",
            "description": "The tax of one rate, computed on the summed lines of that rate after discount.",
            "required": ["rate_bp", "gross", "tax"],
            "properties": {
                "rate_bp": { "type": "integer", "format": "int32", "minimum": 0, "description": "The rate in basis points (1900 = 19 %)." },
                "gross": { "allOf": [schema("Money")], "description": "Gross amount (tax included) at this rate, after discount." },
                "tax": schema("Money"),
            },
        },
        "CreateBasket": {
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "currency": { "type": "string", "pattern": "^[A-Za-z]{3}$", "description": "ISO 4217 code of a currency the shop sells in; left out, the shop's currency." },
            },
        },
        "ApplyCoupon": {
            "type": "object",
            "required": ["code"],
            "additionalProperties": false,
            "properties": {
                "code": { "type": "string", "maxLength": 64, "example": "WELCOME10", "description": "Letters, digits, `-` and `_`; matched without regard to case." },
            },
        },
        "AddLine": {
            "type": "object",
            "description": "No price field: the hub prices every line.",
            "required": ["sku", "quantity"],
            "additionalProperties": false,
            "properties": {
                "sku": schema("Sku"),
                "quantity": { "type": "integer", "minimum": 1, "maximum": 999, "description": "Units to add; the line's new quantity must stay within 1 to 999 and the stock." },
            },
        },
        "SetQuantity": {
            "type": "object",
            "required": ["quantity"],
            "additionalProperties": false,
            "properties": {
                "quantity": { "type": "integer", "minimum": 1, "maximum": 999, "description": "The line's new quantity, within the stock." },
            },
        },
    })
}

fn basket_view() -> Value {
    json!({
        "type": "object",
        "description": "A basket as every channel shows it, priced by the hub from the current catalog.",
        "required": ["id", "version", "owner", "currency", "lines", "unavailable", "item_count", "subtotal", "discount", "total", "taxes", "promotions", "coupons"],
        "properties": {
            "id": schema("Ulid"),
            "version": { "type": "integer", "format": "int64", "minimum": 0, "description": "Grows by one with every change; order live updates by it." },
            "owner": { "type": "string", "enum": ["customer", "anonymous"] },
            "currency": schema("Currency"),
            "lines": array_of("PricedLine"),
            "unavailable": { "type": "array", "items": schema("Sku"), "description": "SKUs in the basket that are no longer sold: shown, not charged." },
            "item_count": { "type": "integer", "format": "int64", "minimum": 0, "description": "Units over all lines." },
            "subtotal": { "allOf": [schema("Money")], "description": "Sum of the line totals, before discount." },
            "discount": { "allOf": [schema("Money")], "description": "What the promotions take off: the sum of the lines' discounts (and of `promotions.applied[].amount`)." },
            "total": { "allOf": [schema("Money")], "description": "What the customer pays: subtotal minus discount, tax included." },
            "taxes": { "type": "array", "items": schema("TaxLine"), "description": "Tax included in the total, per rate." },
            "promotions": schema("PromotionSummary"),
            "coupons": { "type": "array", "items": schema("CouponStatus"), "description": "The coupon codes entered on this basket, in the order they were entered, each with whether its promotion applies now." },
            "checkout": { "allOf": [schema("CheckoutSummary")], "description": "The payment in progress, if any (absent otherwise): the basket is locked until it is paid, cancelled or expired." },
        },
    })
}

fn promotion_summary() -> Value {
    json!({
        "type": "object",
        "description": "What the live promotions did to the basket, and why others did not apply. Promotions about products the basket does not hold are left out.",
        "required": ["applied", "not_applied", "free_shipping", "gifts"],
        "properties": {
            "applied": { "type": "array", "items": schema("AppliedPromotion"), "description": "In the order they were applied." },
            "not_applied": { "type": "array", "items": schema("NotAppliedPromotion") },
            "free_shipping": { "type": "boolean", "description": "A promotion makes shipping free: the checkout's shipping costs nothing." },
            "gifts": { "type": "array", "items": schema("PromotionGift"), "description": "Free gift lines (also in `lines`, fully discounted)." },
        },
    })
}

fn priced_line() -> Value {
    json!({
        "type": "object",
        "required": ["sku", "product_id", "product_slug", "name", "variant", "image", "quantity", "unit_price", "line_total", "discount", "tax_rate_bp"],
        "properties": {
            "sku": schema("Sku"),
            "product_id": schema("Ulid"),
            "product_slug": { "type": "string" },
            "name": { "type": "string", "description": "The product's name." },
            "variant": { "type": "string", "description": "The variant's title." },
            "image": { "type": "string" },
            "quantity": { "type": "integer", "format": "int32", "minimum": 1, "maximum": 999 },
            "unit_price": schema("Money"),
            "line_total": { "allOf": [schema("Money")], "description": "`unit_price × quantity`, before discount." },
            "discount": { "allOf": [schema("Money")], "description": "What the promotions take off this line: its own, and its share of a discount off the whole basket. A free gift is a line of its own whose discount is its whole `line_total`." },
            "tax_rate_bp": { "type": "integer", "format": "int32", "minimum": 0 },
        },
    })
}

fn checkout_schemas() -> Value {
    json!({
        "Address": address(),
        "FieldError": {
            "type": "object",
            "description": "One problem with one field of a form, worded for the shopper.",
            "required": ["field", "message"],
            "properties": {
                "field": { "type": "string", "description": "The field's name, e.g. `postcode`.", "example": "postcode" },
                "message": { "type": "string", "description": "What to fix.", "example": "A German postcode has 5 digits, e.g. 10115." },
            },
        },
        "ErrorDetails": {
            "type": "object",
            "description": "Machine-readable details of some errors; which key is present depends on the code.",
            "properties": {
                "fields": { "type": "array", "items": schema("FieldError"), "description": "422 `invalid_address`, `invalid_email`, `country_not_served`, `unknown_shipping_method`: the fields to fix." },
                "items": { "type": "array", "items": schema("StockShortage"), "description": "409 `out_of_stock`: the SKUs short of stock." },
                "skus": { "type": "array", "items": schema("Sku"), "description": "409 `items_unavailable`: the SKUs no longer sold." },
            },
        },
        "StockShortage": {
            "type": "object",
            "required": ["sku", "available"],
            "properties": {
                "sku": schema("Sku"),
                "available": { "type": "integer", "format": "int64", "description": "Units that could be held." },
            },
        },
        "ShippingOption": {
            "type": "object",
            "description": "A shipping method the shopper can choose, with its price for this basket: tax included where the market's prices include tax, excluded where they do not.",
            "required": ["id", "name", "price", "delivery"],
            "properties": {
                "id": { "type": "string", "description": "Send as `shipping_method`.", "example": "standard" },
                "name": { "type": "string", "example": "Standard" },
                "price": schema("Money"),
                "delivery": { "type": "string", "description": "Delivery time as shown.", "example": "2–3 working days" },
            },
        },
        "Breakdown": breakdown(),
        "QuoteView": {
            "type": "object",
            "required": ["country", "shipping_options", "breakdown"],
            "properties": {
                "country": { "type": "string", "description": "The destination, upper case.", "example": "DE" },
                "shipping_options": { "type": "array", "items": schema("ShippingOption"), "description": "Cheapest first." },
                "breakdown": { "nullable": true, "allOf": [schema("Breakdown")], "description": "The price with the chosen (or cheapest) option; null when no option can carry the basket." },
            },
        },
        "StartCheckout": {
            "type": "object",
            "description": "What the shopper asks for. No amount: the hub prices the basket, and unknown fields (a client's idea of the total, say) are ignored.",
            "required": ["address", "shipping_method"],
            "properties": {
                "email": { "type": "string", "format": "email", "description": "Where the confirmation goes. Required for guests (else 422 `invalid_email`); left out by a signed-in customer, the account's email." },
                "address": schema("Address"),
                "shipping_method": { "type": "string", "description": "The `id` of a shipping option of the quote.", "example": "standard" },
            },
            "example": {
                "email": "erika@example.com",
                "address": { "name": "Erika Mustermann", "line1": "Unter den Linden 1", "city": "Berlin", "postcode": "10117", "country": "DE" },
                "shipping_method": "standard",
            },
        },
        "CheckoutState": {
            "type": "string",
            "description": "`payment_pending` (waiting for the shopper to pay; the basket is locked), `paid` (the order exists), `cancelled` (the basket is unlocked with its lines) or `expired` (the hold ran out before payment).",
            "enum": ["payment_pending", "paid", "cancelled", "expired"],
        },
        "CheckoutView": checkout_view(),
        "CheckoutSummary": {
            "type": "object",
            "description": "A payment in progress, as a basket shows it.",
            "required": ["id", "state", "payment_url", "hold_expires_at", "total", "message"],
            "properties": {
                "id": schema("Ulid"),
                "state": schema("CheckoutState"),
                "payment_url": { "type": "string", "format": "uri", "nullable": true, "description": "The provider's hosted payment page." },
                "hold_expires_at": { "type": "string", "format": "date-time", "description": "When the stock hold runs out, RFC 3339." },
                "total": schema("Money"),
                "message": { "type": "string", "nullable": true, "description": "What the shopper should know (e.g. a declined card), in plain words." },
            },
        },
    })
}

fn address() -> Value {
    let text = |description: &str| json!({ "type": "string", "maxLength": 100, "description": description });
    json!({
        "type": "object",
        "description": "Where an order goes. Checked at checkout: every problem is reported at once in a 422 `invalid_address` with `details.fields`. Answered trimmed and normalised (country in upper case, the postcode in its country's canonical form such as `1234 AB` or `SW1A 1AA`).",
        "required": ["name", "line1", "city", "postcode", "country"],
        "properties": {
            "name": text("The recipient."),
            "line1": text("Street and house number."),
            "line2": text("Optional."),
            "city": text("Town or city."),
            "region": text("State or county; required for the US (its 2-letter state code)."),
            "postcode": { "type": "string", "description": "Checked by the country's rules (DE, FR: 5 digits; AT, BE: 4; NL: `1234 AB`; GB; US ZIP), else at most 12 letters, digits, spaces or hyphens." },
            "country": { "type": "string", "description": "ISO 3166-1 alpha-2 of a country the shop ships to.", "example": "DE" },
            "phone": { "type": "string", "maxLength": 30, "description": "Optional: digits, spaces and `+ - ( ) . /`, at least 5 digits." },
        },
        "example": { "name": "Erika Mustermann", "line1": "Unter den Linden 1", "line2": "", "city": "Berlin", "region": "", "postcode": "10117", "country": "DE", "phone": "" },
    })
}

fn breakdown() -> Value {
    json!({
        "type": "object",
        "description": "The whole priced checkout: what the quote shows, the order stores and the payment is for.",
        "required": ["currency", "country", "prices_include_tax", "lines", "item_count", "subtotal", "discount", "shipping", "taxes", "tax_total", "total", "weight_grams"],
        "properties": {
            "currency": schema("Currency"),
            "country": { "type": "string", "description": "The destination, upper case.", "example": "DE" },
            "prices_include_tax": { "type": "boolean", "description": "Whether line prices, subtotal and shipping include tax (else tax is added on top)." },
            "lines": { "type": "array", "items": schema("PricedLine"), "description": "The lines as the destination's market shows them; `tax_rate_bp` is its rate for the product." },
            "item_count": { "type": "integer", "format": "int64", "minimum": 0 },
            "subtotal": { "allOf": [schema("Money")], "description": "Sum of the line totals as shown (gross or net, see `prices_include_tax`)." },
            "discount": schema("Money"),
            "shipping": schema("ShippingOption"),
            "taxes": { "type": "array", "items": schema("TaxLine"), "description": "Tax per rate, items after discount and shipping together." },
            "tax_total": schema("Money"),
            "total": { "allOf": [schema("Money")], "description": "What the shopper pays: subtotal − discount + shipping, plus `tax_total` where prices exclude tax." },
            "weight_grams": { "type": "integer", "format": "int64", "minimum": 0, "description": "Shipping weight, packaging included." },
        },
    })
}

fn checkout_view() -> Value {
    json!({
        "type": "object",
        "description": "A checkout as the shopper sees it: the frozen, priced basket and its payment.",
        "required": ["id", "basket_id", "state", "payment_url", "hold_expires_at", "email", "address", "breakdown", "message", "order"],
        "properties": {
            "id": schema("Ulid"),
            "basket_id": schema("Ulid"),
            "state": schema("CheckoutState"),
            "payment_url": { "type": "string", "format": "uri", "nullable": true, "description": "The provider's hosted payment page, while the payment is pending; null otherwise." },
            "hold_expires_at": { "type": "string", "format": "date-time", "description": "When the stock hold runs out, RFC 3339." },
            "email": { "type": "string", "format": "email" },
            "address": schema("Address"),
            "breakdown": schema("Breakdown"),
            "message": { "type": "string", "nullable": true, "description": "What the shopper should know (a decline, an expiry), in plain words." },
            "order": { "nullable": true, "allOf": [schema("OrderRef")], "description": "The order, once paid." },
        },
        "example": checkout_example(),
    })
}

/// A checkout just started, as `POST /baskets/{id}/checkout` answers it.
fn checkout_example() -> Value {
    let eur = |minor: i64| json!({ "minor": minor, "currency": "EUR" });
    json!({
        "id": "01HZX3M2B7C8D9E0F1G2H3J4K5",
        "basket_id": "01HZX3K6Q8J5W2V7N4M9T0B1CD",
        "state": "payment_pending",
        "payment_url": "http://127.0.0.1:8201/pay/cs_test_01HZX3M2B7C8",
        "hold_expires_at": "2024-06-01T12:15:00Z",
        "email": "erika@example.com",
        "address": { "name": "Erika Mustermann", "line1": "Unter den Linden 1", "line2": "", "city": "Berlin", "region": "", "postcode": "10117", "country": "DE", "phone": "" },
        "breakdown": {
            "currency": "EUR", "country": "DE", "prices_include_tax": true,
            "lines": [{
                "sku": "COF-001-500G", "product_id": "01HZX2A1B2C3D4E5F6G7H8J9K0", "product_slug": "ethiopia-yirgacheffe-coffee",
                "name": "Ethiopia Yirgacheffe", "variant": "500 g", "image": "/static/img/cof-001.jpg",
                "quantity": 2, "unit_price": eur(1250), "line_total": eur(2500), "discount": eur(0), "tax_rate_bp": 700,
            }],
            "item_count": 2, "subtotal": eur(2500), "discount": eur(0),
            "shipping": { "id": "standard", "name": "Standard", "price": eur(495), "delivery": "2–3 working days" },
            "taxes": [{ "rate_bp": 700, "gross": eur(2500), "tax": eur(164) }, { "rate_bp": 1900, "gross": eur(495), "tax": eur(79) }],
            "tax_total": eur(243), "total": eur(2995), "weight_grams": 1100,
        },
        "message": null,
        "order": null,
    })
}

fn order_schemas() -> Value {
    json!({
        "OrderRef": {
            "type": "object",
            "description": "A link to an order.",
            "required": ["id", "number", "url"],
            "properties": {
                "id": schema("Ulid"),
                "number": { "type": "string", "example": "W-000042" },
                "url": { "type": "string", "description": "Where the shopper (or a guest, with the key in it) sees the order.", "example": "/orders/W-000042?key=3q2-7w" },
            },
        },
        "Progress": {
            "type": "string",
            "description": "How far the order has come; it only moves forward.",
            "enum": ["paid", "allocated", "packed", "shipped", "in_transit", "out_for_delivery", "delivered"],
        },
        "RefundView": {
            "type": "object",
            "required": ["amount", "reason", "at"],
            "properties": {
                "amount": schema("Money"),
                "reason": { "type": "string" },
                "at": { "type": "string", "format": "date-time", "description": "When, RFC 3339." },
            },
        },
        "OrderView": order_view(),
        "OrderList": {
            "type": "object",
            "required": ["orders"],
            "properties": { "orders": array_of("OrderView") },
        },
    })
}

fn order_view() -> Value {
    json!({
        "type": "object",
        "description": "An order as its customer (or a guest with the link) sees it. Born paid: exactly one per paid checkout.",
        "required": ["id", "number", "status", "progress", "created_at", "channel", "email", "address", "breakdown", "paid", "refunded", "refunds", "cancelled", "needs_attention", "url"],
        "properties": {
            "id": schema("Ulid"),
            "number": { "type": "string", "example": "W-000042" },
            "status": { "type": "string", "description": "In words: `Paid`, `Being prepared`, `Packed`, `Shipped`, `In transit`, `Out for delivery`, `Delivered`, `Cancelled` or `Refunded`.", "example": "Paid" },
            "progress": schema("Progress"),
            "created_at": { "type": "string", "format": "date-time", "description": "When it was paid, RFC 3339." },
            "channel": { "type": "string", "enum": ["web", "mobile", "pos", "board", "voice", "chat", "unknown"], "description": "Where it was placed." },
            "email": { "type": "string", "format": "email" },
            "address": schema("Address"),
            "breakdown": schema("Breakdown"),
            "paid": schema("Money"),
            "refunded": { "allOf": [schema("Money")], "description": "The sum of the refunds." },
            "refunds": array_of("RefundView"),
            "cancelled": { "type": "string", "nullable": true, "description": "Why it was cancelled, if it was." },
            "needs_attention": { "type": "string", "nullable": true, "description": "Set when a person at the shop must look at the order; says what happens next." },
            "url": { "type": "string", "description": "The order's link with its key (for guests)." },
        },
    })
}

fn customer_schemas() -> Value {
    json!({
        "Registration": {
            "type": "object",
            "required": ["email", "name", "password"],
            "additionalProperties": false,
            "properties": {
                "email": { "type": "string", "format": "email", "maxLength": 254, "description": "A plausible address (else 422 `invalid_email`); an account exists once per email." },
                "name": { "type": "string", "minLength": 1, "maxLength": 100, "description": "1 to 100 characters after trimming (else 422 `invalid_name`)." },
                "password": { "type": "string", "format": "password", "minLength": 10, "maxLength": 128, "description": "10 to 128 characters (else 422 `weak_password`)." },
                "consents": { "type": "array", "maxItems": 8, "items": consent_choice(), "description": "The consents the shopper gives at registration; none: nothing is granted." },
            },
        },
        "SignIn": {
            "type": "object",
            "required": ["email", "password"],
            "additionalProperties": false,
            "properties": {
                "email": { "type": "string", "format": "email" },
                "password": { "type": "string", "format": "password" },
            },
        },
        "Customer": {
            "type": "object",
            "description": "A customer as they see themselves.",
            "required": ["id", "email", "name", "basket_id"],
            "properties": {
                "id": schema("Ulid"),
                "email": { "type": "string", "format": "email" },
                "name": { "type": "string" },
                "basket_id": nullable("Ulid"),
            },
        },
        "Session": {
            "type": "object",
            "required": ["session_token", "customer", "basket"],
            "properties": {
                "session_token": { "type": "string", "description": "Send as `Authorization: Bearer <token>` (also set as the `omnihub_session` cookie)." },
                "customer": schema("Customer"),
                "basket": { "allOf": [schema("BasketView")], "description": "The customer's basket, with the anonymous basket merged in." },
            },
        },
    })
}

fn event_schemas() -> Value {
    json!({
        "Event": {
            "type": "object",
            "description": "One interaction. `payload` holds the kind's details as text.",
            "required": ["id", "at", "subject", "channel", "kind", "payload"],
            "properties": {
                "id": schema("Ulid"),
                "at": { "type": "string", "format": "date-time", "description": "When, RFC 3339." },
                "subject": schema("Subject"),
                "channel": { "type": "string", "enum": ["web", "mobile", "pos", "board", "voice", "chat", "unknown"] },
                "kind": {
                    "type": "string",
                    "description": "What happened; kinds this hub does not know read as `unknown`.",
                    "enum": ["page_view", "product_view", "search", "basket_line_added", "basket_line_changed", "basket_line_removed", "basket_cleared", "basket_merged", "registered", "signed_in", "signed_out", "unknown"],
                },
                "payload": {
                    "type": "object",
                    "additionalProperties": { "type": "string" },
                    "description": "Details such as `sku`, `quantity`, `query`, `results`, `slug`, `path`.",
                    "example": { "query": "coffee", "results": "12" },
                },
            },
        },
        "Subject": {
            "type": "object",
            "description": "Who acted: a customer or an anonymous shopper (browser or app install).",
            "required": ["type", "id"],
            "properties": {
                "type": { "type": "string", "enum": ["customer", "anonymous"] },
                "id": schema("Ulid"),
            },
        },
        "EventList": {
            "type": "object",
            "required": ["items"],
            "properties": { "items": array_of("Event") },
        },
    })
}

fn error_responses() -> Value {
    Value::Object(
        Error::ALL
            .iter()
            .map(|e| (e.component().to_string(), e.response()))
            .collect(),
    )
}

// ---------------------------------------------------------------------------------------------
// Chat.

fn chat_paths() -> Value {
    json!({ "/chat": { "post": chat() } })
}

fn chat() -> Value {
    json!({
        "operationId": "chat",
        "summary": "Talk to the shopping assistant",
        "description": concat!(
            "One chat message in, the assistant's answer out. It understands, in English: search (\"do you have earl grey?\"), ",
            "add to the basket by name with a quantity (\"add two bags of coffee\"; when several products match it asks which, and ",
            "a number, \"the second one\" or a name answers), what is in the basket, remove an item, where is my order (the latest, ",
            "or a number such as W-000123, of the signed-in customer only), reorder the last order at today's prices, store opening hours ",
            "and stock at a store (\"is earl grey in stock in Berlin?\"), and checkout, which it never completes: a signed-in customer ",
            "gets the checkout link by email, and every shopper gets it as `link`. Anything else gets an answer saying what it can do. ",
            "Quantities are 1 to 20 per line by default; others are refused in words and change nothing.\n\n",
            "The shopper is the caller of every other endpoint: the session cookie or bearer token (their basket), else the anonymous ",
            "basket token or cookie. A chat that adds to a shopper without a basket creates one: its token comes back as `basket_token` ",
            "and in the basket cookie. Browsers that send the session or basket cookie must send the page's CSRF token as `X-CSRF-Token`. ",
            "The conversation's state stays on the server; send back `conversation` to go on with it. Rate-limited per shopper."
        ),
        "tags": ["chat"],
        "security": sec_basket_optional(),
        "parameters": context_params(),
        "requestBody": { "required": true, "content": json_body(schema("ChatRequest")) },
        "responses": responses(
            json!({ "200": {
                "description": "The assistant's answer.",
                "headers": { "Set-Cookie": header("SetBasketCookie") },
                "content": json_body(schema("ChatResponse")),
            } }),
            &with(&BODY_ERRORS, &[Error::Unauthorized, Error::Forbidden, Error::TooManyRequests, Error::Unavailable]),
        ),
    })
}

fn chat_schemas() -> Value {
    json!({
        "ChatRequest": {
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "message": { "type": "string", "maxLength": 500, "description": "What the shopper wrote; absent or empty opens the conversation with a welcome. Longer than 500 characters is a 422 `message_too_long`.", "example": "add two bags of coffee" },
                "conversation": { "type": "string", "maxLength": 64, "description": "The `conversation` of the previous answer. Unknown, expired or another shopper's starts a new conversation.", "example": "4f1c2a9be0d34c5f8e7a6b5c4d3e2f10" },
            },
        },
        "ChatResponse": {
            "type": "object",
            "required": ["reply", "conversation", "suggestions"],
            "properties": {
                "reply": { "type": "string", "example": "Added 2 × Kenya Nyeri Ground Coffee, 250 g to your basket. Your basket total is 13 euros 98." },
                "conversation": { "type": "string", "description": "Send it with the next message." },
                "basket": schema("ChatBasket"),
                "suggestions": { "type": "array", "items": { "type": "string" }, "description": "What the shopper might say next (the option numbers while the assistant asks which one).", "example": ["What's in my basket?", "Checkout"] },
                "card": {
                    "type": "object",
                    "description": "A summary to show beside the answer (search results, the basket, an order).",
                    "required": ["title", "text"],
                    "properties": { "title": { "type": "string" }, "text": { "type": "string" } },
                },
                "link": { "type": "string", "description": "A link to follow: the checkout page.", "example": "http://127.0.0.1:8080/checkout" },
                "basket_token": { "type": "string", "description": "Only when this message created an anonymous basket: its secret token (also set as the basket cookie). Apps send it as `X-Basket-Token` from now on." },
            },
        },
        "ChatBasket": {
            "type": "object",
            "description": "The basket after this message changed it, priced by the hub.",
            "required": ["id", "version", "item_count", "total", "lines"],
            "properties": {
                "id": { "type": "string" },
                "version": { "type": "integer", "format": "int64" },
                "item_count": { "type": "integer", "format": "int64" },
                "total": schema("Money"),
                "lines": { "type": "array", "items": {
                    "type": "object",
                    "required": ["sku", "name", "variant", "quantity", "line_total"],
                    "properties": {
                        "sku": { "type": "string" },
                        "name": { "type": "string" },
                        "variant": { "type": "string" },
                        "quantity": { "type": "integer", "format": "int32" },
                        "line_total": schema("Money"),
                    },
                } },
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    const METHODS: [&str; 8] = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];

    /// Every `$ref` in `value`, with where it was found.
    fn refs<'a>(value: &'a Value, at: &str, out: &mut Vec<(String, &'a str)>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("$ref", Value::String(target)) => out.push((at.to_string(), target)),
                        _ => refs(v, &format!("{at}/{k}"), out),
                    }
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    refs(v, &format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
    }

    /// Resolves a local `$ref` such as `#/components/schemas/Money`.
    fn resolve<'a>(doc: &'a Value, target: &str) -> Option<&'a Value> {
        let pointer = target.strip_prefix('#')?;
        pointer
            .starts_with("/components/")
            .then(|| doc.pointer(pointer))
            .flatten()
    }

    /// The `(path, method)` pairs of the route table in `api/mod.rs`, with the prefixes of the
    /// `web::scope`s they sit in (less `/api/v1`, which the document's server URL carries).
    fn route_table() -> BTreeSet<(String, String)> {
        // rustfmt may break a call over lines: compare without whitespace.
        let text: String = include_str!("mod.rs").split_whitespace().collect();
        let mut routes = BTreeSet::new();
        // Open scopes as (prefix, depth of the call the scope is an argument of): a scope's
        // routes are chained on it inside that call, e.g. `.service(web::scope("/x").route(..))`.
        let mut scopes: Vec<(String, usize)> = Vec::new();
        let mut depth = 0usize;
        let mut rest = text.as_str();
        while let Some(c) = rest.chars().next() {
            if let Some(after) = rest.strip_prefix("web::scope(\"") {
                let (prefix, _) = after
                    .split_once('"')
                    .expect("a closing quote after the scope");
                scopes.push((prefix.to_string(), depth));
            } else if let Some(after) = rest.strip_prefix(".route(\"") {
                let (path, tail) = after
                    .split_once('"')
                    .expect("a closing quote after the path");
                let tail = tail
                    .strip_prefix(",web::")
                    .expect("web::<method>() after the route path");
                let method: String = tail
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                assert!(
                    METHODS.contains(&method.as_str()),
                    "unexpected route method web::{method}() for {path}"
                );
                let full: String =
                    scopes.iter().map(|(p, _)| p.as_str()).collect::<String>() + path;
                let relative = full.strip_prefix("/api/v1").unwrap_or(&full).to_string();
                routes.insert((relative, method));
            }
            match c {
                '(' => depth += 1,
                ')' => {
                    if scopes.last().is_some_and(|(_, d)| *d == depth) {
                        scopes.pop();
                    }
                    depth = depth.saturating_sub(1);
                }
                _ => {}
            }
            rest = &rest[c.len_utf8()..];
        }
        routes
    }

    fn documented(doc: &Value) -> BTreeSet<(String, String)> {
        let paths = doc["paths"].as_object().expect("paths is an object");
        paths
            .iter()
            .flat_map(|(path, item)| {
                let ops = item.as_object().expect("a path item is an object");
                ops.keys()
                    .filter(|k| METHODS.contains(&k.as_str()))
                    .map(move |m| (path.clone(), m.clone()))
            })
            .collect()
    }

    fn operations(doc: &Value) -> Vec<(String, String, &Value)> {
        documented(doc)
            .into_iter()
            .map(|(p, m)| (p.clone(), m.clone(), &doc["paths"][&p][&m]))
            .collect()
    }

    #[test]
    fn document_is_json_openapi_3_0_3_and_every_ref_resolves() {
        let text = spec().to_string();
        let doc: Value = serde_json::from_str(&text).expect("the document parses as JSON");
        assert_eq!(doc["openapi"], "3.0.3");
        assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
        let mut found = Vec::new();
        refs(&doc, "#", &mut found);
        assert!(
            found.len() > 50,
            "expected many $refs, found {}",
            found.len()
        );
        for (at, target) in found {
            assert!(
                resolve(&doc, target).is_some(),
                "{at}: $ref '{target}' does not resolve to a component"
            );
        }
    }

    #[test]
    fn every_route_is_documented_and_nothing_else() {
        let routes = route_table();
        assert!(
            routes.len() >= 17,
            "the route table parser found only {routes:?}"
        );
        let doc = spec();
        let documented = documented(&doc);
        let missing: Vec<_> = routes.difference(&documented).collect();
        assert!(
            missing.is_empty(),
            "routes without documentation: {missing:?}"
        );
        let stale: Vec<_> = documented.difference(&routes).collect();
        assert!(
            stale.is_empty(),
            "documented operations that are not routes: {stale:?}"
        );
    }

    #[test]
    fn operations_are_complete() {
        let doc = spec();
        let tags: BTreeSet<&str> = doc["tags"]
            .as_array()
            .expect("tags")
            .iter()
            .filter_map(|t| t["name"].as_str())
            .collect();
        let schemes = doc["components"]["securitySchemes"]
            .as_object()
            .expect("security schemes");
        let mut ids = BTreeSet::new();
        for (path, method, op) in operations(&doc) {
            let name = format!("{} {path}", method.to_uppercase());
            let id = op["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: no operationId"));
            assert!(
                ids.insert(id.to_string()),
                "{name}: duplicate operationId {id}"
            );
            assert!(op["summary"].is_string(), "{name}: no summary");
            let op_tags = op["tags"]
                .as_array()
                .unwrap_or_else(|| panic!("{name}: no tags"));
            assert!(
                !op_tags.is_empty()
                    && op_tags
                        .iter()
                        .all(|t| t.as_str().is_some_and(|t| tags.contains(t))),
                "{name}: undeclared tag"
            );
            for requirement in op["security"]
                .as_array()
                .unwrap_or_else(|| panic!("{name}: no security"))
            {
                for scheme in requirement
                    .as_object()
                    .expect("a security requirement is an object")
                    .keys()
                {
                    assert!(
                        schemes.contains_key(scheme),
                        "{name}: unknown security scheme {scheme}"
                    );
                }
            }
            let responses = op["responses"]
                .as_object()
                .unwrap_or_else(|| panic!("{name}: no responses"));
            assert!(
                responses
                    .keys()
                    .any(|s| s.starts_with('1') || s.starts_with('2')),
                "{name}: no success response"
            );
            for (status, res) in responses {
                assert!(
                    status.len() == 3 && status.chars().all(|c| c.is_ascii_digit()),
                    "{name}: bad status {status}"
                );
                let res = match res.get("$ref").and_then(Value::as_str) {
                    Some(target) => {
                        resolve(&doc, target).unwrap_or_else(|| panic!("{name}: {target}"))
                    }
                    None => res,
                };
                assert!(
                    res["description"].is_string(),
                    "{name} {status}: no description"
                );
            }
            // Every `{placeholder}` is a required path parameter, and there are no others.
            let placeholders: BTreeSet<String> = path
                .split('/')
                .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
                .map(str::to_string)
                .collect();
            let mut path_params = BTreeSet::new();
            for p in op["parameters"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                let p = match p.get("$ref").and_then(Value::as_str) {
                    Some(target) => {
                        resolve(&doc, target).unwrap_or_else(|| panic!("{name}: {target}"))
                    }
                    None => p,
                };
                assert!(
                    p["name"].is_string() && p["in"].is_string() && p["schema"].is_object(),
                    "{name}: incomplete parameter {p}"
                );
                if p["in"] == "path" {
                    assert_eq!(p["required"], true, "{name}: path parameter not required");
                    path_params.insert(p["name"].as_str().unwrap_or_default().to_string());
                }
            }
            assert_eq!(placeholders, path_params, "{name}: path parameters");
        }
    }

    #[test]
    fn bodies_carry_no_price_and_quantities_are_bounded() {
        let doc = spec();
        let schemas = &doc["components"]["schemas"];
        for body in ["AddLine", "SetQuantity"] {
            let props = schemas[body]["properties"].as_object().expect("properties");
            assert!(
                props
                    .keys()
                    .all(|k| !k.contains("price") && !k.contains("total")),
                "{body} has a price field"
            );
            assert_eq!(props["quantity"]["minimum"], 1);
            assert_eq!(props["quantity"]["maximum"], 999);
            assert_eq!(schemas[body]["additionalProperties"], false);
        }
        assert_eq!(
            doc["components"]["responses"]["TooManyRequests"]["headers"]["Retry-After"]["$ref"],
            "#/components/headers/RetryAfter"
        );
    }

    #[actix_web::test]
    async fn served_as_json() {
        let res = document().await;
        assert_eq!(res.status(), actix_web::http::StatusCode::OK);
        assert_eq!(
            res.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/json")
        );
        let bytes = actix_web::body::to_bytes(res.into_body())
            .await
            .expect("a body");
        let doc: Value = serde_json::from_slice(&bytes).expect("JSON");
        assert_eq!(doc, spec());
    }
}
