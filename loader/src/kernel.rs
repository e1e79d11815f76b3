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
    error::Error as StdError,
    ffi::CString,
    fmt, fs, io,
    os::{
        fd::{AsFd as _, AsRawFd as _, BorrowedFd},
        unix::fs::MetadataExt as _,
    },
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use aya::{
    Ebpf, EbpfError, EbpfLoader, TestRun as _, TestRunOptions,
    maps::{Map, MapData, MapInfo},
    pin::PinError,
    programs::{ProgramError, Xdp, links::FdLink, xdp::XdpMode},
};
use serde::{Deserialize, Serialize};

use crate::image::{ImageError, LambdaImage};

/// Default bpffs mount point.
pub const DEFAULT_BPFFS: &str = "/sys/fs/bpf";
/// Default directory for attachment records.
pub const DEFAULT_STATE_DIR: &str = "/run/lnic";
/// Environment variable overriding [`DEFAULT_BPFFS`].
pub const ENV_BPFFS: &str = "LNIC_BPFFS";
/// Environment variable overriding [`DEFAULT_STATE_DIR`].
pub const ENV_STATE_DIR: &str = "LNIC_STATE_DIR";

/// `.rodata` global: the UDP port the lambda serves (`u16`).
pub const GLOBAL_PORT: &str = "LNIC_PORT";
/// `.rodata` global: the lambda id the lambda answers (`u32`).
pub const GLOBAL_LAMBDA_ID: &str = "LNIC_LAMBDA_ID";
/// `.rodata` global: 1 = answer any lambda id, 0 = only [`GLOBAL_LAMBDA_ID`] (`u8`).
pub const GLOBAL_MATCH_ANY_ID: &str = "LNIC_MATCH_ANY_ID";

/// How many trailing lines of a verifier log the short rendering keeps.
pub const VERIFIER_LOG_TAIL: usize = 25;

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

/// The kernel's verifier log for a rejected program.
///
/// `Display` shows the last [`VERIFIER_LOG_TAIL`] lines and how many were omitted (the failing
/// instruction and the kernel's reason are at the end); [`VerifierLog::full`] has everything.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifierLog(String);

impl VerifierLog {
    pub fn new(log: impl Into<String>) -> VerifierLog {
        VerifierLog(log.into())
    }

    /// The whole log as the kernel wrote it.
    pub fn full(&self) -> &str {
        &self.0
    }

    /// The last `keep` non-blank lines, preceded by a count of the lines left out.
    pub fn trimmed(&self, keep: usize) -> String {
        let lines: Vec<&str> = self
            .0
            .lines()
            .map(str::trim_end)
            .filter(|l| !l.is_empty())
            .collect();
        let omitted = lines.len().saturating_sub(keep);
        let mut out = String::new();
        if omitted > 0 {
            out.push_str(&format!("[… {omitted} earlier lines omitted]\n"));
        }
        out.push_str(&lines[omitted..].join("\n"));
        out
    }

    /// Number of non-blank lines.
    pub fn line_count(&self) -> usize {
        self.0.lines().filter(|l| !l.trim().is_empty()).count()
    }
}

impl fmt::Display for VerifierLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.trimmed(VERIFIER_LOG_TAIL))
    }
}

impl fmt::Debug for VerifierLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifierLog({} lines)", self.line_count())
    }
}

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
}

impl ModeUsed {
    pub fn name(self) -> &'static str {
        match self {
            ModeUsed::Drv => "drv",
            ModeUsed::Skb => "skb",
        }
    }

    fn xdp_mode(self) -> XdpMode {
        match self {
            ModeUsed::Drv => XdpMode::Driver,
            ModeUsed::Skb => XdpMode::Skb,
        }
    }
}

impl fmt::Display for ModeUsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The values the loader writes into the lambda's `.rodata` globals before load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LambdaParams {
    /// UDP port served ([`GLOBAL_PORT`]).
    pub port: u16,
    /// `Some(id)`: answer only this lambda id; `None`: answer any ([`GLOBAL_MATCH_ANY_ID`]).
    pub lambda_id: Option<u32>,
}

