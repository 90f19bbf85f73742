//! Parsing of HTTP requests into [`Request`] and the one dispatch `match`.

use crate::host::{err, Host, Res};
use std::sync::Arc;
use std::time::Duration;
use vnsnap_proto::limits::{check_id, clip, Validate, MAX_ECHO_BYTES};
use vnsnap_proto::*;

/// An id taken from a request path (a domain name, snapshot, restore or image id). It
/// becomes a file name or a map key, so it exists only once checked ([`check_id`]): a
/// handler never sees `.`, `..`, a `/`, an empty or overlong id. The path is not
/// percent-decoded (hyper hands it over raw), so `%2e%2e` or `%2F` arrive as such and are
/// refused for their `%`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Id(String);

impl Id {
    /// Checks `s`; `what` names it in the error.
    pub fn parse(what: &str, s: &str) -> Res<Id> {
        check_id(what, s)?;
        Ok(Id(s.to_string()))
    }
}

impl std::ops::Deref for Id {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

/// Every request the agent serves.
#[derive(Debug)]
pub enum Request {
    /// `GET /host`
    HostInfo,
    /// `GET /domains`
    ListDomains,
    /// `POST /domains`
    Define(DomainSpec),
    /// `GET /domains/{name}`
    GetDomain(Id),
    /// `POST /domains/{name}/{action}`
    Act(Id, Action, ActionRequest),
    /// `DELETE /domains/{name}`
    Destroy(Id),
    /// `GET /domains/{name}/console`
    Console(Id),
    /// `POST /domains/{name}/guest`
    Guest(Id, serde_json::Value),
    /// `GET /events`
    Events {
        /// Only events after this sequence number.
        after: u64,
        /// Long-poll duration.
        wait_ms: u64,
    },
    /// `PUT /segments/{id}`
    SetPeers(SegmentId, SegmentPeers),
    /// `GET /switch`
    Switch,
    /// `POST /snapshots/prepare`
    SnapPrepare(PrepareRequest),
    /// `POST /snapshots/{id}/cut`
    SnapCut(Id, CutRequest),
    /// `GET /snapshots/{id}`
    SnapStatus(Id),
    /// `POST /snapshots/{id}/commit`
    SnapCommit(Id),
    /// `POST /snapshots/{id}/abort`
    SnapAbort(Id),
    /// `DELETE /snapshots/{id}`
    SnapDelete(Id),
    /// `POST /restores/check`
    RestoreCheck(RestoreRequest),
    /// `POST /restores/prepare`
    RestorePrepare(RestoreRequest),
    /// `POST /restores/{id}/resume`
    RestoreResume(Id),
    /// `POST /restores/{id}/abort`
    RestoreAbort(Id),
    /// `POST /images`
    ImageCapture(CaptureRequest),
    /// `GET /images/{id}`
    ImageStatus(Id),
    /// `DELETE /images/{id}`
    ImageDelete(Id),
}

/// A reply body.
#[derive(Debug)]
pub enum Reply {
    /// JSON.
    Json(serde_json::Value),
    /// Plain text.
    Text(String),
}

fn json_body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Res<T> {
    serde_json::from_slice(bytes).map_err(|e| err(ErrorKind::BadRequest, format!("Invalid request body: {e}")))
}

/// A request body, parsed and checked against the limits of the wire contract: every
/// typed body goes through here, so no handler sees an unchecked id, number or count.
fn body<T: serde::de::DeserializeOwned + Validate>(bytes: &[u8]) -> Res<T> {
    let v: T = json_body(bytes)?;
    v.validate()?;
    Ok(v)
}

fn query(q: Option<&str>, key: &str) -> Res<Option<u64>> {
    for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == key {
            return v.parse().map(Some).map_err(|_| {
                err(ErrorKind::BadRequest, format!("Query {key}={:?} is not a number", clip(v, MAX_ECHO_BYTES)))
            });
        }
    }
    Ok(None)
}

