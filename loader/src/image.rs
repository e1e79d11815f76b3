//! The lambda image: what an eBPF ELF object holds, read without touching the kernel.
//!
//! [`LambdaImage::parse`] checks that the bytes are a 64-bit little-endian BPF ELF object with at
//! least one XDP program and collects programs, maps, relocations, globals and seed data. Nothing
//! here needs privileges; the kernel backend ([`crate::kernel`]) works from a parsed image.

use std::collections::BTreeMap;

use crate::lineinfo::{LineInfo, LineInfoError, LineTable};
use object::{Object as _, ObjectSection as _, ObjectSymbol as _, RelocationTarget, SectionKind};

/// `e_machine` of eBPF objects.
pub const EM_BPF: u16 = 247;
/// Size of one eBPF instruction.
pub const INSN_SIZE: u64 = 8;
/// Name prefix of the sections that carry seed records for a map (defined by the SDK's `seed!`).
pub use lambda_ebpf::SEED_SECTION_PREFIX;
/// The first five `u32`s of a legacy `bpf_map_def` (type, key, value, max entries, flags).
pub const LEGACY_MAP_DEF_MIN: u64 = 20;

/// Why bytes are not a usable lambda image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{name}: not an ELF file (starts with {})", hex(.head))]
    NotElf { name: String, head: Vec<u8> },
    #[error("{name}: 32-bit ELF (class {class}), but BPF objects are ELF64")]
    NotElf64 { name: String, class: u8 },
    #[error(
        "{name}: big-endian ELF (data encoding {data}); only little-endian BPF (bpfel) is supported"
    )]
    NotLittleEndian { name: String, data: u8 },
    #[error("{name}: ELF for machine {machine_name} ({machine}), not BPF ({EM_BPF})")]
    WrongMachine {
        name: String,
        machine: u16,
        machine_name: &'static str,
    },
    #[error("{name}: malformed ELF: {source}")]
    Malformed {
        name: String,
        #[source]
        source: object::Error,
    },
    #[error("{name}: no XDP program (sections with programs: {})", list_or_none(.program_sections))]
    NoXdpProgram {
        name: String,
        program_sections: Vec<String>,
    },
    #[error(
        "{name}: map `{map}` in section `{section}` at offset {offset} has {size} bytes, fewer than the {LEGACY_MAP_DEF_MIN} of a bpf_map_def"
    )]
    MapDefTooShort {
        name: String,
        map: String,
        section: String,
        offset: u64,
        size: u64,
    },
    #[error("{name}: cannot read the line info in .BTF/.BTF.ext: {source}")]
    LineInfo {
        name: String,
        #[source]
        source: LineInfoError,
    },
    #[error("{name}: cannot read the BTF maps in `.maps`: {source}")]
    BtfMaps {
        name: String,
        #[source]
        source: Box<aya_obj::ParseError>,
    },
    #[error(
        "{name}: symbol `{symbol}` spans bytes {value}..{value}+{size} of section `{section}`, which has {section_size} bytes"
    )]
    SymbolOutOfSection {
        name: String,
        symbol: String,
        section: String,
        value: u64,
        size: u64,
        section_size: u64,
    },
    #[error("{name}: malformed .BTF.ext: {reason}")]
    BtfExt { name: String, reason: String },
    #[error("{name}: the ELF parser of aya-obj failed on this object: {reason}")]
    ObjectParser { name: String, reason: String },
    #[error("{name}: seed section `{section}` names map `{map}`, which the object does not define (maps: {})", list_or_none(.maps))]
    SeedUnknownMap {
        name: String,
        section: String,
        map: String,
        maps: Vec<String>,
    },
    #[error(
        "{name}: seed section `{section}` has {size} bytes, not a multiple of map `{map}`'s record size {record_size} (key {key_size} + value {value_size})"
    )]
    SeedSize {
        name: String,
        section: String,
        map: String,
        size: u64,
        record_size: u64,
        key_size: u32,
        value_size: u32,
    },
}

