//! Attach: copies a running container's output to any number of attachers
//! and feeds their input to its stdin.
//!
//! The log copier (logs.rs) stays the only reader of the container's pipes
//! or terminal; each chunk it reads is also offered to a broadcast channel.
//! Offering never waits: a container must never be slowed by an attacher
//! (the same rule as a full log disk), so an attacher that falls more than
//! [`FANOUT_CHUNKS`] chunks behind loses the oldest ones, and is told so in
//! the shim's log. The log itself always gets everything.

use std::fs::File;
use std::future::Future;
use std::io::Write;
use std::sync::{Arc, Mutex};

use berth_proto::shim::stream_input::Input;
use berth_proto::shim::stream_output::Output;
use berth_proto::shim::{AttachStart, StreamInput, StreamOutput};
use tokio::sync::{broadcast, mpsc};
use tonic::{Status, Streaming};

use crate::logs::Stream;

/// Chunks an attacher may fall behind before it loses output.
pub const FANOUT_CHUNKS: usize = 512;

/// One piece of output, from the stream it was read on.
pub type Chunk = (Stream, Arc<[u8]>);

/// The broadcast side of a container's output.
#[derive(Clone)]
pub struct Fanout(broadcast::Sender<Chunk>);

impl Default for Fanout {
    fn default() -> Self {
        Fanout(broadcast::channel(FANOUT_CHUNKS).0)
    }
}

impl Fanout {
    /// Offers `data` to the current attachers (copied only when there are some).
    pub fn send(&self, stream: Stream, data: &[u8]) {
        if self.0.receiver_count() > 0 {
            let _ = self.0.send((stream, Arc::from(data)));
        }
    }

    /// A new attacher: output from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Chunk> {
        self.0.subscribe()
    }
}

/// What attachers of one container share.
pub struct AttachPoint {
    /// The container's output.
    pub fanout: Fanout,
    /// A duplicate of the terminal master (tty containers): keystrokes and
    /// resizes go there. Blocking, like the copier's descriptor it shares.
    pub terminal: Option<Arc<File>>,
    /// Write end of the stdin pipe (`stdin: true` without a terminal); gone
    /// once a `stdin_once` container's first attacher closed it.
    pub stdin_pipe: Mutex<Option<Arc<File>>>,
    /// The container was created with `stdin: true`.
    pub stdin: bool,
    /// The container was created with `stdin_once: true`.
    pub stdin_once: bool,
}

impl AttachPoint {
    /// The attach point of a new container: `terminal` is a duplicate of
    /// its terminal master, `stdin_pipe` the write end of its stdin pipe.
    pub fn new(terminal: Option<File>, stdin_pipe: Option<File>, stdin: bool, stdin_once: bool) -> Self {
        AttachPoint {
            fanout: Fanout::default(),
            terminal: terminal.map(Arc::new),
            stdin_pipe: Mutex::new(stdin_pipe.map(Arc::new)),
            stdin,
            stdin_once,
        }
    }

    fn stdin_writer(&self) -> Option<Arc<File>> {
        if !self.stdin {
            return None;
        }
        match &self.terminal {
            Some(t) => Some(t.clone()),
            None => self.stdin_pipe.lock().expect("stdin lock").clone(),
        }
    }

    /// An attacher is done with stdin: a `stdin_once` container's stdin
    /// closes (it reads EOF once no write is in flight).
    fn stdin_done(&self) {
        if self.stdin_once && self.terminal.is_none() {
            self.stdin_pipe.lock().expect("stdin lock").take();
        }
    }
}

/// Runs one attach session to the container `id`; the returned receiver is
/// the RPC's output. `exited` resolves with the container's exit code once
/// it has exited and its output has drained.
pub fn session(
    id: String,
    point: Arc<AttachPoint>,
    exited: impl Future<Output = i32> + Send + 'static,
    start: AttachStart,
    mut input: Streaming<StreamInput>,
) -> mpsc::Receiver<Result<StreamOutput, Status>> {
    let (tx, rx) = mpsc::channel(64);
    let mut output = point.fanout.subscribe();
    let input_point = point.clone();
    let feed = tokio::spawn(async move {
        let writer = if start.stdin {
            input_point.stdin_writer()
        } else {
            None
        };
        loop {
            match input.message().await {
                Ok(Some(StreamInput {
                    input: Some(Input::Stdin(data)),
                })) => {
                    if let Some(w) = writer.clone() {
                        let wrote = tokio::task::spawn_blocking(move || (&*w).write_all(&data)).await;
                        if !matches!(wrote, Ok(Ok(()))) {
                            break;
                        }
                    }
                }
                Ok(Some(StreamInput {
                    input: Some(Input::Resize(size)),
                })) => {
                    if let Some(t) = &input_point.terminal {
                        let _ = crate::fdio::set_window_size(&**t, size.width as u16, size.height as u16);
                    }
                }
                Ok(Some(StreamInput {
                    input: Some(Input::StdinClose(_)),
                })) => break,
                Ok(Some(_)) => {}
                // The attacher went away.
                Ok(None) | Err(_) => break,
            }
        }
        if start.stdin {
            input_point.stdin_done();
        }
    });
    tokio::spawn(async move {
        let wants = |s: Stream| match s {
            Stream::Stdout => start.stdout,
            Stream::Stderr => start.stderr,
        };
        let forward = |(s, data): Chunk| {
            let out = match s {
                Stream::Stdout => Output::Stdout(data.to_vec()),
                Stream::Stderr => Output::Stderr(data.to_vec()),
            };
            (wants(s), StreamOutput { output: Some(out) })
        };
        tokio::pin!(exited);
        let exit = loop {
            tokio::select! {
                got = output.recv() => match got {
                    Ok(chunk) => {
                        let (wanted, msg) = forward(chunk);
                        if wanted && tx.send(Ok(msg)).await.is_err() {
                            break None;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(container = %id, chunks = n, "attacher fell behind; it lost output");
                    }
                    Err(broadcast::error::RecvError::Closed) => break Some((&mut exited).await),
                },
                code = &mut exited => break Some(code),
            }
        };
        if let Some(exit_code) = exit {
            // The copiers finished before the exit was marked: what is left
            // in the channel is the container's last output.
            while let Ok(chunk) = output.try_recv() {
                let (wanted, msg) = forward(chunk);
                if wanted && tx.send(Ok(msg)).await.is_err() {
                    break;
                }
            }
            let _ = tx
                .send(Ok(StreamOutput {
                    output: Some(Output::ExitCode(exit_code)),
                }))
                .await;
        }
        feed.abort();
    });
    rx
}
