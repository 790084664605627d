//! `omnihub import <file>`: a one-off import of an ERP feed file (CSV or JSON) into a running
//! hub. The file goes to the hub's authenticated import API in chunks of rows, never into the
//! hub's storage directly; a progress bar follows the chunks and a summary ends the run.

use anyhow::{bail, Context};
use protocol::feed::FeedKind;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args)]
pub struct ImportArgs {
    /// The feed file: `products.csv`, `prices.json`, `stock.csv`, `promotions.csv`,
    /// `coupons.json`, … (CSV with a header row, or JSON `{"rows": [...]}` or an array of rows).
    file: PathBuf,
    /// Which feed the file holds [default: guessed from the file name].
    #[arg(long, value_parser = parse_feed)]
    feed: Option<FeedKind>,
    /// The running hub.
    #[arg(long, env = "OMNIHUB_URL", default_value = "http://127.0.0.1:8080")]
    hub: String,
    /// A back-office user's API token (role merchandiser or admin) or the admin token; the
    /// promotions and coupons feeds take the admin token only (they arrive approved).
    #[arg(long, env = "OMNIHUB_TOKEN", hide_env_values = true)]
    token: String,
    /// Rows per request.
    #[arg(long, default_value_t = 5_000)]
    chunk: usize,
    /// Row errors printed in the summary (all are counted).
    #[arg(long, default_value_t = 20)]
    show_errors: usize,
}

fn parse_feed(text: &str) -> Result<FeedKind, String> {
    FeedKind::parse(text).ok_or_else(|| {
        format!("unknown feed '{text}': products, prices, stock, promotions or coupons")
    })
}

#[derive(Debug, Deserialize)]
struct RowError {
    row: u64,
    field: String,
    reason: String,
}

#[derive(Debug, Deserialize)]
struct Report {
    applied: u64,
    unchanged: u64,
    #[serde(default)]
    stale: u64,
    rejected: u64,
    #[serde(default)]
    errors: Vec<RowError>,
}

/// The file cut into request bodies of at most `chunk` rows: (content type, body, rows in it).
fn chunks(
    file: &std::path::Path,
    chunk: usize,
) -> anyhow::Result<Vec<(&'static str, Vec<u8>, usize)>> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let is_json = file
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
        || bytes
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|b| *b == b'{' || *b == b'[');
    let chunk = chunk.max(1);
    if is_json {
        let value: serde_json::Value = serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not valid JSON", file.display()))?;
        let rows = match value {
            serde_json::Value::Array(rows) => rows,
            serde_json::Value::Object(mut o) => match o.remove("rows") {
                Some(serde_json::Value::Array(rows)) => rows,
                _ => bail!(
                    "{}: a JSON feed is {{\"rows\": [...]}} or an array of rows",
                    file.display()
                ),
            },
            _ => bail!(
                "{}: a JSON feed is {{\"rows\": [...]}} or an array of rows",
                file.display()
            ),
        };
        return rows
            .chunks(chunk)
            .map(|part| {
                let body = serde_json::to_vec(&serde_json::json!({ "rows": part }))?;
                Ok(("application/json", body, part.len()))
            })
            .collect();
    }
    // CSV: split on record boundaries (quoted newlines stay inside their record), the header
    // repeated at the top of every chunk.
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(bytes.as_slice());
    let mut starts = Vec::new();
    let mut record = csv::ByteRecord::new();
    loop {
        let at = reader.position().byte() as usize;
        match reader.read_byte_record(&mut record) {
            Ok(true) => starts.push(at),
            Ok(false) => break,
            // A malformed record is the hub's to report with its row number: keep going.
            Err(_) => starts.push(at),
        }
    }
    let Some((&header_start, records)) = starts.split_first() else {
        bail!("{} is empty", file.display());
    };
    let header_end = records.first().copied().unwrap_or(bytes.len());
    let header = &bytes[header_start..header_end];
    let mut out = Vec::new();
    for (i, part) in records.chunks(chunk).enumerate() {
        let from = part[0];
        let to = records.get((i + 1) * chunk).copied().unwrap_or(bytes.len());
        let mut body = header.to_vec();
        if !body.ends_with(b"\n") {
            body.push(b'\n');
        }
        body.extend_from_slice(&bytes[from..to]);
        out.push(("text/csv", body, part.len()));
    }
    Ok(out)
}

