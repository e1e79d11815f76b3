//! The kernel helpers a lambda may call, reimplemented with the kernel's semantics (argument
//! checks, return codes) over the VM's packet frame and userspace maps.
//!
//! Both engines use these: the interpreter calls [`call`] with a memory checker that knows
//! every region; the JIT's trampolines call it with the regions it can know (packet, maps).

use std::sync::Arc;

use super::{VmError, XdpMd};
use crate::maps::{MapAccess as _, VmMap};

// Helper numbers (`enum bpf_func_id` in the kernel's uapi/linux/bpf.h).
pub const MAP_LOOKUP_ELEM: u32 = 1;
pub const MAP_UPDATE_ELEM: u32 = 2;
pub const MAP_DELETE_ELEM: u32 = 3;
pub const KTIME_GET_NS: u32 = 5;
pub const TRACE_PRINTK: u32 = 6;
pub const GET_PRANDOM_U32: u32 = 7;
pub const GET_SMP_PROCESSOR_ID: u32 = 8;
pub const CSUM_DIFF: u32 = 28;
pub const XDP_ADJUST_HEAD: u32 = 44;
pub const XDP_ADJUST_META: u32 = 54;
pub const XDP_ADJUST_TAIL: u32 = 65;
pub const KTIME_GET_BOOT_NS: u32 = 125;
pub const RINGBUF_OUTPUT: u32 = 130;
pub const XDP_LOAD_BYTES: u32 = 189;
pub const XDP_STORE_BYTES: u32 = 190;

/// Every helper the VM implements, with its kernel name.
pub const SUPPORTED: &[(u32, &str)] = &[
    (MAP_LOOKUP_ELEM, "bpf_map_lookup_elem"),
    (MAP_UPDATE_ELEM, "bpf_map_update_elem"),
    (MAP_DELETE_ELEM, "bpf_map_delete_elem"),
    (KTIME_GET_NS, "bpf_ktime_get_ns"),
    (TRACE_PRINTK, "bpf_trace_printk"),
    (GET_PRANDOM_U32, "bpf_get_prandom_u32"),
    (GET_SMP_PROCESSOR_ID, "bpf_get_smp_processor_id"),
    (CSUM_DIFF, "bpf_csum_diff"),
    (XDP_ADJUST_HEAD, "bpf_xdp_adjust_head"),
    (XDP_ADJUST_META, "bpf_xdp_adjust_meta"),
    (XDP_ADJUST_TAIL, "bpf_xdp_adjust_tail"),
    (KTIME_GET_BOOT_NS, "bpf_ktime_get_boot_ns"),
    (RINGBUF_OUTPUT, "bpf_ringbuf_output"),
    (XDP_LOAD_BYTES, "bpf_xdp_load_bytes"),
    (XDP_STORE_BYTES, "bpf_xdp_store_bytes"),
];

const EINVAL: i64 = 22;
const EAGAIN: i64 = 11;
/// `BPF_RB_NO_WAKEUP | BPF_RB_FORCE_WAKEUP`: the only flags `bpf_ringbuf_output` accepts.
const RINGBUF_FLAGS: u64 = 3;
/// The header the kernel puts before every ring buffer record.
const RINGBUF_HEADER: u64 = 8;
const EFAULT: i64 = 14;
const ETH_HLEN: u64 = 14;
/// `bpf_csum_diff` works on a per-CPU scratch buffer of this many bytes.
const CSUM_DIFF_MAX: u64 = 512;
/// `xdp_metalen_invalid`: metadata is a multiple of 4 bytes, at most 32.
const META_MAX: u64 = 32;

/// A map as the program sees it: the handle an `lddw` loads, and the map.
pub struct MapSlot {
    pub handle: u64,
    pub map: Arc<VmMap>,
}

/// One helper call: its number, `r1`–`r5`, and where it was made.
pub struct HelperCall {
    pub id: u32,
    pub args: [u64; 5],
    pub insn: usize,
}

