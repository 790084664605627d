//! `protocol` is Omnihub's shared language: the domain types every crate speaks (money, ids,
//! catalog, stock, baskets, customers, channels, interaction events), the pricing functions that
//! every channel calls so a basket costs the same on the web, in the app and at the till, and the
//! codec that is the only encoder of stored values.
//!
//! It is not a place for I/O: nothing here touches the network, the disk or the clock (callers
//! pass the time in). Entry points: [`money::Money`], [`pricing::price_basket`],
//! [`basket::Basket`], [`codec::encode`] / [`codec::decode`].

pub mod basket;
pub mod catalog;
pub mod channel;
pub mod codec;
pub mod customer;
pub mod event;
pub mod ids;
pub mod money;
pub mod outbox;
pub mod pricing;
pub mod stock;

pub use basket::{Basket, BasketError, BasketLine, BasketOwner, MAX_LINE_QUANTITY};
pub use catalog::{
    CatalogPage, CatalogQuery, CatalogSnapshot, Category, CategoryId, CursorError, Product, Sort,
    Variant,
};
pub use channel::Channel;
pub use codec::{decode, encode, CodecError, Stored};
pub use customer::{CustomerRecord, SessionRecord};
pub use event::{Event, EventKind, Subject};
pub use ids::{AnonymousId, BasketId, CustomerId, EventId, LocationId, ProductId, Sku, SkuError};
pub use money::{Currency, Money, MoneyError};
pub use outbox::OutboxMessage;
pub use pricing::{PricedBasket, PricedLine, TaxLine};
pub use stock::StockLevel;
