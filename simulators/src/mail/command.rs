//! SMTP command lines (RFC 5321 §4.1) parsed into [`Command`]s: pure, no I/O, so every odd input
//! is a table row in the tests below. The session decides what a command means in its state.

/// One parsed SMTP command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Command {
    Ehlo(String),
    Helo(String),
    /// `MAIL FROM:<reverse-path>`; an empty `from` is the null reverse path `<>` of bounces.
    Mail {
        from: String,
        size: Option<u64>,
    },
    Rcpt(String),
    Data,
    Rset,
    Noop,
    Quit,
    Vrfy,
    Help,
}

/// Why a command line was refused; each maps to one reply code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum CommandError {
    /// Not an SMTP command at all: `500 5.5.2`.
    Unknown,
    /// A real SMTP command this sink does not offer (EXPN, STARTTLS, …): `502 5.5.1`.
    NotImplemented,
    /// The command is known but its arguments are malformed: `501 5.5.4`.
    Syntax(&'static str),
    /// A `MAIL`/`RCPT` parameter that was not advertised: `555 5.5.4`.
    Parameter(String),
}

/// Longest forward or reverse path (RFC 5321 §4.5.3.1.3: 256 octets with the brackets).
const MAX_PATH: usize = 254;
/// Longest local part (RFC 5321 §4.5.3.1.1).
const MAX_LOCAL_PART: usize = 64;

/// Parses one command line, with or without its line ending.
pub(super) fn parse(line: &[u8]) -> Result<Command, CommandError> {
    let line = std::str::from_utf8(line).map_err(|_| CommandError::Unknown)?;
    let line = line.trim_end_matches(['\r', '\n']);
    let (verb, rest) = match line.split_once(' ') {
        Some((verb, rest)) => (verb, rest.trim()),
        None => (line, ""),
    };
    match verb.to_ascii_uppercase().as_str() {
        "EHLO" => domain(rest).map(Command::Ehlo),
        "HELO" => domain(rest).map(Command::Helo),
        "MAIL" => mail(rest),
        "RCPT" => rcpt(rest),
        "DATA" => no_argument(rest, Command::Data),
        "RSET" => no_argument(rest, Command::Rset),
        "QUIT" => no_argument(rest, Command::Quit),
        "NOOP" => Ok(Command::Noop),
        "HELP" => Ok(Command::Help),
        "VRFY" if rest.is_empty() => Err(CommandError::Syntax("VRFY needs a user or mailbox")),
        "VRFY" => Ok(Command::Vrfy),
        "EXPN" | "TURN" | "ETRN" | "ATRN" | "BDAT" | "STARTTLS" | "AUTH" | "SEND" | "SOML"
        | "SAML" => Err(CommandError::NotImplemented),
        _ => Err(CommandError::Unknown),
    }
}

fn no_argument(rest: &str, command: Command) -> Result<Command, CommandError> {
    if rest.is_empty() {
        Ok(command)
    } else {
        Err(CommandError::Syntax("this command takes no argument"))
    }
}

/// The client's name in `EHLO`/`HELO`: a domain or an address literal, one word.
fn domain(rest: &str) -> Result<String, CommandError> {
    let valid = !rest.is_empty()
        && rest.len() <= 255
        && !rest.chars().any(|c| c.is_whitespace() || c.is_control());
    if valid {
        Ok(rest.to_owned())
    } else {
        Err(CommandError::Syntax("EHLO/HELO needs the client's domain"))
    }
}

