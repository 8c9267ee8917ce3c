//! Authentication at CONNECT: token sources and their order, every refusal
//! with its exact `44` shape, public-key algorithms, revocation, and the
//! user id taken from `sub` as the token holds it.

use std::time::Duration;

use tests::{
    CHAT, Client, Config, JwtAlgorithm, KeyKind, Refusal, RevocationFile, TestServer, TokenSource, Value,
    json, public_key_file, token,
};

fn unauthorized() -> Value {
    json!({ "message": "Unauthorized", "data": { "code": 401 } })
}

fn revoked() -> Value {
    json!({ "message": "Token revoked", "data": { "code": 401 } })
}

fn assert_refused(result: Result<Client, Refusal>, expected: &Value) {
    match result {
        Ok(_) => panic!("connection accepted; expected 44{CHAT},{expected}"),
        Err(Refusal::ConnectError { raw, data }) => {
            assert!(raw.starts_with(&format!("44{CHAT},")), "refusal frame {raw:?}");
            assert_eq!(&data, expected, "refusal frame {raw:?}");
        }
        Err(Refusal::Http { status, body }) => {
            panic!("refused at the HTTP level ({status} {body:?}); expected 44{CHAT},{expected}")
        }
    }
}

/// The user id the broker attached to `client`, as seen in its own message.
async fn sender_id(client: &mut Client) -> Value {
    client.join("whoami").await;
    client.send("whoami", "who am I").await;
    client.expect_message("who am I").await["senderId"].clone()
}

#[tokio::test]
async fn query_token_is_accepted() {
    let server = TestServer::start_default().await;
    let mut client = Client::connect(&server, TokenSource::Query(server.token("via-query").sign())).await;
    assert_eq!(sender_id(&mut client).await, "via-query");
}

#[tokio::test]
async fn authorization_header_token_is_accepted() {
    let server = TestServer::start_default().await;
    let mut client = Client::connect(&server, TokenSource::Header(server.token("via-header").sign())).await;
    assert_eq!(sender_id(&mut client).await, "via-header");
}

#[tokio::test]
async fn connect_payload_token_is_accepted() {
    let server = TestServer::start_default().await;
    let mut client = Client::connect(&server, TokenSource::Payload(server.token("via-payload").sign())).await;
    assert!(
        client.connect_data().is_some_and(|data| data["sid"].is_string()),
        "40 payload {:?}",
        client.connect_data()
    );
    assert_eq!(sender_id(&mut client).await, "via-payload");
}

#[tokio::test]
async fn query_token_wins_over_header_and_payload() {
    let server = TestServer::start_default().await;
    let mut client = Client::builder(&server)
        .query_token(&server.token("from-query").sign())
        .header_token(&server.token("from-header").sign())
        .payload_token(&server.token("from-payload").sign())
        .connect()
        .await;
    assert_eq!(sender_id(&mut client).await, "from-query");
}

#[tokio::test]
async fn header_token_wins_over_payload() {
    let server = TestServer::start_default().await;
    let mut client = Client::builder(&server)
        .header_token(&server.token("from-header").sign())
        .payload_token(&server.token("from-payload").sign())
        .connect()
        .await;
    assert_eq!(sender_id(&mut client).await, "from-header");
}

#[tokio::test]
async fn valid_query_token_wins_over_a_bad_payload_token() {
    let server = TestServer::start_default().await;
    let mut client = Client::builder(&server)
        .query_token(&server.token("from-query").sign())
        .payload_token("not-a-jwt")
        .connect()
        .await;
    assert_eq!(sender_id(&mut client).await, "from-query");
}

#[tokio::test]
async fn bad_query_token_is_not_rescued_by_a_valid_payload_token() {
    let server = TestServer::start_default().await;
    let result = Client::builder(&server)
        .query_token(&server.token("forged").secret("wrong-secret").sign())
        .payload_token(&server.token("from-payload").sign())
        .try_connect()
        .await;
    assert_refused(result, &unauthorized());
}

