//! The lifecycle as tables: every phase against every outcome, on a fake clock (a fixed
//! instant plus offsets) and a pinned random source (0.5), so nothing sleeps.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use contera_protocol::v1::{AccountRef, EnrollPreviewResponse, HeartbeatResponse, Instruction};
use contera_protocol::RegistrationCode;
use time::OffsetDateTime;

use super::*;
use crate::control::{Request, Response};
use crate::failure::{Failure, FailureKind};
use crate::identity::Validity;
use crate::state::{Enrollment, Revocation, State};
use crate::zero_touch::{CodeSource, PendingCode};

const DISK_FULL: &str = "No space left on device (os error 28)";

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn account(id: &str) -> AccountRef {
    AccountRef {
        id: id.into(),
        name: format!("Store {id}"),
    }
}

fn code(seed: u8) -> RegistrationCode {
    RegistrationCode::from_random([seed; 23])
}

fn t0_wall() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
}

fn enrollment() -> Enrollment {
    let t = t0_wall();
    Enrollment {
        recorder_id: "r1".into(),
        account: account("a1"),
        server_url: "https://p:1".into(),
        certificate_pem: "CERT".into(),
        ca_chain_pem: "CA".into(),
        certificate_not_before: t,
        certificate_expires: t + time::Duration::days(100),
        renew_at: t + time::Duration::days(80),
        heartbeat_interval_secs: 30,
        enrolled_at: t,
    }
}

fn enrolled() -> State {
    State {
        enrollment: Some(enrollment()),
        ..State::default()
    }
}

fn issued() -> Issued {
    Issued {
        recorder_id: "r2".into(),
        account: account("a2"),
        certificate: Certificate {
            certificate_pem: "NEW".into(),
            ca_chain_pem: "CA".into(),
            validity: Validity {
                not_before: t0_wall(),
                not_after: t0_wall() + time::Duration::days(100),
            },
        },
        heartbeat_interval_secs: 30,
    }
}

fn beat(account_id: &str) -> HeartbeatResponse {
    HeartbeatResponse {
        heartbeat_interval_secs: 30,
        account: account(account_id),
        instructions: Vec::new(),
        server_time: t0_wall(),
    }
}

fn failure(kind: FailureKind) -> Failure {
    let mut f = Failure::new(kind, format!("{kind:?} happened"));
    if kind == FailureKind::Busy {
        f.retry_after_secs = Some(20);
    }
    f
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start0 {
    Unenrolled,
    Provisioned,
    Enrolled,
    Revoked,
}

const PHASES: [Start0; 4] = [
    Start0::Unenrolled,
    Start0::Provisioned,
    Start0::Enrolled,
    Start0::Revoked,
];

/// A lifecycle and a fake shell: saves succeed (or fail with a full disk) at once.
struct Harness {
    life: Lifecycle,
    t0: Instant,
    now: Now,
    disk_full: bool,
    generation: u64,
}

impl Harness {
    fn new(start: Start0) -> (Harness, Vec<Action>) {
        let mut state = State::default();
        let mut provisioned = None;
        match start {
            Start0::Unenrolled => {}
            Start0::Provisioned => {
                provisioned = Some(PendingCode {
                    code: code(9),
                    source: CodeSource::File(PathBuf::from("/var/lib/contera-agent/code")),
                })
            }
            Start0::Enrolled => state.enrollment = Some(enrollment()),
            Start0::Revoked => {
                state.revoked = Some(Revocation {
                    recorder_id: Some("r0".into()),
                    at: t0_wall(),
                })
            }
        }
        Self::with(state, provisioned)
    }

    fn with(state: State, provisioned: Option<PendingCode>) -> (Harness, Vec<Action>) {
        Self::custom(state, provisioned, t0_wall(), Box::new(|| 0.5), true)
    }

    /// Any start: the wall clock at boot, the random source, whether test hooks are on.
    #[cfg_attr(not(feature = "test-hooks"), allow(unused_variables))]
    fn custom(
        state: State,
        provisioned: Option<PendingCode>,
        wall: OffsetDateTime,
        random: Random,
        test_hooks: bool,
    ) -> (Harness, Vec<Action>) {
        let t0 = Instant::now();
        let now = Now { mono: t0, wall };
        let generation = state.generation;
        let (life, actions) = Lifecycle::new(
            Start {
                state,
                provisioned,
                storage_problem: None,
                server: "https://p:1".into(),
                max_backoff: secs(900),
                #[cfg(feature = "test-hooks")]
                test_hooks,
            },
            now,
            random,
        );
        let harness = Harness {
            life,
            t0,
            now,
            disk_full: false,
            generation,
        };
        (harness, actions)
    }

    fn advance(&mut self, by: Duration) {
        self.now.mono += by;
        self.now.wall += by;
    }

    fn at(&self, offset: Duration) -> Instant {
        self.t0 + offset
    }

    /// Handles `event` and every save it leads to; returns all actions, saves included.
    fn drive(&mut self, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        let mut queue: std::collections::VecDeque<Action> =
            self.life.handle(event, self.now).into();
        while let Some(action) = queue.pop_front() {
            if let Action::Save(_) = &action {
                let result = if self.disk_full {
                    Err(DISK_FULL.to_string())
                } else {
                    self.generation += 1;
                    Ok(self.generation)
                };
                let more = self.life.handle(Event::Saved(result), self.now);
                for a in more.into_iter().rev() {
                    queue.push_front(a);
                }
            }
            out.push(action);
        }
        out
    }

    fn outcome(&mut self, outcome: Outcome) -> Vec<Action> {
        self.drive(Event::Outcome(outcome))
    }

    /// A tick that must ask for exactly `call`.
    fn tick_calls(&mut self, call: Call) {
        let calls: Vec<_> = self
            .drive(Event::Tick)
            .into_iter()
            .filter_map(|a| match a {
                Action::Call(c) => Some(c),
                _ => None,
            })
            .collect();
        assert_eq!(calls, vec![call]);
    }

    /// Nothing is overdue that a tick would not act on: no busy loop in the shell.
    fn assert_no_idle_deadline(&mut self, context: &str) {
        if let Some(next) = self.life.schedule().next() {
            if next <= self.now.mono {
                let actions = self.drive(Event::Tick);
                assert!(
                    actions.iter().any(|a| matches!(a, Action::Call(_))),
                    "{context}: a past deadline with nothing to do: {:?}",
                    self.life.schedule()
                );
            }
        }
    }
}

fn replies(actions: &[Action]) -> Vec<Response> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Reply { response, .. } => Some(response.clone()),
            _ => None,
        })
        .collect()
}

