//! Upgrades and rollbacks of an attached lambda: a new program takes over the pinned link in
//! one `BPF_LINK_UPDATE`, on the same pinned maps, so the state carries over and no packet
//! meets an interface without a program.
//!
//! The steps of [`Host::upgrade`], and why they come in this order:
//!
//! 1. [`Host::prepare_upgrade`] reads the record, checks the link is live, parses the new
//!    object and compares every map it shares (by name) with the maps pinned for the interface
//!    against the *kernel's* view of the pinned map: aya reuses a pinned map without checking it,
//!    so a mismatch found later would run the new code on state of another shape. Nothing is
//!    loaded until this passes, so a refusal leaves the running lambda untouched.
//! 2. The caller runs our verifier on the new object with the plan's parameters.
//! 3. [`Host::upgrade`] loads it, reusing the pinned maps and creating (and seeding) only the
//!    new ones, pins the running program as `previous` (so `rollback` can bring it back without
//!    reloading or re-verifying anything), and swaps the link's program with `BPF_F_REPLACE`:
//!    the kernel swaps only if the link still runs the program we checked, so two upgrades at
//!    once cannot silently overwrite each other.
//! 4. The record is rewritten with the replaced version in [`AttachmentRecord::previous`]; if
//!    that fails the swap is undone.
//!
//! Maps the new version no longer uses stay pinned (their state kept for a rollback, or a later
//! version that uses them again) unless pruning is asked for.

use std::{
    fs, io,
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use aya::{EbpfLoader, programs::ProgramInfo};
use serde::{Deserialize, Serialize};

use super::{
    AttachmentRecord, Globals, Host, KernelError, LambdaParams, PinnedMap, check_privileges,
    error::{aya_err, io_err, is_permission},
    ifindex, load_maps, load_xdp, open_pinned, read_object, read_record, seed_map,
    sys::{bpf_syscall, obj_pin, pinned_link_state},
    write_record,
};
use crate::{image::LambdaImage, maps::KernelMap};

/// Name of the pin (in the attachment directory) of the replaced version's program.
const PREVIOUS_PIN: &str = "previous";
/// Where that pin is made before the swap, renamed over [`PREVIOUS_PIN`] once the swap is done.
/// (No dot: bpffs refuses names with one, EPERM.)
const PREVIOUS_PIN_TMP: &str = "previous-next";

/// The version an upgrade (or rollback) replaced, kept in the record for `rollback`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousVersion {
    pub object: PathBuf,
    pub lambda: String,
    pub program: String,
    /// The kernel's id of its program, still loaded (pinned as `previous`).
    pub program_id: u32,
    pub port: u16,
    pub lambda_id: Option<u32>,
    pub maps: Vec<PinnedMap>,
    /// When it had been attached (or upgraded to), seconds since the Unix epoch.
    pub attached_at: u64,
    /// When it was replaced, seconds since the Unix epoch.
    pub replaced_at: u64,
}

/// A checked upgrade, ready for [`Host::upgrade`]: the new object is parsed and every map it
/// shares with the pinned ones matches. Nothing has been loaded yet.
#[derive(Debug)]
pub struct UpgradePlan {
    iface: String,
    object: PathBuf,
    bytes: Vec<u8>,
    image: LambdaImage,
    record: AttachmentRecord,
    params: LambdaParams,
    /// The new object's maps that are pinned already (reused, state kept).
    shared: Vec<String>,
}

impl UpgradePlan {
    /// The port and lambda id the new version will serve (the running one's unless overridden):
    /// what the verifier should check it with.
    pub fn params(&self) -> &LambdaParams {
        &self.params
    }

    /// The running attachment.
    pub fn running(&self) -> &AttachmentRecord {
        &self.record
    }

    /// Maps the new version shares with the pinned ones: reused with their contents.
    pub fn shared_maps(&self) -> &[String] {
        &self.shared
    }
}

