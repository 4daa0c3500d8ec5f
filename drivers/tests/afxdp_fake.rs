//! The AF_XDP driver's setup and error paths against a fake kernel (tier
//! 3): the syscall funnel is replaced, so these run without root and
//! without AF_XDP. The fake hands out made-up descriptors and heap memory
//! for the rings and the UMEM, fails the call a test picks, and keeps
//! books: after every failure and after every port is dropped, each
//! descriptor it handed out is closed and each mapping unmapped.

#![cfg(feature = "afxdp")]
// The fake kernel hands out heap memory as its mappings.
#![allow(unsafe_code)]

use std::collections::{HashMap, HashSet};
use std::io;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

use sluice_drivers::afxdp::sys::{
    MmapOffsets, RingKind, RingOffset, SockaddrXdp, Sys, UmemReg, XdpStatistics,
    XDP_FLAGS_DRV_MODE, XDP_SHARED_UMEM, XDP_USE_NEED_WAKEUP,
};
use sluice_drivers::afxdp::{AfXdpConfig, AfXdpPort, Queues};
use sluice_drivers::{Burst, Port, PortError};

/// Which call fails, and with what errno.
#[derive(Clone, Copy, Debug, Default)]
struct Faults {
    nametoindex: Option<i32>,
    xskmap: Option<i32>,
    native_link: Option<i32>,
    any_link: Option<i32>,
    register: Option<i32>,
    bind: Option<i32>,
    socket: Option<i32>,
}

#[derive(Debug, Default)]
struct Books {
    next_fd: i32,
    open: HashSet<i32>,
    maps: HashMap<usize, usize>,
    binds: Vec<SockaddrXdp>,
    link_flags: Vec<u32>,
    xskmap: Vec<(u32, u32)>,
    registered: Vec<UmemReg>,
}

#[derive(Debug)]
struct Fake {
    faults: Faults,
    queues: u32,
    books: Mutex<Books>,
}

fn err(e: Option<i32>) -> io::Result<()> {
    match e {
        Some(n) => Err(io::Error::from_raw_os_error(n)),
        None => Ok(()),
    }
}

const OFFSETS: RingOffset = RingOffset {
    producer: 0,
    consumer: 64,
    flags: 128,
    desc: 192,
};

impl Fake {
    fn new(faults: Faults) -> Arc<Fake> {
        Arc::new(Fake {
            faults,
            queues: 2,
            books: Mutex::new(Books {
                next_fd: 100,
                ..Books::default()
            }),
        })
    }

    fn fd(&self) -> i32 {
        let mut b = self.books.lock().unwrap();
        b.next_fd += 1;
        let fd = b.next_fd;
        b.open.insert(fd);
        fd
    }

    fn alloc(&self, len: usize) -> io::Result<NonNull<u8>> {
        let layout = std::alloc::Layout::from_size_align(len, 4096).unwrap();
        // SAFETY: non-zero size.
        let p = unsafe { std::alloc::alloc_zeroed(layout) };
        let p = NonNull::new(p).ok_or_else(|| io::Error::from_raw_os_error(12))?;
        self.books
            .lock()
            .unwrap()
            .maps
            .insert(p.as_ptr() as usize, len);
        Ok(p)
    }

    /// Nothing left open or mapped.
    fn assert_clean(&self) {
        let b = self.books.lock().unwrap();
        assert!(b.open.is_empty(), "descriptors left open: {:?}", b.open);
        assert!(b.maps.is_empty(), "{} mappings left", b.maps.len());
    }
}

