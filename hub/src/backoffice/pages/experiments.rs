//! A/B experiments: the list, a draft's form (marketers; a split that does not add up to 100 %
//! is refused with the reason and nothing is saved), start and stop, and the report page (every
//! reader): per variant exposures, conversions and conversion rate, the difference with the
//! control with its 95 % interval, the relative uplift, the p-value and whether it is
//! significant, the sample-ratio check with its warning, and an SVG chart of the differences.
//! The same domain calls and statistics as `/api/v1/admin/experiments` (audited there).

use super::charts::{self, Interval};
use super::{BackOfficeSession, CsrfOnly, Flash, PageFailure, Pages};
use crate::app::HubHandle;
use crate::backoffice::access::{policy, Policy};
use crate::backoffice::BackofficeError;
use crate::experiments::routes::statistics;
use crate::experiments::NewExperiment;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use minijinja::{context, Value};
use protocol::experiment::stats::{self, Report};
use protocol::experiment::{Experiment, ExperimentStatus, Goal, Surface, VariantInput};
use serde::{Deserialize, Serialize};

/// The variants a new experiment starts from (one a line: key, percent, description).
const EXAMPLE_VARIANTS: &str = "control 50 What shoppers see today\nchallenger 50 The new version";

const SURFACES: [&str; 3] = ["storefront", "promotion", "board"];
const GOALS: [&str; 3] = ["order_placed", "basket_line_added", "checkout_started"];

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        super::page("/backoffice/experiments")
            .route(web::get().to(list))
            .route(web::post().to(create)),
    )
    .service(super::page("/backoffice/experiments/new").route(web::get().to(new_form)))
    .service(super::page("/backoffice/experiments/{key}").route(web::get().to(show)))
    .service(super::page("/backoffice/experiments/{key}/start").route(web::post().to(start)))
    .service(super::page("/backoffice/experiments/{key}/stop").route(web::post().to(stop)));
}

fn can_edit(session: &BackOfficeSession) -> bool {
    policy::Marketing::ROLES
        .iter()
        .any(|r| session.user().has(*r))
}

async fn list(
    req: HttpRequest,
    pages: web::Data<Pages>,
    handle: web::Data<HubHandle>,
    session: BackOfficeSession,
) -> Result<HttpResponse, PageFailure> {
    session.require(policy::MarketingReports::ROLES)?;
    let mut all: Vec<Experiment> = handle
        .experiments
        .all()
        .values()
        .map(|e| e.as_ref().clone())
        .collect();
    // Running first, then drafts, then stopped; newest first within each.
    let order = |s: ExperimentStatus| match s {
        ExperimentStatus::Running => 0,
        ExperimentStatus::Draft => 1,
        ExperimentStatus::Stopped => 2,
    };
    all.sort_by(|a, b| {
        order(a.status)
            .cmp(&order(b.status))
            .then(b.created_at.cmp(&a.created_at))
    });
    pages.render(
        &req,
        &session,
        "experiments.html",
        context! { experiments => all, can_edit => can_edit(&session) },
    )
}

/// The form as typed (shown again with the errors when refused).
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct ExperimentForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    key: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    hypothesis: String,
    #[serde(default)]
    surface: String,
    #[serde(default)]
    goal: String,
    /// Segment keys, separated by commas or spaces (empty: everyone).
    #[serde(default)]
    audience: String,
    /// One variant a line: `key percent description…`.
    #[serde(default)]
    variants: String,
}

fn render_form(
    pages: &Pages,
    req: &HttpRequest,
    session: &BackOfficeSession,
    status: StatusCode,
    form: &ExperimentForm,
    errors: &[String],
) -> Result<HttpResponse, PageFailure> {
    pages.render_status(
        req,
        Some(session),
        status,
        "experiment_form.html",
        context! { form => form, errors => errors, surfaces => SURFACES, goals => GOALS },
        Vec::new(),
    )
}

async fn new_form(
    req: HttpRequest,
    pages: web::Data<Pages>,
    session: BackOfficeSession,
) -> Result<HttpResponse, PageFailure> {
    session.require(policy::Marketing::ROLES)?;
    let form = ExperimentForm {
        surface: "storefront".into(),
        goal: "order_placed".into(),
        variants: EXAMPLE_VARIANTS.into(),
        ..ExperimentForm::default()
    };
    render_form(&pages, &req, &session, StatusCode::OK, &form, &[])
}

