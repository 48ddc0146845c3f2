//! The built server binary as a child process, with its logs in files: for tests that need what
//! only a process shows (exit codes, signals, its sockets, its peak memory, panics in its log).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::Clients;

pub const SERVER: &str = env!("CARGO_BIN_EXE_temporal-state-server");

/// The built server binary, run as on a bare machine: the environment is emptied, so no
/// variable can point it at PostgreSQL, Redis or NATS; only `env` is set (plus no console, no
/// admin port and no drain grace, unless `env` gives them: their default ports would collide
/// between tests). Its stdout (logs) and stderr (the start-up error, if any) go to files in `logs`.
pub struct Binary {
    pub child: Child,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

impl Binary {
    pub fn spawn(cwd: &Path, logs: &Path, name: &str, env: &[(&str, &str)]) -> Self {
        let stdout = logs.join(format!("{name}.stdout"));
        let stderr = logs.join(format!("{name}.stderr"));
        let mut command = Command::new(SERVER);
        command
            .current_dir(cwd)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap());
        if !env.iter().any(|(k, _)| *k == "CONSOLE_ADDR") {
            command.env("CONSOLE_ADDR", "");
        }
        // No admin port unless the test asks for one: tests run many servers at once, and the
        // default 127.0.0.1:9090 would clash.
        if !env.iter().any(|(k, _)| *k == "ADMIN_ADDR") {
            command.env("ADMIN_ADDR", "");
        }
        // No drain grace unless asked for: a test's SIGTERM stops the server at once.
        if !env.iter().any(|(k, _)| *k == "SHUTDOWN_GRACE_SECS") {
            command.env("SHUTDOWN_GRACE_SECS", "0");
        }
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command.spawn().expect("run the server binary");
        Self {
            child,
            stdout,
            stderr,
        }
    }

    pub fn logs(&self) -> String {
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            std::fs::read_to_string(&self.stdout).unwrap_or_default(),
            std::fs::read_to_string(&self.stderr).unwrap_or_default()
        )
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits until the server answers gRPC on `addr`; panics with its logs if it exits first.
    pub async fn wait_ready(&mut self, addr: &str) -> Clients {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "the server exited with {status} while starting\n{}",
                    self.logs()
                );
            }
            if let Some(clients) = Clients::answering(addr.parse().expect("an address")).await {
                return clients;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not answer on {addr}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for the process to end by itself.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("the server did not exit within {within:?}\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, as a service manager stops it; the server shuts down gracefully and exits 0.
    pub fn terminate(&mut self) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill(1)");
        assert!(sent.success());
        let status = self.wait_exit(Duration::from_secs(30));
        assert!(
            status.success(),
            "exit after SIGTERM: {status}\n{}",
            self.logs()
        );
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Binary {
    /// The process's peak resident memory so far (VmHWM), in KiB; None without /proc.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }
}
