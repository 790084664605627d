//! Board playlists and audience on a real hub: the admin publishes (versioned, validated,
//! optimistic concurrency), a node that says `BoardsHave` gets its store's playlist and every
//! later publication over the sync session, and a node asks about a shopper with its
//! credential and learns only whether to personalise and for which segments.

mod common;

use common::{client, eventually};
use futures_util::{SinkExt, StreamExt};
use hub::config::EdgeNodeSettings;
use protocol::board::BoardPlaylist;
use protocol::replication::sync::{decode_frame, encode_frame, Frame, Vector, PROTOCOL_VERSION};
use protocol::replication::ReplicaId;
use protocol::LocationId;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const ADMIN: &str = "boards-admin-token";
const BERLIN: &str = "berlin-credential";
const WAIT: Duration = Duration::from_secs(10);

async fn spawn() -> common::TestHub {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut s = common::settings(dir.path());
    s.admin_token = Some(ADMIN.to_string().into());
    s.edge.nodes = ["berlin", "paris"]
        .iter()
        .map(|r| EdgeNodeSettings {
            replica: (*r).into(),
            location: format!("store-{r}"),
            name: (*r).into(),
            credential_sha256: hex::encode(hub::auth::token_hash(&format!("{r}-credential"))),
        })
        .collect();
    let hub = common::spawn_with(dir, s, Arc::new(hub::clock::SystemClock), true).await;
    eventually(WAIT, || async {
        let live = hub.handle.edge.live().await.expect("live");
        live.iter().all(|n| n.catalog_version >= 2).then_some(())
    })
    .await;
    hub
}

fn playlist(title: &str) -> Value {
    json!({ "items": [{ "id": "hello", "title": title }], "dwell_secs": 6 })
}

