//! System test of what the AM lets a client cost before its credentials are looked at: any
//! client with any self-signed certificate completes TLS (GENI needs that), so body size,
//! the decoder's memory, slow heads and bodies and the number of connections are bounded by
//! the server itself. A real vnsnap-am process without agents (no VMs needed: the calls never
//! get past the server or end at "no such slice").

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme, StreamOwned};
use vnsnap_am::config::ServerLimits;
use vnsnap_am::xmlrpc::Value;
use vnsnap_testbed::amlab::{cred, geni_code, AmClient, AmLab, AmLabOptions};
use vnsnap_testbed::ch::{CertSpec, Clearinghouse, CredSpec, Identity};

/// Size of each hostile body: what the original finding used.
const FLOOD_BODY: usize = 31 << 20;

struct Env {
    _tmp: tempfile::TempDir,
    am: AmLab,
    alice: Identity,
    slice_cred: String,
    slice_urn: String,
}

/// An AM without agents; `server` is appended to its configuration as the `[server]` table.
fn env(server: Option<&str>) -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let ch = Clearinghouse::create(&tmp.path().join("ch"), "geni:gpo:gcf").unwrap();
    let alice = ch.user("alice", &CertSpec::default()).unwrap();
    let slice = ch.slice(None, "flood1", &CertSpec::default()).unwrap();
    let slice_cred = ch.slice_credential(&alice, &slice, &CredSpec::default()).unwrap();
    let mut am = AmLab::start(&tmp.path().join("am"), &ch, &AmLabOptions::default()).unwrap();
    if let Some(s) = server {
        am.kill();
        let mut text = std::fs::read_to_string(&am.config).unwrap();
        text.push_str(&format!("\n[server]\n{s}\n"));
        std::fs::write(&am.config, text).unwrap();
        am.spawn().unwrap();
    }
    Env { slice_urn: slice.urn.clone(), _tmp: tmp, am, alice, slice_cred }
}

fn am_addr(am: &AmLab) -> SocketAddr {
    am.base_url.trim_start_matches("https://").parse().unwrap()
}

/// A `/proc/<pid>/status` field in kB.
fn proc_kb(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = s.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("no {field}"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

// ---- a raw TLS client with a self-signed certificate ----

/// Accepts any server certificate, as omni does.
#[derive(Debug)]
struct AnyServer(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A TLS client configuration presenting a fresh self-signed certificate (no GENI CA).
fn self_signed_client(name: &str) -> Arc<ClientConfig> {
    let ck = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.key_pair.serialize_der()));
    let cfg = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider)))
        .with_client_auth_cert(vec![ck.cert.der().clone()], key)
        .unwrap();
    Arc::new(cfg)
}

type Tls = StreamOwned<ClientConnection, TcpStream>;

/// A TCP connection to `dst` from the local address `src`.
fn tcp_from(src: IpAddr, dst: SocketAddr) -> std::io::Result<TcpStream> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let s = rt.block_on(async {
        let sock = tokio::net::TcpSocket::new_v4()?;
        sock.bind(SocketAddr::new(src, 0))?;
        sock.connect(dst).await?.into_std()
    })?;
    s.set_nonblocking(false)?;
    Ok(s)
}

/// A TLS connection with the handshake completed.
fn tls_connect(cfg: &Arc<ClientConfig>, src: IpAddr, dst: SocketAddr) -> std::io::Result<Tls> {
    let tcp = tcp_from(src, dst)?;
    tcp.set_read_timeout(Some(Duration::from_secs(60)))?;
    let conn =
        ClientConnection::new(cfg.clone(), ServerName::try_from("am").unwrap()).map_err(std::io::Error::other)?;
    let mut tls = StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    Ok(tls)
}

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Reads until the server closes; returns the HTTP status of what came, if anything did.
fn read_to_close(s: &mut impl Read) -> Option<u16> {
    let mut got = Vec::new();
    let mut buf = [0u8; 16 << 10];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {
                panic!("connection still open after the read timeout")
            }
            // A reset or an unclean TLS end is a close too.
            Err(_) => break,
        }
    }
    let head = String::from_utf8_lossy(&got[..got.len().min(64)]).to_string();
    head.strip_prefix("HTTP/1.1 ").and_then(|r| r.get(..3)).and_then(|c| c.parse().ok())
}

