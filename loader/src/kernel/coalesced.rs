//! Coalesced deployment: every lambda deployed on an interface in coalesced mode runs inside
//! ONE program (a dispatch in code calling each lambda as a bpf-to-bpf function, no tail
//! calls), rebuilt on each deploy, replace and undeploy and swapped in with one
//! `BPF_LINK_UPDATE`, so every packet runs either the old or the new program.
//!
//! The coalescing itself (and our verifier's check of its result) is the caller's: this module
//! keeps the records, the pins and the link, and takes a [`CoalesceBuilder`] that turns the
//! interface's lambdas into a [`CoalescedProgram`] (`nic_offload` has one; the loader does not
//! depend on it).
//!
//! Layout (per network namespace, beside [`super::deploy`]'s):
//!
//! ```text
//! <bpffs>/lnic/<netns>/coalesced:<ifname>/{link, prog}   the interface's program and its link
//! <bpffs>/lnic/<netns>/lambda:<name>/maps/<MAP>          each lambda's maps, as in tail-call mode
//! <state>/<netns>/coalesced/<ifname>.json                the interface's record
//! <state>/<netns>/coalesced/lambdas/<name>.json          one record per lambda
//! <state>/<netns>/coalesced/lambdas/<name>.o             the lambda's object as deployed
//! ```
//!
//! State survives re-coalescing: a lambda's maps (its declared maps and its writable global
//! data) are pinned under its name, and the next coalesced program is loaded on the pinned
//! maps (by fd); seeds and initial values are written only when a map is first created.
//! Read-only global data (the lambdas' parameters and constants) is created afresh each time.

use std::{
    fs, io,
    os::fd::{AsFd as _, OwnedFd},
    path::{Path, PathBuf},
};

use ebpf_isa::Insn;
use serde::{Deserialize, Serialize};

use super::deploy::{
    DeployLock, attach_in_mode, map_err, now_secs, read_json, read_json_dir, write_json,
};
use super::error::io_err;
use super::sys::{self, pinned_link_state};
use super::{AttachMode, Host, KernelError, ModeUsed, PinnedMap, ProgramBtf, RawRunError};
use crate::dispatch::MatchRule;
use crate::image::LambdaImage;
use crate::link::{LinkedMap, LinkedMapKind};
use crate::maps::{KernelMap, MapAccess as _, MapSpec, MapType, UpdateFlags};
use crate::verify::Limits;

/// The kernel's limit on the maps one program uses (`MAX_USED_MAPS`).
pub const MAX_USED_MAPS: usize = 64;
/// The kernel verifier's limit on the instructions it processes for one program, all its
/// functions together (`BPF_COMPLEXITY_LIMIT_INSNS`).
pub const KERNEL_COMPLEXITY_LIMIT: u32 = 1_000_000;

/// One lambda handed to the [`CoalesceBuilder`].
#[derive(Clone, Debug)]
pub struct CoalesceMember {
    pub name: String,
    pub bytes: Vec<u8>,
    pub rule: MatchRule,
    /// The verifier limits the lambda was deployed with (the builder checks the coalesced
    /// program against them; see [`CoalescedRecord::limits`]).
    pub limits: Limits,
    /// The NIC model to lower the lambda for before coalescing (see
    /// [`CoalescedRecord::lower`]); `None`: as written.
    pub lower: Option<String>,
}

/// What a [`CoalesceBuilder`] returns: the program with its maps numbered by index. A map
/// that belongs to one lambda (its state) is named `<lambda>/<MAP>`; any other map must be
/// read-only global data (shared constants), created afresh with each program.
#[derive(Clone, Debug)]
pub struct CoalescedProgram {
    pub insns: Vec<Insn>,
    pub maps: Vec<LinkedMap>,
    /// Seed records by map index, written when the map is created.
    pub seeds: Vec<Vec<(Vec<u8>, Vec<u8>)>>,
    pub btf: Option<ProgramBtf>,
}

/// Coalesces the interface's lambdas (in deploy order) into one checked program, or says why
/// it cannot.
pub type CoalesceBuilder<'a> =
    &'a dyn Fn(&[CoalesceMember]) -> Result<CoalescedProgram, Box<dyn std::error::Error>>;

