use std::collections::HashMap;

use proptest::prelude::*;
use serde_json::json;

use super::*;

fn schema() -> GraphqlSchema {
    let mut fields = HashMap::new();
    fields.insert(
        "query".to_owned(),
        HashMap::from([
            ("viewer".to_owned(), Class::Read),
            ("repository".to_owned(), Class::Read),
        ]),
    );
    fields.insert(
        "mutation".to_owned(),
        HashMap::from([
            ("createIssue".to_owned(), Class::Write),
            ("deleteRef".to_owned(), Class::Delete),
        ]),
    );
    GraphqlSchema {
        path: "/graphql".into(),
        fields,
    }
}

fn gql(doc: &str) -> Result<GraphqlSummary, BodyError> {
    graphql(
        serde_json::json!({ "query": doc }).to_string().as_bytes(),
        &schema(),
    )
}

#[test]
fn graphql_action_is_the_most_dangerous_field_of_every_operation() {
    let s = gql("query A { viewer { login } } mutation B { x: createIssue(input: {}) { clientMutationId } y: deleteRef(input: {}) { clientMutationId } }").unwrap();
    let f = s.decisive().unwrap();
    assert_eq!(
        (f.operation, f.field.as_str(), f.class),
        ("mutation", "deleteRef", Class::Delete)
    );
    assert_eq!(s.operations.len(), 2);
    assert_eq!(s.fields.len(), 3);
    assert_eq!(s.fields[2].alias.as_deref(), Some("y"));
}

#[test]
fn graphql_sees_through_fragments() {
    let s = gql(
        "mutation { ...F } fragment F on Mutation { deleteRef(input: {}) { clientMutationId } }",
    )
    .unwrap();
    assert_eq!(s.decisive().unwrap().field, "deleteRef");
    let s = gql("mutation { ... on Mutation { createIssue(input: {}) { clientMutationId } } }")
        .unwrap();
    assert_eq!(s.decisive().unwrap().class, Class::Write);
    // Shorthand `{ … }` is a query.
    let s = gql("{ viewer { login } __typename }").unwrap();
    assert_eq!(s.decisive().unwrap().class, Class::Read);
    assert_eq!(s.operations[0].0, "query");
}

#[test]
fn graphql_unknown_fields_are_unknown() {
    let s = gql("mutation { launchMissiles { ok } createIssue(input: {}) { clientMutationId } }")
        .unwrap();
    let f = s.decisive().unwrap();
    assert_eq!(
        (f.field.as_str(), f.class),
        ("launchMissiles", Class::Unknown)
    );
    let s = gql("subscription { viewer }").unwrap();
    assert_eq!(s.decisive().unwrap().class, Class::Unknown);
}

#[test]
fn graphql_refuses_what_it_cannot_read() {
    for (body, why) in [
        ("not json", "not valid JSON"),
        ("[{\"query\": \"{ viewer }\"}]", "batched"),
        ("{\"query\": 5}", "no \"query\" string"),
        ("{\"variables\": {}}", "no \"query\" string"),
    ] {
        let e = graphql(body.as_bytes(), &schema()).unwrap_err().to_string();
        assert!(e.contains(why), "{body}: {e}");
    }
    for (doc, why) in [
        ("mutation { createIssue(", "does not parse"),
        ("query { ...Missing }", "not defined"),
        ("type Query { x: Int }", "definition"),
        ("fragment F on Query { viewer }", "no field"),
    ] {
        let e = gql(doc).unwrap_err().to_string();
        assert!(e.contains(why), "{doc}: {e}");
    }
    // Nesting and size are bounded by the parser's limits.
    let deep = format!("{{ viewer {} }}", "{ a ".repeat(200) + &"}".repeat(200));
    assert!(gql(&deep).is_err());
    let many = format!("{{ {} }}", "viewer ".repeat(60_000));
    assert!(gql(&many).is_err());
}

#[test]
fn graphql_fragment_cycles_terminate() {
    let s = gql(
        "mutation { ...A } fragment A on Mutation { ...B createIssue(input: {}) { clientMutationId } } fragment B on Mutation { ...A }",
    );
    assert_eq!(s.unwrap().decisive().unwrap().field, "createIssue");
}

#[test]
fn graphql_ambiguity_and_work_are_bounded() {
    let dup = r#"{"query": "query { viewer { login } }", "query": "mutation { deleteRef(input: {}) { clientMutationId } }"}"#;
    assert!(matches!(
        graphql(dup.as_bytes(), &schema()),
        Err(BodyError::Ambiguous(_))
    ));
    assert!(matches!(
        gql("query { ...F } fragment F on Query { viewer } fragment F on Query { repository }"),
        Err(BodyError::Ambiguous(_))
    ));
    // A long chain of fragments is refused, not followed to a stack overflow.
    let mut chain = String::from("query { ...F0 }");
    for i in 0..1_000 {
        chain.push_str(&format!(" fragment F{i} on Query {{ ...F{} }}", i + 1));
    }
    chain.push_str(" fragment F1000 on Query { viewer }");
    let r = gql(&chain);
    assert!(matches!(r, Err(BodyError::TooComplex(_))), "{r:?}");
    // Many operations spreading one large fragment: the work is capped by the budget.
    let mut doc = String::from("fragment F on Query {");
    doc.push_str(&" viewer".repeat(10_000));
    doc.push('}');
    doc.push_str(&" query{...F}".repeat(2_000));
    let r = gql(&doc);
    assert!(matches!(r, Err(BodyError::TooComplex(_))), "{r:?}");
}

