//! `skiff-test-httpd PORT`: a tiny HTTP/1.1 server that keeps connections open, answering every
//! request with the host name. The proxy benchmark runs it in a pod: busybox httpd forks and
//! closes per request, so its figures measure fork and TIME_WAIT churn rather than forwarding.
//! On `Connection: close` it answers and then waits for the client to close.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};

fn serve(stream: TcpStream, body: &[u8]) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    let mut line = String::new();
    loop {
        // Read one request head; bodies are not expected (GET only).
        let mut close = false;
        let mut first = true;
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let l = line.trim_end();
            if l.is_empty() {
                if first {
                    continue;
                }
                break;
            }
            first = false;
            if l.to_ascii_lowercase().starts_with("connection:")
                && l.to_ascii_lowercase().contains("close")
            {
                close = true;
            }
        }
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{}\r\n",
            body.len(),
            if close { "Connection: close\r\n" } else { "" }
        );
        writer.write_all(head.as_bytes())?;
        writer.write_all(body)?;
        if close {
            // Let the client close first, so the TIME_WAIT state stays on its side: a server
            // holding thousands of them would refuse the client's reused ports (PAWS) and
            // measure that instead of forwarding.
            let mut rest = Vec::new();
            let _ = std::io::Read::read_to_end(&mut reader, &mut rest);
            return Ok(());
        }
    }
}

fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(8080);
    let name = std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let body: &'static [u8] = Box::leak(format!("{name}\n").into_bytes().into_boxed_slice());
    let listener = TcpListener::bind(("0.0.0.0", port))?;
    for stream in listener.incoming().flatten() {
        let _ = stream.set_nodelay(true);
        std::thread::spawn(move || serve(stream, body));
    }
    Ok(())
}
