//! Customer and admin accounts.

use sqlx::Row;

use super::Db;
use crate::domain::{Email, Role, UserId};

#[derive(Debug, Clone)]
pub struct UserRow {
    pub id: UserId,
    pub email: String,
    pub password_hash: String,
    pub role: Role,
    /// Tokens issued under a lower version are refused (see `auth::revocation`).
    pub token_version: u64,
}

fn user_from_row(row: sqlx::mysql::MySqlRow) -> anyhow::Result<UserRow> {
    let role: String = row.try_get("role")?;
    Ok(UserRow {
        id: UserId(row.try_get("id")?),
        email: row.try_get("email")?,
        password_hash: row.try_get("password_hash")?,
        role: Role::parse(&role).ok_or_else(|| anyhow::anyhow!("unknown role {role}"))?,
        token_version: row.try_get("token_version")?,
    })
}

/// Inserts a user; `None` when the email is taken.
pub async fn insert(
    db: &Db,
    email: &Email,
    password_hash: &str,
    role: Role,
) -> anyhow::Result<Option<UserId>> {
    let result =
        sqlx::query("INSERT IGNORE INTO users (email, password_hash, role) VALUES (?, ?, ?)")
            .bind(email.as_str())
            .bind(password_hash)
            .bind(role.as_str())
            .execute(db)
            .await?;
    // INSERT IGNORE reports 0 rows for a duplicate key: the one place a row count is the answer.
    Ok((result.rows_affected() == 1).then(|| UserId(result.last_insert_id())))
}

pub async fn find_by_email(db: &Db, email: &Email) -> anyhow::Result<Option<UserRow>> {
    sqlx::query("SELECT id, email, password_hash, role, token_version FROM users WHERE email = ?")
        .bind(email.as_str())
        .fetch_optional(db)
        .await?
        .map(user_from_row)
        .transpose()
}

pub async fn find_by_id(db: &Db, id: UserId) -> anyhow::Result<Option<UserRow>> {
    sqlx::query("SELECT id, email, password_hash, role, token_version FROM users WHERE id = ?")
        .bind(id.0)
        .fetch_optional(db)
        .await?
        .map(user_from_row)
        .transpose()
}

/// The user's token version; `None` when there is no such user.
pub async fn token_version(db: &Db, id: UserId) -> anyhow::Result<Option<u64>> {
    Ok(
        sqlx::query_scalar("SELECT token_version FROM users WHERE id = ?")
            .bind(id.0)
            .fetch_optional(db)
            .await?,
    )
}

/// Raises the user's token version by one, revoking every token issued before; returns
/// the new version, `None` when there is no such user.
pub async fn bump_token_version(db: &Db, id: UserId) -> anyhow::Result<Option<u64>> {
    let mut tx = db.begin().await?;
    sqlx::query("UPDATE users SET token_version = token_version + 1 WHERE id = ?")
        .bind(id.0)
        .execute(&mut *tx)
        .await?;
    // Read inside the transaction, under the row lock the UPDATE took: this is our value.
    let version: Option<u64> = sqlx::query_scalar("SELECT token_version FROM users WHERE id = ?")
        .bind(id.0)
        .fetch_optional(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(version)
}

/// What `set_role` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleChange {
    NoSuchUser,
    /// The user had this role already: nothing changed, no token revoked.
    Unchanged,
    /// The role changed and the token version rose to this: older tokens carry the old role.
    Changed {
        token_version: u64,
    },
}

/// Gives the user `role`; a real change raises the token version in the same statement.
pub async fn set_role(db: &Db, id: UserId, role: Role) -> anyhow::Result<RoleChange> {
    let mut tx = db.begin().await?;
    let current: Option<String> =
        sqlx::query_scalar("SELECT role FROM users WHERE id = ? FOR UPDATE")
            .bind(id.0)
            .fetch_optional(&mut *tx)
            .await?;
    let Some(current) = current else {
        return Ok(RoleChange::NoSuchUser);
    };
    if current == role.as_str() {
        return Ok(RoleChange::Unchanged);
    }
    sqlx::query("UPDATE users SET role = ?, token_version = token_version + 1 WHERE id = ?")
        .bind(role.as_str())
        .bind(id.0)
        .execute(&mut *tx)
        .await?;
    let token_version: u64 = sqlx::query_scalar("SELECT token_version FROM users WHERE id = ?")
        .bind(id.0)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(RoleChange::Changed { token_version })
}
