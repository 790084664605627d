//! The voice platform (`omnihub sim voice`): plays a scripted conversation against the hub's
//! skill endpoint (`POST /voice/alexa`) as the Alexa service would — Alexa Skills Kit request
//! envelopes with session and request ids, the session attributes of each answer carried into
//! the next request, every request signed (`SignatureCertChainUrl` + `Signature-256`) with a
//! chain of its own ([`signer::SimChain`]) — and prints each turn (`you:` / `skill:`).
//!
//! The hub trusts that chain only with its development settings: `voice.development.
//! trust_roots_pem` = the chain directory's `root.pem`, and `cert_chain_source` = the URL this
//! simulator serves the chain at while it plays (`http://127.0.0.1:8207/echo.api/…`) or the
//! directory's `chain.pem`. See `docs/voice.md`.
//!
//! Entry points: [`run`] (the CLI), [`play`] (one script against an endpoint, for tests).

pub mod link;
pub mod script;
pub mod signer;

use crate::common::server::Running;
use actix_web::{web, HttpResponse};
use script::{RequestKind, Script, ScriptTurn, SlotValue};
use serde_json::{json, Map, Value};
use signer::SimChain;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub const DEFAULT_SKILL_ID: &str = "amzn1.ask.skill.omnihub-demo";
pub const DEFAULT_USER_ID: &str = "amzn1.ask.account.OMNIHUB-SIMULATED-USER";
/// The certificate URL the requests name (it passes the platform's URL rules; the hub maps it
/// to this simulator with its development setting).
pub const DEFAULT_CERT_URL: &str = "https://s3.amazonaws.com/echo.api/omnihub-sim.pem";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// `omnihub sim voice`.
#[derive(clap::Args, Debug, Clone)]
pub struct VoiceArgs {
    /// The hub's skill endpoint.
    #[arg(long, default_value = "http://127.0.0.1:8080/voice/alexa")]
    pub endpoint: String,
    /// The conversation script (JSON, see simulators/src/voice/scripts/demo.json) [default:
    /// that demo script].
    #[arg(long)]
    pub script: Option<PathBuf>,
    /// The access token account linking gave the skill; without one the user is unlinked.
    #[arg(long, env = "OMNIHUB_SIM_VOICE_ACCESS_TOKEN")]
    pub access_token: Option<String>,
    /// The skill id sent (the hub's voice.skill_ids must list it).
    #[arg(long, default_value = DEFAULT_SKILL_ID)]
    pub skill_id: String,
    /// The platform's user id sent.
    #[arg(long, default_value = DEFAULT_USER_ID)]
    pub user_id: String,
    /// Where the signing chain is kept (made on first use, kept so the hub keeps trusting it).
    #[arg(long, default_value = "data/voice-sim")]
    pub chain_dir: PathBuf,
    /// Where the chain PEM is served while the script plays (GET /echo.api/…).
    #[arg(
        long,
        env = "OMNIHUB_SIM_VOICE_LISTEN",
        default_value = "127.0.0.1:8207"
    )]
    pub listen: SocketAddr,
    /// The SignatureCertChainUrl the requests carry.
    #[arg(long, default_value = DEFAULT_CERT_URL)]
    pub cert_url: String,
    /// Only make (or keep) the signing chain, print the hub settings that trust it, and exit.
    #[arg(long)]
    pub write_chain: bool,
    /// Link this shopper's account first, as the platform's account linking does (OAuth 2.0
    /// authorization code with the hub: sign in, allow, exchange the code), and talk as them.
    /// Ignored when --access-token is given.
    #[arg(long)]
    pub link_as: Option<String>,
    /// The password --link-as signs in with [default: the demo shopper's].
    #[arg(
        long,
        env = "OMNIHUB_SIM_VOICE_LINK_PASSWORD",
        default_value = "omnihub-demo",
        hide_default_value = true
    )]
    pub link_password: String,
    /// The skill's OAuth client id at the hub.
    #[arg(long, default_value = "omnihub-voice")]
    pub client_id: String,
    /// The skill's OAuth client secret [default: the demo's].
    #[arg(
        long,
        env = "OMNIHUB_SIM_VOICE_CLIENT_SECRET",
        default_value = "omnihub-demo-voice-secret",
        hide_default_value = true
    )]
    pub client_secret: String,
    /// The redirect URI registered for the client.
    #[arg(long, default_value = "http://127.0.0.1:8207/oauth/callback")]
    pub redirect_uri: String,
}

