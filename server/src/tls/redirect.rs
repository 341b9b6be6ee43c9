//! `--http-redirect ADDR`: a plain-HTTP listener whose only answer is a permanent redirect
//! (308, which keeps the method) to the same host, the HTTPS port, the same path and query. So
//! `http://host/r/standup` typed by a person lands on `https://host:8443/r/standup`.

use std::str::FromStr;

use axum::http::uri::Authority;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The redirecting router for an HTTPS server on `https_port`.
pub fn router(https_port: u16) -> Router {
    Router::new().fallback(move |headers: HeaderMap, uri: Uri| async move {
        redirect(&headers, &uri, https_port)
    })
}

/// Serves [`router`] on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    https_port: u16,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(https_port))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

fn redirect(headers: &HeaderMap, uri: &Uri, https_port: u16) -> Response {
    let authority = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| Authority::from_str(h).ok())
        .or_else(|| uri.authority().cloned());
    let Some(authority) = authority.filter(|a| !a.host().is_empty() && !a.as_str().contains('@'))
    else {
        return (
            StatusCode::BAD_REQUEST,
            "This address serves HTTPS only, and the request named no host to redirect to.\n",
        )
            .into_response();
    };
    let host = authority.host();
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let location = if https_port == 443 {
        format!("https://{host}{path}")
    } else {
        format!("https://{host}:{https_port}{path}")
    };
    (
        StatusCode::PERMANENT_REDIRECT,
        [(header::LOCATION, location)],
        "Moved to HTTPS.\n",
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location(host: Option<&str>, uri: &str, port: u16) -> (StatusCode, Option<String>) {
        let mut headers = HeaderMap::new();
        if let Some(host) = host {
            headers.insert(header::HOST, host.parse().unwrap());
        }
        let response = redirect(&headers, &uri.parse().unwrap(), port);
        let location = response
            .headers()
            .get(header::LOCATION)
            .map(|l| l.to_str().unwrap().to_string());
        (response.status(), location)
    }

    #[test]
    fn same_host_https_port_path_and_query() {
        assert_eq!(
            location(Some("192.0.2.1:8080"), "/r/standup?x=1", 8443),
            (
                StatusCode::PERMANENT_REDIRECT,
                Some("https://192.0.2.1:8443/r/standup?x=1".into())
            )
        );
        assert_eq!(
            location(Some("noom.example"), "/", 443).1.as_deref(),
            Some("https://noom.example/")
        );
        assert_eq!(
            location(Some("[2001:db8::1]:80"), "/ws", 8443).1.as_deref(),
            Some("https://[2001:db8::1]:8443/ws")
        );
        assert_eq!(location(None, "/", 8443).0, StatusCode::BAD_REQUEST);
        assert_eq!(location(Some("a b"), "/", 8443).0, StatusCode::BAD_REQUEST);
        assert_eq!(
            location(Some("user@evil.example"), "/", 8443).0,
            StatusCode::BAD_REQUEST
        );
    }
}
