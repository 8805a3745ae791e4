//! One SSE client: a raw TCP connection, a hand-written HTTP/1.1 GET, the response head, a
//! chunked (or length / close delimited) body fed to the incremental SSE parser, and the
//! sequence accounting. One tokio task per client; reads go through a per-thread scratch buffer,
//! so an idle client holds no read buffer at all.

use std::cell::RefCell;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use dashclaw_realtime_load::chunked::ChunkedDecoder;
use dashclaw_realtime_load::http::{BodyFraming, parse_response_head};
use dashclaw_realtime_load::seq::{Seen, SeqCounts, SeqTracker};
use dashclaw_realtime_load::sse::{Item, SseParser};
use dashclaw_realtime_load::template::extract_load_fields;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::time::{Instant, sleep, sleep_until, timeout_at};

use crate::shard::{Ctx, FailKind, Mode, Phase};

thread_local! {
    /// Shared read buffer of this worker thread (no await while it is borrowed).
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; 64 * 1024]);
}

/// Attempts per phase before a client gives up until the next phase.
const ATTEMPTS: u32 = 3;

/// Microseconds since the Unix epoch (the publishers' clock).
pub fn wall_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// What a client reports at the end.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientResult {
    pub joined: bool,
    pub counts: SeqCounts,
}

/// How a connection ended.
enum End {
    /// The phase changed (drop, reconnect or stop): not an error.
    PhaseChanged,
    /// The attempt failed before the stream was subscribed.
    Failed(FailKind),
    /// An established stream ended or broke.
    Lost,
}

enum Framing {
    Chunked(ChunkedDecoder),
    Length(u64),
    Close,
}

pub struct Client {
    index: usize,
    org: usize,
    target: usize,
    src: Option<IpAddr>,
    parser: SseParser,
    tracker: SeqTracker,
    joined: bool,
    caught: bool,
    /// When the last established stream ended (for the reconnect time).
    lost_at: Option<Instant>,
    /// `Retry-After` of the last refused attempt.
    retry_after: Option<u64>,
}

/// Per-connection state while the stream is read.
struct ConnState {
    head: Vec<u8>,
    framing: Option<Framing>,
    ready: bool,
    started: Instant,
    /// `X-Realtime-Instance` of the response.
    instance: Option<String>,
}

/// Receives the parsed items of one client.
struct Sink<'a> {
    ctx: &'a Ctx,
    org: usize,
    tracker: &'a mut SeqTracker,
    ready: &'a mut bool,
    became_ready: &'a mut bool,
    caught: &'a mut bool,
    now_us: u64,
}

impl Sink<'_> {
    fn item(&mut self, item: Item<'_>) {
        let Item::Event(e) = item else { return };
        let ctx = self.ctx;
        if !*self.ready
            && !ctx.cfg.ready_event.is_empty()
            && e.event == ctx.cfg.ready_event.as_bytes()
        {
            *self.ready = true;
            *self.became_ready = true;
            return;
        }
        if e.event == b"realtime.resync" {
            ctx.resyncs.fetch_add(1, Relaxed);
            return;
        }
        let (seq, sent) = extract_load_fields(e.data);
        let Some(seq) = seq else {
            ctx.other_events.fetch_add(1, Relaxed);
            return;
        };
        ctx.delivered.fetch_add(1, Relaxed);
        if self.tracker.record(seq) == Seen::Duplicate {
            return;
        }
        ctx.unique.fetch_add(1, Relaxed);
        // Events before the ready event are replay: their age is not a delivery latency,
        // unless the run follows clients across restarts.
        if (*self.ready || ctx.cfg.latency_includes_replay)
            && let Some(sent) = sent
        {
            ctx.latency_now().record(self.now_us.saturating_sub(sent));
        }
        let expected = ctx.expected[self.org].load(Relaxed);
        if expected > 0 && !*self.caught && self.tracker.unique_in(1, expected) >= expected {
            *self.caught = true;
            ctx.caught_up.fetch_add(1, Relaxed);
            if ctx.in_catchup_phase() {
                ctx.catchup.record(ctx.since_phase_start_us());
            }
        }
    }
}

impl Client {
    pub fn new(index: usize, ctx: &Ctx) -> Client {
        let cfg = &ctx.cfg;
        let target = index % cfg.targets.len();
        let src = if cfg.source_addrs > 1 {
            crate::cli::source_addr(
                (index % cfg.source_addrs as usize) as u8,
                &cfg.targets[target].addr,
            )
        } else {
            None
        };
        Client {
            index,
            org: index % cfg.orgs.len(),
            target,
            src,
            parser: SseParser::new(),
            tracker: SeqTracker::new(),
            joined: false,
            caught: false,
            lost_at: None,
            retry_after: None,
        }
    }

    /// How long to wait before the next attempt after `end`.
    fn backoff(&self, ctx: &Ctx, end: &End) -> Duration {
        let cfg = &ctx.cfg;
        match end {
            End::PhaseChanged => Duration::ZERO,
            // As EventSource: the stream's last `retry:` hint, else the configured delay.
            End::Lost if cfg.honor_retry => {
                Duration::from_millis(self.parser.reconnection_time().unwrap_or(cfg.reconnect_ms))
            }
            End::Lost => Duration::from_millis(100),
            End::Failed(_) if cfg.persistent => self
                .retry_after
                .map_or(Duration::from_millis(500), Duration::from_secs),
            End::Failed(_) => Duration::from_millis(500),
        }
    }

