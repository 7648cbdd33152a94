use http::{HeaderMap, Method};
use serde_json::json;

use crate::intent::testing::{get, intent, subject, tuple_of};
use crate::intent::{BodyError, BodyPrefix, Class, Intent, IntentError, Subject, Target, Tuple};
use crate::vendors::{Form, form_at, served_by};

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

/// A request to github.com (git over HTTPS) and its tuple.
fn git(method: &str, path_and_query: &str) -> Result<Tuple, IntentError> {
    let intent = Intent::embedded(1 << 20).unwrap();
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    let headers = HeaderMap::new();
    let target = Target {
        method: &method,
        host: "github.com",
        path,
        query,
        headers: &headers,
    };
    let subject = Subject {
        id: "spiffe://agentgate.local/agent/bot",
        name: "bot",
        tenant: None,
        owner: None,
        trust_domain: "agentgate.local",
    };
    intent.route(target)?.tuple(subject, None)
}

#[test]
fn git_smart_http_is_fetch_or_push_on_the_repository() {
    for (method, path, action, class) in [
        (
            "GET",
            "/acme/web/info/refs?service=git-upload-pack",
            "github.git.fetch",
            Class::Read,
        ),
        (
            "HEAD",
            "/acme/web.git/info/refs?service=git-upload-pack",
            "github.git.fetch",
            Class::Read,
        ),
        (
            "POST",
            "/acme/web.git/git-upload-pack",
            "github.git.fetch",
            Class::Read,
        ),
        (
            "GET",
            "/acme/web.GIT/info/refs?service=git-receive-pack",
            "github.git.push",
            Class::Write,
        ),
        (
            "POST",
            "/acme/web/git-receive-pack",
            "github.git.push",
            Class::Write,
        ),
    ] {
        let t = git(method, path).unwrap();
        assert_eq!((&*t.action, t.class), (action, class), "{method} {path}");
        assert_eq!(
            t.json["resource"],
            json!({"type": "github.repo", "id": "acme/web", "properties": {"owner": "acme", "repo": "web"}}),
            "{method} {path}"
        );
    }
    // Nothing but the suffix goes; a name that is only the suffix stays.
    assert_eq!(
        git("POST", "/acme/web.git.git/git-upload-pack")
            .unwrap()
            .resource_id,
        "acme/web.git"
    );
    assert_eq!(
        git("POST", "/acme/.git/git-upload-pack")
            .unwrap()
            .resource_id,
        "acme/.git"
    );
    // The wrong method, or any other path on github.com, is unknown there.
    for (method, path) in [
        ("POST", "/acme/web/info/refs?service=git-upload-pack"),
        ("GET", "/acme/web/git-upload-pack"),
        ("GET", "/acme/web"),
        ("POST", "/acme/web.git/info/lfs/objects/batch"),
    ] {
        let t = git(method, path).unwrap();
        assert_eq!(
            (&*t.action, t.class),
            ("github.unknown", Class::Unknown),
            "{method} {path}"
        );
        assert_eq!(
            (&*t.resource_type, &*t.resource_id),
            ("github.web", "github.com")
        );
    }
}

#[test]
fn info_refs_without_exactly_one_known_service_is_refused() {
    for query in [
        "",
        "?",
        "?x=1",
        "?service=git-upload-pack&service=git-upload-pack",
        "?service=git-upload-pack&service=git-receive-pack",
        "?service=git-upload-pack&Service=git-receive-pack",
        "?service=git-upload-pack&%20service=git-receive-pack",
        "?SERVICE=git-upload-pack",
        "?service=",
        "?service=git-upload-archive",
        "?service=GIT-UPLOAD-PACK",
        "?service=git-upload-pack;service=git-receive-pack",
    ] {
        let e = git("GET", &format!("/acme/web/info/refs{query}"));
        assert!(
            matches!(e, Err(IntentError::Ambiguous(_))),
            "{query}: {e:?}"
        );
    }
    let Err(IntentError::Ambiguous(reason)) = git("GET", "/acme/web/info/refs?service=x") else {
        panic!("not refused");
    };
    assert!(
        reason.contains("git-upload-pack, git-receive-pack")
            || reason.contains("git-receive-pack, git-upload-pack"),
        "{reason}"
    );
}

#[test]
fn github_com_is_served_by_the_api_connection_in_git_form() {
    assert_eq!(served_by("github.com"), Some("api.github.com"));
    assert_eq!(
        form_at("github.com"),
        Form::Basic {
            user: "x-access-token"
        }
    );
    for other in [
        "api.github.com",
        "github.com:8443",
        "gist.github.com",
        "slack.com",
    ] {
        assert_eq!(served_by(other), None, "{other}");
        assert_eq!(form_at(other), Form::Scheme, "{other}");
    }
}

#[test]
fn maps_scopes_to_app_permissions() {
    let p = super::app_permissions(&[
        "issues:write".into(),
        "contents:read".into(),
        "repo".into(),
        "x:bogus".into(),
    ]);
    assert_eq!(
        serde_json::Value::Object(p),
        serde_json::json!({"issues": "write", "contents": "read"})
    );
}