impl Sys for Fake {
    fn if_nametoindex(&self, name: &str) -> io::Result<u32> {
        err(self.faults.nametoindex)?;
        Ok(if name.ends_with('b') { 8 } else { 7 })
    }
    fn rx_queues(&self, _: &str) -> io::Result<Option<u32>> {
        Ok(Some(self.queues))
    }
    fn mac_address(&self, _: &str) -> io::Result<[u8; 6]> {
        Ok([2, 0, 0, 0, 0, 1])
    }
    fn xsk_socket(&self) -> io::Result<i32> {
        err(self.faults.socket)?;
        Ok(self.fd())
    }
    fn close(&self, fd: i32) {
        assert!(
            self.books.lock().unwrap().open.remove(&fd),
            "fd {fd} closed twice"
        );
    }
    fn umem_register(&self, _: i32, reg: &UmemReg) -> io::Result<()> {
        err(self.faults.register)?;
        self.books.lock().unwrap().registered.push(*reg);
        Ok(())
    }
    fn set_ring_size(&self, _: i32, _: RingKind, entries: u32) -> io::Result<()> {
        if !entries.is_power_of_two() {
            return Err(io::Error::from_raw_os_error(22));
        }
        Ok(())
    }
    fn mmap_offsets(&self, _: i32) -> io::Result<MmapOffsets> {
        Ok(MmapOffsets {
            rx: OFFSETS,
            tx: OFFSETS,
            fill: OFFSETS,
            completion: OFFSETS,
        })
    }
    fn mmap_ring(&self, _: i32, _: RingKind, len: usize) -> io::Result<NonNull<u8>> {
        self.alloc(len)
    }
    fn mmap_anonymous(&self, len: usize) -> io::Result<NonNull<u8>> {
        self.alloc(len)
    }
    fn munmap(&self, addr: NonNull<u8>, len: usize) {
        let had = self
            .books
            .lock()
            .unwrap()
            .maps
            .remove(&(addr.as_ptr() as usize));
        assert_eq!(had, Some(len), "unmapping what was not mapped");
        let layout = std::alloc::Layout::from_size_align(len, 4096).unwrap();
        // SAFETY: allocated by `alloc` with this layout, unmapped once.
        unsafe { std::alloc::dealloc(addr.as_ptr(), layout) };
    }
    fn bind(&self, _: i32, addr: &SockaddrXdp) -> io::Result<()> {
        err(self.faults.bind)?;
        self.books.lock().unwrap().binds.push(*addr);
        Ok(())
    }
    fn xdp_options(&self, _: i32) -> io::Result<u32> {
        Ok(0)
    }
    fn statistics(&self, _: i32) -> io::Result<XdpStatistics> {
        Ok(XdpStatistics::default())
    }
    fn kick_tx(&self, _: i32) -> io::Result<()> {
        Ok(())
    }
    fn kick_rx(&self, _: i32) -> io::Result<()> {
        Ok(())
    }
    fn xskmap_create(&self, _: &str, _: u32) -> io::Result<i32> {
        err(self.faults.xskmap)?;
        Ok(self.fd())
    }
    fn map_update_u32(&self, _: i32, key: u32, value: u32) -> io::Result<()> {
        self.books.lock().unwrap().xskmap.push((key, value));
        Ok(())
    }
    fn prog_load_xdp(&self, _: &str, insns: &[u64], _: &str, _: &mut [u8]) -> io::Result<i32> {
        assert_eq!(insns.len(), 6);
        Ok(self.fd())
    }
    fn xdp_link_create(&self, _: i32, _: u32, flags: u32) -> io::Result<i32> {
        self.books.lock().unwrap().link_flags.push(flags);
        if flags == XDP_FLAGS_DRV_MODE {
            err(self.faults.native_link)?;
        }
        err(self.faults.any_link)?;
        Ok(self.fd())
    }
}

fn open(fake: &Arc<Fake>, cfgs: &[AfXdpConfig]) -> Result<Vec<Arc<AfXdpPort>>, PortError> {
    let sys: Arc<dyn Sys> = fake.clone();
    let names: Vec<String> = cfgs.iter().map(AfXdpConfig::port_name).collect();
    let list: Vec<(&str, &AfXdpConfig)> = names.iter().map(String::as_str).zip(cfgs).collect();
    AfXdpPort::open_with(&sys, &list)
}

fn small(iface: &str) -> AfXdpConfig {
    let mut c = AfXdpConfig::new(iface);
    c.ring_size = 64;
    c.frames_per_queue = 256;
    c
}

fn error_of(faults: Faults, cfg: AfXdpConfig) -> String {
    let fake = Fake::new(faults);
    let e = open(&fake, &[cfg]).expect_err("fails").to_string();
    fake.assert_clean();
    e
}

