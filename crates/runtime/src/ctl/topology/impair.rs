//! Link impairments: rate, loss, delay and jitter on the traffic that
//! leaves one end of a link, set by `up` from the file and live by
//! `netspawnctl netem MACHINE:IFNAME …`.
//!
//! - rate alone, or with loss: a root `tbf` (rate) and a `clsact` egress
//!   filter running a small BPF program that drops a packet with the given
//!   probability (`bpf_get_prandom_u32() < p·2³²` → `TC_ACT_SHOT`); with
//!   `shaper = "htb"` a root `htb` whose one class (`1:1`, the default
//!   class, rate = ceiling) has a `bfifo` of the same 50 ms as its queue,
//!   in place of the `tbf`;
//! - delay or jitter (with any of the others): a root `netem`, which also
//!   takes rate and loss. Kernels without `sch_netem` (this one) refuse it:
//!   that is said loudly, in one line, as an error; nothing is changed.
//!
//! All of it sits on the interface inside the machine's network namespace
//! and goes with it.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use netlink::tc::{Qdisc, TcRequest};
use netlink::{Netlink, Rtnl, RtnlError};

use super::TopoError;

/// What limits the rate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Shaper {
    /// A root `tbf` (the default).
    #[default]
    Tbf,
    /// A root `htb` with one class at the rate and a byte FIFO as its queue.
    Htb,
}

/// Impairments of one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Impairment {
    /// Bytes per second.
    pub rate: Option<u64>,
    /// What shapes `rate`.
    pub shaper: Shaper,
    /// Loss probability in parts per 2^32 (`u32::MAX` + 1 is all: kept as u64).
    pub loss: Option<u64>,
    pub delay_us: Option<u64>,
    pub jitter_us: Option<u64>,
}

impl Impairment {
    pub fn is_empty(&self) -> bool {
        *self == Impairment::default()
    }

    /// Reads one key (`rate`, `shaper`, `loss`, `delay`, `jitter`); see
    /// [`Impairment::check`] for the whole.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        match key {
            "rate" => self.rate = Some(parse_rate(value)?),
            "shaper" => {
                self.shaper = match value {
                    "tbf" => Shaper::Tbf,
                    "htb" => Shaper::Htb,
                    _ => return Err(format!("shaper '{value}': tbf or htb")),
                }
            }
            "loss" => self.loss = Some(parse_loss(value)?),
            "delay" => self.delay_us = Some(parse_time_us(value)?),
            "jitter" => self.jitter_us = Some(parse_time_us(value)?),
            k => {
                return Err(format!(
                    "unknown impairment '{k}' (rate, shaper, loss, delay, jitter)"
                ))
            }
        }
        Ok(())
    }

    /// The keys together: `shaper = "htb"` shapes a rate, and delay or
    /// jitter put netem at the root (which then does the rate itself).
    pub fn check(&self) -> Result<(), String> {
        if self.shaper == Shaper::Htb {
            if self.rate.is_none() {
                return Err("shaper htb needs a rate".into());
            }
            if self.needs_netem() {
                return Err(
                    "shaper htb does not combine with delay or jitter (netem at the root shapes the rate then)"
                        .into(),
                );
            }
        }
        Ok(())
    }

    fn needs_netem(&self) -> bool {
        self.delay_us.is_some() || self.jitter_us.is_some()
    }
}

impl std::fmt::Display for Impairment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if let Some(r) = self.rate {
            parts.push(format!("rate {}bit", r * 8));
            if self.shaper == Shaper::Htb {
                parts.push("shaper htb".into());
            }
        }
        if let Some(l) = self.loss {
            parts.push(format!("loss {:.3}%", l as f64 * 100.0 / 4294967296.0));
        }
        if let Some(d) = self.delay_us {
            parts.push(format!("delay {d}us"));
        }
        if let Some(j) = self.jitter_us {
            parts.push(format!("jitter {j}us"));
        }
        if parts.is_empty() {
            parts.push("none".into());
        }
        f.write_str(&parts.join(" "))
    }
}

/// `10mbit`, `1gbit`, `500kbit`, `100bit`, `2mbps` (bytes), plain bits.
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("rate '{s}': expected a number and a unit such as 10mbit"))?;
    let bits_per = match unit {
        "" | "bit" => 1.0,
        "kbit" => 1e3,
        "mbit" => 1e6,
        "gbit" => 1e9,
        "bps" => 8.0,
        "kbps" => 8e3,
        "mbps" => 8e6,
        "gbps" => 8e9,
        _ => {
            return Err(format!(
                "rate '{s}': unknown unit '{unit}' (bit, kbit, mbit, gbit, bps, kbps, mbps, gbps)"
            ))
        }
    };
    let bytes = (n * bits_per / 8.0).round();
    if !(1.0..=1e13).contains(&bytes) {
        return Err(format!("rate '{s}' is out of range"));
    }
    Ok(bytes as u64)
}

