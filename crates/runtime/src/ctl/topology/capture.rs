//! `netspawnctl capture [LAB] MACHINE:IFNAME [-w FILE.pcapng] [-c N]`:
//! every frame on one end of a link, written as pcapng, with no tool inside
//! the machine. A packet socket (`AF_PACKET`, all protocols, both
//! directions) is made inside the machine's network namespace and bound to
//! the interface; it ends on SIGINT/SIGTERM, after N frames, or when the
//! machine goes. The file reads with `tcpdump -r` and `tshark -r`.
//!
//! [`Pcapng`] writes the blocks (section header, one interface description,
//! enhanced packets); pure, tested byte by byte.

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use netlink::{Netlink, Rtnl};

use super::TopoError;

/// The largest frame kept whole.
pub const SNAPLEN: u32 = 262_144;
const LINKTYPE_ETHERNET: u16 = 1;

/// A pcapng stream being written.
pub struct Pcapng<W: Write> {
    out: W,
}

fn pad4(n: usize) -> usize {
    n.next_multiple_of(4)
}

impl<W: Write> Pcapng<W> {
    /// Starts a stream: the section header and the interface `ifname`
    /// (Ethernet, microsecond timestamps).
    pub fn new(mut out: W, ifname: &str) -> std::io::Result<Pcapng<W>> {
        // Section Header Block.
        let mut b = Vec::new();
        b.extend_from_slice(&0x0A0D_0D0Au32.to_le_bytes());
        b.extend_from_slice(&28u32.to_le_bytes());
        b.extend_from_slice(&0x1A2B_3C4Du32.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(&(-1i64).to_le_bytes());
        b.extend_from_slice(&28u32.to_le_bytes());
        // Interface Description Block, with if_name.
        let name = ifname.as_bytes();
        let opts = 4 + pad4(name.len()) + 4;
        let len = (20 + opts) as u32;
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&len.to_le_bytes());
        b.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(&SNAPLEN.to_le_bytes());
        b.extend_from_slice(&2u16.to_le_bytes()); // if_name
        b.extend_from_slice(&(name.len() as u16).to_le_bytes());
        b.extend_from_slice(name);
        b.resize(b.len() + pad4(name.len()) - name.len(), 0);
        b.extend_from_slice(&[0u8; 4]); // opt_endofopt
        b.extend_from_slice(&len.to_le_bytes());
        out.write_all(&b)?;
        out.flush()?;
        Ok(Pcapng { out })
    }

    /// One frame seen at `micros` since the epoch (`orig_len` on the wire).
    pub fn packet(&mut self, micros: u64, data: &[u8], orig_len: usize) -> std::io::Result<()> {
        let cap = data.len().min(SNAPLEN as usize);
        let len = (32 + pad4(cap)) as u32;
        let mut b = Vec::with_capacity(len as usize);
        b.extend_from_slice(&6u32.to_le_bytes());
        b.extend_from_slice(&len.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes()); // interface 0
        b.extend_from_slice(&((micros >> 32) as u32).to_le_bytes());
        b.extend_from_slice(&(micros as u32).to_le_bytes());
        b.extend_from_slice(&(cap as u32).to_le_bytes());
        b.extend_from_slice(&(orig_len as u32).to_le_bytes());
        b.extend_from_slice(&data[..cap]);
        b.resize(b.len() + pad4(cap) - cap, 0);
        b.extend_from_slice(&len.to_le_bytes());
        self.out.write_all(&b)?;
        self.out.flush()
    }
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// A packet socket for every protocol, made inside `netns` and bound to
/// interface `index` there.
fn packet_socket(netns: std::os::fd::BorrowedFd<'_>, index: u32) -> Result<OwnedFd, String> {
    let proto = (libc::ETH_P_ALL as u16).to_be();
    let fd = netlink::in_netns(netns, || {
        // SAFETY: plain socket(2); the result is checked.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::c_int::from(proto),
            )
        };
        if fd < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            // SAFETY: a descriptor we just made and own alone.
            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
        }
    })
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("make a packet socket: {e}"))?;
    // SAFETY: sockaddr_ll is plain data; zeroed is valid.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto;
    sll.sll_ifindex = index as i32;
    // SAFETY: bind(2) with a valid sockaddr_ll and its size.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(format!(
            "bind the packet socket: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(fd)
}

/// What `capture` was asked.
#[derive(Debug, Clone)]
pub struct CaptureOptions {
    /// `MACHINE:IFNAME`, or with `lab`, the machine's name in the lab.
    pub endpoint: String,
    pub lab: Option<String>,
    /// Where to write; `-` or none is standard output.
    pub write: Option<std::path::PathBuf>,
    /// Stop after this many frames.
    pub count: Option<u64>,
}

