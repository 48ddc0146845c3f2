//! The AuthService: tells a caller who the server takes it for and which scopes it holds, so a
//! client (the console) can show the user and hide what they may not do. It reads only the
//! principal the auth layer attached; every other call is still checked by the application.

use temporal_state_proto::v1 as pb;
use temporal_state_proto::v1::auth_service_server::AuthService;
use tonic::{Request, Response, Status};
use tracing::instrument;

use super::auth::caller;
use crate::domain::{Principal, PrincipalKind};

/// The auth service. Stateless: the answer is the principal of the call.
pub struct AuthApi;

#[tonic::async_trait]
impl AuthService for AuthApi {
    #[instrument(skip_all)]
    async fn get_caller(
        &self,
        request: Request<pb::GetCallerRequest>,
    ) -> Result<Response<pb::GetCallerResponse>, Status> {
        let (who, _) = caller(request)?;
        Ok(Response::new(caller_response(&who)))
    }
}

fn caller_response(who: &Principal) -> pb::GetCallerResponse {
    let kind = match who.kind {
        PrincipalKind::Anonymous => pb::CallerKind::Anonymous,
        PrincipalKind::ApiKey => pb::CallerKind::ApiKey,
        PrincipalKind::Jwt => pb::CallerKind::Jwt,
        PrincipalKind::ClientCertificate => pb::CallerKind::ClientCertificate,
    };
    pb::GetCallerResponse {
        name: who.name.clone(),
        kind: kind.into(),
        scopes: who.scopes.iter().map(ToString::to_string).collect(),
        // The anonymous principal exists only when no credential source is configured.
        authentication_enabled: who.kind != PrincipalKind::Anonymous,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Scope;

    #[test]
    fn the_answer_mirrors_the_principal() {
        let anonymous = caller_response(&Principal::anonymous());
        assert!(!anonymous.authentication_enabled);
        assert_eq!(anonymous.kind(), pb::CallerKind::Anonymous);
        assert_eq!(anonymous.scopes, ["admin"]);

        let key = caller_response(&Principal {
            name: "ingest".into(),
            kind: PrincipalKind::ApiKey,
            scopes: ["read", "write:orders"]
                .iter()
                .map(|s| Scope::parse(s).unwrap())
                .collect(),
        });
        assert!(key.authentication_enabled);
        assert_eq!(key.name, "ingest");
        assert_eq!(key.kind(), pb::CallerKind::ApiKey);
        assert_eq!(key.scopes, ["read", "write:orders"]);
    }
}
