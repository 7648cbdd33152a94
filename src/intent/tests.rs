#![allow(clippy::unwrap_used, clippy::panic)]

use super::*;

fn intent() -> Intent {
    Intent::embedded(1 << 20).unwrap()
}

fn subject() -> Subject<'static> {
    Subject {
        id: "spiffe://agentgate.local/agent/bot",
        name: "bot",
        tenant: None,
        owner: Some("alice"),
        trust_domain: "agentgate.local",
    }
}

fn tuple_of(
    intent: &Intent,
    method: &str,
    host: &str,
    path_and_query: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Tuple, IntentError> {
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    let routed = intent.route(Target {
        method: &method,
        host,
        path,
        query,
        headers,
    })?;
    let prefix = routed.needs_body().then_some(BodyPrefix {
        bytes: body,
        truncated: false,
    });
    routed.tuple(subject(), prefix)
}

fn get(intent: &Intent, host: &str, path: &str) -> Tuple {
    tuple_of(intent, "GET", host, path, &HeaderMap::new(), b"").unwrap()
}

/// Every operation of every generated catalog file matches its own template, with its
/// parameters in the resource.
#[test]
fn every_catalog_operation_matches_itself() {
    let intent = intent();
    let mut checked = 0;
    for (name, text) in catalog::EMBEDDED {
        let file: Value = serde_json::from_str(text).unwrap();
        let hosts = file["hosts"].as_array().unwrap();
        for op in file["operations"].as_array().into_iter().flatten() {
            let host = op
                .get("host")
                .and_then(Value::as_str)
                .unwrap_or_else(|| hosts[0].as_str().unwrap());
            let template = op["path"].as_str().unwrap();
            let mut n = 0;
            let path: Vec<String> = template
                .split('/')
                .map(|seg| {
                    if seg.starts_with("{+") {
                        n += 1;
                        format!("zq{n}/sub/dir.txt")
                    } else if seg.starts_with('{') {
                        n += 1;
                        format!("zq{n}")
                    } else {
                        seg.to_owned()
                    }
                })
                .collect();
            let path = path.join("/");
            let method = match op["method"].as_str().unwrap() {
                "*" => "POST",
                m => m,
            };
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            let found = intent
                .catalog()
                .host(host)
                .and_then(|h| h.find(&method, &path))
                .unwrap_or_else(|| panic!("{name}: {method} {path} ({template}) not found"));
            // Operations told apart by a query parameter (git's info/refs?service=).
            let route = match (op.get("query"), &found.route.by_query) {
                (Some(Value::Object(q)), Some(by)) => {
                    let want = q[&*by.param].as_str().unwrap();
                    &by.operations.iter().find(|(v, _)| &**v == want).unwrap().1
                }
                _ => found.route,
            };
            assert_eq!(
                &*route.action,
                op["action"].as_str().unwrap(),
                "{name}: {method} {path} matched {} instead",
                route.template
            );
            checked += 1;
        }
    }
    assert!(checked > 1500, "only {checked} operations");
}

#[test]
fn github_rest_tuples() {
    let intent = intent();
    let t = tuple_of(
        &intent,
        "POST",
        "api.github.com",
        "/repos/acme/web/issues",
        &HeaderMap::new(),
        b"{}",
    )
    .unwrap();
    assert_eq!(&*t.action, "github.issues.create");
    assert_eq!(t.class, Class::Write);
    assert_eq!(
        t.json["resource"],
        serde_json::json!({"type": "github.repo", "id": "acme/web", "properties": {"owner": "acme", "repo": "web"}})
    );
    assert_eq!(t.json["subject"]["properties"]["owner"], "alice");
    assert_eq!(t.json["action"]["properties"]["method"], "POST");
    let t = get(
        &intent,
        "api.github.com",
        "/repos/acme/web/contents/src/lib.rs",
    );
    assert_eq!(&*t.action, "github.repos.get-content");
    assert_eq!(t.json["resource"]["properties"]["path"], "src/lib.rs");
    // The repository root: an empty rest parameter.
    let t = get(&intent, "api.github.com", "/repos/acme/web/contents/");
    assert_eq!(&*t.action, "github.repos.get-content");
    // Trailing slash and encoded unreserved characters name the same operation.
    assert_eq!(
        &*get(&intent, "api.github.com", "/repos/acme/web/issues/").action,
        "github.issues.list-for-repo"
    );
    assert_eq!(
        &*get(&intent, "api.github.com", "/repos/acme/web/%69ssues").action,
        "github.issues.list-for-repo"
    );
    let t = get(
        &intent,
        "api.github.com",
        "/repos/acme/web/issues?state=open&access_token=s3cret&state=closed",
    );
    assert_eq!(
        t.json["context"]["query"],
        serde_json::json!({"state": ["open", "closed"], "access_token": "[redacted]"})
    );
    // HEAD is a read of the GET operation.
    let t = tuple_of(
        &intent,
        "HEAD",
        "api.github.com",
        "/repos/acme/web",
        &HeaderMap::new(),
        b"",
    )
    .unwrap();
    assert_eq!(&*t.action, "github.repos.get");
    let t = tuple_of(
        &intent,
        "DELETE",
        "api.github.com",
        "/repos/acme/web",
        &HeaderMap::new(),
        b"",
    )
    .unwrap();
    assert_eq!(
        (&*t.action, t.class),
        ("github.repos.delete", Class::Delete)
    );
}

#[test]
fn unknown_paths_and_hosts() {
    let intent = intent();
    let t = get(&intent, "api.github.com", "/definitely/not/an/api");
    assert_eq!((&*t.action, t.class), ("github.unknown", Class::Unknown));
    assert_eq!(t.json["action"]["properties"]["known"], false);
    assert_eq!(t.json["context"]["path"], "/definitely/not/an/api");
    let t = tuple_of(&intent, "PUT", "example.com", "/x", &HeaderMap::new(), b"").unwrap();
    assert_eq!(&*t.action, "http.put");
    assert_eq!(
        t.json["resource"],
        serde_json::json!({"type": "host", "id": "example.com", "properties": {}})
    );
    assert_eq!(t.json["action"]["properties"]["service"], Value::Null);
    // Empty segments do not match parameters.
    assert_eq!(
        &*get(&intent, "api.github.com", "/repos//web/issues").action,
        "github.unknown"
    );
}

#[test]
fn ambiguous_paths_are_refused() {
    let intent = intent();
    for path in [
        "/repos/acme%2Fweb/issues",
        "/repos/acme/web/../../admin",
        "/repos/a/%252e%252e/x",
        "/a\\b",
    ] {
        let e = tuple_of(
            &intent,
            "GET",
            "api.github.com",
            path,
            &HeaderMap::new(),
            b"",
        );
        assert!(matches!(e, Err(IntentError::Path(_))), "{path}");
    }
}

#[test]
fn method_overrides_are_refused_whatever_they_say() {
    let intent = intent();
    for (method, name, value) in [
        ("DELETE", "x-http-method-override", "GET"),
        ("POST", "x-http-method-override", "delete"),
        ("POST", "x-http-method", "BAD METHOD"),
        ("PUT", "x-method-override", "PUT"),
        ("GET", "X-HTTP-Method-Override", ""),
    ] {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
        let r = tuple_of(
            &intent,
            method,
            "api.github.com",
            "/repos/acme/web",
            &h,
            b"",
        );
        assert!(
            matches!(r, Err(IntentError::MethodOverride(_))),
            "{method} with {name}: {value}"
        );
    }
}

#[test]
fn meaning_headers_must_be_single_and_bodies_plain_utf8() {
    let intent = intent();
    let mut h = HeaderMap::new();
    h.append("content-type", "application/json".parse().unwrap());
    h.append("content-type", "text/plain".parse().unwrap());
    let r = tuple_of(
        &intent,
        "POST",
        "api.github.com",
        "/repos/acme/web/issues",
        &h,
        b"{}",
    );
    assert!(matches!(r, Err(IntentError::Ambiguous(_))), "{r:?}");
    // Inspected bodies: no content coding, UTF-8 only.
    let body = br#"{"channel":"C1","text":"hi"}"#;
    for (name, value) in [
        ("content-encoding", "gzip"),
        ("content-type", "application/json; charset=utf-16"),
    ] {
        let mut h = HeaderMap::new();
        h.insert("content-type", "application/json".parse().unwrap());
        h.insert(
            http::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
        let r = tuple_of(
            &intent,
            "POST",
            "slack.com",
            "/api/chat.postMessage",
            &h,
            body,
        );
        assert!(
            matches!(r, Err(IntentError::Ambiguous(_))),
            "{name}: {value}: {r:?}"
        );
    }
    let mut h = HeaderMap::new();
    h.insert(
        "content-type",
        "application/json; charset=UTF-8".parse().unwrap(),
    );
    let t = tuple_of(
        &intent,
        "POST",
        "slack.com",
        "/api/chat.postMessage",
        &h,
        body,
    )
    .unwrap();
    assert_eq!(t.resource_id, "C1");
}

#[test]
fn upgrades_only_where_listed() {
    let intent = intent().with_upgrades(vec![crate::intent::UpgradeRoute {
        host: "api.github.com".into(),
        path: "/ws".into(),
        protocols: vec!["websocket".into()],
    }]);
    let mut h = HeaderMap::new();
    h.insert("upgrade", "WebSocket".parse().unwrap());
    assert!(intent.check_upgrade("api.github.com", "/ws", &h).is_ok());
    for (host, path, proto) in [
        ("api.github.com", "/ws2", "websocket"),
        ("slack.com", "/ws", "websocket"),
        ("api.github.com", "/ws", "h2c"),
        ("api.github.com", "/ws", "websocket, h2c"),
        ("api.github.com", "/%77s", "websocket"),
    ] {
        let mut h = HeaderMap::new();
        h.insert("upgrade", proto.parse().unwrap());
        assert!(
            matches!(
                intent.check_upgrade(host, path, &h),
                Err(IntentError::UpgradeNotAllowed { .. })
            ),
            "{host}{path} {proto}"
        );
    }
}

#[test]
fn graphql_tuples() {
    let intent = intent();
    let body = br#"{"query": "query { viewer { login } } mutation { createIssue(input: {repositoryId: \"R\", title: \"t\"}) { issue { id } } }"}"#;
    let t = tuple_of(
        &intent,
        "POST",
        "api.github.com",
        "/graphql",
        &HeaderMap::new(),
        body,
    )
    .unwrap();
    assert_eq!(
        (&*t.action, t.class),
        ("github.graphql.mutation.createIssue", Class::Write)
    );
    assert_eq!(
        t.json["context"]["body"]["graphql"]["fields"][0]["field"],
        "viewer"
    );
    assert_eq!(t.json["context"]["body_truncated"], false);
    // A document cut off at the bound cannot be read: nothing is known about it.
    let method = Method::POST;
    let headers = HeaderMap::new();
    let routed = intent
        .route(Target {
            method: &method,
            host: "api.github.com",
            path: "/graphql",
            query: None,
            headers: &headers,
        })
        .unwrap();
    let t = routed
        .tuple(
            subject(),
            Some(BodyPrefix {
                bytes: &body[..20],
                truncated: true,
            }),
        )
        .unwrap();
    assert_eq!((&*t.action, t.class), ("github.graphql", Class::Unknown));
    assert_eq!(t.json["context"]["body_truncated"], true);
    assert!(matches!(
        tuple_of(
            &intent,
            "POST",
            "api.github.com",
            "/graphql",
            &HeaderMap::new(),
            b"{\"query\": \"mutation {\"}"
        ),
        Err(IntentError::Body(BodyError::Invalid(_)))
    ));
}

#[test]
fn gmail_and_slack_tuples() {
    use base64::Engine as _;
    let intent = intent();
    let raw =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("To: a@x.com, b@y.org\r\n\r\nhi");
    let body = serde_json::json!({ "raw": raw }).to_string();
    let mut h = HeaderMap::new();
    h.insert("content-type", "application/json".parse().unwrap());
    let t = tuple_of(
        &intent,
        "POST",
        "gmail.googleapis.com",
        "/gmail/v1/users/me/messages/send",
        &h,
        body.as_bytes(),
    )
    .unwrap();
    assert_eq!(&*t.action, "gmail.users.messages.send");
    assert_eq!(t.json["resource"]["type"], "gmail.mailbox");
    assert_eq!(t.json["resource"]["id"], "me");
    assert_eq!(
        t.json["context"]["body"]["email"]["domains"],
        serde_json::json!(["x.com", "y.org"])
    );
    let t = tuple_of(
        &intent,
        "POST",
        "gmail.googleapis.com",
        "/upload/gmail/v1/users/me/messages/send?uploadType=media",
        &HeaderMap::new(),
        b"To: c@z.net\r\n\r\nhi",
    )
    .unwrap();
    assert_eq!(&*t.action, "gmail.users.messages.send");
    assert_eq!(
        t.json["context"]["body"]["email"]["to"],
        serde_json::json!(["c@z.net"])
    );

    let t = tuple_of(
        &intent,
        "POST",
        "slack.com",
        "/api/chat.postMessage",
        &h,
        br#"{"channel":"C42","text":"x"}"#,
    )
    .unwrap();
    assert_eq!(&*t.action, "slack.chat.postMessage");
    assert_eq!(
        t.json["resource"],
        serde_json::json!({"type": "slack.channel", "id": "C42", "properties": {}})
    );
    assert_eq!(t.json["context"]["body"]["channel"], "C42");
    // GET with arguments in the query works too, and a token there is refused.
    let t = get(
        &intent,
        "slack.com",
        "/api/conversations.history?channel=C7",
    );
    assert_eq!(t.json["resource"]["id"], "C7");
    assert_eq!(t.class, Class::Read);
    assert!(matches!(
        tuple_of(
            &intent,
            "GET",
            "slack.com",
            "/api/auth.test?token=xoxb-1",
            &HeaderMap::new(),
            b""
        ),
        Err(IntentError::Body(BodyError::SlackToken(_)))
    ));
}

#[test]
fn github_names_are_ascii() {
    let intent = intent();
    let ok = tuple_of(
        &intent,
        "GET",
        "api.github.com",
        "/repos/acme-1/web.site_2",
        &HeaderMap::new(),
        b"",
    );
    assert!(ok.is_ok(), "{ok:?}");
    for path in [
        "/repos/stra%C3%9Fe/web",
        "/repos/acme/%C4%B0x",
        "/repos/acme/we%20b",
        "/orgs/%E2%80%8Bacme",
    ] {
        let r = tuple_of(
            &intent,
            "GET",
            "api.github.com",
            path,
            &HeaderMap::new(),
            b"",
        );
        assert!(matches!(r, Err(IntentError::Ambiguous(_))), "{path}: {r:?}");
    }
}

#[test]
fn github_names_are_judged_without_case() {
    let intent = intent();
    let t = tuple_of(
        &intent,
        "DELETE",
        "api.github.com",
        "/repos/ACME/Secret-Repo",
        &HeaderMap::new(),
        b"",
    )
    .unwrap();
    assert_eq!(t.resource_id, "acme/secret-repo");
    assert_eq!(t.json["resource"]["properties"]["owner"], "acme");
    assert_eq!(t.json["resource"]["properties"]["repo"], "secret-repo");
}
