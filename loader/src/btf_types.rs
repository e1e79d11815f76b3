//! Map key and value types from an object's `.BTF`, and conversions between map bytes and
//! readable values (`lambdactl maps`).
//!
//! aya-ebpf 0.2 emits legacy `maps`-section maps, whose definitions carry no BTF type ids. The
//! types are still findable, in this order:
//! 1. a `seed!` record for the map (`.lnic.seed.<MAP>`): a `SeedRecord<K, V>` struct whose
//!    `key` and `value` members are the exact types;
//! 2. a BTF-defined map (`.maps`): its `key`/`value` members point at the types;
//! 3. the map static itself: `HashMap<K, V>`, `Array<V>`, … — its BTF struct name spells the
//!    generic arguments (bpf-linker escapes `<`, `:`, … as `_3C_`, `_3A_`), and the arguments are
//!    looked up by name among the BTF types (primitives are synthesised, as BTF may lack them).
//!
//! A type is only used when its size is the map's key or value size, so a stale or changed
//! object can never mislabel bytes; without a type, callers fall back to hex.

use serde_json::{Map as JsonMap, Value};

use crate::lineinfo::{BtfStrings, LineInfoError};

/// Why a `.BTF` section could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BtfTypesError {
    #[error(".BTF is truncated: needs {needed} bytes at offset {offset}, has {len}")]
    Truncated {
        offset: usize,
        needed: usize,
        len: usize,
    },
    #[error(".BTF: {0}")]
    Strings(#[from] LineInfoError),
    #[error(".BTF type {id} has unknown kind {kind}")]
    UnknownKind { id: u32, kind: u32 },
    #[error("{0}: not a readable ELF object")]
    Elf(String),
}

/// A key or value that could not be built from the text given.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", if .path.is_empty() { String::new() } else { format!("`{}`: ", .path) })]
pub struct ValueError {
    /// Which field (`data`, `inner.count`, `[3]`); empty for the whole key or value.
    pub path: String,
    pub message: String,
}

fn verr(path: &str, message: impl Into<String>) -> ValueError {
    ValueError {
        path: path.to_owned(),
        message: message.into(),
    }
}

/// One BTF type, as much of it as rendering needs.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    Void,
    Int {
        size: u32,
        encoding: u32,
        bits: u32,
    },
    Ptr(u32),
    Array {
        elem: u32,
        len: u32,
    },
    Struct {
        size: u32,
        members: Vec<Member>,
    },
    Union {
        size: u32,
    },
    Enum {
        size: u32,
        signed: bool,
        variants: Vec<(String, i64)>,
    },
    /// TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG: the type they qualify.
    Alias(u32),
    Var(u32),
    Datasec(Vec<u32>),
    Float {
        size: u32,
    },
    /// FWD, FUNC, FUNC_PROTO, DECL_TAG: nothing a map holds.
    Other,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Member {
    name: String,
    ty: u32,
    bit_offset: u32,
    /// Non-zero for a bitfield.
    bit_size: u32,
}

#[derive(Clone, Debug)]
struct BtfType {
    /// The name with bpf-linker's `_XX_` escapes decoded (`HashMap<a::B, u32>`).
    name: String,
    kind: Kind,
}

/// The types of a `.BTF` section.
#[derive(Clone, Debug)]
pub struct Btf {
    /// Indexed by type id; id 0 is void.
    types: Vec<BtfType>,
}

const BTF_INT_SIGNED: u32 = 1;
const BTF_INT_CHAR: u32 = 2;
const BTF_INT_BOOL: u32 = 4;

/// Longest chain of typedefs/qualifiers or struct nesting followed before giving up, so a
/// malformed (cyclic) BTF cannot recurse forever.
const MAX_DEPTH: usize = 32;

impl Btf {
    /// Reads the `.BTF` section of an ELF object (`None` when it has none).
    pub fn from_object(elf: &[u8]) -> Result<Option<Btf>, BtfTypesError> {
        use object::{Object as _, ObjectSection as _};
        let file = object::File::parse(elf).map_err(|e| BtfTypesError::Elf(e.to_string()))?;
        let Some(section) = file.section_by_name(".BTF") else {
            return Ok(None);
        };
        let data = section
            .data()
            .map_err(|e| BtfTypesError::Elf(e.to_string()))?;
        Btf::parse(data).map(Some)
    }

