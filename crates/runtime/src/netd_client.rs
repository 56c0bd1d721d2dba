//! Talking to `netspawn-netd`, starting it on first need: one daemon per
//! host (its lock and control socket live in the run directory).
//!
//! netd may die between or during requests (killed, crashed, restarted by
//! an upgrade). Every request is idempotent on netd's side (`LINK` only
//! waits and reads, `LINKDHCP`'s DISCOVER is bound again to the lease the
//! server saved for that client, `PORTS` replaces the owner's forwards,
//! `RELEASE` drops them), so a request whose connection is lost before its answer line
//! arrives is sent again over a new connection, to a netd started afresh if
//! none runs, a bounded number of times.

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

/// A netd this launcher started and has not reached yet (see
/// [`NetdClient::connect_or_begin`]).
pub struct Starting {
    child: std::process::Child,
    paths: Paths,
}

impl Starting {
    /// Waits until the netd started answers, as
    /// [`NetdClient::connect_or_start`] does.
    pub fn finish(self) -> Result<NetdClient, NetdError> {
        started(self.child)?;
        NetdClient::connect_started(&self.paths)
    }
}

/// How many times a request is sent again after its connection was lost.
const RETRIES: u32 = 3;

/// A connection to netd.
pub struct NetdClient {
    stream: BufReader<UnixStream>,
    /// Where to reconnect when the connection is lost.
    paths: Paths,
}

/// Whether `err` means the connection to netd went away (netd died or
/// restarted), so the request may be sent again to a new netd. A timeout is
/// not: netd is alive and slow, and waiting again would double the wait.
fn connection_lost(err: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        err.kind(),
        K::BrokenPipe
            | K::ConnectionReset
            | K::ConnectionAborted
            | K::ConnectionRefused
            | K::NotFound
            | K::UnexpectedEof
    )
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

/// Runs netd, which checks its templates, then forks into the background,
/// so this returns at once (with its error, if any) and the daemon is not
/// our child.
fn start_netd() -> Result<(), NetdError> {
    started(spawn_netd()?)
}

/// Starts netd without waiting for it (see [`started`]).
fn spawn_netd() -> Result<std::process::Child, NetdError> {
    let bin = netd_binary();
    std::process::Command::new(&bin)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|err| NetdError::Start { path: bin, err })
}

/// Waits for a netd started by [`spawn_netd`] to fork into the background;
/// its error, if it refused to start.
fn started(child: std::process::Child) -> Result<(), NetdError> {
    let out = child.wait_with_output()?;
    if out.status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&out.stderr);
    let line = text
        .lines()
        .next()
        .unwrap_or("")
        .trim_start_matches("netspawn-netd: ");
    Err(NetdError::Refused(if line.is_empty() {
        format!("exited with {}", out.status)
    } else {
        line.to_string()
    }))
}

impl NetdClient {
    /// A connection to the socket of `paths`, without a word exchanged
    /// (nothing is started; for tests with a netd of their own making).
    #[cfg(test)]
    pub(crate) fn connect_only(paths: &Paths) -> std::io::Result<NetdClient> {
        NetdClient::connect(paths)
    }

    fn connect(paths: &Paths) -> std::io::Result<NetdClient> {
        let s = UnixStream::connect(socket_path(paths))?;
        s.set_read_timeout(Some(Duration::from_secs(65)))?;
        Ok(NetdClient {
            stream: BufReader::new(s),
            paths: paths.clone(),
        })
    }

    /// A connection to a netd that answers `PING`, if one runs.
    fn connect_live(paths: &Paths) -> Option<NetdClient> {
        let mut c = NetdClient::connect(paths).ok()?;
        c.exchange(&Request::Ping).is_ok().then_some(c)
    }

    /// A connection to the running netd, if one runs (none is started).
    pub fn connect_running(paths: &Paths) -> Option<NetdClient> {
        NetdClient::connect_live(paths)
    }

