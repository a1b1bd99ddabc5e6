//! What the SLAP decoders cost in memory, measured under a counting allocator (one test, so no
//! other thread allocates meanwhile): each document shape that costs most for its size —
//! values as small as the format allows, distinct short keys, references fanned out and
//! chained, deep nesting — at sizes just past a container's doublings.
//!
//! - xml_marshaller: at most `marshal::BYTES_PER_WEIGHT` bytes per byte of the weight the
//!   decoder asked its caller to afford (what a SLAP call charges its decode budget);
//! - a call's form and a usage journal: at most `BYTES_PER_BODY_BYTE` per byte of body, the
//!   body itself included (what a SLAP call charges before reading its body).

use master_cluster::slap::definition::computer_definition;
use master_cluster::slap::form::{Form, MAX_FIELDS};
use master_cluster::slap::journal;
use master_cluster::slap::marshal::{self, AFFORD_STEP, BYTES_PER_WEIGHT, MarshalError, Value};
use master_cluster::slap::server::BYTES_PER_BODY_BYTE;
use peak_alloc::PeakAlloc;

#[global_allocator]
static ALLOCATOR: PeakAlloc = PeakAlloc;

/// Runs `work`, returning its result and the most bytes it held at once beyond what was held
/// before (its result included, until dropped by the caller).
fn peak<T>(work: impl FnOnce() -> T) -> (T, u64) {
    let before = ALLOCATOR.current_usage();
    ALLOCATOR.reset_peak_usage();
    let out = work();
    (out, (ALLOCATOR.peak_usage() - before) as u64)
}

/// Decodes `xml` as a SLAP call does: the cost at its peak, and the weight it was afforded.
fn decode(xml: &str) -> (Result<Value, MarshalError>, u64, u64) {
    let mut afforded = AFFORD_STEP;
    let (value, cost) = peak(|| {
        marshal::decode_within(xml, &mut |weight| {
            afforded = afforded.max(weight);
            true
        })
    });
    (value, cost, afforded as u64)
}

fn marshal(inner: &str) -> String {
    format!("<?xml version=\"1.0\"?><marshal>{inner}</marshal>")
}

/// Shapes of `n` elements each.
fn documents(n: usize) -> Vec<(&'static str, String)> {
    let referable = format!("<list id=\"i2\">{}</list>", "<none/>".repeat(64));
    vec![
        (
            "list of none",
            marshal(&format!("<list id=\"i1\">{}</list>", "<none/>".repeat(n))),
        ),
        (
            "tuple of empty tuples",
            marshal(&format!("<tuple>{}</tuple>", "<tuple/>".repeat(n))),
        ),
        (
            "list of one-character strings",
            marshal(&format!(
                "<list id=\"i1\">{}</list>",
                "<string>a</string>".repeat(n)
            )),
        ),
        (
            "dictionary of distinct short keys",
            marshal(&format!(
                "<dictionary id=\"i1\">{}</dictionary>",
                (0..n)
                    .map(|i| format!("<string>{i}</string><none/>"))
                    .collect::<String>()
            )),
        ),
        (
            "references fanned out",
            marshal(&format!(
                "<list id=\"i1\">{referable}{}</list>",
                "<reference id=\"i2\"/>".repeat(n / 64)
            )),
        ),
        (
            "nested lists with ids, unreferenced",
            marshal(&format!(
                "{}<string>{}</string>{}",
                (0..60)
                    .map(|i| format!("<list id=\"i{i}\">"))
                    .collect::<String>(),
                "a".repeat(n),
                "</list>".repeat(60)
            )),
        ),
    ]
}

/// A chain of lists, each holding ten references to the one before: what issue 19's attack
/// sent (a 1 MB string, then three such levels).
fn reference_bomb(levels: usize) -> String {
    let mut xml = format!(
        "<list id=\"i0\"><string>{}</string></list>",
        "a".repeat(1 << 20)
    );
    for level in 1..=levels {
        xml.push_str(&format!(
            "<list id=\"i{level}\">{}</list>",
            format!("<reference id=\"i{}\"/>", level - 1).repeat(10)
        ));
    }
    marshal(&format!("<tuple>{xml}</tuple>"))
}

