//! The SMTP server: an accept loop that admits a bounded number of sessions, and one session per
//! connection that walks the RFC 5321 state machine (greeting → EHLO → MAIL → RCPT… → DATA) and
//! hands each accepted message to the [`Store`].
//!
//! Every read is bounded in length and in time, so no client can make a session hold more than
//! one message's worth of memory or live on without talking.

use super::command::{self, Command, CommandError};
use super::store::{Envelope, Store};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, info, info_span, warn, Instrument};

/// Longest command line, with its CRLF.
const MAX_COMMAND_LINE: usize = 4096;
/// How far past [`MAX_COMMAND_LINE`] a line is skipped to find its end before the connection is
/// closed instead.
const MAX_SKIPPED_LINE: usize = 64 * 1024;
/// Recipients per message (RFC 5321 §4.5.3.1.8 asks for at least 100).
pub(super) const MAX_RECIPIENTS: usize = 100;
/// Refused commands per connection before the sink hangs up.
const MAX_ERRORS: u32 = 20;
/// How long sessions get to finish when the sink stops.
const DRAIN_TIME: Duration = Duration::from_secs(5);

/// What the sessions share.
#[derive(Debug)]
pub(super) struct SmtpConfig {
    /// The name the sink gives itself in its greeting and EHLO reply.
    pub hostname: String,
    pub max_message_bytes: usize,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

/// Accepts connections until `shutdown` changes (or its sender is dropped), then tells every
/// session to close and waits for them, at most [`DRAIN_TIME`].
pub(super) async fn serve(
    listener: TcpListener,
    config: Arc<SmtpConfig>,
    store: Arc<Store>,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let mut sessions = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => match Arc::clone(&slots).try_acquire_owned() {
                    Ok(slot) => {
                        let session = Session::new(stream, peer, &config, &store, &shutdown);
                        let span = info_span!("smtp_session", %peer);
                        sessions.spawn(
                            async move {
                                session.run().await;
                                drop(slot);
                            }
                            .instrument(span),
                        );
                    }
                    Err(_) => refuse_busy(&stream, peer),
                },
                Err(e) => {
                    // Typically out of file descriptors; pause rather than spin.
                    warn!(error = %e, "cannot accept an SMTP connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(DRAIN_TIME, async {
        while sessions.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!(
            open = sessions.len(),
            "SMTP sessions did not close in time; aborting them"
        );
        sessions.shutdown().await;
    }
}

/// Answers a connection over the limit without waiting: a fresh socket's send buffer always has
/// room for one line, and if not, the client gets a plain close.
fn refuse_busy(stream: &TcpStream, peer: SocketAddr) {
    warn!(%peer, "too many SMTP connections; refusing one");
    let _ = stream.try_write(b"421 4.3.2 Too busy, try again later\r\n");
}

/// One SMTP reply: a code and one or more lines of text.
#[derive(Debug)]
struct Reply {
    code: u16,
    lines: Vec<String>,
}

impl Reply {
    fn new(code: u16, text: impl Into<String>) -> Reply {
        Reply {
            code,
            lines: vec![text.into()],
        }
    }

    fn to_wire(&self) -> String {
        let last = self.lines.len().saturating_sub(1);
        self.lines
            .iter()
            .enumerate()
            .map(|(i, line)| {
                let sep = if i == last { ' ' } else { '-' };
                format!("{}{sep}{line}\r\n", self.code)
            })
            .collect()
    }
}

fn bad_sequence() -> Reply {
    Reply::new(503, "5.5.1 Bad sequence of commands")
}

/// How a line read ended.
#[derive(Debug, PartialEq, Eq)]
enum LineRead {
    /// A whole line, newline included, was appended.
    Line,
    /// The line was longer than allowed; it was skipped up to its newline, `consumed` bytes.
    TooLong { consumed: usize },
    /// No newline within the skip allowance; the stream is no longer at a line start.
    Unbounded,
    /// The peer closed the connection (a partial last line is dropped).
    Eof,
}

/// Reads one line ending in `\n` and appends it to `out` if it is at most `keep` bytes long; a
/// longer line is skipped, as long as it ends within `skip` bytes.
async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    out: &mut Vec<u8>,
    keep: usize,
    skip: usize,
) -> io::Result<LineRead> {
    let start = out.len();
    let mut consumed = 0;
    let mut too_long = false;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            out.truncate(start);
            return Ok(LineRead::Eof);
        }
        let (chunk_len, ended) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        if !too_long && consumed + chunk_len <= keep {
            out.extend_from_slice(&available[..chunk_len]);
        } else if !too_long {
            too_long = true;
            out.truncate(start);
        }
        reader.consume(chunk_len);
        consumed += chunk_len;
        if ended {
            return Ok(if too_long {
                LineRead::TooLong { consumed }
            } else {
                LineRead::Line
            });
        }
        if consumed > skip {
            out.truncate(start);
            return Ok(LineRead::Unbounded);
        }
    }
}