impl Default for LambdaParams {
    fn default() -> Self {
        LambdaParams {
            port: lambda_ebpf::wire::DEFAULT_PORT,
            lambda_id: None,
        }
    }
}

/// Errors of the kernel backend.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error(transparent)]
    Image(#[from] ImageError),

    #[error("cannot read {}: {source}", path.display())]
    ReadObject {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error(
        "permission denied while {operation}: λ-NIC needs CAP_BPF + CAP_NET_ADMIN, or CAP_SYS_ADMIN (run as root){}",
        detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default()
    )]
    PermissionDenied {
        operation: String,
        detail: Option<String>,
    },

    #[error("no such network interface `{iface}` in this network namespace")]
    NoSuchInterface { iface: String },

    #[error("kernel verifier rejected program `{program}`:\n{log}")]
    VerifierRejected {
        program: String,
        errno: io::Error,
        log: VerifierLog,
    },

    #[error("attaching to `{iface}` in {mode} mode failed: {reason}{}", hint.map(|h| format!(" ({h})")).unwrap_or_default())]
    AttachFailed {
        iface: String,
        mode: ModeUsed,
        reason: String,
        hint: Option<&'static str>,
    },

    #[error(
        "attaching to `{iface}` failed in both modes: drv: {drv_reason}; skb: {skb_reason}{}",
        hint.map(|h| format!(" ({h})")).unwrap_or_default()
    )]
    AttachFailedAuto {
        iface: String,
        drv_reason: String,
        skb_reason: String,
        hint: Option<&'static str>,
    },

    #[error(
        "attachment on `{iface}` is not a bpf_link (aya fell back to netlink), so it cannot be pinned"
    )]
    NotALink { iface: String },

    #[error("`{iface}` already has a λ-NIC attachment ({}); run detach first", path.display())]
    AlreadyAttached { iface: String, path: PathBuf },

    #[error("`{iface}` has no λ-NIC attachment in this network namespace")]
    NotAttached { iface: String },

    #[error("bpffs at {}: {reason}", path.display())]
    Bpffs { path: PathBuf, reason: String },

    #[error("object has no program `{program}` after load")]
    MissingProgram { program: String },

    #[error(
        "pinned map {} does not match the object's `{map}`: {field} is {pinned} there, {expected} in the object (detach first, or remove the pin)",
        path.display()
    )]
    MapMismatch {
        map: String,
        path: PathBuf,
        field: &'static str,
        pinned: u32,
        expected: u32,
    },

    #[error("seeding map `{map}`: record {index}: {source}")]
    Seed {
        map: String,
        index: usize,
        #[source]
        source: io::Error,
    },

    #[error("cannot seed map `{map}`: {reason}")]
    SeedUnsupported { map: String, reason: String },

    #[error("test-run packet of {len} bytes is shorter than an Ethernet header (14)")]
    PacketTooShort { len: usize },

    #[error("{operation}: {}", chain(source.as_ref()))]
    Aya {
        operation: String,
        #[source]
        source: Box<dyn StdError + Send + Sync + 'static>,
    },

    #[error("{operation} {}: {source}", path.display())]
    Io {
        operation: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("attachment record {} is not valid: {source}", path.display())]
    BadRecord {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

impl KernelError {
    /// The full verifier log, if this is a verifier rejection.
    pub fn verifier_log(&self) -> Option<&VerifierLog> {
        match self {
            KernelError::VerifierRejected { log, .. } => Some(log),
            _ => None,
        }
    }
}

/// `a: b: c` for an error and its sources, skipping sources whose text the outer one repeats.
pub fn chain(err: &(dyn StdError + 'static)) -> String {
    let mut out = err.to_string();
    let mut next = err.source();
    while let Some(e) = next {
        let s = e.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        next = e.source();
    }
    out
}

/// The first OS error number in an error's source chain.
fn os_errno(err: &(dyn StdError + 'static)) -> Option<i32> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(code) = e
            .downcast_ref::<io::Error>()
            .and_then(io::Error::raw_os_error)
        {
            return Some(code);
        }
        next = e.source();
    }
    None
}

fn is_permission(errno: Option<i32>) -> bool {
    matches!(errno, Some(libc::EPERM) | Some(libc::EACCES))
}

fn aya_err<E: StdError + Send + Sync + 'static>(
    operation: impl Into<String>,
    err: E,
) -> KernelError {
    let operation = operation.into();
    if is_permission(os_errno(&err)) {
        return KernelError::PermissionDenied {
            operation,
            detail: Some(chain(&err)),
        };
    }
    KernelError::Aya {
        operation,
        source: Box::new(err),
    }
}

fn io_err<'a>(
    operation: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> KernelError + 'a {
    move |source| {
        if is_permission(source.raw_os_error()) {
            KernelError::PermissionDenied {
                operation: format!("{operation} {}", path.display()),
                detail: Some(source.to_string()),
            }
        } else {
            KernelError::Io {
                operation,
                path: path.to_owned(),
                source,
            }
        }
    }
}

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

        let mut notes = Vec::new();
        notes.extend(self.ensure_bpffs()?);

        let dir = self.attachment_dir(iface);
        let link_pin = self.link_pin(iface);
        let record_path = self.record_path(iface);
        if link_pin.exists() || record_path.exists() || dir.exists() {
            // A live link on this very interface means attached; anything else is left over
            // from an interface or namespace that is gone (netns inodes get reused): clear it.
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
            notes.push(format!(
                "removed a stale attachment of {iface} (its link was gone or defunct) and its map pins"
            ));
        }
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
            pinned_maps.push(PinnedMap {
                name: map.name.clone(),
                pin,
                map_type: map.type_name(),
                key_size: map.key_size,
                value_size: map.value_size,
                max_entries: map.max_entries,
                reused,
                seeded: 0,
            });
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

