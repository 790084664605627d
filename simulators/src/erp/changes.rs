//! Changes made through `POST /test/changes` (and by `--change-every`): each one appends the
//! entities it touches to their feed's log with their version one higher (a new price key or a
//! movement is a new entity at version 1).
//!
//! A batch is checked whole before anything is applied, so a refused batch changes nothing;
//! the checks that depend on earlier changes of the same batch (stock on hand, movement ids,
//! ended promotions) follow the batch in order.

use super::catalog::{ean13_valid, Delta, Rng};
use super::log::{Row, Store};
use actix_web::http::StatusCode;
use protocol::feed::{FeedKind, PriceRow};
use protocol::{Currency, Money};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};

/// The most changes in one request.
pub(crate) const MAX_BATCH: usize = 10_000;

/// One change.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum Change {
    /// Sets the price of a key `(sku, price_list, currency, valid_from)`, adding the key when
    /// it is new.
    SetPrice {
        sku: String,
        price: String,
        #[serde(default = "retail")]
        price_list: String,
        #[serde(default = "eur")]
        currency: String,
        #[serde(default)]
        valid_from: String,
        #[serde(default)]
        valid_until: String,
        #[serde(default)]
        compare_at: String,
    },
    /// Changes fields of one variant (`sku`) or of every variant of a product (`product`).
    UpdateProduct {
        #[serde(default)]
        sku: Option<String>,
        #[serde(default)]
        product: Option<String>,
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        description: Option<String>,
        #[serde(default)]
        brand: Option<String>,
        #[serde(default)]
        category: Option<String>,
        #[serde(default)]
        category_name: Option<String>,
        #[serde(default)]
        variant_title: Option<String>,
        #[serde(default)]
        tax_class: Option<String>,
        #[serde(default)]
        barcode: Option<String>,
        #[serde(default)]
        weight_grams: Option<u32>,
        #[serde(default)]
        attributes: Option<String>,
        #[serde(default)]
        price: Option<String>,
        #[serde(default)]
        currency: Option<String>,
        #[serde(default)]
        active: Option<bool>,
    },
    /// Sets the absolute level of a SKU at a location.
    SetStock {
        sku: String,
        location: String,
        quantity: i64,
    },
    /// Adds a movement; `movement` defaults to the next free `MV-` id.
    StockDelta {
        sku: String,
        location: String,
        quantity: i64,
        #[serde(default)]
        movement: Option<String>,
    },
    /// Ends a promotion (`active` becomes `false`).
    EndPromotion { id: String },
    /// Changes a coupon's limits or expiry (`""` clears one).
    UpdateCoupon {
        code: String,
        #[serde(default)]
        max_uses: Option<String>,
        #[serde(default)]
        max_uses_per_customer: Option<String>,
        #[serde(default)]
        expires_at: Option<String>,
    },
}

fn retail() -> String {
    "retail".into()
}

fn eur() -> String {
    "EUR".into()
}

/// What a change did to one entity.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Applied {
    pub feed: FeedKind,
    /// A readable key: a SKU, `sku/list/currency/valid_from`, `sku@location`, a movement id, a
    /// promotion id or a coupon code.
    pub key: String,
    pub version: u32,
    pub sequence: u64,
}

/// Why a batch was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

fn refuse(status: StatusCode, code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        code,
        message: message.into(),
    }
}

fn invalid(code: &'static str, message: impl Into<String>) -> Refusal {
    refuse(StatusCode::UNPROCESSABLE_ENTITY, code, message)
}

/// What the checks of a batch carry from one change to the next.
#[derive(Default)]
struct Pending {
    on_hand: HashMap<u32, i64>,
    movements: HashSet<String>,
    ended: HashSet<String>,
}

/// Checks every change, then applies them in order.
pub(crate) fn apply(store: &mut Store, changes: Vec<Change>) -> Result<Vec<Applied>, Refusal> {
    if changes.is_empty() || changes.len() > MAX_BATCH {
        return Err(invalid(
            "bad_batch",
            format!("Send 1 to {MAX_BATCH} changes."),
        ));
    }
    let mut pending = Pending::default();
    for (i, change) in changes.iter().enumerate() {
        check(store, change, &mut pending).map_err(|r| Refusal {
            message: format!("change {i}: {}", r.message),
            ..r
        })?;
    }
    Ok(changes
        .into_iter()
        .flat_map(|change| apply_one(store, change))
        .collect())
}

