//! Deploying many lambdas behind one interface's dispatcher ([`crate::dispatch`]), one at a
//! time, without touching the others.
//!
//! Layout (per network namespace, beside the `attach` layout of [`super`]; `:` cannot occur in
//! an interface name, so these never collide with an attachment directory):
//!
//! ```text
//! <bpffs>/lnic/<netns>/dispatch:<ifname>/{link, LNIC_MATCH, LNIC_SLOTS, LNIC_DSTATS}
//! <bpffs>/lnic/<netns>/lambda:<name>/prog              the lambda's program (also in its slot)
//! <bpffs>/lnic/<netns>/lambda:<name>/maps/<MAP>        its maps: each lambda has its own
//! <state>/<netns>/dispatch/<ifname>.json                the dispatcher's record
//! <state>/<netns>/deployed/<name>.json                  one record per deployed lambda
//! <state>/<netns>/deploy.lock                           serialises deploy and undeploy
//! ```
//!
//! Order matters so that no packet is routed to an empty slot: deploy fills the slot, then adds
//! the rule; undeploy removes the rule, then empties the slot. The dispatcher is installed by
//! the first deploy on an interface and removed with the last undeploy.

use std::{
    fs, io,
    os::fd::{AsFd as _, AsRawFd as _, OwnedFd},
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use aya::EbpfLoader;
use serde::{Deserialize, Serialize};

use super::error::{aya_err, io_err, is_permission};
use super::sys::{self, pinned_link_state};
use super::{
    AttachMode, Globals, Host, KernelError, ModeUsed, PinnedMap, load_maps, load_xdp, pin_err,
    read_object, seed_map,
};
use crate::dispatch::{self, MATCH_MAP, MAX_LAMBDAS, MatchKey, MatchRule, SLOTS_MAP};
use crate::image::LambdaImage;
use crate::maps::{KernelMap, MapAccess as _, UpdateFlags};

/// The record of an interface's dispatcher.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DispatcherRecord {
    pub iface: String,
    pub ifindex: u32,
    pub netns_inode: u64,
    pub mode: ModeUsed,
    pub program_id: u32,
    pub link_id: u32,
    pub link_pin: PathBuf,
    /// Instructions of the generated dispatcher.
    pub insns: usize,
    /// Seconds since the Unix epoch.
    pub installed_at: u64,
}

/// The record of one deployed lambda.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployRecord {
    pub name: String,
    pub iface: String,
    pub ifindex: u32,
    pub netns_inode: u64,
    pub object: PathBuf,
    pub program: String,
    pub program_id: u32,
    pub program_pin: PathBuf,
    /// Its index in the dispatcher's program array.
    pub slot: u32,
    pub rule: MatchRule,
    pub maps: Vec<PinnedMap>,
    /// Seconds since the Unix epoch.
    pub deployed_at: u64,
}

/// The result of [`Host::deploy`].
#[derive(Clone, Debug)]
pub struct Deployed {
    pub record: DeployRecord,
    /// Set when this deploy installed the interface's dispatcher.
    pub installed_dispatcher: Option<DispatcherRecord>,
    /// With [`AttachMode::Auto`] when the dispatcher could not use drv mode: why.
    pub drv_fallback: Option<String>,
    pub notes: Vec<String>,
}

/// The result of [`Host::undeploy`].
#[derive(Clone, Debug)]
pub struct Undeployed {
    pub record: DeployRecord,
    /// Set when this was the interface's last lambda and its dispatcher went with it.
    pub removed_dispatcher: Option<DispatcherRecord>,
}

/// One entry of [`Host::deployed`].
#[derive(Clone, Debug)]
pub struct DeployedLambda {
    pub record: DeployRecord,
    /// The dispatcher serving it is attached and the lambda's program is in its slot.
    pub live: Result<(), String>,
}

/// An exclusive `flock` on the namespace's deploy lock, released on drop.
pub(super) struct DeployLock(fs::File);

impl DeployLock {
    pub(super) fn take(path: &Path) -> Result<DeployLock, KernelError> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
        }
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(io_err("opening", path))?;
        // SAFETY: flock on an fd we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io_err("locking", path)(io::Error::last_os_error()));
        }
        Ok(DeployLock(file))
    }
}

