//! The delay proxy: this machine's kernel has no netem, so latency between hosts comes from a
//! small TCP relay of the suite's own. It listens on the bridge address, one port per target
//! host; a host's connections to its peers are sent to it by nftables DNAT rules in the host's
//! namespace (see [`crate::net::TestNet::set_delay`]), and it relays them to the real peer,
//! holding every chunk for the delay set for that pair of hosts.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Delays by (source host address, target host number).
type Delays = Arc<Mutex<HashMap<(IpAddr, u8), Duration>>>;

/// The running relay.
pub struct DelayProxy {
    delays: Delays,
    /// Bumped to drop every relayed connection (their clients reconnect, directly once the
    /// DNAT rules are gone).
    generation: watch::Sender<u64>,
    /// Listening port for target host `i` is `base_port + i`.
    pub base_port: u16,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    relayed: Arc<AtomicU64>,
}

impl DelayProxy {
    /// Listen on `bridge_ip`, one port per target `(host number, its address)`.
    pub async fn start(
        bridge_ip: IpAddr,
        base_port: u16,
        targets: &[(u8, SocketAddr)],
    ) -> std::io::Result<Self> {
        let delays: Delays = Arc::default();
        let (generation, _) = watch::channel(0u64);
        let mut tasks = Vec::new();
        let relayed = Arc::new(AtomicU64::new(0));
        for (host, target) in targets {
            let listener = TcpListener::bind((bridge_ip, base_port + u16::from(*host))).await?;
            let (host, target, delays, gen, relayed) = (
                *host,
                *target,
                delays.clone(),
                generation.subscribe(),
                relayed.clone(),
            );
            tasks.push(tokio::spawn(async move {
                while let Ok((client, from)) = listener.accept().await {
                    relayed.fetch_add(1, Ordering::Relaxed);
                    let (delays, gen) = (delays.clone(), gen.clone());
                    tokio::spawn(async move {
                        let _ = relay(client, from.ip(), host, target, delays, gen).await;
                    });
                }
            }));
        }
        Ok(Self {
            delays,
            generation,
            base_port,
            tasks,
            relayed,
        })
    }

    /// Set the one-way delay for traffic between the host at `from` and host `to` (both ways
    /// of its connections).
    pub fn set(&self, from: IpAddr, to: u8, delay: Duration) {
        self.delays
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((from, to), delay);
    }

    /// Connections relayed so far (the report shows that traffic did pass the proxy).
    pub fn relayed(&self) -> u64 {
        self.relayed.load(Ordering::Relaxed)
    }

    /// Forget every delay and drop every relayed connection.
    pub fn reset(&self) {
        self.delays
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.generation.send_modify(|g| *g += 1);
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.reset();
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn relay(
    client: TcpStream,
    from: IpAddr,
    host: u8,
    target: SocketAddr,
    delays: Delays,
    mut gen: watch::Receiver<u64>,
) -> std::io::Result<()> {
    let server = TcpStream::connect(target).await?;
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let delay = move || {
        delays
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(from, host))
            .copied()
            .unwrap_or_default()
    };
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let up = pipe(cr, sw, delay.clone());
    let down = pipe(sr, cw, delay);
    gen.borrow_and_update();
    tokio::select! {
        _ = up => {}
        _ = down => {}
        _ = gen.changed() => {}
    }
    Ok(())
}

/// Copy `r` to `w`, each chunk held until its due time (read time + the delay then in force).
/// Due times never go backwards, so the byte stream keeps its order.
async fn pipe<R, W, F>(mut r: R, mut w: W, delay: F) -> std::io::Result<()>
where
    R: AsyncReadExt + Unpin + Send + 'static,
    W: AsyncWriteExt + Unpin + Send + 'static,
    F: Fn() -> Duration + Send + 'static,
{
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if w.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = w.shutdown().await;
    });
    let mut last_due = Instant::now();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        let due = (Instant::now() + delay()).max(last_due);
        last_due = due;
        if tx.send((due, buf[..n].to_vec())).is_err() {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
    Ok(())
}
