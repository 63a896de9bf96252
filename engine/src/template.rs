//! The sandbox in which spec templates and conditions run.
//!
//! Specs come from community contributors, so templates get no file system, no includes, no
//! network and a fuel limit that bounds the work any one render may do. The same environment
//! compiles templates for `connector validate` and renders them at run time, so what validates
//! is exactly what runs.

use std::collections::BTreeSet;

use minijinja::{Environment, UndefinedBehavior};

/// Instructions one render may execute: generous for string building, fatal to runaway loops.
pub const FUEL_PER_RENDER: u64 = 50_000;

/// The longest template or condition, in bytes. The template parser recurses once per unary
/// operator and its compiler once per binary one, so a long enough chain (`{{ 1+1+1... }}` of
/// 20,000 characters, 30,000 `-`) overflows the stack and aborts the process; within this length
/// the worst chains compile on a 2 MiB thread, even in a debug build (tested below). The catalog's longest template is
/// under 200 characters.
pub const MAX_TEMPLATE_LENGTH: usize = 1024;

/// A fresh sandboxed environment with the engine's settings.
///
/// Every function, filter and test in it must stay pure (no clock, randomness or I/O): mapping
/// reuses a template's render for records of a page that give it the same values
/// ([`crate::map::PageScope`]).
pub fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_fuel(Some(FUEL_PER_RENDER));
    // minijinja charges fuel for printing a list only once it is printed: `range(100000) * 655`
    // is a lazy list of 65 million items that took 42 s to print (found by tests/fuzz.rs). What
    // turns a whole value into text checks its size first.
    env.set_formatter(|out, state, value| {
        printable(value)?;
        minijinja::escape_formatter(out, state, value)
    });
    env.add_filter(
        "string",
        |state: &minijinja::State, value: minijinja::Value| {
            printable(&value)?;
            minijinja::filters::string(state, &value)
        },
    );
    env.add_filter(
        "tojson",
        |value: minijinja::Value,
         indent: Option<minijinja::Value>,
         args: minijinja::value::Kwargs| {
            printable(&value)?;
            minijinja::filters::tojson(&value, indent, args)
        },
    );
    // Found by tests/fuzz.rs: `range(100000) | urlencode` took 5 s uncharged.
    env.add_filter("urlencode", |value: minijinja::Value| {
        printable(&value)?;
        minijinja::filters::urlencode(&value)
    });
    env.add_filter("pprint", |value: minijinja::Value| {
        printable(&value)?;
        Ok::<_, minijinja::Error>(minijinja::filters::pprint(&value))
    });
    // A list is turned into text, uncharged, wherever it meets a string (`range(100000) in
    // 'x'` took 147 s in a loop; found by tests/fuzz.rs), so no list a template makes may be
    // long: mapping needs short ranges, if any.
    env.add_function(
        "range",
        |lower: isize, upper: Option<isize>, step: Option<isize>| {
            let range = minijinja::functions::range(lower, upper, step)?;
            if range.try_iter()?.take(MAX_RANGE + 1).count() > MAX_RANGE {
                return Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    format!("range has more than {MAX_RANGE} elements"),
                ));
            }
            Ok(range)
        },
    );
    // `*` is refused in templates (it also repeats lists, uncharged); numbers multiply with
    // `times`: a unit that depends on the record (`km` or `mi`).
    env.add_filter("times", |value: f64, factor: f64| value * factor);
    // Meta's text with each UTF-8 byte written as a character, repaired (the `latin1_utf8`
    // conversion), where a template needs it: an id, a join key.
    env.add_filter("latin1_utf8", |text: &str| {
        crate::convert::latin1_utf8(text)
    });
    // The text of HTML (the `html_text` conversion), where a template needs it: a body that is
    // HTML or text as another field says (Graph's `body.contentType`).
    env.add_filter("html_text", |html: &str| crate::convert::html_text(html));
    // Seconds since 1970 of a date-time, RFC 3339 or as a strftime pattern says: the length of
    // a sample is `(end | epoch_seconds(f)) - (start | epoch_seconds(f))`.
    env.add_filter(
        "epoch_seconds",
        |text: &str, pattern: Option<&str>| -> Result<f64, minijinja::Error> {
            let instant = match pattern {
                Some(pattern) => crate::convert::instant_as(pattern, text),
                None => text.parse::<jiff::Timestamp>().ok(),
            };
            instant
                .map(|instant| instant.as_millisecond() as f64 / 1000.0)
                .ok_or_else(|| {
                    minijinja::Error::new(
                        minijinja::ErrorKind::InvalidOperation,
                        format!(
                            "`{text}` is not a date-time{}",
                            pattern.map(|p| format!(" as `{p}`")).unwrap_or_default()
                        ),
                    )
                })
        },
    );
    // A missing `record.field` renders empty rather than failing the record; a missing
    // top-level variable is caught by `connector validate` instead.
    env.set_undefined_behavior(UndefinedBehavior::Chainable);
    // Values go into URLs, headers and JSON, never HTML; escaping is the caller's business.
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env
}

