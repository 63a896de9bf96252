//! The standing fuzz harness: what a community spec or a provider's answer can put in front of
//! the engine, generated, must never panic, abort or hang it.
//!
//! Four targets, each fed by a generator that knows the shape of what it attacks:
//!
//! - the spec loader, on the catalog's real specs with random edits (bytes cut, repeated,
//!   inserted from YAML's syntax characters);
//! - JSONPath compilation and evaluation, on paths built from the RFC 9535 grammar (nested
//!   filters, descendants, unions, functions), run on random JSON documents;
//! - template and condition compilation and rendering, on expressions built from minijinja's
//!   grammar (operator chains, filters, loops, ranges, string repetition);
//! - the body decoders (JSON, JSON lines, CSV, XML, form), on text from each format's syntax
//!   characters and on deep nesting.
//!
//! `cargo test --test fuzz` runs a bounded number of cases of each (`HYPERNET_FUZZ_CASES`,
//! default 200) and fails on the first panic. The hour-long run that SECURITY.md reports is the
//! ignored test, which counts cases, panics and slow cases (a case over 5 s is reported as a
//! hang) instead of stopping at the first:
//!
//! ```sh
//! HYPERNET_FUZZ_SECONDS=3600 cargo test -p hypernet-tests --test fuzz -- --ignored --nocapture
//! ```
//!
//! An abort (a stack overflow) ends the process, which is itself the finding: the run prints
//! the target and case it was on before each case, when `HYPERNET_FUZZ_TRACE` is set.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use engine::decode::{Decoder, FramePosition, decode, document::Document};
use engine::extract::{CompiledPath, Target};
use engine::spec::{Decode, SpecSource, Split};
use engine::template::Templates;
use hypernet_tests::connector_specs;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};

/// A case slower than this counts as a hang in the long run.
const HANG: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// Generators

/// An edit of a spec's text.
#[derive(Debug, Clone)]
enum Edit {
    Cut { at: usize, len: usize },
    Repeat { at: usize, len: usize, times: usize },
    Insert { at: usize, text: String },
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let syntax = "[\\[\\]{}:,\\-|>&*!'\"#\\n $.?@()%~a-z0-9\t\\\\]{1,12}";
    let edit = prop_oneof![
        (any::<usize>(), 1..64usize).prop_map(|(at, len)| Edit::Cut { at, len }),
        (any::<usize>(), 1..256usize, 2..40usize).prop_map(|(at, len, times)| Edit::Repeat {
            at,
            len,
            times
        }),
        (any::<usize>(), syntax).prop_map(|(at, text)| Edit::Insert { at, text }),
    ];
    prop::collection::vec(edit, 1..6)
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut bytes = text.as_bytes().to_vec();
    for edit in edits {
        let at = |at: usize, len: usize| at % (len + 1);
        match edit {
            Edit::Cut { at: position, len } => {
                let start = at(*position, bytes.len());
                let end = (start + len).min(bytes.len());
                bytes.drain(start..end);
            }
            Edit::Repeat {
                at: position,
                len,
                times,
            } => {
                let start = at(*position, bytes.len());
                let end = (start + len).min(bytes.len());
                let piece = bytes[start..end].to_vec();
                for _ in 0..*times {
                    bytes.splice(end..end, piece.iter().copied());
                }
            }
            Edit::Insert { at: position, text } => {
                let start = at(*position, bytes.len());
                bytes.splice(start..start, text.bytes());
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A JSONPath from the RFC 9535 grammar, filters nested up to `depth`.
fn json_path() -> impl Strategy<Value = String> {
    let name = "[a-z_@][a-z0-9_]{0,6}";
    let literal = prop_oneof![
        Just("1".to_owned()),
        Just("-0.5e3".to_owned()),
        Just("true".to_owned()),
        Just("null".to_owned()),
        "'[a-z\\\\'\\]\\[$@., ]{0,6}'",
    ]
    .boxed();
    let relative = (name, prop::collection::vec(selector_text(), 0..3))
        .prop_map(|(name, rest)| format!("@.{name}{}", rest.concat()))
        .boxed();
    let comparison = (relative.clone(), "(==|!=|<|<=|>|>=)", literal.clone())
        .prop_map(|(left, op, right)| format!("{left} {op} {right}"));
    let function = prop_oneof![
        relative
            .clone()
            .prop_map(|path| format!("length({path}) > 1")),
        relative
            .clone()
            .prop_map(|path| format!("count({path}[*]) == 2")),
        relative
            .clone()
            .prop_map(|path| format!("match({path}, '[a-z]+')")),
        relative
            .clone()
            .prop_map(|path| format!("search({path}, 'a.*')")),
        relative
            .clone()
            .prop_map(|path| format!("value({path}) == 1")),
    ];
    let atom = prop_oneof![comparison, function, relative.clone()];
    let expression = atom.prop_recursive(6, 48, 4, move |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} && {b}")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} || {b}")),
            inner.clone().prop_map(|a| format!("!({a})")),
            inner.clone().prop_map(|a| format!("({a})")),
            (relative.clone(), inner.clone()).prop_map(|(path, a)| format!("{path}[?{a}]")),
            inner.prop_map(|a| format!("$[?{a}]")),
        ]
    });
    let segment = prop_oneof![
        4 => selector_text(),
        1 => expression.prop_map(|filter| format!("[?{filter}]")),
        1 => "\\.\\.[a-z*]{1,3}".prop_map(|text| text),
        1 => "\\[('[a-z]'|\\*|[0-9]|-1|1:3|::-1)(,('[a-z]'|\\*|[0-9]))*\\]",
    ];
    prop_oneof![
        prop::collection::vec(segment, 0..8).prop_map(|segments| format!("${}", segments.concat())),
        // Anything at all from the path alphabet.
        "[$@.\\[\\]*?()'\",:=!<>&| a-z0-9-]{0,120}",
    ]
}

