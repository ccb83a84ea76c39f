//! Log records on stderr, in a form a program can parse whatever a client sends.
//!
//! Two formats, chosen by `--log-format` (docs/logs.md describes both):
//!
//! - text, logfmt: `ts=2024-05-01T12:00:00.123Z level=info msg="transfer finished" key=value …`.
//!   Every value is written bare only when it is made of `[A-Za-z0-9_.:/@+-]`; anything else is
//!   quoted, with `\"`, `\\`, `\n`, `\r`, `\t` and `\xNN` (every other byte outside printable
//!   ASCII) escaped, so no value, whoever chose it, can end its field or start another. No colour.
//! - JSON: one object per line, `ts`, `level`, `msg` and then every field, strings escaped by
//!   serde_json.
//!
//! Under systemd (`JOURNAL_STREAM` set) the text format leaves out `ts`: journald stamps each
//! record itself.
//!
//! A record may carry a field named [`SPLICE`] whose value is `name=number` pairs (the counters):
//! each pair becomes a field of its own. Pairs that are not a snake-case name and a plain number
//! are written as an ordinary quoted value instead, so the splice cannot carry a forged field.

use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::cli::LogFormat;

/// The field whose `name=number` pairs are written as fields of their own.
pub(crate) const SPLICE: &str = "fields";

/// Logs to stderr at `level` when one was given (flags win over the environment), else by
/// `RUST_LOG`, else at `info`; in `format`. The level can be changed later (a reload) through
/// the returned [`LogLevel`].
pub(crate) fn init(level: Option<&str>, format: LogFormat) -> LogLevel {
    let format = Records { json: format == LogFormat::Json, timestamps: std::env::var_os("JOURNAL_STREAM").is_none() };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(level))
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .event_format(format)
        .with_filter_reloading();
    let handle = builder.reload_handle();
    builder.init();
    LogLevel(Box::new(move |f| handle.reload(f).map_err(|e| e.to_string())))
}

/// The filter for `level`, as [`init`] chooses it.
fn filter(level: Option<&str>) -> EnvFilter {
    match level {
        Some(level) => EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info")),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    }
}

/// Changes the level of the records logged from now on.
pub(crate) struct LogLevel(Box<dyn Fn(EnvFilter) -> Result<(), String>>);

impl LogLevel {
    /// Logs at `level` (as `--log-level` gives it: `None` is `RUST_LOG`, else `info`).
    pub(crate) fn set(&self, level: Option<&str>) -> Result<(), String> {
        (self.0)(filter(level))
    }
}

/// Writes one record per line, as logfmt or as JSON.
struct Records {
    /// JSON rather than logfmt.
    json: bool,
    /// Whether text records start with `ts=` (JSON records always carry `ts`).
    timestamps: bool,
}

impl<S, N> FormatEvent<S, N> for Records
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let level = level_name(*event.metadata().level());
        let line = if self.json {
            json_line(&rfc3339_now(), level, &fields)
        } else {
            text_line(self.timestamps.then(rfc3339_now).as_deref(), level, &fields)
        };
        writer.write_str(&line)
    }
}

/// `level` in lower case, as both formats write it.
fn level_name(level: Level) -> &'static str {
    match level {
        Level::ERROR => "error",
        Level::WARN => "warn",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    }
}

/// A field's value, as the event recorded it.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    /// A string, or anything recorded through `Display` or `Debug`.
    Str(String),
    /// A whole number.
    Int(i128),
    /// A float, as Rust prints it (the engine rounds the ones it wants rounded).
    Float(f64),
    /// A flag.
    Bool(bool),
}

