//! Sluice's dataplane: the part that moves packets.
//!
//! This crate will own (see the project's issues and `shared/DESIGN.md`):
//!
//! * **Workers**: one poll-mode thread per pinned core (`core_affinity`,
//!   only cores in the process's allowed set), each owning a set of
//!   (port, queue) RX queues. A worker pulls a burst of 32-64 packets,
//!   loads the hook's program once per burst, runs it on every packet
//!   (interpreter or JIT from `sluice-bpf`) and acts on the verdict: DROP
//!   recycles the buffer, TX and REDIRECT queue it for one `tx_burst` per
//!   destination per burst, PASS hands it to the host stack's bounded queue,
//!   ABORTED is counted. Nothing on that path allocates, locks, logs or
//!   makes a syscall.
//! * **Program slots**: per port and hook (ingress, egress), swapped
//!   atomically by the control thread, with the old version released only
//!   after every worker has passed a quiescent point; compare-and-swap
//!   replacement; pinned maps handed to the next version.
//! * **Per-CPU state**: per-CPU maps are per worker, and
//!   `bpf_get_smp_processor_id()` is the worker index.
//! * **The host stack**: a smoltcp interface that owns the dataplane's own
//!   addresses, fed by PASS traffic, answering ARP/ND, ping and the control
//!   API over TCP.
//! * **Statistics**: per worker, port and queue, cache-line padded counters
//!   summed only by the control thread.
//! * **A library API** (builder and handle) that `sluice-control` and NFV
//!   programs embed.
//!
//! Drivers are known only through the `sluice-drivers` burst trait.
//!
//! Nothing is implemented here yet: the eBPF runtime comes first.
