/* run.c — inference for Llama-family language models in one C file.

   WHAT IT IS
   A decoder-only Transformer (RMSNorm, grouped-query attention with a KV cache, RoPE, SwiGLU) with
   its BPE tokenizer, sampler and generate/chat loops, in the spirit of llama2.c's run.c. It reads
   llama2.c's checkpoints (memory-mapped, never copied) and tokenizer files. C11, libc and libm only;
   OpenMP is optional. MIT licensed (see the end of this comment).

   BUILD AND RUN
       cc -O3 -o run run.c -lm                                  # portable
       cc -O3 -march=native -fopenmp -o run run.c -lm           # fastest (threads, native SIMD)
       ./run stories15M.bin -z tokenizer.bin -i "Once upon a time" -n 256
       ./run model.bin -m chat -y "You are a helpful assistant."
   `./run -h` lists every flag.

   EMBED
       #define RUN_NO_MAIN
       #include "run.c"
   Public names start with lm_ (types with Lm); everything else is static. There are no mutable
   globals: any number of models, tokenizers and samplers may live in one process, one model per
   thread at a time. No call exits the process; failures come back as NULL or -1 with a one-line
   reason in the caller's err buffer (err may be NULL, errlen may be 0).

   API
   LmModel *lm_load(const char *checkpoint_path, char *err, size_t errlen);
       Maps a checkpoint read-only and allocates its run state. NULL on failure, reason in err.
   float *lm_forward(LmModel *m, int token, int pos);
       Runs one token at position pos (0 <= pos < lm_context_length(m)) over the KV cache of positions
       0..pos-1, which must have been filled by earlier calls. Returns lm_vocab_size(m) logits owned by
       the model and valid until the next call, or NULL when m is NULL or token/pos is out of range.
   int lm_vocab_size(const LmModel *m);       int lm_context_length(const LmModel *m);
   void lm_free(LmModel *m);                   (NULL is a no-op, as for every _free below)
   LmTokenizer *lm_tokenizer_load(const char *path, int vocab_size, char *err, size_t errlen);
       Reads a tokenizer file whose token count must equal vocab_size (the model's).
   int lm_encode(LmTokenizer *t, const char *text, int bos, int eos, int *tokens, int max_tokens);
       Encodes UTF-8 text, with BOS/EOS when asked. Returns the token count, or -1 when the text needs
       more than max_tokens tokens (or on NULL arguments or out of memory).
   const char *lm_decode(LmTokenizer *t, int prev_token, int token);
       The text of token after prev_token (the space after BOS is dropped; byte tokens become bytes;
       control bytes become ""). Owned by the tokenizer. "" for an out-of-range token.
   void lm_tokenizer_free(LmTokenizer *t);
   LmSampler *lm_sampler_new(int vocab_size, float temperature, float topp, unsigned long long seed);
       temperature 0 = greedy; topp outside (0,1) samples the whole distribution. NULL on bad values.
   int lm_sample(LmSampler *s, float *logits);     (overwrites logits with probabilities)
   void lm_sampler_free(LmSampler *s);
   int lm_generate(LmModel *m, LmTokenizer *t, LmSampler *s, const char *prompt, int steps,
                   LmEmitFn emit, void *user, char *err, size_t errlen);
       llama2.c's generate: encodes prompt after BOS, runs until `steps` positions (0 = the context
       length) or BOS/EOS, and hands every piece of text (the prompt's too) to emit(piece, user) as it
       is made; emit returns non-zero to stop early. Returns the number of positions run, -1 on error.
   int lm_chat(LmModel *m, LmTokenizer *t, LmSampler *s, const char *first_user,
               const char *system_prompt, int max_reply, FILE *in, FILE *out, char *err, size_t errlen);
       Multi-turn chat in Llama 2's template: reads user lines from in, streams replies to out. A NULL
       system_prompt is asked for on in; first_user, if given, is the first message. max_reply caps
       each reply (0 = the context). Ends at end of input or a full context. Positions used, or -1.

   FILE FORMATS (little-endian; all read from a read-only mapping and checked against its size)
   Checkpoint v0 (llama2.c legacy): 7 int32 {dim, hidden_dim, n_layers, n_heads, n_kv_heads,
       vocab_size, seq_len}; vocab_size < 0 means the classifier is not shared with the embedding.
       Then fp32 tensors: token_embedding (vocab, dim), rms_att (layer, dim), wq (layer, dim, dim),
       wk (layer, kv_dim, dim), wv (layer, kv_dim, dim), wo (layer, dim, dim), rms_ffn (layer, dim),
       w1 (layer, hidden, dim), w2 (layer, dim, hidden), w3 (layer, hidden, dim), rms_final (dim),
       two unused RoPE tables (seq_len, head_size/2) each, then wcls (vocab, dim) if unshared.
   Checkpoint v1: 256-byte header: uint32 magic 0x616b3432 ("ak42"), int32 version = 1, the 7 int32
       above (vocab_size positive), uint8 shared_classifier, zero padding. Then fp32 tensors: rms_att,
       rms_ffn, rms_final, token_embedding, wq, wk, wv, wo, w1, w2, w3, [wcls].
   Checkpoint v2 (Q8_0, llama2.c's runq.c): as v1 with version 2 and an int32 group_size at byte 37.
       The norms come first in fp32 (rms_att, rms_ffn, rms_final); then each of token_embedding,
       wq[0..L), wk[..], wv[..], wo[..], w1[..], w2[..], w3[..], [wcls] as int8 values (rows*cols)
       followed by fp32 scales (rows*cols/group_size), w = q * scale per group of the flattened
       tensor (group_size divides dim, so groups may straddle rows of w2). Computed in int8:
       activations are quantized per group, products summed in int32.
   Tokenizer (llama2.c's tokenizer.bin): int32 max_token_length, then per token: float32 score,
       int32 length, length bytes of text (no terminator). Ids 1 and 2 are BOS and EOS; byte-fallback
       tokens are spelled "<0xXX>".

   LICENSE
   MIT License. Copyright (c) 2026 the run.c authors. Permission is hereby granted, free of charge, to
   any person obtaining a copy of this software and associated documentation files (the "Software"),
   to deal in the Software without restriction, including without limitation the rights to use, copy,
   modify, merge, publish, distribute, sublicense, and/or sell copies of the Software, and to permit
   persons to whom the Software is furnished to do so, subject to the following conditions: The above
   copyright notice and this permission notice shall be included in all copies or substantial portions
   of the Software. THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED.
*/
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

// ----------------------------------------------------------------------------
// Public API (documented in the top comment)

typedef struct LmModel LmModel;
typedef struct LmTokenizer LmTokenizer;
typedef struct LmSampler LmSampler;
typedef int (*LmEmitFn)(const char *piece, void *user); // non-zero return stops generation

LmModel *lm_load(const char *checkpoint_path, char *err, size_t errlen);
float *lm_forward(LmModel *m, int token, int pos);
int lm_vocab_size(const LmModel *m);
int lm_context_length(const LmModel *m);
void lm_free(LmModel *m);
LmTokenizer *lm_tokenizer_load(const char *path, int vocab_size, char *err, size_t errlen);
int lm_encode(LmTokenizer *t, const char *text, int bos, int eos, int *tokens, int max_tokens);
const char *lm_decode(LmTokenizer *t, int prev_token, int token);
void lm_tokenizer_free(LmTokenizer *t);
LmSampler *lm_sampler_new(int vocab_size, float temperature, float topp, unsigned long long seed);
int lm_sample(LmSampler *s, float *logits);
void lm_sampler_free(LmSampler *s);
int lm_generate(LmModel *m, LmTokenizer *t, LmSampler *s, const char *prompt, int steps,
                LmEmitFn emit, void *user, char *err, size_t errlen);
int lm_chat(LmModel *m, LmTokenizer *t, LmSampler *s, const char *first_user, const char *system_prompt,
            int max_reply, FILE *in, FILE *out, char *err, size_t errlen);