/// The result of [`Host::upgrade`] and [`Host::rollback`].
#[derive(Clone, Debug)]
pub struct Upgraded {
    /// The new record (its `previous` is the version just replaced).
    pub record: AttachmentRecord,
    /// Pinned maps the running version does not use, kept.
    pub kept: Vec<PathBuf>,
    /// Pinned maps the running version does not use, removed (`prune`).
    pub pruned: Vec<PathBuf>,
    /// Things the caller should tell the user.
    pub notes: Vec<String>,
}

impl Host {
    /// The attachment record of `iface`, or [`KernelError::NotAttached`].
    pub fn record(&self, iface: &str) -> Result<AttachmentRecord, KernelError> {
        let path = self.record_path(iface);
        if !path.exists() {
            return Err(KernelError::NotAttached {
                iface: iface.to_owned(),
            });
        }
        read_record(&path)
    }

    /// Checks that `object` can replace the lambda on `iface` keeping its state: every map the
    /// object shares by name with the maps pinned for `iface` must have the same type, key size
    /// and value size, and at least as many entries. Loads nothing.
    ///
    /// `port` and `lambda_id` override the running lambda's; `None` keeps them.
    pub fn prepare_upgrade(
        &self,
        object: &Path,
        iface: &str,
        port: Option<u16>,
        lambda_id: Option<u32>,
    ) -> Result<UpgradePlan, KernelError> {
        let record = self.live_record(iface)?;
        let bytes = read_object(object)?;
        let mut image = LambdaImage::parse(&bytes, &object.display().to_string())?;
        image.name = object
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "lambda".to_owned());
        let shared = check_shared_maps(&self.maps_dir(iface), &image)?;
        let params = LambdaParams {
            port: port.unwrap_or(record.port),
            lambda_id: lambda_id.or(record.lambda_id),
        };
        Ok(UpgradePlan {
            iface: iface.to_owned(),
            object: object.to_owned(),
            bytes,
            image,
            record,
            params,
            shared,
        })
    }

    /// Loads the planned object on the pinned maps and swaps it in on the pinned link in one
    /// `BPF_LINK_UPDATE`. The replaced program stays loaded (pinned as `previous`) for
    /// [`Host::rollback`]. With `prune`, pinned maps the new version does not use are removed.
    pub fn upgrade(&self, plan: UpgradePlan, prune: bool) -> Result<Upgraded, KernelError> {
        let UpgradePlan {
            iface,
            object,
            bytes,
            image,
            record,
            params,
            shared: _,
        } = plan;
        check_privileges(&format!("upgrading the lambda on {iface}"))?;
        let maps_dir = self.maps_dir(&iface);
        let mut notes = Vec::new();

        let mut maps = Vec::new();
        for def in &image.maps {
            let pin = maps_dir.join(&def.name);
            let reused = pin.exists();
            let (max_entries, note) = if reused {
                // A pinned map keeps the size it was created with.
                let real = KernelMap::from_pin(&pin)
                    .map(|m| crate::maps::MapAccess::spec(&m).max_entries)
                    .unwrap_or(def.max_entries);
                let note = (real != def.max_entries).then(|| {
                    format!(
                        "map {} keeps its {real} entries (the new object asks for {}; a pinned map cannot grow)",
                        def.name, def.max_entries
                    )
                });
                (real, note)
            } else {
                (def.max_entries, None)
            };
            notes.extend(note);
            maps.push(PinnedMap {
                max_entries,
                ..PinnedMap::of(def, pin, reused)
            });
        }

        let result = self.load_and_swap(
            &iface, &object, &bytes, &image, &record, &params, &mut maps, &mut notes,
        );
        if result.is_err() {
            // Maps this attempt created are not in use by anything: remove their pins so a
            // retry creates (and seeds) them afresh.
            for map in maps.iter().filter(|m| !m.reused) {
                let _ = fs::remove_file(&map.pin);
            }
        }
        let record = result?;
        let (kept, pruned) = self.unused_maps(&iface, &record.maps, prune)?;
        Ok(Upgraded {
            record,
            kept,
            pruned,
            notes,
        })
    }

    #[allow(clippy::too_many_arguments)] // one caller; the pieces of a destructured plan
    fn load_and_swap(
        &self,
        iface: &str,
        object: &Path,
        bytes: &[u8],
        image: &LambdaImage,
        running: &AttachmentRecord,
        params: &LambdaParams,
        maps: &mut [PinnedMap],
        notes: &mut Vec<String>,
    ) -> Result<AttachmentRecord, KernelError> {
        let globals = Globals::new(params);
        let mut loader = EbpfLoader::new();
        globals.apply(&mut loader, image, notes);
        for map in maps.iter() {
            loader.map_pin_path(map.name.as_str(), map.pin.clone());
        }
        let mut ebpf = load_maps(&mut loader, bytes)?;
        for map in maps.iter_mut().filter(|m| !m.reused) {
            map.seeded = seed_map(&ebpf, image, &map.name)?;
        }
        for map in maps.iter().filter(|m| m.reused) {
            if image.seed(&map.name).is_some() {
                notes.push(format!(
                    "map {} reused: kept its contents, seed not applied",
                    map.name
                ));
            }
        }
        let program_name = image.xdp_program().name.clone();
        let program = load_xdp(&mut ebpf, &program_name)?;
        let new_fd = program
            .fd()
            .map_err(|e| aya_err("reading the new program's fd", e))?
            .as_fd()
            .try_clone_to_owned()
            .map_err(io_err("duplicating the program fd of", object))?;
        let new_id = program
            .info()
            .map_err(|e| aya_err("reading program info", e))?
            .id();

        let replaced_id = self.swap(iface, running, new_fd.as_fd(), new_id)?;
        let now = now();
        let record = AttachmentRecord {
            object: fs::canonicalize(object).unwrap_or_else(|_| object.to_owned()),
            lambda: image.name.clone(),
            program: program_name,
            program_id: new_id,
            port: params.port,
            lambda_id: params.lambda_id,
            maps: maps.to_vec(),
            attached_at: now,
            previous: Some(previous_of(running, replaced_id, now)),
            ..running.clone()
        };
        self.commit(iface, &record, new_fd.as_fd(), replaced_id)?;
        // `ebpf` closes our fds on drop: the link now holds the program, the pins the maps.
        drop(ebpf);
        Ok(record)
    }

    /// Brings back the version the last upgrade (or rollback) replaced, by swapping its
    /// still-loaded program in on the link. The maps are the pinned ones it used before; the
    /// version rolled back from becomes the previous one, so a second rollback undoes the
    /// first. One level of history.
    pub fn rollback(&self, iface: &str) -> Result<Upgraded, KernelError> {
        let running = self.live_record(iface)?;
        let Some(previous) = running.previous.clone() else {
            return Err(KernelError::NoPreviousVersion {
                iface: iface.to_owned(),
            });
        };
        check_privileges(&format!("rolling back the lambda on {iface}"))?;
        let unavailable = |reason: String| KernelError::PreviousUnavailable {
            iface: iface.to_owned(),
            program_id: previous.program_id,
            object: previous.object.clone(),
            reason,
        };
        let pin = self.attachment_dir(iface).join(PREVIOUS_PIN);
        let prev_fd = open_pinned(&pin)
            .map_err(|e| unavailable(format!("its program pin {}: {e}", pin.display())))?;
        let pinned_id = ProgramInfo::from_pin(&pin)
            .map_err(|e| unavailable(format!("reading {}: {e}", pin.display())))?
            .id();
        if pinned_id != previous.program_id {
            return Err(unavailable(format!(
                "{} holds program {pinned_id}, not the recorded one",
                pin.display()
            )));
        }
        // The old program still refers to the maps it was loaded with; if one of them is no
        // longer pinned (pruned), it would run on state nobody can see or detach.
        if let Some(gone) = previous.maps.iter().find(|m| !m.pin.exists()) {
            return Err(unavailable(format!(
                "map {} it used is no longer pinned (removed by --prune)",
                gone.name
            )));
        }

        let replaced_id = self.swap(iface, &running, prev_fd.as_fd(), previous.program_id)?;
        let now = now();
        let record = AttachmentRecord {
            object: previous.object.clone(),
            lambda: previous.lambda.clone(),
            program: previous.program.clone(),
            program_id: previous.program_id,
            port: previous.port,
            lambda_id: previous.lambda_id,
            maps: previous
                .maps
                .iter()
                .map(|m| PinnedMap {
                    reused: true,
                    seeded: 0,
                    ..m.clone()
                })
                .collect(),
            attached_at: now,
            previous: Some(previous_of(&running, replaced_id, now)),
            ..running.clone()
        };
        self.commit(iface, &record, prev_fd.as_fd(), replaced_id)?;
        let (kept, pruned) = self.unused_maps(iface, &record.maps, false)?;
        Ok(Upgraded {
            record,
            kept,
            pruned,
            notes: Vec::new(),
        })
    }

    /// The record of `iface`, checked to have a live link on this interface.
    fn live_record(&self, iface: &str) -> Result<AttachmentRecord, KernelError> {
        let record = self.record(iface)?;
        let not_live = |reason: String| KernelError::NotLive {
            iface: iface.to_owned(),
            reason,
        };
        if record.mode == super::ModeUsed::Hw {
            // The swap loads the new version on the host (aya cannot bind it to the device),
            // which an offloaded link cannot take.
            return Err(KernelError::OffloadedUpgrade {
                iface: iface.to_owned(),
            });
        }
        let index = ifindex(iface)?;
        match pinned_link_state(&record.link_pin) {
            Err(e) if is_permission(e.raw_os_error()) => {
                Err(io_err("opening the link pinned at", &record.link_pin)(e))
            }
            Err(e) => Err(not_live(format!(
                "cannot open the pinned link {}: {e}",
                record.link_pin.display()
            ))),
            Ok(state) if state.ifindex != index => Err(not_live(format!(
                "the link is on ifindex {}, the interface is {index}",
                state.ifindex
            ))),
            Ok(_) => Ok(record),
        }
    }

    /// Pins the program the link runs now as `previous-next`, then swaps `new` in, on the
    /// condition that the link still runs that program. Returns the replaced program's id.
    fn swap(
        &self,
        iface: &str,
        running: &AttachmentRecord,
        new: BorrowedFd<'_>,
        new_id: u32,
    ) -> Result<u32, KernelError> {
        let link_pin = &running.link_pin;
        let link = open_pinned(link_pin).map_err(io_err("opening the link pinned at", link_pin))?;
        let state =
            pinned_link_state(link_pin).map_err(io_err("reading the link pinned at", link_pin))?;
        if state.program_id == new_id {
            // Rolling back onto what already runs would pin it as its own previous version.
            return Err(KernelError::ConcurrentChange {
                iface: iface.to_owned(),
                expected: running.program_id,
                found: state.program_id,
            });
        }
        let current = prog_fd_by_id(state.program_id).map_err(|e| {
            aya_err(
                format!("opening the running program {}", state.program_id),
                e,
            )
        })?;
        let tmp = self.attachment_dir(iface).join(PREVIOUS_PIN_TMP);
        let _ = fs::remove_file(&tmp);
        obj_pin(current.as_fd(), &tmp).map_err(io_err("pinning the running program at", &tmp))?;
        if let Err(e) = link_update(link.as_fd(), new, Some(current.as_fd())) {
            let _ = fs::remove_file(&tmp);
            if e.raw_os_error() == Some(libc::EPERM) {
                // With BPF_F_REPLACE, EPERM means the link runs another program by now.
                let found = pinned_link_state(link_pin)
                    .map(|s| s.program_id)
                    .unwrap_or(0);
                if found != state.program_id {
                    return Err(KernelError::ConcurrentChange {
                        iface: iface.to_owned(),
                        expected: state.program_id,
                        found,
                    });
                }
            }
            return Err(aya_err(
                format!("swapping the program on {iface} (BPF_LINK_UPDATE)"),
                e,
            ));
        }
        Ok(state.program_id)
    }

    /// After a swap: keeps the replaced program as `previous` and writes `record`. If the
    /// record cannot be written, swaps the replaced program back (the record is what `ls`,
    /// `detach` and `rollback` go by) and reports the error.
    fn commit(
        &self,
        iface: &str,
        record: &AttachmentRecord,
        new: BorrowedFd<'_>,
        replaced_id: u32,
    ) -> Result<(), KernelError> {
        let dir = self.attachment_dir(iface);
        let tmp = dir.join(PREVIOUS_PIN_TMP);
        let previous = dir.join(PREVIOUS_PIN);
        let written = fs::rename(&tmp, &previous)
            .map_err(io_err("renaming the previous program's pin", &tmp))
            .and_then(|()| write_record(&self.record_path(iface), record));
        if let Err(e) = written {
            if let (Ok(link), Ok(old)) = (open_pinned(&record.link_pin), prog_fd_by_id(replaced_id))
            {
                let _ = link_update(link.as_fd(), old.as_fd(), Some(new));
            }
            return Err(e);
        }
        Ok(())
    }

    /// Pinned maps of `iface` that `in_use` does not name: removed with `prune`, else kept.
    fn unused_maps(
        &self,
        iface: &str,
        in_use: &[PinnedMap],
        prune: bool,
    ) -> Result<(Vec<PathBuf>, Vec<PathBuf>), KernelError> {
        let dir = self.maps_dir(iface);
        let mut kept = Vec::new();
        let mut pruned = Vec::new();
        let entries = fs::read_dir(&dir).map_err(io_err("reading", &dir))?;
        let mut paths = Vec::new();
        for entry in entries {
            paths.push(entry.map_err(io_err("reading", &dir))?.path());
        }
        paths.sort();
        for path in paths {
            if in_use.iter().any(|m| m.pin == path) {
                continue;
            }
            if prune {
                fs::remove_file(&path).map_err(io_err("removing", &path))?;
                pruned.push(path);
            } else {
                kept.push(path);
            }
        }
        Ok((kept, pruned))
    }
}

