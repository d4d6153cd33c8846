//! Known damage, one scenario per test: recovery and readers never loop, never panic, never
//! deliver a damaged record, and say where the damage is. The scenarios are written in format
//! 2 (unsalted, as earlier versions wrote: they must still read); recycled format 3 segments
//! have their own at the end.

use std::path::Path;

use storage::frame::append_record;
use storage::segment::{segment_header_v2 as segment_header, segment_path, SEGMENT_HEADER_LEN};
use storage::{
    read_cursor, recover_shard, write_cursor, Cursor, Position, RecoveryMode, StorageError,
    WalReader,
};

/// Writes segment `n` holding `records` (payloads "n-i"); returns the record start offsets.
fn make_segment(dir: &Path, n: u64, records: usize) -> Vec<usize> {
    let mut data = segment_header(n, n * 1000).to_vec();
    let mut starts = Vec::new();
    for i in 0..records {
        starts.push(data.len());
        append_record(&mut data, format!("{n}-{i}").as_bytes());
    }
    std::fs::write(segment_path(dir, n), data).unwrap();
    starts
}

/// Appends the footer a writer of format 2 put on a sealed segment (a checksum of its bytes).
fn seal(dir: &Path, n: u64, records: u64) {
    edit(dir, n, |d| {
        let footer = storage::segment::Footer {
            records,
            first_id: n * 1000,
            data_end: d.len() as u64,
            checksum: crc32c::crc32c(d),
            covers: storage::segment::FooterChecksum::Bytes,
        };
        d.extend_from_slice(&footer.frame(0));
    });
}

fn edit(dir: &Path, n: u64, f: impl FnOnce(&mut Vec<u8>)) {
    let path = segment_path(dir, n);
    let mut data = std::fs::read(&path).unwrap();
    f(&mut data);
    std::fs::write(path, data).unwrap();
}

/// Recovers, then reads everything from `cursor` as an output would after a restart.
fn recover_and_deliver(
    dir: &Path,
    cursor: Option<Cursor>,
) -> (Vec<String>, u64, storage::RecoveryReport) {
    let report = recover_shard(dir, RecoveryMode::TolerateCorruptTail).unwrap();
    let durable = Position {
        segment: report.next_segment(),
        offset: SEGMENT_HEADER_LEN,
    };
    let mut reader = WalReader::open(dir, cursor).unwrap();
    let mut out = Vec::new();
    while reader
        .read_batch(durable, 1 << 20, |p| {
            out.push(String::from_utf8(p.to_vec()).unwrap())
        })
        .unwrap()
        .records
        > 0
    {}
    (out, reader.damaged_skips, report)
}

fn names(prefix: u64, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix}-{i}")).collect()
}

#[test]
fn truncated_length() {
    let dir = tempfile::tempdir().unwrap();
    make_segment(dir.path(), 1, 3);
    make_segment(dir.path(), 2, 3);
    edit(dir.path(), 2, |d| d.extend_from_slice(&[9, 0]));
    let (got, skips, report) = recover_and_deliver(dir.path(), None);
    assert_eq!(report.truncated_bytes, 2);
    assert!(!report.damage_mid_segment);
    assert_eq!(got, [names(1, 0..3), names(2, 0..3)].concat());
    assert_eq!(skips, 0);
}

#[test]
fn truncated_payload() {
    let dir = tempfile::tempdir().unwrap();
    make_segment(dir.path(), 1, 3);
    let starts = make_segment(dir.path(), 2, 3);
    edit(dir.path(), 2, |d| d.truncate(starts[2] + 10));
    let (got, _, report) = recover_and_deliver(dir.path(), None);
    assert_eq!(report.tail_damage, Some("record cut short"));
    assert_eq!(got, [names(1, 0..3), names(2, 0..2)].concat());
}

#[test]
fn flipped_crc_bit_in_last_record_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let starts = make_segment(dir.path(), 1, 3);
    edit(dir.path(), 1, |d| d[starts[2] + 5] ^= 0x10);
    let (got, _, report) = recover_and_deliver(dir.path(), None);
    assert_eq!(report.tail_damage, Some("checksum mismatch"));
    assert!(!report.damage_mid_segment);
    assert_eq!(got, names(1, 0..2));
}

#[test]
fn damage_inside_the_newest_segment() {
    let dir = tempfile::tempdir().unwrap();
    let starts = make_segment(dir.path(), 1, 3);
    edit(dir.path(), 1, |d| d[starts[1] + 9] ^= 0x01);
    // Strict refuses and says where.
    match recover_shard(dir.path(), RecoveryMode::Strict) {
        Err(StorageError::Corrupt { offset, .. }) => assert_eq!(offset, starts[1] as u64),
        other => panic!("strict recovery must refuse: {other:?}"),
    }
    // Tolerant cuts back to the last good record and reports it.
    let (got, _, report) = recover_and_deliver(dir.path(), None);
    assert!(report.damage_mid_segment);
    assert_eq!(got, names(1, 0..1));
}