/// The most elements `range()` makes in a template.
pub const MAX_RANGE: usize = 1_000;

/// The most items (list elements and map entries, nested ones included) a value may hold to be
/// turned into text whole.
pub const MAX_PRINTED_ITEMS: usize = 10_000;

/// Refuses a value with more than [`MAX_PRINTED_ITEMS`] items, counting no further than that.
fn printable(value: &minijinja::Value) -> Result<(), minijinja::Error> {
    fn count(value: &minijinja::Value, left: &mut usize) -> bool {
        use minijinja::value::ValueKind;
        if !matches!(
            value.kind(),
            ValueKind::Seq | ValueKind::Iterable | ValueKind::Map
        ) {
            return true;
        }
        if value.len().is_some_and(|len| len > *left) {
            return false;
        }
        let Ok(items) = value.try_iter() else {
            return true;
        };
        for item in items {
            if *left == 0 {
                return false;
            }
            *left -= 1;
            let inner = if value.kind() == ValueKind::Map {
                value.get_item(&item).unwrap_or_default()
            } else {
                item
            };
            if !count(&inner, left) {
                return false;
            }
        }
        true
    }
    let mut left = MAX_PRINTED_ITEMS;
    if count(value, &mut left) {
        Ok(())
    } else {
        Err(minijinja::Error::new(
            minijinja::ErrorKind::InvalidOperation,
            format!("a value of more than {MAX_PRINTED_ITEMS} items is too large to print"),
        ))
    }
}

/// Why a template or condition does not compile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CompileError(String);

