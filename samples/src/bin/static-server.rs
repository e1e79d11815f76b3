//! `static-server`: the paper's "simple server" lambda.
//!
//! The request body names an object (`index.html`); the lambda answers with that object's
//! content from the `OBJECTS` map, or `NOT_FOUND`. Contents change at runtime by writing the
//! pinned map; the object ships a default `index.html` that the loader seeds on attach.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]

#[cfg(all(target_arch = "bpf", not(feature = "nic")))]
mod lambda {
    use aya_ebpf::{macros::map, macros::xdp, maps::HashMap, programs::XdpContext};
    use lambda_ebpf::xdp::{XdpFrame, serve};
    use lambda_ebpf::{MAX_BODY, Request, Status, Verdict, padded, seed};
    // Shared with the native baseline (`lambdactl baseline static-server`).
    use workloads::static_content::{INDEX_HTML, INDEX_NAME, NAME_MAX};

    /// Most objects the map holds.
    const OBJECTS_MAX: u32 = 256;

    /// Map key: the object name, zero-padded.
    #[repr(C)]
    pub struct ObjectName([u8; NAME_MAX]);

    /// Map value: the content and its length.
    #[repr(C)]
    pub struct Object {
        len: u32,
        data: [u8; MAX_BODY],
    }

    #[map]
    static OBJECTS: HashMap<ObjectName, Object> = HashMap::with_max_entries(OBJECTS_MAX, 0);

    // Misses are logged (`lambdactl logs static-server`): a name nobody serves is worth a
    // line; hits, the path the benchmarks time, log nothing.
    lambda_ebpf::declare_log!();

    seed!(OBJECTS, INDEX_SEED: ObjectName => Object = (
        ObjectName(padded(INDEX_NAME)),
        Object { len: INDEX_HTML.len() as u32, data: padded(INDEX_HTML) }
    ));

    #[xdp]
    pub fn static_server(ctx: XdpContext) -> u32 {
        serve(&ctx, handle)
    }

    #[inline(always)]
    fn handle(frame: &mut XdpFrame<'_>, request: &Request) -> Verdict {
        // Two replies: the content lies in the map and the errors have no body, and a body
        // pointer that is one or the other after the two meet is one no verifier can follow.
        // The empty reply's copy of the rewrite is the cheap one (no body store, constant
        // lengths).
        match lookup(frame, request) {
            Ok(content) => request.reply(frame, Status::Ok, content),
            Err(status) => request.reply(frame, status, &[]),
        }
    }

    #[inline(always)]
    fn lookup(frame: &XdpFrame<'_>, request: &Request) -> Result<&'static [u8], Status> {
        let name_len = request.body_len();
        if name_len == 0 || name_len > NAME_MAX {
            return Err(Status::BadRequest);
        }
        let mut name = ObjectName([0; NAME_MAX]);
        match request.read_body(frame, 0, &mut name.0[..name_len]) {
            Ok(n) if n == name_len => {}
            _ => return Err(Status::Internal),
        }
        // SAFETY: map values live as long as the program runs; this invocation only reads it.
        let Some(object) = (unsafe { OBJECTS.get(&name) }) else {
            log_line_with(b"not found: ", &name.0);
            return Err(Status::NotFound);
        };
        object
            .data
            .get(..object.len as usize)
            .ok_or(Status::Internal)
    }
}

/// The NIC build (`static-server-nic.o`, feature `nic`): the same answers from the NFP's
/// 64-byte map elements. An object is a run of 56-byte chunks in `OBJECTS`, keyed by a hash of
/// its name and the chunk's number (`workloads::static_content::nic` gives the layout and
/// builds the records); the reply is sized first and filled chunk by chunk in the packet.
#[cfg(all(target_arch = "bpf", feature = "nic"))]
mod lambda {
    use aya_ebpf::{macros::map, macros::xdp, maps::HashMap, programs::XdpContext};
    use lambda_ebpf::frame::{Frame as _, read_at};
    use lambda_ebpf::xdp::{XdpFrame, serve};
    use lambda_ebpf::{Request, Status, Verdict, padded, seed};
    use workloads::static_content::nic::{
        CHUNK, Chunk, ChunkKey, GENERATION_AT, HEAD_CHUNKS, LEN_AT, MAX_CONTENT, content_chunk,
        head_chunk, name_hash,
    };
    use workloads::static_content::{INDEX_HTML, INDEX_NAME, NAME_MAX};

    /// Most chunks the map holds: 256 objects of index.html's size (2 head + 3 content).
    const CHUNKS_MAX: u32 = 256 * 5;

    #[map]
    static OBJECTS: HashMap<ChunkKey, Chunk> = HashMap::with_max_entries(CHUNKS_MAX, 0);