    /// Parses a `.BTF` section.
    pub fn parse(btf: &[u8]) -> Result<Btf, BtfTypesError> {
        let strings = BtfStrings::parse(btf)?;
        let u32_at = |off: usize| -> Result<u32, BtfTypesError> {
            off.checked_add(4)
                .and_then(|end| btf.get(off..end))
                .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
                .ok_or(BtfTypesError::Truncated {
                    offset: off,
                    needed: 4,
                    len: btf.len(),
                })
        };
        let hdr_len = u32_at(4)? as usize;
        let type_off = u32_at(8)? as usize;
        let type_len = u32_at(12)? as usize;
        let start = hdr_len.saturating_add(type_off);
        let end = start.saturating_add(type_len);
        if end > btf.len() {
            return Err(BtfTypesError::Truncated {
                offset: start,
                needed: type_len,
                len: btf.len(),
            });
        }
        let name =
            |off: u32| -> Result<String, BtfTypesError> { Ok(decode_name(&strings.get(off)?)) };
        let mut types = vec![BtfType {
            name: String::new(),
            kind: Kind::Void,
        }];
        let mut at = start;
        while at < end {
            let id = types.len() as u32;
            let name_off = u32_at(at)?;
            let info = u32_at(at + 4)?;
            let size_or_type = u32_at(at + 8)?;
            at += 12;
            let vlen = (info & 0xffff) as usize;
            let kind_raw = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let kind = match kind_raw {
                1 => {
                    let enc = u32_at(at)?;
                    at += 4;
                    Kind::Int {
                        size: size_or_type,
                        encoding: (enc >> 24) & 0xf,
                        bits: enc & 0xff,
                    }
                }
                2 => Kind::Ptr(size_or_type),
                3 => {
                    let elem = u32_at(at)?;
                    let len = u32_at(at + 8)?;
                    at += 12;
                    Kind::Array { elem, len }
                }
                4 | 5 => {
                    let mut members = Vec::with_capacity(vlen);
                    for _ in 0..vlen {
                        let offset = u32_at(at + 8)?;
                        let (bit_offset, bit_size) = if kind_flag {
                            (offset & 0xff_ffff, offset >> 24)
                        } else {
                            (offset, 0)
                        };
                        members.push(Member {
                            name: name(u32_at(at)?)?,
                            ty: u32_at(at + 4)?,
                            bit_offset,
                            bit_size,
                        });
                        at += 12;
                    }
                    if kind_raw == 4 {
                        Kind::Struct {
                            size: size_or_type,
                            members,
                        }
                    } else {
                        Kind::Union { size: size_or_type }
                    }
                }
                6 | 19 => {
                    let step = if kind_raw == 6 { 8 } else { 12 };
                    let mut variants = Vec::with_capacity(vlen);
                    for _ in 0..vlen {
                        let lo = u32_at(at + 4)?;
                        let value = if kind_raw == 6 {
                            if kind_flag {
                                i64::from(lo as i32)
                            } else {
                                i64::from(lo)
                            }
                        } else {
                            (u64::from(u32_at(at + 8)?) << 32 | u64::from(lo)) as i64
                        };
                        variants.push((name(u32_at(at)?)?, value));
                        at += step;
                    }
                    Kind::Enum {
                        size: size_or_type,
                        signed: kind_flag,
                        variants,
                    }
                }
                8 | 9 | 10 | 11 | 18 => Kind::Alias(size_or_type),
                14 => {
                    at += 4;
                    Kind::Var(size_or_type)
                }
                15 => {
                    let mut vars = Vec::with_capacity(vlen);
                    for _ in 0..vlen {
                        vars.push(u32_at(at)?);
                        at += 12;
                    }
                    Kind::Datasec(vars)
                }
                16 => Kind::Float { size: size_or_type },
                7 | 12 => Kind::Other,
                13 => {
                    at += 8 * vlen;
                    Kind::Other
                }
                17 => {
                    at += 4;
                    Kind::Other
                }
                kind => return Err(BtfTypesError::UnknownKind { id, kind }),
            };
            types.push(BtfType {
                name: name(name_off)?,
                kind,
            });
        }
        Ok(Btf { types })
    }

    fn get(&self, id: u32) -> Option<&BtfType> {
        self.types.get(id as usize)
    }

    /// Follows typedefs and qualifiers.
    fn resolve(&self, mut id: u32) -> Option<u32> {
        for _ in 0..MAX_DEPTH {
            match &self.get(id)?.kind {
                Kind::Alias(next) => id = *next,
                _ => return Some(id),
            }
        }
        None
    }

    /// The key and value types of map `map` whose keys are `key_size` and values `value_size`
    /// bytes (per CPU for per-CPU maps). `key_is_index` says the map is an array (keys are a
    /// `u32` index even where BTF does not say so).
    pub fn map_types(
        &self,
        map: &str,
        key_size: u32,
        value_size: u32,
        key_is_index: bool,
    ) -> MapTypes {
        let fits = |t: Option<TypeLayout>, size: u32| t.filter(|t| t.size() == size as usize);
        let mut found = MapTypes::default();
        let mut merge = |key: Option<TypeLayout>, value: Option<TypeLayout>, source: &str| {
            let key = fits(key, key_size);
            let value = fits(value, value_size);
            if found.key.is_none() && key.is_some() {
                found.key = key;
                found.key_source = Some(source.to_owned());
            }
            if found.value.is_none() && value.is_some() {
                found.value = value;
                found.value_source = Some(source.to_owned());
            }
        };
        let (k, v) = self.seed_types(map);
        merge(k, v, "seed record");
        let (k, v) = self.declared_types(map, key_is_index, key_size, value_size);
        merge(k, v, "map declaration");
        if key_is_index {
            merge(Some(TypeLayout::index()), None, "array index");
        }
        found
    }

    /// From the `SeedRecord<K, V>` of `.lnic.seed.<map>`.
    fn seed_types(&self, map: &str) -> (Option<TypeLayout>, Option<TypeLayout>) {
        let section = format!("{}{map}", crate::image::SEED_SECTION_PREFIX);
        for t in &self.types {
            let Kind::Datasec(vars) = &t.kind else {
                continue;
            };
            if t.name != section {
                continue;
            }
            for var in vars {
                if let Some(record) = self.var_struct(*var) {
                    let member = |n: &str| {
                        record
                            .iter()
                            .find(|m| m.name == n)
                            .and_then(|m| self.layout(m.ty, 0))
                    };
                    return (member("key"), member("value"));
                }
            }
        }
        (None, None)
    }

    /// The members of the struct a VAR's type is (after typedefs).
    fn var_struct(&self, var: u32) -> Option<&[Member]> {
        let Kind::Var(ty) = self.get(var)?.kind else {
            return None;
        };
        match &self.get(self.resolve(ty)?)?.kind {
            Kind::Struct { members, .. } => Some(members),
            _ => None,
        }
    }

    /// From the map's own static: a BTF-defined map's `key`/`value` pointers, or the generic
    /// arguments spelled in the name of aya-ebpf's map struct.
    fn declared_types(
        &self,
        map: &str,
        key_is_index: bool,
        key_size: u32,
        value_size: u32,
    ) -> (Option<TypeLayout>, Option<TypeLayout>) {
        for (id, t) in self.types.iter().enumerate() {
            if t.name != map || !matches!(t.kind, Kind::Var(_)) {
                continue;
            }
            let Some(members) = self.var_struct(id as u32) else {
                continue;
            };
            let pointee = |n: &str| {
                let m = members.iter().find(|m| m.name == n)?;
                let Kind::Ptr(target) = self.get(self.resolve(m.ty)?)?.kind else {
                    return None;
                };
                self.layout(target, 0)
            };
            let (k, v) = (pointee("key"), pointee("value"));
            if k.is_some() || v.is_some() {
                return (k, v);
            }
            let Kind::Var(ty) = t.kind else { continue };
            let Some(st) = self.resolve(ty).and_then(|s| self.get(s)) else {
                continue;
            };
            let args = generic_args(&st.name);
            return match args.len() {
                2 => (
                    self.named(&args[0], key_size),
                    self.named(&args[1], value_size),
                ),
                1 if key_is_index => (Some(TypeLayout::index()), self.named(&args[0], value_size)),
                1 => (None, self.named(&args[0], value_size)),
                _ => (None, None),
            };
        }
        (None, None)
    }

