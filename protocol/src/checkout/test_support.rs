//! Products and baskets for the checkout tests.

use crate::basket::{Basket, BasketOwner};
use crate::catalog::{CategoryId, Product, Variant};
use crate::ids::{BasketId, ProductId, Sku};
use crate::money::{Currency, Money};
use time::OffsetDateTime;

pub fn eur(minor: i64) -> Money {
    Money::new(minor, Currency::EUR)
}

/// A one-variant product: `class` is `standard` (home rate 19 %), `reduced` (7 %) or `zero`.
pub fn product(sku: &str, price: i64, class: &str, weight_grams: u32) -> Product {
    Product {
        id: ProductId::new(),
        slug: sku.to_lowercase(),
        name: format!("Product {sku}"),
        brand: "Brand".into(),
        description: String::new(),
        category: CategoryId("c".into()),
        tax_rate_bp: match class {
            "standard" => 1900,
            "reduced" => 700,
            _ => 0,
        },
        tax_class: class.into(),
        image: String::new(),
        variants: vec![Variant {
            sku: Sku::parse(sku).expect("valid sku"),
            title: "Default".into(),
            price: eur(price),
            compare_at: None,
            barcode: None,
            weight_grams,
        }],
        attributes: Default::default(),
    }
}

/// A basket with `quantities[i]` of `products[i]`, in that order.
pub fn basket(products: &[Product], quantities: &[u32]) -> Basket {
    let now = OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("valid time");
    let mut basket = Basket::new(BasketId::new(), BasketOwner::Anonymous, Currency::EUR, now);
    for (product, quantity) in products.iter().zip(quantities) {
        basket
            .add(
                product.variants[0].sku.clone(),
                i64::from(*quantity),
                1_000,
                now,
            )
            .expect("adds");
    }
    basket
}

/// The catalog lookup over `products`.
pub fn lookup<'a>(products: &'a [Product]) -> impl Fn(&Sku) -> Option<&'a Product> {
    move |sku| products.iter().find(|p| p.variant(sku).is_some())
}
