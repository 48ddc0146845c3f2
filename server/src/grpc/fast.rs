//! The hot reads answered with [`super::wire`]'s mirror messages: the same bytes the generated
//! handlers would send, written from the records without building `prost_types::Struct` trees.
//!
//! [`FastQueries`] and [`FastInstances`] ([`Fast`]) stand in the router for the generated
//! `QueryServiceServer` and `InstanceServiceServer`: the methods listed here are decoded and
//! answered by tonic's own unary machinery with a codec whose encoder takes the mirror message,
//! every other method goes to the generated server. Both share one `Arc` of the API, and the
//! records come from the same functions the generated handlers call, so authorization, errors
//! and limits are the same whichever path answers.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use temporal_state_proto::v1 as pb;
use temporal_state_proto::v1::instance_service_server::InstanceServiceServer;
use temporal_state_proto::v1::query_service_server::QueryServiceServer;
use tonic::body::Body;
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;
use tower::Service;

use super::convert::timestamp_from_time;
use super::instances::InstanceApi;
use super::queries::QueryApi;
use super::wire::{
    EventWire, GetHistoryResponseWire, GetStateAtVersionResponseWire, InstanceResponseWire,
    JsonStruct, ReadEventsResponseWire,
};

type Call = http::Request<Body>;
type Answer = http::Response<Body>;

/// Message size limits, as the generated servers are configured.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    pub max_decoding: usize,
    pub max_encoding: usize,
}

type Answered<Resp> = BoxFuture<'static, Result<Response<Resp>, Status>>;

/// A unary method: its handler over the API.
struct Unary<A, Req, Resp> {
    api: Arc<A>,
    handle: fn(Arc<A>, Request<Req>) -> Answered<Resp>,
}

impl<A, Req, Resp> UnaryService<Req> for Unary<A, Req, Resp> {
    type Response = Resp;
    type Future = Answered<Resp>;

    fn call(&mut self, request: Request<Req>) -> Self::Future {
        (self.handle)(self.api.clone(), request)
    }
}

/// Answers `call` with `handle` through tonic's unary path: the request decoded as `Req`, the
/// answer encoded from `Resp`, within `sizes`.
fn unary<A, Req, Resp>(
    api: Arc<A>,
    sizes: Sizes,
    call: Call,
    handle: fn(Arc<A>, Request<Req>) -> Answered<Resp>,
) -> BoxFuture<'static, Result<Answer, Infallible>>
where
    A: Send + Sync + 'static,
    Req: prost::Message + Default + Send + 'static,
    Resp: prost::Message + Send + 'static,
{
    Box::pin(async move {
        let mut grpc = Grpc::new(ProstCodec::<Resp, Req>::default())
            .apply_max_message_size_config(Some(sizes.max_decoding), Some(sizes.max_encoding));
        Ok(grpc.unary(Unary { api, handle }, call).await)
    })
}

fn read_events(
    api: Arc<QueryApi>,
    r: Request<pb::ReadEventsRequest>,
) -> Answered<ReadEventsResponseWire> {
    Box::pin(async move {
        let read = api.read_events_records(r).await?;
        Ok(Response::new(ReadEventsResponseWire {
            events: read.events.into_iter().map(EventWire::from).collect(),
            next_position: read.next_position,
            head_position: read.head_position,
        }))
    })
}

fn get_history(
    api: Arc<QueryApi>,
    r: Request<pb::GetHistoryRequest>,
) -> Answered<GetHistoryResponseWire> {
    Box::pin(async move {
        let (events, next) = api.history_records(r).await?;
        Ok(Response::new(GetHistoryResponseWire {
            events: events.into_iter().map(EventWire::from).collect(),
            next_page_token: next,
        }))
    })
}

fn get_state_at_version(
    api: Arc<QueryApi>,
    r: Request<pb::GetStateAtVersionRequest>,
) -> Answered<GetStateAtVersionResponseWire> {
    Box::pin(async move {
        let s = api.state_at_version_record(r).await?;
        Ok(Response::new(GetStateAtVersionResponseWire {
            state: Some(JsonStruct(s.state)),
            version: s.version,
            recorded_at: Some(timestamp_from_time(s.recorded_at)),
        }))
    })
}

