//! Catalog deltas against a real hub on port 0: a node that says it reads them and whose
//! version the hub's history covers gets what changed (counted here, product by product), and
//! applying it gives exactly the hub's catalog (same fingerprint); a node that does not read
//! them, that has another catalog under its number, that asks for the whole catalog, or that
//! is behind what the history keeps gets the whole snapshot; the history survives a restart.

mod common;

use common::eventually;
use futures_util::{SinkExt, StreamExt};
use hub::actors::catalog::ApplyBatch;
use hub::config::EdgeNodeSettings;
use hub::edge::catalog::fingerprint;
use hub::{HubHandle, HubSettings};
use protocol::promotion::Promotion;
use protocol::replication::sync::{decode_frame, encode_frame, Frame, Vector, PROTOCOL_VERSION};
use protocol::replication::ReplicaId;
use protocol::{
    CatalogSnapshot, Category, CategoryId, Currency, LocationId, Money, Product, ProductId,
};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const BERLIN: &str = "berlin-credential";
const PARIS: &str = "paris-credential";
const WAIT: Duration = Duration::from_secs(15);
/// Products added to the seeded catalog, so the whole of it is many frames.
const EXTRA: usize = 500;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn node_settings(replica: &str, location: &str, credential: &str) -> EdgeNodeSettings {
    EdgeNodeSettings {
        replica: replica.into(),
        location: location.into(),
        name: format!("Store {replica}"),
        credential_sha256: hex::encode(hub::auth::token_hash(credential)),
    }
}

fn settings(dir: &std::path::Path) -> HubSettings {
    let mut s = common::settings(dir);
    s.edge.nodes = vec![
        node_settings("berlin", "store-berlin", BERLIN),
        node_settings("paris", "store-paris", PARIS),
    ];
    s
}

/// The catalog a node holds, as it applies what the hub sends.
#[derive(Clone, Default)]
struct Model {
    version: u64,
    fingerprint: String,
    categories: BTreeMap<CategoryId, Category>,
    products: BTreeMap<ProductId, Product>,
    promotions: Vec<Promotion>,
}

impl Model {
    /// The hub's fingerprint of this content, computed here.
    fn computed_fingerprint(&self) -> String {
        let snapshot = CatalogSnapshot::new(
            self.version,
            self.categories.values().cloned().collect(),
            self.products.values().cloned().collect(),
        );
        fingerprint(&snapshot, &self.promotions)
    }
}

/// What one offer of the hub carried.
#[derive(Debug, PartialEq, Eq)]
enum Offer {
    /// The whole catalog: its version and products.
    Snapshot { version: u64, products: usize },
    /// A delta: its versions, products upserted and removed.
    Delta {
        from: u64,
        to: u64,
        products: usize,
        removed: usize,
    },
}

struct Node {
    ws: Socket,
    replica: &'static str,
    location: &'static str,
    model: Model,
}

