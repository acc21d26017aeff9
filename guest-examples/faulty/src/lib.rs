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

    fn chatty(msg: String) -> i64 {
        println!("{msg}");
        eprintln!("{msg}");
        fabric_sdk::warn!("{msg}");
        panic!("chatty failed")
    }
}

export!(Faulty);
