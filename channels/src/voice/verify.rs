//! Request verification as the voice platform prescribes it: the skill's application id, a
//! timestamp within 150 seconds of now, and the request signature — the `SignatureCertChainUrl`
//! must be an https URL on `s3.amazonaws.com` (port 443 if given) whose normalised path starts
//! with `/echo.api/`; the chain found there must be valid now, name `echo-api.amazon.com` and
//! chain to a trusted root; `Signature-256` is the leaf key's RSA PKCS#1 v1.5 SHA-256 signature
//! over the raw body.
//!
//! The clock, the certificate fetcher and the trust roots are injected, so tests bring a chain
//! of their own. Fetched chains are cached by URL while they verify: once the leaf expires
//! (its notAfter), verification fails and the chain is fetched again.

use super::ask::{RequestEnvelope, Timestamp};
use actix_web::http::header::HeaderMap;
use async_trait::async_trait;
use base64::Engine;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, DnsName, ServerName, TrustAnchor, UnixTime};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use time::OffsetDateTime;
use url::Url;
use webpki::{EndEntityCert, KeyUsage};

/// How far the request's timestamp may be from now.
pub const MAX_SKEW: Duration = Duration::from_secs(150);
/// The name the platform's signing certificate carries.
pub const SIGNING_CERT_NAME: &str = "echo-api.amazon.com";
pub const CERT_URL_HEADER: &str = "SignatureCertChainUrl";
pub const SIGNATURE_HEADER: &str = "Signature-256";
/// The largest certificate chain fetched.
const MAX_CHAIN_BYTES: usize = 64 * 1024;
/// Chains cached at once (the platform uses one or two URLs at a time).
const MAX_CACHED_CHAINS: usize = 16;
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// The time, injected (the hub passes its own clock).
pub trait Clock: Send + Sync {
    fn now(&self) -> OffsetDateTime;
}

/// The system's clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

impl<F: Fn() -> OffsetDateTime + Send + Sync> Clock for F {
    fn now(&self) -> OffsetDateTime {
        self()
    }
}

/// Fetches the PEM certificate chain a request names.
#[async_trait]
pub trait CertFetcher: Send + Sync {
    /// The chain at `url`, which has passed [`check_cert_url`]. The error says what failed.
    async fn fetch(&self, url: &Url) -> Result<Vec<u8>, String>;
}

/// The default fetcher: GET over https, no redirects, short timeouts, 64 KiB at most.
pub struct HttpsFetcher {
    client: reqwest::Client,
}

impl HttpsFetcher {
    pub fn new() -> Result<HttpsFetcher, reqwest::Error> {
        Ok(HttpsFetcher {
            client: client(true)?,
        })
    }
}

fn client(https_only: bool) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .https_only(https_only)
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(FETCH_TIMEOUT)
        .timeout(FETCH_TIMEOUT)
        .build()
}

async fn get(client: &reqwest::Client, url: &str) -> Result<Vec<u8>, String> {
    let response = client
        .get(url)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| format!("fetching {url}: {e}"))?;
    if response
        .content_length()
        .is_some_and(|n| n > MAX_CHAIN_BYTES as u64)
    {
        return Err(format!("{url}: the chain is larger than 64 KiB"));
    }
    let body = response
        .bytes()
        .await
        .map_err(|e| format!("reading {url}: {e}"))?;
    if body.len() > MAX_CHAIN_BYTES {
        return Err(format!("{url}: the chain is larger than 64 KiB"));
    }
    Ok(body.to_vec())
}

#[async_trait]
impl CertFetcher for HttpsFetcher {
    async fn fetch(&self, url: &Url) -> Result<Vec<u8>, String> {
        get(&self.client, url.as_str()).await
    }
}

/// Development: every (valid) certificate URL maps to one source, an http(s) URL or a file.
pub enum MappedFetcher {
    Url(reqwest::Client, String),
    File(PathBuf),
}

impl MappedFetcher {
    pub fn new(source: &str) -> Result<MappedFetcher, reqwest::Error> {
        if source.starts_with("http://") || source.starts_with("https://") {
            Ok(MappedFetcher::Url(client(false)?, source.to_owned()))
        } else {
            Ok(MappedFetcher::File(PathBuf::from(source)))
        }
    }
}

#[async_trait]
impl CertFetcher for MappedFetcher {
    async fn fetch(&self, _url: &Url) -> Result<Vec<u8>, String> {
        match self {
            MappedFetcher::Url(client, source) => get(client, source).await,
            MappedFetcher::File(path) => {
                let file = path.clone();
                tokio::task::spawn_blocking(move || std::fs::read(file))
                    .await
                    .map_err(|e| format!("reading {}: {e}", path.display()))?
                    .map_err(|e| format!("reading {}: {e}", path.display()))
            }
        }
    }
}

