//! The container's console as systemd-nspawn's `--console=` wires it. The
//! pty, raw mode, window size and the forwarder with its Ctrl-] ×3 escape
//! live in [`crate::tty`], shared with netspawnctl's `shell` and `login`.

/// How the container's console is wired (systemd-nspawn's `--console=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ConsoleMode {
    /// A pty, forwarded both ways to our terminal.
    Interactive,
    /// A pty; the container's output is forwarded, input is not.
    ReadOnly,
    /// A pty nobody reads or writes.
    Passive,
    /// No pty: the container gets our standard input, output and error.
    Pipe,
}

impl ConsoleMode {
    /// The container's output goes to our standard output.
    pub fn forwards_output(self) -> bool {
        matches!(self, ConsoleMode::Interactive | ConsoleMode::ReadOnly)
    }

    /// Our standard input goes to the container.
    pub fn forwards_input(self) -> bool {
        self == ConsoleMode::Interactive
    }
}