    /// The layout of type `id`, or `None` for what a map cannot hold (void, functions) or a
    /// chain too deep to be real.
    fn layout(&self, id: u32, depth: usize) -> Option<TypeLayout> {
        if depth > MAX_DEPTH {
            return None;
        }
        let id = self.resolve(id)?;
        let t = self.get(id)?;
        Some(match &t.kind {
            Kind::Int {
                size,
                encoding,
                bits,
            } => {
                if encoding & BTF_INT_BOOL != 0 && *size == 1 {
                    TypeLayout::Bool
                } else if *bits != size * 8 || !matches!(size, 1 | 2 | 4 | 8 | 16) {
                    TypeLayout::Opaque {
                        name: t.name.clone(),
                        size: *size as usize,
                    }
                } else {
                    TypeLayout::Int {
                        name: t.name.clone(),
                        size: *size as usize,
                        signed: encoding & BTF_INT_SIGNED != 0,
                        char: encoding & BTF_INT_CHAR != 0,
                    }
                }
            }
            Kind::Float { size } if matches!(size, 4 | 8) => TypeLayout::Float {
                size: *size as usize,
            },
            Kind::Float { size } => TypeLayout::Opaque {
                name: t.name.clone(),
                size: *size as usize,
            },
            Kind::Ptr(_) => TypeLayout::Opaque {
                name: "pointer".into(),
                size: 8,
            },
            Kind::Array { elem, len } => {
                let elem = self.layout(*elem, depth + 1)?;
                elem.size().checked_mul(*len as usize)?;
                TypeLayout::Array {
                    elem: Box::new(elem),
                    len: *len as usize,
                }
            }
            Kind::Struct { size, members } => {
                let size = *size as usize;
                let mut fields = Vec::with_capacity(members.len());
                let mut readable = true;
                for m in members {
                    if m.bit_size != 0 || m.bit_offset % 8 != 0 {
                        readable = false;
                        break;
                    }
                    let layout = self.layout(m.ty, depth + 1)?;
                    let offset = (m.bit_offset / 8) as usize;
                    if offset + layout.size() > size {
                        readable = false;
                        break;
                    }
                    fields.push(Field {
                        name: m.name.clone(),
                        offset,
                        layout,
                    });
                }
                if readable {
                    TypeLayout::Struct {
                        name: t.name.clone(),
                        size,
                        fields,
                    }
                } else {
                    // Bitfields never come from Rust; show such a struct as bytes.
                    TypeLayout::Opaque {
                        name: t.name.clone(),
                        size,
                    }
                }
            }
            Kind::Union { size } => TypeLayout::Opaque {
                name: t.name.clone(),
                size: *size as usize,
            },
            Kind::Enum {
                size,
                signed,
                variants,
            } if matches!(size, 1 | 2 | 4 | 8) => TypeLayout::Enum {
                name: t.name.clone(),
                size: *size as usize,
                signed: *signed,
                variants: variants.clone(),
            },
            Kind::Enum { size, .. } => TypeLayout::Opaque {
                name: t.name.clone(),
                size: *size as usize,
            },
            Kind::Void | Kind::Alias(_) | Kind::Var(_) | Kind::Datasec(_) | Kind::Other => {
                return None;
            }
        })
    }

    /// The type a Rust type name spells (`u32`, `[u8; 64]`, `my_crate::Key`) with `size`
    /// bytes: primitives and arrays are built, paths are looked up among the BTF types.
    fn named(&self, name: &str, size: u32) -> Option<TypeLayout> {
        let layout = self.named_any(name.trim(), 0)?;
        (layout.size() == size as usize).then_some(layout)
    }

    fn named_any(&self, name: &str, depth: usize) -> Option<TypeLayout> {
        if depth > MAX_DEPTH {
            return None;
        }
        if let Some(p) = TypeLayout::primitive(name) {
            return Some(p);
        }
        if let Some(inner) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
            let (elem, len) = inner.rsplit_once(';')?;
            let len: usize = len.trim().parse().ok()?;
            let elem = self.named_any(elem.trim(), depth + 1)?;
            elem.size().checked_mul(len)?;
            return Some(TypeLayout::Array {
                elem: Box::new(elem),
                len,
            });
        }
        let short = strip_path(name);
        self.types.iter().enumerate().find_map(|(id, t)| {
            let candidate = matches!(
                t.kind,
                Kind::Struct { .. }
                    | Kind::Union { .. }
                    | Kind::Enum { .. }
                    | Kind::Int { .. }
                    | Kind::Float { .. }
                    | Kind::Alias(_)
            ) && (t.name == name || t.name == short);
            if candidate {
                self.layout(id as u32, depth + 1)
            } else {
                None
            }
        })
    }
}

/// What [`Btf::map_types`] found; `None` where the type is unknown (show hex).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MapTypes {
    pub key: Option<TypeLayout>,
    pub value: Option<TypeLayout>,
    /// Where the key type came from (`seed record`, `map declaration`, `array index`).
    pub key_source: Option<String>,
    pub value_source: Option<String>,
}

/// One field of a struct.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    /// `__0`, `__1`, … for tuple structs, as Rust's BTF names them.
    pub name: String,
    /// Byte offset in the struct.
    pub offset: usize,
    pub layout: TypeLayout,
}

