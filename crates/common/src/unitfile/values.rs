//! The value parsers that `.nspawn` and `.network` keys share, each as
//! systemd's own: booleans (`parse_boolean()`), tristates, word lists
//! (`extract_first_word()` with its flags) and time spans (`parse_sec()`).
//! They are pure and never panic; an error is a one-line reason that quotes
//! the value, for the table layer to prefix with `Invalid KEY= value:`.

use super::lines::WHITESPACE;

/// systemd's `parse_boolean()`: `1 yes y true t on` and `0 no n false f off`,
/// case-insensitively. Anything else (including "") is `None`.
pub fn parse_boolean(s: &str) -> Option<bool> {
    const YES: [&str; 6] = ["1", "yes", "y", "true", "t", "on"];
    const NO: [&str; 6] = ["0", "no", "n", "false", "f", "off"];
    if YES.iter().any(|w| s.eq_ignore_ascii_case(w)) {
        Some(true)
    } else if NO.iter().any(|w| s.eq_ignore_ascii_case(w)) {
        Some(false)
    } else {
        None
    }
}

/// A boolean, or an error that quotes the value.
pub fn boolean(value: &str) -> Result<bool, String> {
    parse_boolean(value).ok_or_else(|| format!("{value:?} is not a boolean"))
}

/// A boolean where an empty value means "not set" (systemd's tristates).
pub fn tristate(value: &str) -> Result<Option<bool>, String> {
    if value.is_empty() {
        Ok(None)
    } else {
        boolean(value).map(Some)
    }
}

/// How [`words`] treats quotes and backslashes: systemd's `EXTRACT_*` flags
/// that its config parsers use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Extract {
    /// `EXTRACT_UNQUOTE`: `"…"` and `'…'` group (and are removed), anywhere
    /// in a word (`a"b c"d` is one word `ab cd`).
    pub unquote: bool,
    /// `EXTRACT_CUNESCAPE`: C escapes (`\n`, `\t`, `\x41`, `\101`, `\u00e9`,
    /// `\s` for a space, …) are decoded; an unknown one is an error.
    pub cunescape: bool,
    /// `EXTRACT_RETAIN_ESCAPE`: a backslash stays in the word (and the
    /// character after it loses its special meaning).
    pub retain_escape: bool,
    /// `EXTRACT_RELAX`: an unterminated quote or a trailing backslash is
    /// accepted instead of being an error.
    pub relax: bool,
}

impl Extract {
    /// No flags: words split at whitespace, a backslash escapes the next
    /// character, quotes are ordinary characters (networkd's `DNS=`).
    pub const PLAIN: Extract = Extract {
        unquote: false,
        cunescape: false,
        retain_escape: false,
        relax: false,
    };
    /// `EXTRACT_UNQUOTE` (lists of names: `Interface=`, `Name=`, …).
    pub const UNQUOTE: Extract = Extract {
        unquote: true,
        ..Extract::PLAIN
    };
    /// `EXTRACT_UNQUOTE|EXTRACT_CUNESCAPE` (`Environment=` of unit files).
    pub const UNQUOTE_CUNESCAPE: Extract = Extract {
        unquote: true,
        cunescape: true,
        ..Extract::PLAIN
    };
    /// `EXTRACT_UNQUOTE|EXTRACT_RETAIN_ESCAPE`: what `config_parse_strv()`
    /// uses (`.nspawn` `Parameters=`, `Environment=`).
    pub const STRV: Extract = Extract {
        unquote: true,
        retain_escape: true,
        ..Extract::PLAIN
    };
}

