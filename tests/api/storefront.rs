//! The storefront page at / in a real headless Chromium: a customer logs in and holds,
//! and another page sees the count drop and rise again without a reload.

use std::path::PathBuf;
use std::time::Duration;

use flashstock::db::{self, catalog::NewProduct};
use flashstock::domain::{Email, ProductId, Role};

use crate::browser::Browser;
use crate::helpers::{PASSWORD, one_at_a_time, password_hash, spawn_app};

fn text_is(selector: &str, text: &str) -> String {
    format!("document.querySelector({selector:?})?.textContent.trim() === {text:?}")
}

#[tokio::test]
async fn storefront_shows_holds_and_cancels_live_in_another_page() {
    let _serial = one_at_a_time().await;
    let app = spawn_app().await;
    // Each test has its own database, so plain names are free.
    let store = db::catalog::upsert_store(&app.db, "Midnight Drop")
        .await
        .unwrap();
    let mut product = ProductId(0);
    for (name, price_cents, stock, limit) in [
        ("Trail runner, limited colourway", 12900, 10, Some(5)),
        ("Signed vinyl, first pressing", 3499, 25, Some(1)),
        ("Mechanical keyboard kit", 8999, 0, None),
    ] {
        let new = NewProduct {
            store,
            name,
            price_cents,
            stock,
            max_per_customer: limit,
            backorder_limit: 0,
        };
        let id = db::catalog::insert_product(&app.db, &new)
            .await
            .unwrap()
            .unwrap();
        app.catalog.products(&[id]).await.unwrap();
        if product.0 == 0 {
            product = id;
        }
    }
    let email = "alice@example.com";
    db::users::insert(
        &app.db,
        &Email::parse(email).unwrap(),
        &password_hash(),
        Role::Customer,
    )
    .await
    .unwrap()
    .unwrap();

    let mut browser = Browser::launch().await;
    let url = format!("{}/", app.address);
    let shopper = browser.open(&url).await;
    let watcher = browser.open(&url).await;
    let available = format!("[data-product=\"{}\"] .available", product.0);
    for page in [&shopper, &watcher] {
        browser
            .wait_for(
                page,
                &text_is(&available, "10 left"),
                Duration::from_secs(10),
            )
            .await;
        browser
            .wait_for(page, &text_is("#live", "live"), Duration::from_secs(5))
            .await;
    }

    // Log in.
    browser
        .eval(
            &shopper,
            &format!(
                "document.querySelector('#email').value = {email:?};
                 document.querySelector('#password').value = {PASSWORD:?};
                 document.querySelector('#login button').click(); true"
            ),
        )
        .await;
    browser
        .wait_for(
            &shopper,
            "!document.querySelector('#who').hidden",
            Duration::from_secs(5),
        )
        .await;

    // Hold three: the countdown runs here, and the other page drops to 7 without a reload.
    let card = format!("[data-product=\"{}\"]", product.0);
    browser
        .wait_for(
            &shopper,
            &format!("!document.querySelector('{card} button').disabled"),
            Duration::from_secs(5),
        )
        .await;
    browser
        .eval(
            &shopper,
            &format!(
                "document.querySelector('{card} input').value = '3';
                 document.querySelector('{card} button').click(); true"
            ),
        )
        .await;
    browser
        .wait_for(
            &shopper,
            &text_is("#hold-status", "HELD"),
            Duration::from_secs(5),
        )
        .await;
    browser
        .wait_for(
            &shopper,
            "/^\\d+:\\d\\d left to pay$/.test(document.querySelector('#hold-countdown').textContent)",
            Duration::from_secs(2),
        )
        .await;
    let seen = browser
        .wait_for(
            &watcher,
            &text_is(&available, "7 left"),
            Duration::from_secs(2),
        )
        .await;
    eprintln!("the other page showed the hold after {seen:?}");
    browser
        .wait_for(
            &shopper,
            &text_is(&available, "7 left"),
            Duration::from_secs(2),
        )
        .await;
    assert_eq!(app.available(store, product).await, 7);
    let shot = std::env::var("STOREFRONT_SCREENSHOT")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("storefront.png"));
    browser.screenshot(&shopper, &shot).await;

    // Cancel: the hold says so, and the other page rises back to 10.
    browser
        .eval(&shopper, "document.querySelector('#cancel').click(); true")
        .await;
    browser
        .wait_for(
            &shopper,
            &text_is("#hold-status", "CANCELLED"),
            Duration::from_secs(5),
        )
        .await;
    browser
        .wait_for(
            &watcher,
            &text_is(&available, "10 left"),
            Duration::from_secs(2),
        )
        .await;
    assert_eq!(app.available(store, product).await, 10);
}
