//! The op graph: vertices identified by the digest of their definition.
//!
//! A vertex's [`VertexDigest`] is BLAKE3 over a versioned canonical
//! encoding:
//!
//! | part | bytes |
//! |---|---|
//! | domain | `kiln.solver.v1\0vertex\0` |
//! | op | length (u64 LE) + canonical JSON of the [`Op`] |
//! | inputs | count (u64 LE) + each input's 32-byte digest, in order |
//!
//! [`OpMetadata`] is not hashed. Adding a vertex whose digest is already in
//! the graph returns the existing vertex, so identical subgraphs collapse.
//! Since a vertex can only name inputs that already exist, a graph built
//! with [`Graph::add`] is acyclic; definitions loaded with
//! [`Graph::from_definition`] are checked.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::op::{Op, OpError, OpMetadata};

/// Version tag of the vertex-digest encoding and of [`Definition`].
/// Bump it whenever the canonical encoding of an op changes.
pub const DEFINITION_VERSION: &str = "kiln.solver.v1";

const VERTEX_DOMAIN: &[u8] = b"kiln.solver.v1\0vertex\0";
const OP_DOMAIN: &[u8] = b"kiln.solver.v1\0op\0";

/// BLAKE3 digest identifying a vertex: its op and, transitively, all its
/// inputs.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VertexDigest([u8; 32]);

impl VertexDigest {
    /// Length of [`VertexDigest::short`].
    pub const SHORT_LEN: usize = 12;

    /// The digest of raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> VertexDigest {
        VertexDigest(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The full lowercase hex form (64 characters).
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 12 hex characters, for display.
    pub fn short(&self) -> String {
        let mut s = self.hex();
        s.truncate(Self::SHORT_LEN);
        s
    }
}

impl fmt::Display for VertexDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

impl fmt::Debug for VertexDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VertexDigest({})", self.short())
    }
}

/// A string is not 64 lowercase hex characters.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid vertex digest {input:?}: expected 64 lowercase hex characters")]
pub struct ParseDigestError {
    pub input: String,
}

impl FromStr for VertexDigest {
    type Err = ParseDigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseDigestError {
            input: s.to_owned(),
        };
        if s.len() != 64 || s.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(err());
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| err())?;
        Ok(VertexDigest(out))
    }
}

impl Serialize for VertexDigest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.hex())
    }
}

impl<'de> Deserialize<'de> for VertexDigest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Handle of a vertex within one [`Graph`]. Not meaningful in another
/// graph; use [`VertexDigest`] to refer to a vertex across graphs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VertexId(usize);

impl fmt::Display for VertexId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

/// One vertex: an op, the digests of its inputs and its metadata.
/// Independent of any graph, so it can be shared (`Arc`) with executors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vertex {
    digest: VertexDigest,
    op_digest: VertexDigest,
    op: Op,
    inputs: Vec<VertexDigest>,
    meta: OpMetadata,
}

impl Vertex {
    /// Builds a vertex and computes its digests. Does not validate the op.
    pub fn new(op: Op, inputs: Vec<VertexDigest>, meta: OpMetadata) -> Vertex {
        let json = serde_json::to_vec(&op).expect("op definitions always serialize to JSON");
        let mut h = blake3::Hasher::new();
        h.update(OP_DOMAIN);
        h.update(&json);
        let op_digest = VertexDigest(*h.finalize().as_bytes());

        let mut h = blake3::Hasher::new();
        h.update(VERTEX_DOMAIN);
        h.update(&(json.len() as u64).to_le_bytes());
        h.update(&json);
        h.update(&(inputs.len() as u64).to_le_bytes());
        for input in &inputs {
            h.update(&input.0);
        }
        let digest = VertexDigest(*h.finalize().as_bytes());
        Vertex {
            digest,
            op_digest,
            op,
            inputs,
            meta,
        }
    }

    /// Digest of the op and all its inputs.
    pub fn digest(&self) -> VertexDigest {
        self.digest
    }

    /// Digest of the op definition alone, without its inputs. Cache keys
    /// combine it with the inputs' cache keys, so an input whose content is
    /// unchanged does not invalidate its consumers.
    pub fn op_digest(&self) -> VertexDigest {
        self.op_digest
    }

    pub fn op(&self) -> &Op {
        &self.op
    }

    /// Digests of the inputs, in input-index order (may repeat).
    pub fn inputs(&self) -> &[VertexDigest] {
        &self.inputs
    }

    pub fn meta(&self) -> &OpMetadata {
        &self.meta
    }

