//! The daemon: one main loop owns the state and does everything in turn (control
//! requests, heartbeats, renewals), so there is no shared mutable state to race on.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rcgen::KeyPair;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::client::{CallError, Credential, Endpoint, ServerClient};
use crate::config::AgentConfig;
use crate::control::{self, Command, Request, Response, Status};
use crate::identity;
use crate::retry::Backoff;
use crate::state::{State, StateFile};

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
    #[error(transparent)]
    Client(#[from] crate::client::ClientSetupError),
    #[error(transparent)]
    Control(#[from] control::ControlError),
}

/// How long a stopping agent waits for the server to take its goodbye.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(3);

pub struct Agent {
    pub(crate) config: AgentConfig,
    pub(crate) state_file: StateFile,
    pub(crate) state: State,
    /// Loaded while enrolled.
    pub(crate) key: Option<KeyPair>,
    /// Where the server is: from `[server] url`, or found by mDNS.
    pub(crate) endpoint: Option<Endpoint>,
    /// Without a client certificate: for enrollment. None until the server is known.
    pub(crate) anonymous: Option<ServerClient>,
    /// With the recorder's certificate: for heartbeats and renewal.
    pub(crate) authenticated: Option<ServerClient>,
    pub(crate) backoff: Backoff,
    pub(crate) next_beat: Option<Instant>,
    pub(crate) last_heartbeat: Option<OffsetDateTime>,
    pub(crate) last_error: Option<String>,
    /// `WATCHDOG_USEC / 2` when systemd watches this service.
    pub(crate) watchdog: Option<Duration>,
    pub(crate) last_watchdog_ping: Instant,
    /// Whether the test-only `Freeze` request is honoured.
    pub(crate) test_hooks: bool,
    /// A provisioned code waiting to be used (zero-touch).
    pub(crate) pending_code: Option<crate::zero_touch::PendingCode>,
    /// Why state changes cannot be saved, when the state directory is not writable.
    pub(crate) storage_problem: Option<String>,
}

pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

impl Agent {
    /// Loads state and key and builds the HTTP clients; nothing here needs the network.
    pub fn start(mut config: AgentConfig) -> Result<Agent, StartError> {
        let watchdog = sd_notify::watchdog_enabled().map(|d| d / 2);
        clamp_to_watchdog(&mut config, watchdog);
        let state_file = StateFile::new(&config.agent.state_dir);
        // A state directory that exists but cannot be written (an SD card remounted
        // read-only) is no reason to stop reporting: run on what can be read, and say so.
        // One that cannot even be created is a setup error.
        let storage_problem = match state_file.prepare() {
            Ok(()) => None,
            Err(e) if state_file.dir().is_dir() => {
                log::error!("{e}; running on the state as it is, changes cannot be saved");
                Some(e.to_string())
            }
            Err(e) => return Err(e.into()),
        };
        let state = state_file.load()?;
        let endpoint = config.server.url.as_deref().map(Endpoint::configured);
        let backoff = Backoff::new(Duration::from_secs(config.agent.max_backoff_secs));
        let mut agent = Agent {
            config,
            state_file,
            state,
            key: None,
            endpoint,
            anonymous: None,
            authenticated: None,
            backoff,
            next_beat: None,
            last_heartbeat: None,
            last_error: None,
            watchdog,
            last_watchdog_ping: Instant::now(),
            test_hooks: std::env::var("CONTERA_AGENT_TEST_HOOKS").as_deref() == Ok("1"),
            pending_code: None,
            storage_problem,
        };
        if agent.state.enrollment.is_some() {
            let key = match identity::load_key(agent.state_file.dir()) {
                Err(identity::IdentityError::BadKey { path, message }) => {
                    // A damaged key cannot be repaired; starting (unenrolled) beats a
                    // restart loop. Enrolling again makes a new key: a new recorder that
                    // the server flags as a possible replacement of this one.
                    let broken = path.with_extension("pem.broken");
                    let _ = std::fs::rename(&path, &broken);
                    crate::agent_log!(
                        agent,
                        log::Level::Error,
                        "the recorder key {} is damaged ({message}); moved it to {} — enter a registration code to enroll again",
                        path.display(),
                        broken.display()
                    );
                    None
                }
                other => other?,
            };
            match key {
                Some(key) => {
                    agent.key = Some(key);
                    agent.next_beat = Some(Instant::now());
                }
                None => {
                    crate::agent_log!(agent, log::Level::Error,
                        "the state says enrolled but the key {} is missing; enroll again with a registration code",
                        identity::key_path(agent.state_file.dir()).display()
                    );
                    agent.state.enrollment = None;
                }
            }
        }
        if let Err(e) = agent.rebuild_clients() {
            if !matches!(
                e,
                crate::client::ClientSetupError::Identity(_)
                    | crate::client::ClientSetupError::Tls(_)
            ) {
                return Err(e.into());
            }
            // The stored certificate is unusable: start unenrolled rather than
            // restart-looping; the key is kept, so enrolling again restores this recorder.
            crate::agent_log!(
                agent,
                log::Level::Error,
                "the stored certificate cannot be used ({e}); enter a registration code to enroll again (the recorder keeps its identity)"
            );
            agent.state.enrollment = None;
            agent.next_beat = None;
            agent.rebuild_clients()?;
        }
        agent.look_for_provisioned_code();
        Ok(agent)
    }

    /// Picks up a zero-touch code unless the recorder is enrolled, was revoked (a
    /// provisioned code must not undo an admin's revocation) or used that code before.
    fn look_for_provisioned_code(&mut self) {
        if self.state.enrollment.is_some() || self.state.revoked.is_some() {
            return;
        }
        let Some(pending) = crate::zero_touch::find(&self.config) else {
            return;
        };
        if self
            .state
            .consumed_codes
            .contains(&crate::zero_touch::fingerprint(&pending.code))
        {
            crate::agent_log!(
                self,
                log::Level::Info,
                "the registration code from the {} was used before; waiting for a new one",
                pending.source
            );
            return;
        }
        crate::agent_log!(
            self,
            log::Level::Info,
            "zero-touch: enrolling with the registration code {}-… from the {}",
            pending.code.public_id(),
            pending.source
        );
        self.pending_code = Some(pending);
        self.next_beat = Some(Instant::now());
    }

    /// Rebuilds both HTTP clients for the current config, endpoint and credential.
    pub(crate) fn rebuild_clients(&mut self) -> Result<(), crate::client::ClientSetupError> {
        let (anonymous, authenticated) = build_clients(
            &self.config,
            self.endpoint.as_ref(),
            self.state.enrollment.as_ref(),
            self.key.as_ref(),
        )?;
        self.anonymous = anonymous;
        self.authenticated = authenticated;
        Ok(())
    }

    /// The server URL in use, for messages and status.
    pub(crate) fn server_url(&self) -> &str {
        match &self.endpoint {
            Some(endpoint) => &endpoint.url,
            None => "(not found yet: looking by mDNS)",
        }
    }

    /// Makes sure a server is known: the configured one, or one found by mDNS whose TLS
    /// certificate verifies against the configured CA or the system roots. Discovery only
    /// says where; an untrusted answer is skipped.
    pub(crate) async fn ensure_server(&mut self) -> Result<(), CallError> {
        if self.endpoint.is_some() {
            return Ok(());
        }
        if !self.config.discovery.enabled {
            return Err(CallError::Unreachable("no [server] url configured".into()));
        }
        if self.config.server.ca_file.is_none() {
            return Err(CallError::Tls(
                "a server found by mDNS is trusted only through [server] ca_file: set it to the server's tls/ca.pem (or set [server] url)".into(),
            ));
        }
        let wait = Duration::from_secs(self.config.discovery.browse_secs);
        let found = crate::discovery::find_servers(wait)
            .await
            .map_err(|e| CallError::Unreachable(e.to_string()))?;
        for server in found {
            self.pet_watchdog();
            let endpoint = server.server_endpoint();
            let client = match ServerClient::new(&self.config.server, &endpoint, None) {
                Ok(client) => client,
                Err(e) => {
                    crate::agent_log!(
                        self,
                        log::Level::Warn,
                        "ignoring provisioning server {}: {e}",
                        server.instance
                    );
                    continue;
                }
            };
            match client.health().await {
                Ok(()) => {
                    crate::agent_log!(
                        self,
                        log::Level::Info,
                        "found provisioning server {} at {:?} by mDNS; its TLS certificate verifies",
                        endpoint.url,
                        server.addresses
                    );
                    self.endpoint = Some(endpoint);
                    self.rebuild_clients()
                        .map_err(|e| CallError::Tls(e.to_string()))?;
                    return Ok(());
                }
                Err(e) => crate::agent_log!(
                    self,
                    log::Level::Warn,
                    "ignoring provisioning server {} announced by mDNS: {e}",
                    server.instance
                ),
            }
        }
        crate::agent_log!(
            self,
            log::Level::Info,
            "no trusted provisioning server found by mDNS within {} s",
            wait.as_secs()
        );
        Err(CallError::Unreachable(
            "no trusted provisioning server found by mDNS".into(),
        ))
    }

    /// After losing a server that mDNS found, look again next time (its address may have
    /// changed); a configured URL stays.
    pub(crate) fn forget_discovered_server(&mut self) {
        if self.config.server.url.is_none() && self.endpoint.is_some() {
            self.endpoint = None;
            self.anonymous = None;
            self.authenticated = None;
        }
    }

    /// Tells the server this recorder is stopping on purpose, so it shows offline at once
    /// (and not as a missed heartbeat). Bounded: an unreachable server cannot hold up the
    /// stop.
    async fn say_goodbye(&self) {
        let Some(client) = &self.authenticated else {
            return;
        };
        let request = contera_protocol::v1::GoodbyeRequest {
            reason: "shutdown".to_string(),
        };
        match tokio::time::timeout(GOODBYE_TIMEOUT, client.goodbye(&request)).await {
            Ok(Ok(_)) => crate::agent_log!(self, log::Level::Info, "told the server goodbye"),
            Ok(Err(e)) => crate::agent_log!(
                self,
                log::Level::Warn,
                "could not tell the server goodbye: {e}"
            ),
            Err(_) => crate::agent_log!(
                self,
                log::Level::Warn,
                "could not tell the server goodbye within {GOODBYE_TIMEOUT:?}"
            ),
        }
    }

    /// Identity fields for journal lines.
    pub fn log_fields(&self) -> crate::logging::LogFields<'_> {
        let enrollment = self.state.enrollment.as_ref();
        crate::logging::LogFields {
            recorder_id: enrollment.map(|e| e.recorder_id.as_str()),
            account_id: enrollment.map(|e| e.account.id.as_str()),
            server: self.server_url(),
        }
    }

    /// Plain words for `STATUS=` and the `status` command.
    pub fn status_line(&self) -> String {
        match &self.storage_problem {
            Some(problem) => format!("{}; {problem}", self.activity_line()),
            None => self.activity_line(),
        }
    }

    fn activity_line(&self) -> String {
        if self.state.revoked.is_some() && self.state.enrollment.is_none() {
            return "revoked by the server: enter a new code".to_string();
        }
        let Some(enrollment) = &self.state.enrollment else {
            if let (Some(_), Some(error)) = (&self.pending_code, &self.last_error) {
                let next = self
                    .next_beat
                    .map(|t| t.saturating_duration_since(Instant::now()).as_secs())
                    .unwrap_or(0);
                return format!(
                    "enrolling with the provisioned code: {error}; next try in {next} s"
                );
            }
            return "waiting for a registration code".to_string();
        };
        match (&self.last_error, self.last_heartbeat) {
            (Some(error), _) => {
                let next = self
                    .next_beat
                    .map(|t| t.saturating_duration_since(Instant::now()).as_secs())
                    .unwrap_or(0);
                format!(
                    "enrolled in {}; {error}; next try in {next} s",
                    enrollment.account.name
                )
            }
            (None, Some(at)) => {
                let ago = (OffsetDateTime::now_utc() - at).whole_seconds().max(0);
                format!(
                    "enrolled in {}, last heartbeat {ago} s ago",
                    enrollment.account.name
                )
            }
            (None, None) => format!("enrolled in {}, connecting", enrollment.account.name),
        }
    }

    pub fn status(&self) -> Status {
        let enrollment = self.state.enrollment.as_ref();
        Status {
            enrolled: enrollment.is_some(),
            revoked: self.state.revoked.is_some() && enrollment.is_none(),
            recorder_id: enrollment
                .map(|e| e.recorder_id.clone())
                .or_else(|| self.state.revoked.as_ref().map(|r| r.recorder_id.clone())),
            account: enrollment.map(|e| e.account.clone()),
            server: self.server_url().to_string(),
            last_heartbeat: self.last_heartbeat.map(rfc3339),
            certificate_expires: enrollment.map(|e| rfc3339(e.certificate_expires)),
            renew_at: enrollment.map(|e| rfc3339(e.renew_at)),
            last_error: self
                .last_error
                .clone()
                .or_else(|| self.storage_problem.clone()),
            daemon_running: true,
        }
    }

    /// Puts `next` (a state without enrollment) in force and forgets the key and
    /// everything that used it: no more heartbeats until a new enrollment.
    pub(crate) fn drop_credential(&mut self, next: State) {
        self.state = next;
        if let Err(e) = identity::delete_key(self.state_file.dir()) {
            crate::agent_log!(self, log::Level::Error, "{e}");
        }
        self.key = None;
        self.authenticated = None;
        self.next_beat = None;
        self.last_error = None;
        self.last_heartbeat = None;
    }

    /// Forgets the identity: state and key. The server keeps the recorder's row.
    pub(crate) fn unenroll(&mut self) -> Response {
        let was_enrolled = self.state.enrollment.is_some();
        let mut next = self.state.clone();
        next.enrollment = None;
        next.revoked = None;
        if let Err(e) = self.state_file.save(&mut next) {
            return Response::Failed {
                kind: "internal".into(),
                message: format!("could not forget the identity: {e}"),
            };
        }
        self.drop_credential(next);
        crate::agent_log!(
            self,
            log::Level::Info,
            "identity forgotten (unenroll); waiting for a registration code"
        );
        Response::Unenrolled { was_enrolled }
    }

    async fn handle(&mut self, request: Request) -> Response {
        match request {
            Request::Status => Response::Status(self.status()),
            Request::Enroll { code } => self.enroll(&code).await,
            Request::Unenroll => self.unenroll(),
            Request::Freeze { secs } if self.test_hooks => {
                crate::agent_log!(
                    self,
                    log::Level::Warn,
                    "test hook: freezing the main loop for {secs} s"
                );
                // Deliberately blocking: this is what a wedged loop looks like.
                std::thread::sleep(Duration::from_secs(secs));
                Response::Done
            }
            Request::Freeze { .. } => Response::Failed {
                kind: "internal".into(),
                message: "test hooks are off".into(),
            },
        }
    }

    /// Tells systemd the main loop is alive, at most every half watchdog period. Called
    /// only from the loop and between the steps of a heartbeat, never from a timer task,
    /// so a wedged loop stops the pings and systemd restarts the service.
    pub(crate) fn pet_watchdog(&mut self) {
        if let Some(period) = self.watchdog {
            // Half of the tick period, so every tick pings despite timer slack.
            if self.last_watchdog_ping.elapsed() >= period / 2 {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                self.last_watchdog_ping = Instant::now();
            }
        }
    }

    fn reload(&mut self, path: &Path) {
        let config = match AgentConfig::load(path) {
            Ok(mut config) => {
                clamp_to_watchdog(&mut config, self.watchdog);
                config
            }
            Err(e) => {
                crate::agent_log!(
                    self,
                    log::Level::Error,
                    "SIGHUP: keeping the running configuration: {e}"
                );
                return;
            }
        };
        let endpoint = match config.server.url.as_deref() {
            Some(url) => Some(Endpoint::configured(url)),
            None if config.discovery.enabled => self
                .endpoint
                .clone()
                .filter(|_| self.config.server.url.is_none()),
            None => None,
        };
        match build_clients(
            &config,
            endpoint.as_ref(),
            self.state.enrollment.as_ref(),
            self.key.as_ref(),
        ) {
            Err(e) => crate::agent_log!(
                self,
                log::Level::Error,
                "SIGHUP: keeping the running configuration: {e}"
            ),
            Ok((anonymous, authenticated)) => {
                self.config = config;
                self.endpoint = endpoint;
                self.anonymous = anonymous;
                self.authenticated = authenticated;
                self.backoff =
                    Backoff::new(Duration::from_secs(self.config.agent.max_backoff_secs));
                crate::agent_log!(
                    self,
                    log::Level::Info,
                    "configuration reloaded from {}",
                    path.display()
                );
            }
        }
    }

    /// Sends `STATUS=` when the words changed since the last one.
    fn notify_status(&self, last: &mut String) {
        let line = self.status_line();
        if line != *last {
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(&line)]);
            *last = line;
        }
    }
}

