//! Browsing: the home page, category listings, search and product pages.

use super::format::{encode_component, stock_label};
use super::page::{Level, PageError, Visitor};
use crate::backend::SlotQuery;
use crate::context::{ChannelState, RequestContext};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use minijinja::context;
use protocol::personalization::{Content, SlotChannel, SlotName};
use protocol::{
    CatalogPage, CatalogQuery, CatalogSnapshot, CategoryId, EventKind, Money, Product, Sku, Sort,
};
use serde::{Deserialize, Serialize};

/// Products per listing page.
const PAGE_SIZE: usize = 24;
/// Products featured on the home page, and related ones on a product page.
const FEATURED: usize = 8;
const RELATED: usize = 4;
/// Longest search text taken (longer input is cut).
const MAX_QUERY_CHARS: usize = 200;

/// A product as a listing shows it.
#[derive(Debug, Serialize)]
pub struct Card {
    slug: String,
    name: String,
    brand: String,
    image: String,
    price: Option<Money>,
    compare_at: Option<Money>,
    /// Variants differ in price: "from €4.99".
    from: bool,
}

impl Card {
    fn of(p: &Product) -> Card {
        let cheapest = p.variants.iter().min_by_key(|v| v.price.minor);
        Card {
            slug: p.slug.clone(),
            name: p.name.clone(),
            brand: p.brand.clone(),
            image: p.image.clone(),
            price: cheapest.map(|v| v.price),
            compare_at: cheapest
                .and_then(|v| v.compare_at)
                .filter(|c| cheapest.is_some_and(|v| c.minor > v.price.minor)),
            from: p
                .variants
                .iter()
                .any(|v| Some(v.price) != cheapest.map(|c| c.price)),
        }
    }
}

/// A category tile on the home page (its picture is the hub's `/images/category/{id}.svg`).
#[derive(Debug, Serialize)]
struct Tile {
    id: String,
    name: String,
    description: String,
    count: usize,
}

/// The sort orders a listing offers, with the label of "relevance" on that listing.
#[derive(Debug, Serialize)]
struct SortOption {
    value: &'static str,
    label: &'static str,
    selected: bool,
}

fn sort_options(current: Sort, relevance_label: &'static str) -> Vec<SortOption> {
    [
        (Sort::Relevance, relevance_label),
        (Sort::PriceAsc, "Price: low to high"),
        (Sort::PriceDesc, "Price: high to low"),
        (Sort::NameAsc, "Name: A to Z"),
    ]
    .into_iter()
    .map(|(sort, label)| SortOption {
        value: sort.as_str(),
        label,
        selected: sort == current,
    })
    .collect()
}

/// The query string of a listing page.
#[derive(Debug, Default, Deserialize)]
pub struct ListingParams {
    #[serde(default)]
    q: String,
    #[serde(default)]
    sort: String,
    #[serde(default)]
    cursor: String,
}

/// One page of a listing: the catalog query with a bad cursor read as "the first page".
fn listing<'a>(catalog: &'a CatalogSnapshot, mut query: CatalogQuery) -> CatalogPage<'a> {
    match catalog.query(&query) {
        Ok(page) => page,
        Err(_) => {
            query.cursor = None;
            catalog.query(&query).unwrap_or(CatalogPage {
                items: Vec::new(),
                next_cursor: None,
                total: 0,
            })
        }
    }
}

/// `base?q=..&sort=..&cursor=..`, leaving out what is empty or the default.
fn listing_url(base: &str, q: &str, sort: Sort, cursor: Option<&str>) -> String {
    let mut params = Vec::new();
    if !q.is_empty() {
        params.push(format!("q={}", encode_component(q)));
    }
    if sort != Sort::Relevance {
        params.push(format!("sort={}", sort.as_str()));
    }
    if let Some(cursor) = cursor {
        params.push(format!("cursor={}", encode_component(cursor)));
    }
    if params.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", params.join("&"))
    }
}