// OpenMP is optional: without -fopenmp the pragma disappears instead of warning.
#ifdef _OPENMP
#define LM_PARALLEL_FOR _Pragma("omp parallel for schedule(static)")
#else
#define LM_PARALLEL_FOR
#endif

static void set_err(char *err, size_t errlen, const char *fmt, ...) {
    if (err == NULL || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

// ----------------------------------------------------------------------------
// Checkpoint format and loading

#define LM_MAGIC 0x616b3432u     // "ak42" as a little-endian uint32
#define LM_V0_HEADER_BYTES 28
#define LM_AK42_HEADER_BYTES 256
#define LM_MAX_DIM (1 << 20)     // any larger dimension is a corrupt header, not a model
#define LM_MAX_LAYERS 4096

typedef enum { LM_F32 = 0, LM_Q8_0 = 1 } LmWeightType;

typedef struct {
    int dim;          // transformer width (the residual stream)
    int hidden_dim;   // FFN inner width
    int n_layers;
    int n_heads;      // query heads
    int n_kv_heads;   // key/value heads (n_heads for plain multi-head attention)
    int head_size;    // dim / n_heads
    int vocab_size;
    int seq_len;      // context length
    int shared_classifier; // the classifier is the token embedding
    int version;      // 0, 1 or 2 (llama2.c's formats)
    LmWeightType weight_type;
    int group_size;   // Q8_0 group length (0 for fp32)
    float norm_eps;
    float rope_theta;
} LmConfig;

// A weight matrix (rows, cols), row-major, pointing into the mapped file. fp32 uses f; Q8_0 uses q
// and its per-group scales s, read unaligned (the v2 format does not align them).
typedef struct {
    const float *f;        // (rows, cols) fp32 values, or NULL
    const int8_t *q;       // (rows, cols) int8 values, or NULL
    const unsigned char *s; // (rows * cols / group_size) fp32 scales, possibly unaligned
    int rows, cols;
} LmMatrix;

typedef struct {
    LmMatrix token_embedding; // (vocab_size, dim)
    const float *rms_att;     // (layer, dim)
    const float *rms_ffn;     // (layer, dim)
    LmMatrix *wq;             // (layer) of (n_heads * head_size, dim)
    LmMatrix *wk;             // (layer) of (n_kv_heads * head_size, dim)
    LmMatrix *wv;             // (layer) of (n_kv_heads * head_size, dim)
    LmMatrix *wo;             // (layer) of (dim, n_heads * head_size)
    LmMatrix *w1;             // (layer) of (hidden_dim, dim), the gate
    LmMatrix *w2;             // (layer) of (dim, hidden_dim), the down projection
    LmMatrix *w3;             // (layer) of (hidden_dim, dim), the up projection
    const float *rms_final;   // (dim)
    LmMatrix wcls;            // (vocab_size, dim); the embedding when shared
} LmWeights;

// An activation vector, with its Q8_0 form when the weights are quantized.
typedef struct {
    const float *f; // (n)
    int8_t *q;      // (n) quantized values, or NULL for fp32 weights
    float *s;       // (n / group_size) scales
    int n;
} LmInput;

typedef struct {
    float *x;           // (dim) the residual stream
    float *xb;          // (max(dim, q_dim)) normed input, then attention output
    float *xb2;         // (dim) a block's output before the residual add
    float *hb;          // (hidden_dim) FFN gate
    float *hb2;         // (hidden_dim) FFN up
    float *q;           // (n_heads * head_size)
    float *att;         // (n_heads, seq_len) attention scores
    float *logits;      // (vocab_size)
    float *key_cache;   // (layer, seq_len, kv_dim)
    float *value_cache; // (layer, seq_len, kv_dim)
    float *rope_freq;   // (head_size / 2) inverse frequencies
    float *rope_cos;    // (head_size / 2) at the current position
    float *rope_sin;    // (head_size / 2)
    int8_t *xq;         // (max(dim, q_dim, hidden_dim)) quantized activations (Q8_0 only)
    float *xs;          // (max(...) / group_size) their scales
} LmRunState;

struct LmModel {
    LmConfig config;
    LmWeights weights;
    LmRunState state;
    const unsigned char *data; // the read-only mapping of the checkpoint
    size_t file_size;
};

static int32_t read_i32(const unsigned char *p) { int32_t v; memcpy(&v, p, 4); return v; }
static float read_f32(const unsigned char *p) { float v; memcpy(&v, p, 4); return v; }

// Maps path read-only. On failure returns NULL with the reason in err.
static const unsigned char *map_file(const char *path, size_t *size, char *err, size_t errlen) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) { set_err(err, errlen, "cannot open %s: %s", path, strerror(errno)); return NULL; }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        set_err(err, errlen, "%s is not a regular file", path);
        close(fd);
        return NULL;
    }
    if (st.st_size == 0) { set_err(err, errlen, "%s is empty", path); close(fd); return NULL; }
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd); // the mapping keeps the file
    if (p == MAP_FAILED) { set_err(err, errlen, "cannot map %s: %s", path, strerror(errno)); return NULL; }
    *size = (size_t)st.st_size;
    return p;
}

// Reads the header into c. Returns the offset of the first tensor, or 0 with the reason in err.
static size_t parse_header(LmConfig *c, const unsigned char *p, size_t size, const char *path,
                           char *err, size_t errlen) {
    memset(c, 0, sizeof *c);
    c->norm_eps = 1e-5f;
    c->rope_theta = 10000.0f;
    if (size < LM_V0_HEADER_BYTES) {
        set_err(err, errlen, "%s: %zu bytes is too small for a checkpoint header", path, size);
        return 0;
    }
    size_t offset;
    int64_t vocab;
    if ((uint32_t)read_i32(p) == LM_MAGIC) {
        if (size < LM_AK42_HEADER_BYTES) {
            set_err(err, errlen, "%s: truncated header (%zu bytes, expected %d)", path, size, LM_AK42_HEADER_BYTES);
            return 0;
        }
        c->version = read_i32(p + 4);
        if (c->version != 1 && c->version != 2) {
            set_err(err, errlen, "%s: unsupported checkpoint version %d (expected 1 or 2)", path, c->version);
            return 0;
        }
        p += 8;
        vocab = read_i32(p + 20);
        if (vocab <= 0) { set_err(err, errlen, "%s: vocab_size %lld must be positive", path, (long long)vocab); return 0; }
        c->shared_classifier = p[28] != 0;
        if (p[28] > 1) { set_err(err, errlen, "%s: shared_classifier flag is %d (expected 0 or 1)", path, p[28]); return 0; }
        if (c->version == 2) { c->weight_type = LM_Q8_0; c->group_size = read_i32(p + 29); }
        offset = LM_AK42_HEADER_BYTES;
    } else {
        c->version = 0;
        vocab = read_i32(p + 20);
        c->shared_classifier = vocab > 0;
        if (vocab < 0) vocab = -vocab;
        offset = LM_V0_HEADER_BYTES;
    }
    int64_t v[7] = {read_i32(p), read_i32(p + 4), read_i32(p + 8), read_i32(p + 12), read_i32(p + 16), vocab, read_i32(p + 24)};
    static const char *names[7] = {"dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"};
    for (int i = 0; i < 7; i++) {
        int64_t limit = i == 2 ? LM_MAX_LAYERS : LM_MAX_DIM * (i == 5 || i == 6 ? 16 : 1);
        if (v[i] <= 0 || v[i] > limit) {
            set_err(err, errlen, "%s: header field %s = %lld is out of range (1..%lld); not a llama2.c checkpoint?",
                    path, names[i], (long long)v[i], (long long)limit);
            return 0;
        }
    }
    c->dim = (int)v[0]; c->hidden_dim = (int)v[1]; c->n_layers = (int)v[2]; c->n_heads = (int)v[3];
    c->n_kv_heads = (int)v[4]; c->vocab_size = (int)v[5]; c->seq_len = (int)v[6];
    if (c->dim % c->n_heads != 0 || (c->dim / c->n_heads) % 2 != 0) {
        set_err(err, errlen, "%s: n_heads %d must divide dim %d into an even head size", path, c->n_heads, c->dim);
        return 0;
    }
    if (c->n_heads % c->n_kv_heads != 0) {
        set_err(err, errlen, "%s: n_kv_heads %d must divide n_heads %d", path, c->n_kv_heads, c->n_heads);
        return 0;
    }
    c->head_size = c->dim / c->n_heads;
    // every matrix has dim as a factor of its size, so its flattened groups tile it exactly
    if (c->weight_type == LM_Q8_0 && (c->group_size <= 0 || c->dim % c->group_size != 0)) {
        set_err(err, errlen, "%s: Q8_0 group size %d must be positive and divide dim %d",
                path, c->group_size, c->dim);
        return 0;
    }
    return offset;
}

