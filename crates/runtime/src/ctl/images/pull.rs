//! `pull-tar`: downloading an image over HTTP(S) (ureq with rustls) and
//! extracting it as it arrives, with a progress bar on a terminal (plain
//! progress lines otherwise) and machinectl's `--verify=`: `checksum` checks
//! the download's SHA-256 against `SHA256SUMS` beside the URL, `signature`
//! also checks `SHA256SUMS.gpg` with the host's gpg keyring. The image is
//! renamed into place only after the check passed.

use std::io::{self, IsTerminal, Read};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use thiserror::Error;

/// `--verify=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    No,
    Checksum,
    Signature,
}

impl std::str::FromStr for Verify {
    type Err = String;
    fn from_str(s: &str) -> Result<Verify, String> {
        match s {
            "no" | "false" => Ok(Verify::No),
            "checksum" => Ok(Verify::Checksum),
            "signature" | "yes" | "true" => Ok(Verify::Signature),
            _ => Err(format!(
                "Invalid --verify= value '{s}': expected no, checksum or signature"
            )),
        }
    }
}

/// Why a download failed.
#[derive(Debug, Error)]
pub enum PullError {
    #[error("Invalid URL '{0}': only http:// and https:// are supported")]
    BadUrl(String),
    #[error("Download of {url} failed: {err}")]
    Http { url: String, err: String },
    #[error("{file} is not listed in {sums}")]
    NotListed { file: String, sums: String },
    #[error("Checksum of {file} does not match SHA256SUMS (expected {expected}, got {got})")]
    Mismatch {
        file: String,
        expected: String,
        got: String,
    },
    #[error("Download of {url} is truncated: got {got} of {want} bytes")]
    Truncated { url: String, got: u64, want: u64 },
    #[error("gpg is not installed: cannot verify the signature of {0} (use --verify=checksum or --verify=no)")]
    NoGpg(String),
    #[error("Signature check of {url} failed: {why}")]
    Signature { url: String, why: String },
}

/// Whether `url` is one we fetch.
pub fn check_url(url: &str) -> Result<(), PullError> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    match rest {
        Some(r) if !r.is_empty() && !r.starts_with('/') => Ok(()),
        _ => Err(PullError::BadUrl(url.to_string())),
    }
}

/// The last path segment of `url` (no query or fragment).
pub fn file_name(url: &str) -> &str {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    path.rsplit('/').next().unwrap_or(path)
}

/// The image name machinectl derives from a URL: the file name without its
/// `.tar[.gz|.xz|.zst]` (or `.tgz`…) suffix.
pub fn name_from_url(url: &str) -> String {
    let mut n = file_name(url);
    for suffix in [".gz", ".xz", ".zst", ".bz2"] {
        if let Some(s) = n.strip_suffix(suffix) {
            n = s;
            break;
        }
    }
    for suffix in [".tar", ".tgz", ".txz", ".tzst"] {
        if let Some(s) = n.strip_suffix(suffix) {
            n = s;
            break;
        }
    }
    n.to_string()
}

/// A URL beside `url` (`SHA256SUMS` in the same directory).
pub fn beside(url: &str, name: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    match path.rfind('/') {
        Some(i) => format!("{}/{name}", &path[..i]),
        None => name.to_string(),
    }
}

/// The SHA-256 `SHA256SUMS` lists for `file` (`HASH  FILE` or `HASH *FILE`).
pub fn expected_sum(sums: &str, file: &str) -> Option<String> {
    sums.lines().find_map(|l| {
        let (hash, rest) = l.split_once(' ')?;
        let name = rest.trim_start_matches(' ').trim_start_matches('*');
        (name == file && hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| hash.to_ascii_lowercase())
    })
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(30)))
        .build()
        .into()
}

fn http_err(url: &str, e: ureq::Error) -> PullError {
    let err = match e {
        ureq::Error::StatusCode(code) => format!("HTTP status {code}"),
        other => other.to_string(),
    };
    PullError::Http {
        url: url.to_string(),
        err,
    }
}