/// `GET /`: hero, category tiles and featured products (on sale first).
pub async fn home(
    req: HttpRequest,
    state: web::Data<ChannelState>,
    ctx: RequestContext,
) -> Result<HttpResponse, PageError> {
    let visitor = Visitor::new(&req, state, ctx)?;
    let catalog = visitor.state.backend.catalog();
    let tiles: Vec<Tile> = catalog
        .categories()
        .iter()
        .map(|c| Tile {
            id: c.id.0.clone(),
            name: c.name.clone(),
            description: c.description.clone(),
            count: catalog
                .products()
                .iter()
                .filter(|p| p.category == c.id)
                .count(),
        })
        .collect();
    let on_sale = |p: &&Product| {
        p.variants
            .iter()
            .any(|v| v.compare_at.is_some_and(|c| c.minor > v.price.minor))
    };
    let mut featured: Vec<&Product> = catalog
        .products()
        .iter()
        .filter(on_sale)
        .take(FEATURED)
        .collect();
    featured.extend(
        catalog
            .products()
            .iter()
            .filter(|p| !on_sale(p))
            .take(FEATURED - featured.len()),
    );
    let featured: Vec<Card> = featured.into_iter().map(Card::of).collect();
    let hero = personal_hero(&visitor, &catalog).await;
    visitor.record(EventKind::PageView, &[("path", req.path())]);
    visitor
        .render(
            StatusCode::OK,
            "home.html",
            context! { tiles, featured, hero },
        )
        .await
}

/// A content slot for the visitor; `None` when the slot is not configured or cannot be read
/// (the page then shows its own content).
async fn slot_for(
    visitor: &Visitor,
    slot: SlotName,
    product: Option<Sku>,
) -> Option<crate::backend::SlotView> {
    let query = SlotQuery {
        slot,
        channel: SlotChannel::of(visitor.ctx.channel).unwrap_or(SlotChannel::Web),
        product,
    };
    // The same shopper the page's events are about (a first visit has a fresh browser id).
    let mut shopper = visitor.ctx.shopper.clone();
    if let protocol::Subject::Anonymous(a) = visitor.subject() {
        shopper.anonymous = Some(a);
    }
    match visitor.state.backend.slot(&shopper, query).await {
        Ok(view) => Some(view),
        Err(crate::BackendError::NotFound(_)) => None,
        Err(e) => {
            tracing::warn!(error = %e, slot = slot.as_str(), "slot unavailable");
            None
        }
    }
}

/// A hero's picture and link: its own, else its product's. The home page and the back
/// office's segment preview show the same.
pub fn hero_image_and_link(
    hero: &protocol::personalization::Hero,
    catalog: &CatalogSnapshot,
) -> (Option<String>, Option<String>) {
    let product = hero.sku.as_ref().and_then(|s| catalog.product_by_sku(s));
    let image = hero
        .image
        .clone()
        .or_else(|| product.map(|p| p.image.clone()));
    let link = hero
        .link
        .clone()
        .or_else(|| product.map(|p| format!("/p/{}", p.slug)));
    (image, link)
}

/// The home hero chosen for the visitor (`None`: the page's own).
async fn personal_hero(visitor: &Visitor, catalog: &CatalogSnapshot) -> Option<minijinja::Value> {
    let view = slot_for(visitor, SlotName::HomeHero, None).await?;
    let Content::Hero(hero) = view.content else {
        return None;
    };
    let (image, link) = hero_image_and_link(&hero, catalog);
    Some(context! {
        title => hero.title,
        text => hero.text,
        image,
        link,
        variant => view.variant,
    })
}

/// `GET /c/{category}`: one category, sorted and paginated.
pub async fn category(
    req: HttpRequest,
    state: web::Data<ChannelState>,
    ctx: RequestContext,
    path: web::Path<String>,
    params: web::Query<ListingParams>,
) -> Result<HttpResponse, PageError> {
    let visitor = Visitor::new(&req, state, ctx)?;
    let catalog = visitor.state.backend.catalog();
    let id = CategoryId(path.into_inner());
    let Some(category) = catalog.category(&id) else {
        return visitor
            .render_missing(
                req.path(),
                PageError::new(
                    StatusCode::NOT_FOUND,
                    "Category not found",
                    "This category does not exist (any more). Have a look at the others above.",
                ),
            )
            .await;
    };
    let sort = Sort::parse(&params.sort).unwrap_or_default();
    let cursor = Some(params.cursor.clone()).filter(|c| !c.is_empty());
    let page = listing(
        &catalog,
        CatalogQuery {
            text: None,
            category: Some(id.clone()),
            sort,
            cursor: cursor.clone(),
            limit: PAGE_SIZE,
        },
    );
    let base = format!("/c/{}", encode_component(&id.0));
    visitor.record(EventKind::PageView, &[("path", req.path())]);
    visitor
        .render(
            StatusCode::OK,
            "listing.html",
            context! {
                kind => "category",
                title => &category.name,
                description => &category.description,
                current_category => &id.0,
                action => &base,
                products => page.items.iter().map(|p| Card::of(p)).collect::<Vec<_>>(),
                total => page.total,
                sorts => sort_options(sort, "Featured"),
                next_url => page.next_cursor.as_deref().map(|c| listing_url(&base, "", sort, Some(c))),
                first_url => cursor.is_some().then(|| listing_url(&base, "", sort, None)),
            },
        )
        .await
}

