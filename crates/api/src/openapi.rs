//! The OpenAPI document, generated from the wire types and the route annotations, completed
//! by [`Completion`] with what every route shares: the security schemes, `401` and `403` on
//! every route that needs a key, `414` everywhere, `408`/`413`/`415`/`429`/`503` on every
//! route with a body, `429` where limits apply, bodies that may be left out — and the shape of each
//! Server-Sent Event, which the route annotations cannot state.

use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Required, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use crate::routes;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "sbx",
        description = "Self-hosted sandboxes for untrusted code: create, exec, destroy. Every route but `/healthz`, `/v1/login` and `/v1/logout` needs an API key: `Authorization: Bearer <key>` or `X-API-Key: <key>`. Errors are `{\"error\":{\"code\",\"message\",\"request_id\"}}`; every response carries `X-Request-Id`.",
    ),
    modifiers(&Completion),
    security(("bearer" = []), ("api_key" = [])),
    paths(
        routes::health::health,
        routes::sandboxes::create,
        routes::sandboxes::list,
        routes::sandboxes::fetch,
        routes::sandboxes::delete,
        routes::exec::exec,
        routes::exec::exec_stream,
        routes::sandboxes::extend,
        routes::sandboxes::recreate,
        routes::sandboxes::pause,
        routes::sandboxes::hibernate,
        routes::files::download,
        routes::files::upload,
        routes::files::stat,
        routes::ports::list,
        routes::ports::share,
        routes::ports::revoke,
        routes::files::list,
        routes::files::make_dir,
        routes::files::rename,
        routes::files::remove,
        routes::files::upload_many,
        routes::files::watch,
        routes::snapshots::create,
        routes::snapshots::list,
        routes::snapshots::fetch,
        routes::snapshots::delete,
        routes::snapshots::export,
        routes::snapshots::import,
        routes::projects::create,
        routes::projects::list,
        routes::projects::fetch,
        routes::projects::delete,
        routes::projects::share,
        routes::projects::unshare,
        routes::projects::create_fragment,
        routes::projects::fragments,
        routes::projects::fragment,
        routes::projects::delete_fragment,
        routes::projects::archive,
        routes::users::list,
        routes::users::switch,
        routes::users::fetch,
        routes::users::deactivate,
        routes::templates::list,
        routes::templates::fetch,
        routes::templates::delete,
        routes::templates::pull,
        routes::templates::import,
        routes::files::archive,
        routes::files::extract,
        routes::sandboxes::resume,
        routes::sandboxes::history,
        routes::maintenance::expire,
        routes::maintenance::cleanup,
        routes::events::events,
        routes::status::status,
        routes::pty::pty,
        routes::profiles::profiles,
        routes::auth::whoami,
        routes::auth::login,
        routes::auth::logout,
        routes::auth::list,
        routes::auth::create,
        routes::auth::revoke,
        routes::audit::audit,
    ),
    components(schemas(
        sbx_protocol::Template,
        sbx_protocol::ProfileStatus,
        sbx_protocol::GvisorStatus,
        sbx_protocol::TemplateList,
        sbx_protocol::TemplateLayer,
        sbx_protocol::PullTemplateRequest,
        sbx_protocol::TemplateProgress,
        sbx_protocol::TemplateEvent,
        sbx_protocol::CreateSandboxRequest,
        sbx_protocol::ResourcesRequest,
        sbx_protocol::Resources,
        sbx_protocol::Sandbox,
        sbx_protocol::SandboxList,
        sbx_protocol::SandboxState,
        sbx_protocol::ExecRequest,
        sbx_protocol::ExecResult,
        sbx_protocol::ExecEvent,
        sbx_protocol::ExitInfo,
        sbx_protocol::Encoding,
        sbx_protocol::ErrorBody,
        sbx_protocol::ErrorDetail,
        sbx_protocol::Health,
        sbx_protocol::ExtendRequest,
        sbx_protocol::ExpireRequest,
        sbx_protocol::ExpireResult,
        sbx_protocol::CleanupRequest,
        sbx_protocol::CleanupReport,
        sbx_protocol::Event,
        sbx_protocol::EventList,
        sbx_protocol::Status,
        sbx_protocol::BackendStatus,
        sbx_protocol::SandboxStatus,
        sbx_protocol::TerminalControl,
        sbx_protocol::TerminalEvent,
        sbx_protocol::ProfileInfo,
        sbx_protocol::ProfileList,
        sbx_protocol::Identity,
        sbx_protocol::LoginRequest,
        sbx_protocol::KeyInfo,
        sbx_protocol::KeyList,
        sbx_protocol::CreateKeyRequest,
        sbx_protocol::CreatedKey,
        sbx_protocol::AuditEntry,
        sbx_protocol::AuditList,
        sbx_protocol::FileInfo,
        sbx_protocol::FileKind,
        sbx_protocol::FileList,
        sbx_protocol::ExtractResult,
        sbx_protocol::FileEvent,
        sbx_protocol::Snapshot,
        sbx_protocol::SnapshotList,
        sbx_protocol::CreateSnapshotRequest,
        sbx_protocol::RecreateRequest,
        sbx_protocol::PortShareRequest,
        sbx_protocol::PortShare,
        sbx_protocol::Project,
        sbx_protocol::Share,
        sbx_protocol::ProjectList,
        sbx_protocol::FileContent,
        sbx_protocol::CreateProjectRequest,
        sbx_protocol::ShareRequest,
        sbx_protocol::Fragment,
        sbx_protocol::FragmentList,
        sbx_protocol::FragmentEntry,
        sbx_protocol::FragmentDetail,
        sbx_protocol::CreateFragmentRequest,
        sbx_protocol::SwitchRequest,
        sbx_protocol::ActiveSandbox,
        sbx_protocol::ActiveList,
        sbx_protocol::Deactivated,
        sbx_protocol::UploadResult,
        sbx_protocol::MakeDirRequest,
        sbx_protocol::MoveRequest,
    )),
    tags(
        (name = "sandboxes", description = "Sandbox lifecycle"),
        (name = "exec", description = "Running commands"),
        (name = "files", description = "A running sandbox's files"),
        (name = "ports", description = "A running sandbox's TCP services, reached through the daemon: any request to `/v1/sandboxes/{id}/ports/{port}/{path}` is passed to that port (HTTP/1.1, WebSocket upgrades included); the sandbox gets no network"),
        (name = "snapshots", description = "Filesystem snapshots of sandboxes"),
        (name = "projects", description = "Projects, their fragments (immutable versions of their files), and each user's one active sandbox"),
        (name = "templates", description = "Templates from container images (pulled or imported by admins)"),
        (name = "daemon", description = "The daemon itself"),
        (name = "maintenance", description = "Operator actions over all sandboxes"),
        (name = "auth", description = "API keys, the web page's session, the audit log"),
    )
)]
struct ApiDoc;

