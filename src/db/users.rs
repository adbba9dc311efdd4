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
}

fn user_from_row(row: sqlx::mysql::MySqlRow) -> anyhow::Result<UserRow> {
    let role: String = row.try_get("role")?;
    Ok(UserRow {
        id: UserId(row.try_get("id")?),
        email: row.try_get("email")?,
        password_hash: row.try_get("password_hash")?,
        role: Role::parse(&role).ok_or_else(|| anyhow::anyhow!("unknown role {role}"))?,
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
    sqlx::query("SELECT id, email, password_hash, role FROM users WHERE email = ?")
        .bind(email.as_str())
        .fetch_optional(db)
        .await?
        .map(user_from_row)
        .transpose()
}

pub async fn find_by_id(db: &Db, id: UserId) -> anyhow::Result<Option<UserRow>> {
    sqlx::query("SELECT id, email, password_hash, role FROM users WHERE id = ?")
        .bind(id.0)
        .fetch_optional(db)
        .await?
        .map(user_from_row)
        .transpose()
}
