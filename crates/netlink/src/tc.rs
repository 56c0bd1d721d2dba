//! Traffic control: the few qdiscs and filters netspawn's link impairments
//! use, as plain values ([`TcRequest`]) and the netlink messages they
//! become ([`message`], pure, so their bytes are unit-tested here).
//!
//! - a root `tbf` for a rate limit (`TCA_TBF_PARMS` with an
//!   ethernet-aware rate spec, so no rate table is needed, and
//!   `TCA_TBF_BURST`/`TCA_TBF_RATE64`);
//! - a root `htb` (`TCA_HTB_INIT`), one class under it (`TCA_HTB_PARMS`:
//!   rate = ceiling, buffers in scheduler ticks) and a `bfifo` as the
//!   class's queue: the other way to a rate limit;
//! - a root `netem` for delay, jitter, loss and rate (its options are a
//!   `struct tc_netem_qopt` followed by nested attributes, as `tc` sends
//!   them); kernels without `sch_netem` refuse it with `ENOENT`;
//! - `clsact` and a direct-action `bpf` filter on its egress hook (loss by a
//!   small BPF program whose descriptor the caller loaded).
//!
//! netlink-packet-route has no tbf, htb or netem types: their options are
//! written here, field by field, after the kernel's `pkt_sched.h`.

use rtnetlink::packet_core::DefaultNla;
use rtnetlink::packet_route::tc::{
    TcAttribute, TcBpfFlags, TcFilterBpfOption, TcHandle, TcHeader, TcMessage, TcOption,
};
use rtnetlink::packet_route::AddressFamily;

/// A qdisc (at the root, or a leaf under an htb class).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Qdisc {
    /// Token bucket: `rate` bytes per second, `burst` bytes, a queue of
    /// `limit` bytes.
    Tbf { rate: u64, burst: u32, limit: u32 },
    /// Hierarchical token bucket: the classes do the work
    /// ([`TcRequest::ReplaceHtbClass`]); unclassified traffic goes to class
    /// `1:default_minor`.
    Htb { default_minor: u32 },
    /// A byte-limited FIFO of `limit` bytes (an htb class's queue).
    Bfifo { limit: u32 },
    /// netem: delay and jitter in microseconds, loss in parts per 2^32,
    /// rate in bytes per second (0: none), a queue of `limit` packets.
    Netem {
        delay_us: u64,
        jitter_us: u64,
        loss: u32,
        rate: u64,
        limit: u32,
    },
}

/// A traffic-control change on one link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TcRequest {
    /// Puts `qdisc` at the root (replacing what is there, also a qdisc of
    /// another kind). An htb gets handle `1:`, which its classes name; any
    /// other the kernel's choice, as `tc qdisc replace … root` sends it: a
    /// root with the same handle as the one there is changed in place,
    /// which only works for the same kind. Replacing an htb by an htb is
    /// refused (htb cannot be changed in place): remove the root first.
    ReplaceRoot { index: u32, qdisc: Qdisc },
    /// The htb class `1:minor` under the root htb: `rate` bytes per second
    /// (also its ceiling: it borrows nothing), `burst` bytes.
    ReplaceHtbClass {
        index: u32,
        minor: u32,
        rate: u64,
        burst: u32,
    },
    /// `qdisc`, handle `major:`, as the queue of class `1:parent_minor`.
    ReplaceLeaf {
        index: u32,
        parent_minor: u32,
        major: u16,
        qdisc: Qdisc,
    },
    /// Removes the root qdisc (back to the default); none is success.
    DeleteRoot { index: u32 },
    /// Adds the `clsact` qdisc (there already is success).
    AddClsact { index: u32 },
    /// Removes `clsact` and its filters; none is success.
    DeleteClsact { index: u32 },
    /// A direct-action BPF filter on the egress hook of `clsact`.
    AddEgressBpf {
        index: u32,
        prog_fd: u32,
        name: String,
    },
}

/// What a request is to the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcVerb {
    NewQdisc,
    DelQdisc,
    NewClass,
    NewFilter,
}

