//! Self-test of the shared harness (tests/common). Needs no running server:
//! the parser, metric-parser and org-id unit tests in `common` run here
//! (as `common::sse::tests::*`, ...), plus the tests below.

mod common;

use common::{SseItem, SseParser};

#[test]
fn parser_reexport_works() {
    let items = SseParser::parse_all(b"retry: 5\n\nid: 1\nevent: e\ndata: {}\n\n");
    assert_eq!(items.len(), 2, "{items:?}");
    assert_eq!(items[0], SseItem::Retry(5));
    match &items[1] {
        SseItem::Event(e) => {
            assert_eq!(e.event, "e");
            assert_eq!(e.last_event_id, "1");
            assert!(e.had_id_field);
            assert_eq!(e.json(), serde_json::json!({}));
        }
        other => panic!("expected an event, got {other:?}"),
    }
}

#[test]
fn binary_path_is_known() {
    // Only the path is checked: the server may not be runnable here.
    assert!(common::bin_path().ends_with("dashclaw-realtime"));
}

#[tokio::test]
async fn sse_client_against_a_local_fake_server() {
    // A minimal HTTP/1.1 server writing a chunked SSE body, to exercise the
    // client (headers, raw bytes, chunking across a CRLF, clean end).
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind fake server");
    let addr = listener.local_addr().expect("local_addr");
    let server = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.expect("accept");
        let mut buf = vec![0u8; 4096];
        let mut req = Vec::new();
        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = sock.read(&mut buf).await.expect("read request");
            assert!(n > 0, "client closed early");
            req.extend_from_slice(&buf[..n]);
        }
        let req = String::from_utf8_lossy(&req).to_ascii_lowercase();
        assert!(req.contains("accept: text/event-stream"), "{req}");
        assert!(req.contains("last-event-id: 41"), "{req}");
        sock.write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
              cache-control: no-cache, no-transform\r\ntransfer-encoding: chunked\r\n\r\n",
        )
        .await
        .expect("write head");
        for part in [
            &b"retry: 3000\r"[..],
            b"\n\r\nid: 42\nevent: a.b\ndata: {\"x\":1}\n\n: heartbeat\n\n",
            b"event: realtime.connected\ndata: {}\n\n",
        ] {
            let chunk = [format!("{:x}\r\n", part.len()).as_bytes(), part, b"\r\n"].concat();
            sock.write_all(&chunk).await.expect("write chunk");
            sock.flush().await.expect("flush");
            tokio::time::sleep(common::ms(20)).await;
        }
        sock.write_all(b"0\r\n\r\n").await.expect("write end");
        sock.shutdown().await.ok();
    });

    let url = format!("http://{addr}/v1/orgs/o/stream");
    let mut c = common::SseClient::connect(&url, &[("Last-Event-ID", "41")])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.status(), 200);
    assert_eq!(
        c.header("cache-control").as_deref(),
        Some("no-cache, no-transform")
    );
    match c.next_item(common::secs(5)).await {
        Some(common::Received::Item(SseItem::Retry(3000))) => {}
        other => panic!("expected retry, got {other:?}"),
    }
    let e = c.expect_event(common::secs(5)).await;
    assert_eq!((e.event.as_str(), e.last_event_id.as_str()), ("a.b", "42"));
    let connected = c
        .expect_event_named("realtime.connected", common::secs(5))
        .await;
    assert!(!connected.had_id_field);
    assert_eq!(connected.last_event_id, "42");
    assert_eq!(c.wait_end(common::secs(5)).await, Some(common::End::Clean));
    assert!(c.next_event(common::ms(10)).await.is_none());
    assert!(c.raw_text().contains(": heartbeat\n"));
    server.await.expect("fake server task");
}

#[tokio::test]
async fn sse_client_reports_error_end_on_truncated_body() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind fake server");
    let addr = listener.local_addr().expect("local_addr");
    let server = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.expect("accept");
        let mut buf = vec![0u8; 4096];
        let _ = sock.read(&mut buf).await;
        sock.write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
              transfer-encoding: chunked\r\n\r\n8\r\ndata: x\n",
        )
        .await
        .expect("write");
        // Drop the socket mid-chunk.
    });
    let url = format!("http://{addr}/s");
    let mut c = common::SseClient::connect(&url, &[])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    match c.wait_end(common::secs(5)).await {
        Some(common::End::Error(_)) => {}
        other => panic!("expected End::Error, got {other:?}"),
    }
    server.await.expect("fake server task");
}

#[tokio::test]
async fn connect_reports_non_200() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind fake server");
    let addr = listener.local_addr().expect("local_addr");
    let server = tokio::spawn(async move {
        for _ in 0..2 {
            let (mut sock, _) = listener.accept().await.expect("accept");
            let mut buf = vec![0u8; 4096];
            let _ = sock.read(&mut buf).await;
            let body = br#"{"error":{"code":"unauthorized","message":"No credential."}}"#;
            let head = format!(
                "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            sock.write_all(head.as_bytes()).await.expect("write");
            sock.write_all(body).await.expect("write");
        }
    });
    let url = format!("http://{addr}/s");
    let err = common::SseClient::connect(&url, &[])
        .await
        .expect_err("401 must be an error");
    assert!(err.contains("401") && err.contains("unauthorized"), "{err}");
    let (status, body) = common::SseClient::connect_expect_status(&url, &[]).await;
    assert_eq!(status, 401);
    assert_eq!(common::error_code(&body), "unauthorized");
    server.await.expect("fake server task");
}

#[test]
fn credentials_helpers() {
    assert_eq!(
        common::sha256_hex("abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let t = common::jwt_for("s3cret", "org_a", "subscribe", 60);
    assert_eq!(t.split('.').count(), 3, "{t}");
}
