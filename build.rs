//! Rebuilds the node when a file under `ui/` (the web console, which rust-embed embeds in
//! release builds) is added, changed or removed: cargo scans a directory named here. (A path
//! that does not exist would make cargo rerun this every time, hence the check.)
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::path::Path::new("ui").is_dir() {
        println!("cargo:rerun-if-changed=ui");
    }
}
