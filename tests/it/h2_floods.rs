//! HTTP/2 floods against the real binary (`authgate run`, h2c by prior knowledge on
//! 127.0.0.1:0), from a raw client that writes its own frames: a HEADERS frame without
//! END_HEADERS followed by endless CONTINUATION frames (with header bytes, or empty), and
//! PING or SETTINGS frames sent without ever reading the acknowledgements.
//!
//! Each flood ends with the connection closed (a GOAWAY, or the socket reset) after a bounded
//! number of bytes and within a bounded time, the gateway goes on serving other clients, and
//! the process's resident memory (`VmRSS` of the child) stays flat over rounds of floods on
//! several connections at once.
//!
//! What bounds them (`src/server/conn.rs` sets each limit explicitly): h2 counts the
//! CONTINUATION frames of one header block against `max_header_list_size` and
//! `max_frame_size` and answers too many with GOAWAY ENHANCE_YOUR_CALM; it acknowledges a
//! PING or SETTINGS before it reads the next frame, so a client that does not read stalls
//! its own flood, and the connection watchdog drops a connection whose writes are not taken
//! for `send_timeout` (here 1 s).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_authgate");
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Most bytes one flood may write before its connection is closed: what the gateway reads
/// before it refuses (a few frames) plus what the two sockets' kernel buffers hold on
/// loopback (a few MiB with autotuning).
const MAX_FLOOD_BYTES: u64 = 48 << 20;

/// How long a flood may go on: `send_timeout` (1 s) and a wide margin for a busy machine.
const MAX_FLOOD_TIME: Duration = Duration::from_secs(15);

const HEADERS: u8 = 0x1;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;

/// One frame: 24-bit length, type, flags, stream id.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("a small frame");
    let mut f = Vec::with_capacity(9 + payload.len());
    f.extend_from_slice(&len.to_be_bytes()[1..]);
    f.push(kind);
    f.push(flags);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// HPACK for `GET http://gw.test/public/x`, from the static table plus literals.
fn request_block() -> Vec<u8> {
    let mut b = vec![0x82, 0x86]; // :method GET, :scheme http
    b.extend_from_slice(&[0x44, 9]); // :path, literal, indexed name
    b.extend_from_slice(b"/public/x");
    b.extend_from_slice(&[0x41, 7]); // :authority
    b.extend_from_slice(b"gw.test");
    b
}

/// The gateway binary on a config of its own, killed on drop (its log lines then go through
/// the suite's leak check).
struct Process {
    child: Child,
    addr: SocketAddr,
    reader: Option<std::thread::JoinHandle<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let lines = self.reader.take().and_then(|r| r.join().ok());
        if let Some(lines) = lines.filter(|_| !std::thread::panicking()) {
            crate::support::logs::check_lines(&lines);
        }
    }
}

impl Process {
    fn start(upstream: SocketAddr) -> Self {
        let text = Conf::new()
            .server("send_timeout = \"1s\"\nidle_timeout = \"10s\"")
            .render(upstream);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, text).expect("write the config");
        let mut child = Command::new(BIN)
            .args(["run", "-c"])
            .arg(&path)
            .env("T_SECRET", SECRET)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn authgate");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        // Drains stderr to the end, so the process never blocks on a full pipe.
        let reader = std::thread::spawn(move || {
            let mut all = Vec::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                all.push(line.clone());
                let _ = tx.send(line);
            }
            all
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).expect("a `listening` line");
            if line.contains("listening") {
                let json: serde_json::Value = serde_json::from_str(&line).expect("JSON");
                break json["addr"]
                    .as_str()
                    .expect("addr")
                    .parse()
                    .expect("an address");
            }
        };
        Self {
            child,
            addr,
            reader: Some(reader),
            _dir: dir,
        }
    }

    /// The process's resident memory, in KiB.
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the child's /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("a VmRSS line")
    }
}

/// How a flood ended.
#[derive(Debug)]
struct Ended {
    /// Bytes written before the connection was closed.
    written: u64,
    /// The GOAWAY's error code, if one was read.
    goaway: Option<u32>,
}