const TCA_OPTIONS: u16 = 2;
const TCA_TBF_PARMS: u16 = 1;
const TCA_TBF_RATE64: u16 = 4;
const TCA_TBF_BURST: u16 = 6;
const TCA_NETEM_RATE: u16 = 6;
const TCA_NETEM_LATENCY64: u16 = 10;
const TCA_NETEM_JITTER64: u16 = 11;
const TCA_NETEM_RATE64: u16 = 8;
const TCA_HTB_PARMS: u16 = 1;
const TCA_HTB_INIT: u16 = 2;
const TCA_HTB_RATE64: u16 = 6;
const TCA_HTB_CEIL64: u16 = 7;
/// `TC_HTB_PROTOVER`: the `tc_htb_glob` version the kernel expects.
const TC_HTB_PROTOVER: u32 = 3;
/// Nanoseconds per scheduler tick (`PSCHED_SHIFT` 6).
const NS_PER_TICK: u128 = 64;
const TC_LINKLAYER_ETHERNET: u8 = 1;
/// `ETH_P_ALL` in network byte order, as the filter's protocol.
const ETH_P_ALL_BE: u16 = 0x0300;
/// The egress hook of `clsact`.
pub const CLSACT_EGRESS: TcHandle = TcHandle {
    major: 0xffff,
    minor: TcHandle::MIN_EGRESS,
};

/// `struct tc_ratespec`: cell_log, linklayer, overhead, cell_align, mpu, rate.
fn ratespec(rate: u64) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[1] = TC_LINKLAYER_ETHERNET;
    let r = u32::try_from(rate).unwrap_or(u32::MAX);
    b[8..12].copy_from_slice(&r.to_ne_bytes());
    b
}

fn nla(kind: u16, value: Vec<u8>) -> DefaultNla {
    DefaultNla::new(kind, value)
}

/// Nested attributes as raw bytes (header, value, padding to 4).
fn raw_nla(kind: u16, value: &[u8]) -> Vec<u8> {
    let len = 4 + value.len();
    let mut v = Vec::with_capacity(len.next_multiple_of(4));
    v.extend_from_slice(&(len as u16).to_ne_bytes());
    v.extend_from_slice(&kind.to_ne_bytes());
    v.extend_from_slice(value);
    v.resize(len.next_multiple_of(4), 0);
    v
}

/// The options of a `tbf`: `tc_tbf_qopt` (rate, peakrate, limit, buffer,
/// mtu), the burst in bytes, and the 64-bit rate where it needs one.
fn tbf_options(rate: u64, burst: u32, limit: u32) -> Vec<TcOption> {
    let mut parms = Vec::with_capacity(36);
    parms.extend_from_slice(&ratespec(rate));
    parms.extend_from_slice(&[0u8; 12]);
    parms.extend_from_slice(&limit.to_ne_bytes());
    // buffer and mtu in scheduler ticks: the kernel takes TCA_TBF_BURST
    // instead of buffer; mtu only matters with a peak rate.
    parms.extend_from_slice(&0u32.to_ne_bytes());
    parms.extend_from_slice(&0u32.to_ne_bytes());
    let mut v = vec![
        TcOption::Other(nla(TCA_TBF_PARMS, parms)),
        TcOption::Other(nla(TCA_TBF_BURST, burst.to_ne_bytes().to_vec())),
    ];
    if rate > u64::from(u32::MAX) {
        v.push(TcOption::Other(nla(
            TCA_TBF_RATE64,
            rate.to_ne_bytes().to_vec(),
        )));
    }
    v
}

/// The options of a `netem`: `tc_netem_qopt` (latency, limit, loss, gap,
/// duplicate, jitter; the first and last in old ticks, left 0 since the
/// 64-bit nanosecond attributes follow), then the attributes.
fn netem_options(delay_us: u64, jitter_us: u64, loss: u32, rate: u64, limit: u32) -> Vec<u8> {
    let mut v = Vec::new();
    for x in [0u32, limit, loss, 0, 0, 0] {
        v.extend_from_slice(&x.to_ne_bytes());
    }
    let ns = |us: u64| (us.saturating_mul(1000) as i64).to_ne_bytes();
    v.extend(raw_nla(TCA_NETEM_LATENCY64, &ns(delay_us)));
    v.extend(raw_nla(TCA_NETEM_JITTER64, &ns(jitter_us)));
    if rate > 0 {
        // struct tc_netem_rate: rate (u32), packet_overhead, cell_size, cell_overhead.
        let mut r = Vec::new();
        r.extend_from_slice(&u32::try_from(rate).unwrap_or(u32::MAX).to_ne_bytes());
        r.extend_from_slice(&[0u8; 12]);
        v.extend(raw_nla(TCA_NETEM_RATE, &r));
        if rate > u64::from(u32::MAX) {
            v.extend(raw_nla(TCA_NETEM_RATE64, &rate.to_ne_bytes()));
        }
    }
    v
}

