//! `qwen3q`: the CLI without llama.cpp linked in, so that a command starts in a third of the
//! time. The verbs that decode run as `qwen3q-engine` beside it (see `qwen3q::cli::inference`).

fn main() {
    qwen3q::cli::start::main(None)
}
