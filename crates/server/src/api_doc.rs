//! What the OpenAPI document says beyond the routes' own declarations: the
//! title, the bearer scheme, and the error answers every route shares.
//!
//! Each route declares the answers particular to it (404 for a missing run,
//! 422 for an invalid job); the ones that any route can give are added here
//! once, so no declaration can forget them.

use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    Components, ContentBuilder, Info, OpenApi, Ref, RefOr, ResponseBuilder, Tag,
    header::HeaderBuilder,
};
use utoipa::{PartialSchema, ToSchema};

use ganger_api::ErrorBody;

/// The name routes use in `security(("bearer" = []))`.
pub(crate) const BEARER: &str = "bearer";

/// Shared answers: (status, component name, description, for secured routes only).
const SHARED: [(&str, &str, &str, bool); 4] = [
    (
        "401",
        "Unauthorized",
        "No token, or a token that is unknown or revoked. Send `Authorization: Bearer <token>`.",
        true,
    ),
    (
        "403",
        "Forbidden",
        "The token's role may not do this (a `viewer` may only read; an `agent` token only speaks the agent protocol).",
        true,
    ),
    (
        "500",
        "Internal",
        "The server failed; its log has the details.",
        false,
    ),
    (
        "503",
        "Unavailable",
        "The server is shutting down; retry after `Retry-After` seconds against a running server.",
        false,
    ),
];

pub(crate) fn finish(mut doc: OpenApi) -> OpenApi {
    let mut info = Info::new("ganger", env!("CARGO_PKG_VERSION"));
    info.description = Some(
        "The HTTP API of ganger, a durable job scheduler and DAG workflow engine. \
         Every error answers `{\"error\": {\"code\", \"message\", \"details\"?}}`."
            .to_owned(),
    );
    doc.info = info;
    doc.tags = Some(
        [
            ("jobs", "Job definitions"),
            ("runs", "Runs, their tasks and logs"),
            ("agents", "Agents"),
            ("health", "Liveness, readiness and this document"),
        ]
        .into_iter()
        .map(|(name, description)| {
            let mut tag = Tag::new(name);
            tag.description = Some(description.to_owned());
            tag
        })
        .collect(),
    );

    let components = doc.components.get_or_insert_with(Components::new);
    components.add_security_scheme(
        BEARER,
        SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
    );
    components
        .schemas
        .insert(ErrorBody::name().into_owned(), ErrorBody::schema());
    for (name, schema) in error_schemas() {
        components.schemas.entry(name).or_insert(schema);
    }
    for (status, name, description, _) in SHARED {
        let mut response = ResponseBuilder::new().description(description).content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name(ErrorBody::name())))
                .build(),
        );
        if status == "401" {
            response = response.header(
                "WWW-Authenticate",
                HeaderBuilder::new()
                    .description(Some("`Bearer realm=\"ganger\"`"))
                    .build(),
            );
        }
        if status == "503" {
            response = response.header(
                "Retry-After",
                HeaderBuilder::new()
                    .description(Some("Seconds to wait before retrying."))
                    .build(),
            );
        }
        components
            .responses
            .insert(name.to_owned(), RefOr::T(response.build()));
    }

    for item in doc.paths.paths.values_mut() {
        for op in operations(item) {
            let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
            for (status, name, _, only_secured) in SHARED {
                if secured || !only_secured {
                    op.responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert_with(|| RefOr::Ref(Ref::from_response_name(name)));
                }
            }
        }
    }
    doc
}

/// The schemas `ErrorBody` refers to.
fn error_schemas() -> Vec<(String, RefOr<utoipa::openapi::schema::Schema>)> {
    let mut schemas = Vec::new();
    ErrorBody::schemas(&mut schemas);
    schemas
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}
