//! Which template applies to a link: `[Match]` as networkd's
//! `net_match_config()` tests it, with fnmatch(3) for the globs and
//! `Virtualization=` as systemd's `condition_test_virtualization()`.

use netspawn_common::unitfile::parse_boolean;

use super::model::{Match, Pattern, VirtCondition};
use super::virt::Virtualization;

/// What netd knows about a link when it picks its `.network` file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkFacts {
    /// The interface name.
    pub name: String,
    /// Alternative names (IFLA_ALT_IFNAME); `Name=` matches them too, as in
    /// networkd (netspawn sets a shortened link's full name as one).
    pub altnames: Vec<String>,
    /// The link kind (IFLA_INFO_KIND: `veth`, `bridge`, ...), `None` for
    /// links without one (physical devices).
    pub kind: Option<String>,
    /// The driver (`ethtool -i`: `veth` for veth links, `bridge` for
    /// bridges), `None` if unknown.
    pub driver: Option<String>,
}

impl VirtCondition {
    /// systemd's `condition_test_virtualization()` for the cases netd can
    /// tell apart.
    pub fn test(&self, virt: &Virtualization) -> bool {
        let result = if let Some(b) = parse_boolean(&self.value) {
            b == (*virt != Virtualization::None)
        } else {
            match (self.value.as_str(), virt) {
                ("vm", Virtualization::Vm(_)) => true,
                ("container", Virtualization::Container(_)) => true,
                (v, Virtualization::Vm(id) | Virtualization::Container(id)) => v == id,
                (_, Virtualization::None) => false,
            }
        };
        result != self.negate
    }
}

impl Match {
    /// True when nothing is set, so the file matches every link (networkd
    /// warns about that; so does [`super::parse()`]).
    pub fn is_empty(&self) -> bool {
        self.name.is_empty()
            && self.driver.is_empty()
            && self.kind.is_empty()
            && self.virtualization.is_none()
            && self.untestable.is_empty()
    }

    /// True if every condition set holds for `link`, netd running in `virt`
    /// (networkd's `net_match_config()`).
    pub fn matches(&self, link: &LinkFacts, virt: &Virtualization) -> bool {
        if !self.untestable.is_empty() {
            return false;
        }
        if !test_patterns(&self.driver, link.driver.as_deref())
            || !test_patterns(&self.kind, link.kind.as_deref())
        {
            return false;
        }
        let name_ok = test_patterns(&self.name, Some(&link.name))
            || link
                .altnames
                .iter()
                .any(|a| test_patterns(&self.name, Some(a)));
        if !name_ok {
            return false;
        }
        self.virtualization.as_ref().is_none_or(|c| c.test(virt))
    }
}

/// networkd's `net_condition_test_strv()`: an empty list holds; a negated
/// glob that matches fails the test; otherwise the test holds if some
/// positive glob matches, or if there are only negated ones. An absent
/// value matches no glob.
fn test_patterns(patterns: &[Pattern], value: Option<&str>) -> bool {
    if patterns.is_empty() {
        return true;
    }
    let mut matched = false;
    let mut has_positive = false;
    for p in patterns {
        if !p.negate {
            has_positive = true;
        }
        if value.is_some_and(|v| fnmatch(&p.glob, v)) {
            if p.negate {
                return false;
            }
            matched = true;
        }
    }
    if has_positive {
        matched
    } else {
        true
    }
}

/// fnmatch(3) with no flags: `*`, `?`, `[...]` (ranges, `!`/`^` negation,
/// `[:class:]`), `\` quoting the next character. `*` and `?` match any
/// character, `/` and a leading `.` included. Runs in O(pattern × string).
pub fn fnmatch(pattern: &str, s: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let s: Vec<char> = s.chars().collect();
    let (mut pi, mut si) = (0usize, 0usize);
    // Where to resume after the last `*`: (pattern index after it, string index).
    let mut star: Option<(usize, usize)> = None;
    loop {
        if pi < p.len() && p[pi] == '*' {
            while pi < p.len() && p[pi] == '*' {
                pi += 1;
            }
            star = Some((pi, si));
            continue;
        }
        if si == s.len() {
            return pi == p.len();
        }
        if pi < p.len() {
            if let Some(next) = match_one(&p, pi, s[si]) {
                pi = next;
                si += 1;
                continue;
            }
        }
        match star {
            Some((sp, ss)) if ss < s.len() => {
                star = Some((sp, ss + 1));
                pi = sp;
                si = ss + 1;
            }
            _ => return false,
        }
    }
}

/// Matches one pattern element at `p[pi]` (not `*`) against `c`; returns the
/// index after the element on a match.
fn match_one(p: &[char], pi: usize, c: char) -> Option<usize> {
    match p[pi] {
        '?' => Some(pi + 1),
        '[' => match match_bracket(p, pi, c) {
            Some((hit, next)) => hit.then_some(next),
            // An unclosed `[` is an ordinary character.
            None => (c == '[').then_some(pi + 1),
        },
        '\\' if pi + 1 < p.len() => (p[pi + 1] == c).then_some(pi + 2),
        x => (x == c).then_some(pi + 1),
    }
}