/// Why a request was refused (400, with the code and the message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("the request is not for a skill this endpoint serves: check the application id and the hub's voice.skill_ids")]
    UnknownApplication,
    #[error("the request has no valid request.timestamp (ISO 8601)")]
    BadTimestamp,
    #[error("request.timestamp is {0} s away from now: at most 150 s is accepted")]
    StaleTimestamp(i64),
    #[error("the {0} header is missing")]
    MissingHeader(&'static str),
    #[error("the SignatureCertChainUrl is not allowed: {0}")]
    BadCertUrl(String),
    #[error("the signing certificate chain could not be fetched: {0}")]
    CertUnavailable(String),
    #[error("the signing certificate chain is not valid: {0}")]
    BadCertChain(String),
    #[error("the signing certificate is not for echo-api.amazon.com")]
    WrongCertName,
    #[error("the Signature-256 header does not match the body: {0}")]
    BadSignature(&'static str),
}

impl Rejection {
    /// The stable code of the JSON error.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::UnknownApplication => "unknown_application",
            Rejection::BadTimestamp => "bad_timestamp",
            Rejection::StaleTimestamp(_) => "stale_timestamp",
            Rejection::MissingHeader(_) => "missing_signature",
            Rejection::BadCertUrl(_) => "bad_cert_url",
            Rejection::CertUnavailable(_) => "cert_unavailable",
            Rejection::BadCertChain(_) => "bad_cert_chain",
            Rejection::WrongCertName => "wrong_cert_name",
            Rejection::BadSignature(_) => "bad_signature",
        }
    }
}

/// Checks a `SignatureCertChainUrl` against the platform's rules and returns it normalised
/// (`.` and `..` resolved).
pub fn check_cert_url(raw: &str) -> Result<Url, Rejection> {
    let bad = |why: &str| Err(Rejection::BadCertUrl(why.to_owned()));
    let Ok(url) = Url::parse(raw.trim()) else {
        return bad("not a URL");
    };
    // `Url` lower-cases the scheme and the host, drops the default port and resolves dot
    // segments (also percent-encoded ones), which is the normalisation the rules ask for.
    if url.scheme() != "https" {
        return bad("the scheme must be https");
    }
    if url.host_str() != Some("s3.amazonaws.com") {
        return bad("the host must be s3.amazonaws.com");
    }
    if url.port().is_some_and(|p| p != 443) {
        return bad("the port must be 443");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return bad("the URL must not carry credentials");
    }
    if !url.path().starts_with("/echo.api/") {
        return bad("the path must start with /echo.api/");
    }
    Ok(url)
}

/// Reads trust roots from PEM (the development override of the default roots).
pub fn trust_roots_from_pem(pem: &[u8]) -> Result<Vec<TrustAnchor<'static>>, String> {
    let mut roots = Vec::new();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| format!("not a PEM certificate: {e}"))?;
        let anchor = webpki::anchor_from_trusted_cert(&cert)
            .map_err(|e| format!("not a usable root certificate: {e}"))?;
        roots.push(anchor.to_owned());
    }
    if roots.is_empty() {
        return Err("no CERTIFICATE block found".into());
    }
    Ok(roots)
}

/// The default trust roots: Mozilla's, as shipped by `webpki-roots`.
pub fn default_trust_roots() -> Vec<TrustAnchor<'static>> {
    webpki_roots::TLS_SERVER_ROOTS.to_vec()
}

/// A fetched chain, leaf first.
struct Chain {
    certs: Vec<CertificateDer<'static>>,
}

impl Chain {
    fn parse(pem: &[u8]) -> Result<Chain, Rejection> {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Rejection::BadCertChain(format!("not PEM: {e}")))?;
        if certs.is_empty() {
            return Err(Rejection::BadCertChain(
                "no certificate in the chain".into(),
            ));
        }
        Ok(Chain { certs })
    }

    fn leaf(&self) -> Result<EndEntityCert<'_>, Rejection> {
        EndEntityCert::try_from(&self.certs[0])
            .map_err(|e| Rejection::BadCertChain(format!("the leaf does not parse: {e}")))
    }
}

/// The verifier of one endpoint.
pub struct RequestVerifier {
    skill_ids: Vec<String>,
    verify_signatures: bool,
    clock: Arc<dyn Clock>,
    fetcher: Arc<dyn CertFetcher>,
    roots: Vec<TrustAnchor<'static>>,
    chains: Mutex<HashMap<String, Arc<Chain>>>,
}