/// `5%` or `0.05`.
pub fn parse_loss(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let p: f64 = match t.strip_suffix('%') {
        Some(n) => n.trim().parse::<f64>().map(|x| x / 100.0),
        None => t.parse::<f64>(),
    }
    .map_err(|_| format!("loss '{s}': expected a percentage such as 5%"))?;
    if !(0.0..=1.0).contains(&p) {
        return Err(format!("loss '{s}' is not between 0% and 100%"));
    }
    Ok((p * 4294967296.0).round() as u64)
}

/// `20ms`, `500us`, `1s`.
pub fn parse_time_us(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mul) = if let Some(n) = t.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1e6)
    } else {
        return Err(format!("time '{s}': give a unit (us, ms, s)"));
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("time '{s}' is not a number with a unit"))?;
    if !(0.0..=60e6).contains(&(n * mul)) {
        return Err(format!("time '{s}' is out of range"));
    }
    Ok((n * mul).round() as u64)
}

/// The requests that put an impairment's qdiscs on link `index`, the root
/// first; none: the link needs no root qdisc.
pub fn qdisc_requests(index: u32, i: &Impairment) -> Vec<TcRequest> {
    if i.needs_netem() {
        let qdisc = Qdisc::Netem {
            delay_us: i.delay_us.unwrap_or(0),
            jitter_us: i.jitter_us.unwrap_or(0),
            loss: i.loss.map_or(0, |l| l.min(u64::from(u32::MAX)) as u32),
            rate: i.rate.unwrap_or(0),
            limit: 10_000,
        };
        return vec![TcRequest::ReplaceRoot { index, qdisc }];
    }
    let Some(rate) = i.rate else {
        return Vec::new();
    };
    // A burst of 10 ms of traffic (at least two full frames), a queue of
    // 50 ms: the same for both shapers.
    let burst = (rate / 100).clamp(3028, u64::from(u32::MAX)) as u32;
    let limit = (rate / 20 + u64::from(burst)).min(u64::from(u32::MAX)) as u32;
    match i.shaper {
        Shaper::Tbf => vec![TcRequest::ReplaceRoot {
            index,
            qdisc: Qdisc::Tbf { rate, burst, limit },
        }],
        // An htb is made afresh (it cannot be changed in place).
        Shaper::Htb => vec![
            TcRequest::DeleteRoot { index },
            TcRequest::ReplaceRoot {
                index,
                qdisc: Qdisc::Htb { default_minor: 1 },
            },
            TcRequest::ReplaceHtbClass {
                index,
                minor: 1,
                rate,
                burst,
            },
            TcRequest::ReplaceLeaf {
                index,
                parent_minor: 1,
                major: 10,
                qdisc: Qdisc::Bfifo { limit },
            },
        ],
    }
}

/// eBPF instructions of the loss program: drop when a random u32 is below
/// `threshold` (`p·2³²`).
pub fn loss_program(threshold: u64) -> Vec<u64> {
    // One instruction: code, dst:4|src:4, off (i16), imm (i32), little-endian fields.
    fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
        u64::from(code)
            | (u64::from(dst & 0xf) << 8)
            | (u64::from(src & 0xf) << 12)
            | (u64::from(off as u16) << 16)
            | (u64::from(imm as u32) << 32)
    }
    const BPF_FUNC_GET_PRANDOM_U32: i32 = 7;
    const TC_ACT_OK: i32 = 0;
    const TC_ACT_SHOT: i32 = 2;
    vec![
        insn(0x85, 0, 0, 0, BPF_FUNC_GET_PRANDOM_U32), // call bpf_get_prandom_u32
        insn(0x18, 1, 0, 0, threshold as u32 as i32),  // r1 = threshold (lddw, low)
        insn(0x00, 0, 0, 0, (threshold >> 32) as u32 as i32), // (lddw, high)
        insn(0xad, 0, 1, 2, 0),                        // if r0 < r1 goto drop
        insn(0xb7, 0, 0, 0, TC_ACT_OK),                // r0 = TC_ACT_OK
        insn(0x95, 0, 0, 0, 0),                        // exit
        insn(0xb7, 0, 0, 0, TC_ACT_SHOT),              // drop: r0 = TC_ACT_SHOT
        insn(0x95, 0, 0, 0, 0),                        // exit
    ]
}