fn get_current_state(
    api: Arc<InstanceApi>,
    r: Request<pb::GetCurrentStateRequest>,
) -> Answered<InstanceResponseWire> {
    Box::pin(async move {
        let found = api.current_state_record(r).await?;
        Ok(Response::new(InstanceResponseWire {
            instance: Some(found.into()),
        }))
    })
}

fn get_instance(
    api: Arc<InstanceApi>,
    r: Request<pb::GetInstanceRequest>,
) -> Answered<InstanceResponseWire> {
    Box::pin(async move {
        let found = api.instance_record(r).await?;
        Ok(Response::new(InstanceResponseWire {
            instance: Some(found.into()),
        }))
    })
}

/// A method answered here: the call to its answer.
type Answering<A> = fn(Arc<A>, Sizes, Call) -> BoxFuture<'static, Result<Answer, Infallible>>;

/// A generated service `G` over the API `A`, with the methods `route` names answered here.
pub struct Fast<A, G> {
    api: Arc<A>,
    generated: G,
    sizes: Sizes,
    route: fn(&str) -> Option<Answering<A>>,
}

impl<A, G: Clone> Clone for Fast<A, G> {
    fn clone(&self) -> Self {
        Self {
            api: self.api.clone(),
            generated: self.generated.clone(),
            sizes: self.sizes,
            route: self.route,
        }
    }
}

impl<A, G: NamedService> NamedService for Fast<A, G> {
    const NAME: &'static str = G::NAME;
}

impl<A, G> Service<Call> for Fast<A, G>
where
    G: Service<
            Call,
            Response = Answer,
            Error = Infallible,
            Future = BoxFuture<'static, Result<Answer, Infallible>>,
        >,
{
    type Response = Answer;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Answer, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: Call) -> Self::Future {
        match (self.route)(call.uri().path()) {
            Some(answer) => answer(self.api.clone(), self.sizes, call),
            None => self.generated.call(call),
        }
    }
}

/// The QueryService, with ReadEvents, GetHistory and GetStateAtVersion answered here.
pub type FastQueries = Fast<QueryApi, QueryServiceServer<QueryApi>>;

pub fn queries(api: QueryApi, sizes: Sizes) -> FastQueries {
    let api = Arc::new(api);
    Fast {
        generated: QueryServiceServer::from_arc(api.clone())
            .max_decoding_message_size(sizes.max_decoding)
            .max_encoding_message_size(sizes.max_encoding),
        api,
        sizes,
        route: |path| {
            Some(match path {
                "/temporal_state.v1.QueryService/ReadEvents" => {
                    |api, sizes, call| unary(api, sizes, call, read_events)
                }
                "/temporal_state.v1.QueryService/GetHistory" => {
                    |api, sizes, call| unary(api, sizes, call, get_history)
                }
                "/temporal_state.v1.QueryService/GetStateAtVersion" => {
                    |api, sizes, call| unary(api, sizes, call, get_state_at_version)
                }
                _ => return None,
            })
        },
    }
}

/// The InstanceService, with GetInstance and GetCurrentState answered here.
pub type FastInstances = Fast<InstanceApi, InstanceServiceServer<InstanceApi>>;

pub fn instances(api: InstanceApi, sizes: Sizes) -> FastInstances {
    let api = Arc::new(api);
    Fast {
        generated: InstanceServiceServer::from_arc(api.clone())
            .max_decoding_message_size(sizes.max_decoding)
            .max_encoding_message_size(sizes.max_encoding),
        api,
        sizes,
        route: |path| {
            Some(match path {
                "/temporal_state.v1.InstanceService/GetCurrentState" => {
                    |api, sizes, call| unary(api, sizes, call, get_current_state)
                }
                "/temporal_state.v1.InstanceService/GetInstance" => {
                    |api, sizes, call| unary(api, sizes, call, get_instance)
                }
                _ => return None,
            })
        },
    }
}
