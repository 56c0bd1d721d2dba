//! `netspawnctl top`: systemd-cgtop for machines. One row per running
//! machine with its tasks, its CPU use over the interval (100% is one CPU)
//! and its memory, refreshed every `--delay`; `--batch` prints plain tables
//! one after another (for scripts), `-n` stops after that many.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use super::limits::{format_bytes, machine_usage};
use super::table::Table;
use super::{registry, CtlError};
use crate::cgroup::{Hierarchies, Usage};

/// `top`'s options.
#[derive(Debug, Clone, Copy)]
pub struct TopOptions {
    /// Stop after this many refreshes (None: until interrupted).
    pub iterations: Option<u64>,
    pub delay: Duration,
    /// Plain tables, no screen clearing (also when stdout is no terminal).
    pub batch: bool,
    pub no_legend: bool,
}

/// One machine's sample.
#[derive(Debug, Clone)]
struct Sample {
    at: Instant,
    usage: Usage,
}

fn sample_all(h: &Hierarchies) -> Result<BTreeMap<String, Sample>, CtlError> {
    let reg = registry();
    let entries = reg.list().map_err(|err| CtlError::Registry {
        path: reg.dir().to_path_buf(),
        err,
    })?;
    Ok(entries
        .into_iter()
        .filter_map(|e| {
            let usage = machine_usage(h, &e)?;
            Some((
                e.name,
                Sample {
                    at: Instant::now(),
                    usage,
                },
            ))
        })
        .collect())
}

/// The table of one refresh: %CPU from the two samples of each machine.
fn render(
    before: &BTreeMap<String, Sample>,
    after: &BTreeMap<String, Sample>,
    no_legend: bool,
) -> String {
    let mut t = Table::new(&["MACHINE", "TASKS", "%CPU", "MEMORY"]);
    for (name, s) in after {
        let cpu = before.get(name).and_then(|b| {
            let used = s.usage.cpu_usec?.checked_sub(b.usage.cpu_usec?)?;
            let wall = s.at.duration_since(b.at).as_micros() as f64;
            (wall > 0.0).then(|| format!("{:.1}", used as f64 * 100.0 / wall))
        });
        t.push(vec![
            name.clone(),
            s.usage.tasks.map_or("-".into(), |n| n.to_string()),
            cpu.unwrap_or_else(|| "-".into()),
            s.usage.memory.map_or("-".into(), format_bytes),
        ]);
    }
    let mut out = t.render(!no_legend);
    if !no_legend {
        out.push_str(&format!("\n{} machines listed.\n", t.len()));
    }
    out
}

/// `netspawnctl top [-b] [-n ITER] [-d DELAY]`.
pub fn top(o: &TopOptions) -> Result<i32, CtlError> {
    let h = Hierarchies::detect().map_err(CtlError::Cgroup)?;
    let clear = !o.batch && std::io::stdout().is_terminal();
    let mut before = sample_all(&h)?;
    let mut n = 0u64;
    loop {
        std::thread::sleep(o.delay);
        let after = sample_all(&h)?;
        let text = render(&before, &after, o.no_legend);
        let mut out = std::io::stdout().lock();
        if clear {
            out.write_all(b"\x1b[H\x1b[2J")?;
        } else if n > 0 {
            out.write_all(b"\n")?;
        }
        out.write_all(text.as_bytes())?;
        out.flush()?;
        n += 1;
        if o.iterations.is_some_and(|max| n >= max) {
            return Ok(0);
        }
        before = after;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_the_share_of_one_cpu_over_the_interval() {
        let t0 = Instant::now();
        let s = |at: Instant, cpu: u64| Sample {
            at,
            usage: Usage {
                cpu_usec: Some(cpu),
                tasks: Some(2),
                memory: Some(3 << 20),
                ..Usage::default()
            },
        };
        let before: BTreeMap<String, Sample> = [("web".to_string(), s(t0, 1_000_000))].into();
        let after: BTreeMap<String, Sample> = [
            ("web".to_string(), s(t0 + Duration::from_secs(1), 1_500_000)),
            ("new".to_string(), s(t0 + Duration::from_secs(1), 7)),
        ]
        .into();
        let text = render(&before, &after, false);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("MACHINE"), "{text}");
        assert!(
            lines[1].starts_with("new") && lines[1].contains(" - "),
            "{text}"
        );
        assert!(
            lines[2].starts_with("web") && lines[2].contains("50.0") && lines[2].contains("3.0M"),
            "{text}"
        );
        assert!(text.ends_with("2 machines listed.\n"), "{text}");
    }
}
