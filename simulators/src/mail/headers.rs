//! Just enough RFC 5322 to show a message in an inbox: the header fields, unfolded, and RFC 2047
//! encoded words (`=?utf-8?q?Ihre_Bestellung?=`) decoded for UTF-8, US-ASCII and ISO-8859-1.
//! No MIME: bodies are shown as they were sent.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use serde::Serialize;

/// The header fields an inbox shows, the first occurrence of each.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Headers {
    /// As written, angle brackets included: it identifies the message, so it is not decoded.
    pub message_id: Option<String>,
    pub subject: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub date: Option<String>,
}

impl Headers {
    /// Picks the fields from a raw message; Subject, From and To have encoded words decoded.
    pub(super) fn parse(raw: &str) -> Headers {
        let mut headers = Headers::default();
        for (name, value) in fields(raw).0 {
            let (slot, decode) = match name.to_ascii_lowercase().as_str() {
                "message-id" => (&mut headers.message_id, false),
                "subject" => (&mut headers.subject, true),
                "from" => (&mut headers.from, true),
                "to" => (&mut headers.to, true),
                "date" => (&mut headers.date, false),
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(if decode { decode_words(&value) } else { value });
            }
        }
        headers
    }
}

/// The header fields of a message in order, unfolded (a line that starts with a space or a tab
/// continues the field before it) and trimmed, and the byte offset where the body starts (the
/// end, if no blank line ends the header section). Lines without a colon are skipped.
pub(super) fn fields(raw: &str) -> (Vec<(String, String)>, usize) {
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut body_start = raw.len();
    let mut offset = 0;
    for line in raw.split_inclusive('\n') {
        offset += line.len();
        let text = line.trim_end_matches(['\r', '\n']);
        if text.is_empty() {
            body_start = offset;
            break;
        }
        if text.starts_with([' ', '\t']) {
            if let Some((_, value)) = fields.last_mut() {
                value.push_str(text);
            }
        } else if let Some((name, value)) = text.split_once(':') {
            fields.push((name.trim().to_owned(), value.to_owned()));
        }
    }
    for (_, value) in &mut fields {
        *value = value.trim().to_owned();
    }
    (fields, body_start)
}

/// The character sets whose encoded words are decoded; others are left as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Charset {
    Utf8,
    Latin1,
}

/// Base64 as senders write it in encoded words: standard alphabet, padding optional.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Decodes the RFC 2047 encoded words in a header value. Whitespace between two encoded words
/// is dropped, and adjacent words in the same character set are joined before decoding, so a
/// character split across two words comes out whole. A malformed word is left as written.
pub(super) fn decode_words(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut run: Option<(Charset, Vec<u8>)> = None;
    let mut rest = value;
    while let Some(start) = rest.find("=?") {
        let (before, candidate) = rest.split_at(start);
        match encoded_word(candidate) {
            Some((charset, bytes, len)) => {
                let joins_previous = run.is_some() && before.chars().all(char::is_whitespace);
                if !joins_previous {
                    flush(&mut out, &mut run);
                    out.push_str(before);
                }
                match &mut run {
                    Some((current, buffer)) if *current == charset => buffer.extend(bytes),
                    _ => {
                        flush(&mut out, &mut run);
                        run = Some((charset, bytes));
                    }
                }
                rest = &candidate[len..];
            }
            None => {
                flush(&mut out, &mut run);
                out.push_str(before);
                out.push_str("=?");
                rest = &candidate[2..];
            }
        }
    }
    flush(&mut out, &mut run);
    out.push_str(rest);
    out
}

fn flush(out: &mut String, run: &mut Option<(Charset, Vec<u8>)>) {
    match run.take() {
        Some((Charset::Utf8, bytes)) => out.push_str(&String::from_utf8_lossy(&bytes)),
        Some((Charset::Latin1, bytes)) => out.extend(bytes.into_iter().map(char::from)),
        None => {}
    }
}

