//! Harness for end-to-end tests: starts the real `contera-provisioning` and
//! `contera-agent` binaries on loopback, on port 0, in temp dirs, waits for them on real
//! readiness signals (the server's listening line, the agent's `READY=1` over a
//! `NOTIFY_SOCKET`), and kills every child on drop.

pub mod admin;
pub mod browser;
pub mod postgres;
pub mod tls_client;

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

/// Path of a workspace binary next to the test executable (`target/<profile>/NAME`).
/// `cargo test --workspace` builds them, because the binary crates have integration tests.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo test --workspace --no-run` (the agent needs its `test-hooks` feature, which the workspace build turns on)",
        path.display()
    );
    path
}

/// Polls `check` every 50 ms until it returns `Some`, or panics with `what` after `limit`.
pub fn wait_for<T>(limit: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return value;
        }
        if Instant::now() > deadline {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends SIGTERM (a clean stop) to a child.
pub fn terminate(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A running provisioning server in its own data directory.
pub struct Server {
    pub dir: TempDir,
    pub port: u16,
    /// The web console's port (its own listener); kept across restarts.
    pub console_port: u16,
    /// The Prometheus metrics port (plain HTTP, its own listener); kept across restarts.
    pub metrics_port: u16,
    /// Global arguments of admin commands (`--config` of a server on a shared database).
    admin_args: Vec<String>,
    /// Network namespace and address it runs in; None: the host's loopback.
    pub netns: Option<(String, String)>,
    pub heartbeat_interval_secs: u32,
    /// The extra arguments it was started with, given again on a restart.
    extra_args: Vec<String>,
    child: Option<Child>,
    pub log: PathBuf,
    /// A command the server runs under (e.g. `prlimit --nofile=1024:`), kept for restarts.
    wrapper: Vec<String>,
    /// Arguments before `serve` (`--config FILE`), kept for restarts.
    args: Vec<String>,
}

impl Server {
    /// Starts a server with a 1-second heartbeat interval.
    pub fn start() -> Server {
        Self::start_with(1, &[])
    }

    pub fn start_with(heartbeat_interval_secs: u32, extra_args: &[&str]) -> Server {
        let mut server = Server::unstarted(heartbeat_interval_secs);
        server.extra_args = extra_args.iter().map(|a| a.to_string()).collect();
        server.spawn(0);
        server
    }

    /// Starts a server with `config` as its configuration file (written into its data
    /// directory), running under `wrapper` (a command such as `prlimit --nofile=1024:`,
    /// which runs the server in its place), if not empty.
    pub fn start_configured(
        heartbeat_interval_secs: u32,
        config: &str,
        wrapper: &[&str],
    ) -> Server {
        let mut server = Server::unstarted(heartbeat_interval_secs);
        let config_path = server.dir.path().join("server.toml");
        std::fs::write(&config_path, config).expect("config file");
        server.args = vec!["--config".to_string(), config_path.display().to_string()];
        // The CLI reads the configuration only for its database: other settings there
        // may lean on flags only `serve` gets (e.g. --heartbeat-interval).
        if config.contains("database_url") {
            server.admin_args = server.args.clone();
        }
        server.wrapper = wrapper.iter().map(|a| a.to_string()).collect();
        server.spawn(0);
        server
    }

    /// Starts another replica of `first`: its own data directory and ports, the same
    /// TLS and device-CA material and code key (copied from `first`'s data directory, as
    /// an operator copies them to a new host), and `config` (which names the shared
    /// database) as its configuration file.
    pub fn start_replica_of(first: &Server, config: &str) -> Server {
        let mut server = Server::unstarted(first.heartbeat_interval_secs);
        for shared in ["tls", "secrets"] {
            let status = Command::new("cp")
                .arg("-a")
                .arg(first.dir.path().join(shared))
                .arg(server.dir.path())
                .status()
                .expect("cp runs");
            assert!(status.success(), "copying {shared}/ from the first replica");
        }
        let config_path = server.dir.path().join("server.toml");
        std::fs::write(&config_path, config).expect("config file");
        server.args = vec!["--config".to_string(), config_path.display().to_string()];
        server.admin_args = server.args.clone();
        server.spawn(0);
        server
    }

    /// Starts a server inside network namespace `netns`, listening on `ip`.
    pub fn start_in(netns: &str, ip: &str, extra_args: &[&str]) -> Server {
        let mut server = Server::unstarted(1);
        server.netns = Some((netns.to_string(), ip.to_string()));
        server.extra_args = extra_args.iter().map(|a| a.to_string()).collect();
        server.spawn(0);
        server
    }

    /// A server in a fresh temp data directory, not running yet.
    fn unstarted(heartbeat_interval_secs: u32) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("server.log");
        Server {
            dir,
            port: 0,
            console_port: 0,
            metrics_port: 0,
            admin_args: Vec::new(),
            netns: None,
            heartbeat_interval_secs,
            extra_args: Vec::new(),
            child: None,
            log,
            wrapper: Vec::new(),
            args: Vec::new(),
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Its address on the host's loopback.
    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// A command for one of our binaries, inside the server's namespace if it has one.
    fn command(&self, program: &Path) -> Command {
        match &self.netns {
            None if !self.wrapper.is_empty() && program.ends_with("contera-provisioning") => {
                let mut cmd = Command::new(&self.wrapper[0]);
                cmd.args(&self.wrapper[1..]).arg(program);
                cmd
            }
            None => Command::new(program),
            Some((ns, _)) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", ns]).arg(program);
                cmd
            }
        }
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn url(&self) -> String {
        match &self.netns {
            None => format!("https://localhost:{}", self.port),
            Some((_, ip)) => format!("https://{ip}:{}", self.port),
        }
    }

    /// The web console's base URL (its own listener, the server's CA).
    pub fn console_url(&self) -> String {
        match &self.netns {
            None => format!("https://localhost:{}", self.console_port),
            Some((_, ip)) => format!("https://{ip}:{}", self.console_port),
        }
    }

    /// The Prometheus metrics URL (plain HTTP, its own listener).
    pub fn metrics_url(&self) -> String {
        let ip = self
            .netns
            .as_ref()
            .map_or("127.0.0.1", |(_, ip)| ip.as_str());
        format!("http://{ip}:{}/metrics", self.metrics_port)
    }

    /// Scrapes `/metrics` and parses it with the Prometheus project's own OpenMetrics
    /// parser (Debian's python3-prometheus-client), an implementation independent of the
    /// server's: sample name with sorted labels (`name{a="x",b="y"}`) → value. Panics if
    /// the text does not parse.
    pub fn metrics(&self) -> std::collections::BTreeMap<String, f64> {
        let out = Command::new("curl")
            .args(["-sS", "-f", "-D", "/dev/stderr"])
            .arg(self.metrics_url())
            .output()
            .expect("curl runs");
        assert!(out.status.success(), "scrape failed: {}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains("application/openmetrics-text"),
            "content type: {}",
            text(&out.stderr)
        );
        parse_openmetrics(&text(&out.stdout))
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("tls/ca.pem")
    }

    fn spawn(&mut self, port: u16) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("server log");
        let listen_ip = self
            .netns
            .as_ref()
            .map(|(_, ip)| ip.clone())
            .unwrap_or_else(|| "127.0.0.1".into());
        let mut child = self
            .command(&bin("contera-provisioning"))
            .args(&self.args)
            .arg("serve")
            .arg("--data-dir")
            .arg(self.dir.path())
            .arg("--listen")
            .arg(format!("{listen_ip}:{port}"))
            .arg("--heartbeat-interval")
            .arg(self.heartbeat_interval_secs.to_string())
            .arg("--console-listen")
            .arg(format!("{listen_ip}:{}", self.console_port))
            .arg("--metrics-listen")
            .arg(format!("{listen_ip}:{}", self.metrics_port))
            .args(&self.extra_args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("server starts");
        let stdout = child.stdout.take().expect("stdout piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let (mut console, mut metrics) = (None, None);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("contera-provisioning console on https://") {
                    console = Some(addr.to_string());
                }
                if let Some(addr) = line.strip_prefix("contera-provisioning metrics on http://") {
                    metrics = addr.strip_suffix("/metrics").map(str::to_string);
                }
                if let Some(addr) = line.strip_prefix("contera-provisioning listening on https://")
                {
                    let _ = tx.send((addr.to_string(), console.clone(), metrics.clone()));
                }
            }
        });
        let (addr, console, metrics) = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("server did not start; log:\n{}", self.log_text()));
        self.port = addr.rsplit(':').next().unwrap().parse().unwrap();
        if let Some(console) = console {
            self.console_port = console.rsplit(':').next().unwrap().parse().unwrap();
        }
        if let Some(metrics) = metrics {
            self.metrics_port = metrics.rsplit(':').next().unwrap().parse().unwrap();
        }
        self.child = Some(child);
        // The line is printed just before the listener serves; /healthz proves it does.
        let url = format!("{}/healthz", self.url());
        let ca = self.ca_file();
        wait_for(Duration::from_secs(30), "GET /healthz", || {
            let out = self
                .command(Path::new("curl"))
                .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
                .arg(&ca)
                .arg(&url)
                .output()
                .ok()?;
            (text(&out.stdout) == "200").then_some(())
        });
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills the server abruptly (no clean shutdown).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGKILL without waiting for the process, so it can be called while other
    /// threads still use the server (e.g. mid-burst of requests). `kill` or `restart`
    /// reaps it later.
    pub fn sigkill(&self) {
        if let Some(child) = &self.child {
            let status = Command::new("kill")
                .args(["-KILL", &child.id().to_string()])
                .status()
                .expect("kill runs");
            assert!(status.success());
        }
    }

    /// Stops it with SIGTERM and waits.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&child);
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and data directory, with the same extra arguments.
    pub fn restart(&mut self) {
        self.kill();
        let port = self.port;
        self.spawn(port);
        assert_eq!(self.port, port);
    }

    /// Runs an admin command against the data directory (and, for a server on a database
    /// of its configuration, that configuration file).
    pub fn admin(&self, args: &[&str]) -> Output {
        Command::new(bin("contera-provisioning"))
            .args(&self.admin_args)
            .arg("--data-dir")
            .arg(self.dir.path())
            .args(args)
            .output()
            .expect("admin command runs")
    }

    /// Runs an admin command with `--json` that must succeed, and parses its output.
    pub fn admin_json(&self, args: &[&str]) -> Value {
        let mut all: Vec<&str> = args.to_vec();
        all.push("--json");
        let out = self.admin(&all);
        assert!(
            out.status.success(),
            "{args:?} failed: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", text(&out.stdout)))
    }

    /// Creates an account; returns (id, registration code).
    pub fn create_account(&self, name: &str, kind: &str, parent: Option<&str>) -> (String, String) {
        let mut args = vec!["accounts", "create", "--name", name, "--kind", kind];
        if let Some(parent) = parent {
            args.extend(["--parent", parent]);
        }
        let v = self.admin_json(&args);
        (
            v["id"].as_str().unwrap().to_string(),
            v["registration_code"].as_str().unwrap().to_string(),
        )
    }

    pub fn recorders(&self, account: Option<&str>) -> Vec<Value> {
        let mut args = vec!["recorders", "list"];
        if let Some(account) = account {
            args.extend(["--account", account]);
        }
        self.admin_json(&args).as_array().unwrap().clone()
    }

    pub fn recorder(&self, id: &str) -> Value {
        self.recorders(None)
            .into_iter()
            .find(|r| r["id"] == id)
            .unwrap_or_else(|| panic!("recorder {id} not listed"))
    }

    pub fn audit_actions(&self) -> Vec<String> {
        self.admin_json(&["audit", "--limit", "1000"])
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["action"].as_str().unwrap().to_string())
            .collect()
    }

    /// How long until a stopped recorder must show offline: three intervals plus a flush.
    pub fn offline_grace(&self) -> Duration {
        Duration::from_secs(3 * u64::from(self.heartbeat_interval_secs) + 10)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running agent daemon with its own config, state dir and control socket.
pub struct Agent {
    pub dir: TempDir,
    pub config: PathBuf,
    child: Option<Child>,
    /// Every datagram the agent sent to its NOTIFY_SOCKET, in order. A thread keeps
    /// reading, as systemd does: a full socket buffer would block the agent.
    pub notifications: Arc<Mutex<Vec<(Instant, String)>>>,
    pub log: PathBuf,
    /// Extra environment for the daemon (e.g. `WATCHDOG_USEC`).
    pub env: Vec<(String, String)>,
    /// Network namespace the daemon runs in; None: the host's.
    pub netns: Option<String>,
}

impl Agent {
    /// Writes a config for `server` with the given serial (and 2-second backoff cap).
    pub fn configure(server: &Server, serial: &str) -> Agent {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nurl = \"{}\"\nca_file = \"{}\"\n\n[agent]\nstate_dir = \"{}\"\ncontrol_socket = \"{}\"\nmax_backoff_secs = 2\nlog_level = \"debug\"\n\n[recorder]\nserial = \"{serial}\"\nmodel = \"NV-16\"\n",
                server.url(),
                server.ca_file().display(),
                dir.path().join("state").display(),
                dir.path().join("run/control.sock").display(),
            ),
        )
        .expect("write agent.toml");
        let log = dir.path().join("agent.log");
        Agent {
            dir,
            config,
            child: None,
            notifications: Arc::default(),
            log,
            env: Vec::new(),
            netns: None,
        }
    }

    /// Configures and starts an agent; returns once it sent `READY=1`.
    pub fn start(server: &Server, serial: &str) -> Agent {
        let mut agent = Self::configure(server, serial);
        agent.run();
        agent
    }

    /// Adds a line to the config's `[agent]` section (before the daemon starts).
    pub fn add_agent_setting(&self, line: &str) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        let text = text.replacen("[agent]\n", &format!("[agent]\n{line}\n"), 1);
        std::fs::write(&self.config, text).unwrap();
    }

    /// Appends TOML (e.g. an `[enrollment]` section) to the config.
    pub fn append_config(&self, toml: &str) {
        let mut text = std::fs::read_to_string(&self.config).unwrap();
        text.push('\n');
        text.push_str(toml);
        std::fs::write(&self.config, text).unwrap();
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Starts the daemon and waits for `READY=1` on a notify socket.
    pub fn run(&mut self) {
        let notify_path = self.dir.path().join("notify.sock");
        let _ = std::fs::remove_file(&notify_path);
        // A restart must wait for its own READY=1, not the previous run's.
        self.notifications = Arc::default();
        let notify = UnixDatagram::bind(&notify_path).expect("bind notify socket");
        notify
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("agent log");
        let mut argv: Vec<std::ffi::OsString> = Vec::new();
        if let Some(ns) = &self.netns {
            argv.extend(["ip", "netns", "exec", ns.as_str()].map(Into::into));
        }
        argv.push(bin("contera-agent").into());
        let mut command = Command::new(&argv[0]);
        command.args(&argv[1..]);
        let child = command
            .arg("--config")
            .arg(&self.config)
            .arg("run")
            .env("NOTIFY_SOCKET", &notify_path)
            .env_remove("RUST_LOG")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .env_remove("JOURNAL_STREAM")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("agent starts");
        self.child = Some(child);
        let sink = self.notifications.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match notify.recv(&mut buf) {
                    Ok(n) => sink.lock().unwrap().push((Instant::now(), text(&buf[..n]))),
                    Err(e)
                        if e.kind() == std::io::ErrorKind::WouldBlock
                            || e.kind() == std::io::ErrorKind::TimedOut =>
                    {
                        // Stop once the test dropped the agent (the socket file is gone).
                        if !notify_path.exists() {
                            return;
                        }
                    }
                    Err(_) => return,
                }
            }
        });
        wait_for(Duration::from_secs(30), "agent READY=1", || {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("agent exited with {status}; log:\n{}", self.log_text());
            }
            self.notified("READY=1").then_some(())
        });
    }

    /// Whether any notification so far had this exact line.
    pub fn notified(&self, line: &str) -> bool {
        self.notifications
            .lock()
            .unwrap()
            .iter()
            .any(|(_, n)| n.lines().any(|l| l == line))
    }

    /// The latest `STATUS=` text the agent sent.
    pub fn last_status(&self) -> Option<String> {
        self.notifications
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find_map(|(_, n)| {
                n.lines()
                    .find_map(|l| l.strip_prefix("STATUS=").map(str::to_string))
            })
    }

    /// When each `WATCHDOG=1` arrived.
    pub fn watchdog_pings(&self) -> Vec<Instant> {
        self.notifications
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, n)| n.lines().any(|l| l == "WATCHDOG=1"))
            .map(|(t, _)| *t)
            .collect()
    }

    /// Sends one raw request line to the control socket and returns the answer line.
    pub fn control(&self, request: &str) -> String {
        use std::io::Write;
        let mut stream =
            std::os::unix::net::UnixStream::connect(self.dir.path().join("run/control.sock"))
                .expect("control socket");
        stream.write_all(format!("{request}\n").as_bytes()).unwrap();
        let mut answer = String::new();
        BufReader::new(stream).read_line(&mut answer).unwrap();
        answer
    }

    /// Sends a signal (e.g. `HUP`) to the daemon.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Waits for the daemon to exit by itself; returns its exit code.
    pub fn wait_exit(&mut self) -> Option<i32> {
        self.child.take()?.wait().ok()?.code()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(bin("contera-agent"))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .expect("agent CLI runs")
    }

    /// `enroll --code CODE --json`: Ok(parsed answer) on exit 0, Err((exit code, stdout+stderr)).
    pub fn enroll(&self, code: &str) -> Result<Value, (i32, String)> {
        let out = self.cli(&["enroll", "--code", code, "--json"]);
        if out.status.success() {
            Ok(serde_json::from_slice(&out.stdout).expect("enroll --json output"))
        } else {
            Err((
                out.status.code().unwrap_or(-1),
                format!("{}{}", text(&out.stdout), text(&out.stderr)),
            ))
        }
    }

    pub fn status(&self) -> Value {
        let out = self.cli(&["status", "--json"]);
        assert!(out.status.success(), "status failed: {}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("status --json output")
    }

    /// SIGKILL, as a crash or power cut would: no goodbye.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait; returns the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        terminate(&child);
        child.wait().ok()?.code()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `curl` as an independent HTTPS client: POSTs `body` to `path`, optionally with a client
/// certificate and key. Returns (HTTP status, body) or Err(curl's exit code, stderr) when
/// there was no HTTP answer (e.g. the TLS handshake was refused).
pub fn curl_post(
    server: &Server,
    path: &str,
    body: &[u8],
    client_cert: Option<(&Path, &Path)>,
) -> Result<(u16, String), (i32, String)> {
    let scratch = tempfile::tempdir().unwrap();
    let body_file = scratch.path().join("body");
    std::fs::write(&body_file, body).unwrap();
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "-w",
        "\n%{http_code}",
        "-H",
        "content-type: application/json",
        "--cacert",
    ])
    .arg(server.ca_file())
    .arg("--data-binary")
    .arg(format!("@{}", body_file.display()));
    if let Some((cert, key)) = client_cert {
        cmd.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    let out = cmd
        .arg(format!("{}{}", server.url(), path))
        .output()
        .expect("curl runs");
    if !out.status.success() {
        return Err((out.status.code().unwrap_or(-1), text(&out.stderr)));
    }
    let all = text(&out.stdout);
    let (body, status) = all.rsplit_once('\n').expect("status line");
    Ok((status.trim().parse().unwrap(), body.to_string()))
}

