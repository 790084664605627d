//! The sink end to end: real SMTP dialogues over TCP and the inbox over HTTP, on port 0.

use super::{MailArgs, MailSink};
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// How long a test waits for any one reply before failing.
const REPLY_DEADLINE: Duration = Duration::from_secs(10);

fn args() -> MailArgs {
    let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
    MailArgs {
        smtp: any_port,
        http: any_port,
        ..MailArgs::default()
    }
}

async fn start(args: MailArgs) -> MailSink {
    match MailSink::start(&args).await {
        Ok(sink) => sink,
        Err(e) => panic!("the mail sink did not start: {e}"),
    }
}

/// A bare SMTP client: write lines, read replies.
struct Client {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.expect("connect to the sink");
        let (read, write) = stream.into_split();
        Client {
            reader: BufReader::new(read),
            writer: write,
        }
    }

    /// Connects and reads the greeting.
    async fn greeted(addr: SocketAddr) -> Client {
        let mut client = Client::connect(addr).await;
        let (code, _) = client.reply().await;
        assert_eq!(code, 220);
        client
    }

    async fn write(&mut self, text: &[u8]) {
        self.writer
            .write_all(text)
            .await
            .expect("write to the sink");
    }

    /// Reads one reply, all its lines; the text is the lines after the code, joined by `\n`.
    async fn reply(&mut self) -> (u16, String) {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let read = tokio::time::timeout(REPLY_DEADLINE, self.reader.read_line(&mut line))
                .await
                .expect("a reply in time")
                .expect("read a reply");
            assert!(read > 0, "the sink closed the connection; got {lines:?}");
            assert!(line.ends_with("\r\n"), "reply line without CRLF: {line:?}");
            let (code, rest) = line.split_at(3);
            let code: u16 = code.parse().expect("a reply code");
            lines.push(rest[1..].trim_end().to_owned());
            if rest.starts_with(' ') {
                return (code, lines.join("\n"));
            }
            assert!(rest.starts_with('-'), "bad reply line {line:?}");
        }
    }

    /// Sends a command and returns the reply.
    async fn command(&mut self, line: &str) -> (u16, String) {
        self.write(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }

    async fn expect(&mut self, line: &str, code: u16) -> String {
        let (got, text) = self.command(line).await;
        assert_eq!(got, code, "{line:?} answered {got} {text}");
        text
    }

    /// Sends one message through a whole transaction and returns the DATA reply text.
    async fn send_mail(&mut self, from: &str, to: &[&str], message: &str) -> String {
        self.expect(&format!("MAIL FROM:<{from}>"), 250).await;
        for rcpt in to {
            self.expect(&format!("RCPT TO:<{rcpt}>"), 250).await;
        }
        self.expect("DATA", 354).await;
        self.write(message.as_bytes()).await;
        self.write(b".\r\n").await;
        let (code, text) = self.reply().await;
        assert_eq!(code, 250, "message refused: {text}");
        text
    }

    /// Asserts that the sink closed the connection.
    async fn closed(&mut self) {
        let mut rest = String::new();
        let read = tokio::time::timeout(REPLY_DEADLINE, self.reader.read_line(&mut rest))
            .await
            .expect("the connection closes in time");
        assert!(matches!(read, Ok(0) | Err(_)), "still open: {rest:?}");
    }
}

fn message(message_id: &str, subject: &str) -> String {
    format!(
        "Message-ID: {message_id}\r\nFrom: Shop <shop@omnihub.test>\r\nTo: ann@x.test\r\n\
         Subject: {subject}\r\n\r\nHello.\r\n"
    )
}

async fn get_json(sink: &MailSink, path: &str) -> (u16, Value) {
    let url = format!("http://{}{path}", sink.http_addr());
    let response = reqwest::get(&url).await.expect("GET the inbox");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON body"))
}

async fn get_text(sink: &MailSink, path: &str) -> (u16, String) {
    let url = format!("http://{}{path}", sink.http_addr());
    let response = reqwest::get(&url).await.expect("GET the inbox");
    let status = response.status().as_u16();
    (status, response.text().await.expect("a text body"))
}

