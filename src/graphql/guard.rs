//! Limits every GraphQL request meets before the GraphQL library parses it.
//!
//! The parser (and serde, for variables) recurse once per nesting level:
//! a 4 KB document of 2,000 nested list brackets overflowed a worker's
//! stack and aborted the whole process, long before the library's own
//! `limit_recursive_depth` could look at the parsed document. So the
//! request is first measured here by loops that do not recurse:
//!
//! - the query text: at most [`MAX_DOCUMENT_BYTES`] bytes, and brackets,
//!   braces and parentheses nested at most [`MAX_NESTING`] deep (strings,
//!   block strings and comments do not count);
//! - the variables: arrays and objects nested at most [`MAX_NESTING`] deep
//!   (on HTTP, the raw body is measured before serde reads it).
//!
//! A refusal is a GraphQL error with `extensions.code`
//! `GRAPHQL_DOCUMENT_TOO_DEEP` or `GRAPHQL_DOCUMENT_TOO_LARGE`. HTTP and
//! WebSocket requests both go through [`Endpoint`], which applies them.
//!
//! [`check_request`] and [`parse_http_body`] are public so that the fuzz
//! targets run the server's own code.
use std::any::TypeId;
use std::sync::Arc;

use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, Selection, SelectionSet,
};
use async_graphql::{
    Data, Executor, Request, Response, ServerError, Value as ConstValue, Variables,
};
use futures::stream::BoxStream;
use futures::StreamExt;

use super::{BuktorSchema, RequestInfo};
use crate::auth::Principal;

/// The deepest nesting of `(`, `[` and `{` a document may have, and of
/// arrays and objects in its variables. The deepest query the schema
/// answers (12 levels of selection, see `MAX_DEPTH`) and the standard
/// introspection query (13 levels of braces) stay below it. The parser's
/// stack grows with it: at 64, the deepest admitted document overflowed
/// 512 KiB in a debug build (a worker thread has 2 MiB); at 32 it fits
/// (see the test below).
pub const MAX_NESTING: usize = 32;

/// The longest query text, in bytes. Generated clients' documents are a
/// few kilobytes and the standard introspection query is 1.6 KB; the
/// complexity limit (`MAX_COMPLEXITY`) is reached by documents of 70 KB
/// and more, which must still be parsed to answer that error.
pub const MAX_DOCUMENT_BYTES: usize = 128 * 1024;

/// Why a request was refused before parsing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the {what} nests deeper than {MAX_NESTING} levels")]
    TooDeep { what: &'static str },
    #[error("the query is {bytes} bytes long; at most {MAX_DOCUMENT_BYTES} are accepted")]
    TooLarge { bytes: usize },
}

impl Refusal {
    /// The stable `extensions.code`.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::TooDeep { .. } => "GRAPHQL_DOCUMENT_TOO_DEEP",
            Refusal::TooLarge { .. } => "GRAPHQL_DOCUMENT_TOO_LARGE",
        }
    }

    pub fn server_error(&self) -> ServerError {
        coded_error(self.to_string(), self.code())
    }

    /// A whole response carrying only this refusal.
    pub fn response(&self) -> Response {
        Response::from_errors(vec![self.server_error()])
    }
}

/// A GraphQL error with `extensions.code`.
pub fn coded_error(message: impl Into<String>, code: &str) -> ServerError {
    let mut e = ServerError::new(message, None);
    let mut ext = async_graphql::ErrorExtensionValues::default();
    ext.set("code", code);
    e.extensions = Some(ext);
    e
}

/// Checks a request's query text and variables (as JSON) against the limits.
pub fn check_request(query: &str, variables: Option<&serde_json::Value>) -> Result<(), Refusal> {
    check_document(query)?;
    if let Some(v) = variables {
        if json_value_depth(v) > MAX_NESTING {
            return Err(Refusal::TooDeep { what: "variables" });
        }
    }
    Ok(())
}

/// Checks the query text alone: its size and its nesting.
pub fn check_document(query: &str) -> Result<(), Refusal> {
    if query.len() > MAX_DOCUMENT_BYTES {
        return Err(Refusal::TooLarge { bytes: query.len() });
    }
    if document_nesting_exceeds(query.as_bytes(), MAX_NESTING) {
        return Err(Refusal::TooDeep { what: "query" });
    }
    Ok(())
}

