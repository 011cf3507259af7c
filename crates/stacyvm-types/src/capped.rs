//! Collected command output, bounded by the size of the JSON reply that carries it. The bound
//! is on the encoded reply, not the raw bytes: a NUL byte becomes `\u0000` (six bytes), so a
//! raw cap alone let 64 MiB of NUL become an 805 MB reply.

use crate::StreamKind;

/// Default of `server.max_exec_output`: 16 MiB of encoded stdout and stderr together.
pub const DEFAULT_MAX_EXEC_OUTPUT: usize = 16 << 20;

/// Stdout and stderr of one command, collected up to `cap` encoded bytes together.
#[derive(Debug, Clone)]
pub struct CappedOutput {
    cap: usize,
    out: Vec<u8>,
    err: Vec<u8>,
    truncated: bool,
}

/// What a collected command printed, as it goes into a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collected {
    pub stdout: String,
    pub stderr: String,
    /// Some output was left out to stay within the cap.
    pub truncated: bool,
}

impl CappedOutput {
    pub fn new(cap: usize) -> Self {
        CappedOutput {
            cap,
            out: Vec::new(),
            err: Vec::new(),
            truncated: false,
        }
    }

    /// Keeps `data` while its stream's raw bytes are below the cap (every raw byte encodes to
    /// at least one byte, so more could never fit); the rest is dropped. Per stream, so a flood
    /// on stdout does not hide the error message that follows on stderr.
    pub fn push(&mut self, stream: StreamKind, data: &[u8]) {
        let buf = match stream {
            StreamKind::Stdout => &mut self.out,
            StreamKind::Stderr => &mut self.err,
        };
        let room = self.cap.saturating_sub(buf.len());
        if data.len() > room {
            self.truncated = true;
        }
        buf.extend_from_slice(&data[..data.len().min(room)]);
    }

    /// The output as text (invalid UTF-8 replaced, as the 0.1 reply always did), cut so both
    /// strings together encode to at most the cap. When both are too long each keeps half.
    pub fn finish(self) -> Collected {
        let mut stdout = String::from_utf8_lossy(&self.out).into_owned();
        let mut stderr = String::from_utf8_lossy(&self.err).into_owned();
        let (o, e) = (json_len(&stdout), json_len(&stderr));
        let mut truncated = self.truncated;
        if o + e > self.cap {
            truncated = true;
            let half = self.cap / 2;
            let (o_max, e_max) = if o <= half {
                (o, self.cap - o)
            } else if e <= half {
                (self.cap - e, e)
            } else {
                (half, self.cap - half)
            };
            cut_to(&mut stdout, o_max);
            cut_to(&mut stderr, e_max);
        }
        Collected {
            stdout,
            stderr,
            truncated,
        }
    }
}

/// Bytes `c` takes inside a JSON string as serde_json writes it.
fn char_json_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

/// Bytes `s` takes inside a JSON string, quotes excluded.
pub fn json_len(s: &str) -> usize {
    s.chars().map(char_json_len).sum()
}

/// Cuts `s` at the last character boundary where it still encodes to at most `max` bytes.
fn cut_to(s: &mut String, max: usize) {
    let mut used = 0;
    for (i, c) in s.char_indices() {
        used += char_json_len(c);
        if used > max {
            s.truncate(i);
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(s: &str) -> usize {
        serde_json::to_string(s)
            .map(|j| j.len() - 2)
            .unwrap_or(usize::MAX)
    }

    #[test]
    fn json_len_matches_serde_json() {
        let samples = [
            "plain",
            "\0\u{1}\u{1f}\u{7f}",
            "quote \" back \\ nl \n cr \r tab \t bs \u{8} ff \u{c}",
            "héllo ✓ 𝄞",
            "",
        ];
        for s in samples {
            assert_eq!(json_len(s), encoded(s), "{s:?}");
        }
    }

    #[test]
    fn small_output_is_kept_whole() {
        let mut c = CappedOutput::new(1024);
        c.push(StreamKind::Stdout, b"out\n");
        c.push(StreamKind::Stderr, b"err\n");
        c.push(StreamKind::Stdout, b"more\n");
        let got = c.finish();
        assert_eq!(got.stdout, "out\nmore\n");
        assert_eq!(got.stderr, "err\n");
        assert!(!got.truncated);
    }

    #[test]
    fn nul_bytes_are_capped_on_their_encoding() {
        let cap = 6000;
        let mut c = CappedOutput::new(cap);
        for _ in 0..100 {
            c.push(StreamKind::Stdout, &[0u8; 1000]);
        }
        let got = c.finish();
        assert!(got.truncated);
        let size = encoded(&got.stdout) + encoded(&got.stderr);
        assert!(size <= cap, "{size} > {cap}");
        assert_eq!(got.stdout.len(), cap / 6, "as many NULs as fit");
    }

    #[test]
    fn both_streams_share_the_cap() {
        let cap = 100;
        let mut c = CappedOutput::new(cap);
        c.push(StreamKind::Stderr, b"e");
        c.push(StreamKind::Stdout, &[b'o'; 500]);
        let got = c.finish();
        assert!(got.truncated);
        assert_eq!(got.stderr, "e", "the short stream keeps everything");
        assert_eq!(got.stdout.len(), cap - 1);

        let mut c = CappedOutput::new(cap);
        c.push(StreamKind::Stdout, &[b'\t'; 80]);
        c.push(StreamKind::Stderr, &[b'\t'; 200]);
        let got = c.finish();
        assert_eq!((got.stdout.len(), got.stderr.len()), (25, 25), "half each");
    }

    #[test]
    fn invalid_utf8_never_splits_a_replacement() {
        let mut c = CappedOutput::new(10);
        c.push(StreamKind::Stdout, &[0xff; 10]);
        let got = c.finish();
        assert!(got.truncated);
        assert_eq!(got.stdout, "\u{fffd}".repeat(3));
    }
}
