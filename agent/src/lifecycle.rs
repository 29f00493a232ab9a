//! The agent's lifecycle as a pure state machine: its phase, its schedule and its last
//! failure. It takes [`Event`]s (a tick, a control request, the outcome of a call, a saved
//! state, a reload, a stop) with the time they happened, and returns [`Action`]s (call
//! the server, save the state, forget the key, reply, log) for the shell in `daemon` to
//! carry out. It does no I/O, reads no clock and draws no random number of its own.
//!
//! | phase \ event | tick when due | enroll request | call outcome | stop |
//! | --- | --- | --- | --- | --- |
//! | unenrolled | — | enroll | success: save, enrolled; else reply | — |
//! | provisioned | enroll with the provisioned code | enroll | success: enrolled; refused/revoked: unenrolled/revoked; else retry later | — |
//! | enrolled | renew when due (not while the account is disabled and the certificate valid), then heartbeat | enroll (re-enroll or move) | revoked: revoked; else next heartbeat by interval, backoff or `Retry-After` | goodbye |
//! | revoked | — | enroll | as unenrolled | — |

use std::path::PathBuf;
use std::time::{Duration, Instant};

use contera_protocol::v1::{AccountRef, EnrollPreviewResponse, HeartbeatResponse, Instruction};
use contera_protocol::RegistrationCode;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::control::{Request, Response, Status};
use crate::failure::{Failure, FailureKind};
use crate::identity::{self, Validity};
use crate::retry::{self, Backoff};
use crate::state::{Enrollment, Revocation, State};
use crate::zero_touch::{self, CodeSource, PendingCode};

/// Fingerprints of used codes kept in the state, newest last.
const MAX_REMEMBERED: usize = 32;

/// The time an event happened: monotonic for deadlines, wall clock for what is stored
/// and compared with certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    pub mono: Instant,
    pub wall: OffsetDateTime,
}

/// A source of random numbers in [0, 1), for jitter; tests pin it.
pub type Random = Box<dyn FnMut() -> f64 + Send>;

/// Where the recorder is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// No identity: waiting for `contera-agent enroll --code …`.
    Unenrolled,
    /// No identity yet, and a provisioned (zero-touch) code to enroll with, retried
    /// while the failures are transient.
    Provisioned(PendingCode),
    /// Enrolled: heartbeats and renewals.
    Enrolled,
    /// The server revoked this recorder: waiting for a new code.
    Revoked,
}

/// When the next thing is due; each its own deadline.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schedule {
    pub heartbeat: Option<Instant>,
    pub renewal: Option<Instant>,
    /// The next attempt with a provisioned code.
    pub retry: Option<Instant>,
}

impl Schedule {
    /// The earliest deadline, for the shell to sleep until.
    pub fn next(&self) -> Option<Instant> {
        [self.heartbeat, self.renewal, self.retry]
            .into_iter()
            .flatten()
            .min()
    }
}

/// A certificate the server issued, already checked against the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    pub certificate_pem: String,
    pub ca_chain_pem: String,
    pub validity: Validity,
}

/// What a successful enrollment brought.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub recorder_id: String,
    pub account: AccountRef,
    pub certificate: Certificate,
    pub heartbeat_interval_secs: u32,
}

/// A call to the provisioning server for the shell to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// Make or load the key, send a CSR with this code, check the certificate.
    Enroll(RegistrationCode),
    /// Ask which account this code enrolls into; nothing is committed anywhere.
    Preview(RegistrationCode),
    Heartbeat,
    Renew,
    Goodbye,
}

/// How a [`Call`] went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Enroll(Result<Issued, Failure>),
    Preview(Result<EnrollPreviewResponse, Failure>),
    Heartbeat(Result<HeartbeatResponse, Failure>),
    Renew(Result<Certificate, Failure>),
    Goodbye(Result<(), Failure>),
}

#[derive(Debug, Clone)]
pub enum Event {
    /// Time passed: do what is due.
    Tick,
    /// A request from the control socket; answered with [`Action::Reply`] and this id.
    Control {
        id: u64,
        request: Request,
    },
    Outcome(Outcome),
    /// The result of the last [`Action::Save`]: the generation written, or why not.
    Saved(Result<u64, String>),
    /// The server URL in use changed (configured, found by mDNS, or forgotten).
    Server(String),
    /// SIGHUP brought a valid configuration.
    Reloaded {
        max_backoff: Duration,
    },
    /// SIGTERM or SIGINT.
    Stop,
}

