//! NUMA topology, the current CPU and node, and the memory-policy syscalls, read and made
//! without allocating (DESIGN.md, "NUMA"). Being filled by the NUMA issue.
