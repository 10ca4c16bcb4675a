/* run.c — inference for Llama-family language models in one C file.

   WHAT IT IS
   A decoder-only Transformer (RMSNorm, grouped-query attention with a KV cache, RoPE, SwiGLU) with
   its BPE tokenizers, sampler and generate/chat loops, in the spirit of llama2.c's run.c. It runs
   Llama 2/3.x, TinyLlama, SmolLM, Qwen2/2.5, Qwen3, Gemma 2/3, Phi-3/3.5/4-mini and Mistral (past
   its sliding window) from the GGUF files people download (llama.cpp's format, at its
   quantizations: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K-Q6_K, IQ4_NL, IQ4_XS, computed
   in place, with the tokenizer and chat template inside), from checkpoints converted by export.py,
   and from llama2.c's own checkpoints and tokenizer files. Files are memory-mapped (--no-mmap reads
   them into memory instead, for faster generation from large models). C11, libc and libm only;
   OpenMP is optional. MIT licensed (see the end of this comment).

   BUILD AND RUN
       cc -O3 -o run run.c -lm                                  # one thread; SIMD kernels chosen at run time
       cc -O3 -march=native -fopenmp -o run run.c -lm           # fastest (threads)
       ./run stories15M.bin -z tokenizer.bin -i "Once upon a time" -n 256
       python3 export.py qwen.bin --hf Qwen2.5-0.5B-Instruct && ./run qwen.bin -m chat
   `./run -h` lists every flag. Any C11 or C++ compiler will do, in its default or any -std mode: the
   file turns off the contraction of a*b+c into fused multiply-adds for itself (gcc's and clang's
   pragmas), because every kernel promises one exact order of float operations (see "Math kernels").
   Flags that override such pragmas (clang's -ffp-contract=fast, -ffast-math) void that promise.
   SIMD kernels need no flags: with gcc or clang, the AVX2 (with AVX-VNNI where the CPU has it) and
   AVX-512 (x86-64) or NEON (aarch64) versions are compiled for their own targets and the best one
   the CPU reports runs (--info shows it; --kernels or lm_set_kernels picks another; -DRUN_PORTABLE
   leaves them out).

   MAP OF THIS FILE (sections in dependency order, each opened by a dashed rule)
       Public API ............ the types and declarations (all a host needs; RUN_DECLARATIONS_ONLY)
       Weight types .......... one table entry per type: layout, block unpacking, integer or float
       Checkpoint format ..... llama2.c's v0/v1/v2 and run.c's v3 headers and tensor order
       GGUF .................. the container parser, architectures, tensors by name
       Loading a model ....... lm_load and the model's description
       Math kernels .......... plain definitions, then the AVX-512, AVX2 and NEON versions (the same
                               bits, chosen at run time), matmul
       Forward pass .......... one block of 1..256 tokens through every layer
       Unicode tables ........ letters and numbers for the pre-tokenizers
       Tokenizer ............. loading (lmtk, llama2.c, GGUF), BPE, pre-tokenizer splits, encode/decode
       Chat templates ........ each family's turns as token ids; recognising a Jinja template
       Sampler ............... penalty, temperature, top-k, min-p, top-p
       Generation and chat ... lm_generate(_tokens), lm_chat
       Command line .......... main, on the public API only (left out with RUN_LIBRARY)

   EMBED
   One file of your program gets the engine; any others get the declarations:
       #define RUN_LIBRARY              // the engine without the command line (no main)
       #include "run.c"
       ...
       #define RUN_DECLARATIONS_ONLY    // in other files: the lm_ API alone
       #include "run.c"
   Build with `cc -O3 -o app app.c -lm` (add -march=native -fopenmp for speed); it compiles as C++
   too. Public names start with lm_ (types with Lm, constants with LM_); private functions and data
   start with run_ (private types and macros with Lm and LM_ too), so a host's own softmax or usage
   never collides. There are no mutable globals: any number of models, tokenizers and samplers may
   live in one process, one model per thread at a time. No call exits the process or prints: failures
   come back as NULL or -1 with a one-line reason in the caller's err buffer (err may be NULL, errlen
   may be 0); only lm_chat writes, to the FILE it is given. Without RUN_LIBRARY, including run.c also
   defines main() (the command line).

   API
   LmModel *lm_load(const char *checkpoint_path, char *err, size_t errlen);
       Maps a checkpoint read-only and allocates its run state. NULL on failure, reason in err (a
       file of another kind, such as a Hugging Face folder or a GGUF file, is named as such).
   LmModel *lm_load_with(const char *checkpoint_path, const LmLoadOptions *options, char *err, size_t errlen);
       lm_load with options (NULL: none; see LmLoadOptions): .in_memory reads the file into memory
       instead (--no-mmap); .context_length sizes the KV cache (0: the file's context, a GGUF model's
       up to 4096; LM_CONTEXT_MAX, -c 0 on the command line: the model's maximum; more is refused); .cache_type is its
       type (--cache-type: "f16" by default, "f32" for llama2.c's files, "bf16", "q8_0"). A cache
       larger than the machine's memory is refused before it is allocated, with the bytes it needs.
   int lm_model_info(const LmModel *m, LmModelInfo *info);
       Fills info (shape, weight type, context, RoPE, kernels, threads; see LmModelInfo). -1 for NULL.
   float *lm_forward(LmModel *m, int token, int pos);
       Runs one token at position pos (0 <= pos < lm_context_length(m)) over the KV cache of positions
       0..pos-1, which must have been filled by earlier calls. Returns lm_vocab_size(m) logits owned by
       the model and valid until the next call, or NULL when m is NULL or token/pos is out of range.
   float *lm_forward_batch(LmModel *m, const int *tokens, int n, int pos);
       Runs tokens[0..n) at positions pos..pos+n-1 in blocks of 256 (each weight read once per block)
       and returns the logits of the last one only: prompt processing. Equal, bit for bit, to n calls
       of lm_forward. NULL for n < 1, a token out of range, or pos + n past the context.
   int lm_shift_context(LmModel *m, int pos, int n_keep, int n_discard);
       Makes room in a cache filled up to pos: keeps positions 0..n_keep-1, drops the next n_discard,
       and moves the rest down, re-rotating their keys for their new positions (as llama.cpp's
       context shift). Returns the new end, pos - n_discard, or -1 on bad arguments.
   void lm_set_threads(LmModel *m, int n);
       OpenMP threads for this model's calls: n, or for n = 0 the OMP_NUM_THREADS environment
       variable if set, else the number of cores (1 when built without OpenMP). Results do not depend
       on it. A NULL model is ignored.
   void lm_set_exact(LmModel *m, int exact);
       With exact non-zero, integer weights (q8_0, q4_0, GGUF's quantized types) meet the activations
       as floats, each weight decoded in the dot product: the logits of the stored weights to float
       rounding (~1e-6). The default (0) quantizes activations to int8 in groups, as llama.cpp does:
       faster, and ~1e-2 from those logits. A NULL model is ignored.
   int lm_set_kernels(LmModel *m, const char *name);
       The SIMD kernels m's matmuls run: "portable" (the plain C loops), "avx2", "avx2-vnni" or "avx512"
       (x86-64), "neon" or "neon-dotprod" (aarch64; gcc or clang for all five), or NULL / "auto" for the best
       this CPU has, which lm_load chooses. All give the same results, bit for bit. -1 (nothing
       changed) for a set this CPU or build lacks, or NULL m.
   int lm_vocab_size(const LmModel *m);       int lm_context_length(const LmModel *m);   (0 for NULL)
   void lm_free(LmModel *m);                   (NULL is a no-op, as for every _free below)
   LmTokenizer *lm_tokenizer_load(const char *path, int vocab_size, char *err, size_t errlen);
       Reads a tokenizer file, or the tokenizer inside a checkpoint when path is one. vocab_size is the
       model's: the file must have exactly that many tokens, except a tokenizer embedded in the
       checkpoint, which may have fewer (its model pads the embedding, as Qwen2's do); 0 takes the
       file's count. NULL on failure (a NULL path, a negative vocab_size, a bad file, a mismatch).
   int lm_tokenizer_info(const LmTokenizer *t, LmTokenizerInfo *info);
       Fills info (kind, token count, BOS/EOS/end-of-turn ids, chat template). -1 for NULL.
   int lm_tokenizer_set_template(LmTokenizer *t, const char *name);
       Chooses the chat template by name: llama2, llama3, llama3.1, chatml, qwen2.5, qwen3, smollm2,
       zephyr, mistral, gemma, phi3 or phi4. -1 if unknown.
   int lm_tokenizer_set_thinking(LmTokenizer *t, int enable);
       Qwen3's thinking (on by default): with enable 0, lm_render_chat closes each reply's prompt with
       the empty <think></think> block the official template writes for enable_thinking=false. Other
       templates ignore it. -1 for NULL. (LmChatOptions.hide_thinking hides the part when it is on.)
   int lm_encode(LmTokenizer *t, const char *text, int bos, int eos, int *tokens, int max_tokens);
       Encodes UTF-8 text as plain text (special tokens such as <|im_start|> are never produced from
       it), with BOS/EOS when asked and the tokenizer has them. Returns the token count, or -1 when
       the text needs more than max_tokens tokens (or on NULL arguments or out of memory).
   const char *lm_decode(LmTokenizer *t, int prev_token, int token);
       The bytes of token after prev_token: byte tokens become bytes, the space after BOS is dropped
       (SentencePiece), special tokens and lone control bytes become "". Owned by the tokenizer. A
       UTF-8 character may be split across tokens; lm_generate and lm_chat hold such pieces back.
   const char *lm_token_text(const LmTokenizer *t, int token);
       The token's text as the vocabulary stores it, special tokens included ("<|im_end|>"); NULL
       out of range. For showing ids: --tokenize and --verbose-prompt print these.
   int lm_render_chat(LmTokenizer *t, const LmMessage *messages, int n, int continuing, int *tokens, int max_tokens);
       A conversation as the token ids of the tokenizer's chat template, ready for the assistant's
       reply: an optional "system" message first, then "user" and "assistant" messages in turn,
       ending with a user message; an assistant message is its text and the template's end of turn.
       With continuing, the messages extend a conversation already in the cache (which ends with an
       assistant turn closed by its end token): no system message, and the template's form of a
       later turn (Llama 2's starts each turn with BOS; Llama 3's and ChatML's do not). Special tokens are
       inserted by id; the messages are encoded as plain text. Returns the count, or -1 on a bad
       order or role, a vocabulary that lacks a token of the template, or more than max_tokens.
   void lm_tokenizer_free(LmTokenizer *t);
   LmSampler *lm_sampler_new(int vocab_size, float temperature, float topp, unsigned long long seed);
       temperature 0 = greedy; topp outside (0,1) samples the whole distribution. NULL on bad values.
   int lm_sample(LmSampler *s, float *logits);     (overwrites logits with probabilities)
       In this order: repetition penalty (a logit l of a token among the last repeat_last_n accepted
       becomes l / penalty if positive, l * penalty if not), then temperature (0: argmax here), softmax,
       top-k (the k most likely; ties at the k-th probability all stay), min-p (drops tokens below
       min_p times the most likely), then top-p, and one draw. -1 for NULL arguments.
   int lm_sampler_configure(LmSampler *s, int top_k, float min_p, float repeat_penalty, int repeat_last_n);
       0 / 0 / 1 / any turn each off (the defaults: llama2.c's sampler). -1 on values out of range
       (top_k < 0, min_p outside [0,1], penalty <= 0 or not finite, repeat_last_n < 0 or > 1<<20).
   void lm_sampler_accept(LmSampler *s, int token);
       Records a token of the text (prompt or generated) for the repetition penalty's window;
       lm_generate and lm_chat do this themselves. Ignored for a NULL sampler or out-of-range token.
   void lm_sampler_free(LmSampler *s);
   int lm_generate(LmModel *m, LmTokenizer *t, LmSampler *s, const char *prompt,
                   const LmGenerateOptions *options, LmGenerateStats *stats, char *err, size_t errlen);
       Encodes prompt after BOS, runs it from position 0, then samples until options->max_tokens
       tokens are generated (0: no limit), an end token (BOS, EOS, end of turn; unless ignore_eos), a
       stop string, emit returning non-zero, *interrupted turning non-zero (checked between blocks of
       the prompt too), or a full context (or, with context_shift, on past it). Text goes to emit in
       whole UTF-8 characters, the prompt's first when echo_prompt. options may be NULL (defaults:
       all zero), as may stats (why it stopped, counts, seconds). Returns the positions in the cache,
       or -1 on error (a prompt longer than the context, NULL arguments, out of memory).
   int lm_generate_tokens(LmModel *m, LmTokenizer *t, LmSampler *s, const int *prompt, int n_prompt,
                          int pos, const LmGenerateOptions *options, LmGenerateStats *stats, char *err, size_t errlen);
       As lm_generate for token ids (e.g. from lm_render_chat) fed at position pos, after a cache
       filled up to pos by earlier calls. The last token sampled is in stats->last_token; it is not
       in the cache (feed it, or an end-of-turn token, to go on).
   int lm_chat(LmModel *m, LmTokenizer *t, LmSampler *s, const LmChatOptions *options, char *err, size_t errlen);
       Multi-turn chat in the tokenizer's template (Llama 2 when it has none), reading user lines
       from options->in and streaming replies to options->out (see LmChatOptions). A reply ends at
       the end-of-turn token, at max_reply tokens (with a note), or at a full context; when a turn
       would not fit, it offers (a y/N line) to drop the oldest turns after the first and go on.
       Commands: /help, /exit, /reset (a new conversation), /system TEXT (a new system prompt and
       conversation); a line ending in a backslash continues on the next; empty lines are ignored.
       When *interrupted turns non-zero, prompt processing or the reply stops there and the chat
       returns to the prompt; at the prompt, it ends the chat. lm_chat clears the flag before each
       prompt. Ends at end of input, /exit or a full context. Returns the positions in use, or -1.

   FILE FORMATS (little-endian; all read from a read-only mapping and checked against its size)
   GGUF v2/v3 (llama.cpp's; layout in the "GGUF" section below): general.architecture llama (q/k rows
       in interleaved RoPE pairs, as llama.cpp's converter writes them; attention.sliding_window for
       Mistral's), qwen2 (halves, q/k/v biases), qwen3 (q/k norms), gemma2 and gemma3 (sandwich norms,
       GeGLU, soft caps, windows every sliding_window_pattern-th layer global) or phi3 (fused
       attn_qkv and ffn_up, partial RoPE, LongRoPE's rope_factors_short/long); the ARCH.*
       hyperparameters, RoPE base and linear scaling, Llama 3.1's rope_freqs factors; tensors by
       llama.cpp's names (token_embd, blk.N.attn_q ... ffn_down, output_norm,
       output: absent when tied), each in its own type, matrices computed from the mapped blocks; the
       tokenizer from tokenizer.ggml.* (llama: SentencePiece; gpt2: byte-level BPE with merges and the
       pre-tokenizer by name) and the chat template recognised from tokenizer.chat_template. The KV
       cache holds min(the model's context, 4096) positions unless asked for more (context_length);
       rope.scaling.type linear or yarn (factor, original_context_length, attn_factor, yarn_beta_fast
       and _slow; Hugging Face's YaRN: the maximum context is original x factor).
   Checkpoint v3 (run.c's own, written by export.py): a 256-byte header of int32/float32 fields at
       byte offsets: 0 magic 0x616b3432 ("ak42"), 4 version = 3, 8 dim, 12 hidden_dim, 16 n_layers,
       20 n_heads, 24 n_kv_heads, 28 head_size, 32 vocab_size, 36 seq_len, 40 norm_eps (f32),
       44 rope_theta (f32), 48 rope_layout (0 = llama2.c's interleaved pairs (x[2i], x[2i+1]),
       1 = Hugging Face's halves (x[i], x[i + rotary_dim/2])), 52 rope_scaling (0 none, 1 linear,
       2 llama3, 3 longrope, 4 yarn), 56 rope_factor (f32), 60 rope_low_freq_factor (f32; yarn's
       beta_fast), 64 rope_high_freq_factor (f32; yarn's beta_slow), 68 rope_original_context, 72 flags (1 = q/k/v biases,
       2 = classifier tied to the embedding, 4 = q/k norms, 8 = sandwich norms, 16 = LongRoPE
       factors), 76 weight_type (0 fp32, 1 fp16, 2 bf16, 3 q8_0, 4 q4_0), 80 group_size,
       88 tokenizer_offset (u64), 96 tokenizer_size (u64; 0 = none), 104 tensor_offset (u64),
       and the architecture's extras, each 0 for Llama's behaviour: 112 rotary_dim (RoPE on the
       first rotary_dim dims of a head; 0 = head_size), 116 embed_scale (f32; Gemma's sqrt(dim)),
       120 attn_scale (f32; 0 = 1/sqrt(head_size)), 124 attn_softcap and 128 final_softcap (f32;
       c*tanh(x/c) on scores / logits), 132 sliding_window (local layers see that many positions,
       their own included), 136 window_period (layer l is global when (l+1) % period == 0; 0 = all
       local), 140 rope_local_theta (f32; local layers' base, 0 = rope_theta), 144 rope_attn_factor
       (f32; LongRoPE's and YaRN's cos/sin scale), 148 activation (0 SiLU gate, 1 GELU-tanh gate: GeGLU).
       Gemma's x*(1+w) norms are stored as 1+w. The embedded tokenizer is a whole tokenizer file
       (below). Tensors start at tensor_offset, each at a 64-byte boundary: token_embedding
       (vocab, dim); per layer rms_att (dim) f32, wq (n_heads*head_size, dim),
       wk (n_kv_heads*head_size, dim), wv (same), [bq, bk, bv f32], [q_norm, k_norm (head_size) f32],
       wo (dim, n_heads*head_size), [rms_post_att (dim) f32], rms_ffn (dim) f32, w1 (hidden, dim),
       w2 (dim, hidden), w3 (hidden, dim), [rms_post_ffn (dim) f32]; rms_final (dim) f32;
       [rope_short, rope_long (rotary_dim/2) f32 with LongRoPE]; wcls (vocab, dim) unless tied. Matrices are in
       weight_type; a q8_0 matrix is int8 values (rows*cols), then at the next 64-byte boundary fp32
       scales, one per group_size values of a row (group_size divides every row length); a q4_0
       matrix is rows*cols/2 bytes, each group of group_size values packed as group_size/2 bytes
       (byte j: value j + 8 in the low nibble, value j + group_size/2 + 8 in the high one), then the
       groups' fp16 scales (w = value * scale).
   Checkpoint v0 (llama2.c legacy): 7 int32 {dim, hidden_dim, n_layers, n_heads, n_kv_heads,
       vocab_size, seq_len}; vocab_size < 0 means the classifier is not shared with the embedding.
       Then fp32 tensors: token_embedding (vocab, dim), rms_att (layer, dim), wq (layer, dim, dim),
       wk (layer, kv_dim, dim), wv (layer, kv_dim, dim), wo (layer, dim, dim), rms_ffn (layer, dim),
       w1 (layer, hidden, dim), w2 (layer, dim, hidden), w3 (layer, hidden, dim), rms_final (dim),
       two unused RoPE tables (seq_len, head_size/2) each, then wcls (vocab, dim) if unshared.
       v0..v2 use interleaved RoPE pairs, theta 10000, norm eps 1e-5.
   Checkpoint v1: 256-byte header: uint32 magic, int32 version = 1, the 7 int32 above (vocab_size
       positive), uint8 shared_classifier, zero padding. Then fp32 tensors: rms_att, rms_ffn,
       rms_final, token_embedding, wq, wk, wv, wo, w1, w2, w3, [wcls].
   Checkpoint v2 (Q8_0, llama2.c's runq.c): as v1 with version 2 and an int32 group_size at byte 37.
       The norms come first in fp32 (rms_att, rms_ffn, rms_final); then each of token_embedding,
       wq[0..L), wk[..], wv[..], wo[..], w1[..], w2[..], w3[..], [wcls] as int8 values (rows*cols)
       followed by fp32 scales (rows*cols/group_size), w = q * scale per group of the flattened
       tensor (group_size divides dim, so groups may straddle rows of w2).
   Integer weights (q8_0, q4_0 and GGUF's quantized types) are computed in integers: activations are
   quantized to int8 per group, products summed exactly in int32, then scaled (see "Math kernels" for
   the exact order of operations, which every SIMD path and block size follows, so their results
   agree to the bit). lm_set_exact keeps the activations float instead.
   Tokenizer (run.c's, written by export.py): a 128-byte header of int32 fields: 0 magic 0x6b746d6c
       ("lmtk"), 4 version = 1, 8 kind (1 = SentencePiece BPE: merges by score; 2 = byte-level BPE),
       12 n_tokens, 16 n_merges, 20 bos_id, 24 eos_id (-1 = none), 28 flags (1 add a dummy-prefix
       space, 2 remove extra whitespace, 4 split digits, 8 a whole pre-token that is a token skips
       merging), 32 pre-tokenizer (0 none, 1 GPT-2, 2 Llama 3, 3 Qwen2, 4 GPT-4o), 36 chat template
       (0 none, 1 Llama 2, 2 Llama 3, 3 ChatML, 4 Zephyr, 5 Mistral, 6 Llama 3.1, 7 Qwen2.5,
       8 SmolLM2, 9 Gemma, 10 Qwen3, 11 Phi-3, 12 Phi-4), 40 n_eot, 44 eot ids (8 int32;
       ids that end a turn). Then per token: float32 score, uint8 type (0 normal, 1 special/control,
       2 byte "<0xXX>", 3 unused), int32 length, the token's bytes. Then n_merges pairs of int32
       token ids in priority order. Without merges, any two adjacent tokens whose joined text is a
       normal token merge, the highest score first (SentencePiece's rule).
   Tokenizer (llama2.c's tokenizer.bin): int32 max_token_length, then per token: float32 score,
       int32 length, bytes. Ids 1 and 2 are BOS and EOS; byte-fallback tokens are spelled "<0xXX>".

   LICENSE
   MIT License. Copyright (c) 2026 the run.c authors. Permission is hereby granted, free of charge, to
   any person obtaining a copy of this software and associated documentation files (the "Software"),
   to deal in the Software without restriction, including without limitation the rights to use, copy,
   modify, merge, publish, distribute, sublicense, and/or sell copies of the Software, and to permit
   persons to whom the Software is furnished to do so, subject to the following conditions: The above
   copyright notice and this permission notice shall be included in all copies or substantial portions
   of the Software. THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED.
*/
#if defined(__STRICT_ANSI__) && !defined(_POSIX_C_SOURCE) && !defined(RUN_DECLARATIONS_ONLY)
#define _POSIX_C_SOURCE 200809L // a strict ISO mode (-std=c11) hides POSIX's sigaction, fileno, mmap
#endif
#ifndef RUN_C_API
#define RUN_C_API
// ----------------------------------------------------------------------------
// Public API (documented in the top comment)
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#ifdef __cplusplus
extern "C" {
#endif

typedef struct LmModel LmModel;
typedef struct LmTokenizer LmTokenizer;
typedef struct LmSampler LmSampler;
typedef int (*LmEmitFn)(const char *piece, void *user);       // non-zero return stops generation
typedef void (*LmProgressFn)(int done, int total, void *user); // prompt processing: tokens done of total

// How lm_load_with loads a checkpoint; all zeros (or NULL) is lm_load's way.
typedef struct {
    int in_memory;          // read the file into memory (huge pages where the OS gives them) instead of
                            // mapping it: generation from large models streams at full speed even where
                            // the page cache holds the file in 4 KiB pages (the CPU's prefetchers stop at
                            // each page), but the OS can no longer drop the pages and reread them
    int context_length;     // positions the KV cache holds: 0 = the file's (a GGUF model's up to 4096,
                            // llama.cpp's default), LM_CONTEXT_MAX = the model's maximum, else 1..that
    const char *cache_type; // the KV cache's type: "f32", "f16", "bf16" or "q8_0" (head sizes that are
                            // multiples of 32); NULL = "f16", or "f32" for llama2.c's own files (their
                            // texts then come out exactly as llama2.c's)
} LmLoadOptions;
#define LM_CONTEXT_MAX (-1)

// What a model is (lm_model_info). Strings are static or owned by the model.
typedef struct {
    const char *format;          // "run.c v3" or "llama2.c v0".."llama2.c v2"
    unsigned long long file_bytes, parameters;
    int n_layers, dim, hidden_dim, n_heads, n_kv_heads, head_size, vocab_size, context_length;
    int trained_context;         // the model's own context (context_length, the KV cache's, may be less)
    const char *weight_type;     // "fp32", "fp16", "bf16", "q8_0", "q4_0", or GGUF's types used ("Q4_K, Q6_K")
    int group_size;              // q8_0/q4_0 group length (0 otherwise)
    int qkv_bias, tied_embedding;
    float norm_eps, rope_theta, rope_factor; // rope_factor: LongRoPE's attention factor for "longrope"
    const char *rope_layout;     // "pairs" (llama2.c's interleaved) or "halves" (Hugging Face's)
    const char *rope_scaling;    // "none", "linear", "llama3", "longrope" or "yarn"
    int rope_original_context;   // llama3, longrope, yarn: the context the scaling extends
    float rope_attn_factor;      // longrope, yarn: cos and sin are multiplied by this
    const char *features;        // what the architecture adds to Llama's ("q/k norms, sliding window 512 ..."), or ""
    int has_tokenizer;           // the checkpoint embeds its tokenizer (lm_tokenizer_load(path) reads it)
    int threads;
    const char *kernels;         // the kernel set: "portable C", "AVX2", "AVX-512 (VNNI)", "NEON" or "NEON (dotprod)"
    int in_memory;               // the weights were read into memory (LmLoadOptions), not mapped
    int max_context;             // the longest context it can be loaded with (LmLoadOptions.context_length)
    const char *cache_type;      // the KV cache's type: "f32", "f16", "bf16" or "q8_0"
    unsigned long long cache_bytes; // the KV cache's size at context_length (keys and values, every layer)
} LmModelInfo;

// What a tokenizer is (lm_tokenizer_info).
typedef struct {
    const char *kind;            // "SentencePiece BPE" or "byte-level BPE"
    int n_tokens;                // tokens in the file
    int vocab_size;              // ids (the model's; ids past n_tokens are padding)
    int bos_id, eos_id;          // -1 when none
    int n_eot, eot_ids[8];       // further tokens that end an assistant turn
    const char *chat_template;   // the template lm_chat and lm_render_chat use
    int template_unknown;        // the file names a template run.c does not render: chat_template is a fallback
} LmTokenizerInfo;

typedef struct { const char *role, *content; } LmMessage; // role: "system", "user" or "assistant"

typedef enum {
    LM_STOP_END_TOKEN = 0,   // the model ended the text (BOS, EOS or end of turn)
    LM_STOP_MAX_TOKENS = 1,  // options->max_tokens were generated
    LM_STOP_STRING = 2,      // the text contains a stop string
    LM_STOP_CONTEXT = 3,     // the context is full
    LM_STOP_CALLER = 4,      // emit returned non-zero
    LM_STOP_INTERRUPTED = 5  // *interrupted turned non-zero (during the prompt when stats->generated is 0)
} LmStopReason;

// How lm_generate runs; all zero (or a NULL pointer) is a sensible default.
typedef struct {
    int max_tokens;                  // tokens to generate; 0 = no limit but the context
    int echo_prompt;                 // emit the prompt's text before the generated text (llama2.c's output)
    int ignore_eos;                  // go on past BOS/EOS/end-of-turn tokens
    int context_shift;               // when the context fills: 0 stop; 1 keep shift_keep tokens, drop half the rest, go on
    int shift_keep;
    const char *const *stops;        // stop strings: generation ends once the generated text contains one
    int n_stops;
    LmEmitFn emit;                   // receives the text; may be NULL
    void *user;                      // passed to emit and progress
    LmProgressFn progress;           // called after each block of the prompt (done = -1 if it stops early); may be NULL
    volatile sig_atomic_t *interrupted; // checked between prompt blocks and tokens; may be NULL
} LmGenerateOptions;

// What a generate call did.
typedef struct {
    LmStopReason stop;
    int prompt_tokens, generated;    // tokens run from the prompt, tokens generated
    int last_token;                  // the last token sampled (-1 if none), not yet in the cache
    double prompt_seconds, generate_seconds;
} LmGenerateStats;

// How lm_chat runs.
typedef struct {
    FILE *in, *out;                  // user lines come from in; replies, prompts and notes go to out
    const char *system_prompt;       // NULL: asked for on in; "" for none
    const char *first_message;       // sent as the first user message before reading in; may be NULL
    int max_reply;                   // tokens per reply; 0 = to the end of turn (or a full context)
    int banner;                      // print a line on the commands first (for a terminal)
    LmProgressFn progress;           // prompt processing progress; may be NULL
    void (*show_prompt)(const int *tokens, int n, void *user); // sees each turn's ids before they run; may be NULL
    void *user;                      // passed to progress and show_prompt
    volatile sig_atomic_t *interrupted; // Ctrl-C: stops the turn, or at the prompt ends the chat; may be NULL
    int hide_thinking;               // Qwen3: a reply's <think>...</think> part is not printed
} LmChatOptions;

LmModel *lm_load(const char *checkpoint_path, char *err, size_t errlen);
LmModel *lm_load_with(const char *checkpoint_path, const LmLoadOptions *options, char *err, size_t errlen);
int lm_model_info(const LmModel *m, LmModelInfo *info);
float *lm_forward(LmModel *m, int token, int pos);
float *lm_forward_batch(LmModel *m, const int *tokens, int n, int pos);
int lm_shift_context(LmModel *m, int pos, int n_keep, int n_discard);
void lm_set_threads(LmModel *m, int n);
void lm_set_exact(LmModel *m, int exact);
int lm_set_kernels(LmModel *m, const char *name);
int lm_vocab_size(const LmModel *m);
int lm_context_length(const LmModel *m);
void lm_free(LmModel *m);
LmTokenizer *lm_tokenizer_load(const char *path, int vocab_size, char *err, size_t errlen);
int lm_tokenizer_info(const LmTokenizer *t, LmTokenizerInfo *info);
int lm_tokenizer_set_template(LmTokenizer *t, const char *name);
int lm_tokenizer_set_thinking(LmTokenizer *t, int enable);
int lm_encode(LmTokenizer *t, const char *text, int bos, int eos, int *tokens, int max_tokens);
const char *lm_decode(LmTokenizer *t, int prev_token, int token);
const char *lm_token_text(const LmTokenizer *t, int token);
int lm_render_chat(LmTokenizer *t, const LmMessage *messages, int n, int continuing, int *tokens, int max_tokens);
void lm_tokenizer_free(LmTokenizer *t);
LmSampler *lm_sampler_new(int vocab_size, float temperature, float topp, unsigned long long seed);
int lm_sample(LmSampler *s, float *logits);
int lm_sampler_configure(LmSampler *s, int top_k, float min_p, float repeat_penalty, int repeat_last_n);
void lm_sampler_accept(LmSampler *s, int token);
void lm_sampler_free(LmSampler *s);
int lm_generate(LmModel *m, LmTokenizer *t, LmSampler *s, const char *prompt, const LmGenerateOptions *options,
                LmGenerateStats *stats, char *err, size_t errlen);
int lm_generate_tokens(LmModel *m, LmTokenizer *t, LmSampler *s, const int *prompt, int n_prompt, int pos,
                       const LmGenerateOptions *options, LmGenerateStats *stats, char *err, size_t errlen);
int lm_chat(LmModel *m, LmTokenizer *t, LmSampler *s, const LmChatOptions *options, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif // RUN_C_API

#if !defined(RUN_DECLARATIONS_ONLY) && !defined(RUN_C_IMPLEMENTATION)
#define RUN_C_IMPLEMENTATION
// Every kernel promises one order of float operations (see "Math kernels"): a compiler must not fuse
// a*b+c into one rounding here, whatever its defaults (gcc's GNU modes and clang fuse by default).
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")
#endif
#if defined(__cplusplus) && defined(__GNUC__) // C's designated initializers leave the other fields zero, as meant
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#endif
#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

// OpenMP is optional: without -fopenmp the pragma disappears instead of warning. Each parallel loop
// names its thread count (the model's), so no process-wide OpenMP setting is changed.
#ifdef _OPENMP
#define LM_PRAGMA(text) _Pragma(#text)
#define LM_PARALLEL_FOR(threads) LM_PRAGMA(omp parallel for schedule(static) num_threads(threads))
// _IF: only when cond holds, for a prompt's per-token steps (norms, residual adds, the gated
// activation, the tiles' input packing), which a token alone is too small to share: run on one thread
// they had left the other waiting (16% of a 2-thread 512-token prefill's samples in OpenMP's wait, 6%
// after; 110M prefill 2-6% faster with 2 threads).
#define LM_PARALLEL_FOR_IF(threads, cond) LM_PRAGMA(omp parallel for schedule(static) num_threads(threads) if (cond))
#else
#define LM_PARALLEL_FOR(threads)
#define LM_PARALLEL_FOR_IF(threads, cond)
#endif

// The kernel sets (see "Math kernels"). The plain loops are always built; with gcc or clang, on
// x86-64 the AVX2 and AVX-512 versions are built too, each function for its own target, and on
// aarch64 the NEON ones (SDOT where the CPU has it); a model takes the best its CPU reports
// (run_detect_kernels), so a plain `cc -O3 run.c -lm` is fast. RUN_PORTABLE leaves them out.
// avx2-vnni is the AVX2 set with AVX-VNNI's vpdpbusd for the integer sums (Intel since Alder Lake).
typedef enum { LM_KERNELS_PLAIN, LM_KERNELS_AVX2, LM_KERNELS_AVX2_VNNI, LM_KERNELS_AVX512, LM_KERNELS_NEON, LM_KERNELS_NEON_DOT, LM_KERNELS_N } LmKernels;
static const char *const run_kernel_names[LM_KERNELS_N] = {"portable", "avx2", "avx2-vnni", "avx512", "neon", "neon-dotprod"};
static const char *const run_kernel_titles[LM_KERNELS_N] = {"portable C", "AVX2", "AVX2 (AVX-VNNI)", "AVX-512 (VNNI)", "NEON", "NEON (dotprod)"};
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(RUN_PORTABLE) // (i386's 8 vector registers: portable)
#define LM_X86 1
#include <cpuid.h>
#if defined(__GNUC__) && !defined(__clang__) // gcc 12's AVX-512 headers trip its own uninitialized checks (C++)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#else
#include <immintrin.h>
#endif
// (no "fma" in LM_AVX2_FN: the compiler must not fuse what the kernels keep apart (the file's pragma
// forbids it too); attention's kernels, whose definitions fuse, have LM_AVX2_FMA_FN)
#define LM_AVX2_FN __attribute__((target("avx2,f16c")))
#define LM_AVX2_FMA_FN __attribute__((target("avx2,f16c,fma")))
#define LM_AVX512_FN __attribute__((target("avx2,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")))
// The float prompt tiles and the AVX2 integer ones are tuned for a generic CPU whatever -mtune says:
// gcc tuned for Zen (-march=native there) folds every load into the arithmetic, reloading a weight
// (or input) vector for every token (or row) of the tile; the float tiles ran at 0.55-0.65 of their
// generic speed. (The AVX-512 integer tiles measured no such loss. gcc inlines across tunings only
// what is always_inline.)
#if defined(__GNUC__) && !defined(__clang__)
#define LM_AVX2_TILE_FN __attribute__((target("avx2,f16c,tune=generic")))
#define LM_AVX512_TILE_FN __attribute__((target("avx2,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,tune=generic")))
#else
#define LM_AVX2_TILE_FN LM_AVX2_FN
#define LM_AVX512_TILE_FN LM_AVX512_FN
#endif
#else
#define LM_X86 0
#endif
#if defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(RUN_PORTABLE)
#define LM_NEON 1
#include <arm_neon.h>
#if defined(__linux__)
#include <sys/auxv.h>
#endif
#if defined(__clang__)
#define LM_NEON_DOT_FN __attribute__((target("dotprod")))
#else
#define LM_NEON_DOT_FN __attribute__((target("arch=armv8.2-a+dotprod"))) // (as arm_neon.h declares vdotq_s32)
#endif
#else
#define LM_NEON 0
#endif

// Whether the CPU has AVX-VNNI (cpuid leaf 7, subleaf 1, eax bit 4).
static int run_cpu_has_avx_vnni(void) {
#if LM_X86
    unsigned a, b, c, d;
    return __get_cpuid_count(7, 1, &a, &b, &c, &d) && (a >> 4 & 1);
#else
    return 0;
#endif
}

// The best kernel set this CPU runs: cpuid's feature bits, and xgetbv's word that the operating
// system saves the vector registers (AVX's 256 bits; AVX-512's masks and 512 bits).
static LmKernels run_detect_kernels(void) {
#if LM_X86
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c >> 12 & 1) || !(c >> 27 & 1) || !(c >> 28 & 1) || !(c >> 29 & 1)) return LM_KERNELS_PLAIN; // FMA, OSXSAVE, AVX, F16C
    unsigned xcr0_lo, xcr0_hi;
    __asm__ volatile("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
    (void)xcr0_hi;
    if ((xcr0_lo & 6) != 6 || !__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(b >> 5 & 1)) return LM_KERNELS_PLAIN; // AVX2
    int avx512 = (b >> 16 & 1) && (b >> 17 & 1) && (b >> 30 & 1) && (b >> 31 & 1) && (c >> 11 & 1); // F, DQ, BW, VL, VNNI
    if (avx512 && (xcr0_lo & 0xe6) == 0xe6) return LM_KERNELS_AVX512;
    return run_cpu_has_avx_vnni() ? LM_KERNELS_AVX2_VNNI : LM_KERNELS_AVX2;
#elif LM_NEON // (NEON is part of aarch64; SDOT is optional)
#if defined(__ARM_FEATURE_DOTPROD) || defined(__APPLE__)
    return LM_KERNELS_NEON_DOT;
#elif defined(__linux__) && defined(HWCAP_ASIMDDP)
    return getauxval(AT_HWCAP) & HWCAP_ASIMDDP ? LM_KERNELS_NEON_DOT : LM_KERNELS_NEON;
#else
    return LM_KERNELS_NEON;
#endif
#else
    return LM_KERNELS_PLAIN;
#endif
}

// Whether this CPU runs kernel set k: the sets of its architecture up to the best one.
static int run_kernels_available(LmKernels k) {
    LmKernels best = run_detect_kernels();
    int x86 = best == LM_KERNELS_AVX2 || best == LM_KERNELS_AVX2_VNNI || best == LM_KERNELS_AVX512;
    return k == LM_KERNELS_PLAIN || k == best || (x86 && k == LM_KERNELS_AVX2) || (x86 && k == LM_KERNELS_AVX2_VNNI && run_cpu_has_avx_vnni()) ||
           (best == LM_KERNELS_NEON_DOT && k == LM_KERNELS_NEON);
}

// Both AVX2 sets run the AVX2 kernels (avx2-vnni differs in the integer prompt tiles alone).
static inline int run_avx2_set(LmKernels k) { return k == LM_KERNELS_AVX2 || k == LM_KERNELS_AVX2_VNNI; }

static void run_set_err(char *err, size_t errlen, const char *fmt, ...) {
    if (err == NULL || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static int32_t run_read_i32(const unsigned char *p) { int32_t v; memcpy(&v, p, 4); return v; }
static uint64_t run_read_u64(const unsigned char *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static float run_read_f32(const unsigned char *p) { float v; memcpy(&v, p, 4); return v; }

// Open-addressing hash tables (tokenizer, GGUF tensor index) use this hash and power-of-two sizes.
static uint64_t run_hash_bytes(const void *data, size_t n) {
    const unsigned char *s = (const unsigned char *)data;
    uint64_t h = 1469598103934665603ull; // FNV-1a
    for (size_t i = 0; i < n; i++) { h ^= s[i]; h *= 1099511628211ull; }
    return h;
}

static size_t run_pow2_at_least(size_t n) { size_t p = 64; while (p < n) p *= 2; return p; }

// Decodes the UTF-8 character at s[0..n) into *cp and returns its length; an invalid byte counts as
// one character U+FFFD.
static size_t run_utf8_next(const unsigned char *s, size_t n, uint32_t *cp) {
    unsigned char c = s[0];
    size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (len == 0 || len > n) { *cp = 0xFFFD; return 1; }
    uint32_t v = len == 1 ? c : c & (0x7F >> len);
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) { *cp = 0xFFFD; return 1; }
        v = v << 6 | (s[i] & 0x3F);
    }
    *cp = v;
    return len;
}

static int run_file_exists_in(const char *dir, const char *name) {
    char path[4096];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

// Maps path read-only. On failure returns NULL with the reason in err; a folder that holds a model
// to convert is named as such.
static const unsigned char *run_map_file(const char *path, size_t *size, char *err, size_t errlen) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) { run_set_err(err, errlen, "cannot open %s: %s", path, strerror(errno)); return NULL; }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        if (S_ISDIR(st.st_mode) && run_file_exists_in(path, "config.json"))
            run_set_err(err, errlen, "%s is a Hugging Face model folder: convert it with python3 export.py model.bin --hf %s", path, path);
        else if (S_ISDIR(st.st_mode) && run_file_exists_in(path, "params.json"))
            run_set_err(err, errlen, "%s is a Meta Llama folder: convert it with python3 export.py model.bin --meta-llama %s", path, path);
        else
            run_set_err(err, errlen, "%s is %s, not a file", path, S_ISDIR(st.st_mode) ? "a folder" : "a device or pipe");
        return NULL;
    }
    if (st.st_size == 0) { run_set_err(err, errlen, "%s is empty", path); close(fd); return NULL; }
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd); // the mapping keeps the file
    if (p == MAP_FAILED) { run_set_err(err, errlen, "cannot map %s: %s", path, strerror(errno)); return NULL; }
    *size = (size_t)st.st_size;
    return (const unsigned char *)p;
}

// Names a file that a loader could not read when it is a kind people often give by mistake, with
// the fix; NULL otherwise. Called only after the real parse failed, so no checkpoint is mistaken.
static const char *run_foreign_file(const unsigned char *p, size_t size) {
    static const char lfs[] = "version https://git-lfs.github.com/spec/";
    size_t lead = 0;
    while (lead < size && lead < 64 && isspace(p[lead])) lead++;
    if (size >= sizeof lfs - 1 && memcmp(p, lfs, sizeof lfs - 1) == 0)
        return "is a git-lfs pointer, not the file itself (git clone without git-lfs leaves these): run git lfs pull in its "
               "repository, or download the file directly";
    if (size >= 10 && run_read_u64(p) <= size - 8 && p[8] == '{' && p[9] == '"')
        return "is a safetensors file: convert its Hugging Face folder with python3 export.py model.bin --hf DIR";
    if (size >= 4 && memcmp(p, "PK\x03\x04", 4) == 0)
        return "is a zip archive, as PyTorch saves checkpoints: convert it with python3 export.py model.bin --checkpoint FILE "
               "(llama2.c's) or --meta-llama DIR (Meta's)";
    if (size - lead >= 5 && (memcmp(p + lead, "<!DOC", 5) == 0 || memcmp(p + lead, "<html", 5) == 0 || memcmp(p + lead, "<HTML", 5) == 0 ||
                             memcmp(p + lead, "<?xml", 5) == 0))
        return "is a web page, not a model: the download link may need a login, or be the page instead of the file";
    if (lead + 1 < size && p[lead] == '{' && (p[lead + 1] == '"' || isspace(p[lead + 1])))
        return "is a JSON file (a Hugging Face tokenizer.json or config.json?): convert the model's folder with python3 "
               "export.py model.bin --hf DIR, or a tokenizer alone with python3 export.py tokenizer.bin --tokenizer FILE";
    // SentencePiece's tokenizer.model: a protobuf whose first field is a piece: 0x0a, length, 0x0a, length, text
    if (size > 8 && p[0] == 0x0a) {
        size_t k = 1;
        while (k < 6 && (p[k] & 0x80)) k++;
        if (k + 3 < size && p[k + 1] == 0x0a && p[k + 2] < 0x80 && k + 3 + p[k + 2] < size && p[k + 3 + p[k + 2]] == 0x15)
            return "is a SentencePiece tokenizer.model: convert it with python3 export.py tokenizer.bin --tokenizer FILE";
    }
    return NULL;
}

// ----------------------------------------------------------------------------
// Weight types: one table entry each (its layout, its block's definition, whether activations are
// quantized for it), as ggml's type traits; the kernels below dispatch on it

// The types: the float ones, run.c's and llama2.c's groups with their scales apart (v2, v3), and
// GGUF's blocks (ggml's layouts, each block carrying its own scales). The first five are v3's codes.
typedef enum {
    LM_F32, LM_F16, LM_BF16, LM_Q8_GROUPS, LM_Q4_GROUPS,
    LM_Q8_0, LM_Q4_0, LM_Q4_1, LM_Q5_0, LM_Q5_1, LM_Q2_K, LM_Q3_K, LM_Q4_K, LM_Q5_K, LM_Q6_K, LM_IQ4_NL, LM_IQ4_XS,
    LM_N_TYPES
} LmWeightType;

static float run_bits_to_f32(uint32_t bits) {
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

// IEEE half precision to float, exactly, with no float arithmetic on a subnormal value (CPUs take a
// slow assist for those, and GGUF's K-quant scales are often subnormal halves) and no branch (the
// plain loops that call this vectorize): the magnitude's bits shifted into place and the exponent
// rebiased (15 -> 127), again for inf and NaN; a subnormal h (m * 2^-24) as 2^-14 * (1 + m/1024)
// minus 2^-14, both normal floats, exactly.
static float run_f16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)(h & 0x7fff) << 13, exponent = bits & 0x0f800000u, normal = bits + (112u << 23), subnormal;
    float small = run_bits_to_f32(normal + (1u << 23)) - 0x1p-14f;
    memcpy(&subnormal, &small, sizeof subnormal);
    uint32_t inf_nan = 0u - (uint32_t)(exponent == 0x0f800000u), tiny = 0u - (uint32_t)(exponent == 0); // (all ones or zero: masks, not branches)
    uint32_t magnitude = ((normal + (inf_nan & (112u << 23))) & ~tiny) | (subnormal & tiny);
    return run_bits_to_f32(magnitude | (uint32_t)(h & 0x8000) << 16);
}

static float run_bf16_to_f32(uint16_t h) { return run_bits_to_f32((uint32_t)h << 16); }

static float run_f32_to_f32(float v) { return v; }

static uint16_t run_u16_at(const unsigned char *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return h;
}

static float run_half_at(const unsigned char *p) { return run_f16_to_f32(run_u16_at(p)); }

// A GGUF block unpacked: integer values q, and for each 16 of them a scale d and an offset m, so
// that value i is d[i/16] * q[i] - m[i/16]. Each block type's unpacking is its definition; the row
// decode and the integer dot are written once over it.
typedef struct { int8_t q[256]; float d[16], m[16]; } LmBlock;

static void run_same_scale(LmBlock *u, int n16, float d, float m) {
    for (int s = 0; s < n16; s++) { u->d[s] = d; u->m[s] = m; }
}

// Q8_0 (34 bytes, 32 values): fp16 d, 32 int8.
static void run_unpack_q8_0(const unsigned char *b, LmBlock *u) {
    memcpy(u->q, b + 2, 32);
    run_same_scale(u, 2, run_half_at(b), 0.0f);
}

// Q4_0 (18 bytes): fp16 d, then byte j holds value j (low nibble) and j + 16 (high), each + 8.
static void run_unpack_q4_0(const unsigned char *b, LmBlock *u) {
    for (int j = 0; j < 16; j++) { u->q[j] = (int8_t)((b[2 + j] & 15) - 8); u->q[j + 16] = (int8_t)((b[2 + j] >> 4) - 8); }
    run_same_scale(u, 2, run_half_at(b), 0.0f);
}

// Q4_1 (20 bytes): fp16 d, fp16 min, nibbles as Q4_0 without the offset; w = d * q + min.
static void run_unpack_q4_1(const unsigned char *b, LmBlock *u) {
    for (int j = 0; j < 16; j++) { u->q[j] = (int8_t)(b[4 + j] & 15); u->q[j + 16] = (int8_t)(b[4 + j] >> 4); }
    run_same_scale(u, 2, run_half_at(b), -run_half_at(b + 2));
}

// Q5_0 (22 bytes): fp16 d, 32 high bits (bit j of value j), nibbles as Q4_0; q = 5 bits - 16.
static void run_unpack_q5_0(const unsigned char *b, LmBlock *u) {
    uint32_t high;
    memcpy(&high, b + 2, 4);
    for (int j = 0; j < 16; j++) {
        u->q[j] = (int8_t)(((b[6 + j] & 15) | ((high >> j) & 1) << 4) - 16);
        u->q[j + 16] = (int8_t)(((b[6 + j] >> 4) | ((high >> (j + 16)) & 1) << 4) - 16);
    }
    run_same_scale(u, 2, run_half_at(b), 0.0f);
}

// Q5_1 (24 bytes): fp16 d, fp16 min, 32 high bits, nibbles; w = d * q + min.
static void run_unpack_q5_1(const unsigned char *b, LmBlock *u) {
    uint32_t high;
    memcpy(&high, b + 4, 4);
    for (int j = 0; j < 16; j++) {
        u->q[j] = (int8_t)((b[8 + j] & 15) | ((high >> j) & 1) << 4);
        u->q[j + 16] = (int8_t)((b[8 + j] >> 4) | ((high >> (j + 16)) & 1) << 4);
    }
    run_same_scale(u, 2, run_half_at(b), -run_half_at(b + 2));
}

// IQ4_NL (18 bytes): fp16 d, nibbles as Q4_0 that index a non-linear grid.
static const int8_t run_iq4_grid[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

static void run_unpack_iq4_nl(const unsigned char *b, LmBlock *u) {
    for (int j = 0; j < 16; j++) { u->q[j] = run_iq4_grid[b[2 + j] & 15]; u->q[j + 16] = run_iq4_grid[b[2 + j] >> 4]; }
    run_same_scale(u, 2, run_half_at(b), 0.0f);
}

// Q2_K (84 bytes, 256 values): 16 bytes of 4-bit scale / 4-bit min per 16 values, 64 bytes of 2-bit
// values, fp16 d and dmin. Each 32 bytes of values hold 128: bits 2k..2k+1 of byte l are value
// 32k + l. w = d * scale * q - dmin * min.
static void run_scales_q2_k(const unsigned char *b, LmBlock *u) {
    float d = run_half_at(b + 80), dmin = run_half_at(b + 82);
    for (int s = 0; s < 16; s++) { u->d[s] = d * (float)(b[s] & 15); u->m[s] = dmin * (float)(b[s] >> 4); }
}

static void run_unpack_q2_k(const unsigned char *b, LmBlock *u) {
    for (int half = 0; half < 2; half++)
        for (int k = 0; k < 4; k++)
            for (int l = 0; l < 32; l++) u->q[128 * half + 32 * k + l] = (int8_t)((b[16 + 32 * half + l] >> (2 * k)) & 3);
    run_scales_q2_k(b, u);
}

// Q3_K (110 bytes): 32 bytes of high bits (bit k of byte l: value 32k + l; a clear bit subtracts 4),
// 64 bytes of 2-bit values as Q2_K, 12 bytes of 6-bit scales (low nibbles in bytes 0-7, high 2 bits
// packed in bytes 8-11), fp16 d. w = d * (scale - 32) * q.
static void run_scales_q3_k(const unsigned char *b, LmBlock *u) {
    const unsigned char *sc = b + 96;
    float d = run_half_at(b + 108);
    for (int s = 0; s < 16; s++) {
        int lo = s < 8 ? sc[s] & 15 : sc[s - 8] >> 4, hi = (sc[8 + s % 4] >> (2 * (s / 4))) & 3;
        u->d[s] = d * (float)((lo | hi << 4) - 32);
        u->m[s] = 0.0f;
    }
}

static void run_unpack_q3_k(const unsigned char *b, LmBlock *u) {
    const unsigned char *high = b, *low = b + 32;
    for (int half = 0; half < 2; half++)
        for (int k = 0; k < 4; k++)
            for (int l = 0; l < 32; l++) {
                int v = 128 * half + 32 * k + l;
                u->q[v] = (int8_t)(((low[32 * half + l] >> (2 * k)) & 3) - ((high[l] >> (4 * half + k)) & 1 ? 0 : 4));
            }
    run_scales_q3_k(b, u);
}

// The 6-bit scale and min of sub-block j (of 8) in the 12 packed bytes of Q4_K and Q5_K.
static void run_scale_min_k4(const unsigned char *q, int j, int *scale, int *min) {
    if (j < 4) { *scale = q[j] & 63; *min = q[j + 4] & 63; }
    else { *scale = (q[j + 4] & 15) | (q[j - 4] >> 6) << 4; *min = (q[j + 4] >> 4) | (q[j] >> 6) << 4; }
}

// The scales of Q4_K and Q5_K: fp16 d, fp16 dmin, then 12 bytes of 6-bit scales and mins for 8
// sub-blocks of 32.
static void run_scales_k4(const unsigned char *b, LmBlock *u) {
    float d = run_half_at(b), dmin = run_half_at(b + 2);
    for (int j = 0; j < 8; j++) {
        int scale, min;
        run_scale_min_k4(b + 4, j, &scale, &min);
        u->d[2 * j] = u->d[2 * j + 1] = d * (float)scale;
        u->m[2 * j] = u->m[2 * j + 1] = dmin * (float)min;
    }
}

// Q4_K (144 bytes): the scales (run_scales_k4), then 128 bytes: each 32 hold 64 values (low nibbles
// first). w = d * scale * q - dmin * min.
static void run_unpack_q4_k(const unsigned char *b, LmBlock *u) {
    for (int j = 0; j < 8; j++)
        for (int l = 0; l < 32; l++) u->q[32 * j + l] = (int8_t)(j % 2 ? b[16 + 32 * (j / 2) + l] >> 4 : b[16 + 32 * (j / 2) + l] & 15);
    run_scales_k4(b, u);
}

// Q5_K (176 bytes): as Q4_K with 32 bytes of fifth bits before the nibbles (bit j of byte l: value
// 32j + l).
static void run_unpack_q5_k(const unsigned char *b, LmBlock *u) {
    const unsigned char *high = b + 16, *low = b + 48;
    for (int j = 0; j < 8; j++)
        for (int l = 0; l < 32; l++) {
            int nibble = j % 2 ? low[32 * (j / 2) + l] >> 4 : low[32 * (j / 2) + l] & 15;
            u->q[32 * j + l] = (int8_t)(nibble | ((high[l] >> j) & 1) << 4);
        }
    run_scales_k4(b, u);
}

// Q6_K (210 bytes): 128 bytes of low nibbles, 64 bytes of high 2 bits, 16 int8 scales (one per 16
// values), fp16 d. Per 128 values: low nibbles of bytes l and l + 32, then their high nibbles; the
// high bits of byte l (of 32) go to values l, l + 32, l + 64, l + 96. q = 6 bits - 32.
static void run_unpack_q6_k(const unsigned char *b, LmBlock *u) {
    float d = run_half_at(b + 208);
    for (int half = 0; half < 2; half++) {
        const unsigned char *ql = b + 64 * half, *qh = b + 128 + 32 * half;
        for (int l = 0; l < 32; l++)
            for (int k = 0; k < 4; k++) {
                int nibble = k < 2 ? ql[l + 32 * k] & 15 : ql[l + 32 * (k - 2)] >> 4;
                u->q[128 * half + 32 * k + l] = (int8_t)((nibble | ((qh[l] >> (2 * k)) & 3) << 4) - 32);
            }
    }
    for (int s = 0; s < 16; s++) { u->d[s] = d * (float)(int8_t)b[192 + s]; u->m[s] = 0.0f; }
}

// IQ4_XS (136 bytes): fp16 d, 16 bits of high scale bits, 4 bytes of low scale nibbles (8 sub-blocks
// of 32, 6-bit scales - 32), then nibbles as IQ4_NL per 32 values.
static void run_scales_iq4_xs(const unsigned char *b, LmBlock *u) {
    float d = run_half_at(b);
    unsigned high = (unsigned)b[2] | (unsigned)b[3] << 8;
    for (int j = 0; j < 8; j++) {
        int scale = ((b[4 + j / 2] >> (4 * (j % 2))) & 15) | ((high >> (2 * j)) & 3) << 4;
        u->d[2 * j] = u->d[2 * j + 1] = d * (float)(scale - 32);
        u->m[2 * j] = u->m[2 * j + 1] = 0.0f;
    }
}

static void run_unpack_iq4_xs(const unsigned char *b, LmBlock *u) {
    for (int j = 0; j < 8; j++) {
        const unsigned char *qs = b + 8 + 16 * j;
        for (int l = 0; l < 16; l++) { u->q[32 * j + l] = run_iq4_grid[qs[l] & 15]; u->q[32 * j + l + 16] = run_iq4_grid[qs[l] >> 4]; }
    }
    run_scales_iq4_xs(b, u);
}

// What the kernels need to know about a type. Values of a row are stored in blocks of block_values
// in block_bytes (the float types: blocks of one value); the GROUPS types keep their scales apart
// (see LmMatrix) and count per value.
typedef struct {
    const char *name;     // as --info shows it (llama.cpp's names for GGUF's types)
    int ggml_type;        // its id in GGUF files; -1 for run.c's and llama2.c's own layouts
    int block_values, block_bytes;
    int integer;          // multiplied against int8 activations
    void (*unpack)(const unsigned char *block, LmBlock *out); // GGUF's block types: the definition
    int has_min;          // its blocks have offsets (m): w = d * q - m
    int scale_values;     // values that share a scale: 32, or 16 (Q2_K, Q3_K, Q6_K)
    // the plain integer dot of a row with activations quantized in groups of 32, in run_dot_blocks'
    // order (NULL: run_dot_blocks itself, over the unpacked blocks)
    float (*dot)(const unsigned char *row, int cols, const int8_t *xq, const float *xs);
    // each 32 values are 16 bytes of nibbles, value j low and j + 16 high (possibly with more bits
    // apart): the x86 kernels read the input as run_arrange_q4_input arranges it to match
    int split_nibbles;
} LmTypeTraits;

// Kernels that read a row's blocks in place, for the most used types; each computes run_dot_blocks'
// terms in its order, to the bit (the suite checks them against it).
static float run_dot_q8_0(const unsigned char *row, int cols, const int8_t *xq, const float *xs);
static float run_dot_q4_0(const unsigned char *row, int cols, const int8_t *xq, const float *xs);
static float run_dot_q4_k(const unsigned char *row, int cols, const int8_t *xq, const float *xs);
static float run_dot_q6_k(const unsigned char *row, int cols, const int8_t *xq, const float *xs);

static const LmTypeTraits run_types[LM_N_TYPES] = { // in LmWeightType's order
#define LM_FLOAT_TYPE(nm, id, bytes) {.name = nm, .ggml_type = id, .block_values = 1, .block_bytes = bytes}
    LM_FLOAT_TYPE("fp32", 0, 4), LM_FLOAT_TYPE("fp16", 1, 2), LM_FLOAT_TYPE("bf16", 30, 2),
#undef LM_FLOAT_TYPE
    {.name = "q8_0", .ggml_type = -1, .block_values = 1, .block_bytes = 1, .integer = 1},
    {.name = "q4_0", .ggml_type = -1, .block_values = 2, .block_bytes = 1, .integer = 1},
#define LM_BLOCK_TYPE(nm, id, values, bytes, unpacker, min, run, dotter, split)                                                                 \
    {.name = nm, .ggml_type = id, .block_values = values, .block_bytes = bytes, .integer = 1, .unpack = unpacker, .has_min = min, .scale_values = run, \
     .dot = dotter, .split_nibbles = split}
    //            name      ggml values bytes  unpack             min  run  dot           split nibbles
    LM_BLOCK_TYPE("Q8_0",   8,   32,   34,  run_unpack_q8_0,   0,   32,  run_dot_q8_0, 0),
    LM_BLOCK_TYPE("Q4_0",   2,   32,   18,  run_unpack_q4_0,   0,   32,  run_dot_q4_0, 1),
    LM_BLOCK_TYPE("Q4_1",   3,   32,   20,  run_unpack_q4_1,   1,   32,  NULL,         1),
    LM_BLOCK_TYPE("Q5_0",   6,   32,   22,  run_unpack_q5_0,   0,   32,  NULL,         1),
    LM_BLOCK_TYPE("Q5_1",   7,   32,   24,  run_unpack_q5_1,   1,   32,  NULL,         1),
    LM_BLOCK_TYPE("Q2_K",   10,  256,  84,  run_unpack_q2_k,   1,   16,  NULL,         0),
    LM_BLOCK_TYPE("Q3_K",   11,  256,  110, run_unpack_q3_k,   0,   16,  NULL,         0),
    LM_BLOCK_TYPE("Q4_K",   12,  256,  144, run_unpack_q4_k,   1,   32,  run_dot_q4_k, 0),
    LM_BLOCK_TYPE("Q5_K",   13,  256,  176, run_unpack_q5_k,   1,   32,  NULL,         0),
    LM_BLOCK_TYPE("Q6_K",   14,  256,  210, run_unpack_q6_k,   0,   16,  run_dot_q6_k, 0),
    LM_BLOCK_TYPE("IQ4_NL", 20,  32,   18,  run_unpack_iq4_nl, 0,   32,  NULL,         1),
    LM_BLOCK_TYPE("IQ4_XS", 23,  256,  136, run_unpack_iq4_xs, 0,   32,  NULL,         1),
#undef LM_BLOCK_TYPE
};

static int run_is_integer_type(LmWeightType t) { return run_types[t].integer; }

// ----------------------------------------------------------------------------
// Checkpoint format and loading

#define LM_MAGIC 0x616b3432u     // "ak42" as a little-endian uint32
#define LM_V0_HEADER_BYTES 28
#define LM_AK42_HEADER_BYTES 256
#define LM_TENSOR_ALIGN 64       // v3 tensors start at multiples of this
#define LM_MAX_DIM (1 << 20)     // any larger dimension is a corrupt header, not a model
#define LM_MAX_LAYERS 4096
#define LM_MAX_KV_BYTES (1ull << 38) // 256 GiB: the KV cache's limit where the machine's memory is unknown
#define LM_MAX_SPLIT_TOKEN 1024      // SentencePiece tokens longer than this (bytes) are not split into pairs
#define LM_MAX_Q4_GROUP 256          // Q4_0 groups are unpacked into a buffer of this size
#define LM_GGUF_CONTEXT 4096         // the context of a GGUF model whose own is longer (llama.cpp's default)

typedef enum { LM_ROPE_PAIRS = 0, LM_ROPE_HALVES = 1 } LmRopeLayout;
typedef enum { LM_ROPE_NONE = 0, LM_ROPE_LINEAR = 1, LM_ROPE_LLAMA3 = 2, LM_ROPE_LONGROPE = 3, LM_ROPE_YARN = 4 } LmRopeScaling;
typedef enum { LM_ACT_SILU = 0, LM_ACT_GELU_TANH = 1 } LmActivation; // the FFN gate's: SwiGLU or GeGLU

typedef struct {
    int dim;          // transformer width (the residual stream)
    int hidden_dim;   // FFN inner width
    int n_layers;
    int n_heads;      // query heads
    int n_kv_heads;   // key/value heads (n_heads for plain multi-head attention)
    int head_size;
    int vocab_size;
    int seq_len;      // context length (the KV cache's)
    int trained_context; // the model's own (seq_len may be less)
    int max_context;  // the longest context it runs at: trained_context (YaRN: its scaled window)
    LmWeightType cache_type; // the KV cache's: LM_F32, LM_F16, LM_BF16 or LM_Q8_0
    int shared_classifier; // the classifier is the token embedding
    int qkv_bias;     // q, k and v projections have biases (Qwen2)
    int qk_norm;      // q and k get a per-head RMSNorm before RoPE (Qwen3, Gemma 3)
    int sandwich_norms; // attention and FFN outputs are normed before the residual add (Gemma 2/3)
    LmActivation activation;
    float embed_scale;   // the embedding row is multiplied by this (Gemma: sqrt(dim)); 1 otherwise
    float attn_scale;    // attention scores are q.k times this (1/sqrt(head_size) unless the model says)
    float attn_softcap;  // scores become cap * tanh(score / cap) when > 0 (Gemma 2)
    float final_softcap; // the logits likewise
    int sliding_window;  // local layers see the last sliding_window positions (their own included); 0 = none
    int window_period;   // with a window: layer l is global when (l + 1) % window_period == 0; 0 = all local
    int version;      // 0, 1, 2 (llama2.c's formats), 3 (run.c's) or 4 (GGUF)
    LmWeightType weight_type;
    int group_size;   // Q8_0 / Q4_0 group length (0 otherwise)
    float norm_eps;
    float rope_theta;
    LmRopeLayout rope_layout;
    LmRopeScaling rope_scaling;
    float rope_factor, rope_low_freq_factor, rope_high_freq_factor; // (YaRN: factor, beta_fast, beta_slow)
    int rope_original_context;
    int rotary_dim;         // the leading dims of each head that RoPE turns (head_size unless partial: Phi-4-mini)
    float rope_local_theta; // local layers' RoPE base, unscaled (Gemma 3); rope_theta when 0
    float rope_attn_factor; // LongRoPE, YaRN: cos and sin are multiplied by this
    const float *rope_freq_factors; // (rotary_dim / 2) divisors of the frequencies (GGUF's rope_freqs, LongRoPE's
                                    // short factors), or NULL
    const float *rope_long_factors; // LongRoPE: (rotary_dim / 2) the divisors for positions past rope_original_context
    uint64_t tokenizer_offset, tokenizer_size; // the embedded tokenizer file (v3), size 0 if none (GGUF: 1 if any)
    int gguf_version;       // the GGUF version (the file is GGUF when version is 4), 0 otherwise
    int integer_activations; // some matrix multiplies int8 activations (quantized in groups of group_size)
    int split_nibble_inputs; // some matrix stores 32 values in 16 bytes of nibbles (run.c's q4_0 in groups of 32,
                            // GGUF's split_nibbles types), whose SIMD kernels read the activations as
                            // run_arrange_q4_input arranges them
} LmConfig;

// A weight matrix (rows, cols), row-major, pointing into the mapped file. The GROUPS types keep a
// scale per group of group_size values apart from the values: Q8 as int8, Q4 packing each group into
// group_size/2 bytes (byte j holds value j in its low nibble and value j + group_size/2 in its high
// nibble, each stored as value + 8). GGUF's block types store each row as cols / block_values blocks.
typedef struct {
    const void *data;             // (rows, cols) values of `type`
    const unsigned char *scales;  // GROUPS: a scale per group, fp32 (Q8; v2 does not align them) or fp16 (Q4)
    int rows, cols;
    LmWeightType type;
    int group_size;               // GROUPS: values per group
    size_t row_bytes;             // block types: bytes from one row to the next
} LmMatrix;

typedef struct {
    const float *rms_att;       // (dim)
    LmMatrix wq;                // (n_heads * head_size, dim)
    LmMatrix wk;                // (n_kv_heads * head_size, dim)
    LmMatrix wv;                // (n_kv_heads * head_size, dim)
    const float *bq, *bk, *bv;  // (n_heads * head_size), (kv_dim), (kv_dim) biases, or NULL
    const float *q_norm, *k_norm; // (head_size) each, with qk_norm
    LmMatrix wo;                // (dim, n_heads * head_size)
    const float *rms_post_att;  // (dim) with sandwich_norms
    const float *rms_ffn;       // (dim)
    LmMatrix w1;                // (hidden_dim, dim), the gate
    LmMatrix w2;                // (dim, hidden_dim), the down projection
    LmMatrix w3;                // (hidden_dim, dim), the up projection
    const float *rms_post_ffn;  // (dim) with sandwich_norms
} LmLayer;

typedef struct {
    LmMatrix token_embedding;   // (vocab_size, dim)
    LmLayer *layers;            // (n_layers)
    const float *rms_final;     // (dim)
    LmMatrix wcls;              // (vocab_size, dim); the embedding when shared
} LmWeights;

// A block of n activation rows, with the int8 forms that integer weights multiply.
typedef struct {
    const float *f;        // (n, ld) fp32 rows of cols values
    int n, cols, ld;
    int8_t *q;             // (n, cols) Q8_0 values (integer weights only)
    float *s;              // (n, groups) their scales, groups = ceil(cols / group_size)
    int groups;
    int32_t *xsum;         // (n, groups) each group's sum of values
    int32_t *xsum16;       // (n, groups) the sum of each group's first 16 values (the k-quants' runs of 16), or NULL
    int8_t *qarranged;     // (n, cols rounded up to 128) Q4_0 groups of 32: see run_arrange_q4_input
    unsigned char *packed; // prefill, or NULL: AVX-512 (ceil(n/16), cols/4, 16 tokens, 4 values), each + 128;
                           // AVX2 (ceil(n/8), cols/2, 8 tokens, 2 values) as int16
    int8_t *packed8;       // AVX2 prefill: (ceil(n/8), cols/4, 8 tokens, 4 values), the values as they are
    float *spacked;        // (ceil(n/16), groups, 16 tokens) the scales in the same order (AVX2: 8 tokens)
    LmKernels kernels;     // the kernel set to run
    float *scratch;        // (scratch_slots, scratch_floats): the working memory of thread i is slot i
    int scratch_slots;
    size_t scratch_floats;
} LmBatch;

// A query as attention's scores read it: its floats, and for a Q8_0 cache its Q8_0 form (groups of 32
// dims: the int8 values, each group's scale and the sum of its values).
typedef struct { const float *f; const int8_t *q; const float *scale; const int32_t *sum; } LmQuery;

#define LM_BATCH 256 // tokens per forward block: the weights are read once per block
#define LM_RING_SLACK 64 // rows a local layer's ring keeps past its window: the block size with rings
#define LM_ROW_BLOCK 16 // rows per unit of parallel work
#define LM_KEY_TILE 16 // positions per tile of the key cache
#define LM_ATTN_QUERIES 16 // queries (of one key/value head) per unit of attention work
#define LM_VALUE_ROWS 64   // value rows per call of the weighted sums (a Q8_0 cache: their weights in arrays of this size)
#ifndef LM_PREFETCH_BYTES
#define LM_PREFETCH_BYTES 8192 // how far ahead streaming reads (weights, the KV cache) prefetch
#endif

// One unit of attention work: queries of one key/value head, each with the positions it sees.
typedef struct {
    const unsigned char *keys, *values; // this kv head's tiles and rows in the layer's cache
    int ring;                          // the layer's rows: position t is in row t % ring
    int nq;                            // queries, at most LM_ATTN_QUERIES
    const float *q[LM_ATTN_QUERIES];   // (head_size) each
    float *out[LM_ATTN_QUERIES];       // (head_size) each: the weighted sums of the values
    int first[LM_ATTN_QUERIES], last[LM_ATTN_QUERIES]; // the positions each sees
} LmAttention;

typedef struct {
    float *x;           // (batch, dim) the residual stream
    float *xb;          // (batch, max(dim, q_dim)) normed input, then attention output
    float *xb2;         // (batch, dim) a block's output before the residual add
    float *hb;          // (batch, hidden_dim) FFN gate
    float *hb2;         // (batch, hidden_dim) FFN up
    float *q;           // (batch, n_heads * head_size)
    float *kb, *vb;     // (batch, kv_dim) the block's keys and values, on their way into the cache
    LmAttention *units; // (n_kv_heads * ceil(LM_BATCH * n_heads / n_kv_heads / LM_ATTN_QUERIES)) a block's units of attention work
    float *att;         // (att_slots, att_floats): each thread's scores for up to LM_ATTN_QUERIES queries
    int att_slots;      // (and their Q8_0 forms)
    size_t att_floats;
    float *logits;      // (vocab_size)
    // The KV cache, in the cache type; position t of layer l in its row t % cache_positions[l]:
    unsigned char *key_cache;   // (layer, kv head, positions / LM_KEY_TILE tiles of key_tile_bytes): a tile
                                // holds LM_KEY_TILE positions' keys dimension by dimension, (head_size,
                                // LM_KEY_TILE) values, so attention scores many positions per vector (q8_0:
                                // int8 (head_size / 4, LM_KEY_TILE, 4), four dims of a position together as
                                // VNNI multiplies them, then (head_size / 32, LM_KEY_TILE) fp16 scales)
    unsigned char *value_cache; // (layer, kv head, positions, value_row_bytes): each a head's values in a row
                                // (q8_0: GGUF's Q8_0 blocks)
    size_t key_tile_bytes, value_row_bytes; // (a tile is LM_KEY_TILE rows' bytes)
    size_t *cache_offset; // (n_layers) bytes where each layer's keys (and its values) start
    int *cache_positions; // (n_layers) seq_len rounded up to LM_KEY_TILE, or for a local layer a ring of
                          // window + LM_RING_SLACK rows (rounded likewise)
    int block;            // tokens per forward block: LM_BATCH, or LM_RING_SLACK when a layer has a ring
    float *rope_freq;   // (3, rotary_dim / 2) inverse frequencies: global (scaled), global past
                        // LongRoPE's original context, local layers' own (rope_local_theta, unscaled)
    int *tokens;        // (seq_len) the token at each position of the cache
    int rope_long;      // LongRoPE: the cache was computed with the long factors
    float *rope_cos;    // (2, batch, rotary_dim / 2) at the block's positions, for global and local layers
    float *rope_sin;    // (2, batch, rotary_dim / 2)
    int8_t *xq;         // (batch, widest) quantized activations (integer weights only)
    float *xs;          // (batch, widest / group_size + 1) their scales
    int32_t *xsum;      // (batch, widest / group_size + 1) the sums of their groups
    int32_t *xsum16;    // (batch, widest / group_size + 1) the sums of their groups' first 16 values
    int8_t *xarranged;  // (batch, widest + 128) xq rearranged for Q4_0 groups of 32
    unsigned char *xpacked; // (batch, widest + 4) int16s: the prefill layouts of xq (see LmBatch)
    int8_t *xpacked8;       // (batch, widest + 4) AVX2's byte layout of xq (see LmBatch)
    float *xspacked;    // (batch, widest / group_size + 1) the VNNI layout of xs
    float *scratch;     // (scratch_slots, scratch_floats) each thread's working memory in the matmul kernels
    int scratch_slots;
    size_t scratch_floats;
} LmRunState;

struct LmModel {
    LmConfig config;
    LmWeights weights;
    LmRunState state;
    const unsigned char *data; // the read-only mapping of the checkpoint, or (in_memory) its copy
    size_t file_size;
    int in_memory;             // data is a copy in memory (LmLoadOptions), freed rather than unmapped
    int threads;               // OpenMP threads for this model (lm_set_threads)
    char weight_types[192];    // the types of its matrices, for lm_model_info ("Q4_K, Q6_K")
    char features[256];        // what its architecture adds to Llama's, for lm_model_info
    int exact;                 // integer weights meet float activations (lm_set_exact)
    LmKernels kernels;         // the kernel set its matmuls run (lm_set_kernels)
};


// Bytes of count values of type t (their scales apart).
static uint64_t run_weight_bytes(LmWeightType t, uint64_t count) {
    return t == LM_F32 ? 4 * count : t == LM_Q8_GROUPS ? count : t == LM_Q4_GROUPS ? count / 2 : 2 * count;
}

// Checks the dimensions common to every format.
static int run_check_dims(LmConfig *c, const int64_t v[7], const char *path, char *err, size_t errlen) {
    static const char *names[7] = {"dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"};
    for (int i = 0; i < 7; i++) {
        int64_t limit = i == 2 ? LM_MAX_LAYERS : LM_MAX_DIM * (i == 5 || i == 6 ? 16 : 1);
        if (v[i] <= 0 || v[i] > limit) {
            run_set_err(err, errlen, "%s: header field %s = %lld is out of range (1..%lld); not a checkpoint?",
                    path, names[i], (long long)v[i], (long long)limit);
            return 0;
        }
    }
    c->dim = (int)v[0]; c->hidden_dim = (int)v[1]; c->n_layers = (int)v[2]; c->n_heads = (int)v[3];
    c->n_kv_heads = (int)v[4]; c->vocab_size = (int)v[5]; c->seq_len = (int)v[6];
    if (c->n_heads % c->n_kv_heads != 0) {
        run_set_err(err, errlen, "%s: n_kv_heads %d must divide n_heads %d", path, c->n_kv_heads, c->n_heads);
        return 0;
    }
    return 1;
}

// Reads a v3 header's own fields into c. 0 with the reason in err.
static int run_parse_v3_fields(LmConfig *c, const unsigned char *p, size_t size, const char *path, char *err, size_t errlen) {
    c->head_size = run_read_i32(p + 28);
    c->norm_eps = run_read_f32(p + 40);
    c->rope_theta = run_read_f32(p + 44);
    int layout = run_read_i32(p + 48), scaling = run_read_i32(p + 52), flags = run_read_i32(p + 72), type = run_read_i32(p + 76);
    c->rope_factor = run_read_f32(p + 56);
    c->rope_low_freq_factor = run_read_f32(p + 60);
    c->rope_high_freq_factor = run_read_f32(p + 64);
    c->rope_original_context = run_read_i32(p + 68);
    c->group_size = run_read_i32(p + 80);
    c->tokenizer_offset = run_read_u64(p + 88);
    c->tokenizer_size = run_read_u64(p + 96);
    c->rotary_dim = run_read_i32(p + 112);
    c->embed_scale = run_read_f32(p + 116);
    c->attn_scale = run_read_f32(p + 120);
    c->attn_softcap = run_read_f32(p + 124);
    c->final_softcap = run_read_f32(p + 128);
    c->sliding_window = run_read_i32(p + 132);
    c->window_period = run_read_i32(p + 136);
    c->rope_local_theta = run_read_f32(p + 140);
    c->rope_attn_factor = run_read_f32(p + 144);
    int activation = run_read_i32(p + 148);
    if (c->head_size <= 0 || c->head_size > 4096 || c->head_size % 2 != 0) {
        run_set_err(err, errlen, "%s: head_size %d must be even and in 2..4096", path, c->head_size);
        return 0;
    }
    if (!(c->norm_eps > 0.0f && c->norm_eps < 1.0f) || !(c->rope_theta > 0.0f) || isinf(c->rope_theta)) {
        run_set_err(err, errlen, "%s: norm_eps %g or rope_theta %g is out of range", path, c->norm_eps, c->rope_theta);
        return 0;
    }
    if (layout < 0 || layout > 1 || scaling < 0 || scaling > 4 || (flags & ~31) != 0 || type < 0 || type > 4 || activation < 0 || activation > 1) {
        run_set_err(err, errlen, "%s: unknown rope layout %d, rope scaling %d, flags %d, weight type %d or activation %d",
                path, layout, scaling, flags, type, activation);
        return 0;
    }
    c->qk_norm = (flags & 4) != 0;
    c->sandwich_norms = (flags & 8) != 0;
    c->activation = (LmActivation)activation;
    if (scaling == LM_ROPE_LONGROPE && (flags & 16) == 0) {
        run_set_err(err, errlen, "%s: LongRoPE scaling without its factors (flag 16)", path);
        return 0;
    }
    c->rope_layout = (LmRopeLayout)layout;
    c->rope_scaling = (LmRopeScaling)scaling;
    c->qkv_bias = (flags & 1) != 0;
    c->shared_classifier = (flags & 2) != 0;
    c->weight_type = (LmWeightType)type;
    if ((scaling == LM_ROPE_LINEAR || scaling == LM_ROPE_LLAMA3 || scaling == LM_ROPE_YARN) && (!(c->rope_factor >= 1.0f) || isinf(c->rope_factor) ||
         (scaling == LM_ROPE_LLAMA3 && (!(c->rope_high_freq_factor > c->rope_low_freq_factor) ||
                                        !(c->rope_low_freq_factor > 0.0f) || c->rope_original_context <= 0)) ||
         (scaling == LM_ROPE_YARN && (!(c->rope_low_freq_factor > 0.0f) || !(c->rope_high_freq_factor > 0.0f) || isinf(c->rope_low_freq_factor) ||
                                      isinf(c->rope_high_freq_factor) || c->rope_original_context <= 0)))) {
        run_set_err(err, errlen, "%s: rope scaling parameters are out of range", path);
        return 0;
    }
    if (c->tokenizer_size > 0 && (c->tokenizer_offset > size || c->tokenizer_size > size - c->tokenizer_offset)) {
        run_set_err(err, errlen, "%s: the embedded tokenizer lies past the end of the file", path);
        return 0;
    }
    return 1;
}

// Fills the defaults of the fields a format may leave 0 (rotary_dim, embed_scale, attn_scale,
// rope_attn_factor) and checks the ranges of the architecture's features. 0 with the reason in err.
static int run_check_features(LmConfig *c, const char *path, char *err, size_t errlen) {
    if (c->rotary_dim == 0) c->rotary_dim = c->head_size;
    if (c->embed_scale == 0.0f) c->embed_scale = 1.0f;
    if (c->attn_scale == 0.0f) c->attn_scale = 1.0f / sqrtf((float)c->head_size);
    if (c->rope_attn_factor == 0.0f) c->rope_attn_factor = 1.0f;
    int finite = isfinite(c->embed_scale) && isfinite(c->attn_scale) && isfinite(c->attn_softcap) && isfinite(c->final_softcap) &&
                 isfinite(c->rope_local_theta) && isfinite(c->rope_attn_factor);
    if (!finite || c->rotary_dim < 2 || c->rotary_dim > c->head_size || c->rotary_dim % 2 != 0 || !(c->embed_scale > 0.0f) ||
        !(c->attn_scale > 0.0f) || c->attn_softcap < 0.0f || c->final_softcap < 0.0f || c->sliding_window < 0 ||
        c->window_period < 0 || c->rope_local_theta < 0.0f || !(c->rope_attn_factor > 0.0f) ||
        (c->rope_scaling == LM_ROPE_LONGROPE && c->rope_original_context <= 0)) {
        run_set_err(err, errlen, "%s: an attention or RoPE parameter is out of range (rotary dims %d of %d, scales %g %g, soft caps %g %g, "
                    "window %d every %d, local theta %g, LongRoPE factor %g from %d)", path, c->rotary_dim, c->head_size, c->embed_scale,
                    c->attn_scale, c->attn_softcap, c->final_softcap, c->sliding_window, c->window_period, c->rope_local_theta,
                    c->rope_attn_factor, c->rope_original_context);
        return 0;
    }
    return 1;
}

// The attention width a header implies is sane (the KV cache is checked at load, for the context asked).
static int run_check_sizes(const LmConfig *c, const char *path, char *err, size_t errlen) {
    if ((int64_t)c->n_heads * c->head_size > LM_MAX_DIM) {
        run_set_err(err, errlen, "%s: n_heads %d x head_size %d is out of range (at most %d)", path, c->n_heads, c->head_size, LM_MAX_DIM);
        return 0;
    }
    return 1;
}

// Reads the header into c. Returns the offset of the first tensor, or 0 with the reason in err.
static size_t run_parse_header(LmConfig *c, const unsigned char *p, size_t size, const char *path,
                           char *err, size_t errlen) {
    memset(c, 0, sizeof *c);
    c->norm_eps = 1e-5f;
    c->rope_theta = 10000.0f;
    if (size < LM_V0_HEADER_BYTES) {
        run_set_err(err, errlen, "%s: %zu bytes is too small for a checkpoint header", path, size);
        return 0;
    }
    size_t offset;
    int64_t vocab;
    const unsigned char *dims = p;
    if ((uint32_t)run_read_i32(p) == LM_MAGIC) {
        if (size < LM_AK42_HEADER_BYTES) {
            run_set_err(err, errlen, "%s: truncated header (%zu bytes, expected %d)", path, size, LM_AK42_HEADER_BYTES);
            return 0;
        }
        c->version = run_read_i32(p + 4);
        if (c->version < 1 || c->version > 3) {
            run_set_err(err, errlen, "%s: unsupported checkpoint version %d (expected 1, 2 or 3)", path, c->version);
            return 0;
        }
        dims = p + 8;
        vocab = run_read_i32(dims + 20);
        offset = LM_AK42_HEADER_BYTES;
        if (c->version == 3) {
            int64_t v[7] = {run_read_i32(p + 8), run_read_i32(p + 12), run_read_i32(p + 16), run_read_i32(p + 20), run_read_i32(p + 24), run_read_i32(p + 32), run_read_i32(p + 36)};
            if (!run_check_dims(c, v, path, err, errlen) || !run_parse_v3_fields(c, p, size, path, err, errlen)) return 0;
            uint64_t tensors = run_read_u64(p + 104);
            if (tensors < LM_AK42_HEADER_BYTES || tensors % LM_TENSOR_ALIGN != 0 || tensors > size) {
                run_set_err(err, errlen, "%s: tensor offset %llu is not a 64-byte boundary inside the file", path, (unsigned long long)tensors);
                return 0;
            }
            offset = (size_t)tensors;
        } else {
            if (vocab <= 0) { run_set_err(err, errlen, "%s: vocab_size %lld must be positive", path, (long long)vocab); return 0; }
            if (dims[28] > 1) { run_set_err(err, errlen, "%s: shared_classifier flag is %d (expected 0 or 1)", path, dims[28]); return 0; }
            c->shared_classifier = dims[28];
            if (c->version == 2) { c->weight_type = LM_Q8_GROUPS; c->group_size = run_read_i32(dims + 29); }
        }
    } else {
        c->version = 0;
        vocab = run_read_i32(p + 20);
        c->shared_classifier = vocab > 0;
        if (vocab < 0) vocab = -vocab;
        offset = LM_V0_HEADER_BYTES;
    }
    if (c->version < 3) {
        int64_t v[7] = {run_read_i32(dims), run_read_i32(dims + 4), run_read_i32(dims + 8), run_read_i32(dims + 12), run_read_i32(dims + 16), vocab, run_read_i32(dims + 24)};
        if (!run_check_dims(c, v, path, err, errlen)) return 0;
        if (c->dim % c->n_heads != 0 || (c->dim / c->n_heads) % 2 != 0) {
            run_set_err(err, errlen, "%s: n_heads %d must divide dim %d into an even head size", path, c->n_heads, c->dim);
            return 0;
        }
        c->head_size = c->dim / c->n_heads;
    }
    if (!run_check_features(c, path, err, errlen) || !run_check_sizes(c, path, err, errlen)) return 0;
    int q_dim = c->n_heads * c->head_size;
    c->integer_activations = run_is_integer_type(c->weight_type);
    c->split_nibble_inputs = c->weight_type == LM_Q4_GROUPS;
    // v2 groups the flattened tensor (every matrix has dim as a factor of its size, so groups tile
    // it); v3 groups rows, so the group size must divide every row length
    if (run_is_integer_type(c->weight_type) &&
        (c->group_size <= 0 || c->dim % c->group_size != 0 ||
         (c->weight_type == LM_Q4_GROUPS && (c->group_size % 2 != 0 || c->group_size > LM_MAX_Q4_GROUP)) ||
         (c->version == 3 && (c->hidden_dim % c->group_size != 0 || q_dim % c->group_size != 0)))) {
        run_set_err(err, errlen, "%s: group size %d must be positive%s and divide dim %d%s", path, c->group_size,
                c->weight_type == LM_Q4_GROUPS ? ", even, at most 256" : "", c->dim, c->version == 3 ? ", hidden_dim and n_heads * head_size" : "");
        return 0;
    }
    return offset;
}

// Walks the tensors of a file in order. take_* never forms a pointer past the end of the file: once
// a tensor does not fit, ok drops to 0 and offset keeps counting the bytes the header implies.
typedef struct {
    const unsigned char *base;
    uint64_t size, offset;
    uint64_t align; // each tensor starts at a multiple of this
    int ok;
} LmCursor;

static const unsigned char *run_take_bytes(LmCursor *cur, uint64_t nbytes) {
    cur->offset = (cur->offset + cur->align - 1) / cur->align * cur->align;
    const unsigned char *p = NULL;
    if (cur->ok && cur->offset <= cur->size && nbytes <= cur->size - cur->offset) p = cur->base + cur->offset;
    else cur->ok = 0;
    cur->offset += nbytes;
    return p;
}

static const float *run_take_f32(LmCursor *cur, uint64_t count) {
    return (const float *)(const void *)run_take_bytes(cur, count * sizeof(float));
}

static LmMatrix run_take_matrix(LmCursor *cur, const LmConfig *c, int rows, int cols) {
    LmMatrix m = {.rows = rows, .cols = cols, .type = c->weight_type, .group_size = c->group_size};
    uint64_t count = (uint64_t)rows * (uint64_t)cols;
    m.data = run_take_bytes(cur, run_weight_bytes(c->weight_type, count));
    if (run_is_integer_type(c->weight_type))
        m.scales = run_take_bytes(cur, count / (uint64_t)c->group_size * (c->weight_type == LM_Q8_GROUPS ? 4 : 2));
    return m;
}

// Assigns every weight pointer in the file order of c->version.
static void run_map_weights(LmWeights *w, LmConfig *c, LmCursor *cur) {
    int L = c->n_layers, dim = c->dim, hidden = c->hidden_dim;
    int q_dim = c->n_heads * c->head_size, kv_dim = c->n_kv_heads * c->head_size;
    LmLayer *ly = w->layers;
    if (c->version == 3) { // layer by layer
        w->token_embedding = run_take_matrix(cur, c, c->vocab_size, dim);
        for (int l = 0; l < L; l++) {
            ly[l].rms_att = run_take_f32(cur, (uint64_t)dim);
            ly[l].wq = run_take_matrix(cur, c, q_dim, dim);
            ly[l].wk = run_take_matrix(cur, c, kv_dim, dim);
            ly[l].wv = run_take_matrix(cur, c, kv_dim, dim);
            if (c->qkv_bias) {
                ly[l].bq = run_take_f32(cur, (uint64_t)q_dim);
                ly[l].bk = run_take_f32(cur, (uint64_t)kv_dim);
                ly[l].bv = run_take_f32(cur, (uint64_t)kv_dim);
            }
            if (c->qk_norm) {
                ly[l].q_norm = run_take_f32(cur, (uint64_t)c->head_size);
                ly[l].k_norm = run_take_f32(cur, (uint64_t)c->head_size);
            }
            ly[l].wo = run_take_matrix(cur, c, dim, q_dim);
            if (c->sandwich_norms) ly[l].rms_post_att = run_take_f32(cur, (uint64_t)dim);
            ly[l].rms_ffn = run_take_f32(cur, (uint64_t)dim);
            ly[l].w1 = run_take_matrix(cur, c, hidden, dim);
            ly[l].w2 = run_take_matrix(cur, c, dim, hidden);
            ly[l].w3 = run_take_matrix(cur, c, hidden, dim);
            if (c->sandwich_norms) ly[l].rms_post_ffn = run_take_f32(cur, (uint64_t)dim);
        }
        w->rms_final = run_take_f32(cur, (uint64_t)dim);
        if (c->rope_scaling == LM_ROPE_LONGROPE) { // the short factors, then the long ones
            c->rope_freq_factors = run_take_f32(cur, (uint64_t)c->rotary_dim / 2);
            c->rope_long_factors = run_take_f32(cur, (uint64_t)c->rotary_dim / 2);
        }
    } else { // llama2.c's formats: tensor by tensor, all layers of each together
        const float *rms_att, *rms_ffn = NULL;
        if (c->version == 0) {
            w->token_embedding = run_take_matrix(cur, c, c->vocab_size, dim);
            rms_att = run_take_f32(cur, (uint64_t)L * (uint64_t)dim);
        } else { // v1 and v2 store the norms first
            rms_att = run_take_f32(cur, (uint64_t)L * (uint64_t)dim);
            rms_ffn = run_take_f32(cur, (uint64_t)L * (uint64_t)dim);
            w->rms_final = run_take_f32(cur, (uint64_t)dim);
            w->token_embedding = run_take_matrix(cur, c, c->vocab_size, dim);
        }
        for (int l = 0; l < L; l++) ly[l].wq = run_take_matrix(cur, c, q_dim, dim);
        for (int l = 0; l < L; l++) ly[l].wk = run_take_matrix(cur, c, kv_dim, dim);
        for (int l = 0; l < L; l++) ly[l].wv = run_take_matrix(cur, c, kv_dim, dim);
        for (int l = 0; l < L; l++) ly[l].wo = run_take_matrix(cur, c, dim, q_dim);
        if (c->version == 0) rms_ffn = run_take_f32(cur, (uint64_t)L * (uint64_t)dim);
        for (int l = 0; l < L; l++) ly[l].w1 = run_take_matrix(cur, c, hidden, dim);
        for (int l = 0; l < L; l++) ly[l].w2 = run_take_matrix(cur, c, dim, hidden);
        for (int l = 0; l < L; l++) ly[l].w3 = run_take_matrix(cur, c, hidden, dim);
        if (c->version == 0) {
            w->rms_final = run_take_f32(cur, (uint64_t)dim);
            run_take_f32(cur, (uint64_t)c->seq_len * (uint64_t)c->head_size); // the unused freq_cis_real/imag tables
        }
        for (int l = 0; l < L && cur->ok; l++) {
            ly[l].rms_att = rms_att + (size_t)l * (size_t)dim;
            ly[l].rms_ffn = rms_ffn + (size_t)l * (size_t)dim;
        }
    }
    w->wcls = c->shared_classifier ? w->token_embedding : run_take_matrix(cur, c, c->vocab_size, dim);
}

static void run_free_state(LmRunState *s) {
    void *bufs[] = {s->x, s->xb, s->xb2, s->hb, s->hb2, s->q, s->kb, s->vb, s->att, s->units, s->logits, s->key_cache, s->value_cache,
                    s->cache_offset, s->cache_positions, s->tokens, s->rope_freq, s->rope_cos, s->rope_sin, s->xq, s->xs, s->xpacked, s->xpacked8, s->xspacked, s->xsum, s->xsum16, s->xarranged, s->scratch};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    memset(s, 0, sizeof *s);
}

// The window of layer l: 0 for a global layer (it sees every position), else c->sliding_window.
static int run_layer_window(const LmConfig *c, int l) {
    if (c->sliding_window <= 0) return 0;
    return c->window_period > 0 && (l + 1) % c->window_period == 0 ? 0 : c->sliding_window;
}

// n rounded up to a whole number of key tiles.
static int run_round_to_tile(int n) { return (n + LM_KEY_TILE - 1) / LM_KEY_TILE * LM_KEY_TILE; }

// The rows of layer l's KV cache: a local layer's ring of window + LM_RING_SLACK rows (blocks of at most
// LM_RING_SLACK tokens then never overwrite a key their queries still see), else the whole context;
// whole tiles either way. A layer is a ring when this is less than seq_len.
static int run_cache_rows(const LmConfig *c, int l) {
    int window = run_layer_window(c, l);
    if (window <= 0 || window >= c->seq_len - LM_RING_SLACK) return run_round_to_tile(c->seq_len); // (before any sum can overflow)
    int ring = run_round_to_tile(window + LM_RING_SLACK);
    return ring < c->seq_len ? ring : run_round_to_tile(c->seq_len);
}

// Bytes of one kv head's values at one position in the cache type (a key tile is LM_KEY_TILE of these).
static size_t run_cache_row_bytes(const LmConfig *c) {
    const LmTypeTraits *t = &run_types[c->cache_type];
    return (size_t)c->head_size / (size_t)t->block_values * (size_t)t->block_bytes;
}

// Bytes of the whole KV cache (keys and values, every layer) at c's context and cache type.
static uint64_t run_cache_bytes(const LmConfig *c) {
    uint64_t rows = 0;
    for (int l = 0; l < c->n_layers; l++) rows += (uint64_t)run_cache_rows(c, l);
    return 2 * rows * (uint64_t)c->n_kv_heads * run_cache_row_bytes(c);
}

// RoPE inverse frequencies theta^(-2i/rotary_dim), with Llama 3's or linear context scaling, and the
// divisors of GGUF's rope_freqs or LongRoPE (factors). For llama2.c's formats these are the same float
// operations as llama2.c, so the same text comes out. Local layers (theta given) are never scaled.
static void run_rope_frequencies(float *freq, const LmConfig *c, float theta, int scaled, const float *factors) {
    // YaRN (transformers' _compute_yarn_parameters): interpolated (f / factor) below the dims where
    // beta_slow turns fit the original context, kept above those where beta_fast do, a linear ramp between
    double low = 0, high = 0;
    if (scaled && c->rope_scaling == LM_ROPE_YARN) {
        double rd = c->rotary_dim, two_log_base = 2.0 * log((double)theta), pi = 3.14159265358979323846;
        low = floor(rd * log(c->rope_original_context / (c->rope_low_freq_factor * 2 * pi)) / two_log_base);
        high = ceil(rd * log(c->rope_original_context / (c->rope_high_freq_factor * 2 * pi)) / two_log_base);
        low = low > 0 ? low : 0;
        high = high < rd - 1 ? high : rd - 1;
        if (low == high) high += 0.001;
    }
    for (int i = 0; i < c->rotary_dim / 2; i++) {
        float f = 1.0f / powf(theta, (float)(2 * i) / (float)c->rotary_dim);
        if (scaled && c->rope_scaling == LM_ROPE_LINEAR) {
            f /= c->rope_factor;
        } else if (scaled && c->rope_scaling == LM_ROPE_LLAMA3) {
            // long wavelengths are slowed by factor, short ones kept, the band between interpolated
            float wavelen = 2.0f * 3.14159265358979f / f;
            float low_wavelen = (float)c->rope_original_context / c->rope_low_freq_factor;
            float high_wavelen = (float)c->rope_original_context / c->rope_high_freq_factor;
            if (wavelen > low_wavelen) {
                f /= c->rope_factor;
            } else if (wavelen >= high_wavelen) {
                float smooth = ((float)c->rope_original_context / wavelen - c->rope_low_freq_factor) /
                               (c->rope_high_freq_factor - c->rope_low_freq_factor);
                f = (1.0f - smooth) * f / c->rope_factor + smooth * f;
            }
        }
        if (scaled && c->rope_scaling == LM_ROPE_YARN) { // (transformers' float32 steps, so its rounding too)
            float pos_freq = powf(theta, (float)(2 * i) / (float)c->rotary_dim);
            float ramp = ((float)i - (float)low) / ((float)high - (float)low);
            ramp = ramp < 0.0f ? 0.0f : ramp > 1.0f ? 1.0f : ramp;
            float extrapolation = 1.0f - ramp, interpolated = 1.0f / (c->rope_factor * pos_freq);
            f = interpolated * (1.0f - extrapolation) + (1.0f / pos_freq) * extrapolation;
        }
        if (scaled && factors) f /= factors[i];
        freq[i] = f;
    }
}

// calloc for the KV cache, which attention streams: where Linux gives huge pages only when asked (THP
// "madvise"), they are asked for (posix_madvise passes MADV_HUGEPAGE, 14, through; see
// run_read_into_memory), so the CPU's prefetchers are not stopped at every 4 KiB page. The pages are
// still committed only as positions are written.
static void *run_calloc_streamed(size_t bytes) {
    unsigned char *p = (unsigned char *)calloc(bytes, 1);
#if defined(__linux__) && defined(POSIX_MADV_NORMAL)
    uintptr_t huge = (uintptr_t)1 << 21, start = ((uintptr_t)p + huge - 1) & ~(huge - 1), end = ((uintptr_t)p + bytes) & ~(huge - 1);
    if (p && end > start) posix_madvise((void *)start, (size_t)(end - start), 14);
#endif
    return p;
}

// Allocates the run state; 0 on out-of-memory. The KV cache is calloc'ed at full context length (a
// local layer's at its ring's): the OS commits its pages only as positions are written. The threads'
// attention scores come with run_reserve_scratch.
static int run_alloc_state(LmRunState *s, const LmConfig *c) {
    size_t B = LM_BATCH, q_dim = (size_t)c->n_heads * (size_t)c->head_size;
    size_t kv_dim = (size_t)c->n_kv_heads * (size_t)c->head_size, half = (size_t)c->rotary_dim / 2;
    size_t xb_width = (size_t)c->dim > q_dim ? (size_t)c->dim : q_dim;
    size_t widest = xb_width > (size_t)c->hidden_dim ? xb_width : (size_t)c->hidden_dim;
    memset(s, 0, sizeof *s);
    s->cache_offset = (size_t *)calloc((size_t)c->n_layers, sizeof(size_t));
    s->cache_positions = (int *)calloc((size_t)c->n_layers, sizeof(int));
    size_t cache = 0; // bytes of keys (or values)
    s->value_row_bytes = run_cache_row_bytes(c);
    s->key_tile_bytes = LM_KEY_TILE * s->value_row_bytes;
    for (int l = 0; s->cache_offset && s->cache_positions && l < c->n_layers; l++) {
        s->cache_positions[l] = run_cache_rows(c, l);
        s->cache_offset[l] = cache;
        cache += (size_t)s->cache_positions[l] * (size_t)c->n_kv_heads * s->value_row_bytes;
    }
    s->block = LM_BATCH;
    for (int l = 0; s->cache_positions && l < c->n_layers; l++) if (s->cache_positions[l] < c->seq_len) s->block = LM_RING_SLACK;
    s->x = (float *)calloc(B * (size_t)c->dim, sizeof(float));
    s->xb = (float *)calloc(B * xb_width, sizeof(float));
    s->xb2 = (float *)calloc(B * (size_t)c->dim, sizeof(float));
    s->hb = (float *)calloc(B * (size_t)c->hidden_dim, sizeof(float));
    s->hb2 = (float *)calloc(B * (size_t)c->hidden_dim, sizeof(float));
    s->q = (float *)calloc(B * q_dim, sizeof(float));
    s->kb = (float *)calloc(B * kv_dim, sizeof(float));
    s->vb = (float *)calloc(B * kv_dim, sizeof(float));
    s->units = (LmAttention *)calloc((size_t)c->n_kv_heads * (((size_t)LM_BATCH * (size_t)(c->n_heads / c->n_kv_heads) + LM_ATTN_QUERIES - 1) / LM_ATTN_QUERIES),
                                     sizeof(LmAttention));
    // each thread's scores, then its queries' Q8_0 forms (head_size bytes, and a scale and a sum per 32)
    s->att_floats = (size_t)LM_ATTN_QUERIES * ((size_t)c->seq_len + 2 * LM_KEY_TILE + (size_t)c->head_size / 4 + (size_t)c->head_size / 16 + 2);
    s->logits = (float *)calloc((size_t)c->vocab_size, sizeof(float));
    s->key_cache = (unsigned char *)run_calloc_streamed(cache);
    s->value_cache = (unsigned char *)run_calloc_streamed(cache);
    s->tokens = (int *)calloc((size_t)c->seq_len, sizeof(int));
    s->rope_freq = (float *)calloc(3 * half, sizeof(float));
    s->rope_cos = (float *)calloc(2 * B * half, sizeof(float));
    s->rope_sin = (float *)calloc(2 * B * half, sizeof(float));
    int ok = s->cache_offset && s->cache_positions && s->tokens && s->x && s->xb && s->xb2 && s->hb && s->hb2 && s->q && s->kb && s->vb &&
             s->logits && s->units && s->key_cache && s->value_cache && s->rope_freq && s->rope_cos && s->rope_sin;
    if (c->integer_activations) {
        size_t groups = widest / (size_t)c->group_size + 1; // + a partial group
        s->xq = (int8_t *)calloc(B * widest + 64, 1); // + room for one 64-byte load past the end
        s->xs = (float *)calloc(B * groups, sizeof(float));
        s->xpacked = (unsigned char *)calloc(2 * B * (widest + 4), 1); // (AVX2's layout: int16)
        s->xpacked8 = (int8_t *)calloc(B * (widest + 4), 1);
        s->xspacked = (float *)calloc(B * groups, sizeof(float));
        s->xsum = (int32_t *)calloc(B * groups, sizeof(int32_t));
        s->xsum16 = (int32_t *)calloc(B * groups, sizeof(int32_t));
        s->xarranged = (int8_t *)calloc(B * (widest + 128), 1);
        ok = ok && s->xq && s->xs && s->xpacked && s->xpacked8 && s->xspacked && s->xsum && s->xsum16 && s->xarranged;
    }
    // a block of LM_ROW_BLOCK rows in fp32, or in int8 with the int sums and scales of its groups
    size_t groups = c->integer_activations ? widest / (size_t)c->group_size + 1 : 0;
    size_t as_int = (LM_ROW_BLOCK * widest + 3) / 4 + 2 * LM_ROW_BLOCK * groups;
    s->scratch_floats = (LM_ROW_BLOCK * widest > as_int ? LM_ROW_BLOCK * widest : as_int) + 16;
    if (!ok) { run_free_state(s); return 0; }
    run_rope_frequencies(s->rope_freq, c, c->rope_theta, 1, c->rope_freq_factors);
    run_rope_frequencies(s->rope_freq + half, c, c->rope_theta, 1, c->rope_long_factors ? c->rope_long_factors : c->rope_freq_factors);
    run_rope_frequencies(s->rope_freq + 2 * half, c, c->rope_local_theta > 0.0f ? c->rope_local_theta : c->rope_theta, 0, NULL);
    return 1;
}


// ----------------------------------------------------------------------------
// GGUF: llama.cpp's self-describing files, read in place. Layout (little-endian): "GGUF", u32
// version (2 or 3), u64 tensor count, u64 key/value count; the key/values (string key, u32 value
// type, value); the tensor infos (string name, u32 dims, u64 ne[dims] with ne[0] the row length,
// u32 ggml type, u64 offset); then, at the next multiple of general.alignment (default 32), the
// tensor data, each tensor at its offset (a multiple of the alignment). A string is a u64 length
// and its bytes; an array is a u32 element type, a u64 count and the elements. Every count, length,
// dimension and offset is checked against the file before it is used.

enum { LM_GGUF_U8, LM_GGUF_I8, LM_GGUF_U16, LM_GGUF_I16, LM_GGUF_U32, LM_GGUF_I32, LM_GGUF_F32, LM_GGUF_BOOL,
       LM_GGUF_STRING, LM_GGUF_ARRAY, LM_GGUF_U64, LM_GGUF_I64, LM_GGUF_F64, LM_GGUF_N_TYPES };
#define LM_GGUF_MAGIC 0x46554747u // "GGUF"
#define LM_GGUF_MAX_DIMS 4

typedef struct { const char *s; size_t n; } LmString; // a string in the mapped file (not NUL-terminated)

typedef struct {
    LmString key;
    uint32_t type;                 // LM_GGUF_*
    const unsigned char *value;    // the value; for an array, its first element
    uint32_t elem_type;            // an array's elements
    uint64_t count;                // an array's length (1 for a scalar)
} LmGgufKv;

typedef struct {
    LmString name;
    int n_dims;
    uint64_t ne[LM_GGUF_MAX_DIMS]; // ne[0] values per row, ne[1] rows, ...
    uint32_t ggml_type;
    int type;                      // LmWeightType, or -1 for a type run.c does not compute with
    uint64_t offset, bytes;        // from the start of the data section
    const unsigned char *data;
} LmGgufTensor;

typedef struct {
    uint32_t version;
    uint64_t n_kv, n_tensors;
    LmGgufKv *kv;
    LmGgufTensor *tensors;
    const unsigned char *end;      // the end of the file
    int64_t *tensor_slots;         // an open-addressing index of the tensors by name (-1: empty)
    size_t n_slots;                // a power of two
} LmGguf;

static void run_gguf_free(LmGguf *g) { free(g->kv); free(g->tensors); free(g->tensor_slots); memset(g, 0, sizeof *g); }

// A bounds-checked reader over the mapping: once a read would pass the end, ok is 0 and stays 0.
typedef struct { const unsigned char *p, *end; int ok; } LmReader;

static const unsigned char *run_take(LmReader *r, uint64_t n) {
    if (!r->ok || n > (uint64_t)(r->end - r->p)) { r->ok = 0; return NULL; }
    const unsigned char *at = r->p;
    r->p += n;
    return at;
}
static uint32_t run_take_u32(LmReader *r) { const unsigned char *p = run_take(r, 4); uint32_t v = 0; if (p) memcpy(&v, p, 4); return v; }
static uint64_t run_take_u64(LmReader *r) { const unsigned char *p = run_take(r, 8); uint64_t v = 0; if (p) memcpy(&v, p, 8); return v; }
static LmString run_take_string(LmReader *r) {
    uint64_t n = run_take_u64(r);
    const unsigned char *p = run_take(r, n);
    LmString s = {(const char *)p, p ? (size_t)n : 0};
    return s;
}

static size_t run_gguf_scalar_size(uint32_t type) {
    static const unsigned char sizes[LM_GGUF_N_TYPES] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return type < LM_GGUF_N_TYPES ? sizes[type] : 0;
}

// Skips one value of type `type` (an array's elements included). 0 on a malformed value.
static int run_gguf_skip(LmReader *r, uint32_t type, uint32_t *elem_type, uint64_t *count) {
    *elem_type = type;
    *count = 1;
    if (type == LM_GGUF_STRING) { run_take_string(r); return r->ok; }
    if (type != LM_GGUF_ARRAY) return run_gguf_scalar_size(type) && run_take(r, run_gguf_scalar_size(type));
    *elem_type = run_take_u32(r);
    *count = run_take_u64(r);
    size_t size = run_gguf_scalar_size(*elem_type);
    if (!r->ok || *elem_type == LM_GGUF_ARRAY || (*elem_type != LM_GGUF_STRING && size == 0)) return 0; // (no arrays of arrays)
    if (*elem_type != LM_GGUF_STRING) return *count <= (uint64_t)(r->end - r->p) / size && run_take(r, *count * size);
    if (*count > (uint64_t)(r->end - r->p) / 8) return 0; // every string takes at least its 8-byte length
    for (uint64_t i = 0; i < *count && r->ok; i++) run_take_string(r);
    return r->ok;
}

static int run_string_is(LmString s, const char *text) { return s.n == strlen(text) && memcmp(s.s, text, s.n) == 0; }

// The ggml types GGUF files use that run.c does not compute with, by id, for naming them.
static const char *run_ggml_type_name(uint32_t id) {
    static const char *names[] = {"F32", "F16", "Q4_0", "Q4_1", "Q4_2", "Q4_3", "Q5_0", "Q5_1", "Q8_0", "Q8_1", "Q2_K", "Q3_K",
                                  "Q4_K", "Q5_K", "Q6_K", "Q8_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ4_NL", "IQ3_S",
                                  "IQ2_S", "IQ4_XS", "I8", "I16", "I32", "I64", "F64", "IQ1_M", "BF16", "Q4_0_4_4", "Q4_0_4_8",
                                  "Q4_0_8_8", "TQ1_0", "TQ2_0"};
    return id < sizeof names / sizeof names[0] ? names[id] : "unknown";
}

// Indexes the keys (tensors = 0) or the tensor names (1) by hash: returns the index of a name that
// appears twice, -1 when none does, -2 on out-of-memory. The tensors' index stays (run_gguf_tensor).
static int64_t run_gguf_index(LmGguf *g, int tensors) {
    uint64_t n = tensors ? g->n_tensors : g->n_kv;
    size_t size = run_pow2_at_least(2 * (size_t)n + 1), mask = size - 1;
    int64_t *slots = (int64_t *)malloc(size * sizeof(int64_t)), dup = -1;
    if (slots == NULL) return -2;
    for (size_t i = 0; i < size; i++) slots[i] = -1;
    for (uint64_t i = 0; i < n && dup < 0; i++) {
        LmString name = tensors ? g->tensors[i].name : g->kv[i].key;
        size_t h = (size_t)run_hash_bytes(name.s, name.n) & mask;
        for (; slots[h] >= 0; h = (h + 1) & mask) {
            LmString other = tensors ? g->tensors[slots[h]].name : g->kv[slots[h]].key;
            if (other.n == name.n && memcmp(other.s, name.s, name.n) == 0) { dup = (int64_t)i; break; }
        }
        if (dup < 0) slots[h] = (int64_t)i;
    }
    if (tensors) { g->tensor_slots = slots; g->n_slots = size; }
    else free(slots);
    return dup;
}

// Parses the header, key/values and tensor infos of a GGUF file. 0 with the reason in err.
static int run_gguf_parse(LmGguf *g, const unsigned char *data, size_t size, const char *path, char *err, size_t errlen) {
    LmReader r = {data, data + size, 1};
    memset(g, 0, sizeof *g);
    g->end = data + size;
    run_take_u32(&r); // the magic, checked by the caller
    g->version = run_take_u32(&r);
    g->n_tensors = run_take_u64(&r);
    g->n_kv = run_take_u64(&r);
    if (!r.ok || g->version < 2 || g->version > 3) {
        run_set_err(err, errlen, "%s: GGUF version %u is not supported (2 and 3 are)", path, g->version);
        return 0;
    }
    // a key/value takes at least 13 bytes and a tensor info 33: refuse counts that cannot fit
    if (g->n_kv > size / 13 || g->n_tensors > size / 33) {
        run_set_err(err, errlen, "%s: %llu keys and %llu tensors cannot fit in %zu bytes; a damaged GGUF file", path,
                    (unsigned long long)g->n_kv, (unsigned long long)g->n_tensors, size);
        return 0;
    }
    g->kv = (LmGgufKv *)calloc((size_t)g->n_kv + 1, sizeof(LmGgufKv));
    g->tensors = (LmGgufTensor *)calloc((size_t)g->n_tensors + 1, sizeof(LmGgufTensor));
    if (!g->kv || !g->tensors) { run_set_err(err, errlen, "out of memory reading %s", path); return 0; }
    uint64_t alignment = 32;
    for (uint64_t i = 0; i < g->n_kv; i++) {
        LmGgufKv *kv = &g->kv[i];
        kv->key = run_take_string(&r);
        kv->type = run_take_u32(&r);
        kv->value = r.p;
        if (!r.ok || !run_gguf_skip(&r, kv->type, &kv->elem_type, &kv->count)) {
            run_set_err(err, errlen, "%s: key/value %llu (%.*s) is malformed or runs past the end of the file", path,
                        (unsigned long long)i, (int)(kv->key.n < 64 ? kv->key.n : 64), kv->key.s ? kv->key.s : "");
            return 0;
        }
        if (kv->type == LM_GGUF_ARRAY) kv->value += 12; // (past the element type and count)
        if (run_string_is(kv->key, "general.alignment")) {
            uint32_t a = 0;
            if (kv->type == LM_GGUF_U32) memcpy(&a, kv->value, 4);
            if (a < 8 || (a & (a - 1)) != 0 || a > 65536) { // (8 keeps every value of every type aligned)
                run_set_err(err, errlen, "%s: general.alignment must be a power of two from 8 to 65536 (a u32)", path);
                return 0;
            }
            alignment = a;
        }
    }
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        LmGgufTensor *t = &g->tensors[i];
        t->name = run_take_string(&r);
        t->n_dims = (int)run_take_u32(&r);
        if (!r.ok || t->n_dims < 1 || t->n_dims > LM_GGUF_MAX_DIMS) {
            run_set_err(err, errlen, "%s: tensor %llu has %d dimensions (1 to 4 expected), or its info runs past the end", path,
                        (unsigned long long)i, t->n_dims);
            return 0;
        }
        uint64_t count = 1;
        for (int d = 0; d < t->n_dims; d++) {
            t->ne[d] = run_take_u64(&r);
            if (t->ne[d] == 0 || t->ne[d] > (1ull << 40) || count > (1ull << 50) / t->ne[d]) count = 0;
            else count *= t->ne[d];
        }
        for (int d = t->n_dims; d < LM_GGUF_MAX_DIMS; d++) t->ne[d] = 1;
        t->ggml_type = run_take_u32(&r);
        uint64_t offset = t->offset = run_take_u64(&r);
        if (!r.ok || count == 0) {
            run_set_err(err, errlen, "%s: tensor %.*s has a dimension of 0 or too many values", path, (int)t->name.n, t->name.s);
            return 0;
        }
        t->type = -1;
        for (int k = 0; k < LM_N_TYPES && t->type < 0; k++) // (run.c's own layouts have no GGUF id)
            if (run_types[k].ggml_type >= 0 && (uint32_t)run_types[k].ggml_type == t->ggml_type) t->type = k;
        if (t->type < 0) continue; // (named when a model needs it; its data is not checked)
        const LmTypeTraits *type = &run_types[t->type];
        if (t->ne[0] % (uint64_t)type->block_values != 0) {
            run_set_err(err, errlen, "%s: tensor %.*s has rows of %llu values, not a multiple of %s's blocks of %d", path,
                        (int)t->name.n, t->name.s, (unsigned long long)t->ne[0], type->name, type->block_values);
            return 0;
        }
        t->bytes = count / (uint64_t)type->block_values * (uint64_t)type->block_bytes;
        if (offset % alignment != 0) {
            run_set_err(err, errlen, "%s: tensor %.*s is at offset %llu, not a multiple of the alignment %llu", path, (int)t->name.n,
                        t->name.s, (unsigned long long)offset, (unsigned long long)alignment);
            return 0;
        }
    }
    // the names' index (lookups by name; a name twice is an error)
    int64_t dup_kv = run_gguf_index(g, 0), dup_tensor = dup_kv >= 0 ? -1 : run_gguf_index(g, 1);
    if (dup_kv == -2 || dup_tensor == -2) { run_set_err(err, errlen, "out of memory reading %s", path); return 0; }
    if (dup_kv >= 0 || dup_tensor >= 0) {
        LmString name = dup_kv >= 0 ? g->kv[dup_kv].key : g->tensors[dup_tensor].name;
        run_set_err(err, errlen, "%s: the %s %.*s appears twice", path, dup_kv >= 0 ? "key" : "tensor", (int)(name.n < 96 ? name.n : 96), name.s);
        return 0;
    }
    uint64_t data_start = ((uint64_t)(r.p - data) + alignment - 1) / alignment * alignment;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        LmGgufTensor *t = &g->tensors[i];
        if (t->type < 0) continue;
        uint64_t offset = t->offset;
        if (data_start > size || offset > size - data_start || t->bytes > size - data_start - offset) {
            run_set_err(err, errlen, "%s: tensor %.*s (%llu bytes at %llu) lies past the end of the file (%zu bytes): truncated?", path,
                        (int)t->name.n, t->name.s, (unsigned long long)t->bytes, (unsigned long long)(data_start + offset), size);
            return 0;
        }
        t->data = data + data_start + offset;
    }
    return 1;
}

static const LmGgufKv *run_gguf_find(const LmGguf *g, const char *key) {
    for (uint64_t i = 0; i < g->n_kv; i++) if (run_string_is(g->kv[i].key, key)) return &g->kv[i];
    return NULL;
}

// An integer or float value of any scalar type as a double; def when absent. *ok drops to 0 when the
// key holds something else.
static double run_gguf_number(const LmGguf *g, const char *key, double def, int *ok) {
    const LmGgufKv *kv = run_gguf_find(g, key);
    if (kv == NULL) return def;
    const unsigned char *p = kv->value;
    union { uint8_t u8; int8_t i8; uint16_t u16; int16_t i16; uint32_t u32; int32_t i32; float f32; uint64_t u64; int64_t i64; double f64; } v;
    size_t size = kv->type == LM_GGUF_STRING || kv->type == LM_GGUF_ARRAY ? 0 : run_gguf_scalar_size(kv->type);
    if (size == 0) { *ok = 0; return def; }
    memcpy(&v, p, size);
    switch (kv->type) {
    case LM_GGUF_U8: case LM_GGUF_BOOL: return v.u8;
    case LM_GGUF_I8: return v.i8;
    case LM_GGUF_U16: return v.u16;
    case LM_GGUF_I16: return v.i16;
    case LM_GGUF_U32: return v.u32;
    case LM_GGUF_I32: return v.i32;
    case LM_GGUF_F32: return v.f32;
    case LM_GGUF_U64: return (double)v.u64;
    case LM_GGUF_I64: return (double)v.i64;
    default: return v.f64;
    }
}

static LmString run_gguf_string(const LmGguf *g, const char *key) {
    const LmGgufKv *kv = run_gguf_find(g, key);
    LmString none = {NULL, 0};
    if (kv == NULL || kv->type != LM_GGUF_STRING) return none;
    LmReader r = {kv->value, kv->value + 8 + run_read_u64(kv->value), 1};
    return run_take_string(&r);
}

static const LmGgufTensor *run_gguf_tensor(const LmGguf *g, const char *name) {
    if (g->tensor_slots == NULL) return NULL;
    size_t mask = g->n_slots - 1;
    for (size_t h = (size_t)run_hash_bytes(name, strlen(name)) & mask; g->tensor_slots[h] >= 0; h = (h + 1) & mask)
        if (run_string_is(g->tensors[g->tensor_slots[h]].name, name)) return &g->tensors[g->tensor_slots[h]];
    return NULL;
}

// The architectures run.c computes from GGUF files (general.architecture), and their RoPE pairing:
// llama.cpp's converter permutes llama's q/k rows into interleaved pairs; qwen2 keeps the halves.
// The architectures, as llama.cpp computes them (its converter's keys and tensors; src/llama-model.cpp).
typedef enum { LM_ARCH_LLAMA, LM_ARCH_QWEN2, LM_ARCH_QWEN3, LM_ARCH_GEMMA2, LM_ARCH_GEMMA3, LM_ARCH_PHI3, LM_ARCH_N } LmGgufArch;
static const char *const run_gguf_archs[LM_ARCH_N] = {"llama", "qwen2", "qwen3", "gemma2", "gemma3", "phi3"};

// A key of the architecture's own, as "<arch>.<name>".
static double run_arch_number(const LmGguf *g, LmString arch, const char *name, double def, int *ok) {
    char key[160];
    snprintf(key, sizeof key, "%.*s.%s", (int)(arch.n < 64 ? arch.n : 64), arch.s, name);
    return run_gguf_number(g, key, def, ok);
}

// Reads the hyperparameters of a GGUF file into c. 0 with the reason in err.
static int run_gguf_config(LmConfig *c, const LmGguf *g, const char *path, char *err, size_t errlen) {
    LmString arch = run_gguf_string(g, "general.architecture");
    int known = -1;
    for (size_t k = 0; k < sizeof run_gguf_archs / sizeof run_gguf_archs[0]; k++) if (run_string_is(arch, run_gguf_archs[k])) known = (int)k;
    if (known < 0) {
        run_set_err(err, errlen, "%s: architecture '%.*s' is not supported (supported: llama, qwen2, qwen3, gemma2, gemma3, phi3)", path, (int)(arch.n < 64 ? arch.n : 64),
                    arch.s ? arch.s : "");
        return 0;
    }
    int ok = 1;
    const LmGgufKv *tokens = run_gguf_find(g, "tokenizer.ggml.tokens");
    const LmGgufTensor *embedding = run_gguf_tensor(g, "token_embd.weight");
    double heads = run_arch_number(g, arch, "attention.head_count", 0, &ok);
    double v[7] = {run_arch_number(g, arch, "embedding_length", 0, &ok), run_arch_number(g, arch, "feed_forward_length", 0, &ok),
                   run_arch_number(g, arch, "block_count", 0, &ok), heads, run_arch_number(g, arch, "attention.head_count_kv", heads, &ok),
                   embedding ? (double)embedding->ne[1] : tokens ? (double)tokens->count : 0,
                   run_arch_number(g, arch, "context_length", 0, &ok)};
    int64_t iv[7];
    for (int i = 0; i < 7; i++) iv[i] = v[i] >= 0 && v[i] < 1e12 ? (int64_t)v[i] : -1;
    if (!ok) { run_set_err(err, errlen, "%s: a hyperparameter of %.*s has the wrong type", path, (int)arch.n, arch.s); return 0; }
    if (!run_check_dims(c, iv, path, err, errlen)) return 0;
    double head_size = run_arch_number(g, arch, "attention.key_length", (double)c->dim / c->n_heads, &ok);
    double value_size = run_arch_number(g, arch, "attention.value_length", head_size, &ok);
    double rotary = run_arch_number(g, arch, "rope.dimension_count", head_size, &ok);
    c->norm_eps = (float)run_arch_number(g, arch, "attention.layer_norm_rms_epsilon", 1e-5, &ok);
    c->rope_theta = (float)run_arch_number(g, arch, "rope.freq_base", 10000, &ok);
    c->head_size = head_size >= 2 && head_size <= 4096 && fmod(head_size, 2) == 0 ? (int)head_size : 0;
    c->rotary_dim = rotary >= 2 && rotary <= head_size && fmod(rotary, 2) == 0 ? (int)rotary : 0;
    if (!ok || c->head_size == 0 || value_size != head_size || c->rotary_dim == 0) {
        run_set_err(err, errlen, "%s: head size %g (values %g, rotated %g) must be one even size up to 4096, rotated in an even "
                    "number of its dims: unequal key/value sizes are not supported", path, head_size, value_size, rotary);
        return 0;
    }
    if (!(c->norm_eps > 0.0f && c->norm_eps < 1.0f) || !(c->rope_theta > 0.0f) || isinf(c->rope_theta)) {
        run_set_err(err, errlen, "%s: norm eps %g or rope theta %g is out of range", path, c->norm_eps, c->rope_theta);
        return 0;
    }
    char key[160];
    snprintf(key, sizeof key, "%.*s.rope.scaling.type", (int)arch.n, arch.s);
    LmString scaling = run_gguf_string(g, key);
    if (scaling.s && run_string_is(scaling, "linear")) {
        c->rope_scaling = LM_ROPE_LINEAR;
        c->rope_factor = (float)run_arch_number(g, arch, "rope.scaling.factor", 1, &ok);
        if (!ok || !(c->rope_factor >= 1.0f) || isinf(c->rope_factor)) {
            run_set_err(err, errlen, "%s: rope.scaling.factor must be a number >= 1", path);
            return 0;
        }
    } else if (scaling.s && run_string_is(scaling, "yarn")) { // (Qwen2.5's 128K recipe; Hugging Face's defaults where keys are absent)
        c->rope_scaling = LM_ROPE_YARN;
        c->rope_factor = (float)run_arch_number(g, arch, "rope.scaling.factor", 1, &ok);
        c->rope_original_context = (int)run_arch_number(g, arch, "rope.scaling.original_context_length", 0, &ok);
        c->rope_low_freq_factor = (float)run_arch_number(g, arch, "rope.scaling.yarn_beta_fast", 32, &ok);
        c->rope_high_freq_factor = (float)run_arch_number(g, arch, "rope.scaling.yarn_beta_slow", 1, &ok);
        // the attention factor: get_mscale's 0.1 ln(factor) + 1, times rope.scaling.attn_factor if given (llama.cpp's
        // ggml rope_yarn multiplies the key's value by that mscale)
        double mscale = c->rope_factor > 1.0f ? 0.1 * log(c->rope_factor) + 1.0 : 1.0;
        c->rope_attn_factor = (float)(mscale * run_arch_number(g, arch, "rope.scaling.attn_factor", 1, &ok));
        if (!ok || !(c->rope_factor >= 1.0f) || isinf(c->rope_factor) || c->rope_original_context <= 0 || !(c->rope_low_freq_factor > 0.0f) ||
            !(c->rope_high_freq_factor > 0.0f)) {
            run_set_err(err, errlen, "%s: YaRN rope scaling needs rope.scaling.factor >= 1, rope.scaling.original_context_length and positive betas", path);
            return 0;
        }
    } else if (scaling.s && !run_string_is(scaling, "none")) {
        run_set_err(err, errlen, "%s: rope scaling '%.*s' is not supported (supported: none, linear, yarn; llama3's comes as rope_freqs)", path,
                    (int)(scaling.n < 32 ? scaling.n : 32), scaling.s);
        return 0;
    }
    c->rope_layout = known == LM_ARCH_LLAMA ? LM_ROPE_PAIRS : LM_ROPE_HALVES;
    c->qkv_bias = known == LM_ARCH_QWEN2 || run_gguf_tensor(g, "blk.0.attn_q.bias") != NULL;
    c->qk_norm = run_gguf_tensor(g, "blk.0.attn_q_norm.weight") != NULL;
    c->shared_classifier = run_gguf_tensor(g, "output.weight") == NULL;
    c->sliding_window = (int)run_arch_number(g, arch, "attention.sliding_window", known == LM_ARCH_GEMMA2 ? 4096 : 0, &ok);
    if (known == LM_ARCH_GEMMA2 || known == LM_ARCH_GEMMA3) {
        int gemma2 = known == LM_ARCH_GEMMA2;
        c->sandwich_norms = 1; // (the converter stored each norm's 1 + w)
        c->activation = LM_ACT_GELU_TANH;
        // sqrt(dim) as Hugging Face's Gemma computes it in the released models' bf16 (llama.cpp leaves it
        // unrounded: 0.1% .. 0.4% apart)
        float scale = sqrtf((float)c->dim);
        uint32_t bits;
        memcpy(&bits, &scale, 4);
        bits = (bits + 0x7fffu + ((bits >> 16) & 1u)) & 0xffff0000u;
        memcpy(&c->embed_scale, &bits, 4);
        // query_pre_attn_scalar is not in the file: llama.cpp's rule, right for every released model
        int big = c->n_layers == (gemma2 ? 46 : 62); // (27B)
        c->attn_scale = 1.0f / sqrtf(big ? (float)c->dim / (float)c->n_heads : (float)c->head_size);
        c->attn_softcap = (float)run_arch_number(g, arch, "attn_logit_softcapping", gemma2 ? 50 : 0, &ok);
        c->final_softcap = (float)run_arch_number(g, arch, "final_logit_softcapping", gemma2 ? 30 : 0, &ok);
        c->window_period = (int)run_arch_number(g, arch, "attention.sliding_window_pattern", gemma2 ? 2 : 6, &ok);
        if (!gemma2) c->rope_local_theta = (float)run_arch_number(g, arch, "rope.freq_base_swa", 10000, &ok);
    }
    if (known == LM_ARCH_PHI3 && run_gguf_tensor(g, "rope_factors_long.weight")) {
        c->rope_scaling = LM_ROPE_LONGROPE;
        c->rope_attn_factor = (float)run_arch_number(g, arch, "rope.scaling.attn_factor", 1, &ok);
        c->rope_original_context = (int)run_arch_number(g, arch, "rope.scaling.original_context_length", 0, &ok);
    }
    if (!ok) { run_set_err(err, errlen, "%s: a hyperparameter of %.*s has the wrong type", path, (int)arch.n, arch.s); return 0; }
    c->tokenizer_size = tokens != NULL; // (the tokenizer is read from the same metadata)
    c->version = 4;
    c->gguf_version = (int)g->version;
    if (!run_check_features(c, path, err, errlen)) return 0;
    // the KV cache is sized for the trained context up to LM_GGUF_CONTEXT (llama.cpp's default),
    // as GGUF files state windows of 128K positions and more
    c->trained_context = c->seq_len;
    if (c->seq_len > LM_GGUF_CONTEXT) c->seq_len = LM_GGUF_CONTEXT;
    return run_check_sizes(c, path, err, errlen);
}

// Matrix `name` of the model, (rows, cols) = GGUF's (ne[1], ne[0]). 0 with the reason in err.
static int run_gguf_matrix(const LmGguf *g, const char *name, int rows, int cols, LmMatrix *m, const char *path, char *err, size_t errlen) {
    const LmGgufTensor *t = run_gguf_tensor(g, name);
    if (t == NULL) { run_set_err(err, errlen, "%s: the tensor %s is missing", path, name); return 0; }
    if (t->type < 0) {
        run_set_err(err, errlen, "%s: the tensor %s is of type %s, which run.c does not compute with (it does F32, F16, BF16, Q8_0, "
                    "Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL and IQ4_XS)", path, name, run_ggml_type_name(t->ggml_type));
        return 0;
    }
    if (t->n_dims != 2 || t->ne[0] != (uint64_t)cols || t->ne[1] != (uint64_t)rows) {
        run_set_err(err, errlen, "%s: the tensor %s is %llu x %llu, the model needs %d x %d (rows of %d)", path, name,
                    (unsigned long long)t->ne[1], (unsigned long long)t->ne[0], rows, cols, cols);
        return 0;
    }
    const LmTypeTraits *type = &run_types[t->type];
    *m = (LmMatrix){.data = t->data, .rows = rows, .cols = cols, .type = (LmWeightType)t->type,
                    .row_bytes = (size_t)cols / (size_t)type->block_values * (size_t)type->block_bytes};
    return 1;
}

// Vector `name` (n F32 values) into *v (NULL when absent and not required). 0 with the reason in err.
static int run_gguf_vector(const LmGguf *g, const char *name, int n, int required, const float **v, const char *path, char *err, size_t errlen) {
    const LmGgufTensor *t = run_gguf_tensor(g, name);
    *v = NULL;
    if (t == NULL) {
        if (required) run_set_err(err, errlen, "%s: the tensor %s is missing", path, name);
        return !required;
    }
    if (t->n_dims != 1 || t->ne[0] != (uint64_t)n || t->type != LM_F32) {
        run_set_err(err, errlen, "%s: the tensor %s must be %d F32 values (it is %s, %llu values)", path, name, n, run_ggml_type_name(t->ggml_type),
                    (unsigned long long)t->ne[0]);
        return 0;
    }
    *v = (const float *)(const void *)t->data;
    return 1;
}

// Points every weight of the model at its tensor in a GGUF file. 0 with the reason in err.
// Rows [first, first + rows) of a matrix: a part of a fused one (Phi-3's attn_qkv, ffn_up).
static LmMatrix run_matrix_rows(LmMatrix m, int first, int rows) {
    m.data = (const unsigned char *)m.data + (size_t)first * m.row_bytes;
    m.rows = rows;
    return m;
}

static int run_gguf_weights(LmWeights *w, LmConfig *c, const LmGguf *g, const char *path, char *err, size_t errlen) {
    int dim = c->dim, hidden = c->hidden_dim, q_dim = c->n_heads * c->head_size, kv_dim = c->n_kv_heads * c->head_size;
    char name[96];
    if (!run_gguf_matrix(g, "token_embd.weight", c->vocab_size, dim, &w->token_embedding, path, err, errlen)) return 0;
    for (int l = 0; l < c->n_layers; l++) {
        LmLayer *ly = &w->layers[l];
        LmMatrix fused;
        // Phi-3 fuses q, k and v (rows q | k | v) and gate and up (rows gate | up), read in place
        snprintf(name, sizeof name, "blk.%d.attn_qkv.weight", l);
        int fused_qkv = run_gguf_tensor(g, name) != NULL;
        if (fused_qkv) {
            if (!run_gguf_matrix(g, name, q_dim + 2 * kv_dim, dim, &fused, path, err, errlen)) return 0;
            ly->wq = run_matrix_rows(fused, 0, q_dim);
            ly->wk = run_matrix_rows(fused, q_dim, kv_dim);
            ly->wv = run_matrix_rows(fused, q_dim + kv_dim, kv_dim);
        }
        snprintf(name, sizeof name, "blk.%d.ffn_gate.weight", l);
        int fused_up = run_gguf_tensor(g, name) == NULL;
        if (fused_up) {
            snprintf(name, sizeof name, "blk.%d.ffn_up.weight", l);
            if (!run_gguf_matrix(g, name, 2 * hidden, dim, &fused, path, err, errlen)) return 0;
            ly->w1 = run_matrix_rows(fused, 0, hidden);
            ly->w3 = run_matrix_rows(fused, hidden, hidden);
        }
        struct { const char *suffix; LmMatrix *m; int rows, cols, wanted; } mats[] = {
            {"attn_q", &ly->wq, q_dim, dim, !fused_qkv}, {"attn_k", &ly->wk, kv_dim, dim, !fused_qkv}, {"attn_v", &ly->wv, kv_dim, dim, !fused_qkv},
            {"attn_output", &ly->wo, dim, q_dim, 1}, {"ffn_gate", &ly->w1, hidden, dim, !fused_up}, {"ffn_down", &ly->w2, dim, hidden, 1},
            {"ffn_up", &ly->w3, hidden, dim, !fused_up}};
        for (size_t k = 0; k < sizeof mats / sizeof mats[0]; k++) {
            snprintf(name, sizeof name, "blk.%d.%s.weight", l, mats[k].suffix);
            if (mats[k].wanted && !run_gguf_matrix(g, name, mats[k].rows, mats[k].cols, mats[k].m, path, err, errlen)) return 0;
        }
        struct { const char *suffix; const float **v; int n, wanted; } vecs[] = {
            {"attn_norm", &ly->rms_att, dim, 1}, {"ffn_norm", &ly->rms_ffn, dim, 1},
            {"attn_q_norm", &ly->q_norm, c->head_size, c->qk_norm}, {"attn_k_norm", &ly->k_norm, c->head_size, c->qk_norm},
            {"post_attention_norm", &ly->rms_post_att, dim, c->sandwich_norms}, {"post_ffw_norm", &ly->rms_post_ffn, dim, c->sandwich_norms}};
        for (size_t k = 0; k < sizeof vecs / sizeof vecs[0]; k++) {
            snprintf(name, sizeof name, "blk.%d.%s.weight", l, vecs[k].suffix);
            if (vecs[k].wanted && !run_gguf_vector(g, name, vecs[k].n, 1, vecs[k].v, path, err, errlen)) return 0;
        }
        if (c->qkv_bias) {
            const float **bias[3] = {&ly->bq, &ly->bk, &ly->bv};
            const char *names[3] = {"attn_q", "attn_k", "attn_v"};
            for (int k = 0; k < 3; k++) {
                snprintf(name, sizeof name, "blk.%d.%s.bias", l, names[k]);
                if (!run_gguf_vector(g, name, k == 0 ? q_dim : kv_dim, 1, bias[k], path, err, errlen)) return 0;
            }
        }
    }
    if (!run_gguf_vector(g, "output_norm.weight", dim, 1, &w->rms_final, path, err, errlen)) return 0;
    if (c->shared_classifier) w->wcls = w->token_embedding;
    else if (!run_gguf_matrix(g, "output.weight", c->vocab_size, dim, &w->wcls, path, err, errlen)) return 0;
    // Llama 3.1's scaling, as llama.cpp's converter writes it: a factor dividing each frequency; Phi-3's
    // LongRoPE: the short and the long factors
    if (!run_gguf_vector(g, "rope_freqs.weight", c->rotary_dim / 2, 0, &c->rope_freq_factors, path, err, errlen)) return 0;
    if (c->rope_scaling == LM_ROPE_LONGROPE &&
        (!run_gguf_vector(g, "rope_factors_short.weight", c->rotary_dim / 2, 1, &c->rope_freq_factors, path, err, errlen) ||
         !run_gguf_vector(g, "rope_factors_long.weight", c->rotary_dim / 2, 1, &c->rope_long_factors, path, err, errlen)))
        return 0;
    // activations are quantized (groups of 32) when a matrix they meet is of an integer type
    c->group_size = 32;
    c->weight_type = w->wcls.type;
    c->integer_activations = run_is_integer_type(w->wcls.type);
    c->split_nibble_inputs = run_types[w->wcls.type].split_nibbles;
    for (int l = 0; l < c->n_layers; l++) {
        const LmLayer *ly = &w->layers[l];
        const LmMatrix *ms[7] = {&ly->wq, &ly->wk, &ly->wv, &ly->wo, &ly->w1, &ly->w2, &ly->w3};
        for (int k = 0; k < 7; k++) {
            c->integer_activations |= run_is_integer_type(ms[k]->type);
            c->split_nibble_inputs |= run_types[ms[k]->type].split_nibbles;
        }
    }
    return 1;
}

// ----------------------------------------------------------------------------
// Loading a model (any format)

// Appends ", text" (or text, first) to out[0..cap), cut at the end.
static void run_append_feature(char *out, size_t cap, const char *text) {
    size_t n = strlen(out);
    if (n + 1 < cap) snprintf(out + n, cap - n, "%s%s", n ? ", " : "", text);
}

// A line on what the architecture adds to Llama's (Qwen3's, Gemma's, Phi-3's, Mistral's features).
static void run_describe_features(char *out, size_t cap, const LmConfig *c) {
    char part[96];
    out[0] = '\0';
    if (c->qk_norm) run_append_feature(out, cap, "q/k norms");
    if (c->sandwich_norms) run_append_feature(out, cap, "norms after attention and FFN");
    if (c->activation == LM_ACT_GELU_TANH) run_append_feature(out, cap, "GeGLU");
    if (c->embed_scale != 1.0f) { snprintf(part, sizeof part, "embedding x%g", c->embed_scale); run_append_feature(out, cap, part); }
    if (c->attn_scale != 1.0f / sqrtf((float)c->head_size)) { snprintf(part, sizeof part, "attention scale %g", c->attn_scale); run_append_feature(out, cap, part); }
    if (c->attn_softcap > 0.0f || c->final_softcap > 0.0f) {
        snprintf(part, sizeof part, "soft caps %g (scores), %g (logits)", c->attn_softcap, c->final_softcap);
        run_append_feature(out, cap, part);
    }
    if (c->sliding_window > 0 && c->window_period > 0) {
        snprintf(part, sizeof part, "sliding window %d (layers %d, %d, ... global)", c->sliding_window, c->window_period - 1, 2 * c->window_period - 1);
        run_append_feature(out, cap, part);
    } else if (c->sliding_window > 0) {
        snprintf(part, sizeof part, "sliding window %d (every layer)", c->sliding_window);
        run_append_feature(out, cap, part);
    }
    if (c->rope_local_theta > 0.0f) { snprintf(part, sizeof part, "local layers' RoPE theta %g", c->rope_local_theta); run_append_feature(out, cap, part); }
    if (c->rotary_dim != c->head_size) { snprintf(part, sizeof part, "RoPE on %d of %d dims", c->rotary_dim, c->head_size); run_append_feature(out, cap, part); }
}

// Gives the run state working memory for `threads` threads (the matmul kernels' scratch and the
// attention scores), once the state is allocated. 0 when out of memory, keeping what there was:
// threads without a matmul slot take the plain kernels.
static int run_reserve_scratch(LmRunState *s, int threads) {
    if (s->scratch_floats > 0 && threads > s->scratch_slots) {
        float *more = (float *)malloc((size_t)threads * s->scratch_floats * sizeof(float));
        if (more) { free(s->scratch); s->scratch = more; s->scratch_slots = threads; }
    }
    if (threads > s->att_slots) {
        float *more = (float *)calloc((size_t)threads * s->att_floats, sizeof(float));
        if (more == NULL) return 0;
        free(s->att);
        s->att = more;
        s->att_slots = threads;
    }
    return 1;
}

// The mapped file (size bytes) copied into memory aligned to 2 MiB, which Linux backs with huge pages
// (asked for where THP is "madvise": glibc's and musl's posix_madvise pass Linux's MADV_HUGEPAGE, 14,
// through, and strict modes hide madvise itself); the mapping is released. NULL when out of memory.
static const unsigned char *run_read_into_memory(const unsigned char *mapped, size_t size) {
    size_t huge = (size_t)1 << 21, rounded = (size + huge - 1) / huge * huge;
    unsigned char *copy = (unsigned char *)aligned_alloc(huge, rounded);
    if (copy == NULL) return NULL;
#if defined(__linux__) && defined(POSIX_MADV_NORMAL) // (declared where the headers' mode shows POSIX's calls)
    posix_madvise(copy, rounded, 14);
#endif
    memcpy(copy, mapped, size);
    munmap((void *)mapped, size);
    return copy;
}

// The machine's memory in bytes, or 0 where the OS does not say.
static uint64_t run_physical_memory(void) {
#if defined(_SC_PHYS_PAGES) && defined(_SC_PAGESIZE)
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    if (pages > 0 && page > 0) return (uint64_t)pages * (uint64_t)page;
#endif
    return 0;
}

// Sets the context and the KV cache's type that o asks for (see LmLoadOptions) and checks that the
// cache fits in memory, before it is allocated. 0 with the reason in err.
static int run_size_cache(LmConfig *c, const LmLoadOptions *o, size_t file_bytes, const char *path, char *err, size_t errlen) {
    static const char *const names[] = {"f32", "f16", "bf16", "q8_0"};
    static const LmWeightType types[] = {LM_F32, LM_F16, LM_BF16, LM_Q8_0};
    int asked = o ? o->context_length : 0;
    c->max_context = c->trained_context;
    if (c->rope_scaling == LM_ROPE_YARN && (double)c->rope_original_context * c->rope_factor > c->max_context) // (its scaled window)
        c->max_context = (int)fmin((double)c->rope_original_context * c->rope_factor, (double)LM_MAX_DIM * 16);
    if (asked < LM_CONTEXT_MAX) {
        run_set_err(err, errlen, "%s: context length %d is not valid (0: the file's, LM_CONTEXT_MAX: the model's maximum, or 1 to %d)", path, asked,
                    c->max_context);
        return 0;
    }
    if (asked > c->max_context) {
        run_set_err(err, errlen, "%s: a context of %d positions is past the model's maximum, %d (ask for 1 to %d; LM_CONTEXT_MAX, "
                    "-c 0 on the command line, is the maximum)", path, asked, c->max_context, c->max_context);
        return 0;
    }
    if (asked != 0) c->seq_len = asked == LM_CONTEXT_MAX ? c->max_context : asked;
    const char *name = o && o->cache_type ? o->cache_type : c->version < 3 ? "f32" : "f16";
    int k = 0;
    while (k < 4 && strcmp(name, names[k]) != 0) k++;
    if (k == 4) { run_set_err(err, errlen, "cache type '%s' is not one of f32, f16, bf16, q8_0", name); return 0; }
    c->cache_type = types[k];
    if (c->head_size % run_types[c->cache_type].block_values != 0) {
        run_set_err(err, errlen, "%s: a q8_0 KV cache needs a head size that is a multiple of 32; this model's is %d: use f16", path, c->head_size);
        return 0;
    }
    uint64_t bytes = run_cache_bytes(c), memory = run_physical_memory(), other = o && o->in_memory ? file_bytes : 0;
    uint64_t limit = memory ? memory : LM_MAX_KV_BYTES;
    if (limit > SIZE_MAX / 2) limit = SIZE_MAX / 2; // (a 32-bit build addresses no more)
    if (bytes + other > limit) {
        uint64_t per_position = bytes / (uint64_t)c->seq_len + 1, fits = limit > other ? (limit - other) / per_position : 0;
        run_set_err(err, errlen, "%s: a context of %d positions needs a KV cache of %llu bytes (%.1f GiB, %s)%s, more than %s %.1f GiB: "
                    "ask for a smaller context (up to about %llu fits)%s", path, c->seq_len, (unsigned long long)bytes,
                    (double)bytes / (1 << 30), names[k], other ? " besides the weights read into memory" : "", memory ? "this machine's" : "the limit of",
                    (double)limit / (1 << 30), (unsigned long long)fits, c->cache_type == LM_F32 || c->cache_type == LM_F16 ? " or a smaller cache type" : "");
        return 0;
    }
    return 1;
}

LmModel *lm_load(const char *checkpoint_path, char *err, size_t errlen) {
    return lm_load_with(checkpoint_path, NULL, err, errlen);
}

LmModel *lm_load_with(const char *checkpoint_path, const LmLoadOptions *options, char *err, size_t errlen) {
    if (checkpoint_path == NULL) { run_set_err(err, errlen, "no checkpoint path given"); return NULL; }
    LmModel *m = (LmModel *)calloc(1, sizeof *m);
    if (m == NULL) { run_set_err(err, errlen, "out of memory"); return NULL; }
    m->data = run_map_file(checkpoint_path, &m->file_size, err, errlen);
    if (m->data == NULL) { free(m); return NULL; }
    if (options && options->in_memory) {
        const unsigned char *copy = run_read_into_memory(m->data, m->file_size);
        if (copy == NULL) {
            run_set_err(err, errlen, "out of memory reading %s into memory (%zu bytes): load it mapped (without --no-mmap)", checkpoint_path, m->file_size);
            munmap((void *)m->data, m->file_size);
            free(m);
            return NULL;
        }
        m->data = copy;
        m->in_memory = 1;
    }
    LmConfig *c = &m->config;
    if (m->file_size >= 4 && (uint32_t)run_read_i32(m->data) == LM_GGUF_MAGIC) { // GGUF: tensors found by name
        LmGguf g;
        int ok = run_gguf_parse(&g, m->data, m->file_size, checkpoint_path, err, errlen) &&
                 run_gguf_config(c, &g, checkpoint_path, err, errlen);
        if (ok && (m->weights.layers = (LmLayer *)calloc((size_t)c->n_layers, sizeof(LmLayer))) == NULL) {
            run_set_err(err, errlen, "out of memory loading %s", checkpoint_path);
            ok = 0;
        }
        ok = ok && run_gguf_weights(&m->weights, c, &g, checkpoint_path, err, errlen);
        run_gguf_free(&g);
        if (!ok) { lm_free(m); return NULL; }
    } else {
        size_t offset = run_parse_header(c, m->data, m->file_size, checkpoint_path, err, errlen);
        const char *foreign = offset == 0 ? run_foreign_file(m->data, m->file_size) : NULL;
        if (foreign) run_set_err(err, errlen, "%s %s", checkpoint_path, foreign);
        if (offset == 0) { lm_free(m); return NULL; }
        m->weights.layers = (LmLayer *)calloc((size_t)c->n_layers, sizeof(LmLayer));
        if (m->weights.layers == NULL) {
            run_set_err(err, errlen, "out of memory loading %s", checkpoint_path);
            lm_free(m);
            return NULL;
        }
        LmCursor cur = {.base = m->data, .size = m->file_size, .offset = offset, .align = c->version == 3 ? LM_TENSOR_ALIGN : 1u, .ok = 1};
        run_map_weights(&m->weights, c, &cur);
        if (!cur.ok) {
            run_set_err(err, errlen, "%s: truncated: the header implies %llu bytes, the file has %zu",
                    checkpoint_path, (unsigned long long)cur.offset, m->file_size);
            lm_free(m);
            return NULL;
        }
        c->trained_context = c->seq_len;
    }
    int used[LM_N_TYPES] = {0};
    used[m->weights.token_embedding.type] = used[m->weights.wcls.type] = 1;
    for (int l = 0; l < c->n_layers; l++) {
        const LmLayer *ly = &m->weights.layers[l];
        const LmMatrix *ms[7] = {&ly->wq, &ly->wk, &ly->wv, &ly->wo, &ly->w1, &ly->w2, &ly->w3};
        for (int k = 0; k < 7; k++) used[ms[k]->type] = 1;
    }
    for (int t = 0, n = 0; t < LM_N_TYPES; t++)
        if (used[t] && n < (int)sizeof m->weight_types) // (every type's name fits: the buffer holds them all)
            n += snprintf(m->weight_types + n, sizeof m->weight_types - (size_t)n, n ? ", %s" : "%s", run_types[t].name);
    run_describe_features(m->features, sizeof m->features, c);
    m->kernels = run_detect_kernels();
    if (!run_size_cache(c, options, m->file_size, checkpoint_path, err, errlen)) { lm_free(m); return NULL; }
    if (!run_alloc_state(&m->state, c) || !run_reserve_scratch(&m->state, 1)) {
        run_set_err(err, errlen, "%s: out of memory allocating the run state (KV cache %llu bytes)", checkpoint_path, (unsigned long long)run_cache_bytes(c));
        lm_free(m);
        return NULL;
    }
    lm_set_threads(m, 0); // (and the kernels' working memory for that many threads)
    return m;
}

void lm_free(LmModel *m) {
    if (m == NULL) return;
    run_free_state(&m->state);
    free(m->weights.layers);
    if (m->data && m->in_memory) free((void *)m->data);
    else if (m->data) munmap((void *)m->data, m->file_size);
    free(m);
}

int lm_vocab_size(const LmModel *m) { return m ? m->config.vocab_size : 0; }

int lm_model_info(const LmModel *m, LmModelInfo *info) {
    if (m == NULL || info == NULL) return -1;
    static const char *formats[] = {"llama2.c v0", "llama2.c v1", "llama2.c v2", "run.c v3", "GGUF v2", "GGUF v3"};
    static const char *scalings[] = {"none", "linear", "llama3", "longrope", "yarn"};
    const LmConfig *c = &m->config;
    uint64_t q = (uint64_t)c->n_heads * c->head_size, kv = (uint64_t)c->n_kv_heads * c->head_size, d = (uint64_t)c->dim;
    *info = (LmModelInfo){
        .format = formats[c->version < 4 ? c->version : 2 + c->gguf_version], .file_bytes = m->file_size,
        .parameters = (uint64_t)c->vocab_size * d * (c->shared_classifier ? 1 : 2) + d +
                      (uint64_t)c->n_layers * (2 * q * d + 2 * kv * d + 3 * (uint64_t)c->hidden_dim * d + 2 * d + (c->qkv_bias ? q + 2 * kv : 0)),
        .n_layers = c->n_layers, .dim = c->dim, .hidden_dim = c->hidden_dim, .n_heads = c->n_heads, .n_kv_heads = c->n_kv_heads,
        .head_size = c->head_size, .vocab_size = c->vocab_size, .context_length = c->seq_len, .trained_context = c->trained_context,
        .weight_type = m->weight_types, .group_size = c->version < 4 && run_is_integer_type(c->weight_type) ? c->group_size : 0,
        .qkv_bias = c->qkv_bias, .tied_embedding = c->shared_classifier,
        .norm_eps = c->norm_eps, .rope_theta = c->rope_theta, .rope_factor = c->rope_scaling == LM_ROPE_LONGROPE ? c->rope_attn_factor : c->rope_factor,
        .rope_layout = c->rope_layout == LM_ROPE_PAIRS ? "pairs" : "halves",
        .rope_scaling = c->rope_scaling != LM_ROPE_LONGROPE && c->rope_freq_factors ? "per-frequency factors (rope_freqs)" : scalings[c->rope_scaling],
        .rope_original_context = c->rope_original_context, .rope_attn_factor = c->rope_attn_factor,
        .features = m->features,
        .has_tokenizer = c->tokenizer_size > 0, .threads = m->threads, .kernels = run_kernel_titles[m->kernels],
        .in_memory = m->in_memory, .max_context = c->max_context,
        .cache_type = c->cache_type == LM_F32 ? "f32" : c->cache_type == LM_F16 ? "f16" : c->cache_type == LM_BF16 ? "bf16" : "q8_0",
        .cache_bytes = run_cache_bytes(c)};
    return 0;
}

void lm_set_threads(LmModel *m, int n) {
    if (m == NULL) return;
#ifdef _OPENMP
    const char *env = getenv("OMP_NUM_THREADS"); // "8" or a list such as "8,2": its first entry
    int from_env = env ? atoi(env) : 0;
    m->threads = n > 0 ? n : from_env > 0 ? from_env : omp_get_num_procs();
#else
    m->threads = 1; // built without OpenMP: one thread whatever is asked
    (void)n;
#endif
    if (!run_reserve_scratch(&m->state, m->threads)) m->threads = m->state.att_slots; // (out of memory: as many as have room)
}
int lm_context_length(const LmModel *m) { return m ? m->config.seq_len : 0; }

void lm_set_exact(LmModel *m, int exact) {
    if (m) m->exact = exact != 0;
}

int lm_set_kernels(LmModel *m, const char *name) {
    if (m == NULL) return -1;
    if (name == NULL || name[0] == '\0' || strcmp(name, "auto") == 0) { m->kernels = run_detect_kernels(); return 0; }
    for (int k = 0; k < LM_KERNELS_N; k++)
        if (strcmp(name, run_kernel_names[k]) == 0 && run_kernels_available((LmKernels)k)) { m->kernels = (LmKernels)k; return 0; }
    return -1;
}

// ----------------------------------------------------------------------------
// Math kernels
//
// Every kernel computes the same floating-point operations in the same order, whatever the SIMD
// width and however many tokens it handles at once:
//   - a float dot product keeps 16 partial sums (element j goes to lane j % 16; each lane adds its
//     products in order, a multiply then an add, never fused) and then adds the lanes pairwise;
//   - an integer dot product sums each group exactly in int32; the terms
//     (float)isum * weight_scale * input_scale then go to 16 partial sums (term i to lane i % 16,
//     in order) that are added pairwise, as above;
//   - GGUF's block types unpack each block to integers with a scale and an offset per 16 values
//     (LmBlock); activations are quantized in groups of 32, and each group gives one term: over each
//     run of values sharing a scale, the int32 sums of q * x and of x become d * sum(qx) - m * sum(x)
//     (two runs of 16 added in order for Q2_K/Q3_K/Q6_K), times the group's input scale, into the 16
//     lanes as above (run_dot_blocks is the definition);
//   - in exact mode (lm_set_exact) integer weights are decoded to floats and take the float order;
//   - attention (over the KV cache in its type) fuses its products into its sums (fmaf, one rounding):
//     a score sums q[d] * k[d] over the head's dims in order, 16 positions per vector from the cache's
//     key tiles (a Q8_0 cache: the query quantized in groups of 32 too, each group's int32 sum exact,
//     then (float)isum * key scale * query scale added in order, multiplied then added: not fused);
//     the softmax takes the maximum, run_exp of each score minus it, their sum in 16 lanes added
//     pairwise, and divides; each output value is a running sum over the positions in order of
//     weight * value (a Q8_0 value: the weight times its block's scale, fused with the integer).
// So a prompt run in blocks gives the logits of token-by-token generation bit for bit, every kernel
// set (portable, AVX2, AVX-512, NEON; lm_set_kernels) gives the same logits, and llama2.c's
// checkpoints reproduce llama2.c's text on any CPU. The plain loops are the definitions; the SIMD
// versions under #if compute the same values faster, each compiled for its own target. Prompts keep
// the order by putting tokens, not columns, across the vector lanes: a block of integer rows is
// unpacked once, then 4 rows x 16 tokens (AVX-512 VNNI; AVX2: two tiles of 4 x 8) per step, each
// token's group sums exact; float rows go 4 x 4 (or 4 x 3) rows x tokens through the 16 lanes.
// The price of the contract, measured: fused multiply-adds would speed the AVX2 float prompt tile by
// about 13% (110M-shaped fp32, 1 core), less than the ~20% that would be worth giving up equal bits;
// integer types, where most prompts run, lose nothing to it. Attention over a long cache is where it
// cost most, so there fmaf is the definition (llama2.c's texts are unchanged by it): with the weight
// times a Q8_0 block's scale taken once per row, not per value, the weighted sums of values take
// 17-23% less time (AVX-512, f16 and q8_0 caches; AVX2 half, four queries now sharing each value's
// conversion) and f16 scores 24% less (Llama-3.2-1B shape at 2K positions). The portable set pays for it on x86 (built
// without -mfma, fmaf is a libm call per product): its attention, 20-60x slower than the SIMD sets
// already, took 2x (f16 cache) to 15x (q8_0 values) longer; aarch64's fmaf is one instruction.

#define LM_LANES 16


static void run_rmsnorm(float *out, const float *x, const float *weight, int n, float eps) {
    float ss = 0.0f;
    for (int j = 0; j < n; j++) ss += x[j] * x[j];
    ss /= (float)n;
    ss += eps;
    ss = 1.0f / sqrtf(ss);
    for (int j = 0; j < n; j++) out[j] = weight[j] * (ss * x[j]);
}

// The largest of x[0..n) (n >= 1), in 16 lanes so that the loop vectorizes: a maximum is exact in any order.
static float run_max(const float *x, int n) {
    float lanes[LM_LANES];
    for (int k = 0; k < LM_LANES; k++) lanes[k] = x[0];
    int i = 0;
    for (; i + LM_LANES <= n; i += LM_LANES)
        for (int k = 0; k < LM_LANES; k++) lanes[k] = x[i + k] > lanes[k] ? x[i + k] : lanes[k];
    for (; i < n; i++) lanes[0] = x[i] > lanes[0] ? x[i] : lanes[0];
    float max_val = lanes[0];
    for (int k = 1; k < LM_LANES; k++) max_val = lanes[k] > max_val ? lanes[k] : max_val;
    return max_val;
}

// e^x for x <= 88 (attention's scores minus their maximum, which are <= 0): Cody and Waite's reduction
// by ln 2 and Cephes' polynomial, within 2 ulp of the true value, with no branch and no libm call, so
// the loop that calls it vectorizes (it took attention at 16K positions from 73 to 58 ms per token).
// Below -87 it is e^-87 (1e-38, where expf's results turn subnormal); NaN stays NaN.
// (Its constants are shared with the SIMD versions, run_exp16 and run_exp8, which take the same steps.)
static const float run_exp_c[] = {1.44269504f, 12582912.0f, 0.693359375f, -2.12194440e-4f, // 1 / ln 2, 1.5 * 2^23, ln 2 in two parts
                                  1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f, 4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f};
static inline float run_exp(float x) {
    x = x < -87.0f ? -87.0f : x > 88.0f ? 88.0f : x;
    float t = x * run_exp_c[0] + run_exp_c[1]; // n = round(x / ln 2) in t's low bits
    float n = t - run_exp_c[1];
    uint32_t bits;
    memcpy(&bits, &t, 4);
    uint32_t scale_bits = (bits - 0x4b400000u + 127u) << 23; // 2^n
    float r = x - n * run_exp_c[2];
    r = r - n * run_exp_c[3];
    float y = run_exp_c[4] * r + run_exp_c[5];
    for (int k = 6; k < 10; k++) y = y * r + run_exp_c[k];
    y = y * r * r + r + 1.0f;
    float scale;
    memcpy(&scale, &scale_bits, 4);
    return y * scale;
}

static void run_softmax(float *x, int n) {
    float max_val = run_max(x, n), sum = 0.0f;
    for (int i = 0; i < n; i++) { x[i] = expf(x[i] - max_val); sum += x[i]; }
    for (int i = 0; i < n; i++) x[i] /= sum;
}

// Q8_0 quantization of x (n values) in groups of gs (the last may be shorter): per group,
// scale = max|x| / 127 and q = round(x / scale), as llama2.c's runq.c.
static void run_quantize_q8(int8_t *q, float *s, const float *x, int n, int gs) {
    for (int start = 0, g = 0; start < n; start += gs, g++) {
        int end = start + gs < n ? start + gs : n;
        float wmax = 0.0f;
        for (int i = start; i < end; i++) { float a = fabsf(x[i]); if (a > wmax) wmax = a; }
        float scale = wmax / 127.0f;
        s[g] = scale;
        for (int i = start; i < end; i++) { // roundf (halves away from zero), inline: a libm call per value was slow
            float v = scale > 0.0f ? x[i] / scale : 0.0f;
            v = v > -1024.0f && v < 1024.0f ? v : 1024.0f; // NaN/inf (hostile weights) end up 0 below, not UB
            int r = (int)v;
            float frac = v - (float)r; // (exact)
            r += (frac >= 0.5f) - (frac <= -0.5f);
            q[i] = r >= -127 && r <= 127 ? (int8_t)r : 0;
        }
    }
}

static float run_sum_lanes(float *acc) {
    for (int w = LM_LANES / 2; w > 0; w /= 2) // lanes k and k + w, pairwise
        for (int k = 0; k < w; k++) acc[k] += acc[k + w];
    return acc[0];
}

// The float dot products: a row of n weights of type T with x (n). A single running sum would be a
// dependency chain the compiler may not reorder; 16 independent lanes vectorize under plain -O3.
#define LM_DEFINE_DOT(name, T, to_f32)                                                \
    static float name(const T *a, const float *x, int n) {                            \
        float acc[LM_LANES] = {0};                                                    \
        int j = 0;                                                                    \
        for (; j + LM_LANES <= n; j += LM_LANES)                                      \
            for (int k = 0; k < LM_LANES; k++) acc[k] += to_f32(a[j + k]) * x[j + k]; \
        for (int k = 0; k < LM_LANES && j + k < n; k++) acc[k] += to_f32(a[j + k]) * x[j + k]; \
        return run_sum_lanes(acc);                                                        \
    }
LM_DEFINE_DOT(run_dot_f32, float, run_f32_to_f32)
LM_DEFINE_DOT(run_dot_f16, uint16_t, run_f16_to_f32)
LM_DEFINE_DOT(run_dot_bf16, uint16_t, run_bf16_to_f32)

// Element e of a float-type matrix's data, as a float.
static float run_weight_f32(const void *data, size_t e, LmWeightType type) {
    return type == LM_F16 ? run_f16_to_f32(((const uint16_t *)data)[e]) : type == LM_BF16 ? run_bf16_to_f32(((const uint16_t *)data)[e]) : ((const float *)data)[e];
}

// The scale of group g (counted over the whole matrix) of a Q8_0 or Q4_0 matrix.
static float run_group_scale(const LmMatrix *w, size_t g) {
    if (w->type == LM_Q8_GROUPS) return run_read_f32(w->scales + 4 * g);
    uint16_t h;
    memcpy(&h, w->scales + 2 * g, 2);
    return run_f16_to_f32(h);
}

// The int8 values of Q4_0 group g (group_size of them) into out.
static void run_unpack_q4(int8_t *out, const LmMatrix *w, size_t g) {
    int half = w->group_size / 2;
    const unsigned char *p = (const unsigned char *)w->data + g * (size_t)half;
    for (int j = 0; j < half; j++) {
        out[j] = (int8_t)((p[j] & 15) - 8);
        out[j + half] = (int8_t)((p[j] >> 4) - 8);
    }
}


// Integer dot product of row `row` of w with a quantized input (xq, xs): int32 sums over stretches
// that share one weight group and one input group, each stretch then scaled by both. llama2.c's v2
// files group the flattened tensor, so when the group size does not divide the row a weight group
// straddles two rows and the stretches split there.
static float run_dot_int(const LmMatrix *w, int row, const int8_t *xq, const float *xs) {
    int cols = w->cols, gs = w->group_size;
    size_t row_start = (size_t)row * (size_t)cols;
    int8_t unpacked[LM_MAX_Q4_GROUP];
    float acc[LM_LANES] = {0};
    for (int j = 0, term = 0; j < cols; term++) {
        size_t wg = (row_start + (size_t)j) / (size_t)gs, group_start = wg * (size_t)gs;
        int end = (int)(group_start + (size_t)gs - row_start); // end of this weight group
        int xend = (j / gs + 1) * gs;                          // end of this input group
        if (xend < end) end = xend;
        if (cols < end) end = cols;
        // q[k - first] is the value at column k of this row, for k in [j, end)
        const int8_t *q = (const int8_t *)w->data + row_start + (size_t)j;
        if (w->type == LM_Q4_GROUPS) { // (Q4_0 groups lie within rows)
            run_unpack_q4(unpacked, w, wg);
            q = unpacked + (row_start + (size_t)j - group_start);
        }
        int32_t isum = 0;
        for (int k = j; k < end; k++) isum += (int32_t)xq[k] * (int32_t)q[k - j];
        acc[term % LM_LANES] += (float)isum * run_group_scale(w, wg) * xs[j / gs];
        j = end;
    }
    return run_sum_lanes(acc);
}

// The int32 sums of q * x and of x over a run of n values (the plain loop; the NEON kernels have theirs).
typedef void (*LmRunSums)(const int8_t *q, const int8_t *x, int n, int32_t *qx, int32_t *sum);

static void run_sums_plain(const int8_t *q, const int8_t *x, int n, int32_t *qx, int32_t *sum) {
    *qx = *sum = 0;
    for (int i = 0; i < n; i++) { *qx += (int32_t)q[i] * (int32_t)x[i]; *sum += x[i]; }
}

// Block types against activations quantized in groups of 32 (xq, xs), one term per group: the int32
// sums of q * x and of x over each run of values that share a scale (32, or 16 for Q2_K, Q3_K and
// Q6_K), each scaled, d * sum(qx) - m * sum(x) (without the offset term for types without offsets;
// the two halves of a group of 16-value scales added in order), times the group's scale; the terms
// go to 16 lanes, in order, added pairwise at the end. The definition of every block type's dot; the
// types' own kernels compute the same terms in place.
// The run sums come from `sums`. run_block_terms adds the terms of `values` unpacked values (q; d and
// m per 16 of them) whose first group is term `first`; run_dot_blocks_using unpacks a row block by
// block, run_matmul_blocks_unpacked a prompt's rows once for all its tokens.
static void run_block_terms(const int8_t *q, const float *d, const float *m, int values, const LmTypeTraits *type, const int8_t *xq, const float *xs,
                            int first, float *acc, LmRunSums sums) {
    int run = type->scale_values;
    assert(values % 32 == 0 && (run == 16 || run == 32));
    for (int g = 0; g < values / 32; g++) {
        float wsum = 0.0f;
        for (int r = 0; r < 32 / run; r++) { // the runs of this group
            int32_t qx, sum;
            sums(q + 32 * g + run * r, xq + 32 * g + run * r, run, &qx, &sum);
            int s = (32 * g + run * r) / 16; // (d and m are per 16 values)
            float part = type->has_min ? (float)qx * d[s] - (float)sum * m[s] : (float)qx * d[s];
            wsum = r == 0 ? part : wsum + part;
        }
        acc[(first + g) % LM_LANES] += wsum * xs[g];
    }
}

static float run_dot_blocks_using(const LmMatrix *w, int row, const int8_t *xq, const float *xs, LmRunSums sums) {
    const LmTypeTraits *type = &run_types[w->type];
    const unsigned char *p = (const unsigned char *)w->data + (size_t)row * w->row_bytes;
    LmBlock u;
    float acc[LM_LANES] = {0};
    int per_block = type->block_values;
    assert(type->unpack && w->cols % per_block == 0 && per_block % 32 == 0);
    for (int b = 0; b < w->cols / per_block; b++) {
        type->unpack(p + (size_t)b * (size_t)type->block_bytes, &u);
        run_block_terms(u.q, u.d, u.m, per_block, type, xq + b * per_block, xs + b * per_block / 32, b * per_block / 32, acc, sums);
    }
    return run_sum_lanes(acc);
}

static float run_dot_blocks(const LmMatrix *w, int row, const int8_t *xq, const float *xs) {
    return run_dot_blocks_using(w, row, xq, xs, run_sums_plain);
}

// The int32 sums of q * x and of x over n values, q given by an expression of i.
#define LM_SUMS(n, qexpr, x)                                                \
    int32_t qx = 0, sum = 0;                                                \
    for (int i = 0; i < (n); i++) { qx += (int32_t)(qexpr) * (int32_t)(x)[i]; sum += (x)[i]; }

static float run_dot_q8_0(const unsigned char *row, int cols, const int8_t *xq, const float *xs) {
    float acc[LM_LANES] = {0};
    for (int b = 0; b < cols / 32; b++) {
        const unsigned char *blk = row + 34 * (size_t)b;
        const int8_t *q = (const int8_t *)(blk + 2), *x = xq + 32 * b;
        LM_SUMS(32, q[i], x)
        (void)sum;
        acc[b % LM_LANES] += (float)qx * run_half_at(blk) * xs[b];
    }
    return run_sum_lanes(acc);
}

static float run_dot_q4_0(const unsigned char *row, int cols, const int8_t *xq, const float *xs) {
    float acc[LM_LANES] = {0};
    for (int b = 0; b < cols / 32; b++) {
        const unsigned char *blk = row + 18 * (size_t)b, *q = blk + 2;
        const int8_t *x = xq + 32 * b;
        int32_t qx = 0; // (integer sums: in any order the same)
        for (int i = 0; i < 16; i++) qx += ((q[i] & 15) - 8) * (int32_t)x[i] + ((q[i] >> 4) - 8) * (int32_t)x[i + 16];
        acc[b % LM_LANES] += (float)qx * run_half_at(blk) * xs[b];
    }
    return run_sum_lanes(acc);
}

static float run_dot_q4_k(const unsigned char *row, int cols, const int8_t *xq, const float *xs) {
    float acc[LM_LANES] = {0};
    for (int b = 0, term = 0; b < cols / 256; b++) {
        const unsigned char *blk = row + 144 * (size_t)b;
        float d = run_half_at(blk), dmin = run_half_at(blk + 2);
        for (int j = 0; j < 8; j++, term++) {
            int scale, min;
            run_scale_min_k4(blk + 4, j, &scale, &min);
            const unsigned char *q = blk + 16 + 32 * (j / 2);
            const int8_t *x = xq + 256 * b + 32 * j;
            int shift = 4 * (j % 2);
            LM_SUMS(32, (q[i] >> shift) & 15, x)
            acc[term % LM_LANES] += ((float)qx * (d * (float)scale) - (float)sum * (dmin * (float)min)) * xs[8 * b + j];
        }
    }
    return run_sum_lanes(acc);
}

static float run_dot_q6_k(const unsigned char *row, int cols, const int8_t *xq, const float *xs) {
    float acc[LM_LANES] = {0};
    for (int b = 0, term = 0; b < cols / 256; b++) {
        const unsigned char *blk = row + 210 * (size_t)b;
        float d = run_half_at(blk + 208);
        for (int g = 0; g < 8; g++, term++) { // values 32g..32g+31: half g/4, quarter k, bytes 0..31
            int half = g / 4, k = g % 4, shift = 4 * (k / 2);
            const unsigned char *ql = blk + 64 * half + 32 * (k % 2), *qh = blk + 128 + 32 * half;
            float wsum = 0.0f;
            for (int r = 0; r < 2; r++) {
                const int8_t *x = xq + 256 * b + 32 * g + 16 * r;
                LM_SUMS(16, ((((ql[16 * r + i] >> shift) & 15) | ((qh[16 * r + i] >> (2 * k)) & 3) << 4) - 32), x)
                (void)sum;
                float part = (float)qx * (d * (float)(int8_t)blk[192 + 2 * g + r]);
                wsum = r == 0 ? part : wsum + part;
            }
            acc[term % LM_LANES] += wsum * xs[8 * b + g];
        }
    }
    return run_sum_lanes(acc);
}
#undef LM_SUMS

// Values j0..j0+n-1 of row `row` of w as floats into out: the weights as stored (j0 and n are
// multiples of the blocks of GGUF's types).
static void run_decode(const LmMatrix *w, int row, int j0, int n, float *out) {
    const LmTypeTraits *type = &run_types[w->type];
    if (type->unpack) { // GGUF's blocks
        const unsigned char *p = (const unsigned char *)w->data + (size_t)row * w->row_bytes;
        LmBlock u;
        assert(j0 % type->block_values == 0 && n % type->block_values == 0);
        for (int b = j0 / type->block_values; b < (j0 + n) / type->block_values; b++, out += type->block_values) {
            type->unpack(p + (size_t)b * (size_t)type->block_bytes, &u);
            for (int i = 0; i < type->block_values; i++) out[i] = u.d[i / 16] * (float)u.q[i] - u.m[i / 16];
        }
        return;
    }
    size_t start = (size_t)row * (size_t)w->cols + (size_t)j0;
    int8_t unpacked[LM_MAX_Q4_GROUP];
    for (int j = 0; j < n; j++) {
        size_t e = start + (size_t)j;
        switch (w->type) {
        case LM_F32: out[j] = ((const float *)w->data)[e]; break;
        case LM_F16: out[j] = run_f16_to_f32(((const uint16_t *)w->data)[e]); break;
        case LM_BF16: out[j] = run_bf16_to_f32(((const uint16_t *)w->data)[e]); break;
        case LM_Q8_GROUPS: out[j] = (float)((const int8_t *)w->data)[e] * run_group_scale(w, e / (size_t)w->group_size); break;
        case LM_Q4_GROUPS:
            if (e % (size_t)w->group_size == 0 || j == 0) run_unpack_q4(unpacked, w, e / (size_t)w->group_size);
            out[j] = (float)unpacked[e % (size_t)w->group_size] * run_group_scale(w, e / (size_t)w->group_size);
            break;
        default: assert(0); // (the block types returned above)
        }
    }
}

// Copies row `row` of w into out (cols floats), converting to fp32.
static void run_matrix_row(float *out, const LmMatrix *w, int row) { run_decode(w, row, 0, w->cols, out); }

// Integer weights against float activations (lm_set_exact): the row decoded 256 values at a time,
// then run_dot_f32's order of operations over it. Exact to the stored weights; slower.
static float run_dot_dequant(const LmMatrix *w, int row, const float *x) {
    float acc[LM_LANES] = {0}, values[256];
    for (int j0 = 0; j0 < w->cols; j0 += 256) {
        int n = w->cols - j0 < 256 ? w->cols - j0 : 256;
        run_decode(w, row, j0, n, values);
        for (int i = 0; i < n; i++) acc[(j0 + i) % LM_LANES] += values[i] * x[j0 + i];
    }
    return run_sum_lanes(acc);
}

static float run_row_dot_plain(const LmMatrix *w, int row, const LmBatch *in, int t);


// The calling thread's working memory (at least floats of it), or NULL when it has none.
static float *run_thread_scratch(const LmBatch *in, size_t floats) {
#ifdef _OPENMP
    int slot = omp_get_thread_num();
#else
    int slot = 0;
#endif
    if (slot >= in->scratch_slots || floats > in->scratch_floats) return NULL;
    return in->scratch + (size_t)slot * in->scratch_floats;
}

#if LM_X86

// The end of a prompt tile: its results, kept [row][token] (`stride` tokens apart) while computed,
// written to out[token * ld + row], rows contiguous for each token. (Stored a value at a time down
// a token's column, the stores lie ld floats apart: when ld is a multiple of 1024 they all fall in
// one set of the L1 cache and evict each other; that took half of a 4-bit prompt's matmul time.)
static void run_store_block(const float *results, int rows, int tokens, int stride, float *out, int ld) {
    for (int t = 0; t < tokens; t++)
        for (int r = 0; r < rows; r++) out[(size_t)t * (size_t)ld + (size_t)r] = results[(size_t)r * (size_t)stride + (size_t)t];
}

// ---- AVX-512 versions of the kernels above: the same operations in the same order, so the same bits.

LM_AVX2_FN static void run_unpack_avx2(LmWeightType type, const unsigned char *b, LmBlock *u); // (in the AVX2 section)

// Sixteen weights from element e of w as floats, w being of type (fp32, fp16 or bf16; passed as a
// constant so the switch folds away); mask selects the elements read.
LM_AVX512_FN static inline __attribute__((always_inline)) __m512 run_load16_f32(const LmMatrix *w, size_t e, __mmask16 mask, LmWeightType type) {
    switch (type) {
    case LM_F16: return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, (const uint16_t *)w->data + e));
    case LM_BF16:
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask, (const uint16_t *)w->data + e)), 16));
    default: return _mm512_maskz_loadu_ps(mask, (const float *)w->data + e);
    }
}

// run_sum_lanes of a vector: lanes k and k + 8, then k and k + 4, k + 2, k + 1.
LM_AVX512_FN static inline __attribute__((always_inline)) float run_sum_lanes512(__m512 v) {
    __m256 a = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    __m128 b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    __m128 c = _mm_add_ps(b, _mm_movehl_ps(b, b));
    return _mm_cvtss_f32(_mm_add_ss(c, _mm_shuffle_ps(c, c, 1)));
}

// Rows r0..r1 of a float matrix times one input x, one row after another: a single sequential
// stream is what this hardware's prefetchers serve fastest (interleaving 4 rows measured 25% slower).
LM_AVX512_FN static inline void run_matvec_float_typed(const LmMatrix *w, int r0, int r1, const float *x, float *out, LmWeightType type) {
    int cols = w->cols, tail = cols % 16;
    __mmask16 tail_mask = (__mmask16)((1u << tail) - 1);
    for (int r = r0; r < r1; r++) {
        __m512 acc = _mm512_setzero_ps();
        size_t base = (size_t)r * (size_t)cols;
        int j = 0;
        for (; j + 16 <= cols; j += 16) {
            __m512 wv = run_load16_f32(w, base + (size_t)j, 0xffff, type);
            acc = _mm512_add_ps(acc, _mm512_mul_ps(wv, _mm512_loadu_ps(x + j)));
        }
        if (tail) acc = _mm512_mask_add_ps(acc, tail_mask, acc, _mm512_mul_ps(run_load16_f32(w, base + (size_t)j, tail_mask, type), _mm512_maskz_loadu_ps(tail_mask, x + j)));
        out[r] = run_sum_lanes512(acc);
    }
}

// fp32 rows take the AVX2 kernel: its two chains of 8 lanes wait half as long on the add's latency,
// and its 32-byte loads split fewer cache lines where rows are not 64-byte aligned (llama2.c's files:
// 4-byte aligned): AVX-512's one chain measured 0.6x its speed in cache, 0.7-0.8x streamed.
LM_AVX2_FN static float run_dot_float_avx2(const LmMatrix *w, int row, const float *x);

LM_AVX512_FN static void run_matvec_float_avx512(const LmMatrix *w, int r0, int r1, const float *x, float *out) {
    switch (w->type) { // one specialized loop per type
    case LM_F16: run_matvec_float_typed(w, r0, r1, x, out, LM_F16); break;
    case LM_BF16: run_matvec_float_typed(w, r0, r1, x, out, LM_BF16); break;
    default: for (int r = r0; r < r1; r++) out[r] = run_dot_float_avx2(w, r, x); break;
    }
}

// Transpose-reduce: lane i of the result is the sum of the 16 lanes of v[i].
LM_AVX512_FN static inline __m512i run_reduce16(const __m512i *v) {
    __m512i a[8], b[4], c[2];
    for (int i = 0; i < 8; i++) // per 128-bit lane: (v[2i], v[2i+1]) interleaved
        a[i] = _mm512_add_epi32(_mm512_unpacklo_epi32(v[2 * i], v[2 * i + 1]), _mm512_unpackhi_epi32(v[2 * i], v[2 * i + 1]));
    for (int i = 0; i < 4; i++) // per 128-bit lane: v[4i..4i+3] in order
        b[i] = _mm512_add_epi32(_mm512_unpacklo_epi64(a[2 * i], a[2 * i + 1]), _mm512_unpackhi_epi64(a[2 * i], a[2 * i + 1]));
    for (int i = 0; i < 2; i++)
        c[i] = _mm512_add_epi32(_mm512_shuffle_i32x4(b[2 * i], b[2 * i + 1], 0x88), _mm512_shuffle_i32x4(b[2 * i], b[2 * i + 1], 0xdd));
    return _mm512_add_epi32(_mm512_shuffle_i32x4(c[0], c[1], 0x88), _mm512_shuffle_i32x4(c[0], c[1], 0xdd));
}

// As reduce16 for 8 vectors that each hold two groups (lanes 0-7 and 8-15): lane i of the result
// is group i, i.e. half i % 2 of v[i / 2].
LM_AVX512_FN static inline __m512i run_reduce8x2(const __m512i *v) {
    __m512i a[4], b[2];
    for (int i = 0; i < 4; i++)
        a[i] = _mm512_add_epi32(_mm512_unpacklo_epi32(v[2 * i], v[2 * i + 1]), _mm512_unpackhi_epi32(v[2 * i], v[2 * i + 1]));
    for (int i = 0; i < 2; i++)
        b[i] = _mm512_add_epi32(_mm512_unpacklo_epi64(a[2 * i], a[2 * i + 1]), _mm512_unpackhi_epi64(a[2 * i], a[2 * i + 1]));
    __m512i c = _mm512_add_epi32(_mm512_shuffle_i32x4(b[0], b[1], 0x88), _mm512_shuffle_i32x4(b[0], b[1], 0xdd));
    return _mm512_permutexvar_epi32(_mm512_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15), c);
}

// 64 weights of a row, from value e, as unsigned bytes u = w + offset: Q8_0 flips the sign bit
// (offset 128); Q4_0 keeps the stored nibbles (offset 8). For Q4_0 with groups of 32, the 64 values
// are two whole groups; with groups of 64, one. With only_32, just the first 32 values are read
// (the rest are 0 + offset, to be multiplied by zeros).
LM_AVX512_FN static inline __attribute__((always_inline)) __m512i run_load64_u8(const LmMatrix *w, LmWeightType type, size_t e, int only_32) {
    // these kernels do ~10 instructions per 64 bytes: too few loads fit the out-of-order window to
    // hide memory latency, so the stream is prefetched explicitly
    _mm_prefetch((const char *)w->data + (type == LM_Q8_GROUPS ? e : e / 2) + LM_PREFETCH_BYTES, _MM_HINT_T0);
    if (type == LM_Q8_GROUPS)
        return _mm512_xor_si512(_mm512_maskz_loadu_epi8(only_32 ? 0xffffffffull : ~0ull, (const int8_t *)w->data + e), _mm512_set1_epi8((char)0x80));
    __m256i bytes = _mm256_maskz_loadu_epi8(only_32 ? 0xffffu : 0xffffffffu, (const unsigned char *)w->data + e / 2);
    __m256i lo = _mm256_and_si256(bytes, _mm256_set1_epi8(15)), hi = _mm256_and_si256(_mm256_srli_epi16(bytes, 4), _mm256_set1_epi8(15));
    if (w->group_size == 64) return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
    return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_permute2x128_si256(lo, hi, 0x20)), _mm256_permute2x128_si256(lo, hi, 0x31), 1);
}

// Q4_0 with groups of 32: 64 bytes of nibbles are 4 groups; their low nibbles are the first 16
// values of each group, their high nibbles the last 16. The input is rearranged once to match, per
// 4 groups: the first halves of the 4 groups, then the second halves (zeros past the end).
static void run_arrange_q4_input(int8_t *out, const int8_t *xq, int cols) {
    int groups = cols / 32;
    for (int block = 0; block * 4 < groups; block++)
        for (int g = 0; g < 4; g++)
            for (int k = 0; k < 16; k++) {
                int src = (block * 4 + g) * 32 + k, ok = block * 4 + g < groups;
                out[block * 128 + g * 16 + k] = ok ? xq[src] : 0;
                out[block * 128 + 64 + g * 16 + k] = ok ? xq[src + 16] : 0;
            }
}

// run_quantize_q8 with 16 values per step (n a multiple of gs, gs a multiple of 16): the same divisions,
// clamps and rounding, so the same bytes and scales.
LM_AVX512_FN static void run_quantize_q8_avx512(int8_t *q, float *s, const float *x, int n, int gs) {
    assert(gs % 16 == 0 && n % gs == 0);
    __m512 big = _mm512_set1_ps(1024.0f), half = _mm512_set1_ps(0.5f), absmask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
    for (int start = 0, g = 0; start < n; start += gs, g++) {
        __m512 m = _mm512_setzero_ps();
        for (int i = start; i < start + gs; i += 16) m = _mm512_max_ps(_mm512_and_ps(_mm512_loadu_ps(x + i), absmask), m); // (m when |x| is NaN)
        float wmax = _mm512_reduce_max_ps(m); // (exact in any order; NaNs were dropped, as the plain loop's a > wmax drops them)
        float scale = wmax / 127.0f;
        s[g] = scale;
        __m512 sv = _mm512_set1_ps(scale);
        for (int i = start; i < start + gs; i += 16) {
            __m512 v = scale > 0.0f ? _mm512_div_ps(_mm512_loadu_ps(x + i), sv) : _mm512_setzero_ps();
            __mmask16 finite = _mm512_cmp_ps_mask(v, _mm512_set1_ps(-1024.0f), _CMP_GT_OQ) & _mm512_cmp_ps_mask(v, big, _CMP_LT_OQ);
            v = _mm512_mask_blend_ps(finite, big, v);
            __m512i r = _mm512_cvttps_epi32(v);
            __m512 frac = _mm512_sub_ps(v, _mm512_cvtepi32_ps(r));
            r = _mm512_mask_add_epi32(r, _mm512_cmp_ps_mask(frac, half, _CMP_GE_OQ), r, _mm512_set1_epi32(1));
            r = _mm512_mask_sub_epi32(r, _mm512_cmp_ps_mask(frac, _mm512_set1_ps(-0.5f), _CMP_LE_OQ), r, _mm512_set1_epi32(1));
            __mmask16 in_range = _mm512_cmp_epi32_mask(r, _mm512_set1_epi32(-127), _MM_CMPINT_NLT) & _mm512_cmp_epi32_mask(r, _mm512_set1_epi32(127), _MM_CMPINT_LE);
            _mm_storeu_si128((__m128i *)(void *)(q + i), _mm512_cvtepi32_epi8(_mm512_maskz_mov_epi32(in_range, r)));
        }
    }
}

// As reduce16 for 4 vectors that each hold four groups, one per 128-bit lane: lane i of the result
// is group i, i.e. 128-bit lane i % 4 of v[i / 4].
LM_AVX512_FN static inline __m512i run_reduce4x4(const __m512i *v) {
    __m512i a0 = _mm512_add_epi32(_mm512_unpacklo_epi32(v[0], v[1]), _mm512_unpackhi_epi32(v[0], v[1]));
    __m512i a1 = _mm512_add_epi32(_mm512_unpacklo_epi32(v[2], v[3]), _mm512_unpackhi_epi32(v[2], v[3]));
    __m512i b = _mm512_add_epi32(_mm512_unpacklo_epi64(a0, a1), _mm512_unpackhi_epi64(a0, a1)); // lane 4c+k: group 4k+c
    return _mm512_permutexvar_epi32(_mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15), b);
}

// Can the SIMD integer kernels take this matrix? (v3 layout: groups within rows.)
static int run_int_simd_ok(const LmMatrix *w) {
    if (w->type != LM_Q8_GROUPS && w->type != LM_Q4_GROUPS) return 0;
    int gs = w->group_size;
    return w->cols % gs == 0 && (w->type == LM_Q8_GROUPS ? gs % 32 == 0 : gs == 32 || gs == 64);
}

// Sixteen group scales from group g (fewer where mask says), as floats.
LM_AVX512_FN static inline __attribute__((always_inline)) __m512 run_load_scales16(const LmMatrix *w, LmWeightType type, size_t g, __mmask16 mask) {
    if (type == LM_Q8_GROUPS) return _mm512_maskz_loadu_ps(mask, (const float *)(const void *)(w->scales + 4 * g));
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, (const uint16_t *)(const void *)(w->scales + 2 * g)));
}

// run_dot_int for a row whose groups lie within it: the int sums of 16 groups at once, their terms
// added to run_dot_int's 16 lanes. xsum[g] is the sum of input group g's values.
LM_AVX512_FN static inline __attribute__((always_inline)) float run_dot_int_avx512_typed(const LmMatrix *w, LmWeightType type, int row, const int8_t *xq,
                                                                                         const float *xs, const int32_t *xsum, const int8_t *xarranged) {
    int cols = w->cols, gs = w->group_size, groups = cols / gs, per64 = gs >= 64 ? gs / 64 : 1;
    int offset = type == LM_Q8_GROUPS ? 128 : 8;
    size_t start = (size_t)row * (size_t)cols;
    __m512 acc = _mm512_setzero_ps();
    for (int g0 = 0; g0 < groups; g0 += 16) {
        int count = groups - g0 < 16 ? groups - g0 : 16;
        __m512i v[16], sums;
        // the scales are a stream of their own, 1/8 of the values' bytes or less: prefetched as far
        // ahead (missed, their loads stalled q4_0's generation: 27% of its profile's samples)
        _mm_prefetch((const char *)w->scales + (type == LM_Q8_GROUPS ? 4 : 2) * (start / (size_t)gs + (size_t)g0) + LM_PREFETCH_BYTES / 8, _MM_HINT_T0);
        if (type == LM_Q4_GROUPS && gs == 32) { // 4 groups per 64 bytes, against the rearranged input
            for (int b = 0; b < 4; b++) {
                int gb = g0 + 4 * b, ng = groups - gb < 4 ? groups - gb : 4;
                if (ng <= 0) { v[b] = _mm512_setzero_si512(); continue; }
                const unsigned char *nib = (const unsigned char *)w->data + (start + (size_t)gb * 32) / 2;
                _mm_prefetch((const char *)nib + LM_PREFETCH_BYTES, _MM_HINT_T0);
                __m512i bytes = ng == 4 ? _mm512_loadu_si512(nib) : _mm512_maskz_loadu_epi8((1ull << (16 * ng)) - 1, nib);
                __m512i lo = _mm512_and_si512(bytes, _mm512_set1_epi8(15)), hi = _mm512_and_si512(_mm512_srli_epi16(bytes, 4), _mm512_set1_epi8(15));
                const int8_t *xa = xarranged + (size_t)(gb / 4) * 128;
                v[b] = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, _mm512_loadu_si512(xa)), hi, _mm512_loadu_si512(xa + 64));
            }
            sums = run_reduce4x4(v);
        } else if (gs == 32) { // two groups per 64 values
            for (int i = 0; i < 8; i++) {
                int g = g0 + 2 * i;
                int only_32 = 2 * i + 1 >= count; // an odd last group: do not read past the row
                v[i] = 2 * i < count ? _mm512_dpbusd_epi32(_mm512_setzero_si512(), run_load64_u8(w, type, start + (size_t)g * 32, only_32),
                                                           _mm512_maskz_loadu_epi8(only_32 ? 0xffffffffull : ~0ull, xq + (size_t)g * 32))
                                     : _mm512_setzero_si512();
            }
            sums = run_reduce8x2(v);
        } else if (gs == 64) {
            for (int i = 0; i < 16; i++) {
                size_t e = (size_t)(g0 + i) * 64;
                v[i] = i < count ? _mm512_dpbusd_epi32(_mm512_setzero_si512(), run_load64_u8(w, type, start + e, 0), _mm512_loadu_si512(xq + e))
                                 : _mm512_setzero_si512();
            }
            sums = run_reduce16(v);
        } else { // groups of 128, 192, ...: several 64-value steps per group
            for (int i = 0; i < 16; i++) {
                v[i] = _mm512_setzero_si512();
                for (int k = 0; i < count && k < per64; k++) {
                    size_t e = (size_t)(g0 + i) * (size_t)gs + (size_t)k * 64;
                    v[i] = _mm512_dpbusd_epi32(v[i], run_load64_u8(w, type, start + e, 0), _mm512_loadu_si512(xq + e));
                }
            }
            sums = run_reduce16(v);
        }
        __mmask16 mask = (__mmask16)((1u << count) - 1);
        __m512i isum = _mm512_sub_epi32(sums, _mm512_slli_epi32(_mm512_maskz_loadu_epi32(mask, xsum + g0), offset == 8 ? 3 : 7)); // - offset * sum(x)
        __m512 p = _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(isum), run_load_scales16(w, type, start / (size_t)gs + (size_t)g0, mask)),
                                 _mm512_maskz_loadu_ps(mask, xs + g0));
        acc = _mm512_mask_add_ps(acc, mask, acc, p);
    }
    return run_sum_lanes512(acc);
}

// Rows r0..r1 of w (run_int_simd_ok) with input token t, into out[0..r1 - r0): run_dot_int_avx512_typed
// per row, specialized per type.
LM_AVX512_FN static void run_rows_int_avx512(const LmMatrix *w, int r0, int r1, const LmBatch *in, int t, float *out) {
    const int8_t *xq = in->q + (size_t)t * (size_t)in->cols, *xa = in->qarranged ? in->qarranged + (size_t)t * (size_t)(in->cols + 128) : NULL;
    const float *xs = in->s + (size_t)t * (size_t)in->groups;
    const int32_t *xsum = in->xsum + (size_t)t * (size_t)in->groups;
    if (w->type == LM_Q8_GROUPS)
        for (int r = r0; r < r1; r++) out[r - r0] = run_dot_int_avx512_typed(w, LM_Q8_GROUPS, r, xq, xs, xsum, xa);
    else
        for (int r = r0; r < r1; r++) out[r - r0] = run_dot_int_avx512_typed(w, LM_Q4_GROUPS, r, xq, xs, xsum, xa);
}

// One Q4_K or Q5_K block for run_dot_k4_avx512: its 8 sub-blocks' dot products with x in v[0..3]
// (two sub-blocks per vector, 8 lanes each; each 64 bytes of nibbles hold sub-blocks 4i..4i+3, low
// nibbles 4i and 4i+2, high 4i+1 and 4i+3, put back in order by a 256-bit shuffle; Q5_K's fifth bits,
// bit j of byte l for value l of sub-block j, added where set). Its scales: run_k4_scales_avx512.
LM_AVX512_FN static inline __attribute__((always_inline)) void run_k4_block_avx512(const unsigned char *blk, const int8_t *x, __m512i *v, LmWeightType type) {
    __m512i m = _mm512_set1_epi8(15);
    int five = type == LM_Q5_K, nibbles_at = five ? 48 : 16;
    for (int line = 0; line < run_types[type].block_bytes; line += 64) _mm_prefetch((const char *)blk + line + LM_PREFETCH_BYTES, _MM_HINT_T0);
    __m512i fifths = five ? _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(const void *)(blk + 16))) : _mm512_setzero_si512();
    for (int i = 0; i < 2; i++) {
        __m512i bytes = _mm512_loadu_si512(blk + nibbles_at + 64 * i);
        __m512i lo = _mm512_and_si512(bytes, m), hi = _mm512_and_si512(_mm512_srli_epi16(bytes, 4), m);
        __m512i first = _mm512_shuffle_i64x2(lo, hi, 0x44), second = _mm512_shuffle_i64x2(lo, hi, 0xee); // sub-blocks 4i, 4i+1 and 4i+2, 4i+3
        if (five) {
            __m512i bit = _mm512_inserti64x4(_mm512_set1_epi8((char)(1 << 4 * i)), _mm256_set1_epi8((char)(2 << 4 * i)), 1);
            first = _mm512_mask_add_epi8(first, _mm512_test_epi8_mask(fifths, bit), first, _mm512_set1_epi8(16));
            second = _mm512_mask_add_epi8(second, _mm512_test_epi8_mask(fifths, _mm512_slli_epi16(bit, 2)), second, _mm512_set1_epi8(16));
        }
        v[2 * i] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), first, _mm512_loadu_si512(x + 128 * i));
        v[2 * i + 1] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), second, _mm512_loadu_si512(x + 128 * i + 64));
    }
}

// The scales of two Q4_K/Q5_K blocks from their first 16 bytes (d, dmin, then run_scales_k4's 12
// bytes as words w0 w1 w2; the second block's bytes in the high 128-bit lane, zeros for none): the
// 16 sub-blocks' 6-bit scales (scale) and mins (min) as floats, d and dmin in lanes 0-7 (block 0)
// and 8-15. Per lane: scales 0-3 = w0 & 63 (each byte), 4-7 = (w2 & 15) | (w0 >> 6) << 4, mins
// 0-3 = w1 & 63, 4-7 = (w2 >> 4) | (w1 >> 6) << 4, all in vectors (decoded per block in scalar
// registers, they had held Q4_K to 50 GMAC/s in cache against 66 now).
LM_AVX512_FN static inline __attribute__((always_inline)) void run_k4_scales_avx512(__m256i heads, __m512 *scale, __m512 *min, __m512 *d, __m512 *dmin) {
    __m256i low = _mm256_and_si256(_mm256_srlv_epi32(_mm256_shuffle_epi32(heads, 0xed), _mm256_setr_epi32(0, 0, 0, 4, 0, 0, 0, 4)), // w0 w2 w1 w2
                                   _mm256_setr_epi32(0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f));
    __m256i high = _mm256_and_si256(_mm256_srli_epi32(_mm256_shuffle_epi32(heads, 0xa5), 2), _mm256_setr_epi32(0, 0x30303030, 0, 0x30303030, 0, 0x30303030, 0, 0x30303030)); // w0 w0 w1 w1
    __m256i sm = _mm256_permute4x64_epi64(_mm256_or_si256(low, high), 0xd8); // scales of blocks 0, 1 | mins of blocks 0, 1
    *scale = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm256_castsi256_si128(sm)));
    *min = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm256_extracti128_si256(sm, 1)));
    __m512 halves = _mm512_cvtph_ps(heads); // lanes 0, 1: block 0's d, dmin; 8, 9: block 1's
    *d = _mm512_permutexvar_ps(_mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 8, 8, 8, 8, 8, 8, 8, 8), halves);
    *dmin = _mm512_permutexvar_ps(_mm512_setr_epi32(1, 1, 1, 1, 1, 1, 1, 1, 9, 9, 9, 9, 9, 9, 9, 9), halves);
}

// GGUF's Q4_K and Q5_K (run_dot_blocks' terms), two blocks per step: their 16 sub-blocks' int32 sums
// in the 16 lanes (unsigned values against the input, VNNI), so terms 8b..8b+15 at once. An odd last
// block takes lanes 0-7 alone.
LM_AVX512_FN static inline __attribute__((always_inline)) float run_dot_k4_avx512(const unsigned char *row, int cols, const int8_t *xq, const float *xs,
                                                                                 const int32_t *xsum, LmWeightType type) {
    __m512 acc = _mm512_setzero_ps();
    int blocks = cols / 256;
    size_t bytes = (size_t)run_types[type].block_bytes;
    for (int b = 0; b < blocks; b += 2) {
        int two = b + 1 < blocks;
        __m512i v[8];
        __m256i heads = _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(const void *)(row + bytes * (size_t)b)));
        run_k4_block_avx512(row + bytes * (size_t)b, xq + 256 * (size_t)b, v, type);
        if (two) {
            run_k4_block_avx512(row + bytes * (size_t)(b + 1), xq + 256 * (size_t)(b + 1), v + 4, type);
            heads = _mm256_inserti128_si256(heads, _mm_loadu_si128((const __m128i *)(const void *)(row + bytes * (size_t)(b + 1))), 1);
        } else {
            v[4] = v[5] = v[6] = v[7] = _mm512_setzero_si512();
            heads = _mm256_inserti128_si256(heads, _mm_setzero_si128(), 1);
        }
        __mmask16 mask = two ? 0xffff : 0x00ff;
        __m512i sums = run_reduce8x2(v); // lane i: sub-block i % 8 of block b + i / 8
        __m512 scale, min, d, dmin;
        run_k4_scales_avx512(heads, &scale, &min, &d, &dmin);
        __m512 ds = _mm512_mul_ps(d, scale), dm = _mm512_mul_ps(dmin, min);
        __m512 xsums = _mm512_cvtepi32_ps(_mm512_maskz_loadu_epi32(mask, xsum + 8 * (size_t)b));
        __m512 part = _mm512_sub_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(sums), ds), _mm512_mul_ps(xsums, dm));
        acc = _mm512_mask_add_ps(acc, mask, acc, _mm512_mul_ps(part, _mm512_maskz_loadu_ps(mask, xs + 8 * (size_t)b)));
    }
    return run_sum_lanes512(acc);
}

// The runs-of-16 types' step of two blocks (Q2_K, Q3_K, Q6_K): lane s of parts[k] is run s of block
// b + k, scaled; each group's two runs added (even lanes plus odd), times the groups' input scales xs
// (8 per block), into acc; n: the blocks of this step (1 or 2).
LM_AVX512_FN static inline __attribute__((always_inline)) __m512 run_add_runs16_avx512(__m512 acc, const __m512 *parts, int n, const float *xs) {
    __m512i evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    __m512i odds = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    __mmask16 mask = n == 2 ? 0xffff : 0x00ff;
    __m512 wsum = _mm512_add_ps(_mm512_permutex2var_ps(parts[0], evens, parts[1]), _mm512_permutex2var_ps(parts[0], odds, parts[1]));
    return _mm512_mask_add_ps(acc, mask, acc, _mm512_mul_ps(wsum, _mm512_maskz_loadu_ps(mask, xs)));
}

// The input sums of a block of 256's 16 runs of 16 (lane r: run r, the half r % 2 of group r / 2),
// from its 8 groups' sums (xsum) and their first halves' (xsum16).
LM_AVX512_FN static inline __attribute__((always_inline)) __m512i run_runs16_input_avx512(const int32_t *xsum, const int32_t *xsum16) {
    __m256i first = _mm256_loadu_si256((const __m256i *)(const void *)xsum16);
    __m256i second = _mm256_sub_epi32(_mm256_loadu_si256((const __m256i *)(const void *)xsum), first);
    return _mm512_permutex2var_epi32(_mm512_castsi256_si512(first), _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23), _mm512_castsi256_si512(second));
}

// The fp16 at p in all 16 lanes (one broadcast of the half, one conversion: no trip through a
// scalar register).
LM_AVX512_FN static inline __attribute__((always_inline)) __m512 run_half16_avx512(const unsigned char *p) {
    return _mm512_cvtph_ps(_mm256_set1_epi16((short)run_u16_at(p)));
}

// GGUF's Q6_K (run_dot_q6_k), two blocks per step: per 128 values, the low nibbles of 64 bytes are
// groups 4h and 4h+1, the high nibbles 4h+2 and 4h+3, each with its 2 high bits (shifted per
// 256-bit half) as unsigned bytes q + 32; the int32 sums of the 16 runs of 16, less 32 * the runs'
// input sums (from the input's xsum and xsum16), each run scaled, then run_add_runs16_avx512.
LM_AVX512_FN static inline __attribute__((always_inline)) float run_dot_q6_k_avx512(const unsigned char *row, int cols, const int8_t *xq, const float *xs,
                                                                                   const int32_t *xsum, const int32_t *xsum16) {
    __m512 acc = _mm512_setzero_ps();
    __m512i m4 = _mm512_set1_epi8(15), m2 = _mm512_set1_epi8(0x30);
    __m512i up_lo = _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(2), 1), down_hi = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(2), 1);
    int blocks = cols / 256;
    for (int b = 0; b < blocks; b += 2) {
        int n = b + 1 < blocks ? 2 : 1;
        __m512 parts[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
        for (int k = 0; k < n; k++) {
            const unsigned char *blk = row + 210 * (size_t)(b + k);
            for (int line = 0; line < 210; line += 64) _mm_prefetch((const char *)blk + line + LM_PREFETCH_BYTES, _MM_HINT_T0);
            __m512i v[4];
            for (int h = 0; h < 2; h++) {
                __m512i ql = _mm512_loadu_si512(blk + 64 * h);
                __m512i qh = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(const void *)(blk + 128 + 32 * h)));
                __m512i lo = _mm512_or_si512(_mm512_and_si512(ql, m4), _mm512_and_si512(_mm512_sllv_epi16(qh, up_lo), m2));
                __m512i hi = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), m4), _mm512_and_si512(_mm512_srlv_epi16(qh, down_hi), m2));
                const int8_t *x = xq + 256 * (size_t)(b + k) + 128 * h;
                __m512i x0 = _mm512_loadu_si512(x), x1 = _mm512_loadu_si512(x + 64);
                v[2 * h] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, x0);
                v[2 * h + 1] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), hi, x1);
            }
            __m512 scales = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(const void *)(blk + 192))));
            __m512 ds = _mm512_mul_ps(run_half16_avx512(blk + 208), scales);
            __m512i sums = _mm512_sub_epi32(run_reduce4x4(v), _mm512_slli_epi32(run_runs16_input_avx512(xsum + 8 * (b + k), xsum16 + 8 * (b + k)), 5));
            parts[k] = _mm512_mul_ps(_mm512_cvtepi32_ps(sums), ds); // lane s: run s of the block
        }
        acc = run_add_runs16_avx512(acc, parts, n, xs + 8 * (size_t)b);
    }
    return run_sum_lanes512(acc);
}

// Where a split-nibble block of 32 keeps its 16 bytes of nibbles (after d, the offset's fp16 and the
// fifth bits, as its type has them) and Q5_0's and Q5_1's 32 fifth bits: the AVX-512 and AVX2 kernels'.
static inline int run_nibbles_at(LmWeightType type) { return type == LM_Q4_1 ? 4 : type == LM_Q5_0 ? 6 : type == LM_Q5_1 ? 8 : 2; }
static inline int run_fifths_at(LmWeightType type) { return type == LM_Q5_0 ? 2 : 4; }

// Q3_K's 16 scales (run_scales_q3_k's integers, 6 bits - 32) as signed bytes in order: the low
// nibbles in bytes 96-103 (scales 0-7 low, 8-15 high), the high 2 bits in 104-107 (scale j: bits
// 2 (j / 4).. of byte 104 + j % 4). In vector registers, nothing past byte 107 read: the low bytes
// repeated for scales 8-15 and shifted there by a word blend; the high bytes shifted per 32-bit lane
// (a byte's bits 0-1 stay its own for shifts up to 6). The AVX-512 kernel's too.
LM_AVX2_FN static inline __attribute__((always_inline)) __m128i run_q3_k_scales16(const unsigned char *b) {
    uint32_t last;
    memcpy(&last, b + 104, 4);
    __m128i raw = _mm_insert_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(b + 96)), (int)last, 2);
    __m128i low = _mm_shuffle_epi8(raw, _mm_setr_epi8(0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7));
    low = _mm_and_si128(_mm_blend_epi16(low, _mm_srli_epi16(low, 4), 0xf0), _mm_set1_epi8(15));
    __m128i high = _mm_srlv_epi32(_mm_shuffle_epi8(raw, _mm_setr_epi8(8, 9, 10, 11, 8, 9, 10, 11, 8, 9, 10, 11, 8, 9, 10, 11)), _mm_setr_epi32(0, 2, 4, 6));
    return _mm_sub_epi8(_mm_or_si128(low, _mm_and_si128(_mm_slli_epi32(high, 4), _mm_set1_epi8(0x30))), _mm_set1_epi8(32));
}

// GGUF's Q2_K and Q3_K (run_dot_blocks' terms), two blocks per step as run_dot_q6_k_avx512: per 128
// values, the 32 bytes of 2-bit values (bits 2k..2k+1 of byte l: value 32k + l) in both 256-bit
// halves, shifted per half, so a vector holds two groups (four runs of 16); Q3_K's high bits (bit
// 4 half + k of byte l) add 4 where set, so its values are unsigned (q + 4). Per run of 16 the int32
// sums of u * x, and the run's input sum from xsum and xsum16 (Q2_K's offsets; Q3_K's 4 * sum(x)
// taken off), each run scaled, then run_add_runs16_avx512.
LM_AVX512_FN static inline __attribute__((always_inline)) float run_dot_k2_avx512(const unsigned char *row, int cols, const int8_t *xq, const float *xs,
                                                                                 const int32_t *xsum, const int32_t *xsum16, LmWeightType type) {
    const int q3 = type == LM_Q3_K, values_at = q3 ? 32 : 16;
    const size_t bytes = (size_t)run_types[type].block_bytes;
    __m512 acc = _mm512_setzero_ps();
    __m512i three = _mm512_set1_epi8(3);
    int blocks = cols / 256;
    for (int b = 0; b < blocks; b += 2) {
        int n = b + 1 < blocks ? 2 : 1;
        __m512 parts[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
        for (int k = 0; k < n; k++) {
            const unsigned char *blk = row + bytes * (size_t)(b + k);
            for (size_t line = 0; line < bytes; line += 64) _mm_prefetch((const char *)blk + line + LM_PREFETCH_BYTES, _MM_HINT_T0);
            __m512i high = q3 ? _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(const void *)blk)) : _mm512_setzero_si512(), v[4];
            for (int h = 0; h < 2; h++) {
                __m512i q = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(const void *)(blk + values_at + 32 * h)));
                for (int pair = 0; pair < 2; pair++) { // groups 2 pair and 2 pair + 1 of this half
                    __m512i shift = _mm512_inserti64x4(_mm512_set1_epi16((short)(4 * pair)), _mm256_set1_epi16((short)(4 * pair + 2)), 1);
                    __m512i u = _mm512_and_si512(_mm512_srlv_epi16(q, shift), three);
                    if (q3) {
                        __m512i bit = _mm512_inserti64x4(_mm512_set1_epi8((char)(1 << (4 * h + 2 * pair))), _mm256_set1_epi8((char)(2 << (4 * h + 2 * pair))), 1);
                        u = _mm512_mask_add_epi8(u, _mm512_test_epi8_mask(high, bit), u, _mm512_set1_epi8(4));
                    }
                    __m512i x = _mm512_loadu_si512(xq + 256 * (size_t)(b + k) + 128 * h + 64 * pair);
                    v[2 * h + pair] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, x);
                }
            }
            __m512i sums = run_reduce4x4(v), xsums = run_runs16_input_avx512(xsum + 8 * (b + k), xsum16 + 8 * (b + k)); // lane r: run r of the block
            if (q3) { // run r: scale r
                __m512 ds = _mm512_mul_ps(run_half16_avx512(blk + 108), _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(run_q3_k_scales16(blk))));
                parts[k] = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(sums, _mm512_slli_epi32(xsums, 2))), ds);
            } else { // run r: scale nibble and min nibble of byte r
                __m512i sc = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(const void *)blk));
                __m512 ds = _mm512_mul_ps(run_half16_avx512(blk + 80), _mm512_cvtepi32_ps(_mm512_and_si512(sc, _mm512_set1_epi32(15))));
                __m512 dm = _mm512_mul_ps(run_half16_avx512(blk + 82), _mm512_cvtepi32_ps(_mm512_srli_epi32(sc, 4)));
                parts[k] = _mm512_sub_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(sums), ds), _mm512_mul_ps(_mm512_cvtepi32_ps(xsums), dm));
            }
        }
        acc = run_add_runs16_avx512(acc, parts, n, xs + 8 * (size_t)b);
    }
    return run_sum_lanes512(acc);
}

// The 4 bytes at `at` of each of 16 blocks of `bytes` bytes (both even), without vpgatherdd (on Zen 5
// it took 30% of the Q4_1 kernel's time): the blocks' bytes read as 64-byte pieces, word 2i + j of
// the result (block i's dword) picked from word (bytes * i + at) / 2 + j of the pieces, each pair of
// pieces by one word permute. run_word_pick_avx512 makes the indices; the masks say which pair.
typedef struct { __m512i index; __mmask32 second, third; } RunWordPick;
enum { LM_PIECES = 6 }; // 64-byte pieces: 16 blocks of up to 24 bytes
LM_AVX512_FN static inline __attribute__((always_inline)) RunWordPick run_word_pick_avx512(int bytes, int at) {
    assert(bytes % 2 == 0 && at % 2 == 0 && 15 * bytes + at + 4 <= 64 * LM_PIECES);
    __m512i r = _mm512_cvtepu8_epi16(_mm256_setr_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31));
    __m512i index = _mm512_add_epi16(_mm512_mullo_epi16(_mm512_srli_epi16(r, 1), _mm512_set1_epi16((short)(bytes / 2))),
                                     _mm512_add_epi16(_mm512_set1_epi16((short)(at / 2)), _mm512_and_si512(r, _mm512_set1_epi16(1))));
    return (RunWordPick){.index = index, .second = _mm512_cmpge_epu16_mask(index, _mm512_set1_epi16(64)), .third = _mm512_cmpge_epu16_mask(index, _mm512_set1_epi16(128))};
}

// The first n bytes from p as LM_PIECES pieces of 64 (zeros past n; nothing past p + n is read).
LM_AVX512_FN static inline __attribute__((always_inline)) void run_pieces_avx512(const unsigned char *p, int n, __m512i *piece) {
    for (int j = 0; j < LM_PIECES; j++) {
        int left = n - 64 * j;
        piece[j] = left >= 64 ? _mm512_loadu_si512(p + 64 * j) : left > 0 ? _mm512_maskz_loadu_epi8(_cvtu64_mask64((1ull << left) - 1), p + 64 * j) : _mm512_setzero_si512();
    }
}

LM_AVX512_FN static inline __attribute__((always_inline)) __m512i run_pick_dwords_avx512(const __m512i *piece, RunWordPick k) {
    __m512i d = _mm512_permutex2var_epi16(piece[0], k.index, piece[1]); // (the index's bits above 5 ignored)
    d = _mm512_mask_mov_epi16(d, k.second, _mm512_permutex2var_epi16(piece[2], k.index, piece[3]));
    return _mm512_mask_mov_epi16(d, k.third, _mm512_permutex2var_epi16(piece[4], k.index, piece[5]));
}

// GGUF's blocks of 32 values in 16 bytes of nibbles (Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL; run_dot_blocks'
// terms), 16 blocks per step: 4 blocks' nibbles per vector, one block per 128-bit lane (low nibbles:
// the first 16 values, high: the last 16), against the input as run_arrange_q4_input arranges it.
// The values as unsigned bytes u = q + offset (Q5's fifth bits added where set; IQ4_NL's grid + 128),
// offset * the group's input sum taken off the int32 sums. Each block's first 4 bytes (d and, for
// the types with offsets, their fp16) and Q5's 32 fifth bits picked from the 16 blocks' bytes by
// word permutes; the fifth bits spread to a byte each in vectors and tested into a mask (AVX-512
// Q5_0 30 -> 41 GMAC/s in cache against gathers and masks built in scalar registers).
LM_AVX512_FN static inline __attribute__((always_inline)) float run_dot_nibbles_avx512(const unsigned char *row, int cols, const int8_t *xa, const float *xs,
                                                                                       const int32_t *xsum, LmWeightType type) {
    const int bytes = run_types[type].block_bytes, has_min = run_types[type].has_min;
    const int nibbles_at = run_nibbles_at(type), fifth_at = run_fifths_at(type);
    const int five = type == LM_Q5_0 || type == LM_Q5_1, offset_shift = type == LM_Q4_0 ? 3 : type == LM_Q5_0 ? 4 : type == LM_IQ4_NL ? 7 : 0; // (offset 8, 16, 128)
    assert(run_types[type].split_nibbles && run_types[type].block_values == 32);
    __m512 acc = _mm512_setzero_ps();
    __m512i m = _mm512_set1_epi8(15);
    RunWordPick first_pick = run_word_pick_avx512(bytes, 0), fifth_pick = run_word_pick_avx512(bytes, five ? fifth_at : 0);
    __m512i grid = _mm512_broadcast_i32x4(_mm_add_epi8(_mm_loadu_si128((const __m128i *)(const void *)run_iq4_grid), _mm_set1_epi8(-128)));
    // Q5: a block's 32 fifth bits in each dword of its lane (lane_blocks + 4i: lane k of group i holds
    // block 4i + k); bits 0..15 (16..31) spread 8 to a byte, bit j % 8 tested in byte j
    __m512i lane_blocks = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    __m512i spread_lo = _mm512_broadcast_i32x4(_mm_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1));
    __m512i spread_hi = _mm512_add_epi8(spread_lo, _mm512_set1_epi8(2)), bit = _mm512_set1_epi64((long long)0x8040201008040201ull);
    int blocks = cols / 32;
    for (int b0 = 0; b0 < blocks; b0 += 16) {
        int count = blocks - b0 < 16 ? blocks - b0 : 16;
        __mmask16 mask = (__mmask16)((1u << count) - 1);
        const unsigned char *p = row + (size_t)bytes * (size_t)b0;
        __m512i v[4], piece[LM_PIECES];
        run_pieces_avx512(p, count * bytes, piece);
        __m512i first4 = run_pick_dwords_avx512(piece, first_pick), fifths = five ? run_pick_dwords_avx512(piece, fifth_pick) : first4; // (dword i: block b0 + i's)
        for (int i = 0; i < 4; i++) {
            if (4 * i >= count) { v[i] = _mm512_setzero_si512(); continue; }
            const unsigned char *blk = p + (size_t)(4 * bytes * i);
            _mm_prefetch((const char *)blk + LM_PREFETCH_BYTES, _MM_HINT_T0);
            _mm_prefetch((const char *)blk + 64 + LM_PREFETCH_BYTES, _MM_HINT_T0);
            __m512i raw = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)(const void *)(blk + nibbles_at)));
#define LM_BLOCK_K(k) \
    if (4 * i + k < count) raw = _mm512_inserti32x4(raw, _mm_loadu_si128((const __m128i *)(const void *)(blk + k * bytes + nibbles_at)), k);
            LM_BLOCK_K(1) LM_BLOCK_K(2) LM_BLOCK_K(3)
#undef LM_BLOCK_K
            __m512i lo = _mm512_and_si512(raw, m), hi = _mm512_and_si512(_mm512_srli_epi16(raw, 4), m);
            if (five) { // lane k: block 4i + k's 32 fifth bits; byte j of lo (hi) takes bit j (j + 16)
                __m512i h = _mm512_permutexvar_epi32(_mm512_add_epi32(lane_blocks, _mm512_set1_epi32(4 * i)), fifths);
                lo = _mm512_mask_add_epi8(lo, _mm512_test_epi8_mask(_mm512_shuffle_epi8(h, spread_lo), bit), lo, _mm512_set1_epi8(16));
                hi = _mm512_mask_add_epi8(hi, _mm512_test_epi8_mask(_mm512_shuffle_epi8(h, spread_hi), bit), hi, _mm512_set1_epi8(16));
            }
            if (type == LM_IQ4_NL) lo = _mm512_shuffle_epi8(grid, lo), hi = _mm512_shuffle_epi8(grid, hi);
            const int8_t *x = xa + (size_t)(b0 / 4 + i) * 128;
            v[i] = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, _mm512_loadu_si512(x)), hi, _mm512_loadu_si512(x + 64));
        }
        __m512i xsums = _mm512_maskz_loadu_epi32(mask, xsum + b0), sums = run_reduce4x4(v); // lane i: block b0 + i
        if (offset_shift) sums = _mm512_sub_epi32(sums, _mm512_slli_epi32(xsums, offset_shift));
        __m512 part = _mm512_mul_ps(_mm512_cvtepi32_ps(sums), _mm512_cvtph_ps(_mm512_cvtepi32_epi16(first4)));
        if (has_min) { // d * qx - m * sum(x), m = -min
            __m512 offsets = _mm512_xor_ps(_mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(first4, 16))), _mm512_set1_ps(-0.0f));
            part = _mm512_sub_ps(part, _mm512_mul_ps(_mm512_cvtepi32_ps(xsums), offsets));
        }
        acc = _mm512_mask_add_ps(acc, mask, acc, _mm512_mul_ps(part, _mm512_maskz_loadu_ps(mask, xs + b0)));
    }
    return run_sum_lanes512(acc);
}

// GGUF's IQ4_XS (run_dot_blocks' terms), two blocks per step: each 64 bytes of nibbles are 4 groups
// as IQ4_NL's, against the arranged input, the grid + 128 as unsigned bytes (128 * the group's input
// sum taken off); each group's scale d * (6-bit scale - 32), built in a vector for the 16 groups.
LM_AVX512_FN static inline __attribute__((always_inline)) float run_dot_iq4_xs_avx512(const unsigned char *row, int cols, const int8_t *xa, const float *xs,
                                                                                      const int32_t *xsum) {
    __m512 acc = _mm512_setzero_ps();
    __m512i m = _mm512_set1_epi8(15), grid = _mm512_broadcast_i32x4(_mm_add_epi8(_mm_loadu_si128((const __m128i *)(const void *)run_iq4_grid), _mm_set1_epi8(-128)));
    __m256i shifts = _mm256_setr_epi16(0, 2, 4, 6, 8, 10, 12, 14, 0, 2, 4, 6, 8, 10, 12, 14);
    int blocks = cols / 256;
    for (int b = 0; b < blocks; b += 2) {
        int two = b + 1 < blocks;
        __mmask16 mask = two ? 0xffff : 0x00ff;
        const unsigned char *blk[2] = {row + 136 * (size_t)b, row + 136 * (size_t)(b + two)}; // (one block: the second is the first, masked off)
        __m512i v[4];
        for (int k = 0; k < 1 + two; k++) {
            for (int line = 0; line < 136; line += 64) _mm_prefetch((const char *)blk[k] + line + LM_PREFETCH_BYTES, _MM_HINT_T0);
            for (int h = 0; h < 2; h++) {
                __m512i raw = _mm512_loadu_si512(blk[k] + 8 + 64 * h);
                __m512i lo = _mm512_shuffle_epi8(grid, _mm512_and_si512(raw, m)), hi = _mm512_shuffle_epi8(grid, _mm512_and_si512(_mm512_srli_epi16(raw, 4), m));
                const int8_t *x = xa + (size_t)(2 * (b + k) + h) * 128;
                v[2 * k + h] = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, _mm512_loadu_si512(x)), hi, _mm512_loadu_si512(x + 64));
            }
        }
        if (!two) v[2] = v[3] = _mm512_setzero_si512();
        __m512i xsums = _mm512_maskz_loadu_epi32(mask, xsum + 8 * (size_t)b);
        __m512i sums = _mm512_sub_epi32(run_reduce4x4(v), _mm512_slli_epi32(xsums, 7)); // lane i: group i % 8 of block b + i / 8
        // scale j of a block: bits 4(j % 2).. of byte 4 + j / 2 (nibbles in order), bits 2j, 2j+1 of the 16 at 2
        uint32_t low[2], high[2] = {run_u16_at(blk[0] + 2), run_u16_at(blk[1] + 2)};
        memcpy(&low[0], blk[0] + 4, 4), memcpy(&low[1], blk[1] + 4, 4);
        __m128i lows = _mm_setr_epi32((int)low[0], (int)low[1], 0, 0);
        lows = _mm_unpacklo_epi8(_mm_and_si128(lows, _mm_set1_epi8(15)), _mm_and_si128(_mm_srli_epi16(lows, 4), _mm_set1_epi8(15)));
        __m256i highs = _mm256_and_si256(_mm256_srlv_epi16(_mm256_setr_m128i(_mm_set1_epi16((short)high[0]), _mm_set1_epi16((short)high[1])), shifts), _mm256_set1_epi16(3));
        __m128i scales = _mm_or_si128(lows, _mm_slli_epi16(_mm256_cvtepi16_epi8(highs), 4));
        __m512 d = _mm512_cvtph_ps(_mm256_setr_m128i(_mm_set1_epi16((short)run_u16_at(blk[0])), _mm_set1_epi16((short)run_u16_at(blk[1]))));
        __m512 ds = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_cvtepu8_epi32(scales), _mm512_set1_epi32(32))));
        acc = _mm512_mask_add_ps(acc, mask, acc, _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(sums), ds), _mm512_maskz_loadu_ps(mask, xs + 8 * (size_t)b)));
    }
    return run_sum_lanes512(acc);
}

// Rows r0..r1 of w (a GGUF block type with a kernel here; the split-nibble types with the arranged
// input) with input token t, into out[0..r1 - r0): a loop over rows in one function per type, so the
// rows' dependency chains (sums, reduction, scaling) overlap.
LM_AVX512_FN static void run_rows_blocks_avx512(const LmMatrix *w, int r0, int r1, const LmBatch *in, int t, float *out) {
    const int8_t *xq = in->q + (size_t)t * (size_t)in->cols, *xa = in->qarranged ? in->qarranged + (size_t)t * (size_t)(in->cols + 128) : NULL;
    const float *xs = in->s + (size_t)t * (size_t)in->groups;
    const int32_t *xsum = in->xsum ? in->xsum + (size_t)t * (size_t)in->groups : NULL;
    const int32_t *xsum16 = xsum && in->xsum16 ? in->xsum16 + (size_t)t * (size_t)in->groups : NULL;
    const unsigned char *p = (const unsigned char *)w->data;
    size_t rb = w->row_bytes;
    switch (w->type) {
#define LM_ROWS(T, call) case T: for (int r = r0; r < r1; r++) out[r - r0] = call; break;
        LM_ROWS(LM_Q4_0, run_dot_nibbles_avx512(p + (size_t)r * rb, w->cols, xa, xs, xsum, LM_Q4_0))
        LM_ROWS(LM_Q4_1, run_dot_nibbles_avx512(p + (size_t)r * rb, w->cols, xa, xs, xsum, LM_Q4_1))
        LM_ROWS(LM_Q5_0, run_dot_nibbles_avx512(p + (size_t)r * rb, w->cols, xa, xs, xsum, LM_Q5_0))
        LM_ROWS(LM_Q5_1, run_dot_nibbles_avx512(p + (size_t)r * rb, w->cols, xa, xs, xsum, LM_Q5_1))
        LM_ROWS(LM_IQ4_NL, run_dot_nibbles_avx512(p + (size_t)r * rb, w->cols, xa, xs, xsum, LM_IQ4_NL))
        LM_ROWS(LM_IQ4_XS, run_dot_iq4_xs_avx512(p + (size_t)r * rb, w->cols, xa, xs, xsum))
        LM_ROWS(LM_Q4_K, run_dot_k4_avx512(p + (size_t)r * rb, w->cols, xq, xs, xsum, LM_Q4_K))
        LM_ROWS(LM_Q5_K, run_dot_k4_avx512(p + (size_t)r * rb, w->cols, xq, xs, xsum, LM_Q5_K))
        LM_ROWS(LM_Q6_K, run_dot_q6_k_avx512(p + (size_t)r * rb, w->cols, xq, xs, xsum, xsum16))
        LM_ROWS(LM_Q2_K, run_dot_k2_avx512(p + (size_t)r * rb, w->cols, xq, xs, xsum, xsum16, LM_Q2_K))
        LM_ROWS(LM_Q3_K, run_dot_k2_avx512(p + (size_t)r * rb, w->cols, xq, xs, xsum, xsum16, LM_Q3_K))
#undef LM_ROWS
    default: assert(0); break;
    }
}

// Does run_rows_blocks_avx512 take this matrix with this input?
static int run_rows_blocks_ok(const LmMatrix *w, const LmBatch *in) {
    switch (w->type) {
    case LM_Q2_K: case LM_Q3_K: case LM_Q6_K: return in->xsum && in->xsum16;
    case LM_Q4_K: case LM_Q5_K: return in->xsum != NULL;
    case LM_Q4_0: case LM_Q4_1: case LM_Q5_0: case LM_Q5_1: case LM_IQ4_NL: case LM_IQ4_XS: return in->xsum && in->qarranged;
    default: return 0;
    }
}

// Rows r0..r1 of w with input token t through the AVX-512 row kernels, into out[0..r1 - r0); 0 when
// none applies (float types, exact mode, and the block types without one go through run_row_dot).
LM_AVX512_FN static int run_rows_avx512(const LmMatrix *w, int r0, int r1, const LmBatch *in, int t, float *out) {
    if (in->q == NULL) return 0;
    if (run_int_simd_ok(w) && (w->type != LM_Q4_GROUPS || w->group_size != 32 || in->qarranged)) run_rows_int_avx512(w, r0, r1, in, t, out);
    else if (run_rows_blocks_ok(w, in)) run_rows_blocks_avx512(w, r0, r1, in, t, out);
    else return 0;
    return 1;
}

// Float matmul of rows r0..r1 (at most LM_ROW_BLOCK) for every token: the block converted to fp32
// once, then 4 rows x 4 tokens per step, each pair with run_dot_f32's 16 lanes.
LM_AVX512_TILE_FN static void run_matmul_float_block_avx512(const LmMatrix *w, int r0, int r1, const LmBatch *in, float *out, int ld) {
    int cols = w->cols, rows = r1 - r0, tail = cols % 16;
    __mmask16 tail_mask = (__mmask16)((1u << tail) - 1);
    const float *block = (const float *)w->data + (size_t)r0 * (size_t)cols;
    if (w->type != LM_F32) {
        float *converted = run_thread_scratch(in, (size_t)rows * (size_t)cols);
        if (converted == NULL) { // no working memory for this thread: the plain path computes the same values
            for (int t = 0; t < in->n; t++) for (int r = r0; r < r1; r++) out[(size_t)t * ld + r] = run_row_dot_plain(w, r, in, t);
            return;
        }
        size_t first = (size_t)r0 * (size_t)cols, count = (size_t)rows * (size_t)cols;
        for (size_t e = 0; e < count; e += 16) {
            __mmask16 mask = count - e >= 16 ? 0xffff : (__mmask16)((1u << (count - e)) - 1);
            _mm512_mask_storeu_ps(converted + e, mask, w->type == LM_F16 ? run_load16_f32(w, first + e, mask, LM_F16) : run_load16_f32(w, first + e, mask, LM_BF16));
        }
        block = converted;
    }
    for (int t0 = 0; t0 < in->n; t0 += 4) {
        int nt = in->n - t0 < 4 ? in->n - t0 : 4;
        for (int r = 0; r < rows; r += 4) {
            int nr = rows - r < 4 ? rows - r : 4;
            const float *wr[4], *xt[4];
            for (int i = 0; i < 4; i++) wr[i] = block + (size_t)(r + (i < nr ? i : 0)) * cols;
            for (int k = 0; k < 4; k++) xt[k] = in->f + (size_t)(t0 + (k < nt ? k : 0)) * in->ld;
            // 16 named accumulators (an array of them is spilled to the stack by the compiler)
            __m512 a00 = _mm512_setzero_ps(), a01 = a00, a02 = a00, a03 = a00, a10 = a00, a11 = a00, a12 = a00, a13 = a00;
            __m512 a20 = a00, a21 = a00, a22 = a00, a23 = a00, a30 = a00, a31 = a00, a32 = a00, a33 = a00;
#define LM_TILE_ROW(i, mask, load)                                                                                      \
    {                                                                                                                   \
        __m512 wv = load(mask, wr[i] + j);                                                                              \
        a##i##0 = _mm512_mask_add_ps(a##i##0, mask, a##i##0, _mm512_mul_ps(wv, x0));                                    \
        a##i##1 = _mm512_mask_add_ps(a##i##1, mask, a##i##1, _mm512_mul_ps(wv, x1));                                    \
        a##i##2 = _mm512_mask_add_ps(a##i##2, mask, a##i##2, _mm512_mul_ps(wv, x2));                                    \
        a##i##3 = _mm512_mask_add_ps(a##i##3, mask, a##i##3, _mm512_mul_ps(wv, x3));                                    \
    }
#define LM_TILE_STEP(mask)                                                                                              \
    {                                                                                                                   \
        __m512 x0 = _mm512_maskz_loadu_ps(mask, xt[0] + j), x1 = _mm512_maskz_loadu_ps(mask, xt[1] + j);               \
        __m512 x2 = _mm512_maskz_loadu_ps(mask, xt[2] + j), x3 = _mm512_maskz_loadu_ps(mask, xt[3] + j);               \
        LM_TILE_ROW(0, mask, _mm512_maskz_loadu_ps) LM_TILE_ROW(1, mask, _mm512_maskz_loadu_ps)                         \
        LM_TILE_ROW(2, mask, _mm512_maskz_loadu_ps) LM_TILE_ROW(3, mask, _mm512_maskz_loadu_ps)                         \
    }
            int j = 0;
            for (; j + 16 <= cols; j += 16) LM_TILE_STEP((__mmask16)0xffff)
            if (tail) LM_TILE_STEP(tail_mask)
#undef LM_TILE_STEP
#undef LM_TILE_ROW
            __m512 acc[4][4] = {{a00, a01, a02, a03}, {a10, a11, a12, a13}, {a20, a21, a22, a23}, {a30, a31, a32, a33}};
            for (int i = 0; i < nr; i++)
                for (int k = 0; k < nt; k++) out[(size_t)(t0 + k) * ld + (size_t)(r0 + r + i)] = run_sum_lanes512(acc[i][k]);
        }
    }
}

// A row's result in a prompt tile: run_sum_lanes of 16 vectors of partial sums (tokens across each
// vector), for every token at once, stored at `to` (16 tokens).
LM_AVX512_FN static inline void run_sum_parts512(__m512 *part, float *to) {
    for (int half = 8; half > 0; half /= 2)
        for (int k = 0; k < half; k++) part[k] = _mm512_add_ps(part[k], part[k + half]);
    _mm512_storeu_ps(to, part[0]);
}

// Integer matmul of rows r0..r1 (at most LM_ROW_BLOCK) for every token, 16 tokens per vector:
// in->packed holds the inputs as u8 = x + 128 with tokens in the lanes, so one VNNI instruction
// multiplies 4 weights (broadcast) with 4 values of 16 tokens. Subtracting 128 * (the group's
// weight sum) leaves each token's exact int32 group sum; the float steps follow run_dot_int's order.
LM_AVX512_FN static void run_matmul_int_block_avx512(const LmMatrix *w, int r0, int r1, const LmBatch *in, float *out, int ld) {
    int cols = w->cols, gs = w->group_size, groups = cols / gs, rows = r1 - r0;
    size_t wb_floats = ((size_t)LM_ROW_BLOCK * (size_t)cols + 3) / 4; // the int8 block, in floats' room
    float results[LM_ROW_BLOCK * 16]; // (rows, 16 tokens) a tile's results
    assert(rows <= LM_ROW_BLOCK);
    float *room = run_thread_scratch(in, wb_floats + 2 * (size_t)LM_ROW_BLOCK * (size_t)groups);
    if (room == NULL) { // no working memory for this thread: the plain path computes the same values
        for (int t = 0; t < in->n; t++) for (int r = r0; r < r1; r++) out[(size_t)t * ld + r] = run_row_dot_plain(w, r, in, t);
        return;
    }
    int8_t *wb = (int8_t *)(void *)room;
    int32_t *wsum = (int32_t *)(void *)(room + wb_floats);
    float *ws = room + wb_floats + (size_t)LM_ROW_BLOCK * (size_t)groups;
    for (int r = 0; r < rows; r++) { // the block's weights as int8, their group sums and scales
        size_t row_group = (size_t)(r0 + r) * (size_t)groups;
        for (int g = 0; g < groups; g++) {
            int8_t *dst = wb + (size_t)r * cols + (size_t)g * gs;
            if (w->type == LM_Q8_GROUPS) memcpy(dst, (const int8_t *)w->data + (row_group + (size_t)g) * (size_t)gs, (size_t)gs);
            else run_unpack_q4(dst, w, row_group + (size_t)g);
            int32_t sum = 0;
            for (int k = 0; k < gs; k++) sum += dst[k];
            wsum[r * groups + g] = sum;
            ws[r * groups + g] = run_group_scale(w, row_group + (size_t)g);
        }
    }
    for (int tile = 0; tile * 16 < in->n; tile++) {
        int nt = in->n - tile * 16 < 16 ? in->n - tile * 16 : 16;
        const unsigned char *xp = in->packed + (size_t)tile * (size_t)cols * 16;
        const float *xsp = in->spacked + (size_t)tile * (size_t)in->groups * 16;
        for (int r = 0; r < rows; r += 4) {
            int nr = rows - r < 4 ? rows - r : 4;
            __m512 part[4][16]; // run_dot_int's 16 lanes for each row, here with tokens across the vector
            for (int i = 0; i < 4; i++) for (int k = 0; k < 16; k++) part[i][k] = _mm512_setzero_ps();
            for (int g = 0; g < groups; g++) {
                __m512i isum[4];
                const int8_t *wr[4];
                for (int i = 0; i < 4; i++) {
                    int ri = r + (i < nr ? i : 0);
                    isum[i] = _mm512_set1_epi32(-128 * wsum[ri * groups + g]);
                    wr[i] = wb + (size_t)ri * cols + (size_t)g * gs;
                }
                const unsigned char *xg = xp + (size_t)g * gs * 16;
                for (int k = 0; k < gs; k += 4) {
                    __m512i xv = _mm512_loadu_si512(xg + (size_t)k * 16);
                    for (int i = 0; i < 4; i++) {
                        int32_t w4;
                        memcpy(&w4, wr[i] + k, 4);
                        isum[i] = _mm512_dpbusd_epi32(isum[i], xv, _mm512_set1_epi32(w4));
                    }
                }
                __m512 xs = _mm512_loadu_ps(xsp + (size_t)g * 16);
                for (int i = 0; i < 4; i++) {
                    int ri = r + (i < nr ? i : 0);
                    __m512 p = _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(isum[i]), _mm512_set1_ps(ws[ri * groups + g])), xs);
                    part[i][g % 16] = _mm512_add_ps(part[i][g % 16], p);
                }
            }
            for (int i = 0; i < nr; i++) run_sum_parts512(part[i], results + (size_t)(r + i) * 16);
        }
        run_store_block(results, rows, nt, 16, out + (size_t)(tile * 16) * ld + (size_t)r0, ld);
    }
}

// run_matmul_blocks_block_avx512's steps over the unpacked rows, per tile of 16 tokens and 4 rows:
// first the int32 sums of each run of `run` values (16 or 32) for the 4 rows by VNNI, exact, into
// `sums`; then, a row at a time, the float terms in run_dot_blocks' order with that row's 16 lanes in
// registers (as a 4 x 16 array they had lived on the stack), so the integer chains do not wait
// on float steps either. run and has_min are constants at each call (the function is inlined into
// each; as a plain static inline gcc had kept one copy that tested them at run time).
LM_AVX512_FN static inline __attribute__((always_inline)) void run_blocks_tiles_avx512(const LmBatch *in, int rows, int cols, const int8_t *wb,
                                                                                      const float *wd, const float *wm, const int32_t *wsum, int32_t *xrun,
                                                                                      int32_t *sums, float *out, int ld, int r0, const int run, const int has_min) {
    int runs = cols / 16, groups = cols / 32, per_group = 32 / run;
    float results[LM_ROW_BLOCK * 16]; // (rows, 16 tokens) a tile's results
    assert(rows <= LM_ROW_BLOCK);
    for (int tile = 0; tile * 16 < in->n; tile++) {
        int nt = in->n - tile * 16 < 16 ? in->n - tile * 16 : 16;
        const unsigned char *xp = in->packed + (size_t)tile * (size_t)cols * 16;
        const float *xsp = in->spacked + (size_t)tile * (size_t)in->groups * 16;
        if (has_min)
            for (int j = 0; j < runs; j++) { // sum(x + 128) - 128 * 16 per token
                __m512i acc = _mm512_set1_epi32(-128 * 16);
                for (int k = 0; k < 16; k += 4) acc = _mm512_dpbusd_epi32(acc, _mm512_loadu_si512(xp + (size_t)(16 * j + k) * 16), _mm512_set1_epi8(1));
                _mm512_storeu_si512(xrun + (size_t)j * 16, acc);
            }
        for (int r = 0; r < rows; r += 4) {
            int nr = rows - r < 4 ? rows - r : 4;
            const int8_t *wr[4];
            size_t at[4];
            for (int i = 0; i < 4; i++) {
                int ri = r + (i < nr ? i : 0);
                wr[i] = wb + (size_t)ri * (size_t)cols;
                at[i] = (size_t)ri * (size_t)runs;
            }
            for (int g = 0; g < groups; g++) { // vector (i * groups + g) * per_group + h of sums: sum((x + 128) * q) - 128 * sum(q)
                __m512i isum[4][2]; // two chains per row (integer sums: any order gives the same)
                for (int i = 0; i < 4; i++) {
                    isum[i][0] = _mm512_set1_epi32(-128 * (run == 32 ? wsum[at[i] + 2 * g] + wsum[at[i] + 2 * g + 1] : wsum[at[i] + 2 * g]));
                    isum[i][1] = run == 32 ? _mm512_setzero_si512() : _mm512_set1_epi32(-128 * wsum[at[i] + 2 * g + 1]);
                }
                const unsigned char *xg = xp + (size_t)g * 32 * 16;
                for (int k = 0; k < 32; k += 4) {
                    __m512i xv = _mm512_loadu_si512(xg + (size_t)k * 16);
                    int h = run == 32 ? k / 4 % 2 : k / 16;
                    for (int i = 0; i < 4; i++) {
                        int32_t w4;
                        memcpy(&w4, wr[i] + 32 * g + k, 4);
                        isum[i][h] = _mm512_dpbusd_epi32(isum[i][h], xv, _mm512_set1_epi32(w4));
                    }
                }
                for (int i = 0; i < 4; i++) {
                    int32_t *s = sums + ((size_t)i * (size_t)groups + (size_t)g) * (size_t)per_group * 16;
                    if (run == 32) _mm512_storeu_si512(s, _mm512_add_epi32(isum[i][0], isum[i][1]));
                    else _mm512_storeu_si512(s, isum[i][0]), _mm512_storeu_si512(s + 16, isum[i][1]);
                }
            }
            for (int i = 0; i < nr; i++) {
                __m512 part[16]; // run_dot_blocks' 16 lanes for this row, with tokens across the vector
                for (int k = 0; k < 16; k++) part[k] = _mm512_setzero_ps();
                const int32_t *s = sums + (size_t)i * (size_t)groups * (size_t)per_group * 16;
                for (int g16 = 0; g16 < groups; g16 += 16) {
#pragma GCC unroll 16
                    for (int lane = 0; lane < 16; lane++) { // (unrolled: part[lane] stays in a register)
                        int g = g16 + lane;
                        if (g >= groups) break;
                        __m512 xs = _mm512_loadu_ps(xsp + (size_t)g * 16), wsum_g = _mm512_setzero_ps();
                        for (int h = 0; h < per_group; h++) { // the runs of this group, in order
                            __m512 term = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_loadu_si512(s + ((size_t)g * per_group + h) * 16)),
                                                        _mm512_set1_ps(wd[at[i] + 2 * (size_t)g + (size_t)h]));
                            if (has_min) {
                                __m512i lo = _mm512_loadu_si512(xrun + (size_t)(2 * g + h) * 16);
                                __m512 xsum = run == 32 ? _mm512_cvtepi32_ps(_mm512_add_epi32(lo, _mm512_loadu_si512(xrun + (size_t)(2 * g + 1) * 16)))
                                                        : _mm512_cvtepi32_ps(lo);
                                term = _mm512_sub_ps(term, _mm512_mul_ps(xsum, _mm512_set1_ps(wm[at[i] + 2 * (size_t)g + (size_t)h])));
                            }
                            wsum_g = h == 0 ? term : _mm512_add_ps(wsum_g, term);
                        }
                        part[lane] = _mm512_add_ps(part[lane], _mm512_mul_ps(wsum_g, xs));
                    }
                }
                run_sum_parts512(part, results + (size_t)(r + i) * 16);
            }
        }
        run_store_block(results, rows, nt, 16, out + (size_t)(tile * 16) * ld + (size_t)r0, ld);
    }
}

// GGUF's block types for rows r0..r1 (at most LM_ROW_BLOCK) and every token: each row's blocks
// unpacked once into the thread's scratch (int8 values; per 16 values d, m and the int sum of q),
// then run_blocks_tiles_avx512: the same bits as the row dots.
LM_AVX512_FN static void run_matmul_blocks_block_avx512(const LmMatrix *w, int r0, int r1, const LmBatch *in, float *out, int ld) {
    const LmTypeTraits *type = &run_types[w->type];
    int cols = w->cols, rows = r1 - r0, runs = cols / 16, per_block = type->block_values, run = type->scale_values;
    assert(type->unpack && cols % per_block == 0 && in->groups * 32 == cols && (run == 16 || run == 32));
    size_t wb_floats = ((size_t)LM_ROW_BLOCK * (size_t)cols + 3) / 4, per_rows = (size_t)LM_ROW_BLOCK * (size_t)runs;
    float *room = run_thread_scratch(in, wb_floats + 3 * per_rows + 16 * (size_t)runs + 4 * 16 * (size_t)runs);
    if (room == NULL) { // no working memory for this thread: the plain path computes the same values
        for (int t = 0; t < in->n; t++) for (int r = r0; r < r1; r++) out[(size_t)t * ld + r] = run_row_dot_plain(w, r, in, t);
        return;
    }
    int8_t *wb = (int8_t *)(void *)room;                          // (rows, cols) the values
    float *wd = room + wb_floats, *wm = wd + per_rows;            // (rows, runs) d and m of each 16 values
    int32_t *wsum = (int32_t *)(void *)(wm + per_rows);           // (rows, runs) the sum of each 16 values
    int32_t *xrun = wsum + per_rows;                              // (runs, 16 tokens) the sum of each 16 inputs
    int32_t *sums = xrun + 16 * (size_t)runs;                     // (4 rows, runs, 16 tokens) at most: the tiles' int sums
    LmBlock u;
    for (int r = 0; r < rows; r++) {
        const unsigned char *p = (const unsigned char *)w->data + (size_t)(r0 + r) * w->row_bytes;
        for (int b = 0; b < cols / per_block; b++) {
            run_unpack_avx2(w->type, p + (size_t)b * (size_t)type->block_bytes, &u);
            memcpy(wb + (size_t)r * cols + (size_t)b * per_block, u.q, (size_t)per_block);
            for (int s = 0; s < per_block / 16; s++) {
                size_t at = (size_t)r * runs + (size_t)(b * per_block / 16 + s);
                int32_t sum = 0;
                for (int k = 0; k < 16; k++) sum += u.q[16 * s + k];
                wd[at] = u.d[s], wm[at] = u.m[s], wsum[at] = sum;
            }
        }
    }
    if (run == 32 && type->has_min) run_blocks_tiles_avx512(in, rows, cols, wb, wd, wm, wsum, xrun, sums, out, ld, r0, 32, 1);
    else if (run == 32) run_blocks_tiles_avx512(in, rows, cols, wb, wd, wm, wsum, xrun, sums, out, ld, r0, 32, 0);
    else if (type->has_min) run_blocks_tiles_avx512(in, rows, cols, wb, wd, wm, wsum, xrun, sums, out, ld, r0, 16, 1);
    else run_blocks_tiles_avx512(in, rows, cols, wb, wd, wm, wsum, xrun, sums, out, ld, r0, 16, 0);
}

// The packed input for run_matmul_int_block: per 16 tokens, the values + 128 in groups of 4 per token,
// and the scales with tokens in the lanes. Missing tokens of the last tile are zeros (x = 0).
LM_AVX512_FN static void run_pack_batch(LmBatch *b, int threads) {
    (void)threads; // (without OpenMP)
    int cols = b->cols, tiles = (b->n + 15) / 16;
    LM_PARALLEL_FOR_IF(threads, b->n >= 16)
    for (int tile = 0; tile < tiles; tile++) {
        unsigned char *xp = b->packed + (size_t)tile * (size_t)cols * 16;
        float *sp = b->spacked + (size_t)tile * (size_t)b->groups * 16;
        for (int k = 0; k < 16; k++) {
            int t = tile * 16 + k;
            const int8_t *q = b->q + (size_t)t * (size_t)cols;
            for (int j = 0; j < cols; j += 4) { // (q + 128 as a byte is q ^ 0x80; cols is a multiple of 4)
                uint32_t four = 0;
                if (t < b->n) memcpy(&four, q + j, 4);
                four ^= 0x80808080u;
                memcpy(xp + (size_t)(j / 4) * 64 + (size_t)k * 4, &four, 4);
            }
            for (int g = 0; g < b->groups; g++) sp[(size_t)g * 16 + (size_t)k] = t < b->n ? b->s[(size_t)t * b->groups + (size_t)g] : 0.0f;
        }
    }
}
// ---- Attention over the KV cache (run_tile_scores_plain, run_tile_values_plain and the softmax of
// run_attention_softmax, 16 lanes).

// Key dimension d of a tile's 16 positions as floats (type a constant, so the switch folds away).
LM_AVX512_FN static inline __m512 run_key_dim16(const unsigned char *tile, int d, LmWeightType type) {
    switch (type) {
    case LM_F16: return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)(tile + 32 * (size_t)d)));
    case LM_BF16:
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(const void *)(tile + 32 * (size_t)d))), 16));
    case LM_Q8_0: return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(const void *)(tile + 16 * (size_t)d))));
    default: return _mm512_loadu_ps((const float *)(const void *)tile + 16 * (size_t)d);
    }
}

// Four queries at a time (a missing one repeats the last, unstored), each key dimension loaded once.
// Four queries at a time (a missing one repeats the last, unstored) against `tiles` (1 or 2, a constant
// where inlined) consecutive tiles: each key dimension loaded once for the four, and with two tiles
// eight sums in flight, which the adds' latency needs. Q8_0: VNNI's vpdpbusd multiplies four dims of
// 16 positions (as key + 128, unsigned) by four of the query per step; 128 * the query's group sum
// comes off after, so the int32 sums are exact.
LM_AVX512_FN static inline void run_tile_scores_avx512_typed(const unsigned char *tile, size_t tile_bytes, int tiles, int hs, const LmQuery *q, int nq,
                                                             float *const *scores, LmWeightType type) {
    for (int r0 = 0; r0 < nq; r0 += 4) {
        const LmQuery *qr[4];
        for (int i = 0; i < 4; i++) qr[i] = &q[r0 + i < nq ? r0 + i : nq - 1];
        __m512 acc[4][2];
        for (int i = 0; i < 4; i++) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
        if (type == LM_Q8_0) {
            const __m512i offset = _mm512_set1_epi8((char)0x80);
            for (int g = 0; g < hs / 32; g++) {
                __m512i isum[4][2];
                for (int i = 0; i < 4; i++) isum[i][0] = isum[i][1] = _mm512_setzero_si512();
                for (int d4 = 8 * g; d4 < 8 * g + 8; d4++) // (four dims per step)
                    for (int j = 0; j < tiles; j++) {
                        __m512i k = _mm512_xor_si512(_mm512_loadu_si512((const void *)(tile + j * tile_bytes + 64 * (size_t)d4)), offset);
                        for (int i = 0; i < 4; i++) {
                            int32_t four;
                            memcpy(&four, qr[i]->q + 4 * d4, 4);
                            isum[i][j] = _mm512_dpbusd_epi32(isum[i][j], k, _mm512_set1_epi32(four));
                        }
                    }
                for (int j = 0; j < tiles; j++) {
                    __m512 kscale = run_key_dim16(tile + j * tile_bytes + (size_t)hs * LM_KEY_TILE, g, LM_F16);
                    for (int i = 0; i < 4; i++) {
                        __m512i exact = _mm512_sub_epi32(isum[i][j], _mm512_set1_epi32(128 * qr[i]->sum[g]));
                        __m512 term = _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(exact), kscale), _mm512_set1_ps(qr[i]->scale[g]));
                        acc[i][j] = _mm512_add_ps(acc[i][j], term);
                    }
                }
            }
        } else {
            for (int d = 0; d < hs; d++)
                for (int j = 0; j < tiles; j++) {
                    __m512 k = run_key_dim16(tile + j * tile_bytes, d, type);
                    for (int i = 0; i < 4; i++) acc[i][j] = _mm512_fmadd_ps(_mm512_set1_ps(qr[i]->f[d]), k, acc[i][j]);
                }
        }
        for (int i = 0; i < 4 && r0 + i < nq; i++)
            for (int j = 0; j < tiles; j++) _mm512_storeu_ps(scores[r0 + i] + LM_KEY_TILE * j, acc[i][j]);
    }
}

LM_AVX512_FN static void run_tile_scores_avx512(const unsigned char *tile, size_t tile_bytes, int tiles, LmWeightType type, int hs, const LmQuery *q,
                                                int nq, float *const *scores) {
#define LM_SCORES(T) tiles == 2 ? run_tile_scores_avx512_typed(tile, tile_bytes, 2, hs, q, nq, scores, T) : run_tile_scores_avx512_typed(tile, tile_bytes, 1, hs, q, nq, scores, T)
    switch (type) {
    case LM_F16: LM_SCORES(LM_F16); break;
    case LM_BF16: LM_SCORES(LM_BF16); break;
    case LM_Q8_0: LM_SCORES(LM_Q8_0); break;
    default: LM_SCORES(LM_F32); break;
    }
#undef LM_SCORES
}

// Sixteen values from value e of a row as floats (float types: masked; Q8_0 rows: e a multiple of 16,
// the integers alone, their block's scale going into the weight).
LM_AVX512_FN static inline __m512 run_value16(const unsigned char *row, int e, __mmask16 mask, LmWeightType type) {
    switch (type) {
    case LM_F16: return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, (const uint16_t *)(const void *)row + e));
    case LM_BF16: return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask, (const uint16_t *)(const void *)row + e)), 16));
    case LM_Q8_0: return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(const void *)(row + 34 * (size_t)(e / 32) + 2 + e % 32))));
    default: return _mm512_maskz_loadu_ps(mask, (const float *)(const void *)row + e);
    }
}

// The weights of Q8_0 rows 0..count-1 (count <= LM_VALUE_ROWS) for blocks first_block and first_block + 1:
// w[i][b][t] = pr[i][t] * row t's scale of block first_block + b, 16 rows' scales per gather, so the
// per-row work is the integers' conversion and the fused multiply-adds alone.
LM_AVX512_FN static inline void run_q8_weights_avx512(const unsigned char *rows, size_t row_bytes, int count, int first_block, const float *const *pr,
                                                      float w[4][2][LM_VALUE_ROWS]) {
    assert(count <= LM_VALUE_ROWS);
    const __m512i at = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), _mm512_set1_epi32((int)row_bytes));
    for (int t0 = 0; t0 < count; t0 += 16) {
        __mmask16 live = count - t0 >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (count - t0)) - 1);
        for (int b = 0; b < 2; b++) { // (each gathered dword: the scale in its low half, then two integers)
            const unsigned char *base = rows + (size_t)t0 * row_bytes + 34 * (size_t)(first_block + b);
            __m512 d = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_mask_i32gather_epi32(_mm512_setzero_si512(), live, at, base, 1)));
            for (int i = 0; i < 4; i++) _mm512_storeu_ps(&w[i][b][t0], _mm512_mul_ps(_mm512_maskz_loadu_ps(live, pr[i] + t0), d));
        }
    }
}

// Values e0..e0+63 for four queries (stored for the first n), in registers.
LM_AVX512_FN static inline void run_values64_avx512(const unsigned char *rows, size_t row_bytes, int count, int e0, const float *const *pr,
                                                    float *const *outr, int n, LmWeightType type) {
    float w[4][2][LM_VALUE_ROWS]; // (Q8_0: the weights times the scales of the two blocks)
    if (type == LM_Q8_0) run_q8_weights_avx512(rows, row_bytes, count, e0 / 32, pr, w);
    __m512 o0[4], o1[4], o2[4], o3[4];
    for (int v = 0; v < 4; v++) {
        o0[v] = _mm512_loadu_ps(outr[0] + e0 + 16 * v); o1[v] = _mm512_loadu_ps(outr[1] + e0 + 16 * v);
        o2[v] = _mm512_loadu_ps(outr[2] + e0 + 16 * v); o3[v] = _mm512_loadu_ps(outr[3] + e0 + 16 * v);
    }
    for (int t = 0; t < count; t++) {
        const unsigned char *row = rows + (size_t)t * row_bytes;
        __m512 value[4];
        for (int v = 0; v < 4; v++) value[v] = run_value16(row, e0 + 16 * v, (__mmask16)0xffff, type);
#define LM_VALUES_ROW(o, i)                                                                                                        \
    {                                                                                                                              \
        __m512 wa = _mm512_set1_ps(type == LM_Q8_0 ? w[i][0][t] : pr[i][t]), wb = type == LM_Q8_0 ? _mm512_set1_ps(w[i][1][t]) : wa; \
        o[0] = _mm512_fmadd_ps(wa, value[0], o[0]); o[1] = _mm512_fmadd_ps(wa, value[1], o[1]);                                    \
        o[2] = _mm512_fmadd_ps(wb, value[2], o[2]); o[3] = _mm512_fmadd_ps(wb, value[3], o[3]);                                    \
    }
        LM_VALUES_ROW(o0, 0) LM_VALUES_ROW(o1, 1) LM_VALUES_ROW(o2, 2) LM_VALUES_ROW(o3, 3)
#undef LM_VALUES_ROW
    }
    for (int v = 0; v < 4; v++) {
        _mm512_storeu_ps(outr[0] + e0 + 16 * v, o0[v]);
        if (n > 1) _mm512_storeu_ps(outr[1] + e0 + 16 * v, o1[v]);
        if (n > 2) _mm512_storeu_ps(outr[2] + e0 + 16 * v, o2[v]);
        if (n > 3) _mm512_storeu_ps(outr[3] + e0 + 16 * v, o3[v]);
    }
}

// Four queries at a time (a missing one repeats the last, unstored), 64 of their sums each in
// registers, carried over the count positions in order: each row is read once for the four.
LM_AVX512_FN static inline void run_tile_values_avx512_typed(const unsigned char *rows, size_t row_bytes, int count, int hs, const float *const *p, int nq,
                                                             float *const *out, LmWeightType type) {
    for (int r0 = 0; r0 < nq; r0 += 4) {
        const float *pr[4];
        float *outr[4];
        for (int i = 0; i < 4; i++) { pr[i] = p[r0 + i < nq ? r0 + i : nq - 1]; outr[i] = out[r0 + i < nq ? r0 + i : nq - 1]; }
        for (int e0 = 0; e0 < hs; e0 += 64) {
            if (hs - e0 >= 64) { // (the sums in registers: every count a constant)
                run_values64_avx512(rows, row_bytes, count, e0, pr, outr, r0 + 4 <= nq ? 4 : nq - r0, type);
                continue;
            }
            __m512 o[4][4];
            __mmask16 mask[4];
            int nv = (hs - e0 + 15) / 16;
            for (int v = 0; v < 4; v++) {
                int left = hs - e0 - 16 * v;
                mask[v] = left >= 16 ? (__mmask16)0xffff : left > 0 ? (__mmask16)((1u << left) - 1) : 0;
                for (int i = 0; i < 4; i++) o[i][v] = _mm512_maskz_loadu_ps(mask[v], outr[i] + e0 + 16 * v);
            }
            for (int t = 0; t < count; t++) {
                const unsigned char *row = rows + (size_t)t * row_bytes;
                __m512 value[4], scale[4];
                for (int v = 0; v < nv; v++) {
                    value[v] = run_value16(row, e0 + 16 * v, mask[v], type);
                    scale[v] = type == LM_Q8_0 ? _mm512_set1_ps(_cvtsh_ss(run_u16_at(row + 34 * (size_t)((e0 + 16 * v) / 32)))) : _mm512_set1_ps(1.0f);
                }
                for (int i = 0; i < 4; i++) {
                    __m512 w = _mm512_set1_ps(pr[i][t]);
                    for (int v = 0; v < nv; v++) o[i][v] = _mm512_fmadd_ps(type == LM_Q8_0 ? _mm512_mul_ps(w, scale[v]) : w, value[v], o[i][v]);
                }
            }
            for (int i = 0; i < 4 && r0 + i < nq; i++)
                for (int v = 0; v < nv; v++) _mm512_mask_storeu_ps(outr[i] + e0 + 16 * v, mask[v], o[i][v]);
        }
    }
}

LM_AVX512_FN static void run_tile_values_avx512(const unsigned char *rows, size_t row_bytes, int count, LmWeightType type, int hs, const float *const *p, int nq,
                                                float *const *out) {
    switch (type) {
    case LM_F16: run_tile_values_avx512_typed(rows, row_bytes, count, hs, p, nq, out, LM_F16); break;
    case LM_BF16: run_tile_values_avx512_typed(rows, row_bytes, count, hs, p, nq, out, LM_BF16); break;
    case LM_Q8_0: run_tile_values_avx512_typed(rows, row_bytes, count, hs, p, nq, out, LM_Q8_0); break;
    default: run_tile_values_avx512_typed(rows, row_bytes, count, hs, p, nq, out, LM_F32); break;
    }
}
// run_exp in 16 lanes: the same steps (a multiply, then an add; never fused), so the same bits.
LM_AVX512_FN static inline __m512 run_exp16(__m512 x) {
    x = _mm512_max_ps(_mm512_set1_ps(-87.0f), _mm512_min_ps(_mm512_set1_ps(88.0f), x)); // (as run_exp's: NaN stays NaN)
    __m512 t = _mm512_add_ps(_mm512_mul_ps(x, _mm512_set1_ps(run_exp_c[0])), _mm512_set1_ps(run_exp_c[1]));
    __m512 n = _mm512_sub_ps(t, _mm512_set1_ps(run_exp_c[1]));
    __m512i scale_bits = _mm512_slli_epi32(_mm512_add_epi32(_mm512_sub_epi32(_mm512_castps_si512(t), _mm512_set1_epi32(0x4b400000)), _mm512_set1_epi32(127)), 23);
    __m512 r = _mm512_sub_ps(_mm512_sub_ps(x, _mm512_mul_ps(n, _mm512_set1_ps(run_exp_c[2]))), _mm512_mul_ps(n, _mm512_set1_ps(run_exp_c[3])));
    __m512 y = _mm512_add_ps(_mm512_mul_ps(_mm512_set1_ps(run_exp_c[4]), r), _mm512_set1_ps(run_exp_c[5]));
    for (int k = 6; k < 10; k++) y = _mm512_add_ps(_mm512_mul_ps(y, r), _mm512_set1_ps(run_exp_c[k]));
    y = _mm512_add_ps(_mm512_add_ps(_mm512_mul_ps(_mm512_mul_ps(y, r), r), r), _mm512_set1_ps(1.0f));
    return _mm512_mul_ps(y, _mm512_castsi512_ps(scale_bits));
}

// run_attention_softmax without a soft cap, 16 lanes per vector in three passes (the scores scaled
// with their lanes' maximum; run_exp of each less the maximum with the lanes' sums; the division):
// the same operations, so the same bits.
LM_AVX512_FN static void run_attention_softmax_avx512(float *x, int n, float scale) {
    const __m512 vscale = _mm512_set1_ps(scale);
    __m512 lanes = _mm512_set1_ps(x[0] * scale);
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 v = _mm512_mul_ps(_mm512_loadu_ps(x + i), vscale);
        _mm512_storeu_ps(x + i, v);
        lanes = _mm512_max_ps(v, lanes); // (as run_max's lanes)
    }
    float lane[16], sums[16];
    _mm512_storeu_ps(lane, lanes);
    for (; i < n; i++) { x[i] *= scale; lane[0] = x[i] > lane[0] ? x[i] : lane[0]; }
    float max_val = lane[0];
    for (int k = 1; k < 16; k++) max_val = lane[k] > max_val ? lane[k] : max_val;
    const __m512 vmax = _mm512_set1_ps(max_val);
    __m512 acc = _mm512_setzero_ps();
    for (i = 0; i + 16 <= n; i += 16) {
        __m512 e = run_exp16(_mm512_sub_ps(_mm512_loadu_ps(x + i), vmax));
        _mm512_storeu_ps(x + i, e);
        acc = _mm512_add_ps(acc, e);
    }
    _mm512_storeu_ps(sums, acc);
    for (int k = 0; i + k < n; k++) { x[i + k] = run_exp(x[i + k] - max_val); sums[k] += x[i + k]; }
    float sum = run_sum_lanes(sums);
    const __m512 vsum = _mm512_set1_ps(sum);
    for (i = 0; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, _mm512_div_ps(_mm512_loadu_ps(x + i), vsum));
    for (; i < n; i++) x[i] /= sum;
}
#endif // LM_X86 (AVX-512)

#if LM_X86
// ---- AVX2 versions: 8 lanes per vector, so run_dot_*'s 16 lanes are two vectors (lanes 0-7 and
// 8-15); the same operations in the same order, so the same bits. For CPUs without AVX-512.

// run_sum_lanes of lanes lo (0-7) and hi (8-15): k + k+8, then k + k+4, k + k+2, k + k+1.
LM_AVX2_FN static inline __attribute__((always_inline)) float run_sum_lanes256(__m256 lo, __m256 hi) {
    __m256 a = _mm256_add_ps(lo, hi);
    __m128 b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    __m128 c = _mm_add_ps(b, _mm_movehl_ps(b, b));
    return _mm_cvtss_f32(_mm_add_ss(c, _mm_shuffle_ps(c, c, 1)));
}

// Eight weights from element e of float-type data as floats (type a constant, so the switch folds).
LM_AVX2_FN static inline __attribute__((always_inline)) __m256 run_load8_f32(const void *data, size_t e, LmWeightType type) {
    switch (type) {
    case LM_F16: return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)((const uint16_t *)data + e)));
    case LM_BF16:
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(const void *)((const uint16_t *)data + e))), 16));
    default: return _mm256_loadu_ps((const float *)data + e);
    }
}

// run_dot_f32/f16/bf16 of row `row` of a float matrix with x.
LM_AVX2_FN static inline float run_dot_float_avx2_typed(const LmMatrix *w, int row, const float *x, LmWeightType type) {
    int n = w->cols, j = 0;
    size_t start = (size_t)row * (size_t)n;
    __m256 lo = _mm256_setzero_ps(), hi = lo;
    for (; j + 16 <= n; j += 16) {
        lo = _mm256_add_ps(lo, _mm256_mul_ps(run_load8_f32(w->data, start + (size_t)j, type), _mm256_loadu_ps(x + j)));
        hi = _mm256_add_ps(hi, _mm256_mul_ps(run_load8_f32(w->data, start + (size_t)j + 8, type), _mm256_loadu_ps(x + j + 8)));
    }
    if (j < n) { // the last lanes one by one, as the plain loop
        float acc[16];
        _mm256_storeu_ps(acc, lo);
        _mm256_storeu_ps(acc + 8, hi);
        for (int k = 0; j + k < n; k++) acc[k] += run_weight_f32(w->data, start + (size_t)(j + k), type) * x[j + k];
        lo = _mm256_loadu_ps(acc);
        hi = _mm256_loadu_ps(acc + 8);
    }
    return run_sum_lanes256(lo, hi);
}

LM_AVX2_FN static float run_dot_float_avx2(const LmMatrix *w, int row, const float *x) {
    switch (w->type) { // one specialized loop per type
    case LM_F16: return run_dot_float_avx2_typed(w, row, x, LM_F16);
    case LM_BF16: return run_dot_float_avx2_typed(w, row, x, LM_BF16);
    default: return run_dot_float_avx2_typed(w, row, x, LM_F32);
    }
}

// Float matmul of rows r0..r1 for every token: tiles of 4 rows x 3 tokens, each pair with
// run_dot_f32's 16 lanes; the 16 lanes are two independent sets (lanes 0-7, 8-15), taken one pass
// each so that the 12 accumulators of a pass stay in registers.
LM_AVX2_TILE_FN static inline void run_matmul_float_avx2_typed(const LmMatrix *w, int r0, int r1, const LmBatch *in, float *out, int ld,
                                                         LmWeightType type) {
    int cols = w->cols, full = cols / 16 * 16;
    for (int t0 = 0; t0 < in->n; t0 += 3) {
        int nt = in->n - t0 < 3 ? in->n - t0 : 3;
        for (int r = r0; r < r1; r += 4) {
            int nr = r1 - r < 4 ? r1 - r : 4;
            size_t wr[4];
            const float *xt[3];
            for (int i = 0; i < 4; i++) wr[i] = (size_t)(r + (i < nr ? i : 0)) * (size_t)cols;
            for (int k = 0; k < 3; k++) xt[k] = in->f + (size_t)(t0 + (k < nt ? k : 0)) * (size_t)in->ld;
            float lanes[4][3][16];
            for (int half = 0; half < 2; half++) {
                __m256 a[4][3];
                for (int i = 0; i < 4; i++) for (int k = 0; k < 3; k++) a[i][k] = _mm256_setzero_ps();
                for (int j = 8 * half; j < full; j += 16) {
                    __m256 x0 = _mm256_loadu_ps(xt[0] + j), x1 = _mm256_loadu_ps(xt[1] + j), x2 = _mm256_loadu_ps(xt[2] + j);
                    for (int i = 0; i < 4; i++) {
                        __m256 wv = run_load8_f32(w->data, wr[i] + (size_t)j, type);
                        a[i][0] = _mm256_add_ps(a[i][0], _mm256_mul_ps(wv, x0));
                        a[i][1] = _mm256_add_ps(a[i][1], _mm256_mul_ps(wv, x1));
                        a[i][2] = _mm256_add_ps(a[i][2], _mm256_mul_ps(wv, x2));
                    }
                }
                for (int i = 0; i < 4; i++) for (int k = 0; k < 3; k++) _mm256_storeu_ps(lanes[i][k] + 8 * half, a[i][k]);
            }
            for (int i = 0; i < nr; i++)
                for (int k = 0; k < nt; k++) {
                    float *acc = lanes[i][k];
                    for (int j = full; j < cols; j++) acc[j - full] += run_weight_f32(w->data, wr[i] + (size_t)j, type) * xt[k][j];
                    out[(size_t)(t0 + k) * (size_t)ld + (size_t)(r + i)] = run_sum_lanes256(_mm256_loadu_ps(acc), _mm256_loadu_ps(acc + 8));
                }
        }
    }
}

LM_AVX2_TILE_FN static void run_matmul_float_avx2(const LmMatrix *w, int r0, int r1, const LmBatch *in, float *out, int ld) {
    switch (w->type) {
    case LM_F16: run_matmul_float_avx2_typed(w, r0, r1, in, out, ld, LM_F16); break;
    case LM_BF16: run_matmul_float_avx2_typed(w, r0, r1, in, out, ld, LM_BF16); break;
    default: run_matmul_float_avx2_typed(w, r0, r1, in, out, ld, LM_F32); break;
    }
}

// Four bytes at p in every int32 lane.
LM_AVX2_FN static inline __attribute__((always_inline)) __m256i run_u32_bcast(const unsigned char *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}

// AVX-VNNI's vpdpbusd for four rows' sums against one input vector x: to each int32 lane of a0..a3,
// the four products of the bytes of w0..w3 and of x, exact; w unsigned and x signed with
// weights_unsigned, else the other way round. In asm, so that the AVX2 kernels stay compiled once for
// both AVX2 sets (the intrinsic would need the avxvnni target in every function that inlines it);
// the avx2-vnni set alone reaches it. One statement keeps the four sums in registers; {vex}: the
// encoding without AVX-512.
LM_AVX2_FN static inline __attribute__((always_inline)) void run_dpbusd4_avx2(__m256i *a0, __m256i *a1, __m256i *a2, __m256i *a3, __m256i x, __m256i w0, __m256i w1, __m256i w2,
                                               __m256i w3, const int weights_unsigned) {
    if (weights_unsigned)
        __asm__("%{vex%} vpdpbusd {%4, %5, %0|%0, %5, %4}\n\t%{vex%} vpdpbusd {%4, %6, %1|%1, %6, %4}\n\t"
                "%{vex%} vpdpbusd {%4, %7, %2|%2, %7, %4}\n\t%{vex%} vpdpbusd {%4, %8, %3|%3, %8, %4}"
                : "+x"(*a0), "+x"(*a1), "+x"(*a2), "+x"(*a3) : "x"(x), "x"(w0), "x"(w1), "x"(w2), "x"(w3));
    else
        __asm__("%{vex%} vpdpbusd {%5, %4, %0|%0, %4, %5}\n\t%{vex%} vpdpbusd {%6, %4, %1|%1, %4, %6}\n\t"
                "%{vex%} vpdpbusd {%7, %4, %2|%2, %4, %7}\n\t%{vex%} vpdpbusd {%8, %4, %3|%3, %4, %8}"
                : "+x"(*a0), "+x"(*a1), "+x"(*a2), "+x"(*a3) : "x"(x), "x"(w0), "x"(w1), "x"(w2), "x"(w3));
}

// One AVX-VNNI vpdpbusd (as run_dpbusd4_avx2): acc plus, per int32 lane, the four products of the
// unsigned bytes of u and the signed bytes of x.
LM_AVX2_FN static inline __attribute__((always_inline)) __m256i run_dpbusd_avx2(__m256i acc, __m256i u, __m256i x) {
    __asm__("%{vex%} vpdpbusd {%2, %1, %0|%0, %1, %2}" : "+x"(acc) : "x"(u), "x"(x));
    return acc;
}

// run_quantize_q8 with 8 values per step (n a multiple of gs, gs of 8), as run_quantize_q8_avx512:
// the same divisions, clamps and rounding, so the same bytes and scales (a prompt's quantization was a
// tenth of its time in the AVX2 sets).
LM_AVX2_FN static void run_quantize_q8_avx2(int8_t *q, float *s, const float *x, int n, int gs) {
    assert(gs % 8 == 0 && n % gs == 0);
    __m256 big = _mm256_set1_ps(1024.0f), absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    for (int start = 0, g = 0; start < n; start += gs, g++) {
        __m256 m = _mm256_setzero_ps();
        for (int i = start; i < start + gs; i += 8) m = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x + i), absmask), m); // (m when |x| is NaN)
        __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1)); // (exact in any order)
        h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        float wmax = _mm_cvtss_f32(_mm_max_ss(h, _mm_shuffle_ps(h, h, 1))), scale = wmax / 127.0f;
        s[g] = scale;
        __m256 sv = _mm256_set1_ps(scale);
        for (int i = start; i < start + gs; i += 8) {
            __m256 v = scale > 0.0f ? _mm256_div_ps(_mm256_loadu_ps(x + i), sv) : _mm256_setzero_ps();
            __m256 finite = _mm256_and_ps(_mm256_cmp_ps(v, _mm256_set1_ps(-1024.0f), _CMP_GT_OQ), _mm256_cmp_ps(v, big, _CMP_LT_OQ));
            v = _mm256_blendv_ps(big, v, finite);
            __m256i r = _mm256_cvttps_epi32(v);
            __m256 frac = _mm256_sub_ps(v, _mm256_cvtepi32_ps(r));
            r = _mm256_sub_epi32(r, _mm256_castps_si256(_mm256_cmp_ps(frac, _mm256_set1_ps(0.5f), _CMP_GE_OQ)));  // (a true compare is -1)
            r = _mm256_add_epi32(r, _mm256_castps_si256(_mm256_cmp_ps(frac, _mm256_set1_ps(-0.5f), _CMP_LE_OQ)));
            r = _mm256_and_si256(r, _mm256_and_si256(_mm256_cmpgt_epi32(r, _mm256_set1_epi32(-128)), _mm256_cmpgt_epi32(_mm256_set1_epi32(128), r)));
            __m128i words = _mm_packs_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1)); // (in range: no saturation)
            _mm_storel_epi64((__m128i *)(void *)(q + i), _mm_packs_epi16(words, words));
        }
    }
}

// The exact products of 32 int8 weights and 32 int8 activations (in [-127, 127]) as 8 int32
// partial sums, lane i holding bytes 4i..4i+3: |w| (unsigned, 128 for -128) times x with w's sign,
// in pairs that cannot saturate (2 * 128 * 127 < 32768).
LM_AVX2_FN static inline __m256i run_dot32_i8(__m256i w, __m256i x) {
    __m256i pairs = _mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(x, w));
    return _mm256_madd_epi16(pairs, _mm256_set1_epi16(1));
}

// The sum of 32 int8 values as 8 int32 partial sums (lane i: bytes 4i..4i+3).
LM_AVX2_FN static inline __m256i run_sum32_i8(__m256i x) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), x), _mm256_set1_epi16(1));
}

// Transpose-reduce of 8 vectors of partial sums: lane i of *first is the sum of lanes 0-3 of v[i]
// (bytes 0-15 of its 32), of *second the sum of lanes 4-7 (bytes 16-31).
LM_AVX2_FN static inline void run_reduce8_halves(const __m256i *v, __m256i *first, __m256i *second) {
    __m256i a0 = _mm256_hadd_epi32(v[0], v[1]), a1 = _mm256_hadd_epi32(v[2], v[3]);
    __m256i a2 = _mm256_hadd_epi32(v[4], v[5]), a3 = _mm256_hadd_epi32(v[6], v[7]);
    __m256i b0 = _mm256_hadd_epi32(a0, a1), b1 = _mm256_hadd_epi32(a2, a3); // 128-bit lane h: v[0..3] / v[4..7], half h
    *first = _mm256_permute2x128_si256(b0, b1, 0x20);
    *second = _mm256_permute2x128_si256(b0, b1, 0x31);
}

LM_AVX2_FN static inline __m256i run_reduce8(const __m256i *v) {
    __m256i first, second;
    run_reduce8_halves(v, &first, &second);
    return _mm256_add_epi32(first, second);
}

// 32 values of Q4 nibbles: 16 bytes whose low nibbles are values 0-15 and high nibbles 16-31, - 8.
LM_AVX2_FN static inline __m256i run_nibbles16_i8(const unsigned char *p) {
    __m128i b = _mm_loadu_si128((const __m128i *)(const void *)p), m = _mm_set1_epi8(15);
    __m256i v = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(b, 4), m), _mm_and_si128(b, m));
    return _mm256_sub_epi8(v, _mm256_set1_epi8(8));
}

// The int32 sum of a v3 group's products (group g of the matrix, gs values) with 32-aligned input xq.
LM_AVX2_FN static inline __m256i run_group_dot_avx2(const LmMatrix *w, size_t g, const int8_t *x) {
    int gs = w->group_size;
    __m256i sum = _mm256_setzero_si256();
    if (w->type == LM_Q8_GROUPS) {
        const int8_t *q = (const int8_t *)w->data + g * (size_t)gs;
        _mm_prefetch((const char *)q + LM_PREFETCH_BYTES, _MM_HINT_T0); // (as run_load64_u8 says)
        for (int k = 0; k < gs; k += 32)
            sum = _mm256_add_epi32(sum, run_dot32_i8(_mm256_loadu_si256((const __m256i *)(const void *)(q + k)), _mm256_loadu_si256((const __m256i *)(const void *)(x + k))));
    } else if (gs == 32) {
        _mm_prefetch((const char *)w->data + g * 16 + LM_PREFETCH_BYTES, _MM_HINT_T0);
        sum = run_dot32_i8(run_nibbles16_i8((const unsigned char *)w->data + g * 16), _mm256_loadu_si256((const __m256i *)(const void *)x));
    } else { // groups of 64, 128, ...: byte j holds values j and j + gs/2
        const unsigned char *p = (const unsigned char *)w->data + g * (size_t)(gs / 2);
        __m256i m = _mm256_set1_epi8(15), eight = _mm256_set1_epi8(8);
        for (int k = 0; k < gs / 2; k += 32) {
            _mm_prefetch((const char *)p + k + LM_PREFETCH_BYTES, _MM_HINT_T0);
            __m256i b = _mm256_loadu_si256((const __m256i *)(const void *)(p + k));
            __m256i lo = _mm256_sub_epi8(_mm256_and_si256(b, m), eight), hi = _mm256_sub_epi8(_mm256_and_si256(_mm256_srli_epi16(b, 4), m), eight);
            sum = _mm256_add_epi32(sum, run_dot32_i8(lo, _mm256_loadu_si256((const __m256i *)(const void *)(x + k))));
            sum = _mm256_add_epi32(sum, run_dot32_i8(hi, _mm256_loadu_si256((const __m256i *)(const void *)(x + gs / 2 + k))));
        }
    }
    return sum;
}

// A dot's 16 lanes of terms as two vectors taking the steps in turn (lanes 0-7 steps 0, 2, 4, ...;
// lanes 8-15 steps 1, 3, ...): *now is the lanes of the step to come, *next the other half. (Named
// and swapped, they stay in registers; an array indexed by the step's parity lives in memory, and
// each step waited on a store and a load.)
LM_AVX2_FN static inline __attribute__((always_inline)) void run_turn_add(__m256 *now, __m256 *next, __m256 term) {
    __m256 done = _mm256_add_ps(*now, term);
    *now = *next, *next = done;
}

// The 16 lanes after `steps` steps of run_turn_add, into lanes[16].
LM_AVX2_FN static inline __attribute__((always_inline)) void run_turn_store(__m256 now, __m256 next, int steps, float *lanes) {
    _mm256_storeu_ps(lanes + 8 * (steps % 2), now);
    _mm256_storeu_ps(lanes + 8 * (1 - steps % 2), next);
}

// Can the AVX2 integer kernel take this v3 matrix? (groups within rows, whole 32-value steps)
static int run_int_avx2_ok(const LmMatrix *w) {
    int gs = w->group_size;
    if (w->type != LM_Q8_GROUPS && w->type != LM_Q4_GROUPS) return 0;
    return w->cols % gs == 0 && (w->type == LM_Q8_GROUPS ? gs % 32 == 0 : gs == 32 || gs % 64 == 0);
}

// run_dot_int for a row whose groups lie within it: 8 groups' int sums at a time, their terms into
// lanes 0-7 or 8-15 as the group's index says.
// The int sums of 8 Q4_0 groups of 32 (lane i: group i) from their 16 bytes of nibbles each, `stride`
// bytes apart (16: run.c's groups; 18: GGUF's blocks, nibbles at 2), against the input as
// run_arrange_q4_input arranges it (per 4 groups: their first halves, then their second halves), so
// that 32 bytes of nibbles are two groups' values in the order of the input; the nibbles stay
// unsigned and the 8 comes off through the groups' input sums xsum.
LM_AVX2_FN static inline __attribute__((always_inline)) __m256i run_q4_sums8_avx2(const unsigned char *nibbles, size_t stride, const int8_t *xa, const int32_t *xsum) {
    __m256i m = _mm256_set1_epi8(15), v[4];
    for (int i = 0; i < 4; i++) { // groups 2i and 2i + 1 (int32 lanes 0-3 and 4-7 of v[i])
        const unsigned char *at = nibbles + 2 * stride * (size_t)i;
        _mm_prefetch((const char *)at + LM_PREFETCH_BYTES, _MM_HINT_T0);
        __m256i b = stride == 16 ? _mm256_loadu_si256((const __m256i *)(const void *)at)
                                 : _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(const void *)at)),
                                                           _mm_loadu_si128((const __m128i *)(const void *)(at + stride)), 1);
        const int8_t *x = xa + (i / 2) * 128 + (i % 2) * 32;
        __m256i lo = _mm256_maddubs_epi16(_mm256_and_si256(b, m), _mm256_loadu_si256((const __m256i *)(const void *)x));
        __m256i hi = _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(b, 4), m), _mm256_loadu_si256((const __m256i *)(const void *)(x + 64)));
        v[i] = _mm256_madd_epi16(_mm256_add_epi16(lo, hi), _mm256_set1_epi16(1)); // (pairs of 2 * 15 * 127: no overflow)
    }
    __m256i c = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3])); // groups 0 2 4 6 | 1 3 5 7
    __m256i sums = _mm256_permutevar8x32_epi32(c, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    return _mm256_sub_epi32(sums, _mm256_slli_epi32(_mm256_loadu_si256((const __m256i *)(const void *)xsum), 3));
}

// Eight consecutive q8_0 groups' exact int32 sums against x, each group gs (32 or 64: a constant where
// inlined, so the eight sums stay in registers) int8 weights at q.
LM_AVX2_FN static inline __attribute__((always_inline)) __m256i run_q8_sums8_avx2(const int8_t *q, const int8_t *x, int gs) {
    __m256i v[8];
    for (int i = 0; i < 8; i++) {
        _mm_prefetch((const char *)q + (size_t)i * (size_t)gs + LM_PREFETCH_BYTES, _MM_HINT_T0);
        v[i] = run_dot32_i8(_mm256_loadu_si256((const __m256i *)(const void *)(q + i * gs)), _mm256_loadu_si256((const __m256i *)(const void *)(x + i * gs)));
        if (gs == 64)
            v[i] = _mm256_add_epi32(v[i], run_dot32_i8(_mm256_loadu_si256((const __m256i *)(const void *)(q + i * gs + 32)),
                                                       _mm256_loadu_si256((const __m256i *)(const void *)(x + i * gs + 32))));
    }
    return run_reduce8(v);
}

// xsum (the input groups' sums) and xa (the arranged input, or NULL) serve Q4_0 groups of 32.
LM_AVX2_FN static float run_dot_int_avx2(const LmMatrix *w, int row, const int8_t *xq, const float *xs, const int32_t *xsum, const int8_t *xa) {
    int gs = w->group_size, groups = w->cols / gs, g = 0;
    size_t first = (size_t)row * (size_t)groups; // the row's first group in the matrix
    __m256 now = _mm256_setzero_ps(), next = now; // (run_turn_add)
    int arranged = w->type == LM_Q4_GROUPS && gs == 32 && xa != NULL;
    for (; g + 8 <= groups; g += 8) {
        __m256i sums;
        if (arranged) {
            sums = run_q4_sums8_avx2((const unsigned char *)w->data + (first + (size_t)g) * 16, 16, xa + (size_t)g * 32, xsum + g);
        } else if (w->type == LM_Q8_GROUPS && (gs == 32 || gs == 64)) {
            const int8_t *q = (const int8_t *)w->data + (first + (size_t)g) * (size_t)gs, *x = xq + (size_t)g * (size_t)gs;
            sums = gs == 32 ? run_q8_sums8_avx2(q, x, 32) : run_q8_sums8_avx2(q, x, 64);
        } else {
            __m256i v[8];
            for (int i = 0; i < 8; i++) v[i] = run_group_dot_avx2(w, first + (size_t)(g + i), xq + (size_t)(g + i) * (size_t)gs);
            sums = run_reduce8(v);
        }
        __m256 scales = w->type == LM_Q8_GROUPS ? _mm256_loadu_ps((const float *)(const void *)(w->scales + 4 * (first + (size_t)g)))
                                                : _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(w->scales + 2 * (first + (size_t)g))));
        run_turn_add(&now, &next, _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(sums), scales), _mm256_loadu_ps(xs + g)));
    }
    float lanes[16];
    run_turn_store(now, next, g / 8, lanes);
    if (g < groups) { // the last few groups: their sums at once, their terms one by one
        __m256i v[8];
        int32_t isum[8];
        for (int i = 0; i < 8; i++) v[i] = g + i < groups ? run_group_dot_avx2(w, first + (size_t)(g + i), xq + (size_t)(g + i) * (size_t)gs) : _mm256_setzero_si256();
        _mm256_storeu_si256((__m256i *)(void *)isum, run_reduce8(v));
        for (int i = 0; g + i < groups; i++) lanes[(g + i) % 16] += (float)isum[i] * run_group_scale(w, first + (size_t)(g + i)) * xs[g + i];
    }
    return run_sum_lanes256(_mm256_loadu_ps(lanes), _mm256_loadu_ps(lanes + 8));
}

// ---- The GGUF block types decoded in registers (the definitions: run_unpack_*).

// 16 bytes of nibbles at p as 32 values: the low nibbles (values 0-15), then the high (16-31). (The
// bytes in both 128-bit halves, shifted apart: no shuffle-port insert.)
LM_AVX2_FN static inline __attribute__((always_inline)) __m256i run_nibbles32_avx2(const unsigned char *p) {
    __m256i b = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(const void *)p));
    return _mm256_and_si256(_mm256_srlv_epi32(b, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4)), _mm256_set1_epi8(15));
}

// Byte i: `value` where bit i of the 32 bits at p is set (Q5_0's and Q5_1's fifth bits), else 0.
LM_AVX2_FN static inline __attribute__((always_inline)) __m256i run_bits32_avx2(const unsigned char *p, char value) {
    int32_t h;
    memcpy(&h, p, 4);
    __m256i spread = _mm256_shuffle_epi8(_mm256_set1_epi32(h), _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3));
    __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ull);
    return _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit), _mm256_set1_epi8(value));
}

// The k-quants' group g (of 8) as unsigned bytes, in registers: the type's values (run_unpack_*)
// plus its offset (run_k_offset: Q3_K's 4, Q6_K's 32), so vpmaddubsw takes them as they are and the
// offset comes off through the input's sums. Group g = 4 half + k of Q2_K and Q3_K: bits 2k, 2k+1
// of the half's 32 bytes, Q3_K's high bit (bit g of byte l) as + 4; of Q4_K and Q5_K: the low or
// high nibbles (g even or odd) of 32 bytes, Q5_K's fifth bit (bit g of byte l of the 32 at 16) as
// + 16; of Q6_K: the low nibbles of 32 bytes (k < 2) or their high ones, and 2 high bits. (The high
// bits by 16-bit shifts: bit 2 or 4 of either byte comes from its own bit g.)
static inline int run_k_offset(LmWeightType type) { return type == LM_Q6_K ? 32 : type == LM_Q3_K ? 4 : 0; }

LM_AVX2_FN static inline __attribute__((always_inline)) __m256i run_k_unsigned32_avx2(const unsigned char *blk, int g, LmWeightType type) {
    int half = g / 4, k = g % 4;
    __m256i three = _mm256_set1_epi8(3), m4 = _mm256_set1_epi8(15);
    switch (type) {
    case LM_Q6_K: {
        __m256i ql = _mm256_loadu_si256((const __m256i *)(const void *)(blk + 64 * half + 32 * (k % 2)));
        __m256i qh = _mm256_loadu_si256((const __m256i *)(const void *)(blk + 128 + 32 * half));
        __m256i low = _mm256_and_si256(k < 2 ? ql : _mm256_srli_epi16(ql, 4), m4);
        return _mm256_or_si256(low, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * k), three), 4)); }
    case LM_Q4_K: case LM_Q5_K: {
        __m256i nibbles = _mm256_loadu_si256((const __m256i *)(const void *)(blk + (type == LM_Q5_K ? 48 : 16) + 32 * (g / 2)));
        __m256i u = _mm256_and_si256(g % 2 ? _mm256_srli_epi16(nibbles, 4) : nibbles, m4);
        if (type == LM_Q4_K) return u;
        __m256i fifths = _mm256_loadu_si256((const __m256i *)(const void *)(blk + 16));
        return _mm256_or_si256(u, _mm256_and_si256(g <= 4 ? _mm256_slli_epi16(fifths, 4 - g) : _mm256_srli_epi16(fifths, g - 4), _mm256_set1_epi8(16))); }
    default: { // Q2_K, Q3_K
        __m256i q = _mm256_loadu_si256((const __m256i *)(const void *)(blk + (type == LM_Q3_K ? 32 : 16) + 32 * half));
        __m256i u = _mm256_and_si256(_mm256_srli_epi16(q, 2 * k), three);
        if (type == LM_Q2_K) return u;
        __m256i high = _mm256_loadu_si256((const __m256i *)(const void *)blk);
        return _mm256_or_si256(u, _mm256_and_si256(g >= 2 ? _mm256_srli_epi16(high, g - 2) : _mm256_slli_epi16(high, 2 - g), _mm256_set1_epi8(4))); }
    }
}

// Group j's 32 values (of a block of 32: j = 0; of 256: 0..7) as signed bytes, in registers: what the
// type's unpacking (run_unpack_*, the definition) puts in q[32j..32j+31], the same bytes.
LM_AVX2_FN static inline __attribute__((always_inline)) __m256i run_values32_avx2(const unsigned char *b, int j, LmWeightType type) {
    __m256i grid = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(const void *)run_iq4_grid));
    switch (type) {
    case LM_Q8_0: return _mm256_loadu_si256((const __m256i *)(const void *)(b + 2));
    case LM_Q4_0: return _mm256_sub_epi8(run_nibbles32_avx2(b + 2), _mm256_set1_epi8(8));
    case LM_Q4_1: return run_nibbles32_avx2(b + 4);
    case LM_Q5_0: return _mm256_sub_epi8(_mm256_or_si256(run_nibbles32_avx2(b + 6), run_bits32_avx2(b + 2, 16)), _mm256_set1_epi8(16));
    case LM_Q5_1: return _mm256_or_si256(run_nibbles32_avx2(b + 8), run_bits32_avx2(b + 4, 16));
    case LM_IQ4_NL: return _mm256_shuffle_epi8(grid, run_nibbles32_avx2(b + 2));
    case LM_IQ4_XS: return _mm256_shuffle_epi8(grid, run_nibbles32_avx2(b + 8 + 16 * j));
    case LM_Q2_K: case LM_Q3_K: case LM_Q4_K: case LM_Q5_K: case LM_Q6_K:
        return _mm256_sub_epi8(run_k_unsigned32_avx2(b, j, type), _mm256_set1_epi8((char)run_k_offset(type)));
    default: assert(0); return _mm256_setzero_si256();
    }
}

// run_scales_k4 in registers: lane j holds d * scale and dmin * min of sub-block j (run_scale_min_k4
// for the 8 at once, on the 12 bytes as three words).
LM_AVX2_FN static inline __attribute__((always_inline)) void run_scales_k4_avx2(const unsigned char *blk, __m256 *ds, __m256 *dm) {
    __m128i head = _mm_loadu_si128((const __m128i *)(const void *)blk); // d, dmin, w0, w1, w2 (run_k4_scales_avx512's decode)
    __m128i low = _mm_and_si128(_mm_srlv_epi32(_mm_shuffle_epi32(head, 0xed), _mm_setr_epi32(0, 0, 0, 4)), _mm_setr_epi32(0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f));
    __m128i high = _mm_and_si128(_mm_srli_epi32(_mm_shuffle_epi32(head, 0xa5), 2), _mm_setr_epi32(0, 0x30303030, 0, 0x30303030));
    __m128i sm = _mm_or_si128(low, high); // scales 0-7, mins 0-7
    __m256 scale = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(sm)), min = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_unpackhi_epi64(sm, sm)));
    __m128 dd = _mm_cvtph_ps(head); // d, dmin
    *ds = _mm256_mul_ps(_mm256_broadcastss_ps(dd), scale), *dm = _mm256_mul_ps(_mm256_broadcastss_ps(_mm_movehdup_ps(dd)), min);
}

// The fp16 at p in all 8 lanes (as run_half16_avx512).
LM_AVX2_FN static inline __attribute__((always_inline)) __m256 run_half8_avx2(const unsigned char *p) {
    return _mm256_cvtph_ps(_mm_set1_epi16((short)run_u16_at(p)));
}

// A block of 256's scales (what its unpacking puts in d and m) in registers: d0 and m0 of the first
// run of 16 of each group, d1 and m1 of the second (the same for runs of 32), each d * integer as
// the definition computes it. (Built in registers: the definition's 16 stores, reloaded as vectors, stalled store
// forwarding.)
LM_AVX2_FN static inline __attribute__((always_inline)) void run_scales8_avx2(const unsigned char *b, LmWeightType type, __m256 *d0, __m256 *d1, __m256 *m0, __m256 *m1) {
    __m128i evens_odds = _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15), m4 = _mm_set1_epi8(15);
    *m0 = *m1 = _mm256_setzero_ps();
    switch (type) {
    case LM_Q2_K: { // scale and min nibbles of each 16 values
        __m128i sc = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(const void *)b), evens_odds);
        __m128i lo = _mm_and_si128(sc, m4), hi = _mm_and_si128(_mm_srli_epi16(sc, 4), m4);
        __m256 d = run_half8_avx2(b + 80), dmin = run_half8_avx2(b + 82);
        *d0 = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo))), *d1 = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8))));
        *m0 = _mm256_mul_ps(dmin, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi))), *m1 = _mm256_mul_ps(dmin, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8))));
        return; }
    case LM_Q3_K: {
        __m128i sc = _mm_shuffle_epi8(run_q3_k_scales16(b), evens_odds);
        __m256 d = run_half8_avx2(b + 108);
        *d0 = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(sc))), *d1 = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(sc, 8))));
        return; }
    case LM_Q4_K: case LM_Q5_K: run_scales_k4_avx2(b, d0, m0); *d1 = *d0, *m1 = *m0; return;
    case LM_Q6_K: { // 16 int8 scales
        __m128i sc = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(const void *)(b + 192)), evens_odds);
        __m256 d = run_half8_avx2(b + 208);
        *d0 = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(sc))), *d1 = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(sc, 8))));
        return; }
    default: { // IQ4_XS: 6-bit scales - 32 of 8 runs of 32: the low nibbles in order, each run's 2 high bits shifted per lane
        int32_t low, high;
        memcpy(&low, b + 4, 4);
        memcpy(&high, b, 4); // (bytes 2 and 3)
        __m128i lows = _mm_cvtsi32_si128(low);
        lows = _mm_unpacklo_epi8(_mm_and_si128(lows, m4), _mm_and_si128(_mm_srli_epi16(lows, 4), m4));
        __m256i highs = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(high), _mm256_setr_epi32(16, 18, 20, 22, 24, 26, 28, 30)), _mm256_set1_epi32(3));
        __m256i sc = _mm256_sub_epi32(_mm256_or_si256(_mm256_cvtepu8_epi32(lows), _mm256_slli_epi32(highs, 4)), _mm256_set1_epi32(32));
        *d0 = *d1 = _mm256_mul_ps(run_half8_avx2(b), _mm256_cvtepi32_ps(sc));
        return; }
    }
}

// The first 8 bytes of each of n (at most 8) blocks stride apart, for the blocks of 32 whose d, offset
// and fifth bits lie there: heads[k]'s low 128-bit lane holds blocks 4k and 4k + 2 (its two 64-bit
// halves), its high lane 4k + 1 and 4k + 3; absent blocks are zeros. (Read by vector loads and
// picked by shuffles: Q5_0 25 -> 27 GMAC/s in cache against the fifth bits and fp16 assembled in
// scalar registers. Q4_0's and Q8_0's kernel, with little else for the scalar ports, keeps those.)
LM_AVX2_FN static inline __attribute__((always_inline)) void run_heads8_avx2(const unsigned char *p, size_t stride, int n, __m256i *heads) {
    for (int k = 0; k < 2; k++) {
        __m128i lane[2];
        for (int h = 0; h < 2; h++) {
            int first = 4 * k + h, second = first + 2;
            __m128i q = first < n ? _mm_loadl_epi64((const __m128i *)(const void *)(p + stride * (size_t)first)) : _mm_setzero_si128();
            lane[h] = second < n ? _mm_castpd_si128(_mm_loadh_pd(_mm_castsi128_pd(q), (const double *)(const void *)(p + stride * (size_t)second))) : q;
        }
        heads[k] = _mm256_setr_m128i(lane[0], lane[1]);
    }
}

// The fp16 at byte `at` of each of run_heads8_avx2's 8 blocks, as floats in block order.
LM_AVX2_FN static inline __attribute__((always_inline)) __m256 run_head_halves8_avx2(const __m256i *heads, int at) {
    const char z = (char)0x80, a = (char)at, b = (char)(at + 1), c = (char)(8 + at), d = (char)(9 + at); // (z: a zero byte)
    // block j's to word j of the lane that holds it: blocks 0-3 from heads[0], 4-7 from heads[1]
    __m256i first = _mm256_setr_epi8(a, b, z, z, c, d, z, z, z, z, z, z, z, z, z, z, z, z, a, b, z, z, c, d, z, z, z, z, z, z, z, z);
    __m256i second = _mm256_setr_epi8(z, z, z, z, z, z, z, z, a, b, z, z, c, d, z, z, z, z, z, z, z, z, z, z, z, z, a, b, z, z, c, d);
    __m256i words = _mm256_or_si256(_mm256_shuffle_epi8(heads[0], first), _mm256_shuffle_epi8(heads[1], second));
    return _mm256_cvtph_ps(_mm_or_si128(_mm256_castsi256_si128(words), _mm256_extracti128_si256(words, 1)));
}

// The n (at most 8) fp16 numbers at p, p + stride, ... as floats, the rest 0: the scales of blocks
// of 32 (packed in scalar registers: 8 stores then a vector load would stall store forwarding, and
// 8 vector inserts cost more than the blocks' dots).
LM_AVX2_FN static inline __attribute__((always_inline)) __m256 run_halves8_avx2(const unsigned char *p, size_t stride, int n) {
    uint64_t h[2] = {0, 0};
    for (int i = 0; i < n; i++) h[i / 4] |= (uint64_t)run_u16_at(p + (size_t)i * stride) << (16 * (i % 4));
    return _mm256_cvtph_ps(_mm_set_epi64x((long long)h[1], (long long)h[0]));
}

// GGUF's Q8_0 and Q4_0 (run_dot_q8_0, run_dot_q4_0; q4 set; xsum: the input groups' sums) in place,
// 8 blocks' int sums at a time. Q4_0's nibbles stay unsigned (0..15) against the input, the offset 8
// taken off through xsum afterwards.
LM_AVX2_FN static inline __m256i run_block_dot_avx2(const unsigned char *blk, const int8_t *x, int q4) {
    if (!q4) return run_dot32_i8(_mm256_loadu_si256((const __m256i *)(const void *)(blk + 2)), _mm256_loadu_si256((const __m256i *)(const void *)x));
    __m256i pairs = _mm256_maddubs_epi16(run_nibbles32_avx2(blk + 2), _mm256_loadu_si256((const __m256i *)(const void *)x)); // (2 * 15 * 127: no overflow)
    return _mm256_madd_epi16(pairs, _mm256_set1_epi16(1));
}

// xa: Q4_0's input as run_arrange_q4_input arranges it (run_q4_sums8_avx2), or NULL.
LM_AVX2_FN static inline __attribute__((always_inline)) float run_dot_q8_q4_avx2(const unsigned char *row, int cols, const int8_t *xq, const float *xs, const int32_t *xsum,
                                                                                  const int8_t *xa, int q4) {
    int blocks = cols / 32, bytes = q4 ? 18 : 34, b = 0;
    __m256 now = _mm256_setzero_ps(), next = now; // (run_turn_add)
    for (; b + 8 <= blocks; b += 8) {
        __m256i v[8], sums;
        uint64_t h[2] = {0, 0}; // (run_halves8_avx2 inline: as a loop of its own, 6% slower here)
        for (int i = 0; i < 8; i++) {
            const unsigned char *blk = row + (size_t)bytes * (size_t)(b + i);
            if (!(q4 && xa)) {
                _mm_prefetch((const char *)blk + LM_PREFETCH_BYTES, _MM_HINT_T0);
                v[i] = run_block_dot_avx2(blk, xq + 32 * (b + i), q4);
            }
            h[i / 4] |= (uint64_t)run_u16_at(blk) << (16 * (i % 4));
        }
        __m256 d = _mm256_cvtph_ps(_mm_set_epi64x((long long)h[1], (long long)h[0]));
        if (q4 && xa) sums = run_q4_sums8_avx2(row + (size_t)bytes * (size_t)b + 2, 18, xa + (size_t)b * 32, xsum + b);
        else sums = run_reduce8(v);
        if (q4 && !xa) sums = _mm256_sub_epi32(sums, _mm256_slli_epi32(_mm256_loadu_si256((const __m256i *)(const void *)(xsum + b)), 3));
        run_turn_add(&now, &next, _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(sums), d), _mm256_loadu_ps(xs + b)));
    }
    float lanes[16];
    run_turn_store(now, next, b / 8, lanes);
    if (b < blocks) { // the last few blocks: their sums at once, their terms one by one
        __m256i v[8];
        int32_t isum[8];
        for (int i = 0; i < 8; i++) {
            const unsigned char *blk = row + (size_t)bytes * (size_t)(b + i);
            v[i] = b + i >= blocks ? _mm256_setzero_si256() : run_block_dot_avx2(blk, xq + 32 * (b + i), q4);
        }
        _mm256_storeu_si256((__m256i *)(void *)isum, run_reduce8(v));
        for (int i = 0; q4 && b + i < blocks; i++) isum[i] -= 8 * xsum[b + i];
        for (int i = 0; b + i < blocks; i++) lanes[(b + i) % 16] += (float)isum[i] * run_half_at(row + (size_t)bytes * (size_t)(b + i)) * xs[b + i];
    }
    return run_sum_lanes256(_mm256_loadu_ps(lanes), _mm256_loadu_ps(lanes + 8));
}

// GGUF's Q4_K and Q5_K (run_dot_blocks' terms): a block's 8 sub-blocks of 32 at once, terms
// 8b..8b+7 (the values unsigned, run_k_unsigned32_avx2: u8 x s8 pairs, 2 * 15 * 127 at most,
// 2 * 31 * 127 for Q5_K).
LM_AVX2_FN static inline __attribute__((always_inline)) float run_dot_k4_avx2(const unsigned char *row, int cols, const int8_t *xq, const float *xs, const int32_t *xsum,
                                                                             LmWeightType type) {
    const int bytes = run_types[type].block_bytes, q5 = type == LM_Q5_K;
    __m256 now = _mm256_setzero_ps(), next = now; // (run_turn_add)
    for (int b = 0; b < cols / 256; b++) {
        const unsigned char *blk = row + (size_t)bytes * (size_t)b;
        for (int line = 0; line < bytes; line += 64) _mm_prefetch((const char *)blk + line + LM_PREFETCH_BYTES, _MM_HINT_T0);
        __m256i v[8], sums;
        for (int j = 0; j < 8; j++)
            v[j] = _mm256_maddubs_epi16(run_k_unsigned32_avx2(blk, j, type), _mm256_loadu_si256((const __m256i *)(const void *)(xq + 256 * b + 32 * j)));
        if (q5) { // pairs of lanes added twice in 16 bits (at most 4 * 7874 < 32768), then in 32 bits: lane h * 4 + k of lo (hi): half h of sub-block k (4 + k)
            __m256i ones = _mm256_set1_epi16(1);
            __m256i lo = _mm256_madd_epi16(_mm256_hadd_epi16(_mm256_hadd_epi16(v[0], v[1]), _mm256_hadd_epi16(v[2], v[3])), ones);
            __m256i hi = _mm256_madd_epi16(_mm256_hadd_epi16(_mm256_hadd_epi16(v[4], v[5]), _mm256_hadd_epi16(v[6], v[7])), ones);
            sums = _mm256_add_epi32(_mm256_permute2x128_si256(lo, hi, 0x20), _mm256_permute2x128_si256(lo, hi, 0x31));
        } else { // Q4_K's sums: pairs of lanes added three times in 16 bits (at most 8 * 3810 < 32768), then the two 128-bit halves in 32 bits
            __m256i h = _mm256_hadd_epi16(_mm256_hadd_epi16(_mm256_hadd_epi16(v[0], v[1]), _mm256_hadd_epi16(v[2], v[3])),
                                          _mm256_hadd_epi16(_mm256_hadd_epi16(v[4], v[5]), _mm256_hadd_epi16(v[6], v[7])));
            sums = _mm256_add_epi32(_mm256_cvtepi16_epi32(_mm256_castsi256_si128(h)), _mm256_cvtepi16_epi32(_mm256_extracti128_si256(h, 1)));
        }
        __m256 ds, dm;
        run_scales_k4_avx2(blk, &ds, &dm);
        __m256 xsums = _mm256_cvtepi32_ps(_mm256_loadu_si256((const __m256i *)(const void *)(xsum + 8 * b)));
        __m256 part = _mm256_sub_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(sums), ds), _mm256_mul_ps(xsums, dm));
        run_turn_add(&now, &next, _mm256_mul_ps(part, _mm256_loadu_ps(xs + 8 * b)));
    }
    float lanes[16];
    run_turn_store(now, next, cols / 256, lanes);
    return run_sum_lanes256(_mm256_loadu_ps(lanes), _mm256_loadu_ps(lanes + 8));
}

// The 16 runs of 16 of a block of 256 as int32 (first: run 0 of groups 0-7, second: run 1), from
// each group's vpmaddubsw pairs (v[g]: 128-bit half h holds run h's 8 pairs): pairs added twice in 16
// bits then once in 32 (4 pairs' sums below 32768), or, wide, once in 16 bits then twice in 32 (2
// pairs' sums below 32768).
LM_AVX2_FN static inline __attribute__((always_inline)) void run_runs16_avx2(const __m256i v[8], __m256i *first, __m256i *second, const int wide) {
    __m256i ones = _mm256_set1_epi16(1), lo4, hi4; // groups 0-3, 4-7
    if (wide) {
        lo4 = _mm256_hadd_epi32(_mm256_madd_epi16(_mm256_hadd_epi16(v[0], v[1]), ones), _mm256_madd_epi16(_mm256_hadd_epi16(v[2], v[3]), ones));
        hi4 = _mm256_hadd_epi32(_mm256_madd_epi16(_mm256_hadd_epi16(v[4], v[5]), ones), _mm256_madd_epi16(_mm256_hadd_epi16(v[6], v[7]), ones));
    } else {
        lo4 = _mm256_madd_epi16(_mm256_hadd_epi16(_mm256_hadd_epi16(v[0], v[1]), _mm256_hadd_epi16(v[2], v[3])), ones);
        hi4 = _mm256_madd_epi16(_mm256_hadd_epi16(_mm256_hadd_epi16(v[4], v[5]), _mm256_hadd_epi16(v[6], v[7])), ones);
    }
    *first = _mm256_permute2x128_si256(lo4, hi4, 0x20), *second = _mm256_permute2x128_si256(lo4, hi4, 0x31);
}

// GGUF's Q2_K, Q3_K and Q6_K (run_dot_blocks' terms): a block's 8 groups of 32 at once as unsigned
// values (run_k_unsigned32_avx2) against x, each group's two runs of 16 summed apart
// (run_runs16_avx2; Q6_K's pairs at most 2 * 63 * 127: wide), the offsets (Q3_K's 4, Q6_K's 32) times
// the runs' input sums taken off, Q2_K's mins times them, scaled, then the runs added. xsum, xsum16:
// the input's group sums and the sums of their first 16 values.
LM_AVX2_FN static inline __attribute__((always_inline)) float run_dot_k_runs16_avx2(const unsigned char *row, int cols, const int8_t *xq, const float *xs,
                                                                                   const int32_t *xsum, const int32_t *xsum16, LmWeightType type) {
    const size_t bytes = (size_t)run_types[type].block_bytes;
    const int offset_shift = type == LM_Q6_K ? 5 : type == LM_Q3_K ? 2 : 0; // (log2 of run_k_offset)
    __m256 now = _mm256_setzero_ps(), next = now; // (run_turn_add)
    for (int b = 0; b < cols / 256; b++) {
        const unsigned char *blk = row + bytes * (size_t)b;
        for (size_t line = 0; line < bytes; line += 64) _mm_prefetch((const char *)blk + line + LM_PREFETCH_BYTES, _MM_HINT_T0);
        __m256i v[8], first, second;
        for (int g = 0; g < 8; g++)
            v[g] = _mm256_maddubs_epi16(run_k_unsigned32_avx2(blk, g, type), _mm256_loadu_si256((const __m256i *)(const void *)(xq + 256 * b + 32 * g)));
        run_runs16_avx2(v, &first, &second, type == LM_Q6_K);
        __m256i x0 = _mm256_loadu_si256((const __m256i *)(const void *)(xsum16 + 8 * b)); // the runs' input sums
        __m256i x1 = _mm256_sub_epi32(_mm256_loadu_si256((const __m256i *)(const void *)(xsum + 8 * b)), x0);
        if (offset_shift) first = _mm256_sub_epi32(first, _mm256_slli_epi32(x0, offset_shift)), second = _mm256_sub_epi32(second, _mm256_slli_epi32(x1, offset_shift));
        __m256 d0, d1, m0, m1; // d * the scales of the first and of the second runs of 16 (Q2_K: dmin * its mins)
        run_scales8_avx2(blk, type, &d0, &d1, &m0, &m1);
        __m256 part0 = _mm256_mul_ps(_mm256_cvtepi32_ps(first), d0), part1 = _mm256_mul_ps(_mm256_cvtepi32_ps(second), d1);
        if (type == LM_Q2_K) {
            part0 = _mm256_sub_ps(part0, _mm256_mul_ps(_mm256_cvtepi32_ps(x0), m0));
            part1 = _mm256_sub_ps(part1, _mm256_mul_ps(_mm256_cvtepi32_ps(x1), m1));
        }
        run_turn_add(&now, &next, _mm256_mul_ps(_mm256_add_ps(part0, part1), _mm256_loadu_ps(xs + 8 * b)));
    }
    float lanes[16];
    run_turn_store(now, next, cols / 256, lanes);
    return run_sum_lanes256(_mm256_loadu_ps(lanes), _mm256_loadu_ps(lanes + 8));
}

// The weighted group sums of groups 8c .. 8c + n - 1 (n <= 8; the rest 0) of a row of a GGUF block
// type as run_dot_blocks computes them, before the input scales: each group's values in registers
// (run_values32_avx2), the int sums per run of 16 or 32 and their scaling at once. A block of 256's
// scales come from run_scales8_avx2; blocks of 32 have fp16 d at 0 (and the
// offset's fp16 at 2). xsum: the input groups' sums, or NULL.
LM_AVX2_FN static inline __attribute__((always_inline)) __m256 run_blocks_chunk_avx2(const unsigned char *p, int c, int n, const int8_t *xq, const int32_t *xsum,
                                                                                     LmWeightType type) {
    const LmTypeTraits *traits = &run_types[type];
    int big = traits->block_values == 256, run = traits->scale_values, has_min = traits->has_min;
    __m256i v[8], s[8], qx0, qx1, sum0, sum1;
    __m256 d0, d1 = _mm256_setzero_ps(), m0 = d1, m1 = d1;
    const unsigned char *block = p + (size_t)c * (size_t)(256 / traits->block_values) * (size_t)traits->block_bytes; // (the chunk's first block)
    if (big) run_scales8_avx2(block, type, &d0, &d1, &m0, &m1);
    else { // fp16 d of each block at 0 (and its offset at 2)
        d0 = run_halves8_avx2(block, (size_t)traits->block_bytes, n);
        if (has_min) m0 = _mm256_xor_ps(run_halves8_avx2(block + 2, (size_t)traits->block_bytes, n), _mm256_set1_ps(-0.0f)); // m = -min
    }
    for (int g = 0; g < 8; g++) {
        v[g] = s[g] = _mm256_setzero_si256();
        if (g >= n) continue;
        __m256i x = _mm256_loadu_si256((const __m256i *)(const void *)(xq + 256 * c + 32 * g));
        __m256i q = big ? run_values32_avx2(block, g, type) : run_values32_avx2(block + (size_t)g * (size_t)traits->block_bytes, 0, type);
        // (the types with offsets store values that are never negative, at most 31: straight into
        // vpmaddubsw, pairs of at most 2 * 31 * 127)
        v[g] = has_min ? _mm256_madd_epi16(_mm256_maddubs_epi16(q, x), _mm256_set1_epi16(1)) : run_dot32_i8(q, x);
        if (has_min && (run == 16 || !xsum)) s[g] = run_sum32_i8(x);
    }
    run_reduce8_halves(v, &qx0, &qx1);
    if (run == 32) { // one run per group
        __m256 part = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(qx0, qx1)), d0);
        if (!has_min) return part;
        __m256i sums;
        if (xsum) {
            __m256i first = _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)); // (groups 0..n-1)
            sums = _mm256_maskload_epi32((const int *)(const void *)(xsum + 8 * c), first);
        } else run_reduce8_halves(s, &sum0, &sum1), sums = _mm256_add_epi32(sum0, sum1);
        return _mm256_sub_ps(part, _mm256_mul_ps(_mm256_cvtepi32_ps(sums), m0));
    }
    __m256 part0 = _mm256_mul_ps(_mm256_cvtepi32_ps(qx0), d0), part1 = _mm256_mul_ps(_mm256_cvtepi32_ps(qx1), d1);
    if (has_min) {
        run_reduce8_halves(s, &sum0, &sum1);
        part0 = _mm256_sub_ps(part0, _mm256_mul_ps(_mm256_cvtepi32_ps(sum0), m0));
        part1 = _mm256_sub_ps(part1, _mm256_mul_ps(_mm256_cvtepi32_ps(sum1), m1));
    }
    return _mm256_add_ps(part0, part1); // two runs of 16, each scaled, then added
}

// The split-nibble types in 8 lanes (run_dot_nibbles_avx512's values and offsets): the int32 sums
// of the n (at most 8) groups whose nibbles lie at p, p + stride, ... against the arranged input
// (lane i: group i, 0 past n), two groups per vector, one per 128-bit half. IQ4_NL's and IQ4_XS's
// grid values stay signed (their unsigned form would overflow vpmaddubsw's pairs): run_dot32_i8's
// sign moves. Q5's fifth bits (the 32 bits of each group, in run_heads8_avx2's heads) spread to
// bytes. With vnni (the avx2-vnni set), AVX-VNNI's vpdpbusd on unsigned values (the grid + 128, as
// AVX-512's).
LM_AVX2_FN static inline __attribute__((always_inline)) __m256i run_nibble_sums8_avx2(const unsigned char *p, size_t stride, int n, const __m256i *heads,
                                                                                     const int8_t *xa, const int32_t *xsum, LmWeightType type, const int vnni) {
    const int five = type == LM_Q5_0 || type == LM_Q5_1, grid = type == LM_IQ4_NL || type == LM_IQ4_XS;
    const int offset_shift = type == LM_Q4_0 ? 3 : type == LM_Q5_0 ? 4 : grid && vnni ? 7 : 0;
    __m256i m = _mm256_set1_epi8(15), v[4], table = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(const void *)run_iq4_grid));
    if (vnni) table = _mm256_add_epi8(table, _mm256_set1_epi8(-128));
    for (int i = 0; i < 4; i++) { // groups 2i and 2i + 1 (int32 lanes 0-3 and 4-7 of v[i])
        if (2 * i >= n) { v[i] = _mm256_setzero_si256(); continue; }
        const unsigned char *at = p + 2 * stride * (size_t)i;
        _mm_prefetch((const char *)at + LM_PREFETCH_BYTES, _MM_HINT_T0);
        __m256i b = stride == 16 ? _mm256_loadu_si256((const __m256i *)(const void *)at) : _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(const void *)at));
        if (stride != 16 && 2 * i + 1 < n) b = _mm256_inserti128_si256(b, _mm_loadu_si128((const __m128i *)(const void *)(at + stride)), 1);
        __m256i lo = _mm256_and_si256(b, m), hi = _mm256_and_si256(_mm256_srli_epi16(b, 4), m);
        if (five) { // byte j of half k: bit j (lo) or 16 + j (hi) of group 2i + k's 32 (heads[i / 2], 64-bit half i % 2 of lane k)
            const __m256i h = heads[i / 2], bit = _mm256_set1_epi64x((long long)0x8040201008040201ull);
            const char f0 = (char)(8 * (i % 2) + run_fifths_at(type)), f1 = (char)(f0 + 1), f2 = (char)(f0 + 2), f3 = (char)(f0 + 3); // (their bytes)
            __m256i first = _mm256_shuffle_epi8(h, _mm256_setr_epi8(f0, f0, f0, f0, f0, f0, f0, f0, f1, f1, f1, f1, f1, f1, f1, f1,
                                                                    f0, f0, f0, f0, f0, f0, f0, f0, f1, f1, f1, f1, f1, f1, f1, f1));
            __m256i second = _mm256_shuffle_epi8(h, _mm256_setr_epi8(f2, f2, f2, f2, f2, f2, f2, f2, f3, f3, f3, f3, f3, f3, f3, f3,
                                                                     f2, f2, f2, f2, f2, f2, f2, f2, f3, f3, f3, f3, f3, f3, f3, f3));
            lo = _mm256_or_si256(lo, _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(first, bit), bit), _mm256_set1_epi8(16)));
            hi = _mm256_or_si256(hi, _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(second, bit), bit), _mm256_set1_epi8(16)));
        }
        const int8_t *x = xa + (i / 2) * 128 + (i % 2) * 32;
        __m256i xlo = _mm256_loadu_si256((const __m256i *)(const void *)x), xhi = _mm256_loadu_si256((const __m256i *)(const void *)(x + 64));
        if (grid) lo = _mm256_shuffle_epi8(table, lo), hi = _mm256_shuffle_epi8(table, hi);
        if (vnni) v[i] = run_dpbusd_avx2(run_dpbusd_avx2(_mm256_setzero_si256(), lo, xlo), hi, xhi);
        else if (grid) v[i] = _mm256_add_epi32(run_dot32_i8(lo, xlo), run_dot32_i8(hi, xhi));
        else v[i] = _mm256_madd_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(lo, xlo), _mm256_maddubs_epi16(hi, xhi)), _mm256_set1_epi16(1)); // (pairs of 2 * 31 * 127)
    }
    __m256i c = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3])); // groups 0 2 4 6 | 1 3 5 7
    __m256i sums = _mm256_permutevar8x32_epi32(c, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    if (!offset_shift) return sums;
    __m256i first_n = _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    return _mm256_sub_epi32(sums, _mm256_slli_epi32(_mm256_maskload_epi32((const int *)(const void *)xsum, first_n), offset_shift));
}

// The blocks of 32 of the split-nibble types (Q4_1, Q5_0, Q5_1, IQ4_NL; run_dot_blocks' terms) with
// the arranged input: 8 blocks' terms per step (the last step n < 8, its terms added one by one).
LM_AVX2_FN static inline __attribute__((always_inline)) __m256 run_nibble_terms8_avx2(const unsigned char *p, int n, const int8_t *xa, const float *xs, const int32_t *xsum,
                                                                                      LmWeightType type, const int vnni) {
    const size_t bytes = (size_t)run_types[type].block_bytes;
    __m256i first_n = _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)), heads[2];
    run_heads8_avx2(p, bytes, n, heads);
    __m256i sums = run_nibble_sums8_avx2(p + run_nibbles_at(type), bytes, n, heads, xa, xsum, type, vnni);
    __m256 part = _mm256_mul_ps(_mm256_cvtepi32_ps(sums), run_head_halves8_avx2(heads, 0));
    if (run_types[type].has_min) { // d * qx - m * sum(x), m = -min
        __m256 offsets = _mm256_xor_ps(run_head_halves8_avx2(heads, 2), _mm256_set1_ps(-0.0f));
        part = _mm256_sub_ps(part, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_maskload_epi32((const int *)(const void *)xsum, first_n)), offsets));
    }
    return _mm256_mul_ps(part, _mm256_maskload_ps(xs, first_n));
}

LM_AVX2_FN static inline __attribute__((always_inline)) float run_dot_nibbles_avx2(const unsigned char *row, int cols, const int8_t *xa, const float *xs, const int32_t *xsum,
                                                                                  LmWeightType type, const int vnni) {
    int groups = cols / 32, g = 0;
    __m256 now = _mm256_setzero_ps(), next = now; // (run_turn_add)
    if (type == LM_IQ4_XS) // a block of 256 per step: 8 groups of 16 bytes at 8, the scales from run_scales8_avx2
        for (; g < groups; g += 8) {
            const unsigned char *blk = row + 136 * (size_t)(g / 8);
            __m256 ds, unused;
            run_scales8_avx2(blk, LM_IQ4_XS, &ds, &unused, &unused, &unused);
            __m256i sums = run_nibble_sums8_avx2(blk + 8, 16, 8, NULL, xa + 32 * g, xsum + g, type, vnni);
            run_turn_add(&now, &next, _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(sums), ds), _mm256_loadu_ps(xs + g)));
        }
    else
        for (; g + 8 <= groups; g += 8) run_turn_add(&now, &next, run_nibble_terms8_avx2(row + (size_t)run_types[type].block_bytes * (size_t)g, 8, xa + 32 * g, xs + g, xsum + g, type, vnni));
    float lanes[16], terms[8];
    run_turn_store(now, next, g / 8, lanes);
    if (g < groups) { // the last few blocks
        _mm256_storeu_ps(terms, run_nibble_terms8_avx2(row + (size_t)run_types[type].block_bytes * (size_t)g, groups - g, xa + 32 * g, xs + g, xsum + g, type, vnni));
        for (int i = 0; g + i < groups; i++) lanes[(g + i) % 16] += terms[i];
    }
    return run_sum_lanes256(_mm256_loadu_ps(lanes), _mm256_loadu_ps(lanes + 8));
}

// run_dot_blocks in one general AVX2 path (the type a constant), 8 terms at a time: the types with
// kernels of their own when the input lacks what those read (the groups' sums, the arranged input).
LM_AVX2_FN static inline __attribute__((always_inline)) float run_dot_blocks_avx2_typed(const unsigned char *p, int cols, const int8_t *xq, const float *xs,
                                                                                        const int32_t *xsum, LmWeightType type) {
    int groups = cols / 32, c = 0;
    __m256 now = _mm256_setzero_ps(), next = now; // (run_turn_add)
    for (; 8 * c + 8 <= groups; c++) {
        const unsigned char *at = p + (size_t)(256 / run_types[type].block_values) * (size_t)c * (size_t)run_types[type].block_bytes;
        for (int line = 0; line < 8 * 32 / run_types[type].block_values * run_types[type].block_bytes; line += 64) _mm_prefetch((const char *)at + line + LM_PREFETCH_BYTES, _MM_HINT_T0);
        run_turn_add(&now, &next, _mm256_mul_ps(run_blocks_chunk_avx2(p, c, 8, xq, xsum, type), _mm256_loadu_ps(xs + 8 * c)));
    }
    float lanes[16], wsum[8];
    run_turn_store(now, next, c, lanes);
    if (8 * c < groups) { // the last few groups (blocks of 32 only): their terms one by one
        int n = groups - 8 * c;
        _mm256_storeu_ps(wsum, run_blocks_chunk_avx2(p, c, n, xq, xsum, type));
        for (int g = 0; g < n; g++) lanes[(8 * c + g) % 16] += wsum[g] * xs[8 * c + g];
    }
    return run_sum_lanes256(_mm256_loadu_ps(lanes), _mm256_loadu_ps(lanes + 8));
}

// Rows r0..r1 of a GGUF block matrix with the quantized input token t (its group sums, sums of 16
// and arrangement for the split nibbles may be missing) through the AVX2 kernels, into
// out[0..r1 - r0): the type dispatched once, then a loop over rows per type, so the rows' reductions
// and scalings overlap (a call per row measured 3-11% slower on 2048 x 2048 matrices in cache).
LM_AVX2_FN static void run_rows_blocks_avx2(const LmMatrix *w, int r0, int r1, const LmBatch *in, int t, float *out) {
    const int8_t *xq = in->q + (size_t)t * (size_t)in->cols, *xa = in->qarranged ? in->qarranged + (size_t)t * (size_t)(in->cols + 128) : NULL;
    const float *xs = in->s + (size_t)t * (size_t)in->groups;
    const int32_t *xsum = in->xsum ? in->xsum + (size_t)t * (size_t)in->groups : NULL;
    const int32_t *xsum16 = xsum && in->xsum16 ? in->xsum16 + (size_t)t * (size_t)in->groups : NULL;
    const int vnni = in->kernels == LM_KERNELS_AVX2_VNNI;
    const unsigned char *p = (const unsigned char *)w->data;
    size_t rb = w->row_bytes;
    int cols = w->cols;
    assert(run_types[w->type].unpack && cols % run_types[w->type].block_values == 0);
#define LM_ROWS(call) { for (int r = r0; r < r1; r++) out[r - r0] = call; return; }
#define LM_ROW (p + (size_t)r * rb)
    switch (w->type) {
    case LM_Q8_0: LM_ROWS(run_dot_q8_q4_avx2(LM_ROW, cols, xq, xs, NULL, NULL, 0))
    case LM_Q4_0:
        if (xsum && xa) LM_ROWS(run_dot_q8_q4_avx2(LM_ROW, cols, xq, xs, xsum, xa, 1))
        if (xsum) LM_ROWS(run_dot_q8_q4_avx2(LM_ROW, cols, xq, xs, xsum, NULL, 1))
        break;
    case LM_Q4_K: if (xsum) LM_ROWS(run_dot_k4_avx2(LM_ROW, cols, xq, xs, xsum, LM_Q4_K)) break;
    case LM_Q5_K:
        if (xsum) LM_ROWS(run_dot_k4_avx2(LM_ROW, cols, xq, xs, xsum, LM_Q5_K))
        LM_ROWS(run_dot_blocks_avx2_typed(LM_ROW, cols, xq, xs, xsum, LM_Q5_K))
#define LM_RUNS16(T) \
    case T:                                                                           \
        if (xsum16) LM_ROWS(run_dot_k_runs16_avx2(LM_ROW, cols, xq, xs, xsum, xsum16, T)) \
        LM_ROWS(run_dot_blocks_avx2_typed(LM_ROW, cols, xq, xs, xsum, T))
    LM_RUNS16(LM_Q2_K) LM_RUNS16(LM_Q3_K) LM_RUNS16(LM_Q6_K)
#undef LM_RUNS16
#define LM_SPLIT_NIBBLES(T) \
    case T:                                                                                                   \
        if (xa && xsum && vnni) LM_ROWS(run_dot_nibbles_avx2(LM_ROW, cols, xa, xs, xsum, T, 1))                  \
        if (xa && xsum) LM_ROWS(run_dot_nibbles_avx2(LM_ROW, cols, xa, xs, xsum, T, 0))                          \
        LM_ROWS(run_dot_blocks_avx2_typed(LM_ROW, cols, xq, xs, xsum, T))
    LM_SPLIT_NIBBLES(LM_Q4_1) LM_SPLIT_NIBBLES(LM_Q5_0) LM_SPLIT_NIBBLES(LM_Q5_1) LM_SPLIT_NIBBLES(LM_IQ4_NL) LM_SPLIT_NIBBLES(LM_IQ4_XS)
#undef LM_SPLIT_NIBBLES
    default: break;
    }
    LM_ROWS(run_dot_blocks(w, r, xq, xs)) // (Q4_0 and Q4_K without the input's group sums: the definition)
#undef LM_ROW
#undef LM_ROWS
}

// A block unpacked into u exactly as its type's run_unpack_* does, the values and a 256-block's
// scales decoded in registers: the prompt tiles unpack their rows with it (the scalar definition took
// a fifth of a 4-bit prompt's matmul time).
LM_AVX2_FN static inline __attribute__((always_inline)) void run_unpack_avx2_typed(const unsigned char *b, LmBlock *u, LmWeightType type) {
    if (run_types[type].block_values == 32) {
        _mm256_storeu_si256((__m256i *)(void *)u->q, run_values32_avx2(b, 0, type));
        run_same_scale(u, 2, _cvtsh_ss(run_u16_at(b)), run_types[type].has_min ? -_cvtsh_ss(run_u16_at(b + 2)) : 0.0f); // (d at 0, the offset at 2)
        return;
    }
    for (int j = 0; j < 8; j++) _mm256_storeu_si256((__m256i *)(void *)(u->q + 32 * j), run_values32_avx2(b, j, type));
    __m256 d0, d1, m0, m1;
    run_scales8_avx2(b, type, &d0, &d1, &m0, &m1);
    __m256 dl = _mm256_unpacklo_ps(d0, d1), dh = _mm256_unpackhi_ps(d0, d1), ml = _mm256_unpacklo_ps(m0, m1), mh = _mm256_unpackhi_ps(m0, m1);
    _mm256_storeu_ps(u->d, _mm256_permute2f128_ps(dl, dh, 0x20)), _mm256_storeu_ps(u->d + 8, _mm256_permute2f128_ps(dl, dh, 0x31)); // (runs 0-7, 8-15)
    _mm256_storeu_ps(u->m, _mm256_permute2f128_ps(ml, mh, 0x20)), _mm256_storeu_ps(u->m + 8, _mm256_permute2f128_ps(ml, mh, 0x31));
}

LM_AVX2_FN static void run_unpack_avx2(LmWeightType type, const unsigned char *b, LmBlock *u) {
    switch (type) {
#define LM_UNPACK_CASE(T) case T: run_unpack_avx2_typed(b, u, T); break;
        LM_UNPACK_CASE(LM_Q8_0) LM_UNPACK_CASE(LM_Q4_0) LM_UNPACK_CASE(LM_Q4_1) LM_UNPACK_CASE(LM_Q5_0) LM_UNPACK_CASE(LM_Q5_1) LM_UNPACK_CASE(LM_Q2_K)
        LM_UNPACK_CASE(LM_Q3_K) LM_UNPACK_CASE(LM_Q4_K) LM_UNPACK_CASE(LM_Q5_K) LM_UNPACK_CASE(LM_Q6_K) LM_UNPACK_CASE(LM_IQ4_NL) LM_UNPACK_CASE(LM_IQ4_XS)
#undef LM_UNPACK_CASE
    default: run_types[type].unpack(b, u); break;
    }
}


// One row of w with input token t through the AVX2 kernels; 0 when none applies (*value unset).
static int run_row_dot_avx2(const LmMatrix *w, int row, const LmBatch *in, int t, float *value) {
    if (!run_types[w->type].integer) {
        *value = run_dot_float_avx2(w, row, in->f + (size_t)t * (size_t)in->ld);
        return 1;
    }
    if (in->q == NULL) return 0; // exact mode: the plain decode
    const int8_t *xq = in->q + (size_t)t * (size_t)in->cols;
    const float *xs = in->s + (size_t)t * (size_t)in->groups;
    if (run_int_avx2_ok(w)) {
        *value = run_dot_int_avx2(w, row, xq, xs, in->xsum + (size_t)t * (size_t)in->groups,
                                  in->qarranged ? in->qarranged + (size_t)t * (size_t)(in->cols + 128) : NULL);
        return 1;
    }
    if (run_types[w->type].unpack == NULL) return 0; // (llama2.c's v2 groups that straddle rows)
    run_rows_blocks_avx2(w, row, row + 1, in, t, value);
    return 1;
}

// The packed inputs of the AVX2 prefill tiles: per 8 tokens, the values as int16 in pairs per token
// (packed) and as bytes in fours (packed8), and the scales with tokens in the lanes. Missing tokens
// of the last tile are zeros.
static void run_pack_batch16(LmBatch *b, int threads) {
    (void)threads; // (without OpenMP)
    int cols = b->cols, tiles = (b->n + 7) / 8;
    LM_PARALLEL_FOR_IF(threads, b->n >= 16)
    for (int tile = 0; tile < tiles; tile++) {
        int16_t *xp = (int16_t *)(void *)b->packed + (size_t)tile * (size_t)cols * 8;
        float *sp = b->spacked + (size_t)tile * (size_t)b->groups * 8;
        for (int k = 0; k < 8; k++) {
            int t = tile * 8 + k;
            const int8_t *q = b->q + (size_t)t * (size_t)cols;
            for (int j = 0; j < cols; j += 2) {
                xp[(size_t)j * 8 + (size_t)k * 2] = t < b->n ? q[j] : 0;
                xp[(size_t)j * 8 + (size_t)k * 2 + 1] = t < b->n ? q[j + 1] : 0;
            }
            int8_t *x8 = b->packed8 + (size_t)tile * (size_t)cols * 8;
            for (int j = 0; j < cols; j += 4) {
                uint32_t four = 0;
                if (t < b->n) memcpy(&four, q + j, 4);
                memcpy(x8 + (size_t)j * 8 + (size_t)k * 4, &four, 4);
            }
            for (int g = 0; g < b->groups; g++) sp[(size_t)g * 8 + (size_t)k] = t < b->n ? b->s[(size_t)t * b->groups + (size_t)g] : 0.0f;
        }
    }
}

// Integer rows unpacked for the AVX2 prefill tiles: values as int16, and per run of values that
// share a scale its d and m. A term is the stretch of values one input scale covers (32 for GGUF's
// blocks, the group for run.c's groups), made of 1 or 2 runs (Q2_K, Q3_K, Q6_K: 16-value runs).
typedef struct {
    int16_t *q;   // (rows, cols)
    float *d, *m; // (rows, cols / run)
    int term, run, has_min;
} LmUnpackedRows;

// Rows r0..r1 of an integer matrix into u (the scratch `room`); 0 when the matrix has no such form.
static int run_unpack_rows16(const LmMatrix *w, int r0, int r1, float *room, LmUnpackedRows *u) {
    const LmTypeTraits *type = &run_types[w->type];
    int cols = w->cols, rows = r1 - r0;
    if (type->unpack) {
        u->term = 32, u->run = type->scale_values, u->has_min = type->has_min;
    } else if (w->type == LM_Q8_GROUPS || w->type == LM_Q4_GROUPS) {
        if (w->group_size % 32 || cols % w->group_size || w->group_size > LM_MAX_Q4_GROUP) return 0; // (groups within rows)
        u->term = u->run = w->group_size, u->has_min = 0;
    } else return 0;
    size_t runs = (size_t)cols / (size_t)u->run;
    u->q = (int16_t *)(void *)room;
    u->d = room + ((size_t)rows * (size_t)cols + 1) / 2;
    u->m = u->d + (size_t)rows * runs;
    for (int r = 0; r < rows; r++) {
        int16_t *q = u->q + (size_t)r * (size_t)cols;
        float *d = u->d + (size_t)r * runs, *m = u->m + (size_t)r * runs;
        if (type->unpack) {
            const unsigned char *p = (const unsigned char *)w->data + (size_t)(r0 + r) * w->row_bytes;
            LmBlock b;
            for (int k = 0; k < cols / type->block_values; k++) {
                run_unpack_avx2(w->type, p + (size_t)k * (size_t)type->block_bytes, &b);
                for (int i = 0; i < type->block_values; i++) q[k * type->block_values + i] = b.q[i];
                for (int i = 0; i < type->block_values / u->run; i++) { // (d and m are per 16 values)
                    d[k * type->block_values / u->run + i] = b.d[i * u->run / 16];
                    m[k * type->block_values / u->run + i] = b.m[i * u->run / 16];
                }
            }
        } else {
            int gs = w->group_size;
            for (int g = 0; g < cols / gs; g++) {
                size_t wg = (size_t)(r0 + r) * (size_t)(cols / gs) + (size_t)g;
                int8_t vals[LM_MAX_Q4_GROUP];
                if (w->type == LM_Q8_GROUPS) memcpy(vals, (const int8_t *)w->data + wg * (size_t)gs, (size_t)gs);
                else run_unpack_q4(vals, w, wg);
                for (int i = 0; i < gs; i++) q[g * gs + i] = vals[i];
                d[g] = run_group_scale(w, wg), m[g] = 0.0f;
            }
        }
    }
    return 1;
}

// The AVX2 prompt tiles' float steps, for 4 rows x 8 tokens: run h of a term (qx: its exact int32
// sums; xsum: the inputs' sums), d * qx - m * sum(x) with the run's d and m (index `at`), added to the
// term's sum in run order (run_dot_blocks' order).
LM_AVX2_FN static inline __attribute__((always_inline)) void run_run_terms_avx2(const __m256i *qx, __m256 xsum, const float *const *wd, const float *const *wm, int at, int has_min,
                                                 int h, __m256 *wsum) {
    for (int i = 0; i < 4; i++) {
        __m256 part = _mm256_mul_ps(_mm256_cvtepi32_ps(qx[i]), _mm256_set1_ps(wd[i][at]));
        if (has_min) part = _mm256_sub_ps(part, _mm256_mul_ps(xsum, _mm256_set1_ps(wm[i][at])));
        wsum[i] = h == 0 ? part : _mm256_add_ps(wsum[i], part);
    }
}

// A row's result in an AVX2 prompt tile: run_sum_lanes of 16 vectors of partial sums (8 tokens
// across each), stored at `to` (8 tokens).
LM_AVX2_FN static inline __attribute__((always_inline)) void run_sum_parts256(__m256 *part, float *to) {
    for (int half = 8; half > 0; half /= 2)
        for (int k = 0; k < half; k++) part[k] = _mm256_add_ps(part[k], part[k + half]);
    _mm256_storeu_ps(to, part[0]);
}

// One row's step of run_int_run_avx2's int16 way: two values (w, int16) against two inputs of 8
// tokens (x; y for the second token tile), added to *lo and *hi.
LM_AVX2_FN static inline __attribute__((always_inline)) void run_words_step_avx2(__m256i *lo, __m256i *hi, const unsigned char *w, __m256i x, __m256i y, const int halves) {
    __m256i w2 = run_u32_bcast(w);
    *lo = _mm256_add_epi32(*lo, _mm256_madd_epi16(x, w2));
    if (halves == 2) *hi = _mm256_add_epi32(*hi, _mm256_madd_epi16(y, w2));
}

// One row's step of its byte way: eight values (w, unsigned bytes) against the inputs' bytes (xa, xb
// four values each), in pairs summed in 16 bits.
LM_AVX2_FN static inline __attribute__((always_inline)) void run_bytes_step_avx2(__m256i *sum, const unsigned char *w, __m256i xa, __m256i xb) {
    __m256i wa = run_u32_bcast(w), wb = run_u32_bcast(w + 4);
    *sum = _mm256_add_epi32(*sum, _mm256_madd_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(wa, xa), _mm256_maddubs_epi16(wb, xb)), _mm256_set1_epi16(1)));
}

// An empty asm that takes 4 accumulators of a tile step in vector registers and gives them back:
// without it gcc 12 keeps each loop-carried sum of the AVX2 ways in a second register and copies it
// back every step (8 vmovdqa in a 29-instruction loop: IQ4_XS and Q8_0 prefill 12-18% slower, Q4_K_M
// 4-7%). The AVX-VNNI loop measured the same with it and without.
#define LM_KEEP_IN_REGISTERS(a0, a1, a2, a3) __asm__("" : "+x"(a0), "+x"(a1), "+x"(a2), "+x"(a3))

// The exact int32 sums of one run of values (`run` of them) of 4 rows (w[i]: the row's bytes, or
// int16 values when neither small nor vnni) with the inputs of 8 tokens (x[0]; and 8 more at x[1]
// when halves is 2), in the layouts and ways run_int_tile_avx2 describes; bias: each row's start.
// The accumulators are named locals so that they stay in registers.
LM_AVX2_FN static inline __attribute__((always_inline)) void run_int_run_avx2(const unsigned char *const *w, const void *const *x, int run, const __m256i *bias,
                                                                              __m256i *lo, __m256i *hi, const int small, const int vnni, const int halves) {
    __m256i a0 = bias[0], a1 = bias[1], a2 = bias[2], a3 = bias[3], c0 = bias[0], c1 = bias[1], c2 = bias[2], c3 = bias[3];
    const unsigned char *x0 = (const unsigned char *)x[0], *x1 = (const unsigned char *)x[1];
    if (vnni) { // four values of 4 rows x 8 tokens per step and token tile
        for (int k = 0; k < run; k += 4) {
            __m256i b0 = run_u32_bcast(w[0] + k), b1 = run_u32_bcast(w[1] + k), b2 = run_u32_bcast(w[2] + k), b3 = run_u32_bcast(w[3] + k);
            __m256i xv = _mm256_loadu_si256((const __m256i *)(const void *)(x0 + (size_t)k * 8));
            if (!small) xv = _mm256_xor_si256(xv, _mm256_set1_epi8((char)0x80)); // x + 128
            run_dpbusd4_avx2(&a0, &a1, &a2, &a3, xv, b0, b1, b2, b3, small);
            if (halves == 2) {
                xv = _mm256_loadu_si256((const __m256i *)(const void *)(x1 + (size_t)k * 8));
                if (!small) xv = _mm256_xor_si256(xv, _mm256_set1_epi8((char)0x80));
                run_dpbusd4_avx2(&c0, &c1, &c2, &c3, xv, b0, b1, b2, b3, small);
            }
        }
    } else if (small) { // eight values per step: two byte pairs summed in 16 bits, then to 32 (one token tile)
        assert(halves == 1);
        for (int k = 0; k < run; k += 8) {
            __m256i xa = _mm256_loadu_si256((const __m256i *)(const void *)(x0 + (size_t)k * 8)), xb = _mm256_loadu_si256((const __m256i *)(const void *)(x0 + (size_t)k * 8 + 32));
            run_bytes_step_avx2(&a0, w[0] + k, xa, xb);
            run_bytes_step_avx2(&a1, w[1] + k, xa, xb);
            run_bytes_step_avx2(&a2, w[2] + k, xa, xb);
            run_bytes_step_avx2(&a3, w[3] + k, xa, xb);
            LM_KEEP_IN_REGISTERS(a0, a1, a2, a3);
        }
    } else { // two int16 values per step
        for (int k = 0; k < run; k += 2) {
            __m256i xv = _mm256_loadu_si256((const __m256i *)(const void *)(x0 + (size_t)k * 16));
            __m256i yv = halves == 2 ? _mm256_loadu_si256((const __m256i *)(const void *)(x1 + (size_t)k * 16)) : xv;
            run_words_step_avx2(&a0, &c0, w[0] + 2 * (size_t)k, xv, yv, halves);
            run_words_step_avx2(&a1, &c1, w[1] + 2 * (size_t)k, xv, yv, halves);
            run_words_step_avx2(&a2, &c2, w[2] + 2 * (size_t)k, xv, yv, halves);
            run_words_step_avx2(&a3, &c3, w[3] + 2 * (size_t)k, xv, yv, halves);
            LM_KEEP_IN_REGISTERS(a0, a1, a2, a3);
            if (halves == 2) LM_KEEP_IN_REGISTERS(c0, c1, c2, c3);
        }
    }
    lo[0] = a0, lo[1] = a1, lo[2] = a2, lo[3] = a3, hi[0] = c0, hi[1] = c1, hi[2] = c2, hi[3] = c3;
}

// run_matmul_int_block_avx2's steps over the unpacked rows, 4 rows x 8 tokens at a time (x `halves`
// such token tiles: two share each weight broadcast, which is what bounds these loops), the exact
// int32 sums of each run of values, then the float terms in run_dot_int's and run_dot_blocks' order
// (the same bits). Two ways to the int sums, `small` a constant at each call:
//   - int16 pairs of values and inputs (vpmaddwd), for any values;
//   - rows whose values all lie in [-32, 31] (4- to 6-bit types): each value + 32 as an unsigned byte
//     against the input's bytes (vpmaddubsw: two products per 16-bit lane, at most 2 * 63 * 127, so two
//     such sums still fit), 32 * sum(x) of the run taken off afterwards; ub holds those bytes.
// With vnni (the avx2-vnni set), vpdpbusd takes four bytes at once: the small way's bytes as they are;
// for any values, the values as signed bytes against the input + 128 (unsigned), 128 * the run's sum
// of values (wrun: rows x runs) taken off.
// tile: the first of the token tiles; xrun: room for the sums of each 16 inputs (halves x cols / 16
// x 8 tokens); results: (rows, 8 * halves) the tiles' results.
LM_AVX2_FN static inline __attribute__((always_inline)) void run_int_tile_avx2(const LmBatch *in, const LmUnpackedRows *u, int rows, int cols, const unsigned char *ub,
                                                                               int32_t *xrun, const int32_t *wrun, float *results, int tile, const int small,
                                                                               const int vnni, const int halves) {
    int term = u->term, run = u->run, runs = cols / run, need_sums = small || u->has_min, wide = vnni && !small, width = 8 * halves;
    __m256i ones16 = _mm256_set1_epi16(1), ones8 = _mm256_set1_epi8(1);
    const int16_t *x16[2];
    const int8_t *x8[2];
    const float *xsp[2];
    int32_t *xr[2];
    for (int h = 0; h < halves; h++) {
        x16[h] = (const int16_t *)(const void *)in->packed + (size_t)(tile + h) * (size_t)cols * 8;
        x8[h] = in->packed8 + (size_t)(tile + h) * (size_t)cols * 8;
        xsp[h] = in->spacked + (size_t)(tile + h) * (size_t)in->groups * 8;
        xr[h] = xrun + (size_t)h * (size_t)cols / 2;
        for (int j = 0; need_sums && j < cols / 16; j++) { // the sum of each 16 inputs, per token
            __m256i acc = _mm256_setzero_si256();
            for (int k = 0; k < 16; k += small ? 4 : 2) {
                __m256i x = _mm256_loadu_si256((const __m256i *)(const void *)(small ? (const void *)(x8[h] + (size_t)(16 * j + k) * 8) : (const void *)(x16[h] + (size_t)(16 * j + k) * 8)));
                acc = _mm256_add_epi32(acc, _mm256_madd_epi16(small ? _mm256_maddubs_epi16(ones8, x) : x, ones16));
            }
            _mm256_storeu_si256((__m256i *)(void *)(xr[h] + (size_t)j * 8), acc);
        }
    }
    for (int r = 0; r < rows; r += 4) {
        int nr = rows - r < 4 ? rows - r : 4;
        const float *wd[4], *wm[4];
        size_t row_at[4];
        for (int i = 0; i < 4; i++) {
            int ri = r + (i < nr ? i : 0);
            row_at[i] = (size_t)ri * (size_t)cols;
            wd[i] = u->d + (size_t)ri * (size_t)runs, wm[i] = u->m + (size_t)ri * (size_t)runs;
        }
        __m256 part[2][4][16]; // the 16 lanes of each row's terms, with tokens across the vector
        for (int h = 0; h < halves; h++)
            for (int i = 0; i < 4; i++) for (int k = 0; k < 16; k++) part[h][i][k] = _mm256_setzero_ps();
        for (int t = 0; t < cols / term; t++) {
            __m256 wsum[2][4];
            for (int s = 0; s < term / run; s++) { // the runs of this term, in order
                int first = t * term + s * run;
                __m256i isum[2][4];
                const unsigned char *wq[4];
                for (int i = 0; i < 4; i++) wq[i] = small || vnni ? ub + row_at[i] + first : (const unsigned char *)(u->q + row_at[i] + first);
                const void *xq[2] = {small || vnni ? (const void *)(x8[0] + (size_t)first * 8) : (const void *)(x16[0] + (size_t)first * 8),
                                     small || vnni ? (const void *)(x8[halves - 1] + (size_t)first * 8) : (const void *)(x16[halves - 1] + (size_t)first * 8)};
                __m256i bias[4];
                for (int i = 0; i < 4; i++) bias[i] = wide ? _mm256_set1_epi32(-128 * wrun[row_at[i] / (size_t)run + (size_t)(first / run)]) : _mm256_setzero_si256();
                run_int_run_avx2(wq, xq, run, bias, isum[0], isum[1], small, vnni, halves);
                for (int h = 0; h < halves; h++) {
                    __m256i run_sum = _mm256_setzero_si256();
                    for (int j = 0; need_sums && j < run / 16; j++)
                        run_sum = _mm256_add_epi32(run_sum, _mm256_loadu_si256((const __m256i *)(const void *)(xr[h] + (size_t)(first / 16 + j) * 8)));
                    for (int i = 0; small && i < 4; i++) isum[h][i] = _mm256_sub_epi32(isum[h][i], _mm256_slli_epi32(run_sum, 5)); // - 32 * sum(x)
                    run_run_terms_avx2(isum[h], _mm256_cvtepi32_ps(run_sum), wd, wm, first / run, u->has_min, s, wsum[h]);
                }
            }
            for (int h = 0; h < halves; h++) {
                __m256 xs = _mm256_loadu_ps(xsp[h] + (size_t)t * 8);
                for (int i = 0; i < 4; i++) part[h][i][t % 16] = _mm256_add_ps(part[h][i][t % 16], _mm256_mul_ps(wsum[h][i], xs));
            }
        }
        for (int h = 0; h < halves; h++)
            for (int i = 0; i < nr; i++) run_sum_parts256(part[h][i], results + (size_t)(r + i) * (size_t)width + (size_t)(8 * h));
    }
}

// run_int_tile_avx2 over every token, two token tiles at a time while two are left, except in two
// cases that measured slower so: the byte way without VNNI (its 8 sums and 4 input vectors do not
// fit the 16 registers of an AVX2 build) and runs of 16 values (twice the float steps per value).
LM_AVX2_FN static inline __attribute__((always_inline)) void run_int_tiles_avx2(const LmBatch *in, const LmUnpackedRows *u, int rows, int cols, unsigned char *ub, int32_t *xrun,
                                                                                int32_t *wrun, float *out, int ld, int r0, const int small, const int vnni) {
    const int run = u->run, wide = vnni && !small;
    const size_t values = (size_t)rows * (size_t)cols, runs = values / (size_t)run;
    const int16_t *q = u->q; // (locals: stores through ub and wrun may alias u's fields as far as the compiler knows)
    float results[LM_ROW_BLOCK * 16]; // (rows, 16 tokens) a tile pair's results
    assert(rows <= LM_ROW_BLOCK && cols % 32 == 0); // (run_unpack_rows16's terms: 32 values or groups of a multiple of 32)
    for (size_t i = 0; (small || wide) && i < values; i += 32) { // the values as bytes (small: + 32): int16 packed to int8 (they fit), lanes back in order
        __m256i packed = _mm256_packs_epi16(_mm256_loadu_si256((const __m256i *)(const void *)(q + i)), _mm256_loadu_si256((const __m256i *)(const void *)(q + i + 16)));
        packed = _mm256_permute4x64_epi64(packed, 0xd8);
        _mm256_storeu_si256((__m256i *)(void *)(ub + i), small ? _mm256_add_epi8(packed, _mm256_set1_epi8(32)) : packed);
    }
    for (size_t i = 0; wide && i < runs; i++) {
        int32_t sum = 0;
        for (int k = 0; k < run; k++) sum += q[i * (size_t)run + (size_t)k];
        wrun[i] = sum;
    }
    for (int tile = 0; tile * 8 < in->n;) {
        int halves = in->n - tile * 8 > 8 && u->run >= 32 && !(small && !vnni) ? 2 : 1, nt = in->n - tile * 8 < 8 * halves ? in->n - tile * 8 : 8 * halves;
        if (halves == 2 && !(small && !vnni)) run_int_tile_avx2(in, u, rows, cols, ub, xrun, wrun, results, tile, small, vnni, 2); // (a constant test: no such copy)
        else run_int_tile_avx2(in, u, rows, cols, ub, xrun, wrun, results, tile, small, vnni, 1);
        run_store_block(results, rows, nt, 8 * halves, out + (size_t)(tile * 8) * ld + (size_t)r0, ld);
        tile += halves;
    }
}

// run_int_tiles_avx2's four cases, each a function of its own: compiled as one, gcc's register
// allocation of each changed with the others (up to 30% apart). Tuned generic like the float tiles:
// gcc's Zen tuning folded the inputs' load into each row's multiply, four loads where one does
// (Q8_0 without VNNI, 110M prefill: about 1.35x with the token tile pairs).
#define LM_INT_TILES_ARGS const LmBatch *in, const LmUnpackedRows *u, int rows, int cols, unsigned char *ub, int32_t *xrun, int32_t *wrun, float *out, int ld, int r0
LM_AVX2_TILE_FN static __attribute__((noinline)) void run_int_tiles_avx2_words(LM_INT_TILES_ARGS) { run_int_tiles_avx2(in, u, rows, cols, ub, xrun, wrun, out, ld, r0, 0, 0); }
LM_AVX2_TILE_FN static __attribute__((noinline)) void run_int_tiles_avx2_bytes(LM_INT_TILES_ARGS) { run_int_tiles_avx2(in, u, rows, cols, ub, xrun, wrun, out, ld, r0, 1, 0); }
LM_AVX2_TILE_FN static __attribute__((noinline)) void run_int_tiles_avx2_vnni_words(LM_INT_TILES_ARGS) { run_int_tiles_avx2(in, u, rows, cols, ub, xrun, wrun, out, ld, r0, 0, 1); }
LM_AVX2_TILE_FN static __attribute__((noinline)) void run_int_tiles_avx2_vnni_bytes(LM_INT_TILES_ARGS) { run_int_tiles_avx2(in, u, rows, cols, ub, xrun, wrun, out, ld, r0, 1, 1); }
#undef LM_INT_TILES_ARGS

// Integer matmul of rows r0..r1 (at most LM_ROW_BLOCK) for every token: the rows unpacked once
// (run_unpack_rows16), then run_int_tiles_avx2. Returns 0 (nothing done) when the matrix has no
// unpacked form or the thread no scratch.
LM_AVX2_FN static int run_matmul_int_block_avx2(const LmMatrix *w, int r0, int r1, const LmBatch *in, float *out, int ld, int vnni) {
    int cols = w->cols, rows = r1 - r0;
    float *room = run_thread_scratch(in, (size_t)LM_ROW_BLOCK * (size_t)cols / 2 + 3 * (size_t)LM_ROW_BLOCK * (size_t)cols / 16 + (size_t)cols +
                                             (size_t)LM_ROW_BLOCK * (size_t)cols / 4 + 16);
    LmUnpackedRows u;
    if (room == NULL || !run_unpack_rows16(w, r0, r1, room, &u)) return 0;
    if (in->groups * u.term != cols) return 0; // (the input's groups are the terms)
    int32_t *xrun = (int32_t *)(void *)(u.m + (size_t)rows * (size_t)(cols / u.run)); // (2 tiles, cols / 16, 8 tokens)
    unsigned char *ub = (unsigned char *)(void *)(xrun + (size_t)cols);          // (rows, cols)
    int32_t *wrun = (int32_t *)(void *)(ub + ((size_t)rows * (size_t)cols + 3) / 4 * 4); // (rows, cols / run), 4-aligned after ub
    int16_t lo = 0, hi = 0; // (a min and max without early exit: the compiler vectorizes them)
    for (size_t i = 0; i < (size_t)rows * (size_t)cols; i++) lo = u.q[i] < lo ? u.q[i] : lo, hi = u.q[i] > hi ? u.q[i] : hi;
    int small = in->packed8 != NULL && lo >= -32 && hi <= 31; // every value in [-32, 31]: the byte way
    static void (*const tiles[2][2])(const LmBatch *, const LmUnpackedRows *, int, int, unsigned char *, int32_t *, int32_t *, float *, int, int) = {
        {run_int_tiles_avx2_words, run_int_tiles_avx2_bytes}, {run_int_tiles_avx2_vnni_words, run_int_tiles_avx2_vnni_bytes}};
    tiles[vnni][small](in, &u, rows, cols, ub, xrun, wrun, out, ld, r0);
    return 1;
}

// ---- Attention over the KV cache in 8 lanes: a tile's 16 positions as two vectors (and the softmax).

// Key dimension d of a tile's positions 8 * half .. 8 * half + 7 as floats.
LM_AVX2_FN static inline __m256 run_key_dim8(const unsigned char *tile, int d, int half, LmWeightType type) {
    size_t at = 16 * (size_t)d + 8 * (size_t)half; // (the element)
    switch (type) {
    case LM_F16: return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(tile + 2 * at)));
    case LM_BF16: return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(const void *)(tile + 2 * at))), 16));
    case LM_Q8_0: return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(tile + at))));
    default: return _mm256_loadu_ps((const float *)(const void *)tile + at);
    }
}

// run_tile_scores_avx512_typed with each 16-lane vector as two; Q8_0 sums by AVX-VNNI's vpdpbusd as
// there with vnni (the avx2-vnni set), else by vpmaddubsw.
LM_AVX2_FMA_FN static inline void run_tile_scores_avx2_typed(const unsigned char *tile, int hs, const LmQuery *q, int nq, float *const *scores,
                                                         LmWeightType type, int vnni) {
    for (int r0 = 0; r0 < nq; r0 += 4) {
        const LmQuery *qr[4];
        for (int i = 0; i < 4; i++) qr[i] = &q[r0 + i < nq ? r0 + i : nq - 1];
        __m256 acc[8];
        for (int i = 0; i < 8; i++) acc[i] = _mm256_setzero_ps();
        if (type == LM_Q8_0) { // (|q| * sign(k, q) in vpmaddubsw: pairs of at most 2 * 127 * 127, no saturation)
            const __m256i ones = _mm256_set1_epi16(1);
            for (int g = 0; g < hs / 32; g++) {
                __m256i isum[8];
                for (int i = 0; i < 8; i++) isum[i] = _mm256_setzero_si256();
                for (int d4 = 8 * g; d4 < 8 * g + 8; d4++) {
                    __m256i k0 = _mm256_loadu_si256((const __m256i *)(const void *)(tile + 64 * (size_t)d4));
                    __m256i k1 = _mm256_loadu_si256((const __m256i *)(const void *)(tile + 64 * (size_t)d4 + 32));
                    if (vnni) { // (as the AVX-512 kernel: keys + 128, unsigned, into vpdpbusd; 128 * the query's sum off after)
                        const __m256i offset = _mm256_set1_epi8((char)0x80);
                        __m256i qv[4];
                        for (int i = 0; i < 4; i++) qv[i] = run_u32_bcast((const unsigned char *)qr[i]->q + 4 * d4);
                        run_dpbusd4_avx2(&isum[0], &isum[2], &isum[4], &isum[6], _mm256_xor_si256(k0, offset), qv[0], qv[1], qv[2], qv[3], 0);
                        run_dpbusd4_avx2(&isum[1], &isum[3], &isum[5], &isum[7], _mm256_xor_si256(k1, offset), qv[0], qv[1], qv[2], qv[3], 0);
                        continue;
                    }
                    for (int i = 0; i < 4; i++) {
                        int32_t four;
                        memcpy(&four, qr[i]->q + 4 * d4, 4);
                        __m256i qv = _mm256_set1_epi32(four), qa = _mm256_abs_epi8(qv);
                        isum[2 * i] = _mm256_add_epi32(isum[2 * i], _mm256_madd_epi16(_mm256_maddubs_epi16(qa, _mm256_sign_epi8(k0, qv)), ones));
                        isum[2 * i + 1] = _mm256_add_epi32(isum[2 * i + 1], _mm256_madd_epi16(_mm256_maddubs_epi16(qa, _mm256_sign_epi8(k1, qv)), ones));
                    }
                }
                __m256 s0 = run_key_dim8(tile + (size_t)hs * LM_KEY_TILE, g, 0, LM_F16), s1 = run_key_dim8(tile + (size_t)hs * LM_KEY_TILE, g, 1, LM_F16);
                for (int i = 0; vnni && i < 8; i++) isum[i] = _mm256_sub_epi32(isum[i], _mm256_set1_epi32(128 * qr[i / 2]->sum[g]));
                for (int i = 0; i < 4; i++) {
                    __m256 qs = _mm256_set1_ps(qr[i]->scale[g]);
                    acc[2 * i] = _mm256_add_ps(acc[2 * i], _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(isum[2 * i]), s0), qs));
                    acc[2 * i + 1] = _mm256_add_ps(acc[2 * i + 1], _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(isum[2 * i + 1]), s1), qs));
                }
            }
        } else {
            for (int d = 0; d < hs; d++) {
                __m256 k0 = run_key_dim8(tile, d, 0, type), k1 = run_key_dim8(tile, d, 1, type);
                for (int i = 0; i < 4; i++) {
                    __m256 qd = _mm256_set1_ps(qr[i]->f[d]);
                    acc[2 * i] = _mm256_fmadd_ps(qd, k0, acc[2 * i]);
                    acc[2 * i + 1] = _mm256_fmadd_ps(qd, k1, acc[2 * i + 1]);
                }
            }
        }
        for (int i = 0; i < 4 && r0 + i < nq; i++) {
            _mm256_storeu_ps(scores[r0 + i], acc[2 * i]);
            _mm256_storeu_ps(scores[r0 + i] + 8, acc[2 * i + 1]);
        }
    }
}

LM_AVX2_FMA_FN static void run_tile_scores_avx2(const unsigned char *tile, LmWeightType type, int hs, const LmQuery *q, int nq, float *const *scores,
                                                int vnni) {
    switch (type) {
    case LM_F16: run_tile_scores_avx2_typed(tile, hs, q, nq, scores, LM_F16, 0); break;
    case LM_BF16: run_tile_scores_avx2_typed(tile, hs, q, nq, scores, LM_BF16, 0); break;
    case LM_Q8_0:
        if (vnni) run_tile_scores_avx2_typed(tile, hs, q, nq, scores, LM_Q8_0, 1);
        else run_tile_scores_avx2_typed(tile, hs, q, nq, scores, LM_Q8_0, 0);
        break;
    default: run_tile_scores_avx2_typed(tile, hs, q, nq, scores, LM_F32, 0); break;
    }
}

// Eight values from value e of a row as floats (e a multiple of 8; Q8_0: the integers alone, their
// block's scale going into the weight).
LM_AVX2_FN static inline __m256 run_value8(const unsigned char *row, int e, LmWeightType type) {
    switch (type) {
    case LM_F16: return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)((const uint16_t *)(const void *)row + e)));
    case LM_BF16:
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(const void *)((const uint16_t *)(const void *)row + e))), 16));
    case LM_Q8_0: return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(row + 34 * (size_t)(e / 32) + 2 + e % 32))));
    default: return _mm256_loadu_ps((const float *)(const void *)row + e);
    }
}

// run_q8_weights_avx512 for one block in 8 lanes: w[i][t] = pr[i][t] * row t's scale of the block.
LM_AVX2_FMA_FN static inline void run_q8_weights_avx2(const unsigned char *rows, size_t row_bytes, int count, int block, const float *const *pr,
                                                      float w[4][LM_VALUE_ROWS]) {
    assert(count <= LM_VALUE_ROWS);
    const __m256i at = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32((int)row_bytes)), low = _mm256_set1_epi32(0xffff);
    int t = 0;
    for (; t + 8 <= count; t += 8) { // (each gathered dword: the scale in its low half, then two integers)
        __m256i scales = _mm256_and_si256(_mm256_i32gather_epi32((const int *)(const void *)(rows + (size_t)t * row_bytes + 34 * (size_t)block), at, 1), low);
        __m256 d = _mm256_cvtph_ps(_mm256_castsi256_si128(_mm256_permute4x64_epi64(_mm256_packus_epi32(scales, scales), 0x08)));
        for (int i = 0; i < 4; i++) _mm256_storeu_ps(&w[i][t], _mm256_mul_ps(_mm256_loadu_ps(pr[i] + t), d));
    }
    for (; t < count; t++) {
        float d = _cvtsh_ss(run_u16_at(rows + (size_t)t * row_bytes + 34 * (size_t)block));
        for (int i = 0; i < 4; i++) w[i][t] = pr[i][t] * d;
    }
}

// Four queries' sums of values e0..e0+8*nv-1 (nv 1 or 2, a constant where inlined) over the rows, in
// registers (stored for the first n); w: Q8_0's weights times the block's scales.
LM_AVX2_FMA_FN static inline __attribute__((always_inline)) void run_values16_avx2(const unsigned char *rows, size_t row_bytes, int count, int e0, int nv,
                                                                                 const float *const *pr, float w[4][LM_VALUE_ROWS], float *const *outr, int n,
                                                                                 LmWeightType type) {
    __m256 o[4][2];
    for (int i = 0; i < 4; i++)
        for (int v = 0; v < nv; v++) o[i][v] = _mm256_loadu_ps(outr[i] + e0 + 8 * v);
    for (int t = 0; t < count; t++) {
        const unsigned char *row = rows + (size_t)t * row_bytes;
        __m256 value[2];
        for (int v = 0; v < nv; v++) value[v] = run_value8(row, e0 + 8 * v, type);
        for (int i = 0; i < 4; i++) {
            __m256 wi = _mm256_set1_ps(type == LM_Q8_0 ? w[i][t] : pr[i][t]);
            for (int v = 0; v < nv; v++) o[i][v] = _mm256_fmadd_ps(wi, value[v], o[i][v]);
        }
    }
    for (int i = 0; i < n; i++)
        for (int v = 0; v < nv; v++) _mm256_storeu_ps(outr[i] + e0 + 8 * v, o[i][v]);
}

// run_tile_values_avx512_typed in 8 lanes: four queries at a time (a missing one repeats the last,
// unstored), 16 of their sums each in registers, so each value is converted once for the four (the
// rows, in the CPU's cache, read once per 16 dims); the last values of a head size that is not a
// multiple of 8 one by one, in the same order.
LM_AVX2_FMA_FN static inline void run_tile_values_avx2_typed(const unsigned char *rows, size_t row_bytes, int count, int hs, const float *const *p, int nq,
                                                             float *const *out, LmWeightType type) {
    int full = hs / 8 * 8;
    float w[4][LM_VALUE_ROWS];
    for (int r0 = 0; r0 < nq; r0 += 4) {
        const float *pr[4];
        float *outr[4];
        for (int i = 0; i < 4; i++) { pr[i] = p[r0 + i < nq ? r0 + i : nq - 1]; outr[i] = out[r0 + i < nq ? r0 + i : nq - 1]; }
        int n = r0 + 4 <= nq ? 4 : nq - r0;
        for (int e0 = 0; e0 < full; e0 += 16) {
            if (type == LM_Q8_0 && e0 % 32 == 0) run_q8_weights_avx2(rows, row_bytes, count, e0 / 32, pr, w);
            if (full - e0 >= 16) run_values16_avx2(rows, row_bytes, count, e0, 2, pr, w, outr, n, type);
            else run_values16_avx2(rows, row_bytes, count, e0, 1, pr, w, outr, n, type);
        }
        for (int i = 0; i < n; i++)
            for (int e = full; e < hs; e++) // (float types only: Q8_0 rows are whole blocks of 32)
                for (int t = 0; t < count; t++) outr[i][e] = fmaf(pr[i][t], run_weight_f32(rows + (size_t)t * row_bytes, (size_t)e, type), outr[i][e]);
    }
}

LM_AVX2_FMA_FN static void run_tile_values_avx2(const unsigned char *rows, size_t row_bytes, int count, LmWeightType type, int hs, const float *const *p, int nq,
                                            float *const *out) {
    switch (type) {
    case LM_F16: run_tile_values_avx2_typed(rows, row_bytes, count, hs, p, nq, out, LM_F16); break;
    case LM_BF16: run_tile_values_avx2_typed(rows, row_bytes, count, hs, p, nq, out, LM_BF16); break;
    case LM_Q8_0: run_tile_values_avx2_typed(rows, row_bytes, count, hs, p, nq, out, LM_Q8_0); break;
    default: run_tile_values_avx2_typed(rows, row_bytes, count, hs, p, nq, out, LM_F32); break;
    }
}
// run_exp16 in 8 lanes.
LM_AVX2_FN static inline __m256 run_exp8(__m256 x) {
    x = _mm256_max_ps(_mm256_set1_ps(-87.0f), _mm256_min_ps(_mm256_set1_ps(88.0f), x));
    __m256 t = _mm256_add_ps(_mm256_mul_ps(x, _mm256_set1_ps(run_exp_c[0])), _mm256_set1_ps(run_exp_c[1]));
    __m256 n = _mm256_sub_ps(t, _mm256_set1_ps(run_exp_c[1]));
    __m256i scale_bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(_mm256_castps_si256(t), _mm256_set1_epi32(0x4b400000)), _mm256_set1_epi32(127)), 23);
    __m256 r = _mm256_sub_ps(_mm256_sub_ps(x, _mm256_mul_ps(n, _mm256_set1_ps(run_exp_c[2]))), _mm256_mul_ps(n, _mm256_set1_ps(run_exp_c[3])));
    __m256 y = _mm256_add_ps(_mm256_mul_ps(_mm256_set1_ps(run_exp_c[4]), r), _mm256_set1_ps(run_exp_c[5]));
    for (int k = 6; k < 10; k++) y = _mm256_add_ps(_mm256_mul_ps(y, r), _mm256_set1_ps(run_exp_c[k]));
    y = _mm256_add_ps(_mm256_add_ps(_mm256_mul_ps(_mm256_mul_ps(y, r), r), r), _mm256_set1_ps(1.0f));
    return _mm256_mul_ps(y, _mm256_castsi256_ps(scale_bits));
}

// run_attention_softmax_avx512 with each 16 lanes as two vectors.
LM_AVX2_FN static void run_attention_softmax_avx2(float *x, int n, float scale) {
    const __m256 vscale = _mm256_set1_ps(scale);
    __m256 lo = _mm256_set1_ps(x[0] * scale), hi = lo;
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 a = _mm256_mul_ps(_mm256_loadu_ps(x + i), vscale), b = _mm256_mul_ps(_mm256_loadu_ps(x + i + 8), vscale);
        _mm256_storeu_ps(x + i, a);
        _mm256_storeu_ps(x + i + 8, b);
        lo = _mm256_max_ps(a, lo);
        hi = _mm256_max_ps(b, hi);
    }
    float lane[16], sums[16];
    _mm256_storeu_ps(lane, lo);
    _mm256_storeu_ps(lane + 8, hi);
    for (; i < n; i++) { x[i] *= scale; lane[0] = x[i] > lane[0] ? x[i] : lane[0]; }
    float max_val = lane[0];
    for (int k = 1; k < 16; k++) max_val = lane[k] > max_val ? lane[k] : max_val;
    const __m256 vmax = _mm256_set1_ps(max_val);
    lo = hi = _mm256_setzero_ps();
    for (i = 0; i + 16 <= n; i += 16) {
        __m256 a = run_exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), vmax)), b = run_exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i + 8), vmax));
        _mm256_storeu_ps(x + i, a);
        _mm256_storeu_ps(x + i + 8, b);
        lo = _mm256_add_ps(lo, a);
        hi = _mm256_add_ps(hi, b);
    }
    _mm256_storeu_ps(sums, lo);
    _mm256_storeu_ps(sums + 8, hi);
    for (int k = 0; i + k < n; k++) { x[i + k] = run_exp(x[i + k] - max_val); sums[k] += x[i + k]; }
    float sum = run_sum_lanes(sums);
    const __m256 vsum = _mm256_set1_ps(sum);
    for (i = 0; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_div_ps(_mm256_loadu_ps(x + i), vsum));
    for (; i < n; i++) x[i] /= sum;
}
#endif // LM_X86 (AVX2)

#if LM_NEON
// ---- Arm NEON versions (aarch64): float rows in 4 vectors of 4 lanes (run_dot_*'s 16 lanes), and
// the integer kernels' int sums in vectors (SDOT where the CPU has it) with their float terms
// exactly as the plain kernels take them. The same bits as the plain kernels.

// run_sum_lanes of 16 lanes in 4 vectors: k + k+8, k + k+4, k + k+2, k + k+1.
static inline float run_sum_lanes_neon(const float32x4_t *acc) {
    float32x4_t a = vaddq_f32(vaddq_f32(acc[0], acc[2]), vaddq_f32(acc[1], acc[3]));
    float32x2_t b = vadd_f32(vget_low_f32(a), vget_high_f32(a));
    return vget_lane_f32(b, 0) + vget_lane_f32(b, 1);
}

static inline float32x4_t run_load4_f32_neon(const void *data, size_t e, LmWeightType type) {
    switch (type) {
    case LM_F16: return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16((const uint16_t *)data + e)));
    case LM_BF16: return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16((const uint16_t *)data + e), 16));
    default: return vld1q_f32((const float *)data + e);
    }
}

static inline float run_dot_float_neon_typed(const LmMatrix *w, int row, const float *x, LmWeightType type) {
    int n = w->cols, j = 0;
    size_t start = (size_t)row * (size_t)n;
    float32x4_t acc[4] = {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)};
    for (; j + 16 <= n; j += 16)
        for (int k = 0; k < 4; k++) // (a multiply, then an add: never fused)
            acc[k] = vaddq_f32(acc[k], vmulq_f32(run_load4_f32_neon(w->data, start + (size_t)(j + 4 * k), type), vld1q_f32(x + j + 4 * k)));
    if (j < n) { // the last lanes one by one, as the plain loop
        float lanes[16];
        for (int k = 0; k < 4; k++) vst1q_f32(lanes + 4 * k, acc[k]);
        for (int k = 0; j + k < n; k++) lanes[k] += run_weight_f32(w->data, start + (size_t)(j + k), type) * x[j + k];
        for (int k = 0; k < 4; k++) acc[k] = vld1q_f32(lanes + 4 * k);
    }
    return run_sum_lanes_neon(acc);
}

static float run_dot_float_neon(const LmMatrix *w, int row, const float *x) {
    switch (w->type) {
    case LM_F16: return run_dot_float_neon_typed(w, row, x, LM_F16);
    case LM_BF16: return run_dot_float_neon_typed(w, row, x, LM_BF16);
    default: return run_dot_float_neon_typed(w, row, x, LM_F32);
    }
}

// The int32 sum of n (16 or 32) products of int8 weights and activations: widening multiplies
// (int16 pairs, which cannot overflow: 2 * 128 * 127 < 32768) accumulated pairwise into int32, or
// SDOT with dot != 0.
LM_NEON_DOT_FN static inline int32_t run_dot_i8_sdot(const int8_t *w, const int8_t *x, int n) {
    int32x4_t acc = vdupq_n_s32(0);
    for (int k = 0; k < n; k += 16) acc = vdotq_s32(acc, vld1q_s8(w + k), vld1q_s8(x + k));
    return vaddvq_s32(acc);
}

static inline int32_t run_dot_i8_neon(const int8_t *w, const int8_t *x, int n, int dot) {
    if (dot) return run_dot_i8_sdot(w, x, n);
    int32x4_t acc = vdupq_n_s32(0);
    for (int k = 0; k < n; k += 16) {
        int8x16_t a = vld1q_s8(w + k), b = vld1q_s8(x + k);
        acc = vpadalq_s16(acc, vmlal_high_s8(vmull_s8(vget_low_s8(a), vget_low_s8(b)), a, b));
    }
    return vaddvq_s32(acc);
}

static inline int32_t run_sum_i8_neon(const int8_t *x, int n) {
    int32x4_t acc = vdupq_n_s32(0);
    for (int k = 0; k < n; k += 16) acc = vpadalq_s16(acc, vpaddlq_s8(vld1q_s8(x + k)));
    return vaddvq_s32(acc);
}

// run_dot_int for v3 groups within rows (gs a multiple of 16): each group's values as int8, then
// run_dot_int's terms.
static float run_dot_int_neon(const LmMatrix *w, int row, const int8_t *xq, const float *xs, int dot) {
    int gs = w->group_size, groups = w->cols / gs;
    size_t first = (size_t)row * (size_t)groups;
    float acc[LM_LANES] = {0};
    int8_t unpacked[LM_MAX_Q4_GROUP];
    for (int g = 0; g < groups; g++) {
        const int8_t *q = (const int8_t *)w->data + (first + (size_t)g) * (size_t)gs;
        if (w->type == LM_Q4_GROUPS) { run_unpack_q4(unpacked, w, first + (size_t)g); q = unpacked; }
        int32_t isum = run_dot_i8_neon(q, xq + (size_t)g * (size_t)gs, gs, dot);
        acc[g % LM_LANES] += (float)isum * run_group_scale(w, first + (size_t)g) * xs[g];
    }
    return run_sum_lanes(acc);
}

// run_dot_blocks's int sums in vectors, without and with SDOT.
static void run_sums_neon(const int8_t *q, const int8_t *x, int n, int32_t *qx, int32_t *sum) {
    *qx = run_dot_i8_neon(q, x, n, 0);
    *sum = run_sum_i8_neon(x, n);
}

static void run_sums_neon_dot(const int8_t *q, const int8_t *x, int n, int32_t *qx, int32_t *sum) {
    *qx = run_dot_i8_neon(q, x, n, 1);
    *sum = run_sum_i8_neon(x, n);
}

// A prompt tile's int32 sums over a run of n values (16 or 32) of 4 unpacked rows (w) and 4 tokens'
// inputs (x): lane j of qx[i] is row i . token j. Each 16 values' rows and inputs are loaded once for
// the 16 pairs. SDOT, or (run_tile_sums_mull) widening multiplies as run_dot_i8_neon's.
static inline int32x4_t run_lanes_sums_neon(const int32x4_t *a) { // lane j: the sum of a[j]'s lanes (exact)
    return vpaddq_s32(vpaddq_s32(a[0], a[1]), vpaddq_s32(a[2], a[3]));
}

LM_NEON_DOT_FN static void run_tile_sums_sdot(const int8_t *const *w, const int8_t *const *x, int n, int32x4_t *qx) {
    int32x4_t a[4][4];
    for (int i = 0; i < 4; i++) for (int j = 0; j < 4; j++) a[i][j] = vdupq_n_s32(0);
    for (int k = 0; k < n; k += 16) {
        int8x16_t wv[4], xv[4];
        for (int i = 0; i < 4; i++) wv[i] = vld1q_s8(w[i] + k), xv[i] = vld1q_s8(x[i] + k);
        for (int i = 0; i < 4; i++) for (int j = 0; j < 4; j++) a[i][j] = vdotq_s32(a[i][j], wv[i], xv[j]);
    }
    for (int i = 0; i < 4; i++) qx[i] = run_lanes_sums_neon(a[i]);
}

static void run_tile_sums_mull(const int8_t *const *w, const int8_t *const *x, int n, int32x4_t *qx) {
    int32x4_t a[4][4];
    for (int i = 0; i < 4; i++) for (int j = 0; j < 4; j++) a[i][j] = vdupq_n_s32(0);
    for (int k = 0; k < n; k += 16) {
        int8x16_t wv[4], xv[4];
        for (int i = 0; i < 4; i++) wv[i] = vld1q_s8(w[i] + k), xv[i] = vld1q_s8(x[i] + k);
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 4; j++) a[i][j] = vpadalq_s16(a[i][j], vmlal_high_s8(vmull_s8(vget_low_s8(wv[i]), vget_low_s8(xv[j])), wv[i], xv[j]));
    }
    for (int i = 0; i < 4; i++) qx[i] = run_lanes_sums_neon(a[i]);
}

// run_matmul_blocks_unpacked's terms in NEON tiles of 4 rows x 4 tokens: rows 0..rows of the unpacked
// values q (rows, cols; d and m per 16 values) with every token of in, into out (out[t * ld + r]).
// Each run's int sums for the 16 pairs at once (run_tile_sums_*), the inputs' run sums from the
// batch's xsum and xsum16; then run_block_terms' float steps and run_sum_lanes' additions with the
// 4 tokens in the vector lanes: per token the same operations in the same order, so the same bits.
// A tile's missing rows and tokens repeat its last ones, their results not stored.
static void run_block_tiles_neon(const int8_t *q, const float *d, const float *m, int rows, int cols, const LmTypeTraits *type, const LmBatch *in,
                                 float *out, int ld, int dot) {
    int run = type->scale_values, groups = cols / 32, runs16 = cols / 16, has_min = type->has_min;
    assert(in->xsum && in->xsum16 && in->groups == groups && (run == 16 || run == 32));
    for (int t0 = 0; t0 < in->n; t0 += 4) {
        int nt = in->n - t0 < 4 ? in->n - t0 : 4;
        const int8_t *x[4];
        const float *xs[4];
        const int32_t *xsum[4], *xsum16[4];
        for (int j = 0; j < 4; j++) {
            size_t t = (size_t)(t0 + (j < nt ? j : nt - 1));
            x[j] = in->q + t * (size_t)cols, xs[j] = in->s + t * (size_t)groups;
            xsum[j] = in->xsum + t * (size_t)groups, xsum16[j] = in->xsum16 + t * (size_t)groups;
        }
        for (int r = 0; r < rows; r += 4) {
            int nr = rows - r < 4 ? rows - r : 4;
            size_t row[4];
            for (int i = 0; i < 4; i++) row[i] = (size_t)(r + (i < nr ? i : nr - 1));
            float32x4_t acc[4][LM_LANES]; // [row][lane], tokens across
            for (int i = 0; i < 4; i++) for (int k = 0; k < LM_LANES; k++) acc[i][k] = vdupq_n_f32(0.0f);
            for (int g = 0; g < groups; g++) {
                float32x4_t wsum[4];
                for (int h = 0; h < 32 / run; h++) { // the runs of this group, in order
                    int at = 32 * g + run * h;
                    const int8_t *wr[4], *xr[4];
                    for (int i = 0; i < 4; i++) wr[i] = q + row[i] * (size_t)cols + (size_t)at, xr[i] = x[i] + at;
                    int32x4_t qx[4];
                    if (dot) run_tile_sums_sdot(wr, xr, run, qx);
                    else run_tile_sums_mull(wr, xr, run, qx);
                    int32_t sum[4];
                    for (int j = 0; j < 4; j++) sum[j] = run == 32 ? xsum[j][g] : h == 0 ? xsum16[j][g] : xsum[j][g] - xsum16[j][g];
                    float32x4_t sumf = vcvtq_f32_s32(vld1q_s32(sum));
                    for (int i = 0; i < 4; i++) {
                        size_t s = row[i] * (size_t)runs16 + (size_t)(at / 16);
                        float32x4_t part = vmulq_n_f32(vcvtq_f32_s32(qx[i]), d[s]);
                        if (has_min) part = vsubq_f32(part, vmulq_n_f32(sumf, m[s]));
                        wsum[i] = h == 0 ? part : vaddq_f32(wsum[i], part);
                    }
                }
                float scales[4] = {xs[0][g], xs[1][g], xs[2][g], xs[3][g]};
                float32x4_t scale = vld1q_f32(scales);
                for (int i = 0; i < 4; i++) acc[i][g % LM_LANES] = vaddq_f32(acc[i][g % LM_LANES], vmulq_f32(wsum[i], scale));
            }
            for (int i = 0; i < nr; i++) {
                for (int w = LM_LANES / 2; w > 0; w /= 2) // run_sum_lanes
                    for (int k = 0; k < w; k++) acc[i][k] = vaddq_f32(acc[i][k], acc[i][k + w]);
                float result[4];
                vst1q_f32(result, acc[i][0]);
                for (int j = 0; j < nt; j++) out[(size_t)(t0 + j) * (size_t)ld + (size_t)(r + i)] = result[j];
            }
        }
    }
}

// GGUF's Q8_0 and Q4_0 in place (run_dot_q8_0, run_dot_q4_0).
static float run_dot_q8_q4_neon(const unsigned char *row, int cols, const int8_t *xq, const float *xs, int q4, int dot) {
    float acc[LM_LANES] = {0};
    for (int b = 0; b < cols / 32; b++) {
        const unsigned char *blk = row + (size_t)(q4 ? 18 : 34) * (size_t)b;
        int8_t values[32];
        const int8_t *q = (const int8_t *)(blk + 2);
        if (q4) {
            uint8x16_t bytes = vld1q_u8(blk + 2), m = vdupq_n_u8(15);
            vst1q_s8(values, vsubq_s8(vreinterpretq_s8_u8(vandq_u8(bytes, m)), vdupq_n_s8(8)));
            vst1q_s8(values + 16, vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(bytes, 4)), vdupq_n_s8(8)));
            q = values;
        }
        acc[b % LM_LANES] += (float)run_dot_i8_neon(q, xq + 32 * b, 32, dot) * run_half_at(blk) * xs[b];
    }
    return run_sum_lanes(acc);
}

// Can the NEON integer kernel take this v3 matrix? (groups within rows, of whole 16-value steps)
static int run_int_neon_ok(const LmMatrix *w) {
    return (w->type == LM_Q8_GROUPS || w->type == LM_Q4_GROUPS) && w->cols % w->group_size == 0 && w->group_size % 16 == 0 &&
           w->group_size <= LM_MAX_Q4_GROUP;
}

// One row of w with input token t through the NEON kernels; 0 when none applies (*value unset).
static int run_row_dot_neon(const LmMatrix *w, int row, const LmBatch *in, int t, float *value) {
    int dot = in->kernels == LM_KERNELS_NEON_DOT;
    if (!run_types[w->type].integer) {
        *value = run_dot_float_neon(w, row, in->f + (size_t)t * (size_t)in->ld);
        return 1;
    }
    if (in->q == NULL) return 0;
    const int8_t *xq = in->q + (size_t)t * (size_t)in->cols;
    const float *xs = in->s + (size_t)t * (size_t)in->groups;
    if (run_int_neon_ok(w)) { *value = run_dot_int_neon(w, row, xq, xs, dot); return 1; }
    if (w->type == LM_Q8_0 || w->type == LM_Q4_0) {
        *value = run_dot_q8_q4_neon((const unsigned char *)w->data + (size_t)row * w->row_bytes, w->cols, xq, xs, w->type == LM_Q4_0, dot);
        return 1;
    }
    if (run_types[w->type].unpack == NULL) return 0;
    *value = run_dot_blocks_using(w, row, xq, xs, dot ? run_sums_neon_dot : run_sums_neon);
    return 1;
}
#endif // LM_NEON

// One row of w with input token t, by the plain definitions.
static float run_row_dot_plain(const LmMatrix *w, int row, const LmBatch *in, int t) {
    size_t start = (size_t)row * (size_t)w->cols;
    const float *x = in->f + (size_t)t * (size_t)in->ld;
    switch (w->type) {
    case LM_F32: return run_dot_f32((const float *)w->data + start, x, w->cols);
    case LM_F16: return run_dot_f16((const uint16_t *)w->data + start, x, w->cols);
    case LM_BF16: return run_dot_bf16((const uint16_t *)w->data + start, x, w->cols);
    default: break;
    }
    if (in->q == NULL) return run_dot_dequant(w, row, x); // exact mode: the activations stay float
    switch (w->type) {
    case LM_Q8_GROUPS: case LM_Q4_GROUPS: return run_dot_int(w, row, in->q + (size_t)t * (size_t)in->cols, in->s + (size_t)t * (size_t)in->groups);
    default:
        if (run_types[w->type].dot) // (a kernel of the type's own, the same bits)
            return run_types[w->type].dot((const unsigned char *)w->data + (size_t)row * w->row_bytes, w->cols,
                                          in->q + (size_t)t * (size_t)in->cols, in->s + (size_t)t * (size_t)in->groups);
        return run_dot_blocks(w, row, in->q + (size_t)t * (size_t)in->cols, in->s + (size_t)t * (size_t)in->groups);
    }
}

// The same value, through the batch's SIMD kernels where one applies.
static float run_row_dot(const LmMatrix *w, int row, const LmBatch *in, int t) {
#if LM_X86
    float value;
    if (in->kernels == LM_KERNELS_AVX512 && run_rows_avx512(w, row, row + 1, in, t, &value)) return value;
    if ((run_avx2_set(in->kernels) || in->kernels == LM_KERNELS_AVX512) && run_row_dot_avx2(w, row, in, t, &value)) return value;
#endif
#if LM_NEON
    float value;
    if (in->kernels >= LM_KERNELS_NEON && run_row_dot_neon(w, row, in, t, &value)) return value;
#endif
    return run_row_dot_plain(w, row, in, t);
}

// Token t of a matmul input (x: its cols values) quantized into b: its int8 values and group scales,
// the groups' sums and the sums of their first 16 values (xsum16, where b has room), and the
// arrangement for the split-nibble kernels where b has room for it.
static void run_quantize_token(LmBatch *b, const float *x, int t, int gs) {
    int cols = b->cols;
    int8_t *q = b->q + (size_t)t * (size_t)cols;
#if LM_X86
    if (b->kernels == LM_KERNELS_AVX512 && gs % 16 == 0 && cols % gs == 0) run_quantize_q8_avx512(q, b->s + (size_t)t * (size_t)b->groups, x, cols, gs);
    else if (run_avx2_set(b->kernels) && gs % 8 == 0 && cols % gs == 0) run_quantize_q8_avx2(q, b->s + (size_t)t * (size_t)b->groups, x, cols, gs);
    else
#endif
        run_quantize_q8(q, b->s + (size_t)t * (size_t)b->groups, x, cols, gs);
    for (int g = 0; g < b->groups; g++) {
        int32_t first16 = 0, rest = 0, start = g * gs, end = start + gs < cols ? start + gs : cols, split = start + 16 < end ? start + 16 : end;
        for (int j = start; j < split; j++) first16 += q[j];
        for (int j = split; j < end; j++) rest += q[j];
        b->xsum[(size_t)t * (size_t)b->groups + (size_t)g] = first16 + rest;
        if (b->xsum16) b->xsum16[(size_t)t * (size_t)b->groups + (size_t)g] = first16;
    }
#if LM_X86
    if (b->qarranged) run_arrange_q4_input(b->qarranged + (size_t)t * (size_t)(cols + 128), q, cols);
#endif
}

// Prepares rows x (n, ld) of cols values as a matmul input, quantizing them once for every matmul
// that shares them when the weights are integer.
static LmBatch run_make_batch(LmModel *m, const float *x, int n, int cols, int ld) {
    LmBatch b = {.f = x, .n = n, .cols = cols, .ld = ld, .kernels = m->kernels, .scratch = m->state.scratch,
                 .scratch_slots = m->state.scratch_slots, .scratch_floats = m->state.scratch_floats};
    if (!m->config.integer_activations || m->exact) return b;
    int gs = m->config.group_size;
    b.groups = (cols + gs - 1) / gs;
    b.q = m->state.xq;
    b.s = m->state.xs;
    b.xsum = m->state.xsum;
    b.xsum16 = m->state.xsum16;
#if LM_X86
    if ((run_avx2_set(m->kernels) || m->kernels == LM_KERNELS_AVX512) && m->config.split_nibble_inputs && gs == 32 && n == 1)
        b.qarranged = m->state.xarranged; // (generation's row kernels read it; a prompt's tiles do not)
#endif
    if (n >= 16) { // (a prompt: its tokens over the threads, which would otherwise wait for this)
        LM_PARALLEL_FOR(m->threads)
        for (int t = 0; t < n; t++) run_quantize_token(&b, x + (size_t)t * (size_t)ld, t, gs);
    } else
        for (int t = 0; t < n; t++) run_quantize_token(&b, x + (size_t)t * (size_t)ld, t, gs);
#if LM_X86
    if (!run_avx2_set(m->kernels) && m->kernels != LM_KERNELS_AVX512) return b;
    if (n > 1 && cols % 4 == 0) {
        b.packed = m->state.xpacked;
        b.spacked = m->state.xspacked;
        if (m->kernels == LM_KERNELS_AVX512) run_pack_batch(&b, m->threads);
        else {
            b.packed8 = m->state.xpacked8;
            run_pack_batch16(&b, m->threads);
        }
    }
#endif
    return b;
}

// One matmul of a fused set: out[t * ld + r] = row r of w times input token t.
typedef struct { const LmMatrix *w; float *out; int ld; } LmMatmul;

// Which run sums a prompt's matmul of w takes through run_matmul_blocks_unpacked, in the sets without
// x86's prompt tiles: every GGUF block type in the NEON sets (whose tiles take it from there); the
// portable set all but Q8_0 and Q4_0, whose dots decode in place at less cost (measured: Q8_0 0.8x
// unpacked, Q6_K 1.16x, IQ4_XS 2.1x); else NULL.
static LmRunSums run_unpacked_sums(const LmMatrix *w, const LmBatch *in) {
    if (in->q == NULL || run_types[w->type].unpack == NULL || in->groups * 32 != w->cols) return NULL;
#if LM_NEON
    if (in->kernels >= LM_KERNELS_NEON) return in->kernels == LM_KERNELS_NEON_DOT ? run_sums_neon_dot : run_sums_neon;
#endif
    if (w->type == LM_Q8_0 || w->type == LM_Q4_0) return NULL;
    return in->kernels == LM_KERNELS_PLAIN ? run_sums_plain : NULL;
}

// A prompt's rows r0..r1 (at most LM_ROW_BLOCK) of a GGUF block type, each row unpacked once into the
// thread's scratch, then every token's terms from it (run_block_terms: the definition's bits; in the
// NEON sets run_block_tiles_neon, the same bits, which takes its sums itself: sums there only says
// that this path applies), where a dot per token would unpack every block once per token. Returns 0
// (nothing done) without scratch.
static int run_matmul_blocks_unpacked(const LmMatrix *w, int r0, int r1, const LmBatch *in, float *out, int ld, LmRunSums sums) {
    const LmTypeTraits *type = &run_types[w->type];
    int cols = w->cols, rows = r1 - r0, per_block = type->block_values;
    size_t runs = (size_t)cols / 16;
    assert(rows <= LM_ROW_BLOCK && type->unpack && cols % per_block == 0 && in->groups * 32 == cols);
    float *room = run_thread_scratch(in, 2 * (size_t)rows * runs + ((size_t)rows * (size_t)cols + 3) / 4);
    if (room == NULL) return 0;
    float *d = room, *m = d + (size_t)rows * runs;           // (rows, cols / 16) each 16 values' d and m
    int8_t *q = (int8_t *)(void *)(m + (size_t)rows * runs); // (rows, cols) the values
    LmBlock u;
    for (int r = 0; r < rows; r++)
        for (int b = 0; b < cols / per_block; b++) {
            size_t at = (size_t)r * (size_t)cols + (size_t)b * (size_t)per_block;
            type->unpack((const unsigned char *)w->data + (size_t)(r0 + r) * w->row_bytes + (size_t)b * (size_t)type->block_bytes, &u);
            memcpy(q + at, u.q, (size_t)per_block);
            memcpy(d + at / 16, u.d, sizeof(float) * (size_t)(per_block / 16));
            if (type->has_min) memcpy(m + at / 16, u.m, sizeof(float) * (size_t)(per_block / 16));
        }
#if LM_NEON
    if (in->kernels >= LM_KERNELS_NEON && in->xsum && in->xsum16) {
        run_block_tiles_neon(q, d, m, rows, cols, type, in, out + r0, ld, in->kernels == LM_KERNELS_NEON_DOT);
        return 1;
    }
#endif
    for (int t = 0; t < in->n; t++) // (the token's input stays in cache across the rows)
        for (int r = 0; r < rows; r++) {
            float acc[LM_LANES] = {0};
            run_block_terms(q + (size_t)r * (size_t)cols, d + (size_t)r * runs, m + (size_t)r * runs, cols, type, in->q + (size_t)t * (size_t)cols,
                            in->s + (size_t)t * (size_t)in->groups, 0, acc, sums);
            out[(size_t)t * (size_t)ld + (size_t)(r0 + r)] = run_sum_lanes(acc);
        }
    return 1;
}

// Rows r0..r1 of one matmul for every token of the input.
static void run_matmul_rows(const LmMatmul *job, int r0, int r1, const LmBatch *in) {
#if LM_X86
    if (in->kernels == LM_KERNELS_AVX512) {
        if (!run_is_integer_type(job->w->type)) {
            if (in->n == 1) run_matvec_float_avx512(job->w, r0, r1, in->f, job->out);
            else run_matmul_float_block_avx512(job->w, r0, r1, in, job->out, job->ld);
            return;
        }
        if (in->n > 1 && in->packed && run_int_simd_ok(job->w)) {
            run_matmul_int_block_avx512(job->w, r0, r1, in, job->out, job->ld);
            return;
        }
        if (in->n > 1 && in->packed && run_types[job->w->type].unpack && in->groups * 32 == job->w->cols) {
            run_matmul_blocks_block_avx512(job->w, r0, r1, in, job->out, job->ld);
            return;
        }
        if (in->n == 1 && run_rows_avx512(job->w, r0, r1, in, 0, job->out + r0)) return;
    }
    if ((run_avx2_set(in->kernels) || in->kernels == LM_KERNELS_AVX512) && in->n == 1 && in->q && run_types[job->w->type].unpack) {
        run_rows_blocks_avx2(job->w, r0, r1, in, 0, job->out + r0); // (AVX-512: what its row kernels leave)
        return;
    }
    if (run_avx2_set(in->kernels) && in->n > 1 && !run_is_integer_type(job->w->type)) {
        run_matmul_float_avx2(job->w, r0, r1, in, job->out, job->ld);
        return;
    }
    if (run_avx2_set(in->kernels) && in->n > 1 && in->packed &&
        run_matmul_int_block_avx2(job->w, r0, r1, in, job->out, job->ld, in->kernels == LM_KERNELS_AVX2_VNNI))
        return;
#endif
    LmRunSums sums = in->n > 1 ? run_unpacked_sums(job->w, in) : NULL;
    if (sums && run_matmul_blocks_unpacked(job->w, r0, r1, in, job->out, job->ld, sums)) return;
    for (int t = 0; t < in->n; t++)
        for (int r = r0; r < r1; r++) job->out[(size_t)t * (size_t)job->ld + (size_t)r] = run_row_dot(job->w, r, in, t);
}

// Runs up to 4 matmuls that share one input as a single parallel loop over blocks of rows, so the
// threads fork and join once (q/k/v together, the FFN's gate and up together).
static void run_matmul(const LmMatmul *jobs, int n_jobs, const LmBatch *in, int threads) {
    assert(n_jobs >= 1 && n_jobs <= 4);
    int first_block[5] = {0};
    for (int j = 0; j < n_jobs; j++) {
        assert(jobs[j].w->cols == in->cols);
        first_block[j + 1] = first_block[j] + (jobs[j].w->rows + LM_ROW_BLOCK - 1) / LM_ROW_BLOCK;
    }
    int total = first_block[n_jobs];
    (void)threads; // (without OpenMP)
    LM_PARALLEL_FOR(threads)
    for (int u = 0; u < total; u++) {
        int j = 0;
        while (u >= first_block[j + 1]) j++;
        int r0 = (u - first_block[j]) * LM_ROW_BLOCK, r1 = r0 + LM_ROW_BLOCK;
        run_matmul_rows(&jobs[j], r0, r1 < jobs[j].w->rows ? r1 : jobs[j].w->rows, in);
    }
}

// Rotates each pair of every head by the angles of this position. The pairs are (x[2i], x[2i+1])
// in llama2.c's layout and (x[i], x[i + head_size/2]) in Hugging Face's.
// Turns the first rotary_dim values of each head (all of them unless RoPE is partial) by the angles
// whose cos and sin are given, in pairs (2i, 2i+1) or halves (i, i + rotary_dim/2).
static void run_rope_rotate(float *x, int n_heads, int head_size, int rotary_dim, const float *cos_t, const float *sin_t, LmRopeLayout layout) {
    int half = rotary_dim / 2;
    for (int h = 0; h < n_heads; h++) {
        float *v = x + (size_t)h * (size_t)head_size;
        for (int i = 0; i < half; i++) {
            int a = layout == LM_ROPE_PAIRS ? 2 * i : i, b = layout == LM_ROPE_PAIRS ? 2 * i + 1 : i + half;
            float v0 = v[a], v1 = v[b];
            v[a] = v0 * cos_t[i] - v1 * sin_t[i];
            v[b] = v0 * sin_t[i] + v1 * cos_t[i];
        }
    }
}

static void run_add_bias(float *x, const float *bias, int n) {
    if (bias) for (int i = 0; i < n; i++) x[i] += bias[i];
}

static void run_swiglu(float *gate, const float *up, int n) {
    for (int i = 0; i < n; i++) {
        float val = gate[i];
        val *= 1.0f / (1.0f + expf(-val));
        gate[i] = val * up[i];
    }
}

// ----------------------------------------------------------------------------
// Forward pass

static void run_gelu_tanh_glu(float *gate, const float *up, int n) {
    for (int i = 0; i < n; i++) {
        float x = gate[i];
        gate[i] = 0.5f * x * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x))) * up[i];
    }
}

// cap * tanh(x / cap) over x[0..n): Gemma 2's soft cap of scores and logits.
static void run_softcap(float *x, int n, float cap) {
    for (int i = 0; i < n; i++) x[i] = cap * tanhf(x[i] / cap);
}

// ---- The KV cache and attention over it (layouts: see LmRunState). Scores and weighted sums are
// defined by the plain loops here; the AVX2 and AVX-512 versions compute the same operations in the
// same order (the same bits), and every query's result is the same whichever other queries or
// threads share its work: lm_forward_batch stays equal to lm_forward, bit for bit.

// IEEE half precision, rounded to nearest even (overflow to inf; NaN stays NaN).
static uint16_t run_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u, a = x & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); // (65520 and up round to inf)
    if (a < 0x38800000u) { // a subnormal half: m * 2^-24, m rounded to nearest even
        float scaled = fabsf(f) * 0x1p24f; // (exact: a power of two)
        uint32_t m = (uint32_t)scaled;
        float rest = scaled - (float)m;
        m += rest > 0.5f || (rest == 0.5f && (m & 1u));
        return (uint16_t)(sign | m);
    }
    a -= 0x38000000u; // rebias the exponent (127 -> 15), then round the 13 bits that go
    a += 0xfffu + ((a >> 13) & 1u);
    return (uint16_t)(sign | (a >> 13));
}

static uint16_t run_f32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u);
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

// Element i of a cache array of a float type set to v.
static void run_put_f32(unsigned char *p, size_t i, float v, LmWeightType type) {
    if (type == LM_F32) { memcpy(p + 4 * i, &v, 4); return; }
    uint16_t h = type == LM_F16 ? run_f32_to_f16(v) : run_f32_to_bf16(v);
    memcpy(p + 2 * i, &h, 2);
}

// Q8_0 of 32 values as ggml's reference quantizer: d = max|x| / 127 (stored as fp16), q = round(x / d).
static void run_quantize_32(const float *x, int8_t *q, uint16_t *d_half) {
    float amax = 0.0f;
    for (int i = 0; i < 32; i++) amax = fabsf(x[i]) > amax ? fabsf(x[i]) : amax;
    float d = amax / 127.0f, id = d > 0.0f ? 1.0f / d : 0.0f;
    for (int i = 0; i < 32; i++) { // (inf or NaN values, or a subnormal maximum, end up 0 here, not UB)
        float v = x[i] * id;
        v = v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v; // (x * (1 / d) may pass 127 by a rounding)
        q[i] = v == v ? (int8_t)roundf(v) : 0;
    }
    *d_half = run_f32_to_f16(d);
}

// Where dim d of lane `lane` lies in a Q8_0 key tile: four dims of a position together.
static size_t run_q8_key_at(int d, int lane) { return (size_t)(d / 4) * (4 * LM_KEY_TILE) + (size_t)lane * 4 + (size_t)(d % 4); }

// Stores a key (head_size values) as lane `lane` of its tile, or (load) reads it back.
static void run_store_key(unsigned char *tile, int lane, const float *k, int hs, LmWeightType type) {
    if (type != LM_Q8_0) {
        for (int d = 0; d < hs; d++) run_put_f32(tile, (size_t)d * LM_KEY_TILE + (size_t)lane, k[d], type);
        return;
    }
    for (int g = 0; g < hs / 32; g++) {
        int8_t q[32];
        uint16_t scale;
        run_quantize_32(k + 32 * g, q, &scale);
        for (int i = 0; i < 32; i++) tile[run_q8_key_at(32 * g + i, lane)] = (unsigned char)q[i];
        memcpy(tile + (size_t)hs * LM_KEY_TILE + 2 * ((size_t)g * LM_KEY_TILE + (size_t)lane), &scale, 2);
    }
}

static void run_load_key(const unsigned char *tile, int lane, float *k, int hs, LmWeightType type) {
    for (int d = 0; d < hs; d++)
        k[d] = type == LM_Q8_0 ? (float)(int8_t)tile[run_q8_key_at(d, lane)] * run_half_at(tile + (size_t)hs * LM_KEY_TILE + 2 * ((size_t)(d / 32) * LM_KEY_TILE + (size_t)lane))
                               : run_weight_f32(tile, (size_t)d * LM_KEY_TILE + (size_t)lane, type);
}

// Stores a head's values (head_size) as a row of the cache type (Q8_0: GGUF's blocks).
static void run_store_values(unsigned char *row, const float *v, int hs, LmWeightType type) {
    if (type != LM_Q8_0) {
        for (int e = 0; e < hs; e++) run_put_f32(row, (size_t)e, v[e], type);
        return;
    }
    for (int b = 0; b < hs / 32; b++) {
        uint16_t scale;
        run_quantize_32(v + 32 * b, (int8_t *)(row + 34 * (size_t)b + 2), &scale);
        memcpy(row + 34 * (size_t)b, &scale, 2);
    }
}

// The scores of nq queries (head_size values each) against the LM_KEY_TILE keys of a tile, every lane
// whether or not its position is in use: scores[r][j] = the sum over the head's dimensions d, in
// order, of q[r].f[d] * key j's value d, each product fused into the sum (fmaf). Q8_0: the query in
// its Q8_0 form too; per group g of 32 dims, the exact int32 sum of key j's integers times the
// query's, then, the groups in order, score += (float)isum * key j's scale * the query's scale.
static void run_tile_scores_plain(const unsigned char *tile, LmWeightType type, int hs, const LmQuery *q, int nq, float *const *scores) {
    for (int r = 0; r < nq; r++) {
        float acc[LM_KEY_TILE] = {0};
        if (type == LM_Q8_0) {
            for (int g = 0; g < hs / 32; g++) {
                const unsigned char *scales = tile + (size_t)hs * LM_KEY_TILE + 2 * (size_t)g * LM_KEY_TILE;
                for (int j = 0; j < LM_KEY_TILE; j++) {
                    int32_t isum = 0;
                    for (int d = 32 * g; d < 32 * g + 32; d++) isum += (int32_t)(int8_t)tile[run_q8_key_at(d, j)] * q[r].q[d];
                    acc[j] += (float)isum * run_half_at(scales + 2 * j) * q[r].scale[g];
                }
            }
        } else {
            for (int d = 0; d < hs; d++)
                for (int j = 0; j < LM_KEY_TILE; j++) acc[j] = fmaf(q[r].f[d], run_weight_f32(tile, (size_t)d * LM_KEY_TILE + (size_t)j, type), acc[j]);
        }
        memcpy(scores[r], acc, sizeof acc);
    }
}

// out[r][e] += p[r][t] * value e of row t for t = 0..count-1 (rows row_bytes apart) and each of the nq
// queries r, each out[r][e] its own running sum in position order, each product fused into it (fmaf);
// Q8_0: the weight times the block's scale, that fused with the integer.
static void run_tile_values_plain(const unsigned char *rows, size_t row_bytes, int count, LmWeightType type, int hs, const float *const *p, int nq,
                                  float *const *out) {
    for (int t = 0; t < count; t++) {
        const unsigned char *row = rows + (size_t)t * row_bytes;
        for (int r = 0; r < nq; r++) {
            if (type == LM_Q8_0) {
                for (int b = 0; b < hs / 32; b++) {
                    float w = p[r][t] * run_half_at(row + 34 * (size_t)b);
                    const int8_t *q = (const int8_t *)(row + 34 * (size_t)b + 2);
                    for (int e = 0; e < 32; e++) out[r][32 * b + e] = fmaf(w, (float)q[e], out[r][32 * b + e]);
                }
            } else {
                for (int e = 0; e < hs; e++) out[r][e] = fmaf(p[r][t], run_weight_f32(row, (size_t)e, type), out[r][e]);
            }
        }
    }
}

// Hints to fetch bytes..bytes+count-1 past p, a streaming read's bytes to come, into the cache (the
// hardware's prefetcher alone left attention at 16K positions reading its cache at a quarter of the
// bandwidth); nothing where the compiler has no such builtin. Prefetches never fault.
static inline void run_prefetch_ahead(const unsigned char *p, size_t bytes, size_t count) {
#if defined(__GNUC__) || defined(__clang__)
    for (size_t at = 0; at < count; at += 64) __builtin_prefetch(p + bytes + at, 0, 3);
#else
    (void)p, (void)bytes, (void)count;
#endif
}

// The attention's kernels over the KV cache read tiles (and value rows) in memory order, so each
// call fetches the bytes LM_PREFETCH_BYTES past its own, those of the calls to come.

// run_tile_scores_plain over `tiles` consecutive tiles (tile_bytes apart), each query's scores of the
// second following those of the first.
static void run_tile_scores(LmKernels k, const unsigned char *tile, size_t tile_bytes, int tiles, LmWeightType type, int hs, const LmQuery *q, int nq,
                            float *const *scores) {
    run_prefetch_ahead(tile, LM_PREFETCH_BYTES, (size_t)tiles * tile_bytes);
#if LM_X86
    if (k == LM_KERNELS_AVX512) { run_tile_scores_avx512(tile, tile_bytes, tiles, type, hs, q, nq, scores); return; }
#endif
    for (int j = 0; j < tiles; j++) {
        float *at[LM_ATTN_QUERIES];
        for (int r = 0; r < nq; r++) at[r] = scores[r] + LM_KEY_TILE * j;
#if LM_X86
        if (run_avx2_set(k)) { run_tile_scores_avx2(tile + j * tile_bytes, type, hs, q, nq, at, k == LM_KERNELS_AVX2_VNNI); continue; }
#endif
        run_tile_scores_plain(tile + j * tile_bytes, type, hs, q, nq, at);
    }
    (void)k;
}

static void run_tile_values(LmKernels k, const unsigned char *rows, size_t row_bytes, int count, LmWeightType type, int hs, const float *const *p, int nq,
                            float *const *out) {
    run_prefetch_ahead(rows, LM_PREFETCH_BYTES, (size_t)count * row_bytes);
#if LM_X86
    if (k == LM_KERNELS_AVX512) { run_tile_values_avx512(rows, row_bytes, count, type, hs, p, nq, out); return; }
    if (run_avx2_set(k)) { run_tile_values_avx2(rows, row_bytes, count, type, hs, p, nq, out); return; }
#endif
    (void)k;
    run_tile_values_plain(rows, row_bytes, count, type, hs, p, nq, out);
}

// Attention's weights from a query's scores: each times scale (then soft-capped when softcap > 0),
// and their softmax as run_softmax's but with run_exp for expf and the sum of the exponentials in 16
// lanes (added pairwise at the end): over thousands of positions, every step vectorizes.
static void run_attention_softmax(LmKernels kernels, float *x, int n, float scale, float softcap) {
#if LM_X86
    if (kernels == LM_KERNELS_AVX512 && softcap <= 0.0f) { run_attention_softmax_avx512(x, n, scale); return; }
    if (run_avx2_set(kernels) && softcap <= 0.0f) { run_attention_softmax_avx2(x, n, scale); return; }
#endif
    (void)kernels;
    int i;
    for (i = 0; i < n; i++) x[i] *= scale;
    if (softcap > 0.0f) run_softcap(x, n, softcap);
    float max_val = run_max(x, n);
    for (i = 0; i < n; i++) x[i] = run_exp(x[i] - max_val);
    float sums[LM_LANES] = {0};
    for (i = 0; i + LM_LANES <= n; i += LM_LANES)
        for (int k = 0; k < LM_LANES; k++) sums[k] += x[i + k];
    for (int k = 0; i + k < n; k++) sums[k] += x[i + k];
    float sum = run_sum_lanes(sums);
    for (i = 0; i < n; i++) x[i] /= sum;
}

// A unit's span of positions: every query's lie in lo..hi; scores are kept from base (lo rounded down
// to a tile) on, query r's at att + r * run_attention_span(c).
static void run_attention_range(const LmAttention *a, int *lo, int *hi, int *base) {
    *lo = a->first[0];
    *hi = a->last[0];
    for (int r = 1; r < a->nq; r++) { *lo = a->first[r] < *lo ? a->first[r] : *lo; *hi = a->last[r] > *hi ? a->last[r] : *hi; }
    *base = *lo / LM_KEY_TILE * LM_KEY_TILE;
}

static size_t run_attention_span(const LmConfig *c) { return (size_t)c->seq_len + 2 * LM_KEY_TILE; }

// The unit's queries as the scores read them, a Q8_0 cache's Q8_0 forms written after the scores in att.
static void run_attention_queries(const LmModel *m, const LmAttention *a, float *att, LmQuery *query) {
    const LmConfig *c = &m->config;
    int hs = c->head_size, groups = hs / 32;
    unsigned char *room = (unsigned char *)(att + (size_t)LM_ATTN_QUERIES * run_attention_span(c));
    for (int r = 0; r < a->nq; r++) {
        query[r] = (LmQuery){.f = a->q[r]};
        if (c->cache_type != LM_Q8_0) continue;
        float *scale = (float *)(void *)room;
        int32_t *sum = (int32_t *)(void *)(room + 4 * (size_t)groups);
        int8_t *qi = (int8_t *)(room + 8 * (size_t)groups);
        run_quantize_q8(qi, scale, a->q[r], hs, 32);
        for (int g = 0; g < groups; g++) {
            sum[g] = 0;
            for (int d = 32 * g; d < 32 * g + 32; d++) sum[g] += qi[d];
        }
        query[r] = (LmQuery){.f = a->q[r], .q = qi, .scale = scale, .sum = sum};
        room += 8 * (size_t)groups + (size_t)hs;
    }
}

// The scores of the unit's queries against the key tiles of positions t_begin..t_end-1 (t_begin a
// multiple of LM_KEY_TILE), one tile (or two) at a time for all the queries that see some of it, so
// each is read once while it is in the CPU's cache. Any split of the positions gives the same scores.
static void run_attention_scores(const LmModel *m, const LmAttention *a, const LmQuery *query, float *att, int t_begin, int t_end) {
    const LmConfig *c = &m->config;
    const LmRunState *s = &m->state;
    int lo, hi, base;
    run_attention_range(a, &lo, &hi, &base);
    size_t span = run_attention_span(c);
    assert(hi - base < (int)span - LM_KEY_TILE && a->nq <= LM_ATTN_QUERIES && t_begin % LM_KEY_TILE == 0);
    for (int t0 = t_begin, tiles; t0 < t_end && t0 <= hi; t0 += tiles * LM_KEY_TILE) {
        LmQuery q[LM_ATTN_QUERIES];
        float *scores[LM_ATTN_QUERIES];
        // two tiles together when both are in memory order and the same queries see them
        int n = 0, pair = t0 + LM_KEY_TILE <= hi && t0 + LM_KEY_TILE < t_end && (t0 + LM_KEY_TILE) % a->ring != 0;
        for (int r = 0; r < a->nq; r++) {
            int sees = a->first[r] < t0 + LM_KEY_TILE && a->last[r] >= t0, sees_next = a->first[r] < t0 + 2 * LM_KEY_TILE && a->last[r] >= t0 + LM_KEY_TILE;
            if (sees) { q[n] = query[r]; scores[n++] = att + (size_t)r * span + (size_t)(t0 - base); }
            pair = pair && sees == sees_next;
        }
        tiles = pair ? 2 : 1;
        const unsigned char *tile = a->keys + (size_t)((t0 % a->ring) / LM_KEY_TILE) * s->key_tile_bytes;
        if (n > 0) run_tile_scores(m->kernels, tile, s->key_tile_bytes, tiles, c->cache_type, c->head_size, q, n, scores);
    }
}

// Each query's scores over the positions it sees, times the scale (soft-capped when softcap > 0), made
// their softmax; its output zeroed for the values.
static void run_attention_weights(const LmModel *m, const LmAttention *a, float *att) {
    const LmConfig *c = &m->config;
    int lo, hi, base;
    run_attention_range(a, &lo, &hi, &base);
    for (int r = 0; r < a->nq; r++) {
        float *p = att + (size_t)r * run_attention_span(c) + (size_t)(a->first[r] - base);
        int count = a->last[r] - a->first[r] + 1;
        run_attention_softmax(m->kernels, p, count, c->attn_scale, c->attn_softcap);
        memset(a->out[r], 0, (size_t)c->head_size * sizeof(float));
    }
}

// Queries r_begin..r_end-1's outputs, dims e0..e1-1 (e0 a multiple of 32, or 0): the values weighted by
// the softmax, summed in position order, LM_VALUE_ROWS positions at a time for the queries that see the same
// ones of them (each value row read once for them). Any split of the queries or dims gives the same bits.
static void run_attention_values(const LmModel *m, const LmAttention *a, const float *att, int r_begin, int r_end, int e0, int e1) {
    const LmConfig *c = &m->config;
    const LmRunState *s = &m->state;
    int lo, hi, base;
    run_attention_range(a, &lo, &hi, &base);
    size_t span = run_attention_span(c), skip = (size_t)e0 / (size_t)run_types[c->cache_type].block_values * (size_t)run_types[c->cache_type].block_bytes;
    for (int t0 = lo; t0 <= hi; t0 += LM_VALUE_ROWS) {
        for (int r = r_begin, next; r < r_end; r = next) {
            int from = a->first[r] > t0 ? a->first[r] : t0, to = a->last[r] < t0 + LM_VALUE_ROWS - 1 ? a->last[r] : t0 + LM_VALUE_ROWS - 1;
            const float *p[LM_ATTN_QUERIES];
            float *out[LM_ATTN_QUERIES];
            for (next = r; next < r_end; next++) {
                int f = a->first[next] > t0 ? a->first[next] : t0, l = a->last[next] < t0 + LM_VALUE_ROWS - 1 ? a->last[next] : t0 + LM_VALUE_ROWS - 1;
                if (f != from || l != to) break;
                out[next - r] = a->out[next] + e0;
            }
            while (from <= to) { // (a ring's rows wrap around)
                int row = from % a->ring, count = to - from + 1 < a->ring - row ? to - from + 1 : a->ring - row;
                for (int i = r; i < next; i++) p[i - r] = att + (size_t)i * span + (size_t)(from - base);
                run_tile_values(m->kernels, a->values + (size_t)row * s->value_row_bytes + skip, s->value_row_bytes, count, c->cache_type, e1 - e0, p,
                                next - r, out);
                from += count;
            }
        }
    }
}

// A unit's attention by one thread: each query's scores over the positions first..last, their
// softmax, and the values weighted by it. att holds s->att_floats floats.
static void run_attention(const LmModel *m, const LmAttention *a, float *att) {
    LmQuery query[LM_ATTN_QUERIES];
    int lo, hi, base;
    run_attention_range(a, &lo, &hi, &base);
    run_attention_queries(m, a, att, query);
    run_attention_scores(m, a, query, att, base, hi + 1);
    run_attention_weights(m, a, att);
    run_attention_values(m, a, att, 0, a->nq, 0, m->config.head_size);
}

// The RoPE angles of the block's positions into s->rope_cos/sin: table 0 for the layers of the
// model's RoPE (with LongRoPE, the long factors when s->rope_long), table 1 for local layers with a
// base of their own (Gemma 3).
static void run_rope_angles(LmRunState *s, const LmConfig *c, int n, int pos) {
    int half = c->rotary_dim / 2;
    for (int i = 0; i < n; i++) {
        for (int table = 0; table < 2; table++) {
            const float *freq = s->rope_freq + (size_t)(table ? 2 : s->rope_long ? 1 : 0) * half;
            float *cos_t = s->rope_cos + ((size_t)table * LM_BATCH + i) * half, *sin_t = s->rope_sin + ((size_t)table * LM_BATCH + i) * half;
            for (int k = 0; k < half; k++) {
                if (c->version < 3) { // llama2.c's float angle, for its exact texts
                    float angle = (float)(pos + i) * freq[k];
                    cos_t[k] = cosf(angle);
                    sin_t[k] = sinf(angle);
                } else { // in double: a float angle's error grows with the position (6e-5 at 1500, past 1e-4 near 2500)
                    double angle = (double)(pos + i) * (double)freq[k];
                    cos_t[k] = (float)cos(angle);
                    sin_t[k] = (float)sin(angle);
                }
                if (c->rope_scaling == LM_ROPE_LONGROPE || c->rope_scaling == LM_ROPE_YARN) { cos_t[k] *= c->rope_attn_factor; sin_t[k] *= c->rope_attn_factor; }
            }
        }
    }
}

// Runs tokens[0..n) (n <= the state's block) at positions pos..pos+n-1 over the KV cache of the positions
// before them, writing their keys and values into it; computes the logits of the last token when
// want_logits. lm_forward is this with n = 1.
static void run_forward_block(LmModel *m, const int *tokens, int n, int pos, int want_logits) {
    const LmConfig *c = &m->config;
    const LmWeights *w = &m->weights;
    LmRunState *s = &m->state;
    int dim = c->dim, hidden = c->hidden_dim, head_size = c->head_size, half = c->rotary_dim / 2;
    int q_dim = c->n_heads * head_size, kv_dim = c->n_kv_heads * head_size;
    int xb_ld = dim > q_dim ? dim : q_dim;
    int kv_mul = c->n_heads / c->n_kv_heads; // query heads per key/value head
    assert(n >= 1 && n <= s->block && pos >= 0 && pos + n <= c->seq_len);

    // each token's embedding starts its residual stream (Gemma scales it); RoPE angles for each position
    for (int i = 0; i < n; i++) {
        float *x = s->x + (size_t)i * dim;
        run_matrix_row(x, &w->token_embedding, tokens[i]);
        if (c->embed_scale != 1.0f) for (int e = 0; e < dim; e++) x[e] *= c->embed_scale;
    }
    run_rope_angles(s, c, n, pos);

    for (int l = 0; l < c->n_layers; l++) {
        const LmLayer *ly = &w->layers[l];
        int window = run_layer_window(c, l), ring = s->cache_positions[l];
        // (n_kv_heads, ring / LM_KEY_TILE, key_tile_bytes) and (n_kv_heads, ring, value_row_bytes)
        unsigned char *key_cache = s->key_cache + s->cache_offset[l], *value_cache = s->value_cache + s->cache_offset[l];
        size_t head_bytes = (size_t)ring * s->value_row_bytes; // (a kv head's keys, or values)
        int own_rope = window && c->rope_local_theta > 0.0f; // (Gemma 3's local layers: their own RoPE base)
        const float *rope_cos = s->rope_cos + (own_rope ? LM_BATCH * half : 0), *rope_sin = s->rope_sin + (own_rope ? LM_BATCH * half : 0);

        // attention: q, k, v from the normed stream; (Qwen3, Gemma 3) q and k normed per head; RoPE;
        // k and v into the cache in its type, position t at row t % ring
        LM_PARALLEL_FOR_IF(m->threads, n >= 16)
        for (int i = 0; i < n; i++) run_rmsnorm(s->xb + (size_t)i * xb_ld, s->x + (size_t)i * dim, ly->rms_att, dim, c->norm_eps);
        LmBatch in = run_make_batch(m, s->xb, n, dim, xb_ld);
        LmMatmul qkv[3] = {{&ly->wq, s->q, q_dim}, {&ly->wk, s->kb, kv_dim}, {&ly->wv, s->vb, kv_dim}};
        run_matmul(qkv, 3, &in, m->threads);
        for (int i = 0; i < n; i++) {
            float *qi = s->q + (size_t)i * q_dim, *ki = s->kb + (size_t)i * kv_dim, *vi = s->vb + (size_t)i * kv_dim;
            run_add_bias(qi, ly->bq, q_dim);
            run_add_bias(ki, ly->bk, kv_dim);
            run_add_bias(vi, ly->bv, kv_dim);
            for (int h = 0; c->qk_norm && h < c->n_heads; h++) run_rmsnorm(qi + h * head_size, qi + h * head_size, ly->q_norm, head_size, c->norm_eps);
            for (int h = 0; c->qk_norm && h < c->n_kv_heads; h++) run_rmsnorm(ki + h * head_size, ki + h * head_size, ly->k_norm, head_size, c->norm_eps);
            run_rope_rotate(qi, c->n_heads, head_size, c->rotary_dim, rope_cos + i * half, rope_sin + i * half, c->rope_layout);
            run_rope_rotate(ki, c->n_kv_heads, head_size, c->rotary_dim, rope_cos + i * half, rope_sin + i * half, c->rope_layout);
            int row = (pos + i) % ring;
            for (int g = 0; g < c->n_kv_heads; g++) {
                unsigned char *tile = key_cache + (size_t)g * head_bytes + (size_t)(row / LM_KEY_TILE) * s->key_tile_bytes;
                run_store_key(tile, row % LM_KEY_TILE, ki + g * head_size, head_size, c->cache_type);
                run_store_values(value_cache + (size_t)g * head_bytes + (size_t)row * s->value_row_bytes, vi + g * head_size, head_size, c->cache_type);
            }
        }

        // each query head attends over the positions it sees (0..pos+i, or the window's last ones) of
        // its key/value head; the work in units of up to LM_ATTN_QUERIES queries of one kv head (token
        // by token, the heads of a group together), so a group's queries share each key and value read
        int per_head = n * kv_mul, units_per_head = (per_head + LM_ATTN_QUERIES - 1) / LM_ATTN_QUERIES, units = c->n_kv_heads * units_per_head;
        LmAttention *unit_of = s->units; // (units)
        for (int unit = 0; unit < units; unit++) {
            int g = unit / units_per_head, first_query = unit % units_per_head * LM_ATTN_QUERIES;
            LmAttention *a = &unit_of[unit];
            *a = (LmAttention){.keys = key_cache + (size_t)g * head_bytes, .values = value_cache + (size_t)g * head_bytes, .ring = ring};
            for (int qi = first_query; qi < per_head && a->nq < LM_ATTN_QUERIES; qi++, a->nq++) {
                int i = qi / kv_mul, h = g * kv_mul + qi % kv_mul;
                a->q[a->nq] = s->q + (size_t)i * q_dim + (size_t)h * head_size;
                a->out[a->nq] = s->xb + (size_t)i * xb_ld + (size_t)h * head_size;
                a->last[a->nq] = pos + i;
                a->first[a->nq] = window && pos + i - window + 1 > 0 ? pos + i - window + 1 : 0;
            }
        }
        if (units >= m->threads) { // a unit per thread at a time
            LM_PARALLEL_FOR(m->threads)
            for (int unit = 0; unit < units; unit++) {
#ifdef _OPENMP
                int slot = omp_get_thread_num();
#else
                int slot = 0;
#endif
                run_attention(m, &unit_of[unit], s->att + (size_t)slot * s->att_floats);
            }
        } else { // fewer units than threads (few kv heads): each unit's positions, then its queries' dims, spread over them
            for (int unit = 0; unit < units; unit++) {
                const LmAttention *a = &unit_of[unit];
                LmQuery query[LM_ATTN_QUERIES];
                int lo, hi, base, e_step = head_size % 32 == 0 ? 32 : head_size, e_parts = head_size / e_step;
                run_attention_range(a, &lo, &hi, &base);
                run_attention_queries(m, a, s->att, query);
                int chunks = 4 * m->threads, chunk = ((hi - base + 1 + chunks - 1) / chunks + LM_KEY_TILE - 1) / LM_KEY_TILE * LM_KEY_TILE;
                LM_PARALLEL_FOR(m->threads)
                for (int k = 0; k < chunks; k++) run_attention_scores(m, a, query, s->att, base + k * chunk, base + (k + 1) * chunk);
                run_attention_weights(m, a, s->att);
                LM_PARALLEL_FOR(m->threads)
                for (int k = 0; k < a->nq * e_parts; k++) run_attention_values(m, a, s->att, k / e_parts, k / e_parts + 1, k % e_parts * e_step, (k % e_parts + 1) * e_step);
            }
        }

        // output projection, (Gemma) its norm, and residual
        in = run_make_batch(m, s->xb, n, q_dim, xb_ld);
        LmMatmul wo = {&ly->wo, s->xb2, dim};
        run_matmul(&wo, 1, &in, m->threads);
        LM_PARALLEL_FOR_IF(m->threads, n >= 16)
        for (int i = 0; i < n; i++) {
            float *x = s->x + (size_t)i * dim, *xb2 = s->xb2 + (size_t)i * dim;
            if (ly->rms_post_att) run_rmsnorm(xb2, xb2, ly->rms_post_att, dim, c->norm_eps);
            for (int e = 0; e < dim; e++) x[e] += xb2[e];
        }

        // gated FFN: w2(act(w1 x) * w3 x) with act SiLU (SwiGLU) or tanh-GELU (GeGLU), (Gemma) its
        // norm, then residual
        LM_PARALLEL_FOR_IF(m->threads, n >= 16)
        for (int i = 0; i < n; i++) run_rmsnorm(s->xb + (size_t)i * xb_ld, s->x + (size_t)i * dim, ly->rms_ffn, dim, c->norm_eps);
        in = run_make_batch(m, s->xb, n, dim, xb_ld);
        LmMatmul up[2] = {{&ly->w1, s->hb, hidden}, {&ly->w3, s->hb2, hidden}};
        run_matmul(up, 2, &in, m->threads);
        LM_PARALLEL_FOR_IF(m->threads, n >= 16)
        for (int i = 0; i < n; i++) {
            float *gate = s->hb + (size_t)i * hidden, *lin = s->hb2 + (size_t)i * hidden;
            if (c->activation == LM_ACT_GELU_TANH) run_gelu_tanh_glu(gate, lin, hidden);
            else run_swiglu(gate, lin, hidden);
        }
        in = run_make_batch(m, s->hb, n, hidden, hidden);
        LmMatmul down = {&ly->w2, s->xb2, dim};
        run_matmul(&down, 1, &in, m->threads);
        LM_PARALLEL_FOR_IF(m->threads, n >= 16)
        for (int i = 0; i < n; i++) {
            float *x = s->x + (size_t)i * dim, *xb2 = s->xb2 + (size_t)i * dim;
            if (ly->rms_post_ffn) run_rmsnorm(xb2, xb2, ly->rms_post_ffn, dim, c->norm_eps);
            for (int e = 0; e < dim; e++) x[e] += xb2[e];
        }
    }

    if (want_logits) { // final norm and classifier (Gemma 2: soft-capped), for the last token only
        float *x = s->x + (size_t)(n - 1) * dim;
        run_rmsnorm(x, x, w->rms_final, dim, c->norm_eps);
        LmBatch in = run_make_batch(m, x, 1, dim, dim);
        LmMatmul cls = {&w->wcls, s->logits, c->vocab_size};
        run_matmul(&cls, 1, &in, m->threads);
        if (c->final_softcap > 0.0f) run_softcap(s->logits, c->vocab_size, c->final_softcap);
    }
}

float *lm_forward(LmModel *m, int token, int pos) {
    return lm_forward_batch(m, &token, 1, pos);
}

int lm_shift_context(LmModel *m, int pos, int n_keep, int n_discard) {
    if (m == NULL || n_keep < 0 || n_discard < 1 || pos > m->config.seq_len || n_keep + n_discard > pos) return -1;
    const LmConfig *c = &m->config;
    LmRunState *s = &m->state;
    int half = c->rotary_dim / 2, kv_dim = c->n_kv_heads * c->head_size, new_pos = pos - n_discard;
    // a local layer's ring holds its last positions only: the kept ones its next queries see must be there
    for (int l = 0; l < c->n_layers; l++) {
        int window = run_layer_window(c, l), first_seen = new_pos - window + 1 > 0 ? new_pos - window + 1 : 0;
        if (s->cache_positions[l] < c->seq_len && first_seen < n_keep && first_seen < pos - s->cache_positions[l]) return -1;
    }
    // RoPE turns a key by (position x frequency): turning it back by n_discard x frequency moves it
    // (cos and sin of each table: global, global past LongRoPE's original context, local)
    float *cos_t = s->rope_cos, *sin_t = s->rope_sin; // (3, half) as scratch
    for (int i = 0; i < 3 * half; i++) {
        double angle = -(double)n_discard * (double)s->rope_freq[i];
        cos_t[i] = (float)cos(angle);
        sin_t[i] = (float)sin(angle);
    }
    memmove(s->tokens + n_keep, s->tokens + n_keep + n_discard, (size_t)(new_pos - n_keep) * sizeof(int));
    int hs = c->head_size;
    size_t vrow = s->value_row_bytes;
    float *key = s->kb; // (kv_dim) one position's keys, turned
    unsigned char *moved = NULL; // a ring's turned keys (positions, kv_dim floats) and values (positions, n_kv_heads, vrow)
    for (int l = 0; l < c->n_layers; l++) {
        int ring = s->cache_positions[l], window = run_layer_window(c, l), is_ring = ring < c->seq_len;
        size_t head_bytes = (size_t)ring * vrow;
        unsigned char *keys = s->key_cache + s->cache_offset[l], *values = s->value_cache + s->cache_offset[l];
        // the new positions to fill: all after n_keep, or (a ring) those the next queries see
        int first = n_keep, count;
        if (is_ring && new_pos - window + 1 > first) first = new_pos - window + 1;
        count = new_pos - first;
        if (count <= 0) continue;
        size_t moved_keys = (size_t)ring * (size_t)kv_dim * sizeof(float);
        if (is_ring && moved == NULL && (moved = (unsigned char *)malloc(moved_keys + (size_t)ring * (size_t)c->n_kv_heads * vrow)) == NULL) return -1;
        for (int p = first; p < new_pos; p++) {
            int t = (p + n_discard) % ring, table = window && c->rope_local_theta > 0.0f ? 2 : s->rope_long ? 1 : 0;
            for (int g = 0; g < c->n_kv_heads; g++)
                run_load_key(keys + (size_t)g * head_bytes + (size_t)(t / LM_KEY_TILE) * s->key_tile_bytes, t % LM_KEY_TILE, key + g * hs, hs, c->cache_type);
            run_rope_rotate(key, c->n_kv_heads, hs, c->rotary_dim, cos_t + table * half, sin_t + table * half, c->rope_layout);
            for (int g = 0; g < c->n_kv_heads; g++) {
                const unsigned char *from = values + (size_t)g * head_bytes + (size_t)t * vrow;
                if (!is_ring) { // in order, each row moves down to one already moved
                    run_store_key(keys + (size_t)g * head_bytes + (size_t)(p / LM_KEY_TILE) * s->key_tile_bytes, p % LM_KEY_TILE, key + g * hs, hs, c->cache_type);
                    memmove(values + (size_t)g * head_bytes + (size_t)p * vrow, from, vrow);
                } else { // through `moved`: a ring's rows may overlap
                    memcpy(moved + moved_keys + ((size_t)(p - first) * (size_t)c->n_kv_heads + (size_t)g) * vrow, from, vrow);
                }
            }
            if (is_ring) memcpy(moved + (size_t)(p - first) * (size_t)kv_dim * sizeof(float), key, (size_t)kv_dim * sizeof(float));
        }
        for (int p = first; is_ring && p < new_pos; p++) {
            int row = p % ring;
            for (int g = 0; g < c->n_kv_heads; g++) {
                memcpy(key, moved + ((size_t)(p - first) * (size_t)kv_dim + (size_t)g * (size_t)hs) * sizeof(float), (size_t)hs * sizeof(float));
                run_store_key(keys + (size_t)g * head_bytes + (size_t)(row / LM_KEY_TILE) * s->key_tile_bytes, row % LM_KEY_TILE, key, hs, c->cache_type);
                memcpy(values + (size_t)g * head_bytes + (size_t)row * vrow, moved + moved_keys + ((size_t)(p - first) * (size_t)c->n_kv_heads + (size_t)g) * vrow, vrow);
            }
        }
    }
    free(moved);
    return new_pos;
}

float *lm_forward_batch(LmModel *m, const int *tokens, int n, int pos) {
    if (m == NULL || tokens == NULL || n < 1 || pos < 0 || pos > m->config.seq_len - n) return NULL;
    for (int i = 0; i < n; i++) if (tokens[i] < 0 || tokens[i] >= m->config.vocab_size) return NULL;
    const LmConfig *c = &m->config;
    LmRunState *s = &m->state;
    // LongRoPE takes its long factors once the sequence is longer than the original context, and then
    // for every position: as Hugging Face's Phi-3 does, which drops its cache there and computes the
    // positions before again. So a switch runs the cached positions again with the other factors.
    int want_long = c->rope_long_factors != NULL && pos + n > c->rope_original_context;
    if (want_long != s->rope_long) {
        s->rope_long = want_long;
        for (int done = 0; done < pos; done += s->block)
            run_forward_block(m, s->tokens + done, pos - done < s->block ? pos - done : s->block, done, 0);
    }
    memcpy(s->tokens + pos, tokens, (size_t)n * sizeof(int));
    for (int done = 0; done < n; done += s->block) {
        int count = n - done < s->block ? n - done : s->block;
        run_forward_block(m, tokens + done, count, pos + done, done + count == n);
    }
    return m->state.logits;
}

// ----------------------------------------------------------------------------
// Unicode tables for the pre-tokenizers (made by tests/gen_unicode_tables.py)

static const uint32_t run_unicode_letters[][2] = { // Unicode 15.0.0, category L*, 659 ranges
    {0x41,0x5A}, {0x61,0x7A}, {0xAA,0xAA}, {0xB5,0xB5}, {0xBA,0xBA}, {0xC0,0xD6}, {0xD8,0xF6}, {0xF8,0x2C1},
    {0x2C6,0x2D1}, {0x2E0,0x2E4}, {0x2EC,0x2EC}, {0x2EE,0x2EE}, {0x370,0x374}, {0x376,0x377}, {0x37A,0x37D},
    {0x37F,0x37F}, {0x386,0x386}, {0x388,0x38A}, {0x38C,0x38C}, {0x38E,0x3A1}, {0x3A3,0x3F5}, {0x3F7,0x481},
    {0x48A,0x52F}, {0x531,0x556}, {0x559,0x559}, {0x560,0x588}, {0x5D0,0x5EA}, {0x5EF,0x5F2}, {0x620,0x64A},
    {0x66E,0x66F}, {0x671,0x6D3}, {0x6D5,0x6D5}, {0x6E5,0x6E6}, {0x6EE,0x6EF}, {0x6FA,0x6FC}, {0x6FF,0x6FF},
    {0x710,0x710}, {0x712,0x72F}, {0x74D,0x7A5}, {0x7B1,0x7B1}, {0x7CA,0x7EA}, {0x7F4,0x7F5}, {0x7FA,0x7FA},
    {0x800,0x815}, {0x81A,0x81A}, {0x824,0x824}, {0x828,0x828}, {0x840,0x858}, {0x860,0x86A}, {0x870,0x887},
    {0x889,0x88E}, {0x8A0,0x8C9}, {0x904,0x939}, {0x93D,0x93D}, {0x950,0x950}, {0x958,0x961}, {0x971,0x980},
    {0x985,0x98C}, {0x98F,0x990}, {0x993,0x9A8}, {0x9AA,0x9B0}, {0x9B2,0x9B2}, {0x9B6,0x9B9}, {0x9BD,0x9BD},
    {0x9CE,0x9CE}, {0x9DC,0x9DD}, {0x9DF,0x9E1}, {0x9F0,0x9F1}, {0x9FC,0x9FC}, {0xA05,0xA0A}, {0xA0F,0xA10},
    {0xA13,0xA28}, {0xA2A,0xA30}, {0xA32,0xA33}, {0xA35,0xA36}, {0xA38,0xA39}, {0xA59,0xA5C}, {0xA5E,0xA5E},
    {0xA72,0xA74}, {0xA85,0xA8D}, {0xA8F,0xA91}, {0xA93,0xAA8}, {0xAAA,0xAB0}, {0xAB2,0xAB3}, {0xAB5,0xAB9},
    {0xABD,0xABD}, {0xAD0,0xAD0}, {0xAE0,0xAE1}, {0xAF9,0xAF9}, {0xB05,0xB0C}, {0xB0F,0xB10}, {0xB13,0xB28},
    {0xB2A,0xB30}, {0xB32,0xB33}, {0xB35,0xB39}, {0xB3D,0xB3D}, {0xB5C,0xB5D}, {0xB5F,0xB61}, {0xB71,0xB71},
    {0xB83,0xB83}, {0xB85,0xB8A}, {0xB8E,0xB90}, {0xB92,0xB95}, {0xB99,0xB9A}, {0xB9C,0xB9C}, {0xB9E,0xB9F},
    {0xBA3,0xBA4}, {0xBA8,0xBAA}, {0xBAE,0xBB9}, {0xBD0,0xBD0}, {0xC05,0xC0C}, {0xC0E,0xC10}, {0xC12,0xC28},
    {0xC2A,0xC39}, {0xC3D,0xC3D}, {0xC58,0xC5A}, {0xC5D,0xC5D}, {0xC60,0xC61}, {0xC80,0xC80}, {0xC85,0xC8C},
    {0xC8E,0xC90}, {0xC92,0xCA8}, {0xCAA,0xCB3}, {0xCB5,0xCB9}, {0xCBD,0xCBD}, {0xCDD,0xCDE}, {0xCE0,0xCE1},
    {0xCF1,0xCF2}, {0xD04,0xD0C}, {0xD0E,0xD10}, {0xD12,0xD3A}, {0xD3D,0xD3D}, {0xD4E,0xD4E}, {0xD54,0xD56},
    {0xD5F,0xD61}, {0xD7A,0xD7F}, {0xD85,0xD96}, {0xD9A,0xDB1}, {0xDB3,0xDBB}, {0xDBD,0xDBD}, {0xDC0,0xDC6},
    {0xE01,0xE30}, {0xE32,0xE33}, {0xE40,0xE46}, {0xE81,0xE82}, {0xE84,0xE84}, {0xE86,0xE8A}, {0xE8C,0xEA3},
    {0xEA5,0xEA5}, {0xEA7,0xEB0}, {0xEB2,0xEB3}, {0xEBD,0xEBD}, {0xEC0,0xEC4}, {0xEC6,0xEC6}, {0xEDC,0xEDF},
    {0xF00,0xF00}, {0xF40,0xF47}, {0xF49,0xF6C}, {0xF88,0xF8C}, {0x1000,0x102A}, {0x103F,0x103F},
    {0x1050,0x1055}, {0x105A,0x105D}, {0x1061,0x1061}, {0x1065,0x1066}, {0x106E,0x1070}, {0x1075,0x1081},
    {0x108E,0x108E}, {0x10A0,0x10C5}, {0x10C7,0x10C7}, {0x10CD,0x10CD}, {0x10D0,0x10FA}, {0x10FC,0x1248},
    {0x124A,0x124D}, {0x1250,0x1256}, {0x1258,0x1258}, {0x125A,0x125D}, {0x1260,0x1288}, {0x128A,0x128D},
    {0x1290,0x12B0}, {0x12B2,0x12B5}, {0x12B8,0x12BE}, {0x12C0,0x12C0}, {0x12C2,0x12C5}, {0x12C8,0x12D6},
    {0x12D8,0x1310}, {0x1312,0x1315}, {0x1318,0x135A}, {0x1380,0x138F}, {0x13A0,0x13F5}, {0x13F8,0x13FD},
    {0x1401,0x166C}, {0x166F,0x167F}, {0x1681,0x169A}, {0x16A0,0x16EA}, {0x16F1,0x16F8}, {0x1700,0x1711},
    {0x171F,0x1731}, {0x1740,0x1751}, {0x1760,0x176C}, {0x176E,0x1770}, {0x1780,0x17B3}, {0x17D7,0x17D7},
    {0x17DC,0x17DC}, {0x1820,0x1878}, {0x1880,0x1884}, {0x1887,0x18A8}, {0x18AA,0x18AA}, {0x18B0,0x18F5},
    {0x1900,0x191E}, {0x1950,0x196D}, {0x1970,0x1974}, {0x1980,0x19AB}, {0x19B0,0x19C9}, {0x1A00,0x1A16},
    {0x1A20,0x1A54}, {0x1AA7,0x1AA7}, {0x1B05,0x1B33}, {0x1B45,0x1B4C}, {0x1B83,0x1BA0}, {0x1BAE,0x1BAF},
    {0x1BBA,0x1BE5}, {0x1C00,0x1C23}, {0x1C4D,0x1C4F}, {0x1C5A,0x1C7D}, {0x1C80,0x1C88}, {0x1C90,0x1CBA},
    {0x1CBD,0x1CBF}, {0x1CE9,0x1CEC}, {0x1CEE,0x1CF3}, {0x1CF5,0x1CF6}, {0x1CFA,0x1CFA}, {0x1D00,0x1DBF},
    {0x1E00,0x1F15}, {0x1F18,0x1F1D}, {0x1F20,0x1F45}, {0x1F48,0x1F4D}, {0x1F50,0x1F57}, {0x1F59,0x1F59},
    {0x1F5B,0x1F5B}, {0x1F5D,0x1F5D}, {0x1F5F,0x1F7D}, {0x1F80,0x1FB4}, {0x1FB6,0x1FBC}, {0x1FBE,0x1FBE},
    {0x1FC2,0x1FC4}, {0x1FC6,0x1FCC}, {0x1FD0,0x1FD3}, {0x1FD6,0x1FDB}, {0x1FE0,0x1FEC}, {0x1FF2,0x1FF4},
    {0x1FF6,0x1FFC}, {0x2071,0x2071}, {0x207F,0x207F}, {0x2090,0x209C}, {0x2102,0x2102}, {0x2107,0x2107},
    {0x210A,0x2113}, {0x2115,0x2115}, {0x2119,0x211D}, {0x2124,0x2124}, {0x2126,0x2126}, {0x2128,0x2128},
    {0x212A,0x212D}, {0x212F,0x2139}, {0x213C,0x213F}, {0x2145,0x2149}, {0x214E,0x214E}, {0x2183,0x2184},
    {0x2C00,0x2CE4}, {0x2CEB,0x2CEE}, {0x2CF2,0x2CF3}, {0x2D00,0x2D25}, {0x2D27,0x2D27}, {0x2D2D,0x2D2D},
    {0x2D30,0x2D67}, {0x2D6F,0x2D6F}, {0x2D80,0x2D96}, {0x2DA0,0x2DA6}, {0x2DA8,0x2DAE}, {0x2DB0,0x2DB6},
    {0x2DB8,0x2DBE}, {0x2DC0,0x2DC6}, {0x2DC8,0x2DCE}, {0x2DD0,0x2DD6}, {0x2DD8,0x2DDE}, {0x2E2F,0x2E2F},
    {0x3005,0x3006}, {0x3031,0x3035}, {0x303B,0x303C}, {0x3041,0x3096}, {0x309D,0x309F}, {0x30A1,0x30FA},
    {0x30FC,0x30FF}, {0x3105,0x312F}, {0x3131,0x318E}, {0x31A0,0x31BF}, {0x31F0,0x31FF}, {0x3400,0x4DBF},
    {0x4E00,0xA48C}, {0xA4D0,0xA4FD}, {0xA500,0xA60C}, {0xA610,0xA61F}, {0xA62A,0xA62B}, {0xA640,0xA66E},
    {0xA67F,0xA69D}, {0xA6A0,0xA6E5}, {0xA717,0xA71F}, {0xA722,0xA788}, {0xA78B,0xA7CA}, {0xA7D0,0xA7D1},
    {0xA7D3,0xA7D3}, {0xA7D5,0xA7D9}, {0xA7F2,0xA801}, {0xA803,0xA805}, {0xA807,0xA80A}, {0xA80C,0xA822},
    {0xA840,0xA873}, {0xA882,0xA8B3}, {0xA8F2,0xA8F7}, {0xA8FB,0xA8FB}, {0xA8FD,0xA8FE}, {0xA90A,0xA925},
    {0xA930,0xA946}, {0xA960,0xA97C}, {0xA984,0xA9B2}, {0xA9CF,0xA9CF}, {0xA9E0,0xA9E4}, {0xA9E6,0xA9EF},
    {0xA9FA,0xA9FE}, {0xAA00,0xAA28}, {0xAA40,0xAA42}, {0xAA44,0xAA4B}, {0xAA60,0xAA76}, {0xAA7A,0xAA7A},
    {0xAA7E,0xAAAF}, {0xAAB1,0xAAB1}, {0xAAB5,0xAAB6}, {0xAAB9,0xAABD}, {0xAAC0,0xAAC0}, {0xAAC2,0xAAC2},
    {0xAADB,0xAADD}, {0xAAE0,0xAAEA}, {0xAAF2,0xAAF4}, {0xAB01,0xAB06}, {0xAB09,0xAB0E}, {0xAB11,0xAB16},
    {0xAB20,0xAB26}, {0xAB28,0xAB2E}, {0xAB30,0xAB5A}, {0xAB5C,0xAB69}, {0xAB70,0xABE2}, {0xAC00,0xD7A3},
    {0xD7B0,0xD7C6}, {0xD7CB,0xD7FB}, {0xF900,0xFA6D}, {0xFA70,0xFAD9}, {0xFB00,0xFB06}, {0xFB13,0xFB17},
    {0xFB1D,0xFB1D}, {0xFB1F,0xFB28}, {0xFB2A,0xFB36}, {0xFB38,0xFB3C}, {0xFB3E,0xFB3E}, {0xFB40,0xFB41},
    {0xFB43,0xFB44}, {0xFB46,0xFBB1}, {0xFBD3,0xFD3D}, {0xFD50,0xFD8F}, {0xFD92,0xFDC7}, {0xFDF0,0xFDFB},
    {0xFE70,0xFE74}, {0xFE76,0xFEFC}, {0xFF21,0xFF3A}, {0xFF41,0xFF5A}, {0xFF66,0xFFBE}, {0xFFC2,0xFFC7},
    {0xFFCA,0xFFCF}, {0xFFD2,0xFFD7}, {0xFFDA,0xFFDC}, {0x10000,0x1000B}, {0x1000D,0x10026},
    {0x10028,0x1003A}, {0x1003C,0x1003D}, {0x1003F,0x1004D}, {0x10050,0x1005D}, {0x10080,0x100FA},
    {0x10280,0x1029C}, {0x102A0,0x102D0}, {0x10300,0x1031F}, {0x1032D,0x10340}, {0x10342,0x10349},
    {0x10350,0x10375}, {0x10380,0x1039D}, {0x103A0,0x103C3}, {0x103C8,0x103CF}, {0x10400,0x1049D},
    {0x104B0,0x104D3}, {0x104D8,0x104FB}, {0x10500,0x10527}, {0x10530,0x10563}, {0x10570,0x1057A},
    {0x1057C,0x1058A}, {0x1058C,0x10592}, {0x10594,0x10595}, {0x10597,0x105A1}, {0x105A3,0x105B1},
    {0x105B3,0x105B9}, {0x105BB,0x105BC}, {0x10600,0x10736}, {0x10740,0x10755}, {0x10760,0x10767},
    {0x10780,0x10785}, {0x10787,0x107B0}, {0x107B2,0x107BA}, {0x10800,0x10805}, {0x10808,0x10808},
    {0x1080A,0x10835}, {0x10837,0x10838}, {0x1083C,0x1083C}, {0x1083F,0x10855}, {0x10860,0x10876},
    {0x10880,0x1089E}, {0x108E0,0x108F2}, {0x108F4,0x108F5}, {0x10900,0x10915}, {0x10920,0x10939},
    {0x10980,0x109B7}, {0x109BE,0x109BF}, {0x10A00,0x10A00}, {0x10A10,0x10A13}, {0x10A15,0x10A17},
    {0x10A19,0x10A35}, {0x10A60,0x10A7C}, {0x10A80,0x10A9C}, {0x10AC0,0x10AC7}, {0x10AC9,0x10AE4},
    {0x10B00,0x10B35}, {0x10B40,0x10B55}, {0x10B60,0x10B72}, {0x10B80,0x10B91}, {0x10C00,0x10C48},
    {0x10C80,0x10CB2}, {0x10CC0,0x10CF2}, {0x10D00,0x10D23}, {0x10E80,0x10EA9}, {0x10EB0,0x10EB1},
    {0x10F00,0x10F1C}, {0x10F27,0x10F27}, {0x10F30,0x10F45}, {0x10F70,0x10F81}, {0x10FB0,0x10FC4},
    {0x10FE0,0x10FF6}, {0x11003,0x11037}, {0x11071,0x11072}, {0x11075,0x11075}, {0x11083,0x110AF},
    {0x110D0,0x110E8}, {0x11103,0x11126}, {0x11144,0x11144}, {0x11147,0x11147}, {0x11150,0x11172},
    {0x11176,0x11176}, {0x11183,0x111B2}, {0x111C1,0x111C4}, {0x111DA,0x111DA}, {0x111DC,0x111DC},
    {0x11200,0x11211}, {0x11213,0x1122B}, {0x1123F,0x11240}, {0x11280,0x11286}, {0x11288,0x11288},
    {0x1128A,0x1128D}, {0x1128F,0x1129D}, {0x1129F,0x112A8}, {0x112B0,0x112DE}, {0x11305,0x1130C},
    {0x1130F,0x11310}, {0x11313,0x11328}, {0x1132A,0x11330}, {0x11332,0x11333}, {0x11335,0x11339},
    {0x1133D,0x1133D}, {0x11350,0x11350}, {0x1135D,0x11361}, {0x11400,0x11434}, {0x11447,0x1144A},
    {0x1145F,0x11461}, {0x11480,0x114AF}, {0x114C4,0x114C5}, {0x114C7,0x114C7}, {0x11580,0x115AE},
    {0x115D8,0x115DB}, {0x11600,0x1162F}, {0x11644,0x11644}, {0x11680,0x116AA}, {0x116B8,0x116B8},
    {0x11700,0x1171A}, {0x11740,0x11746}, {0x11800,0x1182B}, {0x118A0,0x118DF}, {0x118FF,0x11906},
    {0x11909,0x11909}, {0x1190C,0x11913}, {0x11915,0x11916}, {0x11918,0x1192F}, {0x1193F,0x1193F},
    {0x11941,0x11941}, {0x119A0,0x119A7}, {0x119AA,0x119D0}, {0x119E1,0x119E1}, {0x119E3,0x119E3},
    {0x11A00,0x11A00}, {0x11A0B,0x11A32}, {0x11A3A,0x11A3A}, {0x11A50,0x11A50}, {0x11A5C,0x11A89},
    {0x11A9D,0x11A9D}, {0x11AB0,0x11AF8}, {0x11C00,0x11C08}, {0x11C0A,0x11C2E}, {0x11C40,0x11C40},
    {0x11C72,0x11C8F}, {0x11D00,0x11D06}, {0x11D08,0x11D09}, {0x11D0B,0x11D30}, {0x11D46,0x11D46},
    {0x11D60,0x11D65}, {0x11D67,0x11D68}, {0x11D6A,0x11D89}, {0x11D98,0x11D98}, {0x11EE0,0x11EF2},
    {0x11F02,0x11F02}, {0x11F04,0x11F10}, {0x11F12,0x11F33}, {0x11FB0,0x11FB0}, {0x12000,0x12399},
    {0x12480,0x12543}, {0x12F90,0x12FF0}, {0x13000,0x1342F}, {0x13441,0x13446}, {0x14400,0x14646},
    {0x16800,0x16A38}, {0x16A40,0x16A5E}, {0x16A70,0x16ABE}, {0x16AD0,0x16AED}, {0x16B00,0x16B2F},
    {0x16B40,0x16B43}, {0x16B63,0x16B77}, {0x16B7D,0x16B8F}, {0x16E40,0x16E7F}, {0x16F00,0x16F4A},
    {0x16F50,0x16F50}, {0x16F93,0x16F9F}, {0x16FE0,0x16FE1}, {0x16FE3,0x16FE3}, {0x17000,0x187F7},
    {0x18800,0x18CD5}, {0x18D00,0x18D08}, {0x1AFF0,0x1AFF3}, {0x1AFF5,0x1AFFB}, {0x1AFFD,0x1AFFE},
    {0x1B000,0x1B122}, {0x1B132,0x1B132}, {0x1B150,0x1B152}, {0x1B155,0x1B155}, {0x1B164,0x1B167},
    {0x1B170,0x1B2FB}, {0x1BC00,0x1BC6A}, {0x1BC70,0x1BC7C}, {0x1BC80,0x1BC88}, {0x1BC90,0x1BC99},
    {0x1D400,0x1D454}, {0x1D456,0x1D49C}, {0x1D49E,0x1D49F}, {0x1D4A2,0x1D4A2}, {0x1D4A5,0x1D4A6},
    {0x1D4A9,0x1D4AC}, {0x1D4AE,0x1D4B9}, {0x1D4BB,0x1D4BB}, {0x1D4BD,0x1D4C3}, {0x1D4C5,0x1D505},
    {0x1D507,0x1D50A}, {0x1D50D,0x1D514}, {0x1D516,0x1D51C}, {0x1D51E,0x1D539}, {0x1D53B,0x1D53E},
    {0x1D540,0x1D544}, {0x1D546,0x1D546}, {0x1D54A,0x1D550}, {0x1D552,0x1D6A5}, {0x1D6A8,0x1D6C0},
    {0x1D6C2,0x1D6DA}, {0x1D6DC,0x1D6FA}, {0x1D6FC,0x1D714}, {0x1D716,0x1D734}, {0x1D736,0x1D74E},
    {0x1D750,0x1D76E}, {0x1D770,0x1D788}, {0x1D78A,0x1D7A8}, {0x1D7AA,0x1D7C2}, {0x1D7C4,0x1D7CB},
    {0x1DF00,0x1DF1E}, {0x1DF25,0x1DF2A}, {0x1E030,0x1E06D}, {0x1E100,0x1E12C}, {0x1E137,0x1E13D},
    {0x1E14E,0x1E14E}, {0x1E290,0x1E2AD}, {0x1E2C0,0x1E2EB}, {0x1E4D0,0x1E4EB}, {0x1E7E0,0x1E7E6},
    {0x1E7E8,0x1E7EB}, {0x1E7ED,0x1E7EE}, {0x1E7F0,0x1E7FE}, {0x1E800,0x1E8C4}, {0x1E900,0x1E943},
    {0x1E94B,0x1E94B}, {0x1EE00,0x1EE03}, {0x1EE05,0x1EE1F}, {0x1EE21,0x1EE22}, {0x1EE24,0x1EE24},
    {0x1EE27,0x1EE27}, {0x1EE29,0x1EE32}, {0x1EE34,0x1EE37}, {0x1EE39,0x1EE39}, {0x1EE3B,0x1EE3B},
    {0x1EE42,0x1EE42}, {0x1EE47,0x1EE47}, {0x1EE49,0x1EE49}, {0x1EE4B,0x1EE4B}, {0x1EE4D,0x1EE4F},
    {0x1EE51,0x1EE52}, {0x1EE54,0x1EE54}, {0x1EE57,0x1EE57}, {0x1EE59,0x1EE59}, {0x1EE5B,0x1EE5B},
    {0x1EE5D,0x1EE5D}, {0x1EE5F,0x1EE5F}, {0x1EE61,0x1EE62}, {0x1EE64,0x1EE64}, {0x1EE67,0x1EE6A},
    {0x1EE6C,0x1EE72}, {0x1EE74,0x1EE77}, {0x1EE79,0x1EE7C}, {0x1EE7E,0x1EE7E}, {0x1EE80,0x1EE89},
    {0x1EE8B,0x1EE9B}, {0x1EEA1,0x1EEA3}, {0x1EEA5,0x1EEA9}, {0x1EEAB,0x1EEBB}, {0x20000,0x2A6DF},
    {0x2A700,0x2B739}, {0x2B740,0x2B81D}, {0x2B820,0x2CEA1}, {0x2CEB0,0x2EBE0}, {0x2F800,0x2FA1D},
    {0x30000,0x3134A}, {0x31350,0x323AF},
};
static const uint32_t run_unicode_numbers[][2] = { // Unicode 15.0.0, category N*, 137 ranges
    {0x30,0x39}, {0xB2,0xB3}, {0xB9,0xB9}, {0xBC,0xBE}, {0x660,0x669}, {0x6F0,0x6F9}, {0x7C0,0x7C9},
    {0x966,0x96F}, {0x9E6,0x9EF}, {0x9F4,0x9F9}, {0xA66,0xA6F}, {0xAE6,0xAEF}, {0xB66,0xB6F}, {0xB72,0xB77},
    {0xBE6,0xBF2}, {0xC66,0xC6F}, {0xC78,0xC7E}, {0xCE6,0xCEF}, {0xD58,0xD5E}, {0xD66,0xD78}, {0xDE6,0xDEF},
    {0xE50,0xE59}, {0xED0,0xED9}, {0xF20,0xF33}, {0x1040,0x1049}, {0x1090,0x1099}, {0x1369,0x137C},
    {0x16EE,0x16F0}, {0x17E0,0x17E9}, {0x17F0,0x17F9}, {0x1810,0x1819}, {0x1946,0x194F}, {0x19D0,0x19DA},
    {0x1A80,0x1A89}, {0x1A90,0x1A99}, {0x1B50,0x1B59}, {0x1BB0,0x1BB9}, {0x1C40,0x1C49}, {0x1C50,0x1C59},
    {0x2070,0x2070}, {0x2074,0x2079}, {0x2080,0x2089}, {0x2150,0x2182}, {0x2185,0x2189}, {0x2460,0x249B},
    {0x24EA,0x24FF}, {0x2776,0x2793}, {0x2CFD,0x2CFD}, {0x3007,0x3007}, {0x3021,0x3029}, {0x3038,0x303A},
    {0x3192,0x3195}, {0x3220,0x3229}, {0x3248,0x324F}, {0x3251,0x325F}, {0x3280,0x3289}, {0x32B1,0x32BF},
    {0xA620,0xA629}, {0xA6E6,0xA6EF}, {0xA830,0xA835}, {0xA8D0,0xA8D9}, {0xA900,0xA909}, {0xA9D0,0xA9D9},
    {0xA9F0,0xA9F9}, {0xAA50,0xAA59}, {0xABF0,0xABF9}, {0xFF10,0xFF19}, {0x10107,0x10133}, {0x10140,0x10178},
    {0x1018A,0x1018B}, {0x102E1,0x102FB}, {0x10320,0x10323}, {0x10341,0x10341}, {0x1034A,0x1034A},
    {0x103D1,0x103D5}, {0x104A0,0x104A9}, {0x10858,0x1085F}, {0x10879,0x1087F}, {0x108A7,0x108AF},
    {0x108FB,0x108FF}, {0x10916,0x1091B}, {0x109BC,0x109BD}, {0x109C0,0x109CF}, {0x109D2,0x109FF},
    {0x10A40,0x10A48}, {0x10A7D,0x10A7E}, {0x10A9D,0x10A9F}, {0x10AEB,0x10AEF}, {0x10B58,0x10B5F},
    {0x10B78,0x10B7F}, {0x10BA9,0x10BAF}, {0x10CFA,0x10CFF}, {0x10D30,0x10D39}, {0x10E60,0x10E7E},
    {0x10F1D,0x10F26}, {0x10F51,0x10F54}, {0x10FC5,0x10FCB}, {0x11052,0x1106F}, {0x110F0,0x110F9},
    {0x11136,0x1113F}, {0x111D0,0x111D9}, {0x111E1,0x111F4}, {0x112F0,0x112F9}, {0x11450,0x11459},
    {0x114D0,0x114D9}, {0x11650,0x11659}, {0x116C0,0x116C9}, {0x11730,0x1173B}, {0x118E0,0x118F2},
    {0x11950,0x11959}, {0x11C50,0x11C6C}, {0x11D50,0x11D59}, {0x11DA0,0x11DA9}, {0x11F50,0x11F59},
    {0x11FC0,0x11FD4}, {0x12400,0x1246E}, {0x16A60,0x16A69}, {0x16AC0,0x16AC9}, {0x16B50,0x16B59},
    {0x16B5B,0x16B61}, {0x16E80,0x16E96}, {0x1D2C0,0x1D2D3}, {0x1D2E0,0x1D2F3}, {0x1D360,0x1D378},
    {0x1D7CE,0x1D7FF}, {0x1E140,0x1E149}, {0x1E2F0,0x1E2F9}, {0x1E4F0,0x1E4F9}, {0x1E8C7,0x1E8CF},
    {0x1E950,0x1E959}, {0x1EC71,0x1ECAB}, {0x1ECAD,0x1ECAF}, {0x1ECB1,0x1ECB4}, {0x1ED01,0x1ED2D},
    {0x1ED2F,0x1ED3D}, {0x1F100,0x1F10C}, {0x1FBF0,0x1FBF9},
};
static const uint32_t run_unicode_marks[][2] = { // Unicode 15.0.0, category M*, 310 ranges
    {0x300,0x36F}, {0x483,0x489}, {0x591,0x5BD}, {0x5BF,0x5BF}, {0x5C1,0x5C2}, {0x5C4,0x5C5}, {0x5C7,0x5C7},
    {0x610,0x61A}, {0x64B,0x65F}, {0x670,0x670}, {0x6D6,0x6DC}, {0x6DF,0x6E4}, {0x6E7,0x6E8}, {0x6EA,0x6ED},
    {0x711,0x711}, {0x730,0x74A}, {0x7A6,0x7B0}, {0x7EB,0x7F3}, {0x7FD,0x7FD}, {0x816,0x819}, {0x81B,0x823},
    {0x825,0x827}, {0x829,0x82D}, {0x859,0x85B}, {0x898,0x89F}, {0x8CA,0x8E1}, {0x8E3,0x903}, {0x93A,0x93C},
    {0x93E,0x94F}, {0x951,0x957}, {0x962,0x963}, {0x981,0x983}, {0x9BC,0x9BC}, {0x9BE,0x9C4}, {0x9C7,0x9C8},
    {0x9CB,0x9CD}, {0x9D7,0x9D7}, {0x9E2,0x9E3}, {0x9FE,0x9FE}, {0xA01,0xA03}, {0xA3C,0xA3C}, {0xA3E,0xA42},
    {0xA47,0xA48}, {0xA4B,0xA4D}, {0xA51,0xA51}, {0xA70,0xA71}, {0xA75,0xA75}, {0xA81,0xA83}, {0xABC,0xABC},
    {0xABE,0xAC5}, {0xAC7,0xAC9}, {0xACB,0xACD}, {0xAE2,0xAE3}, {0xAFA,0xAFF}, {0xB01,0xB03}, {0xB3C,0xB3C},
    {0xB3E,0xB44}, {0xB47,0xB48}, {0xB4B,0xB4D}, {0xB55,0xB57}, {0xB62,0xB63}, {0xB82,0xB82}, {0xBBE,0xBC2},
    {0xBC6,0xBC8}, {0xBCA,0xBCD}, {0xBD7,0xBD7}, {0xC00,0xC04}, {0xC3C,0xC3C}, {0xC3E,0xC44}, {0xC46,0xC48},
    {0xC4A,0xC4D}, {0xC55,0xC56}, {0xC62,0xC63}, {0xC81,0xC83}, {0xCBC,0xCBC}, {0xCBE,0xCC4}, {0xCC6,0xCC8},
    {0xCCA,0xCCD}, {0xCD5,0xCD6}, {0xCE2,0xCE3}, {0xCF3,0xCF3}, {0xD00,0xD03}, {0xD3B,0xD3C}, {0xD3E,0xD44},
    {0xD46,0xD48}, {0xD4A,0xD4D}, {0xD57,0xD57}, {0xD62,0xD63}, {0xD81,0xD83}, {0xDCA,0xDCA}, {0xDCF,0xDD4},
    {0xDD6,0xDD6}, {0xDD8,0xDDF}, {0xDF2,0xDF3}, {0xE31,0xE31}, {0xE34,0xE3A}, {0xE47,0xE4E}, {0xEB1,0xEB1},
    {0xEB4,0xEBC}, {0xEC8,0xECE}, {0xF18,0xF19}, {0xF35,0xF35}, {0xF37,0xF37}, {0xF39,0xF39}, {0xF3E,0xF3F},
    {0xF71,0xF84}, {0xF86,0xF87}, {0xF8D,0xF97}, {0xF99,0xFBC}, {0xFC6,0xFC6}, {0x102B,0x103E},
    {0x1056,0x1059}, {0x105E,0x1060}, {0x1062,0x1064}, {0x1067,0x106D}, {0x1071,0x1074}, {0x1082,0x108D},
    {0x108F,0x108F}, {0x109A,0x109D}, {0x135D,0x135F}, {0x1712,0x1715}, {0x1732,0x1734}, {0x1752,0x1753},
    {0x1772,0x1773}, {0x17B4,0x17D3}, {0x17DD,0x17DD}, {0x180B,0x180D}, {0x180F,0x180F}, {0x1885,0x1886},
    {0x18A9,0x18A9}, {0x1920,0x192B}, {0x1930,0x193B}, {0x1A17,0x1A1B}, {0x1A55,0x1A5E}, {0x1A60,0x1A7C},
    {0x1A7F,0x1A7F}, {0x1AB0,0x1ACE}, {0x1B00,0x1B04}, {0x1B34,0x1B44}, {0x1B6B,0x1B73}, {0x1B80,0x1B82},
    {0x1BA1,0x1BAD}, {0x1BE6,0x1BF3}, {0x1C24,0x1C37}, {0x1CD0,0x1CD2}, {0x1CD4,0x1CE8}, {0x1CED,0x1CED},
    {0x1CF4,0x1CF4}, {0x1CF7,0x1CF9}, {0x1DC0,0x1DFF}, {0x20D0,0x20F0}, {0x2CEF,0x2CF1}, {0x2D7F,0x2D7F},
    {0x2DE0,0x2DFF}, {0x302A,0x302F}, {0x3099,0x309A}, {0xA66F,0xA672}, {0xA674,0xA67D}, {0xA69E,0xA69F},
    {0xA6F0,0xA6F1}, {0xA802,0xA802}, {0xA806,0xA806}, {0xA80B,0xA80B}, {0xA823,0xA827}, {0xA82C,0xA82C},
    {0xA880,0xA881}, {0xA8B4,0xA8C5}, {0xA8E0,0xA8F1}, {0xA8FF,0xA8FF}, {0xA926,0xA92D}, {0xA947,0xA953},
    {0xA980,0xA983}, {0xA9B3,0xA9C0}, {0xA9E5,0xA9E5}, {0xAA29,0xAA36}, {0xAA43,0xAA43}, {0xAA4C,0xAA4D},
    {0xAA7B,0xAA7D}, {0xAAB0,0xAAB0}, {0xAAB2,0xAAB4}, {0xAAB7,0xAAB8}, {0xAABE,0xAABF}, {0xAAC1,0xAAC1},
    {0xAAEB,0xAAEF}, {0xAAF5,0xAAF6}, {0xABE3,0xABEA}, {0xABEC,0xABED}, {0xFB1E,0xFB1E}, {0xFE00,0xFE0F},
    {0xFE20,0xFE2F}, {0x101FD,0x101FD}, {0x102E0,0x102E0}, {0x10376,0x1037A}, {0x10A01,0x10A03},
    {0x10A05,0x10A06}, {0x10A0C,0x10A0F}, {0x10A38,0x10A3A}, {0x10A3F,0x10A3F}, {0x10AE5,0x10AE6},
    {0x10D24,0x10D27}, {0x10EAB,0x10EAC}, {0x10EFD,0x10EFF}, {0x10F46,0x10F50}, {0x10F82,0x10F85},
    {0x11000,0x11002}, {0x11038,0x11046}, {0x11070,0x11070}, {0x11073,0x11074}, {0x1107F,0x11082},
    {0x110B0,0x110BA}, {0x110C2,0x110C2}, {0x11100,0x11102}, {0x11127,0x11134}, {0x11145,0x11146},
    {0x11173,0x11173}, {0x11180,0x11182}, {0x111B3,0x111C0}, {0x111C9,0x111CC}, {0x111CE,0x111CF},
    {0x1122C,0x11237}, {0x1123E,0x1123E}, {0x11241,0x11241}, {0x112DF,0x112EA}, {0x11300,0x11303},
    {0x1133B,0x1133C}, {0x1133E,0x11344}, {0x11347,0x11348}, {0x1134B,0x1134D}, {0x11357,0x11357},
    {0x11362,0x11363}, {0x11366,0x1136C}, {0x11370,0x11374}, {0x11435,0x11446}, {0x1145E,0x1145E},
    {0x114B0,0x114C3}, {0x115AF,0x115B5}, {0x115B8,0x115C0}, {0x115DC,0x115DD}, {0x11630,0x11640},
    {0x116AB,0x116B7}, {0x1171D,0x1172B}, {0x1182C,0x1183A}, {0x11930,0x11935}, {0x11937,0x11938},
    {0x1193B,0x1193E}, {0x11940,0x11940}, {0x11942,0x11943}, {0x119D1,0x119D7}, {0x119DA,0x119E0},
    {0x119E4,0x119E4}, {0x11A01,0x11A0A}, {0x11A33,0x11A39}, {0x11A3B,0x11A3E}, {0x11A47,0x11A47},
    {0x11A51,0x11A5B}, {0x11A8A,0x11A99}, {0x11C2F,0x11C36}, {0x11C38,0x11C3F}, {0x11C92,0x11CA7},
    {0x11CA9,0x11CB6}, {0x11D31,0x11D36}, {0x11D3A,0x11D3A}, {0x11D3C,0x11D3D}, {0x11D3F,0x11D45},
    {0x11D47,0x11D47}, {0x11D8A,0x11D8E}, {0x11D90,0x11D91}, {0x11D93,0x11D97}, {0x11EF3,0x11EF6},
    {0x11F00,0x11F01}, {0x11F03,0x11F03}, {0x11F34,0x11F3A}, {0x11F3E,0x11F42}, {0x13440,0x13440},
    {0x13447,0x13455}, {0x16AF0,0x16AF4}, {0x16B30,0x16B36}, {0x16F4F,0x16F4F}, {0x16F51,0x16F87},
    {0x16F8F,0x16F92}, {0x16FE4,0x16FE4}, {0x16FF0,0x16FF1}, {0x1BC9D,0x1BC9E}, {0x1CF00,0x1CF2D},
    {0x1CF30,0x1CF46}, {0x1D165,0x1D169}, {0x1D16D,0x1D172}, {0x1D17B,0x1D182}, {0x1D185,0x1D18B},
    {0x1D1AA,0x1D1AD}, {0x1D242,0x1D244}, {0x1DA00,0x1DA36}, {0x1DA3B,0x1DA6C}, {0x1DA75,0x1DA75},
    {0x1DA84,0x1DA84}, {0x1DA9B,0x1DA9F}, {0x1DAA1,0x1DAAF}, {0x1E000,0x1E006}, {0x1E008,0x1E018},
    {0x1E01B,0x1E021}, {0x1E023,0x1E024}, {0x1E026,0x1E02A}, {0x1E08F,0x1E08F}, {0x1E130,0x1E136},
    {0x1E2AE,0x1E2AE}, {0x1E2EC,0x1E2EF}, {0x1E4EC,0x1E4EF}, {0x1E8D0,0x1E8D6}, {0x1E944,0x1E94A},
    {0xE0100,0xE01EF},
};
static const uint32_t run_unicode_cased[][2] = { // Unicode 15.0.0, categories Lu Ll Lt, 143 ranges
    {0x41,0x5A}, {0x61,0x7A}, {0xB5,0xB5}, {0xC0,0xD6}, {0xD8,0xF6}, {0xF8,0x1BA}, {0x1BC,0x1BF},
    {0x1C4,0x293}, {0x295,0x2AF}, {0x370,0x373}, {0x376,0x377}, {0x37B,0x37D}, {0x37F,0x37F}, {0x386,0x386},
    {0x388,0x38A}, {0x38C,0x38C}, {0x38E,0x3A1}, {0x3A3,0x3F5}, {0x3F7,0x481}, {0x48A,0x52F}, {0x531,0x556},
    {0x560,0x588}, {0x10A0,0x10C5}, {0x10C7,0x10C7}, {0x10CD,0x10CD}, {0x10D0,0x10FA}, {0x10FD,0x10FF},
    {0x13A0,0x13F5}, {0x13F8,0x13FD}, {0x1C80,0x1C88}, {0x1C90,0x1CBA}, {0x1CBD,0x1CBF}, {0x1D00,0x1D2B},
    {0x1D6B,0x1D77}, {0x1D79,0x1D9A}, {0x1E00,0x1F15}, {0x1F18,0x1F1D}, {0x1F20,0x1F45}, {0x1F48,0x1F4D},
    {0x1F50,0x1F57}, {0x1F59,0x1F59}, {0x1F5B,0x1F5B}, {0x1F5D,0x1F5D}, {0x1F5F,0x1F7D}, {0x1F80,0x1FB4},
    {0x1FB6,0x1FBC}, {0x1FBE,0x1FBE}, {0x1FC2,0x1FC4}, {0x1FC6,0x1FCC}, {0x1FD0,0x1FD3}, {0x1FD6,0x1FDB},
    {0x1FE0,0x1FEC}, {0x1FF2,0x1FF4}, {0x1FF6,0x1FFC}, {0x2102,0x2102}, {0x2107,0x2107}, {0x210A,0x2113},
    {0x2115,0x2115}, {0x2119,0x211D}, {0x2124,0x2124}, {0x2126,0x2126}, {0x2128,0x2128}, {0x212A,0x212D},
    {0x212F,0x2134}, {0x2139,0x2139}, {0x213C,0x213F}, {0x2145,0x2149}, {0x214E,0x214E}, {0x2183,0x2184},
    {0x2C00,0x2C7B}, {0x2C7E,0x2CE4}, {0x2CEB,0x2CEE}, {0x2CF2,0x2CF3}, {0x2D00,0x2D25}, {0x2D27,0x2D27},
    {0x2D2D,0x2D2D}, {0xA640,0xA66D}, {0xA680,0xA69B}, {0xA722,0xA76F}, {0xA771,0xA787}, {0xA78B,0xA78E},
    {0xA790,0xA7CA}, {0xA7D0,0xA7D1}, {0xA7D3,0xA7D3}, {0xA7D5,0xA7D9}, {0xA7F5,0xA7F6}, {0xA7FA,0xA7FA},
    {0xAB30,0xAB5A}, {0xAB60,0xAB68}, {0xAB70,0xABBF}, {0xFB00,0xFB06}, {0xFB13,0xFB17}, {0xFF21,0xFF3A},
    {0xFF41,0xFF5A}, {0x10400,0x1044F}, {0x104B0,0x104D3}, {0x104D8,0x104FB}, {0x10570,0x1057A},
    {0x1057C,0x1058A}, {0x1058C,0x10592}, {0x10594,0x10595}, {0x10597,0x105A1}, {0x105A3,0x105B1},
    {0x105B3,0x105B9}, {0x105BB,0x105BC}, {0x10C80,0x10CB2}, {0x10CC0,0x10CF2}, {0x118A0,0x118DF},
    {0x16E40,0x16E7F}, {0x1D400,0x1D454}, {0x1D456,0x1D49C}, {0x1D49E,0x1D49F}, {0x1D4A2,0x1D4A2},
    {0x1D4A5,0x1D4A6}, {0x1D4A9,0x1D4AC}, {0x1D4AE,0x1D4B9}, {0x1D4BB,0x1D4BB}, {0x1D4BD,0x1D4C3},
    {0x1D4C5,0x1D505}, {0x1D507,0x1D50A}, {0x1D50D,0x1D514}, {0x1D516,0x1D51C}, {0x1D51E,0x1D539},
    {0x1D53B,0x1D53E}, {0x1D540,0x1D544}, {0x1D546,0x1D546}, {0x1D54A,0x1D550}, {0x1D552,0x1D6A5},
    {0x1D6A8,0x1D6C0}, {0x1D6C2,0x1D6DA}, {0x1D6DC,0x1D6FA}, {0x1D6FC,0x1D714}, {0x1D716,0x1D734},
    {0x1D736,0x1D74E}, {0x1D750,0x1D76E}, {0x1D770,0x1D788}, {0x1D78A,0x1D7A8}, {0x1D7AA,0x1D7C2},
    {0x1D7C4,0x1D7CB}, {0x1DF00,0x1DF09}, {0x1DF0B,0x1DF1E}, {0x1DF25,0x1DF2A}, {0x1E900,0x1E943},
};
static const uint32_t run_unicode_upper[][2] = { // Unicode 15.0.0, categories Lu Lt, 649 ranges
    {0x41,0x5A}, {0xC0,0xD6}, {0xD8,0xDE}, {0x100,0x100}, {0x102,0x102}, {0x104,0x104}, {0x106,0x106},
    {0x108,0x108}, {0x10A,0x10A}, {0x10C,0x10C}, {0x10E,0x10E}, {0x110,0x110}, {0x112,0x112}, {0x114,0x114},
    {0x116,0x116}, {0x118,0x118}, {0x11A,0x11A}, {0x11C,0x11C}, {0x11E,0x11E}, {0x120,0x120}, {0x122,0x122},
    {0x124,0x124}, {0x126,0x126}, {0x128,0x128}, {0x12A,0x12A}, {0x12C,0x12C}, {0x12E,0x12E}, {0x130,0x130},
    {0x132,0x132}, {0x134,0x134}, {0x136,0x136}, {0x139,0x139}, {0x13B,0x13B}, {0x13D,0x13D}, {0x13F,0x13F},
    {0x141,0x141}, {0x143,0x143}, {0x145,0x145}, {0x147,0x147}, {0x14A,0x14A}, {0x14C,0x14C}, {0x14E,0x14E},
    {0x150,0x150}, {0x152,0x152}, {0x154,0x154}, {0x156,0x156}, {0x158,0x158}, {0x15A,0x15A}, {0x15C,0x15C},
    {0x15E,0x15E}, {0x160,0x160}, {0x162,0x162}, {0x164,0x164}, {0x166,0x166}, {0x168,0x168}, {0x16A,0x16A},
    {0x16C,0x16C}, {0x16E,0x16E}, {0x170,0x170}, {0x172,0x172}, {0x174,0x174}, {0x176,0x176}, {0x178,0x179},
    {0x17B,0x17B}, {0x17D,0x17D}, {0x181,0x182}, {0x184,0x184}, {0x186,0x187}, {0x189,0x18B}, {0x18E,0x191},
    {0x193,0x194}, {0x196,0x198}, {0x19C,0x19D}, {0x19F,0x1A0}, {0x1A2,0x1A2}, {0x1A4,0x1A4}, {0x1A6,0x1A7},
    {0x1A9,0x1A9}, {0x1AC,0x1AC}, {0x1AE,0x1AF}, {0x1B1,0x1B3}, {0x1B5,0x1B5}, {0x1B7,0x1B8}, {0x1BC,0x1BC},
    {0x1C4,0x1C5}, {0x1C7,0x1C8}, {0x1CA,0x1CB}, {0x1CD,0x1CD}, {0x1CF,0x1CF}, {0x1D1,0x1D1}, {0x1D3,0x1D3},
    {0x1D5,0x1D5}, {0x1D7,0x1D7}, {0x1D9,0x1D9}, {0x1DB,0x1DB}, {0x1DE,0x1DE}, {0x1E0,0x1E0}, {0x1E2,0x1E2},
    {0x1E4,0x1E4}, {0x1E6,0x1E6}, {0x1E8,0x1E8}, {0x1EA,0x1EA}, {0x1EC,0x1EC}, {0x1EE,0x1EE}, {0x1F1,0x1F2},
    {0x1F4,0x1F4}, {0x1F6,0x1F8}, {0x1FA,0x1FA}, {0x1FC,0x1FC}, {0x1FE,0x1FE}, {0x200,0x200}, {0x202,0x202},
    {0x204,0x204}, {0x206,0x206}, {0x208,0x208}, {0x20A,0x20A}, {0x20C,0x20C}, {0x20E,0x20E}, {0x210,0x210},
    {0x212,0x212}, {0x214,0x214}, {0x216,0x216}, {0x218,0x218}, {0x21A,0x21A}, {0x21C,0x21C}, {0x21E,0x21E},
    {0x220,0x220}, {0x222,0x222}, {0x224,0x224}, {0x226,0x226}, {0x228,0x228}, {0x22A,0x22A}, {0x22C,0x22C},
    {0x22E,0x22E}, {0x230,0x230}, {0x232,0x232}, {0x23A,0x23B}, {0x23D,0x23E}, {0x241,0x241}, {0x243,0x246},
    {0x248,0x248}, {0x24A,0x24A}, {0x24C,0x24C}, {0x24E,0x24E}, {0x370,0x370}, {0x372,0x372}, {0x376,0x376},
    {0x37F,0x37F}, {0x386,0x386}, {0x388,0x38A}, {0x38C,0x38C}, {0x38E,0x38F}, {0x391,0x3A1}, {0x3A3,0x3AB},
    {0x3CF,0x3CF}, {0x3D2,0x3D4}, {0x3D8,0x3D8}, {0x3DA,0x3DA}, {0x3DC,0x3DC}, {0x3DE,0x3DE}, {0x3E0,0x3E0},
    {0x3E2,0x3E2}, {0x3E4,0x3E4}, {0x3E6,0x3E6}, {0x3E8,0x3E8}, {0x3EA,0x3EA}, {0x3EC,0x3EC}, {0x3EE,0x3EE},
    {0x3F4,0x3F4}, {0x3F7,0x3F7}, {0x3F9,0x3FA}, {0x3FD,0x42F}, {0x460,0x460}, {0x462,0x462}, {0x464,0x464},
    {0x466,0x466}, {0x468,0x468}, {0x46A,0x46A}, {0x46C,0x46C}, {0x46E,0x46E}, {0x470,0x470}, {0x472,0x472},
    {0x474,0x474}, {0x476,0x476}, {0x478,0x478}, {0x47A,0x47A}, {0x47C,0x47C}, {0x47E,0x47E}, {0x480,0x480},
    {0x48A,0x48A}, {0x48C,0x48C}, {0x48E,0x48E}, {0x490,0x490}, {0x492,0x492}, {0x494,0x494}, {0x496,0x496},
    {0x498,0x498}, {0x49A,0x49A}, {0x49C,0x49C}, {0x49E,0x49E}, {0x4A0,0x4A0}, {0x4A2,0x4A2}, {0x4A4,0x4A4},
    {0x4A6,0x4A6}, {0x4A8,0x4A8}, {0x4AA,0x4AA}, {0x4AC,0x4AC}, {0x4AE,0x4AE}, {0x4B0,0x4B0}, {0x4B2,0x4B2},
    {0x4B4,0x4B4}, {0x4B6,0x4B6}, {0x4B8,0x4B8}, {0x4BA,0x4BA}, {0x4BC,0x4BC}, {0x4BE,0x4BE}, {0x4C0,0x4C1},
    {0x4C3,0x4C3}, {0x4C5,0x4C5}, {0x4C7,0x4C7}, {0x4C9,0x4C9}, {0x4CB,0x4CB}, {0x4CD,0x4CD}, {0x4D0,0x4D0},
    {0x4D2,0x4D2}, {0x4D4,0x4D4}, {0x4D6,0x4D6}, {0x4D8,0x4D8}, {0x4DA,0x4DA}, {0x4DC,0x4DC}, {0x4DE,0x4DE},
    {0x4E0,0x4E0}, {0x4E2,0x4E2}, {0x4E4,0x4E4}, {0x4E6,0x4E6}, {0x4E8,0x4E8}, {0x4EA,0x4EA}, {0x4EC,0x4EC},
    {0x4EE,0x4EE}, {0x4F0,0x4F0}, {0x4F2,0x4F2}, {0x4F4,0x4F4}, {0x4F6,0x4F6}, {0x4F8,0x4F8}, {0x4FA,0x4FA},
    {0x4FC,0x4FC}, {0x4FE,0x4FE}, {0x500,0x500}, {0x502,0x502}, {0x504,0x504}, {0x506,0x506}, {0x508,0x508},
    {0x50A,0x50A}, {0x50C,0x50C}, {0x50E,0x50E}, {0x510,0x510}, {0x512,0x512}, {0x514,0x514}, {0x516,0x516},
    {0x518,0x518}, {0x51A,0x51A}, {0x51C,0x51C}, {0x51E,0x51E}, {0x520,0x520}, {0x522,0x522}, {0x524,0x524},
    {0x526,0x526}, {0x528,0x528}, {0x52A,0x52A}, {0x52C,0x52C}, {0x52E,0x52E}, {0x531,0x556}, {0x10A0,0x10C5},
    {0x10C7,0x10C7}, {0x10CD,0x10CD}, {0x13A0,0x13F5}, {0x1C90,0x1CBA}, {0x1CBD,0x1CBF}, {0x1E00,0x1E00},
    {0x1E02,0x1E02}, {0x1E04,0x1E04}, {0x1E06,0x1E06}, {0x1E08,0x1E08}, {0x1E0A,0x1E0A}, {0x1E0C,0x1E0C},
    {0x1E0E,0x1E0E}, {0x1E10,0x1E10}, {0x1E12,0x1E12}, {0x1E14,0x1E14}, {0x1E16,0x1E16}, {0x1E18,0x1E18},
    {0x1E1A,0x1E1A}, {0x1E1C,0x1E1C}, {0x1E1E,0x1E1E}, {0x1E20,0x1E20}, {0x1E22,0x1E22}, {0x1E24,0x1E24},
    {0x1E26,0x1E26}, {0x1E28,0x1E28}, {0x1E2A,0x1E2A}, {0x1E2C,0x1E2C}, {0x1E2E,0x1E2E}, {0x1E30,0x1E30},
    {0x1E32,0x1E32}, {0x1E34,0x1E34}, {0x1E36,0x1E36}, {0x1E38,0x1E38}, {0x1E3A,0x1E3A}, {0x1E3C,0x1E3C},
    {0x1E3E,0x1E3E}, {0x1E40,0x1E40}, {0x1E42,0x1E42}, {0x1E44,0x1E44}, {0x1E46,0x1E46}, {0x1E48,0x1E48},
    {0x1E4A,0x1E4A}, {0x1E4C,0x1E4C}, {0x1E4E,0x1E4E}, {0x1E50,0x1E50}, {0x1E52,0x1E52}, {0x1E54,0x1E54},
    {0x1E56,0x1E56}, {0x1E58,0x1E58}, {0x1E5A,0x1E5A}, {0x1E5C,0x1E5C}, {0x1E5E,0x1E5E}, {0x1E60,0x1E60},
    {0x1E62,0x1E62}, {0x1E64,0x1E64}, {0x1E66,0x1E66}, {0x1E68,0x1E68}, {0x1E6A,0x1E6A}, {0x1E6C,0x1E6C},
    {0x1E6E,0x1E6E}, {0x1E70,0x1E70}, {0x1E72,0x1E72}, {0x1E74,0x1E74}, {0x1E76,0x1E76}, {0x1E78,0x1E78},
    {0x1E7A,0x1E7A}, {0x1E7C,0x1E7C}, {0x1E7E,0x1E7E}, {0x1E80,0x1E80}, {0x1E82,0x1E82}, {0x1E84,0x1E84},
    {0x1E86,0x1E86}, {0x1E88,0x1E88}, {0x1E8A,0x1E8A}, {0x1E8C,0x1E8C}, {0x1E8E,0x1E8E}, {0x1E90,0x1E90},
    {0x1E92,0x1E92}, {0x1E94,0x1E94}, {0x1E9E,0x1E9E}, {0x1EA0,0x1EA0}, {0x1EA2,0x1EA2}, {0x1EA4,0x1EA4},
    {0x1EA6,0x1EA6}, {0x1EA8,0x1EA8}, {0x1EAA,0x1EAA}, {0x1EAC,0x1EAC}, {0x1EAE,0x1EAE}, {0x1EB0,0x1EB0},
    {0x1EB2,0x1EB2}, {0x1EB4,0x1EB4}, {0x1EB6,0x1EB6}, {0x1EB8,0x1EB8}, {0x1EBA,0x1EBA}, {0x1EBC,0x1EBC},
    {0x1EBE,0x1EBE}, {0x1EC0,0x1EC0}, {0x1EC2,0x1EC2}, {0x1EC4,0x1EC4}, {0x1EC6,0x1EC6}, {0x1EC8,0x1EC8},
    {0x1ECA,0x1ECA}, {0x1ECC,0x1ECC}, {0x1ECE,0x1ECE}, {0x1ED0,0x1ED0}, {0x1ED2,0x1ED2}, {0x1ED4,0x1ED4},
    {0x1ED6,0x1ED6}, {0x1ED8,0x1ED8}, {0x1EDA,0x1EDA}, {0x1EDC,0x1EDC}, {0x1EDE,0x1EDE}, {0x1EE0,0x1EE0},
    {0x1EE2,0x1EE2}, {0x1EE4,0x1EE4}, {0x1EE6,0x1EE6}, {0x1EE8,0x1EE8}, {0x1EEA,0x1EEA}, {0x1EEC,0x1EEC},
    {0x1EEE,0x1EEE}, {0x1EF0,0x1EF0}, {0x1EF2,0x1EF2}, {0x1EF4,0x1EF4}, {0x1EF6,0x1EF6}, {0x1EF8,0x1EF8},
    {0x1EFA,0x1EFA}, {0x1EFC,0x1EFC}, {0x1EFE,0x1EFE}, {0x1F08,0x1F0F}, {0x1F18,0x1F1D}, {0x1F28,0x1F2F},
    {0x1F38,0x1F3F}, {0x1F48,0x1F4D}, {0x1F59,0x1F59}, {0x1F5B,0x1F5B}, {0x1F5D,0x1F5D}, {0x1F5F,0x1F5F},
    {0x1F68,0x1F6F}, {0x1F88,0x1F8F}, {0x1F98,0x1F9F}, {0x1FA8,0x1FAF}, {0x1FB8,0x1FBC}, {0x1FC8,0x1FCC},
    {0x1FD8,0x1FDB}, {0x1FE8,0x1FEC}, {0x1FF8,0x1FFC}, {0x2102,0x2102}, {0x2107,0x2107}, {0x210B,0x210D},
    {0x2110,0x2112}, {0x2115,0x2115}, {0x2119,0x211D}, {0x2124,0x2124}, {0x2126,0x2126}, {0x2128,0x2128},
    {0x212A,0x212D}, {0x2130,0x2133}, {0x213E,0x213F}, {0x2145,0x2145}, {0x2183,0x2183}, {0x2C00,0x2C2F},
    {0x2C60,0x2C60}, {0x2C62,0x2C64}, {0x2C67,0x2C67}, {0x2C69,0x2C69}, {0x2C6B,0x2C6B}, {0x2C6D,0x2C70},
    {0x2C72,0x2C72}, {0x2C75,0x2C75}, {0x2C7E,0x2C80}, {0x2C82,0x2C82}, {0x2C84,0x2C84}, {0x2C86,0x2C86},
    {0x2C88,0x2C88}, {0x2C8A,0x2C8A}, {0x2C8C,0x2C8C}, {0x2C8E,0x2C8E}, {0x2C90,0x2C90}, {0x2C92,0x2C92},
    {0x2C94,0x2C94}, {0x2C96,0x2C96}, {0x2C98,0x2C98}, {0x2C9A,0x2C9A}, {0x2C9C,0x2C9C}, {0x2C9E,0x2C9E},
    {0x2CA0,0x2CA0}, {0x2CA2,0x2CA2}, {0x2CA4,0x2CA4}, {0x2CA6,0x2CA6}, {0x2CA8,0x2CA8}, {0x2CAA,0x2CAA},
    {0x2CAC,0x2CAC}, {0x2CAE,0x2CAE}, {0x2CB0,0x2CB0}, {0x2CB2,0x2CB2}, {0x2CB4,0x2CB4}, {0x2CB6,0x2CB6},
    {0x2CB8,0x2CB8}, {0x2CBA,0x2CBA}, {0x2CBC,0x2CBC}, {0x2CBE,0x2CBE}, {0x2CC0,0x2CC0}, {0x2CC2,0x2CC2},
    {0x2CC4,0x2CC4}, {0x2CC6,0x2CC6}, {0x2CC8,0x2CC8}, {0x2CCA,0x2CCA}, {0x2CCC,0x2CCC}, {0x2CCE,0x2CCE},
    {0x2CD0,0x2CD0}, {0x2CD2,0x2CD2}, {0x2CD4,0x2CD4}, {0x2CD6,0x2CD6}, {0x2CD8,0x2CD8}, {0x2CDA,0x2CDA},
    {0x2CDC,0x2CDC}, {0x2CDE,0x2CDE}, {0x2CE0,0x2CE0}, {0x2CE2,0x2CE2}, {0x2CEB,0x2CEB}, {0x2CED,0x2CED},
    {0x2CF2,0x2CF2}, {0xA640,0xA640}, {0xA642,0xA642}, {0xA644,0xA644}, {0xA646,0xA646}, {0xA648,0xA648},
    {0xA64A,0xA64A}, {0xA64C,0xA64C}, {0xA64E,0xA64E}, {0xA650,0xA650}, {0xA652,0xA652}, {0xA654,0xA654},
    {0xA656,0xA656}, {0xA658,0xA658}, {0xA65A,0xA65A}, {0xA65C,0xA65C}, {0xA65E,0xA65E}, {0xA660,0xA660},
    {0xA662,0xA662}, {0xA664,0xA664}, {0xA666,0xA666}, {0xA668,0xA668}, {0xA66A,0xA66A}, {0xA66C,0xA66C},
    {0xA680,0xA680}, {0xA682,0xA682}, {0xA684,0xA684}, {0xA686,0xA686}, {0xA688,0xA688}, {0xA68A,0xA68A},
    {0xA68C,0xA68C}, {0xA68E,0xA68E}, {0xA690,0xA690}, {0xA692,0xA692}, {0xA694,0xA694}, {0xA696,0xA696},
    {0xA698,0xA698}, {0xA69A,0xA69A}, {0xA722,0xA722}, {0xA724,0xA724}, {0xA726,0xA726}, {0xA728,0xA728},
    {0xA72A,0xA72A}, {0xA72C,0xA72C}, {0xA72E,0xA72E}, {0xA732,0xA732}, {0xA734,0xA734}, {0xA736,0xA736},
    {0xA738,0xA738}, {0xA73A,0xA73A}, {0xA73C,0xA73C}, {0xA73E,0xA73E}, {0xA740,0xA740}, {0xA742,0xA742},
    {0xA744,0xA744}, {0xA746,0xA746}, {0xA748,0xA748}, {0xA74A,0xA74A}, {0xA74C,0xA74C}, {0xA74E,0xA74E},
    {0xA750,0xA750}, {0xA752,0xA752}, {0xA754,0xA754}, {0xA756,0xA756}, {0xA758,0xA758}, {0xA75A,0xA75A},
    {0xA75C,0xA75C}, {0xA75E,0xA75E}, {0xA760,0xA760}, {0xA762,0xA762}, {0xA764,0xA764}, {0xA766,0xA766},
    {0xA768,0xA768}, {0xA76A,0xA76A}, {0xA76C,0xA76C}, {0xA76E,0xA76E}, {0xA779,0xA779}, {0xA77B,0xA77B},
    {0xA77D,0xA77E}, {0xA780,0xA780}, {0xA782,0xA782}, {0xA784,0xA784}, {0xA786,0xA786}, {0xA78B,0xA78B},
    {0xA78D,0xA78D}, {0xA790,0xA790}, {0xA792,0xA792}, {0xA796,0xA796}, {0xA798,0xA798}, {0xA79A,0xA79A},
    {0xA79C,0xA79C}, {0xA79E,0xA79E}, {0xA7A0,0xA7A0}, {0xA7A2,0xA7A2}, {0xA7A4,0xA7A4}, {0xA7A6,0xA7A6},
    {0xA7A8,0xA7A8}, {0xA7AA,0xA7AE}, {0xA7B0,0xA7B4}, {0xA7B6,0xA7B6}, {0xA7B8,0xA7B8}, {0xA7BA,0xA7BA},
    {0xA7BC,0xA7BC}, {0xA7BE,0xA7BE}, {0xA7C0,0xA7C0}, {0xA7C2,0xA7C2}, {0xA7C4,0xA7C7}, {0xA7C9,0xA7C9},
    {0xA7D0,0xA7D0}, {0xA7D6,0xA7D6}, {0xA7D8,0xA7D8}, {0xA7F5,0xA7F5}, {0xFF21,0xFF3A}, {0x10400,0x10427},
    {0x104B0,0x104D3}, {0x10570,0x1057A}, {0x1057C,0x1058A}, {0x1058C,0x10592}, {0x10594,0x10595},
    {0x10C80,0x10CB2}, {0x118A0,0x118BF}, {0x16E40,0x16E5F}, {0x1D400,0x1D419}, {0x1D434,0x1D44D},
    {0x1D468,0x1D481}, {0x1D49C,0x1D49C}, {0x1D49E,0x1D49F}, {0x1D4A2,0x1D4A2}, {0x1D4A5,0x1D4A6},
    {0x1D4A9,0x1D4AC}, {0x1D4AE,0x1D4B5}, {0x1D4D0,0x1D4E9}, {0x1D504,0x1D505}, {0x1D507,0x1D50A},
    {0x1D50D,0x1D514}, {0x1D516,0x1D51C}, {0x1D538,0x1D539}, {0x1D53B,0x1D53E}, {0x1D540,0x1D544},
    {0x1D546,0x1D546}, {0x1D54A,0x1D550}, {0x1D56C,0x1D585}, {0x1D5A0,0x1D5B9}, {0x1D5D4,0x1D5ED},
    {0x1D608,0x1D621}, {0x1D63C,0x1D655}, {0x1D670,0x1D689}, {0x1D6A8,0x1D6C0}, {0x1D6E2,0x1D6FA},
    {0x1D71C,0x1D734}, {0x1D756,0x1D76E}, {0x1D790,0x1D7A8}, {0x1D7CA,0x1D7CA}, {0x1E900,0x1E921},
};

// ----------------------------------------------------------------------------
// Tokenizer: BPE with SentencePiece's rules (scores, byte fallback) or byte-level BPE (ranked merges
// over UTF-8 bytes, after a GPT-2 / Llama 3 / Qwen2 / GPT-4o pre-tokenizer split)

// A token's kind: special (control) tokens come only from templates by id; user-defined ones are
// matched in text (before the BPE) and printed as text, as Hugging Face and llama.cpp do.
typedef enum { LM_TOKEN_NORMAL = 0, LM_TOKEN_SPECIAL = 1, LM_TOKEN_BYTE = 2, LM_TOKEN_UNUSED = 3, LM_TOKEN_USER = 4 } LmTokenType;
typedef enum { LM_BPE_SENTENCEPIECE = 1, LM_BPE_BYTE_LEVEL = 2 } LmBpeKind;
typedef enum { LM_SPLIT_NONE = 0, LM_SPLIT_GPT2 = 1, LM_SPLIT_LLAMA3 = 2, LM_SPLIT_QWEN2 = 3, LM_SPLIT_GPT4O = 4 } LmSplit;
// The chat templates run.c renders (each exactly as the official Jinja template of its family does
// with add_generation_prompt): Llama 2; Llama 3; Llama 3.1/3.2 (a system block with the knowledge
// and today dates, always); ChatML; Qwen2.5 (ChatML with its default system prompt); SmolLM2
// (likewise, its own); Zephyr/TinyLlama; Mistral; Gemma 2/3 (a system prompt leads the first user
// message, as Gemma 3's template puts it; Gemma 2's refuses one); Qwen3 (ChatML with thinking: an
// empty <think> block when thinking is off, earlier replies without theirs); Phi-3/3.5; Phi-4-mini.
typedef enum {
    LM_CHAT_NONE, LM_CHAT_LLAMA2, LM_CHAT_LLAMA3, LM_CHAT_CHATML, LM_CHAT_ZEPHYR, LM_CHAT_MISTRAL, LM_CHAT_LLAMA31, LM_CHAT_QWEN25,
    LM_CHAT_SMOLLM2, LM_CHAT_GEMMA, LM_CHAT_QWEN3, LM_CHAT_PHI3, LM_CHAT_PHI4, LM_CHAT_N
} LmChatTemplate;
enum { LM_TOK_DUMMY_PREFIX = 1, LM_TOK_REMOVE_EXTRA_SPACES = 2, LM_TOK_SPLIT_DIGITS = 4, LM_TOK_IGNORE_MERGES = 8 };

static const char *const run_chat_template_names[] = {"none", "llama2", "llama3", "chatml", "zephyr", "mistral", "llama3.1", "qwen2.5",
                                                      "smollm2", "gemma", "qwen3", "phi3", "phi4"};

#define LM_TOKENIZER_MAGIC 0x6b746d6cu // "lmtk"
#define LM_TOKENIZER_HEADER_BYTES 128
#define LM_MAX_EOT 8

// A mergeable pair of adjacent tokens: key = left << 32 | right, into `result` with `priority`
// (higher merges first).
typedef struct { uint64_t key; float priority; int result; } LmPair;
#define LM_PAIR_EMPTY UINT64_MAX

struct LmTokenizer {
    int vocab_size;        // ids 0..vocab_size-1 (the model's; ids past the file's tokens are unused)
    int n_tokens;          // the file's tokens
    char **vocab;          // (vocab_size) NUL-terminated token bytes
    int *vocab_len;        // (vocab_size) their lengths
    float *scores;         // (vocab_size)
    unsigned char *type;   // (vocab_size) LmTokenType
    char *text;            // backing store of every token's bytes
    size_t text_used;      // its bytes in use
    int *user;             // (n_user) the user-defined tokens, longest first
    int n_user;
    int add_bos, add_eos;  // encoding a text starts with BOS / ends with EOS
    int *hash_ids;         // (hash_size) open-addressing table of token ids by text, -1 = empty
    size_t hash_size;      // a power of two
    LmPair *pairs;         // (pairs_size) open-addressing table of mergeable pairs
    size_t pairs_size;     // a power of two
    int byte_token[256];   // the token of each byte ("<0xXX>" or the raw byte), or -1
    short *token_byte;     // (vocab_size) the byte a "<0xXX>" token stands for, or -1
    unsigned char byte_pieces[512]; // each byte as a one-char string, for decoding byte tokens
    int max_token_len;
    LmBpeKind kind;
    LmSplit split;
    int flags;             // LM_TOK_*
    int bos_id, eos_id, unk_id; // -1 when the vocabulary has none
    int n_eot, eot[LM_MAX_EOT]; // tokens that end an assistant turn (besides EOS)
    LmChatTemplate chat_template;
    int thinking_off;      // Qwen3: replies start after an empty <think> block (lm_tokenizer_set_thinking)
    int template_unknown;  // the file's chat template is none that run.c renders (Llama 2's is used)
};

// The id of the token whose bytes are s[0..n), or -1. The lowest id wins for duplicate texts.
static int run_token_lookup(const LmTokenizer *t, const char *s, size_t n) {
    size_t mask = t->hash_size - 1;
    for (size_t i = (size_t)run_hash_bytes(s, n) & mask;; i = (i + 1) & mask) {
        int id = t->hash_ids[i];
        if (id < 0) return -1;
        if ((size_t)t->vocab_len[id] == n && memcmp(t->vocab[id], s, n) == 0) return id;
    }
}

// A normal (mergeable, text-matchable) token with these bytes, or -1.
static int run_normal_lookup(const LmTokenizer *t, const char *s, size_t n) {
    int id = run_token_lookup(t, s, n);
    return id >= 0 && t->type[id] == LM_TOKEN_NORMAL ? id : -1;
}

static uint64_t run_pair_key(int left, int right) { return (uint64_t)(uint32_t)left << 32 | (uint32_t)right; }

static const LmPair *run_pair_lookup(const LmTokenizer *t, int left, int right) {
    uint64_t key = run_pair_key(left, right);
    size_t mask = t->pairs_size - 1;
    for (size_t i = (size_t)run_hash_bytes(&key, 8) & mask;; i = (i + 1) & mask) {
        if (t->pairs[i].key == key) return &t->pairs[i];
        if (t->pairs[i].key == LM_PAIR_EMPTY) return NULL;
    }
}

// Adds a pair unless present (the first, highest-priority entry wins).
static void run_pair_insert(LmTokenizer *t, int left, int right, float priority, int result) {
    uint64_t key = run_pair_key(left, right);
    size_t mask = t->pairs_size - 1;
    size_t i = (size_t)run_hash_bytes(&key, 8) & mask;
    while (t->pairs[i].key != LM_PAIR_EMPTY) {
        if (t->pairs[i].key == key) return;
        i = (i + 1) & mask;
    }
    t->pairs[i] = (LmPair){key, priority, result};
}

void lm_tokenizer_free(LmTokenizer *t) {
    if (t == NULL) return;
    free(t->vocab); free(t->vocab_len); free(t->scores); free(t->type); free(t->text); free(t->hash_ids);
    free(t->pairs); free(t->token_byte); free(t->user);
    free(t);
}

static LmChatTemplate run_template_of_jinja(const char *jinja, size_t n);

// Allocates a tokenizer's tables for vocab_size ids, n_tokens of them from the file, whose texts
// take text_bytes at most. 0 on out-of-memory.
static int run_tokenizer_alloc(LmTokenizer *t, int vocab_size, int n_tokens, size_t text_bytes) {
    t->vocab_size = vocab_size;
    t->n_tokens = n_tokens;
    t->vocab = (char **)calloc((size_t)vocab_size, sizeof(char *));
    t->vocab_len = (int *)calloc((size_t)vocab_size, sizeof(int));
    t->scores = (float *)calloc((size_t)vocab_size, sizeof(float));
    t->type = (unsigned char *)malloc((size_t)vocab_size);
    t->token_byte = (short *)malloc((size_t)vocab_size * sizeof(short));
    t->text = (char *)malloc(text_bytes + (size_t)vocab_size + 1); // every text plus its terminator fits
    t->hash_size = run_pow2_at_least(2 * (size_t)vocab_size);
    t->hash_ids = (int *)malloc(t->hash_size * sizeof(int));
    if (!t->vocab || !t->vocab_len || !t->scores || !t->type || !t->token_byte || !t->text || !t->hash_ids) return 0;
    memset(t->hash_ids, 0xff, t->hash_size * sizeof(int));
    memset(t->type, LM_TOKEN_UNUSED, (size_t)vocab_size);
    t->text[0] = '\0';
    for (int i = 0; i < vocab_size; i++) { t->vocab[i] = t->text; t->token_byte[i] = -1; }
    t->text_used = 1;
    return 1;
}

// Token i: its bytes s[0..len), score and type (the caller checked len against the text budget).
static void run_tokenizer_set(LmTokenizer *t, int i, const char *s, int len, float score, int type) {
    t->vocab[i] = t->text + t->text_used;
    t->vocab_len[i] = len;
    t->scores[i] = score;
    t->type[i] = (unsigned char)type;
    memcpy(t->vocab[i], s, (size_t)len);
    t->vocab[i][len] = '\0';
    t->text_used += (size_t)len + 1;
    if (len > t->max_token_len) t->max_token_len = len;
}

// What every tokenizer gets once its tokens are in: the lookup table, the byte tokens and the
// user-defined tokens (longest first, for matching in text). 0 with the reason in err.
static int run_compare_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static int run_tokenizer_index(LmTokenizer *t, const char *path, char *err, size_t errlen) {
    int n_tokens = t->n_tokens;
    for (int i = 0; i < n_tokens; i++) { // insert in id order so the lowest id wins
        size_t mask = t->hash_size - 1, h = (size_t)run_hash_bytes(t->vocab[i], (size_t)t->vocab_len[i]) & mask;
        int dup = 0;
        for (; t->hash_ids[h] >= 0; h = (h + 1) & mask) {
            int other = t->hash_ids[h];
            if (t->vocab_len[other] == t->vocab_len[i] && memcmp(t->vocab[other], t->vocab[i], (size_t)t->vocab_len[i]) == 0) { dup = 1; break; }
        }
        if (!dup) t->hash_ids[h] = i;
        if (t->type[i] == LM_TOKEN_USER && t->vocab_len[i] > 0) t->n_user++;
    }
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        char raw = (char)b;
        t->byte_token[b] = t->kind == LM_BPE_BYTE_LEVEL ? run_normal_lookup(t, &raw, 1) : run_token_lookup(t, name, 6);
        if (t->kind == LM_BPE_SENTENCEPIECE && t->byte_token[b] >= 0) {
            if (t->type[t->byte_token[b]] != LM_TOKEN_BYTE) t->byte_token[b] = -1;
            else t->token_byte[t->byte_token[b]] = (short)b;
        }
        t->byte_pieces[2 * b] = (unsigned char)b;
        t->byte_pieces[2 * b + 1] = '\0';
    }
    if (t->kind == LM_BPE_BYTE_LEVEL)
        for (int b = 0; b < 256; b++)
            if (t->byte_token[b] < 0 && b != 0) { run_set_err(err, errlen, "%s: byte-level vocabulary lacks byte 0x%02X", path, b); return 0; }
    // the user-defined tokens, longest first, for matching in text
    t->user = (int *)malloc((size_t)t->n_user * sizeof(int) + 1);
    if (t->user == NULL) { run_set_err(err, errlen, "out of memory loading %s", path); return 0; }
    uint64_t *keys = (uint64_t *)malloc((size_t)t->n_user * sizeof(uint64_t) + 1);
    if (keys == NULL) { run_set_err(err, errlen, "out of memory loading %s", path); return 0; }
    for (int i = 0, k = 0; i < n_tokens; i++) // (longest first, then the lowest id)
        if (t->type[i] == LM_TOKEN_USER && t->vocab_len[i] > 0) keys[k++] = (uint64_t)(INT32_MAX - t->vocab_len[i]) << 32 | (uint32_t)i;
    qsort(keys, (size_t)t->n_user, sizeof(uint64_t), run_compare_u64);
    for (int k = 0; k < t->n_user; k++) t->user[k] = (int)(uint32_t)keys[k];
    free(keys);
    return 1;
}

// Then the pair table (merges: n_merges pairs of ids in priority order; without them, SentencePiece's
// rule) and the checks of the special ids. 0 with the reason in err.
static int run_tokenizer_pairs(LmTokenizer *t, const int32_t *merges, int n_merges, const char *path, char *err, size_t errlen) {
    int n_tokens = t->n_tokens;
    for (int i = 0; n_merges == 0 && t->kind == LM_BPE_BYTE_LEVEL && i < n_tokens; i++)
        if (t->type[i] == LM_TOKEN_NORMAL && t->vocab_len[i] > 1) {
            run_set_err(err, errlen, "%s: the byte-level vocabulary has no merges, so its token %d of %d bytes could never be made",
                        path, i, t->vocab_len[i]);
            return 0;
        }
    // the pair table: explicit ranked merges, or SentencePiece's rule (every split of a normal
    // token into two normal tokens merges back with that token's score)
    size_t n_pairs = (size_t)n_merges;
    if (n_merges == 0) for (int i = 0; i < n_tokens; i++) n_pairs += t->vocab_len[i] > 1 ? (size_t)t->vocab_len[i] - 1 : 0;
    t->pairs_size = run_pow2_at_least(2 * n_pairs + 1);
    t->pairs = (LmPair *)malloc(t->pairs_size * sizeof(LmPair));
    char *buf = (char *)malloc(2 * (size_t)t->max_token_len + 1);
    if (t->pairs == NULL || buf == NULL) { free(buf); run_set_err(err, errlen, "out of memory loading %s", path); return 0; }
    for (size_t i = 0; i < t->pairs_size; i++) t->pairs[i].key = LM_PAIR_EMPTY;
    for (int r = 0; r < n_merges; r++) {
        int a = merges[2 * r], b = merges[2 * r + 1];
        if (a < 0 || a >= n_tokens || b < 0 || b >= n_tokens) {
            free(buf);
            run_set_err(err, errlen, "%s: merge %d joins tokens %d and %d, outside the vocabulary", path, r, a, b);
            return 0;
        }
        memcpy(buf, t->vocab[a], (size_t)t->vocab_len[a]);
        memcpy(buf + t->vocab_len[a], t->vocab[b], (size_t)t->vocab_len[b]);
        // (a user-defined token may be a merge's result too: Gemma's runs of U+2581 are both)
        int result = run_token_lookup(t, buf, (size_t)(t->vocab_len[a] + t->vocab_len[b]));
        if (result >= 0 && t->type[result] != LM_TOKEN_NORMAL && t->type[result] != LM_TOKEN_USER) result = -1;
        if (result >= 0) run_pair_insert(t, a, b, -(float)r, result);
    }
    // (SentencePiece's rule costs the square of a token's length: tokens past LM_MAX_SPLIT_TOKEN
    // bytes, which no real vocabulary has, are left whole rather than let a hostile file hang here)
    for (int i = 0; n_merges == 0 && t->kind == LM_BPE_SENTENCEPIECE && i < n_tokens; i++) {
        if (t->type[i] != LM_TOKEN_NORMAL || t->vocab_len[i] > LM_MAX_SPLIT_TOKEN) continue;
        if (run_normal_lookup(t, t->vocab[i], (size_t)t->vocab_len[i]) != i) continue; // (a duplicate text)
        for (int k = 1; k < t->vocab_len[i]; k++) {
            int a = run_normal_lookup(t, t->vocab[i], (size_t)k), b = run_normal_lookup(t, t->vocab[i] + k, (size_t)(t->vocab_len[i] - k));
            if (a >= 0 && b >= 0) run_pair_insert(t, a, b, t->scores[i], i);
        }
    }
    free(buf);
    if (t->bos_id >= n_tokens || t->eos_id >= n_tokens || t->bos_id < -1 || t->eos_id < -1) {
        run_set_err(err, errlen, "%s: BOS %d or EOS %d is outside the vocabulary", path, t->bos_id, t->eos_id);
        return 0;
    }
    for (int i = 0; i < t->n_eot; i++)
        if (t->eot[i] < 0 || t->eot[i] >= n_tokens) { run_set_err(err, errlen, "%s: end-of-turn id %d is outside the vocabulary", path, t->eot[i]); return 0; }
    return 1;
}

// Reads a tokenizer from data[0..size) into t (zeroed): run.c's format when it starts with "lmtk",
// else llama2.c's tokenizer.bin. It must have vocab_size tokens (any count for 0), or fewer when it
// is embedded in its model's checkpoint (the rest of the embedding is padding). 0 with the reason in
// err (t then holds what was allocated, for lm_tokenizer_free).
static int run_read_tokenizer(LmTokenizer *t, const unsigned char *data, size_t size, int vocab_size, int embedded, const char *path,
                              char *err, size_t errlen) {
    int ours = size >= 4 && (uint32_t)run_read_i32(data) == LM_TOKENIZER_MAGIC;
    if (vocab_size == 0 && ours && size >= 16) vocab_size = run_read_i32(data + 12);
    if (vocab_size == 0 && !ours) // count llama2.c's tokens: (score, length, bytes) to the end
        for (size_t o = 4; o + 8 <= size && vocab_size < INT32_MAX; vocab_size++) {
            int32_t len = run_read_i32(data + o + 4);
            if (len < 0 || (size_t)len > size - o - 8) break;
            o += 8 + (size_t)len;
        }
    if (vocab_size <= 0) { run_set_err(err, errlen, "%s: no tokens", path); return 0; }
    // every token takes at least 8 bytes (9 in run.c's files): refuse impossible counts before allocating
    uint64_t claimed = ours && size >= 16 ? (uint64_t)(uint32_t)run_read_i32(data + 12) : (uint64_t)vocab_size;
    if (claimed * (ours ? 9 : 8) > size) {
        run_set_err(err, errlen, "%s: %llu tokens cannot fit in %zu bytes; wrong tokenizer for this model?", path,
                (unsigned long long)claimed, size);
        return 0;
    }
    int n_tokens = vocab_size, n_merges = 0;
    size_t off = 4;
    t->kind = LM_BPE_SENTENCEPIECE;
    t->flags = LM_TOK_DUMMY_PREFIX;
    t->bos_id = 1; t->eos_id = 2; t->unk_id = 0;
    if (ours) {
        if (size < LM_TOKENIZER_HEADER_BYTES) { run_set_err(err, errlen, "%s: truncated tokenizer header", path); return 0; }
        int version = run_read_i32(data + 4), kind = run_read_i32(data + 8), split = run_read_i32(data + 32), chat = run_read_i32(data + 36);
        n_tokens = run_read_i32(data + 12);
        n_merges = run_read_i32(data + 16);
        t->bos_id = run_read_i32(data + 20);
        t->eos_id = run_read_i32(data + 24);
        t->flags = run_read_i32(data + 28);
        t->n_eot = run_read_i32(data + 40);
        if (version != 1 || kind < 1 || kind > 2 || split < 0 || split > 4 || chat < 0 || chat >= LM_CHAT_N || (t->flags & ~15) != 0) {
            run_set_err(err, errlen, "%s: unsupported tokenizer (version %d, kind %d, pre-tokenizer %d, template %d, flags %d)",
                    path, version, kind, split, chat, t->flags);
            return 0;
        }
        if (n_tokens <= 0 || n_tokens > vocab_size || (n_tokens < vocab_size && !embedded)) {
            run_set_err(err, errlen, "%s has %d tokens but the model's vocabulary has %d: the tokenizer of another model?", path,
                        n_tokens, vocab_size);
            return 0;
        }
        if (n_merges < 0 || (uint64_t)n_merges * 8 > size) { run_set_err(err, errlen, "%s: bad merge count %d", path, n_merges); return 0; }
        if (t->n_eot < 0 || t->n_eot > LM_MAX_EOT) { run_set_err(err, errlen, "%s: bad end-of-turn count %d", path, t->n_eot); return 0; }
        for (int i = 0; i < t->n_eot; i++) t->eot[i] = run_read_i32(data + 44 + 4 * i);
        t->kind = (LmBpeKind)kind;
        t->split = (LmSplit)split;
        t->chat_template = (LmChatTemplate)chat;
        t->unk_id = -1;
        off = LM_TOKENIZER_HEADER_BYTES;
    }
    t->add_bos = t->bos_id >= 0;
    if (!run_tokenizer_alloc(t, vocab_size, n_tokens, size)) { run_set_err(err, errlen, "out of memory loading %s", path); return 0; }
    size_t entry = ours ? 9 : 8; // score, [type], length
    for (int i = 0; i < n_tokens; i++) {
        if (size - off < entry) {
            if (!ours && size == off) run_set_err(err, errlen, "%s: has %d tokens, the model expects %d", path, i, vocab_size);
            else run_set_err(err, errlen, "%s: truncated at token %d", path, i);
            return 0;
        }
        float score = run_read_f32(data + off);
        int type = ours ? data[off + 4] : (int)LM_TOKEN_NORMAL;
        int32_t len = run_read_i32(data + off + entry - 4);
        off += entry;
        if (len < 0 || (size_t)len > size - off) {
            run_set_err(err, errlen, "%s: token %d has length %d, past the end of the file", path, i, len);
            return 0;
        }
        if (type > LM_TOKEN_USER) { // (a NUL byte is fine: byte-level vocabularies have one)
            run_set_err(err, errlen, "%s: token %d has unknown type %d", path, i, type);
            return 0;
        }
        run_tokenizer_set(t, i, (const char *)data + off, len, score, type);
        off += (size_t)len;
        // llama2.c's files mark nothing: its "<0xXX>" spellings are the byte tokens
        unsigned int b;
        char tail;
        if (!ours && len == 6 && sscanf(t->vocab[i], "<0x%2X%c", &b, &tail) == 2 && tail == '>') t->type[i] = LM_TOKEN_BYTE;
    }
    if ((uint64_t)n_merges * 8 != size - off) {
        run_set_err(err, errlen, "%s: %zu bytes left after %d tokens%s; wrong tokenizer for this model?", path, size - off,
                n_tokens, ours ? " and their merges" : " (the model's vocab_size)");
        return 0;
    }
    int32_t *merges = (int32_t *)malloc((size_t)n_merges * 8 + 1);
    if (merges == NULL) { run_set_err(err, errlen, "out of memory loading %s", path); return 0; }
    memcpy(merges, data + off, (size_t)n_merges * 8); // (little-endian int32 pairs, as this host's)
    int ok = run_tokenizer_index(t, path, err, errlen) && run_tokenizer_pairs(t, merges, n_merges, path, err, errlen);
    free(merges);
    return ok;
}

// GPT-2's byte-level spelling: bytes that print stand for themselves, the other 68 (controls, space,
// 0x7f-0xa0, 0xad) for U+0100.. in byte order. Returns the byte a code point spells, or -1.
static int run_gpt2_byte(uint32_t cp) {
    if ((cp >= 33 && cp <= 126) || (cp >= 161 && cp <= 172) || (cp >= 174 && cp <= 255)) return (int)cp;
    if (cp < 256 || cp >= 256 + 68) return -1;
    for (int b = 0, n = 0; b < 256; b++) {
        if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)) continue;
        if (n++ == (int)(cp - 256)) return b;
    }
    return -1;
}

// A token's text as run.c keeps it: SentencePiece's "▁" as a space; GPT-2's byte-level spelling as
// the bytes it spells (control and user-defined tokens are written as they are). len 0 and -1 when
// the spelling is not byte-level.
static int run_gguf_token_text(char *out, LmString s, int byte_level) {
    int n = 0;
    for (size_t i = 0; i < s.n;) {
        if (!byte_level) {
            if (i + 2 < s.n && memcmp(s.s + i, "\xe2\x96\x81", 3) == 0) { out[n++] = ' '; i += 3; }
            else out[n++] = s.s[i++];
            continue;
        }
        uint32_t cp;
        i += run_utf8_next((const unsigned char *)s.s + i, s.n - i, &cp);
        int b = run_gpt2_byte(cp);
        if (b < 0) return -1;
        out[n++] = (char)b;
    }
    return n;
}

// Reads the tokenizer of a GGUF file (tokenizer.ggml.*) into t (zeroed). vocab_size as for
// run_read_tokenizer; embedded: the file is the model's own. 0 with the reason in err.
static int run_read_gguf_tokenizer(LmTokenizer *t, const LmGguf *g, int vocab_size, int embedded, const char *path, char *err, size_t errlen) {
    LmString model = run_gguf_string(g, "tokenizer.ggml.model"), pre = run_gguf_string(g, "tokenizer.ggml.pre");
    const LmGgufKv *tokens = run_gguf_find(g, "tokenizer.ggml.tokens"), *scores = run_gguf_find(g, "tokenizer.ggml.scores");
    const LmGgufKv *types = run_gguf_find(g, "tokenizer.ggml.token_type"), *merges = run_gguf_find(g, "tokenizer.ggml.merges");
    int byte_level = run_string_is(model, "gpt2");
    if (!byte_level && !run_string_is(model, "llama")) {
        run_set_err(err, errlen, "%s: tokenizer model '%.*s' is not supported (llama: SentencePiece; gpt2: byte-level BPE)", path,
                    (int)(model.n < 32 ? model.n : 32), model.s ? model.s : "");
        return 0;
    }
    if (tokens == NULL || tokens->type != LM_GGUF_ARRAY || tokens->elem_type != LM_GGUF_STRING || tokens->count == 0 || tokens->count > INT32_MAX ||
        (scores && (scores->type != LM_GGUF_ARRAY || scores->elem_type != LM_GGUF_F32 || scores->count != tokens->count)) ||
        (types && (types->type != LM_GGUF_ARRAY || types->elem_type != LM_GGUF_I32 || types->count != tokens->count)) ||
        (merges && (merges->type != LM_GGUF_ARRAY || merges->elem_type != LM_GGUF_STRING || merges->count > INT32_MAX / 2))) {
        run_set_err(err, errlen, "%s: the tokenizer's tokens, scores, token types or merges are missing or malformed", path);
        return 0;
    }
    int n_tokens = (int)tokens->count;
    if (vocab_size == 0) vocab_size = n_tokens;
    if (n_tokens > vocab_size || (n_tokens < vocab_size && !embedded)) {
        run_set_err(err, errlen, "%s has %d tokens but the model's vocabulary has %d: the tokenizer of another model?", path, n_tokens, vocab_size);
        return 0;
    }
    // the special ids and switches, with llama.cpp's defaults
    int ok = 1;
    double bos = run_gguf_number(g, "tokenizer.ggml.bos_token_id", -1, &ok), eos = run_gguf_number(g, "tokenizer.ggml.eos_token_id", -1, &ok);
    double unk = run_gguf_number(g, "tokenizer.ggml.unknown_token_id", -1, &ok);
    t->kind = byte_level ? LM_BPE_BYTE_LEVEL : LM_BPE_SENTENCEPIECE;
    t->bos_id = bos >= 0 && bos < n_tokens ? (int)bos : -1;
    t->eos_id = eos >= 0 && eos < n_tokens ? (int)eos : -1;
    t->unk_id = unk >= 0 && unk < n_tokens ? (int)unk : -1;
    t->add_eos = run_gguf_number(g, "tokenizer.ggml.add_eos_token", 0, &ok) != 0;
    if (!byte_level && run_gguf_number(g, "tokenizer.ggml.add_space_prefix", 1, &ok) != 0) t->flags |= LM_TOK_DUMMY_PREFIX;
    if (!ok) { run_set_err(err, errlen, "%s: a tokenizer id or switch has the wrong type", path); return 0; }
    int add_bos_default = !byte_level;
    if (byte_level) { // the pre-tokenizer split, by llama.cpp's names
        // (add_bos: llama.cpp's default when the file has no tokenizer.ggml.add_bos_token)
        static const struct { const char *name; LmSplit split; int flags, add_bos; } pres[] = {
            {"default", LM_SPLIT_GPT2, 0, 0}, {"gpt-2", LM_SPLIT_GPT2, 0, 0}, {"llama-bpe", LM_SPLIT_LLAMA3, LM_TOK_IGNORE_MERGES, 1},
            {"llama3", LM_SPLIT_LLAMA3, LM_TOK_IGNORE_MERGES, 1}, {"qwen2", LM_SPLIT_QWEN2, 0, 0}, {"deepseek-r1-qwen", LM_SPLIT_QWEN2, 0, 0},
            {"smollm", LM_SPLIT_GPT2, LM_TOK_SPLIT_DIGITS, 0}, {"gpt-4o", LM_SPLIT_GPT4O, 0, 0}};
        int found = pre.s == NULL ? 0 : -1; // (no pre-tokenizer named: llama.cpp's default)
        for (size_t k = 0; k < sizeof pres / sizeof pres[0]; k++) if (run_string_is(pre, pres[k].name)) found = (int)k;
        if (found < 0) {
            run_set_err(err, errlen, "%s: pre-tokenizer '%.*s' is not supported (default, gpt-2, llama-bpe, qwen2, deepseek-r1-qwen, smollm, gpt-4o)",
                        path, (int)(pre.n < 32 ? pre.n : 32), pre.s);
            return 0;
        }
        t->split = pres[found].split;
        t->flags |= pres[found].flags;
        add_bos_default = pres[found].add_bos;
    }
    t->add_bos = t->bos_id >= 0 && run_gguf_number(g, "tokenizer.ggml.add_bos_token", add_bos_default, &ok) != 0;
    if (!ok) { run_set_err(err, errlen, "%s: tokenizer.ggml.add_bos_token has the wrong type", path); return 0; }
    // the tokens (GGUF's types: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte)
    static const unsigned char from_gguf[7] = {LM_TOKEN_NORMAL, LM_TOKEN_NORMAL, LM_TOKEN_SPECIAL, LM_TOKEN_SPECIAL,
                                               LM_TOKEN_USER, LM_TOKEN_UNUSED, LM_TOKEN_BYTE};
    LmReader r = {tokens->value, g->end, 1};
    size_t text_bytes = 0;
    for (int i = 0; i < n_tokens; i++) text_bytes += run_take_string(&r).n; // (a token's text only shrinks below)
    if (!run_tokenizer_alloc(t, vocab_size, n_tokens, text_bytes)) { run_set_err(err, errlen, "out of memory loading %s", path); return 0; }
    r.p = tokens->value;
    char *text = (char *)malloc(4 * (size_t)65536);
    if (text == NULL) { run_set_err(err, errlen, "out of memory loading %s", path); return 0; }
    for (int i = 0; i < n_tokens; i++) {
        LmString s = run_take_string(&r);
        int32_t gtype = 1;
        float score = 0.0f;
        if (types) memcpy(&gtype, types->value + 4 * (size_t)i, 4);
        if (scores) memcpy(&score, scores->value + 4 * (size_t)i, 4);
        int type = gtype >= 1 && gtype <= 6 ? from_gguf[gtype] : (int)LM_TOKEN_NORMAL;
        int len = s.n > 65536 ? -1 : run_gguf_token_text(text, s, byte_level && (type == LM_TOKEN_NORMAL || type == LM_TOKEN_BYTE));
        if (len < 0) {
            free(text);
            run_set_err(err, errlen, "%s: token %d is not in GPT-2's byte-level spelling, or longer than 65536 bytes", path, i);
            return 0;
        }
        if (byte_level && type == LM_TOKEN_BYTE) type = LM_TOKEN_NORMAL; // (byte-level BPE's bytes are ordinary tokens)
        run_tokenizer_set(t, i, text, len, score, type);
    }
    free(text);
    // end of a turn: the eot and eom ids, and the control tokens llama.cpp counts as ending generation
    static const char *ends[] = {"<|eot_id|>", "<|eom_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>"};
    const char *keys[2] = {"tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"};
    for (int k = 0; k < 2; k++) {
        double id = run_gguf_number(g, keys[k], -1, &ok);
        if (id >= 0 && id < n_tokens && (int)id != t->eos_id && t->n_eot < LM_MAX_EOT) t->eot[t->n_eot++] = (int)id;
    }
    for (int i = 0; i < n_tokens; i++)
        for (size_t k = 0; k < sizeof ends / sizeof ends[0] && t->type[i] == LM_TOKEN_SPECIAL; k++)
            if (strcmp(t->vocab[i], ends[k]) == 0 && i != t->eos_id && t->n_eot < LM_MAX_EOT) {
                int seen = 0;
                for (int e = 0; e < t->n_eot; e++) seen |= t->eot[e] == i;
                if (!seen) t->eot[t->n_eot++] = i;
            }
    // merges "left right" as id pairs, once the texts can be looked up (SentencePiece vocabularies
    // merge by their scores: a converter's merges list for one is ignored, as llama.cpp does)
    int n_merges = merges && byte_level ? (int)merges->count : 0;
    int32_t *ids = (int32_t *)malloc(2 * (size_t)n_merges * sizeof(int32_t) + 1);
    char *part = (char *)malloc(2 * (size_t)t->max_token_len + 2);
    ok = ids && part;
    if (!ok) run_set_err(err, errlen, "out of memory loading %s", path);
    ok = ok && run_tokenizer_index(t, path, err, errlen);
    LmReader mr = {merges ? merges->value : NULL, g->end, 1};
    for (int k = 0; ok && k < n_merges; k++) {
        LmString s = run_take_string(&mr);
        const char *space = s.n ? (const char *)memchr(s.s, ' ', s.n) : NULL;
        LmString halves[2] = {{s.s, space ? (size_t)(space - s.s) : 0}, {space ? space + 1 : s.s, space ? s.n - (size_t)(space - s.s) - 1 : 0}};
        for (int h = 0; h < 2; h++) { // (a token byte is spelled in at most 2 bytes)
            int len = space && halves[h].n <= 2 * (size_t)t->max_token_len ? run_gguf_token_text(part, halves[h], 1) : -1;
            ids[2 * k + h] = len > 0 && len <= t->max_token_len ? run_token_lookup(t, part, (size_t)len) : -1;
        }
        if (ids[2 * k] < 0 || ids[2 * k + 1] < 0) {
            run_set_err(err, errlen, "%s: merge %d ('%.*s') does not join two tokens of the vocabulary", path, k, (int)(s.n < 40 ? s.n : 40), s.s);
            ok = 0;
        }
    }
    ok = ok && run_tokenizer_pairs(t, ids, n_merges, path, err, errlen);
    free(ids);
    free(part);
    // the chat template: the kind of run.c's own that renders it, from the Jinja text
    LmString jinja = run_gguf_string(g, "tokenizer.chat_template");
    if (jinja.s) t->chat_template = run_template_of_jinja(jinja.s, jinja.n);
    t->template_unknown = jinja.s && t->chat_template == LM_CHAT_NONE;
    return ok;
}

// Parses a tokenizer from data[0..size) (see run_read_tokenizer). NULL with the reason in err.
static LmTokenizer *run_parse_tokenizer(const unsigned char *data, size_t size, int vocab_size, int embedded, const char *path,
                                        char *err, size_t errlen) {
    LmTokenizer *t = (LmTokenizer *)calloc(1, sizeof *t);
    if (t == NULL) { run_set_err(err, errlen, "out of memory"); return NULL; }
    if (!run_read_tokenizer(t, data, size, vocab_size, embedded, path, err, errlen)) { lm_tokenizer_free(t); return NULL; }
    return t;
}

LmTokenizer *lm_tokenizer_load(const char *path, int vocab_size, char *err, size_t errlen) {
    if (path == NULL || vocab_size < 0) { run_set_err(err, errlen, "tokenizer: bad arguments"); return NULL; }
    size_t size;
    const unsigned char *data = run_map_file(path, &size, err, errlen);
    if (data == NULL) return NULL;
    const unsigned char *section = data;
    size_t section_size = size;
    LmTokenizer *t = NULL;
    int embedded = 0;
    if (size >= LM_AK42_HEADER_BYTES && (uint32_t)run_read_i32(data) == LM_MAGIC && run_read_i32(data + 4) == 3) {
        uint64_t off = run_read_u64(data + 88), n = run_read_u64(data + 96);
        section = n == 0 || off > size || n > size - off ? NULL : data + off;
        section_size = (size_t)n;
        // a checkpoint's own tokenizer may be smaller than its vocabulary; another model's may not
        embedded = vocab_size == 0 || run_read_i32(data + 32) == vocab_size;
    }
    if (size >= 4 && (uint32_t)run_read_i32(data) == LM_GGUF_MAGIC) { // a GGUF model's (or a vocabulary alone)
        LmGguf g;
        int ok = run_gguf_parse(&g, data, size, path, err, errlen);
        const LmGgufTensor *embedding = ok ? run_gguf_tensor(&g, "token_embd.weight") : NULL;
        embedded = 1; // (not a file of another kind)
        if (ok && run_gguf_find(&g, "tokenizer.ggml.tokens") == NULL) {
            run_set_err(err, errlen, "%s: the GGUF file has no tokenizer (give one with -z)", path);
            ok = 0;
        }
        t = ok ? (LmTokenizer *)calloc(1, sizeof *t) : NULL;
        if (ok && t == NULL) run_set_err(err, errlen, "out of memory loading %s", path);
        // its own model's embedding may be larger than the vocabulary; another model's may not
        if (t && !run_read_gguf_tokenizer(t, &g, vocab_size, embedding && embedding->ne[1] == (uint64_t)vocab_size, path, err, errlen)) {
            lm_tokenizer_free(t);
            t = NULL;
        }
        run_gguf_free(&g);
    } else if (section == NULL) {
        run_set_err(err, errlen, "%s: the checkpoint has no embedded tokenizer (give one with -z)", path);
    } else {
        t = run_parse_tokenizer(section, section_size, vocab_size, embedded, path, err, errlen);
    }
    const char *foreign = t == NULL && !embedded ? run_foreign_file(data, size) : NULL;
    if (foreign) run_set_err(err, errlen, "%s %s", path, foreign);
    munmap((void *)data, size);
    return t;
}

static int run_is_special(const LmTokenizer *t, int token) {
    return t->type[token] == LM_TOKEN_SPECIAL || t->type[token] == LM_TOKEN_UNUSED;
}

const char *lm_decode(LmTokenizer *t, int prev_token, int token) {
    if (t == NULL || token < 0 || token >= t->vocab_size) return "";
    if (run_is_special(t, token)) return ""; // (llama2.c's files mark none: their <unk> prints as text)
    const char *piece = t->vocab[token];
    // after BOS, SentencePiece drops the dummy-prefix space of the first word
    if ((t->flags & LM_TOK_DUMMY_PREFIX) && prev_token == t->bos_id && piece[0] == ' ') piece++;
    if (t->token_byte[token] >= 0) piece = (const char *)t->byte_pieces + 2 * t->token_byte[token];
    // a lone control byte would corrupt a terminal; UTF-8 bytes (>= 0x80) pass through
    unsigned char b = (unsigned char)piece[0];
    if (piece[0] != '\0' && piece[1] == '\0' && b < 0x80 && !isprint(b) && !isspace(b)) return "";
    return piece;
}

// The template a tokenizer uses when the file names none: Llama 2's, as llama2.c.
static LmChatTemplate run_chat_template_of(const LmTokenizer *t) {
    return t->chat_template == LM_CHAT_NONE ? LM_CHAT_LLAMA2 : t->chat_template;
}

const char *lm_token_text(const LmTokenizer *t, int token) {
    return t == NULL || token < 0 || token >= t->vocab_size ? NULL : t->vocab[token];
}

int lm_tokenizer_info(const LmTokenizer *t, LmTokenizerInfo *info) {
    if (t == NULL || info == NULL) return -1;
    *info = (LmTokenizerInfo){.kind = t->kind == LM_BPE_BYTE_LEVEL ? "byte-level BPE" : "SentencePiece BPE", .n_tokens = t->n_tokens,
                              .vocab_size = t->vocab_size, .bos_id = t->bos_id, .eos_id = t->eos_id, .n_eot = t->n_eot,
                              .chat_template = run_chat_template_names[run_chat_template_of(t)], .template_unknown = t->template_unknown};
    memcpy(info->eot_ids, t->eot, sizeof t->eot);
    return 0;
}

int lm_tokenizer_set_thinking(LmTokenizer *t, int enable) {
    if (t == NULL) return -1;
    t->thinking_off = !enable;
    return 0;
}

int lm_tokenizer_set_template(LmTokenizer *t, const char *name) {
    for (int k = LM_CHAT_LLAMA2; t && name && k < LM_CHAT_N; k++)
        if (strcmp(name, run_chat_template_names[k]) == 0) { t->chat_template = (LmChatTemplate)k; t->template_unknown = 0; return 0; }
    return -1;
}

// Unicode classes for the pre-tokenizers' \p{L} (letters), \p{N} (numbers) and \s (White_Space).
static int run_in_ranges(uint32_t cp, const uint32_t (*r)[2], size_t n) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < r[mid][0]) hi = mid;
        else if (cp > r[mid][1]) lo = mid + 1;
        else return 1;
    }
    return 0;
}

static int run_is_letter(uint32_t cp) {
    if (cp < 0x80) return (cp | 32) >= 'a' && (cp | 32) <= 'z';
    return run_in_ranges(cp, run_unicode_letters, sizeof run_unicode_letters / sizeof run_unicode_letters[0]);
}

static int run_is_number(uint32_t cp) {
    if (cp < 0x80) return cp >= '0' && cp <= '9';
    return run_in_ranges(cp, run_unicode_numbers, sizeof run_unicode_numbers / sizeof run_unicode_numbers[0]);
}

static int run_is_space(uint32_t cp) {
    return (cp >= 9 && cp <= 13) || cp == ' ' || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

// For GPT-4o's case classes: the letters (L) are Lu, Ll, Lt (the cased ones), Lm and Lo; marks (M) are not letters.
static int run_is_mark(uint32_t cp) {
    return cp >= 0x300 && run_in_ranges(cp, run_unicode_marks, sizeof run_unicode_marks / sizeof run_unicode_marks[0]);
}

static int run_is_upper(uint32_t cp) { // Lu or Lt
    if (cp < 0x80) return cp >= 'A' && cp <= 'Z';
    return run_in_ranges(cp, run_unicode_upper, sizeof run_unicode_upper / sizeof run_unicode_upper[0]);
}

static int run_is_lower(uint32_t cp) { // Ll: cased, not Lu or Lt
    if (cp < 0x80) return cp >= 'a' && cp <= 'z';
    return run_in_ranges(cp, run_unicode_cased, sizeof run_unicode_cased / sizeof run_unicode_cased[0]) && !run_is_upper(cp);
}

// [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}] and [\p{Ll}\p{Lm}\p{Lo}\p{M}]: Lm, Lo and marks are in both
static int run_is_upper_class(uint32_t cp) { return run_is_letter(cp) ? !run_is_lower(cp) : run_is_mark(cp); }
static int run_is_lower_class(uint32_t cp) { return run_is_letter(cp) ? !run_is_upper(cp) : run_is_mark(cp); }


typedef struct { const unsigned char *s; size_t n; } LmText;

static uint32_t run_cp_at(LmText x, size_t pos, size_t *len) {
    uint32_t cp = 0;
    *len = pos < x.n ? run_utf8_next(x.s + pos, x.n - pos, &cp) : 0;
    return cp;
}

// Consumes characters from pos while pred holds, at most max of them; returns the end.
static size_t run_take_while(LmText x, size_t pos, int (*pred)(uint32_t), int max) {
    size_t len;
    for (int i = 0; pos < x.n && i < max && pred(run_cp_at(x, pos, &len)); i++) pos += len;
    return pos;
}

static int run_is_other(uint32_t cp) { return !run_is_space(cp) && !run_is_letter(cp) && !run_is_number(cp); }
static int run_is_newline(uint32_t cp) { return cp == '\r' || cp == '\n'; }
static int run_is_newline_or_slash(uint32_t cp) { return cp == '\r' || cp == '\n' || cp == '/'; }

// The length of the contraction ('s 't 're 've 'm 'll 'd) at pos, 0 if none; ignoring ASCII case or not.
static size_t run_contraction_length(LmText x, size_t pos, int ignore_case) {
    if (pos + 1 >= x.n || x.s[pos] != '\'') return 0;
    unsigned char a = x.s[pos + 1], b = pos + 2 < x.n ? x.s[pos + 2] : 0;
    if (ignore_case) { a = (unsigned char)tolower(a); b = (unsigned char)tolower(b); }
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
    return 0;
}

// GPT-4o's letters from pos, then an optional contraction (ASCII case ignored), as a backtracking regex
// engine matches [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+ (upper_first 0) or
// [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]* (upper_first 1); returns the end, or pos if
// it does not match. Where no lowercase letter follows the greedy upper-class run, the first pattern
// gives back characters until the run ends in one of the lower class too ("NAI" U+0308 "VE": "NAI" U+0308).
static size_t run_gpt4o_letters(LmText x, size_t pos, int upper_first) {
    size_t len, end = pos, lower_end = pos; // the upper-class run, and where its last lower-class character ends
    uint32_t cp = 0;
    while (end < x.n && run_is_upper_class(cp = run_cp_at(x, end, &len))) {
        end += len;
        if (run_is_lower_class(cp)) lower_end = end;
    }
    if (upper_first && end == pos) return pos;
    if (end < x.n && run_is_lower_class(cp)) {
        end = run_take_while(x, end, run_is_lower_class, INT32_MAX);
    } else if (!upper_first) {
        if (lower_end == pos) return pos;
        end = lower_end;
    }
    return end + run_contraction_length(x, end, 1);
}

// The length of the pre-token starting at pos, as the split pattern of t->split would match it:
//   GPT-2:   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//   Llama 3: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
//            \s*[\r\n]+|\s+(?!\S)|\s+
//   Qwen2:   as Llama 3 with \p{N} for \p{N}{1,3}
//   GPT-4o:  [^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|
//            [^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|
//            \p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+
// Every character matches one of the alternatives, so the result is at least one character.
static size_t run_pretoken_length(LmSplit split, LmText x, size_t pos) {
    size_t len, len2;
    uint32_t c = run_cp_at(x, pos, &len);
    int gpt2 = split == LM_SPLIT_GPT2, gpt4o = split == LM_SPLIT_GPT4O;
    size_t contraction = gpt4o ? 0 : run_contraction_length(x, pos, !gpt2); // case-insensitive except in GPT-2
    if (contraction) return contraction;
    uint32_t next = run_cp_at(x, pos + len, &len2);
    if (gpt2) { // an optional space, then a run of one class
        size_t start = c == ' ' && pos + 1 < x.n ? pos + 1 : pos;
        uint32_t first = c == ' ' ? next : c;
        if (c == ' ' && pos + 1 >= x.n) first = c;
        if (run_is_letter(first)) return run_take_while(x, start, run_is_letter, INT32_MAX) - pos;
        if (run_is_number(first)) return run_take_while(x, start, run_is_number, INT32_MAX) - pos;
        if (run_is_other(first)) return run_take_while(x, start, run_is_other, INT32_MAX) - pos;
    } else {
        int lead = !run_is_newline(c) && !run_is_letter(c) && !run_is_number(c); // [^\r\n\p{L}\p{N}]
        if (gpt4o) { // each letters pattern with the leading character, then without it
            for (int upper_first = 0; upper_first <= 1; upper_first++) {
                size_t end;
                if (lead && (end = run_gpt4o_letters(x, pos + len, upper_first)) > pos + len) return end - pos;
                if ((end = run_gpt4o_letters(x, pos, upper_first)) > pos) return end - pos;
            }
        } else {
            if (lead && run_is_letter(next)) return run_take_while(x, pos + len, run_is_letter, INT32_MAX) - pos; // [^\r\n\p{L}\p{N}]?\p{L}+
            if (run_is_letter(c)) return run_take_while(x, pos, run_is_letter, INT32_MAX) - pos;
        }
        if (run_is_number(c)) return run_take_while(x, pos, run_is_number, split == LM_SPLIT_QWEN2 ? 1 : 3) - pos;
        size_t start = c == ' ' ? pos + 1 : pos; // ` ?[^\s\p{L}\p{N}]+[\r\n]*` (GPT-4o: [\r\n/]*)
        if (run_is_other(c == ' ' ? next : c) && (c != ' ' || pos + 1 < x.n))
            return run_take_while(x, run_take_while(x, start, run_is_other, INT32_MAX), gpt4o ? run_is_newline_or_slash : run_is_newline,
                                  INT32_MAX) - pos;
    }
    // whitespace: the run W from pos, then the first alternative that matches
    size_t end = pos, last_start = pos, last_newline_end = 0;
    int chars = 0;
    while (end < x.n) {
        uint32_t w = run_cp_at(x, end, &len);
        if (!run_is_space(w)) break;
        last_start = end;
        end += len;
        chars++;
        if (run_is_newline(w)) last_newline_end = end;
    }
    if (chars == 0) return len ? len : 1; // unreachable for well-formed classes; keeps progress
    if (!gpt2 && last_newline_end > 0) return last_newline_end - pos; // \s*[\r\n]+
    if (end == x.n || chars == 1) return end - pos;                    // \s+(?!\S) at the end, or \s+
    return last_start - pos;                                           // \s+(?!\S): leave one space
}

// A growable token list.
typedef struct { int *ids; int n, cap; } LmTokens;

static int run_tokens_push(LmTokens *list, int id) {
    if (list->n == list->cap) {
        int cap = list->cap ? 2 * list->cap : 64;
        int *grown = (int *)realloc(list->ids, (size_t)cap * sizeof(int));
        if (grown == NULL) return 0;
        list->ids = grown;
        list->cap = cap;
    }
    list->ids[list->n++] = id;
    return 1;
}

// A candidate merge of the symbol at `left` with the one after it.
typedef struct { float priority; int left, result, left_id, right_id; } LmMerge;

// Max-heap order: higher priority first; among equals the leftmost, as SentencePiece and HF do.
static int run_merge_before(const LmMerge *a, const LmMerge *b) {
    return a->priority > b->priority || (a->priority == b->priority && a->left < b->left);
}

static void run_heap_push(LmMerge *heap, int *n, LmMerge item) {
    int i = (*n)++;
    while (i > 0 && run_merge_before(&item, &heap[(i - 1) / 2])) { heap[i] = heap[(i - 1) / 2]; i = (i - 1) / 2; }
    heap[i] = item;
}

static LmMerge run_heap_pop(LmMerge *heap, int *n) {
    LmMerge top = heap[0], last = heap[--(*n)];
    int i = 0;
    for (;;) {
        int child = 2 * i + 1;
        if (child >= *n) break;
        if (child + 1 < *n && run_merge_before(&heap[child + 1], &heap[child])) child++;
        if (!run_merge_before(&heap[child], &last)) break;
        heap[i] = heap[child];
        i = child;
    }
    if (*n > 0) heap[i] = last;
    return top;
}

// Scratch space for BPE over one chunk of at most `cap` symbols.
typedef struct { int *ids, *next, *prev; LmMerge *heap; int cap; } LmBpeScratch;

static void run_push_pair(const LmTokenizer *t, LmBpeScratch *w, int *heap_n, int left) {
    int right = w->next[left];
    if (right < 0) return;
    const LmPair *p = run_pair_lookup(t, w->ids[left], w->ids[right]);
    if (p) run_heap_push(w->heap, heap_n, (LmMerge){p->priority, left, p->result, w->ids[left], w->ids[right]});
}

// BPE over the symbols w->ids[0..n): repeatedly merges the best adjacent pair. A heap of candidate
// pairs over a linked list of symbols makes this O(n log n); stale entries are skipped when popped.
// Appends the result to out; 0 on out-of-memory.
static int run_bpe_merge(const LmTokenizer *t, LmBpeScratch *w, int n, LmTokens *out) {
    int heap_n = 0;
    for (int i = 0; i < n; i++) { w->next[i] = i + 1 < n ? i + 1 : -1; w->prev[i] = i - 1; }
    for (int i = 0; i + 1 < n; i++) run_push_pair(t, w, &heap_n, i);
    while (heap_n > 0) {
        LmMerge mg = run_heap_pop(w->heap, &heap_n);
        int right = w->next[mg.left];
        if (w->ids[mg.left] != mg.left_id || right < 0 || w->ids[right] != mg.right_id) continue; // stale
        w->ids[mg.left] = mg.result;
        w->ids[right] = -1;
        w->next[mg.left] = w->next[right];
        if (w->next[right] >= 0) w->prev[w->next[right]] = mg.left;
        if (w->prev[mg.left] >= 0) run_push_pair(t, w, &heap_n, w->prev[mg.left]);
        run_push_pair(t, w, &heap_n, mg.left);
    }
    for (int i = 0; n > 0 && i >= 0; i = w->next[i])
        if (!run_tokens_push(out, w->ids[i])) return 0;
    return 1;
}

// Encodes one chunk of text: initial symbols (SentencePiece: a token per character, else its byte
// tokens, else <unk>; byte-level: a token per byte), then BPE.
static int run_encode_chunk(const LmTokenizer *t, LmText x, LmBpeScratch *w, LmTokens *out) {
    if (x.n == 0) return 1;
    if ((t->flags & LM_TOK_IGNORE_MERGES)) { // a whole pre-token that is a token is taken as it is
        int id = run_normal_lookup(t, (const char *)x.s, x.n);
        if (id >= 0) return run_tokens_push(out, id);
    }
    int n = 0;
    for (size_t i = 0; i < x.n;) {
        uint32_t cp;
        size_t clen = t->kind == LM_BPE_BYTE_LEVEL ? 1 : run_utf8_next(x.s + i, x.n - i, &cp);
        int id = t->kind == LM_BPE_BYTE_LEVEL ? t->byte_token[x.s[i]] : run_normal_lookup(t, (const char *)x.s + i, clen);
        if (id >= 0) {
            w->ids[n++] = id;
        } else {
            for (size_t j = 0; j < clen; j++) {
                int b = t->byte_token[x.s[i + j]];
                w->ids[n++] = b >= 0 ? b : (t->unk_id >= 0 ? t->unk_id : 0); // no byte fallback: <unk>
            }
        }
        i += clen;
    }
    assert(n <= w->cap);
    return run_bpe_merge(t, w, n, out);
}

// SentencePiece's remove_extra_whitespaces: no leading or trailing spaces, runs become one space.
// out may be s itself.
static size_t run_collapse_spaces(char *out, const char *s, size_t n) {
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == ' ' && (o == 0 || out[o - 1] == ' ')) continue;
        out[o++] = s[i];
    }
    while (o > 0 && out[o - 1] == ' ') o--;
    return o;
}

// Appends the tokens of text[0..len) (no BOS/EOS, no special or user-defined tokens) to out: the
// normalization (SentencePiece's dummy prefix and spaces), the pre-tokenizer split, then BPE.
// Returns 0 on out-of-memory.
static int run_encode_plain(const LmTokenizer *t, const char *text, size_t len, LmTokens *out) {
    char *norm = (char *)malloc(len + 2);
    LmBpeScratch w = {(int *)malloc((len + 2) * sizeof(int)), (int *)malloc((len + 2) * sizeof(int)),
                      (int *)malloc((len + 2) * sizeof(int)), (LmMerge *)malloc(2 * (len + 2) * sizeof(LmMerge)), (int)len + 2};
    int ok = norm && w.ids && w.next && w.prev && w.heap;
    size_t n = 0; // the normalized text: norm[1..1+n), then with the dummy prefix norm[0..1+n)
    for (size_t i = 0; ok && i < len; i++) { // SentencePiece writes a space as U+2581 "▁", and reads a typed "▁" as one
        int bar = t->kind == LM_BPE_SENTENCEPIECE && i + 2 < len && memcmp(text + i, "\xe2\x96\x81", 3) == 0;
        norm[1 + n++] = bar ? ' ' : text[i];
        i += bar ? 2 : 0;
    }
    if (t->flags & LM_TOK_REMOVE_EXTRA_SPACES) n = run_collapse_spaces(norm + 1, norm + 1, n); // (in place)
    int prefix = (t->flags & LM_TOK_DUMMY_PREFIX) && n > 0; // (an empty text gets no dummy prefix)
    if (ok && prefix) norm[0] = ' ';
    LmText all = {ok ? (const unsigned char *)norm + !prefix : NULL, ok ? n + (size_t)prefix : 0};
    n = all.n;
    for (size_t pos = 0; ok && pos < n;) {
        if (t->split == LM_SPLIT_NONE) { ok = run_encode_chunk(t, all, &w, out); break; }
        size_t end = n;
        if (t->flags & LM_TOK_SPLIT_DIGITS) { // each digit alone; the split pattern runs between them
            size_t clen;
            if (run_is_number(run_cp_at(all, pos, &clen))) end = pos + clen;
            else for (end = pos; end < n && !run_is_number(run_cp_at(all, end, &clen)); end += clen) {}
        }
        LmText part = {all.s, end};
        while (ok && pos < end) {
            size_t piece = run_pretoken_length(t->split, part, pos);
            ok = run_encode_chunk(t, (LmText){all.s + pos, piece}, &w, out);
            pos += piece;
        }
    }
    free(norm); free(w.ids); free(w.next); free(w.prev); free(w.heap);
    return ok;
}

// Appends the tokens of plain text to out: user-defined tokens (Qwen's <think>, <tool_call>, ...) are
// matched in it, longest first, as Hugging Face and llama.cpp do; special tokens never are. Each
// stretch of text between them is encoded on its own. Returns 0 on out-of-memory.
static int run_encode_text(const LmTokenizer *t, const char *text, LmTokens *out) {
    size_t len = strlen(text), start = 0;
    for (size_t i = 0; t->n_user > 0 && i < len;) {
        int match = -1;
        for (int k = 0; k < t->n_user && match < 0; k++) {
            int id = t->user[k];
            if ((size_t)t->vocab_len[id] <= len - i && memcmp(text + i, t->vocab[id], (size_t)t->vocab_len[id]) == 0) match = id;
        }
        if (match < 0) { i++; continue; }
        if ((i > start && !run_encode_plain(t, text + start, i - start, out)) || !run_tokens_push(out, match)) return 0;
        start = i += (size_t)t->vocab_len[match];
    }
    return start == len || run_encode_plain(t, text + start, len - start, out);
}

int lm_encode(LmTokenizer *t, const char *text, int bos, int eos, int *tokens, int max_tokens) {
    if (t == NULL || text == NULL || tokens == NULL || max_tokens < 0) return -1;
    LmTokens list = {NULL, 0, 0};
    int ok = (!bos || !t->add_bos || run_tokens_push(&list, t->bos_id)) && run_encode_text(t, text, &list) &&
             (!eos || t->eos_id < 0 || run_tokens_push(&list, t->eos_id));
    int count = ok && list.n <= max_tokens ? list.n : -1;
    if (count > 0) memcpy(tokens, list.ids, (size_t)count * sizeof(int));
    free(list.ids);
    return count;
}

// Does token end a sequence (generate) or an assistant turn (chat)?
static int run_is_end_token(const LmTokenizer *t, int token) {
    if (token == t->eos_id || token == t->bos_id) return 1; // a new sequence starts at BOS (llama2.c)
    for (int i = 0; i < t->n_eot; i++) if (token == t->eot[i]) return 1;
    return 0;
}

// ----------------------------------------------------------------------------
// Chat templates: each turn is built as token ids, special tokens inserted by id and the text
// around them encoded as plain text, so a user can never type a special token.

// A render in progress: text is held until the next special token (or the end), then encoded as one
// piece, as a Jinja render is tokenized (the text between two special tokens is one piece: it matters
// to SentencePiece's dummy prefix and to BPE across the seams). ok drops to 0 on out-of-memory or a
// special token the vocabulary lacks.
typedef struct {
    const LmTokenizer *t;
    LmTokens *out;
    char *text;
    size_t n, cap;
    int ok;
} LmRender;

static void run_render_bytes(LmRender *r, const char *s, size_t len) {
    if (r->n + len + 1 > r->cap) {
        size_t cap = (r->n + len + 1) * 2;
        char *grown = (char *)realloc(r->text, cap);
        if (grown == NULL) { r->ok = 0; return; }
        r->text = grown;
        r->cap = cap;
    }
    memcpy(r->text + r->n, s, len);
    r->n += len;
}

static void run_render_text(LmRender *r, const char *s) { run_render_bytes(r, s, strlen(s)); }

// s without its leading and trailing white space (Jinja's trim).
static void run_render_trimmed(LmRender *r, const char *s) {
    size_t start = 0, end = strlen(s);
    while (start < end && isspace((unsigned char)s[start])) start++;
    while (end > start && isspace((unsigned char)s[end - 1])) end--;
    run_render_bytes(r, s + start, end - start);
}

static void run_render_flush(LmRender *r) {
    if (r->n == 0 || !r->ok) return;
    r->text[r->n] = '\0';
    r->ok = run_encode_text(r->t, r->text, r->out);
    r->n = 0;
}

static void run_render_id(LmRender *r, int id) {
    run_render_flush(r);
    if (r->ok) r->ok = id >= 0 && run_tokens_push(r->out, id);
}

static void run_render_special(LmRender *r, const char *name) { run_render_id(r, run_token_lookup(r->t, name, strlen(name))); }

// Qwen3's reply as its template keeps it in the history: the text after the last </think>, without
// the newlines that lead it (s itself when it has no </think>).
static const char *run_without_thinking(const char *s) {
    for (const char *p = strstr(s, "</think>"); p; p = strstr(p + 1, "</think>")) s = p + 8;
    while (*s == '\n') s++;
    return s;
}

// The system prompt a template uses when the conversation gives none ("" for none).
static const char *run_default_system(LmChatTemplate kind) {
    return kind == LM_CHAT_QWEN25    ? "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
           : kind == LM_CHAT_SMOLLM2 ? "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
                                     : "";
}

// Renders one user turn and the start of the assistant's reply, the reply's opening text left pending
// (a history's reply joins it; lm_chat flushes it). The previous reply ended with its end-of-turn token
// (see run_turn_end_token). system may be NULL or "".
static void run_render_turn(LmRender *r, LmChatTemplate kind, int first, const char *system, const char *user) {
    const LmTokenizer *t = r->t;
    if (first && (system == NULL || system[0] == '\0')) system = run_default_system(kind);
    int sys = first && system && system[0];
    switch (kind) {
    case LM_CHAT_NONE:
    case LM_CHAT_N:
    case LM_CHAT_LLAMA2:
        if (t->bos_id >= 0) run_render_id(r, t->bos_id);
        run_render_text(r, "[INST] ");
        if (sys) { run_render_text(r, "<<SYS>>\n"); run_render_text(r, system); run_render_text(r, "\n<</SYS>>\n\n"); }
        run_render_text(r, user);
        run_render_text(r, " [/INST]");
        break;
    case LM_CHAT_MISTRAL: // no system role: the system prompt leads the first message
        if (first && t->bos_id >= 0) run_render_id(r, t->bos_id);
        run_render_text(r, "[INST] ");
        if (sys) { run_render_text(r, system); run_render_text(r, "\n\n"); }
        run_render_text(r, user);
        run_render_text(r, " [/INST]");
        break;
    case LM_CHAT_ZEPHYR: // its tags are text; each message ends with EOS
        if (first && t->bos_id >= 0) run_render_id(r, t->bos_id);
        if (sys) { run_render_text(r, "<|system|>\n"); run_render_text(r, system); run_render_id(r, t->eos_id); run_render_text(r, "\n"); }
        run_render_text(r, first ? "<|user|>\n" : "\n<|user|>\n");
        run_render_text(r, user);
        run_render_id(r, t->eos_id);
        run_render_text(r, "\n<|assistant|>\n");
        break;
    case LM_CHAT_LLAMA3:  // every message trimmed; a system block only when given
    case LM_CHAT_LLAMA31: // and the dates block, with or without a system prompt
        if (first && t->bos_id >= 0) run_render_id(r, t->bos_id);
        if ((first && kind == LM_CHAT_LLAMA31) || sys) {
            run_render_special(r, "<|start_header_id|>");
            run_render_text(r, "system");
            run_render_special(r, "<|end_header_id|>");
            run_render_text(r, kind == LM_CHAT_LLAMA31 ? "\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n" : "\n\n");
            run_render_trimmed(r, system ? system : "");
            run_render_special(r, "<|eot_id|>");
        }
        run_render_special(r, "<|start_header_id|>");
        run_render_text(r, "user");
        run_render_special(r, "<|end_header_id|>");
        run_render_text(r, "\n\n");
        run_render_trimmed(r, user);
        run_render_special(r, "<|eot_id|>");
        run_render_special(r, "<|start_header_id|>");
        run_render_text(r, "assistant");
        run_render_special(r, "<|end_header_id|>");
        run_render_text(r, "\n\n");
        break;
    case LM_CHAT_CHATML:
    case LM_CHAT_QWEN25:
    case LM_CHAT_SMOLLM2:
    case LM_CHAT_QWEN3: // with thinking off, the reply starts after an empty <think> block
        if (!first) run_render_text(r, "\n");
        if (sys) {
            run_render_special(r, "<|im_start|>");
            run_render_text(r, "system\n");
            run_render_text(r, system);
            run_render_special(r, "<|im_end|>");
            run_render_text(r, "\n");
        }
        run_render_special(r, "<|im_start|>");
        run_render_text(r, "user\n");
        run_render_text(r, user);
        run_render_special(r, "<|im_end|>");
        run_render_text(r, "\n");
        run_render_special(r, "<|im_start|>");
        run_render_text(r, kind == LM_CHAT_QWEN3 && t->thinking_off ? "assistant\n<think>\n\n</think>\n\n" : "assistant\n");
        break;
    case LM_CHAT_GEMMA: // messages trimmed; the system prompt (untrimmed) and a blank line lead the first message
        if (first && t->bos_id >= 0) run_render_id(r, t->bos_id);
        if (!first) run_render_text(r, "\n");
        run_render_special(r, "<start_of_turn>");
        run_render_text(r, "user\n");
        if (sys) { run_render_text(r, system); run_render_text(r, "\n\n"); }
        run_render_trimmed(r, user);
        run_render_special(r, "<end_of_turn>");
        run_render_text(r, "\n");
        run_render_special(r, "<start_of_turn>");
        run_render_text(r, "model\n");
        break;
    case LM_CHAT_PHI3: // each tag on a line of its own; a system block only when given
    case LM_CHAT_PHI4: // the same tags without the newlines
    {
        const char *nl = kind == LM_CHAT_PHI3 ? "\n" : "";
        if (!first) run_render_text(r, nl);
        if (sys) {
            run_render_special(r, "<|system|>");
            run_render_text(r, nl);
            run_render_text(r, system);
            run_render_special(r, "<|end|>");
            run_render_text(r, nl);
        }
        run_render_special(r, "<|user|>");
        run_render_text(r, nl);
        run_render_text(r, user);
        run_render_special(r, "<|end|>");
        run_render_text(r, nl);
        run_render_special(r, "<|assistant|>");
        run_render_text(r, nl);
        break;
    }
    }
}

// One turn as ids into out (the reply's opening text included). 0 when the vocabulary lacks a token
// the template needs, or on out-of-memory.
static int run_render_turn_ids(const LmTokenizer *t, LmChatTemplate kind, LmTokens *out, int first, const char *system, const char *user) {
    LmRender r = {.t = t, .out = out, .ok = 1};
    run_render_turn(&r, kind, first, system, user);
    run_render_flush(&r);
    free(r.text);
    return r.ok;
}

// The token that closes an assistant turn in the cache when the reply was cut short.
static int run_turn_end_token(const LmTokenizer *t, LmChatTemplate kind) {
    const char *name = kind == LM_CHAT_LLAMA3 || kind == LM_CHAT_LLAMA31 ? "<|eot_id|>"
                       : kind == LM_CHAT_CHATML || kind == LM_CHAT_QWEN25 || kind == LM_CHAT_SMOLLM2 || kind == LM_CHAT_QWEN3 ? "<|im_end|>"
                       : kind == LM_CHAT_GEMMA ? "<end_of_turn>"
                       : kind == LM_CHAT_PHI3 || kind == LM_CHAT_PHI4 ? "<|end|>" : NULL;
    int id = name ? run_token_lookup(t, name, strlen(name)) : -1;
    return id >= 0 ? id : t->eos_id;
}

// The template kind that renders a Jinja chat template (tokenizer.chat_template), recognised by what
// each family's official template writes; LM_CHAT_NONE (Llama 2's, with a note) when none does.
static LmChatTemplate run_template_of_jinja(const char *jinja, size_t n) {
    char *s = (char *)malloc(n + 1);
    if (s == NULL) return LM_CHAT_NONE;
    memcpy(s, jinja, n);
    s[n] = '\0';
    LmChatTemplate kind = strstr(s, "<|start_header_id|>") ? (strstr(s, "Cutting Knowledge Date") ? LM_CHAT_LLAMA31 : LM_CHAT_LLAMA3)
                          : strstr(s, "<|im_start|>") ? (strstr(s, "<think>") ? LM_CHAT_QWEN3
                                                         : strstr(s, "You are Qwen, created by Alibaba Cloud") ? LM_CHAT_QWEN25
                                                         : strstr(s, "named SmolLM") ? LM_CHAT_SMOLLM2 : LM_CHAT_CHATML)
                          : strstr(s, "<start_of_turn>") ? LM_CHAT_GEMMA
                          : strstr(s, "<|user|>") && strstr(s, "<|assistant|>") && strstr(s, "<|end|>")
                              ? (strstr(s, "'<|' + message['role'] + '|>'") ? LM_CHAT_PHI4 : LM_CHAT_PHI3)
                          : strstr(s, "<|user|>") && strstr(s, "<|assistant|>") ? LM_CHAT_ZEPHYR
                          : strstr(s, "[INST]") ? (strstr(s, "<<SYS>>") ? LM_CHAT_LLAMA2 : LM_CHAT_MISTRAL)
                          : LM_CHAT_NONE;
    free(s);
    return kind;
}

int lm_render_chat(LmTokenizer *t, const LmMessage *messages, int n, int continuing, int *tokens, int max_tokens) {
    if (t == NULL || (messages == NULL && n > 0) || n < 0 || tokens == NULL || max_tokens < 0) return -1;
    LmChatTemplate kind = run_chat_template_of(t);
    LmTokens out = {NULL, 0, 0};
    LmRender r = {.t = t, .out = &out, .ok = 1};
    const char *system = NULL;
    int i = 0, first = !continuing, want_user = 1;
    if (n > 0 && messages[0].role && strcmp(messages[0].role, "system") == 0) {
        system = messages[0].content;
        r.ok = !continuing && system;
        i = 1;
    }
    for (; r.ok && i < n; i++) {
        const char *role = messages[i].role, *content = messages[i].content;
        if (role == NULL || content == NULL) { r.ok = 0; break; }
        if (want_user && strcmp(role, "user") == 0) {
            int thinking_off = t->thinking_off; // (Qwen3's empty <think> block opens only the reply to come)
            if (i < n - 1) t->thinking_off = 0;
            run_render_turn(&r, kind, first, system, content);
            t->thinking_off = thinking_off;
            first = 0;
        } else if (!want_user && strcmp(role, "assistant") == 0) { // the reply, in one piece with its opening text
            if (kind == LM_CHAT_QWEN3) content = run_without_thinking(content); // (as its template keeps earlier replies)
            if (kind == LM_CHAT_LLAMA2 || kind == LM_CHAT_MISTRAL || kind == LM_CHAT_NONE) run_render_text(&r, " ");
            if (kind == LM_CHAT_LLAMA3 || kind == LM_CHAT_LLAMA31 || kind == LM_CHAT_GEMMA) run_render_trimmed(&r, content); // (their templates trim)
            else run_render_text(&r, content);
            if (kind == LM_CHAT_LLAMA2 || kind == LM_CHAT_NONE) run_render_text(&r, " ");
            run_render_id(&r, run_turn_end_token(t, kind));
        } else {
            r.ok = 0;
        }
        want_user = !want_user;
    }
    run_render_flush(&r);
    free(r.text);
    int count = r.ok && !want_user && out.n <= max_tokens ? out.n : -1; // (it ends with a user message)
    if (count > 0) memcpy(tokens, out.ids, (size_t)count * sizeof(int));
    free(out.ids);
    return count;
}

// ----------------------------------------------------------------------------
// Sampler: temperature, top-p and seed, with llama2.c's algorithms and random number generator

typedef struct { float prob; int index; } LmProbIndex;

struct LmSampler {
    int vocab_size;
    float temperature;
    float topp;
    unsigned long long rng_state;
    LmProbIndex *probindex; // (vocab_size) scratch for top-p and top-k
    int top_k;              // 0 = off
    float min_p;            // 0 = off
    float repeat_penalty;   // 1 = off
    int repeat_last_n;      // the penalty's window of accepted tokens
    int *recent;            // (repeat_last_n) a ring of the last accepted tokens
    int n_recent, next_recent;
    unsigned char *seen;    // (vocab_size) scratch: a token penalized once however often it repeats
};

LmSampler *lm_sampler_new(int vocab_size, float temperature, float topp, unsigned long long seed) {
    if (vocab_size <= 0 || !(temperature >= 0.0f) || isinf(temperature) || !(topp >= 0.0f && topp <= 1.0f))
        return NULL;
    LmSampler *s = (LmSampler *)calloc(1, sizeof *s);
    if (s == NULL) return NULL;
    s->probindex = (LmProbIndex *)malloc((size_t)vocab_size * sizeof(LmProbIndex));
    if (s->probindex == NULL) { free(s); return NULL; }
    s->vocab_size = vocab_size;
    s->temperature = temperature;
    s->topp = topp;
    s->rng_state = seed;
    return s;
}

void lm_sampler_free(LmSampler *s) {
    if (s == NULL) return;
    free(s->probindex);
    free(s->recent);
    free(s->seen);
    free(s);
}

int lm_sampler_configure(LmSampler *s, int top_k, float min_p, float repeat_penalty, int repeat_last_n) {
    if (s == NULL || top_k < 0 || !(min_p >= 0.0f && min_p <= 1.0f) || !(repeat_penalty > 0.0f) || isinf(repeat_penalty) ||
        repeat_last_n < 0 || repeat_last_n > (1 << 20))
        return -1;
    int *recent = repeat_last_n ? (int *)calloc((size_t)repeat_last_n, sizeof(int)) : NULL;
    unsigned char *seen = (unsigned char *)calloc((size_t)s->vocab_size, 1);
    if ((repeat_last_n && !recent) || !seen) { free(recent); free(seen); return -1; }
    free(s->recent);
    free(s->seen);
    s->recent = recent;
    s->seen = seen;
    s->top_k = top_k;
    s->min_p = min_p;
    s->repeat_penalty = repeat_penalty;
    s->repeat_last_n = repeat_last_n;
    s->n_recent = s->next_recent = 0;
    return 0;
}

void lm_sampler_accept(LmSampler *s, int token) {
    if (s == NULL || s->repeat_last_n == 0 || token < 0 || token >= s->vocab_size) return;
    s->recent[s->next_recent] = token;
    s->next_recent = (s->next_recent + 1) % s->repeat_last_n;
    if (s->n_recent < s->repeat_last_n) s->n_recent++;
}

// Keeps the top_k most probable of p (n, normalized); the rest become 0. A min-heap of the k best.
static void run_keep_top_k(float *p, int n, int top_k, LmProbIndex *heap) {
    int size = 0;
    for (int i = 0; i < n; i++) {
        if (size < top_k) { // sift up
            int j = size++;
            while (j > 0 && heap[(j - 1) / 2].prob > p[i]) { heap[j] = heap[(j - 1) / 2]; j = (j - 1) / 2; }
            heap[j] = (LmProbIndex){p[i], i};
        } else if (p[i] > heap[0].prob) { // replace the smallest, sift down
            int j = 0;
            for (;;) {
                int c = 2 * j + 1;
                if (c >= size) break;
                if (c + 1 < size && heap[c + 1].prob < heap[c].prob) c++;
                if (heap[c].prob >= p[i]) break;
                heap[j] = heap[c];
                j = c;
            }
            heap[j] = (LmProbIndex){p[i], i};
        }
    }
    float threshold = heap[0].prob;
    for (int i = 0; i < n; i++) if (p[i] < threshold) p[i] = 0.0f;
}

static unsigned int run_random_u32(unsigned long long *state) { // xorshift* (llama2.c's)
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    return (unsigned int)((*state * 0x2545F4914F6CDD1Dull) >> 32);
}

static float run_random_f32(unsigned long long *state) { // in [0, 1)
    return (float)(run_random_u32(state) >> 8) / 16777216.0f;
}

static int run_sample_argmax(const float *p, int n) {
    int best = 0;
    for (int i = 1; i < n; i++) if (p[i] > p[best]) best = i;
    return best;
}

static int run_sample_mult(const float *p, int n, float coin) {
    float cdf = 0.0f;
    for (int i = 0; i < n; i++) { cdf += p[i]; if (coin < cdf) return i; }
    return n - 1; // rounding errors
}

static int run_compare_prob_desc(const void *a, const void *b) {
    const LmProbIndex *x = (const LmProbIndex *)a, *y = (const LmProbIndex *)b;
    return (x->prob < y->prob) - (x->prob > y->prob);
}

// Top-p (nucleus) sampling: from the smallest set of most likely tokens whose probability exceeds
// topp. Tokens below (1 - topp) / (n - 1) cannot be in that set and are dropped before sorting.
static int run_sample_topp(const float *p, int n, float topp, LmProbIndex *probindex, float coin) {
    int n0 = 0;
    const float cutoff = (1.0f - topp) / (float)(n - 1);
    for (int i = 0; i < n; i++) if (p[i] >= cutoff) probindex[n0++] = (LmProbIndex){p[i], i};
    if (n0 == 0) return run_sample_argmax(p, n);
    qsort(probindex, (size_t)n0, sizeof(LmProbIndex), run_compare_prob_desc);
    float cumulative = 0.0f;
    int last = n0 - 1;
    for (int i = 0; i < n0; i++) {
        cumulative += probindex[i].prob;
        if (cumulative > topp) { last = i; break; }
    }
    float r = coin * cumulative;
    float cdf = 0.0f;
    for (int i = 0; i <= last; i++) { cdf += probindex[i].prob; if (r < cdf) return probindex[i].index; }
    return probindex[last].index;
}

int lm_sample(LmSampler *s, float *logits) {
    if (s == NULL || logits == NULL) return -1;
    int n = s->vocab_size;
    if (s->repeat_penalty != 1.0f) {
        for (int i = 0; i < s->n_recent; i++) {
            int tok = s->recent[i];
            if (s->seen[tok]) continue;
            s->seen[tok] = 1;
            logits[tok] = logits[tok] > 0.0f ? logits[tok] / s->repeat_penalty : logits[tok] * s->repeat_penalty;
        }
        for (int i = 0; i < s->n_recent; i++) s->seen[s->recent[i]] = 0;
    }
    if (s->temperature == 0.0f) return run_sample_argmax(logits, n);
    for (int i = 0; i < n; i++) logits[i] /= s->temperature;
    run_softmax(logits, n);
    if ((s->top_k > 0 && s->top_k < n) || s->min_p > 0.0f) {
        if (s->top_k > 0 && s->top_k < n) run_keep_top_k(logits, n, s->top_k, s->probindex);
        if (s->min_p > 0.0f) {
            float threshold = s->min_p * logits[run_sample_argmax(logits, n)];
            for (int i = 0; i < n; i++) if (logits[i] < threshold) logits[i] = 0.0f;
        }
        float sum = 0.0f;
        for (int i = 0; i < n; i++) sum += logits[i];
        for (int i = 0; i < n; i++) logits[i] /= sum;
    }
    float coin = run_random_f32(&s->rng_state);
    if (s->topp <= 0.0f || s->topp >= 1.0f || n < 2) return run_sample_mult(logits, n, coin);
    return run_sample_topp(logits, n, s->topp, s->probindex, coin);
}

// ----------------------------------------------------------------------------
// Generation and chat

static double run_now_seconds(void) {
    struct timespec ts;
    timespec_get(&ts, TIME_UTC);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

// Passes decoded pieces on in whole UTF-8 characters: a piece that ends inside a character (a
// byte-level or byte-fallback token) is held back until the rest arrives. buf (cap bytes) is the
// scratch for one piece and what was held back, allocated once per call of generate.
typedef struct { char pending[4]; int n; LmEmitFn emit; void *user; char *buf; size_t cap; } LmUtf8Stream;

// Returns emit's result (non-zero: stop). flush passes on whatever is held back.
static int run_stream_piece(LmUtf8Stream *st, const char *piece, int flush) {
    size_t len = strlen(piece), total = (size_t)st->n + len;
    if (total + 1 > st->cap) { // (a piece longer than every token: only from a caller's own text)
        char *grown = (char *)realloc(st->buf, total + 1);
        if (grown == NULL) return 1;
        st->buf = grown;
        st->cap = total + 1;
    }
    char *buf = st->buf;
    memcpy(buf, st->pending, (size_t)st->n);
    memcpy(buf + st->n, piece, len + 1);
    size_t cut = total;
    for (size_t back = 1; !flush && back <= 3 && back <= total; back++) {
        unsigned char c = (unsigned char)buf[total - back];
        if ((c & 0xC0) == 0x80) continue; // a continuation byte: look further back
        size_t need = (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
        if (need > back) cut = total - back; // the character is incomplete: hold it back
        break;
    }
    st->n = (int)(total - cut);
    memcpy(st->pending, buf + cut, (size_t)st->n);
    buf[cut] = '\0';
    return cut > 0 && st->emit ? st->emit(buf, st->user) : 0;
}

// Does the generated text's tail (seen, n bytes) contain one of the stop strings?
static int run_hit_stop(const char *seen, size_t n, const char *const *stops, int n_stops) {
    for (int i = 0; i < n_stops; i++) {
        size_t len = strlen(stops[i]);
        for (size_t k = 0; len > 0 && k + len <= n; k++)
            if (memcmp(seen + k, stops[i], len) == 0) return 1;
    }
    return 0;
}

// Runs tokens[0..n) (checked by the caller) from position pos in forward blocks, checking
// *interrupted before each block and reporting progress after it (done = -1 when it stops early).
// Returns the last token's logits, or NULL when interrupted before the end; *done counts the
// positions run either way.
static float *run_prefill(LmModel *m, const int *tokens, int n, int pos, const LmGenerateOptions *o, int *done) {
    for (*done = 0; *done < n;) {
        if (o->interrupted && *o->interrupted) {
            if (o->progress) o->progress(-1, n, o->user);
            return NULL;
        }
        int count = n - *done < m->state.block ? n - *done : m->state.block;
        run_forward_block(m, tokens + *done, count, pos + *done, *done + count == n);
        *done += count;
        if (o->progress) o->progress(*done, n, o->user);
    }
    return m->state.logits;
}

int lm_generate_tokens(LmModel *m, LmTokenizer *t, LmSampler *s, const int *prompt, int n_prompt, int pos,
                       const LmGenerateOptions *options, LmGenerateStats *stats, char *err, size_t errlen) {
    static const LmGenerateOptions defaults = {0};
    const LmGenerateOptions *o = options ? options : &defaults;
    LmGenerateStats local, *st = stats ? stats : &local;
    memset(st, 0, sizeof *st);
    st->last_token = -1;
    if (err && errlen) err[0] = '\0';
    int stops_ok = o->n_stops >= 0 && (o->n_stops == 0 || o->stops != NULL);
    for (int i = 0; stops_ok && i < o->n_stops; i++) stops_ok = o->stops[i] != NULL;
    if (!m || !t || !s || !prompt || n_prompt < 1 || pos < 0 || o->max_tokens < 0 || o->shift_keep < 0 || !stops_ok) {
        run_set_err(err, errlen, "generate: NULL or out-of-range arguments");
        return -1;
    }
    if (s->vocab_size != m->config.vocab_size) { // lm_sample reads the sampler's count of logits
        run_set_err(err, errlen, "generate: the sampler is for %d tokens, the model has %d", s->vocab_size, m->config.vocab_size);
        return -1;
    }
    int ctx = m->config.seq_len;
    if (pos > ctx - n_prompt) {
        if (pos == 0) run_set_err(err, errlen, "the prompt is %d tokens, longer than the context length %d", n_prompt, ctx);
        else run_set_err(err, errlen, "%d more tokens do not fit after %d of the context's %d positions", n_prompt, pos, ctx);
        return -1;
    }
    for (int i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || prompt[i] >= m->config.vocab_size) {
            run_set_err(err, errlen, "generate: token %d (at %d) is outside the vocabulary of %d", prompt[i], i, m->config.vocab_size);
            return -1;
        }
    size_t longest_stop = 0;
    for (int i = 0; i < o->n_stops; i++) if (strlen(o->stops[i]) > longest_stop) longest_stop = strlen(o->stops[i]);
    LmUtf8Stream stream = {.emit = o->emit, .user = o->user, .cap = (size_t)t->max_token_len + 8};
    stream.buf = (char *)malloc(stream.cap);
    char *seen = longest_stop ? (char *)malloc(longest_stop + (size_t)t->max_token_len + 8) : NULL; // the generated text's tail
    if (stream.buf == NULL || (longest_stop && seen == NULL)) {
        free(stream.buf);
        free(seen);
        run_set_err(err, errlen, "generate: out of memory");
        return -1;
    }

    double start = run_now_seconds();
    int done;
    float *logits = run_prefill(m, prompt, n_prompt, pos, o, &done);
    pos += done;
    st->prompt_tokens = done;
    double prompt_end = run_now_seconds();
    st->prompt_seconds = prompt_end - start;
    int stopped = logits == NULL;
    if (stopped) st->stop = LM_STOP_INTERRUPTED;
    for (int i = 0; i < done; i++) lm_sampler_accept(s, prompt[i]); // (the part run, if interrupted)
    for (int i = 0; o->echo_prompt && i < n_prompt && !stopped; i++) { // a leading BOS prints nothing
        if (i == 0 && prompt[0] == t->bos_id) continue;
        if (run_stream_piece(&stream, lm_decode(t, i ? prompt[i - 1] : -1, prompt[i]), 0)) { st->stop = LM_STOP_CALLER; stopped = 1; }
    }
    size_t n_seen = 0;
    for (int token = prompt[n_prompt - 1]; !stopped;) { // one token at a time
        int next = lm_sample(s, logits);
        st->last_token = next;
        lm_sampler_accept(s, next);
        if (run_is_end_token(t, next) && !o->ignore_eos) { st->stop = LM_STOP_END_TOKEN; break; } // BOS (llama2.c), EOS, end of turn
        const char *piece = lm_decode(t, token, next);
        st->generated++;
        if (run_stream_piece(&stream, piece, 0)) { st->stop = LM_STOP_CALLER; stopped = 1; break; }
        if (seen) { // keep the last longest_stop - 1 bytes, add this piece, and look for a stop string
            size_t len = strlen(piece), keep = n_seen < longest_stop - 1 ? n_seen : longest_stop - 1;
            memmove(seen, seen + n_seen - keep, keep);
            memcpy(seen + keep, piece, len);
            n_seen = keep + len;
            if (run_hit_stop(seen, n_seen, o->stops, o->n_stops)) { st->stop = LM_STOP_STRING; break; }
        }
        if (o->max_tokens > 0 && st->generated >= o->max_tokens) { st->stop = LM_STOP_MAX_TOKENS; break; }
        if (o->interrupted && *o->interrupted) { st->stop = LM_STOP_INTERRUPTED; break; }
        if (pos >= ctx) {
            if (!o->context_shift) { st->stop = LM_STOP_CONTEXT; break; }
            int keep = o->shift_keep < pos - 1 ? o->shift_keep : pos - 1;
            pos = lm_shift_context(m, pos, keep, (pos - keep + 1) / 2);
        }
        logits = lm_forward(m, next, pos++);
        assert(logits != NULL); // (next is a sampled id, pos inside the context)
        token = next;
    }
    if (!stopped) run_stream_piece(&stream, "", 1);
    st->generate_seconds = run_now_seconds() - prompt_end;
    free(stream.buf);
    free(seen);
    return pos;
}

int lm_generate(LmModel *m, LmTokenizer *t, LmSampler *s, const char *prompt, const LmGenerateOptions *options,
                LmGenerateStats *stats, char *err, size_t errlen) {
    if (!m || !t || !s) { run_set_err(err, errlen, "generate: NULL model, tokenizer or sampler"); return -1; }
    LmTokens ids = {NULL, 0, 0};
    if ((t->add_bos && !run_tokens_push(&ids, t->bos_id)) || !run_encode_text(t, prompt ? prompt : "", &ids)) {
        run_set_err(err, errlen, "out of memory encoding the prompt");
        free(ids.ids);
        return -1;
    }
    int pos = -1;
    if (ids.n == 0) run_set_err(err, errlen, "the prompt is empty and this vocabulary has no BOS token; give a prompt");
    else pos = lm_generate_tokens(m, t, s, ids.ids, ids.n, 0, options, stats, err, errlen);
    free(ids.ids);
    return pos;
}

// How a line of input ended.
typedef enum { RUN_LINE_EOF, RUN_LINE_NEWLINE, RUN_LINE_UNTERMINATED, RUN_LINE_INTERRUPTED } LmLineEnd;

// Reads one line of any length into *line (NULL at end of input, on an interrupt or out of memory),
// without its newline. A read cut short by a signal (EINTR: the CLI's Ctrl-C handler is installed
// without SA_RESTART) returns RUN_LINE_INTERRUPTED when *interrupted is set, and goes on otherwise.
static LmLineEnd run_read_line(FILE *in, volatile sig_atomic_t *interrupted, char **line) {
    size_t n = 0, cap = 128;
    char *buf = (char *)malloc(cap);
    *line = NULL;
    if (buf == NULL) return RUN_LINE_EOF;
    int ch;
    for (;;) {
        if (interrupted && *interrupted) { free(buf); return RUN_LINE_INTERRUPTED; } // (a press just before the read)
        errno = 0;
        ch = fgetc(in);
        if (ch == EOF && ferror(in) && errno == EINTR) {
            clearerr(in);
            if (interrupted && *interrupted) { free(buf); return RUN_LINE_INTERRUPTED; }
            continue;
        }
        if (ch == EOF || ch == '\n') break;
        if (n + 1 == cap) {
            char *grown = (char *)realloc(buf, cap *= 2);
            if (grown == NULL) { free(buf); return RUN_LINE_EOF; }
            buf = grown;
        }
        buf[n++] = (char)ch;
    }
    if (ch == EOF && n == 0) { free(buf); return RUN_LINE_EOF; }
    if (n > 0 && buf[n - 1] == '\r') n--;
    buf[n] = '\0';
    *line = buf;
    return ch == EOF ? RUN_LINE_UNTERMINATED : RUN_LINE_NEWLINE;
}

// Reads a chat message: a line, continued on the next line while it ends with a backslash (which
// becomes a newline). How the last line ended is returned; *msg is NULL unless a message was read.
static LmLineEnd run_read_message(FILE *in, volatile sig_atomic_t *interrupted, char **msg) {
    LmLineEnd end = run_read_line(in, interrupted, msg);
    size_t n = *msg ? strlen(*msg) : 0;
    while (end == RUN_LINE_NEWLINE && n > 0 && (*msg)[n - 1] == '\\') {
        char *more;
        end = run_read_line(in, interrupted, &more);
        if (end == RUN_LINE_INTERRUPTED) { free(*msg); *msg = NULL; return end; }
        (*msg)[n - 1] = '\n';
        if (more == NULL) { (*msg)[n - 1] = '\0'; return RUN_LINE_UNTERMINATED; }
        size_t m = strlen(more);
        char *joined = (char *)realloc(*msg, n + m + 1);
        if (joined == NULL) { free(more); break; }
        *msg = joined;
        memcpy(*msg + n, more, m + 1);
        n += m;
        free(more);
    }
    return end;
}

int fileno(FILE *stream); // (POSIX's; declared here too for hosts that include stdio.h first in a strict ISO mode)

static int run_is_terminal(FILE *f) { return isatty(fileno(f)); }

static int run_is_blank(const char *s) {
    while (*s && isspace((unsigned char)*s)) s++;
    return *s == '\0';
}

// What lm_chat's callbacks for one reply need: the output, whether "Assistant: " has been printed,
// the caller's progress callback, the reply's text so far, and (hiding Qwen3's thinking) where the
// reply is: in its <think> part, or just past it (its leading newlines are not printed either).
typedef struct {
    FILE *out;
    int started;
    LmProgressFn progress;
    void *user;
    LmTokens text;       // the reply's bytes (as token-sized pieces of chars; NUL-terminated)
    int hide_thinking, thinking, after_thinking;
} LmChatOutput;

static void run_chat_progress(int done, int total, void *user) {
    LmChatOutput *co = (LmChatOutput *)user;
    co->progress(done, total, co->user);
}

static int run_emit_reply(const char *piece, void *user) {
    LmChatOutput *co = (LmChatOutput *)user;
    for (const char *p = piece; *p; p++) // (kept as ints: LmTokens is the growable array at hand)
        if (!run_tokens_push(&co->text, (unsigned char)*p)) return 1;
    if (!co->started) { fputs("Assistant: ", co->out); co->started = 1; }
    if (co->hide_thinking) {
        if (strstr(piece, "<think>")) co->thinking = 1;
        if (co->thinking) {
            const char *close = strstr(piece, "</think>");
            if (close == NULL) return 0;
            co->thinking = 0;
            co->after_thinking = 1;
            piece = close + 8;
        }
        if (co->after_thinking) {
            while (*piece == '\n') piece++;
            if (*piece == '\0') return 0;
            co->after_thinking = 0;
        }
    }
    fputs(piece, co->out);
    fflush(co->out);
    return 0;
}

// Qwen3's template keeps earlier replies without their thinking, and without the empty <think> block
// that thinking off puts in the prompt: the reply whose prompt ended at reply_pos and which fills the
// cache up to *pos is fed again from "assistant\n" on as the next turn will see it (nothing changes
// when it had no thinking). 0 on out-of-memory.
static int run_rewrite_reply(LmModel *m, LmTokenizer *t, const LmTokens *text, int reply_pos, int *pos) {
    char *reply = (char *)malloc((size_t)text->n + 1);
    if (reply == NULL) return 0;
    for (int i = 0; i < text->n; i++) reply[i] = (char)text->ids[i];
    reply[text->n] = '\0';
    LmTokens ids = {NULL, 0, 0}, block = {NULL, 0, 0};
    // (the empty block is encoded apart from "assistant\n": <think> is matched in text before BPE)
    int ok = (!t->thinking_off || run_encode_text(t, "<think>\n\n</think>\n\n", &block)) &&
             run_encode_text(t, run_without_thinking(reply), &ids) && run_tokens_push(&ids, run_turn_end_token(t, LM_CHAT_QWEN3));
    int start = reply_pos - block.n;
    if (ok && (strstr(reply, "</think>") || t->thinking_off) && start + ids.n <= m->config.seq_len) {
        lm_forward_batch(m, ids.ids, ids.n, start);
        *pos = start + ids.n;
    }
    free(reply);
    free(ids.ids);
    free(block.ids);
    return ok;
}

static const char run_chat_help[] =
    "Commands: /help, /reset (a new conversation), /system TEXT (a new system prompt and conversation), /exit.\n"
    "End a line with \\ to go on to the next. Ctrl-C stops a reply; Ctrl-D, or Ctrl-C at the prompt, ends the chat.\n";

int lm_chat(LmModel *m, LmTokenizer *t, LmSampler *s, const LmChatOptions *o, char *err, size_t errlen) {
    if (!m || !t || !s || !o || !o->in || !o->out || o->max_reply < 0) { run_set_err(err, errlen, "chat: NULL or out-of-range arguments"); return -1; }
    FILE *in = o->in, *out = o->out;
    volatile sig_atomic_t *interrupted = o->interrupted;
    int ctx = m->config.seq_len, pos = 0, rc = 0;
    LmChatTemplate kind = run_chat_template_of(t);
    LmTokens prompt = {NULL, 0, 0};
    if (!run_render_turn_ids(t, kind, &prompt, 1, "x", "x")) { // the template's special tokens exist?
        free(prompt.ids);
        run_set_err(err, errlen, "chat: the vocabulary lacks a token of the %s chat template", run_chat_template_names[kind]);
        return -1;
    }
    if (o->banner)
        fprintf(out, "[chat, %s template: /help lists the commands; Ctrl-C stops a reply; Ctrl-D or /exit ends]\n",
                run_chat_template_names[kind]);
    const char *system_prompt = o->system_prompt;
    char *system_owned = NULL;
    if (interrupted) *interrupted = 0;
    if (system_prompt == NULL) {
        fputs("Enter system prompt (optional): ", out);
        fflush(out);
        if (run_read_line(in, interrupted, &system_owned) != RUN_LINE_NEWLINE) { // end of input or Ctrl-C
            fputc('\n', out);
            free(system_owned);
            free(prompt.ids);
            return 0;
        }
        system_prompt = system_owned;
    }
    LmTokens starts = {NULL, 0, 0}; // the position where each turn kept in the cache begins
    int reply_room = o->max_reply > 0 && o->max_reply < ctx / 4 ? o->max_reply : ctx / 4;
    if (reply_room < 2) reply_room = 2; // (a reply of at least one token, and its end of turn)
    for (int turn = 0, first = 1;; turn++) { // first: the next turn opens the conversation
        char *user = NULL;
        if (turn == 0 && o->first_message) {
            user = (char *)malloc(strlen(o->first_message) + 1);
            if (user) strcpy(user, o->first_message);
        } else {
            if (interrupted) *interrupted = 0; // a press from now on is meant for this prompt
            fputs("User: ", out);
            fflush(out);
            LmLineEnd end = run_read_message(in, interrupted, &user);
            if (user == NULL) { fputc('\n', out); break; } // end of input, or Ctrl-C at the prompt
            if (end == RUN_LINE_UNTERMINATED && run_is_terminal(in)) fputc('\n', out); // Ctrl-D mid-line: end the line
            if (run_is_blank(user)) { free(user); continue; }
            int is_system = strncmp(user, "/system", 7) == 0 && (user[7] == ' ' || user[7] == '\0');
            if (strcmp(user, "/exit") == 0) { free(user); break; }
            if (strcmp(user, "/help") == 0) { fputs(run_chat_help, out); free(user); continue; }
            if (strcmp(user, "/reset") == 0 || is_system) {
                if (is_system) {
                    free(system_owned);
                    system_prompt = system_owned = user;
                    memmove(user, user + 7 + (user[7] == ' '), strlen(user + 7 + (user[7] == ' ')) + 1);
                } else {
                    free(user);
                }
                pos = 0;
                starts.n = 0;
                first = 1;
                fprintf(out, is_system ? "[system prompt set; a new conversation]\n" : "[a new conversation]\n");
                continue;
            }
        }
        prompt.n = 0;
        int ok = user && run_render_turn_ids(t, kind, &prompt, first, system_prompt, user);
        free(user);
        if (!ok) {
            run_set_err(err, errlen, "chat: out of memory");
            rc = -1;
            break;
        }
        if (pos + prompt.n + reply_room > ctx) { // offer to drop the oldest turns after the first
            int drop = 1;
            while (drop + 1 < starts.n && pos - (starts.ids[drop + 1] - starts.ids[1]) + prompt.n + reply_room > ctx) drop++;
            int freed = drop < starts.n ? (drop + 1 < starts.n ? starts.ids[drop + 1] : pos) - starts.ids[1] : 0;
            if (starts.n < 2 || pos - freed + prompt.n + reply_room > ctx) { // nothing to drop would make room
                fprintf(out, "[the message is %d tokens; with %d of the context's %d in use it does not fit: not sent "
                             "(/reset starts a new conversation)]\n", prompt.n, pos, ctx);
                continue;
            }
            fprintf(out, "\n[context full: %d of %d tokens used] Drop the %d oldest turn%s and continue? [y/N] ", pos, ctx, drop,
                    drop > 1 ? "s" : "");
            fflush(out);
            char *answer = NULL;
            run_read_line(in, interrupted, &answer);
            int yes = answer && (answer[0] == 'y' || answer[0] == 'Y');
            free(answer);
            if (!yes) { fputc('\n', out); break; }
            pos = lm_shift_context(m, pos, starts.ids[1], freed);
            for (int i = 1; i + drop < starts.n; i++) starts.ids[i] = starts.ids[i + drop] - freed;
            starts.n -= drop;
        }
        if (o->show_prompt) o->show_prompt(prompt.ids, prompt.n, o->user);
        // the reply stops where its last token and the end of turn still fit in the context
        int room = ctx - pos - prompt.n - 1;
        LmChatOutput co = {.out = out, .progress = o->progress, .user = o->user, .hide_thinking = o->hide_thinking};
        LmGenerateOptions g = {.max_tokens = o->max_reply > 0 && o->max_reply < room ? o->max_reply : room, .emit = run_emit_reply,
                               .user = &co, .progress = o->progress ? run_chat_progress : NULL, .interrupted = interrupted};
        LmGenerateStats st;
        int turn_start = pos;
        int end = lm_generate_tokens(m, t, s, prompt.ids, prompt.n, pos, &g, &st, err, errlen);
        if (end < 0) { rc = -1; break; }
        if (st.stop == LM_STOP_INTERRUPTED && st.prompt_tokens < prompt.n) { // stopped while reading the message
            fputs("[stopped before the reply: the message was dropped]\n", out);
            pos = turn_start; // the positions it filled are overwritten by the next turn
            continue;
        }
        if (!run_tokens_push(&starts, turn_start)) { run_set_err(err, errlen, "chat: out of memory"); rc = -1; break; }
        first = 0;
        pos = end;
        if (!co.started) fputs("Assistant: ", out);
        // the cache gets the whole reply as printed, then the turn's end: the model's own end token,
        // or the template's when the reply was cut
        if (st.stop != LM_STOP_END_TOKEN && st.generated > 0 && pos < ctx) lm_forward(m, st.last_token, pos++);
        if (pos < ctx) lm_forward(m, st.stop == LM_STOP_END_TOKEN ? st.last_token : run_turn_end_token(t, kind), pos++);
        if (kind == LM_CHAT_QWEN3 && !run_rewrite_reply(m, t, &co.text, turn_start + prompt.n, &pos)) {
            run_set_err(err, errlen, "chat: out of memory");
            free(co.text.ids);
            rc = -1;
            break;
        }
        free(co.text.ids);
        fputc('\n', out);
        if (st.stop == LM_STOP_MAX_TOKENS && g.max_tokens == o->max_reply)
            fprintf(out, "[the reply reached its limit of %d tokens]\n", o->max_reply);
        else if (st.stop == LM_STOP_MAX_TOKENS)
            fprintf(out, "[context full: the reply was cut at %d tokens]\n", st.generated);
        fflush(out);
    }
    free(prompt.ids);
    free(starts.ids);
    free(system_owned);
    return rc < 0 ? -1 : pos;
}

// ----------------------------------------------------------------------------
// Command line: a program like any other embedding, using only the lm_ API above

#ifndef RUN_LIBRARY

// Parses a whole string as a finite float; 0 on junk.
static int run_parse_float(const char *s, float *out) {
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (end == s || *end != '\0' || errno != 0 || !isfinite(v)) return 0;
    *out = v;
    return 1;
}

// Parses a whole string as an integer in 0..max: 1, or 0 on junk, or -1 when it is too large.
static int run_parse_count(const char *s, unsigned long long max, unsigned long long *out) {
    char *end;
    if (!isdigit((unsigned char)s[0])) return 0;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end != '\0') return 0;
    if (errno == ERANGE || v > max) return -1;
    *out = v;
    return 1;
}

static int run_bad_flag(const char *flag, const char *value, const char *expected) {
    fprintf(stderr, "run: invalid value '%s' for %s (expected %s)\n", value, flag, expected);
    return 1;
}

// A count flag's value into *out; 0, or 1 after one line about what is wrong.
static int run_count_flag(const char *flag, const char *value, unsigned long long max, unsigned long long *out, const char *expected) {
    int got = run_parse_count(value, max, out);
    if (got > 0) return 0;
    if (got < 0) { fprintf(stderr, "run: %s %s is too large (at most %llu)\n", flag, value, max); return 1; }
    return run_bad_flag(flag, value, expected);
}

// The command line's settings.
typedef struct {
    const char *checkpoint, *tokenizer_path, *prompt, *prompt_file, *mode, *system_prompt, *template_name, *think, *kernels, *cache_type;
    float temperature, topp, min_p, repeat_penalty;
    unsigned long long seed, steps, threads, top_k, repeat_last_n, shift_keep, context;
    int steps_given, shift, ignore_eos, info, quiet, verbose_prompt, exact, no_mmap, context_given;
    const char *stops[16];    // -r, repeatable
    int n_stops;
} LmOptions;

// The flags: each one's name, a llama.cpp-style long alias (or NULL), and whether a value follows.
typedef struct { const char *name, *alias; int takes_value; } LmFlag;
static const LmFlag run_flags[] = {
    {"-t", "--temp", 1}, {"-p", "--top-p", 1}, {"-k", "--top-k", 1}, {"--min-p", NULL, 1}, {"--repeat-penalty", NULL, 1},
    {"--repeat-last-n", NULL, 1}, {"-s", "--seed", 1}, {"-n", "--n-predict", 1}, {"-i", "--prompt", 1}, {"-f", "--file", 1},
    {"-r", NULL, 1}, {"-z", NULL, 1}, {"-m", NULL, 1}, {"-y", "--system-prompt", 1}, {"-T", "--threads", 1},
    {"--context-shift", NULL, 1}, {"--template", NULL, 1}, {"--ignore-eos", NULL, 0}, {"--info", NULL, 0},
    {"--quiet", NULL, 0}, {"--verbose-prompt", NULL, 0}, {"--exact", NULL, 0}, {"--think", NULL, 1},
    {"--kernels", NULL, 1}, {"--no-mmap", NULL, 0}, {"-c", "--ctx-size", 1}, {"--cache-type", NULL, 1},
};

static const LmFlag *run_find_flag(const char *arg) {
    for (size_t k = 0; k < sizeof run_flags / sizeof run_flags[0]; k++)
        if (strcmp(arg, run_flags[k].name) == 0 || (run_flags[k].alias && strcmp(arg, run_flags[k].alias) == 0)) return &run_flags[k];
    return NULL;
}

// Parses argv into o. Returns 0, or 1 after printing one line about the bad argument on stderr.
static int run_parse_options(int argc, char **argv, LmOptions *o) {
    *o = (LmOptions){.mode = "generate", .temperature = 1.0f, .topp = 0.9f, .repeat_penalty = 1.0f, .steps = 256, .repeat_last_n = 64};
    if (argc < 2 || argv[1][0] == '-') {
        fprintf(stderr, "run: missing checkpoint (usage: run <checkpoint> [options]; run -h for help)\n");
        return 1;
    }
    o->checkpoint = argv[1];
    for (int i = 2; i < argc; i++) {
        const char *typed = argv[i];
        const LmFlag *f = run_find_flag(typed);
        if (f == NULL) {
            if (typed[0] != '-') fprintf(stderr, "run: unexpected argument '%s' (the prompt is given with -i TEXT; run -h for help)\n", typed);
            else fprintf(stderr, "run: unknown option '%s' (run -h for help)\n", typed);
            return 1;
        }
        const char *flag = f->name;
        if (!f->takes_value) {
            if (strcmp(flag, "--ignore-eos") == 0) o->ignore_eos = 1;
            else if (strcmp(flag, "--info") == 0) o->info = 1;
            else if (strcmp(flag, "--quiet") == 0) o->quiet = 1;
            else if (strcmp(flag, "--exact") == 0) o->exact = 1;
            else if (strcmp(flag, "--no-mmap") == 0) o->no_mmap = 1;
            else o->verbose_prompt = 1;
            continue;
        }
        if (i + 1 >= argc) { fprintf(stderr, "run: option %s needs a value\n", typed); return 1; }
        const char *val = argv[++i];
        if (strcmp(flag, "-t") == 0) {
            if (!run_parse_float(val, &o->temperature) || o->temperature < 0.0f) return run_bad_flag(typed, val, "a number >= 0");
        } else if (strcmp(flag, "-p") == 0) {
            if (!run_parse_float(val, &o->topp))
                return run_bad_flag(typed, val, "a number in [0,1], the top-p threshold; the prompt is given with -i");
            if (o->topp < 0.0f || o->topp > 1.0f) return run_bad_flag(typed, val, "a number in [0,1]");
        } else if (strcmp(flag, "-k") == 0) {
            if (run_count_flag(typed, val, 0x7fffffff, &o->top_k, "a non-negative integer (0 = off)")) return 1;
        } else if (strcmp(flag, "--min-p") == 0) {
            if (!run_parse_float(val, &o->min_p) || o->min_p < 0.0f || o->min_p > 1.0f) return run_bad_flag(typed, val, "a number in [0,1]");
        } else if (strcmp(flag, "--repeat-penalty") == 0) {
            if (!run_parse_float(val, &o->repeat_penalty) || o->repeat_penalty <= 0.0f) return run_bad_flag(typed, val, "a number > 0 (1 = off)");
        } else if (strcmp(flag, "--repeat-last-n") == 0) {
            if (run_count_flag(typed, val, 1 << 20, &o->repeat_last_n, "a token count from 0 to 1048576")) return 1;
        } else if (strcmp(flag, "-s") == 0) {
            if (run_count_flag(typed, val, ~0ull, &o->seed, "a non-negative integer")) return 1;
        } else if (strcmp(flag, "-n") == 0) {
            if (run_count_flag(typed, val, 0x7fffffff, &o->steps, "a non-negative integer (0 = no limit)")) return 1;
            o->steps_given = 1;
        } else if (strcmp(flag, "-T") == 0) {
            if (run_count_flag(typed, val, 4096, &o->threads, "a thread count from 1 to 4096")) return 1;
            if (o->threads == 0) return run_bad_flag(typed, val, "a thread count from 1 to 4096");
        } else if (strcmp(flag, "--context-shift") == 0) {
            if (run_count_flag(typed, val, 0x7fffffff, &o->shift_keep, "a number of tokens to keep, >= 0")) return 1;
            o->shift = 1;
        } else if (strcmp(flag, "-m") == 0) {
            if (strcmp(val, "generate") != 0 && strcmp(val, "chat") != 0) return run_bad_flag(typed, val, "generate or chat");
            o->mode = val;
        } else if (strcmp(flag, "--template") == 0) {
            static const char *names[] = {"llama2", "llama3", "llama3.1", "chatml", "qwen2.5", "qwen3", "smollm2", "zephyr", "mistral",
                                          "gemma", "phi3", "phi4"};
            int known = 0;
            for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) known |= strcmp(val, names[k]) == 0;
            if (!known) return run_bad_flag(typed, val, "llama2, llama3, llama3.1, chatml, qwen2.5, qwen3, smollm2, zephyr, mistral, gemma, phi3 or phi4");
            o->template_name = val;
        } else if (strcmp(flag, "--think") == 0) {
            if (strcmp(val, "on") != 0 && strcmp(val, "off") != 0 && strcmp(val, "hide") != 0) return run_bad_flag(typed, val, "on, off or hide");
            o->think = val;
        } else if (strcmp(flag, "--kernels") == 0) {
            int known = strcmp(val, "auto") == 0;
            for (int k = 0; k < LM_KERNELS_N; k++) known |= strcmp(val, run_kernel_names[k]) == 0;
            if (!known) return run_bad_flag(typed, val, "auto, portable, avx2, avx2-vnni, avx512, neon or neon-dotprod");
            o->kernels = val;
        } else if (strcmp(flag, "-c") == 0) {
            if (run_count_flag(typed, val, 0x7fffffff, &o->context, "a context length in positions (0 = the model's maximum)")) return 1;
            o->context_given = 1;
        } else if (strcmp(flag, "--cache-type") == 0) {
            if (strcmp(val, "f32") != 0 && strcmp(val, "f16") != 0 && strcmp(val, "bf16") != 0 && strcmp(val, "q8_0") != 0)
                return run_bad_flag(typed, val, "f32, f16, bf16 or q8_0");
            o->cache_type = val;
        } else if (strcmp(flag, "-r") == 0) {
            if (val[0] == '\0' || o->n_stops == 16) return run_bad_flag(typed, val, "a non-empty stop string (at most 16 of them)");
            o->stops[o->n_stops++] = val;
        } else if (strcmp(flag, "-i") == 0) {
            o->prompt = val;
        } else if (strcmp(flag, "-f") == 0) {
            o->prompt_file = val;
        } else if (strcmp(flag, "-z") == 0) {
            o->tokenizer_path = val;
        } else {
            o->system_prompt = val; // -y
        }
    }
    if (o->prompt_file && o->prompt) { fprintf(stderr, "run: give the prompt with -i or -f, not both\n"); return 1; }
    if (o->think && strcmp(o->mode, "chat") != 0) {
        fprintf(stderr, "run: --think is for chat mode (-m chat); in generate mode the prompt is the model's text as given\n");
        return 1;
    }
    if (o->prompt && strcmp(o->prompt, "-") == 0 && strcmp(o->mode, "chat") == 0) {
        fprintf(stderr, "run: -i - reads the prompt from standard input, which chat mode needs for its messages\n");
        return 1;
    }
    return 0;
}

static void run_usage(FILE *f) {
    fprintf(f,
            "Usage:   run <checkpoint> [options]\n"
            "Example: run stories15M.bin -n 256 -i \"Once upon a time\"\n"
            "Options (llama.cpp's long names in brackets also work):\n"
            "  -t <float>  temperature, >= 0 (default 1.0; 0 = greedy) [--temp]\n"
            "  -p <float>  top-p (nucleus) sampling threshold in [0,1] (default 0.9; 0 or 1 = off) [--top-p]\n"
            "  -k <int>    top-k: sample from the k most likely tokens (default 0 = off) [--top-k]\n"
            "  --min-p <float>  drop tokens less likely than this times the most likely (default 0 = off)\n"
            "  --repeat-penalty <float>  divide positive logits (multiply negative ones) of tokens seen\n"
            "              in the last --repeat-last-n tokens (default 1 = off; window default 64)\n"
            "              Order: penalty, temperature, top-k, min-p, top-p, then one draw.\n"
            "  -s <int>    random seed (default: the time) [--seed]\n"
            "  -n <int>    tokens to generate, after the prompt (default 256; 0 = until the model ends\n"
            "              or the context is full). In chat mode: the longest reply (default: none) [--n-predict]\n"
            "  -i <string> input prompt (\"-\": read it from standard input) [--prompt]\n"
            "  -f <file>   read the prompt from a file (one trailing newline is dropped, as for -i -) [--file]\n"
            "  -r <string> stop string: generation ends once the output contains it (repeatable)\n"
            "  --ignore-eos  go on past end-of-sequence tokens\n"
            "  --info      print the model's description (format, shape, weights, RoPE, tokenizer and its\n"
            "              special ids) on standard output and exit; it is also shown at load on a terminal\n"
            "  --verbose-prompt  list the prompt's token ids and texts (each chat turn's) on standard error\n"
            "  --exact     integer weights meet float activations: the stored weights' exact logits, slower\n"
            "              (default: activations quantized to int8 in groups, as llama.cpp does)\n"
            "  --kernels <name>  SIMD kernels: auto (the best this CPU has), portable, avx2, avx2-vnni,\n"
            "              avx512, neon, neon-dotprod; the same results with each (for comparing speed)\n"
            "  --no-mmap   read the model into memory instead of mapping it: faster generation from large\n"
            "              models, in memory the OS cannot page out\n"
            "  -c <int>    context length: positions the KV cache holds (default: the model's, a GGUF\n"
            "              model's up to 4096; 0 = the model's maximum) [--ctx-size]\n"
            "  --cache-type <type>  the KV cache's type: f16 (default; f32 for llama2.c's files), f32,\n"
            "              bf16, or q8_0 (half of f16's memory; head sizes that are multiples of 32)\n"
            "  --quiet     nothing on standard error but errors: no description, timing or notes\n"
            "  -z <string> tokenizer file (default: the checkpoint's own, else tokenizer.bin)\n"
            "  -m <string> mode: generate|chat (default generate)\n"
            "  -y <string> system prompt in chat mode (default: asked for on a terminal) [--system-prompt]\n"
            "  -T <int>    threads (default: OMP_NUM_THREADS, else the number of cores; 1 without\n"
            "              OpenMP) [--threads]\n"
            "  --context-shift <n>  when the context is full, keep the first n tokens, drop half the\n"
            "              rest and go on (generate mode)\n"
            "  --template <name>  chat template: llama2|llama3|llama3.1|chatml|qwen2.5|qwen3|smollm2|zephyr|\n"
            "              mistral|gemma|phi3|phi4 (default: the tokenizer's, else llama2)\n"
            "  --think on|off|hide  Qwen3's thinking in chat mode: on (the default: the reply starts with its\n"
            "              <think> part), off (the template's empty <think> block: no thinking), hide (it\n"
            "              thinks, the <think> part is not printed); /think and /no_think in a message work too\n"
            "  -h, --help  this help\n"
            "Tokenizer tool: run [checkpoint] --tokenize [-z <tokenizer>] (-i <text> | -i - | -f <file>) [--ids-only]\n"
            "  prints each token's id and text (--ids-only: the ids alone); the tokenizer is -z, else the\n"
            "  checkpoint's own, else tokenizer.bin\n");
}

// Reads a whole file (or standard input for "-") into a string, dropping one trailing newline (as
// llama.cpp does: an editor ends every file with one). NULL with a message on failure.
static char *run_read_prompt(const char *path) {
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (f == NULL) { fprintf(stderr, "run: cannot read the prompt file %s: %s\n", path, strerror(errno)); return NULL; }
    size_t n = 0, cap = 4096;
    char *text = (char *)malloc(cap);
    for (size_t got; text && (got = fread(text + n, 1, cap - n - 1, f)) > 0;) {
        n += got;
        if (n + 1 == cap) {
            char *grown = (char *)realloc(text, cap *= 2);
            if (!grown) free(text);
            text = grown;
        }
    }
    int failed = ferror(f), error = errno;
    if (f != stdin) fclose(f);
    if (text == NULL) { fprintf(stderr, "run: out of memory reading %s\n", path); return NULL; }
    if (failed) { // (a folder opens, then fails to read)
        fprintf(stderr, "run: cannot read the prompt %s: %s\n", strcmp(path, "-") == 0 ? "from standard input" : path, strerror(error));
        free(text);
        return NULL;
    }
    if (n > 0 && text[n - 1] == '\n') n--;
    if (n > 0 && text[n - 1] == '\r') n--;
    text[n] = '\0';
    return text;
}

// One line per token: its id and its text, control bytes escaped.
static void run_print_tokens(FILE *f, const LmTokenizer *t, const int *ids, int n) {
    for (int i = 0; i < n; i++) {
        fprintf(f, "%6d  ", ids[i]);
        const char *text = lm_token_text(t, ids[i]);
        for (const unsigned char *c = (const unsigned char *)(text ? text : ""); *c; c++)
            if (*c < 0x20 || *c == '\\' || *c == 0x7f) fprintf(f, "\\x%02x", *c); else fputc(*c, f);
        fputc('\n', f);
    }
}

// The tokenizer the command line uses: -z, else the checkpoint's own, else tokenizer.bin. With a
// model it must match the model's vocabulary.
static LmTokenizer *run_cli_tokenizer(const char *checkpoint, const LmModelInfo *info, const char *z, int quiet, char *err, size_t errlen) {
    const char *path = z ? z : info && info->has_tokenizer ? checkpoint : "tokenizer.bin";
    if (z && info && info->has_tokenizer && !quiet) fprintf(stderr, "note: -z %s replaces the checkpoint's own tokenizer\n", z);
    return lm_tokenizer_load(path, info ? info->vocab_size : 0, err, errlen);
}

// --tokenize: ids and texts of a text, with a model's tokenizer or a tokenizer file alone.
static int run_tokenize_main(int argc, char **argv) {
    const char *z = NULL, *text = NULL, *file = NULL, *checkpoint = argc > 1 && argv[1][0] != '-' ? argv[1] : NULL;
    int ids_only = 0;
    for (int i = checkpoint ? 2 : 1; i < argc; i++) {
        if (strcmp(argv[i], "--tokenize") == 0) continue;
        if (strcmp(argv[i], "--ids-only") == 0) { ids_only = 1; continue; }
        const LmFlag *f = run_find_flag(argv[i]);
        const char *name = f ? f->name : "";
        if ((strcmp(name, "-z") == 0 || strcmp(name, "-i") == 0 || strcmp(name, "-f") == 0) && i + 1 < argc) {
            const char *val = argv[++i];
            if (name[1] == 'z') z = val; else if (name[1] == 'i') text = val; else file = val;
            continue;
        }
        fprintf(stderr, "run: unknown option '%s' for --tokenize (expected [checkpoint] --tokenize [-z FILE] -i TEXT|-f FILE [--ids-only])\n", argv[i]);
        return 1;
    }
    if ((text == NULL) == (file == NULL)) { fprintf(stderr, "run: --tokenize needs the text: -i TEXT, -i - (standard input) or -f FILE\n"); return 1; }
    char err[512], *owned = NULL;
    if (file || strcmp(text, "-") == 0) {
        if ((owned = run_read_prompt(file ? file : "-")) == NULL) return 1;
        text = owned;
    }
    LmModel *m = NULL;
    LmModelInfo info;
    if (checkpoint && (m = lm_load(checkpoint, err, sizeof err)) == NULL) { fprintf(stderr, "run: %s\n", err); free(owned); return 1; }
    if (m) lm_model_info(m, &info);
    LmTokenizer *t = run_cli_tokenizer(checkpoint, m ? &info : NULL, z, 0, err, sizeof err);
    lm_free(m);
    if (t == NULL) { fprintf(stderr, "run: %s\n", err); free(owned); return 1; }
    size_t cap = strlen(text) + 3;
    int *ids = (int *)malloc(cap * sizeof(int));
    int n = ids ? lm_encode(t, text, 1, 0, ids, (int)cap) : -1;
    if (ids_only) {
        for (int i = 0; i < n; i++) printf(i ? " %d" : "%d", ids[i]);
        printf("\n");
    } else {
        run_print_tokens(stdout, t, ids, n);
    }
    free(ids);
    free(owned);
    lm_tokenizer_free(t);
    return n < 0;
}

// The description of a model (and its tokenizer, which may be missing: why is in tokenizer_error).
static void run_print_info(FILE *f, const char *path, const LmModelInfo *mi, const LmTokenizer *t, const char *tokenizer_error) {
    fprintf(f, "model: %s: %s, %.1f MiB; %d layers, dim %d, hidden %d, %d heads (%d kv, size %d)%s%s, vocab %d\n", path, mi->format,
            (double)mi->file_bytes / (1 << 20), mi->n_layers, mi->dim, mi->hidden_dim, mi->n_heads, mi->n_kv_heads, mi->head_size,
            mi->qkv_bias ? ", q/k/v bias" : "", mi->tied_embedding ? ", tied embedding" : "", mi->vocab_size);
    fprintf(f, "weights: %s", mi->weight_type);
    if (mi->group_size) fprintf(f, " (groups of %d)", mi->group_size);
    fprintf(f, ", %.2f M parameters; context %d", (double)mi->parameters / 1e6, mi->context_length);
    if (mi->max_context != mi->context_length) fprintf(f, " (the model's maximum: %d; -c sets it)", mi->max_context);
    fprintf(f, ", KV cache %s %.1f MiB", mi->cache_type, (double)mi->cache_bytes / (1 << 20));
    fprintf(f, "; RoPE theta %g, %s, scaling %s", mi->rope_theta, mi->rope_layout, mi->rope_scaling);
    if (mi->rope_factor > 0.0f && strcmp(mi->rope_scaling, "none") != 0) fprintf(f, " x%g", mi->rope_factor);
    if (mi->rope_original_context > 0) fprintf(f, " from %d", mi->rope_original_context);
    if (strcmp(mi->rope_scaling, "yarn") == 0) fprintf(f, ", attention factor %g", mi->rope_attn_factor);
    fprintf(f, "; norm eps %g", mi->norm_eps);
    if (mi->features[0]) fprintf(f, "; %s", mi->features);
    fprintf(f, "; kernels %s, threads %d%s", mi->kernels, mi->threads, mi->in_memory ? ", read into memory" : "");
#ifdef _OPENMP
    const char *wait = getenv("OMP_WAIT_POLICY");
    if (wait) fprintf(f, " (OMP_WAIT_POLICY=%s)", wait);
#endif
    fprintf(f, "\n");
    LmTokenizerInfo ti;
    if (t == NULL || lm_tokenizer_info(t, &ti) != 0) {
        fprintf(f, "tokenizer: none (%s)\n", tokenizer_error);
        return;
    }
    fprintf(f, "tokenizer: %s, %d tokens%s, chat template %s; BOS %d, EOS %d", ti.kind, ti.n_tokens,
            ti.n_tokens < ti.vocab_size ? " (the rest of the vocabulary is padding)" : "", ti.chat_template, ti.bos_id, ti.eos_id);
    for (int i = 0; i < ti.n_eot; i++) fprintf(f, i ? " %d" : ", end of turn %d", ti.eot_ids[i]);
    fprintf(f, "\n");
}

// Ctrl-C in chat: it stops the reply or the prompt's processing, and at the prompt it ends the chat
// (lm_chat watches this flag). Pressed again before the first is acted on, it exits at once (a
// stuck process). Command line only: the library keeps no globals.
static volatile sig_atomic_t run_cli_interrupted;

static void run_on_interrupt(int sig) {
    (void)sig;
    if (run_cli_interrupted) _exit(130);
    run_cli_interrupted = 1;
}

// Prompt progress on a terminal, for prompts long enough to watch; cleared at the end (done ==
// total) or when the prompt stops early (done < 0).
static void run_show_progress(int done, int total, void *user) {
    (void)user;
    if (total < 256) return;
    if (done >= 0 && done < total) fprintf(stderr, "\r[prompt: %d of %d tokens]", done, total);
    else fprintf(stderr, "\r\033[K");
}

static void run_show_prompt(const int *ids, int n, void *user) {
    fprintf(stderr, "prompt: %d tokens\n", n);
    run_print_tokens(stderr, (const LmTokenizer *)user, ids, n);
}

static int run_emit_to_file(const char *piece, void *user) {
    FILE *f = (FILE *)user;
    fputs(piece, f);
    fflush(f);
    return 0;
}

#ifdef _OPENMP
// Is path (as argv[0] names the program: with a slash, or found on PATH) the file f describes?
static int run_is_program(const char *path, const struct stat *f) {
    struct stat st;
    if (strchr(path, '/')) return stat(path, &st) == 0 && st.st_dev == f->st_dev && st.st_ino == f->st_ino;
    const char *dirs = getenv("PATH");
    char candidate[4096];
    for (const char *d = dirs; d && *d;) {
        size_t len = strcspn(d, ":");
        snprintf(candidate, sizeof candidate, "%.*s/%s", (int)len, d, path);
        if (stat(candidate, &st) == 0) return st.st_dev == f->st_dev && st.st_ino == f->st_ino;
        d += len + (d[len] == ':');
    }
    return 0;
}

// OpenMP threads that spin between parallel steps take cores from other programs, and on a busy
// machine the spinning starves the very thread they wait for (measured: 2 threads on 2 busy cores
// made 13-20 tok/s spinning, 24-32 passive). The command line waits passively unless
// OMP_WAIT_POLICY says otherwise; libgomp reads it only as a program starts, so the command line
// sets it and starts itself again: only when /proc/self/exe is this program (not, say, the dynamic
// loader running it) and more than one thread will run.
static void run_prefer_passive_wait(char **argv, int threads) {
    struct stat self;
    if (getenv("OMP_WAIT_POLICY") != NULL || threads == 1 || stat("/proc/self/exe", &self) != 0 || !run_is_program(argv[0], &self)) return;
    setenv("OMP_WAIT_POLICY", "passive", 1);
    execv("/proc/self/exe", argv);
    unsetenv("OMP_WAIT_POLICY"); // (not started again: not in effect)
}
#endif

// Generate mode: the prompt's text and what follows, then the timing on stderr.
static int run_cli_generate(LmModel *model, LmTokenizer *tokenizer, LmSampler *sampler, const LmOptions *o, const LmModelInfo *info,
                            LmProgressFn progress) {
    const char *prompt = o->prompt ? o->prompt : "";
    if (o->verbose_prompt) {
        size_t cap = strlen(prompt) + 3;
        int *ids = (int *)malloc(cap * sizeof(int));
        int n = ids ? lm_encode(tokenizer, prompt, 1, 0, ids, (int)cap) : -1;
        if (n >= 0) run_show_prompt(ids, n, tokenizer);
        free(ids);
    }
    LmGenerateOptions g = {.max_tokens = (int)o->steps, .echo_prompt = 1, .ignore_eos = o->ignore_eos, .context_shift = o->shift,
                           .shift_keep = (int)o->shift_keep, .stops = o->stops, .n_stops = o->n_stops, .emit = run_emit_to_file,
                           .user = stdout, .progress = progress};
    LmGenerateStats st;
    char err[512];
    if (lm_generate(model, tokenizer, sampler, prompt, &g, &st, err, sizeof err) < 0) {
        fprintf(stderr, "run: %s\n", err);
        return 1;
    }
    printf("\n");
    fflush(stdout); // the text ends with its newline before anything goes to stderr (2>&1 | tee log)
    if (o->quiet) return 0;
    if (st.stop == LM_STOP_CONTEXT)
        fprintf(stderr, "note: context full (%d tokens): generation stopped; --context-shift N keeps going\n", info->context_length);
    fprintf(stderr, "achieved tok/s: %.1f | prompt: %d tokens, %.1f tok/s | generated: %d tokens in %.2f s | first token after %.0f ms\n",
            st.generate_seconds > 0 ? st.generated / st.generate_seconds : 0.0, st.prompt_tokens,
            st.prompt_seconds > 0 ? st.prompt_tokens / st.prompt_seconds : 0.0, st.generated, st.generate_seconds, 1000 * st.prompt_seconds);
    return 0;
}

// Chat mode, with Ctrl-C handled as lm_chat documents.
static int run_cli_chat(LmModel *model, LmTokenizer *tokenizer, LmSampler *sampler, const LmOptions *o, LmProgressFn progress) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = run_on_interrupt; // no SA_RESTART: a Ctrl-C at the prompt ends the read
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    int terminal = isatty(fileno(stdin));
    LmTokenizerInfo ti = {.chat_template = ""};
    int have_info = lm_tokenizer_info(tokenizer, &ti) == 0;
    if (!o->quiet && have_info && ti.template_unknown)
        fprintf(stderr, "note: the model's chat template is not one run.c renders; using %s's (--template chooses another)\n", ti.chat_template);
    LmChatOptions c = {.in = stdin, .out = stdout, .first_message = o->prompt, .max_reply = o->steps_given ? (int)o->steps : 0,
                       .banner = terminal, .progress = progress, .show_prompt = o->verbose_prompt ? run_show_prompt : NULL,
                       .user = tokenizer, .interrupted = &run_cli_interrupted, .hide_thinking = o->think && strcmp(o->think, "hide") == 0};
    if (o->think && have_info && strcmp(ti.chat_template, "qwen3") != 0)
        fprintf(stderr, "note: --think applies to Qwen3's chat template; this chat uses %s's, which has no thinking\n", ti.chat_template);
    lm_tokenizer_set_thinking(tokenizer, !(o->think && strcmp(o->think, "off") == 0));
    // with piped input every line is a message: the system prompt is asked for only on a terminal
    c.system_prompt = o->system_prompt ? o->system_prompt : terminal ? NULL : "";
    char err[512];
    if (lm_chat(model, tokenizer, sampler, &c, err, sizeof err) < 0) {
        fprintf(stderr, "run: %s\n", err);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) { run_usage(stdout); return 0; }
        if (strcmp(argv[i], "--tokenize") == 0) return run_tokenize_main(argc, argv);
    }
    LmOptions o;
    if (run_parse_options(argc, argv, &o) != 0) return 1;
#ifdef _OPENMP
    const char *env_threads = getenv("OMP_NUM_THREADS");
    run_prefer_passive_wait(argv, o.threads ? (int)o.threads : env_threads && atoi(env_threads) > 0 ? atoi(env_threads) : omp_get_num_procs());
#endif
    if (o.temperature > 2.0f && o.temperature == floorf(o.temperature) && !o.quiet)
        fprintf(stderr, "note: -t %g is the temperature, which makes random text at this value; threads are -T\n", o.temperature);
    char *prompt_owned = NULL;
    if (o.prompt_file || (o.prompt && strcmp(o.prompt, "-") == 0)) {
        prompt_owned = run_read_prompt(o.prompt_file ? o.prompt_file : "-");
        if (prompt_owned == NULL) return 1;
        o.prompt = prompt_owned;
    }
    char err[512], tokenizer_err[512] = "";
    LmLoadOptions load = {.in_memory = o.no_mmap, .cache_type = o.cache_type,
                          .context_length = !o.context_given ? 0 : o.context == 0 ? LM_CONTEXT_MAX : (int)o.context};
    LmModel *model = lm_load_with(o.checkpoint, &load, err, sizeof err);
    if (model == NULL) { fprintf(stderr, "run: %s\n", err); free(prompt_owned); return 1; }
    lm_set_threads(model, (int)o.threads);
    lm_set_exact(model, o.exact);
    if (o.kernels && lm_set_kernels(model, o.kernels) != 0) {
        LmModelInfo have;
        lm_model_info(model, &have);
        fprintf(stderr, "run: --kernels %s: this CPU or build does not run them (it runs %s); use --kernels auto\n", o.kernels, have.kernels);
        lm_free(model);
        free(prompt_owned);
        return 1;
    }
    LmModelInfo info;
    lm_model_info(model, &info);
    LmTokenizer *tokenizer = run_cli_tokenizer(o.checkpoint, &info, o.tokenizer_path, o.quiet, tokenizer_err, sizeof tokenizer_err);
    if (tokenizer && o.template_name) lm_tokenizer_set_template(tokenizer, o.template_name);
    LmSampler *sampler = lm_sampler_new(lm_vocab_size(model), o.temperature, o.topp, o.seed ? o.seed : (unsigned long long)time(NULL));
    int rc = 0;
    if (o.info) { // described even without a tokenizer: that tells the vocabulary a tokenizer needs
        run_print_info(stdout, o.checkpoint, &info, tokenizer, tokenizer_err);
    } else if (tokenizer == NULL) {
        fprintf(stderr, "run: %s (choose a tokenizer with -z)\n", tokenizer_err);
        rc = 1;
    } else if (sampler == NULL || lm_sampler_configure(sampler, (int)o.top_k, o.min_p, o.repeat_penalty, (int)o.repeat_last_n) != 0) {
        fprintf(stderr, "run: out of memory\n");
        rc = 1;
    } else {
        if (!o.quiet && isatty(fileno(stderr))) run_print_info(stderr, o.checkpoint, &info, tokenizer, NULL);
        LmProgressFn progress = !o.quiet && isatty(fileno(stderr)) ? run_show_progress : NULL;
        rc = strcmp(o.mode, "chat") == 0 ? run_cli_chat(model, tokenizer, sampler, &o, progress)
                                          : run_cli_generate(model, tokenizer, sampler, &o, &info, progress);
    }
    lm_sampler_free(sampler);
    lm_tokenizer_free(tokenizer);
    lm_free(model);
    free(prompt_owned);
    return rc;
}
#endif // RUN_LIBRARY

#if defined(__cplusplus) && defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
#if defined(__clang__)
#pragma STDC FP_CONTRACT DEFAULT
#elif defined(__GNUC__)
#pragma GCC pop_options
#endif
#endif // RUN_C_IMPLEMENTATION
