//! The test server's schemas, for suites against PostgreSQL (the `cluster-tests` feature): in
//! this crate's tests and in the end-to-end suites of the `omnihub` package, one helper.

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

/// The test server (`OMNIHUB_TEST_POSTGRES`, else the machine's PostgreSQL).
pub fn url() -> String {
    std::env::var("OMNIHUB_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Runs one statement on its own connection (schemas made and dropped by the tests).
pub async fn admin(sql: &str) {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(&url())
        .await
        .expect("PostgreSQL answers (cluster-tests need it; .ci/run starts it)");
    sqlx::query(sql).execute(&pool).await.expect(sql);
    pool.close().await;
}

/// A fresh schema: its name and connection options whose `search_path` is it.
pub async fn fresh_schema() -> (String, PgConnectOptions) {
    let schema = format!("t_{}", ulid::Ulid::new().to_string().to_lowercase());
    admin(&format!("CREATE SCHEMA {schema}")).await;
    let options: PgConnectOptions = url().parse().expect("a valid url");
    let options = options.options([("search_path", schema.as_str())]);
    (schema, options)
}

pub async fn drop_schema(schema: &str) {
    admin(&format!("DROP SCHEMA {schema} CASCADE")).await;
}

/// The test server's URL with `schema` as the `search_path` (a hub's `[cluster] postgres_url`).
pub fn url_in(schema: &str) -> String {
    let base = url();
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options=-c%20search_path%3D{schema}")
}