    lambda_ebpf::declare_log!();

    const INDEX_KEY: [u8; NAME_MAX] = padded(INDEX_NAME);
    const INDEX_HASH: u32 = name_hash(&INDEX_KEY);
    const INDEX_LEN: u32 = INDEX_HTML.len() as u32;

    /// Key of chunk `chunk` of the object whose name hashes to `hash`.
    const fn key(hash: u32, chunk: u16, generation: u16) -> ChunkKey {
        ChunkKey {
            hash,
            chunk,
            generation,
        }
    }

    // index.html, generation 0: its two head chunks and its content chunks (126 bytes: 3).
    seed!(OBJECTS, INDEX_HEAD0: ChunkKey => Chunk = (
        key(INDEX_HASH, 0, 0), head_chunk(&INDEX_KEY, INDEX_LEN, 0, 0)
    ));
    seed!(OBJECTS, INDEX_HEAD1: ChunkKey => Chunk = (
        key(INDEX_HASH, 1, 0), head_chunk(&INDEX_KEY, INDEX_LEN, 0, 1)
    ));
    seed!(OBJECTS, INDEX_CONTENT0: ChunkKey => Chunk = (
        key(INDEX_HASH, HEAD_CHUNKS, 0), content_chunk(INDEX_HTML, 0)
    ));
    seed!(OBJECTS, INDEX_CONTENT1: ChunkKey => Chunk = (
        key(INDEX_HASH, HEAD_CHUNKS + 1, 0), content_chunk(INDEX_HTML, 1)
    ));
    seed!(OBJECTS, INDEX_CONTENT2: ChunkKey => Chunk = (
        key(INDEX_HASH, HEAD_CHUNKS + 2, 0), content_chunk(INDEX_HTML, 2)
    ));
    const _: () = assert!(INDEX_HTML.len().div_ceil(CHUNK) == 3, "one seed per chunk");

    #[xdp]
    pub fn static_server(ctx: XdpContext) -> u32 {
        serve(&ctx, handle)
    }

    #[inline(always)]
    fn handle(frame: &mut XdpFrame<'_>, request: &Request) -> Verdict {
        // One reply site (each is a full inlined copy of the rewrite and checksum code, too
        // much for one NFP core twice): an error is a reply with no chunks to fill.
        let (status, hash, len, generation) = match lookup(frame, request) {
            Ok((hash, len, generation)) => (Status::Ok, hash, len, generation),
            Err(status) => (status, 0, 0, 0),
        };
        request.reply_filled(frame, status, len, |frame, body| {
            fill(frame, body, hash, len, generation)
        })
    }

    /// The object the request names: its name hash, content length and generation.
    #[inline(always)]
    fn lookup(frame: &XdpFrame<'_>, request: &Request) -> Result<(u32, usize, u16), Status> {
        let name_len = request.body_len();
        if name_len == 0 || name_len > NAME_MAX {
            return Err(Status::BadRequest);
        }
        // Zeroed as words (a byte array would be cleared by a byte loop).
        let mut words = [0u64; NAME_MAX / 8];
        // 8 bytes before the name (the λ header's), as a packet pointer at a non-negative
        // offset (computed as `body - 8`, it would be one at offset -8, which the kernel's
        // verifier does not let a program read through).
        let before = frame.data() + opaque(request.body_offset() - 8);
        // SAFETY: `before..data_end` is the packet; `words` is NAME_MAX bytes.
        if !unsafe { read_name(before, frame.data_end(), name_len, &mut words) } {
            return Err(Status::Internal);
        }
        // SAFETY: the u64 array is NAME_MAX initialised bytes.
        let name: &[u8; NAME_MAX] = unsafe { &*words.as_ptr().cast() };
        let hash = name_hash(name);
        // SAFETY (both): map values live as long as the program runs; only read here.
        let head0 = unsafe { OBJECTS.get(&key(hash, 0, 0)) };
        let head1 = unsafe { OBJECTS.get(&key(hash, 1, 0)) };
        let (Some(head0), Some(head1)) = (head0, head1) else {
            log_line_with(b"not found: ", name);
            return Err(Status::NotFound);
        };
        // The whole name, against the head's: another name with the same hash is absent.
        let stored = |i: usize| -> u64 {
            let chunk = if i < CHUNK / 8 {
                &head0.data
            } else {
                &head1.data
            };
            let at = (i * 8) % CHUNK;
            u64::from_ne_bytes([
                chunk[at],
                chunk[at + 1],
                chunk[at + 2],
                chunk[at + 3],
                chunk[at + 4],
                chunk[at + 5],
                chunk[at + 6],
                chunk[at + 7],
            ])
        };
        let mut differ = 0u64;
        for i in 0..NAME_MAX / 8 {
            let at = i * 8;
            let word = u64::from_ne_bytes([
                name[at],
                name[at + 1],
                name[at + 2],
                name[at + 3],
                name[at + 4],
                name[at + 5],
                name[at + 6],
                name[at + 7],
            ]);
            differ |= word ^ stored(i);
        }
        if differ != 0 {
            log_line_with(b"not found: ", name);
            return Err(Status::NotFound);
        }
        let d = &head1.data;
        let len = u32::from_le_bytes([d[LEN_AT], d[LEN_AT + 1], d[LEN_AT + 2], d[LEN_AT + 3]]);
        let generation = u16::from_le_bytes([d[GENERATION_AT], d[GENERATION_AT + 1]]);
        // Divided by an opaque 1: the kernel's verifier does not follow a division, so the
        // reply below is walked for one range of lengths, not once per path that led here.
        let len = len as usize / opaque(1);
        if len > MAX_CONTENT {
            return Err(Status::Internal);
        }
        Ok((hash, len, generation))
    }