fn selector_text() -> BoxedStrategy<String> {
    prop_oneof![
        "\\.[a-z]{1,5}".prop_map(|text| text),
        Just("[*]".to_owned()),
        Just(".*".to_owned()),
        (0..5u8).prop_map(|index| format!("[{index}]")),
        "\\['[a-z@ .]{1,5}'\\]".prop_map(|text| text),
    ]
    .boxed()
}

/// A random JSON document, nested up to a few levels.
fn json_document() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(serde_json::Value::from),
        "[a-z ]{0,8}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(5, 256, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::Array),
            prop::collection::vec(("[a-z@]{1,3}", inner), 0..8)
                .prop_map(|members| { serde_json::Value::Object(members.into_iter().collect()) }),
        ]
    })
}

/// A template from minijinja's grammar.
fn template() -> impl Strategy<Value = String> {
    let atom = prop_oneof![
        "record\\.[a-z]{1,4}".prop_map(|text| text),
        "[0-9]{1,6}".prop_map(|text| text),
        "'[a-z%{}]{0,5}'".prop_map(|text| text),
        Just("range(100000)".to_owned()),
        Just("none".to_owned()),
        Just("[1, 2, 3]".to_owned()),
        Just("{'a': 1}".to_owned()),
    ];
    let expression = atom.prop_recursive(6, 64, 4, |inner| {
        prop_oneof![
            (inner.clone(), "( \\+ | - | \\* | / | // | % | \\*\\* | ~ | == | < | and | or | in )", inner.clone())
                .prop_map(|(a, op, b)| format!("{a}{op}{b}")),
            inner.clone().prop_map(|a| format!("-{a}")),
            inner.clone().prop_map(|a| format!("not {a}")),
            inner.clone().prop_map(|a| format!("({a})")),
            (inner.clone(), "(upper|lower|length|join|default|int|float|list|first|last|tojson|urlencode|unknownfilter)")
                .prop_map(|(a, filter)| format!("{a}|{filter}")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} if {b} else 1")),
        ]
    });
    prop_oneof![
        3 => expression.clone().prop_map(|e| format!("x{{{{ {e} }}}}y")),
        1 => (expression.clone(), expression.clone())
            .prop_map(|(items, body)| format!("{{% for i in {items} %}}{{{{ {body} }}}}{{% endfor %}}")),
        1 => (expression.clone(), expression).prop_map(|(a, b)| format!("{{% if {a} %}}{{{{ {b} }}}}{{% endif %}}")),
        1 => "[{}%#|()\\[\\]'\"~+*/ a-z0-9.,:=<>!-]{0,200}",
        1 => (1..5000usize, "[-(\\[]|not ").prop_map(|(times, unit)| format!("{{{{ {}1 }}}}", unit.repeat(times))),
    ]
}

