//! The shipping address and its checks: required fields, lengths, and the postcode rules of the
//! countries the shop knows (DE, AT, BE, FR, NL, GB, US; a plain sanity check elsewhere).

use super::config::CheckoutConfig;
use serde::{Deserialize, Serialize};

/// Longest name, street line, city or region, in characters.
const MAX_TEXT_CHARS: usize = 100;
/// Longest phone number, in characters.
const MAX_PHONE_CHARS: usize = 30;
/// Longest postcode of a country without its own rule, in characters.
const MAX_POSTCODE_CHARS: usize = 12;

/// The 50 US states and the District of Columbia.
const US_STATES: [&str; 51] = [
    "AK", "AL", "AR", "AZ", "CA", "CO", "CT", "DC", "DE", "FL", "GA", "HI", "IA", "ID", "IL", "IN",
    "KS", "KY", "LA", "MA", "MD", "ME", "MI", "MN", "MO", "MS", "MT", "NC", "ND", "NE", "NH", "NJ",
    "NM", "NV", "NY", "OH", "OK", "OR", "PA", "RI", "SC", "SD", "TN", "TX", "UT", "VA", "VT", "WA",
    "WI", "WV", "WY",
];

/// Where an order goes. A click-and-collect order has only the name (and maybe a phone
/// number) of who collects it: the postal fields may be left out and stay empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    pub name: String,
    #[serde(default)]
    pub line1: String,
    #[serde(default)]
    pub line2: String,
    #[serde(default)]
    pub city: String,
    /// State or county; required for the US (the 2-letter state code).
    #[serde(default)]
    pub region: String,
    #[serde(default)]
    pub postcode: String,
    /// ISO 3166-1 alpha-2; any case on input, upper case once validated.
    #[serde(default)]
    pub country: String,
    #[serde(default)]
    pub phone: String,
}

/// One problem with one field of a form, worded for the shopper.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    /// The field's name, e.g. `postcode`.
    pub field: String,
    /// A sentence that says what to fix, e.g. "A German postcode has 5 digits, e.g. 10115."
    pub message: String,
}

impl FieldError {
    pub fn new(field: &str, message: impl Into<String>) -> FieldError {
        FieldError {
            field: field.to_string(),
            message: message.into(),
        }
    }
}

impl Address {
    /// The address trimmed and normalised (single spaces, country in upper case, the postcode in
    /// its country's canonical form such as `1234 AB` or `SW1A 1AA`), or every problem at once:
    /// missing or over-long fields, a postcode or US state that cannot exist, a country the
    /// configuration does not ship to.
    pub fn validated(&self, config: &CheckoutConfig) -> Result<Address, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut text = |field: &str, value: &str, required: Option<&str>, max: usize| {
            let value = collapse_spaces(value);
            if let Some(message) = text_problem(&value, required, max) {
                errors.push(FieldError::new(field, message));
            }
            value
        };
        let name = text(
            "name",
            &self.name,
            Some("Enter the name of the recipient."),
            MAX_TEXT_CHARS,
        );
        let line1 = text(
            "line1",
            &self.line1,
            Some("Enter the street and house number."),
            MAX_TEXT_CHARS,
        );
        let line2 = text("line2", &self.line2, None, MAX_TEXT_CHARS);
        let city = text(
            "city",
            &self.city,
            Some("Enter the town or city."),
            MAX_TEXT_CHARS,
        );
        let region = text("region", &self.region, None, MAX_TEXT_CHARS);
        let phone = text("phone", &self.phone, None, MAX_PHONE_CHARS);
        let country = self.country.trim().to_ascii_uppercase();
        let postcode = collapse_spaces(&self.postcode).to_ascii_uppercase();
        let address = Address {
            postcode: canonical_postcode(&country, &postcode).unwrap_or(postcode),
            region: if country == "US" {
                region.to_ascii_uppercase()
            } else {
                region
            },
            name,
            line1,
            line2,
            city,
            country,
            phone,
        };
        let checks = [
            country_problem(&address.country, config),
            postcode_problem(&address.country, &address.postcode),
            region_problem(&address.country, &address.region),
            phone_problem(&address.phone),
        ];
        for problem in checks.into_iter().flatten() {
            // One message per field: the first problem is the one to fix.
            if !errors.iter().any(|e| e.field == problem.field) {
                errors.push(problem);
            }
        }
        if errors.is_empty() {
            Ok(address)
        } else {
            Err(errors)
        }
    }
}

