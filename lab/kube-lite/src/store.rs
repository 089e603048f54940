//! The in-memory object store: one ordered map per resource, a global resourceVersion counter,
//! a bounded ring of recent events per resource (the watch cache / compaction window) and a
//! broadcast channel per resource for live watchers.

use crate::error::{ApiError, ApiResult};
use crate::resources::{Gr, Registry};
use crate::util::{meta_mut, meta_str, resource_version};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use tokio::sync::broadcast;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// A stored object with its JSON serialisation (made once per write, reused by lists and watches).
#[derive(Clone, Debug)]
pub struct Stored {
    pub obj: Arc<Value>,
    pub json: bytes::Bytes,
}

impl Stored {
    pub fn new(obj: Arc<Value>) -> Self {
        let json = serde_json::to_vec(&*obj)
            .map(bytes::Bytes::from)
            .unwrap_or_default();
        Stored { obj, json }
    }
}

/// A change to one object.
#[derive(Debug)]
pub struct Event {
    pub rv: u64,
    pub kind: EventType,
    pub obj: Arc<Value>,
    /// The object before the change (for MODIFIED/DELETED), used for selector transitions.
    pub prev: Option<Arc<Value>>,
    /// Lazily serialized `obj`, shared by all watchers.
    json: OnceLock<bytes::Bytes>,
}

impl Event {
    fn with_json(rv: u64, kind: EventType, stored: &Stored, prev: Option<Arc<Value>>) -> Self {
        let json = OnceLock::new();
        let _ = json.set(stored.json.clone());
        Event {
            rv,
            kind,
            obj: stored.obj.clone(),
            prev,
            json,
        }
    }
    pub fn new(rv: u64, kind: EventType, obj: Arc<Value>, prev: Option<Arc<Value>>) -> Self {
        Event {
            rv,
            kind,
            obj,
            prev,
            json: OnceLock::new(),
        }
    }
    pub fn obj_json(&self) -> bytes::Bytes {
        self.json
            .get_or_init(|| {
                serde_json::to_vec(&*self.obj)
                    .map(bytes::Bytes::from)
                    .unwrap_or_default()
            })
            .clone()
    }
}

/// (namespace, name); namespace is "" for cluster-scoped objects.
pub type Key = (String, String);

/// One resource's objects and recent events.
pub struct Table {
    pub objects: BTreeMap<Key, Stored>,
    ring: VecDeque<Arc<Event>>,
    /// Watching from a resourceVersion below this one needs events that were compacted away.
    floor: u64,
    tx: Option<broadcast::Sender<Arc<Event>>>,
}

/// Size of the broadcast buffer per resource; a lagging watcher resyncs from the ring.
const BROADCAST_CAPACITY: usize = 4096;

impl Table {
    fn new(floor: u64) -> Self {
        Table {
            objects: BTreeMap::new(),
            ring: VecDeque::new(),
            floor,
            tx: None,
        }
    }

    /// A receiver of this resource's events from now on; the channel opens with the first watcher.
    fn subscribe(&mut self) -> broadcast::Receiver<Arc<Event>> {
        self.tx
            .get_or_insert_with(|| broadcast::channel(BROADCAST_CAPACITY).0)
            .subscribe()
    }
}

pub struct Inner {
    pub rv: u64,
    pub registry: Registry,
    pub tables: HashMap<Gr, Table>,
    /// uid -> (resource, key) for owner lookups
    pub uids: HashMap<String, (Gr, Key)>,
    /// ring capacity (events kept per resource)
    pub window: usize,
}

/// What a watcher starts from.
/// Events to replay plus a live receiver.
pub type Resync = (Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>);

pub struct WatchStart {
    pub initial: Vec<Arc<Event>>,
    pub rx: broadcast::Receiver<Arc<Event>>,
    /// Current global resourceVersion at subscription time.
    pub rv: u64,
}

/// Precondition for a write.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Expect {
    /// The object must not exist.
    Absent,
    /// The object must exist at exactly this resourceVersion.
    Rv(u64),
    /// The object must exist (any version).
    Exists,
}

pub struct Store {
    inner: RwLock<Inner>,
}

impl Store {
    pub fn new(registry: Registry, window: usize) -> Self {
        Store {
            inner: RwLock::new(Inner {
                rv: 1,
                registry,
                tables: HashMap::new(),
                uids: HashMap::new(),
                window: window.max(1),
            }),
        }
    }

    pub fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    pub fn get(&self, gr: &Gr, key: &Key) -> Option<Arc<Value>> {
        self.tables.get(gr)?.objects.get(key).map(|s| s.obj.clone())
    }

    pub fn get_stored(&self, gr: &Gr, key: &Key) -> Option<Stored> {
        self.tables.get(gr)?.objects.get(key).cloned()
    }