/// Every symbol that lives in a section lies inside it. aya-obj slices sections by symbol
/// value and size without checking (a malformed object made it panic), so the image refuses
/// such objects before aya-obj sees them.
fn check_symbols(file: &Elf<'_>, name: &str) -> Result<(), ImageError> {
    for symbol in file.symbols() {
        let object::SymbolSection::Section(index) = symbol.section() else {
            continue;
        };
        let Ok(section) = file.section_by_index(index) else {
            continue;
        };
        if section.kind() == SectionKind::UninitializedData {
            continue;
        }
        let (value, size, section_size) = (symbol.address(), symbol.size(), section.size());
        if value.checked_add(size).is_none_or(|end| end > section_size) {
            return Err(ImageError::SymbolOutOfSection {
                name: name.to_owned(),
                symbol: symbol.name().unwrap_or("?").to_owned(),
                section: section.name().unwrap_or("?").to_owned(),
                value,
                size,
                section_size,
            });
        }
    }
    Ok(())
}

/// The `.BTF.ext` blocks (function info, line info, CO-RE relocations) and every record group
/// in them fit their section: aya-obj reads `count × record size` bytes without checking.
fn check_btf_ext(file: &Elf<'_>, name: &str) -> Result<(), ImageError> {
    let Some(section) = file.section_by_name(".BTF.ext") else {
        return Ok(());
    };
    let bad = |reason: String| ImageError::BtfExt {
        name: name.to_owned(),
        reason,
    };
    let data = section
        .data()
        .map_err(|e| bad(format!("cannot read the section: {e}")))?;
    let u32_at = |at: usize| -> Result<u32, ImageError> {
        data.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| bad(format!("truncated at byte {at} of {}", data.len())))
    };
    let header_len = u32_at(4)? as usize;
    // (offset field, length field) of each block the header declares.
    let mut blocks = vec![(8usize, 12usize), (16, 20)];
    if header_len >= 32 {
        blocks.push((24, 28));
    }
    for (off_field, len_field) in blocks {
        let start = header_len
            .checked_add(u32_at(off_field)? as usize)
            .ok_or_else(|| bad("block offset overflows".to_owned()))?;
        let len = u32_at(len_field)? as usize;
        if len == 0 {
            continue;
        }
        let end = start
            .checked_add(len)
            .filter(|end| *end <= data.len())
            .ok_or_else(|| {
                bad(format!(
                    "a block of {len} bytes at {start} overruns the {}-byte section",
                    data.len()
                ))
            })?;
        let record_size = u32_at(start)? as usize;
        if record_size == 0 {
            return Err(bad(format!("zero record size in the block at {start}")));
        }
        let mut at = start + 4;
        while at < end {
            let count = u32_at(at + 4)? as usize;
            let group_end = count
                .checked_mul(record_size)
                .and_then(|n| n.checked_add(at + 8))
                .filter(|group_end| *group_end <= end)
                .ok_or_else(|| {
                    bad(format!(
                        "{count} records of {record_size} bytes at byte {at} overrun their block (ends at {end})"
                    ))
                })?;
            at = group_end;
        }
    }
    Ok(())
}

/// aya-obj's `Object::parse`, with any panic it raises on malformed input turned into an
/// error: a last line of defence behind [`check_symbols`] and [`check_btf_ext`].
pub(crate) fn parse_with_aya(
    bytes: &[u8],
    name: &str,
) -> Result<Result<aya_obj::Object, aya_obj::ParseError>, ImageError> {
    std::panic::catch_unwind(|| aya_obj::Object::parse(bytes)).map_err(|panic| {
        let reason = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "it panicked".to_owned());
        ImageError::ObjectParser {
            name: name.to_owned(),
            reason,
        }
    })
}

fn hex(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "nothing: the file is empty".to_owned();
    }
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
}

/// What kind of program a section holds, from its name (the libbpf/aya convention).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProgramKind {
    /// `xdp`, `xdp/…`, `xdp.frags…`.
    Xdp,
    /// Anything else; the section name says what.
    Other,
}

impl ProgramKind {
    /// Classifies a program section name.
    pub fn from_section(section: &str) -> ProgramKind {
        if section == "xdp" || section.starts_with("xdp/") || section.starts_with("xdp.frags") {
            ProgramKind::Xdp
        } else {
            ProgramKind::Other
        }
    }
}

/// One relocation inside a program's instructions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Relocation {
    /// Byte offset from the start of the program (not of the section).
    pub offset: u64,
    /// The symbol the relocation refers to (may be a section name for section symbols).
    pub symbol: String,
    /// The map the relocation loads, when the symbol is a map.
    pub map: Option<String>,
}

/// One program (an entry-point function in an executable section other than `.text`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramDef {
    /// The ELF section, e.g. `xdp`.
    pub section: String,
    /// The function's symbol name; aya knows the program by this name.
    pub name: String,
    pub kind: ProgramKind,
    /// Offset of the function in its section.
    pub offset: u64,
    pub insn_count: u64,
    pub relocations: Vec<Relocation>,
}

