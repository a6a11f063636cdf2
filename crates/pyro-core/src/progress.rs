//! Progress of long operations, reported by the library and rendered by a surface (bar or plain lines).

/// Receives phase changes of a long operation. Implementations must be cheap and never fail.
pub trait Progress: Sync {
    /// A new phase began, e.g. "building the root filesystem".
    fn phase(&self, message: &str);
    /// The operation finished; the surface may clear its bar.
    fn finish(&self) {}
}

/// Progress that goes nowhere.
pub struct Silent;

impl Progress for Silent {
    fn phase(&self, _message: &str) {}
}
