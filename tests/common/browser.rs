//! A real headless Chromium for the web console's tests (tests/ui.rs):
//! Debian's `chromium` driven through its `chromedriver` over WebDriver
//! (fantoccini). `scripts/test.sh` installs both and sets
//! `TEST_CHROMEDRIVER` and `TEST_CHROMIUM`; nothing here downloads a browser.
//!
//! ```ignore
//! let Some(b) = Browser::desktop(&server.url).await else { return };
//! b.goto("/ui/").await;
//! b.wait_for_text("h1", "Overview", Duration::from_secs(10)).await;
//! b.screenshot("overview").await;
//! b.assert_no_console_errors().await;
//! ```

use std::io::BufRead as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use super::Log;

/// The desktop window (`--window-size`; headless Chromium keeps some of its
/// height for a window frame, so the page gets 1280 x 761).
pub const DESKTOP: (u32, u32) = (1280, 900);
/// The phone's viewport in CSS pixels (an iPhone 12 to 15), emulated: a
/// window cannot be narrower than 500 pixels.
pub const PHONE: (u32, u32) = (390, 844);

/// How often the waits look again.
const POLL: Duration = Duration::from_millis(50);

/// Where [`Browser::screenshot`] writes: `artifacts/ui-screenshots/` in the
/// checkout, which CI keeps as an artifact (and git ignores).
pub fn screenshot_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("artifacts/ui-screenshots")
}

/// chromedriver and chromium from `TEST_CHROMEDRIVER` and `TEST_CHROMIUM`.
/// `None` outside CI when either is unset, after saying why (the test then
/// skips); under CI that is a failure.
pub fn tools() -> Option<(PathBuf, PathBuf)> {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let (Some(driver), Some(chromium)) = (var("TEST_CHROMEDRIVER"), var("TEST_CHROMIUM")) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the browser tests: TEST_CHROMEDRIVER and TEST_CHROMIUM must both be set \
             (scripts/test.sh installs Debian's chromium and chromium-driver and sets them)"
        );
        eprintln!(
            "skipped: TEST_CHROMEDRIVER and TEST_CHROMIUM are not both set; run scripts/test.sh \
             (it installs chromium and chromium-driver), or set them to chromedriver and chromium"
        );
        return None;
    };
    Some((driver, chromium))
}

/// A chromedriver on 127.0.0.1, in its own process group: dropping it
/// kills it and every browser it started.
pub struct Chromedriver {
    child: Child,
    /// Its WebDriver endpoint, `http://127.0.0.1:PORT/`.
    pub url: String,
    /// What it wrote to stdout and stderr.
    pub log: Log,
}

impl Chromedriver {
    /// Starts `driver` on a port the kernel picks (`--port=0`; it reports
    /// the port it got, so none is picked, freed and hoped to be still
    /// free) and waits until its `/status` says it is ready.
    pub async fn start(driver: &Path) -> Self {
        let mut child = Command::new(driver)
            .arg("--port=0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run chromedriver {}: {e} (TEST_CHROMEDRIVER; scripts/test.sh installs Debian's chromium-driver)",
                    driver.display()
                )
            });
        let log = Log::default();
        let (tx, rx) = std::sync::mpsc::channel();
        // Drain both pipes for the life of the process; the stdout line
        // "ChromeDriver was started successfully on port N." carries the port.
        let out = child.stdout.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in std::io::BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                sink.push(&line);
                if let Some(port) = line
                    .strip_prefix("ChromeDriver was started successfully on port ")
                    .and_then(|p| p.trim_end_matches('.').parse::<u16>().ok())
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(port);
                }
            }
        });
        let err = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                sink.push(&line);
            }
        });
        let port = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(20)))
            .await
            .unwrap();
        let mut driver = Self {
            child,
            url: String::new(),
            log,
        };
        let Ok(port) = port else {
            panic!(
                "chromedriver did not report its port within 20 s:\n{}",
                driver.log.text()
            );
        };
        driver.url = format!("http://127.0.0.1:{port}/");
        let status = format!("{}status", driver.url);
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = match client.get(&status).send().await {
                Ok(r) => r
                    .json::<Value>()
                    .await
                    .is_ok_and(|v| v["value"]["ready"] == true),
                Err(_) => false,
            };
            if ready {
                return driver;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver's {status} did not say ready within 20 s:\n{}",
                driver.log.text()
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        // The whole group: chromedriver and the chromium it started, even
        // when a test panicked before closing its session.
        let _ = rustix::process::kill_process_group(
            rustix::process::Pid::from_child(&self.child),
            rustix::process::Signal::KILL,
        );
        let _ = self.child.wait();
    }
}

