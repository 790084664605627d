//! Field rules shared by the feeds: each reads one field of a [`Row`] and answers its value or a
//! [`RowError`] that names the field and says what to send instead. [`Check`] collects every
//! error of a row, so a rejected row lists all that is wrong with it at once.

use super::{Row, RowError, RowOutcome};
use protocol::{Currency, Money, Sku};
use sha2::{Digest, Sha256};

/// Collects a row's errors while its fields are read.
pub struct Check<'r> {
    pub row: &'r Row,
    pub errors: Vec<RowError>,
}

impl<'r> Check<'r> {
    pub fn new(row: &'r Row) -> Check<'r> {
        Check {
            row,
            errors: Vec::new(),
        }
    }

    /// The value, or `None` with its error kept.
    pub fn take<T>(&mut self, read: Result<T, RowError>) -> Option<T> {
        match read {
            Ok(v) => Some(v),
            Err(e) => {
                self.errors.push(e);
                None
            }
        }
    }

    pub fn fail(&mut self, field: &str, reason: impl Into<String>) {
        self.errors.push(self.row.error(field, reason));
    }
}

/// A field that must not be empty.
pub fn required<'r>(row: &'r Row, field: &str, what: &str) -> Result<&'r str, RowError> {
    let v = row.get(field);
    if v.is_empty() {
        Err(row.error(field, format!("{field} is required: {what}")))
    } else {
        Ok(v)
    }
}

/// Text of at most `max` characters (empty allowed).
pub fn text(row: &Row, field: &str, max: usize) -> Result<String, RowError> {
    let v = row.get(field);
    if v.chars().count() > max {
        return Err(row.error(field, format!("too long: at most {max} characters")));
    }
    Ok(v.to_string())
}

/// The ERP's version of the row's entity.
pub fn version(row: &Row) -> Result<u64, RowError> {
    let v = required(
        row,
        "version",
        "the ERP's version of this entity, a whole number that grows with each change",
    )?;
    v.parse::<u64>().map_err(|_| {
        row.error(
            "version",
            format!("'{v}' is not a version: use a whole number of 0 or more, like 42"),
        )
    })
}

/// Orders a row by its entity's version against the version applied (`None`: nothing applied
/// yet): older is [`RowOutcome::Stale`]; the same version is [`RowOutcome::Unchanged`] when
/// `same_content`, else rejected (a version names one content); `None` when the row is newer
/// and is to be applied. `entity` names it in the rejection ("SKU X", "this price").
pub fn by_version(
    row: &Row,
    version: u64,
    applied: Option<u64>,
    same_content: bool,
    entity: &str,
) -> Option<RowOutcome> {
    let applied = applied?;
    if version < applied {
        return Some(RowOutcome::Stale);
    }
    if version > applied {
        return None;
    }
    Some(if same_content {
        RowOutcome::Unchanged
    } else {
        RowOutcome::Rejected(vec![row.error(
            "version",
            format!(
                "version {applied} of {entity} was already applied with other content: send a \
                 change with a higher version"
            ),
        )])
    })
}

/// An identifier of `[A-Za-z0-9._-]`, 1 to `max` characters (with `:` too when `colon`).
pub fn code(row: &Row, field: &str, max: usize, colon: bool) -> Result<String, RowError> {
    let v = required(row, field, "an identifier")?;
    let ok = v.len() <= max
        && v.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') || (colon && b == b':')
        });
    if ok {
        Ok(v.to_string())
    } else {
        let extra = if colon { ", ':'" } else { "" };
        Err(row.error(
            field,
            format!(
                "'{}' is not a valid {field}: use 1 to {max} of A-Z, a-z, 0-9, '.', '_', \
                 '-'{extra}",
                v.chars().take(80).collect::<String>()
            ),
        ))
    }
}

pub fn sku(row: &Row) -> Result<Sku, RowError> {
    let v = required(row, "sku", "the variant's SKU")?;
    Sku::parse(v).map_err(|e| row.error("sku", e.to_string()))
}

/// `true`/`false` (also `1`/`0`, `yes`/`no`, any case); empty is `default`.
pub fn boolean(row: &Row, field: &str, default: bool) -> Result<bool, RowError> {
    match row.get(field).to_ascii_lowercase().as_str() {
        "" => Ok(default),
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        other => Err(row.error(field, format!("'{other}' is not true or false"))),
    }
}

/// An RFC 3339 time as Unix milliseconds; empty is `None`.
pub fn time_ms(row: &Row, field: &str) -> Result<Option<i64>, RowError> {
    let v = row.get(field);
    if v.is_empty() {
        return Ok(None);
    }
    let t = time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339)
        .map_err(|_| {
            row.error(
                field,
                format!("'{v}' is not an RFC 3339 time: use e.g. 2026-11-27T00:00:00Z"),
            )
        })?;
    Ok(Some(super::catalog::unix_ms(t)))
}

