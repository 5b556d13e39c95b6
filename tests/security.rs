//! Security: an ACL user limited to one service's keys and channels, and TLS with a private CA (and client
//! certificates).
//!
//! DESIGN Security (`redis://` and `rediss://` URLs, AUTH with ACL user names and passwords, an ACL user limited to the
//! namespace's keys and channels); Keys (everything of one service shares one hash tag, which the ACL line relies on).
//! From STYLE: secrets never in `Debug`.
//!
//! The ACL line tested here is the one documented in `docs/security.md`; if redcall starts using a command the
//! line does not grant, the round trip here fails with `NOPERM`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{ChildGuard, RedisServer, free_port, redcall_bin};
use redcall::{Client, ErrorKind, HandlerError, RequestContext};
use serde_json::{Value, json};

/// The ACL rules (after the user name and password) a responder and a requester of service `svc` in namespace
/// `ns` need: keys and channels of that one service, and only the commands redcall sends. Keep in sync with
/// `docs/security.md`.
fn acl_rules(ns: &str, svc: &str) -> Vec<String> {
    let tag = format!("{{{ns}:{svc}}}");
    let mut rules = vec![
        "resetkeys".to_owned(),
        "resetchannels".to_owned(),
        format!("~{tag}*"),
        format!("&{tag}*"),
        "-@all".to_owned(),
    ];
    rules.extend(
        [
            // connecting (RESP3 handshake, client library name)
            "+hello",
            "+ping",
            // scripts (requests, answers, dead letters) and what they call
            "+evalsha",
            "+multi",
            "+exec",
            "+script|load",
            "+get",
            "+mget",
            "+set",
            "+del",
            "+exists",
            "+publish",
            "+xadd",
            "+xack",
            // reply channels
            "+subscribe",
            "+unsubscribe",
            // responder and reaper
            "+psetex",
            "+xgroup|create",
            "+xgroup|delconsumer",
            "+xreadgroup",
            "+xclaim",
            "+xautoclaim",
            "+xpending",
            "+xinfo|consumers",
            // admin, stats, retention, replay
            "+xinfo|stream",
            "+xinfo|groups",
            "+xrange",
            "+xrevrange",
            "+xlen",
            "+xdel",
            "+xtrim",
            "+time",
            // cancels (`CANCEL` keeps the reply as long as the record) and the delayed-request schedule
            "+pttl",
            "+zscore",
            "+zrangebyscore",
            "+zcard",
            // the server version check on a client's first connection (`INFO server`)
            "+info",
            // the responder's heartbeat record and its index (`redcall services`, `Admin::responders`)
            "+zadd",
            "+zrem",
            "+zremrangebyscore",
            "+zrange",
            // the demo `work` handler of `redcall serve` only
            "+hincrby",
        ]
        .map(str::to_owned),
    );
    rules
}

