//! Output records as the HTTP API writes them (one NDJSON line each): data as UTF-8 text
//! (invalid bytes replaced) or base64 (exact bytes).

use serde::Serialize;
use stacyvm_types::{OutputRecord, OutputStream};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Text,
    Base64,
}

/// One line of `…/output`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Line {
    Data {
        seq: u64,
        stream: &'static str,
        data: String,
    },
    Gap {
        seq: u64,
        stream: &'static str,
        dropped_bytes: u64,
    },
    Exit {
        seq: u64,
        stream: &'static str,
        exit_code: i32,
        signal: Option<&'static str>,
    },
}

fn stream_name(s: OutputStream) -> &'static str {
    match s {
        OutputStream::Stdout => "stdout",
        OutputStream::Stderr => "stderr",
        OutputStream::Pty => "pty",
    }
}

/// Appends `line` and a newline to `out`.
pub fn record_line(line: &Line, out: &mut Vec<u8>) {
    if serde_json::to_writer(&mut *out, line).is_ok() {
        out.push(b'\n');
    }
}

/// Bytes at the end of `b` that start a UTF-8 sequence the next record may complete.
fn incomplete_tail(b: &[u8]) -> usize {
    let mut rest = b;
    loop {
        match std::str::from_utf8(rest) {
            Ok(_) => return 0,
            Err(e) => match e.error_len() {
                None => return rest.len() - e.valid_up_to(),
                Some(n) => rest = &rest[e.valid_up_to() + n..],
            },
        }
    }
}

/// Turns records into lines. In text mode a character split between two adjacent records of
/// the same stream is kept whole: the partial bytes move to the next record, whose `seq` (the
/// offset of its first byte) moves back by as many bytes, so `seq` stays exact.
#[derive(Debug, Default)]
pub struct TextDecoder {
    /// `(seq of the first held byte, stream, bytes)`.
    held: Option<(u64, OutputStream, Vec<u8>)>,
}

impl TextDecoder {
    pub fn push(&mut self, rec: OutputRecord, enc: Encoding) -> Vec<Line> {
        let mut out = Vec::new();
        match rec {
            OutputRecord::Data { seq, stream, data } if enc == Encoding::Base64 => {
                out.push(Line::Data {
                    seq,
                    stream: stream_name(stream),
                    data: stacyvm_protocol::base64::encode(&data),
                });
            }
            OutputRecord::Data { seq, stream, data } => {
                let (mut start, mut bytes) = (seq, data);
                if let Some((hseq, hstream, mut held)) = self.held.take() {
                    if hstream == stream && hseq + held.len() as u64 == seq {
                        held.extend_from_slice(&bytes);
                        (start, bytes) = (hseq, held);
                    } else {
                        out.push(lossy(hseq, hstream, &held));
                    }
                }
                let keep = incomplete_tail(&bytes);
                let cut = bytes.len() - keep;
                if cut > 0 {
                    out.push(lossy(start, stream, &bytes[..cut]));
                }
                if keep > 0 {
                    self.held = Some((start + cut as u64, stream, bytes[cut..].to_vec()));
                }
            }
            OutputRecord::Gap { seq, dropped_bytes } => {
                out.extend(self.finish());
                out.push(Line::Gap {
                    seq,
                    stream: "gap",
                    dropped_bytes,
                });
            }
            OutputRecord::Exit {
                seq,
                exit_code,
                signal,
            } => {
                out.extend(self.finish());
                out.push(Line::Exit {
                    seq,
                    stream: "exit",
                    exit_code,
                    signal: signal.map(stacyvm_types::Signal::as_str),
                });
            }
        }
        out
    }

    /// What is still held, as text with the partial character replaced.
    pub fn finish(&mut self) -> Option<Line> {
        self.held
            .take()
            .map(|(seq, stream, bytes)| lossy(seq, stream, &bytes))
    }
}

fn lossy(seq: u64, stream: OutputStream, b: &[u8]) -> Line {
    Line::Data {
        seq,
        stream: stream_name(stream),
        data: String::from_utf8_lossy(b).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(seq: u64, stream: OutputStream, b: &[u8]) -> OutputRecord {
        OutputRecord::Data {
            seq,
            stream,
            data: b.to_vec(),
        }
    }

    #[test]
    fn split_characters_stay_whole_and_seq_stays_exact() {
        let mut d = TextDecoder::default();
        let euro = "€".as_bytes(); // 3 bytes
        let a = d.push(
            data(0, OutputStream::Stdout, &[b'a', euro[0]]),
            Encoding::Text,
        );
        assert_eq!(
            a,
            [Line::Data {
                seq: 0,
                stream: "stdout",
                data: "a".into()
            }]
        );
        let b = d.push(data(2, OutputStream::Stdout, &euro[1..]), Encoding::Text);
        assert_eq!(
            b,
            [Line::Data {
                seq: 1,
                stream: "stdout",
                data: "€".into()
            }]
        );
        assert_eq!(d.finish(), None);
    }

    #[test]
    fn invalid_bytes_are_replaced_and_held_bytes_flush() {
        let mut d = TextDecoder::default();
        let a = d.push(
            data(0, OutputStream::Stdout, b"\xff\x00x\xe2"),
            Encoding::Text,
        );
        assert_eq!(
            a,
            [Line::Data {
                seq: 0,
                stream: "stdout",
                data: "\u{fffd}\u{0}x".into()
            }]
        );
        // Another stream comes between: the held byte is written on its own, replaced.
        let b = d.push(data(4, OutputStream::Stderr, b"e"), Encoding::Text);
        assert_eq!(b.len(), 2);
        assert_eq!(
            b[0],
            Line::Data {
                seq: 3,
                stream: "stdout",
                data: "\u{fffd}".into()
            }
        );
        let e = d.push(
            OutputRecord::Exit {
                seq: 5,
                exit_code: 0,
                signal: None,
            },
            Encoding::Text,
        );
        let mut line = Vec::new();
        record_line(&e[0], &mut line);
        assert_eq!(
            String::from_utf8(line).unwrap_or_default(),
            "{\"seq\":5,\"stream\":\"exit\",\"exit_code\":0,\"signal\":null}\n"
        );
    }

    #[test]
    fn base64_is_exact() {
        let mut d = TextDecoder::default();
        let a = d.push(data(7, OutputStream::Pty, b"\xff\x00"), Encoding::Base64);
        assert_eq!(
            a,
            [Line::Data {
                seq: 7,
                stream: "pty",
                data: "/wA=".into()
            }]
        );
    }
}