/// What a POST body to `/graphql` can be refused as.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Not a GraphQL request in JSON.
    #[error("the body is not a GraphQL request in JSON: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error(transparent)]
    Refused(#[from] Refusal),
}

/// A POST body as a GraphQL request, within the limits. The body's JSON
/// nesting is measured before serde reads it (the variables sit one level
/// below the top-level object).
pub fn parse_http_body(body: &[u8]) -> Result<Request, BodyError> {
    if json_nesting_exceeds(body, MAX_NESTING + 1) {
        return Err(Refusal::TooDeep { what: "variables" }.into());
    }
    let request: Request = serde_json::from_slice(body)?;
    check_document(&request.query)?;
    check_variables(&request.variables)?;
    Ok(request)
}

/// Checks variables already read (a WebSocket message is read by the
/// GraphQL library, within serde_json's own recursion limit of 128).
pub fn check_variables(variables: &Variables) -> Result<(), Refusal> {
    let deepest = variables.values().map(const_value_depth).max().unwrap_or(0);
    // The variables object itself is the first level.
    if deepest + 1 > MAX_NESTING {
        return Err(Refusal::TooDeep { what: "variables" });
    }
    Ok(())
}

/// Whether `(`, `[` and `{` nest deeper than `limit` anywhere in a GraphQL
/// document, outside strings, block strings and comments. Unbalanced or
/// malformed text is left to the parser: this only measures.
fn document_nesting_exceeds(text: &[u8], limit: usize) -> bool {
    let mut depth = 0usize;
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'#' => {
                while i < text.len() && text[i] != b'\n' && text[i] != b'\r' {
                    i += 1;
                }
            }
            b'"' if text[i..].starts_with(b"\"\"\"") => {
                // A block string ends at the first `"""` not escaped as `\"""`.
                i += 3;
                while i < text.len() {
                    if text[i..].starts_with(b"\\\"\"\"") {
                        i += 4;
                    } else if text[i..].starts_with(b"\"\"\"") {
                        i += 3;
                        break;
                    } else {
                        i += 1;
                    }
                }
                continue;
            }
            b'"' => {
                // A string ends at an unescaped `"` or, unterminated, at a line end.
                i += 1;
                while i < text.len() {
                    match text[i] {
                        b'\\' => i += 2,
                        b'"' => {
                            i += 1;
                            break;
                        }
                        b'\n' | b'\r' => break,
                        _ => i += 1,
                    }
                }
                continue;
            }
            b'(' | b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    false
}

/// Whether arrays and objects nest deeper than `limit` in JSON text,
/// outside strings. Malformed JSON is left to serde.
pub fn json_nesting_exceeds(text: &[u8], limit: usize) -> bool {
    let mut depth = 0usize;
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'"' => {
                i += 1;
                while i < text.len() {
                    match text[i] {
                        b'\\' => i += 2,
                        b'"' => break,
                        _ => i += 1,
                    }
                }
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    false
}

/// The nesting of a JSON value (a scalar is 0, `[]` is 1), without recursion.
fn json_value_depth(value: &serde_json::Value) -> usize {
    use serde_json::Value as J;
    let mut deepest = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((v, depth)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &serde_json::Value>> = match v {
            J::Array(items) => Box::new(items.iter()),
            J::Object(map) => Box::new(map.values()),
            _ => continue,
        };
        deepest = deepest.max(depth + 1);
        stack.extend(children.map(|c| (c, depth + 1)));
    }
    deepest
}

/// The nesting of a GraphQL value, as [`json_value_depth`].
fn const_value_depth(value: &ConstValue) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((v, depth)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &ConstValue>> = match v {
            ConstValue::List(items) => Box::new(items.iter()),
            ConstValue::Object(map) => Box::new(map.values()),
            _ => continue,
        };
        deepest = deepest.max(depth + 1);
        stack.extend(children.map(|c| (c, depth + 1)));
    }
    deepest
}

/// Checks one operation before it runs, with what the connection or
/// request carries (the WebSocket counts each operation against the
/// caller's rate limit here).
pub type Admission = Arc<dyn Fn(&Data) -> Result<(), ServerError> + Send + Sync>;

