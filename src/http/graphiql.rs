//! GraphiQL, from files embedded in the binary (assets/graphiql/README.md has their
//! versions and licences): the page loads nothing from outside the service, so it works
//! on an isolated network. Asset URLs carry the version, so they are cached for good.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// GraphiQL's version: part of every asset URL.
pub const VERSION: &str = "3.8.3";

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// (file name, content type, content)
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "react.production.min.js",
        JS,
        include_bytes!("../../assets/graphiql/react.production.min.js"),
    ),
    (
        "react-dom.production.min.js",
        JS,
        include_bytes!("../../assets/graphiql/react-dom.production.min.js"),
    ),
    (
        "graphiql.min.js",
        JS,
        include_bytes!("../../assets/graphiql/graphiql.min.js"),
    ),
    (
        "graphiql.min.css",
        CSS,
        include_bytes!("../../assets/graphiql/graphiql.min.css"),
    ),
    (
        "boot.js",
        JS,
        include_bytes!("../../assets/graphiql/boot.js"),
    ),
];

/// Nothing from elsewhere: scripts and styles from this origin (GraphiQL sets inline
/// styles), fonts and icons inlined as data, requests to this origin (WebSocket too).
const POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
    img-src 'self' data:; font-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; \
    base-uri 'none'; form-action 'none'";

fn page() -> String {
    let asset = |name: &str| format!("/graphiql/{VERSION}/{name}");
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>flashstock GraphiQL</title>
<link rel="stylesheet" href="{css}">
<style>html, body, #graphiql {{ height: 100%; margin: 0; }}</style>
</head>
<body>
<div id="graphiql">Loading GraphiQL…</div>
<script src="{react}"></script>
<script src="{react_dom}"></script>
<script src="{graphiql}"></script>
<script src="{boot}"></script>
</body>
</html>
"#,
        css = asset("graphiql.min.css"),
        react = asset("react.production.min.js"),
        react_dom = asset("react-dom.production.min.js"),
        graphiql = asset("graphiql.min.js"),
        boot = asset("boot.js"),
    )
}

/// The page: never cached, so a new release's asset URLs are picked up at once.
pub fn graphiql_page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        page(),
    )
        .into_response()
}

/// `GET /graphiql/{version}/{file}`: versioned, so cached for a year and never revalidated.
pub async fn asset(Path((version, file)): Path<(String, String)>) -> Response {
    let found = ASSETS.iter().find(|(name, _, _)| *name == file);
    match found {
        Some((_, content_type, body)) if version == VERSION => (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
                (
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("public, max-age=31536000, immutable"),
                ),
                (
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                ),
            ],
            *body,
        )
            .into_response(),
        _ => (StatusCode::NOT_FOUND, "no such GraphiQL asset").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_embedded_assets() {
        let page = page();
        for (name, _, _) in ASSETS {
            if *name != "graphiql.min.css" {
                assert!(page.contains(&format!(r#"<script src="/graphiql/{VERSION}/{name}">"#)));
            }
        }
        assert!(!page.contains("http://") && !page.contains("https://"));
    }
}
