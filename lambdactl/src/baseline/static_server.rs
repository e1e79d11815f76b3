//! The static-server baseline: the lambda's default content, from memory.

use lambda_ebpf::{LambdaHeader, Status};
use workloads::static_content::{INDEX_HTML, INDEX_NAME, NAME_MAX};

use super::Handler;

pub(crate) struct StaticServer;

impl Handler for StaticServer {
    fn handle(&mut self, header: &LambdaHeader, body: &[u8], out: &mut Vec<u8>) -> Status {
        if let Err(status) = super::single_fragment(header) {
            return status;
        }
        // The lambda's rules: a name of 1..=NAME_MAX bytes, looked up exactly.
        if body.is_empty() || body.len() > NAME_MAX {
            return Status::BadRequest;
        }
        if body == INDEX_NAME {
            out.extend_from_slice(INDEX_HTML);
            Status::Ok
        } else {
            Status::NotFound
        }
    }
}
