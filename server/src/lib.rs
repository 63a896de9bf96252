//! The Hypernet Connect service: OAuth connect, scheduled syncs and a web page over the engine.
//!
//! Not built yet; see the open issue "The service: `connector serve`". The crate exists so the
//! workspace layout is the one the README documents.
