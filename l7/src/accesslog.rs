//! The access log: one line per request, written to stdout by a dedicated thread so a slow
//! reader (a full pipe, a stalled journald) never blocks the event loop. When the queue is full,
//! lines are dropped and counted (`vip_l7_rejected_total{reason="access_log_dropped"}`) instead.

use std::io::Write;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::OnceLock;

/// Lines waiting to be written before new ones are dropped.
const QUEUE_LINES: usize = 65_536;

static SENDER: OnceLock<SyncSender<String>> = OnceLock::new();

fn sender() -> &'static SyncSender<String> {
    SENDER.get_or_init(|| {
        let (tx, rx) = sync_channel::<String>(QUEUE_LINES);
        let spawned = std::thread::Builder::new()
            .name("vip-l7-access-log".into())
            .spawn(move || {
                let stdout = std::io::stdout();
                let mut out = std::io::BufWriter::with_capacity(64 * 1024, stdout.lock());
                while let Ok(line) = rx.recv() {
                    let _ = out.write_all(line.as_bytes());
                    // Flush when the queue is drained, so lines appear promptly when idle.
                    while let Ok(more) = rx.try_recv() {
                        let _ = out.write_all(more.as_bytes());
                    }
                    let _ = out.flush();
                }
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start the access-log thread, access log disabled: {e}");
        }
        tx
    })
}

/// Queues one line (must end with '\n'); false when it was dropped.
pub fn log(line: String) -> bool {
    match sender().try_send(line) {
        Ok(()) => true,
        Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => false,
    }
}