async fn publish(
    hub: &common::TestHub,
    scope: &str,
    body: Value,
    token: &str,
) -> (StatusCode, Value) {
    let res = client()
        .put(hub.url(&format!("/api/v1/admin/boards/playlists/{scope}")))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("answers");
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn send(ws: &mut Socket, frame: &Frame) {
    let bytes = encode_frame(frame).expect("encodes");
    ws.send(Message::Binary(bytes.into())).await.expect("sent");
}

/// Reads frames until `f` picks one.
async fn recv_until<T>(ws: &mut Socket, mut f: impl FnMut(Frame) -> Option<T>) -> T {
    loop {
        let m = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time")
            .expect("open")
            .expect("readable");
        if let Message::Binary(b) = m {
            if let Some(v) = f(decode_frame(&b).expect("decodes")) {
                return v;
            }
        }
    }
}

async fn berlin_node(hub: &common::TestHub) -> Socket {
    let mut req = format!("ws://{}/api/v1/edge/sync", hub.addr)
        .into_client_request()
        .expect("request");
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {BERLIN}").parse().expect("header"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("upgrades");
    send(
        &mut ws,
        &Frame::Hello {
            version: PROTOCOL_VERSION,
            replica: ReplicaId("berlin".into()),
            location: LocationId("store-berlin".into()),
            have: Vector::new(),
            catalog_version: 0,
            time_ms: 1_700_000_000_000,
            pending: 0,
            catalog_fingerprint: String::new(),
            catalog_deltas: false,
            coupons: false,
        },
    )
    .await;
    recv_until(&mut ws, |f| {
        matches!(f, Frame::Welcome { .. }).then_some(())
    })
    .await;
    ws
}

fn title(p: &BoardPlaylist) -> &str {
    p.items.first().map_or("", |i| i.title.as_str())
}

#[actix_web::test]
async fn playlists_are_published_by_version_and_reach_the_store_s_node() {
    let hub = spawn().await;
    // The admin token is required; bad playlists and scopes say what to fix.
    assert_eq!(
        publish(&hub, "all", json!({"playlist": playlist("Hi")}), "nope")
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    let (status, body) = publish(
        &hub,
        "all",
        json!({"playlist": {"items": [{"id": "a b"}]}}),
        ADMIN,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_playlist"))
    );
    let fields: Vec<&str> = body["error"]["details"]["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .filter_map(|f| f["field"].as_str())
        .collect();
    assert_eq!(fields, ["items[0].id", "items[0].title"]);
    let (status, body) = publish(
        &hub,
        "store-rome",
        json!({"playlist": playlist("Ciao")}),
        ADMIN,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("unknown_scope"))
    );

    let (status, body) = publish(
        &hub,
        "all",
        json!({"playlist": playlist("Hello, all stores")}),
        ADMIN,
    )
    .await;
    assert_eq!(
        (status, body["version"].as_u64()),
        (StatusCode::OK, Some(1)),
        "{body}"
    );

    // A node that says it has nothing gets the playlist for all stores.
    let mut node = berlin_node(&hub).await;
    send(&mut node, &Frame::BoardsHave { version: 0 }).await;
    let (v, p) = recv_until(&mut node, |f| match f {
        Frame::Boards { version, playlist } => Some((version, playlist)),
        _ => None,
    })
    .await;
    assert_eq!((v, title(&p), p.dwell_secs), (1, "Hello, all stores", 6));

    // A playlist of its own store's comes at once, at the next version.
    let (_, body) = publish(
        &hub,
        "store-berlin",
        json!({"base_version": 1, "playlist": playlist("Hallo Berlin")}),
        ADMIN,
    )
    .await;
    assert_eq!(body["version"], 2);
    let (v, p) = recv_until(&mut node, |f| match f {
        Frame::Boards { version, playlist } => Some((version, playlist)),
        _ => None,
    })
    .await;
    assert_eq!((v, title(&p)), (2, "Hallo Berlin"));
    // Paris's playlist moves the version; Berlin gets its own again (same content), not Paris's.
    publish(
        &hub,
        "store-paris",
        json!({"playlist": playlist("Bonjour")}),
        ADMIN,
    )
    .await;
    let (v, p) = recv_until(&mut node, |f| match f {
        Frame::Boards { version, playlist } => Some((version, playlist)),
        _ => None,
    })
    .await;
    assert_eq!((v, title(&p)), (3, "Hallo Berlin"));

    // A publication on a stale version is refused and changes nothing.
    let (status, body) = publish(
        &hub,
        "all",
        json!({"base_version": 1, "playlist": playlist("Late")}),
        ADMIN,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("stale_version"))
    );
    let listed: Value = client()
        .get(hub.url("/api/v1/admin/boards/playlists"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("answers")
        .json()
        .await
        .expect("json");
    assert_eq!(listed["version"], 3);
    assert_eq!(
        listed["playlists"]["all"]["playlist"]["items"][0]["title"],
        "Hello, all stores"
    );

    // A node that already has the current version is sent nothing on reconnection.
    drop(node);
    let mut node = berlin_node(&hub).await;
    send(&mut node, &Frame::BoardsHave { version: 3 }).await;
    let next = tokio::time::timeout(Duration::from_millis(700), async {
        recv_until(&mut node, |f| {
            matches!(f, Frame::Boards { .. }).then_some(())
        })
        .await
    })
    .await;
    assert!(next.is_err(), "no playlist resent to a node that has it");
}

#[actix_web::test]
async fn a_node_learns_only_whether_to_personalise_for_a_consenting_shopper() {
    let hub = spawn().await;
    let c = client();
    let ada = hub.register(&c, "ada@example.com").await;
    let ada_id = ada["customer"]["id"]
        .as_str()
        .expect("customer id")
        .to_string();
    let ask = |customer: String, credential: &'static str| {
        let c = c.clone();
        let url = hub.url(&format!("/api/v1/edge/boards/audience/{customer}"));
        async move {
            let res = c
                .get(url)
                .bearer_auth(credential)
                .send()
                .await
                .expect("answers");
            let status = res.status();
            (status, res.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    // Only a node's credential may ask.
    assert_eq!(
        ask(ada_id.clone(), "nope").await.0,
        StatusCode::UNAUTHORIZED
    );
    // No consent recorded: no personalisation.
    assert_eq!(
        ask(ada_id.clone(), BERLIN).await.1,
        json!({"personalise": false, "segments": [], "customer": null})
    );
    // Ada's loyalty card: the code a kiosk scans.
    let token = ada["session_token"].as_str().expect("session token");
    let res = c
        .put(hub.url("/api/v1/customers/me/in-store"))
        .bearer_auth(token)
        .json(&json!({"loyalty_number": "7000 4242"}))
        .send()
        .await
        .expect("answers");
    assert_eq!(res.status(), StatusCode::OK);

    let put = |customer: String, body: Value| {
        let c = c.clone();
        let url = hub.url(&format!("/api/v1/admin/boards/audience/{customer}"));
        async move {
            c.put(url)
                .bearer_auth(ADMIN)
                .json(&body)
                .send()
                .await
                .expect("answers")
                .status()
        }
    };
    assert_eq!(
        put(
            ada_id.clone(),
            json!({"consent": true, "segments": ["coffee lovers"]})
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        put(
            protocol::CustomerId::new().to_string(),
            json!({"consent": true})
        )
        .await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        put(
            ada_id.clone(),
            json!({"consent": true, "segments": ["coffee-lovers"]})
        )
        .await,
        StatusCode::OK
    );
    let (status, answer) = ask(ada_id.clone(), BERLIN).await;
    assert_eq!(
        (status, answer.clone()),
        (
            StatusCode::OK,
            json!({"personalise": true, "segments": ["coffee-lovers"], "customer": ada_id})
        )
    );
    assert!(
        !answer.to_string().contains("ada@"),
        "nothing about who she is beyond the id for her events"
    );
    // Her loyalty number, as printed on the card, gives the same answer; a number no one has,
    // the same as no consent; something else is refused.
    assert_eq!(ask("7000-4242".into(), BERLIN).await.1, answer);
    assert_eq!(
        ask("70009999".into(), BERLIN).await.1,
        json!({"personalise": false, "segments": [], "customer": null})
    );
    assert_eq!(
        ask("not-a-card".into(), BERLIN).await.0,
        StatusCode::BAD_REQUEST
    );
    // Consent withdrawn: the segments are not told either.
    assert_eq!(
        put(
            ada_id.clone(),
            json!({"consent": false, "segments": ["coffee-lovers"]})
        )
        .await,
        StatusCode::OK
    );
    assert_eq!(
        ask(ada_id, BERLIN).await.1,
        json!({"personalise": false, "segments": [], "customer": null})
    );
    assert_eq!(ask("70004242".into(), BERLIN).await.1["personalise"], false);
    // A stranger: the same answer as no consent.
    assert_eq!(
        ask(protocol::CustomerId::new().to_string(), BERLIN).await.1["personalise"],
        false
    );
}