impl Address {
    /// Who collects a click-and-collect order: the name (required) and an optional phone
    /// number, checked as for a delivery; no postal address (any given is dropped). The country
    /// prices the order (its tax zone): the one given if the shop knows it, else the shop's
    /// first.
    pub fn validated_for_pickup(
        &self,
        config: &CheckoutConfig,
    ) -> Result<Address, Vec<FieldError>> {
        let mut errors = Vec::new();
        let name = collapse_spaces(&self.name);
        if let Some(message) = text_problem(
            &name,
            Some("Enter the name of who collects the order."),
            MAX_TEXT_CHARS,
        ) {
            errors.push(FieldError::new("name", message));
        }
        let phone = collapse_spaces(&self.phone);
        let phone_error = text_problem(&phone, None, MAX_PHONE_CHARS)
            .map(|m| FieldError::new("phone", m))
            .or_else(|| phone_problem(&phone));
        errors.extend(phone_error);
        let country = self.country.trim().to_ascii_uppercase();
        let country = if country.is_empty() {
            config
                .countries()
                .first()
                .map(|c| c.to_string())
                .unwrap_or_default()
        } else {
            country
        };
        errors.extend(country_problem(&country, config));
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Address {
            name,
            line1: String::new(),
            line2: String::new(),
            city: String::new(),
            region: String::new(),
            postcode: String::new(),
            country,
            phone,
        })
    }
}

/// Trimmed, with every run of whitespace (newlines and tabs too) made one space.
fn collapse_spaces(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn text_problem(value: &str, required: Option<&str>, max: usize) -> Option<String> {
    if value.is_empty() {
        return required.map(str::to_string);
    }
    if value.chars().count() > max {
        return Some(format!("Keep this to {max} characters or fewer."));
    }
    if value.chars().any(char::is_control) {
        return Some("Remove the characters that cannot be printed.".to_string());
    }
    None
}

fn country_problem(country: &str, config: &CheckoutConfig) -> Option<FieldError> {
    let countries = config.countries();
    let message = if country.is_empty() {
        "Choose the country to deliver to.".to_string()
    } else if country.len() != 2 || !country.bytes().all(|b| b.is_ascii_uppercase()) {
        "Choose the country from the list.".to_string()
    } else if !countries.contains(&country) {
        format!(
            "We do not deliver to {country}. We deliver to {}.",
            countries.join(", ")
        )
    } else {
        return None;
    };
    Some(FieldError::new("country", message))
}

fn postcode_problem(country: &str, postcode: &str) -> Option<FieldError> {
    if postcode.is_empty() {
        return Some(FieldError::new("postcode", "Enter the postcode."));
    }
    canonical_postcode(country, postcode)
        .err()
        .map(|message| FieldError::new("postcode", message))
}

/// The postcode (already trimmed, single-spaced and upper-case) in its country's canonical form,
/// or what a postcode of that country looks like.
fn canonical_postcode(country: &str, postcode: &str) -> Result<String, String> {
    let compact: String = postcode.chars().filter(|c| *c != ' ').collect();
    let digits = |text: &str, n: usize| text.len() == n && text.bytes().all(|b| b.is_ascii_digit());
    match country {
        "DE" if digits(postcode, 5) => Ok(postcode.to_string()),
        "DE" => Err("A German postcode has 5 digits, e.g. 10115.".into()),
        "FR" if digits(postcode, 5) => Ok(postcode.to_string()),
        "FR" => Err("A French postcode has 5 digits, e.g. 75001.".into()),
        "AT" | "BE" if digits(postcode, 4) && !postcode.starts_with('0') => {
            Ok(postcode.to_string())
        }
        "AT" => Err("An Austrian postcode has 4 digits, e.g. 1010.".into()),
        "BE" => Err("A Belgian postcode has 4 digits, e.g. 1000.".into()),
        "NL" => dutch_postcode(&compact)
            .ok_or_else(|| "A Dutch postcode has 4 digits and 2 letters, e.g. 1012 AB.".into()),
        "GB" => british_postcode(&compact)
            .ok_or_else(|| "A UK postcode looks like SW1A 1AA or M1 1AE.".into()),
        "US" => us_zip(&compact)
            .ok_or_else(|| "A US ZIP code has 5 digits, or 9 as in 12345-6789.".into()),
        _ => {
            let allowed = postcode
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b' ' || b == b'-');
            if allowed && postcode.chars().count() <= MAX_POSTCODE_CHARS {
                Ok(postcode.to_string())
            } else {
                Err(format!(
                    "A postcode has at most {MAX_POSTCODE_CHARS} letters, digits, spaces or hyphens."
                ))
            }
        }
    }
}

