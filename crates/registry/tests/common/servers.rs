//! Small servers for tests against a real `docker-registry`, on plain std
//! threads so that both the library's and the CLI's tests can use them
//! (the CLI's include this file by path):
//!
//! - [`TokenServer`]: a token endpoint for distribution's `auth: token:`
//!   mode. It checks Basic credentials and issues ES256 JWTs signed with a
//!   key whose self-signed certificate is the registry's `rootcertbundle`;
//!   the certificate travels in the token's `x5c` header, which
//!   distribution verifies against that bundle.
//! - [`ThrottleProxy`]: a TCP proxy in front of a registry that passes
//!   bytes at a limited rate, so that a test can act (kill the registry)
//!   while a transfer is under way.
//! - [`tls_files`]: a CA and a server certificate signed by it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

/// The `service` and `issuer` the token server and the registry agree on.
pub const TOKEN_SERVICE: &str = "kiln-test";
pub const TOKEN_ISSUER: &str = "kiln-test-issuer";

/// An ES256 signing key with its self-signed certificate.
struct Signer {
    key: ring::signature::EcdsaKeyPair,
    cert_der: Vec<u8>,
    cert_pem: String,
}

impl Signer {
    fn generate() -> Signer {
        let certified =
            rcgen::generate_simple_self_signed(vec!["kiln-test-token-signer".to_owned()]).unwrap();
        let pkcs8 = certified.signing_key.serialize_der();
        let key = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &pkcs8,
            &ring::rand::SystemRandom::new(),
        )
        .unwrap();
        Signer {
            key,
            cert_der: certified.cert.der().to_vec(),
            cert_pem: certified.cert.pem(),
        }
    }

    /// A compact JWS of `claims`.
    fn sign(&self, claims: &serde_json::Value) -> String {
        let header = serde_json::json!({
            "typ": "JWT",
            "alg": "ES256",
            "x5c": [STANDARD.encode(&self.cert_der)],
        });
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self
            .key
            .sign(&ring::rand::SystemRandom::new(), input.as_bytes())
            .unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
    }
}

/// One request the token server answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRequest {
    /// The Basic user, `None` for anonymous requests.
    pub user: Option<String>,
    pub scopes: Vec<String>,
    /// Whether a token was issued (false: 401 for bad credentials).
    pub granted: bool,
}

struct TokenState {
    user: String,
    password: String,
    signer: Mutex<Signer>,
    bundle: PathBuf,
    requests: Mutex<Vec<TokenRequest>>,
    serial: AtomicUsize,
}

/// A token endpoint on 127.0.0.1, stopped when dropped.
pub struct TokenServer {
    pub port: u16,
    state: Arc<TokenState>,
    stop: Arc<AtomicBool>,
}

