//! The kernel backend: load a lambda image with aya, attach it to an interface's XDP hook, pin the
//! link and maps so the lambda outlives the process, and keep a JSON record per attachment.
//!
//! Layout (per network namespace, so one interface name in two namespaces never collides):
//!
//! ```text
//! <bpffs>/lnic/<netns-inode>/<ifname>/link           pinned bpf_link (keeps the program attached)
//! <bpffs>/lnic/<netns-inode>/<ifname>/maps/<MAP>     pinned maps (state survives redeploys)
//! <state>/<netns-inode>/<ifname>.json                the attachment record
//! ```
//!
//! `<bpffs>` is `/sys/fs/bpf` unless `LNIC_BPFFS` says otherwise; `<state>` is `/run/lnic` unless
//! `LNIC_STATE_DIR` says otherwise. Everything here needs CAP_BPF + CAP_NET_ADMIN (or
//! CAP_SYS_ADMIN); [`test_run`] loads but never attaches.

use std::{
    ffi::CString,
    fmt, fs, io,
    os::fd::AsFd as _,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use aya::{
    Ebpf, EbpfError, EbpfLoader,
    maps::{Map, MapData, MapInfo},
    pin::PinError,
    programs::{ProgramError, Xdp, links::FdLink, xdp::XdpMode},
};
use serde::{Deserialize, Serialize};

use crate::image::LambdaImage;

/// Default bpffs mount point.
pub const DEFAULT_BPFFS: &str = "/sys/fs/bpf";
/// Default directory for attachment records.
pub const DEFAULT_STATE_DIR: &str = "/run/lnic";
/// Environment variable overriding [`DEFAULT_BPFFS`].
pub const ENV_BPFFS: &str = "LNIC_BPFFS";
/// Environment variable overriding [`DEFAULT_STATE_DIR`].
pub const ENV_STATE_DIR: &str = "LNIC_STATE_DIR";

/// How many trailing lines of a verifier log the short rendering keeps.
pub const VERIFIER_LOG_TAIL: usize = 25;

mod coalesced;
mod deploy;
mod error;
mod linked_load;
mod logs;
mod offload;
mod raw_run;
mod stats;
pub(crate) mod sys;
mod test_run;
mod upgrade;

pub use crate::lambda::{
    GLOBAL_LAMBDA_ID, GLOBAL_MATCH_ANY_ID, GLOBAL_PORT, LambdaParams, XdpAction,
};
pub use coalesced::{
    CoalesceBuilder, CoalesceMember, CoalescedChange, CoalescedIfaceRecord, CoalescedLambda,
    CoalescedProgram, CoalescedRecord, KERNEL_COMPLEXITY_LIMIT, MAX_USED_MAPS,
};
pub use deploy::{
    DeployRecord, Deployed, DeployedLambda, DispatcherRecord, Undeployed, check_lambda_name,
    rule_of_key,
};
pub use error::{KernelError, VerifierLog, chain};
pub use linked_load::{LoadedProgram, load_linked, verified_insns};
pub use logs::{LogLine, LogReader, format_utc, monotonic_to_realtime_offset_ns};
pub use offload::{OffloadProgram, XDP_FLAGS_HW_MODE, xdp_link_create};
pub use raw_run::{
    KernelValue, ProgramBtf, RawRunError, load_xdp_bound, load_xdp_named, load_xdp_named_with,
    load_xdp_with, max_raw_memory, run_raw_in_kernel, test_run_ns, test_run_packet, with_map_fds,
};
pub use stats::{
    BPF_STATS_SYSCTL, KernelRunStats, LambdaStats, RunTimeStats, StatsKind, stats_sysctl_enabled,
    sum_slots,
};
pub use sys::{check_privileges, ifindex, netns_inode, open_pinned};
pub use test_run::{TestRunOutcome, TestRunner, test_run};
pub use upgrade::{PreviousVersion, UpgradePlan, Upgraded};

use error::{aya_err, io_err, is_permission, os_errno};
use sys::{force_detach_link, is_bpffs, map_update, pinned_link_state};

/// Which XDP attach mode to ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// Native (driver) mode, falling back to generic (skb) mode if the driver refuses.
    Auto,
    /// Native (driver) mode only.
    Drv,
    /// Generic (skb) mode only.
    Skb,
}

/// The mode an attachment actually uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModeUsed {
    Drv,
    Skb,
    /// Offloaded to the NIC (`XDP_FLAGS_HW_MODE`), see [`Host::attach_offloaded`].
    Hw,
}

