//! Replacing the serving policy of a running server ([`Server::reload`]), and what a reload did
//! ([`Reloaded`]).
//!
//! A reload posts the new policy in every worker's control (`control.rs`) and wakes the worker;
//! the worker takes it between two events of its loop (`turn.rs`), so that no request is ever
//! judged by half of one policy and half of another, and the engine serves new requests under it
//! (`engine/policy.rs`). The caller waits until every worker has taken it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::warn;

use super::control::Posted;
use super::worker::Server;
use crate::config::{ConfigError, ServerConfig};

/// How long [`Server::reload`] waits for every worker to take the new policy. A worker takes it
/// as soon as it is woken, between two events; this bounds the wait on a worker stuck in a long
/// event (a large netascii file indexed on its first request, an `openat2` on a slow file system).
const APPLY_WAIT: Duration = Duration::from_secs(2);

/// What a [`Server::reload`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// The settings of the new configuration that differ from those in force but cannot change
    /// while the server runs, by command-line flag: `--root`, `--serve-whole-filesystem`,
    /// `--listen`, `--workers`, `--no-pin`, `--grace`, `--no-symlinks`, `--file-cache`, `--io`,
    /// `--no-gso`, `--recv-buffer`, `--ring-entries`, `--rx-buffers`, `--send-slots`,
    /// `--single-port`, `--port-range`, `--max-transfers`, `--allow-write`, `--upload-dir`,
    /// `--uploads-in-root`, `--overwrite-served-files`, `--allow-single-port-uploads` (see
    /// [`ServerConfig::fixed_differences`]). They are not applied: the server keeps running with
    /// the values it started with until it is restarted.
    pub not_applied: Vec<&'static str>,
    /// The serving-policy settings that changed and now apply to new requests, by command-line
    /// flag (the field's path where no flag sets it; see
    /// [`ServePolicy::differences`](crate::config::ServePolicy::differences)). Empty when the
    /// policy is the one in force; the reload still made every worker forget its cached files.
    /// (The upload settings are listed when they change, but change nothing while the server
    /// runs without uploads: `--allow-write` is then in `not_applied`.)
    pub changed: Vec<&'static str>,
}

impl Server {
    /// Replaces the serving policy of every worker with `new`'s ([`ServerConfig::serve`]), and
    /// returns once every worker has taken it: a request sent after `reload` returns is judged by
    /// the new policy.
    ///
    /// What changes, for requests that arrive after the reload: who is served (`--allow`,
    /// `--allow-write-from`), what negotiation grants (`--max-blksize`, `--max-windowsize`,
    /// `--refuse-option`), the retransmission settings (`--timeout`, `--min-rto`, `--max-rto`,
    /// `--retries`), the per-source rate (`--rate-per-source`, `--burst-per-source`,
    /// `--rate-limit-always`; each source's bucket starts again full when the rate changed),
    /// request logging (`--log-requests`), `--serve-private-files`, and what uploads may do
    /// (`--create`, `--overwrite`, `--umask`, `--max-upload-size`). The blind budget of the port
    /// settings in force caps windows as at start ([`ServerConfig::effective_policy`]).
    ///
    /// What does not change: transfers in flight go on as they started, with the options granted,
    /// the version of the file they started sending, and the retransmission settings of their
    /// start, even from a client the new `--allow` leaves out. Every setting outside the serving
    /// policy is fixed for the server's life (listen addresses, workers, I/O backend and sizes,
    /// port settings, root, upload directory, …): those of `new` that differ are listed in
    /// [`Reloaded::not_applied`] and ignored.
    ///
    /// Every reload, even one that changes nothing, makes each worker forget the files it keeps
    /// open: the next request of each file opens and maps it again (transfers in flight keep
    /// their version). A file replaced on disk is served anew from then on, even where its
    /// `statx` identity, checked at each request, did not show the change.
    ///
    /// # Errors
    /// Nothing changes when `new` fails [`ServerConfig::validate`], or when, uploads being on,
    /// its serving policy fails it beside the upload settings in force (say `--overwrite` into
    /// an upload directory in the served tree without `--overwrite-served-files`): the error
    /// says why, and the policy in force keeps serving.
    ///
    /// A worker that has not taken the policy after 2 seconds (busy in one long event) is
    /// logged and not waited for: it takes it as soon as that event ends.
    pub fn reload(&self, new: &ServerConfig) -> Result<Reloaded, ConfigError> {
        new.validate()?;
        let started = &self.config;
        // The new policy beside the fixed settings in force: the blind budget of the port settings
        // in force, and the upload policy checked against the upload settings in force. (Without
        // uploads, their policy has no effect: every upload is refused.)
        let in_force = ServerConfig { serve: new.serve.clone(), ..started.clone() };
        if started.write.is_some() {
            in_force.validate()?;
        }
        let policy = Arc::new(in_force.effective_policy());
        let Some((first, rest)) = self.workers.split_first() else {
            return Ok(Reloaded { not_applied: started.fixed_differences(new), changed: Vec::new() });
        };
        // The first worker's slot stays locked while posting: concurrent reloads post in turn,
        // each to every worker, and the last one posted wins everywhere.
        let mut slot = first.control.posted();
        let serving = slot.as_ref().map_or(&started.serve, |p| &p.serve);
        let changed = serving.differences(&new.serve);
        let generation = slot.as_ref().map_or(0, |p| p.generation) + 1;
        let posted = Arc::new(Posted { generation, serve: new.serve.clone(), policy });
        first.control.post(&mut slot, &posted);
        for w in rest {
            w.control.post(&mut w.control.posted(), &posted);
        }
        drop(slot);
        for w in &self.workers {
            w.control.poke();
        }
        self.wait_applied(generation);
        Ok(Reloaded { not_applied: started.fixed_differences(new), changed })
    }

    /// The configuration in force: as started, with the serving policy of the last
    /// [`reload`](Self::reload) (as given to it, before the blind budget is applied).
    pub fn config(&self) -> ServerConfig {
        let reloaded = self.workers.first().and_then(|w| w.control.posted().as_ref().map(|p| p.serve.clone()));
        match reloaded {
            Some(serve) => ServerConfig { serve, ..self.config.clone() },
            None => self.config.clone(),
        }
    }

    /// Waits until every running worker has taken the policy of `generation`, at most
    /// [`APPLY_WAIT`].
    fn wait_applied(&self, generation: u64) {
        let deadline = Instant::now() + APPLY_WAIT;
        for (w, worker) in self.workers.iter().enumerate() {
            // A worker that has ended (after a stop) takes nothing more.
            while worker.control.applied_generation() < generation && !worker.thread.is_finished() {
                if Instant::now() >= deadline {
                    warn!(
                        worker = w,
                        "the worker has not taken the new serving policy yet: it serves under it after its current event"
                    );
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

#[cfg(test)]
mod tests;
