//! A front door like AWS's before a local server (`make bench`): HTTPS, or plain HTTP, on
//! loopback, keeping each client connection open across requests, as AWS's endpoints do (moto
//! and the counting proxy close every connection). Each request is forwarded to the upstream on
//! a connection of its own. One listener per AWS service, so that a client pays a handshake per
//! service host, as it does against AWS.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls;
use tokio_rustls::rustls::client::danger::ServerCertVerifier;
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::crypto::{aws_lc_rs, SupportedKxGroup};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{
    CertificateDer, PrivateKeyDer, ServerName, SignatureVerificationAlgorithm, UnixTime,
};
use tokio_rustls::rustls::SignatureScheme;

use super::{read_request, Request};

/// The services the function calls through the SDK, by their endpoint variable's suffix.
pub const SERVICES: [&str; 4] = ["ECS", "EC2", "IAM", "DYNAMODB"];

/// The key type of a [`Certificates`]' CA and server certificate.
#[derive(Clone, Copy)]
pub enum Key {
    /// RSA 2048, as AWS's endpoints present.
    Rsa2048,
    /// ECDSA on P-256 and on P-384: the curves whose arithmetic aws-lc's size-optimised build
    /// slows.
    P256,
    P384,
}

impl Key {
    fn newkey(self) -> &'static [&'static str] {
        match self {
            Key::Rsa2048 => &["-newkey", "rsa:2048"],
            Key::P256 => &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
            Key::P384 => &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"],
        }
    }

    /// The digest the CA signs with: SHA-384 with P-384, as public CAs pair them.
    fn digest(self) -> &'static str {
        match self {
            Key::Rsa2048 | Key::P256 => "-sha256",
            Key::P384 => "-sha384",
        }
    }

    fn key_usage(self) -> &'static str {
        match self {
            Key::Rsa2048 => "digitalSignature,keyEncipherment",
            Key::P256 | Key::P384 => "digitalSignature",
        }
    }
}

/// A certificate authority of the bench's own, and a server certificate it signed for
/// 127.0.0.1, made with the openssl command.
pub struct Certificates {
    /// The CA alone, in PEM.
    pub ca: PathBuf,
    /// The server's certificate (signed by the CA) and its private key, in PEM.
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    server: rustls::ServerConfig,
}