/// `1234AB` → `1234 AB`: four digits not starting with 0, two letters other than SA, SD and SS
/// (which the Dutch post does not use).
fn dutch_postcode(compact: &str) -> Option<String> {
    let (number, letters) = (compact.get(..4)?, compact.get(4..)?);
    let ok = number.bytes().all(|b| b.is_ascii_digit())
        && !number.starts_with('0')
        && letters.len() == 2
        && letters.bytes().all(|b| b.is_ascii_uppercase())
        && !matches!(letters, "SA" | "SD" | "SS");
    ok.then(|| format!("{number} {letters}"))
}

/// `SW1A1AA` → `SW1A 1AA`, by the UK's published pattern: an outward code A9, A99, AA9, AA99,
/// A9A or AA9A (with the letters allowed in each position) and an inward code 9AA; or GIR 0AA.
fn british_postcode(compact: &str) -> Option<String> {
    if compact == "GIR0AA" {
        return Some("GIR 0AA".to_string());
    }
    let split = compact.len().checked_sub(3)?;
    let (outward, inward) = (compact.get(..split)?, compact.get(split..)?);
    let letter = |c: u8, allowed: &str| allowed.as_bytes().contains(&c);
    const FIRST: &str = "ABCDEFGHIJKLMNOPRSTUWYZ";
    const SECOND: &str = "ABCDEFGHKLMNOPQRSTUVWXY";
    const THIRD: &str = "ABCDEFGHJKPSTUW";
    const FOURTH: &str = "ABEHMNPRVWXY";
    const INWARD: &str = "ABDEFGHJLNPQRSTUWXYZ";
    let d = |c: u8| c.is_ascii_digit();
    let outward_ok = match *outward.as_bytes() {
        [a, n] => letter(a, FIRST) && d(n),
        [a, x, y] => {
            letter(a, FIRST)
                && ((d(x) && (d(y) || letter(y, THIRD))) || (letter(x, SECOND) && d(y)))
        }
        [a, b, n, m] => {
            letter(a, FIRST) && letter(b, SECOND) && d(n) && (d(m) || letter(m, FOURTH))
        }
        _ => false,
    };
    let inward_ok =
        matches!(*inward.as_bytes(), [n, x, y] if d(n) && letter(x, INWARD) && letter(y, INWARD));
    (outward_ok && inward_ok).then(|| format!("{outward} {inward}"))
}

/// `12345`, `12345-6789` or `123456789` (→ `12345-6789`).
fn us_zip(compact: &str) -> Option<String> {
    let digits: String = compact.chars().filter(|c| *c != '-').collect();
    let hyphen_ok = match compact.find('-') {
        None => true,
        Some(at) => at == 5 && compact.len() == 10,
    };
    if !hyphen_ok || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match digits.len() {
        5 => Some(digits),
        9 => Some(format!("{}-{}", &digits[..5], &digits[5..])),
        _ => None,
    }
}

fn region_problem(country: &str, region: &str) -> Option<FieldError> {
    let message = match country {
        "US" if region.is_empty() => "Enter the 2-letter state code, e.g. CA or NY.",
        "US" if !US_STATES.contains(&region) => {
            "This is not a US state code: use 2 letters, e.g. CA or NY (DC for Washington, D.C.)."
        }
        _ => return None,
    };
    Some(FieldError::new("region", message))
}

