//! The static-server workload: the object it serves by default. The lambda seeds its
//! `OBJECTS` map with this content; the native baseline serves it from memory.

/// The name of the object every static-server serves out of the box.
pub const INDEX_NAME: &[u8] = b"index.html";

/// Its content.
pub const INDEX_HTML: &[u8] = b"<!doctype html>\n<html><head><title>lambda-nic</title></head>\n<body><h1>Hello from a lambda in the XDP path</h1></body></html>\n";

/// Longest object name, in bytes (the lambda's map key size).
pub const NAME_MAX: usize = 64;
