//! A small, deterministic parser from chat text to an [`Intent`], and the word handling the
//! assistant shares with it: normalising product words ("bags of coffee" → `coffee`), quantity
//! words ("two", "a dozen", "minus three", "10,000") and choices ("2", "the second one").
//!
//! It is rules, not a model: the same text always gives the same intent, and what it does not
//! understand is [`Intent::Unknown`], which the assistant answers with what it can do.

use super::Intent;

/// What the parser needs to know besides the text.
#[derive(Debug, Clone, Default)]
pub struct NluContext {
    /// The assistant asked a question (which of several products): a number or a name answers
    /// it.
    pub pending: bool,
    /// Words that name a store ("berlin", "hamburg", "altona"), lower case.
    pub store_words: Vec<String>,
}

/// Lower case, with the punctuation around words removed and spaces collapsed; keeps `-` and
/// `,` inside numbers and order numbers ("W-000123", "10,000").
pub fn clean(text: &str) -> String {
    let lowered = text.to_lowercase().replace(['’', '‘'], "'");
    let spaced: String = lowered
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || matches!(c, '-' | ',' | '\'' | '.') {
                c
            } else {
                ' '
            }
        })
        .collect();
    spaced
        .split_whitespace()
        .map(|w| {
            w.trim_matches(|c: char| matches!(c, ',' | '.' | '\''))
                .to_string()
        })
        .filter(|w| !w.is_empty() && w != "-")
        .collect::<Vec<_>>()
        .join(" ")
}

/// Parses one chat message.
pub fn parse(text: &str, context: &NluContext) -> Intent {
    let text = clean(text);
    if text.is_empty() {
        return Intent::Welcome;
    }
    if context.pending && is_choice(&text) {
        return Intent::Choose { choice: text };
    }
    let rules: [fn(&str, &NluContext) -> Option<Intent>; 10] = [
        fixed,
        checkout,
        reorder,
        order_status,
        remove,
        add,
        basket_contents,
        store_info,
        search,
        help,
    ];
    if let Some(intent) = rules.iter().find_map(|rule| rule(&text, context)) {
        return intent;
    }
    if context.pending {
        return Intent::Choose { choice: text };
    }
    Intent::Unknown {
        utterance: Some(text),
    }
}

fn fixed(text: &str, _: &NluContext) -> Option<Intent> {
    let t = text.trim_end_matches(" please");
    match t {
        "hi" | "hello" | "hey" | "hallo" | "good morning" | "good evening" | "start" | "open" => {
            Some(Intent::Welcome)
        }
        "help" | "what can you do" | "what can i ask" | "what can i say" | "how does this work"
        | "help me" | "options" => Some(Intent::Help),
        "stop" | "cancel" | "bye" | "goodbye" | "quit" | "exit" | "that's all" | "thats all"
        | "nothing" | "no thanks" | "thanks bye" | "never mind" => Some(Intent::Stop),
        _ => None,
    }
}

fn help(text: &str, _: &NluContext) -> Option<Intent> {
    (text.starts_with("help ") || text.contains("what can you")).then_some(Intent::Help)
}

fn checkout(text: &str, _: &NluContext) -> Option<Intent> {
    const PHRASES: [&str; 8] = [
        "checkout",
        "check out",
        "pay now",
        "i want to pay",
        "i'd like to pay",
        "place my order",
        "place the order",
        "buy now",
    ];
    PHRASES
        .iter()
        .any(|p| {
            text == *p || text.starts_with(&format!("{p} ")) || text.ends_with(&format!(" {p}"))
        })
        .then_some(Intent::Checkout)
}

fn reorder(text: &str, _: &NluContext) -> Option<Intent> {
    const PHRASES: [&str; 6] = [
        "reorder",
        "re-order",
        "order again",
        "repeat my last order",
        "same as last time",
        "buy again",
    ];
    PHRASES
        .iter()
        .any(|p| text.contains(p))
        .then_some(Intent::Reorder)
}

