//! The signaling server's store on either backend, so one test body runs on SQLite and on
//! PostgreSQL: [`StoreFixture::new`] with a [`Backend`], then [`StoreFixture::open`] for each
//! server (several servers may share one PostgreSQL database) or [`StoreFixture::server_args`]
//! for a `sotto-server` process.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sotto_server::{PgStore, PgUrl, SqliteStore, Store};

use crate::postgres::PgCluster;

/// Which store a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite, in a file of the test's directory.
    Sqlite,
    /// A throwaway PostgreSQL cluster of the test's own.
    Postgres,
}

/// One test's database on one backend.
pub struct StoreFixture {
    backend: Backend,
    db: PathBuf,
    pg: Option<PgCluster>,
}

impl StoreFixture {
    /// The database: `signal.db` in `dir` for SQLite; a new cluster for PostgreSQL, or `None`
    /// (with the reason on stderr) where PostgreSQL cannot run (see [`PgCluster::start`]).
    pub fn new(backend: Backend, dir: &Path) -> Option<StoreFixture> {
        let pg = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(PgCluster::start()?),
        };
        Some(StoreFixture {
            backend,
            db: dir.join("signal.db"),
            pg,
        })
    }

    /// The backend.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The PostgreSQL cluster (stop and restart it for outage tests).
    pub fn cluster(&self) -> Option<&PgCluster> {
        self.pg.as_ref()
    }

    /// A store on the database: each call opens its own connection (PostgreSQL) or handle
    /// (SQLite), as a separate server would. Opened on a thread of its own, so it can be
    /// called from async tests (the PostgreSQL client blocks).
    pub fn open(&self) -> Arc<dyn Store> {
        match &self.pg {
            None => Arc::new(SqliteStore::open(&self.db, Default::default()).unwrap()),
            Some(pg) => {
                let url = PgUrl::new(pg.url());
                std::thread::spawn(move || PgStore::open(&url))
                    .join()
                    .unwrap()
                    .map(|s| Arc::new(s) as Arc<dyn Store>)
                    .unwrap()
            }
        }
    }

    /// The `sotto-server` flags that select this database.
    pub fn server_args(&self) -> Vec<String> {
        match &self.pg {
            None => vec!["--db".into(), self.db.display().to_string()],
            Some(pg) => vec!["--postgres-url".into(), pg.url()],
        }
    }
}