/// The variant lines as the API's inputs, or what to fix.
fn variant_lines(text: &str) -> Result<Vec<VariantInput>, Vec<String>> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let mut parts = line.splitn(3, char::is_whitespace);
        let key = parts.next().unwrap_or("").to_string();
        let share = parts.next().unwrap_or("").trim().trim_end_matches('%');
        let description = parts.next().unwrap_or("").trim().to_string();
        match share.parse::<f64>() {
            Ok(percent) if percent.is_finite() => out.push(VariantInput {
                key,
                weight_bp: None,
                percent: Some(percent),
                description,
            }),
            _ => errors.push(format!(
                "variants, line {}: give the key, then its share in percent, then a description, e.g. \"challenger 50 The new hero\"",
                n + 1
            )),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn choice<T: serde::de::DeserializeOwned>(
    field: &str,
    text: &str,
    allowed: &[&str],
) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::String(text.to_string()))
        .map_err(|_| format!("{field}: one of {}", allowed.join(", ")))
}

/// The form as the API's new experiment, or every message of what to fix.
fn parsed(form: &ExperimentForm) -> Result<NewExperiment, Vec<String>> {
    let mut errors = Vec::new();
    let surface: Option<Surface> = choice("surface", &form.surface, &SURFACES)
        .map_err(|e| errors.push(e))
        .ok();
    let goal: Option<Goal> = choice("goal", &form.goal, &GOALS)
        .map_err(|e| errors.push(e))
        .ok();
    let variants = variant_lines(&form.variants)
        .map_err(|mut e| errors.append(&mut e))
        .ok();
    let audience: Vec<String> = form
        .audience
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    match (surface, goal, variants) {
        (Some(surface), Some(goal), Some(variants)) if errors.is_empty() => Ok(NewExperiment {
            key: form.key.trim().to_string(),
            name: form.name.clone(),
            hypothesis: form.hypothesis.clone(),
            surface,
            variants,
            audience,
            goal,
            salt: None,
        }),
        _ => Err(errors),
    }
}

fn refused(e: BackofficeError) -> Result<Vec<String>, PageFailure> {
    match e {
        BackofficeError::Invalid(fields) => Ok(fields
            .iter()
            .map(|f| format!("{}: {}", f.field, f.message))
            .collect()),
        BackofficeError::Conflict { message, .. } => Ok(vec![message]),
        other => Err(other.into()),
    }
}

async fn create(
    req: HttpRequest,
    pages: web::Data<Pages>,
    handle: web::Data<HubHandle>,
    session: BackOfficeSession,
    form: web::Form<ExperimentForm>,
) -> Result<HttpResponse, PageFailure> {
    session.require(policy::Marketing::ROLES)?;
    session.check_form(&req, &form.csrf)?;
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    let new = match parsed(&form) {
        Ok(new) => new,
        Err(errors) => return render_form(&pages, &req, &session, unprocessable, &form, &errors),
    };
    match handle.experiments.create(&session.actor(), new).await {
        Ok(made) => Ok(pages.redirect(
            &format!("/backoffice/experiments/{}", made.key),
            Flash::success(format!(
                "Draft {} saved. Start it when the variants are ready to show.",
                made.key
            )),
        )),
        Err(e) => {
            let errors = refused(e)?;
            render_form(&pages, &req, &session, unprocessable, &form, &errors)
        }
    }
}

/// "12.34 %" of a fraction.
fn percent(v: f64) -> String {
    format!("{:.2} %", v * 100.0)
}

/// "+1.20 pts" of a difference of fractions.
fn points(v: f64) -> String {
    format!("{:+.2} pts", v * 100.0)
}

/// A report row as the page shows it (figures formatted here, once).
#[derive(Serialize)]
struct Row {
    key: String,
    description: String,
    control: bool,
    share: String,
    exposures: u64,
    conversions: u64,
    rate: String,
    difference: String,
    interval: String,
    uplift: String,
    p_value: String,
    significant: Option<bool>,
}

fn rows(experiment: &Experiment, report: &Report) -> Vec<Row> {
    report
        .variants
        .iter()
        .map(|v| {
            let description = experiment
                .variants
                .iter()
                .find(|s| s.key == v.key)
                .map(|s| s.description.clone())
                .unwrap_or_default();
            let cmp = v.vs_control.as_ref();
            let dash = || "—".to_string();
            Row {
                key: v.key.clone(),
                description,
                control: v.control,
                share: format!("{} %", f64::from(v.weight_bp) / 100.0),
                exposures: v.exposures,
                conversions: v.conversions,
                rate: v.conversion_rate.map_or_else(dash, percent),
                difference: cmp.map_or_else(dash, |c| points(c.difference)),
                interval: cmp.map_or_else(dash, |c| {
                    format!("{} to {}", points(c.ci95_low), points(c.ci95_high))
                }),
                uplift: cmp
                    .and_then(|c| c.relative_uplift)
                    .map_or_else(dash, |u| format!("{:+.1} %", u * 100.0)),
                p_value: cmp
                    .and_then(|c| c.p_value)
                    .map_or_else(dash, |p| format!("{p:.4}")),
                significant: cmp.map(|c| c.significant),
            }
        })
        .collect()
}

