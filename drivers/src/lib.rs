//! Sluice's packet I/O, behind one burst trait.
//!
//! This crate will own every way packets enter and leave Sluice (see the
//! project's issues and `shared/DESIGN.md`):
//!
//! * the **driver trait**: ports with RX and TX queues; `rx_burst` fills a
//!   caller-owned fixed-capacity batch, `tx_burst` takes what it can and
//!   leaves the rest; buffers are owned and recycled by the driver, each
//!   with at least 256 bytes of headroom; per-queue counters with drop
//!   reasons;
//! * **AF_XDP** (UMEM, fill/completion/RX/TX rings, a tiny in-kernel
//!   redirect program attached through a BPF link);
//! * **DPDK**, through the project's own bindgen `dpdk-sys` crate over the
//!   system's libdpdk and a small C shim for its inline burst functions;
//! * **netmap** through `netmap_sys`;
//! * **AF_PACKET**, **pcap** files, and **in-memory ring** and **null**
//!   ports for tests and benchmarks.
//!
//! A driver never knows about eBPF. Nothing is implemented here yet.
