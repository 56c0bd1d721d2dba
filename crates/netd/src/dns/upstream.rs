//! Forwarding to the host's upstream resolvers: the name servers of the
//! host's resolv.conf (re-read when the file changes). Name servers that are
//! one of our own listen addresses are skipped, so a resolv.conf that points
//! at netd never makes it ask itself.
//!
//! Each forwarded question is sent to each name server at most once, in the
//! file's order, from a socket of its own (a fresh random source port,
//! connected to the server, so the kernel drops datagrams from any other
//! address or port) with a random ID; a reply counts only if its ID and
//! question match (the DNSpooq class of forged replies is ignored). The whole
//! forward is capped at [`FORWARD_BUDGET`], what a glibc client waits. The
//! server's error code (REFUSED, SERVFAIL...) is passed through; a truncated
//! reply is asked again over TCP. Answers are cached in a bounded table:
//! positive ones for their records' TTL, negative ones (NXDOMAIN, NODATA) per
//! RFC 2308 for the SOA's minimum (bounded by [`NEGATIVE_MAX_TTL`]; without
//! an SOA they are not cached).

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use hickory_proto::op::{Edns, Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::{RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::answer::UpstreamAnswer;

/// The host's resolver configuration file.
pub const DEFAULT_RESOLV_CONF: &str = "/etc/resolv.conf";
/// How often (at most) the file's metadata is compared before forwarding.
const CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// Where upstream resolvers come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    /// A resolv.conf; only its `nameserver`, `timeout` and `attempts` lines
    /// matter (names arrive fully qualified, so search domains never apply).
    pub resolv_conf: PathBuf,
    /// Answers cached (hickory-resolver counts responses).
    pub cache_size: u64,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            resolv_conf: PathBuf::from(DEFAULT_RESOLV_CONF),
            cache_size: 8192,
        }
    }
}

/// The longest a forward may take, all servers together: glibc's default
/// timeout, after which the client has given up or asked again.
pub const FORWARD_BUDGET: Duration = Duration::from_secs(5);
/// Negative answers are cached at most this long (RFC 2308 section 5 allows
/// hours; a machine that is about to be created must not wait that long).
pub const NEGATIVE_MAX_TTL: u32 = 300;
/// Positive answers are cached at most this long.
const POSITIVE_MAX_TTL: u32 = 3600;
/// The EDNS payload size we offer upstream.
const UPSTREAM_PAYLOAD: u16 = 1232;
/// Receive buffer of a forward's UDP socket (one per forward in flight).
const UDP_RECV_BUF: usize = 2048;

/// What identifies a version of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    mtime: Option<SystemTime>,
    len: u64,
    ino: u64,
    dev: u64,
}

struct State {
    /// None: the file is missing.
    stamp: Option<FileStamp>,
    /// Generation of `own` the server list was built for.
    own_gen: u64,
    checked: Option<Instant>,
    /// The name servers in use, in the file's order.
    servers: Vec<IpAddr>,
    /// The file's `timeout` option: the most one server is waited for.
    timeout: Duration,
}

/// The cache's key: the question, the name in lower case.
type Key = (String, RecordType, u16);

/// A cached answer: when it was stored and until when it holds.
struct Cached {
    stored: Instant,
    expires: Instant,
    answer: UpstreamAnswer,
}

/// The forwarder: one per DNS server.
pub struct Upstream {
    config: UpstreamConfig,
    /// Our own listen addresses, never used as upstreams, and a generation
    /// counter bumped on every change.
    own: RwLock<(HashSet<IpAddr>, u64)>,
    state: Mutex<State>,
    cache: Mutex<HashMap<Key, Cached>>,
    /// Queries sent upstream (UDP and TCP), for tests and stats.
    sent: AtomicU64,
    /// Replies ignored: wrong ID or question, or not a response.
    ignored: AtomicU64,
    ids: std::collections::hash_map::RandomState,
    id_seq: AtomicU64,
}

impl Upstream {
    /// A forwarder that reads `config.resolv_conf` on first use.
    pub fn new(config: UpstreamConfig) -> Upstream {
        Upstream {
            config,
            own: RwLock::new((HashSet::new(), 0)),
            state: Mutex::new(State {
                stamp: None,
                own_gen: u64::MAX,
                checked: None,
                servers: Vec::new(),
                timeout: FORWARD_BUDGET,
            }),
            cache: Mutex::new(HashMap::new()),
            sent: AtomicU64::new(0),
            ignored: AtomicU64::new(0),
            ids: std::collections::hash_map::RandomState::new(),
            id_seq: AtomicU64::new(0),
        }
    }