/// A log line, with the identity it concerns at the time it was decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub level: log::Level,
    pub message: String,
    /// Recorder and account id, once enrolled.
    pub identity: Option<(String, String)>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Make this call and hand back its [`Outcome`].
    Call(Call),
    /// Write this state (the store bumps the generation) and hand back [`Event::Saved`].
    Save(State),
    /// The enrollment in [`Lifecycle::state`] is new or has a new certificate: use it
    /// (with the key the last enrollment made) for authenticated calls.
    UseCredential,
    /// Delete the recorder key and stop using the credential: the next enrollment makes a
    /// new key.
    ForgetKey,
    /// A provisioned code file was used: delete it.
    DeleteCodeFile(PathBuf),
    Reply {
        id: u64,
        response: Response,
    },
    Log(LogLine),
    /// Test hook: block the loop for this long, as a wedged loop would.
    #[cfg(feature = "test-hooks")]
    Freeze(Duration),
}

/// What to do once a state is saved (or could not be).
#[derive(Debug, Clone)]
enum AfterSave {
    Enrolled {
        code: RegistrationCode,
        reply: Option<u64>,
        recorder_id: String,
        account: AccountRef,
    },
    Renewed,
    /// A heartbeat brought a new account or interval.
    Updated,
    Unenrolled {
        id: u64,
        was_enrolled: bool,
    },
    /// Revocation and refused provisioned codes: in force in memory whether or not the
    /// disk took it.
    InForce,
}

/// The call whose outcome is awaited.
#[derive(Debug, Clone)]
enum InFlight {
    Enroll {
        code: RegistrationCode,
        reply: Option<u64>,
    },
    Preview {
        reply: u64,
    },
    Other,
}

/// What the lifecycle starts from.
pub struct Start {
    pub state: State,
    /// A provisioned code the shell found (credential, file or config).
    pub provisioned: Option<PendingCode>,
    /// Why state changes cannot be saved, when the state directory is read-only.
    pub storage_problem: Option<String>,
    pub server: String,
    pub max_backoff: Duration,
    /// Whether the `Freeze` request is honoured.
    #[cfg(feature = "test-hooks")]
    pub test_hooks: bool,
}

pub struct Lifecycle {
    phase: Phase,
    schedule: Schedule,
    last_failure: Option<Failure>,
    last_heartbeat: Option<OffsetDateTime>,
    /// The last heartbeat answer said the account is disabled by its administrator.
    account_disabled: bool,
    state: State,
    pending_save: Option<(State, AfterSave)>,
    in_flight: Option<InFlight>,
    storage_problem: Option<String>,
    server: String,
    max_backoff: Duration,
    backoff: Backoff,
    /// The server answered the last renewal 429: none is sent before this instant.
    renewal_not_before: Option<Instant>,
    /// The server answered an enrollment (or its preview) 429: none is sent before this
    /// instant, whether typed or provisioned.
    enroll_not_before: Option<Instant>,
    random: Random,
    #[cfg(feature = "test-hooks")]
    test_hooks: bool,
}

/// The answer to a request that would start a call while another is out.
fn busy() -> Response {
    let mut failure = Failure::new(
        FailureKind::Busy,
        "the agent is busy with another request to the server; try again in a moment",
    );
    failure.retry_after_secs = Some(1);
    Response::Failed(failure)
}

pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

fn due(deadline: Option<Instant>, now: Now) -> bool {
    deadline.is_some_and(|d| d <= now.mono)
}

/// Adds `code`'s fingerprint to the used codes, forgetting the oldest beyond the limit.
fn remember(state: &mut State, code: &RegistrationCode) {
    let fp = zero_touch::fingerprint(code);
    if !state.consumed_codes.contains(&fp) {
        state.consumed_codes.push(fp);
        let excess = state.consumed_codes.len().saturating_sub(MAX_REMEMBERED);
        state.consumed_codes.drain(..excess);
    }
}

impl Lifecycle {
    pub fn new(start: Start, now: Now, random: Random) -> (Lifecycle, Vec<Action>) {
        let phase = match (&start.state.enrollment, &start.state.revoked) {
            (Some(_), _) => Phase::Enrolled,
            (None, Some(_)) => Phase::Revoked,
            (None, None) => Phase::Unenrolled,
        };
        let mut life = Lifecycle {
            phase,
            schedule: Schedule::default(),
            last_failure: None,
            last_heartbeat: None,
            account_disabled: false,
            state: start.state,
            pending_save: None,
            in_flight: None,
            storage_problem: start.storage_problem,
            server: start.server,
            max_backoff: start.max_backoff,
            backoff: Backoff::new(start.max_backoff),
            renewal_not_before: None,
            enroll_not_before: None,
            random,
            #[cfg(feature = "test-hooks")]
            test_hooks: start.test_hooks,
        };
        let mut actions = Vec::new();
        match (&life.phase, start.provisioned) {
            (Phase::Enrolled, _) => {
                life.schedule.heartbeat = Some(now.mono);
                life.schedule_renewal(now);
            }
            // A provisioned code must not undo an admin's revocation.
            (Phase::Revoked, _) | (_, None) => {}
            (_, Some(pending)) => {
                if life
                    .state
                    .consumed_codes
                    .contains(&zero_touch::fingerprint(&pending.code))
                {
                    actions.push(life.log(
                        log::Level::Info,
                        format!(
                            "the registration code from the {} was used before; waiting for a new one",
                            pending.source
                        ),
                    ));
                } else {
                    actions.push(life.log(
                        log::Level::Info,
                        format!(
                            "zero-touch: enrolling with the registration code {}-… from the {}",
                            pending.code.public_id(),
                            pending.source
                        ),
                    ));
                    life.phase = Phase::Provisioned(pending);
                    life.schedule.retry = Some(now.mono);
                }
            }
        }
        (life, actions)
    }

    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// The state as last saved (or in force, see [`AfterSave::InForce`]).
    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn last_failure(&self) -> Option<&Failure> {
        self.last_failure.as_ref()
    }

