//! Pure helpers of the storefront: how money and rates read, which redirect targets are safe,
//! and the checks behind the CSRF defence. No I/O here.

use protocol::Money;

/// A price as shoppers read it: `€1,234.50` for EUR, USD and GBP; `CHF 12.50` otherwise.
pub fn format_money(money: Money) -> String {
    let text = money.to_decimal_string();
    let (sign, digits) = match text.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", text.as_str()),
    };
    let (whole, fraction) = match digits.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (digits, None),
    };
    let mut amount = group_thousands(whole);
    if let Some(f) = fraction {
        amount.push('.');
        amount.push_str(f);
    }
    match currency_symbol(money.currency.code()) {
        Some(symbol) => format!("{sign}{symbol}{amount}"),
        None => format!("{sign}{} {amount}", money.currency.code()),
    }
}

fn currency_symbol(code: &str) -> Option<&'static str> {
    match code {
        "EUR" => Some("€"),
        "USD" => Some("$"),
        "GBP" => Some("£"),
        _ => None,
    }
}

fn group_thousands(digits: &str) -> String {
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A tax rate in basis points as a percentage: 1900 → `19%`, 750 → `7.5%`, 1234 → `12.34%`.
pub fn format_rate(rate_bp: u32) -> String {
    let whole = rate_bp / 100;
    match rate_bp % 100 {
        0 => format!("{whole}%"),
        f if f.is_multiple_of(10) => format!("{whole}.{}%", f / 10),
        f => format!("{whole}.{f:02}%"),
    }
}

/// The redirect target a form may ask for: only a local path (one leading `/`, not `//` nor
/// `/\`, which browsers read as another host), without control characters.
pub fn safe_next(next: &str) -> Option<&str> {
    let local = next.starts_with('/') && !next.starts_with("//") && !next.starts_with("/\\");
    let clean = !next.chars().any(|c| c.is_control() || c == '\\');
    (local && clean && next.len() <= 512).then_some(next)
}

/// Whether two tokens are equal, in time that depends only on their length (lengths are not
/// secret: every token has the same one). Empty tokens never match.
pub fn tokens_match(expected: &str, presented: &str) -> bool {
    let (a, b) = (expected.as_bytes(), presented.as_bytes());
    !a.is_empty()
        && a.len() == b.len()
        && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether `token` looks like one of ours: 32 lowercase hex digits.
pub fn is_token(token: &str) -> bool {
    token.len() == 32
        && token
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Whether an `Origin` header names this site: the same host and port as the request's `Host`
/// (read with the origin's scheme, so default ports compare equal), or a configured origin.
pub fn origin_allowed(origin: &str, host: &str, allowed: &[String]) -> bool {
    if allowed
        .iter()
        .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let Ok(origin) = url::Url::parse(origin) else {
        return false;
    };
    let Some(origin_host) = origin.host_str() else {
        return false;
    };
    let Ok(ours) = url::Url::parse(&format!("{}://{host}", origin.scheme())) else {
        return false;
    };
    ours.host_str()
        .is_some_and(|h| h.eq_ignore_ascii_case(origin_host))
        && ours.port_or_known_default() == origin.port_or_known_default()
}

/// Percent-encodes everything but RFC 3986's unreserved characters: safe in a path segment and
/// in a query value.
pub fn encode_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Text made safe for HTML text and quoted attribute values.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            c => out.push(c),
        }
    }
    out
}

/// How much of a variant is left, in words, with a CSS modifier: `in`, `low` or `out`.
pub fn stock_label(available: i64) -> (&'static str, String) {
    match available {
        n if n <= 0 => ("out", "Out of stock".to_string()),
        n if n <= LOW_STOCK => ("low", format!("Only {n} left")),
        _ => ("in", "In stock".to_string()),
    }
}

/// At or below this many units a product page says "Only N left".
const LOW_STOCK: i64 = 5;

/// A message from the hub as a sentence: capitalised, with a full stop.
pub fn sentence(text: &str) -> String {
    let mut chars = text.trim().chars();
    let mut out: String = match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => return String::new(),
    };
    if !out.ends_with(['.', '!', '?']) {
        out.push('.');
    }
    out
}

/// A country's name in English for the address form: the countries a shop is likely to ship
/// to; any other code reads as itself.
pub fn country_name(code: &str) -> &str {
    match code {
        "AT" => "Austria",
        "BE" => "Belgium",
        "CH" => "Switzerland",
        "CZ" => "Czechia",
        "DE" => "Germany",
        "DK" => "Denmark",
        "ES" => "Spain",
        "FI" => "Finland",
        "FR" => "France",
        "GB" => "United Kingdom",
        "IE" => "Ireland",
        "IT" => "Italy",
        "LU" => "Luxembourg",
        "NL" => "Netherlands",
        "NO" => "Norway",
        "PL" => "Poland",
        "PT" => "Portugal",
        "SE" => "Sweden",
        "US" => "United States",
        other => other,
    }
}

/// Time left until a deadline, as a shopper reads it: `less than a minute`, `12 minutes`,
/// `1 h 05 min`.
pub fn time_left(seconds: i64) -> String {
    let minutes = seconds / 60;
    match minutes {
        m if m < 1 => "less than a minute".to_string(),
        1 => "1 minute".to_string(),
        m if m < 60 => format!("{m} minutes"),
        m => format!("{} h {:02} min", m / 60, m % 60),
    }
}