fn spawn_serve(dir: &Path, url: &str, service: &str, global: &[&str]) -> ChildGuard {
    let log = std::fs::File::create(dir.join(format!("{service}.log"))).expect("log file");
    let mut cmd = Command::new(redcall_bin());
    cmd.args(["--url", url, "--service", service])
        .args(global)
        .args(["serve", "--consumer", "secure"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log);
    ChildGuard::spawn(&mut cmd)
}

async fn round_trip(client: &Client, service: &str) {
    let requester = client.requester(service);
    let reply: Value = requester
        .request(
            &format!("{service}-echo"),
            "echo",
            &json!({"hello": "secure"}),
            Duration::from_secs(30),
        )
        .await
        .expect("echo round trip");
    assert_eq!(reply, json!({"hello": "secure"}));
    // `work` uses a Redis connection of the responder's own (same URL, credentials and TLS settings).
    let reply: Value = requester
        .request(
            &format!("{service}-work"),
            "work",
            &json!({"ms": 1}),
            Duration::from_secs(30),
        )
        .await
        .expect("work round trip");
    assert_eq!(reply, json!({"slept_ms": 1}));
    let info = requester
        .call_info(&format!("{service}-echo"))
        .await
        .expect("call info");
    assert_eq!(info.func_key, "echo");
}

// ---------------------------------------------------------------------------------------------------------------
// ACL
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_user_limited_to_one_service_round_trips() {
    let server = RedisServer::start();
    let service = "acl";
    let mut setuser = vec!["ACL", "SETUSER", "svc-acl", "on", ">s3cret-pw"];
    let rules = acl_rules("redcall", service);
    setuser.extend(rules.iter().map(String::as_str));
    assert_eq!(server.cli(&setuser), "OK");
    // The test keeps the default user for its own checks; redcall only ever connects as svc-acl.
    assert_eq!(server.cli(&["SET", "{other}:secret", "x"]), "OK");
    let url = format!("redis://svc-acl:s3cret-pw@127.0.0.1:{}", server.port());

    let _responder = spawn_serve(server.dir(), &url, service, &[]);
    let client = Client::open(&url).expect("client");
    round_trip(&client, service).await;
    // Dead-letter path (a script that writes another key and publishes) works under the ACL too.
    let err = client
        .requester(service)
        .request::<_, Value>(
            "acl-unknown",
            "no-such-fn",
            &json!(1),
            Duration::from_secs(30),
        )
        .await
        .expect_err("no handler");
    assert_eq!(err.kind(), ErrorKind::UnknownFunction, "{err}");

    // Nothing redcall did was refused: a refused command would be in the ACL log.
    let acl_log = server.cli(&["ACL", "LOG"]);
    assert!(acl_log.is_empty(), "redcall ran into the ACL:\n{acl_log}");

    // The limit is real: the same user cannot read other keys, use another service, or run admin commands.
    let mut con = redis::Client::open(url.as_str())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect as svc-acl");
    let refused: redis::RedisResult<Option<String>> = redis::cmd("GET")
        .arg("{other}:secret")
        .query_async(&mut con)
        .await;
    let err = refused.expect_err("GET of another key must be refused");
    assert_eq!(err.code(), Some("NOPERM"), "{err}");
    for cmd in [
        redis::cmd("FLUSHALL"),
        redis::cmd("CONFIG").arg("GET").arg("*").clone(),
        redis::cmd("KEYS").arg("*").clone(),
        redis::cmd("PUBLISH")
            .arg("{redcall:other}:chan:x")
            .arg("hi")
            .clone(),
    ] {
        let refused: redis::RedisResult<redis::Value> = cmd.query_async(&mut con).await;
        let err = refused.expect_err("must be refused");
        assert_eq!(err.code(), Some("NOPERM"), "{err}");
    }
    let other = client
        .requester("other")
        .request::<_, Value>("acl-other", "echo", &json!(1), Duration::from_secs(5))
        .await
        .expect_err("another service's keys are off limits");
    assert_eq!(other.kind(), ErrorKind::Redis, "{other}");
    assert!(
        other.to_string().to_lowercase().contains("noperm"),
        "{other}"
    );
}

// ---------------------------------------------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------------------------------------------

/// A throwaway CA with a server certificate (for 127.0.0.1 and localhost) and a client certificate.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).expect("read PEM")
    }
}

fn openssl(dir: &Path, args: &[&str]) -> Result<(), String> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run openssl: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Makes the CA and the certificates with the `openssl` CLI; `Err` when openssl is missing.
fn make_pki(dir: &Path) -> Result<Pki, String> {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=redcall test CA",
    ]);
    openssl(dir, &ca)?;
    std::fs::write(
        dir.join("server.ext"),
        "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    .map_err(|e| e.to_string())?;
    std::fs::write(
        dir.join("client.ext"),
        "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
    )
    .map_err(|e| e.to_string())?;
    for who in ["server", "client"] {
        let (key, csr, crt, ext, subj) = (
            format!("{who}.key"),
            format!("{who}.csr"),
            format!("{who}.crt"),
            format!("{who}.ext"),
            format!("/CN=redcall test {who}"),
        );
        let mut req = vec!["req"];
        req.extend(ec);
        req.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
        openssl(dir, &req)?;
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
        )?;
    }
    Ok(Pki {
        dir: dir.to_owned(),
    })
}

/// A redis-server that listens only on a TLS port, killed on drop.
struct TlsRedis {
    _child: ChildGuard,
    port: u16,
}

impl TlsRedis {
    fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.port)
    }
}

