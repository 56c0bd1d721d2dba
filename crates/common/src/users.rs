//! The registry's users view: what the NSS module reads to name the host
//! UIDs and GIDs of machines with a user namespace (`vu-NAME-U`,
//! `vg-NAME-G`, as systemd's machined names them), without parsing entries
//! inside arbitrary programs. Two kinds of symbolic links, whose *target
//! text* holds the facts (one `readlink` each, like the hosts view, see
//! [`crate::hosts`]):
//!
//! - `<run_dir>/userns/NAME` → `PID SHIFT RANGE`: the launcher's PID and the
//!   machine's range (`getpwnam("vu-NAME-5")` reads it);
//! - `<run_dir>/uids/SHIFT:RANGE` → `PID NAME`: the same range keyed by the
//!   IDs it covers (`getpwuid`), for the standard ranges (65536-aligned,
//!   65536 long: what `-U` and `--private-users=pick` choose), and
//!   `<run_dir>/uids/other/SHIFT:RANGE` for every other range. A UID lookup
//!   first reads the link of the standard range the UID falls in, then,
//!   failing that, lists `uids/other`: the link names alone say which range
//!   holds the UID, so a miss costs one listing of a directory that is
//!   usually empty, and no `readlink`.
//!
//! [`crate::registry::Registry`] keeps the view in step with the entries:
//! written after the entry (temporary link + rename), removed before it,
//! the `uids` link before the `userns` one. Targets and link names are
//! untrusted input for readers: every parser here is strict (no leading
//! zeros, no signs, nothing extra) and never panics.
//!
//! IDs below [`HOST_ID_LIMIT`] are the host's own and are never named, as in
//! systemd (a machine with an identity mapping gets no names at all).

use crate::names::machine_name_is_valid;
use crate::registry::UidRange;

/// IDs below this are the host's: never answered, as systemd's machined does.
pub const HOST_ID_LIMIT: u32 = 0x10000;
/// The length of the ranges the fast UID lookup tries first (and their alignment).
pub const STANDARD_RANGE: u32 = 0x10000;
/// Longest user or group name that is synthesized (it must fit utmp's
/// `UT_NAMESIZE - 1`, as systemd's strict `valid_user_group_name` requires).
pub const MAX_USER_NAME: usize = 31;
/// The `pw_gid` of every `vu-` user (systemd uses `GID_NOBODY`).
pub const GID_NOBODY: u32 = 65534;
/// Their home directory and shell, as systemd's machined gives them.
pub const HOME: &str = "/";
pub const SHELL: &str = "/usr/sbin/nologin";
/// Longest target a writer produces: `PID SHIFT RANGE` or `PID NAME`.
pub const MAX_TARGET: usize = 10 + 1 + crate::names::HOST_NAME_MAX + 11;

/// A decimal `u32` exactly as we write it: digits only, no leading zero
/// (except "0" itself), no sign, no overflow.
pub fn parse_decimal(s: &[u8]) -> Option<u32> {
    if s.is_empty() || s.len() > 10 || (s.len() > 1 && s.first() == Some(&b'0')) {
        return None;
    }
    let mut v: u64 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u64::from(b - b'0');
    }
    u32::try_from(v).ok()
}

/// A launcher PID as the targets hold it: 1 to `i32::MAX` (so `kill`
/// never addresses a process group).
fn parse_pid(s: &[u8]) -> Option<u32> {
    parse_decimal(s).filter(|&p| p != 0 && p <= i32::MAX as u32)
}

/// The target of `userns/NAME`.
pub fn format_name_target(launcher: u32, range: UidRange) -> String {
    format!("{launcher} {} {}", range.shift, range.range)
}

/// Parses a `userns/NAME` target: `(launcher PID, range)`.
pub fn parse_name_target(bytes: &[u8]) -> Option<(u32, UidRange)> {
    if bytes.len() > MAX_TARGET {
        return None;
    }
    let mut parts = bytes.split(|&b| b == b' ');
    let pid = parse_pid(parts.next()?)?;
    let shift = parse_decimal(parts.next()?)?;
    let range = parse_decimal(parts.next()?)?;
    if parts.next().is_some() {
        return None;
    }
    Some((pid, UidRange::new(shift, range)?))
}

/// The name of a range's link in `uids/`: `SHIFT:RANGE`.
pub fn id_link_name(range: UidRange) -> String {
    format!("{}:{}", range.shift, range.range)
}

