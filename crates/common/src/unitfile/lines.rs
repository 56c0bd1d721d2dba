//! The line layer: the syntax that `.nspawn` and `.network` files share, as systemd's
//! `config_parse()` reads it: lines end at `\n`, `\r\n` or `\r`; `#` and `;`
//! start comment lines (dropped even inside a continuation); a line ending in
//! an unescaped backslash continues on the next one (the backslash becomes a
//! space); `[Section]` headers; `KEY=VALUE` assignments with whitespace
//! trimmed around both. What the sections and keys mean is the callers'
//! ([`super::table`] and its callers' key tables).
//!
//! Files are untrusted input: nothing here panics, a NUL byte, a line longer
//! than [`LONG_LINE_MAX`] or a line that is not UTF-8 is an error naming its
//! line.

/// The longest logical line (continuations joined), as systemd's
/// `LONG_LINE_MAX`.
pub const LONG_LINE_MAX: usize = 1024 * 1024;

/// What systemd trims around keys and values.
pub const WHITESPACE: [char; 4] = [' ', '\t', '\n', '\r'];

/// A syntax error: the line it is on and a one-line message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub line: usize,
    pub msg: String,
}

/// One non-empty logical line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Item<'a> {
    /// `[NAME]`, with a name that passed systemd's `string_is_safe()`.
    Section(&'a str),
    /// Any other line, trimmed: split it with [`split_assignment`] where it
    /// counts (lines in a skipped section are not checked, as in systemd).
    Line(&'a str),
}

/// The text of a file's bytes; a line that is not UTF-8 is an error naming
/// that line.
pub fn decode(data: &[u8]) -> Result<&str, SyntaxError> {
    std::str::from_utf8(data).map_err(|e| SyntaxError {
        line: 1 + count_line_breaks(data.get(..e.valid_up_to()).unwrap_or_default()),
        msg: "line is not valid UTF-8".to_string(),
    })
}

/// Calls `f` with the line number and [`Item`] of every non-empty logical
/// line, in order, stopping at the first error (a syntax error is turned
/// into `E` by `syntax`). A continuation is reported at its last physical
/// line.
pub fn parse<E>(
    text: &str,
    syntax: impl Fn(SyntaxError) -> E,
    mut f: impl FnMut(usize, Item<'_>) -> Result<(), E>,
) -> Result<(), E> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let error = |line: usize, msg: String| syntax(SyntaxError { line, msg });
    let mut continuation: Option<String> = None;
    let mut lineno = 0;
    for raw in physical_lines(text) {
        lineno += 1;
        if raw.contains('\0') {
            return Err(error(lineno, "line contains a NUL byte".into()));
        }
        // Comment lines are dropped even in the middle of a continuation, as
        // systemd does.
        let lead = raw.trim_start_matches(WHITESPACE);
        if lead.starts_with('#') || lead.starts_with(';') {
            continue;
        }
        let mut logical = match continuation.take() {
            Some(mut c) => {
                c.push_str(raw);
                c
            }
            None => raw.to_string(),
        };
        if logical.len() > LONG_LINE_MAX {
            return Err(error(
                lineno,
                format!("line is longer than {LONG_LINE_MAX} bytes"),
            ));
        }
        if ends_in_escape(&logical) {
            // The continuation backslash becomes a space, as in systemd.
            logical.pop();
            logical.push(' ');
            continuation = Some(logical);
            continue;
        }
        item(&logical, lineno, &syntax, &mut f)?;
    }
    if let Some(c) = continuation {
        item(&c, lineno.max(1), &syntax, &mut f)?;
    }
    Ok(())
}

fn item<E>(
    l: &str,
    n: usize,
    syntax: &impl Fn(SyntaxError) -> E,
    f: &mut impl FnMut(usize, Item<'_>) -> Result<(), E>,
) -> Result<(), E> {
    let l = l.trim_matches(WHITESPACE);
    if l.is_empty() {
        return Ok(());
    }
    let Some(rest) = l.strip_prefix('[') else {
        return f(n, Item::Line(l));
    };
    let error = |msg: String| syntax(SyntaxError { line: n, msg });
    let name = rest
        .strip_suffix(']')
        .ok_or_else(|| error(format!("Invalid section header {l:?}")))?;
    if !string_is_safe(name) {
        return Err(error(format!("Bad characters in section header {l:?}")));
    }
    f(n, Item::Section(name))
}

/// Splits an [`Item::Line`] into a trimmed key and value.
pub fn split_assignment(l: &str) -> Result<(&str, &str), String> {
    let Some((key, value)) = l.split_once('=') else {
        return Err(format!("Missing '=' in {l:?}"));
    };
    let key = key.trim_matches(WHITESPACE);
    if key.is_empty() {
        return Err(format!("Missing key name before '=' in {l:?}"));
    }
    Ok((key, value.trim_matches(WHITESPACE)))
}

/// The error for an assignment before any section header.
pub fn outside_of_any_section(l: &str) -> String {
    format!("Assignment outside of any section: {l:?}")
}

/// Counts line ends as [`physical_lines`] does (`\n`, `\r\n`, `\r`).
fn count_line_breaks(data: &[u8]) -> usize {
    let mut n = 0;
    let mut bytes = data.iter().peekable();
    while let Some(&b) = bytes.next() {
        match b {
            b'\n' => n += 1,
            b'\r' => {
                n += 1;
                bytes.next_if_eq(&&b'\n');
            }
            _ => {}
        }
    }
    n
}

/// Splits at `\n`, `\r\n` or `\r`, as systemd's `read_line()` does.
fn physical_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let s = rest?;
        match s.find(['\n', '\r']) {
            Some(i) => {
                let (line, tail) = s.split_at(i);
                // Both terminators are one ASCII byte, so these are char boundaries.
                let after = tail
                    .strip_prefix("\r\n")
                    .or_else(|| tail.get(1..))
                    .unwrap_or("");
                rest = (!after.is_empty()).then_some(after);
                Some(line)
            }
            None => {
                rest = None;
                (!s.is_empty()).then_some(s)
            }
        }
    })
}

