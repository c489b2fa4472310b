//! The DNS request handler: questions under the cluster domain are answered from the
//! agent's caches ([`super::records`]); the rest are forwarded to the resolvers of the
//! node's resolv.conf through hickory-resolver, whose cache keeps repeated names local.

use std::sync::Arc;

use hickory_proto::op::{Header, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{Record, RecordType};
use hickory_resolver::TokioResolver;
use hickory_server::authority::MessageResponseBuilder;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};

use super::records::{Answer, ClusterView, Zone};

/// Answers DNS questions for the cluster and forwards the others.
pub struct ClusterDns<V> {
    pub(super) zone: Zone,
    pub(super) view: Arc<V>,
    pub(super) upstream: TokioResolver,
}

/// The sections of a response and its code.
struct Reply {
    code: ResponseCode,
    authoritative: bool,
    answers: Vec<Record>,
    authority: Vec<Record>,
    additionals: Vec<Record>,
}

impl Reply {
    fn code(code: ResponseCode) -> Self {
        Self {
            code,
            authoritative: false,
            answers: Vec::new(),
            authority: Vec::new(),
            additionals: Vec::new(),
        }
    }
}

impl<V: ClusterView + Send + Sync + 'static> ClusterDns<V> {
    async fn reply(&self, name: &hickory_proto::rr::Name, rtype: RecordType) -> Reply {
        match self.zone.answer(self.view.as_ref(), name, rtype) {
            Answer::Records {
                mut answers,
                additionals,
            } => {
                // An ExternalName's CNAME leads outside: resolve its target too, as CoreDNS
                // does, since stub resolvers do not follow CNAMEs themselves.
                if rtype != RecordType::CNAME {
                    if let Some(target) = answers
                        .iter()
                        .find_map(|r| r.data().as_cname().map(|c| c.0.clone()))
                    {
                        if let Ok(lookup) = self.upstream.lookup(target, rtype).await {
                            answers.extend(lookup.records().iter().cloned());
                        }
                    }
                }
                Reply {
                    authoritative: true,
                    answers,
                    additionals,
                    ..Reply::code(ResponseCode::NoError)
                }
            }
            Answer::NoData => Reply {
                authoritative: true,
                authority: vec![self.zone.soa()],
                ..Reply::code(ResponseCode::NoError)
            },
            Answer::NxDomain => Reply {
                authoritative: true,
                authority: vec![self.zone.soa()],
                ..Reply::code(ResponseCode::NXDomain)
            },
            Answer::NotOurs => match self.upstream.lookup(name.clone(), rtype).await {
                Ok(lookup) => Reply {
                    answers: lookup.records().to_vec(),
                    ..Reply::code(ResponseCode::NoError)
                },
                Err(e) if e.is_nx_domain() => Reply::code(ResponseCode::NXDomain),
                Err(e) if e.is_no_records_found() => Reply::code(ResponseCode::NoError),
                Err(e) => {
                    tracing::debug!(%name, error = %e, "forwarding failed");
                    Reply::code(ResponseCode::ServFail)
                }
            },
        }
    }
}

#[async_trait::async_trait]
impl<V: ClusterView + Send + Sync + 'static> RequestHandler for ClusterDns<V> {
    async fn handle_request<R: ResponseHandler>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let builder = MessageResponseBuilder::from_message_request(request);
        let reply = match request.request_info() {
            Ok(info)
                if info.header.message_type() == MessageType::Query
                    && info.header.op_code() == OpCode::Query =>
            {
                let name = info.query.name().into();
                self.reply(&name, info.query.query_type()).await
            }
            Ok(_) => Reply::code(ResponseCode::NotImp),
            Err(_) => Reply::code(ResponseCode::FormErr),
        };
        let mut header = Header::response_from_request(request.header());
        header.set_response_code(reply.code);
        header.set_authoritative(reply.authoritative);
        header.set_recursion_available(true);
        let message = builder.build(
            header,
            reply.answers.iter(),
            reply.authority.iter(),
            std::iter::empty(),
            reply.additionals.iter(),
        );
        match response.send_response(message).await {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!(error = %e, "sending a DNS response");
                let mut failed = Header::response_from_request(request.header());
                failed.set_response_code(ResponseCode::ServFail);
                failed.into()
            }
        }
    }
}