/// Makes a P-256 key and a CSR with `openssl req` in `dir`; returns (key path, CSR PEM).
pub fn openssl_key_and_csr(dir: &Path, name: &str) -> (PathBuf, String) {
    let key = dir.join(format!("{name}.key"));
    let csr = dir.join(format!("{name}.csr"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=anything",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&csr)
        .output()
        .expect("openssl runs");
    assert!(out.status.success(), "openssl req: {}", text(&out.stderr));
    (key, std::fs::read_to_string(&csr).unwrap())
}

/// A recorder enrolled by standard tools: a key and CSR from `openssl req` in `dir`, posted
/// with curl. Panics unless the server answers 200.
pub struct CurlRecorder {
    pub recorder_id: String,
    /// The client certificate (PEM) the server issued.
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn enroll_with_curl(server: &Server, code: &str, serial: &str, dir: &Path) -> CurlRecorder {
    let (key, csr) = openssl_key_and_csr(dir, serial);
    let (status, body) = curl_post(
        server,
        "/api/v1/enroll",
        &enroll_body(code, &csr, serial),
        None,
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let enrolled: Value = serde_json::from_str(&body).unwrap();
    let cert = dir.join(format!("{serial}.pem"));
    std::fs::write(&cert, enrolled["certificate_pem"].as_str().unwrap()).unwrap();
    CurlRecorder {
        recorder_id: enrolled["recorder_id"].as_str().unwrap().to_string(),
        cert,
        key,
    }
}

/// An enrollment request body as JSON.
pub fn enroll_body(code: &str, csr_pem: &str, serial: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "registration_code": code,
        "csr_pem": csr_pem,
        "hardware": { "serial": serial, "model": "curl-box" },
        "agent_version": "curl",
    }))
    .unwrap()
}

/// A minimal HTTP CONNECT proxy on 127.0.0.1:0, as found in front of many recorder sites.
/// Records every CONNECT target; tunnels bytes both ways.
pub struct ConnectProxy {
    pub port: u16,
    pub targets: Arc<Mutex<Vec<String>>>,
}

impl ConnectProxy {
    pub fn start() -> ConnectProxy {
        use std::io::{Read, Write};
        use std::net::{TcpListener, TcpStream};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let targets: Arc<Mutex<Vec<String>>> = Arc::default();
        let seen = targets.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                let seen = seen.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(client.try_clone().unwrap());
                    let mut request = String::new();
                    if reader.read_line(&mut request).is_err() {
                        return;
                    }
                    loop {
                        let mut header = String::new();
                        if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                            break;
                        }
                    }
                    let mut parts = request.split_whitespace();
                    let (Some("CONNECT"), Some(target)) = (parts.next(), parts.next()) else {
                        let _ = (&client).write_all(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n");
                        return;
                    };
                    seen.lock().unwrap().push(target.to_string());
                    let Ok(upstream) = TcpStream::connect(target) else {
                        let _ = (&client).write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n");
                        return;
                    };
                    (&client)
                        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                        .unwrap();
                    let (mut c_read, mut u_write) =
                        (client.try_clone().unwrap(), upstream.try_clone().unwrap());
                    let pump = std::thread::spawn(move || {
                        let _ = std::io::copy(&mut c_read, &mut u_write);
                        let _ = u_write.shutdown(std::net::Shutdown::Write);
                    });
                    let (mut u_read, mut c_write) = (upstream, client);
                    // The client speaks only after the 200, so nothing is left buffered.
                    let mut buf = [0u8; 16384];
                    loop {
                        match u_read.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if c_write.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    let _ = c_write.shutdown(std::net::Shutdown::Write);
                    let _ = pump.join();
                });
            }
        });
        ConnectProxy { port, targets }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn tunnels(&self) -> usize {
        self.targets.lock().unwrap().len()
    }
}

