//! The customer's consents per channel and purpose (`docs/experience.md`, "Consents"):
//! `GET /customers/me/consents` (state and history) and `PUT /customers/me/consents` (choices),
//! plus the consent part of the registration body. Nothing is granted unless the customer says
//! so.

use crate::context::{ChannelState, RequestContext};
use crate::error::ApiError;
use actix_web::{web, HttpResponse};
use protocol::{ConsentChannel, ConsentChoice, ConsentPurpose, ConsentSource, Consents};
use serde::Deserialize;
use serde_json::json;

/// The most choices one request may carry (there are four pairs; repeats are refused).
const MAX_CHOICES: usize = 8;

/// One choice as sent: `{"channel": "email", "purpose": "marketing", "granted": true}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChoiceBody {
    pub channel: String,
    pub purpose: String,
    pub granted: bool,
}

/// Body of `PUT /customers/me/consents`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentsBody {
    pub consents: Vec<ChoiceBody>,
}

/// Checks the choices as sent: known channels and purposes, each pair at most once. The 422
/// says which entry and what is allowed.
pub fn parse_choices(body: &[ChoiceBody]) -> Result<Vec<ConsentChoice>, ApiError> {
    if body.len() > MAX_CHOICES {
        return Err(ApiError::unprocessable(
            "invalid_consents",
            format!("send at most {MAX_CHOICES} choices"),
        ));
    }
    let names = |all: &[&str]| all.join(", ");
    let mut out: Vec<ConsentChoice> = Vec::with_capacity(body.len());
    for (i, c) in body.iter().enumerate() {
        let channel = ConsentChannel::parse(c.channel.trim()).ok_or_else(|| {
            ApiError::unprocessable(
                "invalid_consents",
                format!(
                    "consents[{i}].channel: '{}' is not a channel; use one of {}",
                    c.channel.chars().take(32).collect::<String>(),
                    names(&ConsentChannel::ALL.map(ConsentChannel::as_str))
                ),
            )
            .with_details(json!({ "index": i, "field": "channel" }))
        })?;
        let purpose = ConsentPurpose::parse(c.purpose.trim()).ok_or_else(|| {
            ApiError::unprocessable(
                "invalid_consents",
                format!(
                    "consents[{i}].purpose: '{}' is not a purpose; use one of {}",
                    c.purpose.chars().take(32).collect::<String>(),
                    names(&ConsentPurpose::ALL.map(ConsentPurpose::as_str))
                ),
            )
            .with_details(json!({ "index": i, "field": "purpose" }))
        })?;
        if out
            .iter()
            .any(|o| o.channel == channel && o.purpose == purpose)
        {
            return Err(ApiError::unprocessable(
                "invalid_consents",
                format!(
                    "consents[{i}]: {} {} is chosen twice; send each pair once",
                    channel.as_str(),
                    purpose.as_str()
                ),
            )
            .with_details(json!({ "index": i })));
        }
        out.push(ConsentChoice {
            channel,
            purpose,
            granted: c.granted,
        });
    }
    Ok(out)
}

/// The JSON of a customer's consents: the state of every pair and the history, oldest first.
pub fn consents_json(consents: &Consents) -> serde_json::Value {
    json!({
        "consents": consents.states(),
        "history": consents.history,
    })
}

/// `GET /customers/me/consents`.
pub async fn show(
    state: web::Data<ChannelState>,
    ctx: RequestContext,
) -> Result<HttpResponse, ApiError> {
    let id = ctx.customer()?;
    let consents = state.backend.consents(id).await?;
    Ok(HttpResponse::Ok()
        .insert_header(("cache-control", "no-store"))
        .json(consents_json(&consents)))
}

/// `PUT /customers/me/consents {"consents": [{"channel", "purpose", "granted"}]}`: pairs left
/// out stay as they are.
pub async fn change(
    state: web::Data<ChannelState>,
    ctx: RequestContext,
    body: web::Json<ConsentsBody>,
) -> Result<HttpResponse, ApiError> {
    let id = ctx.customer()?;
    let choices = parse_choices(&body.consents)?;
    let consents = state
        .backend
        .set_consents(id, choices, ConsentSource::Api, ctx.channel)
        .await?;
    Ok(HttpResponse::Ok()
        .insert_header(("cache-control", "no-store"))
        .json(consents_json(&consents)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn choice(channel: &str, purpose: &str) -> ChoiceBody {
        ChoiceBody {
            channel: channel.into(),
            purpose: purpose.into(),
            granted: true,
        }
    }

    #[test]
    fn choices_are_checked_with_the_entry_to_fix() {
        let table: [(&[ChoiceBody], Option<&str>); 5] = [
            (&[choice("email", "marketing")], None),
            (
                &[
                    choice("email", "marketing"),
                    choice("board", "personalization"),
                ],
                None,
            ),
            (&[choice("sms", "marketing")], Some("consents[0].channel")),
            (
                &[choice("email", "marketing"), choice("email", "spam")],
                Some("consents[1].purpose"),
            ),
            (
                &[choice("email", "marketing"), choice("email", "marketing")],
                Some("chosen twice"),
            ),
        ];
        for (body, error) in table {
            match (parse_choices(body), error) {
                (Ok(c), None) => assert_eq!(c.len(), body.len()),
                (Err(e), Some(text)) => assert!(e.to_string().contains(text), "{e}"),
                (got, want) => panic!(
                    "{} choices: got {:?}, want {want:?}",
                    body.len(),
                    got.map(|c| c.len()).map_err(|e| e.to_string())
                ),
            }
        }
    }
}
