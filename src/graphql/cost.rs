//! What a document costs once its fragment spreads are expanded, computed in time linear
//! in the document. async-graphql's own passes (the parser's recursion check, and the
//! validation visitors) walk a fragment again at every spread, with no memo: a document of
//! 32 fragments that each spread the next one twice asks them for 2^32 steps. Here each
//! fragment is costed once and its cost reused at every spread, so the service can refuse
//! such a document before any of those passes runs.

use std::collections::HashMap;

use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};

/// A document's size after expansion. Counts saturate at `u64::MAX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DocumentCost {
    /// Fields, inline fragments, fragment spreads and directives, each fragment counted
    /// at every spread: what the library's passes will walk.
    pub selections: u64,
    /// Fields alone (aliases included, `__typename` too), fragments expanded.
    pub fields: u64,
    /// Deepest chain of fields, as the depth limit counts it.
    pub field_depth: u64,
    /// Deepest chain of selection sets, fragments and inline fragments included: what the
    /// parser's recursion check counts.
    pub nesting: u64,
    /// Most directives on one selection.
    pub directives_on_one: u64,
    /// Whether `__schema` or `__type` is asked for anywhere.
    pub introspects: bool,
    /// Selections visited to compute all this: at most the document's own selection count
    /// (each fragment body is walked once). Kept so tests can check the bound.
    pub work: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CostError {
    /// A fragment spreads itself, directly or through others (names along the cycle).
    FragmentCycle(Vec<String>),
}

/// The cost of one selection set, fragments expanded.
#[derive(Debug, Clone, Copy, Default)]
struct SetCost {
    selections: u64,
    fields: u64,
    field_depth: u64,
    nesting: u64,
}

enum Visit {
    InProgress,
    Done(SetCost),
}

struct Costing<'a> {
    doc: &'a ExecutableDocument,
    fragments: HashMap<&'a str, Visit>,
    /// Fragment names on the current spread path, to name a cycle.
    path: Vec<&'a str>,
    directives_on_one: u64,
    introspects: bool,
    work: u64,
}

pub fn cost(doc: &ExecutableDocument) -> Result<DocumentCost, CostError> {
    let mut costing = Costing {
        doc,
        fragments: HashMap::new(),
        path: Vec::new(),
        directives_on_one: 0,
        introspects: false,
        work: 0,
    };
    let mut total = SetCost::default();
    for (_, operation) in doc.operations.iter() {
        let directives = operation.node.directives.len() as u64;
        costing.directives_on_one = costing.directives_on_one.max(directives);
        let set = costing.set(&operation.node.selection_set.node)?;
        total.selections = total
            .selections
            .saturating_add(set.selections)
            .saturating_add(directives);
        total.fields = total.fields.saturating_add(set.fields);
        total.field_depth = total.field_depth.max(set.field_depth);
        total.nesting = total.nesting.max(set.nesting);
    }
    // Fragments no operation spreads are still walked by validation (once each).
    let unused: Vec<&str> = doc
        .fragments
        .keys()
        .map(|name| name.as_str())
        .filter(|name| !costing.fragments.contains_key(name))
        .collect();
    for name in unused {
        let set = costing.fragment(name)?;
        total.selections = total.selections.saturating_add(set.selections);
    }
    Ok(DocumentCost {
        selections: total.selections,
        fields: total.fields,
        field_depth: total.field_depth,
        nesting: total.nesting,
        directives_on_one: costing.directives_on_one,
        introspects: costing.introspects,
        work: costing.work,
    })
}

impl<'a> Costing<'a> {
    fn set(&mut self, set: &'a SelectionSet) -> Result<SetCost, CostError> {
        let mut cost = SetCost::default();
        for selection in &set.items {
            self.work += 1;
            let directives = selection.node.directives().len() as u64;
            self.directives_on_one = self.directives_on_one.max(directives);
            let (inner, is_field) = match &selection.node {
                Selection::Field(field) => {
                    let name = field.node.name.node.as_str();
                    self.introspects |= name == "__schema" || name == "__type";
                    let inner = self.set(&field.node.selection_set.node)?;
                    (inner, true)
                }
                Selection::InlineFragment(inline) => {
                    (self.set(&inline.node.selection_set.node)?, false)
                }
                Selection::FragmentSpread(spread) => {
                    (self.fragment(&spread.node.fragment_name.node)?, false)
                }
            };
            cost.selections = cost
                .selections
                .saturating_add(1 + directives)
                .saturating_add(inner.selections);
            cost.fields = cost
                .fields
                .saturating_add(u64::from(is_field))
                .saturating_add(inner.fields);
            cost.field_depth = cost
                .field_depth
                .max(u64::from(is_field) + inner.field_depth);
            // The recursion check does not descend into a field without a selection set.
            let opens_a_set = !is_field || !selection_set_is_empty(&selection.node);
            if opens_a_set {
                cost.nesting = cost.nesting.max(1 + inner.nesting);
            }
        }
        Ok(cost)
    }

