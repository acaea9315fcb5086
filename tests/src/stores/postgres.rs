//! The PostgreSQL store under test: a database of its own on the shared server, or a private
//! server a test may stop and start.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;
use sqlx::{Connection, PgConnection};

use super::Target;
use crate::kafka::free_port;
use crate::{database_url, unique_name};

/// A PostgreSQL database of its own on the shared server (or on a private one).
#[derive(Debug)]
pub struct PostgresTarget {
    url: String,
    /// The server's URL the database was created through.
    server: String,
}

async fn admin_connection(server_url: &str) -> PgConnection {
    PgConnection::connect(server_url)
        .await
        .unwrap_or_else(|e| panic!("{}", crate::unreachable("PostgreSQL", server_url, e)))
}

impl PostgresTarget {
    /// A new database on the server of `server_url` (default: the shared `DATABASE_URL`).
    pub async fn new(server_url: Option<&str>) -> Self {
        let server = server_url.map(str::to_owned).unwrap_or_else(database_url);
        let name = unique_name("sink").replace('-', "_");
        let mut admin = admin_connection(&server).await;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create database");
        let base = server.rsplit_once('/').map_or(server.as_str(), |(b, _)| b);
        PostgresTarget { url: format!("{base}/{name}"), server }
    }

    /// Drops the database, ending any session still in it.
    pub async fn drop_database(self) {
        let (_, name) = self.url.rsplit_once('/').expect("database url");
        let mut admin = admin_connection(&self.server).await;
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
            .execute(&mut admin)
            .await
            .expect("drop database");
    }

    /// The database URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn query<T: Send + 'static>(
        &self,
        f: impl FnOnce(String) -> std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>> + Send + 'static,
    ) -> T {
        let url = self.url.clone();
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(f(url))
        })
        .join()
        .expect("query thread")
    }
}

impl Target for PostgresTarget {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn env(&self) -> Vec<(String, String)> {
        vec![("AUDIT_STORE__KIND".into(), "postgres".into()), ("AUDIT_STORE__URL".into(), self.url.clone())]
    }

    fn read_back(&self) -> BTreeMap<i32, Vec<Value>> {
        self.query(|url| {
            Box::pin(async move {
                let mut out: BTreeMap<i32, Vec<Value>> = BTreeMap::new();
                let Ok(mut c) = PgConnection::connect(&url).await else { return out };
                let rows: Vec<(i32, String)> = match sqlx::query_as(
                    "SELECT kafka_partition, event FROM audit_events ORDER BY kafka_partition, kafka_offset",
                )
                .fetch_all(&mut c)
                .await
                {
                    Ok(rows) => rows,
                    Err(_) => return out,
                };
                for (p, text) in rows {
                    out.entry(p).or_default().push(serde_json::from_str(&text).expect("the event's text"));
                }
                out
            })
        })
    }

    fn conflicts(&self) -> Option<usize> {
        Some(self.query(|url| {
            Box::pin(async move {
                let mut c = PgConnection::connect(&url).await.expect("connect");
                let n: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_event_conflicts")
                    .fetch_one(&mut c)
                    .await
                    .unwrap_or(0);
                n as usize
            })
        }))
    }

    fn checkpoints(&self) -> Vec<Value> {
        self.query(|url| {
            Box::pin(async move {
                let Ok(mut c) = PgConnection::connect(&url).await else { return Vec::new() };
                let rows: Vec<String> = sqlx::query_scalar(
                    "SELECT checkpoint::text FROM audit_checkpoints ORDER BY kafka_partition, kafka_offset",
                )
                .fetch_all(&mut c)
                .await
                .unwrap_or_default();
                rows.iter().map(|t| serde_json::from_str(t).expect("jsonb text")).collect()
            })
        })
    }
}

/// A PostgreSQL cluster owned by one test, which may stop and start it.
#[derive(Debug)]
pub struct PrivatePostgres {
    dir: tempfile::TempDir,
    port: u16,
}

fn pg_bin(name: &str) -> PathBuf {
    PathBuf::from("/usr/lib/postgresql/15/bin").join(name)
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout.trim_ascii() == b"0").unwrap_or(false)
}

/// PostgreSQL refuses to run as root: as root, run its tools as the `postgres` user.
fn pg_command(bin: &str, args: &[&str]) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(pg_bin(bin)).args(args);
        c
    } else {
        let mut c = Command::new(pg_bin(bin));
        c.args(args);
        c
    }
}

impl PrivatePostgres {
    /// initdb and start a cluster on a free loopback port.
    pub fn start() -> PrivatePostgres {
        let dir = tempfile::Builder::new().prefix("auditstream-pg").tempdir_in("/tmp").expect("dir");
        if is_root() {
            let _ = Command::new("chown").args(["postgres", &dir.path().display().to_string()]).status();
        }
        let data = dir.path().join("data");
        let status =
            pg_command("initdb", &["-D", &data.display().to_string(), "-U", "postgres", "-A", "trust", "--no-locale"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("initdb");
        assert!(status.success(), "initdb failed (is PostgreSQL 15 installed? scripts/services up installs it)");
        let pg = PrivatePostgres { dir, port: free_port() };
        pg.start_server();
        pg
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server (after [`PrivatePostgres::stop`]).
    pub fn start_server(&self) {
        let data = self.dir.path().join("data").display().to_string();
        let opts = format!("-p {} -c listen_addresses=127.0.0.1 -k {}", self.port, self.dir.path().display());
        let log = self.dir.path().join("server.log").display().to_string();
        let status = pg_command("pg_ctl", &["-D", &data, "-l", &log, "-w", "-t", "60", "-o", &opts, "start"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("pg_ctl start");
        assert!(status.success(), "private PostgreSQL did not start");
    }

    /// Stops the server (fast shutdown: connections are cut).
    pub fn stop(&self) {
        let data = self.dir.path().join("data").display().to_string();
        let _ = pg_command("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        self.stop();
    }
}
