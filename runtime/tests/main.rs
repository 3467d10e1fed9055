//! Integration tests of q35-rt (one test binary, a module per concern).

mod bandwidth;
mod executor;
mod loading;
mod memref;
mod nvptx;
mod prompt;
mod smollm2_reference;
mod smollm2_tokenizer;
mod support;
mod thread_pool;
