//! A TCP proxy for a store's link to the hub: it counts the bytes each way and can be cut (open
//! connections dropped, new ones refused) and restored, like a store's internet line going down.
//! Used by `omnihub load stores` and by the end-to-end store suites.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A poisoned lock still holds consistent data here (every critical section is one assignment).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A TCP proxy between a node and the hub: counts the bytes each way, and can be cut (open
/// connections dropped, new ones refused) and restored, like a store's internet line.
pub struct Proxy {
    pub addr: SocketAddr,
    state: Arc<ProxyState>,
    accept: JoinHandle<()>,
}

struct ProxyState {
    upstream: Mutex<SocketAddr>,
    cut: AtomicBool,
    /// Bytes carried node → hub and hub → node since the last restore.
    up: AtomicU64,
    down: AtomicU64,
    /// When the first connection after the last restore was accepted.
    reconnected: Mutex<Option<Instant>>,
    links: Mutex<Vec<JoinHandle<()>>>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(ProxyState {
            upstream: Mutex::new(upstream),
            cut: AtomicBool::new(false),
            up: AtomicU64::new(0),
            down: AtomicU64::new(0),
            reconnected: Mutex::new(None),
            links: Mutex::new(Vec::new()),
        });
        let shared = state.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if shared.cut.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                lock(&shared.reconnected).get_or_insert_with(Instant::now);
                let link = tokio::spawn(forward(client, shared.clone()));
                let mut links = lock(&shared.links);
                links.retain(|l| !l.is_finished());
                links.push(link);
            }
        });
        Ok(Proxy {
            addr,
            state,
            accept,
        })
    }

    /// Drops every open connection and refuses new ones until [`Proxy::restore`].
    pub fn cut(&self) {
        self.state.cut.store(true, Ordering::SeqCst);
        for link in lock(&self.state.links).drain(..) {
            link.abort();
        }
    }

    /// Lets connections through again, counting bytes from zero.
    pub fn restore(&self) {
        self.state.up.store(0, Ordering::SeqCst);
        self.state.down.store(0, Ordering::SeqCst);
        *lock(&self.state.reconnected) = None;
        self.state.cut.store(false, Ordering::SeqCst);
    }

    /// When the first connection after the last restore was accepted.
    pub fn reconnected(&self) -> Option<Instant> {
        *lock(&self.state.reconnected)
    }

    /// Points new connections at another address (a restarted hub on a new port).
    pub fn set_upstream(&self, upstream: SocketAddr) {
        *lock(&self.state.upstream) = upstream;
    }

    /// Bytes node → hub and hub → node since the last restore.
    pub fn bytes(&self) -> (u64, u64) {
        (
            self.state.up.load(Ordering::SeqCst),
            self.state.down.load(Ordering::SeqCst),
        )
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

async fn forward(client: TcpStream, state: Arc<ProxyState>) {
    let upstream = *lock(&state.upstream);
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::select! {
        _ = pump(client_read, server_write, &state.up) => {}
        _ = pump(server_read, client_write, &state.down) => {}
    }
}

/// Copies `from` into `to` until either ends, counting the bytes passed on.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, counter: &AtomicU64) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if to.write_all(&buf[..n]).await.is_err() {
                    return;
                }
                counter.fetch_add(n as u64, Ordering::SeqCst);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn the_proxy_counts_bytes_and_refuses_connections_while_cut() {
        let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream_addr = upstream.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = upstream.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 5];
                    if s.read_exact(&mut buf).await.is_ok() {
                        let _ = s.write_all(b"pong!!").await;
                    }
                });
            }
        });
        let proxy = Proxy::start(upstream_addr).await.unwrap();
        proxy.cut();
        proxy.restore();
        assert!(proxy.reconnected().is_none());
        let mut c = TcpStream::connect(proxy.addr).await.unwrap();
        c.write_all(b"ping!").await.unwrap();
        let mut buf = [0u8; 6];
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong!!");
        assert_eq!(proxy.bytes(), (5, 6));
        assert!(proxy.reconnected().is_some());
        proxy.cut();
        let mut refused = TcpStream::connect(proxy.addr).await.unwrap();
        let mut one = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), refused.read(&mut one))
            .await
            .unwrap();
        assert!(matches!(read, Ok(0) | Err(_)), "dropped while cut");
    }
}
