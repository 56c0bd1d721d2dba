//! Pure rendering of netd's NAT state into one nftables transaction (typed
//! `nftables` schema, never command strings), and the summary of a table used
//! to tell whether the kernel still holds what was rendered.
//!
//! Layout of `table inet netspawn` (every rule carries a comment naming what it
//! is for; the comments are what `ensure` compares):
//! - `prerouting` (nat, dstnat): port forwards to the host's own addresses;
//! - `output` (nat, -100): the same for connections made on the host itself,
//!   127.0.0.1 included;
//! - `postrouting` (nat, srcnat): masquerade of what comes from a container
//!   link in a masquerading interface group (see [`super::GROUP_BASE`]) and
//!   leaves by an interface that is no container link (two fixed rules, one per
//!   family, whatever the links), of 127.0.0.0/8 sources sent to a container
//!   link (the localhost forwards), and hairpin masquerade for forwards used
//!   from the container's own link;
//! - `forward` (filter, 0), when netd switched forwarding on for an uplink
//!   (such an uplink forwards only replies and port-forwarded traffic) or a
//!   container link has an IPv6 subnet (new IPv6 connections from outside
//!   reach a container only through a port forward, whatever the host's
//!   forwarding settings were).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use nftables::expr::{Expression, Fib, FibFlag, FibResult, Meta, MetaKey, NamedExpression};
use nftables::expr::{Payload, PayloadField, Prefix, CT};
use nftables::schema::{Chain, NfCmd, NfListObject, NfObject, Nftables, Rule, Table};
use nftables::stmt::{Match, NATFamily, Operator, Statement, NAT};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

use super::{Guard, IpFamily, Masquerade, PortForward, State, GROUP_BASE, TABLE};

const PRIO_DSTNAT: i32 = -100;
const PRIO_SRCNAT: i32 = 100;
const PRIO_FILTER: i32 = 0;

type Exprs = Vec<Statement<'static>>;

/// Render `state` as one transaction that replaces `table inet netspawn`
/// wholesale: create it (so the delete cannot fail), delete it, and create it
/// again with its content. With nothing to render, the table is only deleted.
pub(crate) fn render(state: &State) -> Nftables<'static> {
    let mut objs = vec![
        add(NfListObject::Table(table())),
        NfObject::CmdObject(NfCmd::Delete(NfListObject::Table(table()))),
    ];
    let chains = chains(state);
    if !chains.is_empty() {
        objs.push(add(NfListObject::Table(table())));
        for (chain, rules) in chains {
            let name = chain.name.clone();
            objs.push(add(NfListObject::Chain(chain)));
            for (comment, expr) in rules {
                objs.push(add(NfListObject::Rule(Rule {
                    family: NfFamily::INet,
                    table: TABLE.into(),
                    chain: name.clone(),
                    expr: expr.into(),
                    handle: None,
                    index: None,
                    comment: Some(comment.into()),
                })));
            }
        }
    }
    Nftables {
        objects: objs.into(),
    }
}

/// The same content as a transaction that deletes nothing, for when the
/// table is known to be absent: `create` fails if it exists after all. None
/// when there is nothing to make.
pub(crate) fn render_fresh(state: &State) -> Option<Nftables<'static>> {
    let chains = chains(state);
    if chains.is_empty() {
        return None;
    }
    let mut objs = vec![NfObject::CmdObject(NfCmd::Create(NfListObject::Table(
        table(),
    )))];
    for (chain, rules) in chains {
        let name = chain.name.clone();
        objs.push(add(NfListObject::Chain(chain)));
        for (comment, expr) in rules {
            objs.push(add(NfListObject::Rule(Rule {
                family: NfFamily::INet,
                table: TABLE.into(),
                chain: name.clone(),
                expr: expr.into(),
                handle: None,
                index: None,
                comment: Some(comment.into()),
            })));
        }
    }
    Some(Nftables {
        objects: objs.into(),
    })
}

fn add(obj: NfListObject<'static>) -> NfObject<'static> {
    NfObject::CmdObject(NfCmd::Add(obj))
}

fn table() -> Table<'static> {
    Table {
        family: NfFamily::INet,
        name: TABLE.into(),
        handle: None,
    }
}