impl Node {
    async fn connect(addr: SocketAddr, credential: &str, replica: &'static str) -> Node {
        let mut req = format!("ws://{addr}/api/v1/edge/sync")
            .into_client_request()
            .expect("request");
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {credential}").parse().expect("header"),
        );
        let (ws, _) = tokio_tungstenite::connect_async(req)
            .await
            .expect("upgraded");
        Node {
            ws,
            replica,
            location: if replica == "paris" {
                "store-paris"
            } else {
                "store-berlin"
            },
            model: Model::default(),
        }
    }

    async fn send(&mut self, frame: &Frame) {
        let bytes = encode_frame(frame).expect("encodes");
        self.ws
            .send(Message::Binary(bytes.into()))
            .await
            .expect("sent");
    }

    /// The next frame that is not a heartbeat.
    async fn recv(&mut self) -> Frame {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a frame in time")
                .expect("open")
                .expect("readable");
            match msg {
                Message::Binary(bytes) => match decode_frame(&bytes).expect("decodes") {
                    Frame::Heartbeat { .. } => continue,
                    frame => return frame,
                },
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a frame, got {other:?}"),
            }
        }
    }

    /// `Hello` with the model's version and fingerprint; answers the welcome's version.
    async fn hello(&mut self, deltas: bool) -> u64 {
        let hello = Frame::Hello {
            version: PROTOCOL_VERSION,
            replica: ReplicaId(self.replica.into()),
            location: LocationId(self.location.into()),
            have: Vector::new(),
            catalog_version: self.model.version,
            time_ms: 1_700_000_000_000,
            pending: 0,
            catalog_fingerprint: self.model.fingerprint.clone(),
            catalog_deltas: deltas,
            coupons: false,
        };
        self.send(&hello).await;
        match self.recv().await {
            Frame::Welcome {
                catalog_version, ..
            } => catalog_version,
            other => panic!("expected welcome, got {other:?}"),
        }
    }

    /// Reads the hub's next catalog offer to its last part and applies it to the model.
    async fn offer(&mut self) -> Offer {
        match self.recv().await {
            Frame::Catalog {
                version,
                part: 0,
                parts,
                categories,
                promotions,
                products,
                fingerprint,
            } => {
                let mut model = Model {
                    version,
                    fingerprint: fingerprint.clone(),
                    categories: categories.into_iter().map(|c| (c.id.clone(), c)).collect(),
                    products: products.into_iter().map(|p| (p.id, p)).collect(),
                    promotions,
                };
                for part in 1..parts {
                    match self.recv().await {
                        Frame::Catalog {
                            version: v,
                            part: p,
                            products,
                            fingerprint: f,
                            ..
                        } => {
                            assert_eq!((v, p, &f), (version, part, &fingerprint));
                            model
                                .products
                                .extend(products.into_iter().map(|p| (p.id, p)));
                        }
                        other => panic!("expected catalog part {part}, got {other:?}"),
                    }
                }
                let products = model.products.len();
                self.model = model;
                Offer::Snapshot { version, products }
            }
            Frame::CatalogDelta {
                from_version,
                to_version,
                fingerprint,
                part: 0,
                parts,
                categories,
                removed_categories,
                promotions,
                removed,
                products,
            } => {
                assert_eq!(
                    from_version, self.model.version,
                    "a delta from the node's version"
                );
                let mut all_removed = removed;
                let mut all_products = products;
                for part in 1..parts {
                    match self.recv().await {
                        Frame::CatalogDelta {
                            to_version: v,
                            part: p,
                            removed,
                            products,
                            ..
                        } => {
                            assert_eq!((v, p), (to_version, part));
                            all_removed.extend(removed);
                            all_products.extend(products);
                        }
                        other => panic!("expected delta part {part}, got {other:?}"),
                    }
                }
                let offer = Offer::Delta {
                    from: from_version,
                    to: to_version,
                    products: all_products.len(),
                    removed: all_removed.len(),
                };
                let m = &mut self.model;
                for id in all_removed {
                    m.products.remove(&id);
                }
                m.products
                    .extend(all_products.into_iter().map(|p| (p.id, p)));
                for id in removed_categories {
                    m.categories.remove(&id);
                }
                m.categories
                    .extend(categories.into_iter().map(|c| (c.id.clone(), c)));
                if let Some(promotions) = promotions {
                    m.promotions = promotions;
                }
                m.version = to_version;
                m.fingerprint = fingerprint;
                offer
            }
            other => panic!("expected a catalog offer, got {other:?}"),
        }
    }
}

/// The hub's catalog version for the nodes and its fingerprint of what the nodes get.
async fn hub_catalog(handle: &HubHandle) -> (u64, String) {
    let live = handle.edge.live().await.expect("live");
    let version = live.first().expect("a node").catalog_version;
    let snapshot = channels::Backend::catalog(handle.backend.as_ref());
    (version, fingerprint(&snapshot, &[]))
}

/// Waits until the hub has issued a catalog version above `after`; answers it.
async fn version_above(handle: &HubHandle, after: u64) -> u64 {
    eventually(WAIT, || async {
        let (version, _) = hub_catalog(handle).await;
        (version > after).then_some(version)
    })
    .await
}

/// A product of the hub's catalog by SKU, repriced.
fn repriced(handle: &HubHandle, sku: &str, minor: i64) -> Product {
    let snapshot = channels::Backend::catalog(handle.backend.as_ref());
    let mut p = snapshot
        .product_by_sku(&protocol::Sku::parse(sku).expect("sku"))
        .expect("in the catalog")
        .clone();
    p.variants[0].price = Money::new(minor, Currency::EUR);
    p
}

/// One change to the hub's catalog, waited for until it is a new version for the nodes.
async fn change(handle: &HubHandle, products: Vec<Product>, remove: Vec<ProductId>) -> u64 {
    let (before, _) = hub_catalog(handle).await;
    handle
        .catalog
        .send(ApplyBatch {
            categories: Vec::new(),
            products,
            remove,
        })
        .await
        .expect("the catalog actor answers")
        .expect("stored");
    version_above(handle, before).await
}

/// Seeds the test catalog plus [`EXTRA`] products.
async fn seed(handle: &HubHandle) {
    common::seed(handle).await;
    let extra: Vec<Product> = (0..EXTRA)
        .map(|i| common::product(&format!("Extra {i:03}"), &format!("EXTRA-{i}"), 100, "tea"))
        .collect();
    handle
        .upsert_catalog(Vec::new(), extra)
        .await
        .expect("stored");
}

const TOTAL: usize = 33 + EXTRA;

