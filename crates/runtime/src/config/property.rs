//! Resource-control properties (`--property=NAME=VALUE`, `netspawnctl
//! set-property`, and the persisted drop-ins) and `--slice=`, typed and
//! parsed once, in systemd's value syntax (systemd.resource-control(5)):
//! sizes with base-1024 suffixes, percentages of physical memory,
//! `infinity`; `CPUQuota=` in percent of one CPU (above 100% allowed);
//! weights 1–10000; `TasksMax=` as a number, a percentage of the host's
//! task limit or `infinity`; `AllowedCPUs=` as a CPU list. An empty value
//! resets the property to its default, as in systemd.
//!
//! systemd.nspawn(5) has no such keys: they come from the command line and
//! from the drop-ins `netspawnctl set-property` writes (see [`dropin`]).

use std::collections::BTreeMap;
use std::fmt;

use netspawn_common::unitfile::values::parse_size_1024;

use super::model::CpuSet;

/// Which property (the key of [`Limits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PropertyKind {
    MemoryMax,
    MemoryHigh,
    MemorySwapMax,
    CpuQuota,
    CpuWeight,
    TasksMax,
    IoWeight,
    AllowedCpus,
}

impl PropertyKind {
    pub const ALL: [PropertyKind; 8] = [
        PropertyKind::MemoryMax,
        PropertyKind::MemoryHigh,
        PropertyKind::MemorySwapMax,
        PropertyKind::CpuQuota,
        PropertyKind::CpuWeight,
        PropertyKind::TasksMax,
        PropertyKind::IoWeight,
        PropertyKind::AllowedCpus,
    ];

    /// systemd's spelling.
    pub fn name(self) -> &'static str {
        match self {
            PropertyKind::MemoryMax => "MemoryMax",
            PropertyKind::MemoryHigh => "MemoryHigh",
            PropertyKind::MemorySwapMax => "MemorySwapMax",
            PropertyKind::CpuQuota => "CPUQuota",
            PropertyKind::CpuWeight => "CPUWeight",
            PropertyKind::TasksMax => "TasksMax",
            PropertyKind::IoWeight => "IOWeight",
            PropertyKind::AllowedCpus => "AllowedCPUs",
        }
    }

    pub fn from_name(name: &str) -> Option<PropertyKind> {
        PropertyKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// A memory limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemLimit {
    Infinity,
    Bytes(u64),
    /// Of physical memory, in 1/10000.
    Permyriad(u32),
}

impl MemLimit {
    /// Bytes, with percentages of `physical` (None: infinity).
    pub fn bytes(self, physical: u64) -> Option<u64> {
        match self {
            MemLimit::Infinity => None,
            MemLimit::Bytes(b) => Some(b),
            MemLimit::Permyriad(p) => Some(
                (u128::from(physical) * u128::from(p) / 10_000).min(u128::from(u64::MAX)) as u64,
            ),
        }
    }
}

/// `TasksMax=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TasksLimit {
    Infinity,
    Count(u64),
    /// Of the host's task limit, in 1/10000.
    Permyriad(u32),
}

impl TasksLimit {
    /// A count, with percentages of `system` (None: infinity).
    pub fn count(self, system: u64) -> Option<u64> {
        match self {
            TasksLimit::Infinity => None,
            TasksLimit::Count(n) => Some(n),
            TasksLimit::Permyriad(p) => {
                Some((u128::from(system) * u128::from(p) / 10_000).max(1) as u64)
            }
        }
    }
}

/// One property with its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Property {
    MemoryMax(MemLimit),
    MemoryHigh(MemLimit),
    MemorySwapMax(MemLimit),
    /// Of one CPU, in 1/10000 per second (None: no quota).
    CpuQuota(Option<u32>),
    /// 1–10000 (100 is the default).
    CpuWeight(u64),
    TasksMax(TasksLimit),
    /// 1–10000 (100 is the default).
    IoWeight(u64),
    /// Empty: every CPU.
    AllowedCpus(CpuSet),
}

/// The default weight of `CPUWeight=` and `IOWeight=`.
pub const WEIGHT_DEFAULT: u64 = 100;