#[test]
fn damage_in_a_sealed_segment_is_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let starts = make_segment(dir.path(), 1, 4);
    seal(dir.path(), 1, 4);
    make_segment(dir.path(), 2, 2);
    edit(dir.path(), 1, |d| d[starts[1] + 9] ^= 0x01);
    let (got, skips, report) = recover_and_deliver(dir.path(), None);
    assert_eq!(
        report.tail_damage, None,
        "recovery only repairs the newest segment"
    );
    assert_eq!(
        got,
        [names(1, 0..1), names(1, 2..4), names(2, 0..2)].concat(),
        "never the damaged record; the records after it are found again"
    );
    assert_eq!(skips, 1);
    // The footer tells how many records the damage took.
    let mut reader = WalReader::open(dir.path(), None).unwrap();
    let end = Position {
        segment: 3,
        offset: 0,
    };
    while reader.read_batch(end, 1 << 20, |_| {}).unwrap().records > 0 {}
    assert_eq!(reader.damaged_records, 1);
}

#[test]
fn garbage_in_the_middle_of_a_sealed_segment_is_skipped_to_the_next_record() {
    let dir = tempfile::tempdir().unwrap();
    let starts = make_segment(dir.path(), 1, 5);
    seal(dir.path(), 1, 5);
    make_segment(dir.path(), 2, 1);
    // Overwrite records 1 and 2 (and the start of 3) with noise.
    edit(dir.path(), 1, |d| {
        for (i, b) in d[starts[1]..starts[3] + 3].iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(151) ^ 0x5a;
        }
    });
    let (got, skips, _) = recover_and_deliver(dir.path(), None);
    assert_eq!(
        got,
        [names(1, 0..1), names(1, 4..5), names(2, 0..1)].concat()
    );
    assert_eq!(skips, 1);
}

#[test]
fn zeroed_header_of_newest_segment_is_set_aside() {
    let dir = tempfile::tempdir().unwrap();
    make_segment(dir.path(), 1, 2);
    make_segment(dir.path(), 2, 2);
    edit(dir.path(), 2, |d| d[..16].fill(0));
    assert!(matches!(
        recover_shard(dir.path(), RecoveryMode::Strict),
        Err(StorageError::Corrupt { .. })
    ));
    let (got, _, report) = recover_and_deliver(dir.path(), None);
    assert_eq!(report.set_aside, vec![2]);
    assert_eq!(report.next_segment(), 2);
    assert!(
        segment_path(dir.path(), 2)
            .with_extension("wal.corrupt")
            .exists(),
        "kept for inspection"
    );
    assert_eq!(got, names(1, 0..2));
}

#[test]
fn garbage_segment_file_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let garbage: Vec<u8> = (0..5000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8)
        .collect();
    std::fs::write(segment_path(dir.path(), 1), garbage).unwrap();
    make_segment(dir.path(), 2, 2);
    let (got, skips, _) = recover_and_deliver(dir.path(), None);
    assert_eq!(got, names(2, 0..2));
    assert_eq!(skips, 1);
}

#[test]
fn headerless_newest_segment_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    make_segment(dir.path(), 1, 1);
    std::fs::write(segment_path(dir.path(), 2), b"SLUI").unwrap();
    let (got, _, report) = recover_and_deliver(dir.path(), None);
    assert_eq!(report.segments, vec![1]);
    assert!(!segment_path(dir.path(), 2).exists());
    assert_eq!(got, names(1, 0..1));
}

#[test]
fn missing_or_damaged_cursor_means_redelivery_not_loss() {
    let dir = tempfile::tempdir().unwrap();
    make_segment(dir.path(), 1, 3);
    assert_eq!(read_cursor(dir.path(), "out").unwrap(), None);
    let (got, _, _) = recover_and_deliver(dir.path(), None);
    assert_eq!(got, names(1, 0..3));
    let start = Position {
        segment: 1,
        offset: SEGMENT_HEADER_LEN,
    };
    write_cursor(
        dir.path(),
        "out",
        Cursor {
            position: start,
            next_id: 1000,
        },
    )
    .unwrap();
    let path = storage::cursor::cursor_path(dir.path(), "out");
    std::fs::write(&path, b"garbage").unwrap();
    assert!(matches!(
        read_cursor(dir.path(), "out"),
        Err(StorageError::Corrupt { .. })
    ));
}

#[test]
fn cursor_past_the_end_does_not_strand_new_records() {
    let dir = tempfile::tempdir().unwrap();
    make_segment(dir.path(), 1, 2);
    let cursor = Cursor {
        position: Position {
            segment: 99,
            offset: SEGMENT_HEADER_LEN,
        },
        next_id: 5000,
    };
    write_cursor(dir.path(), "out", cursor).unwrap();
    let report = recover_shard(dir.path(), RecoveryMode::TolerateCorruptTail).unwrap();
    assert_eq!(
        report.next_segment(),
        100,
        "the writer starts above every cursor"
    );
    assert_eq!(
        report.next_record_id, 5000,
        "and above every id a cursor saw"
    );
    // New records land in segment 100 and reach the output.
    make_segment(dir.path(), 100, 2);
    let mut reader = WalReader::open(dir.path(), Some(cursor)).unwrap();
    let mut got = Vec::new();
    let durable = Position {
        segment: 101,
        offset: SEGMENT_HEADER_LEN,
    };
    while reader
        .read_batch(durable, 1 << 20, |p| {
            got.push(String::from_utf8(p.to_vec()).unwrap())
        })
        .unwrap()
        .records
        > 0
    {}
    assert_eq!(got, names(100, 0..2));
}

