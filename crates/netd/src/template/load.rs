//! Where templates come from: the search path, networkd's precedence and
//! masking over it, the templates built into the binary below it, and the
//! [`Loaded`] set that picks a link's file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ipnetwork::IpNetwork;
use netspawn_common::fsread;

use super::matching::LinkFacts;
use super::model::NetworkFile;
use super::parse::{parse, parse_bytes};
use super::virt::Virtualization;
use super::NetFileError;

/// Largest `.network` file read; bigger ones are an error rather than a
/// reason to read without bound.
pub const MAX_FILE_SIZE: u64 = 4 * 1024 * 1024;

/// Colon-separated directories searched for `.network` files, highest
/// priority first; replaces [`DEFAULT_NETWORK_PATH`] when set and not empty
/// (tests use it). The built-in templates stay below it either way.
pub const ENV_NETWORK_PATH: &str = "NETSPAWN_NETWORK_PATH";

/// Directories searched for `.network` files when [`ENV_NETWORK_PATH`] is not
/// set, highest priority first: the administrator's, then the package's.
pub const DEFAULT_NETWORK_PATH: [&str; 2] = ["/etc/netspawn/network", "/usr/lib/netspawn/network"];

/// The directory name shown in messages about a built-in template.
pub const BUILTIN_DIR: &str = "(built-in)";

/// The templates of `network-templates/`, built in: (file name, text).
pub const BUILTIN: [(&str, &str); 4] = [
    (
        "80-container-host0.network",
        include_str!("../../../../network-templates/80-container-host0.network"),
    ),
    (
        "80-container-vb.network",
        include_str!("../../../../network-templates/80-container-vb.network"),
    ),
    (
        "80-container-ve.network",
        include_str!("../../../../network-templates/80-container-ve.network"),
    ),
    (
        "80-container-vz.network",
        include_str!("../../../../network-templates/80-container-vz.network"),
    ),
];

/// The `.network` files in effect, in the order they are tried.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Loaded {
    /// Parsed files, sorted by file name.
    pub files: Vec<NetworkFile>,
    /// The files that mask a name (empty, or a symlink to `/dev/null`).
    pub masked: Vec<PathBuf>,
    /// Warnings of all files, each `FILE:LINE: ...` on one line.
    pub warnings: Vec<String>,
    /// What netd runs in, for `Virtualization=`; [`load`] detects it.
    pub virtualization: Virtualization,
}

impl Loaded {
    /// The file that applies to `link`: the first, in lexical order of file
    /// names, whose [Match] section matches (networkd's rule).
    pub fn find_match(&self, link: &LinkFacts) -> Option<&NetworkFile> {
        self.files
            .iter()
            .find(|f| f.matching.matches(link, &self.virtualization))
    }

    /// Every static `Address=` of every file, as subnets: the pool must not
    /// hand these out even before a link using them appears (networkd checks
    /// configured-but-unassigned addresses too).
    pub fn static_networks(&self) -> Vec<IpNetwork> {
        let mut out = Vec::new();
        for f in &self.files {
            out.extend(f.network.static_addresses().copied());
        }
        out
    }
}

/// The directories to load from, highest priority first: [`ENV_NETWORK_PATH`]
/// if set and not empty, else [`DEFAULT_NETWORK_PATH`]. (The built-in
/// templates come below these in [`load`].)
pub fn search_path() -> Vec<PathBuf> {
    match std::env::var(ENV_NETWORK_PATH) {
        Ok(v) if !v.is_empty() => v
            .split(':')
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .collect(),
        _ => DEFAULT_NETWORK_PATH.iter().map(PathBuf::from).collect(),
    }
}

/// [`search_path`] with `RUN_DIR/network` (`Paths::network_dir`: files
/// written at run time, such as those of a lab's zones) in it, where
/// networkd has `/run/systemd/network`: after the administrator's
/// directory and before the package's, or after the directories of
/// [`ENV_NETWORK_PATH`] when that is set.
pub fn search_path_with_run(run_dir: &Path) -> Vec<PathBuf> {
    let mut dirs = search_path();
    let run = run_dir.join(netspawn_common::paths::NETWORK_SUBDIR);
    let env_set = std::env::var(ENV_NETWORK_PATH).is_ok_and(|v| !v.is_empty());
    let at = if env_set {
        dirs.len()
    } else {
        1.min(dirs.len())
    };
    dirs.insert(at, run);
    dirs
}

