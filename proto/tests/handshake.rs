//! A peer that takes the TCP connection but never answers the TLS handshake (a hung process,
//! a middlebox that lost the flow) must fail the call, not hold the channel in "connecting"
//! for good: the chaos suite's delay scenario once left a Raft follower unreachable that way.

use skiff_proto::pb::kv_client::KvClient;
use skiff_proto::pb::StatusRequest;
use skiff_proto::tls::authority::ClusterCa;
use skiff_proto::tls::holder::Holder;
use skiff_proto::tls::CONTROL_SERVER_NAME;
use skiff_proto::transport::{self, TLS_HANDSHAKE_TIMEOUT};

#[tokio::test]
async fn a_peer_silent_in_the_handshake_fails_the_call() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    // Accept and hold every connection without a byte in reply.
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let ca = ClusterCa::generate("handshake-test").unwrap();
    let admin = ca.issue(&Holder::User("admin".into()), &[]).unwrap();
    let tls = admin.client_tls(CONTROL_SERVER_NAME).unwrap();
    let channel = transport::channel(&addr, Some(&tls)).unwrap();

    let mut client = KvClient::new(channel);
    let call = client.status(StatusRequest::default());
    let outcome = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT * 4, call).await;
    silent.abort();
    let result = outcome.expect("the call hung on a peer that never answers the handshake");
    assert!(result.is_err(), "a silent peer answered: {result:?}");
}