#[tokio::test]
async fn a_whole_dialogue_arrives_in_the_inbox() {
    let sink = start(args()).await;
    let mut client = Client::greeted(sink.smtp_addr()).await;
    let ehlo = client.expect("EHLO client.test", 250).await;
    let extensions: Vec<&str> = ehlo.lines().skip(1).collect();
    assert!(extensions.contains(&"SIZE 10485760"), "{ehlo}");
    assert!(extensions.contains(&"8BITMIME"), "{ehlo}");
    assert!(extensions.contains(&"PIPELINING"), "{ehlo}");
    client.expect("VRFY ann", 252).await;
    client
        .expect("MAIL FROM:<shop@omnihub.test> SIZE=300", 250)
        .await;
    client.expect("RCPT TO:<ann@x.test>", 250).await;
    client.expect("RCPT TO:<bob@x.test>", 250).await;
    client.expect("DATA", 354).await;
    let data = "Message-ID: <order-1@omnihub.test>\r\n\
                Subject: Your order\r\n has shipped\r\n\
                From: Shop <shop@omnihub.test>\r\n\
                To: ann@x.test, bob@x.test\r\n\
                Date: Mon, 5 Jan 2026 10:00:00 +0000\r\n\
                \r\n\
                Hello Ann,\r\n\
                ..a line that starts with a dot\r\n\
                Bye.\r\n\
                .\r\n";
    client.write(data.as_bytes()).await;
    let (code, queued) = client.reply().await;
    assert_eq!(code, 250, "{queued}");
    client.expect("QUIT", 221).await;
    client.closed().await;

    let (status, list) = get_json(&sink, "/api/messages").await;
    assert_eq!(status, 200);
    let listed = &list["messages"][0];
    assert_eq!(list["messages"].as_array().map(Vec::len), Some(1));
    let id = listed["id"].as_str().expect("an id");
    assert!(queued.contains(id), "the DATA reply {queued:?} names {id}");
    assert!(
        listed.get("raw").is_none(),
        "the list leaves out the raw text"
    );

    let (status, shown) = get_json(&sink, &format!("/api/messages/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(shown["envelope"]["from"], "shop@omnihub.test");
    assert_eq!(
        shown["envelope"]["to"],
        serde_json::json!(["ann@x.test", "bob@x.test"])
    );
    assert_eq!(shown["headers"]["message_id"], "<order-1@omnihub.test>");
    assert_eq!(shown["headers"]["subject"], "Your order has shipped");
    assert_eq!(shown["headers"]["from"], "Shop <shop@omnihub.test>");
    assert_eq!(shown["headers"]["to"], "ann@x.test, bob@x.test");
    assert_eq!(shown["headers"]["date"], "Mon, 5 Jan 2026 10:00:00 +0000");
    assert_eq!(shown["duplicate_of"], Value::Null);
    let raw = shown["raw"].as_str().expect("the raw text");
    let expected = &data[..data.len() - 3];
    assert_eq!(raw, expected.replace("\r\n..a line", "\r\n.a line"));
    assert_eq!(shown["size"].as_u64(), Some(raw.len() as u64));
    assert!(shown["received_at"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));

    let stored = sink.messages();
    assert_eq!(stored.len(), 1);
    assert_eq!(
        stored[0].body(),
        "Hello Ann,\r\n.a line that starts with a dot\r\nBye.\r\n"
    );
    let (status, page) = get_text(&sink, &format!("/messages/{id}")).await;
    assert_eq!(status, 200);
    assert!(page.contains("Your order has shipped"), "{page}");
    assert!(page.contains(".a line that starts with a dot"), "{page}");
    sink.stop().await;
}

#[tokio::test]
async fn pipelined_commands_get_their_replies_in_order() {
    let sink = start(args()).await;
    let mut client = Client::greeted(sink.smtp_addr()).await;
    client.expect("EHLO client.test", 250).await;
    client
        .write(b"MAIL FROM:<>\r\nRCPT TO:<ann@x.test>\r\nRCPT TO:<Postmaster>\r\nDATA\r\n")
        .await;
    for code in [250, 250, 250, 354] {
        assert_eq!(client.reply().await.0, code);
    }
    client
        .write(b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n\r\nhi\r\n.\r\nNOOP\r\n")
        .await;
    assert_eq!(client.reply().await.0, 250);
    assert_eq!(client.reply().await.0, 250);
    let stored = sink.messages();
    assert_eq!(stored[0].envelope.from, "");
    assert_eq!(stored[0].envelope.to, ["ann@x.test", "Postmaster"]);
    assert_eq!(stored[0].headers.subject.as_deref(), Some("Grüße"));
    sink.stop().await;
}

#[tokio::test]
async fn commands_out_of_order_or_unknown_are_refused() {
    let sink = start(args()).await;
    let mut client = Client::greeted(sink.smtp_addr()).await;
    let text = client.expect("MAIL FROM:<a@x.test>", 503).await;
    assert_eq!(text, "5.5.1 Bad sequence of commands");
    client.expect("HELO client.test", 250).await;
    client.expect("DATA", 503).await;
    client.expect("RCPT TO:<ann@x.test>", 503).await;
    client.expect("MAIL FROM:<a@x.test>", 250).await;
    client.expect("MAIL FROM:<a@x.test>", 503).await;
    client.expect("DATA", 503).await;
    let text = client.expect("FROB now", 500).await;
    assert!(text.starts_with("5.5.2"), "{text}");
    client.expect("EXPN staff", 502).await;
    let text = client.expect("RCPT TO:<not an address>", 501).await;
    assert!(text.starts_with("5.5.4"), "{text}");
    client
        .expect("RCPT TO:<ann@x.test> NOTIFY=NEVER", 555)
        .await;
    // A line over 4 KiB is refused, and the session goes on.
    client
        .expect(&format!("NOOP {}", "x".repeat(5000)), 500)
        .await;
    client.write(b"\xff\xfe\r\n").await;
    assert_eq!(client.reply().await.0, 500);
    client.expect("RSET", 250).await;
    client.expect("DATA", 503).await;
    client.expect("NOOP", 250).await;
    client.expect("QUIT", 221).await;
    assert!(sink.messages().is_empty());
    sink.stop().await;
}

#[tokio::test]
async fn too_many_errors_end_the_session() {
    let sink = start(args()).await;
    let mut client = Client::greeted(sink.smtp_addr()).await;
    for _ in 0..19 {
        client.expect("FROB", 500).await;
    }
    let (code, _) = client.command("FROB").await;
    assert_eq!(code, 421);
    client.closed().await;
    sink.stop().await;
}

#[tokio::test]
async fn recipients_are_capped_at_one_hundred() {
    let sink = start(args()).await;
    let mut client = Client::greeted(sink.smtp_addr()).await;
    client.expect("EHLO client.test", 250).await;
    client.expect("MAIL FROM:<a@x.test>", 250).await;
    for i in 0..100 {
        client.expect(&format!("RCPT TO:<r{i}@x.test>"), 250).await;
    }
    client.expect("RCPT TO:<one-too-many@x.test>", 452).await;
    sink.stop().await;
}

#[tokio::test]
async fn an_oversize_message_is_refused_and_not_stored() {
    let sink = start(MailArgs {
        max_size_mb: 1,
        ..args()
    })
    .await;
    let mut client = Client::greeted(sink.smtp_addr()).await;
    client.expect("EHLO client.test", 250).await;
    let text = client
        .expect("MAIL FROM:<a@x.test> SIZE=2000000", 552)
        .await;
    assert!(text.starts_with("5.3.4"), "{text}");
    client.expect("MAIL FROM:<a@x.test>", 250).await;
    client.expect("RCPT TO:<ann@x.test>", 250).await;
    client.expect("DATA", 354).await;
    client.write(b"Subject: big\r\n\r\n").await;
    let line = format!("{}\r\n", "x".repeat(998));
    for _ in 0..1100 {
        client.write(line.as_bytes()).await;
    }
    client.write(b".\r\n").await;
    let (code, text) = client.reply().await;
    assert_eq!((code, &text[..5]), (552, "5.3.4"));
    // The session goes on, and a message just under the limit still fits.
    client.expect("NOOP", 250).await;
    let body = "y".repeat(1024 * 1024 - 100);
    client
        .send_mail(
            "a@x.test",
            &["ann@x.test"],
            &format!("Subject: fits\r\n\r\n{body}\r\n"),
        )
        .await;
    let stored = sink.messages();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].headers.subject.as_deref(), Some("fits"));
    sink.stop().await;
}

#[tokio::test]
async fn a_second_copy_of_a_message_id_is_flagged() {
    let sink = start(args()).await;
    let mut client = Client::greeted(sink.smtp_addr()).await;
    client.expect("EHLO client.test", 250).await;
    let mail = message("<retry-1@omnihub.test>", "Order confirmed");
    client
        .send_mail("shop@omnihub.test", &["ann@x.test"], &mail)
        .await;
    client
        .send_mail("shop@omnihub.test", &["ann@x.test"], &mail)
        .await;
    let stored = sink.messages();
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0].duplicate_of, None);
    assert_eq!(stored[1].duplicate_of, Some(stored[0].id));

    let (_, list) = get_json(&sink, "/api/messages").await;
    assert_eq!(
        list["messages"][0]["duplicate_of"],
        stored[0].id.to_string()
    );
    let (_, page) = get_text(&sink, "/").await;
    assert_eq!(page.matches(">duplicate<").count(), 1, "{page}");
    sink.stop().await;
}