/// Whether this process runs as root (network namespaces, mounts).
pub fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Two network namespaces joined by a veth pair, `10.234.0.1/24` in the first and
/// `10.234.0.2/24` in the second: a site LAN of two hosts, private to the test. Deleted
/// on drop (which removes the veth pair too).
pub struct Lan {
    pub a: String,
    pub b: String,
}

impl Lan {
    pub const A_IP: &'static str = "10.234.0.1";
    pub const B_IP: &'static str = "10.234.0.2";

    /// None (with the reason) when this machine cannot make namespaces.
    pub fn create(tag: &str) -> Result<Lan, String> {
        if !running_as_root() {
            return Err("network namespaces need root".into());
        }
        let id = format!("ct{}{tag}", std::process::id());
        let lan = Lan {
            a: format!("{id}a"),
            b: format!("{id}b"),
        };
        let ok = ip(&["netns", "add", &lan.a])
            && ip(&["netns", "add", &lan.b])
            && ip(&[
                "link", "add", "va", "netns", &lan.a, "type", "veth", "peer", "name", "vb",
                "netns", &lan.b,
            ])
            && ip(&[
                "-n",
                &lan.a,
                "addr",
                "add",
                &format!("{}/24", Self::A_IP),
                "dev",
                "va",
            ])
            && ip(&[
                "-n",
                &lan.b,
                "addr",
                "add",
                &format!("{}/24", Self::B_IP),
                "dev",
                "vb",
            ])
            && ip(&["-n", &lan.a, "link", "set", "lo", "up"])
            && ip(&["-n", &lan.b, "link", "set", "lo", "up"])
            && ip(&["-n", &lan.a, "link", "set", "va", "up"])
            && ip(&["-n", &lan.b, "link", "set", "vb", "up"]);
        if ok {
            Ok(lan)
        } else {
            Err("`ip netns`/veth setup failed (is iproute2 installed?)".into())
        }
    }

