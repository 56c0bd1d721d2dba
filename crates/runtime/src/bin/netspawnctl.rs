//! netspawnctl: machinectl's counterpart for netspawn machines. Parses the
//! command line and dispatches to `netspawn::ctl`; errors are one line on
//! stderr (`netspawnctl: ...`) with exit status 1. `RUST_LOG` selects what
//! is logged to stderr.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use netspawn::ctl::{self, images::BootstrapKind, signal::KillWhom, CtlError, ListOptions};

/// Send control commands to or query the netspawn machine registry.
#[derive(Debug, Parser)]
#[command(name = "netspawnctl", version, disable_help_subcommand = true)]
struct Cli {
    /// Output format of the verbs that print facts (list, list-images, status).
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Short, global = true)]
    output: Output,

    /// Do not print the legend (column headers and hints).
    #[arg(long = "no-legend", global = true)]
    no_legend: bool,

    /// Suppress informational messages.
    #[arg(short = 'q', long = "quiet", global = true)]
    quiet: bool,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Output {
    Short,
    Json,
    #[value(name = "json-pretty")]
    JsonPretty,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List running machines (the default).
    List,
    /// Show information about one or more machines.
    Status {
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
    },
    /// Run a command (default: a login shell) in a machine.
    Shell {
        /// The user to run as (a USER@ in the machine specification wins).
        #[arg(long = "uid", short = 'u', visible_alias = "user", value_name = "USER")]
        uid: Option<String>,
        /// Set an environment variable (VAR=VALUE, or VAR to pass ours).
        #[arg(short = 'E', long = "setenv", value_name = "VAR[=VALUE]")]
        setenv: Vec<String>,
        /// [USER@]NAME
        #[arg(value_name = "[USER@]NAME")]
        spec: String,
        /// The command and its arguments.
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "COMMAND"
        )]
        command: Vec<String>,
    },
    /// Get a login prompt in a machine.
    Login {
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// Power off one or more machines.
    #[command(visible_alias = "stop")]
    Poweroff {
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
    },
    /// Reboot one or more machines.
    Reboot {
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
    },
    /// Terminate one or more machines immediately.
    Terminate {
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
    },
    /// Send a signal to the processes of one or more machines.
    Kill {
        /// Which signal to send (name or number).
        #[arg(short = 's', long = "signal", default_value = "SIGTERM")]
        signal: String,
        /// Whom to send it to: leader or all.
        #[arg(long = "kill-whom", default_value = "all")]
        kill_whom: String,
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
    },
    /// Set resource-control properties (MemoryMax=, CPUQuota=, …) of a running machine.
    #[command(name = "set-property")]
    SetProperty {
        /// Apply until the machine stops only; do not persist for its next start.
        #[arg(long = "runtime")]
        runtime: bool,
        #[arg(value_name = "NAME")]
        name: String,
        #[arg(required = true, value_name = "PROPERTY=VALUE")]
        assignments: Vec<String>,
    },
    /// Show the machines' tasks, CPU and memory use, refreshed (systemd-cgtop).
    Top {
        /// Stop after this many refreshes.
        #[arg(short = 'n', long = "iterations", value_name = "N")]
        iterations: Option<u64>,
        /// Time between refreshes (seconds, or a time span such as 500ms).
        #[arg(short = 'd', long = "delay", value_name = "DELAY", default_value = "1s", value_parser = delay)]
        delay: std::time::Duration,
        /// Batch mode: plain tables one after another, for scripts.
        #[arg(short = 'b', long = "batch")]
        batch: bool,
    },
    /// Start machines in the background, as systemd-nspawn@.service runs them (-b -n -U).
    Start {
        /// Start every enabled machine that is not running (the boot hook).
        #[arg(long = "enabled")]
        enabled: bool,
        #[arg(value_name = "NAME")]
        names: Vec<String>,
    },
    /// Show the console log of a machine started with `start`.
    Logs {
        /// Keep printing what the machine writes until it stops.
        #[arg(short = 'f', long = "follow")]
        follow: bool,
        /// Show only the last N lines.
        #[arg(short = 'n', long = "lines", value_name = "N")]
        lines: Option<usize>,
        /// Read the guest's journal with the host's journalctl instead.
        #[arg(long = "journal")]
        journal: bool,
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// Bring up the lab a topology file describes; returns when all its machines are ready.
    Up {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Remove everything of the lab a topology file describes.
    Down {
        /// How long booted machines get to power off before they are killed (0: kill at once).
        #[arg(long = "timeout", value_name = "TIME", default_value = "10s", value_parser = timeout_span)]
        timeout: std::time::Duration,
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Impair (rate, loss, delay, jitter) the traffic leaving one end of a link, live.
    Netem {
        /// Rate limit, e.g. 10mbit (tbf, or htb with --shaper=htb).
        #[arg(long = "rate", value_name = "RATE")]
        rate: Option<String>,
        /// What shapes --rate: tbf (default) or htb.
        #[arg(long = "shaper", value_name = "tbf|htb")]
        shaper: Option<String>,
        /// Loss probability, e.g. 5% (a BPF filter, or netem with --delay).
        #[arg(long = "loss", value_name = "PERCENT")]
        loss: Option<String>,
        /// Delay, e.g. 20ms (needs the kernel's netem qdisc).
        #[arg(long = "delay", value_name = "TIME")]
        delay: Option<String>,
        /// Jitter, e.g. 5ms (needs the kernel's netem qdisc).
        #[arg(long = "jitter", value_name = "TIME")]
        jitter: Option<String>,
        /// Show what is set.
        #[arg(long = "show")]
        show: bool,
        /// Remove every impairment.
        #[arg(long = "reset")]
        reset: bool,
        /// MACHINE:INTERFACE, e.g. lab-r1:eth1.
        #[arg(value_name = "MACHINE:INTERFACE")]
        endpoint: String,
    },
    /// Capture the frames on one end of a link as pcapng (for tcpdump -r, tshark).
    Capture {
        /// Write to this file (default, or -: standard output).
        #[arg(short = 'w', value_name = "FILE")]
        write: Option<PathBuf>,
        /// Stop after this many frames.
        #[arg(short = 'c', long = "count", value_name = "N")]
        count: Option<u64>,
        /// [LAB|FILE] MACHINE:INTERFACE (with a lab, MACHINE is its name in the lab).
        #[arg(value_name = "ARGS", num_args = 1..=2, required = true)]
        args: Vec<String>,
    },
    /// Draw a topology file's lab without deploying it (svg, dot, mermaid).
    Graph {
        /// svg, dot or mermaid (default: from the -O file's extension, else dot).
        #[arg(long = "format", value_name = "FORMAT", default_value = "")]
        format: String,
        /// Write here instead of standard output.
        #[arg(short = 'O', long = "out", value_name = "FILE")]
        out: Option<PathBuf>,
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Start machines at boot.
    Enable {
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
    },
    /// No longer start machines at boot.
    Disable {
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
    },
    /// Install what starts enabled machines at boot (systemd units, or an init script) and the CNI plugin netspawn-cni (/opt/cni/bin, /usr/lib/cni).
    Install,
    /// Remove what `install` installed.
    Uninstall,
    /// Copy standard input into a machine's console log (run by `start`).
    #[command(name = "log-pump", hide = true)]
    LogPump {
        #[arg(long = "max-bytes", value_name = "BYTES")]
        max_bytes: u64,
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// List images in the image directory.
    #[command(name = "list-images", visible_alias = "images")]
    ListImages,
    /// Make a new image.
    Bootstrap {
        #[command(subcommand)]
        kind: Bootstrap,
    },
    /// Bind-mount a host directory or file into a running machine.
    Bind {
        #[arg(value_name = "NAME")]
        name: String,
        #[arg(value_name = "SOURCE")]
        src: PathBuf,
        /// Where in the machine (default: the same path as SOURCE).
        #[arg(value_name = "DESTINATION")]
        dst: Option<String>,
        /// Mount it read-only.
        #[arg(long = "read-only")]
        read_only: bool,
        /// Make the destination (and its parents) if missing.
        #[arg(long = "mkdir")]
        mkdir: bool,
    },
    /// Copy files or directories from the host into a running machine.
    #[command(name = "copy-to")]
    CopyTo {
        #[arg(value_name = "NAME")]
        name: String,
        #[arg(value_name = "HOST-PATH")]
        src: PathBuf,
        #[arg(value_name = "MACHINE-PATH")]
        dst: Option<String>,
        /// Replace what is in the way.
        #[arg(long = "force")]
        force: bool,
    },
    /// Copy files or directories from a running machine to the host.
    #[command(name = "copy-from")]
    CopyFrom {
        #[arg(value_name = "NAME")]
        name: String,
        #[arg(value_name = "MACHINE-PATH")]
        src: String,
        #[arg(value_name = "HOST-PATH")]
        dst: Option<PathBuf>,
        /// Replace what is in the way.
        #[arg(long = "force")]
        force: bool,
    },
    /// Show properties of machines (or of the manager without a name).
    Show {
        #[arg(value_name = "NAME")]
        names: Vec<String>,
        /// Show only these properties (repeat or separate with commas).
        #[arg(short = 'p', long = "property", value_name = "NAME")]
        property: Vec<String>,
        /// Print the values only.
        #[arg(long = "value")]
        value: bool,
    },
    /// Show information about one or more images.
    #[command(name = "image-status")]
    ImageStatus {
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
    },
    /// Show properties of images.
    #[command(name = "show-image")]
    ShowImage {
        #[arg(value_name = "NAME")]
        names: Vec<String>,
        /// Show only these properties (repeat or separate with commas).
        #[arg(short = 'p', long = "property", value_name = "NAME")]
        property: Vec<String>,
        /// Print the values only.
        #[arg(long = "value")]
        value: bool,
    },
    /// Clone an image (a btrfs snapshot where it is a subvolume).
    Clone {
        #[arg(value_name = "NAME")]
        src: String,
        #[arg(value_name = "NAME")]
        dst: String,
        /// Make the clone read-only.
        #[arg(long = "read-only")]
        read_only: bool,
    },
    /// Rename an image.
    Rename {
        #[arg(value_name = "NAME")]
        old: String,
        #[arg(value_name = "NAME")]
        new: String,
    },
    /// Remove one or more images.
    Remove {
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
    },
    /// Mark or unmark an image read-only.
    #[command(name = "read-only")]
    ReadOnly {
        #[arg(value_name = "NAME")]
        name: String,
        #[arg(value_name = "BOOL")]
        value: Option<String>,
    },
    /// Remove hidden leftovers (.#*) of interrupted image operations.
    Clean,
    /// Import a tar archive (gzip, xz, zstd or none) as an image.
    #[command(name = "import-tar")]
    ImportTar {
        #[arg(value_name = "FILE|-")]
        file: String,
        #[arg(value_name = "NAME")]
        name: Option<String>,
    },
    /// Import a directory tree as an image.
    #[command(name = "import-fs")]
    ImportFs {
        #[arg(value_name = "DIRECTORY")]
        dir: PathBuf,
        #[arg(value_name = "NAME")]
        name: Option<String>,
    },
    /// Export an image as a tar archive (compressed as FILE's suffix says).
    #[command(name = "export-tar")]
    ExportTar {
        #[arg(value_name = "NAME")]
        name: String,
        #[arg(value_name = "FILE|-")]
        file: String,
    },
    /// Download a tar archive over HTTP(S) and import it as an image.
    #[command(name = "pull-tar")]
    PullTar {
        #[arg(value_name = "URL")]
        url: String,
        #[arg(value_name = "NAME")]
        name: Option<String>,
        /// Verify the download: no, checksum (SHA256SUMS) or signature (SHA256SUMS.gpg).
        #[arg(long = "verify", value_name = "MODE", default_value = "signature")]
        verify: String,
    },
    /// Install the NSS module and add "mymachines" to the hosts: line of nsswitch.conf.
    #[command(name = "install-nss")]
    InstallNss {
        /// Operate on this root directory instead of /.
        #[arg(long, value_name = "DIR", default_value = "/")]
        root: PathBuf,
        /// The module to install (default: libnss_mymachines.so next to netspawnctl).
        #[arg(long, value_name = "PATH")]
        library: Option<PathBuf>,
    },
    /// Remove the NSS module and "mymachines" from nsswitch.conf.
    #[command(name = "uninstall-nss")]
    UninstallNss {
        /// Operate on this root directory instead of /.
        #[arg(long, value_name = "DIR", default_value = "/")]
        root: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum Bootstrap {
    /// A small root from the host's static busybox.
    Busybox {
        #[arg(value_name = "NAME")]
        name: String,
        /// Where to put the image (default: the image directory's NAME).
        #[arg(long = "directory", value_name = "DIR")]
        directory: Option<PathBuf>,
    },
    /// A bootable Debian with debootstrap.
    Debian {
        #[arg(value_name = "NAME")]
        name: String,
        /// The Debian suite.
        #[arg(long = "suite", default_value = "bookworm")]
        suite: String,
        /// The mirror URL (default: the host's apt source, else deb.debian.org).
        #[arg(long = "mirror", value_name = "URL")]
        mirror: Option<String>,
        /// Where to put the image (default: the image directory's NAME).
        #[arg(long = "directory", value_name = "DIR")]
        directory: Option<PathBuf>,
    },
}

impl Command {
    /// The verb's name as typed.
    fn verb(&self) -> &'static str {
        match self {
            Command::List => "list",
            Command::Status { .. } => "status",
            Command::Shell { .. } => "shell",
            Command::Login { .. } => "login",
            Command::Poweroff { .. } => "poweroff",
            Command::Reboot { .. } => "reboot",
            Command::Terminate { .. } => "terminate",
            Command::Kill { .. } => "kill",
            Command::SetProperty { .. } => "set-property",
            Command::Top { .. } => "top",
            Command::Start { .. } => "start",
            Command::Logs { .. } => "logs",
            Command::Graph { .. } => "graph",
            Command::Up { .. } => "up",
            Command::Capture { .. } => "capture",
            Command::Netem { .. } => "netem",
            Command::Down { .. } => "down",
            Command::Enable { .. } => "enable",
            Command::Disable { .. } => "disable",
            Command::Install => "install",
            Command::Uninstall => "uninstall",
            Command::LogPump { .. } => "log-pump",
            Command::ListImages => "list-images",
            Command::Bootstrap { .. } => "bootstrap",
            Command::InstallNss { .. } => "install-nss",
            Command::UninstallNss { .. } => "uninstall-nss",
            Command::Show { .. } => "show",
            Command::Bind { .. } => "bind",
            Command::CopyTo { .. } => "copy-to",
            Command::CopyFrom { .. } => "copy-from",
            Command::ImageStatus { .. } => "image-status",
            Command::ShowImage { .. } => "show-image",
            Command::Clone { .. } => "clone",
            Command::Rename { .. } => "rename",
            Command::Remove { .. } => "remove",
            Command::ReadOnly { .. } => "read-only",
            Command::Clean => "clean",
            Command::ImportTar { .. } => "import-tar",
            Command::ImportFs { .. } => "import-fs",
            Command::ExportTar { .. } => "export-tar",
            Command::PullTar { .. } => "pull-tar",
        }
    }

    /// Whether the verb prints facts, and so has a JSON form.
    fn has_json(&self) -> bool {
        matches!(
            self,
            Command::List | Command::Status { .. } | Command::ListImages
        )
    }
}

/// `top --delay=`: a positive time span, seconds by default.
fn delay(s: &str) -> Result<std::time::Duration, String> {
    match netspawn_common::unitfile::values::parse_timespan(s, 1_000_000) {
        Ok(Some(us)) if us > 0 => Ok(std::time::Duration::from_micros(
            us.min(u128::from(u64::MAX)) as u64,
        )),
        _ => Err("expected a positive time span such as 1, 0.5 or 500ms".into()),
    }
}

/// `down --timeout=`: a time span, seconds by default; 0 is allowed.
fn timeout_span(s: &str) -> Result<std::time::Duration, String> {
    match netspawn_common::unitfile::values::parse_timespan(s, 1_000_000) {
        Ok(Some(us)) => Ok(std::time::Duration::from_micros(
            us.min(u128::from(u64::MAX)) as u64,
        )),
        _ => Err("expected a time span such as 10, 2.5s, 500ms or 0".into()),
    }
}

fn run(cli: Cli) -> Result<i32, CtlError> {
    let list = ListOptions {
        output: match cli.output {
            Output::Short => ctl::OutputMode::Short,
            Output::Json => ctl::OutputMode::Json,
            Output::JsonPretty => ctl::OutputMode::JsonPretty,
        },
        no_legend: cli.no_legend,
    };
    let command = cli.command.unwrap_or(Command::List);
    if !command.has_json() {
        // Refused rather than ignored: a script asking for JSON must not get text.
        let wanted = match cli.output {
            Output::Short => None,
            Output::Json => Some("json"),
            Output::JsonPretty => Some("json-pretty"),
        };
        if let Some(w) = wanted {
            return Err(CtlError::Usage(format!(
                "--output={w} is not supported by {}: only list, list-images and status print JSON",
                command.verb()
            )));
        }
    }
    match command {
        Command::List => ctl::list::list(&list),
        Command::Status { names }
            if names.len() == 1 && ctl::topology::is_topology_file(&names[0]) =>
        {
            let json = match list.output {
                ctl::OutputMode::Short => None,
                ctl::OutputMode::Json => Some(false),
                ctl::OutputMode::JsonPretty => Some(true),
            };
            Ok(ctl::topology::deploy::status(
                std::path::Path::new(&names[0]),
                !list.no_legend,
                json,
            )?)
        }
        Command::Status { names } => ctl::status::status(&names, list.output),
        Command::Shell {
            uid,
            setenv,
            spec,
            command,
        } => ctl::shell::shell(&ctl::shell::ShellOptions {
            spec,
            uid,
            setenv,
            command,
            quiet: cli.quiet,
        }),
        Command::Login { name } => ctl::shell::login(&name, cli.quiet),
        Command::Poweroff { names } => ctl::poweroff(&names),
        Command::Reboot { names } => ctl::reboot(&names),
        Command::Terminate { names } => ctl::terminate(&names),
        Command::Kill {
            signal,
            kill_whom,
            names,
        } => {
            let sig = ctl::signal::parse_signal(&signal)?;
            let whom: KillWhom = kill_whom.parse()?;
            ctl::kill(&names, whom, sig)
        }
        Command::SetProperty {
            runtime,
            name,
            assignments,
        } => ctl::limits::set_property(&name, &assignments, runtime),
        Command::Top {
            iterations,
            delay,
            batch,
        } => ctl::top::top(&ctl::top::TopOptions {
            iterations,
            delay,
            batch,
            no_legend: cli.no_legend,
        }),
        Command::Start { enabled, names } => {
            ctl::lifecycle::start::start(&ctl::lifecycle::start::StartOptions { names, enabled })
        }
        Command::Logs {
            follow,
            lines,
            journal,
            name,
        } => ctl::lifecycle::logs::logs(&ctl::lifecycle::logs::LogsOptions {
            name,
            follow,
            lines,
            journal,
        }),
        Command::Up { file } => Ok(ctl::topology::deploy::up(
            &ctl::topology::deploy::UpOptions {
                file,
                quiet: cli.quiet,
            },
        )?),
        Command::Netem {
            rate,
            shaper,
            loss,
            delay,
            jitter,
            show,
            reset,
            endpoint,
        } => Ok(ctl::topology::netem(&ctl::topology::NetemOptions {
            endpoint,
            rate,
            shaper,
            loss,
            delay,
            jitter,
            show,
            reset,
        })?),
        Command::Capture {
            write,
            count,
            mut args,
        } => {
            let endpoint = args.pop().unwrap_or_default();
            Ok(ctl::topology::capture::capture(
                &ctl::topology::capture::CaptureOptions {
                    endpoint,
                    lab: args.pop(),
                    write,
                    count,
                },
            )?)
        }
        Command::Down { file, timeout } => Ok(ctl::topology::deploy::down(&file, timeout)?),
        Command::Graph { format, out, file } => {
            Ok(ctl::topology::graph(&file, &format, out.as_deref())?)
        }
        Command::Enable { names } => ctl::lifecycle::enable::enable(&names, cli.quiet),
        Command::Disable { names } => ctl::lifecycle::enable::disable(&names, cli.quiet),
        Command::Install => ctl::lifecycle::enable::install(cli.quiet),
        Command::Uninstall => ctl::lifecycle::enable::uninstall(cli.quiet),
        Command::LogPump { max_bytes, name } => ctl::lifecycle::logs::pump(&name, max_bytes),
        Command::ListImages => ctl::images::list_images(&list),
        Command::InstallNss { root, library } => ctl::nss::install(&root, library.as_deref()),
        Command::UninstallNss { root } => ctl::nss::uninstall(&root),
        Command::Show {
            names,
            property,
            value,
        } => ctl::show::show(&names, &property, value),
        Command::Bind {
            name,
            src,
            dst,
            read_only,
            mkdir,
        } => ctl::bind::bind(&name, &src, dst.as_deref(), read_only, mkdir),
        Command::CopyTo {
            name,
            src,
            dst,
            force,
        } => ctl::copy::copy_to(&name, &src, dst.as_deref(), force),
        Command::CopyFrom {
            name,
            src,
            dst,
            force,
        } => ctl::copy::copy_from(&name, &src, dst.as_deref(), force),
        Command::ImageStatus { names } => ctl::images::image_status(&names),
        Command::ShowImage {
            names,
            property,
            value,
        } => ctl::images::show_image(&names, &property, value),
        Command::Clone {
            src,
            dst,
            read_only,
        } => ctl::images::clone(&src, &dst, read_only),
        Command::Rename { old, new } => ctl::images::rename(&old, &new),
        Command::Remove { names } => ctl::images::remove(&names),
        Command::ReadOnly { name, value } => ctl::images::read_only_verb(&name, value.as_deref()),
        Command::Clean => ctl::images::clean(cli.quiet),
        Command::ImportTar { file, name } => ctl::images::import_tar(&file, name.as_deref()),
        Command::ImportFs { dir, name } => ctl::images::import_fs(&dir, name.as_deref()),
        Command::ExportTar { name, file } => ctl::images::export_tar(&name, &file),
        Command::PullTar { url, name, verify } => {
            let verify = verify.parse().map_err(CtlError::Usage)?;
            ctl::images::pull_tar(&url, name.as_deref(), verify, cli.quiet)
        }
        Command::Bootstrap { kind } => match kind {
            Bootstrap::Busybox { name, directory } => {
                ctl::images::bootstrap(&BootstrapKind::Busybox, &name, directory.as_deref())
            }
            Bootstrap::Debian {
                name,
                suite,
                mirror,
                directory,
            } => ctl::images::bootstrap(
                &BootstrapKind::Debian { suite, mirror },
                &name,
                directory.as_deref(),
            ),
        },
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false)
        .init();
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                std::process::exit(0);
            }
            // clap's message up to its first blank line is the error proper
            // ("error: ..." plus, for missing arguments, their names): one line.
            let text = e.to_string();
            let head = text.split("\n\n").next().unwrap_or("invalid arguments");
            let line = head.split_whitespace().collect::<Vec<_>>().join(" ");
            eprintln!(
                "netspawnctl: {}",
                line.strip_prefix("error: ").unwrap_or(&line)
            );
            std::process::exit(1);
        }
    };
    init_logging();
    match run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            tracing::debug!(error = ?e, "netspawnctl failed");
            eprintln!("netspawnctl: {e}");
            std::process::exit(1);
        }
    }
}
