//! Merging the command line's [`Settings`] with a machine's `.nspawn` file,
//! as systemd-nspawn's `merge_settings()` does: settings come in groups
//! ([`Mask`], systemd's `SettingsMask`); a group the command line sets
//! masks the file's, unless `--settings=override`. An untrusted file (one
//! next to the image) loses its privileged settings first, with one warning
//! per group ([`drop_privileged`]).

use std::path::{Path, PathBuf};
use std::str::FromStr;

use netspawn_common::names::{machine_name_from_path, machine_name_is_valid};
use netspawn_common::paths::Paths;
use netspawn_common::unitfile::parse_boolean;
use thiserror::Error;

use super::cli::Options;
use super::file::{self, SettingsError};
use super::model::{Settings, RLIMITS};

#[derive(Debug, Error)]
pub enum MergeError {
    #[error("{0}")]
    Parse(#[from] SettingsError),
    #[error("{path}: {err}")]
    Read { path: PathBuf, err: std::io::Error },
    /// A trusted file sets a key netspawn does not implement.
    #[error("{0}")]
    Unsupported(String),
}

/// The largest `.nspawn` file read (as netd's templates).
const SETTINGS_FILE_MAX: u64 = 4 << 20;

/// Groups of settings (systemd's `SETTING_*` bits). Resource limits have one
/// bit each, from [`Mask::RLIMIT_FIRST`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mask(pub u64);

impl Mask {
    pub const START_MODE: Mask = Mask(1 << 0);
    pub const ENVIRONMENT: Mask = Mask(1 << 1);
    pub const USER: Mask = Mask(1 << 2);
    pub const CAPABILITY: Mask = Mask(1 << 3);
    pub const KILL_SIGNAL: Mask = Mask(1 << 4);
    pub const MACHINE_ID: Mask = Mask(1 << 5);
    pub const NETWORK: Mask = Mask(1 << 6);
    pub const EXPOSE_PORTS: Mask = Mask(1 << 7);
    pub const READ_ONLY: Mask = Mask(1 << 8);
    pub const VOLATILE_MODE: Mask = Mask(1 << 9);
    pub const CUSTOM_MOUNTS: Mask = Mask(1 << 10);
    pub const WORKING_DIRECTORY: Mask = Mask(1 << 11);
    pub const USERNS: Mask = Mask(1 << 12);
    pub const NOTIFY_READY: Mask = Mask(1 << 13);
    pub const OOM_SCORE_ADJUST: Mask = Mask(1 << 14);
    pub const CPU_AFFINITY: Mask = Mask(1 << 15);
    pub const EPHEMERAL: Mask = Mask(1 << 16);
    pub const SYSCALL_FILTER: Mask = Mask(1 << 17);
    pub const NO_NEW_PRIVILEGES: Mask = Mask(1 << 18);
    pub const HOSTNAME: Mask = Mask(1 << 19);
    /// `RLIMIT_FIRST << i` is resource `RLIMITS[i]`.
    pub const RLIMIT_FIRST: u32 = 32;

    /// The bit of resource limit `i` (an index into [`RLIMITS`]).
    pub fn rlimit(i: usize) -> Mask {
        Mask(1 << (Mask::RLIMIT_FIRST as usize + i))
    }

    pub fn has(self, m: Mask) -> bool {
        self.0 & m.0 != 0
    }

    pub fn set(&mut self, m: Mask, on: bool) {
        if on {
            self.0 |= m.0;
        }
    }
}

/// `--settings=`: whether and how the `.nspawn` file is used.
///
/// - [`Yes`](SettingsMode::Yes) (default; any true boolean): the file is
///   searched and read; a command-line group wins over the file's. A file
///   from a search directory is trusted; one next to the image is not.
/// - [`No`](SettingsMode::No) (any false boolean): no file is read.
/// - [`Override`](SettingsMode::Override): as `Yes`, but the file's groups
///   win over the command line's.
/// - [`Trusted`](SettingsMode::Trusted): as `Yes`, but the file is trusted
///   wherever it was found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SettingsMode {
    #[default]
    Yes,
    No,
    Override,
    Trusted,
}