/// An order number in the text: a token of letters, a dash and digits (`w-000123`), or a run
/// of four or more digits.
fn order_number(text: &str) -> Option<String> {
    text.split_whitespace().find_map(|w| {
        let w = w.trim_start_matches('#');
        let digits = |s: &str| s.len() >= 3 && s.chars().all(|c| c.is_ascii_digit());
        match w.split_once('-') {
            Some((prefix, number))
                if !prefix.is_empty()
                    && prefix.len() <= 3
                    && prefix.chars().all(|c| c.is_ascii_alphabetic())
                    && digits(number) =>
            {
                Some(w.to_uppercase())
            }
            _ if w.len() >= 4 && digits(w) => Some(w.to_string()),
            _ => None,
        }
    })
}

fn order_status(text: &str, _: &NluContext) -> Option<Intent> {
    let about_order =
        text.contains("order") || text.contains("parcel") || text.contains("delivery");
    let asking = [
        "where", "status", "track", "when", "arrive", "shipped", "has my",
    ]
    .iter()
    .any(|w| text.contains(w));
    (about_order && asking).then(|| Intent::OrderStatus {
        order: order_number(text),
    })
}

/// Removes a leading phrase, if the text starts with it followed by a space.
fn after<'a>(text: &'a str, prefixes: &[&str]) -> Option<&'a str> {
    prefixes.iter().find_map(|p| {
        text.strip_prefix(p)
            .and_then(|rest| rest.strip_prefix(' '))
            .filter(|rest| !rest.trim().is_empty())
    })
}

/// Cuts a trailing "from my basket", "to the cart", "please" and the like.
fn without_basket_words(text: &str) -> String {
    let mut t = text.trim().to_string();
    loop {
        let before = t.clone();
        for tail in [
            " please",
            " for me",
            " from my basket",
            " from the basket",
            " from my cart",
            " from the cart",
            " to my basket",
            " to the basket",
            " to my cart",
            " to the cart",
            " in my basket",
            " into my basket",
            " in the basket",
            " into the basket",
            " in my cart",
            " out of my basket",
            " out",
        ] {
            if let Some(rest) = t.strip_suffix(tail) {
                t = rest.trim().to_string();
            }
        }
        if t == before {
            return t;
        }
    }
}

fn remove(text: &str, _: &NluContext) -> Option<Intent> {
    let rest = after(
        text,
        &[
            "please remove",
            "remove",
            "delete",
            "take out",
            "take",
            "drop",
            "get rid of",
        ],
    )?;
    if text.starts_with("take ") && !text.starts_with("take out") && !text.contains(" out") {
        return None;
    }
    let product = strip_articles(&without_basket_words(rest));
    (!product.is_empty()).then_some(Intent::RemoveItem { product })
}

/// Drops a leading "the", "my", "a", "an".
fn strip_articles(text: &str) -> String {
    let mut t = text.trim();
    while let Some(rest) = ["the ", "my ", "all the ", "all "]
        .iter()
        .find_map(|a| t.strip_prefix(a))
    {
        t = rest.trim();
    }
    t.to_string()
}

fn add(text: &str, _: &NluContext) -> Option<Intent> {
    let rest = after(
        text,
        &[
            "please add",
            "can you add",
            "could you add",
            "add",
            "put",
            "i'd like",
            "i would like",
            "i want",
            "i need",
            "buy",
            "get me",
            "order",
            "i'll take",
            "i will take",
        ],
    )?;
    let rest = without_basket_words(rest);
    let (quantity, product) = split_quantity(&rest);
    let product = product.trim().to_string();
    if product.is_empty() {
        return None;
    }
    Some(Intent::AddToBasket { product, quantity })
}

fn basket_contents(text: &str, _: &NluContext) -> Option<Intent> {
    let about = text.contains("basket") || text.contains("cart") || text.contains("trolley");
    let asking = [
        "what", "show", "contents", "total", "view", "list", "read", "how much", "check my",
    ]
    .iter()
    .any(|w| text.contains(w));
    let bare = matches!(
        text,
        "basket" | "my basket" | "cart" | "my cart" | "the basket"
    );
    ((about && asking) || bare).then_some(Intent::BasketContents)
}

