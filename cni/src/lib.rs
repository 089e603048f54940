//! CNI types (spec 1.1 and older versions) and the agent protocol shared with the node agent.