/// Where a map is declared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapOrigin {
    /// A `bpf_map_def` in the legacy `maps` section (what aya-ebpf 0.2 emits).
    Legacy,
    /// A BTF-defined map in `.maps`.
    Btf,
}

/// A map definition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapDef {
    pub name: String,
    /// `bpf_map_type` value (1 hash, 2 array, …).
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
    pub origin: MapOrigin,
}

impl MapDef {
    /// Bytes of one seed record: key then value.
    pub fn record_size(&self) -> u64 {
        u64::from(self.key_size) + u64::from(self.value_size)
    }

    /// A short name for the map type (`hash`, `array`, …), or `type N`.
    pub fn type_name(&self) -> String {
        map_type_name(self.map_type)
    }

    /// Per-CPU maps (percpu_hash 5, percpu_array 6, lru_percpu_hash 10) hold one value per
    /// possible CPU: their userspace value is not `value_size` bytes.
    pub fn is_per_cpu(&self) -> bool {
        matches!(self.map_type, 5 | 6 | 10)
    }
}

/// The kernel's name for a `bpf_map_type` value, lower-case, or `type N` if unknown here.
pub fn map_type_name(map_type: u32) -> String {
    let name = match map_type {
        1 => "hash",
        2 => "array",
        3 => "prog_array",
        4 => "perf_event_array",
        5 => "percpu_hash",
        6 => "percpu_array",
        7 => "stack_trace",
        8 => "cgroup_array",
        9 => "lru_hash",
        10 => "lru_percpu_hash",
        11 => "lpm_trie",
        12 => "array_of_maps",
        13 => "hash_of_maps",
        14 => "devmap",
        15 => "sockmap",
        16 => "cpumap",
        17 => "xskmap",
        18 => "sockhash",
        22 => "queue",
        23 => "stack",
        25 => "devmap_hash",
        27 => "ringbuf",
        _ => return format!("type {map_type}"),
    };
    name.to_owned()
}

/// A global variable the loader can set before load (`EbpfLoader::override_global`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GlobalVar {
    pub name: String,
    /// `.rodata`, `.data`, `.bss` (or a subsection such as `.rodata.cst4`).
    pub section: String,
    pub offset: u64,
    pub size: u64,
}

/// Seed data for one map: records of exactly `key_size + value_size` bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seed {
    pub section: String,
    pub map: String,
    pub key_size: u32,
    pub value_size: u32,
    pub data: Vec<u8>,
}

impl Seed {
    /// The `(key, value)` records in order.
    pub fn records(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let key = self.key_size as usize;
        let record = key + self.value_size as usize;
        self.data
            .chunks_exact(record.max(1))
            .map(move |r| r.split_at(key))
    }

    pub fn record_count(&self) -> usize {
        let record = self.key_size as usize + self.value_size as usize;
        self.data.len().checked_div(record).unwrap_or(0)
    }
}

/// Everything the loader needs to know about a lambda object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LambdaImage {
    /// The lambda's name (usually the object's file stem).
    pub name: String,
    pub programs: Vec<ProgramDef>,
    pub maps: Vec<MapDef>,
    pub globals: Vec<GlobalVar>,
    pub seeds: Vec<Seed>,
    /// A `.BTF` section is present.
    pub has_btf: bool,
    /// Source lines per instruction, from `.BTF.ext` (empty without it).
    pub line_info: LineTable,
}

impl LambdaImage {
    /// Whether the object carries line info (`.BTF.ext` line records).
    pub fn has_line_info(&self) -> bool {
        !self.line_info.is_empty()
    }

    /// The source line instruction `insn` of program section `section` came from.
    pub fn source_line(&self, section: &str, insn: usize) -> Option<&LineInfo> {
        self.line_info.lookup(section, insn)
    }