    /// The display name: the `llb.customname` description, else the op
    /// kind and its salient fields (at most 80 characters).
    pub fn name(&self) -> String {
        if let Some(name) = self.meta.name() {
            return name.to_owned();
        }
        let mut s = format!("{} {}", self.op.kind(), self.op.summary());
        if s.chars().count() > 80 {
            s = s.chars().take(77).collect::<String>() + "...";
        }
        s.trim_end().to_owned()
    }

    fn merge_meta(&mut self, other: &OpMetadata) {
        self.meta.ignore_cache |= other.ignore_cache;
        for (k, v) in &other.description {
            self.meta
                .description
                .entry(k.clone())
                .or_insert_with(|| v.clone());
        }
        if self.meta.progress_group.is_none() {
            self.meta.progress_group.clone_from(&other.progress_group);
        }
    }
}

/// The graph is malformed or an operation on it is invalid.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error("vertex {0} is not in this graph")]
    UnknownVertex(VertexId),
    #[error("invalid {kind} op")]
    InvalidOp {
        kind: &'static str,
        #[source]
        source: OpError,
    },
    #[error("the graph has a cycle")]
    Cyclic,
    #[error("unsupported definition version {found:?} (expected {expected:?})")]
    UnsupportedVersion {
        found: String,
        expected: &'static str,
    },
    #[error("vertex {} names input {}, which does not precede it in the definition", digest.short(), input.short())]
    MissingInput {
        digest: VertexDigest,
        input: VertexDigest,
    },
    #[error("vertex {} recomputes to digest {}", declared.short(), computed.short())]
    DigestMismatch {
        declared: VertexDigest,
        computed: VertexDigest,
    },
    #[error("vertex {} appears twice in the definition", .0.short())]
    DuplicateVertex(VertexDigest),
    #[error("malformed definition JSON")]
    Json(#[from] serde_json::Error),
}

#[derive(Clone, Debug)]
struct Node {
    vertex: Arc<Vertex>,
    inputs: Vec<VertexId>,
    /// The vertices that take this one as an input (once per use).
    consumers: Vec<VertexId>,
}

/// A DAG of vertices, deduplicated by digest. A vertex can only be added
/// after its inputs, so the graph is acyclic by construction; vertices are
/// never removed, and a [`VertexId`] is an index into the graph's nodes.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    nodes: Vec<Node>,
    by_digest: HashMap<VertexDigest, VertexId>,
}

impl Graph {
    pub fn new() -> Graph {
        Graph::default()
    }

    /// Adds a vertex running `op` on `inputs` (in order) and returns its
    /// id. If a vertex with the same digest exists, returns that one and
    /// merges the metadata into it (`ignore_cache` if either asks for it;
    /// existing descriptions win).
    pub fn add(
        &mut self,
        op: Op,
        inputs: Vec<VertexId>,
        meta: OpMetadata,
    ) -> Result<VertexId, GraphError> {
        op.validate(inputs.len())
            .map_err(|source| GraphError::InvalidOp {
                kind: op.kind(),
                source,
            })?;
        let mut input_digests = Vec::with_capacity(inputs.len());
        for &input in &inputs {
            input_digests.push(self.vertex(input)?.digest());
        }
        let vertex = Vertex::new(op, input_digests, meta);
        Ok(self.insert(Arc::new(vertex), inputs))
    }

    /// Inserts a vertex whose inputs are known to be in the graph and to
    /// match `vertex.inputs()`.
    fn insert(&mut self, vertex: Arc<Vertex>, inputs: Vec<VertexId>) -> VertexId {
        if let Some(&id) = self.by_digest.get(&vertex.digest) {
            let node = &mut self.nodes[id.0];
            if node.vertex.meta != vertex.meta {
                Arc::make_mut(&mut node.vertex).merge_meta(&vertex.meta);
            }
            return id;
        }
        let digest = vertex.digest;
        let id = VertexId(self.nodes.len());
        for input in &inputs {
            self.nodes[input.0].consumers.push(id);
        }
        self.nodes.push(Node {
            vertex,
            inputs,
            consumers: Vec::new(),
        });
        self.by_digest.insert(digest, id);
        id
    }

    /// The vertex with this id.
    pub fn vertex(&self, id: VertexId) -> Result<&Arc<Vertex>, GraphError> {
        self.nodes
            .get(id.0)
            .map(|n| &n.vertex)
            .ok_or(GraphError::UnknownVertex(id))
    }

