//! Catalog reads: categories, product listing with search, filter, sort and cursor pagination,
//! and product detail with price and availability.

use crate::context::{ChannelState, RequestContext};
use crate::error::ApiError;
use actix_web::{web, HttpResponse};
use protocol::{CatalogQuery, Category, CategoryId, Event, EventKind, Money, Product, Sort};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Text search over name, brand, category and description.
    pub q: Option<String>,
    /// A category id (slug), e.g. `coffee`.
    pub category: Option<String>,
    /// `relevance` (default), `name_asc`, `price_asc` or `price_desc`.
    pub sort: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size, 1 to 100 (default 24).
    pub limit: Option<usize>,
}

/// A product in a listing.
#[derive(Debug, Serialize)]
pub struct ProductSummary<'a> {
    pub id: String,
    pub slug: &'a str,
    pub name: &'a str,
    pub brand: &'a str,
    pub category: &'a CategoryId,
    pub image: &'a str,
    pub from_price: Option<Money>,
}

impl<'a> From<&'a Product> for ProductSummary<'a> {
    fn from(p: &'a Product) -> Self {
        ProductSummary {
            id: p.id.to_string(),
            slug: &p.slug,
            name: &p.name,
            brand: &p.brand,
            category: &p.category,
            image: &p.image,
            from_price: p.from_price(),
        }
    }
}

#[derive(Serialize)]
struct ListBody<'a> {
    items: Vec<ProductSummary<'a>>,
    total: usize,
    next_cursor: Option<String>,
}

pub async fn categories(state: web::Data<ChannelState>) -> HttpResponse {
    let catalog = state.backend.catalog();
    #[derive(Serialize)]
    struct Body<'a> {
        items: &'a [Category],
    }
    HttpResponse::Ok().json(Body {
        items: catalog.categories(),
    })
}

/// Parses listing parameters into a catalog query; bad values are a 400 that says what to fix.
pub fn parse_query(
    params: &ListParams,
    known_category: impl Fn(&CategoryId) -> bool,
) -> Result<CatalogQuery, ApiError> {
    let sort = match params.sort.as_deref() {
        None => Sort::default(),
        Some(s) => Sort::parse(s).ok_or_else(|| {
            ApiError::bad_request(
                "bad_sort",
                format!("unknown sort '{s}': use relevance, name_asc, price_asc or price_desc"),
            )
        })?,
    };
    let limit = params.limit.unwrap_or(24);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::bad_request(
            "bad_limit",
            "limit must be between 1 and 100",
        ));
    }
    let category = params
        .category
        .as_ref()
        .filter(|c| !c.is_empty())
        .map(|c| CategoryId(c.clone()));
    if let Some(c) = &category {
        if !known_category(c) {
            return Err(ApiError::not_found(&format!("category '{c}'")));
        }
    }
    let text = params
        .q
        .as_ref()
        .map(|q| q.trim().to_string())
        .filter(|q| !q.is_empty());
    if text.as_ref().is_some_and(|q| q.len() > 200) {
        return Err(ApiError::bad_request(
            "query_too_long",
            "a search query is at most 200 characters",
        ));
    }
    Ok(CatalogQuery {
        text,
        category,
        sort,
        cursor: params.cursor.clone(),
        limit,
    })
}

pub async fn list(
    state: web::Data<ChannelState>,
    ctx: RequestContext,
    params: web::Query<ListParams>,
) -> Result<HttpResponse, ApiError> {
    let catalog = state.backend.catalog();
    let query = parse_query(&params, |c| catalog.category(c).is_some())?;
    let page = catalog
        .query(&query)
        .map_err(|e| ApiError::bad_request("bad_cursor", e.to_string()))?;
    if let Some(text) = &query.text {
        if query.cursor.is_none() {
            state.backend.record(
                Event::new(
                    OffsetDateTime::now_utc(),
                    ctx.subject(),
                    ctx.channel,
                    EventKind::Search,
                )
                .with("query", text)
                .with("results", page.total),
            );
        }
    }
    Ok(HttpResponse::Ok().json(ListBody {
        items: page
            .items
            .iter()
            .map(|p| ProductSummary::from(*p))
            .collect(),
        total: page.total,
        next_cursor: page.next_cursor,
    }))
}

#[derive(Serialize)]
struct VariantBody<'a> {
    sku: &'a protocol::Sku,
    title: &'a str,
    price: Money,
    compare_at: Option<Money>,
    available: i64,
}

#[derive(Serialize)]
struct DetailBody<'a> {
    id: String,
    slug: &'a str,
    name: &'a str,
    brand: &'a str,
    description: &'a str,
    category: &'a CategoryId,
    image: &'a str,
    tax_rate_bp: u32,
    attributes: &'a std::collections::BTreeMap<String, String>,
    variants: Vec<VariantBody<'a>>,
}

/// Product detail by slug or by product id.
pub async fn detail(
    state: web::Data<ChannelState>,
    ctx: RequestContext,
    slug: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let catalog = state.backend.catalog();
    let product = catalog
        .product_by_slug(&slug)
        .or_else(|| slug.parse().ok().and_then(|id| catalog.product(id)))
        .ok_or_else(|| ApiError::not_found(&format!("product '{}'", slug.as_str())))?;
    let skus: Vec<protocol::Sku> = product.variants.iter().map(|v| v.sku.clone()).collect();
    let availability = state.backend.availability(&skus).await?;
    state.backend.record(
        Event::new(
            OffsetDateTime::now_utc(),
            ctx.subject(),
            ctx.channel,
            EventKind::ProductView,
        )
        .with("slug", &product.slug)
        .with("category", &product.category),
    );
    let variants = product
        .variants
        .iter()
        .zip(availability)
        .map(|(v, a)| VariantBody {
            sku: &v.sku,
            title: &v.title,
            price: v.price,
            compare_at: v.compare_at,
            available: a.available,
        })
        .collect();
    Ok(HttpResponse::Ok().json(DetailBody {
        id: product.id.to_string(),
        slug: &product.slug,
        name: &product.name,
        brand: &product.brand,
        description: &product.description,
        category: &product.category,
        image: &product.image,
        tax_rate_bp: product.tax_rate_bp,
        attributes: &product.attributes,
        variants,
    }))
}

/// `POST /products/{sku}/subscriptions`: the signed-in customer asks for one email when the SKU
/// is back in stock; 201 when new, 200 when they already wait.
pub async fn subscribe(
    state: web::Data<ChannelState>,
    ctx: RequestContext,
    sku: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let customer = ctx.customer()?;
    let sku = protocol::Sku::parse(&sku).map_err(|_| {
        ApiError::unprocessable(
            "invalid_sku",
            format!(
                "invalid SKU '{}': use 1 to 64 characters from A-Z, a-z, 0-9, '-', '_' and '.'",
                sku.chars().take(64).collect::<String>()
            ),
        )
    })?;
    let new = state
        .backend
        .subscribe_back_in_stock(customer, &sku)
        .await?;
    let body = serde_json::json!({ "sku": sku, "subscribed": true });
    Ok(if new {
        HttpResponse::Created().json(body)
    } else {
        HttpResponse::Ok().json(body)
    })
}
