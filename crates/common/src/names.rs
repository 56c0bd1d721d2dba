//! Machine and interface name rules, as systemd applies them.

/// Longest hostname Linux accepts (`HOST_NAME_MAX`).
pub const HOST_NAME_MAX: usize = 64;
/// Longest interface name the kernel accepts (`IFNAMSIZ - 1`).
pub const IFNAME_MAX: usize = 15;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameError {
    Empty,
    TooLong(usize),
    BadChar(char),
    EmptyLabel,
    HyphenAtLabelEdge,
}

impl std::fmt::Display for NameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NameError::Empty => write!(f, "name is empty"),
            NameError::TooLong(n) => write!(
                f,
                "name is {n} bytes long, at most {HOST_NAME_MAX} are allowed"
            ),
            NameError::BadChar(c) => {
                write!(
                    f,
                    "character {c:?} is not allowed (only letters, digits, '-' and '.')"
                )
            }
            NameError::EmptyLabel => write!(
                f,
                "name has an empty label (leading, trailing or double dot)"
            ),
            NameError::HyphenAtLabelEdge => write!(f, "a label may not start or end with '-'"),
        }
    }
}

impl std::error::Error for NameError {}

/// Checks a machine name the way systemd's `hostname_is_valid()` does: one or
/// more dot-separated labels of ASCII letters, digits and hyphens (no hyphen at
/// either end of a label), at most [`HOST_NAME_MAX`] bytes.
pub fn check_machine_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > HOST_NAME_MAX {
        return Err(NameError::TooLong(name.len()));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(NameError::EmptyLabel);
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            return Err(NameError::BadChar(c));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(NameError::HyphenAtLabelEdge);
        }
    }
    Ok(())
}

/// True if `name` is a valid machine name.
pub fn machine_name_is_valid(name: &str) -> bool {
    check_machine_name(name).is_ok()
}

/// Checks an interface name as the kernel and systemd's `ifname_valid()` do:
/// 1..=15 bytes, printable ASCII without whitespace, '/' or ':', not "." or "..".
pub fn ifname_is_valid(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= IFNAME_MAX
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':')
}

/// Makes a machine name from an image directory's base name, as systemd-nspawn
/// does when neither `-M` nor `--hostname` is given: characters that are not
/// allowed are dropped, and the result is cut to [`HOST_NAME_MAX`].
pub fn machine_name_from_path(path: &std::path::Path) -> Option<String> {
    let base = path.file_name()?.to_str()?;
    let mut out = String::new();
    for c in base.chars() {
        if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
            out.push(c);
        }
    }
    let trimmed: String = out
        .trim_matches(|c| c == '-' || c == '.')
        .chars()
        .take(HOST_NAME_MAX)
        .collect();
    let trimmed = trimmed.trim_end_matches(['-', '.']).to_string();
    machine_name_is_valid(&trimmed).then_some(trimmed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_names() {
        for ok in ["web", "a", "web-1", "db.example", "A1", &"x".repeat(64)] {
            assert!(machine_name_is_valid(ok), "{ok} should be valid");
        }
        let bad: &[(&str, NameError)] = &[
            ("", NameError::Empty),
            ("a_b", NameError::BadChar('_')),
            ("a b", NameError::BadChar(' ')),
            ("a/b", NameError::BadChar('/')),
            (".a", NameError::EmptyLabel),
            ("a.", NameError::EmptyLabel),
            ("a..b", NameError::EmptyLabel),
            ("-a", NameError::HyphenAtLabelEdge),
            ("a-", NameError::HyphenAtLabelEdge),
            ("ü", NameError::BadChar('ü')),
        ];
        for (name, err) in bad {
            assert_eq!(check_machine_name(name), Err(err.clone()), "{name}");
        }
        assert_eq!(
            check_machine_name(&"x".repeat(65)),
            Err(NameError::TooLong(65))
        );
    }

    #[test]
    fn ifnames() {
        assert!(ifname_is_valid("ve-web"));
        assert!(ifname_is_valid("vz-123456789012"));
        assert!(!ifname_is_valid("vz-1234567890123"));
        assert!(!ifname_is_valid(""));
        assert!(!ifname_is_valid("a b"));
        assert!(!ifname_is_valid("a:b"));
        assert!(!ifname_is_valid(".."));
    }

    #[test]
    fn names_from_paths() {
        use std::path::Path;
        assert_eq!(
            machine_name_from_path(Path::new("/var/lib/machines/web")).as_deref(),
            Some("web")
        );
        assert_eq!(
            machine_name_from_path(Path::new("/srv/my_image")).as_deref(),
            Some("myimage")
        );
        assert_eq!(
            machine_name_from_path(Path::new("/srv/-x-")).as_deref(),
            Some("x")
        );
        assert_eq!(machine_name_from_path(Path::new("/")), None);
    }
}