/// Opens an h2c connection and writes `first`, then `next()` until the connection is closed
/// (a GOAWAY read, EOF, or a write refused). With `read`, a reader takes the gateway's frames
/// and looks for a GOAWAY; without, nothing is ever read.
async fn flood(addr: SocketAddr, first: Vec<u8>, next: Vec<u8>, read: bool) -> Ended {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut rd, mut wr) = stream.into_split();
    let (goaway_tx, mut goaway_rx) = tokio::sync::watch::channel(None::<Option<u32>>);
    // Without a reader the read half is kept (unread) until the flood ends: the socket's
    // receive buffer fills with the gateway's answers.
    let _unread = if read {
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 16384];
            loop {
                match rd.read(&mut chunk).await {
                    Ok(0) | Err(_) => {
                        let _ = goaway_tx.send(Some(None));
                        return;
                    }
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
                // Whole frames: look for a GOAWAY (its error code after the last stream id).
                while buf.len() >= 9 {
                    let len = (usize::from(buf[0]) << 16)
                        | (usize::from(buf[1]) << 8)
                        | usize::from(buf[2]);
                    if buf.len() < 9 + len {
                        break;
                    }
                    if buf[3] == GOAWAY && len >= 8 {
                        let code = u32::from_be_bytes(buf[13..17].try_into().unwrap());
                        let _ = goaway_tx.send(Some(Some(code)));
                        return;
                    }
                    buf.drain(..9 + len);
                }
            }
        });
        None
    } else {
        Some(rd)
    };
    let mut written = 0u64;
    let started = Instant::now();
    let mut piece = first;
    let mut at = 0;
    loop {
        if let Some(end) = *goaway_rx.borrow_and_update() {
            return Ended {
                written,
                goaway: end,
            };
        }
        assert!(
            written < MAX_FLOOD_BYTES,
            "{written} bytes written and the connection is still open"
        );
        assert!(
            started.elapsed() < MAX_FLOOD_TIME,
            "the flood went on for {:?} ({written} bytes)",
            started.elapsed()
        );
        // A write that blocks is waited for only a while, then the state looked at again
        // (what it had not written yet is written next time: the frames stay whole).
        match tokio::time::timeout(Duration::from_millis(200), wr.write(&piece[at..])).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                // Closed: take what the reader may still have seen.
                if read {
                    let _ = tokio::time::timeout(Duration::from_secs(2), goaway_rx.changed()).await;
                }
                let seen = *goaway_rx.borrow();
                return Ended {
                    written,
                    goaway: seen.flatten(),
                };
            }
            Ok(Ok(n)) => {
                written += n as u64;
                at += n;
                if at == piece.len() {
                    piece.clone_from(&next);
                    at = 0;
                }
            }
            // Blocked: without a reader, the gateway must give up on this connection at its
            // send timeout; with one, it is told by a GOAWAY or the end of the stream.
            Err(_) if !read => {}
            Err(_) => {
                let _ = tokio::time::timeout(MAX_FLOOD_TIME, goaway_rx.changed()).await;
            }
        }
    }
}

