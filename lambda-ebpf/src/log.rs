//! Logging from a lambda: fixed-size records in the ring buffer map [`MAP_NAME`], which
//! `lambdactl logs` reads (from the pinned map, or with `--vm` from the VM's copy of it through
//! the `lambdactl run` control socket). A lambda that logs says `lambda_ebpf::declare_log!();` once and then calls
//! `log_line(b"text")`.
//!
//! Each record is one [`LogRecord`]: the `bpf_ktime_get_ns` time of the call, the text's
//! length and up to [`MAX_TEXT`] bytes of text. The size is fixed so that the copy into the
//! ring buffer is one constant-size `bpf_ringbuf_output` call, which every verifier can bound;
//! the text is a byte array whose length is known at compile time for the same reason
//! (a variable-length copy would need a loop or a `memcpy` the BPF target does not have).
//!
//! The layout is defined here once and decoded by userspace with [`LogRecord::decode`].

/// The name of the SDK's log map in every object whose lambda logs.
pub const MAP_NAME: &str = "LNIC_LOG";
/// The most text one record carries; longer text is cut.
pub const MAX_TEXT: usize = 128;
/// The ring buffer's size in bytes: 64 KiB, a power-of-two number of pages as the kernel
/// requires. At [`RECORD_SIZE`] + 8 bytes of ring buffer header per record, it holds 431
/// records that nobody has read; further records are dropped (`lambdactl logs` says so only
/// by their absence: the kernel does not count drops).
pub const RING_BYTES: u32 = 64 * 1024;

/// One log record as it lies in the ring buffer (native endian, `repr(C)`, no implicit
/// padding).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogRecord {
    /// `bpf_ktime_get_ns()` when the line was logged: nanoseconds of CLOCK_MONOTONIC.
    pub ktime_ns: u64,
    /// How many bytes of `text` are used (at most [`MAX_TEXT`]).
    pub len: u16,
    /// Explicit padding, always zero, so the text starts 8-byte aligned.
    pub pad: [u8; 6],
    /// The text; bytes past `len` are zero.
    pub text: [u8; MAX_TEXT],
}

/// The size of one [`LogRecord`] in bytes.
pub const RECORD_SIZE: usize = core::mem::size_of::<LogRecord>();

const _: () = assert!(RECORD_SIZE == 8 + 2 + 6 + MAX_TEXT);

impl LogRecord {
    /// A record of `text` (cut to [`MAX_TEXT`] bytes) logged at `ktime_ns`.
    #[inline(always)]
    pub fn new<const N: usize>(ktime_ns: u64, text: &[u8; N]) -> LogRecord {
        let mut record = LogRecord {
            ktime_ns,
            len: 0,
            pad: [0; 6],
            text: [0; MAX_TEXT],
        };
        // N is a constant, so this is a constant-size copy the BPF backend expands inline.
        let n = if N < MAX_TEXT { N } else { MAX_TEXT };
        record.text[..n].copy_from_slice(&text[..n]);
        record.len = n as u16;
        record
    }

    /// Decodes a record read from the ring buffer: its time and text. `None` when `bytes` is
    /// not a record (wrong size, or a length past the text).
    pub fn decode(bytes: &[u8]) -> Option<(u64, &[u8])> {
        if bytes.len() != RECORD_SIZE {
            return None;
        }
        let ktime_ns = u64::from_ne_bytes(bytes.get(0..8)?.try_into().ok()?);
        let len = u16::from_ne_bytes(bytes.get(8..10)?.try_into().ok()?) as usize;
        let text = bytes.get(16..16 + len.min(MAX_TEXT + 1))?;
        // A lambda logs fixed-size buffers (the verifier wants constant sizes), zero-padded
        // when what they hold is shorter: the line ends at its last non-zero byte.
        let end = text.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        (len <= MAX_TEXT).then_some((ktime_ns, &text[..end]))
    }

    /// The record's bytes, as `bpf_ringbuf_output` copies them.
    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: `LogRecord` is `repr(C)` of integers and byte arrays with no implicit
        // padding (checked by the size assertion above), so every byte is initialised.
        unsafe { core::slice::from_raw_parts((self as *const LogRecord).cast(), RECORD_SIZE) }
    }
}