fn base_chain(name: &'static str, ty: NfChainType, hook: NfHook, prio: i32) -> Chain<'static> {
    Chain {
        family: NfFamily::INet,
        table: TABLE.into(),
        name: name.into(),
        newname: None,
        handle: None,
        _type: Some(ty),
        hook: Some(hook),
        prio: Some(prio),
        dev: None,
        policy: Some(NfChainPolicy::Accept),
    }
}

/// The chains in order, each with its rules as (comment, statements).
fn chains(state: &State) -> Vec<(Chain<'static>, Vec<(String, Exprs)>)> {
    let mut pre = Vec::new();
    let mut out = Vec::new();
    let mut post = Vec::new();
    let mut fwd = Vec::new();

    for (owner, fwds) in &state.forwards {
        for f in fwds {
            let c = format!(
                "forward {} {} to {} owner {}",
                f.proto,
                f.host_port,
                sockaddr(f.container_addr, f.container_port),
                owner
            );
            pre.push((c.clone(), dnat_rule(f, false)));
            out.push((c, dnat_rule(f, true)));
        }
    }

    // The same two rules whatever the links: a link is masqueraded by being
    // in a group, so links come and go without touching the table.
    if !state.standing.is_empty() || state.links.values().any(|l| l.masquerades()) {
        for (fam, from) in [(IpFamily::V4, 1), (IpFamily::V6, 2)] {
            post.push((
                format!("masquerade {} from container links", fam.name()),
                vec![
                    nfproto(fam),
                    eq(meta(MetaKey::Iifgroup), group_range(from, from + 1)),
                    neq(meta(MetaKey::Oifgroup), group_range(0, 3)),
                    Statement::Masquerade(None),
                ],
            ));
        }
    }
    for (link, l) in &state.links {
        for net in &l.subnets {
            let fam = IpFamily::of_net(net);
            // A forward used from the target's own link (the container itself
            // or a zone neighbour) needs the reply to come back through the
            // host to be un-NATed.
            if state
                .forwards
                .values()
                .flatten()
                .any(|f| net.contains(f.container_addr))
            {
                post.push((
                    format!("hairpin {net} on {link}"),
                    vec![
                        nfproto(fam),
                        Statement::Match(Match {
                            left: ct("status"),
                            right: s("dnat"),
                            op: Operator::IN,
                        }),
                        eq(meta(MetaKey::Oifname), s(link)),
                        eq(addr_field(fam, "saddr"), prefix(net)),
                        Statement::Masquerade(None),
                    ],
                ));
            }
        }
    }
    for link in &state.localnet_links {
        post.push((
            format!("localhost to {link}"),
            vec![
                nfproto(IpFamily::V4),
                eq(meta(MetaKey::Oifname), s(link)),
                eq(addr_field(IpFamily::V4, "saddr"), prefix_of("127.0.0.0", 8)),
                Statement::Masquerade(None),
            ],
        ));
    }

    // IPv6 container addresses are routable (no NAT in front of them):
    // from outside, only replies and port forwards reach a container.
    // Kept while IPv6 masquerade is standing, so that machines coming and
    // going one after the other leave the table alone.
    let v6_links = state.standing.contains(&IpFamily::V6)
        || state
            .links
            .values()
            .any(|l| l.subnets.iter().any(|n| n.is_ipv6()));
    if !state.guards.is_empty() || v6_links {
        fwd.push((
            "replies".to_string(),
            vec![
                Statement::Match(Match {
                    left: ct("state"),
                    right: Expression::List(vec![s("established"), s("related")]),
                    op: Operator::IN,
                }),
                Statement::Accept(None),
            ],
        ));
        fwd.push((
            "port forwards".to_string(),
            vec![
                Statement::Match(Match {
                    left: ct("status"),
                    right: s("dnat"),
                    op: Operator::IN,
                }),
                Statement::Accept(None),
            ],
        ));
        if v6_links {
            fwd.push((
                "inbound ipv6 to container links".to_string(),
                vec![
                    nfproto(IpFamily::V6),
                    eq(meta(MetaKey::Oifgroup), group_range(0, 3)),
                    neq(meta(MetaKey::Iifgroup), group_range(0, 3)),
                    Statement::Drop(None),
                ],
            ));
        }
        for Guard { family, ifname } in &state.guards {
            fwd.push((
                format!("guard {} {ifname}", family.name()),
                vec![
                    nfproto(*family),
                    eq(meta(MetaKey::Iifname), s(ifname)),
                    Statement::Drop(None),
                ],
            ));
        }
    }

    let mut v = Vec::new();
    if !pre.is_empty() {
        v.push((
            base_chain(
                "prerouting",
                NfChainType::NAT,
                NfHook::Prerouting,
                PRIO_DSTNAT,
            ),
            pre,
        ));
        v.push((
            base_chain("output", NfChainType::NAT, NfHook::Output, PRIO_DSTNAT),
            out,
        ));
    }
    if !post.is_empty() {
        v.push((
            base_chain(
                "postrouting",
                NfChainType::NAT,
                NfHook::Postrouting,
                PRIO_SRCNAT,
            ),
            post,
        ));
    }
    if !fwd.is_empty() {
        v.push((
            base_chain("forward", NfChainType::Filter, NfHook::Forward, PRIO_FILTER),
            fwd,
        ));
    }
    v
}

/// DNAT of `proto dport HOST` addressed to one of the host's own addresses.
/// In `output` (locally made connections) IPv6 `::1` is left alone: the kernel
/// never routes `::1` off the loopback (IPv6 has no `route_localnet`), so such
/// a connection is refused at once instead of hanging.
fn dnat_rule(f: &PortForward, output: bool) -> Exprs {
    let fam = IpFamily::of(f.container_addr);
    let mut e = vec![
        nfproto(fam),
        eq(
            Expression::Named(NamedExpression::Fib(Fib {
                result: FibResult::Type,
                flags: [FibFlag::Daddr].into_iter().collect(),
            })),
            s("local"),
        ),
    ];
    if output && fam == IpFamily::V6 {
        e.push(neq(addr_field(fam, "daddr"), s("::1")));
    }
    e.push(eq(
        payload(f.proto.name(), "dport"),
        Expression::Number(f.host_port.into()),
    ));
    e.push(Statement::DNAT(Some(NAT {
        addr: Some(s(&f.container_addr.to_string())),
        family: Some(match fam {
            IpFamily::V4 => NATFamily::IP,
            IpFamily::V6 => NATFamily::IP6,
        }),
        port: Some(Expression::Number(f.container_port.into())),
        flags: None,
    })));
    e
}

/// Interface groups `GROUP_BASE + from` to `GROUP_BASE + to`.
fn group_range(from: u32, to: u32) -> Expression<'static> {
    Expression::Range(Box::new(nftables::expr::Range {
        range: [
            Expression::Number(GROUP_BASE + from),
            Expression::Number(GROUP_BASE + to),
        ],
    }))
}

