#![allow(dead_code)]
//! A process's memory, read from `/proc`, and sockets that never read.

use std::net::SocketAddr;
use std::time::Duration;

fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim_start_matches(':').split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{field} missing in /proc/{pid}/status"))
}

/// Resident memory of `pid` now, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS")
}

/// The highest resident memory `pid` ever had, in KiB (`VmHWM`): a peak no sampling misses.
pub fn peak_rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM")
}

/// Opens `GET path` with `headers` on a socket with a tiny receive buffer and a small MSS,
/// and never reads it: the kernel absorbs little, so what the peer queues is its own memory.
pub async fn non_reading_stream(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> std::net::TcpStream {
    let mut request =
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    tokio::task::spawn_blocking(move || {
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        sock.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        sock.set_tcp_mss(536).expect("TCP_MAXSEG");
        sock.connect_timeout(&addr.into(), Duration::from_secs(20))
            .expect("connect");
        let mut stream: std::net::TcpStream = sock.into();
        std::io::Write::write_all(&mut stream, request.as_bytes()).expect("write request");
        stream
    })
    .await
    .expect("connect task")
}
