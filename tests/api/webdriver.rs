//! A small W3C WebDriver client over reqwest, and the headless Chromium it drives through
//! `chromedriver` (Debian packages `chromium` and `chromium-driver`). Only what the browser
//! tests use: sessions, navigation, elements (find, type, click, text, attributes), the page
//! source and screenshots.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

/// The key W3C WebDriver uses for an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
/// How long `wait_*` helpers poll before failing.
pub const WAIT: Duration = Duration::from_secs(20);

/// The browser: a `chromedriver` process on a loopback port and one Chromium session.
pub struct Browser {
    driver: Option<std::process::Child>,
    profile: tempfile::TempDir,
    base: String,
    session: String,
    http: reqwest::Client,
    shots: PathBuf,
}

/// Where a binary is, from the environment variable or the usual Debian paths.
fn find_binary(var: &str, candidates: &[&str]) -> Option<PathBuf> {
    if let Ok(p) = std::env::var(var) {
        return Some(PathBuf::from(p));
    }
    candidates.iter().map(PathBuf::from).find(|p| p.exists())
}

#[derive(Debug)]
pub struct WebDriverError(pub String);

impl std::fmt::Display for WebDriverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

type Result<T> = std::result::Result<T, WebDriverError>;

impl Browser {
    /// Starts `chromedriver --port=<free port>` on 127.0.0.1 and a headless Chromium session
    /// with a fresh profile. Panics — loudly — when Chromium or chromedriver is missing.
    pub async fn start() -> Browser {
        let chromium = find_binary(
            "CHROMIUM",
            &["/usr/bin/chromium", "/usr/bin/chromium-browser"],
        )
        .filter(|p| p.exists());
        let driver = find_binary(
            "CHROMEDRIVER",
            &["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"],
        )
        .filter(|p| p.exists());
        let (Some(chromium), Some(driver_bin)) = (chromium, driver) else {
            panic!(
                "the browser tests need Chromium and chromedriver: `apt-get install -y chromium chromium-driver` \
                 (.ci/run installs them); set CHROMIUM / CHROMEDRIVER for other paths, or \
                 CASHLOOP_SKIP_BROWSER_TESTS=1 to skip them on a machine without a browser"
            );
        };
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let driver = std::process::Command::new(&driver_bin)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", driver_bin.display()));
        let base = format!("http://127.0.0.1:{port}");
        let http = gateway::http::client_builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let profile = tempfile::tempdir().unwrap();
        let mut browser = Browser {
            driver: Some(driver),
            profile,
            base,
            session: String::new(),
            http,
            shots: screenshot_dir(),
        };
        let ready = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = browser
                .http
                .get(format!("{}/status", browser.base))
                .send()
                .await
                && let Ok(v) = r.json::<Value>().await
                && v["value"]["ready"] == true
            {
                break;
            }
            assert!(Instant::now() < ready, "chromedriver did not become ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-dev-shm-usage",
            "--window-size=1280,1000",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .chain([format!(
            "--user-data-dir={}",
            browser.profile.path().display()
        )])
        .collect::<Vec<_>>();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "goog:chromeOptions": {"binary": chromium, "args": args},
        }}});
        let v = browser
            .raw("POST", "/session", Some(caps))
            .await
            .unwrap_or_else(|e| panic!("new WebDriver session: {e}"));
        browser.session = v["sessionId"].as_str().expect("a session id").to_owned();
        browser
    }

    /// One WebDriver command; the `value` of its answer, or its error.
    async fn raw(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        let req = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).json(&body.unwrap_or_else(|| json!({}))),
        };
        let resp = req
            .send()
            .await
            .map_err(|e| WebDriverError(format!("{method} {path}: {e}")))?;
        let status = resp.status();
        let v: Value = resp
            .json()
            .await
            .map_err(|e| WebDriverError(format!("{method} {path}: {e}")))?;
        if !status.is_success() {
            return Err(WebDriverError(format!(
                "{method} {path}: {status} {} {}",
                v["value"]["error"], v["value"]["message"]
            )));
        }
        Ok(v["value"].clone())
    }

    async fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        self.raw(method, &format!("/session/{}{path}", self.session), body)
            .await
    }

    pub async fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({"url": url})))
            .await
            .unwrap_or_else(|e| panic!("navigate to {url}: {e}"));
    }

    pub async fn url(&self) -> String {
        self.cmd("GET", "/url", None)
            .await
            .unwrap()
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub async fn source(&self) -> String {
        self.cmd("GET", "/source", None)
            .await
            .unwrap()
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The first element matching a CSS selector, if any.
    pub async fn try_find(&self, css: &str) -> Option<Element<'_>> {
        self.find_result(css).await.ok()
    }

    async fn find_result(&self, css: &str) -> Result<Element<'_>> {
        let v = self
            .cmd(
                "POST",
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await?;
        Ok(Element {
            browser: self,
            id: v[ELEMENT_KEY]
                .as_str()
                .ok_or_else(|| WebDriverError(format!("no element reference in {v}")))?
                .to_owned(),
        })
    }

    /// The element that has the keyboard focus.
    pub async fn active(&self) -> Element<'_> {
        let v = self.cmd("GET", "/element/active", None).await.unwrap();
        Element {
            browser: self,
            id: v[ELEMENT_KEY]
                .as_str()
                .expect("an active element")
                .to_owned(),
        }
    }

    /// Types `text` on the keyboard, to whatever has the focus (`\u{E004}` is Tab,
    /// `\u{E007}` Enter), as a person would.
    pub async fn keys(&self, text: &str) {
        let mut actions = Vec::new();
        for c in text.chars() {
            actions.push(json!({"type": "keyDown", "value": c.to_string()}));
            actions.push(json!({"type": "keyUp", "value": c.to_string()}));
        }
        self.cmd(
            "POST",
            "/actions",
            Some(json!({"actions": [{"type": "key", "id": "keyboard", "actions": actions}]})),
        )
        .await
        .unwrap();
        let _ = self.cmd("DELETE", "/actions", None).await;
    }

    /// Every element matching a CSS selector.
    pub async fn find_all(&self, css: &str) -> Vec<Element<'_>> {
        let v = self
            .cmd(
                "POST",
                "/elements",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await
            .unwrap_or(Value::Null);
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e[ELEMENT_KEY].as_str())
            .map(|id| Element {
                browser: self,
                id: id.to_owned(),
            })
            .collect()
    }

    /// The element, waiting for it to appear.
    pub async fn find(&self, css: &str) -> Element<'_> {
        let until = Instant::now() + WAIT;
        loop {
            let err = match self.find_result(css).await {
                Ok(e) => return e,
                Err(e) => e,
            };
            if Instant::now() > until {
                let _ = self.screenshot("missing-element").await;
                panic!(
                    "no element {css:?} at {} after {WAIT:?} ({err}); page:\n{}",
                    self.url().await,
                    self.source().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the element's text contains `want`; returns the text.
    pub async fn wait_text(&self, css: &str, want: &str) -> String {
        let until = Instant::now() + WAIT;
        let mut last = String::new();
        loop {
            if let Some(e) = self.try_find(css).await
                && let Ok(t) = e.try_text().await
            {
                if t.contains(want) {
                    return t;
                }
                last = t;
            }
            if Instant::now() > until {
                let _ = self.screenshot("wait-text").await;
                panic!("{css:?} never contained {want:?}; last text: {last:?}");
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    /// Saves a PNG screenshot as `target/screenshots/<name>.png`; returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let b64 = self.cmd("GET", "/screenshot", None).await.unwrap();
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap_or_default())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        std::fs::create_dir_all(&self.shots).unwrap();
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    /// Ends the session (Chromium quits) and stops chromedriver.
    pub async fn quit(mut self) {
        let _ = self
            .raw("DELETE", &format!("/session/{}", self.session), None)
            .await;
        self.stop_driver();
    }

    fn stop_driver(&mut self) {
        if let Some(mut d) = self.driver.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
        kill_profile_processes(self.profile.path());
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.stop_driver();
    }
}

/// Chromium processes left behind with our profile directory on their command line (after
/// a panic, chromedriver is killed before it can close the browser): ended by their pid.
fn kill_profile_processes(profile: &Path) {
    let marker = format!("--user-data-dir={}", profile.display());
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if cmdline
            .split(|b| *b == 0)
            .any(|arg| arg == marker.as_bytes())
        {
            let _ = std::process::Command::new("kill")
                .arg(pid.to_string())
                .status();
        }
    }
}

/// `target/screenshots` (beside the build's `tmp` directory, whatever the target dir).
pub fn screenshot_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map_or_else(|| PathBuf::from("target"), Path::to_path_buf)
        .join("screenshots")
}

/// An element of the current page.
pub struct Element<'a> {
    browser: &'a Browser,
    id: String,
}

impl Element<'_> {
    async fn cmd(&self, method: &str, what: &str, body: Option<Value>) -> Result<Value> {
        self.browser
            .cmd(method, &format!("/element/{}{what}", self.id), body)
            .await
    }

    pub async fn click(&self) {
        self.cmd("POST", "/click", None).await.unwrap();
    }

    pub async fn clear(&self) {
        self.cmd("POST", "/clear", None).await.unwrap();
    }

    /// Types `text` into the element.
    pub async fn send_keys(&self, text: &str) {
        self.cmd("POST", "/value", Some(json!({"text": text})))
            .await
            .unwrap();
    }

    async fn try_text(&self) -> Result<String> {
        Ok(self
            .cmd("GET", "/text", None)
            .await?
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }

    pub async fn text(&self) -> String {
        self.try_text().await.unwrap()
    }

    pub async fn attribute(&self, name: &str) -> Option<String> {
        self.cmd("GET", &format!("/attribute/{name}"), None)
            .await
            .ok()?
            .as_str()
            .map(str::to_owned)
    }
}