/// Why the conversation could not be played, or did not go as scripted.
#[derive(Debug, thiserror::Error)]
pub enum VoiceSimError {
    #[error(transparent)]
    Signer(#[from] signer::SignerError),
    #[error("the script {path}: {reason}")]
    Script { path: String, reason: String },
    #[error("cannot serve the certificate chain on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot build an HTTP client: {0}")]
    Client(reqwest::Error),
    #[error("account linking failed: {0}")]
    Link(#[from] link::LinkError),
    #[error("the endpoint {0} is not an http(s) URL")]
    Endpoint(String),
    #[error("{0} turn(s) did not get the answer the script expects")]
    Unexpected(usize),
}

/// Who is talking to which skill, and how requests are signed.
#[derive(Debug, Clone)]
pub struct Target {
    pub endpoint: String,
    pub skill_id: String,
    pub user_id: String,
    pub access_token: Option<String>,
    pub cert_url: String,
}

/// One turn as played.
#[derive(Debug, Clone)]
pub struct PlayedTurn {
    pub you: String,
    /// The HTTP status of the answer.
    pub status: u16,
    /// The answer's speech (SSML tags removed), if any.
    pub speech: Option<String>,
    pub end_session: bool,
    /// The whole answer (or error) body.
    pub body: Value,
    /// What differed from the script's expectations.
    pub problems: Vec<String>,
}

/// Runs `omnihub sim voice`.
pub fn run(args: VoiceArgs) -> Result<(), VoiceSimError> {
    let (chain, made) = SimChain::load_or_create(&args.chain_dir)?;
    let dir = args.chain_dir.display();
    if made {
        println!("made a new signing chain in {dir}: (re)start the hub so it trusts it");
    }
    if args.write_chain {
        println!("hub settings that trust this simulator (development only):");
        println!("  [voice]\n  skill_ids = [\"{}\"]", args.skill_id);
        println!("  [voice.development]\n  trust_roots_pem = \"{dir}/root.pem\"");
        println!("  cert_chain_source = \"{dir}/chain.pem\"");
        return Ok(());
    }
    let script = match &args.script {
        Some(path) => {
            let fail = |reason: String| VoiceSimError::Script {
                path: path.display().to_string(),
                reason,
            };
            Script::parse(&std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?)
                .map_err(fail)?
        }
        None => Script::parse(script::DEMO_SCRIPT).map_err(|reason| VoiceSimError::Script {
            path: "(built-in demo)".into(),
            reason,
        })?,
    };
    let mut target = Target {
        endpoint: args.endpoint.clone(),
        skill_id: args.skill_id.clone(),
        user_id: args.user_id.clone(),
        access_token: args.access_token.clone(),
        cert_url: args.cert_url.clone(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(VoiceSimError::Runtime)?;
    runtime.block_on(async move {
        if let (None, Some(email)) = (&target.access_token, &args.link_as) {
            let hub = hub_base(&target.endpoint)?;
            let tokens = link::link_account(
                &hub,
                &args.client_id,
                &args.client_secret,
                &args.redirect_uri,
                email,
                &args.link_password,
            )
            .await?;
            println!("voice simulator: linked {email}'s account at {hub} (OAuth 2.0 authorization code)");
            target.access_token = Some(tokens.access_token);
        }
        let chain = Arc::new(chain);
        let mut server = serve_chain(args.listen, chain.clone())?;
        println!(
            "voice simulator: serving the signing chain on http://{}/echo.api/, playing {} turn(s) against {}",
            server.address(),
            script.turns.len(),
            target.endpoint
        );
        let played = play(&target, &chain, &script, &mut std::io::stdout()).await;
        server.stop("voice").await;
        let problems = played?.iter().filter(|t| !t.problems.is_empty()).count();
        if problems > 0 {
            return Err(VoiceSimError::Unexpected(problems));
        }
        Ok(())
    })
}

/// The hub's base URL (scheme, host and port) of its skill endpoint's URL.
fn hub_base(endpoint: &str) -> Result<String, VoiceSimError> {
    let url =
        reqwest::Url::parse(endpoint).map_err(|_| VoiceSimError::Endpoint(endpoint.into()))?;
    match (url.scheme(), url.host_str()) {
        ("http" | "https", Some(host)) => Ok(match url.port() {
            Some(port) => format!("{}://{host}:{port}", url.scheme()),
            None => format!("{}://{host}", url.scheme()),
        }),
        _ => Err(VoiceSimError::Endpoint(endpoint.into())),
    }
}

/// Serves the chain PEM at every `/echo.api/…` path (the hub's `cert_chain_source`).
fn serve_chain(listen: SocketAddr, chain: Arc<SimChain>) -> Result<Running, VoiceSimError> {
    let bind = |source| VoiceSimError::Bind {
        addr: listen,
        source,
    };
    let listener = std::net::TcpListener::bind(listen).map_err(bind)?;
    Running::start(listener, move |cfg| {
        let pem = chain.chain_pem.clone();
        cfg.route(
            "/echo.api/{file:.*}",
            web::get().to(move || {
                let pem = pem.clone();
                async move {
                    HttpResponse::Ok()
                        .content_type("application/x-pem-file")
                        .body(pem)
                }
            }),
        );
    })
    .map_err(bind)
}

/// Plays a script: one session per conversation (a new one after the skill ends it), each
/// request signed; prints `you:` / `skill:` lines to `out`.
pub async fn play(
    target: &Target,
    chain: &SimChain,
    script: &Script,
    out: &mut dyn Write,
) -> Result<Vec<PlayedTurn>, VoiceSimError> {
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(VoiceSimError::Client)?;
    let mut session: Option<(String, Map<String, Value>)> = None;
    let mut played = Vec::with_capacity(script.turns.len());
    for turn in &script.turns {
        let new = session.is_none();
        let (session_id, attributes) = session.get_or_insert_with(|| {
            (
                format!("amzn1.echo-api.session.{}", ulid::Ulid::new()),
                Map::new(),
            )
        });
        let envelope = envelope(target, turn, session_id, attributes, new);
        let result = post(&client, target, chain, &envelope, turn).await?;
        let _ = writeln!(out, "you:   {}", turn.you);
        let _ = writeln!(out, "skill: {}", describe(&result));
        for problem in &result.problems {
            let _ = writeln!(out, "       !! {problem}");
        }
        match (&result.status, turn.kind()) {
            (200, RequestKind::SessionEndedRequest) => session = None,
            (200, _) if result.end_session => session = None,
            (200, _) => {
                if let Some((_, attributes)) = session.as_mut() {
                    *attributes = result.body["sessionAttributes"]
                        .as_object()
                        .cloned()
                        .unwrap_or_default();
                }
            }
            _ => {}
        }
        played.push(result);
    }
    Ok(played)
}

async fn post(
    client: &reqwest::Client,
    target: &Target,
    chain: &SimChain,
    envelope: &Value,
    turn: &ScriptTurn,
) -> Result<PlayedTurn, VoiceSimError> {
    let body = serde_json::to_vec(envelope).unwrap_or_default();
    let signature = chain.sign(&body)?;
    let response = client
        .post(&target.endpoint)
        .header("content-type", "application/json")
        .header("SignatureCertChainUrl", &target.cert_url)
        .header("Signature-256", signature)
        .body(body)
        .send()
        .await;
    let (status, body) = match response {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
        Err(e) => (
            0,
            json!({ "error": { "code": "unreachable", "message": e.to_string() } }),
        ),
    };
    let speech = match &body["response"]["outputSpeech"] {
        s if s["type"] == "SSML" => s["ssml"].as_str().map(strip_tags),
        s => s["text"].as_str().map(str::to_owned),
    };
    let end_session = body["response"]["shouldEndSession"]
        .as_bool()
        .unwrap_or(false);
    let mut problems = Vec::new();
    if status != 200 {
        problems.push(format!(
            "HTTP {status}: {}",
            body["error"]["message"].as_str().unwrap_or("no answer")
        ));
    }
    if let Some(fragment) = &turn.expect {
        let heard = speech.as_deref().unwrap_or_default().to_lowercase();
        if !heard.contains(&fragment.to_lowercase()) {
            problems.push(format!("expected the answer to contain \"{fragment}\""));
        }
    }
    if let Some(expected) = turn.expect_end {
        if status == 200 && expected != end_session {
            problems.push(format!(
                "expected the session to {}",
                if expected { "end" } else { "stay open" }
            ));
        }
    }
    Ok(PlayedTurn {
        you: turn.you.clone(),
        status,
        speech,
        end_session,
        body,
        problems,
    })
}

/// The `skill:` line: the speech and what else the answer carries.
fn describe(turn: &PlayedTurn) -> String {
    if turn.status != 200 {
        return format!(
            "(HTTP {}) {}",
            turn.status,
            turn.body["error"]["message"].as_str().unwrap_or("")
        );
    }
    let mut line = turn.speech.clone().unwrap_or_else(|| "(no speech)".into());
    let card = &turn.body["response"]["card"];
    match card["type"].as_str() {
        Some("Simple") => line.push_str(&format!(
            "  [card {}: {}]",
            card["title"].as_str().unwrap_or(""),
            card["content"].as_str().unwrap_or("").replace('\n', " / ")
        )),
        Some("LinkAccount") => line.push_str("  [card: link your account]"),
        _ => {}
    }
    if turn.end_session {
        line.push_str("  [session ends]");
    }
    line
}

/// The words of an SSML answer, as the simulator prints them: tags dropped, a pause
/// (`<break …/>`) read as a space.
fn strip_tags(ssml: &str) -> String {
    let mut text = String::with_capacity(ssml.len());
    let mut tag: Option<String> = None;
    for c in ssml.chars() {
        match (&mut tag, c) {
            (None, '<') => tag = Some(String::new()),
            (Some(name), '>') => {
                if name.trim_start().starts_with("break") && !text.ends_with(char::is_whitespace) {
                    text.push(' ');
                }
                tag = None;
            }
            (Some(name), c) => name.push(c),
            (None, c) => text.push(c),
        }
    }
    text.trim().to_owned()
}

/// The request envelope of one turn, as the platform builds it.
pub fn envelope(
    target: &Target,
    turn: &ScriptTurn,
    session_id: &str,
    attributes: &Map<String, Value>,
    new: bool,
) -> Value {
    let mut user = json!({ "userId": target.user_id });
    if let Some(token) = &target.access_token {
        user["accessToken"] = json!(token);
    }
    let application = json!({ "applicationId": target.skill_id });
    let mut request = json!({
        "type": match turn.kind() {
            RequestKind::LaunchRequest => "LaunchRequest",
            RequestKind::IntentRequest => "IntentRequest",
            RequestKind::SessionEndedRequest => "SessionEndedRequest",
        },
        "requestId": format!("amzn1.echo-api.request.{}", ulid::Ulid::new()),
        "timestamp": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        "locale": "en-US",
    });
    match turn.kind() {
        RequestKind::IntentRequest => {
            let slots: Map<String, Value> = turn
                .slots
                .iter()
                .map(|(name, value)| (name.clone(), slot(name, value)))
                .collect();
            request["dialogState"] = json!("COMPLETED");
            request["intent"] = json!({
                "name": turn.intent.as_deref().unwrap_or_default(),
                "confirmationStatus": "NONE",
                "slots": slots,
            });
        }
        RequestKind::SessionEndedRequest => request["reason"] = json!("USER_INITIATED"),
        RequestKind::LaunchRequest => {}
    }
    json!({
        "version": "1.0",
        "session": {
            "new": new,
            "sessionId": session_id,
            "application": application,
            "attributes": attributes,
            "user": user,
        },
        "context": {
            "System": {
                "application": application,
                "user": user,
                "device": { "deviceId": "amzn1.ask.device.OMNIHUB-SIM", "supportedInterfaces": {} },
                "apiEndpoint": "https://api.amazonalexa.com",
            }
        },
        "request": request,
    })
}

/// A slot as the platform sends it: the value heard and, when the script names one, an
/// entity-resolution match.
fn slot(name: &str, value: &SlotValue) -> Value {
    let (heard, resolved) = match value {
        SlotValue::Heard(v) => (v, None),
        SlotValue::Resolved { value, resolved } => (value, resolved.as_ref()),
    };
    let mut slot = json!({ "name": name, "value": heard, "confirmationStatus": "NONE" });
    if let Some(resolved) = resolved {
        slot["resolutions"] = json!({ "resolutionsPerAuthority": [{
            "authority": format!("amzn1.er-authority.echo-sdk.{}.{name}", "omnihub"),
            "status": { "code": "ER_SUCCESS_MATCH" },
            "values": [{ "value": { "name": resolved, "id": resolved.to_lowercase().replace(' ', "_") } }],
        }] });
    }
    slot
}

#[cfg(test)]
mod tests;