/// What helpers may touch during one run.
pub struct RunState<'a> {
    pub ctx: &'a mut XdpMd,
    /// Address of the context the program was given (helpers check `r1` against it).
    pub ctx_addr: u64,
    /// `data_hard_start` and the highest `data_end` (`xdp_data_hard_end`).
    pub frame_start: u64,
    pub frame_hard_end: u64,
    /// The highest `data_end` of the run (the frame is dirty up to here).
    pub high_water: u64,
    pub maps: &'a [MapSlot],
    /// Which per-CPU copy this run uses: the worker's index.
    pub cpu: usize,
    pub rng: &'a mut u64,
    /// `bpf_trace_printk` output of this run.
    pub log: &'a mut Vec<String>,
}

impl RunState<'_> {
    /// The bytes the program may access directly: metadata and packet.
    pub fn packet_region(&self) -> super::interp::Region {
        super::interp::Region {
            start: u64::from(self.ctx.data_meta),
            end: u64::from(self.ctx.data_end),
            writable: true,
        }
    }

    fn map(&self, handle: u64, call: &HelperCall) -> Result<&VmMap, VmError> {
        self.maps
            .iter()
            .find(|slot| slot.handle == handle)
            .map(|slot| slot.map.as_ref())
            .ok_or(VmError::BadHelperArgument {
                insn: call.insn,
                helper: call.id,
                what: "r1 is not a map of this program",
            })
    }
}

/// Checks that `[addr, addr + len)` may be read (`write = false`) or written.
pub type MemoryCheck<'c> = dyn Fn(&RunState<'_>, u64, u64, bool) -> bool + 'c;

