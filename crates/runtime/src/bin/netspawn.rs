//! `netspawn`: spawn a command or OS in a light-weight container.

use netspawn::config::{self, cli};
use netspawn_common::paths::Paths;

fn main() {
    std::process::exit(real_main());
}

fn real_main() -> i32 {
    let args = match cli::parse(std::env::args_os()) {
        Ok(Ok(a)) => a,
        Ok(Err(text)) => {
            print!("{text}");
            return 0;
        }
        Err(line) => {
            eprintln!("netspawn: {line}");
            return 1;
        }
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
    let paths = Paths::from_env();
    let cfg = match config::load(args, &paths) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("netspawn: {e}");
            return 1;
        }
    };
    match netspawn::launch::run(&cfg, &paths) {
        Ok(status) => status,
        Err(e) => {
            eprintln!("netspawn: {e}");
            1
        }
    }
}