/// The directory below `uids/` that holds the links of the ranges that are
/// not standard.
pub const OTHER_DIR: &str = "other";

/// True for a standard range: 65536-aligned and 65536 long.
pub fn is_standard(range: UidRange) -> bool {
    range.range == STANDARD_RANGE && range.shift & (STANDARD_RANGE - 1) == 0
}

/// Where a range's link lives, relative to `uids/`: `SHIFT:RANGE` for a
/// standard range, `other/SHIFT:RANGE` for the rest.
pub fn id_link_rel(range: UidRange) -> String {
    if is_standard(range) {
        id_link_name(range)
    } else {
        format!("{OTHER_DIR}/{}", id_link_name(range))
    }
}

/// Parses a link name in `uids/` (anything else there, like the temporary
/// `.#…` links of a write, is None).
pub fn parse_id_link_name(bytes: &[u8]) -> Option<UidRange> {
    let colon = bytes.iter().position(|&b| b == b':')?;
    let shift = parse_decimal(bytes.get(..colon)?)?;
    let range = parse_decimal(bytes.get(colon + 1..)?)?;
    UidRange::new(shift, range)
}

/// The target of `uids/SHIFT:RANGE`.
pub fn format_id_target(launcher: u32, name: &str) -> String {
    format!("{launcher} {name}")
}

/// Parses a `uids/…` target: `(launcher PID, machine name)`.
pub fn parse_id_target(bytes: &[u8]) -> Option<(u32, &str)> {
    if bytes.len() > MAX_TARGET {
        return None;
    }
    let space = bytes.iter().position(|&b| b == b' ')?;
    let pid = parse_pid(bytes.get(..space)?)?;
    let name = std::str::from_utf8(bytes.get(space + 1..)?).ok()?;
    machine_name_is_valid(name).then_some((pid, name))
}

/// User or group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    User,
    Group,
}

impl IdKind {
    /// `vu-` or `vg-`.
    pub fn prefix(self) -> &'static str {
        match self {
            IdKind::User => "vu-",
            IdKind::Group => "vg-",
        }
    }

    /// "UID" or "GID", for the description.
    pub fn label(self) -> &'static str {
        match self {
            IdKind::User => "UID",
            IdKind::Group => "GID",
        }
    }
}

