//! Forwarding to the host's upstream resolvers: the name servers of the
//! host's resolv.conf (re-read when the file changes), asked through
//! hickory-resolver, whose cache serves repeated questions. Name servers that
//! are one of our own listen addresses are skipped, so a resolv.conf that
//! points at netd never makes it ask itself.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use hickory_proto::op::{Query, ResponseCode};
use hickory_resolver::config::{ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::TokioResolver;

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
    /// Generation of `own` the resolver was built for.
    own_gen: u64,
    checked: Option<Instant>,
    /// None: no usable name server.
    resolver: Option<TokioResolver>,
    /// The name servers in use, for logs and tests.
    servers: Vec<IpAddr>,
}

/// The forwarder: one per DNS server.
pub struct Upstream {
    config: UpstreamConfig,
    /// Our own listen addresses, never used as upstreams, and a generation
    /// counter bumped on every change.
    own: RwLock<(HashSet<IpAddr>, u64)>,
    state: Mutex<State>,
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
                resolver: None,
                servers: Vec::new(),
            }),
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

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        match self.state.lock() {
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

    /// Rebuilds the resolver if the file or our own addresses changed.
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
        if stamp == st.stamp && own_gen == st.own_gen && (st.resolver.is_some() || stamp.is_none())
        {
            return;
        }
        st.stamp = stamp;
        st.own_gen = own_gen;
        st.resolver = None;
        st.servers.clear();
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
        let servers: Vec<_> = servers
            .into_iter()
            .filter(|s| !own.contains(&s.ip) && !s.ip.is_unspecified())
            .collect();
        if servers.is_empty() {
            tracing::warn!(path = %self.config.resolv_conf.display(), "no upstream DNS: no usable nameserver (our own addresses are skipped)");
            return;
        }
        st.servers = servers.iter().map(|s| s.ip).collect();
        let config = ResolverConfig::from_parts(None, Vec::new(), servers);
        let mut builder =
            TokioResolver::builder_with_config(config, TokioRuntimeProvider::default());
        let opts = builder.options_mut();
        opts.timeout = parsed_opts.timeout;
        opts.attempts = parsed_opts.attempts;
        opts.ndots = 0;
        opts.cache_size = self.config.cache_size;
        // A forwarder answers from DNS, not from this host's /etc/hosts.
        opts.use_hosts_file = ResolveHosts::Never;
        opts.preserve_intermediates = true;
        match builder.build() {
            Ok(r) => {
                tracing::info!(servers = ?st.servers, "upstream DNS servers");
                st.resolver = Some(r);
            }
            Err(err) => {
                tracing::warn!(%err, "no upstream DNS: cannot build the resolver");
                st.servers.clear();
            }
        }
    }

    /// Asks upstream (or the cache) the question of `query`.
    pub async fn lookup(&self, query: &Query) -> UpstreamAnswer {
        let resolver = {
            let mut st = self.lock();
            self.refresh(&mut st);
            st.resolver.clone()
        };
        let Some(resolver) = resolver else {
            return UpstreamAnswer::Failed;
        };
        let result = resolver
            .lookup(query.name().clone(), query.query_type())
            .await;
        classify(result.map(|l| l.answers().to_vec()))
    }
}

/// Maps a resolver result to what the client is told.
fn classify(result: Result<Vec<hickory_proto::rr::Record>, NetError>) -> UpstreamAnswer {
    match result {
        Ok(records) => UpstreamAnswer::Records(records),
        Err(NetError::Dns(DnsError::NoRecordsFound(nr))) => {
            let soa = nr.soa.map(|s| s.into_record_of_rdata());
            match nr.response_code {
                ResponseCode::NXDomain => UpstreamAnswer::NxDomain(soa),
                ResponseCode::NoError => UpstreamAnswer::NoData(soa),
                _ => UpstreamAnswer::Failed,
            }
        }
        Err(err) => {
            tracing::debug!(%err, "upstream lookup failed");
            UpstreamAnswer::Failed
        }
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
            let q = Query::query(
                "example.test.".parse().unwrap(),
                hickory_proto::rr::RecordType::A,
            );
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
