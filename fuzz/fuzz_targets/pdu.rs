//! PDUs as a requestor sends them to the node's association acceptor: the A-ASSOCIATE-RQ and
//! its User Identity sub-item, then P-DATA-TF and the DIMSE command sets and identifiers in it.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    pacs_dimse::fuzzing::acceptor(data);
});