// Walks the tensors of a file in order. take_* never forms a pointer past the end of the file: once
// a tensor does not fit, ok drops to 0 and offset keeps counting the bytes the header implies.
typedef struct {
    const unsigned char *base;
    uint64_t size, offset;
    int ok;
} LmCursor;

static const unsigned char *take_bytes(LmCursor *cur, uint64_t nbytes) {
    const unsigned char *p = NULL;
    if (cur->ok && nbytes <= cur->size - cur->offset) p = cur->base + cur->offset;
    else cur->ok = 0;
    cur->offset += nbytes;
    return p;
}

static const float *take_f32(LmCursor *cur, uint64_t count) {
    return (const float *)(const void *)take_bytes(cur, count * sizeof(float));
}

static LmMatrix take_matrix(LmCursor *cur, const LmConfig *c, int rows, int cols) {
    LmMatrix m = {NULL, NULL, NULL, rows, cols};
    uint64_t count = (uint64_t)rows * (uint64_t)cols;
    if (c->weight_type == LM_F32) {
        m.f = take_f32(cur, count);
    } else {
        m.q = (const int8_t *)take_bytes(cur, count);
        m.s = take_bytes(cur, count / (uint64_t)c->group_size * sizeof(float));
    }
    return m;
}

// Assigns every weight pointer in the file order of c->version.
static void map_weights(LmWeights *w, const LmConfig *c, LmCursor *cur) {
    int L = c->n_layers, dim = c->dim, hidden = c->hidden_dim;
    int q_dim = c->n_heads * c->head_size, kv_dim = c->n_kv_heads * c->head_size;
    uint64_t Ld = (uint64_t)L * (uint64_t)dim;
    if (c->version == 0) {
        w->token_embedding = take_matrix(cur, c, c->vocab_size, dim);
        w->rms_att = take_f32(cur, Ld);
    } else { // v1 and v2 store the norms first
        w->rms_att = take_f32(cur, Ld);
        w->rms_ffn = take_f32(cur, Ld);
        w->rms_final = take_f32(cur, (uint64_t)dim);
        w->token_embedding = take_matrix(cur, c, c->vocab_size, dim);
    }
    for (int l = 0; l < L; l++) w->wq[l] = take_matrix(cur, c, q_dim, dim);
    for (int l = 0; l < L; l++) w->wk[l] = take_matrix(cur, c, kv_dim, dim);
    for (int l = 0; l < L; l++) w->wv[l] = take_matrix(cur, c, kv_dim, dim);
    for (int l = 0; l < L; l++) w->wo[l] = take_matrix(cur, c, dim, q_dim);
    if (c->version == 0) w->rms_ffn = take_f32(cur, Ld);
    for (int l = 0; l < L; l++) w->w1[l] = take_matrix(cur, c, hidden, dim);
    for (int l = 0; l < L; l++) w->w2[l] = take_matrix(cur, c, dim, hidden);
    for (int l = 0; l < L; l++) w->w3[l] = take_matrix(cur, c, hidden, dim);
    if (c->version == 0) {
        w->rms_final = take_f32(cur, (uint64_t)dim);
        take_f32(cur, (uint64_t)c->seq_len * (uint64_t)c->head_size); // the unused freq_cis_real/imag tables
    }
    w->wcls = c->shared_classifier ? w->token_embedding : take_matrix(cur, c, c->vocab_size, dim);
}

static void free_state(LmRunState *s) {
    void *bufs[] = {s->x, s->xb, s->xb2, s->hb, s->hb2, s->q, s->att, s->logits, s->key_cache,
                    s->value_cache, s->rope_freq, s->rope_cos, s->rope_sin, s->xq, s->xs};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    memset(s, 0, sizeof *s);
}

// Allocates the run state; 0 on out-of-memory. The KV cache is calloc'ed at full context length:
// the OS commits its pages only as positions are written.
static int alloc_state(LmRunState *s, const LmConfig *c) {
    int q_dim = c->n_heads * c->head_size;
    size_t kv_dim = (size_t)c->n_kv_heads * (size_t)c->head_size;
    size_t cache = (size_t)c->n_layers * (size_t)c->seq_len * kv_dim;
    int widest = c->dim > q_dim ? c->dim : q_dim;
    if (c->hidden_dim > widest) widest = c->hidden_dim;
    memset(s, 0, sizeof *s);
    s->x = calloc((size_t)c->dim, sizeof(float));
    s->xb = calloc((size_t)widest, sizeof(float));
    s->xb2 = calloc((size_t)c->dim, sizeof(float));
    s->hb = calloc((size_t)c->hidden_dim, sizeof(float));
    s->hb2 = calloc((size_t)c->hidden_dim, sizeof(float));
    s->q = calloc((size_t)q_dim, sizeof(float));
    s->att = calloc((size_t)c->n_heads * (size_t)c->seq_len, sizeof(float));
    s->logits = calloc((size_t)c->vocab_size, sizeof(float));
    s->key_cache = calloc(cache, sizeof(float));
    s->value_cache = calloc(cache, sizeof(float));
    s->rope_freq = calloc((size_t)c->head_size / 2, sizeof(float));
    s->rope_cos = calloc((size_t)c->head_size / 2, sizeof(float));
    s->rope_sin = calloc((size_t)c->head_size / 2, sizeof(float));
    int ok = s->x && s->xb && s->xb2 && s->hb && s->hb2 && s->q && s->att && s->logits &&
             s->key_cache && s->value_cache && s->rope_freq && s->rope_cos && s->rope_sin;
    if (c->weight_type == LM_Q8_0) {
        s->xq = calloc((size_t)widest, 1);
        s->xs = calloc((size_t)widest / (size_t)c->group_size + 1, sizeof(float)); // + a partial group
        ok = ok && s->xq && s->xs;
    }
    if (!ok) { free_state(s); return 0; }
    // The same float operations as llama2.c, so the same checkpoint gives the same text.
    for (int i = 0; i < c->head_size / 2; i++)
        s->rope_freq[i] = 1.0f / powf(c->rope_theta, (float)(2 * i) / (float)c->head_size);
    return 1;
}

static void free_weight_tables(LmWeights *w) {
    free(w->wq); free(w->wk); free(w->wv); free(w->wo); free(w->w1); free(w->w2); free(w->w3);
}