fn mail(rest: &str) -> Result<Command, CommandError> {
    let rest =
        strip_keyword(rest, "FROM:").ok_or(CommandError::Syntax("expected MAIL FROM:<address>"))?;
    let (path, params) = angle_path(rest)?;
    let from = if path.is_empty() {
        String::new()
    } else {
        mailbox(path)?
    };
    let mut size = None;
    for param in params.split_ascii_whitespace() {
        let (key, value) = param.split_once('=').unwrap_or((param, ""));
        match key.to_ascii_uppercase().as_str() {
            "SIZE" => {
                let declared = value
                    .parse::<u64>()
                    .ok()
                    .filter(|_| value.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or(CommandError::Syntax("SIZE= needs a number of octets"))?;
                size = Some(declared);
            }
            "BODY"
                if value.eq_ignore_ascii_case("7BIT") || value.eq_ignore_ascii_case("8BITMIME") => {
            }
            _ => return Err(CommandError::Parameter(param.to_owned())),
        }
    }
    Ok(Command::Mail { from, size })
}

fn rcpt(rest: &str) -> Result<Command, CommandError> {
    let rest =
        strip_keyword(rest, "TO:").ok_or(CommandError::Syntax("expected RCPT TO:<address>"))?;
    let (path, params) = angle_path(rest)?;
    if let Some(param) = params.split_ascii_whitespace().next() {
        return Err(CommandError::Parameter(param.to_owned()));
    }
    if path.eq_ignore_ascii_case("postmaster") {
        return Ok(Command::Rcpt(path.to_owned()));
    }
    if path.is_empty() {
        return Err(CommandError::Syntax("RCPT TO needs an address"));
    }
    mailbox(path).map(Command::Rcpt)
}

/// `FROM:` / `TO:` in any case, tolerating spaces after the colon as many clients send them.
fn strip_keyword<'a>(rest: &'a str, keyword: &str) -> Option<&'a str> {
    let head = rest.get(..keyword.len())?;
    head.eq_ignore_ascii_case(keyword)
        .then(|| rest[keyword.len()..].trim_start())
}

/// Splits `<path> params` into the path without brackets and the parameter text.
fn angle_path(rest: &str) -> Result<(&str, &str), CommandError> {
    let inner = rest.strip_prefix('<').ok_or(CommandError::Syntax(
        "the address must be in angle brackets",
    ))?;
    let mut quoted = false;
    let close = inner
        .char_indices()
        .find(|&(_, c)| {
            if c == '"' {
                quoted = !quoted;
            }
            c == '>' && !quoted
        })
        .map(|(i, _)| i)
        .ok_or(CommandError::Syntax("the address has no closing '>'"))?;
    let params = &inner[close + 1..];
    if !params.is_empty() && !params.starts_with(' ') {
        return Err(CommandError::Syntax("expected a space after the address"));
    }
    Ok((&inner[..close], params.trim()))
}

