//! A page of a feed, as pulled (`GET /feeds/{feed}`) or pushed: the live rows after a cursor
//! with the row faults applied, and its JSON and CSV renderings.
//!
//! A page holds at most `limit` log entries; the duplicates and stale versions the faults add
//! come on top.

use super::api::cursor;
use super::faults::{corrupt, BadRow, ErpFaults};
use super::log::{Row, Store};
use protocol::feed::FeedKind;
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

/// What a served row holds: the row as stored (serialised straight from its struct, the fast
/// path), or a map of its columns once a fault changed it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Content {
    Row(Box<Row>),
    Map(Map<String, Value>),
}

/// One row as served.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Served {
    pub content: Content,
    /// Written with broken CSV quoting.
    pub malformed: bool,
}

impl Served {
    fn new(row: Row) -> Served {
        Served {
            content: Content::Row(Box::new(row)),
            malformed: false,
        }
    }

    /// The row as a JSON object of its columns.
    pub(crate) fn map(&self) -> Map<String, Value> {
        match &self.content {
            Content::Row(row) => row.to_map(),
            Content::Map(map) => map.clone(),
        }
    }
}

impl Serialize for Served {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.content {
            Content::Row(row) => row.serialize(serializer),
            Content::Map(map) => map.serialize(serializer),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Page {
    pub feed: FeedKind,
    pub rows: Vec<Served>,
    /// The sequence to continue after.
    pub next: u64,
    pub has_more: bool,
}

impl Page {
    pub(crate) fn next_cursor(&self) -> String {
        cursor(self.next)
    }
}

/// The rows of `feed` after sequence `after`, up to `limit` entries, with the row faults due.
pub(crate) fn build(
    store: &Store,
    faults: &mut ErpFaults,
    feed: FeedKind,
    after: u64,
    limit: usize,
    csv: bool,
) -> Page {
    let scan = store.scan(feed, after, limit);
    let mut rows = Vec::with_capacity(scan.entries.len());
    for entry in &scan.entries {
        let Some(current) = store.current(feed, entry.entity) else {
            continue;
        };
        let mut served = Served::new(current);
        if let Some(kind) = faults.take_bad_row(feed, csv) {
            if kind == BadRow::MalformedCsv {
                served.malformed = true;
            } else {
                let on_hand = match (kind, store.level_of(entry.entity)) {
                    (BadRow::NegativeDelta, Some(level)) => store.on_hand(level),
                    _ => 0,
                };
                let movement = match kind {
                    BadRow::NegativeDelta => faults.next_bad_movement(),
                    _ => String::new(),
                };
                let mut map = served.map();
                corrupt(kind, feed, &mut map, on_hand, movement);
                served.content = Content::Map(map);
            }
        }
        if faults.take_duplicate(feed) {
            rows.push(served.clone());
        }
        rows.push(served);
        if let Some(previous) = store.previous(feed, entry.entity) {
            if faults.take_out_of_order(feed) {
                rows.push(Served::new(previous));
            }
        }
    }
    Page {
        feed,
        rows,
        next: scan.next,
        has_more: scan.has_more,
    }
}

/// A [`protocol::feed::FeedPage`], written without building a map per row.
#[derive(Serialize)]
struct FeedPageOut<'a> {
    feed: FeedKind,
    rows: &'a [Served],
    next_cursor: String,
    has_more: bool,
}

/// The page as a [`protocol::feed::FeedPage`].
pub(crate) fn feed_page_json(page: &Page) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&FeedPageOut {
        feed: page.feed,
        rows: &page.rows,
        next_cursor: page.next_cursor(),
        has_more: page.has_more,
    })
}

/// The rows as a push body, `{"rows": [...]}`.
pub(crate) fn push_json(rows: &[Served]) -> Result<Vec<u8>, serde_json::Error> {
    #[derive(Serialize)]
    struct PushBody<'a> {
        rows: &'a [Served],
    }
    serde_json::to_vec(&PushBody { rows })
}

fn csv_writer(out: Vec<u8>) -> csv::Writer<Vec<u8>> {
    // The header is written from the feed's columns, not from the first row's fields.
    csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(out)
}