LmModel *lm_load(const char *checkpoint_path, char *err, size_t errlen) {
    if (checkpoint_path == NULL) { set_err(err, errlen, "no checkpoint path given"); return NULL; }
    LmModel *m = calloc(1, sizeof *m);
    if (m == NULL) { set_err(err, errlen, "out of memory"); return NULL; }
    m->data = map_file(checkpoint_path, &m->file_size, err, errlen);
    if (m->data == NULL) { free(m); return NULL; }
    LmConfig *c = &m->config;
    size_t offset = parse_header(c, m->data, m->file_size, checkpoint_path, err, errlen);
    if (offset == 0) { lm_free(m); return NULL; }
    LmWeights *w = &m->weights;
    size_t L = (size_t)c->n_layers;
    w->wq = calloc(L, sizeof(LmMatrix)); w->wk = calloc(L, sizeof(LmMatrix));
    w->wv = calloc(L, sizeof(LmMatrix)); w->wo = calloc(L, sizeof(LmMatrix));
    w->w1 = calloc(L, sizeof(LmMatrix)); w->w2 = calloc(L, sizeof(LmMatrix));
    w->w3 = calloc(L, sizeof(LmMatrix));
    if (!w->wq || !w->wk || !w->wv || !w->wo || !w->w1 || !w->w2 || !w->w3) {
        set_err(err, errlen, "out of memory loading %s", checkpoint_path);
        lm_free(m);
        return NULL;
    }
    LmCursor cur = {m->data, m->file_size, offset, 1};
    map_weights(w, c, &cur);
    if (!cur.ok) {
        set_err(err, errlen, "%s: truncated: the header implies %llu bytes, the file has %zu",
                checkpoint_path, (unsigned long long)cur.offset, m->file_size);
        lm_free(m);
        return NULL;
    }
    if (!alloc_state(&m->state, c)) {
        double mib = 2.0 * (double)c->n_layers * c->seq_len * c->n_kv_heads * c->head_size * 4 / (1 << 20);
        set_err(err, errlen, "%s: out of memory allocating the run state (KV cache %.0f MiB)", checkpoint_path, mib);
        lm_free(m);
        return NULL;
    }
    return m;
}

void lm_free(LmModel *m) {
    if (m == NULL) return;
    free_state(&m->state);
    free_weight_tables(&m->weights);
    if (m->data) munmap((void *)m->data, m->file_size);
    free(m);
}

int lm_vocab_size(const LmModel *m) { return m ? m->config.vocab_size : 0; }
int lm_context_length(const LmModel *m) { return m ? m->config.seq_len : 0; }

// ----------------------------------------------------------------------------
// Math kernels: each plain loop is the definition; matmul rows run in parallel under OpenMP.

static void rmsnorm(float *out, const float *x, const float *weight, int n, float eps) {
    float ss = 0.0f;
    for (int j = 0; j < n; j++) ss += x[j] * x[j];
    ss /= (float)n;
    ss += eps;
    ss = 1.0f / sqrtf(ss);
    for (int j = 0; j < n; j++) out[j] = weight[j] * (ss * x[j]);
}

static void softmax(float *x, int n) {
    float max_val = x[0];
    for (int i = 1; i < n; i++) if (x[i] > max_val) max_val = x[i];
    float sum = 0.0f;
    for (int i = 0; i < n; i++) { x[i] = expf(x[i] - max_val); sum += x[i]; }
    for (int i = 0; i < n; i++) x[i] /= sum;
}

// Q8_0 quantization of x (n values) in groups of gs (the last may be shorter): per group,
// scale = max|x| / 127 and q = round(x / scale), as llama2.c's runq.c.
static void quantize_q8(int8_t *q, float *s, const float *x, int n, int gs) {
    for (int start = 0, g = 0; start < n; start += gs, g++) {
        int end = start + gs < n ? start + gs : n;
        float wmax = 0.0f;
        for (int i = start; i < end; i++) { float a = fabsf(x[i]); if (a > wmax) wmax = a; }
        float scale = wmax / 127.0f;
        s[g] = scale;
        for (int i = start; i < end; i++) q[i] = scale > 0.0f ? (int8_t)roundf(x[i] / scale) : 0;
    }
}

// Dot product of two fp32 vectors with 16 independent partial sums: the compiler turns the lanes
// into SIMD registers under plain -O3 (a single running sum is a dependency chain it may not reorder).
static float dot_f32(const float *a, const float *b, int n) {
    float acc[16] = {0};
    int j = 0;
    for (; j + 16 <= n; j += 16)
        for (int k = 0; k < 16; k++) acc[k] += a[j + k] * b[j + k];
    for (int k = 0; j < n; j++, k++) acc[k] += a[j] * b[j];
    for (int w = 8; w > 0; w /= 2) // pairwise: lanes k and k + w
        for (int k = 0; k < w; k++) acc[k] += acc[k + w];
    return acc[0];
}

// out (rows) = W (rows, cols) @ x (cols), fp32.
static void matmul_f32(float *out, const float *w, const float *x, int rows, int cols) {
    LM_PARALLEL_FOR
    for (int i = 0; i < rows; i++) out[i] = dot_f32(w + (size_t)i * (size_t)cols, x, cols);
}

// out (rows) = W (rows, cols) @ x (cols) in Q8_0: int32 sums over runs that share one weight group
// and one input group, each run scaled by both. llama2.c's exporter groups the flattened tensor, so
// when gs does not divide cols a weight group straddles two rows and the runs split there.
static void matmul_q8(float *out, const int8_t *wq, const unsigned char *ws, const int8_t *xq,
                      const float *xs, int rows, int cols, int gs) {
    LM_PARALLEL_FOR
    for (int i = 0; i < rows; i++) {
        size_t row_start = (size_t)i * (size_t)cols;
        const int8_t *row = wq + row_start;
        float val = 0.0f;
        for (int j = 0; j < cols;) {
            size_t wg = (row_start + (size_t)j) / (size_t)gs;
            int end = (int)((wg + 1) * (size_t)gs - row_start); // end of this weight group
            int xend = (j / gs + 1) * gs;                       // end of this input group
            if (xend < end) end = xend;
            if (cols < end) end = cols;
            int32_t ival = 0;
            for (int k = j; k < end; k++) ival += (int32_t)xq[k] * (int32_t)row[k];
            val += (float)ival * read_f32(ws + wg * sizeof(float)) * xs[j / gs];
            j = end;
        }
        out[i] = val;
    }
}

// Prepares x (n) as a matmul input, quantizing it once for every matmul that shares it.
static LmInput make_input(LmModel *m, const float *x, int n) {
    LmInput in = {x, NULL, NULL, n};
    if (m->config.weight_type == LM_Q8_0) {
        in.q = m->state.xq;
        in.s = m->state.xs;
        quantize_q8(in.q, in.s, x, n, m->config.group_size);
    }
    return in;
}

static void matmul(float *out, const LmMatrix *w, const LmInput *in, int gs) {
    assert(w->cols == in->n);
    if (w->f) matmul_f32(out, w->f, in->f, w->rows, w->cols);
    else matmul_q8(out, w->q, w->s, in->q, in->s, w->rows, w->cols, gs);
}

// Copies row `row` of w into out (cols floats), dequantizing when needed.
static void matrix_row(float *out, const LmMatrix *w, int row, int gs) {
    size_t start = (size_t)row * (size_t)w->cols;
    if (w->f) { memcpy(out, w->f + start, (size_t)w->cols * sizeof(float)); return; }
    for (int j = 0; j < w->cols; j++)
        out[j] = (float)w->q[start + (size_t)j] * read_f32(w->s + (start + (size_t)j) / (size_t)gs * sizeof(float));
}

// Rotates consecutive pairs (x[2i], x[2i+1]) of every head by the angles of this position.
static void rope_rotate(float *x, int n_heads, int head_size, const float *cos_t, const float *sin_t) {
    for (int h = 0; h < n_heads; h++) {
        float *v = x + (size_t)h * (size_t)head_size;
        for (int i = 0; i < head_size / 2; i++) {
            float v0 = v[2 * i], v1 = v[2 * i + 1];
            v[2 * i] = v0 * cos_t[i] - v1 * sin_t[i];
            v[2 * i + 1] = v0 * sin_t[i] + v1 * cos_t[i];
        }
    }
}

// ----------------------------------------------------------------------------
// Forward pass