/// How a hostile client sends its body.
#[derive(Debug, Clone, Copy)]
enum Flood {
    /// 31 MiB of `<a/>` with its Content-Length.
    Declared,
    /// 31 MiB of `<a/>` chunked (no length up front).
    Chunked,
    /// A Status call whose parameter is an array of as many `<value/>` as fit under the body
    /// limit: accepted, decoded, and stopped by the element cap.
    Elements,
}

fn elements_body(max: usize) -> Vec<u8> {
    let head = b"<methodCall><methodName>Status</methodName><params><param><value><array><data>";
    let tail = b"</data></array></value></param></params></methodCall>";
    let n = (max - head.len() - tail.len()) / 8;
    let mut b = head.to_vec();
    b.extend(b"<value/>".repeat(n));
    b.extend_from_slice(tail);
    b
}

/// Sends one hostile request; returns the HTTP status answered, if any.
fn flood_once(cfg: &Arc<ClientConfig>, dst: SocketAddr, how: Flood, chunk: &[u8], elements: &[u8]) -> Option<u16> {
    let mut s = tls_connect(cfg, LOCAL, dst).ok()?;
    let sent = (|| -> std::io::Result<()> {
        match how {
            Flood::Declared => {
                write!(s, "POST /am/3.0 HTTP/1.1\r\nHost: am\r\nContent-Type: text/xml\r\nContent-Length: {FLOOD_BODY}\r\n\r\n")?;
                for _ in 0..FLOOD_BODY / chunk.len() {
                    s.write_all(chunk)?;
                }
            }
            Flood::Chunked => {
                write!(
                    s,
                    "POST /am/3.0 HTTP/1.1\r\nHost: am\r\nContent-Type: text/xml\r\nTransfer-Encoding: chunked\r\n\r\n"
                )?;
                for _ in 0..FLOOD_BODY / chunk.len() {
                    write!(s, "{:x}\r\n", chunk.len())?;
                    s.write_all(chunk)?;
                    s.write_all(b"\r\n")?;
                }
                s.write_all(b"0\r\n\r\n")?;
            }
            Flood::Elements => {
                write!(s, "POST /am/3.0 HTTP/1.1\r\nHost: am\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", elements.len())?;
                s.write_all(elements)?;
            }
        }
        s.flush()
    })();
    // The server may refuse before the body is all sent: the write then fails, the answer
    // is still readable.
    let _ = sent;
    read_to_close(&mut s)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Acceptance 3 of issue 17: 16 clients with self-signed certificates each send 31 MiB bodies
/// while a legitimate client polls Status: the AM's peak RSS stays under 300 MB and the
/// legitimate p99 under 1 s.
#[test]
fn flood_of_big_bodies_is_bounded() {
    let e = env(None);
    let pid = e.am.pid().unwrap();
    let dst = am_addr(&e.am);
    let max_body = ServerLimits::default().max_body_bytes;
    let legit = AmClient::new(&e.am.url_v3(), &e.alice).unwrap();
    let status = || {
        let p = [
            Value::Array(vec![Value::str(&e.slice_urn)]),
            Value::Array(vec![cred(&e.slice_cred)]),
            Value::structure::<&str>([]),
        ];
        legit.call("Status", &p).unwrap()
    };
    // Authorised and answered: the slice was never created (SEARCHFAILED). Warms the
    // credential cache and the connection.
    assert_eq!(geni_code(&status()), Some(12), "{}", e.am.log_tail());
    let rss_before = proc_kb(pid, "VmRSS:");

    // One body of empty values, as big as accepted: the decoder's peak per input byte.
    let elements = Arc::new(elements_body(max_body));
    let cfg = self_signed_client("one");
    let hwm0 = proc_kb(pid, "VmHWM:");
    assert_eq!(flood_once(&cfg, dst, Flood::Elements, b"", &elements), Some(200));
    let hwm1 = proc_kb(pid, "VmHWM:");
    let per_byte = (hwm1.saturating_sub(rss_before) * 1024) as f64 / elements.len() as f64;
    println!(
        "one {} byte body of <value/>: VmHWM {hwm0} -> {hwm1} kB; peak above RSS per input byte {per_byte:.2}",
        elements.len()
    );
    assert!(per_byte < 6.0, "decoder amplifies memory {per_byte:.1}x");

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(Barrier::new(17));
    let chunk = Arc::new(b"<a/>".repeat(16 << 10));
    let flooders: Vec<_> = (0..16)
        .map(|i| {
            let (stop, sent, started, chunk, elements) =
                (stop.clone(), sent.clone(), started.clone(), chunk.clone(), elements.clone());
            std::thread::spawn(move || {
                let cfg = self_signed_client(&format!("flood{i}"));
                let how = [Flood::Declared, Flood::Chunked, Flood::Elements][i % 3];
                let mut answers = Vec::new();
                started.wait();
                while !stop.load(Ordering::Relaxed) {
                    answers.push(flood_once(&cfg, dst, how, &chunk, &elements));
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                (how, answers)
            })
        })
        .collect();
    started.wait();
    let mut lat = Vec::new();
    let t0 = Instant::now();
    // Poll for as long as every flooder has had a few rounds, and at least 200 times (so that
    // the p99 is not simply the worst call).
    while lat.len() < 200 || sent.load(Ordering::Relaxed) < 48 {
        let t = Instant::now();
        assert_eq!(geni_code(&status()), Some(12));
        lat.push(t.elapsed());
        assert!(t0.elapsed() < Duration::from_secs(600), "flood did not progress");
    }
    stop.store(true, Ordering::Relaxed);
    for f in flooders {
        let (how, answers) = f.join().unwrap();
        // Every hostile request got a refusal (or, for a body refused unread, a reset that
        // lost the refusal), or for the element flood a fault: never a success.
        for a in &answers {
            let ok = match how {
                Flood::Declared | Flood::Chunked => matches!(a, None | Some(413)),
                Flood::Elements => *a == Some(200),
            };
            assert!(ok, "{how:?}: {answers:?}");
        }
    }
    lat.sort();
    let hwm = proc_kb(pid, "VmHWM:");
    let rss_after = proc_kb(pid, "VmRSS:");
    let (p50, p99) = (percentile(&lat, 0.5), percentile(&lat, 0.99));
    println!(
        "{} hostile requests, {} Status calls: p50 {p50:?} p99 {p99:?}; RSS {rss_before} kB before, {rss_after} kB after, peak {hwm} kB",
        sent.load(Ordering::Relaxed),
        lat.len()
    );
    assert!(hwm < 300 * 1024, "peak RSS {hwm} kB");
    assert!(p99 < Duration::from_secs(1), "legitimate p99 {p99:?}");
    // The AM still answers.
    assert_eq!(geni_code(&status()), Some(12));
}

/// Stalled heads and bodies are closed after the configured timeouts (short here, to keep the
/// test quick; the defaults are at most 30 s), and connections are capped per client address.
#[test]
fn stalled_clients_are_closed_and_connections_capped() {
    let d = ServerLimits::default();
    assert!(d.header_timeout_ms <= 30_000 && d.body_timeout_ms <= 30_000, "{d:?}");
    let e = env(Some("header_timeout_ms = 1500\nbody_timeout_ms = 1500\nmax_connections_per_ip = 4"));
    let dst = am_addr(&e.am);
    let cfg = self_signed_client("slow");
    let limit = Duration::from_millis(1500);
    // Closed after the timeout, not before it, and not long after (the machine is loaded).
    let closed_in_time = |what: &str, s: &mut dyn Read, since: Instant, want: Option<u16>| {
        let got = read_to_close(&mut ReadRef(s));
        let took = since.elapsed();
        println!("{what}: closed after {took:?} with {got:?}");
        assert_eq!(got, want, "{what}");
        assert!(took >= limit - Duration::from_millis(100), "{what}: closed after {took:?}");
        assert!(took < Duration::from_secs(15), "{what}: closed after {took:?}");
    };

    // TCP only, no TLS handshake.
    let t = Instant::now();
    let mut s = tcp_from(LOCAL, dst).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    closed_in_time("no handshake", &mut s, t, None);

    // TLS, then nothing.
    let mut s = tls_connect(&cfg, LOCAL, dst).unwrap();
    closed_in_time("no request", &mut s, Instant::now(), None);

    // Half a head.
    let mut s = tls_connect(&cfg, LOCAL, dst).unwrap();
    let t = Instant::now();
    s.write_all(b"POST /am/3.0 HTTP/1.1\r\nHost: am\r\nContent-").unwrap();
    s.flush().unwrap();
    closed_in_time("stalled head", &mut s, t, None);

    // A declared body that stops.
    let mut s = tls_connect(&cfg, LOCAL, dst).unwrap();
    let t = Instant::now();
    s.write_all(b"POST /am/3.0 HTTP/1.1\r\nHost: am\r\nContent-Length: 1000\r\n\r\n<methodCall>").unwrap();
    s.flush().unwrap();
    closed_in_time("stalled body", &mut s, t, Some(408));

    // A chunked body that never ends.
    let mut s = tls_connect(&cfg, LOCAL, dst).unwrap();
    let t = Instant::now();
    s.write_all(b"POST /am/3.0 HTTP/1.1\r\nHost: am\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n<a/>\r\n").unwrap();
    s.flush().unwrap();
    closed_in_time("endless chunked body", &mut s, t, Some(408));

    // An idle kept-alive connection after a complete call.
    let mut s = tls_connect(&cfg, LOCAL, dst).unwrap();
    let call = b"<methodCall><methodName>GetVersion</methodName></methodCall>";
    write!(s, "POST /am/3.0 HTTP/1.1\r\nHost: am\r\nContent-Length: {}\r\n\r\n", call.len()).unwrap();
    s.write_all(call).unwrap();
    s.flush().unwrap();
    let mut first = [0u8; 12];
    s.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    let t = Instant::now();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    let took = t.elapsed();
    println!("idle keep-alive: closed after {took:?}");
    assert!(took < Duration::from_secs(15), "idle connection open for {took:?}");

    // Four connections from 127.0.0.1 are the cap: a fifth is closed at once, unread, while
    // another address still gets in. Each held connection completes TLS, so the AM has
    // admitted it before the next is made.
    let held: Vec<Tls> = (0..4).map(|_| tls_connect(&cfg, LOCAL, dst).unwrap()).collect();
    let t = Instant::now();
    let refused = tls_connect(&cfg, LOCAL, dst);
    assert!(refused.is_err(), "a fifth connection from one address completed TLS");
    assert!(t.elapsed() < limit, "refusal took {:?}", t.elapsed());
    let other = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let mut s = tls_connect(&cfg, other, dst).unwrap();
    write!(s, "POST /am/3.0 HTTP/1.1\r\nHost: am\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", call.len())
        .unwrap();
    s.write_all(call).unwrap();
    s.flush().unwrap();
    assert_eq!(read_to_close(&mut s), Some(200));
    drop(held);
    // Their places come back: the legitimate client from 127.0.0.1 gets in again.
    let legit = AmClient::new(&e.am.url_v3(), &e.alice).unwrap();
    let ok = vnsnap_testbed::amlab::wait_for(Duration::from_secs(30), Duration::from_millis(50), || {
        legit.call("GetVersion", &[]).ok()
    });
    assert_eq!(ok.as_ref().and_then(geni_code), Some(0), "{}", e.am.log_tail());
}

/// `&mut dyn Read` as a sized reader.
struct ReadRef<'a>(&'a mut dyn Read);

impl Read for ReadRef<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}