/// The message and the fields of one event, in the order they were recorded.
#[derive(Debug, Default)]
struct Fields {
    /// The message: the event's name.
    msg: String,
    /// Every other field.
    fields: Vec<(&'static str, Value)>,
}

impl Fields {
    fn push(&mut self, field: &Field, value: Value) {
        if field.name() == "message" {
            self.msg = match value {
                Value::Str(s) => s,
                other => display(&other),
            };
        } else if field.name() == SPLICE
            && let Value::Str(s) = &value
            && let Some(pairs) = splice(s)
        {
            self.fields.extend(pairs);
        } else {
            self.fields.push((field.name(), value));
        }
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.push(field, Value::Str(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.push(field, Value::Str(value.to_string()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push(field, Value::Int(value.into()));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.push(field, Value::Int(value.into()));
    }
    fn record_i128(&mut self, field: &Field, value: i128) {
        self.push(field, Value::Int(value));
    }
    fn record_u128(&mut self, field: &Field, value: u128) {
        match i128::try_from(value) {
            Ok(v) => self.push(field, Value::Int(v)),
            Err(_) => self.push(field, Value::Str(value.to_string())),
        }
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.push(field, Value::Float(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push(field, Value::Bool(value));
    }
}

/// `name=number name=number …` as fields, when every pair is a snake-case name and a plain
/// number (digits with at most one point); `None` otherwise.
fn splice(s: &str) -> Option<Vec<(&'static str, Value)>> {
    s.split(' ')
        .map(|pair| {
            let (name, num) = pair.split_once('=')?;
            let name_ok =
                !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            let num_ok = !num.is_empty()
                && num.bytes().all(|b| b.is_ascii_digit() || b == b'.')
                && num.bytes().filter(|&b| b == b'.').count() <= 1
                && !num.starts_with('.')
                && !num.ends_with('.');
            if !(name_ok && num_ok) {
                return None;
            }
            let value = match num.parse::<i128>() {
                Ok(n) => Value::Int(n),
                Err(_) => Value::Float(num.parse().ok()?),
            };
            // Field names are 'static in tracing; these come from a handful of fixed names
            // (counters, latency quantiles) logged a few times per run, so keeping them is cheap.
            Some((intern(name), value))
        })
        .collect()
}

/// A `'static` copy of `name`, made once per distinct name.
fn intern(name: &str) -> &'static str {
    use std::collections::HashSet;
    use std::sync::Mutex;
    static NAMES: Mutex<Option<HashSet<&'static str>>> = Mutex::new(None);
    let mut guard = NAMES.lock().unwrap_or_else(|e| e.into_inner());
    let set = guard.get_or_insert_with(HashSet::new);
    if let Some(&known) = set.get(name) {
        return known;
    }
    let leaked: &'static str = Box::leak(name.to_string().into_boxed_str());
    set.insert(leaked);
    leaked
}

/// A value as logfmt text, before quoting.
fn display(v: &Value) -> String {
    match v {
        Value::Str(s) => s.clone(),
        Value::Int(n) => n.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Bool(b) => b.to_string(),
    }
}

/// One logfmt line, newline included.
fn text_line(ts: Option<&str>, level: &str, f: &Fields) -> String {
    let mut line = String::with_capacity(128);
    if let Some(ts) = ts {
        line.push_str("ts=");
        line.push_str(ts);
        line.push(' ');
    }
    line.push_str("level=");
    line.push_str(level);
    line.push_str(" msg=");
    push_logfmt(&mut line, &f.msg);
    for (name, value) in &f.fields {
        line.push(' ');
        line.push_str(name);
        line.push('=');
        push_logfmt(&mut line, &display(value));
    }
    line.push('\n');
    line
}

/// Whether `b` may stand in a bare (unquoted) logfmt value.
fn bare(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"_.:/@+-".contains(&b)
}

/// Appends `value` bare when every byte may stand bare, else quoted and escaped.
pub(crate) fn push_logfmt(out: &mut String, value: &str) {
    if !value.is_empty() && value.bytes().all(bare) {
        out.push_str(value);
        return;
    }
    out.push('"');
    for b in value.bytes() {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x20..=0x7e => out.push(b as char),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    out.push('"');
}

/// One JSON object, newline included: `ts`, `level`, `msg`, then every field.
fn json_line(ts: &str, level: &str, f: &Fields) -> String {
    let mut line = String::with_capacity(160);
    let s = |v: &str| serde_json::Value::from(v).to_string();
    let _ = write!(line, "{{\"ts\":{},\"level\":{},\"msg\":{}", s(ts), s(level), s(&f.msg));
    for (name, value) in &f.fields {
        let v = match value {
            Value::Str(v) => serde_json::Value::from(v.as_str()),
            Value::Int(n) => match (i64::try_from(*n), u64::try_from(*n)) {
                (Ok(n), _) => n.into(),
                (_, Ok(n)) => n.into(),
                _ => n.to_string().into(),
            },
            // NaN and infinities have no JSON number: written as null.
            Value::Float(x) => serde_json::Number::from_f64(*x).map_or(serde_json::Value::Null, Into::into),
            Value::Bool(b) => (*b).into(),
        };
        let _ = write!(line, ",{}:{v}", s(name));
    }
    line.push_str("}\n");
    line
}

/// Now, as RFC 3339 in UTC with milliseconds: `2024-05-01T12:00:00.123Z`.
fn rfc3339_now() -> String {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    rfc3339(since.as_secs(), since.subsec_millis())
}

/// `secs` since the epoch and `millis` as RFC 3339 in UTC.
fn rfc3339(secs: u64, millis: u32) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z", rem / 3600, rem / 60 % 60, rem % 60)
}

/// The proleptic Gregorian date of a day number counted from 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logfmt(s: &str) -> String {
        let mut out = String::new();
        push_logfmt(&mut out, s);
        out
    }

    #[test]
    fn safe_values_stay_bare_and_the_rest_is_quoted_and_escaped() {
        assert_eq!(logfmt("pxelinux.0"), "pxelinux.0");
        assert_eq!(logfmt("127.0.0.1:69"), "127.0.0.1:69");
        assert_eq!(logfmt("[::1]:69"), "\"[::1]:69\"");
        assert_eq!(logfmt(""), "\"\"");
        assert_eq!(logfmt("a b=\"c\"\\\n\r\t\u{1}é"), "\"a b=\\\"c\\\"\\\\\\n\\r\\t\\x01\\xc3\\xa9\"");
    }

    #[test]
    fn splice_takes_only_names_and_numbers() {
        let got = splice("ok=3 p50_ms=1.25").unwrap();
        assert_eq!(got, vec![("ok", Value::Int(3)), ("p50_ms", Value::Float(1.25))]);
        for bad in ["ok=3 msg=x", "ok=3  x=1", "Ok=1", "ok=-1", "ok=1.", "ok", "a=1 b=\"2\""] {
            assert!(splice(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn dates_are_utc_civil_dates() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400 + 86_399, 7), "2000-02-29T23:59:59.007Z");
        assert_eq!(rfc3339(1_714_564_800, 123), "2024-05-01T12:00:00.123Z");
    }
}
