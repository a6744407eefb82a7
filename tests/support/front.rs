//! A front door like AWS's before a local server (`make bench`): HTTPS, or plain HTTP, on
//! loopback, keeping each client connection open across requests, as AWS's endpoints do (moto
//! and the counting proxy close every connection). Each request is forwarded to the upstream on
//! a connection of its own. One listener per AWS service, so that a client pays a handshake per
//! service host, as it does against AWS.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::{read_request, Request};

/// The services the function calls through the SDK, by their endpoint variable's suffix.
pub const SERVICES: [&str; 4] = ["ECS", "EC2", "IAM", "DYNAMODB"];

/// A certificate authority of the bench's own, and a server certificate it signed for
/// 127.0.0.1 (RSA 2048, as AWS's endpoints present), made with the openssl command.
pub struct Certificates {
    /// The CA alone, in PEM.
    pub ca: PathBuf,
    server: rustls::ServerConfig,
}

impl Certificates {
    pub fn make(dir: &Path) -> Certificates {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        let steps: [&[&str]; 3] = [
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=bench root CA",
            ],
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.pem",
                "-days",
                "2",
                "-extfile",
                "server.ext",
            ],
        ];
        for args in steps {
            let out = std::process::Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("the openssl command (Debian: apt-get install openssl)");
            assert!(out.status.success(), "openssl {args:?}: {out:?}");
        }
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(dir.join("server.pem"))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
        let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
        let server = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        Certificates {
            ca: dir.join("ca.pem"),
            server,
        }
    }

    /// One bundle file, as Lambda's provided.al2023 trusts: `system`'s roots and the bench's CA.
    pub fn bundle_with(&self, system: &str, out: &Path) -> PathBuf {
        let mut pem = std::fs::read_to_string(system).unwrap_or_default();
        pem.push_str(&std::fs::read_to_string(&self.ca).unwrap());
        std::fs::write(out, pem).unwrap();
        out.to_path_buf()
    }
}

/// Listeners in front of `upstream`, one per service of [`SERVICES`].
pub struct Front {
    pub addrs: Vec<SocketAddr>,
    tls: bool,
}

impl Front {
    /// HTTPS with `certs`, or plain HTTP when `None`.
    pub async fn start(upstream: SocketAddr, certs: Option<&Certificates>) -> Front {
        let acceptor = certs.map(|c| tokio_rustls::TlsAcceptor::from(Arc::new(c.server.clone())));
        let mut addrs = Vec::new();
        for _ in SERVICES {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            addrs.push(listener.local_addr().unwrap());
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                while let Ok((sock, _)) = listener.accept().await {
                    let _ = sock.set_nodelay(true);
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        match acceptor {
                            Some(a) => {
                                if let Ok(tls) = a.accept(sock).await {
                                    keep_alive(tls, upstream).await
                                }
                            }
                            None => keep_alive(sock, upstream).await,
                        }
                    });
                }
            });
        }
        Front {
            addrs,
            tls: certs.is_some(),
        }
    }

    /// The environment that sends each service's calls to its listener.
    pub fn endpoints(&self) -> Vec<(String, String)> {
        let scheme = if self.tls { "https" } else { "http" };
        let url = |a: &SocketAddr| format!("{scheme}://{a}");
        let mut env: Vec<(String, String)> = SERVICES
            .iter()
            .zip(&self.addrs)
            .map(|(s, a)| (format!("AWS_ENDPOINT_URL_{s}"), url(a)))
            .collect();
        // What names no service of its own (the function's own Lambda and Secrets Manager
        // calls, neither made here) goes to the first.
        env.push(("AWS_ENDPOINT_URL".into(), url(&self.addrs[0])));
        env
    }
}

/// Serve one client connection: each request forwarded, each answer sent back on the same
/// connection, until the client closes it.
async fn keep_alive<S: AsyncRead + AsyncWrite + Unpin>(mut client: S, upstream: SocketAddr) {
    while let Some(req) = read_request(&mut client).await {
        let Some(answer) = forward(&req, upstream).await else {
            return;
        };
        if client.write_all(&answer).await.is_err() || client.flush().await.is_err() {
            return;
        }
    }
}

/// `req` sent to `upstream` on a new connection; its answer, with the upstream's
/// `Connection: close` taken out so that the client keeps its connection.
async fn forward(req: &Request, upstream: SocketAddr) -> Option<Vec<u8>> {
    let mut up = TcpStream::connect(upstream).await.ok()?;
    let _ = up.set_nodelay(true);
    let mut head = format!("{} {} HTTP/1.1\r\n", req.method, req.path);
    for (k, v) in &req.headers {
        let k_lower = k.to_ascii_lowercase();
        if !matches!(
            k_lower.as_str(),
            "connection" | "content-length" | "transfer-encoding"
        ) {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        req.body.len()
    ));
    up.write_all(head.as_bytes()).await.ok()?;
    up.write_all(&req.body).await.ok()?;
    let mut answer = Vec::new();
    up.read_to_end(&mut answer).await.ok()?;
    let end = answer.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&answer[..end + 2]).to_string();
    let kept: String = head
        .split_inclusive("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .collect();
    let mut out = kept.into_bytes();
    out.extend_from_slice(&answer[end + 2..]);
    Some(out)
}
