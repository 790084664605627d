//! `protocol` is Omnihub's shared language: the domain types every crate speaks (money, ids,
//! catalog, stock, baskets, customers, channels, interaction events), the pricing functions that
//! every channel calls so a basket costs the same on the web, in the app and at the till, and the
//! codec that is the only encoder of stored values.
//!
//! It is not a place for I/O: nothing here touches the network, the disk or the clock (callers
//! pass the time in). Entry points: [`money::Money`], [`pricing::price_basket`],
//! [`pricing::price_basket_with_promotions`] (the [`promotion`] engine),
//! [`checkout::price_checkout`], [`basket::Basket`], [`codec::encode`] / [`codec::decode`].

pub mod automation;
pub mod basket;
pub mod board;
pub mod catalog;
pub mod channel;
pub mod checkout;
pub mod codec;
pub mod consent;
pub mod customer;
pub mod event;
pub mod experience;
pub mod experiment;
pub mod feed;
pub mod ids;
pub mod money;
pub mod oauth;
pub mod order;
pub mod outbox;
pub mod personalization;
pub mod pricing;
pub mod privacy;
pub mod promotion;
pub mod replication;
pub mod stock;

pub use basket::{Basket, BasketError, BasketLine, BasketOwner, MAX_LINE_QUANTITY};
pub use catalog::{
    CatalogPage, CatalogQuery, CatalogSnapshot, Category, CategoryId, CursorError, Product, Sort,
    Variant, STANDARD_TAX_CLASS,
};
pub use channel::Channel;
pub use checkout::{
    price_checkout, price_checkout_with_line_discounts, Address, Breakdown, CheckoutConfig,
    CheckoutError, FieldError, LineDiscounts, Market, ShippingOption, ShippingZone,
};
pub use codec::{decode, encode, CodecError, Stored};
pub use consent::{ConsentChannel, ConsentChoice, ConsentPurpose, ConsentSource, Consents};
pub use customer::{CustomerRecord, SessionRecord};
pub use event::{Event, EventChunk, EventChunkRef, EventKind, Subject};
pub use ids::{
    AnonymousId, BasketId, CheckoutId, CustomerId, EventId, LocationId, OrderId, ProductId, Sku,
    SkuError,
};
pub use money::{Currency, Money, MoneyError};
pub use outbox::OutboxMessage;
pub use pricing::{price_basket_with_promotions, PricedBasket, PricedLine, TaxLine};
pub use promotion::{
    Promotion, PromotionContext, PromotionId, PromotionOutcome, PromotionSet, PromotionSpec,
    PromotionSummary,
};
pub use stock::StockLevel;
