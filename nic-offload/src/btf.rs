//! The smallest BTF a coalesced program needs: one `FUNC` per function, so that each lambda's
//! entry can be a *global* function. The kernel verifies a global function once, on its own,
//! with `r1` = the XDP context; a static function is verified again at every call site with the
//! caller's state. Coalescing a few SDK lambdas as static functions exceeds the kernel's
//! one-million-instruction budget; as global functions each costs what it costs alone.
//!
//! Types: `int`, `struct xdp_md` (the kernel recognises the context by this name), a pointer to
//! it, `int (struct xdp_md *ctx)` for the main program and the entries, `int (void)` for the
//! static functions (the kernel does not check a static function's arguments against BTF).

use loader::kernel::ProgramBtf;

const BTF_MAGIC: u16 = 0xeb9f;
const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_STRUCT: u32 = 4;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const LINKAGE_STATIC: u32 = 0;
const LINKAGE_GLOBAL: u32 = 1;
/// `BTF_INT_SIGNED` in the int encoding's top byte.
const INT_SIGNED: u32 = 1 << 24;

struct Builder {
    types: Vec<u8>,
    strings: Vec<u8>,
    next_id: u32,
}

impl Builder {
    fn new() -> Builder {
        Builder {
            types: Vec::new(),
            strings: vec![0],
            next_id: 1,
        }
    }

    fn string(&mut self, s: &str) -> u32 {
        let off = self.strings.len() as u32;
        self.strings.extend_from_slice(s.as_bytes());
        self.strings.push(0);
        off
    }

    fn put(&mut self, words: &[u32]) -> u32 {
        for w in words {
            self.types.extend_from_slice(&w.to_le_bytes());
        }
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn blob(self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&BTF_MAGIC.to_le_bytes());
        out.push(1); // version
        out.push(0); // flags
        for w in [
            24u32,
            0,
            self.types.len() as u32,
            self.types.len() as u32,
            self.strings.len() as u32,
        ] {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.extend_from_slice(&self.types);
        out.extend_from_slice(&self.strings);
        out
    }
}

/// An identifier the kernel accepts as a BTF function name.
fn ident(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// BTF and function information for a program whose functions start at `starts` (sorted, the
/// first 0, the main program); `global[i]` says whether function `i` is global, named
/// `names[i]`.
pub fn program_btf(starts: &[usize], global: &[bool], names: &[String]) -> ProgramBtf {
    let mut b = Builder::new();
    let int_name = b.string("int");
    let int = b.put(&[int_name, KIND_INT << 24, 4, INT_SIGNED | 32]);
    let ctx_name = b.string("xdp_md");
    let xdp_md = b.put(&[ctx_name, KIND_STRUCT << 24, 24]);
    let ptr = b.put(&[0, KIND_PTR << 24, xdp_md]);
    let arg_name = b.string("ctx");
    let ctx_proto = b.put(&[0, (KIND_FUNC_PROTO << 24) | 1, int, arg_name, ptr]);
    let void_proto = b.put(&[0, KIND_FUNC_PROTO << 24, int]);
    let mut func_info = Vec::new();
    for (i, &start) in starts.iter().enumerate() {
        let name = b.string(&ident(&names[i]));
        let (linkage, proto) = if i == 0 || global[i] {
            (
                if global[i] {
                    LINKAGE_GLOBAL
                } else {
                    LINKAGE_STATIC
                },
                ctx_proto,
            )
        } else {
            (LINKAGE_STATIC, void_proto)
        };
        let id = b.put(&[name, (KIND_FUNC << 24) | linkage, proto]);
        func_info.push([start as u32, id]);
    }
    ProgramBtf {
        blob: b.blob(),
        func_info,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_has_a_header_types_and_one_func_per_function() {
        let btf = program_btf(
            &[0, 10, 20],
            &[false, true, false],
            &["dispatch".into(), "lnic-echo".into(), "f2".into()],
        );
        assert_eq!(&btf.blob[..2], &BTF_MAGIC.to_le_bytes());
        assert_eq!(btf.func_info, vec![[0, 6], [10, 7], [20, 8]]);
        let type_len = u32::from_le_bytes(btf.blob[12..16].try_into().unwrap()) as usize;
        let str_len = u32::from_le_bytes(btf.blob[20..24].try_into().unwrap()) as usize;
        assert_eq!(btf.blob.len(), 24 + type_len + str_len);
        assert!(
            String::from_utf8_lossy(&btf.blob[24 + type_len..]).contains("lnic_echo"),
            "names are made identifiers"
        );
    }
}
