//! The HTTP listener: connections accepted under a cap, HTTPS (rustls) and plain HTTP on the
//! one port (a TLS ClientHello starts with the record type 0x16, RFC 8446 5.1; plain HTTP can be
//! switched off), header and idle timeouts, client certificates, and graceful shutdown. The
//! application itself is the one HTTP stack of `pacs_dicomweb::app`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tower::ServiceExt;
use tracing::{debug, info, warn};

use pacs_dicomweb::ClientCertificate;

/// How the listener treats connections.
#[derive(Clone)]
pub struct HttpServerSettings {
    /// HTTPS, with the node's certificate (and client certificates, when a client CA is set).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Plain HTTP besides HTTPS (always true without TLS).
    pub plain: bool,
    /// Time a client gets to send a request's headers, and to send the next request on a
    /// kept-alive connection (hyper starts the timer whenever it waits for a request head).
    pub header_timeout: Duration,
    /// Time a client gets for the TLS handshake.
    pub handshake_timeout: Duration,
    /// Connections served at once; further clients wait in the listen backlog.
    pub max_connections: usize,
}

fn builder(settings: &HttpServerSettings) -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(settings.header_timeout)
        .max_concurrent_streams(128);
    builder
}

/// Serves `router` on `listener` until `shutdown` turns true, then lets open requests finish
/// for `grace`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    settings: HttpServerSettings,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let builder = Arc::new(builder(&settings));
    let slots = Arc::new(Semaphore::new(settings.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let settings = Arc::new(settings);
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = shutdown.changed() => break,
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // out of descriptors and the like: wait instead of spinning
                    warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = tcp.set_nodelay(true);
        let (router, builder, settings) = (router.clone(), builder.clone(), settings.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            match accept(tcp, peer, &settings).await {
                Some(Accepted::Tls(stream, cert)) => {
                    let service = service(router, peer, cert, true);
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    if let Err(e) = watcher.watch(conn.into_owned()).await {
                        debug!(%peer, error = %e, "HTTPS connection ended");
                    }
                }
                Some(Accepted::Plain(stream)) => {
                    let service = service(router, peer, None, false);
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    if let Err(e) = watcher.watch(conn.into_owned()).await {
                        debug!(%peer, error = %e, "HTTP connection ended");
                    }
                }
                None => {}
            }
        });
    }
    info!("HTTP stopped accepting; letting open requests finish");
    let _ = tokio::time::timeout(grace, graceful.shutdown()).await;
}

enum Accepted {
    Tls(
        Box<tokio_rustls::server::TlsStream<TcpStream>>,
        Option<String>,
    ),
    Plain(TcpStream),
}

/// TLS or plain, by the first byte; None when the connection is refused or fails.
async fn accept(
    tcp: TcpStream,
    peer: SocketAddr,
    settings: &HttpServerSettings,
) -> Option<Accepted> {
    let Some(tls) = &settings.tls else {
        return Some(Accepted::Plain(tcp));
    };
    let mut first = [0u8; 1];
    let peeked = tokio::time::timeout(settings.header_timeout, tcp.peek(&mut first)).await;
    if !matches!(peeked, Ok(Ok(1))) {
        return None;
    }
    if first[0] != 0x16 {
        if settings.plain {
            return Some(Accepted::Plain(tcp));
        }
        debug!(%peer, "plain HTTP refused: HTTPS only");
        refuse_plain(tcp).await;
        return None;
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.clone());
    match tokio::time::timeout(settings.handshake_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => {
            let subject = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(crate::tls::subject_name);
            Some(Accepted::Tls(Box::new(stream), subject))
        }
        Ok(Err(e)) => {
            warn!(%peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            warn!(%peer, "TLS handshake timed out");
            None
        }
    }
}

/// A plain request on an HTTPS-only port: one answer saying so, then the connection closes.
async fn refuse_plain(mut tcp: TcpStream) {
    let body = "{\"error\": \"this node answers HTTPS only\"}";
    let answer = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), tcp.write_all(answer.as_bytes())).await;
    let _ = tcp.shutdown().await;
}

/// The application for one connection: the client's address and certificate subject go into
/// every request's extensions (where the stack's identity layer reads them); on a TLS
/// connection, an HTTP/1.1 request's URI gets the `https` scheme it does not carry, so that the
/// URLs the node writes (Retrieve URL, BulkDataURI) say https.
fn service(
    router: Router,
    peer: SocketAddr,
    certificate: Option<String>,
    tls: bool,
) -> TowerToHyperService<
    impl tower::Service<
            hyper::Request<Incoming>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
            Future = impl Send,
        > + Clone,
> {
    let service = router.map_request(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        if tls && request.uri().scheme().is_none() {
            with_https_scheme(&mut request);
        }
        if let Some(subject) = &certificate {
            request
                .extensions_mut()
                .insert(ClientCertificate(subject.clone()));
        }
        request
    });
    TowerToHyperService::new(service)
}

/// `https://HOST/path?query` for an origin-form request over TLS, HOST from the Host header
/// (left as it is when there is none or it is no authority).
fn with_https_scheme(request: &mut hyper::Request<Incoming>) {
    let Some(host) = request
        .headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse::<hyper::http::uri::Authority>().ok())
    else {
        return;
    };
    let mut parts = request.uri().clone().into_parts();
    parts.scheme = Some(hyper::http::uri::Scheme::HTTPS);
    parts.authority = Some(host);
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(hyper::http::uri::PathAndQuery::from_static("/"));
    }
    if let Ok(uri) = hyper::Uri::from_parts(parts) {
        *request.uri_mut() = uri;
    }
}