#[tokio::test]
async fn missing_token_is_refused_as_unauthorized() {
    let server = TestServer::start_default().await;
    let mut client = Client::builder(&server).open().await;
    let refusal = client.connect_namespace(CHAT, None).await.expect_err("no token");
    match refusal {
        Refusal::ConnectError { raw, .. } => {
            assert_eq!(raw, r#"44/api/v1/chat,{"message":"Unauthorized","data":{"code":401}}"#);
        }
        Refusal::Http { .. } => unreachable!("the upgrade already succeeded"),
    }
    let result = Client::builder(&server).auth_payload(json!({})).try_connect().await;
    assert_refused(result, &unauthorized());
}

#[tokio::test]
async fn client_can_retry_connect_with_a_token_after_a_refusal() {
    let server = TestServer::start_default().await;
    let mut client = Client::builder(&server).open().await;
    let refusal = client.connect_namespace(CHAT, None).await.expect_err("no token");
    assert_eq!(refusal.connect_error(), &unauthorized());
    let token = server.token("second-try").sign();
    client.connect_namespace(CHAT, Some(json!({ "token": token }))).await.expect("a valid token is accepted");
    assert_eq!(sender_id(&mut client).await, "second-try");
}

#[tokio::test]
async fn token_with_a_bad_signature_is_refused() {
    let server = TestServer::start_default().await;
    let forged = server.token("mallory").secret("not-the-server-secret").sign();
    assert_refused(Client::builder(&server).payload_token(&forged).try_connect().await, &unauthorized());
}

#[tokio::test]
async fn malformed_tokens_are_refused() {
    let server = TestServer::start_default().await;
    for payload in [json!({ "token": "not-a-jwt" }), json!({ "token": 42 }), json!({ "token": "" })] {
        let result = Client::builder(&server).auth_payload(payload).try_connect().await;
        assert_refused(result, &unauthorized());
    }
}

#[tokio::test]
async fn token_without_a_usable_sub_is_refused() {
    let server = TestServer::start_default().await;
    for sub in [Value::Null, json!({ "id": 1 }), json!(["a"]), json!(true)] {
        let unusable = server.token("placeholder").claim("sub", sub).sign();
        assert_refused(
            Client::builder(&server).payload_token(&unusable).try_connect().await,
            &unauthorized(),
        );
    }
}

#[tokio::test]
async fn expired_token_is_refused() {
    let server = TestServer::start_default().await;
    let expired = server.token("late").exp_in(-60).sign();
    assert_refused(Client::builder(&server).payload_token(&expired).try_connect().await, &unauthorized());
}

#[tokio::test]
async fn token_expired_within_the_leeway_is_accepted() {
    let server = TestServer::start(Config { jwt_leeway: Duration::from_secs(30), ..Config::default() }).await;
    let just_expired = server.token("just-late").exp_in(-2).sign();
    let mut client = Client::builder(&server).payload_token(&just_expired).connect().await;
    assert_eq!(sender_id(&mut client).await, "just-late");
}

#[tokio::test]
async fn token_not_yet_valid_is_refused() {
    let server = TestServer::start_default().await;
    let early = server.token("early").nbf_in(600).sign();
    assert_refused(Client::builder(&server).payload_token(&early).try_connect().await, &unauthorized());
}

fn issuer_audience_config() -> Config {
    Config {
        jwt_issuer: Some("https://issuer.test".to_owned()),
        jwt_audience: Some("chat-api".to_owned()),
        ..Config::default()
    }
}

#[tokio::test]
async fn matching_issuer_and_audience_are_accepted_when_configured() {
    let server = TestServer::start(issuer_audience_config()).await;
    let good = server.token("insider").iss("https://issuer.test").aud("chat-api").sign();
    let mut client = Client::builder(&server).payload_token(&good).connect().await;
    assert_eq!(sender_id(&mut client).await, "insider");
}

#[tokio::test]
async fn wrong_or_missing_issuer_is_refused_when_configured() {
    let server = TestServer::start(issuer_audience_config()).await;
    let wrong = server.token("outsider").iss("https://other.test").aud("chat-api").sign();
    assert_refused(Client::builder(&server).payload_token(&wrong).try_connect().await, &unauthorized());
    let missing = server.token("outsider").aud("chat-api").sign();
    assert_refused(Client::builder(&server).payload_token(&missing).try_connect().await, &unauthorized());
}

#[tokio::test]
async fn wrong_or_missing_audience_is_refused_when_configured() {
    let server = TestServer::start(issuer_audience_config()).await;
    let wrong = server.token("outsider").iss("https://issuer.test").aud("billing-api").sign();
    assert_refused(Client::builder(&server).payload_token(&wrong).try_connect().await, &unauthorized());
    let missing = server.token("outsider").iss("https://issuer.test").sign();
    assert_refused(Client::builder(&server).payload_token(&missing).try_connect().await, &unauthorized());
}

#[tokio::test]
async fn issuer_and_audience_are_not_checked_when_not_configured() {
    let server = TestServer::start_default().await;
    let any = server.token("anyone").iss("https://whoever.test").aud("whatever").sign();
    let mut client = Client::builder(&server).payload_token(&any).connect().await;
    assert_eq!(sender_id(&mut client).await, "anyone");
}

#[tokio::test]
async fn rs256_token_is_verified_with_the_public_key_file() {
    let key = public_key_file(KeyKind::Rsa);
    let config = Config {
        jwt_algorithm: JwtAlgorithm::RS256,
        jwt_public_key_file: Some(key.path().to_owned()),
        ..Config::default()
    };
    let server = TestServer::start(config).await;
    let mut client =
        Client::builder(&server).payload_token(&token("rsa-user").rs256().sign()).connect().await;
    assert_eq!(sender_id(&mut client).await, "rsa-user");

    // Neither the shared secret nor the public key itself signs an HS256 token it accepts.
    let hs256 = token("confused").secret(server.secret()).sign();
    assert_refused(Client::builder(&server).payload_token(&hs256).try_connect().await, &unauthorized());
    let key_as_secret = token("confused").secret(tests::token::RSA_PUBLIC_PEM).sign();
    assert_refused(
        Client::builder(&server).payload_token(&key_as_secret).try_connect().await,
        &unauthorized(),
    );
    let es256 = token("other-key").es256().sign();
    assert_refused(Client::builder(&server).payload_token(&es256).try_connect().await, &unauthorized());
}

#[tokio::test]
async fn es256_token_is_verified_with_the_public_key_file() {
    let key = public_key_file(KeyKind::Ec);
    let config = Config {
        jwt_algorithm: JwtAlgorithm::ES256,
        jwt_public_key_file: Some(key.path().to_owned()),
        ..Config::default()
    };
    let server = TestServer::start(config).await;
    let mut client = Client::builder(&server).payload_token(&token("ec-user").es256().sign()).connect().await;
    assert_eq!(sender_id(&mut client).await, "ec-user");

    let key_as_secret = token("confused").secret(tests::token::EC_PUBLIC_PEM).sign();
    assert_refused(
        Client::builder(&server).payload_token(&key_as_secret).try_connect().await,
        &unauthorized(),
    );
    let rs256 = token("other-key").rs256().sign();
    assert_refused(Client::builder(&server).payload_token(&rs256).try_connect().await, &unauthorized());
}

#[tokio::test]
async fn revoked_jti_is_refused_as_token_revoked() {
    let mut revocations = RevocationFile::new();
    revocations.revoke("jti-revoked-1");
    let server =
        TestServer::start(Config { revocation_file: Some(revocations.path()), ..Config::default() }).await;
    let revoked_token = server.token("revoked-user").jti("jti-revoked-1").sign();
    let result = Client::builder(&server).payload_token(&revoked_token).try_connect().await;
    match result {
        Err(Refusal::ConnectError { raw, .. }) => {
            assert_eq!(raw, r#"44/api/v1/chat,{"message":"Token revoked","data":{"code":401}}"#);
        }
        other => panic!("expected the Token revoked refusal, got {:?}", other.err()),
    }
    // Another jti of the same user is fine.
    let fresh = server.token("revoked-user").jti("jti-fresh-2").sign();
    let mut client = Client::builder(&server).payload_token(&fresh).connect().await;
    assert_eq!(sender_id(&mut client).await, "revoked-user");
}

#[tokio::test]
async fn revoked_whole_token_is_refused_as_token_revoked() {
    let server_secret_token = token("whole-token-user").secret(tests::TEST_SECRET).sign();
    let mut revocations = RevocationFile::new();
    revocations.revoke(&server_secret_token);
    let server =
        TestServer::start(Config { revocation_file: Some(revocations.path()), ..Config::default() }).await;
    for source in [
        TokenSource::Payload(server_secret_token.clone()),
        TokenSource::Query(server_secret_token.clone()),
        TokenSource::Header(server_secret_token.clone()),
    ] {
        assert_refused(Client::builder(&server).token(source).try_connect().await, &revoked());
    }
    let other = server.token("whole-token-user").jti("not-listed").sign();
    Client::builder(&server).payload_token(&other).connect().await;
}

#[tokio::test]
async fn numeric_sub_stays_a_number_and_string_sub_stays_a_string() {
    let server = TestServer::start_default().await;
    let mut numeric = Client::connect_user(&server, 42).await;
    let mut textual = Client::connect_user(&server, "42").await;
    numeric.join("ids").await;
    textual.join("ids").await;
    let joined = numeric.expect_event("user_joined").await;
    assert_eq!(joined["userId"], json!("42"), "user_joined {joined}");
    numeric.send("ids", "from the number").await;
    let message = textual.expect_message("from the number").await;
    assert_eq!(message["senderId"], json!(42), "message {message}");
    textual.leave("ids").await;
    let left = numeric.expect_event("user_left").await;
    assert_eq!(left["userId"], json!("42"), "user_left {left}");
}
