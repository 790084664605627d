//! A small W3C WebDriver client over HTTP (for the `browser-tests` suite): it drives Debian's
//! `chromedriver` and headless Chromium, with only the calls the suite needs.

use serde_json::{json, Value};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A running `chromedriver`; killed when dropped.
pub struct Driver {
    child: Child,
    base: String,
    http: reqwest::Client,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    /// Starts chromedriver on a free loopback port and waits (with a deadline) until it is ready.
    pub async fn start() -> Driver {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts (install Debian's chromium and chromium-driver)");
        let driver = Driver {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = driver
                .http
                .get(format!("{}/status", driver.base))
                .send()
                .await;
            if let Ok(res) = ready {
                if res
                    .json::<Value>()
                    .await
                    .is_ok_and(|v| v["value"]["ready"] == true)
                {
                    return driver;
                }
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver not ready within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A new headless Chromium session.
    pub async fn session(&self) -> Session {
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                         "--no-first-run", "--disable-background-networking", "--disable-component-update",
                         "--disable-sync", "--window-size=1280,900"]
            }
        }}});
        let res: Value = self
            .http
            .post(format!("{}/session", self.base))
            .json(&caps)
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("json");
        let id = res["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {res}"))
            .to_string();
        Session {
            http: self.http.clone(),
            url: format!("{}/session/{id}", self.base),
        }
    }
}

/// One browser window.
pub struct Session {
    http: reqwest::Client,
    url: String,
}

impl Session {
    async fn try_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let mut req = self.http.request(method, format!("{}{path}", self.url));
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res: Value = req.send().await.expect("sent").json().await.expect("json");
        match res["value"]["error"].as_str() {
            Some(error) => Err(format!(
                "webdriver {path}: {error}: {}",
                res["value"]["message"]
            )),
            None => Ok(res["value"].clone()),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        self.try_call(method, path, body)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The text of the first element matching `css`, if there is one now.
    async fn try_text(&self, css: &str) -> Option<String> {
        let found = self
            .try_call(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await
            .ok()?;
        let el = found[ELEMENT].as_str()?.to_string();
        let text = self
            .try_call(reqwest::Method::GET, &format!("/element/{el}/text"), None)
            .await
            .ok()?;
        text.as_str().map(str::to_string)
    }

    pub async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    pub async fn current_url(&self) -> String {
        self.call(reqwest::Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The first element matching a CSS selector.
    pub async fn find(&self, css: &str) -> String {
        let v = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}"))
            .to_string()
    }

    pub async fn click(&self, css: &str) {
        let el = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{el}/click"),
            Some(json!({})),
        )
        .await;
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let el = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{el}/clear"),
            Some(json!({})),
        )
        .await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{el}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    pub async fn text(&self, css: &str) -> String {
        let el = self.find(css).await;
        self.call(reqwest::Method::GET, &format!("/element/{el}/text"), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub async fn cookie(&self, name: &str) -> String {
        self.call(reqwest::Method::GET, &format!("/cookie/{name}"), None)
            .await["value"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The current value of a DOM property (e.g. `value` of an input) of the first element
    /// matching `css`, as JSON.
    pub async fn property(&self, css: &str, name: &str) -> Value {
        let el = self.find(css).await;
        self.call(
            reqwest::Method::GET,
            &format!("/element/{el}/property/{name}"),
            None,
        )
        .await
    }

    /// Whether the first element matching `css` (a radio button, a checkbox) is selected.
    pub async fn is_selected(&self, css: &str) -> bool {
        let el = self.find(css).await;
        self.call(
            reqwest::Method::GET,
            &format!("/element/{el}/selected"),
            None,
        )
        .await
        .as_bool()
        .unwrap_or(false)
    }

    /// Polls the current URL until `check` holds, or panics after `timeout`: a click that
    /// submits a form returns before the browser has necessarily moved to the next page.
    pub async fn wait_for_url(&self, timeout: Duration, check: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let url = self.current_url().await;
            if check(&url) {
                return url;
            }
            assert!(
                Instant::now() < deadline,
                "the URL never matched; last: {url}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls `text(css)` until `check` holds, or panics after `timeout`.
    pub async fn wait_for_text(
        &self,
        css: &str,
        timeout: Duration,
        check: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            // The page may be reloading itself (a live update), when the element is briefly gone.
            let text = self.try_text(css).await.unwrap_or_default();
            if check(&text) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "{css} never matched; last text: {text:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs a script in the page (WebDriver "execute sync"); answers its return value.
    pub async fn execute(&self, script: &str, args: Value) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    /// Accepts the `window.confirm` (or alert) the last click opened, waiting for it up to
    /// `timeout`; answers its text.
    pub async fn accept_dialog(&self, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(text) = self
                .try_call(reqwest::Method::GET, "/alert/text", None)
                .await
            {
                self.call(reqwest::Method::POST, "/alert/accept", Some(json!({})))
                    .await;
                return text.as_str().unwrap_or_default().to_string();
            }
            assert!(Instant::now() < deadline, "no dialog within {timeout:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// How many elements match `css` now.
    pub async fn count(&self, css: &str) -> usize {
        self.try_call(
            reqwest::Method::POST,
            "/elements",
            Some(json!({"using": "css selector", "value": css})),
        )
        .await
        .ok()
        .and_then(|v| v.as_array().map(Vec::len))
        .unwrap_or(0)
    }

    /// Polls until `count(css)` satisfies `check`, or panics after `timeout`.
    pub async fn wait_for_count(
        &self,
        css: &str,
        timeout: Duration,
        check: impl Fn(usize) -> bool,
    ) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let n = self.count(css).await;
            if check(n) {
                return n;
            }
            assert!(
                Instant::now() < deadline,
                "{css}: the count never matched; last: {n}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The visible page as a PNG.
    pub async fn screenshot_png(&self) -> Vec<u8> {
        use base64::Engine as _;
        let data = self.call(reqwest::Method::GET, "/screenshot", None).await;
        base64::engine::general_purpose::STANDARD
            .decode(data.as_str().expect("base64 PNG"))
            .expect("a base64 PNG")
    }

    /// Saves the visible page as `<dir>/<name>.png` when `OMNIHUB_SCREENSHOTS` names a
    /// directory (e.g. `docs/screenshots`); does nothing otherwise. The page is resized to its
    /// full height first, so the picture shows all of it.
    pub async fn screenshot_for_docs(&self, name: &str) {
        let Some(dir) = std::env::var_os("OMNIHUB_SCREENSHOTS") else {
            return;
        };
        let height = self
            .execute(
                "return Math.min(2400, Math.max(900, document.documentElement.scrollHeight));",
                json!([]),
            )
            .await
            .as_u64()
            .unwrap_or(900);
        self.call(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({"width": 1280, "height": height})),
        )
        .await;
        let png = self.screenshot_png().await;
        self.call(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({"width": 1280, "height": 900})),
        )
        .await;
        let dir = std::path::PathBuf::from(dir);
        std::fs::create_dir_all(&dir).expect("the screenshot directory");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("the screenshot is written");
        eprintln!("screenshot: {}", path.display());
    }

    pub async fn close(self) {
        let _ = self.http.delete(&self.url).send().await;
    }
}
