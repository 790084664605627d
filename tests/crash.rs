//! Crash safety: add basket lines under load, SIGKILL the hub mid-load, restart it on the same
//! data, and find every acknowledged line.

mod common;

use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BASKETS: usize = 8;
const WORKERS_PER_BASKET: usize = 3;

/// What the hub acknowledged: per basket, the highest quantity acknowledged per SKU.
type Acked = Arc<Mutex<HashMap<String, HashMap<String, i64>>>>;

async fn skus(client: &reqwest::Client, base: &str) -> Vec<String> {
    let list: Value = client
        .get(format!("{base}/api/v1/products?limit=100&category=pantry"))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let mut out = Vec::new();
    for item in list["items"].as_array().expect("items") {
        let slug = item["slug"].as_str().expect("slug");
        let detail: Value = client
            .get(format!("{base}/api/v1/products/{slug}"))
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("json");
        for v in detail["variants"].as_array().expect("variants") {
            if v["available"].as_i64().unwrap_or(0) >= 20 {
                out.push(v["sku"].as_str().expect("sku").to_string());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_lines_survive_sigkill() {
    let data = tempfile::tempdir().expect("temp dir");
    let client = common::http_client();
    let mut hub = tokio::task::block_in_place(|| common::start_hub(data.path(), &[]));
    let base = hub.base.clone();

    // The demo catalog is there.
    let all: Value = client
        .get(format!("{base}/api/v1/products?limit=1"))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert!(all["total"].as_u64().expect("total") >= 500);
    let skus = Arc::new(skus(&client, &base).await);
    assert!(skus.len() >= 20, "enough stocked SKUs");

    let mut baskets = Vec::new();
    for _ in 0..BASKETS {
        let b: Value = client
            .post(format!("{base}/api/v1/baskets"))
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("json");
        baskets.push((
            b["id"].as_str().expect("id").to_string(),
            b["token"].as_str().expect("token").to_string(),
        ));
    }
    let acked: Acked = Arc::default();
    let stop_at = Instant::now() + Duration::from_secs(20);
    let mut tasks = Vec::new();
    for (i, (id, token)) in baskets.iter().cloned().enumerate() {
        for w in 0..WORKERS_PER_BASKET {
            let (client, base, skus, acked, id, token) = (
                client.clone(),
                base.clone(),
                skus.clone(),
                acked.clone(),
                id.clone(),
                token.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut n = i * 7 + w;
                while Instant::now() < stop_at {
                    n += 1;
                    let sku = &skus[n % skus.len()];
                    let res = client
                        .post(format!("{base}/api/v1/baskets/{id}/lines"))
                        .header("x-basket-token", &token)
                        .json(&json!({"sku": sku, "quantity": 1}))
                        .send()
                        .await;
                    let Ok(res) = res else { break };
                    if res.status() != 200 {
                        continue;
                    }
                    let Ok(view) = res.json::<Value>().await else {
                        break;
                    };
                    let mut acked = acked.lock().expect("lock");
                    let per_sku = acked.entry(id.clone()).or_default();
                    for line in view["lines"].as_array().into_iter().flatten() {
                        let (s, q) = (
                            line["sku"].as_str().unwrap_or_default().to_string(),
                            line["quantity"].as_i64().unwrap_or(0),
                        );
                        let e = per_sku.entry(s).or_insert(0);
                        *e = (*e).max(q);
                    }
                }
            }));
        }
    }

    // Kill once a good number of adds have been acknowledged, while the load is still running.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let total: i64 = acked
            .lock()
            .expect("lock")
            .values()
            .flat_map(|m| m.values())
            .sum();
        if total >= 300 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    hub.child.kill().expect("SIGKILL");
    hub.child.wait().expect("reaped");
    for t in tasks {
        let _ = t.await;
    }
    let acked = acked.lock().expect("lock").clone();
    let acked_lines: i64 = acked.values().flat_map(|m| m.values()).sum();
    assert!(
        acked_lines >= 100,
        "the load ran before the kill ({acked_lines} units acknowledged)"
    );

    drop(hub);
    let hub = tokio::task::block_in_place(|| common::start_hub(data.path(), &[]));
    for (id, token) in &baskets {
        let view: Value = client
            .get(format!("{}/api/v1/baskets/{id}", hub.base))
            .header("x-basket-token", token)
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("json");
        let restored: HashMap<String, i64> = view["lines"]
            .as_array()
            .expect("lines")
            .iter()
            .map(|l| {
                (
                    l["sku"].as_str().unwrap_or_default().to_string(),
                    l["quantity"].as_i64().unwrap_or(0),
                )
            })
            .collect();
        for (sku, q) in acked.get(id).into_iter().flatten() {
            let got = restored.get(sku).copied().unwrap_or(0);
            assert!(
                got >= *q,
                "basket {id}: {sku} acknowledged at {q}, restored {got}"
            );
        }
    }
}
