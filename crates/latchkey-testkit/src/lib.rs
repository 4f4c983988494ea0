//! Test support shared by latchkey's test suites and benchmarks: a fresh PostgreSQL database
//! per test. A dev-dependency only; nothing here ships.

// Test support: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sqlx::Connection as _;

/// A database of its own on the PostgreSQL server named by `LATCHKEY_TEST_POSTGRES_URL`,
/// dropped by [`PgDatabase::drop_database`] (connections and all).
pub struct PgDatabase {
    /// The server URL the database was created through.
    pub admin_url: String,
    /// The database's name.
    pub name: String,
    /// A URL for the new database.
    pub url: String,
}

impl PgDatabase {
    /// A fresh database, or `None` with the reason printed when no PostgreSQL is configured or
    /// reachable. Under CI (`CI` set) a missing PostgreSQL is a failure instead.
    pub async fn create() -> Option<PgDatabase> {
        let Ok(admin_url) = std::env::var("LATCHKEY_TEST_POSTGRES_URL") else {
            assert!(
                std::env::var_os("CI").is_none(),
                "LATCHKEY_TEST_POSTGRES_URL must be set under CI"
            );
            eprintln!("skipping PostgreSQL: LATCHKEY_TEST_POSTGRES_URL is not set");
            return None;
        };
        if let Err(error) = sqlx::PgConnection::connect(&admin_url).await {
            assert!(
                std::env::var_os("CI").is_none(),
                "PostgreSQL is required under CI: {error}"
            );
            eprintln!("skipping PostgreSQL: cannot connect to {admin_url}: {error}");
            return None;
        }
        Some(Self::create_on(&admin_url).await)
    }

    /// A fresh database on the server at `admin_url` (panics if it cannot be made).
    pub async fn create_on(admin_url: &str) -> PgDatabase {
        let mut admin = sqlx::PgConnection::connect(admin_url).await.unwrap();
        let name = format!("lk_test_{:016x}", fastrand::u64(..));
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .unwrap();
        let base = admin_url
            .rsplit_once('/')
            .map_or(admin_url, |(base, _)| base);
        PgDatabase {
            admin_url: admin_url.to_owned(),
            url: format!("{base}/{name}"),
            name,
        }
    }

    /// Drops the database, closing whatever connections it still has.
    pub async fn drop_database(&self) {
        let mut admin = sqlx::PgConnection::connect(&self.admin_url).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(&mut admin)
        .await
        .unwrap();
    }
}

/// A PostgreSQL server of a test's own, in a temporary directory on a free port, made with
/// Debian's `initdb` and `pg_ctl` (as the `postgres` user when the test runs as root, which
/// `initdb` requires). A fault test stops and starts it; the machine's shared server is never
/// touched. Stopped and removed when dropped.
pub struct PrivatePostgres {
    dir: tempfile::TempDir,
    bin: std::path::PathBuf,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl PrivatePostgres {
    /// A new server, started; or `None` with the reason printed when PostgreSQL's binaries are
    /// missing. Under CI that is a failure instead.
    pub fn start() -> Option<PrivatePostgres> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|versions| {
                versions
                    .filter_map(Result::ok)
                    .map(|version| version.path().join("bin"))
                    .find(|bin| bin.join("initdb").exists())
            });
        let Some(bin) = bin else {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI needs PostgreSQL's binaries (initdb, pg_ctl) under /usr/lib/postgresql"
            );
            eprintln!("skipping: no initdb under /usr/lib/postgresql");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = PrivatePostgres { dir, bin, port };
        server.chown();
        server.run(
            "initdb",
            &[
                "-D",
                &server.data(),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
            ],
        );
        server.start_again();
        Some(server)
    }

    /// A URL for its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts it (again) and waits until it accepts connections.
    pub fn start_again(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &format!("{}/log", self.dir.path().display()),
                "-o",
                &options,
                "-w",
                "start",
            ],
        );
    }

    /// Stops it at once (`-m fast`: connections are cut, as in a restart), waiting until it
    /// has.
    pub fn stop(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }

    fn data(&self) -> String {
        format!("{}/data", self.dir.path().display())
    }

    fn as_root() -> bool {
        std::process::Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|out| out.stdout.starts_with(b"0\n"))
    }

    /// As root, the directory belongs to `postgres`, which the server runs as.
    fn chown(&self) {
        if Self::as_root() {
            let status = std::process::Command::new("chown")
                .args(["postgres:postgres"])
                .arg(self.dir.path())
                .status()
                .unwrap();
            assert!(status.success());
        }
    }

    /// `program` of PostgreSQL's binaries, run as `postgres` when this runs as root.
    fn command(&self, program: &str) -> std::process::Command {
        let program = self.bin.join(program);
        if Self::as_root() {
            let mut command = std::process::Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            std::process::Command::new(program)
        }
    }

    fn run(&self, program: &str, args: &[&str]) {
        let output = self.command(program).args(args).output().unwrap();
        assert!(
            output.status.success(),
            "{args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args(["-D", &self.data(), "-m", "immediate", "stop"])
            .output();
    }
}