/// The GraphQL endpoint: the schema, behind the limits above, for HTTP and
/// WebSocket alike.
///
/// An operation that selects only introspection fields (`__schema`,
/// `__type`, `__typename`) at its root runs on a twin of the schema whose
/// depth limit is [`super::INTROSPECTION_MAX_DEPTH`]: the standard
/// introspection query that GraphiQL, graphql-codegen, Apollo and gql send
/// nests `ofType` nine levels deep, deeper than any data query may
/// (`super::MAX_DEPTH`). Everything else, including the complexity limit,
/// is the same.
#[derive(Clone)]
pub struct Endpoint {
    schema: BuktorSchema,
    introspection: BuktorSchema,
    admission: Option<Admission>,
}

impl Endpoint {
    pub(crate) fn new(schema: BuktorSchema, introspection: BuktorSchema) -> Self {
        Endpoint {
            schema,
            introspection,
            admission: None,
        }
    }

    /// This endpoint, checking every operation with `admission` first.
    pub fn with_admission(&self, admission: Admission) -> Self {
        Endpoint {
            admission: Some(admission),
            ..self.clone()
        }
    }

    /// The schema for `request`, after parsing it (which the limits make
    /// safe); an error if a string in it holds a NUL. A document that does
    /// not parse goes to the main schema, which answers the parse error.
    fn route(&self, request: &mut Request) -> Result<&BuktorSchema, ServerError> {
        let operation_name = request.operation_name.clone();
        let variables = request.variables.clone();
        let Ok(doc) = request.parsed_query() else {
            return Ok(&self.schema);
        };
        if let Some(field) = document_with_nul(doc, &variables) {
            return Err(nul_error(&field));
        }
        let only_introspection = |set: &SelectionSet| {
            set.items.iter().all(|s| match &s.node {
                Selection::Field(f) => {
                    matches!(
                        f.node.name.node.as_str(),
                        "__schema" | "__type" | "__typename"
                    )
                }
                _ => false,
            })
        };
        let introspection = match &doc.operations {
            DocumentOperations::Single(op) => only_introspection(&op.node.selection_set.node),
            // Named operations: only the one that will run matters (the
            // only one, without `operationName`; the library refuses
            // several without it anyway).
            DocumentOperations::Multiple(ops) => match operation_name.as_deref() {
                Some(name) => ops
                    .iter()
                    .find(|(n, _)| n.as_str() == name)
                    .is_some_and(|(_, op)| only_introspection(&op.node.selection_set.node)),
                None if ops.len() == 1 => ops
                    .values()
                    .all(|op| only_introspection(&op.node.selection_set.node)),
                None => false,
            },
        };
        Ok(if introspection {
            &self.introspection
        } else {
            &self.schema
        })
    }

    /// What POST `/graphql` answers an authenticated caller for `body`:
    /// the body read within the limits ([`parse_http_body`]), run as
    /// `principal`, every error carrying an `extensions.code` (the library's
    /// own parse and validation errors have none). The route and the fuzz
    /// target (`fuzz/fuzz_targets/graphql_request.rs`) both run this.
    pub async fn answer_http_body(
        &self,
        body: &[u8],
        principal: Principal,
        info: RequestInfo,
    ) -> Result<Response, BodyError> {
        let request = parse_http_body(body)?;
        let mut response = self
            .execute_checked(request.data(principal).data(info))
            .await;
        for err in &mut response.errors {
            let ext = err.extensions.get_or_insert_with(Default::default);
            if ext.get("code").is_none() {
                ext.set("code", "GRAPHQL_VALIDATION_FAILED");
            }
        }
        Ok(response)
    }

    /// Runs one request that [`parse_http_body`] admitted.
    pub async fn execute_checked(&self, mut request: Request) -> Response {
        match self.route(&mut request) {
            Ok(schema) => schema.clone().execute(request).await,
            Err(e) => Response::from_errors(vec![e]),
        }
    }

    fn admit(&self, request: &Request, session: Option<&Data>) -> Result<(), ServerError> {
        check_document(&request.query)
            .and_then(|()| check_variables(&request.variables))
            .map_err(|r| r.server_error())?;
        if let Some(admission) = &self.admission {
            let empty = Data::default();
            admission(session.unwrap_or(&empty))?;
        }
        Ok(())
    }
}

/// PostgreSQL cannot store a NUL in text and no input of this API means
/// one: it is refused here, for every argument, before any resolver runs.
fn nul_error(field: &str) -> ServerError {
    let mut e = coded_error(
        format!("{field}: must not contain a NUL character"),
        "INVALID_INPUT",
    );
    if let Some(ext) = e.extensions.as_mut() {
        ext.set("field", field);
    }
    e
}

