//! The transport-independent core of port-forward: one client connection
//! to one port of a pod.
//!
//! The pod's loopback is only reachable inside its network namespace, so
//! the socket is created there: a short-lived thread setns(2)s into the
//! pinned netns (setns changes only the calling thread), connects, and
//! hands the connected socket back; a socket stays in the namespace it was
//! created in, so tokio drives it from any thread afterwards. Host-network
//! pods have no pin and connect from berthd's own namespace.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

/// How long connecting to the pod's port may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to `port` on the loopback of the network namespace `netns`
/// (None: berthd's own), 127.0.0.1 first, then ::1 (what `localhost`
/// means to most servers).
pub async fn connect_in_netns(netns: Option<PathBuf>, port: u16) -> std::io::Result<tokio::net::TcpStream> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    berth_sys::thread::builder()
        .name(format!("portforward-{port}"))
        .spawn(move || {
            let _ = tx.send(connect_blocking(netns.as_deref(), port));
        })?;
    let std_stream = rx
        .await
        .map_err(|_| std::io::Error::other("the connecting thread died"))??;
    std_stream.set_nonblocking(true)?;
    tokio::net::TcpStream::from_std(std_stream)
}

fn connect_blocking(netns: Option<&Path>, port: u16) -> std::io::Result<TcpStream> {
    if let Some(ns) = netns {
        let f = std::fs::File::open(ns)?;
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
    }
    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    match TcpStream::connect_timeout(&v4, CONNECT_TIMEOUT) {
        Ok(s) => Ok(s),
        Err(e4) => {
            let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
            TcpStream::connect_timeout(&v6, CONNECT_TIMEOUT).map_err(|_| e4)
        }
    }
}

/// Forwards one connection: `data` is the client's byte stream for `port`,
/// `error` its error stream (a failure is written there as text, as kubelet
/// does). Ends when either direction ends, like the other runtimes: a
/// server closing its side ends the forwarded connection.
pub async fn serve_port_forward_conn(
    sandbox_id: &str,
    netns: Option<PathBuf>,
    port: u16,
    data: impl AsyncRead + AsyncWrite + Unpin,
    mut error: impl AsyncWrite + Unpin,
) {
    let result = async {
        let tcp = connect_in_netns(netns, port).await?;
        forward(data, tcp).await
    }
    .await;
    if let Err(e) = result {
        let msg = format!("error forwarding port {port} to pod {sandbox_id}: {e}");
        tracing::info!(sandbox = %sandbox_id, port, error = %e, "port-forward failed");
        let _ = error.write_all(msg.as_bytes()).await;
    }
    let _ = error.shutdown().await;
}

/// Copies both ways until the first direction ends.
async fn forward(
    mut client: impl AsyncRead + AsyncWrite + Unpin,
    mut pod: tokio::net::TcpStream,
) -> std::io::Result<()> {
    let (mut pod_r, mut pod_w) = pod.split();
    let (mut client_r, mut client_w) = tokio::io::split(&mut client);
    let up = async {
        let r = tokio::io::copy(&mut client_r, &mut pod_w).await;
        let _ = pod_w.shutdown().await;
        r
    };
    let down = async {
        let r = tokio::io::copy(&mut pod_r, &mut client_w).await;
        let _ = client_w.shutdown().await;
        r
    };
    tokio::select! {
        r = up => r.map(|_| ()),
        r = down => r.map(|_| ()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn forwards_to_a_local_port_and_reports_refusals() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(&buf.iter().rev().copied().collect::<Vec<_>>())
                .await
                .unwrap();
        });
        let (client, mut ours) = tokio::io::duplex(1024);
        let (err_w, mut err_r) = tokio::io::duplex(1024);
        let task =
            tokio::spawn(async move { serve_port_forward_conn("sb", None, port, client, err_w).await });
        ours.write_all(b"abcd").await.unwrap();
        let mut back = Vec::new();
        ours.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"dcba");
        task.await.unwrap();
        let mut err = String::new();
        err_r.read_to_string(&mut err).await.unwrap();
        assert_eq!(err, "");

        // Nothing listens on a port we just closed.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead = closed.local_addr().unwrap().port();
        drop(closed);
        let (client, _ours) = tokio::io::duplex(1024);
        let (err_w, mut err_r) = tokio::io::duplex(1024);
        serve_port_forward_conn("sb", None, dead, client, err_w).await;
        let mut err = String::new();
        err_r.read_to_string(&mut err).await.unwrap();
        assert!(
            err.contains(&format!("error forwarding port {dead} to pod sb")),
            "{err}"
        );
    }
}