    /// Parses and checks an eBPF ELF object. `name` labels errors and the image.
    pub fn parse(bytes: &[u8], name: &str) -> Result<LambdaImage, ImageError> {
        check_header(bytes, name)?;
        let malformed = |source| ImageError::Malformed {
            name: name.to_owned(),
            source,
        };
        let file = object::read::elf::ElfFile64::<object::LittleEndian>::parse(bytes)
            .map_err(malformed)?;
        check_symbols(&file, name)?;
        check_btf_ext(&file, name)?;

        let maps = collect_maps(&file, bytes, name)?;
        let map_symbols = map_symbol_indices(&file);
        let programs = collect_programs(&file, &map_symbols)?;
        let globals = collect_globals(&file);
        let seeds = collect_seeds(&file, &maps, name)?;

        if !programs.iter().any(|p| p.kind == ProgramKind::Xdp) {
            let mut program_sections: Vec<String> =
                programs.iter().map(|p| p.section.clone()).collect();
            program_sections.dedup();
            return Err(ImageError::NoXdpProgram {
                name: name.to_owned(),
                program_sections,
            });
        }

        Ok(LambdaImage {
            name: name.to_owned(),
            programs,
            maps,
            globals,
            seeds,
            has_btf: file.section_by_name(".BTF").is_some(),
            line_info: read_line_info(&file, name)?,
        })
    }

    /// The first XDP program: the one the kernel backend loads and attaches.
    pub fn xdp_program(&self) -> &ProgramDef {
        self.programs
            .iter()
            .find(|p| p.kind == ProgramKind::Xdp)
            .expect("parse guarantees an XDP program")
    }

    pub fn map(&self, name: &str) -> Option<&MapDef> {
        self.maps.iter().find(|m| m.name == name)
    }

    pub fn global(&self, name: &str) -> Option<&GlobalVar> {
        self.globals.iter().find(|g| g.name == name)
    }

    pub fn seed(&self, map: &str) -> Option<&Seed> {
        self.seeds.iter().find(|s| s.map == map)
    }
}

fn check_header(bytes: &[u8], name: &str) -> Result<(), ImageError> {
    if bytes.len() < 20 || &bytes[..4] != b"\x7fELF" {
        return Err(ImageError::NotElf {
            name: name.to_owned(),
            head: bytes.iter().take(4).copied().collect(),
        });
    }
    if bytes[4] != 2 {
        return Err(ImageError::NotElf64 {
            name: name.to_owned(),
            class: bytes[4],
        });
    }
    if bytes[5] != 1 {
        return Err(ImageError::NotLittleEndian {
            name: name.to_owned(),
            data: bytes[5],
        });
    }
    let machine = u16::from_le_bytes([bytes[18], bytes[19]]);
    if machine != EM_BPF {
        return Err(ImageError::WrongMachine {
            name: name.to_owned(),
            machine,
            machine_name: machine_name(machine),
        });
    }
    Ok(())
}

/// A readable name for common `e_machine` values.
pub fn machine_name(machine: u16) -> &'static str {
    match machine {
        0 => "none",
        3 => "i386",
        8 => "MIPS",
        20 => "PowerPC",
        21 => "PowerPC64",
        22 => "S/390",
        40 => "ARM",
        62 => "x86-64",
        183 => "AArch64",
        243 => "RISC-V",
        247 => "BPF",
        258 => "LoongArch",
        _ => "unknown",
    }
}

type Elf<'a> = object::read::elf::ElfFile64<'a, object::LittleEndian>;

fn is_legacy_map_section(name: &str) -> bool {
    name == "maps" || name.starts_with("maps/")
}