fn store_info(text: &str, context: &NluContext) -> Option<Intent> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let is_store_word = |w: &str| context.store_words.iter().any(|s| s == w);
    // The store's words as said ("berlin", "hamburg altona"): first and last index.
    let named_store = words.iter().rposition(|w| is_store_word(w)).map(|end| {
        let mut start = end;
        while start > 0 && is_store_word(words[start - 1]) {
            start -= 1;
        }
        (start, end)
    });
    let hours = text.contains("opening")
        || text.contains("hours")
        || text.contains(" open")
        || text.starts_with("open")
        || text.contains("close");
    let in_stock = text.contains("in stock") || text.contains("available");
    let product = if in_stock {
        // "is X in stock in Berlin", "do you have X in stock at Hamburg".
        let before = text.split(" in stock").next().unwrap_or("");
        let before = before.split(" available").next().unwrap_or(before);
        after(
            before,
            &[
                "is there",
                "are there",
                "is",
                "are",
                "do you have",
                "have you got",
                "any",
            ],
        )
        .map(strip_articles)
        .or_else(|| {
            (before.split_whitespace().count() > 0 && !before.starts_with("what"))
                .then(|| strip_articles(before))
        })
    } else {
        // "do you have X in Berlin": the product before the store's name.
        named_store.and_then(|(start, _)| {
            let head = words[..start].join(" ");
            let head = head
                .trim_end_matches(" the")
                .trim_end_matches(" in")
                .trim_end_matches(" at")
                .to_string();
            after(
                &head,
                &[
                    "do you have",
                    "have you got",
                    "is there",
                    "are there",
                    "any",
                ],
            )
            .map(strip_articles)
        })
    };
    let store = named_store
        .map(|(start, end)| words[start..=end].join(" "))
        .or_else(|| {
            // "opening hours paris": a store the assistant may not know, said after the hours.
            let rest = after(
                text,
                &["opening hours", "opening times", "store hours", "hours"],
            )?;
            let rest: Vec<&str> = rest
                .split_whitespace()
                .filter(|w| !matches!(*w, "of" | "for" | "in" | "at" | "the" | "store" | "shop"))
                .collect();
            (!rest.is_empty()).then(|| rest.join(" "))
        });
    if hours || (named_store.is_some() && (in_stock || product.is_some())) {
        return Some(Intent::StoreInfo {
            store,
            product: product.filter(|p| !p.is_empty()),
        });
    }
    if in_stock && named_store.is_none() {
        // Online stock: a search shows it.
        return product
            .filter(|p| !p.is_empty())
            .map(|query| Intent::Search { query });
    }
    None
}

fn search(text: &str, _: &NluContext) -> Option<Intent> {
    let rest = after(
        text,
        &[
            "do you have any",
            "do you have",
            "do you sell",
            "have you got any",
            "have you got",
            "do you stock",
            "search for",
            "search",
            "find me",
            "find",
            "look for",
            "looking for",
            "i'm looking for",
            "im looking for",
            "i am looking for",
            "show me",
            "how much is",
            "how much are",
            "what does",
            "price of",
            "is there any",
            "are there any",
        ],
    )?;
    let query = strip_articles(
        rest.trim_end_matches(" cost")
            .trim_end_matches(" costs")
            .trim(),
    );
    let query = query
        .strip_prefix("some ")
        .unwrap_or(&query)
        .trim()
        .to_string();
    (!query.is_empty()).then_some(Intent::Search { query })
}

// ---------------------------------------------------------------------------------------------
// Quantities and choices
// ---------------------------------------------------------------------------------------------

const UNITS: [(&str, i64); 20] = [
    ("zero", 0),
    ("one", 1),
    ("two", 2),
    ("three", 3),
    ("four", 4),
    ("five", 5),
    ("six", 6),
    ("seven", 7),
    ("eight", 8),
    ("nine", 9),
    ("ten", 10),
    ("eleven", 11),
    ("twelve", 12),
    ("thirteen", 13),
    ("fourteen", 14),
    ("fifteen", 15),
    ("sixteen", 16),
    ("seventeen", 17),
    ("eighteen", 18),
    ("nineteen", 19),
];