/// HEADERS without END_HEADERS holding the start of a 1 MiB header value, then CONTINUATION
/// frames of 16 KiB of it (or empty ones), never END_HEADERS.
async fn continuation_flood(addr: SocketAddr, empty: bool) -> Ended {
    let mut block = request_block();
    // A literal header `x` whose value claims 1 MiB: 0x7f then the rest as an HPACK integer.
    block.extend_from_slice(&[0x00, 0x01, b'x', 0x7f]);
    let mut rest = (1u32 << 20) - 127;
    while rest >= 128 {
        block.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    block.push(rest as u8);
    let mut first = PREFACE.to_vec();
    first.extend(frame(SETTINGS, 0, 0, &[]));
    first.extend(frame(HEADERS, END_STREAM, 1, &block));
    let payload = if empty { Vec::new() } else { vec![b'a'; 16384] };
    flood(addr, first, frame(CONTINUATION, 0, 1, &payload), true).await
}

/// PINGs, never reading the acknowledgements.
async fn ping_flood(addr: SocketAddr) -> Ended {
    let mut first = PREFACE.to_vec();
    first.extend(frame(SETTINGS, 0, 0, &[]));
    let pings: Vec<u8> = (0..64).flat_map(|_| frame(PING, 0, 0, &[7; 8])).collect();
    flood(addr, first, pings, false).await
}

/// SETTINGS frames (an INITIAL_WINDOW_SIZE each), never reading the acknowledgements.
async fn settings_flood(addr: SocketAddr) -> Ended {
    let mut first = PREFACE.to_vec();
    first.extend(frame(SETTINGS, 0, 0, &[]));
    let setting = [0x00, 0x04, 0x00, 0x01, 0x00, 0x00];
    let frames: Vec<u8> = (0..64)
        .flat_map(|_| frame(SETTINGS, 0, 0, &setting))
        .collect();
    flood(addr, first, frames, false).await
}

/// An ordinary h2c request, answered.
async fn still_serves(addr: SocketAddr) {
    let client = h2c_client();
    let req = http::Request::get(format!("http://{addr}/public/after"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let resp = within("an h2c answer after the flood", client.request(req))
        .await
        .expect("the gateway answers");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_2);
}

#[tokio::test]
async fn continuation_flood_gets_goaway_after_a_few_frames() {
    let upstream = Upstream::echo().await;
    let gw = Process::start(upstream.addr);
    for empty in [false, true] {
        let ended = continuation_flood(gw.addr, empty).await;
        // ENHANCE_YOUR_CALM (too many CONTINUATION frames) or COMPRESSION_ERROR (the block
        // over the header list limit): either way the connection is refused as a whole.
        assert!(
            matches!(ended.goaway, Some(0xb | 0x9)),
            "empty frames {empty}: {ended:?}"
        );
        eprintln!(
            "CONTINUATION flood (empty frames {empty}): GOAWAY {:?} after {} bytes written",
            ended.goaway, ended.written
        );
        still_serves(gw.addr).await;
    }
    assert_eq!(
        upstream.hits(),
        1 + 1,
        "the flooded requests never reached the upstream"
    );
}

#[tokio::test]
async fn ping_and_settings_floods_that_never_read_are_cut_at_send_timeout() {
    let upstream = Upstream::echo().await;
    let gw = Process::start(upstream.addr);
    let started = Instant::now();
    let pinged = ping_flood(gw.addr).await;
    let ping_time = started.elapsed();
    assert!(
        ping_time >= Duration::from_millis(900),
        "closed before send_timeout: {ping_time:?}"
    );
    still_serves(gw.addr).await;
    let started = Instant::now();
    let settled = settings_flood(gw.addr).await;
    let settings_time = started.elapsed();
    assert!(
        settings_time >= Duration::from_millis(900),
        "{settings_time:?}"
    );
    still_serves(gw.addr).await;
    eprintln!(
        "PING flood: {pinged:?} in {ping_time:?}; SETTINGS flood: {settled:?} in {settings_time:?}"
    );
}

#[tokio::test]
async fn rounds_of_floods_on_many_connections_leave_memory_flat() {
    let upstream = Upstream::echo().await;
    let gw = Process::start(upstream.addr);
    let round = || async {
        let mut tasks = Vec::new();
        for i in 0..8 {
            let addr = gw.addr;
            tasks.push(tokio::spawn(async move {
                match i % 3 {
                    0 => continuation_flood(addr, false).await,
                    1 => ping_flood(addr).await,
                    _ => settings_flood(addr).await,
                }
            }));
        }
        for t in tasks {
            t.await.expect("a flood task");
        }
        still_serves(gw.addr).await;
    };
    // Warm-up: the allocator's arenas and the runtime's threads reach their working size.
    round().await;
    round().await;
    let warm = gw.rss_kib();
    let mut samples = Vec::new();
    for _ in 0..6 {
        round().await;
        samples.push(gw.rss_kib());
    }
    let peak = *samples.iter().max().unwrap();
    eprintln!("VmRSS after warm-up {warm} KiB, then {samples:?} KiB");
    // Flat: within 10% of the warm process plus 8 MiB of slack (an arena more or less).
    assert!(
        peak <= warm + warm / 10 + 8192,
        "memory grew over the floods: {warm} KiB after warm-up, then {samples:?} KiB"
    );
}
