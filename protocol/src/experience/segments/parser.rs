//! The segment rule parser: a hand-written lexer and recursive-descent parser. The grammar is
//! a dozen lines (see [`super`]), so a combinator crate would cost more in dependencies and
//! error plumbing than it saves; hand-written, every error names the byte offset, line and
//! column of the token it stopped at and what it expected there.

use super::{Cmp, Count, Fact, Filter, Rule, Value, Window, MAX_WINDOW_HOURS};
use crate::experience::normalize_query;
use crate::money::{Currency, Money};
use serde::Serialize;
use std::fmt;

/// The longest rule text accepted, in bytes.
pub const MAX_RULE_LEN: usize = 4096;
/// The deepest nesting of parentheses and `not`s accepted.
pub const MAX_DEPTH: usize = 32;

/// Why a rule text did not parse, and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParseError {
    /// Byte offset of the token the parser stopped at (the text's length at its end).
    pub offset: usize,
    /// 1-based line of `offset`.
    pub line: usize,
    /// 1-based column of `offset`, in characters.
    pub column: usize,
    /// What would have been accepted there.
    pub expected: String,
    /// What was found there (`end of rule` at the end).
    pub found: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}, column {}: expected {}, found {}",
            self.line, self.column, self.expected, self.found
        )
    }
}

impl std::error::Error for ParseError {}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(String),
    /// A duration, in hours.
    Dur(u64),
    LParen,
    RParen,
    Comma,
    Cmp(Cmp),
    End,
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    start: usize,
    end: usize,
}

fn describe(src: &str, t: &Token) -> String {
    match t.tok {
        Tok::End => "the end of the rule".into(),
        _ => format!("`{}`", &src[t.start..t.end]),
    }
}

fn error_at(src: &str, offset: usize, expected: impl Into<String>, found: String) -> ParseError {
    let mut offset = offset.min(src.len());
    while !src.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &src[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    ParseError {
        offset,
        line,
        column,
        expected: expected.into(),
        found,
    }
}

fn lex(src: &str) -> Result<Vec<Token>, ParseError> {
    let bytes = src.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        let tok = match c {
            b'(' => {
                i += 1;
                Tok::LParen
            }
            b')' => {
                i += 1;
                Tok::RParen
            }
            b',' => {
                i += 1;
                Tok::Comma
            }
            b'=' => {
                i += 1;
                Tok::Cmp(Cmp::Eq)
            }
            b'!' if bytes.get(i + 1) == Some(&b'=') => {
                i += 2;
                Tok::Cmp(Cmp::Ne)
            }
            b'<' | b'>' => {
                let or_equal = bytes.get(i + 1) == Some(&b'=');
                i += if or_equal { 2 } else { 1 };
                Tok::Cmp(match (c, or_equal) {
                    (b'<', false) => Cmp::Lt,
                    (b'<', true) => Cmp::Le,
                    (_, false) => Cmp::Gt,
                    (_, true) => Cmp::Ge,
                })
            }
            b'"' => {
                let (text, next) = string(src, i)?;
                i = next;
                Tok::Str(text)
            }
            b'0'..=b'9' => {
                let (tok, next) = number(src, i)?;
                i = next;
                tok
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                Tok::Ident(src[start..i].to_string())
            }
            _ => {
                let ch = src[i..].chars().next().unwrap_or('?');
                return Err(error_at(
                    src,
                    i,
                    "a condition, an operator, a number or a \"quoted text\"",
                    format!("`{ch}`"),
                ));
            }
        };
        tokens.push(Token { tok, start, end: i });
    }
    tokens.push(Token {
        tok: Tok::End,
        start: src.len(),
        end: src.len(),
    });
    Ok(tokens)
}

/// A double-quoted text from `start` (the quote); `\"` and `\\` escape.
fn string(src: &str, start: usize) -> Result<(String, usize), ParseError> {
    let mut out = String::new();
    let mut chars = src[start + 1..].char_indices();
    while let Some((j, ch)) = chars.next() {
        match ch {
            '"' => return Ok((out, start + 1 + j + 1)),
            '\\' => match chars.next() {
                Some((_, e @ ('"' | '\\'))) => out.push(e),
                Some((k, other)) => {
                    return Err(error_at(
                        src,
                        start + 1 + k,
                        "`\\\"` or `\\\\` after a backslash",
                        format!("`{other}`"),
                    ))
                }
                None => break,
            },
            '\n' => break,
            other => out.push(other),
        }
    }
    Err(error_at(
        src,
        start,
        "a closing `\"` on the same line",
        "an unterminated text".into(),
    ))
}