#[tokio::test]
async fn the_inbox_keeps_only_the_newest_and_filters_by_recipient() {
    let sink = start(MailArgs {
        max_messages: 2,
        ..args()
    })
    .await;
    let mut client = Client::greeted(sink.smtp_addr()).await;
    client.expect("EHLO client.test", 250).await;
    for (i, to) in ["ann@x.test", "bob@x.test", "ann@x.test"]
        .iter()
        .enumerate()
    {
        let mail = message(&format!("<m{i}@omnihub.test>"), &format!("message {i}"));
        client.send_mail("shop@omnihub.test", &[to], &mail).await;
    }
    let subjects: Vec<Option<String>> = sink
        .messages()
        .into_iter()
        .map(|m| m.headers.subject)
        .collect();
    assert_eq!(
        subjects,
        [Some("message 1".into()), Some("message 2".into())]
    );

    let (_, for_ann) = get_json(&sink, "/api/messages?to=ANN@x.test").await;
    let for_ann = for_ann["messages"].as_array().cloned().unwrap_or_default();
    assert_eq!(for_ann.len(), 1);
    assert_eq!(for_ann[0]["headers"]["subject"], "message 2");
    let (_, newest) = get_json(&sink, "/api/messages?limit=1").await;
    assert_eq!(newest["messages"][0]["headers"]["subject"], "message 2");
    assert_eq!(newest["messages"].as_array().map(Vec::len), Some(1));

    let url = format!("http://{}/api/messages", sink.http_addr());
    let cleared: Value = reqwest::Client::new()
        .delete(&url)
        .send()
        .await
        .expect("DELETE the inbox")
        .json()
        .await
        .expect("a JSON body");
    assert_eq!(cleared["deleted"], 2);
    assert!(sink.messages().is_empty());
    sink.stop().await;
}

