//! The periodic purge of account linking's dead records: codes and tokens that expired, and
//! tokens of revoked grants. They can no longer be used either way (every read checks expiry
//! and the grant); the purge keeps the database from growing with them. The markers of spent
//! codes and refresh tokens are kept: they are what detects a replay.

use super::AuthorizationServer;
use std::sync::Arc;

/// Deletions committed per unit of work.
const BATCH: usize = 500;

/// Runs the purge every `purge_every` (the first time one period after start) until the
/// runtime stops.
pub fn spawn(server: Arc<AuthorizationServer>) {
    actix_web::rt::spawn(async move {
        let every = server.purge_every();
        loop {
            actix_web::rt::time::sleep(every).await;
            purge_once(&server).await;
        }
    });
}

/// In a cluster: the purge runs every `purge_every` on one node, the holder of the
/// `OAuthPurge` singleton (the deletions are idempotent; once is enough).
pub fn run(
    singletons: &crate::cluster::singleton::Singletons,
    server: Arc<AuthorizationServer>,
) -> crate::cluster::singleton::SingletonHandle {
    let every = server.purge_every();
    singletons.run_every(
        crate::cluster::singleton::Singleton::OAuthPurge,
        every,
        move || {
            let server = server.clone();
            async move { purge_once(&server).await }
        },
    )
}

async fn purge_once(server: &AuthorizationServer) {
    match server.purge(BATCH).await {
        Ok(0) => {}
        Ok(purged) => tracing::info!(purged, "expired account-linking records deleted"),
        Err(e) => tracing::warn!(error = %e, "account-linking purge failed; next period"),
    }
}
