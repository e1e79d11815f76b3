//! Source line info: which Rust (or C) source line each instruction came from, read from the
//! `.BTF.ext` line-info records and the `.BTF` string table. This is what lets errors about an
//! instruction name the line of the lambda's source.

/// Why the line info could not be read.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum LineInfoError {
    #[error("{section} is truncated: needs {needed} bytes at offset {offset}, has {len}")]
    Truncated {
        section: &'static str,
        offset: usize,
        needed: usize,
        len: usize,
    },
    #[error("{section} has bad magic {found:#06x} (expected 0xeb9f)")]
    BadMagic { section: &'static str, found: u16 },
    #[error("line-info records of {size} bytes are too small (at least 16)")]
    RecordTooSmall { size: u32 },
    #[error("string offset {offset} is outside the BTF string table ({len} bytes)")]
    BadString { offset: u32, len: usize },
}

/// Where one instruction came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineInfo {
    /// The ELF section of the instruction (`xdp`, `.text`, …).
    pub section: String,
    /// Index of the first instruction this record covers, within its section.
    pub insn: usize,
    pub file: String,
    pub line: u32,
    pub column: u32,
    /// The source line's text as the compiler recorded it (may be empty).
    pub text: String,
}

impl std::fmt::Display for LineInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let file = self.file.rsplit('/').next().unwrap_or(&self.file);
        write!(f, "{file}:{}", self.line)?;
        if !self.text.trim().is_empty() {
            write!(f, ": {}", self.text.trim())?;
        }
        Ok(())
    }
}

/// The `.BTF` string table, for resolving the string offsets of BTF records read elsewhere (aya's
/// linked line info, say).
pub struct BtfStrings<'a>(Strings<'a>);

impl<'a> BtfStrings<'a> {
    /// Finds the string table of a `.BTF` section.
    pub fn parse(btf: &'a [u8]) -> Result<BtfStrings<'a>, LineInfoError> {
        let reader = Reader {
            bytes: btf,
            section: ".BTF",
        };
        reader.magic()?;
        let hdr_len = reader.u32_at(4)? as usize;
        let str_off = reader.u32_at(16)? as usize;
        let str_len = reader.u32_at(20)? as usize;
        Ok(BtfStrings(Strings(
            reader.slice(hdr_len + str_off, str_len)?,
        )))
    }

    /// The string at `offset`.
    pub fn get(&self, offset: u32) -> Result<String, LineInfoError> {
        self.0.get(offset)
    }
}

/// Every line-info record of an object, sorted by section and instruction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LineTable {
    entries: Vec<LineInfo>,
}

const BTF_MAGIC: u16 = 0xeb9f;
const INSN_SIZE: u32 = 8;

struct Reader<'a> {
    bytes: &'a [u8],
    section: &'static str,
}

impl<'a> Reader<'a> {
    /// `needed` bytes at `offset`, or `Truncated`.
    fn slice(&self, offset: usize, needed: usize) -> Result<&'a [u8], LineInfoError> {
        offset
            .checked_add(needed)
            .and_then(|end| self.bytes.get(offset..end))
            .ok_or(LineInfoError::Truncated {
                section: self.section,
                offset,
                needed,
                len: self.bytes.len(),
            })
    }

    fn u32_at(&self, offset: usize) -> Result<u32, LineInfoError> {
        let raw = self.slice(offset, 4)?;
        Ok(u32::from_le_bytes(raw.try_into().expect("4 bytes")))
    }

    fn magic(&self) -> Result<(), LineInfoError> {
        let raw = self.slice(0, 2)?;
        let found = u16::from_le_bytes([raw[0], raw[1]]);
        if found != BTF_MAGIC {
            return Err(LineInfoError::BadMagic {
                section: self.section,
                found,
            });
        }
        Ok(())
    }
}

/// The `.BTF` string table.
struct Strings<'a>(&'a [u8]);

impl Strings<'_> {
    fn get(&self, offset: u32) -> Result<String, LineInfoError> {
        let bad = LineInfoError::BadString {
            offset,
            len: self.0.len(),
        };
        let rest = self.0.get(offset as usize..).ok_or(bad.clone())?;
        let end = rest.iter().position(|&b| b == 0).ok_or(bad)?;
        Ok(String::from_utf8_lossy(&rest[..end]).into_owned())
    }
}