/// Splits `value` into words as systemd's `extract_first_word()` does with
/// whitespace as separators and the given flags. Errors quote the value.
pub fn words(value: &str, flags: Extract) -> Result<Vec<String>, String> {
    let err = |why: &str| format!("{value:?} {why}");
    let mut out = Vec::new();
    let mut chars = value.chars().peekable();
    loop {
        while chars.next_if(|c| WHITESPACE.contains(c)).is_some() {}
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut word = String::new();
        let mut quote: Option<char> = None;
        loop {
            let Some(c) = chars.next() else {
                if quote.is_some() && !flags.relax {
                    return Err(err("has an unterminated quote"));
                }
                break;
            };
            if c == '\0' {
                return Err(err("contains a NUL byte"));
            }
            if c == '\\' {
                let Some(next) = chars.next() else {
                    if flags.relax {
                        break;
                    }
                    return Err(err("ends in a lone backslash"));
                };
                if flags.cunescape {
                    unescape_one(next, &mut chars, &mut word).ok_or_else(|| {
                        err(&format!("has an unknown escape sequence \"\\{next}\""))
                    })?;
                } else {
                    if flags.retain_escape {
                        word.push('\\');
                    }
                    word.push(next);
                }
                continue;
            }
            match quote {
                Some(q) if c == q => quote = None,
                Some(_) => word.push(c),
                None if flags.unquote && (c == '"' || c == '\'') => quote = Some(c),
                None if WHITESPACE.contains(&c) => break,
                None => word.push(c),
            }
        }
        out.push(word);
    }
}

/// systemd's `cunescape_one()` for the character after a backslash; reads
/// the digits of `\x`, `\u`, `\U` and octal escapes from `rest`. `None` for
/// an unknown or malformed escape, or one that decodes to NUL.
fn unescape_one(
    c: char,
    rest: &mut std::iter::Peekable<std::str::Chars<'_>>,
    out: &mut String,
) -> Option<()> {
    let mut digits = |n: usize, radix: u32| -> Option<u32> {
        let mut v: u32 = 0;
        for _ in 0..n {
            let d = rest.next()?.to_digit(radix)?;
            v = v.checked_mul(radix)?.checked_add(d)?;
        }
        Some(v)
    };
    let decoded = match c {
        'a' => '\u{7}',
        'b' => '\u{8}',
        'f' => '\u{c}',
        'n' => '\n',
        'r' => '\r',
        't' => '\t',
        'v' => '\u{b}',
        's' => ' ',
        '\\' | '"' | '\'' => c,
        'x' => char::from_u32(digits(2, 16)?)?,
        'u' => char::from_u32(digits(4, 16)?)?,
        'U' => char::from_u32(digits(8, 16)?)?,
        '0'..='7' => {
            let rest_v = digits(2, 8)?;
            char::from_u32(c.to_digit(8)? * 64 + rest_v)?
        }
        _ => return None,
    };
    if decoded == '\0' {
        return None;
    }
    out.push(decoded);
    Some(())
}

/// systemd's `parse_sec()`: a sum of `NUMBER[UNIT]` parts, spaces between
/// them optional, the number possibly with a fraction; no unit means
/// seconds. Returns microseconds, or `None` for `infinity`. Sums saturate
/// far beyond any useful value instead of overflowing.
pub fn parse_timespan_usec(value: &str) -> Result<Option<u128>, String> {
    parse_timespan(value, USEC_PER_SEC)
}