/// `GET /search?q=`: text search over the catalog, sorted and paginated.
pub async fn search(
    req: HttpRequest,
    state: web::Data<ChannelState>,
    ctx: RequestContext,
    params: web::Query<ListingParams>,
) -> Result<HttpResponse, PageError> {
    let visitor = Visitor::new(&req, state, ctx)?;
    let catalog = visitor.state.backend.catalog();
    let q: String = params.q.trim().chars().take(MAX_QUERY_CHARS).collect();
    let sort = Sort::parse(&params.sort).unwrap_or_default();
    let cursor = Some(params.cursor.clone()).filter(|c| !c.is_empty());
    let page = if q.is_empty() {
        CatalogPage {
            items: Vec::new(),
            next_cursor: None,
            total: 0,
        }
    } else {
        listing(
            &catalog,
            CatalogQuery {
                text: Some(q.clone()),
                category: None,
                sort,
                cursor: cursor.clone(),
                limit: PAGE_SIZE,
            },
        )
    };
    visitor.record(EventKind::PageView, &[("path", req.path())]);
    if !q.is_empty() && cursor.is_none() {
        visitor.record(
            EventKind::Search,
            &[("query", &q), ("results", &page.total.to_string())],
        );
    }
    visitor
        .render(
            StatusCode::OK,
            "listing.html",
            context! {
                kind => "search",
                title => if q.is_empty() { "Search".to_string() } else { format!("Results for “{q}”") },
                query => &q,
                action => "/search",
                products => page.items.iter().map(|p| Card::of(p)).collect::<Vec<_>>(),
                total => page.total,
                sorts => sort_options(sort, "Best match"),
                next_url => page.next_cursor.as_deref().map(|c| listing_url("/search", &q, sort, Some(c))),
                first_url => cursor.is_some().then(|| listing_url("/search", &q, sort, None)),
            },
        )
        .await
}

/// The query string of a product page: which variant to preselect.
#[derive(Debug, Default, Deserialize)]
pub struct ProductParams {
    #[serde(default)]
    variant: String,
}

/// One variant in the picker, with its availability.
#[derive(Debug, Serialize)]
struct VariantChoice {
    sku: String,
    title: String,
    price: Money,
    compare_at: Option<Money>,
    stock: String,
    stock_class: &'static str,
    can_buy: bool,
    checked: bool,
}