    pub fn server(&self) -> &str {
        &self.server
    }

    pub fn is_enrolled(&self) -> bool {
        self.phase == Phase::Enrolled
    }

    /// Takes one event; returns what to do, in order.
    pub fn handle(&mut self, event: Event, now: Now) -> Vec<Action> {
        match event {
            Event::Tick => self.tick(now),
            Event::Control { id, request } => self.control(id, request, now),
            Event::Outcome(outcome) => {
                let in_flight = self.in_flight.take();
                match outcome {
                    Outcome::Enroll(result) => match in_flight {
                        Some(InFlight::Enroll { code, reply }) => {
                            self.enroll_outcome(code, reply, result, now)
                        }
                        _ => Vec::new(),
                    },
                    Outcome::Preview(result) => match in_flight {
                        Some(InFlight::Preview { reply }) => vec![Action::Reply {
                            id: reply,
                            response: match result {
                                Ok(p) => Response::Preview {
                                    account_name: p.account_name,
                                    parent_name: p.parent_name,
                                },
                                Err(f) => {
                                    self.hold_enrollment(&f, now);
                                    Response::Failed(f)
                                }
                            },
                        }],
                        _ => Vec::new(),
                    },
                    // Only the call that was made counts: a stray outcome changes nothing.
                    Outcome::Heartbeat(result) => match in_flight {
                        Some(InFlight::Other) => self.heartbeat_outcome(result, now),
                        _ => Vec::new(),
                    },
                    Outcome::Renew(result) => match in_flight {
                        Some(InFlight::Other) => self.renew_outcome(result, now),
                        _ => Vec::new(),
                    },
                    Outcome::Goodbye(Ok(())) => {
                        vec![self.log(log::Level::Info, "told the server goodbye")]
                    }
                    Outcome::Goodbye(Err(f)) => vec![self.log(
                        log::Level::Warn,
                        format!("could not tell the server goodbye: {f}"),
                    )],
                }
            }
            Event::Saved(result) => self.saved(result, now),
            Event::Server(url) => {
                self.server = url;
                Vec::new()
            }
            Event::Reloaded { max_backoff } => {
                self.max_backoff = max_backoff;
                self.backoff = Backoff::new(max_backoff);
                Vec::new()
            }
            Event::Stop => {
                let mut actions = vec![self.log(log::Level::Info, "stopping")];
                if self.is_enrolled() {
                    actions.push(self.call(Call::Goodbye));
                }
                actions
            }
        }
    }

    fn tick(&mut self, now: Now) -> Vec<Action> {
        if self.in_flight.is_some() || self.pending_save.is_some() {
            return Vec::new();
        }
        match &self.phase {
            Phase::Enrolled if due(self.schedule.renewal, now) && !self.renewal_held(now) => {
                vec![self.call(Call::Renew)]
            }
            Phase::Enrolled if due(self.schedule.heartbeat, now) => {
                vec![self.call(Call::Heartbeat)]
            }
            Phase::Provisioned(pending) if due(self.schedule.retry, now) => {
                let code = pending.code.clone();
                self.enroll(code, None)
            }
            _ => Vec::new(),
        }
    }

    /// While the account is disabled the server refuses renewals: none is sent while the
    /// certificate is still valid. An expired one is renewed anyway (refused until the
    /// account is enabled, then accepted within the grace period), since heartbeats with
    /// it are refused and would never bring the news that the account is enabled.
    fn renewal_held(&self, now: Now) -> bool {
        self.account_disabled
            && self
                .state
                .enrollment
                .as_ref()
                .is_some_and(|e| e.certificate_expires > now.wall)
    }

    /// A call is out or a save pending: a request that would start another waits its turn
    /// (the shell runs one at a time, so this guards the core's own bookkeeping).
    fn busy(&self) -> bool {
        self.in_flight.is_some() || self.pending_save.is_some()
    }

