//! A PostgreSQL database of its own for one test, on the server `CONTERA_TEST_POSTGRES_URL`
//! names (`.ci/run` sets it after starting Debian's cluster), made and dropped with `psql`.

use std::process::Command;

use crate::skip;

/// The variable naming the PostgreSQL server tests may create databases on.
pub const POSTGRES_URL: &str = "CONTERA_TEST_POSTGRES_URL";

/// A database made for one test; dropped (connections and all) when this goes.
pub struct TestDatabase {
    admin_url: String,
    name: String,
    /// What a server's `database_url` should say.
    pub url: String,
}

/// A fresh database, or None after a loud SKIPPED line when no server is configured
/// (a failure instead under `CONTERA_REQUIRE_ALL_TESTS`).
pub fn test_database(test: &str) -> Option<TestDatabase> {
    let Some(admin_url) = std::env::var(POSTGRES_URL).ok().filter(|u| !u.is_empty()) else {
        skip(
            test,
            &format!("no PostgreSQL server (set {POSTGRES_URL}=postgres://USER:PASSWORD@127.0.0.1/DB, a role that may CREATE DATABASE)"),
        );
        return None;
    };
    let name = format!("contera_e2e_{}", uuid::Uuid::new_v4().simple());
    psql(&admin_url, &format!("CREATE DATABASE {name}"));
    // The same server and credentials, the new database.
    let base = admin_url.split('?').next().unwrap();
    let (server, _) = base.rsplit_once('/').expect("a URL with a database path");
    Some(TestDatabase {
        url: format!("{server}/{name}"),
        admin_url,
        name,
    })
}

impl TestDatabase {
    /// Runs one SQL statement in this database and returns psql's unaligned output.
    pub fn query(&self, sql: &str) -> String {
        psql(&self.url, sql)
    }
}

fn psql(url: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            url,
            "-c",
            sql,
        ])
        .output()
        .expect("psql runs (apt-get install postgresql-client)");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args(["-X", "-q", &self.admin_url, "-c"])
            .arg(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .output();
    }
}
