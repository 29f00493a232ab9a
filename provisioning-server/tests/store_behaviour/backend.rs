//! The backends the suite runs on: a fresh SQLite file per test, always, and a fresh
//! PostgreSQL database per test when `CONTERA_TEST_POSTGRES_URL` names a server.

use std::io::Write;
use std::str::FromStr;
use std::sync::{Arc, Once};

use contera_provisioning::store::{self, DatabaseUrl, Store};
use sqlx::Connection;

/// The server the PostgreSQL half runs against (a role allowed to CREATE DATABASE).
const POSTGRES_URL_VAR: &str = "CONTERA_TEST_POSTGRES_URL";
/// Set (to 1) in CI: a skipped half is a failure there, not a note.
const REQUIRE_ALL_VAR: &str = "CONTERA_REQUIRE_ALL_TESTS";
/// Connections per store, as a small server would open.
const MAX_CONNECTIONS: u32 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// A fresh, migrated, empty database on this backend and what removes it, or None when
    /// the PostgreSQL half is not configured (said once per test binary, loudly; refused
    /// when CI requires every test to run).
    async fn create(self) -> Option<(TestDb, Cleanup)> {
        match self {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("a temp dir for the SQLite file");
                let url = DatabaseUrl::Sqlite(dir.path().join("store.db"));
                let store = open(self, &url).await;
                Some((
                    TestDb {
                        backend: self,
                        url,
                        store,
                    },
                    Cleanup::Sqlite(dir),
                ))
            }
            Backend::Postgres => {
                let server = postgres_server_url()?;
                let guard = PostgresDatabase::create(&server).await;
                let url = DatabaseUrl::Postgres(guard.url.clone());
                let store = open(self, &url).await;
                Some((
                    TestDb {
                        backend: self,
                        url,
                        store,
                    },
                    Cleanup::Postgres(guard),
                ))
            }
        }
    }
}

/// Runs one test body on a fresh database of `backend`, or skips it (see
/// [`Backend::create`]). The database is removed here, after the body, whatever the body
/// kept of `db`: an `async move` block captures only the fields it uses, so a guard inside
/// `TestDb` would be dropped before the body ran.
pub async fn run<F, Fut>(backend: Backend, test: F)
where
    F: FnOnce(TestDb) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    if let Some((db, _cleanup)) = backend.create().await {
        test(db).await
    }
}

async fn open(backend: Backend, url: &DatabaseUrl) -> Arc<dyn Store> {
    match store::open(url, MAX_CONNECTIONS).await {
        Ok(store) => store,
        Err(e) => panic!("{backend:?}: opening the store at {url:?} failed: {e}"),
    }
}

/// The PostgreSQL server URL, or None after saying (once) that the half is skipped.
fn postgres_server_url() -> Option<String> {
    static SKIPPED: Once = Once::new();
    match std::env::var(POSTGRES_URL_VAR) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            if std::env::var(REQUIRE_ALL_VAR).as_deref() == Ok("1") {
                panic!(
                    "{REQUIRE_ALL_VAR}=1 but {POSTGRES_URL_VAR} is not set: \
                     the PostgreSQL store tests cannot run (set it to postgres://USER:PASSWORD@HOST/DB \
                     of a role that may CREATE DATABASE)"
                );
            }
            SKIPPED.call_once(|| {
                // Straight to the process's stderr: the test harness captures eprintln!.
                let _ = writeln!(
                    std::io::stderr(),
                    "\nSKIPPED: PostgreSQL store tests (set {POSTGRES_URL_VAR}=postgres://... to run them)\n"
                );
            });
            None
        }
    }
}

/// One test's database and the store opened on it.
pub struct TestDb {
    pub backend: Backend,
    pub url: DatabaseUrl,
    pub store: Arc<dyn Store>,
}

/// Removes a test's database when dropped.
enum Cleanup {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres(#[allow(dead_code)] PostgresDatabase),
}

impl TestDb {
    /// The same database opened again: a second pool, as a second server replica (or the
    /// admin CLI beside the server) has.
    pub async fn open_again(&self) -> Arc<dyn Store> {
        open(self.backend, &self.url).await
    }

    /// Runs one SQL statement directly on the backend, for the few states no store method
    /// can make (rows an older release left behind). Keep it portable: no placeholders.
    pub async fn execute_sql(&self, sql: &str) {
        let result = match &self.url {
            DatabaseUrl::Sqlite(path) => {
                let options = sqlx::sqlite::SqliteConnectOptions::new().filename(path);
                let mut conn = sqlx::SqliteConnection::connect_with(&options)
                    .await
                    .expect("connect to the SQLite file");
                sqlx::raw_sql(sql).execute(&mut conn).await.map(|_| ())
            }
            DatabaseUrl::Postgres(url) => {
                let mut conn = sqlx::PgConnection::connect(url)
                    .await
                    .expect("connect to the test database");
                sqlx::raw_sql(sql).execute(&mut conn).await.map(|_| ())
            }
        };
        if let Err(e) = result {
            panic!("{:?}: {sql}: {e}", self.backend);
        }
    }
}

/// A database made for one test and dropped when the test ends, passed or panicked.
struct PostgresDatabase {
    server: String,
    name: String,
    url: String,
}

impl PostgresDatabase {
    async fn create(server: &str) -> PostgresDatabase {
        let name = format!("contera_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(server)
            .await
            .unwrap_or_else(|e| panic!("Postgres: connecting to {POSTGRES_URL_VAR} failed: {e}"));
        sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("Postgres: CREATE DATABASE {name} failed: {e}"));
        let _ = conn.close().await;
        PostgresDatabase {
            url: with_database(server, &name),
            server: server.to_owned(),
            name,
        }
    }
}

impl Drop for PostgresDatabase {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime (or while it unwinds), where nothing can be
        // awaited: a thread of its own with its own runtime drops the database.
        let server = self.server.clone();
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime to drop the test database");
            runtime.block_on(async move {
                let mut conn = sqlx::PgConnection::connect(&server).await?;
                sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await?;
                conn.close().await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            let _ = writeln!(
                std::io::stderr(),
                "could not drop test database {}: drop it by hand",
                self.name
            );
        }
    }
}

/// `postgres://user:pw@host:port/db?opts` with its database replaced by `name`.
fn with_database(server: &str, name: &str) -> String {
    let (scheme, rest) = server
        .split_once("://")
        .unwrap_or_else(|| panic!("{POSTGRES_URL_VAR} is not a URL"));
    let (rest, query) = match rest.split_once('?') {
        Some((rest, query)) => (rest, Some(query)),
        None => (rest, None),
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let mut url = format!("{scheme}://{authority}/{name}");
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    // The result must still be a URL the driver reads, and name the new database.
    let options = sqlx::postgres::PgConnectOptions::from_str(&url)
        .unwrap_or_else(|e| panic!("{POSTGRES_URL_VAR} with database {name}: {e}"));
    assert_eq!(options.get_database(), Some(name));
    url
}

#[test]
fn a_test_database_url_keeps_the_server_and_options_and_names_the_new_database() {
    assert_eq!(
        with_database(
            "postgres://u:p@127.0.0.1:5433/contera?sslmode=disable",
            "contera_test_x"
        ),
        "postgres://u:p@127.0.0.1:5433/contera_test_x?sslmode=disable"
    );
    assert_eq!(
        with_database("postgresql://u@localhost", "contera_test_y"),
        "postgresql://u@localhost/contera_test_y"
    );
}
