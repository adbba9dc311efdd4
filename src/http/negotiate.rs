//! Media types of GraphQL over HTTP: which response format a client accepts (`Accept`),
//! and whether a POST body is JSON (`Content-Type`). Parsed without allocating: this runs
//! on every request.

use axum::http::{HeaderMap, StatusCode, header};

use crate::error::{Refusal, codes};

pub const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json; charset=utf-8";
pub const JSON: &str = "application/json; charset=utf-8";

/// The format of a GraphQL response, and with it the status-code rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// `application/graphql-response+json`: a request that fails before execution (parse,
    /// validation, limits) gets a 4xx and no `data` entry.
    GraphqlResponse,
    /// `application/json` asked for by name: the format of GraphQL clients older than the
    /// media type above, which expect 200 for every well-formed request.
    LegacyJson,
    /// `application/json` because the client takes anything (`*/*`, `application/*`, or
    /// no Accept header): the service's own statuses, which a proxy can read too.
    Json,
}

impl Answer {
    pub fn content_type(self) -> &'static str {
        match self {
            Self::GraphqlResponse => GRAPHQL_RESPONSE_JSON,
            Self::LegacyJson | Self::Json => JSON,
        }
    }
}

/// What the client's Accept header allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    /// The GraphQL response format it prefers, if it takes one.
    pub answer: Option<Answer>,
    /// Whether it takes an HTML page (a browser opening /graphql).
    pub html: bool,
}

/// The `q` of a media range (1 when absent), and whether its charset is one we send.
fn parameters(params: &str) -> (f32, bool) {
    let mut q = 1.0;
    let mut utf8 = true;
    for param in params.split(';') {
        let Some((name, value)) = param.split_once('=') else {
            continue;
        };
        let value = value.trim().trim_matches('"');
        match name.trim() {
            n if n.eq_ignore_ascii_case("q") => q = value.parse().unwrap_or(0.0),
            n if n.eq_ignore_ascii_case("charset") => {
                utf8 = value.eq_ignore_ascii_case("utf-8") || value.eq_ignore_ascii_case("utf8")
            }
            _ => {}
        }
    }
    (q, utf8)
}

pub fn accepted(headers: &HeaderMap) -> Accepted {
    let mut best: Option<(f32, Answer)> = None;
    let mut html = false;
    let mut any_header = false;
    for value in headers.get_all(header::ACCEPT) {
        let Ok(value) = value.to_str() else { continue };
        for range in value.split(',') {
            let (media, params) = range.split_once(';').unwrap_or((range, ""));
            let media = media.trim();
            if media.is_empty() {
                continue;
            }
            any_header = true;
            let (q, utf8) = parameters(params);
            if q <= 0.0 || !utf8 {
                continue;
            }
            let answer = if media.eq_ignore_ascii_case("application/graphql-response+json") {
                Answer::GraphqlResponse
            } else if media.eq_ignore_ascii_case("application/json") {
                Answer::LegacyJson
            } else if media == "*/*" || media.eq_ignore_ascii_case("application/*") {
                html |= media == "*/*";
                Answer::Json
            } else {
                html |=
                    media.eq_ignore_ascii_case("text/html") || media.eq_ignore_ascii_case("text/*");
                continue;
            };
            // The first of equally preferred types wins, as the client listed them.
            if best.is_none_or(|(best_q, _)| q > best_q) {
                best = Some((q, answer));
            }
        }
    }
    if !any_header {
        return Accepted {
            answer: Some(Answer::Json),
            html: false,
        };
    }
    Accepted {
        answer: best.map(|(_, answer)| answer),
        html,
    }
}

pub fn not_acceptable() -> Refusal {
    Refusal::new(
        StatusCode::NOT_ACCEPTABLE,
        codes::NOT_ACCEPTABLE,
        "this endpoint answers application/graphql-response+json or application/json (utf-8)",
    )
}

/// A POST body must say it is JSON; a missing Content-Type is refused too, as the
/// GraphQL-over-HTTP spec asks, so a form post from another site never executes.
pub fn require_json_body(headers: &HeaderMap) -> Result<(), Refusal> {
    let unsupported = || {
        Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            codes::UNSUPPORTED_MEDIA_TYPE,
            "a GraphQL POST body must be sent as Content-Type: application/json (utf-8)",
        )
    };
    let value = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(unsupported)?;
    let (media, params) = value.split_once(';').unwrap_or((value, ""));
    let (_, utf8) = parameters(params);
    if media.trim().eq_ignore_ascii_case("application/json") && utf8 {
        Ok(())
    } else {
        Err(unsupported())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: Option<&str>) -> Accepted {
        let mut headers = HeaderMap::new();
        if let Some(value) = value {
            headers.insert(header::ACCEPT, value.parse().unwrap());
        }
        accepted(&headers)
    }

    #[test]
    fn the_preferred_graphql_format_is_chosen() {
        let answer = |value| accept(value).answer;
        assert_eq!(answer(None), Some(Answer::Json));
        assert_eq!(answer(Some("*/*")), Some(Answer::Json));
        assert_eq!(answer(Some("application/json")), Some(Answer::LegacyJson));
        assert_eq!(
            answer(Some("application/graphql-response+json")),
            Some(Answer::GraphqlResponse)
        );
        assert_eq!(
            answer(Some(
                "application/graphql-response+json, application/json;q=0.9"
            )),
            Some(Answer::GraphqlResponse)
        );
        assert_eq!(
            answer(Some("application/json, application/graphql-response+json")),
            Some(Answer::LegacyJson)
        );
        assert_eq!(
            answer(Some(
                "application/json;q=0.5, application/graphql-response+json"
            )),
            Some(Answer::GraphqlResponse)
        );
        assert_eq!(answer(Some("application/json; charset=iso-8859-1")), None);
        assert_eq!(answer(Some("text/html")), None);
        assert_eq!(answer(Some("application/json;q=0")), None);
    }

    #[test]
    fn browsers_are_told_apart_by_html() {
        let browser = accept(Some(
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        ));
        assert!(browser.html);
        assert_eq!(browser.answer, Some(Answer::Json));
        assert!(!accept(Some("application/json")).html);
    }

    #[test]
    fn only_json_bodies_are_taken() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, value.parse().unwrap());
            require_json_body(&headers).is_ok()
        };
        assert!(with("application/json"));
        assert!(with("Application/JSON; charset=UTF-8"));
        assert!(!with("text/plain;charset=UTF-8"));
        assert!(!with("application/json; charset=latin1"));
        assert!(!with("application/x-www-form-urlencoded"));
        assert!(require_json_body(&HeaderMap::new()).is_err());
    }
}
