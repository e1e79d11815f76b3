//! `lambdactl maps put-object|del-object`: static-server's objects in either layout of its
//! `OBJECTS` map, told apart by the map's key size: the normal build's one record per object
//! (the 64-byte name, then the length and up to 1,428 content bytes), or the NIC build's
//! 56-byte chunks keyed by name hash, chunk and generation
//! (`workloads::static_content::nic`).

use anyhow::{Result, bail};
use loader::maps::{MapAccess, MapError, UpdateFlags};
use workloads::static_content::NAME_MAX;
use workloads::static_content::nic::{self as layout, CHUNK, ChunkKey, GENERATION_AT};

/// Which layout a map holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Layout {
    /// One record per object: key the zero-padded name, value `len: u32` and the content.
    Record { capacity: usize },
    /// The NIC build's chunks.
    Chunks,
}

impl Layout {
    pub(crate) fn of(map: &dyn MapAccess) -> Result<Layout> {
        let spec = map.spec();
        let (key, value) = (spec.key_size as usize, spec.value_size as usize);
        if key == NAME_MAX && value > 4 {
            Ok(Layout::Record {
                capacity: value - 4,
            })
        } else if key == size_of::<ChunkKey>() && value == CHUNK {
            Ok(Layout::Chunks)
        } else {
            bail!(
                "map `{}` (key {key} B, value {value} B) is not a static-server OBJECTS map: \
                 expected a {NAME_MAX}-byte key (the normal build) or an {}-byte key and \
                 {CHUNK}-byte value (the NIC build)",
                spec.name,
                size_of::<ChunkKey>()
            )
        }
    }
}

fn padded(name: &[u8]) -> Result<[u8; NAME_MAX]> {
    if name.is_empty() || name.len() > NAME_MAX || name.contains(&0) {
        bail!(
            "an object name has 1 to {NAME_MAX} bytes and no zero byte, not {} bytes",
            name.len()
        );
    }
    let mut out = [0u8; NAME_MAX];
    out[..name.len()].copy_from_slice(name);
    Ok(out)
}

fn lookup(map: &dyn MapAccess, key: &[u8]) -> Result<Option<Vec<u8>>> {
    map.lookup(key)
        .map_err(|e| anyhow::anyhow!("{}: lookup failed: {e}", map.spec().name))
}

/// The head of the object `name` in the chunk layout: `Ok(None)` when absent; an error when
/// another name with the same hash holds the slot.
fn chunk_head(map: &dyn MapAccess, name: &[u8; NAME_MAX]) -> Result<Option<(u32, u16)>> {
    let hash = layout::name_hash(name);
    let key = |chunk| ChunkKey {
        hash,
        chunk,
        generation: 0,
    };
    let head0 = lookup(map, &key(0).to_bytes())?;
    let head1 = lookup(map, &key(1).to_bytes())?;
    let (Some(head0), Some(head1)) = (head0, head1) else {
        return Ok(None);
    };
    let mut stored = head0[..CHUNK].to_vec();
    stored.extend_from_slice(&head1[..NAME_MAX - CHUNK]);
    if stored != name[..] {
        let end = stored.iter().position(|&b| b == 0).unwrap_or(NAME_MAX);
        bail!(
            "object {:?} has the same name hash ({hash:#010x}) as the stored {:?}: the NIC \
             layout holds one of them (delete that one first)",
            String::from_utf8_lossy(name.split(|&b| b == 0).next().unwrap_or_default()),
            String::from_utf8_lossy(&stored[..end])
        );
    }
    let at = layout::LEN_AT;
    let len = u32::from_le_bytes([head1[at], head1[at + 1], head1[at + 2], head1[at + 3]]);
    let generation = u16::from_le_bytes([head1[GENERATION_AT], head1[GENERATION_AT + 1]]);
    Ok(Some((len, generation)))
}

/// Deletes the content chunks of one generation (those that exist).
fn delete_chunks(map: &dyn MapAccess, hash: u32, len: u32, generation: u16) -> Result<()> {
    for c in 0..(len as usize).div_ceil(CHUNK) {
        let key = ChunkKey {
            hash,
            chunk: layout::HEAD_CHUNKS + c as u16,
            generation,
        };
        match map.delete(&key.to_bytes()) {
            Ok(()) | Err(MapError::NotFound) => {}
            Err(e) => bail!("{}: delete failed: {e}", map.spec().name),
        }
    }
    Ok(())
}

/// Stores `content` under `name`, replacing what was there; returns a line saying how.
pub(crate) fn put(map: &dyn MapAccess, name: &[u8], content: &[u8]) -> Result<String> {
    let key = padded(name)?;
    let update = |k: &[u8], v: &[u8]| {
        map.update(k, v, UpdateFlags::Any).map_err(|e| match e {
            MapError::Full => anyhow::anyhow!(
                "{}: the map is full ({} entries)",
                map.spec().name,
                map.spec().max_entries
            ),
            other => anyhow::anyhow!("{}: update failed: {other}", map.spec().name),
        })
    };
    match Layout::of(map)? {
        Layout::Record { capacity } => {
            if content.len() > capacity {
                bail!(
                    "the content has {} bytes; the map's objects hold at most {capacity}",
                    content.len()
                );
            }
            let mut value = (content.len() as u32).to_ne_bytes().to_vec();
            value.extend_from_slice(content);
            value.resize(capacity + 4, 0);
            update(&key, &value)?;
            Ok(format!("{} bytes in one record", content.len()))
        }
        Layout::Chunks => {
            // A new generation for the content, then the head that names it (one update,
            // seen whole by the lambda), then the old generation's chunks go.
            let old = chunk_head(map, &key)?;
            let generation = old.map_or(0, |(_, g)| g.wrapping_add(1));
            let records =
                layout::records(name, content, generation).map_err(|e| anyhow::anyhow!("{e}"))?;
            let mut count = 0;
            for (k, chunk) in records {
                update(&k.to_bytes(), &chunk.data)?;
                count += 1;
            }
            if let Some((len, g)) = old {
                delete_chunks(map, layout::name_hash(&key), len, g)?;
            }
            Ok(format!(
                "{} bytes in {count} chunks of {CHUNK} (name hash {:#010x}, generation {generation})",
                content.len(),
                layout::name_hash(&key)
            ))
        }
    }
}