impl ModeUsed {
    pub fn name(self) -> &'static str {
        match self {
            ModeUsed::Drv => "drv",
            ModeUsed::Skb => "skb",
            ModeUsed::Hw => "hw",
        }
    }

    fn xdp_mode(self) -> XdpMode {
        match self {
            ModeUsed::Drv => XdpMode::Driver,
            ModeUsed::Skb => XdpMode::Skb,
            ModeUsed::Hw => XdpMode::Hardware,
        }
    }
}

impl fmt::Display for ModeUsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One pinned map of an attachment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinnedMap {
    pub name: String,
    pub pin: PathBuf,
    /// `hash`, `array`, …
    pub map_type: String,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    /// The pin existed before this attach and was reused (its contents were kept, not seeded).
    pub reused: bool,
    /// Seed records inserted at attach.
    pub seeded: usize,
}

impl PinnedMap {
    /// The record of `def` pinned at `pin`, not seeded yet.
    pub(crate) fn of(def: &crate::image::MapDef, pin: PathBuf, reused: bool) -> PinnedMap {
        PinnedMap {
            name: def.name.clone(),
            pin,
            map_type: def.type_name(),
            key_size: def.key_size,
            value_size: def.value_size,
            max_entries: def.max_entries,
            reused,
            seeded: 0,
        }
    }
}

/// The JSON record kept for each attachment under the state directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentRecord {
    pub iface: String,
    pub ifindex: u32,
    pub netns_inode: u64,
    pub mode: ModeUsed,
    pub object: PathBuf,
    pub lambda: String,
    pub program: String,
    pub program_id: u32,
    pub link_id: u32,
    pub link_pin: PathBuf,
    pub port: u16,
    /// `None`: the lambda answers any lambda id.
    pub lambda_id: Option<u32>,
    pub maps: Vec<PinnedMap>,
    /// Seconds since the Unix epoch.
    pub attached_at: u64,
    /// The version this one replaced (by `upgrade` or `rollback`), which `rollback` brings
    /// back: one level of history. Its program stays loaded, pinned at
    /// `<bpffs>/lnic/<netns>/<iface>/previous`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<PreviousVersion>,
}

/// The result of [`Host::attach`].
#[derive(Clone, Debug)]
pub struct Attached {
    pub record: AttachmentRecord,
    /// With [`AttachMode::Auto`] when drv mode failed: why (the attachment then uses skb).
    pub drv_fallback: Option<String>,
    /// Things the caller should tell the user (bpffs mounted, a global the object lacks, …).
    pub notes: Vec<String>,
}

/// The result of [`Host::detach`].
#[derive(Clone, Debug)]
pub struct Detached {
    pub iface: String,
    /// The record that was removed, if there was one.
    pub record: Option<AttachmentRecord>,
    /// Pins, directories and files removed.
    pub removed: Vec<PathBuf>,
}

/// How a recorded attachment compares with the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// The pinned link exists and runs the recorded program.
    Live { link_id: u32, program_id: u32 },
    /// The pinned link exists but runs another program (replaced behind our back).
    Replaced { program_id: u32 },
    /// The record has no live link behind it (pin gone, e.g. after a reboot or a bpffs remount).
    Stale { reason: String },
    /// Could not check (for example without privileges).
    Unknown { reason: String },
}

impl Liveness {
    pub fn name(&self) -> &'static str {
        match self {
            Liveness::Live { .. } => "live",
            Liveness::Replaced { .. } => "replaced",
            Liveness::Stale { .. } => "stale",
            Liveness::Unknown { .. } => "unknown",
        }
    }
}

/// One entry of [`Host::list`].
#[derive(Clone, Debug)]
pub struct Listed {
    pub record: AttachmentRecord,
    pub liveness: Liveness,
}

/// Where this host keeps pins and records, for the current network namespace.
#[derive(Clone, Debug)]
pub struct Host {
    pub bpffs: PathBuf,
    pub state_dir: PathBuf,
    pub netns_inode: u64,
}