/// Why a property assignment is refused (one line).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PropertyError {
    #[error("expected NAME=VALUE, got {0:?}")]
    Syntax(String),
    #[error("unknown property {0:?} (netspawn supports MemoryMax=, MemoryHigh=, MemorySwapMax=, CPUQuota=, CPUWeight=, TasksMax=, IOWeight=, AllowedCPUs=)")]
    Unknown(String),
    #[error("invalid {name}= value {value:?}: {reason}")]
    Value {
        name: &'static str,
        value: String,
        reason: &'static str,
    },
}

/// `N%`, `N.N%`, `N.NN%`, `N‰`, `N‱` in 1/10000, at most `max` (systemd's
/// `parse_permyriad()`).
fn permyriad(v: &str, max: u64) -> Option<u32> {
    let (num, scale) = if let Some(n) = v.strip_suffix('%') {
        (n, 2)
    } else if let Some(n) = v.strip_suffix('‰') {
        (n, 1)
    } else if let Some(n) = v.strip_suffix('‱') {
        (n, 0)
    } else {
        return None;
    };
    let (whole, frac) = num.split_once('.').unwrap_or((num, ""));
    if whole.is_empty()
        || whole.len() > 9
        || frac.len() > scale
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || (num.contains('.') && frac.is_empty())
    {
        return None;
    }
    let mut n: u64 = whole.parse().ok()?;
    let mut f = frac.to_string();
    while f.len() < scale {
        f.push('0');
    }
    n = n.checked_mul(10u64.pow(scale as u32))?;
    if !f.is_empty() {
        n += f.parse::<u64>().ok()?;
    }
    (n <= max).then_some(n as u32)
}

fn mem_limit(name: &'static str, v: &str, zero_ok: bool) -> Result<MemLimit, PropertyError> {
    let bad = |reason| PropertyError::Value {
        name,
        value: v.to_string(),
        reason,
    };
    if v.is_empty() || v == "infinity" {
        return Ok(MemLimit::Infinity);
    }
    if v.ends_with(['%', '‰', '‱']) {
        return match permyriad(v, 10_000) {
            Some(0) if !zero_ok => Err(bad("must be above 0")),
            Some(p) => Ok(MemLimit::Permyriad(p)),
            None => Err(bad("expected a percentage of physical memory up to 100%")),
        };
    }
    match parse_size_1024(v) {
        Some(0) if !zero_ok => Err(bad("must be above 0")),
        Some(u64::MAX) => Ok(MemLimit::Infinity),
        Some(b) => Ok(MemLimit::Bytes(b)),
        None => Err(bad(
            "expected bytes (with K, M, G, T, P or E), a percentage or \"infinity\"",
        )),
    }
}

fn weight(name: &'static str, v: &str) -> Result<u64, PropertyError> {
    if v.is_empty() {
        return Ok(WEIGHT_DEFAULT);
    }
    match v.parse::<u64>() {
        Ok(n) if (1..=10_000).contains(&n) && v.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(PropertyError::Value {
            name,
            value: v.to_string(),
            reason: "expected a weight from 1 to 10000",
        }),
    }
}

impl Property {
    /// Parses `NAME=VALUE`.
    pub fn parse(assignment: &str) -> Result<Property, PropertyError> {
        let (name, value) = assignment
            .split_once('=')
            .ok_or_else(|| PropertyError::Syntax(assignment.to_string()))?;
        let kind = PropertyKind::from_name(name.trim())
            .ok_or_else(|| PropertyError::Unknown(name.trim().to_string()))?;
        Property::parse_value(kind, value.trim())
    }

