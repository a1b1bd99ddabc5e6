//! Headless Chromium, driven over the DevTools protocol for the tests that need a real
//! browser: open a page, read what it shows, type into a form, click, take a screenshot.
//!
//! The protocol runs on a pipe (`--remote-debugging-pipe`: the browser reads commands on its
//! fd 3 and writes answers and events on its fd 4, each a JSON message ended by a NUL byte;
//! a shell puts the pipes there), so no port is opened and no WebSocket client is needed. A reader thread hands the
//! browser's messages over a channel, so that every wait has a deadline.
//!
//! A client certificate is presented the way a person's browser presents it: from the NSS
//! database in `$HOME/.pki/nssdb` ([`NssHome`]), chosen without a prompt by the
//! `AutoSelectCertificateForUrls` policy `.ci/setup` installs ([`POLICY`]).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The Chromium policy `.ci/setup` installs: a client certificate is chosen without asking
/// for sites on the loopback address (`https://[::1]:*`), as a managed browser would.
pub const POLICY: &str = "/etc/chromium/policies/managed/slapcluster-tests.json";

/// How the tests run Chromium: headless, pixel for pixel, without a sandbox (root in CI:
/// Chromium's sandbox needs user namespaces it is not given there).
pub const HEADLESS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
];

/// How long one page may take to load, or one command to be answered.
const WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum BrowserError {
    #[error("{0}")]
    Io(String),
    #[error("the browser answered {method} with an error: {error}")]
    Protocol { method: String, error: String },
    #[error("{0} did not happen within {WAIT:?}")]
    Timeout(String),
    #[error("the browser closed its pipe")]
    Closed,
    #[error("{0}")]
    Page(String),
}

fn io(what: impl std::fmt::Display, e: impl std::fmt::Display) -> BrowserError {
    BrowserError::Io(format!("{what}: {e}"))
}

/// The Chromium binary, if one is installed.
pub fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser"].into_iter().find(|name| {
        Command::new(name)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// A home directory whose NSS database holds one person's certificate and trusts a root, as
/// their browser profile would: what Chromium on Linux presents and trusts.
pub struct NssHome {
    pub home: PathBuf,
}

impl NssHome {
    /// Creates `home/.pki/nssdb` trusting `roots_pem` (the cluster's root) for servers, with
    /// the certificate `chain_pem` and its key `key_pem` as the person's own (through a
    /// PKCS#12 file made by `openssl`, imported by `pk12util`).
    pub fn create(
        home: &Path,
        roots_pem: &Path,
        chain_pem: &Path,
        key_pem: &Path,
    ) -> Result<Self, BrowserError> {
        let db = home.join(".pki").join("nssdb");
        std::fs::create_dir_all(&db).map_err(|e| io(format!("creating {}", db.display()), e))?;
        let db_arg = format!("sql:{}", db.display());
        run("certutil", &["-N", "-d", &db_arg, "--empty-password"])?;
        run(
            "certutil",
            &[
                "-A",
                "-d",
                &db_arg,
                "-n",
                "cluster root",
                "-t",
                "C,,",
                "-i",
                &roots_pem.to_string_lossy(),
            ],
        )?;
        let p12 = home.join("identity.p12");
        run(
            "openssl",
            &[
                "pkcs12",
                "-export",
                "-in",
                &chain_pem.to_string_lossy(),
                "-inkey",
                &key_pem.to_string_lossy(),
                "-out",
                &p12.to_string_lossy(),
                "-passout",
                "pass:",
                "-name",
                "identity",
            ],
        )?;
        run(
            "pk12util",
            &["-i", &p12.to_string_lossy(), "-d", &db_arg, "-W", ""],
        )?;
        Ok(Self {
            home: home.to_path_buf(),
        })
    }
}