const TENS: [(&str, i64); 8] = [
    ("twenty", 20),
    ("thirty", 30),
    ("forty", 40),
    ("fifty", 50),
    ("sixty", 60),
    ("seventy", 70),
    ("eighty", 80),
    ("ninety", 90),
];

/// The value of one number word, and whether it multiplies (hundred, thousand).
fn number_word(word: &str) -> Option<(i64, bool)> {
    if let Some((_, n)) = UNITS.iter().chain(TENS.iter()).find(|(w, _)| *w == word) {
        return Some((*n, false));
    }
    match word {
        "hundred" => Some((100, true)),
        "thousand" => Some((1_000, true)),
        "million" => Some((1_000_000, true)),
        "dozen" => Some((12, true)),
        "none" | "no" => Some((0, false)),
        _ => None,
    }
}

/// Digits with optional thousands separators and sign: "3", "-3", "10,000", "10.000".
fn digits(word: &str) -> Option<i64> {
    let (negative, body) = match word.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, word),
    };
    let grouped = body.contains(',') || body.contains('.');
    let plain: String = body.chars().filter(|c| !matches!(c, ',' | '.')).collect();
    if plain.is_empty() || plain.len() > 12 || !plain.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    if grouped && !body.split([',', '.']).skip(1).all(|g| g.len() == 3) {
        return None;
    }
    let n: i64 = plain.parse().ok()?;
    Some(if negative { -n } else { n })
}

/// Reads a quantity as said ("two", "a dozen", "twenty five", "minus three", "10,000").
/// `None` when it is not a quantity at all.
pub fn quantity_value(text: &str) -> Option<i64> {
    let cleaned = clean(text);
    let mut words: Vec<&str> = cleaned
        .split_whitespace()
        .filter(|w| !matches!(*w, "and" | "of" | "x" | "times"))
        .collect();
    let mut sign = 1;
    if matches!(words.first(), Some(&"minus") | Some(&"negative")) {
        sign = -1;
        words.remove(0);
    }
    match words.as_slice() {
        [] => return None,
        ["a"] | ["an"] | ["a", "single"] | ["single"] => return Some(sign),
        ["a", "couple"] | ["couple"] | ["a", "pair"] | ["pair"] => return Some(2 * sign),
        ["half", "a", "dozen"] => return Some(6 * sign),
        _ => {}
    }
    if let [one] = words.as_slice() {
        if let Some(n) = digits(one) {
            return Some(sign * n);
        }
    }
    let mut total = 0i64;
    let mut current = 0i64;
    for (i, w) in words.iter().enumerate() {
        let (n, multiplies) = match (*w, number_word(w)) {
            ("a" | "an", _) if i == 0 => (1, false),
            (_, Some(v)) => v,
            _ => (digits(w)?, false),
        };
        if multiplies {
            current = current.max(1).checked_mul(n)?;
            if n >= 1_000 {
                total = total.checked_add(current)?;
                current = 0;
            }
        } else {
            current = current.checked_add(n)?;
        }
    }
    Some(sign * total.checked_add(current)?)
}

/// Splits a leading quantity off a product phrase: "two bags of coffee" → ("two", "bags of
/// coffee"); "a dozen eggs" → ("a dozen", "eggs"); "coffee" → (None, "coffee").
pub fn split_quantity(text: &str) -> (Option<String>, String) {
    let words: Vec<&str> = text.split_whitespace().collect();
    let is_number_word = |w: &str| {
        number_word(w).is_some()
            || digits(w).is_some()
            || matches!(
                w,
                "minus" | "negative" | "and" | "half" | "couple" | "pair" | "single"
            )
    };
    let mut end = 0;
    while end < words.len() {
        let w = words[end];
        // "a" is an article at the start ("a bag of coffee" is one bag) or before a
        // multiplier ("half a dozen").
        let article = matches!(w, "a" | "an")
            && (end == 0
                || words
                    .get(end + 1)
                    .is_some_and(|next| number_word(next).is_some_and(|(_, m)| m)));
        if is_number_word(w) || article {
            end += 1;
        } else {
            break;
        }
    }
    while end > 0 && matches!(words[end - 1], "and" | "minus" | "negative") {
        end -= 1;
    }
    if end == 0 || end == words.len() {
        return (None, text.trim().to_string());
    }
    let quantity = words[..end].join(" ");
    let mut rest = &words[end..];
    if rest.first() == Some(&"of") {
        rest = &rest[1..];
    }
    (Some(quantity), rest.join(" "))
}