#[tokio::test]
async fn the_inbox_page_escapes_what_senders_wrote() {
    let sink = start(args()).await;
    let mut client = Client::greeted(sink.smtp_addr()).await;
    client.expect("EHLO client.test", 250).await;
    let mail = "Subject: <script>alert('x')</script> & more\r\nFrom: \"Eve\" <eve@x.test>\r\n\r\n\
                <img src=x onerror=alert(1)>\r\n";
    client.send_mail("eve@x.test", &["ann@x.test"], mail).await;
    let (status, page) = get_text(&sink, "/").await;
    assert_eq!(status, 200);
    assert!(!page.contains("<script>"), "{page}");
    assert!(page.contains("&lt;script&gt;"), "{page}");
    assert!(page.contains("&amp; more"), "{page}");
    let id = sink.messages()[0].id;
    let (status, page) = get_text(&sink, &format!("/messages/{id}")).await;
    assert_eq!(status, 200);
    assert!(
        !page.contains("<script>") && !page.contains("<img"),
        "{page}"
    );
    assert!(
        page.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "{page}"
    );
    sink.stop().await;
}

#[tokio::test]
async fn unknown_ids_and_bad_queries_get_json_errors() {
    let sink = start(args()).await;
    for path in [
        "/api/messages/01ARZ3NDEKTSV4RRFFQ69G5FAV",
        "/api/messages/not-a-ulid",
        "/no/such/page",
    ] {
        let (status, body) = get_json(&sink, path).await;
        assert_eq!(status, 404, "{path}");
        assert!(body["error"]["code"].is_string(), "{path}: {body}");
        assert!(body["error"]["message"].is_string(), "{path}: {body}");
    }
    let (_, body) = get_json(&sink, "/api/messages/01ARZ3NDEKTSV4RRFFQ69G5FAV").await;
    assert_eq!(body["error"]["code"], "message_not_found");
    let (status, body) = get_json(&sink, "/api/messages?limit=lots").await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "bad_request");
    let (status, _) = get_text(&sink, "/messages/01ARZ3NDEKTSV4RRFFQ69G5FAV").await;
    assert_eq!(status, 404);
    let (status, body) = get_text(&sink, "/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    sink.stop().await;
}

