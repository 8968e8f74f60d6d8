//! A ZIP archive writer (PKWARE APPNOTE 6.3): entries stored uncompressed (DICOM pixel data
//! hardly deflates, and readers need nothing more), UTF-8 names, no ZIP64: an archive is
//! refused beyond 4 GiB or 65535 entries.

use std::io::Write;

pub struct ZipWriter<W: Write> {
    out: W,
    offset: u64,
    central: Vec<u8>,
    entries: u64,
}

fn too_big() -> std::io::Error {
    std::io::Error::other("ZIP archive over 4 GiB or 65535 entries (ZIP64 is not written)")
}

impl<W: Write> ZipWriter<W> {
    pub fn new(out: W) -> ZipWriter<W> {
        ZipWriter {
            out,
            offset: 0,
            central: Vec::new(),
            entries: 0,
        }
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.offset
    }

    pub fn add(&mut self, name: &str, data: &[u8]) -> std::io::Result<()> {
        let size = u32::try_from(data.len()).map_err(|_| too_big())?;
        let offset = u32::try_from(self.offset).map_err(|_| too_big())?;
        if self.entries >= 0xFFFF || name.len() > 0xFFFF {
            return Err(too_big());
        }
        let mut crc = flate2::Crc::new();
        crc.update(data);
        let crc = crc.sum();
        // version 2.0, bit 11: UTF-8 names, method 0 (stored), time 00:00, date 1980-01-01
        let common = |v: &mut Vec<u8>| {
            v.extend_from_slice(&20u16.to_le_bytes());
            v.extend_from_slice(&0x0800u16.to_le_bytes());
            v.extend_from_slice(&0u16.to_le_bytes());
            v.extend_from_slice(&0u16.to_le_bytes());
            v.extend_from_slice(&0x0021u16.to_le_bytes());
            v.extend_from_slice(&crc.to_le_bytes());
            v.extend_from_slice(&size.to_le_bytes());
            v.extend_from_slice(&size.to_le_bytes());
            v.extend_from_slice(&(name.len() as u16).to_le_bytes());
            v.extend_from_slice(&0u16.to_le_bytes());
        };
        let mut local = 0x0403_4b50u32.to_le_bytes().to_vec();
        common(&mut local);
        local.extend_from_slice(name.as_bytes());
        self.out.write_all(&local)?;
        self.out.write_all(data)?;
        self.offset += local.len() as u64 + data.len() as u64;
        let c = &mut self.central;
        c.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        c.extend_from_slice(&20u16.to_le_bytes()); // made by
        common(c);
        c.extend_from_slice(&0u16.to_le_bytes()); // comment
        c.extend_from_slice(&0u16.to_le_bytes()); // disk
        c.extend_from_slice(&0u16.to_le_bytes()); // internal attributes
        c.extend_from_slice(&0u32.to_le_bytes()); // external attributes
        c.extend_from_slice(&offset.to_le_bytes());
        c.extend_from_slice(name.as_bytes());
        self.entries += 1;
        Ok(())
    }

    /// Writes the central directory; the writer back.
    pub fn finish(mut self) -> std::io::Result<W> {
        let start = u32::try_from(self.offset).map_err(|_| too_big())?;
        let size = u32::try_from(self.central.len()).map_err(|_| too_big())?;
        if self.offset + self.central.len() as u64 > u32::MAX as u64 {
            return Err(too_big());
        }
        self.out.write_all(&self.central)?;
        let mut end = 0x0605_4b50u32.to_le_bytes().to_vec();
        end.extend_from_slice(&[0, 0, 0, 0]);
        end.extend_from_slice(&(self.entries as u16).to_le_bytes());
        end.extend_from_slice(&(self.entries as u16).to_le_bytes());
        end.extend_from_slice(&size.to_le_bytes());
        end.extend_from_slice(&start.to_le_bytes());
        end.extend_from_slice(&0u16.to_le_bytes());
        self.out.write_all(&end)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// The entries of an archive this writer made (stored entries, sizes in the local headers),
/// in order. Names with `..`, a leading `/` or a backslash are refused.
pub fn read_stored(archive: &[u8]) -> Result<Vec<(String, &[u8])>, String> {
    let mut out = Vec::new();
    let mut at = 0usize;
    let u16_at = |b: &[u8], i: usize| u16::from_le_bytes([b[i], b[i + 1]]) as usize;
    let u32_at = |b: &[u8], i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    while at + 30 <= archive.len() && u32_at(archive, at) == 0x0403_4b50 {
        let h = &archive[at..];
        if u16_at(h, 8) != 0 || u16_at(h, 6) & 0x0008 != 0 {
            return Err("only stored entries with sizes in the local header are read".into());
        }
        let size = u32_at(h, 22) as usize;
        let (name_len, extra_len) = (u16_at(h, 26), u16_at(h, 28));
        let start = at + 30 + name_len + extra_len;
        let end = start.checked_add(size).filter(|e| *e <= archive.len());
        let end = end.ok_or("truncated archive")?;
        let name = std::str::from_utf8(&archive[at + 30..at + 30 + name_len])
            .map_err(|_| "entry name is not UTF-8")?
            .to_string();
        if name.starts_with('/') || name.contains('\\') || name.split('/').any(|p| p == "..") {
            return Err(format!("unsafe entry name {name:?}"));
        }
        out.push((name, &archive[start..end]));
        at = end;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unzip_reads_what_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.zip");
        let mut zip = ZipWriter::new(std::fs::File::create(&path).unwrap());
        zip.add("s/one.dcm", b"hello").unwrap();
        zip.add("s/two.dcm", &[0u8; 1000]).unwrap();
        zip.finish().unwrap();
        let out = std::process::Command::new("python3")
            .args([
                "-c",
                "import sys,zipfile; z=zipfile.ZipFile(sys.argv[1]); assert z.testzip() is None; \
                 print(z.read('s/one.dcm').decode(), len(z.read('s/two.dcm')))",
            ])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hello 1000");
        let bytes = std::fs::read(&path).unwrap();
        let entries = read_stored(&bytes).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0], ("s/one.dcm".to_string(), &b"hello"[..]));
        assert_eq!(entries[1].1.len(), 1000);
    }
}
