//! IPAM engine: a pure, in-memory allocator (issue 4). No kube I/O here.