/// Loads the `.network` files of `dirs` (highest priority first) over the
/// built-in templates ([`BUILTIN`]), and detects [`Virtualization`].
pub fn load(dirs: &[PathBuf]) -> Result<Loaded, NetFileError> {
    let mut loaded = load_with(dirs, &BUILTIN)?;
    loaded.virtualization = Virtualization::detect();
    Ok(loaded)
}

/// Where the text of a file in effect comes from.
enum Source<'a> {
    Path(PathBuf),
    Builtin(&'a str),
    Masked(PathBuf),
}

/// Like [`load`] with the given built-in files (name, text) as the lowest
/// priority directory, and [`Virtualization::None`]. A missing directory is
/// skipped; one that cannot be read, or a file that cannot be read or parsed,
/// is an error. Only regular files (or symlinks to them) named `*.network`,
/// not hidden, are read.
pub fn load_with(dirs: &[PathBuf], builtin: &[(&str, &str)]) -> Result<Loaded, NetFileError> {
    let io_error = |file: &Path, e: std::io::Error| NetFileError {
        file: file.to_path_buf(),
        line: 0,
        msg: e.to_string(),
    };
    let mut chosen: BTreeMap<String, Source> = BTreeMap::new();
    let mut skipped = Vec::new();
    for dir in dirs {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_error(dir, e)),
        };
        // Sorted, so errors and masking are reported the same on every run.
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_error(dir, e))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if name.starts_with('.') || !name.ends_with(".network") {
                continue;
            }
            names.push(name);
        }
        names.sort();
        for name in names {
            if chosen.contains_key(&name) {
                continue;
            }
            let path = dir.join(&name);
            let meta = std::fs::metadata(&path).map_err(|e| io_error(&path, e))?;
            let source = if is_masking(&path, &meta) {
                Source::Masked(path)
            } else if meta.is_file() {
                Source::Path(path)
            } else if meta.is_dir() {
                // A directory named *.network is not a network file.
                continue;
            } else {
                // A FIFO would block the reader, a device feed it forever.
                skipped.push(format!("{}: ignored: not a regular file", path.display()));
                continue;
            };
            chosen.insert(name, source);
        }
    }
    for (name, text) in builtin {
        chosen
            .entry((*name).to_string())
            .or_insert(Source::Builtin(text));
    }

    let mut loaded = Loaded {
        warnings: skipped,
        ..Loaded::default()
    };
    for (name, source) in chosen {
        let parsed = match source {
            Source::Masked(path) => {
                loaded.masked.push(path);
                continue;
            }
            Source::Builtin(text) => parse(text, &Path::new(BUILTIN_DIR).join(&name))?,
            Source::Path(path) => match read_file(&path) {
                Ok(data) => parse_bytes(&data, &path)?,
                // Replaced by something else since it was listed.
                Err(e) if fsread::is_not_regular(&e) => {
                    loaded
                        .warnings
                        .push(format!("{}: ignored: {e}", path.display()));
                    continue;
                }
                Err(e) => return Err(io_error(&path, e)),
            },
        };
        loaded.files.push(parsed.file);
        loaded.warnings.extend(parsed.warnings);
    }
    Ok(loaded)
}

/// networkd's masking rule: an empty file, or anything that is `/dev/null`
/// (a symlink to it).
fn is_masking(path: &Path, meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    if meta.is_file() && meta.len() == 0 {
        return true;
    }
    if meta.file_type().is_char_device() {
        return std::fs::metadata("/dev/null").is_ok_and(|null| null.rdev() == meta.rdev())
            || std::fs::read_link(path).is_ok_and(|t| t == Path::new("/dev/null"));
    }
    false
}

