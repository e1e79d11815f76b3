//! `lambdactl maps`: list, dump, read and write the pinned maps of attached lambdas, with keys
//! and values shown and parsed by the types the object's BTF gives them (hex and plain strings
//! where it gives none).

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
};

use anyhow::{Context as _, Result, anyhow, bail};
use clap::{Args, Subcommand, ValueEnum};
use loader::{
    Host,
    btf_types::{self, Btf, MapTypes, TypeLayout},
    maps::{KernelMap, MapAccess, MapError, MapSpec, UpdateFlags},
};
use serde_json::{Value, json};

#[derive(Args)]
#[command(after_help = SYNTAX_HELP)]
pub(crate) struct MapsArgs {
    /// The maps of a lambda served by `lambdactl run` instead of the pinned ones: its control
    /// socket, or `vm:<name>` to find it. Targets are then LAMBDA/MAP or just MAP.
    #[arg(long, global = true, value_name = "SOCKET")]
    vm: Option<String>,
    #[command(subcommand)]
    command: MapsCommand,
}

#[derive(Subcommand)]
enum MapsCommand {
    /// List every pinned map of every lambda attached in this network namespace.
    Ls {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print every entry of a map, keys and values by their BTF types (hex where unknown).
    Dump {
        /// LAMBDA/MAP or IFACE/MAP, e.g. static-server/OBJECTS.
        target: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print the value of one key.
    Get {
        /// LAMBDA/MAP or IFACE/MAP.
        target: String,
        /// The key (see `lambdactl maps --help` for the syntax).
        #[arg(allow_hyphen_values = true)]
        key: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Create or update one entry (every CPU's copy, for per-CPU maps).
    Set {
        /// LAMBDA/MAP or IFACE/MAP.
        target: String,
        /// The key.
        #[arg(allow_hyphen_values = true)]
        key: String,
        /// The value.
        #[arg(allow_hyphen_values = true)]
        value: String,
        /// any: create or update; noexist: create only; exist: update only.
        #[arg(long, value_enum, default_value = "any")]
        flags: FlagsArg,
    },
    /// Delete one entry.
    Del {
        /// LAMBDA/MAP or IFACE/MAP.
        target: String,
        /// The key.
        #[arg(allow_hyphen_values = true)]
        key: String,
    },
    /// Store (or replace) a static-server object: its name and content, in the layout the
    /// map has — the normal build's one record, or the NIC build's 56-byte chunks
    /// (static-server-nic.o), written so that a request never sees half of a replacement.
    PutObject {
        /// LAMBDA/OBJECTS or IFACE/OBJECTS (or OBJECTS with --vm).
        target: String,
        /// The object's name (1 to 64 bytes), as requests name it.
        name: String,
        /// The content, from this file.
        #[arg(long, conflicts_with = "text", required_unless_present = "text")]
        file: Option<PathBuf>,
        /// The content, this text.
        #[arg(long)]
        text: Option<String>,
    },
    /// Delete a static-server object (either layout): requests for it get NOT_FOUND.
    DelObject {
        /// LAMBDA/OBJECTS or IFACE/OBJECTS (or OBJECTS with --vm).
        target: String,
        /// The object's name.
        name: String,
    },
}

/// Help text for the key and value syntax, shown under `lambdactl maps --help`.
const SYNTAX_HELP: &str = "Keys and values, by their BTF type:\n  \
    integers    42, -7, 0x2a\n  \
    byte arrays a plain or \"quoted\" string, or hex:0a0b… (zero-padded; too long is an error)\n  \
    structs     field=value,field=value  or a JSON object {\"field\": value}\n  \
    arrays      [a, b, c]\n  \
    any type    hex:… of exactly its size\n\
    Without BTF types: hex:… of exactly the size, or a string zero-padded to it.";

#[derive(Clone, Copy, ValueEnum)]
enum FlagsArg {
    Any,
    Noexist,
    Exist,
}

impl From<FlagsArg> for UpdateFlags {
    fn from(f: FlagsArg) -> UpdateFlags {
        match f {
            FlagsArg::Any => UpdateFlags::Any,
            FlagsArg::Noexist => UpdateFlags::NoExist,
            FlagsArg::Exist => UpdateFlags::Exist,
        }
    }
}

pub(crate) fn run(args: MapsArgs) -> Result<ExitCode> {
    let source = match &args.vm {
        Some(spec) => Source::Vm(Arc::new(crate::vm_control::Client::connect(spec)?)),
        None => Source::Kernel(Host::from_env()?),
    };
    match args.command {
        MapsCommand::Ls { json } => match &source {
            Source::Kernel(host) => ls(host, json),
            Source::Vm(client) => ls_vm(client, json),
        },
        MapsCommand::Dump { target, json } => dump(&Opened::open(&source, &target)?, json),
        MapsCommand::Get { target, key, json } => get(&Opened::open(&source, &target)?, &key, json),
        MapsCommand::Set {
            target,
            key,
            value,
            flags,
        } => set(&Opened::open(&source, &target)?, &key, &value, flags.into()),
        MapsCommand::Del { target, key } => del(&Opened::open(&source, &target)?, &key),
        MapsCommand::PutObject {
            target,
            name,
            file,
            text,
        } => {
            let content = match (file, text) {
                (Some(path), _) => {
                    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?
                }
                (None, Some(text)) => text.into_bytes(),
                (None, None) => bail!("give the content with --file or --text"),
            };
            let m = Opened::open(&source, &target)?;
            let how = crate::objects::put(m.map.as_ref(), name.as_bytes(), &content)
                .with_context(|| m.label())?;
            println!("stored {} {name:?}: {how}", m.label());
            Ok(ExitCode::SUCCESS)
        }
        MapsCommand::DelObject { target, name } => {
            let m = Opened::open(&source, &target)?;
            if !crate::objects::delete(m.map.as_ref(), name.as_bytes())
                .with_context(|| m.label())?
            {
                bail!("{}: no object {name:?}", m.label());
            }
            println!("deleted {} {name:?}", m.label());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Where the maps are: pinned by attached lambdas, or in a `lambdactl run` process.
enum Source {
    Kernel(Host),
    Vm(Arc<crate::vm_control::Client>),
}

/// One map, opened, with its types.
struct Opened {
    /// The lambda's name.
    lambda: String,
    /// The interface it is attached on (for a `lambdactl run` map, `vm`).
    iface: String,
    /// The map's name.
    name: String,
    /// The pin, or the control socket.
    pin: PathBuf,
    map: Box<dyn MapAccess>,
    /// CPUs (VM workers) a per-CPU value has copies for.
    ncpus: usize,
    types: MapTypes,
    /// Why the types are unknown, when they are.
    types_note: Option<String>,
}

impl Opened {
    fn open(source: &Source, target: &str) -> Result<Opened> {
        match source {
            Source::Kernel(host) => Opened::open_pinned(host, target),
            Source::Vm(client) => Opened::open_vm(client, target),
        }
    }

    /// Finds `MAP` or `LAMBDA/MAP` in a `lambdactl run` process.
    fn open_vm(client: &Arc<crate::vm_control::Client>, target: &str) -> Result<Opened> {
        let listing = client.maps()?;
        let lambda = listing["lambda"].as_str().unwrap_or_default().to_owned();
        let map_name = match target.split_once('/') {
            Some((who, map)) if who == lambda => map,
            Some((who, _)) => bail!("{} serves `{lambda}`, not `{who}`", client.path().display()),
            None => target,
        };
        let names: Vec<&str> = listing["maps"]
            .as_array()
            .map(|maps| maps.iter().filter_map(|m| m["name"].as_str()).collect())
            .unwrap_or_default();
        let name = names
            .iter()
            .find(|n| **n == map_name)
            .or_else(|| names.iter().find(|n| n.eq_ignore_ascii_case(map_name)))
            .ok_or_else(|| {
                anyhow!(
                    "lambda `{lambda}` (lambdactl run) has no map `{map_name}`; its maps: {}",
                    names.join(", ")
                )
            })?;
        let map = crate::vm_control::RemoteMap::from_listing(Arc::clone(client), &listing, name)
            .ok_or_else(|| anyhow!("{}: malformed map listing", client.path().display()))?;
        let object = PathBuf::from(listing["object"].as_str().unwrap_or_default());
        let (types, types_note) = types_for(&object, name, map.spec());
        Ok(Opened {
            lambda,
            iface: "vm".to_owned(),
            name: (*name).to_owned(),
            pin: client.path().to_path_buf(),
            ncpus: map.ncpus(),
            map: Box::new(map),
            types,
            types_note,
        })
    }

    /// Finds `LAMBDA/MAP` (or `IFACE/MAP`) among this namespace's attachments and opens it.
    fn open_pinned(host: &Host, target: &str) -> Result<Opened> {
        let (who, map_name) = target.split_once('/').ok_or_else(|| {
            anyhow!("`{target}`: expected LAMBDA/MAP or IFACE/MAP, e.g. static-server/OBJECTS")
        })?;
        let listed = map_holders(host)?;
        if listed.is_empty() {
            bail!(
                "no lambdas attached or deployed in this network namespace (see `lambdactl attach` and `deploy`)"
            );
        }
        let attached = || {
            listed
                .iter()
                .map(|l| format!("{} on {}", l.lambda, l.iface))
                .collect::<Vec<_>>()
                .join(", ")
        };
        // A lambda name first (deployed names are unique); else an interface, unique for
        // attached lambdas but shared by the lambdas deployed behind its dispatcher.
        let by_name: Vec<_> = listed.iter().filter(|l| l.lambda == who).collect();
        let matches = if by_name.is_empty() {
            listed.iter().filter(|l| l.iface == who).collect::<Vec<_>>()
        } else {
            by_name
        };
        let record = match matches.as_slice() {
            [] => bail!(
                "no lambda or interface `{who}` in this network namespace; there are: {}",
                attached()
            ),
            [one] => (*one).clone(),
            many if many.iter().all(|l| l.iface == who) => bail!(
                "several lambdas are deployed on `{who}` ({}): name the lambda, e.g. {}/{map_name}",
                many.iter()
                    .map(|l| l.lambda.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                many[0].lambda
            ),
            many => bail!(
                "lambda `{who}` is attached on several interfaces ({}): name the interface, e.g. {}/{map_name}",
                many.iter()
                    .map(|l| l.iface.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                many[0].iface
            ),
        };
        let names = || {
            record
                .maps
                .iter()
                .map(|m| m.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let pinned = record
            .maps
            .iter()
            .find(|m| m.name == map_name)
            .or_else(|| {
                record
                    .maps
                    .iter()
                    .find(|m| m.name.eq_ignore_ascii_case(map_name))
            })
            .cloned()
            .ok_or_else(|| {
                if record.maps.is_empty() {
                    anyhow!(
                        "lambda `{}` on {} has no pinned maps",
                        record.lambda,
                        record.iface
                    )
                } else {
                    anyhow!(
                        "lambda `{}` on {} has no map `{map_name}`; its maps: {}",
                        record.lambda,
                        record.iface,
                        names()
                    )
                }
            })?;
        let map = open_pin(&pinned.pin)?;
        let (types, types_note) = types_for(&record.object, &pinned.name, map.spec());
        Ok(Opened {
            lambda: record.lambda,
            iface: record.iface,
            name: pinned.name,
            pin: pinned.pin,
            ncpus: map.ncpus(),
            map: Box::new(map),
            types,
            types_note,
        })
    }

    fn label(&self) -> String {
        format!("{}/{}", self.lambda, self.name)
    }

    fn spec(&self) -> &MapSpec {
        self.map.spec()
    }

    /// The key bytes for `text`.
    fn key(&self, text: &str) -> Result<Vec<u8>> {
        let size = self.spec().key_size as usize;
        let what = match &self.types.key {
            Some(t) => format!("key of type `{}` ({size} bytes)", t.type_name()),
            None => format!("key ({size} bytes, type unknown)"),
        };
        encode(self.types.key.as_ref(), text, size)
            .with_context(|| format!("{}: bad {what} `{text}`", self.label()))
    }

    /// The userspace value bytes for `text`: one copy per CPU for per-CPU maps.
    fn value(&self, text: &str) -> Result<Vec<u8>> {
        let spec = self.spec();
        let size = spec.value_size as usize;
        let what = match &self.types.value {
            Some(t) => format!("value of type `{}` ({size} bytes)", t.type_name()),
            None => format!("value ({size} bytes, type unknown)"),
        };
        let one = encode(self.types.value.as_ref(), text, size)
            .with_context(|| format!("{}: bad {what}", self.label()))?;
        if !spec.map_type.is_per_cpu() {
            return Ok(one);
        }
        let stride = spec.value_stride();
        let mut all = vec![0u8; stride * self.ncpus];
        for copy in all.chunks_mut(stride) {
            copy[..size].copy_from_slice(&one);
        }
        Ok(all)
    }

    /// The value's copies: one, or one per CPU (without the padding to 8 bytes).
    fn copies<'a>(&self, value: &'a [u8]) -> Vec<&'a [u8]> {
        let spec = self.spec();
        if !spec.map_type.is_per_cpu() {
            return vec![value];
        }
        value
            .chunks(spec.value_stride())
            .map(|c| &c[..(spec.value_size as usize).min(c.len())])
            .collect()
    }

    fn key_text(&self, key: &[u8]) -> String {
        match &self.types.key {
            Some(t) => t.to_text(key),
            None => {
                let s = btf_types::byte_string(key);
                if s.starts_with("hex:") {
                    s
                } else {
                    Value::String(s).to_string()
                }
            }
        }
    }

    /// Text lines for one value (several for per-CPU maps or unknown types).
    fn value_lines(&self, value: &[u8]) -> Vec<String> {
        let copies = self.copies(value);
        let per_cpu = copies.len() > 1 || self.spec().map_type.is_per_cpu();
        let mut lines = Vec::new();
        for (cpu, bytes) in copies.iter().enumerate() {
            let prefix = if per_cpu {
                format!("cpu{cpu}: ")
            } else {
                String::new()
            };
            match &self.types.value {
                Some(t) => lines.push(format!("{prefix}{}", t.to_text(bytes))),
                None => {
                    if per_cpu {
                        lines.push(prefix.trim_end().to_owned());
                    }
                    lines.extend(crate::hexdump(bytes).lines().map(str::to_owned));
                }
            }
        }
        lines
    }

    fn value_json(&self, value: &[u8]) -> Value {
        let one = |bytes: &[u8]| match &self.types.value {
            Some(t) => t.to_json(bytes),
            None => Value::String(btf_types::byte_string(bytes)),
        };
        if self.spec().map_type.is_per_cpu() {
            Value::Array(self.copies(value).into_iter().map(one).collect())
        } else {
            one(value)
        }
    }

    fn key_json(&self, key: &[u8]) -> Value {
        match &self.types.key {
            Some(t) => t.to_json(key),
            None => Value::String(btf_types::byte_string(key)),
        }
    }

    fn entry_json(&self, key: &[u8], value: &[u8]) -> Value {
        let field = if self.spec().map_type.is_per_cpu() {
            "values"
        } else {
            "value"
        };
        let mut obj = json!({
            "key": self.key_json(key),
            "key_hex": btf_types::hex(key),
            "value_hex": btf_types::hex(value),
        });
        obj[field] = self.value_json(value);
        obj
    }

    fn header_json(&self) -> Value {
        let spec = self.spec();
        json!({
            "lambda": self.lambda,
            "iface": self.iface,
            "map": self.name,
            "type": spec.map_type.to_string(),
            "key_size": spec.key_size,
            "value_size": spec.value_size,
            "max_entries": spec.max_entries,
            "key_type": self.types.key.as_ref().map(TypeLayout::type_name),
            "value_type": self.types.value.as_ref().map(TypeLayout::type_name),
            "pin": self.pin,
        })
    }
}

/// Key or value bytes from text, by type when known.
fn encode(layout: Option<&TypeLayout>, text: &str, size: usize) -> Result<Vec<u8>> {
    let bytes = match layout {
        Some(t) => t.encode(text)?,
        None => btf_types::encode_untyped(text, size)?,
    };
    Ok(bytes)
}

/// Opens a pinned map, with the usual failures said plainly.
fn open_pin(pin: &Path) -> Result<KernelMap> {
    KernelMap::from_pin(pin).map_err(|e| match e {
        MapError::Kernel { errno, .. } if errno == libc::EPERM || errno == libc::EACCES => anyhow!(
            "permission denied opening the pinned map {} (needs CAP_BPF or root; run as root)",
            pin.display()
        ),
        MapError::Kernel { errno, .. } if errno == libc::ENOENT => anyhow!(
            "the pinned map {} is gone: the attachment is stale (see `lambdactl ls`)",
            pin.display()
        ),
        other => anyhow!("cannot open the pinned map {}: {other}", pin.display()),
    })
}

/// The map's key and value types from the attached object's BTF, or why there are none.
fn types_for(object: &Path, map: &str, spec: &MapSpec) -> (MapTypes, Option<String>) {
    let index = spec.map_type.is_array();
    let fallback = |note: String| {
        let mut types = MapTypes::default();
        if index && spec.key_size == 4 {
            types.key = Some(TypeLayout::index());
        }
        (types, Some(note))
    };
    let bytes = match std::fs::read(object) {
        Ok(b) => b,
        Err(e) => {
            return fallback(format!(
                "cannot read the object {} ({e}): types unknown, showing hex",
                object.display()
            ));
        }
    };
    let btf = match Btf::from_object(&bytes) {
        Ok(Some(btf)) => btf,
        Ok(None) => {
            return fallback(format!(
                "{} has no BTF: types unknown, showing hex",
                object.display()
            ));
        }
        Err(e) => {
            return fallback(format!("cannot read the BTF of {}: {e}", object.display()));
        }
    };
    let types = btf.map_types(map, spec.key_size, spec.value_size, index);
    let note = match (&types.key, &types.value) {
        (Some(_), Some(_)) => None,
        _ => Some(format!(
            "{}'s BTF does not give every type of `{map}`: the rest is shown as hex",
            object.display()
        )),
    };
    (types, note)
}

/// A lambda whose maps are pinned: attached alone, or deployed behind a dispatcher.
#[derive(Clone)]
struct MapHolder {
    lambda: String,
    iface: String,
    object: PathBuf,
    maps: Vec<loader::PinnedMap>,
}

/// Every attached and deployed lambda of this namespace.
fn map_holders(host: &Host) -> Result<Vec<MapHolder>> {
    let mut holders: Vec<MapHolder> = host
        .list()?
        .into_iter()
        .map(|l| MapHolder {
            lambda: l.record.lambda,
            iface: l.record.iface,
            object: l.record.object,
            maps: l.record.maps,
        })
        .collect();
    holders.extend(host.deploy_records()?.into_iter().map(|r| MapHolder {
        lambda: r.name,
        iface: r.iface,
        object: r.object,
        maps: r.maps,
    }));
    holders.extend(host.coalesced_records()?.into_iter().map(|r| MapHolder {
        lambda: r.name,
        iface: r.iface,
        object: r.stored_object,
        maps: r.maps,
    }));
    Ok(holders)
}

fn ls(host: &Host, json: bool) -> Result<ExitCode> {
    let listed = map_holders(host)?;
    let mut rows = Vec::new();
    let mut failed = false;
    for r in &listed {
        for m in &r.maps {
            let opened = open_pin(&m.pin).and_then(|map| {
                // A ring buffer has no elements to count (the kernel refuses to iterate it);
                // its records are read, and consumed, by `lambdactl logs`.
                if map.spec().map_type.is_ring_buffer() {
                    return Ok((map, 0));
                }
                let count = map
                    .entries()
                    .with_context(|| format!("reading {}", m.pin.display()))?
                    .len();
                Ok((map, count))
            });
            let row = match opened {
                Ok((map, count)) => {
                    let spec = map.spec();
                    let (types, _) = types_for(&r.object, &m.name, spec);
                    json!({
                        "lambda": r.lambda,
                        "iface": r.iface,
                        "map": m.name,
                        "type": spec.map_type.to_string(),
                        "key_size": spec.key_size,
                        "value_size": spec.value_size,
                        "max_entries": spec.max_entries,
                        "entries": count,
                        "key_type": types.key.as_ref().map(TypeLayout::type_name),
                        "value_type": types.value.as_ref().map(TypeLayout::type_name),
                        "pin": m.pin,
                    })
                }
                Err(e) => {
                    failed = true;
                    json!({
                        "lambda": r.lambda,
                        "iface": r.iface,
                        "map": m.name,
                        "pin": m.pin,
                        "error": format!("{e:#}"),
                    })
                }
            };
            rows.push(row);
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else if listed.is_empty() {
        println!("no lambdas attached or deployed in this network namespace");
    } else if rows.is_empty() {
        println!("the attached lambdas have no maps");
    } else {
        print_table(&rows);
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// `maps ls --vm`: the maps of a `lambdactl run` process, as `ls` lists pinned ones.
fn ls_vm(client: &crate::vm_control::Client, json: bool) -> Result<ExitCode> {
    let listing = client.maps()?;
    let object = PathBuf::from(listing["object"].as_str().unwrap_or_default());
    let rows: Vec<Value> = listing["maps"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|m| {
            let mut row = m.clone();
            let name = m["name"].as_str().unwrap_or_default();
            // The listing's fields are those of a `MapSpec`; rebuild it for the BTF lookup.
            let spec = MapSpec {
                name: name.to_owned(),
                map_type: loader::maps::MapType::from_raw(
                    m["type_id"]
                        .as_u64()
                        .and_then(|n| u32::try_from(n).ok())
                        .unwrap_or(0),
                ),
                key_size: m["key_size"]
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .unwrap_or(0),
                value_size: m["value_size"]
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .unwrap_or(0),
                max_entries: m["max_entries"]
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .unwrap_or(0),
                flags: 0,
            };
            let (types, _) = types_for(&object, name, &spec);
            row["lambda"] = listing["lambda"].clone();
            row["iface"] = json!("vm");
            row["map"] = json!(name);
            row["key_type"] = json!(types.key.as_ref().map(TypeLayout::type_name));
            row["value_type"] = json!(types.value.as_ref().map(TypeLayout::type_name));
            row["pin"] = json!(client.path());
            row
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else if rows.is_empty() {
        println!("the lambda has no maps");
    } else {
        print_table(&rows);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_table(rows: &[Value]) {
    let header = [
        "LAMBDA", "IFACE", "MAP", "TYPE", "KEY", "VALUE", "MAX", "ENTRIES", "PIN",
    ];
    let sized = |row: &Value, size: &str, ty: &str| match row[ty].as_str() {
        Some(t) => format!("{} ({t})", row[size]),
        None => row[size].to_string(),
    };
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let s = |k: &str| row[k].as_str().unwrap_or("").to_owned();
            if let Some(err) = row["error"].as_str() {
                return vec![s("lambda"), s("iface"), s("map"), format!("error: {err}")];
            }
            vec![
                s("lambda"),
                s("iface"),
                s("map"),
                s("type"),
                sized(row, "key_size", "key_type"),
                sized(row, "value_size", "value_type"),
                row["max_entries"].to_string(),
                row["entries"].to_string(),
                s("pin"),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        // An error row's message (its last cell) runs on freely instead of widening a column.
        let sized = if row.len() == header.len() {
            row.len()
        } else {
            row.len() - 1
        };
        for (w, cell) in widths.iter_mut().zip(&row[..sized]) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let print = |cells: &[String]| {
        let line: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    };
    print(&header.map(String::from));
    for row in &cells {
        print(row);
    }
}

fn type_label(layout: Option<&TypeLayout>, size: u32) -> String {
    match layout {
        Some(t) => format!("{} ({size} B)", t.type_name()),
        None => format!("{size} B"),
    }
}

fn dump(m: &Opened, json: bool) -> Result<ExitCode> {
    let entries = m
        .map
        .entries()
        .with_context(|| format!("reading {}", m.label()))?;
    if json {
        let mut out = m.header_json();
        out["entries"] = Value::Array(entries.iter().map(|(k, v)| m.entry_json(k, v)).collect());
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    let spec = m.spec();
    println!(
        "{} on {}: {}, key {}, value {}, {} of {} entries",
        m.label(),
        m.iface,
        spec.map_type,
        type_label(m.types.key.as_ref(), spec.key_size),
        type_label(m.types.value.as_ref(), spec.value_size),
        entries.len(),
        spec.max_entries
    );
    if let Some(note) = &m.types_note {
        println!("note: {note}");
    }
    for (k, v) in &entries {
        print_entry(m, k, v);
    }
    Ok(ExitCode::SUCCESS)
}

/// `key => value` on one line when both fit one, else the key and then indented lines.
fn print_entry(m: &Opened, key: &[u8], value: &[u8]) {
    let key_text = m.key_text(key);
    let lines = m.value_lines(value);
    if m.types.key.is_none() && key_text.starts_with("hex:") {
        println!("key:");
        for l in crate::hexdump(key).lines() {
            println!("  {l}");
        }
        println!("value:");
        for l in &lines {
            println!("  {l}");
        }
    } else if let [one] = lines.as_slice() {
        println!("{key_text} => {one}");
    } else {
        println!("{key_text} =>");
        for l in &lines {
            println!("  {l}");
        }
    }
}

fn get(m: &Opened, key: &str, json: bool) -> Result<ExitCode> {
    let k = m.key(key)?;
    let Some(v) = m.map.lookup(&k).with_context(|| m.label())? else {
        bail!("{}: no key {}", m.label(), m.key_text(&k));
    };
    if json {
        let mut out = m.header_json();
        out["entry"] = m.entry_json(&k, &v);
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for l in m.value_lines(&v) {
            println!("{l}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn set(m: &Opened, key: &str, value: &str, flags: UpdateFlags) -> Result<ExitCode> {
    let k = m.key(key)?;
    let v = m.value(value)?;
    m.map.update(&k, &v, flags).map_err(|e| match e {
        MapError::Exists => anyhow!(
            "{}: key {} exists (--flags noexist only creates)",
            m.label(),
            m.key_text(&k)
        ),
        MapError::NotFound => anyhow!(
            "{}: no key {} (--flags exist only updates)",
            m.label(),
            m.key_text(&k)
        ),
        MapError::Full => anyhow!(
            "{}: the map is full ({} entries), or the index is out of range",
            m.label(),
            m.spec().max_entries
        ),
        other => anyhow!("{}: update failed: {other}", m.label()),
    })?;
    println!("set {} {}", m.label(), m.key_text(&k));
    Ok(ExitCode::SUCCESS)
}

fn del(m: &Opened, key: &str) -> Result<ExitCode> {
    let k = m.key(key)?;
    m.map.delete(&k).map_err(|e| match e {
        MapError::NotFound => anyhow!("{}: no key {}", m.label(), m.key_text(&k)),
        MapError::DeleteFromArray => anyhow!(
            "{}: an array's elements cannot be deleted (set the element to zero instead)",
            m.label()
        ),
        other => anyhow!("{}: delete failed: {other}", m.label()),
    })?;
    println!("deleted {} {}", m.label(), m.key_text(&k));
    Ok(ExitCode::SUCCESS)
}
