// fuzz.c — fuzz targets for everything run.c reads from strangers. A libFuzzer build fuzzes one:
//   -DFUZZ_CHECKPOINT  checkpoint loading (every format: v0/v1/v2/v3) and one forward step
//   -DFUZZ_TOKENIZER   tokenizer loading (llama2.c's and run.c's formats), then encode and decode
//   -DFUZZ_ENCODE      lm_encode of arbitrary bytes with the Llama 2 tokenizer, and the GPT-2,
//                      Llama 3 and Qwen2 pre-tokenizer splits over the same bytes
//   -DFUZZ_CHAT        chat-template rendering of arbitrary system/user text for every template
//   -DFUZZ_CLI         command-line parsing of arbitrary arguments
//   -DFUZZ_GGUF        a GGUF file: the container, the model (one forward step when small), its
//                      tokenizer (encode, decode, every chat template)
// With clang and -fsanitize=fuzzer it is a libFuzzer target (make fuzz); with any compiler and no
// FUZZ_ define it is a driver that replays files through a target named on its command line, e.g.
// the regression cases: build/fuzz_replay gguf tests/fuzz_cases/gguf/*
#define main run_cli_main // the command line comes along, for its parser (FUZZ_CLI)
#include "../run.c"
#undef main

#ifndef FUZZ_TOKENIZER_PATH
#define FUZZ_TOKENIZER_PATH "tokenizer.bin"
#endif

// Writes data to a file of this process's own and returns its path (the loaders take paths).
static const char *as_file(const uint8_t *data, size_t size) {
    static char path[64]; // fuzzing is single-threaded; the path is fixed per process
    if (!path[0]) snprintf(path, sizeof path, "/tmp/runc_fuzz_%d.bin", (int)getpid());
    FILE *f = fopen(path, "wb");
    if (!f) return NULL;
    if (size) fwrite(data, 1, size, f);
    fclose(f);
    return path;
}

static char *as_string(const uint8_t *data, size_t size) {
    char *s = malloc(size + 1);
    if (s) { memcpy(s, data, size); s[size] = '\0'; }
    return s;
}

// One function per target; a libFuzzer build (-DFUZZ_<TARGET>) fuzzes one, the replay driver any.
static void fuzz_checkpoint(const uint8_t *data, size_t size) {
    const char *path = as_file(data, size);
    LmModel *m = path ? lm_load(path, NULL, 0) : NULL;
    if (m && (uint64_t)m->config.dim * m->config.n_layers < (1u << 22)) { // small enough to run one step
        lm_forward(m, 0, 0);
        lm_tokenizer_free(lm_tokenizer_load(path, lm_vocab_size(m), NULL, 0)); // an embedded tokenizer
    }
    lm_free(m);
}

static void fuzz_tokenizer(const uint8_t *data, size_t size) {
    const char *path = as_file(data, size);
    LmTokenizer *t = path ? lm_tokenizer_load(path, 0, NULL, 0) : NULL;
    if (t) {
        int ids[256];
        int n = lm_encode(t, "Hello, world! 你好 \xF0\x9F\x98\x80  123", 1, 1, ids, 256);
        for (int i = 1; i < n; i++) lm_decode(t, ids[i - 1], ids[i]);
        for (int i = 0; i < t->vocab_size && i < 4096; i++) lm_decode(t, i - 1, i);
        LmTokens out = {NULL, 0, 0};
        for (int k = 1; k < LM_CHAT_N; k++) { out.n = 0; run_render_turn_ids(t, (LmChatTemplate)k, &out, 1, "sys", "user"); }
        free(out.ids);
    }
    lm_tokenizer_free(t);
}

static void fuzz_encode(const uint8_t *data, size_t size) {
    static LmTokenizer *t;
    if (!t) t = lm_tokenizer_load(FUZZ_TOKENIZER_PATH, 0, NULL, 0);
    char *text = as_string(data, size);
    if (t && text) {
        int cap = (int)size + 3, *ids = malloc((size_t)cap * sizeof(int));
        int n = ids ? lm_encode(t, text, 1, 1, ids, cap) : -1;
        for (int i = 1; i < n; i++) lm_decode(t, ids[i - 1], ids[i]);
        free(ids);
        LmText x = {(const unsigned char *)text, strlen(text)};
        for (int split = 1; split <= 3; split++)
            for (size_t pos = 0; pos < x.n;) {
                size_t len = run_pretoken_length((LmSplit)split, x, pos);
                assert(len >= 1 && pos + len <= x.n);
                pos += len;
            }
    }
    free(text);
}

