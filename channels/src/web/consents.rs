//! The consent boxes of the storefront: on the registration form (unticked) and in the
//! account page's "Your choices" section (`POST /account/consents`). The boxes offered are
//! the pairs the shop uses: marketing email, and content chosen for the shopper on in-store
//! boards.

use super::format::encode_component;
use super::page::{Level, PageError, Visitor};
use crate::backend::BackendError;
use crate::context::{ChannelState, RequestContext};
use actix_web::{web, HttpRequest, HttpResponse};
use protocol::{ConsentChannel, ConsentChoice, ConsentPurpose, ConsentSource, Consents};
use serde::{Deserialize, Serialize};

/// The pairs the storefront's boxes set, with the form field and the words shown.
const BOXES: [(ConsentChannel, ConsentPurpose, &str, &str); 2] = [
    (
        ConsentChannel::Email,
        ConsentPurpose::Marketing,
        "marketing_email",
        "Email me offers, reminders of my basket and back-in-stock notes",
    ),
    (
        ConsentChannel::Board,
        ConsentPurpose::Personalization,
        "board_personalization",
        "Show me content chosen for me on screens in your stores when I scan my card",
    ),
];

/// The choices of the two boxes, ticked or not.
pub(super) fn form_choices(
    marketing_email: bool,
    board_personalization: bool,
) -> Vec<ConsentChoice> {
    [marketing_email, board_personalization]
        .into_iter()
        .zip(BOXES)
        .map(|(granted, (channel, purpose, _, _))| ConsentChoice {
            channel,
            purpose,
            granted,
        })
        .collect()
}

/// One box on the account page.
#[derive(Debug, Serialize)]
pub(super) struct ConsentBox {
    field: &'static str,
    label: &'static str,
    granted: bool,
    /// "since 2 March 2026 (account page)", when it was set.
    since: Option<String>,
}

/// The account page's boxes, from the customer's consents; `None` when the backend keeps no
/// consents (the section is left out).
pub(super) async fn boxes(
    state: &ChannelState,
    customer: protocol::CustomerId,
) -> Result<Option<Vec<ConsentBox>>, PageError> {
    let consents: Consents = match state.backend.consents(customer).await {
        Ok(c) => c,
        Err(BackendError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let date = time::macros::format_description!("[day padding:none] [month repr:long] [year]");
    Ok(Some(
        BOXES
            .iter()
            .map(|(channel, purpose, field, label)| {
                let current = consents.current(*channel, *purpose);
                ConsentBox {
                    field,
                    label,
                    granted: current.is_some_and(|r| r.granted),
                    since: current.map(|r| {
                        format!(
                            "since {} ({})",
                            r.at.format(&date).unwrap_or_default(),
                            r.source.as_str().replace('_', " ")
                        )
                    }),
                }
            })
            .collect(),
    ))
}

/// The account page's consent form: the CSRF token and the ticked boxes.
#[derive(Debug, Default, Deserialize)]
pub struct ConsentForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    marketing_email: Option<String>,
    #[serde(default)]
    board_personalization: Option<String>,
}

/// `POST /account/consents`: records the boxes as they are now (source `account`).
pub async fn save(
    req: HttpRequest,
    state: web::Data<ChannelState>,
    ctx: RequestContext,
    form: web::Form<ConsentForm>,
) -> Result<HttpResponse, PageError> {
    let form = form.into_inner();
    let mut visitor = Visitor::new(&req, state, ctx)?;
    visitor.check_form(&req, &form.csrf)?;
    let Some(customer) = visitor.ctx.shopper.customer else {
        let next = encode_component("/account");
        return Ok(visitor.redirect(&format!("/signin?next={next}")));
    };
    let choices = form_choices(
        form.marketing_email.is_some(),
        form.board_personalization.is_some(),
    );
    let backend = visitor.state.backend.clone();
    backend
        .set_consents(
            customer,
            choices,
            ConsentSource::Account,
            visitor.ctx.channel,
        )
        .await?;
    visitor.flash(Level::Success, "Your choices are saved.");
    Ok(visitor.redirect("/account"))
}