/// `GET /p/{slug}`: the product with its variants, availability and the add-to-basket form.
pub async fn product(
    req: HttpRequest,
    state: web::Data<ChannelState>,
    ctx: RequestContext,
    slug: web::Path<String>,
    params: web::Query<ProductParams>,
) -> Result<HttpResponse, PageError> {
    let visitor = Visitor::new(&req, state, ctx)?;
    let catalog = visitor.state.backend.catalog();
    let Some(product) = catalog.product_by_slug(&slug) else {
        return visitor
            .render_missing(
                req.path(),
                PageError::new(
                    StatusCode::NOT_FOUND,
                    "Product not found",
                    "This product is no longer in our range. Try searching for something similar.",
                ),
            )
            .await;
    };
    let skus: Vec<Sku> = product.variants.iter().map(|v| v.sku.clone()).collect();
    let stock = match visitor.state.backend.availability(&skus).await {
        Ok(levels) if levels.len() == skus.len() => Some(levels),
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(error = %e, slug = %product.slug, "availability unknown");
            None
        }
    };
    let mut variants: Vec<VariantChoice> = product
        .variants
        .iter()
        .enumerate()
        .map(|(i, v)| {
            // Unknown availability: offer it and let the basket say if it runs short.
            let (stock_class, stock_text) = stock
                .as_ref()
                .map_or(("unknown", String::new()), |s| stock_label(s[i].available));
            VariantChoice {
                sku: v.sku.to_string(),
                title: v.title.clone(),
                price: v.price,
                compare_at: v.compare_at.filter(|c| c.minor > v.price.minor),
                stock: stock_text,
                stock_class,
                can_buy: stock_class != "out",
                checked: false,
            }
        })
        .collect();
    let chosen = variants
        .iter()
        .position(|v| v.can_buy && v.sku == params.variant)
        .or_else(|| variants.iter().position(|v| v.can_buy))
        .or_else(|| variants.iter().position(|v| v.sku == params.variant))
        .unwrap_or(0);
    if let Some(v) = variants.get_mut(chosen) {
        v.checked = true;
    }
    let selected = variants.get(chosen);
    let category = catalog.category(&product.category);
    let related: Vec<Card> = catalog
        .products()
        .iter()
        .filter(|p| p.category == product.category && p.id != product.id)
        .take(RELATED)
        .map(Card::of)
        .collect();
    let page_sku = selected
        .and_then(|v| Sku::parse(&v.sku).ok())
        .or_else(|| product.variants.first().map(|v| v.sku.clone()));
    let recommended = match slot_for(&visitor, SlotName::ProductRecommendations, page_sku).await {
        Some(view) => match &view.content {
            Content::Recommendations(r) if !view.products.is_empty() => Some(context! {
                title => r.title.clone().unwrap_or_else(|| r.strategy.default_title().to_string()),
                products => view.products.iter().filter_map(|s| catalog.product_by_sku(s)).map(Card::of).collect::<Vec<_>>(),
                variant => view.variant,
            }),
            _ => None,
        },
        None => None,
    };
    visitor.record(EventKind::PageView, &[("path", req.path())]);
    visitor.record(
        EventKind::ProductView,
        &[
            ("slug", &product.slug),
            ("sku", selected.map_or("", |v| v.sku.as_str())),
            ("category", &product.category.0),
        ],
    );
    let page = context! {
        product => context! {
            slug => &product.slug,
            name => &product.name,
            brand => &product.brand,
            description => &product.description,
            summary => product.description.chars().take(160).collect::<String>(),
            image => &product.image,
            attributes => &product.attributes,
        },
        category => category.map(|c| context! { id => &c.id.0, name => &c.name }),
        current_category => &product.category.0,
        selected => selected.map(|v| context! { price => v.price, compare_at => v.compare_at }),
        buyable => variants.iter().any(|v| v.can_buy),
        sold_out => variants.iter().filter(|v| v.stock_class == "out").map(|v| context! { sku => &v.sku, title => &v.title }).collect::<Vec<_>>(),
        signed_in => visitor.ctx.shopper.customer.is_some(),
        variants,
        related,
        recommended,
    };
    visitor.render(StatusCode::OK, "product.html", page).await
}

/// The back-in-stock form of a product page.
#[derive(Debug, Default, Deserialize)]
pub struct NotifyForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    sku: String,
}

/// `POST /p/{slug}/notify` (sku): the signed-in shopper asks for an email when a sold-out
/// variant is back; back to the product page with a message.
pub async fn notify(
    req: HttpRequest,
    state: web::Data<ChannelState>,
    ctx: RequestContext,
    slug: web::Path<String>,
    form: web::Form<NotifyForm>,
) -> Result<HttpResponse, PageError> {
    let mut visitor = Visitor::new(&req, state, ctx)?;
    visitor.check_form(&req, &form.csrf)?;
    let back = format!("/p/{}", encode_component(&slug));
    let Some(customer) = visitor.ctx.shopper.customer else {
        let next = encode_component(&back);
        return Ok(visitor.redirect(&format!("/signin?next={next}")));
    };
    let catalog = visitor.state.backend.catalog();
    let sku = Sku::parse(form.sku.trim())
        .ok()
        .filter(|s| catalog.product_by_sku(s).is_some_and(|p| p.slug == *slug));
    let Some(sku) = sku else {
        visitor.flash(
            Level::Error,
            "Please choose the option you want to hear about.",
        );
        return Ok(visitor.redirect(&back));
    };
    match visitor
        .state
        .backend
        .subscribe_back_in_stock(customer, &sku)
        .await
    {
        Ok(_) => visitor.flash(
            Level::Success,
            "We will email you once when it is back in stock.",
        ),
        Err(crate::backend::BackendError::Conflict { .. }) => {
            visitor.flash(Level::Info, "Good news: it is in stock now.")
        }
        Err(e) => {
            tracing::warn!(error = %e, "back-in-stock subscription failed");
            visitor.flash(
                Level::Error,
                "We could not save that just now. Please try again.",
            )
        }
    }
    Ok(visitor.redirect(&back))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_urls_keep_only_what_differs_from_the_default() {
        assert_eq!(listing_url("/c/tea", "", Sort::Relevance, None), "/c/tea");
        assert_eq!(
            listing_url("/c/tea", "", Sort::PriceAsc, Some("6e7e")),
            "/c/tea?sort=price_asc&cursor=6e7e"
        );
        assert_eq!(
            listing_url("/search", "green & black", Sort::Relevance, Some("ab")),
            "/search?q=green%20%26%20black&cursor=ab"
        );
    }
}
