//! The output log of one process: records addressed by byte offset (`seq`), bounded in bytes.
//! The oldest whole records are dropped first; a single record larger than the whole buffer
//! keeps only its tail (its `seq` is then the offset of the first byte kept).

use std::collections::VecDeque;

/// Which stream a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
    Pty,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::Pty => "pty",
        }
    }
}

#[derive(Debug)]
struct Record {
    seq: u64,
    stream: Stream,
    data: Vec<u8>,
}

/// What a reader gets from [`Ring::read`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// Bytes in `since..first_retained` are gone.
    Gap { seq: u64, dropped: u64 },
    Data {
        seq: u64,
        stream: Stream,
        data: Vec<u8>,
    },
}

#[derive(Debug)]
pub struct Ring {
    records: VecDeque<Record>,
    /// Bytes held in `records`.
    held: usize,
    capacity: usize,
    /// Bytes ever written: the offset the next record starts at.
    total: u64,
}

impl Ring {
    pub fn new(capacity: usize) -> Ring {
        Ring {
            records: VecDeque::new(),
            held: 0,
            capacity: capacity.max(1),
            total: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes ever written (the `seq` of the next record).
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Offset of the oldest byte still held (`total` when nothing is).
    pub fn first(&self) -> u64 {
        self.records.front().map_or(self.total, |r| r.seq)
    }

    pub fn push(&mut self, stream: Stream, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let len = data.len() as u64;
        let (seq, kept) = if data.len() > self.capacity {
            let cut = data.len() - self.capacity;
            (self.total + cut as u64, &data[cut..])
        } else {
            (self.total, data)
        };
        self.total += len;
        while self.held + kept.len() > self.capacity {
            match self.records.pop_front() {
                Some(r) => self.held -= r.data.len(),
                None => break,
            }
        }
        self.held += kept.len();
        self.records.push_back(Record {
            seq,
            stream,
            data: kept.to_vec(),
        });
    }

    /// Items with `seq >= since`: a gap first when `since` is older than what is held, then
    /// whole records, at most `max_items` items and about `max_bytes` bytes (always at least one
    /// record when there is one). A `since` inside a record skips that record: a reader that
    /// saw record `n` asks for `n + 1` and must not get it again.
    pub fn read(&self, since: u64, max_items: usize, max_bytes: usize) -> Vec<Item> {
        let mut items = Vec::new();
        let first = self.first();
        let mut from = since;
        if since < first {
            items.push(Item::Gap {
                seq: since,
                dropped: first - since,
            });
            from = first;
        }
        // Records are sorted by seq: binary search for the first one at or after `from`.
        let idx = self.records.partition_point(|r| r.seq < from);
        let mut bytes = 0usize;
        for r in self.records.iter().skip(idx) {
            if items.len() >= max_items || (bytes >= max_bytes && bytes > 0) {
                break;
            }
            bytes += r.data.len();
            items.push(Item::Data {
                seq: r.seq,
                stream: r.stream,
                data: r.data.clone(),
            });
        }
        items
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn bytes(items: &[Item]) -> (u64, Vec<u8>) {
        let mut dropped = 0;
        let mut out = Vec::new();
        for i in items {
            match i {
                Item::Gap { dropped: d, .. } => dropped += d,
                Item::Data { data, .. } => out.extend(data),
            }
        }
        (dropped, out)
    }

    #[test]
    fn seq_is_the_byte_offset_and_reads_resume_without_duplicates() {
        let mut r = Ring::new(100);
        r.push(Stream::Stdout, b"hello");
        r.push(Stream::Stderr, b"err");
        let items = r.read(0, 64, 1 << 20);
        assert_eq!(
            items,
            vec![
                Item::Data {
                    seq: 0,
                    stream: Stream::Stdout,
                    data: b"hello".to_vec()
                },
                Item::Data {
                    seq: 5,
                    stream: Stream::Stderr,
                    data: b"err".to_vec()
                }
            ]
        );
        // Resuming after the last record seen gives nothing more; mid-record gives its tail.
        assert!(r
            .read(6, 64, 1 << 20)
            .iter()
            .all(|i| matches!(i, Item::Data { seq: 6, data, .. } if data.as_slice() == b"rr")));
        assert!(r.read(8, 64, 1 << 20).is_empty());
        assert!(r.read(80, 64, 1 << 20).is_empty());
    }

    #[test]
    fn overflow_drops_whole_old_records_and_reports_a_gap() {
        let mut r = Ring::new(10);
        for chunk in [&b"aaaa"[..], b"bbbb", b"cccc", b"dd"] {
            r.push(Stream::Stdout, chunk);
        }
        assert_eq!(r.total(), 14);
        assert_eq!(r.first(), 4);
        let items = r.read(0, 64, 1 << 20);
        assert_eq!(items[0], Item::Gap { seq: 0, dropped: 4 });
        let (dropped, data) = bytes(&items);
        assert_eq!(dropped + data.len() as u64, 14);
        assert_eq!(data, b"bbbbccccdd");
        // A record bigger than the buffer keeps its tail, addressed by its own offset.
        r.push(Stream::Stdout, b"0123456789abcdef");
        assert_eq!(r.first(), 14 + 6);
        let (dropped, data) = bytes(&r.read(3, 64, 1 << 20));
        assert_eq!((dropped, data.as_slice()), (17, &b"6789abcdef"[..]));
        assert!(r.read(21, 64, 1 << 20).is_empty());
    }

    #[test]
    fn reads_are_bounded_per_call() {
        let mut r = Ring::new(1000);
        for _ in 0..10 {
            r.push(Stream::Stdout, &[7; 10]);
        }
        assert_eq!(r.read(0, 3, 1 << 20).len(), 3);
        assert_eq!(r.read(0, 64, 25).len(), 3);
        assert_eq!(r.read(0, 64, 1).len(), 1);
    }
}