float *lm_forward(LmModel *m, int token, int pos) {
    if (m == NULL || token < 0 || token >= m->config.vocab_size || pos < 0 || pos >= m->config.seq_len)
        return NULL;
    const LmConfig *c = &m->config;
    const LmWeights *w = &m->weights;
    LmRunState *s = &m->state;
    int dim = c->dim, hidden = c->hidden_dim, head_size = c->head_size, gs = c->group_size;
    int q_dim = c->n_heads * head_size, kv_dim = c->n_kv_heads * head_size;
    int kv_mul = c->n_heads / c->n_kv_heads; // query heads per key/value head
    float *x = s->x;

    // the token's embedding starts the residual stream
    matrix_row(x, &w->token_embedding, token, gs);

    // RoPE angles for this position, shared by every layer
    for (int i = 0; i < head_size / 2; i++) {
        float angle = (float)pos * s->rope_freq[i];
        s->rope_cos[i] = cosf(angle);
        s->rope_sin[i] = sinf(angle);
    }

    for (int l = 0; l < c->n_layers; l++) {
        size_t layer_offset = (size_t)l * (size_t)c->seq_len * (size_t)kv_dim;
        float *k = s->key_cache + layer_offset + (size_t)pos * (size_t)kv_dim;
        float *v = s->value_cache + layer_offset + (size_t)pos * (size_t)kv_dim;

        // attention: q, k, v from the normed stream; k and v go straight into the cache at pos
        rmsnorm(s->xb, x, w->rms_att + (size_t)l * (size_t)dim, dim, c->norm_eps);
        LmInput in = make_input(m, s->xb, dim);
        matmul(s->q, &w->wq[l], &in, gs);
        matmul(k, &w->wk[l], &in, gs);
        matmul(v, &w->wv[l], &in, gs);
        rope_rotate(s->q, c->n_heads, head_size, s->rope_cos, s->rope_sin);
        rope_rotate(k, c->n_kv_heads, head_size, s->rope_cos, s->rope_sin);

        // each query head attends over positions 0..pos of its key/value head
        float scale = 1.0f / sqrtf((float)head_size);
        LM_PARALLEL_FOR
        for (int h = 0; h < c->n_heads; h++) {
            const float *qh = s->q + (size_t)h * (size_t)head_size;
            float *att = s->att + (size_t)h * (size_t)c->seq_len;
            size_t kv_head = (size_t)(h / kv_mul) * (size_t)head_size;
            for (int t = 0; t <= pos; t++) {
                const float *kt = s->key_cache + layer_offset + (size_t)t * (size_t)kv_dim + kv_head;
                float score = 0.0f;
                for (int i = 0; i < head_size; i++) score += qh[i] * kt[i];
                att[t] = score * scale;
            }
            softmax(att, pos + 1);
            float *out = s->xb + (size_t)h * (size_t)head_size;
            memset(out, 0, (size_t)head_size * sizeof(float));
            for (int t = 0; t <= pos; t++) {
                const float *vt = s->value_cache + layer_offset + (size_t)t * (size_t)kv_dim + kv_head;
                for (int i = 0; i < head_size; i++) out[i] += att[t] * vt[i];
            }
        }

        // output projection and residual
        in = make_input(m, s->xb, q_dim);
        matmul(s->xb2, &w->wo[l], &in, gs);
        for (int i = 0; i < dim; i++) x[i] += s->xb2[i];

        // SwiGLU FFN: w2(silu(w1 x) * w3 x), then residual
        rmsnorm(s->xb, x, w->rms_ffn + (size_t)l * (size_t)dim, dim, c->norm_eps);
        in = make_input(m, s->xb, dim);
        matmul(s->hb, &w->w1[l], &in, gs);
        matmul(s->hb2, &w->w3[l], &in, gs);
        for (int i = 0; i < hidden; i++) {
            float val = s->hb[i];
            val *= 1.0f / (1.0f + expf(-val));
            s->hb[i] = val * s->hb2[i];
        }
        in = make_input(m, s->hb, hidden);
        matmul(s->xb2, &w->w2[l], &in, gs);
        for (int i = 0; i < dim; i++) x[i] += s->xb2[i];
    }

    // final norm and classifier
    rmsnorm(x, x, w->rms_final, dim, c->norm_eps);
    LmInput in = make_input(m, x, dim);
    matmul(s->logits, &w->wcls, &in, gs);
    return s->logits;
}

// ----------------------------------------------------------------------------
// Tokenizer: SentencePiece-style BPE over llama2.c's tokenizer.bin

#define LM_BOS 1
#define LM_EOS 2

struct LmTokenizer {
    int vocab_size;
    char **vocab;          // (vocab_size) NUL-terminated token texts
    int *vocab_len;        // (vocab_size) their lengths
    float *scores;         // (vocab_size) merge priority: higher merges first
    char *text;            // backing store of every token text
    int *hash_ids;         // (hash_size) open-addressing table of token ids by text, -1 = empty
    size_t hash_size;      // a power of two
    int byte_token[256];   // id of "<0xXX>" for each byte, or -1 (no byte fallback)
    short *token_byte;     // (vocab_size) the byte a "<0xXX>" token stands for, or -1
    unsigned char byte_pieces[512]; // each byte as a one-char string, for decoding byte tokens
    int max_token_len;
    int space_id;          // the " " token prepended to non-empty text (SentencePiece's dummy prefix)
};

static uint64_t hash_text(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull; // FNV-1a
    for (size_t i = 0; i < n; i++) { h ^= (unsigned char)s[i]; h *= 1099511628211ull; }
    return h;
}

// The id of the token whose text is s[0..n), or -1. The lowest id wins for duplicate texts.
static int token_lookup(const LmTokenizer *t, const char *s, size_t n) {
    size_t mask = t->hash_size - 1;
    for (size_t i = (size_t)hash_text(s, n) & mask;; i = (i + 1) & mask) {
        int id = t->hash_ids[i];
        if (id < 0) return -1;
        if ((size_t)t->vocab_len[id] == n && memcmp(t->vocab[id], s, n) == 0) return id;
    }
}

