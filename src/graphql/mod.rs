//! The GraphQL API: one schema merged from a module per area of the store.

mod access;
mod admin;
mod catalog;
mod cost;
mod documents;
mod limits;
mod live;
mod orders;
mod pagination;
mod text;
pub(crate) use text::scan as text_shape;
mod users;
mod validated;
mod waitlist;

use async_graphql::{Context, MergedObject, MergedSubscription, Schema};

use crate::auth::{Caller, Viewer};
use crate::context::AppContext;
use crate::error::{ApiError, RequestId};

pub use limits::Limits as SchemaLimits;
use limits::QueryLimits;
pub use live::MAX_PRODUCTS as MAX_STOCK_PRODUCTS;

#[derive(MergedObject, Default)]
pub struct QueryRoot(
    users::UserQuery,
    catalog::CatalogQuery,
    orders::OrderQuery,
    waitlist::WaitlistQuery,
);

#[derive(MergedObject, Default)]
pub struct MutationRoot(
    users::UserMutation,
    orders::OrderMutation,
    admin::AdminMutation,
    waitlist::WaitlistMutation,
    access::AccessMutation,
);

#[derive(MergedSubscription, Default)]
pub struct SubscriptionRoot(live::LiveSubscription);

pub type AppSchema = Schema<QueryRoot, MutationRoot, SubscriptionRoot>;

/// Built once at start; each request only adds its caller and request id.
pub fn build_schema(app: Option<AppContext>, limits: SchemaLimits) -> AppSchema {
    // `QueryLimits` costs every document before the library's passes and says by how much
    // it is over; the parser's own recursion guard stays on behind it, at the same bound.
    let mut builder = Schema::build(
        QueryRoot::default(),
        MutationRoot::default(),
        SubscriptionRoot::default(),
    )
    .limit_recursive_depth(limits.max_nesting())
    .extension(crate::metrics::GraphqlTiming)
    .extension(QueryLimits::new(limits));
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
            max_selections: usize::MAX,
            max_tokens: usize::MAX,
            max_directives: usize::MAX,
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
            Some(Caller::Unverifiable) => Err(self.fail(anyhow::anyhow!(
                "the token's revocation could not be checked"
            ))),
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
