//! The node's DICOM JSON writer on whatever dicom-object parses out of the input.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    pacs::fuzzing::dicom_json(data);
});
