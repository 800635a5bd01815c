//! MLLP framing (HL7 v2 Minimal Lower Layer Protocol): `0x0B message 0x1C 0x0D`.
//!
//! A pure state machine: bytes in, frames out. It copes with a frame split over many reads,
//! several frames in one read, bytes outside a frame (skipped and counted, never fatal), and
//! frames larger than the limit (dropped up to their end, reported once).

/// Start block.
pub const SB: u8 = 0x0b;
/// End block, followed by [`CR`].
pub const EB: u8 = 0x1c;
pub const CR: u8 = 0x0d;

/// What the framer found in the bytes fed to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A complete frame's content, without the envelope.
    Frame(Vec<u8>),
    /// A frame longer than the limit was discarded.
    Oversized { bytes: usize },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Outside a frame: waiting for SB.
    Idle,
    /// Inside a frame.
    Body,
    /// Saw EB inside a frame: CR ends the frame.
    End,
    /// Inside a frame past the limit: discarding up to its end.
    Skipping,
}

#[derive(Debug)]
pub struct Framer {
    state: State,
    buf: Vec<u8>,
    max: usize,
    skipped: usize,
    /// Bytes seen outside any frame since the start.
    pub stray_bytes: u64,
}

impl Framer {
    pub fn new(max_frame_bytes: usize) -> Self {
        Framer {
            state: State::Idle,
            buf: Vec::new(),
            max: max_frame_bytes,
            skipped: 0,
            stray_bytes: 0,
        }
    }

    /// Feeds bytes; returns every frame they complete, in order.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Item> {
        let mut out = Vec::new();
        for &b in bytes {
            match (self.state, b) {
                (State::Idle, SB) => {
                    self.state = State::Body;
                    self.buf.clear();
                }
                (State::Idle, _) => self.stray_bytes += 1,
                // A new SB inside a frame: the previous frame was never closed; start again.
                (State::Body | State::End, SB) => {
                    self.stray_bytes += self.buf.len() as u64 + 1;
                    self.buf.clear();
                    self.state = State::Body;
                }
                (State::Body, EB) => self.state = State::End,
                (State::End, CR) => {
                    out.push(Item::Frame(std::mem::take(&mut self.buf)));
                    self.state = State::Idle;
                }
                // EB not followed by CR is data (some senders omit nothing, but be lenient).
                (State::End, _) => {
                    self.buf.push(EB);
                    self.state = State::Body;
                    self.byte(b);
                }
                (State::Body, _) => self.byte(b),
                (State::Skipping, EB) => {
                    out.push(Item::Oversized {
                        bytes: self.skipped,
                    });
                    self.skipped = 0;
                    self.state = State::Idle;
                }
                (State::Skipping, _) => self.skipped += 1,
            }
        }
        out
    }

    fn byte(&mut self, b: u8) {
        if self.buf.len() >= self.max {
            self.skipped = self.buf.len() + 1;
            self.buf = Vec::new();
            self.state = State::Skipping;
        } else {
            self.buf.push(b);
        }
    }
}

/// Wraps a message in the MLLP envelope.
pub fn frame(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 3);
    out.push(SB);
    out.extend_from_slice(message);
    out.extend_from_slice(&[EB, CR]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(chunks: &[&[u8]], max: usize) -> (Vec<Item>, u64) {
        let mut f = Framer::new(max);
        let items = chunks.iter().flat_map(|c| f.push(c)).collect();
        (items, f.stray_bytes)
    }

    #[test]
    fn frames_split_over_reads_and_several_in_one_read() {
        let whole = [frame(b"MSH|a"), frame(b"MSH|b")].concat();
        for split in 0..whole.len() {
            let (items, stray) = check(&[&whole[..split], &whole[split..]], 100);
            assert_eq!(
                items,
                [
                    Item::Frame(b"MSH|a".to_vec()),
                    Item::Frame(b"MSH|b".to_vec())
                ],
                "split at {split}"
            );
            assert_eq!(stray, 0);
        }
    }

    #[test]
    fn stray_bytes_and_unclosed_frames_are_skipped() {
        let input = [
            b"junk".as_slice(),
            &[SB],
            b"lost",
            &frame(b"MSH|ok"),
            b"\r\n",
        ]
        .concat();
        let (items, stray) = check(&[&input], 100);
        assert_eq!(items, [Item::Frame(b"MSH|ok".to_vec())]);
        assert_eq!(stray, 4 + 5 + 2);
    }

    #[test]
    fn oversized_frame_is_reported_and_the_next_one_still_read() {
        let input = [frame(&[b'x'; 50]), frame(b"MSH|next")].concat();
        let (items, _) = check(&[&input], 10);
        assert_eq!(
            items,
            [
                Item::Oversized { bytes: 50 },
                Item::Frame(b"MSH|next".to_vec())
            ]
        );
    }

    #[test]
    fn eb_without_cr_is_data() {
        let input = [&[SB][..], b"a", &[EB], b"b", &[EB, CR]].concat();
        let (items, _) = check(&[&input], 100);
        assert_eq!(items, [Item::Frame(vec![b'a', EB, b'b'])]);
    }
}
