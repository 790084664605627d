//! `GET /backoffice/audit`: who changed what, before and after, when; filtered by user, entity
//! and days, newest first, paged (admins).

use super::{BackOfficeSession, PageFailure, Pages};
use crate::backoffice::access::{policy, Policy};
use crate::backoffice::audit::{AuditEntry, AuditFilter};
use crate::backoffice::Backoffice;
use actix_web::{web, HttpRequest, HttpResponse};
use minijinja::context;
use serde::{Deserialize, Serialize};
use serde_json::Value;

const PAGE: usize = 50;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(super::page("/backoffice/audit").route(web::get().to(list)));
}

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct AuditQuery {
    #[serde(default)]
    who: String,
    #[serde(default)]
    entity: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    before: Option<u64>,
}

fn day(text: &str) -> Option<time::Date> {
    time::Date::parse(
        text.trim(),
        time::macros::format_description!("[year]-[month]-[day]"),
    )
    .ok()
}

fn some(text: &str) -> Option<String> {
    let t = text.trim();
    (!t.is_empty()).then(|| t.to_string())
}

/// One changed field: its value before and after (JSON text; absent when it was not there).
#[derive(Debug, PartialEq, Eq, Serialize)]
pub struct FieldChange {
    pub field: String,
    pub before: Option<String>,
    pub after: Option<String>,
}

/// The top-level fields that differ between two JSON documents (an object before or after;
/// anything else compares as one field, `value`).
pub fn diff(before: Option<&str>, after: Option<&str>) -> Vec<FieldChange> {
    let parse = |t: Option<&str>| t.and_then(|t| serde_json::from_str::<Value>(t).ok());
    let (b, a) = (parse(before), parse(after));
    let object = |v: &Option<Value>| match v {
        Some(Value::Object(m)) => Some(m.clone()),
        Some(other) => Some(serde_json::Map::from_iter([(
            "value".to_string(),
            other.clone(),
        )])),
        None => None,
    };
    let (b, a) = (
        object(&b).unwrap_or_default(),
        object(&a).unwrap_or_default(),
    );
    let mut keys: Vec<&String> = b.keys().chain(a.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| b.get(*k) != a.get(*k))
        .map(|k| FieldChange {
            field: k.clone(),
            before: b.get(k).map(Value::to_string),
            after: a.get(k).map(Value::to_string),
        })
        .collect()
}

fn row(e: &AuditEntry) -> minijinja::Value {
    context! {
        seq => e.seq,
        at => e.at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        who => e.who.clone(),
        who_email => e.who_email.clone(),
        action => e.action.clone(),
        subject => e.subject.clone(),
        changes => diff(e.before.as_deref(), e.after.as_deref()),
        before => e.before.clone(),
        after => e.after.clone(),
    }
}

async fn list(
    req: HttpRequest,
    pages: web::Data<Pages>,
    bo: web::Data<Backoffice>,
    session: BackOfficeSession,
    query: web::Query<AuditQuery>,
) -> Result<HttpResponse, PageFailure> {
    session.require(policy::Admin::ROLES)?;
    let filter = AuditFilter {
        who: some(&query.who),
        subject: some(&query.entity),
        from: day(&query.from),
        to: day(&query.to),
    };
    let (entries, next) = bo.audit_page(&filter, query.before, PAGE)?;
    let more = next.map(|seq| {
        format!(
            "/backoffice/audit?who={}&entity={}&from={}&to={}&before={seq}",
            super::encode_component(&query.who),
            super::encode_component(&query.entity),
            super::encode_component(&query.from),
            super::encode_component(&query.to),
        )
    });
    pages.render(
        &req,
        &session,
        "audit.html",
        context! {
            q => &*query,
            entries => entries.iter().map(row).collect::<Vec<_>>(),
            more => more,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Before, after, and the expected (field, before, after) changes.
    type Case = (
        Option<&'static str>,
        Option<&'static str>,
        Vec<(&'static str, Option<&'static str>, Option<&'static str>)>,
    );

    #[test]
    fn diffs_name_the_changed_fields() {
        let table: [Case; 4] = [
            (
                Some(r#"{"name":"A","roles":["admin"],"same":1}"#),
                Some(r#"{"name":"B","roles":["admin"],"same":1}"#),
                vec![("name", Some("\"A\""), Some("\"B\""))],
            ),
            (None, Some(r#"{"x":1}"#), vec![("x", None, Some("1"))]),
            (Some(r#"{"x":1}"#), None, vec![("x", Some("1"), None)]),
            (Some("3"), Some("4"), vec![("value", Some("3"), Some("4"))]),
        ];
        for (before, after, expected) in table {
            let got = diff(before, after);
            let want: Vec<FieldChange> = expected
                .into_iter()
                .map(|(f, b, a)| FieldChange {
                    field: f.into(),
                    before: b.map(Into::into),
                    after: a.map(Into::into),
                })
                .collect();
            assert_eq!(got, want, "{before:?} → {after:?}");
        }
    }
}