#[test]
fn slap_decoders_cost_at_most_what_their_calls_charge() {
    let mut worst: f64 = 0.0;
    let mut check = |what: &str, cost: u64, charged: u64| {
        worst = worst.max(cost as f64 / charged as f64);
        assert!(
            cost <= charged,
            "{what}: costs {cost} bytes, charged {charged}"
        );
    };

    for n in (4..18).map(|k| (1usize << k) + 1) {
        for (what, xml) in documents(n) {
            let (value, cost, afforded) = decode(&xml);
            let value = value.unwrap_or_else(|e| panic!("{what} ({n}): {e}"));
            drop(value);
            check(what, cost, BYTES_PER_WEIGHT * afforded);
            if n == (1 << 17) + 1 {
                eprintln!(
                    "marshal, {what}: {} bytes → {cost} bytes held, weighed {afforded}",
                    xml.len()
                );
            }
        }
    }

    // The attack: refused once it weighs MAX_EXPANDED_BYTES, having held at most its charge.
    let bomb = reference_bomb(3);
    let (value, cost, afforded) = decode(&bomb);
    assert!(matches!(value, Err(MarshalError::TooLarge)), "{value:?}");
    eprintln!(
        "marshal, reference bomb: {} bytes → refused, {cost} bytes held at most, weighed {afforded}",
        bomb.len()
    );
    check("reference bomb", cost, BYTES_PER_WEIGHT * afforded);

    // A computer definition read from its decoded document: the definition is built while the
    // document is held, both within the document's charge.
    let partitions = 10_000;
    let xml = marshal(&format!(
        "<dictionary id=\"i1\"><string>reference</string><string>COMP-1</string>\
         <string>address</string><string>10.0.0.1</string>\
         <string>partition_list</string><list id=\"i2\">{}</list></dictionary>",
        (0..partitions)
            .map(|i| format!(
                "<dictionary id=\"p{i}\"><string>reference</string><string>slappart{i}</string>\
                 <string>address_list</string><list id=\"a{i}\"><dictionary id=\"d{i}\">\
                 <string>addr</string><string>10.0.{}.{}</string></dictionary></list>\
                 <string>tap</string><dictionary id=\"t{i}\"><string>name</string>\
                 <string>slaptap{i}</string></dictionary>\
                 <string>user</string><string>slapuser{i}</string></dictionary>",
                i / 256,
                i % 256
            ))
            .collect::<String>()
    ));
    let mut afforded = AFFORD_STEP;
    let (definition, cost) = peak(|| {
        let value = marshal::decode_within(&xml, &mut |weight| {
            afforded = afforded.max(weight);
            true
        })
        .expect("a definition document");
        computer_definition(&value, "COMP-1").map(|d| d.partitions.len())
    });
    assert_eq!(definition, Ok(partitions));
    eprintln!(
        "marshal + definition, {partitions} partitions: {} bytes → {cost} held, weighed {afforded}",
        xml.len()
    );
    check(
        "computer definition",
        cost,
        BYTES_PER_WEIGHT * afforded as u64,
    );

    // A form of the most fields, each as short as can be, and one long one.
    let body = format!(
        "{}&long={}",
        (0..MAX_FIELDS - 1)
            .map(|i| format!("{i}="))
            .collect::<Vec<_>>()
            .join("&"),
        "a".repeat(1 << 20)
    );
    let (form, cost) = peak(|| Form::parse(&body));
    assert!(form.is_ok());
    drop(form);
    eprintln!("form: {} bytes → {cost} held", body.len());
    check(
        "form",
        body.len() as u64 + cost,
        BYTES_PER_BODY_BYTE * body.len() as u64,
    );

    // A usage journal of the shortest movements a report can hold, posted as a form.
    for n in (4..16).map(|k| (1usize << k) + 1) {
        let xml = format!(
            "<?xml version=\"1.0\"?><journal><transaction type=\"Sale Packing List\">\
             <reference>COMP-1</reference>{}</transaction></journal>",
            "<movement><resource>r</resource><reference>p</reference>\
             <quantity>1</quantity></movement>"
                .repeat(n)
        );
        let body = format!("use_string={xml}");
        let (parsed, cost) = peak(|| {
            let form = Form::parse(&body).expect("a form");
            // As `useComputer` reads it: from the form, not copied.
            let xml = form.get("use_string").expect("the journal");
            journal::parse(xml)
                .map(|reports| reports.iter().map(|r| r.movements.len()).sum::<usize>())
        });
        assert_eq!(parsed, Ok(n));
        if n == (1 << 15) + 1 {
            eprintln!(
                "form + journal, {n} movements: {} bytes → {cost} held",
                body.len()
            );
        }
        check(
            "journal",
            body.len() as u64 + cost,
            BYTES_PER_BODY_BYTE * body.len() as u64,
        );
    }
    eprintln!(
        "the costliest shape used {:.0}% of its charge",
        worst * 100.0
    );
}