type Clients = (Option<ServerClient>, Option<ServerClient>);

/// Under a watchdog, no single network call may outlast the ping period (half of
/// WATCHDOG_USEC): the loop pings before each call, so a healthy agent waiting on a slow
/// server is never taken for a wedged one.
fn clamp_to_watchdog(config: &mut AgentConfig, ping_period: Option<Duration>) {
    let Some(period) = ping_period else {
        return;
    };
    let limit = period.as_secs().max(1);
    for (key, value) in [
        (
            "connect_timeout_secs",
            &mut config.server.connect_timeout_secs,
        ),
        (
            "request_timeout_secs",
            &mut config.server.request_timeout_secs,
        ),
    ] {
        if *value > limit {
            log::warn!(
                "[server] {key} = {value} is longer than half the watchdog period; using {limit}"
            );
            *value = limit;
        }
    }
}

/// The anonymous and the authenticated client for a config, endpoint and credential.
fn build_clients(
    config: &AgentConfig,
    endpoint: Option<&Endpoint>,
    enrollment: Option<&crate::state::Enrollment>,
    key: Option<&KeyPair>,
) -> Result<Clients, crate::client::ClientSetupError> {
    let Some(endpoint) = endpoint else {
        return Ok((None, None));
    };
    let anonymous = ServerClient::new(&config.server, endpoint, None)?;
    let authenticated = match (enrollment, key) {
        (Some(enrollment), Some(key)) => Some(ServerClient::new(
            &config.server,
            endpoint,
            Some(Credential {
                certificate_pem: &enrollment.certificate_pem,
                key_pem: &key.serialize_pem(),
            }),
        )?),
        _ => None,
    };
    Ok((Some(anonymous), authenticated))
}