fn collect_maps(file: &Elf<'_>, bytes: &[u8], name: &str) -> Result<Vec<MapDef>, ImageError> {
    let mut maps = Vec::new();
    for section in file.sections() {
        let Ok(section_name) = section.name() else {
            continue;
        };
        if !is_legacy_map_section(section_name) {
            continue;
        }
        let data = section.data().map_err(|source| ImageError::Malformed {
            name: name.to_owned(),
            source,
        })?;
        for symbol in file.symbols() {
            if symbol.section_index() != Some(section.index())
                || symbol.kind() == object::SymbolKind::Section
            {
                continue;
            }
            let Ok(map_name) = symbol.name() else {
                continue;
            };
            if map_name.is_empty() {
                continue;
            }
            let offset = symbol.address();
            let available = (data.len() as u64).saturating_sub(offset);
            let size = if symbol.size() == 0 {
                available
            } else {
                symbol.size().min(available)
            };
            if size < LEGACY_MAP_DEF_MIN {
                return Err(ImageError::MapDefTooShort {
                    name: name.to_owned(),
                    map: map_name.to_owned(),
                    section: section_name.to_owned(),
                    offset,
                    size,
                });
            }
            let at = |i: usize| {
                let o = offset as usize + 4 * i;
                u32::from_le_bytes(data[o..o + 4].try_into().expect("4 bytes"))
            };
            maps.push(MapDef {
                name: map_name.to_owned(),
                map_type: at(0),
                key_size: at(1),
                value_size: at(2),
                max_entries: at(3),
                flags: at(4),
                origin: MapOrigin::Legacy,
            });
        }
    }

    // BTF-defined maps need BTF parsing: borrow aya-obj's, which already does it.
    if file.section_by_name(".maps").is_some() {
        let obj = parse_with_aya(bytes, name)?.map_err(|source| ImageError::BtfMaps {
            name: name.to_owned(),
            source: Box::new(source),
        })?;
        let mut btf_maps: Vec<MapDef> = obj
            .maps
            .iter()
            .filter(|(_, m)| matches!(m, aya_obj::Map::Btf(_)))
            .filter(|(n, _)| !n.starts_with('.'))
            .map(|(n, m)| MapDef {
                name: n.clone(),
                map_type: m.map_type(),
                key_size: m.key_size(),
                value_size: m.value_size(),
                max_entries: m.max_entries(),
                flags: m.map_flags(),
                origin: MapOrigin::Btf,
            })
            .collect();
        btf_maps.sort_by(|a, b| a.name.cmp(&b.name));
        maps.extend(btf_maps);
    }
    Ok(maps)
}

/// Symbol indices of map symbols, to name relocation targets.
fn map_symbol_indices(file: &Elf<'_>) -> BTreeMap<usize, String> {
    let map_sections: Vec<_> = file
        .sections()
        .filter(|s| {
            s.name()
                .is_ok_and(|n| is_legacy_map_section(n) || n == ".maps")
        })
        .map(|s| s.index())
        .collect();
    file.symbols()
        .filter(|s| s.section_index().is_some_and(|i| map_sections.contains(&i)))
        .filter(|s| s.kind() != object::SymbolKind::Section)
        .filter_map(|s| Some((s.index().0, s.name().ok()?.to_owned())))
        .collect()
}

fn collect_programs(
    file: &Elf<'_>,
    map_symbols: &BTreeMap<usize, String>,
) -> Result<Vec<ProgramDef>, ImageError> {
    let mut programs = Vec::new();
    for section in file.sections() {
        let Ok(section_name) = section.name() else {
            continue;
        };
        if section.kind() != SectionKind::Text || section_name == ".text" || section.size() == 0 {
            continue;
        }
        let mut functions: Vec<_> = file
            .symbols()
            .filter(|s| s.section_index() == Some(section.index()))
            .filter(|s| s.kind() == object::SymbolKind::Text && s.is_global())
            .filter_map(|s| Some((s.address(), s.size(), s.name().ok()?.to_owned())))
            .collect();
        functions.sort();
        let relocations: Vec<(u64, Relocation)> = section
            .relocations()
            .map(|(offset, reloc)| {
                let (symbol, map) = match reloc.target() {
                    RelocationTarget::Symbol(index) => {
                        let symbol = file
                            .symbol_by_index(index)
                            .ok()
                            .and_then(|s| {
                                let n = s.name().ok()?;
                                if n.is_empty() && s.kind() == object::SymbolKind::Section {
                                    let sec = file.section_by_index(s.section_index()?).ok()?;
                                    return sec.name().ok().map(str::to_owned);
                                }
                                Some(n.to_owned())
                            })
                            .unwrap_or_else(|| format!("#{}", index.0));
                        (symbol, map_symbols.get(&index.0).cloned())
                    }
                    RelocationTarget::Section(index) => (
                        file.section_by_index(index)
                            .ok()
                            .and_then(|s| s.name().ok().map(str::to_owned))
                            .unwrap_or_else(|| format!("section #{}", index.0)),
                        None,
                    ),
                    _ => ("?".to_owned(), None),
                };
                (
                    offset,
                    Relocation {
                        offset,
                        symbol,
                        map,
                    },
                )
            })
            .collect();
        for (i, (offset, size, name)) in functions.iter().enumerate() {
            let end = if *size > 0 {
                offset.saturating_add(*size)
            } else {
                functions
                    .get(i + 1)
                    .map(|f| f.0)
                    .unwrap_or_else(|| section.size())
            };
            programs.push(ProgramDef {
                section: section_name.to_owned(),
                name: name.clone(),
                kind: ProgramKind::from_section(section_name),
                offset: *offset,
                insn_count: end.saturating_sub(*offset) / INSN_SIZE,
                relocations: relocations
                    .iter()
                    .filter(|(o, _)| (*offset..end).contains(o))
                    .map(|(o, r)| Relocation {
                        offset: o - offset,
                        ..r.clone()
                    })
                    .collect(),
            });
        }
    }
    Ok(programs)
}

