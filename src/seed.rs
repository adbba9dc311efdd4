//! Demo data: two stores, a handful of products (one a flash-sale item with small stock)
//! and three accounts. Running it again changes nothing.

use crate::auth::hash_password;
use crate::db::{self, Db, catalog::NewProduct};
use crate::domain::{Email, Password, Role};

/// Demo only: every seeded account has this password.
pub const DEMO_PASSWORD: &str = "password123";

/// name, price in cents, opening stock, per-customer limit
type DemoProduct = (&'static str, i64, i64, Option<u32>);

const STORES: &[(&str, &[DemoProduct])] = &[
    (
        "Harbor Street Sneakers",
        &[
            ("Limited Edition Runner 12.12", 12_900, 10, Some(2)),
            ("Everyday Trainer", 7_900, 500, None),
            ("Wool Socks (3 pack)", 1_500, 2_000, Some(10)),
        ],
    ),
    (
        "Night Owl Electronics",
        &[
            ("Noise-Cancelling Headphones", 19_900, 150, Some(3)),
            ("USB-C Charger 65W", 3_900, 800, None),
            ("Mechanical Keyboard", 10_900, 60, Some(1)),
        ],
    ),
];

const USERS: &[(&str, Role)] = &[
    ("admin@example.com", Role::Admin),
    ("alice@example.com", Role::Customer),
    ("bob@example.com", Role::Customer),
];

pub async fn run(db: &Db) -> anyhow::Result<()> {
    for (store_name, products) in STORES {
        let store = db::catalog::upsert_store(db, store_name).await?;
        for (name, price_cents, stock, max_per_customer) in *products {
            let new = NewProduct {
                backorder_limit: 0,
                store,
                name,
                price_cents: *price_cents,
                stock: *stock,
                max_per_customer: *max_per_customer,
            };
            let created = db::catalog::insert_product(db, &new).await?;
            println!(
                "{} product {name:?} in {store_name:?}",
                if created.is_some() { "created" } else { "kept" }
            );
        }
    }
    let password = Password::parse(DEMO_PASSWORD).expect("demo password is valid");
    for (email, role) in USERS {
        let email = Email::parse(email).expect("demo email is valid");
        let hash = hash_password(&password).await?;
        let created = db::users::insert(db, &email, &hash, *role).await?;
        println!(
            "{} user {} ({})",
            if created.is_some() { "created" } else { "kept" },
            email.as_str(),
            role.as_str()
        );
    }
    println!(
        "demo password for every seeded user: {DEMO_PASSWORD} (demo only; never use in production)"
    );
    Ok(())
}
