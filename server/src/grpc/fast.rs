//! The hot reads answered with [`super::wire`]'s mirror messages: the same bytes the generated
//! handlers would send, written from the records without building `prost_types::Struct` trees.
//!
//! [`FastQueries`] and [`FastInstances`] stand in the router for the generated
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

/// The QueryService, with ReadEvents, GetHistory and GetStateAtVersion answered here.
#[derive(Clone)]
pub struct FastQueries {
    api: Arc<QueryApi>,
    generated: QueryServiceServer<QueryApi>,
    sizes: Sizes,
}

impl FastQueries {
    pub fn new(api: QueryApi, sizes: Sizes) -> Self {
        let api = Arc::new(api);
        let generated = QueryServiceServer::from_arc(api.clone())
            .max_decoding_message_size(sizes.max_decoding)
            .max_encoding_message_size(sizes.max_encoding);
        Self {
            api,
            generated,
            sizes,
        }
    }
}

impl NamedService for FastQueries {
    const NAME: &'static str = <QueryServiceServer<QueryApi> as NamedService>::NAME;
}

impl Service<Call> for FastQueries {
    type Response = Answer;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Answer, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: Call) -> Self::Future {
        let (api, sizes) = (self.api.clone(), self.sizes);
        match call.uri().path() {
            "/temporal_state.v1.QueryService/ReadEvents" => unary(api, sizes, call, read_events),
            "/temporal_state.v1.QueryService/GetHistory" => unary(api, sizes, call, get_history),
            "/temporal_state.v1.QueryService/GetStateAtVersion" => {
                unary(api, sizes, call, get_state_at_version)
            }
            _ => self.generated.call(call),
        }
    }
}

/// The InstanceService, with GetInstance and GetCurrentState answered here.
#[derive(Clone)]
pub struct FastInstances {
    api: Arc<InstanceApi>,
    generated: InstanceServiceServer<InstanceApi>,
    sizes: Sizes,
}

impl FastInstances {
    pub fn new(api: InstanceApi, sizes: Sizes) -> Self {
        let api = Arc::new(api);
        let generated = InstanceServiceServer::from_arc(api.clone())
            .max_decoding_message_size(sizes.max_decoding)
            .max_encoding_message_size(sizes.max_encoding);
        Self {
            api,
            generated,
            sizes,
        }
    }
}

impl NamedService for FastInstances {
    const NAME: &'static str = <InstanceServiceServer<InstanceApi> as NamedService>::NAME;
}

impl Service<Call> for FastInstances {
    type Response = Answer;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Answer, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: Call) -> Self::Future {
        let (api, sizes) = (self.api.clone(), self.sizes);
        match call.uri().path() {
            "/temporal_state.v1.InstanceService/GetCurrentState" => {
                unary(api, sizes, call, get_current_state)
            }
            "/temporal_state.v1.InstanceService/GetInstance" => {
                unary(api, sizes, call, get_instance)
            }
            _ => self.generated.call(call),
        }
    }
}
