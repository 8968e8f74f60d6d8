//! Objects as ingest receives them: a C-STORE data set in any negotiable transfer syntax
//! (deflate included), or a Part 10 file from STOW-RS.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    pacs::fuzzing::ingest(data);
});