/// A segment the writer is creating (preallocated to full size: zeros, header not written yet)
/// is not damage: an output that looks at it before the watermark publishes it must neither
/// skip it nor count it. (An output starting up used to read such a header as damaged and
/// skip the whole segment: every record in it went undelivered.)
#[test]
fn a_segment_being_created_is_not_read_before_the_watermark_publishes_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = segment_path(dir.path(), 1);
    std::fs::write(&path, vec![0u8; 64 << 10]).unwrap();
    let mut reader = WalReader::open(dir.path(), None).unwrap();
    let nothing = Position {
        segment: 0,
        offset: 0,
    };
    assert_eq!(reader.next_id(nothing).unwrap(), 0, "unknown, not damaged");
    let batch = reader.read_batch(nothing, 1 << 20, |_| {}).unwrap();
    assert_eq!(batch.records, 0);

    // The writer finishes: header and three records at the start of the preallocated file.
    let mut data = segment_header(1, 1).to_vec();
    for i in 0..3 {
        append_record(&mut data, format!("event-{i}").as_bytes());
    }
    let mut file = std::fs::read(&path).unwrap();
    file[..data.len()].copy_from_slice(&data);
    std::fs::write(&path, file).unwrap();
    let published = Position {
        segment: 1,
        offset: data.len() as u64,
    };
    assert_eq!(reader.next_id(published).unwrap(), 1);
    let mut got = Vec::new();
    reader
        .read_batch(published, 1 << 20, |p| got.push(p.to_vec()))
        .unwrap();
    assert_eq!(got.len(), 3, "every record delivered");
    assert_eq!((reader.damaged_skips, reader.damaged_records), (0, 0));
    assert_eq!(reader.next_id(published).unwrap(), 4);
}

/// Found by the `wal_read` fuzz target: a record header claiming more bytes than the segment
/// holds must be damage, not a reason to read again and again (it overflowed the stack).
#[test]
fn a_record_longer_than_its_segment_is_damage_not_a_loop() {
    let dir = tempfile::tempdir().unwrap();
    let mut data = segment_header(1, 1).to_vec();
    data.extend_from_slice(&[0x5d, 0x5d, 0x5d, 0x00, 0x0d, 0x5d, 0x00, 0x22]);
    std::fs::write(segment_path(dir.path(), 1), data).unwrap();
    let mut records = 0;
    let read = storage::read_on_disk(dir.path(), None, |_, _| records += 1);
    assert_eq!(read.unwrap_or(0), 0);
    assert_eq!(records, 0);
}

/// Format 3 over a recycled file: segment 5 was written into segment 2's old file. After a
/// crash its last records are followed by segment 2's records (valid frames, salted for 2):
/// a torn tail, never delivered. A record of segment 5 damaged in place with its successor
/// intact is damage: strict refuses to start, the default cuts it back and reports it.
#[test]
fn recycled_file_old_records_are_never_read_and_damage_in_it_is_found() {
    use storage::frame::{append_record_salted, salt};
    use storage::segment::segment_header as header_v3;
    let dir = tempfile::tempdir().unwrap();
    let mut old = header_v3(2, 1).to_vec();
    for i in 0..40 {
        append_record_salted(&mut old, format!("2-{i}").as_bytes(), salt(2));
    }
    let mut new = header_v3(5, 500).to_vec();
    let mut starts = Vec::new();
    for i in 0..3 {
        starts.push(new.len());
        append_record_salted(&mut new, format!("5-{i}").as_bytes(), salt(5));
    }
    let mut file = old.clone();
    file[..new.len()].copy_from_slice(&new);
    std::fs::write(segment_path(dir.path(), 5), &file).unwrap();
    let (got, skips, report) = recover_and_deliver(dir.path(), None);
    assert_eq!(got, names(5, 0..3));
    assert_eq!(skips, 0);
    assert!(
        !report.damage_mid_segment && report.sealed_newest,
        "{report:?}"
    );
    assert_eq!(report.next_record_id, 503);

    let dir = tempfile::tempdir().unwrap();
    let mut damaged = file.clone();
    damaged[starts[1] + 9] ^= 0x40;
    std::fs::write(segment_path(dir.path(), 5), &damaged).unwrap();
    match recover_shard(dir.path(), RecoveryMode::Strict) {
        Err(StorageError::Corrupt { offset, .. }) => assert_eq!(offset, starts[1] as u64),
        other => panic!("strict must refuse damage in place: {other:?}"),
    }
    let (got, _, report) = recover_and_deliver(dir.path(), None);
    assert_eq!(got, names(5, 0..1));
    assert!(report.damage_mid_segment);
}