/// Runs helper `call.id`. A fault the kernel's verifier would have prevented (a bad pointer,
/// an unknown helper) is an error; a runtime failure the kernel reports to the program (bad
/// offsets, a full map) is a negative errno in `r0`, as in the kernel.
pub fn call(
    state: &mut RunState<'_>,
    call: &HelperCall,
    readable: &MemoryCheck<'_>,
) -> Result<u64, VmError> {
    let [a1, a2, a3, a4, a5] = call.args;
    let pointer = |state: &RunState<'_>, addr: u64, len: u64, write: bool, what| {
        if len == 0 || readable(state, addr, len, write) {
            Ok(())
        } else {
            Err(VmError::BadHelperArgument {
                insn: call.insn,
                helper: call.id,
                what,
            })
        }
    };
    let errno = |e: i64| (-e) as u64;
    match call.id {
        MAP_LOOKUP_ELEM => {
            let map = state.map(a1, call)?;
            let key_size = u64::from(map.spec().key_size);
            pointer(state, a2, key_size, false, "key pointer")?;
            // SAFETY: checked readable for key_size bytes.
            let key = unsafe { std::slice::from_raw_parts(a2 as *const u8, key_size as usize) };
            Ok(map
                .program_lookup(key, state.cpu)
                .map_or(0, |value| value.as_ptr() as u64))
        }
        MAP_UPDATE_ELEM => {
            let map = state.map(a1, call)?;
            let (key_size, value_size) = (
                u64::from(map.spec().key_size),
                u64::from(map.spec().value_size),
            );
            pointer(state, a2, key_size, false, "key pointer")?;
            pointer(state, a3, value_size, false, "value pointer")?;
            // SAFETY: both checked readable for their sizes.
            let (key, value) = unsafe {
                (
                    std::slice::from_raw_parts(a2 as *const u8, key_size as usize),
                    std::slice::from_raw_parts(a3 as *const u8, value_size as usize),
                )
            };
            Ok(match map.program_update(key, value, a4, state.cpu) {
                Ok(()) => 0,
                Err(e) => errno(i64::from(e.errno())),
            })
        }
        MAP_DELETE_ELEM => {
            let map = state.map(a1, call)?;
            let key_size = u64::from(map.spec().key_size);
            pointer(state, a2, key_size, false, "key pointer")?;
            // SAFETY: checked readable.
            let key = unsafe { std::slice::from_raw_parts(a2 as *const u8, key_size as usize) };
            Ok(match map.program_delete(key) {
                Ok(()) => 0,
                Err(e) => errno(i64::from(e.errno())),
            })
        }
        KTIME_GET_NS => Ok(clock_ns(libc::CLOCK_MONOTONIC)),
        KTIME_GET_BOOT_NS => Ok(clock_ns(libc::CLOCK_BOOTTIME)),
        GET_PRANDOM_U32 => Ok(u64::from(next_random(state.rng))),
        GET_SMP_PROCESSOR_ID => Ok(state.cpu as u64),
        TRACE_PRINTK => {
            pointer(state, a1, a2, false, "format string")?;
            // SAFETY: checked readable for a2 bytes.
            let format = unsafe { std::slice::from_raw_parts(a1 as *const u8, a2 as usize) };
            let line = trace_printk(format, [a3, a4, a5]);
            let len = line.len() as u64;
            state.log.push(line);
            Ok(len)
        }
        RINGBUF_OUTPUT => {
            let map = state.map(a1, call)?;
            if !map.spec().map_type.is_ring_buffer() {
                return Err(VmError::BadHelperArgument {
                    insn: call.insn,
                    helper: call.id,
                    what: "r1 is not a ring buffer",
                });
            }
            if a4 & !RINGBUF_FLAGS != 0 {
                return Ok(errno(EINVAL));
            }
            // The kernel cannot reserve a record larger than the ring's data area.
            // Checked before the pointer so that an absurd size is a failed call, not a fault.
            if a3.saturating_add(RINGBUF_HEADER) > u64::from(map.spec().max_entries) {
                return Ok(errno(EAGAIN));
            }
            pointer(state, a2, a3, false, "data pointer")?;
            // A full ring drops the record and tells the program, as the kernel's does; the
            // records wait in the map for a reader (`lambdactl logs --vm`, `test-run`).
            match map.ringbuf_output(raw_bytes(a2, a3)) {
                Ok(()) => Ok(0),
                Err(_) => Ok(errno(EAGAIN)),
            }
        }
        CSUM_DIFF => {
            if (a2 | a4) & 3 != 0 || a2 + a4 > CSUM_DIFF_MAX {
                return Ok(errno(EINVAL));
            }
            pointer(state, a1, a2, false, "`from` buffer")?;
            pointer(state, a3, a4, false, "`to` buffer")?;
            // `from` may be NULL with size 0 (pushing data), as the kernel allows; a slice may
            // not be built from NULL even when empty.
            let (from, to) = (raw_bytes(a1, a2), raw_bytes(a3, a4));
            Ok(u64::from(csum_diff(from, to, a5 as u32)))
        }
        XDP_ADJUST_HEAD | XDP_ADJUST_META | XDP_ADJUST_TAIL | XDP_LOAD_BYTES | XDP_STORE_BYTES => {
            if a1 != state.ctx_addr {
                return Err(VmError::BadHelperArgument {
                    insn: call.insn,
                    helper: call.id,
                    what: "r1 is not the XDP context",
                });
            }
            match call.id {
                XDP_ADJUST_HEAD => Ok(adjust_head(state, a2 as i32 as i64)),
                XDP_ADJUST_META => Ok(adjust_meta(state, a2 as i32 as i64)),
                XDP_ADJUST_TAIL => Ok(adjust_tail(state, a2 as i32 as i64)),
                _ => {
                    let store = call.id == XDP_STORE_BYTES;
                    let (offset, len) = (a2 as u32 as u64, a4 as u32 as u64);
                    // `bpf_xdp_pointer`: offsets past 64 KiB fault, ranges past the end are
                    // invalid.
                    if offset > 0xffff || len > 0xffff {
                        return Ok(errno(EFAULT));
                    }
                    let size = u64::from(state.ctx.data_end - state.ctx.data);
                    if offset + len > size {
                        return Ok(errno(EINVAL));
                    }
                    pointer(state, a3, len, !store, "buffer")?;
                    let packet = u64::from(state.ctx.data) + offset;
                    if len == 0 {
                        return Ok(0);
                    }
                    // SAFETY: the packet range is inside the frame (checked against
                    // data_end), the buffer was checked; they may overlap, so copy as memmove.
                    unsafe {
                        if store {
                            std::ptr::copy(a3 as *const u8, packet as *mut u8, len as usize);
                        } else {
                            std::ptr::copy(packet as *const u8, a3 as *mut u8, len as usize);
                        }
                    }
                    Ok(0)
                }
            }
        }
        id => Err(VmError::UnknownHelper {
            insn: call.insn,
            helper: id,
        }),
    }
}

