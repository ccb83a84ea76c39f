//! Files served to clients: request paths, kernel-enforced containment under the root, and the
//! per-worker cache of memory maps that DATA blocks are sent from, and uploads written safely.

pub mod cache;
pub mod netascii;
mod nocase;
pub mod path;
pub mod root;
pub mod scratch;
pub mod upload;

pub use cache::{FileCache, FileVersion};
pub use path::{PathError, normalize};
pub use root::{OpenError, Root};
pub use upload::{TreeRelation, Upload, UploadError, UploadRoot, WritePolicy};
