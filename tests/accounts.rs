//! Several accounts of one connector for one user (two mailboxes, two banks): each is its own
//! integration, with its own id, records, runs and checkpoints, side by side in one store.

use std::collections::HashMap;

use axum::Json;
use axum::extract::Query;
use axum::routing::get;
use engine::account::{Connection, integration_id};
use engine::credentials::secrets::TokenCipher;
use hypernet_tests::{RunOptions, run, serve, spec_from, test_stores};
use serde_json::{Value, json};

const SPEC: &str = r#"id: mailbox_api
name: Mailbox API
version: 1.0.0
category: productivity
description: One user's mailboxes; each account sees its own.
docs_url: https://api.example.com/docs
auth:
  kind: none
base_url: https://api.example.com
allowed_hosts: [api.example.com]
config:
  mailbox:
    description: The mailbox this account reads.
streams:
  notes:
    model: note
    request: { path: /notes, query: { mailbox: "{{ config.mailbox }}" } }
    records: $.items[*]
    id: $.id
    map: { title: $.title }
"#;

/// Each mailbox's notes: `home` has two, `work` three.
async fn provider() -> url::Url {
    serve(axum::Router::new().route(
        "/notes",
        get(|Query(query): Query<HashMap<String, String>>| async move {
            let mailbox = query.get("mailbox").cloned().unwrap_or_default();
            let count = if mailbox == "work" { 3 } else { 2 };
            Json(json!({"items": (0..count)
                .map(|n| json!({"id": format!("{mailbox}-{n}"), "title": format!("{mailbox} {n}")}))
                .collect::<Vec<_>>()}))
        }),
    ))
    .await
}

fn options(id: &str, mailbox: &str) -> RunOptions {
    let mut config = serde_json::Map::new();
    config.insert("mailbox".to_owned(), Value::String(mailbox.to_owned()));
    RunOptions {
        config,
        integration_id: id.to_owned(),
        ..RunOptions::default()
    }
}

#[tokio::test]
async fn two_accounts_of_one_connector_sync_side_by_side() {
    let server = provider().await;
    let spec = spec_from(SPEC);
    let home = integration_id(&spec.id, "user-1", "");
    let work = integration_id(&spec.id, "user-1", "work");
    assert_ne!(home, work);
    for test in test_stores("two_accounts").await {
        let cipher = TokenCipher::new(&TokenCipher::generate_key(), &[]).unwrap();
        for (account, mailbox) in [("", "home"), ("work", "work")] {
            let mut config = serde_json::Map::new();
            config.insert("mailbox".to_owned(), Value::String(mailbox.to_owned()));
            engine::account::save_connection(
                &test.store,
                &cipher,
                Connection {
                    user_id: "user-1",
                    connector: &spec.id,
                    account,
                    secret: b"{}",
                    config,
                    scopes: None,
                    streams: None,
                },
            )
            .await
            .unwrap();
        }
        // Connecting an account again renews it: still two.
        let listed = server::tables::ServiceTables::on(&test.store)
            .integrations_of("user-1")
            .await
            .unwrap();
        let mut accounts: Vec<(&str, &str)> = listed
            .iter()
            .map(|summary| (summary.id.as_str(), summary.account.as_str()))
            .collect();
        accounts.sort_unstable();
        let mut expected = [(home.as_str(), ""), (work.as_str(), "work")];
        expected.sort_unstable();
        assert_eq!(accounts, expected, "{}", test.backend);

        for (id, mailbox) in [(&home, "home"), (&work, "work")] {
            let (result, recorder) = run(&spec, &server, &test.store, options(id, mailbox)).await;
            result.unwrap_or_else(|error| panic!("{}: {error}", test.backend));
            assert_eq!(
                recorder.totals().written.new,
                if mailbox == "work" { 3 } else { 2 }
            );
        }
        // Each account's records carry its integration; each has its own run.
        let mut by_integration: HashMap<String, Vec<String>> = HashMap::new();
        for (_, id, data, _) in test.store.dump(&spec.id).await.unwrap() {
            by_integration
                .entry(data["source_integration_id"].as_str().unwrap().to_owned())
                .or_default()
                .push(id);
        }
        let mut home_ids = by_integration.remove(&home).unwrap_or_default();
        home_ids.sort();
        let mut work_ids = by_integration.remove(&work).unwrap_or_default();
        work_ids.sort();
        assert_eq!(home_ids, ["home-0", "home-1"], "{}", test.backend);
        assert_eq!(work_ids, ["work-0", "work-1", "work-2"], "{}", test.backend);
        assert!(by_integration.is_empty(), "{by_integration:?}");
        assert_eq!(test.store.runs(&home).await.unwrap().len(), 1);
        assert_eq!(test.store.runs(&work).await.unwrap().len(), 1);

        // A second sync of one account writes nothing and leaves the other alone.
        let (result, recorder) = run(&spec, &server, &test.store, options(&work, "work")).await;
        result.unwrap();
        assert_eq!(recorder.totals().written.unchanged, 3, "{}", test.backend);
        assert_eq!(test.store.runs(&home).await.unwrap().len(), 1);

        // Disconnecting one account with its data keeps the other's.
        test.store.delete_integration(&work, true).await.unwrap();
        let left: Vec<String> = test
            .store
            .dump(&spec.id)
            .await
            .unwrap()
            .into_iter()
            .map(|(_, id, _, _)| id)
            .collect();
        assert_eq!(left.len(), 2, "{}: {left:?}", test.backend);
        assert!(left.iter().all(|id| id.starts_with("home-")));
    }
}