/// The `len` bytes at `addr`, which the caller checked readable; empty (and never built from
/// the address) when `len` is 0.
fn raw_bytes<'m>(addr: u64, len: u64) -> &'m [u8] {
    if len == 0 {
        return &[];
    }
    // SAFETY: checked readable for `len` bytes by the caller, and not NULL since len > 0 ranges
    // lie inside a region.
    unsafe { std::slice::from_raw_parts(addr as *const u8, len as usize) }
}

/// `bpf_xdp_adjust_head`: move `data` by `offset`, keeping at least an Ethernet header and the
/// `xdp_frame` the kernel keeps at the start of the headroom.
fn adjust_head(state: &mut RunState<'_>, offset: i64) -> u64 {
    let ctx = &mut *state.ctx;
    let metalen = u64::from(ctx.data - ctx.data_meta);
    let data_start = state.frame_start + super::memory::XDP_FRAME_HEADER as u64 + metalen;
    let data = i64::from(ctx.data) + offset;
    if data < data_start as i64 || data > i64::from(ctx.data_end) - ETH_HLEN as i64 {
        return (-EINVAL) as u64;
    }
    if metalen > 0 {
        let new_meta = (i64::from(ctx.data_meta) + offset) as u64;
        // SAFETY: both ranges lie inside the frame (data moved within bounds checked above).
        unsafe {
            std::ptr::copy(
                u64::from(ctx.data_meta) as *const u8,
                new_meta as *mut u8,
                metalen as usize,
            );
        }
    }
    ctx.data_meta = (i64::from(ctx.data_meta) + offset) as u32;
    ctx.data = data as u32;
    0
}

/// `bpf_xdp_adjust_meta`: grow or shrink the metadata in front of `data`.
fn adjust_meta(state: &mut RunState<'_>, offset: i64) -> u64 {
    let ctx = &mut *state.ctx;
    let frame_end = (state.frame_start + super::memory::XDP_FRAME_HEADER as u64) as i64;
    let meta = i64::from(ctx.data_meta) + offset;
    if meta < frame_end || meta > i64::from(ctx.data) {
        return (-EINVAL) as u64;
    }
    let metalen = (i64::from(ctx.data) - meta) as u64;
    if !metalen.is_multiple_of(4) || metalen > META_MAX {
        return (-13i64) as u64; // -EACCES
    }
    ctx.data_meta = meta as u32;
    0
}

/// `bpf_xdp_adjust_tail`: move `data_end` by `offset`, zeroing what it grows into.
fn adjust_tail(state: &mut RunState<'_>, offset: i64) -> u64 {
    let ctx = &mut *state.ctx;
    let data_end = i64::from(ctx.data_end) + offset;
    if data_end > state.frame_hard_end as i64 || data_end < i64::from(ctx.data) + ETH_HLEN as i64 {
        return (-EINVAL) as u64;
    }
    if offset > 0 {
        // SAFETY: [data_end, data_end + offset) is inside the frame (checked above).
        unsafe {
            std::ptr::write_bytes(u64::from(ctx.data_end) as *mut u8, 0, offset as usize);
        }
    }
    ctx.data_end = data_end as u32;
    state.high_water = state.high_water.max(data_end as u64);
    0
}

