//! ELF object → one linked program: bpf-to-bpf calls resolved, map references numbered, line
//! info per instruction. This is what the VM backend runs and the verifier checks; the kernel
//! backend lets aya do the same steps with real map file descriptors.
//!
//! Map references in the linked code: an `lddw` with `src = 1` (`BPF_PSEUDO_MAP_FD`) has
//! `imm` = index into [`LinkedProgram::maps`]; with `src = 2` (`BPF_PSEUDO_MAP_VALUE`) `imm` is
//! the map index and the second slot's `imm` the offset into the map's value — that is how
//! `.rodata`, `.data` and `.bss` globals are reached (each is a one-element array map).

use std::collections::HashSet;

use aya_obj::EbpfSectionKind;
use ebpf_isa::{Insn, opcode};
use thiserror::Error;

use crate::image::{ImageError, LambdaImage, map_type_name};
use crate::lambda::LambdaParams;
use crate::lineinfo::{BtfStrings, LineInfo};

/// `BPF_MAP_TYPE_ARRAY`: the kind of map a global-data section becomes.
const MAP_TYPE_ARRAY: u32 = 2;

/// Why an object could not be linked into one program.
#[derive(Debug, Error)]
pub enum LinkError {
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("{name}: aya-obj cannot parse the object: {message}")]
    Parse { name: String, message: String },
    #[error("{name}: relocating `{what}` failed: {message}")]
    Relocation {
        name: String,
        what: &'static str,
        message: String,
    },
    #[error("{name}: program `{program}` is not in the object")]
    MissingProgram { name: String, program: String },
    #[error(
        "{name}: global `{global}` is {size} bytes at offset {offset} of `{section}`, which does not fit the value {value:?} the loader writes"
    )]
    GlobalShape {
        name: String,
        global: String,
        section: String,
        offset: u64,
        size: u64,
        value: Vec<u8>,
    },
}

/// Where a linked map came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkedMapKind {
    /// A map the program declared (legacy `maps` or BTF `.maps`).
    Declared,
    /// A global-data section (`.rodata*`, `.data*`, `.bss*`) as a one-element array.
    GlobalData { read_only: bool },
}

/// One map of a linked program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkedMap {
    pub name: String,
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
    pub kind: LinkedMapKind,
    /// For global data: the initial value (with the loader's parameters written in).
    pub initial: Vec<u8>,
}

impl LinkedMap {
    pub fn type_name(&self) -> String {
        map_type_name(self.map_type)
    }
}

/// A program with its calls linked and its map references numbered.
#[derive(Clone, Debug)]
pub struct LinkedProgram {
    /// The lambda (object) name.
    pub lambda: String,
    /// The program's function name.
    pub program: String,
    /// The ELF section of the entry function.
    pub section: String,
    pub insns: Vec<Insn>,
    pub maps: Vec<LinkedMap>,
    /// The source line of each instruction slot, where the object has line info (empty
    /// otherwise).
    pub lines: Vec<Option<LineInfo>>,
}

impl LinkedProgram {
    /// The source line of slot `insn`.
    pub fn line(&self, insn: usize) -> Option<&LineInfo> {
        self.lines.get(insn).and_then(Option::as_ref)
    }

    /// Index of the map called `name`.
    pub fn map_index(&self, name: &str) -> Option<usize> {
        self.maps.iter().position(|m| m.name == name)
    }
}

/// Links the object's XDP program (the one the kernel backend attaches), with `params` written
/// into its attach-time globals.
pub fn link_xdp(
    bytes: &[u8],
    name: &str,
    params: &LambdaParams,
) -> Result<(LambdaImage, LinkedProgram), LinkError> {
    let image = LambdaImage::parse(bytes, name)?;
    let program = image.xdp_program().clone();
    let linked = link_program(bytes, &image, &program.name, &program.section, params)?;
    Ok((image, linked))
}

