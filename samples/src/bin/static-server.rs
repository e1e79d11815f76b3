//! `static-server`: the paper's "simple server" lambda.
//!
//! The request body names an object (`index.html`); the lambda answers with that object's
//! content from the `OBJECTS` map, or `NOT_FOUND`. Contents change at runtime by writing the
//! pinned map; the object ships a default `index.html` that the loader seeds on attach.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]

#[cfg(target_arch = "bpf")]
mod lambda {
    use aya_ebpf::{macros::map, macros::xdp, maps::HashMap, programs::XdpContext};
    use lambda_ebpf::xdp::{XdpFrame, serve};
    use lambda_ebpf::{MAX_BODY, Request, Status, Verdict, padded, seed};
    // Shared with the native baseline (`lambdactl baseline static-server`).
    use workloads::static_content::{INDEX_HTML, INDEX_NAME, NAME_MAX};

    /// Most objects the map holds.
    const OBJECTS_MAX: u32 = 256;

    /// Map key: the object name, zero-padded.
    #[repr(C)]
    pub struct ObjectName([u8; NAME_MAX]);

    /// Map value: the content and its length.
    #[repr(C)]
    pub struct Object {
        len: u32,
        data: [u8; MAX_BODY],
    }

    #[map]
    static OBJECTS: HashMap<ObjectName, Object> = HashMap::with_max_entries(OBJECTS_MAX, 0);

    // Misses are logged (`lambdactl logs static-server`): a name nobody serves is worth a
    // line; hits, the path the benchmarks time, log nothing.
    lambda_ebpf::declare_log!();

    seed!(OBJECTS, INDEX_SEED: ObjectName => Object = (
        ObjectName(padded(INDEX_NAME)),
        Object { len: INDEX_HTML.len() as u32, data: padded(INDEX_HTML) }
    ));

    #[xdp]
    pub fn static_server(ctx: XdpContext) -> u32 {
        serve(&ctx, handle)
    }

    #[inline(always)]
    fn handle(frame: &mut XdpFrame<'_>, request: &Request) -> Verdict {
        // Two replies: the content lies in the map and the errors have no body, and a body
        // pointer that is one or the other after the two meet is one no verifier can follow.
        // The empty reply's copy of the rewrite is the cheap one (no body store, constant
        // lengths).
        match lookup(frame, request) {
            Ok(content) => request.reply(frame, Status::Ok, content),
            Err(status) => request.reply(frame, status, &[]),
        }
    }

    #[inline(always)]
    fn lookup(frame: &XdpFrame<'_>, request: &Request) -> Result<&'static [u8], Status> {
        let name_len = request.body_len();
        if name_len == 0 || name_len > NAME_MAX {
            return Err(Status::BadRequest);
        }
        let mut name = ObjectName([0; NAME_MAX]);
        match request.read_body(frame, 0, &mut name.0[..name_len]) {
            Ok(n) if n == name_len => {}
            _ => return Err(Status::Internal),
        }
        // SAFETY: map values live as long as the program runs; this invocation only reads it.
        let Some(object) = (unsafe { OBJECTS.get(&name) }) else {
            log_line_with(b"not found: ", &name.0);
            return Err(Status::NotFound);
        };
        object
            .data
            .get(..object.len as usize)
            .ok_or(Status::Internal)
    }
}

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!("static-server is a lambda: build it with `cargo xtask build-ebpf`");
}
