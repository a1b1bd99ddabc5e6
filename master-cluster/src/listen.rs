//! How every listener of a replica accepts and serves connections.
//!
//! - [`accept`]: the next connection whose address may open one more (`crate::limits`); the
//!   [`Admitted`] stream holds its place until it closes.
//! - [`incoming`] / [`incoming_plaintext`]: the gRPC port's connections, TLS handshakes done
//!   each on its own task within [`HANDSHAKE_TIMEOUT`].
//! - [`serve_connections`]: an HTTP listener's accept loop, every connection on its own task,
//!   all ended at shutdown.
//! - [`serve_http1`]: one HTTP/1.1 connection of the SLAP, panel or operations listener,
//!   closed when the next request's headers do not arrive within 30 s (hyper's header
//!   timeout); [`accept_https`]: the TLS handshake of the SLAP and panel listeners;
//!   [`serve_app`]: an HTTP listener's app, each request with its [`HttpPeer`].

use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::limits::{Budgets, ConnectionPermit};
use crate::tls::CurrentTls;

/// How long a client may take to complete its handshake.
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Accepts connections on `listener` and completes their TLS handshakes (each on its own
/// task, so that a slow client delays no other); failed handshakes are logged and dropped, and
/// so is a connection from an address that has as many open as `budgets` allow.
pub fn incoming(
    listener: TcpListener,
    current: Arc<CurrentTls>,
    budgets: Arc<Budgets>,
) -> tokio_stream::wrappers::ReceiverStream<Result<Admitted<TlsStream<TcpStream>>, std::io::Error>>
{
    let (accepted, stream) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            // The server dropping its end of the stream (at shutdown) closes the listener.
            let (tcp, peer, permit) = tokio::select! {
                next = accept(&listener, &budgets) => next,
                () = accepted.closed() => return,
            };
            // The setup current when the connection arrives.
            let acceptor = TlsAcceptor::from(current.get().server.clone());
            let accepted = accepted.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let admitted = Admitted {
                            stream: tls,
                            _permit: permit,
                        };
                        let _ = accepted.send(Ok(admitted)).await;
                    }
                    Ok(Err(e)) => tracing::info!(%peer, %e, "TLS handshake failed"),
                    Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(stream)
}

