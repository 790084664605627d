//! The demo's in-store boards: two per store (an entrance TV and a coffee kiosk), a playlist
//! published for every store through the hub's admin API, and the boards' URLs for the banner.

use anyhow::Context;
use serde_json::{json, Value};
use std::time::Duration;

/// The demo boards of each store: (id, name, kiosk).
const BOARDS: [(&str, &str, bool); 2] = [
    ("entrance", "Entrance TV", false),
    ("kiosk", "Coffee kiosk", true),
];

/// A demo board's token (the node's settings hold only its SHA-256; set your own per board).
fn token(replica: &str, board: &str) -> String {
    format!("omnihub-demo-board-{replica}-{board}")
}

/// The `[boards]` section of a demo node's settings.
pub fn store_settings(replica: &str) -> String {
    let mut toml = String::from("\n[boards]\npresence_for = \"60s\"\n");
    for (id, name, kiosk) in BOARDS {
        toml.push_str(&format!(
            "\n[[boards.list]]\nid = \"{id}\"\nname = \"{name}\"\nkiosk = {kiosk}\ntoken_sha256 = \"{}\"\n",
            edge_node::boards::hash_board_token(&token(replica, id))
        ));
    }
    toml
}

/// Publishes the demo playlist for every store (from the products the first store's node has):
/// a welcome, three products with live price and stock, a 3-for-2 tea offer (shown only while
/// the promotion applies), and a `coffee-lovers` segment.
pub fn publish(
    hub_url: &str,
    admin_token: &str,
    store_base: &str,
    store_token: &str,
) -> anyhow::Result<()> {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let skus = |query: &str| -> anyhow::Result<Vec<String>> {
        let found: Value = client
            .get(format!("{store_base}/api/v1/products?q={query}&limit=3"))
            .bearer_auth(store_token)
            .send()?
            .error_for_status()?
            .json()?;
        Ok(found["products"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["variants"][0]["sku"].as_str().map(str::to_string))
            .collect())
    };
    let coffee = skus("coffee")?;
    let teas = skus("tea")?;
    let tea = teas.first();
    let mut items = vec![json!({
        "id": "welcome", "title": "Welcome to Omnihub Market",
        "body": "Fresh coffee, fine tea and everything to brew them. Prices and stock on this screen are live."
    })];
    for (i, sku) in coffee.iter().enumerate() {
        items.push(json!({ "id": format!("coffee-{i}"), "sku": sku }));
    }
    if let Some(tea) = tea {
        items.push(
            json!({ "id": "tea-offer", "title": "Tea: 3 for 2", "sku": tea, "offer_quantity": 3 }),
        );
    }
    let mut fans = vec![json!({
        "id": "beans-for-you", "title": "Freshly roasted this week",
        "body": "Ask at the counter for a free tasting of our new single origins."
    })];
    if let Some(first) = coffee.first() {
        fans.push(json!({ "id": "fan-coffee", "sku": first }));
    }
    let body = json!({
        "playlist": { "items": items, "segments": { "coffee-lovers": fans }, "dwell_secs": 8 }
    });
    client
        .put(format!("{hub_url}/api/v1/admin/boards/playlists/all"))
        .bearer_auth(admin_token)
        .json(&body)
        .send()?
        .error_for_status()
        .context("publishing the demo board playlist")?;
    Ok(())
}

/// The banner's lines: each store's board URLs (with their token in the fragment).
pub fn banner(stores: &[(&str, u16)]) -> String {
    stores
        .iter()
        .flat_map(|(replica, port)| {
            BOARDS.iter().map(move |(id, name, _)| {
                format!(
                    "\n                  http://127.0.0.1:{port}/boards/{id}#token={}  ({replica}, {name})",
                    token(replica, id)
                )
            })
        })
        .collect()
}