impl LineTable {
    /// Reads the line info of an object from its `.BTF` and `.BTF.ext` section contents.
    pub fn parse(btf: &[u8], btf_ext: &[u8]) -> Result<LineTable, LineInfoError> {
        let strings = BtfStrings::parse(btf)?.0;

        let ext = Reader {
            bytes: btf_ext,
            section: ".BTF.ext",
        };
        ext.magic()?;
        let ext_hdr_len = ext.u32_at(4)? as usize;
        let line_off = ext.u32_at(16)? as usize;
        let line_len = ext.u32_at(20)? as usize;
        let mut entries = Vec::new();
        if line_len == 0 {
            return Ok(LineTable { entries });
        }
        let base = ext_hdr_len + line_off;
        ext.slice(base, line_len)?;
        let end = base + line_len;
        let record_size = ext.u32_at(base)?;
        if record_size < 16 {
            return Err(LineInfoError::RecordTooSmall { size: record_size });
        }
        let mut at = base + 4;
        while at < end {
            let section = strings.get(ext.u32_at(at)?)?;
            let count = ext.u32_at(at + 4)? as usize;
            at += 8;
            for _ in 0..count {
                // A record must lie inside the line-info block, not just inside the section.
                Reader {
                    bytes: &btf_ext[..end],
                    section: ".BTF.ext",
                }
                .slice(at, record_size as usize)?;
                let insn_off = ext.u32_at(at)?;
                let file = strings.get(ext.u32_at(at + 4)?)?;
                let text = strings.get(ext.u32_at(at + 8)?)?;
                let line_col = ext.u32_at(at + 12)?;
                entries.push(LineInfo {
                    section: section.clone(),
                    insn: (insn_off / INSN_SIZE) as usize,
                    file,
                    line: line_col >> 10,
                    column: line_col & 0x3ff,
                    text,
                });
                at += record_size as usize;
            }
        }
        entries.sort_by(|a, b| (&a.section, a.insn).cmp(&(&b.section, b.insn)));
        Ok(LineTable { entries })
    }

    /// The source line of instruction `insn` of `section`: the last record at or before it.
    pub fn lookup(&self, section: &str, insn: usize) -> Option<&LineInfo> {
        self.entries
            .iter()
            .rfind(|e| e.section == section && e.insn <= insn)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn entries(&self) -> &[LineInfo] {
        &self.entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `.BTF` with only a string table, and a `.BTF.ext` with line info for section "xdp".
    fn fixture() -> (Vec<u8>, Vec<u8>) {
        let strings = b"\0xdp\0src/main.rs\0let x = 1;\0return x;\0";
        let mut btf = Vec::new();
        btf.extend_from_slice(&BTF_MAGIC.to_le_bytes());
        btf.extend_from_slice(&[1, 0]);
        for v in [24u32, 0, 0, 0, strings.len() as u32] {
            btf.extend_from_slice(&v.to_le_bytes());
        }
        btf.extend_from_slice(strings);

        let mut lines = Vec::new();
        lines.extend_from_slice(&16u32.to_le_bytes());
        lines.extend_from_slice(&1u32.to_le_bytes()); // "xdp"
        lines.extend_from_slice(&2u32.to_le_bytes());
        // insn 0 → main.rs:10:5 "let x = 1;", insn 3 → main.rs:11:1 "return x;"
        for (insn, text, line, col) in [(0u32, 17u32, 10u32, 5u32), (24, 28, 11, 1)] {
            for v in [insn, 5, text, (line << 10) | col] {
                lines.extend_from_slice(&v.to_le_bytes());
            }
        }
        let mut ext = Vec::new();
        ext.extend_from_slice(&BTF_MAGIC.to_le_bytes());
        ext.extend_from_slice(&[1, 0]);
        for v in [24u32, 0, 0, 0, lines.len() as u32] {
            ext.extend_from_slice(&v.to_le_bytes());
        }
        ext.extend_from_slice(&lines);
        (btf, ext)
    }

    #[test]
    fn reads_records_and_looks_up_instructions() {
        let (btf, ext) = fixture();
        let table = LineTable::parse(&btf, &ext).unwrap();
        assert_eq!(table.len(), 2);
        let first = table.lookup("xdp", 0).unwrap();
        assert_eq!(
            (first.file.as_str(), first.line, first.column),
            ("src/main.rs", 10, 5)
        );
        assert_eq!(first.text, "let x = 1;");
        assert_eq!(
            table.lookup("xdp", 2).unwrap().line,
            10,
            "covered by the record before"
        );
        assert_eq!(table.lookup("xdp", 3).unwrap().line, 11);
        assert_eq!(
            table.lookup("xdp", 99).unwrap().to_string(),
            "main.rs:11: return x;"
        );
        assert!(table.lookup(".text", 0).is_none());
    }

    #[test]
    fn rejects_bad_magic_truncation_and_bad_strings() {
        let (btf, ext) = fixture();
        let mut bad = btf.clone();
        bad[0] = 0;
        assert!(matches!(
            LineTable::parse(&bad, &ext),
            Err(LineInfoError::BadMagic { .. })
        ));
        for cut in [0, 10, ext.len() - 1] {
            assert!(LineTable::parse(&btf, &ext[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad_string = ext.clone();
        let at = ext.len() - 12; // file name offset of the last record
        bad_string[at..at + 4].copy_from_slice(&999u32.to_le_bytes());
        assert!(matches!(
            LineTable::parse(&btf, &bad_string),
            Err(LineInfoError::BadString { offset: 999, .. })
        ));
    }
}
