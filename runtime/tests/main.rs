//! Integration tests of q35-rt (one test binary, a module per concern).

mod smollm2_reference;
mod smollm2_tokenizer;