/// A spec part that does not compile: a template, a condition or a JSONPath (specs are
/// validated first, so this is rare). Everything compiled from a spec (requests, paging,
/// mappings, a run's plan) fails with it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BuildError {
    /// A JSONPath.
    #[error(transparent)]
    Path(#[from] crate::extract::PathError),
    /// A template or condition.
    #[error(transparent)]
    Template(#[from] CompileError),
    /// An archive stream's globs or split.
    #[error("{0}")]
    Archive(String),
    /// Anything else the spec's check refuses, for a spec built without it.
    #[error("{0}")]
    Invalid(String),
}

/// Refuses a template too long to compile safely ([`MAX_TEMPLATE_LENGTH`]), or one that uses
/// `*` (see [`repeats`]).
fn bounded(source: &str, condition: bool) -> Result<&str, CompileError> {
    if source.len() > MAX_TEMPLATE_LENGTH {
        return Err(CompileError(format!(
            "it is {} characters long; a template or condition may be at most {MAX_TEMPLATE_LENGTH}",
            source.len()
        )));
    }
    if repeats(source, condition) {
        return Err(CompileError(
            "it uses `*` or `**`, which templates may not: `*` repeats lists lazily, and a repeated list turned into text (`[1] * 1000000 ~ ''`) costs seconds and hundreds of megabytes that fuel does not count; change units with a mapping's `scale:`".to_owned(),
        ));
    }
    Ok(source)
}

/// Whether an expression of `source` (inside `{{ }}` or `{% %}`, outside string literals) uses
/// `*`. minijinja's `*` repeats a list or a string up to 100 million items, lazily, and turning
/// the result into text by `~` or in a comparison is not charged fuel (the fuzz harness found
/// `662558 * [1, 2, 3] ~ none` taking 7 s). No connector needs it. A condition is one bare
/// expression, scanned whole.
fn repeats(source: &str, condition: bool) -> bool {
    let expression_only = condition;
    let mut in_block = expression_only;
    let mut quote: Option<char> = None;
    let mut chars = source.chars().peekable();
    while let Some(c) = chars.next() {
        if let Some(open) = quote {
            match c {
                '\\' => {
                    chars.next();
                }
                _ if c == open => quote = None,
                _ => {}
            }
            continue;
        }
        match c {
            '{' if !expression_only && matches!(chars.peek(), Some('{' | '%')) => {
                chars.next();
                in_block = true;
            }
            '}' | '%' if !expression_only && in_block && chars.peek() == Some(&'}') => {
                chars.next();
                in_block = false;
            }
            '\'' | '"' if in_block => quote = Some(c),
            '*' if in_block => return true,
            _ => {}
        }
    }
    false
}

fn compile_error(error: &minijinja::Error) -> CompileError {
    let mut text = error.kind().to_string();
    if let Some(detail) = error.detail() {
        text = format!("{text}: {detail}");
    }
    if let Some(line) = error.line().filter(|line| *line > 1) {
        text = format!("{text} (line {line} of the template)");
    }
    CompileError(text)
}

/// The variables a template reads, as dotted paths (`config.workspace_id`, `record`).
pub fn template_variables(
    env: &Environment<'_>,
    source: &str,
) -> Result<BTreeSet<String>, CompileError> {
    let template = env
        .template_from_str(bounded(source, false)?)
        .map_err(|error| compile_error(&error))?;
    Ok(template.undeclared_variables(true).into_iter().collect())
}

/// The variables a condition (a minijinja expression) reads.
pub fn condition_variables(
    env: &Environment<'_>,
    source: &str,
) -> Result<BTreeSet<String>, CompileError> {
    let expression = env
        .compile_expression(bounded(source, true)?)
        .map_err(|error| compile_error(&error))?;
    Ok(expression.undeclared_variables(true).into_iter().collect())
}

/// What fails in a template whatever its values, found by running it once with every variable
/// undefined: a filter, test or function the sandbox does not have (minijinja compiles such a
/// call and fails only when it runs, which would reject every record), or work past the fuel of
/// a render (a static loop of millions). Only what that run reaches is found: a call in a branch
/// it skips is not.
pub fn unknown_callable(env: &Environment<'_>, source: &str, condition: bool) -> Option<String> {
    use minijinja::ErrorKind::{OutOfFuel, UnknownFilter, UnknownFunction, UnknownTest};
    let outcome = if condition {
        env.compile_expression(bounded(source, true).ok()?)
            .ok()?
            .eval(())
            .map(|_| ())
    } else {
        env.template_from_str(bounded(source, false).ok()?)
            .ok()?
            .render(())
            .map(|_| ())
    };
    match outcome {
        Err(error)
            if matches!(
                error.kind(),
                UnknownFilter | UnknownTest | UnknownFunction | OutOfFuel
            ) || error.to_string().contains("range has more than") =>
        {
            Some(compile_error(&error).0)
        }
        _ => None,
    }
}

/// Templates and conditions compiled once per run and rendered by id.
///
/// Conditions are stored as `{% if (...) %}1{% endif %}` templates so that nothing borrows the
/// environment and the registry can be shared across tasks.
#[derive(Debug)]
pub struct Templates {
    env: Environment<'static>,
    count: usize,
}

/// A compiled template or condition in a [`Templates`] registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateId(String);

/// A render that failed: a runtime error in a template (out of fuel, a failing filter).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct RenderError(String);

impl Default for Templates {
    fn default() -> Self {
        Self {
            env: environment(),
            count: 0,
        }
    }
}

impl Templates {
    /// Compiles a template.
    pub fn add(&mut self, source: &str) -> Result<TemplateId, CompileError> {
        self.count += 1;
        let name = format!("t{}", self.count);
        self.env
            .add_template_owned(name.clone(), bounded(source, false)?.to_owned())
            .map_err(|error| compile_error(&error))?;
        Ok(TemplateId(name))
    }

    /// Compiles a condition.
    pub fn add_condition(&mut self, source: &str) -> Result<TemplateId, CompileError> {
        // Compile the expression alone first so its errors point at the author's text.
        self.env
            .compile_expression(bounded(source, true)?)
            .map_err(|error| compile_error(&error))?;
        self.add(&format!("{{% if ({source}) %}}1{{% endif %}}"))
    }

    /// Renders a template with `context`.
    pub fn render(
        &self,
        id: &TemplateId,
        context: &minijinja::Value,
    ) -> Result<String, RenderError> {
        self.env
            .get_template(&id.0)
            .and_then(|template| template.render(context))
            .map_err(|error| RenderError(error.to_string()))
    }

    /// Evaluates a condition with `context`.
    pub fn test(&self, id: &TemplateId, context: &minijinja::Value) -> Result<bool, RenderError> {
        self.render(id, context).map(|text| text == "1")
    }
}

/// Whether a template is plain text that renders as itself.
pub fn is_literal(source: &str) -> bool {
    !(source.contains("{{") || source.contains("{%") || source.contains("{#"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_are_listed_with_their_attributes() {
        let env = environment();
        let variables = template_variables(
            &env,
            "{{ config.workspace_id }}/{{ record.id }}{% for x in page.items %}{{ x }}{% endfor %}",
        )
        .unwrap();
        assert!(variables.contains("config.workspace_id"));
        assert!(variables.contains("record.id"));
        assert!(variables.contains("page.items"));
        assert!(!variables.iter().any(|name| name == "x"));
    }

    #[test]
    fn filters_measure_time_and_repair_meta_text() {
        let env = environment();
        let render = |source: &str| env.render_str(source, ()).map_err(|e| e.to_string());
        assert_eq!(
            render("{{ ('2024-03-17 03:02:00 +0100' | epoch_seconds('%Y-%m-%d %H:%M:%S %z')) - ('2024-03-17 02:14:30 +0100' | epoch_seconds('%Y-%m-%d %H:%M:%S %z')) }}").unwrap(),
            "2850.0"
        );
        assert_eq!(
            render("{{ '1970-01-01T00:00:01.5Z' | epoch_seconds }}").unwrap(),
            "1.5"
        );
        assert_eq!(
            render("{{ 'Vacances \u{c3}\u{a0} Nice' | latin1_utf8 }}").unwrap(),
            "Vacances à Nice"
        );
        let error = render("{{ 'yesterday' | epoch_seconds }}").unwrap_err();
        assert!(error.contains("`yesterday` is not a date-time"), "{error}");
    }

    #[test]
    fn syntax_errors_are_reported() {
        let env = environment();
        assert!(template_variables(&env, "{{ record.id ").is_err());
        assert!(condition_variables(&env, "record.status ==").is_err());
        assert_eq!(
            condition_variables(&env, "record.status == 'cancelled'")
                .unwrap()
                .into_iter()
                .collect::<Vec<_>>(),
            ["record.status"]
        );
    }

    #[test]
    fn the_longest_operator_chains_allowed_compile_on_a_small_stack() {
        let chains = |length: usize| {
            let inner = length - "{{ 1 }}".len();
            [
                format!("{{{{ 1{} }}}}", "+1".repeat(inner / 2)),
                format!("{{{{ {}1 }}}}", "-".repeat(inner)),
                format!("{{{{ {}1 }}}}", "not ".repeat(inner / 4)),
                format!("{{{{ 'a'{} }}}}", "|lower".repeat(inner / 6)),
            ]
        };
        for chain in chains(MAX_TEMPLATE_LENGTH) {
            assert!(chain.len() <= MAX_TEMPLATE_LENGTH);
            // A tokio worker's stack: the service compiles specs there.
            std::thread::Builder::new()
                .stack_size(2 << 20)
                .spawn(move || {
                    let mut templates = Templates::default();
                    let id = templates.add(&chain).unwrap();
                    templates.render(&id, &minijinja::Value::UNDEFINED).unwrap();
                })
                .unwrap()
                .join()
                .unwrap();
        }
        let [too_long, ..] = chains(MAX_TEMPLATE_LENGTH + 2);
        let error = Templates::default().add(&too_long).unwrap_err();
        assert!(error.to_string().contains("at most 1024"), "{error}");
        assert!(template_variables(&environment(), &too_long).is_err());
    }

    #[test]
    fn templates_may_not_repeat_lists() {
        for source in [
            "{{ 662558 * [1, 2, 3] ~ none }}",
            "{{ record.tags * 100000 }}",
            "{% if ([1] * 10000000 ~ '')|length %}x{% endif %}",
            "{{ 2 ** 64 }}",
        ] {
            let error = Templates::default().add(source).unwrap_err();
            assert!(error.to_string().contains("`*`"), "{source}: {error}");
        }
        assert!(
            Templates::default()
                .add_condition("record.n * 2 > 1")
                .is_err()
        );
        // A `*` that is text, not an operator, is fine.
        for source in ["a * b {{ '*' }}", "{{ record.glob == \"*.jpg\" }}", "x*y"] {
            assert!(Templates::default().add(source).is_ok(), "{source}");
        }
    }

    #[test]
    fn huge_lazy_lists_are_refused_before_they_are_printed() {
        // Printing them was charged only once done: 42 s for the first (tests/fuzz.rs).
        let env = environment();
        for source in [
            "{{ range(1000) * 655 }}",
            "{{ (range(1000) * 655)|string|length }}",
            "{{ (range(1000) * 655)|tojson|length }}",
            "{{ [range(1000) * 600]|pprint|length }}",
            "{{ {'a': range(1000) * 600} }}",
            "x{{ (range(1000) * 20)|urlencode }}y",
        ] {
            let error = env.render_str(source, ()).unwrap_err();
            assert!(
                error.to_string().contains("too large to print"),
                "{source}: {error}"
            );
        }
        // Small values print as before.
        assert_eq!(
            env.render_str("{{ [1, 2] }}|{{ {'a': [3]}|tojson }}", ())
                .unwrap(),
            "[1, 2]|{\"a\": [3]}"
        );
    }

    #[test]
    fn ranges_are_short() {
        // Found by tests/fuzz.rs: each `in` turned the list into text, uncharged (147 s).
        let env = environment();
        let source = "{% for i in not range(100000) or range(100000) %}{{ range(100000) in '%%v}%' }}{% endfor %}";
        let error = env.render_str(source, ()).unwrap_err();
        assert!(
            error.to_string().contains("more than 1000 elements"),
            "{error}"
        );
        assert_eq!(
            env.render_str("{{ range(1000)|length }}", ()).unwrap(),
            "1000"
        );
        assert_eq!(
            env.render_str("{{ range(2, 10, 3)|list }}", ()).unwrap(),
            "[2, 5, 8]"
        );
        assert!(
            env.render_str("{{ range(0, 5000, 2)|length }}", ())
                .is_err()
        );
        assert!(unknown_callable(&env, "{{ range(5000)|length }}", false).is_some());
    }

    #[test]
    fn huge_ranges_and_strings_are_refused_at_run_time() {
        let env = environment();
        for source in [
            "{{ range(100000000)|length }}",
            "{{ ('x' * 1000000000)|length }}",
            "{% for i in range(100000) %}{{ 'x' * 100000 }}{% endfor %}",
        ] {
            assert!(env.render_str(source, ()).is_err(), "{source}");
        }
    }

    #[test]
    fn runaway_templates_run_out_of_fuel() {
        let env = environment();
        let template = env
            .template_from_str(
                "{% for a in range(1000) %}{% for b in range(1000) %}x{% endfor %}{% endfor %}",
            )
            .unwrap();
        let error = template.render(()).unwrap_err();
        assert_eq!(error.kind(), minijinja::ErrorKind::OutOfFuel);
    }

    #[test]
    fn templates_cannot_include_other_files() {
        // `include` is compiled out (no `multi_template` feature) and no loader is set, so a
        // spec can never read a file, whichever of the two stops it.
        let env = environment();
        let outcome = env
            .template_from_str("{% include '/etc/passwd' %}")
            .and_then(|template| template.render(()));
        assert!(outcome.is_err());
    }

    #[test]
    fn registered_templates_and_conditions_render() {
        let mut templates = Templates::default();
        let path = templates
            .add("/calendars/{{ parent.id | urlencode }}/events")
            .unwrap();
        let cancelled = templates
            .add_condition("record.status == 'cancelled'")
            .unwrap();
        let context = minijinja::context! { parent => minijinja::context! { id => "a b@c" }, record => minijinja::context! { status => "cancelled" } };
        assert_eq!(
            templates.render(&path, &context).unwrap(),
            "/calendars/a%20b%40c/events"
        );
        assert!(templates.test(&cancelled, &context).unwrap());
        assert!(
            !templates
                .test(
                    &cancelled,
                    &minijinja::context! { record => minijinja::context! { status => "confirmed" } }
                )
                .unwrap()
        );
        assert!(templates.add_condition("record.status =").is_err());
    }

    #[test]
    fn literals_are_recognised() {
        assert!(is_literal("photo"));
        assert!(!is_literal("{{ record.kind }}"));
    }
}
