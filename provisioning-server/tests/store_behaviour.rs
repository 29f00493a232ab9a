//! What every `Store` must do, written once against `Arc<dyn Store>` from `store::open`
//! and run on each backend: SQLite always, PostgreSQL when `CONTERA_TEST_POSTGRES_URL`
//! names a server (each test in a database of its own, dropped afterwards).
//!
//! Each `store_test!` becomes a module with one test per backend, so a failure names the
//! backend: `recorders::confirming_a_replacement_revokes_the_old_recorder_once::postgres`.
//! `cargo test --test store_behaviour -- ::sqlite` (or `::postgres`) runs one half.

/// `store_test!(name, |db| async move { ... })` makes `name::sqlite` and `name::postgres`,
/// each running the body with `db`, a [`backend::TestDb`] on a fresh, migrated, empty
/// database of that backend. The PostgreSQL test returns at once (after a loud note, once)
/// when the PostgreSQL half is not configured.
macro_rules! store_test {
    ($name:ident, $test:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                crate::backend::run(crate::backend::Backend::Sqlite, $test).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                crate::backend::run(crate::backend::Backend::Postgres, $test).await
            }
        }
    };
}

// The crate root looks for modules beside it; they live in store_behaviour/.
#[path = "store_behaviour/backend.rs"]
mod backend;
#[path = "store_behaviour/fixtures.rs"]
mod fixtures;

#[path = "store_behaviour/accounts.rs"]
mod accounts;
#[path = "store_behaviour/audit.rs"]
mod audit;
#[path = "store_behaviour/codes.rs"]
mod codes;
#[path = "store_behaviour/concurrency.rs"]
mod concurrency;
#[path = "store_behaviour/enrollment.rs"]
mod enrollment;
#[path = "store_behaviour/presence.rs"]
mod presence;
#[path = "store_behaviour/recorders.rs"]
mod recorders;
#[path = "store_behaviour/sessions.rs"]
mod sessions;
#[path = "store_behaviour/users.rs"]
mod users;
