//! Builds the XDP object with the nightly toolchain and `bpf-linker`, so the
//! agent binary can embed it. `cargo xtask setup` installs both.

use std::{env, path::PathBuf, process::Command};

fn main() {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap()).join("..");
    let ebpf = root.join("lb-ebpf");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let target_dir = out.join("ebpf-target");
    println!("cargo:rerun-if-changed={}", ebpf.join("src").display());
    println!(
        "cargo:rerun-if-changed={}",
        ebpf.join("Cargo.toml").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        root.join("lb-common/src").display()
    );

    let mut cmd = Command::new("rustup");
    cmd.args(["run", "nightly", "cargo", "build", "--release", "--locked"])
        .args(["-Z", "build-std=core", "--target", "bpfel-unknown-none"])
        .arg("--manifest-path")
        .arg(ebpf.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(&ebpf);
    // The outer build's settings are for the host; keep them out.
    for (k, _) in env::vars() {
        if k.starts_with("CARGO_") && k != "CARGO_HOME"
            || k.starts_with("RUSTC")
            || k == "RUSTFLAGS"
            || k == "RUSTUP_TOOLCHAIN"
        {
            cmd.env_remove(k);
        }
    }
    let status = cmd
        .status()
        .expect("cannot run rustup: run `cargo xtask setup`");
    if !status.success() {
        panic!(
            "building lb-ebpf failed; `cargo xtask setup` installs rust-src and bpf-linker 0.10.2"
        );
    }
    for bin in ["lb", "bench"] {
        let obj = target_dir.join("bpfel-unknown-none/release").join(bin);
        std::fs::copy(&obj, out.join(bin)).unwrap_or_else(|e| panic!("{}: {e}", obj.display()));
    }
}