/// The rows as CSV: a header with the feed's columns, then one line per row (an absent value
/// is an empty cell).
pub(crate) fn csv(feed: FeedKind, rows: &[Served]) -> Result<Vec<u8>, csv::Error> {
    let columns = feed.columns();
    let mut writer = csv_writer(Vec::new());
    writer.write_record(columns)?;
    for served in rows {
        match (&served.content, served.malformed) {
            // A row struct's fields are the feed's columns, in order.
            (Content::Row(row), false) => writer.serialize(&**row)?,
            _ => {
                let map = served.map();
                let cells: Vec<&str> = columns
                    .iter()
                    .map(|c| map.get(*c).and_then(Value::as_str).unwrap_or(""))
                    .collect();
                if served.malformed {
                    // The writer would quote the cell properly, so the line is written past it.
                    let mut out = writer.into_inner().map_err(|e| e.into_error())?;
                    out.extend_from_slice(malformed_line(&cells).as_bytes());
                    writer = csv_writer(out);
                } else {
                    writer.write_record(&cells)?;
                }
            }
        }
    }
    writer.into_inner().map_err(|e| e.into_error().into())
}

/// A CSV line whose second cell has an unbalanced quote: `"{value} "unbalanced", quote"`
/// reads as one cell too many.
fn malformed_line(cells: &[&str]) -> String {
    let mut line: Vec<String> = cells.iter().map(|c| escape(c)).collect();
    if let Some(second) = line.get_mut(1) {
        *second = format!("\"{} \"unbalanced\", quote\"", cells[1]);
    }
    let mut text = line.join(",");
    text.push('\n');
    text
}

/// RFC 4180 quoting, as the `csv` crate writes a cell.
fn escape(cell: &str) -> String {
    if cell.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", cell.replace('"', "\"\""))
    } else {
        cell.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served(pairs: &[(&str, &str)], malformed: bool) -> Served {
        Served {
            content: Content::Map(
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned())))
                    .collect(),
            ),
            malformed,
        }
    }

    #[test]
    fn rows_render_as_their_columns_in_json_and_csv() {
        use crate::erp::catalog::Catalog;
        let locations = ["online", "store-berlin"].map(str::to_owned).to_vec();
        let store = Store::new(Catalog::new(1, 6, locations, 1_800_000_000), 2);
        for feed in FeedKind::ALL {
            let page = build(&store, &mut ErpFaults::default(), feed, 0, 1000, false);
            let maps: Vec<Map<String, Value>> = page.rows.iter().map(Served::map).collect();
            let mut columns = feed.columns().to_vec();
            columns.sort_unstable();
            assert!(
                maps.iter().all(|m| m.keys().eq(columns.iter())),
                "{feed}: every column"
            );
            let json = feed_page_json(&page).expect("JSON");
            let parsed: protocol::feed::FeedPage =
                serde_json::from_slice(&json).expect("a FeedPage");
            assert_eq!(
                (parsed.rows, parsed.next_cursor),
                (maps.clone(), page.next_cursor())
            );
            let body = csv(feed, &page.rows).expect("CSV");
            let mut reader = csv::Reader::from_reader(body.as_slice());
            let header: Vec<String> = reader
                .headers()
                .expect("a header")
                .iter()
                .map(str::to_owned)
                .collect();
            assert_eq!(header, feed.columns());
            let records: Vec<Map<String, Value>> = reader
                .records()
                .map(|r| {
                    let r = r.expect("a record");
                    header
                        .iter()
                        .cloned()
                        .zip(r.iter().map(|v| Value::String(v.to_owned())))
                        .collect()
                })
                .collect();
            assert_eq!(records, maps, "{feed}");
        }
    }

    #[test]
    fn a_malformed_line_breaks_only_its_own_record() {
        let rows = [
            served(&[("code", "A1"), ("promotion", "P, \"one\"")], false),
            served(&[("code", "B2"), ("promotion", "P2")], true),
            served(&[("code", "C3"), ("promotion", "P3")], false),
        ];
        let body = csv(FeedKind::Coupons, &rows).expect("csv");
        let mut reader = csv::Reader::from_reader(body.as_slice());
        let records: Vec<_> = reader.records().collect();
        assert_eq!(records.len(), 3);
        let first = records[0].as_ref().expect("the first row reads");
        assert_eq!(first.get(1), Some("P, \"one\""));
        let error = records[1].as_ref().expect_err("the malformed row fails");
        assert!(
            matches!(error.kind(), csv::ErrorKind::UnequalLengths { .. }),
            "{error}"
        );
        let third = records[2].as_ref().expect("the row after reads");
        assert_eq!((third.get(0), third.get(1)), (Some("C3"), Some("P3")));
    }
}
