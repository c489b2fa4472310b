//! A DNS server standing for "the internet's" resolvers in tests: it answers every A question
//! under `example.test` with [`UpstreamDns::ADDRESS`] and NXDOMAIN otherwise, on port 53 of an
//! address of the root namespace, so that names the cluster DNS forwards never leave the
//! machine.

use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Header, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_server::authority::MessageResponseBuilder;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::ServerFuture;

/// The upstream server; stopped on drop.
pub struct UpstreamDns {
    task: tokio::task::JoinHandle<()>,
    /// Questions it was asked.
    pub asked: Arc<AtomicU64>,
}

struct Answers {
    zone: Name,
    asked: Arc<AtomicU64>,
}

#[async_trait::async_trait]
impl RequestHandler for Answers {
    async fn handle_request<R: ResponseHandler>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        self.asked.fetch_add(1, Ordering::Relaxed);
        let builder = MessageResponseBuilder::from_message_request(request);
        let mut header = Header::response_from_request(request.header());
        let mut answers = Vec::new();
        if let Ok(info) = request.request_info() {
            let name: Name = info.query.name().into();
            if self.zone.zone_of(&name) && info.query.query_type() == RecordType::A {
                answers.push(Record::from_rdata(
                    name,
                    60,
                    RData::A(A(UpstreamDns::ADDRESS)),
                ));
            } else if !self.zone.zone_of(&name) {
                header.set_response_code(ResponseCode::NXDomain);
            }
        }
        let message = builder.build(
            header,
            answers.iter(),
            std::iter::empty(),
            std::iter::empty(),
            std::iter::empty(),
        );
        response
            .send_response(message)
            .await
            .unwrap_or_else(|_| Header::response_from_request(request.header()).into())
    }
}

impl UpstreamDns {
    /// What every `example.test` name resolves to.
    pub const ADDRESS: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 77);

    /// Serve on `ip`:53 (UDP and TCP).
    pub async fn start(ip: &str) -> Self {
        let ip: IpAddr = ip.parse().expect("an address");
        let udp = tokio::net::UdpSocket::bind((ip, 53))
            .await
            .expect("bind udp 53");
        let tcp = tokio::net::TcpListener::bind((ip, 53))
            .await
            .expect("bind tcp 53");
        let asked = Arc::new(AtomicU64::new(0));
        let mut server = ServerFuture::new(Answers {
            zone: Name::from_str("example.test.").expect("name"),
            asked: asked.clone(),
        });
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5));
        let task = tokio::spawn(async move {
            let _ = server.block_until_done().await;
        });
        Self { task, asked }
    }
}

impl Drop for UpstreamDns {
    fn drop(&mut self) {
        self.task.abort();
    }
}