impl Node {
    /// `Hello` from nothing, then offers until the node holds the whole seeded catalog (the hub
    /// issues a version for it within a poll): answers its version.
    async fn whole_catalog(&mut self) -> u64 {
        self.hello(true).await;
        loop {
            self.offer().await;
            if self.model.products.len() == TOTAL {
                return self.model.version;
            }
        }
    }
}

async fn spawn() -> common::TestHub {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = settings(dir.path());
    common::spawn_with(dir, s, Arc::new(hub::clock::SystemClock), false).await
}

#[actix_web::test]
async fn a_node_behind_by_a_small_change_gets_just_that_change() {
    let hub = spawn().await;
    seed(&hub.handle).await;
    let mut berlin = Node::connect(hub.addr, BERLIN, "berlin").await;
    // A node with nothing gets the whole catalog, with the version's fingerprint.
    let version = berlin.whole_catalog().await;
    assert_eq!(
        berlin.model.fingerprint,
        berlin.model.computed_fingerprint()
    );
    assert_eq!(
        (version, berlin.model.fingerprint.clone()),
        hub_catalog(&hub.handle).await
    );

    // One price changes while the node is connected: one product travels, not 533.
    let v2 = change(
        &hub.handle,
        vec![repriced(&hub.handle, "TEA", 475)],
        Vec::new(),
    )
    .await;
    assert_eq!(
        berlin.offer().await,
        Offer::Delta {
            from: version,
            to: v2,
            products: 1,
            removed: 0
        }
    );
    assert_eq!(berlin.model.products.len(), TOTAL);
    assert_eq!(
        berlin.model.computed_fingerprint(),
        berlin.model.fingerprint
    );
    assert_eq!(
        hub_catalog(&hub.handle).await,
        (v2, berlin.model.fingerprint.clone())
    );
    let at_v2 = berlin.model.clone();
    drop(berlin);

    // Offline meanwhile: another price and a product gone, two versions; on reconnecting the
    // node gets both composed in one delta.
    let gone = channels::Backend::catalog(hub.handle.backend.as_ref())
        .product_by_sku(&protocol::Sku::parse("EXTRA-7").expect("sku"))
        .expect("present")
        .id;
    let v3 = change(
        &hub.handle,
        vec![repriced(&hub.handle, "BEANS", 1350)],
        Vec::new(),
    )
    .await;
    let v4 = change(&hub.handle, Vec::new(), vec![gone]).await;
    assert!(v4 > v3 && v3 > v2);
    let mut berlin = Node::connect(hub.addr, BERLIN, "berlin").await;
    berlin.model = at_v2.clone();
    assert_eq!(berlin.hello(true).await, v4);
    assert_eq!(
        berlin.offer().await,
        Offer::Delta {
            from: v2,
            to: v4,
            products: 1,
            removed: 1
        }
    );
    assert_eq!(berlin.model.products.len(), TOTAL - 1);
    let (hub_version, hub_fp) = hub_catalog(&hub.handle).await;
    assert_eq!(
        (berlin.model.version, &berlin.model.fingerprint),
        (hub_version, &hub_fp)
    );
    assert_eq!(
        berlin.model.computed_fingerprint(),
        hub_fp,
        "the same catalog as the snapshot"
    );

    // The node found the delta did not fit its catalog: it asks for the whole catalog and
    // gets it.
    berlin.send(&Frame::CatalogWanted { version: v2 }).await;
    assert_eq!(
        berlin.offer().await,
        Offer::Snapshot {
            version: v4,
            products: TOTAL - 1
        }
    );
    assert_eq!(berlin.model.computed_fingerprint(), hub_fp);
    drop(berlin);

    // A node that does not read deltas (an older build) gets the whole catalog, as before.
    let mut paris = Node::connect(hub.addr, PARIS, "paris").await;
    paris.model = at_v2.clone();
    assert_eq!(paris.hello(false).await, v4);
    assert_eq!(
        paris.offer().await,
        Offer::Snapshot {
            version: v4,
            products: TOTAL - 1
        }
    );
    drop(paris);

    // A node with another catalog under the same number (given by a hub since restored from a
    // backup) cannot be sent a delta: the whole catalog.
    let mut paris = Node::connect(hub.addr, PARIS, "paris").await;
    paris.model = at_v2;
    paris.model.fingerprint = "0".repeat(64);
    assert_eq!(paris.hello(true).await, v4);
    assert_eq!(
        paris.offer().await,
        Offer::Snapshot {
            version: v4,
            products: TOTAL - 1
        }
    );
}