    fn call(&mut self, call: Call) -> Action {
        self.in_flight = Some(InFlight::Other);
        Action::Call(call)
    }

    fn enroll(&mut self, code: RegistrationCode, reply: Option<u64>) -> Vec<Action> {
        let line = self.log(
            log::Level::Info,
            format!(
                "enrolling with code {}-… at {}",
                code.public_id(),
                self.server
            ),
        );
        self.in_flight = Some(InFlight::Enroll {
            code: code.clone(),
            reply,
        });
        vec![line, Action::Call(Call::Enroll(code))]
    }

    fn control(&mut self, id: u64, request: Request, now: Now) -> Vec<Action> {
        let reply = |response| Action::Reply { id, response };
        match request {
            Request::Status => vec![reply(Response::Status(self.status(now)))],
            Request::Version => vec![reply(Response::Version {
                api: crate::control::API_VERSION,
                agent: env!("CARGO_PKG_VERSION").to_string(),
            })],
            Request::Enroll { code } => match code.parse::<RegistrationCode>() {
                Err(e) => vec![reply(Response::failed(FailureKind::Typo, e.to_string()))],
                Ok(_) if self.busy() => vec![reply(busy())],
                Ok(_) if self.enrollment_held(now) => vec![reply(self.held(now))],
                Ok(code) => self.enroll(code, Some(id)),
            },
            // A query: it changes no phase or last failure (a 429 holds enrollments, as
            // an enrollment's would).
            Request::Preview { code } => match code.parse::<RegistrationCode>() {
                Err(e) => vec![reply(Response::failed(FailureKind::Typo, e.to_string()))],
                Ok(_) if self.busy() => vec![reply(busy())],
                Ok(_) if self.enrollment_held(now) => vec![reply(self.held(now))],
                Ok(code) => {
                    self.in_flight = Some(InFlight::Preview { reply: id });
                    vec![Action::Call(Call::Preview(code))]
                }
            },
            Request::Unenroll if self.busy() => vec![reply(busy())],
            Request::Unenroll => {
                let was_enrolled = self.is_enrolled();
                vec![self.commit(
                    |s| {
                        s.enrollment = None;
                        s.revoked = None;
                    },
                    AfterSave::Unenrolled { id, was_enrolled },
                )]
            }
            #[cfg(feature = "test-hooks")]
            Request::Freeze { secs } if self.test_hooks => vec![
                self.log(
                    log::Level::Warn,
                    format!("test hook: freezing the main loop for {secs} s"),
                ),
                Action::Freeze(Duration::from_secs(secs)),
                reply(Response::Done),
            ],
            #[cfg(feature = "test-hooks")]
            Request::Freeze { .. } => vec![reply(Response::failed(
                FailureKind::Internal,
                "test hooks are off",
            ))],
        }
    }

    /// The one way state changes: a copy with `change` applied, to be saved by the shell
    /// (which bumps the generation); `then` runs when [`Event::Saved`] comes back.
    fn commit(&mut self, change: impl FnOnce(&mut State), then: AfterSave) -> Action {
        debug_assert!(self.pending_save.is_none(), "one save at a time");
        let mut next = self.state.clone();
        change(&mut next);
        self.pending_save = Some((next.clone(), then));
        Action::Save(next)
    }

    fn saved(&mut self, result: Result<u64, String>, now: Now) -> Vec<Action> {
        let Some((mut next, then)) = self.pending_save.take() else {
            return Vec::new();
        };
        let error = match result {
            Ok(generation) => {
                next.generation = generation;
                self.state = next;
                None
            }
            Err(e) => {
                if matches!(then, AfterSave::InForce) {
                    self.state = next;
                }
                Some(e)
            }
        };
        match (then, error) {
            (
                AfterSave::Enrolled {
                    code,
                    reply,
                    recorder_id,
                    account,
                },
                None,
            ) => self.now_enrolled(code, reply, recorder_id, account, now),
            (AfterSave::Enrolled { reply, .. }, Some(e)) => {
                let failure = Failure::new(
                    FailureKind::Storage,
                    format!("the server accepted the recorder but storing its certificate failed: {e}. Fix the disk, then enter the code again (the same recorder is restored)"),
                );
                match reply {
                    Some(id) => vec![Action::Reply {
                        id,
                        response: Response::Failed(failure),
                    }],
                    None => self.retry_provisioned(failure, now),
                }
            }
            (AfterSave::Renewed, None) => {
                self.schedule_renewal(now);
                let expires = self
                    .state
                    .enrollment
                    .as_ref()
                    .map(|e| rfc3339(e.certificate_expires))
                    .unwrap_or_default();
                vec![
                    Action::UseCredential,
                    self.log(
                        log::Level::Info,
                        format!("certificate renewed; valid until {expires}"),
                    ),
                ]
            }
            (AfterSave::Renewed, Some(e)) => {
                self.schedule.renewal = self.schedule.heartbeat;
                self.hold_renewal();
                vec![self.log(
                    log::Level::Error,
                    format!("renewal: keeping the old certificate: {e}"),
                )]
            }
            (AfterSave::Unenrolled { id, was_enrolled }, None) => {
                self.forget_identity();
                self.phase = Phase::Unenrolled;
                vec![
                    Action::ForgetKey,
                    self.log(
                        log::Level::Info,
                        "identity forgotten (unenroll); waiting for a registration code",
                    ),
                    Action::Reply {
                        id,
                        response: Response::Unenrolled { was_enrolled },
                    },
                ]
            }
            (AfterSave::Unenrolled { id, .. }, Some(e)) => vec![Action::Reply {
                id,
                response: Response::failed(
                    FailureKind::Storage,
                    format!("could not forget the identity: {e}"),
                ),
            }],
            (AfterSave::Updated | AfterSave::InForce, None) => Vec::new(),
            (AfterSave::Updated | AfterSave::InForce, Some(e)) => {
                vec![self.log(log::Level::Error, e)]
            }
        }
    }

