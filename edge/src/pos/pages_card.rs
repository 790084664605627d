//! The till's card tender (`docs/pos.md`, "Card payments"): the Card button and split tender
//! (action `terminal` of `POST /pos/sale`). The node asks the payment terminal to read the card
//! for the card amount (the terminal tokenises it; the page and the node see only the token,
//! brand and last four digits), authorises it through the hub or takes it offline within the
//! caps (`crate::pos::card`), and records the sale with the cash part, if any, beside it:
//! change is given from the cash part only. A decline or a cap shows on the till and records
//! nothing.

use super::{
    blocking, encode, manual_of, see_other, selected_till, till_refusal, Draft, PaymentMethod,
    PaymentRequest, SaleForm, SignedIn, TillSale,
};
use crate::api::ApiState;
use crate::pos::card::{self, Cards};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use protocol::Money;

/// Pays the sale on the page by card (`amount`), with an optional cash part (`cash`).
pub(super) async fn pay_by_card(
    state: &web::Data<ApiState>,
    req: &HttpRequest,
    who: &SignedIn,
    draft: &Draft,
    form: &SaleForm,
) -> HttpResponse {
    let refuse =
        |msg: String, status: StatusCode| till_refusal(state, req, who, draft, msg, status);
    if draft.lines.is_empty() {
        return refuse(
            "Scan an item first.".into(),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    }
    // The same checks as for cash: the customer was found at this node, and a sale voided
    // after a basket pull is not paid (its lines went back to the web basket).
    if let Err(msg) = super::customer::check_attached(state, draft).await {
        return refuse(msg, StatusCode::UNPROCESSABLE_ENTITY).await;
    }
    let Some(till) = selected_till(state, req) else {
        return see_other("/pos/till");
    };
    let Some(cards) = req.app_data::<web::Data<Cards>>().cloned() else {
        return refuse(
            "This till takes no card payments: take cash.".into(),
            StatusCode::SERVICE_UNAVAILABLE,
        )
        .await;
    };
    let currency = state.pos.currency;
    let card_amount = form.amount.trim().replace(',', ".");
    let amount = match Money::parse_decimal(&card_amount, currency) {
        Ok(m) if m.minor > 0 => m,
        _ => {
            return refuse(
                "Type the card amount, e.g. 20.00.".into(),
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
    };
    let cash = form.cash.trim().replace(',', ".");
    let key = Some(draft.key.clone()).filter(|k| !k.is_empty());
    let sale = TillSale {
        till,
        staff: who.id.clone(),
    };
    let manual = match manual_of(state, who, draft, None).await {
        Ok(m) => m,
        Err(e) => return refuse(e.explain(), e.status_code()).await,
    };
    // Paid already (a double tap, Back and pay again): the first receipt, no second reading.
    let paid = match &key {
        Some(k) => state.store.has_sale_key(k).unwrap_or(false),
        None => false,
    };
    let mut payments = Vec::new();
    if !paid {
        let read = match cards.read(amount).await {
            Ok(read) => read,
            Err(e) => return refuse(e.explain(), e.status_code()).await,
        };
        payments.push(PaymentRequest {
            method: PaymentMethod::Card,
            amount: amount.to_decimal_string(),
            reference: None,
            card: Some(read),
        });
    }
    if !cash.is_empty() {
        payments.push(PaymentRequest {
            method: PaymentMethod::Cash,
            amount: cash,
            reference: None,
            card: None,
        });
    }
    let mut request = draft.request(payments);
    let authorised =
        match card::authorise_with(&cards, state, &mut request, key.as_deref(), &manual).await {
            Ok(a) => a,
            Err(e) => return refuse(e.explain(), e.status_code()).await,
        };
    let store = state.store.clone();
    match blocking(move || Ok(store.sell_with(&request, key.as_deref(), Some(&sale), &manual)?))
        .await
    {
        Ok(receipt) => see_other(&format!(
            "/pos/receipts/{}",
            encode(&receipt.entry.sale.number)
        )),
        Err(e) => {
            card::release(&cards, &authorised).await;
            refuse(e.explain(), e.status_code()).await
        }
    }
}
