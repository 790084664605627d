//! The checkout configuration: the markets the shop sells to (their tax rates and whether their
//! prices include tax) and the shipping zones with their methods and rates.

use super::CheckoutError;
use crate::catalog::{standard_tax_class, STANDARD_TAX_CLASS};
use crate::money::{Currency, Money};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Markets and shipping zones, checked once at start-up by [`CheckoutConfig::validate`].
///
/// Amounts are decimal strings in the basket currency. In TOML, under the hub's `[checkout]`:
///
/// ```toml
/// [[checkout.markets]]
/// country = "DE"
/// prices_include_tax = true
/// tax_rates = { standard = 1900, reduced = 700, zero = 0 }   # basis points per tax class
///
/// [[checkout.zones]]
/// name = "Germany"
/// countries = ["DE"]
///
/// [[checkout.zones.methods]]
/// id = "standard"
/// name = "Standard delivery"
/// rate = { flat = "4.90" }
/// free_over = "50.00"          # free when the subtotal after discount is at least this
/// delivery = "2–3 working days"
///
/// [[checkout.zones.methods]]
/// id = "parcel"
/// name = "Parcel"
/// delivery = "3–5 working days"
/// tax_class = "standard"       # the default
/// rate = { weight_bands = [
///     { up_to_grams = 2000, amount = "6.90" },
///     { up_to_grams = 10000, amount = "12.90" },
/// ] }
/// # or by the subtotal after discount (inclusive upper limits):
/// # rate = { price_bands = [ { up_to = "20.00", amount = "5.90" }, { up_to = "99999.99", amount = "3.90" } ] }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckoutConfig {
    pub markets: Vec<Market>,
    pub zones: Vec<ShippingZone>,
}

/// A country the shop sells to: its tax rates and how its prices are quoted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Market {
    /// ISO 3166-1 alpha-2, upper case.
    pub country: String,
    /// True where shoppers see prices with tax included (the EU, the UK); false where tax is
    /// added at checkout (the US).
    pub prices_include_tax: bool,
    /// Tax class (`standard`, `reduced`, `zero`, …) → rate in basis points (1900 = 19 %).
    pub tax_rates: BTreeMap<String, u32>,
}

impl Market {
    /// The rate of a tax class, in basis points.
    pub fn rate(&self, tax_class: &str) -> Option<u32> {
        self.tax_rates.get(tax_class).copied()
    }
}

/// Countries that share shipping methods and prices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShippingZone {
    pub name: String,
    pub countries: Vec<String>,
    pub methods: Vec<ShippingMethodConfig>,
}

/// One way of shipping to a zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShippingMethodConfig {
    /// Unique within its zone; what the shopper's choice names, e.g. `standard`.
    pub id: String,
    pub name: String,
    pub rate: Rate,
    /// Shipping is free when the subtotal after discount is at least this (a decimal).
    #[serde(default)]
    pub free_over: Option<String>,
    /// Delivery time as shown, e.g. `2–3 working days`.
    pub delivery: String,
    /// The tax class shipping is taxed at.
    #[serde(default = "standard_tax_class")]
    pub tax_class: String,
}

/// What a shipping method costs. A basket beyond the last band has no option for the method.
///
/// In TOML: `rate = { flat = "4.90" }`,
/// `rate = { weight_bands = [ { up_to_grams = 2000, amount = "6.90" } ] }` or
/// `rate = { price_bands = [ { up_to = "20.00", amount = "5.90" } ] }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "RateShape", into = "RateShape")]
pub enum Rate {
    Flat {
        amount: String,
    },
    /// By the basket's shipping weight: the first band whose limit is not below it.
    WeightBands {
        bands: Vec<WeightBand>,
    },
    /// By the subtotal after discount: the first band whose limit is not below it.
    PriceBands {
        bands: Vec<PriceBand>,
    },
}

/// Up to and including `up_to_grams`, shipping costs `amount`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightBand {
    pub up_to_grams: u64,
    pub amount: String,
}

/// Up to and including a subtotal of `up_to`, shipping costs `amount`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceBand {
    pub up_to: String,
    pub amount: String,
}

