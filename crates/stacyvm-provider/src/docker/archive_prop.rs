//! Property tests of the tar reader (hardening harness, docs/testing.md). Tars come from the
//! Docker daemon, which packs whatever the sandbox's files are: names with `..`, absolute
//! names, odd types and sizes. Reading one must answer with entries or an error, never a
//! panic, and an entry's relative path never climbs out of the directory asked for.

use proptest::prelude::*;

use super::archive::{entries, file_tar, first_file};

/// A tar of raw entries whose names are written into the header as given (the builder's own
/// path checks would refuse the hostile ones).
fn raw_tar(items: &[(String, u8, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, data) in items {
        let mut h = tar::Header::new_old();
        let bytes = name.as_bytes();
        let n = bytes.len().min(99);
        h.as_old_mut().name[..n].copy_from_slice(&bytes[..n]);
        h.set_entry_type(match kind % 4 {
            0 => tar::EntryType::Regular,
            1 => tar::EntryType::Directory,
            2 => tar::EntryType::Symlink,
            _ => tar::EntryType::Fifo,
        });
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, &data[..]).expect("append to a Vec");
    }
    b.into_inner().expect("finish a Vec")
}

fn name() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            Just(".."),
            Just("."),
            Just(""),
            Just("a"),
            Just("b"),
            Just("c.txt")
        ],
        1..6,
    )
    .prop_flat_map(|parts| (Just(parts), any::<bool>()))
    .prop_map(|(parts, abs)| format!("{}{}", if abs { "/" } else { "" }, parts.join("/")))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_bytes_are_read_or_refused(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = entries(&bytes[..], 8);
        let _ = first_file(&bytes[..]);
    }

    /// A valid tar with any damage done to it: still no panic.
    #[test]
    fn damaged_tars_are_read_or_refused(
        content in prop::collection::vec(any::<u8>(), 0..1500),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut t = file_tar(&["d".into()], "d/f", &content, 0o644).expect("tar");
        let i = at.index(t.len());
        t[i] = byte;
        t.truncate(cut.index(t.len() + 1));
        let _ = entries(&t[..], 8);
        let _ = first_file(&t[..]);
    }

    /// Hostile names: whatever is listed is relative, without `..`, and within the depth.
    #[test]
    fn entries_never_climb(
        items in prop::collection::vec((name(), any::<u8>(), prop::collection::vec(any::<u8>(), 0..64)), 0..8),
        depth in 1usize..4,
    ) {
        let t = raw_tar(&items);
        if let Ok(list) = entries(&t[..], depth) {
            for e in list {
                prop_assert!(!e.rel.is_empty() && e.rel.len() <= depth, "{:?}", e.rel);
                prop_assert!(e.rel.iter().all(|c| c != ".." && c != "." && !c.contains('/')), "{:?}", e.rel);
            }
        }
    }

    /// What we upload is what a download gives back, byte for byte.
    #[test]
    fn file_content_round_trips(content in prop::collection::vec(any::<u8>(), 0..70_000), mode in 0u32..0o7777) {
        let t = file_tar(&[], "f", &content, mode).expect("tar");
        prop_assert_eq!(first_file(&t[..]).expect("read"), Some(content));
    }
}