/// A number or a duration (`7d`, `12h`) from `start`.
fn number(src: &str, start: usize) -> Result<(Tok, usize), ParseError> {
    let bytes = src.as_bytes();
    let mut i = start;
    let digits = |i: &mut usize| {
        while *i < bytes.len() && bytes[*i].is_ascii_digit() {
            *i += 1;
        }
    };
    digits(&mut i);
    if bytes.get(i) == Some(&b'.') && bytes.get(i + 1).is_some_and(u8::is_ascii_digit) {
        i += 1;
        digits(&mut i);
    }
    let word_end = {
        let mut j = i;
        while j < bytes.len() && (bytes[j].is_ascii_alphanumeric() || bytes[j] == b'_') {
            j += 1;
        }
        j
    };
    if word_end == i {
        return Ok((Tok::Num(src[start..i].to_string()), i));
    }
    let unit = &src[i..word_end];
    let whole = src[start..i].parse::<u64>().ok();
    let hours = match (whole, unit) {
        (Some(n), "h") => Some(n),
        (Some(n), "d") => n.checked_mul(24),
        _ => None,
    };
    match hours {
        Some(h) => Ok((Tok::Dur(h), word_end)),
        None => Err(error_at(
            src,
            start,
            "a number, or a duration in whole hours or days such as 12h or 7d",
            format!("`{}`", &src[start..word_end]),
        )),
    }
}

struct Parser<'a> {
    src: &'a str,
    tokens: Vec<Token>,
    pos: usize,
    depth: usize,
}

const CONDITION: &str = "a condition (viewed, added_to_basket, ordered, orders, searched, \
                         visited_store, channel_used, lifetime_value), `not` or `(`";

impl<'a> Parser<'a> {
    fn peek(&self) -> &Token {
        let last = self.tokens.len() - 1;
        &self.tokens[self.pos.min(last)]
    }

    fn bump(&mut self) -> Token {
        let t = self.peek().clone();
        if self.pos < self.tokens.len() - 1 {
            self.pos += 1;
        }
        t
    }

    fn fail<T>(&self, expected: impl Into<String>) -> Result<T, ParseError> {
        let t = self.peek();
        Err(error_at(self.src, t.start, expected, describe(self.src, t)))
    }

    fn keyword(&self, word: &str) -> bool {
        matches!(&self.peek().tok, Tok::Ident(w) if w.eq_ignore_ascii_case(word))
    }

    fn expect(&mut self, tok: Tok, expected: &str) -> Result<Token, ParseError> {
        if self.peek().tok == tok {
            Ok(self.bump())
        } else {
            self.fail(expected)
        }
    }

