//! Private redis-server and nats-server processes on spare loopback ports, so fault tests can
//! stop, stall and start them without disturbing anything else. Each is killed when dropped.
//!
//! A spare port can be taken by someone else between `free_port` and the child's bind. Then the
//! child exits and the port answers for another process: each start therefore checks that the
//! process answering is the child (Redis's `INFO server` process id, nats-server's name in its
//! INFO greeting), so a raced port fails the test instead of quietly testing a stranger.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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

fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what} did not listen on 127.0.0.1:{port}");
}

/// The INFO line a NATS server on `port` greets a new connection with. A connection the server
/// drops or leaves silent (a busy machine, a server still starting) is tried again for up to 20
/// seconds; then the last error fails the test.
fn nats_greeting(port: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let attempt = TcpStream::connect(("127.0.0.1", port)).and_then(|conn| {
            conn.set_read_timeout(Some(Duration::from_secs(5)))?;
            let mut greeting = String::new();
            BufReader::new(conn).read_line(&mut greeting)?;
            Ok(greeting)
        });
        let error = match attempt {
            Ok(greeting) if !greeting.is_empty() => return greeting,
            Ok(_) => "the connection closed before the greeting".to_string(),
            Err(e) => e.to_string(),
        };
        assert!(
            Instant::now() < deadline,
            "nats-server on port {port} sent no greeting: {error}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Panics unless `child` is still running: one that exited (its port taken) leaves the port to
/// whoever holds it.
fn assert_running(child: &mut Child, what: &str, port: u16) {
    if let Some(status) = child.try_wait().expect("poll the child") {
        panic!(
            "{what} on port {port} exited at start ({status}): the port was taken by another process"
        );
    }
}

/// One command to a Redis on `port` over RESP, its reply as text: a string or integer as is, an
/// array as its elements one per line, nil as "".
pub fn redis_command(port: u16, args: &[&str]) -> String {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("connect to redis");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut out = format!("*{}\r\n", args.len());
    for a in args {
        out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    conn.write_all(out.as_bytes()).unwrap();
    read_reply(&mut BufReader::new(conn), args)
}

fn read_reply(reader: &mut BufReader<TcpStream>, args: &[&str]) -> String {
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let line = line.trim_end().to_string();
    match line.as_bytes().first() {
        Some(b'$') => {
            let len: i64 = line[1..].parse().unwrap();
            if len < 0 {
                return String::new();
            }
            let mut body = vec![0; len as usize + 2];
            reader.read_exact(&mut body).unwrap();
            body.truncate(len as usize);
            String::from_utf8(body).unwrap()
        }
        Some(b'*') => {
            let n: i64 = line[1..].parse().unwrap();
            (0..n.max(0))
                .map(|_| read_reply(reader, args))
                .collect::<Vec<_>>()
                .join("\n")
        }
        Some(b'+' | b':') => line[1..].to_string(),
        _ => panic!("redis answered {args:?} with {line:?}"),
    }
}

/// A redis-server of the test's own.
pub struct Redis {
    pub port: u16,
    child: Option<Child>,
}

impl Redis {
    pub fn start() -> Self {
        let mut r = Self {
            port: free_port(),
            child: None,
        };
        r.restart();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port, empty: nothing is persisted.
    pub fn restart(&mut self) {
        let child = Command::new(binary("redis-server"))
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/ensure-services.sh installs it)");
        self.child = Some(child);
        wait_for_port(self.port, "redis-server");
        let child = self.child.as_mut().unwrap();
        assert_running(child, "redis-server", self.port);
        let info = redis_command(self.port, &["INFO", "server"]);
        let pid = info
            .lines()
            .find_map(|l| l.strip_prefix("process_id:"))
            .and_then(|p| p.trim().parse::<u32>().ok());
        assert_eq!(
            pid,
            Some(child.id()),
            "the Redis on port {} is not the one this test started",
            self.port
        );
    }

    /// One command to this Redis, its reply as text.
    pub fn command(&self, args: &[&str]) -> String {
        redis_command(self.port, args)
    }

    /// Stalls the process (SIGSTOP): it keeps its data and its connections, and answers nothing
    /// until [`Redis::resume`].
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused process run again (SIGCONT); it then serves what was sent meanwhile.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("redis-server is running").id();
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} {pid}");
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A nats-server with JetStream of the test's own; its store survives restarts.
pub struct Nats {
    pub port: u16,
    store: tempfile::TempDir,
    /// The server's name, unique to this test process and port: its INFO greeting names it.
    name: String,
    child: Option<Child>,
}

impl Nats {
    pub fn start() -> Self {
        let port = free_port();
        let mut n = Self {
            port,
            store: tempfile::tempdir().unwrap(),
            name: format!("tse-test-{}-{port}", std::process::id()),
            child: None,
        };
        n.restart();
        n
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn restart(&mut self) {
        let child = Command::new(binary("nats-server"))
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-n",
                &self.name,
                "-sd",
            ])
            .arg(self.store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server must be installed (scripts/ensure-services.sh installs it)");
        self.child = Some(child);
        wait_for_port(self.port, "nats-server");
        assert_running(self.child.as_mut().unwrap(), "nats-server", self.port);
        // The greeting is `INFO {json}`; its server_name is ours only if the child answers.
        let greeting = nats_greeting(self.port);
        let info: serde_json::Value = greeting
            .strip_prefix("INFO ")
            .and_then(|j| serde_json::from_str(j.trim()).ok())
            .unwrap_or_else(|| panic!("port {} greets with {greeting:?}", self.port));
        assert_eq!(
            info["server_name"], self.name,
            "the NATS on port {} is not the one this test started",
            self.port
        );
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.stop();
    }
}
