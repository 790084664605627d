//! The simulator's own signing chain — a root CA, an intermediate and an RSA leaf named
//! `echo-api.amazon.com`, as the platform's — and the `Signature-256` of a request body.
//!
//! The chain is kept in a directory (`root.pem`, `chain.pem`, `leaf-key.der`, `not-after`) so
//! that a hub configured to trust `root.pem` keeps trusting the simulator across runs; it is
//! made again when it is missing or about to expire.

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_RSA_SHA256,
};
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The name the platform's signing certificate carries.
pub const SIGNING_CERT_NAME: &str = "echo-api.amazon.com";
/// How long a generated leaf is valid, and how close to its end a stored one is replaced.
const LEAF_VALIDITY: Duration = Duration::from_secs(2 * 365 * 24 * 3600);
const RENEW_BEFORE: Duration = Duration::from_secs(7 * 24 * 3600);

/// Why the chain could not be made, read or used.
#[derive(Debug, thiserror::Error)]
pub enum SignerError {
    #[error("generating the RSA key: {0}")]
    KeyGen(String),
    #[error("making the certificates: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("the leaf key is not usable for signing: {0}")]
    Key(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A signing chain and its leaf key.
pub struct SimChain {
    /// The root certificate (PEM): what the hub's `voice.development.trust_roots_pem` names.
    pub root_pem: String,
    /// The leaf, then the intermediate (PEM): what the certificate URL serves.
    pub chain_pem: String,
    /// When the leaf expires (seconds since the epoch).
    pub not_after: u64,
    leaf_pkcs8: Vec<u8>,
    key: RsaKeyPair,
}

impl SimChain {
    /// A fresh chain (generating a 2048-bit RSA key takes a moment in a debug build).
    pub fn generate() -> Result<SimChain, SignerError> {
        let leaf_pkcs8 = rsa_pkcs8()?;
        let root_key = KeyPair::generate()?;
        let root_params = ca_params("Omnihub Voice Simulator Root")?;
        let root = root_params.self_signed(&root_key)?;
        let root_issuer = Issuer::new(root_params, root_key);
        let intermediate_key = KeyPair::generate()?;
        let intermediate_params = ca_params("Omnihub Voice Simulator Intermediate")?;
        let intermediate = intermediate_params.signed_by(&intermediate_key, &root_issuer)?;
        let intermediate_issuer = Issuer::new(intermediate_params, intermediate_key);

        let leaf_key = KeyPair::from_pkcs8_der_and_sign_algo(
            &rustls_pki_types::PrivatePkcs8KeyDer::from(leaf_pkcs8.clone()),
            &PKCS_RSA_SHA256,
        )?;
        let mut params = CertificateParams::new(vec![SIGNING_CERT_NAME.to_owned()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, SIGNING_CERT_NAME);
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + LEAF_VALIDITY;
        let leaf = params.signed_by(&leaf_key, &intermediate_issuer)?;
        let not_after = u64::try_from(params.not_after.unix_timestamp()).unwrap_or_default();
        SimChain::from_parts(
            root.pem(),
            format!("{}{}", leaf.pem(), intermediate.pem()),
            not_after,
            leaf_pkcs8,
        )
    }

    fn from_parts(
        root_pem: String,
        chain_pem: String,
        not_after: u64,
        leaf_pkcs8: Vec<u8>,
    ) -> Result<SimChain, SignerError> {
        let key =
            RsaKeyPair::from_pkcs8(&leaf_pkcs8).map_err(|e| SignerError::Key(e.to_string()))?;
        Ok(SimChain {
            root_pem,
            chain_pem,
            not_after,
            leaf_pkcs8,
            key,
        })
    }

    /// The chain kept in `dir`, or a new one written there. `true` when it was (re)made: a hub
    /// that trusted the old root must be restarted.
    pub fn load_or_create(dir: &Path) -> Result<(SimChain, bool), SignerError> {
        if let Some(chain) = SimChain::load(dir)? {
            let renew_at = SystemTime::UNIX_EPOCH + Duration::from_secs(chain.not_after);
            if SystemTime::now() + RENEW_BEFORE < renew_at {
                return Ok((chain, false));
            }
        }
        let chain = SimChain::generate()?;
        chain.save(dir)?;
        Ok((chain, true))
    }

    fn load(dir: &Path) -> Result<Option<SimChain>, SignerError> {
        let read = |name: &str| -> Result<Option<Vec<u8>>, SignerError> {
            let path = dir.join(name);
            match std::fs::read(&path) {
                Ok(bytes) => Ok(Some(bytes)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(source) => Err(SignerError::Io { path, source }),
            }
        };
        let (Some(root), Some(chain), Some(key), Some(not_after)) = (
            read("root.pem")?,
            read("chain.pem")?,
            read("leaf-key.der")?,
            read("not-after")?,
        ) else {
            return Ok(None);
        };
        let text = |b: Vec<u8>| String::from_utf8(b).unwrap_or_default();
        let Ok(not_after) = text(not_after).trim().parse::<u64>() else {
            return Ok(None);
        };
        match SimChain::from_parts(text(root), text(chain), not_after, key) {
            Ok(chain) => Ok(Some(chain)),
            // A damaged key file: make a new chain.
            Err(_) => Ok(None),
        }
    }

    fn save(&self, dir: &Path) -> Result<(), SignerError> {
        let io = |path: PathBuf| move |source| SignerError::Io { path, source };
        std::fs::create_dir_all(dir).map_err(io(dir.to_path_buf()))?;
        let not_after = self.not_after.to_string();
        let files: [(&str, &[u8]); 4] = [
            ("root.pem", self.root_pem.as_bytes()),
            ("chain.pem", self.chain_pem.as_bytes()),
            ("leaf-key.der", &self.leaf_pkcs8),
            ("not-after", not_after.as_bytes()),
        ];
        for (name, bytes) in files {
            let path = dir.join(name);
            std::fs::write(&path, bytes).map_err(io(path.clone()))?;
        }
        Ok(())
    }

    /// The `Signature-256` header of a body: RSA PKCS#1 v1.5 SHA-256 with the leaf key, base64.
    pub fn sign(&self, body: &[u8]) -> Result<String, SignerError> {
        let mut signature = vec![0u8; self.key.public().modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                body,
                &mut signature,
            )
            .map_err(|e| SignerError::Key(e.to_string()))?;
        Ok(base64::engine::general_purpose::STANDARD.encode(signature))
    }
}

fn ca_params(name: &str) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + LEAF_VALIDITY + time::Duration::days(1);
    Ok(params)
}

/// A 2048-bit RSA key as PKCS#8 DER (ring signs with RSA keys but cannot make them).
fn rsa_pkcs8() -> Result<Vec<u8>, SignerError> {
    use rsa::pkcs8::EncodePrivateKey;
    let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048)
        .map_err(|e| SignerError::KeyGen(e.to_string()))?;
    let der = key
        .to_pkcs8_der()
        .map_err(|e| SignerError::KeyGen(e.to_string()))?;
    Ok(der.as_bytes().to_vec())
}