    /// Runs a command inside namespace `ns`.
    pub fn exec(ns: &str, program: &Path, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(program)
            .args(args)
            .output()
            .expect("ip netns exec runs")
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        ip(&["netns", "del", &self.a]);
        ip(&["netns", "del", &self.b]);
    }
}

/// Set (to anything but empty or `0`) where every test must really run, as `.ci/run` does:
/// a skipped test is then a failed one.
pub const REQUIRE_ALL_TESTS: &str = "CONTERA_REQUIRE_ALL_TESTS";

/// Reports a test that cannot run here (a missing prerequisite), after which the test
/// returns. Printed where it is seen: straight to stderr, which the test runner does not
/// capture (unlike `eprintln!`), so a skip is never mistaken for a pass. When
/// `CONTERA_REQUIRE_ALL_TESTS` is set, it panics with the same message instead: the
/// test fails.
pub fn skip(test: &str, why: &str) {
    let required = std::env::var_os(REQUIRE_ALL_TESTS).is_some_and(|v| !v.is_empty() && v != "0");
    report_skip(test, why, required, &mut std::io::stderr());
}

fn report_skip(test: &str, why: &str, required: bool, out: &mut impl std::io::Write) {
    let message = format!("SKIPPED {test}: {why}");
    if required {
        panic!("{message} ({REQUIRE_ALL_TESTS} is set: every test must run)");
    }
    let _ = writeln!(out, "\n{message}");
}

