//! The back-office API against a real hub on port 0: users and tokens made with the admin
//! token, the promotion lifecycle with its four-eyes rule, coupons and their CSV export.

mod common;

use common::{client, spawn_with, SendForJson, TestHub};
use hub::clock::SystemClock;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::Arc;

const ADMIN: &str = "backoffice-admin-token";

async fn spawn() -> TestHub {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut s = common::settings(dir.path());
    s.admin_token = Some(ADMIN.to_string().into());
    spawn_with(dir, s, Arc::new(SystemClock), true).await
}

/// Creates a user with the admin token and issues it a token; answers (user id, token).
async fn user_with_token(
    hub: &TestHub,
    c: &reqwest::Client,
    email: &str,
    roles: &[&str],
) -> (String, String) {
    let res = c
        .post(hub.url("/api/v1/admin/users"))
        .bearer_auth(ADMIN)
        .json(&json!({"email": email, "name": "Tester", "roles": roles}))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::CREATED);
    let user: Value = res.json().await.expect("json");
    let id = user["id"].as_str().expect("id").to_string();
    let res = c
        .post(hub.url(&format!("/api/v1/admin/users/{id}/tokens")))
        .bearer_auth(ADMIN)
        .json(&json!({"name": "tests"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::CREATED);
    let token: Value = res.json().await.expect("json");
    (id, token["token"].as_str().expect("token").to_string())
}

async fn status_and_body(res: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let res = res.send().await.expect("sent");
    let status = res.status();
    (status, res.json().await.expect("a JSON body"))
}

fn draft(id: &str) -> Value {
    json!({
        "id": id,
        "name": "Ten percent off beans",
        "spec": {"benefit": {"type": "percent_off", "target": {"type": "skus", "skus": ["BEANS"]}, "percent_bp": 1000}},
    })
}

#[actix_web::test]
async fn users_tokens_and_the_four_eyes_rule() {
    let hub = spawn().await;
    let c = client();
    let (_, merch) =
        user_with_token(&hub, &c, "merch@example.com", &["merchandiser", "approver"]).await;
    let (_, approver) = user_with_token(&hub, &c, "approver@example.com", &["approver"]).await;
    let (analyst_id, analyst) =
        user_with_token(&hub, &c, "analyst@example.com", &["analyst"]).await;

    let (status, body) = status_and_body(
        c.post(hub.url("/api/v1/admin/users"))
            .bearer_auth(&merch)
            .json(&json!({"email": "x@example.com", "name": "X", "roles": ["admin"]})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["message"], "needs role admin");
    let (status, _) = status_and_body(c.get(hub.url("/api/v1/admin/users"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, body) = status_and_body(
        c.post(hub.url("/api/v1/backoffice/promotions"))
            .bearer_auth(&analyst)
            .json(&draft("BEANS10")),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        body["error"]["message"],
        "needs role merchandiser or marketer"
    );

    let (status, body) = status_and_body(
        c.post(hub.url("/api/v1/backoffice/promotions"))
            .bearer_auth(&merch)
            .json(&draft("BEANS10")),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["status"], "draft");

    let (status, body) = status_and_body(
        c.post(hub.url("/api/v1/backoffice/promotions/BEANS10/approve"))
            .bearer_auth(&merch),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        body["error"]["message"],
        "you cannot approve your own promotion"
    );

    let live: Value = c
        .get(hub.url("/api/v1/backoffice/live"))
        .bearer_auth(&analyst)
        .json_body()
        .await;
    assert_eq!(live["promotions"], json!([]));
    let version = live["version"].as_u64().expect("version");

    let (status, body) = status_and_body(
        c.post(hub.url("/api/v1/backoffice/promotions/BEANS10/approve"))
            .bearer_auth(&approver),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "active");
    let live: Value = c
        .get(hub.url("/api/v1/backoffice/live"))
        .bearer_auth(&analyst)
        .json_body()
        .await;
    assert_eq!(live["promotions"][0]["id"], "BEANS10");
    assert!(live["version"].as_u64().expect("version") > version);

    let listed: Value = c
        .get(hub.url("/api/v1/backoffice/promotions?status=active"))
        .bearer_auth(&analyst)
        .json_body()
        .await;
    assert_eq!(listed["promotions"].as_array().map(Vec::len), Some(1));
    let shown: Value = c
        .get(hub.url("/api/v1/backoffice/promotions/BEANS10"))
        .bearer_auth(&analyst)
        .json_body()
        .await;
    assert_eq!(shown["history"].as_array().map(Vec::len), Some(2));

    // Disabling a user stops their token at once.
    let (status, _) = status_and_body(
        c.patch(hub.url(&format!("/api/v1/admin/users/{analyst_id}")))
            .bearer_auth(ADMIN)
            .json(&json!({"disabled": true})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = status_and_body(
        c.get(hub.url("/api/v1/backoffice/promotions"))
            .bearer_auth(&analyst),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "backoffice_token_required");

    let audit: Value = c
        .get(hub.url("/api/v1/backoffice/audit"))
        .bearer_auth(ADMIN)
        .json_body()
        .await;
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(actions.contains(&"promotion.approve"), "{actions:?}");
    assert_eq!(actions.last(), Some(&"user.update"));
}

#[actix_web::test]
async fn invalid_specs_are_422_with_fields_and_reasons() {
    let hub = spawn().await;
    let c = client();
    let (_, merch) = user_with_token(&hub, &c, "merch@example.com", &["merchandiser"]).await;
    let cases = [
        json!({"benefit": {"type": "percent_off", "target": {"type": "skus", "skus": ["NO-SUCH-SKU"]}, "percent_bp": 1000}}),
        json!({"benefit": {"type": "fixed_price", "target": {"type": "skus", "skus": ["BEANS"]}, "price": {"minor": -100, "currency": "EUR"}}}),
        json!({"benefit": {"type": "amount_off_each", "target": {"type": "skus", "skus": ["TEA"]}, "amount": {"minor": 451, "currency": "EUR"}}}),
        json!({"benefit": {"type": "percent_off_basket", "percent_bp": 0}}),
    ];
    for spec in cases {
        let (status, body) = status_and_body(
            c.post(hub.url("/api/v1/backoffice/promotions"))
                .bearer_auth(&merch)
                .json(&json!({"id": "BAD", "name": "Bad", "spec": spec})),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{spec}: {body}");
        let fields = body["error"]["details"]["fields"]
            .as_array()
            .expect("fields");
        assert!(!fields.is_empty());
        for f in fields {
            assert!(
                f["field"].as_str().is_some_and(|f| f.starts_with("spec.")),
                "{body}"
            );
            assert!(
                f["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{body}"
            );
        }
    }
    let (status, _) = status_and_body(
        c.get(hub.url("/api/v1/backoffice/promotions/BAD"))
            .bearer_auth(&merch),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing was stored");
}

#[actix_web::test]
async fn a_batch_exports_as_csv_with_distinct_codes() {
    let hub = spawn().await;
    let c = client();
    let (_, merch) = user_with_token(&hub, &c, "merch@example.com", &["merchandiser"]).await;
    let (_, marketer) = user_with_token(&hub, &c, "marketer@example.com", &["marketer"]).await;
    let (status, _) = status_and_body(
        c.post(hub.url("/api/v1/backoffice/promotions"))
            .bearer_auth(&merch)
            .json(&draft("VIP")),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);

    let (status, batch) = status_and_body(
        c.post(hub.url("/api/v1/backoffice/promotions/VIP/coupon-batches"))
            .bearer_auth(&marketer)
            .json(&json!({"count": 2000, "prefix": "VIP-"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{batch}");
    let csv_path = batch["csv"].as_str().expect("csv link").to_string();

    let res = c
        .get(hub.url(&csv_path))
        .bearer_auth(&merch)
        .send()
        .await
        .expect("sent");
    assert_eq!(
        res.status(),
        StatusCode::FORBIDDEN,
        "merchandisers do not export codes"
    );

    let res = c
        .get(hub.url(&csv_path))
        .bearer_auth(&marketer)
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/csv")));
    let text = res.text().await.expect("body");
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("code,promotion,batch,expires_at,used"));
    let codes: BTreeSet<&str> = lines
        .map(|l| l.split(',').next().expect("a code"))
        .collect();
    assert_eq!(codes.len(), 2000, "count distinct codes");
    assert!(codes.iter().all(|c| c.starts_with("VIP-") && c.len() == 16));

    let (status, body) = status_and_body(
        c.post(hub.url("/api/v1/backoffice/promotions/VIP/coupon-batches"))
            .bearer_auth(&marketer)
            .json(&json!({"count": 100001})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["details"]["fields"][0]["field"], "count");
}

fn row(number: u64, fields: &[(&str, &str)]) -> hub::import::Row {
    hub::import::Row {
        number,
        fields: fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

#[actix_web::test]
async fn the_importer_applies_the_erps_promotions_and_coupons() {
    let hub = spawn().await;
    let c = client();
    let (_, analyst) = user_with_token(&hub, &c, "analyst@example.com", &["analyst"]).await;
    let definition =
        json!({"benefit": {"type": "percent_off_basket", "percent_bp": 500}}).to_string();
    let ghost = json!({"benefit": {"type": "percent_off", "target": {"type": "skus", "skus": ["GHOST"]}, "percent_bp": 500}}).to_string();
    let report = hub
        .handle
        .import
        .run(
            protocol::feed::FeedKind::Promotions,
            "upload",
            vec![
                row(
                    1,
                    &[
                        ("id", "ERP-5"),
                        ("name", "Five off"),
                        ("definition", &definition),
                        ("version", "1"),
                    ],
                ),
                row(
                    2,
                    &[
                        ("id", "ERP-6"),
                        ("name", "Ghost"),
                        ("definition", &ghost),
                        ("version", "1"),
                    ],
                ),
            ],
        )
        .await
        .expect("imported");
    assert_eq!((report.applied, report.rejected), (1, 1));
    assert_eq!(report.errors[0].field, "definition");
    let shown: Value = c
        .get(hub.url("/api/v1/backoffice/promotions/ERP-5"))
        .bearer_auth(&analyst)
        .json_body()
        .await;
    assert_eq!(
        (shown["status"].as_str(), shown["source"].as_str()),
        (Some("active"), Some("erp"))
    );

    let report = hub
        .handle
        .import
        .run(
            protocol::feed::FeedKind::Coupons,
            "upload",
            vec![
                row(
                    1,
                    &[
                        ("code", "ERP-FIVE"),
                        ("promotion", "ERP-5"),
                        ("version", "1"),
                    ],
                ),
                row(
                    2,
                    &[
                        ("code", "LOST-CODE"),
                        ("promotion", "ERP-404"),
                        ("version", "1"),
                    ],
                ),
            ],
        )
        .await
        .expect("imported");
    assert_eq!((report.applied, report.rejected), (1, 1));
    assert_eq!(report.errors[0].field, "promotion");
    let grant = hub
        .handle
        .backoffice
        .check("erp-five", None, time::OffsetDateTime::now_utc())
        .expect("the imported code applies");
    assert_eq!(grant.promotion.as_str(), "ERP-5");
}