    fn now_enrolled(
        &mut self,
        code: RegistrationCode,
        reply: Option<u64>,
        recorder_id: String,
        account: AccountRef,
        now: Now,
    ) -> Vec<Action> {
        let previous = std::mem::replace(&mut self.phase, Phase::Enrolled);
        self.last_failure = None;
        self.last_heartbeat = None;
        self.account_disabled = false;
        self.backoff = Backoff::new(self.max_backoff);
        self.renewal_not_before = None;
        self.enroll_not_before = None;
        // First heartbeat right away, so the recorder shows online at once.
        self.schedule = Schedule {
            heartbeat: Some(now.mono),
            ..Schedule::default()
        };
        self.schedule_renewal(now);
        let mut actions = vec![
            Action::UseCredential,
            self.log(
                log::Level::Info,
                format!(
                    "enrolled as recorder {recorder_id} in account \"{}\" ({})",
                    account.name, account.id
                ),
            ),
        ];
        if let Phase::Provisioned(pending) = previous {
            if pending.code == code {
                actions.extend(self.code_used(&pending));
            }
        }
        if let Some(id) = reply {
            actions.push(Action::Reply {
                id,
                response: Response::Enrolled {
                    recorder_id,
                    account,
                },
            });
        }
        actions
    }

    /// A provisioned code was used (or refused): its file goes, a config code is flagged.
    fn code_used(&self, pending: &PendingCode) -> Vec<Action> {
        match &pending.source {
            CodeSource::File(path) => vec![Action::DeleteCodeFile(path.clone())],
            CodeSource::Config => vec![self.log(
                log::Level::Warn,
                "registration code from the config used; it will not be used again: remove [enrollment] code from the config",
            )],
            CodeSource::Credential(_) => Vec::new(),
        }
    }

    fn enroll_outcome(
        &mut self,
        code: RegistrationCode,
        reply: Option<u64>,
        result: Result<Issued, Failure>,
        now: Now,
    ) -> Vec<Action> {
        match result {
            Ok(issued) => {
                let fraction = retry::renewal_fraction((self.random)());
                let server = self.server.clone();
                let then = AfterSave::Enrolled {
                    code: code.clone(),
                    reply,
                    recorder_id: issued.recorder_id.clone(),
                    account: issued.account.clone(),
                };
                vec![self.commit(
                    |s| {
                        let c = issued.certificate;
                        s.enrollment = Some(Enrollment {
                            recorder_id: issued.recorder_id,
                            account: issued.account,
                            server_url: server,
                            certificate_pem: c.certificate_pem,
                            ca_chain_pem: c.ca_chain_pem,
                            certificate_not_before: c.validity.not_before,
                            certificate_expires: c.validity.not_after,
                            renew_at: identity::renewal_time(now.wall, c.validity, fraction),
                            heartbeat_interval_secs: issued.heartbeat_interval_secs,
                            enrolled_at: now.wall,
                        });
                        s.revoked = None;
                        remember(s, &code);
                    },
                    then,
                )]
            }
            Err(failure) => match reply {
                Some(id) => {
                    self.hold_enrollment(&failure, now);
                    let mut actions = Vec::new();
                    if failure.kind == FailureKind::Revoked {
                        // This key was revoked: only a new key can enroll again.
                        if self.is_enrolled() {
                            actions.extend(self.revoke(now));
                        } else {
                            actions.push(Action::ForgetKey);
                        }
                    } else {
                        actions.push(
                            self.log(log::Level::Warn, format!("enrollment failed: {failure}")),
                        );
                    }
                    actions.push(Action::Reply {
                        id,
                        response: Response::Failed(failure),
                    });
                    actions
                }
                None => self.provisioned_failed(code, failure, now),
            },
        }
    }

