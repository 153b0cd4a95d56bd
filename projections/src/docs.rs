use std::collections::BTreeMap;

/// The documents a batch of events works on: those loaded from the store,
/// plus what the events changed. Ordered by key so that writing the changes
/// back is deterministic.
#[derive(Debug, Clone)]
pub struct DocMap<D> {
    entries: BTreeMap<String, Entry<D>>,
}

#[derive(Debug, Clone)]
struct Entry<D> {
    doc: Option<D>,
    changed: bool,
}

impl<D> Default for DocMap<D> {
    fn default() -> Self {
        DocMap {
            entries: BTreeMap::new(),
        }
    }
}

impl<D: Clone> DocMap<D> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records what the store holds for `key` (`None`: no document).
    pub fn loaded(&mut self, key: String, doc: Option<D>) {
        self.entries.entry(key).or_insert(Entry {
            doc,
            changed: false,
        });
    }

    /// Whether the store has been asked for `key` already.
    pub fn knows(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    pub fn get(&self, key: &str) -> Option<&D> {
        self.entries.get(key).and_then(|e| e.doc.as_ref())
    }

    /// The document for changing in place, created from `default` when absent.
    pub fn upsert_with(&mut self, key: &str, default: impl FnOnce() -> D) -> &mut D {
        let entry = self.entries.entry(key.to_owned()).or_insert(Entry {
            doc: None,
            changed: false,
        });
        entry.changed = true;
        entry.doc.get_or_insert_with(default)
    }

    /// The existing document for changing in place.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut D> {
        let entry = self.entries.get_mut(key)?;
        let doc = entry.doc.as_mut()?;
        entry.changed = true;
        Some(doc)
    }

    pub fn put(&mut self, key: &str, doc: D) {
        let entry = self.entries.entry(key.to_owned()).or_insert(Entry {
            doc: None,
            changed: false,
        });
        entry.changed = true;
        entry.doc = Some(doc);
    }

    pub fn remove(&mut self, key: &str) {
        if let Some(entry) = self.entries.get_mut(key) {
            entry.changed |= entry.doc.is_some();
            entry.doc = None;
        }
    }

    /// Every document changed since loading, in key order (`None`: deleted).
    pub fn changes(&self) -> impl Iterator<Item = (&str, Option<&D>)> {
        self.entries
            .iter()
            .filter(|(_, e)| e.changed)
            .map(|(k, e)| (k.as_str(), e.doc.as_ref()))
    }

    /// Every document held, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &D)> {
        self.entries
            .iter()
            .filter_map(|(k, e)| e.doc.as_ref().map(|d| (k.as_str(), d)))
    }

    /// Forgets which documents changed, after they were written.
    pub fn mark_clean(&mut self) {
        for e in self.entries.values_mut() {
            e.changed = false;
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