/// Matches `c` against the bracket expression at `p[start] == '['`; returns
/// whether it matched and the index after the closing `]`, or `None` if the
/// bracket is not closed. A `]` right after `[` or `[!` is an ordinary
/// member.
fn match_bracket(p: &[char], start: usize, c: char) -> Option<(bool, usize)> {
    let mut k = start + 1;
    let negate = matches!(p.get(k), Some('!' | '^'));
    if negate {
        k += 1;
    }
    let first = k;
    let mut hit = false;
    loop {
        let item = *p.get(k)?;
        if item == ']' && k > first {
            return Some((hit != negate, k + 1));
        }
        if item == '[' && p.get(k + 1) == Some(&':') {
            if let Some(end) = class_end(p, k + 2) {
                let name: String = p[k + 2..end - 2].iter().collect();
                hit |= class_matches(&name, c);
                k = end;
                continue;
            }
        }
        let (lo, next) = if item == '\\' && k + 1 < p.len() {
            (p[k + 1], k + 2)
        } else {
            (item, k + 1)
        };
        // `a-z` is a range unless the `-` is last (`[a-]`).
        if p.get(next) == Some(&'-') && p.get(next + 1).is_some_and(|h| *h != ']') {
            let (hi, after) = if p[next + 1] == '\\' && next + 2 < p.len() {
                (p[next + 2], next + 3)
            } else {
                (p[next + 1], next + 2)
            };
            hit |= lo <= c && c <= hi;
            k = after;
        } else {
            hit |= lo == c;
            k = next;
        }
    }
}

/// For a `[:name:]` class whose name starts at `from`, the index after `:]`.
fn class_end(p: &[char], from: usize) -> Option<usize> {
    let mut k = from;
    while k + 1 < p.len() {
        if p[k] == ':' && p[k + 1] == ']' {
            return Some(k + 2);
        }
        if !p[k].is_ascii_alphabetic() {
            return None;
        }
        k += 1;
    }
    None
}

