//! What the server and the load generator both need from the kernel: control messages with a
//! checked layout, socket options, resource limits, synchronous sends and io_uring ring helpers.