const ORDINALS: [(&str, usize); 10] = [
    ("first", 1),
    ("second", 2),
    ("third", 3),
    ("fourth", 4),
    ("fifth", 5),
    ("sixth", 6),
    ("seventh", 7),
    ("eighth", 8),
    ("ninth", 9),
    ("tenth", 10),
];

/// The position a choice names: "2", "the second", "second one", "number two", "2nd",
/// "the last one" (`usize::MAX`). `None` when the choice names no position.
pub fn choice_position(text: &str) -> Option<usize> {
    let cleaned = clean(text);
    let words: Vec<&str> = cleaned
        .split_whitespace()
        .filter(|w| {
            !matches!(
                *w,
                "the" | "one" | "number" | "no" | "option" | "please" | "it's" | "its" | "take"
            )
        })
        .collect();
    let one_word = cleaned.split_whitespace().collect::<Vec<_>>();
    if matches!(
        one_word.as_slice(),
        ["one"] | ["the", "one"] | ["number", "one"]
    ) {
        return Some(1);
    }
    let [word] = words.as_slice() else {
        return None;
    };
    if *word == "last" {
        return Some(usize::MAX);
    }
    if let Some((_, n)) = ORDINALS.iter().find(|(w, _)| w == word) {
        return Some(*n);
    }
    let numeric = word
        .trim_end_matches("st")
        .trim_end_matches("nd")
        .trim_end_matches("rd")
        .trim_end_matches("th");
    if let Ok(n) = numeric.parse::<usize>() {
        return (n > 0).then_some(n);
    }
    number_word(word)
        .filter(|(n, multiplies)| !multiplies && *n > 0)
        .map(|(n, _)| n as usize)
}

/// Whether a message answers "which one?" by position.
fn is_choice(text: &str) -> bool {
    choice_position(text).is_some()
}

// ---------------------------------------------------------------------------------------------
// Product words
// ---------------------------------------------------------------------------------------------

/// Words that say how something comes, not what it is: dropped from product phrases.
const FILLERS: [&str; 37] = [
    "a", "an", "the", "some", "of", "any", "bag", "pack", "packet", "bottle", "box", "jar",
    "carton", "piece", "please", "my", "to", "into", "in", "basket", "cart", "for", "me", "i",
    "want", "would", "like", "more", "few", "you", "have", "do", "got", "unit", "item", "with",
    "and",
];

/// One word in its singular form ("berries" → "berry", "tomatoes" → "tomato", "bags" → "bag").
pub fn singular(word: &str) -> String {
    let w = word;
    if w.len() <= 3 || w.ends_with("ss") || w.ends_with("us") || w.ends_with("is") {
        return w.to_string();
    }
    if let Some(stem) = w.strip_suffix("ies") {
        return format!("{stem}y");
    }
    if let Some(stem) = w.strip_suffix("oes") {
        return format!("{stem}o");
    }
    for tail in ["ches", "shes", "sses", "xes"] {
        if w.ends_with(tail) {
            return w[..w.len() - 2].to_string();
        }
    }
    w.strip_suffix('s').unwrap_or(w).to_string()
}

/// Units as they are written on packs.
fn unit(word: &str) -> &str {
    match word {
        "litre" | "liter" | "litres" | "liters" | "ltr" => "l",
        "millilitre" | "milliliter" | "millilitres" | "milliliters" => "ml",
        "kilo" | "kilos" | "kilogram" | "kilograms" | "kgs" => "kg",
        "gram" | "grams" | "gramme" | "grammes" | "gr" => "g",
        "centimetre" | "centimetres" | "centimeter" | "centimeters" => "cm",
        other => other,
    }
}