/// POSIX character classes, for ASCII (the C locale networkd runs in).
fn class_matches(name: &str, c: char) -> bool {
    match name {
        "alnum" => c.is_ascii_alphanumeric(),
        "alpha" => c.is_ascii_alphabetic(),
        "blank" => c == ' ' || c == '\t',
        "cntrl" => c.is_ascii_control(),
        "digit" => c.is_ascii_digit(),
        "graph" => c.is_ascii_graphic(),
        "lower" => c.is_ascii_lowercase(),
        "print" => c.is_ascii_graphic() || c == ' ',
        "punct" => c.is_ascii_punctuation(),
        "space" => c.is_ascii_whitespace() || c == '\x0b',
        "upper" => c.is_ascii_uppercase(),
        "xdigit" => c.is_ascii_hexdigit(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::testutil::{link, ok};

    #[test]
    fn globs() {
        let table: &[(&str, &str, bool)] = &[
            ("ve-*", "ve-web", true),
            ("ve-*", "ve-", true),
            ("ve-*", "vb-web", false),
            ("ve-*", "xve-web", false),
            ("*", "", true),
            ("", "", true),
            ("", "a", false),
            ("?", "", false),
            ("?", "é", true),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("[a-c]x", "bx", true),
            ("[a-c]x", "dx", false),
            ("[!a-c]x", "bx", false),
            ("[!a-c]x", "dx", true),
            ("[^a]", "b", true),
            ("[]]", "]", true),
            ("[!]]", "]", false),
            ("[!]]", "a", true),
            ("[a-]", "-", true),
            ("[a-]", "b", false),
            ("[[:digit:]]*", "1abc", true),
            ("[[:digit:]]*", "abc", false),
            ("[[:upper:][:digit:]]", "Q", true),
            ("[[:bogus:]]", "b", false),
            ("\\*", "*", true),
            ("\\*", "a", false),
            ("[\\]]", "]", true),
            ("[", "[", true),
            ("ab[", "ab[", true),
            ("ab[c", "ab[c", true),
            ("*a*b*c*", "xxaxxbxxc", true),
            ("*a*b*c*", "xxaxxcxxb", false),
            ("*/*", "a/b", true),
            ("*", ".hidden", true),
            ("vz-*", "vz-lab", true),
            ("ve-web", "ve-web", true),
            ("ve-web", "ve-we", false),
        ];
        for (pat, s, want) in table {
            assert_eq!(fnmatch(pat, s), *want, "fnmatch({pat:?}, {s:?})");
        }
        // Backtracking stays cheap on a pathological pattern.
        let s = "a".repeat(4000);
        assert!(!fnmatch(&"a*".repeat(200).replace("a*a*a*", "a*a*b*"), &s));
    }

    #[test]
    fn match_names_kinds_drivers() {
        let v = Virtualization::None;
        // (file text, link, expected)
        let table: &[(&str, LinkFacts, bool)] = &[
            ("[Match]\nName=ve-*\n", link("ve-web", None, None), true),
            ("[Match]\nName=ve-*\n", link("vb-web", None, None), false),
            (
                "[Match]\nName=eth0 ve-*\n",
                link("ve-web", None, None),
                true,
            ),
            (
                "[Match]\nName=eth0\nName=ve-*\n",
                link("ve-web", None, None),
                true,
            ),
            (
                "[Match]\nName=eth0\nName=\nName=vb-*\n",
                link("eth0", None, None),
                false,
            ),
            ("[Match]\nName=!ve-web\n", link("ve-db", None, None), true),
            ("[Match]\nName=!ve-web\n", link("ve-web", None, None), false),
            (
                "[Match]\nName=!ve-web ve-db\n",
                link("ve-db", None, None),
                false,
            ),
            (
                "[Match]\nName=ve-*\nName=!ve-web\n",
                link("ve-db", None, None),
                true,
            ),
            (
                "[Match]\nName=ve-*\nName=!ve-web\n",
                link("ve-web", None, None),
                false,
            ),
            (
                "[Match]\nName=ve-*\nName=!ve-web\n",
                link("eth0", None, None),
                false,
            ),
            ("[Match]\nKind=veth\n", link("x", Some("veth"), None), true),
            (
                "[Match]\nKind=veth\n",
                link("x", Some("bridge"), None),
                false,
            ),
            ("[Match]\nKind=veth\n", link("x", None, None), false),
            ("[Match]\nKind=!veth\n", link("x", None, None), true),
            (
                "[Match]\nKind=\"veth\" 'bridge'\n",
                link("x", Some("bridge"), None),
                true,
            ),
            (
                "[Match]\nDriver=veth\n",
                link("x", None, Some("veth")),
                true,
            ),
            (
                "[Match]\nDriver=veth\n",
                link("x", Some("veth"), None),
                false,
            ),
            (
                "[Match]\nDriver=br*\nName=vz-*\n",
                link("vz-a", None, Some("bridge")),
                true,
            ),
            (
                "[Match]\nDriver=br*\nName=vz-*\n",
                link("vz-a", None, Some("veth")),
                false,
            ),
            ("[Match]\nName=*\n", link("anything", None, None), true),
            ("[Network]\nDHCP=yes\n", link("anything", None, None), true),
            (
                "[Match]\nMACAddress=12:34:56:78:9a:bc\n",
                link("x", None, None),
                false,
            ),
            (
                "[Match]\nMACAddress=12:34:56:78:9a:bc\nMACAddress=\n",
                link("x", None, None),
                true,
            ),
            (
                "[Match]\nName=ve-*\nType=ether\n",
                link("ve-a", None, None),
                false,
            ),
        ];
        for (text, l, want) in table {
            let parsed = ok(text);
            assert_eq!(
                parsed.file.matching.matches(l, &v),
                *want,
                "{text:?} against {l:?}"
            );
        }
        // Alternative names match too.
        let f = ok("[Match]\nName=ve-a-very-long-machine-name\n").file;
        let mut l = link("ve-a-very-lo1f2", Some("veth"), None);
        assert!(!f.matching.matches(&l, &v));
        l.altnames.push("ve-a-very-long-machine-name".into());
        assert!(f.matching.matches(&l, &v));
    }

    #[test]
    fn virtualization_condition() {
        let none = Virtualization::None;
        let nspawn = Virtualization::Container("systemd-nspawn".into());
        let kvm = Virtualization::Vm("kvm".into());
        let table: &[(&str, &Virtualization, bool)] = &[
            ("container", &nspawn, true),
            ("container", &none, false),
            ("container", &kvm, false),
            ("!container", &none, true),
            ("vm", &kvm, true),
            ("yes", &kvm, true),
            ("yes", &none, false),
            ("no", &none, true),
            ("systemd-nspawn", &nspawn, true),
            ("docker", &nspawn, false),
            ("!docker", &nspawn, true),
            ("kvm", &kvm, true),
        ];
        for (value, virt, want) in table {
            let f = ok(&format!("[Match]\nVirtualization={value}\nName=host0\n")).file;
            assert_eq!(
                f.matching.matches(&link("host0", Some("veth"), None), virt),
                *want,
                "Virtualization={value} in {virt:?}"
            );
        }
        // An empty assignment clears the condition.
        let f = ok("[Match]\nVirtualization=container\nVirtualization=\nName=host0\n").file;
        assert!(f.matching.matches(&link("host0", None, None), &none));
    }
}
