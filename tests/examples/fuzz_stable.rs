//! A mutation fuzzer for the two config-file parsers that runs on stable
//! Rust (cargo-fuzz needs nightly): the `.nspawn` parser
//! (`netspawn::config::file`) and netd's `.network` parser
//! (`netd::template::parse`). No coverage feedback: seeds from
//! `fuzz/corpus/{settings,netfile}/` are mutated (bit flips, byte inserts
//! and deletes, dictionary tokens taken from the seeds' section and key
//! names, lines spliced in from other seeds), and inputs that parse are
//! kept in a bounded pool to be mutated further. Each input runs under
//! `catch_unwind` with the same checks as the cargo-fuzz targets
//! (`fuzz/fuzz_targets/{settings,netfile}.rs`); a panic is a crash, written
//! to the crash directory (one file per distinct panic message) and counted.
//!
//! Usage: `fuzz_stable settings|netfile|llmnr CORPUS_DIR EXECS CRASH_DIR [SEED]`
//! (`llmnr`: netd's LLMNR responder, `fuzz/fuzz_targets/llmnr.rs`).
//! Prints one line of figures; exits 1 if anything crashed. Build it with
//! `panic = "unwind"` (the workspace's release profile aborts): see
//! bench/fuzz.sh.

use std::collections::BTreeMap;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

/// Largest input tried (systemd's LONG_LINE_MAX is 1 MiB; a few long lines
/// are enough to reach it).
const MAX_LEN: usize = 64 * 1024;
/// Inputs that parsed, kept for further mutation.
const POOL_MAX: usize = 4096;

/// xorshift64*: small, fast, and reproducible from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }
}

/// Values that tend to sit on edges of the value parsers.
const VALUES: &[&str] = &[
    "",
    "yes",
    "no",
    "0",
    "1",
    "-1",
    "all",
    "~",
    "!",
    "*",
    "?",
    "[",
    "]",
    "[]",
    ":",
    "::",
    "/",
    "//",
    "=",
    "\\",
    "\\\n",
    "\"",
    "'",
    "#",
    ";",
    "%",
    "@",
    "+",
    "0x10",
    "65535",
    "65536",
    "4294967295",
    "4294967296",
    "18446744073709551615",
    "18446744073709551616",
    "infinity",
    "1h",
    "1.5s",
    "1y",
    "1K",
    "1E",
    "8M:4M",
    "1:",
    ":1",
    "0.0.0.0/0",
    "255.255.255.255/32",
    "127.0.0.1/8",
    "::1/128",
    "fe80::1%eth0",
    "[::1]:53",
    "192.168.1.1:65536",
    "CAP_SYS_ADMIN",
    "SIGRTMIN+30",
    "@system-service",
    "/a:/b:c:d",
    "tcp:1:2",
    "ve-*",
    "\u{feff}",
    "\u{fffd}",
    "\u{0}",
    "\t",
    " ",
    "\r\n",
];

/// Section headers and `Key=` prefixes found in the seeds, plus [`VALUES`].
fn dictionary(seeds: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut dict: Vec<Vec<u8>> = VALUES.iter().map(|v| v.as_bytes().to_vec()).collect();
    for seed in seeds {
        for line in seed.split(|&b| b == b'\n') {
            let line = line.trim_ascii();
            if line.starts_with(b"[") && line.ends_with(b"]") {
                dict.push([line, b"\n"].concat());
            } else if let Some(eq) = line.iter().position(|&b| b == b'=') {
                dict.push(line[..=eq].to_vec());
                for word in line[eq + 1..].split(|&b| b == b' ') {
                    if !word.is_empty() && word.len() < 64 {
                        dict.push(word.to_vec());
                    }
                }
            }
        }
    }
    dict.sort();
    dict.dedup();
    dict
}

fn lines(data: &[u8]) -> Vec<&[u8]> {
    data.split_inclusive(|&b| b == b'\n').collect()
}