fn sockaddr(addr: IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

fn s(v: &str) -> Expression<'static> {
    Expression::String(Cow::Owned(v.to_string()))
}

fn meta(key: MetaKey) -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(Meta { key }))
}

fn ct(key: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::CT(CT {
        key: key.into(),
        family: None,
        dir: None,
    }))
}

fn payload(protocol: &'static str, field: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: protocol.into(),
            field: field.into(),
        },
    )))
}

fn addr_field(fam: IpFamily, field: &'static str) -> Expression<'static> {
    payload(
        match fam {
            IpFamily::V4 => "ip",
            IpFamily::V6 => "ip6",
        },
        field,
    )
}

fn prefix(net: &IpNetwork) -> Expression<'static> {
    prefix_of(&net.network().to_string(), net.prefix().into())
}

fn prefix_of(addr: &str, len: u32) -> Expression<'static> {
    Expression::Named(NamedExpression::Prefix(Prefix {
        addr: Box::new(s(addr)),
        len,
    }))
}

fn nfproto(fam: IpFamily) -> Statement<'static> {
    eq(meta(MetaKey::Nfproto), s(fam.name()))
}

fn eq(left: Expression<'static>, right: Expression<'static>) -> Statement<'static> {
    Statement::Match(Match {
        left,
        right,
        op: Operator::EQ,
    })
}

fn neq(left: Expression<'static>, right: Expression<'static>) -> Statement<'static> {
    Statement::Match(Match {
        left,
        right,
        op: Operator::NEQ,
    })
}

/// What identifies the content of our table: per chain, its base-chain
/// properties and its rules' comments in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Summary {
    chains: BTreeMap<String, ChainSummary>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct ChainSummary {
    kind: Option<(NfChainType, NfHook, i32)>,
    rules: Vec<String>,
}

impl Summary {
    /// Summarize the objects of `table inet netspawn` found in `nft`, whether
    /// they are commands (as rendered) or listed objects (as `nft -j list`
    /// prints them). Objects of other tables are ignored.
    pub(crate) fn of(nft: &Nftables<'_>) -> Summary {
        let mut sum = Summary::default();
        for obj in nft.objects.iter() {
            let o = match obj {
                NfObject::CmdObject(NfCmd::Add(o)) => o,
                NfObject::ListObject(o) => o,
                NfObject::CmdObject(NfCmd::Delete(NfListObject::Table(t)))
                    if ours(t.family, &t.name) =>
                {
                    // A rendered transaction starts over at its delete.
                    sum.chains.clear();
                    continue;
                }
                _ => continue,
            };
            match o {
                NfListObject::Chain(c) if ours(c.family, &c.table) => {
                    let entry = sum.chains.entry(c.name.to_string()).or_default();
                    entry.kind = match (c._type, c.hook, c.prio) {
                        (Some(t), Some(h), Some(p)) => Some((t, h, p)),
                        _ => None,
                    };
                }
                NfListObject::Rule(r) if ours(r.family, &r.table) => {
                    sum.chains
                        .entry(r.chain.to_string())
                        .or_default()
                        .rules
                        .push(r.comment.as_deref().unwrap_or("").to_string());
                }
                _ => {}
            }
        }
        sum
    }
}

fn ours(family: NfFamily, table: &str) -> bool {
    family == NfFamily::INet && table == TABLE
}

/// Interfaces a state expects forwarding from, by family: used by the caller
/// to derive the sysctls; kept here next to the rules that depend on them.
pub(crate) fn families_in_use(state: &State) -> BTreeSet<IpFamily> {
    let mut fams = BTreeSet::new();
    for l in state.links.values() {
        for net in &l.subnets {
            let f = IpFamily::of_net(net);
            if l.masquerade.covers(f) {
                fams.insert(f);
            }
        }
    }
    for f in state.forwards.values().flatten() {
        fams.insert(IpFamily::of(f.container_addr));
    }
    fams
}

impl Masquerade {
    pub(crate) fn covers(self, fam: IpFamily) -> bool {
        matches!(
            (self, fam),
            (Masquerade::Both, _)
                | (Masquerade::Ipv4, IpFamily::V4)
                | (Masquerade::Ipv6, IpFamily::V6)
        )
    }
}
