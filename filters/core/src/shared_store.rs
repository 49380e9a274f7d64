//! A key-value store with compare-and-swap versions, as proxy-wasm shared data is: one
//! store for all worker threads of a VM id. The DPoP replay cache and the JWKS fetch lease
//! use it; the filters back it with host calls, tests with [`MemoryStore`].

/// A key-value store with compare-and-swap versions (proxy-wasm shared data).
pub trait SharedStore {
    /// The value and its version; `(None, None)` when the key does not exist.
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>);
    /// Writes `value`. With `cas`, only if the key's version is still `cas`.
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    /// The key changed since it was read.
    CasMismatch,
    /// Any other host failure.
    Failed,
}

/// The version sent when writing a key that was missing: create it, but never overwrite one
/// another worker created meanwhile. Envoy (proxy-wasm-cpp-host `SharedData::set`) checks
/// a non-zero CAS only for existing keys; versions come from one counter starting at 1, so
/// an existing key carries `u32::MAX` only for the moment that counter passes it.
pub const CREATE_ONLY: u32 = u32::MAX;

/// The version to send for a write after a read that returned `cas` (None: the key was
/// missing, so the write must only create it).
pub fn version_for_write(cas: Option<u32>) -> Option<u32> {
    Some(cas.unwrap_or(CREATE_ONLY))
}

/// An in-memory [`SharedStore`] with Envoy's CAS semantics, for tests and native tools.
/// Keys to (value, version), and the last version handed out.
type Versioned = (std::collections::HashMap<String, (Vec<u8>, u32)>, u32);

#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: std::sync::Mutex<Versioned>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }
    /// Number of keys.
    pub fn len(&self) -> usize {
        self.inner.lock().map(|g| g.0.len()).unwrap_or(0)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Total bytes held in values.
    pub fn value_bytes(&self) -> usize {
        self.inner
            .lock()
            .map(|g| g.0.values().map(|(v, _)| v.len()).sum())
            .unwrap_or(0)
    }
}

impl SharedStore for MemoryStore {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        match self.inner.lock() {
            Ok(g) => match g.0.get(key) {
                Some((v, c)) => (Some(v.clone()), Some(*c)),
                None => (None, None),
            },
            Err(_) => (None, None),
        }
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        let mut g = self.inner.lock().map_err(|_| StoreError::Failed)?;
        // Envoy: versions start at 1 and never 0; a CAS on a missing key is not checked.
        g.1 = g.1.wrapping_add(1).max(1);
        let next = g.1;
        match g.0.get_mut(key) {
            Some(entry) => {
                if let Some(c) = cas {
                    if c != 0 && c != entry.1 {
                        return Err(StoreError::CasMismatch);
                    }
                }
                *entry = (value.to_vec(), next);
            }
            None => {
                g.0.insert(key.to_string(), (value.to_vec(), next));
            }
        }
        Ok(())
    }
}