/// True if the line ends in a backslash that is not itself escaped.
fn ends_in_escape(s: &str) -> bool {
    let run = s.bytes().rev().take_while(|b| *b == b'\\').count();
    run % 2 == 1
}

/// systemd's `string_is_safe()`: no control characters, quotes or backslash.
fn string_is_safe(s: &str) -> bool {
    !s.chars()
        .any(|c| c.is_control() || matches!(c, '"' | '\'' | '\\'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    enum Got {
        Section(usize, String),
        Line(usize, String),
    }

    fn items(text: &str) -> Result<Vec<Got>, (usize, String)> {
        let mut out = Vec::new();
        parse(
            text,
            |e| (e.line, e.msg),
            |n, item| {
                out.push(match item {
                    Item::Section(s) => Got::Section(n, s.to_string()),
                    Item::Line(l) => Got::Line(n, l.to_string()),
                });
                Ok(())
            },
        )?;
        Ok(out)
    }

    #[test]
    fn lines_comments_and_continuations() {
        let text = "\u{feff}# c\r\n[Exec]\rBoot = yes \n; c\nA=one \\\n# dropped\n two\n\n[X-y]\nB=\\\\\nC=last\\";
        assert_eq!(
            items(text).unwrap(),
            vec![
                Got::Section(2, "Exec".into()),
                Got::Line(3, "Boot = yes".into()),
                Got::Line(7, "A=one   two".into()),
                Got::Section(9, "X-y".into()),
                Got::Line(10, "B=\\\\".into()),
                Got::Line(11, "C=last".into()),
            ]
        );
        assert_eq!(items("").unwrap(), vec![]);
        assert_eq!(items("\n\r\n\r").unwrap(), vec![]);
    }

    #[test]
    fn errors_name_their_line() {
        let err = |t: &str| items(t).unwrap_err();
        assert_eq!(err("[A]\nB=\0").0, 2);
        assert_eq!(err("[A]\r\n\r\n[B").1, "Invalid section header \"[B\"");
        assert_eq!(err("[A]\r\n\r\n[B").0, 3);
        assert_eq!(
            err("[A\"]").1,
            "Bad characters in section header \"[A\\\"]\""
        );
        let long = format!("[A]\nK={}", "x".repeat(LONG_LINE_MAX));
        assert_eq!(err(&long).0, 2);
        assert_eq!(
            decode(b"[A]\r\nK=\xff").unwrap_err(),
            SyntaxError {
                line: 2,
                msg: "line is not valid UTF-8".into()
            }
        );
        assert_eq!(decode(b"a\r\rb\n\xfe").unwrap_err().line, 4);
    }

    #[test]
    fn assignments() {
        assert_eq!(split_assignment("K = v = w"), Ok(("K", "v = w")));
        assert_eq!(split_assignment("K="), Ok(("K", "")));
        assert!(split_assignment("K")
            .unwrap_err()
            .starts_with("Missing '='"));
        assert!(split_assignment(" =v")
            .unwrap_err()
            .starts_with("Missing key name"));
    }

    #[test]
    fn arbitrary_text_never_panics() {
        let alphabet = [
            "[", "]", "=", "\\", "\n", "\r", "#", ";", " ", "é", "a", "\0", "\"",
        ];
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        for len in 0..400 {
            let text: String = crate::testgen::picks(&mut state, &alphabet, len).concat();
            let _ = items(&text);
        }
    }
}