impl Certificates {
    pub fn make(dir: &Path, key: Key) -> Certificates {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(
            dir.join("server.ext"),
            format!(
                "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
                 keyUsage={}\nextendedKeyUsage=serverAuth\n",
                key.key_usage()
            ),
        )
        .unwrap();
        let ca: &[&str] = &[
            "req", "-x509", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        ];
        let ca_tail: &[&str] = &["-days", "2", "-subj", "/CN=bench root CA"];
        let csr: &[&str] = &[
            "req",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ];
        let csr_tail: &[&str] = &["-subj", "/CN=127.0.0.1"];
        let sign: &[&str] = &[
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
        ];
        let steps = [
            [ca, key.newkey(), &[key.digest()][..], ca_tail].concat(),
            [csr, key.newkey(), csr_tail].concat(),
            [sign, &[key.digest()][..]].concat(),
        ];
        for args in steps {
            let out = std::process::Command::new("openssl")
                .args(&args)
                .current_dir(dir)
                .output()
                .expect("the openssl command (Debian: apt-get install openssl)");
            assert!(out.status.success(), "openssl {args:?}: {out:?}");
        }
        let (server_cert, server_key) = (dir.join("server.pem"), dir.join("server.key"));
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&server_cert)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let private = PrivateKeyDer::from_pem_file(&server_key).unwrap();
        let server = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, private)
            .unwrap();
        Certificates {
            ca: dir.join("ca.pem"),
            server_cert,
            server_key,
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

/// The public-key crypto a client does in one TLS 1.3 handshake with a server holding
/// [`Certificates`]: rustls's verification of the server's chain (the CA's signature on the
/// server certificate, and the name), the server's CertificateVerify signature, and its half of
/// the key exchange. Everything else in a handshake (the network, the symmetric crypto) does not
/// depend on the curve, so this is what aws-lc's build settings can move.
pub struct HandshakeCrypto {
    verifier: Arc<dyn ServerCertVerifier>,
    leaf: CertificateDer<'static>,
    public_key: Vec<u8>,
    signed: [u8; 130],
    signature: Vec<u8>,
    verify: &'static dyn SignatureVerificationAlgorithm,
    group: &'static dyn SupportedKxGroup,
}

impl HandshakeCrypto {
    /// With `certs`, the server signing with `scheme` and the key exchange over `group`.
    pub fn new(
        certs: &Certificates,
        scheme: SignatureScheme,
        group: &'static dyn SupportedKxGroup,
    ) -> HandshakeCrypto {
        let provider = Arc::new(aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(&certs.ca).unwrap())
            .unwrap();
        let verifier = WebPkiServerVerifier::builder_with_provider(roots.into(), provider.clone())
            .build()
            .unwrap();
        let private = PrivateKeyDer::from_pem_file(&certs.server_key).unwrap();
        let signing = provider.key_provider.load_private_key(private).unwrap();
        let public_key = subject_public_key(&signing.public_key().unwrap()).to_vec();
        // What TLS 1.3 signs: 64 spaces, a context string, a zero, the transcript's hash.
        let signed = [0x20; 130];
        let signature = signing
            .choose_scheme(&[scheme])
            .expect("the server's key signs with the scheme")
            .sign(&signed)
            .unwrap();
        let (_, algorithms) = provider
            .signature_verification_algorithms
            .mapping
            .iter()
            .find(|(s, _)| *s == scheme)
            .unwrap();
        HandshakeCrypto {
            verifier,
            leaf: CertificateDer::from_pem_file(&certs.server_cert).unwrap(),
            public_key,
            signed,
            signature,
            verify: algorithms[0],
            group,
        }
    }

    /// One handshake's client crypto, timed; the server's half of the key exchange is made
    /// between the client's two halves, outside the time.
    pub fn client_time(&self) -> Duration {
        let name = ServerName::from(std::net::IpAddr::from([127, 0, 0, 1]));
        let start = Instant::now();
        let chain = self
            .verifier
            .verify_server_cert(&self.leaf, &[], &name, &[], UnixTime::now());
        chain.expect("the server's chain verifies");
        let signature =
            self.verify
                .verify_signature(&self.public_key, &self.signed, &self.signature);
        signature.expect("the server's signature verifies");
        let client = self.group.start().unwrap();
        let before_server = start.elapsed();
        let server = self.group.start_and_complete(client.pub_key()).unwrap();
        let start = Instant::now();
        let secret = client.complete(&server.pub_key).unwrap();
        let time = before_server + start.elapsed();
        assert_eq!(
            secret.secret_bytes(),
            server.secret.secret_bytes(),
            "both sides agree"
        );
        time
    }
}

/// The subjectPublicKey of a DER SubjectPublicKeyInfo (`SEQUENCE { algorithm, BIT STRING }`):
/// the key a signature algorithm verifies with.
fn subject_public_key(spki: &[u8]) -> &[u8] {
    // A DER element's header length and content length.
    fn header(der: &[u8]) -> (usize, usize) {
        match der[1] as usize {
            short @ 0..0x80 => (2, short),
            long => {
                let n = long & 0x7f;
                let len = der[2..2 + n].iter().fold(0, |a, b| a << 8 | *b as usize);
                (2 + n, len)
            }
        }
    }
    let (outer, _) = header(spki);
    let algorithm = &spki[outer..];
    let (head, len) = header(algorithm);
    let bits = &algorithm[head + len..];
    let (head, len) = header(bits);
    // The BIT STRING's first byte counts its unused bits (none in a key).
    &bits[head + 1..head + len]
}
