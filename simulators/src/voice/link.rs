//! Account linking as the voice platform drives it, for the voice simulator and tests: the
//! shopper's browser opens the hub's authorize page, signs in and allows the skill; the
//! platform reads the code from the redirect and exchanges it at the token endpoint.
//! [`link_account`] plays both parts with reqwest (a cookie store, no redirect following), with
//! PKCE (S256).

use base64::Engine;
use sha2::{Digest, Sha256};
use std::time::Duration;

/// The tokens the hub issued (RFC 6749 §5.1).
#[derive(Clone, serde::Deserialize)]
pub struct Tokens {
    pub access_token: String,
    pub token_type: String,
    pub expires_in: u64,
    pub refresh_token: String,
    #[serde(default)]
    pub scope: String,
}

impl std::fmt::Debug for Tokens {
    /// Leaves the tokens out, so they never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// Why linking failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("HTTP request failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("the hub refused the email and password")]
    BadCredentials,
    /// The hub sent the browser back with an OAuth error, or the token endpoint refused.
    #[error("refused: {error} ({description})")]
    Refused { error: String, description: String },
    #[error("{step}: unexpected answer {status}: {detail}")]
    Unexpected {
        step: &'static str,
        status: u16,
        detail: String,
    },
}

fn unexpected(
    step: &'static str,
    status: reqwest::StatusCode,
    detail: impl Into<String>,
) -> LinkError {
    LinkError::Unexpected {
        step,
        status: status.as_u16(),
        detail: detail.into(),
    }
}

/// The value of the page's hidden `csrf` field.
fn csrf_of(html: &str) -> Option<String> {
    let marker = "name=\"csrf\" value=\"";
    let start = html.find(marker)? + marker.len();
    let end = html[start..].find('"')?;
    Some(html[start..start + end].to_string())
}

fn location(res: &reqwest::Response) -> Option<String> {
    res.headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// A PKCE verifier (RFC 7636 §4.1): 52 characters from two ULIDs' 160 random bits.
fn code_verifier() -> String {
    format!("{}{}", ulid::Ulid::new(), ulid::Ulid::new())
}

/// Links `email`'s account to the client as a voice platform would, and answers the tokens.
pub async fn link_account(
    hub_base: &str,
    client_id: &str,
    client_secret: &str,
    redirect_uri: &str,
    email: &str,
    password: &str,
) -> Result<Tokens, LinkError> {
    let base = hub_base.trim_end_matches('/');
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()?;
    let verifier = code_verifier();
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(Sha256::digest(verifier.as_bytes()));
    let state = ulid::Ulid::new().to_string();
    let request = [
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", redirect_uri),
        ("scope", "basket orders"),
        ("state", state.as_str()),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];
    let authorize = format!("{base}/oauth/authorize");

    // The sign-in form.
    let res = browser.get(&authorize).query(&request).send().await?;
    let status = res.status();
    let page = res.text().await?;
    if status != reqwest::StatusCode::OK {
        return Err(unexpected(
            "authorize page",
            status,
            page.chars().take(200).collect::<String>(),
        ));
    }
    let csrf =
        csrf_of(&page).ok_or_else(|| unexpected("authorize page", status, "no CSRF token"))?;
    let mut sign_in: Vec<(&str, &str)> = request.to_vec();
    sign_in.extend([
        ("csrf", csrf.as_str()),
        ("email", email),
        ("password", password),
    ]);
    let res = browser.post(&authorize).form(&sign_in).send().await?;
    match res.status() {
        reqwest::StatusCode::SEE_OTHER => {}
        reqwest::StatusCode::UNAUTHORIZED => return Err(LinkError::BadCredentials),
        other => {
            return Err(unexpected(
                "sign-in",
                other,
                res.text().await.unwrap_or_default(),
            ))
        }
    }
    let back = location(&res).ok_or_else(|| unexpected("sign-in", res.status(), "no Location"))?;

    // The consent form, then Allow.
    let res = browser.get(format!("{base}{back}")).send().await?;
    let status = res.status();
    let page = res.text().await?;
    let csrf = csrf_of(&page)
        .filter(|_| status == reqwest::StatusCode::OK)
        .ok_or_else(|| unexpected("consent page", status, "no consent form"))?;
    let mut allow: Vec<(&str, &str)> = request.to_vec();
    allow.extend([("csrf", csrf.as_str()), ("decision", "allow")]);
    let res = browser.post(&authorize).form(&allow).send().await?;
    let status = res.status();
    let to = location(&res)
        .filter(|_| status == reqwest::StatusCode::FOUND)
        .ok_or_else(|| unexpected("consent", status, "no redirect to the client"))?;
    let to = url::Url::parse(&to).map_err(|e| unexpected("consent", status, e.to_string()))?;
    let param = |name: &str| {
        to.query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    if let Some(error) = param("error") {
        return Err(LinkError::Refused {
            error,
            description: param("error_description").unwrap_or_default(),
        });
    }
    if param("state").as_deref() != Some(state.as_str()) {
        return Err(unexpected("consent", status, "the redirect lost the state"));
    }
    let code = param("code").ok_or_else(|| unexpected("consent", status, "no code"))?;

    // The platform exchanges the code.
    let res = browser
        .post(format!("{base}/oauth/token"))
        .basic_auth(client_id, Some(client_secret))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier.as_str()),
        ])
        .send()
        .await?;
    let status = res.status();
    if status.is_success() {
        return Ok(res.json().await?);
    }
    let body: serde_json::Value = res.json().await.unwrap_or_default();
    let text = |k: &str| {
        body.get(k)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string()
    };
    Err(LinkError::Refused {
        error: text("error"),
        description: text("error_description"),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_csrf_field_is_found() {
        let html =
            r#"<form><input type="hidden" name="csrf" value="0123abcd"><input name="x"></form>"#;
        assert_eq!(super::csrf_of(html).as_deref(), Some("0123abcd"));
        assert_eq!(super::csrf_of("<form></form>"), None);
        assert_eq!(super::code_verifier().len(), 52);
    }
}