    /// Objects of a resource, optionally within a namespace, in key order, starting after `after`.
    pub fn list(&self, gr: &Gr, ns: Option<&str>, after: Option<&Key>) -> Vec<Arc<Value>> {
        self.list_stored(gr, ns, after)
            .into_iter()
            .map(|s| s.obj)
            .collect()
    }

    /// Like [`Inner::list`], with each object's serialisation.
    pub fn list_stored(&self, gr: &Gr, ns: Option<&str>, after: Option<&Key>) -> Vec<Stored> {
        self.range(gr, ns, after).cloned().collect()
    }

    /// Iterate a resource's objects in key order (optionally one namespace, after a key).
    pub fn range<'a>(
        &'a self,
        gr: &Gr,
        ns: Option<&'a str>,
        after: Option<&Key>,
    ) -> impl Iterator<Item = &'a Stored> + 'a {
        use std::ops::Bound::*;
        let lower = match (after, ns) {
            (Some(k), _) => Excluded(k.clone()),
            (None, Some(ns)) => Included((ns.to_string(), String::new())),
            (None, None) => Unbounded,
        };
        self.tables
            .get(gr)
            .into_iter()
            .flat_map(move |t| t.objects.range((lower.clone(), Unbounded)))
            .take_while(move |((kns, _), _)| ns.is_none_or(|ns| kns == ns))
            .map(|(_, v)| v)
    }

    pub fn count(&self, gr: &Gr) -> usize {
        self.tables.get(gr).map_or(0, |t| t.objects.len())
    }

    fn table(&mut self, gr: &Gr) -> &mut Table {
        self.tables
            .entry(gr.clone())
            .or_insert_with(|| Table::new(0))
    }

    fn record(&mut self, gr: &Gr, ev: Event) {
        let window = self.window;
        let t = self.table(gr);
        let ev = Arc::new(ev);
        t.ring.push_back(ev.clone());
        while t.ring.len() > window {
            if let Some(old) = t.ring.pop_front() {
                t.floor = old.rv;
            }
        }
        if let Some(tx) = &t.tx {
            // no receivers is fine
            let _ = tx.send(ev);
        }
    }

    /// Insert or replace an object, stamping a new resourceVersion. Emits ADDED/MODIFIED.
    pub fn put(&mut self, gr: &Gr, mut obj: Value, expect: Expect) -> ApiResult<Arc<Value>> {
        let key = (
            meta_str(&obj, "namespace").to_string(),
            meta_str(&obj, "name").to_string(),
        );
        let prev = self.get(gr, &key);
        match (expect, &prev) {
            (Expect::Absent, Some(_)) => {
                return Err(ApiError::already_exists(&gr.0, &gr.1, &key.1));
            }
            (Expect::Rv(_) | Expect::Exists, None) => {
                return Err(ApiError::not_found(&gr.0, &gr.1, &key.1));
            }
            (Expect::Rv(rv), Some(p)) if resource_version(p) != Some(rv) => {
                return Err(ApiError::stale(&gr.0, &gr.1, &key.1));
            }
            _ => {}
        }
        self.rv += 1;
        let rv = self.rv;
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(rv.to_string()));
        let uid = meta_str(&obj, "uid").to_string();
        let stored = Stored::new(Arc::new(obj));
        self.table(gr).objects.insert(key.clone(), stored.clone());
        if !uid.is_empty() {
            self.uids.insert(uid, (gr.clone(), key));
        }
        let kind = if prev.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.record(gr, Event::with_json(rv, kind, &stored, prev));
        Ok(stored.obj)
    }

    /// Remove an object. Emits DELETED carrying the final object with a new resourceVersion.
    pub fn remove(&mut self, gr: &Gr, key: &Key, expect: Expect) -> ApiResult<Arc<Value>> {
        let Some(prev) = self.get(gr, key) else {
            return Err(ApiError::not_found(&gr.0, &gr.1, &key.1));
        };
        if let Expect::Rv(rv) = expect
            && resource_version(&prev) != Some(rv)
        {
            return Err(ApiError::stale(&gr.0, &gr.1, &key.1));
        }
        self.rv += 1;
        let rv = self.rv;
        let mut last = (*prev).clone();
        meta_mut(&mut last).insert("resourceVersion".into(), json!(rv.to_string()));
        let last = Arc::new(last);
        if let Some(t) = self.tables.get_mut(gr) {
            t.objects.remove(key);
        }
        let uid = meta_str(&prev, "uid");
        if !uid.is_empty() {
            self.uids.remove(uid);
        }
        self.record(
            gr,
            Event::new(rv, EventType::Deleted, last.clone(), Some(prev)),
        );
        Ok(last)
    }

    /// Subscribe to a resource's changes after `from` (None: current state as ADDED events).
    /// Err(floor) when `from` is older than the compaction window.
    pub fn watch(
        &mut self,
        gr: &Gr,
        ns: Option<&str>,
        from: Option<u64>,
    ) -> Result<WatchStart, u64> {
        let rv = self.rv;
        let initial = match from {
            None => self
                .list_stored(gr, ns, None)
                .into_iter()
                .map(|st| {
                    let rv = resource_version(&st.obj).unwrap_or(0);
                    Arc::new(Event::with_json(rv, EventType::Added, &st, None))
                })
                .collect(),
            Some(from) => self.events_after(gr, from)?,
        };
        let t = self.table(gr);
        let rx = t.subscribe();
        Ok(WatchStart { initial, rx, rv })
    }

    /// Events of a resource with rv > from, or Err(floor) if compacted.
    pub fn events_after(&mut self, gr: &Gr, from: u64) -> Result<Vec<Arc<Event>>, u64> {
        let t = self.table(gr);
        if from < t.floor {
            return Err(t.floor);
        }
        let start = t.ring.partition_point(|e| e.rv <= from);
        Ok(t.ring.iter().skip(start).cloned().collect())
    }

    /// Resubscribe after lagging: events after `from` and a fresh receiver.
    pub fn resync(&mut self, gr: &Gr, from: u64) -> Result<Resync, u64> {
        let evs = self.events_after(gr, from)?;
        let t = self.table(gr);
        let rx = t.subscribe();
        Ok((evs, rx))
    }

    /// Drop all buffered events: watches from any older resourceVersion now get 410.
    pub fn compact(&mut self) {
        let rv = self.rv;
        for t in self.tables.values_mut() {
            t.ring.clear();
            t.floor = rv;
        }
    }

    /// Drop a whole resource (CRD deleted), emitting DELETED for each object.
    pub fn drop_resource(&mut self, gr: &Gr) {
        let keys: Vec<Key> = self
            .tables
            .get(gr)
            .map(|t| t.objects.keys().cloned().collect())
            .unwrap_or_default();
        for k in keys {
            let _ = self.remove(gr, &k, Expect::Exists);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gr() -> Gr {
        ("".into(), "configmaps".into())
    }
    fn cm(ns: &str, name: &str) -> Value {
        json!({"metadata": {"namespace": ns, "name": name, "uid": format!("{ns}-{name}")}})
    }

    #[test]
    fn put_get_list_remove() {
        let s = Store::new(Registry::with_builtins(), 100);
        let mut w = s.write();
        let a = w.put(&gr(), cm("a", "x"), Expect::Absent).unwrap();
        assert_eq!(resource_version(&a), Some(2));
        assert_eq!(
            w.put(&gr(), cm("a", "x"), Expect::Absent).unwrap_err().code,
            409
        );
        w.put(&gr(), cm("b", "y"), Expect::Absent).unwrap();
        w.put(&gr(), cm("a", "z"), Expect::Absent).unwrap();
        assert_eq!(w.list(&gr(), Some("a"), None).len(), 2);
        assert_eq!(w.list(&gr(), None, None).len(), 3);
        assert_eq!(
            w.list(&gr(), Some("a"), Some(&("a".into(), "x".into())))
                .len(),
            1
        );
        assert_eq!(
            w.put(&gr(), cm("a", "x"), Expect::Rv(1))
                .unwrap_err()
                .reason,
            "Conflict"
        );
        let upd = w.put(&gr(), cm("a", "x"), Expect::Rv(2)).unwrap();
        assert_eq!(resource_version(&upd), Some(5));
        assert!(w.uids.contains_key("a-x"));
        let gone = w
            .remove(&gr(), &("a".into(), "x".into()), Expect::Exists)
            .unwrap();
        assert_eq!(resource_version(&gone), Some(6));
        assert!(!w.uids.contains_key("a-x"));
        assert_eq!(
            w.remove(&gr(), &("a".into(), "x".into()), Expect::Exists)
                .unwrap_err()
                .code,
            404
        );
    }

    #[test]
    fn watch_window_and_compaction() {
        let s = Store::new(Registry::with_builtins(), 3);
        let mut w = s.write();
        for i in 0..5 {
            w.put(&gr(), cm("a", &format!("o{i}")), Expect::Absent)
                .unwrap();
        }
        // rvs 2..=6; ring keeps 4,5,6 so floor is 3
        assert_eq!(w.events_after(&gr(), 1).unwrap_err(), 3);
        let evs = w.events_after(&gr(), 4).unwrap();
        assert_eq!(evs.iter().map(|e| e.rv).collect::<Vec<_>>(), vec![5, 6]);
        let start = w.watch(&gr(), None, None).unwrap();
        assert_eq!(start.initial.len(), 5);
        w.compact();
        assert!(w.events_after(&gr(), 5).is_err());
        assert!(w.events_after(&gr(), 6).is_ok());
    }
}