/// Ok when this process is root and every tool exists; otherwise why not, with the
/// packages that bring the missing tool.
pub fn root_with_tools(tools: &[&str], packages: &str) -> Result<(), String> {
    if !running_as_root() {
        return Err("needs root".into());
    }
    match tools.iter().find(|t| !Path::new(t).exists()) {
        Some(tool) => Err(format!("{tool} is missing (apt-get install {packages})")),
        None => Ok(()),
    }
}

/// Parses OpenMetrics text with `prometheus_client.openmetrics.parser` (see
/// [`Server::metrics`]).
pub fn parse_openmetrics(exposition: &str) -> std::collections::BTreeMap<String, f64> {
    const PARSE: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join('%s="%s"' % kv for kv in sorted(s.labels.items()))
        out[s.name + ("{" + labels + "}" if labels else "")] = s.value
print(json.dumps(out))
"#;
    use std::io::Write;
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs (apt-get install python3-prometheus-client)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the metrics do not parse as OpenMetrics: {}\n{exposition}",
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[cfg(test)]
mod tests {
    use super::report_skip;

    #[test]
    fn a_skip_only_prints_unless_every_test_is_required() {
        let mut out = Vec::new();
        report_skip("some test", "a tool is missing", false, &mut out);
        assert_eq!(out, b"\nSKIPPED some test: a tool is missing\n");
    }

    #[test]
    #[should_panic(
        expected = "SKIPPED some test: a tool is missing (CONTERA_REQUIRE_ALL_TESTS is set"
    )]
    fn a_skip_fails_when_every_test_is_required() {
        report_skip("some test", "a tool is missing", true, &mut Vec::new());
    }
}