/// Routes open without a key.
const PUBLIC: [&str; 3] = ["/healthz", "/v1/login", "/v1/logout"];
/// Routes whose requests count against rate limits or quotas.
const LIMITED: [&str; 4] = [
    "/v1/sandboxes",
    "/v1/sandboxes/{id}/exec",
    "/v1/sandboxes/{id}/exec/stream",
    "/v1/sandboxes/{id}/pty",
];

struct Completion;

impl Modify for Completion {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
        let error = |description: &str| {
            RefOr::T(
                ResponseBuilder::new()
                    .description(description)
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("ErrorBody")))
                            .build(),
                    )
                    .build(),
            )
        };
        // Request types whose every field is optional: their body may be left out (`body.rs` reads
        // no body as `{}`), as `curl -X POST` does.
        let all_optional: Vec<String> = components
            .schemas
            .iter()
            .filter(|(_, schema)| {
                matches!(schema, RefOr::T(Schema::Object(object)) if object.required.is_empty())
            })
            .map(|(name, _)| format!("#/components/schemas/{name}"))
            .collect();
        for (path, item) in openapi.paths.paths.iter_mut() {
            let public = PUBLIC.contains(&path.as_str());
            let operations = [
                (&mut item.get, false),
                (&mut item.post, true),
                (&mut item.put, true),
                (&mut item.patch, true),
                (&mut item.delete, false),
            ];
            for (operation, may_have_body) in operations {
                let Some(operation) = operation.as_mut() else {
                    continue;
                };
                if let Some(body) = operation.request_body.as_mut() {
                    for (media, content) in body.content.iter_mut() {
                        binary(media, content);
                    }
                    let optional = body.content.values().all(|content| {
                        matches!(&content.schema, Some(RefOr::Ref(r)) if all_optional.contains(&r.ref_location))
                    });
                    if optional {
                        body.required = Some(Required::False);
                    }
                }
                let json_body = operation
                    .request_body
                    .as_ref()
                    .is_none_or(|b| b.content.contains_key("application/json"));
                let responses = &mut operation.responses.responses;
                for response in responses.values_mut() {
                    if let RefOr::T(response) = response {
                        for (media, content) in response.content.iter_mut() {
                            binary(media, content);
                        }
                        describe_event_stream(path, response);
                    }
                }
                if public {
                    operation.security = Some(vec![SecurityRequirement::default()]);
                } else {
                    responses
                        .entry("401".into())
                        .or_insert_with(|| error("No valid API key (or session)"));
                    responses.entry("403".into()).or_insert_with(|| {
                        error("Not allowed: a page of another origin (a session cookie, or a daemon without authentication), or an admin route with a user's key")
                    });
                }
                responses
                    .entry("414".into())
                    .or_insert_with(|| error("The request's URI is longer than 8 KiB"));
                if may_have_body {
                    responses
                        .entry("413".into())
                        .or_insert_with(|| error("The request body is too large"));
                    // Only a JSON body is checked for its type (a route of bytes takes any).
                    if json_body {
                        responses
                            .entry("415".into())
                            .or_insert_with(|| error("The request body is not JSON"));
                    }
                    responses
                        .entry("400".into())
                        .or_insert_with(|| error("The request body is invalid"));
                    responses.entry("503".into()).or_insert_with(|| {
                        error("The daemon is holding as many large request bodies as it may (or the host is at capacity); `Retry-After` says when to try again")
                    });
                    responses
                        .entry("408".into())
                        .or_insert_with(|| error("The request body did not arrive in time"));
                    responses.entry("429".into()).or_insert_with(|| {
                        error("A rate limit or quota refused the request (large bodies count against the user's share); `Retry-After` says when to try again")
                    });
                }
                if LIMITED.contains(&path.as_str()) && (may_have_body || path.ends_with("/pty")) {
                    responses.entry("429".into()).or_insert_with(|| {
                        error("A rate limit or quota refused the request; `Retry-After` says when to try again")
                    });
                }
            }
        }
    }
}