/// The options of the root `htb`: `tc_htb_glob` (version, rate2quantum,
/// defcls, debug, direct_pkts).
fn htb_init(default_minor: u32) -> Vec<TcOption> {
    let mut g = Vec::with_capacity(20);
    for x in [TC_HTB_PROTOVER, 10, default_minor, 0, 0] {
        g.extend_from_slice(&x.to_ne_bytes());
    }
    vec![TcOption::Other(nla(TCA_HTB_INIT, g))]
}

/// The options of an htb class: `tc_htb_opt` (rate, ceil, buffer and
/// cbuffer in scheduler ticks, quantum 0: the kernel derives it, level,
/// prio), and the 64-bit rates where they need them.
fn htb_class_options(rate: u64, burst: u32) -> Vec<TcOption> {
    let ticks = (u128::from(burst) * 1_000_000_000 / u128::from(rate.max(1)) / NS_PER_TICK)
        .min(u128::from(u32::MAX)) as u32;
    let mut o = Vec::with_capacity(44);
    o.extend_from_slice(&ratespec(rate));
    o.extend_from_slice(&ratespec(rate));
    for x in [ticks, ticks, 0, 0, 0] {
        o.extend_from_slice(&x.to_ne_bytes());
    }
    let mut v = vec![TcOption::Other(nla(TCA_HTB_PARMS, o))];
    if rate > u64::from(u32::MAX) {
        v.push(TcOption::Other(nla(
            TCA_HTB_RATE64,
            rate.to_ne_bytes().to_vec(),
        )));
        v.push(TcOption::Other(nla(
            TCA_HTB_CEIL64,
            rate.to_ne_bytes().to_vec(),
        )));
    }
    v
}

/// A qdisc's kind and options, as attributes.
fn qdisc_attributes(qdisc: &Qdisc) -> Vec<TcAttribute> {
    match qdisc {
        Qdisc::Tbf { rate, burst, limit } => vec![
            TcAttribute::Kind("tbf".into()),
            TcAttribute::Options(tbf_options(*rate, *burst, *limit)),
        ],
        Qdisc::Htb { default_minor } => vec![
            TcAttribute::Kind("htb".into()),
            TcAttribute::Options(htb_init(*default_minor)),
        ],
        // bfifo's options are a bare `tc_fifo_qopt` (limit), not nested.
        Qdisc::Bfifo { limit } => vec![
            TcAttribute::Kind("bfifo".into()),
            TcAttribute::Other(nla(TCA_OPTIONS, limit.to_ne_bytes().to_vec())),
        ],
        Qdisc::Netem {
            delay_us,
            jitter_us,
            loss,
            rate,
            limit,
        } => vec![
            TcAttribute::Kind("netem".into()),
            TcAttribute::Other(nla(
                TCA_OPTIONS,
                netem_options(*delay_us, *jitter_us, *loss, *rate, *limit),
            )),
        ],
    }
}

fn header(index: u32, handle: TcHandle, parent: TcHandle, info: u32) -> TcHeader {
    TcHeader {
        family: AddressFamily::Unspec,
        index: index as i32,
        handle,
        parent,
        info,
    }
}

