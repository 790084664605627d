//! The assistant: answers each [`Turn`] over the same [`Backend`] as the storefront. It resolves
//! product names against the catalog, changes baskets only through the basket commands every
//! channel uses (the hub prices every line; the assistant never sets a price), and keeps what
//! it asked ("which one?") in the turn's [`DialogState`] as SKUs only.

use super::nlu::{choice_position, product_words, quantity_value, word_matches, words};
use super::{Card, Conversation, DialogState, Intent, Reply, Turn};
use crate::backend::{Backend, BackendError, BasketCommand, BasketView, Shopper, StoreView};
use async_trait::async_trait;
use protocol::{CatalogSnapshot, Channel, Event, EventKind, Money, Product, Sku, Variant};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use time::OffsetDateTime;

/// Settings of the assistant (`[channels.assistant]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AssistantSettings {
    /// The shop's name as the assistant says it.
    pub shop_name: String,
    /// The most units of one product the assistant puts on a basket line.
    pub max_quantity_per_line: u32,
    /// How many search results or options it reads out.
    pub results: usize,
    /// Chat messages allowed per shopper (customer, basket or browser) per minute.
    pub chat_turns_per_minute: u32,
    /// Opening hours (and a name, where the hub's edge configuration has none) per store.
    pub stores: Vec<StoreHours>,
}

/// A store's opening hours, in words.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreHours {
    /// The store's location id, e.g. `store-berlin`.
    pub location: String,
    /// Its name for people; the edge node's name is used when the hub has one.
    #[serde(default)]
    pub name: String,
    /// E.g. `["Monday to Saturday 8 am to 8 pm", "closed on Sundays"]`.
    #[serde(default)]
    pub hours: Vec<String>,
}

impl Default for AssistantSettings {
    fn default() -> Self {
        let hours = |location: &str, name: &str, hours: &[&str]| StoreHours {
            location: location.into(),
            name: name.into(),
            hours: hours.iter().map(|h| h.to_string()).collect(),
        };
        AssistantSettings {
            shop_name: "Omnihub Market".into(),
            max_quantity_per_line: 20,
            results: 3,
            chat_turns_per_minute: 30,
            stores: vec![
                hours(
                    "store-berlin",
                    "Berlin Mitte",
                    &["Monday to Saturday 8 am to 8 pm", "closed on Sundays"],
                ),
                hours(
                    "store-hamburg",
                    "Hamburg Altona",
                    &[
                        "Monday to Friday 9 am to 7 pm",
                        "Saturday 9 am to 6 pm",
                        "closed on Sundays",
                    ],
                ),
            ],
        }
    }
}

/// What the assistant asked and waits an answer to. SKUs only: a forged state can at most
/// name products anyone may add.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Pending {
    /// Which product to add, `quantity` units.
    Add { options: Vec<String>, quantity: u32 },
    /// Which basket line to remove.
    Remove { options: Vec<String> },
}

/// A turn's full result: the reply and what the channel may show or must keep besides it.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub reply: Reply,
    /// The basket after this turn changed it.
    pub basket: Option<BasketView>,
    /// The token of an anonymous basket this turn created (the channel hands it to the
    /// client, as the storefront does).
    pub basket_token: Option<String>,
    /// What the shopper might say next.
    pub suggestions: Vec<String>,
    /// A link to follow (the checkout page).
    pub link: Option<String>,
    /// How the turn ended, for the event log: `answered`, `added`, `asked`, `refused`, …
    pub outcome: &'static str,
}

/// An answer being put together.
#[derive(Debug, Default)]
struct Answer {
    text: String,
    ssml: Option<String>,
    reprompt: Option<String>,
    card: Option<Card>,
    end: bool,
    link_account: bool,
    pending: Option<Pending>,
    basket: Option<BasketView>,
    token: Option<String>,
    suggestions: Vec<String>,
    link: Option<String>,
    outcome: &'static str,
}

impl Answer {
    fn say(text: impl Into<String>, outcome: &'static str) -> Answer {
        Answer {
            text: text.into(),
            outcome,
            ..Answer::default()
        }
    }

    /// An answer reading a list: "intro 1. a, 2. b. outro", spoken with pauses.
    fn list(intro: &str, items: &[String], outro: &str, outcome: &'static str) -> Answer {
        let text = [intro.to_string(), items.join(" "), outro.to_string()]
            .into_iter()
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        let mut ssml = escape_ssml(intro);
        for item in items {
            ssml.push_str("<break time=\"300ms\"/>");
            ssml.push_str(&escape_ssml(item));
        }
        if !outro.is_empty() {
            ssml.push_str("<break time=\"300ms\"/>");
            ssml.push_str(&escape_ssml(outro));
        }
        Answer {
            text,
            ssml: Some(format!("<speak>{ssml}</speak>")),
            outcome,
            ..Answer::default()
        }
    }

    fn ask(mut self, reprompt: impl Into<String>) -> Answer {
        self.reprompt = Some(reprompt.into());
        self
    }

    fn card(mut self, title: &str, text: impl Into<String>) -> Answer {
        self.card = Some(Card {
            title: title.to_string(),
            text: text.into(),
        });
        self
    }

    fn suggest(mut self, suggestions: &[&str]) -> Answer {
        self.suggestions = suggestions.iter().map(|s| s.to_string()).collect();
        self
    }
}

/// Escapes text for SSML (XML): `& < > " '`.
pub fn escape_ssml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// An amount as it is said: "2 euros 49", "12 euros", "49 cents", "1 pound 20".
pub fn money_words(money: Money) -> String {
    let (unit, units, sub, subs) = match money.currency.code() {
        "EUR" => ("euro", "euros", "cent", "cents"),
        "USD" => ("dollar", "dollars", "cent", "cents"),
        "GBP" => ("pound", "pounds", "penny", "pence"),
        code => return format!("{} {code}", money.to_decimal_string()),
    };
    let sign = if money.minor < 0 { "minus " } else { "" };
    let scale = 10i64.pow(u32::from(money.currency.exponent()));
    let minor = money.minor.unsigned_abs();
    let (whole, part) = (minor / scale as u64, minor % scale as u64);
    let plural = |n: u64, one: &str, many: &str| if n == 1 { one } else { many }.to_string();
    match (whole, part) {
        (0, p) => format!("{sign}{p} {}", plural(p, sub, subs)),
        (w, 0) => format!("{sign}{w} {}", plural(w, unit, units)),
        (w, p) => format!("{sign}{w} {} {p:02}", plural(w, unit, units)),
    }
}