    fn fragment(&mut self, name: &'a str) -> Result<SetCost, CostError> {
        match self.fragments.get(name) {
            Some(Visit::Done(cost)) => return Ok(*cost),
            Some(Visit::InProgress) => {
                let start = self.path.iter().position(|n| *n == name).unwrap_or(0);
                let mut cycle: Vec<String> =
                    self.path[start..].iter().map(|n| n.to_string()).collect();
                cycle.push(name.to_owned());
                return Err(CostError::FragmentCycle(cycle));
            }
            None => {}
        }
        // An unknown fragment costs nothing here; validation names it.
        let Some((key, fragment)) = self.doc.fragments.get_key_value(name) else {
            return Ok(SetCost::default());
        };
        let name = key.as_str();
        self.fragments.insert(name, Visit::InProgress);
        self.path.push(name);
        let directives = fragment.node.directives.len() as u64;
        self.directives_on_one = self.directives_on_one.max(directives);
        let cost = self.set(&fragment.node.selection_set.node)?;
        self.path.pop();
        self.fragments.insert(name, Visit::Done(cost));
        Ok(cost)
    }
}

fn selection_set_is_empty(selection: &Selection) -> bool {
    match selection {
        Selection::Field(field) => field.node.selection_set.node.items.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_graphql::parser::parse_query;
    use proptest::prelude::*;

    fn cost_of(query: &str) -> DocumentCost {
        cost(&parse_query(query).expect("test documents parse")).expect("no cycle")
    }

    /// `{ ...F0 } fragment F0 on QueryRoot { ...F1 ...F1 } … fragment F<levels> { __typename }`
    fn doubling(levels: usize, spreads: usize) -> String {
        let mut query = String::from("{ ...F0 }");
        for level in 0..levels {
            let next = format!("...F{} ", level + 1).repeat(spreads);
            query.push_str(&format!(" fragment F{level} on QueryRoot {{ {next}}}"));
        }
        query.push_str(&format!(
            " fragment F{levels} on QueryRoot {{ __typename }}"
        ));
        query
    }

    #[test]
    fn plain_queries_cost_what_they_show() {
        let cost = cost_of("{ me { id email } a: me { id } products(first: 3) { nodes { id } } }");
        assert_eq!(cost.fields, 8);
        assert_eq!(cost.selections, 8);
        assert_eq!(cost.field_depth, 3);
        assert_eq!(cost.nesting, 2);
        assert!(!cost.introspects);
    }

    #[test]
    fn fragment_doubling_is_counted_in_full_but_walked_once() {
        let cost = cost_of(&doubling(31, 2));
        // 2^31 leaves, plus every spread on the way down.
        assert_eq!(cost.fields, 1 << 31);
        assert_eq!(cost.selections, (1u64 << 31) + (1u64 << 32) - 2 + 1);
        assert_eq!(cost.nesting, 32);
        assert!(cost.work <= 2 * 31 + 2, "work {}", cost.work);
    }

    #[test]
    fn counts_saturate_instead_of_overflowing() {
        let cost = cost_of(&doubling(70, 2));
        assert_eq!(cost.fields, u64::MAX);
        assert_eq!(cost.selections, u64::MAX);
    }

    #[test]
    fn cycles_are_named() {
        let doc = parse_query(
            "{ ...A } fragment A on QueryRoot { ...B } fragment B on QueryRoot { me { ...A } }",
        )
        .unwrap();
        assert_eq!(
            cost(&doc),
            Err(CostError::FragmentCycle(vec![
                "A".into(),
                "B".into(),
                "A".into()
            ]))
        );
        let unused = parse_query("{ me { id } } fragment C on QueryRoot { ...C }").unwrap();
        assert!(matches!(cost(&unused), Err(CostError::FragmentCycle(_))));
    }

    #[test]
    fn directives_and_introspection_are_seen_inside_fragments() {
        let cost = cost_of(
            "{ ...F } fragment F on QueryRoot { __schema @include(if: true) @skip(if: false) { types { name } } }",
        );
        assert!(cost.introspects);
        assert_eq!(cost.directives_on_one, 2);
    }

    /// A generated document: fragment `i` spreads only fragments with a larger index (so
    /// there is no cycle), with a few fields and an inline fragment around some spreads.
    #[derive(Debug, Clone)]
    struct Graph {
        /// For each fragment: (fields, spreads of later fragments, inline-wrapped?)
        fragments: Vec<(usize, Vec<usize>, bool)>,
    }

    fn graph(max_fragments: usize, max_spreads: usize) -> impl Strategy<Value = Graph> {
        (1..=max_fragments)
            .prop_flat_map(move |n| {
                let fragment = move |i: usize| {
                    let later = if i + 1 < n {
                        prop::collection::vec(i + 1..n, 0..=max_spreads).boxed()
                    } else {
                        Just(Vec::new()).boxed()
                    };
                    (0..3usize, later, any::<bool>())
                };
                (0..n).map(fragment).collect::<Vec<_>>()
            })
            .prop_map(|fragments| Graph { fragments })
    }

    impl Graph {
        /// The operation spreads every fragment, so none is unused.
        fn document(&self) -> String {
            let spreads: String = (0..self.fragments.len())
                .map(|i| format!("...F{i} "))
                .collect();
            let mut query = format!("{{ {spreads}}}");
            for (i, (fields, spreads, inline)) in self.fragments.iter().enumerate() {
                let mut body = String::new();
                for f in 0..*fields {
                    body.push_str(&format!("f{f}: __typename "));
                }
                for s in spreads {
                    body.push_str(&format!("...F{s} "));
                }
                if *inline {
                    body = format!("... on QueryRoot {{ {body}__typename }}");
                }
                if body.is_empty() {
                    body.push_str("__typename");
                }
                query.push_str(&format!(" fragment F{i} on QueryRoot {{ {body} }}"));
            }
            query
        }
    }

    /// The slow way: expand every spread again, as the library's passes do.
    fn reference(doc: &ExecutableDocument, set: &SelectionSet) -> (u64, u64, u64) {
        let (mut selections, mut fields, mut nesting) = (0u64, 0u64, 0u64);
        for selection in &set.items {
            selections += 1 + selection.node.directives().len() as u64;
            let (inner, is_field) = match &selection.node {
                Selection::Field(field) => (reference(doc, &field.node.selection_set.node), true),
                Selection::InlineFragment(inline) => {
                    (reference(doc, &inline.node.selection_set.node), false)
                }
                Selection::FragmentSpread(spread) => {
                    let fragment = &doc.fragments[&spread.node.fragment_name.node];
                    (reference(doc, &fragment.node.selection_set.node), false)
                }
            };
            selections += inner.0;
            fields += u64::from(is_field) + inner.1;
            if !is_field || !selection_set_is_empty(&selection.node) {
                nesting = nesting.max(1 + inner.2);
            }
        }
        (selections, fields, nesting)
    }

    fn written_selections(doc: &ExecutableDocument) -> u64 {
        fn count(set: &SelectionSet) -> u64 {
            set.items
                .iter()
                .map(|selection| {
                    1 + match &selection.node {
                        Selection::Field(field) => count(&field.node.selection_set.node),
                        Selection::InlineFragment(inline) => count(&inline.node.selection_set.node),
                        Selection::FragmentSpread(_) => 0,
                    }
                })
                .sum()
        }
        let operations: u64 = doc
            .operations
            .iter()
            .map(|(_, op)| count(&op.node.selection_set.node))
            .sum();
        let fragments: u64 = doc
            .fragments
            .values()
            .map(|f| count(&f.node.selection_set.node))
            .sum();
        operations + fragments
    }

    proptest! {
        // Large documents take a while to parse in a debug build; a few dozen suffice.
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn agrees_with_the_slow_expansion_on_small_documents(graph in graph(7, 3)) {
            let doc = parse_query(graph.document()).unwrap();
            let fast = cost(&doc).unwrap();
            let slow = reference(&doc, &doc.operations.iter().next().unwrap().1.node.selection_set.node);
            prop_assert_eq!((fast.selections, fast.fields, fast.nesting), slow);
        }

        #[test]
        fn work_stays_linear_on_large_documents(graph in graph(300, 6)) {
            let doc = parse_query(graph.document()).unwrap();
            let fast = cost(&doc).unwrap();
            // Each written selection is visited once, however often its fragment is spread.
            prop_assert!(fast.work <= written_selections(&doc), "work {} for {} written", fast.work, written_selections(&doc));
        }
    }
}