/// The record of one interface running a coalesced program.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoalescedIfaceRecord {
    pub iface: String,
    pub ifindex: u32,
    pub netns_inode: u64,
    pub mode: ModeUsed,
    pub program_id: u32,
    pub link_id: u32,
    pub link_pin: PathBuf,
    /// Instruction slots of the coalesced program.
    pub insns: usize,
    /// Instructions the kernel's verifier processed to accept it (of [`KERNEL_COMPLEXITY_LIMIT`]).
    pub verified_insns: u32,
    /// The lambdas in it, in deploy order.
    pub lambdas: Vec<String>,
    /// Seconds since the Unix epoch of the last re-coalescing.
    pub updated_at: u64,
    /// The NIC model its lambdas are lowered for (`deploy --lower`; they all agree, see
    /// [`CoalescedRecord::lower`], whose copies the rebuilds follow); `None`: as written.
    #[serde(default)]
    pub lower: Option<String>,
}

/// The record of one lambda deployed in coalesced mode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoalescedRecord {
    pub name: String,
    pub iface: String,
    pub ifindex: u32,
    pub netns_inode: u64,
    /// The object as given (canonical path).
    pub object: PathBuf,
    /// The copy re-coalescing reads, so the running set never depends on the user's file.
    pub stored_object: PathBuf,
    pub rule: MatchRule,
    pub maps: Vec<PinnedMap>,
    /// Seconds since the Unix epoch.
    pub deployed_at: u64,
    /// Deploy order on the interface (one more than the highest before it): seconds are too
    /// coarse to order two deploys in the same second, and the order is the program's layout
    /// and what `stats` lists. Records written before it existed read as 0.
    #[serde(default)]
    pub seq: u64,
    /// The verifier limits it was deployed (or last replaced) with: every re-coalescing,
    /// including one for another lambda's deploy or undeploy, checks the program against
    /// them. A record written before they were kept has none and gets the defaults.
    #[serde(default)]
    pub limits: Option<Limits>,
    /// The NIC model the lambda is lowered for before each coalescing (`deploy --lower
    /// --nic MODEL`: the host runs the program that NIC would get), so every rebuild —
    /// replace, another lambda's deploy or undeploy — lowers it again the same way. `None`
    /// (and records written before it existed): coalesced as written. All lambdas of one
    /// interface agree ([`KernelError::LoweringConflict`]).
    #[serde(default)]
    pub lower: Option<String>,
}

/// The result of a coalesced deploy, replace or undeploy.
#[derive(Clone, Debug)]
pub struct CoalescedChange {
    /// The lambda deployed, replaced or removed.
    pub record: CoalescedRecord,
    /// The interface after the change; `None` when the last lambda went and the program,
    /// link and pins with it.
    pub iface: Option<CoalescedIfaceRecord>,
    /// With [`AttachMode::Auto`], when this change attached the program and drv failed: why.
    pub drv_fallback: Option<String>,
}

/// One entry of [`Host::coalesced`].
#[derive(Clone, Debug)]
pub struct CoalescedLambda {
    pub record: CoalescedRecord,
    /// The interface's coalesced program is attached and is the one recorded.
    pub live: Result<(), String>,
}

/// bpffs refuses dots in pin names: `.bss` is pinned as `_bss`.
fn pin_name(map: &str) -> String {
    map.replace('.', "_")
}

impl Host {
    /// `<bpffs>/lnic/<netns>/coalesced:<iface>`.
    pub fn coalesced_dir(&self, iface: &str) -> PathBuf {
        self.netns_pin_dir().join(format!("coalesced:{iface}"))
    }

    fn coalesced_state_dir(&self) -> PathBuf {
        self.netns_state_dir().join("coalesced")
    }

    fn coalesced_iface_path(&self, iface: &str) -> PathBuf {
        self.coalesced_state_dir().join(format!("{iface}.json"))
    }

    fn coalesced_lambda_path(&self, name: &str) -> PathBuf {
        self.coalesced_state_dir()
            .join("lambdas")
            .join(format!("{name}.json"))
    }

    fn coalesced_object_path(&self, name: &str) -> PathBuf {
        self.coalesced_state_dir()
            .join("lambdas")
            .join(format!("{name}.o"))
    }

    /// The coalesced program's record of `iface`, if it runs one.
    pub fn coalesced_iface(&self, iface: &str) -> Option<CoalescedIfaceRecord> {
        read_json(&self.coalesced_iface_path(iface)).ok()
    }