impl Host {
    /// Paths from `LNIC_BPFFS` / `LNIC_STATE_DIR` (or the defaults) and the current netns.
    pub fn from_env() -> Result<Host, KernelError> {
        let from = |var: &str, default: &str| {
            std::env::var_os(var)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(default))
        };
        Ok(Host {
            bpffs: from(ENV_BPFFS, DEFAULT_BPFFS),
            state_dir: from(ENV_STATE_DIR, DEFAULT_STATE_DIR),
            netns_inode: netns_inode()?,
        })
    }

    fn netns_pin_dir(&self) -> PathBuf {
        self.bpffs.join("lnic").join(self.netns_inode.to_string())
    }

    /// `<bpffs>/lnic/<netns>/<iface>`.
    pub fn attachment_dir(&self, iface: &str) -> PathBuf {
        self.netns_pin_dir().join(iface)
    }

    /// `<bpffs>/lnic/<netns>/<iface>/link`.
    pub fn link_pin(&self, iface: &str) -> PathBuf {
        self.attachment_dir(iface).join("link")
    }

    /// `<bpffs>/lnic/<netns>/<iface>/maps`.
    pub fn maps_dir(&self, iface: &str) -> PathBuf {
        self.attachment_dir(iface).join("maps")
    }

    fn netns_state_dir(&self) -> PathBuf {
        self.state_dir.join(self.netns_inode.to_string())
    }

    /// `<state>/<netns>/<iface>.json`.
    pub fn record_path(&self, iface: &str) -> PathBuf {
        self.netns_state_dir().join(format!("{iface}.json"))
    }

    /// Makes sure [`Host::bpffs`] is a bpf filesystem, mounting one if it is not. Returns a note
    /// when it mounted.
    pub fn ensure_bpffs(&self) -> Result<Option<String>, KernelError> {
        let path = &self.bpffs;
        let bpffs_err = |reason: String| KernelError::Bpffs {
            path: path.clone(),
            reason,
        };
        if is_bpffs(path) {
            return Ok(None);
        }
        fs::create_dir_all(path).map_err(|e| bpffs_err(format!("cannot create directory: {e}")))?;
        let target = CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| bpffs_err("path contains NUL".into()))?;
        // SAFETY: valid C strings; a null data pointer is allowed for bpffs.
        let rc = unsafe {
            libc::mount(
                c"bpf".as_ptr(),
                target.as_ptr(),
                c"bpf".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            let e = io::Error::last_os_error();
            if is_permission(e.raw_os_error()) {
                return Err(KernelError::PermissionDenied {
                    operation: format!("mounting bpffs at {}", path.display()),
                    detail: Some(e.to_string()),
                });
            }
            return Err(bpffs_err(format!(
                "not a bpf filesystem and mounting one failed: {e}"
            )));
        }
        Ok(Some(format!(
            "{} was not a bpf filesystem: mounted bpffs there",
            path.display()
        )))
    }

    /// Loads `object`, attaches its XDP program to `iface` and pins link and maps.
    pub fn attach(
        &self,
        object: &Path,
        iface: &str,
        mode: AttachMode,
        params: &LambdaParams,
    ) -> Result<Attached, KernelError> {
        let bytes = read_object(object)?;
        let lambda = object
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "lambda".to_owned());
        let mut image = LambdaImage::parse(&bytes, &object.display().to_string())?;
        image.name = lambda;
        let ifindex = ifindex(iface)?;
        check_privileges(&format!("attaching to {iface}"))?;
        if self.dispatch_dir(iface).join("link").exists() {
            return Err(KernelError::HasDispatcher {
                iface: iface.to_owned(),
            });
        }
        if self.coalesced_dir(iface).join("link").exists() {
            return Err(KernelError::HasCoalesced {
                iface: iface.to_owned(),
            });
        }

        let mut notes = Vec::new();
        notes.extend(self.ensure_bpffs()?);

        let dir = self.attachment_dir(iface);
        let link_pin = self.link_pin(iface);
        let record_path = self.record_path(iface);
        notes.extend(self.clear_stale_attachment(iface, ifindex)?);
        let maps_dir = self.maps_dir(iface);
        fs::create_dir_all(&maps_dir).map_err(io_err("creating", &maps_dir))?;

        let mut created = Vec::new();
        let result = self.attach_pinned(
            AttachInput {
                image: &image,
                bytes: &bytes,
                object,
                iface,
                ifindex,
                mode,
                params,
                maps_dir: &maps_dir,
                link_pin: &link_pin,
                record_path: &record_path,
            },
            &mut created,
            &mut notes,
        );
        if result.is_err() {
            // Leave nothing behind that a later attach would mistake for an attachment.
            for path in created.iter().rev() {
                let _ = fs::remove_file(path);
            }
            let _ = fs::remove_file(&link_pin);
            for d in [&maps_dir, &dir, &self.netns_pin_dir()] {
                let _ = fs::remove_dir(d);
            }
        }
        let (record, drv_fallback) = result?;
        Ok(Attached {
            record,
            drv_fallback,
            notes,
        })
    }

    /// Refuses when `iface` has a live attachment; clears what is left over from an interface
    /// or namespace that is gone (netns inodes get reused), and says so.
    fn clear_stale_attachment(
        &self,
        iface: &str,
        ifindex: u32,
    ) -> Result<Option<String>, KernelError> {
        let dir = self.attachment_dir(iface);
        let link_pin = self.link_pin(iface);
        let record_path = self.record_path(iface);
        if !(link_pin.exists() || record_path.exists() || dir.exists()) {
            return Ok(None);
        }
        let live = match pinned_link_state(&link_pin) {
            Ok(state) => state.ifindex == ifindex,
            Err(e) => is_permission(e.raw_os_error()),
        };
        if live {
            return Err(KernelError::AlreadyAttached {
                iface: iface.to_owned(),
                path: link_pin,
            });
        }
        self.remove_attachment(iface)?;
        Ok(Some(format!(
            "removed a stale attachment of {iface} (its link was gone or defunct) and its map pins"
        )))
    }

    fn attach_pinned(
        &self,
        input: AttachInput<'_>,
        created: &mut Vec<PathBuf>,
        notes: &mut Vec<String>,
    ) -> Result<(AttachmentRecord, Option<String>), KernelError> {
        let AttachInput {
            image,
            bytes,
            object,
            iface,
            ifindex,
            mode,
            params,
            maps_dir,
            link_pin,
            record_path,
        } = input;

        // Which maps exist already (reused, keep their state) and which this load creates.
        let mut pinned_maps = Vec::new();
        for map in &image.maps {
            let pin = maps_dir.join(&map.name);
            let reused = pin.exists();
            if reused {
                check_pinned_map(&pin, map)?;
            } else {
                created.push(pin.clone());
            }
            pinned_maps.push(PinnedMap::of(map, pin, reused));
        }

        let globals = Globals::new(params);
        let mut loader = EbpfLoader::new();
        globals.apply(&mut loader, image, notes);
        for map in &pinned_maps {
            loader.map_pin_path(map.name.as_str(), map.pin.clone());
        }
        let mut ebpf = load_maps(&mut loader, bytes)?;

        for map in pinned_maps.iter_mut().filter(|m| !m.reused) {
            map.seeded = seed_map(&ebpf, image, &map.name)?;
        }
        for map in pinned_maps.iter().filter(|m| m.reused) {
            if image.seed(&map.name).is_some() {
                notes.push(format!(
                    "map {} reused from {}: kept its contents, seed not applied",
                    map.name,
                    map.pin.display()
                ));
            }
        }

        let program_name = image.xdp_program().name.clone();
        let program = load_xdp(&mut ebpf, &program_name)?;

        let attach = |program: &mut Xdp, used: ModeUsed| {
            program
                .attach_to_if_index(ifindex, used.xdp_mode())
                .map_err(|e| (os_errno(&e), chain(&e)))
        };
        let (link_id, used, drv_fallback) = match mode {
            AttachMode::Drv | AttachMode::Skb => {
                let used = if mode == AttachMode::Drv {
                    ModeUsed::Drv
                } else {
                    ModeUsed::Skb
                };
                match attach(program, used) {
                    Ok(id) => (id, used, None),
                    Err((errno, reason)) => {
                        return Err(attach_failed(iface, used, errno, reason));
                    }
                }
            }
            AttachMode::Auto => match attach(program, ModeUsed::Drv) {
                Ok(id) => (id, ModeUsed::Drv, None),
                Err((drv_errno, drv_reason)) => {
                    if is_permission(drv_errno) {
                        return Err(attach_failed(iface, ModeUsed::Drv, drv_errno, drv_reason));
                    }
                    match attach(program, ModeUsed::Skb) {
                        Ok(id) => (id, ModeUsed::Skb, Some(drv_reason)),
                        Err((skb_errno, skb_reason)) => {
                            if is_permission(skb_errno) {
                                return Err(attach_failed(
                                    iface,
                                    ModeUsed::Skb,
                                    skb_errno,
                                    skb_reason,
                                ));
                            }
                            return Err(KernelError::AttachFailedAuto {
                                iface: iface.to_owned(),
                                drv_reason,
                                skb_reason,
                                hint: attach_hint(skb_errno),
                            });
                        }
                    }
                }
            },
        };

        let link = program
            .take_link(link_id)
            .map_err(|e| aya_err("taking the XDP link", e))?;
        let fd_link = FdLink::try_from(link).map_err(|_| KernelError::NotALink {
            iface: iface.to_owned(),
        })?;
        let link_info = fd_link
            .info()
            .map_err(|e| aya_err("reading link info", e))?;
        let pinned = fd_link.pin(link_pin).map_err(|e| pin_err(link_pin, e))?;
        let program_id = program
            .info()
            .map_err(|e| aya_err("reading program info", e))?
            .id();

        let record = AttachmentRecord {
            iface: iface.to_owned(),
            ifindex,
            netns_inode: self.netns_inode,
            mode: used,
            object: fs::canonicalize(object).unwrap_or_else(|_| object.to_owned()),
            lambda: image.name.clone(),
            program: program_name,
            program_id,
            link_id: link_info.id(),
            link_pin: link_pin.to_owned(),
            port: params.port,
            lambda_id: params.lambda_id,
            maps: pinned_maps,
            attached_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            previous: None,
        };
        if let Err(e) = write_record(record_path, &record) {
            // Without a record the attachment is invisible to `ls`: undo it.
            if let Ok(link) = pinned.unpin() {
                drop(link);
            }
            return Err(e);
        }
        // Dropping `pinned` and `ebpf` closes our fds; the pins keep link, program and maps.
        drop(pinned);
        drop(ebpf);
        Ok((record, drv_fallback))
    }

    /// Detaches the lambda on `iface`: unpins the link (the kernel then detaches the program),
    /// removes the map pins, the attachment directories and the record.
    pub fn detach(&self, iface: &str) -> Result<Detached, KernelError> {
        let link_pin = self.link_pin(iface);
        let dir = self.attachment_dir(iface);
        let record_path = self.record_path(iface);
        if !link_pin.exists() && !record_path.exists() && !dir.exists() {
            return Err(KernelError::NotAttached {
                iface: iface.to_owned(),
            });
        }
        check_privileges(&format!("detaching from {iface}"))?;
        let record = read_record(&record_path).ok();
        let removed = self.remove_attachment(iface)?;
        Ok(Detached {
            iface: iface.to_owned(),
            record,
            removed,
        })
    }

    /// Unpins the link (detaching the program once no one else holds it) and removes map pins,
    /// directories and the record of `iface`'s attachment. Returns what it removed.
    fn remove_attachment(&self, iface: &str) -> Result<Vec<PathBuf>, KernelError> {
        let link_pin = self.link_pin(iface);
        let maps_dir = self.maps_dir(iface);
        let dir = self.attachment_dir(iface);
        let record_path = self.record_path(iface);
        let mut removed = Vec::new();
        if link_pin.exists() {
            // Detach explicitly first: removing the pin alone leaves the program attached for as
            // long as any other process holds the link open. A link that is already defunct
            // (its interface is gone) has nothing to detach.
            if let Err(e) = force_detach_link(&link_pin) {
                if is_permission(e.raw_os_error()) {
                    return Err(io_err("detaching the link pinned at", &link_pin)(e));
                }
            }
            fs::remove_file(&link_pin).map_err(io_err("unpinning", &link_pin))?;
            removed.push(link_pin);
        }
        if maps_dir.exists() {
            let entries = fs::read_dir(&maps_dir).map_err(io_err("reading", &maps_dir))?;
            for entry in entries {
                let path = entry.map_err(io_err("reading", &maps_dir))?.path();
                fs::remove_file(&path).map_err(io_err("removing", &path))?;
                removed.push(path);
            }
            fs::remove_dir(&maps_dir).map_err(io_err("removing", &maps_dir))?;
            removed.push(maps_dir);
        }
        // The previous version's program, kept for `rollback`.
        removed.extend(upgrade::remove_previous_pins(&dir)?);
        if dir.exists() {
            fs::remove_dir(&dir).map_err(io_err("removing", &dir))?;
            removed.push(dir);
        }
        let _ = fs::remove_dir(self.netns_pin_dir());
        if record_path.exists() {
            fs::remove_file(&record_path).map_err(io_err("removing", &record_path))?;
            removed.push(record_path);
        }
        let _ = fs::remove_dir(self.netns_state_dir());
        Ok(removed)
    }

    /// The attachments recorded for the current network namespace, each checked against the
    /// kernel.
    pub fn list(&self) -> Result<Vec<Listed>, KernelError> {
        let dir = self.netns_state_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("reading", &dir)(e)),
        };
        let mut listed = Vec::new();
        for entry in entries {
            let path = entry.map_err(io_err("reading", &dir))?.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let record = read_record(&path)?;
            let liveness = liveness(&record);
            listed.push(Listed { record, liveness });
        }
        listed.sort_by(|a, b| a.record.iface.cmp(&b.record.iface));
        Ok(listed)
    }
}

