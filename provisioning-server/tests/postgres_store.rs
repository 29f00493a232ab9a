//! The PostgreSQL store under what several server replicas do to one database at once:
//! each replica is a store opened separately (its own pool), as another process would.
//! Runs when CONTERA_TEST_POSTGRES_URL names a server whose role may create databases;
//! each test works in a database of its own, created and dropped around it.

use std::sync::Arc;

use contera_provisioning::store::{
    self, Account, AccountKind, DatabaseUrl, EnrollKind, EnrollRecord, FactChange, Invitation,
    NewCode, Presence, RecorderQuery, Store, StoreError, User, UserStatus, ADMINISTRATORS_GROUP,
};
use sqlx::{Connection, Executor, PgConnection};

const URL_VAR: &str = "CONTERA_TEST_POSTGRES_URL";

/// The server's URL, or None after reporting the skip loudly (straight to stderr, which
/// the test runner does not capture); with CONTERA_REQUIRE_ALL_TESTS set a skip fails.
fn server_url(test: &str) -> Option<String> {
    match std::env::var(URL_VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            let message = format!("SKIPPED {test}: set {URL_VAR} (e.g. postgres://USER:PASSWORD@127.0.0.1/postgres) to run it");
            let required = std::env::var_os("CONTERA_REQUIRE_ALL_TESTS")
                .is_some_and(|v| !v.is_empty() && v != "0");
            if required {
                panic!("{message} (CONTERA_REQUIRE_ALL_TESTS is set: every test must run)");
            }
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "\n{message}");
            None
        }
    }
}

/// `url` with its database name replaced.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let (scheme, rest) = base.split_once("://").expect("a URL");
    let authority = rest.split('/').next().unwrap_or_default();
    format!("{scheme}://{authority}/{database}{query}")
}

/// A database of its own for one test, dropped when the test ends (even by a panic).
struct TestDb {
    server: String,
    name: String,
    url: String,
}

impl TestDb {
    async fn create(server: &str) -> TestDb {
        let name = format!("contera_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(server).await.expect("connect");
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .expect("CREATE DATABASE");
        TestDb {
            server: server.to_owned(),
            url: with_database(server, &name),
            name,
        }
    }

    /// One replica's store: its own pool on the test database.
    async fn replica(&self) -> Arc<dyn Store> {
        store::open(&DatabaseUrl::Postgres(self.url.clone()), 3)
            .await
            .expect("open the PostgreSQL store")
    }

    /// A plain connection, to look at what the store wrote.
    async fn connection(&self) -> PgConnection {
        PgConnection::connect(&self.url).await.expect("connect")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let server = self.server.clone();
        let name = self.name.clone();
        // Drop cannot wait on the test's runtime: a runtime of its own, on a thread.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                if let Ok(mut admin) = PgConnection::connect(&server).await {
                    let _ = admin
                        .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                        .await;
                }
            });
        })
        .join();
    }
}

fn account(id: &str, parent: Option<&str>) -> Account {
    Account {
        id: id.into(),
        name: id.into(),
        kind: if parent.is_some() {
            AccountKind::Customer
        } else {
            AccountKind::Partner
        },
        parent_id: parent.map(str::to_owned),
        code_public_id: None,
        created_at: 1,
        address: String::new(),
        contact: None,
        disabled_at: None,
        disabled_by: None,
        disabled_via: None,
    }
}

fn code(public_id: &str, max_uses: Option<i64>) -> NewCode {
    NewCode {
        public_id: public_id.into(),
        secret_hash: vec![7; 32],
        sealed: contera_provisioning::secrets::SealedCode {
            nonce: vec![0; 12],
            ciphertext: vec![1; 40],
        },
        label: "code".into(),
        expires_at: None,
        max_uses,
        created_by: "test".into(),
        created_at: 1,
    }
}

fn enrollment(recorder_id: &str, key: &str, account_id: &str, code: &str) -> EnrollRecord {
    EnrollRecord {
        recorder_id: recorder_id.into(),
        account_id: account_id.into(),
        key_fingerprint: key.into(),
        serial: format!("SER-{key}"),
        mac: None,
        model: "NV-16".into(),
        firmware: None,
        agent_version: "test".into(),
        code_public_id: code.into(),
        cert_serial: format!("cert-{recorder_id}"),
        cert_not_after: 1_000_000,
        now: 10,
    }
}

