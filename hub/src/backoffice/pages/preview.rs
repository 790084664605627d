//! `GET /backoffice/preview`: the storefront and a board as a member of a segment would see
//! them (marketers, analysts, admins). Nothing here is a copy of the live pages' choices: the
//! home hero and a product page's recommendations come from
//! [`crate::personalization::Personalization::preview`], the resolution the storefront calls
//! for a shopper (with the shopper's segments, here the chosen one), the hero's picture and
//! link from the storefront's own [`channels::web::hero_image_and_link`], and the board's items
//! from the published playlist's [`protocol::board::BoardPlaylist::items_for`], which the
//! stores' nodes call, with the `board_item` slot beside it. Nothing is recorded: no events, no
//! exposures.

use super::playlists::{item_rows, scopes};
use super::slots::segment_list;
use super::{BackOfficeSession, PageFailure, Pages};
use crate::app::HubHandle;
use crate::backoffice::access::{policy, Policy};
use crate::experience::segments;
use crate::personalization::SlotError;
use actix_web::{web, HttpRequest, HttpResponse};
use channels::backend::SlotView;
use channels::Backend;
use minijinja::context;
use protocol::personalization::{Content, SlotChannel, SlotName};
use protocol::{LocationId, Sku};
use serde::{Deserialize, Serialize};

/// The storefront channels a preview can take.
const CHANNELS: [SlotChannel; 3] = [SlotChannel::Web, SlotChannel::Mobile, SlotChannel::Pos];

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(super::page("/backoffice/preview").route(web::get().to(show)));
}

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct PreviewQuery {
    /// A segment key, or several separated by commas (empty: a shopper in no segment).
    #[serde(default)]
    segment: Option<String>,
    #[serde(default)]
    channel: Option<String>,
    /// The product page whose recommendations to show (default: the first product).
    #[serde(default)]
    product: Option<String>,
    /// The board playlist's scope: `all` or a store location.
    #[serde(default)]
    store: Option<String>,
}

/// A slot as resolved, or `None` when nobody configured it and it has no built-in default
/// (the live page then shows its own content).
/// The preview is of a segment, outside every A/B test: variants bound to an experiment
/// (`docs/experiments.md`) are not shown; the slots API's preview picks them
/// (`experiments: {key: variant}`).
static NO_EXPERIMENTS: std::collections::BTreeMap<String, String> =
    std::collections::BTreeMap::new();

async fn slot(
    handle: &HubHandle,
    slot: SlotName,
    segments: &[String],
    channel: SlotChannel,
    product: Option<&Sku>,
) -> Result<Option<SlotView>, PageFailure> {
    match handle
        .personalization
        .preview(slot, segments, &NO_EXPERIMENTS, channel, product)
        .await
    {
        Ok(v) => Ok(Some(v)),
        Err(SlotError::NotConfigured(_)) => Ok(None),
        Err(SlotError::Storage(e)) => Err(e.into()),
        Err(SlotError::Backoffice(e)) => Err(e.into()),
        Err(SlotError::Invalid(_)) => Ok(None),
    }
}

