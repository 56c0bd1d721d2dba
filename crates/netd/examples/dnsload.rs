//! dnsload: a small DNS load generator for bench/dns-qps.sh. Each client is
//! a thread with its own connected UDP socket and a fixed window: it keeps
//! exactly `--inflight` queries outstanding, sending a batch with one
//! `sendmmsg` to refill the window for every batch of replies one
//! `recvmmsg` takes. A window that gets no reply for 200 ms is counted as
//! lost and refilled. (dnsperf 2.10 stalls at 10 in flight: its sender waits
//! on its receiver; this one does not.)
//!
//! Usage: dnsload SERVER:PORT NAME TYPE(A|AAAA) CLIENTS INFLIGHT SECS
//! Prints one JSON line: {"qps": .., "sent": .., "answered": .., "ok": .., "lost": ..}
//! (`ok`: replies with NOERROR and at least one answer of the asked type).

use std::io::{IoSlice, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use nix::sys::socket::{
    recvmmsg, sendmmsg, ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage,
};

const BATCH: usize = 64;
const BUF: usize = 1500;

fn query(name: &str, qtype: u16) -> Vec<u8> {
    let mut q = vec![0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    q
}

#[derive(Default, Clone, Copy)]
struct Counts {
    sent: u64,
    answered: u64,
    ok: u64,
    lost: u64,
}

fn client(server: SocketAddr, q: Vec<u8>, inflight: usize, until: Instant) -> Counts {
    let bind: SocketAddr = if server.is_ipv6() {
        "[::]:0".parse().unwrap()
    } else {
        "0.0.0.0:0".parse().unwrap()
    };
    let sock = UdpSocket::bind(bind).expect("bind");
    sock.connect(server).expect("connect");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let fd = sock.as_raw_fd();
    let mut c = Counts::default();
    let mut outstanding = 0usize;
    let mut id: u16 = 0;
    let mut tx = vec![q.clone(); BATCH];
    let mut rx = vec![[0u8; BUF]; BATCH];
    let mut txh: MultiHeaders<SockaddrStorage> = MultiHeaders::preallocate(BATCH, None);
    let mut rxh: MultiHeaders<SockaddrStorage> = MultiHeaders::preallocate(BATCH, None);
    let addrs: Vec<Option<SockaddrStorage>> = vec![None; BATCH];
    let no_cmsgs: [ControlMessage<'_>; 0] = [];
    while Instant::now() < until {
        // Refill the window.
        while outstanding < inflight {
            let n = (inflight - outstanding).min(BATCH);
            for p in tx.iter_mut().take(n) {
                id = id.wrapping_add(1);
                p[..2].copy_from_slice(&id.to_be_bytes());
            }
            let iovs: Vec<[IoSlice<'_>; 1]> =
                tx.iter().take(n).map(|p| [IoSlice::new(p)]).collect();
            match sendmmsg(
                fd,
                &mut txh,
                iovs.iter(),
                &addrs[..n],
                no_cmsgs,
                MsgFlags::empty(),
            ) {
                Ok(sent) => {
                    let k = sent.count();
                    outstanding += k;
                    c.sent += k as u64;
                    if k == 0 {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        let got: Option<Vec<usize>> = {
            let mut iovs: Vec<[IoSliceMut<'_>; 1]> = rx
                .iter_mut()
                .map(|b| [IoSliceMut::new(&mut b[..])])
                .collect();
            recvmmsg(
                fd,
                &mut rxh,
                iovs.iter_mut(),
                MsgFlags::MSG_WAITFORONE,
                None,
            )
            .ok()
            .map(|msgs| msgs.map(|m| m.bytes).collect())
        };
        let Some(lens) = got else {
            // Nothing for 200 ms: the window is lost; start over.
            c.lost += outstanding as u64;
            outstanding = 0;
            continue;
        };
        for (i, len) in lens.iter().enumerate() {
            let p = &rx[i][..*len];
            if p.len() < 12 || p[2] & 0x80 == 0 {
                continue;
            }
            c.answered += 1;
            outstanding = outstanding.saturating_sub(1);
            let rcode = p[3] & 0x0f;
            let ancount = u16::from_be_bytes([p[6], p[7]]);
            if rcode == 0 && ancount > 0 {
                c.ok += 1;
            }
        }
    }
    c
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 7 {
        eprintln!("usage: dnsload SERVER:PORT NAME A|AAAA CLIENTS INFLIGHT SECS");
        std::process::exit(2);
    }
    let server: SocketAddr = args[1].parse().expect("SERVER:PORT");
    let qtype = match args[3].as_str() {
        "A" => 1,
        "AAAA" => 28,
        t => panic!("type {t}"),
    };
    let clients: usize = args[4].parse().expect("CLIENTS");
    let inflight: usize = args[5].parse().expect("INFLIGHT");
    let secs: f64 = args[6].parse().expect("SECS");
    let q = query(&args[2], qtype);
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(secs);
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let q = q.clone();
            std::thread::spawn(move || client(server, q, inflight, until))
        })
        .collect();
    let mut t = Counts::default();
    for h in threads {
        let c = h.join().expect("client thread");
        t.sent += c.sent;
        t.answered += c.answered;
        t.ok += c.ok;
        t.lost += c.lost;
    }
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "{{\"qps\": {:.0}, \"sent\": {}, \"answered\": {}, \"ok\": {}, \"lost\": {}, \"secs\": {:.3}}}",
        t.answered as f64 / elapsed,
        t.sent,
        t.answered,
        t.ok,
        t.lost,
        elapsed
    );
}