/// Deletes the object `name`; false when there was none.
pub(crate) fn delete(map: &dyn MapAccess, name: &[u8]) -> Result<bool> {
    let key = padded(name)?;
    let gone = |r: Result<(), MapError>| match r {
        Ok(()) => Ok(true),
        Err(MapError::NotFound) => Ok(false),
        Err(e) => bail!("{}: delete failed: {e}", map.spec().name),
    };
    match Layout::of(map)? {
        Layout::Record { .. } => gone(map.delete(&key)),
        Layout::Chunks => {
            let Some((len, generation)) = chunk_head(map, &key)? else {
                return Ok(false);
            };
            let hash = layout::name_hash(&key);
            // The head first: from then on the object is absent, whatever remains.
            for chunk in [1, 0] {
                let k = ChunkKey {
                    hash,
                    chunk,
                    generation: 0,
                };
                gone(map.delete(&k.to_bytes()))?;
            }
            delete_chunks(map, hash, len, generation)?;
            Ok(true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loader::maps::{MapSpec, MapType, VmMap};

    fn map(key: u32, value: u32) -> VmMap {
        let spec = MapSpec {
            name: "OBJECTS".into(),
            map_type: MapType::Hash,
            key_size: key,
            value_size: value,
            max_entries: 64,
            flags: 0,
        };
        VmMap::new(spec, 1).unwrap()
    }

    /// What the NIC lambda would answer for `name`, read the way it reads the map.
    fn nic_content(m: &VmMap, name: &[u8]) -> Option<Vec<u8>> {
        let key = padded(name).unwrap();
        let (len, generation) = chunk_head(m, &key).unwrap()?;
        let hash = layout::name_hash(&key);
        let mut out = Vec::new();
        for c in 0..(len as usize).div_ceil(CHUNK) {
            let k = ChunkKey {
                hash,
                chunk: layout::HEAD_CHUNKS + c as u16,
                generation,
            };
            out.extend(m.lookup(&k.to_bytes()).unwrap()?);
        }
        out.truncate(len as usize);
        Some(out)
    }

    fn entries(m: &VmMap) -> usize {
        let mut n = 0;
        let mut key = None;
        while let Some(next) = m.next_key(key.as_deref()).unwrap() {
            n += 1;
            key = Some(next);
        }
        n
    }

    #[test]
    fn both_layouts_store_replace_and_delete() {
        let normal = map(64, 1432);
        assert!(
            put(&normal, b"a.txt", b"hello")
                .unwrap()
                .contains("one record")
        );
        let value = normal.lookup(&padded(b"a.txt").unwrap()).unwrap().unwrap();
        assert_eq!(&value[..9], &[5, 0, 0, 0, b'h', b'e', b'l', b'l', b'o']);
        assert!(put(&normal, b"a.txt", &[1; 1429]).is_err());
        assert!(delete(&normal, b"a.txt").unwrap());
        assert!(!delete(&normal, b"a.txt").unwrap());

        let nic = map(8, 56);
        let big: Vec<u8> = (0..300).map(|i| i as u8).collect();
        assert!(put(&nic, b"a.txt", &big).unwrap().contains("generation 0"));
        assert_eq!(nic_content(&nic, b"a.txt").unwrap(), big);
        assert_eq!(entries(&nic), 2 + 6);
        // Replaced: a new generation, the old chunks gone.
        assert!(
            put(&nic, b"a.txt", b"short")
                .unwrap()
                .contains("generation 1")
        );
        assert_eq!(nic_content(&nic, b"a.txt").unwrap(), b"short");
        assert_eq!(entries(&nic), 2 + 1);
        assert!(put(&nic, b"b", b"").is_ok());
        assert_eq!(nic_content(&nic, b"b").unwrap(), b"");
        assert!(delete(&nic, b"a.txt").unwrap());
        assert_eq!(nic_content(&nic, b"a.txt"), None);
        assert!(!delete(&nic, b"a.txt").unwrap());
        assert_eq!(entries(&nic), 2);
        assert!(put(&nic, b"a", &[0; 1429]).is_err());
        assert!(put(&nic, &[b'x'; 65], b"").is_err());
        assert!(Layout::of(&map(4, 8)).is_err());
    }

    #[test]
    fn a_colliding_name_is_refused() {
        let nic = map(8, 56);
        let mut seen = std::collections::HashMap::new();
        let (a, b) = (0u32..)
            .find_map(|i| {
                let name = format!("c{i:x}").into_bytes();
                let hash = layout::name_hash(&padded(&name).unwrap());
                seen.insert(hash, name.clone()).map(|other| (other, name))
            })
            .unwrap();
        put(&nic, &a, b"first").unwrap();
        let err = put(&nic, &b, b"second").unwrap_err().to_string();
        assert!(err.contains("same name hash"), "{err}");
        assert_eq!(nic_content(&nic, &a).unwrap(), b"first");
    }
}