/// `bpf_csum_diff`: the 32-bit ones' complement sum of `seed`, the complement of every word of
/// `from` and every word of `to` (x86's `csum_partial` over the kernel's scratch buffer).
pub fn csum_diff(from: &[u8], to: &[u8], seed: u32) -> u32 {
    let mut sum = u64::from(seed);
    for word in from.chunks_exact(4) {
        sum += u64::from(!u32::from_le_bytes([word[0], word[1], word[2], word[3]]));
    }
    for word in to.chunks_exact(4) {
        sum += u64::from(u32::from_le_bytes([word[0], word[1], word[2], word[3]]));
    }
    while sum >> 32 != 0 {
        sum = (sum & 0xffff_ffff) + (sum >> 32);
    }
    sum as u32
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a valid out pointer.
    unsafe {
        libc::clock_gettime(clock, &mut ts);
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// xorshift64*: `bpf_get_prandom_u32` needs no cryptographic quality, only speed and a
/// per-worker state.
fn next_random(state: &mut u64) -> u32 {
    let mut x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32
}

/// A ring buffer record as one line of text, for display (`test-run` prints what a run
/// logged): an SDK log record (`lambda_ebpf::log`) of the map `map` shows as `log: <text>`;
/// any other record as its map, size and bytes in hex.
pub fn ringbuf_line(map: &str, record: &[u8]) -> String {
    if map == lambda_ebpf::log::MAP_NAME {
        if let Some((_, text)) = lambda_ebpf::log::LogRecord::decode(record) {
            return format!("log: {}", String::from_utf8_lossy(text));
        }
    }
    let hex: String = record.iter().map(|b| format!("{b:02x}")).collect();
    format!("ringbuf {map}: {} bytes {hex}", record.len())
}

/// Formats a `bpf_trace_printk` line: `%d %i %u %x %lld %llu %llx %p %s`-style conversions of
/// up to three arguments. `%s` prints the address (the VM does not chase string pointers).
fn trace_printk(format: &[u8], args: [u64; 3]) -> String {
    let text = String::from_utf8_lossy(format.split(|&b| b == 0).next().unwrap_or(&[]));
    let mut out = String::new();
    let mut args = args.into_iter();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut long = 0;
        while chars.peek() == Some(&'l') {
            chars.next();
            long += 1;
        }
        let Some(conv) = chars.next() else { break };
        let value = if conv == '%' {
            out.push('%');
            continue;
        } else {
            args.next().unwrap_or(0)
        };
        match conv {
            'd' | 'i' if long == 0 => out.push_str(&(value as i32).to_string()),
            'd' | 'i' => out.push_str(&(value as i64).to_string()),
            'u' if long == 0 => out.push_str(&(value as u32).to_string()),
            'x' if long == 0 => out.push_str(&format!("{:x}", value as u32)),
            'x' => out.push_str(&format!("{value:x}")),
            'p' | 's' => out.push_str(&format!("{value:#x}")),
            _ => out.push_str(&value.to_string()),
        }
    }
    out.trim_end_matches('\n').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csum_diff_of_nothing_is_the_seed_and_sums_fold() {
        assert_eq!(csum_diff(&[], &[], 0x1234), 0x1234);
        assert_eq!(csum_diff(&[], &[0xff, 0xff, 0xff, 0xff], 1), 1);
        let data = [1u8, 2, 3, 4];
        // Adding and removing the same words cancels out (ones' complement zero).
        assert_eq!(csum_diff(&data, &data, 0) % 0xffff_ffff, 0);
    }

    #[test]
    fn ringbuf_records_become_log_lines() {
        let record = lambda_ebpf::log::LogRecord::new(5, b"hi there");
        assert_eq!(ringbuf_line("LNIC_LOG", record.as_bytes()), "log: hi there");
        assert_eq!(
            ringbuf_line("OTHER", &[1, 0xab]),
            "ringbuf OTHER: 2 bytes 01ab"
        );
        // A record of the wrong size in the SDK's map is shown raw, not misread.
        assert_eq!(
            ringbuf_line("LNIC_LOG", &[7]),
            "ringbuf LNIC_LOG: 1 bytes 07"
        );
    }

    #[test]
    fn trace_printk_formats_its_arguments() {
        assert_eq!(
            trace_printk(b"n=%d x=%x %llu%%\n\0junk", [u64::MAX, 255, 7]),
            "n=-1 x=ff 7%"
        );
    }

    #[test]
    fn random_numbers_change() {
        let mut state = 0x1234_5678;
        let a = next_random(&mut state);
        let b = next_random(&mut state);
        assert_ne!(a, b);
    }
}