/// Writes one record of `text` (at most [`MAX_TEXT`] bytes are kept) into `ring`, the map
/// [`declare_log!`](crate::declare_log) declares. A full ring buffer drops the line: logging
/// never fails the request.
#[cfg(target_arch = "bpf")]
#[inline(always)]
pub fn line<const N: usize>(ring: &aya_ebpf::maps::RingBuf, text: &[u8; N]) {
    // SAFETY: a helper without arguments.
    let now = unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() };
    let record = LogRecord::new(now, text);
    // Flags 0: the kernel decides whether to wake readers.
    let _ = ring.output::<LogRecord>(&record, 0);
}

/// The per-CPU map (one [`LogRecord`]) that [`line_with`] builds its record in.
pub const SCRATCH_MAP_NAME: &str = "LNIC_LOG_SCRATCH";

/// [`line`] of `prefix` then `text` (e.g. a fixed message and a name from the request; zeros
/// padding `text` are not printed). The record is built in this CPU's `scratch` value, not on
/// the 512-byte stack, which a lambda's own buffers may already fill.
#[cfg(target_arch = "bpf")]
#[inline(always)]
pub fn line_with<const P: usize, const N: usize>(
    ring: &aya_ebpf::maps::RingBuf,
    scratch: &aya_ebpf::maps::PerCpuArray<LogRecord>,
    prefix: &[u8; P],
    text: &[u8; N],
) {
    let Some(record) = scratch.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's own map value, alive while the program runs; an XDP program is not
    // preempted by another run on the same CPU.
    let record = unsafe { &mut *record };
    // SAFETY: a helper without arguments.
    record.ktime_ns = unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() };
    record.pad = [0; 6];
    record.text = [0; MAX_TEXT];
    let at = if P < MAX_TEXT { P } else { MAX_TEXT };
    record.text[..at].copy_from_slice(&prefix[..at]);
    let n = if N < MAX_TEXT - at { N } else { MAX_TEXT - at };
    record.text[at..at + n].copy_from_slice(&text[..n]);
    record.len = (at + n) as u16;
    let _ = ring.output::<LogRecord>(record, 0);
}

/// Declares the log ring buffer [`MAP_NAME`] in a lambda and a `log_line(b"text")` function
/// that writes to it. A macro rather than a map in the SDK: every map the SDK declares is in
/// every object built with it (the loader creates and pins them all), and only lambdas that
/// log should carry a 64 KiB ring buffer.
#[macro_export]
macro_rules! declare_log {
    () => {
        #[$crate::aya_ebpf::macros::map]
        static LNIC_LOG: $crate::aya_ebpf::maps::RingBuf =
            $crate::aya_ebpf::maps::RingBuf::with_byte_size($crate::log::RING_BYTES, 0);

        #[$crate::aya_ebpf::macros::map]
        static LNIC_LOG_SCRATCH: $crate::aya_ebpf::maps::PerCpuArray<$crate::log::LogRecord> =
            $crate::aya_ebpf::maps::PerCpuArray::with_max_entries(1, 0);

        /// Logs `text` through the SDK (`lambdactl logs` prints it).
        #[inline(always)]
        #[allow(dead_code)]
        fn log_line<const N: usize>(text: &[u8; N]) {
            $crate::log::line(&LNIC_LOG, text)
        }

        /// Logs `prefix` then `text`, built off the stack (zero padding of `text` is not
        /// printed).
        #[inline(always)]
        #[allow(dead_code)]
        fn log_line_with<const P: usize, const N: usize>(prefix: &[u8; P], text: &[u8; N]) {
            $crate::log::line_with(&LNIC_LOG, &LNIC_LOG_SCRATCH, prefix, text)
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_cut_long_text() {
        let r = LogRecord::new(42, b"hello");
        assert_eq!(RECORD_SIZE, 144);
        assert_eq!(LogRecord::decode(r.as_bytes()), Some((42, &b"hello"[..])));
        let long = LogRecord::new(7, &[b'x'; 200]);
        let (t, text) = LogRecord::decode(long.as_bytes()).unwrap();
        assert_eq!((t, text.len()), (7, MAX_TEXT));
        let padded = LogRecord::new(9, b"not found: abc\0\0\0");
        assert_eq!(
            LogRecord::decode(padded.as_bytes()),
            Some((9, &b"not found: abc"[..]))
        );
    }

    #[test]
    fn malformed_records_are_refused() {
        assert_eq!(LogRecord::decode(&[0; 10]), None);
        let mut bytes = [0u8; RECORD_SIZE];
        bytes[8..10].copy_from_slice(&(MAX_TEXT as u16 + 1).to_ne_bytes());
        assert_eq!(LogRecord::decode(&bytes), None);
    }
}