/// systemd's strict user/group name rule: a letter or `_`, then letters,
/// digits, `_` and `-`, at most [`MAX_USER_NAME`] bytes. A machine whose
/// name has a dot, or is too long, gets no user names (as in systemd).
pub fn valid_user_group_name(name: &[u8]) -> bool {
    let Some(&first) = name.first() else {
        return false;
    };
    name.len() <= MAX_USER_NAME
        && (first.is_ascii_alphabetic() || first == b'_')
        && name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Splits `vu-NAME-ID` (or `vg-…`) into the machine name and the ID inside
/// the container. Only the canonical spelling is accepted (a valid user
/// name, a valid machine name, the ID without leading zeros), so every ID
/// has exactly one name.
pub fn parse_id_name(kind: IdKind, name: &[u8]) -> Option<(&str, u32)> {
    if !valid_user_group_name(name) {
        return None;
    }
    let rest = name.strip_prefix(kind.prefix().as_bytes())?;
    let dash = rest.iter().rposition(|&b| b == b'-')?;
    let machine = std::str::from_utf8(rest.get(..dash)?).ok()?;
    let id = parse_decimal(rest.get(dash + 1..)?)?;
    machine_name_is_valid(machine).then_some((machine, id))
}

/// The host ID that is ID `inner` of a machine with `range`, if it is in
/// the range and not one of the host's own IDs.
pub fn host_id(range: UidRange, inner: u32) -> Option<u32> {
    if inner >= range.range {
        return None;
    }
    let id = range.shift.checked_add(inner)?;
    (id >= HOST_ID_LIMIT).then_some(id)
}

/// The link in `uids/` the fast UID lookup tries first: the standard range
/// that holds `id`.
pub fn standard_range_of(id: u32) -> Option<UidRange> {
    UidRange::new(id & !(STANDARD_RANGE - 1), STANDARD_RANGE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(shift: u32, range: u32) -> UidRange {
        UidRange::new(shift, range).unwrap()
    }

    #[test]
    fn decimals_are_strict() {
        assert_eq!(parse_decimal(b"0"), Some(0));
        assert_eq!(parse_decimal(b"524288"), Some(524288));
        assert_eq!(parse_decimal(b"4294967295"), Some(u32::MAX));
        for bad in [
            &b""[..],
            b"01",
            b"+1",
            b"-1",
            b" 1",
            b"1 ",
            b"4294967296",
            b"99999999999",
            b"1a",
            b"\xff",
        ] {
            assert_eq!(parse_decimal(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn targets_round_trip_and_refuse_garbage() {
        let range = r(524288, 65536);
        let t = format_name_target(4242, range);
        assert_eq!(t, "4242 524288 65536");
        assert_eq!(parse_name_target(t.as_bytes()), Some((4242, range)));
        assert_eq!(id_link_name(range), "524288:65536");
        assert_eq!(id_link_rel(range), "524288:65536");
        assert_eq!(id_link_rel(r(524288, 100)), "other/524288:100");
        assert_eq!(id_link_rel(r(524289, 65536)), "other/524289:65536");
        assert_eq!(parse_id_link_name(b"524288:65536"), Some(range));
        let t = format_id_target(7, "web");
        assert_eq!(parse_id_target(t.as_bytes()), Some((7, "web")));
        for bad in [
            &b""[..],
            b"1 2",
            b"0 524288 65536",
            b"2147483648 524288 65536",
            b"1 524288 65536 ",
            b"1  524288 65536",
            b"1 524288 0",
            b"1 4294901760 65536",
            b"1 0524288 65536",
        ] {
            assert_eq!(parse_name_target(bad), None, "{bad:?}");
        }
        for bad in [
            &b""[..],
            b":",
            b"1:",
            b":1",
            b"1:0",
            b"01:1",
            b".#524288:65536.12",
            b"524288:65536:1",
            b"4294967295:1",
        ] {
            assert_eq!(parse_id_link_name(bad), None, "{bad:?}");
        }
        for bad in [
            &b""[..],
            b"1",
            b"1 ",
            b"0 web",
            b"-1 web",
            b"1 ../web",
            b"1 web ",
            b"1 web\n",
            b"1 \xff",
        ] {
            assert_eq!(parse_id_target(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn names_are_canonical() {
        assert_eq!(parse_id_name(IdKind::User, b"vu-web-0"), Some(("web", 0)));
        assert_eq!(
            parse_id_name(IdKind::User, b"vu-my-box-65535"),
            Some(("my-box", 65535))
        );
        assert_eq!(parse_id_name(IdKind::Group, b"vg-web-5"), Some(("web", 5)));
        for bad in [
            &b"vg-web-5"[..],
            b"vu-web-05",
            b"vu-web-",
            b"vu--5",
            b"vu-web",
            b"vu-web-+5",
            b"vu-web--5",
            b"vu-we.b-5",
            b"vu-web-5 ",
            b"VU-web-5",
            b"vu-web-4294967296",
            b"vu-averyveryveryverylongmachine-1",
            b"root",
            b"",
        ] {
            assert_eq!(parse_id_name(IdKind::User, bad), None, "{bad:?}");
        }
        assert!(valid_user_group_name(b"vu-averyveryverylongmachi-65535"));
        assert!(!valid_user_group_name(b"vu-averyveryverylongmachin-65535"));
        assert!(!valid_user_group_name(b"1vu"));
    }

    #[test]
    fn host_ids_stay_in_the_range_and_off_the_hosts() {
        let range = r(524288, 65536);
        assert_eq!(host_id(range, 0), Some(524288));
        assert_eq!(host_id(range, 65535), Some(589823));
        assert_eq!(host_id(range, 65536), None);
        // An identity mapping names nothing: those are the host's IDs.
        assert_eq!(host_id(r(0, 65536), 0), None);
        assert_eq!(host_id(r(1000, 100000), 64536), Some(65536));
        assert_eq!(host_id(r(1000, 100000), 64535), None);
        assert_eq!(standard_range_of(589823), Some(range));
        assert_eq!(standard_range_of(524288), Some(range));
        assert_eq!(standard_range_of(u32::MAX), None);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let alphabet = b"0123456789 :-vugwe.\xff\0";
        for len in 0..200 {
            let bytes = crate::testgen::picks(&mut state, alphabet, len);
            let _ = parse_name_target(&bytes);
            let _ = parse_id_link_name(&bytes);
            let _ = parse_id_target(&bytes);
            let _ = parse_id_name(IdKind::User, &bytes);
        }
    }
}