impl RequestVerifier {
    pub fn new(
        skill_ids: Vec<String>,
        verify_signatures: bool,
        clock: Arc<dyn Clock>,
        fetcher: Arc<dyn CertFetcher>,
        roots: Vec<TrustAnchor<'static>>,
    ) -> RequestVerifier {
        RequestVerifier {
            skill_ids,
            verify_signatures,
            clock,
            fetcher,
            roots,
            chains: Mutex::new(HashMap::new()),
        }
    }

    /// Checks a request: application id, timestamp, then (when on) the signature.
    pub async fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        envelope: &RequestEnvelope,
    ) -> Result<(), Rejection> {
        let app = envelope.application_id().unwrap_or_default();
        if !self.skill_ids.iter().any(|id| id == app) {
            return Err(Rejection::UnknownApplication);
        }
        let now = self.clock.now();
        self.check_timestamp(envelope, now)?;
        if self.verify_signatures {
            self.check_signature(headers, body, now).await?;
        }
        Ok(())
    }

    fn check_timestamp(
        &self,
        envelope: &RequestEnvelope,
        now: OffsetDateTime,
    ) -> Result<(), Rejection> {
        let at = match &envelope.request.timestamp {
            Some(Timestamp::Text(text)) => {
                OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                    .map_err(|_| Rejection::BadTimestamp)?
            }
            Some(Timestamp::EpochMillis(ms)) => {
                OffsetDateTime::from_unix_timestamp_nanos(i128::from(*ms) * 1_000_000)
                    .map_err(|_| Rejection::BadTimestamp)?
            }
            None => return Err(Rejection::BadTimestamp),
        };
        let skew = (now - at).abs();
        if skew > MAX_SKEW {
            return Err(Rejection::StaleTimestamp(skew.whole_seconds()));
        }
        Ok(())
    }

    async fn check_signature(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: OffsetDateTime,
    ) -> Result<(), Rejection> {
        let header = |name: &'static str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.trim().is_empty())
                .ok_or(Rejection::MissingHeader(name))
        };
        let url = check_cert_url(header(CERT_URL_HEADER)?)?;
        let signature = base64::engine::general_purpose::STANDARD
            .decode(header(SIGNATURE_HEADER)?.trim())
            .map_err(|_| Rejection::BadSignature("it is not base64"))?;
        let unix = UnixTime::since_unix_epoch(Duration::from_secs(
            u64::try_from(now.unix_timestamp()).unwrap_or_default(),
        ));
        let chain = self.verified_chain(&url, unix).await?;
        chain
            .leaf()?
            .verify_signature(webpki::ring::RSA_PKCS1_2048_8192_SHA256, body, &signature)
            .map_err(|_| Rejection::BadSignature("wrong key or altered body"))
    }

    /// The chain at `url`, verified now: the cached one if it still verifies, else a fresh
    /// fetch (cached once it verifies).
    async fn verified_chain(&self, url: &Url, now: UnixTime) -> Result<Arc<Chain>, Rejection> {
        let key = url.as_str();
        let cached = self.cache().get(key).cloned();
        if let Some(chain) = cached {
            if self.check_chain(&chain, now).is_ok() {
                return Ok(chain);
            }
            // Expired (or roots changed): fetch it again.
            self.cache().remove(key);
        }
        let pem = self
            .fetcher
            .fetch(url)
            .await
            .map_err(Rejection::CertUnavailable)?;
        let chain = Arc::new(Chain::parse(&pem)?);
        self.check_chain(&chain, now)?;
        let mut cache = self.cache();
        if cache.len() >= MAX_CACHED_CHAINS {
            cache.clear();
        }
        cache.insert(key.to_owned(), chain.clone());
        Ok(chain)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Chain>>> {
        // A poisoned cache only lost an insert; its contents are still whole chains.
        self.chains
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The leaf is valid now, chains to a trusted root and names the platform.
    fn check_chain(&self, chain: &Chain, now: UnixTime) -> Result<(), Rejection> {
        let leaf = chain.leaf()?;
        leaf.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &self.roots,
            &chain.certs[1..],
            now,
            KeyUsage::server_auth(),
            None,
            None,
        )
        .map_err(|e| Rejection::BadCertChain(format!("{e}")))?;
        let name = DnsName::try_from(SIGNING_CERT_NAME)
            .map_err(|_| Rejection::WrongCertName)?
            .to_owned();
        leaf.verify_is_valid_for_subject_name(&ServerName::DnsName(name))
            .map_err(|_| Rejection::WrongCertName)
    }
}
