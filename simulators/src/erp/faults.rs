//! Faults injected through `/test/faults`, all bounded by a count (a delay may also last until
//! cleared):
//!
//! - row faults, on the rows served by `GET /feeds/{feed}` and by pushes: `bad_rows` (the next
//!   `count` rows that fit get corrupted in one way, see [`BadRow`]), `duplicates` (the next
//!   `count` rows are each served twice in a row) and `out_of_order` (after the next `count`
//!   rows of changed entities, their previous version is served again);
//! - response faults, on `GET /feeds/{feed}` only: `delay` (ms before answering), `fail` (the
//!   next `count` requests answer `status`, 500 or 503, without a page) and `reset` (the next
//!   `count` responses break off after the headers and the first bytes, closing the
//!   connection).
//!
//! `POST /test/faults` replaces the sections it names and keeps the others; `DELETE` clears all.
//! A request the simulator refuses (a bad cursor, an unknown feed) consumes no fault.

use protocol::feed::FeedKind;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The largest count a fault takes.
const MAX_COUNT: u64 = 1_000_000;
/// The longest delay.
const MAX_DELAY_MS: u64 = 120_000;

/// The SKU a promotion corrupted by `unknown_sku` refers to; no catalog has it.
pub(crate) const UNKNOWN_SKU: &str = "ERP-UNKNOWN-1";
/// The location a stock row corrupted by `unknown_location` names.
pub(crate) const UNKNOWN_LOCATION: &str = "store-atlantis";
/// What `bad_currency` puts in `currency`.
pub(crate) const BAD_CURRENCY: &str = "EURO";
/// What `non_numeric_price` puts in `price`.
pub(crate) const NON_NUMERIC_PRICE: &str = "twelve";

/// How a bad row is bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum BadRow {
    /// The row's identity column is absent (JSON: no key; CSV: an empty cell): `sku`
    /// (products, prices, stock), `id` (promotions), `code` (coupons).
    MissingField,
    /// `currency` is `EURO` (products, prices).
    BadCurrency,
    /// `price` is `twelve` (products, prices).
    NonNumericPrice,
    /// `barcode`'s check digit is off by one (products).
    InvalidBarcode,
    /// `location` is `store-atlantis` (stock).
    UnknownLocation,
    /// The row becomes a movement taking on hand + 1000 units away: `kind` `delta`,
    /// `quantity` `-(on_hand + 1000)`, `movement` `BAD-{n}` (stock).
    NegativeDelta,
    /// The definition gets one more condition, `{"type": "skus", "skus": ["ERP-UNKNOWN-1"]}`,
    /// a SKU no catalog has (promotions).
    UnknownSku,
    /// The CSV line's second cell is written with broken quoting, `"{value} "unbalanced",
    /// quote"`, so the line has one cell too many (every feed; CSV only: a JSON page leaves
    /// the fault for a CSV one).
    MalformedCsv,
}

impl BadRow {
    /// Whether this corruption applies to rows of `feed`.
    pub(crate) fn fits(self, feed: FeedKind) -> bool {
        use FeedKind::*;
        match self {
            BadRow::MissingField | BadRow::MalformedCsv => true,
            BadRow::BadCurrency | BadRow::NonNumericPrice => matches!(feed, Products | Prices),
            BadRow::InvalidBarcode => feed == Products,
            BadRow::UnknownLocation | BadRow::NegativeDelta => feed == Stock,
            BadRow::UnknownSku => feed == Promotions,
        }
    }