/// `capture`.
pub fn capture(o: &CaptureOptions) -> Result<i32, TopoError> {
    let (m, ifname) = o.endpoint.split_once(':').ok_or_else(|| {
        TopoError::Usage(format!(
            "'{}' is not MACHINE:INTERFACE (e.g. r1:eth1)",
            o.endpoint
        ))
    })?;
    let lab = match &o.lab {
        // A topology file names its lab; a plain word is the lab's name.
        Some(l) if super::is_topology_file(l) => Some(super::load(Path::new(l))?.name),
        Some(l) => Some(l.clone()),
        None => None,
    };
    let machine = match lab {
        Some(l) => format!("{l}-{m}"),
        None => m.to_string(),
    };
    let entry = crate::ctl::registry()
        .get(&machine)
        .ok()
        .flatten()
        .ok_or_else(|| TopoError::Usage(format!("No machine '{machine}' known")))?;
    let ns = super::links::netns_of(entry.leader)?;
    let index = Netlink::open_in(ns.as_fd())?
        .link(ifname)?
        .ok_or_else(|| {
            TopoError::Usage(format!("machine '{machine}' has no interface '{ifname}'"))
        })?
        .index;
    let sock = packet_socket(ns.as_fd(), index).map_err(TopoError::Usage)?;
    drop(ns);
    let out: Box<dyn Write> = match &o.write {
        Some(p) if p != Path::new("-") => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).map_err(|err| TopoError::Io {
                what: "create",
                path: p.clone(),
                err,
            })?,
        )),
        _ => Box::new(std::io::stdout()),
    };
    let werr = |err: std::io::Error| TopoError::Io {
        what: "write",
        path: o.write.clone().unwrap_or_else(|| "standard output".into()),
        err,
    };
    let mut pcap = Pcapng::new(out, ifname).map_err(werr)?;
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let mut buf = vec![0u8; SNAPLEN as usize];
    let mut n = 0u64;
    eprintln!("capturing on {machine}:{ifname}");
    while !STOP.load(Ordering::SeqCst) && o.count.is_none_or(|c| n < c) {
        let mut pfd = libc::pollfd {
            fd: sock.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, 200) };
        if r <= 0 {
            // The machine (and its interface) gone: stop.
            if !super::links::netns_of(entry.leader).is_ok_and(|_| entry.is_alive()) {
                break;
            }
            continue;
        }
        // SAFETY: recv(2) into our buffer; MSG_TRUNC gives the frame's
        // full length.
        let got = unsafe {
            libc::recv(
                sock.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_TRUNC | libc::MSG_DONTWAIT,
            )
        };
        if got < 0 {
            let e = std::io::Error::last_os_error();
            if matches!(
                e.kind(),
                std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock
            ) {
                continue;
            }
            // ENETDOWN and the like: the interface went.
            break;
        }
        let orig = got as usize;
        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        pcap.packet(micros, &buf[..orig.min(buf.len())], orig)
            .map_err(werr)?;
        n += 1;
    }
    eprintln!("{n} frames captured");
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_laid_out_as_the_pcapng_spec_says() {
        let mut out = Vec::new();
        {
            let mut p = Pcapng::new(&mut out, "eth1").unwrap();
            p.packet(0x1_0000_0002, &[0xaa; 5], 60).unwrap();
        }
        // SHB.
        assert_eq!(&out[0..4], &[0x0a, 0x0d, 0x0d, 0x0a]);
        assert_eq!(u32::from_le_bytes(out[4..8].try_into().unwrap()), 28);
        assert_eq!(&out[8..12], &[0x4d, 0x3c, 0x2b, 0x1a]);
        assert_eq!(&out[24..28], &28u32.to_le_bytes());
        // IDB: type 1, length 32 (20 + if_name "eth1" 8 + end 4), Ethernet.
        let idb = &out[28..];
        assert_eq!(u32::from_le_bytes(idb[0..4].try_into().unwrap()), 1);
        let idb_len = u32::from_le_bytes(idb[4..8].try_into().unwrap()) as usize;
        assert_eq!(idb_len, 32);
        assert_eq!(u16::from_le_bytes(idb[8..10].try_into().unwrap()), 1);
        assert_eq!(&idb[16..20], &[2, 0, 4, 0]);
        assert_eq!(&idb[20..24], b"eth1");
        assert_eq!(&idb[idb_len - 4..idb_len], &32u32.to_le_bytes());
        // EPB: 32 + 8 (5 bytes padded), timestamp high/low, lengths.
        let epb = &out[28 + idb_len..];
        assert_eq!(u32::from_le_bytes(epb[0..4].try_into().unwrap()), 6);
        assert_eq!(u32::from_le_bytes(epb[4..8].try_into().unwrap()), 40);
        assert_eq!(u32::from_le_bytes(epb[12..16].try_into().unwrap()), 1);
        assert_eq!(u32::from_le_bytes(epb[16..20].try_into().unwrap()), 2);
        assert_eq!(u32::from_le_bytes(epb[20..24].try_into().unwrap()), 5);
        assert_eq!(u32::from_le_bytes(epb[24..28].try_into().unwrap()), 60);
        assert_eq!(&epb[28..33], &[0xaa; 5]);
        assert_eq!(&epb[33..36], &[0, 0, 0]);
        assert_eq!(&epb[36..40], &40u32.to_le_bytes());
        assert_eq!(epb.len(), 40);
    }
}