/// The path of the first string holding a NUL in `value` (keys and list
/// indexes after `at`), without recursion.
fn value_with_nul(at: String, value: &ConstValue) -> Option<String> {
    let mut stack = vec![(at, value)];
    while let Some((path, v)) = stack.pop() {
        match v {
            ConstValue::String(s) if s.contains('\0') => return Some(path),
            ConstValue::List(items) => stack.extend(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (format!("{path}.{i}"), v)),
            ),
            ConstValue::Object(map) => {
                for (k, v) in map {
                    if k.contains('\0') {
                        return Some(path);
                    }
                    stack.push((format!("{path}.{k}"), v));
                }
            }
            _ => {}
        }
    }
    None
}

/// The argument (as `argument.key…`) of the first string holding a NUL
/// anywhere in the document (fields, directives, variable defaults), with
/// the request's variables in place: the error names the argument, as the
/// resolvers' own checks do.
fn document_with_nul(doc: &ExecutableDocument, variables: &Variables) -> Option<String> {
    let mut sets: Vec<&SelectionSet> = Vec::new();
    let mut arguments = Vec::new();
    for (_, op) in doc.operations.iter() {
        sets.push(&op.node.selection_set.node);
        for var in &op.node.variable_definitions {
            if let Some(default) = &var.node.default_value {
                if let Some(path) = value_with_nul(var.node.name.node.to_string(), &default.node) {
                    return Some(path);
                }
            }
        }
        arguments.extend(op.node.directives.iter().flat_map(|d| &d.node.arguments));
    }
    for fragment in doc.fragments.values() {
        sets.push(&fragment.node.selection_set.node);
        arguments.extend(
            fragment
                .node
                .directives
                .iter()
                .flat_map(|d| &d.node.arguments),
        );
    }
    while let Some(set) = sets.pop() {
        for selection in &set.items {
            match &selection.node {
                Selection::Field(f) => {
                    arguments.extend(&f.node.arguments);
                    arguments.extend(f.node.directives.iter().flat_map(|d| &d.node.arguments));
                    sets.push(&f.node.selection_set.node);
                }
                Selection::FragmentSpread(s) => {
                    arguments.extend(s.node.directives.iter().flat_map(|d| &d.node.arguments));
                }
                Selection::InlineFragment(i) => {
                    arguments.extend(i.node.directives.iter().flat_map(|d| &d.node.arguments));
                    sets.push(&i.node.selection_set.node);
                }
            }
        }
    }
    arguments.into_iter().find_map(|(name, value)| {
        let value = value
            .node
            .clone()
            .into_const_with(|var| {
                Ok::<_, std::convert::Infallible>(
                    variables.get(&var).cloned().unwrap_or(ConstValue::Null),
                )
            })
            .ok()?;
        value_with_nul(name.node.to_string(), &value)
    })
}

/// A value of type `T` that `data` holds.
pub fn data_get<T: 'static>(data: &Data) -> Option<&T> {
    data.get(&TypeId::of::<T>())
        .and_then(|d| d.downcast_ref::<T>())
}

impl Executor for Endpoint {
    async fn execute(&self, request: Request) -> Response {
        if let Err(e) = self.admit(&request, Some(&request.data)) {
            return Response::from_errors(vec![e]);
        }
        self.execute_checked(request).await
    }

