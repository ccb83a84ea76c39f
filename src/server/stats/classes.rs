//! File classes: the few operator-chosen names a requested file maps to in the metrics
//! (`--metrics-file-class`), never the file name itself.

use std::sync::OnceLock;

/// The most file classes `--metrics-file-class` may name (besides `other`): a label's values
/// must stay few.
pub const FILE_CLASSES_MAX: usize = 8;

/// File classes for the transfer-duration histograms: rules that map a requested file name
/// to one of a few operator-chosen names, everything else to `other` (never the name itself:
/// MAC-named files would make a label value per machine).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileClasses {
    names: Vec<String>,
    rules: Vec<(Box<[u8]>, usize)>,
}

/// A file-class rule refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FileClassError {
    /// Not `NAME=PATTERN`, or an empty part.
    #[error("file class {0:?}: expected NAME=PATTERN")]
    Syntax(String),
    /// A name that is no Prometheus label value of letters, digits, `_`, `-` and `.`, or `other`.
    #[error("file class name {0:?}: letters, digits, '_', '-' and '.' only, and not \"other\"")]
    Name(String),
    /// More names than [`FILE_CLASSES_MAX`].
    #[error("at most {FILE_CLASSES_MAX} file classes")]
    TooMany,
}

impl FileClasses {
    /// Adds a rule `NAME=PATTERN`: PATTERN is a glob (`*` any bytes, `?` one byte) when it has
    /// `*` or `?`, else a prefix, matched against the file name as the client sent it. Rules
    /// match in the order added; several may share a name.
    pub fn add(&mut self, rule: &str) -> Result<(), FileClassError> {
        let (name, pattern) = rule
            .split_once('=')
            .filter(|(n, p)| !n.is_empty() && !p.is_empty())
            .ok_or_else(|| FileClassError::Syntax(rule.to_string()))?;
        let valid = name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
        if !valid || name == "other" {
            return Err(FileClassError::Name(name.to_string()));
        }
        let class = match self.names.iter().position(|n| n == name) {
            Some(i) => i,
            None if self.names.len() == FILE_CLASSES_MAX => return Err(FileClassError::TooMany),
            None => {
                self.names.push(name.to_string());
                self.names.len() - 1
            }
        };
        self.rules.push((pattern.as_bytes().into(), class));
        Ok(())
    }

    /// The class names, in the order first given; `other` is index `names().len()`.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The class of file name `file`: the index of the first rule's name it matches, else
    /// `names().len()` (`other`). Allocates nothing.
    pub fn classify(&self, file: &[u8]) -> usize {
        self.rules.iter().find(|(p, _)| matches(p, file)).map_or(self.names.len(), |&(_, c)| c)
    }
}

/// Whether `name` matches `pattern`: a glob with `*` and `?`, or else a prefix.
pub(super) fn matches(pattern: &[u8], name: &[u8]) -> bool {
    if !pattern.iter().any(|b| matches!(b, b'*' | b'?')) {
        return name.starts_with(pattern);
    }
    // Iterative glob with one backtrack point: linear in practice, no recursion, no allocation.
    let (mut p, mut n, mut star, mut mark) = (0, 0, None, 0);
    while n < name.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some(p);
                mark = n;
                p += 1;
            }
            Some(&c) if c == b'?' || c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some(s) => {
                    p = s + 1;
                    mark += 1;
                    n = mark;
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

/// The file classes in force: set once by the program before the workers start.
static FILE_CLASSES: OnceLock<FileClasses> = OnceLock::new();

/// Sets the file classes for the whole process, before [`Server::start`](super::Server::start);
/// gives them back when they were set already.
pub fn set_file_classes(classes: FileClasses) -> Result<(), FileClasses> {
    FILE_CLASSES.set(classes)
}

/// The file classes in force (none, so everything is `other`, unless set).
pub fn file_classes() -> &'static FileClasses {
    static NONE: FileClasses = FileClasses { names: Vec::new(), rules: Vec::new() };
    FILE_CLASSES.get().unwrap_or(&NONE)
}