struct AttachInput<'a> {
    image: &'a LambdaImage,
    bytes: &'a [u8],
    object: &'a Path,
    iface: &'a str,
    ifindex: u32,
    mode: AttachMode,
    params: &'a LambdaParams,
    maps_dir: &'a Path,
    link_pin: &'a Path,
    record_path: &'a Path,
}

fn liveness(record: &AttachmentRecord) -> Liveness {
    if !record.link_pin.exists() {
        return Liveness::Stale {
            reason: format!("link pin {} is gone", record.link_pin.display()),
        };
    }
    match pinned_link_state(&record.link_pin) {
        Err(e) if is_permission(e.raw_os_error()) => Liveness::Unknown {
            reason: format!("cannot open the pinned link: {e}"),
        },
        Err(e) => Liveness::Stale {
            reason: format!("cannot open the pinned link: {e}"),
        },
        Ok(state) if state.ifindex == 0 => Liveness::Stale {
            reason: "the link is defunct (its interface is gone)".into(),
        },
        Ok(state) if state.ifindex != record.ifindex => Liveness::Stale {
            reason: format!(
                "the link is on ifindex {}, not {}",
                state.ifindex, record.ifindex
            ),
        },
        Ok(state) if state.program_id != record.program_id => Liveness::Replaced {
            program_id: state.program_id,
        },
        Ok(state) => Liveness::Live {
            link_id: state.link_id,
            program_id: state.program_id,
        },
    }
}