    /// Every lambda deployed in coalesced mode, by name.
    pub fn coalesced_records(&self) -> Result<Vec<CoalescedRecord>, KernelError> {
        read_json_dir(&self.coalesced_state_dir().join("lambdas"))
    }

    /// Every lambda deployed in coalesced mode, with whether its interface's program is live.
    pub fn coalesced(&self) -> Result<Vec<CoalescedLambda>, KernelError> {
        Ok(self
            .coalesced_records()?
            .into_iter()
            .map(|record| {
                let live = self.coalesced_liveness(&record);
                CoalescedLambda { record, live }
            })
            .collect())
    }

    /// The XDP mode of `iface`'s coalesced program when its link is live there.
    fn live_coalesced_mode(&self, iface: &str, ifindex: u32) -> Option<ModeUsed> {
        let record = self.coalesced_iface(iface)?;
        match pinned_link_state(&record.link_pin) {
            Ok(s) if s.ifindex == ifindex => Some(record.mode),
            _ => None,
        }
    }

    fn coalesced_liveness(&self, record: &CoalescedRecord) -> Result<(), String> {
        let Some(iface) = self.coalesced_iface(&record.iface) else {
            return Err("its interface has no coalesced program record".into());
        };
        if !iface.lambdas.contains(&record.name) {
            return Err("not in its interface's coalesced program".into());
        }
        match pinned_link_state(&iface.link_pin) {
            Ok(s) if s.ifindex == record.ifindex && s.program_id == iface.program_id => Ok(()),
            Ok(s) if s.ifindex != record.ifindex => Err("the link is defunct or elsewhere".into()),
            Ok(s) => Err(format!("the link runs program {}", s.program_id)),
            Err(e) => Err(format!("no link ({e})")),
        }
    }

    /// The lambdas of `iface` in coalesced mode, in deploy order (then by name).
    fn coalesced_on(&self, iface: &str) -> Result<Vec<CoalescedRecord>, KernelError> {
        let mut on: Vec<CoalescedRecord> = self
            .coalesced_records()?
            .into_iter()
            .filter(|r| r.iface == iface)
            .collect();
        on.sort_by(|a, b| (a.seq, a.deployed_at, &a.name).cmp(&(b.seq, b.deployed_at, &b.name)));
        Ok(on)
    }

