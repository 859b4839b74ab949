//! The one integration-test binary (llama.cpp links once). Every test runs the real `qwen3q`
//! binary on a real GGUF model through llama.cpp; the fake engine is for unit tests only.

mod common;

mod api;
mod badinput;
mod batches;
mod batching;
mod binaries;
mod card;
mod cgroup;
mod crash;
mod e2e;
mod governance;
mod interactive;
mod migrations;
mod prefix;
mod registry;
mod socket;
mod steering;
mod structured;
mod warm;