fn attach_hint(errno: Option<i32>) -> Option<&'static str> {
    match errno {
        Some(libc::EBUSY) | Some(libc::EEXIST) => Some(
            "the interface already has an XDP program that λ-NIC does not manage; remove it first, e.g. `ip link set dev IF xdp off`",
        ),
        Some(libc::EOPNOTSUPP) => {
            Some("the driver has no native XDP support; use --mode skb or --mode auto")
        }
        Some(libc::ERANGE) => Some("the interface MTU is too large for XDP in this mode"),
        _ => None,
    }
}

fn attach_failed(iface: &str, mode: ModeUsed, errno: Option<i32>, reason: String) -> KernelError {
    if is_permission(errno) {
        return KernelError::PermissionDenied {
            operation: format!("attaching to {iface} in {mode} mode"),
            detail: Some(reason),
        };
    }
    KernelError::AttachFailed {
        iface: iface.to_owned(),
        mode,
        reason,
        hint: attach_hint(errno),
    }
}

fn pin_err(path: &Path, err: PinError) -> KernelError {
    aya_err(format!("pinning {}", path.display()), err)
}

/// Reads an object file into a buffer with the 8-byte alignment aya's parser wants.
fn read_object(path: &Path) -> Result<Vec<u8>, KernelError> {
    fs::read(path).map_err(|source| KernelError::ReadObject {
        path: path.to_owned(),
        source,
    })
}

