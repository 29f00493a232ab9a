//! Headless Chromium for the web console's tests: a `chromedriver` child per browser
//! profile (killed with its Chromium on drop), driven over WebDriver by `fantoccini` on a
//! tokio runtime of its own, behind blocking helpers that read like the steps of a person:
//! open a page, fill a field by its label, click a button by its text, wait for text.
//! Every step can be screenshotted into `target/console-screenshots/<test>/`, and every page
//! checked with the axe-core engine.
//!
//! What it needs, from Debian's `chromium` and `chromium-driver` and the npm registry's
//! `axe-core` (`.ci/run` installs all three): `CONTERA_CHROMEDRIVER`, `CONTERA_CHROMIUM` and
//! `CONTERA_AXE_JS`, which default to where `.ci/run` puts them. Without them a test calls
//! [`crate::skip`] through [`tools_or_skip`] and returns.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use fantoccini::wd::TimeoutConfiguration;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::Server;

/// How long a step waits for the page by default (text, an element, a navigation).
pub const STEP_TIMEOUT: Duration = Duration::from_secs(15);

/// The programs and the script the browser tests run.
#[derive(Debug, Clone)]
pub struct Tools {
    pub chromedriver: PathBuf,
    pub chromium: PathBuf,
    /// `axe.min.js` of the axe-core package.
    pub axe_js: PathBuf,
}

impl Tools {
    /// The tools named by the environment (or where `.ci/run` installs them), or why not.
    pub fn find() -> Result<Tools, String> {
        let tool = |var: &str, default: &str, package: &str| {
            let path = std::env::var_os(var)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(default));
            if path.is_file() {
                Ok(path)
            } else {
                Err(format!(
                    "{} is missing (set {var}; {package}, as .ci/run does)",
                    path.display()
                ))
            }
        };
        Ok(Tools {
            chromedriver: tool(
                "CONTERA_CHROMEDRIVER",
                "/usr/bin/chromedriver",
                "apt-get install chromium-driver",
            )?,
            chromium: tool(
                "CONTERA_CHROMIUM",
                "/usr/bin/chromium",
                "apt-get install chromium",
            )?,
            axe_js: tool(
                "CONTERA_AXE_JS",
                "/var/tmp/contera-axe/package/axe.min.js",
                "the axe-core package from the npm registry unpacked in /var/tmp/contera-axe",
            )?,
        })
    }
}

/// The tools, or None after [`crate::skip`] (which fails the test where every test must run).
pub fn tools_or_skip(test: &str) -> Option<Tools> {
    match Tools::find() {
        Ok(tools) => Some(tools),
        Err(why) => {
            crate::skip(test, &why);
            None
        }
    }
}

/// A window size the console is looked at in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Viewport {
    /// 1366×768, the most common laptop screen.
    Laptop,
    /// 390×844, a current phone held upright.
    Phone,
}

impl Viewport {
    pub fn size(self) -> (u32, u32) {
        match self {
            Viewport::Laptop => (1366, 768),
            Viewport::Phone => (390, 844),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Viewport::Laptop => "laptop",
            Viewport::Phone => "phone",
        }
    }
}

/// One axe-core rule a page breaks.
#[derive(Debug, Clone)]
pub struct Violation {
    /// `minor`, `moderate`, `serious` or `critical`.
    pub impact: String,
    /// The rule, e.g. `color-contrast`.
    pub id: String,
    pub help: String,
    pub help_url: String,
    /// Each offending element: its CSS target and its HTML.
    pub nodes: Vec<String>,
}

impl Violation {
    /// Serious and critical violations fail a test.
    pub fn fails(&self) -> bool {
        matches!(self.impact.as_str(), "serious" | "critical")
    }
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "[{}] {}: {} ({})",
            self.impact, self.id, self.help, self.help_url
        )?;
        for node in &self.nodes {
            writeln!(f, "    {node}")?;
        }
        Ok(())
    }
}

/// What one test recorded: where its screenshots go, their running number, and every axe
/// check. Shared by all the browser profiles of the test.
pub struct Recording {
    pub dir: PathBuf,
    counter: AtomicU32,
    checks: Mutex<Vec<(String, Vec<Violation>)>>,
}

