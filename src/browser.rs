//! A real browser for the console's tests and benchmark: headless Chromium driven through chromedriver over
//! the W3C WebDriver protocol (JSON over HTTP on loopback). Debian's `chromium` and
//! `chromium-driver` packages, installed by `scripts/setup.sh --with-broker`.
//!
//! One [`Browser`] is one chromedriver process with one browser session; dropping it ends the
//! session (which closes Chromium) and then stops the chromedriver it started, by its pid.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The WebDriver element key (W3C).
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A headless Chromium, driven over WebDriver.
pub struct Browser {
    driver: Child,
    addr: String,
    session: String,
    /// Chromium's own process, stopped by its id should ending the session fail.
    chromium: Option<u32>,
    _profile: tempfile::TempDir,
}

/// One HTTP/1.1 exchange with chromedriver: the status and the JSON body. The body is read by
/// its `Content-Length` (chromedriver keeps the connection open after answering).
fn exchange(addr: &str, method: &str, path: &str, body: Option<&Value>) -> std::io::Result<(u16, Value)> {
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(if method == "DELETE" { 15 } else { 120 })))?;
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut reader = BufReader::new(s);
    let mut status_line = String::new();
    reader.read_line(&mut status_line)?;
    let status = status_line.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let mut length = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse::<usize>().ok();
        }
    }
    let mut payload = Vec::new();
    match length {
        Some(n) => {
            payload.resize(n, 0);
            reader.read_exact(&mut payload)?;
        }
        None => {
            reader.read_to_end(&mut payload)?;
        }
    }
    Ok((status, serde_json::from_slice(&payload).unwrap_or(Value::Null)))
}

/// Where `tool` is on the `PATH`, if it is.
fn on_path(tool: &str) -> Option<std::path::PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|dir| dir.join(tool)).find(|p| p.is_file())
}

/// Whether this machine has Chromium and its driver.
pub fn available() -> bool {
    on_path("chromium").is_some() && on_path("chromedriver").is_some()
}

