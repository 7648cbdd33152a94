//! The service catalog: `(host, method, path template)` → action, class and resource, compiled
//! from the generated files in `config/services/` (each vendor lists its own, see
//! [`crate::vendors`]) into one segment trie per host (`trie`), so a match costs a few hash
//! lookups whatever the number of operations. Where one query parameter tells operations on
//! the same path apart (git's `info/refs?service=`), the trie holds one route standing for
//! them all, resolved by `intent::refine`.

mod file;
pub mod route;
mod trie;

use std::collections::HashMap;
use std::sync::Arc;

pub use route::{ByQuery, Match, Piece, Route, Service};

use crate::intent::body::{BodyKind, GRAPHQL};
use crate::intent::class::Class;
use crate::intent::extract::graphql::GraphqlSchema;
use crate::vendors;

/// Everything one host answers to.
#[derive(Debug)]
pub struct Host {
    /// The service answering there.
    pub service: Arc<Service>,
    root: trie::Node,
}

/// The compiled catalog.
#[derive(Debug, Default)]
pub struct Catalog {
    hosts: HashMap<String, Host>,
    operations: usize,
}

/// A catalog file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("service catalog {file}: {reason}")]
pub struct CatalogError {
    /// The file's name.
    pub file: String,
    /// What is wrong with it.
    pub reason: String,
}

impl Catalog {
    /// The catalog compiled into the binary: every vendor's files.
    pub fn embedded() -> Result<Catalog, CatalogError> {
        Catalog::from_files(vendors::catalog_files())
    }

    /// Compiles catalog files given as `(name, json)`.
    pub fn from_files<'a>(
        files: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Catalog, CatalogError> {
        let mut catalog = Catalog::default();
        let mut services: HashMap<String, Arc<Service>> = HashMap::new();
        let mut parsed = Vec::new();
        for (name, text) in files {
            let file: file::File = serde_json::from_str(text).map_err(|e| CatalogError {
                file: name.into(),
                reason: e.to_string(),
            })?;
            parsed.push((name, file));
        }
        // REST files first: they define the service a GraphQL file attaches to.
        parsed.sort_by_key(|(_, f)| f.kind.is_some());
        // GraphQL files attach to the service of the same name; REST files define it.
        let mut graphql: HashMap<String, GraphqlSchema> = HashMap::new();
        for (_, file) in &mut parsed {
            if file.kind.as_deref() == Some("graphql") {
                graphql.insert(
                    file.service.clone(),
                    GraphqlSchema {
                        path: file.path.clone().unwrap_or_else(|| "/graphql".into()),
                        fields: std::mem::take(&mut file.fields),
                    },
                );
            }
        }
        for (name, file) in &parsed {
            let err = |reason: String| CatalogError {
                file: (*name).into(),
                reason,
            };
            let existing = services.get(&file.service).cloned();
            let service = match existing {
                Some(s) if file.default_resource.is_none() => s,
                // A later file with a default resource of its own (github-git.json for
                // github.com) gets a service of the same name answering its hosts' unknown
                // paths with that resource.
                _ => {
                    let (rt, rid) = file
                        .default_resource
                        .as_ref()
                        .map(|r| (r.kind.as_str(), r.id.as_str()))
                        .unwrap_or((file.service.as_str(), ""));
                    let s = Arc::new(Service {
                        name: file.service.as_str().into(),
                        default_resource: (rt.into(), rid.into()),
                        unknown_action: format!("{}.unknown", file.service).into(),
                        graphql: graphql.remove(&file.service),
                        unknown_body: file::shared_body(&file.operations),
                        vendor: vendors::by_service(&file.service),
                    });
                    services.entry(file.service.clone()).or_insert(s.clone());
                    s
                }
            };
            let host_of = |h: &str| h.to_ascii_lowercase();
            for h in &file.hosts {
                catalog.hosts.entry(host_of(h)).or_insert_with(|| Host {
                    service: service.clone(),
                    root: trie::Node::default(),
                });
            }
            // The GraphQL file routes its endpoint; its action comes from the body.
            if let (Some("graphql"), Some(schema)) = (file.kind.as_deref(), &service.graphql) {
                let route = Route {
                    action: format!("{}.graphql", service.name).into(),
                    class: Class::Unknown,
                    service: service.clone(),
                    params: Vec::new(),
                    resource_type: service.default_resource.0.clone(),
                    resource_id: vec![Piece::Text(service.default_resource.1.to_string())],
                    body: Some(BodyKind::of(&GRAPHQL)),
                    template: schema.path.as_str().into(),
                    by_query: None,
                    strip_suffix: Vec::new(),
                };
                let host = file.hosts.first().map(|h| host_of(h)).unwrap_or_default();
                if let Some(host) = catalog.hosts.get_mut(&host) {
                    trie::insert(
                        &mut host.root,
                        &schema.path,
                        trie::MethodKey::One(http::Method::POST),
                        Arc::new(route),
                    )
                    .map_err(|r| err(format!("POST {}: {r}", schema.path)))?;
                }
            }
            for op in &file.operations {
                let host = op
                    .host
                    .as_deref()
                    .or(file.hosts.first().map(String::as_str))
                    .ok_or_else(|| err("a file with operations needs hosts".into()))?;
                let route = file::compile_route(op, &service)
                    .map_err(|r| err(format!("{}: {r}", op.action)))?;
                let method = if op.method == "*" {
                    trie::MethodKey::Any
                } else {
                    trie::MethodKey::One(
                        http::Method::from_bytes(op.method.as_bytes())
                            .map_err(|_| err(format!("{}: bad method {}", op.action, op.method)))?,
                    )
                };
                let host = catalog.hosts.entry(host_of(host)).or_insert_with(|| Host {
                    service: service.clone(),
                    root: trie::Node::default(),
                });
                let inserted = match &op.query {
                    None => trie::insert(&mut host.root, &op.path, method, Arc::new(route)),
                    Some(q) => trie::insert_by_query(&mut host.root, &op.path, method, q, route),
                };
                inserted.map_err(|r| err(format!("{} {}: {r}", op.method, op.path)))?;
                catalog.operations += 1;
            }
        }
        // A GraphQL schema needs a REST file defining its service (name, hosts, resource).
        if let Some((service, _)) = graphql.into_iter().next() {
            return Err(CatalogError {
                file: format!("{service} (graphql)"),
                reason: "no REST catalog file defines this service".into(),
            });
        }
        Ok(catalog)
    }

    /// Number of operations compiled.
    pub fn operations(&self) -> usize {
        self.operations
    }

    /// The service answering on `host` (lowercase), if any.
    pub fn host(&self, host: &str) -> Option<&Host> {
        self.hosts.get(host)
    }
}

impl Host {
    /// Finds the operation for `method` on a normalized `path` (no query, no trailing slash
    /// except the root). Static segments win over parameters, parameters over rest parameters.
    pub fn find(&self, method: &http::Method, path: &str) -> Option<Match<'_>> {
        trie::find(&self.root, method, path)
    }
}