/// The message of a request, and what it is.
pub fn message(req: &TcRequest) -> (TcVerb, TcMessage) {
    let mut m = TcMessage::default();
    let verb = match req {
        TcRequest::ReplaceRoot { index, qdisc } => {
            let handle = match qdisc {
                Qdisc::Htb { .. } => TcHandle { major: 1, minor: 0 },
                _ => TcHandle::UNSPEC,
            };
            m.header = header(*index, handle, TcHandle::ROOT, 0);
            m.attributes = qdisc_attributes(qdisc);
            TcVerb::NewQdisc
        }
        TcRequest::ReplaceHtbClass {
            index,
            minor,
            rate,
            burst,
        } => {
            m.header = header(
                *index,
                TcHandle {
                    major: 1,
                    minor: *minor as u16,
                },
                TcHandle { major: 1, minor: 0 },
                0,
            );
            m.attributes.push(TcAttribute::Kind("htb".into()));
            m.attributes
                .push(TcAttribute::Options(htb_class_options(*rate, *burst)));
            TcVerb::NewClass
        }
        TcRequest::ReplaceLeaf {
            index,
            parent_minor,
            major,
            qdisc,
        } => {
            m.header = header(
                *index,
                TcHandle {
                    major: *major,
                    minor: 0,
                },
                TcHandle {
                    major: 1,
                    minor: *parent_minor as u16,
                },
                0,
            );
            m.attributes = qdisc_attributes(qdisc);
            TcVerb::NewQdisc
        }
        TcRequest::DeleteRoot { index } => {
            m.header = header(*index, TcHandle::UNSPEC, TcHandle::ROOT, 0);
            TcVerb::DelQdisc
        }
        TcRequest::AddClsact { index } => {
            m.header = header(
                *index,
                TcHandle {
                    major: 0xffff,
                    minor: 0,
                },
                TcHandle::CLSACT,
                0,
            );
            m.attributes.push(TcAttribute::Kind("clsact".into()));
            TcVerb::NewQdisc
        }
        TcRequest::DeleteClsact { index } => {
            m.header = header(
                *index,
                TcHandle {
                    major: 0xffff,
                    minor: 0,
                },
                TcHandle::CLSACT,
                0,
            );
            m.attributes.push(TcAttribute::Kind("clsact".into()));
            TcVerb::DelQdisc
        }
        TcRequest::AddEgressBpf {
            index,
            prog_fd,
            name,
        } => {
            // info: priority 1 in the high half, the protocol in the low.
            m.header = header(
                *index,
                TcHandle::UNSPEC,
                CLSACT_EGRESS,
                (1 << 16) | u32::from(ETH_P_ALL_BE),
            );
            m.attributes.push(TcAttribute::Kind("bpf".into()));
            m.attributes.push(TcAttribute::Options(vec![
                TcOption::Bpf(TcFilterBpfOption::ProgFd(*prog_fd)),
                TcOption::Bpf(TcFilterBpfOption::ProgName(name.clone())),
                TcOption::Bpf(TcFilterBpfOption::Flags(TcBpfFlags::DirectAction)),
            ]));
            TcVerb::NewFilter
        }
    };
    (verb, m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtnetlink::packet_core::Emitable;

    fn bytes(m: &TcMessage) -> Vec<u8> {
        let mut b = vec![0u8; m.buffer_len()];
        m.emit(&mut b);
        b
    }

    /// The attribute `kind` at the top level of an emitted message (after
    /// the 20-byte tcmsg header).
    /// The tcmsg's handle and parent.
    fn handle_parent(b: &[u8]) -> (u32, u32) {
        let word = |at: usize| u32::from_ne_bytes(b[at..at + 4].try_into().unwrap());
        (word(8), word(12))
    }

    fn attr(b: &[u8], kind: u16) -> Option<Vec<u8>> {
        let mut at = 20;
        while at + 4 <= b.len() {
            let len = u16::from_ne_bytes([b[at], b[at + 1]]) as usize;
            let k = u16::from_ne_bytes([b[at + 2], b[at + 3]]) & 0x3fff;
            if k == kind {
                return Some(b[at + 4..at + len].to_vec());
            }
            at += len.next_multiple_of(4);
        }
        None
    }

    fn nested(b: &[u8], kind: u16) -> Option<Vec<u8>> {
        let mut at = 0;
        while at + 4 <= b.len() {
            let len = u16::from_ne_bytes([b[at], b[at + 1]]) as usize;
            let k = u16::from_ne_bytes([b[at + 2], b[at + 3]]) & 0x3fff;
            if k == kind {
                return Some(b[at + 4..at + len].to_vec());
            }
            at += len.next_multiple_of(4);
        }
        None
    }

    #[test]
    fn a_tbf_is_a_root_qdisc_with_an_ethernet_rate_and_a_burst() {
        let (verb, m) = message(&TcRequest::ReplaceRoot {
            index: 7,
            qdisc: Qdisc::Tbf {
                rate: 1_250_000,
                burst: 12_500,
                limit: 75_000,
            },
        });
        assert_eq!(verb, TcVerb::NewQdisc);
        let b = bytes(&m);
        // tcmsg: family, pad, ifindex 7, handle the kernel's, parent root.
        assert_eq!(b[0], 0);
        assert_eq!(i32::from_ne_bytes(b[4..8].try_into().unwrap()), 7);
        assert_eq!(handle_parent(&b), (0, 0xffff_ffff));
        assert_eq!(attr(&b, 1).unwrap(), b"tbf\0");
        let opts = attr(&b, TCA_OPTIONS).unwrap();
        let parms = nested(&opts, TCA_TBF_PARMS).unwrap();
        assert_eq!(parms.len(), 36);
        assert_eq!(parms[1], TC_LINKLAYER_ETHERNET);
        assert_eq!(
            u32::from_ne_bytes(parms[8..12].try_into().unwrap()),
            1_250_000
        );
        assert_eq!(
            u32::from_ne_bytes(parms[24..28].try_into().unwrap()),
            75_000
        );
        let burst = nested(&opts, TCA_TBF_BURST).unwrap();
        assert_eq!(u32::from_ne_bytes(burst[..].try_into().unwrap()), 12_500);
        assert!(nested(&opts, TCA_TBF_RATE64).is_none());
    }

    #[test]
    fn an_htb_is_a_root_a_class_and_a_bfifo_leaf() {
        let (verb, m) = message(&TcRequest::ReplaceRoot {
            index: 7,
            qdisc: Qdisc::Htb { default_minor: 1 },
        });
        assert_eq!(verb, TcVerb::NewQdisc);
        let b = bytes(&m);
        assert_eq!(handle_parent(&b), (0x0001_0000, 0xffff_ffff));
        assert_eq!(attr(&b, 1).unwrap(), b"htb\0");
        let opts = attr(&b, TCA_OPTIONS).unwrap();
        let glob = nested(&opts, TCA_HTB_INIT).unwrap();
        let words: Vec<u32> = glob
            .chunks(4)
            .map(|c| u32::from_ne_bytes(c.try_into().unwrap()))
            .collect();
        // version 3, rate2quantum 10, default class 1:1, debug, direct_pkts.
        assert_eq!(words, [3, 10, 1, 0, 0]);

        let (verb, m) = message(&TcRequest::ReplaceHtbClass {
            index: 7,
            minor: 1,
            rate: 1_250_000,
            burst: 12_500,
        });
        assert_eq!(verb, TcVerb::NewClass);
        let b = bytes(&m);
        // classid 1:1, parent 1:0.
        assert_eq!(handle_parent(&b), (0x0001_0001, 0x0001_0000));
        assert_eq!(attr(&b, 1).unwrap(), b"htb\0");
        let opts = attr(&b, TCA_OPTIONS).unwrap();
        let parms = nested(&opts, TCA_HTB_PARMS).unwrap();
        assert_eq!(parms.len(), 44);
        let word = |at: usize| u32::from_ne_bytes(parms[at..at + 4].try_into().unwrap());
        // rate and ceil: ethernet rate specs of 1.25 MB/s.
        assert_eq!((parms[1], word(8)), (TC_LINKLAYER_ETHERNET, 1_250_000));
        assert_eq!((parms[13], word(20)), (TC_LINKLAYER_ETHERNET, 1_250_000));
        // buffer and cbuffer: 12500 bytes at 1.25 MB/s = 10 ms = 156250 ticks of 64 ns.
        assert_eq!((word(24), word(28)), (156_250, 156_250));
        // quantum (the kernel's), level, prio.
        assert_eq!((word(32), word(36), word(40)), (0, 0, 0));
        assert!(nested(&opts, TCA_HTB_RATE64).is_none());

        let (_, m) = message(&TcRequest::ReplaceHtbClass {
            index: 7,
            minor: 1,
            rate: 5_000_000_000,
            burst: 50_000_000,
        });
        let opts = attr(&bytes(&m), TCA_OPTIONS).unwrap();
        let r64 = nested(&opts, TCA_HTB_RATE64).unwrap();
        assert_eq!(
            u64::from_ne_bytes(r64[..].try_into().unwrap()),
            5_000_000_000
        );
        assert!(nested(&opts, TCA_HTB_CEIL64).is_some());

        let (verb, m) = message(&TcRequest::ReplaceLeaf {
            index: 7,
            parent_minor: 1,
            major: 10,
            qdisc: Qdisc::Bfifo { limit: 75_000 },
        });
        assert_eq!(verb, TcVerb::NewQdisc);
        let b = bytes(&m);
        // handle 10:0, parent 1:1.
        assert_eq!(handle_parent(&b), (0x000a_0000, 0x0001_0001));
        assert_eq!(attr(&b, 1).unwrap(), b"bfifo\0");
        // tc_fifo_qopt, not nested.
        assert_eq!(attr(&b, TCA_OPTIONS).unwrap(), 75_000u32.to_ne_bytes());
    }

    #[test]
    fn a_fast_tbf_carries_the_64_bit_rate() {
        let (_, m) = message(&TcRequest::ReplaceRoot {
            index: 1,
            qdisc: Qdisc::Tbf {
                rate: 10_000_000_000,
                burst: 1 << 20,
                limit: 1 << 22,
            },
        });
        let opts = attr(&bytes(&m), TCA_OPTIONS).unwrap();
        let r = nested(&opts, TCA_TBF_RATE64).unwrap();
        assert_eq!(
            u64::from_ne_bytes(r[..].try_into().unwrap()),
            10_000_000_000
        );
    }

    #[test]
    fn netem_options_are_the_qopt_struct_then_nanosecond_attributes() {
        let (verb, m) = message(&TcRequest::ReplaceRoot {
            index: 3,
            qdisc: Qdisc::Netem {
                delay_us: 20_000,
                jitter_us: 5_000,
                loss: 1 << 30,
                rate: 0,
                limit: 1000,
            },
        });
        assert_eq!(verb, TcVerb::NewQdisc);
        let b = bytes(&m);
        assert_eq!(attr(&b, 1).unwrap(), b"netem\0");
        let o = attr(&b, TCA_OPTIONS).unwrap();
        // tc_netem_qopt: latency, limit, loss, gap, duplicate, jitter.
        assert_eq!(u32::from_ne_bytes(o[4..8].try_into().unwrap()), 1000);
        assert_eq!(u32::from_ne_bytes(o[8..12].try_into().unwrap()), 1 << 30);
        let rest = &o[24..];
        let lat = nested(rest, TCA_NETEM_LATENCY64).unwrap();
        assert_eq!(i64::from_ne_bytes(lat[..].try_into().unwrap()), 20_000_000);
        let jit = nested(rest, TCA_NETEM_JITTER64).unwrap();
        assert_eq!(i64::from_ne_bytes(jit[..].try_into().unwrap()), 5_000_000);
        assert!(nested(rest, TCA_NETEM_RATE).is_none());
    }

    #[test]
    fn the_loss_filter_is_direct_action_bpf_on_the_egress_hook() {
        let (verb, m) = message(&TcRequest::AddEgressBpf {
            index: 4,
            prog_fd: 9,
            name: "loss".into(),
        });
        assert_eq!(verb, TcVerb::NewFilter);
        let b = bytes(&m);
        assert_eq!(
            u32::from_ne_bytes(b[12..16].try_into().unwrap()),
            0xffff_fff3
        );
        assert_eq!(
            u32::from_ne_bytes(b[16..20].try_into().unwrap()),
            0x0001_0300
        );
        assert_eq!(attr(&b, 1).unwrap(), b"bpf\0");
        let o = attr(&b, TCA_OPTIONS).unwrap();
        assert_eq!(nested(&o, 6).unwrap(), 9u32.to_ne_bytes()); // TCA_BPF_FD
        assert_eq!(nested(&o, 8).unwrap(), 1u32.to_ne_bytes()); // TCA_BPF_FLAGS: direct action
        let (verb, m) = message(&TcRequest::AddClsact { index: 4 });
        assert_eq!(verb, TcVerb::NewQdisc);
        let b = bytes(&m);
        assert_eq!(handle_parent(&b), (0xffff_0000, 0xffff_fff1));
        assert_eq!(attr(&b, 1).unwrap(), b"clsact\0");
    }
}
