//! QIDO-RS query strings through the DICOMweb stack to the node's query engine and index.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    pacs::fuzzing::qido(data);
});
