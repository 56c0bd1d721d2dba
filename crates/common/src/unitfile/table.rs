//! The key layer: a file format is a [`Schema`], a static table of
//! `(section, key, parser)` rows as systemd's `*-gperf.gperf` files are
//! (`Exec.KillSignal, config_parse_signal, 0, offsetof(Settings, kill_signal)`),
//! and [`parse`] drives the line layer through it. Each row's parser is a
//! small function from the value to a field of the target; the section
//! bookkeeping, the unknown/ignored warnings and the `Invalid KEY= value:`
//! errors are written once, here.
//!
//! The rules, as systemd's `config_parse()`: an assignment before any
//! section is an error; unknown sections and keys are warnings; `X-`
//! sections and keys are extensions, skipped silently; lines of a skipped
//! section are not looked at.

use super::lines::{self, Item, SyntaxError};

/// What a row does with its value.
pub enum Action<T: 'static> {
    /// Parses the value into the target. `Ok(Some(w))` is accepted with a
    /// warning; `Err(why)` makes the file invalid (`Invalid KEY= value: why`).
    Parse(fn(&mut T, &str) -> Result<Option<String>, String>),
    /// As [`Action::Parse`], for parsers that serve several keys and need
    /// the key's name.
    ParseKey(fn(&mut T, &str, &str) -> Result<Option<String>, String>),
    /// A key the format defines that this program does not act on: accepted
    /// with the schema's [`Schema::ignored_key`] warning.
    Ignored,
}

/// One row of a key table.
pub struct Key<T: 'static> {
    pub section: &'static str,
    pub name: &'static str,
    pub action: Action<T>,
}

impl<T> Key<T> {
    pub const fn parse(
        section: &'static str,
        name: &'static str,
        f: fn(&mut T, &str) -> Result<Option<String>, String>,
    ) -> Key<T> {
        Key {
            section,
            name,
            action: Action::Parse(f),
        }
    }

    pub const fn parse_key(
        section: &'static str,
        name: &'static str,
        f: fn(&mut T, &str, &str) -> Result<Option<String>, String>,
    ) -> Key<T> {
        Key {
            section,
            name,
            action: Action::ParseKey(f),
        }
    }

    pub const fn ignored(section: &'static str, name: &'static str) -> Key<T> {
        Key {
            section,
            name,
            action: Action::Ignored,
        }
    }
}

/// A file format.
pub struct Schema<T: 'static> {
    /// The sections this program reads.
    pub sections: &'static [&'static str],
    /// Sections the format defines that this program skips, with their
    /// warning (`Section 'Route' is ignored by netd.`).
    pub ignored_sections: &'static [&'static str],
    /// The warning for an ignored section, given its name.
    pub ignored_section: fn(&str) -> String,
    /// The rows. A key may appear once per section.
    pub keys: &'static [Key<T>],
    /// The warning for an [`Action::Ignored`] key, given key and section.
    pub ignored_key: fn(&str, &str) -> String,
}

/// A warning about one line (no file name: the caller adds it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub line: usize,
    pub msg: String,
    /// The line sets an [`Action::Ignored`] key: one the format defines and
    /// this program does not act on. A caller may refuse such a file
    /// instead (netspawn does, for trusted `.nspawn` files).
    pub ignored_key: bool,
}

impl<T> Schema<T> {
    fn find(&self, section: &str, key: &str) -> Option<&Key<T>> {
        self.keys
            .iter()
            .find(|k| k.name == key && k.section == section)
    }
}