/// A body of bytes (`Vec<u8>` in a route annotation, which utoipa describes as an array of
/// integers) is a string of bytes; a multipart body, one such string per part.
fn binary(media: &str, content: &mut utoipa::openapi::Content) {
    let Some(RefOr::T(Schema::Array(_))) = &content.schema else {
        return;
    };
    let bytes = ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)));
    content.schema = Some(RefOr::T(Schema::Object(
        if media == "multipart/form-data" {
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .additional_properties(Some(bytes))
                .build()
        } else {
            bytes.build()
        },
    )));
}

/// A `text/event-stream` response's schema describes one event (OpenAPI 3.1 has no
/// `itemSchema`): its `id`, `event` and `data` fields, `data` being JSON of the schema the
/// route annotation named.
fn describe_event_stream(path: &str, response: &mut utoipa::openapi::Response) {
    let Some(content) = response.content.get_mut("text/event-stream") else {
        return;
    };
    let Some(RefOr::Ref(payload)) = content.schema.take() else {
        return;
    };
    let string = || ObjectBuilder::new().schema_type(Type::String);
    let mut data_schema = Extensions::default();
    data_schema.insert(
        "contentSchema".into(),
        serde_json::json!({ "$ref": payload.ref_location }),
    );
    let data = string()
        .description(Some("One JSON object"))
        .content_media_type("application/json")
        .extensions(Some(data_schema));
    let event = ObjectBuilder::new().description(Some("One Server-Sent Event"));
    // The daemon's events are numbered (a client resumes with `Last-Event-ID`); a watch's
    // are named by the change's kind.
    let event = match path {
        "/v1/events" => event
            .property("id", string().description(Some("The event's `seq`")))
            .property("event", string().enum_values(Some(["state"])))
            .required("id"),
        "/v1/sandboxes/{id}/files/watch" => event.property(
            "event",
            string().enum_values(Some([
                "create", "write", "remove", "rename", "chmod", "overflow",
            ])),
        ),
        other => panic!("the events of {other} are not described in openapi.rs"),
    };
    let event = event
        .property("data", data)
        .required("event")
        .required("data");
    content.schema = Some(RefOr::T(Schema::Object(event.build())));
}

/// The document as JSON text.
pub fn document() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serialises")
}
