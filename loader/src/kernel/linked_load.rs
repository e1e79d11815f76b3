//! A linked program (see [`crate::link`]) loaded into the kernel with maps of its own, neither
//! pinned nor attached: for programs that exist only as instructions (the coalescer's output)
//! and for comparing them under BPF_PROG_TEST_RUN with the programs they came from.

use std::os::fd::OwnedFd;

use ebpf_isa::Insn;

use super::{
    RawRunError,
    raw_run::{ProgramBtf, load_xdp_with},
    sys::map_freeze,
    with_map_fds,
};
use crate::link::{LinkedMap, LinkedMapKind};
use crate::maps::{KernelMap, MapAccess as _, MapSpec, MapType, UpdateFlags};

/// A loaded program and the maps it references (kept open as long as it is).
#[derive(Debug)]
pub struct LoadedProgram {
    pub prog: OwnedFd,
    /// In the order of the linked program's map indices.
    pub maps: Vec<KernelMap>,
}

/// Creates `maps` (global data gets its initial value, read-only global data is frozen, each
/// map gets the records of `seeds` at its index), points `insns`' map references at them and
/// loads the result as an XDP program, with `btf`'s function information when given.
pub fn load_linked(
    insns: &[Insn],
    maps: &[LinkedMap],
    seeds: &[Vec<(Vec<u8>, Vec<u8>)>],
    btf: Option<&ProgramBtf>,
) -> Result<LoadedProgram, RawRunError> {
    let mut created = Vec::with_capacity(maps.len());
    let map_err = |map: &LinkedMap| {
        let name = map.name.clone();
        move |source| RawRunError::Map { map: name, source }
    };
    for (index, map) in maps.iter().enumerate() {
        let spec = MapSpec {
            name: map.name.clone(),
            map_type: MapType::from_raw(map.map_type),
            key_size: map.key_size,
            value_size: map.value_size,
            max_entries: map.max_entries,
            flags: map.flags,
        };
        let kmap = KernelMap::create(&spec).map_err(map_err(map))?;
        if let LinkedMapKind::GlobalData { read_only } = map.kind {
            let mut value = map.initial.clone();
            value.resize(map.value_size as usize, 0);
            kmap.update(&0u32.to_ne_bytes(), &value, UpdateFlags::Any)
                .map_err(map_err(map))?;
            if read_only {
                map_freeze(kmap.fd()).map_err(|source| RawRunError::Syscall {
                    operation: "BPF_MAP_FREEZE",
                    source,
                })?;
            }
        }
        for (key, value) in seeds.get(index).into_iter().flatten() {
            kmap.update(key, value, UpdateFlags::Any)
                .map_err(map_err(map))?;
        }
        created.push(kmap);
    }
    let fds: Vec<OwnedFd> = created
        .iter()
        .map(|m| m.fd().try_clone_to_owned())
        .collect::<std::io::Result<_>>()
        .map_err(|source| RawRunError::Syscall {
            operation: "dup",
            source,
        })?;
    let prog = load_xdp_with(&with_map_fds(insns, &fds), 0, btf)?;
    // The program holds its own references to the maps now; `created` keeps them reachable
    // from user space.
    drop(fds);
    Ok(LoadedProgram {
        prog,
        maps: created,
    })
}

/// How many instructions the kernel's verifier processed to accept `prog`
/// (`bpf_prog_info.verified_insns`, kernel ≥ 5.16): its cost against the kernel's limit of one
/// million.
pub fn verified_insns(prog: std::os::fd::BorrowedFd<'_>) -> std::io::Result<u32> {
    Ok(super::sys::prog_info(prog)?.verified_insns)
}