impl Browser {
    /// Starts chromedriver on a free loopback port and a headless Chromium session of
    /// `width`×`height` pixels.
    pub fn start(width: u32, height: u32) -> Self {
        assert!(available(), "chromium and chromedriver are needed: run scripts/setup.sh --with-broker");
        // chromedriver binds the port it is given: one that was free a moment ago, retried.
        for _ in 0..5 {
            let port = tessera_workload::ports::spare_loopback_port().expect("a spare loopback port");
            let mut driver = Command::new("chromedriver")
                .args([format!("--port={port}"), "--allowed-ips=127.0.0.1".into()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("chromedriver starts");
            crate::record_pid("chromedriver", driver.id());
            let addr = format!("127.0.0.1:{port}");
            let until = Instant::now() + Duration::from_secs(20);
            while exchange(&addr, "GET", "/status", None).map(|(_, v)| v["value"]["ready"] != true).unwrap_or(true) {
                if Instant::now() > until || driver.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if driver.try_wait().ok().flatten().is_some() {
                crate::forget_pid("chromedriver", driver.id());
                continue;
            }
            let profile = tempfile::tempdir().expect("profile dir");
            let capabilities = json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": on_path("chromium").expect("chromium"),
                    "args": [
                        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                        format!("--window-size={width},{height}"),
                        format!("--user-data-dir={}", profile.path().display()),
                    ]
                }
            }}});
            let created = exchange(&addr, "POST", "/session", Some(&capabilities));
            let (status, answer) = created.unwrap_or_else(|e| (0, Value::String(e.to_string())));
            if status != 200 {
                let _ = driver.kill();
                let _ = driver.wait();
                crate::forget_pid("chromedriver", driver.id());
                panic!("chromedriver refused a session ({status}): {answer}");
            }
            let session = answer["value"]["sessionId"].as_str().expect("a session id").to_string();
            let chromium = answer["value"]["capabilities"]["goog:processID"].as_u64().map(|p| p as u32);
            if let Some(pid) = chromium {
                crate::record_pid("chromium", pid);
            }
            return Browser { driver, addr, session, chromium, _profile: profile };
        }
        panic!("chromedriver did not start");
    }

    /// A WebDriver command on this session; its `value`, or a panic with the driver's error.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        let (status, answer) = exchange(&self.addr, method, &path, body.as_ref()).expect("chromedriver answers");
        assert_eq!(status, 200, "{method} {path}: {answer}");
        answer["value"].clone()
    }

    /// Like [`Self::call`], but a WebDriver error (no such element, ...) is `None`.
    fn try_call(&self, method: &str, path: &str, body: Option<Value>) -> Option<Value> {
        let path = format!("/session/{}{path}", self.session);
        match exchange(&self.addr, method, &path, body.as_ref()) {
            Ok((200, answer)) => Some(answer["value"].clone()),
            _ => None,
        }
    }

    /// Navigates to `url` and waits until the page has loaded.
    pub fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })));
    }

    /// The current URL.
    pub fn url(&self) -> String {
        self.call("GET", "/url", None).as_str().unwrap_or_default().to_string()
    }

    /// The page's HTML as the browser holds it now (after scripts and live updates).
    pub fn source(&self) -> String {
        self.call("GET", "/source", None).as_str().unwrap_or_default().to_string()
    }

    /// The elements `css` selects now.
    pub fn find_all(&self, css: &str) -> Vec<String> {
        let found = self.call("POST", "/elements", Some(json!({ "using": "css selector", "value": css })));
        found
            .as_array()
            .map(|a| a.iter().filter_map(|e| e[ELEMENT].as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    }

    /// The first element `css` selects, waiting up to `timeout` for one.
    pub fn wait_for(&self, css: &str, timeout: Duration) -> String {
        let until = Instant::now() + timeout;
        loop {
            if let Some(e) = self.try_call("POST", "/element", Some(json!({ "using": "css selector", "value": css }))) {
                return e[ELEMENT].as_str().unwrap_or_else(|| panic!("not an element: {e}")).to_string();
            }
            assert!(Instant::now() < until, "no {css} within {timeout:?} at {}:\n{}", self.url(), self.source());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until `check` holds for the page, up to `timeout`; returns how long it took.
    pub fn wait_until(&self, what: &str, timeout: Duration, check: impl Fn(&Browser) -> bool) -> Duration {
        let start = Instant::now();
        while !check(self) {
            assert!(start.elapsed() < timeout, "{what}: not within {timeout:?} at {}:\n{}", self.url(), self.source());
            std::thread::sleep(Duration::from_millis(100));
        }
        start.elapsed()
    }

    /// An element's text as rendered.
    pub fn text(&self, element: &str) -> String {
        self.call("GET", &format!("/element/{element}/text"), None).as_str().unwrap_or_default().to_string()
    }

    /// An element's attribute.
    pub fn attribute(&self, element: &str, name: &str) -> Option<String> {
        self.call("GET", &format!("/element/{element}/attribute/{name}"), None).as_str().map(str::to_string)
    }

    /// Clicks an element.
    pub fn click(&self, element: &str) {
        self.call("POST", &format!("/element/{element}/click"), Some(json!({})));
    }

    /// Types `text` into an element (after clearing it).
    pub fn type_into(&self, element: &str, text: &str) {
        self.call("POST", &format!("/element/{element}/clear"), Some(json!({})));
        self.call("POST", &format!("/element/{element}/value"), Some(json!({ "text": text })));
    }

    /// Runs `script` in the page (its `return` value).
    pub fn execute(&self, script: &str) -> Value {
        self.call("POST", "/execute/sync", Some(json!({ "script": script, "args": [] })))
    }

    /// A PNG of the viewport.
    pub fn screenshot(&self) -> Vec<u8> {
        use base64::Engine as _;
        let png = self.call("GET", "/screenshot", None);
        base64::engine::general_purpose::STANDARD.decode(png.as_str().unwrap_or_default()).expect("a PNG")
    }

    /// Deletes every cookie (a fresh visitor).
    pub fn clear_cookies(&self) {
        self.call("DELETE", "/cookie", None);
    }

    /// Signs in at `base` (`http://host:port`) through the sign-in form.
    pub fn sign_in(&self, base: &str, user: &str, password: &str) {
        self.goto(&format!("{base}/console/sign-in"));
        let user_field = self.wait_for("#user", Duration::from_secs(10));
        self.type_into(&user_field, user);
        self.type_into(&self.wait_for("#password", Duration::from_secs(5)), password);
        self.click(&self.wait_for("#sign-in", Duration::from_secs(5)));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = exchange(&self.addr, "DELETE", &format!("/session/{}", self.session), None);
        if let Some(pid) = self.chromium {
            // Still there (the session did not end): stopped by its id, if it is still Chromium.
            let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if cmdline.contains("chrom") {
                let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            }
            crate::forget_pid("chromium", pid);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        crate::forget_pid("chromedriver", self.driver.id());
    }
}
