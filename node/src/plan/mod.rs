//! The desired data plane of a node as a pure function of API state and host interfaces.