/// Like [`parse_timespan_usec`] with `default_unit` microseconds for a
/// number without a unit (systemd's `parse_time()`: `RLIMIT_RTTIME` counts
/// in microseconds, for one).
pub fn parse_timespan(value: &str, default_unit: u128) -> Result<Option<u128>, String> {
    const UNITS: [(&str, u128); 30] = [
        ("seconds", USEC_PER_SEC),
        ("second", USEC_PER_SEC),
        ("sec", USEC_PER_SEC),
        ("s", USEC_PER_SEC),
        ("minutes", 60 * USEC_PER_SEC),
        ("minute", 60 * USEC_PER_SEC),
        ("min", 60 * USEC_PER_SEC),
        ("months", 2_629_800 * USEC_PER_SEC),
        ("month", 2_629_800 * USEC_PER_SEC),
        ("msec", 1000),
        ("ms", 1000),
        ("m", 60 * USEC_PER_SEC),
        ("hours", 3600 * USEC_PER_SEC),
        ("hour", 3600 * USEC_PER_SEC),
        ("hr", 3600 * USEC_PER_SEC),
        ("h", 3600 * USEC_PER_SEC),
        ("days", 86400 * USEC_PER_SEC),
        ("day", 86400 * USEC_PER_SEC),
        ("d", 86400 * USEC_PER_SEC),
        ("weeks", 604_800 * USEC_PER_SEC),
        ("week", 604_800 * USEC_PER_SEC),
        ("w", 604_800 * USEC_PER_SEC),
        ("M", 2_629_800 * USEC_PER_SEC),
        ("years", 31_557_600 * USEC_PER_SEC),
        ("year", 31_557_600 * USEC_PER_SEC),
        ("y", 31_557_600 * USEC_PER_SEC),
        ("usec", 1),
        ("us", 1),
        ("\u{b5}s", 1),
        ("\u{3bc}s", 1),
    ];
    // Far beyond any time anyone configures; keeps the sum from overflowing.
    const CAP: u128 = 1 << 100;

    let bad = || format!("{value:?} is not a time span");
    let trimmed = value.trim_matches(WHITESPACE);
    if trimmed == "infinity" {
        return Ok(None);
    }
    if trimmed.is_empty() {
        return Err(bad());
    }
    let mut total: u128 = 0;
    let mut rest = trimmed;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (whole, after) = rest.split_at(digits);
        let (frac, after) = match after.strip_prefix('.') {
            Some(a) => {
                let n = a.bytes().take_while(u8::is_ascii_digit).count();
                a.split_at(n)
            }
            None => ("", after),
        };
        if whole.is_empty() && frac.is_empty() {
            return Err(bad());
        }
        let after = after.trim_start_matches(WHITESPACE);
        let unit_len = after
            .char_indices()
            .find(|(_, c)| !c.is_alphabetic())
            .map_or(after.len(), |(i, _)| i);
        let (unit, after) = after.split_at(unit_len);
        let mult = if unit.is_empty() {
            default_unit
        } else {
            UNITS
                .iter()
                .find(|(u, _)| *u == unit)
                .map(|(_, m)| *m)
                .ok_or_else(bad)?
        };
        // Too many digits for u128 is more than the cap anyway.
        let w: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().unwrap_or(CAP)
        };
        let mut part = w.saturating_mul(mult);
        let mut scale = mult;
        for d in frac.bytes().take(18) {
            scale /= 10;
            part = part.saturating_add(u128::from(d - b'0') * scale);
        }
        total = total.saturating_add(part).min(CAP);
        rest = after.trim_start_matches(WHITESPACE);
    }
    Ok(Some(total))
}

/// Microseconds in a second.
pub const USEC_PER_SEC: u128 = 1_000_000;