/// What waiting for the client's next line brought.
enum Event {
    Read(LineRead),
    Idle,
    Shutdown,
    /// Reading failed (the connection was reset); already logged.
    Failed,
}

/// Whether the session goes on after a command.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Close,
}

/// One SMTP connection.
struct Session {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    peer: SocketAddr,
    config: Arc<SmtpConfig>,
    store: Arc<Store>,
    shutdown: watch::Receiver<bool>,
    greeted: bool,
    /// The transaction under way: set by MAIL, cleared by DATA's end, RSET, EHLO/HELO.
    envelope: Option<Envelope>,
    errors: u32,
}

impl Session {
    fn new(
        stream: TcpStream,
        peer: SocketAddr,
        config: &Arc<SmtpConfig>,
        store: &Arc<Store>,
        shutdown: &watch::Receiver<bool>,
    ) -> Session {
        let (read, write) = stream.into_split();
        Session {
            reader: BufReader::new(read),
            writer: write,
            peer,
            config: Arc::clone(config),
            store: Arc::clone(store),
            shutdown: shutdown.clone(),
            greeted: false,
            envelope: None,
            errors: 0,
        }
    }

    async fn run(mut self) {
        debug!("SMTP connection opened");
        let greeting = format!("{} ESMTP Omnihub mail sink ready", self.config.hostname);
        if self.send(&Reply::new(220, greeting)).await == Flow::Continue {
            self.commands().await;
        }
        let _ = self.writer.shutdown().await;
        debug!("SMTP connection closed");
    }

    async fn commands(&mut self) {
        let mut line = Vec::with_capacity(256);
        loop {
            line.clear();
            let reply = match self
                .next_line(&mut line, MAX_COMMAND_LINE, MAX_SKIPPED_LINE)
                .await
            {
                Event::Read(LineRead::Line) => match self.handle(&line).await {
                    Flow::Continue => continue,
                    Flow::Close => return,
                },
                Event::Read(LineRead::TooLong { .. }) => {
                    self.refused(Reply::new(500, "5.5.2 Line too long")).await
                }
                Event::Read(LineRead::Unbounded) => {
                    let _ = self.send(&Reply::new(500, "5.5.2 Line too long")).await;
                    return;
                }
                Event::Read(LineRead::Eof) | Event::Failed => return,
                Event::Idle => return self.idle().await,
                Event::Shutdown => return self.shutting_down().await,
            };
            if reply == Flow::Close {
                return;
            }
        }
    }

    /// Waits for the next line, at most the idle timeout, and gives up at shutdown.
    async fn next_line(&mut self, out: &mut Vec<u8>, keep: usize, skip: usize) -> Event {
        let read = tokio::time::timeout(
            self.config.idle_timeout,
            read_line(&mut self.reader, out, keep, skip),
        );
        tokio::select! {
            // Any wake-up is a reason to stop: a `true` sent or the sender gone.
            _ = self.shutdown.changed() => Event::Shutdown,
            read = read => match read {
                Err(_) => Event::Idle,
                Ok(Ok(line)) => Event::Read(line),
                Ok(Err(e)) => {
                    debug!(error = %e, "cannot read from the SMTP client");
                    Event::Failed
                }
            },
        }
    }