fn variant(store: &Store, sku: &str) -> Result<u32, Refusal> {
    store.catalog.variant_by_sku(sku).ok_or_else(|| {
        refuse(
            StatusCode::NOT_FOUND,
            "unknown_sku",
            format!("No SKU '{sku}' in the catalog."),
        )
    })
}

fn location(store: &Store, location: &str) -> Result<u16, Refusal> {
    store.catalog.location_index(location).ok_or_else(|| {
        invalid(
            "unknown_location",
            format!(
                "No location '{location}': the locations are {}.",
                store.catalog.locations.join(", ")
            ),
        )
    })
}

fn currency(code: &str) -> Result<Currency, Refusal> {
    match Currency::parse(code) {
        Ok(c) if c.code() == code => Ok(c),
        _ => Err(invalid(
            "bad_currency",
            format!("'{code}' is not a currency: use an upper-case ISO 4217 code such as EUR."),
        )),
    }
}

fn amount(text: &str, currency: Currency, field: &str) -> Result<(), Refusal> {
    match Money::parse_decimal(text, currency) {
        Ok(m) if m.minor >= 0 && !text.trim().is_empty() && text.trim() == text => Ok(()),
        _ => Err(invalid(
            "bad_price",
            format!(
                "{field} '{text}' is not an amount in {currency}: use a decimal such as 12.90 with at most {} decimals.",
                currency.exponent()
            ),
        )),
    }
}

fn timestamp(text: &str, field: &str) -> Result<(), Refusal> {
    if text.is_empty() || humantime::parse_rfc3339(text).is_ok() {
        Ok(())
    } else {
        Err(invalid(
            "bad_time",
            format!("{field} '{text}' is not a UTC RFC 3339 time such as 2026-11-26T00:00:00Z."),
        ))
    }
}

fn slug(text: &str, field: &str) -> Result<(), Refusal> {
    let ok = (1..=64).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "bad_field",
            format!("{field} '{text}' must be 1 to 64 of a-z, 0-9 and '-'."),
        ))
    }
}

fn text(value: &str, field: &str, max: usize, required: bool) -> Result<(), Refusal> {
    if (required && value.trim().is_empty()) || value.chars().count() > max {
        let need = if required { "1 to" } else { "at most" };
        return Err(invalid(
            "bad_field",
            format!("{field} must be {need} {max} characters."),
        ));
    }
    Ok(())
}

fn count_text(value: &str, field: &str) -> Result<(), Refusal> {
    if value.is_empty() || value.parse::<u32>().is_ok() {
        Ok(())
    } else {
        Err(invalid(
            "bad_field",
            format!("{field} must be a whole number, or empty for no limit."),
        ))
    }
}