/// Loads the loss program (`BPF_PROG_TYPE_SCHED_CLS`).
pub fn load_loss_program(threshold: u64) -> Result<OwnedFd, String> {
    let insns = loss_program(threshold);
    let license = c"Dual BSD/GPL";
    // union bpf_attr for BPF_PROG_LOAD, up to prog_name; the rest zero.
    let mut attr = [0u8; 128];
    let put32 =
        |a: &mut [u8; 128], at: usize, v: u32| a[at..at + 4].copy_from_slice(&v.to_ne_bytes());
    let put64 =
        |a: &mut [u8; 128], at: usize, v: u64| a[at..at + 8].copy_from_slice(&v.to_ne_bytes());
    put32(&mut attr, 0, 3); // BPF_PROG_TYPE_SCHED_CLS
    put32(&mut attr, 4, insns.len() as u32);
    put64(&mut attr, 8, insns.as_ptr() as u64);
    put64(&mut attr, 16, license.as_ptr() as u64);
    attr[48..52].copy_from_slice(b"loss");
    const BPF_PROG_LOAD: libc::c_long = 5;
    // SAFETY: attr is a valid bpf_attr of the given size; insns and license
    // outlive the call; the kernel returns a new descriptor or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            attr.as_mut_ptr(),
            attr.len() as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(format!(
            "load the loss BPF program: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: a descriptor the kernel just gave us, owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Puts impairment `i` on link `index` through `nl` (replacing what was
/// there; an empty one removes it). `load` gives the loss program.
pub fn apply_with(
    nl: &mut dyn Rtnl,
    index: u32,
    i: &Impairment,
    load: impl FnOnce(u64) -> Result<OwnedFd, String>,
) -> Result<(), String> {
    i.check()?;
    let netem_missing = |e: &RtnlError| e.errno() == Some(libc::ENOENT);
    let reqs = qdisc_requests(index, i);
    if reqs.is_empty() {
        nl.tc(&TcRequest::DeleteRoot { index })
            .map_err(|e| format!("remove the root qdisc: {e}"))?;
    }
    for (k, r) in reqs.iter().enumerate() {
        if let Err(e) = nl.tc(r) {
            let netem = matches!(
                r,
                TcRequest::ReplaceRoot {
                    qdisc: Qdisc::Netem { .. },
                    ..
                }
            );
            if netem && netem_missing(&e) {
                return Err("delay and jitter need the netem qdisc, which this kernel does not have (no sch_netem): nothing was changed".to_string());
            }
            // A half-made htb would shape nothing: no root qdisc rather.
            if k > 0 {
                let _ = nl.tc(&TcRequest::DeleteRoot { index });
            }
            return Err(match r {
                TcRequest::ReplaceRoot { .. } => format!("set the root qdisc: {e}"),
                TcRequest::ReplaceHtbClass { .. } => format!("add the htb class: {e}"),
                _ => format!("add the class's queue: {e}"),
            });
        }
    }
    nl.tc(&TcRequest::DeleteClsact { index })
        .map_err(|e| format!("remove clsact: {e}"))?;
    // netem drops packets itself; tbf and htb need the BPF filter for loss.
    if let (Some(loss), false) = (i.loss.filter(|l| *l > 0), i.needs_netem()) {
        let prog = load(loss)?;
        nl.tc(&TcRequest::AddClsact { index })
            .map_err(|e| format!("add clsact: {e}"))?;
        nl.tc(&TcRequest::AddEgressBpf {
            index,
            prog_fd: prog.as_raw_fd() as u32,
            name: "netspawn-loss".into(),
        })
        .map_err(|e| format!("add the loss filter: {e}"))?;
    }
    Ok(())
}

/// Puts impairment `i` on interface `ifname` inside the machine whose
/// leader is `pid`.
pub fn apply(pid: u32, ifname: &str, i: &Impairment) -> Result<(), TopoError> {
    let ns = super::links::netns_of(pid)?;
    let mut nl = Netlink::open_in(ns.as_fd())?;
    let index = nl
        .link(ifname)?
        .ok_or_else(|| TopoError::Usage(format!("no interface {ifname}")))?
        .index;
    apply_with(&mut nl, index, i, load_loss_program).map_err(TopoError::Usage)
}

/// What is on interface `ifname` inside the machine: its qdiscs' kinds.
pub fn show(pid: u32, ifname: &str) -> Result<Vec<String>, TopoError> {
    let ns = super::links::netns_of(pid)?;
    let mut nl = Netlink::open_in(ns.as_fd())?;
    let index = nl
        .link(ifname)?
        .ok_or_else(|| TopoError::Usage(format!("no interface {ifname}")))?
        .index;
    // A veth's default is noqueue: that is no impairment.
    Ok(nl
        .qdisc_kinds(index)?
        .into_iter()
        .filter(|k| k != "noqueue")
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink::fake::FakeRtnl;

    #[test]
    fn values_read_as_tc_writes_them() {
        assert_eq!(parse_rate("10mbit").unwrap(), 1_250_000);
        assert_eq!(parse_rate("1gbit").unwrap(), 125_000_000);
        assert_eq!(parse_rate("2mbps").unwrap(), 2_000_000);
        assert!(parse_rate("10 furlongs").is_err());
        assert!(parse_rate("0bit").is_err());
        assert_eq!(parse_loss("50%").unwrap(), 1 << 31);
        assert_eq!(parse_loss("100%").unwrap(), 1 << 32);
        assert!(parse_loss("120%").is_err());
        assert_eq!(parse_time_us("20ms").unwrap(), 20_000);
        assert_eq!(parse_time_us("1.5s").unwrap(), 1_500_000);
        assert!(parse_time_us("20").is_err());
        let mut i = Impairment::default();
        assert!(i
            .set("latency", "1ms")
            .unwrap_err()
            .contains("unknown impairment"));
    }

    #[test]
    fn rate_and_loss_are_tbf_plus_a_bpf_filter_and_delay_is_netem() {
        let mut f = FakeRtnl::with_links(&[("eth1", Some("veth"))]);
        let ix = f.link("eth1").unwrap().unwrap().index;
        let i = Impairment {
            rate: Some(1_250_000),
            loss: Some(1 << 30),
            ..Default::default()
        };
        let mut loaded = None;
        apply_with(&mut f, ix, &i, |t| {
            loaded = Some(t);
            std::fs::File::open("/dev/null")
                .map(OwnedFd::from)
                .map_err(|e| e.to_string())
        })
        .unwrap();
        assert_eq!(loaded, Some(1 << 30));
        assert_eq!(f.qdisc_kinds(ix).unwrap(), ["tbf", "clsact"]);
        assert!(
            f.log.iter().any(|l| l.starts_with("filter egress bpf")),
            "{:?}",
            f.log
        );
        // Delay on a kernel without netem: a clear error, nothing changed.
        f.missing_qdiscs.push("netem");
        let d = Impairment {
            delay_us: Some(20_000),
            ..Default::default()
        };
        let e = apply_with(&mut f, ix, &d, |_| unreachable!()).unwrap_err();
        assert!(e.contains("no sch_netem"), "{e}");
        assert_eq!(f.qdisc_kinds(ix).unwrap(), ["tbf", "clsact"]);
        // Reset.
        apply_with(&mut f, ix, &Impairment::default(), |_| unreachable!()).unwrap();
        assert!(f.qdisc_kinds(ix).unwrap().is_empty());
    }

    #[test]
    fn shaper_htb_is_a_root_htb_a_class_and_a_bfifo() {
        let mut f = FakeRtnl::with_links(&[("eth1", Some("veth"))]);
        let ix = f.link("eth1").unwrap().unwrap().index;
        let mut i = Impairment::default();
        i.set("rate", "10mbit").unwrap();
        i.set("shaper", "htb").unwrap();
        i.set("loss", "1%").unwrap();
        assert_eq!(i.to_string(), "rate 10000000bit shaper htb loss 1.000%");
        apply_with(&mut f, ix, &i, |_| {
            std::fs::File::open("/dev/null")
                .map(OwnedFd::from)
                .map_err(|e| e.to_string())
        })
        .unwrap();
        assert_eq!(f.qdisc_kinds(ix).unwrap(), ["htb", "bfifo", "clsact"]);
        assert!(
            f.log
                .iter()
                .any(|l| l.starts_with("class htb 1:1 rate 1250000")),
            "{:?}",
            f.log
        );
        // Back to tbf: the htb and its queue go with the root.
        i.shaper = Shaper::Tbf;
        i.loss = None;
        apply_with(&mut f, ix, &i, |_| unreachable!()).unwrap();
        assert_eq!(f.qdisc_kinds(ix).unwrap(), ["tbf"]);
        // What does not go together.
        let mut j = Impairment::default();
        j.set("shaper", "htb").unwrap();
        assert_eq!(j.check().unwrap_err(), "shaper htb needs a rate");
        j.set("rate", "1mbit").unwrap();
        j.set("delay", "5ms").unwrap();
        assert!(j.check().unwrap_err().contains("does not combine"));
        assert!(apply_with(&mut f, ix, &j, |_| unreachable!()).is_err());
        assert_eq!(f.qdisc_kinds(ix).unwrap(), ["tbf"]);
        assert!(j.set("shaper", "cbq").unwrap_err().contains("tbf or htb"));
    }

    #[test]
    fn the_loss_program_is_eight_instructions_with_the_threshold_inside() {
        let p = loss_program(0x1_0000_0000);
        assert_eq!(p.len(), 8);
        assert_eq!(p[0] & 0xff, 0x85);
        assert_eq!(p[1] >> 32, 0);
        assert_eq!(p[2] >> 32, 1);
        assert_eq!(p[7] & 0xff, 0x95);
    }
}
