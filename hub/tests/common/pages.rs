//! Reading server-rendered pages in tests: the CSRF field, an element's text, a page's status
//! and body, a redirect's target.

use super::TestHub;
use reqwest::StatusCode;

/// The value of the first hidden `csrf` field of a page.
pub fn csrf_in(html: &str) -> String {
    let marker = r#"name="csrf" value=""#;
    let start = html.find(marker).expect("a csrf field") + marker.len();
    html[start..]
        .split('"')
        .next()
        .expect("a value")
        .to_string()
}

/// The text of the element with `id` (up to its first child tag).
pub fn text_of(html: &str, id: &str) -> String {
    let marker = format!(r#"id="{id}">"#);
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("#{id} on the page: {html}"))
        + marker.len();
    html[start..].split('<').next().expect("text").to_string()
}

/// A page's status and HTML.
pub async fn page(c: &reqwest::Client, hub: &TestHub, path: &str) -> (StatusCode, String) {
    let res = c.get(hub.url(path)).send().await.expect("sent");
    let status = res.status();
    (status, res.text().await.expect("html"))
}

/// Where a redirect points (empty when it is none).
pub fn location(res: &reqwest::Response) -> String {
    res.headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}