fn run(program: &str, args: &[&str]) -> Result<(), BrowserError> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| io(format!("running {program}"), e))?;
    if !output.status.success() {
        return Err(BrowserError::Io(format!(
            "{program} {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    Ok(())
}

/// One headless Chromium with one page, killed when dropped.
pub struct Browser {
    child: Child,
    commands: std::io::PipeWriter,
    messages: mpsc::Receiver<Value>,
    next_id: u64,
    /// The page's session: page commands go to it.
    session: String,
    /// Events received while waiting for something else, oldest first.
    pending: Vec<Value>,
    /// The loader of the document shown now (see [`Browser::wait_load`]).
    loader: String,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    /// Starts `binary` headless with its profile in `profile`, `home` as `$HOME` (its NSS
    /// database), a window of `width` x `height`, and opens a blank page.
    pub fn launch(
        binary: &str,
        profile: &Path,
        home: &Path,
        (width, height): (u32, u32),
    ) -> Result<Self, BrowserError> {
        let (ours_read, theirs_write) = std::io::pipe().map_err(|e| io("a pipe", e))?;
        let (theirs_read, ours_write) = std::io::pipe().map_err(|e| io("a pipe", e))?;
        // The pipes go to the shell as its stdin and stdout, which it moves to the
        // browser's descriptors 3 and 4 (what `--remote-debugging-pipe` reads and writes)
        // before it becomes the browser.
        let child = Command::new("sh")
            .arg("-c")
            .arg("exec \"$@\" 3<&0 4>&1 </dev/null >/dev/null")
            .arg("browser")
            .arg(binary)
            .args(HEADLESS)
            .args(["--remote-debugging-pipe", "--no-first-run"])
            .arg(format!("--window-size={width},{height}"))
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .env("HOME", home)
            .stdin(Stdio::from(theirs_read))
            .stdout(Stdio::from(theirs_write))
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| io(format!("starting {binary}"), e))?;
        let (sender, messages) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(ours_read);
            let mut message = Vec::new();
            loop {
                message.clear();
                match reader.read_until(0, &mut message) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                if message.last() == Some(&0) {
                    message.pop();
                }
                let Ok(value) = serde_json::from_slice::<Value>(&message) else {
                    continue;
                };
                if sender.send(value).is_err() {
                    return;
                }
            }
        });
        let mut browser = Self {
            child,
            commands: ours_write,
            messages,
            next_id: 0,
            session: String::new(),
            pending: Vec::new(),
            loader: String::new(),
        };
        let target = browser.send("Target.createTarget", json!({"url": "about:blank"}), false)?;
        let target_id = target["targetId"].as_str().unwrap_or_default().to_string();
        let attached = browser.send(
            "Target.attachToTarget",
            json!({"targetId": target_id, "flatten": true}),
            false,
        )?;
        browser.session = attached["sessionId"]
            .as_str()
            .ok_or_else(|| BrowserError::Page(format!("no session in {attached}")))?
            .to_string();
        browser.send("Page.enable", json!({}), true)?;
        browser.send(
            "Page.setLifecycleEventsEnabled",
            json!({"enabled": true}),
            true,
        )?;
        Ok(browser)
    }

    /// Sends a command (to the page's session when `page`) and waits for its answer.
    fn send(&mut self, method: &str, params: Value, page: bool) -> Result<Value, BrowserError> {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if page {
            message["sessionId"] = json!(self.session);
        }
        let mut bytes = serde_json::to_vec(&message).map_err(|e| io("encoding", e))?;
        bytes.push(0);
        self.commands
            .write_all(&bytes)
            .map_err(|e| io(format!("sending {method}"), e))?;
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let value = match self.messages.recv_timeout(left) {
                Ok(value) => value,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(BrowserError::Timeout(format!("an answer to {method}")));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return Err(BrowserError::Closed),
            };
            if value["id"].as_u64() == Some(id) {
                if let Some(error) = value.get("error") {
                    return Err(BrowserError::Protocol {
                        method: method.to_string(),
                        error: error.to_string(),
                    });
                }
                return Ok(value["result"].clone());
            }
            if value.get("method").is_some() {
                self.pending.push(value);
            }
        }
    }

    /// Waits until a document whose loader `wanted` accepts has loaded (its `load` lifecycle
    /// event; one received earlier counts), and makes it the current one. Each document has
    /// its own loader, so a late event of the page before is never taken for the next one's.
    fn wait_load(&mut self, wanted: impl Fn(&str) -> bool) -> Result<(), BrowserError> {
        let loaded = |event: &Value| {
            event["method"] == "Page.lifecycleEvent"
                && event["params"]["name"] == "load"
                && event["params"]["loaderId"].as_str().is_some_and(&wanted)
        };
        if let Some(at) = self.pending.iter().position(loaded) {
            let event = self.pending.remove(at);
            self.pending.drain(..at);
            self.loader = event["params"]["loaderId"]
                .as_str()
                .unwrap_or("")
                .to_string();
            return Ok(());
        }
        self.pending.clear();
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.messages.recv_timeout(left) {
                Ok(event) if loaded(&event) => {
                    self.loader = event["params"]["loaderId"]
                        .as_str()
                        .unwrap_or("")
                        .to_string();
                    return Ok(());
                }
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(BrowserError::Timeout("a page load".into()));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return Err(BrowserError::Closed),
            }
        }
    }

    /// Opens `url` and waits for it to load.
    pub fn open(&mut self, url: &str) -> Result<(), BrowserError> {
        let navigated = self.send("Page.navigate", json!({"url": url}), true)?;
        if let Some(error) = navigated.get("errorText").and_then(Value::as_str) {
            return Err(BrowserError::Page(format!("opening {url}: {error}")));
        }
        let loader = navigated["loaderId"].as_str().unwrap_or("").to_string();
        self.wait_load(|id| id == loader)
    }

    /// The value of a JavaScript expression evaluated in the page.
    pub fn eval(&mut self, expression: &str) -> Result<Value, BrowserError> {
        let result = self.send(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true}),
            true,
        )?;
        if let Some(exception) = result.get("exceptionDetails") {
            return Err(BrowserError::Page(format!(
                "{expression}: {}",
                exception["exception"]["description"]
            )));
        }
        Ok(result["result"]["value"].clone())
    }

    /// The text of the first element `selector` matches (`None` if none does).
    pub fn text(&mut self, selector: &str) -> Result<Option<String>, BrowserError> {
        let selector = serde_json::to_string(selector).map_err(|e| io("encoding", e))?;
        let value = self.eval(&format!(
            "(e => e ? e.innerText : null)(document.querySelector({selector}))"
        ))?;
        Ok(value.as_str().map(str::to_string))
    }

    /// The address of the page shown now.
    pub fn location(&mut self) -> Result<String, BrowserError> {
        Ok(self
            .eval("location.href")?
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    /// Types `value` into the form field `selector` matches (replacing what it held).
    pub fn fill(&mut self, selector: &str, value: &str) -> Result<(), BrowserError> {
        let (selector, value) = (
            serde_json::to_string(selector).map_err(|e| io("encoding", e))?,
            serde_json::to_string(value).map_err(|e| io("encoding", e))?,
        );
        let found = self.eval(&format!(
            "(e => {{ if (!e) return false; e.value = {value}; return true; }})(document.querySelector({selector}))"
        ))?;
        if found != json!(true) {
            return Err(BrowserError::Page(format!("no field {selector}")));
        }
        Ok(())
    }

    /// Clicks what `selector` matches (a submit button, a checkbox) and, when `loads`, waits
    /// for the page it leads to.
    pub fn click(&mut self, selector: &str, loads: bool) -> Result<(), BrowserError> {
        let quoted = serde_json::to_string(selector).map_err(|e| io("encoding", e))?;
        let found = self.eval(&format!(
            "(e => {{ if (!e) return false; e.click(); return true; }})(document.querySelector({quoted}))"
        ))?;
        if found != json!(true) {
            return Err(BrowserError::Page(format!(
                "nothing to click at {selector}"
            )));
        }
        if loads {
            let before = self.loader.clone();
            self.wait_load(|id| id != before)?;
        }
        Ok(())
    }

    /// Shows pages as a phone of `width` x `height` CSS pixels does (a mobile viewport), or,
    /// with `None`, as the window it was launched with.
    pub fn phone(&mut self, size: Option<(u32, u32)>) -> Result<(), BrowserError> {
        match size {
            Some((width, height)) => self.send(
                "Emulation.setDeviceMetricsOverride",
                json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": true}),
                true,
            ),
            None => self.send("Emulation.clearDeviceMetricsOverride", json!({}), true),
        }
        .map(drop)
    }

    /// A PNG of the page as shown, written to `path`.
    pub fn screenshot(&mut self, path: &Path) -> Result<(), BrowserError> {
        use base64::Engine as _;
        let shot = self.send(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true}),
            true,
        )?;
        let data = shot["data"]
            .as_str()
            .ok_or_else(|| BrowserError::Page("a screenshot without data".into()))?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|e| io("decoding the screenshot", e))?;
        std::fs::write(path, png).map_err(|e| io(format!("writing {}", path.display()), e))
    }
}