    /// Connects to the running netd, starting one (detached, in its own
    /// session) if there is none. A netd that dies before it answers (killed
    /// while starting) is started again, until 5 s have passed.
    pub fn connect_or_start(paths: &Paths) -> Result<NetdClient, NetdError> {
        if let Some(c) = NetdClient::connect_live(paths) {
            return Ok(c);
        }
        start_netd()?;
        NetdClient::connect_started(paths)
    }

    /// [`connect_or_start`](Self::connect_or_start) in two halves: connects
    /// to the running netd, or starts one and returns at once, so the
    /// caller makes its links while netd comes up; [`Starting::finish`]
    /// then waits for it (and says why it refused to start).
    ///
    /// A launch's critical path: the running netd is not pinged (a round
    /// trip that waits for netd's threads to wake, 0.3-0.5 ms here). Only
    /// netd binds its socket, and a connection the kernel accepted is one it
    /// listens on; one that goes away before answering is reconnected to
    /// (and restarted) by [`request`](Self::request), as for any request.
    pub fn connect_or_begin(paths: &Paths) -> Result<Result<NetdClient, Starting>, NetdError> {
        if let Ok(c) = NetdClient::connect(paths) {
            return Ok(Ok(c));
        }
        Ok(Err(Starting {
            child: spawn_netd()?,
            paths: paths.clone(),
        }))
    }

    /// Connects to a netd just started; one that dies before it answers
    /// (killed while starting) is started again, until 5 s have passed.
    fn connect_started(paths: &Paths) -> Result<NetdClient, NetdError> {
        let wait = Duration::from_secs(5);
        let deadline = Instant::now() + wait;
        loop {
            // Starting another while one runs is harmless: it finds the
            // lock taken and exits.
            let again = (Instant::now() + Duration::from_secs(1)).min(deadline);
            while Instant::now() < again {
                if let Some(c) = NetdClient::connect_live(paths) {
                    return Ok(c);
                }
                // A fresh netd binds its socket within milliseconds: a
                // first launch should not sleep much longer than that.
                std::thread::sleep(Duration::from_micros(500));
            }
            if Instant::now() >= deadline {
                return Err(NetdError::NotUp(wait));
            }
            tracing::debug!("netspawn-netd did not come up; starting it again");
            start_netd()?;
        }
    }

    /// Sends one request; returns netd's `OK` answer, or its `ERR` as
    /// [`NetdError::Refused`]. When the connection is lost before the answer
    /// (netd died: a broken pipe, a reset, end of file), reconnects (starting
    /// netd if none runs) and sends the request again, up to [`RETRIES`] times.
    pub fn request(&mut self, req: &Request) -> Result<Answer, NetdError> {
        let mut tries = 0;
        loop {
            let err = match self.exchange(req) {
                Err(NetdError::Io(e)) if connection_lost(&e) && tries < RETRIES => e,
                done => return done,
            };
            tries += 1;
            tracing::info!(
                "lost the connection to netspawn-netd ({err}); reconnecting ({tries}/{RETRIES})"
            );
            *self = NetdClient::connect_or_start(&self.paths)?;
        }
    }

    /// Sends one request once: no reconnect when the connection is lost
    /// (the caller has a way of its own to go on, and [`revive`](Self::revive)
    /// still sees that netd went away).
    pub fn request_once(&mut self, req: &Request) -> Result<Answer, NetdError> {
        self.exchange(req)
    }

    /// Whether netd had to be brought back: pings it over this connection,
    /// and if the connection is lost (netd died since the last answer),
    /// connects to a new netd, starting one if none runs, and returns true.
    /// For a caller that waits on netd outside the control socket (DHCP on
    /// the link netd serves) and wants to know whether to ask again.
    pub fn revive(&mut self) -> Result<bool, NetdError> {
        match self.exchange(&Request::Ping) {
            Ok(_) => Ok(false),
            Err(NetdError::Io(e)) if connection_lost(&e) => {
                tracing::info!("netspawn-netd went away ({e}); reconnecting");
                *self = NetdClient::connect_or_start(&self.paths)?;
                Ok(true)
            }
            Err(e) => Err(e),
        }
    }

