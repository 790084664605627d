//! An A/B experiment's report in a real browser (headless Chromium through chromedriver): a
//! marketer signs in to the back office, opens the experiments list and the report of a running
//! experiment that shoppers were exposed to and converted in, and sees the same figures as the
//! report API: exposures, conversions, conversion rate, the difference with the control and its
//! interval, the p-value, and the chart.
//! Runs with `cargo test --features browser-tests --test browser_experiments`.

#![cfg(feature = "browser-tests")]

mod common;

use common::webdriver::Driver;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const ADMIN: &str = "browser-experiments-admin-token";
/// The demo's marketer (`omnihub demo` makes the same user; a bare hub needs it made).
const MARKETER: (&str, &str) = ("marketer@omnihub.demo", "omnihub-demo-marketer");

async fn json_of(res: reqwest::Response) -> (u16, Value) {
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_marketer_reads_an_experiment_report_with_the_api_figures() {
    let data = tempfile::tempdir().expect("temp dir");
    let hub = tokio::task::block_in_place(|| {
        common::start_hub(data.path(), &[("OMNIHUB_HUB_ADMIN_TOKEN", ADMIN)])
    });
    let base = hub.base.clone();
    let http = common::http_client();
    common::backoffice::create_user(&base, ADMIN, MARKETER.0, &["marketer"], MARKETER.1).await;

    // A running experiment whose goal is a basket add.
    let (status, made) = json_of(
        http.post(format!("{base}/api/v1/admin/experiments"))
            .bearer_auth(ADMIN)
            .json(&json!({
                "key": "browser-hero", "name": "Browser hero", "hypothesis": "B sells more",
                "surface": "storefront", "goal": "basket_line_added",
                "variants": [{"key": "control", "percent": 50}, {"key": "bold", "percent": 50}],
            }))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    let (status, started) = json_of(
        http.post(format!(
            "{base}/api/v1/admin/experiments/browser-hero/start"
        ))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("sent"),
    )
    .await;
    assert_eq!(status, 200, "{started}");

    // A product to add.
    let (_, products) = json_of(
        http.get(format!("{base}/api/v1/products?limit=1"))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    let slug = products["items"][0]["slug"].as_str().expect("a product");
    let (_, detail) = json_of(
        http.get(format!("{base}/api/v1/products/{slug}"))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    let sku = detail["variants"][0]["sku"]
        .as_str()
        .expect("sku")
        .to_string();

    // 30 shoppers are exposed; every third adds to the basket.
    for i in 0..30 {
        let anon = protocol::AnonymousId::new().to_string();
        let (status, body) = json_of(
            http.get(format!(
                "{base}/api/v1/experiments/browser-hero/assignment?expose=true"
            ))
            .header("x-anonymous-id", &anon)
            .send()
            .await
            .expect("sent"),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        if i % 3 == 0 {
            let (status, basket) = json_of(
                http.post(format!("{base}/api/v1/baskets"))
                    .header("x-anonymous-id", &anon)
                    .send()
                    .await
                    .expect("sent"),
            )
            .await;
            assert_eq!(status, 201, "{basket}");
            let (status, body) = json_of(
                http.post(format!(
                    "{base}/api/v1/baskets/{}/lines",
                    basket["id"].as_str().expect("id")
                ))
                .header("x-basket-token", basket["token"].as_str().expect("token"))
                .header("x-anonymous-id", &anon)
                .json(&json!({"sku": sku, "quantity": 1}))
                .send()
                .await
                .expect("sent"),
            )
            .await;
            assert_eq!(status, 200, "{body}");
        }
    }
    // The counter runs behind the requests: wait (with a deadline) until it has them all.
    let deadline = Instant::now() + Duration::from_secs(30);
    let report = loop {
        let (status, report) = json_of(
            http.get(format!(
                "{base}/api/v1/admin/experiments/browser-hero/report"
            ))
            .bearer_auth(ADMIN)
            .send()
            .await
            .expect("sent"),
        )
        .await;
        assert_eq!(status, 200, "{report}");
        let sum = |field: &str| -> u64 {
            report["variants"]
                .as_array()
                .map(|v| v.iter().filter_map(|r| r[field].as_u64()).sum())
                .unwrap_or(0)
        };
        if sum("exposures") == 30 && sum("conversions") == 10 {
            break report;
        }
        assert!(
            Instant::now() < deadline,
            "the counts never reached 30 exposures and 10 conversions: {report}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let driver = Driver::start().await;
    let page = driver.session().await;
    common::backoffice::sign_in_with(&page, &base, MARKETER.0, MARKETER.1).await;
    page.goto(&format!("{base}/backoffice/experiments")).await;
    assert!(page
        .text("#experiments-table")
        .await
        .contains("Browser hero"));
    page.click("a[href='/backoffice/experiments/browser-hero']")
        .await;
    page.wait_for_url(Duration::from_secs(10), |u| {
        u.ends_with("/backoffice/experiments/browser-hero")
    })
    .await;
    assert_eq!(page.text("#experiment-status").await.trim(), "running");
    for row in report["variants"].as_array().expect("variants") {
        let key = row["key"].as_str().expect("key");
        let shown = |what: &str| format!("#{what}-{key}");
        assert_eq!(
            page.text(&shown("exposures")).await.trim(),
            row["exposures"].to_string()
        );
        assert_eq!(
            page.text(&shown("conversions")).await.trim(),
            row["conversions"].to_string()
        );
        let rate = row["conversion_rate"]
            .as_f64()
            .map_or("—".to_string(), |r| format!("{:.2} %", r * 100.0));
        assert_eq!(page.text(&shown("rate")).await.trim(), rate);
        match row["vs_control"].as_object() {
            Some(cmp) => {
                let pts = |v: &Value| format!("{:+.2} pts", v.as_f64().expect("number") * 100.0);
                assert_eq!(
                    page.text(&shown("difference")).await.trim(),
                    pts(&cmp["difference"])
                );
                assert_eq!(
                    page.text(&shown("interval")).await.trim(),
                    format!("{} to {}", pts(&cmp["ci95_low"]), pts(&cmp["ci95_high"]))
                );
                let p = cmp["p_value"]
                    .as_f64()
                    .map_or("—".to_string(), |p| format!("{p:.4}"));
                assert_eq!(page.text(&shown("p")).await.trim(), p);
                let significant = if cmp["significant"] == true {
                    "yes"
                } else {
                    "no"
                };
                assert_eq!(page.text(&shown("significant")).await.trim(), significant);
            }
            None => assert_eq!(page.text(&shown("difference")).await.trim(), "—"),
        }
    }
    // The chart is drawn, and the sample-ratio warning shows exactly when the API says so.
    page.find("#uplift-chart svg.chart").await;
    let mismatch = report["sample_ratio"]["mismatch"] == true;
    let body = page.text("main").await;
    assert_eq!(body.contains("Sample-ratio mismatch."), mismatch, "{body}");
    assert!(
        body.contains("fewer than 30"),
        "the small-sample warning: {body}"
    );
    page.close().await;
}