    fn feeds(self) -> String {
        FeedKind::ALL
            .into_iter()
            .filter(|f| self.fits(*f))
            .map(FeedKind::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The column `missing_field` removes.
pub(crate) fn identity_column(feed: FeedKind) -> &'static str {
    match feed {
        FeedKind::Products | FeedKind::Prices | FeedKind::Stock => "sku",
        FeedKind::Promotions => "id",
        FeedKind::Coupons => "code",
    }
}

/// Corrupts a served row (`malformed_csv` is marked by the caller, not here). `on_hand` is
/// what the ERP holds of the row's SKU at its location (for `negative_delta`), `movement` a
/// fresh `BAD-` id.
pub(crate) fn corrupt(
    kind: BadRow,
    feed: FeedKind,
    row: &mut Map<String, Value>,
    on_hand: i64,
    movement: String,
) {
    let barcode = text(row, "barcode");
    let definition = text(row, "definition");
    let mut put = |column: &str, value: String| {
        row.insert(column.to_owned(), Value::String(value));
    };
    match kind {
        BadRow::MissingField => {
            row.remove(identity_column(feed));
        }
        BadRow::BadCurrency => put("currency", BAD_CURRENCY.into()),
        BadRow::NonNumericPrice => put("price", NON_NUMERIC_PRICE.into()),
        BadRow::InvalidBarcode => put("barcode", wrong_check_digit(&barcode)),
        BadRow::UnknownLocation => put("location", UNKNOWN_LOCATION.into()),
        BadRow::NegativeDelta => {
            put("kind", "delta".into());
            put("quantity", (-(on_hand.max(0) + 1000)).to_string());
            put("movement", movement);
        }
        BadRow::UnknownSku => put("definition", with_unknown_sku(&definition)),
        BadRow::MalformedCsv => {}
    }
}

fn text(row: &Map<String, Value>, column: &str) -> String {
    row.get(column)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// A barcode whose last digit is off by one (or a fixed invalid one).
fn wrong_check_digit(barcode: &str) -> String {
    match barcode.len() == 13 && barcode.is_ascii() {
        true => {
            let (body, last) = barcode.split_at(12);
            let last = last.parse::<u32>().map_or(0, |d| (d + 1) % 10);
            format!("{body}{last}")
        }
        false => "4006381333932".to_owned(),
    }
}

/// The definition with a condition on [`UNKNOWN_SKU`] added.
fn with_unknown_sku(definition: &str) -> String {
    let mut value: Value =
        serde_json::from_str(definition).unwrap_or_else(|_| serde_json::json!({}));
    let condition = serde_json::json!({"type": "skus", "skus": [UNKNOWN_SKU]});
    match value.get_mut("conditions").and_then(Value::as_array_mut) {
        Some(conditions) => conditions.push(condition),
        None => value["conditions"] = Value::Array(vec![condition]),
    }
    value.to_string()
}

/// Bad rows waiting to be served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct BadRows {
    pub kind: BadRow,
    /// Only rows of this feed; none: any feed the kind fits.
    pub feed: Option<FeedKind>,
    pub remaining: u64,
}

/// A count of rows to affect, on one feed or any.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub(crate) struct RowFault {
    pub feed: Option<FeedKind>,
    pub remaining: u64,
}

impl RowFault {
    fn take(&mut self, feed: FeedKind) -> bool {
        let fits = self.feed.is_none_or(|f| f == feed);
        take_one(&mut self.remaining, fits)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Delay {
    pub ms: u64,
    /// Requests still delayed; none: until cleared.
    pub remaining: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Fail {
    pub status: u16,
    pub remaining: u64,
}

/// The faults in force.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub(crate) struct ErpFaults {
    pub bad_rows: Vec<BadRows>,
    pub duplicates: RowFault,
    pub out_of_order: RowFault,
    pub delay: Option<Delay>,
    pub fail: Option<Fail>,
    pub reset: u64,
    /// `BAD-` movement ids handed out (kept when the faults are cleared, so ids stay unique).
    #[serde(skip)]
    bad_movements: u64,
}

/// What to do with one `GET /feeds/{feed}` request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ResponseFault {
    pub delay_ms: u64,
    pub fail: Option<u16>,
    pub reset: bool,
}

/// `POST /test/faults`: the sections to replace.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FaultsUpdate {
    bad_rows: Option<Vec<BadRowsSpec>>,
    duplicates: Option<RowFaultSpec>,
    out_of_order: Option<RowFaultSpec>,
    delay: Option<DelaySpec>,
    fail: Option<FailSpec>,
    reset: Option<CountSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BadRowsSpec {
    kind: BadRow,
    count: u64,
    #[serde(default)]
    feed: Option<FeedKind>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RowFaultSpec {
    count: u64,
    #[serde(default)]
    feed: Option<FeedKind>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DelaySpec {
    ms: u64,
    #[serde(default)]
    count: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FailSpec {
    #[serde(default = "internal_error")]
    status: u16,
    count: u64,
}

fn internal_error() -> u16 {
    500
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CountSpec {
    count: u64,
}

fn counted(count: u64, what: &str) -> Result<u64, String> {
    if count > MAX_COUNT {
        return Err(format!("{what}: count is at most {MAX_COUNT}."));
    }
    Ok(count)
}

impl ErpFaults {
    /// Checks a whole update, then replaces the sections it names. `Err` says what to fix; the
    /// faults are then unchanged.
    pub(crate) fn apply(&mut self, update: FaultsUpdate) -> Result<(), String> {
        let mut next = self.clone();
        if let Some(specs) = update.bad_rows {
            next.bad_rows = Vec::new();
            for spec in specs {
                if let Some(feed) = spec.feed.filter(|f| !spec.kind.fits(*f)) {
                    return Err(format!(
                        "bad_rows: {:?} does not apply to {feed} rows (it applies to {}).",
                        spec.kind,
                        spec.kind.feeds()
                    ));
                }
                let remaining = counted(spec.count, "bad_rows")?;
                if remaining > 0 {
                    next.bad_rows.push(BadRows {
                        kind: spec.kind,
                        feed: spec.feed,
                        remaining,
                    });
                }
            }
        }
        for (spec, fault, what) in [
            (update.duplicates, &mut next.duplicates, "duplicates"),
            (update.out_of_order, &mut next.out_of_order, "out_of_order"),
        ] {
            if let Some(spec) = spec {
                *fault = RowFault {
                    feed: spec.feed,
                    remaining: counted(spec.count, what)?,
                };
            }
        }
        if let Some(spec) = update.delay {
            if spec.ms > MAX_DELAY_MS {
                return Err(format!("delay: ms is at most {MAX_DELAY_MS}."));
            }
            let remaining = spec.count.map(|c| counted(c, "delay")).transpose()?;
            next.delay = (spec.ms > 0 && remaining != Some(0)).then_some(Delay {
                ms: spec.ms,
                remaining,
            });
        }
        if let Some(spec) = update.fail {
            if !(500..=599).contains(&spec.status) {
                return Err("fail: status is a 5xx code such as 500 or 503.".into());
            }
            let remaining = counted(spec.count, "fail")?;
            next.fail = (remaining > 0).then_some(Fail {
                status: spec.status,
                remaining,
            });
        }
        if let Some(spec) = update.reset {
            next.reset = counted(spec.count, "reset")?;
        }
        *self = next;
        Ok(())
    }

    /// Clears every fault.
    pub(crate) fn clear(&mut self) {
        *self = ErpFaults {
            bad_movements: self.bad_movements,
            ..ErpFaults::default()
        };
    }

    /// Takes the faults for the next feed request: the delay, then a failure, else a reset.
    pub(crate) fn next_response(&mut self) -> ResponseFault {
        let delay_ms = match &mut self.delay {
            Some(delay) => {
                let ms = delay.ms;
                if let Some(remaining) = &mut delay.remaining {
                    *remaining = remaining.saturating_sub(1);
                    if *remaining == 0 {
                        self.delay = None;
                    }
                }
                ms
            }
            None => 0,
        };
        let fail = match &mut self.fail {
            Some(fail) => {
                let status = fail.status;
                fail.remaining = fail.remaining.saturating_sub(1);
                if fail.remaining == 0 {
                    self.fail = None;
                }
                Some(status)
            }
            None => None,
        };
        let reset = fail.is_none() && take_one(&mut self.reset, true);
        ResponseFault {
            delay_ms,
            fail,
            reset,
        }
    }

    /// The corruption for the next served row of `feed`, if one is due (`malformed_csv` only
    /// when the row is served as CSV).
    pub(crate) fn take_bad_row(&mut self, feed: FeedKind, csv: bool) -> Option<BadRow> {
        let i = self.bad_rows.iter().position(|b| {
            b.kind.fits(feed)
                && b.feed.is_none_or(|f| f == feed)
                && (csv || b.kind != BadRow::MalformedCsv)
        })?;
        let kind = self.bad_rows[i].kind;
        self.bad_rows[i].remaining -= 1;
        if self.bad_rows[i].remaining == 0 {
            self.bad_rows.remove(i);
        }
        Some(kind)
    }

    pub(crate) fn take_duplicate(&mut self, feed: FeedKind) -> bool {
        self.duplicates.take(feed)
    }

    /// Whether to serve a changed entity's previous version after its latest.
    pub(crate) fn take_out_of_order(&mut self, feed: FeedKind) -> bool {
        self.out_of_order.take(feed)
    }

    pub(crate) fn next_bad_movement(&mut self) -> String {
        self.bad_movements += 1;
        format!("BAD-{}", self.bad_movements)
    }

    /// The faults in force, as `(name, value)` for the status page.
    pub(crate) fn active(&self) -> Vec<(String, String)> {
        let mut active: Vec<(String, String)> = self
            .bad_rows
            .iter()
            .map(|b| {
                let feed = b.feed.map_or("any feed".to_owned(), |f| f.to_string());
                (
                    format!("bad_rows {:?} ({feed})", b.kind),
                    b.remaining.to_string(),
                )
            })
            .collect();
        for (name, fault) in [
            ("duplicates", &self.duplicates),
            ("out_of_order", &self.out_of_order),
        ] {
            if fault.remaining > 0 {
                let feed = fault.feed.map_or("any feed".to_owned(), |f| f.to_string());
                active.push((format!("{name} ({feed})"), fault.remaining.to_string()));
            }
        }
        if let Some(d) = &self.delay {
            let until = d
                .remaining
                .map_or("until cleared".to_owned(), |r| format!("{r} more"));
            active.push(("delay".into(), format!("{} ms, {until}", d.ms)));
        }
        if let Some(f) = &self.fail {
            active.push((format!("fail {}", f.status), f.remaining.to_string()));
        }
        if self.reset > 0 {
            active.push(("reset".into(), self.reset.to_string()));
        }
        active
    }
}

fn take_one(counter: &mut u64, fits: bool) -> bool {
    if fits && *counter > 0 {
        *counter -= 1;
        true
    } else {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(json: &str) -> FaultsUpdate {
        serde_json::from_str(json).expect("an update")
    }

    #[test]
    fn a_bad_update_changes_nothing() {
        let mut faults = ErpFaults::default();
        faults
            .apply(update(r#"{"duplicates": {"count": 2}}"#))
            .expect("valid");
        let before = faults.clone();
        let refused = faults.apply(update(
            r#"{"reset": {"count": 1}, "bad_rows": [{"kind": "unknown_location", "count": 1, "feed": "prices"}]}"#,
        ));
        assert!(refused.is_err_and(|e| e.contains("stock")));
        assert_eq!(faults, before);
        assert!(faults
            .apply(update(r#"{"fail": {"status": 404, "count": 1}}"#))
            .is_err());
        assert!(serde_json::from_str::<FaultsUpdate>(r#"{"slow": 1}"#).is_err());
    }

    #[test]
    fn counts_run_out_and_only_fitting_rows_take_a_fault() {
        let mut faults = ErpFaults::default();
        faults
            .apply(update(
                r#"{"bad_rows": [{"kind": "unknown_location", "count": 1}, {"kind": "malformed_csv", "count": 1}],
                    "fail": {"status": 503, "count": 1}, "reset": {"count": 1}, "delay": {"ms": 5, "count": 2}}"#,
            ))
            .expect("valid");
        assert_eq!(faults.take_bad_row(FeedKind::Products, false), None);
        assert_eq!(
            faults.take_bad_row(FeedKind::Products, true),
            Some(BadRow::MalformedCsv)
        );
        assert_eq!(
            faults.take_bad_row(FeedKind::Stock, true),
            Some(BadRow::UnknownLocation)
        );
        assert_eq!(faults.take_bad_row(FeedKind::Stock, true), None);
        let first = faults.next_response();
        assert_eq!(
            (first.delay_ms, first.fail, first.reset),
            (5, Some(503), false)
        );
        let second = faults.next_response();
        assert_eq!(
            (second.delay_ms, second.fail, second.reset),
            (5, None, true)
        );
        assert_eq!(
            faults.next_response(),
            ResponseFault {
                delay_ms: 0,
                fail: None,
                reset: false
            }
        );
        assert!(faults.active().is_empty());
    }

    #[test]
    fn corruptions_do_what_they_say() {
        let mut row = Map::new();
        row.insert("barcode".into(), "4006381333931".into());
        corrupt(
            BadRow::InvalidBarcode,
            FeedKind::Products,
            &mut row,
            0,
            String::new(),
        );
        assert_eq!(row["barcode"], "4006381333932");
        corrupt(
            BadRow::NegativeDelta,
            FeedKind::Stock,
            &mut row,
            7,
            "BAD-1".into(),
        );
        assert_eq!(
            (row["quantity"].as_str(), row["kind"].as_str()),
            (Some("-1007"), Some("delta"))
        );
        row.insert(
            "definition".into(),
            r#"{"benefit":{"type":"free_shipping"}}"#.into(),
        );
        corrupt(
            BadRow::UnknownSku,
            FeedKind::Promotions,
            &mut row,
            0,
            String::new(),
        );
        let definition = row["definition"].as_str().unwrap_or_default();
        let spec = protocol::promotion::PromotionSpec::from_json(definition).expect("a spec");
        let errors = protocol::promotion::validate(&spec, |_| None).expect_err("an unknown SKU");
        assert!(
            errors
                .iter()
                .any(|e| e.field.starts_with("conditions[0].skus")),
            "{errors:?}"
        );
        row.insert("sku".into(), "X".into());
        corrupt(
            BadRow::MissingField,
            FeedKind::Stock,
            &mut row,
            0,
            String::new(),
        );
        assert!(!row.contains_key("sku"));
    }
}