    /// One request and its answer line over the current connection. End of
    /// file before a whole line is [`std::io::ErrorKind::UnexpectedEof`]:
    /// netd went away before answering.
    fn exchange(&mut self, req: &Request) -> Result<Answer, NetdError> {
        let s = self.stream.get_mut();
        s.write_all(format!("{}\n", req.to_line()).as_bytes())?;
        let mut line = String::new();
        self.stream.read_line(&mut line)?;
        if !line.ends_with('\n') {
            return Err(NetdError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed before the answer",
            )));
        }
        match Answer::parse(&line).map_err(NetdError::Refused)? {
            Answer::Err(e) => Err(NetdError::Refused(e)),
            ok => Ok(ok),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixListener;
    use std::path::{Path, PathBuf};
    use std::thread::JoinHandle;

    use netspawn_common::netd::{socket_path, Answer, Cidr, Request};
    use netspawn_common::paths::Paths;

    use super::{NetdClient, NetdError, RETRIES};

    /// A run directory of its own, removed at the end.
    struct RunDir(PathBuf);

    impl RunDir {
        fn new(tag: &str) -> RunDir {
            let p = std::env::temp_dir()
                .join(format!("netspawn-netd-client-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            RunDir(p)
        }

        fn paths(&self) -> Paths {
            Paths {
                run_dir: self.0.clone(),
                image_dir: "/nonexistent/images".into(),
                state_dir: "/nonexistent/state".into(),
                settings_path: Vec::new(),
                cgroup_parent: "netspawn".into(),
            }
        }
    }

    impl Drop for RunDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// How one fake netd treats its one connection.
    #[derive(Clone, Copy)]
    enum Fake {
        /// Closes it at once, before reading anything (the client's write
        /// may fail with a broken pipe or the read see end of file).
        CloseAtOnce,
        /// Answers `PING`, reads the next request and closes without answering.
        DieOnRequest,
        /// Answers `PING`, sends half of an answer line to the next request and closes.
        DieMidAnswer,
        /// Answers every request (`LINK` with an address).
        Answer,
    }

    fn answer(req: &Request) -> Answer {
        match req {
            Request::Link { .. } => Answer::Address(Cidr {
                addr: "10.0.0.1".parse().unwrap(),
                prefix: 28,
            }),
            _ => Answer::Ok,
        }
    }

    /// Fake netds on the control socket, one after the other, each serving
    /// one connection as `script` says. The next one listens before the
    /// previous closes its connection, so the client never finds no netd
    /// (which would make it start the real one). Returns the requests each
    /// connection received.
    fn fake_netds(sock: &Path, script: Vec<Fake>) -> JoinHandle<Vec<Vec<String>>> {
        let sock = sock.to_path_buf();
        let mut listener = UnixListener::bind(&sock).unwrap();
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            let n = script.len();
            for (i, fake) in script.into_iter().enumerate() {
                let (conn, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut w = conn;
                let mut lines = Vec::new();
                let mut next = || {
                    let mut l = String::new();
                    reader.read_line(&mut l).unwrap();
                    l.trim_end().to_string()
                };
                match fake {
                    Fake::CloseAtOnce => {}
                    Fake::DieOnRequest | Fake::DieMidAnswer => {
                        // The liveness check of a reconnect, if it is one.
                        let mut l = next();
                        if l == "PING" {
                            writeln!(w, "OK").unwrap();
                            lines.push(l);
                            l = next();
                        }
                        lines.push(l);
                        if matches!(fake, Fake::DieMidAnswer) {
                            w.write_all(b"OK addr").unwrap();
                        }
                    }
                    Fake::Answer => loop {
                        let l = next();
                        if l.is_empty() {
                            break;
                        }
                        let a = answer(&Request::parse(&l).unwrap());
                        writeln!(w, "{}", a.to_line()).unwrap();
                        lines.push(l);
                    },
                }
                seen.push(lines);
                if i + 1 < n {
                    // The restarted netd listens before the old one's
                    // connection goes.
                    std::fs::remove_file(&sock).unwrap();
                    listener = UnixListener::bind(&sock).unwrap();
                }
                drop(w);
                drop(reader);
            }
            seen
        })
    }

    fn link() -> Request {
        Request::Link {
            ifname: "ve-web".into(),
            timeout_ms: 1000,
        }
    }

    #[test]
    fn request_survives_netd_dying_mid_request() {
        for (tag, first) in [
            ("onreq", Fake::DieOnRequest),
            ("midanswer", Fake::DieMidAnswer),
            ("atonce", Fake::CloseAtOnce),
        ] {
            let dir = RunDir::new(tag);
            let paths = dir.paths();
            let netds = fake_netds(&socket_path(&paths), vec![first, Fake::Answer]);
            let mut c = NetdClient::connect(&paths).unwrap();
            let got = c.request(&link()).unwrap();
            assert_eq!(
                got,
                Answer::Address("10.0.0.1/28".parse().unwrap()),
                "{tag}"
            );
            // The same connection serves the next request.
            assert_eq!(c.request(&Request::Ping).unwrap(), Answer::Ok, "{tag}");
            drop(c);
            let seen = netds.join().unwrap();
            assert_eq!(seen.len(), 2, "{tag}");
            // The second netd got the liveness check, then the request again.
            assert_eq!(seen[1], ["PING", "LINK ve-web 1000", "PING"], "{tag}");
        }
    }

    #[test]
    fn request_gives_up_after_bounded_retries() {
        let dir = RunDir::new("giveup");
        let paths = dir.paths();
        let script = vec![Fake::DieOnRequest; 1 + RETRIES as usize];
        let netds = fake_netds(&socket_path(&paths), script);
        let mut c = NetdClient::connect(&paths).unwrap();
        let err = c.request(&link()).unwrap_err();
        assert!(
            matches!(&err, NetdError::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof),
            "{err}"
        );
        let seen = netds.join().unwrap();
        let sent = seen.iter().flatten().filter(|l| l.starts_with("LINK"));
        assert_eq!(sent.count(), 1 + RETRIES as usize);
    }

    #[test]
    fn revive_reconnects_only_when_netd_went_away() {
        let dir = RunDir::new("revive");
        let paths = dir.paths();
        let netds = fake_netds(&socket_path(&paths), vec![Fake::DieOnRequest, Fake::Answer]);
        let mut c = NetdClient::connect(&paths).unwrap();
        // The first netd answers the first PING, then dies on the next request.
        assert!(!c.revive().unwrap());
        assert!(c.revive().unwrap());
        assert!(!c.revive().unwrap());
        drop(c);
        let seen = netds.join().unwrap();
        assert_eq!(seen[0], ["PING", "PING"]);
        assert_eq!(seen[1], ["PING", "PING"]);
    }

    #[test]
    fn refusal_is_not_retried() {
        let dir = RunDir::new("refused");
        let paths = dir.paths();
        let sock = socket_path(&paths);
        let listener = UnixListener::bind(&sock).unwrap();
        let netd = std::thread::spawn(move || {
            let (conn, _) = listener.accept().unwrap();
            let mut r = BufReader::new(conn.try_clone().unwrap());
            let mut w = conn;
            let mut n = 0;
            let mut l = String::new();
            while r.read_line(&mut l).unwrap() > 0 {
                writeln!(w, "ERR port 80/tcp is taken").unwrap();
                n += 1;
                l.clear();
            }
            n
        });
        let mut c = NetdClient::connect(&paths).unwrap();
        let err = c.request(&link()).unwrap_err();
        assert!(matches!(&err, NetdError::Refused(m) if m == "port 80/tcp is taken"));
        drop(c);
        assert_eq!(netd.join().unwrap(), 1);
    }
}