fn check(store: &Store, change: &Change, pending: &mut Pending) -> Result<(), Refusal> {
    match change {
        Change::SetPrice {
            sku,
            price,
            price_list,
            currency: code,
            valid_from,
            valid_until,
            compare_at,
        } => {
            variant(store, sku)?;
            slug(price_list, "price_list")?;
            let c = currency(code)?;
            amount(price, c, "price")?;
            if !compare_at.is_empty() {
                amount(compare_at, c, "compare_at")?;
            }
            timestamp(valid_from, "valid_from")?;
            timestamp(valid_until, "valid_until")?;
            if !valid_from.is_empty() && !valid_until.is_empty() && valid_until <= valid_from {
                return Err(invalid("bad_time", "valid_until must be after valid_from."));
            }
            Ok(())
        }
        Change::UpdateProduct { .. } => check_product(store, change),
        Change::SetStock {
            sku,
            location: at,
            quantity,
        } => {
            let level = store.level_entity(variant(store, sku)?, location(store, at)?);
            if *quantity < 0 || *quantity > i64::from(i32::MAX) {
                return Err(invalid("bad_quantity", "A level is 0 or more."));
            }
            pending.on_hand.insert(level, *quantity);
            Ok(())
        }
        Change::StockDelta {
            sku,
            location: at,
            quantity,
            movement,
        } => {
            let level = store.level_entity(variant(store, sku)?, location(store, at)?);
            if *quantity == 0 || quantity.abs() > i64::from(i32::MAX) {
                return Err(invalid(
                    "bad_quantity",
                    "A delta is a non-zero number of units.",
                ));
            }
            if let Some(id) = movement {
                text(id, "movement", 64, true)?;
                if store.movement_taken(id) || !pending.movements.insert(id.clone()) {
                    return Err(refuse(
                        StatusCode::CONFLICT,
                        "movement_taken",
                        format!("Movement '{id}' exists already: movement ids are unique."),
                    ));
                }
            }
            let on_hand = pending
                .on_hand
                .entry(level)
                .or_insert_with(|| store.on_hand(level));
            if *on_hand + quantity < 0 {
                return Err(refuse(
                    StatusCode::CONFLICT,
                    "beyond_on_hand",
                    format!("{sku} has {on_hand} on hand at {at}: a delta of {quantity} would take it below zero (the bad_rows fault negative_delta serves such rows)."),
                ));
            }
            *on_hand += quantity;
            Ok(())
        }
        Change::EndPromotion { id } => {
            let entity = store
                .stored_entity(FeedKind::Promotions, id)
                .ok_or_else(|| {
                    refuse(
                        StatusCode::NOT_FOUND,
                        "unknown_promotion",
                        format!("No promotion '{id}'."),
                    )
                })?;
            let active = matches!(store.current(FeedKind::Promotions, entity), Some(Row::Promotion(p)) if p.active == "true");
            if !active || !pending.ended.insert(id.clone()) {
                return Err(refuse(
                    StatusCode::CONFLICT,
                    "already_ended",
                    format!("Promotion '{id}' has ended already."),
                ));
            }
            Ok(())
        }
        Change::UpdateCoupon {
            code,
            max_uses,
            max_uses_per_customer,
            expires_at,
        } => {
            store
                .stored_entity(FeedKind::Coupons, code)
                .ok_or_else(|| {
                    refuse(
                        StatusCode::NOT_FOUND,
                        "unknown_coupon",
                        format!("No coupon '{code}'."),
                    )
                })?;
            if max_uses.is_none() && max_uses_per_customer.is_none() && expires_at.is_none() {
                return Err(invalid(
                    "empty_update",
                    "Give max_uses, max_uses_per_customer or expires_at.",
                ));
            }
            count_text(max_uses.as_deref().unwrap_or(""), "max_uses")?;
            count_text(
                max_uses_per_customer.as_deref().unwrap_or(""),
                "max_uses_per_customer",
            )?;
            timestamp(expires_at.as_deref().unwrap_or(""), "expires_at")
        }
    }
}