impl Recording {
    /// A fresh `console-screenshots/<test>/` under the target directory (emptied first).
    pub fn new(test: &str) -> Arc<Recording> {
        let dir = target_dir().join("console-screenshots").join(test);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("screenshot directory");
        Arc::new(Recording {
            dir,
            counter: AtomicU32::new(0),
            checks: Mutex::new(Vec::new()),
        })
    }

    /// The next `NN-step-viewport.png` path.
    fn next_path(&self, step: &str, viewport: Viewport) -> PathBuf {
        let n = self.counter.fetch_add(1, Ordering::SeqCst) + 1;
        let step: String = step
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        self.dir
            .join(format!("{n:02}-{step}-{}.png", viewport.name()))
    }

    /// Pages checked and violations by impact, with every violation found.
    pub fn axe_summary(&self) -> String {
        let checks = self.checks.lock().unwrap();
        let mut by_impact: BTreeMap<&str, usize> = BTreeMap::new();
        for impact in ["critical", "serious", "moderate", "minor"] {
            by_impact.insert(impact, 0);
        }
        let mut details = String::new();
        for (page, violations) in checks.iter() {
            for v in violations {
                *by_impact.entry(v.impact.as_str()).or_default() += 1;
                details.push_str(&format!("  {page}: {v}"));
            }
        }
        let counts: Vec<String> = ["critical", "serious", "moderate", "minor"]
            .iter()
            .map(|i| format!("{i} {}", by_impact[i]))
            .collect();
        format!(
            "axe-core: {} pages checked; violations by impact: {}\n{details}",
            checks.len(),
            counts.join(", ")
        )
    }

    /// Every page checked, with the rules it breaks.
    pub fn axe_checks(&self) -> Vec<(String, Vec<Violation>)> {
        self.checks.lock().unwrap().clone()
    }
}

/// The cargo target directory the test executable runs from (`target/<profile>/deps/…`),
/// or a temp dir when it cannot be told.
pub fn target_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.to_path_buf()))
        .filter(|dir| dir.is_dir())
        .unwrap_or_else(std::env::temp_dir)
}

/// One browser profile: its own chromedriver, Chromium and `--user-data-dir`, so two at
/// once share no cookies. Blocking methods; each runs its WebDriver calls on the
/// browser's own runtime. Dropping it ends the session, then the process group of
/// chromedriver and its Chromium.
pub struct Browser {
    runtime: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Child,
    /// Chromium's profile directory, removed on drop.
    _profile: TempDir,
    pub name: String,
    pub viewport: Viewport,
    recording: Arc<Recording>,
    axe_source: String,
}

