//! Admission webhook server: validating Network/Subnet/Pod, mutating Pod (issue 5).
