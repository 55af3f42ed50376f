//! A second reading of each HTTP/1.1 request head, straight from the bytes, for the two facts
//! hyper's parser does not keep: a `#` in the request target (the `http` crate drops the
//! fragment) and a head with both `Content-Length` and `Transfer-Encoding` (hyper drops the
//! length). Both are refused (RFC 9112 §3.2, §6.3) instead of being read the library's way.
//!
//! The reader follows the connection's framing as hyper does (the same `httparse` for heads,
//! then the body by its length or its chunks), so it knows where each head starts. Whatever it
//! cannot follow makes it give up, and every later request on that connection is refused: a
//! disagreement can only cost a refusal, never let a request through unread.

use std::collections::VecDeque;

/// What the head of one request said that its parsed form no longer shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HeadFacts {
    pub fragment: bool,
    pub both_lengths: bool,
    /// The reader lost the framing before this head: nothing is known of it.
    pub unknown: bool,
}

impl HeadFacts {
    /// The refusal these facts call for, if any.
    #[must_use]
    pub fn refusal(self) -> Option<&'static str> {
        if self.unknown {
            Some("the connection's request framing could not be followed")
        } else if self.both_lengths {
            Some("both Content-Length and Transfer-Encoding are present")
        } else if self.fragment {
            Some("the request target contains a fragment ('#')")
        } else {
            None
        }
    }
}

#[derive(Debug)]
enum State {
    /// Collecting a head (bytes kept in `buf` until it is complete).
    Head,
    /// Skipping a body of known length.
    Body(u64),
    /// Chunked body: reading a chunk-size line (kept in `buf`).
    ChunkSize,
    /// Inside a chunk's data, then its CRLF.
    ChunkData(u64),
    ChunkCrlf(u8),
    /// Trailer lines after the last chunk, until an empty line (kept in `buf`).
    Trailers,
    /// An HTTP/2 connection (prior knowledge): nothing to follow.
    Off,
    /// Framing lost: every later head is unknown.
    Lost,
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n";
/// Header fields a head may have here: twice the most `limits.max_headers` allows (the parser's
/// own limit), so a head hyper accepts is never one this reader cannot read.
pub const MAX_HEADERS: usize = 1024;

pub struct HeadReader {
    state: State,
    buf: Vec<u8>,
    max_head: usize,
    facts: VecDeque<HeadFacts>,
    first: bool,
}

impl HeadReader {
    /// `max_head`: the most bytes a head may take (the parser's own limit); past it the reader
    /// gives up (and the parser refuses the head anyway).
    #[must_use]
    pub fn new(max_head: usize) -> HeadReader {
        HeadReader { state: State::Head, buf: Vec::new(), max_head, facts: VecDeque::new(), first: true }
    }

    /// The facts of the next head hyper hands over, in order. A head is always read here
    /// before hyper can parse it, since both see the same bytes and this sees them first.
    pub fn next_facts(&mut self) -> HeadFacts {
        self.facts.pop_front().unwrap_or(HeadFacts { unknown: true, ..HeadFacts::default() })
    }

    /// Part of a head has arrived and the rest has not: what the header deadline times.
    #[must_use]
    pub fn in_head(&self) -> bool {
        matches!(self.state, State::Head) && !self.buf.is_empty()
    }

