//! The control protocol between `netspawn` and `netspawn-netd`: one request
//! per line on the Unix socket `<run_dir>/netd-NETNS.sock` (NETNS: the inode
//! of the network namespace netd serves), one answer line back.
//!
//! | request | answer |
//! |---|---|
//! | `PING` | `OK` |
//! | `LINK IFNAME TIMEOUT_MS` | `OK address=A/N` once netd has configured the link (or the zone bridge it is a member of), `OK unmanaged` when no network template matches, `ERR ...` |
//! | `PORTS OWNER IFNAME MAC PROTO:HOST:CONTAINER...` | `OK` when the forwards are registered (installed as soon as the container's address is known), `ERR ...` if a port is taken |
//! | `RELEASE OWNER` | `OK` |
//! | `FORWARDS OWNER PROTO:HOST:CONTAINER...` | `OK` when netd's table has each of these forwards of OWNER's installed (to its address), `ERR ...` naming one that is not |
//! | `LINKDHCP IFNAME TIMEOUT_MS HEX` | `LINK` and `DHCPMSG` in one: the DHCP message HEX goes to the link's server as soon as that exists, while netd finishes the link; once the link is configured, `OK address=A/N packet=HEX` (the host side's address and the server's answer), `OK address=A/N` when the server sent nothing back, dropped the message or did not answer before the timeout, `OK unmanaged`, `ERR ...` as for `LINK` |
//! | `DHCPMSG IFNAME HEX` | `OK packet=HEX`: the answer of the DHCP server netd runs for IFNAME (the link, or the zone bridge it is a port of) to the DHCP message HEX, as if it had come on the link, at once (also while netd is still configuring the link, once its server exists); `OK` when the server sends nothing back; `ERR ...` when it dropped the message or netd serves no DHCP there (yet) |
//! | `RELOAD` | `OK` once the `.network` files are read again (they apply to links configured from then on; links served already keep theirs), `ERR FILE:LINE: ...` if one is invalid (the files in effect stay) |
//!
//! Any request may be answered `ERR message` (a malformed one always is).
//!
//! Words are separated by single spaces and may not contain spaces or
//! newlines (interface and machine names cannot). Both sides speak it
//! through the typed [`Request`] and [`Answer`]; neither looks at the text.

use std::net::IpAddr;
use std::path::PathBuf;

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Ping,
    Link {
        ifname: String,
        timeout_ms: u64,
    },
    Ports {
        owner: String,
        ifname: String,
        mac: String,
        forwards: Vec<Forward>,
    },
    Release {
        owner: String,
    },
    /// Whether the forwards are installed (the CNI plugin's CHECK).
    Forwards {
        owner: String,
        forwards: Vec<Forward>,
    },
    /// Read the `.network` files again (`networkctl reload`).
    Reload,
    /// Why a client on the link netd serves DHCP on (a `ve-` link, a zone's
    /// bridge) may have got no address lately: asked after a DHCP exchange
    /// failed.
    Dhcp {
        ifname: String,
    },
    /// A DHCP message for the server of link `ifname` (the link's own, or
    /// its zone bridge's), handed over on this socket instead of the link:
    /// a launcher's DISCOVER with rapid commit, answered at once.
    DhcpMessage {
        ifname: String,
        packet: Vec<u8>,
    },
    /// `Link` and `DhcpMessage` in one (a launcher's DISCOVER with rapid
    /// commit for host0): the message goes to the link's server as soon as
    /// netd has made it, beside the link's last steps, and is answered with
    /// the link.
    LinkDhcp {
        ifname: String,
        timeout_ms: u64,
        packet: Vec<u8>,
    },
}

/// The longest DHCP message either way (an Ethernet frame's payload).
pub const MAX_DHCP_MESSAGE: usize = 1500;

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(s: &str) -> Result<Vec<u8>, String> {
    if !s.len().is_multiple_of(2)
        || s.len() / 2 > MAX_DHCP_MESSAGE
        || s.is_empty()
        || !s.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err("bad DHCP message".into());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            s.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| "bad DHCP message".to_string())
        })
        .collect()
}

/// One port forward: `tcp:8080:80`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    pub udp: bool,
    pub host_port: u16,
    pub container_port: u16,
}

impl std::fmt::Display for Forward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}",
            if self.udp { "udp" } else { "tcp" },
            self.host_port,
            self.container_port
        )
    }
}