impl Drop for DeployLock {
    fn drop(&mut self) {
        // SAFETY: as above; closing the file would release it too.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// Lambda names become directory and file names: keep them to a safe alphabet.
pub fn check_lambda_name(name: &str) -> Result<(), KernelError> {
    let bad = |reason| {
        Err(KernelError::BadLambdaName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() || name.len() > 64 {
        return bad("it must be 1 to 64 characters long");
    }
    if name.starts_with('-') {
        return bad("it must not start with `-`");
    }
    // No dots: bpffs refuses them in the names of the pins the lambda's directory holds.
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
    {
        return bad("only letters, digits, `_` and `-` are allowed");
    }
    Ok(())
}

pub(super) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn dispatch_err(
    iface: &str,
    operation: impl Into<String>,
) -> impl FnOnce(io::Error) -> KernelError {
    let iface = iface.to_owned();
    let operation = operation.into();
    move |source| {
        if is_permission(source.raw_os_error()) {
            KernelError::PermissionDenied {
                operation: format!("{operation} (dispatcher on {iface})"),
                detail: Some(source.to_string()),
            }
        } else {
            KernelError::Dispatch {
                iface,
                operation,
                source,
            }
        }
    }
}

pub(super) fn map_err(
    iface: &str,
    operation: &str,
) -> impl FnOnce(crate::maps::MapError) -> KernelError {
    let iface = iface.to_owned();
    let operation = operation.to_owned();
    move |e| KernelError::Dispatch {
        iface,
        operation,
        source: io::Error::other(e.to_string()),
    }
}

pub(super) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), KernelError> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
    }
    let json = serde_json::to_string_pretty(value).expect("records serialize");
    let tmp = path.with_extension("json.tmp");
    fs::write(&tmp, json + "\n").map_err(io_err("writing", &tmp))?;
    fs::rename(&tmp, path).map_err(io_err("writing", path))
}

pub(super) fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, KernelError> {
    let text = fs::read_to_string(path).map_err(io_err("reading", path))?;
    serde_json::from_str(&text).map_err(|source| KernelError::BadRecord {
        path: path.to_owned(),
        source,
    })
}

/// Every `*.json` record in `dir` (none when it does not exist), in file-name order: records
/// are named after their lambda, so that is name order.
pub(super) fn read_json_dir<T: for<'de> Deserialize<'de>>(
    dir: &Path,
) -> Result<Vec<T>, KernelError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("reading", dir)(e)),
    };
    let mut paths = Vec::new();
    for entry in entries {
        let path = entry.map_err(io_err("reading", dir))?.path();
        if path.extension().is_some_and(|e| e == "json") {
            paths.push(path);
        }
    }
    paths.sort();
    paths.iter().map(|path| read_json(path)).collect()
}

/// The maps of an installed dispatcher, opened from their pins.
struct DispatcherMaps {
    matches: KernelMap,
    slots: KernelMap,
}

impl Host {
    /// `<bpffs>/lnic/<netns>/dispatch:<iface>`.
    pub fn dispatch_dir(&self, iface: &str) -> PathBuf {
        self.netns_pin_dir().join(format!("dispatch:{iface}"))
    }

    /// `<bpffs>/lnic/<netns>/lambda:<name>`.
    pub fn lambda_dir(&self, name: &str) -> PathBuf {
        self.netns_pin_dir().join(format!("lambda:{name}"))
    }

    fn dispatch_record_path(&self, iface: &str) -> PathBuf {
        self.netns_state_dir()
            .join("dispatch")
            .join(format!("{iface}.json"))
    }

    pub(super) fn deployed_dir(&self) -> PathBuf {
        self.netns_state_dir().join("deployed")
    }

    pub(super) fn deploy_record_path(&self, name: &str) -> PathBuf {
        self.deployed_dir().join(format!("{name}.json"))
    }

    /// The dispatcher record of `iface`, if it has one.
    pub fn dispatcher(&self, iface: &str) -> Option<DispatcherRecord> {
        read_json(&self.dispatch_record_path(iface)).ok()
    }

    /// Every deployed lambda's record, by name.
    pub fn deploy_records(&self) -> Result<Vec<DeployRecord>, KernelError> {
        read_json_dir(&self.deployed_dir())
    }

