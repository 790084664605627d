//! Signing in to the back office in a real browser (for the `browser-tests` suites), and
//! back-office users made with the hub's admin token.

use super::webdriver::Session;
use serde_json::json;
use std::time::Duration;

/// Creates a back-office user with `roles` and `password` (the hub's admin token).
pub async fn create_user(
    base: &str,
    admin_token: &str,
    email: &str,
    roles: &[&str],
    password: &str,
) {
    let res = super::http_client()
        .post(format!("{base}/api/v1/admin/users"))
        .bearer_auth(admin_token)
        .json(&json!({"email": email, "name": email, "roles": roles, "password": password}))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status().as_u16(), 201, "user {email} created");
}

/// Signs in on the back office's sign-in page and waits for the dashboard.
pub async fn sign_in(page: &Session, base: &str, email: &str, password: &str) {
    page.goto(&format!("{base}/backoffice/login")).await;
    page.type_into("#email", email).await;
    page.type_into("#password", password).await;
    page.click("#sign-in").await;
    page.wait_for_url(Duration::from_secs(10), |u| {
        u.ends_with("/backoffice") || u.ends_with("/backoffice/")
    })
    .await;
}
