//! Adding `mymachines` to (and removing it from) the `passwd:`, `group:` and
//! `hosts:` lines of `/etc/nsswitch.conf`, as pure text edits for the
//! installer (`netspawnctl install-nss`, [`super::nss`]). They live here, not
//! in the NSS module's crate, so the launcher does not link the cdylib.
//!
//! Edits are idempotent and touch only those lines, keeping spacing,
//! comments and action items (`[NOTFOUND=return]`) as they were. On the
//! `hosts:` line `mymachines` goes before the first DNS source (`dns` or
//! `resolve`) so machine names win over the network, and otherwise right
//! after `files` (with its actions); failing both, at the end. On `passwd:`
//! and `group:` it goes right after `files` or `compat` (with its actions),
//! before `systemd` and network sources, as nss-mymachines(8) shows
//! (`passwd: files mymachines systemd`); failing that, at the end. A file
//! without one of the lines gets it. Removal also drops the action items
//! that followed `mymachines`, since they belonged to it.

const SERVICE: &str = "mymachines";

/// The databases the module answers, in the order missing lines are added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Db {
    Passwd,
    Group,
    Hosts,
}

impl Db {
    const ALL: [Db; 3] = [Db::Passwd, Db::Group, Db::Hosts];

    fn name(self) -> &'static str {
        match self {
            Db::Passwd => "passwd",
            Db::Group => "group",
            Db::Hosts => "hosts",
        }
    }

    /// The source list written for an empty line (glibc's default for
    /// it, with `mymachines`).
    fn default_sources(self) -> &'static str {
        match self {
            Db::Passwd | Db::Group => "files mymachines",
            Db::Hosts => "files mymachines dns",
        }
    }

    /// The line written when the file has none for this database.
    fn default_line(self) -> String {
        let name = format!("{}:", self.name());
        format!("{name:<16}{}", self.default_sources())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Service,
    Action,
}

#[derive(Debug, Clone, Copy)]
struct Token {
    kind: Kind,
    start: usize,
    end: usize,
}

/// Splits a line into (colon, code end, tokens of the source list) if it is
/// the line of `db`. Offsets are byte offsets into `line`.
fn db_tokens(line: &str, db: Db) -> Option<(usize, usize, Vec<Token>)> {
    let code_end = line.find('#').unwrap_or(line.len());
    let code = line.get(..code_end)?;
    let colon = code.find(':')?;
    if code.get(..colon)?.trim() != db.name() {
        return None;
    }
    let bytes = code.as_bytes();
    let mut tokens = Vec::new();
    let mut i = colon + 1;
    while i < bytes.len() {
        let b = bytes.get(i).copied().unwrap_or(b' ');
        if b.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        let kind = if b == b'[' {
            while i < bytes.len() && bytes.get(i) != Some(&b']') {
                i += 1;
            }
            i = (i + 1).min(bytes.len());
            Kind::Action
        } else {
            while i < bytes.len()
                && !bytes
                    .get(i)
                    .is_some_and(|c| c.is_ascii_whitespace() || *c == b'[')
            {
                i += 1;
            }
            Kind::Service
        };
        tokens.push(Token {
            kind,
            start,
            end: i,
        });
    }
    Some((colon, code_end, tokens))
}

fn is_service(line: &str, t: &Token, name: &str) -> bool {
    t.kind == Kind::Service && line.get(t.start..t.end) == Some(name)
}

/// End of service token `i` together with the action items that follow it.
fn end_with_actions(tokens: &[Token], i: usize) -> usize {
    let mut end = tokens.get(i).map_or(0, |t| t.end);
    for t in tokens.iter().skip(i + 1) {
        if t.kind != Kind::Action {
            break;
        }
        end = t.end;
    }
    end
}

fn add_to_line(line: &str, db: Db) -> Option<String> {
    let (colon, code_end, tokens) = db_tokens(line, db)?;
    if tokens.iter().any(|t| is_service(line, t, SERVICE)) {
        return Some(line.to_string());
    }
    let splice = |at: usize, text: &str| -> Option<String> {
        Some(format!("{}{}{}", line.get(..at)?, text, line.get(at..)?))
    };
    if !tokens.iter().any(|t| t.kind == Kind::Service) {
        // An empty list means glibc's default; spell out a sensible one.
        let comment = line.get(code_end..)?;
        let sep = if comment.is_empty() { "" } else { " " };
        return Some(format!(
            "{} {}{sep}{comment}",
            line.get(..=colon)?,
            db.default_sources()
        ));
    }
    if db == Db::Hosts {
        if let Some(dns) = tokens
            .iter()
            .find(|t| is_service(line, t, "dns") || is_service(line, t, "resolve"))
        {
            return splice(dns.start, &format!("{SERVICE} "));
        }
    }
    let local = |t: &Token| {
        is_service(line, t, "files") || (db != Db::Hosts && is_service(line, t, "compat"))
    };
    let at = match tokens.iter().position(local) {
        Some(i) => end_with_actions(&tokens, i),
        None => tokens.last().map_or(code_end, |t| t.end),
    };
    splice(at, &format!(" {SERVICE}"))
}