    fn execute_stream(
        &self,
        mut request: Request,
        session_data: Option<Arc<Data>>,
    ) -> BoxStream<'static, Response> {
        if let Err(e) = self.admit(&request, session_data.as_deref()) {
            return futures::stream::once(async move { Response::from_errors(vec![e]) }).boxed();
        }
        match self.route(&mut request) {
            Ok(schema) => Executor::execute_stream(schema, request, session_data),
            Err(e) => futures::stream::once(async move { Response::from_errors(vec![e]) }).boxed(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(open: &str, inner: &str, close: &str, n: usize) -> String {
        format!("{}{inner}{}", open.repeat(n), close.repeat(n))
    }

    #[test]
    fn deep_lists_objects_and_selections_are_refused_before_parsing() {
        let list = format!(
            "{{ events(types: {}) {{ nodes {{ type }} }} }}",
            nested("[", "\"x\"", "]", 2_000)
        );
        assert_eq!(
            check_request(&list, None).unwrap_err().code(),
            "GRAPHQL_DOCUMENT_TOO_DEEP"
        );
        let object = format!(
            "mutation {{ configureEmbedding(input: {}) {{ id }} }}",
            nested("{x: ", "1", "}", 3_000)
        );
        assert!(check_request(&object, None).is_err());
        let selections = nested("{ a ", "b", "}", 100);
        assert!(check_request(&selections, None).is_err());
    }

    #[test]
    fn strings_block_strings_and_comments_do_not_count() {
        let deep = "[".repeat(1_000);
        for doc in [
            format!("{{ a(x: \"{deep}\") }}"),
            format!("{{ a(x: \"\\\"{deep}\") }}"),
            format!("{{ a(x: \"\"\"{deep} \\\"\"\" {deep}\"\"\") }}"),
            format!("# {deep}\n{{ a }}"),
        ] {
            assert_eq!(check_request(&doc, None), Ok(()), "{doc}");
        }
        // After a string ends, brackets count again.
        let doc = format!("{{ a(x: \"s\", y: {}) }}", nested("[", "1", "]", 100));
        assert!(check_request(&doc, None).is_err());
    }

    #[test]
    fn the_limit_is_exact() {
        let ok = nested("[", "1", "]", MAX_NESTING);
        assert_eq!(check_document(&ok), Ok(()));
        let over = nested("[", "1", "]", MAX_NESTING + 1);
        assert!(check_document(&over).is_err());
    }

    #[test]
    fn deep_variables_are_refused_in_json_and_in_the_body() {
        let deep: serde_json::Value =
            serde_json::from_str(&nested("[", "1", "]", 100)).expect("JSON");
        let vars = serde_json::json!({ "v": deep });
        assert!(check_request("{ a }", Some(&vars)).is_err());
        let body = format!(
            "{{\"query\": \"{{ a }}\", \"variables\": {{\"v\": {}}}}}",
            nested("[", "1", "]", 2_000)
        );
        assert!(matches!(
            parse_http_body(body.as_bytes()),
            Err(BodyError::Refused(Refusal::TooDeep { .. }))
        ));
        let fine = format!(
            "{{\"query\": \"{{ a }}\", \"variables\": {{\"v\": {}}}}}",
            nested("[", "1", "]", MAX_NESTING - 1)
        );
        assert!(parse_http_body(fine.as_bytes()).is_ok());
        // Brackets inside JSON strings do not count.
        let strings = format!(
            "{{\"query\": \"{{ a }}\", \"variables\": {{\"v\": \"{}\\\"\"}}}}",
            "[".repeat(1_000)
        );
        assert!(parse_http_body(strings.as_bytes()).is_ok());
    }

    /// What the limits admit parses on a small stack: the parsers recurse
    /// once per level, and a worker thread has 2 MiB (tokio's default).
    /// The deepest admitted shapes must leave most of it for the resolvers.
    #[test]
    fn the_deepest_admitted_request_parses_within_a_quarter_of_a_worker_stack() {
        let list = format!(
            "{{ events(types: {}) {{ nodes {{ type }} }} }}",
            // `{` and `(` come first.
            nested("[", "\"x\"", "]", MAX_NESTING - 2)
        );
        let object = format!(
            "mutation {{ configureEmbedding(input: {}) {{ id }} }}",
            nested("{x: ", "1", "}", MAX_NESTING - 2)
        );
        let selections = nested("{ a ", "b", "}", MAX_NESTING);
        let body = format!(
            "{{\"query\": \"{{ a }}\", \"variables\": {{\"v\": {}}}}}",
            nested("[", "1", "]", MAX_NESTING - 1)
        );
        for doc in [&list, &object, &selections] {
            assert_eq!(check_document(doc), Ok(()));
        }
        std::thread::Builder::new()
            .stack_size(512 * 1024)
            .spawn(move || {
                for doc in [list, object, selections] {
                    async_graphql::parser::parse_query(&doc).expect("parses");
                }
                parse_http_body(body.as_bytes()).expect("admitted");
            })
            .unwrap()
            .join()
            .expect("no overflow");
    }

    #[test]
    fn a_long_query_is_refused() {
        let doc = format!("{{ {} }}", "a ".repeat(MAX_DOCUMENT_BYTES));
        assert_eq!(
            check_request(&doc, None).unwrap_err().code(),
            "GRAPHQL_DOCUMENT_TOO_LARGE"
        );
    }
}
