//! The smallest actix-web SSE server: every `GET /sub/{org}` gets a `retry:` frame and then an
//! open stream that never sends again. No hub, no actors: its memory per idle connection is the
//! framework's floor, to read the hub's `idle` figure against.
//!
//! ```text
//! cargo run --release --example actix_sse_floor -- 127.0.0.1:18099
//! dashclaw-realtime-load idle --url http://127.0.0.1:18099 --stream-path '/sub/{org}' \
//!     --ready-event '' -n 10000 -m 100 --server-pid PID
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;

use actix_web::{App, HttpResponse, HttpServer, web};
use bytes::Bytes;
use futures_util::stream::{self, StreamExt};

async fn subscribe(_org: web::Path<String>) -> HttpResponse {
    let first = stream::once(async { Ok::<_, Infallible>(Bytes::from_static(b"retry: 3000\n\n")) });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .streaming(first.chain(stream::pending()))
}

fn main() -> std::io::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18099".into())
        .parse()
        .map_err(std::io::Error::other)?;
    actix_web::rt::System::new().block_on(async move {
        HttpServer::new(|| App::new().route("/sub/{org}", web::get().to(subscribe)))
            .backlog(4096)
            .max_connections(25_000)
            .bind(addr)?
            .run()
            .await
    })
}
