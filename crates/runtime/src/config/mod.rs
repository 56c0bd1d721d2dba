//! The launch settings, in one typed pipeline as systemd-nspawn has it:
//!
//! - [`cli`] (the command line) and [`file`] (a machine's `.nspawn` file)
//!   each produce the same typed [`Settings`];
//! - [`merge`] merges them group by group ([`Mask`]), with the trust rules of
//!   `--settings=` ([`SettingsMode`]);
//! - [`resolve`] turns the merged settings into the launch [`Config`], one
//!   group at a time (exec, files, network, security, resources).
//!
//! No value is printed to a string to be parsed again, and nothing below
//! [`cli`] knows about clap.

pub mod cli;
pub mod file;
pub mod merge;
pub mod model;
pub mod property;
pub mod resolve;

pub use merge::{find, Mask, SettingsMode, SettingsModeError};
pub use model::{
    CpuSet, Limit, Ownership, PrivateUsers, Rlimit, Settings, StartMode, Volatile, RLIMITS,
};
pub use property::{Limits, Property, PropertyKind};
pub use resolve::{
    find_command, init_is_busybox, parse_signal, random_uuid, Config, ConfigError, Network,
    DEFAULT_PATH, INIT_PATHS,
};

use netspawn_common::paths::Paths;

/// Why a launch's settings cannot be used (before anything is created).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}")]
    Merge(#[from] merge::MergeError),
    #[error("{0}")]
    Config(#[from] ConfigError),
}

/// The whole pipeline: the command line, merged with the machine's settings
/// file (warnings go to stderr), resolved into a [`Config`].
pub fn load(args: cli::Args, paths: &Paths) -> Result<Config, LoadError> {
    let cmd = args.into_command()?;
    let settings = merge::with_file(cmd.settings, cmd.mask, &cmd.options, paths)?;
    Ok(resolve::resolve(settings, &cmd.options, paths)?)
}

/// What a fuzzer checks of any input to the `.nspawn` parser (both
/// `fuzz/fuzz_targets/settings.rs` and the stable fuzzer of `bench/fuzz.sh`
/// call this): settings or a one-line `FILE:LINE: msg` error, never a
/// panic; one-line warnings; nothing privileged survives the untrusted-file
/// filter; merging either way round holds together. Returns whether the
/// input parsed.
#[doc(hidden)]
pub fn fuzz_check(data: &[u8]) -> bool {
    // The same bytes as a set-property drop-in: limits or one line.
    if let Ok(text) = std::str::from_utf8(data) {
        let mut limits = Limits::default();
        let d = std::path::Path::new("/etc/systemd/nspawn/fuzz.nspawn.d/50-x.conf");
        match property::dropin::parse(text, d, &mut limits) {
            Ok(()) => {
                // What parsed prints back to the same values.
                for p in limits.iter() {
                    assert_eq!(Property::parse(&p.to_string()).as_ref(), Ok(p));
                }
            }
            Err(e) => assert!(!e.to_string().contains('\n'), "{e}"),
        }
    }
    let path = std::path::Path::new("/var/lib/machines/fuzz.nspawn");
    match file::parse_bytes(data, path) {
        Ok(mut parsed) => {
            for w in parsed.warnings.iter().chain(&parsed.unsupported) {
                assert!(!w.contains('\n'), "multi-line warning {w:?}");
            }
            let kept = parsed.settings.clone();
            for w in merge::drop_privileged(&mut parsed.settings) {
                assert!(!w.contains('\n'), "multi-line warning {w:?}");
            }
            // Nothing privileged survives a pass.
            assert!(merge::drop_privileged(&mut parsed.settings).is_empty());
            // Merging either way round must hold together.
            let _ = merge::merge(Settings::default(), Mask::default(), kept.clone(), false);
            let _ = merge::merge(kept, Mask(u64::MAX), parsed.settings, true);
            true
        }
        Err(e) => {
            let shown = e.to_string();
            assert!(
                shown.starts_with("/var/lib/machines/fuzz.nspawn:"),
                "{shown:?}"
            );
            assert!(!shown.contains('\n'), "{shown:?}");
            false
        }
    }
}
