//! Integration tests of the control library: the object store over a real one-member Raft
//! store in this process.

mod widget_kind;