    /// Parses the value of property `kind`.
    pub fn parse_value(kind: PropertyKind, v: &str) -> Result<Property, PropertyError> {
        let name = kind.name();
        let bad = |reason| PropertyError::Value {
            name,
            value: v.to_string(),
            reason,
        };
        Ok(match kind {
            PropertyKind::MemoryMax => Property::MemoryMax(mem_limit(name, v, false)?),
            PropertyKind::MemoryHigh => Property::MemoryHigh(mem_limit(name, v, false)?),
            PropertyKind::MemorySwapMax => Property::MemorySwapMax(mem_limit(name, v, true)?),
            PropertyKind::CpuQuota => {
                if v.is_empty() || v == "infinity" {
                    Property::CpuQuota(None)
                } else {
                    match permyriad(v, 100_000_000) {
                        Some(0) => return Err(bad("must be above 0%")),
                        Some(p) => Property::CpuQuota(Some(p)),
                        None => {
                            return Err(bad("expected a percentage of one CPU such as 50% or 200%"))
                        }
                    }
                }
            }
            PropertyKind::CpuWeight => Property::CpuWeight(weight(name, v)?),
            PropertyKind::IoWeight => Property::IoWeight(weight(name, v)?),
            PropertyKind::TasksMax => {
                if v.is_empty() || v == "infinity" {
                    Property::TasksMax(TasksLimit::Infinity)
                } else if v.ends_with(['%', '‰', '‱']) {
                    match permyriad(v, 10_000) {
                        Some(p) if p > 0 => Property::TasksMax(TasksLimit::Permyriad(p)),
                        _ => return Err(bad("expected a percentage above 0% and up to 100%")),
                    }
                } else {
                    match v.parse::<u64>() {
                        Ok(n)
                            if (1..u64::MAX).contains(&n)
                                && v.bytes().all(|b| b.is_ascii_digit()) =>
                        {
                            Property::TasksMax(TasksLimit::Count(n))
                        }
                        _ => return Err(bad(
                            "expected a number of tasks (at least 1), a percentage or \"infinity\"",
                        )),
                    }
                }
            }
            PropertyKind::AllowedCpus => {
                if v.is_empty() {
                    Property::AllowedCpus(CpuSet::new())
                } else {
                    Property::AllowedCpus(
                        crate::spec::parse_cpu_set(v)
                            .map_err(|_| bad("expected CPU numbers and ranges such as 0-1,3"))?,
                    )
                }
            }
        })
    }

    pub fn kind(&self) -> PropertyKind {
        match self {
            Property::MemoryMax(_) => PropertyKind::MemoryMax,
            Property::MemoryHigh(_) => PropertyKind::MemoryHigh,
            Property::MemorySwapMax(_) => PropertyKind::MemorySwapMax,
            Property::CpuQuota(_) => PropertyKind::CpuQuota,
            Property::CpuWeight(_) => PropertyKind::CpuWeight,
            Property::TasksMax(_) => PropertyKind::TasksMax,
            Property::IoWeight(_) => PropertyKind::IoWeight,
            Property::AllowedCpus(_) => PropertyKind::AllowedCpus,
        }
    }
}

fn fmt_permyriad(p: u32) -> String {
    if p.is_multiple_of(100) {
        format!("{}%", p / 100)
    } else {
        format!("{}.{:02}%", p / 100, p % 100)
    }
}

/// CPUs as a list of ranges (`0-1,3`).
pub fn format_cpu_set(set: &CpuSet) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut it = set.iter().copied().peekable();
    while let Some(lo) = it.next() {
        let mut hi = lo;
        while it.peek() == Some(&(hi + 1)) {
            hi += 1;
            it.next();
        }
        out.push(if lo == hi {
            lo.to_string()
        } else {
            format!("{lo}-{hi}")
        });
    }
    out.join(",")
}

impl fmt::Display for Property {
    /// `NAME=VALUE` in systemd's syntax ([`Property::parse`] reads it back).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mem = |m: &MemLimit| match m {
            MemLimit::Infinity => "infinity".to_string(),
            MemLimit::Bytes(b) => b.to_string(),
            MemLimit::Permyriad(p) => fmt_permyriad(*p),
        };
        let value = match self {
            Property::MemoryMax(m) | Property::MemoryHigh(m) | Property::MemorySwapMax(m) => mem(m),
            Property::CpuQuota(None) => "infinity".into(),
            Property::CpuQuota(Some(p)) => fmt_permyriad(*p),
            Property::CpuWeight(w) | Property::IoWeight(w) => w.to_string(),
            Property::TasksMax(TasksLimit::Infinity) => "infinity".into(),
            Property::TasksMax(TasksLimit::Count(n)) => n.to_string(),
            Property::TasksMax(TasksLimit::Permyriad(p)) => fmt_permyriad(*p),
            Property::AllowedCpus(s) => format_cpu_set(s),
        };
        write!(f, "{}={value}", self.kind().name())
    }
}

