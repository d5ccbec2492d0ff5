//! Attach: copies a running container's output to any number of attachers
//! and feeds their input to its stdin, through the container's
//! [`AttachPoint`] (see `stdio` for how output reaches it).

use std::future::Future;
use std::io::Write;
use std::sync::Arc;

use berth_proto::shim::stream_input::Input;
use berth_proto::shim::stream_output::Output;
use berth_proto::shim::{AttachStart, StreamInput, StreamOutput};
use tokio::sync::{broadcast, mpsc};
use tonic::{Status, Streaming};

use crate::error::Result;
use crate::stdio::{AttachPoint, Chunk};
use crate::stream::Stream;
use crate::table::Table;

/// Attach: the first message names the running container and which
/// streams the attacher wants; the rest is stdin and resizes. The returned
/// receiver is the RPC's output.
pub async fn attach(
    table: &Table,
    mut input: Streaming<StreamInput>,
) -> Result<mpsc::Receiver<Result<StreamOutput, Status>>> {
    let start = crate::stream::opening(&mut input, "Attach", "attach", |i| match i {
        Input::Attach(start) => Some(start),
        _ => None,
    })
    .await?;
    let c = table.running(&start.id)?;
    let point = c.attach.clone();
    let exited = async move { c.wait_exited().await.exit_code };
    Ok(session(start.id.clone(), point, exited, start, input))
}

/// Runs one attach session to the container `id`; the returned receiver is
/// the RPC's output. `exited` resolves with the container's exit code once
/// it has exited and its output has drained.
fn session(
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