fn check_product(store: &Store, change: &Change) -> Result<(), Refusal> {
    let Change::UpdateProduct {
        sku,
        product,
        name,
        description,
        brand,
        category,
        category_name,
        variant_title,
        tax_class,
        barcode,
        weight_grams,
        attributes,
        price,
        currency: code,
        active,
    } = change
    else {
        return Ok(());
    };
    let first = match (sku, product) {
        (Some(sku), None) => variant(store, sku)?,
        (None, Some(product)) => {
            let variants = store.product_entities(product).ok_or_else(|| {
                refuse(
                    StatusCode::NOT_FOUND,
                    "unknown_product",
                    format!("No product '{product}' in the catalog."),
                )
            })?;
            if variant_title.is_some()
                || barcode.is_some()
                || weight_grams.is_some()
                || price.is_some()
            {
                return Err(invalid(
                    "variant_field",
                    "variant_title, barcode, weight_grams and price belong to one variant: give its sku.",
                ));
            }
            variants.start
        }
        _ => return Err(invalid("bad_target", "Give either sku or product.")),
    };
    let given = [
        name,
        description,
        brand,
        category,
        category_name,
        variant_title,
        tax_class,
        barcode,
        attributes,
        price,
        code,
    ]
    .iter()
    .any(|f| f.is_some())
        || weight_grams.is_some()
        || active.is_some();
    if !given {
        return Err(invalid(
            "empty_update",
            "Give at least one field to change.",
        ));
    }
    if let Some(v) = name {
        text(v, "name", 200, true)?;
    }
    if let Some(v) = description {
        text(v, "description", 2_000, false)?;
    }
    if let Some(v) = brand {
        text(v, "brand", 100, false)?;
    }
    if let Some(v) = category {
        slug(v, "category")?;
    }
    if let Some(v) = category_name {
        text(v, "category_name", 100, false)?;
    }
    if let Some(v) = variant_title {
        text(v, "variant_title", 100, false)?;
    }
    if let Some(v) = tax_class {
        if !matches!(v.as_str(), "standard" | "reduced" | "zero") {
            return Err(invalid(
                "bad_field",
                "tax_class is standard, reduced or zero.",
            ));
        }
    }
    if let Some(v) = barcode {
        if !v.is_empty() && !ean13_valid(v) {
            return Err(invalid(
                "bad_barcode",
                format!("'{v}' is not an EAN-13 with a valid check digit."),
            ));
        }
    }
    if let Some(v) = attributes {
        let pairs_ok = v.is_empty()
            || v.split(';').all(|pair| {
                pair.split_once('=')
                    .is_some_and(|(k, _)| !k.trim().is_empty())
            });
        if !pairs_ok {
            return Err(invalid(
                "bad_field",
                "attributes are key=value pairs separated by ';'.",
            ));
        }
    }
    if price.is_some() || code.is_some() {
        let Some(Row::Product(row)) = store.current(FeedKind::Products, first) else {
            return Err(invalid("unknown_sku", "The variant has no row."));
        };
        let c = currency(code.as_deref().unwrap_or(&row.currency))?;
        amount(price.as_deref().unwrap_or(&row.price), c, "price")?;
    }
    Ok(())
}

fn applied(store: &Store, feed: FeedKind, entity: u32, (version, sequence): (u32, u64)) -> Applied {
    Applied {
        feed,
        key: store.key(feed, entity),
        version,
        sequence,
    }
}

/// Applies a checked change.
fn apply_one(store: &mut Store, change: Change) -> Vec<Applied> {
    match change {
        Change::SetPrice {
            sku,
            price,
            price_list,
            currency,
            valid_from,
            valid_until,
            compare_at,
        } => {
            let Some(variant) = store.catalog.variant_by_sku(&sku) else {
                return Vec::new();
            };
            let row = PriceRow {
                sku,
                price_list,
                currency,
                price,
                compare_at,
                valid_from,
                valid_until,
                version: String::new(),
            };
            let existing =
                store.price_entity(variant, &row.price_list, &row.currency, &row.valid_from);
            let (entity, done) = match existing {
                Some(entity) => (entity, store.put(FeedKind::Prices, entity, Row::Price(row))),
                None => {
                    let (entity, seq) = store.add_price(variant, row);
                    (entity, (1, seq))
                }
            };
            vec![applied(store, FeedKind::Prices, entity, done)]
        }
        Change::UpdateProduct { .. } => update_product(store, change),
        Change::SetStock {
            sku,
            location,
            quantity,
        } => {
            let (Some(variant), Some(at)) = (
                store.catalog.variant_by_sku(&sku),
                store.catalog.location_index(&location),
            ) else {
                return Vec::new();
            };
            let done = store.set_level(variant, at, quantity);
            vec![applied(
                store,
                FeedKind::Stock,
                store.level_entity(variant, at),
                done,
            )]
        }
        Change::StockDelta {
            sku,
            location,
            quantity,
            movement,
        } => {
            let (Some(variant), Some(at)) = (
                store.catalog.variant_by_sku(&sku),
                store.catalog.location_index(&location),
            ) else {
                return Vec::new();
            };
            let movement = movement.unwrap_or_else(|| store.next_movement_id());
            let key = movement.clone();
            let sequence = store.add_delta(Delta {
                variant,
                location: at,
                quantity,
                movement,
            });
            vec![Applied {
                feed: FeedKind::Stock,
                key,
                version: 1,
                sequence,
            }]
        }
        Change::EndPromotion { id } => store
            .stored_entity(FeedKind::Promotions, &id)
            .and_then(|entity| {
                append_edit(store, FeedKind::Promotions, entity, |row| {
                    let Row::Promotion(mut row) = row else {
                        return None;
                    };
                    row.active = "false".into();
                    Some(Row::Promotion(row))
                })
            })
            .into_iter()
            .collect(),
        Change::UpdateCoupon {
            code,
            max_uses,
            max_uses_per_customer,
            expires_at,
        } => store
            .stored_entity(FeedKind::Coupons, &code)
            .and_then(|entity| {
                append_edit(store, FeedKind::Coupons, entity, |row| {
                    let Row::Coupon(mut row) = row else {
                        return None;
                    };
                    set(&mut row.max_uses, max_uses);
                    set(&mut row.max_uses_per_customer, max_uses_per_customer);
                    set(&mut row.expires_at, expires_at);
                    Some(Row::Coupon(row))
                })
            })
            .into_iter()
            .collect(),
    }
}