/// How to read and write the bytes of one type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TypeLayout {
    /// An integer of 1, 2, 4, 8 or 16 bytes, little-endian.
    Int {
        name: String,
        size: usize,
        signed: bool,
        /// C `char`: an element of a byte string like `u8`.
        char: bool,
    },
    Bool,
    Float {
        size: usize,
    },
    Enum {
        name: String,
        size: usize,
        signed: bool,
        variants: Vec<(String, i64)>,
    },
    Array {
        elem: Box<TypeLayout>,
        len: usize,
    },
    Struct {
        name: String,
        size: usize,
        fields: Vec<Field>,
    },
    /// Pointers, unions, bitfields: shown and given as hex.
    Opaque {
        name: String,
        size: usize,
    },
}

impl TypeLayout {
    /// `u32`, the key of an array map.
    pub fn index() -> TypeLayout {
        TypeLayout::primitive("u32").expect("u32 is a primitive")
    }

    /// The Rust primitive `name`, if it is one.
    pub fn primitive(name: &str) -> Option<TypeLayout> {
        let int = |size: usize, signed: bool| TypeLayout::Int {
            name: name.to_owned(),
            size,
            signed,
            char: false,
        };
        Some(match name {
            "u8" => int(1, false),
            "u16" => int(2, false),
            "u32" | "char" => int(4, false),
            "u64" | "usize" => int(8, false),
            "u128" => int(16, false),
            "i8" => int(1, true),
            "i16" => int(2, true),
            "i32" => int(4, true),
            "i64" | "isize" => int(8, true),
            "i128" => int(16, true),
            "bool" => TypeLayout::Bool,
            "f32" => TypeLayout::Float { size: 4 },
            "f64" => TypeLayout::Float { size: 8 },
            _ => return None,
        })
    }

    /// Size in bytes.
    pub fn size(&self) -> usize {
        match self {
            TypeLayout::Int { size, .. }
            | TypeLayout::Float { size }
            | TypeLayout::Enum { size, .. }
            | TypeLayout::Struct { size, .. }
            | TypeLayout::Opaque { size, .. } => *size,
            TypeLayout::Bool => 1,
            TypeLayout::Array { elem, len } => elem.size() * len,
        }
    }

    /// The type's name as Rust spells it: `u32`, `[u8; 64]`, `Object`.
    pub fn type_name(&self) -> String {
        match self {
            TypeLayout::Int { name, .. }
            | TypeLayout::Enum { name, .. }
            | TypeLayout::Struct { name, .. }
            | TypeLayout::Opaque { name, .. } => {
                if name.is_empty() {
                    format!("({} bytes)", self.size())
                } else {
                    name.clone()
                }
            }
            TypeLayout::Bool => "bool".into(),
            TypeLayout::Float { size } => format!("f{}", size * 8),
            TypeLayout::Array { elem, len } => format!("[{}; {len}]", elem.type_name()),
        }
    }