/// One headless Chromium session on a fresh profile, with paths resolved
/// against the server under test.
pub struct Browser {
    client: Client,
    /// The server's URL (`http://127.0.0.1:PORT`); [`Browser::goto`]
    /// takes paths below it.
    pub base: String,
    // Dropped after the client: the driver kills the browser before its
    // profile directory goes.
    driver: Chromedriver,
    _profile: tempfile::TempDir,
}

/// One entry of the browser's console log.
#[derive(Debug, Clone)]
pub struct ConsoleEntry {
    /// `SEVERE` (uncaught errors, `console.error`, CSP violations, failed
    /// loads), `WARNING`, `INFO`, `DEBUG`.
    pub level: String,
    /// `javascript`, `console-api`, `security`, `network`, …
    pub source: String,
    pub message: String,
}

impl Browser {
    /// A browser window of [`DESKTOP`] size; `None` when the test should
    /// skip (see [`tools`]).
    pub async fn desktop(base: &str) -> Option<Self> {
        Self::start(base, false).await
    }

    /// A phone: a [`PHONE`]-sized touch screen that honours
    /// `<meta name="viewport">` as a phone's browser does (a page without
    /// one is laid out 980 pixels wide and shrunk to fit).
    pub async fn phone(base: &str) -> Option<Self> {
        Self::start(base, true).await
    }