LmTokenizer *lm_tokenizer_load(const char *path, int vocab_size, char *err, size_t errlen) {
    if (path == NULL || vocab_size <= 0) { set_err(err, errlen, "tokenizer: bad arguments"); return NULL; }
    size_t size;
    const unsigned char *data = map_file(path, &size, err, errlen);
    if (data == NULL) return NULL;
    LmTokenizer *t = calloc(1, sizeof *t);
    if (t == NULL) { munmap((void *)data, size); set_err(err, errlen, "out of memory"); return NULL; }
    t->vocab_size = vocab_size;
    t->vocab = calloc((size_t)vocab_size, sizeof(char *));
    t->vocab_len = calloc((size_t)vocab_size, sizeof(int));
    t->scores = calloc((size_t)vocab_size, sizeof(float));
    t->token_byte = calloc((size_t)vocab_size, sizeof(short));
    t->text = malloc(size + (size_t)vocab_size); // every text plus its terminator fits in the file size
    t->hash_size = 64;
    while (t->hash_size < 2 * (size_t)vocab_size) t->hash_size *= 2;
    t->hash_ids = malloc(t->hash_size * sizeof(int));
    if (!t->vocab || !t->vocab_len || !t->scores || !t->token_byte || !t->text || !t->hash_ids) {
        set_err(err, errlen, "out of memory loading %s", path);
        goto fail;
    }
    memset(t->hash_ids, 0xff, t->hash_size * sizeof(int));
    if (size < 4) { set_err(err, errlen, "%s: too small for a tokenizer (%zu bytes)", path, size); goto fail; }
    size_t off = 4, text_off = 0;
    for (int i = 0; i < vocab_size; i++) {
        if (size - off < 8) {
            if (size == off) set_err(err, errlen, "%s: has %d tokens, the model expects %d", path, i, vocab_size);
            else set_err(err, errlen, "%s: truncated at token %d", path, i);
            goto fail;
        }
        float score = read_f32(data + off);
        int32_t len = read_i32(data + off + 4);
        off += 8;
        if (len < 0 || (size_t)len > size - off) {
            set_err(err, errlen, "%s: token %d has length %d, past the end of the file", path, i, len);
            goto fail;
        }
        if (memchr(data + off, 0, (size_t)len) != NULL) {
            set_err(err, errlen, "%s: token %d contains a NUL byte", path, i);
            goto fail;
        }
        t->scores[i] = score;
        t->vocab[i] = t->text + text_off;
        t->vocab_len[i] = len;
        memcpy(t->vocab[i], data + off, (size_t)len);
        t->vocab[i][len] = '\0';
        text_off += (size_t)len + 1;
        off += (size_t)len;
        if (len > t->max_token_len) t->max_token_len = len;
    }
    if (off != size) {
        set_err(err, errlen, "%s: %zu bytes left after %d tokens (the model's vocab_size); wrong tokenizer for this model?",
                path, size - off, vocab_size);
        goto fail;
    }
    munmap((void *)data, size);
    data = NULL;
    for (int i = 0; i < vocab_size; i++) { // insert in id order so the lowest id wins
        size_t mask = t->hash_size - 1, h = (size_t)hash_text(t->vocab[i], (size_t)t->vocab_len[i]) & mask;
        int dup = 0;
        for (; t->hash_ids[h] >= 0; h = (h + 1) & mask) {
            int other = t->hash_ids[h];
            if (t->vocab_len[other] == t->vocab_len[i] && memcmp(t->vocab[other], t->vocab[i], (size_t)t->vocab_len[i]) == 0) { dup = 1; break; }
        }
        if (!dup) t->hash_ids[h] = i;
    }
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        t->byte_token[b] = token_lookup(t, name, 6);
        t->byte_pieces[2 * b] = (unsigned char)b;
        t->byte_pieces[2 * b + 1] = '\0';
    }
    for (int i = 0; i < vocab_size; i++) t->token_byte[i] = -1;
    for (int b = 0; b < 256; b++) if (t->byte_token[b] >= 0) t->token_byte[t->byte_token[b]] = (short)b;
    t->space_id = token_lookup(t, " ", 1);
    return t;
fail:
    if (data) munmap((void *)data, size);
    lm_tokenizer_free(t);
    return NULL;
}

void lm_tokenizer_free(LmTokenizer *t) {
    if (t == NULL) return;
    free(t->vocab); free(t->vocab_len); free(t->scores); free(t->text); free(t->hash_ids); free(t->token_byte);
    free(t);
}

const char *lm_decode(LmTokenizer *t, int prev_token, int token) {
    if (t == NULL || token < 0 || token >= t->vocab_size) return "";
    const char *piece = t->vocab[token];
    // after BOS, SentencePiece drops the leading space of the first word
    if (prev_token == LM_BOS && piece[0] == ' ') piece++;
    if (t->token_byte[token] >= 0) {
        unsigned char b = (unsigned char)t->token_byte[token];
        // raw control bytes would corrupt a terminal; UTF-8 bytes (>= 0x80) pass through
        if (b < 0x80 && !isprint(b) && !isspace(b)) return "";
        piece = (const char *)t->byte_pieces + 2 * b;
    }
    return piece;
}

// A candidate merge of the symbol at `left` with the one after it, into token `id`.
typedef struct { float score; int left, id, left_id, right_id; } LmMerge;

