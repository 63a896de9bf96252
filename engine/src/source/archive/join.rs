//! Joins: documents of other files of an export put into the documents a stream reads. Google
//! Takeout writes each photo's metadata to a sidecar (`IMG_1234.JPG.supplemental-metadata.json`,
//! with names clipped at 51 characters); Apple's privacy export lists its photos' facts in
//! `Photo Details.csv`. Neither is a record: each completes one.
//!
//! Before a stream's own files are read, the joined files' documents are indexed by their `key`
//! (their JSON text kept, at most [`MAX_JOIN_BYTES`] in all); each document read then looks up
//! its `match` keys in turn and gets the first found under `into`.

use std::collections::HashMap;

use serde_json::Value;

use super::{ArchiveError, EntryInfo, Export, Flow, entry_value};
use crate::decode::{DecodeError, Decoder, FramePosition};
use crate::spec::Selection;
use crate::template::{TemplateId, Templates};

/// The most bytes of joined documents an import holds: a Takeout of 100,000 photos has about
/// 80 MB of sidecars.
pub const MAX_JOIN_BYTES: usize = 256 << 20;

/// How a stream joins other files' documents, compiled once.
#[derive(Debug)]
pub struct JoinPlan {
    /// The files joined.
    pub selection: Selection,
    /// How each splits and decodes.
    pub decoder: Decoder,
    /// What in each document is indexed, when not the document itself.
    pub select: Option<crate::extract::CompiledPath>,
    /// The templates below.
    pub templates: Templates,
    /// Each joined document's key.
    pub key: TemplateId,
    /// The keys a document looks up, in order.
    pub candidates: Vec<TemplateId>,
    /// Where the joined document goes.
    pub into: String,
    /// The largest joined document, in bytes.
    pub max_document: usize,
}

/// Why the joined files could not be indexed.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The export itself.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// A joined document that does not decode, or whose key does not render.
    #[error("`{entry}` (joined): {reason}")]
    Document {
        /// The joined file.
        entry: String,
        /// What is wrong.
        reason: String,
    },
    /// Too much to hold.
    #[error(
        "the export's joined files hold more than {} MiB of documents; the import would not fit in memory",
        MAX_JOIN_BYTES >> 20
    )]
    TooLarge,
}

/// The joined documents, by key (as JSON text: a tenth of the memory of a parsed tree).
#[derive(Debug, Default)]
pub struct JoinIndex {
    documents: HashMap<String, Box<str>>,
    bytes: usize,
}

impl JoinIndex {
    /// Reads and indexes every joined document of `export`.
    pub fn build(export: &Export, plan: &JoinPlan) -> Result<Self, JoinError> {
        let mut index = Self::default();
        let wanted = |path: &str| plan.selection.matches(path);
        export.try_each_entry(&wanted, 0, &mut |entry, reader| {
            index
                .add_entry(plan, entry, reader)
                .map(|()| Flow::Continue)
        })?;
        Ok(index)
    }

    fn add_entry(
        &mut self,
        plan: &JoinPlan,
        entry: &EntryInfo,
        reader: &mut dyn std::io::BufRead,
    ) -> Result<(), JoinError> {
        let failed = |reason: String| JoinError::Document {
            entry: entry.path.clone(),
            reason,
        };
        let file = entry_value(&entry.path);
        let mut frames = plan
            .decoder
            .frames(reader, FramePosition::default(), plan.max_document)
            .map_err(|error| failed(error.to_string()))?;
        while let Some(frame) = frames
            .next_frame()
            .map_err(|error: DecodeError| failed(error.to_string()))?
        {
            let document = plan
                .decoder
                .frame_value(frame)
                .map_err(|error| failed(error.to_string()))?;
            let selected = match &plan.select {
                None => vec![document],
                Some(path) => {
                    let tree = crate::decode::document::Document::from_value(document);
                    let mut selected = Vec::new();
                    path.for_each(&crate::extract::Target::new(tree.root()), |node| {
                        selected.push(Value::from(node));
                    });
                    selected
                }
            };
            for document in selected {
                self.add_document(plan, &file, document).map_err(&failed)?;
            }
        }
        Ok(())
    }

    /// Indexes one joined document under its key.
    fn add_document(
        &mut self,
        plan: &JoinPlan,
        file: &minijinja::Value,
        document: Value,
    ) -> Result<(), String> {
        let context = minijinja::context! {
            record => minijinja::Value::from(minijinja::value::Serde(&document)),
            entry => file.clone(),
        };
        let key = plan
            .templates
            .render(&plan.key, &context)
            .map_err(|error| format!("join.key: {error}"))?;
        let text = document.to_string();
        self.bytes += key.len() + text.len();
        if self.bytes > MAX_JOIN_BYTES {
            return Err(JoinError::TooLarge.to_string());
        }
        // The first of several documents with one key stands (a photo listed twice).
        self.documents
            .entry(key)
            .or_insert_with(|| text.into_boxed_str());
        Ok(())
    }

    /// The joined document for `document`, read from the file `entry`: the first of its `match`
    /// keys found. A key that does not render is no match.
    pub fn find(
        &self,
        plan: &JoinPlan,
        document: &Value,
        entry: &minijinja::Value,
    ) -> Option<Value> {
        if self.documents.is_empty() {
            return None;
        }
        let context = minijinja::context! {
            record => minijinja::Value::from(minijinja::value::Serde(document)),
            entry => entry.clone(),
        };
        plan.candidates.iter().find_map(|candidate| {
            let key = plan.templates.render(candidate, &context).ok()?;
            let text = self.documents.get(&key)?;
            serde_json::from_str(text).ok()
        })
    }

    /// How many documents are indexed.
    pub fn len(&self) -> usize {
        self.documents.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.documents.is_empty()
    }
}