#[test]
fn a_port_opens_binds_every_queue_and_closes_everything_on_drop() {
    let fake = Fake::new(Faults::default());
    let ports = open(&fake, &[small("veth0a"), small("veth0b")]).unwrap();
    let (a, b) = (&ports[0], &ports[1]);
    assert_eq!(a.info().mode, "native/copy");
    assert_eq!((a.info().rx_queues, a.info().ifindex), (2, 7));
    assert_eq!(b.info().ifindex, 8);
    assert!(
        std::ptr::eq(a.umem(), b.umem()),
        "opened together: one UMEM"
    );
    {
        let books = fake.books.lock().unwrap();
        assert_eq!(books.registered.len(), 1, "registered once");
        assert_eq!(books.registered[0].chunk_size, 2048);
        assert_eq!(books.registered[0].headroom, 0);
        assert_eq!(books.binds.len(), 4);
        assert_eq!(books.binds[0].flags, XDP_USE_NEED_WAKEUP);
        let owner = books.binds[0].shared_umem_fd;
        assert_eq!(owner, 0);
        for bind in &books.binds[1..] {
            assert_eq!(bind.flags, XDP_SHARED_UMEM, "the others share the UMEM");
        }
        assert_eq!(
            books.binds.iter().map(|b| b.queue_id).collect::<Vec<_>>(),
            [0, 1, 0, 1]
        );
        assert_eq!(books.xskmap.len(), 4, "every socket is in its XSKMAP");
        assert_eq!(books.link_flags, [XDP_FLAGS_DRV_MODE, XDP_FLAGS_DRV_MODE]);
    }
    // The fill rings got their frames; the rest are free.
    let umem = a.umem();
    assert_eq!(umem.frames(), 2 * 2 * 256);
    use sluice_drivers::FramePool;
    assert_eq!(umem.available(), 4 * (256 - 64));
    // Queues open once; nothing arrives from a fake kernel.
    let mut rx = a.open_rx(1).unwrap();
    assert!(matches!(a.open_rx(1), Err(PortError::QueueInUse { .. })));
    assert!(matches!(
        a.open_rx(2),
        Err(PortError::QueueOutOfRange { count: 2, .. })
    ));
    let mut burst = Burst::new(32);
    assert_eq!(rx.rx_burst(&mut burst), 0);
    // A frame allocated from the UMEM and sent goes onto the TX ring by
    // descriptor alone.
    let mut tx = b.open_tx(0).unwrap();
    let mut f = umem.alloc().unwrap();
    assert!(f.fill(&[0xab; 60]));
    burst.push(f).unwrap();
    assert_eq!(tx.tx_burst(&mut burst), 1);
    assert_eq!(tx.stats().snapshot().packets, 1);
    drop((rx, tx));
    drop(ports);
    fake.assert_clean();
    assert!(
        umem.is_released(),
        "the UMEM goes when the last socket does"
    );
}

#[test]
fn native_mode_falls_back_to_generic_when_the_driver_lacks_it() {
    let fake = Fake::new(Faults {
        native_link: Some(95), // EOPNOTSUPP
        ..Faults::default()
    });
    let ports = open(&fake, &[small("dummy0")]).unwrap();
    assert_eq!(ports[0].info().mode, "generic/copy");
    assert!(ports[0].notes()[0].contains("generic (SKB) mode"));
    drop(ports);
    fake.assert_clean();
}

#[test]
fn every_setup_error_is_one_line_and_undoes_what_was_done() {
    let f = Faults::default;
    assert_eq!(
        error_of(
            Faults {
                nametoindex: Some(19),
                ..f()
            },
            small("nosuch0")
        ),
        r#"port afxdp:nosuch0: interface "nosuch0" does not exist"#
    );
    assert_eq!(
        error_of(
            Faults {
                xskmap: Some(1),
                ..f()
            },
            small("veth0")
        ),
        "port afxdp:veth0: not enough permissions to create the XSKMAP (Operation not permitted): \
         AF_XDP needs root, or CAP_NET_ADMIN, CAP_NET_RAW and CAP_BPF"
    );
    assert_eq!(
        error_of(
            Faults {
                any_link: Some(16),
                ..f()
            },
            small("veth0")
        ),
        "port afxdp:veth0: interface veth0 already has an XDP program attached; \
         remove it first (ip link set dev veth0 xdp off)"
    );
    assert_eq!(
        error_of(
            Faults {
                register: Some(105),
                ..f()
            },
            small("veth0")
        ),
        "port afxdp:veth0: UMEM registration failed (1 MiB in 512 frames of 2048 bytes): \
         No buffer space available; the locked-memory limit (ulimit -l) is too low for it \
         without CAP_IPC_LOCK"
    );
    assert_eq!(
        error_of(
            Faults {
                bind: Some(16),
                ..f()
            },
            small("veth0")
        ),
        "port afxdp:veth0: queue 0 of veth0 is already used by another AF_XDP socket"
    );
    assert_eq!(
        error_of(
            Faults {
                socket: Some(1),
                ..f()
            },
            small("veth0")
        ),
        "port afxdp:veth0: not enough permissions to create an AF_XDP socket (Operation not \
         permitted): AF_XDP needs root, or CAP_NET_ADMIN, CAP_NET_RAW and CAP_BPF"
    );
    let mut three = small("veth0");
    three.queues = Queues::Count(3);
    assert_eq!(
        error_of(f(), three),
        "port afxdp:veth0:3: queue 2 out of range (it has 2)"
    );
    let mut odd = small("veth0");
    odd.ring_size = 100;
    assert_eq!(
        error_of(f(), odd),
        "port afxdp:veth0: ring size 100 is not a power of two in 64..=32768"
    );
}

#[test]
fn a_second_port_that_fails_closes_the_first() {
    let fake = Fake::new(Faults::default());
    let mut bad = small("veth0b");
    bad.frame_size = 3000;
    let e = open(&fake, &[small("veth0a"), bad]).err().unwrap();
    assert_eq!(
        e.to_string(),
        "port afxdp:veth0b: frame size 3000 is not 2048 or 4096"
    );
    fake.assert_clean();
}