    /// A provisioned code failed: retried unless the server said no to the code or to
    /// this revoked key, which ends the code's life.
    fn provisioned_failed(
        &mut self,
        code: RegistrationCode,
        failure: Failure,
        now: Now,
    ) -> Vec<Action> {
        let Phase::Provisioned(pending) = self.phase.clone() else {
            return Vec::new();
        };
        if failure.is_retried() {
            return self.retry_provisioned(failure, now);
        }
        let revoked = failure.kind == FailureKind::Revoked;
        let mut actions = vec![self.log(
            log::Level::Error,
            format!(
                "the registration code from the {} was refused: {failure}; enter a code with `contera-agent enroll --code …`",
                pending.source
            ),
        )];
        if revoked {
            actions.push(Action::ForgetKey);
        }
        // Not retried at every start: remembered like a used code. A revoked key is
        // remembered as revoked, so no provisioned code undoes an admin's revocation.
        actions.push(self.commit(
            |s| {
                remember(s, &code);
                if revoked {
                    s.revoked = Some(Revocation {
                        recorder_id: None,
                        at: now.wall,
                    });
                }
            },
            AfterSave::InForce,
        ));
        actions.extend(self.code_used(&pending));
        self.phase = if revoked {
            Phase::Revoked
        } else {
            Phase::Unenrolled
        };
        self.schedule.retry = None;
        self.last_failure = None;
        actions
    }

    fn retry_provisioned(&mut self, failure: Failure, now: Now) -> Vec<Action> {
        let wait = self.wait_after(&failure);
        if failure.retry_after().is_some() {
            self.enroll_not_before = Some(now.mono + wait);
        }
        let line = self.log(
            log::Level::Warn,
            format!(
                "enrolling with the provisioned code failed: {failure}; next try in {} s",
                wait.as_secs()
            ),
        );
        self.schedule.retry = Some(now.mono + wait);
        self.last_failure = Some(failure);
        vec![line]
    }

    /// A typed enrollment or preview was answered 429: no other is sent before the
    /// server's `Retry-After` has passed (people are no herd: no jitter on top).
    /// A provisioned code waiting for its next try waits for this too.
    fn hold_enrollment(&mut self, failure: &Failure, now: Now) {
        if let Some(after) = failure.retry_after() {
            let not_before = now.mono + after;
            self.enroll_not_before = Some(not_before);
            if let Some(retry) = self.schedule.retry.as_mut() {
                *retry = (*retry).max(not_before);
            }
        }
    }

    fn enrollment_held(&self, now: Now) -> bool {
        self.enroll_not_before.is_some_and(|t| now.mono < t)
    }

    /// The answer to an enrollment or preview requested while the server's
    /// `Retry-After` runs: nothing is sent.
    fn held(&self, now: Now) -> Response {
        let left = self
            .enroll_not_before
            .map(|t| t.saturating_duration_since(now.mono))
            .unwrap_or_default();
        // Rounded up: trying again after the seconds said must not be too early.
        let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        let mut failure = Failure::new(
            FailureKind::Busy,
            format!("the server asked to wait before the next enrollment; enter the code again in {secs} s"),
        );
        failure.retry_after_secs = Some(secs);
        Response::Failed(failure)
    }

    /// The server's `Retry-After` (plus a little), else the next backoff step.
    fn wait_after(&mut self, failure: &Failure) -> Duration {
        let r = (self.random)();
        match failure.retry_after() {
            Some(after) => retry::after_retry_after(after, r),
            None => self.backoff.next_delay(r),
        }
    }

