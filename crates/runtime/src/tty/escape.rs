//! The escape from a forwarded terminal: Ctrl-] pressed three times within
//! one second (any other byte in between starts over), as systemd-nspawn's
//! and machinectl's pty forwarder has it.

use std::time::{Duration, Instant};

/// The escape byte, Ctrl-].
pub const ESCAPE_BYTE: u8 = 0x1d;
/// Presses needed, and the window they must fall in (inclusive).
pub const ESCAPE_PRESSES: u32 = 3;
pub const ESCAPE_WINDOW: Duration = Duration::from_secs(1);

/// Recognises the escape in typed input.
#[derive(Debug, Default)]
pub struct EscapeDetector {
    count: u32,
    first: Option<Instant>,
}

impl EscapeDetector {
    /// Feeds input typed at `now`; true once the escape sequence is complete.
    pub fn feed(&mut self, input: &[u8], now: Instant) -> bool {
        for b in input {
            if *b != ESCAPE_BYTE {
                self.count = 0;
                self.first = None;
                continue;
            }
            match self.first {
                Some(t) if now.duration_since(t) <= ESCAPE_WINDOW => self.count += 1,
                _ => {
                    self.first = Some(now);
                    self.count = 1;
                }
            }
            if self.count >= ESCAPE_PRESSES {
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_within_a_second() {
        let t0 = Instant::now();
        let mut d = EscapeDetector::default();
        assert!(!d.feed(&[0x1d, 0x1d], t0));
        assert!(d.feed(&[0x1d], t0 + Duration::from_millis(500)));

        let mut d = EscapeDetector::default();
        assert!(!d.feed(b"ls\r\x1d", t0));
        assert!(!d.feed(b"\x1d", t0 + Duration::from_millis(300)));
        assert!(d.feed(b"\x1d", t0 + Duration::from_millis(900)));

        let mut d = EscapeDetector::default();
        assert!(d.feed(b"\x1d\x1d\x1d", t0), "in one read");
    }

    #[test]
    fn the_window_is_inclusive() {
        let t0 = Instant::now();
        let mut d = EscapeDetector::default();
        assert!(!d.feed(b"\x1d\x1d", t0));
        assert!(d.feed(b"\x1d", t0 + ESCAPE_WINDOW), "exactly 1 s counts");

        let mut d = EscapeDetector::default();
        assert!(!d.feed(b"\x1d\x1d", t0));
        assert!(
            !d.feed(b"\x1d", t0 + ESCAPE_WINDOW + Duration::from_millis(1)),
            "just over 1 s starts over"
        );
    }

    #[test]
    fn too_slow_starts_over() {
        let t0 = Instant::now();
        let mut d = EscapeDetector::default();
        assert!(!d.feed(&[0x1d, 0x1d], t0));
        assert!(
            !d.feed(&[0x1d], t0 + Duration::from_millis(1500)),
            "too slow: starts over"
        );
        assert!(!d.feed(&[0x1d], t0 + Duration::from_millis(1600)));
        assert!(d.feed(&[0x1d], t0 + Duration::from_millis(1700)));
    }

    #[test]
    fn other_input_in_between_starts_over() {
        let t0 = Instant::now();
        let mut d = EscapeDetector::default();
        assert!(!d.feed(&[0x1d, 0x1d, b'a', 0x1d], t0), "other input resets");
        assert!(d.feed(b"\x1d\x1d\x1d", t0));

        let mut d = EscapeDetector::default();
        assert!(!d.feed(b"\x1d\x1dx\x1d", t0));
        assert!(!d.feed(b"\x1d", t0));
        assert!(d.feed(b"\x1d", t0));
    }
}
