//! The CNI server: the agent side of the CNI plugin protocol and pod interface setup.