    async fn handle(&mut self, line: &[u8]) -> Flow {
        let command = match command::parse(line) {
            Ok(command) => command,
            Err(e) => {
                let reply = match e {
                    CommandError::Unknown => Reply::new(500, "5.5.2 Command not recognized"),
                    CommandError::NotImplemented => {
                        Reply::new(502, "5.5.1 Command not implemented")
                    }
                    CommandError::Syntax(why) => Reply::new(501, format!("5.5.4 {why}")),
                    CommandError::Parameter(p) => Reply::new(
                        555,
                        format!("5.5.4 Parameter not supported: {}", printable(&p)),
                    ),
                };
                return self.refused(reply).await;
            }
        };
        match command {
            Command::Ehlo(client) => {
                self.start_over();
                let reply = Reply {
                    code: 250,
                    lines: vec![
                        format!("{} greets {}", self.config.hostname, printable(&client)),
                        format!("SIZE {}", self.config.max_message_bytes),
                        "8BITMIME".into(),
                        "PIPELINING".into(),
                        "ENHANCEDSTATUSCODES".into(),
                    ],
                };
                self.send(&reply).await
            }
            Command::Helo(client) => {
                self.start_over();
                let text = format!("{} greets {}", self.config.hostname, printable(&client));
                self.send(&Reply::new(250, text)).await
            }
            Command::Mail { from, size } => self.mail(from, size).await,
            Command::Rcpt(to) => self.rcpt(to).await,
            Command::Data => self.data().await,
            Command::Rset => {
                self.envelope = None;
                self.send(&Reply::new(250, "2.0.0 OK")).await
            }
            Command::Noop => self.send(&Reply::new(250, "2.0.0 OK")).await,
            Command::Vrfy => {
                let text = "2.1.5 Cannot VRFY user, but will accept message and attempt delivery";
                self.send(&Reply::new(252, text)).await
            }
            Command::Help => {
                let text = "2.0.0 Commands: EHLO HELO MAIL RCPT DATA RSET NOOP VRFY HELP QUIT";
                self.send(&Reply::new(214, text)).await
            }
            Command::Quit => {
                let _ = self.send(&Reply::new(221, "2.0.0 Bye")).await;
                Flow::Close
            }
        }
    }

    /// EHLO/HELO: the client is (again) greeted and any transaction is dropped.
    fn start_over(&mut self) {
        self.greeted = true;
        self.envelope = None;
    }

    async fn mail(&mut self, from: String, size: Option<u64>) -> Flow {
        if !self.greeted || self.envelope.is_some() {
            return self.refused(bad_sequence()).await;
        }
        let too_big = size.is_some_and(|s| s > self.config.max_message_bytes as u64);
        if too_big {
            let text = "5.3.4 Message size exceeds fixed maximum message size";
            return self.refused(Reply::new(552, text)).await;
        }
        self.envelope = Some(Envelope {
            from,
            to: Vec::new(),
        });
        self.send(&Reply::new(250, "2.1.0 Sender OK")).await
    }

    async fn rcpt(&mut self, to: String) -> Flow {
        let Some(envelope) = self.envelope.as_mut() else {
            return self.refused(bad_sequence()).await;
        };
        if envelope.to.len() >= MAX_RECIPIENTS {
            return self
                .refused(Reply::new(452, "4.5.3 Too many recipients"))
                .await;
        }
        envelope.to.push(to);
        self.send(&Reply::new(250, "2.1.5 Recipient OK")).await
    }

    async fn data(&mut self) -> Flow {
        let ready = self.envelope.as_ref().is_some_and(|e| !e.to.is_empty());
        if !ready {
            return self.refused(bad_sequence()).await;
        }
        let start = "Start mail input; end with <CRLF>.<CRLF>";
        if self.send(&Reply::new(354, start)).await == Flow::Close {
            return Flow::Close;
        }
        let message = match self.message_text().await {
            Ok(Some(text)) => text,
            Ok(None) => {
                self.envelope = None;
                let text = "5.3.4 Message size exceeds fixed maximum message size";
                return self.refused(Reply::new(552, text)).await;
            }
            Err(flow) => return flow,
        };
        let Some(envelope) = self.envelope.take() else {
            return self.refused(bad_sequence()).await;
        };
        let stored = self.store.insert(envelope, &message);
        info!(
            id = %stored.id,
            from = %stored.envelope.from,
            recipients = stored.envelope.to.len(),
            size = stored.size,
            message_id = stored.headers.message_id.as_deref().unwrap_or(""),
            duplicate = stored.duplicate_of.is_some(),
            "message accepted"
        );
        let text = format!("2.0.0 OK: queued as {}", stored.id);
        self.send(&Reply::new(250, text)).await
    }