fn word_ok(w: &str) -> bool {
    !w.is_empty() && w.len() <= 256 && !w.contains(char::is_whitespace)
}

/// `PROTO:HOST:CONTAINER` words.
fn parse_forwards(fwds: &[&str]) -> Result<Vec<Forward>, String> {
    let mut forwards = Vec::new();
    for f in fwds {
        let parts: Vec<&str> = f.split(':').collect();
        let [proto, h, c] = parts.as_slice() else {
            return Err(format!("bad forward {f:?}"));
        };
        let udp = match *proto {
            "tcp" => false,
            "udp" => true,
            _ => return Err(format!("bad protocol in {f:?}")),
        };
        let port = |p: &str| {
            p.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("bad port in {f:?}"))
        };
        forwards.push(Forward {
            udp,
            host_port: port(h)?,
            container_port: port(c)?,
        });
    }
    Ok(forwards)
}

impl Request {
    /// The request as one line (without the newline).
    pub fn to_line(&self) -> String {
        match self {
            Request::Ping => "PING".into(),
            Request::Reload => "RELOAD".into(),
            Request::Link { ifname, timeout_ms } => format!("LINK {ifname} {timeout_ms}"),
            Request::Ports {
                owner,
                ifname,
                mac,
                forwards,
            } => {
                let mut s = format!("PORTS {owner} {ifname} {mac}");
                for f in forwards {
                    s.push(' ');
                    s.push_str(&f.to_string());
                }
                s
            }
            Request::Release { owner } => format!("RELEASE {owner}"),
            Request::Dhcp { ifname } => format!("DHCP {ifname}"),
            Request::DhcpMessage { ifname, packet } => {
                format!("DHCPMSG {ifname} {}", to_hex(packet))
            }
            Request::LinkDhcp {
                ifname,
                timeout_ms,
                packet,
            } => format!("LINKDHCP {ifname} {timeout_ms} {}", to_hex(packet)),
            Request::Forwards { owner, forwards } => {
                let mut s = format!("FORWARDS {owner}");
                for f in forwards {
                    s.push(' ');
                    s.push_str(&f.to_string());
                }
                s
            }
        }
    }

    /// Parses one line; the error is the answer's message.
    pub fn parse(line: &str) -> Result<Request, String> {
        let line = line.trim_end_matches(['\r', '\n']);
        if line.len() > 4096 {
            return Err("request too long".into());
        }
        let words: Vec<&str> = line.split(' ').collect();
        // A DHCP message's hex is the one long word.
        let long_ok = |i: usize, w: &str| {
            let hex_at = match words[0] {
                "DHCPMSG" => 2,
                "LINKDHCP" => 3,
                _ => return false,
            };
            i == hex_at && !w.is_empty() && !w.contains(char::is_whitespace)
        };
        if words
            .iter()
            .enumerate()
            .skip(1)
            .any(|(i, w)| !word_ok(w) && !long_ok(i, w))
        {
            return Err("malformed request".into());
        }
        match words.as_slice() {
            ["PING"] => Ok(Request::Ping),
            ["RELOAD"] => Ok(Request::Reload),
            ["LINK", ifname, t] => Ok(Request::Link {
                ifname: ifname.to_string(),
                timeout_ms: t.parse().map_err(|_| "bad timeout")?,
            }),
            ["PORTS", owner, ifname, mac, fwds @ ..] => Ok(Request::Ports {
                owner: owner.to_string(),
                ifname: ifname.to_string(),
                mac: mac.to_string(),
                forwards: parse_forwards(fwds)?,
            }),
            ["FORWARDS", owner, fwds @ ..] => Ok(Request::Forwards {
                owner: owner.to_string(),
                forwards: parse_forwards(fwds)?,
            }),
            ["RELEASE", owner] => Ok(Request::Release {
                owner: owner.to_string(),
            }),
            ["DHCP", ifname] => Ok(Request::Dhcp {
                ifname: ifname.to_string(),
            }),
            ["DHCPMSG", ifname, hex] => Ok(Request::DhcpMessage {
                ifname: ifname.to_string(),
                packet: from_hex(hex)?,
            }),
            ["LINKDHCP", ifname, t, hex] => Ok(Request::LinkDhcp {
                ifname: ifname.to_string(),
                timeout_ms: t.parse().map_err(|_| "bad timeout")?,
                packet: from_hex(hex)?,
            }),
            _ => Err("unknown request".into()),
        }
    }
}