fn is_global_data_section(name: &str) -> bool {
    [".rodata", ".data", ".bss"].iter().any(|p| {
        name == *p
            || name
                .strip_prefix(p)
                .is_some_and(|rest| rest.starts_with('.'))
    })
}

fn collect_globals(file: &Elf<'_>) -> Vec<GlobalVar> {
    let mut globals = Vec::new();
    for symbol in file.symbols() {
        if !matches!(
            symbol.kind(),
            object::SymbolKind::Data | object::SymbolKind::Unknown
        ) {
            continue;
        }
        let Some(index) = symbol.section_index() else {
            continue;
        };
        let Ok(section) = file.section_by_index(index) else {
            continue;
        };
        let Ok(section_name) = section.name() else {
            continue;
        };
        if !is_global_data_section(section_name) {
            continue;
        }
        let Ok(name) = symbol.name() else { continue };
        if name.is_empty() || name.starts_with(".L") {
            continue;
        }
        globals.push(GlobalVar {
            name: name.to_owned(),
            section: section_name.to_owned(),
            offset: symbol.address(),
            size: symbol.size(),
        });
    }
    globals.sort_by(|a, b| (&a.section, a.offset).cmp(&(&b.section, b.offset)));
    globals
}

fn collect_seeds(file: &Elf<'_>, maps: &[MapDef], name: &str) -> Result<Vec<Seed>, ImageError> {
    let mut seeds = Vec::new();
    for section in file.sections() {
        let Ok(section_name) = section.name() else {
            continue;
        };
        let Some(map_name) = section_name.strip_prefix(SEED_SECTION_PREFIX) else {
            continue;
        };
        let Some(map) = maps.iter().find(|m| m.name == map_name) else {
            return Err(ImageError::SeedUnknownMap {
                name: name.to_owned(),
                section: section_name.to_owned(),
                map: map_name.to_owned(),
                maps: maps.iter().map(|m| m.name.clone()).collect(),
            });
        };
        let data = section.data().map_err(|source| ImageError::Malformed {
            name: name.to_owned(),
            source,
        })?;
        let record_size = map.record_size();
        if record_size == 0 || !(data.len() as u64).is_multiple_of(record_size) {
            return Err(ImageError::SeedSize {
                name: name.to_owned(),
                section: section_name.to_owned(),
                map: map_name.to_owned(),
                size: data.len() as u64,
                record_size,
                key_size: map.key_size,
                value_size: map.value_size,
            });
        }
        // A lambda that uses `seed!` more than once for a map gets one section per record
        // (same name): they are one seed, or every user that takes a map's seed by name
        // (the kernel backends) would insert only the first section's records.
        if let Some(seed) = seeds.iter_mut().find(|s: &&mut Seed| s.map == map_name) {
            seed.data.extend_from_slice(data);
            continue;
        }
        seeds.push(Seed {
            section: section_name.to_owned(),
            map: map_name.to_owned(),
            key_size: map.key_size,
            value_size: map.value_size,
            data: data.to_vec(),
        });
    }
    Ok(seeds)
}