    /// Every deployed lambda with whether it is live.
    pub fn deployed(&self) -> Result<Vec<DeployedLambda>, KernelError> {
        Ok(self
            .deploy_records()?
            .into_iter()
            .map(|record| {
                let live = self.deployed_liveness(&record);
                DeployedLambda { record, live }
            })
            .collect())
    }

    fn deployed_liveness(&self, record: &DeployRecord) -> Result<(), String> {
        let link = self.dispatch_dir(&record.iface).join("link");
        match pinned_link_state(&link) {
            Ok(state) if state.ifindex == record.ifindex => {}
            Ok(_) => return Err("the dispatcher's link is defunct or elsewhere".into()),
            Err(e) => return Err(format!("no dispatcher link ({e})")),
        }
        match sys::open_pinned(&record.program_pin).and_then(|fd| sys::prog_id(fd.as_fd())) {
            Ok(id) if id == record.program_id => Ok(()),
            Ok(id) => Err(format!("its pin now holds program {id}")),
            Err(e) => Err(format!("program pin unreadable ({e})")),
        }
    }

    /// Deploys `object` as lambda `name` behind the dispatcher of `iface`, reachable by `rule`.
    /// Installs the dispatcher when the interface has none. Other deployed lambdas keep running
    /// untouched. On failure nothing of this deploy is left behind.
    ///
    /// Several deploys may run at once: the kernel's verification of the lambda (the slow
    /// part) happens outside the namespace's deploy lock, which only guards the name
    /// reservation and the dispatcher's tables.
    pub fn deploy(
        &self,
        object: &Path,
        iface: &str,
        name: &str,
        rule: MatchRule,
        mode: AttachMode,
    ) -> Result<Deployed, KernelError> {
        check_lambda_name(name)?;
        let bytes = read_object(object)?;
        let mut image = LambdaImage::parse(&bytes, &object.display().to_string())?;
        image.name = name.to_owned();
        let ifindex = super::ifindex(iface)?;
        super::check_privileges(&format!("deploying to {iface}"))?;
        let mut notes = Vec::new();
        notes.extend(self.ensure_bpffs()?);
        let lock_path = self.netns_state_dir().join("deploy.lock");

        let reservation = {
            let _lock = DeployLock::take(&lock_path)?;
            if let Ok(existing) = read_json::<DeployRecord>(&self.deploy_record_path(name)) {
                return Err(KernelError::AlreadyDeployed {
                    name: name.to_owned(),
                    iface: existing.iface,
                });
            }
            if let Ok(attached) = super::read_record(&self.record_path(iface)) {
                return Err(KernelError::AttachedAlone {
                    iface: iface.to_owned(),
                    lambda: attached.lambda,
                });
            }
            if let Some(existing) = self.coalesced_records()?.iter().find(|r| r.name == name) {
                return Err(KernelError::AlreadyDeployed {
                    name: name.to_owned(),
                    iface: existing.iface.clone(),
                });
            }
            if self.coalesced_iface(iface).is_some() {
                return Err(KernelError::ModeConflict {
                    iface: iface.to_owned(),
                    running: "coalesced",
                    asked: "tail-call",
                });
            }
            Reservation::take(&self.deployed_dir(), name)?
        };

        let loaded = self.load_lambda(&image, &bytes, name, rule, false, &mut notes)?;

        let _lock = DeployLock::take(&lock_path)?;
        let records = self.deploy_records()?;
        let on_iface: Vec<&DeployRecord> = records.iter().filter(|r| r.iface == iface).collect();
        let opened =
            self.open_or_install_dispatcher(iface, ifindex, mode, on_iface.is_empty(), &mut notes);
        let (maps, installed, drv_fallback) = match opened {
            Ok(opened) => opened,
            Err(e) => {
                loaded.discard();
                return Err(e);
            }
        };
        let published = self.publish(
            loaded,
            Target {
                object,
                iface,
                ifindex,
                name,
                rule,
            },
            &maps,
            &on_iface,
        );
        drop(reservation);
        match published {
            Ok(record) => Ok(Deployed {
                record,
                installed_dispatcher: installed,
                drv_fallback,
                notes,
            }),
            Err(e) => {
                if installed.is_some() {
                    drop(maps);
                    let _ = self.remove_dispatcher(iface);
                }
                Err(e)
            }
        }
    }

