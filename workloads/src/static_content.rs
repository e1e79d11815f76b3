//! The static-server workload: the object it serves by default. The lambda seeds its
//! `OBJECTS` map with this content; the native baseline serves it from memory.

/// The name of the object every static-server serves out of the box.
pub const INDEX_NAME: &[u8] = b"index.html";

/// Its content.
pub const INDEX_HTML: &[u8] = b"<!doctype html>\n<html><head><title>lambda-nic</title></head>\n<body><h1>Hello from a lambda in the XDP path</h1></body></html>\n";

/// Longest object name, in bytes (the lambda's map key size).
pub const NAME_MAX: usize = 64;

/// The static-server's NIC layout (`static-server-nic.o`): the NFP holds map elements of at
/// most 64 bytes (key and value each rounded up to 8), so an object is stored as a run of
/// [`nic::CHUNK`]-byte chunks in one hash map, keyed by a hash of its name and the chunk's
/// number.
///
/// - Head chunks 0 and 1 (generation 0) hold the 64-byte zero-padded name (56 bytes in
///   chunk 0, the last 8 at the start of chunk 1), then in chunk 1 the content length (u32,
///   little-endian) and the content's generation (u16, little-endian), zeros after.
/// - Content chunk `c` is chunk `2 + c` of that generation: content bytes `56 c ..`, zero
///   padded.
///
/// The lambda compares the whole name with the head's (a name whose hash collides with a
/// stored one is answered NOT_FOUND, as absent) and answers INTERNAL when a content chunk is
/// missing. A writer replaces an object's content without a reader ever seeing a mix: it
/// writes the new content chunks under another generation, then chunk 1 (one hash update,
/// which readers see whole), then deletes the old generation's chunks. (A request that read
/// the old chunk 1 just before the switch can find one of its chunks deleted: INTERNAL.)
pub mod nic {
    use super::NAME_MAX;

    /// Bytes of one chunk (the map value): 8 of key + 56 of value fill the NFP's 64.
    pub const CHUNK: usize = 56;
    /// The longest content the NIC layout serves: what fits one reply (`MAX_BODY`).
    pub const MAX_CONTENT: usize = lambda_ebpf::MAX_BODY;
    /// Content chunks of the longest content.
    pub const MAX_CONTENT_CHUNKS: usize = MAX_CONTENT.div_ceil(CHUNK);
    /// Chunk numbers of the head; content chunk `c` is `HEAD_CHUNKS + c`.
    pub const HEAD_CHUNKS: u16 = 2;
    /// Where chunk 1 keeps the content length and the generation.
    pub const LEN_AT: usize = NAME_MAX - CHUNK;
    pub const GENERATION_AT: usize = LEN_AT + 4;

    const _: () = assert!(NAME_MAX > CHUNK && GENERATION_AT + 2 <= CHUNK);
    const _: () = assert!(MAX_CONTENT >= super::INDEX_HTML.len());

    /// The map key: name hash, chunk number, generation (0 for the head).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct ChunkKey {
        pub hash: u32,
        pub chunk: u16,
        pub generation: u16,
    }

    impl ChunkKey {
        /// The key's bytes as the map holds them.
        pub fn to_bytes(self) -> [u8; 8] {
            let [a, b, c, d] = self.hash.to_ne_bytes();
            let [e, f] = self.chunk.to_ne_bytes();
            let [g, h] = self.generation.to_ne_bytes();
            [a, b, c, d, e, f, g, h]
        }
    }

    /// The map value: one chunk.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Chunk {
        pub data: [u8; CHUNK],
    }

    /// The hash of a zero-padded name: FNV-1a over its 16 little-endian 32-bit words (32-bit
    /// multiplies only: the NFP has no wider ones).
    pub const fn name_hash(name: &[u8; NAME_MAX]) -> u32 {
        let mut hash = 0x811c_9dc5u32;
        let mut i = 0;
        while i < NAME_MAX / 4 {
            let word = u32::from_le_bytes([
                name[4 * i],
                name[4 * i + 1],
                name[4 * i + 2],
                name[4 * i + 3],
            ]);
            // Through `black_box`: the compiler would otherwise keep the product's high bits
            // between rounds (only the low 32 matter), and multiply wider than 32 bits.
            hash = core::hint::black_box(hash ^ word).wrapping_mul(0x0100_0193);
            i += 1;
        }
        hash
    }

    /// Head chunk `which` (0 or 1) of an object of `len` content bytes in `generation`.
    pub const fn head_chunk(name: &[u8; NAME_MAX], len: u32, generation: u16, which: u16) -> Chunk {
        let mut data = [0u8; CHUNK];
        let mut i = 0;
        while i < CHUNK {
            let at = which as usize * CHUNK + i;
            if at < NAME_MAX {
                data[i] = name[at];
            }
            i += 1;
        }
        if which == 1 {
            let len = len.to_le_bytes();
            let generation = generation.to_le_bytes();
            let mut i = 0;
            while i < 4 {
                data[LEN_AT + i] = len[i];
                i += 1;
            }
            data[GENERATION_AT] = generation[0];
            data[GENERATION_AT + 1] = generation[1];
        }
        Chunk { data }
    }

    /// Content chunk `c` of `content`, zero-padded.
    pub const fn content_chunk(content: &[u8], c: usize) -> Chunk {
        let mut data = [0u8; CHUNK];
        let mut i = 0;
        while i < CHUNK && c * CHUNK + i < content.len() {
            data[i] = content[c * CHUNK + i];
            i += 1;
        }
        Chunk { data }
    }

    /// Why an object cannot be stored in the NIC layout.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum LayoutError {
        /// The name is empty or longer than [`NAME_MAX`].
        NameLength(usize),
        /// The content is longer than [`MAX_CONTENT`].
        ContentLength(usize),
    }

    impl core::fmt::Display for LayoutError {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            match self {
                LayoutError::NameLength(n) => {
                    write!(f, "an object name has 1 to {NAME_MAX} bytes, not {n}")
                }
                LayoutError::ContentLength(n) => write!(
                    f,
                    "the NIC layout holds at most {MAX_CONTENT} content bytes, not {n}"
                ),
            }
        }
    }

    impl core::error::Error for LayoutError {}

    /// Every record (key, chunk) that stores `content` under `name` in `generation`: the
    /// content chunks first, then the head (chunk 1, which names the generation, last), in the
    /// order a writer must apply them.
    pub fn records(
        name: &[u8],
        content: &[u8],
        generation: u16,
    ) -> Result<impl Iterator<Item = (ChunkKey, Chunk)>, LayoutError> {
        if name.is_empty() || name.len() > NAME_MAX {
            return Err(LayoutError::NameLength(name.len()));
        }
        if content.len() > MAX_CONTENT {
            return Err(LayoutError::ContentLength(content.len()));
        }
        let mut padded = [0u8; NAME_MAX];
        padded[..name.len()].copy_from_slice(name);
        let hash = name_hash(&padded);
        let content_chunks = (0..content.len().div_ceil(CHUNK)).map(move |c| {
            let key = ChunkKey {
                hash,
                chunk: HEAD_CHUNKS + c as u16,
                generation,
            };
            (key, content_chunk(content, c))
        });
        let head = (0..HEAD_CHUNKS).map(move |which| {
            let key = ChunkKey {
                hash,
                chunk: which,
                generation: 0,
            };
            (
                key,
                head_chunk(&padded, content.len() as u32, generation, which),
            )
        });
        Ok(content_chunks.chain(head))
    }
}