#[tokio::test]
async fn an_idle_connection_is_closed_with_421() {
    let sink = start(MailArgs {
        idle_timeout: Duration::from_millis(200),
        ..args()
    })
    .await;
    let mut client = Client::greeted(sink.smtp_addr()).await;
    let (code, text) = client.reply().await;
    assert_eq!(code, 421, "{text}");
    client.closed().await;
    sink.stop().await;
}

#[tokio::test]
async fn connections_beyond_the_limit_are_turned_away() {
    let sink = start(MailArgs {
        max_connections: 1,
        ..args()
    })
    .await;
    let mut first = Client::greeted(sink.smtp_addr()).await;
    let mut second = Client::connect(sink.smtp_addr()).await;
    let (code, text) = second.reply().await;
    assert_eq!(
        (code, text.as_str()),
        (421, "4.3.2 Too busy, try again later")
    );
    second.closed().await;
    first.expect("QUIT", 221).await;
    first.closed().await;
    // The slot is free again once the first session has ended; poll for it.
    let deadline = tokio::time::Instant::now() + REPLY_DEADLINE;
    loop {
        let mut third = Client::connect(sink.smtp_addr()).await;
        if third.reply().await.0 == 220 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slot never freed"
        );
        tokio::task::yield_now().await;
    }
    sink.stop().await;
}

#[tokio::test]
async fn stopping_closes_open_sessions_and_the_listeners() {
    let sink = start(args()).await;
    let (smtp, http) = (sink.smtp_addr(), sink.http_addr());
    let mut client = Client::greeted(smtp).await;
    client.expect("EHLO client.test", 250).await;
    sink.stop().await;
    let (code, _) = client.reply().await;
    assert_eq!(code, 421);
    client.closed().await;
    assert!(TcpStream::connect(smtp).await.is_err());
    assert!(TcpStream::connect(http).await.is_err());
}

#[tokio::test]
async fn bad_arguments_are_refused_before_binding() {
    for bad in [
        MailArgs {
            max_messages: 0,
            ..args()
        },
        MailArgs {
            max_size_mb: 0,
            ..args()
        },
        MailArgs {
            max_size_mb: 2000,
            max_store_mb: 4000,
            ..args()
        },
        MailArgs {
            max_store_mb: 1,
            ..args()
        },
        MailArgs {
            max_connections: 0,
            ..args()
        },
        MailArgs {
            idle_timeout: Duration::ZERO,
            ..args()
        },
    ] {
        assert!(matches!(
            MailSink::start(&bad).await,
            Err(super::MailError::BadArguments(_))
        ));
    }
}

#[test]
fn the_command_line_defaults_are_the_default_args() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        mail: MailArgs,
    }
    let cli = Cli::try_parse_from(["mail"]).expect("no flags parse");
    assert_eq!(cli.mail, MailArgs::default());
    let cli = Cli::try_parse_from(["mail", "--smtp", "127.0.0.1:0", "--idle-timeout", "30s"])
        .expect("flags parse");
    assert_eq!(cli.mail.idle_timeout, Duration::from_secs(30));
    assert_eq!(cli.mail.smtp.port(), 0);
}
