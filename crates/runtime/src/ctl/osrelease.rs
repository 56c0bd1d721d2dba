//! os-release(5) parsing, and reading a running machine's os-release through
//! its leader's root without following the machine's symlinks out to the host.

use std::collections::BTreeMap;

use netspawn_common::fsread;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};

/// Largest os-release file we read; real ones are well under 1 KiB.
const MAX_SIZE: u64 = 64 * 1024;

/// The fields of an os-release file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OsRelease {
    fields: BTreeMap<String, String>,
}

impl OsRelease {
    /// Parses os-release text: `KEY=VALUE` lines, values optionally in single
    /// or double quotes with backslash escapes; comments and junk lines are
    /// skipped (the file belongs to the container, so it is untrusted).
    pub fn parse(text: &str) -> OsRelease {
        let mut fields = BTreeMap::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let k = k.trim();
            if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            fields.insert(k.to_string(), unquote(v.trim()));
        }
        OsRelease { fields }
    }

    /// A field's value, if present and non-empty.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// `ID`, e.g. "debian".
    pub fn id(&self) -> Option<&str> {
        self.get("ID")
    }

    /// `VERSION_ID`, e.g. "12".
    pub fn version_id(&self) -> Option<&str> {
        self.get("VERSION_ID")
    }

    /// `PRETTY_NAME`, falling back to "Linux" as os-release(5) specifies.
    pub fn pretty_name(&self) -> &str {
        self.get("PRETTY_NAME").unwrap_or("Linux")
    }
}

fn unquote(v: &str) -> String {
    let bytes = v.as_bytes();
    let quoted = bytes.len() >= 2
        && (bytes[0] == b'"' || bytes[0] == b'\'')
        && bytes[bytes.len() - 1] == bytes[0];
    let inner = if quoted { &v[1..v.len() - 1] } else { v };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Reads `path` (absolute, as seen in the machine) from the root of process
/// `pid`, resolving symlinks inside that root (openat2 `RESOLVE_IN_ROOT`).
/// Only a regular file of at most `limit` bytes is read; a FIFO or device
/// the machine put there is refused without opening it for reading.
pub fn read_in_process_root(pid: u32, path: &str, limit: u64) -> std::io::Result<String> {
    let root = nix::fcntl::open(
        format!("/proc/{pid}/root").as_str(),
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    let rel = path.trim_start_matches('/');
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT);
    let fd = nix::fcntl::openat2(&root, rel, how)?;
    let data = fsread::read_regular_fd(fd, limit)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{path}: {e}")))?;
    String::from_utf8(data)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{path}: {e}")))
}

/// The os-release of the machine whose leader is `pid`: `/etc/os-release`,
/// then `/usr/lib/os-release`. None if neither can be read.
pub fn machine_os_release(pid: u32) -> Option<OsRelease> {
    ["/etc/os-release", "/usr/lib/os-release"]
        .iter()
        .find_map(|p| read_in_process_root(pid, p, MAX_SIZE).ok())
        .map(|t| OsRelease::parse(&t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_debian() {
        let text = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\n\
                    VERSION_ID=\"12\"\nID=debian\n# comment\nHOME_URL='https://x/'\n";
        let os = OsRelease::parse(text);
        assert_eq!(os.id(), Some("debian"));
        assert_eq!(os.version_id(), Some("12"));
        assert_eq!(os.pretty_name(), "Debian GNU/Linux 12 (bookworm)");
        assert_eq!(os.get("HOME_URL"), Some("https://x/"));
    }

    #[test]
    fn hostile_or_missing_fields() {
        let os = OsRelease::parse("garbage\n=x\nBAD KEY=1\nID=\"\nVERSION_ID=\"a\\\"b\"\n\\");
        assert_eq!(os.id(), Some("\""));
        assert_eq!(os.version_id(), Some("a\"b"));
        assert_eq!(os.get("BAD KEY"), None);
        assert_eq!(OsRelease::parse("").pretty_name(), "Linux");
        assert_eq!(OsRelease::parse("ID=").id(), None);
    }

    #[test]
    fn reads_own_root_and_refuses_non_files() {
        let me = std::process::id();
        // Our own root is the host's: /etc/os-release exists on Debian.
        if std::path::Path::new("/etc/os-release").exists() {
            assert!(machine_os_release(me).is_some());
        }
        assert!(read_in_process_root(me, "/proc", 10).is_err());
    }

    #[test]
    fn refuses_fifos_devices_and_oversized_files_without_blocking() {
        let me = std::process::id();
        let dir = std::env::temp_dir().join(format!("netspawn-osrelease-{me}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        std::os::unix::fs::symlink("/dev/zero", dir.join("zero")).unwrap();
        std::fs::write(dir.join("f"), "ID=x\n").unwrap();
        let at = |n: &str| dir.join(n).to_str().unwrap().to_string();
        let (fifo, zero, f) = (at("fifo"), at("zero"), at("f"));
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let r = |p: &str, limit| read_in_process_root(me, p, limit).map_err(|e| e.kind());
            let _ = tx.send([r(&fifo, MAX_SIZE), r(&zero, MAX_SIZE), r(&f, 5), r(&f, 4)]);
        });
        let got = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the reader blocked");
        let _ = std::fs::remove_dir_all(&dir);
        use std::io::ErrorKind as K;
        assert_eq!(
            got,
            [
                Err(K::InvalidInput),
                Err(K::InvalidInput),
                Ok("ID=x\n".to_string()),
                Err(K::FileTooLarge)
            ]
        );
    }
}
