//! The framing of the messages our own processes exchange (the launcher and
//! the container's PID 1, netspawnctl and its helper in a machine): one frame
//! is a tag byte, the payload's length (u32, little-endian) and the payload.
//! Each protocol is an enum implementing [`Message`]; this module turns frames
//! into bytes and back. A peer may be half-dead or confused: every malformed
//! frame (truncated, overlong, unknown tag, a payload of the wrong shape,
//! bytes after the frame) is an error, never a panic.

use thiserror::Error;

/// Bytes before the payload: the tag and the payload's length.
pub const HEADER_LEN: usize = 5;
/// The largest payload accepted (and sent: text is cut to fit).
pub const MAX_PAYLOAD: usize = 16 * 1024;
/// The largest frame; a receive buffer of this size holds any frame.
pub const MAX_FRAME: usize = HEADER_LEN + MAX_PAYLOAD;

/// Why bytes are not a message.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    #[error("truncated message ({have} of {need} bytes)")]
    Truncated { have: usize, need: usize },
    #[error("message payload of {0} bytes is longer than {MAX_PAYLOAD}")]
    Overlong(usize),
    #[error("unknown message tag {0:#04x}")]
    UnknownTag(u8),
    #[error("malformed {0} message")]
    Malformed(&'static str),
    #[error("{0} bytes after the message")]
    Trailing(usize),
}

/// One frame, borrowed from the bytes it was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub tag: u8,
    pub payload: &'a [u8],
}

impl<'a> Frame<'a> {
    /// The payload as a little-endian u32 (exactly four bytes).
    pub fn u32(&self, what: &'static str) -> Result<u32, FrameError> {
        let bytes: [u8; 4] = self
            .payload
            .try_into()
            .map_err(|_| FrameError::Malformed(what))?;
        Ok(u32::from_le_bytes(bytes))
    }

    /// The payload as a little-endian i32 (exactly four bytes).
    pub fn i32(&self, what: &'static str) -> Result<i32, FrameError> {
        self.u32(what).map(|v| v as i32)
    }

    /// The payload as UTF-8 text.
    pub fn text(&self, what: &'static str) -> Result<String, FrameError> {
        std::str::from_utf8(self.payload)
            .map(str::to_string)
            .map_err(|_| FrameError::Malformed(what))
    }

    /// An empty payload.
    pub fn empty(&self, what: &'static str) -> Result<(), FrameError> {
        if self.payload.is_empty() {
            Ok(())
        } else {
            Err(FrameError::Malformed(what))
        }
    }
}

/// Encodes one frame; a payload over [`MAX_PAYLOAD`] is refused.
pub fn encode(tag: u8, payload: &[u8]) -> Result<Vec<u8>, FrameError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(FrameError::Overlong(payload.len()));
    }
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.push(tag);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    Ok(out)
}

/// Decodes the frame at the start of `buf`; returns it and the bytes after it.
pub fn decode(buf: &[u8]) -> Result<(Frame<'_>, &[u8]), FrameError> {
    let Some((header, rest)) = buf.split_first_chunk::<HEADER_LEN>() else {
        return Err(FrameError::Truncated {
            have: buf.len(),
            need: HEADER_LEN,
        });
    };
    let len = u32::from_le_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if len > MAX_PAYLOAD {
        return Err(FrameError::Overlong(len));
    }
    if rest.len() < len {
        return Err(FrameError::Truncated {
            have: buf.len(),
            need: HEADER_LEN + len,
        });
    }
    let (payload, rest) = rest.split_at(len);
    Ok((
        Frame {
            tag: header[0],
            payload,
        },
        rest,
    ))
}

/// Decodes `buf` as exactly one frame (one datagram holds one message).
pub fn decode_exact(buf: &[u8]) -> Result<Frame<'_>, FrameError> {
    match decode(buf)? {
        (frame, []) => Ok(frame),
        (_, rest) => Err(FrameError::Trailing(rest.len())),
    }
}

/// Text cut to [`MAX_PAYLOAD`] bytes at a character boundary, so an error
/// message of any length can still be sent.
pub fn text_payload(text: &str) -> &[u8] {
    let mut end = text.len().min(MAX_PAYLOAD);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text.as_bytes()[..end]
}