    async fn start(base: &str, phone: bool) -> Option<Self> {
        let (driver_path, chromium) = tools()?;
        let driver = Chromedriver::start(&driver_path).await;
        let profile = tempfile::tempdir().unwrap();
        let (width, height) = DESKTOP;
        let mut options = json!({
            "binary": chromium,
            "args": [
                "--headless=new",
                // CI runs as root, where Chromium's sandbox cannot start.
                "--no-sandbox",
                "--disable-dev-shm-usage",
                "--disable-gpu",
                format!("--window-size={width},{height}"),
                format!("--user-data-dir={}", profile.path().display()),
            ],
        });
        if phone {
            let (width, height) = PHONE;
            options["mobileEmulation"] = json!({
                "deviceMetrics": {
                    "width": width, "height": height, "pixelRatio": 1, "mobile": true, "touch": true,
                },
            });
        }
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": options,
            // The console log (`console_log`): every level.
            "goog:loggingPrefs": { "browser": "ALL" },
        });
        let Value::Object(caps) = caps else {
            unreachable!()
        };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&driver.url)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "chromedriver could not start {}: {e}\nchromedriver's log:\n{}",
                    chromium.display(),
                    driver.log.text()
                )
            });
        Some(Self {
            client,
            base: base.trim_end_matches('/').to_owned(),
            driver,
            _profile: profile,
        })
    }

    /// The fantoccini client, for what the helpers below do not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Opens `path` (`/ui/`, `/healthz`) on the server and waits for the
    /// page to load.
    pub async fn goto(&self, path: &str) {
        let url = format!("{}{path}", self.base);
        self.client
            .goto(&url)
            .await
            .unwrap_or_else(|e| panic!("cannot open {url}: {e}"));
    }

    /// The visible text of the first element `css` matches.
    pub async fn text(&self, css: &str) -> String {
        self.find(css)
            .await
            .text()
            .await
            .unwrap_or_else(|e| panic!("cannot read the text of {css:?}: {e}"))
    }

    /// Polls until the first element `css` matches exists and its text
    /// contains `needle`; returns that text, or panics after `timeout`
    /// with what it saw last.
    pub async fn wait_for_text(&self, css: &str, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let seen = match self.client.find(Locator::Css(css)).await {
                Ok(e) => e.text().await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match seen {
                Ok(text) if text.contains(needle) => return text,
                _ if Instant::now() >= deadline => {
                    let url = self.client.current_url().await.map(String::from);
                    panic!(
                        "timed out after {timeout:?} waiting for {css:?} to contain {needle:?} \
                         on {url:?}; last saw: {seen:?}"
                    )
                }
                _ => tokio::time::sleep(POLL).await,
            }
        }
    }

    /// Clicks the first element `css` matches.
    pub async fn click(&self, css: &str) {
        self.find(css)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("cannot click {css:?}: {e}"));
    }

    /// Replaces the value of the input `css` matches by typing `value`.
    pub async fn fill(&self, css: &str, value: &str) {
        let e = self.find(css).await;
        e.clear()
            .await
            .unwrap_or_else(|err| panic!("cannot clear {css:?}: {err}"));
        e.send_keys(value)
            .await
            .unwrap_or_else(|err| panic!("cannot type into {css:?}: {err}"));
    }

    /// Submits the form `css` matches as its submit button would
    /// (`requestSubmit`: validation and submit handlers run).
    pub async fn submit(&self, css: &str) {
        let form = self.find(css).await;
        let outcome = self
            .client
            .execute(
                "const f = arguments[0];
                 if (!(f instanceof HTMLFormElement)) return 'not a form: <' + f.localName + '>';
                 f.requestSubmit();
                 return null;",
                vec![serde_json::to_value(&form).unwrap()],
            )
            .await
            .unwrap_or_else(|e| panic!("cannot submit {css:?}: {e}"));
        assert!(outcome.is_null(), "cannot submit {css:?}: {outcome}");
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the
    /// page and returns what it returns.
    pub async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.client
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// [`Browser::js`] for asynchronous work: the script's last argument
    /// is a callback that it calls with the result (promises, fetch,
    /// WebCrypto).
    pub async fn js_async(&self, script: &str, args: Vec<Value>) -> Value {
        self.client
            .execute_async(script, args)
            .await
            .unwrap_or_else(|e| panic!("async script failed: {e}\n{script}"))
    }

    /// Saves a PNG of the viewport as `artifacts/ui-screenshots/{name}.png`
    /// and returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                && !name.starts_with('.'),
            "screenshot name {name:?}: use letters, digits, '-', '_' and '.'"
        );
        let png = self
            .client
            .screenshot()
            .await
            .unwrap_or_else(|e| panic!("cannot take screenshot {name:?}: {e}"));
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        path
    }

    /// The console entries logged since the last call (chromedriver hands
    /// each out once): uncaught errors, `console.*` calls, CSP violations,
    /// failed loads.
    pub async fn console_log(&self) -> Vec<ConsoleEntry> {
        let v = self
            .client
            .issue_cmd(BrowserLog)
            .await
            .unwrap_or_else(|e| panic!("cannot read the browser's console log: {e}"));
        let Value::Array(entries) = v else {
            panic!("chromedriver's log is not an array: {v}")
        };
        let field = |e: &Value, k: &str| e[k].as_str().unwrap_or_default().to_owned();
        entries
            .iter()
            .map(|e| ConsoleEntry {
                level: field(e, "level"),
                source: field(e, "source"),
                message: field(e, "message"),
            })
            .collect()
    }

    /// Fails when the page logged an error since the last look: a
    /// JavaScript exception, `console.error`, a CSP violation, a failed
    /// load. The browser's own request for `/favicon.ico` is not the
    /// page's: a 404 there is left out.
    pub async fn assert_no_console_errors(&self) {
        let errors: Vec<_> = self
            .console_log()
            .await
            .into_iter()
            .filter(|e| {
                e.level == "SEVERE"
                    && !(e.source == "network" && e.message.contains("/favicon.ico - "))
            })
            .collect();
        assert!(
            errors.is_empty(),
            "the page logged errors:\n{}",
            errors
                .iter()
                .map(|e| format!("  [{}] {}", e.source, e.message))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    /// Ends the session (the browser quits); dropping without it kills
    /// chromedriver and the browser instead.
    pub async fn close(self) {
        let Self { client, driver, .. } = self;
        if let Err(e) = client.close().await {
            panic!(
                "cannot end the browser session: {e}\nchromedriver's log:\n{}",
                driver.log.text()
            );
        }
    }
}

impl Browser {
    async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element matches {css:?}: {e}"))
    }
}

/// chromedriver's console log endpoint (`POST /session/{id}/se/log`; the
/// W3C protocol has none), fed by `goog:loggingPrefs`.
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(r#"{"type":"browser"}"#.to_owned()))
    }
}