    /// Deploys `object` as lambda `name` on `iface` in coalesced mode: the interface's
    /// coalesced program is rebuilt with it (by `build`) and swapped in atomically, or
    /// attached in `mode` when this is the interface's first. `mode` drv or skb on an
    /// interface whose live program runs in the other mode is refused
    /// ([`KernelError::CoalescedXdpConflict`]): the running attachment stays. `limits` are the
    /// lambda's, kept in its record for every later re-coalescing. `lower` names the NIC
    /// model the builder lowers it for (kept in its record too); an interface whose lambdas
    /// were deployed otherwise refuses it ([`KernelError::LoweringConflict`]). On failure the
    /// running program and every other lambda's state are as they were.
    #[allow(clippy::too_many_arguments)]
    pub fn deploy_coalesced(
        &self,
        object: &Path,
        iface: &str,
        name: &str,
        rule: MatchRule,
        mode: AttachMode,
        limits: Limits,
        lower: Option<&str>,
        build: CoalesceBuilder<'_>,
    ) -> Result<CoalescedChange, KernelError> {
        super::check_lambda_name(name)?;
        let bytes = super::read_object(object)?;
        // Parsed here so a broken object fails before anything is touched.
        LambdaImage::parse(&bytes, &object.display().to_string())?;
        let ifindex = super::ifindex(iface)?;
        super::check_privileges(&format!("deploying to {iface}"))?;
        self.ensure_bpffs()?;
        let _lock = DeployLock::take(&self.netns_state_dir().join("deploy.lock"))?;
        if let Ok(existing) = read_json::<CoalescedRecord>(&self.coalesced_lambda_path(name)) {
            return Err(KernelError::AlreadyDeployed {
                name: name.to_owned(),
                iface: existing.iface,
            });
        }
        if let Ok(existing) = read_json::<super::DeployRecord>(&self.deploy_record_path(name)) {
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
        if self.dispatch_dir(iface).join("link").exists()
            || self.deploy_records()?.iter().any(|r| r.iface == iface)
        {
            return Err(KernelError::ModeConflict {
                iface: iface.to_owned(),
                running: "tail-call",
                asked: "coalesced",
            });
        }
        if let Some(running) = self.live_coalesced_mode(iface, ifindex) {
            let asked = match mode {
                AttachMode::Drv if running != ModeUsed::Drv => Some("drv"),
                AttachMode::Skb if running != ModeUsed::Skb => Some("skb"),
                _ => None,
            };
            if let Some(asked) = asked {
                return Err(KernelError::CoalescedXdpConflict {
                    iface: iface.to_owned(),
                    running,
                    asked,
                });
            }
        }
        let mut members = self.coalesced_on(iface)?;
        if let Some(other) = members.iter().find(|r| r.lower.as_deref() != lower) {
            return Err(KernelError::LoweringConflict {
                iface: iface.to_owned(),
                running: other.lower.clone(),
                asked: lower.map(str::to_owned),
            });
        }
        if let Some(holder) = members.iter().find(|r| r.rule == rule) {
            return Err(KernelError::RuleTaken {
                rule,
                iface: iface.to_owned(),
                holder: holder.name.clone(),
            });
        }
        let stored = self.coalesced_object_path(name);
        write_bytes(&stored, &bytes)?;
        let record = CoalescedRecord {
            name: name.to_owned(),
            iface: iface.to_owned(),
            ifindex,
            netns_inode: self.netns_inode,
            object: fs::canonicalize(object).unwrap_or_else(|_| object.to_owned()),
            stored_object: stored.clone(),
            rule,
            maps: Vec::new(),
            deployed_at: now_secs(),
            seq: members.iter().map(|m| m.seq).max().map_or(0, |s| s + 1),
            limits: Some(limits),
            lower: lower.map(str::to_owned),
        };
        members.push(record);
        let fresh = !self.lambda_dir(name).exists();
        match self.recoalesce(iface, ifindex, &mut members, mode, build) {
            Ok((iface_record, drv_fallback)) => {
                let record = members.pop().expect("the new lambda is last");
                Ok(CoalescedChange {
                    record,
                    iface: Some(iface_record),
                    drv_fallback,
                })
            }
            Err(e) => {
                let _ = fs::remove_file(&stored);
                if fresh {
                    let _ = fs::remove_dir_all(self.lambda_dir(name));
                }
                Err(e)
            }
        }
    }

    /// Replaces coalesced lambda `name` by `object`, keeping its rule and its maps (each map
    /// it still declares must fit the pinned one: same type, key and value size, at least as
    /// many entries); the interface's program is rebuilt and swapped in atomically. `limits`
    /// replace the lambda's recorded ones; its lowering ([`CoalescedRecord::lower`]) stays
    /// what it was deployed with.
    pub fn redeploy_coalesced(
        &self,
        name: &str,
        object: &Path,
        limits: Limits,
        build: CoalesceBuilder<'_>,
    ) -> Result<CoalescedChange, KernelError> {
        super::check_lambda_name(name)?;
        let bytes = super::read_object(object)?;
        LambdaImage::parse(&bytes, &object.display().to_string())?;
        super::check_privileges(&format!("redeploying {name}"))?;
        let _lock = DeployLock::take(&self.netns_state_dir().join("deploy.lock"))?;
        let record: CoalescedRecord =
            read_json(&self.coalesced_lambda_path(name)).map_err(|_| KernelError::NotDeployed {
                name: name.to_owned(),
            })?;
        let iface = record.iface.clone();
        let old_bytes =
            fs::read(&record.stored_object).map_err(io_err("reading", &record.stored_object))?;
        write_bytes(&record.stored_object, &bytes)?;
        let mut members = self.coalesced_on(&iface)?;
        for m in members.iter_mut().filter(|m| m.name == name) {
            m.object = fs::canonicalize(object).unwrap_or_else(|_| object.to_owned());
            m.limits = Some(limits);
        }
        let mode = self
            .coalesced_iface(&iface)
            .map_or(AttachMode::Auto, |r| attach_mode_of(r.mode));
        match self.recoalesce(&iface, record.ifindex, &mut members, mode, build) {
            Ok((iface_record, drv_fallback)) => {
                let record = members
                    .into_iter()
                    .find(|m| m.name == name)
                    .expect("the replaced lambda is a member");
                Ok(CoalescedChange {
                    record,
                    iface: Some(iface_record),
                    drv_fallback,
                })
            }
            Err(e) => {
                let _ = write_bytes(&record.stored_object, &old_bytes);
                Err(e)
            }
        }
    }

    /// Removes coalesced lambda `name`: the interface's program is rebuilt without it and
    /// swapped in (the others keep their state), then its pins and record go. The last one
    /// takes the program, the link and the interface's pins with it.
    pub fn undeploy_coalesced(
        &self,
        name: &str,
        build: CoalesceBuilder<'_>,
    ) -> Result<CoalescedChange, KernelError> {
        super::check_lambda_name(name)?;
        let path = self.coalesced_lambda_path(name);
        if !path.exists() {
            return Err(KernelError::NotDeployed {
                name: name.to_owned(),
            });
        }
        super::check_privileges(&format!("undeploying {name}"))?;
        let _lock = DeployLock::take(&self.netns_state_dir().join("deploy.lock"))?;
        let record: CoalescedRecord = read_json(&path)?;
        let mut members: Vec<CoalescedRecord> = self
            .coalesced_on(&record.iface)?
            .into_iter()
            .filter(|m| m.name != name)
            .collect();
        let iface_record = if members.is_empty() {
            self.remove_coalesced_program(&record.iface)?;
            None
        } else {
            let mode = self
                .coalesced_iface(&record.iface)
                .map_or(AttachMode::Auto, |r| attach_mode_of(r.mode));
            Some(
                self.recoalesce(&record.iface, record.ifindex, &mut members, mode, build)?
                    .0,
            )
        };
        self.forget_coalesced(&record)?;
        if iface_record.is_none() {
            let _ = fs::remove_dir(self.netns_pin_dir());
        }
        Ok(CoalescedChange {
            record,
            iface: iface_record,
            drv_fallback: None,
        })
    }

    /// Removes every coalesced lambda of `iface` (all of them when `None`) at once: the
    /// programs, links and pins go without rebuilding anything.
    pub fn undeploy_coalesced_all(
        &self,
        iface: Option<&str>,
    ) -> Result<Vec<CoalescedRecord>, KernelError> {
        super::check_privileges("undeploying coalesced lambdas")?;
        let _lock = DeployLock::take(&self.netns_state_dir().join("deploy.lock"))?;
        let records: Vec<CoalescedRecord> = self
            .coalesced_records()?
            .into_iter()
            .filter(|r| iface.is_none_or(|i| r.iface == i))
            .collect();
        let mut ifaces: Vec<&str> = records.iter().map(|r| r.iface.as_str()).collect();
        ifaces.sort_unstable();
        ifaces.dedup();
        for iface in ifaces {
            self.remove_coalesced_program(iface)?;
        }
        for record in &records {
            self.forget_coalesced(record)?;
        }
        let _ = fs::remove_dir(self.netns_pin_dir());
        Ok(records)
    }

    fn forget_coalesced(&self, record: &CoalescedRecord) -> Result<(), KernelError> {
        let dir = self.lambda_dir(&record.name);
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(io_err("removing", &dir))?;
        }
        let _ = fs::remove_file(&record.stored_object);
        let path = self.coalesced_lambda_path(&record.name);
        fs::remove_file(&path).map_err(io_err("removing", &path))
    }