/// Runs the daemon until SIGTERM/SIGINT. Returns once the loop has stopped cleanly.
pub async fn run(config: AgentConfig, config_path: PathBuf) -> Result<(), StartError> {
    let socket_path = config.agent.control_socket.clone();
    let mut agent = Agent::start(config)?;
    let listener = control::bind(&socket_path).await?;
    let shutdown = CancellationToken::new();
    let (tx, mut commands) = mpsc::channel::<Command>(16);
    let control_task = tokio::spawn(control::serve(listener, tx, shutdown.clone()));

    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing the SIGINT handler");
    let mut hup = signal(SignalKind::hangup()).expect("installing the SIGHUP handler");

    // Wakes the loop every half watchdog period; the ping itself comes from the loop.
    let watchdog = agent.watchdog;
    let mut watchdog_tick = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
    watchdog_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let line = agent.status_line();
    crate::agent_log!(
        agent,
        log::Level::Info,
        "contera-agent {} started; server {}; {line}",
        env!("CARGO_PKG_VERSION"),
        agent.server_url()
    );
    let _ = sd_notify::notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&line),
    ]);
    let mut last_status = line;

    let mut announced = agent.state.enrollment.is_some();
    let mut announcer = if agent.config.discovery.enabled {
        let hw = crate::hardware::detect(&agent.config.recorder);
        match crate::discovery::Announcer::start(&hw.serial, &hw.model, announced) {
            Ok(announcer) => Some(announcer),
            Err(e) => {
                crate::agent_log!(agent, log::Level::Warn, "mDNS announcement failed: {e}");
                None
            }
        }
    } else {
        None
    };

    loop {
        let beat_at = agent.next_beat.map(tokio::time::Instant::from_std);
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                if let Ok(now) = sd_notify::NotifyState::monotonic_usec_now() {
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading, now]);
                }
                agent.reload(&config_path);
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
            }
            Some((request, reply)) = commands.recv() => {
                // A stop request does not wait for a slow server: the call is abandoned
                // (every write it may have done is atomic) and the daemon stops.
                tokio::select! {
                    response = agent.handle(request) => { let _ = reply.send(response); }
                    _ = term.recv() => break,
                    _ = int.recv() => break,
                }
            }
            _ = async { tokio::time::sleep_until(beat_at.expect("guarded")).await }, if beat_at.is_some() => {
                tokio::select! {
                    _ = agent.beat() => {}
                    _ = term.recv() => break,
                    _ = int.recv() => break,
                }
            }
            _ = watchdog_tick.tick(), if watchdog.is_some() => {}
        }
        agent.pet_watchdog();
        agent.notify_status(&mut last_status);
        let enrolled = agent.state.enrollment.is_some();
        if enrolled != announced {
            if let Some(announcer) = announcer.as_mut() {
                if let Err(e) = announcer.announce(enrolled) {
                    crate::agent_log!(agent, log::Level::Warn, "mDNS announcement failed: {e}");
                }
            }
            announced = enrolled;
        }
    }

    crate::agent_log!(agent, log::Level::Info, "stopping");
    let _ = sd_notify::notify(&[
        sd_notify::NotifyState::Stopping,
        sd_notify::NotifyState::Status("stopping"),
    ]);
    shutdown.cancel();
    agent.say_goodbye().await;
    if let Some(announcer) = announcer {
        let _ = tokio::task::spawn_blocking(move || announcer.stop()).await;
    }
    let _ = control_task.await;
    let _ = std::fs::remove_file(&socket_path);
    Ok(())
}
