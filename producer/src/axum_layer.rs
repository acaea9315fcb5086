//! Axum integration (feature `axum`): a tower layer that gives each request an audit context, and
//! an extractor so handlers log with it.
//!
//! ```no_run
//! use audit_producer::axum_layer::{Audit, AuditLayer};
//! use audit_producer::{Actor, AuditEventInput, AuditLogger, Outcome};
//! use axum::{routing::post, Router};
//!
//! async fn login(audit: Audit) -> &'static str {
//!     let event = AuditEventInput::new("user.login", Outcome::Success, Actor::new("user", "u-1"));
//!     let _ = audit.log(event).await;
//!     "ok"
//! }
//!
//! # async fn app(logger: AuditLogger) {
//! let layer = AuditLayer::new(logger).trusted_proxies(["10.0.0.0/8"]).unwrap();
//! let app: Router = Router::new().route("/login", post(login)).layer(layer);
//! # }
//! ```
//!
//! Per request the layer records:
//! * `requestId`: the `x-request-id` header when it is a sane token (printable, at most 128
//!   characters), else a new ULID; echoed back in the response's `x-request-id`;
//! * `ip`: the peer address (from `ConnectInfo`), or, when the peer is a trusted proxy, the
//!   right-most `X-Forwarded-For` address that is not itself a trusted proxy;
//! * `userAgent`, and `traceId`/`spanId` from a W3C `traceparent` header.
//!
//! Request bodies are never read.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use axum::extract::{ConnectInfo, FromRequestParts};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use ipnet::IpNet;
use tower::{Layer, Service};

use crate::{AuditLogger, Context};

/// Request header carrying the request id.
pub const REQUEST_ID: &str = "x-request-id";

/// The layer; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct AuditLayer {
    logger: AuditLogger,
    trusted: Arc<Vec<IpNet>>,
}

/// A trusted-proxy entry that is not an IP address or CIDR network.
#[derive(Debug, Clone, thiserror::Error)]
#[error("trusted proxy {0:?} is not an IP address or CIDR network (e.g. 10.0.0.0/8)")]
pub struct TrustedProxyError(pub String);

impl AuditLayer {
    /// A layer whose handlers log through children of `logger`. No proxy is trusted.
    pub fn new(logger: AuditLogger) -> Self {
        AuditLayer { logger, trusted: Arc::new(Vec::new()) }
    }

    /// Proxies (addresses or CIDR networks) whose `X-Forwarded-For` is believed.
    pub fn trusted_proxies<I, S>(mut self, proxies: I) -> Result<Self, TrustedProxyError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut nets = Vec::new();
        for p in proxies {
            let p = p.as_ref().trim();
            let net = p
                .parse::<IpNet>()
                .or_else(|_| p.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| TrustedProxyError(p.to_owned()))?;
            nets.push(net);
        }
        self.trusted = Arc::new(nets);
        Ok(self)
    }
}

impl<S> Layer<S> for AuditLayer {
    type Service = AuditService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuditService { inner, layer: self.clone() }
    }
}

/// The service the layer wraps around a handler stack.
#[derive(Debug, Clone)]
pub struct AuditService<S> {
    inner: S,
    layer: AuditLayer,
}

fn is_token(value: &str) -> bool {
    !value.is_empty() && value.len() <= 128 && value.bytes().all(|b| b.is_ascii_graphic())
}

/// The client address: the peer, unless the peer is a trusted proxy, in which case the right-most
/// `X-Forwarded-For` entry that is not a trusted proxy.
pub fn client_ip(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &[IpNet]) -> Option<IpAddr> {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    let peer = peer?;
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse::<IpAddr>().ok())
        .collect();
    forwarded.iter().rev().find(|ip| !is_trusted(ip)).copied().or_else(|| forwarded.first().copied()).or(Some(peer))
}

impl AuditLayer {
    fn context_for(&self, headers: &HeaderMap, peer: Option<IpAddr>) -> Context {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
        let request_id = header(REQUEST_ID)
            .filter(|v| is_token(v))
            .map(str::to_owned)
            .unwrap_or_else(|| ulid::Ulid::generate().to_string());
        let (trace_id, span_id) = header("traceparent").and_then(crate::trace::parse_traceparent).unzip();
        Context {
            request_id: Some(request_id),
            ip: client_ip(peer, headers, &self.trusted).map(|ip| ip.to_canonical().to_string()),
            user_agent: header("user-agent").map(|ua| ua.chars().take(1024).collect()),
            trace_id,
            span_id,
            ..Context::default()
        }
    }
}

impl<S, B, RB> Service<Request<B>> for AuditService<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        let context = self.layer.context_for(request.headers(), peer);
        let request_id = context.request_id.clone().and_then(|id| HeaderValue::from_str(&id).ok());
        request.extensions_mut().insert(Audit(self.layer.logger.child(context)));
        let future = self.inner.call(request);
        Box::pin(async move {
            let mut response = future.await?;
            if let Some(id) = request_id {
                response.headers_mut().entry(REQUEST_ID).or_insert(id);
            }
            Ok(response)
        })
    }
}

/// Extractor: the request's audit logger (a child carrying the request's context).
#[derive(Debug, Clone)]
pub struct Audit(pub AuditLogger);

impl std::ops::Deref for Audit {
    type Target = AuditLogger;

    fn deref(&self) -> &AuditLogger {
        &self.0
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Audit {
    type Rejection = (StatusCode, &'static str);

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Audit>()
            .cloned()
            .ok_or((StatusCode::INTERNAL_SERVER_ERROR, "audit: AuditLayer is not installed on this route"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "203.0.113.9, 10.1.2.3".parse().unwrap());
        let trusted = nets(&["10.0.0.0/8"]);
        let proxy: IpAddr = "10.9.9.9".parse().unwrap();
        let stranger: IpAddr = "198.51.100.7".parse().unwrap();
        assert_eq!(client_ip(Some(proxy), &h, &trusted), Some("203.0.113.9".parse().unwrap()));
        assert_eq!(client_ip(Some(stranger), &h, &trusted), Some(stranger), "spoofed header from an untrusted peer");
        assert_eq!(client_ip(Some(proxy), &HeaderMap::new(), &trusted), Some(proxy));
    }

    #[test]
    fn a_client_cannot_hide_behind_a_forged_left_entry() {
        let mut h = HeaderMap::new();
        // The client sent "1.1.1.1" itself; the trusted proxy appended the real client address.
        h.insert("x-forwarded-for", "1.1.1.1, 203.0.113.9".parse().unwrap());
        let trusted = nets(&["10.0.0.0/8"]);
        assert_eq!(client_ip(Some("10.0.0.1".parse().unwrap()), &h, &trusted), Some("203.0.113.9".parse().unwrap()));
    }

    #[test]
    fn request_ids_must_be_sane_tokens() {
        assert!(is_token("req-123_abc"));
        assert!(!is_token(""));
        assert!(!is_token("has space"));
        assert!(!is_token(&"x".repeat(129)));
    }
}
