//! The service binary as a real process, for tests that kill it, signal it or run two.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use crate::helpers::{JWT_SECRET, TestApp};

pub struct ServiceProcess {
    pub address: String,
    /// Its own METRICS_ADDR, so processes never compete for the default port.
    pub metrics_address: String,
    child: Child,
    log: PathBuf,
}

impl ServiceProcess {
    /// Starts `flashstock serve` on the test app's database and key prefix, with `env` on
    /// top, and waits until /healthz answers.
    pub async fn start(app: &TestApp, redis_url: &str, env: &[(&str, &str)]) -> Self {
        Self::spawn(app, &app.database_url, redis_url, env)
            .ready()
            .await
    }

    /// Starts `flashstock serve` with the test app's key prefix on `database_url`, without
    /// waiting for it: for tests that act while it is still starting. The outbox flusher
    /// and `CONFIG SET` are off unless `env` turns them on.
    pub fn spawn(app: &TestApp, database_url: &str, redis_url: &str, env: &[(&str, &str)]) -> Self {
        let free_port = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let port = free_port();
        let metrics_port = free_port();
        let log = std::env::temp_dir().join(format!("flashstock-test-{port}.log"));
        // The service logs to stdout; both streams go to one file, shown if the test fails.
        let output = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_flashstock"))
            .arg("serve")
            .env("DATABASE_URL", database_url)
            .env("REDIS_URL", redis_url)
            .env("JWT_SECRET", JWT_SECRET)
            .env("REDIS_KEY_PREFIX", app.keys.prefix())
            .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("METRICS_ADDR", format!("127.0.0.1:{metrics_port}"))
            .env("REDIS_CONFIGURE_NOTIFICATIONS", "false")
            // Keep the outbox entries: the tests count the events each release appends.
            .env("FLUSH_ENABLED", "false")
            .env("RUST_LOG", "info,sqlx=warn")
            .envs(env.iter().copied())
            .stdout(output.try_clone().unwrap())
            .stderr(output)
            .spawn()
            .unwrap();
        Self {
            address: format!("http://127.0.0.1:{port}"),
            metrics_address: format!("http://127.0.0.1:{metrics_port}"),
            child,
            log,
        }
    }

    /// Waits until /healthz answers.
    pub async fn ready(mut self) -> Self {
        let deadline = Instant::now() + Duration::from_secs(60);
        let http = reqwest::Client::new();
        loop {
            if let Ok(response) = http.get(format!("{}/healthz", self.address)).send().await
                && response.status().is_success()
            {
                return self;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("service exited on start ({status}):\n{}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "service not healthy in time:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no shutdown path runs.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Sends SIGTERM, as an orchestrator does on a rolling update.
    pub fn terminate(&self) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    }

    /// Waits up to `limit` for the process to exit on its own.
    pub async fn wait_for_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- service log ---\n{}", self.log_text());
        }
        let _ = std::fs::remove_file(&self.log);
    }
}