/// What to tell the user when the hub refuses a chunk: the status and the hub's own message
/// (which says what to fix, e.g. which credential may import a feed), and what became of the
/// rows sent before it.
fn refusal(status: reqwest::StatusCode, body: &str, sent: u64) -> String {
    let error = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            let e = v.get("error")?;
            Some(format!(
                "{} ({})",
                e.get("message")?.as_str()?,
                e.get("code")?.as_str()?
            ))
        })
        .unwrap_or_else(|| body.trim().to_string());
    let rows = if sent == 0 {
        "nothing was imported".to_string()
    } else {
        format!(
            "the first {sent} rows are applied; importing the file again is safe: unchanged \
             rows are skipped"
        )
    };
    format!("the hub refused the import ({status}): {error}\n({rows})")
}

pub fn run(args: ImportArgs) -> anyhow::Result<()> {
    let feed = match args.feed {
        Some(f) => f,
        None => args
            .file
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(FeedKind::from_file_name)
            .context("cannot tell the feed from the file name: pass --feed products|prices|stock|promotions|coupons")?,
    };
    let parts = chunks(&args.file, args.chunk)?;
    let total: usize = parts.iter().map(|p| p.2).sum();
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()?;
    let url = format!("{}/api/v1/import/{feed}", args.hub.trim_end_matches('/'));
    let bar = indicatif::ProgressBar::new(total as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {msg} [{bar:40}] {pos}/{len} rows ({per_sec}, {eta} left)",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(format!("importing {feed}"));
    let mut sum = Report {
        applied: 0,
        unchanged: 0,
        stale: 0,
        rejected: 0,
        errors: Vec::new(),
    };
    let mut offset = 0u64;
    for (content_type, body, rows) in parts {
        let response = client
            .post(&url)
            .bearer_auth(&args.token)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body)
            .send()
            .with_context(|| format!("sending rows to {url}"))?;
        let status = response.status();
        if !status.is_success() {
            bar.abandon();
            let text = response.text().unwrap_or_default();
            bail!("{}", refusal(status, &text, offset));
        }
        let report: Report = response.json().context("reading the hub's import report")?;
        sum.applied += report.applied;
        sum.unchanged += report.unchanged;
        sum.stale += report.stale;
        sum.rejected += report.rejected;
        sum.errors
            .extend(report.errors.into_iter().map(|e| RowError {
                row: if e.row == 0 { 0 } else { e.row + offset },
                ..e
            }));
        offset += rows as u64;
        bar.inc(rows as u64);
    }
    bar.finish_and_clear();
    println!(
        "{feed}: {total} rows from {} — applied {}, unchanged {}, older than applied {}, rejected {}",
        args.file.display(),
        sum.applied,
        sum.unchanged,
        sum.stale,
        sum.rejected
    );
    for e in sum.errors.iter().take(args.show_errors) {
        println!("  row {}: {}: {}", e.row, e.field, e.reason);
    }
    if sum.errors.len() > args.show_errors {
        println!("  … and {} more", sum.errors.len() - args.show_errors);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_chunks_repeat_the_header_and_keep_quoted_newlines() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("products.csv");
        std::fs::write(
            &path,
            "sku,name\nA-1,\"two\nlines\"\nB-2,plain\nC-3,third\n",
        )
        .expect("write");
        let parts = chunks(&path, 2).expect("chunks");
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].2, 2);
        assert_eq!(
            parts[0].1,
            b"sku,name\nA-1,\"two\nlines\"\nB-2,plain\n".to_vec()
        );
        assert_eq!(parts[1].1, b"sku,name\nC-3,third\n".to_vec());
    }

    #[test]
    fn a_refusal_shows_the_hubs_message() {
        let body = r#"{"error":{"code":"feed_needs_erp_or_admin","message":"only the ERP's signed push or the hub's admin token may import it"}}"#;
        let text = refusal(reqwest::StatusCode::FORBIDDEN, body, 0);
        assert_eq!(
            text,
            "the hub refused the import (403 Forbidden): only the ERP's signed push or the hub's \
             admin token may import it (feed_needs_erp_or_admin)\n(nothing was imported)"
        );
        let text = refusal(reqwest::StatusCode::BAD_GATEWAY, "upstream down\n", 5000);
        assert!(
            text.contains("(502 Bad Gateway): upstream down\n(the first 5000 rows"),
            "{text}"
        );
    }

    #[test]
    fn json_rows_are_chunked() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("stock.json");
        std::fs::write(&path, r#"{"rows":[{"sku":"A"},{"sku":"B"},{"sku":"C"}]}"#).expect("write");
        let parts = chunks(&path, 2).expect("chunks");
        assert_eq!(parts.iter().map(|p| p.2).collect::<Vec<_>>(), vec![2, 1]);
        assert_eq!(parts[0].0, "application/json");
    }
}
