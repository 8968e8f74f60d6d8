//! `pacs-ai-worker`: the AI worker process of the PACS node.
//!
//! Not implemented yet: it will lease analysis jobs from a node over HTTP, fetch series through
//! WADO-RS, run ONNX models and store DICOM SEG and SR results through STOW-RS.

fn main() -> std::process::ExitCode {
    eprintln!("pacs-ai-worker: not implemented yet (see the AI worker pool issue)");
    std::process::ExitCode::from(2)
}