pub(super) fn load_maps(loader: &mut EbpfLoader<'_>, bytes: &[u8]) -> Result<Ebpf, KernelError> {
    // The ELF parser wants its input aligned to 8 bytes, which a `Vec<u8>` does not promise:
    // copy the object into u64 storage.
    let mut words = vec![0u64; bytes.len().div_ceil(8)];
    // SAFETY: `words` spans at least `bytes.len()` bytes; u8 has no alignment needs.
    let data =
        unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), bytes.len()) };
    data.copy_from_slice(bytes);
    loader.load(data).map_err(|e| match e {
        EbpfError::MapError(e) => aya_err("creating maps", e),
        other => aya_err("loading the object", other),
    })
}

pub(super) fn load_xdp<'e>(ebpf: &'e mut Ebpf, name: &str) -> Result<&'e mut Xdp, KernelError> {
    let program: &mut Xdp = ebpf
        .program_mut(name)
        .ok_or_else(|| KernelError::MissingProgram {
            program: name.to_owned(),
        })?
        .try_into()
        .map_err(|e| aya_err(format!("program `{name}`"), e))?;
    match program.load() {
        Ok(()) => Ok(program),
        Err(ProgramError::LoadError {
            io_error,
            verifier_log,
        }) => {
            let log = verifier_log.to_string();
            if log.trim().is_empty() && is_permission(io_error.raw_os_error()) {
                Err(KernelError::PermissionDenied {
                    operation: format!("loading program `{name}`"),
                    detail: Some(io_error.to_string()),
                })
            } else {
                Err(KernelError::VerifierRejected {
                    program: name.to_owned(),
                    errno: io_error,
                    log: VerifierLog::new(log),
                })
            }
        }
        Err(e) => Err(aya_err(format!("loading program `{name}`"), e)),
    }
}

