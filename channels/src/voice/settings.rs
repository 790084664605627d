//! The `[voice]` settings of the hub: which skills may call, request verification, the rate limit
//! and the development overrides of the trust roots and the certificate source.

use secrecy::SecretString;
use serde::Deserialize;
use std::path::PathBuf;

/// Settings of the voice-assistant skill endpoint (`POST /voice/alexa`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VoiceSettings {
    /// The skill ids (`amzn1.ask.skill.…`) whose requests are accepted. Empty: every request is
    /// refused (400 `unknown_application`).
    pub skill_ids: Vec<String>,
    /// The OAuth client id of the skill's account linking (`[[oauth.clients]]`): only access
    /// tokens issued to this client link a voice user to a customer.
    pub link_client_id: String,
    /// Check the platform's request signature (certificate chain and `Signature-256`). On by
    /// default; switching it off logs a warning at start-up. The application id and the
    /// timestamp are checked either way.
    pub verify_signatures: bool,
    /// Requests per minute per linked account (per platform user id when unlinked). A voice
    /// turn takes seconds to speak, so 30 a minute is far above a person talking; above it the
    /// skill answers "too many requests, try again shortly".
    pub requests_per_minute: u32,
    /// Key of the keyed hash that turns a platform user id into the anonymous id of an unlinked
    /// user. Unset: a random key per process (the anonymous ids change at restart).
    pub anonymous_id_key: Option<SecretString>,
    /// Development only: stand-ins for the platform's certificates (logs a warning at start-up).
    pub development: VoiceDevelopment,
}

impl Default for VoiceSettings {
    fn default() -> Self {
        VoiceSettings {
            skill_ids: Vec::new(),
            link_client_id: "omnihub-voice".into(),
            verify_signatures: true,
            requests_per_minute: 30,
            anonymous_id_key: None,
            development: VoiceDevelopment::default(),
        }
    }
}

/// Development overrides, for the voice simulator (`omnihub sim voice`), which signs with a
/// chain of its own. Never set in production.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VoiceDevelopment {
    /// A PEM file whose certificates replace the default trust roots (the Mozilla set of
    /// `webpki-roots`), e.g. the simulator's `root.pem`.
    pub trust_roots_pem: Option<PathBuf>,
    /// Where the certificate chain is fetched from instead of the `SignatureCertChainUrl`
    /// (which is still checked against the platform's rules): an `http://`/`https://` URL
    /// (e.g. the simulator's `http://127.0.0.1:8207/echo.api/omnihub-sim.pem`) or a file path.
    pub cert_chain_source: Option<String>,
}

impl VoiceDevelopment {
    pub fn is_set(&self) -> bool {
        self.trust_roots_pem.is_some() || self.cert_chain_source.is_some()
    }
}