/// Fetches a small file (SHA256SUMS, its signature) whole.
pub fn fetch_small(url: &str) -> Result<Vec<u8>, PullError> {
    let mut resp = agent().get(url).call().map_err(|e| http_err(url, e))?;
    resp.body_mut()
        .with_config()
        .limit(16 << 20)
        .read_to_vec()
        .map_err(|e| http_err(url, e))
}

/// Checks `SHA256SUMS.gpg` against `sums` with the host's gpg keyring.
pub fn verify_signature(
    sums_url: &str,
    sums: &[u8],
    tmp: &std::path::Path,
) -> Result<(), PullError> {
    let gpg = ["/usr/bin/gpg", "/bin/gpg"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .ok_or_else(|| PullError::NoGpg(sums_url.to_string()))?;
    let sig_url = format!("{sums_url}.gpg");
    let sig = fetch_small(&sig_url)?;
    let sig_path = tmp.with_extension("sig");
    let sums_path = tmp.with_extension("sums");
    let io_err = |e: io::Error| PullError::Signature {
        url: sig_url.clone(),
        why: e.to_string(),
    };
    std::fs::write(&sig_path, &sig).map_err(io_err)?;
    std::fs::write(&sums_path, sums).map_err(io_err)?;
    let out = std::process::Command::new(gpg)
        .args(["--batch", "--no-tty", "--verify"])
        .arg(&sig_path)
        .arg(&sums_path)
        .stdin(std::process::Stdio::null())
        .output();
    let _ = std::fs::remove_file(&sig_path);
    let _ = std::fs::remove_file(&sums_path);
    let out = out.map_err(io_err)?;
    if out.status.success() {
        Ok(())
    } else {
        let text = String::from_utf8_lossy(&out.stderr);
        let why = text
            .lines()
            .rfind(|l| !l.trim().is_empty())
            .unwrap_or("gpg failed")
            .trim()
            .to_string();
        Err(PullError::Signature { url: sig_url, why })
    }
}

/// The download as a reader: counts, hashes, reports progress, and stops
/// with `Interrupted` when `abort` says so.
pub struct Download<'a> {
    body: Box<dyn Read + 'a>,
    pub url: String,
    pub hasher: Sha256,
    pub got: u64,
    pub length: Option<u64>,
    progress: Progress,
    abort: &'a dyn Fn() -> bool,
    failure: Option<PullError>,
}

impl<'a> Download<'a> {
    /// Starts the download of `url` (a 4xx/5xx status is an error).
    pub fn start(url: &str, abort: &'a dyn Fn() -> bool, quiet: bool) -> Result<Self, PullError> {
        let resp = agent().get(url).call().map_err(|e| http_err(url, e))?;
        let length = resp.body().content_length();
        let body = Box::new(resp.into_body().into_reader());
        Ok(Download {
            body,
            url: url.to_string(),
            hasher: Sha256::new(),
            got: 0,
            length,
            progress: Progress::new(file_name(url), length, quiet),
            abort,
            failure: None,
        })
    }

    /// Ends the progress display (after the download was checked, so that
    /// a failure is the only line printed).
    pub fn done(&mut self) {
        self.progress.done(self.got);
    }

    /// What went wrong with the download itself, if something did.
    pub fn failure(&mut self) -> Option<PullError> {
        self.failure.take()
    }

    /// Reads what is left (after the archive's end); returns the SHA-256.
    pub fn finish(&mut self) -> Result<String, io::Error> {
        io::copy(self, &mut io::sink())?;
        let hash = std::mem::take(&mut self.hasher).finalize();
        Ok(hash.iter().map(|b| format!("{b:02x}")).collect())
    }
}

impl Download<'_> {
    fn truncated(&self, want: u64) -> PullError {
        PullError::Truncated {
            url: self.url.clone(),
            got: self.got,
            want,
        }
    }
}

