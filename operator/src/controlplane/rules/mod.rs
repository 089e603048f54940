//! Pure decisions of the control plane, over plain data, with their unit tests (the pod defaults
//! module also holds the watcher that keeps them live).

pub mod defaults;
pub mod nodestate;
pub mod objects;
pub mod podstate;
pub mod resolution;
pub mod retention;