/// The running version as the previous one of what replaces it.
/// The names of the maps `image` shares with the maps pinned in `maps_dir`, after checking
/// each against the kernel's view of its pin (not a record's, which could be stale): same
/// type, key size and value size, and at least as many entries. Loads nothing.
pub(super) fn check_shared_maps(
    maps_dir: &Path,
    image: &LambdaImage,
) -> Result<Vec<String>, KernelError> {
    let mut shared = Vec::new();
    for def in &image.maps {
        let pin = maps_dir.join(&def.name);
        if !pin.exists() {
            continue;
        }
        let pinned = KernelMap::from_pin(&pin)
            .map_err(|e| aya_err(format!("opening the pinned map {}", pin.display()), e))?;
        let running = crate::maps::MapAccess::spec(&pinned);
        let differs =
            |field: &'static str, running: u32, new: u32| KernelError::UpgradeIncompatible {
                map: def.name.clone(),
                path: pin.clone(),
                field,
                running,
                new,
            };
        if running.map_type.raw() != def.map_type {
            return Err(differs("type", running.map_type.raw(), def.map_type));
        }
        if running.key_size != def.key_size {
            return Err(differs("key size", running.key_size, def.key_size));
        }
        if running.value_size != def.value_size {
            return Err(differs("value size", running.value_size, def.value_size));
        }
        if def.max_entries < running.max_entries {
            return Err(differs("max entries", running.max_entries, def.max_entries));
        }
        shared.push(def.name.clone());
    }
    Ok(shared)
}

