//! Files served to clients: request paths, kernel-enforced containment under the root, and the
//! per-worker cache of memory maps that DATA blocks are sent from.

pub mod cache;
pub mod path;
pub mod root;

pub use cache::{FileCache, FileVersion};
pub use path::{PathError, normalize};
pub use root::{OpenError, Root};
