//! The user namespace group: `-U`, `--private-users=` and
//! `--private-users-ownership=` (`PrivateUsers=`, `PrivateUsersOwnership=`)
//! turned into a [`userns::Spec`] as systemd-nspawn reads them: `pick` (and
//! so `-U`) implies ownership `auto` and may fall back to no user namespace
//! on a kernel without them; every other mode implies `off`.

use super::ConfigError;
use crate::config::model::{Ownership, PrivateUsers, Settings};
use crate::userns::{self, Mode, Spec, UidRange};

/// `never_write`: the machine never writes the image (`-x`, `--volatile=`),
/// so it is never chowned either.
pub(super) fn resolve(s: &Settings, never_write: bool) -> Result<Option<Spec>, ConfigError> {
    let read_only = s.read_only.unwrap_or(false);
    if s.private_users_ownership == Some(Ownership::Foreign) {
        return Err(ConfigError::Unsupported(
            "--private-users-ownership=foreign is not supported by netspawn".into(),
        ));
    }
    let mode =
        match s.private_users {
            None | Some(PrivateUsers::No) => return match s.private_users_ownership {
                None | Some(Ownership::Off | Ownership::Auto) => Ok(None),
                Some(_) => Err(ConfigError::Conflict(
                    "--private-users-ownership= needs a user namespace (--private-users= or -U)"
                        .into(),
                )),
            },
            Some(PrivateUsers::Pick) => Mode::Pick,
            Some(PrivateUsers::Yes) => Mode::FromRoot,
            Some(PrivateUsers::Identity) => Mode::Fixed(identity()),
            Some(PrivateUsers::Base { shift, range }) => Mode::Fixed(
                UidRange::new(shift, range).ok_or_else(|| ConfigError::Value {
                    flag: "--private-users",
                    value: format!("{shift}:{range}"),
                    reason: "the range must be at least 1 and end below 4294967295".into(),
                })?,
            ),
        };
    let ownership = match s.private_users_ownership {
        None if mode == Mode::Pick => userns::Ownership::Auto,
        // (`foreign` is refused above.)
        None | Some(Ownership::Off | Ownership::Foreign) => userns::Ownership::Off,
        Some(Ownership::Auto) => userns::Ownership::Auto,
        Some(Ownership::Chown) => userns::Ownership::Chown,
        Some(Ownership::Map) => userns::Ownership::Map,
    };
    if ownership == userns::Ownership::Chown && read_only {
        return Err(ConfigError::Conflict(
            "--read-only and --private-users-ownership=chown may not be combined".into(),
        ));
    }
    if ownership == userns::Ownership::Chown {
        if let Mode::Fixed(r) = mode {
            if r.range != userns::RANGE_16 || r.shift & 0xFFFF != 0 {
                return Err(ConfigError::Value {
                    flag: "--private-users",
                    value: format!("{}:{}", r.shift, r.range),
                    reason: "--private-users-ownership=chown needs a base that is a multiple of 65536 and a range of 65536".into(),
                });
            }
        }
    }
    Ok(Some(Spec {
        mode,
        ownership,
        fallback: mode == Mode::Pick,
        read_only: read_only || never_write,
    }))
}

fn identity() -> UidRange {
    UidRange {
        shift: 0,
        range: userns::RANGE_16,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(pu: Option<PrivateUsers>, o: Option<Ownership>) -> Result<Option<Spec>, String> {
        resolve(
            &Settings {
                private_users: pu,
                private_users_ownership: o,
                ..Settings::default()
            },
            false,
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn modes_and_their_ownership() {
        let r = |s, n| UidRange::new(s, n).unwrap();
        assert_eq!(spec(None, None), Ok(None));
        assert_eq!(
            spec(Some(PrivateUsers::No), Some(Ownership::Auto)),
            Ok(None)
        );
        let pick = spec(Some(PrivateUsers::Pick), None).unwrap().unwrap();
        assert_eq!(
            (pick.mode, pick.ownership, pick.fallback),
            (Mode::Pick, userns::Ownership::Auto, true)
        );
        let yes = spec(Some(PrivateUsers::Yes), None).unwrap().unwrap();
        assert_eq!(
            (yes.mode, yes.ownership, yes.fallback),
            (Mode::FromRoot, userns::Ownership::Off, false)
        );
        let id = spec(Some(PrivateUsers::Identity), Some(Ownership::Map))
            .unwrap()
            .unwrap();
        assert_eq!(
            (id.mode, id.ownership),
            (Mode::Fixed(r(0, 65536)), userns::Ownership::Map)
        );
        let base = spec(
            Some(PrivateUsers::Base {
                shift: 1354956800,
                range: 65536,
            }),
            Some(Ownership::Chown),
        )
        .unwrap()
        .unwrap();
        assert_eq!(base.mode, Mode::Fixed(r(1354956800, 65536)));
    }

    #[test]
    fn bad_combinations_are_one_line() {
        for (pu, o, needle) in [
            (None, Some(Ownership::Chown), "needs a user namespace"),
            (
                Some(PrivateUsers::Pick),
                Some(Ownership::Foreign),
                "foreign",
            ),
            (
                Some(PrivateUsers::Base {
                    shift: 65537,
                    range: 65536,
                }),
                Some(Ownership::Chown),
                "multiple of 65536",
            ),
            (
                Some(PrivateUsers::Base {
                    shift: 65536,
                    range: 1000,
                }),
                Some(Ownership::Chown),
                "range of 65536",
            ),
        ] {
            let e = spec(pu, o).unwrap_err();
            assert!(e.contains(needle) && !e.contains('\n'), "{needle}: {e}");
        }
        let ro = |o| {
            resolve(
                &Settings {
                    private_users: Some(PrivateUsers::Pick),
                    private_users_ownership: o,
                    read_only: Some(true),
                    ..Settings::default()
                },
                false,
            )
        };
        let e = ro(Some(Ownership::Chown)).unwrap_err().to_string();
        assert!(
            e.contains("--read-only and --private-users-ownership=chown"),
            "{e}"
        );
        assert!(ro(None).unwrap().is_some_and(|s| s.read_only));
        // A machine that never writes its image (-x, --volatile=) never chowns it.
        let never = resolve(
            &Settings {
                private_users: Some(PrivateUsers::Pick),
                ..Settings::default()
            },
            true,
        );
        assert!(never.unwrap().is_some_and(|s| s.read_only));
    }
}