    fn heartbeat_outcome(
        &mut self,
        result: Result<HeartbeatResponse, Failure>,
        now: Now,
    ) -> Vec<Action> {
        let Some(enrollment) = self.state.enrollment.clone() else {
            return Vec::new();
        };
        let response = match result {
            Ok(response) => response,
            Err(f) if f.kind == FailureKind::Revoked => return self.revoke(now),
            Err(f) => {
                let wait = self.wait_after(&f);
                let line = self.log(
                    log::Level::Warn,
                    format!("heartbeat failed: {f}; next try in {} s", wait.as_secs()),
                );
                // Renewal was tried first and refused: the grace period is over.
                let expired = enrollment.certificate_expires <= now.wall
                    && !matches!(f.kind, FailureKind::Unreachable | FailureKind::Busy);
                self.last_failure = Some(if expired {
                    Failure::new(
                        FailureKind::Expired,
                        "the certificate expired and the server refused its renewal: enter a registration code (the recorder keeps its identity)",
                    )
                } else {
                    f
                });
                self.schedule.heartbeat = Some(now.mono + wait);
                self.renewal_with_next_heartbeat(now);
                return vec![line];
            }
        };
        let mut actions = Vec::new();
        if self.last_failure.take().is_some() {
            actions.push(self.log(
                log::Level::Info,
                "server reachable again; heartbeats resumed",
            ));
        }
        self.last_heartbeat = Some(now.wall);
        self.backoff = Backoff::new(self.max_backoff);
        let interval = response.heartbeat_interval_secs.max(1);
        if response.account != enrollment.account {
            actions.push(self.log(
                log::Level::Info,
                format!(
                    "recorder moved to account \"{}\" ({})",
                    response.account.name, response.account.id
                ),
            ));
        }
        if response.account != enrollment.account || interval != enrollment.heartbeat_interval_secs
        {
            let account = response.account.clone();
            actions.push(self.commit(
                |s| {
                    if let Some(e) = s.enrollment.as_mut() {
                        e.account = account;
                        e.heartbeat_interval_secs = interval;
                    }
                },
                AfterSave::Updated,
            ));
        }
        let wait =
            retry::interval_with_jitter(Duration::from_secs(interval.into()), (self.random)());
        self.schedule.heartbeat = Some(now.mono + wait);
        // The renewal time is a wall-clock time; the clock it was scheduled against may
        // have been wrong (a recorder without an RTC battery boots in the past) and been
        // set since. Re-derived at every heartbeat, unless already due.
        if !due(self.schedule.renewal, now) {
            self.schedule_renewal(now);
        }
        self.renewal_with_next_heartbeat(now);
        let disabled = response
            .instructions
            .contains(&Instruction::AccountDisabled);
        if disabled != self.account_disabled {
            actions.push(if disabled {
                self.log(
                    log::Level::Warn,
                    "the account is disabled by its administrator: heartbeats go on, renewal waits until it is enabled",
                )
            } else {
                self.log(log::Level::Info, "the account is enabled again")
            });
            self.account_disabled = disabled;
        }
        if response.instructions.contains(&Instruction::Renew) && !disabled {
            actions.push(self.log(
                log::Level::Info,
                "the server asked for a certificate renewal",
            ));
            match self.renewal_not_before.filter(|t| now.mono < *t) {
                // Its last answer to a renewal was 429: the renewal waits for its time.
                Some(not_before) => self.schedule.renewal = Some(not_before),
                None => actions.push(self.call(Call::Renew)),
            }
        }
        actions
    }

    fn renew_outcome(&mut self, result: Result<Certificate, Failure>, now: Now) -> Vec<Action> {
        let mut actions = match result {
            Err(f) if f.kind == FailureKind::Revoked => return self.revoke(now),
            Err(f) => {
                self.schedule.renewal = self.schedule.heartbeat;
                match f.retry_after() {
                    // 429: not before the server's Retry-After; heartbeats go on as
                    // they were, the answer was about renewals.
                    Some(after) => {
                        let wait = retry::after_retry_after(after, (self.random)());
                        self.renewal_not_before = Some(now.mono + wait);
                        self.hold_renewal();
                        vec![self.log(
                            log::Level::Warn,
                            format!(
                                "certificate renewal refused for now: {f}; next try in {} s",
                                wait.as_secs()
                            ),
                        )]
                    }
                    None => vec![self.log(
                        log::Level::Warn,
                        format!(
                            "certificate renewal failed, will retry at the next heartbeat: {f}"
                        ),
                    )],
                }
            }
            Ok(c) => {
                self.renewal_not_before = None;
                let fraction = retry::renewal_fraction((self.random)());
                vec![self.commit(
                    |s| {
                        if let Some(e) = s.enrollment.as_mut() {
                            e.renew_at = identity::renewal_time(now.wall, c.validity, fraction);
                            e.certificate_pem = c.certificate_pem;
                            e.ca_chain_pem = c.ca_chain_pem;
                            e.certificate_not_before = c.validity.not_before;
                            e.certificate_expires = c.validity.not_after;
                        }
                    },
                    AfterSave::Renewed,
                )]
            }
        };
        // A renewal due at a heartbeat goes first; the heartbeat follows.
        if due(self.schedule.heartbeat, now) {
            actions.push(self.call(Call::Heartbeat));
        }
        actions
    }

    /// The server revoked this recorder: drop certificate and key, stop heartbeats, and
    /// wait for a new code.
    fn revoke(&mut self, now: Now) -> Vec<Action> {
        let recorder_id = self
            .state
            .enrollment
            .as_ref()
            .map(|e| e.recorder_id.clone());
        let line = self.log(
            log::Level::Warn,
            format!(
                "recorder {} was revoked by the server: credential dropped, heartbeats stopped; enter a new registration code to enroll again",
                recorder_id.as_deref().unwrap_or("(unknown)")
            ),
        );
        let save = self.commit(
            |s| {
                s.enrollment = None;
                s.revoked = Some(Revocation {
                    recorder_id,
                    at: now.wall,
                });
            },
            AfterSave::InForce,
        );
        self.forget_identity();
        self.phase = Phase::Revoked;
        vec![line, save, Action::ForgetKey]
    }

