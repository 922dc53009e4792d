//! Private PostgreSQL and Redis servers for tests that restart them (the shared ones of
//! `scripts/test-services` must stay up for the other tests). Started the way
//! `scripts/test-services` starts its own: `initdb` + `pg_ctl` (as the `postgres` user when
//! run as root) and `redis-server`, on free loopback ports, stopped on drop. `None` (the test
//! prints `skipped: ...`) when the binaries are not installed.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A PostgreSQL of its own in a temporary directory.
pub struct PrivatePg {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl PrivatePg {
    pub fn start() -> Option<PrivatePg> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|p| p.join("pg_ctl").exists())
            .max()?;
        let dir = tempfile::Builder::new()
            .prefix("holdfast-pg-restart.")
            .tempdir()
            .ok()?;
        let as_postgres = is_root();
        if as_postgres {
            let ok = Command::new("chown")
                .arg("-R")
                .arg("postgres:")
                .arg(dir.path())
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "chown the PostgreSQL directory to postgres");
        }
        let pg = PrivatePg {
            dir,
            bin,
            port: free_port(),
            as_postgres,
        };
        let data = pg.data();
        let out = pg
            .cmd("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", "holdfast", "--auth=trust"])
            .output()
            .expect("initdb runs");
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        pg.up();
        Some(pg)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("pg")
    }

    fn cmd(&self, tool: &str) -> Command {
        let path = self.bin.join(tool);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    pub fn url(&self) -> String {
        format!("postgres://holdfast@127.0.0.1:{}/postgres", self.port)
    }

    /// Start the server (it keeps its port and data).
    pub fn up(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let out = self
            .cmd("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.path().join("pg.log"))
            .args(["-w", "-t", "60", "-o", &opts, "start"])
            .stdout(Stdio::null())
            .output()
            .expect("pg_ctl start runs");
        assert!(
            out.status.success(),
            "pg_ctl start: {} {}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.path().join("pg.log")).unwrap_or_default()
        );
    }

    /// Stop the server (`-m fast`: sessions are terminated, as by an operator's restart).
    pub fn down(&self) {
        let out = self
            .cmd("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-w", "-m", "fast", "stop"])
            .stdout(Stdio::null())
            .output()
            .expect("pg_ctl stop runs");
        assert!(
            out.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn restart(&self) {
        self.down();
        self.up();
    }

    /// The postmaster and every process it started (backends, background workers).
    fn pids(&self) -> Vec<u32> {
        let Some(pm) = std::fs::read_to_string(self.data().join("postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<u32>().ok()))
        else {
            return Vec::new();
        };
        let mut pids = vec![pm];
        pids.extend(children(pm));
        pids
    }

    /// Stop the server with SIGSTOP (postmaster and children): a server that neither answers
    /// nor refuses, like a frozen VM or a black-holed network. Thawed (SIGCONT) when the guard
    /// drops, a failing test included.
    pub fn freeze(&self) -> Frozen {
        Frozen::new(self.pids())
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        // A frozen server cannot stop: thaw it first.
        signal("-CONT", &self.pids());
        let _ = self
            .cmd("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A redis-server of its own (a child process), restartable on the same port.
pub struct PrivateRedis {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    pub fn start() -> Option<PrivateRedis> {
        if Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_err()
        {
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("holdfast-redis-restart.")
            .tempdir()
            .ok()?;
        let mut r = PrivateRedis {
            dir,
            port: free_port(),
            child: None,
        };
        r.up();
        Some(r)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn up(&mut self) {
        let port = self.port.to_string();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        wait_for_port(self.port, self.dir.path());
    }

    /// Kill the server (its counters are gone with it: no persistence).
    pub fn down(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.down();
        self.up();
    }

    /// Stop the server with SIGSTOP (see [`PrivatePg::freeze`]); thawed when the guard drops.
    pub fn freeze(&self) -> Frozen {
        Frozen::new(self.child.iter().map(Child::id).collect())
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.down();
    }
}

fn wait_for_port(port: u16, what: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "server in {} never listened",
            what.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The pids whose parent is `parent` (from `/proc`).
fn children(parent: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            // `pid (comm) state ppid ...`: the command may hold spaces, so split after `)`.
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let rest = stat.rsplit_once(')')?.1;
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(parent)
        })
        .collect()
}

fn signal(sig: &str, pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg(sig)
        .args(pids.iter().map(u32::to_string))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Processes stopped with SIGSTOP; SIGCONT when dropped (or at [`Frozen::thaw`]).
pub struct Frozen {
    pids: Vec<u32>,
}

impl Frozen {
    fn new(pids: Vec<u32>) -> Frozen {
        assert!(!pids.is_empty(), "no server process to freeze");
        signal("-STOP", &pids);
        Frozen { pids }
    }

    pub fn thaw(self) {}
}

impl Drop for Frozen {
    fn drop(&mut self) {
        signal("-CONT", &self.pids);
    }
}
