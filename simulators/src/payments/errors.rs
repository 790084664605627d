//! Stripe's error shape: `{"error": {"type", "code", "decline_code", "message", "param", ...}}`
//! with Stripe's status codes — 400 invalid requests, 401 bad keys, 402 card errors, 404 missing
//! objects, 409 idempotency conflicts, 500 API errors.

use serde_json::{json, Map, Value};

/// One Stripe API error, ready to be sent. Boxed: errors are rare and `Result`s stay small.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct StripeError(Box<Details>);

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Details {
    pub status: u16,
    pub kind: &'static str,
    pub code: Option<String>,
    pub decline_code: Option<String>,
    pub message: String,
    pub param: Option<String>,
    /// Extra fields of the error object, e.g. `payment_intent` after a decline.
    pub extra: Map<String, Value>,
}

impl std::ops::Deref for StripeError {
    type Target = Details;

    fn deref(&self) -> &Details {
        &self.0
    }
}

impl StripeError {
    fn new(status: u16, kind: &'static str, message: String) -> StripeError {
        StripeError(Box::new(Details {
            status,
            kind,
            code: None,
            decline_code: None,
            message,
            param: None,
            extra: Map::new(),
        }))
    }

    /// 400 `invalid_request_error` about one parameter.
    pub(super) fn invalid(message: String, param: &str) -> StripeError {
        StripeError::new(400, "invalid_request_error", message)
            .with_param(param)
            .with_code("parameter_invalid")
    }

    /// 400 `invalid_request_error` not tied to a parameter.
    pub(super) fn request(message: String) -> StripeError {
        StripeError::new(400, "invalid_request_error", message)
    }

    pub(super) fn missing(param: &str) -> StripeError {
        StripeError::invalid(format!("Missing required param: {param}."), param)
            .with_code("parameter_missing")
    }

    /// 404 `resource_missing`, e.g. `No such checkout.session: 'cs_test_x'`.
    pub(super) fn no_such(what: &str, id: &str, param: &str) -> StripeError {
        StripeError::new(
            404,
            "invalid_request_error",
            format!("No such {what}: '{id}'"),
        )
        .with_param(param)
        .with_code("resource_missing")
    }

    pub(super) fn unauthorized(message: String) -> StripeError {
        StripeError::new(401, "invalid_request_error", message)
    }

    /// 402 `card_error` with code `card_declined`.
    pub(super) fn declined(decline_code: &str, message: &str) -> StripeError {
        let mut error = StripeError::new(402, "card_error", message.to_owned());
        error.0.decline_code = Some(decline_code.to_owned());
        error.with_code("card_declined")
    }

    /// 402 `card_error` about what was typed in the card form.
    pub(super) fn card(code: &str, message: &str, param: &str) -> StripeError {
        StripeError::new(402, "card_error", message.to_owned())
            .with_code(code)
            .with_param(param)
    }

    pub(super) fn with_status(mut self, status: u16) -> StripeError {
        self.0.status = status;
        self
    }

    pub(super) fn idempotency(status: u16, message: String) -> StripeError {
        StripeError::new(status, "idempotency_error", message)
    }

    pub(super) fn api(message: String) -> StripeError {
        StripeError::new(500, "api_error", message)
    }

    pub(super) fn with_code(mut self, code: &str) -> StripeError {
        self.0.code = Some(code.to_owned());
        self
    }

    pub(super) fn with_param(mut self, param: &str) -> StripeError {
        self.0.param = Some(param.to_owned());
        self
    }

    pub(super) fn with_extra(mut self, key: &str, value: Value) -> StripeError {
        self.0.extra.insert(key.to_owned(), value);
        self
    }

    /// The error object as it appears inside `{"error": ...}` and in `last_payment_error`.
    pub(super) fn object(&self) -> Value {
        let mut error = Map::new();
        error.insert("type".into(), json!(self.kind));
        error.insert("message".into(), json!(self.message));
        for (key, value) in [
            ("code", &self.code),
            ("decline_code", &self.decline_code),
            ("param", &self.param),
        ] {
            if let Some(value) = value {
                error.insert(key.into(), json!(value));
            }
        }
        if let Some(code) = &self.code {
            let doc = format!(
                "https://stripe.com/docs/error-codes/{}",
                code.replace('_', "-")
            );
            error.insert("doc_url".into(), json!(doc));
        }
        error.extend(self.extra.clone());
        Value::Object(error)
    }

    pub(super) fn body(&self) -> Value {
        json!({ "error": self.object() })
    }
}
