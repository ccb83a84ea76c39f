//! The commit thread: makes finished uploads durable off the workers.
//!
//! `fsync` and the rename that puts an upload in place wait for the disk, which a worker must
//! never do. A worker hands the finished [`Upload`] to this thread over a channel and goes on;
//! the thread commits it, sends the result back on that worker's channel and wakes the worker.

use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

use super::io::Token;
use crate::fs::{Upload, UploadError};

/// An upload to commit, from worker `worker`, for its transfer `token`.
#[derive(Debug)]
pub(crate) struct CommitJob {
    pub(crate) worker: usize,
    pub(crate) token: Token,
    pub(crate) upload: Upload,
}

/// The result, back to the worker.
#[derive(Debug)]
pub(crate) struct CommitDone {
    pub(crate) token: Token,
    pub(crate) result: Result<u64, UploadError>,
}

/// A worker's end of the commit channels.
#[derive(Debug)]
pub(crate) struct CommitLink {
    pub(crate) jobs: Sender<CommitJob>,
    pub(crate) done: Receiver<CommitDone>,
}

/// Starts the commit thread for `workers` workers; `wake(w)` wakes worker `w`. Returns each
/// worker's link and the thread, which ends when every worker has dropped its link.
pub(crate) fn start(
    workers: usize,
    wake: impl Fn(usize) + Send + 'static,
) -> std::io::Result<(Vec<CommitLink>, JoinHandle<()>)> {
    let (jobs_tx, jobs_rx) = crossbeam_channel::unbounded::<CommitJob>();
    let mut done_txs = Vec::new();
    let mut links = Vec::new();
    for _ in 0..workers {
        let (tx, rx) = crossbeam_channel::unbounded();
        done_txs.push(tx);
        links.push(CommitLink { jobs: jobs_tx.clone(), done: rx });
    }
    drop(jobs_tx);
    let thread = std::thread::Builder::new().name("bootstorm-commit".into()).spawn(move || {
        for job in jobs_rx {
            let result = job.upload.commit();
            if let Some(tx) = done_txs.get(job.worker) {
                let _ = tx.send(CommitDone { token: job.token, result });
                wake(job.worker);
            }
        }
    })?;
    Ok((links, thread))
}
