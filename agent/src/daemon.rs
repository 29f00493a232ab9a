//! The daemon's shell: runs the [`Lifecycle`] one event at a time (so there is no shared
//! mutable state to race on) and carries out what it asks for. Everything that does I/O
//! lives here: the state file, the key, the HTTP clients, mDNS and systemd notifications.
//! Its clock, shutdown and reload signals, watchdog period and credentials directory are
//! handed in by `process::launch`.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rcgen::KeyPair;
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::client::{CallError, ClientSetupError, Credential, Endpoint, ServerClient};
use crate::config::AgentConfig;
use crate::control::{self, Command, Response};
use crate::failure::{Failure, FailureKind};
use crate::identity;
use crate::lifecycle::{
    Action, Call, Certificate, Event, Issued, Lifecycle, LogLine, Now, Outcome, Start,
};
use crate::state::{State, StateFile};

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
    #[error(transparent)]
    Client(#[from] ClientSetupError),
    #[error(transparent)]
    Control(#[from] control::ControlError),
}

/// How long a stopping agent waits for the server to take its goodbye.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(3);

/// Where the shell reads the time.
pub trait Clock: Send {
    fn now(&self) -> Now;
}

/// The machine's clocks.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Now {
        Now {
            mono: Instant::now(),
            wall: OffsetDateTime::now_utc(),
        }
    }
}

/// What the daemon is handed from outside: nothing in here reads the environment or
/// installs a signal handler.
pub struct Launch {
    pub config_path: PathBuf,
    pub clock: Box<dyn Clock>,
    /// Cancelled by SIGTERM/SIGINT.
    pub shutdown: CancellationToken,
    /// One message per SIGHUP.
    pub reload: mpsc::Receiver<()>,
    /// `WATCHDOG_USEC` when systemd watches this service.
    pub watchdog: Option<Duration>,
    /// systemd's `$CREDENTIALS_DIRECTORY`, where a provisioned code may be.
    pub credentials_dir: Option<PathBuf>,
    /// Whether the `freeze` request is honoured.
    #[cfg(feature = "test-hooks")]
    pub test_hooks: bool,
}

/// Pings systemd's watchdog, at most every half period. Pinged only from the loop and
/// between the steps of a call, never from a timer task, so a wedged loop stops the
/// pings and systemd restarts the service.
struct Watchdog {
    /// Half of `WATCHDOG_USEC`: the loop wakes at least this often.
    period: Option<Duration>,
    last: Instant,
}

impl Watchdog {
    fn pet(&mut self) {
        if let Some(period) = self.period {
            // Half of the tick period, so every tick pings despite timer slack.
            if self.last.elapsed() >= period / 2 {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                self.last = Instant::now();
            }
        }
    }
}

struct Shell {
    config: AgentConfig,
    config_path: PathBuf,
    state_file: StateFile,
    life: Lifecycle,
    /// The key the credential in use belongs to.
    key: Option<KeyPair>,
    /// The key the last enrollment call used, until its certificate is stored.
    candidate_key: Option<KeyPair>,
    /// Where the server is: from `[server] url`, or found by mDNS.
    endpoint: Option<Endpoint>,
    /// Without a client certificate: for enrollment. None until the server is known.
    anonymous: Option<ServerClient>,
    /// With the recorder's certificate: for heartbeats and renewal.
    authenticated: Option<ServerClient>,
    watchdog: Watchdog,
    clock: Box<dyn Clock>,
    replies: HashMap<u64, oneshot::Sender<Response>>,
}

/// Logs with the journal fields `RECORDER_ID`, `ACCOUNT_ID` (once enrolled) and
/// `SERVER`, so `journalctl RECORDER_ID=…` finds them.
fn emit(line: &LogLine, server: &str) {
    let message = line.message.as_str();
    match &line.identity {
        Some((recorder_id, account_id)) => log::log!(
            line.level,
            recorder_id = recorder_id.as_str(),
            account_id = account_id.as_str(),
            server = server;
            "{message}"
        ),
        None => log::log!(line.level, server = server; "{message}"),
    }
}

fn server_words(endpoint: Option<&Endpoint>) -> String {
    match endpoint {
        Some(endpoint) => endpoint.url.clone(),
        None => "(not found yet: looking by mDNS)".to_string(),
    }
}

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

type Clients = (Option<ServerClient>, Option<ServerClient>);

