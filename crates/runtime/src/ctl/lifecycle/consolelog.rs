//! The console log of a machine started in the background: its files, the
//! writer the log pump runs, and the readers `netspawnctl logs` uses.
//!
//! The log is `<logs>/NAME.log`; when writing would take it past the cap it
//! becomes `NAME.log.1` (replacing the older one) and a fresh `NAME.log` is
//! started, so the two together never exceed twice the cap. The path
//! `NAME.log` always names a file: the new one is made aside, the current
//! one hard-linked to `.1`, and the new one renamed over it. The writer
//! holds an exclusive `flock` on the file `NAME.log` names while it runs,
//! which is how readers (`logs -f`) and a second writer tell that a pump is
//! still at work. Console lines end in `\r\n` on a terminal; the log keeps
//! them as `\n`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The cap of one log file unless `NETSPAWN_CONSOLE_LOG_MAX` says otherwise.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 20;
/// Environment variable with the cap in bytes (at least [`MIN_MAX_BYTES`]).
pub const ENV_MAX_BYTES: &str = "NETSPAWN_CONSOLE_LOG_MAX";
/// The smallest cap accepted.
pub const MIN_MAX_BYTES: u64 = 256;

/// The cap from the environment, or the default when it is unset or invalid.
pub fn max_bytes_from_env() -> u64 {
    std::env::var(ENV_MAX_BYTES)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(DEFAULT_MAX_BYTES, |n| n.max(MIN_MAX_BYTES))
}

/// The files of one machine's console log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFiles {
    /// `NAME.log`, being written.
    pub current: PathBuf,
    /// `NAME.log.1`, the one before.
    pub previous: PathBuf,
    /// `NAME.log.new`, the next one while it is being put in place.
    staging: PathBuf,
}

impl LogFiles {
    /// The log files of machine `name` in directory `dir`.
    pub fn new(dir: &Path, name: &str) -> LogFiles {
        LogFiles {
            current: dir.join(format!("{name}.log")),
            previous: dir.join(format!("{name}.log.1")),
            staging: dir.join(format!("{name}.log.new")),
        }
    }

    /// True if a writer holds the log (a pump is running for it).
    pub fn writer_alive(&self) -> bool {
        match File::open(&self.current) {
            Ok(f) => matches!(f.try_lock_shared(), Err(fs::TryLockError::WouldBlock)),
            Err(_) => false,
        }
    }
}

fn open_append(path: &Path, create_new: bool) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.append(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW);
    if create_new {
        o.create_new(true);
    } else {
        o.create(true);
    }
    o.open(path)
}

fn same_file(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    a.dev() == b.dev() && a.ino() == b.ino()
}

/// Appends console output to a machine's log, size-capped and rotated.
#[derive(Debug)]
pub struct Writer {
    files: LogFiles,
    file: File,
    size: u64,
    max: u64,
    /// Carriage returns at the end of the last chunk: dropped if a newline
    /// follows, written if anything else does.
    pending_cr: usize,
}