/// Checks `local@domain` loosely (what real clients send, not every RFC 5321 corner) and returns
/// it without any obsolete source route (`@relay:`).
fn mailbox(path: &str) -> Result<String, CommandError> {
    let bad = CommandError::Syntax;
    if path.len() > MAX_PATH {
        return Err(bad("the address is too long"));
    }
    let path = match path.strip_prefix('@') {
        Some(routed) => routed
            .split_once(':')
            .map(|(_, mailbox)| mailbox)
            .ok_or(bad("malformed source route"))?,
        None => path,
    };
    let (local, domain) = path
        .rsplit_once('@')
        .ok_or(bad("the address needs a local part and a domain"))?;
    let local_ok = if let Some(quoted) = local.strip_prefix('"').and_then(|l| l.strip_suffix('"')) {
        !quoted.chars().any(|c| c.is_control())
    } else {
        !local.is_empty()
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..")
            && !local
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || "<>()[],;:@\"\\".contains(c))
    };
    if local.is_empty() || local.len() > MAX_LOCAL_PART || !local_ok {
        return Err(bad("the local part of the address is malformed"));
    }
    let literal = domain.starts_with('[') && domain.ends_with(']');
    let domain_ok = literal
        || (!domain.is_empty()
            && !domain.starts_with(['.', '-'])
            && !domain.ends_with('.')
            && !domain.contains("..")
            && domain
                .chars()
                .all(|c| c.is_alphanumeric() || c == '-' || c == '.'));
    if !domain_ok {
        return Err(bad("the domain of the address is malformed"));
    }
    Ok(path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syntax(line: &str) -> bool {
        matches!(parse(line.as_bytes()), Err(CommandError::Syntax(_)))
    }

    #[test]
    fn parses_the_commands_of_a_dialogue() {
        let cases: &[(&str, Command)] = &[
            (
                "EHLO client.example\r\n",
                Command::Ehlo("client.example".into()),
            ),
            ("helo [127.0.0.1]\r\n", Command::Helo("[127.0.0.1]".into())),
            (
                "MAIL FROM:<shop@omnihub.test>\r\n",
                Command::Mail {
                    from: "shop@omnihub.test".into(),
                    size: None,
                },
            ),
            (
                "mail from: <a.b@x.test> SIZE=1024 BODY=8BITMIME",
                Command::Mail {
                    from: "a.b@x.test".into(),
                    size: Some(1024),
                },
            ),
            (
                "MAIL FROM:<>",
                Command::Mail {
                    from: String::new(),
                    size: None,
                },
            ),
            (
                "MAIL FROM:<@relay.test:bob@x.test>",
                Command::Mail {
                    from: "bob@x.test".into(),
                    size: None,
                },
            ),
            (
                "RCPT TO:<ann@x.test>\r\n",
                Command::Rcpt("ann@x.test".into()),
            ),
            (
                "RCPT TO:<\"ann smith\"@x.test>",
                Command::Rcpt("\"ann smith\"@x.test".into()),
            ),
            ("RCPT TO:<Postmaster>", Command::Rcpt("Postmaster".into())),
            ("DATA\r\n", Command::Data),
            ("rset", Command::Rset),
            ("NOOP anything", Command::Noop),
            ("QUIT\r\n", Command::Quit),
            ("VRFY ann", Command::Vrfy),
            ("HELP", Command::Help),
        ];
        for (line, expected) in cases {
            assert_eq!(parse(line.as_bytes()).as_ref(), Ok(expected), "{line:?}");
        }
    }

    #[test]
    fn refuses_malformed_lines_with_the_right_error() {
        for line in [
            "EHLO",
            "HELO two words",
            "MAIL shop@x.test",
            "MAIL FROM:shop@x.test",
            "MAIL FROM:<shop@x.test",
            "MAIL FROM:<shop@x.test>SIZE=1",
            "MAIL FROM:<shop@x.test> SIZE=",
            "MAIL FROM:<shop@x.test> SIZE=-1",
            "MAIL FROM:<shop@x.test> SIZE=99999999999999999999999",
            "MAIL FROM:<no-at-sign>",
            "MAIL FROM:<@x.test>",
            "MAIL FROM:<a@>",
            "MAIL FROM:<a b@x.test>",
            "MAIL FROM:<a..b@x.test>",
            "MAIL FROM:<a@x..test>",
            "MAIL FROM:<a@x_y.test>",
            "RCPT TO:<>",
            "RCPT ann@x.test",
            "DATA now",
            "RSET please",
            "QUIT now",
            "VRFY",
        ] {
            assert!(syntax(line), "{line:?} should be a syntax error");
        }
        let long_local = format!("MAIL FROM:<{}@x.test>", "a".repeat(65));
        assert!(syntax(&long_local));
        let long_path = format!("RCPT TO:<a@{}.test>", "x".repeat(260));
        assert!(syntax(&long_path));
    }

    #[test]
    fn tells_unknown_from_unimplemented_and_unknown_parameters() {
        assert_eq!(parse(b"FOO bar"), Err(CommandError::Unknown));
        assert_eq!(parse(b""), Err(CommandError::Unknown));
        assert_eq!(parse(b"\xff\xfe\r\n"), Err(CommandError::Unknown));
        assert_eq!(parse(b"EXPN staff"), Err(CommandError::NotImplemented));
        assert_eq!(parse(b"STARTTLS"), Err(CommandError::NotImplemented));
        assert_eq!(
            parse(b"MAIL FROM:<a@x.test> SMTPUTF8"),
            Err(CommandError::Parameter("SMTPUTF8".into()))
        );
        assert_eq!(
            parse(b"RCPT TO:<a@x.test> NOTIFY=NEVER"),
            Err(CommandError::Parameter("NOTIFY=NEVER".into()))
        );
    }
}