    /// Reads word `w` of the zero-padded name of `len` (1 ..= NAME_MAX) bytes at packet
    /// address `before + 8` into `slot` (zero past the name): 0, or 1 when the packet is
    /// short. A subprogram: one copy of the code for the eight words.
    ///
    /// The last, partial word is read as the 8 bytes that end the name (the packet holds the
    /// λ header before it) and shifted into place, so no byte needs a comparison of its own.
    ///
    /// # Safety
    /// `before .. end` must be readable packet memory.
    #[inline(never)]
    unsafe fn name_word(before: usize, end: usize, len: usize, w: usize, slot: &mut u64) -> i64 {
        let (len, from) = (opaque(len), 8 * w);
        // SAFETY: passed on from the caller.
        let (word, short) = unsafe { name_word_value(before, end, len, from) };
        // Both through a division by an opaque 1, which the kernel's verifier does not
        // follow: whichever way this call went, the caller continues in one state (its stack
        // slot and the result unknown), not in one per way, each walked through all that
        // follows.
        *slot = word / opaque(1) as u64;
        (short / opaque(1)) as i64
    }

    /// [`name_word`]'s word and whether the packet was short (0 or 1).
    ///
    /// # Safety
    /// As for [`name_word`].
    #[inline(always)]
    unsafe fn name_word_value(before: usize, end: usize, len: usize, from: usize) -> (u64, usize) {
        if from >= len || len > NAME_MAX {
            return (0, 0);
        }
        if from + 8 <= len {
            // SAFETY: `read_at` checks against `end`.
            return match unsafe { read_at::<[u8; 8]>(before + 8 + from, end) } {
                Some(word) => (u64::from_ne_bytes(word), 0),
                None => (0, 1),
            };
        }
        // The 8 bytes that end the name, checked as a pointer to their start plus 8 with the
        // 8 hidden from the compiler: it would compare the end and read at negative offsets
        // from it, which the kernel's verifier refuses.
        let last = before + len;
        if last + opaque(8) > end {
            return (0, 1);
        }
        // SAFETY: `last + 8 <= end` just above.
        let word: [u8; 8] = unsafe { core::ptr::read_unaligned(last as *const [u8; 8]) };
        // Little-endian: the name's last `len - from` bytes are the word's high ones.
        (u64::from_le_bytes(word) >> (8 * (from + 8 - len)), 0)
    }

    /// The name of `len` bytes at packet address `before + 8` into `out` (zero-padded); false
    /// when the packet is short.
    ///
    /// # Safety
    /// As for [`name_word`].
    #[inline(always)]
    unsafe fn read_name(
        before: usize,
        end: usize,
        len: usize,
        out: &mut [u64; NAME_MAX / 8],
    ) -> bool {
        // Every word, with constant indices, and one test at the end: stopping at the name's
        // last word would leave the stack in a different state after each stop, and the
        // verifiers would walk all that follows once for each; as a loop, the compiler walks
        // `out` with a pointer whose offset they know only as a range.
        let [w0, w1, w2, w3, w4, w5, w6, w7] = out;
        let mut short = 0;
        for (w, slot) in [w0, w1, w2, w3, w4, w5, w6, w7].into_iter().enumerate() {
            // Each call gets `len` divided by an opaque 1: a copy the kernel's verifier does
            // not link to `len`, so what the callee's tests learn about it does not flow back
            // and split the caller into one state per outcome.
            // SAFETY: passed on from the caller.
            short |= unsafe { name_word(before, end, len / opaque(1), w, slot) };
        }
        short == 0
    }