    /// Feeds bytes as they are read from the connection.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let used = match self.state {
                // Lost: nothing more is queued, and an empty queue reads as unknown.
                State::Off | State::Lost => return,
                State::Head => self.head(data),
                State::Body(n) => {
                    let take = usize::try_from(n).unwrap_or(usize::MAX).min(data.len());
                    let left = n - take as u64;
                    self.state = if left == 0 { State::Head } else { State::Body(left) };
                    take
                }
                State::ChunkSize => self.line(data, Self::chunk_size),
                State::ChunkData(n) => {
                    let take = usize::try_from(n).unwrap_or(usize::MAX).min(data.len());
                    let left = n - take as u64;
                    self.state = if left == 0 { State::ChunkCrlf(0) } else { State::ChunkData(left) };
                    take
                }
                State::ChunkCrlf(seen) => {
                    let want = if seen == 0 { b'\r' } else { b'\n' };
                    self.state = match (data[0] == want, seen) {
                        (true, 0) => State::ChunkCrlf(1),
                        (true, _) => State::ChunkSize,
                        (false, _) => State::Lost,
                    };
                    1
                }
                State::Trailers => self.line(data, Self::trailer),
            };
            data = &data[used..];
        }
    }

    /// Appends to `buf` up to and including the next LF, then hands the line to `done`.
    fn line(&mut self, data: &[u8], done: fn(&mut HeadReader)) -> usize {
        let (take, complete) = match data.iter().position(|&c| c == b'\n') {
            Some(i) => (i + 1, true),
            None => (data.len(), false),
        };
        self.buf.extend_from_slice(&data[..take]);
        if self.buf.len() > 4096 {
            self.state = State::Lost;
        } else if complete {
            done(self);
            self.buf.clear();
        }
        take
    }

    fn chunk_size(&mut self) {
        let line = self.buf.strip_suffix(b"\r\n").unwrap_or(&[]);
        let size = line.split(|&c| c == b';').next().unwrap_or(&[]).trim_ascii_end();
        let parsed = (!size.is_empty() && size.len() <= 16)
            .then(|| std::str::from_utf8(size).ok().and_then(|s| u64::from_str_radix(s, 16).ok()))
            .flatten();
        self.state = match parsed {
            Some(0) => State::Trailers,
            Some(n) => State::ChunkData(n),
            None => State::Lost,
        };
    }

    fn trailer(&mut self) {
        match self.buf.as_slice() {
            b"\r\n" => self.state = State::Head,
            l if l.ends_with(b"\r\n") => {}
            _ => self.state = State::Lost,
        }
    }

    fn head(&mut self, data: &[u8]) -> usize {
        let fresh = self.buf.is_empty();
        // Empty lines before a request line are ignored (RFC 9112 §2.2), as httparse does.
        if fresh && matches!(data[0], b'\r' | b'\n') {
            return 1;
        }
        // Most heads arrive whole in one read: parsed in place, without a copy. httparse says
        // where the head ends, so the bytes are read once.
        if fresh {
            if let Some(len) = self.parse(data) {
                return len;
            }
            self.buf.extend_from_slice(data);
        } else {
            let before = self.buf.len();
            self.buf.extend_from_slice(data);
            let head = std::mem::take(&mut self.buf);
            if let Some(len) = self.parse(&head) {
                // What came after the head in this read is fed again from where it ended.
                return len.saturating_sub(before).min(data.len());
            }
            self.buf = head;
        }
        if self.buf.len() > self.max_head {
            self.state = State::Lost;
        }
        data.len()
    }

    /// Reads one head if `bytes` holds a whole one: its length, with the state set to how its
    /// body is framed; `None` while it is incomplete.
    fn parse(&mut self, bytes: &[u8]) -> Option<usize> {
        if self.first {
            let n = bytes.len().min(H2_PREFACE.len());
            if bytes[..n] == H2_PREFACE[..n] {
                if n < H2_PREFACE.len() {
                    return None;
                }
                self.state = State::Off;
                return Some(bytes.len());
            }
        }
        let mut headers = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut []);
        let len = match req.parse_with_uninit_headers(bytes, &mut headers) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return None,
            Err(_) => {
                self.facts.push_back(HeadFacts { unknown: true, ..HeadFacts::default() });
                self.state = State::Lost;
                return Some(bytes.len());
            }
        };
        self.first = false;
        let mut facts = HeadFacts { fragment: req.path.is_some_and(|p| p.contains('#')), ..HeadFacts::default() };
        let (mut length, mut chunked, mut te) = (None, false, false);
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("transfer-encoding") {
                te = true;
                chunked = h
                    .value
                    .rsplit(|&c| c == b',')
                    .next()
                    .is_some_and(|v| v.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            } else if h.name.eq_ignore_ascii_case("content-length") {
                // An unreadable one is refused by hyper, which then reads nothing more.
                length = length.or(Some(crate::framing::parse_length(h.value).unwrap_or(0)));
            }
        }
        facts.both_lengths = te && length.is_some();
        self.facts.push_back(facts);
        self.state = match (te, chunked, length) {
            (true, true, _) => State::ChunkSize,
            (true, false, _) => State::Lost,
            (false, _, Some(0)) | (false, _, None) => State::Head,
            (false, _, Some(n)) => State::Body(n),
        };
        Some(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts_of(stream: &[u8], chunk: usize) -> Vec<HeadFacts> {
        let mut r = HeadReader::new(32 * 1024);
        for piece in stream.chunks(chunk) {
            r.feed(piece);
        }
        r.facts.into_iter().collect()
    }

    const PLAIN: HeadFacts = HeadFacts { fragment: false, both_lengths: false, unknown: false };

    /// Every split of the stream into reads gives the same answer.
    fn each_split(stream: &[u8], want: &[HeadFacts]) {
        for chunk in [1, 2, 3, 7, 64, stream.len().max(1)] {
            assert_eq!(facts_of(stream, chunk), want, "reads of {chunk} bytes");
        }
    }

    #[test]
    fn plain_requests_in_a_row_say_nothing() {
        let s = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /c HTTP/1.1\r\n\r\n";
        each_split(s, &[PLAIN; 3]);
    }

    #[test]
    fn a_fragment_in_the_target_is_seen() {
        let s = b"GET /a#frag HTTP/1.1\r\nHost: x\r\n\r\nGET /a?q=1#f HTTP/1.1\r\n\r\n";
        each_split(s, &[HeadFacts { fragment: true, ..PLAIN }; 2]);
    }

    #[test]
    fn both_lengths_are_seen_whatever_their_order() {
        let s = b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n\
                  POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n";
        each_split(s, &[HeadFacts { both_lengths: true, ..PLAIN }; 2]);
    }

    #[test]
    fn a_chunked_body_with_extensions_and_trailers_is_followed_to_the_next_head() {
        let s = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nGET /\r\n\
                  A\r\n0123456789\r\n0\r\nX-Trailer: 1\r\n\r\nGET /x#y HTTP/1.1\r\n\r\n";
        each_split(s, &[PLAIN, HeadFacts { fragment: true, ..PLAIN }]);
    }

    #[test]
    fn a_body_that_looks_like_a_request_is_not_read_as_one() {
        let body = b"GET /x#y HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut s = format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        s.extend_from_slice(body);
        s.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        each_split(&s, &[PLAIN, PLAIN]);
    }

    #[test]
    fn empty_lines_between_requests_are_skipped() {
        each_split(b"\r\nGET / HTTP/1.1\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\n\r\n", &[PLAIN, PLAIN]);
    }

    #[test]
    fn framing_it_cannot_follow_makes_every_later_head_unknown() {
        let mut r = HeadReader::new(1024);
        r.feed(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n");
        r.feed(b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(r.next_facts(), PLAIN);
        assert!(r.next_facts().unknown);
        assert!(r.next_facts().unknown, "nothing queued reads as unknown, never as clean");
    }

    #[test]
    fn http2_prior_knowledge_turns_it_off() {
        let mut r = HeadReader::new(1024);
        r.feed(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00GET /#x HTTP/1.1\r\n\r\n");
        assert!(r.facts.is_empty());
    }

    #[test]
    fn refusals_name_the_reason() {
        assert_eq!(PLAIN.refusal(), None);
        assert!(HeadFacts { fragment: true, ..PLAIN }.refusal().unwrap().contains("fragment"));
        assert!(HeadFacts { both_lengths: true, ..PLAIN }.refusal().unwrap().contains("Content-Length"));
    }
}
