//! The raw system calls aya 0.14 does not offer, and facts read from the system: privileges,
//! interfaces, namespaces, filesystems.

use std::{
    ffi::CString,
    fs, io,
    os::{
        fd::{AsRawFd as _, BorrowedFd},
        unix::fs::MetadataExt as _,
    },
    path::Path,
};

use super::error::{KernelError, io_err};

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

/// Checks the effective capabilities for loading and attaching XDP programs.
pub fn check_privileges(operation: &str) -> Result<(), KernelError> {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let Some(cap_eff) = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
    else {
        // Cannot tell: let the kernel decide.
        return Ok(());
    };
    let has = |cap: u32| cap_eff & (1u64 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_NET_ADMIN)) {
        return Ok(());
    }
    let mut missing = Vec::new();
    if !has(CAP_BPF) {
        missing.push("CAP_BPF");
    }
    if !has(CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    Err(KernelError::PermissionDenied {
        operation: operation.to_owned(),
        detail: Some(format!("missing {}", missing.join(" and "))),
    })
}

/// The interface index of `iface` in the current network namespace.
pub fn ifindex(iface: &str) -> Result<u32, KernelError> {
    let no_such = || KernelError::NoSuchInterface {
        iface: iface.to_owned(),
    };
    if iface.is_empty() || iface.contains('/') || iface == "." || iface == ".." {
        return Err(no_such());
    }
    let c = CString::new(iface).map_err(|_| no_such())?;
    // SAFETY: `c` is a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        Err(no_such())
    } else {
        Ok(index)
    }
}

/// The inode number of the current thread's network namespace.
pub fn netns_inode() -> Result<u64, KernelError> {
    let path = Path::new("/proc/thread-self/ns/net");
    fs::metadata(path)
        .map(|m| m.ino())
        .map_err(io_err("reading", path))
}

/// What the kernel says about a pinned XDP link.
#[derive(Clone, Copy, Debug)]
pub(super) struct LinkState {
    pub(super) link_id: u32,
    pub(super) program_id: u32,
    /// 0 once the interface is gone (the link is then defunct).
    pub(super) ifindex: u32,
}

/// The `bpf(2)` system call with command `cmd` and attribute block `attr`; the kernel's
/// return value, or the errno as an `io::Error`.
///
/// # Safety
/// `attr` must be a valid `bpf_attr` prefix for `cmd`, and every pointer in it must point at
/// memory that is valid for what the command reads or writes.
pub(crate) unsafe fn bpf_syscall<A>(cmd: libc::c_long, attr: &A) -> io::Result<libc::c_long> {
    // SAFETY: the caller guarantees `attr` fits `cmd`; its size goes with it.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *const A, size_of::<A>() as u32) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// `BPF_OBJ_GET_INFO_BY_FD`: fills `info` with the kernel's info about the object behind `fd`
/// (`bpf_prog_info`, `bpf_map_info`, `bpf_link_info`, or a prefix of one).
///
/// # Safety
/// `T` must be (a prefix of) the kernel's info struct for the object's type, made of plain
/// integers; any pointer fields set in it must point at buffers the caller owns, with the
/// counts given beside them.
pub(crate) unsafe fn obj_info_into<T>(fd: BorrowedFd<'_>, info: &mut T) -> io::Result<()> {
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }

    let attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: size_of::<T>() as u32,
        info: info as *mut T as u64,
    };
    // SAFETY: `info` is a buffer of `info_len` bytes that we own; the caller vouches for `T`.
    unsafe { bpf_syscall(BPF_OBJ_GET_INFO_BY_FD, &attr) }?;
    Ok(())
}

/// The kernel's `bpf_prog_info` of the program behind `fd` (without map ids or instructions).
pub(crate) fn prog_info(fd: BorrowedFd<'_>) -> io::Result<aya_obj::generated::bpf_prog_info> {
    // SAFETY: a plain C struct; all-zero is valid, and leaves every pointer field null.
    let mut info: aya_obj::generated::bpf_prog_info = unsafe { std::mem::zeroed() };
    // SAFETY: `bpf_prog_info` is the kernel's struct for programs; no pointer fields set.
    unsafe { obj_info_into(fd, &mut info) }?;
    Ok(info)
}