impl Read for Download<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if (self.abort)() {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "interrupted"));
        }
        let n = loop {
            match self.body.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted && !(self.abort)() => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    return Err(io::Error::other("interrupted"))
                }
                Err(e) => {
                    let f = match self.length {
                        Some(want) if self.got < want => self.truncated(want),
                        _ => PullError::Http {
                            url: self.url.clone(),
                            err: e.to_string(),
                        },
                    };
                    let msg = f.to_string();
                    self.failure = Some(f);
                    return Err(io::Error::other(msg));
                }
                Ok(n) => break n,
            }
        };
        if n == 0 {
            if let Some(want) = self.length.filter(|w| self.got < *w) {
                let f = self.truncated(want);
                let msg = f.to_string();
                self.failure = Some(f);
                return Err(io::Error::other(msg));
            }
        }
        self.hasher.update(&buf[..n]);
        self.got += n as u64;
        self.progress.update(self.got);
        Ok(n)
    }
}

/// A progress bar on a terminal, a line every few seconds otherwise.
enum Progress {
    Quiet,
    Bar(indicatif::ProgressBar),
    Lines {
        name: String,
        length: Option<u64>,
        last: Instant,
    },
}

impl Progress {
    fn new(name: &str, length: Option<u64>, quiet: bool) -> Progress {
        if quiet {
            return Progress::Quiet;
        }
        if io::stderr().is_terminal() {
            let bar = match length {
                Some(l) => indicatif::ProgressBar::new(l),
                None => indicatif::ProgressBar::new_spinner(),
            };
            bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            let style = indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
            bar.set_style(style.progress_chars("=> "));
            bar.set_message(name.to_string());
            Progress::Bar(bar)
        } else {
            Progress::Lines {
                name: name.to_string(),
                length,
                last: Instant::now(),
            }
        }
    }

    fn update(&mut self, got: u64) {
        match self {
            Progress::Quiet => {}
            Progress::Bar(b) => b.set_position(got),
            Progress::Lines { name, length, last } => {
                if last.elapsed() >= Duration::from_secs(2) {
                    *last = Instant::now();
                    eprintln!("{}", line(name, got, *length));
                }
            }
        }
    }

    fn done(&mut self, got: u64) {
        match self {
            Progress::Quiet => {}
            Progress::Bar(b) => b.finish_and_clear(),
            Progress::Lines { name, length, .. } => eprintln!("{}", line(name, got, *length)),
        }
    }
}

impl Drop for Progress {
    /// A failed download's bar is cleared, so that the error is on a line of its own.
    fn drop(&mut self) {
        if let Progress::Bar(b) = self {
            b.finish_and_clear();
        }
    }
}

fn line(name: &str, got: u64, length: Option<u64>) -> String {
    match length {
        Some(l) if l > 0 => format!(
            "Got {}% of {name}: {} of {}.",
            got * 100 / l,
            human(got),
            human(l)
        ),
        _ => format!("Got {} of {name}.", human(got)),
    }
}

/// Bytes as machinectl prints sizes (1024-based, one decimal).
pub fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "K", "M", "G", "T"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n}B")
    } else {
        format!("{v:.1}{}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_pieces() {
        assert_eq!(name_from_url("http://h/x/deb.tar.xz"), "deb");
        assert_eq!(name_from_url("https://h/web.tgz?x=1"), "web");
        assert_eq!(name_from_url("http://h/a.b.tar"), "a.b");
        assert_eq!(
            beside("http://h/x/deb.tar.xz", "SHA256SUMS"),
            "http://h/x/SHA256SUMS"
        );
        assert!(check_url("ftp://h/x").is_err());
        assert!(check_url("http://").is_err());
        check_url("https://h/x.tar").unwrap();
        let h = "a".repeat(64);
        let sums = format!("{h} *other.tar\n{h}  web.tar\n");
        assert_eq!(expected_sum(&sums, "web.tar"), Some(h.clone()));
        assert_eq!(expected_sum(&sums, "other.tar"), Some(h));
        assert_eq!(expected_sum(&sums, "nope.tar"), None);
        assert_eq!(human(1536), "1.5K");
        assert_eq!("checksum".parse::<Verify>(), Ok(Verify::Checksum));
        assert!("x".parse::<Verify>().is_err());
    }
}