fn remove_from_line(line: &str, db: Db) -> Option<String> {
    let mut line = line.to_string();
    loop {
        let (_, _, tokens) = db_tokens(&line, db)?;
        let Some(i) = tokens.iter().position(|t| is_service(&line, t, SERVICE)) else {
            return Some(line);
        };
        let start = tokens.get(i).map_or(0, |t| t.start);
        let end = end_with_actions(&tokens, i);
        let next = tokens.iter().find(|t| t.start >= end);
        let (from, to) = match (next, i.checked_sub(1).and_then(|p| tokens.get(p))) {
            (Some(n), _) => (start, n.start),
            (None, Some(prev)) => (prev.end, end),
            (None, None) => (start, end),
        };
        line = format!("{}{}", line.get(..from)?, line.get(to..)?);
    }
}

/// Applies `edit` to the lines of `db`; says whether there was one.
fn edit_lines(text: &str, db: Db, edit: fn(&str, Db) -> Option<String>) -> (String, bool) {
    let mut out = String::with_capacity(text.len() + 16);
    let mut seen = false;
    for piece in text.split_inclusive('\n') {
        let (line, eol) = match piece.strip_suffix('\n') {
            Some(l) => (l, "\n"),
            None => (piece, ""),
        };
        match edit(line, db) {
            Some(new) => {
                seen = true;
                out.push_str(&new);
            }
            None => out.push_str(line),
        }
        out.push_str(eol);
    }
    (out, seen)
}

/// Returns `text` (an nsswitch.conf) with `mymachines` on its `passwd:`,
/// `group:` and `hosts:` lines: on `hosts:` before `dns`/`resolve`, else
/// after `files`, else last; on the others after `files`/`compat`, else
/// last. Unchanged where it is already there; a missing line is added
/// (`passwd: files mymachines`, `group: files mymachines`,
/// `hosts: files mymachines dns`).
pub fn add_mymachines(text: &str) -> String {
    let mut out = text.to_string();
    for db in Db::ALL {
        let (edited, seen) = edit_lines(&out, db, add_to_line);
        out = edited;
        if !seen {
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(&db.default_line());
            out.push('\n');
        }
    }
    out
}