/// The anonymous and the authenticated client for a config, endpoint and credential.
fn build_clients(
    config: &AgentConfig,
    endpoint: Option<&Endpoint>,
    enrollment: Option<&crate::state::Enrollment>,
    key: Option<&KeyPair>,
) -> Result<Clients, ClientSetupError> {
    let Some(endpoint) = endpoint else {
        return Ok((None, None));
    };
    let roots = crate::client::roots(&config.server, endpoint)?;
    let anonymous = ServerClient::with_roots(&config.server, endpoint, roots.clone(), None)?;
    let authenticated = match (enrollment, key) {
        (Some(enrollment), Some(key)) => Some(ServerClient::with_roots(
            &config.server,
            endpoint,
            roots,
            Some(Credential {
                certificate_pem: &enrollment.certificate_pem,
                key_pem: &key.serialize_pem(),
            }),
        )?),
        _ => None,
    };
    Ok((Some(anonymous), authenticated))
}

/// Loads state and key and builds the HTTP clients; nothing here needs the network. A
/// damaged key or an unusable stored certificate starts the agent unenrolled rather
/// than in a restart loop.
fn start(mut config: AgentConfig, launch: &mut Launch) -> Result<(Shell, Vec<Action>), StartError> {
    let ping_period = launch.watchdog.map(|d| d / 2);
    clamp_to_watchdog(&mut config, ping_period);
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
    let mut state = state_file.load()?;
    let endpoint = config.server.url.as_deref().map(Endpoint::configured);
    let server = server_words(endpoint.as_ref());
    let say = |state: &State, level, message: String| {
        let identity = state.identity();
        emit(
            &LogLine {
                level,
                message,
                identity,
            },
            &server,
        );
    };
    let mut key = None;
    if state.enrollment.is_some() {
        key = match identity::load_key(state_file.dir()) {
            Err(identity::IdentityError::BadKey { path, message }) => {
                // A damaged key cannot be repaired. Enrolling again makes a new key: a
                // new recorder that the server flags as a possible replacement of this one.
                let broken = path.with_extension("pem.broken");
                let _ = std::fs::rename(&path, &broken);
                say(&state, log::Level::Error, format!(
                    "the recorder key {} is damaged ({message}); moved it to {} — enter a registration code to enroll again",
                    path.display(),
                    broken.display()
                ));
                None
            }
            other => other?,
        };
        if key.is_none() {
            say(&state, log::Level::Error, format!(
                "the state says enrolled but the key {} is missing; enroll again with a registration code",
                identity::key_path(state_file.dir()).display()
            ));
            state.enrollment = None;
        }
    }
    let (anonymous, authenticated) = match build_clients(
        &config,
        endpoint.as_ref(),
        state.enrollment.as_ref(),
        key.as_ref(),
    ) {
        Ok(clients) => clients,
        Err(e @ (ClientSetupError::Identity(_) | ClientSetupError::Tls(_))) => {
            // The stored certificate is unusable: start unenrolled; the key is kept,
            // so enrolling again restores this recorder.
            say(&state, log::Level::Error, format!(
                    "the stored certificate cannot be used ({e}); enter a registration code to enroll again (the recorder keeps its identity)"
                ));
            state.enrollment = None;
            build_clients(&config, endpoint.as_ref(), None, None)?
        }
        Err(e) => return Err(e.into()),
    };
    let provisioned = if state.enrollment.is_none() && state.revoked.is_none() {
        crate::zero_touch::find(&config, launch.credentials_dir.as_deref())
    } else {
        None
    };
    let clock = std::mem::replace(&mut launch.clock, Box::new(SystemClock));
    let (life, actions) = Lifecycle::new(
        Start {
            state,
            provisioned,
            storage_problem,
            server,
            max_backoff: Duration::from_secs(config.agent.max_backoff_secs),
            #[cfg(feature = "test-hooks")]
            test_hooks: launch.test_hooks,
        },
        clock.now(),
        Box::new(rand::random::<f64>),
    );
    let shell = Shell {
        config,
        config_path: launch.config_path.clone(),
        state_file,
        life,
        key,
        candidate_key: None,
        endpoint,
        anonymous,
        authenticated,
        watchdog: Watchdog {
            period: ping_period,
            last: Instant::now(),
        },
        clock,
        replies: HashMap::new(),
    };
    Ok((shell, actions))
}

impl Shell {
    fn log(&self, level: log::Level, message: impl Into<String>) {
        let identity = self.life.state().identity();
        emit(
            &LogLine {
                level,
                message: message.into(),
                identity,
            },
            self.life.server(),
        );
    }