/// Starts redis-server with TLS only; `Err` when this redis-server was built without TLS.
async fn start_tls_redis(pki: &Pki, auth_clients: &str) -> Result<TlsRedis, String> {
    let port = free_port();
    let stderr = std::fs::File::create(pki.path(&format!("redis-{port}.stderr")))
        .map_err(|e| e.to_string())?;
    let mut cmd = Command::new("redis-server");
    cmd.args(["--port", "0", "--tls-port", &port.to_string()])
        .arg("--tls-cert-file")
        .arg(pki.path("server.crt"))
        .arg("--tls-key-file")
        .arg(pki.path("server.key"))
        .arg("--tls-ca-cert-file")
        .arg(pki.path("ca.crt"))
        .args(["--tls-auth-clients", auth_clients])
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(&pki.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    let mut child = ChildGuard::spawn(&mut cmd);
    // A plain redis client, only to see the TLS port answer.
    let certificates = redis::TlsCertificates {
        client_tls: Some(redis::ClientTlsConfig {
            client_cert: pki.read("client.crt"),
            client_key: pki.read("client.key"),
        }),
        root_cert: Some(pki.read("ca.crt")),
    };
    let client = redis::Client::build_with_tls(format!("rediss://127.0.0.1:{port}"), certificates)
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let stderr = std::fs::read_to_string(pki.path(&format!("redis-{port}.stderr")))
                .unwrap_or_default();
            return Err(format!("redis-server exited ({status}): {stderr}"));
        }
        let ready = client.get_multiplexed_async_connection().await;
        if ready.is_ok() {
            return Ok(TlsRedis {
                _child: child,
                port,
            });
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "TLS redis-server never became ready: {:?}",
            ready.err()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The PKI and a TLS server, or `None` (with a printed reason) where openssl or TLS support is missing.
async fn tls_setup(auth_clients: &str) -> Option<(tempfile::TempDir, Pki, TlsRedis)> {
    let dir = tempfile::Builder::new()
        .prefix("redcall-tls-")
        .tempdir()
        .expect("temp dir");
    let pki = match make_pki(dir.path()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("SKIPPED: cannot make test certificates with the openssl CLI: {e}");
            return None;
        }
    };
    match start_tls_redis(&pki, auth_clients).await {
        Ok(server) => Some((dir, pki, server)),
        Err(e) => {
            eprintln!("SKIPPED: this redis-server does not run with TLS: {e}");
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_round_trip_with_a_private_ca() {
    let Some((_dir, pki, server)) = tls_setup("no").await else {
        return;
    };
    let service = "tls";
    let ca = pki.path("ca.crt");
    let _responder = spawn_serve(
        &pki.dir,
        &server.url(),
        service,
        &["--tls-ca-cert", ca.to_str().expect("utf-8 path")],
    );
    let client = Client::builder(&server.url())
        .tls_ca_cert_pem(pki.read("ca.crt"))
        .build()
        .expect("client");
    round_trip(&client, service).await;

    // Without the CA, the system's trust store does not know this server: refused, quickly and clearly (and no
    // panic for want of a rustls crypto provider).
    let untrusting = Client::open(&server.url()).expect("client with system roots");
    let started = Instant::now();
    let err = untrusting
        .requester(service)
        .request::<_, Value>("tls-untrusted", "echo", &json!(1), Duration::from_secs(10))
        .await
        .expect_err("an unknown CA must be refused");
    // Waiting does not fix a TLS problem: a configuration error, named as a TLS one.
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(err.to_string().contains("TLS handshake failed"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    eprintln!("without the CA: {err}");
    let text = format!("{err:?}").to_lowercase();
    assert!(
        text.contains("certificate") || text.contains("issuer"),
        "names the certificate problem: {err}"
    );

    // A CLI call over TLS too.
    let out = Command::new(redcall_bin())
        .args(["--url", &server.url(), "--service", service])
        .arg("--tls-ca-cert")
        .arg(&ca)
        .args(["call", "echo", r#"{"from":"cli"}"#, "--json"])
        .output()
        .expect("run redcall call");
    assert!(
        out.status.success(),
        "redcall call over TLS: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout).expect("JSON output");
    assert_eq!(printed["reply"], json!({"from": "cli"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_client_certificates() {
    let Some((_dir, pki, server)) = tls_setup("yes").await else {
        return;
    };
    let service = "mtls";
    let client = Client::builder(&server.url())
        .tls_ca_cert_pem(pki.read("ca.crt"))
        .tls_client_cert_pem(pki.read("client.crt"), pki.read("client.key"))
        .build()
        .expect("client");
    let responder = client
        .responder(service)
        .handler("double", |_ctx: RequestContext, n: i64| async move {
            Ok::<_, HandlerError>(n * 2)
        })
        .start()
        .await
        .expect("responder over mTLS");
    let reply: i64 = client
        .requester(service)
        .request("mtls-1", "double", &21, Duration::from_secs(30))
        .await
        .expect("round trip over mTLS");
    assert_eq!(reply, 42);
    responder.shutdown().await.expect("shutdown");

    // Without a client certificate the server refuses the connection.
    let no_cert = Client::builder(&server.url())
        .tls_ca_cert_pem(pki.read("ca.crt"))
        .build()
        .expect("client");
    let refused = no_cert.requester(service).call_info("mtls-1").await;
    let err = refused.expect_err("no client certificate");
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(err.to_string().contains("TLS handshake failed"), "{err}");
}

#[test]
fn tls_certificates_need_a_rediss_url() {
    let err = Client::builder("redis://127.0.0.1:1")
        .tls_ca_cert_pem(b"not used".to_vec())
        .build()
        .expect_err("refused");
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("rediss://"), "{err}");
}

/// Handles print for logs and panics without the password of the URL they were made from.
#[test]
fn debug_output_never_shows_the_password() {
    let client = Client::open("redis://orders-app:s3cret-pw@127.0.0.1:1/").expect("client");
    let requester = client.requester("orders");
    let shown = format!("{client:?} {requester:?} {:?}", client.admin("orders"));
    assert!(shown.contains("{redcall:orders}"), "{shown}");
    assert!(!shown.contains("s3cret-pw"), "{shown}");
}
