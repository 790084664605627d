//! Money: integer minor units with an ISO 4217 currency. Never floating point.
//!
//! Arithmetic is checked: an overflow or a mix of currencies is an error, not a wrong number.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// What can go wrong with money.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("cannot combine {0} with {1}: amounts are in different currencies")]
    CurrencyMismatch(Currency, Currency),
    #[error("amount out of range")]
    Overflow,
    #[error("unknown currency '{0}': use an ISO 4217 code such as EUR, USD, GBP or JPY")]
    UnknownCurrency(String),
}

/// ISO 4217 currencies the hub knows, with the number of digits of their minor unit.
const CURRENCIES: &[(&str, u8)] = &[
    ("AUD", 2),
    ("BHD", 3),
    ("CAD", 2),
    ("CHF", 2),
    ("CNY", 2),
    ("CZK", 2),
    ("DKK", 2),
    ("EUR", 2),
    ("GBP", 2),
    ("HUF", 2),
    ("ISK", 0),
    ("JOD", 3),
    ("JPY", 0),
    ("KRW", 0),
    ("KWD", 3),
    ("NOK", 2),
    ("NZD", 2),
    ("PLN", 2),
    ("SEK", 2),
    ("USD", 2),
];

/// An ISO 4217 currency the hub knows. Construct with [`Currency::parse`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency {
    index: u8,
}

impl Currency {
    pub const EUR: Currency = Currency { index: 7 };
    pub const USD: Currency = Currency { index: 19 };
    pub const GBP: Currency = Currency { index: 8 };
    pub const JPY: Currency = Currency { index: 12 };

    /// Parses an ISO 4217 code (case-insensitive).
    pub fn parse(code: &str) -> Result<Currency, MoneyError> {
        let upper = code.trim().to_ascii_uppercase();
        CURRENCIES
            .iter()
            .position(|(c, _)| *c == upper)
            .map(|i| Currency { index: i as u8 })
            .ok_or_else(|| MoneyError::UnknownCurrency(code.to_string()))
    }

    /// The three-letter code.
    pub fn code(self) -> &'static str {
        CURRENCIES[self.index as usize].0
    }

    /// Digits of the minor unit: 2 for EUR (cents), 0 for JPY, 3 for KWD.
    pub fn exponent(self) -> u8 {
        CURRENCIES[self.index as usize].1
    }

    /// Every currency the hub knows.
    pub fn all() -> impl Iterator<Item = Currency> {
        (0..CURRENCIES.len()).map(|i| Currency { index: i as u8 })
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let code = String::deserialize(d)?;
        Currency::parse(&code).map_err(serde::de::Error::custom)
    }
}

/// An amount of money: integer minor units of one currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    pub minor: i64,
    pub currency: Currency,
}

impl Money {
    pub const fn new(minor: i64, currency: Currency) -> Money {
        Money { minor, currency }
    }

    pub const fn zero(currency: Currency) -> Money {
        Money { minor: 0, currency }
    }

    fn same_currency(self, other: Money) -> Result<(), MoneyError> {
        if self.currency == other.currency {
            Ok(())
        } else {
            Err(MoneyError::CurrencyMismatch(self.currency, other.currency))
        }
    }

    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        let minor = self
            .minor
            .checked_add(other.minor)
            .ok_or(MoneyError::Overflow)?;
        Ok(Money::new(minor, self.currency))
    }

    pub fn checked_sub(self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        let minor = self
            .minor
            .checked_sub(other.minor)
            .ok_or(MoneyError::Overflow)?;
        Ok(Money::new(minor, self.currency))
    }

    /// The amount times a whole quantity.
    pub fn checked_mul(self, quantity: i64) -> Result<Money, MoneyError> {
        let minor = self
            .minor
            .checked_mul(quantity)
            .ok_or(MoneyError::Overflow)?;
        Ok(Money::new(minor, self.currency))
    }

    /// Sums amounts of one currency; an empty sum is zero in `currency`.
    pub fn sum<I: IntoIterator<Item = Money>>(
        currency: Currency,
        items: I,
    ) -> Result<Money, MoneyError> {
        items
            .into_iter()
            .try_fold(Money::zero(currency), Money::checked_add)
    }

    /// Parses a decimal amount such as `"12.50"` in the currency's minor unit; more decimals
    /// than the currency has is an error, not a silent rounding.
    pub fn parse_decimal(text: &str, currency: Currency) -> Result<Money, MoneyError> {
        let text = text.trim();
        let (negative, digits) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
        let exp = currency.exponent() as usize;
        let valid = !whole.is_empty()
            && whole.bytes().all(|b| b.is_ascii_digit())
            && frac.bytes().all(|b| b.is_ascii_digit())
            && frac.len() <= exp;
        if !valid {
            return Err(MoneyError::Overflow);
        }
        let mut minor: i64 = whole.parse().map_err(|_| MoneyError::Overflow)?;
        for _ in 0..exp {
            minor = minor.checked_mul(10).ok_or(MoneyError::Overflow)?;
        }
        let padded = format!("{frac:0<exp$}");
        if exp > 0 {
            let f: i64 = padded.parse().map_err(|_| MoneyError::Overflow)?;
            minor = minor.checked_add(f).ok_or(MoneyError::Overflow)?;
        }
        Ok(Money::new(if negative { -minor } else { minor }, currency))
    }

    /// The amount as a plain decimal string, e.g. `12.50` or `-0.05` or `1200` (JPY).
    pub fn to_decimal_string(self) -> String {
        let exp = self.currency.exponent() as u32;
        let sign = if self.minor < 0 { "-" } else { "" };
        let abs = self.minor.unsigned_abs();
        if exp == 0 {
            return format!("{sign}{abs}");
        }
        let unit = 10u64.pow(exp);
        format!(
            "{sign}{}.{:0width$}",
            abs / unit,
            abs % unit,
            width = exp as usize
        )
    }
}