/// A set of properties, one value per kind (a later one replaces an
/// earlier one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits(pub BTreeMap<PropertyKind, Property>);

impl Limits {
    pub fn set(&mut self, p: Property) {
        self.0.insert(p.kind(), p);
    }

    pub fn get(&self, k: PropertyKind) -> Option<&Property> {
        self.0.get(&k)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Property> {
        self.0.values()
    }

    /// `self`, with every property of `over` replacing ours.
    pub fn overlaid(mut self, over: &Limits) -> Limits {
        for p in over.iter() {
            self.set(p.clone());
        }
        self
    }
}

impl FromIterator<Property> for Limits {
    fn from_iter<I: IntoIterator<Item = Property>>(iter: I) -> Self {
        let mut l = Limits::default();
        for p in iter {
            l.set(p);
        }
        l
    }
}

/// Why a slice name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid slice name {0:?}: expected NAME.slice, dash-separated parts of letters, digits, ':', '_', '.' or '\\' (not \"-.slice\")")]
pub struct SliceError(pub String);

/// The cgroup path of slice `name` below the hierarchy's root, as systemd
/// nests slices: `a-b.slice` → `a.slice/a-b.slice`. The root slice
/// (`-.slice`) is refused: machines never go into the hierarchy's root.
pub fn slice_path(name: &str) -> Result<String, SliceError> {
    let err = || SliceError(name.to_string());
    let stem = name.strip_suffix(".slice").ok_or_else(err)?;
    if name.len() > 255
        || stem.is_empty()
        || stem.starts_with('-')
        || stem.ends_with('-')
        || stem.contains("--")
        || !stem
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b":_.\\-".contains(&b))
        || stem.split('-').any(|part| part == "." || part == "..")
    {
        return Err(err());
    }
    let mut parts = Vec::new();
    for (i, _) in stem.match_indices('-') {
        parts.push(format!("{}.slice", &stem[..i]));
    }
    parts.push(name.to_string());
    Ok(parts.join("/"))
}

/// The drop-ins `netspawnctl set-property` persists: one file per property,
/// `<first settings dir>/NAME.nspawn.d/50-PROPERTY.conf`, beside the
/// machine's `.nspawn` file as systemd keeps `/etc/systemd/system.control/`
/// next to its units. Each holds a `[Property]` section with one
/// assignment; the launcher applies them at the next start, the command
/// line winning.
pub mod dropin {
    use std::path::{Path, PathBuf};

    use netspawn_common::paths::Paths;

    use super::{Limits, Property, PropertyKind};

    /// Why the persisted properties cannot be read (one line, naming the file).
    #[derive(Debug, thiserror::Error)]
    pub enum DropinError {
        #[error("{}: {err}", .path.display())]
        Io { path: PathBuf, err: std::io::Error },
        #[error("{}:{line}: {msg}", .path.display())]
        Parse {
            path: PathBuf,
            line: usize,
            msg: String,
        },
    }

    /// The drop-in directory of machine `name`.
    pub fn dir(paths: &Paths, name: &str) -> Option<PathBuf> {
        paths
            .settings_path
            .first()
            .map(|d| d.join(format!("{name}.nspawn.d")))
    }

    /// The file that persists property `kind` of machine `name`.
    pub fn file(paths: &Paths, name: &str, kind: PropertyKind) -> Option<PathBuf> {
        dir(paths, name).map(|d| d.join(format!("50-{}.conf", kind.name())))
    }

    /// The text of one drop-in.
    pub fn render(p: &Property) -> String {
        format!("# Written by netspawnctl set-property.\n[Property]\n{p}\n")
    }

