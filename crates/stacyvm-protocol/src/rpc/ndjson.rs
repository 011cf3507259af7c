//! Reading `worker.exec_stream`'s live NDJSON (wire reference §9.3): each line is an
//! [`RpcResponse`] whose `result` is a [`StreamChunk`]. The transport splits the body
//! anywhere, so [`LineSplitter`] reassembles lines across pieces, and [`decode_line`] turns one
//! line into what it says. Both only ever see the worker's bytes: they answer every input with
//! a value or an error.

use super::{RpcFailure, RpcResponse, StreamChunk};

/// Splits a byte stream into `\n`-terminated lines, whatever the pieces it arrives in.
#[derive(Debug)]
pub struct LineSplitter {
    buf: Vec<u8>,
    max_line: usize,
}

/// A line longer than the splitter's limit: the stream is not NDJSON we can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineTooLong;

impl LineSplitter {
    pub fn new(max_line: usize) -> Self {
        LineSplitter {
            buf: Vec::new(),
            max_line,
        }
    }

    /// Adds a piece; returns the lines it completed (each with its `\n`).
    pub fn push(&mut self, piece: &[u8]) -> Result<Vec<Vec<u8>>, LineTooLong> {
        let mut lines = Vec::new();
        let mut rest = piece;
        while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
            let (line, after) = rest.split_at(pos + 1);
            if self.buf.len() + line.len() > self.max_line + 1 {
                return Err(LineTooLong);
            }
            let mut full = std::mem::take(&mut self.buf);
            full.extend_from_slice(line);
            lines.push(full);
            rest = after;
        }
        if self.buf.len() + rest.len() > self.max_line {
            return Err(LineTooLong);
        }
        self.buf.extend_from_slice(rest);
        Ok(lines)
    }

    /// The unterminated last line, if the stream ended without `\n`.
    pub fn finish(self) -> Option<Vec<u8>> {
        (!self.buf.is_empty()).then_some(self.buf)
    }
}

/// What one NDJSON line says.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamLine {
    /// Blank, or an answer without a result: nothing to do.
    Nothing,
    /// The worker reports a failure mid-stream.
    Failed(RpcFailure),
    /// Output, or the exit line (`stream: "exit"`).
    Chunk(StreamChunk),
}

/// A line that is not an `RpcResponse` carrying a `StreamChunk`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadLine;

pub fn decode_line(line: &[u8]) -> Result<StreamLine, BadLine> {
    let text = line.trim_ascii();
    if text.is_empty() {
        return Ok(StreamLine::Nothing);
    }
    let r: RpcResponse = serde_json::from_slice(text).map_err(|_| BadLine)?;
    if let Some(f) = r.failure(200) {
        return Ok(StreamLine::Failed(f));
    }
    let Some(result) = r.result else {
        return Ok(StreamLine::Nothing);
    };
    serde_json::from_value(result)
        .map(StreamLine::Chunk)
        .map_err(|_| BadLine)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_across_pieces_and_the_limit() {
        let mut s = LineSplitter::new(8);
        assert_eq!(s.push(b"ab"), Ok(Vec::<Vec<u8>>::new()));
        assert_eq!(
            s.push(b"c\nde\nf"),
            Ok(vec![b"abc\n".to_vec(), b"de\n".to_vec()])
        );
        assert_eq!(s.finish(), Some(b"f".to_vec()));
        let mut s = LineSplitter::new(4);
        assert_eq!(s.push(b"abcd\n"), Ok(vec![b"abcd\n".to_vec()]));
        assert_eq!(s.push(b"abcde"), Err(LineTooLong));
    }

    #[test]
    fn decoding_lines() {
        assert_eq!(decode_line(b"  \n"), Ok(StreamLine::Nothing));
        assert_eq!(decode_line(b"{]"), Err(BadLine));
        let exit = br#"{"id":"x","worker_id":"w","result":{"stream":"exit","exit_code":3}}"#;
        let Ok(StreamLine::Chunk(c)) = decode_line(exit) else {
            panic!("not a chunk")
        };
        assert_eq!((c.stream.as_str(), c.exit_code), ("exit", Some(3)));
        let failed = br#"{"id":"x","worker_id":"w","error":"boom"}"#;
        assert!(matches!(decode_line(failed), Ok(StreamLine::Failed(f)) if f.status == 500));
    }
}