/// Opens a pinned BPF object (BPF_OBJ_GET): a file descriptor for a pinned map, program or
/// link, as any process on the host can get it.
pub fn open_pinned(pin: &Path) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::{FromRawFd as _, OwnedFd};
    const BPF_OBJ_GET: libc::c_long = 7;

    #[repr(C)]
    struct ObjGetAttr {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }

    let path = CString::new(pin.as_os_str().as_encoded_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let attr = ObjGetAttr {
        pathname: path.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
    };
    // SAFETY: attr points at a NUL-terminated path that outlives the call.
    let fd = unsafe { bpf_syscall(BPF_OBJ_GET, &attr) }?;
    // SAFETY: the kernel just returned this fd to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Detaches a link from its hook now (BPF_LINK_DETACH), even if some other process still holds
/// a file descriptor to it: unpinning alone only detaches once the last reference is gone.
pub(super) fn force_detach_link(pin: &Path) -> io::Result<()> {
    const BPF_LINK_DETACH: libc::c_long = 34;

    #[repr(C)]
    struct LinkDetachAttr {
        link_fd: u32,
    }

    let fd = open_pinned(pin)?;
    let attr = LinkDetachAttr {
        link_fd: fd.as_raw_fd() as u32,
    };
    // SAFETY: attr is a valid bpf_attr prefix for BPF_LINK_DETACH.
    unsafe { bpf_syscall(BPF_LINK_DETACH, &attr) }?;
    Ok(())
}

/// Opens a pinned link and reads its info. aya 0.14's `LinkInfo` does not expose the XDP
/// ifindex, so this uses BPF_OBJ_GET and BPF_OBJ_GET_INFO_BY_FD directly.
pub(super) fn pinned_link_state(pin: &Path) -> io::Result<LinkState> {
    const BPF_LINK_TYPE_XDP: u32 = 6;

    let fd = open_pinned(pin)?;
    // SAFETY: a plain C struct; all-zero is valid.
    let mut info: aya_obj::generated::bpf_link_info = unsafe { std::mem::zeroed() };
    // SAFETY: `bpf_link_info` is the kernel's struct for links; no pointer fields set.
    unsafe { obj_info_into(std::os::fd::AsFd::as_fd(&fd), &mut info) }?;
    if info.type_ != BPF_LINK_TYPE_XDP {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("pinned link is of type {}, not XDP", info.type_),
        ));
    }
    Ok(LinkState {
        link_id: info.id,
        program_id: info.prog_id,
        // SAFETY: the link is XDP (checked above), so the xdp member is the live one.
        ifindex: unsafe { info.__bindgen_anon_1.xdp.ifindex },
    })
}

/// `BPF_MAP_UPDATE_ELEM` with raw key and value bytes (aya's typed maps need Pod types).
pub(super) fn map_update(fd: BorrowedFd<'_>, key: &[u8], value: &[u8]) -> io::Result<()> {
    #[repr(C)]
    struct MapElemAttr {
        map_fd: u32,
        _pad: u32,
        key: u64,
        value: u64,
        flags: u64,
    }
    const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
    const BPF_ANY: u64 = 0;
    let attr = MapElemAttr {
        map_fd: fd.as_raw_fd() as u32,
        _pad: 0,
        key: key.as_ptr() as u64,
        value: value.as_ptr() as u64,
        flags: BPF_ANY,
    };
    // SAFETY: attr points at valid key/value buffers of the map's sizes (checked at parse time
    // against the map definition the map was created from).
    unsafe { bpf_syscall(BPF_MAP_UPDATE_ELEM, &attr) }?;
    Ok(())
}

pub(super) fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into a zeroed struct we own.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    rc == 0 && st.f_type as i64 == BPF_FS_MAGIC
}

// Raw map commands for `crate::maps::KernelMap`: byte-level access to any map, with the caller
// responsible for the buffer sizes (the kernel takes them from the map, not from us).

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;

/// The `bpf_attr` prefix the element commands read (`map_fd`, `key`, `value`/`next_key`,
/// `flags`).
#[repr(C)]
struct MapElemRawAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// The parameters of a map to create with [`map_create`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct MapCreateParams {
    pub(crate) map_type: u32,
    pub(crate) key_size: u32,
    pub(crate) value_size: u32,
    pub(crate) max_entries: u32,
    pub(crate) map_flags: u32,
    /// NUL-padded; the kernel accepts `[A-Za-z0-9_.]`, at most 15 bytes.
    pub(crate) name: [u8; 16],
    /// Non-zero: create the map on this device for hardware offload (`bpf_attr.map_ifindex`).
    pub(crate) map_ifindex: u32,
}

