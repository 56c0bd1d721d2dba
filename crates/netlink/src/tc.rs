//! Traffic control: the few qdiscs and filters netspawn's link impairments
//! use, as plain values ([`TcRequest`]) and the netlink messages they
//! become ([`message`], pure, so their bytes are unit-tested here).
//!
//! - a root `tbf` for a rate limit (`TCA_TBF_PARMS` with an
//!   ethernet-aware rate spec, so no rate table is needed, and
//!   `TCA_TBF_BURST`/`TCA_TBF_RATE64`);
//! - a root `netem` for delay, jitter, loss and rate (its options are a
//!   `struct tc_netem_qopt` followed by nested attributes, as `tc` sends
//!   them); kernels without `sch_netem` refuse it with `ENOENT`;
//! - `clsact` and a direct-action `bpf` filter on its egress hook (loss by a
//!   small BPF program whose descriptor the caller loaded).
//!
//! netlink-packet-route has no tbf or netem types: their options are
//! written here, field by field, after the kernel's `pkt_sched.h`.

use rtnetlink::packet_core::DefaultNla;
use rtnetlink::packet_route::tc::{
    TcAttribute, TcBpfFlags, TcFilterBpfOption, TcHandle, TcHeader, TcMessage, TcOption,
};
use rtnetlink::packet_route::AddressFamily;

/// A root qdisc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Qdisc {
    /// Token bucket: `rate` bytes per second, `burst` bytes, a queue of
    /// `limit` bytes.
    Tbf { rate: u64, burst: u32, limit: u32 },
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
    /// Puts `qdisc` at the root (replacing what is there).
    ReplaceRoot { index: u32, qdisc: Qdisc },
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
            m.header = header(*index, TcHandle { major: 1, minor: 0 }, TcHandle::ROOT, 0);
            match qdisc {
                Qdisc::Tbf { rate, burst, limit } => {
                    m.attributes.push(TcAttribute::Kind("tbf".into()));
                    m.attributes
                        .push(TcAttribute::Options(tbf_options(*rate, *burst, *limit)));
                }
                Qdisc::Netem {
                    delay_us,
                    jitter_us,
                    loss,
                    rate,
                    limit,
                } => {
                    m.attributes.push(TcAttribute::Kind("netem".into()));
                    m.attributes.push(TcAttribute::Other(nla(
                        TCA_OPTIONS,
                        netem_options(*delay_us, *jitter_us, *loss, *rate, *limit),
                    )));
                }
            }
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
        // tcmsg: family, pad, ifindex 7, handle 1:0, parent root.
        assert_eq!(b[0], 0);
        assert_eq!(i32::from_ne_bytes(b[4..8].try_into().unwrap()), 7);
        assert_eq!(
            u32::from_ne_bytes(b[8..12].try_into().unwrap()),
            0x0001_0000
        );
        assert_eq!(
            u32::from_ne_bytes(b[12..16].try_into().unwrap()),
            0xffff_ffff
        );
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
        assert_eq!(
            u32::from_ne_bytes(b[8..12].try_into().unwrap()),
            0xffff_0000
        );
        assert_eq!(
            u32::from_ne_bytes(b[12..16].try_into().unwrap()),
            0xffff_fff1
        );
        assert_eq!(attr(&b, 1).unwrap(), b"clsact\0");
    }
}