/// Parses method, path, query and body into a [`Request`].
pub fn parse(method: &str, path: &str, q: Option<&str>, b: &[u8]) -> Res<Request> {
    let not_found =
        || err(ErrorKind::NotFound, format!("No route {} {}", clip(method, 16), clip(path, MAX_ECHO_BYTES)));
    let rest = path.strip_prefix(API_PREFIX).filter(|r| r.is_empty() || r.starts_with('/')).ok_or_else(not_found)?;
    // The segments between slashes. An empty one is an empty id (`/snapshots//abort`,
    // `/domains/`): refused, not skipped.
    let rest = rest.strip_prefix('/').unwrap_or(rest);
    let parts: Vec<&str> = if rest.is_empty() { Vec::new() } else { rest.split('/').collect() };
    if parts.iter().any(|p| p.is_empty()) {
        return Err(err(ErrorKind::BadRequest, format!("Empty segment in path {}", clip(path, MAX_ECHO_BYTES))));
    }
    let domain = |n: &str| Id::parse("Domain name", n);
    let snapshot = |id: &str| Id::parse("Snapshot id", id);
    let restore = |id: &str| Id::parse("Restore id", id);
    let image = |id: &str| Id::parse("Image id", id);
    Ok(match (method, parts.as_slice()) {
        ("GET", ["host"]) => Request::HostInfo,
        ("GET", ["domains"]) => Request::ListDomains,
        ("POST", ["domains"]) => Request::Define(body(b)?),
        ("GET", ["domains", n]) => Request::GetDomain(domain(n)?),
        ("DELETE", ["domains", n]) => Request::Destroy(domain(n)?),
        ("GET", ["domains", n, "console"]) => Request::Console(domain(n)?),
        // The guest's request line is the guest's business; the body limit bounds it.
        ("POST", ["domains", n, "guest"]) => Request::Guest(domain(n)?, json_body(b)?),
        ("POST", ["domains", n, a]) => {
            let n = domain(n)?;
            let action: Action = serde_json::from_value(serde_json::Value::String(a.to_string()))
                .map_err(|_| err(ErrorKind::NotFound, format!("No action {:?}", clip(a, MAX_ECHO_BYTES))))?;
            let req = if b.is_empty() { ActionRequest::default() } else { body(b)? };
            Request::Act(n, action, req)
        }
        ("GET", ["events"]) => Request::Events {
            after: query(q, "after")?.unwrap_or(0),
            wait_ms: query(q, "wait_ms")?.unwrap_or(0).min(60_000),
        },
        ("PUT", ["segments", id]) => {
            let id = id.parse().map_err(|_| {
                err(ErrorKind::BadRequest, format!("Segment id {:?} is not a number", clip(id, MAX_ECHO_BYTES)))
            })?;
            Request::SetPeers(id, body(b)?)
        }
        ("GET", ["switch"]) => Request::Switch,
        ("POST", ["snapshots", "prepare"]) => Request::SnapPrepare(body(b)?),
        ("POST", ["snapshots", id, "cut"]) => {
            Request::SnapCut(snapshot(id)?, if b.is_empty() { CutRequest::default() } else { body(b)? })
        }
        ("GET", ["snapshots", id]) => Request::SnapStatus(snapshot(id)?),
        ("POST", ["snapshots", id, "commit"]) => Request::SnapCommit(snapshot(id)?),
        ("POST", ["snapshots", id, "abort"]) => Request::SnapAbort(snapshot(id)?),
        ("DELETE", ["snapshots", id]) => Request::SnapDelete(snapshot(id)?),
        ("POST", ["restores", "check"]) => Request::RestoreCheck(body(b)?),
        ("POST", ["restores", "prepare"]) => Request::RestorePrepare(body(b)?),
        ("POST", ["restores", id, "resume"]) => Request::RestoreResume(restore(id)?),
        ("POST", ["restores", id, "abort"]) => Request::RestoreAbort(restore(id)?),
        ("POST", ["images"]) => Request::ImageCapture(body(b)?),
        ("GET", ["images", id]) => Request::ImageStatus(image(id)?),
        ("DELETE", ["images", id]) => Request::ImageDelete(image(id)?),
        _ => return Err(not_found()),
    })
}

fn json<T: serde::Serialize>(v: T) -> Res<Reply> {
    serde_json::to_value(v).map(Reply::Json).map_err(|e| err(ErrorKind::Internal, e.to_string()))
}

fn empty() -> Res<Reply> {
    Ok(Reply::Json(serde_json::json!({})))
}

/// Runs a blocking host operation on the blocking pool.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Res<T> + Send + 'static) -> Res<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| err(ErrorKind::Internal, format!("task failed: {e}")))?
}