/// `BPF_MAP_CREATE` without BTF: a new map's file descriptor.
pub(crate) fn map_create(p: &MapCreateParams) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::{FromRawFd as _, OwnedFd};

    // The prefix of `bpf_attr` up to `map_ifindex`; the kernel zero-fills the rest.
    #[repr(C)]
    struct MapCreateAttr {
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        map_flags: u32,
        inner_map_fd: u32,
        numa_node: u32,
        map_name: [u8; 16],
        map_ifindex: u32,
    }
    let attr = MapCreateAttr {
        map_type: p.map_type,
        key_size: p.key_size,
        value_size: p.value_size,
        max_entries: p.max_entries,
        map_flags: p.map_flags,
        inner_map_fd: 0,
        numa_node: 0,
        map_name: p.name,
        map_ifindex: p.map_ifindex,
    };
    // SAFETY: a plain attribute block without pointers.
    let fd = unsafe { bpf_syscall(BPF_MAP_CREATE, &attr) }?;
    // SAFETY: the kernel just returned this fd to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `BPF_MAP_LOOKUP_ELEM`: copies the value of `key` into `value`.
///
/// # Safety
/// `key` must hold at least the map's key size and `value` at least its userspace value size
/// (`value_size`, or `round_up(value_size, 8) × possible CPUs` for per-CPU maps): the kernel
/// reads and writes that many bytes whatever the slices' lengths.
pub(crate) unsafe fn map_lookup_elem(
    fd: BorrowedFd<'_>,
    key: &[u8],
    value: &mut [u8],
) -> io::Result<()> {
    let attr = MapElemRawAttr {
        map_fd: fd.as_raw_fd() as u32,
        _pad: 0,
        key: key.as_ptr() as u64,
        value: value.as_mut_ptr() as u64,
        flags: 0,
    };
    // SAFETY: the caller guarantees the buffer sizes.
    unsafe { bpf_syscall(BPF_MAP_LOOKUP_ELEM, &attr) }?;
    Ok(())
}

/// `BPF_MAP_UPDATE_ELEM` with raw `flags` (`BPF_ANY` 0, `BPF_NOEXIST` 1, `BPF_EXIST` 2, or
/// anything else to see what the kernel says).
///
/// # Safety
/// As [`map_lookup_elem`]: `key` and `value` must hold the map's key and userspace value sizes.
pub(crate) unsafe fn map_update_elem(
    fd: BorrowedFd<'_>,
    key: &[u8],
    value: &[u8],
    flags: u64,
) -> io::Result<()> {
    let attr = MapElemRawAttr {
        map_fd: fd.as_raw_fd() as u32,
        _pad: 0,
        key: key.as_ptr() as u64,
        value: value.as_ptr() as u64,
        flags,
    };
    // SAFETY: the caller guarantees the buffer sizes.
    unsafe { bpf_syscall(BPF_MAP_UPDATE_ELEM, &attr) }?;
    Ok(())
}

/// `BPF_MAP_DELETE_ELEM`.
///
/// # Safety
/// `key` must hold the map's key size.
pub(crate) unsafe fn map_delete_elem(fd: BorrowedFd<'_>, key: &[u8]) -> io::Result<()> {
    let attr = MapElemRawAttr {
        map_fd: fd.as_raw_fd() as u32,
        _pad: 0,
        key: key.as_ptr() as u64,
        value: 0,
        flags: 0,
    };
    // SAFETY: the caller guarantees the key size.
    unsafe { bpf_syscall(BPF_MAP_DELETE_ELEM, &attr) }?;
    Ok(())
}

/// `BPF_MAP_GET_NEXT_KEY`: writes the key after `key` (the first key for `None`) into `next`.
///
/// # Safety
/// `key` (if any) and `next` must hold the map's key size.
pub(crate) unsafe fn map_get_next_key(
    fd: BorrowedFd<'_>,
    key: Option<&[u8]>,
    next: &mut [u8],
) -> io::Result<()> {
    let attr = MapElemRawAttr {
        map_fd: fd.as_raw_fd() as u32,
        _pad: 0,
        key: key.map_or(0, |k| k.as_ptr() as u64),
        value: next.as_mut_ptr() as u64,
        flags: 0,
    };
    // SAFETY: the caller guarantees the buffer sizes; a zero key pointer means "first key".
    unsafe { bpf_syscall(BPF_MAP_GET_NEXT_KEY, &attr) }?;
    Ok(())
}