/// systemd's `parse_size()` with base 1024: `NUMBER[K|M|G|T|P|E]`, a
/// fraction allowed with a suffix (`1.5G`), `B` optional. Returns bytes;
/// `None` on overflow or bad syntax.
pub fn parse_size_1024(value: &str) -> Option<u64> {
    const SUFFIXES: [(char, u32); 6] = [
        ('K', 10),
        ('M', 20),
        ('G', 30),
        ('T', 40),
        ('P', 50),
        ('E', 60),
    ];
    let v = value.trim_matches(WHITESPACE);
    let v = v.strip_suffix('B').unwrap_or(v);
    let (num, shift) = match v.chars().last() {
        Some(c) if c.is_ascii_alphabetic() => {
            let (_, s) = SUFFIXES.iter().find(|(x, _)| *x == c)?;
            (v.get(..v.len() - 1)?.trim_end_matches(WHITESPACE), *s)
        }
        _ => (v, 0),
    };
    let (whole, frac) = match num.split_once('.') {
        Some((w, f)) => (w, f),
        None => (num, ""),
    };
    if whole.is_empty() && frac.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || (!frac.is_empty() && shift == 0)
    {
        return None;
    }
    let w: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let bytes = w.checked_mul(1u64.checked_shl(shift)?)?;
    // The fraction exactly, as systemd: digits / 10^len of the unit.
    let frac = frac.get(..frac.len().min(18)).unwrap_or_default();
    let num: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    let den = 10u128.pow(frac.len() as u32);
    let part = u64::try_from((num << shift) / den).ok()?;
    bytes.checked_add(part)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &str, f: Extract) -> Result<Vec<String>, String> {
        words(s, f)
    }

    fn ok(s: &str, f: Extract) -> Vec<String> {
        w(s, f).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    #[test]
    fn booleans() {
        assert_eq!(parse_boolean("On"), Some(true));
        assert_eq!(parse_boolean("f"), Some(false));
        assert_eq!(parse_boolean("maybe"), None);
        assert_eq!(parse_boolean(""), None);
        assert_eq!(tristate(""), Ok(None));
        assert_eq!(tristate("yes"), Ok(Some(true)));
        assert_eq!(boolean("2").unwrap_err(), "\"2\" is not a boolean");
    }

    #[test]
    fn words_as_extract_first_word() {
        // The cases of systemd's test-extract-word.c that the flags we use reach.
        assert_eq!(ok("foobar waldo", Extract::PLAIN), ["foobar", "waldo"]);
        assert_eq!(
            ok("\"foobar\" 'waldo'", Extract::PLAIN),
            ["\"foobar\"", "'waldo'"]
        );
        assert_eq!(
            ok("\"foobar\" 'waldo'", Extract::UNQUOTE),
            ["foobar", "waldo"]
        );
        assert_eq!(ok("a\"b c\"d", Extract::UNQUOTE), ["ab cd"]);
        assert_eq!(ok("  \t a  ", Extract::UNQUOTE), ["a"]);
        assert_eq!(ok("", Extract::UNQUOTE), Vec::<String>::new());
        assert_eq!(ok("''", Extract::UNQUOTE), [""]);
        assert_eq!(ok(r"a\ b c", Extract::UNQUOTE), ["a b", "c"]);
        assert_eq!(ok(r"a\ b c", Extract::STRV), [r"a\ b", "c"]);
        assert_eq!(ok(r#""a \"q\" b""#, Extract::UNQUOTE), [r#"a "q" b"#]);
        assert_eq!(ok(r#""a \"q\" b""#, Extract::STRV), [r#"a \"q\" b"#]);
        assert_eq!(
            ok(r"A=\x41\s\101\u00e9 B=\n", Extract::UNQUOTE_CUNESCAPE),
            ["A=A A\u{e9}", "B=\n"]
        );
        assert!(w(r"a\q", Extract::UNQUOTE_CUNESCAPE)
            .unwrap_err()
            .contains("unknown escape"));
        assert!(w(r"a\x0", Extract::UNQUOTE_CUNESCAPE).is_err());
        assert!(w(r"\000", Extract::UNQUOTE_CUNESCAPE).is_err());
        assert!(w("\"open", Extract::UNQUOTE)
            .unwrap_err()
            .contains("unterminated quote"));
        assert_eq!(
            ok(
                "\"open",
                Extract {
                    relax: true,
                    ..Extract::UNQUOTE
                }
            ),
            ["open"]
        );
        assert!(w("trail\\", Extract::UNQUOTE)
            .unwrap_err()
            .contains("lone backslash"));
        assert!(w("a\0b", Extract::PLAIN).is_err());
    }

    #[test]
    fn words_never_panic() {
        let alphabet = [
            "\\", "\"", "'", " ", "x", "u", "U", "0", "7", "9", "f", "é", "\t",
        ];
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..300 {
            let text: String = crate::testgen::picks(&mut state, &alphabet, len % 24).concat();
            for f in [
                Extract::PLAIN,
                Extract::UNQUOTE,
                Extract::UNQUOTE_CUNESCAPE,
                Extract::STRV,
            ] {
                let _ = words(&text, f);
            }
        }
    }

    #[test]
    fn time_spans() {
        let us = |s: &str| parse_timespan_usec(s).unwrap();
        assert_eq!(us("5"), Some(5_000_000));
        assert_eq!(us("1min 30s"), Some(90_000_000));
        assert_eq!(us("1.5h"), Some(5_400_000_000));
        assert_eq!(us("2 ms"), Some(2000));
        assert_eq!(us("infinity"), None);
        assert!(parse_timespan_usec("").is_err());
        assert!(parse_timespan_usec("5 parsecs").is_err());
        assert!(parse_timespan_usec("s").is_err());
        assert_eq!(parse_timespan("7", 1).unwrap(), Some(7));
        assert_eq!(us(&"9".repeat(60)), Some(1 << 100));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size_1024("1024"), Some(1024));
        assert_eq!(parse_size_1024("2K"), Some(2048));
        assert_eq!(parse_size_1024("1.5G"), Some(3 << 29));
        assert_eq!(parse_size_1024("4MB"), Some(4 << 20));
        assert_eq!(parse_size_1024("1.5"), None);
        assert_eq!(parse_size_1024("16E"), None);
        assert_eq!(parse_size_1024("x"), None);
        assert_eq!(parse_size_1024(""), None);
        assert_eq!(parse_size_1024("3Q"), None);
    }
}