/// The configuration form of [`Rate`]: one key naming the kind, so TOML reads
/// `{ flat = "4.90" }` rather than `{ flat = { amount = "4.90" } }`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RateShape {
    Flat(String),
    WeightBands(Vec<WeightBand>),
    PriceBands(Vec<PriceBand>),
}

impl From<RateShape> for Rate {
    fn from(shape: RateShape) -> Rate {
        match shape {
            RateShape::Flat(amount) => Rate::Flat { amount },
            RateShape::WeightBands(bands) => Rate::WeightBands { bands },
            RateShape::PriceBands(bands) => Rate::PriceBands { bands },
        }
    }
}

impl From<Rate> for RateShape {
    fn from(rate: Rate) -> RateShape {
        match rate {
            Rate::Flat { amount } => RateShape::Flat(amount),
            Rate::WeightBands { bands } => RateShape::WeightBands(bands),
            Rate::PriceBands { bands } => RateShape::PriceBands(bands),
        }
    }
}

impl CheckoutConfig {
    /// Checks the configuration once at start-up, so mistakes surface at boot and not at a
    /// shopper's checkout: every amount parses in `currency` and is not negative, bands ascend,
    /// countries are upper-case ISO codes in one zone each with a market, every market has a
    /// `standard` rate, and every method's tax class has a rate in each of its zone's markets.
    /// All problems at once, separated by `; `.
    pub fn validate(&self, currency: Currency) -> Result<(), String> {
        let mut problems = Vec::new();
        let mut markets = BTreeSet::new();
        for market in &self.markets {
            problems.extend(market_problems(market, &mut markets));
        }
        let mut zoned = BTreeSet::new();
        let mut names = BTreeSet::new();
        for zone in &self.zones {
            let at = format!("checkout zone \"{}\"", zone.name);
            if zone.name.trim().is_empty() || !names.insert(zone.name.as_str()) {
                problems.push(format!("{at}: zone names must be unique and not empty"));
            }
            if zone.countries.is_empty() || zone.methods.is_empty() {
                problems.push(format!("{at}: needs at least one country and one method"));
            }
            for country in &zone.countries {
                if !zoned.insert(country.as_str()) {
                    problems.push(format!("{at}: {country} is in more than one zone"));
                }
                if self.market(country).is_none() {
                    problems.push(format!(
                        "{at}: {country} has no [[checkout.markets]] entry (its tax rates)"
                    ));
                }
            }
            problems.extend(self.method_problems(zone, currency, &at));
        }
        if zoned.is_empty() {
            problems.push("checkout: no zone ships anywhere".to_string());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    fn method_problems(&self, zone: &ShippingZone, currency: Currency, at: &str) -> Vec<String> {
        let mut problems = Vec::new();
        let mut ids = BTreeSet::new();
        for method in &zone.methods {
            let at = format!("{at}, method \"{}\"", method.id);
            if method.id.trim().is_empty() || !ids.insert(method.id.as_str()) {
                problems.push(format!(
                    "{at}: method ids must be unique in a zone and not empty"
                ));
            }
            if method.name.trim().is_empty() {
                problems.push(format!("{at}: the name is empty"));
            }
            let free = method.free_over.iter().map(|f| ("free_over", f.as_str()));
            for (what, amount) in rate_amounts(&method.rate).chain(free) {
                if let Err(problem) = parse_amount(amount, currency) {
                    problems.push(format!("{at}: {what} {problem}"));
                }
            }
            if let Some(problem) = band_order_problem(&method.rate, currency) {
                problems.push(format!("{at}: {problem}"));
            }
            for country in &zone.countries {
                let rate = self.market(country).map(|m| m.rate(&method.tax_class));
                if rate == Some(None) {
                    problems.push(format!(
                        "{at}: tax class \"{}\" has no rate in market {country}",
                        method.tax_class
                    ));
                }
            }
        }
        problems
    }

    /// The countries shipped to, in configuration order: the choices of the address form.
    pub fn countries(&self) -> Vec<&str> {
        let mut seen = BTreeSet::new();
        self.zones
            .iter()
            .flat_map(|z| z.countries.iter().map(String::as_str))
            .filter(|c| seen.insert(*c))
            .collect()
    }

    /// The country (trimmed, upper case) with its market and shipping zone.
    pub(super) fn destination(
        &self,
        country: &str,
    ) -> Result<(String, &Market, &ShippingZone), CheckoutError> {
        let country = country.trim().to_ascii_uppercase();
        match (self.market(&country), self.zone(&country)) {
            (Some(market), Some(zone)) => Ok((country, market, zone)),
            _ => Err(CheckoutError::CountryNotServed(country)),
        }
    }

    /// The market of a country (any case).
    pub fn market(&self, country: &str) -> Option<&Market> {
        let country = country.trim();
        self.markets
            .iter()
            .find(|m| m.country.eq_ignore_ascii_case(country))
    }

    /// The shipping zone of a country (any case).
    pub fn zone(&self, country: &str) -> Option<&ShippingZone> {
        let country = country.trim();
        self.zones
            .iter()
            .find(|z| z.countries.iter().any(|c| c.eq_ignore_ascii_case(country)))
    }
}

fn market_problems<'a>(market: &'a Market, seen: &mut BTreeSet<&'a str>) -> Vec<String> {
    let mut problems = Vec::new();
    let at = format!("checkout market \"{}\"", market.country);
    let code = &market.country;
    if code.len() != 2 || !code.bytes().all(|b| b.is_ascii_uppercase()) {
        problems.push(format!(
            "{at}: country must be an upper-case ISO 3166-1 code such as DE"
        ));
    }
    if !seen.insert(code.as_str()) {
        problems.push(format!("{at}: listed twice"));
    }
    if market.rate(STANDARD_TAX_CLASS).is_none() {
        problems.push(format!(
            "{at}: needs a \"{STANDARD_TAX_CLASS}\" rate, the class of products that name none"
        ));
    }
    for (class, rate) in &market.tax_rates {
        if *rate > 10_000 {
            problems.push(format!(
                "{at}: rate of \"{class}\" is {rate} basis points, more than 100 %"
            ));
        }
    }
    problems
}

/// Every amount of a rate, with what it is for error messages.
fn rate_amounts(rate: &Rate) -> Box<dyn Iterator<Item = (&'static str, &str)> + '_> {
    match rate {
        Rate::Flat { amount } => Box::new(std::iter::once(("flat amount", amount.as_str()))),
        Rate::WeightBands { bands } => {
            Box::new(bands.iter().map(|b| ("band amount", b.amount.as_str())))
        }
        Rate::PriceBands { bands } => Box::new(bands.iter().flat_map(|b| {
            [
                ("band amount", b.amount.as_str()),
                ("band up_to", b.up_to.as_str()),
            ]
        })),
    }
}

fn band_order_problem(rate: &Rate, currency: Currency) -> Option<String> {
    let limits: Option<Vec<i128>> = match rate {
        Rate::Flat { .. } => return None,
        Rate::WeightBands { bands } => {
            Some(bands.iter().map(|b| i128::from(b.up_to_grams)).collect())
        }
        // An amount that does not parse is reported on its own.
        Rate::PriceBands { bands } => bands
            .iter()
            .map(|b| {
                parse_amount(&b.up_to, currency)
                    .ok()
                    .map(|m| i128::from(m.minor))
            })
            .collect(),
    };
    let limits = limits?;
    if limits.is_empty() {
        Some("needs at least one band".to_string())
    } else if limits.windows(2).any(|w| w[0] >= w[1]) {
        Some("band limits must strictly ascend".to_string())
    } else {
        None
    }
}

/// A configured amount: a non-negative decimal with at most the currency's decimals.
pub(super) fn parse_amount(text: &str, currency: Currency) -> Result<Money, String> {
    match Money::parse_decimal(text, currency) {
        Ok(money) if money.minor >= 0 => Ok(money),
        _ => Err(format!(
            "\"{text}\" is not an amount in {currency}: write a non-negative decimal with at most {} decimals, e.g. \"4.90\"",
            currency.exponent()
        )),
    }
}

fn market(country: &str, prices_include_tax: bool, rates: [u32; 3]) -> Market {
    let [standard, reduced, zero] = rates;
    Market {
        country: country.to_string(),
        prices_include_tax,
        tax_rates: BTreeMap::from([
            (STANDARD_TAX_CLASS.to_string(), standard),
            ("reduced".to_string(), reduced),
            ("zero".to_string(), zero),
        ]),
    }
}

fn method(
    id: &str,
    name: &str,
    rate: Rate,
    free_over: Option<&str>,
    delivery: &str,
) -> ShippingMethodConfig {
    ShippingMethodConfig {
        id: id.to_string(),
        name: name.to_string(),
        rate,
        free_over: free_over.map(str::to_string),
        delivery: delivery.to_string(),
        tax_class: standard_tax_class(),
    }
}

fn weight_bands(bands: &[(u64, &str)]) -> Rate {
    Rate::WeightBands {
        bands: bands
            .iter()
            .map(|(up_to_grams, amount)| WeightBand {
                up_to_grams: *up_to_grams,
                amount: amount.to_string(),
            })
            .collect(),
    }
}

fn zone(name: &str, countries: &[&str], methods: Vec<ShippingMethodConfig>) -> ShippingZone {
    ShippingZone {
        name: name.to_string(),
        countries: countries.iter().map(|c| c.to_string()).collect(),
        methods,
    }
}

impl Default for CheckoutConfig {
    /// A German shop selling in EUR: VAT rates of 2025 (standard / reduced / zero); prices
    /// include tax everywhere but in the US, whose single rate of 7.25 % (California's base rate)
    /// only illustrates tax added at checkout — real US sales tax depends on the state and
    /// county and is out of scope, as are customs duties.
    fn default() -> CheckoutConfig {
        let flat = |amount: &str| Rate::Flat {
            amount: amount.to_string(),
        };
        CheckoutConfig {
            markets: vec![
                market("DE", true, [1900, 700, 0]),
                market("AT", true, [2000, 1000, 0]),
                market("FR", true, [2000, 550, 0]),
                market("NL", true, [2100, 900, 0]),
                market("BE", true, [2100, 600, 0]),
                market("GB", true, [2000, 0, 0]),
                market("US", false, [725, 0, 0]),
            ],
            zones: vec![
                zone(
                    "Germany",
                    &["DE"],
                    vec![
                        method(
                            "standard",
                            "Standard delivery",
                            flat("4.90"),
                            Some("50.00"),
                            "2–3 working days",
                        ),
                        method(
                            "express",
                            "Express delivery",
                            flat("9.90"),
                            None,
                            "Next working day",
                        ),
                    ],
                ),
                zone(
                    "EU",
                    &["AT", "FR", "NL", "BE"],
                    vec![method(
                        "standard",
                        "Standard delivery",
                        weight_bands(&[
                            (2_000, "6.90"),
                            (5_000, "9.90"),
                            (10_000, "14.90"),
                            (31_500, "19.90"),
                        ]),
                        Some("100.00"),
                        "3–5 working days",
                    )],
                ),
                zone(
                    "International",
                    &["GB", "US"],
                    vec![method(
                        "standard",
                        "International parcel",
                        weight_bands(&[
                            (1_000, "14.90"),
                            (2_000, "19.90"),
                            (5_000, "29.90"),
                            (20_000, "49.90"),
                        ]),
                        None,
                        "5–10 working days",
                    )],
                ),
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_valid_and_ships_to_its_markets() {
        let config = CheckoutConfig::default();
        assert_eq!(config.validate(Currency::EUR), Ok(()));
        assert_eq!(
            config.countries(),
            ["DE", "AT", "FR", "NL", "BE", "GB", "US"]
        );
        assert_eq!(
            config.market("de").and_then(|m| m.rate("reduced")),
            Some(700)
        );
        assert_eq!(config.zone(" nl ").map(|z| z.name.as_str()), Some("EU"));
        assert!(config.market("CH").is_none() && config.zone("CH").is_none());
        let jpy = config.validate(Currency::JPY).expect_err("decimals in yen");
        assert!(jpy.contains("\"4.90\" is not an amount in JPY"), "{jpy}");
    }

    #[test]
    fn a_broken_config_says_what_is_wrong() {
        type Breakage = fn(&mut CheckoutConfig);
        let cases: [(Breakage, &str); 9] = [
            (
                |c| c.zones[1].countries.push("CH".into()),
                "checkout zone \"EU\": CH has no [[checkout.markets]] entry",
            ),
            (
                |c| {
                    c.zones[1].methods[0].rate = Rate::WeightBands {
                        bands: vec![
                            WeightBand {
                                up_to_grams: 5_000,
                                amount: "9.90".into(),
                            },
                            WeightBand {
                                up_to_grams: 2_000,
                                amount: "6.90".into(),
                            },
                        ],
                    }
                },
                "method \"standard\": band limits must strictly ascend",
            ),
            (
                |c| {
                    c.zones[0].methods[0].rate = Rate::Flat {
                        amount: "4,90".into(),
                    }
                },
                "flat amount \"4,90\" is not an amount in EUR",
            ),
            (
                |c| c.zones[0].methods[0].free_over = Some("-1".into()),
                "free_over \"-1\" is not an amount in EUR",
            ),
            (
                |c| c.zones[0].methods[1].tax_class = "luxury".into(),
                "tax class \"luxury\" has no rate in market DE",
            ),
            (
                |c| c.zones[2].countries.push("DE".into()),
                "DE is in more than one zone",
            ),
            (
                |c| {
                    c.markets[0].tax_rates.remove("standard");
                },
                "checkout market \"DE\": needs a \"standard\" rate",
            ),
            (
                |c| c.zones[0].methods[1].id = "standard".into(),
                "method ids must be unique in a zone",
            ),
            (
                |c| c.zones[2].methods[0].rate = Rate::PriceBands { bands: vec![] },
                "needs at least one band",
            ),
        ];
        for (breakage, expected) in cases {
            let mut config = CheckoutConfig::default();
            breakage(&mut config);
            let error = config.validate(Currency::EUR).expect_err(expected);
            assert!(
                error.contains(expected),
                "{error}\nshould contain: {expected}"
            );
        }
    }

    #[test]
    fn rates_read_as_one_key_and_unknown_fields_are_refused() {
        let flat: Rate = serde_json::from_str(r#"{"flat": "4.90"}"#).expect("flat");
        assert_eq!(
            flat,
            Rate::Flat {
                amount: "4.90".into()
            }
        );
        let bands: Rate =
            serde_json::from_str(r#"{"weight_bands": [{"up_to_grams": 2000, "amount": "6.90"}]}"#)
                .expect("weight bands");
        assert_eq!(
            bands,
            Rate::WeightBands {
                bands: vec![WeightBand {
                    up_to_grams: 2000,
                    amount: "6.90".into()
                }]
            }
        );
        let prices: Rate =
            serde_json::from_str(r#"{"price_bands": [{"up_to": "20.00", "amount": "5.90"}]}"#)
                .expect("price bands");
        assert!(matches!(prices, Rate::PriceBands { .. }));
        assert!(serde_json::from_str::<Rate>(r#"{"per_item": "1.00"}"#).is_err());
        let method = r#"{"id": "x", "name": "X", "rate": {"flat": "1"}, "delivery": "soon"}"#;
        let method: ShippingMethodConfig = serde_json::from_str(method).expect("method");
        assert_eq!(
            (method.tax_class.as_str(), method.free_over),
            ("standard", None)
        );
        let typo =
            r#"{"country": "DE", "prices_include_tax": true, "tax_rates": {}, "tax_rate": 1}"#;
        assert!(serde_json::from_str::<Market>(typo).is_err());
        let config = CheckoutConfig::default();
        let json = serde_json::to_string(&config).expect("encodes");
        assert!(json.contains(r#""rate":{"flat":"4.90"}"#), "{json}");
        assert_eq!(
            serde_json::from_str::<CheckoutConfig>(&json).ok(),
            Some(config)
        );
    }
}