/// Executes a request: the one dispatch point of the agent.
pub async fn dispatch(host: Arc<Host>, req: Request) -> Res<Reply> {
    let h = host.clone();
    match req {
        Request::HostInfo => json(blocking(move || Ok(h.host_info())).await?),
        Request::ListDomains => {
            json(blocking(move || Ok(h.all().iter().map(|d| h.info(d)).collect::<Vec<_>>())).await?)
        }
        Request::Define(spec) => json(blocking(move || h.define(spec)).await?),
        Request::GetDomain(n) => json(blocking(move || h.get(&n).map(|d| h.info(&d))).await?),
        Request::Act(n, action, r) => json(
            blocking(move || match action {
                Action::Start => h.start(&n),
                Action::Stop => h.stop(&n, Duration::from_secs(r.timeout_s.unwrap_or(10))),
                Action::Reboot => h.reboot(&n),
                Action::Pause => h.pause(&n),
                Action::Resume => h.resume(&n),
            })
            .await?,
        ),
        Request::Destroy(n) => {
            blocking(move || h.destroy(&n)).await?;
            empty()
        }
        Request::Console(n) => Ok(Reply::Text(blocking(move || h.console(&n)).await?)),
        Request::Guest(n, v) => json(blocking(move || h.guest_call(&n, &v, Duration::from_secs(120))).await?),
        Request::Events { after, wait_ms } => json(host.events.wait_after(after, Duration::from_millis(wait_ms)).await),
        Request::SetPeers(id, peers) => {
            blocking(move || h.set_segment_peers(id, &peers)).await?;
            empty()
        }
        Request::Switch => json(host.switch.stats().map_err(|e| err(ErrorKind::Internal, e.to_string()))?),
        Request::SnapPrepare(r) => json(blocking(move || crate::snapshot::prepare(&h, r)).await?),
        Request::SnapCut(id, r) => json(blocking(move || crate::snapshot::cut(&h, &id, r)).await?),
        Request::SnapStatus(id) => json(blocking(move || crate::snapshot::status(&h, &id)).await?),
        Request::SnapCommit(id) => json(blocking(move || crate::snapshot::commit(&h, &id)).await?),
        Request::SnapAbort(id) => {
            blocking(move || crate::snapshot::abort(&h, &id)).await?;
            empty()
        }
        Request::SnapDelete(id) => {
            blocking(move || crate::snapshot::delete(&h, &id)).await?;
            empty()
        }
        Request::RestoreCheck(r) => json(blocking(move || crate::restore::check(&h, r)).await?),
        Request::RestorePrepare(r) => json(blocking(move || crate::restore::prepare(&h, r)).await?),
        Request::RestoreResume(id) => json(blocking(move || crate::restore::resume(&h, &id)).await?),
        Request::RestoreAbort(id) => {
            blocking(move || crate::restore::abort(&h, &id)).await?;
            empty()
        }
        Request::ImageCapture(r) => json(blocking(move || crate::image::capture(&h, r)).await?),
        Request::ImageStatus(id) => json(blocking(move || crate::image::status(&h, &id)).await?),
        Request::ImageDelete(id) => {
            blocking(move || crate::image::delete(&h, &id)).await?;
            empty()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_routes() {
        assert!(matches!(parse("GET", "/v1/host", None, b""), Ok(Request::HostInfo)));
        assert!(matches!(parse("POST", "/v1/domains/a/stop", None, b""), Ok(Request::Act(_, Action::Stop, _))));
        assert!(matches!(
            parse("GET", "/v1/events", Some("after=3&wait_ms=10"), b""),
            Ok(Request::Events { after: 3, wait_ms: 10 })
        ));
    }

    #[test]
    fn rejects_unknown_routes_and_actions() {
        assert_eq!(parse("GET", "/v2/host", None, b"").unwrap_err().kind, ErrorKind::NotFound);
        assert_eq!(parse("POST", "/v1/domains/a/explode", None, b"").unwrap_err().kind, ErrorKind::NotFound);
    }

    /// Every route that takes an id in its path, with `{}` for the id.
    const ID_ROUTES: [(&str, &str); 17] = [
        ("GET", "/v1/domains/{}"),
        ("DELETE", "/v1/domains/{}"),
        ("GET", "/v1/domains/{}/console"),
        ("POST", "/v1/domains/{}/guest"),
        ("POST", "/v1/domains/{}/start"),
        ("POST", "/v1/domains/{}/stop"),
        ("POST", "/v1/domains/{}/explode"),
        ("POST", "/v1/snapshots/{}/cut"),
        ("GET", "/v1/snapshots/{}"),
        ("POST", "/v1/snapshots/{}/commit"),
        ("POST", "/v1/snapshots/{}/abort"),
        ("DELETE", "/v1/snapshots/{}"),
        ("POST", "/v1/restores/{}/resume"),
        ("POST", "/v1/restores/{}/abort"),
        ("GET", "/v1/images/{}"),
        ("DELETE", "/v1/images/{}"),
        ("PUT", "/v1/segments/{}"),
    ];

    #[test]
    fn every_path_id_is_checked_before_a_handler_sees_it() {
        let long = "a".repeat(64);
        let huge = "b".repeat(100_000);
        for (m, route) in ID_ROUTES {
            for bad in [".", "..", "%2e%2e", "%2E%2e", "a%2Fb", "%2F", "", "UPPER", "a\x01b", "-x", &long, &huge] {
                let path = route.replace("{}", bad);
                let e = match parse(m, &path, None, b"{}") {
                    Ok(r) => panic!("{m} {path} parsed as {r:?}"),
                    Err(e) => e,
                };
                assert_eq!(e.kind, ErrorKind::BadRequest, "{m} {path}: {e:?}");
                assert!(e.message.len() < 1024, "{m} {route}: the error echoes the whole input");
            }
            let good = route.replace("{}", if route.contains("segments") { "7" } else { "ok-1" });
            let body: &[u8] = if route.contains("segments") { br#"{"peers":[]}"# } else { b"{}" };
            let r = parse(m, &good, None, body);
            assert!(r.is_ok() || r.as_ref().unwrap_err().kind == ErrorKind::NotFound, "{m} {good}: {r:?}");
        }
        // `a/b` splits into another route's shape: refused as such, never reaching a handler
        // with a slash in an id.
        assert!(parse("POST", "/v1/snapshots/a/b/abort", None, b"").is_err());
        assert!(parse("POST", "/v1/snapshots/../abort", None, b"").is_err());
        assert!(parse("GET", "/v1host", None, b"").is_err());
        assert_eq!(parse("GET", "/v1/domains/", None, b"").unwrap_err().kind, ErrorKind::BadRequest);
    }

    #[test]
    fn body_ids_and_numbers_are_checked() {
        let bad_bodies: [(&str, &str, &str); 8] = [
            ("POST", "/v1/snapshots/prepare", r#"{"snapshot":"..","epoch":1,"domains":["a"]}"#),
            ("POST", "/v1/snapshots/prepare", r#"{"snapshot":"s","epoch":1,"domains":["../a"]}"#),
            ("POST", "/v1/images", r#"{"image":".","domain":"a"}"#),
            ("POST", "/v1/restores/check", r#"{"restore":"..","snapshot":"s","domains":[]}"#),
            ("POST", "/v1/restores/prepare", r#"{"restore":"r","snapshot":"a/b","domains":[]}"#),
            (
                "POST",
                "/v1/domains",
                r#"{"name":"a","vcpus":1,"memory_mib":18446744073709551615,"boot":{"type":"disk"}}"#,
            ),
            ("POST", "/v1/domains/a/stop", r#"{"timeout_s":18446744073709551615}"#),
            ("POST", "/v1/snapshots/s/cut", r#"{"stagger_ms":{"a":18446744073709551615}}"#),
        ];
        for (m, p, b) in bad_bodies {
            let e = parse(m, p, None, b.as_bytes()).unwrap_err();
            assert_eq!(e.kind, ErrorKind::BadRequest, "{m} {p} {b}: {e:?}");
        }
        let peers = format!(r#"{{"peers":[{}]}}"#, vec![r#""10.0.0.1:1""#; 500].join(","));
        let e = parse("PUT", "/v1/segments/1", None, peers.as_bytes()).unwrap_err();
        assert!(e.message.contains("peers"), "{e:?}");
    }

    #[test]
    fn rejects_malformed_and_unknown_fields() {
        assert_eq!(parse("POST", "/v1/domains", None, b"{not json").unwrap_err().kind, ErrorKind::BadRequest);
        let e = parse(
            "POST",
            "/v1/domains",
            None,
            br#"{"name":"a","vcpus":1,"memory_mib":64,"boot":{"type":"disk"},"x":1}"#,
        )
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadRequest);
        assert!(e.message.contains("unknown field"), "{}", e.message);
    }
}