/// [`incoming`] without TLS (a trusted development network).
pub fn incoming_plaintext(
    listener: TcpListener,
    budgets: Arc<Budgets>,
) -> tokio_stream::wrappers::ReceiverStream<Result<Admitted<TcpStream>, std::io::Error>> {
    let (accepted, stream) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (tcp, _, permit) = tokio::select! {
                next = accept(&listener, &budgets) => next,
                () = accepted.closed() => return,
            };
            let admitted = Admitted {
                stream: tcp,
                _permit: permit,
            };
            if accepted.send(Ok(admitted)).await.is_err() {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(stream)
}

/// The next connection on `listener` whose address may open one more, with its place.
/// Connections over the address's limit are closed at once; accept errors (out of file
/// descriptors, say) back off instead of spinning.
pub async fn accept(
    listener: &TcpListener,
    budgets: &Arc<Budgets>,
) -> (TcpStream, std::net::SocketAddr, ConnectionPermit) {
    loop {
        match listener.accept().await {
            Ok((tcp, peer)) => match budgets.connect(peer.ip(), std::time::Instant::now()) {
                Ok(permit) => {
                    let _ = tcp.set_nodelay(true);
                    return (tcp, peer, permit);
                }
                Err(exhausted) => tracing::info!(%peer, %exhausted, "connection refused"),
            },
            Err(e) => {
                tracing::warn!(%e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// A connection with its place among its address's connections, given back when it closes.
/// Reads, writes and tells tonic who is connected as the stream it wraps.
pub struct Admitted<S> {
    stream: S,
    _permit: ConnectionPermit,
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Admitted<S> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Admitted<S> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected for Admitted<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

/// A client's certificate chain, as its handshake presented it.
pub type PeerChain = Arc<Vec<rustls::pki_types::CertificateDer<'static>>>;

/// Completes the TLS handshake of an HTTP/1.1 listener (the SLAP and panel listeners: their
/// clients speak HTTP/1.1, where the replica's own setup offers h2) within
/// [`HANDSHAKE_TIMEOUT`]: the stream and the chain the client presented, if any. A failed
/// or slow handshake is logged (as `what`'s) and answers `None`.
pub async fn accept_https(
    tls: &CurrentTls,
    tcp: TcpStream,
    peer: std::net::SocketAddr,
    what: &'static str,
) -> Option<(TlsStream<TcpStream>, Option<PeerChain>)> {
    let mut config = (*tls.get().server).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            tracing::info!(%peer, %e, "{what} TLS handshake failed");
            return None;
        }
        Err(_) => {
            tracing::info!(%peer, "{what} TLS handshake timed out");
            return None;
        }
    };
    let chain = stream
        .get_ref()
        .1
        .peer_certificates()
        .map(|c| Arc::new(c.iter().map(|c| c.clone().into_owned()).collect()));
    Some((stream, chain))
}

/// A connection's client, as the handlers of an HTTP listener see it (an axum `Extension`):
/// the certificate chain it presented (none over plain HTTP) and its address.
#[derive(Clone)]
pub struct HttpPeer {
    pub chain: Option<PeerChain>,
    pub address: std::net::IpAddr,
}

/// Serves `app` on `listener` until `shutdown` turns true, over HTTPS with `tls` (plain HTTP
/// without), every request carrying its connection's [`HttpPeer`]; `what` names the
/// listener in logs.
pub async fn serve_app(
    listener: TcpListener,
    budgets: Arc<Budgets>,
    tls: Option<Arc<CurrentTls>>,
    what: &'static str,
    shutdown: tokio::sync::watch::Receiver<bool>,
    app: axum::Router,
) -> std::io::Result<()> {
    serve_connections(listener, budgets, shutdown, move |tcp, address| {
        let (app, tls) = (app.clone(), tls.clone());
        async move {
            let peer = |chain| HttpPeer {
                chain,
                address: address.ip(),
            };
            match tls {
                None => serve_http1(tcp, app.layer(axum::Extension(peer(None)))).await,
                Some(tls) => {
                    if let Some((stream, chain)) = accept_https(&tls, tcp, address, what).await {
                        serve_http1(stream, app.layer(axum::Extension(peer(chain)))).await;
                    }
                }
            }
        }
    })
    .await
}

pub async fn serve_http1<I>(io: I, app: axum::Router)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper_util::service::TowerToHyperService::new(app);
    // With a timer, hyper closes a connection whose next request's headers do not arrive
    // within 30 s: idle kept-alive connections and stalled clients do not pile up.
    if let Err(e) = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .serve_connection(hyper_util::rt::TokioIo::new(io), service)
        .await
    {
        tracing::debug!(%e, "HTTP connection ended");
    }
}

/// Accepts admitted connections on `listener` until `shutdown` turns true, serving each with
/// `serve` on its own task; at shutdown, connections still open are ended too.
pub async fn serve_connections<F, Served>(
    listener: TcpListener,
    budgets: Arc<Budgets>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    serve: F,
) -> std::io::Result<()>
where
    F: Fn(TcpStream, std::net::SocketAddr) -> Served,
    Served: Future<Output = ()> + Send + 'static,
{
    loop {
        let (tcp, peer, permit) = tokio::select! {
            accepted = accept(&listener, &budgets) => accepted,
            () = stopped(&mut shutdown) => return Ok(()),
        };
        let served = serve(tcp, peer);
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = served => {}
                () = stopped(&mut stop) => {}
            }
            // The connection is closed: its address may open another.
            drop(permit);
        });
    }
}

/// Resolves once `shutdown` turns true (or its sender is gone).
pub async fn stopped(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`: dropped here, before any other await.
    let _ = shutdown.wait_for(|stop| *stop).await.map(|_| ());
}