/// The chart: each challenger's difference with the control and its 95 % interval.
fn chart(report: &Report) -> String {
    let rows: Vec<(String, Option<Interval>)> = report
        .variants
        .iter()
        .filter(|v| !v.control)
        .map(|v| {
            (
                v.key.clone(),
                v.vs_control.as_ref().map(|c| Interval {
                    value: c.difference,
                    low: c.ci95_low,
                    high: c.ci95_high,
                }),
            )
        })
        .collect();
    charts::intervals(
        "Conversion rate vs the control, with 95 % intervals",
        &rows,
        |v| format!("{:+.1} pts", v * 100.0),
    )
}

async fn show(
    req: HttpRequest,
    pages: web::Data<Pages>,
    handle: web::Data<HubHandle>,
    session: BackOfficeSession,
    key: web::Path<String>,
) -> Result<HttpResponse, PageFailure> {
    session.require(policy::MarketingReports::ROLES)?;
    let experiment = handle
        .experiments
        .get(&key)
        .ok_or_else(|| PageFailure::not_found("experiment"))?;
    let report = statistics(&handle.experiments, &experiment)?;
    let srm = report.sample_ratio.as_ref().map(|s| {
        context! {
            chi_square => format!("{:.2}", s.chi_square),
            df => s.degrees_of_freedom,
            p_value => format!("{:.4}", s.p_value),
            mismatch => s.mismatch,
        }
    });
    let may_edit = can_edit(&session);
    pages.render(
        &req,
        &session,
        "experiment.html",
        context! {
            experiment => experiment.as_ref(),
            rows => rows(&experiment, &report),
            warnings => report.warnings,
            srm,
            alpha => stats::ALPHA,
            srm_alpha => stats::SRM_ALPHA,
            chart => Value::from_safe_string(chart(&report)),
            may => context! {
                start => may_edit && experiment.status == ExperimentStatus::Draft,
                stop => may_edit && experiment.status == ExperimentStatus::Running,
            },
        },
    )
}

async fn start(
    req: HttpRequest,
    pages: web::Data<Pages>,
    handle: web::Data<HubHandle>,
    session: BackOfficeSession,
    key: web::Path<String>,
    form: web::Form<CsrfOnly>,
) -> Result<HttpResponse, PageFailure> {
    session.require(policy::Marketing::ROLES)?;
    session.check_form(&req, &form.csrf)?;
    let back = format!("/backoffice/experiments/{key}");
    match handle.experiments.start(&session.actor(), &key).await {
        Ok(e) => Ok(pages.redirect(
            &back,
            Flash::success(format!(
                "{} is running: shoppers are assigned from now on.",
                e.key
            )),
        )),
        Err(BackofficeError::Conflict { message, .. }) => {
            Ok(pages.redirect(&back, Flash::error(message)))
        }
        Err(e) => Err(e.into()),
    }
}

async fn stop(
    req: HttpRequest,
    pages: web::Data<Pages>,
    handle: web::Data<HubHandle>,
    session: BackOfficeSession,
    key: web::Path<String>,
    form: web::Form<CsrfOnly>,
) -> Result<HttpResponse, PageFailure> {
    session.require(policy::Marketing::ROLES)?;
    session.check_form(&req, &form.csrf)?;
    let back = format!("/backoffice/experiments/{key}");
    match handle.experiments.stop(&session.actor(), &key).await {
        Ok(e) => Ok(pages.redirect(
            &back,
            Flash::success(format!(
                "{} is stopped: no new exposures, and later conversions are not counted.",
                e.key
            )),
        )),
        Err(BackofficeError::Conflict { message, .. }) => {
            Ok(pages.redirect(&back, Flash::error(message)))
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variant_lines_take_key_share_and_description() {
        let v = variant_lines("control 50 Today\n\nchallenger 50% New hero, bigger\n").expect("ok");
        assert_eq!(v.len(), 2);
        assert_eq!(v[1].key, "challenger");
        assert_eq!(v[1].percent, Some(50.0));
        assert_eq!(v[1].description, "New hero, bigger");
        let bad = variant_lines("control fifty").expect_err("refused");
        assert!(bad[0].contains("line 1"), "{bad:?}");
    }
}
