//! Hardware offload: the load path aya 0.14 cannot take. Maps are created on the device
//! (`bpf_attr.map_ifindex`), the program is loaded for the device (`bpf_attr.prog_ifindex`,
//! which sends it through the driver's offload JIT) and attached with `XDP_FLAGS_HW_MODE`
//! through a bpf_link, pinned like every other attachment.
//!
//! Whether a device can offload at all is decided before this runs (the `nic-offload` crate's
//! probe); this module only does the loading, and leaves nothing behind when a step fails.

use std::{
    fs, io,
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use super::{
    Attached, AttachmentRecord, Host, KernelError, LambdaParams, ModeUsed, PinnedMap,
    check_privileges,
    error::io_err,
    ifindex, raw_run, read_object,
    sys::{bpf_syscall, obj_pin},
    write_record,
};
use crate::link::{LinkedMapKind, LinkedProgram, link_xdp};
use crate::maps::{KernelMap, MapAccess as _, MapSpec, MapType, UpdateFlags};

/// `XDP_FLAGS_HW_MODE` (include/uapi/linux/if_link.h): run the program on the NIC.
pub const XDP_FLAGS_HW_MODE: u32 = 1 << 3;

const BPF_LINK_CREATE: libc::c_long = 28;
/// `BPF_XDP` attach type.
const BPF_XDP: u32 = 37;

/// Attaches the loaded XDP program `prog` to `ifindex` with `flags` (`XDP_FLAGS_*`) through a
/// bpf_link (BPF_LINK_CREATE); the link's file descriptor.
pub fn xdp_link_create(prog: BorrowedFd<'_>, ifindex: u32, flags: u32) -> io::Result<OwnedFd> {
    #[repr(C)]
    struct LinkCreateAttr {
        prog_fd: u32,
        target_ifindex: u32,
        attach_type: u32,
        flags: u32,
    }
    let attr = LinkCreateAttr {
        prog_fd: prog.as_raw_fd() as u32,
        target_ifindex: ifindex,
        attach_type: BPF_XDP,
        flags,
    };
    // SAFETY: a plain attribute block without pointers.
    let fd = unsafe { bpf_syscall(BPF_LINK_CREATE, &attr) }?;
    // SAFETY: the kernel just returned this fd to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// The id of a program or link (`bpf_prog_info.id` / `bpf_link_info.id`): both info structs
/// start `u32 type; u32 id;` and the kernel copies only `info_len` bytes.
fn object_ids(fd: BorrowedFd<'_>) -> io::Result<[u32; 3]> {
    let mut info = [0u32; 3];
    // SAFETY: the first three u32s of both `bpf_prog_info` and `bpf_link_info`; no pointers.
    unsafe { super::sys::obj_info_into(fd, &mut info) }?;
    Ok(info)
}

/// A program to offload as it is to be loaded: instructions with map references by index into
/// `linked.maps` (the NIC lowering's output, or an object linked as written), the records to
/// seed into each map (by the same index), and what the attachment record says it is.
#[derive(Clone, Debug)]
pub struct OffloadProgram<'a> {
    /// The object it came from (recorded; never read here).
    pub object: &'a Path,
    /// The lambda's name (the object's stem).
    pub lambda: &'a str,
    pub linked: &'a LinkedProgram,
    /// Seed records by map index (shorter than `linked.maps`: the rest get none).
    pub seeds: &'a [Vec<(Vec<u8>, Vec<u8>)>],
    /// The port and lambda id it was linked for.
    pub params: LambdaParams,
}

impl Host {
    /// Loads `object` onto the NIC behind `iface` as written (linked for `params`, no
    /// lowering) and attaches it in hardware mode: see [`Host::attach_offloaded_program`].
    pub fn attach_offloaded(
        &self,
        object: &Path,
        iface: &str,
        params: &LambdaParams,
    ) -> Result<Attached, KernelError> {
        let bytes = read_object(object)?;
        let lambda = object
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "lambda".to_owned());
        let (image, linked) =
            link_xdp(&bytes, &lambda, params).map_err(|e| KernelError::OffloadFailed {
                iface: iface.to_owned(),
                step: "linking the object".into(),
                reason: e.to_string(),
            })?;
        let seeds: Vec<Vec<(Vec<u8>, Vec<u8>)>> = linked
            .maps
            .iter()
            .map(|m| match (m.kind, image.seed(&m.name)) {
                (LinkedMapKind::Declared, Some(seed)) => seed
                    .records()
                    .map(|(k, v)| (k.to_vec(), v.to_vec()))
                    .collect(),
                _ => Vec::new(),
            })
            .collect();
        self.attach_offloaded_program(
            &OffloadProgram {
                object,
                lambda: &image.name,
                linked: &linked,
                seeds: &seeds,
                params: *params,
            },
            iface,
        )
    }

    /// Loads `program` onto the NIC behind `iface` and attaches it in hardware mode: the maps
    /// its code references created on the device (global data with its initial value, each
    /// map with its seed records), the program loaded for it, a `XDP_FLAGS_HW_MODE` bpf_link
    /// pinned where [`Host::attach`] pins its links. Map pins are never reused (offloaded maps
    /// live in the NIC's memory, a host map cannot stand in). On failure everything created is
    /// removed.
    pub fn attach_offloaded_program(
        &self,
        program: &OffloadProgram<'_>,
        iface: &str,
    ) -> Result<Attached, KernelError> {
        let OffloadProgram {
            object,
            lambda,
            linked,
            seeds,
            params,
        } = *program;
        let params = &params;
        let ifindex = ifindex(iface)?;
        check_privileges(&format!("offloading to {iface}"))?;
        let mut notes = Vec::new();
        notes.extend(self.ensure_bpffs()?);
        notes.extend(self.clear_stale_attachment(iface, ifindex)?);

        let dir = self.attachment_dir(iface);
        let maps_dir = self.maps_dir(iface);
        let link_pin = self.link_pin(iface);
        fs::create_dir_all(&maps_dir).map_err(io_err("creating", &maps_dir))?;
        let mut created: Vec<PathBuf> = Vec::new();
        let failed = |step: &str, reason: String| KernelError::OffloadFailed {
            iface: iface.to_owned(),
            step: step.to_owned(),
            reason,
        };

        let result = (|| {
            // Only the maps the code references go to the device: an object links every map
            // it declares, and an unused one of a type the NIC lacks must not fail the load.
            let used: Vec<bool> = (0..linked.maps.len())
                .map(|m| {
                    linked.insns.iter().any(|i| {
                        i.is_lddw()
                            && matches!(
                                i.src,
                                ebpf_isa::opcode::PSEUDO_MAP_FD
                                    | ebpf_isa::opcode::PSEUDO_MAP_VALUE
                            )
                            && i.imm as usize == m
                    })
                })
                .collect();
            let mut fds: Vec<Option<OwnedFd>> = Vec::new();
            let mut pinned_maps = Vec::new();
            for (index, map) in linked.maps.iter().enumerate() {
                if !used[index] {
                    fds.push(None);
                    continue;
                }
                let spec = MapSpec {
                    name: map.name.clone(),
                    map_type: MapType::from_raw(map.map_type),
                    key_size: map.key_size,
                    value_size: map.value_size,
                    max_entries: map.max_entries,
                    flags: map.flags,
                };
                let kmap = KernelMap::create_bound(&spec, ifindex).map_err(|e| {
                    failed(
                        &format!("creating map {} on the device", map.name),
                        e.to_string(),
                    )
                })?;
                let mut seeded = 0;
                match map.kind {
                    LinkedMapKind::GlobalData { .. } => {
                        let mut value = map.initial.clone();
                        value.resize(map.value_size as usize, 0);
                        kmap.update(&0u32.to_ne_bytes(), &value, UpdateFlags::Any)
                            .map_err(|e| failed(&format!("writing {}", map.name), e.to_string()))?;
                    }
                    LinkedMapKind::Declared => {
                        for (key, value) in seeds.get(index).into_iter().flatten() {
                            kmap.update(key, value, UpdateFlags::Any).map_err(|e| {
                                failed(&format!("seeding {}", map.name), e.to_string())
                            })?;
                            seeded += 1;
                        }
                    }
                }
                // bpffs refuses dots in pin names (`.bss` is pinned as `_bss`).
                let pin = maps_dir.join(map.name.replace('.', "_"));
                kmap.pin(&pin)
                    .map_err(|e| failed(&format!("pinning {}", map.name), e.to_string()))?;
                created.push(pin.clone());
                pinned_maps.push(PinnedMap {
                    name: map.name.clone(),
                    pin,
                    map_type: map.type_name(),
                    key_size: map.key_size,
                    value_size: map.value_size,
                    max_entries: map.max_entries,
                    reused: false,
                    seeded,
                });
                fds.push(Some(kmap.into_fd()));
            }
            let mut insns = linked.insns.clone();
            for insn in &mut insns {
                if insn.is_lddw()
                    && matches!(
                        insn.src,
                        ebpf_isa::opcode::PSEUDO_MAP_FD | ebpf_isa::opcode::PSEUDO_MAP_VALUE
                    )
                    && let Some(Some(fd)) = usize::try_from(insn.imm).ok().and_then(|m| fds.get(m))
                {
                    insn.imm = fd.as_raw_fd();
                }
            }
            let prog = raw_run::load_xdp_bound(&insns, ifindex)
                .map_err(|e| failed("loading the program for the device", e.to_string()))?;
            let link = xdp_link_create(prog.as_fd(), ifindex, XDP_FLAGS_HW_MODE)
                .map_err(|e| failed("attaching with XDP_FLAGS_HW_MODE", e.to_string()))?;
            obj_pin(link.as_fd(), &link_pin)
                .map_err(|e| failed("pinning the link", e.to_string()))?;
            created.push(link_pin.clone());
            let program_id = object_ids(prog.as_fd())
                .map_err(|e| failed("reading program info", e.to_string()))?[1];
            let link_id = object_ids(link.as_fd())
                .map_err(|e| failed("reading link info", e.to_string()))?[1];
            let record = AttachmentRecord {
                iface: iface.to_owned(),
                ifindex,
                netns_inode: self.netns_inode,
                mode: ModeUsed::Hw,
                object: fs::canonicalize(object).unwrap_or_else(|_| object.to_owned()),
                lambda: lambda.to_owned(),
                program: linked.program.clone(),
                program_id,
                link_id,
                link_pin: link_pin.clone(),
                port: params.port,
                lambda_id: params.lambda_id,
                maps: pinned_maps,
                attached_at: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
                previous: None,
            };
            write_record(&self.record_path(iface), &record)?;
            Ok(record)
        })();
        match result {
            Ok(record) => Ok(Attached {
                record,
                drv_fallback: None,
                notes,
            }),
            Err(e) => {
                for path in created.iter().rev() {
                    let _ = fs::remove_file(path);
                }
                for d in [&maps_dir, &dir, &self.netns_pin_dir()] {
                    let _ = fs::remove_dir(d);
                }
                Err(e)
            }
        }
    }
}
