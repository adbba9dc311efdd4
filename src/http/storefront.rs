//! The storefront page at `/`: static HTML, CSS and JavaScript compiled into the binary
//! (no build step, no CDN). It uses only the public GraphQL API, as any storefront would.

use axum::http::header;
use axum::response::{Html, IntoResponse};

pub async fn page() -> impl IntoResponse {
    Html(include_str!("storefront/index.html"))
}

pub async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("storefront/storefront.js"),
    )
}

pub async fn style() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("storefront/storefront.css"),
    )
}