/// One to four stacked mutations of `input`, drawing on `others` for
/// splices and `dict` for tokens.
fn mutate(rng: &mut Rng, input: &[u8], others: &[Vec<u8>], dict: &[Vec<u8>]) -> Vec<u8> {
    let mut d = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = d.len();
        match rng.below(12) {
            // Flip one bit.
            0 if len > 0 => {
                let i = rng.below(len);
                d[i] ^= 1 << rng.below(8);
            }
            // Overwrite a byte with an interesting one.
            1 if len > 0 => {
                let i = rng.below(len);
                d[i] = *rng.pick(&[
                    0, 0xff, b'\n', b'=', b'[', b']', b'\\', b'"', b' ', b'#', 0x80, 0xc3, b':',
                    b'~',
                ]);
            }
            // Insert random bytes.
            2 => {
                let i = rng.below(len + 1);
                let n = 1 + rng.below(8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                d.splice(i..i, bytes);
            }
            // Delete a range.
            3 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(64));
                d.drain(i..i + n);
            }
            // Duplicate a range.
            4 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(64));
                let copy = d[i..i + n].to_vec();
                let at = rng.below(len + 1);
                d.splice(at..at, copy);
            }
            // A dictionary token anywhere, or at a line start.
            5 | 6 => {
                let tok = rng.pick(dict).clone();
                let at = if rng.below(2) == 0 {
                    rng.below(len + 1)
                } else {
                    let starts: Vec<usize> = std::iter::once(0)
                        .chain(
                            d.iter()
                                .enumerate()
                                .filter(|(_, &b)| b == b'\n')
                                .map(|(i, _)| i + 1),
                        )
                        .collect();
                    *rng.pick(&starts)
                };
                d.splice(at..at, tok);
            }
            // Replace one line with a line of another seed.
            7 | 8 if !others.is_empty() => {
                let other = rng.pick(others);
                let theirs = lines(other);
                if theirs.is_empty() {
                    continue;
                }
                let line = rng.pick(&theirs).to_vec();
                let ours = lines(&d);
                let k = rng.below(ours.len() + 1);
                let mut out: Vec<u8> = Vec::with_capacity(d.len() + line.len());
                for (j, l) in ours.iter().enumerate() {
                    if j == k {
                        out.extend_from_slice(&line);
                    } else {
                        out.extend_from_slice(l);
                    }
                }
                if k == ours.len() {
                    out.extend_from_slice(&line);
                }
                d = out;
            }
            // Swap two lines.
            9 => {
                let mut ls: Vec<Vec<u8>> = lines(&d).into_iter().map(<[u8]>::to_vec).collect();
                if ls.len() > 1 {
                    let (a, b) = (rng.below(ls.len()), rng.below(ls.len()));
                    ls.swap(a, b);
                    d = ls.concat();
                }
            }
            // Truncate.
            10 if len > 0 => d.truncate(rng.below(len)),
            // A long run of one byte (line-length limits).
            11 => {
                let at = rng.below(len + 1);
                let b = *rng.pick(b"a \\=\n[");
                let n = 1 + rng.below(4096);
                d.splice(at..at, std::iter::repeat_n(b, n));
            }
            _ => {}
        }
    }
    d.truncate(MAX_LEN);
    d
}

/// The `.nspawn` target: returns true if the input parsed.
fn settings(data: &[u8]) -> bool {
    netspawn::config::fuzz_check(data)
}

/// The `.network` target: returns true if the input parsed.
fn netfile(data: &[u8]) -> bool {
    netd::template::fuzz_check(data)
}

/// netd's LLMNR responder (`fuzz/fuzz_targets/llmnr.rs`): true if the
/// datagram got a reply, which must carry the request's ID.
fn llmnr(data: &[u8]) -> bool {
    use netd::dns::llmnr::{respond, Outcome};
    static DIR: std::sync::OnceLock<netd::dns::StaticDirectory> = std::sync::OnceLock::new();
    let dir = DIR.get_or_init(|| {
        netd::dns::StaticDirectory::new([
            (
                "web",
                vec!["10.0.0.2".parse().unwrap(), "fd00::2".parse().unwrap()],
            ),
            ("db", vec!["10.0.0.9".parse().unwrap()]),
            ("empty", vec![]),
        ])
    });
    let host = ["10.0.0.1".parse().unwrap()];
    let mut replied = false;
    for from in ["10.0.0.2", "10.0.0.7"] {
        if let Outcome::Reply(r) = respond(data, from.parse().unwrap(), dir, &host) {
            assert!(
                r.len() >= 12 && r[..2] == data[..2],
                "reply without the request's ID"
            );
            replied = true;
        }
    }
    replied
}