/// The globals' values, kept alive for the loader that borrows them.
pub(super) struct Globals {
    port: u16,
    lambda_id: u32,
    match_any: u8,
}

impl Globals {
    fn new(params: &LambdaParams) -> Globals {
        Globals {
            port: params.port,
            lambda_id: params.lambda_id.unwrap_or(0),
            match_any: u8::from(params.lambda_id.is_none()),
        }
    }

    fn apply<'a>(
        &'a self,
        loader: &mut EbpfLoader<'a>,
        image: &LambdaImage,
        notes: &mut Vec<String>,
    ) {
        let mut set = |name: &'a str, value: aya::GlobalData<'a>, what: &str| {
            if image.global(name).is_some() {
                loader.override_global(name, value, true);
            } else {
                notes.push(format!("object has no {name} global: {what} not applied"));
            }
        };
        set(GLOBAL_PORT, (&self.port).into(), "--port");
        set(GLOBAL_LAMBDA_ID, (&self.lambda_id).into(), "--lambda-id");
        set(GLOBAL_MATCH_ANY_ID, (&self.match_any).into(), "--lambda-id");
    }
}

fn map_data(map: &Map) -> &MapData {
    match map {
        Map::Array(m)
        | Map::ArrayOfMaps(m)
        | Map::BloomFilter(m)
        | Map::CgroupArray(m)
        | Map::CgroupStorage(m)
        | Map::CgrpStorage(m)
        | Map::CpuMap(m)
        | Map::DevMap(m)
        | Map::DevMapHash(m)
        | Map::HashMap(m)
        | Map::HashOfMaps(m)
        | Map::InodeStorage(m)
        | Map::LpmTrie(m)
        | Map::LruHashMap(m)
        | Map::PerCpuArray(m)
        | Map::PerCpuCgroupStorage(m)
        | Map::PerCpuHashMap(m)
        | Map::PerCpuLruHashMap(m)
        | Map::PerfEventArray(m)
        | Map::ProgramArray(m)
        | Map::Queue(m)
        | Map::ReusePortSockArray(m)
        | Map::RingBuf(m)
        | Map::SockHash(m)
        | Map::SockMap(m)
        | Map::SkStorage(m)
        | Map::Stack(m)
        | Map::StackTraceMap(m)
        | Map::Unsupported(m)
        | Map::XskMap(m) => m,
    }
}

/// Inserts the image's seed records for `map` (BPF_ANY). Returns how many.
pub(super) fn seed_map(ebpf: &Ebpf, image: &LambdaImage, map: &str) -> Result<usize, KernelError> {
    let Some(seed) = image.seed(map) else {
        return Ok(0);
    };
    let def = image.map(map).expect("parse checks seeds name maps");
    // Per-CPU maps want one value per possible CPU; seeds carry one.
    if def.is_per_cpu() {
        return Err(KernelError::SeedUnsupported {
            map: map.to_owned(),
            reason: format!("{} maps take a value per CPU", def.type_name()),
        });
    }
    let Some(loaded) = ebpf.map(map) else {
        return Err(KernelError::SeedUnsupported {
            map: map.to_owned(),
            reason: "aya did not create it".into(),
        });
    };
    let fd = map_data(loaded).fd().as_fd();
    for (index, (key, value)) in seed.records().enumerate() {
        map_update(fd, key, value).map_err(|source| {
            if is_permission(source.raw_os_error()) {
                KernelError::PermissionDenied {
                    operation: format!("seeding map `{map}`"),
                    detail: Some(source.to_string()),
                }
            } else {
                KernelError::Seed {
                    map: map.to_owned(),
                    index,
                    source,
                }
            }
        })?;
    }
    Ok(seed.record_count())
}

