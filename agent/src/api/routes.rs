//! Parsing of HTTP requests into [`Request`] and the one dispatch `match`.

use crate::host::{err, Host, Res};
use std::sync::Arc;
use std::time::Duration;
use vnsnap_proto::*;

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
    GetDomain(String),
    /// `POST /domains/{name}/{action}`
    Act(String, Action, ActionRequest),
    /// `DELETE /domains/{name}`
    Destroy(String),
    /// `GET /domains/{name}/console`
    Console(String),
    /// `POST /domains/{name}/guest`
    Guest(String, serde_json::Value),
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
    SnapCut(String, CutRequest),
    /// `GET /snapshots/{id}`
    SnapStatus(String),
    /// `POST /snapshots/{id}/commit`
    SnapCommit(String),
    /// `POST /snapshots/{id}/abort`
    SnapAbort(String),
    /// `DELETE /snapshots/{id}`
    SnapDelete(String),
    /// `POST /restores/check`
    RestoreCheck(RestoreRequest),
    /// `POST /restores/prepare`
    RestorePrepare(RestoreRequest),
    /// `POST /restores/{id}/resume`
    RestoreResume(String),
    /// `POST /restores/{id}/abort`
    RestoreAbort(String),
    /// `POST /images`
    ImageCapture(CaptureRequest),
    /// `GET /images/{id}`
    ImageStatus(String),
    /// `DELETE /images/{id}`
    ImageDelete(String),
}

/// A reply body.
#[derive(Debug)]
pub enum Reply {
    /// JSON.
    Json(serde_json::Value),
    /// Plain text.
    Text(String),
}

fn body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Res<T> {
    serde_json::from_slice(bytes).map_err(|e| err(ErrorKind::BadRequest, format!("Invalid request body: {e}")))
}

fn query(q: Option<&str>, key: &str) -> Res<Option<u64>> {
    for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == key {
            return v
                .parse()
                .map(Some)
                .map_err(|_| err(ErrorKind::BadRequest, format!("Query {key}={v:?} is not a number")));
        }
    }
    Ok(None)
}

/// Parses method, path, query and body into a [`Request`].
pub fn parse(method: &str, path: &str, q: Option<&str>, b: &[u8]) -> Res<Request> {
    let rest = path.strip_prefix(API_PREFIX).ok_or_else(|| err(ErrorKind::NotFound, format!("No route {path}")))?;
    let parts: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let not_found = || err(ErrorKind::NotFound, format!("No route {method} {path}"));
    Ok(match (method, parts.as_slice()) {
        ("GET", ["host"]) => Request::HostInfo,
        ("GET", ["domains"]) => Request::ListDomains,
        ("POST", ["domains"]) => Request::Define(body(b)?),
        ("GET", ["domains", n]) => Request::GetDomain(n.to_string()),
        ("DELETE", ["domains", n]) => Request::Destroy(n.to_string()),
        ("GET", ["domains", n, "console"]) => Request::Console(n.to_string()),
        ("POST", ["domains", n, "guest"]) => Request::Guest(n.to_string(), body(b)?),
        ("POST", ["domains", n, a]) => {
            let action: Action = serde_json::from_value(serde_json::Value::String(a.to_string()))
                .map_err(|_| err(ErrorKind::NotFound, format!("No action {a:?}")))?;
            let req = if b.is_empty() { ActionRequest::default() } else { body(b)? };
            Request::Act(n.to_string(), action, req)
        }
        ("GET", ["events"]) => Request::Events {
            after: query(q, "after")?.unwrap_or(0),
            wait_ms: query(q, "wait_ms")?.unwrap_or(0).min(60_000),
        },
        ("PUT", ["segments", id]) => {
            let id =
                id.parse().map_err(|_| err(ErrorKind::BadRequest, format!("Segment id {id:?} is not a number")))?;
            Request::SetPeers(id, body(b)?)
        }
        ("GET", ["switch"]) => Request::Switch,
        ("POST", ["snapshots", "prepare"]) => Request::SnapPrepare(body(b)?),
        ("POST", ["snapshots", id, "cut"]) => {
            Request::SnapCut(id.to_string(), if b.is_empty() { CutRequest::default() } else { body(b)? })
        }
        ("GET", ["snapshots", id]) => Request::SnapStatus(id.to_string()),
        ("POST", ["snapshots", id, "commit"]) => Request::SnapCommit(id.to_string()),
        ("POST", ["snapshots", id, "abort"]) => Request::SnapAbort(id.to_string()),
        ("DELETE", ["snapshots", id]) => Request::SnapDelete(id.to_string()),
        ("POST", ["restores", "check"]) => Request::RestoreCheck(body(b)?),
        ("POST", ["restores", "prepare"]) => Request::RestorePrepare(body(b)?),
        ("POST", ["restores", id, "resume"]) => Request::RestoreResume(id.to_string()),
        ("POST", ["restores", id, "abort"]) => Request::RestoreAbort(id.to_string()),
        ("POST", ["images"]) => Request::ImageCapture(body(b)?),
        ("GET", ["images", id]) => Request::ImageStatus(id.to_string()),
        ("DELETE", ["images", id]) => Request::ImageDelete(id.to_string()),
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