    /// Detaches and unpins the coalesced program of `iface` and removes its record.
    fn remove_coalesced_program(&self, iface: &str) -> Result<(), KernelError> {
        let dir = self.coalesced_dir(iface);
        let link = dir.join("link");
        if link.exists() {
            let _ = sys::force_detach_link(&link);
        }
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(io_err("removing", &dir))?;
        }
        let record = self.coalesced_iface_path(iface);
        match fs::remove_file(&record) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("removing", &record)(e)),
        }
    }

    /// Builds, loads and installs the coalesced program of `members` on `iface` (swapping it
    /// in on the interface's link, or attaching a new link in `mode`), and writes every
    /// member's record and the interface's. Called with the deploy lock held.
    fn recoalesce(
        &self,
        iface: &str,
        ifindex: u32,
        members: &mut [CoalescedRecord],
        mode: AttachMode,
        build: CoalesceBuilder<'_>,
    ) -> Result<(CoalescedIfaceRecord, Option<String>), KernelError> {
        let inputs: Vec<CoalesceMember> = members
            .iter()
            .map(|m| {
                Ok(CoalesceMember {
                    name: m.name.clone(),
                    bytes: fs::read(&m.stored_object)
                        .map_err(io_err("reading", &m.stored_object))?,
                    rule: m.rule,
                    limits: m.limits.unwrap_or_default(),
                    lower: m.lower.clone(),
                })
            })
            .collect::<Result<_, KernelError>>()?;
        let program = build(&inputs).map_err(|e| KernelError::CoalesceFailed {
            iface: iface.to_owned(),
            reason: e.to_string(),
        })?;
        if program.maps.len() > MAX_USED_MAPS {
            return Err(KernelError::CoalesceFailed {
                iface: iface.to_owned(),
                reason: format!(
                    "the coalesced program of {} lambdas uses {} maps; the kernel lets one program use at most {MAX_USED_MAPS} (MAX_USED_MAPS): deploy the rest in tail-call mode on another interface",
                    members.len(),
                    program.maps.len()
                ),
            });
        }

        // The maps: each lambda's own pinned under its name (reused when pinned already),
        // shared constants created for this program.
        let mut created_pins: Vec<PathBuf> = Vec::new();
        let opened = (|| {
            let mut kernel_maps = Vec::with_capacity(program.maps.len());
            let mut pinned: Vec<Vec<PinnedMap>> = vec![Vec::new(); members.len()];
            for (index, map) in program.maps.iter().enumerate() {
                let owner = members.iter().position(|m| {
                    map.name
                        .strip_prefix(m.name.as_str())
                        .is_some_and(|rest| rest.starts_with('/'))
                });
                let seeds = program.seeds.get(index).map_or(&[][..], Vec::as_slice);
                let Some(owner) = owner else {
                    if map.kind != (LinkedMapKind::GlobalData { read_only: true }) {
                        return Err(KernelError::CoalesceFailed {
                            iface: iface.to_owned(),
                            reason: format!(
                                "map `{}` belongs to no lambda and is not read-only data",
                                map.name
                            ),
                        });
                    }
                    kernel_maps.push(create_map(iface, map, seeds)?);
                    continue;
                };
                let own = &map.name[members[owner].name.len() + 1..];
                let dir = self.lambda_dir(&members[owner].name).join("maps");
                fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
                let pin = dir.join(pin_name(own));
                let reused = pin.exists();
                let (kmap, seeded) = if reused {
                    let kmap = KernelMap::from_pin(&pin)
                        .map_err(map_err(iface, &format!("opening {}", pin.display())))?;
                    check_fits(own, &pin, kmap.spec(), map)?;
                    (kmap, 0)
                } else {
                    let kmap = create_map(iface, map, seeds)?;
                    kmap.pin(&pin)
                        .map_err(map_err(iface, &format!("pinning {}", pin.display())))?;
                    created_pins.push(pin.clone());
                    (kmap, seeds.len())
                };
                pinned[owner].push(PinnedMap {
                    name: own.to_owned(),
                    pin,
                    map_type: map.type_name(),
                    key_size: map.key_size,
                    value_size: map.value_size,
                    max_entries: map.max_entries,
                    reused,
                    seeded,
                });
                kernel_maps.push(kmap);
            }
            Ok((kernel_maps, pinned))
        })();
        let forget_created = |created: &[PathBuf]| {
            for pin in created {
                let _ = fs::remove_file(pin);
            }
        };
        let (kernel_maps, pinned) = match opened {
            Ok(x) => x,
            Err(e) => {
                forget_created(&created_pins);
                return Err(e);
            }
        };

        let loaded = (|| {
            let fds: Vec<OwnedFd> = kernel_maps
                .iter()
                .map(|m| m.fd().try_clone_to_owned())
                .collect::<io::Result<_>>()
                .map_err(io_err("duplicating a map fd of", Path::new(iface)))?;
            let insns = super::with_map_fds(&program.insns, &fds);
            let prog =
                super::raw_run::load_xdp_named_with(&insns, "lnic_coalesced", program.btf.as_ref())
                    .map_err(|e| load_failed(iface, members.len(), e))?;
            let verified = super::verified_insns(prog.as_fd()).unwrap_or(0);
            Ok::<_, KernelError>((prog, verified))
        })();
        let (prog, verified) = match loaded {
            Ok(x) => x,
            Err(e) => {
                forget_created(&created_pins);
                return Err(e);
            }
        };

        // Swap it in (or attach it), then pin it.
        let dir = self.coalesced_dir(iface);
        let link_pin = dir.join("link");
        let live = matches!(pinned_link_state(&link_pin), Ok(s) if s.ifindex == ifindex);
        let swapped = (|| {
            fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
            if live {
                let link = sys::open_pinned(&link_pin).map_err(io_err("opening", &link_pin))?;
                super::upgrade::link_update(link.as_fd(), prog.as_fd(), None)
                    .map_err(io_err("swapping the program on", &link_pin))?;
                let mode = self
                    .coalesced_iface(iface)
                    .map_or(ModeUsed::Skb, |r| r.mode);
                Ok((mode, None))
            } else {
                if link_pin.exists() {
                    // A stale link (its interface went away): start over.
                    let _ = sys::force_detach_link(&link_pin);
                    let _ = fs::remove_file(&link_pin);
                }
                let (link, used, drv_fallback) =
                    attach_in_mode(prog.as_fd(), iface, ifindex, mode)?;
                sys::obj_pin(link.as_fd(), &link_pin)
                    .map_err(io_err("pinning the link at", &link_pin))?;
                Ok((used, drv_fallback))
            }
        })();
        let (used, drv_fallback) = match swapped {
            Ok(x) => x,
            Err(e) => {
                forget_created(&created_pins);
                return Err(e);
            }
        };
        let prog_pin = dir.join("prog");
        let _ = fs::remove_file(&prog_pin);
        sys::obj_pin(prog.as_fd(), &prog_pin)
            .map_err(io_err("pinning the program at", &prog_pin))?;
        let state = pinned_link_state(&link_pin).map_err(io_err("reading", &link_pin))?;
        let record = CoalescedIfaceRecord {
            iface: iface.to_owned(),
            ifindex,
            netns_inode: self.netns_inode,
            mode: used,
            program_id: state.program_id,
            link_id: state.link_id,
            link_pin,
            insns: program.insns.len(),
            verified_insns: verified,
            lambdas: members.iter().map(|m| m.name.clone()).collect(),
            updated_at: now_secs(),
            lower: members.first().and_then(|m| m.lower.clone()),
        };
        for (member, maps) in members.iter_mut().zip(pinned) {
            member.maps = maps;
            write_json(&self.coalesced_lambda_path(&member.name), member)?;
        }
        write_json(&self.coalesced_iface_path(iface), &record)?;
        Ok((record, drv_fallback))
    }
}