/// What the kernel says about a pinned XDP link.
#[derive(Clone, Copy, Debug)]
struct LinkState {
    link_id: u32,
    program_id: u32,
    /// 0 once the interface is gone (the link is then defunct).
    ifindex: u32,
}

/// Opens a pinned BPF object (BPF_OBJ_GET).
fn open_pinned(pin: &Path) -> io::Result<std::os::fd::OwnedFd> {
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
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            &attr as *const ObjGetAttr,
            size_of::<ObjGetAttr>() as u32,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Detaches a link from its hook now (BPF_LINK_DETACH), even if some other process still holds
/// a file descriptor to it: unpinning alone only detaches once the last reference is gone.
fn force_detach_link(pin: &Path) -> io::Result<()> {
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
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_LINK_DETACH,
            &attr as *const LinkDetachAttr,
            size_of::<LinkDetachAttr>() as u32,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Opens a pinned link and reads its info. aya 0.14's `LinkInfo` does not expose the XDP
/// ifindex, so this uses BPF_OBJ_GET and BPF_OBJ_GET_INFO_BY_FD directly.
fn pinned_link_state(pin: &Path) -> io::Result<LinkState> {
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    const BPF_LINK_TYPE_XDP: u32 = 6;

    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }

    let fd = open_pinned(pin)?;
    // SAFETY: a plain C struct; all-zero is valid.
    let mut info: aya_obj::generated::bpf_link_info = unsafe { std::mem::zeroed() };
    let attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: size_of::<aya_obj::generated::bpf_link_info>() as u32,
        info: &mut info as *mut _ as u64,
    };
    // SAFETY: info points at a buffer of info_len bytes that we own.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &attr as *const InfoAttr,
            size_of::<InfoAttr>() as u32,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
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

/// Copies `bytes` into storage aligned to 8 bytes (aya requires at least 4).
fn aligned(bytes: &[u8]) -> (Vec<u64>, usize) {
    let mut buf = vec![0u64; bytes.len().div_ceil(8)];
    // SAFETY: the u64 buffer has at least `bytes.len()` bytes; u8 has no alignment needs.
    let dst = unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr().cast::<u8>(), bytes.len()) };
    dst.copy_from_slice(bytes);
    (buf, bytes.len())
}