/// aya reuses a pinned map without comparing it with the object's definition: do it here.
fn check_pinned_map(pin: &Path, def: &crate::image::MapDef) -> Result<(), KernelError> {
    let info =
        MapInfo::from_pin(pin).map_err(|e| aya_err(format!("opening {}", pin.display()), e))?;
    let pinned_type = info.map_type().map(|t| t as u32).unwrap_or(u32::MAX);
    for (field, pinned, expected) in [
        ("type", pinned_type, def.map_type),
        ("key size", info.key_size(), def.key_size),
        ("value size", info.value_size(), def.value_size),
        ("max entries", info.max_entries(), def.max_entries),
    ] {
        if pinned != expected {
            return Err(KernelError::MapMismatch {
                map: def.name.clone(),
                path: pin.to_owned(),
                field,
                pinned,
                expected,
            });
        }
    }
    Ok(())
}

fn write_record(path: &Path, record: &AttachmentRecord) -> Result<(), KernelError> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
    }
    let json = serde_json::to_string_pretty(record).expect("record serializes");
    let tmp = path.with_extension("json.tmp");
    fs::write(&tmp, json + "\n").map_err(io_err("writing", &tmp))?;
    fs::rename(&tmp, path).map_err(io_err("writing", path))
}

fn read_record(path: &Path) -> Result<AttachmentRecord, KernelError> {
    let text = fs::read_to_string(path).map_err(io_err("reading", path))?;
    serde_json::from_str(&text).map_err(|source| KernelError::BadRecord {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifier_log_trims_to_the_tail_and_counts_omitted_lines() {
        let log: String = (1..=40).map(|i| format!("line {i}\n")).collect();
        let log = VerifierLog::new(log);
        let short = log.trimmed(25);
        let lines: Vec<&str> = short.lines().collect();
        assert_eq!(lines.len(), 26);
        assert_eq!(lines[0], "[… 15 earlier lines omitted]");
        assert_eq!(lines[1], "line 16");
        assert_eq!(lines[25], "line 40");
        assert_eq!(log.line_count(), 40);
        assert!(log.full().starts_with("line 1\n"));

        let short_log = VerifierLog::new("a\n\nb\n");
        assert_eq!(short_log.trimmed(25), "a\nb");
    }

    #[test]
    fn xdp_actions_have_kernel_names_and_codes() {
        for code in 0..6 {
            assert_eq!(XdpAction::from_code(code).code(), code);
        }
        assert_eq!(XdpAction::from_code(3).name(), "XDP_TX");
        assert_eq!(XdpAction::from_code(9).to_string(), "unknown action 9");
    }

    #[test]
    fn layout_separates_namespaces_and_interfaces() {
        let host = Host {
            bpffs: "/sys/fs/bpf".into(),
            state_dir: "/run/lnic".into(),
            netns_inode: 4026531840,
        };
        assert_eq!(
            host.link_pin("veth0"),
            Path::new("/sys/fs/bpf/lnic/4026531840/veth0/link")
        );
        assert_eq!(
            host.maps_dir("veth0").join("OBJECTS"),
            Path::new("/sys/fs/bpf/lnic/4026531840/veth0/maps/OBJECTS")
        );
        assert_eq!(
            host.record_path("veth0"),
            Path::new("/run/lnic/4026531840/veth0.json")
        );
    }

    #[test]
    fn permission_errors_are_found_in_source_chains() {
        let err = aya::maps::MapError::CreateError {
            name: "OBJECTS".into(),
            io_error: io::Error::from_raw_os_error(libc::EPERM),
        };
        match aya_err("creating maps", err) {
            KernelError::PermissionDenied { operation, .. } => {
                assert_eq!(operation, "creating maps")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn record_round_trips_through_json() {
        let record = AttachmentRecord {
            iface: "veth0".into(),
            ifindex: 7,
            netns_inode: 1,
            mode: ModeUsed::Skb,
            object: "/x/static-server.o".into(),
            lambda: "static-server".into(),
            program: "static_server".into(),
            program_id: 42,
            link_id: 3,
            link_pin: "/sys/fs/bpf/lnic/1/veth0/link".into(),
            port: 9000,
            lambda_id: None,
            maps: vec![],
            attached_at: 0,
            previous: None,
        };
        let json = serde_json::to_string(&record).unwrap();
        assert!(json.contains("\"mode\":\"skb\""), "{json}");
        assert_eq!(
            serde_json::from_str::<AttachmentRecord>(&json).unwrap(),
            record
        );
    }
}