/// Parses `=?charset?B|Q?text?=` at the start of `s`: its charset, decoded bytes and length.
fn encoded_word(s: &str) -> Option<(Charset, Vec<u8>, usize)> {
    let inner = s.strip_prefix("=?")?;
    let (charset, inner) = inner.split_once('?')?;
    let (encoding, inner) = inner.split_once('?')?;
    let end = inner.find("?=")?;
    let text = &inner[..end];
    if text.contains(|c: char| c.is_whitespace() || c == '?') {
        return None;
    }
    // RFC 2231 lets a language follow the charset: `utf-8*de`.
    let charset = charset.split('*').next().unwrap_or_default();
    let charset = match charset.to_ascii_lowercase().as_str() {
        "utf-8" | "utf8" | "us-ascii" => Charset::Utf8,
        "iso-8859-1" | "latin1" => Charset::Latin1,
        _ => return None,
    };
    let bytes = match encoding {
        "B" | "b" => BASE64.decode(text).ok()?,
        "Q" | "q" => quoted_printable(text)?,
        _ => return None,
    };
    // `inner` ends where `s` ends, so what follows the word tells its length.
    let len = s.len() - inner[end + 2..].len();
    Some((charset, bytes, len))
}

/// The `Q` encoding: `_` is a space, `=XX` a byte in hex, anything else itself.
fn quoted_printable(text: &str) -> Option<Vec<u8>> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut iter = text.bytes();
    while let Some(b) = iter.next() {
        match b {
            b'_' => bytes.push(b' '),
            b'=' => {
                let hex = [iter.next()?, iter.next()?];
                let hex = std::str::from_utf8(&hex).ok()?;
                bytes.push(u8::from_str_radix(hex, 16).ok()?);
            }
            _ => bytes.push(b),
        }
    }
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unfolds_fields_and_finds_the_body() {
        let raw = "Subject: Your order\r\n  has shipped\r\nFrom: Shop <shop@omnihub.test>\r\n\
                   X-Odd line without colon\r\nTo: ann@x.test,\r\n\tbob@x.test\r\n\
                   Message-ID:<1@omnihub.test>\r\nsubject: second\r\n\r\nBody\r\n.\r\n";
        let headers = Headers::parse(raw);
        assert_eq!(headers.subject.as_deref(), Some("Your order  has shipped"));
        assert_eq!(headers.from.as_deref(), Some("Shop <shop@omnihub.test>"));
        assert_eq!(headers.to.as_deref(), Some("ann@x.test,\tbob@x.test"));
        assert_eq!(headers.message_id.as_deref(), Some("<1@omnihub.test>"));
        assert_eq!(headers.date, None);
        let (all, body_start) = fields(raw);
        assert_eq!(all.len(), 5);
        assert_eq!(&raw[body_start..], "Body\r\n.\r\n");
    }

    #[test]
    fn a_message_without_a_blank_line_is_all_headers() {
        let (all, body_start) = fields("Subject: hi\nFrom: a@x.test\n");
        assert_eq!(all.len(), 2);
        assert_eq!(body_start, 27);
        assert_eq!(fields("").0, Vec::new());
        assert_eq!(fields("\r\njust a body").1, 2);
    }

    #[test]
    fn decodes_encoded_words() {
        let cases = [
            ("plain text", "plain text"),
            (
                "=?utf-8?q?Ihre_Bestellung_ist_unterwegs?=",
                "Ihre Bestellung ist unterwegs",
            ),
            ("=?UTF-8?B?w7xuw69jb2Rl?= works", "ünïcode works"),
            ("a =?utf-8?b?4oCTIMO8bsOvY29kZQ==?= b", "a – ünïcode b"),
            // Whitespace between encoded words goes; a character split across them comes whole.
            ("=?utf-8?b?w6Q=?= =?utf-8?b?w7Y?=", "äö"),
            ("=?utf-8?q?=C3?=\r\n =?utf-8?q?=A4?=", "ä"),
            ("=?iso-8859-1?q?Gr=FC=DFe?=", "Grüße"),
            ("=?utf-8*de?q?Hallo?=", "Hallo"),
            (
                "Shop =?utf-8?q?M=C3=BCller?= <m@x.test>",
                "Shop Müller <m@x.test>",
            ),
            // Left as written: unknown charset, bad encoding, broken words.
            ("=?koi8-r?b?8NLJ18XU?=", "=?koi8-r?b?8NLJ18XU?="),
            ("=?utf-8?x?abc?=", "=?utf-8?x?abc?="),
            ("=?utf-8?q?bad=Z?=", "=?utf-8?q?bad=Z?="),
            ("=?utf-8?q?no end", "=?utf-8?q?no end"),
            ("=?utf-8?q?a b?=", "=?utf-8?q?a b?="),
            ("x =? y", "x =? y"),
        ];
        for (value, expected) in cases {
            assert_eq!(decode_words(value), expected, "{value:?}");
        }
    }
}
