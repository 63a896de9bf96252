//! Checks of each stream: request, paginator, records, mapping onto the model, parents.

use std::collections::{BTreeSet, HashSet};

use super::*;
use crate::models::PROVENANCE_FIELDS;

impl Checker<'_> {
    pub(super) fn stream(&mut self, name: &str, stream: &Stream) {
        let base = pointer(&["streams", name]);
        if !is_name(name) {
            self.push(
                Problem::at(base.clone(), format!("`{name}` is not a valid stream name"))
                    .on_key()
                    .expected(NAME_PATTERN),
            );
        }

        let granted: &[String] = match &self.spec.auth {
            Auth::OAuth2(oauth) => &oauth.scopes,
            _ => &[],
        };
        for (index, scope) in stream.scopes.iter().enumerate() {
            if !granted.contains(scope) {
                self.push(
                    Problem::at(
                        pointer(&["streams", name, "scopes", &index.to_string()]),
                        format!(
                            "the stream needs scope `{scope}`, which `auth.scopes` does not ask for"
                        ),
                    )
                    .expected(if granted.is_empty() {
                        "no stream scopes: only OAuth 2.0 connectors ask for scopes".to_owned()
                    } else {
                        format!("one of `auth.scopes`: {}", one_of(granted))
                    }),
                );
            }
        }
        if let Some(limit) = stream.max_body {
            self.body_limit(&pointer(&["streams", name, "max_body"]), limit);
        }

        let parent_fields: Vec<String> = stream
            .parent
            .as_ref()
            .map(|parent| parent.fields.keys().cloned().collect())
            .unwrap_or_default();
        let config = self.config_names();
        let state_fields: Vec<String> = match &stream.incremental {
            None => vec![],
            Some(Incremental::Cursor { .. }) => vec!["cursor".to_owned()],
            Some(
                Incremental::SyncToken { .. }
                | Incremental::PageToken { .. }
                | Incremental::ChangeLog { .. },
            ) => {
                vec!["sync_token".to_owned()]
            }
        };
        let credentials = self.credentials_scope();
        let session_fields: Vec<String> = match &stream.session {
            Some(_) => vec!["id".to_owned(), "url".to_owned()],
            None => vec![],
        };
        let scope_for = |paginate: &Paginate| {
            credentials
                .clone()
                .only("state", STATE, state_fields.clone())
                .only("parent", PARENT, parent_fields.clone())
                .only("page", PAGE, page_fields(paginate))
                .only("session", SESSION, session_fields.clone())
        };
        let request_scope = scope_for(&stream.paginate);
        let mut record_scope = Scope::default()
            .with("record", Fields::Any)
            .only("parent", PARENT, parent_fields.clone())
            .only("config", CONFIG, config.clone());
        if stream.archive.is_some() {
            // The file of the export the record was read from.
            record_scope = record_scope.only(
                "entry",
                ENTRY,
                ["path", "name", "stem", "extension", "folder"].map(str::to_owned),
            );
        }

        if let Some(parent) = &stream.parent {
            self.parent(&base, name, parent, &config);
        }
        if let Some(session) = &stream.session {
            self.session(&base, stream, session, &config);
        }
        match (&stream.request, &stream.archive) {
            (Some(request), None) => {
                self.request(&format!("{base}/request"), request, &request_scope);
            }
            (None, Some(archive)) => self.archive(&base, stream, archive),
            (Some(_), Some(_)) => self.push(
                Problem::at(
                    format!("{base}/archive"),
                    "the stream reads both from a `request` and from an `archive`",
                )
                .on_key()
                .expected("one of the two: a second stream for the other"),
            ),
            (None, None) => self.push(
                Problem::at(
                    base.clone(),
                    "the stream does not say where its records come from",
                )
                .on_key()
                .expected(
                    "`request:` (the provider's API) or `archive:` (the files of a data export)",
                ),
            ),
        }
        let json_body = stream
            .request
            .as_ref()
            .is_some_and(|request| matches!(request.body, Some(Body::Json(_))));
        self.paginate(
            &format!("{base}/paginate"),
            &stream.paginate,
            &request_scope,
            json_body,
        );
        if stream.reconcile.is_some() && (stream.incremental.is_none() || stream.parent.is_some()) {
            let why = if stream.parent.is_some() {
                "this stream is a substream, whose partitions do not mark what they do not see"
            } else {
                "this stream lists everything on every run already"
            };
            self.push(
                Problem::at(
                    format!("{base}/reconcile"),
                    format!("`reconcile` lists everything again from time to time, and {why}"),
                )
                .on_key()
                .expected("`reconcile:` on a root stream with `incremental`"),
            );
        }
        self.json_path(&format!("{base}/records"), &stream.records);
        self.value_source(&format!("{base}/id"), &stream.id, &record_scope);
        if let Some(key) = &stream.key {
            self.value_source(&format!("{base}/key"), key, &record_scope);
        }
        self.map(&base, name, stream, &record_scope);
        match &stream.incremental {
            None => {}
            Some(Incremental::Cursor {
                field, location, ..
            }) => {
                self.json_path(&format!("{base}/incremental/field"), field);
                self.body_location(
                    &format!("{base}/incremental/location"),
                    *location,
                    json_body,
                );
            }
            Some(Incremental::SyncToken {
                token,
                location,
                reset_on,
                ..
            }) => {
                self.json_path(&format!("{base}/incremental/token"), token);
                self.body_location(
                    &format!("{base}/incremental/location"),
                    *location,
                    json_body,
                );
                for (index, status) in reset_on.iter().enumerate() {
                    self.status(&format!("{base}/incremental/reset_on/{index}"), *status);
                }
            }
            Some(Incremental::PageToken { token, reset_on }) => {
                self.json_path(&format!("{base}/incremental/token"), token);
                if !matches!(
                    stream.paginate,
                    Paginate::Cursor { .. } | Paginate::NextUrl { .. }
                ) {
                    self.push(
                        Problem::at(
                            format!("{base}/incremental/kind"),
                            "a page token continues a cursor or next-URL listing, but this stream pages neither way",
                        )
                        .expected("`paginate` of kind `cursor` or `next_url`"),
                    );
                }
                for (index, status) in reset_on.iter().enumerate() {
                    self.status(&format!("{base}/incremental/reset_on/{index}"), *status);
                }
            }
            Some(Incremental::ChangeLog {
                start,
                start_token,
                request,
                paginate,
                records,
                deleted_ids,
                token,
                reset_on,
            }) => {
                let at = format!("{base}/incremental");
                self.request(&format!("{at}/start"), start, &scope_for(&Paginate::None));
                self.json_path(&format!("{at}/start_token"), start_token);
                let log_scope = scope_for(paginate);
                self.request(&format!("{at}/request"), request, &log_scope);
                self.paginate(
                    &format!("{at}/paginate"),
                    paginate,
                    &log_scope,
                    matches!(request.body, Some(Body::Json(_))),
                );
                self.json_path(&format!("{at}/records"), records);
                self.json_path(&format!("{at}/token"), token);
                if let Some(deleted_ids) = deleted_ids {
                    self.json_path(&format!("{at}/deleted_ids"), deleted_ids);
                    if stream.model.is_none() {
                        self.push(
                            Problem::at(
                                format!("{at}/deleted_ids"),
                                "deleted ids mark stored records deleted, but this stream stores none",
                            )
                            .on_key()
                            .expected("`model:` on the stream, or `gone:` on the substream that stores the records"),
                        );
                    }
                }
                for (index, status) in reset_on.iter().enumerate() {
                    self.status(&format!("{at}/reset_on/{index}"), *status);
                }
            }
        }
        if let Some(gone) = &stream.gone {
            self.gone(&base, stream, gone, &config);
        }
        if let Some(deleted) = &stream.deleted {
            self.condition(
                &format!("{base}/deleted"),
                deleted.as_str(),
                &Scope::default().with("record", Fields::Any),
            );
        }
        if let Some(recurse) = &stream.recurse {
            self.recurse(&base, stream, recurse, &config);
        }
        if let Some(content) = &stream.content {
            self.content(&base, stream, content, &config);
        }
    }

    /// A stream's `content`: it belongs to stored records, its parts are named apart, each has
    /// one source (a request or the record itself), its templates see the record (and the
    /// item, for a part per item) and `config` (never `secrets`: rendered requests wait in the
    /// store), its cap is bounded.
    fn content(
        &mut self,
        base: &str,
        stream: &Stream,
        contents: &crate::spec::Contents,
        config: &[String],
    ) {
        let at = format!("{base}/content");
        if stream.model.is_none() {
            self.push(
                Problem::at(
                    at.clone(),
                    "content is kept for stored records, and this stream stores none",
                )
                .on_key()
                .expected("`model:` on the stream"),
            );
        }
        let many = matches!(contents, crate::spec::Contents::Many(_));
        let mut names: Vec<&str> = Vec::new();
        for (index, content) in contents.parts().iter().enumerate() {
            let at = if many {
                format!("{at}/{index}")
            } else {
                at.clone()
            };
            let name = content.part.as_deref().unwrap_or("");
            let valid = name.len() <= 32
                && name
                    .bytes()
                    .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_');
            if !valid || (content.part.is_some() && name.is_empty()) {
                self.push(
                    Problem::at(format!("{at}/part"), format!("`{name}` is not a part name"))
                        .expected("1 to 32 of `a-z`, `0-9` and `_`, such as `attachments`"),
                );
            } else if names.contains(&name) {
                self.push(
                    Problem::at(
                        format!("{at}/part"),
                        if name.is_empty() {
                            "two parts are the record's own content (neither has a `part` name)"
                                .to_owned()
                        } else {
                            format!("the part `{name}` is named twice")
                        },
                    )
                    .on_key()
                    .expected("a `part` name for each part, different from the others'"),
                );
            }
            names.push(name);
            self.content_part(&at, stream, content, config);
        }
        if let Some(second) = contents
            .parts()
            .iter()
            .enumerate()
            .filter(|(_, content)| content.entry)
            .nth(1)
        {
            self.push(
                Problem::at(
                    format!("{at}/{}/entry", second.0),
                    "two parts are the record's file",
                )
                .on_key()
                .expected("`entry: true` on one part"),
            );
        }
    }

    /// One part of a stream's `content`.
    fn content_part(
        &mut self,
        at: &str,
        stream: &Stream,
        content: &crate::spec::Content,
        config: &[String],
    ) {
        let mut scope =
            Scope::default()
                .with("record", Fields::Any)
                .only("config", CONFIG, config.to_vec());
        match &content.for_each {
            Some(path) => {
                self.json_path(&format!("{at}/for_each"), path);
                scope = scope.with("item", Fields::Any);
            }
            None => {
                if content.key.is_some() {
                    self.push(
                        Problem::at(
                            format!("{at}/key"),
                            "`key` tells apart the items of `for_each`, and this part has none",
                        )
                        .on_key()
                        .expected("`for_each:` beside `key:`, or no `key:`"),
                    );
                }
            }
        }
        let sources: Vec<&str> = [
            ("request", content.request.is_some()),
            ("inline", content.inline.is_some()),
            ("collect", content.collect.is_some()),
            ("entry", content.entry),
        ]
        .into_iter()
        .filter_map(|(name, present)| present.then_some(name))
        .collect();
        match sources.as_slice() {
            [_] => {}
            [] => self.push(
                Problem::at(at.to_owned(), "the part does not say where its bytes are")
                    .on_key()
                    .expected("`request:` (the bytes are downloaded), `inline:` (they are in the record), `collect:` (a document made of a tree the provider serves) or `entry: true` (the export's file the record was read from)"),
            ),
            [_, second, ..] => self.push(
                Problem::at(
                    format!("{at}/{second}"),
                    format!("a part has one source, and this one has {}", sources.iter().map(|name| format!("`{name}`")).collect::<Vec<_>>().join(" and ")),
                )
                .on_key()
                .expected("one of `request:` (the bytes are downloaded), `inline:` (they are in the record), `collect:` (a document made of a tree the provider serves) and `entry: true` (the export's file the record was read from)"),
            ),
        }
        self.content_source_fits(at, stream, content, &sources);
        if let Some(request) = &content.request {
            self.request(&format!("{at}/request"), request, &scope);
        }
        if let Some(inline) = &content.inline {
            self.value_source(&format!("{at}/inline/from"), &inline.from, &scope);
        }
        if let Some(collect) = &content.collect {
            self.collect(&format!("{at}/collect"), collect, config);
        }
        if content.answer.is_some() && content.request.is_none() {
            self.push(
                Problem::at(
                    format!("{at}/answer"),
                    "`answer` reads a request's answer, and this part makes no request of its own",
                )
                .on_key()
                .expected("`answer:` beside `request:` only"),
            );
        }
        if let Some(answer) = &content.answer {
            self.json_path(&format!("{at}/answer/json"), &answer.json);
        }
        if let Some(refresh) = &content.refresh {
            let refresh_at = format!("{at}/refresh");
            if content.for_each.is_some() || content.request.is_none() {
                // (`collect` and `inline` parts have no one request to make again.)
                self.push(
                    Problem::at(
                        refresh_at.clone(),
                        "a fresh URL is made for a record's own request, and this part is per item or inline",
                    )
                    .on_key()
                    .expected("`refresh:` on a part with a `request` and no `for_each`"),
                );
            }
            let record_scope = Scope::default().with("record", Fields::Any).only(
                "config",
                CONFIG,
                config.to_vec(),
            );
            self.request(
                &format!("{refresh_at}/request"),
                &refresh.request,
                &record_scope,
            );
            if let Some(path) = &refresh.record {
                self.json_path(&format!("{refresh_at}/record"), path);
            }
            if refresh.on.is_empty() {
                self.push(
                    Problem::at(format!("{refresh_at}/on"), "no status means \"expired\"")
                        .expected("at least one status, such as 403"),
                );
            }
            for (index, status) in refresh.on.iter().enumerate() {
                self.status(&format!("{refresh_at}/on/{index}"), *status);
            }
        }
        if let Some(when) = &content.when {
            self.condition(&format!("{at}/when"), when.as_str(), &scope);
        }
        let limit = content.max_bytes;
        if limit > crate::spec::MAX_CONTENT_BYTES || limit < super::ByteSize::bytes(1) {
            self.push(
                Problem::at(
                    format!("{at}/max_bytes"),
                    format!("`{limit}` is out of range"),
                )
                .expected(format!("from `1B` to `{}`", crate::spec::MAX_CONTENT_BYTES)),
            );
        }
        let sources = [
            ("key", content.key.as_ref()),
            ("size", content.size.as_ref()),
            ("content_type", content.content_type.as_ref()),
            ("version", content.version.as_ref()),
            ("file_name", content.file_name.as_ref()),
            (
                "checksum/value",
                content.checksum.as_ref().map(|checksum| &checksum.value),
            ),
        ];
        for (key, source) in sources {
            if let Some(source) = source {
                self.value_source(&format!("{at}/{key}"), source, &scope);
            }
        }
    }

    /// A content part's source fits its stream: an archive stream's content is the file a
    /// record was read from (`entry`), read whole as a media file, and only that; a stream
    /// that sends requests has no file.
    fn content_source_fits(
        &mut self,
        at: &str,
        stream: &Stream,
        content: &crate::spec::Content,
        sources: &[&str],
    ) {
        let Some(archive) = &stream.archive else {
            if content.entry {
                self.push(
                    Problem::at(
                        format!("{at}/entry"),
                        "`entry` is the export's file a record was read from, and this stream reads the provider's API",
                    )
                    .on_key()
                    .expected("`request:`, `inline:` or `collect:` on a stream that sends requests"),
                );
            }
            return;
        };
        if let [source] = sources
            && *source != "entry"
        {
            self.push(
                Problem::at(
                    format!("{at}/{source}"),
                    format!("`{source}` content is for streams that send requests, and this one reads an archive"),
                )
                .on_key()
                .expected("`entry: true` (the record's own file, stored as the import reads it)"),
            );
        }
        if !content.entry {
            return;
        }
        let whole_media = archive.split == crate::spec::Split::Whole
            && stream.decode == crate::spec::Decode::Media;
        if !whole_media {
            self.push(
                Problem::at(
                    format!("{at}/entry"),
                    "a record's file is stored when each file is a record, and this stream splits its files or does not read them as media",
                )
                .on_key()
                .expected("`entry: true` on a stream with `archive.split: whole` and `decode: media`"),
            );
        }
        let not_for_files = [
            ("for_each", content.for_each.is_some()),
            ("key", content.key.is_some()),
            ("when", content.when.is_some()),
            ("answer", content.answer.is_some()),
            ("size", content.size.is_some()),
            ("checksum", content.checksum.is_some()),
            ("version", content.version.is_some()),
            ("file_name", content.file_name.is_some()),
            ("refresh", content.refresh.is_some()),
        ];
        for (key, present) in not_for_files {
            if present {
                self.push(
                    Problem::at(
                        format!("{at}/{key}"),
                        format!("`{key}` is for content the engine requests, and this part is the export's own file"),
                    )
                    .on_key()
                    .expected("with `entry: true`, only `part`, `content_type` and `max_bytes`"),
                );
            }
        }
    }

    /// A content part's `collect`: its templates see the node (and the render's, `text` and
    /// `depth`), its bounds are in range.
    fn collect(&mut self, at: &str, collect: &crate::spec::Collect, config: &[String]) {
        let node =
            Scope::default()
                .with("node", Fields::Any)
                .only("config", CONFIG, config.to_vec());
        self.request(&format!("{at}/request"), &collect.request, &node);
        self.json_path(&format!("{at}/records"), &collect.records);
        if let Some(paginate) = &collect.paginate {
            self.json_path(&format!("{at}/paginate/token"), &paginate.token);
        }
        if let Some(children) = &collect.children {
            self.condition(&format!("{at}/children"), children.as_str(), &node);
        }
        for (key, value, low, high) in [
            ("max_depth", u64::from(collect.max_depth), 1, 20),
            ("max_nodes", u64::from(collect.max_nodes), 1, 100_000),
        ] {
            if !(low..=high).contains(&value) {
                self.push(
                    Problem::at(format!("{at}/{key}"), format!("`{value}` is out of range"))
                        .expected(format!("from {low} to {high}")),
                );
            }
        }
        let render = &collect.render;
        if let Some(text) = &render.text {
            self.template(&format!("{at}/render/text"), text.as_str(), &node);
        }
        self.template(&format!("{at}/render/kind"), render.kind.as_str(), &node);
        let line = Scope::default()
            .with("node", Fields::Any)
            .with("text", Fields::Any)
            .with("depth", Fields::Any)
            .only("config", CONFIG, config.to_vec());
        for (kind, template) in &render.kinds {
            self.template(
                &format!("{at}/render/kinds/{kind}"),
                template.as_str(),
                &line,
            );
        }
        if let Some(default) = &render.default {
            self.template(&format!("{at}/render/default"), default.as_str(), &line);
        }
    }

    /// A stream's `session`: on a root stream that sends requests; its templates see what they
    /// may; its waits are bounded.
    fn session(
        &mut self,
        base: &str,
        stream: &Stream,
        session: &crate::spec::Session,
        config: &[String],
    ) {
        let at = format!("{base}/session");
        if stream.parent.is_some() || stream.archive.is_some() {
            self.push(
                Problem::at(
                    at.clone(),
                    "a session is opened once before a root stream that sends requests lists",
                )
                .on_key()
                .expected("`session:` on a stream with a `request` and no `parent`"),
            );
        }
        let config_only = Scope::default().only("config", CONFIG, config.to_vec());
        let with_session = Scope::default()
            .only("session", SESSION, ["id".to_owned(), "url".to_owned()])
            .only("config", CONFIG, config.to_vec());
        let answer = Scope::default().with("answer", Fields::Any);
        self.request(&format!("{at}/create"), &session.create, &config_only);
        self.json_path(&format!("{at}/id"), &session.id);
        self.template(&format!("{at}/url"), session.url.as_str(), &answer);
        self.request(&format!("{at}/poll"), &session.poll, &with_session);
        self.condition(&format!("{at}/ready"), session.ready.as_str(), &answer);
        if let Some(delete) = &session.delete {
            self.request_any(&format!("{at}/delete"), delete, &with_session);
        }
        let second = super::Duration::from_secs(1);
        let two_hours = super::Duration::from_secs(2 * 60 * 60);
        if session.interval < second || session.interval > two_hours {
            self.push(
                Problem::at(
                    format!("{at}/interval"),
                    format!("`{}` is out of range", session.interval),
                )
                .expected("from `1s` to `2h`"),
            );
        }
        if session.timeout < second || session.timeout > two_hours {
            self.push(
                Problem::at(
                    format!("{at}/timeout"),
                    format!("`{}` is out of range", session.timeout),
                )
                .expected("from `1s` to `2h`: a person picking photos, not a background job"),
            );
        }
    }

    /// An archive stream: its globs compile, its split fits its format, and it uses none of what
    /// only requests have (paging, incremental cursors, parents).
    fn archive(&mut self, base: &str, stream: &Stream, archive: &ArchiveEntries) {
        let at = format!("{base}/archive");
        if let Err(error) = archive.selection() {
            self.push(
                Problem::at(
                    format!("{at}/{}/{}", error.list, error.index),
                    format!("the glob does not compile: {}", error.reason),
                )
                .expected("a glob over paths inside the export: `*`, `**`, `?`, `[a-z]`, `{a,b}`"),
            );
        }
        if archive.entries.is_empty() {
            self.push(
                Problem::at(format!("{at}/entries"), "no glob names the files to read")
                    .expected("at least one glob, such as `MyData/endsong_*.json`"),
            );
        }
        if let Err(reason) = crate::decode::Decoder::for_archive(&archive.split, stream.decode) {
            self.push(
                Problem::at(format!("{at}/split"), reason).expected(
                    "`split` and the stream's `decode` that go together: `lines` with `json` or `jsonl`, `array` with `json`, `rows` with `csv`, `element` with `xml`, `messages` with `email`, `component` with `ical` or `vcard`, `whole` with any but `jsonl`",
                ),
            );
        }
        if let Some(join) = &archive.join {
            self.join(&format!("{at}/join"), join);
        }
        let only_requests = [
            ("paginate", stream.paginate != Paginate::None),
            ("incremental", stream.incremental.is_some()),
            ("parent", stream.parent.is_some()),
            ("recurse", stream.recurse.is_some()),
            ("gone", stream.gone.is_some()),
            ("scopes", !stream.scopes.is_empty()),
        ];
        for (key, present) in only_requests {
            if present {
                self.push(
                    Problem::at(
                        format!("{base}/{key}"),
                        format!("`{key}` is for streams that send requests, and this one reads an archive"),
                    )
                    .on_key()
                    .expected("no `{key}` on an archive stream (an export is read whole, every import)".replace("{key}", key)),
                );
            }
        }
        if self.spec.streams.values().any(|other| {
            other.parent.as_ref().is_some_and(|parent| {
                self.spec
                    .streams
                    .get(&parent.stream)
                    .is_some_and(|p| std::ptr::eq(p, stream))
            })
        }) {
            self.push(
                Problem::at(at, "a substream's parent reads an archive")
                    .on_key()
                    .expected("substreams only under streams that send requests"),
            );
        }
    }

    /// An archive stream's `join`: its globs, how its files decode, and its templates (over
    /// `record` and `entry`).
    fn join(&mut self, at: &str, join: &crate::spec::Join) {
        if let Err(error) = join.selection() {
            self.push(
                Problem::at(
                    format!("{at}/entries/{}", error.index),
                    format!("the glob does not compile: {}", error.reason),
                )
                .expected("a glob over paths inside the export: `*`, `**`, `?`, `[a-z]`, `{a,b}`"),
            );
        }
        if let Err(reason) = crate::decode::Decoder::for_archive(&join.split, join.decode) {
            self.push(
                Problem::at(format!("{at}/split"), reason).expected(
                    "`split` and `decode` that go together, as for the stream's own files",
                ),
            );
        }
        if join.into.is_empty() {
            self.push(
                Problem::at(
                    format!("{at}/into"),
                    "the joined document needs a key to go under",
                )
                .expected("a key such as `sidecar`"),
            );
        }
        let scope = Scope::default().with("record", Fields::Any).only(
            "entry",
            ENTRY,
            ["path", "name", "stem", "extension", "folder"].map(str::to_owned),
        );
        self.template(&format!("{at}/key"), join.key.as_str(), &scope);
        for (index, candidate) in join.candidates.iter().enumerate() {
            self.template(&format!("{at}/match/{index}"), candidate.as_str(), &scope);
        }
    }

    fn gone(&mut self, base: &str, stream: &Stream, gone: &Gone, config: &[String]) {
        let at = format!("{base}/gone");
        let Some(parent) = &stream.parent else {
            self.push(
                Problem::at(
                    at,
                    "only a substream fetches a record its parent listed, which may be gone by then",
                )
                .on_key()
                .expected("`gone:` on a stream with a `parent`"),
            );
            return;
        };
        if stream.model.is_none() {
            self.push(
                Problem::at(
                    at.clone(),
                    "a gone record is marked deleted, but this stream stores none",
                )
                .on_key()
                .expected("`model:` on the stream"),
            );
        }
        if gone.on.is_empty() {
            self.push(
                Problem::at(format!("{at}/on"), "no status means \"gone\"")
                    .expected("at least one status, such as 404"),
            );
        }
        for (index, status) in gone.on.iter().enumerate() {
            self.status(&format!("{at}/on/{index}"), *status);
        }
        let scope = Scope::default()
            .only("parent", PARENT, parent.fields.keys().cloned())
            .only("config", CONFIG, config.to_vec());
        self.template(&format!("{at}/id"), gone.id.as_str(), &scope);
    }

    fn recurse(&mut self, base: &str, stream: &Stream, recurse: &Recurse, config: &[String]) {
        let Some(parent) = &stream.parent else {
            self.push(
                Problem::at(
                    format!("{base}/recurse"),
                    "a recursing stream needs a `parent`: its first level are the parent's children",
                )
                .on_key()
                .expected("`parent` with the same fields as `recurse.fields`"),
            );
            return;
        };
        let mut names: Vec<&String> = recurse.fields.keys().collect();
        let mut parent_names: Vec<&String> = parent.fields.keys().collect();
        names.sort();
        parent_names.sort();
        if names != parent_names {
            self.push(
                Problem::at(
                    format!("{base}/recurse/fields"),
                    "the fields differ from `parent.fields`, so the request would miss values at one level",
                )
                .on_key()
                .expected(format!(
                    "the same names as parent.fields: {}",
                    parent_names
                        .iter()
                        .map(|name| name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            );
        }
        let scope =
            Scope::default()
                .with("record", Fields::Any)
                .only("config", CONFIG, config.to_vec());
        for (field, source) in &recurse.fields {
            self.value_source(
                &format!("{base}/recurse/fields/{}", pointer_segment(field)),
                source,
                &scope,
            );
        }
        if let Some(when) = &recurse.when {
            self.condition(
                &format!("{base}/recurse/when"),
                when.as_str(),
                &Scope::default().with("record", Fields::Any),
            );
        }
    }

    fn parent(&mut self, base: &str, name: &str, parent: &Parent, config: &[String]) {
        if let Some(when) = &parent.when {
            self.condition(
                &format!("{base}/parent/when"),
                when.as_str(),
                &Scope::default().with("record", Fields::Any),
            );
        }
        let at = format!("{base}/parent/stream");
        if parent.stream == name {
            self.push(
                Problem::at(at, "a stream cannot be its own parent")
                    .expected("the name of another stream"),
            );
        } else if !self.spec.streams.contains_key(&parent.stream) {
            let names: Vec<&str> = self
                .spec
                .streams
                .keys()
                .map(String::as_str)
                .filter(|other| *other != name)
                .collect();
            let mut message = format!("no stream is called `{}`", parent.stream);
            if let Some(close) = did_you_mean(&parent.stream, names.iter().copied()) {
                message = format!("{message} (did you mean `{close}`?)");
            }
            self.push(Problem::at(at, message).expected(one_of(&names)));
        }
        if parent.fields.is_empty() {
            self.push(
                Problem::at(
                    format!("{base}/parent/fields"),
                    "a parent hands nothing to its child",
                )
                .expected("at least one field, such as `calendar_id: $.id`"),
            );
        }
        let scope =
            Scope::default()
                .with("record", Fields::Any)
                .only("config", CONFIG, config.to_vec());
        for (field, source) in &parent.fields {
            self.value_source(
                &format!("{base}/parent/fields/{}", pointer_segment(field)),
                source,
                &scope,
            );
        }
    }

    pub(super) fn parent_cycles(&mut self) {
        let streams = &self.spec.streams;
        let mut reported: HashSet<BTreeSet<&str>> = HashSet::new();
        for start in streams.keys() {
            let mut chain: Vec<&str> = vec![start];
            let mut current = start.as_str();
            while let Some(parent) = streams
                .get(current)
                .and_then(|stream| stream.parent.as_ref())
            {
                let next = parent.stream.as_str();
                if next == current || !streams.contains_key(next) {
                    break; // reported by `parent`
                }
                if let Some(position) = chain.iter().position(|name| *name == next) {
                    let cycle = &chain[position..];
                    if reported.insert(cycle.iter().copied().collect()) {
                        let mut shown: Vec<&str> = cycle.to_vec();
                        shown.push(next);
                        self.push(
                            Problem::at(
                                // The walk started at the cycle's first-declared stream; its
                                // parent link is the likely surprise.
                                pointer(&["streams", cycle[0], "parent", "stream"]),
                                format!("parents form a cycle: {}", shown.join(" → ")),
                            )
                            .expected("parent links that end at a stream without a parent"),
                        );
                    }
                    break;
                }
                chain.push(next);
                current = next;
            }
        }
    }

    fn request(&mut self, at: &str, request: &Request, scope: &Scope) {
        if request.method == crate::spec::Method::Delete {
            self.push(
                Problem::at(
                    format!("{at}/method"),
                    "an import never deletes a person's data at the provider",
                )
                .expected("`GET`, `POST`, `PUT` or `PATCH` (`DELETE` only in `session.delete`)"),
            );
        }
        self.request_any(at, request, scope);
    }

    /// A request of any method (`session.delete` deletes what the engine made).
    fn request_any(&mut self, at: &str, request: &Request, scope: &Scope) {
        let path = request.path.as_str();
        if path.starts_with("http://") || path.starts_with("https://") {
            self.absolute_template_url(&format!("{at}/path"), path);
        } else if !(path.starts_with('/') || path.starts_with("{{")) {
            self.push(
                Problem::at(
                    format!("{at}/path"),
                    format!("`{path}` is neither a path nor a URL"),
                )
                .expected(format!(
                    "a path starting with `/` (such as `/{path}`), or an https URL"
                )),
            );
        }
        self.template(&format!("{at}/path"), path, scope);
        for (name, value) in &request.query {
            self.template(
                &format!("{at}/query/{}", pointer_segment(name)),
                value.as_str(),
                scope,
            );
        }
        for (name, value) in &request.headers {
            self.template(
                &format!("{at}/headers/{}", pointer_segment(name)),
                value.as_str(),
                scope,
            );
        }
        match &request.body {
            None => {}
            Some(Body::Json(document)) => {
                self.json_templates(&format!("{at}/body/json"), document, scope)
            }
            Some(Body::Form(fields)) => {
                for (name, value) in fields {
                    self.template(
                        &format!("{at}/body/form/{}", pointer_segment(name)),
                        value.as_str(),
                        scope,
                    );
                }
            }
        }
        if request.body.is_some() && request.method == Method::Get {
            self.push(
                Problem::at(format!("{at}/method"), "a GET request with a body")
                    .expected("`POST`, `PUT` or `PATCH` for a request with a body"),
            );
        }
    }

    /// An absolute URL that may be a template: its host must be written out and allowed.
    fn absolute_template_url(&mut self, at: &str, text: &str) {
        let literal_prefix = text.split("{{").next().unwrap_or_default();
        let after_scheme = literal_prefix
            .split_once("://")
            .map_or("", |(_, rest)| rest);
        if !after_scheme.contains('/') && literal_prefix.len() < text.len() {
            self.push(
                Problem::at(at, "the host of this URL is a template").expected(
                    "a URL whose scheme and host are written out, so the host can be checked",
                ),
            );
            return;
        }
        let checkable = if literal_prefix.len() < text.len() {
            literal_prefix
        } else {
            text
        };
        self.url(at, checkable, true);
    }

    fn json_templates(&mut self, at: &str, document: &serde_json::Value, scope: &Scope) {
        match document {
            serde_json::Value::String(text) => self.template(at, text, scope),
            serde_json::Value::Array(items) => {
                for (index, item) in items.iter().enumerate() {
                    self.json_templates(&format!("{at}/{index}"), item, scope);
                }
            }
            serde_json::Value::Object(fields) => {
                for (name, value) in fields {
                    self.json_templates(&format!("{at}/{}", pointer_segment(name)), value, scope);
                }
            }
            _ => {}
        }
    }

    fn paginate(&mut self, at: &str, paginate: &Paginate, scope: &Scope, json_body: bool) {
        let stop_scope = Scope::default()
            .with("response", Fields::Any)
            .with("page", Fields::Any);
        let stop_when = match paginate {
            Paginate::None => None,
            Paginate::Cursor {
                token,
                param,
                location,
                next_request,
                stop_when,
            } => {
                self.json_path(&format!("{at}/token"), token);
                self.param_name(&format!("{at}/param"), param);
                self.body_location(&format!("{at}/location"), *location, json_body);
                if let Some(request) = next_request {
                    self.request(&format!("{at}/next_request"), request, scope);
                }
                stop_when.as_ref()
            }
            Paginate::NextUrl { from, stop_when } => {
                if let NextUrlSource::Body(path) = from {
                    self.json_path(&format!("{at}/from/body"), path);
                }
                stop_when.as_ref()
            }
            Paginate::OffsetLimit {
                offset_param,
                limit_param,
                limit,
                location,
                stop_when,
            } => {
                self.param_name(&format!("{at}/offset_param"), offset_param);
                self.param_name(&format!("{at}/limit_param"), limit_param);
                self.positive(&format!("{at}/limit"), *limit);
                self.body_location(&format!("{at}/location"), *location, json_body);
                stop_when.as_ref()
            }
            Paginate::PageNumber {
                page_param,
                size_param,
                size,
                stop_when,
                ..
            } => {
                self.param_name(&format!("{at}/page_param"), page_param);
                if let Some(size_param) = size_param {
                    self.param_name(&format!("{at}/size_param"), size_param);
                }
                if let Some(size) = size {
                    self.positive(&format!("{at}/size"), *size);
                }
                if size_param.is_some() != size.is_some() {
                    self.push(
                        Problem::at(at, "`size_param` and `size` go together")
                            .on_key()
                            .expected("both `size_param` and `size`, or neither"),
                    );
                }
                stop_when.as_ref()
            }
        };
        if let Some(condition) = stop_when {
            self.condition(&format!("{at}/stop_when"), condition.as_str(), &stop_scope);
        }
    }

    fn param_name(&mut self, at: &str, name: &str) {
        if name.trim().is_empty() {
            self.push(
                Problem::at(at, "the parameter name is empty")
                    .expected("a parameter name such as `pageToken`"),
            );
        }
    }

    fn positive(&mut self, at: &str, number: u32) {
        if number == 0 {
            self.push(Problem::at(at, "a page size of zero").expected("at least 1"));
        }
    }

    fn body_location(&mut self, at: &str, location: ParamLocation, json_body: bool) {
        if location == ParamLocation::Body && !json_body {
            self.push(
                Problem::at(at, "a body parameter, but the request has no JSON body")
                    .expected("`query`, or a request with `body: {json: ...}`"),
            );
        }
    }

    fn map(&mut self, base: &str, name: &str, stream: &Stream, scope: &Scope) {
        let Some(model) = stream.model else {
            if !stream.map.is_empty() {
                self.push(
                    Problem::at(
                        format!("{base}/map"),
                        "the stream maps fields but has no `model`",
                    )
                    .on_key()
                    .expected("`model:` naming the model these fields belong to"),
                );
            }
            let streams = &self.spec.streams;
            let feeds = streams.values().any(|other| {
                other
                    .parent
                    .as_ref()
                    .is_some_and(|parent| parent.stream == name)
            });
            // A misspelt `parent.stream` elsewhere is reported there; this would only echo it.
            let dangling = streams.values().any(|other| {
                other
                    .parent
                    .as_ref()
                    .is_some_and(|parent| !streams.contains_key(&parent.stream))
            });
            if !feeds && !dangling {
                self.push(
                    Problem::at(
                        base,
                        "the stream has no `model` and feeds no substream, so it imports nothing",
                    )
                    .on_key()
                    .expected("`model:` and `map:`, or a substream naming it in `parent.stream`"),
                );
            }
            return;
        };
        for (field_name, mapping) in &stream.map {
            let at = format!("{base}/map/{}", pointer_segment(field_name));
            if PROVENANCE_FIELDS.contains(&field_name.as_str())
                || field_name == crate::models::PROVIDER_ID
            {
                let expected = if field_name == "source_object_id" {
                    "the stream's `id` to say where the record's id is"
                } else if field_name == crate::models::PROVIDER_ID {
                    "the stream's `id` (the provider's id) beside its `key` (the record's identity)"
                } else {
                    "no mapping: the engine sets it"
                };
                self.push(
                    Problem::at(at, format!("`{field_name}` is set by the engine"))
                        .on_key()
                        .expected(expected),
                );
                continue;
            }
            let Some(field) = model.field(field_name) else {
                let names: Vec<&str> = model.fields().iter().map(|field| field.name).collect();
                let mut message = format!("model `{}` has no field `{field_name}`", model.name());
                if let Some(close) = did_you_mean(field_name, names.iter().copied()) {
                    message = format!("{message} (did you mean `{close}`?)");
                }
                self.push(Problem::at(at, message).on_key().expected(format!(
                    "a field of `{}`: {}",
                    model.name(),
                    names.join(", ")
                )));
                continue;
            };
            let source_at = match mapping {
                FieldMapping::Short(_) => at.clone(),
                FieldMapping::Full(_) => format!("{at}/from"),
            };
            self.value_source(&source_at, mapping.source(), scope);
            if let Some(pattern) = mapping.format() {
                let problem =
                    if !matches!(field.kind, ValueKind::DateTime | ValueKind::DateOrDateTime) {
                        Some(format!(
                            "`format` reads date-times, and this field takes {}",
                            field.kind.describe()
                        ))
                    } else if mapping.conversion().is_some() {
                        Some(
                            "`format` says how the date-time is written; `as` would say it again"
                                .to_owned(),
                        )
                    } else if pattern.len() > 64 {
                        Some("the pattern is longer than 64 characters".to_owned())
                    } else {
                        crate::convert::pattern_problem(pattern).map(|reason| {
                            format!("`{pattern}` is not a date-time pattern: {reason}")
                        })
                    };
                if let Some(problem) = problem {
                    self.push(Problem::at(format!("{at}/format"), problem).expected(
                        "a strftime pattern such as `%Y-%m-%d %H:%M:%S %z`, on a date-time field, without `as`",
                    ));
                }
            }
            if let Some(scale) = mapping.scale() {
                let numeric = matches!(field.kind, ValueKind::Number | ValueKind::Integer)
                    && mapping.conversion().is_none_or(|conversion| {
                        matches!(conversion.output(), ValueKind::Number | ValueKind::Integer)
                    });
                if !numeric || !scale.is_finite() || scale == 0.0 {
                    self.push(
                        Problem::at(format!("{at}/scale"), format!("`scale: {scale}` multiplies numbers, and this field takes {}", field.kind.describe()))
                            .on_key()
                            .expected("`scale` only on number and whole-number fields, a finite factor other than 0"),
                    );
                }
            }
            if let Some(separator) = mapping.split()
                && (field.kind != ValueKind::Array
                    || separator.is_empty()
                    || mapping.conversion().is_some()
                    || mapping.format().is_some())
            {
                self.push(
                    Problem::at(
                        format!("{at}/split"),
                        format!(
                            "`split: {separator:?}` makes a list of text, and `{}` holds {}",
                            field.name,
                            field.kind.describe()
                        ),
                    )
                    .on_key()
                    .expected("`split` with a non-empty separator, on a list field, without `as` or `format`"),
                );
            }
            if let Some(conversion) = mapping.conversion()
                && !conversion.output().fits(field.kind)
            {
                self.push(
                    Problem::at(
                        format!("{at}/as"),
                        format!(
                            "`{}` holds {}, but this conversion makes {}",
                            field.name,
                            field.kind.describe(),
                            conversion.output().describe()
                        ),
                    )
                    .expected(format!("a conversion that makes {}", field.kind.describe())),
                );
            }
            if let ValueSource::Template(text) = mapping.source()
                && !field.choices.is_empty()
                && template::is_literal(text.as_str())
                && !field.choices.contains(&text.as_str())
            {
                self.push(
                    Problem::at(
                        source_at,
                        format!("`{text}` is not a value of `{}`", field.name),
                    )
                    .expected(one_of(field.choices)),
                );
            }
        }
        let missing: Vec<&str> = model
            .fields()
            .iter()
            .filter(|field| field.required && !stream.map.contains_key(field.name))
            .map(|field| field.name)
            .collect();
        for name in missing {
            let description = model
                .field(name)
                .map_or(String::new(), |field| sentence_fragment(field.description));
            self.push(
                Problem::at(
                    format!("{base}/map"),
                    format!(
                        "model `{}` requires `{name}`, which is not mapped",
                        model.name()
                    ),
                )
                .on_key()
                .expected(format!("`{name}`: {description}")),
            );
        }
        if stream.map.is_empty() && model.fields().iter().all(|field| !field.required) {
            self.push(
                Problem::at(format!("{base}/map"), "nothing is mapped")
                    .on_key()
                    .expected("at least one field"),
            );
        }
    }
}

/// The `page.*` names a paginator's requests see.
fn page_fields(paginate: &Paginate) -> Vec<String> {
    let names: &[&str] = match paginate {
        Paginate::None => &[],
        Paginate::Cursor { .. } => &["token"],
        Paginate::NextUrl { .. } => &["url"],
        Paginate::OffsetLimit { .. } => &["offset", "limit"],
        Paginate::PageNumber { .. } => &["number", "size"],
    };
    names.iter().map(|name| (*name).to_owned()).collect()
}