/// Parses `text` into `out` through `schema`; returns the warnings in line
/// order, or the first error.
pub fn parse<T>(text: &str, schema: &Schema<T>, out: &mut T) -> Result<Vec<Warning>, SyntaxError> {
    let mut warnings = Vec::new();
    // None: before the first section; Some(None): a skipped section.
    let mut section: Option<Option<&'static str>> = None;
    lines::parse(
        text,
        |e| e,
        |n, item| {
            let l = match item {
                Item::Section(name) => {
                    let known = schema.sections.iter().find(|s| **s == name).copied();
                    if known.is_none() && !name.starts_with("X-") {
                        let msg = if schema.ignored_sections.contains(&name) {
                            (schema.ignored_section)(name)
                        } else {
                            format!("Unknown section '{name}'. Ignoring.")
                        };
                        warnings.push(Warning {
                            line: n,
                            msg,
                            ignored_key: false,
                        });
                    }
                    section = Some(known);
                    return Ok(());
                }
                Item::Line(l) => l,
            };
            let sect = match section {
                None => {
                    return Err(SyntaxError {
                        line: n,
                        msg: lines::outside_of_any_section(l),
                    })
                }
                Some(None) => return Ok(()),
                Some(Some(s)) => s,
            };
            let (key, value) =
                lines::split_assignment(l).map_err(|msg| SyntaxError { line: n, msg })?;
            let invalid = |why: String| SyntaxError {
                line: n,
                msg: format!("Invalid {key}= value: {why}"),
            };
            let action = schema.find(sect, key).map(|k| &k.action);
            let ignored_key = matches!(action, Some(Action::Ignored));
            let note = match action {
                Some(Action::Parse(f)) => f(out, value).map_err(invalid)?,
                Some(Action::ParseKey(f)) => f(out, key, value).map_err(invalid)?,
                Some(Action::Ignored) => Some((schema.ignored_key)(key, sect)),
                None if key.starts_with("X-") => None,
                // Escaped, so control characters in a key cannot break the line.
                None => Some(format!(
                    "Unknown key name '{}' in section '{sect}', ignoring.",
                    key.escape_debug()
                )),
            };
            if let Some(msg) = note {
                warnings.push(Warning {
                    line: n,
                    msg,
                    ignored_key,
                });
            }
            Ok(())
        },
    )?;
    Ok(warnings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unitfile::values;

    #[derive(Debug, Default, PartialEq)]
    struct T {
        flag: Option<bool>,
        names: Vec<String>,
        keys: Vec<String>,
    }

    static SCHEMA: Schema<T> = Schema {
        sections: &["A", "B"],
        ignored_sections: &["Old"],
        ignored_section: |s| format!("Section '{s}' is ignored by test."),
        keys: &[
            Key::parse("A", "Flag", |t, v| {
                t.flag = values::tristate(v)?;
                Ok(None)
            }),
            Key::parse("B", "Name", |t, v| {
                t.names.push(v.to_string());
                Ok((v == "old").then(|| "old is old".to_string()))
            }),
            Key::parse_key("B", "One", |t, k, _| {
                t.keys.push(k.to_string());
                Ok(None)
            }),
            Key::parse_key("B", "Two", |t, k, _| {
                t.keys.push(k.to_string());
                Ok(None)
            }),
            Key::ignored("A", "Later"),
        ],
        ignored_key: |k, s| format!("Key '{k}' in section '{s}' is ignored by test."),
    };

    #[test]
    fn rows_sections_and_warnings() {
        let mut t = T::default();
        let w = parse(
            "[A]\nFlag=yes\nLater=1\nName=x\n[B]\nName=old\nOne=\nTwo=\n[Old]\nAny=thing\n[Nope]\n[X-Mine]\nK=v\n[B]\nX-Key=1\nBad\\x01=1",
            &SCHEMA,
            &mut t,
        )
        .unwrap();
        assert_eq!(
            t,
            T {
                flag: Some(true),
                names: vec!["old".into()],
                keys: vec!["One".into(), "Two".into()],
            }
        );
        let msgs: Vec<(usize, &str)> = w.iter().map(|w| (w.line, w.msg.as_str())).collect();
        let ignored: Vec<usize> = w.iter().filter(|w| w.ignored_key).map(|w| w.line).collect();
        assert_eq!(ignored, vec![3]);
        assert_eq!(
            msgs,
            vec![
                (3, "Key 'Later' in section 'A' is ignored by test."),
                (4, "Unknown key name 'Name' in section 'A', ignoring."),
                (6, "old is old"),
                (9, "Section 'Old' is ignored by test."),
                (11, "Unknown section 'Nope'. Ignoring."),
                (
                    16,
                    "Unknown key name 'Bad\\\\x01' in section 'B', ignoring."
                ),
            ]
        );
    }

    #[test]
    fn errors_name_line_and_key() {
        let mut t = T::default();
        let e = parse("[A]\n\nFlag=perhaps", &SCHEMA, &mut t).unwrap_err();
        assert_eq!(e.line, 3);
        assert_eq!(e.msg, "Invalid Flag= value: \"perhaps\" is not a boolean");
        let e = parse("Flag=1", &SCHEMA, &mut t).unwrap_err();
        assert_eq!(
            (e.line, e.msg.as_str()),
            (1, "Assignment outside of any section: \"Flag=1\"")
        );
        let e = parse("[A]\nFlag", &SCHEMA, &mut t).unwrap_err();
        assert!(e.msg.starts_with("Missing '='"), "{}", e.msg);
    }
}