/// The message and place of the last panic (set by the hook).
static LAST_PANIC: Mutex<String> = Mutex::new(String::new());

fn read_seeds(dir: &Path) -> Vec<Vec<u8>> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| die(&format!("{}: {e}", dir.display())))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    names.sort();
    names
        .iter()
        .filter_map(|p| std::fs::read(p).ok())
        .map(|mut d| {
            d.truncate(MAX_LEN);
            d
        })
        .collect()
}

fn die(msg: &str) -> ! {
    eprintln!("fuzz_stable: {msg}");
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        die("usage: fuzz_stable settings|netfile|llmnr CORPUS_DIR EXECS CRASH_DIR [SEED]");
    }
    let target: fn(&[u8]) -> bool = match args[1].as_str() {
        "settings" => settings,
        "netfile" => netfile,
        "llmnr" => llmnr,
        t => die(&format!("unknown target {t:?}")),
    };
    let seeds = read_seeds(Path::new(&args[2]));
    if seeds.is_empty() {
        die(&format!("no seeds in {}", args[2]));
    }
    let execs: u64 = args[3]
        .parse()
        .unwrap_or_else(|_| die("EXECS must be a number"));
    let crash_dir = PathBuf::from(&args[4]);
    let seed: u64 = args
        .get(5)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x9e37_79b9_7f4a_7c15);
    let mut rng = Rng(seed | 1);
    let dict = dictionary(&seeds);

    panic::set_hook(Box::new(|info| {
        let place = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        if let Ok(mut last) = LAST_PANIC.lock() {
            *last = format!("{place}: {msg}");
        }
    }));

    // Every seed as it is first, then mutants of seeds and of pool entries.
    let mut pool: Vec<Vec<u8>> = Vec::new();
    let mut crashes = 0u64;
    let mut unique: BTreeMap<String, usize> = BTreeMap::new();
    let start = Instant::now();
    for n in 0..execs {
        let input = if (n as usize) < seeds.len() {
            seeds[n as usize].clone()
        } else {
            let base = if !pool.is_empty() && rng.below(2) == 0 {
                rng.pick(&pool)
            } else {
                rng.pick(&seeds)
            };
            mutate(&mut rng, base, &seeds, &dict)
        };
        match panic::catch_unwind(AssertUnwindSafe(|| target(&input))) {
            Ok(true) => {
                if pool.len() < POOL_MAX {
                    pool.push(input);
                } else if rng.below(16) == 0 {
                    let i = rng.below(POOL_MAX);
                    pool[i] = input;
                }
            }
            Ok(false) => {}
            Err(_) => {
                crashes += 1;
                let what = LAST_PANIC.lock().map(|s| s.clone()).unwrap_or_default();
                let k = unique.len();
                let id = *unique.entry(what.clone()).or_insert(k);
                if id == k {
                    let _ = std::fs::create_dir_all(&crash_dir);
                    let f = crash_dir.join(format!("crash-{}-{id}", args[1]));
                    let _ = std::fs::write(&f, &input);
                    let _ = std::fs::write(f.with_extension("txt"), format!("{what}\n"));
                    eprintln!(
                        "fuzz_stable: crash {id} in {}: {what} ({})",
                        args[1],
                        f.display()
                    );
                }
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "target={} execs={execs} seconds={secs:.1} execs_per_sec={:.0} crashes={crashes} unique={} pool={} seeds={}",
        args[1],
        execs as f64 / secs.max(1e-9),
        unique.len(),
        pool.len(),
        seeds.len()
    );
    std::process::exit(i32::from(crashes > 0));
}