/// "a", "a and b", "a, b and c".
fn and_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// An email address as said back: "a***@example.com".
fn mask_email(email: &str) -> String {
    match email.split_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => "your email address".into(),
    }
}

/// A product variant that matches what the shopper said.
struct Candidate<'a> {
    product: &'a Product,
    variant: &'a Variant,
    score: u32,
}

impl Candidate<'_> {
    fn label(&self) -> String {
        label(self.product, self.variant)
    }
}

fn label(product: &Product, variant: &Variant) -> String {
    if product.variants.len() > 1 || !variant.title.trim().is_empty() {
        format!("{}, {}", product.name, variant.title)
    } else {
        product.name.clone()
    }
}

/// Every variant whose product's name, brand, category or pack size holds every word said,
/// best first (words in the name count most, an exact name most of all).
fn find<'a>(catalog: &'a CatalogSnapshot, said: &[String]) -> Vec<Candidate<'a>> {
    if said.is_empty() {
        return Vec::new();
    }
    let mut found = Vec::new();
    for product in catalog.products() {
        let name = words(&product.name);
        let mut other = words(&product.brand);
        other.extend(words(&product.category.0));
        if let Some(c) = catalog.category(&product.category) {
            other.extend(words(&c.name));
        }
        let core = product_words(&product.name);
        let exact = said.len() == core.len() && said.iter().all(|w| core.contains(w));
        for variant in &product.variants {
            let pack = words(&variant.title);
            let mut score = if exact { 10 } else { 0 };
            let all = said.iter().all(|w| {
                let hit = |list: &[String]| list.iter().any(|x| word_matches(w, x));
                let points = if hit(&name) {
                    3
                } else if hit(&pack) {
                    2
                } else if hit(&other) {
                    1
                } else {
                    return false;
                };
                score += points;
                true
            });
            if all {
                found.push(Candidate {
                    product,
                    variant,
                    score,
                });
            }
        }
    }
    // Said the exact name of a product: that product alone.
    if found.iter().any(|c| c.score >= 10) {
        found.retain(|c| c.score >= 10);
    }
    found.sort_by(|a, b| {
        b.score
            .cmp(&a.score)
            .then_with(|| a.product.name.cmp(&b.product.name))
            .then_with(|| a.variant.price.minor.cmp(&b.variant.price.minor))
    });
    found
}

/// The most candidates whose stock is looked up to rank them.
const RANKED: usize = 200;

/// Products that share a word of their name with what was said (for "did you mean").
fn alternatives(catalog: &CatalogSnapshot, said: &[String], limit: usize) -> Vec<String> {
    let mut scored: Vec<(usize, &str)> = catalog
        .products()
        .iter()
        .filter_map(|p| {
            let name = words(&p.name);
            let hits = said
                .iter()
                .filter(|w| name.iter().any(|x| word_matches(w, x)))
                .count();
            (hits > 0).then_some((hits, p.name.as_str()))
        })
        .collect();
    scored.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    scored
        .into_iter()
        .take(limit)
        .map(|(_, n)| n.to_string())
        .collect()
}

/// The intent's name in events.
fn intent_name(intent: &Intent) -> &'static str {
    match intent {
        Intent::Welcome => "welcome",
        Intent::Help => "help",
        Intent::Search { .. } => "search",
        Intent::AddToBasket { .. } => "add_to_basket",
        Intent::Choose { .. } => "choose",
        Intent::BasketContents => "basket_contents",
        Intent::RemoveItem { .. } => "remove_item",
        Intent::OrderStatus { .. } => "order_status",
        Intent::Reorder => "reorder",
        Intent::StoreInfo { .. } => "store_info",
        Intent::Checkout => "checkout",
        Intent::Stop => "stop",
        Intent::Unknown { .. } => "unknown",
    }
}

const SUGGEST: [&str; 4] = [
    "What's in my basket?",
    "Do you have earl grey?",
    "Where is my order?",
    "Opening hours Berlin",
];

/// The conversational assistant over a [`Backend`].
pub struct Assistant {
    backend: Arc<dyn Backend>,
    settings: AssistantSettings,
}

/// One turn's context: who, on which channel, and the basket token a turn may mint.
struct Ctx {
    channel: Channel,
    shopper: Shopper,
}

impl Assistant {
    pub fn new(backend: Arc<dyn Backend>, settings: AssistantSettings) -> Assistant {
        Assistant { backend, settings }
    }

    pub fn settings(&self) -> &AssistantSettings {
        &self.settings
    }

    /// The stores: the backend's (edge nodes) and those only configured here.
    pub fn stores(&self) -> Vec<StoreView> {
        let mut stores = self.backend.stores();
        for s in &self.settings.stores {
            match stores.iter_mut().find(|v| v.location == s.location) {
                Some(known) if known.name.trim().is_empty() => known.name = s.name.clone(),
                Some(_) => {}
                None => stores.push(StoreView {
                    location: s.location.clone(),
                    name: if s.name.is_empty() {
                        s.location.clone()
                    } else {
                        s.name.clone()
                    },
                }),
            }
        }
        stores
    }