async fn show(
    req: HttpRequest,
    pages: web::Data<Pages>,
    handle: web::Data<HubHandle>,
    bo: web::Data<crate::backoffice::Backoffice>,
    session: BackOfficeSession,
    query: web::Query<PreviewQuery>,
) -> Result<HttpResponse, PageFailure> {
    session.require(policy::MarketingReports::ROLES)?;
    let defs = segments::definitions(&bo)?;
    let known: Vec<minijinja::Value> = defs
        .iter()
        .map(|d| context! { key => d.key.clone(), name => d.name.clone() })
        .collect();
    let chosen = segment_list(query.segment.as_deref().unwrap_or(""));
    let mut problems = Vec::new();
    for s in &chosen {
        if !defs.iter().any(|d| &d.key == s) {
            problems.push(format!(
                "segment: there is no segment {s:?}; the preview shows it anyway (a slot naming it would match)"
            ));
        }
    }
    let channel = match query.channel.as_deref() {
        None | Some("") => SlotChannel::Web,
        Some(text) => match SlotChannel::parse(text).filter(|c| CHANNELS.contains(c)) {
            Some(c) => c,
            None => {
                problems.push(format!(
                    "channel: one of {}; showing web",
                    CHANNELS.map(|c| c.as_str()).join(", ")
                ));
                SlotChannel::Web
            }
        },
    };
    let catalog = handle.backend.catalog();
    let product = match query
        .product
        .as_deref()
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        Some(text) => match Sku::parse(text)
            .ok()
            .and_then(|s| catalog.product_by_sku(&s).map(|p| (s, p)))
        {
            Some(found) => Some(found),
            None => {
                problems.push(format!("product: no product has SKU {text:?}"));
                None
            }
        },
        None => None,
    }
    .or_else(|| {
        catalog
            .products()
            .iter()
            .find_map(|p| p.variants.first().map(|v| (v.sku.clone(), p)))
    });

    // The storefront's home hero.
    let hero_view = slot(&handle, SlotName::HomeHero, &chosen, channel, None).await?;
    let hero = hero_view.as_ref().and_then(|view| match &view.content {
        Content::Hero(hero) => {
            let (image, link) = channels::web::hero_image_and_link(hero, &catalog);
            Some(context! {
                title => hero.title.clone(),
                text => hero.text.clone(),
                image,
                link,
                variant => view.variant.clone(),
                reason => view.reason.clone(),
            })
        }
        _ => None,
    });

    // A product page's recommendations.
    let sku = product.as_ref().map(|(s, _)| s.clone());
    let rec_view = slot(
        &handle,
        SlotName::ProductRecommendations,
        &chosen,
        channel,
        sku.as_ref(),
    )
    .await?;
    let recommendations = rec_view.as_ref().map(|view| {
        let title = match &view.content {
            Content::Recommendations(r) => r
                .title
                .clone()
                .unwrap_or_else(|| r.strategy.default_title().to_string()),
            _ => String::new(),
        };
        let products: Vec<minijinja::Value> = view
            .products
            .iter()
            .filter_map(|s| {
                let p = catalog.product_by_sku(s)?;
                Some(context! {
                    sku => s.as_str(),
                    name => p.name.clone(),
                    slug => p.slug.clone(),
                    image => p.image.clone(),
                    price => p.variant(s).map(|v| v.price),
                })
            })
            .collect();
        context! {
            title,
            products,
            variant => view.variant.clone(),
            reason => view.reason.clone(),
        }
    });

    // A board: the playlist its store plays, the items for this segment, and the slot's item.
    let all_scopes = scopes(&handle);
    let store = query
        .store
        .clone()
        .filter(|s| all_scopes.contains(s))
        .unwrap_or_else(|| crate::edge::boards::ALL.to_string());
    let (version, playlist) = if store == crate::edge::boards::ALL {
        let (version, published) = handle.boards.list();
        (
            version,
            published
                .get(crate::edge::boards::ALL)
                .map(|p| p.playlist.clone())
                .unwrap_or_default(),
        )
    } else {
        handle.boards.current_for(&LocationId(store.clone()))
    };
    let (board_segment, board_items) = playlist.items_for(&chosen);
    let board_item_view = slot(
        &handle,
        SlotName::BoardItem,
        &chosen,
        SlotChannel::Board,
        None,
    )
    .await?;
    let board_item = board_item_view
        .as_ref()
        .and_then(|view| match &view.content {
            Content::BoardItem(item) => Some(context! {
                rows => item_rows(&handle, std::slice::from_ref(item)),
                variant => view.variant.clone(),
                reason => view.reason.clone(),
            }),
            _ => None,
        });

    pages.render(
        &req,
        &session,
        "preview.html",
        context! {
            segments => known,
            chosen => chosen.join(", "),
            channel => channel.as_str(),
            channels => CHANNELS.map(|c| c.as_str()),
            product => product.as_ref().map(|(s, p)| context! { sku => s.as_str(), name => p.name.clone() }),
            problems,
            hero,
            recommendations,
            stores => all_scopes,
            store,
            board => context! {
                version,
                segment => board_segment,
                items => item_rows(&handle, board_items),
                item => board_item,
            },
        },
    )
}
