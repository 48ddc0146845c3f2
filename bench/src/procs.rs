//! Private redis-server and nats-server processes on spare loopback ports, for the scenarios that
//! need them when no URL is given: the figures then owe nothing to other users of a shared
//! server (a Redis's keyspace hits count only this run's reads), and the run creates and deletes
//! nothing on a shared server. Each is killed, and its files removed, when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// One server process of this run.
pub struct Private {
    pub url: String,
    child: Child,
    dir: Option<PathBuf>,
}

fn binary(name: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    PathBuf::from(name)
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Private {
    /// A redis-server that persists nothing.
    pub fn redis() -> Result<Self> {
        let port = free_port()?;
        let child = Command::new(binary("redis-server"))
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting redis-server (scripts/ensure-services.sh installs it)")?;
        Self::started(child, port, format!("redis://127.0.0.1:{port}"), None)
    }

    /// A nats-server with JetStream, its store in a directory of its own.
    pub fn nats() -> Result<Self> {
        let port = free_port()?;
        let dir = std::env::temp_dir().join(format!("tse-bench-nats-{}", uuid::Uuid::new_v4()));
        let child = Command::new(binary("nats-server"))
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting nats-server (scripts/ensure-services.sh installs it)")?;
        Self::started(child, port, format!("nats://127.0.0.1:{port}"), Some(dir))
    }

    fn started(mut child: Child, port: u16, url: String, dir: Option<PathBuf>) -> Result<Self> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = child.try_wait()? {
                bail!("{url}: the server exited at start ({status}); the port may be taken");
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("{url}: the server did not listen within 15 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Still ours: a child that lost its port to someone else has exited by now.
        std::thread::sleep(Duration::from_millis(100));
        if let Some(status) = child.try_wait()? {
            bail!("{url}: the server exited at start ({status}); the port was taken");
        }
        Ok(Self { url, child, dir })
    }
}

impl Drop for Private {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