    /// No more heartbeats, renewals or retries until a new enrollment.
    fn forget_identity(&mut self) {
        self.schedule = Schedule::default();
        self.renewal_not_before = None;
        self.last_failure = None;
        self.last_heartbeat = None;
        self.account_disabled = false;
    }

    /// The renewal deadline from the stored `renew_at`, read against the wall clock now.
    fn schedule_renewal(&mut self, now: Now) {
        self.schedule.renewal = self.state.enrollment.as_ref().map(|e| {
            let wait = (e.renew_at - now.wall).max(time::Duration::ZERO);
            now.mono + Duration::try_from(wait).unwrap_or_default()
        });
        self.hold_renewal();
    }

    /// A renewal that is overdue (it failed) is tried again with the next heartbeat.
    fn renewal_with_next_heartbeat(&mut self, now: Now) {
        if due(self.schedule.renewal, now) {
            self.schedule.renewal = self.schedule.heartbeat;
        }
        self.hold_renewal();
    }

    /// Keeps a scheduled renewal at or after the server's last `Retry-After` for it.
    fn hold_renewal(&mut self) {
        if let (Some(at), Some(not_before)) = (self.schedule.renewal, self.renewal_not_before) {
            self.schedule.renewal = Some(at.max(not_before));
        }
    }

    fn log(&self, level: log::Level, message: impl Into<String>) -> Action {
        Action::Log(LogLine {
            level,
            message: message.into(),
            identity: self.state.identity(),
        })
    }

    fn secs_until(deadline: Option<Instant>, now: Now) -> u64 {
        deadline
            .map(|t| t.saturating_duration_since(now.mono).as_secs())
            .unwrap_or(0)
    }

    /// Plain words for `STATUS=` and the `status` command.
    pub fn status_line(&self, now: Now) -> String {
        let activity = self.activity_line(now);
        match &self.storage_problem {
            Some(problem) => format!("{activity}; {problem}"),
            None => activity,
        }
    }

    fn activity_line(&self, now: Now) -> String {
        let enrollment = match (&self.phase, &self.state.enrollment) {
            (Phase::Revoked, _) => return "revoked by the server: enter a new code".to_string(),
            (Phase::Provisioned(_), _) => {
                return match &self.last_failure {
                    Some(f) => format!(
                        "enrolling with the provisioned code: {}; next try in {} s",
                        f.summary(),
                        Self::secs_until(self.schedule.retry, now)
                    ),
                    None => "waiting for a registration code".to_string(),
                }
            }
            (Phase::Enrolled, Some(enrollment)) => enrollment,
            _ => return "waiting for a registration code".to_string(),
        };
        let account = &enrollment.account.name;
        let account = if self.account_disabled {
            format!("{account}; account disabled by its administrator")
        } else {
            account.clone()
        };
        match (&self.last_failure, self.last_heartbeat) {
            (Some(f), _) => format!(
                "enrolled in {account}; {}; next try in {} s",
                f.summary(),
                Self::secs_until(self.schedule.heartbeat, now)
            ),
            (None, Some(at)) => {
                let ago = (now.wall - at).whole_seconds().max(0);
                format!("enrolled in {account}, last heartbeat {ago} s ago")
            }
            (None, None) => format!("enrolled in {account}, connecting"),
        }
    }

    pub fn status(&self, _now: Now) -> Status {
        let enrollment = self.state.enrollment.as_ref();
        let storage = self
            .storage_problem
            .as_ref()
            .map(|p| Failure::new(FailureKind::Storage, p.clone()));
        let last_failure = self.last_failure.clone().or(storage);
        Status {
            enrolled: enrollment.is_some(),
            revoked: self.phase == Phase::Revoked,
            recorder_id: enrollment.map(|e| e.recorder_id.clone()).or_else(|| {
                self.state
                    .revoked
                    .as_ref()
                    .and_then(|r| r.recorder_id.clone())
            }),
            account: enrollment.map(|e| e.account.clone()),
            server: self.server.clone(),
            last_heartbeat: self.last_heartbeat.map(rfc3339),
            certificate_expires: enrollment.map(|e| rfc3339(e.certificate_expires)),
            renew_at: enrollment.map(|e| rfc3339(e.renew_at)),
            last_error: last_failure.as_ref().map(|f| f.summary().to_string()),
            last_failure,
            daemon_running: true,
            account_disabled: self.account_disabled,
        }
    }
}

#[cfg(test)]
mod tests;
