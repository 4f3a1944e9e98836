//! The dashboard, `GET /ui` on every queen: one page that shows the drones and the tasks, follows
//! a task's output, and cancels tasks and drains drones, through the same API as everyone else.
//!
//! The page is three plain files in this folder, built into the binary as they are: no build
//! step, nothing fetched from anywhere but the queen that served it (its `Content-Security-Policy`
//! says so to the browser). It reads the lists once (`GET /drones`, `GET /tasks`, with the
//! revision they reflect) and then follows `GET /events` after that revision, redrawing as changes
//! come. `EventSource` cannot send a token, so the stream is read with `fetch`; the token, on a
//! hive that needs one, is asked for once and kept in the tab's `sessionStorage` only.

use crate::error::{Error, Result};
use crate::server::Response;

const INDEX: &str = include_str!("index.html");
const STYLE: &str = include_str!("hive.css");
const SCRIPT: &str = include_str!("hive.js");

/// Everything the page loads comes from this queen; nothing may be framed elsewhere.
const CONTENT_SECURITY_POLICY: &str =
    "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'";

/// The file `/ui/<path>` names (`/ui` and `/ui/` are the page).
pub fn page(path: &[&str]) -> Result<Response> {
    let (body, content_type) = match path {
        [] | [""] => (INDEX, "text/html; charset=utf-8"),
        ["hive.css"] => (STYLE, "text/css; charset=utf-8"),
        ["hive.js"] => (SCRIPT, "text/javascript; charset=utf-8"),
        _ => {
            return Err(Error::NotFound(format!(
                "dashboard file {:?}",
                path.join("/")
            )));
        }
    };
    Ok(Response {
        status: 200,
        body: body.as_bytes().to_vec(),
        content_type,
        headers: vec![
            ("Content-Security-Policy", CONTENT_SECURITY_POLICY.into()),
            ("X-Content-Type-Options", "nosniff".into()),
            ("Cache-Control", "no-cache".into()),
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_its_files_are_served_and_nothing_else() {
        let index = page(&[]).unwrap();
        assert_eq!(index.content_type, "text/html; charset=utf-8");
        let html = String::from_utf8(index.body).unwrap();
        assert!(html.contains("/ui/hive.js") && html.contains("/ui/hive.css"));
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "nothing from elsewhere"
        );
        assert_eq!(page(&[""]).unwrap().status, 200);
        assert!(
            page(&["hive.js"])
                .unwrap()
                .content_type
                .starts_with("text/javascript")
        );
        assert_eq!(page(&["..", "etc"]).unwrap_err().status(), 404);
        assert_eq!(page(&["hive.js", "x"]).unwrap_err().status(), 404);
    }
}