/// Appends the next version of `entity`'s current row in `feed` as `edit` changes it (`edit`
/// answers `None` for a row of another kind, and nothing is appended).
fn append_edit(
    store: &mut Store,
    feed: FeedKind,
    entity: u32,
    edit: impl FnOnce(Row) -> Option<Row>,
) -> Option<Applied> {
    let row = edit(store.current(feed, entity)?)?;
    let done = store.put(feed, entity, row);
    Some(applied(store, feed, entity, done))
}

fn set(field: &mut String, value: Option<String>) {
    if let Some(value) = value {
        *field = value;
    }
}

fn update_product(store: &mut Store, change: Change) -> Vec<Applied> {
    let Change::UpdateProduct {
        sku,
        product,
        name,
        description,
        brand,
        category,
        category_name,
        variant_title,
        tax_class,
        barcode,
        weight_grams,
        attributes,
        price,
        currency,
        active,
    } = change
    else {
        return Vec::new();
    };
    let targets = match (sku, product) {
        (Some(sku), _) => store.catalog.variant_by_sku(&sku).map(|v| v..v + 1),
        (None, Some(product)) => store.product_entities(&product),
        (None, None) => None,
    };
    let mut done = Vec::new();
    for entity in targets.into_iter().flatten() {
        done.extend(append_edit(store, FeedKind::Products, entity, |row| {
            let Row::Product(mut row) = row else {
                return None;
            };
            set(&mut row.name, name.clone());
            set(&mut row.description, description.clone());
            set(&mut row.brand, brand.clone());
            set(&mut row.category, category.clone());
            set(&mut row.category_name, category_name.clone());
            set(&mut row.variant_title, variant_title.clone());
            set(&mut row.tax_class, tax_class.clone());
            set(&mut row.barcode, barcode.clone());
            set(&mut row.weight_grams, weight_grams.map(|w| w.to_string()));
            set(&mut row.attributes, attributes.clone());
            set(&mut row.price, price.clone());
            set(&mut row.currency, currency.clone());
            set(&mut row.active, active.map(|a| a.to_string()));
            Some(Row::Product(row))
        }));
    }
    done
}