fn logs(actions: &[Action]) -> String {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Log(line) => Some(line.message.as_str()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn phase_of(life: &Lifecycle) -> Start0 {
    match life.phase() {
        Phase::Unenrolled => Start0::Unenrolled,
        Phase::Provisioned(_) => Start0::Provisioned,
        Phase::Enrolled => Start0::Enrolled,
        Phase::Revoked => Start0::Revoked,
    }
}

/// How a typed enrollment (`contera-agent enroll --code`) ends, in every phase.
#[derive(Debug, Clone, Copy)]
enum Typed {
    Success,
    Typo,
    Fails(FailureKind),
    DiskFull,
}

#[test]
fn a_typed_enrollment_in_every_phase_with_every_outcome() {
    use FailureKind::*;
    use Start0 as P;
    // (outcome, phase after for each start phase, reply kind (None = enrolled), key forgotten)
    let table: Vec<(Typed, [P; 4], Option<FailureKind>, bool)> = vec![
        (Typed::Success, [P::Enrolled; 4], None, false),
        (Typed::Typo, PHASES, Some(Typo), false),
        (Typed::Fails(Rejected), PHASES, Some(Rejected), false),
        (
            Typed::Fails(Revoked),
            [P::Unenrolled, P::Provisioned, P::Revoked, P::Revoked],
            Some(Revoked),
            true,
        ),
        (Typed::Fails(Unreachable), PHASES, Some(Unreachable), false),
        (Typed::Fails(Clock), PHASES, Some(Clock), false),
        (Typed::Fails(Tls), PHASES, Some(Tls), false),
        (Typed::Fails(Busy), PHASES, Some(Busy), false),
        (Typed::DiskFull, PHASES, Some(Storage), false),
    ];
    for (outcome, after, reply_kind, forgets_key) in table {
        for (start, want_phase) in PHASES.into_iter().zip(after) {
            let context = format!("{start:?} × {outcome:?}");
            let (mut h, _) = Harness::new(start);
            let typed = match outcome {
                Typed::Typo => "K7QD-2M9X-4RTB-8HZP-0WNA-6YCT".to_string(),
                _ => code(1).to_string(),
            };
            let mut actions = h.drive(Event::Control {
                id: 7,
                request: Request::Enroll { code: typed },
            });
            match outcome {
                Typed::Typo => assert!(
                    !actions.iter().any(|a| matches!(a, Action::Call(_))),
                    "{context}: a typo makes no call"
                ),
                _ => {
                    assert!(
                        actions.contains(&Action::Call(Call::Enroll(code(1)))),
                        "{context}"
                    );
                    assert!(logs(&actions).contains("enrolling with code"), "{context}");
                    h.disk_full = matches!(outcome, Typed::DiskFull);
                    let result = match outcome {
                        Typed::Fails(kind) => Err(failure(kind)),
                        _ => Ok(issued()),
                    };
                    actions = h.outcome(Outcome::Enroll(result));
                }
            }
            assert_eq!(phase_of(&h.life), want_phase, "{context}");
            let answer = replies(&actions);
            assert_eq!(answer.len(), 1, "{context}: one reply");
            match (&answer[0], reply_kind) {
                (Response::Enrolled { recorder_id, .. }, None) => {
                    assert_eq!(recorder_id, "r2", "{context}");
                    assert!(actions.contains(&Action::UseCredential), "{context}");
                    let state = h.life.state();
                    assert!(state.revoked.is_none(), "{context}");
                    assert_eq!(state.consumed_codes.len(), 1, "{context}: code remembered");
                    assert_eq!(h.life.schedule().heartbeat, Some(h.now.mono), "{context}");
                }
                (Response::Failed(f), Some(kind)) => assert_eq!(f.kind, kind, "{context}"),
                (other, _) => panic!("{context}: {other:?}"),
            }
            assert_eq!(
                actions.contains(&Action::ForgetKey),
                forgets_key,
                "{context}"
            );
            if matches!(outcome, Typed::DiskFull) {
                let Response::Failed(f) = &answer[0] else {
                    unreachable!()
                };
                assert!(f.message.contains(DISK_FULL), "{context}: {f}");
                assert_eq!(h.life.state().generation, 0, "{context}: nothing stored");
            }
            h.assert_no_idle_deadline(&context);
        }
    }
}

/// How a zero-touch attempt with a provisioned code ends.
#[test]
fn a_provisioned_code_is_retried_only_while_failures_are_transient() {
    use FailureKind::*;
    use Start0 as P;
    // (outcome, phase after, next retry after (seconds), code remembered, key forgotten)
    let table: Vec<(Typed, P, Option<u64>, bool, bool)> = vec![
        (Typed::Success, P::Enrolled, None, true, false),
        (Typed::Fails(Rejected), P::Unenrolled, None, true, false),
        (Typed::Fails(Revoked), P::Revoked, None, true, true),
        // backoff: first step up to 2 s, drawn from [0.1 s, 2 s) at r = 0.5: 1.05 s
        (
            Typed::Fails(Unreachable),
            P::Provisioned,
            Some(1050),
            false,
            false,
        ),
        (
            Typed::Fails(Clock),
            P::Provisioned,
            Some(1050),
            false,
            false,
        ),
        (Typed::Fails(Tls), P::Provisioned, Some(1050), false, false),
        // Re-enabling the account must not need a site visit: retried, not remembered.
        (
            Typed::Fails(AccountDisabled),
            P::Provisioned,
            Some(1050),
            false,
            false,
        ),
        // Retry-After 20 s, plus 10 % × 0.5
        (
            Typed::Fails(Busy),
            P::Provisioned,
            Some(21000),
            false,
            false,
        ),
        (Typed::DiskFull, P::Provisioned, Some(1050), false, false),
    ];
    for (outcome, want_phase, retry_ms, remembered, forgets_key) in table {
        let context = format!("{outcome:?}");
        let (mut h, start) = Harness::new(Start0::Provisioned);
        assert!(logs(&start).contains("zero-touch: enrolling"), "{context}");
        h.tick_calls(Call::Enroll(code(9)));
        h.disk_full = matches!(outcome, Typed::DiskFull);
        let result = match outcome {
            Typed::Fails(kind) => Err(failure(kind)),
            _ => Ok(issued()),
        };
        let actions = h.outcome(Outcome::Enroll(result));
        assert_eq!(phase_of(&h.life), want_phase, "{context}");
        assert!(replies(&actions).is_empty(), "{context}: nobody to answer");
        assert_eq!(
            h.life.schedule().retry,
            retry_ms.map(|ms| h.at(Duration::from_millis(ms))),
            "{context}"
        );
        assert_eq!(
            h.life
                .state()
                .consumed_codes
                .contains(&crate::zero_touch::fingerprint(&code(9))),
            remembered,
            "{context}"
        );
        assert_eq!(
            actions.contains(&Action::ForgetKey),
            forgets_key,
            "{context}"
        );
        // The code file goes once the code is used or refused, never while retrying.
        assert_eq!(
            actions
                .iter()
                .any(|a| matches!(a, Action::DeleteCodeFile(_))),
            retry_ms.is_none(),
            "{context}"
        );
        if want_phase == P::Revoked {
            let revoked = h.life.state().revoked.as_ref().expect("marked revoked");
            assert_eq!(
                revoked.recorder_id, None,
                "{context}: no recorder id is known"
            );
        }
        if retry_ms.is_some() {
            let line = h.life.status_line(h.now);
            assert!(
                line.starts_with("enrolling with the provisioned code: "),
                "{context}: {line}"
            );
            assert!(h.life.status(h.now).last_failure.is_some(), "{context}");
        }
        h.assert_no_idle_deadline(&context);
    }
}

#[derive(Debug, Clone, Copy)]
enum Report {
    Success,
    Moved,
    MovedDiskFull,
    Fails(FailureKind),
    RefusedAfterExpiry,
}

#[test]
fn a_heartbeat_with_every_outcome() {
    use FailureKind::*;
    use Start0 as P;
    // (outcome, phase after, next heartbeat (ms), last failure kind, account id after)
    type Row = (
        Report,
        P,
        Option<u64>,
        Option<FailureKind>,
        Option<&'static str>,
    );
    let table: Vec<Row> = vec![
        // 30 s interval, ±10 % at r = 0.5: exactly 30 s
        (Report::Success, P::Enrolled, Some(30_000), None, Some("a1")),
        (Report::Moved, P::Enrolled, Some(30_000), None, Some("a9")),
        (
            Report::MovedDiskFull,
            P::Enrolled,
            Some(30_000),
            None,
            Some("a1"),
        ),
        (Report::Fails(Revoked), P::Revoked, None, None, None),
        (
            Report::Fails(Unreachable),
            P::Enrolled,
            Some(1050),
            Some(Unreachable),
            Some("a1"),
        ),
        (
            Report::Fails(Clock),
            P::Enrolled,
            Some(1050),
            Some(Clock),
            Some("a1"),
        ),
        (
            Report::Fails(Busy),
            P::Enrolled,
            Some(21_000),
            Some(Busy),
            Some("a1"),
        ),
        (
            Report::Fails(Rejected),
            P::Enrolled,
            Some(1050),
            Some(Rejected),
            Some("a1"),
        ),
        (
            Report::RefusedAfterExpiry,
            P::Enrolled,
            Some(1050),
            Some(Expired),
            Some("a1"),
        ),
    ];
    for (outcome, want_phase, next_ms, want_failure, want_account) in table {
        let context = format!("{outcome:?}");
        let mut state = State::default();
        let mut e = enrollment();
        if matches!(outcome, Report::RefusedAfterExpiry) {
            e.certificate_expires = t0_wall() - time::Duration::seconds(1);
            e.renew_at = t0_wall() + time::Duration::days(1);
        }
        state.enrollment = Some(e);
        let (mut h, _) = Harness::with(state, None);
        h.tick_calls(Call::Heartbeat);
        h.disk_full = matches!(outcome, Report::MovedDiskFull);
        let result = match outcome {
            Report::Success => Ok(beat("a1")),
            Report::Moved | Report::MovedDiskFull => Ok(beat("a9")),
            Report::Fails(kind) => Err(failure(kind)),
            Report::RefusedAfterExpiry => Err(failure(Rejected)),
        };
        let actions = h.outcome(Outcome::Heartbeat(result));
        assert_eq!(phase_of(&h.life), want_phase, "{context}");
        assert_eq!(
            h.life.schedule().heartbeat,
            next_ms.map(|ms| h.at(Duration::from_millis(ms))),
            "{context}"
        );
        assert_eq!(
            h.life.last_failure().map(|f| f.kind),
            want_failure,
            "{context}"
        );
        assert_eq!(
            h.life
                .state()
                .enrollment
                .as_ref()
                .map(|e| e.account.id.as_str()),
            want_account,
            "{context}"
        );
        let status = h.life.status(h.now);
        match outcome {
            Report::Moved => assert!(logs(&actions).contains("recorder moved to account")),
            Report::MovedDiskFull => assert!(logs(&actions).contains(DISK_FULL), "{context}"),
            Report::Fails(Revoked) => {
                assert!(actions.contains(&Action::ForgetKey), "{context}");
                assert!(status.revoked && !status.enrolled, "{context}");
                assert_eq!(status.recorder_id.as_deref(), Some("r1"), "{context}");
                assert_eq!(
                    h.life.status_line(h.now),
                    "revoked by the server: enter a new code"
                );
            }
            Report::Fails(Unreachable) => {
                assert_eq!(status.last_error.as_deref(), Some("server unreachable"));
                assert_eq!(
                    h.life.status_line(h.now),
                    "enrolled in Store a1; server unreachable; next try in 1 s"
                );
            }
            Report::RefusedAfterExpiry => assert!(
                status
                    .last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("enter a registration code")),
                "{context}: {status:?}"
            ),
            _ => {}
        }
        if matches!(outcome, Report::Success | Report::Moved) {
            assert_eq!(status.last_error, None, "{context}");
            assert!(
                h.life.status_line(h.now).starts_with("enrolled in "),
                "{context}"
            );
        }
        h.assert_no_idle_deadline(&context);
    }
}

#[test]
fn failures_back_off_and_a_success_resets_the_backoff() {
    let state = enrolled();
    let (mut h, _) = Harness::with(state, None);
    let mut waits = Vec::new();
    for _ in 0..4 {
        h.tick_calls(Call::Heartbeat);
        h.outcome(Outcome::Heartbeat(Err(failure(FailureKind::Unreachable))));
        let next = h.life.schedule().heartbeat.unwrap();
        waits.push((next - h.now.mono).as_millis());
        h.now.mono = next;
        h.now.wall += Duration::from_secs(1);
    }
    assert_eq!(waits, vec![1050, 2050, 4050, 8050]);
    h.tick_calls(Call::Heartbeat);
    let actions = h.outcome(Outcome::Heartbeat(Ok(beat("a1"))));
    assert!(logs(&actions).contains("heartbeats resumed"));
    h.advance(secs(30));
    h.tick_calls(Call::Heartbeat);
    h.outcome(Outcome::Heartbeat(Err(failure(FailureKind::Unreachable))));
    assert_eq!(
        h.life.schedule().heartbeat.unwrap() - h.now.mono,
        Duration::from_millis(1050)
    );
}

#[test]
fn a_due_renewal_goes_before_the_heartbeat_and_a_failed_one_waits_for_the_next() {
    let mut state = State::default();
    let mut e = enrollment();
    e.renew_at = t0_wall() - time::Duration::hours(1);
    state.enrollment = Some(e);
    let (mut h, _) = Harness::with(state, None);
    h.tick_calls(Call::Renew);
    // The renewal fails: the heartbeat follows at once, and the renewal comes again with
    // the next heartbeat, not in a loop.
    let actions = h.outcome(Outcome::Renew(Err(failure(FailureKind::Unreachable))));
    assert!(actions.contains(&Action::Call(Call::Heartbeat)));
    h.outcome(Outcome::Heartbeat(Ok(beat("a1"))));
    assert_eq!(h.life.schedule().renewal, h.life.schedule().heartbeat);
    h.assert_no_idle_deadline("after a failed renewal");
    h.advance(secs(30));
    h.tick_calls(Call::Renew);
    let mut renewed = issued().certificate;
    renewed.validity.not_after = t0_wall() + time::Duration::days(200);
    let actions = h.outcome(Outcome::Renew(Ok(renewed)));
    assert!(actions.contains(&Action::UseCredential));
    assert!(actions.contains(&Action::Call(Call::Heartbeat)));
    let e = h.life.state().enrollment.clone().unwrap();
    assert_eq!(e.certificate_pem, "NEW");
    // Renewed at 80 % (r = 0.5) of the remaining lifetime.
    let lifetime = e.certificate_expires - h.now.wall;
    assert_eq!(e.renew_at, h.now.wall + lifetime * 0.8);
    assert!(h.life.schedule().renewal.unwrap() > h.now.mono + secs(86_400));
}

#[test]
fn a_renewal_refused_as_revoked_revokes_and_a_disk_full_keeps_the_old_certificate() {
    let mut state = State::default();
    let mut e = enrollment();
    e.renew_at = t0_wall();
    state.enrollment = Some(e);
    let (mut h, _) = Harness::with(state.clone(), None);
    h.tick_calls(Call::Renew);
    h.outcome(Outcome::Renew(Err(failure(FailureKind::Revoked))));
    assert_eq!(h.life.phase(), &Phase::Revoked);
    assert_eq!(h.life.schedule(), &Schedule::default());

    let (mut h, _) = Harness::with(state, None);
    h.tick_calls(Call::Renew);
    h.disk_full = true;
    let actions = h.outcome(Outcome::Renew(Ok(issued().certificate)));
    assert!(logs(&actions).contains("keeping the old certificate"));
    assert!(!actions.contains(&Action::UseCredential));
    assert_eq!(
        h.life.state().enrollment.as_ref().unwrap().certificate_pem,
        "CERT"
    );
}

#[test]
fn the_server_can_ask_for_a_renewal() {
    let state = enrolled();
    let (mut h, _) = Harness::with(state, None);
    h.tick_calls(Call::Heartbeat);
    let mut answer = beat("a1");
    answer.instructions = vec![Instruction::Renew, Instruction::Unknown];
    let actions = h.outcome(Outcome::Heartbeat(Ok(answer)));
    assert!(actions.contains(&Action::Call(Call::Renew)));
}

#[test]
fn unenroll_in_every_phase() {
    for start in PHASES {
        for disk_full in [false, true] {
            let context = format!("{start:?}, disk full {disk_full}");
            let (mut h, _) = Harness::new(start);
            h.disk_full = disk_full;
            let actions = h.drive(Event::Control {
                id: 3,
                request: Request::Unenroll,
            });
            match &replies(&actions)[..] {
                [Response::Unenrolled { was_enrolled }] if !disk_full => {
                    assert_eq!(*was_enrolled, start == Start0::Enrolled, "{context}");
                    assert_eq!(phase_of(&h.life), Start0::Unenrolled, "{context}");
                    assert!(actions.contains(&Action::ForgetKey), "{context}");
                    assert_eq!(h.life.schedule(), &Schedule::default(), "{context}");
                }
                [Response::Failed(f)] if disk_full => {
                    assert_eq!(f.kind, FailureKind::Storage, "{context}");
                    assert_eq!(phase_of(&h.life), start, "{context}: nothing changed");
                    assert!(!actions.contains(&Action::ForgetKey), "{context}");
                }
                other => panic!("{context}: {other:?}"),
            }
        }
    }
}

#[test]
fn status_is_answered_in_every_phase_and_a_tick_with_nothing_due_does_nothing() {
    for start in PHASES {
        let (mut h, _) = Harness::new(start);
        let actions = h.drive(Event::Control {
            id: 1,
            request: Request::Status,
        });
        let [Response::Status(status)] = &replies(&actions)[..] else {
            panic!("{start:?}: {actions:?}");
        };
        assert_eq!(status.enrolled, start == Start0::Enrolled, "{start:?}");
        assert_eq!(status.revoked, start == Start0::Revoked, "{start:?}");
        assert_eq!(status.server, "https://p:1");
        if matches!(start, Start0::Unenrolled | Start0::Revoked) {
            assert!(h.drive(Event::Tick).is_empty(), "{start:?}");
            assert_eq!(h.life.schedule().next(), None, "{start:?}");
        }
    }
}

#[test]
fn stopping_says_goodbye_only_when_enrolled() {
    for start in PHASES {
        let (mut h, _) = Harness::new(start);
        let actions = h.drive(Event::Stop);
        assert_eq!(
            actions.contains(&Action::Call(Call::Goodbye)),
            start == Start0::Enrolled,
            "{start:?}"
        );
    }
}

#[test]
fn a_used_or_revoked_provisioned_code_is_not_tried_at_start() {
    let pending = PendingCode {
        code: code(9),
        source: CodeSource::Config,
    };
    let mut used = State::default();
    used.consumed_codes
        .push(crate::zero_touch::fingerprint(&code(9)));
    let (h, actions) = Harness::with(used, Some(pending.clone()));
    assert_eq!(h.life.phase(), &Phase::Unenrolled);
    assert!(logs(&actions).contains("was used before"));

    let revoked = State {
        revoked: Some(Revocation {
            recorder_id: None,
            at: t0_wall(),
        }),
        ..State::default()
    };
    let (h, _) = Harness::with(revoked, Some(pending));
    assert_eq!(h.life.phase(), &Phase::Revoked);
    assert_eq!(h.life.schedule().next(), None);
}

#[test]
fn a_reload_resets_the_backoff_to_the_new_cap() {
    let state = enrolled();
    let (mut h, _) = Harness::with(state, None);
    h.drive(Event::Reloaded {
        max_backoff: secs(1),
    });
    for _ in 0..3 {
        h.tick_calls(Call::Heartbeat);
        h.outcome(Outcome::Heartbeat(Err(failure(FailureKind::Unreachable))));
        let next = h.life.schedule().heartbeat.unwrap();
        assert!(next - h.now.mono <= secs(1));
        h.now.mono = next;
    }
}

#[cfg(feature = "test-hooks")]
#[test]
fn the_freeze_hook_freezes_only_when_turned_on() {
    let (mut h, _) = Harness::new(Start0::Unenrolled);
    let actions = h.drive(Event::Control {
        id: 1,
        request: Request::Freeze { secs: 2 },
    });
    assert!(actions.contains(&Action::Freeze(secs(2))));
    assert_eq!(replies(&actions), vec![Response::Done]);

    let (mut off, _) = Harness::custom(State::default(), None, t0_wall(), Box::new(|| 0.5), false);
    let actions = off.drive(Event::Control {
        id: 1,
        request: Request::Freeze { secs: 2 },
    });
    assert!(!actions.iter().any(|a| matches!(a, Action::Freeze(_))));
    let [Response::Failed(f)] = &replies(&actions)[..] else {
        panic!("{actions:?}");
    };
    assert_eq!(f.kind, FailureKind::Internal);
}

#[test]
fn a_preview_in_every_phase_answers_and_changes_nothing() {
    use FailureKind::*;
    let outcomes: Vec<(Result<EnrollPreviewResponse, Failure>, Response)> = vec![
        (
            Ok(EnrollPreviewResponse {
                account_name: "Store 12".into(),
                parent_name: Some("Acme".into()),
            }),
            Response::Preview {
                account_name: "Store 12".into(),
                parent_name: Some("Acme".into()),
            },
        ),
        (Err(failure(Rejected)), Response::Failed(failure(Rejected))),
        (
            Err(failure(Unreachable)),
            Response::Failed(failure(Unreachable)),
        ),
        (Err(failure(Busy)), Response::Failed(failure(Busy))),
    ];
    for start in PHASES {
        for (result, want) in &outcomes {
            let context = format!("{start:?} × {result:?}");
            let (mut h, _) = Harness::new(start);
            let state_before = h.life.state().clone();
            let schedule_before = format!("{:?}", h.life.schedule());
            let actions = h.drive(Event::Control {
                id: 7,
                request: Request::Preview {
                    code: code(3).to_string(),
                },
            });
            assert_eq!(
                actions,
                vec![Action::Call(Call::Preview(code(3)))],
                "{context}"
            );
            let actions = h.outcome(Outcome::Preview(result.clone()));
            assert_eq!(
                actions,
                vec![Action::Reply {
                    id: 7,
                    response: want.clone()
                }],
                "{context}"
            );
            assert_eq!(phase_of(&h.life), start, "{context}");
            assert_eq!(h.life.state(), &state_before, "{context}");
            if start == Start0::Provisioned && result == &Err(failure(Busy)) {
                // The one change: 429 holds enrollments, the provisioned one included.
                assert_eq!(h.life.schedule().retry, Some(h.at(secs(20))), "{context}");
            } else {
                assert_eq!(
                    format!("{:?}", h.life.schedule()),
                    schedule_before,
                    "{context}"
                );
            }
            assert!(h.life.last_failure().is_none(), "{context}");
        }
        // A mistyped code is answered at once, without a call.
        let (mut h, _) = Harness::new(start);
        let actions = h.drive(Event::Control {
            id: 8,
            request: Request::Preview {
                code: "K7QD-0000".into(),
            },
        });
        let [Action::Reply {
            id: 8,
            response: Response::Failed(f),
        }] = &actions[..]
        else {
            panic!("{start:?}: {actions:?}");
        };
        assert_eq!(f.kind, Typo);
    }
}

#[test]
fn a_renewal_scheduled_under_a_wrong_clock_happens_once_the_clock_is_set() {
    // Booted with the wall clock in 2001 (no RTC battery): renew_at looks 25 years away.
    let boot_wall = OffsetDateTime::from_unix_timestamp(1_000_000_000).unwrap();
    let (mut h, _) = Harness::custom(enrolled(), None, boot_wall, Box::new(|| 0.5), true);
    h.tick_calls(Call::Heartbeat);
    h.outcome(Outcome::Heartbeat(Ok(beat("a1"))));
    assert!(h.life.schedule().renewal.unwrap() > h.now.mono + secs(86_400 * 365));
    // NTP sets the clock: 81 days after enrollment, past renew_at (day 80).
    h.now.wall = t0_wall() + time::Duration::days(81);
    h.advance(secs(30));
    h.tick_calls(Call::Heartbeat);
    h.outcome(Outcome::Heartbeat(Ok(beat("a1"))));
    h.advance(secs(40));
    h.tick_calls(Call::Renew);
}

#[test]
fn requests_that_need_a_call_wait_while_one_is_out_and_stray_outcomes_change_nothing() {
    let (mut h, _) = Harness::new(Start0::Enrolled);
    h.tick_calls(Call::Heartbeat);
    for request in [
        Request::Enroll {
            code: code(1).to_string(),
        },
        Request::Preview {
            code: code(1).to_string(),
        },
        Request::Unenroll,
    ] {
        let actions = h.drive(Event::Control { id: 5, request });
        let [Action::Reply {
            id: 5,
            response: Response::Failed(f),
        }] = &actions[..]
        else {
            panic!("{actions:?}");
        };
        assert_eq!(f.kind, FailureKind::Busy);
        assert_eq!(f.retry_after_secs, Some(1));
    }
    // Status never waits.
    let actions = h.drive(Event::Control {
        id: 6,
        request: Request::Status,
    });
    assert!(matches!(&replies(&actions)[..], [Response::Status(_)]));
    // The heartbeat's outcome still lands, then stray outcomes are ignored.
    h.outcome(Outcome::Heartbeat(Ok(beat("a1"))));
    assert!(h.life.schedule().heartbeat.unwrap() > h.now.mono);
    let state = h.life.state().clone();
    assert!(h
        .outcome(Outcome::Renew(Ok(issued().certificate)))
        .is_empty());
    assert!(h
        .outcome(Outcome::Heartbeat(Err(failure(FailureKind::Revoked))))
        .is_empty());
    assert!(h.outcome(Outcome::Enroll(Ok(issued()))).is_empty());
    assert_eq!(h.life.state(), &state);
    assert_eq!(phase_of(&h.life), Start0::Enrolled);
}

#[test]
fn heartbeat_jitter_and_the_renewal_point_follow_the_random_source() {
    let mut seen_waits = Vec::new();
    let mut seen_renewals = Vec::new();
    for r in [0.0, 0.999] {
        let (mut h, _) =
            Harness::custom(State::default(), None, t0_wall(), Box::new(move || r), true);
        h.drive(Event::Control {
            id: 1,
            request: Request::Enroll {
                code: code(1).to_string(),
            },
        });
        h.outcome(Outcome::Enroll(Ok(issued())));
        h.tick_calls(Call::Heartbeat);
        h.outcome(Outcome::Heartbeat(Ok(beat("a2"))));
        let wait = h.life.schedule().heartbeat.unwrap() - h.now.mono;
        // 30 s ± 10 %.
        assert!(wait >= secs(27) && wait <= secs(33), "r={r}: {wait:?}");
        seen_waits.push(wait);
        // Renewal between 70 % and 90 % of the 100-day lifetime.
        let e = h.life.state().enrollment.clone().unwrap();
        let lifetime = e.certificate_expires - e.certificate_not_before;
        let at = (e.renew_at - e.certificate_not_before) / lifetime;
        assert!((0.69..=0.91).contains(&at), "r={r}: renews at {at}");
        seen_renewals.push(at);
    }
    assert!(seen_waits[1] - seen_waits[0] > secs(5), "{seen_waits:?}");
    assert!(
        seen_renewals[1] - seen_renewals[0] > 0.15,
        "{seen_renewals:?}"
    );
}

#[test]
fn a_disabled_account_keeps_heartbeats_holds_renewal_and_is_reported_until_enabled() {
    use Instruction::{AccountDisabled, Renew};
    // (time passed after the disabled answer, instructions in it, call right after it,
    // call at the next tick while disabled, call at the next tick once enabled)
    type Row = (u64, Vec<Instruction>, Option<Call>, Call, Call);
    const DAY: u64 = 86_400;
    let table: Vec<Row> = vec![
        // Nothing due but the heartbeat, at the interval.
        (
            30,
            vec![AccountDisabled],
            None,
            Call::Heartbeat,
            Call::Heartbeat,
        ),
        // A server asking for renewal too is not followed: renewal is refused meanwhile.
        (
            30,
            vec![AccountDisabled, Renew],
            None,
            Call::Heartbeat,
            Call::Heartbeat,
        ),
        // Renewal due (renew_at is day 80): held while disabled, done once enabled.
        (
            81 * DAY,
            vec![AccountDisabled],
            None,
            Call::Heartbeat,
            Call::Renew,
        ),
        // The certificate expired (day 100): renewal is tried anyway, since heartbeats
        // with it are refused and would never tell that the account is enabled again.
        (
            101 * DAY,
            vec![AccountDisabled],
            None,
            Call::Renew,
            Call::Renew,
        ),
    ];
    for (wait, instructions, right_after, while_disabled, once_enabled) in table {
        let context = format!("{wait} s, {instructions:?}");
        let (mut h, _) = Harness::with(enrolled(), None);
        h.tick_calls(Call::Heartbeat);
        let mut answer = beat("a1");
        answer.instructions = instructions;
        let actions = h.outcome(Outcome::Heartbeat(Ok(answer)));
        let calls: Vec<_> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Call(c) => Some(c.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(
            calls,
            right_after.into_iter().collect::<Vec<_>>(),
            "{context}"
        );
        assert!(
            logs(&actions).contains("disabled by its administrator"),
            "{context}"
        );
        let status = h.life.status(h.now);
        assert!(status.account_disabled && status.enrolled, "{context}");
        assert_eq!(status.last_error, None, "{context}");
        assert_eq!(
            h.life.status_line(h.now),
            "enrolled in Store a1; account disabled by its administrator, last heartbeat 0 s ago",
            "{context}"
        );
        // Heartbeats go on at the interval, jittered as usual.
        assert_eq!(
            h.life.schedule().heartbeat,
            Some(h.at(secs(30))),
            "{context}"
        );

        h.advance(secs(wait));
        h.tick_calls(while_disabled.clone());
        // Enabled again, from the same disabled start: the next answer carries no
        // instruction, and what was held is due again.
        let (mut h, _) = Harness::with(enrolled(), None);
        h.tick_calls(Call::Heartbeat);
        let mut answer = beat("a1");
        answer.instructions = vec![AccountDisabled];
        h.outcome(Outcome::Heartbeat(Ok(answer)));
        h.advance(secs(30));
        h.tick_calls(Call::Heartbeat);
        let actions = h.outcome(Outcome::Heartbeat(Ok(beat("a1"))));
        assert!(logs(&actions).contains("enabled again"), "{context}");
        assert!(!h.life.status(h.now).account_disabled, "{context}");
        assert_eq!(
            h.life.status_line(h.now),
            "enrolled in Store a1, last heartbeat 0 s ago",
            "{context}"
        );
        h.advance(secs(wait));
        h.tick_calls(once_enabled);
    }
}

fn busy_for(retry_after_secs: u64) -> Failure {
    let mut f = failure(FailureKind::Busy);
    f.retry_after_secs = Some(retry_after_secs);
    f
}

fn calls(actions: &[Action]) -> Vec<Call> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Call(c) => Some(c.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_renewal_answered_429_waits_for_retry_after_while_heartbeats_go_on() {
    let mut state = State::default();
    let mut e = enrollment();
    e.renew_at = t0_wall() - time::Duration::hours(1);
    state.enrollment = Some(e);
    let (mut h, _) = Harness::with(state, None);
    h.tick_calls(Call::Renew);
    // Retry-After 120 s, plus 10 % × 0.5: no renewal before 126 s. The heartbeat that
    // was due goes out: the 429 was about renewals.
    let actions = h.outcome(Outcome::Renew(Err(busy_for(120))));
    assert!(logs(&actions).contains("next try in 126 s"), "{actions:?}");
    assert_eq!(calls(&actions), vec![Call::Heartbeat]);
    assert_eq!(h.life.schedule().renewal, Some(h.at(secs(126))));
    h.outcome(Outcome::Heartbeat(Ok(beat("a1"))));
    assert_eq!(h.life.schedule().renewal, Some(h.at(secs(126))));
    // Heartbeats at 30, 60, 90 and 120 s carry no renewal, even when the server asks
    // for one: it waits for its time.
    for n in 1..=4 {
        h.now.mono = h.at(secs(30 * n));
        h.tick_calls(Call::Heartbeat);
        let mut answer = beat("a1");
        if n == 2 {
            answer.instructions = vec![Instruction::Renew];
        }
        let actions = h.outcome(Outcome::Heartbeat(Ok(answer)));
        assert!(calls(&actions).is_empty(), "heartbeat {n}: {actions:?}");
        assert_eq!(h.life.schedule().renewal, Some(h.at(secs(126))), "{n}");
        h.assert_no_idle_deadline(&format!("heartbeat {n}"));
    }
    h.now.mono = h.at(secs(126)) - Duration::from_millis(1);
    assert!(calls(&h.drive(Event::Tick)).is_empty());
    h.now.mono = h.at(secs(126));
    h.tick_calls(Call::Renew);
    // Renewed: the hold is over, and a renewal the server asks for goes at once.
    let mut renewed = issued().certificate;
    renewed.validity.not_after = t0_wall() + time::Duration::days(200);
    h.outcome(Outcome::Renew(Ok(renewed)));
    h.now.mono = h.at(secs(150));
    h.tick_calls(Call::Heartbeat);
    let mut answer = beat("a1");
    answer.instructions = vec![Instruction::Renew];
    let actions = h.outcome(Outcome::Heartbeat(Ok(answer)));
    assert_eq!(calls(&actions), vec![Call::Renew]);
}

#[test]
fn a_heartbeat_answered_429_waits_for_retry_after_and_does_not_step_the_backoff() {
    let (mut h, _) = Harness::with(enrolled(), None);
    h.tick_calls(Call::Heartbeat);
    h.outcome(Outcome::Heartbeat(Err(busy_for(300))));
    // 300 s plus 10 % × 0.5.
    assert_eq!(h.life.schedule().heartbeat, Some(h.at(secs(315))));
    assert_eq!(
        h.life.last_failure().map(|f| f.kind),
        Some(FailureKind::Busy)
    );
    h.now.mono = h.at(secs(315));
    h.tick_calls(Call::Heartbeat);
    // An outage after it starts the backoff at its first step: busy was not down.
    h.outcome(Outcome::Heartbeat(Err(failure(FailureKind::Unreachable))));
    assert_eq!(
        h.life.schedule().heartbeat,
        Some(h.at(secs(315)) + Duration::from_millis(1050))
    );
}

#[test]
fn an_expired_certificate_answered_429_is_busy_not_refused() {
    let mut e = enrollment();
    e.certificate_expires = t0_wall() - time::Duration::seconds(1);
    e.renew_at = t0_wall() + time::Duration::days(1);
    let state = State {
        enrollment: Some(e),
        ..State::default()
    };
    let (mut h, _) = Harness::with(state, None);
    h.tick_calls(Call::Heartbeat);
    h.outcome(Outcome::Heartbeat(Err(busy_for(20))));
    assert_eq!(
        h.life.last_failure().map(|f| f.kind),
        Some(FailureKind::Busy)
    );
}

#[test]
fn an_enrollment_answered_429_holds_every_enrollment_until_retry_after() {
    for start in [Start0::Unenrolled, Start0::Enrolled, Start0::Revoked] {
        let context = format!("{start:?}");
        let (mut h, _) = Harness::new(start);
        let enroll = || Event::Control {
            id: 1,
            request: Request::Enroll {
                code: code(1).to_string(),
            },
        };
        let preview = || Event::Control {
            id: 2,
            request: Request::Preview {
                code: code(1).to_string(),
            },
        };
        if start == Start0::Enrolled {
            h.tick_calls(Call::Heartbeat);
            h.outcome(Outcome::Heartbeat(Ok(beat("a1"))));
        }
        assert_eq!(calls(&h.drive(enroll())), vec![Call::Enroll(code(1))]);
        let actions = h.outcome(Outcome::Enroll(Err(busy_for(20))));
        assert!(
            matches!(&replies(&actions)[..], [Response::Failed(f)] if f.kind == FailureKind::Busy),
            "{context}: {actions:?}"
        );
        // 5 s later: answered here, with the seconds left; nothing goes to the server.
        h.advance(secs(5));
        for event in [enroll(), preview()] {
            let actions = h.drive(event);
            assert!(calls(&actions).is_empty(), "{context}: {actions:?}");
            let [Response::Failed(f)] = &replies(&actions)[..] else {
                panic!("{context}: {actions:?}");
            };
            assert_eq!(f.kind, FailureKind::Busy, "{context}");
            assert_eq!(f.retry_after_secs, Some(15), "{context}");
            assert!(f.message.contains("in 15 s"), "{context}: {f}");
        }
        h.advance(secs(15));
        assert_eq!(
            calls(&h.drive(preview())),
            vec![Call::Preview(code(1))],
            "{context}"
        );
        // A preview answered 429 holds enrollments too.
        h.outcome(Outcome::Preview(Err(busy_for(10))));
        h.advance(secs(9));
        assert!(calls(&h.drive(enroll())).is_empty(), "{context}");
        h.advance(secs(1));
        assert_eq!(
            calls(&h.drive(enroll())),
            vec![Call::Enroll(code(1))],
            "{context}"
        );
    }
}

#[test]
fn a_provisioned_code_answered_429_is_tried_again_only_after_retry_after() {
    let (mut h, _) = Harness::new(Start0::Provisioned);
    h.tick_calls(Call::Enroll(code(9)));
    h.outcome(Outcome::Enroll(Err(busy_for(60))));
    // 60 s plus 10 % × 0.5; a typed code meanwhile is held as well.
    assert_eq!(h.life.schedule().retry, Some(h.at(secs(63))));
    h.advance(secs(30));
    let actions = h.drive(Event::Control {
        id: 4,
        request: Request::Enroll {
            code: code(1).to_string(),
        },
    });
    assert!(calls(&actions).is_empty(), "{actions:?}");
    assert_eq!(h.life.phase(), &Phase::Provisioned(provisioned_code()));
    h.now.mono = h.at(secs(63));
    h.tick_calls(Call::Enroll(code(9)));
}

#[test]
fn a_provisioned_retry_waits_for_a_typed_enrollments_retry_after() {
    let (mut h, _) = Harness::new(Start0::Provisioned);
    h.tick_calls(Call::Enroll(code(9)));
    // The provisioned try fails (server down): next try at 1.05 s.
    h.outcome(Outcome::Enroll(Err(failure(FailureKind::Unreachable))));
    assert_eq!(
        h.life.schedule().retry,
        Some(h.at(Duration::from_millis(1050)))
    );
    // A typed code is answered 429 with Retry-After 40 s before that.
    h.advance(Duration::from_millis(500));
    let actions = h.drive(Event::Control {
        id: 4,
        request: Request::Enroll {
            code: code(1).to_string(),
        },
    });
    assert_eq!(calls(&actions), vec![Call::Enroll(code(1))]);
    h.outcome(Outcome::Enroll(Err(busy_for(40))));
    // The provisioned retry comes due, but waits until the 40 s are over.
    h.now.mono = h.at(Duration::from_millis(1050));
    assert!(calls(&h.drive(Event::Tick)).is_empty());
    let until = h.at(Duration::from_millis(40_500));
    assert_eq!(h.life.schedule().retry, Some(until));
    h.now.mono = until;
    h.tick_calls(Call::Enroll(code(9)));
}

fn provisioned_code() -> PendingCode {
    PendingCode {
        code: code(9),
        source: CodeSource::File(PathBuf::from("/var/lib/contera-agent/code")),
    }
}