fn phone_problem(phone: &str) -> Option<FieldError> {
    let allowed = phone
        .chars()
        .all(|c| c.is_ascii_digit() || " +-()./".contains(c));
    let digits = phone.chars().filter(char::is_ascii_digit).count();
    if phone.is_empty() || (allowed && digits >= 5) {
        None
    } else {
        Some(FieldError::new(
            "phone",
            "Enter a phone number of digits, spaces and + - ( ) only, e.g. +49 30 1234567.",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(country: &str, postcode: &str, region: &str) -> Address {
        Address {
            name: "Erika Mustermann".into(),
            line1: "Unter den Linden 1".into(),
            line2: String::new(),
            city: "Springfield".into(),
            region: region.into(),
            postcode: postcode.into(),
            country: country.into(),
            phone: String::new(),
        }
    }

    /// The canonical postcode, or the fields with a problem.
    type Expected = Result<&'static str, &'static [&'static str]>;

    fn fields(errors: &[FieldError]) -> Vec<&str> {
        errors.iter().map(|e| e.field.as_str()).collect()
    }

    #[test]
    fn postcodes_by_country() {
        // (country, postcode, region, Ok(canonical postcode) or Err(fields with a problem)).
        let cases: &[(&str, &str, &str, Expected)] = &[
            ("DE", "10115", "", Ok("10115")),
            ("de", " 10115 ", "", Ok("10115")),
            ("DE", "1011", "", Err(&["postcode"])),
            ("DE", "10115A", "", Err(&["postcode"])),
            ("DE", "101 15", "", Err(&["postcode"])),
            ("FR", "75001", "", Ok("75001")),
            ("FR", "7500", "", Err(&["postcode"])),
            ("NL", "1012ab", "", Ok("1012 AB")),
            ("NL", "1012 AB", "", Ok("1012 AB")),
            ("NL", " 1012   ab ", "", Ok("1012 AB")),
            ("NL", "0123 AB", "", Err(&["postcode"])),
            ("NL", "1012 SA", "", Err(&["postcode"])),
            ("NL", "1012 SS", "", Err(&["postcode"])),
            ("NL", "1012 A", "", Err(&["postcode"])),
            ("NL", "10123 AB", "", Err(&["postcode"])),
            ("GB", "sw1a1aa", "", Ok("SW1A 1AA")),
            ("GB", "M1 1AE", "", Ok("M1 1AE")),
            ("GB", "B33 8TH", "", Ok("B33 8TH")),
            ("GB", "CR2 6XH", "", Ok("CR2 6XH")),
            ("GB", "DN55 1PT", "", Ok("DN55 1PT")),
            ("GB", "W1A 0AX", "", Ok("W1A 0AX")),
            ("GB", "EC1A 1BB", "", Ok("EC1A 1BB")),
            ("GB", "gir 0aa", "", Ok("GIR 0AA")),
            ("GB", "QA1 1AA", "", Err(&["postcode"])),
            ("GB", "SW1A 1AC", "", Err(&["postcode"])),
            ("GB", "W1I 1AA", "", Err(&["postcode"])),
            ("GB", "SW1A", "", Err(&["postcode"])),
            ("GB", "12345", "", Err(&["postcode"])),
            ("US", "94103", "ca", Ok("94103")),
            ("US", "94103-1234", "NY", Ok("94103-1234")),
            ("US", "941031234", "DC", Ok("94103-1234")),
            ("US", "9410", "CA", Err(&["postcode"])),
            ("US", "94103-12", "CA", Err(&["postcode"])),
            ("US", "9410-31234", "CA", Err(&["postcode"])),
            ("US", "94103", "XX", Err(&["region"])),
            ("US", "94103", "", Err(&["region"])),
            ("US", "ABCDE", "California", Err(&["postcode", "region"])),
            ("BE", "1000", "", Ok("1000")),
            ("AT", "1010", "Wien", Ok("1010")),
            ("AT", "101", "", Err(&["postcode"])),
            ("BE", "0999", "", Err(&["postcode"])),
            ("BE", "", "", Err(&["postcode"])),
        ];
        let config = CheckoutConfig::default();
        for (country, postcode, region, expected) in cases {
            let result = address(country, postcode, region).validated(&config);
            match (expected, &result) {
                (Ok(canonical), Ok(valid)) => {
                    assert_eq!(valid.postcode, *canonical, "{country} {postcode}");
                    assert_eq!(valid.country, country.to_ascii_uppercase());
                }
                (Err(want), Err(errors)) => {
                    assert_eq!(fields(errors), *want, "{country} {postcode}: {errors:?}")
                }
                _ => panic!("{country} {postcode} {region}: got {result:?}"),
            }
        }
    }

    #[test]
    fn other_countries_get_a_sanity_check() {
        let cases = [
            ("CH", "8001", true),
            ("IE", "D02 X285", true),
            ("PT", "1000-001", true),
            ("CH", "8001!", false),
            ("CH", "1234567890123", false),
        ];
        for (country, postcode, ok) in cases {
            let result = canonical_postcode(country, postcode);
            assert_eq!(result.is_ok(), ok, "{country} {postcode}: {result:?}");
        }
    }

    #[test]
    fn messages_say_what_a_postcode_looks_like() {
        let config = CheckoutConfig::default();
        let cases = [
            ("DE", "1234", "A German postcode has 5 digits, e.g. 10115."),
            (
                "NL",
                "12",
                "A Dutch postcode has 4 digits and 2 letters, e.g. 1012 AB.",
            ),
            ("GB", "XX", "A UK postcode looks like SW1A 1AA or M1 1AE."),
        ];
        for (country, postcode, message) in cases {
            let errors = address(country, postcode, "")
                .validated(&config)
                .expect_err("invalid");
            assert_eq!(errors, vec![FieldError::new("postcode", message)]);
        }
    }

    #[test]
    fn normalises_text_and_region() {
        let mut input = address("us", "10001", " ny ");
        input.name = "  Erika \t Mustermann ".into();
        input.line1 = "5th Avenue\n350".into();
        input.phone = " +1 (212) 736-3100 ".into();
        let valid = input.validated(&CheckoutConfig::default()).expect("valid");
        assert_eq!(valid.name, "Erika Mustermann");
        assert_eq!(valid.line1, "5th Avenue 350");
        assert_eq!(
            (valid.region.as_str(), valid.country.as_str()),
            ("NY", "US")
        );
        assert_eq!(valid.phone, "+1 (212) 736-3100");
        assert_eq!(
            valid.validated(&CheckoutConfig::default()),
            Ok(valid.clone())
        );
    }

    #[test]
    fn reports_every_problem_at_once() {
        let config = CheckoutConfig::default();
        let empty = Address {
            name: " ".into(),
            line1: String::new(),
            line2: String::new(),
            city: String::new(),
            region: String::new(),
            postcode: String::new(),
            country: String::new(),
            phone: "call me".into(),
        };
        let errors = empty.validated(&config).expect_err("invalid");
        assert_eq!(
            fields(&errors),
            ["name", "line1", "city", "country", "postcode", "phone"]
        );
        let mut long = address("DE", "10115", "");
        long.name = "x".repeat(101);
        long.line2 = "y".repeat(100);
        let errors = long.validated(&config).expect_err("too long");
        assert_eq!(
            errors,
            vec![FieldError::new(
                "name",
                "Keep this to 100 characters or fewer."
            )]
        );
        let mut control = address("DE", "10115", "");
        control.city = "Ber\u{0}lin".into();
        assert_eq!(
            fields(&control.validated(&config).expect_err("control")),
            ["city"]
        );
    }

    #[test]
    fn a_pickup_needs_a_name_and_no_postal_address() {
        let config = CheckoutConfig::default();
        let only_name = Address {
            name: "  Ada   Lovelace ".into(),
            line1: "ignored 1".into(),
            line2: String::new(),
            city: String::new(),
            region: String::new(),
            postcode: "nonsense".into(),
            country: String::new(),
            phone: "+49 30 1234567".into(),
        };
        let valid = only_name.validated_for_pickup(&config).expect("valid");
        assert_eq!(valid.name, "Ada Lovelace");
        assert_eq!((valid.line1.as_str(), valid.postcode.as_str()), ("", ""));
        assert_eq!(valid.country, config.countries()[0]);
        assert_eq!(valid.phone, "+49 30 1234567");
        let mut nameless = only_name.clone();
        nameless.name = " ".into();
        nameless.phone = "call me".into();
        nameless.country = "CH".into();
        let errors = nameless.validated_for_pickup(&config).expect_err("invalid");
        assert_eq!(fields(&errors), ["name", "phone", "country"]);
        // The JSON API may leave the postal fields out.
        let parsed: Address =
            serde_json::from_str(r#"{"name": "Ada"}"#).expect("a name is enough to parse");
        assert!(parsed.validated_for_pickup(&config).is_ok());
        assert!(parsed.validated(&config).is_err(), "not for a delivery");
    }

    #[test]
    fn only_countries_the_config_ships_to() {
        let config = CheckoutConfig::default();
        let errors = address("CH", "8001", "")
            .validated(&config)
            .expect_err("not shipped to");
        assert_eq!(
            errors,
            vec![FieldError::new(
                "country",
                "We do not deliver to CH. We deliver to DE, AT, FR, NL, BE, GB, US."
            )]
        );
        for bad in ["DEU", "D1", "Germany"] {
            let errors = address(bad, "10115", "").validated(&config).expect_err(bad);
            assert_eq!(fields(&errors), ["country"], "{bad}");
        }
    }
}
