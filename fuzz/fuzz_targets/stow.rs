//! STOW-RS requests (Content-Type and multipart/related body) through the DICOMweb stack.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    pacs_dicomweb::fuzzing::stow(data);
});