    /// Opens the dispatcher of `iface`, or installs one when there is none (or only a stale
    /// one, e.g. after its interface was recreated).
    fn open_or_install_dispatcher(
        &self,
        iface: &str,
        ifindex: u32,
        mode: AttachMode,
        no_lambdas: bool,
        notes: &mut Vec<String>,
    ) -> Result<(DispatcherMaps, Option<DispatcherRecord>, Option<String>), KernelError> {
        let dir = self.dispatch_dir(iface);
        let live = matches!(pinned_link_state(&dir.join("link")), Ok(s) if s.ifindex == ifindex);
        if live {
            let maps = open_dispatcher_maps(&dir, iface)?;
            return Ok((maps, None, None));
        }
        if dir.exists() || self.dispatch_record_path(iface).exists() {
            self.remove_dispatcher(iface)?;
            notes.push(format!(
                "removed a stale dispatcher of {iface} (its link was gone or defunct)"
            ));
        }
        if !no_lambdas {
            notes.push(format!(
                "lambdas recorded on {iface} lost their dispatcher; they stay listed as not live until undeployed"
            ));
        }
        let (record, drv_fallback) = self.install_dispatcher(iface, ifindex, mode)?;
        let maps = match open_dispatcher_maps(&dir, iface) {
            Ok(maps) => maps,
            Err(e) => {
                let _ = self.remove_dispatcher(iface);
                return Err(e);
            }
        };
        Ok((maps, Some(record), drv_fallback))
    }

    fn install_dispatcher(
        &self,
        iface: &str,
        ifindex: u32,
        mode: AttachMode,
    ) -> Result<(DispatcherRecord, Option<String>), KernelError> {
        let dir = self.dispatch_dir(iface);
        fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
        let result = (|| {
            let mut fds: Vec<OwnedFd> = Vec::new();
            for spec in dispatch::map_specs() {
                let map = KernelMap::create(&spec).map_err(map_err(iface, "creating maps"))?;
                map.pin(dir.join(&spec.name))
                    .map_err(map_err(iface, "pinning maps"))?;
                fds.push(
                    map.fd()
                        .try_clone_to_owned()
                        .map_err(dispatch_err(iface, "duplicating a map fd"))?,
                );
            }
            let insns = dispatch::program();
            let prog = super::load_xdp_named(&super::with_map_fds(&insns, &fds), "lnic_dispatch")
                .map_err(|e| KernelError::Dispatch {
                iface: iface.to_owned(),
                operation: "loading the dispatcher".into(),
                source: io::Error::other(e.to_string()),
            })?;
            let (link, used, drv_fallback) = attach_in_mode(prog.as_fd(), iface, ifindex, mode)?;
            let link_pin = dir.join("link");
            sys::obj_pin(link.as_fd(), &link_pin)
                .map_err(dispatch_err(iface, "pinning the link"))?;
            let state =
                pinned_link_state(&link_pin).map_err(dispatch_err(iface, "reading the link"))?;
            let record = DispatcherRecord {
                iface: iface.to_owned(),
                ifindex,
                netns_inode: self.netns_inode,
                mode: used,
                program_id: state.program_id,
                link_id: state.link_id,
                link_pin,
                insns: insns.len(),
                installed_at: now_secs(),
            };
            write_json(&self.dispatch_record_path(iface), &record)?;
            Ok((record, drv_fallback))
        })();
        if result.is_err() {
            let _ = self.remove_dispatcher(iface);
        }
        result
    }