#[actix_web::test]
async fn a_node_behind_what_the_history_keeps_gets_the_whole_catalog() {
    let hub = spawn().await;
    seed(&hub.handle).await;
    let mut berlin = Node::connect(hub.addr, BERLIN, "berlin").await;
    let seeded = berlin.whole_catalog().await;
    let at_seeded = berlin.model.clone();
    drop(berlin);

    // Every product repriced: not a change worth keeping (more than half of the catalog), so
    // no version before it is reachable by deltas.
    let snapshot = channels::Backend::catalog(hub.handle.backend.as_ref());
    let all: Vec<Product> = snapshot
        .products()
        .iter()
        .map(|p| {
            let mut p = p.clone();
            p.variants[0].price = Money::new(p.variants[0].price.minor + 1, Currency::EUR);
            p
        })
        .collect();
    let big = change(&hub.handle, all, Vec::new()).await;
    let mut paris = Node::connect(hub.addr, PARIS, "paris").await;
    paris.hello(true).await;
    assert_eq!(
        paris.offer().await,
        Offer::Snapshot {
            version: big,
            products: TOTAL
        }
    );
    let at_big = paris.model.clone();
    drop(paris);
    let small = change(
        &hub.handle,
        vec![repriced(&hub.handle, "TEA", 10)],
        Vec::new(),
    )
    .await;

    let mut berlin = Node::connect(hub.addr, BERLIN, "berlin").await;
    berlin.model = at_seeded;
    assert_eq!(berlin.model.version, seeded);
    assert_eq!(berlin.hello(true).await, small);
    assert_eq!(
        berlin.offer().await,
        Offer::Snapshot {
            version: small,
            products: TOTAL
        }
    );
    // From the big change on, the history holds: the small change alone.
    let mut paris = Node::connect(hub.addr, PARIS, "paris").await;
    paris.model = at_big;
    assert_eq!(paris.hello(true).await, small);
    assert_eq!(
        paris.offer().await,
        Offer::Delta {
            from: big,
            to: small,
            products: 1,
            removed: 0
        }
    );
    assert_eq!(paris.model.computed_fingerprint(), berlin.model.fingerprint);
}

/// A hub in a thread of its own (its own actix System), so it can be stopped and its data
/// directory opened again by the next one.
struct ThreadHub {
    addr: SocketAddr,
    handle: HubHandle,
    server: actix_web::dev::ServerHandle,
    thread: std::thread::JoinHandle<()>,
}

impl ThreadHub {
    /// Stops the hub and waits for its thread; the handle (which holds the database) goes too.
    async fn stop(self) {
        let ThreadHub {
            handle,
            server,
            thread,
            ..
        } = self;
        drop(handle);
        server.stop(true).await;
        thread.join().expect("the hub stopped");
    }
}

fn start_in_thread(settings: HubSettings) -> ThreadHub {
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let system = actix_web::rt::System::new();
        system.block_on(async move {
            // The previous hub's last blocking tasks may hold the database a moment after its
            // thread ended: wait for its lock, within a deadline.
            let deadline = std::time::Instant::now() + WAIT;
            let app = loop {
                match hub::Application::build(settings.clone(), Arc::new(hub::clock::SystemClock))
                    .await
                {
                    Ok(app) => break app,
                    Err(e)
                        if e.to_string().contains("could not acquire lock")
                            && std::time::Instant::now() < deadline =>
                    {
                        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(e) => panic!("hub builds: {e}"),
                }
            };
            tx.send((app.address(), app.handle(), app.server_handle()))
                .expect("told");
            app.run().await.expect("hub ran");
        });
    });
    let (addr, handle, server) = rx.recv_timeout(WAIT * 2).expect("the hub started");
    ThreadHub {
        addr,
        handle,
        server,
        thread,
    }
}

#[actix_web::test]
async fn the_history_survives_a_restart_of_the_hub() {
    let dir = tempfile::tempdir().expect("temp dir");
    let first = start_in_thread(settings(dir.path()));
    seed(&first.handle).await;
    let mut berlin = Node::connect(first.addr, BERLIN, "berlin").await;
    let seeded = berlin.whole_catalog().await;
    let at_seeded = berlin.model.clone();
    drop(berlin);
    let changed = change(
        &first.handle,
        vec![repriced(&first.handle, "CUPS", 2600)],
        Vec::new(),
    )
    .await;
    first.stop().await;

    let second = start_in_thread(settings(dir.path()));
    let mut berlin = Node::connect(second.addr, BERLIN, "berlin").await;
    berlin.model = at_seeded;
    assert_eq!(
        berlin.hello(true).await,
        changed,
        "the same content keeps its version"
    );
    assert_eq!(
        berlin.offer().await,
        Offer::Delta {
            from: seeded,
            to: changed,
            products: 1,
            removed: 0
        }
    );
    assert_eq!(
        hub_catalog(&second.handle).await,
        (changed, berlin.model.computed_fingerprint())
    );
    // The node goes first: a graceful stop waits for open connections.
    drop(berlin);
    second.stop().await;
}