impl Browser {
    /// Starts chromedriver on a free loopback port and a headless Chromium session.
    pub fn start(
        tools: &Tools,
        recording: &Arc<Recording>,
        name: &str,
        viewport: Viewport,
    ) -> Browser {
        use std::os::unix::process::CommandExt;
        let profile = tempfile::Builder::new()
            .prefix(&format!("contera-chromium-{name}-"))
            .tempdir()
            .expect("profile dir");
        let log = recording.dir.join(format!("chromedriver-{name}.log"));
        // Port 0: chromedriver picks a free port and says which, so two never race for one.
        // Its own process group, so its Chromium goes with it whatever happens.
        let mut driver = Command::new(&tools.chromedriver)
            .arg("--port=0")
            .arg(format!("--log-path={}", log.display()))
            // Warnings only: at INFO it logs every script it runs, axe-core's 650 kB each time.
            .arg("--log-level=WARNING")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("{} does not start: {e}", tools.chromedriver.display()));
        let stdout = driver.stdout.take().expect("stdout piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.split_once("started successfully on port ") {
                    let port: String = rest.1.chars().take_while(char::is_ascii_digit).collect();
                    let _ = tx.send(port);
                }
            }
        });
        let port = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("chromedriver did not start; see {}", log.display()));

        let (width, height) = viewport.size();
        let args = vec![
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            format!("--user-data-dir={}", profile.path().display()),
            format!("--window-size={width},{height}"),
            "--lang=en-US".into(),
            "--no-first-run".into(),
            "--no-default-browser-check".into(),
            "--password-store=basic".into(),
            // Nothing but the loopback servers of the test: no background requests, and no
            // name resolves except localhost.
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-domain-reliability".into(),
            "--disable-sync".into(),
            "--no-pings".into(),
            "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1".into(),
        ];
        let capabilities = json!({
            "browserName": "chrome",
            // The console serves the server's own certificate, signed by its own CA.
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": tools.chromium,
                "args": args,
            },
        });
        let capabilities = match capabilities {
            Value::Object(map) => map,
            _ => unreachable!(),
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let url = format!("http://127.0.0.1:{port}");
        let client = runtime.block_on(async {
            let client = ClientBuilder::new(HttpConnector::new())
                .capabilities(capabilities)
                .connect(&url)
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "no Chromium session from chromedriver: {e}; see {}",
                        log.display()
                    )
                });
            client
                .update_timeouts(TimeoutConfiguration::new(
                    Some(Duration::from_secs(60)),
                    Some(Duration::from_secs(60)),
                    Some(Duration::ZERO),
                ))
                .await
                .expect("timeouts set");
            client
        });
        let axe_source = std::fs::read_to_string(&tools.axe_js)
            .unwrap_or_else(|e| panic!("{}: {e}", tools.axe_js.display()));
        let mut browser = Browser {
            runtime,
            client: Some(client),
            driver,
            _profile: profile,
            name: name.to_string(),
            viewport,
            recording: recording.clone(),
            axe_source,
        };
        browser.set_viewport(viewport);
        browser
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("session open")
    }

    fn block<T>(
        &self,
        what: &str,
        fut: impl std::future::Future<Output = Result<T, fantoccini::error::CmdError>>,
    ) -> T {
        self.runtime
            .block_on(fut)
            .unwrap_or_else(|e| self.fail(&format!("{what}: {e}")))
    }

    /// Panics with `message`, the page's URL and a screenshot of the moment.
    #[track_caller]
    pub fn fail(&self, message: &str) -> ! {
        let url = self.try_url().unwrap_or_else(|| "(unknown URL)".into());
        let shot = self
            .try_screenshot("failure")
            .map(|p| p.display().to_string())
            .unwrap_or_else(|e| format!("(no screenshot: {e})"));
        panic!(
            "[{} {}] {message}\n  page: {url}\n  screenshot: {shot}",
            self.name,
            self.viewport.name()
        );
    }

    fn try_url(&self) -> Option<String> {
        let client = self.client.as_ref()?;
        self.runtime
            .block_on(client.current_url())
            .ok()
            .map(|u| u.to_string())
    }

    /// Sets the window so that the page's viewport is exactly `viewport`'s size.
    pub fn set_viewport(&mut self, viewport: Viewport) {
        self.viewport = viewport;
        let (width, height) = viewport.size();
        self.set_inner_size(width, height);
    }

    /// Sizes the window so that the page's viewport is `width`×`height` CSS pixels.
    fn set_inner_size(&self, width: u32, height: u32) {
        self.block(
            "set window size",
            self.client().set_window_size(width, height),
        );
        // The window may be larger than the page it shows: grow it by the difference.
        let (w, h) = self.inner_size();
        let (w, h) = (w as u32, h as u32);
        if (w, h) != (width, height) && w > 0 && h > 0 {
            let (ww, wh) = (
                width + width.saturating_sub(w),
                height + height.saturating_sub(h),
            );
            self.block("set window size", self.client().set_window_size(ww, wh));
        }
    }

    /// A screenshot of the whole page (up to 4000 pixels high) at the viewport's width,
    /// named like [`Browser::screenshot`]; the viewport is restored after.
    pub fn full_page_screenshot(&self, step: &str) -> PathBuf {
        let (width, height) = self.viewport.size();
        let full = self
            .execute(
                "return Math.ceil(document.documentElement.scrollHeight);",
                vec![],
            )
            .as_u64()
            .unwrap_or(u64::from(height))
            .clamp(u64::from(height), 4000) as u32;
        self.set_inner_size(width, full);
        self.scroll_to(None);
        let shot = self.screenshot(step);
        self.set_inner_size(width, height);
        shot
    }

    /// The page's viewport size in CSS pixels.
    pub fn inner_size(&self) -> (u64, u64) {
        let inner = self.execute("return [window.innerWidth, window.innerHeight];", vec![]);
        (
            inner[0].as_u64().unwrap_or(0),
            inner[1].as_u64().unwrap_or(0),
        )
    }

    /// Scrolls the element `css` to the top of the viewport, or the page to its top (None).
    pub fn scroll_to(&self, css: Option<&str>) {
        self.execute(
            "const e = arguments[0] && document.querySelector(arguments[0]);\
             if (e) { e.scrollIntoView({ block: 'start' }); } else { window.scrollTo(0, 0); }",
            vec![json!(css)],
        );
    }

    /// Navigates to `url` and waits for it to load.
    pub fn open(&self, url: &str) {
        self.block(&format!("open {url}"), self.client().goto(url));
    }

    /// Reloads the page.
    pub fn reload(&self) {
        self.block("reload", self.client().refresh());
    }

    /// The page's URL now.
    pub fn url(&self) -> String {
        self.block("current URL", self.client().current_url())
            .to_string()
    }

    /// The page's path (and query) now, e.g. `/accounts/…`.
    pub fn path(&self) -> String {
        let url = self.block("current URL", self.client().current_url());
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        }
    }

    /// The page's title.
    pub fn title(&self) -> String {
        self.block("title", self.client().title())
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns its result.
    pub fn execute(&self, script: &str, args: Vec<Value>) -> Value {
        self.block("execute script", self.client().execute(script, args))
    }

    /// Runs `script` whose last argument is the callback that ends it.
    pub fn execute_async(&self, script: &str, args: Vec<Value>) -> Value {
        self.block(
            "execute async script",
            self.client().execute_async(script, args),
        )
    }

    /// Tags the element a finder script returns with a unique attribute and answers a CSS
    /// selector for it, or None.
    fn locate(&self, finder: &str, args: Vec<Value>) -> Option<String> {
        let script = format!(
            "const find = () => {{ {finder} }};\n\
             const el = find();\n\
             if (!el) return null;\n\
             window.__conteraTag = (window.__conteraTag || 0) + 1;\n\
             el.setAttribute('data-contera-test', String(window.__conteraTag));\n\
             return '[data-contera-test=\"' + window.__conteraTag + '\"]';"
        );
        self.execute(&script, args).as_str().map(str::to_string)
    }

    /// The form control for `field`: `#id` or `id` of an element, a CSS selector, or its
    /// label's text (exact, then the label's beginning), or its `aria-label`.
    fn field(&self, field: &str) -> Option<String> {
        self.locate(
            r#"
            const want = arguments[0];
            const norm = (s) => (s || '').replace(/\s+/g, ' ').trim();
            const id = want.startsWith('#') ? want.slice(1) : want;
            const byId = document.getElementById(id);
            if (byId) return byId;
            if (/[\[\].#:=]/.test(want)) {
                try {
                    const byCss = document.querySelector(want);
                    if (byCss) return byCss;
                } catch (e) { /* not a selector */ }
            }
            const labels = Array.from(document.querySelectorAll('label'));
            const exact = labels.find((l) => norm(l.textContent) === norm(want));
            if (exact && exact.control) return exact.control;
            const starts = labels.find((l) => norm(l.textContent).startsWith(norm(want)));
            if (starts && starts.control) return starts.control;
            return document.querySelector('[aria-label="' + CSS.escape(want) + '"]');
            "#,
            vec![json!(field)],
        )
    }

    fn element(&self, css: &str) -> fantoccini::elements::Element {
        self.block(
            &format!("find {css}"),
            self.client().find(Locator::Css(css)),
        )
    }

    /// Types `value` into the field found by `#id`, id or label text (cleared first).
    pub fn fill(&self, field: &str, value: &str) {
        let css = self
            .field(field)
            .unwrap_or_else(|| self.fail(&format!("no field {field:?} to fill")));
        let el = self.element(&css);
        self.block(&format!("clear {field}"), el.clear());
        self.block(&format!("type into {field}"), el.send_keys(value));
    }

    /// Picks the option of a `<select>` (found like [`Browser::fill`]) whose value, or else
    /// whose text, is `option`.
    pub fn select(&self, field: &str, option: &str) {
        let css = self
            .field(field)
            .unwrap_or_else(|| self.fail(&format!("no select {field:?}")));
        let el = self.element(&css);
        let by_value = self.runtime.block_on(el.select_by_value(option));
        if by_value.is_err() {
            self.block(
                &format!("select {option:?} in {field}"),
                el.select_by_label(option),
            );
        }
    }

    /// The selected option's value of a `<select>`.
    pub fn selected(&self, field: &str) -> String {
        let css = self
            .field(field)
            .unwrap_or_else(|| self.fail(&format!("no select {field:?}")));
        self.execute(
            "return document.querySelector(arguments[0]).value;",
            vec![json!(css)],
        )
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    /// The text of the selected option of a `<select>`.
    pub fn selected_text(&self, field: &str) -> String {
        let css = self
            .field(field)
            .unwrap_or_else(|| self.fail(&format!("no select {field:?}")));
        self.execute(
            "const s = document.querySelector(arguments[0]);\
             const o = s.options[s.selectedIndex];\
             return o ? o.textContent.replace(/\\s+/g, ' ').trim() : null;",
            vec![json!(css)],
        )
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    /// Ticks a checkbox found like [`Browser::fill`] (clicking it, as a person does).
    pub fn check(&self, field: &str) {
        self.set_checked(field, true);
    }

    /// Clears a checkbox found like [`Browser::fill`].
    pub fn uncheck(&self, field: &str) {
        self.set_checked(field, false);
    }

    fn set_checked(&self, field: &str, on: bool) {
        let css = self
            .field(field)
            .unwrap_or_else(|| self.fail(&format!("no checkbox {field:?}")));
        let el = self.element(&css);
        if self.block("is selected", el.is_selected()) != on {
            self.block(&format!("click {field}"), el.click());
        }
        if self.block("is selected", el.is_selected()) != on {
            self.fail(&format!("checkbox {field:?} did not change"));
        }
    }

    /// Whether a checkbox found like [`Browser::fill`] is ticked.
    pub fn is_checked(&self, field: &str) -> bool {
        let css = self
            .field(field)
            .unwrap_or_else(|| self.fail(&format!("no checkbox {field:?}")));
        let el = self.element(&css);
        self.block("is selected", el.is_selected())
    }

    /// Grants the page's origin a permission (e.g. `clipboard-read`) through WebDriver's
    /// permissions extension, as a person clicking "Allow" would.
    pub fn grant_permission(&self, name: &str) {
        self.block(
            &format!("grant {name}"),
            self.client().issue_cmd(SetPermission {
                name: name.to_string(),
            }),
        );
    }

    /// What the clipboard holds, read by the page (needs `clipboard-read`, see
    /// [`Browser::grant_permission`]); Err with the page's error.
    pub fn clipboard_text(&self) -> Result<String, String> {
        let answer = self.execute_async(
            r#"
            const done = arguments[arguments.length - 1];
            navigator.clipboard.readText()
              .then((t) => done({ ok: t }))
              .catch((e) => done({ err: String(e) }));
            "#,
            vec![],
        );
        match (answer["ok"].as_str(), answer["err"].as_str()) {
            (Some(text), _) => Ok(text.to_string()),
            (_, Some(err)) => Err(err.to_string()),
            _ => Err(format!("unexpected answer {answer}")),
        }
    }

    /// Forgets every cookie of the current site (a new visitor in the same profile).
    pub fn delete_cookies(&self) {
        self.block("delete cookies", self.client().delete_all_cookies());
    }

    /// Clicks the visible button (`<button>`, `<input type=submit|button>`) whose text is
    /// `text`, within the element `scope` (a CSS selector) or anywhere.
    pub fn click_button_in(&self, scope: Option<&str>, text: &str) {
        let css = self
            .locate(
                r#"
                const [scopeCss, want] = arguments;
                const norm = (s) => (s || '').replace(/\s+/g, ' ').trim();
                const root = scopeCss ? document.querySelector(scopeCss) : document;
                if (!root) return null;
                const visible = (e) => e.getClientRects().length > 0;
                const all = Array.from(root.querySelectorAll(
                    'button, input[type=submit], input[type=button], [role=button]'));
                const label = (e) => norm(e.tagName === 'INPUT' ? e.value : e.textContent)
                    || norm(e.getAttribute('aria-label'));
                return all.find((e) => visible(e) && label(e) === norm(want))
                    || all.find((e) => label(e) === norm(want));
                "#,
                vec![json!(scope), json!(text)],
            )
            .unwrap_or_else(|| {
                self.fail(&format!(
                    "no button {text:?}{}",
                    scope.map(|s| format!(" in {s}")).unwrap_or_default()
                ))
            });
        let el = self.element(&css);
        self.block(&format!("click {text:?}"), el.click());
    }

    /// Clicks the visible button whose text is `text`.
    pub fn click_button(&self, text: &str) {
        self.click_button_in(None, text);
    }

    /// Clicks the link whose text is `text` (or starts with it).
    pub fn click_link(&self, text: &str) {
        let css = self
            .link(text)
            .unwrap_or_else(|| self.fail(&format!("no link {text:?}")));
        let el = self.element(&css);
        self.block(&format!("click link {text:?}"), el.click());
    }

    fn link(&self, text: &str) -> Option<String> {
        self.locate(
            r#"
            const want = arguments[0];
            const norm = (s) => (s || '').replace(/\s+/g, ' ').trim();
            const all = Array.from(document.querySelectorAll('a[href]'));
            const visible = (e) => e.getClientRects().length > 0;
            return all.find((a) => visible(a) && norm(a.textContent) === norm(want))
                || all.find((a) => norm(a.textContent) === norm(want))
                || all.find((a) => visible(a) && norm(a.textContent).startsWith(norm(want)));
            "#,
            vec![json!(text)],
        )
    }

    /// The `href` of the link whose text is `text` (resolved against the page).
    pub fn link_href(&self, text: &str) -> Option<String> {
        let css = self.link(text)?;
        self.execute(
            "return document.querySelector(arguments[0]).href;",
            vec![json!(css)],
        )
        .as_str()
        .map(str::to_string)
    }

    /// Clicks the element `css`.
    pub fn click(&self, css: &str) {
        let el = self.element(css);
        self.block(&format!("click {css}"), el.click());
    }

    /// Whether an element matches `css` now.
    pub fn exists(&self, css: &str) -> bool {
        self.count(css) > 0
    }

    /// How many elements match `css` now.
    pub fn count(&self, css: &str) -> usize {
        self.execute(
            "return document.querySelectorAll(arguments[0]).length;",
            vec![json!(css)],
        )
        .as_u64()
        .unwrap_or(0) as usize
    }

    /// The text of the element `css` as the page shows it (rendered text, whitespace
    /// collapsed): what a person would read or select, whatever the clipboard holds.
    pub fn text(&self, css: &str) -> String {
        let el = self.element(css);
        let text = self.block(&format!("text of {css}"), el.text());
        text.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    /// The texts of every element matching `css`.
    pub fn texts(&self, css: &str) -> Vec<String> {
        self.execute(
            "return Array.from(document.querySelectorAll(arguments[0]))\
               .map((e) => (e.innerText || e.textContent || '').replace(/\\s+/g, ' ').trim());",
            vec![json!(css)],
        )
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| v.as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
    }

    /// The `value`s of every element matching `css` (e.g. the boxes of a fieldset).
    pub fn values(&self, css: &str) -> Vec<String> {
        self.execute(
            "return Array.from(document.querySelectorAll(arguments[0])).map((e) => e.value);",
            vec![json!(css)],
        )
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
    }

    /// An attribute of the element `css`.
    pub fn attr(&self, css: &str, name: &str) -> Option<String> {
        let el = self.element(css);
        self.block(&format!("attribute {name} of {css}"), el.attr(name))
    }

    /// The page's whole visible text.
    pub fn body_text(&self) -> String {
        self.execute(
            "return document.body ? document.body.innerText : '';",
            vec![],
        )
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    /// The page's HTML as it is now.
    pub fn source(&self) -> String {
        self.block("page source", self.client().source())
    }

    /// Polls `check` every 100 ms until it answers Some, or fails (URL, screenshot) after
    /// `limit`.
    pub fn wait_until<T>(
        &self,
        limit: Duration,
        what: &str,
        mut check: impl FnMut(&Browser) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(value) = check(self) {
                return value;
            }
            if Instant::now() > deadline {
                self.fail(&format!("timed out after {limit:?} waiting for {what}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for `text` anywhere in the page's visible text.
    pub fn wait_for_text(&self, text: &str) {
        self.wait_until(STEP_TIMEOUT, &format!("the text {text:?}"), |b| {
            b.body_text().contains(text).then_some(())
        });
    }

    /// Waits until the element `css` shows `want` (its text as [`Browser::text`] reads it).
    pub fn assert_text(&self, css: &str, want: &str) {
        let mut last = None;
        let found = self.wait_until_or(STEP_TIMEOUT, |b| {
            let text = b.exists(css).then(|| b.text(css));
            let matched = text.as_deref() == Some(want);
            last = text;
            matched.then_some(())
        });
        if found.is_none() {
            self.fail(&format!("{css} shows {last:?}, not {want:?}"));
        }
    }

    /// Fails the test (URL and screenshot in the message) unless `condition` holds.
    #[track_caller]
    pub fn ensure(&self, condition: bool, message: impl FnOnce() -> String) {
        if !condition {
            self.fail(&message());
        }
    }

    /// Like [`Browser::wait_until`], but None after `limit` instead of failing.
    pub fn wait_until_or<T>(
        &self,
        limit: Duration,
        mut check: impl FnMut(&Browser) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(value) = check(self) {
                return Some(value);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for an element matching `css`.
    pub fn wait_for_element(&self, css: &str) {
        self.wait_until(STEP_TIMEOUT, &format!("an element {css}"), |b| {
            b.exists(css).then_some(())
        });
    }

    /// Waits until the page's path (without the query) satisfies `pred`; returns it.
    pub fn wait_for_path(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        self.wait_until(STEP_TIMEOUT, what, |b| {
            let url = b.runtime.block_on(b.client().current_url()).ok()?;
            let path = url.path().to_string();
            pred(&path).then_some(path)
        })
    }

    /// A screenshot of the viewport as `NN-step-viewport.png` in the test's directory.
    pub fn screenshot(&self, step: &str) -> PathBuf {
        self.try_screenshot(step)
            .unwrap_or_else(|e| panic!("screenshot {step}: {e}"))
    }

    fn try_screenshot(&self, step: &str) -> Result<PathBuf, String> {
        let client = self.client.as_ref().ok_or("no session")?;
        let png = self
            .runtime
            .block_on(client.screenshot())
            .map_err(|e| e.to_string())?;
        let path = self.recording.next_path(step, self.viewport);
        std::fs::write(&path, png).map_err(|e| e.to_string())?;
        Ok(path)
    }

    /// Runs axe-core on the page as it is: injects `CONTERA_AXE_JS` through WebDriver (not
    /// subject to the page's CSP, which forbids inline scripts), then `axe.run()`. Records
    /// the result under `page` for [`Recording::axe_summary`] and returns every violation.
    pub fn axe_check(&self, page: &str) -> Vec<Violation> {
        let loaded = self.execute(
            "return typeof window.axe === 'object' && typeof window.axe.run === 'function';",
            vec![],
        );
        if loaded != Value::Bool(true) {
            // The UMD bundle sets window.axe when run with `this` as the window.
            self.execute(
                &format!(
                    "(function () {{\n{}\n}}).call(window);\nreturn typeof window.axe;",
                    self.axe_source
                ),
                vec![],
            );
        }
        let answer = self.execute_async(
            r#"
            const done = arguments[arguments.length - 1];
            window.axe.run(document, { resultTypes: ['violations'] })
              .then((r) => done(JSON.stringify(r.violations)))
              .catch((e) => done('ERROR ' + String(e)));
            "#,
            vec![],
        );
        let text = answer.as_str().unwrap_or_default();
        if let Some(error) = text.strip_prefix("ERROR ") {
            self.fail(&format!("axe.run failed on {page}: {error}"));
        }
        let raw: Value = serde_json::from_str(text)
            .unwrap_or_else(|e| self.fail(&format!("axe answered no JSON ({e}): {text}")));
        let violations: Vec<Violation> = raw
            .as_array()
            .map(|all| {
                all.iter()
                    .map(|v| Violation {
                        impact: v["impact"].as_str().unwrap_or("unknown").to_string(),
                        id: v["id"].as_str().unwrap_or_default().to_string(),
                        help: v["help"].as_str().unwrap_or_default().to_string(),
                        help_url: v["helpUrl"].as_str().unwrap_or_default().to_string(),
                        nodes: v["nodes"]
                            .as_array()
                            .map(|nodes| {
                                nodes
                                    .iter()
                                    .map(|n| {
                                        format!(
                                            "{} {}",
                                            n["target"],
                                            n["html"].as_str().unwrap_or_default()
                                        )
                                    })
                                    .collect()
                            })
                            .unwrap_or_default(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let label = format!("{page} ({}, {})", self.viewport.name(), self.path());
        self.recording
            .checks
            .lock()
            .unwrap()
            .push((label, violations.clone()));
        violations
    }

    /// [`Browser::axe_check`], failing the test on any serious or critical violation (all of
    /// them printed) and printing the lesser ones.
    pub fn assert_accessible(&self, page: &str) {
        let violations = self.axe_check(page);
        let failing: Vec<&Violation> = violations.iter().filter(|v| v.fails()).collect();
        if !violations.is_empty() {
            let all: String = violations.iter().map(|v| v.to_string()).collect();
            eprintln!(
                "axe on {page} ({}): {} violation(s)\n{all}",
                self.viewport.name(),
                violations.len()
            );
        }
        if !failing.is_empty() {
            let listed: String = failing.iter().map(|v| v.to_string()).collect();
            self.fail(&format!(
                "axe-core: {} serious or critical violation(s) on {page}:\n{listed}",
                failing.len()
            ));
        }
    }

    /// The session's cookies as (name, value) pairs.
    pub fn cookies(&self) -> Vec<(String, String)> {
        self.block("cookies", self.client().get_all_cookies())
            .into_iter()
            .map(|c| (c.name().to_string(), c.value().to_string()))
            .collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let _ = self.runtime.block_on(async {
                tokio::time::timeout(Duration::from_secs(10), client.close()).await
            });
        }
        // chromedriver leads its own process group, which holds the Chromium it started.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// WebDriver's `Set Permission` (W3C Permissions, section "Automation"), which chromedriver
/// implements.
#[derive(Debug)]
struct SetPermission {
    name: String,
}

impl fantoccini::wd::WebDriverCompatibleCommand for SetPermission {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!(
            "session/{}/permissions",
            session.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _url: &url::Url) -> (http::Method, Option<String>) {
        let body = json!({ "descriptor": { "name": self.name }, "state": "granted" });
        (http::Method::POST, Some(body.to_string()))
    }
}

/// A provisioning server with its web console on a listener of its own.
pub struct Console {
    pub server: Server,
    /// `https://localhost:PORT`, the console's origin.
    pub url: String,
    pub port: u16,
}

impl Console {
    /// Starts a server (heartbeat every `heartbeat_interval_secs`) with its console, and
    /// waits until the console answers `GET /login`.
    pub fn start(heartbeat_interval_secs: u32) -> Console {
        let server = Server::start_with(heartbeat_interval_secs, &[]);
        // The harness starts every server with `--console-listen 127.0.0.1:0` and reads the
        // console's port from its `contera-provisioning console on` line.
        let port = server.console_port;
        assert!(
            port != 0,
            "the server printed no `contera-provisioning console on https://ADDR` line; log:\n{}",
            server.log_text()
        );
        let console = Console {
            url: server.console_url(),
            port,
            server,
        };
        let url = format!("{}/login", console.url);
        crate::wait_for(Duration::from_secs(30), "GET /login on the console", || {
            let out = Command::new("curl")
                .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
                .arg(console.server.ca_file())
                .arg(&url)
                .output()
                .ok()?;
            (String::from_utf8_lossy(&out.stdout) == "200").then_some(())
        });
        console
    }

    /// `path` on the console.
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// A link (from a mail or the CLI) with its origin replaced by the console's, keeping
    /// its path, query and fragment.
    pub fn rebase(&self, link: &str) -> String {
        let after_scheme = link.split_once("://").map(|(_, r)| r).unwrap_or(link);
        let path = after_scheme
            .find('/')
            .map(|i| &after_scheme[i..])
            .unwrap_or("/");
        self.at(path)
    }
}

/// Fails with the whole summary when any check found a serious or critical violation.
pub fn assert_no_failing_violations(recording: &Recording) {
    let failing: Vec<String> = recording
        .axe_checks()
        .iter()
        .flat_map(|(page, vs)| {
            vs.iter()
                .filter(|v| v.fails())
                .map(move |v| format!("{page}: {v}"))
        })
        .collect();
    assert!(
        failing.is_empty(),
        "serious or critical accessibility violations:\n{}",
        failing.concat()
    );
}

/// Copies `from` to `to` (creating `to`'s directory).
pub fn keep_screenshot(from: &Path, to: &Path) {
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir).expect("screenshot destination");
    }
    std::fs::copy(from, to)
        .unwrap_or_else(|e| panic!("copy {} to {}: {e}", from.display(), to.display()));
}