/// A currency code; empty is `default` when given.
pub fn currency(row: &Row, field: &str, default: Option<Currency>) -> Result<Currency, RowError> {
    let v = row.get(field);
    match (v.is_empty(), default) {
        (true, Some(c)) => Ok(c),
        (true, None) => Err(row.error(
            field,
            format!("{field} is required: an ISO 4217 code such as EUR"),
        )),
        (false, _) => Currency::parse(v).map_err(|e| row.error(field, e.to_string())),
    }
}

/// A decimal amount of 0 or more in `currency`; empty is `None`.
pub fn amount(row: &Row, field: &str, currency: Currency) -> Result<Option<Money>, RowError> {
    let v = row.get(field);
    if v.is_empty() {
        return Ok(None);
    }
    let exp = currency.exponent();
    let example = match exp {
        0 => "1290".to_string(),
        n => format!("12.{}", "9".repeat(usize::from(n))),
    };
    let m = Money::parse_decimal(v, currency).map_err(|_| {
        row.error(
            field,
            format!(
                "'{}' is not an amount in {}: use digits with at most {exp} decimals and a \
                 point, like {example}",
                v.chars().take(40).collect::<String>(),
                currency.code()
            ),
        )
    })?;
    if m.minor < 0 {
        return Err(row.error(field, "must not be negative"));
    }
    Ok(Some(m))
}

/// Digest of a row's content: the trimmed values of `columns` but `version`, in order.
pub fn digest(row: &Row, columns: &[&str]) -> String {
    let mut h = Sha256::new();
    for c in columns.iter().filter(|c| **c != "version") {
        h.update(row.get(c).as_bytes());
        h.update([0x1f]);
    }
    hex::encode(&h.finalize()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn row(pairs: &[(&str, &str)]) -> Row {
        Row {
            number: 7,
            fields: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    #[test]
    fn versions_are_required_whole_numbers() {
        assert_eq!(version(&row(&[("version", " 42 ")])), Ok(42));
        for bad in ["", "-1", "1.5", "x"] {
            let e = version(&row(&[("version", bad)])).expect_err(bad);
            assert_eq!((e.row, e.field.as_str()), (7, "version"));
        }
    }

    #[test]
    fn amounts_follow_the_currency_and_are_not_negative() {
        let r = row(&[
            ("a", "12.90"),
            ("b", "12.999"),
            ("c", "-1.00"),
            ("d", "abc"),
            ("e", ""),
        ]);
        assert_eq!(
            amount(&r, "a", Currency::EUR),
            Ok(Some(Money::new(1290, Currency::EUR)))
        );
        assert!(amount(&r, "b", Currency::EUR).is_err());
        assert_eq!(
            amount(&r, "b", Currency::parse("KWD").expect("KWD")),
            Ok(Some(Money::new(
                12999,
                Currency::parse("KWD").expect("KWD")
            )))
        );
        assert!(amount(&r, "c", Currency::EUR).is_err_and(|e| e.reason.contains("negative")));
        assert!(amount(&r, "d", Currency::JPY).is_err_and(|e| e.reason.contains("1290")));
        assert_eq!(amount(&r, "e", Currency::EUR), Ok(None));
    }

    #[test]
    fn codes_booleans_times_and_currencies() {
        let r = row(&[
            ("p", "COF-1.a_b"),
            ("q", "has space"),
            ("m", "mv:1"),
            ("t", "2026-11-27T10:00:00+01:00"),
            ("u", "yesterday"),
            ("b", "FALSE"),
            ("c", "XYZ"),
        ]);
        assert_eq!(code(&r, "p", 64, false).as_deref(), Ok("COF-1.a_b"));
        assert!(code(&r, "q", 64, false).is_err());
        assert!(code(&r, "m", 64, false).is_err());
        assert_eq!(code(&r, "m", 64, true).as_deref(), Ok("mv:1"));
        assert!(code(&r, "missing", 64, false).is_err_and(|e| e.reason.contains("required")));
        assert_eq!(time_ms(&r, "t"), Ok(Some(1_795_770_000_000)));
        assert!(time_ms(&r, "u").is_err_and(|e| e.reason.contains("RFC 3339")));
        assert_eq!(boolean(&r, "b", true), Ok(false));
        assert_eq!(boolean(&r, "none", true), Ok(true));
        assert!(boolean(&r, "p", true).is_err());
        assert!(currency(&r, "c", None).is_err_and(|e| e.reason.contains("ISO 4217")));
        assert_eq!(currency(&r, "none", Some(Currency::EUR)), Ok(Currency::EUR));
    }

    #[test]
    fn digests_ignore_the_version_and_surrounding_spaces() {
        let a = row(&[("sku", "A"), ("price", "1.00"), ("version", "1")]);
        let b = row(&[("sku", " A "), ("price", "1.00"), ("version", "2")]);
        let c = row(&[("sku", "A"), ("price", "1.01"), ("version", "1")]);
        let cols = ["sku", "price", "version"];
        assert_eq!(digest(&a, &cols), digest(&b, &cols));
        assert_ne!(digest(&a, &cols), digest(&c, &cols));
    }
}