impl Writer {
    /// Opens (or makes) the log and takes its lock, waiting for a previous
    /// writer of the same log to finish.
    pub fn open(files: LogFiles, max: u64) -> io::Result<Writer> {
        let max = max.max(1);
        loop {
            let file = open_append(&files.current, false)?;
            file.lock()?;
            // The previous holder may have rotated the file while we waited:
            // only the file the path names now is the log.
            let held = file.metadata()?;
            match fs::symlink_metadata(&files.current) {
                Ok(named) if same_file(&held, &named) => {
                    return Ok(Writer {
                        files,
                        file,
                        size: held.len(),
                        max,
                        pending_cr: 0,
                    })
                }
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Appends `data`, turning `\r\n` (and `\r\r\n`, a program's `\r\n`
    /// through the terminal) into `\n`, also across calls.
    pub fn write(&mut self, data: &[u8]) -> io::Result<()> {
        let mut out = Vec::with_capacity(data.len() + self.pending_cr);
        for &b in data {
            if b == b'\r' {
                self.pending_cr += 1;
                continue;
            }
            let crs = std::mem::take(&mut self.pending_cr);
            if b != b'\n' {
                out.resize(out.len() + crs, b'\r');
            }
            out.push(b);
        }
        self.append(&out)
    }

    /// Writes what is still held back (carriage returns at the very end).
    pub fn finish(&mut self) -> io::Result<()> {
        let crs = std::mem::take(&mut self.pending_cr);
        self.append(&vec![b'\r'; crs])
    }

    /// Appends bytes as they are, rotating so that no file exceeds the cap:
    /// a chunk that does not fit starts a new file (a chunk larger than the
    /// cap fills files one after another).
    fn append(&mut self, mut rest: &[u8]) -> io::Result<()> {
        while !rest.is_empty() {
            let room = self.max.saturating_sub(self.size);
            if rest.len() as u64 > room && self.size > 0 {
                self.rotate()?;
                continue;
            }
            let n = rest.len().min(usize::try_from(room).unwrap_or(usize::MAX));
            self.file.write_all(&rest[..n])?;
            self.size += n as u64;
            rest = &rest[n..];
        }
        Ok(())
    }

    /// `NAME.log` becomes `NAME.log.1`, and a new locked `NAME.log` takes
    /// its place; the path names a locked file throughout.
    fn rotate(&mut self) -> io::Result<()> {
        match fs::remove_file(&self.files.staging) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let next = open_append(&self.files.staging, true)?;
        next.lock()?;
        match fs::remove_file(&self.files.previous) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        match fs::hard_link(&self.files.current, &self.files.previous) {
            // Someone removed the log under us: nothing to keep.
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        fs::rename(&self.files.staging, &self.files.current)?;
        self.file = next;
        self.size = 0;
        Ok(())
    }
}

/// What a reader gets of a log: its text so far, and the current file
/// positioned after it (to follow it from there).
#[derive(Debug)]
pub struct Snapshot {
    pub bytes: Vec<u8>,
    pub current: Option<File>,
}

/// Reads the whole log (`NAME.log.1`, then `NAME.log`). `Ok(None)` if there
/// is none.
pub fn read_all(files: &LogFiles) -> io::Result<Option<Snapshot>> {
    // The current file first: if a rotation happens before `.1` is opened,
    // `.1` is that same file, read once.
    let mut current = match File::open(&files.current) {
        Ok(f) => Some(f),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::new();
    match File::open(&files.previous) {
        Ok(mut prev) => {
            let dup = match &current {
                Some(c) => same_file(&c.metadata()?, &prev.metadata()?),
                None => false,
            };
            if !dup {
                prev.read_to_end(&mut bytes)?;
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if current.is_none() {
                return Ok(None);
            }
        }
        Err(e) => return Err(e),
    }
    if let Some(c) = &mut current {
        c.read_to_end(&mut bytes)?;
    }
    Ok(Some(Snapshot { bytes, current }))
}

/// The last `n` lines of `bytes` (a final line without a newline counts).
pub fn last_lines(bytes: &[u8], n: usize) -> &[u8] {
    if n == 0 {
        return &[];
    }
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let mut seen = 0;
    for (i, &b) in body.iter().enumerate().rev() {
        if b == b'\n' {
            seen += 1;
            if seen == n {
                return &bytes[i + 1..];
            }
        }
    }
    bytes
}

/// Copies what the log gets from now on to `out` until its writer is gone
/// and everything it wrote has been copied; `current` is where the reader
/// stands (from [`read_all`]). Follows rotations.
pub fn follow(files: &LogFiles, current: Option<File>, out: &mut dyn Write) -> io::Result<()> {
    let mut current = current;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // Whether the writer was alive before draining: if it was not,
        // everything it wrote is in the file by now.
        let alive = files.writer_alive();
        if let Some(f) = &mut current {
            drain(f, &mut buf, out)?;
        }
        // Rotated (or made since): finish the old file (the writer may have
        // added to it after we drained), then go on with the new one.
        let named = fs::metadata(&files.current).ok();
        let rotated = match (&current, &named) {
            (Some(f), Some(n)) => !same_file(&f.metadata()?, n),
            (None, Some(_)) => true,
            (_, None) => false,
        };
        if rotated {
            if let Some(f) = &mut current {
                drain(f, &mut buf, out)?;
            }
            current = File::open(&files.current).ok();
            continue;
        }
        if !alive {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Copies `f` from where it stands to its end.
fn drain(f: &mut File, buf: &mut [u8], out: &mut dyn Write) -> io::Result<()> {
    loop {
        match f.read(buf) {
            Ok(0) => break,
            Ok(n) => out.write_all(&buf[..n])?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("netspawn-clog-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn crlf_becomes_lf_also_across_writes() {
        let d = tmpdir("crlf");
        let files = LogFiles::new(&d, "m");
        let mut w = Writer::open(files.clone(), 1 << 20).unwrap();
        w.write(b"one\r\ntwo\r").unwrap();
        w.write(b"\nthree\rx\r\r").unwrap();
        w.write(b"\nfour\r\r").unwrap();
        w.write(b"5\r").unwrap();
        w.finish().unwrap();
        assert_eq!(
            fs::read(&files.current).unwrap(),
            b"one\ntwo\nthree\rx\nfour\r\r5\r"
        );
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn rotation_keeps_each_file_under_the_cap_and_the_tail_whole() {
        let d = tmpdir("rotate");
        let files = LogFiles::new(&d, "m");
        let mut w = Writer::open(files.clone(), 100).unwrap();
        let mut all = Vec::new();
        for i in 0..200 {
            let line = format!("line {i}\n");
            all.extend_from_slice(line.as_bytes());
            w.write(line.as_bytes()).unwrap();
            for p in [&files.current, &files.previous] {
                if let Ok(m) = fs::metadata(p) {
                    assert!(m.len() <= 100, "{} is {} bytes", p.display(), m.len());
                }
            }
        }
        // A chunk larger than the cap fills files one after another.
        w.write(&[b'x'; 250]).unwrap();
        assert!(fs::metadata(&files.current).unwrap().len() <= 100);
        assert!(fs::metadata(&files.previous).unwrap().len() <= 100);
        assert!(!files.staging.exists());
        drop(w);
        let snap = read_all(&files).unwrap().unwrap();
        assert!(snap.bytes.len() <= 200);
        // What is kept is the end of what was written.
        all.extend_from_slice(&[b'x'; 250]);
        assert!(all.ends_with(&snap.bytes));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn the_lock_tells_readers_whether_a_writer_runs() {
        let d = tmpdir("lock");
        let files = LogFiles::new(&d, "m");
        assert!(!files.writer_alive());
        assert!(read_all(&files).unwrap().is_none());
        let mut w = Writer::open(files.clone(), 10).unwrap();
        assert!(files.writer_alive());
        w.write(b"0123456789abc").unwrap(); // rotates: the new file is locked too
        assert!(files.writer_alive());
        drop(w);
        assert!(!files.writer_alive());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn follow_copies_until_the_writer_is_gone_across_rotations() {
        let d = tmpdir("follow");
        let files = LogFiles::new(&d, "m");
        let mut w = Writer::open(files.clone(), 64).unwrap();
        w.write(b"before\n").unwrap();
        let snap = read_all(&files).unwrap().unwrap();
        assert_eq!(snap.bytes, b"before\n");
        let f2 = files.clone();
        let t = std::thread::spawn(move || {
            let mut out = Vec::new();
            follow(&f2, snap.current, &mut out).unwrap();
            out
        });
        for i in 0..40 {
            w.write(format!("after {i}\n").as_bytes()).unwrap();
            if i % 10 == 0 {
                std::thread::sleep(std::time::Duration::from_millis(150));
            }
        }
        drop(w);
        let got = t.join().unwrap();
        // With a cap this small, rotations while the reader slept may pass
        // over a whole file it never saw; the end is always there.
        assert!(
            got.starts_with(b"after 0\n"),
            "{}",
            String::from_utf8_lossy(&got)
        );
        assert!(
            got.ends_with(b"after 39\n"),
            "{}",
            String::from_utf8_lossy(&got)
        );
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn last_lines_counts_from_the_end() {
        assert_eq!(last_lines(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(last_lines(b"a\nb\nc", 2), b"b\nc");
        assert_eq!(last_lines(b"a\nb\n", 5), b"a\nb\n");
        assert_eq!(last_lines(b"a\nb\n", 0), b"");
        assert_eq!(last_lines(b"", 3), b"");
    }
}