    /// The client's whole life: connect, read, reconnect on loss, follow the phases.
    pub async fn run(
        mut self,
        ctx: Arc<Ctx>,
        mut phase_rx: watch::Receiver<Phase>,
    ) -> ClientResult {
        let mut generation = phase_rx.borrow().generation;
        let mut attempts_left = ATTEMPTS;
        loop {
            let phase = *phase_rx.borrow_and_update();
            match phase.mode {
                Mode::Stop => break,
                Mode::Closed => {
                    if phase_rx.changed().await.is_err() {
                        break;
                    }
                    continue;
                }
                Mode::Open => {}
            }
            if phase.generation != generation {
                generation = phase.generation;
                self.caught = false;
                attempts_left = ATTEMPTS;
            }
            if attempts_left == 0 {
                if phase_rx.changed().await.is_err() {
                    break;
                }
                continue;
            }
            let mut was_ready = false;
            self.retry_after = None;
            let end = self.connection(&ctx, &mut phase_rx, &mut was_ready).await;
            if was_ready {
                ctx.open.fetch_sub(1, Relaxed);
                attempts_left = ATTEMPTS;
            }
            let backoff = self.backoff(&ctx, &end);
            match end {
                End::PhaseChanged => continue,
                End::Failed(kind) => {
                    ctx.fail(kind);
                    // A persistent client (rolling restarts) keeps trying until the phase ends.
                    if !ctx.cfg.persistent {
                        attempts_left -= 1;
                    }
                    if attempts_left == 0 && !self.joined {
                        ctx.failed_clients.fetch_add(1, Relaxed);
                    }
                }
                End::Lost => {
                    ctx.disconnects.fetch_add(1, Relaxed);
                    self.lost_at = Some(Instant::now());
                }
            }
            tokio::select! {
                _ = sleep(backoff) => {}
                r = phase_rx.changed() => if r.is_err() { break },
            }
        }
        let expected = if self.joined {
            ctx.expected[self.org].load(Relaxed)
        } else {
            0
        };
        let _ = self.index;
        ClientResult {
            joined: self.joined,
            counts: self.tracker.counts(expected),
        }
    }

    async fn connection(
        &mut self,
        ctx: &Ctx,
        phase_rx: &mut watch::Receiver<Phase>,
        was_ready: &mut bool,
    ) -> End {
        let cfg = &ctx.cfg;
        let started = Instant::now();
        let deadline = started + Duration::from_millis(cfg.connect_timeout_ms);
        ctx.attempts.fetch_add(1, Relaxed);
        let target = &cfg.targets[self.target];
        let mut stream = tokio::select! {
            r = timeout_at(deadline, open_socket(target.addr, self.src)) => match r {
                Ok(Ok(s)) => s,
                Ok(Err(_)) => return End::Failed(FailKind::Connect),
                Err(_) => return End::Failed(FailKind::Timeout),
            },
            _ = phase_rx.changed() => return End::PhaseChanged,
        };
        let request = self.request(ctx);
        match timeout_at(deadline, stream.write_all(&request)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return End::Failed(FailKind::Connect),
            Err(_) => return End::Failed(FailKind::Timeout),
        }
        drop(request);
        self.parser.reset_stream();
        let mut st = ConnState {
            head: Vec::new(),
            framing: None,
            ready: false,
            started,
            instance: None,
        };
        loop {
            tokio::select! {
                biased;
                _ = phase_rx.changed() => return End::PhaseChanged,
                _ = sleep_until(deadline), if !st.ready => {
                    return End::Failed(FailKind::Timeout);
                }
                r = stream.readable() => {
                    if r.is_err() {
                        return if st.ready { End::Lost } else { End::Failed(FailKind::Closed) };
                    }
                }
            }
            let step = SCRATCH.with(|buf| {
                let mut buf = buf.borrow_mut();
                match stream.try_read(&mut buf[..]) {
                    Ok(0) => Some(Err(None)),
                    Ok(n) => self.on_bytes(&buf[..n], ctx, &mut st, was_ready),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
                    Err(_) => Some(Err(None)),
                }
            });
            match step {
                None => {}
                Some(Ok(())) => {
                    // The body ended cleanly.
                    return if st.ready {
                        End::Lost
                    } else {
                        End::Failed(FailKind::Closed)
                    };
                }
                Some(Err(Some(kind))) => return End::Failed(kind),
                Some(Err(None)) => {
                    return if st.ready {
                        End::Lost
                    } else {
                        End::Failed(FailKind::Closed)
                    };
                }
            }
        }
    }

