//! register, login, logout and me.

use async_graphql::{Context, Enum, ID, Object, SimpleObject};
use chrono::{DateTime, Utc};

use super::ContextExt;
use crate::auth::{self, VerifiedToken, Viewer};
use crate::db;
use crate::domain::{Email, Password, Role};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum UserErrorCode {
    InvalidCredentials,
    InvalidEmail,
    WeakPassword,
    EmailTaken,
}

#[derive(Debug, Clone, SimpleObject)]
pub struct UserError {
    pub code: UserErrorCode,
    pub message: String,
    pub field: Option<String>,
}

#[derive(Debug, Clone, SimpleObject)]
pub struct User {
    pub id: ID,
    pub email: String,
    pub role: Role,
}

#[derive(Debug, Clone, SimpleObject)]
pub struct AuthPayload {
    pub token: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub user: Option<User>,
    pub errors: Vec<UserError>,
}

impl AuthPayload {
    fn failed(code: UserErrorCode, message: &str, field: Option<&str>) -> Self {
        Self {
            token: None,
            expires_at: None,
            user: None,
            errors: vec![UserError {
                code,
                message: message.to_owned(),
                field: field.map(str::to_owned),
            }],
        }
    }

    fn invalid_credentials() -> Self {
        Self::failed(
            UserErrorCode::InvalidCredentials,
            "email or password is wrong",
            None,
        )
    }
}

async fn signed_in(
    ctx: &Context<'_>,
    user: &db::users::UserRow,
) -> async_graphql::Result<AuthPayload> {
    let viewer = Viewer {
        id: user.id,
        role: user.role,
    };
    let app = ctx.app();
    app.token_versions
        .issuing(user.id, user.token_version)
        .await
        .map_err(|e| ctx.fail(e))?;
    let (token, expires_at) = app
        .tokens
        .issue(viewer, user.token_version)
        .map_err(|e| ctx.fail(e))?;
    Ok(AuthPayload {
        token: Some(token),
        expires_at: Some(expires_at),
        user: Some(User {
            id: ID(user.id.to_string()),
            email: user.email.clone(),
            role: user.role,
        }),
        errors: Vec::new(),
    })
}

#[derive(Default)]
pub struct UserQuery;

#[Object]
impl UserQuery {
    /// The signed-in user; null without a token.
    async fn me(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<User>> {
        let viewer = ctx.viewer()?;
        let user = db::users::find_by_id(&ctx.app().db, viewer.id)
            .await
            .map_err(|e| ctx.fail(e))?;
        Ok(user.map(|u| User {
            id: ID(u.id.to_string()),
            email: u.email,
            role: u.role,
        }))
    }
}

#[derive(Default)]
pub struct UserMutation;

#[Object]
impl UserMutation {
    /// Creates a CUSTOMER account and signs it in.
    async fn register(
        &self,
        ctx: &Context<'_>,
        email: String,
        password: String,
    ) -> async_graphql::Result<AuthPayload> {
        // Before anything else: every attempt counts, and one over the limit costs no hash.
        ctx.app().register_limiter.check(ctx).await?;
        let Some(email) = Email::parse(&email) else {
            return Ok(AuthPayload::failed(
                UserErrorCode::InvalidEmail,
                "not a valid email address",
                Some("email"),
            ));
        };
        let Some(password) = Password::parse(&password) else {
            return Ok(AuthPayload::failed(
                UserErrorCode::WeakPassword,
                "a password needs 8 to 128 characters",
                Some("password"),
            ));
        };
        let app = ctx.app();
        let hash = auth::hash_password(&password)
            .await
            .map_err(|e| ctx.fail(e))?;
        let inserted = db::users::insert(&app.db, &email, &hash, Role::Customer)
            .await
            .map_err(|e| ctx.fail(e))?;
        let Some(id) = inserted else {
            return Ok(AuthPayload::failed(
                UserErrorCode::EmailTaken,
                "this email is already registered",
                Some("email"),
            ));
        };
        signed_in(
            ctx,
            &db::users::UserRow {
                id,
                email: email.as_str().to_owned(),
                password_hash: hash,
                role: Role::Customer,
                token_version: 0,
            },
        )
        .await
    }

    /// Exchanges email and password for a token. Wrong password and unknown email look alike.
    async fn login(
        &self,
        ctx: &Context<'_>,
        email: String,
        password: String,
    ) -> async_graphql::Result<AuthPayload> {
        let app = ctx.app();
        let guard = app.login_limiter.check(ctx, &email).await?;
        let user = match Email::parse(&email) {
            Some(email) => db::users::find_by_email(&app.db, &email)
                .await
                .map_err(|e| ctx.fail(e))?,
            None => None,
        };
        let stored = user.as_ref().map(|u| u.password_hash.clone());
        let matches = auth::verify_password(&password, stored)
            .await
            .map_err(|e| ctx.fail(e))?;
        match user {
            Some(user) if matches => {
                guard.succeeded().await;
                signed_in(ctx, &user).await
            }
            _ => {
                guard.failed().await;
                Ok(AuthPayload::invalid_credentials())
            }
        }
    }

    /// Revokes the token of this request, or with `allDevices: true` every token the
    /// caller holds. The next request with a revoked token is UNAUTHENTICATED.
    async fn logout(
        &self,
        ctx: &Context<'_>,
        all_devices: Option<bool>,
    ) -> async_graphql::Result<bool> {
        let viewer = ctx.viewer()?;
        let versions = &ctx.app().token_versions;
        let token = ctx.data_opt::<VerifiedToken>();
        let done = match token {
            // A token from before token ids can only go with all of the user's tokens.
            Some(token) if all_devices != Some(true) && token.id.is_some() => {
                versions.revoke_one(token).await.map(|()| true)
            }
            _ => versions.revoke_all(viewer.id).await,
        }
        .map_err(|e| ctx.fail(e))?;
        Ok(done)
    }
}
