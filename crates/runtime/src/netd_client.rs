//! Talking to `netspawn-netd`, starting it on first need: one daemon per
//! host (its lock and control socket live in the run directory).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use netspawn_common::netd::{socket_path, Answer, Request};
use netspawn_common::paths::Paths;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum NetdError {
    #[error("cannot start netspawn-netd ({path}): {err}")]
    Start { path: PathBuf, err: std::io::Error },
    #[error("netspawn-netd did not come up within {0:?}")]
    NotUp(Duration),
    #[error("netspawn-netd: {0}")]
    Io(#[from] std::io::Error),
    #[error("netspawn-netd: {0}")]
    Refused(String),
}

/// A connection to netd.
pub struct NetdClient {
    stream: BufReader<UnixStream>,
}

/// The netd binary: `$NETSPAWN_NETD`, else next to our own executable, else on PATH.
fn netd_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("NETSPAWN_NETD") {
        return p.into();
    }
    if let Some(p) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("netspawn-netd")))
    {
        if p.exists() {
            return p;
        }
    }
    PathBuf::from("netspawn-netd")
}

impl NetdClient {
    fn connect(paths: &Paths) -> std::io::Result<NetdClient> {
        let s = UnixStream::connect(socket_path(paths))?;
        s.set_read_timeout(Some(Duration::from_secs(65)))?;
        Ok(NetdClient {
            stream: BufReader::new(s),
        })
    }

    /// Connects to the running netd, starting one (detached, in its own
    /// session) if there is none.
    pub fn connect_or_start(paths: &Paths) -> Result<NetdClient, NetdError> {
        if let Ok(mut c) = NetdClient::connect(paths) {
            if c.request(&Request::Ping).is_ok() {
                return Ok(c);
            }
        }
        let bin = netd_binary();
        let mut cmd = std::process::Command::new(&bin);
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        // netd checks its templates, then forks into the background, so this
        // returns at once (with its error, if any) and the daemon is not our child.
        let out = cmd.output().map_err(|err| NetdError::Start {
            path: bin.clone(),
            err,
        })?;
        if !out.status.success() {
            let text = String::from_utf8_lossy(&out.stderr);
            let line = text
                .lines()
                .next()
                .unwrap_or("")
                .trim_start_matches("netspawn-netd: ");
            return Err(NetdError::Refused(if line.is_empty() {
                format!("exited with {}", out.status)
            } else {
                line.to_string()
            }));
        }
        let wait = Duration::from_secs(5);
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if let Ok(mut c) = NetdClient::connect(paths) {
                if c.request(&Request::Ping).is_ok() {
                    return Ok(c);
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Err(NetdError::NotUp(wait))
    }

    /// Sends one request; returns netd's `OK` answer, or its `ERR` as
    /// [`NetdError::Refused`].
    pub fn request(&mut self, req: &Request) -> Result<Answer, NetdError> {
        let s = self.stream.get_mut();
        s.write_all(format!("{}\n", req.to_line()).as_bytes())?;
        let mut line = String::new();
        self.stream.read_line(&mut line)?;
        match Answer::parse(&line).map_err(NetdError::Refused)? {
            Answer::Err(e) => Err(NetdError::Refused(e)),
            ok => Ok(ok),
        }
    }
}