/// A template's bytes: a regular file (symlinks followed) of at most
/// [`MAX_FILE_SIZE`], opened without blocking whatever it turns out to be.
fn read_file(path: &Path) -> std::io::Result<Vec<u8>> {
    fsread::read_regular(path, MAX_FILE_SIZE, fsread::Follow::Symlinks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::model::Families;
    use crate::template::testutil::link;

    #[test]
    fn builtin_templates() {
        let loaded = load_with(&[], &BUILTIN).unwrap();
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let names: Vec<&str> = loaded.files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "80-container-host0.network",
                "80-container-vb.network",
                "80-container-ve.network",
                "80-container-vz.network"
            ]
        );
        let find = |l: &LinkFacts| loaded.find_match(l).map(|f| f.name.as_str());
        assert_eq!(
            find(&link("ve-web", Some("veth"), Some("veth"))),
            Some("80-container-ve.network")
        );
        assert_eq!(
            find(&link("vz-lab", Some("bridge"), None)),
            Some("80-container-vz.network")
        );
        assert_eq!(
            find(&link("vb-web", Some("veth"), None)),
            Some("80-container-vb.network")
        );
        assert_eq!(find(&link("ve-web", Some("bridge"), None)), None);
        assert_eq!(find(&link("vz-lab", Some("veth"), None)), None);
        assert_eq!(find(&link("eth0", None, Some("e1000e"))), None);
        // host0 only inside a container.
        assert_eq!(find(&link("host0", Some("veth"), None)), None);
        let mut inside = loaded.clone();
        inside.virtualization = Virtualization::Container("systemd-nspawn".into());
        assert_eq!(
            inside
                .find_match(&link("host0", Some("veth"), None))
                .map(|f| f.name.as_str()),
            Some("80-container-host0.network")
        );

        let ve = loaded
            .files
            .iter()
            .find(|f| f.name == "80-container-ve.network")
            .unwrap();
        assert_eq!(ve.path, Path::new("(built-in)/80-container-ve.network"));
        assert_eq!(
            ve.network.addresses,
            vec![
                "0.0.0.0/28".parse::<IpNetwork>().unwrap(),
                "::/64".parse().unwrap()
            ]
        );
        assert!(ve.network.dhcp_server);
        assert!(ve.network.ipv6_send_ra);
        assert_eq!(ve.network.ip_masquerade, Families::Both);
        assert_eq!(ve.network.link_local(), Families::Both);
        let vz = loaded
            .files
            .iter()
            .find(|f| f.name == "80-container-vz.network")
            .unwrap();
        assert_eq!(
            vz.network.addresses,
            vec![
                "0.0.0.0/24".parse::<IpNetwork>().unwrap(),
                "::/64".parse().unwrap()
            ]
        );
        assert!(vz.network.dhcp_server);
        assert!(vz.network.ipv6_send_ra);
        assert_eq!(vz.network.ip_masquerade, Families::Both);
        let vb = loaded
            .files
            .iter()
            .find(|f| f.name == "80-container-vb.network")
            .unwrap();
        assert!(vb.network.addresses.is_empty() && !vb.network.dhcp_server);
        assert!(vb.network.keep_master);
        assert_eq!(vb.network.link_local(), Families::No);
        assert_eq!(vb.network.ip_masquerade, Families::No);
        let host0 = loaded
            .files
            .iter()
            .find(|f| f.name == "80-container-host0.network")
            .unwrap();
        assert_eq!(host0.network.dhcp, Families::Both);
        assert!(!host0.network.dhcp_server);
        assert!(loaded.static_networks().is_empty());
    }

    /// A scratch directory removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            use std::sync::atomic::{AtomicUsize, Ordering};
            static N: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "netd-netfile-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn sub(&self, name: &str) -> PathBuf {
            let d = self.0.join(name);
            std::fs::create_dir_all(&d).unwrap();
            d
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn precedence_and_masking() {
        let t = TempDir::new("prec");
        let etc = t.sub("etc");
        let usr = t.sub("usr");
        let missing = t.0.join("missing");
        let builtin: [(&str, &str); 3] = [
            (
                "80-container-ve.network",
                "[Match]\nName=ve-*\n[Network]\nAddress=0.0.0.0/28\n",
            ),
            (
                "80-container-vz.network",
                "[Match]\nName=vz-*\n[Network]\nAddress=0.0.0.0/24\n",
            ),
            ("90-other.network", "[Match]\nName=ve-*\n"),
        ];
        // /etc overrides the built-in ve file with a /26.
        write(
            &etc,
            "80-container-ve.network",
            "[Match]\nName=ve-*\n[Network]\nAddress=0.0.0.0/26\n",
        );
        // /usr has a lower-priority copy that must be ignored.
        write(
            &usr,
            "80-container-ve.network",
            "[Match]\nName=ve-*\n[Network]\nAddress=0.0.0.0/30\n",
        );
        // /usr masks vz with an empty file.
        write(&usr, "80-container-vz.network", "");
        // /etc masks 90-other with a symlink to /dev/null.
        std::os::unix::fs::symlink("/dev/null", etc.join("90-other.network")).unwrap();
        // An earlier-sorting file in /usr that matches ve-web first.
        write(
            &usr,
            "10-web.network",
            "[Match]\nName=ve-web\n[Network]\nDHCPServer=yes\n",
        );
        // Not network files: other suffix, hidden, directory.
        write(&etc, "README", "junk");
        write(&etc, ".hidden.network", "junk");
        write(&etc, "x.network.bak", "junk");
        std::fs::create_dir(etc.join("dir.network")).unwrap();

        let loaded = load_with(&[etc.clone(), missing, usr.clone()], &builtin).unwrap();
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let names: Vec<(&str, &Path)> = loaded
            .files
            .iter()
            .map(|f| (f.name.as_str(), f.path.as_path()))
            .collect();
        let ve_path = etc.join("80-container-ve.network");
        let web_path = usr.join("10-web.network");
        assert_eq!(
            names,
            [
                ("10-web.network", web_path.as_path()),
                ("80-container-ve.network", ve_path.as_path())
            ]
        );
        assert_eq!(
            loaded.masked,
            // By file name, as the files.
            vec![
                usr.join("80-container-vz.network"),
                etc.join("90-other.network")
            ]
        );
        let ve = &loaded.files[1];
        assert_eq!(ve.network.addresses[0].prefix(), 26);
        let f = |n: &str| {
            loaded
                .find_match(&link(n, Some("veth"), None))
                .map(|f| f.name.clone())
        };
        assert_eq!(f("ve-web").as_deref(), Some("10-web.network"));
        assert_eq!(f("ve-db").as_deref(), Some("80-container-ve.network"));
        assert_eq!(f("vz-lab"), None);
    }

    #[test]
    fn load_errors() {
        let t = TempDir::new("err");
        let etc = t.sub("etc");
        write(
            &etc,
            "50-bad.network",
            "[Match]\nName=x\n[Network]\nDHCPServer=maybe\n",
        );
        let e = load_with(std::slice::from_ref(&etc), &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}:4: Invalid DHCPServer= value: \"maybe\" is not a boolean",
                etc.join("50-bad.network").display()
            )
        );
        // A masked bad file is not read.
        let top = t.sub("top");
        write(&top, "50-bad.network", "");
        assert!(load_with(&[top.clone(), etc.clone()], &[]).is_ok());
        // A dangling symlink cannot be read.
        let dang = t.sub("dang");
        std::os::unix::fs::symlink(t.0.join("nowhere"), dang.join("60-x.network")).unwrap();
        let e = load_with(std::slice::from_ref(&dang), &[]).unwrap_err();
        assert_eq!(e.line, 0);
        assert!(e
            .to_string()
            .starts_with(&format!("{}: ", dang.join("60-x.network").display())));
        // A file where a directory should be.
        let file = t.0.join("plain");
        std::fs::write(&file, "x").unwrap();
        assert!(load_with(&[file], &[]).is_err());
        // Warnings carry the real path.
        let w = t.sub("warn");
        write(&w, "70-w.network", "[Match]\nName=x\n[Network]\nLLDP=yes\n");
        let loaded = load_with(std::slice::from_ref(&w), &[]).unwrap();
        assert_eq!(
            loaded.warnings,
            vec![format!(
                "{}:4: Key 'LLDP' in section 'Network' is ignored by netd.",
                w.join("70-w.network").display()
            )]
        );
    }

    fn mkfifo(p: &Path) {
        nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    }

    /// Runs `f` on another thread: a reader that blocks fails the test
    /// instead of hanging it.
    fn within_seconds<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .expect("the template reader blocked")
    }

    #[test]
    fn files_that_are_not_regular_are_skipped_without_blocking() {
        let t = TempDir::new("types");
        let d = t.sub("d");
        write(&d, "50-ok.network", "[Match]\nName=ok\n");
        mkfifo(&d.join("10-fifo.network"));
        std::os::unix::fs::symlink("/dev/zero", d.join("20-zero.network")).unwrap();
        let d2 = d.clone();
        let loaded = within_seconds(move || load_with(&[d2], &[])).unwrap();
        let names: Vec<&str> = loaded.files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["50-ok.network"]);
        assert_eq!(
            loaded.warnings,
            [
                format!(
                    "{}: ignored: not a regular file",
                    d.join("10-fifo.network").display()
                ),
                format!(
                    "{}: ignored: not a regular file",
                    d.join("20-zero.network").display()
                ),
            ]
        );
        // The reader itself refuses them, in case one replaces a file
        // between the listing and the read.
        for n in ["10-fifo.network", "20-zero.network"] {
            let p = d.join(n);
            let r = within_seconds(move || read_file(&p));
            assert!(r.is_err_and(|e| fsread::is_not_regular(&e)), "{n}");
        }
        // Size-capped: one byte over the cap is refused.
        let big = d.join("30-big.network");
        std::fs::File::create(&big)
            .unwrap()
            .set_len(MAX_FILE_SIZE + 1)
            .unwrap();
        let e = load_with(std::slice::from_ref(&d), &[]).unwrap_err();
        assert!(e.to_string().contains("larger than"), "{e}");
    }

    #[test]
    fn static_networks_of_all_files() {
        let t = TempDir::new("static");
        let d = t.sub("d");
        write(
            &d,
            "a.network",
            "[Match]\nName=a\n[Network]\nAddress=192.168.7.1/24\nAddress=0.0.0.0/28\n",
        );
        write(
            &d,
            "b.network",
            "[Match]\nName=b\n[Network]\nAddress=fd00:1::1/64\n",
        );
        let loaded = load_with(&[d], &[]).unwrap();
        let nets: Vec<String> = loaded
            .static_networks()
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(nets, ["192.168.7.1/24", "fd00:1::1/64"]);
    }

    #[test]
    fn search_path_env() {
        // The only test that reads or writes this variable.
        std::env::set_var(ENV_NETWORK_PATH, "/a:/b::/c");
        assert_eq!(
            search_path(),
            [
                PathBuf::from("/a"),
                PathBuf::from("/b"),
                PathBuf::from("/c")
            ]
        );
        std::env::set_var(ENV_NETWORK_PATH, "");
        assert_eq!(
            search_path(),
            [
                PathBuf::from("/etc/netspawn/network"),
                PathBuf::from("/usr/lib/netspawn/network")
            ]
        );
        assert_eq!(
            search_path_with_run(Path::new("/run/ns")),
            [
                PathBuf::from("/etc/netspawn/network"),
                PathBuf::from("/run/ns/network"),
                PathBuf::from("/usr/lib/netspawn/network")
            ]
        );
        std::env::set_var(ENV_NETWORK_PATH, "/a");
        assert_eq!(
            search_path_with_run(Path::new("/run/ns")),
            [PathBuf::from("/a"), PathBuf::from("/run/ns/network")]
        );
        std::env::remove_var(ENV_NETWORK_PATH);
        assert_eq!(search_path().len(), 2);
    }
}