    /// Words that name a store (for the chat parser): "berlin", "mitte", "hamburg", …
    pub fn store_words(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .stores()
            .iter()
            .flat_map(|s| {
                let mut w = words(&s.name);
                w.extend(words(&s.location));
                w
            })
            .filter(|w| !matches!(w.as_str(), "store" | "shop" | "the" | "market"))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Answers a turn, records it as an event, and says what else the channel may show.
    pub async fn converse(&self, turn: Turn) -> Outcome {
        let name = intent_name(&turn.intent);
        let ctx = Ctx {
            channel: turn.channel,
            shopper: turn.shopper.clone(),
        };
        let pending = turn
            .state
            .pending
            .clone()
            .and_then(|v| serde_json::from_value::<Pending>(v).ok());
        let mut answer = self.answer(&ctx, turn.intent, pending.clone()).await;
        // A question asked again keeps its options.
        if answer.outcome == "asked_again" {
            answer.pending = pending;
        }
        if answer.pending.is_some() && answer.reprompt.is_none() {
            answer.reprompt = Some("Which one? Say its number.".into());
        }
        if answer.reprompt.is_none() && !answer.end {
            answer.reprompt = Some("What else can I do for you?".into());
        }
        let event = Event::new(
            OffsetDateTime::now_utc(),
            turn.shopper.subject(),
            turn.channel,
            EventKind::AssistantTurn,
        )
        .with("intent", name)
        .with("outcome", answer.outcome);
        self.backend.record(event);
        let ssml = match turn.channel {
            Channel::Voice => answer
                .ssml
                .clone()
                .or_else(|| Some(format!("<speak>{}</speak>", escape_ssml(&answer.text)))),
            _ => None,
        };
        let state = DialogState {
            pending: answer
                .pending
                .as_ref()
                .and_then(|p| serde_json::to_value(p).ok()),
        };
        if answer.suggestions.is_empty() {
            answer.suggestions = match &answer.pending {
                Some(Pending::Add { options, .. } | Pending::Remove { options }) => {
                    (1..=options.len()).map(|i| i.to_string()).collect()
                }
                None => SUGGEST.iter().map(|s| s.to_string()).collect(),
            };
        }
        Outcome {
            reply: Reply {
                text: answer.text,
                ssml,
                reprompt: answer.reprompt,
                end_session: answer.end,
                card: answer.card,
                link_account: answer.link_account,
                state,
            },
            basket: answer.basket,
            basket_token: answer.token,
            suggestions: answer.suggestions,
            link: answer.link,
            outcome: answer.outcome,
        }
    }

    async fn answer(&self, ctx: &Ctx, intent: Intent, pending: Option<Pending>) -> Answer {
        let needs_basket = matches!(
            intent,
            Intent::AddToBasket { .. }
                | Intent::Choose { .. }
                | Intent::BasketContents
                | Intent::RemoveItem { .. }
                | Intent::OrderStatus { .. }
                | Intent::Reorder
                | Intent::Checkout
        );
        // Only a choice among products to add may come from search results a guest saw.
        if needs_basket && ctx.shopper.customer.is_none() && ctx.channel == Channel::Voice {
            return self.link_account();
        }
        let result = match intent {
            Intent::Welcome => Ok(self.welcome()),
            Intent::Help => Ok(self.help()),
            Intent::Stop => Ok(Answer {
                end: true,
                ..Answer::say("Goodbye, and thanks for shopping with us!", "ended")
            }),
            Intent::Unknown { utterance } => Ok(self.unknown(utterance.as_deref())),
            Intent::Search { query } => self.search(&query).await,
            Intent::AddToBasket { product, quantity } => {
                self.add(ctx, &product, quantity.as_deref()).await
            }
            Intent::Choose { choice } => self.choose(ctx, &choice, pending).await,
            Intent::BasketContents => self.contents(ctx).await,
            Intent::RemoveItem { product } => self.remove(ctx, &product).await,
            Intent::OrderStatus { order } => self.order_status(ctx, order.as_deref()).await,
            Intent::Reorder => self.reorder(ctx).await,
            Intent::StoreInfo { store, product } => {
                self.store_info(store.as_deref(), product.as_deref()).await
            }
            Intent::Checkout => self.checkout(ctx).await,
        };
        result.unwrap_or_else(|e| self.failed(&e))
    }

    fn link_account(&self) -> Answer {
        Answer {
            link_account: true,
            ..Answer::say(
                "To use your basket and orders, please link your account in the app first. Until then I can search products, tell you store opening hours and stock, and help.",
                "link_account",
            )
        }
        .card(
            "Link your account",
            "Open the app and link your account to shop by voice.",
        )
    }

    fn welcome(&self) -> Answer {
        Answer::say(
            format!(
                "Welcome to {}! I can find products, add them to your basket, tell you what is in it, where your order is, and when our stores are open. What would you like?",
                self.settings.shop_name
            ),
            "answered",
        )
        .ask("What would you like to do? For example, say: add two bags of coffee.")
        .suggest(&SUGGEST)
    }

    fn help(&self) -> Answer {
        Answer::list(
            "Here is what I can do:",
            &[
                "Find a product: \"do you have earl grey?\".".to_string(),
                "Add to your basket: \"add two bags of coffee\".".to_string(),
                "Read your basket: \"what's in my basket?\".".to_string(),
                "Remove an item: \"remove the coffee\".".to_string(),
                "Track an order: \"where is my order?\".".to_string(),
                "Repeat your last order: \"reorder\".".to_string(),
                "Stores: \"opening hours Berlin\" or \"is earl grey in stock in Hamburg?\"."
                    .to_string(),
                "Checkout: I send you a link to pay.".to_string(),
            ],
            "What would you like?",
            "answered",
        )
        .ask("What would you like to do?")
        .suggest(&SUGGEST)
    }

    fn unknown(&self, utterance: Option<&str>) -> Answer {
        let heard = utterance
            .filter(|u| !u.trim().is_empty())
            .map(|u| {
                let short: String = u.chars().take(60).collect();
                format!("Sorry, I did not understand \"{short}\".")
            })
            .unwrap_or_else(|| "Sorry, I did not catch that.".into());
        Answer::say(
            format!("{heard} I can find products, add or remove items, read your basket, tell you where your order is, reorder your last order, give store opening hours and stock, and send you a checkout link. Try: \"add two bags of coffee\"."),
            "not_understood",
        )
        .ask("What would you like to do? Say help to hear everything I can do.")
        .suggest(&["Help", "Do you have coffee?", "What's in my basket?"])
    }

    /// What a backend error means for the shopper, never a trace.
    fn failed(&self, e: &BackendError) -> Answer {
        let text = match e {
            BackendError::Conflict { code, .. } if *code == "basket_locked" => {
                "Your basket is locked while a payment is in progress. Finish or cancel the payment first, then try again.".to_string()
            }
            BackendError::Unprocessable { code, .. } if *code == "insufficient_stock" => {
                "Sorry, there is not enough stock for that right now.".to_string()
            }
            BackendError::Unprocessable { message, .. } => {
                format!("I could not do that: {message}.")
            }
            BackendError::NotFound(what) => format!("Sorry, I could not find that {what}."),
            BackendError::RateLimited { .. } => {
                "You are going a little fast for me. Please try again in a minute.".to_string()
            }
            BackendError::Unavailable(detail) => {
                tracing::warn!(%detail, "assistant: backend unavailable");
                "Sorry, I cannot reach the shop just now. Please try again in a moment.".to_string()
            }
            other => {
                tracing::warn!(error = %other, "assistant: backend refused");
                "Sorry, I could not do that just now. Please try again.".to_string()
            }
        };
        Answer::say(text, "failed")
    }

    // -----------------------------------------------------------------------------------------
    // Products
    // -----------------------------------------------------------------------------------------

    async fn stock_words(&self, skus: &[Sku]) -> Result<Vec<i64>, BackendError> {
        Ok(self
            .backend
            .availability(skus)
            .await?
            .into_iter()
            .map(|a| a.available)
            .collect())
    }

    /// Candidates in stock before those out of stock, keeping the match order otherwise; with
    /// each one's units available.
    async fn rank<'a>(
        &self,
        found: Vec<Candidate<'a>>,
    ) -> Result<Vec<(Candidate<'a>, i64)>, BackendError> {
        let head: Vec<Candidate<'a>> = found.into_iter().take(RANKED).collect();
        let skus: Vec<Sku> = head.iter().map(|c| c.variant.sku.clone()).collect();
        let stock = self.stock_words(&skus).await?;
        let mut ranked: Vec<(Candidate<'a>, i64)> = head.into_iter().zip(stock).collect();
        ranked.sort_by(|(a, x), (b, y)| b.score.cmp(&a.score).then((*y > 0).cmp(&(*x > 0))));
        Ok(ranked)
    }

    fn not_found(&self, catalog: &CatalogSnapshot, what: &str, said: &[String]) -> Answer {
        let alternatives = alternatives(catalog, said, self.settings.results);
        let text = if alternatives.is_empty() {
            let examples: Vec<String> = catalog
                .categories()
                .iter()
                .take(3)
                .map(|c| c.name.to_lowercase())
                .collect();
            format!(
                "Sorry, I could not find anything for \"{what}\". Try another word, for example {}.",
                and_list(&examples)
            )
        } else {
            format!(
                "Sorry, I could not find \"{what}\". Maybe {}?",
                and_list(&alternatives)
            )
        };
        Answer::say(text, "not_found").ask("What else are you looking for?")
    }

    async fn search(&self, query: &str) -> Result<Answer, BackendError> {
        let said = product_words(query);
        if query.trim().is_empty() || said.is_empty() {
            return Ok(Answer::say(
                "What are you looking for? For example, say: do you have earl grey?",
                "asked",
            )
            .ask("What are you looking for?"));
        }
        let catalog = self.backend.catalog();
        let found = find(&catalog, &said);
        if found.is_empty() {
            return Ok(self.not_found(&catalog, query, &said));
        }
        let total = found.len();
        let ranked = self.rank(found).await?;
        let top: Vec<&(Candidate, i64)> = ranked.iter().take(self.settings.results).collect();
        let skus: Vec<Sku> = top.iter().map(|(c, _)| c.variant.sku.clone()).collect();
        let items: Vec<String> = top
            .iter()
            .enumerate()
            .map(|(i, (c, available))| {
                let state = if *available > 0 {
                    "in stock"
                } else {
                    "out of stock"
                };
                format!(
                    "{}. {}, {}, {state}.",
                    i + 1,
                    c.label(),
                    money_words(c.variant.price)
                )
            })
            .collect();
        let intro = match total {
            1 => format!("I found one match for {query}:"),
            n if n <= top.len() => format!("I found {n} matches for {query}:"),
            n => format!("I found {n} matches for {query}. The top {}:", top.len()),
        };
        let mut answer = Answer::list(
            &intro,
            &items,
            "To add one to your basket, say its number.",
            "answered",
        )
        .card("Search results", items.join("\n"))
        .ask("Say a number to add it to your basket, or ask for something else.");
        answer.pending = Some(Pending::Add {
            options: skus.iter().map(|s| s.to_string()).collect(),
            quantity: 1,
        });
        Ok(answer)
    }

    /// Reads a quantity as said; what to tell the shopper when it cannot be used.
    fn quantity(&self, said: Option<&str>, product: &str) -> Result<u32, String> {
        let max = self.settings.max_quantity_per_line.max(1);
        let Some(said) = said.filter(|s| !s.trim().is_empty()) else {
            return Ok(1);
        };
        match quantity_value(said) {
            None => Err(format!(
                "I did not catch how many {product} you want. Say a number from 1 to {max}."
            )),
            Some(n) if n <= 0 => Err(format!(
                "I can only add a quantity from 1 to {max}, so I changed nothing. How many {product} would you like?"
            )),
            Some(n) if n > i64::from(max) => Err(format!(
                "{n} is more than I can add: at most {max} of one product at a time, so I changed nothing. How many {product} would you like?"
            )),
            Some(n) => Ok(n as u32),
        }
    }

    async fn add(
        &self,
        ctx: &Ctx,
        product: &str,
        quantity: Option<&str>,
    ) -> Result<Answer, BackendError> {
        let said = product_words(product);
        if product.trim().is_empty() || said.is_empty() {
            return Ok(Answer::say("What should I add to your basket?", "asked")
                .ask("What should I add? For example, say: add two bags of coffee."));
        }
        let quantity = match self.quantity(quantity, product) {
            Ok(q) => q,
            Err(text) => {
                return Ok(
                    Answer::say(text, "refused").ask(format!("How many {product} would you like?"))
                )
            }
        };
        let catalog = self.backend.catalog();
        let found = find(&catalog, &said);
        let total = found.len();
        match found.as_slice() {
            [] => Ok(self.not_found(&catalog, product, &said)),
            [one] => self.add_sku(ctx, &one.variant.sku, quantity).await,
            _ => {
                let ranked = self.rank(found).await?;
                let top: Vec<&Candidate> = ranked
                    .iter()
                    .map(|(c, _)| c)
                    .take(self.settings.results)
                    .collect();
                let items: Vec<String> = top
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        format!(
                            "{}. {}, {}.",
                            i + 1,
                            c.label(),
                            money_words(c.variant.price)
                        )
                    })
                    .collect();
                let intro = if total > top.len() {
                    format!(
                        "I found {total} matches for {product}. The top {}:",
                        top.len()
                    )
                } else {
                    format!("I found {total}:")
                };
                let mut answer = Answer::list(&intro, &items, "Which one?", "asked")
                    .card("Which one?", items.join("\n"))
                    .ask(format!("Which one? Say a number from 1 to {}.", top.len()));
                answer.pending = Some(Pending::Add {
                    options: top.iter().map(|c| c.variant.sku.to_string()).collect(),
                    quantity,
                });
                Ok(answer)
            }
        }
    }

    /// The shopper's basket, made first if they have none (an anonymous basket's token goes
    /// back to the channel).
    async fn ensure_basket(
        &self,
        ctx: &Ctx,
        answer_token: &mut Option<String>,
    ) -> Result<(Shopper, BasketView), BackendError> {
        let mut shopper = ctx.shopper.clone();
        if let Some(basket) = self.backend.current_basket(&shopper).await? {
            return Ok((shopper, basket));
        }
        let new = self.backend.create_basket(&shopper).await?;
        if let Some(token) = new.token {
            shopper.basket_token = Some(token.clone());
            *answer_token = Some(token);
        }
        Ok((shopper, new.basket))
    }

    async fn add_sku(&self, ctx: &Ctx, sku: &Sku, quantity: u32) -> Result<Answer, BackendError> {
        let catalog = self.backend.catalog();
        let Some((product, variant)) = catalog
            .product_by_sku(sku)
            .and_then(|p| p.variant(sku).map(|v| (p, v)))
        else {
            return Ok(Answer::say(
                "Sorry, that product is no longer sold.",
                "not_found",
            ));
        };
        let name = label(product, variant);
        let available = self
            .stock_words(std::slice::from_ref(sku))
            .await?
            .first()
            .copied()
            .unwrap_or(0);
        if available <= 0 {
            return Ok(Answer::say(
                format!("Sorry, {name} is out of stock right now, so I changed nothing."),
                "out_of_stock",
            ));
        }
        let max = self.settings.max_quantity_per_line;
        let mut token = None;
        let (shopper, basket) = self.ensure_basket(ctx, &mut token).await?;
        let existing = basket
            .priced
            .lines
            .iter()
            .find(|l| &l.sku == sku)
            .map_or(0, |l| l.quantity);
        if existing + quantity > max {
            return Ok(Answer {
                token,
                ..Answer::say(
                    format!("You already have {existing} of {name} in your basket, and I can put at most {max} of one product on a line, so I changed nothing."),
                    "refused",
                )
            });
        }
        if i64::from(existing + quantity) > available {
            return Ok(Answer {
                token,
                ..Answer::say(
                    format!(
                        "Sorry, only {available} of {name} are in stock, so I changed nothing."
                    ),
                    "out_of_stock",
                )
            });
        }
        let view = self
            .backend
            .change_basket(
                &shopper,
                basket.id,
                BasketCommand::Add {
                    sku: sku.clone(),
                    quantity: i64::from(quantity),
                },
                ctx.channel,
            )
            .await?;
        let text = format!(
            "Added {quantity} × {name} to your basket. Your basket total is {}.",
            money_words(view.priced.total)
        );
        Ok(Answer {
            token,
            ..Answer::say(text, "added")
                .card("Basket", basket_card(&view))
                .suggest(&["What's in my basket?", "Checkout", "Remove it"])
        }
        .with_basket(view))
    }

    async fn choose(
        &self,
        ctx: &Ctx,
        choice: &str,
        pending: Option<Pending>,
    ) -> Result<Answer, BackendError> {
        let Some(pending) = pending else {
            return Ok(Answer::say(
                "There is nothing to choose right now. What would you like to do?",
                "not_understood",
            ));
        };
        let options = match &pending {
            Pending::Add { options, .. } | Pending::Remove { options } => options.clone(),
        };
        let skus: Vec<Sku> = options.iter().filter_map(|o| Sku::parse(o).ok()).collect();
        if skus.is_empty() {
            return Ok(Answer::say(
                "Sorry, I lost track of the options. What would you like?",
                "not_understood",
            ));
        }
        let catalog = self.backend.catalog();
        let picked = match choice_position(choice) {
            Some(usize::MAX) => skus.last(),
            Some(n) => skus.get(n - 1),
            None => {
                let said = product_words(choice);
                let matching: Vec<&Sku> = skus
                    .iter()
                    .filter(|sku| {
                        let Some(p) = catalog.product_by_sku(sku) else {
                            return false;
                        };
                        let mut label_words = words(&p.name);
                        if let Some(v) = p.variant(sku) {
                            label_words.extend(words(&v.title));
                        }
                        !said.is_empty()
                            && said
                                .iter()
                                .all(|w| label_words.iter().any(|x| word_matches(w, x)))
                    })
                    .collect();
                match matching.as_slice() {
                    [one] => Some(*one),
                    _ => None,
                }
            }
        };
        let Some(sku) = picked.cloned() else {
            return Ok(Answer::say(
                format!("Sorry, which one? Say a number from 1 to {}.", skus.len()),
                "asked_again",
            ));
        };
        match pending {
            Pending::Add { quantity, .. } => {
                let max = self.settings.max_quantity_per_line.max(1);
                self.add_sku(ctx, &sku, quantity.clamp(1, max)).await
            }
            Pending::Remove { .. } => self.remove_sku(ctx, &sku).await,
        }
    }

    // -----------------------------------------------------------------------------------------
    // The basket
    // -----------------------------------------------------------------------------------------

    async fn contents(&self, ctx: &Ctx) -> Result<Answer, BackendError> {
        let basket = self.backend.current_basket(&ctx.shopper).await?;
        let Some(basket) = basket.filter(|b| !b.priced.lines.is_empty()) else {
            return Ok(Answer::say(
                "Your basket is empty. What would you like to add?",
                "answered",
            ));
        };
        let items: Vec<String> = basket
            .priced
            .lines
            .iter()
            .map(|l| {
                let variant = if l.variant.is_empty() {
                    String::new()
                } else {
                    format!(", {}", l.variant)
                };
                format!("{} × {}{variant}", l.quantity, l.name)
            })
            .collect();
        let count = basket.priced.item_count;
        let intro = format!(
            "Your basket has {count} {}:",
            if count == 1 { "item" } else { "items" }
        );
        let listed: Vec<String> = items.iter().map(|i| format!("{i};")).collect();
        Ok(Answer::list(
            &intro,
            &listed,
            &format!("The total is {}.", money_words(basket.priced.total)),
            "answered",
        )
        .card("Your basket", basket_card(&basket))
        .suggest(&["Checkout", "Remove an item", "Do you have coffee?"]))
    }

    async fn remove(&self, ctx: &Ctx, product: &str) -> Result<Answer, BackendError> {
        let basket = self.backend.current_basket(&ctx.shopper).await?;
        let Some(basket) = basket.filter(|b| !b.priced.lines.is_empty()) else {
            return Ok(Answer::say(
                "Your basket is empty, so there is nothing to remove.",
                "answered",
            ));
        };
        let said = product_words(product);
        let matching: Vec<&protocol::pricing::PricedLine> = basket
            .priced
            .lines
            .iter()
            .filter(|l| {
                let mut line_words = words(&l.name);
                line_words.extend(words(&l.variant));
                !said.is_empty()
                    && said
                        .iter()
                        .all(|w| line_words.iter().any(|x| word_matches(w, x)))
            })
            .collect();
        match matching.as_slice() {
            [] => {
                let names: Vec<String> =
                    basket.priced.lines.iter().map(|l| l.name.clone()).collect();
                Ok(Answer::say(
                    format!(
                        "I could not find {product} in your basket. It has {}.",
                        and_list(&names)
                    ),
                    "not_found",
                )
                .ask("What should I remove?"))
            }
            [one] => self.remove_sku(ctx, &one.sku).await,
            many => {
                let items: Vec<String> = many
                    .iter()
                    .enumerate()
                    .map(|(i, l)| format!("{}. {}, {}.", i + 1, l.name, l.variant))
                    .collect();
                let mut answer = Answer::list(
                    &format!("You have {} matching lines:", many.len()),
                    &items,
                    "Which one should I remove?",
                    "asked",
                )
                .ask(format!("Which one? Say a number from 1 to {}.", many.len()));
                answer.pending = Some(Pending::Remove {
                    options: many.iter().map(|l| l.sku.to_string()).collect(),
                });
                Ok(answer)
            }
        }
    }

    async fn remove_sku(&self, ctx: &Ctx, sku: &Sku) -> Result<Answer, BackendError> {
        let Some(basket) = self.backend.current_basket(&ctx.shopper).await? else {
            return Ok(Answer::say(
                "Your basket is empty, so there is nothing to remove.",
                "answered",
            ));
        };
        let Some(line) = basket.priced.lines.iter().find(|l| &l.sku == sku) else {
            return Ok(Answer::say(
                "That is no longer in your basket.",
                "not_found",
            ));
        };
        let name = line.name.clone();
        let view = self
            .backend
            .change_basket(
                &ctx.shopper,
                basket.id,
                BasketCommand::Remove { sku: sku.clone() },
                ctx.channel,
            )
            .await?;
        let text = if view.priced.lines.is_empty() {
            format!("Removed {name}. Your basket is now empty.")
        } else {
            format!(
                "Removed {name} from your basket. Your basket total is now {}.",
                money_words(view.priced.total)
            )
        };
        Ok(Answer::say(text, "removed")
            .card("Basket", basket_card(&view))
            .with_basket(view))
    }

    // -----------------------------------------------------------------------------------------
    // Orders
    // -----------------------------------------------------------------------------------------

    fn sign_in_first(&self) -> Answer {
        Answer::say(
            "Please sign in first, so I can look at your orders.",
            "sign_in",
        )
        .suggest(&["Do you have coffee?", "What's in my basket?"])
    }

    async fn order_status(&self, ctx: &Ctx, number: Option<&str>) -> Result<Answer, BackendError> {
        let Some(customer) = ctx.shopper.customer else {
            return Ok(self.sign_in_first());
        };
        let orders = self.backend.orders(customer).await?;
        let normal = |n: &str| {
            n.trim()
                .trim_start_matches('#')
                .to_uppercase()
                .replace(' ', "")
        };
        let order = match number.filter(|n| !n.trim().is_empty()) {
            Some(wanted) => {
                let wanted = normal(wanted);
                // The number as printed, or its digits alone ("123" for W-000123).
                let digits = |n: &str| {
                    n.chars()
                        .filter(char::is_ascii_digit)
                        .collect::<String>()
                        .trim_start_matches('0')
                        .to_string()
                };
                let found = orders.iter().find(|o| {
                    normal(&o.number) == wanted
                        || (wanted.chars().all(|c| c.is_ascii_digit())
                            && digits(&o.number) == digits(&wanted))
                });
                match found {
                    Some(o) => o,
                    None => {
                        return Ok(Answer::say(
                            format!("I could not find an order {wanted} in your account. Ask me \"where is my order\" for your latest one."),
                            "not_found",
                        ));
                    }
                }
            }
            None => match orders.first() {
                Some(o) => o,
                None => {
                    return Ok(Answer::say(
                        "You have no orders yet. What can I find for you?",
                        "answered",
                    ))
                }
            },
        };
        let date = format!(
            "{} {} {}",
            order.created_at.day(),
            order.created_at.month(),
            order.created_at.year()
        );
        let mut parts = vec![format!(
            "Your order {} of {date} is {}.",
            order.number,
            order.status.to_lowercase()
        )];
        for s in &order.shipments {
            parts.push(format!(
                "It travels with {}, tracking number {}{}.",
                s.carrier,
                s.tracking_number,
                if s.tracking_url.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", s.tracking_url)
                }
            ));
        }
        if let Some(reason) = &order.cancelled {
            parts.push(format!("It was cancelled: {reason}."));
        }
        if let Some(note) = &order.needs_attention {
            parts.push(format!("{note}."));
        }
        let text = parts.join(" ").replace("..", ".");
        Ok(Answer::say(text.clone(), "answered").card(&format!("Order {}", order.number), text))
    }

    async fn reorder(&self, ctx: &Ctx) -> Result<Answer, BackendError> {
        let Some(customer) = ctx.shopper.customer else {
            return Ok(self.sign_in_first());
        };
        let orders = self.backend.orders(customer).await?;
        let Some(last) = orders.first() else {
            return Ok(Answer::say(
                "You have no earlier order to repeat yet.",
                "answered",
            ));
        };
        let catalog = self.backend.catalog();
        let lines = &last.breakdown.lines;
        let skus: Vec<Sku> = lines.iter().map(|l| l.sku.clone()).collect();
        let stock = self.stock_words(&skus).await?;
        let mut token = None;
        let (shopper, mut basket) = self.ensure_basket(ctx, &mut token).await?;
        let max = self.settings.max_quantity_per_line;
        let mut added = Vec::new();
        let mut skipped = Vec::new();
        for (line, available) in lines.iter().zip(stock) {
            let sold = catalog
                .product_by_sku(&line.sku)
                .and_then(|p| p.variant(&line.sku))
                .is_some();
            let existing = basket
                .priced
                .lines
                .iter()
                .find(|l| l.sku == line.sku)
                .map_or(0, |l| i64::from(l.quantity));
            let room = i64::from(max) - existing;
            let quantity = i64::from(line.quantity).min(available - existing).min(room);
            if !sold {
                skipped.push(format!("{} (no longer sold)", line.name));
                continue;
            }
            if quantity <= 0 {
                skipped.push(format!("{} (out of stock)", line.name));
                continue;
            }
            match self
                .backend
                .change_basket(
                    &shopper,
                    basket.id,
                    BasketCommand::Add {
                        sku: line.sku.clone(),
                        quantity,
                    },
                    ctx.channel,
                )
                .await
            {
                Ok(view) => {
                    added.push(format!("{quantity} × {}", line.name));
                    basket = view;
                }
                Err(BackendError::Unprocessable { .. }) => {
                    skipped.push(format!("{} (not available)", line.name));
                }
                Err(e) => return Err(e),
            }
        }
        let mut text = if added.is_empty() {
            format!(
                "None of the items of your order {} are available right now, so I changed nothing.",
                last.number
            )
        } else {
            format!(
                "I put {} from your order {} back in your basket at today's prices.",
                and_list(&added),
                last.number
            )
        };
        if !skipped.is_empty() && !added.is_empty() {
            text.push_str(&format!(" Not available: {}.", and_list(&skipped)));
        } else if !skipped.is_empty() {
            text.push_str(&format!(" ({}.)", and_list(&skipped)));
        }
        if !added.is_empty() {
            text.push_str(&format!(
                " Your basket total is {}.",
                money_words(basket.priced.total)
            ));
        }
        let mut answer = Answer {
            token,
            ..Answer::say(text, if added.is_empty() { "refused" } else { "added" })
        };
        if !added.is_empty() {
            answer = answer
                .card("Basket", basket_card(&basket))
                .with_basket(basket);
        }
        Ok(answer)
    }

    // -----------------------------------------------------------------------------------------
    // Stores
    // -----------------------------------------------------------------------------------------

    fn hours_of(&self, store: &StoreView) -> String {
        match self
            .settings
            .stores
            .iter()
            .find(|s| s.location == store.location)
            .filter(|s| !s.hours.is_empty())
        {
            Some(s) => format!("{} is open {}.", store.name, and_list(&s.hours)),
            None => format!("I do not have the opening hours of {}.", store.name),
        }
    }

    async fn store_info(
        &self,
        store: Option<&str>,
        product: Option<&str>,
    ) -> Result<Answer, BackendError> {
        let stores = self.stores();
        if stores.is_empty() {
            return Ok(Answer::say(
                "We have no stores to visit at the moment; everything is online.",
                "answered",
            ));
        }
        let names: Vec<String> = stores.iter().map(|s| s.name.clone()).collect();
        let chosen: Vec<&StoreView> = match store.filter(|s| !s.trim().is_empty()) {
            None => stores.iter().collect(),
            Some(said) => {
                let said: Vec<String> = words(said)
                    .into_iter()
                    .filter(|w| !matches!(w.as_str(), "store" | "shop" | "the" | "in" | "at"))
                    .collect();
                let matching: Vec<&StoreView> = stores
                    .iter()
                    .filter(|s| {
                        let mut w = words(&s.name);
                        w.extend(words(&s.location));
                        !said.is_empty() && said.iter().all(|x| w.contains(x))
                    })
                    .collect();
                if matching.is_empty() {
                    return Ok(Answer::say(
                        format!(
                            "I do not know that store. Our stores are {}.",
                            and_list(&names)
                        ),
                        "not_found",
                    )
                    .ask("Which store do you mean?"));
                }
                matching
            }
        };
        let Some(product) = product.filter(|p| !product_words(p).is_empty()) else {
            let text = chosen
                .iter()
                .map(|s| self.hours_of(s))
                .collect::<Vec<_>>()
                .join(" ");
            return Ok(Answer::say(text.clone(), "answered").card("Opening hours", text));
        };
        let catalog = self.backend.catalog();
        let said = product_words(product);
        let found = find(&catalog, &said);
        if found.is_empty() {
            return Ok(self.not_found(&catalog, product, &said));
        }
        let top: Vec<&Candidate> = found.iter().take(self.settings.results).collect();
        let skus: Vec<Sku> = top.iter().map(|c| c.variant.sku.clone()).collect();
        let mut items = Vec::new();
        for store in &chosen {
            let stock = self.backend.store_stock(&store.location, &skus).await?;
            let lines: Vec<String> = top
                .iter()
                .zip(stock)
                .map(|(c, units)| match units {
                    Some(n) if n > 0 => format!("{}: {n} in stock", c.label()),
                    Some(_) => format!("{}: out of stock", c.label()),
                    None => format!("{}: not stocked", c.label()),
                })
                .collect();
            items.push(format!("At {}: {}.", store.name, lines.join("; ")));
        }
        if let [one] = chosen.as_slice() {
            items.push(self.hours_of(one));
        }
        let text = items.join(" ");
        Ok(Answer::list("", &items, "", "answered").card("Store stock", text))
    }

    // -----------------------------------------------------------------------------------------
    // Checkout
    // -----------------------------------------------------------------------------------------

    async fn checkout(&self, ctx: &Ctx) -> Result<Answer, BackendError> {
        let basket = self.backend.current_basket(&ctx.shopper).await?;
        let Some(basket) = basket.filter(|b| !b.priced.lines.is_empty()) else {
            return Ok(Answer::say(
                "Your basket is empty, so there is nothing to check out yet. What can I add for you?",
                "answered",
            ));
        };
        let total = money_words(basket.priced.total);
        let url = self.backend.checkout_url();
        let chat = ctx.channel != Channel::Voice;
        let Some(customer) = ctx.shopper.customer else {
            return Ok(Answer {
                link: Some(url.clone()),
                ..Answer::say(
                    format!("I never complete a payment in the chat. Check out your basket of {total} here: {url}"),
                    "link_sent",
                )
                .card("Checkout", url)
            });
        };
        match self.backend.send_checkout_link(customer, ctx.channel).await {
            Ok(sent) => {
                let mut text = format!(
                    "I have emailed a link to check out your basket of {total} to {}. I never complete a payment here: open the link to pay.",
                    mask_email(&sent.email)
                );
                if chat {
                    text.push_str(&format!(" You can also check out here: {}", sent.url));
                }
                Ok(Answer {
                    link: chat.then(|| sent.url.clone()),
                    ..Answer::say(text, "link_sent").card("Checkout", sent.url)
                })
            }
            Err(e) => {
                tracing::warn!(error = %e, "assistant: checkout link not sent");
                let text = if chat {
                    format!("I could not send the email just now. Check out your basket of {total} here: {url}")
                } else {
                    "I could not send the checkout email just now. Please open the app to check out.".to_string()
                };
                Ok(Answer {
                    link: chat.then_some(url),
                    ..Answer::say(text, "failed")
                })
            }
        }
    }
}