/// A date as a shopper reads it: `7 March 2025`.
pub fn format_date(at: time::OffsetDateTime) -> String {
    format!("{} {} {}", at.day(), at.month(), at.year())
}

/// An FNV-1a hash, usable in constants: it versions the embedded stylesheet and script.
pub const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325_u64;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::Currency;

    #[test]
    fn money_reads_like_a_price_tag() {
        let chf = Currency::parse("CHF").expect("known currency");
        let cases = [
            (Money::new(1250, Currency::EUR), "€12.50"),
            (Money::new(5, Currency::EUR), "€0.05"),
            (Money::new(-199, Currency::EUR), "-€1.99"),
            (Money::new(123_456_789, Currency::USD), "$1,234,567.89"),
            (Money::new(100_000, Currency::GBP), "£1,000.00"),
            (Money::new(1200, Currency::JPY), "JPY 1,200"),
            (Money::new(1250, chf), "CHF 12.50"),
            (Money::new(0, Currency::EUR), "€0.00"),
        ];
        for (money, expected) in cases {
            assert_eq!(format_money(money), expected, "{money}");
        }
    }

    #[test]
    fn rates_read_as_percentages() {
        for (bp, expected) in [
            (1900, "19%"),
            (700, "7%"),
            (750, "7.5%"),
            (1234, "12.34%"),
            (0, "0%"),
            (5, "0.05%"),
        ] {
            assert_eq!(format_rate(bp), expected);
        }
    }

    #[test]
    fn only_local_paths_are_redirect_targets() {
        let good = ["/", "/basket", "/p/coffee?variant=COF-1", "/search?q=a%20b"];
        let bad = [
            "",
            "basket",
            "//evil.example",
            "/\\evil.example",
            "https://evil.example/",
            "/ok\r\nSet-Cookie: x=1",
            "javascript:alert(1)",
            "/a\\b",
        ];
        for next in good {
            assert_eq!(safe_next(next), Some(next), "{next}");
        }
        for next in bad {
            assert_eq!(safe_next(next), None, "{next:?}");
        }
        assert_eq!(safe_next(&format!("/{}", "a".repeat(600))), None);
    }

    #[test]
    fn csrf_tokens_match_exactly() {
        let token = "0123456789abcdef0123456789abcdef";
        assert!(tokens_match(token, token));
        assert!(!tokens_match(token, "0123456789abcdef0123456789abcdee"));
        assert!(!tokens_match(token, "0123456789abcdef"));
        assert!(!tokens_match("", ""));
        assert!(is_token(token));
        assert!(!is_token("0123456789ABCDEF0123456789ABCDEF"));
        assert!(!is_token("short"));
    }

    #[test]
    fn origins_must_name_this_host() {
        let allowed = vec!["https://shop.example".to_string()];
        let cases = [
            ("http://127.0.0.1:8080", "127.0.0.1:8080", true),
            ("http://localhost:8080", "LOCALHOST:8080", true),
            ("https://shop.example", "shop.example:443", true),
            ("http://shop.example", "shop.example", true),
            ("https://shop.example", "internal:9000", true),
            ("http://[::1]:8080", "[::1]:8080", true),
            ("http://127.0.0.1:8081", "127.0.0.1:8080", false),
            ("http://evil.example", "127.0.0.1:8080", false),
            ("null", "127.0.0.1:8080", false),
            (
                "http://127.0.0.1:8080.evil.example",
                "127.0.0.1:8080",
                false,
            ),
        ];
        for (origin, host, expected) in cases {
            assert_eq!(
                origin_allowed(origin, host, &allowed),
                expected,
                "{origin} vs {host}"
            );
        }
    }

    #[test]
    fn components_are_percent_encoded() {
        assert_eq!(encode_component("coffee-beans_1.0~"), "coffee-beans_1.0~");
        assert_eq!(encode_component("a b&c=/?é"), "a%20b%26c%3D%2F%3F%C3%A9");
    }

    #[test]
    fn html_is_escaped_but_paths_stay_readable() {
        assert_eq!(
            escape_html(r#"<a href="/x?a=1&b='2'">"#),
            "&lt;a href=&quot;/x?a=1&amp;b=&#x27;2&#x27;&quot;&gt;"
        );
    }

    #[test]
    fn stock_reads_in_words() {
        assert_eq!(stock_label(0), ("out", "Out of stock".to_string()));
        assert_eq!(stock_label(-2).0, "out");
        assert_eq!(stock_label(3), ("low", "Only 3 left".to_string()));
        assert_eq!(stock_label(5).0, "low");
        assert_eq!(stock_label(6), ("in", "In stock".to_string()));
    }

    #[test]
    fn deadlines_and_dates_read_in_words() {
        for (seconds, expected) in [
            (-5, "less than a minute"),
            (59, "less than a minute"),
            (60, "1 minute"),
            (14 * 60 + 59, "14 minutes"),
            (3600 + 5 * 60, "1 h 05 min"),
        ] {
            assert_eq!(time_left(seconds), expected, "{seconds}");
        }
        let at = time::macros::datetime!(2025-03-07 23:59 UTC);
        assert_eq!(format_date(at), "7 March 2025");
        assert_eq!(country_name("DE"), "Germany");
        assert_eq!(country_name("XK"), "XK");
    }

    #[test]
    fn hub_messages_become_sentences() {
        assert_eq!(
            sentence("only 3 of COF-1 available, 5 requested"),
            "Only 3 of COF-1 available, 5 requested."
        );
        assert_eq!(sentence("Done!"), "Done!");
        assert_eq!(sentence("  "), "");
    }
}