    /// Tells the forwarder which addresses are ours (to skip them upstream).
    pub fn set_own_addresses(&self, addrs: impl IntoIterator<Item = IpAddr>) {
        let mut own = match self.own.write() {
            Ok(o) => o,
            Err(p) => p.into_inner(),
        };
        own.0 = addrs.into_iter().collect();
        own.1 = own.1.wrapping_add(1);
        drop(own);
        // Apply at the next lookup, not after the file check interval.
        self.lock().checked = None;
    }

    /// The name servers currently used (after re-reading the file if due).
    pub fn servers(&self) -> Vec<IpAddr> {
        let mut st = self.lock();
        self.refresh(&mut st);
        st.servers.clone()
    }

    /// Queries sent upstream so far.
    pub fn queries_sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Upstream replies ignored so far (wrong ID, question or type).
    pub fn replies_ignored(&self) -> u64 {
        self.ignored.load(Ordering::Relaxed)
    }

    /// Answers in the cache now.
    pub fn cached(&self) -> usize {
        self.cache_lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        }
    }

    fn cache_lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Cached>> {
        match self.cache.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        }
    }

    fn file_stamp(&self) -> Option<FileStamp> {
        use std::os::unix::fs::MetadataExt;
        let md = std::fs::metadata(&self.config.resolv_conf).ok()?;
        Some(FileStamp {
            mtime: md.modified().ok(),
            len: md.len(),
            ino: md.ino(),
            dev: md.dev(),
        })
    }

    /// Re-reads the server list if the file or our own addresses changed.
    fn refresh(&self, st: &mut State) {
        if st.checked.is_some_and(|c| c.elapsed() < CHECK_INTERVAL) {
            return;
        }
        st.checked = Some(Instant::now());
        let stamp = self.file_stamp();
        let (own, own_gen) = {
            let o = match self.own.read() {
                Ok(o) => o,
                Err(p) => p.into_inner(),
            };
            (o.0.clone(), o.1)
        };
        if stamp == st.stamp && own_gen == st.own_gen {
            return;
        }
        st.stamp = stamp;
        st.own_gen = own_gen;
        let before = std::mem::take(&mut st.servers);
        // Another server set may answer differently.
        self.cache_lock().clear();
        let data = match std::fs::read(&self.config.resolv_conf) {
            Ok(d) => d,
            Err(err) => {
                tracing::warn!(path = %self.config.resolv_conf.display(), %err, "no upstream DNS: cannot read resolv.conf");
                return;
            }
        };
        let (parsed, parsed_opts) = match hickory_resolver::system_conf::parse_resolv_conf(&data) {
            Ok(c) => c,
            Err(err) => {
                tracing::warn!(path = %self.config.resolv_conf.display(), %err, "no upstream DNS");
                return;
            }
        };
        let (_, _, servers) = parsed.into_parts();
        let mut list: Vec<IpAddr> = Vec::new();
        for s in servers {
            if !own.contains(&s.ip) && !s.ip.is_unspecified() && !list.contains(&s.ip) {
                list.push(s.ip);
            }
        }
        if list.is_empty() {
            tracing::warn!(path = %self.config.resolv_conf.display(), "no upstream DNS: no usable nameserver (our own addresses are skipped)");
            return;
        }
        st.timeout = parsed_opts
            .timeout
            .clamp(Duration::from_millis(100), FORWARD_BUDGET);
        if list != before {
            tracing::info!(servers = ?list, "upstream DNS servers");
        }
        st.servers = list;
    }

    /// Asks upstream (or the cache) the question of `query`.
    pub async fn lookup(&self, query: &Query) -> UpstreamAnswer {
        let (servers, per_server) = {
            let mut st = self.lock();
            self.refresh(&mut st);
            (st.servers.clone(), st.timeout)
        };
        if servers.is_empty() {
            return UpstreamAnswer::Failed;
        }
        let key = (
            query.name().to_ascii().to_ascii_lowercase(),
            query.query_type(),
            u16::from(query.query_class()),
        );
        if let Some(a) = self.cached_answer(&key) {
            return a;
        }
        let deadline = Instant::now() + FORWARD_BUDGET;
        let mut answer = UpstreamAnswer::Failed;
        for (i, server) in servers.iter().enumerate() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            // A server is waited for at most the file's timeout and its share
            // of what is left, so that the ones after it are asked too; the
            // last one has all that is left.
            let left = deadline - now;
            let share = left / u32::try_from(servers.len() - i).unwrap_or(1);
            let wait = if i + 1 == servers.len() {
                left
            } else {
                per_server.min(share)
            };
            let addr = SocketAddr::new(*server, 53);
            match self.ask(addr, query, wait).await {
                Some(reply) => {
                    answer = classify(&reply);
                    // REFUSED and SERVFAIL are one server's view: the
                    // next server (if any) is asked, once.
                    match answer {
                        UpstreamAnswer::Code(ResponseCode::Refused)
                        | UpstreamAnswer::Code(ResponseCode::ServFail)
                            if i + 1 < servers.len() => {}
                        _ => break,
                    }
                }
                None => answer = UpstreamAnswer::Failed,
            }
        }
        self.store(key, &answer);
        answer
    }

    fn cached_answer(&self, key: &Key) -> Option<UpstreamAnswer> {
        let mut cache = self.cache_lock();
        let c = cache.get(key)?;
        let now = Instant::now();
        if now >= c.expires {
            cache.remove(key);
            return None;
        }
        let age = u32::try_from(now.duration_since(c.stored).as_secs()).unwrap_or(u32::MAX);
        let aged = |r: &Record| {
            let mut r = r.clone();
            r.ttl = r.ttl.saturating_sub(age);
            r
        };
        Some(match &c.answer {
            UpstreamAnswer::Records(rs) => UpstreamAnswer::Records(rs.iter().map(aged).collect()),
            UpstreamAnswer::NoData(soa) => UpstreamAnswer::NoData(soa.as_ref().map(aged)),
            UpstreamAnswer::NxDomain(soa) => UpstreamAnswer::NxDomain(soa.as_ref().map(aged)),
            other => other.clone(),
        })
    }

    fn store(&self, key: Key, answer: &UpstreamAnswer) {
        let ttl = match answer {
            UpstreamAnswer::Records(rs) => rs
                .iter()
                .map(|r| r.ttl)
                .min()
                .unwrap_or(0)
                .min(POSITIVE_MAX_TTL),
            // The SOA's TTL was set to the negative TTL by `classify`.
            UpstreamAnswer::NoData(Some(soa)) | UpstreamAnswer::NxDomain(Some(soa)) => soa.ttl,
            _ => 0,
        };
        let cap = usize::try_from(self.config.cache_size).unwrap_or(usize::MAX);
        if ttl == 0 || cap == 0 {
            return;
        }
        let now = Instant::now();
        let mut cache = self.cache_lock();
        if cache.len() >= cap {
            cache.retain(|_, c| c.expires > now);
        }
        if cache.len() >= cap {
            // Still full of live answers: forget a quarter, at random (the
            // map's order is).
            let drop: Vec<Key> = cache.keys().take(cap / 4 + 1).cloned().collect();
            for k in drop {
                cache.remove(&k);
            }
        }
        cache.insert(
            key,
            Cached {
                stored: now,
                expires: now + Duration::from_secs(u64::from(ttl)),
                answer: answer.clone(),
            },
        );
    }

    fn next_id(&self) -> u16 {
        let mut h = self.ids.build_hasher();
        h.write_u64(self.id_seq.fetch_add(1, Ordering::Relaxed));
        h.write_u32(std::process::id());
        (h.finish() & 0xffff) as u16
    }

    /// One question to one server: UDP, then TCP if the reply was
    /// truncated. `None`: no matching reply within `wait`.
    async fn ask(&self, server: SocketAddr, query: &Query, wait: Duration) -> Option<Message> {
        let deadline = tokio::time::Instant::now() + wait;
        let id = self.next_id();
        let mut req = Message::query();
        req.metadata.id = id;
        req.metadata.recursion_desired = true;
        req.add_query(query.clone());
        let mut edns = Edns::new();
        edns.set_max_payload(UPSTREAM_PAYLOAD);
        req.edns = Some(edns);
        let bytes = req.to_vec().ok()?;
        let reply = tokio::time::timeout_at(deadline, self.ask_udp(server, &bytes, id, query))
            .await
            .ok()
            .flatten()?;
        if !reply.metadata.truncation {
            return Some(reply);
        }
        tokio::time::timeout_at(deadline, self.ask_tcp(server, &bytes, id, query))
            .await
            .ok()
            .flatten()
    }

    async fn ask_udp(
        &self,
        server: SocketAddr,
        bytes: &[u8],
        id: u16,
        query: &Query,
    ) -> Option<Message> {
        let local: SocketAddr = match server {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let sock = tokio::net::UdpSocket::bind(local).await.ok()?;
        // Connected: the kernel delivers only datagrams from the server's
        // address and port.
        sock.connect(server).await.ok()?;
        self.sent.fetch_add(1, Ordering::Relaxed);
        sock.send(bytes).await.ok()?;
        // We offer UPSTREAM_PAYLOAD bytes: a larger datagram is not a reply
        // to us (cut, it fails to parse and is ignored).
        let mut buf = vec![0u8; UDP_RECV_BUF];
        loop {
            match sock.recv(&mut buf).await {
                Ok(n) => {
                    if let Some(m) = self.matching(buf.get(..n)?, id, query) {
                        return Some(m);
                    }
                }
                // An ICMP error (nothing listens there): no answer from it.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return None,
                Err(_) => return None,
            }
        }
    }

    async fn ask_tcp(
        &self,
        server: SocketAddr,
        bytes: &[u8],
        id: u16,
        query: &Query,
    ) -> Option<Message> {
        let mut s = tokio::net::TcpStream::connect(server).await.ok()?;
        self.sent.fetch_add(1, Ordering::Relaxed);
        let len = u16::try_from(bytes.len()).ok()?;
        let mut framed = len.to_be_bytes().to_vec();
        framed.extend_from_slice(bytes);
        s.write_all(&framed).await.ok()?;
        loop {
            let n = usize::from(s.read_u16().await.ok()?);
            let mut buf = vec![0u8; n];
            s.read_exact(&mut buf).await.ok()?;
            if let Some(m) = self.matching(&buf, id, query) {
                return Some(m);
            }
        }
    }

    /// The reply if it answers our question with our ID; counts and
    /// ignores anything else.
    fn matching(&self, bytes: &[u8], id: u16, query: &Query) -> Option<Message> {
        let ok = Message::from_vec(bytes).ok().filter(|m| {
            m.metadata.id == id
                && m.metadata.message_type == MessageType::Response
                && m.queries.len() == 1
                && m.queries.first().is_some_and(|q| {
                    q.query_type() == query.query_type()
                        && q.query_class() == query.query_class()
                        && q.name()
                            .to_ascii()
                            .eq_ignore_ascii_case(&query.name().to_ascii())
                })
        });
        if ok.is_none() {
            self.ignored.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }
}

/// What the client is told, from upstream's reply. Negative answers carry
/// their SOA with its TTL set to the negative caching time (RFC 2308
/// section 5: the lesser of the SOA's TTL and its MINIMUM, here bounded by
/// [`NEGATIVE_MAX_TTL`]).
fn classify(reply: &Message) -> UpstreamAnswer {
    let soa = || {
        reply
            .authorities
            .iter()
            .find(|r| r.record_type() == RecordType::SOA)
            .map(|r| {
                let mut r = r.clone();
                let min = match &r.data {
                    RData::SOA(soa) => soa.minimum,
                    _ => 0,
                };
                r.ttl = r.ttl.min(min).min(NEGATIVE_MAX_TTL);
                r
            })
    };
    match reply.metadata.response_code {
        ResponseCode::NoError if !reply.answers.is_empty() => {
            UpstreamAnswer::Records(reply.answers.clone())
        }
        ResponseCode::NoError => UpstreamAnswer::NoData(soa()),
        ResponseCode::NXDomain => UpstreamAnswer::NxDomain(soa()),
        code => UpstreamAnswer::Code(code),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_addresses_and_file_changes() {
        let dir = std::env::temp_dir().join(format!("netd-upstream-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("resolv.conf");
        std::fs::write(&path, "nameserver 127.0.0.1\nnameserver 192.0.2.53\n").unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // The resolver spawns its tasks on the current runtime.
        rt.block_on(async {
            let up = Upstream::new(UpstreamConfig {
                resolv_conf: path.clone(),
                ..UpstreamConfig::default()
            });
            up.set_own_addresses(["127.0.0.1".parse().unwrap()]);
            assert_eq!(up.servers(), vec!["192.0.2.53".parse::<IpAddr>().unwrap()]);

            // Only ourselves: nothing to forward to.
            std::fs::write(&path, "nameserver 127.0.0.1\n").unwrap();
            tokio::time::sleep(CHECK_INTERVAL * 2).await;
            assert!(up.servers().is_empty());
            let q = Query::query("example.test.".parse().unwrap(), RecordType::A);
            assert_eq!(up.lookup(&q).await, UpstreamAnswer::Failed);

            // Our address moves: the file's server becomes usable.
            up.set_own_addresses(["10.9.9.9".parse().unwrap()]);
            tokio::time::sleep(CHECK_INTERVAL * 2).await;
            assert_eq!(up.servers(), vec!["127.0.0.1".parse::<IpAddr>().unwrap()]);

            std::fs::remove_file(&path).unwrap();
            tokio::time::sleep(CHECK_INTERVAL * 2).await;
            assert!(up.servers().is_empty());
        });
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