/// An address with its prefix length, as an answer carries it: `10.0.0.1/28`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let bad = || format!("bad address {s:?}");
        let (a, p) = s.split_once('/').ok_or_else(bad)?;
        let addr: IpAddr = a.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let prefix: u8 = p.parse().ok().filter(|n| *n <= max).ok_or_else(bad)?;
        Ok(Cidr { addr, prefix })
    }
}

/// A parsed answer: one line, `OK ...` or `ERR message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// `OK`: done (`PING`, `PORTS`, `RELEASE`, `RELOAD`).
    Ok,
    /// `OK address=A/N`: netd configured the link (or the bridge it is a
    /// member of); the host side's address with the subnet's prefix.
    Address(Cidr),
    /// `OK unmanaged`: no network template applies to the link.
    Unmanaged,
    /// `OK packet=HEX`: a DHCP server's answer to a `DHCPMSG`.
    Packet(Vec<u8>),
    /// `OK address=A/N packet=HEX`: `LINKDHCP`'s answer, the link's
    /// address and the DHCP server's answer.
    Leased { address: Cidr, packet: Vec<u8> },
    /// `OK note=TEXT`: done, with something to tell (`DHCP`: why clients
    /// got no address); the text is one line.
    Note(String),
    /// `ERR message`: the request failed; the message is one line.
    Err(String),
}

impl Answer {
    /// The answer as one line (without the newline). A message's line
    /// breaks become spaces, so an answer is always one line.
    pub fn to_line(&self) -> String {
        match self {
            Answer::Ok => "OK".into(),
            Answer::Address(a) => format!("OK address={a}"),
            Answer::Unmanaged => "OK unmanaged".into(),
            Answer::Packet(p) => format!("OK packet={}", to_hex(p)),
            Answer::Leased { address, packet } => {
                format!("OK address={address} packet={}", to_hex(packet))
            }
            Answer::Note(n) => format!("OK note={}", n.replace(['\n', '\r'], " ")),
            Answer::Err(m) => {
                let m = m.replace(['\n', '\r'], " ");
                if m.is_empty() {
                    "ERR".into()
                } else {
                    format!("ERR {m}")
                }
            }
        }
    }

    /// Parses one line; the error says what is wrong with it.
    pub fn parse(line: &str) -> Result<Answer, String> {
        let line = line.trim_end_matches(['\r', '\n']);
        if line.len() > 4096 {
            return Err("answer too long".into());
        }
        match line {
            "OK" => return Ok(Answer::Ok),
            "OK unmanaged" => return Ok(Answer::Unmanaged),
            "ERR" => return Ok(Answer::Err(String::new())),
            _ => {}
        }
        if let Some(a) = line.strip_prefix("OK address=") {
            if let Some((a, p)) = a.split_once(" packet=") {
                return Ok(Answer::Leased {
                    address: a.parse()?,
                    packet: from_hex(p)?,
                });
            }
            return a.parse().map(Answer::Address);
        }
        if let Some(p) = line.strip_prefix("OK packet=") {
            return from_hex(p).map(Answer::Packet);
        }
        if let Some(n) = line.strip_prefix("OK note=") {
            return Ok(Answer::Note(n.to_string()));
        }
        if let Some(m) = line.strip_prefix("ERR ") {
            return Ok(Answer::Err(m.to_string()));
        }
        Err(format!("unexpected answer {line:?}"))
    }
}

impl std::fmt::Display for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_line())
    }
}

/// Identifies the calling thread's network namespace (its inode number).
/// netd serves the links of one namespace, so its files carry this.
pub fn netns_id() -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/thread-self/ns/net")
        .map(|m| m.ino())
        .unwrap_or(0)
}

/// The control socket's path (for this network namespace's netd).
pub fn socket_path(paths: &crate::paths::Paths) -> PathBuf {
    paths.run_dir.join(format!("netd-{}.sock", netns_id()))
}

/// The single-instance lock's path.
pub fn lock_path(paths: &crate::paths::Paths) -> PathBuf {
    paths.run_dir.join(format!("netd-{}.lock", netns_id()))
}