fn attach_mode_of(mode: ModeUsed) -> AttachMode {
    match mode {
        ModeUsed::Drv => AttachMode::Drv,
        ModeUsed::Skb => AttachMode::Skb,
        ModeUsed::Hw => AttachMode::Auto,
    }
}

fn write_bytes(path: &Path, bytes: &[u8]) -> Result<(), KernelError> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
    }
    let tmp = path.with_extension("o.tmp");
    fs::write(&tmp, bytes).map_err(io_err("writing", &tmp))?;
    fs::rename(&tmp, path).map_err(io_err("writing", path))
}

/// Creates `map` with its initial value (global data; read-only data frozen) and seeds.
fn create_map(
    iface: &str,
    map: &LinkedMap,
    seeds: &[(Vec<u8>, Vec<u8>)],
) -> Result<KernelMap, KernelError> {
    let spec = MapSpec {
        name: map.name.rsplit('/').next().unwrap_or(&map.name).to_owned(),
        map_type: MapType::from_raw(map.map_type),
        key_size: map.key_size,
        value_size: map.value_size,
        max_entries: map.max_entries,
        flags: map.flags,
    };
    let what = format!("creating map {}", map.name);
    let kmap = KernelMap::create(&spec).map_err(map_err(iface, &what))?;
    if let LinkedMapKind::GlobalData { read_only } = map.kind {
        let mut value = map.initial.clone();
        value.resize(map.value_size as usize, 0);
        kmap.update(&0u32.to_ne_bytes(), &value, UpdateFlags::Any)
            .map_err(map_err(iface, &what))?;
        if read_only {
            sys::map_freeze(kmap.fd()).map_err(io_err("freezing", Path::new(&map.name)))?;
        }
    }
    for (key, value) in seeds {
        kmap.update(key, value, UpdateFlags::Any)
            .map_err(map_err(iface, &format!("seeding map {}", map.name)))?;
    }
    Ok(kmap)
}