fn link_program(
    bytes: &[u8],
    image: &LambdaImage,
    program: &str,
    section: &str,
    params: &LambdaParams,
) -> Result<LinkedProgram, LinkError> {
    let name = &image.name;
    let mut object = crate::image::parse_with_aya(bytes, name)?.map_err(|e| LinkError::Parse {
        name: name.clone(),
        message: e.to_string(),
    })?;

    let mut map_names: Vec<String> = object.maps.keys().cloned().collect();
    map_names.sort();
    let mut maps = Vec::with_capacity(map_names.len());
    for map_name in &map_names {
        let map = &object.maps[map_name];
        let kind = match map.section_kind() {
            EbpfSectionKind::Rodata => LinkedMapKind::GlobalData { read_only: true },
            EbpfSectionKind::Data | EbpfSectionKind::Bss => {
                LinkedMapKind::GlobalData { read_only: false }
            }
            _ => LinkedMapKind::Declared,
        };
        let mut initial = map.data().to_vec();
        if let LinkedMapKind::GlobalData { .. } = kind {
            // `.bss` has no bytes in the file; its value is all zeroes.
            initial.resize(map.value_size() as usize, 0);
            write_params(image, map_name, &mut initial, params)?;
        }
        maps.push(LinkedMap {
            name: map_name.clone(),
            map_type: if matches!(kind, LinkedMapKind::GlobalData { .. }) {
                MAP_TYPE_ARRAY
            } else {
                map.map_type()
            },
            key_size: map.key_size(),
            value_size: map.value_size(),
            max_entries: map.max_entries(),
            flags: map.map_flags(),
            kind,
            initial,
        });
    }

    // As aya does: every section holding functions is a possible call target.
    let text_sections: HashSet<usize> = object
        .functions
        .keys()
        .map(|(section, _)| *section)
        .collect();
    let relocation_input: Vec<(String, i32, aya_obj::Map)> = map_names
        .iter()
        .enumerate()
        .map(|(index, n)| (n.clone(), index as i32, object.maps[n].clone()))
        .collect();
    // aya-obj's relocation indexes instructions by relocation offsets it does not always
    // check; a panic on a malformed object becomes an error here.
    let relocated = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        object
            .relocate_maps(
                relocation_input
                    .iter()
                    .map(|(n, fd, m)| (n.as_str(), *fd, m)),
                &text_sections,
            )
            .map_err(|e| ("maps", error_chain(&e)))?;
        object
            .relocate_calls(&text_sections)
            .map_err(|e| ("calls", error_chain(&e)))
    }));
    match relocated {
        Ok(Ok(())) => {}
        Ok(Err((what, message))) => {
            return Err(LinkError::Relocation {
                name: name.clone(),
                what,
                message,
            });
        }
        Err(panic) => {
            return Err(LinkError::Relocation {
                name: name.clone(),
                what: "maps and calls",
                message: panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "aya-obj panicked on this object".to_owned()),
            });
        }
    }

    let entry = object
        .programs
        .get(program)
        .ok_or_else(|| LinkError::MissingProgram {
            name: name.clone(),
            program: program.to_owned(),
        })?;
    let function =
        object
            .functions
            .get(&entry.function_key())
            .ok_or_else(|| LinkError::MissingProgram {
                name: name.clone(),
                program: program.to_owned(),
            })?;
    let insns: Vec<Insn> = function
        .instructions
        .iter()
        .map(|raw| {
            // SAFETY: `bpf_insn` is the kernel's 8-byte `#[repr(C)]` instruction struct.
            let bytes: [u8; 8] = unsafe { std::mem::transmute_copy(raw) };
            Insn::from_bytes(bytes)
        })
        .collect();

    let lines = linked_lines(bytes, section, function, insns.len());
    Ok(LinkedProgram {
        lambda: name.clone(),
        program: program.to_owned(),
        section: section.to_owned(),
        insns,
        maps,
        lines,
    })
}

/// Writes the loader's parameters into global-data section `section`.
fn write_params(
    image: &LambdaImage,
    section: &str,
    data: &mut [u8],
    params: &LambdaParams,
) -> Result<(), LinkError> {
    for (global, value) in params.global_values() {
        let Some(var) = image.global(global) else {
            continue;
        };
        if var.section != section {
            continue;
        }
        let start = var.offset as usize;
        let fits = var.size as usize == value.len()
            && start
                .checked_add(value.len())
                .is_some_and(|end| end <= data.len());
        if !fits {
            return Err(LinkError::GlobalShape {
                name: image.name.clone(),
                global: global.to_owned(),
                section: section.to_owned(),
                offset: var.offset,
                size: var.size,
                value,
            });
        }
        data[start..start + value.len()].copy_from_slice(&value);
    }
    Ok(())
}

/// The source line of every linked slot, from the line info aya carried through linking and
/// the object's own BTF string table.
fn linked_lines(
    bytes: &[u8],
    section: &str,
    function: &aya_obj::Function,
    len: usize,
) -> Vec<Option<LineInfo>> {
    let records = &function.line_info.line_info;
    if records.is_empty() {
        return Vec::new();
    }
    let Some(btf) = section_bytes(bytes, ".BTF") else {
        return Vec::new();
    };
    let Ok(strings) = BtfStrings::parse(btf) else {
        return Vec::new();
    };
    let mut sorted: Vec<_> = records.iter().collect();
    sorted.sort_by_key(|r| r.insn_off);
    let mut lines = vec![None; len];
    for (i, record) in sorted.iter().enumerate() {
        let start = record.insn_off as usize;
        let end = sorted
            .get(i + 1)
            .map_or(len, |next| next.insn_off as usize)
            .min(len);
        if start >= end {
            continue;
        }
        let (Ok(file), Ok(text)) = (
            strings.get(record.file_name_off),
            strings.get(record.line_off),
        ) else {
            continue;
        };
        let info = LineInfo {
            section: section.to_owned(),
            insn: start,
            file,
            line: record.line_col >> 10,
            column: record.line_col & 0x3ff,
            text,
        };
        for slot in &mut lines[start..end] {
            *slot = Some(info.clone());
        }
    }
    lines
}

fn section_bytes<'a>(bytes: &'a [u8], name: &str) -> Option<&'a [u8]> {
    use object::{Object as _, ObjectSection as _};
    let file = object::File::parse(bytes).ok()?;
    file.section_by_name(name)?.data().ok()
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// Whether slot `index` is the first slot of a map-referencing `lddw`, and which map.
pub fn map_reference(insns: &[Insn], index: usize) -> Option<(usize, Option<u32>)> {
    let insn = insns.get(index)?;
    if !insn.is_lddw() {
        return None;
    }
    match insn.src {
        opcode::PSEUDO_MAP_FD => Some((insn.imm as usize, None)),
        opcode::PSEUDO_MAP_VALUE => Some((
            insn.imm as usize,
            Some(insns.get(index + 1).map_or(0, |i| i.imm as u32)),
        )),
        _ => None,
    }
}
