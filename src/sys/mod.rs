//! What the server and the load generator both need from the kernel: control messages with a
//! checked layout, the sockets a service manager passes, socket options, resource limits, dropping root, synchronous sends, io_uring ring helpers, an
//! epoll set, zeroed arrays in pages of their own and the monotonic clock.
//!
//! Each helper is written once here; the server's backends and the load generator call it.

pub mod activation;
pub mod clock;
pub mod cmsg;
pub mod epoll;
pub mod neigh;
pub mod pages;
pub mod privilege;
pub mod rlimit;
pub mod send;
pub mod sockopt;
pub mod uring;