/// The words of a name or a phrase, lower case, singular, units as on packs.
pub fn words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| singular(unit(w)))
        .collect()
}

/// The words of what a shopper asked for, without fillers ("two bags of coffee" → `coffee`).
pub fn product_words(text: &str) -> Vec<String> {
    let all = words(text);
    let kept: Vec<String> = all
        .iter()
        .filter(|w| !FILLERS.contains(&w.as_str()))
        .cloned()
        .collect();
    if kept.is_empty() {
        all
    } else {
        kept
    }
}

/// Other words for the same thing, both ways.
const SYNONYMS: [(&str, &str); 12] = [
    ("yoghurt", "yogurt"),
    ("chip", "crisp"),
    ("cola", "soda"),
    ("zucchini", "courgette"),
    ("fizzy", "sparkling"),
    ("mug", "cup"),
    ("espresso", "coffee"),
    ("skimmed", "skim"),
    ("cellphone", "phone"),
    ("pot", "saucepan"),
    ("tap", "still"),
    ("candy", "sweet"),
];

/// Whether a word the shopper said matches a word of a product.
pub fn word_matches(said: &str, word: &str) -> bool {
    said == word
        || SYNONYMS
            .iter()
            .any(|(a, b)| (said == *a && word == *b) || (said == *b && word == *a))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(pending: bool) -> NluContext {
        NluContext {
            pending,
            store_words: ["berlin", "mitte", "hamburg", "altona"]
                .map(String::from)
                .to_vec(),
        }
    }

    fn add(product: &str, quantity: Option<&str>) -> Intent {
        Intent::AddToBasket {
            product: product.into(),
            quantity: quantity.map(String::from),
        }
    }

    #[test]
    fn chat_text_becomes_intents() {
        let search = |q: &str| Intent::Search { query: q.into() };
        let table: Vec<(&str, bool, Intent)> = vec![
            ("", false, Intent::Welcome),
            ("Hello!", false, Intent::Welcome),
            ("help", false, Intent::Help),
            ("What can you do?", false, Intent::Help),
            ("Do you have oat milk?", false, search("oat milk")),
            ("search earl grey", false, search("earl grey")),
            ("search for some green tea", false, search("green tea")),
            ("How much is the whole milk?", false, search("whole milk")),
            ("is oat milk in stock?", false, search("oat milk")),
            (
                "add two bags of coffee",
                false,
                add("bags of coffee", Some("two")),
            ),
            (
                "Add 3 bananas to my basket",
                false,
                add("bananas", Some("3")),
            ),
            ("add a dozen eggs", false, add("eggs", Some("a dozen"))),
            (
                "add minus three phones",
                false,
                add("phones", Some("minus three")),
            ),
            ("add 10,000 apples", false, add("apples", Some("10,000"))),
            (
                "add twenty five apples",
                false,
                add("apples", Some("twenty five")),
            ),
            ("add coffee", false, add("coffee", None)),
            (
                "I'd like a bag of coffee please",
                false,
                add("bag of coffee", Some("a")),
            ),
            (
                "put 2 earl grey in my basket",
                false,
                add("earl grey", Some("2")),
            ),
            (
                "remove the coffee from my basket",
                false,
                Intent::RemoveItem {
                    product: "coffee".into(),
                },
            ),
            (
                "take the milk out",
                false,
                Intent::RemoveItem {
                    product: "milk".into(),
                },
            ),
            ("what's in my basket?", false, Intent::BasketContents),
            ("show my cart", false, Intent::BasketContents),
            ("basket", false, Intent::BasketContents),
            (
                "Where is my order?",
                false,
                Intent::OrderStatus { order: None },
            ),
            (
                "where is my order W-000123",
                false,
                Intent::OrderStatus {
                    order: Some("W-000123".into()),
                },
            ),
            (
                "status of order #w-000042",
                false,
                Intent::OrderStatus {
                    order: Some("W-000042".into()),
                },
            ),
            ("reorder", false, Intent::Reorder),
            ("Order again please", false, Intent::Reorder),
            ("checkout", false, Intent::Checkout),
            ("I want to check out", false, Intent::Checkout),
            (
                "opening hours",
                false,
                Intent::StoreInfo {
                    store: None,
                    product: None,
                },
            ),
            (
                "opening hours Berlin",
                false,
                Intent::StoreInfo {
                    store: Some("berlin".into()),
                    product: None,
                },
            ),
            (
                "opening hours of the Paris store",
                false,
                Intent::StoreInfo {
                    store: Some("paris".into()),
                    product: None,
                },
            ),
            (
                "When is the Hamburg store open?",
                false,
                Intent::StoreInfo {
                    store: Some("hamburg".into()),
                    product: None,
                },
            ),
            (
                "is earl grey in stock in Berlin?",
                false,
                Intent::StoreInfo {
                    store: Some("berlin".into()),
                    product: Some("earl grey".into()),
                },
            ),
            (
                "do you have whole milk in Hamburg Altona",
                false,
                Intent::StoreInfo {
                    store: Some("hamburg altona".into()),
                    product: Some("whole milk".into()),
                },
            ),
            ("2", true, Intent::Choose { choice: "2".into() }),
            (
                "the second one",
                true,
                Intent::Choose {
                    choice: "the second one".into(),
                },
            ),
            (
                "Second",
                true,
                Intent::Choose {
                    choice: "second".into(),
                },
            ),
            (
                "kenya nyeri",
                true,
                Intent::Choose {
                    choice: "kenya nyeri".into(),
                },
            ),
            ("stop", true, Intent::Stop),
            ("goodbye", false, Intent::Stop),
            (
                "2",
                false,
                Intent::Unknown {
                    utterance: Some("2".into()),
                },
            ),
            (
                "sing me a song",
                false,
                Intent::Unknown {
                    utterance: Some("sing me a song".into()),
                },
            ),
        ];
        for (text, pending, expected) in table {
            assert_eq!(parse(text, &ctx(pending)), expected, "{text:?}");
        }
    }

    #[test]
    fn quantities_are_read_as_said() {
        let table = [
            ("two", Some(2)),
            ("2", Some(2)),
            ("a", Some(1)),
            ("a dozen", Some(12)),
            ("half a dozen", Some(6)),
            ("a couple", Some(2)),
            ("twenty five", Some(25)),
            ("a hundred", Some(100)),
            ("ten thousand", Some(10_000)),
            ("10,000", Some(10_000)),
            ("minus three", Some(-3)),
            ("-3", Some(-3)),
            ("zero", Some(0)),
            ("lots", None),
            ("1,00", None),
        ];
        for (text, expected) in table {
            assert_eq!(quantity_value(text), expected, "{text:?}");
        }
    }

    #[test]
    fn choices_name_positions() {
        let table = [
            ("2", Some(2)),
            ("the second", Some(2)),
            ("second one", Some(2)),
            ("number three", Some(3)),
            ("3rd", Some(3)),
            ("the first one", Some(1)),
            ("one", Some(1)),
            ("the last one", Some(usize::MAX)),
            ("0", None),
            ("kenya", None),
        ];
        for (text, expected) in table {
            assert_eq!(choice_position(text), expected, "{text:?}");
        }
    }

    #[test]
    fn product_words_are_normalised() {
        assert_eq!(product_words("bags of coffee"), ["coffee"]);
        assert_eq!(product_words("Strawberries"), ["strawberry"]);
        assert_eq!(product_words("two tomatoes"), ["two", "tomato"]);
        assert_eq!(product_words("1 litre oat milk"), ["1", "l", "oat", "milk"]);
        assert_eq!(singular("glasses"), "glass");
        assert_eq!(singular("peaches"), "peach");
        assert!(word_matches("yoghurt", "yogurt"));
    }
}
