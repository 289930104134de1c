//! The chat page (`/`) and the cluster view (`/cluster`): hand-written HTML, CSS and JavaScript
//! compiled into the binary, so a node serves its own page with nothing to install, no build
//! step and no CDN. The pages only call the JSON API and the event streams of [`super`].

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

const INDEX_HTML: &str = include_str!("assets/index.html");
const CLUSTER_HTML: &str = include_str!("assets/cluster.html");
const COMMON_JS: &str = include_str!("assets/common.js");
const CHAT_JS: &str = include_str!("assets/chat.js");
const CLUSTER_JS: &str = include_str!("assets/cluster.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

/// One embedded file with its content type. `no-cache`: a browser revalidates, so a node
/// upgraded in place serves its new page at once.
fn file(content_type: &'static str, body: &'static str) -> impl IntoResponse + Clone {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

/// The routes of the pages and their assets.
pub fn routes() -> Router {
    const HTML: &str = "text/html; charset=utf-8";
    const JS: &str = "text/javascript; charset=utf-8";
    let index = file(HTML, INDEX_HTML);
    let cluster = file(HTML, CLUSTER_HTML);
    let common = file(JS, COMMON_JS);
    let chat = file(JS, CHAT_JS);
    let cluster_js = file(JS, CLUSTER_JS);
    let css = file("text/css; charset=utf-8", STYLE_CSS);
    Router::new()
        .route("/", get(move || async move { index }))
        .route("/cluster", get(move || async move { cluster }))
        .route("/assets/common.js", get(move || async move { common }))
        .route("/assets/chat.js", get(move || async move { chat }))
        .route("/assets/cluster.js", get(move || async move { cluster_js }))
        .route("/assets/style.css", get(move || async move { css }))
}