    /// Detaches and unpins the dispatcher of `iface` and removes its record.
    fn remove_dispatcher(&self, iface: &str) -> Result<(), KernelError> {
        let dir = self.dispatch_dir(iface);
        let link = dir.join("link");
        if link.exists() {
            // Detach now even if some process still holds the link open.
            let _ = sys::force_detach_link(&link);
        }
        if let Ok(entries) = fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let path = entry.path();
                fs::remove_file(&path).map_err(io_err("removing", &path))?;
            }
        }
        match fs::remove_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("removing", &dir)(e)),
        }
        // The namespace's directory goes too once nothing else of it is pinned.
        let _ = fs::remove_dir(self.netns_pin_dir());
        let record = self.dispatch_record_path(iface);
        match fs::remove_file(&record) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("removing", &record)(e)),
        }
        Ok(())
    }

    /// Loads the lambda with its maps pinned under its own directory, not yet reachable.
    /// With `replace`, the lambda's pinned maps are reused (their contents kept; the caller
    /// checked they fit) and the program is pinned beside the running one as `prog_next`;
    /// otherwise the directory starts empty.
    fn load_lambda(
        &self,
        image: &LambdaImage,
        bytes: &[u8],
        name: &str,
        rule: MatchRule,
        replace: bool,
        notes: &mut Vec<String>,
    ) -> Result<LoadedLambda, KernelError> {
        let dir = self.lambda_dir(name);
        let maps_dir = dir.join("maps");
        if dir.exists() && !replace {
            // Left over from a deploy that died half-way (the name was free): start clean.
            let _ = fs::remove_dir_all(&dir);
        }
        fs::create_dir_all(&maps_dir).map_err(io_err("creating", &maps_dir))?;
        let mut pinned_maps = Vec::new();
        let mut created: Vec<PathBuf> = Vec::new();
        let result = (|| {
            for map in &image.maps {
                let pin = maps_dir.join(&map.name);
                let reused = pin.exists();
                if !reused {
                    created.push(pin.clone());
                }
                pinned_maps.push(PinnedMap::of(map, pin, reused));
            }
            let params = rule.params();
            let globals = Globals::new(&params);
            let mut loader = EbpfLoader::new();
            globals.apply(&mut loader, image, notes);
            for map in &pinned_maps {
                loader.map_pin_path(map.name.as_str(), map.pin.clone());
            }
            let mut ebpf = load_maps(&mut loader, bytes)?;
            for map in pinned_maps.iter_mut().filter(|m| !m.reused) {
                map.seeded = seed_map(&ebpf, image, &map.name)?;
            }
            let program_name = image.xdp_program().name.clone();
            let program = load_xdp(&mut ebpf, &program_name)?;
            // bpffs refuses names with a dot (reserved for its own files).
            let program_pin = dir.join(if replace { "prog_next" } else { "prog" });
            if replace {
                let _ = fs::remove_file(&program_pin);
            }
            created.push(program_pin.clone());
            program
                .pin(&program_pin)
                .map_err(|e| pin_err(&program_pin, e))?;
            let program_id = program
                .info()
                .map_err(|e| aya_err("reading program info", e))?
                .id();
            let program_fd = program
                .fd()
                .map_err(|e| aya_err("reading the program fd", e))?
                .as_fd()
                .try_clone_to_owned()
                .map_err(io_err("duplicating the program fd of", &program_pin))?;
            Ok((program_name, program_id, program_pin, program_fd))
        })();
        match result {
            Ok((program, program_id, program_pin, program_fd)) => Ok(LoadedLambda {
                dir,
                program,
                program_id,
                program_pin,
                program_fd,
                maps: pinned_maps,
            }),
            Err(e) => {
                if replace {
                    // Only what this load added: the running version's pins stay.
                    for path in created.iter().rev() {
                        let _ = fs::remove_file(path);
                    }
                } else {
                    let _ = fs::remove_dir_all(&dir);
                }
                Err(e)
            }
        }
    }

    /// Replaces deployed lambda `name` by `object`, keeping its state: every map the new
    /// object shares by name with the lambda's pinned maps must have the same type, key and
    /// value size and at least as many entries (else nothing is loaded, and the error names
    /// the map); the new program is loaded on those maps (maps it adds are created and
    /// seeded) and takes over the lambda's slot in one program-array update, so each packet
    /// runs either the old or the new version. The rule (port and lambda id) stays.
    pub fn redeploy(&self, name: &str, object: &Path) -> Result<Deployed, KernelError> {
        check_lambda_name(name)?;
        let bytes = read_object(object)?;
        let mut image = LambdaImage::parse(&bytes, &object.display().to_string())?;
        image.name = name.to_owned();
        let path = self.deploy_record_path(name);
        if !path.exists() {
            return Err(KernelError::NotDeployed {
                name: name.to_owned(),
            });
        }
        super::check_privileges(&format!("redeploying {name}"))?;
        let mut notes = Vec::new();
        let lock_path = self.netns_state_dir().join("deploy.lock");
        let record: DeployRecord = {
            let _lock = DeployLock::take(&lock_path)?;
            read_json(&path)?
        };
        super::upgrade::check_shared_maps(&self.lambda_dir(name).join("maps"), &image)?;
        let reservation = Reservation::take(&self.deployed_dir(), name)?;
        let loaded = self.load_lambda(&image, &bytes, name, record.rule, true, &mut notes)?;
        let _lock = DeployLock::take(&lock_path)?;
        let current: DeployRecord = read_json(&path)?;
        let swapped = (|| {
            if current.program_id != record.program_id {
                return Err(KernelError::ConcurrentChange {
                    iface: current.iface.clone(),
                    expected: record.program_id,
                    found: current.program_id,
                });
            }
            let maps = open_dispatcher_maps(&self.dispatch_dir(&current.iface), &current.iface)?;
            let fd_value = (loaded.program_fd.as_raw_fd() as u32).to_le_bytes();
            // One update of the slot: the dispatcher's next tail call takes the new program.
            // (A program array takes BPF_ANY only.)
            maps.slots
                .update(&current.slot.to_le_bytes(), &fd_value, UpdateFlags::Any)
                .map_err(map_err(&current.iface, "swapping the lambda's slot"))?;
            Ok(())
        })();
        if let Err(e) = swapped {
            let _ = fs::remove_file(&loaded.program_pin);
            return Err(e);
        }
        // The slot holds the new program now; its pin takes the usual name.
        let pin = current.program_pin.clone();
        let _ = fs::remove_file(&pin);
        sys::obj_pin(loaded.program_fd.as_fd(), &pin)
            .map_err(io_err("pinning the new program at", &pin))?;
        let _ = fs::remove_file(&loaded.program_pin);
        let record = DeployRecord {
            object: fs::canonicalize(object).unwrap_or_else(|_| object.to_owned()),
            program: loaded.program.clone(),
            program_id: loaded.program_id,
            maps: loaded.maps.clone(),
            deployed_at: now_secs(),
            ..current
        };
        write_json(&path, &record)?;
        drop(reservation);
        Ok(Deployed {
            record,
            installed_dispatcher: None,
            drv_fallback: None,
            notes,
        })
    }

    /// Makes a loaded lambda reachable: checks its rule is free, fills a free slot, then adds
    /// the rule and writes the record. Called with the deploy lock held.
    fn publish(
        &self,
        loaded: LoadedLambda,
        target: Target<'_>,
        maps: &DispatcherMaps,
        on_iface: &[&DeployRecord],
    ) -> Result<DeployRecord, KernelError> {
        let Target {
            object,
            iface,
            ifindex,
            name,
            rule,
        } = target;
        let result = (|| {
            let key = rule.key();
            if maps.matches.lookup(key.bytes()).ok().flatten().is_some() {
                let holder = on_iface
                    .iter()
                    .find(|r| r.rule == rule)
                    .map_or_else(|| "(unrecorded)".to_owned(), |r| r.name.clone());
                return Err(KernelError::RuleTaken {
                    rule,
                    iface: iface.to_owned(),
                    holder,
                });
            }
            let used: std::collections::HashSet<u32> = on_iface.iter().map(|r| r.slot).collect();
            let slot = (0..MAX_LAMBDAS)
                .find(|s| !used.contains(s))
                .ok_or_else(|| KernelError::DispatcherFull {
                    iface: iface.to_owned(),
                    max: MAX_LAMBDAS,
                })?;
            let fd_value = (loaded.program_fd.as_raw_fd() as u32).to_le_bytes();
            // Slot first, rule second: a packet never meets a rule without a program.
            maps.slots
                .update(&slot.to_le_bytes(), &fd_value, UpdateFlags::Any)
                .map_err(map_err(iface, "filling the lambda's slot"))?;
            if let Err(e) =
                maps.matches
                    .update(key.bytes(), &slot.to_le_bytes(), UpdateFlags::NoExist)
            {
                let _ = maps.slots.delete(&slot.to_le_bytes());
                return Err(map_err(iface, "adding the match rule")(e));
            }
            let record = DeployRecord {
                name: name.to_owned(),
                iface: iface.to_owned(),
                ifindex,
                netns_inode: self.netns_inode,
                object: fs::canonicalize(object).unwrap_or_else(|_| object.to_owned()),
                program: loaded.program.clone(),
                program_id: loaded.program_id,
                program_pin: loaded.program_pin.clone(),
                slot,
                rule,
                maps: loaded.maps.clone(),
                deployed_at: now_secs(),
            };
            if let Err(e) = write_json(&self.deploy_record_path(name), &record) {
                let _ = maps.matches.delete(key.bytes());
                let _ = maps.slots.delete(&slot.to_le_bytes());
                return Err(e);
            }
            Ok(record)
        })();
        if result.is_err() {
            loaded.discard();
        }
        result
    }

    /// Removes lambda `name`: its rule, then its slot, then its pins and record. The last
    /// lambda on an interface takes the dispatcher with it. Other lambdas keep running.
    pub fn undeploy(&self, name: &str) -> Result<Undeployed, KernelError> {
        check_lambda_name(name)?;
        let path = self.deploy_record_path(name);
        if !path.exists() {
            return Err(KernelError::NotDeployed {
                name: name.to_owned(),
            });
        }
        super::check_privileges(&format!("undeploying {name}"))?;
        let _lock = DeployLock::take(&self.netns_state_dir().join("deploy.lock"))?;
        let record: DeployRecord = read_json(&path)?;
        let iface = record.iface.as_str();
        let dispatch_dir = self.dispatch_dir(iface);
        if let Ok(maps) = open_dispatcher_maps(&dispatch_dir, iface) {
            let key = record.rule.key();
            // Only remove the rule if it still points at this lambda's slot.
            if let Ok(Some(slot)) = maps.matches.lookup(key.bytes())
                && slot.as_slice() == record.slot.to_le_bytes()
            {
                maps.matches
                    .delete(key.bytes())
                    .map_err(map_err(iface, "removing the match rule"))?;
            }
            match maps.slots.delete(&record.slot.to_le_bytes()) {
                Ok(()) | Err(crate::maps::MapError::NotFound) => {}
                Err(e) => return Err(map_err(iface, "emptying the slot")(e)),
            }
        }
        let dir = self.lambda_dir(name);
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(io_err("removing", &dir))?;
        }
        fs::remove_file(&path).map_err(io_err("removing", &path))?;
        let last = !self
            .deploy_records()?
            .iter()
            .any(|r| r.iface == record.iface);
        let removed_dispatcher = if last {
            let dispatcher = self.dispatcher(iface);
            self.remove_dispatcher(iface)?;
            dispatcher
        } else {
            None
        };
        Ok(Undeployed {
            record,
            removed_dispatcher,
        })
    }

    /// The dispatcher's counters on `iface`, summed over CPUs, in [`dispatch::DispatchCounter`]
    /// order.
    pub fn dispatcher_counters(&self, iface: &str) -> Result<Vec<u64>, KernelError> {
        let pin = self.dispatch_dir(iface).join(dispatch::DSTATS_MAP);
        let map = KernelMap::from_pin(&pin).map_err(map_err(iface, "opening its counters"))?;
        let mut out = Vec::new();
        for counter in dispatch::DispatchCounter::ALL {
            let per_cpu = map
                .lookup(&(counter as u32).to_le_bytes())
                .map_err(map_err(iface, "reading its counters"))?
                .unwrap_or_default();
            out.push(
                per_cpu
                    .chunks_exact(8)
                    .map(|c| u64::from_le_bytes(c.try_into().expect("8-byte chunks")))
                    .sum(),
            );
        }
        Ok(out)
    }
}