/// Returns `text` with `mymachines` (and the action items that follow it)
/// removed from its `passwd:`, `group:` and `hosts:` lines. Unchanged if it
/// is not there.
pub fn remove_mymachines(text: &str) -> String {
    Db::ALL.into_iter().fold(text.to_string(), |t, db| {
        edit_lines(&t, db, remove_from_line).0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEBIAN: &str = "# /etc/nsswitch.conf\n\npasswd:         files systemd\n\
        group:          files systemd\nshadow:         files\n\n\
        hosts:          files dns\nnetworks:       files\n";

    /// Lines that already have `mymachines`, so the tables below see only
    /// the edits of the line they are about.
    const PASSWD_GROUP: &str = "passwd: files mymachines\ngroup: files mymachines\n";

    #[test]
    fn adds_before_dns_keeping_the_rest() {
        let out = add_mymachines(DEBIAN);
        assert_eq!(
            out,
            "# /etc/nsswitch.conf\n\npasswd:         files mymachines systemd\n\
             group:          files mymachines systemd\nshadow:         files\n\n\
             hosts:          files mymachines dns\nnetworks:       files\n"
        );
        assert_eq!(add_mymachines(&out), out);
        assert_eq!(remove_mymachines(&out), DEBIAN);
        assert_eq!(remove_mymachines(DEBIAN), DEBIAN);
    }

    #[test]
    fn placement_table() {
        let cases = [
            ("hosts: files dns", "hosts: files mymachines dns"),
            (
                "hosts: files resolve [!UNAVAIL=return] dns",
                "hosts: files mymachines resolve [!UNAVAIL=return] dns",
            ),
            (
                "hosts: resolve [!UNAVAIL=return] files myhostname dns",
                "hosts: mymachines resolve [!UNAVAIL=return] files myhostname dns",
            ),
            (
                "hosts: files [NOTFOUND=return] myhostname",
                "hosts: files [NOTFOUND=return] mymachines myhostname",
            ),
            ("hosts: myhostname", "hosts: myhostname mymachines"),
            (
                "hosts:\tfiles\tdns # mine",
                "hosts:\tfiles\tmymachines dns # mine",
            ),
            ("hosts:", "hosts: files mymachines dns"),
            ("hosts: # nothing", "hosts: files mymachines dns # nothing"),
            ("  hosts : files", "  hosts : files mymachines"),
            ("hosts: files mymachines dns", "hosts: files mymachines dns"),
            (
                "#hosts: files dns",
                "#hosts: files dns\nhosts:          files mymachines dns",
            ),
        ];
        for (input, want) in cases {
            let got = add_mymachines(&format!("{PASSWD_GROUP}{input}\n"));
            assert_eq!(got, format!("{PASSWD_GROUP}{want}\n"), "{input}");
            assert_eq!(add_mymachines(&got), got, "idempotent: {input}");
        }
    }

    #[test]
    fn passwd_and_group_placement_table() {
        let hosts = "hosts: files mymachines dns\n";
        let cases = [
            ("passwd: files systemd", "passwd: files mymachines systemd"),
            ("passwd: files", "passwd: files mymachines"),
            (
                "passwd: compat systemd",
                "passwd: compat mymachines systemd",
            ),
            (
                "passwd: files [NOTFOUND=return] systemd",
                "passwd: files [NOTFOUND=return] mymachines systemd",
            ),
            ("passwd: sss", "passwd: sss mymachines"),
            ("passwd: files dns", "passwd: files mymachines dns"),
            ("passwd:", "passwd: files mymachines"),
            ("passwd:\tfiles # mine", "passwd:\tfiles mymachines # mine"),
            (
                "passwd: files mymachines systemd",
                "passwd: files mymachines systemd",
            ),
        ];
        for (input, want) in cases {
            for (db, other) in [("passwd", "group"), ("group", "passwd")] {
                let input = input.replace("passwd", db);
                let want = want.replace("passwd", db);
                let fixed = format!("{other}: files mymachines\n");
                let got = add_mymachines(&format!("{fixed}{hosts}{input}\n"));
                assert_eq!(got, format!("{fixed}{hosts}{want}\n"), "{input}");
                assert_eq!(add_mymachines(&got), got, "idempotent: {input}");
            }
        }
        // Other databases are never touched.
        let other = "shadow: files\nnetgroup: files\nnetworks: files\n";
        assert!(add_mymachines(other).starts_with(other));
    }

    #[test]
    fn missing_lines_are_added() {
        assert_eq!(
            add_mymachines("passwd: files"),
            "passwd: files mymachines\ngroup:          files mymachines\n\
             hosts:          files mymachines dns\n"
        );
        assert_eq!(
            add_mymachines(""),
            "passwd:         files mymachines\ngroup:          files mymachines\n\
             hosts:          files mymachines dns\n"
        );
    }

    #[test]
    fn removal_table() {
        let cases = [
            ("hosts: files mymachines dns", "hosts: files dns"),
            ("hosts: mymachines dns", "hosts: dns"),
            ("hosts: files mymachines", "hosts: files"),
            (
                "hosts: files mymachines [NOTFOUND=return] dns",
                "hosts: files dns",
            ),
            (
                "hosts: files mymachines [NOTFOUND=return] # c",
                "hosts: files # c",
            ),
            ("hosts: mymachines", "hosts: "),
            ("hosts: files mymachines mymachines dns", "hosts: files dns"),
            (
                "hosts: files mymachinesx dns",
                "hosts: files mymachinesx dns",
            ),
            ("passwd: files mymachines", "passwd: files"),
            (
                "group: files mymachines [NOTFOUND=return] systemd",
                "group: files systemd",
            ),
            ("networks: files mymachines", "networks: files mymachines"),
        ];
        for (input, want) in cases {
            assert_eq!(remove_mymachines(input), want, "{input}");
        }
    }

    #[test]
    fn odd_input_does_not_panic() {
        for text in [
            "hosts: [",
            "hosts: [x",
            "hosts: ]",
            "hosts:[NOTFOUND=return]mymachines",
            "hosts: é mymachines ü",
            ":",
            "\n\n",
        ] {
            let added = add_mymachines(text);
            let _ = remove_mymachines(&added);
            assert!(added.contains("mymachines"), "{text}");
        }
    }
}
