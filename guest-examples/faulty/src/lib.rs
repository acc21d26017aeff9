//! `faulty`: tasks that fail on purpose, one way each, for testing how Fabric reports and
//! contains failures (errors, traps, timeouts, memory limits, captured output).

use std::hint;

fabric_sdk::component!("fabric:faulty/faulty");

/// The component: implements the world's exports.
struct Faulty;

impl Guest for Faulty {
    fn fail(msg: String) -> Result<i64, String> {
        Err(msg)
    }

    fn boom(msg: String) -> i64 {
        panic!("{msg}")
    }

    fn spin() -> i64 {
        // `black_box` keeps the optimizer from proving anything about the loop.
        let mut turns = 0_u64;
        loop {
            turns = hint::black_box(turns.wrapping_add(1));
        }
    }

    fn busy(msg: String) -> i64 {
        fabric_sdk::info!("{msg}");
        Self::spin()
    }

    fn hog(mib: u32) -> u64 {
        const MIB: usize = 1 << 20;
        const PAGE: usize = 4096;
        let bytes = usize::try_from(mib)
            .ok()
            .and_then(|mib| mib.checked_mul(MIB))
            .unwrap_or_else(|| panic!("hog: {mib} MiB do not fit in the address space"));
        // Freshly grown wasm memory is already zeroed, so allocating alone may touch nothing:
        // write to every page to make the host commit it.
        let mut block = vec![0_u8; bytes];
        for (index, page) in block.chunks_mut(PAGE).enumerate() {
            page[0] = index as u8 | 1;
        }
        hint::black_box(&mut block);
        block.len() as u64
    }

    fn recurse(depth: u64) -> u64 {
        deep(depth)
    }

    fn bloat(mib: u32) -> Vec<u8> {
        vec![7; mib as usize * (1 << 20)]
    }

    fn flaky(fails: u32) -> Result<u32, String> {
        let attempt = fabric_sdk::context::attempt();
        if attempt < fails {
            Err(format!("flaky: attempt {attempt} fails"))
        } else {
            Ok(attempt)
        }
    }

    fn read_file(path: String) -> Result<u64, String> {
        std::fs::read(&path)
            .map(|bytes| bytes.len() as u64)
            .map_err(|e| format!("cannot read {path}: {e}"))
    }

    fn connect(addr: String) -> Result<String, String> {
        std::net::TcpStream::connect(&addr)
            .map(|_| "connected".to_string())
            .map_err(|e| format!("cannot connect to {addr}: {e}"))
    }

    fn say(msg: String) -> i64 {
        println!("{msg}");
        eprintln!("{msg}");
        fabric_sdk::info!("{msg}");
        msg.len() as i64
    }

    fn chatty(msg: String) -> i64 {
        println!("{msg}");
        eprintln!("{msg}");
        fabric_sdk::warn!("{msg}");
        panic!("chatty failed")
    }
}

/// One frame of `recurse`; `black_box` keeps the optimizer from turning it into a loop.
fn deep(depth: u64) -> u64 {
    if depth == 0 {
        return 0;
    }
    hint::black_box(deep(hint::black_box(depth - 1))) + 1
}

export!(Faulty);