/// A plausible change for `--change-every`: a new retail price (±5–15 %) or a stock movement.
pub(crate) fn random_change(store: &Store, rng: &mut Rng) -> Change {
    let catalog = &store.catalog;
    let variant = rng.below(catalog.variants() as usize) as u32;
    let sku = catalog.sku(variant);
    if rng.one_in(2) {
        let minor = match store.current(
            FeedKind::Prices,
            store
                .price_entity(variant, "retail", "EUR", "")
                .unwrap_or(0),
        ) {
            Some(Row::Price(r)) => {
                Money::parse_decimal(&r.price, Currency::EUR).map_or(990, |m| m.minor)
            }
            _ => 990,
        };
        let percent = if rng.one_in(2) {
            100 + rng.between(5, 15)
        } else {
            100 - rng.between(5, 15)
        };
        let minor = (minor * percent / 100 / 10 * 10).max(10);
        return Change::SetPrice {
            sku,
            price: Money::new(minor, Currency::EUR).to_decimal_string(),
            price_list: retail(),
            currency: eur(),
            valid_from: String::new(),
            valid_until: String::new(),
            compare_at: String::new(),
        };
    }
    let at = rng.below(catalog.locations.len()) as u16;
    let on_hand = store.on_hand(store.level_entity(variant, at));
    let quantity = if on_hand > 0 && rng.one_in(3) {
        -1
    } else {
        rng.between(1, 12)
    };
    Change::StockDelta {
        sku,
        location: catalog.locations[usize::from(at)].clone(),
        quantity,
        movement: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::erp::catalog::Catalog;

    fn store() -> Store {
        let locations = ["online", "store-berlin"].map(str::to_owned).to_vec();
        Store::new(Catalog::new(5, 12, locations, 1_800_000_000), 3)
    }

    fn parse(json: &str) -> Change {
        serde_json::from_str(json).expect("a change")
    }

    #[test]
    fn changes_parse_and_unknown_fields_are_refused() {
        assert!(matches!(
            parse(r#"{"type":"set_price","sku":"ERP-000001-1","price":"9.90"}"#),
            Change::SetPrice { ref price_list, ref currency, .. } if price_list == "retail" && currency == "EUR"
        ));
        assert!(
            serde_json::from_str::<Change>(r#"{"type":"end_promotion","id":"X","oops":1}"#)
                .is_err()
        );
        assert!(serde_json::from_str::<Change>(r#"{"type":"explode"}"#).is_err());
    }

    #[test]
    fn a_refused_batch_changes_nothing() {
        let mut s = store();
        let head = s.head(FeedKind::Prices);
        let batch = vec![
            parse(r#"{"type":"set_price","sku":"ERP-000001-1","price":"9.90"}"#),
            parse(r#"{"type":"set_price","sku":"ERP-000001-1","price":"9,90"}"#),
        ];
        let refusal = apply(&mut s, batch).expect_err("a bad price");
        assert_eq!(
            (refusal.code, refusal.status),
            ("bad_price", StatusCode::UNPROCESSABLE_ENTITY)
        );
        assert!(refusal.message.starts_with("change 1:"));
        assert_eq!(s.head(FeedKind::Prices), head);
    }

    #[test]
    fn deltas_in_a_batch_are_checked_against_each_other() {
        let mut s = store();
        let set =
            parse(r#"{"type":"set_stock","sku":"ERP-000002-1","location":"online","quantity":3}"#);
        let take = parse(
            r#"{"type":"stock_delta","sku":"ERP-000002-1","location":"online","quantity":-2}"#,
        );
        let refusal =
            apply(&mut s, vec![set.clone(), take.clone(), take.clone()]).expect_err("beyond");
        assert_eq!(refusal.code, "beyond_on_hand");
        let done = apply(&mut s, vec![set, take]).expect("within on hand");
        assert_eq!(done.len(), 2);
        assert_eq!(
            s.on_hand(s.level_entity(s.catalog.variant_by_sku("ERP-000002-1").unwrap_or(0), 0)),
            1
        );
        let again = format!(
            r#"{{"type":"stock_delta","sku":"ERP-000002-1","location":"online","quantity":1,"movement":"{}"}}"#,
            done[1].key
        );
        assert_eq!(
            apply(&mut s, vec![parse(&again)]).expect_err("taken").code,
            "movement_taken"
        );
    }

    #[test]
    fn a_product_update_bumps_every_variant() {
        let mut s = store();
        let variants = s.product_entities("ERP-000003").expect("product 3").len();
        let done = apply(
            &mut s,
            vec![parse(
                r#"{"type":"update_product","product":"ERP-000003","name":"New name"}"#,
            )],
        )
        .expect("renamed");
        assert_eq!(done.len(), variants);
        assert!(done
            .iter()
            .all(|a| a.version == 2 && a.feed == FeedKind::Products));
        let refusal = apply(
            &mut s,
            vec![parse(
                r#"{"type":"update_product","product":"ERP-000003","price":"1.00"}"#,
            )],
        )
        .expect_err("a variant field");
        assert_eq!(refusal.code, "variant_field");
    }

    #[test]
    fn random_changes_are_valid() {
        let mut s = store();
        let mut rng = Rng::new(1, 9, 0);
        for _ in 0..200 {
            let change = random_change(&s, &mut rng);
            apply(&mut s, vec![change]).expect("a valid random change");
        }
    }
}