// ---------------------------------------------------------------------------------------
// Property tests: generated documents read back as exactly their fields; no input panics.

fn config() -> ProptestConfig {
    ProptestConfig::with_cases(256)
}

type Op = (bool, Vec<(&'static str, Option<String>, u8)>);

fn operations() -> impl Strategy<Value = Vec<Op>> {
    let field = (
        prop::sample::select(vec![
            "viewer",
            "repository",
            "createIssue",
            "deleteRef",
            "launch",
            "__typename",
        ]),
        prop::option::of("[a-z]{1,4}"),
        0u8..3,
    );
    prop::collection::vec((any::<bool>(), prop::collection::vec(field, 1..5)), 1..4)
}

proptest! {
    #![proptest_config(config())]

    /// Every top-level field of every operation, also those reached through inline and
    /// named fragments, is reported with its class.
    #[test]
    fn graphql_reads_back_generated_operations(ops in operations()) {
        let mut doc = String::new();
        let mut fragments = String::new();
        let mut want = Vec::new();
        let schema = schema();
        for (o, (mutation, fields)) in ops.iter().enumerate() {
            let kind = if *mutation { "mutation" } else { "query" };
            let root = if *mutation { "Mutation" } else { "Query" };
            doc.push_str(&format!("{kind} Op{o} {{"));
            for (f, (name, alias, wrap)) in fields.iter().enumerate() {
                let sel = match alias {
                    Some(a) => format!("{a}: {name}"),
                    None => (*name).to_owned(),
                };
                match wrap {
                    0 => doc.push_str(&format!(" {sel}")),
                    1 => doc.push_str(&format!(" ... on {root} {{ {sel} }}")),
                    _ => {
                        doc.push_str(&format!(" ...F{o}x{f}"));
                        fragments.push_str(&format!(" fragment F{o}x{f} on {root} {{ {sel} }}"));
                    }
                }
                let class = if *name == "__typename" {
                    Class::Read
                } else {
                    schema.fields[kind].get(*name).copied().unwrap_or(Class::Unknown)
                };
                want.push((kind, (*name).to_owned(), alias.clone(), class));
            }
            doc.push_str(" }\n");
        }
        doc.push_str(&fragments);
        let body = json!({ "query": doc }).to_string();
        let s = graphql(body.as_bytes(), &schema).unwrap();
        let have: Vec<_> = s.fields.iter().map(|f| (f.operation, f.field.clone(), f.alias.clone(), f.class)).collect();
        prop_assert_eq!(have, want, "{}", doc);
    }

    #[test]
    fn graphql_never_panics(parts in prop::collection::vec(prop_oneof![
        Just("{"), Just("}"), Just("..."), Just("fragment F on Query"), Just("F"), Just("query"),
        Just("mutation"), Just("viewer"), Just("("), Just(")"), Just(":"), Just(" "), Just("\""),
        Just("on"), Just("$v"), Just("@skip"),
    ], 0..64)) {
        let body = json!({ "query": parts.concat() }).to_string();
        let _ = graphql(body.as_bytes(), &schema());
    }
}

// ---------------------------------------------------------------------------------------
// Bounded work: the worst documents of the inspection bound (1 MiB) stop at the parser's
// limits or the budget (times printed with --nocapture, not asserted).

const MIB: usize = 1 << 20;

#[test]
fn worst_case_documents_of_one_mib_are_bounded() {
    type Case = Box<dyn Fn() -> Result<(), BodyError>>;
    let cases: Vec<(&str, Case)> = vec![
        (
            "graphql: fields",
            Box::new(|| {
                let mut doc = String::from("{");
                while doc.len() < MIB - 16 {
                    doc.push_str(" viewer");
                }
                doc.push('}');
                graphql(json!({ "query": doc }).to_string().as_bytes(), &schema()).map(drop)
            }),
        ),
        (
            "graphql: nesting",
            Box::new(|| {
                let doc = "{ a".repeat(MIB / 8) + &"}".repeat(MIB / 8);
                graphql(json!({ "query": doc }).to_string().as_bytes(), &schema()).map(drop)
            }),
        ),
    ];
    for (name, run) in cases {
        let t = std::time::Instant::now();
        let r = run();
        eprintln!("{name}: {:?} -> {r:?}", t.elapsed());
    }
}
