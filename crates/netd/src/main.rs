//! `netspawn-netd`: netspawn's per-host network daemon. `netspawn` starts
//! it on first need; `netspawn-netd --foreground` runs it by hand with logs.

use clap::Parser;

/// Addresses, DHCP, DNS, NAT and port forwards for netspawn's container links.
#[derive(Debug, Parser)]
#[command(name = "netspawn-netd", version, about)]
struct Args {
    /// Stay in the foreground and log to standard error
    #[arg(long)]
    foreground: bool,
    /// Exit after this many seconds without any managed link (0: never)
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    idle_exit: u64,
}

fn main() {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            ) =>
        {
            print!("{e}");
            return;
        }
        Err(e) => {
            eprintln!(
                "netspawn-netd: {}",
                e.to_string()
                    .lines()
                    .next()
                    .unwrap_or("invalid arguments")
                    .trim_start_matches("error: ")
            );
            std::process::exit(1);
        }
    };
    let default = if args.foreground { "info" } else { "warn" };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default.into()),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
    match netd::sys::raise_nofile_limit() {
        Ok(n) => tracing::debug!("open-file limit {n}"),
        Err(e) => tracing::warn!("cannot raise the open-file limit: {e}"),
    }
    // Bad templates are the caller's problem: report them before going to the background.
    let paths = netspawn_common::paths::Paths::from_env();
    if let Err(e) = netd::template::load(&netd::template::search_path_with_run(&paths.run_dir)) {
        eprintln!("netspawn-netd: {e}");
        std::process::exit(1);
    }
    if !args.foreground {
        // Into the background: the caller (netspawn) waits only for this
        // first process; the daemon gets its own session.
        // SAFETY: single-threaded here; the parent only exits.
        match unsafe { nix::unistd::fork() } {
            Ok(nix::unistd::ForkResult::Parent { .. }) => return,
            Ok(nix::unistd::ForkResult::Child) => {
                let _ = nix::unistd::setsid();
                // Let go of the caller's output (it waits for end-of-file).
                if let Ok(null) = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open("/dev/null")
                {
                    let _ = nix::unistd::dup2_stdin(&null);
                    let _ = nix::unistd::dup2_stdout(&null);
                    let _ = nix::unistd::dup2_stderr(&null);
                }
            }
            Err(e) => {
                eprintln!("netspawn-netd: fork: {e}");
                std::process::exit(1);
            }
        }
    }
    match netd::daemon::run(
        paths,
        args.foreground,
        std::time::Duration::from_secs(args.idle_exit),
    ) {
        Ok(()) => {}
        Err(e) => {
            eprintln!("netspawn-netd: {e}");
            std::process::exit(1);
        }
    }
}