    /// The ids of a vertex's inputs, in input-index order.
    pub fn inputs(&self, id: VertexId) -> Result<&[VertexId], GraphError> {
        self.nodes
            .get(id.0)
            .map(|n| n.inputs.as_slice())
            .ok_or(GraphError::UnknownVertex(id))
    }

    /// The id of the vertex with this digest.
    pub fn id_of(&self, digest: &VertexDigest) -> Option<VertexId> {
        self.by_digest.get(digest).copied()
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Whether the graph has a cycle: never, as inputs precede their
    /// consumers; kept as a guard that the canonical order exists.
    pub fn is_cyclic(&self) -> bool {
        self.topo_order().is_err()
    }

    /// All vertices in a canonical topological order: inputs before their
    /// consumers, ties broken by digest, so the order depends only on the
    /// graph's content and not on the order vertices were added.
    pub fn topo_order(&self) -> Result<Vec<VertexId>, GraphError> {
        self.topo_order_of(None)
    }

    fn topo_order_of(&self, only: Option<&HashSet<usize>>) -> Result<Vec<VertexId>, GraphError> {
        let included = |n: usize| only.is_none_or(|set| set.contains(&n));
        let mut pending: HashMap<usize, usize> = HashMap::new();
        let mut ready = BinaryHeap::new();
        for n in (0..self.nodes.len()).filter(|&n| included(n)) {
            let indegree = self.nodes[n].inputs.len();
            if indegree == 0 {
                ready.push(Reverse((self.nodes[n].vertex.digest, n)));
            } else {
                pending.insert(n, indegree);
            }
        }
        let mut order = Vec::with_capacity(pending.len() + ready.len());
        while let Some(Reverse((_, n))) = ready.pop() {
            order.push(VertexId(n));
            for consumer in &self.nodes[n].consumers {
                let consumer = consumer.0;
                if let Some(count) = pending.get_mut(&consumer) {
                    *count -= 1;
                    if *count == 0 {
                        pending.remove(&consumer);
                        ready.push(Reverse((self.nodes[consumer].vertex.digest, consumer)));
                    }
                }
            }
        }
        if pending.is_empty() {
            Ok(order)
        } else {
            Err(GraphError::Cyclic)
        }
    }

    /// The vertices the `targets` depend on (targets included), in
    /// canonical topological order. Only these need evaluating.
    pub fn reachable(&self, targets: &[VertexId]) -> Result<Vec<VertexId>, GraphError> {
        let mut seen = HashSet::new();
        let mut stack = Vec::new();
        for &t in targets {
            self.vertex(t)?;
            if seen.insert(t.0) {
                stack.push(t.0);
            }
        }
        while let Some(n) = stack.pop() {
            for input in &self.nodes[n].inputs {
                if seen.insert(input.0) {
                    stack.push(input.0);
                }
            }
        }
        self.topo_order_of(Some(&seen))
    }

    /// A new graph holding only the vertices the `targets` depend on.
    /// Vertex ids differ from this graph's; digests are the same.
    pub fn subgraph_for(&self, targets: &[VertexId]) -> Result<Graph, GraphError> {
        let mut sub = Graph::new();
        let mut map = HashMap::new();
        for id in self.reachable(targets)? {
            let node = &self.nodes[id.0];
            let inputs = node.inputs.iter().map(|i| map[i]).collect();
            let new_id = sub.insert(node.vertex.clone(), inputs);
            map.insert(id, new_id);
        }
        Ok(sub)
    }

    /// A stable text dump, one line per vertex in canonical topological
    /// order: short digest, op kind, inputs' short digests, salient fields
    /// and the display name.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        let order = match self.topo_order() {
            Ok(order) => order,
            Err(_) => return "<cyclic graph>\n".to_owned(),
        };
        for id in order {
            let v = &self.nodes[id.0].vertex;
            out.push_str(&v.digest.short());
            out.push(' ');
            out.push_str(v.op.kind());
            if !v.inputs.is_empty() {
                let inputs: Vec<String> = v.inputs.iter().map(VertexDigest::short).collect();
                out.push_str(&format!(" [{}]", inputs.join(" ")));
            }
            let summary = v.op.summary();
            if !summary.is_empty() {
                out.push(' ');
                out.push_str(&summary);
            }
            if let Some(name) = v.meta.name() {
                out.push_str(&format!(" name={name:?}"));
            }
            if v.meta.ignore_cache {
                out.push_str(" no-cache");
            }
            out.push('\n');
        }
        out
    }

    /// The graph as a serializable [`Definition`], vertices in canonical
    /// topological order (so equal graphs give equal definitions).
    pub fn to_definition(&self) -> Definition {
        let order = self
            .topo_order()
            .expect("graphs built through Graph::add are acyclic");
        Definition {
            version: DEFINITION_VERSION.to_owned(),
            vertices: order
                .into_iter()
                .map(|id| {
                    let v = &self.nodes[id.0].vertex;
                    DefinitionVertex {
                        digest: v.digest,
                        op: v.op.clone(),
                        inputs: v.inputs.clone(),
                        meta: v.meta.clone(),
                    }
                })
                .collect(),
        }
    }

    /// Rebuilds a graph from a definition, checking its version, that every
    /// input precedes its consumer (so the graph is acyclic), that each op
    /// is valid and that every declared digest matches the recomputed one.
    pub fn from_definition(def: &Definition) -> Result<Graph, GraphError> {
        if def.version != DEFINITION_VERSION {
            return Err(GraphError::UnsupportedVersion {
                found: def.version.clone(),
                expected: DEFINITION_VERSION,
            });
        }
        let mut graph = Graph::new();
        for dv in &def.vertices {
            if graph.by_digest.contains_key(&dv.digest) {
                return Err(GraphError::DuplicateVertex(dv.digest));
            }
            let inputs = dv
                .inputs
                .iter()
                .map(|input| {
                    graph.id_of(input).ok_or(GraphError::MissingInput {
                        digest: dv.digest,
                        input: *input,
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            dv.op
                .validate(inputs.len())
                .map_err(|source| GraphError::InvalidOp {
                    kind: dv.op.kind(),
                    source,
                })?;
            let vertex = Vertex::new(dv.op.clone(), dv.inputs.clone(), dv.meta.clone());
            if vertex.digest != dv.digest {
                return Err(GraphError::DigestMismatch {
                    declared: dv.digest,
                    computed: vertex.digest,
                });
            }
            graph.insert(Arc::new(vertex), inputs);
        }
        Ok(graph)
    }
}

/// The serialized form of a graph.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Definition {
    /// Always [`DEFINITION_VERSION`].
    pub version: String,
    /// Every input precedes its consumers.
    pub vertices: Vec<DefinitionVertex>,
}

/// One vertex of a [`Definition`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefinitionVertex {
    pub digest: VertexDigest,
    pub op: Op,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<VertexDigest>,
    #[serde(default, skip_serializing_if = "OpMetadata::is_empty")]
    pub meta: OpMetadata,
}

impl Definition {
    /// Canonical compact JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("definitions always serialize to JSON")
    }

    /// Indented JSON, for humans.
    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).expect("definitions always serialize to JSON")
    }

    pub fn from_json(json: &str) -> Result<Definition, GraphError> {
        Ok(serde_json::from_str(json)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::{ExecMount, ExecOp, MergeOp, SourceOp};

    fn image(r: &str) -> Op {
        Op::Source(SourceOp::Image {
            reference: r.to_owned(),
            platform: "linux/amd64".to_owned(),
            resolved_digest: None,
        })
    }

    fn run(cmd: &str) -> Op {
        Op::Exec(ExecOp {
            args: vec!["sh".into(), "-c".into(), cmd.into()],
            cwd: "/".into(),
            mounts: vec![ExecMount::root(0)],
            ..ExecOp::default()
        })
    }

    #[test]
    fn identical_vertices_collapse_and_metadata_is_not_hashed() {
        let mut g = Graph::new();
        let a = g
            .add(image("alpine"), vec![], OpMetadata::named("FROM alpine"))
            .unwrap();
        let b = g
            .add(image("alpine"), vec![], OpMetadata::default())
            .unwrap();
        assert_eq!(a, b);
        assert_eq!(g.len(), 1);
        let r1 = g
            .add(run("make"), vec![a], OpMetadata::named("one"))
            .unwrap();
        let mut no_cache = OpMetadata::named("two");
        no_cache.ignore_cache = true;
        let r2 = g.add(run("make"), vec![a], no_cache).unwrap();
        assert_eq!(r1, r2);
        let v = g.vertex(r1).unwrap();
        assert_eq!(v.name(), "one");
        assert!(v.meta().ignore_cache);
    }

    #[test]
    fn digest_covers_inputs_and_their_order() {
        let mut g = Graph::new();
        let a = g.add(image("a"), vec![], OpMetadata::default()).unwrap();
        let b = g.add(image("b"), vec![], OpMetadata::default()).unwrap();
        let ab = g
            .add(Op::Merge(MergeOp {}), vec![a, b], OpMetadata::default())
            .unwrap();
        let ba = g
            .add(Op::Merge(MergeOp {}), vec![b, a], OpMetadata::default())
            .unwrap();
        assert_ne!(ab, ba);
        let vab = g.vertex(ab).unwrap();
        let vba = g.vertex(ba).unwrap();
        assert_ne!(vab.digest(), vba.digest());
        assert_eq!(vab.op_digest(), vba.op_digest());
        let ra = g.add(run("x"), vec![a], OpMetadata::default()).unwrap();
        let rb = g.add(run("x"), vec![b], OpMetadata::default()).unwrap();
        assert_ne!(
            g.vertex(ra).unwrap().digest(),
            g.vertex(rb).unwrap().digest()
        );
    }

    #[test]
    fn add_rejects_unknown_inputs_and_invalid_ops() {
        let mut g = Graph::new();
        let mut other = Graph::new();
        other
            .add(image("a"), vec![], OpMetadata::default())
            .unwrap();
        let foreign = other
            .add(image("b"), vec![], OpMetadata::default())
            .unwrap();
        assert!(matches!(
            g.add(run("x"), vec![foreign], OpMetadata::default()),
            Err(GraphError::UnknownVertex(_))
        ));
        assert!(matches!(
            g.add(run("x"), vec![], OpMetadata::default()),
            Err(GraphError::InvalidOp { kind: "exec", .. })
        ));
    }

    #[test]
    fn reachability_and_subgraph() {
        let mut g = Graph::new();
        let base = g.add(image("a"), vec![], OpMetadata::default()).unwrap();
        let used = g
            .add(run("used"), vec![base], OpMetadata::default())
            .unwrap();
        let unused = g
            .add(run("unused"), vec![base], OpMetadata::default())
            .unwrap();
        let reach = g.reachable(&[used]).unwrap();
        assert_eq!(reach, vec![base, used]);
        let sub = g.subgraph_for(&[used]).unwrap();
        assert_eq!(sub.len(), 2);
        let unused_digest = g.vertex(unused).unwrap().digest();
        assert!(sub.id_of(&unused_digest).is_none());
        let used_digest = g.vertex(used).unwrap().digest();
        assert!(sub.id_of(&used_digest).is_some());
        assert!(!sub.is_cyclic());
    }

    #[test]
    fn topo_order_does_not_depend_on_insertion_order() {
        let build = |flip: bool| {
            let mut g = Graph::new();
            let names = if flip { ["b", "a"] } else { ["a", "b"] };
            let x = g
                .add(image(names[0]), vec![], OpMetadata::default())
                .unwrap();
            let y = g
                .add(image(names[1]), vec![], OpMetadata::default())
                .unwrap();
            let (a, b) = if flip { (y, x) } else { (x, y) };
            g.add(Op::Merge(MergeOp {}), vec![a, b], OpMetadata::default())
                .unwrap();
            g
        };
        assert_eq!(build(false).dump(), build(true).dump());
        assert_eq!(
            build(false).to_definition().to_json(),
            build(true).to_definition().to_json()
        );
    }

    #[test]
    fn digest_parses_and_rejects() {
        let d = Vertex::new(image("a"), vec![], OpMetadata::default()).digest();
        assert_eq!(d.hex().parse::<VertexDigest>().unwrap(), d);
        assert_eq!(d.short().len(), 12);
        assert!("abc".parse::<VertexDigest>().is_err());
        assert!(d.hex().to_uppercase().parse::<VertexDigest>().is_err());
    }

    #[test]
    fn from_definition_checks_digests_order_and_version() {
        let mut g = Graph::new();
        let a = g.add(image("a"), vec![], OpMetadata::default()).unwrap();
        g.add(run("x"), vec![a], OpMetadata::default()).unwrap();
        let def = g.to_definition();

        let mut bad = def.clone();
        bad.version = "kiln.solver.v0".into();
        assert!(matches!(
            Graph::from_definition(&bad),
            Err(GraphError::UnsupportedVersion { .. })
        ));

        let mut reversed = def.clone();
        reversed.vertices.reverse();
        assert!(matches!(
            Graph::from_definition(&reversed),
            Err(GraphError::MissingInput { .. })
        ));

        let mut tampered = def.clone();
        tampered.vertices[1].op = run("y");
        assert!(matches!(
            Graph::from_definition(&tampered),
            Err(GraphError::DigestMismatch { .. })
        ));

        let mut dup = def.clone();
        dup.vertices.push(dup.vertices[0].clone());
        assert!(matches!(
            Graph::from_definition(&dup),
            Err(GraphError::DuplicateVertex(_))
        ));
    }
}