    fn nested(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.fail(format!("at most {MAX_DEPTH} nested `(` and `not`"));
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Rule, ParseError> {
        let mut any = vec![self.and()?];
        while self.keyword("or") {
            self.bump();
            any.push(self.and()?);
        }
        Ok(if any.len() == 1 {
            any.remove(0)
        } else {
            Rule::Or { any }
        })
    }

    fn and(&mut self) -> Result<Rule, ParseError> {
        let mut all = vec![self.unary()?];
        while self.keyword("and") {
            self.bump();
            all.push(self.unary()?);
        }
        Ok(if all.len() == 1 {
            all.remove(0)
        } else {
            Rule::And { all }
        })
    }

    fn unary(&mut self) -> Result<Rule, ParseError> {
        if self.keyword("not") {
            self.nested()?;
            self.bump();
            let rule = self.unary()?;
            self.depth -= 1;
            return Ok(Rule::Not {
                rule: Box::new(rule),
            });
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Rule, ParseError> {
        match self.peek().tok.clone() {
            Tok::LParen => {
                self.nested()?;
                self.bump();
                let rule = self.or()?;
                self.expect(Tok::RParen, "`)`, `and` or `or`")?;
                self.depth -= 1;
                Ok(rule)
            }
            Tok::Ident(name) => {
                let lower = name.to_ascii_lowercase();
                if lower == "lifetime_value" {
                    self.bump();
                    return self.lifetime_value();
                }
                match Fact::from_name(&lower) {
                    Some(fact) => {
                        self.bump();
                        self.count(fact)
                    }
                    None => self.fail(CONDITION),
                }
            }
            _ => self.fail(CONDITION),
        }
    }

    /// `fact [ "(" args ")" ] [ "within" duration ] [ cmp whole-number ]`.
    fn count(&mut self, fact: Fact) -> Result<Rule, ParseError> {
        let filter = if self.peek().tok == Tok::LParen {
            self.bump();
            let filter = self.filter(fact)?;
            self.expect(Tok::RParen, "`)`")?;
            Some(filter)
        } else {
            None
        };
        // `within` may come before or after the comparison: `viewed >= 2 within 7d` reads as
        // well as `orders within 30d = 0`.
        let mut within = self.within()?;
        let (cmp, value) = match self.peek().tok.clone() {
            Tok::Cmp(cmp) => {
                self.bump();
                let t = self.peek().clone();
                match &t.tok {
                    Tok::Num(n) => match n.parse::<u64>() {
                        Ok(v) => {
                            self.bump();
                            (cmp, v)
                        }
                        Err(_) => self.fail("a whole number of events")?,
                    },
                    _ => self.fail("a whole number of events")?,
                }
            }
            _ => (Cmp::Ge, 1),
        };
        if within.is_none() {
            within = self.within()?;
        }
        Ok(Rule::Count(Count {
            fact,
            filter,
            within,
            cmp,
            value,
        }))
    }

    /// One argument: `"text"` (the fact's main field) or `field = "text"`.
    fn filter(&mut self, fact: Fact) -> Result<Filter, ParseError> {
        let fields = fact.fields();
        if fields.is_empty() {
            return self.fail(format!("`)`: {} takes no arguments", fact.name()));
        }
        let one_of = || {
            fields
                .iter()
                .map(|f| format!("{f} = \"…\""))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let field = match self.peek().tok.clone() {
            Tok::Str(_) => fields[0],
            Tok::Ident(name) => {
                let Some(field) = fields
                    .iter()
                    .copied()
                    .find(|f| name.eq_ignore_ascii_case(f))
                else {
                    return self.fail(format!("a \"quoted text\" or one of {}", one_of()));
                };
                self.bump();
                self.expect(Tok::Cmp(Cmp::Eq), "`=`")?;
                field
            }
            _ => return self.fail(format!("a \"quoted text\" or one of {}", one_of())),
        };
        let t = self.peek().clone();
        let Tok::Str(text) = t.tok else {
            return self.fail("a \"quoted text\"");
        };
        let value = match field {
            "query" => normalize_query(&text),
            "channel" => text.trim().to_ascii_lowercase(),
            _ => text.trim().to_string(),
        };
        if value.is_empty() {
            return self.fail("a text that is not empty");
        }
        if field == "channel" && !super::CHANNELS.contains(&value.as_str()) {
            return self.fail(format!("a channel: {}", super::CHANNELS.join(", ")));
        }
        self.bump();
        if self.peek().tok == Tok::Comma {
            return self.fail(format!("`)`: {} takes one argument", fact.name()));
        }
        Ok(Filter {
            field: field.to_string(),
            value,
        })
    }

    /// An optional `within duration`.
    fn within(&mut self) -> Result<Option<Window>, ParseError> {
        if !self.keyword("within") {
            return Ok(None);
        }
        self.bump();
        match self.peek().tok.clone() {
            Tok::Dur(0) => self.fail("a window of at least 1h"),
            Tok::Dur(h) if h > u64::from(MAX_WINDOW_HOURS) => self.fail(format!(
                "a window of at most {}d (activity is kept that long)",
                MAX_WINDOW_HOURS / 24
            )),
            Tok::Dur(h) => {
                self.bump();
                Ok(Some(Window {
                    hours: u32::try_from(h).unwrap_or(MAX_WINDOW_HOURS),
                }))
            }
            _ => self.fail("a duration such as 12h or 7d"),
        }
    }

    /// `lifetime_value "(" currency ")" cmp amount`.
    fn lifetime_value(&mut self) -> Result<Rule, ParseError> {
        self.expect(
            Tok::LParen,
            "`(` and a currency, as in lifetime_value(\"EUR\")",
        )?;
        let currency = match self.peek().tok.clone() {
            Tok::Str(code) => match Currency::parse(&code) {
                Ok(c) => c,
                Err(_) => return self.fail("an ISO 4217 currency code such as \"EUR\""),
            },
            _ => return self.fail("a currency code such as \"EUR\""),
        };
        self.bump();
        self.expect(Tok::RParen, "`)`")?;
        if self.keyword("within") {
            return self.fail("a comparison: lifetime_value covers all time and takes no window");
        }
        let Tok::Cmp(cmp) = self.peek().tok.clone() else {
            return self.fail("a comparison (=, !=, <, <=, >, >=)");
        };
        self.bump();
        let amount = match self.peek().tok.clone() {
            Tok::Num(n) => match Money::parse_decimal(&n, currency) {
                Ok(m) => m,
                Err(_) => {
                    return self.fail(format!(
                        "an amount in {} with at most {} decimals",
                        currency.code(),
                        currency.exponent()
                    ))
                }
            },
            _ => return self.fail(format!("an amount in {}", currency.code())),
        };
        self.bump();
        Ok(Rule::LifetimeValue(Value {
            currency: currency.code().to_string(),
            cmp,
            minor: amount.minor,
        }))
    }
}

/// Parses a rule text (grammar in [`super`]).
pub fn parse(src: &str) -> Result<Rule, ParseError> {
    if src.len() > MAX_RULE_LEN {
        return Err(error_at(
            src,
            MAX_RULE_LEN,
            format!("a rule of at most {MAX_RULE_LEN} bytes"),
            format!("{} bytes", src.len()),
        ));
    }
    let mut p = Parser {
        src,
        tokens: lex(src)?,
        pos: 0,
        depth: 0,
    };
    let rule = p.or()?;
    if p.peek().tok != Tok::End {
        let expected = if matches!(p.peek().tok, Tok::RParen) {
            "`and`, `or` or the end of the rule (this `)` closes nothing)"
        } else {
            "`and`, `or` or the end of the rule"
        };
        return p.fail(expected);
    }
    Ok(rule)
}