/// An unknown `--settings=` value.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid --settings= value {0:?}: expected a boolean, \"override\" or \"trusted\"")]
pub struct SettingsModeError(pub String);

impl FromStr for SettingsMode {
    type Err = SettingsModeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match (parse_boolean(s), s) {
            (Some(true), _) => Ok(SettingsMode::Yes),
            (Some(false), _) => Ok(SettingsMode::No),
            (None, "override") => Ok(SettingsMode::Override),
            (None, "trusted") => Ok(SettingsMode::Trusted),
            _ => Err(SettingsModeError(s.to_string())),
        }
    }
}

impl SettingsMode {
    /// True if a settings file is to be searched for at all.
    pub fn reads_file(self) -> bool {
        self != SettingsMode::No
    }

    /// True if the file's settings win over the command line's.
    pub fn file_overrides_command_line(self) -> bool {
        self == SettingsMode::Override
    }

    /// Whether a file found where [`find`] says (`found_trusted`) is trusted.
    pub fn trusts(self, found_trusted: bool) -> bool {
        self == SettingsMode::Trusted || found_trusted
    }
}

/// Looks for `NAME.nspawn`: in each of `search` in order (trusted; the first
/// hit wins), then next to the image (`/var/lib/machines/NAME.nspawn` for
/// `/var/lib/machines/NAME`; untrusted). The file is named after the
/// machine, not the image's base name. An invalid machine name finds
/// nothing (it could otherwise escape the directories). A path that exists
/// but cannot be examined counts as found, so reading it reports the error.
pub fn find(name: &str, image_dir: Option<&Path>, search: &[PathBuf]) -> Option<(PathBuf, bool)> {
    if !machine_name_is_valid(name) {
        return None;
    }
    let file = format!("{name}.nspawn");
    let present = |p: &Path| p.try_exists().unwrap_or(true);
    for dir in search {
        let p = dir.join(&file);
        if present(&p) {
            return Some((p, true));
        }
    }
    // "/" has no parent: like systemd, no file is looked for next to it.
    let parent = image_dir?.parent()?;
    let p = parent.join(&file);
    present(&p).then_some((p, false))
}

/// Removes what an untrusted file may not grant, as systemd-nspawn ignores
/// it, and returns one warning per ignored group: `Capability=` (a drop
/// still applies); `Bind=`, `BindReadOnly=`, `TemporaryFileSystem=`,
/// `Inaccessible=`; all network settings (explicit `no`s too); `Port=`;
/// `PrivateUsers=`/`PrivateUsersOwnership=`; a `SystemCallFilter=` that
/// allows anything (a deny-only one only restricts, so it is kept);
/// `Limit*=`, `OOMScoreAdjust=`, `CPUAffinity=`; `MachineID=` (the file
/// could otherwise claim another machine's identity) and `Ephemeral=`, as
/// systemd's `merge_settings()` does.
pub fn drop_privileged(s: &mut Settings) -> Vec<String> {
    const WHY: &str = "the settings file is not trusted";
    let mut warnings = Vec::new();
    if s.capability.take().is_some_and(|c| c != 0) {
        warnings.push(format!("Ignoring Capability= setting, {WHY}."));
    }
    if !s.binds.is_empty()
        || !s.tmpfs.is_empty()
        || !s.inaccessible.is_empty()
        || !s.overlays.is_empty()
    {
        s.binds.clear();
        s.tmpfs.clear();
        s.overlays.clear();
        s.inaccessible.clear();
        warnings.push(format!(
            "Ignoring TemporaryFileSystem=, Bind=, BindReadOnly= and Inaccessible= settings, {WHY}."
        ));
    }
    if s.network_configured() {
        s.private_network = None;
        s.virtual_ethernet = None;
        s.virtual_ethernet_extra.clear();
        s.bridge = None;
        s.zone = None;
        s.interfaces.clear();
        s.macvlan.clear();
        s.ipvlan.clear();
        warnings.push(format!("Ignoring network settings, {WHY}."));
    }
    if !s.ports.is_empty() {
        s.ports.clear();
        warnings.push(format!("Ignoring Port= setting, {WHY}."));
    }
    if s.private_users.is_some() || s.private_users_ownership.is_some() {
        s.private_users = None;
        s.private_users_ownership = None;
        warnings.push(format!(
            "Ignoring PrivateUsers= and PrivateUsersOwnership= settings, {WHY}."
        ));
    }
    if !s.syscall_filter.allow.is_empty() {
        s.syscall_filter = Default::default();
        warnings.push(format!("Ignoring SystemCallFilter= settings, {WHY}."));
    }
    for (i, (name, _)) in RLIMITS.iter().enumerate() {
        if s.rlimits[i].take().is_some() {
            warnings.push(format!("Ignoring Limit{name}= setting, {WHY}."));
        }
    }
    if s.oom_score_adjust.take().is_some() {
        warnings.push(format!("Ignoring OOMScoreAdjust= setting, {WHY}."));
    }
    if s.cpu_affinity.take().is_some() {
        warnings.push(format!("Ignoring CPUAffinity= setting, {WHY}."));
    }
    if s.machine_id.take().is_some() {
        warnings.push(format!("Ignoring MachineID= setting, {WHY}."));
    }
    if s.ephemeral.take().is_some() {
        warnings.push(format!("Ignoring Ephemeral= setting, {WHY}."));
    }
    warnings
}