/// A spec that names accounts by a captured value: the first connection is the default
/// account, connecting as it again renews it, another identity adds an account, and a name the
/// user gives wins.
#[tokio::test]
async fn accounts_are_named_by_the_identity_the_provider_gives() {
    let spec = spec_from(&SPEC.replace(
        "streams:\n",
        "account: \"{{ config.team_id }}\"\nstreams:\n",
    ).replace(
        "config:\n",
        "config:\n  team_id:\n    description: The workspace, captured when connecting.\n    default: \"\"\n",
    ));
    let captured = |team: &str| {
        let mut config = serde_json::Map::new();
        config.insert("team_id".to_owned(), Value::String(team.to_owned()));
        config
    };
    for test in test_stores("account_names").await {
        let cipher = TokenCipher::new(&TokenCipher::generate_key(), &[]).unwrap();
        let connect = |team: &'static str, given: &'static str| {
            let (store, cipher, spec) = (&test.store, &cipher, &spec);
            async move {
                let config = captured(team);
                let account = engine::account::account_of(spec, store, "u1", given, &config)
                    .await
                    .unwrap();
                engine::account::save_connection(
                    store,
                    cipher,
                    Connection {
                        user_id: "u1",
                        connector: &spec.id,
                        account: &account,
                        secret: b"{}",
                        config,
                        scopes: None,
                        streams: None,
                    },
                )
                .await
                .unwrap();
                account
            }
        };
        assert_eq!(
            connect("T1", "").await,
            "",
            "{}: the first is the default",
            test.backend
        );
        assert_eq!(connect("T1", "").await, "", "the same identity renews it");
        assert_eq!(
            connect("T2", "").await,
            "T2",
            "another identity adds an account"
        );
        assert_eq!(connect("T2", "").await, "T2", "and renews it after");
        assert_eq!(connect("T3", "side").await, "side", "a given name wins");
        let mut accounts: Vec<String> = server::tables::ServiceTables::on(&test.store)
            .integrations_of("u1")
            .await
            .unwrap()
            .into_iter()
            .map(|summary| summary.account)
            .collect();
        accounts.sort();
        assert_eq!(accounts, ["", "T2", "side"], "{}", test.backend);
    }
}