    /// Parses one drop-in's text into `out`.
    pub fn parse(text: &str, path: &Path, out: &mut Limits) -> Result<(), DropinError> {
        let mut in_section = false;
        for (i, raw) in text.lines().enumerate() {
            let perr = |msg: String| DropinError::Parse {
                path: path.to_path_buf(),
                line: i + 1,
                msg,
            };
            let l = raw.trim();
            if l.is_empty() || l.starts_with('#') || l.starts_with(';') {
                continue;
            }
            if l.starts_with('[') {
                in_section = l == "[Property]";
                if !in_section {
                    return Err(perr(format!("unknown section {l} (expected [Property])")));
                }
                continue;
            }
            if !in_section {
                return Err(perr("assignment outside of [Property]".into()));
            }
            out.set(Property::parse(l).map_err(|e| perr(e.to_string()))?);
        }
        Ok(())
    }

    /// Every persisted property of machine `name` (none if the directory
    /// does not exist), files in name order.
    pub fn load(paths: &Paths, name: &str) -> Result<Limits, DropinError> {
        let mut out = Limits::default();
        let Some(d) = dir(paths, name) else {
            return Ok(out);
        };
        let rd = match std::fs::read_dir(&d) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(err) => return Err(DropinError::Io { path: d, err }),
        };
        let mut files: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "conf") && p.is_file())
            .collect();
        files.sort();
        for f in files {
            let text = std::fs::read_to_string(&f).map_err(|err| DropinError::Io {
                path: f.clone(),
                err,
            })?;
            parse(&text, &f, &mut out)?;
        }
        Ok(out)
    }

    /// Persists `p` for machine `name` (atomically: temporary file + rename).
    pub fn store(paths: &Paths, name: &str, p: &Property) -> Result<PathBuf, DropinError> {
        let path = file(paths, name, p.kind()).ok_or_else(|| DropinError::Io {
            path: PathBuf::from("(settings path)"),
            err: std::io::Error::other("no settings directory to persist into"),
        })?;
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |err| DropinError::Io { path, err }
        };
        let d = path.parent().unwrap_or(Path::new("/"));
        std::fs::create_dir_all(d).map_err(io(d))?;
        let tmp = d.join(format!(".{}.tmp", p.kind().name()));
        std::fs::write(&tmp, render(p)).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_in_systemd_syntax() {
        let ok: &[(&str, Property)] = &[
            (
                "MemoryMax=32M",
                Property::MemoryMax(MemLimit::Bytes(32 << 20)),
            ),
            (
                "MemoryMax=2G",
                Property::MemoryMax(MemLimit::Bytes(2 << 30)),
            ),
            ("MemoryMax=1.5K", Property::MemoryMax(MemLimit::Bytes(1536))),
            ("MemoryMax=4096", Property::MemoryMax(MemLimit::Bytes(4096))),
            (
                "MemoryMax=infinity",
                Property::MemoryMax(MemLimit::Infinity),
            ),
            ("MemoryMax=", Property::MemoryMax(MemLimit::Infinity)),
            (
                "MemoryHigh=50%",
                Property::MemoryHigh(MemLimit::Permyriad(5000)),
            ),
            (
                "MemoryHigh=12.5%",
                Property::MemoryHigh(MemLimit::Permyriad(1250)),
            ),
            (
                "MemorySwapMax=0",
                Property::MemorySwapMax(MemLimit::Bytes(0)),
            ),
            ("CPUQuota=50%", Property::CpuQuota(Some(5000))),
            ("CPUQuota=200%", Property::CpuQuota(Some(20000))),
            ("CPUQuota=", Property::CpuQuota(None)),
            ("CPUWeight=1", Property::CpuWeight(1)),
            ("CPUWeight=10000", Property::CpuWeight(10000)),
            ("IOWeight=", Property::IoWeight(100)),
            ("TasksMax=20", Property::TasksMax(TasksLimit::Count(20))),
            (
                "TasksMax=10%",
                Property::TasksMax(TasksLimit::Permyriad(1000)),
            ),
            (
                "TasksMax=infinity",
                Property::TasksMax(TasksLimit::Infinity),
            ),
            (
                "AllowedCPUs=0-1,3",
                Property::AllowedCpus([0, 1, 3].into_iter().collect()),
            ),
            (" CPUWeight = 7 ", Property::CpuWeight(7)),
        ];
        for (text, want) in ok {
            assert_eq!(Property::parse(text).as_ref(), Ok(want), "{text}");
            // Display reads back to the same value.
            let shown = want.to_string();
            assert_eq!(Property::parse(&shown).as_ref(), Ok(want), "{shown}");
        }
        let bad: &[(&str, &str)] = &[
            ("MemoryMax=lots", "MemoryMax"),
            ("MemoryMax=0", "above 0"),
            ("MemoryMax=101%", "MemoryMax"),
            ("MemoryMax=-1", "MemoryMax"),
            ("MemoryMax=1Q", "MemoryMax"),
            ("CPUQuota=50", "CPUQuota"),
            ("CPUQuota=0%", "CPUQuota"),
            ("CPUQuota=1.234%", "CPUQuota"),
            ("CPUWeight=0", "CPUWeight"),
            ("CPUWeight=10001", "CPUWeight"),
            ("CPUWeight=+5", "CPUWeight"),
            ("IOWeight=x", "IOWeight"),
            ("TasksMax=0", "TasksMax"),
            ("TasksMax=-3", "TasksMax"),
            ("AllowedCPUs=a", "AllowedCPUs"),
            ("AllowedCPUs=3-1", "AllowedCPUs"),
            ("DeviceAllow=/dev/null", "unknown property"),
            ("memorymax=1G", "unknown property"),
            ("MemoryMax", "NAME=VALUE"),
        ];
        for (text, needle) in bad {
            let e = Property::parse(text).expect_err(text).to_string();
            assert!(e.contains(needle), "{text}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn percentages_resolve_against_the_host() {
        assert_eq!(MemLimit::Permyriad(5000).bytes(1 << 30), Some(1 << 29));
        assert_eq!(MemLimit::Infinity.bytes(1 << 30), None);
        assert_eq!(TasksLimit::Permyriad(1).count(100), Some(1));
        assert_eq!(TasksLimit::Permyriad(5000).count(4194304), Some(2097152));
    }

    #[test]
    fn later_properties_win() {
        let l: Limits = ["MemoryMax=1G", "CPUWeight=5", "MemoryMax=2G"]
            .iter()
            .map(|s| Property::parse(s).unwrap())
            .collect();
        assert_eq!(l.0.len(), 2);
        assert_eq!(
            l.get(PropertyKind::MemoryMax),
            Some(&Property::MemoryMax(MemLimit::Bytes(2 << 30)))
        );
        let over: Limits = [Property::CpuWeight(9)].into_iter().collect();
        let merged = l.overlaid(&over);
        assert_eq!(
            merged.get(PropertyKind::CpuWeight),
            Some(&Property::CpuWeight(9))
        );
    }

    #[test]
    fn slices_nest_as_in_systemd() {
        assert_eq!(slice_path("machine.slice").unwrap(), "machine.slice");
        assert_eq!(slice_path("a-b.slice").unwrap(), "a.slice/a-b.slice");
        assert_eq!(
            slice_path("a-b-c.slice").unwrap(),
            "a.slice/a-b.slice/a-b-c.slice"
        );
        for bad in [
            "-.slice",
            "machine",
            ".slice",
            "a--b.slice",
            "-a.slice",
            "a-.slice",
            "a/b.slice",
            "a b.slice",
            "..-x.slice",
        ] {
            assert!(slice_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dropins_round_trip() {
        let p = Property::parse("MemoryMax=64M").unwrap();
        let mut l = Limits::default();
        dropin::parse(&dropin::render(&p), "/x.conf".as_ref(), &mut l).unwrap();
        assert_eq!(l.get(PropertyKind::MemoryMax), Some(&p));
        let e = dropin::parse("[Property]\nMemoryMax=lots\n", "/x.conf".as_ref(), &mut l)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("/x.conf:2: invalid MemoryMax="), "{e}");
        assert!(dropin::parse("[Scope]\nMemoryMax=1\n", "/x.conf".as_ref(), &mut l).is_err());
    }
}
