//! The GraphQL API: one schema merged from a module per area of the store.

mod admin;
mod catalog;
mod limits;

pub(crate) use limits::nesting;
mod orders;
mod pagination;
mod users;

use async_graphql::{Context, EmptySubscription, MergedObject, Schema};

use crate::auth::{Caller, Viewer};
use crate::context::AppContext;
use crate::error::{ApiError, RequestId};

use limits::QueryLimits;

#[derive(MergedObject, Default)]
pub struct QueryRoot(users::UserQuery, catalog::CatalogQuery, orders::OrderQuery);

#[derive(MergedObject, Default)]
pub struct MutationRoot(
    users::UserMutation,
    orders::OrderMutation,
    admin::AdminMutation,
);

pub type AppSchema = Schema<QueryRoot, MutationRoot, EmptySubscription>;

pub struct SchemaLimits {
    pub max_depth: usize,
    pub max_complexity: usize,
    pub introspection: bool,
}

/// Built once at start; each request only adds its caller and request id.
pub fn build_schema(app: Option<AppContext>, limits: SchemaLimits) -> AppSchema {
    let query_limits = QueryLimits {
        max_depth: limits.max_depth,
        max_complexity: limits.max_complexity,
        introspection: limits.introspection,
    };
    // Depth and complexity are checked by `QueryLimits`, which says by how much a query is
    // over; the parser's own recursion guard (it also follows fragment spreads) stays on.
    let mut builder = Schema::build(
        QueryRoot::default(),
        MutationRoot::default(),
        EmptySubscription,
    )
    .limit_recursive_depth(query_limits.max_nesting().max(32))
    .extension(crate::metrics::GraphqlTiming)
    .extension(query_limits);
    if !limits.introspection {
        builder = builder.disable_introspection();
    }
    if let Some(app) = app {
        builder = builder.data(app);
    }
    builder.finish()
}

/// The SDL that `flashstock schema` prints and `schema.graphql` must equal.
pub fn sdl() -> String {
    build_schema(
        None,
        SchemaLimits {
            max_depth: usize::MAX,
            max_complexity: usize::MAX,
            introspection: true,
        },
    )
    .sdl()
}

/// What every resolver needs from the request context.
pub(crate) trait ContextExt {
    fn app(&self) -> &AppContext;
    fn viewer(&self) -> async_graphql::Result<Viewer>;
    fn admin(&self) -> async_graphql::Result<Viewer>;
    fn fail(&self, error: impl Into<ApiError>) -> async_graphql::Error;
}

impl ContextExt for Context<'_> {
    fn app(&self) -> &AppContext {
        self.data_unchecked::<AppContext>()
    }

    fn viewer(&self) -> async_graphql::Result<Viewer> {
        match self.data_opt::<Caller>() {
            Some(Caller::Authenticated(viewer)) => Ok(*viewer),
            _ => Err(self.fail(ApiError::Unauthenticated)),
        }
    }

    fn admin(&self) -> async_graphql::Result<Viewer> {
        let viewer = self.viewer()?;
        if viewer.is_admin() {
            Ok(viewer)
        } else {
            Err(self.fail(ApiError::Forbidden))
        }
    }

    fn fail(&self, error: impl Into<ApiError>) -> async_graphql::Error {
        error.into().into_graphql(self.data_opt::<RequestId>())
    }
}
