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
        // Decide the answer first and reply once: every `reply` call site is a full inlined copy
        // of the header rewrite and checksum code.
        let (status, body) = lookup(frame, request);
        request.reply(frame, status, body)
    }

    #[inline(always)]
    fn lookup(frame: &XdpFrame<'_>, request: &Request) -> (Status, &'static [u8]) {
        let name_len = request.body_len();
        if name_len == 0 || name_len > NAME_MAX {
            return (Status::BadRequest, &[]);
        }
        let mut name = ObjectName([0; NAME_MAX]);
        match request.read_body(frame, 0, &mut name.0[..name_len]) {
            Ok(n) if n == name_len => {}
            _ => return (Status::Internal, &[]),
        }
        // SAFETY: map values live as long as the program runs; this invocation only reads it.
        let Some(object) = (unsafe { OBJECTS.get(&name) }) else {
            log_line_with(b"not found: ", &name.0);
            return (Status::NotFound, &[]);
        };
        match object.data.get(..object.len as usize) {
            Some(content) => (Status::Ok, content),
            None => (Status::Internal, &[]),
        }
    }
}

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!("static-server is a lambda: build it with `cargo xtask build-ebpf`");
}
