//! What destinations and the disk hand the outputs back: RELP answer frames, Elasticsearch
//! `_bulk` answers, dead-letter files. Any bytes give frames, verdicts or "not one", never a
//! panic; verdicts only name events of the batch; letters never exceed the file.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = engine::sinks::read_relp_answers(data);
    let events = data.first().map_or(0, |&b| usize::from(b));
    let _ = engine::sinks::bulk_answer_verdicts(data, events);
    let mut file = storage::dead_letter::FILE_MAGIC.to_vec();
    file.extend_from_slice(data);
    if let Some(read) = storage::dead_letter::DeadLetters::decode_file(&file) {
        let bytes: usize = read.letters.iter().map(|l| l.record.len()).sum();
        assert!(bytes <= data.len());
    }
});