// Max-heap order: higher score first; among equal scores the leftmost, as SentencePiece does.
static int merge_before(const LmMerge *a, const LmMerge *b) {
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static void heap_push(LmMerge *heap, int *n, LmMerge item) {
    int i = (*n)++;
    while (i > 0 && merge_before(&item, &heap[(i - 1) / 2])) { heap[i] = heap[(i - 1) / 2]; i = (i - 1) / 2; }
    heap[i] = item;
}

static LmMerge heap_pop(LmMerge *heap, int *n) {
    LmMerge top = heap[0], last = heap[--(*n)];
    int i = 0;
    for (;;) {
        int child = 2 * i + 1;
        if (child >= *n) break;
        if (child + 1 < *n && merge_before(&heap[child + 1], &heap[child])) child++;
        if (!merge_before(&heap[child], &last)) break;
        heap[i] = heap[child];
        i = child;
    }
    if (*n > 0) heap[i] = last;
    return top;
}

// Pushes the merge of symbol `left` with its right neighbour, if the joined text is a token.
static void push_pair(const LmTokenizer *t, LmMerge *heap, int *n, const int *ids, const int *next, int left, char *buf) {
    int right = next[left];
    if (right < 0) return;
    int a = ids[left], b = ids[right];
    size_t la = (size_t)t->vocab_len[a], lb = (size_t)t->vocab_len[b];
    if (la + lb > (size_t)t->max_token_len) return;
    memcpy(buf, t->vocab[a], la);
    memcpy(buf + la, t->vocab[b], lb);
    int id = token_lookup(t, buf, la + lb);
    if (id >= 0) heap_push(heap, n, (LmMerge){t->scores[id], left, id, a, b});
}

// BPE encoding: text -> one symbol per UTF-8 character (or its bytes when the character is not a
// token), then repeatedly the best-scoring adjacent pair is merged. A heap of candidate pairs over a
// linked list of symbols makes this O(n log n); stale heap entries are skipped when popped.
int lm_encode(LmTokenizer *t, const char *text, int bos, int eos, int *tokens, int max_tokens) {
    if (t == NULL || text == NULL || tokens == NULL || max_tokens < 0) return -1;
    size_t len = strlen(text);
    size_t cap = len + 1; // symbols: at most one per byte, plus the dummy prefix
    int *ids = malloc(cap * sizeof(int)), *next = malloc(cap * sizeof(int)), *prev = malloc(cap * sizeof(int));
    LmMerge *heap = malloc(2 * cap * sizeof(LmMerge)); // live pairs never exceed 2 per merge + initial
    char *buf = malloc((size_t)t->max_token_len + 1);
    int n = 0, count = -1, heap_n = 0;
    if (!ids || !next || !prev || !heap || !buf) goto done;
    if (len > 0 && t->space_id >= 0) ids[n++] = t->space_id;
    for (size_t i = 0; i < len;) {
        // one UTF-8 character: a lead byte and up to three continuation bytes
        size_t clen = 1;
        while (clen < 4 && i + clen < len && ((unsigned char)text[i + clen] & 0xC0) == 0x80) clen++;
        int id = token_lookup(t, text + i, clen);
        if (id >= 0) {
            ids[n++] = id;
        } else {
            for (size_t j = 0; j < clen; j++) {
                int b = t->byte_token[(unsigned char)text[i + j]];
                ids[n++] = b >= 0 ? b : 0; // no byte fallback in this vocabulary: <unk> (id 0)
            }
        }
        i += clen;
    }
    for (int i = 0; i < n; i++) { next[i] = i + 1 < n ? i + 1 : -1; prev[i] = i - 1; }
    for (int i = 0; i + 1 < n; i++) push_pair(t, heap, &heap_n, ids, next, i, buf);
    while (heap_n > 0) {
        LmMerge mg = heap_pop(heap, &heap_n);
        int right = next[mg.left];
        if (ids[mg.left] != mg.left_id || right < 0 || ids[right] != mg.right_id) continue; // stale
        ids[mg.left] = mg.id;
        ids[right] = -1;
        next[mg.left] = next[right];
        if (next[right] >= 0) prev[next[right]] = mg.left;
        if (prev[mg.left] >= 0) push_pair(t, heap, &heap_n, ids, next, prev[mg.left], buf);
        push_pair(t, heap, &heap_n, ids, next, mg.left, buf);
    }
    count = 0;
    int need = (bos != 0) + (eos != 0);
    for (int i = 0; i < n; i = next[i] < 0 ? n : next[i]) need++;
    if (need > max_tokens) { count = -1; goto done; }
    if (bos) tokens[count++] = LM_BOS;
    for (int i = 0; i < n; i = next[i] < 0 ? n : next[i]) tokens[count++] = ids[i];
    if (eos) tokens[count++] = LM_EOS;
done:
    free(ids); free(next); free(prev); free(heap); free(buf);
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
    LmProbIndex *probindex; // (vocab_size) scratch for top-p
};

LmSampler *lm_sampler_new(int vocab_size, float temperature, float topp, unsigned long long seed) {
    if (vocab_size <= 0 || !(temperature >= 0.0f) || isinf(temperature) || !(topp >= 0.0f && topp <= 1.0f))
        return NULL;
    LmSampler *s = calloc(1, sizeof *s);
    if (s == NULL) return NULL;
    s->probindex = malloc((size_t)vocab_size * sizeof(LmProbIndex));
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
    free(s);
}

static unsigned int random_u32(unsigned long long *state) { // xorshift* (llama2.c's)
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    return (unsigned int)((*state * 0x2545F4914F6CDD1Dull) >> 32);
}

static float random_f32(unsigned long long *state) { // in [0, 1)
    return (float)(random_u32(state) >> 8) / 16777216.0f;
}

static int sample_argmax(const float *p, int n) {
    int best = 0;
    for (int i = 1; i < n; i++) if (p[i] > p[best]) best = i;
    return best;
}

static int sample_mult(const float *p, int n, float coin) {
    float cdf = 0.0f;
    for (int i = 0; i < n; i++) { cdf += p[i]; if (coin < cdf) return i; }
    return n - 1; // rounding errors
}

static int compare_prob_desc(const void *a, const void *b) {
    const LmProbIndex *x = a, *y = b;
    return (x->prob < y->prob) - (x->prob > y->prob);
}

// Top-p (nucleus) sampling: from the smallest set of most likely tokens whose probability exceeds
// topp. Tokens below (1 - topp) / (n - 1) cannot be in that set and are dropped before sorting.
static int sample_topp(const float *p, int n, float topp, LmProbIndex *probindex, float coin) {
    int n0 = 0;
    const float cutoff = (1.0f - topp) / (float)(n - 1);
    for (int i = 0; i < n; i++) if (p[i] >= cutoff) probindex[n0++] = (LmProbIndex){p[i], i};
    if (n0 == 0) return sample_argmax(p, n);
    qsort(probindex, (size_t)n0, sizeof(LmProbIndex), compare_prob_desc);
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
    if (s->temperature == 0.0f) return sample_argmax(logits, n);
    for (int i = 0; i < n; i++) logits[i] /= s->temperature;
    softmax(logits, n);
    float coin = random_f32(&s->rng_state);
    if (s->topp <= 0.0f || s->topp >= 1.0f || n < 2) return sample_mult(logits, n, coin);
    return sample_topp(logits, n, s->topp, s->probindex, coin);
}

// ----------------------------------------------------------------------------
// Generation and chat

static double now_seconds(void) {
    struct timespec ts;
    timespec_get(&ts, TIME_UTC);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

// Encodes text into a fresh array; NULL with a reason in err on failure.
static int *encode_alloc(LmTokenizer *t, const char *text, int bos, int *n, char *err, size_t errlen) {
    int cap = (int)(strlen(text) < 0x7ffffff0 ? strlen(text) + 3 : 0);
    int *tokens = cap > 0 ? malloc((size_t)cap * sizeof(int)) : NULL;
    if (tokens == NULL) { set_err(err, errlen, "out of memory encoding the prompt"); return NULL; }
    *n = lm_encode(t, text, bos, 0, tokens, cap);
    if (*n < 0) { free(tokens); set_err(err, errlen, "cannot encode the prompt"); return NULL; }
    return tokens;
}

// Timing of the last generate call, for the CLI's tok/s line.
typedef struct { double start, first, end; int generated; } LmTiming;

static int generate_timed(LmModel *m, LmTokenizer *t, LmSampler *s, const char *prompt, int steps,
                          LmEmitFn emit, void *user, LmTiming *timing, char *err, size_t errlen) {
    if (!m || !t || !s) { set_err(err, errlen, "generate: NULL model, tokenizer or sampler"); return -1; }
    int ctx = m->config.seq_len;
    if (steps <= 0 || steps > ctx) steps = ctx;
    int n_prompt;
    int *prompt_tokens = encode_alloc(t, prompt ? prompt : "", 1, &n_prompt, err, errlen);
    if (prompt_tokens == NULL) return -1;
    if (n_prompt > ctx) {
        set_err(err, errlen, "the prompt is %d tokens, longer than the context length %d", n_prompt, ctx);
        free(prompt_tokens);
        return -1;
    }
    timing->start = now_seconds();
    timing->first = 0.0;
    int token = prompt_tokens[0], pos = 0;
    while (pos < steps) {
        float *logits = lm_forward(m, token, pos);
        int next = pos < n_prompt - 1 ? prompt_tokens[pos + 1] : lm_sample(s, logits);
        pos++;
        if (next == LM_BOS || next == LM_EOS) break; // a sequence ends at BOS (llama2.c) or EOS
        if (emit && emit(lm_decode(t, token, next), user)) break;
        token = next;
        if (timing->first == 0.0) timing->first = now_seconds();
    }
    timing->end = now_seconds();
    timing->generated = pos;
    free(prompt_tokens);
    return pos;
}

int lm_generate(LmModel *m, LmTokenizer *t, LmSampler *s, const char *prompt, int steps,
                LmEmitFn emit, void *user, char *err, size_t errlen) {
    LmTiming timing;
    return generate_timed(m, t, s, prompt, steps, emit, user, &timing, err, errlen);
}

// Reads one line of any length without its newline; NULL at end of input.
static char *read_line(FILE *in) {
    size_t n = 0, cap = 128;
    char *line = malloc(cap);
    if (line == NULL) return NULL;
    int ch;
    while ((ch = fgetc(in)) != EOF && ch != '\n') {
        if (n + 1 == cap) {
            char *grown = realloc(line, cap *= 2);
            if (grown == NULL) { free(line); return NULL; }
            line = grown;
        }
        line[n++] = (char)ch;
    }
    if (ch == EOF && n == 0) { free(line); return NULL; }
    if (n > 0 && line[n - 1] == '\r') n--;
    line[n] = '\0';
    return line;
}

// Llama 2's chat template for one user turn; the system prompt goes into the first turn only.
static char *render_llama2_turn(const char *system_prompt, const char *user) {
    const char *fmt = system_prompt && system_prompt[0] ? "[INST] <<SYS>>\n%s\n<</SYS>>\n\n%s [/INST]" : "[INST] %s%s [/INST]";
    const char *a = system_prompt && system_prompt[0] ? system_prompt : "";
    int n = snprintf(NULL, 0, fmt, a, user);
    char *out = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (out) snprintf(out, (size_t)n + 1, fmt, a, user);
    return out;
}

static int emit_to_file(const char *piece, void *user) {
    FILE *f = user;
    fputs(piece, f);
    fflush(f);
    return 0;
}

// Multi-turn chat: each turn is `<s>[INST] user [/INST]` and the reply up to EOS, which is also fed
// to the model, so the KV cache holds the whole conversation and earlier turns are never re-run.
// max_reply caps each reply (0 = no cap). Ends at end of input or when the context is full.
// Returns the number of positions used, or -1 with err set.
int lm_chat(LmModel *m, LmTokenizer *t, LmSampler *s, const char *first_user, const char *system_prompt,
                     int max_reply, FILE *in, FILE *out, char *err, size_t errlen) {
    int ctx = m->config.seq_len, pos = 0;
    char *system_owned = NULL;
    if (system_prompt == NULL) {
        fputs("Enter system prompt (optional): ", out);
        fflush(out);
        system_prompt = system_owned = read_line(in);
        if (system_owned == NULL) { fputc('\n', out); return 0; } // end of input
    }
    for (int turn = 0;; turn++) {
        char *user = NULL;
        if (turn == 0 && first_user) {
            user = malloc(strlen(first_user) + 1);
            if (user) strcpy(user, first_user);
        } else {
            fputs("User: ", out);
            fflush(out);
            user = read_line(in);
            if (user == NULL) { fputc('\n', out); break; } // end of input
        }
        char *rendered = user ? render_llama2_turn(turn == 0 ? system_prompt : NULL, user) : NULL;
        free(user);
        int n_prompt = 0;
        int *prompt = rendered ? encode_alloc(t, rendered, 1, &n_prompt, err, errlen) : NULL;
        free(rendered);
        if (prompt == NULL) { free(system_owned); set_err(err, errlen, "chat: out of memory"); return -1; }
        if (pos + n_prompt >= ctx) {
            fprintf(out, "\n");
            fprintf(out, "[context full: %d of %d tokens used; the chat ends here]\n", pos, ctx);
            free(prompt);
            break;
        }
        float *logits = NULL;
        for (int i = 0; i < n_prompt; i++) logits = lm_forward(m, prompt[i], pos++);
        int token = prompt[n_prompt - 1];
        free(prompt);
        fputs("Assistant: ", out);
        fflush(out);
        int produced = 0, full = 0;
        for (;;) {
            int next = lm_sample(s, logits);
            if (next == LM_EOS || (max_reply > 0 && produced >= max_reply)) {
                if (pos < ctx) lm_forward(m, LM_EOS, pos++); // close the turn in the cache
                break;
            }
            emit_to_file(lm_decode(t, token, next), out);
            produced++;
            token = next;
            if (pos >= ctx) { full = 1; break; }
            logits = lm_forward(m, token, pos++);
        }
        fputc('\n', out);
        if (full || pos >= ctx) {
            fprintf(out, "[context full: %d of %d tokens used; the chat ends here]\n", pos, ctx);
            break;
        }
    }
    free(system_owned);
    return pos;
}

// ----------------------------------------------------------------------------
// Command line

#ifndef RUN_NO_MAIN

static void usage(FILE *f) {
    fprintf(f,
            "Usage:   run <checkpoint> [options]\n"
            "Example: run stories15M.bin -n 256 -i \"Once upon a time\"\n"
            "Options:\n"
            "  -t <float>  temperature, >= 0 (default 1.0; 0 = greedy)\n"
            "  -p <float>  top-p (nucleus) sampling threshold in [0,1] (default 0.9; 0 or 1 = off)\n"
            "  -s <int>    random seed (default: the time)\n"
            "  -n <int>    steps: total positions in generate mode, the longest reply in chat mode\n"
            "              (default 256; 0 = the context length)\n"
            "  -i <string> input prompt\n"
            "  -z <string> tokenizer file (default tokenizer.bin)\n"
            "  -m <string> mode: generate|chat (default generate)\n"
            "  -y <string> system prompt in chat mode\n"
            "  -h, --help  this help\n");
}

// Parses a whole string as a finite float / non-negative integer; 0 on junk.
static int parse_float(const char *s, float *out) {
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (end == s || *end != '\0' || errno != 0 || !isfinite(v)) return 0;
    *out = v;
    return 1;
}

static int parse_count(const char *s, unsigned long long max, unsigned long long *out) {
    char *end;
    if (!isdigit((unsigned char)s[0])) return 0;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end != '\0' || errno != 0 || v > max) return 0;
    *out = v;
    return 1;
}

static int bad_flag(const char *flag, const char *value, const char *expected) {
    fprintf(stderr, "run: invalid value '%s' for %s (expected %s)\n", value, flag, expected);
    return 1;
}

int main(int argc, char **argv) {
    const char *checkpoint = NULL, *tokenizer_path = "tokenizer.bin", *prompt = NULL, *mode = "generate";
    const char *system_prompt = NULL;
    float temperature = 1.0f, topp = 0.9f;
    unsigned long long seed = 0, steps = 256;
    int steps_given = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) { usage(stdout); return 0; }
    }
    if (argc < 2 || argv[1][0] == '-') {
        fprintf(stderr, "run: missing checkpoint (usage: run <checkpoint> [options]; run -h for help)\n");
        return 1;
    }
    checkpoint = argv[1];
    for (int i = 2; i < argc; i += 2) {
        const char *flag = argv[i];
        if (flag[0] != '-' || strlen(flag) != 2 || strchr("tpsnizmy", flag[1]) == NULL) {
            fprintf(stderr, "run: unknown option '%s' (run -h for help)\n", flag);
            return 1;
        }
        if (i + 1 >= argc) { fprintf(stderr, "run: option %s needs a value\n", flag); return 1; }
        const char *val = argv[i + 1];
        switch (flag[1]) {
        case 't':
            if (!parse_float(val, &temperature) || temperature < 0.0f) return bad_flag(flag, val, "a number >= 0");
            break;
        case 'p':
            if (!parse_float(val, &topp) || topp < 0.0f || topp > 1.0f) return bad_flag(flag, val, "a number in [0,1]");
            break;
        case 's':
            if (!parse_count(val, ~0ull, &seed)) return bad_flag(flag, val, "a non-negative integer");
            break;
        case 'n':
            if (!parse_count(val, 0x7fffffff, &steps)) return bad_flag(flag, val, "a non-negative integer");
            steps_given = 1;
            break;
        case 'i': prompt = val; break;
        case 'z': tokenizer_path = val; break;
        case 'm':
            if (strcmp(val, "generate") != 0 && strcmp(val, "chat") != 0) return bad_flag(flag, val, "generate or chat");
            mode = val;
            break;
        case 'y': system_prompt = val; break;
        }
    }
    if (seed == 0) seed = (unsigned long long)time(NULL);

    char err[512];
    LmModel *model = lm_load(checkpoint, err, sizeof err);
    if (model == NULL) { fprintf(stderr, "run: %s\n", err); return 1; }
    int ctx = lm_context_length(model);
    if (steps > (unsigned long long)ctx) {
        if (steps_given) fprintf(stderr, "note: -n %llu exceeds the context length %d; using %d\n", steps, ctx, ctx);
        steps = (unsigned long long)ctx;
    }
    LmTokenizer *tokenizer = lm_tokenizer_load(tokenizer_path, lm_vocab_size(model), err, sizeof err);
    if (tokenizer == NULL) {
        fprintf(stderr, "run: %s (choose a tokenizer with -z)\n", err);
        lm_free(model);
        return 1;
    }
    LmSampler *sampler = lm_sampler_new(lm_vocab_size(model), temperature, topp, seed);
    int rc = 0;
    if (sampler == NULL) {
        fprintf(stderr, "run: out of memory\n");
        rc = 1;
    } else if (strcmp(mode, "generate") == 0) {
        LmTiming timing;
        int n = generate_timed(model, tokenizer, sampler, prompt, (int)steps, emit_to_file, stdout, &timing, err, sizeof err);
        if (n < 0) {
            fprintf(stderr, "run: %s\n", err);
            rc = 1;
        } else {
            printf("\n");
            if (n > 1 && timing.first > 0.0 && timing.end > timing.first)
                fprintf(stderr, "achieved tok/s: %f\n", (n - 1) / (timing.end - timing.first));
        }
    } else if (lm_chat(model, tokenizer, sampler, prompt, system_prompt, (int)steps, stdin, stdout, err, sizeof err) < 0) {
        fprintf(stderr, "run: %s\n", err);
        rc = 1;
    }
    lm_sampler_free(sampler);
    lm_tokenizer_free(tokenizer);
    lm_free(model);
    return rc;
}

#endif // RUN_NO_MAIN