    /// Writes the content's chunks at frame offset `body`; INTERNAL when one is missing.
    #[inline(always)]
    fn fill(
        frame: &mut XdpFrame<'_>,
        body: usize,
        hash: u32,
        len: usize,
        generation: u16,
    ) -> Result<(), Status> {
        // An error's reply has no body: no walk of the copy for it (`len` is exactly 0 there).
        if len == 0 {
            return Ok(());
        }
        // `len` divided by an opaque 1, a copy the kernel's verifier does not link to `len`:
        // what the loops of `fill_at` learn about it would otherwise flow back into the
        // caller's `len`, and the checksum after it be walked once per range so learnt.
        let unlinked = len / opaque(1);
        // SAFETY: `data..data_end` is the packet, sized by the reply to hold the body.
        match unsafe {
            fill_at(
                frame.data() + body,
                frame.data_end(),
                hash,
                unlinked,
                generation,
            )
        } {
            0 => Ok(()),
            _ => Err(Status::Internal),
        }
    }

    /// `len` through memory the compiler cannot see into, so that the loops below keep
    /// counting up to their constant and test it inside (see `lambda_ebpf::nic`).
    #[inline(always)]
    fn opaque(n: usize) -> usize {
        // SAFETY: a read of a local.
        unsafe { core::ptr::read_volatile(&n) }
    }

    /// [`fill`] at packet address `at`, as a subprogram whose result is one register (0, or
    /// 1 for a missing chunk or a short packet): the verifiers walk its loop once, and its
    /// many exits meet again in the caller.
    ///
    /// # Safety
    /// `at..end` must be writable packet memory.
    #[inline(never)]
    unsafe fn fill_at(at: usize, end: usize, hash: u32, len: usize, generation: u16) -> i64 {
        if len > MAX_CONTENT {
            return 1;
        }
        // Whole chunks first (one comparison with `end` each), then the partial last one: one
        // loop each, so no iteration of the first holds a walk of the second.
        let whole = MAX_CONTENT / CHUNK;
        let mut c = 0;
        while c < whole {
            let from = c * CHUNK;
            if from + CHUNK > opaque(len) {
                break;
            }
            // SAFETY: map values live as long as the program runs; only read here.
            let Some(chunk) =
                (unsafe { OBJECTS.get(&key(hash, HEAD_CHUNKS + c as u16, generation)) })
            else {
                return 1;
            };
            let to = at + from;
            if to + CHUNK > end {
                return 1;
            }
            // Unrolled by the compiler: straight code the verifiers walk once per chunk.
            for (i, &byte) in chunk.data.iter().enumerate() {
                // SAFETY: `to + CHUNK <= end` above, and `i < CHUNK`.
                unsafe { core::ptr::write_volatile((to + i) as *mut u8, byte) };
            }
            c += 1;
        }
        let from = c * CHUNK;
        let rest = opaque(len) - from;
        if rest == 0 || rest >= CHUNK {
            return 0;
        }
        // SAFETY: map values live as long as the program runs; only read here.
        let Some(chunk) = (unsafe { OBJECTS.get(&key(hash, HEAD_CHUNKS + c as u16, generation)) })
        else {
            return 1;
        };
        let to = at + from;
        let d = &chunk.data;
        // Whole words of the partial chunk; then, when it has 8 bytes or more, the 8 that end
        // it (rewriting some of the same bytes), else its bytes one by one.
        let mut w = 0;
        while w < CHUNK / 8 {
            if 8 * w + 8 > rest {
                break;
            }
            let word = to + 8 * w;
            if word + 8 > end {
                return 1;
            }
            for i in 0..8 {
                // SAFETY: `word + 8 <= end` above.
                unsafe { core::ptr::write_volatile((word + i) as *mut u8, d[8 * w + i]) };
            }
            w += 1;
        }
        if rest >= 8 {
            // Its own bound: the compiler folds the tests of `rest` above into one the
            // verifiers cannot apply to it.
            let back = opaque(rest - 8);
            if back >= CHUNK {
                return 1;
            }
            let last = to + back;
            if last + 8 > end {
                return 1;
            }
            for i in 0..8 {
                let Some(&value) = d.get(back + i) else {
                    return 1;
                };
                // SAFETY: `last + 8 <= end` above.
                unsafe { core::ptr::write_volatile((last + i) as *mut u8, value) };
            }
        } else {
            for (i, &value) in d.iter().enumerate().take(8) {
                if i >= rest {
                    break;
                }
                let byte = to + i;
                if byte + opaque(1) > end {
                    return 1;
                }
                // SAFETY: checked against `end` just above.
                unsafe { core::ptr::write_volatile(byte as *mut u8, value) };
            }
        }
        0
    }
}

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!("static-server is a lambda: build it with `cargo xtask build-ebpf`");
}
