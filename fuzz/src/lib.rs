//! Input formats shared by the fuzz targets and the seed generator (`examples/seeds.rs`), so a
//! seed written by one is read the same way by the other.
//!
//! The `verifier` target reads a fuzz input as one 8-byte header slot followed by eBPF code:
//!
//! ```text
//! byte 0..2   size of the raw memory for the RawMemory run (u16, little-endian)
//! byte 2      maps: low 2 bits = how many (0–3)
//! byte 3      maps: which entries of MAP_MENU, 2 bits per map
//! byte 4      profiles: bit 0 kernel, bit 1 nfp, bit 2 vm (0 = all three)
//! byte 5      max_insns = 2^(byte % 24); 0 means the default
//! byte 6      nfp instruction budget = byte × 16; 0 means the default
//! byte 7      unused (kept so the header is exactly one instruction slot)
//! ```
//!
//! The header makes the fuzzer explore map references, profiles and limits instead of always
//! running with the defaults; the code after it is decoded with `ebpf_isa::decode` after
//! dropping a trailing partial slot (refusing the whole input would waste most mutations).

use verifier::{Backend, MapInfo, Options, ProgramInput, ProgramKind, map_type};

/// Bytes of the header slot.
pub const HEADER: usize = 8;

/// Maps the header can pick: one of each shape the verifier treats differently (values the
/// program may read, per-CPU, read-only global data, maps without values).
pub const MAP_MENU: [(&str, u32, u32, u32, u32, bool); 4] = [
    ("hash", map_type::HASH, 4, 8, 16, false),
    ("array", map_type::ARRAY, 4, 64, 1, false),
    ("rodata", map_type::ARRAY, 4, 32, 1, true),
    ("prog_array", map_type::PROG_ARRAY, 4, 4, 8, false),
];

/// What one `verifier` fuzz input means.
pub struct VerifierCase {
    /// The code verified as XDP.
    pub xdp: ProgramInput,
    /// The same code verified as a raw-memory program.
    pub raw: ProgramInput,
    pub options: Options,
}

/// Interprets a `verifier` fuzz input; `None` when it is shorter than the header.
pub fn verifier_case(data: &[u8]) -> Option<VerifierCase> {
    let (header, code) = data.split_at_checked(HEADER)?;
    let whole = code.len() - code.len() % ebpf_isa::INSN_SIZE;
    let insns = ebpf_isa::decode(&code[..whole]).ok()?.insns;

    let count = usize::from(header[2] & 3);
    let maps: Vec<MapInfo> = (0..count)
        .map(|i| {
            let (name, map_type, key_size, value_size, max_entries, read_only) =
                MAP_MENU[usize::from((header[3] >> (2 * i)) & 3)];
            MapInfo {
                name: format!("{name}{i}"),
                map_type,
                key_size,
                value_size,
                max_entries,
                flags: 0,
                read_only,
            }
        })
        .collect();

    let mut options = Options::default();
    let profiles: Vec<Backend> = Backend::ALL
        .into_iter()
        .enumerate()
        .filter(|(i, _)| header[4] & (1 << i) != 0)
        .map(|(_, b)| b)
        .collect();
    if !profiles.is_empty() {
        options.profiles = profiles;
    }
    if header[5] != 0 {
        options.max_insns = 1u64 << (header[5] % 24);
    }
    if header[6] != 0 {
        options.nfp_insn_budget = usize::from(header[6]) * 16;
    }

    let size = u32::from(u16::from_le_bytes([header[0], header[1]]));
    let mut xdp = ProgramInput::new("fuzz", ProgramKind::Xdp, insns.clone());
    xdp.maps = maps.clone();
    let mut raw = ProgramInput::new("fuzz", ProgramKind::RawMemory { size }, insns);
    raw.maps = maps;
    Some(VerifierCase { xdp, raw, options })
}

/// The header for a seed: raw memory of `size` bytes, `maps` picked from [`MAP_MENU`] (at most
/// three), default options.
pub fn verifier_header(size: u16, maps: &[usize]) -> [u8; HEADER] {
    let mut header = [0u8; HEADER];
    header[..2].copy_from_slice(&size.to_le_bytes());
    let maps = &maps[..maps.len().min(3)];
    header[2] = maps.len() as u8;
    for (i, &m) in maps.iter().enumerate() {
        header[3] |= ((m & 3) as u8) << (2 * i);
    }
    header
}
