//! The browser's files (`web/`), built into the binary so the two README
//! commands still set everything up; `Config::web_dir` serves them from a
//! directory instead, read at every request, for front-end work.
//!
//! Only the files listed here are served, whichever the source: a request
//! names an entry, never a path.
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::HttpResponse;

use crate::http::AppState;

struct File {
    name: &'static str,
    content_type: &'static str,
    built_in: &'static str,
}

macro_rules! files {
    ($(($name:literal, $type:literal)),* $(,)?) => {
        const FILES: &[File] = &[$(File {
            name: $name,
            content_type: $type,
            built_in: include_str!(concat!("../../web/", $name)),
        }),*];
    };
}

const HTML: &str = "text/html; charset=utf-8";
files!(
    ("admin/index.html", "text/html; charset=utf-8"),
    ("admin/admin.js", "text/javascript; charset=utf-8"),
    ("admin/admin.css", "text/css; charset=utf-8"),
    ("widget/buktor-booking.js", "text/javascript; charset=utf-8"),
    ("widget/frame.html", "text/html; charset=utf-8"),
    ("widget/manage.html", "text/html; charset=utf-8"),
);

/// A file to send, or that there is none of that name.
pub struct Asset {
    found: Option<(&'static str, String)>,
}

pub fn get(state: &AppState, name: &str) -> Asset {
    let Some(file) = FILES.iter().find(|f| f.name == name) else {
        return Asset { found: None };
    };
    let body = match &state.web_dir {
        None => file.built_in.to_owned(),
        Some(dir) => match std::fs::read_to_string(dir.join(file.name)) {
            Ok(body) => body,
            Err(e) => {
                tracing::warn!(file = file.name, error = %e, "cannot read from web_dir");
                return Asset { found: None };
            }
        },
    };
    Asset {
        found: Some((file.content_type, body)),
    }
}

impl Asset {
    pub fn response(self) -> HttpResponse {
        match self.found {
            None => crate::his::Problem::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such file")
                .response(),
            Some((content_type, body)) => {
                let mut res = HttpResponse::Ok().content_type(content_type).body(body);
                let h = res.headers_mut();
                h.insert(
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                );
                // Short: a deploy reaches browsers within minutes, and the
                // pages themselves are never cached (see `framed_page`).
                if content_type != HTML {
                    h.insert(
                        header::CACHE_CONTROL,
                        HeaderValue::from_static("public, max-age=300"),
                    );
                }
                res
            }
        }
    }
}