impl fmt::Display for Money {
    /// `EUR 12.50`: code first, unambiguous in every locale.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.currency.code(), self.to_decimal_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn currency() -> impl Strategy<Value = Currency> {
        (0..CURRENCIES.len()).prop_map(|i| Currency { index: i as u8 })
    }

    #[test]
    fn currencies_know_their_exponent() {
        assert_eq!(Currency::parse("eur").map(Currency::exponent), Ok(2));
        assert_eq!(Currency::parse("JPY").map(Currency::exponent), Ok(0));
        assert_eq!(Currency::parse("KWD").map(Currency::exponent), Ok(3));
        assert_eq!(Currency::EUR.code(), "EUR");
        assert_eq!(Currency::USD.code(), "USD");
        assert_eq!(Currency::GBP.code(), "GBP");
        assert_eq!(Currency::JPY.code(), "JPY");
        assert!(matches!(
            Currency::parse("XYZ"),
            Err(MoneyError::UnknownCurrency(_))
        ));
    }

    #[test]
    fn mixing_currencies_is_an_error() {
        let e = Money::new(100, Currency::EUR);
        let u = Money::new(100, Currency::USD);
        assert_eq!(
            e.checked_add(u),
            Err(MoneyError::CurrencyMismatch(Currency::EUR, Currency::USD))
        );
        assert!(e.checked_sub(u).is_err());
    }

    #[test]
    fn formats_by_exponent() {
        let cases = [
            (1250, "EUR", "12.50"),
            (-5, "EUR", "-0.05"),
            (1200, "JPY", "1200"),
            (1001, "KWD", "1.001"),
            (0, "USD", "0.00"),
        ];
        for (minor, code, text) in cases {
            let c = Currency::parse(code).expect("known currency");
            assert_eq!(Money::new(minor, c).to_decimal_string(), text);
            assert_eq!(Money::parse_decimal(text, c), Ok(Money::new(minor, c)));
        }
        assert!(Money::parse_decimal("1.234", Currency::EUR).is_err());
        assert!(Money::parse_decimal("abc", Currency::EUR).is_err());
    }

    proptest! {
        #[test]
        fn add_then_sub_round_trips(a in -1_000_000_000_000i64..1_000_000_000_000, b in -1_000_000_000_000i64..1_000_000_000_000, c in currency()) {
            let x = Money::new(a, c);
            let y = Money::new(b, c);
            prop_assert_eq!(x.checked_add(y)?.checked_sub(y)?, x);
        }

        #[test]
        fn addition_is_commutative_and_associative(a in -1_000_000_000i64..1_000_000_000, b in -1_000_000_000i64..1_000_000_000, d in -1_000_000_000i64..1_000_000_000) {
            let (x, y, z) = (Money::new(a, Currency::EUR), Money::new(b, Currency::EUR), Money::new(d, Currency::EUR));
            prop_assert_eq!(x.checked_add(y)?, y.checked_add(x)?);
            prop_assert_eq!(x.checked_add(y)?.checked_add(z)?, x.checked_add(y.checked_add(z)?)?);
        }

        #[test]
        fn overflow_is_an_error_never_a_wrap(a in any::<i64>(), b in any::<i64>()) {
            let r = Money::new(a, Currency::EUR).checked_add(Money::new(b, Currency::EUR));
            match a.checked_add(b) {
                Some(s) => prop_assert_eq!(r, Ok(Money::new(s, Currency::EUR))),
                None => prop_assert_eq!(r, Err(MoneyError::Overflow)),
            }
        }

        #[test]
        fn decimal_text_round_trips(minor in -1_000_000_000_000i64..1_000_000_000_000, c in currency()) {
            let m = Money::new(minor, c);
            prop_assert_eq!(Money::parse_decimal(&m.to_decimal_string(), c), Ok(m));
        }

        #[test]
        fn serde_round_trips(minor in any::<i64>(), c in currency()) {
            let m = Money::new(minor, c);
            let json = serde_json::to_string(&m).expect("encodes");
            prop_assert_eq!(serde_json::from_str::<Money>(&json).expect("decodes"), m);
        }
    }
}