/// A body in (or near) one of the formats the engine decodes.
fn body() -> impl Strategy<Value = (Decode, Vec<u8>)> {
    let format = prop_oneof![
        Just(Decode::Json),
        Just(Decode::Jsonl),
        Just(Decode::Csv),
        Just(Decode::Xml),
        Just(Decode::Form),
        Just(Decode::Email),
        Just(Decode::Ical),
        Just(Decode::Vcard),
        Just(Decode::Gpx),
    ];
    let text = prop_oneof![
        // Content lines (iCalendar, vCard): components, parameters, quotes, escapes, folds.
        "(((BEGIN|END):V[A-Z]{0,6}|[A-Z-]{1,8}(;[A-Z]{1,4}=\"?[a-z,:;]{0,5}\"?)?:[a-z\\\\,;]{0,10}|[ \t][a-z]{0,5})\r?\n){0,40}",
        // Messages and mbox files: envelopes, headers, encoded words, MIME boundaries.
        "((From [a-z@ ]{0,10}|>From x|[A-Za-z-]{1,12}: [a-z<>@\",;=?/ ]{0,30}|Content-Type: multipart/mixed; boundary=b|--b(--)?|=\\?[a-zA-Z0-9-]{0,8}\\?[BQbq]\\?[a-zA-Z0-9=]{0,12}\\?=|[ a-z=]{0,20}|)\r?\n){0,40}",
        "[\\[\\]{}:,\"\\\\ a-z0-9\\n.eE+-]{0,300}",
        "[<>/=\"'&;!\\[\\]?a-z \\n#]{0,300}",
        // GPX: points with coordinates, values and extensions.
        "(<gpx>|<trk>|<trkseg>|<trkpt lat=\"-?[0-9.]{0,4}\" lon=\"[0-9.e-]{0,4}\">|<wpt lat=\"1\"/>|<ele>[0-9.]{0,4}</ele>|<time>[0-9T:Z-]{0,20}</time>|<extensions>|<x:hr>9</x:hr>|</trkpt>|</trkseg>|</trk>|</gpx>){0,30}",
        "[,\"\\n\\r a-z\u{feff}]{0,300}",
        "[=&%+a-z0-9]{0,300}",
        (1..100_000usize, "(\\[|\\{\"a\":|<a>|<a b='1'>)")
            .prop_map(|(times, open)| open.repeat(times)),
    ];
    // Media files: a JPEG's, a TIFF's, a PNG's or an ISO box's start, then anything (EXIF
    // directories, boxes with wild sizes and offsets).
    let media = (
        prop_oneof![
            Just(b"\xFF\xD8\xFF\xE1\x00\x40Exif\x00\x00MM\x00\x2a\x00\x00\x00\x08".to_vec()),
            Just(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR".to_vec()),
            Just(b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2".to_vec()),
            Just(b"\x00\x00\x00\x14ftypqt  \x00\x00\x00\x00qt  ".to_vec()),
            Just(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic".to_vec()),
        ],
        prop::collection::vec(any::<u8>(), 0..600),
    )
        .prop_map(|(mut start, rest)| {
            start.extend(rest);
            (Decode::Media, start)
        });
    prop_oneof![
        8 => (format, text.prop_map(String::into_bytes)),
        1 => media,
    ]
}

// ---------------------------------------------------------------------------------------------
// What each target does with a case: anything but a panic (or an abort, or a hang) is fine.

fn load_spec((spec, edits): &(usize, Vec<Edit>), specs: &[(PathBuf, String)]) {
    let (path, text) = &specs[spec % specs.len()];
    let _ = engine::spec::parse(&SpecSource {
        path: path.clone(),
        text: apply(text, edits),
    });
}

fn run_path((path, document): &(String, serde_json::Value)) {
    if let Ok(compiled) = CompiledPath::compile(path) {
        let document = Document::from_value(document.clone());
        let target = Target::new(document.root());
        let mut selected = 0usize;
        compiled.for_each(&target, |_| selected += 1);
        let _ = compiled.first(&target);
    }
}

fn run_template(source: &str) {
    let mut templates = Templates::default();
    let context = minijinja::context! { record => minijinja::context! { a => 1, b => "x" } };
    if let Ok(id) = templates.add(source) {
        let _ = templates.render(&id, &context);
    }
    let mut conditions = Templates::default();
    let condition = source
        .trim_start_matches('x')
        .trim_start_matches("{{")
        .trim_end_matches('y')
        .trim_end_matches("}}");
    if let Ok(id) = conditions.add_condition(condition) {
        let _ = conditions.test(&id, &context);
    }
}

fn run_decoder((format, bytes): &(Decode, Vec<u8>)) {
    if let Ok(document) = decode(*format, bytes) {
        let _ = serde_json::Value::from(document.root());
    }
    // An export's XML documents are written onto a tape rather than built as a tree: the two
    // must agree, on the document or on refusing it.
    if *format == Decode::Xml {
        let decoder = Decoder::from(Decode::Xml);
        let mut page = decoder
            .page_builder()
            .expect("XML pages are built together");
        let mut frames = decoder
            .frames(&bytes[..], FramePosition::default(), 1 << 20)
            .expect("a whole body is one frame");
        match (decode(Decode::Xml, bytes), page.read_next(&mut frames)) {
            (Ok(tree), Ok(true)) => assert_eq!(
                page.take().expect("a tape is a tree").to_value(),
                serde_json::Value::Array(vec![tree.to_value()]),
                "the XML on a tape and as a tree differ"
            ),
            (Err(_), Err(_)) => assert_eq!(page.documents(), 0, "a refused document was kept"),
            (tree, read) => {
                panic!("the XML on a tape and as a tree disagree: {tree:?} / {read:?}")
            }
        }
        // Split into elements, read onto a page in the pass that frames them, or framed and
        // decoded one by one: the same documents, and the same refusal.
        let split = Decoder::for_archive(&Split::Element("a".to_owned()), Decode::Xml)
            .expect("an element split");
        let one_by_one: Result<Vec<serde_json::Value>, String> = split
            .documents_within(&bytes[..], FramePosition::default(), 1 << 20)
            .map_err(|error| error.to_string())
            .and_then(|documents| {
                documents
                    .take(1000)
                    .map(|document| {
                        document
                            .map(|document| document.to_value())
                            .map_err(|error| error.to_string())
                    })
                    .collect()
            });
        let mut page = split.page_builder().expect("XML pages are built together");
        let onto_page = split
            .frames(&bytes[..], FramePosition::default(), 1 << 20)
            .map_err(|error| error.to_string())
            .and_then(|mut frames| {
                let mut read = 0;
                while read < 1000
                    && page
                        .read_next(&mut frames)
                        .map_err(|error| error.to_string())?
                {
                    read += 1;
                }
                Ok(page.take().expect("a tape is a tree").to_value())
            });
        match (one_by_one, onto_page) {
            (Ok(documents), Ok(page)) => assert_eq!(
                page,
                serde_json::Value::Array(documents),
                "elements onto a page and one by one differ"
            ),
            (Err(_), Err(_)) => {}
            (one_by_one, page) => {
                panic!("elements onto a page and one by one disagree: {one_by_one:?} / {page:?}")
            }
        }
    }
    // The same bytes as a file of an export, a document at a time.
    let split = match format {
        Decode::Json => Split::Array,
        Decode::Jsonl => Split::Lines,
        Decode::Csv => Split::Rows,
        Decode::Xml => Split::Element("a".to_owned()),
        Decode::Email => Split::Messages,
        Decode::Ical => Split::Component("VEVENT".to_owned()),
        Decode::Vcard => Split::Component("VCARD".to_owned()),
        Decode::Media | Decode::Gpx => Split::Whole,
        Decode::Form => return,
    };
    if let Ok(decoder) = Decoder::for_archive(&split, *format)
        && let Ok(documents) =
            decoder.documents_within(&bytes[..], FramePosition::default(), 1 << 20)
    {
        for document in documents.take(1000).flatten() {
            let _ = serde_json::Value::from(document.root());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Runners

fn catalog() -> Vec<(PathBuf, String)> {
    connector_specs()
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            (path, text)
        })
        .collect()
}

fn cases() -> u32 {
    std::env::var("HYPERNET_FUZZ_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(200)
}

/// Runs `check` on `cases` generated values, failing (with proptest's shrunk case) on a panic.
fn bounded<S: Strategy>(strategy: S, check: impl Fn(&S::Value)) {
    let config = Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    };
    TestRunner::new(config)
        .run(&strategy, |value| {
            check(&value);
            Ok(())
        })
        .unwrap();
}

#[test]
fn specs_with_random_edits_never_panic_the_loader() {
    let specs = catalog();
    bounded((any::<usize>(), edits()), |case| load_spec(case, &specs));
}

#[test]
fn generated_json_paths_never_panic_compilation_or_evaluation() {
    bounded((json_path(), json_document()), run_path);
}

#[test]
fn generated_templates_never_panic_compilation_or_rendering() {
    bounded(template(), |source| run_template(source));
}

#[test]
fn generated_bodies_never_panic_the_decoders() {
    bounded(body(), run_decoder);
}

/// What one target did in the long run.
#[derive(Debug, Default)]
struct Tally {
    cases: u64,
    panics: u64,
    hangs: u64,
    slowest: Duration,
}

fn long_run<S: Strategy>(
    name: &str,
    strategy: &S,
    runner: &mut TestRunner,
    until: Instant,
    check: &dyn Fn(&S::Value),
) -> Tally
where
    S::Value: std::fmt::Debug,
{
    let trace = std::env::var_os("HYPERNET_FUZZ_TRACE").is_some();
    let mut tally = Tally::default();
    while Instant::now() < until {
        let Ok(tree) = strategy.new_tree(runner) else {
            continue;
        };
        let value = tree.current();
        if trace {
            eprintln!("{name}: {value:?}");
        }
        let started = Instant::now();
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| check(&value)));
        let took = started.elapsed();
        tally.cases += 1;
        tally.slowest = tally.slowest.max(took);
        if outcome.is_err() {
            tally.panics += 1;
            eprintln!("{name}: PANIC on {value:?}");
        }
        if took > HANG {
            tally.hangs += 1;
            eprintln!("{name}: HANG ({took:?}) on {value:?}");
        }
    }
    tally
}

#[test]
#[ignore = "the long run: HYPERNET_FUZZ_SECONDS=3600 cargo test --test fuzz -- --ignored --nocapture"]
fn fuzz_for_a_while() {
    let seconds: u64 = std::env::var("HYPERNET_FUZZ_SECONDS")
        .ok()
        .and_then(|seconds| seconds.parse().ok())
        .unwrap_or(60);
    // A quarter of the time each, one target at a time.
    let share = Duration::from_secs(seconds) / 4;
    let mut runner = TestRunner::new(Config::default());
    let specs = catalog();
    let started = Instant::now();
    let spec_case = (any::<usize>(), edits());
    let results = [
        (
            "spec loader",
            long_run(
                "spec loader",
                &spec_case,
                &mut runner,
                Instant::now() + share,
                &|case| load_spec(case, &specs),
            ),
        ),
        (
            "JSONPath",
            long_run(
                "JSONPath",
                &(json_path(), json_document()),
                &mut runner,
                Instant::now() + share,
                &run_path,
            ),
        ),
        (
            "templates",
            long_run(
                "templates",
                &template(),
                &mut runner,
                Instant::now() + share,
                &|source: &String| run_template(source),
            ),
        ),
        (
            "decoders",
            long_run(
                "decoders",
                &body(),
                &mut runner,
                Instant::now() + share,
                &run_decoder,
            ),
        ),
    ];
    println!(
        "fuzzed for {:?}\n| target | cases | panics | hangs (> {HANG:?}) | slowest case |\n|---|---|---|---|---|",
        started.elapsed()
    );
    for (name, tally) in &results {
        println!(
            "| {name} | {} | {} | {} | {:?} |",
            tally.cases, tally.panics, tally.hangs, tally.slowest
        );
    }
    let failures: u64 = results
        .iter()
        .map(|(_, tally)| tally.panics + tally.hangs)
        .sum();
    assert_eq!(failures, 0, "panics or hangs: see above");
}