/// Where a loaded lambda goes.
struct Target<'a> {
    object: &'a Path,
    iface: &'a str,
    ifindex: u32,
    name: &'a str,
    rule: MatchRule,
}

/// A lambda loaded and pinned under its name, not yet in a slot.
struct LoadedLambda {
    dir: PathBuf,
    program: String,
    program_id: u32,
    program_pin: PathBuf,
    program_fd: OwnedFd,
    maps: Vec<PinnedMap>,
}

impl LoadedLambda {
    /// Unpins everything (the kernel frees program and maps with the last reference).
    fn discard(self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// `<state>/<netns>/deployed/<name>.pending`: a name being deployed, so two deploys of one
/// name cannot both load under its directory. Holds the deploying process's pid; a
/// reservation whose process is gone is taken over. Removed on drop.
struct Reservation(PathBuf);

impl Reservation {
    fn take(dir: &Path, name: &str) -> Result<Reservation, KernelError> {
        fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
        let path = dir.join(format!("{name}.pending"));
        if let Ok(text) = fs::read_to_string(&path) {
            let alive = text
                .trim()
                .parse::<i32>()
                // SAFETY: signal 0 only checks that the process exists.
                .is_ok_and(|pid| unsafe { libc::kill(pid, 0) } == 0);
            if alive {
                return Err(KernelError::AlreadyDeployed {
                    name: name.to_owned(),
                    iface: "(a deploy of it is in progress)".into(),
                });
            }
        }
        fs::write(&path, std::process::id().to_string()).map_err(io_err("writing", &path))?;
        Ok(Reservation(path))
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// Attaches `prog` to `iface` with a new bpf_link in `mode` (auto: drv, else skb, with why drv
/// failed). Returns the link, the mode used and the drv failure when auto fell back.
pub(super) fn attach_in_mode(
    prog: std::os::fd::BorrowedFd<'_>,
    iface: &str,
    ifindex: u32,
    mode: AttachMode,
) -> Result<(OwnedFd, ModeUsed, Option<String>), KernelError> {
    let attach = |used: ModeUsed| {
        let flags = match used {
            ModeUsed::Drv => sys::XDP_FLAGS_DRV_MODE,
            ModeUsed::Skb => sys::XDP_FLAGS_SKB_MODE,
            // Neither a dispatcher nor a host coalesced program asks for it.
            ModeUsed::Hw => super::XDP_FLAGS_HW_MODE,
        };
        super::xdp_link_create(prog, ifindex, flags)
    };
    let failed = |used: ModeUsed, e: io::Error| {
        super::attach_failed(iface, used, e.raw_os_error(), e.to_string())
    };
    Ok(match mode {
        AttachMode::Drv => (
            attach(ModeUsed::Drv).map_err(|e| failed(ModeUsed::Drv, e))?,
            ModeUsed::Drv,
            None,
        ),
        AttachMode::Skb => (
            attach(ModeUsed::Skb).map_err(|e| failed(ModeUsed::Skb, e))?,
            ModeUsed::Skb,
            None,
        ),
        AttachMode::Auto => match attach(ModeUsed::Drv) {
            Ok(link) => (link, ModeUsed::Drv, None),
            Err(drv) if is_permission(drv.raw_os_error()) => {
                return Err(failed(ModeUsed::Drv, drv));
            }
            Err(drv) => match attach(ModeUsed::Skb) {
                Ok(link) => (link, ModeUsed::Skb, Some(drv.to_string())),
                Err(skb) => {
                    return Err(KernelError::AttachFailedAuto {
                        iface: iface.to_owned(),
                        drv_reason: drv.to_string(),
                        skb_reason: skb.to_string(),
                        hint: super::attach_hint(skb.raw_os_error()),
                    });
                }
            },
        },
    })
}

fn open_dispatcher_maps(dir: &Path, iface: &str) -> Result<DispatcherMaps, KernelError> {
    Ok(DispatcherMaps {
        matches: KernelMap::from_pin(dir.join(MATCH_MAP))
            .map_err(map_err(iface, "opening the match table"))?,
        slots: KernelMap::from_pin(dir.join(SLOTS_MAP))
            .map_err(map_err(iface, "opening the program array"))?,
    })
}

/// The rule a [`MATCH_MAP`] key stands for (for listings of the raw table).
pub fn rule_of_key(key: &[u8]) -> Option<MatchRule> {
    MatchKey::rule(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lambda_names_are_checked() {
        for good in ["a", "static-server", "whoami-0999", "v1_2-x"] {
            assert!(check_lambda_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".hidden",
            "v1.2",
            "-x",
            "a/b",
            "a b",
            "a:b",
            &"x".repeat(65),
        ] {
            assert!(check_lambda_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn deploy_layout_cannot_meet_an_attachment_directory() {
        let host = Host {
            bpffs: "/sys/fs/bpf".into(),
            state_dir: "/run/lnic".into(),
            netns_inode: 1,
        };
        assert_eq!(
            host.dispatch_dir("veth0"),
            Path::new("/sys/fs/bpf/lnic/1/dispatch:veth0")
        );
        assert_eq!(
            host.lambda_dir("web"),
            Path::new("/sys/fs/bpf/lnic/1/lambda:web")
        );
        assert_ne!(host.attachment_dir("veth0"), host.dispatch_dir("veth0"));
    }
}