/// `BPF_OBJ_GET_INFO_BY_FD` on a map fd. The caller must know `fd` is a map: the kernel
/// answers with the info struct of whatever object the fd is.
pub(crate) fn map_info(fd: BorrowedFd<'_>) -> io::Result<aya_obj::generated::bpf_map_info> {
    // SAFETY: a plain C struct; all-zero is valid.
    let mut info: aya_obj::generated::bpf_map_info = unsafe { std::mem::zeroed() };
    // SAFETY: the caller knows `fd` is a map; `bpf_map_info` has no pointer fields.
    unsafe { obj_info_into(fd, &mut info) }?;
    Ok(info)
}

/// Freezes a map against writes from user space (BPF_MAP_FREEZE): with `BPF_F_RDONLY_PROG`
/// the kernel's verifier then treats its contents as constants, as aya does for `.rodata`.
pub(crate) fn map_freeze(fd: BorrowedFd<'_>) -> io::Result<()> {
    const BPF_MAP_FREEZE: libc::c_long = 22;

    #[repr(C)]
    struct FreezeAttr {
        map_fd: u32,
    }
    let attr = FreezeAttr {
        map_fd: fd.as_raw_fd() as u32,
    };
    // SAFETY: a plain attribute block without pointers.
    unsafe { bpf_syscall(BPF_MAP_FREEZE, &attr) }?;
    Ok(())
}

/// Pins a BPF object at `path` on a bpffs (BPF_OBJ_PIN).
pub(crate) fn obj_pin(fd: BorrowedFd<'_>, path: &Path) -> io::Result<()> {
    const BPF_OBJ_PIN: libc::c_long = 6;

    #[repr(C)]
    struct ObjPinAttr {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }

    let path = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let attr = ObjPinAttr {
        pathname: path.as_ptr() as u64,
        bpf_fd: fd.as_raw_fd() as u32,
        file_flags: 0,
    };
    // SAFETY: attr points at a NUL-terminated path that outlives the call.
    unsafe { bpf_syscall(BPF_OBJ_PIN, &attr) }?;
    Ok(())
}

/// What `BPF_OBJ_GET_INFO_BY_FD` says about a loaded program's runs and maps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ProgramRunInfo {
    /// Runs counted while BPF stats were enabled (`run_cnt`).
    pub(crate) run_count: u64,
    /// Nanoseconds spent in those runs (`run_time_ns`).
    pub(crate) run_time_ns: u64,
    /// The ids of the maps the program's instructions reference.
    pub(crate) map_ids: Vec<u32>,
}

/// Opens program `id` (BPF_PROG_GET_FD_BY_ID) and reads its run statistics and map ids.
pub(crate) fn program_run_info(id: u32) -> io::Result<ProgramRunInfo> {
    use std::os::fd::{AsFd as _, FromRawFd as _, OwnedFd};
    const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;

    #[repr(C)]
    struct GetFdByIdAttr {
        id: u32,
        next_id: u32,
        open_flags: u32,
    }

    let attr = GetFdByIdAttr {
        id,
        next_id: 0,
        open_flags: 0,
    };
    // SAFETY: attr is a valid bpf_attr prefix for BPF_PROG_GET_FD_BY_ID.
    let fd = unsafe { bpf_syscall(BPF_PROG_GET_FD_BY_ID, &attr) }?;
    // SAFETY: the kernel just returned this fd to us.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // The kernel writes at most `nr_map_ids` ids and reports how many there are: ask again
    // with a larger buffer if the first one was short.
    let mut map_ids = vec![0u32; 16];
    loop {
        // SAFETY: a plain C struct; all-zero is valid.
        let mut info: aya_obj::generated::bpf_prog_info = unsafe { std::mem::zeroed() };
        info.nr_map_ids = map_ids.len() as u32;
        info.map_ids = map_ids.as_mut_ptr() as u64;
        // SAFETY: `bpf_prog_info` is the kernel's struct for programs; `map_ids` points at
        // `nr_map_ids` u32s of ours.
        unsafe { obj_info_into(fd.as_fd(), &mut info) }?;
        let count = info.nr_map_ids as usize;
        if count <= map_ids.len() {
            map_ids.truncate(count);
            return Ok(ProgramRunInfo {
                run_count: info.run_cnt,
                run_time_ns: info.run_time_ns,
                map_ids,
            });
        }
        map_ids = vec![0u32; count];
    }
}

/// `XDP_FLAGS_SKB_MODE` / `XDP_FLAGS_DRV_MODE` from the UAPI's `if_link.h`.
pub(crate) const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
pub(crate) const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// The kernel's id of the program behind `fd`.
pub(crate) fn prog_id(fd: BorrowedFd<'_>) -> io::Result<u32> {
    Ok(prog_info(fd)?.id)
}