fn load_maps(loader: &mut EbpfLoader<'_>, bytes: &[u8]) -> Result<Ebpf, KernelError> {
    let (buf, len) = aligned(bytes);
    // SAFETY: `buf` holds `len` initialised bytes.
    let data = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), len) };
    loader.load(data).map_err(|e| match e {
        EbpfError::MapError(e) => aya_err("creating maps", e),
        other => aya_err("loading the object", other),
    })
}

fn load_xdp<'e>(ebpf: &'e mut Ebpf, name: &str) -> Result<&'e mut Xdp, KernelError> {
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
struct Globals {
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
fn seed_map(ebpf: &Ebpf, image: &LambdaImage, map: &str) -> Result<usize, KernelError> {
    let Some(seed) = image.seed(map) else {
        return Ok(0);
    };
    let def = image.map(map).expect("parse checks seeds name maps");
    // Per-CPU maps want one value per possible CPU; seeds carry one.
    if matches!(def.map_type, 5 | 6 | 10) {
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

/// `BPF_MAP_UPDATE_ELEM` with raw key and value bytes (aya's typed maps need Pod types).
fn map_update(fd: BorrowedFd<'_>, key: &[u8], value: &[u8]) -> io::Result<()> {
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
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_UPDATE_ELEM,
            &attr as *const MapElemAttr,
            size_of::<MapElemAttr>() as u32,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
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

fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into a zeroed struct we own.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    rc == 0 && st.f_type as i64 == BPF_FS_MAGIC
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

/// An XDP verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpAction {
    Aborted,
    Drop,
    Pass,
    Tx,
    Redirect,
    /// A return value outside the five actions (the kernel treats it as aborted).
    Other(u32),
}

impl XdpAction {
    pub fn from_code(code: u32) -> XdpAction {
        match code {
            0 => XdpAction::Aborted,
            1 => XdpAction::Drop,
            2 => XdpAction::Pass,
            3 => XdpAction::Tx,
            4 => XdpAction::Redirect,
            other => XdpAction::Other(other),
        }
    }

    pub fn code(self) -> u32 {
        match self {
            XdpAction::Aborted => 0,
            XdpAction::Drop => 1,
            XdpAction::Pass => 2,
            XdpAction::Tx => 3,
            XdpAction::Redirect => 4,
            XdpAction::Other(c) => c,
        }
    }

    /// `XDP_PASS`, `XDP_TX`, …
    pub fn name(self) -> String {
        match self {
            XdpAction::Aborted => "XDP_ABORTED".into(),
            XdpAction::Drop => "XDP_DROP".into(),
            XdpAction::Pass => "XDP_PASS".into(),
            XdpAction::Tx => "XDP_TX".into(),
            XdpAction::Redirect => "XDP_REDIRECT".into(),
            XdpAction::Other(c) => format!("unknown action {c}"),
        }
    }
}

impl fmt::Display for XdpAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// The result of [`test_run`].
#[derive(Clone, Debug)]
pub struct TestRunOutcome {
    pub program: String,
    pub action: XdpAction,
    /// The packet as the program left it.
    pub packet_out: Vec<u8>,
    /// Mean run time over the repetitions, as measured by the kernel (each repetition runs on
    /// the original packet).
    pub ns_per_run: u64,
    /// Fastest repetition.
    pub ns_min: u64,
    pub repeat: u32,
    /// `(map, records)` seeded before the run.
    pub seeded: Vec<(String, usize)>,
    pub notes: Vec<String>,
}

/// Room for the program to grow the packet (`bpf_xdp_adjust_tail`).
const TEST_RUN_HEADROOM: usize = 4096;

/// A lambda's XDP program loaded (not attached, maps not pinned, maps seeded) for
/// BPF_PROG_TEST_RUN: load once, run many packets.
pub struct TestRunner {
    ebpf: Ebpf,
    program: String,
    /// `(map, records)` seeded at load.
    pub seeded: Vec<(String, usize)>,
    pub notes: Vec<String>,
}

impl TestRunner {
    /// Parses, verifies (in the kernel) and loads the object's XDP program, and seeds its maps.
    pub fn load(
        bytes: &[u8],
        name: &str,
        params: &LambdaParams,
    ) -> Result<TestRunner, KernelError> {
        let image = LambdaImage::parse(bytes, name)?;
        check_privileges("test-running a program")?;
        let mut notes = Vec::new();
        let globals = Globals::new(params);
        let mut loader = EbpfLoader::new();
        globals.apply(&mut loader, &image, &mut notes);
        let mut ebpf = load_maps(&mut loader, bytes)?;
        let mut seeded = Vec::new();
        for map in &image.maps {
            let n = seed_map(&ebpf, &image, &map.name)?;
            if n > 0 {
                seeded.push((map.name.clone(), n));
            }
        }
        let program = image.xdp_program().name.clone();
        load_xdp(&mut ebpf, &program)?;
        Ok(TestRunner {
            ebpf,
            program,
            seeded,
            notes,
        })
    }

    /// Runs the program on `packet` `repeat` times. Action and output packet are the first
    /// run's; every run starts from `packet` (maps keep whatever earlier runs wrote).
    pub fn run(&self, packet: &[u8], repeat: u32) -> Result<TestRunOutcome, KernelError> {
        if packet.len() < 14 {
            return Err(KernelError::PacketTooShort { len: packet.len() });
        }
        let program: &Xdp = self
            .ebpf
            .program(&self.program)
            .ok_or_else(|| KernelError::MissingProgram {
                program: self.program.clone(),
            })?
            .try_into()
            .map_err(|e| aya_err(format!("program `{}`", self.program), e))?;
        // The kernel's own `repeat` runs the program again and again on the *same* buffer, so
        // every run after the first would see the previous run's output (a response, not a
        // request). Run once per repetition instead, each on the original packet, and average
        // the kernel's per-run times.
        let repeat = repeat.max(1);
        let mut first: Option<(u32, Vec<u8>)> = None;
        let mut total_ns: u128 = 0;
        let mut min_ns = u64::MAX;
        let mut out = vec![0u8; packet.len() + TEST_RUN_HEADROOM];
        for _ in 0..repeat {
            let result = program
                .test_run(TestRunOptions {
                    data_in: Some(packet),
                    data_out: Some(&mut out),
                    repeat: 1,
                    ..TestRunOptions::default()
                })
                .map_err(|e| aya_err("BPF_PROG_TEST_RUN", e))?;
            let ns = result.duration.as_nanos();
            total_ns += ns;
            min_ns = min_ns.min(ns as u64);
            if first.is_none() {
                let len = (result.data_size_out as usize).min(out.len());
                first = Some((result.return_value, out[..len].to_vec()));
            }
        }
        let (code, packet_out) = first.expect("repeat >= 1");
        Ok(TestRunOutcome {
            program: self.program.clone(),
            action: XdpAction::from_code(code),
            packet_out,
            ns_per_run: (total_ns / u128::from(repeat)) as u64,
            ns_min: min_ns,
            repeat,
            seeded: self.seeded.clone(),
            notes: self.notes.clone(),
        })
    }
}

/// Loads the image's XDP program and runs it on `packet` `repeat` times: [`TestRunner::load`]
/// then [`TestRunner::run`].
pub fn test_run(
    bytes: &[u8],
    name: &str,
    packet: &[u8],
    repeat: u32,
    params: &LambdaParams,
) -> Result<TestRunOutcome, KernelError> {
    if packet.len() < 14 {
        return Err(KernelError::PacketTooShort { len: packet.len() });
    }
    TestRunner::load(bytes, name, params)?.run(packet, repeat)
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
        };
        let json = serde_json::to_string(&record).unwrap();
        assert!(json.contains("\"mode\":\"skb\""), "{json}");
        assert_eq!(
            serde_json::from_str::<AttachmentRecord>(&json).unwrap(),
            record
        );
    }
}
