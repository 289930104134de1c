//! Fuzzes the WAL record decoder (and, on the same bytes, the other storage decoders): any
//! input must give an error or a record that re-encodes to exactly the bytes it came from,
//! never a panic or a huge allocation.
//!
//! Run: `cargo +nightly fuzz run record_decoder` from the repository root.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rustyraft::storage::records;

fuzz_target!(|data: &[u8]| {
    if let Ok((entry, used)) = records::decode_record(data) {
        assert!(used <= data.len());
        let mut out = Vec::new();
        records::encode_record(&entry, &mut out).expect("a decoded record re-encodes");
        assert_eq!(&out[..], &data[..used], "the encoding is canonical");
    }
    let _ = records::decode_segment_header(data);
    let _ = records::decode_hard_state(data);
    let _ = records::decode_snapshot(data);
});
