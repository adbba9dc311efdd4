//! revokeTokens and setUserRole (ADMIN only): who may act, and with which tokens.

use async_graphql::{Context, ID, Object};

use super::ContextExt;
use super::users::User;
use crate::db::{self, users::RoleChange};
use crate::domain::{Role, UserId};
use crate::error::ApiError;

fn parse_user(ctx: &Context<'_>, raw: &ID) -> async_graphql::Result<UserId> {
    UserId::parse(raw).ok_or_else(|| ctx.fail(ApiError::BadInput("no user has this id".into())))
}

#[derive(Default)]
pub struct AccessMutation;

#[Object]
impl AccessMutation {
    /// Revokes every token the user holds now (a banned customer, a stolen token). Their
    /// next request with one is UNAUTHENTICATED; logging in again gives a good token.
    async fn revoke_tokens(&self, ctx: &Context<'_>, user_id: ID) -> async_graphql::Result<bool> {
        ctx.admin()?;
        let user = parse_user(ctx, &user_id)?;
        let revoked = ctx
            .app()
            .token_versions
            .revoke_all(user)
            .await
            .map_err(|e| ctx.fail(e))?;
        if !revoked {
            return Err(ctx.fail(ApiError::BadInput("no user has this id".into())));
        }
        tracing::info!(user = %user, "tokens revoked");
        Ok(true)
    }

    /// Gives the user a role. A change revokes every token they hold: tokens carry the
    /// role they were issued with, so an old one would keep the old powers.
    async fn set_user_role(
        &self,
        ctx: &Context<'_>,
        user_id: ID,
        role: Role,
    ) -> async_graphql::Result<User> {
        ctx.admin()?;
        let user = parse_user(ctx, &user_id)?;
        let app = ctx.app();
        match db::users::set_role(&app.db, user, role)
            .await
            .map_err(|e| ctx.fail(e))?
        {
            RoleChange::NoSuchUser => {
                return Err(ctx.fail(ApiError::BadInput("no user has this id".into())));
            }
            RoleChange::Unchanged => {}
            RoleChange::Changed { token_version } => {
                app.token_versions
                    .revoked_all(user, token_version)
                    .await
                    .map_err(|e| ctx.fail(e))?;
                tracing::info!(user = %user, role = role.as_str(), "role changed; tokens revoked");
            }
        }
        let row = db::users::find_by_id(&app.db, user)
            .await
            .map_err(|e| ctx.fail(e))?
            .ok_or_else(|| ctx.fail(anyhow::anyhow!("user {user} vanished")))?;
        Ok(User {
            id: ID(row.id.to_string()),
            email: row.email,
            role: row.role,
        })
    }
}