fn previous_of(running: &AttachmentRecord, program_id: u32, replaced_at: u64) -> PreviousVersion {
    PreviousVersion {
        object: running.object.clone(),
        lambda: running.lambda.clone(),
        program: running.program.clone(),
        program_id,
        port: running.port,
        lambda_id: running.lambda_id,
        maps: running.maps.clone(),
        attached_at: running.attached_at,
        replaced_at,
    }
}

/// Removes the previous version's program pins from an attachment directory (for detach).
pub(super) fn remove_previous_pins(dir: &Path) -> Result<Vec<PathBuf>, KernelError> {
    let mut removed = Vec::new();
    for name in [PREVIOUS_PIN, PREVIOUS_PIN_TMP] {
        let path = dir.join(name);
        if path.exists() {
            fs::remove_file(&path).map_err(io_err("removing", &path))?;
            removed.push(path);
        }
    }
    Ok(removed)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A file descriptor for the loaded program with id `id` (BPF_PROG_GET_FD_BY_ID).
fn prog_fd_by_id(id: u32) -> io::Result<OwnedFd> {
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
    // SAFETY: attr is a valid bpf_attr prefix for BPF_PROG_GET_FD_BY_ID; it holds no pointers.
    let fd = unsafe { bpf_syscall(BPF_PROG_GET_FD_BY_ID, &attr) }?;
    // SAFETY: the kernel just returned this fd to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Replaces the program of the link `link` with `new` (BPF_LINK_UPDATE). With `expected`, only
/// if the link still runs that program (BPF_F_REPLACE; EPERM otherwise). The kernel publishes
/// the new program with one pointer store, so every packet runs either the old or the new one.
pub(super) fn link_update(
    link: BorrowedFd<'_>,
    new: BorrowedFd<'_>,
    expected: Option<BorrowedFd<'_>>,
) -> io::Result<()> {
    const BPF_LINK_UPDATE: libc::c_long = 29;
    const BPF_F_REPLACE: u32 = 1 << 2;

    #[repr(C)]
    struct LinkUpdateAttr {
        link_fd: u32,
        new_prog_fd: u32,
        flags: u32,
        old_prog_fd: u32,
    }

    let attr = LinkUpdateAttr {
        link_fd: link.as_raw_fd() as u32,
        new_prog_fd: new.as_raw_fd() as u32,
        flags: if expected.is_some() { BPF_F_REPLACE } else { 0 },
        old_prog_fd: expected.map(|fd| fd.as_raw_fd() as u32).unwrap_or(0),
    };
    // SAFETY: attr is a valid bpf_attr prefix for BPF_LINK_UPDATE; it holds no pointers.
    unsafe { bpf_syscall(BPF_LINK_UPDATE, &attr) }?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incompatible_map_error_names_map_and_difference() {
        let err = KernelError::UpgradeIncompatible {
            map: "COUNTS".into(),
            path: "/sys/fs/bpf/lnic/1/veth0/maps/COUNTS".into(),
            field: "value size",
            running: 8,
            new: 16,
        };
        let text = err.to_string();
        assert!(
            text.starts_with(
                "map COUNTS: value size 8 in the running lambda, 16 in the new object"
            ),
            "{text}"
        );
        let err = KernelError::UpgradeIncompatible {
            map: "M".into(),
            path: "/p".into(),
            field: "type",
            running: 1,
            new: 2,
        };
        assert!(
            err.to_string()
                .starts_with("map M: type hash in the running lambda, array in the new object"),
            "{err}"
        );
    }

    #[test]
    fn records_without_history_still_parse() {
        let json = r#"{"iface":"v","ifindex":1,"netns_inode":1,"mode":"skb","object":"/o",
            "lambda":"l","program":"p","program_id":1,"link_id":1,"link_pin":"/l","port":9000,
            "lambda_id":null,"maps":[],"attached_at":0}"#;
        let record: AttachmentRecord = serde_json::from_str(json).unwrap();
        assert_eq!(record.previous, None);
    }

    #[test]
    fn offloaded_attachments_are_not_upgraded_or_rolled_back() {
        let dir = std::env::temp_dir().join(format!("lnic-hw-upgrade-{}", std::process::id()));
        let host = Host {
            bpffs: dir.join("bpffs"),
            state_dir: dir.join("state"),
            netns_inode: 1,
        };
        let record = AttachmentRecord {
            iface: "nfp0".into(),
            ifindex: 9,
            netns_inode: 1,
            mode: super::super::ModeUsed::Hw,
            object: "/x/pong.o".into(),
            lambda: "pong".into(),
            program: "pong".into(),
            program_id: 1,
            link_id: 2,
            link_pin: host.link_pin("nfp0"),
            port: 9000,
            lambda_id: None,
            maps: vec![],
            attached_at: 0,
            previous: None,
        };
        super::super::write_record(&host.record_path("nfp0"), &record).unwrap();
        let err = host.rollback("nfp0").unwrap_err();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(matches!(err, KernelError::OffloadedUpgrade { .. }), "{err}");
        assert!(
            err.to_string().contains("detach and attach --mode hw"),
            "{err}"
        );
    }
}
