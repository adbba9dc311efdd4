//! The binary's commands, run as a user would run them.

use std::process::Command;

use crate::helpers::{
    base_database_url, database_url_for, drop_database, redis_url, unique_suffix,
};

fn flashstock(database_url: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_flashstock"));
    command
        .env("DATABASE_URL", database_url)
        .env("REDIS_URL", redis_url())
        .env("REDIS_KEY_PREFIX", format!("t{}", unique_suffix()))
        .env_remove("JWT_SECRET");
    command
}

async fn count(db: &sqlx::MySqlPool, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
        .fetch_one(db)
        .await
        .unwrap()
}

#[tokio::test]
async fn seed_creates_the_demo_data_once() {
    let name = format!("fs_test_{}", unique_suffix());
    let url = database_url_for(&name);
    for _ in 0..2 {
        let output = flashstock(&url).arg("seed").output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(String::from_utf8_lossy(&output.stdout).contains("password123"));
    }
    let db = flashstock::db::connect_existing(&url).await.unwrap();
    assert_eq!(count(&db, "stores").await, 2);
    assert!(count(&db, "products").await >= 5);
    let flash: i64 = sqlx::query_scalar("SELECT MIN(stock) FROM products")
        .fetch_one(&db)
        .await
        .unwrap();
    assert!(flash <= 20, "one flash-sale product has small stock");
    let emails: Vec<String> = sqlx::query_scalar("SELECT email FROM users ORDER BY email")
        .fetch_all(&db)
        .await
        .unwrap();
    assert_eq!(
        emails,
        ["admin@example.com", "alice@example.com", "bob@example.com"]
    );
    let admin: String =
        sqlx::query_scalar("SELECT role FROM users WHERE email = 'admin@example.com'")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(admin, "ADMIN");
    db.close().await;
    drop_database(&name).await;
}

#[test]
fn serve_refuses_to_start_without_a_strong_secret() {
    let url = base_database_url();
    let missing = flashstock(&url).arg("serve").output().unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("JWT_SECRET"));

    let short = flashstock(&url)
        .env("JWT_SECRET", "too-short")
        .arg("serve")
        .output()
        .unwrap();
    assert!(!short.status.success());
    let stderr = String::from_utf8_lossy(&short.stderr);
    assert!(stderr.contains("at least 32 bytes"), "{stderr}");
    assert!(!stderr.contains("too-short"), "the secret is never echoed");
}