    /// Hands one event to the lifecycle and carries out what it asks for, feeding back
    /// the outcomes; what an outcome leads to is done before the rest.
    async fn dispatch(&mut self, event: Event) {
        let mut queue: VecDeque<Action> = self.life.handle(event, self.clock.now()).into();
        while let Some(action) = queue.pop_front() {
            if let Some(event) = self.perform(action).await {
                let more = self.life.handle(event, self.clock.now());
                for action in more.into_iter().rev() {
                    queue.push_front(action);
                }
            }
        }
    }

    async fn perform(&mut self, action: Action) -> Option<Event> {
        match action {
            Action::Call(call) => {
                self.watchdog.pet();
                Some(Event::Outcome(self.call(call).await))
            }
            Action::Save(mut state) => {
                // fsync on a slow card is blocking work: off the runtime's one thread.
                let file = StateFile::new(self.state_file.dir());
                let saved = tokio::task::spawn_blocking(move || {
                    file.save(&mut state)
                        .map(|()| state.generation)
                        .map_err(|e| e.to_string())
                })
                .await
                .unwrap_or_else(|e| Err(format!("saving the state failed: {e}")));
                Some(Event::Saved(saved))
            }
            Action::UseCredential => {
                if let Some(key) = self.candidate_key.take() {
                    self.key = Some(key);
                }
                if let Err(e) = self.rebuild_clients() {
                    self.log(
                        log::Level::Error,
                        format!("the new certificate cannot be used: {e}"),
                    );
                }
                None
            }
            Action::ForgetKey => {
                if let Err(e) = identity::delete_key(self.state_file.dir()) {
                    self.log(log::Level::Error, e.to_string());
                }
                self.key = None;
                self.candidate_key = None;
                self.authenticated = None;
                None
            }
            Action::DeleteCodeFile(path) => {
                match std::fs::remove_file(&path) {
                    Ok(()) => self.log(
                        log::Level::Info,
                        format!("registration code file {} used and deleted", path.display()),
                    ),
                    Err(e) => self.log(
                        log::Level::Warn,
                        format!(
                            "registration code used, but its file {} could not be deleted ({e}): delete it by hand",
                            path.display()
                        ),
                    ),
                }
                None
            }
            Action::Reply { id, response } => {
                if let Some(reply) = self.replies.remove(&id) {
                    let _ = reply.send(response);
                }
                None
            }
            Action::Log(line) => {
                emit(&line, self.life.server());
                None
            }
            #[cfg(feature = "test-hooks")]
            Action::Freeze(how_long) => {
                // Deliberately blocking: this is what a wedged loop looks like.
                std::thread::sleep(how_long);
                None
            }
        }
    }

    async fn call(&mut self, call: Call) -> Outcome {
        match call {
            Call::Enroll(code) => Outcome::Enroll(self.enroll(&code).await),
            Call::Preview(code) => Outcome::Preview(self.preview(&code).await),
            Call::Heartbeat => Outcome::Heartbeat(self.heartbeat().await),
            Call::Renew => Outcome::Renew(self.renew().await),
            Call::Goodbye => Outcome::Goodbye(self.goodbye().await),
        }
    }

    async fn enroll(
        &mut self,
        code: &contera_protocol::RegistrationCode,
    ) -> Result<Issued, Failure> {
        let (key, request) =
            crate::enroll::prepare(self.state_file.dir(), code, &self.config.recorder)?;
        self.watchdog.pet();
        if let Err(e) = self.ensure_server().await {
            return Err(Failure::of_enrollment(&e, self.life.server()));
        }
        let client = self.anonymous.clone().expect("ensure_server built it");
        self.watchdog.pet();
        let issued = crate::enroll::send(&client, &request, &key, self.life.server()).await?;
        self.candidate_key = Some(key);
        Ok(issued)
    }

    async fn preview(
        &mut self,
        code: &contera_protocol::RegistrationCode,
    ) -> Result<contera_protocol::v1::EnrollPreviewResponse, Failure> {
        self.watchdog.pet();
        if let Err(e) = self.ensure_server().await {
            return Err(Failure::of_enrollment(&e, self.life.server()));
        }
        let client = self.anonymous.clone().expect("ensure_server built it");
        self.watchdog.pet();
        let request = contera_protocol::v1::EnrollPreviewRequest {
            registration_code: code.compact(),
        };
        client
            .enroll_preview(&request)
            .await
            .map_err(|e| Failure::of_enrollment(&e, self.life.server()))
    }

