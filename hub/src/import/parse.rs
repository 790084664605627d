//! Feed bodies into [`Row`]s, numbered from 1 among the data rows.
//!
//! - JSON: `{"rows": [{...}, ...]}` — a pulled [`protocol::feed::FeedPage`] has this shape too.
//!   Values are strings; numbers and booleans are read as their text, `null` as absent. A row
//!   that is not an object, or a value that is an array or an object, makes that row a
//!   [`RowError`]; the other rows still parse. A body that is not JSON, or has no `rows` array,
//!   is unreadable as a whole ([`BodyError`]).
//! - CSV: the first record is the header (column names); each further record is a row. A record
//!   with another number of fields than the header, or with bytes that are not UTF-8, is a
//!   [`RowError`] for that row (with its line); the other rows still parse. A header with a
//!   duplicate or empty column name is unreadable as a whole.
//! - Unknown columns (names the feed does not have, see [`FeedKind::columns`]) are ignored and
//!   reported once each, as a warning of row 0 (the header): a newer ERP may send more than
//!   this hub knows, and the rows still apply.

use super::{Row, RowError};
use protocol::feed::FeedKind;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// The largest body the importer reads (64 MiB): a push above it gets 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// A body that cannot be read as rows at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("the body is not JSON: {0}")]
    Json(String),
    #[error("the JSON body must be an object with a \"rows\" array: {{\"rows\": [{{...}}]}}")]
    NoRows,
    #[error("the body is a page of the {found} feed, sent to the {expected} import")]
    WrongFeed { expected: FeedKind, found: String },
    #[error("the CSV header is unreadable: {0}")]
    Header(String),
}

/// Rows read from a body, with the rows that could not be read and remarks about the header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    pub rows: Vec<Row>,
    /// Rows that could not be read (one error each).
    pub errors: Vec<RowError>,
    /// Unknown columns, as row 0.
    pub warnings: Vec<RowError>,
    /// Data records seen (rows + unreadable rows): the highest row number.
    pub records: u64,
}

fn unknown_column(feed: FeedKind, name: &str) -> RowError {
    RowError {
        row: 0,
        field: name.to_string(),
        reason: format!(
            "unknown column, ignored: the {feed} feed has {}",
            feed.columns().join(", ")
        ),
    }
}

/// Parses a JSON body.
pub fn json(feed: FeedKind, body: &[u8]) -> Result<Parsed, BodyError> {
    let mut value: Value =
        serde_json::from_slice(body).map_err(|e| BodyError::Json(e.to_string()))?;
    let object = value.as_object_mut().ok_or(BodyError::NoRows)?;
    if let Some(found) = object.get("feed") {
        let found = found.as_str().unwrap_or_default();
        if FeedKind::parse(found) != Some(feed) {
            return Err(BodyError::WrongFeed {
                expected: feed,
                found: found.to_string(),
            });
        }
    }
    match object.remove("rows") {
        Some(Value::Array(rows)) => Ok(objects(feed, rows)),
        _ => Err(BodyError::NoRows),
    }
}

/// Rows from JSON values (a body's or a pulled page's `rows`).
pub fn objects(feed: FeedKind, rows: Vec<Value>) -> Parsed {
    let known: BTreeSet<&str> = feed.columns().iter().copied().collect();
    let mut unknown = BTreeSet::new();
    let mut parsed = Parsed {
        records: rows.len() as u64,
        ..Parsed::default()
    };
    parsed.rows.reserve(rows.len());
    for (i, value) in rows.into_iter().enumerate() {
        let number = i as u64 + 1;
        let Value::Object(map) = value else {
            parsed.errors.push(RowError {
                row: number,
                field: String::new(),
                reason: format!("row {number} is not a JSON object of column names to values"),
            });
            continue;
        };
        let mut fields = BTreeMap::new();
        let mut bad = None;
        for (name, v) in map {
            let text = match v {
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                Value::Null => String::new(),
                Value::Array(_) | Value::Object(_) => {
                    bad.get_or_insert(RowError {
                        row: number,
                        field: name.clone(),
                        reason: "must be text or a number, not an array or an object".into(),
                    });
                    continue;
                }
            };
            if !known.contains(name.as_str()) && unknown.insert(name.clone()) {
                parsed.warnings.push(unknown_column(feed, &name));
            }
            fields.insert(name, text);
        }
        match bad {
            Some(e) => parsed.errors.push(e),
            None => parsed.rows.push(Row { number, fields }),
        }
    }
    parsed
}

