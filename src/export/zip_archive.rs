//! The ZIP archives of exports, through the `zip` crate: entries stored uncompressed (DICOM
//! pixel data hardly deflates, and readers need nothing more), UTF-8 names, ZIP64 records
//! written where an entry, an offset or the entry count needs them (APPNOTE 4.3.14, 4.5.3), so
//! an archive may pass 4 GiB and 65535 entries.

use std::io::{Read, Seek, Write};

use zip::write::SimpleFileOptions;
use zip::CompressionMethod;

pub struct ZipWriter<W: Write + Seek> {
    inner: zip::ZipWriter<W>,
    written: u64,
}

fn io_error(e: zip::result::ZipError) -> std::io::Error {
    match e {
        zip::result::ZipError::Io(e) => e,
        other => std::io::Error::other(other),
    }
}

impl<W: Write + Seek> ZipWriter<W> {
    pub fn new(out: W) -> ZipWriter<W> {
        ZipWriter {
            inner: zip::ZipWriter::new(out),
            written: 0,
        }
    }

    /// Bytes of entry data written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    pub fn add(&mut self, name: &str, data: &[u8]) -> std::io::Result<()> {
        let options = SimpleFileOptions::default()
            .compression_method(CompressionMethod::Stored)
            // an entry of 4 GiB or more needs its ZIP64 sizes (the crate refuses it otherwise)
            .large_file(data.len() as u64 >= u32::MAX as u64);
        self.inner.start_file(name, options).map_err(io_error)?;
        self.inner.write_all(data)?;
        self.written += data.len() as u64;
        Ok(())
    }

    pub fn finish(self) -> std::io::Result<W> {
        self.inner.finish().map_err(io_error)
    }
}

/// The entries of an archive, in order: names that would leave the folder they are unpacked
/// into (`..`, an absolute path, a backslash) are refused.
pub fn read_entries<R: Read + Seek>(archive: R) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut zip = zip::ZipArchive::new(archive).map_err(|e| format!("not a ZIP archive: {e}"))?;
    let mut out = Vec::with_capacity(zip.len());
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).map_err(|e| e.to_string())?;
        let name = entry
            .name()
            .map_err(|e| format!("entry {i}: {e}"))?
            .to_string();
        if entry.enclosed_name().is_none() || name.contains('\\') {
            return Err(format!("unsafe entry name {name:?}"));
        }
        if entry.is_dir() {
            continue;
        }
        let mut data = Vec::with_capacity(entry.size().min(1 << 30) as usize);
        entry
            .read_to_end(&mut data)
            .map_err(|e| format!("{name}: {e}"))?;
        out.push((name, data));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Python's zipfile (an independent reader) checks the archive and prints what it finds.
    fn python_reads(path: &std::path::Path, script: &str) -> String {
        let out = std::process::Command::new("python3")
            .args(["-c", script])
            .arg(path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    #[test]
    fn unzip_reads_what_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.zip");
        let mut zip = ZipWriter::new(std::fs::File::create(&path).unwrap());
        zip.add("s/one.dcm", b"hello").unwrap();
        zip.add("s/two.dcm", &[0u8; 1000]).unwrap();
        assert_eq!(zip.written(), 1005);
        zip.finish().unwrap();
        let found = python_reads(
            &path,
            "import sys,zipfile; z=zipfile.ZipFile(sys.argv[1]); assert z.testzip() is None; \
             assert all(i.compress_type == zipfile.ZIP_STORED for i in z.infolist()); \
             print(z.read('s/one.dcm').decode(), len(z.read('s/two.dcm')))",
        );
        assert_eq!(found, "hello 1000");
        let entries = read_entries(std::fs::File::open(&path).unwrap()).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0], ("s/one.dcm".to_string(), b"hello".to_vec()));
        assert_eq!(entries[1].1.len(), 1000);
    }

    /// Past 65535 entries the end of the central directory is a ZIP64 record (APPNOTE 4.3.14):
    /// an export of a large study stays one archive.
    #[test]
    fn more_than_65535_entries_make_a_zip64_archive() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("many.zip");
        let file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        let mut zip = ZipWriter::new(file);
        for i in 0..70_000u32 {
            zip.add(&format!("s/{i}.dcm"), &i.to_le_bytes()).unwrap();
        }
        zip.finish().unwrap();
        let found = python_reads(
            &path,
            "import sys,zipfile; z=zipfile.ZipFile(sys.argv[1]); n=z.infolist(); \
             print(len(n), int.from_bytes(z.read('s/69999.dcm'), 'little'))",
        );
        assert_eq!(found, "70000 69999");
        let bytes = std::fs::read(&path).unwrap();
        // the ZIP64 end of central directory record's signature (APPNOTE 4.3.14)
        assert!(bytes.windows(4).any(|w| w == [0x50, 0x4b, 0x06, 0x06]));
        let entries = read_entries(std::io::Cursor::new(bytes)).unwrap();
        assert_eq!(entries.len(), 70_000);
    }

    #[test]
    fn entries_that_would_leave_the_folder_are_refused() {
        let mut out = std::io::Cursor::new(Vec::new());
        {
            let mut zip = zip::ZipWriter::new(&mut out);
            zip.start_file("../escape.dcm", SimpleFileOptions::default())
                .unwrap();
            zip.write_all(b"x").unwrap();
            zip.finish().unwrap();
        }
        out.set_position(0);
        let err = read_entries(out).unwrap_err();
        assert!(err.contains("unsafe entry name"), "{err}");
    }
}
