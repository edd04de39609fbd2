//! Any word and environment: shell expansion must never panic or hang.
#![no_main]

use kiln_frontend::shell::Lexer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: (&str, Vec<(String, String)>, bool)| {
    let (word, env, backtick) = data;
    let lexer = Lexer::new(if backtick { '`' } else { '\\' });
    let _ = lexer.process_word(word, &env);
    let _ = lexer.process_words(word, &env);
});
