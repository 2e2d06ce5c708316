//! An incremental splitter for server-sent events.
//!
//! Upstream bytes arrive in arbitrary pieces: an event may be split across reads, several events may
//! share one read, lines may end in `\n` or `\r\n`, and servers interleave comment lines (`: ping`)
//! as keep-alives. The splitter yields whole events, each with its raw bytes (to forward unchanged)
//! and its `data` payload (to inspect).

use bytes::{Bytes, BytesMut};

/// One complete event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The event's bytes exactly as received, including the blank line that ends it.
    pub raw: Bytes,
    /// The joined `data:` payload; `None` for events with no data line (comments, keep-alives).
    pub data: Option<Bytes>,
}

impl SseEvent {
    /// Whether this is the `data: [DONE]` sentinel that ends OpenAI streams.
    pub fn is_done(&self) -> bool {
        self.data.as_deref() == Some(b"[DONE]")
    }
}

/// Splits a byte stream into events.
#[derive(Debug, Default)]
pub struct SseSplitter {
    buf: BytesMut,
    /// How far `buf` has been searched for an event boundary without finding one.
    scanned: usize,
}

impl SseSplitter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the upstream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes held that do not yet form a whole event.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The next whole event, if one has arrived.
    pub fn next_event(&mut self) -> Option<SseEvent> {
        let end = self.find_boundary()?;
        self.scanned = 0;
        let raw = self.buf.split_to(end).freeze();
        let data = parse_data(&raw);
        Some(SseEvent { raw, data })
    }

    /// At end of input: whatever remains, as a final event (servers may omit the last blank line).
    pub fn finish(&mut self) -> Option<SseEvent> {
        if self.buf.iter().all(|b| b.is_ascii_whitespace()) {
            self.buf.clear();
            return None;
        }
        let raw = self.buf.split().freeze();
        self.scanned = 0;
        let data = parse_data(&raw);
        Some(SseEvent { raw, data })
    }

    /// Index just past the first blank line (`\n\n` or `\r\n\r\n`, mixed endings allowed).
    fn find_boundary(&mut self) -> Option<usize> {
        let buf = &self.buf[..];
        let mut i = self.scanned.saturating_sub(1);
        while let Some(off) = memchr_nl(&buf[i..]) {
            let nl = i + off;
            let next = nl + 1;
            match buf.get(next) {
                Some(b'\n') => return Some(next + 1),
                Some(b'\r') => match buf.get(next + 1) {
                    Some(b'\n') => return Some(next + 2),
                    Some(_) => {}
                    None => {
                        self.scanned = nl;
                        return None;
                    }
                },
                Some(_) => {}
                None => {
                    self.scanned = nl;
                    return None;
                }
            }
            i = next;
        }
        self.scanned = buf.len();
        None
    }
}

fn memchr_nl(haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == b'\n')
}

/// Joins the `data:` lines of one event (a single leading space after the colon is dropped).
fn parse_data(raw: &Bytes) -> Option<Bytes> {
    let mut first: Option<Bytes> = None;
    let mut joined: Option<Vec<u8>> = None;
    let mut start = 0;
    while start < raw.len() {
        let end = raw[start..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(raw.len(), |p| start + p);
        let mut line_end = end;
        if line_end > start && raw[line_end - 1] == b'\r' {
            line_end -= 1;
        }
        let line = &raw[start..line_end];
        if let Some(rest) = line.strip_prefix(b"data:") {
            let skip = usize::from(rest.first() == Some(&b' '));
            let value_start = start + 5 + skip;
            let value = raw.slice(value_start..line_end);
            match (&mut first, &mut joined) {
                (None, _) => first = Some(value),
                (Some(f), None) => {
                    let mut v = f.to_vec();
                    v.push(b'\n');
                    v.extend_from_slice(&value);
                    joined = Some(v);
                }
                (Some(_), Some(v)) => {
                    v.push(b'\n');
                    v.extend_from_slice(&value);
                }
            }
        }
        start = end + 1;
    }
    match joined {
        Some(v) => Some(Bytes::from(v)),
        None => first,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(splitter: &mut SseSplitter) -> Vec<SseEvent> {
        std::iter::from_fn(|| splitter.next_event()).collect()
    }

    #[test]
    fn splits_events_and_keeps_raw_bytes() {
        let mut s = SseSplitter::new();
        s.push(b"data: {\"a\":1}\n\ndata: [DONE]\n\n");
        let events = all(&mut s);
        assert_eq!(events.len(), 2);
        assert_eq!(&events[0].raw[..], b"data: {\"a\":1}\n\n");
        assert_eq!(events[0].data.as_deref(), Some(&b"{\"a\":1}"[..]));
        assert!(events[1].is_done());
        assert_eq!(s.pending(), 0);
    }

    #[test]
    fn reassembles_events_split_at_every_byte() {
        let input = b": keep-alive\n\ndata: {\"x\":\"y\"}\r\n\r\ndata: [DONE]\n\n";
        let mut s = SseSplitter::new();
        let mut events = Vec::new();
        for b in input.iter() {
            s.push(std::slice::from_ref(b));
            events.extend(all(&mut s));
        }
        assert_eq!(events.len(), 3);
        assert_eq!(events[0].data, None);
        assert_eq!(&events[0].raw[..], b": keep-alive\n\n");
        assert_eq!(events[1].data.as_deref(), Some(&b"{\"x\":\"y\"}"[..]));
        assert!(events[2].is_done());
        let rejoined: Vec<u8> = events.iter().flat_map(|e| e.raw.to_vec()).collect();
        assert_eq!(rejoined, input);
    }

    #[test]
    fn joins_multiline_data_and_accepts_no_space() {
        let mut s = SseSplitter::new();
        s.push(b"event: message\ndata:one\ndata: two\n\n");
        let e = s.next_event().unwrap();
        assert_eq!(e.data.as_deref(), Some(&b"one\ntwo"[..]));
    }

    #[test]
    fn finish_returns_unterminated_tail() {
        let mut s = SseSplitter::new();
        s.push(b"data: [DONE]");
        assert!(s.next_event().is_none());
        assert!(s.finish().unwrap().is_done());
        s.push(b"\n\n");
        assert!(s.next_event().is_some());
        assert!(s.finish().is_none());
    }
}
