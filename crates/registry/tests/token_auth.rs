//! Token authentication end to end: a real `docker-registry` configured
//! with `auth: token:` and a token server in the test that signs ES256
//! JWTs with a key the registry trusts (its `rootcertbundle`). Skipped,
//! with a message, when `docker-registry` is not installed.

mod common;

use common::servers::TokenServer;
use common::*;
use kiln_registry::{Client, ClientConfig, Credential, CredentialStore, Error};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(kiln_registry), ignore = "needs docker-registry")]
async fn token_auth_login_push_pull_refresh() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = TokenServer::start(dir.path(), "alice", "s3cret");
    let Some(mut registry) = start_registry_with(RegistryOptions {
        auth_section: Some(tokens.registry_auth_config()),
        dir: Some(dir),
        ..Default::default()
    }) else {
        return;
    };
    let host = registry.host.clone();
    let image = make_image("token", &[("f", b"token auth"), ("g", &[9u8; 70_000])]);
    let (_d1, source) = temp_store();
    let tag = format!("{host}/private/app:1");
    image.store(&source, &tag);

    // Anonymous: the token server gives a token without access; the
    // registry refuses it.
    let anonymous = Client::new(ClientConfig::default(), None).unwrap();
    let err = anonymous
        .push(&source, &reference(&tag), &|_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err:?}");
    assert_eq!(err.hint().unwrap(), format!("kiln login {host}"));
    let (_d0, dest) = temp_store();
    let err = pull(&anonymous, &dest, &tag).await.unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err:?}");
    assert!(!tokens.requests().is_empty());
    assert!(tokens.requests().iter().all(|r| r.user.is_none()));

    // Wrong password: the token server refuses it; nothing is stored.
    let config_dir = tempfile::tempdir().unwrap();
    let creds = CredentialStore::at(config_dir.path());
    let client = Client::new(ClientConfig::default(), Some(creds.clone())).unwrap();
    let err = client
        .login(&host, &Credential::new("alice", "wrong"))
        .await
        .unwrap_err();
    match &err {
        Error::Unauthorized { message, .. } => {
            assert_eq!(message.as_deref(), Some("incorrect username or password"));
        }
        other => panic!("expected Unauthorized, got {other:?}"),
    }
    assert_eq!(creds.get(&host).unwrap(), None);
    let last = tokens.requests().pop().unwrap();
    assert_eq!(last.user.as_deref(), Some("alice"));
    assert!(!last.granted);

    // The right one: checked through the token server, then stored.
    client
        .login(&host, &Credential::new("alice", "s3cret"))
        .await
        .unwrap();
    assert_eq!(
        creds.get(&host).unwrap(),
        Some(Credential::new("alice", "s3cret"))
    );

    // A new client uses the stored credentials to push and pull.
    let client = Client::new(ClientConfig::default(), Some(creds.clone())).unwrap();
    let before = tokens.requests().len();
    client
        .push(&source, &reference(&tag), &|_| {})
        .await
        .unwrap();
    let push_requests = &tokens.requests()[before..];
    assert!(!push_requests.is_empty());
    assert!(
        push_requests.iter().all(|r| r.granted
            && r.user.as_deref() == Some("alice")
            && r.scopes
                .iter()
                .any(|s| s == "repository:private/app:pull,push")),
        "{push_requests:?}"
    );
    let (_d2, dest) = temp_store();
    let pulled = pull(&client, &dest, &tag).await.unwrap();
    assert_eq!(pulled.manifest_digest, image.manifest_digest);
    for (d, b) in &image.layers {
        assert_eq!(&dest.read_blob_bytes(d, 1 << 20).unwrap(), b);
    }

    // The token is reused: pulling again asks the token server nothing.
    let before = tokens.requests().len();
    let (_d3, dest3) = temp_store();
    pull(&client, &dest3, &tag).await.unwrap();
    pull(&client, &dest3, &tag).await.unwrap();
    assert_eq!(tokens.requests().len(), before, "tokens were not reused");

    // The registry stops trusting the old signing key (restarted with a
    // new bundle): the cached token is refused, and the client gets a new
    // one, once.
    tokens.rotate_key();
    registry.restart();
    let (_d4, dest4) = temp_store();
    pull(&client, &dest4, &tag).await.unwrap();
    let refreshed = &tokens.requests()[before..];
    assert_eq!(refreshed.len(), 1, "{refreshed:?}");
    assert_eq!(refreshed[0].scopes, ["repository:private/app:pull"]);

    // The catalog asks for its own scope.
    let all = client.catalog(&host, None).await;
    if let Ok(all) = all {
        assert_eq!(all, ["private/app"]);
    }
    assert!(
        tokens
            .requests()
            .iter()
            .all(|r| r.user.is_none() || r.user.as_deref() == Some("alice"))
    );
}