/// A pinned map reused by the next program must fit what the program expects.
fn check_fits(
    name: &str,
    pin: &Path,
    running: &MapSpec,
    new: &LinkedMap,
) -> Result<(), KernelError> {
    let differs = |field: &'static str, running: u32, new: u32| KernelError::UpgradeIncompatible {
        map: name.to_owned(),
        path: pin.to_owned(),
        field,
        running,
        new,
    };
    if running.map_type.raw() != new.map_type {
        return Err(differs("type", running.map_type.raw(), new.map_type));
    }
    if running.key_size != new.key_size {
        return Err(differs("key size", running.key_size, new.key_size));
    }
    if running.value_size != new.value_size {
        return Err(differs("value size", running.value_size, new.value_size));
    }
    if new.max_entries < running.max_entries {
        return Err(differs("max entries", running.max_entries, new.max_entries));
    }
    Ok(())
}

/// The kernel's refusal of a coalesced program, with its limits named.
fn load_failed(iface: &str, lambdas: usize, e: RawRunError) -> KernelError {
    if let RawRunError::VerifierRejected { log, .. } = &e
        && log.contains("BPF program is too large")
    {
        return KernelError::CoalesceFailed {
            iface: iface.to_owned(),
            reason: format!(
                "the kernel's verifier would process more than {KERNEL_COMPLEXITY_LIMIT} instructions (BPF_COMPLEXITY_LIMIT_INSNS) for the coalesced program of {lambdas} lambdas: a coalesced program costs about the sum of its lambdas' own costs (`lambdactl coalesce OBJECT… --kernel` shows them); deploy this lambda in tail-call mode on another interface"
            ),
        };
    }
    KernelError::CoalesceFailed {
        iface: iface.to_owned(),
        reason: format!("loading the coalesced program: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn linked(map_type: u32, key: u32, value: u32, entries: u32) -> LinkedMap {
        LinkedMap {
            name: "w/CALLS".into(),
            map_type,
            key_size: key,
            value_size: value,
            max_entries: entries,
            flags: 0,
            kind: LinkedMapKind::Declared,
            initial: vec![],
        }
    }

    #[test]
    fn layout_and_pin_names() {
        let host = Host {
            bpffs: "/sys/fs/bpf".into(),
            state_dir: "/run/lnic".into(),
            netns_inode: 7,
        };
        assert_eq!(
            host.coalesced_dir("veth0"),
            Path::new("/sys/fs/bpf/lnic/7/coalesced:veth0")
        );
        assert_ne!(host.coalesced_dir("veth0"), host.dispatch_dir("veth0"));
        assert_eq!(
            host.coalesced_object_path("web"),
            Path::new("/run/lnic/7/coalesced/lambdas/web.o")
        );
        // bpffs refuses dots in pin names.
        assert_eq!(pin_name(".bss"), "_bss");
        assert_eq!(pin_name("CALLS"), "CALLS");
    }

    #[test]
    fn a_pinned_map_is_reused_only_when_it_fits() {
        let running = MapSpec {
            name: "CALLS".into(),
            map_type: MapType::from_raw(2),
            key_size: 4,
            value_size: 8,
            max_entries: 1,
            flags: 0,
        };
        let pin = Path::new("/sys/fs/bpf/lnic/7/lambda:w/maps/CALLS");
        assert!(check_fits("CALLS", pin, &running, &linked(2, 4, 8, 1)).is_ok());
        assert!(check_fits("CALLS", pin, &running, &linked(2, 4, 8, 4)).is_ok());
        let err = check_fits("CALLS", pin, &running, &linked(2, 4, 16, 1))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("map CALLS: value size 8 in the running lambda, 16 in the new object"),
            "{err}"
        );
        assert!(check_fits("CALLS", pin, &running, &linked(1, 4, 8, 1)).is_err());
    }
}