/// Line info needs both `.BTF` (strings) and `.BTF.ext` (records); either missing means none.
fn read_line_info(
    file: &object::read::elf::ElfFile64<'_, object::LittleEndian>,
    name: &str,
) -> Result<LineTable, ImageError> {
    let (Some(btf), Some(ext)) = (
        file.section_by_name(".BTF"),
        file.section_by_name(".BTF.ext"),
    ) else {
        return Ok(LineTable::default());
    };
    let malformed = |source| ImageError::Malformed {
        name: name.to_owned(),
        source,
    };
    let btf = btf.data().map_err(malformed)?;
    let ext = ext.data().map_err(malformed)?;
    LineTable::parse(btf, ext).map_err(|source| ImageError::LineInfo {
        name: name.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use object::write::{Object as WObject, Relocation as WRelocation, StandardSection, Symbol};
    use object::{
        Architecture, BinaryFormat, Endianness, RelocationFlags, SymbolFlags, SymbolKind,
        SymbolScope,
    };

    /// `r0 = 2 (XDP_PASS); exit` preceded by an `lddw r1, OBJECTS` relocated to the map.
    const PROG: [u8; 32] = [
        0x18, 0x01, 0, 0, 0, 0, 0, 0, // lddw r1, imm64 (map fd)
        0, 0, 0, 0, 0, 0, 0, 0, //
        0xb7, 0x00, 0, 0, 2, 0, 0, 0, // r0 = 2
        0x95, 0, 0, 0, 0, 0, 0, 0, // exit
    ];

    struct Fixture {
        program_section: &'static str,
        seed: Option<(&'static str, Vec<u8>)>,
    }

    impl Default for Fixture {
        fn default() -> Self {
            Fixture {
                program_section: "xdp",
                seed: None,
            }
        }
    }

    fn map_def(map_type: u32, key: u32, value: u32, max: u32) -> Vec<u8> {
        [map_type, key, value, max, 0, 0, 0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect()
    }

    fn build(fixture: Fixture) -> Vec<u8> {
        let mut obj = WObject::new(BinaryFormat::Elf, Architecture::Bpf, Endianness::Little);
        let prog = obj.add_section(
            Vec::new(),
            fixture.program_section.as_bytes().to_vec(),
            SectionKind::Text,
        );
        obj.append_section_data(prog, &PROG, 8);
        obj.add_symbol(Symbol {
            name: b"static_server".to_vec(),
            value: 0,
            size: PROG.len() as u64,
            kind: SymbolKind::Text,
            scope: SymbolScope::Linkage,
            weak: false,
            section: object::write::SymbolSection::Section(prog),
            flags: SymbolFlags::None,
        });

        let maps = obj.add_section(Vec::new(), b"maps".to_vec(), SectionKind::Data);
        let def = map_def(1, 4, 8, 16);
        obj.append_section_data(maps, &def, 4);
        let map_sym = obj.add_symbol(Symbol {
            name: b"OBJECTS".to_vec(),
            value: 0,
            size: def.len() as u64,
            kind: SymbolKind::Data,
            scope: SymbolScope::Linkage,
            weak: false,
            section: object::write::SymbolSection::Section(maps),
            flags: SymbolFlags::None,
        });
        obj.add_relocation(
            prog,
            WRelocation {
                offset: 0,
                symbol: map_sym,
                addend: 0,
                flags: RelocationFlags::Elf { r_type: 1 },
            },
        )
        .unwrap();

        let rodata = obj.section_id(StandardSection::ReadOnlyData);
        assert_eq!(obj.section(rodata).name(), Some(".rodata"));
        for (name, size) in [("LNIC_PORT", 2u64), ("LNIC_LAMBDA_ID", 4)] {
            let offset = obj.append_section_data(rodata, &vec![0; size as usize], size);
            obj.add_symbol(Symbol {
                name: name.as_bytes().to_vec(),
                value: offset,
                size,
                kind: SymbolKind::Data,
                scope: SymbolScope::Linkage,
                weak: false,
                section: object::write::SymbolSection::Section(rodata),
                flags: SymbolFlags::None,
            });
        }

        if let Some((map, data)) = fixture.seed {
            let section = obj.add_section(
                Vec::new(),
                format!("{SEED_SECTION_PREFIX}{map}").into_bytes(),
                SectionKind::ReadOnlyData,
            );
            obj.append_section_data(section, &data, 1);
        }
        obj.write().unwrap()
    }

    #[test]
    fn parses_programs_maps_relocations_globals_and_seeds() {
        let mut seed = Vec::new();
        for i in 0..3u32 {
            seed.extend_from_slice(&i.to_le_bytes());
            seed.extend_from_slice(&u64::from(i * 10).to_le_bytes());
        }
        let bytes = build(Fixture {
            seed: Some(("OBJECTS", seed)),
            ..Fixture::default()
        });
        let image = LambdaImage::parse(&bytes, "fixture").unwrap();

        assert_eq!(image.name, "fixture");
        let prog = image.xdp_program();
        assert_eq!(prog.section, "xdp");
        assert_eq!(prog.name, "static_server");
        assert_eq!(prog.insn_count, 4);
        assert_eq!(
            prog.relocations,
            vec![Relocation {
                offset: 0,
                symbol: "OBJECTS".into(),
                map: Some("OBJECTS".into())
            }]
        );
        assert_eq!(
            image.maps,
            vec![MapDef {
                name: "OBJECTS".into(),
                map_type: 1,
                key_size: 4,
                value_size: 8,
                max_entries: 16,
                flags: 0,
                origin: MapOrigin::Legacy,
            }]
        );
        assert_eq!(image.maps[0].type_name(), "hash");
        let port = image.global("LNIC_PORT").unwrap();
        assert_eq!((port.section.as_str(), port.size), (".rodata", 2));
        assert_eq!(image.global("LNIC_LAMBDA_ID").unwrap().size, 4);
        let seed = image.seed("OBJECTS").unwrap();
        assert_eq!(seed.record_count(), 3);
        let records: Vec<_> = seed.records().collect();
        assert_eq!(records[2].0, &2u32.to_le_bytes());
        assert_eq!(records[2].1, &20u64.to_le_bytes());
        assert!(!image.has_btf);
        assert!(!image.has_line_info());
    }

    #[test]
    fn xdp_section_variants_are_xdp() {
        assert_eq!(ProgramKind::from_section("xdp"), ProgramKind::Xdp);
        assert_eq!(ProgramKind::from_section("xdp/foo"), ProgramKind::Xdp);
        assert_eq!(ProgramKind::from_section("xdp.frags"), ProgramKind::Xdp);
        assert_eq!(ProgramKind::from_section("xdpfoo"), ProgramKind::Other);
        assert_eq!(ProgramKind::from_section("classifier"), ProgramKind::Other);
    }

    #[test]
    fn rejects_non_elf() {
        let err = LambdaImage::parse(b"#!/bin/sh\necho hi\n\0\0\0\0", "script").unwrap_err();
        assert!(matches!(err, ImageError::NotElf { .. }), "{err:?}");
        assert!(err.to_string().contains("not an ELF file"), "{err}");
        let err = LambdaImage::parse(b"", "empty").unwrap_err();
        assert!(matches!(err, ImageError::NotElf { .. }), "{err:?}");
    }

    #[test]
    fn rejects_wrong_machine() {
        let mut bytes = build(Fixture::default());
        bytes[18..20].copy_from_slice(&62u16.to_le_bytes());
        let err = LambdaImage::parse(&bytes, "host.o").unwrap_err();
        match &err {
            ImageError::WrongMachine {
                machine,
                machine_name,
                ..
            } => assert_eq!((*machine, *machine_name), (62, "x86-64")),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            err.to_string(),
            "host.o: ELF for machine x86-64 (62), not BPF (247)"
        );
    }

    #[test]
    fn rejects_32_bit_and_big_endian() {
        let mut bytes = build(Fixture::default());
        bytes[4] = 1;
        assert!(matches!(
            LambdaImage::parse(&bytes, "x").unwrap_err(),
            ImageError::NotElf64 { class: 1, .. }
        ));
        let mut bytes = build(Fixture::default());
        bytes[5] = 2;
        assert!(matches!(
            LambdaImage::parse(&bytes, "x").unwrap_err(),
            ImageError::NotLittleEndian { data: 2, .. }
        ));
    }

    #[test]
    fn rejects_object_without_xdp_program() {
        let bytes = build(Fixture {
            program_section: "classifier",
            ..Fixture::default()
        });
        let err = LambdaImage::parse(&bytes, "tc.o").unwrap_err();
        match &err {
            ImageError::NoXdpProgram {
                program_sections, ..
            } => assert_eq!(program_sections, &["classifier".to_owned()]),
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().contains("no XDP program"), "{err}");
    }

    #[test]
    fn rejects_seed_of_wrong_size() {
        let bytes = build(Fixture {
            seed: Some(("OBJECTS", vec![0; 13])),
            ..Fixture::default()
        });
        match LambdaImage::parse(&bytes, "x").unwrap_err() {
            ImageError::SeedSize {
                map,
                size,
                record_size,
                ..
            } => assert_eq!((map.as_str(), size, record_size), ("OBJECTS", 13, 12)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rejects_seed_for_unknown_map() {
        let bytes = build(Fixture {
            seed: Some(("NOPE", vec![0; 12])),
            ..Fixture::default()
        });
        let err = LambdaImage::parse(&bytes, "x").unwrap_err();
        match &err {
            ImageError::SeedUnknownMap { map, maps, .. } => {
                assert_eq!(map, "NOPE");
                assert_eq!(maps, &["OBJECTS".to_owned()]);
            }
            other => panic!("{other:?}"),
        }
    }
}