    fn request(&self, ctx: &Ctx) -> Vec<u8> {
        let cfg = &ctx.cfg;
        let target = &cfg.targets[self.target];
        let mut r = Vec::with_capacity(256);
        r.extend_from_slice(b"GET ");
        r.extend_from_slice(target.prefix.as_bytes());
        r.extend_from_slice(ctx.stream_paths[self.org].as_bytes());
        r.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        r.extend_from_slice(target.host.as_bytes());
        r.extend_from_slice(
            b"\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\nUser-Agent: dashclaw-realtime-load\r\n",
        );
        let id = self.parser.last_event_id();
        if !id.is_empty() {
            r.extend_from_slice(b"Last-Event-ID: ");
            r.extend_from_slice(id);
            r.extend_from_slice(b"\r\n");
        }
        for (n, v) in &cfg.headers {
            r.extend_from_slice(n.as_bytes());
            r.extend_from_slice(b": ");
            r.extend_from_slice(v.as_bytes());
            r.extend_from_slice(b"\r\n");
        }
        r.extend_from_slice(b"\r\n");
        r
    }

    /// Handle received bytes. `None`: keep reading; `Some(Ok(()))`: the body ended;
    /// `Some(Err(Some(kind)))`: failed attempt; `Some(Err(None))`: stream broken.
    fn on_bytes(
        &mut self,
        bytes: &[u8],
        ctx: &Ctx,
        st: &mut ConnState,
        was_ready: &mut bool,
    ) -> Option<Result<(), Option<FailKind>>> {
        let head_buf;
        let mut body = bytes;
        if st.framing.is_none() {
            st.head.extend_from_slice(bytes);
            match parse_response_head(&st.head) {
                Ok(None) => return None,
                Err(_) => return Some(Err(Some(FailKind::Protocol))),
                Ok(Some((head, n))) => {
                    if head.status != 200 {
                        self.retry_after = head.retry_after;
                        return Some(Err(Some(FailKind::Status(head.status))));
                    }
                    st.instance = head.instance;
                    st.framing = Some(match head.framing {
                        BodyFraming::Chunked => Framing::Chunked(ChunkedDecoder::new()),
                        BodyFraming::Length(n) => Framing::Length(n),
                        BodyFraming::Close => Framing::Close,
                    });
                    head_buf = std::mem::take(&mut st.head);
                    body = &head_buf[n..];
                    if ctx.cfg.ready_event.is_empty() {
                        st.ready = true;
                        self.mark_ready(ctx, st, was_ready);
                    }
                }
            }
        }
        let mut became_ready = false;
        let Client {
            parser,
            tracker,
            caught,
            org,
            ..
        } = self;
        let mut sink = Sink {
            ctx,
            org: *org,
            tracker,
            ready: &mut st.ready,
            became_ready: &mut became_ready,
            caught,
            now_us: wall_us(),
        };
        let mut f = |item: Item<'_>| sink.item(item);
        let ended = match st.framing.as_mut() {
            Some(Framing::Chunked(dec)) => {
                if dec.feed(body, &mut |d| parser.feed(d, &mut f)).is_err() {
                    return Some(Err(None));
                }
                dec.is_done()
            }
            Some(Framing::Length(left)) => {
                let n = (*left).min(body.len() as u64) as usize;
                parser.feed(&body[..n], &mut f);
                *left -= n as u64;
                *left == 0
            }
            Some(Framing::Close) | None => {
                parser.feed(body, &mut f);
                false
            }
        };
        if became_ready {
            self.mark_ready(ctx, st, was_ready);
        }
        ended.then_some(Ok(()))
    }

    fn mark_ready(&mut self, ctx: &Ctx, st: &ConnState, was_ready: &mut bool) {
        *was_ready = true;
        ctx.open.fetch_add(1, Relaxed);
        ctx.connect_time
            .record(st.started.elapsed().as_micros() as u64);
        ctx.opened(st.instance.as_deref());
        if let Some(lost) = self.lost_at.take() {
            ctx.reconnect.record(lost.elapsed().as_micros() as u64);
        }
        if !self.joined {
            self.joined = true;
            ctx.joined.fetch_add(1, Relaxed);
            ctx.joined_per_org[self.org].fetch_add(1, Relaxed);
        }
        // Nothing expected yet, or everything already here (e.g. an empty replay).
        let expected = ctx.expected[self.org].load(Relaxed);
        if expected > 0 && !self.caught && self.tracker.unique_in(1, expected) >= expected {
            self.caught = true;
            ctx.caught_up.fetch_add(1, Relaxed);
            if ctx.in_catchup_phase() {
                ctx.catchup.record(ctx.since_phase_start_us());
            }
        }
    }
}

/// A non-blocking TCP connection to `target`, bound to `src` (port chosen at connect time with
/// `IP_BIND_ADDRESS_NO_PORT`, so each source address has its own ephemeral port range).
async fn open_socket(target: SocketAddr, src: Option<IpAddr>) -> io::Result<TcpStream> {
    let sock = if target.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = src {
        set_bind_address_no_port(&sock);
        sock.bind(SocketAddr::new(ip, 0))?;
    }
    sock.set_nodelay(true)?;
    sock.connect(target).await
}

fn set_bind_address_no_port(sock: &TcpSocket) {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: a valid socket fd owned by `sock`, and a pointer to a live c_int of the given size.
    // A failure only means ports are chosen at bind time, which still works.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}