    async fn heartbeat(&mut self) -> Result<contera_protocol::v1::HeartbeatResponse, Failure> {
        let result = match self.ensure_server().await {
            Err(e) => Err(e),
            Ok(()) => match self.authenticated.clone() {
                None => return Err(no_credential()),
                Some(client) => {
                    self.watchdog.pet();
                    let status = crate::heartbeat::status(&self.config.recorder).await;
                    self.watchdog.pet();
                    crate::heartbeat::send(&client, status).await
                }
            },
        };
        result.map_err(|e| {
            if matches!(e, CallError::Unreachable(_)) {
                self.forget_discovered_server();
            }
            Failure::of_report(&e)
        })
    }

    async fn renew(&mut self) -> Result<Certificate, Failure> {
        let (Some(client), Some(key)) = (self.authenticated.clone(), self.key.as_ref()) else {
            return Err(no_credential());
        };
        crate::heartbeat::renew(&client, key).await
    }

    /// Tells the server this recorder is stopping on purpose, so it shows offline at once
    /// (and not as a missed heartbeat). Bounded: an unreachable server cannot hold up the
    /// stop.
    async fn goodbye(&self) -> Result<(), Failure> {
        let Some(client) = &self.authenticated else {
            return Err(no_credential());
        };
        let request = contera_protocol::v1::GoodbyeRequest {
            reason: "shutdown".to_string(),
        };
        match tokio::time::timeout(GOODBYE_TIMEOUT, client.goodbye(&request)).await {
            Ok(result) => result.map(|_| ()).map_err(|e| Failure::of_report(&e)),
            Err(_) => Err(Failure::new(
                FailureKind::Unreachable,
                format!("no answer within {GOODBYE_TIMEOUT:?}"),
            )),
        }
    }

    /// Rebuilds both HTTP clients for the current config, endpoint and credential.
    fn rebuild_clients(&mut self) -> Result<(), ClientSetupError> {
        let (anonymous, authenticated) = build_clients(
            &self.config,
            self.endpoint.as_ref(),
            self.life.state().enrollment.as_ref(),
            self.key.as_ref(),
        )?;
        self.anonymous = anonymous;
        self.authenticated = authenticated;
        Ok(())
    }

    fn set_endpoint(&mut self, endpoint: Option<Endpoint>) {
        let words = server_words(endpoint.as_ref());
        self.endpoint = endpoint;
        self.life.handle(Event::Server(words), self.clock.now());
    }

    /// Makes sure a server is known: the configured one, or one found by mDNS whose TLS
    /// certificate verifies against the configured CA. Discovery only says where; an
    /// untrusted answer is skipped.
    async fn ensure_server(&mut self) -> Result<(), CallError> {
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
            self.watchdog.pet();
            let endpoint = server.server_endpoint();
            let client = match ServerClient::new(&self.config.server, &endpoint, None) {
                Ok(client) => client,
                Err(e) => {
                    self.log(
                        log::Level::Warn,
                        format!("ignoring provisioning server {}: {e}", server.instance),
                    );
                    continue;
                }
            };
            match client.health().await {
                Ok(()) => {
                    self.log(
                        log::Level::Info,
                        format!(
                            "found provisioning server {} at {:?} by mDNS; its TLS certificate verifies",
                            endpoint.url, server.addresses
                        ),
                    );
                    self.set_endpoint(Some(endpoint));
                    self.rebuild_clients()
                        .map_err(|e| CallError::Tls(e.to_string()))?;
                    return Ok(());
                }
                Err(e) => self.log(
                    log::Level::Warn,
                    format!(
                        "ignoring provisioning server {} announced by mDNS: {e}",
                        server.instance
                    ),
                ),
            }
        }
        self.log(
            log::Level::Info,
            format!(
                "no trusted provisioning server found by mDNS within {} s",
                wait.as_secs()
            ),
        );
        Err(CallError::Unreachable(
            "no trusted provisioning server found by mDNS".into(),
        ))
    }

    /// After losing a server that mDNS found, look again next time (its address may have
    /// changed); a configured URL stays.
    fn forget_discovered_server(&mut self) {
        if self.config.server.url.is_none() && self.endpoint.is_some() {
            self.set_endpoint(None);
            self.anonymous = None;
            self.authenticated = None;
        }
    }

    /// SIGHUP: re-reads and validates the config; keeps the running one on any error.
    fn reload(&mut self) {
        if let Ok(now) = sd_notify::NotifyState::monotonic_usec_now() {
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading, now]);
        }
        let path = self.config_path.clone();
        match AgentConfig::load(&path) {
            Err(e) => self.log(
                log::Level::Error,
                format!("SIGHUP: keeping the running configuration: {e}"),
            ),
            Ok(mut config) => {
                clamp_to_watchdog(&mut config, self.watchdog.period);
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
                    self.life.state().enrollment.as_ref(),
                    self.key.as_ref(),
                ) {
                    Err(e) => self.log(
                        log::Level::Error,
                        format!("SIGHUP: keeping the running configuration: {e}"),
                    ),
                    Ok((anonymous, authenticated)) => {
                        let max_backoff = Duration::from_secs(config.agent.max_backoff_secs);
                        self.config = config;
                        self.set_endpoint(endpoint);
                        self.anonymous = anonymous;
                        self.authenticated = authenticated;
                        self.life
                            .handle(Event::Reloaded { max_backoff }, self.clock.now());
                        self.log(
                            log::Level::Info,
                            format!("configuration reloaded from {}", path.display()),
                        );
                    }
                }
            }
        }
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    }

    /// Sends `STATUS=` when the words changed since the last one.
    fn notify_status(&self, last: &mut String) {
        let line = self.life.status_line(self.clock.now());
        if line != *last {
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(&line)]);
            *last = line;
        }
    }
}