/// Merges `file` into `cli` (whose groups are `mask`) group by group; with
/// `file_wins` (`--settings=override`) every group the file sets wins.
pub fn merge(mut cli: Settings, mask: Mask, file: Settings, file_wins: bool) -> Settings {
    let take = |g: Mask| file_wins || !mask.has(g);
    let f = file;
    let network_configured = f.network_configured();
    // [Exec]. Parameters= only come with a start mode (systemd's rule).
    if let Some(mode) = f.start_mode {
        if take(Mask::START_MODE) {
            cli.start_mode = Some(mode);
            cli.parameters = f.parameters;
        }
    }
    if !f.environment.is_empty() && take(Mask::ENVIRONMENT) {
        cli.environment = f.environment;
    }
    if f.working_directory.is_some() && take(Mask::WORKING_DIRECTORY) {
        cli.working_directory = f.working_directory;
    }
    if f.hostname.is_some() && take(Mask::HOSTNAME) {
        cli.hostname = f.hostname;
    }
    if (f.capability.is_some() || f.drop_capability.is_some()) && take(Mask::CAPABILITY) {
        cli.capability = f.capability;
        cli.drop_capability = f.drop_capability;
    }
    if f.syscall_filter != Default::default() && take(Mask::SYSCALL_FILTER) {
        cli.syscall_filter = f.syscall_filter;
    }
    if f.kill_signal.is_some() && take(Mask::KILL_SIGNAL) {
        cli.kill_signal = f.kill_signal;
    }
    if f.notify_ready.is_some() && take(Mask::NOTIFY_READY) {
        cli.notify_ready = f.notify_ready;
    }
    if (f.private_users.is_some() || f.private_users_ownership.is_some()) && take(Mask::USERNS) {
        cli.private_users = f.private_users.or(cli.private_users);
        cli.private_users_ownership = f.private_users_ownership.or(cli.private_users_ownership);
    }
    if f.user.is_some() && take(Mask::USER) {
        cli.user = f.user;
    }
    if f.no_new_privileges.is_some() && take(Mask::NO_NEW_PRIVILEGES) {
        cli.no_new_privileges = f.no_new_privileges;
    }
    for (i, limit) in f.rlimits.iter().enumerate() {
        if limit.is_some() && take(Mask::rlimit(i)) {
            cli.rlimits[i] = *limit;
        }
    }
    if f.oom_score_adjust.is_some() && take(Mask::OOM_SCORE_ADJUST) {
        cli.oom_score_adjust = f.oom_score_adjust;
    }
    if f.cpu_affinity.is_some() && take(Mask::CPU_AFFINITY) {
        cli.cpu_affinity = f.cpu_affinity;
    }
    if f.machine_id.is_some() && take(Mask::MACHINE_ID) {
        cli.machine_id = f.machine_id;
    }
    if f.ephemeral.is_some() && take(Mask::EPHEMERAL) {
        cli.ephemeral = f.ephemeral;
    }
    // [Files]
    if (!f.binds.is_empty()
        || !f.tmpfs.is_empty()
        || !f.inaccessible.is_empty()
        || !f.overlays.is_empty())
        && take(Mask::CUSTOM_MOUNTS)
    {
        cli.binds = f.binds;
        cli.tmpfs = f.tmpfs;
        cli.overlays = f.overlays;
        cli.inaccessible = f.inaccessible;
    }
    if f.read_only.is_some() && take(Mask::READ_ONLY) {
        cli.read_only = f.read_only;
    }
    if f.volatile.is_some() && take(Mask::VOLATILE_MODE) {
        cli.volatile = f.volatile;
    }
    // [Network]: the file's settings replace the command line's as a group.
    if network_configured && take(Mask::NETWORK) {
        cli.private_network = f.private_network;
        cli.virtual_ethernet = f.virtual_ethernet;
        cli.virtual_ethernet_extra = f.virtual_ethernet_extra;
        cli.bridge = f.bridge;
        cli.zone = f.zone;
        cli.interfaces = f.interfaces;
        cli.macvlan = f.macvlan;
        cli.ipvlan = f.ipvlan;
    }
    if !f.ports.is_empty() && take(Mask::EXPOSE_PORTS) {
        cli.ports = f.ports;
    }
    cli
}

