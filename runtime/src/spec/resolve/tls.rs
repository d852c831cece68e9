//! `tls:` of the pipeline and of its nodes → each node's [`TlsFiles`], and
//! the control calls' `admins`.

use serde_saphyr::Spanned;

use super::Ctx;
use crate::spec::raw::{RawNodeTls, RawTls};
use crate::spec::{Node, SpecError, TlsFiles};

/// One file setting: the node's own, else the pipeline's; with the field
/// path and the value.
fn pick<'a>(
    node: Option<&'a Option<Spanned<String>>>,
    pipeline: Option<&'a Option<Spanned<String>>>,
    node_field: &str,
    name: &str,
) -> Option<(String, &'a Spanned<String>)> {
    match (
        node.and_then(Option::as_ref),
        pipeline.and_then(Option::as_ref),
    ) {
        (Some(v), _) => Some((format!("{node_field}.{name}"), v)),
        (None, Some(v)) => Some((format!("tls.{name}"), v)),
        (None, None) => None,
    }
}

/// Sets `nodes[i].tls` from the pipeline's `tls` and each node's own
/// (`node_tls`, by node name; empty when the spec names no nodes), and
/// returns the admins. Every node has TLS or none does.
pub(super) fn resolve_tls(
    cx: &Ctx<'_>,
    pipeline: Option<&Spanned<RawTls>>,
    node_tls: &[(String, Option<Spanned<RawNodeTls>>)],
    nodes: &mut [Node],
) -> Result<Vec<String>, SpecError> {
    let mut admins = Vec::new();
    if let Some(p) = pipeline {
        for (i, a) in p.value.admins.iter().enumerate() {
            let name = a.value.trim();
            if name.is_empty() || name.chars().any(char::is_whitespace) {
                return Err(cx.at(
                    a,
                    format!("tls.admins[{i}]"),
                    format!("`{}` is not a client identity (a certificate's common name, DNS name or URI, without spaces)", a.value),
                ));
            }
            admins.push(name.to_owned());
        }
    }
    let mut first_plain: Option<String> = None;
    let mut first_tls: Option<(String, String, serde_saphyr::Location)> = None;
    for node in nodes.iter_mut() {
        let own = node_tls
            .iter()
            .find(|(n, _)| *n == node.name)
            .and_then(|(_, t)| t.as_ref());
        if own.is_none() && pipeline.is_none() {
            first_plain.get_or_insert_with(|| node.name.clone());
            continue;
        }
        let node_field = format!("nodes.{}.tls", node.name);
        // Where a missing file is reported: the node's own `tls`, else the
        // pipeline's.
        let (at, at_field) = match (own, pipeline) {
            (Some(o), _) => (o.referenced, node_field.clone()),
            (None, Some(p)) => (p.referenced, "tls".to_owned()),
            (None, None) => continue,
        };
        let file = |name: &str| {
            let (field, v) = pick(
                own.map(|o| match name {
                    "cert" => &o.value.cert,
                    "key" => &o.value.key,
                    _ => &o.value.ca,
                }),
                pipeline.map(|p| match name {
                    "cert" => &p.value.cert,
                    "key" => &p.value.key,
                    _ => &p.value.ca,
                }),
                &node_field,
                name,
            )
            .ok_or_else(|| {
                SpecError::field(
                    cx.file,
                    crate::spec::Position::from_location(&at),
                    at_field.clone(),
                    format!(
                        "node `{}` has no TLS `{name}`: a node with TLS needs `cert`, `key` and `ca` (its own or the pipeline's `tls`)",
                        node.name
                    ),
                )
            })?;
            if v.value.trim().is_empty() {
                return Err(cx.at(v, field, "must name a PEM file"));
            }
            Ok(cx.base_dir().join(&v.value))
        };
        let files = TlsFiles {
            cert: file("cert")?,
            key: file("key")?,
            ca: file("ca")?,
        };
        first_tls.get_or_insert_with(|| (node.name.clone(), at_field.clone(), at));
        node.tls = Some(files);
    }
    if let (Some(plain), Some((secure, field, at))) = (first_plain, first_tls) {
        return Err(SpecError::field(
            cx.file,
            crate::spec::Position::from_location(&at),
            field,
            format!(
                "node `{secure}` has TLS but node `{plain}` has none: links between them would fail; give every node `tls`, or set it once at the pipeline's `tls`"
            ),
        ));
    }
    Ok(admins)
}
