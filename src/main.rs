//! The bootstorm server binary.

fn main() {}
