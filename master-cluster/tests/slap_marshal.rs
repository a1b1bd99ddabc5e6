//! The xml_marshaller codec and the computer-definition reader under generated input (proptest; `PROPTEST_CASES` sets the
//! number of cases, failures are kept in `proptest-regressions/` and replayed first):
//! every value survives encode → decode unchanged, and no document — arbitrary text, or an
//! encoded value cut, spliced and salted with markup — makes the decoder panic; nor does any
//! value, or any definition with a field replaced by any value, panic the definition reader;
//! nor any text the form and authorization readers. Documents built to amplify (long strings and
//! many small values, fanned out by chains of references, deep in nested containers) decode
//! within the expansion bound, having asked their caller to afford what they hold.

use master_cluster::slap::definition::computer_definition;
use master_cluster::slap::form::{Form, partition_authorization};
use master_cluster::slap::journal;
use master_cluster::slap::marshal::{self, Object, SlapClass, Value};
use proptest::prelude::*;

/// Characters XML 1.0 can carry (and `\r`, which the encoder writes as a reference).
fn text() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            6 => proptest::char::range(' ', '~'),
            1 => Just('\n'),
            1 => Just('\t'),
            1 => Just('\r'),
            1 => proptest::sample::select(vec!['&', '<', '>', '"', '\'', ';', '#']),
            1 => proptest::char::range('\u{a0}', '\u{d7ff}'),
            1 => proptest::char::range('\u{10000}', '\u{10ffff}'),
        ],
        0..12,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

fn class() -> impl Strategy<Value = SlapClass> {
    proptest::sample::select(vec![
        SlapClass::Computer,
        SlapClass::ComputerPartition,
        SlapClass::SoftwareRelease,
        SlapClass::SoftwareInstance,
    ])
}

/// Dictionaries with distinct string keys in sorted order (the order the encoder writes).
fn pairs(inner: BoxedStrategy<Value>) -> impl Strategy<Value = Vec<(Value, Value)>> {
    proptest::collection::btree_map(text(), inner, 0..5)
        .prop_map(|m| m.into_iter().map(|(k, v)| (Value::String(k), v)).collect())
}

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::None),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        any::<f64>()
            .prop_filter("NaN is not equal to itself", |f| !f.is_nan())
            .prop_map(Value::Float),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Tuple),
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::List),
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Set),
            pairs(inner.clone().boxed()).prop_map(Value::Dict),
            (
                class(),
                proptest::collection::vec(inner.clone(), 0..3),
                pairs(inner.boxed())
            )
                .prop_map(|(class, args, attributes)| Value::Object(Object {
                    class,
                    args,
                    attributes,
                })),
        ]
    })
}

/// A journal as `slapos node report` writes it.
const JOURNAL: &str = "<?xml version=\"1.0\"?><journal><transaction type=\"Sale Packing List\"><title>Resource consumptions</title><start_date></start_date><stop_date>2026-11-25 at 04:00:00</stop_date><reference>COMP-1</reference><arrow type=\"Administration\"><source></source></arrow><movement><resource>CPU Consumption</resource><title>CPU of slappart0</title><reference>slappart0</reference><quantity>42.5</quantity><price>0.0</price><VAT>None</VAT><category>cpu</category></movement></transaction></journal>";

/// One change to a document: a cut, a repeated slice, or a piece of markup inserted.
#[derive(Debug, Clone)]
enum Mutation {
    Delete { at: usize, len: usize },
    Repeat { at: usize, len: usize },
    Insert { at: usize, piece: &'static str },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1..20usize).prop_map(|(at, len)| Mutation::Delete { at, len }),
        (any::<usize>(), 1..40usize).prop_map(|(at, len)| Mutation::Repeat { at, len }),
        (
            any::<usize>(),
            proptest::sample::select(vec![
                "<",
                ">",
                "&",
                "&amp;",
                "&#0;",
                "&#xD800;",
                "&bogus;",
                "</",
                "/>",
                "\"",
                "<reference id=\"i2\"/>",
                "<reference id=\"i99\"/>",
                "<int>",
                "</list>",
                "<dictionary id=\"i2\">",
                "<object module=\"os\" class=\"system\">",
                "<!DOCTYPE x>",
                "<![CDATA[",
                "]]>",
                "<?pi?>",
                "\u{0}",
                "é",
            ])
        )
            .prop_map(|(at, piece)| Mutation::Insert { at, piece }),
    ]
}