    /// The fields as `name: type`, for error messages.
    fn field_list(fields: &[Field]) -> String {
        fields
            .iter()
            .map(|f| format!("{}: {}", f.name, f.layout.type_name()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// A struct of one field `__0` (a Rust newtype) shows and parses as that field.
    fn newtype_inner(&self) -> Option<&TypeLayout> {
        match self {
            TypeLayout::Struct { fields, size, .. }
                if fields.len() == 1
                    && fields[0].name == "__0"
                    && fields[0].offset == 0
                    && fields[0].layout.size() == *size =>
            {
                Some(&fields[0].layout)
            }
            _ => None,
        }
    }

    fn is_byte_array(&self) -> bool {
        match self {
            TypeLayout::Array { elem, .. } => matches!(**elem, TypeLayout::Int { size: 1, .. }),
            _ => self.newtype_inner().is_some_and(TypeLayout::is_byte_array),
        }
    }

    /// `bytes` (exactly [`TypeLayout::size`] of them, else shown as hex) as JSON: numbers,
    /// strings for text byte arrays (`hex:…` for other bytes), objects for structs.
    pub fn to_json(&self, bytes: &[u8]) -> Value {
        if bytes.len() != self.size() {
            return Value::String(format!("hex:{}", hex(bytes)));
        }
        if let Some(inner) = self.newtype_inner() {
            return inner.to_json(bytes);
        }
        match self {
            TypeLayout::Int { size, signed, .. } => {
                let (u, i) = int_value(bytes, *size, *signed);
                match (signed, size) {
                    (_, 16) => Value::String(if *signed {
                        i.to_string()
                    } else {
                        u.to_string()
                    }),
                    (true, _) => Value::from(i as i64),
                    (false, _) => Value::from(u as u64),
                }
            }
            TypeLayout::Bool => match bytes[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                other => Value::from(other),
            },
            TypeLayout::Float { size } => Value::from(float_value(bytes, *size)),
            TypeLayout::Enum {
                size,
                signed,
                variants,
                ..
            } => {
                let (u, i) = int_value(bytes, *size, *signed);
                let v = if *signed { i as i64 } else { u as i64 };
                match variants.iter().find(|(_, x)| *x == v) {
                    Some((name, _)) => Value::String(name.clone()),
                    None => Value::from(v),
                }
            }
            TypeLayout::Array { elem, len } => {
                if self.is_byte_array() {
                    return Value::String(byte_string(bytes));
                }
                let step = elem.size();
                Value::Array(
                    (0..*len)
                        .map(|i| elem.to_json(&bytes[i * step..(i + 1) * step]))
                        .collect(),
                )
            }
            TypeLayout::Struct { fields, .. } => {
                let mut obj = JsonMap::new();
                for f in fields {
                    let b = &bytes[f.offset..f.offset + f.layout.size()];
                    obj.insert(f.name.clone(), f.layout.to_json(b));
                }
                Value::Object(obj)
            }
            TypeLayout::Opaque { .. } => Value::String(format!("hex:{}", hex(bytes))),
        }
    }

    /// `bytes` as one line of text: `{ len: 5, data: "hello" }`; strings are quoted and
    /// escaped as JSON strings, so every value reads back with [`TypeLayout::encode`].
    pub fn to_text(&self, bytes: &[u8]) -> String {
        if bytes.len() != self.size() {
            return format!("hex:{}", hex(bytes));
        }
        if let Some(inner) = self.newtype_inner() {
            return inner.to_text(bytes);
        }
        match self {
            TypeLayout::Array { elem, len } if !self.is_byte_array() => {
                let step = elem.size();
                let items: Vec<String> = (0..*len)
                    .map(|i| elem.to_text(&bytes[i * step..(i + 1) * step]))
                    .collect();
                format!("[{}]", items.join(", "))
            }
            TypeLayout::Struct { fields, .. } => {
                let items: Vec<String> = fields
                    .iter()
                    .map(|f| {
                        let b = &bytes[f.offset..f.offset + f.layout.size()];
                        format!("{}: {}", f.name, f.layout.to_text(b))
                    })
                    .collect();
                format!("{{ {} }}", items.join(", "))
            }
            _ => match self.to_json(bytes) {
                Value::String(s) if s.starts_with("hex:") => s,
                other => other.to_string(),
            },
        }
    }

    /// The bytes of a value written as text: integers in decimal or `0x` hex, `true`/`false`,
    /// enum variants by name, byte arrays as a plain or JSON-quoted string or `hex:…`
    /// (zero-padded), other arrays as `[a, b, …]`, structs as `field=value,…` or a JSON
    /// object, anything as `hex:…` of exactly its size.
    pub fn encode(&self, text: &str) -> Result<Vec<u8>, ValueError> {
        let mut out = vec![0u8; self.size()];
        self.encode_text(text, "", &mut out)?;
        Ok(out)
    }

    fn encode_text(&self, text: &str, path: &str, out: &mut [u8]) -> Result<(), ValueError> {
        if let Some(inner) = self.newtype_inner() {
            // `{"__0": …}` still names the field; anything else is the wrapped value itself.
            if let Ok(v @ Value::Object(_)) = serde_json::from_str::<Value>(text.trim()) {
                return self.encode_json(&v, path, out);
            }
            return inner.encode_text(text, path, out);
        }
        if let Some(digits) = text.trim().strip_prefix("hex:") {
            let bytes = parse_hex(digits).map_err(|m| verr(path, m))?;
            let fits = if self.is_byte_array() {
                bytes.len() <= out.len()
            } else {
                bytes.len() == out.len()
            };
            if !fits {
                return Err(verr(
                    path,
                    format!(
                        "hex gives {} bytes, `{}` is {} bytes{}",
                        bytes.len(),
                        self.type_name(),
                        out.len(),
                        if self.is_byte_array() {
                            " (shorter is zero-padded)"
                        } else {
                            ""
                        }
                    ),
                ));
            }
            out[..bytes.len()].copy_from_slice(&bytes);
            return Ok(());
        }
        match self {
            TypeLayout::Array { .. } if self.is_byte_array() => {
                let s = unquote(text).map_err(|m| verr(path, m))?;
                if s.len() > out.len() {
                    return Err(verr(
                        path,
                        format!(
                            "string is {} bytes, `{}` holds {} (shorter is zero-padded)",
                            s.len(),
                            self.type_name(),
                            out.len()
                        ),
                    ));
                }
                out[..s.len()].copy_from_slice(s.as_bytes());
                Ok(())
            }
            TypeLayout::Array { .. } | TypeLayout::Struct { .. } => {
                let t = text.trim();
                if t.starts_with('{') || t.starts_with('[') {
                    if let Ok(v) = serde_json::from_str::<Value>(t) {
                        return self.encode_json(&v, path, out);
                    }
                }
                self.encode_list(t, path, out)
            }
            TypeLayout::Opaque { name, size } => Err(verr(
                path,
                format!("`{name}` can only be given as hex:… ({size} bytes)"),
            )),
            _ => {
                let s = unquote(text).map_err(|m| verr(path, m))?;
                self.encode_scalar(s.trim(), path, out)
            }
        }
    }

    /// A struct as `field=value,…` or `{ field: value, … }`, or an array as `[a, b, …]`.
    fn encode_list(&self, text: &str, path: &str, out: &mut [u8]) -> Result<(), ValueError> {
        match self {
            TypeLayout::Array { elem, len } => {
                let inner = text
                    .strip_prefix('[')
                    .and_then(|t| t.strip_suffix(']'))
                    .unwrap_or(text);
                let items = split_top_level(inner);
                if items.len() != *len {
                    return Err(verr(
                        path,
                        format!(
                            "{} elements given, `{}` has {len}",
                            items.len(),
                            self.type_name()
                        ),
                    ));
                }
                let step = elem.size();
                for (i, item) in items.iter().enumerate() {
                    let p = format!("{path}[{i}]");
                    elem.encode_text(item, &p, &mut out[i * step..(i + 1) * step])?;
                }
                Ok(())
            }
            TypeLayout::Struct { name, fields, .. } => {
                let inner = text
                    .strip_prefix('{')
                    .and_then(|t| t.strip_suffix('}'))
                    .unwrap_or(text);
                let mut given = Vec::new();
                for item in split_top_level(inner) {
                    // `field=value`, or `field: value` as `to_text` prints it.
                    let Some((k, v)) = item.split_once(['=', ':']) else {
                        return Err(verr(
                            path,
                            format!(
                                "expected field=value, got `{item}` (`{name}` has fields {})",
                                TypeLayout::field_list(fields)
                            ),
                        ));
                    };
                    given.push((k.trim().to_owned(), Value::String(v.trim().to_owned())));
                }
                self.encode_fields(given, path, out)
            }
            _ => unreachable!("encode_list is only called for arrays and structs"),
        }
    }

    fn encode_fields(
        &self,
        given: Vec<(String, Value)>,
        path: &str,
        out: &mut [u8],
    ) -> Result<(), ValueError> {
        let TypeLayout::Struct { name, fields, .. } = self else {
            unreachable!("encode_fields is only called for structs")
        };
        let mut set = vec![false; fields.len()];
        for (k, v) in given {
            // Tuple-struct fields are `__0`, `__1` in BTF; `0`, `1` are accepted too.
            let at = fields
                .iter()
                .position(|f| f.name == k || f.name.strip_prefix("__") == Some(k.as_str()))
                .ok_or_else(|| {
                    verr(
                        path,
                        format!(
                            "`{name}` has no field `{k}`; its fields: {}",
                            TypeLayout::field_list(fields)
                        ),
                    )
                })?;
            if set[at] {
                return Err(verr(path, format!("field `{k}` given twice")));
            }
            set[at] = true;
            let f = &fields[at];
            let p = if path.is_empty() {
                f.name.clone()
            } else {
                format!("{path}.{}", f.name)
            };
            f.layout
                .encode_json(&v, &p, &mut out[f.offset..f.offset + f.layout.size()])?;
        }
        let missing: Vec<String> = fields
            .iter()
            .zip(&set)
            .filter(|(_, s)| !**s)
            .map(|(f, _)| format!("{}: {}", f.name, f.layout.type_name()))
            .collect();
        if !missing.is_empty() {
            return Err(verr(
                path,
                format!("`{name}` needs every field; missing {}", missing.join(", ")),
            ));
        }
        Ok(())
    }

    fn encode_json(&self, v: &Value, path: &str, out: &mut [u8]) -> Result<(), ValueError> {
        if let Some(inner) = self.newtype_inner() {
            if !v.is_object() {
                return inner.encode_json(v, path, out);
            }
        }
        match (v, self) {
            // Strings go through the text syntax (`hex:…`, quotes, `0x…`), as on the command
            // line.
            (Value::String(s), _) => self.encode_text(s, path, out),
            (Value::Number(_) | Value::Bool(_), _) => self.encode_text(&v.to_string(), path, out),
            (Value::Array(items), TypeLayout::Array { elem, len }) => {
                if items.len() != *len {
                    return Err(verr(
                        path,
                        format!(
                            "{} elements given, `{}` has {len}",
                            items.len(),
                            self.type_name()
                        ),
                    ));
                }
                let step = elem.size();
                for (i, item) in items.iter().enumerate() {
                    let p = format!("{path}[{i}]");
                    elem.encode_json(item, &p, &mut out[i * step..(i + 1) * step])?;
                }
                Ok(())
            }
            (Value::Object(obj), TypeLayout::Struct { .. }) => {
                let given = obj.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                self.encode_fields(given, path, out)
            }
            _ => Err(verr(
                path,
                format!("cannot make a `{}` of {v}", self.type_name()),
            )),
        }
    }

    fn encode_scalar(&self, s: &str, path: &str, out: &mut [u8]) -> Result<(), ValueError> {
        match self {
            TypeLayout::Int { size, signed, .. } => {
                let bytes = parse_int(s, *size, *signed).map_err(|m| verr(path, m))?;
                out.copy_from_slice(&bytes);
                Ok(())
            }
            TypeLayout::Bool => {
                out[0] = match s {
                    "true" | "1" => 1,
                    "false" | "0" => 0,
                    _ => return Err(verr(path, format!("expected true or false, got `{s}`"))),
                };
                Ok(())
            }
            TypeLayout::Float { size } => {
                let f: f64 = s
                    .parse()
                    .map_err(|_| verr(path, format!("expected a number, got `{s}`")))?;
                if *size == 4 {
                    out.copy_from_slice(&(f as f32).to_le_bytes());
                } else {
                    out.copy_from_slice(&f.to_le_bytes());
                }
                Ok(())
            }
            TypeLayout::Enum {
                name,
                size,
                signed,
                variants,
            } => {
                let bytes = match variants.iter().find(|(n, _)| n == s) {
                    Some((_, v)) => parse_int(&v.to_string(), *size, *signed),
                    None => parse_int(s, *size, *signed).map_err(|_| {
                        let names: Vec<&str> = variants.iter().map(|(n, _)| n.as_str()).collect();
                        format!(
                            "`{s}` is not a variant of `{name}` ({}) nor a number",
                            names.join(", ")
                        )
                    }),
                }
                .map_err(|m| verr(path, m))?;
                out.copy_from_slice(&bytes);
                Ok(())
            }
            _ => unreachable!("encode_scalar is only called for scalars"),
        }
    }
}

/// Bytes of an unknown type (only the size is known): `hex:…` of exactly `size` bytes, or a
/// string (plain or JSON-quoted) zero-padded to `size`.
pub fn encode_untyped(text: &str, size: usize) -> Result<Vec<u8>, ValueError> {
    if let Some(digits) = text.trim().strip_prefix("hex:") {
        let bytes = parse_hex(digits).map_err(|m| verr("", m))?;
        if bytes.len() != size {
            return Err(verr(
                "",
                format!("hex gives {} bytes, expected {size}", bytes.len()),
            ));
        }
        return Ok(bytes);
    }
    let s = unquote(text).map_err(|m| verr("", m))?;
    if s.len() > size {
        return Err(verr(
            "",
            format!(
                "string is {} bytes, expected at most {size} (shorter is zero-padded)",
                s.len()
            ),
        ));
    }
    let mut out = s.into_bytes();
    out.resize(size, 0);
    Ok(out)
}

/// Bytes as text when they are text followed by zero padding, else `hex:…`.
pub fn byte_string(bytes: &[u8]) -> String {
    let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
    let text = &bytes[..end];
    match std::str::from_utf8(text) {
        Ok(s)
            if !s.starts_with("hex:")
                && s.chars()
                    .all(|c| !c.is_control() || matches!(c, '\n' | '\r' | '\t')) =>
        {
            s.to_owned()
        }
        _ => format!("hex:{}", hex(bytes)),
    }
}

/// Lower-case hex, no separators.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex digits (spaces, `:` and `_` between bytes allowed) to bytes.
fn parse_hex(digits: &str) -> Result<Vec<u8>, String> {
    let clean: Vec<u8> = digits
        .bytes()
        .filter(|b| !matches!(b, b' ' | b':' | b'_'))
        .collect();
    if !clean.len().is_multiple_of(2) {
        return Err(format!("hex `{digits}` has an odd number of digits"));
    }
    clean
        .chunks(2)
        .map(|pair| {
            let s = std::str::from_utf8(pair).unwrap_or("??");
            u8::from_str_radix(s, 16).map_err(|_| format!("`{s}` in hex `{digits}` is not hex"))
        })
        .collect()
}

/// A JSON-quoted string decoded, or the text as is.
fn unquote(text: &str) -> Result<String, String> {
    let t = text.trim();
    if t.len() >= 2 && t.starts_with('"') && t.ends_with('"') {
        serde_json::from_str::<String>(t).map_err(|e| format!("bad quoted string {t}: {e}"))
    } else {
        Ok(text.to_owned())
    }
}

/// An integer in decimal or `0x` hex that fits `size` bytes, as little-endian bytes.
fn parse_int(s: &str, size: usize, signed: bool) -> Result<Vec<u8>, String> {
    let (neg, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let magnitude = match digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        Some(h) => u128::from_str_radix(h, 16),
        None => digits.parse::<u128>(),
    }
    .map_err(|_| format!("expected an integer (decimal or 0x hex), got `{s}`"))?;
    let bits = size as u32 * 8;
    let range = || {
        if signed {
            format!(
                "i{bits}: {} to {}",
                -(1i128 << (bits - 1).min(126)),
                (1u128 << (bits - 1)) - 1
            )
        } else {
            format!("u{bits}: 0 to {}", u128::MAX >> (128 - bits))
        }
    };
    let value: i128 = if neg {
        if !signed || magnitude > 1u128 << (bits - 1) {
            return Err(format!("{s} is out of range for {}", range()));
        }
        (magnitude as i128).wrapping_neg()
    } else {
        let max = if signed {
            (1u128 << (bits - 1)) - 1
        } else {
            u128::MAX >> (128 - bits)
        };
        if magnitude > max {
            return Err(format!("{s} is out of range for {}", range()));
        }
        magnitude as i128
    };
    Ok(value.to_le_bytes()[..size].to_vec())
}

/// An integer's value read both ways (unsigned, and sign-extended).
fn int_value(bytes: &[u8], size: usize, signed: bool) -> (u128, i128) {
    let mut buf = [0u8; 16];
    buf[..size].copy_from_slice(&bytes[..size]);
    let u = u128::from_le_bytes(buf);
    let shift = 128 - size as u32 * 8;
    let i = if signed {
        ((u << shift) as i128) >> shift
    } else {
        u as i128
    };
    (u, i)
}

fn float_value(bytes: &[u8], size: usize) -> f64 {
    if size == 4 {
        f64::from(f32::from_le_bytes(bytes[..4].try_into().expect("4 bytes")))
    } else {
        f64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"))
    }
}

/// Splits at commas outside quotes, brackets and braces; empty items are dropped.
fn split_top_level(text: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut cur = String::new();
    let (mut depth, mut quoted, mut escaped) = (0i32, false, false);
    for c in text.chars() {
        if quoted {
            quoted = escaped || c != '"';
            escaped = !escaped && c == '\\';
        } else {
            match c {
                '"' => quoted = true,
                '[' | '{' => depth += 1,
                ']' | '}' => depth -= 1,
                ',' if depth == 0 => {
                    items.push(std::mem::take(&mut cur));
                    continue;
                }
                _ => {}
            }
        }
        cur.push(c);
    }
    items.push(cur);
    items
        .into_iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Undoes bpf-linker's escaping of characters BTF names cannot hold: `_3C_` is `<`.
fn decode_name(name: &str) -> String {
    let b = name.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'_' && i + 3 < b.len() && b[i + 3] == b'_' {
            let hexpair = &name[i + 1..i + 3];
            if hexpair
                .bytes()
                .all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(&c))
            {
                if let Ok(v) = u8::from_str_radix(hexpair, 16) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The generic arguments of `Name<A, B<C>, [u8; 4]>`: `["A", "B<C>", "[u8; 4]"]`.
fn generic_args(name: &str) -> Vec<String> {
    let Some(open) = name.find('<') else {
        return Vec::new();
    };
    let Some(inner) = name[open + 1..].strip_suffix('>') else {
        return Vec::new();
    };
    let mut args = Vec::new();
    let mut cur = String::new();
    let mut depth = 0i32;
    for c in inner.chars() {
        match c {
            '<' | '[' | '(' => depth += 1,
            '>' | ']' | ')' => depth -= 1,
            ',' if depth == 0 => {
                args.push(std::mem::take(&mut cur).trim().to_owned());
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    args.push(cur.trim().to_owned());
    args.retain(|a| !a.is_empty());
    args
}

/// `a::b::Name<c::D>` → `Name<c::D>`: BTF names structs without their module path.
fn strip_path(name: &str) -> &str {
    let mut depth = 0i32;
    let mut start = 0;
    let bytes = name.as_bytes();
    for (i, &c) in bytes.iter().enumerate() {
        match c {
            b'<' | b'[' | b'(' => depth += 1,
            b'>' | b']' | b')' => depth -= 1,
            b':' if depth == 0 && bytes.get(i + 1) == Some(&b':') => start = i + 2,
            _ => {}
        }
    }
    &name[start.min(name.len())..]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u8_array(len: usize) -> TypeLayout {
        TypeLayout::Array {
            elem: Box::new(TypeLayout::primitive("u8").unwrap()),
            len,
        }
    }

    /// `struct Object { len: u32, data: [u8; 8] }` and `struct Name([u8; 6])`.
    fn object() -> TypeLayout {
        TypeLayout::Struct {
            name: "Object".into(),
            size: 12,
            fields: vec![
                Field {
                    name: "len".into(),
                    offset: 0,
                    layout: TypeLayout::index(),
                },
                Field {
                    name: "data".into(),
                    offset: 4,
                    layout: u8_array(8),
                },
            ],
        }
    }

    fn name() -> TypeLayout {
        TypeLayout::Struct {
            name: "Name".into(),
            size: 6,
            fields: vec![Field {
                name: "__0".into(),
                offset: 0,
                layout: u8_array(6),
            }],
        }
    }

    #[test]
    fn names_and_generics_decode() {
        let raw = "HashMap_3C_static_server_3A__3A_lambda_3A__3A_ObjectName_2C__20_u64_3E_";
        let name = decode_name(raw);
        assert_eq!(name, "HashMap<static_server::lambda::ObjectName, u64>");
        assert_eq!(
            generic_args(&name),
            ["static_server::lambda::ObjectName", "u64"]
        );
        assert_eq!(
            generic_args("Array<[u8; 4]>"),
            ["[u8; 4]"],
            "commas and brackets nest"
        );
        assert_eq!(strip_path("a::b::Name<c::D>"), "Name<c::D>");
        assert_eq!(decode_name("static_server"), "static_server");
    }

    #[test]
    fn structs_round_trip_through_text_and_json() {
        let t = object();
        let bytes = t.encode("len=5,data=hello").unwrap();
        assert_eq!(&bytes[..4], &5u32.to_le_bytes());
        assert_eq!(&bytes[4..], b"hello\0\0\0");
        let text = t.to_text(&bytes);
        assert_eq!(text, r#"{ len: 5, data: "hello" }"#);
        assert_eq!(t.encode(&text).unwrap(), bytes, "text reads back");
        let json = t.to_json(&bytes);
        assert_eq!(json, serde_json::json!({"len": 5, "data": "hello"}));
        assert_eq!(
            t.encode(&json.to_string()).unwrap(),
            bytes,
            "JSON reads back"
        );
        assert_eq!(
            t.encode(r#"data="a,b",len=0x10"#).unwrap()[..7],
            [16, 0, 0, 0, b'a', b',', b'b']
        );
        // Non-text bytes show as hex, which reads back too.
        let mut odd = bytes.clone();
        odd[5] = 0xff;
        let text = t.to_text(&odd);
        assert!(text.contains("data: hex:68ff6c6c6f000000"), "{text}");
        assert_eq!(t.encode(&text).unwrap(), odd);
    }

    #[test]
    fn newtypes_read_as_their_field() {
        let t = name();
        assert_eq!(t.encode("ab").unwrap(), b"ab\0\0\0\0");
        assert_eq!(t.encode(r#"{"__0": "ab"}"#).unwrap(), b"ab\0\0\0\0");
        assert_eq!(t.encode("hex:6162").unwrap(), b"ab\0\0\0\0");
        assert_eq!(t.to_text(b"ab\0\0\0\0"), r#""ab""#);
        assert_eq!(t.to_json(b"\0\0\0\0\0\0"), serde_json::json!(""));
    }

    #[test]
    fn errors_name_the_field_and_the_sizes() {
        let t = object();
        let e = t.encode("len=1,data=123456789").unwrap_err();
        assert_eq!(e.path, "data");
        assert!(
            e.message.contains("9 bytes") && e.message.contains("holds 8"),
            "{e}"
        );
        let e = t.encode("hex:00").unwrap_err();
        assert!(
            e.to_string().contains("1 bytes, `Object` is 12 bytes"),
            "{e}"
        );
        let e = t.encode("len=1").unwrap_err();
        assert!(e.to_string().contains("missing data"), "{e}");
        let e = t.encode("len=1,data=x,extra=2").unwrap_err();
        assert!(e.to_string().contains("no field `extra`"), "{e}");
        let e = t.encode("len=-1,data=x").unwrap_err();
        assert!(e.to_string().contains("out of range for u32"), "{e}");
        assert!(name().encode("toolong").is_err());
    }

    #[test]
    fn integers_parse_within_their_range() {
        assert_eq!(parse_int("255", 1, false).unwrap(), [255]);
        assert!(parse_int("256", 1, false).is_err());
        assert_eq!(parse_int("-128", 1, true).unwrap(), [0x80]);
        assert!(parse_int("-129", 1, true).is_err());
        assert!(parse_int("128", 1, true).is_err());
        assert_eq!(parse_int("0x1234", 2, false).unwrap(), [0x34, 0x12]);
        assert_eq!(
            parse_int("18446744073709551615", 8, false).unwrap(),
            [0xff; 8]
        );
        assert!(parse_int("x", 4, false).is_err());
        let i = TypeLayout::primitive("i16").unwrap();
        assert_eq!(i.to_text(&(-2i16).to_le_bytes()), "-2");
    }

    #[test]
    fn untyped_values_are_hex_or_padded_strings() {
        assert_eq!(encode_untyped("ab", 4).unwrap(), b"ab\0\0");
        assert_eq!(encode_untyped("hex:01020304", 4).unwrap(), [1, 2, 3, 4]);
        let e = encode_untyped("hex:0102", 4).unwrap_err();
        assert!(e.to_string().contains("2 bytes, expected 4"), "{e}");
        assert!(encode_untyped("abcde", 4).is_err());
        assert_eq!(byte_string(b"hi\0\0"), "hi");
        assert_eq!(byte_string(&[1, 2]), "hex:0102");
    }

    /// The static-server's types, when `cargo xtask build-ebpf` has built it.
    #[test]
    fn static_server_objects_types_come_from_btf() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/lambdas/static-server.o");
        let Ok(elf) = std::fs::read(&path) else {
            eprintln!("skipping: {} not built", path.display());
            return;
        };
        let btf = Btf::from_object(&elf).unwrap().expect("built with BTF");
        let types = btf.map_types("OBJECTS", 64, 1432, false);
        assert_eq!(types.key.as_ref().unwrap().type_name(), "ObjectName");
        assert_eq!(types.value.as_ref().unwrap().type_name(), "Object");
        // Without the seed record, the map's own declaration names the same types.
        let (k, v) = btf.declared_types("OBJECTS", false, 64, 1432);
        assert_eq!(k.unwrap().type_name(), "ObjectName");
        assert_eq!(v.unwrap().type_name(), "Object");
        // Sizes that do not match are never used.
        let wrong = btf.map_types("OBJECTS", 32, 1432, false);
        assert!(wrong.key.is_none());
    }
}