fn no_credential() -> Failure {
    Failure::new(
        FailureKind::Internal,
        "no usable credential for the server yet",
    )
}

/// Runs the daemon until `launch.shutdown`. Returns once the loop has stopped cleanly.
pub async fn run(config: AgentConfig, mut launch: Launch) -> Result<(), StartError> {
    let socket_path = config.agent.control_socket.clone();
    let (mut shell, first) = start(config, &mut launch)?;
    let listener = control::bind(&socket_path).await?;
    let shutdown = launch.shutdown.clone();
    let stop_serving = CancellationToken::new();
    let (tx, mut commands) = mpsc::channel::<Command>(16);
    let control_task = tokio::spawn(control::serve(listener, tx, stop_serving.clone()));

    // Wakes the loop every half watchdog period; the ping itself comes from the loop.
    let ping_period = shell.watchdog.period;
    let mut watchdog_tick = tokio::time::interval(ping_period.unwrap_or(Duration::from_secs(3600)));
    watchdog_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    for action in first {
        shell.perform(action).await;
    }
    let line = shell.life.status_line(shell.clock.now());
    shell.log(
        log::Level::Info,
        format!(
            "contera-agent {} started; server {}; {line}",
            env!("CARGO_PKG_VERSION"),
            shell.life.server()
        ),
    );
    let _ = sd_notify::notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&line),
    ]);
    let mut last_status = line;

    let mut announced = shell.life.is_enrolled();
    let mut announcer = if shell.config.discovery.enabled {
        let hw = crate::hardware::detect(&shell.config.recorder);
        match crate::discovery::Announcer::start(&hw.serial, &hw.model, announced) {
            Ok(announcer) => Some(announcer),
            Err(e) => {
                shell.log(log::Level::Warn, format!("mDNS announcement failed: {e}"));
                None
            }
        }
    } else {
        None
    };

    let mut next_id: u64 = 0;
    loop {
        let deadline = shell
            .life
            .schedule()
            .next()
            .map(tokio::time::Instant::from_std);
        let event = tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(()) = launch.reload.recv() => {
                shell.reload();
                None
            }
            Some((request, reply)) = commands.recv() => {
                next_id += 1;
                shell.replies.insert(next_id, reply);
                Some(Event::Control { id: next_id, request })
            }
            _ = async { tokio::time::sleep_until(deadline.expect("guarded")).await }, if deadline.is_some() => {
                Some(Event::Tick)
            }
            _ = watchdog_tick.tick(), if ping_period.is_some() => None,
        };
        if let Some(event) = event {
            // A stop does not wait for a slow server: the call is abandoned (every
            // write it may have done is atomic) and the daemon stops.
            tokio::select! {
                _ = shell.dispatch(event) => {}
                _ = shutdown.cancelled() => break,
            }
        }
        shell.watchdog.pet();
        shell.notify_status(&mut last_status);
        let enrolled = shell.life.is_enrolled();
        if enrolled != announced {
            if let Some(announcer) = announcer.as_mut() {
                if let Err(e) = announcer.announce(enrolled) {
                    shell.log(log::Level::Warn, format!("mDNS announcement failed: {e}"));
                }
            }
            announced = enrolled;
        }
    }

    let _ = sd_notify::notify(&[
        sd_notify::NotifyState::Stopping,
        sd_notify::NotifyState::Status("stopping"),
    ]);
    stop_serving.cancel();
    shell.dispatch(Event::Stop).await;
    if let Some(announcer) = announcer {
        let _ = tokio::task::spawn_blocking(move || announcer.stop()).await;
    }
    let _ = control_task.await;
    let _ = std::fs::remove_file(&socket_path);
    Ok(())
}