    /// Reads the message after `354` up to the `.` line, undoing dot-stuffing. `Ok(None)` when
    /// it was over the size limit (it is read to its end and dropped); `Err` when the session
    /// must end (replies already sent).
    async fn message_text(&mut self) -> Result<Option<Vec<u8>>, Flow> {
        let max = self.config.max_message_bytes;
        let mut text = Vec::new();
        let mut oversize = false;
        // Past the limit, the sink still reads to the end of the message so the session can go
        // on, but only for as long again; then it hangs up.
        let mut skipped = 0usize;
        loop {
            // Room for the rest of the allowance plus a stuffed dot and a line ending.
            let keep = if oversize {
                8
            } else {
                max.saturating_sub(text.len()) + 4
            };
            let start = text.len();
            let event = self.next_line(&mut text, keep, max).await;
            match event {
                Event::Read(LineRead::Line) => {
                    let line = &text[start..];
                    if line == b".\r\n" || line == b".\n" {
                        text.truncate(start);
                        return Ok((!oversize).then_some(text));
                    }
                    if line.first() == Some(&b'.') {
                        text.remove(start);
                    }
                    if oversize {
                        skipped += text.len() - start;
                        text.truncate(start);
                    } else if text.len() > max {
                        oversize = true;
                        skipped = text.len();
                        text = Vec::new();
                    }
                }
                Event::Read(LineRead::TooLong { consumed }) => {
                    oversize = true;
                    skipped += text.len() + consumed;
                    text = Vec::new();
                }
                Event::Read(LineRead::Unbounded) => skipped = usize::MAX,
                Event::Read(LineRead::Eof) | Event::Failed => return Err(Flow::Close),
                Event::Idle => {
                    self.idle().await;
                    return Err(Flow::Close);
                }
                Event::Shutdown => {
                    self.shutting_down().await;
                    return Err(Flow::Close);
                }
            }
            if skipped > max.saturating_mul(2) {
                let text = "5.3.4 Message size exceeds fixed maximum message size; closing";
                let _ = self.send(&Reply::new(552, text)).await;
                return Err(Flow::Close);
            }
        }
    }

    /// Sends a refusal and counts it; too many refusals end the session.
    async fn refused(&mut self, reply: Reply) -> Flow {
        self.errors += 1;
        debug!(code = reply.code, "command refused");
        if self.errors >= MAX_ERRORS {
            let bye = Reply::new(421, "4.7.0 Too many errors, closing connection");
            let _ = self.send(&bye).await;
            return Flow::Close;
        }
        self.send(&reply).await
    }

    async fn idle(&mut self) {
        debug!("SMTP connection idle for too long");
        let reply = Reply::new(421, "4.4.2 Idle for too long, closing connection");
        let _ = self.send(&reply).await;
    }

    async fn shutting_down(&mut self) {
        let reply = Reply::new(421, "4.3.0 Service shutting down, closing connection");
        let _ = self.send(&reply).await;
    }

    /// Writes a reply, giving up (and closing) if the client does not read it within the idle
    /// timeout.
    async fn send(&mut self, reply: &Reply) -> Flow {
        let wire = reply.to_wire();
        let write = tokio::time::timeout(
            self.config.idle_timeout,
            self.writer.write_all(wire.as_bytes()),
        );
        match write.await {
            Ok(Ok(())) => Flow::Continue,
            Ok(Err(e)) => {
                debug!(peer = %self.peer, error = %e, "cannot write an SMTP reply");
                Flow::Close
            }
            Err(_) => Flow::Close,
        }
    }
}

/// Client-supplied text made safe to echo in a reply line: no control characters (a CR or LF
/// would split the reply) and not too long.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(128)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines(input: &[u8], keep: usize, skip: usize) -> Vec<(LineRead, Vec<u8>)> {
        let mut reader = input;
        let mut result = Vec::new();
        loop {
            let mut out = Vec::new();
            let read = read_line(&mut reader, &mut out, keep, skip).await;
            let Ok(read) = read else {
                panic!("reading from a slice failed: {read:?}");
            };
            let end = matches!(read, LineRead::Eof | LineRead::Unbounded);
            result.push((read, out));
            if end {
                return result;
            }
        }
    }

    #[tokio::test]
    async fn reads_bounded_lines() {
        let got = lines(b"HELO a\r\nNOOP 123456789\r\nQUIT\r\npartial", 10, 100).await;
        let expected = vec![
            (LineRead::Line, b"HELO a\r\n".to_vec()),
            (LineRead::TooLong { consumed: 16 }, Vec::new()),
            (LineRead::Line, b"QUIT\r\n".to_vec()),
            (LineRead::Eof, Vec::new()),
        ];
        assert_eq!(got, expected);
        let got = lines(&[b'x'; 300], 10, 100).await;
        assert_eq!(got, vec![(LineRead::Unbounded, Vec::new())]);
    }

    #[test]
    fn formats_multi_line_replies() {
        let reply = Reply {
            code: 250,
            lines: vec!["sink greets x".into(), "SIZE 10".into(), "8BITMIME".into()],
        };
        assert_eq!(
            reply.to_wire(),
            "250-sink greets x\r\n250-SIZE 10\r\n250 8BITMIME\r\n"
        );
        assert_eq!(Reply::new(221, "Bye").to_wire(), "221 Bye\r\n");
        assert_eq!(printable("a\r\nb"), "a??b");
    }
}