/// A protocol's messages: each is a tag and a payload.
pub trait Message: Sized {
    /// The message's tag and payload.
    fn to_frame(&self) -> (u8, Vec<u8>);
    /// The message a frame holds; unknown tags and malformed payloads are errors.
    fn from_frame(frame: Frame<'_>) -> Result<Self, FrameError>;

    /// The message as bytes.
    fn encode(&self) -> Result<Vec<u8>, FrameError> {
        let (tag, payload) = self.to_frame();
        encode(tag, &payload)
    }

    /// The message `buf` holds, exactly.
    fn decode(buf: &[u8]) -> Result<Self, FrameError> {
        Self::from_frame(decode_exact(buf)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        for payload in [&b""[..], b"x", &[0u8; MAX_PAYLOAD]] {
            let bytes = encode(7, payload).unwrap();
            assert_eq!(bytes.len(), HEADER_LEN + payload.len());
            let frame = decode_exact(&bytes).unwrap();
            assert_eq!(frame.tag, 7);
            assert_eq!(frame.payload, payload);
        }
    }

    #[test]
    fn golden_bytes() {
        assert_eq!(encode(b'E', b"hi").unwrap(), b"E\x02\x00\x00\x00hi");
    }

    #[test]
    fn frames_follow_each_other() {
        let mut bytes = encode(1, b"a").unwrap();
        bytes.extend(encode(2, b"bc").unwrap());
        let (first, rest) = decode(&bytes).unwrap();
        assert_eq!((first.tag, first.payload), (1, &b"a"[..]));
        let (second, rest) = decode(rest).unwrap();
        assert_eq!(
            (second.tag, second.payload, rest),
            (2, &b"bc"[..], &b""[..])
        );
        assert_eq!(
            decode_exact(&bytes).unwrap_err(),
            FrameError::Trailing(HEADER_LEN + 2)
        );
    }

    #[test]
    fn truncated_frames_are_errors() {
        let bytes = encode(1, b"hello").unwrap();
        for cut in 0..bytes.len() {
            assert!(
                matches!(
                    decode(&bytes[..cut]),
                    Err(FrameError::Truncated { have, .. }) if have == cut
                ),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn overlong_frames_are_errors() {
        assert_eq!(
            encode(1, &vec![0; MAX_PAYLOAD + 1]).unwrap_err(),
            FrameError::Overlong(MAX_PAYLOAD + 1)
        );
        // A length field that claims more than any frame may hold, whatever follows.
        let mut bytes = vec![1];
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            decode(&bytes).unwrap_err(),
            FrameError::Overlong(u32::MAX as usize)
        );
    }

    #[test]
    fn payload_shapes_are_checked() {
        let f = |payload: &'static [u8]| Frame { tag: 0, payload };
        assert_eq!(f(&[1, 0, 0, 0]).u32("n"), Ok(1));
        assert_eq!(f(&[0xff; 4]).i32("n"), Ok(-1));
        assert_eq!(f(&[1, 0, 0]).u32("n"), Err(FrameError::Malformed("n")));
        assert_eq!(
            f(&[1, 0, 0, 0, 0]).u32("n"),
            Err(FrameError::Malformed("n"))
        );
        assert_eq!(f(b"ok").text("t"), Ok("ok".to_string()));
        assert_eq!(f(b"\xff").text("t"), Err(FrameError::Malformed("t")));
        assert_eq!(f(b"").empty("e"), Ok(()));
        assert_eq!(f(b"x").empty("e"), Err(FrameError::Malformed("e")));
    }

    #[test]
    fn long_text_is_cut_at_a_character_boundary() {
        let text = "é".repeat(MAX_PAYLOAD);
        let cut = text_payload(&text);
        assert!(cut.len() <= MAX_PAYLOAD && cut.len() >= MAX_PAYLOAD - 1);
        assert!(std::str::from_utf8(cut).is_ok());
        assert_eq!(text_payload("short"), b"short");
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap sweep standing in for a fuzz target: every short prefix of
        // every header shape decodes to a frame or an error.
        let mut seed = 0x2545_f491_u32;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            let len = (seed % 24) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|i| (seed >> (i % 24)) as u8).collect();
            if len >= HEADER_LEN && seed & 1 == 0 {
                bytes[1..HEADER_LEN].copy_from_slice(&((len - HEADER_LEN) as u32).to_le_bytes());
            }
            let _ = decode(&bytes);
            let _ = decode_exact(&bytes);
        }
    }
}