/// Applies `mutations` at character boundaries of `doc`.
fn mutate(doc: &str, mutations: &[Mutation]) -> String {
    let mut chars: Vec<char> = doc.chars().collect();
    for m in mutations {
        let n = chars.len().max(1);
        match *m {
            Mutation::Delete { at, len } => {
                let at = at % n;
                let end = (at + len).min(chars.len());
                if at < end {
                    chars.drain(at..end);
                }
            }
            Mutation::Repeat { at, len } => {
                let at = at % n;
                let end = (at + len).min(chars.len());
                let slice: Vec<char> = chars.get(at..end).map(<[char]>::to_vec).unwrap_or_default();
                let insert_at = end.min(chars.len());
                chars.splice(insert_at..insert_at, slice);
            }
            Mutation::Insert { at, piece } => {
                let at = (at % n).min(chars.len());
                chars.splice(at..at, piece.chars());
            }
        }
    }
    chars.into_iter().collect()
}

/// What `value` holds in memory at the least: a [`Value`] per value and its text.
fn deep_size(value: &Value) -> usize {
    let own = size_of::<Value>();
    own + match value {
        Value::String(text) => text.len(),
        Value::Tuple(items) | Value::List(items) | Value::Set(items) => {
            items.iter().map(deep_size).sum()
        }
        Value::Dict(pairs) => pairs.iter().map(|(k, v)| deep_size(k) + deep_size(v)).sum(),
        Value::Object(object) => {
            object.args.iter().map(deep_size).sum::<usize>()
                + object
                    .attributes
                    .iter()
                    .map(|(k, v)| deep_size(k) + deep_size(v))
                    .sum::<usize>()
        }
        _ => 0,
    }
}

/// Documents built to amplify: a base container (a long string, or many small values), then
/// levels that each hold several references to the level before, nested in lists with ids.
fn amplifying() -> impl Strategy<Value = String> {
    (
        prop_oneof![
            (0..(256usize << 10)).prop_map(|n| format!("<string>{}</string>", "a".repeat(n))),
            (0..20_000usize).prop_map(|n| "<none/>".repeat(n)),
            (0..5_000usize).prop_map(|n| "<string>k</string><none/>".repeat(n)),
        ],
        proptest::collection::vec(1..40usize, 0..6),
        0..70usize,
    )
        .prop_map(|(base, fan_outs, nesting)| {
            let mut levels = format!("<list id=\"l0\">{base}</list>");
            for (level, fan_out) in fan_outs.iter().enumerate() {
                let reference = format!("<reference id=\"l{level}\"/>");
                levels.push_str(&format!(
                    "<list id=\"l{}\">{}</list>",
                    level + 1,
                    reference.repeat(*fan_out)
                ));
            }
            let open: String = (0..nesting)
                .map(|i| format!("<list id=\"n{i}\">"))
                .collect();
            format!(
                "<marshal>{open}<tuple>{levels}</tuple>{}</marshal>",
                "</list>".repeat(nesting)
            )
        })
}