/// The file holding the running netd's PID.
pub fn pid_path(paths: &crate::paths::Paths) -> PathBuf {
    paths.run_dir.join(format!("netd-{}.pid", netns_id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let reqs = [
            Request::Ping,
            Request::Reload,
            Request::Link {
                ifname: "ve-web".into(),
                timeout_ms: 3000,
            },
            Request::Ports {
                owner: "web".into(),
                ifname: "ve-web".into(),
                mac: "02:00:00:00:00:01".into(),
                forwards: vec![
                    Forward {
                        udp: false,
                        host_port: 8080,
                        container_port: 80,
                    },
                    Forward {
                        udp: true,
                        host_port: 53,
                        container_port: 5353,
                    },
                ],
            },
            Request::Release {
                owner: "web".into(),
            },
            Request::Dhcp {
                ifname: "vz-lab".into(),
            },
            Request::DhcpMessage {
                ifname: "vb-web".into(),
                packet: (0..=255).chain(0..44).collect(),
            },
            Request::Forwards {
                owner: "web".into(),
                forwards: vec![Forward {
                    udp: false,
                    host_port: 8080,
                    container_port: 80,
                }],
            },
            Request::LinkDhcp {
                ifname: "ve-web".into(),
                timeout_ms: 10_000,
                packet: (0..=255).chain(0..44).collect(),
            },
        ];
        for r in reqs {
            assert_eq!(Request::parse(&r.to_line()), Ok(r.clone()));
        }
        for bad in [
            "",
            "LINK",
            "LINK a",
            "LINK a b",
            "RELOAD now",
            "PORTS o i m tcp:0:1",
            "PORTS o i m sctp:1:1",
            "PORTS o i m tcp:1",
            "FORWARDS",
            "FORWARDS o tcp:0:1",
            "NOPE",
            "LINK  x 1",
            &"A".repeat(5000),
            "DHCPMSG vb-a",
            "DHCPMSG vb-a 0",
            "DHCPMSG vb-a 0g",
            "DHCPMSG vb-a +1",
            &format!("DHCPMSG vb-a {}", "00".repeat(MAX_DHCP_MESSAGE + 1)),
            "LINKDHCP ve-a 100",
            "LINKDHCP ve-a x 00",
            "LINKDHCP ve-a 100 0g",
            "LINKDHCP ve-a 100 00 00",
            "LINK ve-a 100 00",
        ] {
            assert!(Request::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn answers_round_trip_and_garbage() {
        let cidr = |s: &str| s.parse::<Cidr>().unwrap();
        let answers = [
            Answer::Ok,
            Answer::Unmanaged,
            Answer::Address(cidr("10.0.0.1/28")),
            Answer::Address(cidr("fd00::1/64")),
            Answer::Address(cidr("0.0.0.0/0")),
            Answer::Err("link ve-web was not configured in time".into()),
            Answer::Err(String::new()),
            Answer::Note("its pool has no free address".into()),
            Answer::Packet(vec![2, 1, 6, 0, 0xde, 0xad]),
            Answer::Leased {
                address: cidr("10.0.0.1/28"),
                packet: vec![2, 1, 6, 0, 0xbe, 0xef],
            },
        ];
        for a in answers {
            assert_eq!(Answer::parse(&a.to_line()), Ok(a.clone()), "{a}");
            assert_eq!(Answer::parse(&format!("{a}\r\n")), Ok(a.clone()));
        }
        // The lines netd has always sent.
        assert_eq!(
            Answer::parse("OK address=10.0.0.1/28"),
            Ok(Answer::Address(Cidr {
                addr: "10.0.0.1".parse().unwrap(),
                prefix: 28
            }))
        );
        assert_eq!(Answer::Ok.to_line(), "OK");
        assert_eq!(Answer::Unmanaged.to_line(), "OK unmanaged");
        assert_eq!(Answer::Err("a\nb".into()).to_line(), "ERR a b");
        assert_eq!(Answer::Note("a\nb".into()).to_line(), "OK note=a b");
        for bad in [
            "",
            "ok",
            "OK ",
            "OK address=",
            "OK address=10.0.0.1",
            "OK address=10.0.0.1/33",
            "OK address=::1/129",
            "OK address=10.0.0.1/+4",
            "OK address=web/24",
            "OK managed",
            "OK packet=",
            "OK packet=abc",
            "OK packet=zz",
            "OK address=10.0.0.1/28 packet=",
            "OK address=10.0.0.1/28 packet=0",
            "OK address=10.0.0.1 packet=00",
            "ERRx",
            "NOPE",
            &format!("ERR {}", "x".repeat(5000)),
        ] {
            assert!(Answer::parse(bad).is_err(), "{bad:?}");
        }
    }
}