static void fuzz_chat(const uint8_t *data, size_t size) {
    static LmTokenizer *t;
    if (!t) t = lm_tokenizer_load(FUZZ_TOKENIZER_PATH, 0, NULL, 0);
    char *text = as_string(data, size);
    if (t && text) {
        char *user = strchr(text, '\n'); // the first line is the system prompt, the rest the message
        if (user) *user++ = '\0'; else user = text;
        LmTokens out = {NULL, 0, 0};
        for (int k = 0; k < LM_CHAT_N; k++) {
            out.n = 0;
            run_render_turn_ids(t, (LmChatTemplate)k, &out, k % 2, text, user);
        }
        free(out.ids);
    }
    free(text);
}

static void fuzz_gguf(const uint8_t *data, size_t size) {
    const char *path = as_file(data, size);
    LmModel *m = path ? lm_load(path, NULL, 0) : NULL;
    LmTokenizer *t = path ? lm_tokenizer_load(path, m ? lm_vocab_size(m) : 0, NULL, 0) : NULL;
    if (m && (uint64_t)m->config.dim * m->config.n_layers < (1u << 22)) lm_forward(m, 0, 0);
    if (t) {
        int ids[256];
        int n = lm_encode(t, "Hello, world! <think> 你好 \xF0\x9F\x98\x80  123", 1, 1, ids, 256);
        for (int i = 1; i < n; i++) lm_decode(t, ids[i - 1], ids[i]);
        LmTokens out = {NULL, 0, 0};
        for (int k = 1; k < LM_CHAT_N; k++) { out.n = 0; run_render_turn_ids(t, (LmChatTemplate)k, &out, 1, "sys", "user"); }
        free(out.ids);
    }
    lm_tokenizer_free(t);
    lm_free(m);
}

static void fuzz_cli(const uint8_t *data, size_t size) {
    char *args = as_string(data, size), *argv[65] = {"run"};
    int argc = 1;
    for (char *p = args; p && argc < 64 && p < args + size;) { // NUL-separated arguments
        argv[argc++] = p;
        p += strlen(p) + 1;
    }
    argv[argc] = NULL;
    LmOptions o;
    FILE *saved = stderr;
    stderr = fopen("/dev/null", "w"); // one line per bad flag is the expected behaviour, not news
    run_parse_options(argc, argv, &o);
    fclose(stderr);
    stderr = saved;
    free(args);
}

typedef struct { const char *name; void (*run)(const uint8_t *, size_t); } FuzzTarget;
static const FuzzTarget fuzz_targets[] = {
    {"checkpoint", fuzz_checkpoint},
    {"tokenizer", fuzz_tokenizer},
    {"encode", fuzz_encode},
    {"chat", fuzz_chat},
    {"gguf", fuzz_gguf},
    {"cli", fuzz_cli},
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
#if defined(FUZZ_CHECKPOINT)
    fuzz_checkpoint(data, size);
#elif defined(FUZZ_TOKENIZER)
    fuzz_tokenizer(data, size);
#elif defined(FUZZ_ENCODE)
    fuzz_encode(data, size);
#elif defined(FUZZ_CHAT)
    fuzz_chat(data, size);
#elif defined(FUZZ_GGUF)
    fuzz_gguf(data, size);
#elif defined(FUZZ_CLI)
    fuzz_cli(data, size);
#elif defined(LM_LIBFUZZER)
#error "define one FUZZ_ target"
#else
    (void)data; (void)size; // (the replay driver calls the targets itself)
#endif
    (void)fuzz_targets;
    return 0;
}


#ifndef LM_LIBFUZZER
// The replay driver: `fuzz TARGET FILE...` runs each file through that target.
int main(int argc, char **argv) {
    const FuzzTarget *target = NULL;
    for (size_t k = 0; argc > 1 && k < sizeof fuzz_targets / sizeof fuzz_targets[0]; k++)
        if (strcmp(argv[1], fuzz_targets[k].name) == 0) target = &fuzz_targets[k];
    if (target == NULL) { fprintf(stderr, "usage: fuzz TARGET FILE... (targets: checkpoint, tokenizer, encode, chat, cli, gguf)\n"); return 2; }
    int count = 0;
    for (int i = 2; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        if (!f) { fprintf(stderr, "fuzz: cannot open %s\n", argv[i]); return 1; }
        fseek(f, 0, SEEK_END);
        long n = ftell(f);
        fseek(f, 0, SEEK_SET);
        uint8_t *buf = malloc((size_t)n + 1);
        size_t got = fread(buf, 1, (size_t)n, f);
        fclose(f);
        target->run(buf, got);
        free(buf);
        count++;
    }
    printf("fuzz: replayed %d inputs through %s\n", count, target->name);
    return 0;
}
#endif