impl Answer {
    fn with_basket(mut self, basket: BasketView) -> Answer {
        self.basket = Some(basket);
        self
    }
}

/// A basket as card text: one line per basket line, then the total.
fn basket_card(basket: &BasketView) -> String {
    let mut lines: Vec<String> = basket
        .priced
        .lines
        .iter()
        .map(|l| {
            format!(
                "{} × {} {} — {}",
                l.quantity,
                l.name,
                l.variant,
                money_words(l.line_total)
            )
        })
        .collect();
    lines.push(format!("Total: {}", money_words(basket.priced.total)));
    lines.join("\n")
}

#[async_trait]
impl Conversation for Assistant {
    async fn respond(&self, turn: Turn) -> Reply {
        self.converse(turn).await.reply
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::Currency;

    #[test]
    fn amounts_are_said_in_words() {
        let eur = |m| money_words(Money::new(m, Currency::EUR));
        assert_eq!(eur(249), "2 euros 49");
        assert_eq!(eur(1200), "12 euros");
        assert_eq!(eur(100), "1 euro");
        assert_eq!(eur(49), "49 cents");
        assert_eq!(eur(105), "1 euro 05");
        assert_eq!(money_words(Money::new(120, Currency::GBP)), "1 pound 20");
    }

    #[test]
    fn ssml_escapes_markup() {
        assert_eq!(
            escape_ssml(r#"Tom & Jerry's <b>"best"</b>"#),
            "Tom &amp; Jerry&apos;s &lt;b&gt;&quot;best&quot;&lt;/b&gt;"
        );
        let answer = Answer::list("Found:", &["A & B".to_string()], "", "answered");
        assert_eq!(
            answer.ssml.as_deref(),
            Some("<speak>Found:<break time=\"300ms\"/>A &amp; B</speak>")
        );
    }

    #[test]
    fn lists_and_emails_read_well() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(and_list(&s(&["a", "b", "c"])), "a, b and c");
        assert_eq!(and_list(&s(&["a"])), "a");
        assert_eq!(mask_email("ada@example.com"), "a***@example.com");
    }
}