proptest! {
    // Each case decodes up to 16 MiB of expansion: fewer cases than the other properties.
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// However a document amplifies, its decoded value stays within the decoder's bound (or it
    /// is refused), and the weight it asks its caller to afford grows with it, within the bound
    /// plus one step: the charge of a SLAP call covers what it holds.
    #[test]
    fn amplifying_documents_stay_within_the_expansion_bound(doc in amplifying()) {
        let mut asked = Vec::new();
        let decoded = marshal::decode_within(&doc, &mut |weight| {
            asked.push(weight);
            true
        });
        let most = asked.last().copied().unwrap_or(0);
        prop_assert!(asked.windows(2).all(|w| w[0] < w[1]), "weights asked out of order");
        prop_assert!(most <= marshal::MAX_EXPANDED_BYTES + marshal::AFFORD_STEP);
        match decoded {
            Ok(value) => {
                let size = deep_size(&value);
                prop_assert!(size <= marshal::MAX_EXPANDED_BYTES, "{size} bytes decoded");
                prop_assert!(size <= most, "{size} bytes decoded, {most} afforded");
            }
            Err(e) => prop_assert!(
                matches!(e, marshal::MarshalError::TooLarge | marshal::MarshalError::TooDeep),
                "{e}"
            ),
        }
    }

    /// A caller that cannot afford the next step stops the decoder there.
    #[test]
    fn a_refused_step_stops_the_decoder(doc in amplifying(), allowed in 0..8usize) {
        let mut steps = 0;
        let decoded = marshal::decode_within(&doc, &mut |_| {
            steps += 1;
            steps <= allowed
        });
        if steps > allowed {
            prop_assert_eq!(decoded, Err(marshal::MarshalError::Unaffordable));
        }
    }
}

proptest! {
    #[test]
    fn every_value_survives_a_round_trip(value in value()) {
        let doc = marshal::encode(&value);
        let decoded = marshal::decode(&doc);
        prop_assert_eq!(decoded, Ok(value), "{}", doc);
    }

    #[test]
    fn no_mutated_document_panics_the_decoder(
        value in value(),
        mutations in proptest::collection::vec(mutation(), 1..6),
    ) {
        let doc = mutate(&marshal::encode(&value), &mutations);
        // Ok or a refusal: both fine; a panic fails the test.
        let _ = marshal::decode(&doc);
    }

    #[test]
    fn no_value_panics_the_definition_reader(value in value(), field in value(), key in 0..8usize) {
        let _ = computer_definition(&value, "COMP-1");
        // A plausible definition with one field (or one partition's field) replaced.
        let keys = ["reference", "address", "partition_list", "instance_root"];
        let partition_keys = ["reference", "address_list", "tap", "user"];
        let mut partition = vec![
            ("reference", Value::string("slappart0")),
            ("address_list", Value::List(vec![Value::dict([("addr", Value::string("10.0.0.2"))])])),
            ("tap", Value::dict([("name", Value::string("slaptap0"))])),
            ("user", Value::string("slapuser0")),
        ];
        let mut computer = vec![
            ("reference", Value::string("COMP-1")),
            ("address", Value::string("10.0.0.1")),
            ("instance_root", Value::string("/srv/slapgrid")),
        ];
        if key < 4 {
            computer.retain(|(k, _)| *k != keys[key]);
            computer.push((keys[key], field));
        } else {
            partition.retain(|(k, _)| *k != partition_keys[key - 4]);
            partition.push((partition_keys[key - 4], field));
        }
        if !computer.iter().any(|(k, _)| *k == "partition_list") {
            computer.push(("partition_list", Value::List(vec![Value::dict(partition)])));
        }
        let _ = computer_definition(&Value::dict(computer), "COMP-1");
    }

    #[test]
    fn no_mutated_journal_panics_its_reader(mutations in proptest::collection::vec(mutation(), 1..6)) {
        let doc = mutate(JOURNAL, &mutations);
        let _ = journal::parse(&doc);
    }

    #[test]
    fn no_arbitrary_text_panics_the_decoder(doc in "\\PC{0,200}") {
        let _ = journal::parse(&doc);
        let _ = Form::parse(&doc);
        let _ = partition_authorization(Some(&doc));
        let _ = marshal::decode(&doc);
        let _ = marshal::decode(&format!("<marshal>{doc}</marshal>"));
    }
}
