//! A mariadbd of the test's own on a free port, for tests that stop and start MySQL
//! without disturbing the shared server. Its data lives in a temporary directory, removed
//! with it; the server is killed on drop.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::Connection;

use crate::helpers::unique_suffix;

const HOW_TO_INSTALL: &str = "the MariaDB server binaries (mariadbd, mariadb-install-db) are \
     needed: `apt-get install mariadb-server`, or run `scripts/services`";

pub struct PrivateMariadb {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl PrivateMariadb {
    /// Creates a fresh data directory (root without a password, as on the shared server)
    /// and starts a server on it; returns once it accepts logins.
    pub async fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("flashstock-mariadb-{}", unique_suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        let installed = Command::new(find_bin("mariadb-install-db"))
            .arg("--no-defaults")
            .args(as_root())
            .arg(format!("--datadir={}", dir.join("data").display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("cannot run mariadb-install-db ({e}); {HOW_TO_INSTALL}"));
        assert!(installed.success(), "mariadb-install-db failed");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = Self {
            port,
            dir,
            child: None,
        };
        server.start_again().await;
        server
    }

    /// `mysql://` URL of `database` on this server.
    pub fn url(&self, database: &str) -> String {
        format!("mysql://root@127.0.0.1:{}/{database}", self.port)
    }

    /// Starts the server again on the same data directory and port; returns once it
    /// accepts logins.
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "the private mariadbd is running");
        let data = self.dir.join("data");
        let child = Command::new(find_bin("mariadbd"))
            .arg("--no-defaults")
            .args(as_root())
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--port={}", self.port))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--socket={}", self.dir.join("sock").display()))
            .arg(format!("--pid-file={}", self.dir.join("pid").display()))
            .arg(format!(
                "--log-error={}",
                self.dir.join("error.log").display()
            ))
            .args([
                "--innodb-buffer-pool-size=64M",
                "--character-set-server=utf8mb4",
                "--collation-server=utf8mb4_general_ci",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run mariadbd ({e}); {HOW_TO_INSTALL}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        let server = format!("mysql://root@127.0.0.1:{}", self.port);
        loop {
            if let Ok(connection) = sqlx::MySqlConnection::connect(&server).await {
                let _ = connection.close().await;
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "private mariadbd exited on start ({status}):\n{}",
                    self.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "private mariadbd did not start:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the server as an operator does (SIGTERM: clients are cut off, then a clean
    /// shutdown) and waits until it has exited.
    pub async fn stop(&mut self) {
        let mut child = self.child.take().expect("the private mariadbd is running");
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("private mariadbd did not stop:\n{}", self.log_text());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

impl Drop for PrivateMariadb {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// mariadbd refuses to run as root unless told to, and ignores `--user` otherwise.
fn as_root() -> Vec<&'static str> {
    let uid = std::fs::metadata("/proc/self").map_or(1, |m| m.uid());
    if uid == 0 {
        vec!["--user=root"]
    } else {
        vec![]
    }
}

/// The server binaries live in /usr/sbin, not on every user's PATH.
fn find_bin(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| Path::new(candidate).is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}