/// Parses a CSV body (comma-separated, `"` quoting, a header row; a UTF-8 BOM is skipped).
pub fn csv(feed: FeedKind, body: &[u8]) -> Result<Parsed, BodyError> {
    let body = body.strip_prefix(b"\xef\xbb\xbf").unwrap_or(body);
    let mut reader = ::csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(body);
    let header = reader
        .byte_headers()
        .map_err(|e| BodyError::Header(e.to_string()))?
        .clone();
    let mut names = Vec::with_capacity(header.len());
    let mut parsed = Parsed::default();
    let known: BTreeSet<&str> = feed.columns().iter().copied().collect();
    for raw in header.iter() {
        let name = std::str::from_utf8(raw)
            .map_err(|_| BodyError::Header("a column name is not UTF-8 text".into()))?
            .trim()
            .to_string();
        if name.is_empty() && header.len() > 1 {
            return Err(BodyError::Header("a column has no name".into()));
        }
        if names.contains(&name) {
            return Err(BodyError::Header(format!("column '{name}' appears twice")));
        }
        if !name.is_empty() && !known.contains(name.as_str()) {
            parsed.warnings.push(unknown_column(feed, &name));
        }
        names.push(name);
    }
    for (i, record) in reader.byte_records().enumerate() {
        let number = i as u64 + 1;
        parsed.records = number;
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                parsed.errors.push(RowError {
                    row: number,
                    field: String::new(),
                    reason: format!("malformed CSV record: {e}"),
                });
                continue;
            }
        };
        let line = record.position().map_or(0, |p| p.line());
        if record.len() != names.len() {
            parsed.errors.push(RowError {
                row: number,
                field: String::new(),
                reason: format!(
                    "malformed CSV record (line {line}): {} fields where the header has {}; \
                     check the quoting and the commas",
                    record.len(),
                    names.len()
                ),
            });
            continue;
        }
        let mut fields = BTreeMap::new();
        let mut bad = None;
        for (name, raw) in names.iter().zip(record.iter()) {
            match std::str::from_utf8(raw) {
                Ok(text) => {
                    fields.insert(name.clone(), text.to_string());
                }
                Err(_) => {
                    bad.get_or_insert(RowError {
                        row: number,
                        field: name.clone(),
                        reason: format!("not UTF-8 text (line {line}): save the file as UTF-8"),
                    });
                }
            }
        }
        match bad {
            Some(e) => parsed.errors.push(e),
            None => parsed.rows.push(Row { number, fields }),
        }
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field<'a>(p: &'a Parsed, row: usize, name: &str) -> &'a str {
        p.rows[row].get(name)
    }

    #[test]
    fn json_rows_read_strings_numbers_and_booleans_as_text() {
        let body = br#"{"rows": [
            {"sku": "A-1", "quantity": 5, "kind": "level", "version": 3, "movement": null},
            {"sku": "B-1", "quantity": -2.5, "kind": true}
        ]}"#;
        let p = json(FeedKind::Stock, body).expect("parses");
        assert_eq!(p.rows.len(), 2);
        assert_eq!(p.records, 2);
        assert_eq!(field(&p, 0, "quantity"), "5");
        assert_eq!(field(&p, 0, "version"), "3");
        assert_eq!(field(&p, 0, "movement"), "");
        assert_eq!(field(&p, 1, "quantity"), "-2.5");
        assert_eq!(field(&p, 1, "kind"), "true");
        assert_eq!(p.rows[1].number, 2);
        assert!(p.errors.is_empty() && p.warnings.is_empty());
    }

    #[test]
    fn a_bad_json_row_is_an_error_of_that_row_only() {
        let body = br#"{"rows": [{"sku": "A"}, 7, {"sku": ["x"]}, {"sku": "D"}]}"#;
        let p = json(FeedKind::Stock, body).expect("parses");
        let numbers: Vec<u64> = p.rows.iter().map(|r| r.number).collect();
        assert_eq!(numbers, vec![1, 4]);
        let errors: Vec<(u64, &str)> = p.errors.iter().map(|e| (e.row, e.field.as_str())).collect();
        assert_eq!(errors, vec![(2, ""), (3, "sku")]);
        assert_eq!(p.records, 4);
    }

    #[test]
    fn unreadable_json_bodies_are_refused_whole() {
        for (body, expected) in [
            (&b"{not json"[..], "not JSON"),
            (b"[1, 2]", "\"rows\" array"),
            (b"{\"rows\": 5}", "\"rows\" array"),
            (b"{\"items\": []}", "\"rows\" array"),
            (
                b"{\"feed\": \"prices\", \"rows\": []}",
                "page of the prices feed",
            ),
        ] {
            let e = json(FeedKind::Products, body).expect_err("refused");
            assert!(e.to_string().contains(expected), "{e}");
        }
        let page = br#"{"feed": "products", "rows": [{"sku": "A"}], "next_cursor": "c2", "has_more": false}"#;
        assert_eq!(
            json(FeedKind::Products, page).expect("a page").rows.len(),
            1
        );
    }

    #[test]
    fn unknown_columns_are_warned_about_once() {
        let body = br#"{"rows": [{"sku": "A", "colour": "red"}, {"sku": "B", "colour": "blue"}]}"#;
        let p = json(FeedKind::Stock, body).expect("parses");
        assert_eq!(p.rows.len(), 2);
        assert_eq!(p.warnings.len(), 1);
        assert_eq!(
            (p.warnings[0].row, p.warnings[0].field.as_str()),
            (0, "colour")
        );
        let csv_body = b"sku,colour,location\nA,red,online\n";
        let p = csv(FeedKind::Stock, csv_body).expect("parses");
        assert_eq!(p.warnings.len(), 1);
        assert_eq!(p.warnings[0].field, "colour");
        assert!(
            p.warnings[0].reason.contains("movement"),
            "lists the columns"
        );
    }

    #[test]
    fn csv_rows_are_numbered_among_data_rows_and_quoted_fields_keep_commas() {
        let body = b"\xef\xbb\xbfsku,name,price\nA,\"Beans, dark\",12.90\nB,\"Two\nlines\",1\n";
        let p = csv(FeedKind::Products, body).expect("parses");
        assert_eq!(p.rows.len(), 2);
        assert_eq!(field(&p, 0, "sku"), "A", "the BOM is skipped");
        assert_eq!(field(&p, 0, "name"), "Beans, dark");
        assert_eq!(field(&p, 1, "name"), "Two\nlines");
        assert_eq!((p.rows[0].number, p.rows[1].number), (1, 2));
    }

    #[test]
    fn a_malformed_csv_record_is_an_error_of_that_row_only() {
        let body = b"sku,location,quantity\nA,online,1\nB,online\nC,online,3,extra\nD,online,\xff\nE,online,5\n";
        let p = csv(FeedKind::Stock, body).expect("parses");
        let numbers: Vec<u64> = p.rows.iter().map(|r| r.number).collect();
        assert_eq!(numbers, vec![1, 5]);
        let errors: Vec<(u64, &str)> = p.errors.iter().map(|e| (e.row, e.field.as_str())).collect();
        assert_eq!(errors, vec![(2, ""), (3, ""), (4, "quantity")]);
        assert!(
            p.errors[0].reason.contains("line 3"),
            "{}",
            p.errors[0].reason
        );
        assert_eq!(p.records, 5);
    }

    #[test]
    fn bad_csv_headers_are_refused_whole_and_an_empty_body_has_no_rows() {
        assert!(csv(FeedKind::Stock, b"sku,sku\nA,B\n").is_err());
        assert!(csv(FeedKind::Stock, b"sku,,location\nA,B,C\n").is_err());
        assert!(csv(FeedKind::Stock, b"sk\xffu\nA\n").is_err());
        let empty = csv(FeedKind::Stock, b"").expect("empty");
        assert!(empty.rows.is_empty() && empty.errors.is_empty());
        let header_only = csv(FeedKind::Stock, b"sku,location\n").expect("header only");
        assert!(header_only.rows.is_empty());
    }
}