/// Enrolls as the enrollment handler does: signs for the id it was given, and on
/// EnrollmentRaced signs again for the id the store names (or a fresh one) and retries.
async fn enroll_like_the_server(
    store: &dyn Store,
    key: &str,
    account_id: &str,
    code: &str,
) -> Result<(String, EnrollKind), StoreError> {
    let mut id = uuid::Uuid::new_v4().to_string();
    for _ in 0..10 {
        match store.enroll(&enrollment(&id, key, account_id, code)).await {
            Ok(outcome) => return Ok((outcome.recorder.id, outcome.kind)),
            Err(StoreError::EnrollmentRaced { recorder_id }) => {
                id = recorder_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
            }
            Err(e) => return Err(e),
        }
    }
    panic!("enrollment of {key} raced ten times");
}

async fn count(conn: &mut PgConnection, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(conn).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_enrollments_of_one_key_from_several_replicas_make_one_recorder() {
    let Some(server) =
        server_url("concurrent_enrollments_of_one_key_from_several_replicas_make_one_recorder")
    else {
        return;
    };
    let db = TestDb::create(&server).await;
    let replicas = [db.replica().await, db.replica().await, db.replica().await];
    replicas[0]
        .create_account(&account("a", None), &code("CA", None), "test")
        .await
        .unwrap();
    const KEYS: usize = 12;
    const ATTEMPTS: usize = 6;
    for k in 0..KEYS {
        let key = format!("key-{k}");
        let barrier = Arc::new(tokio::sync::Barrier::new(ATTEMPTS));
        let mut tasks = Vec::new();
        for attempt in 0..ATTEMPTS {
            let store = replicas[attempt % replicas.len()].clone();
            let key = key.clone();
            let barrier = barrier.clone();
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                enroll_like_the_server(&*store, &key, "a", "CA").await
            }));
        }
        let mut ids = Vec::new();
        let mut new = 0;
        for task in tasks {
            let (id, kind) = task.await.unwrap().unwrap();
            if matches!(kind, EnrollKind::New { .. }) {
                new += 1;
            }
            ids.push(id);
        }
        ids.dedup();
        assert_eq!(ids.len(), 1, "{key}: every attempt ends on one recorder");
        assert_eq!(new, 1, "{key}: exactly one attempt made it");
        let recorder = replicas[1].recorder_by_key(&key).await.unwrap().unwrap();
        assert_eq!(recorder.id, ids[0]);
    }
    let mut conn = db.connection().await;
    assert_eq!(
        count(&mut conn, "SELECT COUNT(*) FROM recorders").await,
        KEYS as i64
    );
    assert_eq!(
        count(
            &mut conn,
            "SELECT COUNT(*) FROM audit_log WHERE action = 'recorder.enrolled'"
        )
        .await,
        KEYS as i64
    );
    // Every successful enrollment is a use; the raced ones were rolled back with theirs.
    let code = replicas[2].code("CA").await.unwrap().unwrap();
    assert_eq!(code.uses, (KEYS * ATTEMPTS) as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_enrollments_from_several_replicas_never_exceed_max_uses() {
    let Some(server) =
        server_url("concurrent_enrollments_from_several_replicas_never_exceed_max_uses")
    else {
        return;
    };
    let db = TestDb::create(&server).await;
    let replicas = [db.replica().await, db.replica().await, db.replica().await];
    replicas[0]
        .create_account(&account("a", None), &code("CA", Some(5)), "test")
        .await
        .unwrap();
    const ATTEMPTS: usize = 24;
    let barrier = Arc::new(tokio::sync::Barrier::new(ATTEMPTS));
    let mut tasks = Vec::new();
    for i in 0..ATTEMPTS {
        let store = replicas[i % replicas.len()].clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            enroll_like_the_server(&*store, &format!("key-{i}"), "a", "CA").await
        }));
    }
    let (mut enrolled, mut refused) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => enrolled += 1,
            Err(StoreError::CodeRefused) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!((enrolled, refused), (5, ATTEMPTS - 5));
    assert_eq!(replicas[1].code("CA").await.unwrap().unwrap().uses, 5);
    let mut conn = db.connection().await;
    assert_eq!(count(&mut conn, "SELECT COUNT(*) FROM recorders").await, 5);
    assert_eq!(
        count(
            &mut conn,
            "SELECT COUNT(*) FROM audit_log WHERE action = 'certificate.issued'"
        )
        .await,
        5,
        "a refused enrollment writes nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_presence_flush_of_5000_rows_reaches_every_row_and_keeps_revocations_and_goodbyes() {
    let Some(server) = server_url(
        "a_presence_flush_of_5000_rows_reaches_every_row_and_keeps_revocations_and_goodbyes",
    ) else {
        return;
    };
    let db = TestDb::create(&server).await;
    let store = db.replica().await;
    store
        .create_account(&account("a", None), &code("CA", None), "test")
        .await
        .unwrap();
    let mut conn = db.connection().await;
    // 5,000 recorders written directly: enrolling them one by one only adds time.
    conn.execute(
        "INSERT INTO recorders (id, account_id, key_fingerprint, serial, model, enrolled_at, \
         updated_at, cert_serial, cert_not_after) \
         SELECT 'r' || lpad(n::text, 5, '0'), 'a', 'k' || n, 'S' || n, 'M', 1, 1, 'c' || n, 1000000 \
         FROM generate_series(0, 4999) AS n",
    )
    .await
    .unwrap();
    assert!(store.revoke_recorder("r00007", 50, "test").await.unwrap());
    // A goodbye at 200 stands against a heartbeat from 150 still in flight.
    store
        .record_goodbye("r00008", 200, "shutdown")
        .await
        .unwrap();

    // Reverse order in the batch: the store sorts it.
    let batch: Vec<Presence> = (0..5000)
        .rev()
        .map(|n| Presence {
            recorder_id: format!("r{n:05}"),
            last_seen: 150,
            online_until: 240,
            status: (n % 2 == 0).then(|| format!(r#"{{"disks":{n}}}"#)),
            uptime_secs: Some(n),
        })
        .collect();
    store.record_presence(&batch).await.unwrap();

    assert_eq!(
        count(
            &mut conn,
            "SELECT COUNT(*) FROM recorders WHERE last_seen = 150"
        )
        .await,
        4999,
        "every row but the one whose goodbye is newer"
    );
    assert_eq!(
        count(
            &mut conn,
            "SELECT COUNT(*) FROM recorders WHERE online_until = 240"
        )
        .await,
        4998,
        "not the revoked one, not the one that said goodbye"
    );
    let revoked = store.recorder("r00007").await.unwrap().unwrap();
    assert_eq!((revoked.last_seen, revoked.online_until), (Some(150), None));
    let gone = store.recorder("r00008").await.unwrap().unwrap();
    assert_eq!(
        (
            gone.last_seen,
            gone.online_until,
            gone.offline_reason.as_deref()
        ),
        (Some(200), Some(200), Some("shutdown"))
    );
    // The status kept apart from its uptime, and put together again when read.
    let even = store.recorder("r00042").await.unwrap().unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(even.status.as_deref().unwrap()).unwrap(),
        serde_json::json!({ "disks": 42, "uptime_secs": 42 })
    );
    let odd = store.recorder("r00043").await.unwrap().unwrap();
    assert_eq!(odd.status.as_deref(), Some(r#"{"uptime_secs":43}"#));

    // A later flush without a status keeps the stored one and moves uptime on.
    store
        .record_presence(&[Presence {
            recorder_id: "r00042".into(),
            last_seen: 160,
            online_until: 250,
            status: None,
            uptime_secs: Some(52),
        }])
        .await
        .unwrap();
    let even = store.recorder("r00042").await.unwrap().unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(even.status.as_deref().unwrap()).unwrap(),
        serde_json::json!({ "disks": 42, "uptime_secs": 52 })
    );
    assert_eq!(
        count(&mut conn, "SELECT COUNT(*) FROM fact_changes").await,
        1,
        "heartbeats change no fact; only the revocation does"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fact_changes_are_recorded_by_triggers_on_revoke_move_key_change_and_account_disable() {
    let Some(server) = server_url(
        "fact_changes_are_recorded_by_triggers_on_revoke_move_key_change_and_account_disable",
    ) else {
        return;
    };
    let db = TestDb::create(&server).await;
    let store = db.replica().await;
    let other = db.replica().await;
    store
        .create_account(&account("p", None), &code("CP", None), "test")
        .await
        .unwrap();
    store
        .create_account(&account("a", Some("p")), &code("CA", None), "test")
        .await
        .unwrap();
    store
        .create_account(&account("b", Some("p")), &code("CB", None), "test")
        .await
        .unwrap();
    for (id, key) in [("r1", "k1"), ("r2", "k2"), ("r3", "k3")] {
        store.enroll(&enrollment(id, key, "a", "CA")).await.unwrap();
    }
    let start = store.fact_changes_since(0).await.unwrap();
    assert!(start.changes.is_empty(), "{:?}", start.changes);
    assert!(start.now_ms > 1_600_000_000_000, "the database clock in ms");

    store.revoke_recorder("r1", 20, "test").await.unwrap();
    other
        .move_recorder("r2", "a", "b", 21, "test")
        .await
        .unwrap();
    store
        .set_account_disabled("a", true, 22, "test")
        .await
        .unwrap();
    // A renewal with a new key is a change too; a rename, a heartbeat or a no-op are not.
    store
        .set_certificate(&store::CertificateRecord {
            recorder_id: "r3",
            key_fingerprint: "k3-new",
            cert_serial: "c3-new",
            not_after: 2_000_000,
            actor: "test",
            action: "certificate.renewed",
            now: 23,
        })
        .await
        .unwrap();
    store
        .rename_recorder("r3", Some("Gate"), 24, "test")
        .await
        .unwrap();
    store
        .record_presence(&[Presence {
            recorder_id: "r3".into(),
            last_seen: 25,
            online_until: 100,
            status: None,
            uptime_secs: None,
        }])
        .await
        .unwrap();
    assert!(!store
        .set_account_disabled("a", true, 26, "test")
        .await
        .unwrap());

    let seen = other.fact_changes_since(start.now_ms - 1).await.unwrap();
    assert_eq!(
        seen.changes,
        [
            FactChange::Recorder("r1".into()),
            FactChange::Recorder("r2".into()),
            FactChange::Account("a".into()),
            FactChange::Recorder("r3".into()),
        ]
    );
    assert!(seen.now_ms >= start.now_ms);
    assert!(other
        .fact_changes_since(seen.now_ms + 60_000)
        .await
        .unwrap()
        .changes
        .is_empty());
    assert_eq!(
        store.prune_fact_changes(seen.now_ms + 1).await.unwrap(),
        4,
        "pruned by the database clock"
    );
    assert!(store
        .fact_changes_since(0)
        .await
        .unwrap()
        .changes
        .is_empty());
}

fn invited_user(id: &str, account_id: &str, email: &str) -> (User, Invitation) {
    let user = User {
        id: id.into(),
        account_id: account_id.into(),
        email: email.into(),
        name: id.into(),
        status: UserStatus::Invited,
        created_at: 1,
        created_by: "test".into(),
        terms_version: None,
        terms_accepted_at: None,
        age_confirmed_at: None,
        groups: vec![],
    };
    let invitation = Invitation {
        token_hash: format!("token-{id}").into_bytes(),
        user_id: id.into(),
        created_at: 1,
        expires_at: i64::MAX,
        used_at: None,
        replaced_at: None,
    };
    (user, invitation)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_last_administrator_holds_when_replicas_disable_two_administrators_at_once() {
    let Some(server) =
        server_url("the_last_administrator_holds_when_replicas_disable_two_administrators_at_once")
    else {
        return;
    };
    let db = TestDb::create(&server).await;
    let replicas = [db.replica().await, db.replica().await];
    for round in 0..8 {
        let account_id = format!("a{round}");
        let store = &replicas[0];
        store
            .create_account(
                &account(&account_id, None),
                &code(&format!("C{round}"), None),
                "test",
            )
            .await
            .unwrap();
        let admins = store
            .groups(&account_id)
            .await
            .unwrap()
            .into_iter()
            .find(|g| g.name == ADMINISTRATORS_GROUP)
            .unwrap();
        let mut ids = Vec::new();
        for n in 0..2 {
            let id = format!("u{round}-{n}");
            let (user, invitation) = invited_user(&id, &account_id, &format!("{id}@example.com"));
            store
                .create_invited_user(&user, &admins.id, &invitation, "test")
                .await
                .unwrap();
            store
                .accept_invitation(&store::Acceptance {
                    token_hash: &invitation.token_hash,
                    password_hash: "$argon2id$not-a-real-hash",
                    terms_version: "1",
                    now: 2,
                })
                .await
                .unwrap();
            ids.push(id);
        }
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let tasks: Vec<_> = ids
            .iter()
            .enumerate()
            .map(|(n, id)| {
                let store = replicas[n].clone();
                let id = id.clone();
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    store.set_user_disabled(&id, true, 5, "test").await
                })
            })
            .collect();
        let mut outcomes = Vec::new();
        for task in tasks {
            outcomes.push(task.await.unwrap());
        }
        let disabled = outcomes.iter().filter(|o| matches!(o, Ok(true))).count();
        let refused = outcomes
            .iter()
            .filter(|o| matches!(o, Err(StoreError::LastAdministrator { .. })))
            .count();
        assert_eq!((disabled, refused), (1, 1), "round {round}: {outcomes:?}");
        let active = replicas[1]
            .users(Some(&account_id))
            .await
            .unwrap()
            .into_iter()
            .filter(|u| u.status == UserStatus::Active)
            .count();
        assert_eq!(active, 1, "round {round}");
    }
}

/// The same steps on SQLite and on PostgreSQL give the same answers where collation and
/// case folding could differ: byte order of ids and names, ASCII-only case folding of
/// emails and of the recorder search, and no wildcards in the search text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_order_case_folding_and_search_match_the_sqlite_store() {
    let Some(server) = server_url("text_order_case_folding_and_search_match_the_sqlite_store")
    else {
        return;
    };
    let db = TestDb::create(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let sqlite = store::open(&DatabaseUrl::Sqlite(dir.path().join("t.db")), 2)
        .await
        .unwrap();
    let postgres = db.replica().await;
    let mut answers = Vec::new();
    for store in [sqlite, postgres] {
        let store = &*store;
        for id in ["b", "B", "a", "Ä"] {
            store
                .create_account(&account(id, None), &code(&format!("C{id}"), None), "t")
                .await
                .unwrap();
        }
        let names: Vec<String> = store
            .accounts()
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.name)
            .collect();
        for (id, key) in [("z1", "k1"), ("Z2", "k2"), ("a3", "k3"), ("É4", "k4")] {
            store.enroll(&enrollment(id, key, "a", "Ca")).await.unwrap();
        }
        store
            .rename_recorder("É4", Some("Écluse 100%"), 20, "t")
            .await
            .unwrap();
        let mut searches = Vec::new();
        for text in [
            None,
            Some("ser-K"),
            Some("écluse"),
            Some("ÉCLUSE"),
            Some("%"),
            Some("100%"),
            Some("_"),
        ] {
            let page = store
                .recorder_page(&RecorderQuery {
                    accounts: vec!["a".into()],
                    text: text.map(str::to_owned),
                    now: 30,
                    limit: 10,
                    ..RecorderQuery::default()
                })
                .await
                .unwrap();
            searches.push(page.into_iter().map(|r| r.id).collect::<Vec<_>>());
        }
        let cursor: Vec<String> = store
            .recorder_page(&RecorderQuery {
                accounts: vec!["a".into()],
                after_id: Some("Z2".into()),
                now: 30,
                limit: 10,
                ..RecorderQuery::default()
            })
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        let admins = store
            .groups("a")
            .await
            .unwrap()
            .into_iter()
            .find(|g| g.name == ADMINISTRATORS_GROUP)
            .unwrap();
        let (user, invitation) = invited_user("u1", "a", "Jo.Émile@Example.com");
        store
            .create_invited_user(&user, &admins.id, &invitation, "t")
            .await
            .unwrap();
        let mut found = Vec::new();
        for email in ["jo.Émile@example.COM", "jo.émile@example.com"] {
            found.push(store.user_by_email(email).await.unwrap().is_some());
        }
        let (again, invitation) = invited_user("u2", "a", "JO.Émile@EXAMPLE.com");
        let taken = store
            .create_invited_user(&again, &admins.id, &invitation, "t")
            .await;
        answers.push((
            names,
            searches,
            cursor,
            found,
            matches!(taken, Err(StoreError::Conflict(_))),
        ));
    }
    assert_eq!(answers[0], answers[1], "SQLite, then PostgreSQL");
    // And what that is, so that both agreeing on something wrong fails too.
    let (names, searches, cursor, found, taken) = &answers[0];
    assert_eq!(names, &["B", "a", "b", "Ä"]);
    assert_eq!(searches[0], ["Z2", "a3", "z1", "É4"]);
    assert_eq!(searches[1].len(), 4);
    assert_eq!(searches[2], Vec::<String>::new(), "É is not folded");
    assert_eq!(searches[3], ["É4"]);
    assert_eq!(
        searches[4],
        ["É4"],
        "% is matched as itself, not as a wildcard"
    );
    assert_eq!(searches[5], ["É4"]);
    assert!(searches[6].is_empty(), "_ is no wildcard either");
    assert_eq!(cursor, &["a3", "z1", "É4"]);
    assert_eq!(found, &[true, false]);
    assert!(taken);
}

#[tokio::test]
async fn an_unreachable_server_is_named_without_its_password() {
    // No server needed: nothing listens on port 1.
    let url = DatabaseUrl::Postgres("postgres://contera:s3cret@127.0.0.1:1/contera".into());
    let err = match store::open(&url, 1).await {
        Ok(_) => panic!("opened a database on port 1"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("postgres://contera:***@127.0.0.1:1/contera"),
        "{err}"
    );
    assert!(!err.contains("s3cret"), "{err}");
}