/// Reads the settings file that applies to this launch (if any) and merges
/// it into the command line's settings. Warnings go to stderr.
pub fn with_file(
    cli: Settings,
    mask: Mask,
    opts: &Options,
    paths: &Paths,
) -> Result<Settings, MergeError> {
    let mode = opts.settings;
    if !mode.reads_file() {
        return Ok(cli);
    }
    let image = match (&opts.directory, &opts.machine) {
        (Some(d), _) => Some(d.clone()),
        (None, Some(m)) => Some(paths.image_dir.join(m)),
        (None, None) => std::env::current_dir().ok(),
    };
    let name = match (&opts.machine, &image) {
        (Some(m), _) => m.clone(),
        (None, Some(img)) => match img
            .canonicalize()
            .ok()
            .and_then(|p| machine_name_from_path(&p))
        {
            Some(n) => n,
            None => return Ok(cli),
        },
        (None, None) => return Ok(cli),
    };
    let Some((path, trusted)) = find(&name, image.as_deref(), &paths.settings_path) else {
        return Ok(cli);
    };
    // Regular files only, size-capped, opened non-blocking: a FIFO or a
    // link to /dev/zero in a settings directory is an error, not a hang.
    let data = netspawn_common::fsread::read_regular(
        &path,
        SETTINGS_FILE_MAX,
        netspawn_common::fsread::Follow::Symlinks,
    )
    .map_err(|err| MergeError::Read {
        path: path.clone(),
        err,
    })?;
    let parsed = file::parse_bytes(&data, &path)?;
    let trusted = mode.trusts(trusted);
    // A trusted file is obeyed: what netspawn cannot do is refused there,
    // never dropped; an untrusted one only warns (as systemd does).
    if let (true, Some(first)) = (trusted, parsed.unsupported.first()) {
        return Err(MergeError::Unsupported(first.clone()));
    }
    for w in &parsed.warnings {
        eprintln!("netspawn: {w}");
    }
    let mut s = parsed.settings;
    if !trusted {
        for w in drop_privileged(&mut s) {
            eprintln!("netspawn: {}: {w}", path.display());
        }
    }
    Ok(merge(cli, mask, s, mode.file_overrides_command_line()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::StartMode;

    #[test]
    fn settings_mode() {
        let cases: &[(&str, SettingsMode)] = &[
            ("yes", SettingsMode::Yes),
            ("1", SettingsMode::Yes),
            ("TRUE", SettingsMode::Yes),
            ("on", SettingsMode::Yes),
            ("no", SettingsMode::No),
            ("0", SettingsMode::No),
            ("off", SettingsMode::No),
            ("override", SettingsMode::Override),
            ("trusted", SettingsMode::Trusted),
        ];
        for (input, want) in cases {
            assert_eq!(input.parse::<SettingsMode>(), Ok(*want), "{input}");
        }
        for bad in ["", "maybe", "Trusted", "OVERRIDE"] {
            let e = bad.parse::<SettingsMode>().unwrap_err();
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
        assert_eq!(SettingsMode::default(), SettingsMode::Yes);
        assert!(!SettingsMode::No.reads_file());
        assert!(SettingsMode::Override.file_overrides_command_line());
        assert!(!SettingsMode::Yes.file_overrides_command_line());
        assert!(SettingsMode::Trusted.trusts(false));
        assert!(!SettingsMode::Yes.trusts(false));
        assert!(!SettingsMode::Override.trusts(false));
        assert!(SettingsMode::Yes.trusts(true));
    }

    /// A scratch directory tree under the system temp dir, removed on drop.
    struct TempTree(PathBuf);

    impl TempTree {
        fn new(tag: &str) -> TempTree {
            let p = std::env::temp_dir()
                .join(format!("netspawn-settings-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            TempTree(p)
        }
        fn touch(&self, rel: &str) -> PathBuf {
            let p = self.0.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, "[Exec]\n").unwrap();
            p
        }
    }

    impl Drop for TempTree {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn find_searches_in_order_then_next_to_the_image() {
        let t = TempTree::new("find");
        let etc = t.0.join("etc");
        let run = t.0.join("run");
        let machines = t.0.join("machines");
        let image = machines.join("web");
        std::fs::create_dir_all(&image).unwrap();
        let search = vec![etc.clone(), run.clone()];

        assert_eq!(find("web", Some(&image), &search), None);

        let beside = t.touch("machines/web.nspawn");
        assert_eq!(
            find("web", Some(&image), &search),
            Some((beside.clone(), false))
        );
        // A trailing slash on the image path changes nothing.
        let with_slash = PathBuf::from(format!("{}/", image.display()));
        assert_eq!(
            find("web", Some(&with_slash), &search),
            Some((beside, false))
        );
        assert_eq!(find("web", None, &search), None);

        let in_run = t.touch("run/web.nspawn");
        assert_eq!(find("web", Some(&image), &search), Some((in_run, true)));
        let in_etc = t.touch("etc/web.nspawn");
        assert_eq!(find("web", Some(&image), &search), Some((in_etc, true)));

        // Other machines' files are not picked up; bad names find nothing.
        assert_eq!(find("db", Some(&image), &search), None);
        t.touch("etc/..nspawn");
        for bad in ["", "../web", "a/b", "."] {
            assert_eq!(find(bad, Some(&image), &search), None, "{bad:?}");
        }
        // The root directory has no parent to look in.
        assert_eq!(find("db", Some(Path::new("/")), &[]), None);
    }

    fn cli() -> Settings {
        Settings {
            parameters: vec!["/bin/cli".into()],
            environment: vec![("A".into(), "cli".into())],
            hostname: Some("cli".into()),
            ..Settings::default()
        }
    }

    fn file() -> Settings {
        Settings {
            start_mode: Some(StartMode::Pid2),
            parameters: vec!["/bin/file".into()],
            environment: vec![("A".into(), "file".into())],
            hostname: Some("file".into()),
            user: Some("nobody".into()),
            oom_score_adjust: Some(100),
            zone: Some("lab".into()),
            ..Settings::default()
        }
    }

    #[test]
    fn groups_the_command_line_sets_mask_the_file() {
        type Check = fn(&Settings) -> bool;
        let mask = Mask(Mask::START_MODE.0 | Mask::ENVIRONMENT.0 | Mask::HOSTNAME.0);
        let cases: &[(Mask, bool, Check)] = &[
            // Masked groups keep the command line's; the others take the file's.
            (mask, false, |s| {
                s.start_mode.is_none()
                    && s.parameters == ["/bin/cli"]
                    && s.environment == [("A".to_string(), "cli".to_string())]
                    && s.hostname.as_deref() == Some("cli")
                    && s.user.as_deref() == Some("nobody")
                    && s.oom_score_adjust == Some(100)
                    && s.zone.as_deref() == Some("lab")
            }),
            // Nothing masked: the file's everywhere.
            (Mask::default(), false, |s| {
                s.start_mode == Some(StartMode::Pid2)
                    && s.parameters == ["/bin/file"]
                    && s.hostname.as_deref() == Some("file")
            }),
            // --settings=override: the file wins over a masked group.
            (mask, true, |s| {
                s.start_mode == Some(StartMode::Pid2)
                    && s.environment == [("A".to_string(), "file".to_string())]
                    && s.hostname.as_deref() == Some("file")
            }),
            // A masked user, OOM score or network keeps the command line's (none).
            (
                Mask(Mask::USER.0 | Mask::OOM_SCORE_ADJUST.0 | Mask::NETWORK.0),
                false,
                |s| s.user.is_none() && s.oom_score_adjust.is_none() && s.zone.is_none(),
            ),
        ];
        for (i, (mask, ov, check)) in cases.iter().enumerate() {
            let s = merge(cli(), *mask, file(), *ov);
            assert!(check(&s), "case {i}: {s:#?}");
        }
    }

    #[test]
    fn parameters_only_come_with_a_start_mode() {
        let f = Settings {
            parameters: vec!["/bin/file".into()],
            ..Settings::default()
        };
        let s = merge(Settings::default(), Mask::default(), f, false);
        assert!(s.parameters.is_empty() && s.start_mode.is_none(), "{s:?}");
    }

    #[test]
    fn rlimits_merge_one_by_one() {
        let l = |n| Some(crate::config::Rlimit { soft: n, hard: n });
        let mut c = Settings::default();
        c.rlimits[6] = l(10);
        let mut f = Settings::default();
        f.rlimits[6] = l(20);
        f.rlimits[4] = l(30);
        let s = merge(c, Mask::rlimit(6), f, false);
        assert_eq!((s.rlimits[6], s.rlimits[4]), (l(10), l(30)));
    }

    #[test]
    fn untrusted_files_lose_resource_settings_with_a_warning_each() {
        let mut s = Settings {
            oom_score_adjust: Some(-100),
            cpu_affinity: Some([0].into_iter().collect()),
            user: Some("nobody".into()),
            no_new_privileges: Some(true),
            inaccessible: vec!["/x".into()],
            ..Settings::default()
        };
        s.rlimits[6] = Some(crate::config::Rlimit { soft: 1, hard: 1 });
        let w = drop_privileged(&mut s);
        assert_eq!(w.len(), 4, "{w:?}");
        for key in [
            "Inaccessible=",
            "LimitNOFILE=",
            "OOMScoreAdjust=",
            "CPUAffinity=",
        ] {
            assert!(w.iter().any(|l| l.contains(key)), "{key}: {w:?}");
        }
        // What only restricts stays.
        assert_eq!(s.user.as_deref(), Some("nobody"));
        assert_eq!(s.no_new_privileges, Some(true));
    }

    #[test]
    fn untrusted_files_lose_machine_id_and_ephemeral() {
        // Both were kept before: an untrusted file could name the machine
        // ID the launch registers (another machine's, say).
        let mut s = Settings {
            machine_id: Some("0123456789abcdef0123456789abcdef".into()),
            ephemeral: Some(true),
            hostname: Some("kept".into()),
            ..Settings::default()
        };
        let w = drop_privileged(&mut s);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].contains("MachineID=") && w[1].contains("Ephemeral="),
            "{w:?}"
        );
        assert_eq!((s.machine_id, s.ephemeral), (None, None));
        assert_eq!(s.hostname.as_deref(), Some("kept"));
    }
}
