//! The `netspawn-cni` binary: a CNI plugin (the runtime sets `CNI_COMMAND`
//! and friends and writes the configuration on stdin; the result or error
//! object goes to stdout), or, with a hidden first argument, an
//! attachment's holder process.

use std::io::{Read, Write};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(netspawn_cni::holder::HOLD_ARG) {
        let name = args.get(2).cloned().unwrap_or_default();
        let link = args.get(3).cloned().unwrap_or_default();
        std::process::exit(netspawn_cni::holder::run(&name, &link));
    }
    if args.get(1).map(String::as_str) == Some(netspawn_cni::holder::LEAVE_ARG) {
        let zone = args.get(2).cloned().unwrap_or_default();
        std::process::exit(netspawn_cni::attach::leave_zone(&zone));
    }
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init();
    }
    if args.len() > 1 || std::env::var_os("CNI_COMMAND").is_none() {
        eprintln!(
            "netspawn-cni: a CNI plugin, run by a container runtime (CNI_COMMAND=ADD|DEL|CHECK|STATUS|GC|VERSION, the network configuration on stdin); see docs/cni.md"
        );
    }
    let mut input = Vec::new();
    if std::io::stdin()
        .take(1 << 20)
        .read_to_end(&mut input)
        .is_err()
    {
        input.clear();
    }
    let (out, code) = netspawn_cni::run(|k| std::env::var(k).ok(), &input);
    if !out.is_null() {
        let mut o = std::io::stdout().lock();
        let _ = writeln!(o, "{out}");
        let _ = o.flush();
    }
    std::process::exit(code);
}