impl TokenServer {
    /// Starts a server granting `user`/`password` every action asked for,
    /// anonymous users none. Writes the signing certificate to
    /// `dir/token-ca.pem` (the registry's `rootcertbundle`).
    pub fn start(dir: &Path, user: &str, password: &str) -> TokenServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let signer = Signer::generate();
        let bundle = dir.join("token-ca.pem");
        std::fs::write(&bundle, &signer.cert_pem).unwrap();
        let state = Arc::new(TokenState {
            user: user.to_owned(),
            password: password.to_owned(),
            signer: Mutex::new(signer),
            bundle,
            requests: Mutex::new(Vec::new()),
            serial: AtomicUsize::new(0),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(conn) = conn {
                    let st = st.clone();
                    std::thread::spawn(move || serve_token(&st, conn));
                }
            }
        });
        TokenServer { port, state, stop }
    }

    /// The `realm` for the registry's configuration.
    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    /// The `auth:` section of a distribution configuration using this
    /// server.
    pub fn registry_auth_config(&self) -> String {
        format!(
            "auth:\n  token:\n    realm: {}\n    service: {TOKEN_SERVICE}\n    issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
            self.realm(),
            self.state.bundle.display()
        )
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Signs from now on with a new key and rewrites the bundle: a
    /// registry restarted afterwards refuses every token issued before.
    pub fn rotate_key(&self) {
        let signer = Signer::generate();
        std::fs::write(&self.state.bundle, &signer.cert_pem).unwrap();
        *self.state.signer.lock().unwrap() = signer;
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// One request per connection (`Connection: close`).
fn serve_token(state: &TokenState, conn: TcpStream) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut authorization = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("authorization")
        {
            authorization = Some(value.trim().to_owned());
        }
    }
    let target = request_line.split_whitespace().nth(1).unwrap_or("/");
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
    let mut scopes = Vec::new();
    let mut service = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v);
        match k {
            "scope" => scopes.push(v),
            "service" => service = Some(v),
            _ => {}
        }
    }
    let user = authorization
        .as_deref()
        .and_then(|a| a.strip_prefix("Basic "))
        .and_then(|b| STANDARD.decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .map(|s| match s.split_once(':') {
            Some((u, p)) => (u.to_owned(), p.to_owned()),
            None => (s, String::new()),
        });
    let authenticated = match &user {
        Some((u, p)) => *u == state.user && *p == state.password,
        None => false,
    };
    let granted = user.is_none() || authenticated;
    state.requests.lock().unwrap().push(TokenRequest {
        user: user.as_ref().map(|(u, _)| u.clone()),
        scopes: scopes.clone(),
        granted,
    });
    let mut conn = conn;
    if !granted || service.as_deref() != Some(TOKEN_SERVICE) {
        let body = r#"{"details":"incorrect username or password"}"#;
        let _ = write!(
            conn,
            "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        return;
    }
    // Authenticated users get every action asked for; anonymous ones
    // nothing (the registry then refuses them).
    let access: Vec<serde_json::Value> = if authenticated {
        scopes
            .iter()
            .flat_map(|s| s.split(' '))
            .filter_map(|s| {
                let (kind, rest) = s.split_once(':')?;
                let (name, actions) = rest.rsplit_once(':')?;
                Some(serde_json::json!({
                    "type": kind,
                    "name": name,
                    "actions": actions.split(',').collect::<Vec<_>>(),
                }))
            })
            .collect()
    } else {
        Vec::new()
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({
        "iss": TOKEN_ISSUER,
        "sub": user.as_ref().map(|(u, _)| u.clone()).unwrap_or_default(),
        "aud": TOKEN_SERVICE,
        "exp": now + 300,
        "nbf": now - 10,
        "iat": now,
        "jti": format!("kiln-{}", state.serial.fetch_add(1, Ordering::SeqCst)),
        "access": access,
    });
    let token = state.signer.lock().unwrap().sign(&claims);
    let body = serde_json::json!({"token": token, "expires_in": 300}).to_string();
    let _ = write!(
        conn,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => out.push(b),
                    Err(_) => out.push(b'%'),
                }
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A TCP proxy on 127.0.0.1 in front of `upstream`, passing at most
/// `rate` bytes a second in each direction (0: unlimited). Connections
/// are not closed when the proxy is dropped; its listener is.
pub struct ThrottleProxy {
    pub port: u16,
    rate: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl ThrottleProxy {
    pub fn start(upstream: SocketAddr, rate: u64) -> ThrottleProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let rate = Arc::new(AtomicU64::new(rate));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, sp) = (rate.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = conn else { continue };
                let Ok(server) = TcpStream::connect(upstream) else {
                    // Nothing upstream: close at once, as a dead registry
                    // behind a load balancer would.
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                for (from, to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let r = r.clone();
                    std::thread::spawn(move || pump(from, to, &r));
                }
            }
        });
        ThrottleProxy { port, rate, stop }
    }

    /// Changes the rate (0: unlimited) for every connection.
    pub fn set_rate(&self, rate: u64) {
        self.rate.store(rate, Ordering::SeqCst);
    }
}

impl Drop for ThrottleProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, rate: &AtomicU64) {
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        let r = rate.load(Ordering::SeqCst);
        if r > 0 {
            std::thread::sleep(Duration::from_secs_f64(n as f64 / r as f64));
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

/// PEM files for a registry served over HTTPS: `ca.pem` (a CA),
/// `server.pem` and `server-key.pem` (a certificate for `names`, signed by
/// the CA), in `dir`. Returns (ca, cert, key) paths.
pub fn tls_files(dir: &Path, names: &[&str]) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "kiln test CA");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
            .unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, names[0]);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &issuer).unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server-key.pem"),
    );
    std::fs::write(&paths.0, ca_cert.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}
